//! SMC Calling Convention calls (HVC and SMC conduits) and PSCI power-off.

use crate::println;

/// PSCI_VERSION.
pub const PSCI_VERSION: u64 = 0x8400_0000;
/// PSCI AFFINITY_INFO, SMC64.
pub const PSCI_AFFINITY_INFO: u64 = 0xC400_0004;
/// PSCI MIGRATE_INFO_TYPE.
pub const PSCI_MIGRATE_INFO_TYPE: u64 = 0x8400_0006;
/// PSCI SYSTEM_OFF.
pub const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
/// PSCI_FEATURES.
pub const PSCI_FEATURES: u64 = 0x8400_000a;
/// SMCCC_VERSION.
pub const SMCCC_VERSION: u64 = 0x8000_0000;
/// SMCCC NOT_SUPPORTED (-1) as returned in x0.
pub const NOT_SUPPORTED: u64 = u64::MAX;
/// PSCI INVALID_PARAMETERS (-2) as returned in x0.
pub const INVALID_PARAMETERS: u64 = -2i64 as u64;

macro_rules! smccc_asm {
    ($insn:literal, $fid:expr, $a1:expr, $a2:expr, $a3:expr) => {{
        let mut x0 = $fid;
        // SAFETY: an SMCCC call only reads x0-x3 and may clobber x0-x17 (all declared here); it
        // touches no memory of ours. If the call traps as undefined, the vectors skip it.
        unsafe {
            core::arch::asm!(
                $insn,
                inout("x0") x0,
                inout("x1") $a1 => _, inout("x2") $a2 => _, inout("x3") $a3 => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                out("x16") _, out("x17") _,
                options(nostack),
            )
        };
        x0
    }};
}

/// SMCCC call over HVC: function id and three arguments in x0..x3, result from x0.
#[inline(never)]
pub fn hvc_call(fid: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    smccc_asm!("hvc #0", fid, a1, a2, a3)
}

/// HV_MIGRATION_NOTICES: migration notices as interrupt x1 (0: none).
pub const HV_MIGRATION_NOTICES: u64 = 0xC600_0010;
/// HV_MIGRATION_STATUS: the last notice in x0, paused ticks in x1, notices so far in x2.
pub const HV_MIGRATION_STATUS: u64 = 0xC600_0011;
/// HV_CHECKPOINT: the management side takes the instance's checkpoint now (0, or -1 / -3).
pub const HV_CHECKPOINT: u64 = 0xC600_0012;

/// SMCCC call over HVC with no arguments that answers in x0..x2.
#[inline(never)]
pub fn hvc_call_x3(fid: u64) -> [u64; 3] {
    let (x0, x1, x2);
    // SAFETY: an SMCCC call only reads x0-x3 and may clobber x0-x17 (all declared here); it
    // touches no memory of ours.
    unsafe {
        core::arch::asm!(
            "hvc #0",
            inout("x0") fid => x0,
            inout("x1") 0u64 => x1, inout("x2") 0u64 => x2, inout("x3") 0u64 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack),
        )
    };
    [x0, x1, x2]
}

/// SMCCC call over SMC: function id and three arguments in x0..x3, result from x0.
#[inline(never)]
pub fn smc_call(fid: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    smccc_asm!("smc #0", fid, a1, a2, a3)
}

/// PSCI SYSTEM_OFF over HVC; never returns (prints a FAIL line and parks if the call does).
pub fn system_off() -> ! {
    hvc_call(PSCI_SYSTEM_OFF, 0, 0, 0);
    println!("FAIL: SYSTEM_OFF returned");
    loop {
        aarch64_cpu::asm::wfi();
    }
}
