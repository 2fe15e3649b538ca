//! Test guest `psci`: PSCI over HVC beyond the basics: CPU_ON's argument checks (an entry point
//! outside RAM, reserved MPIDR bits), CPU_SUSPEND offered by PSCI_FEATURES, CPU_SUSPEND to standby
//! (woken by the virtual timer with IRQs masked) and to a power-down state (the vCPU restarts at
//! its entry with x0 = context_id and fresh EL1 state; its timer and interrupt state are kept).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    println!("the test guests only run on aarch64-unknown-none");
}

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

    use test_guests::{
        check, entry, fail, finish, gic, hvc_call, irq, println,
        report::Text,
        smccc::PSCI_FEATURES,
        smp::{self, POWER_STATE_POWER_DOWN, PSCI_CPU_ON, PSCI_CPU_SUSPEND, STACK_SIZE},
        take_exception,
        timer::{self, CTL_ENABLE, CTL_ISTATUS, VIRT_INTID},
    };

    entry!(run);

    /// PSCI INVALID_PARAMETERS.
    const INVALID_PARAMETERS: i64 = -2;
    /// PSCI INVALID_ADDRESS.
    const INVALID_ADDRESS: i64 = -9;
    /// An MPIDR bit outside the affinity fields (RES0).
    const MPIDR_RESERVED_BIT: u64 = 1 << 40;
    /// PSTATE.{D,A,I,F} all set, as DAIF reads.
    const DAIF_ALL: u64 = 0xf << 6;

    /// Interrupts taken, and the INTID of the last one (u32::MAX: none since the last drain).
    static TAKEN: AtomicU32 = AtomicU32::new(0);
    static LAST_INTID: AtomicU32 = AtomicU32::new(u32::MAX);

    /// Set just before the power-down suspend; the resume path checks (and clears) it.
    static SUSPENDED: AtomicBool = AtomicBool::new(false);
    /// Written before the power-down suspend; memory must still hold it on resume.
    static MAGIC: AtomicU64 = AtomicU64::new(0);
    /// The virtual timer deadline of the power-down suspend.
    static DEADLINE: AtomicU64 = AtomicU64::new(0);
    const MAGIC_VALUE: u64 = 0x5053_4349_5357_4b21;
    /// Put in TPIDR_EL1 before the power-down suspend: a fresh EL1 state no longer holds it.
    const TPIDR_MARK: u64 = 0x7469_6472_6d61_726b;

    const POWER_DOWN: &str = "cpu_suspend power-down resumes at its entry";

    fn handler(intid: u32, _cpu: usize) {
        if intid == VIRT_INTID {
            // The timer is normally stopped already; never let it fire again.
            timer::set_cntv_ctl(0);
        }
        LAST_INTID.store(intid, Ordering::SeqCst);
        TAKEN.fetch_add(1, Ordering::SeqCst);
    }

    fn run(dtb: usize) -> ! {
        let info = gic::init(dtb);
        irq::set_handler(handler);
        println!(
            "gic: distributor {:#x}, {}, {} cpu(s); counter {} Hz",
            info.gicd,
            info.cpu_interface,
            info.cpus,
            timer::frequency()
        );
        let me = smp::mpidr_of(smp::cpu_id());
        let entry = smp::secondary_entry();
        let stack = smp::stack_top(smp::cpu_id()) as u64;
        call(
            "cpu_on entry outside ram",
            format_args!("CPU_ON(mpidr {me:#x}, entry 0, context_id {stack:#x})"),
            [PSCI_CPU_ON, me, 0, stack],
            INVALID_ADDRESS,
        );
        call(
            "cpu_on reserved mpidr bits",
            format_args!(
                "CPU_ON(mpidr {:#x}, entry {entry:#x}, context_id {stack:#x})",
                MPIDR_RESERVED_BIT | me
            ),
            [PSCI_CPU_ON, MPIDR_RESERVED_BIT | me, entry, stack],
            INVALID_PARAMETERS,
        );
        call(
            "cpu_suspend offered",
            format_args!("PSCI_FEATURES(CPU_SUSPEND {PSCI_CPU_SUSPEND:#x})"),
            [PSCI_FEATURES, PSCI_CPU_SUSPEND, 0, 0],
            0,
        );
        gic::enable(VIRT_INTID, 0x80);
        standby();
        power_down()
    }

    /// One PSCI call that must return `want` in x0 without an exception at EL1.
    fn call(name: &str, what: core::fmt::Arguments, args: [u64; 4], want: i64) {
        println!("{name}: {what}");
        take_exception();
        let ret = hvc_call(args[0], args[1], args[2], args[3]) as i64;
        match take_exception() {
            Some(e) => fail(name, format_args!("the HVC took an exception at EL1: {e}")),
            None => {
                println!("{name}: -> {ret}");
                check(
                    name,
                    ret == want,
                    format_args!("returned {ret}, expected {want}"),
                );
            }
        }
    }

    /// Arms the virtual timer 1 ms ahead; returns its deadline.
    fn arm_timer() -> u64 {
        let deadline = timer::counter() + timer::frequency() / 1000;
        timer::set_cntv_cval(deadline);
        timer::set_cntv_ctl(CTL_ENABLE);
        deadline
    }

    /// Unmasks IRQs for 1 ms so whatever is pending is taken (acknowledged and ended), then masks
    /// them again; returns how many were taken and the INTID of the last one.
    fn drain() -> (u32, Option<u32>) {
        LAST_INTID.store(u32::MAX, Ordering::SeqCst);
        let before = TAKEN.load(Ordering::SeqCst);
        irq::unmask();
        timer::delay(timer::frequency() / 1000);
        irq::mask();
        let last = LAST_INTID.load(Ordering::SeqCst);
        (
            TAKEN.load(Ordering::SeqCst) - before,
            (last != u32::MAX).then_some(last),
        )
    }

    /// CPU_SUSPEND to standby with IRQs masked: returns SUCCESS once the virtual timer fires.
    fn standby() {
        const NAME: &str = "cpu_suspend standby wakes by its timer";
        irq::mask();
        println!(
            "{NAME}: CPU_SUSPEND(power_state 0, entry 0, context_id 0) with IRQs masked, virtual timer due in 1 ms"
        );
        take_exception();
        let deadline = arm_timer();
        let ret = hvc_call(PSCI_CPU_SUSPEND, 0, 0, 0) as i64;
        let now = timer::counter();
        let ctl = timer::cntv_ctl();
        timer::set_cntv_ctl(0);
        let exc = take_exception();
        // The timer interrupt that woke the vCPU is still pending at the (virtual) GIC: take it,
        // so it is acknowledged and ended like any other.
        let (taken, last) = drain();
        let late = now.wrapping_sub(deadline) as i64;
        println!(
            "{NAME}: -> {ret}, {late} ticks after the deadline, CNTV_CTL={ctl:#x}; {taken} interrupt(s) taken once unmasked (last INTID {last:?})"
        );
        let detail = match exc {
            Some(e) => Text::<160>::format(format_args!("the HVC took an exception at EL1: {e}")),
            None => Text::format(format_args!(
                "returned {ret} {late} ticks after the deadline with CNTV_CTL={ctl:#x}; expected 0, at or after the deadline, ISTATUS set"
            )),
        };
        check(
            NAME,
            exc.is_none() && ret == 0 && now >= deadline && ctl & CTL_ISTATUS != 0,
            detail.as_str(),
        );
    }

    /// CPU_SUSPEND to a power-down state: continues in [`resume`] on success.
    fn power_down() -> ! {
        let cpu = smp::cpu_id();
        irq::mask();
        println!(
            "{POWER_DOWN}: CPU_SUSPEND(power_state {POWER_STATE_POWER_DOWN:#x}, entry {:#x}, context_id {:#x}) with IRQs masked, virtual timer due in 1 ms",
            smp::secondary_entry(),
            smp::stack_top(cpu)
        );
        MAGIC.store(MAGIC_VALUE, Ordering::SeqCst);
        set_tpidr_el1(TPIDR_MARK);
        SUSPENDED.store(true, Ordering::SeqCst);
        DEADLINE.store(arm_timer(), Ordering::SeqCst);
        let error = smp::suspend_power_down(resume);
        SUSPENDED.store(false, Ordering::SeqCst);
        timer::set_cntv_ctl(0);
        fail(
            POWER_DOWN,
            format_args!("CPU_SUSPEND returned {error} instead of resuming at its entry"),
        );
        drain();
        finish()
    }

    /// Where the vCPU comes back after the power-down suspend: on this CPU's runtime stack (x0 =
    /// context_id), through the runtime's secondary path.
    fn resume(cpu: usize) -> ! {
        let now = timer::counter();
        let (sp, daif, tpidr) = (sp(), daif(), tpidr_el1());
        let ctl = timer::cntv_ctl();
        let deadline = DEADLINE.load(Ordering::SeqCst);
        let suspended = SUSPENDED.swap(false, Ordering::SeqCst);
        let magic = MAGIC.load(Ordering::SeqCst);
        let top = smp::stack_top(cpu);
        let bottom = top - STACK_SIZE;
        let late = now.wrapping_sub(deadline) as i64;
        println!(
            "{POWER_DOWN}: resumed on CPU {cpu} {late} ticks after the deadline, sp={sp:#x} (stack [{bottom:#x}, {top:#x})), DAIF={daif:#x}, TPIDR_EL1={tpidr:#x}, CNTV_CTL={ctl:#x}"
        );
        let detail = if !suspended || magic != MAGIC_VALUE {
            Text::<160>::format(format_args!(
                "not resuming from this guest's suspend (flag {suspended}, magic {magic:#x})"
            ))
        } else if now < deadline {
            Text::format(format_args!("resumed {} ticks before the deadline", -late))
        } else if !(bottom..top).contains(&sp) {
            Text::format(format_args!(
                "sp {sp:#x} is outside the stack given as context_id"
            ))
        } else if daif != DAIF_ALL {
            Text::format(format_args!(
                "DAIF={daif:#x}, expected every exception masked"
            ))
        } else if tpidr == TPIDR_MARK {
            Text::format(format_args!(
                "TPIDR_EL1 kept its value: EL1 state was not reset"
            ))
        } else {
            Text::new()
        };
        check(POWER_DOWN, detail.is_empty(), detail.as_str());
        // The CPU interface state is kept by a power-down, but redo its setup as a resuming OS
        // would; then stop the timer and take the interrupt that woke the vCPU.
        gic::init_cpu();
        timer::set_cntv_ctl(0);
        let (taken, last) = drain();
        println!(
            "{POWER_DOWN}: {taken} interrupt(s) taken once unmasked after resuming (last INTID {last:?})"
        );
        gic::disable(VIRT_INTID);
        finish()
    }

    fn sp() -> usize {
        let sp: usize;
        // SAFETY: reads the stack pointer only.
        unsafe { core::arch::asm!("mov {0}, sp", out(reg) sp, options(nomem, nostack)) };
        sp
    }

    fn daif() -> u64 {
        let daif: u64;
        // SAFETY: reads DAIF only.
        unsafe { core::arch::asm!("mrs {0}, daif", out(reg) daif, options(nomem, nostack)) };
        daif
    }

    fn tpidr_el1() -> u64 {
        let v: u64;
        // SAFETY: reads TPIDR_EL1 only.
        unsafe { core::arch::asm!("mrs {0}, tpidr_el1", out(reg) v, options(nomem, nostack)) };
        v
    }

    fn set_tpidr_el1(v: u64) {
        // SAFETY: TPIDR_EL1 is a scratch register the runtime does not use.
        unsafe { core::arch::asm!("msr tpidr_el1, {0}", in(reg) v, options(nomem, nostack)) };
    }
}
