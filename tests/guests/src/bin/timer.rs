//! Test guest `timer`: a 1 kHz virtual timer for 500 ticks and a 1 kHz EL1 physical timer for 100
//! ticks, interrupt driven, with absolute deadlines (CVAL += period): every tick must arrive, never
//! early and never a full period late.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    println!("the test guests only run on aarch64-unknown-none");
}

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use test_guests::{
        check, entry, finish, gic, irq, println,
        report::Text,
        timer::{self, CTL_ENABLE, PHYS_INTID, VIRT_INTID},
    };

    entry!(run);

    /// One timer under test: its registers and what its interrupt handler recorded.
    struct Tick {
        /// Ticks taken so far.
        count: AtomicU64,
        /// Ticks wanted.
        target: AtomicU64,
        /// Ticks period in counter ticks.
        period: AtomicU64,
        /// The current deadline (CVAL).
        deadline: AtomicU64,
        /// Largest `counter - deadline` seen.
        max_late: AtomicU64,
        /// Ticks taken before their deadline or a full period (or more) late.
        bad: AtomicU64,
        /// First bad tick: (tick index, lateness as i64).
        first_bad: AtomicU64,
        first_bad_late: AtomicU64,
        /// Interrupts that came after the last tick was taken (timer still firing).
        extra: AtomicU64,
        done: AtomicBool,
    }

    impl Tick {
        const fn new() -> Self {
            Self {
                count: AtomicU64::new(0),
                target: AtomicU64::new(0),
                period: AtomicU64::new(0),
                deadline: AtomicU64::new(0),
                max_late: AtomicU64::new(0),
                bad: AtomicU64::new(0),
                first_bad: AtomicU64::new(0),
                first_bad_late: AtomicU64::new(0),
                extra: AtomicU64::new(0),
                done: AtomicBool::new(false),
            }
        }
    }

    static VIRT: Tick = Tick::new();
    static PHYS: Tick = Tick::new();

    /// Accessors for one of the two timers.
    #[derive(Clone, Copy)]
    struct Regs {
        now: fn() -> u64,
        set_cval: fn(u64),
        set_ctl: fn(u64),
    }

    const VIRT_REGS: Regs = Regs {
        now: timer::counter,
        set_cval: timer::set_cntv_cval,
        set_ctl: timer::set_cntv_ctl,
    };
    const PHYS_REGS: Regs = Regs {
        now: timer::phys_counter,
        set_cval: timer::set_cntp_cval,
        set_ctl: timer::set_cntp_ctl,
    };

    fn on_tick(t: &Tick, regs: Regs) {
        let now = (regs.now)();
        if t.done.load(Ordering::Relaxed) {
            t.extra.fetch_add(1, Ordering::Relaxed);
            (regs.set_ctl)(0);
            return;
        }
        let deadline = t.deadline.load(Ordering::Relaxed);
        let period = t.period.load(Ordering::Relaxed);
        let late = now.wrapping_sub(deadline) as i64;
        let n = t.count.fetch_add(1, Ordering::Relaxed);
        if late < 0 || late as u64 >= period {
            if t.bad.fetch_add(1, Ordering::Relaxed) == 0 {
                t.first_bad.store(n, Ordering::Relaxed);
                t.first_bad_late.store(late as u64, Ordering::Relaxed);
            }
        } else {
            t.max_late.fetch_max(late as u64, Ordering::Relaxed);
        }
        if n + 1 == t.target.load(Ordering::Relaxed) {
            t.done.store(true, Ordering::Relaxed);
            (regs.set_ctl)(0);
        } else {
            // Absolute deadlines: the next one is one period after this one, not after `now`.
            t.deadline.store(deadline + period, Ordering::Relaxed);
            (regs.set_cval)(deadline + period);
        }
    }

    /// The virtual timer is the watchdog while the physical timer is measured: it wakes the wait
    /// if the physical timer never fires.
    static WATCHDOG: AtomicBool = AtomicBool::new(false);
    static WATCHDOG_FIRED: AtomicBool = AtomicBool::new(false);

    fn handler(intid: u32, cpu: usize) {
        match intid {
            VIRT_INTID if WATCHDOG.load(Ordering::Relaxed) => {
                WATCHDOG_FIRED.store(true, Ordering::Relaxed);
                timer::set_cntv_ctl(0);
            }
            VIRT_INTID => on_tick(&VIRT, VIRT_REGS),
            PHYS_INTID => on_tick(&PHYS, PHYS_REGS),
            _ => println!("FAIL: unexpected interrupt {intid} on CPU {cpu}"),
        }
    }

    fn run(dtb: usize) -> ! {
        let info = gic::init(dtb);
        irq::set_handler(handler);
        let freq = timer::frequency();
        println!(
            "gic: distributor {:#x}, {}, {} cpu(s); counter {} Hz",
            info.gicd, info.cpu_interface, info.cpus, freq
        );
        let period = freq / 1000;
        measure("virtual timer", &VIRT, VIRT_REGS, VIRT_INTID, period, 500);
        measure("physical timer", &PHYS, PHYS_REGS, PHYS_INTID, period, 100);
        finish()
    }

    fn measure(name: &str, t: &Tick, regs: Regs, intid: u32, period: u64, ticks: u64) {
        t.period.store(period, Ordering::Relaxed);
        t.target.store(ticks, Ordering::Relaxed);
        gic::enable(intid, 0x80);
        let start = (regs.now)();
        let first = start + period;
        t.deadline.store(first, Ordering::Relaxed);
        (regs.set_cval)(first);
        (regs.set_ctl)(CTL_ENABLE);
        // Give up after twice the expected run time plus 100 ms (counted on the virtual counter;
        // while the physical timer is measured, the virtual timer wakes the wait at that point).
        let give_up = timer::counter() + 2 * ticks * period + 100 * period;
        let watchdog = intid != VIRT_INTID;
        if watchdog {
            WATCHDOG.store(true, Ordering::Relaxed);
            gic::enable(VIRT_INTID, 0x80);
            timer::set_cntv_cval(give_up);
            timer::set_cntv_ctl(CTL_ENABLE);
        }
        irq::wait_until(|| {
            t.done.load(Ordering::Relaxed)
                || WATCHDOG_FIRED.load(Ordering::Relaxed)
                || timer::counter() > give_up
        });
        if watchdog {
            timer::set_cntv_ctl(0);
            gic::disable(VIRT_INTID);
            WATCHDOG.store(false, Ordering::Relaxed);
        }
        // A tick period more: a timer that keeps firing after being disabled shows up as `extra`.
        timer::delay(2 * period);
        (regs.set_ctl)(0);
        gic::disable(intid);
        let elapsed = (regs.now)() - start;
        let count = t.count.load(Ordering::Relaxed);
        let bad = t.bad.load(Ordering::Relaxed);
        let extra = t.extra.load(Ordering::Relaxed);
        let max_late = t.max_late.load(Ordering::Relaxed);
        println!(
            "{name}: {count}/{ticks} ticks, period {period} counter ticks, max lateness {max_late} counter ticks, {bad} out of window, {extra} after the end, {elapsed} ticks elapsed"
        );
        if bad != 0 {
            println!(
                "{name}: first tick out of window: #{} at {} counter ticks from its deadline",
                t.first_bad.load(Ordering::Relaxed),
                t.first_bad_late.load(Ordering::Relaxed) as i64
            );
        }
        check(
            Text::<64>::format(format_args!("{name} {ticks} ticks")).as_str(),
            count == ticks && bad == 0 && extra == 0,
            format_args!(
                "{count}/{ticks} ticks, {bad} early or a full period late, {extra} after the timer was stopped"
            ),
        );
    }
}
