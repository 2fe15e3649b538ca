//! Test guest `pattern`: a memory isolation probe for instances that share a board. It owns all
//! RAM above its image (minus the device tree) and, round after round, writes a pattern derived
//! from the round, the address and a seed of its own (the instance name from the DT `model` and
//! the counter at boot), reads every word back and prints a checksum of what it read. With
//! several CPUs in its DT, each CPU does that over its own share of the RAM, in rounds of its
//! own. Between rounds a CPU sleeps 20 ms of guest time in WFI (virtual timer), so other
//! instances run. CPU 0 stops after 30 rounds or once 6 s of guest time have passed, whichever
//! comes first, and the others after the round they are in (`pattern.rounds=N`,
//! `pattern.seconds=N` and `pattern.sleep_ms=N` in `/chosen/bootargs` change the three). With
//! `pattern.checkpoint_at=N`, CPU 0 asks for the instance's checkpoint (HV_CHECKPOINT) after its
//! round N and prints the answer.
//!
//! Prints `pattern: round <r> ok <checksum as 0x + 16 hex digits>` for a round of CPU 0 read back
//! intact (`pattern: cpu <n> round <r> ok ...` for CPU n), else `FAIL: pattern round <r>: first
//! bad address ...`, and passes "pattern rounds" if every round of every CPU was, and "pattern
//! counter" if no CPU's virtual counter ever went backwards (it moves between
//! boards in the migration scenarios). With `pattern.notices=1` it registers for the hypervisor's
//! migration notices (HV_MIGRATION_NOTICES, docs/HYPERCALLS.md) as PPI 20 and prints each one:
//! `pattern: migration notice <n>: pausing` / `... resumed after <ms> ms`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    println!("the test guests only run on aarch64-unknown-none");
}

#[cfg(target_os = "none")]
mod guest {
    use core::ptr::{read_volatile, write_volatile};
    use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    use test_guests::{
        check, dt, entry, fail, finish, gic, image_end, irq, println,
        report::Text,
        smccc,
        smp::{self, IrqLock, MAX_CPUS},
        timer::{self, CTL_ENABLE, CTL_ISTATUS, VIRT_INTID},
    };

    entry!(run);

    const DEFAULT_ROUNDS: u64 = 30;
    const DEFAULT_SECONDS: u64 = 6;
    /// Sleep between rounds, in milliseconds of guest time (`pattern.sleep_ms=N`).
    const DEFAULT_SLEEP_MS: u64 = 20;
    /// The PPI migration notices arrive as.
    const NOTICE_INTID: u32 = 20;
    const PAGE: usize = 4096;
    /// Spreads address bits over the whole word (the 64-bit golden ratio).
    const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

    /// splitmix64's finaliser: a well-spread 64-bit value from `x`.
    fn scramble(mut x: u64) -> u64 {
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    /// FNV-1a of `s`.
    fn fnv1a(s: &str) -> u64 {
        s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// The word at `addr` in the round with key `key`.
    #[inline(always)]
    fn word(addr: usize, key: u64) -> u64 {
        (addr as u64).wrapping_mul(MIX) ^ key
    }

    /// The first word that read back wrong in a round, and how many did.
    struct Mismatch {
        addr: usize,
        got: u64,
        want: u64,
        bad: u64,
    }

    /// Writes the round's pattern over `ranges`, then reads every word back: the checksum of what
    /// was read, or the first mismatch.
    fn round(ranges: &[(usize, usize)], key: u64) -> Result<u64, Mismatch> {
        for &(lo, hi) in ranges {
            let mut a = lo;
            while a < hi {
                // SAFETY: [lo, hi) is this guest's RAM outside its image and the DT, identity
                // mapped as normal memory, 8-byte aligned.
                unsafe { write_volatile(a as *mut u64, word(a, key)) };
                a += 8;
            }
        }
        let mut checksum = 0u64;
        let mut first: Option<Mismatch> = None;
        let mut bad = 0;
        for &(lo, hi) in ranges {
            let mut a = lo;
            while a < hi {
                // SAFETY: as above.
                let got = unsafe { read_volatile(a as *const u64) };
                checksum = checksum.rotate_left(7).wrapping_add(got);
                let want = word(a, key);
                if got != want {
                    bad += 1;
                    first.get_or_insert(Mismatch {
                        addr: a,
                        got,
                        want,
                        bad: 0,
                    });
                }
                a += 8;
            }
        }
        match first {
            None => Ok(checksum),
            Some(m) => Err(Mismatch { bad, ..m }),
        }
    }

    fn handler(intid: u32, cpu: usize) {
        if intid == VIRT_INTID {
            // One shot: the sleep that armed it is over, unless the interrupt came early (a
            // duplicate of the last one); then the timer stays armed for this sleep.
            if timer::cntv_ctl() & CTL_ISTATUS != 0 {
                timer::set_cntv_ctl(0);
            }
        } else if intid == NOTICE_INTID {
            let [event, paused, count] = smccc::hvc_call_x3(smccc::HV_MIGRATION_STATUS);
            match event {
                1 => println!("pattern: migration notice {count}: pausing"),
                2 => println!(
                    "pattern: migration notice {count}: resumed after {} ms",
                    paused * 1000 / timer::frequency()
                ),
                other => println!("pattern: migration notice {count}: unknown event {other}"),
            }
        } else {
            println!("pattern: unexpected interrupt {intid} on CPU {cpu}");
        }
    }

    /// Sleeps `ticks` counter ticks in WFI, woken by the virtual timer.
    fn sleep(ticks: u64) {
        let deadline = timer::counter() + ticks;
        timer::set_cntv_cval(deadline);
        timer::set_cntv_ctl(CTL_ENABLE);
        irq::wait_until(|| timer::counter() >= deadline);
        irq::mask();
        timer::set_cntv_ctl(0);
    }

    /// RAM to write, as up to two address ranges (below and above the DT).
    type Ranges = [(usize, usize); 2];

    /// What every CPU works with: its share of RAM is its slice of `ranges`.
    #[derive(Clone, Copy)]
    struct Plan {
        ranges: Ranges,
        cpus: usize,
        seed: u64,
        /// Counter ticks to sleep between rounds.
        pause: u64,
        /// After this round, CPU 0 asks for the instance's checkpoint (HV_CHECKPOINT).
        checkpoint_at: Option<u64>,
    }

    static PLAN: IrqLock<Plan> = IrqLock::new(Plan {
        ranges: [(0, 0); 2],
        cpus: 1,
        seed: 0,
        pause: 0,
        checkpoint_at: None,
    });
    /// CPU 0 is done: the others stop after their current round.
    static STOP: AtomicBool = AtomicBool::new(false);
    /// Secondary CPUs that have stopped, and their rounds, failed rounds and counter steps back.
    static STOPPED: AtomicUsize = AtomicUsize::new(0);
    static SECONDARY_ROUNDS: AtomicU64 = AtomicU64::new(0);
    static SECONDARY_FAILED: AtomicU64 = AtomicU64::new(0);
    static SECONDARY_BACKWARDS: AtomicU64 = AtomicU64::new(0);

    /// CPU `cpu`'s slice (a page-aligned `cpu`/`cpus` share) of `ranges`.
    fn share(ranges: &Ranges, cpu: usize, cpus: usize) -> Ranges {
        let pages: usize = ranges
            .iter()
            .map(|&(lo, hi)| hi.saturating_sub(lo) / PAGE)
            .sum();
        let (from, to) = (pages * cpu / cpus * PAGE, pages * (cpu + 1) / cpus * PAGE);
        let mut slice = [(0, 0); 2];
        let mut offset = 0;
        for (part, &(lo, hi)) in slice.iter_mut().zip(ranges) {
            let len = hi.saturating_sub(lo);
            let clip = |at: usize| at.clamp(offset, offset + len) - offset;
            *part = (lo + clip(from), lo + clip(to));
            offset += len;
        }
        slice
    }

    /// How one CPU's rounds went.
    #[derive(Default)]
    struct Tally {
        rounds: u64,
        failed: u64,
        backwards: u64,
        /// Counter ticks spent writing and reading.
        busy: u64,
    }

    /// Rounds over `plan`'s share of CPU `cpu`, each with its own key, until `stop(rounds
    /// done)`; sleeps between rounds.
    fn work(cpu: usize, plan: &Plan, stop: impl Fn(u64) -> bool) -> Tally {
        let (ranges, seed) = (&share(&plan.ranges, cpu, plan.cpus), plan.seed);
        let mut tally = Tally::default();
        let mut last_counter = timer::counter();
        let who = if cpu == 0 {
            Text::<16>::format(format_args!(""))
        } else {
            Text::<16>::format(format_args!("cpu {cpu} "))
        };
        loop {
            let done = tally.rounds;
            let key = scramble(seed ^ done ^ ((cpu as u64) << 48));
            let round_start = timer::counter();
            if round_start < last_counter {
                tally.backwards += 1;
                println!(
                    "pattern: {}the counter went back from {last_counter} to {round_start}",
                    who.as_str()
                );
            }
            last_counter = round_start;
            let result = round(ranges, key);
            tally.busy += timer::counter() - round_start;
            match result {
                Ok(checksum) => {
                    println!("pattern: {}round {done} ok {checksum:#018x}", who.as_str())
                }
                Err(m) => {
                    tally.failed += 1;
                    fail(
                        Text::<32>::format(format_args!("pattern {}round {done}", who.as_str()))
                            .as_str(),
                        format_args!(
                            "first bad address {:#x}: read {:#018x}, expected {:#018x} ({} bad words)",
                            m.addr, m.got, m.want, m.bad
                        ),
                    );
                }
            }
            if cpu == 0 && plan.checkpoint_at == Some(done) {
                let answer = smccc::hvc_call(smccc::HV_CHECKPOINT, 0, 0, 0) as i64;
                println!("pattern: asked for a checkpoint after round {done}: {answer}");
            }
            tally.rounds += 1;
            if stop(tally.rounds) {
                return tally;
            }
            sleep(plan.pause);
        }
    }

    /// A secondary CPU: rounds over its share until CPU 0 is done, then reports and parks.
    fn secondary(cpu: usize) -> ! {
        gic::init_cpu();
        gic::enable(VIRT_INTID, 0x80);
        let plan = *PLAN.lock();
        let tally = work(cpu, &plan, |_| STOP.load(Ordering::Acquire));
        SECONDARY_ROUNDS.fetch_add(tally.rounds, Ordering::SeqCst);
        SECONDARY_FAILED.fetch_add(tally.failed, Ordering::SeqCst);
        SECONDARY_BACKWARDS.fetch_add(tally.backwards, Ordering::SeqCst);
        STOPPED.fetch_add(1, Ordering::SeqCst);
        irq::mask();
        loop {
            aarch64_cpu::asm::wfi();
        }
    }

    fn run(dtb: usize) -> ! {
        irq::mask();
        // Everything needed from the DT is read before any RAM is written (the DT stays out of
        // the pattern anyway).
        let Some((base, size)) = dt::memory(dtb) else {
            fail("pattern rounds", "no memory node in the device tree");
            finish()
        };
        let dtb_size = dt::total_size(dtb);
        let rounds = dt::bootarg_u64(dtb, "pattern.rounds").unwrap_or(DEFAULT_ROUNDS);
        let sleep_ms = dt::bootarg_u64(dtb, "pattern.sleep_ms").unwrap_or(DEFAULT_SLEEP_MS);
        let seconds = dt::bootarg_u64(dtb, "pattern.seconds").unwrap_or(DEFAULT_SECONDS);
        let freq = timer::frequency();
        let boot = timer::counter();
        let seed = dt::with_model(dtb, fnv1a) ^ scramble(boot);
        let notices = dt::bootarg_u64(dtb, "pattern.notices") == Some(1);
        gic::init(dtb);
        irq::set_handler(handler);
        gic::enable(VIRT_INTID, 0x80);
        if notices {
            gic::enable(NOTICE_INTID, 0x80);
            let answer =
                smccc::hvc_call(smccc::HV_MIGRATION_NOTICES, u64::from(NOTICE_INTID), 0, 0);
            check(
                "pattern notices",
                answer == 0,
                format_args!("HV_MIGRATION_NOTICES answered {answer:#x}"),
            );
        }

        let start = image_end().next_multiple_of(PAGE);
        let end = base + size;
        let (dtb_lo, dtb_hi) = (dtb & !(PAGE - 1), (dtb + dtb_size).next_multiple_of(PAGE));
        let ranges = [
            (start, dtb_lo.clamp(start, end.max(start))),
            (dtb_hi.clamp(start, end.max(start)), end),
        ];
        let bytes: usize = ranges.iter().map(|&(lo, hi)| hi.saturating_sub(lo)).sum();
        println!(
            "pattern: [{start:#x}, {end:#x}) minus dtb [{dtb_lo:#x}, {dtb_hi:#x}): {bytes:#x} bytes \
             ({} MiB), seed {seed:#018x}, up to {rounds} rounds or {seconds} s of guest time",
            bytes >> 20
        );
        if bytes == 0 {
            fail("pattern rounds", "no RAM above the image");
            finish()
        }

        let cpus = smp::cpus_from_dt(dtb).min(MAX_CPUS);
        let plan = Plan {
            ranges,
            cpus,
            seed,
            pause: sleep_ms * freq / 1000,
            checkpoint_at: dt::bootarg_u64(dtb, "pattern.checkpoint_at"),
        };
        *PLAN.lock() = plan;
        for cpu in 1..cpus {
            if let Err(error) = smp::start_secondary(cpu, secondary) {
                fail(
                    "pattern rounds",
                    format_args!("CPU_ON({cpu}) returned {error}"),
                );
                finish()
            }
        }

        let limit = boot + seconds * freq;
        let tally = work(0, &plan, |done| done == rounds || timer::counter() >= limit);
        STOP.store(true, Ordering::Release);
        // The others finish their sleep and the round they are in (well under a second).
        let give_up = timer::counter() + plan.pause + 10 * freq;
        while STOPPED.load(Ordering::SeqCst) < cpus - 1 && timer::counter() < give_up {
            sleep(DEFAULT_SLEEP_MS * freq / 1000);
        }
        let stopped = STOPPED.load(Ordering::SeqCst);
        let elapsed_ms = (timer::counter() - boot) * 1000 / freq;
        let others = SECONDARY_ROUNDS.load(Ordering::SeqCst);
        println!(
            "pattern: {} rounds of {} MiB on CPU 0 and {others} on {} other CPUs in {elapsed_ms} ms \
             of guest time ({} ms per round on average on CPU 0)",
            tally.rounds,
            share(&ranges, 0, cpus)
                .iter()
                .map(|&(lo, hi)| hi - lo)
                .sum::<usize>()
                >> 20,
            cpus - 1,
            tally.busy * 1000 / freq / tally.rounds.max(1)
        );
        let failed = tally.failed + SECONDARY_FAILED.load(Ordering::SeqCst);
        check(
            "pattern rounds",
            failed == 0 && tally.rounds > 0 && stopped == cpus - 1 && others >= stopped as u64,
            format_args!(
                "{failed} rounds read back wrong; {stopped} of {} other CPUs stopped after {others} rounds",
                cpus - 1
            ),
        );
        let backwards = tally.backwards + SECONDARY_BACKWARDS.load(Ordering::SeqCst);
        check(
            "pattern counter",
            backwards == 0,
            format_args!("the virtual counter went backwards {backwards} times"),
        );
        finish()
    }
}
