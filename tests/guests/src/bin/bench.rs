//! Guest `bench`: micro-benchmarks in counter ticks (CNTVCT_EL0) per operation, for
//! `cargo xtask bench`. It runs both under the hypervisor and on the bare board (QEMU virt with
//! virtualization=off: EL1 directly on QEMU's GIC and PSCI over HVC). Output lines are exactly
//! `BENCH <name> <value>`, then `BENCH done`, then SYSTEM_OFF.
//!
//! - `null_hypercall`: PSCI_VERSION over HVC, 1000 iterations.
//! - `mmio_read`: a GICD_TYPER read, 1000 iterations.
//! - `timer_latency`: CNTV_CVAL = now + 10000, WFI; the handler's CNTVCT - CVAL, 100 iterations.
//! - `sgi_latency`: CPU 0 sends an SGI to CPU 1, whose handler reads CNTVCT; receive - send,
//!   100 iterations (needs 2 CPUs; left out with a note otherwise). CPU 1 answers with an SGI
//!   that CPU 0 waits for in WFI, so that CPU 0 never spins: under icount QEMU runs the CPUs
//!   round-robin, and a spinning sender would delay the receiver by whole time slices.
//!
//! Each is warmed up first. Under `-icount shift=0,sleep=off` with `-cpu max` a tick is one
//! instruction, so the figures repeat exactly.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    println!("the test guests only run on aarch64-unknown-none");
}

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use test_guests::{
        gic::{self, GICD_TYPER},
        hvc_call, irq, println,
        smccc::PSCI_VERSION,
        smp::start_secondary,
        system_off,
        timer::{self, CTL_ENABLE, VIRT_INTID},
    };

    test_guests::entry!(run);

    const WARMUP: u64 = 10;
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

    /// Ticks per call of `f`, averaged over `n` calls after `WARMUP` more.
    fn per_op(n: u64, mut f: impl FnMut()) -> u64 {
        for _ in 0..WARMUP {
            f();
        }
        let start = timer::counter();
        for _ in 0..n {
            f();
        }
        timer::counter() - start
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

        const N: u64 = 1000;
        let total = per_op(N, || {
            hvc_call(PSCI_VERSION, 0, 0, 0);
        });
        report("null_hypercall", total, N);

        let typer = (info.gicd + GICD_TYPER) as *const u32;
        let total = per_op(N, || {
            // SAFETY: GICD_TYPER of the GIC found in the DT, device-mapped; reading it is harmless.
            unsafe { core::ptr::read_volatile(typer) };
        });
        report("mmio_read", total, N);

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
