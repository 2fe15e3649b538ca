//! Test guest `intruder`: a hostile instance meant to run next to others on a board. For 3 s of
//! guest time (`intruder.seconds=N` in `/chosen/bootargs` changes it) it repeats one iteration:
//!
//! 1. reads, then writes, IPAs outside its RAM and outside every device (0x2000_0000, the end of
//!    its RAM, 0x7fff_f000, 0x8000_0000 + k * 16 MiB for k in 0..16, 0x1_0000_0000), each of which
//!    must take a synchronous external abort injected by the hypervisor (EC 0x25, DFSC 0x10, FAR
//!    the address, WnR the direction); the runtime's vectors record it and skip the access;
//! 2. makes HVCs with function ids nobody implements (0xC600_0000 | n, standard hypervisor
//!    service calls) whose arguments name other instances' CPUs and RAM (x1 = 1, x2 =
//!    0x4000_0000, x3 = n), each of which must return NOT_SUPPORTED (-1), and PSCI CPU_ON /
//!    AFFINITY_INFO for MPIDRs beyond its own vCPUs, which must return INVALID_PARAMETERS (-2);
//! 3. floods its console with 1000 lines `intruder: flood line <n> ....`: twice the hypervisor's
//!    console burst (500 lines), so that one iteration overruns the budget however slowly the
//!    board runs (at 200 lines per iteration, a host busy with something else made so few
//!    iterations in 3 s that the 200 lines a second it refills kept up, and nothing was cut).
//!
//! After each iteration it prints `intruder: iteration <i> aborts <a> hvcs <h>` (running totals;
//! most of these drown in the flood, which the hypervisor's console budget cuts down). At the end
//! it keeps quiet for 0.5 s of guest time so that the budget refills, prints
//! `intruder: <i> iterations in <ms> ms of guest time: <a> aborts, <h> hvcs, <l> flood lines` and
//! the checks "aborts injected", "unknown hvcs refused" and "foreign cpus refused", then powers
//! its instance off (the other instances on the board keep running).
//!
//! The runtime's identity map stops at 2 GiB; the guest first switches to a copy of it that also
//! maps 2..5 GiB as device memory, so that the accesses up there reach stage 2 (the hypervisor)
//! instead of faulting at stage 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    println!("the test guests only run on aarch64-unknown-none");
}

#[cfg(target_os = "none")]
mod guest {
    use core::{fmt::Write, ptr::addr_of_mut};

    use test_guests::{
        check, dt, entry, finish, hvc_call, irq, mmio_read32, mmio_write32, println,
        report::Text,
        smccc::{self, INVALID_PARAMETERS, NOT_SUPPORTED, PSCI_AFFINITY_INFO},
        smp::{self, MAX_CPUS, PSCI_CPU_ON},
        take_exception, timer,
    };

    entry!(run);

    const DEFAULT_SECONDS: u64 = 3;
    const FLOOD_LINES: u64 = 1000;
    /// Quiet time before the final report, so that the console budget has refilled.
    const QUIET_MS: u64 = 500;
    /// Unknown HVCs per iteration.
    const UNKNOWN_HVCS: u64 = 16;
    /// SMCCC fast call, SMC64, owner 6 (vendor-specific hypervisor service): only the project's
    /// own calls (`PROJECT_CALLS`, docs/HYPERCALLS.md) are implemented there.
    const UNKNOWN_FID_BASE: u64 = 0xC600_0000;
    /// The project's own calls in that range, which the sweep leaves out.
    const PROJECT_CALLS: [u64; 3] = [
        smccc::HV_MIGRATION_NOTICES,
        smccc::HV_MIGRATION_STATUS,
        smccc::HV_CHECKPOINT,
    ];
    /// EC of a data abort taken without a change in exception level.
    const EC_DABT_CUR: u64 = 0x25;
    /// DFSC of a synchronous external abort.
    const DFSC_SEA: u64 = 0x10;
    /// Guest RAM starts at 1 GiB on the instance platform (the runtime's map: normal memory).
    const RAM_IPA: u64 = 0x4000_0000;
    /// Fixed probe addresses below RAM and above 2 GiB (with nothing mapped at stage 2).
    const BELOW_RAM: usize = 0x2000_0000;
    const HIGH_BASE: usize = 0x8000_0000;
    const HIGH_STRIDE: usize = 0x100_0000;
    const HIGH_COUNT: usize = 16;
    const ABOVE_4G: usize = 0x1_0000_0000;
    /// The last page below 2 GiB (the top of the runtime's normal-memory block).
    const TOP_OF_NORMAL: usize = 0x7fff_f000;
    /// Most probe addresses.
    const MAX_PROBES: usize = HIGH_COUNT + 4;

    /// Stage 1 level-1 block descriptor for device memory (valid block, AttrIndx 0 = Device-nGnRE,
    /// AF, PXN, UXN), as in the runtime's boot map.
    const BLOCK_DEVICE: u64 = 1 | (1 << 10) | (1 << 53) | (1 << 54);
    /// The L1 entries (1 GiB each) this guest adds: 2..5 GiB.
    const EXTRA_GIB: core::ops::Range<usize> = 2..5;

    #[repr(C, align(4096))]
    struct Table([u64; 512]);

    /// The copy of the boot level-1 table with [`EXTRA_GIB`] added.
    static mut L1: Table = Table([0; 512]);

    /// Switches TTBR0_EL1 to a copy of the current level-1 table that also maps [`EXTRA_GIB`] as
    /// device memory (only entries that were invalid are added).
    fn map_high_device_memory() {
        let ttbr: u64;
        // SAFETY: reading TTBR0_EL1 has no side effects.
        unsafe { core::arch::asm!("mrs {0}, ttbr0_el1", out(reg) ttbr, options(nomem, nostack)) };
        let old = (ttbr & 0x0000_ffff_ffff_f000) as *const u64;
        let new = addr_of_mut!(L1) as *mut u64;
        for i in 0..512 {
            // SAFETY: `old` is the live level-1 table (512 entries, identity mapped normal memory);
            // `new` is this guest's own table, not in use yet.
            unsafe {
                let mut entry = old.add(i).read_volatile();
                if EXTRA_GIB.contains(&i) && entry & 1 == 0 {
                    entry = ((i as u64) << 30) | BLOCK_DEVICE;
                }
                new.add(i).write_volatile(entry);
            }
        }
        // SAFETY: the new table maps everything the old one did, identically, so the code, stack
        // and data stay where they are across the switch; the DSB makes the table visible to the
        // walker first, and the stale TLB entries go after the switch.
        unsafe {
            core::arch::asm!(
                "dsb ishst",
                "msr ttbr0_el1, {0}",
                "isb",
                "tlbi vmalle1",
                "dsb nsh",
                "isb",
                in(reg) new as u64,
                options(nostack),
            )
        };
    }

    /// What the probes have seen so far.
    #[derive(Default)]
    struct Tally {
        /// Accesses that took the expected abort.
        aborts: u64,
        /// Accesses that took no exception, or another one.
        wrong: u64,
        /// The first wrong access.
        first_wrong: Text<160>,
        /// HVCs made (unknown ones and foreign PSCI calls).
        hvcs: u64,
        /// Unknown HVCs that did not return NOT_SUPPORTED (or took an exception).
        hvc_wrong: u64,
        first_hvc_wrong: Text<160>,
        /// Foreign PSCI calls that did not return INVALID_PARAMETERS (or took an exception).
        psci_wrong: u64,
        first_psci_wrong: Text<160>,
        /// Console flood lines printed.
        lines: u64,
    }

    /// Records a mismatch: counts it and keeps the first description.
    fn note(count: &mut u64, first: &mut Text<160>, args: core::fmt::Arguments) {
        if *count == 0 {
            let _ = first.write_fmt(args);
        }
        *count += 1;
    }

    /// One read or write of `addr`, which must take a synchronous external abort.
    fn probe(t: &mut Tally, addr: usize, write: bool) {
        take_exception();
        // SAFETY: nothing of this guest (nor any device) lives at `addr`, an aligned IPA; the
        // expected abort is recorded and skipped by the vectors.
        let value = unsafe {
            if write {
                mmio_write32(addr, 0x1a7e_c0de);
                0
            } else {
                mmio_read32(addr)
            }
        };
        let direction = if write { "write" } else { "read" };
        match take_exception() {
            Some(e)
                if e.ec() == EC_DABT_CUR
                    && e.fsc() == DFSC_SEA
                    && e.wnr() == write
                    && e.far == addr as u64 =>
            {
                t.aborts += 1
            }
            Some(e) => note(
                &mut t.wrong,
                &mut t.first_wrong,
                format_args!("{direction} of {addr:#x}: {e} (DFSC={:#x})", e.fsc()),
            ),
            None => note(
                &mut t.wrong,
                &mut t.first_wrong,
                format_args!("{direction} of {addr:#x}: no exception (read {value:#x})"),
            ),
        }
    }

    /// An HVC that must return `want` without an exception.
    fn call(t: &mut Tally, args: [u64; 4], want: u64, unknown: bool) {
        take_exception();
        let ret = hvc_call(args[0], args[1], args[2], args[3]);
        let exc = take_exception();
        t.hvcs += 1;
        if ret == want && exc.is_none() {
            return;
        }
        let (count, first) = if unknown {
            (&mut t.hvc_wrong, &mut t.first_hvc_wrong)
        } else {
            (&mut t.psci_wrong, &mut t.first_psci_wrong)
        };
        match exc {
            Some(e) => note(
                count,
                first,
                format_args!(
                    "hvc({:#x}, {:#x}, {:#x}, {:#x}) took an exception: {e}",
                    args[0], args[1], args[2], args[3]
                ),
            ),
            None => note(
                count,
                first,
                format_args!(
                    "hvc({:#x}, {:#x}, {:#x}, {:#x}) returned {}",
                    args[0], args[1], args[2], args[3], ret as i64
                ),
            ),
        }
    }

    fn run(dtb: usize) -> ! {
        irq::mask();
        let seconds = dt::bootarg_u64(dtb, "intruder.seconds").unwrap_or(DEFAULT_SECONDS);
        let (ram_base, ram_size) = dt::memory(dtb).unwrap_or((RAM_IPA as usize, 0));
        let cpus = smp::cpus_from_dt(dtb);
        let freq = timer::frequency();
        map_high_device_memory();

        let mut probes = [0usize; MAX_PROBES];
        let mut n = 0;
        let mut add = |addr: usize| {
            probes[n] = addr;
            n += 1;
        };
        add(BELOW_RAM);
        let ram_end = ram_base + ram_size;
        if ram_size != 0 && ram_end < TOP_OF_NORMAL {
            add(ram_end);
        }
        add(TOP_OF_NORMAL);
        for k in 0..HIGH_COUNT {
            add(HIGH_BASE + k * HIGH_STRIDE);
        }
        add(ABOVE_4G);
        let probes = &probes[..n];
        // MPIDRs of CPUs this instance does not have (Aff0 beyond its vCPUs, other clusters).
        let mut foreign = [0u64; MAX_CPUS + 2];
        let mut m = 0;
        for cpu in cpus..MAX_CPUS {
            foreign[m] = smp::mpidr_of(cpu);
            m += 1;
        }
        foreign[m] = 0x100;
        foreign[m + 1] = 0x1_0000;
        let foreign = &foreign[..m + 2];
        // Two lines: the hypervisor cuts console lines at 256 bytes.
        println!(
            "intruder: {seconds} s of guest time; per iteration: {} probe addresses, \
             {UNKNOWN_HVCS} unknown hvcs, {} foreign mpidrs, {FLOOD_LINES} flood lines",
            probes.len(),
            foreign.len()
        );
        let mut list = Text::<200>::new();
        for &addr in probes
            .iter()
            .filter(|&&a| !(HIGH_BASE..HIGH_BASE + HIGH_COUNT * HIGH_STRIDE).contains(&a))
        {
            let _ = write!(list, " {addr:#x}");
        }
        println!(
            "intruder: probes{} and {HIGH_BASE:#x} + k * {HIGH_STRIDE:#x} for k < {HIGH_COUNT}",
            list.as_str()
        );

        let start = timer::counter();
        let end = start + seconds * freq;
        let mut t = Tally::default();
        let mut iteration = 0u64;
        loop {
            // (a) memory outside RAM and devices.
            for &addr in probes {
                probe(&mut t, addr, false);
                probe(&mut t, addr, true);
            }
            // (b) unknown calls naming other instances, and other instances' CPUs.
            for k in 0..UNKNOWN_HVCS {
                let fid = UNKNOWN_FID_BASE | ((iteration * UNKNOWN_HVCS + k) & 0xffff);
                if PROJECT_CALLS.contains(&fid) {
                    continue;
                }
                call(&mut t, [fid, 1, RAM_IPA, k], NOT_SUPPORTED, true);
            }
            for &mpidr in foreign {
                let entry = smp::secondary_entry();
                call(
                    &mut t,
                    [PSCI_CPU_ON, mpidr, entry, smp::stack_top(0) as u64],
                    INVALID_PARAMETERS,
                    false,
                );
                call(
                    &mut t,
                    [PSCI_AFFINITY_INFO, mpidr, 0, 0],
                    INVALID_PARAMETERS,
                    false,
                );
            }
            // (c) the console.
            for _ in 0..FLOOD_LINES {
                println!(
                    "intruder: flood line {} ................................................................",
                    t.lines
                );
                t.lines += 1;
            }
            println!(
                "intruder: iteration {iteration} aborts {} hvcs {}",
                t.aborts, t.hvcs
            );
            iteration += 1;
            if timer::counter() >= end {
                break;
            }
        }
        let elapsed_ms = (timer::counter() - start) * 1000 / freq;
        // The hypervisor drops console lines beyond its per-instance budget (a burst, then a
        // steady rate): after the flood, let it refill before the lines that matter.
        timer::delay(QUIET_MS * freq / 1000);
        println!(
            "intruder: {iteration} iterations in {elapsed_ms} ms of guest time: {} aborts, {} hvcs, \
             {} flood lines",
            t.aborts, t.hvcs, t.lines
        );
        let accesses = iteration * 2 * probes.len() as u64;
        check(
            "aborts injected",
            t.wrong == 0 && t.aborts == accesses,
            format_args!(
                "{} of {accesses} accesses took no synchronous external abort (first: {})",
                t.wrong,
                t.first_wrong.as_str()
            ),
        );
        let unknown = iteration * UNKNOWN_HVCS;
        check(
            "unknown hvcs refused",
            t.hvc_wrong == 0,
            format_args!(
                "{} of {unknown} unknown hvcs did not return NOT_SUPPORTED (first: {})",
                t.hvc_wrong,
                t.first_hvc_wrong.as_str()
            ),
        );
        let psci = iteration * 2 * foreign.len() as u64;
        check(
            "foreign cpus refused",
            t.psci_wrong == 0,
            format_args!(
                "{} of {psci} CPU_ON/AFFINITY_INFO calls for foreign MPIDRs did not return \
                 INVALID_PARAMETERS (first: {})",
                t.psci_wrong,
                t.first_psci_wrong.as_str()
            ),
        );
        finish()
    }
}
