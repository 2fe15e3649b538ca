//! Test guest `sgi` (4 vCPUs): every CPU sends SGIs to chosen targets (a ring, a broadcast with
//! IRM, a two-CPU target list, one to itself); the SGI number names the sender, so after a
//! barrier the receivers' counts show whether each SGI arrived exactly once at exactly its targets.
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
        check, entry, fail, finish, gic, irq, println,
        report::Text,
        smp::{Barrier, MAX_CPUS, start_secondary},
        timer,
    };

    entry!(run);

    const CPUS: usize = 4;
    /// SGI i+1 goes from CPU i to CPU (i+1) % 4.
    const RING: u32 = 1;
    /// CPU 0 sends this one to every other CPU (ICC_SGI1R_EL1.IRM = 1).
    const BROADCAST: u32 = 8;
    /// CPU 3 sends this one to CPUs 0 and 2 (one target list).
    const MULTICAST: u32 = 10;
    const MULTICAST_TARGETS: u16 = 0b0101;
    /// Every CPU sends this one to itself.
    const SELF: u32 = 12;

    /// RECEIVED[cpu][sgi]: how often CPU `cpu` took SGI `sgi`.
    static RECEIVED: [[AtomicU32; 16]; MAX_CPUS] =
        [const { [const { AtomicU32::new(0) }; 16] }; MAX_CPUS];
    /// Interrupts that are not SGIs, or taken on a CPU beyond MAX_CPUS.
    static STRAY: AtomicU32 = AtomicU32::new(0);
    static READY: Barrier = Barrier::new(CPUS);
    static SENT: Barrier = Barrier::new(CPUS);

    /// How often CPU `cpu` should take SGI `sgi`.
    fn expected(cpu: usize, sgi: u32) -> u32 {
        let hit = match sgi {
            s if (RING..RING + CPUS as u32).contains(&s) => {
                let sender = (s - RING) as usize;
                cpu == (sender + 1) % CPUS
            }
            BROADCAST => cpu != 0,
            MULTICAST => MULTICAST_TARGETS & (1 << cpu) != 0,
            SELF => true,
            _ => false,
        };
        u32::from(hit)
    }

    fn handler(intid: u32, cpu: usize) {
        match RECEIVED.get(cpu).and_then(|row| row.get(intid as usize)) {
            Some(count) => {
                count.fetch_add(1, Ordering::SeqCst);
            }
            None => {
                STRAY.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// What every CPU does once up: take SGIs, wait for all, send its SGIs, wait for all.
    fn take_part(cpu: usize) {
        for sgi in 0..16 {
            gic::enable(sgi, 0x80);
        }
        irq::unmask();
        READY.wait();
        gic::send_sgi(RING + cpu as u32, 1 << ((cpu + 1) % CPUS));
        if cpu == 0 {
            gic::send_sgi_to_others(BROADCAST);
        }
        if cpu == 3 {
            gic::send_sgi(MULTICAST, MULTICAST_TARGETS);
        }
        gic::send_sgi(SELF, 1 << cpu);
        SENT.wait();
    }

    fn secondary(cpu: usize) -> ! {
        gic::init_cpu();
        take_part(cpu);
        loop {
            aarch64_cpu::asm::wfi();
        }
    }

    fn run(dtb: usize) -> ! {
        let info = gic::init(dtb);
        irq::set_handler(handler);
        println!(
            "gic: distributor {:#x}, {}, {} cpu(s)",
            info.gicd, info.cpu_interface, info.cpus
        );
        if info.cpus != CPUS {
            fail(
                "sgi routing",
                format_args!("{} CPUs in the DT, want {CPUS}", info.cpus),
            );
            finish()
        }
        for cpu in 1..CPUS {
            if let Err(error) = start_secondary(cpu, secondary) {
                fail(
                    "sgi routing",
                    format_args!("CPU_ON({cpu}) returned {error}"),
                );
                finish()
            }
        }
        take_part(0);
        println!("all {CPUS} CPUs up and sent their SGIs");

        // Wait for every expected SGI (at most 1 s), then 20 ms more for strays and duplicates.
        let want: u32 = (0..CPUS)
            .flat_map(|cpu| (0..16).map(move |sgi| expected(cpu, sgi)))
            .sum();
        let freq = timer::frequency();
        let give_up = timer::counter() + freq;
        let total = || -> u32 {
            RECEIVED
                .iter()
                .flatten()
                .map(|c| c.load(Ordering::SeqCst))
                .sum()
        };
        while total() < want && timer::counter() < give_up {
            core::hint::spin_loop();
        }
        timer::delay(freq / 50);

        let mut wrong = 0;
        for (cpu, row) in RECEIVED.iter().enumerate() {
            let mut line = Text::<96>::new();
            for (sgi, count) in row.iter().enumerate() {
                let got = count.load(Ordering::SeqCst);
                let want = if cpu < CPUS {
                    expected(cpu, sgi as u32)
                } else {
                    0
                };
                if got != want {
                    wrong += 1;
                    println!("cpu {cpu}: SGI {sgi} taken {got} times, expected {want}");
                }
                if got != 0 {
                    let sep = if line.is_empty() { "" } else { " " };
                    let _ = match got {
                        1 => write!(line, "{sep}{sgi}"),
                        n => write!(line, "{sep}{sgi}x{n}"),
                    };
                }
            }
            if cpu < CPUS {
                println!("cpu {cpu} took SGIs {}", line.as_str());
            }
        }
        let stray = STRAY.load(Ordering::SeqCst);
        check(
            "sgi routing",
            wrong == 0 && stray == 0 && total() == want,
            format_args!(
                "{wrong} (cpu, sgi) counts wrong, {stray} stray interrupts, {} of {want} taken",
                total()
            ),
        );
        finish()
    }
}
