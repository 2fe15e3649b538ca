//! Test guest `basic`: DT memory node, the PL011's ID, flag, control and interrupt registers, an
//! address-derived pattern over all free RAM, PSCI over HVC and SMC (with calls only the hypervisor
//! answers as it does, not the board firmware), and that it has exactly one CPU.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    println!("the test guests only run on aarch64-unknown-none");
}

#[cfg(target_os = "none")]
mod guest {
    use core::ptr::{read_volatile, write_volatile};

    use test_guests::{
        ExceptionRecord, check,
        console::{self, FR, INT},
        entry, fail, finish, hvc_call, image_end, println,
        report::Text,
        smc_call,
        smccc::{
            INVALID_PARAMETERS, NOT_SUPPORTED, PSCI_AFFINITY_INFO, PSCI_FEATURES,
            PSCI_MIGRATE_INFO_TYPE, PSCI_SYSTEM_OFF, PSCI_VERSION, SMCCC_VERSION,
        },
        smp::{self, PSCI_CPU_ON},
        take_exception,
    };
    use tock_registers::interfaces::{Readable, Writeable};

    entry!(run);

    const RAM_BASE: usize = 0x4000_0000;
    const PAGE: usize = 4096;
    const PL011_IDS: [u32; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

    fn run(dtb: usize) -> ! {
        // 1. DT: everything needed later is copied into locals before RAM is overwritten.
        // SAFETY: x0 at boot is the DTB address; `from_ptr` validates the header.
        let fdt = match unsafe { fdt::Fdt::from_ptr(dtb as *const u8) } {
            Ok(fdt) => fdt,
            Err(e) => {
                fail("dt memory", format_args!("no valid DTB at {dtb:#x}: {e:?}"));
                finish()
            }
        };
        let dtb_size = fdt.total_size();
        let (base, size) = fdt
            .find_node("/memory")
            .and_then(|n| n.reg())
            .and_then(|mut r| r.next())
            .map_or((0, 0), |r| {
                (r.starting_address as usize, r.size.unwrap_or(0))
            });
        println!("memory: base={base:#x} size={size:#x} (dtb at {dtb:#x}, {dtb_size:#x} bytes)");
        check(
            "dt memory",
            base == RAM_BASE && size != 0 && size % 0x20_0000 == 0,
            format_args!("base={base:#x} size={size:#x}"),
        );
        // The CPUs the DT gives this guest: the nodes under /cpus with device_type "cpu".
        let (mut dt_cpus, mut dt_cpu_reg) = (0usize, None);
        let cpu_nodes = fdt
            .find_node("/cpus")
            .into_iter()
            .flat_map(|n| n.children());
        for node in
            cpu_nodes.filter(|n| n.property("device_type").and_then(|p| p.as_str()) == Some("cpu"))
        {
            dt_cpus += 1;
            dt_cpu_reg = dt_cpu_reg.or(node.property("reg").and_then(|p| p.as_usize()));
        }

        uart();
        ram(base, size, dtb, dtb_size);
        psci();
        cpus(dt_cpus, dt_cpu_reg);
        finish()
    }

    fn uart() {
        let regs = console::regs();
        take_exception();
        let ids: [u32; 8] = core::array::from_fn(|i| regs.id[i].get() & 0xff);
        let exc = take_exception();
        println!(
            "uart at {:#x}: PeriphID0..3={:#04x} {:#04x} {:#04x} {:#04x} PCellID0..3={:#04x} {:#04x} {:#04x} {:#04x}",
            console::base(),
            ids[0],
            ids[1],
            ids[2],
            ids[3],
            ids[4],
            ids[5],
            ids[6],
            ids[7]
        );
        match exc {
            Some(e) => fail("uart id registers", format_args!("exception {e}")),
            None => {
                check(
                    "uart id registers",
                    ids == PL011_IDS,
                    format_args!("expected {PL011_IDS:#04x?}"),
                );
            }
        }

        // After all the output so far, the transmitter drains and nothing has been typed: a PL011
        // then shows both FIFOs empty (and neither full nor busy). FR reading 0 fails.
        let mut spins = 0;
        while regs.fr.is_set(FR::BUSY) && spins < 1_000_000 {
            spins += 1;
        }
        let fr = regs.fr.extract();
        println!(
            "uart flags after output: FR={:#x} (TXFE={} RXFE={} TXFF={} RXFF={} BUSY={})",
            fr.get(),
            fr.read(FR::TXFE),
            fr.read(FR::RXFE),
            fr.read(FR::TXFF),
            fr.read(FR::RXFF),
            fr.read(FR::BUSY)
        );
        check(
            "uart output",
            fr.get() != 0
                && fr.matches_all(
                    FR::TXFE::SET
                        + FR::RXFE::SET
                        + FR::TXFF::CLEAR
                        + FR::RXFF::CLEAR
                        + FR::BUSY::CLEAR,
                ),
            format_args!(
                "FR={:#x} when idle, expected TXFE and RXFE set, TXFF, RXFF and BUSY clear",
                fr.get()
            ),
        );

        // FR read into every register, at every size: the hypervisor answers a plain load of FR
        // in its exception vector, writing the transfer register itself (a sign-extending load
        // takes its other fast path).
        let mut got = [0u64; FR_LOADS];
        // SAFETY: FR is a readable device register of the console's PL011, and `got` has room
        // for every value the routine stores; it preserves the registers the ABI asks for.
        unsafe { fr_into_every_register(console::base() + 0x18, got.as_mut_ptr()) };
        let idle = u64::from(fr.get());
        let mut expected = [idle; FR_LOADS];
        expected[FR_LOADS - 1] = idle as u8 as i8 as i64 as u64;
        println!("uart flag register into x0..x30, as x, b, h and sign-extended b: {got:#x?}");
        check(
            "uart flag register into every register",
            got == expected,
            format_args!("expected {expected:#x?}"),
        );

        // Control registers keep what was written, cut to their widths (IBRD 16 bits, FBRD 6,
        // LCR_H 8, IMSC 11); the originals are put back before anything else is printed.
        let saved = (
            regs.ibrd.get(),
            regs.fbrd.get(),
            regs.lcr_h.get(),
            regs.imsc.get(),
        );
        regs.ibrd.set(0x1_2345);
        regs.fbrd.set(0xff);
        regs.lcr_h.set(0x3_76);
        regs.imsc.set(0xffff);
        let got = (
            regs.ibrd.get(),
            regs.fbrd.get(),
            regs.lcr_h.get(),
            regs.imsc.get(),
        );
        // Raw status with nothing received: only the transmit interrupt (its FIFO is below its
        // trigger level); masked status follows IMSC.
        let (ris, mis_unmasked) = (regs.ris.get(), regs.mis.get());
        regs.imsc.set(0);
        let mis_masked = regs.mis.get();
        regs.ibrd.set(saved.0);
        regs.fbrd.set(saved.1);
        regs.lcr_h.set(saved.2);
        regs.imsc.set(saved.3);
        println!(
            "uart control registers: wrote IBRD=0x12345 FBRD=0xff LCR_H=0x376 IMSC=0xffff, read back \
             IBRD={:#x} FBRD={:#x} LCR_H={:#x} IMSC={:#x}",
            got.0, got.1, got.2, got.3
        );
        check(
            "uart control registers",
            got == (0x2345, 0x3f, 0x76, 0x7ff),
            "expected IBRD=0x2345 FBRD=0x3f LCR_H=0x76 IMSC=0x7ff",
        );
        println!(
            "uart interrupt status: RIS={ris:#x} MIS={mis_unmasked:#x} with IMSC=0x7ff, \
             MIS={mis_masked:#x} with IMSC=0"
        );
        let (tx, rx) = (INT::TX::SET.value, (INT::RX::SET + INT::RT::SET).value);
        check(
            "uart interrupt status",
            ris & (tx | rx) == tx && mis_unmasked & (tx | rx) == tx && mis_masked == 0,
            "expected the transmit interrupt raised (RIS bit 5) and no receive interrupt, \
             MIS = RIS & IMSC",
        );
    }

    /// Values [`fr_into_every_register`] stores: FR loaded into x0..x30 (32-bit loads), then a
    /// 64-bit, a byte, a halfword and a sign-extending byte load.
    const FR_LOADS: usize = 35;

    unsafe extern "C" {
        /// Loads the 32-bit register at `fr` into each of x0..x30 in turn (each set to a marker
        /// first), then as an X register, a byte, a halfword and a sign-extended byte, and into
        /// WZR, storing each value at `out` ([`FR_LOADS`] of them).
        fn fr_into_every_register(fr: usize, out: *mut u64);
    }

    core::arch::global_asm!(
        r#"
.global fr_into_every_register
fr_into_every_register:
    stp     x29, x30, [sp, #-96]!
    stp     x19, x20, [sp, #16]
    stp     x21, x22, [sp, #32]
    stp     x23, x24, [sp, #48]
    stp     x25, x26, [sp, #64]
    stp     x27, x28, [sp, #80]
    mov     x16, x0
    mov     x17, x1
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,18,19,20,21,22,23,24,25,26,27,28,29,30
    mov     x\n, #0xdead
    ldr     w\n, [x16]
    str     x\n, [x17, #(\n * 8)]
    .endr
    mov     x15, x16                // x16 and x17 hold the addresses: each in turn from x15
    mov     x16, #0xdead
    ldr     w16, [x15]
    str     x16, [x17, #128]
    mov     x16, x15
    mov     x15, x17
    mov     x17, #0xdead
    ldr     w17, [x16]
    str     x17, [x15, #136]
    mov     x17, x15
    ldr     x5, [x16]
    str     x5, [x17, #248]
    ldrb    w6, [x16]
    str     x6, [x17, #256]
    ldrh    w7, [x16]
    str     x7, [x17, #264]
    ldrsb   x8, [x16]
    str     x8, [x17, #272]
    ldr     wzr, [x16]
    ldp     x19, x20, [sp, #16]
    ldp     x21, x22, [sp, #32]
    ldp     x23, x24, [sp, #48]
    ldp     x25, x26, [sp, #64]
    ldp     x27, x28, [sp, #80]
    ldp     x29, x30, [sp], #96
    ret
"#
    );

    fn pattern(addr: usize, invert: bool) -> u64 {
        let p = (addr as u64 ^ 0xA5A5_5A5A_C3C3_3C3C).rotate_left((addr >> 3) as u32 & 63);
        if invert { !p } else { p }
    }

    /// Writes then verifies the pattern over `ranges`; returns the first mismatch.
    fn ram_pass(ranges: &[(usize, usize)], invert: bool) -> Result<(), (usize, u64, u64)> {
        for &(lo, hi) in ranges {
            for a in (lo..hi).step_by(8) {
                // SAFETY: [lo, hi) is guest RAM outside the image and the DTB, identity-mapped.
                unsafe { write_volatile(a as *mut u64, pattern(a, invert)) };
            }
        }
        for &(lo, hi) in ranges {
            for a in (lo..hi).step_by(8) {
                // SAFETY: as above.
                let got = unsafe { read_volatile(a as *const u64) };
                if got != pattern(a, invert) {
                    return Err((a, got, pattern(a, invert)));
                }
            }
        }
        Ok(())
    }

    fn ram(base: usize, size: usize, dtb: usize, dtb_size: usize) {
        let start = image_end().next_multiple_of(PAGE);
        let end = base + size;
        let (dtb_lo, dtb_hi) = (dtb & !(PAGE - 1), (dtb + dtb_size).next_multiple_of(PAGE));
        let ranges = [
            (start, dtb_lo.clamp(start, end.max(start))),
            (dtb_hi.clamp(start, end.max(start)), end),
        ];
        let bytes: usize = ranges.iter().map(|&(lo, hi)| hi.saturating_sub(lo)).sum();
        println!(
            "ram pattern: [{start:#x}, {end:#x}) minus dtb [{dtb_lo:#x}, {dtb_hi:#x}): {bytes:#x} bytes ({} MiB)",
            bytes >> 20
        );
        if bytes == 0 {
            fail("ram pattern", "no RAM to test");
            return;
        }
        let result = ram_pass(&ranges, false).and_then(|()| ram_pass(&ranges, true));
        match result {
            Ok(()) => {
                println!("ram pattern: {bytes:#x} bytes checked, 2 passes");
                test_guests::pass("ram pattern");
            }
            Err((a, got, want)) => fail(
                "ram pattern",
                format_args!("at {a:#x}: read {got:#x}, expected {want:#x}"),
            ),
        }
    }

    fn psci() {
        take_exception();
        let version = hvc_call(PSCI_VERSION, 0, 0, 0);
        let f_version = hvc_call(PSCI_FEATURES, PSCI_VERSION, 0, 0);
        let f_off = hvc_call(PSCI_FEATURES, PSCI_SYSTEM_OFF, 0, 0);
        let f_unknown = hvc_call(PSCI_FEATURES, 0x8400_00ff, 0, 0);
        let migrate = hvc_call(PSCI_MIGRATE_INFO_TYPE, 0, 0, 0);
        let f_smccc = hvc_call(PSCI_FEATURES, SMCCC_VERSION, 0, 0);
        let smccc = if f_smccc == 0 {
            hvc_call(SMCCC_VERSION, 0, 0, 0)
        } else {
            NOT_SUPPORTED
        };
        let exc = take_exception();
        println!(
            "psci: VERSION={version:#x} FEATURES(VERSION)={f_version:#x} FEATURES(SYSTEM_OFF)={f_off:#x} \
             FEATURES(0x840000ff)={f_unknown:#x} MIGRATE_INFO_TYPE={migrate:#x} \
             FEATURES(SMCCC_VERSION)={f_smccc:#x} SMCCC_VERSION={smccc:#x}"
        );
        match exc {
            Some(e) => fail("psci", format_args!("an HVC took an exception at EL1: {e}")),
            None => {
                let ok = version == 0x1_0001
                    && f_version == 0
                    && f_off == 0
                    && f_unknown == NOT_SUPPORTED
                    && migrate == 2
                    && f_smccc == 0
                    && smccc == 0x1_0001;
                check(
                    "psci",
                    ok,
                    "expected VERSION=0x10001 FEATURES=0,0,-1 MIGRATE_INFO_TYPE=2 FEATURES(SMCCC_VERSION)=0 SMCCC_VERSION=0x10001",
                );
            }
        }

        // The same calls over SMC, which the hypervisor traps (HCR_EL2.TSC) and answers itself; the
        // scenario checks its log of each trap. QEMU's own PSCI firmware answers VERSION and
        // MIGRATE_INFO_TYPE alike, but FEATURES(SMCCC_VERSION) and SMCCC_VERSION with -1, and
        // AFFINITY_INFO of MPIDR 1 with its state on a board with more than one CPU.
        take_exception();
        let mut exc: Option<ExceptionRecord> = None;
        let mut smc = |fid: u64, arg: u64| {
            let result = smc_call(fid, arg, 0, 0);
            if let Some(e) = take_exception() {
                exc.get_or_insert(e);
            }
            result
        };
        let version = smc(PSCI_VERSION, 0);
        let migrate = smc(PSCI_MIGRATE_INFO_TYPE, 0);
        let f_smccc = smc(PSCI_FEATURES, SMCCC_VERSION);
        let smccc = smc(SMCCC_VERSION, 0);
        let affinity_1 = smc(PSCI_AFFINITY_INFO, smp::mpidr_of(1));
        println!(
            "psci over smc: VERSION={version:#x} MIGRATE_INFO_TYPE={migrate:#x} \
             FEATURES(SMCCC_VERSION)={f_smccc:#x} SMCCC_VERSION={smccc:#x} \
             AFFINITY_INFO(mpidr 1)={}",
            affinity_1 as i64
        );
        match exc {
            Some(e) => fail(
                "psci over smc",
                format_args!("SMC took an exception at EL1: {e}"),
            ),
            None => {
                let ok = version == 0x1_0001
                    && migrate == 2
                    && f_smccc == 0
                    && smccc == 0x1_0001
                    && affinity_1 == INVALID_PARAMETERS;
                check(
                    "psci over smc",
                    ok,
                    "expected VERSION=0x10001 MIGRATE_INFO_TYPE=0x2 FEATURES(SMCCC_VERSION)=0x0 \
                     SMCCC_VERSION=0x10001 AFFINITY_INFO(mpidr 1)=-2",
                );
            }
        }
    }

    /// This guest has one vCPU, whatever the board has: its DT lists one CPU (with this CPU's
    /// MPIDR), PSCI says MPIDR 0 is on and knows no MPIDR 1, and CPU_ON cannot start one.
    fn cpus(dt_cpus: usize, dt_cpu_reg: Option<usize>) {
        let me = smp::mpidr_of(smp::cpu_id());
        take_exception();
        let affinity_me = hvc_call(PSCI_AFFINITY_INFO, me, 0, 0);
        let affinity_1 = hvc_call(PSCI_AFFINITY_INFO, smp::mpidr_of(1), 0, 0);
        // Were there a vCPU 1, it would start in the runtime's secondary entry with no Rust entry
        // registered, print a FAIL line and power off.
        let cpu_on_1 = hvc_call(
            PSCI_CPU_ON,
            smp::mpidr_of(1),
            smp::secondary_entry(),
            smp::stack_top(1) as u64,
        );
        let exc = take_exception();
        let reg = match dt_cpu_reg {
            Some(reg) => Text::<24>::format(format_args!("{reg:#x}")),
            None => Text::format(format_args!("none")),
        };
        println!(
            "cpus: {dt_cpus} in the device tree (reg {}), this CPU is MPIDR {me:#x}; \
             AFFINITY_INFO(mpidr {me:#x})={} AFFINITY_INFO(mpidr 1)={} CPU_ON(mpidr 1)={}",
            reg.as_str(),
            affinity_me as i64,
            affinity_1 as i64,
            cpu_on_1 as i64
        );
        match exc {
            Some(e) => fail(
                "one cpu",
                format_args!("an HVC took an exception at EL1: {e}"),
            ),
            None => {
                let ok = dt_cpus == 1
                    && dt_cpu_reg == Some(me as usize)
                    && affinity_me == 0
                    && affinity_1 == INVALID_PARAMETERS
                    && cpu_on_1 == INVALID_PARAMETERS;
                check(
                    "one cpu",
                    ok,
                    format_args!(
                        "expected 1 cpu node (reg {me:#x}), AFFINITY_INFO(mpidr {me:#x})=0 (on), \
                         AFFINITY_INFO(mpidr 1)=-2 and CPU_ON(mpidr 1)=-2 (INVALID_PARAMETERS)"
                    ),
                );
            }
        }
    }
}
