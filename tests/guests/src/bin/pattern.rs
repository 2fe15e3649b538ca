//! Test guest `pattern`: a memory isolation probe for instances that share a board. It owns all
//! RAM above its image (minus the device tree) and, round after round, writes a pattern derived
//! from the round, the address and a seed of its own (the instance name from the DT `model` and
//! the counter at boot), reads every word back and prints a checksum of what it read. Between
//! rounds it sleeps 20 ms of guest time in WFI (virtual timer), so other instances run. It stops
//! after 30 rounds or once 6 s of guest time have passed, whichever comes first
//! (`pattern.rounds=N` and `pattern.seconds=N` in `/chosen/bootargs` change both).
//!
//! Prints `pattern: round <r> ok <checksum as 0x + 16 hex digits>` for a round read back intact,
//! else `FAIL: pattern round <r>: first bad address ...`, and passes "pattern rounds" if every
//! round was, and "pattern counter" if its virtual counter never went backwards (it moves between
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

    use test_guests::{
        check, dt, entry, fail, finish, gic, image_end, irq, println,
        report::Text,
        smccc,
        timer::{self, CTL_ENABLE, CTL_ISTATUS, VIRT_INTID},
    };

    entry!(run);

    const DEFAULT_ROUNDS: u64 = 30;
    const DEFAULT_SECONDS: u64 = 6;
    /// Sleep between rounds, in milliseconds of guest time.
    const SLEEP_MS: u64 = 20;
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

        let limit = boot + seconds * freq;
        let (mut done, mut failed) = (0u64, 0u64);
        let mut busy = 0u64;
        let (mut last_counter, mut backwards) = (boot, 0u64);
        while done < rounds {
            let key = scramble(seed ^ done);
            let round_start = timer::counter();
            if round_start < last_counter {
                backwards += 1;
                println!("pattern: the counter went back from {last_counter} to {round_start}");
            }
            last_counter = round_start;
            let result = round(&ranges, key);
            busy += timer::counter() - round_start;
            match result {
                Ok(checksum) => println!("pattern: round {done} ok {checksum:#018x}"),
                Err(m) => {
                    failed += 1;
                    fail(
                        Text::<32>::format(format_args!("pattern round {done}")).as_str(),
                        format_args!(
                            "first bad address {:#x}: read {:#018x}, expected {:#018x} ({} bad words)",
                            m.addr, m.got, m.want, m.bad
                        ),
                    );
                }
            }
            done += 1;
            if done == rounds || timer::counter() >= limit {
                break;
            }
            sleep(SLEEP_MS * freq / 1000);
        }
        let elapsed_ms = (timer::counter() - boot) * 1000 / freq;
        println!(
            "pattern: {done} rounds of {} MiB in {elapsed_ms} ms of guest time ({} ms per round on average)",
            bytes >> 20,
            busy * 1000 / freq / done.max(1)
        );
        check(
            "pattern rounds",
            failed == 0 && done > 0,
            format_args!("{failed} of {done} rounds read back wrong"),
        );
        check(
            "pattern counter",
            backwards == 0,
            format_args!("the virtual counter went backwards {backwards} times"),
        );
        finish()
    }
}
