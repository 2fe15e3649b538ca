//! Test guest `idle`: an instance that asks for no CPU time. Every vCPU waits in WFI with
//! interrupts masked; vCPU 0 arms its virtual timer 3 s of guest time ahead, and when that wakes
//! it the guest reports and powers off. The scenarios check from the management shell that it
//! took (almost) no CPU meanwhile.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    println!("the test guests only run on aarch64-unknown-none");
}

#[cfg(target_os = "none")]
mod guest {
    use test_guests::{
        check, entry, finish, gic, println, smp,
        timer::{self, CTL_ENABLE, CTL_ISTATUS, VIRT_INTID},
    };

    entry!(run);

    /// Guest time the instance stays up, in seconds.
    const LIFETIME_S: u64 = 3;

    fn wait_forever(_cpu: usize) -> ! {
        loop {
            aarch64_cpu_wfi();
        }
    }

    fn aarch64_cpu_wfi() {
        // SAFETY: WFI only waits; interrupts stay masked, so nothing is taken.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }

    fn run(dtb: usize) -> ! {
        let cpus = smp::cpus_from_dt(dtb);
        for cpu in 1..cpus {
            if let Err(error) = smp::start_secondary(cpu, wait_forever) {
                println!("idle: CPU_ON({cpu}) returned {error}");
            }
        }
        gic::init(dtb);
        gic::enable(VIRT_INTID, 0x80);
        let deadline = timer::counter() + LIFETIME_S * timer::frequency();
        timer::set_cntv_cval(deadline);
        timer::set_cntv_ctl(CTL_ENABLE);
        println!("idle: {cpus} vCPUs waiting for {LIFETIME_S} s");
        // Interrupts stay masked: WFI returns once the timer's interrupt is pending.
        while timer::counter() < deadline || timer::cntv_ctl() & CTL_ISTATUS == 0 {
            aarch64_cpu_wfi();
        }
        timer::set_cntv_ctl(0);
        check("idle woke by its timer", true, "");
        finish()
    }
}
