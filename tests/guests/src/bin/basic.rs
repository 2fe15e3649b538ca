//! Test guest `basic`: DT memory node, PL011 ID registers and output, an address-derived pattern
//! over all free RAM, PSCI over HVC and SMC.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    println!("the test guests only run on aarch64-unknown-none");
}

#[cfg(target_os = "none")]
mod guest {
    use core::ptr::{read_volatile, write_volatile};

    use test_guests::{
        check, console, entry, fail, finish, hvc_call, image_end, println, smc_call,
        smccc::{
            NOT_SUPPORTED, PSCI_FEATURES, PSCI_MIGRATE_INFO_TYPE, PSCI_SYSTEM_OFF, PSCI_VERSION,
            SMCCC_VERSION,
        },
        take_exception,
    };
    use tock_registers::interfaces::Readable;

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

        uart();
        ram(base, size, dtb, dtb_size);
        psci();
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

        let mut spins = 0;
        while regs.fr.is_set(console::FR::BUSY) && spins < 1_000_000 {
            spins += 1;
        }
        let fr = regs.fr.extract();
        let ok = !fr.is_set(console::FR::TXFF)
            && (fr.is_set(console::FR::TXFE) || !fr.is_set(console::FR::BUSY));
        check(
            "uart output",
            ok,
            format_args!("FR={:#x} when idle", fr.get()),
        );
    }

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

        take_exception();
        let version = smc_call(PSCI_VERSION, 0, 0, 0);
        match take_exception() {
            Some(e) => fail(
                "psci over smc",
                format_args!("SMC took an exception at EL1: {e}"),
            ),
            None => {
                println!("psci over smc: VERSION={version:#x}");
                check("psci over smc", version == 0x1_0001, "expected 0x10001");
            }
        }
    }
}
