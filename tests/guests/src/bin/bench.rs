//! Guest `bench`: micro-benchmarks in counter ticks (CNTVCT_EL0) per operation, for
//! `cargo xtask bench`. It runs both under the hypervisor and on the bare board (QEMU virt with
//! virtualization=off: EL1 directly on QEMU's GIC and PSCI over HVC). Output lines are exactly
//! `BENCH <name> <value>`, then `BENCH done`, then SYSTEM_OFF.
//!
//! - `null_hypercall`: PSCI_VERSION over HVC, 1000 iterations (`bench.calls=N` for N).
//! - `mmio_read`: a GICD_TYPER read, as many iterations.
//! - `mmio_write`: a word write to GICD_IPRIORITYR8 (INTIDs 32..35, which nothing here uses),
//!   as many iterations.
//! - `console_64_bytes`: 64 bytes (a line) written to the PL011 the way an early console does,
//!   polling FR then writing DR for each byte, with the FIFOs on; 20 lines, one counter read
//!   around all of them.
//! - `timer_latency`: CNTV_CVAL = now + 10000, WFI; the handler's CNTVCT - CVAL, 100 iterations.
//! - `sgi_latency`: CPU 0 sends an SGI to CPU 1, whose handler reads CNTVCT; receive - send,
//!   100 iterations (needs 2 CPUs; left out with a note otherwise). CPU 1 answers with an SGI
//!   that CPU 0 waits for in WFI, so that CPU 0 never spins: under icount QEMU runs the CPUs
//!   round-robin, and a spinning sender would delay the receiver by whole time slices.
//!
//! Each is warmed up first. Under `-icount shift=0,sleep=off` with `-cpu max` a tick is one
//! instruction, so the figures repeat exactly. The null hypercall and the MMIO read are timed in
//! batches of 10 calls; a batch that took longer than 100 µs of counter time (the vCPU was
//! switched out in it: a slice is at least 1 ms) is left out and counted on a
//! `bench: <name>: <k> of <n> batches left out` line, so that they stay the cost of the call
//! when another instance shares the CPU.
//!
//! Bootargs (`/chosen/bootargs`, from the instance's manifest under the hypervisor):
//!
//! - `bench.neighbour=1`: another instance is busy on this CPU. Before measuring, spin until
//!   this vCPU has been switched out once (a gap of more than 100 µs in its counter reads), so
//!   that the neighbour is up and running; print how long the gap was.
//! - `bench.switches=N`: instead of the micro-benchmarks, measure vCPU switches against an
//!   identical instance on the same CPU (see `switches`): spin reading the counter, and print
//!   `BENCH switch_gap <g>` and `BENCH switch_run <r>`, the mean gap (switched out) and the mean
//!   run (switched in) over N gaps. The cost of one switch is `(gap - run of the other) / 2`,
//!   which `cargo xtask bench` works out from both instances' figures.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    println!("the test guests only run on aarch64-unknown-none");
}

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use test_guests::{
        console, dt,
        gic::{self, GICD_IPRIORITYR, GICD_TYPER},
        hvc_call, irq, println,
        smccc::PSCI_VERSION,
        smp::start_secondary,
        system_off,
        timer::{self, CTL_ENABLE, VIRT_INTID},
    };

    test_guests::entry!(run);

    const WARMUP: u64 = 10;
    /// Calls per batch in `per_op`: the counter is read once a batch.
    const BATCH: u64 = 10;
    /// Gaps left out at the start of `switches`: they may hold the other instance's boot.
    const SKIPPED_GAPS: u64 = 4;
    const SGI: u32 = 1;
    const REPLY: u32 = 2;

    /// Timer: the handler's CNTVCT - CVAL, and whether it has run.
    static TIMER_LATENCY: AtomicU64 = AtomicU64::new(0);
    static TIMER_FIRED: AtomicBool = AtomicBool::new(false);
    /// SGI: the receiver's CNTVCT and how many it has taken.
    static SGI_TIME: AtomicU64 = AtomicU64::new(0);
    static SGI_TAKEN: AtomicU64 = AtomicU64::new(0);
    static RECEIVER_READY: AtomicBool = AtomicBool::new(false);
    static REPLIED: AtomicBool = AtomicBool::new(false);

    fn handler(intid: u32, cpu: usize) {
        match intid {
            VIRT_INTID => {
                let now = timer::counter();
                TIMER_LATENCY.store(now.wrapping_sub(timer::cntv_cval()), Ordering::Relaxed);
                timer::set_cntv_ctl(0);
                TIMER_FIRED.store(true, Ordering::Release);
            }
            SGI => {
                SGI_TIME.store(timer::counter(), Ordering::Relaxed);
                SGI_TAKEN.fetch_add(1, Ordering::Release);
                gic::send_sgi(REPLY, 1 << 0);
            }
            REPLY => REPLIED.store(true, Ordering::Release),
            _ => println!("bench: unexpected interrupt {intid} on CPU {cpu}"),
        }
    }

    fn report(name: &str, total: u64, n: u64) {
        println!("BENCH {name} {}", total / n);
    }

    /// Counter ticks longer than any exit and shorter than any slice (1 ms at least): 100 µs. A
    /// gap this long between two counter reads means the vCPU was switched out.
    fn switched_out_ticks() -> u64 {
        timer::frequency() / 10_000
    }

    /// Measures `n` calls of `f` (after `WARMUP` more) in batches of `BATCH`, and reports the
    /// ticks per call over the batches that were not switched out (see the module's docs).
    fn per_op(name: &str, n: u64, mut f: impl FnMut()) {
        for _ in 0..WARMUP {
            f();
        }
        let limit = switched_out_ticks();
        let (mut total, mut calls, mut left_out) = (0, 0, 0);
        let mut last = timer::counter();
        for _ in 0..n / BATCH {
            for _ in 0..BATCH {
                f();
            }
            let now = timer::counter();
            let ticks = now - last;
            last = now;
            if ticks < limit {
                total += ticks;
                calls += BATCH;
            } else {
                left_out += 1;
            }
        }
        if left_out > 0 {
            println!(
                "bench: {name}: {left_out} of {} batches left out (switched out)",
                n / BATCH
            );
        }
        report(name, total, calls.max(1));
    }

    fn run(dtb: usize) -> ! {
        let info = gic::init(dtb);
        irq::set_handler(handler);
        println!(
            "bench: {} cpu(s), counter {} Hz, distributor {:#x}",
            info.cpus,
            timer::frequency(),
            info.gicd
        );
        if let Some(n) = dt::bootarg_u64(dtb, "bench.switches") {
            switches(n.max(1));
            println!("BENCH done");
            system_off()
        }
        if dt::bootarg_u64(dtb, "bench.neighbour") == Some(1) {
            wait_for_neighbour();
        }

        let calls = dt::bootarg_u64(dtb, "bench.calls")
            .unwrap_or(1000)
            .max(BATCH);
        per_op("null_hypercall", calls, || {
            hvc_call(PSCI_VERSION, 0, 0, 0);
        });

        let typer = (info.gicd + GICD_TYPER) as *const u32;
        per_op("mmio_read", calls, || {
            // SAFETY: GICD_TYPER of the GIC found in the DT, device-mapped; reading it is harmless.
            unsafe { core::ptr::read_volatile(typer) };
        });

        let priorities = info.gicd + GICD_IPRIORITYR + 32;
        per_op("mmio_write", calls, || {
            // SAFETY: GICD_IPRIORITYR8 of the GIC found in the DT, device-mapped; the SPIs it
            // sets the priority of are never enabled here.
            unsafe { test_guests::mmio_write32(priorities, 0xa0a0_a0a0) };
        });
        console_64_bytes();

        timer_latency();
        if info.cpus >= 2 {
            sgi_latency();
        } else {
            println!(
                "bench: sgi_latency needs 2 CPUs, this board has {}",
                info.cpus
            );
        }
        println!("BENCH done");
        system_off()
    }

    /// Lines `console_64_bytes` writes (each within the hypervisor's console budget at once).
    const CONSOLE_LINES: u64 = 20;

    /// Ticks per 64 bytes written to the console PL011 byte by byte (FR polled, DR written).
    fn console_64_bytes() {
        const LINE: &[u8; 64] =
            b"console_64_bytes: 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHI\n";
        console::enable_fifos();
        console::write_raw(LINE);
        let start = timer::counter();
        for _ in 0..CONSOLE_LINES {
            console::write_raw(LINE);
        }
        report("console_64_bytes", timer::counter() - start, CONSOLE_LINES);
    }

    /// Spins until this vCPU has been switched out once (or 1 s of counter time has passed).
    fn wait_for_neighbour() {
        let limit = switched_out_ticks();
        let start = timer::counter();
        let give_up = start + timer::frequency();
        let mut last = start;
        loop {
            let now = timer::counter();
            if now - last > limit {
                println!(
                    "bench: switched out for {} ticks: the neighbour runs",
                    now - last
                );
                return;
            }
            if now > give_up {
                println!("bench: not switched out within 1 s: no neighbour");
                return;
            }
            last = now;
        }
    }

    /// vCPU switches between this instance and an identical one on the same CPU, both CPU-bound:
    /// each spins reading the counter, and a gap of more than `switched_out_ticks` between two
    /// reads is one time switched out. The gap runs from this vCPU's last read before the
    /// switch to its first read after it: the switch away, the other vCPU's run (from its first
    /// read to its last) and the switch back. The run before each gap is measured the same way,
    /// so the mean gap of one instance minus the mean run of the other is two switches, each
    /// from one guest's last instruction to the other's first (timer interrupt, exit, scheduler,
    /// saving one vCPU and loading the other), each with about one iteration of this loop (11
    /// instructions) of the guests' own.
    ///
    /// The first `SKIPPED_GAPS` gaps are left out (the other instance may still be booting) and
    /// so is the last one: the instance that finishes first prints in what is the other's last
    /// gap, then spins on for a few gaps more, or until the other has stopped. Gives up after 2 s of counter time
    /// without a switch.
    fn switches(n: u64) {
        let limit = switched_out_ticks();
        let give_up = 2 * timer::frequency();
        let (mut gaps, mut runs, mut seen) = (0u64, 0u64, 0u64);
        let (mut min_gap, mut max_gap) = (u64::MAX, 0u64);
        let mut last = timer::counter();
        let mut run_start = last;
        while seen < SKIPPED_GAPS + n + 1 {
            let now = timer::counter();
            if now - last > limit {
                if (SKIPPED_GAPS..SKIPPED_GAPS + n).contains(&seen) {
                    gaps += now - last;
                    runs += last - run_start;
                    min_gap = min_gap.min(now - last);
                    max_gap = max_gap.max(now - last);
                }
                seen += 1;
                run_start = now;
            } else if now - run_start > give_up {
                println!("bench: no switch for 2 s after {seen} gaps: no other instance");
                return;
            }
            last = now;
        }
        println!("bench: {n} gaps of {min_gap}..={max_gap} ticks");
        report("switch_gap", gaps, n);
        report("switch_run", runs, n);
        // The other instance may need a few gaps more (its boot took a different number of
        // slices): give it up to `SKIPPED_GAPS` more, or until it has stopped (no switch for
        // 20 ms).
        let quiet = timer::frequency() / 50;
        let (mut since, mut extra) = (timer::counter(), 0);
        let mut last = since;
        while extra < SKIPPED_GAPS {
            let now = timer::counter();
            if now - last > limit {
                since = now;
                extra += 1;
            } else if now - since > quiet {
                return;
            }
            last = now;
        }
    }

    fn timer_latency() {
        const N: u64 = 100;
        gic::enable(VIRT_INTID, 0x80);
        irq::unmask();
        let mut total = 0;
        for i in 0..WARMUP + N {
            TIMER_FIRED.store(false, Ordering::Relaxed);
            timer::set_cntv_cval(timer::counter() + 10_000);
            timer::set_cntv_ctl(CTL_ENABLE);
            irq::wait_until(|| TIMER_FIRED.load(Ordering::Acquire));
            if i >= WARMUP {
                total += TIMER_LATENCY.load(Ordering::Relaxed);
            }
        }
        gic::disable(VIRT_INTID);
        report("timer_latency", total, N);
    }

    fn receiver(_cpu: usize) -> ! {
        gic::init_cpu();
        gic::enable(SGI, 0x80);
        RECEIVER_READY.store(true, Ordering::Release);
        irq::unmask();
        loop {
            aarch64_cpu::asm::wfi();
        }
    }

    fn sgi_latency() {
        const N: u64 = 100;
        if let Err(error) = start_secondary(1, receiver) {
            println!("bench: CPU_ON(1) returned {error}: no sgi_latency");
            return;
        }
        while !RECEIVER_READY.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        gic::enable(REPLY, 0x80);
        irq::unmask();
        let mut total = 0;
        for i in 0..WARMUP + N {
            let taken = SGI_TAKEN.load(Ordering::Acquire);
            REPLIED.store(false, Ordering::Relaxed);
            let sent = timer::counter();
            gic::send_sgi(SGI, 1 << 1);
            irq::wait_until(|| REPLIED.load(Ordering::Acquire));
            if SGI_TAKEN.load(Ordering::Acquire) != taken + 1 {
                println!(
                    "bench: SGI {SGI} taken {} times instead of once",
                    SGI_TAKEN.load(Ordering::Acquire) - taken
                );
            }
            if i >= WARMUP {
                total += SGI_TIME.load(Ordering::Relaxed).wrapping_sub(sent);
            }
        }
        report("sgi_latency", total, N);
    }
}
