//! Test guest `spin`: a CPU-bound fairness probe. Every vCPU in the device tree (the secondaries
//! started through PSCI CPU_ON) counts iterations of a tight loop that makes no exits until the
//! virtual counter passes a deadline common to all of them: 2 s of guest time after CPU 0 starts,
//! or `spin.seconds=N` from `/chosen/bootargs`. Guest time runs on while a vCPU is descheduled,
//! so instances started together that spin for the same guest time end with iteration totals
//! proportional to the CPU share each one got.
//!
//! Prints `spin: total <N> iterations on <k> vCPUs`, then `spin: vcpu <i> <n>` for each vCPU, and
//! passes "spin counted" if every vCPU counted some iterations.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    println!("the test guests only run on aarch64-unknown-none");
}

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use test_guests::{
        check, dt, entry, fail, finish, hvc_call, irq, println,
        smp::{self, MAX_CPUS, start_secondary},
        timer,
    };

    entry!(run);

    /// Guest time to spin for when the bootargs do not say.
    const DEFAULT_SECONDS: u64 = 2;
    /// Iterations between two looks at the counter (and two stores of the CPU's count).
    const CHUNK: u64 = 1024;
    /// PSCI CPU_OFF.
    const PSCI_CPU_OFF: u64 = 0x8400_0002;

    /// One CPU's iteration count, alone in its cache line.
    #[repr(align(64))]
    struct Count(AtomicU64);

    static COUNTS: [Count; MAX_CPUS] = [const { Count(AtomicU64::new(0)) }; MAX_CPUS];
    /// The virtual counter value at which every CPU stops.
    static DEADLINE: AtomicU64 = AtomicU64::new(u64::MAX);
    /// CPUs that have stopped counting.
    static DONE: AtomicUsize = AtomicUsize::new(0);

    /// `CHUNK` iterations of a three-instruction loop (add, subs, b.ne): `n + CHUNK`.
    #[inline(always)]
    fn chunk(mut n: u64) -> u64 {
        // SAFETY: register arithmetic only.
        unsafe {
            core::arch::asm!(
                "2:",
                "add {n}, {n}, #1",
                "subs {i}, {i}, #1",
                "b.ne 2b",
                n = inout(reg) n,
                i = inout(reg) CHUNK => _,
                options(nomem, nostack),
            )
        };
        n
    }

    /// Counts until the deadline, publishing the count after every chunk.
    fn spin(cpu: usize) {
        let deadline = DEADLINE.load(Ordering::Acquire);
        let count = &COUNTS[cpu].0;
        let mut n = 0;
        while timer::counter() < deadline {
            n = chunk(n);
            count.store(n, Ordering::Relaxed);
        }
        DONE.fetch_add(1, Ordering::Release);
    }

    fn secondary(cpu: usize) -> ! {
        spin(cpu);
        // Out of the way of the other instances: power this vCPU off (park if that fails).
        hvc_call(PSCI_CPU_OFF, 0, 0, 0);
        loop {
            aarch64_cpu::asm::wfi();
        }
    }

    fn run(dtb: usize) -> ! {
        irq::mask();
        let cpus = smp::cpus_from_dt(dtb).min(MAX_CPUS);
        let seconds = dt::bootarg_u64(dtb, "spin.seconds").unwrap_or(DEFAULT_SECONDS);
        let freq = timer::frequency();
        println!("spin: {cpus} vCPUs spinning for {seconds} s of guest time (counter {freq} Hz)");
        let start = timer::counter();
        DEADLINE.store(start + seconds * freq, Ordering::Release);
        for cpu in 1..cpus {
            if let Err(error) = start_secondary(cpu, secondary) {
                fail(
                    "spin counted",
                    format_args!("CPU_ON({cpu}) returned {error}"),
                );
                finish()
            }
        }
        spin(0);

        // Every vCPU looks at the same deadline; one that was descheduled there finishes its
        // chunk when it runs again. Give up if one has not after as long again (at least 5 s).
        let give_up = DEADLINE.load(Ordering::Relaxed) + seconds.max(5) * freq;
        while DONE.load(Ordering::Acquire) < cpus && timer::counter() < give_up {
            core::hint::spin_loop();
        }
        let done = DONE.load(Ordering::Acquire);
        let elapsed_ms = (timer::counter() - start) * 1000 / freq;
        let counts: [u64; MAX_CPUS] =
            core::array::from_fn(|cpu| COUNTS[cpu].0.load(Ordering::Relaxed));
        let total: u64 = counts[..cpus].iter().sum();
        println!("spin: total {total} iterations on {cpus} vCPUs");
        for (cpu, n) in counts[..cpus].iter().enumerate() {
            println!("spin: vcpu {cpu} {n}");
        }
        println!("spin: {done} of {cpus} vCPUs finished, {elapsed_ms} ms of guest time");
        let idle = counts[..cpus].iter().filter(|&&n| n == 0).count();
        check(
            "spin counted",
            idle == 0 && done == cpus,
            format_args!(
                "{idle} of {cpus} vCPUs counted nothing, {done} of {cpus} finished in time"
            ),
        );
        finish()
    }
}
