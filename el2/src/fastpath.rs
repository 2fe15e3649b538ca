//! The fast path: exits answered straight from the exception vector, without the full context
//! save, the list-register sync, the scheduler or any lock, because the answer depends on
//! nothing but the trapped instruction and the guest's argument registers.
//!
//! Only firmware-interface queries over HVC qualify ([`crate::psci::query_answer`]: PSCI_VERSION,
//! PSCI_FEATURES, SMCCC_VERSION, SMCCC_ARCH_FEATURES, MIGRATE_INFO_TYPE). Everything else falls
//! through to the full path unchanged, and so does every call while the log level is `debug`,
//! where the full path logs each trapped call (`arch::vectors` checks [`FAST_PATH`]). Exits
//! answered here are not counted in the instance's exit histogram (the vector does not know
//! the instance). docs/ARCHITECTURE.md has the table of which exit takes which path.

use core::sync::atomic::AtomicBool;

use crate::psci;

/// Whether the vectors try the fast path (off under `log=debug`, set once at boot).
pub static FAST_PATH: AtomicBool = AtomicBool::new(false);

/// `ESR_EL2.EC` of an HVC from AArch64: the only exception class that can qualify (the vector
/// checks it before saving anything).
pub const EC_HVC64: u64 = 0x16;

/// The guest's new x0 if the exit with syndrome `esr` and argument registers `x` (x0..x3) is
/// answered on the fast path; `None` to take the full path.
pub fn answer(esr: u64, x: [u64; 4]) -> Option<u64> {
    let (ec, imm) = (esr >> 26 & 0x3f, esr & 0xffff);
    if ec != EC_HVC64 || imm != 0 {
        return None;
    }
    psci::query_answer(psci::decode(x)).map(|answer| answer as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ESR_EL2 of an HVC #imm from AArch64 (IL set).
    fn hvc(imm: u16) -> u64 {
        EC_HVC64 << 26 | 1 << 25 | u64::from(imm)
    }

    #[test]
    fn firmware_queries_over_hvc_are_answered() {
        assert_eq!(answer(hvc(0), [0x8400_0000, 0, 0, 0]), Some(0x1_0001));
        assert_eq!(answer(hvc(0), [0x8000_0000, 0, 0, 0]), Some(0x1_0001));
        assert_eq!(answer(hvc(0), [0x8400_0006, 0, 0, 0]), Some(2));
        // PSCI_FEATURES(CPU_ON_64) and of an unknown function; SMCCC_ARCH_FEATURES.
        assert_eq!(answer(hvc(0), [0x8400_000a, 0xc400_0003, 0, 0]), Some(0));
        assert_eq!(
            answer(hvc(0), [0x8400_000a, 0x8400_00ff, 0, 0]),
            Some(psci::status::NOT_SUPPORTED as u64)
        );
        assert_eq!(
            answer(hvc(0), [0x8000_0001, 0x8000_8000, 0, 0]),
            Some(psci::status::NOT_SUPPORTED as u64)
        );
    }

    #[test]
    fn everything_else_takes_the_full_path() {
        // Calls that act or depend on the instance: CPU_ON, AFFINITY_INFO, SYSTEM_OFF, the
        // project's own calls, unknown ones.
        for x0 in [
            0xc400_0003,
            0xc400_0004,
            0x8400_0008,
            0xc600_0010,
            0xc600_0012,
            0x8600_ff01,
        ] {
            assert_eq!(answer(hvc(0), [x0, 1, 2, 3]), None, "{x0:#x}");
        }
        // The right call, the wrong way in: HVC #1, SMC, a data abort, WFI, a system register.
        assert_eq!(answer(hvc(1), [0x8400_0000, 0, 0, 0]), None);
        for ec in [0x17u64, 0x24, 0x01, 0x18] {
            assert_eq!(
                answer(ec << 26 | 1 << 25, [0x8400_0000, 0, 0, 0]),
                None,
                "EC {ec:#x}"
            );
        }
    }
}
