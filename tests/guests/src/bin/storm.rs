//! Test guest `storm`: with IRQs masked, 40 edge-triggered SPIs are enabled and all pended at once
//! through GICD_ISPENDR (far more than the 4 list registers of the virtual CPU interface); once
//! unmasked, each must be taken exactly once. Then the same with 30 different priorities: they
//! must be taken in priority order.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    println!("the test guests only run on aarch64-unknown-none");
}

#[cfg(target_os = "none")]
mod guest {
    use core::{
        fmt::Write,
        sync::atomic::{AtomicU32, Ordering},
    };

    use test_guests::{
        check, entry, fail, finish,
        gic::{self, GICD_ISACTIVER, GICD_ISPENDR},
        irq, println,
        report::Text,
        timer,
    };

    entry!(run);

    const COUNT: usize = 40;
    /// First INTID of the storm (set once from GICD_TYPER).
    static FIRST: AtomicU32 = AtomicU32::new(0);
    /// Deliveries per SPI of the storm.
    static TAKEN: [AtomicU32; COUNT] = [const { AtomicU32::new(0) }; COUNT];
    /// INTIDs in the order they were taken.
    static ORDER: [AtomicU32; COUNT] = [const { AtomicU32::new(0) }; COUNT];
    static SEQ: AtomicU32 = AtomicU32::new(0);
    /// Interrupts outside the storm's range.
    static STRAY: AtomicU32 = AtomicU32::new(0);

    fn handler(intid: u32, _cpu: usize) {
        let first = FIRST.load(Ordering::Relaxed);
        match intid.checked_sub(first).map(|i| i as usize) {
            Some(i) if i < COUNT => {
                TAKEN[i].fetch_add(1, Ordering::Relaxed);
                let k = SEQ.fetch_add(1, Ordering::Relaxed) as usize;
                if let Some(slot) = ORDER.get(k) {
                    slot.store(intid, Ordering::Relaxed);
                }
            }
            _ => {
                STRAY.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn run(dtb: usize) -> ! {
        let info = gic::init(dtb);
        irq::set_handler(handler);
        let limit = gic::intid_limit();
        // INTIDs 64..104 where the distributor has them, else the top 40 it implements.
        let first = if limit >= 104 {
            64
        } else {
            limit.saturating_sub(COUNT as u32)
        };
        FIRST.store(first, Ordering::Relaxed);
        println!(
            "gic: distributor {:#x}, INTIDs 0..{limit}; storm of SPIs {first}..{}",
            info.gicd,
            first + COUNT as u32
        );
        if first < 34 {
            fail(
                "interrupt storm 40",
                format_args!("only {limit} INTIDs implemented"),
            );
            finish()
        }
        irq::mask();
        for i in 0..COUNT as u32 {
            gic::enable_spi(first + i, true, 0x80, 0);
        }
        let same = [0x80u8; COUNT];
        let taken = storm(&same);
        check(
            "interrupt storm 40",
            taken,
            "an SPI was lost, duplicated or left pending (see above)",
        );

        // Priorities 0x00..0xe8 (5 bits implemented), spread so that neither INTID order nor its
        // reverse is priority order; all below the priority mask.
        let priorities: [u8; COUNT] = core::array::from_fn(|i| (((i * 13 + 5) % 30) << 3) as u8);
        let taken = storm(&priorities);
        let mut order = Text::<256>::new();
        let mut in_order = true;
        let mut last = 0u8;
        let seq = (SEQ.load(Ordering::Relaxed) as usize).min(COUNT);
        for (k, slot) in ORDER.iter().enumerate().take(seq) {
            let intid = slot.load(Ordering::Relaxed);
            let p = priorities[(intid - first) as usize];
            if p < last {
                in_order = false;
                println!(
                    "priority order: #{k} INTID {intid} priority {p:#x} after priority {last:#x}"
                );
            }
            last = p;
            if k < 12 {
                let _ = write!(order, "{intid}@{p:#x} ");
            }
        }
        println!("taken in order: {}...", order.as_str());
        check(
            "interrupt priority order",
            taken && in_order,
            "taken out of priority order, lost or duplicated (see above)",
        );
        finish()
    }

    /// Sets the storm's priorities, pends every SPI with IRQs masked, unmasks and counts; true if
    /// each was taken exactly once, nothing else came, and none is left pending or active.
    fn storm(priorities: &[u8; COUNT]) -> bool {
        let first = FIRST.load(Ordering::Relaxed);
        irq::mask();
        for (i, p) in priorities.iter().enumerate() {
            gic::set_spi_priority(first + i as u32, *p);
            TAKEN[i].store(0, Ordering::Relaxed);
            ORDER[i].store(0, Ordering::Relaxed);
        }
        SEQ.store(0, Ordering::Relaxed);
        STRAY.store(0, Ordering::Relaxed);

        // One ISPENDR write per 32-INTID word: the whole storm lands in two or three writes.
        let (w0, w1) = (first / 32, (first + COUNT as u32 - 1) / 32);
        for w in w0..=w1 {
            gic::gicd_write(GICD_ISPENDR + 4 * w as usize, storm_bits(w, first));
        }
        let pending: u32 = (w0..=w1)
            .map(|w| {
                (gic::gicd_read(GICD_ISPENDR + 4 * w as usize) & storm_bits(w, first)).count_ones()
            })
            .sum();
        let start = timer::counter();
        irq::unmask();
        let freq = timer::frequency();
        while SEQ.load(Ordering::Relaxed) < COUNT as u32 && timer::counter() < start + freq {
            core::hint::spin_loop();
        }
        let elapsed = timer::counter() - start;
        timer::delay(freq / 100);

        let left_pending: u32 = (w0..=w1)
            .map(|w| {
                (gic::gicd_read(GICD_ISPENDR + 4 * w as usize) & storm_bits(w, first)).count_ones()
            })
            .sum();
        let left_active: u32 = (w0..=w1)
            .map(|w| {
                (gic::gicd_read(GICD_ISACTIVER + 4 * w as usize) & storm_bits(w, first))
                    .count_ones()
            })
            .sum();
        let mut ok = true;
        let mut lost = Text::<256>::new();
        for (i, t) in TAKEN.iter().enumerate() {
            match t.load(Ordering::Relaxed) {
                1 => {}
                0 => {
                    ok = false;
                    let _ = write!(lost, " {}", first + i as u32);
                }
                n => {
                    ok = false;
                    println!("SPI {} taken {n} times", first + i as u32);
                }
            }
        }
        if !lost.is_empty() {
            println!("never taken:{}", lost.as_str());
        }
        let mut order = Text::<256>::new();
        for slot in ORDER
            .iter()
            .take((SEQ.load(Ordering::Relaxed) as usize).min(COUNT))
        {
            let _ = write!(order, " {}", slot.load(Ordering::Relaxed));
        }
        println!("taken, in order:{}", order.as_str());
        let stray = STRAY.load(Ordering::Relaxed);
        let seq = SEQ.load(Ordering::Relaxed);
        println!(
            "storm: {pending}/{COUNT} read back pending before unmasking, {seq} taken in {elapsed} counter ticks, {stray} stray, {left_pending} left pending, {left_active} left active"
        );
        ok && stray == 0 && left_pending == 0 && left_active == 0 && pending == COUNT as u32
    }

    /// The storm's bits in 32-INTID word `w`.
    fn storm_bits(w: u32, first: u32) -> u32 {
        (0..32)
            .filter(|b| (first..first + COUNT as u32).contains(&(w * 32 + b)))
            .fold(0, |bits, b| bits | 1 << b)
    }
}
