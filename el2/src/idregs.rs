//! The CPU ID registers as guests see them. `HCR_EL2.TID3` traps every EL1 read of the ID
//! register block (`op0=3, op1=0, CRn=0, CRm=1..7`); the answer is the board CPU's own value with
//! the features the hypervisor does not give guests taken out: the PMU, statistical profiling,
//! trace and branch records (their registers are trapped by `MDCR_EL2` and undefined for
//! guests), and SVE and SME (trapped by `CPTR_EL2`). See docs/ARCHITECTURE.md, "Debug and PMU".

use crate::exit::SysRegAccess;

/// ID registers in the trapped block: CRm 1..=7, op2 0..=7.
const COUNT: usize = 7 * 8;

/// `(CRm, op2)` of `ID_DFR0_EL1`.
const ID_DFR0: (u8, u8) = (1, 2);
/// `(CRm, op2)` of `ID_AA64PFR0_EL1`.
const ID_AA64PFR0: (u8, u8) = (4, 0);
/// `(CRm, op2)` of `ID_AA64PFR1_EL1`.
const ID_AA64PFR1: (u8, u8) = (4, 1);
/// `(CRm, op2)` of `ID_AA64ZFR0_EL1` (SVE features).
const ID_AA64ZFR0: (u8, u8) = (4, 4);
/// `(CRm, op2)` of `ID_AA64SMFR0_EL1` (SME features).
const ID_AA64SMFR0: (u8, u8) = (4, 5);
/// `(CRm, op2)` of `ID_AA64DFR0_EL1`.
const ID_AA64DFR0: (u8, u8) = (5, 0);

/// A 4-bit ID field at bit `shift`.
const fn field(shift: u32) -> u64 {
    0xf << shift
}

/// What the guest may not see in each register: `(register, fields cleared)`.
const HIDDEN: [((u8, u8), u64); 6] = [
    // PerfMon (AArch32 view of the PMU).
    (ID_DFR0, field(24)),
    // SVE.
    (ID_AA64PFR0, field(32)),
    // SME.
    (ID_AA64PFR1, field(24)),
    (ID_AA64ZFR0, u64::MAX),
    (ID_AA64SMFR0, u64::MAX),
    // TraceVer, PMUVer, PMSS, PMSVer (SPE), TraceFilt, TraceBuffer, MTPMU, BRBE, ExtTrcBuff,
    // HPMN0: everything but the debug architecture and its breakpoint and watchpoint counts.
    (
        ID_AA64DFR0,
        field(4)
            | field(8)
            | field(16)
            | field(32)
            | field(40)
            | field(44)
            | field(48)
            | field(52)
            | field(56)
            | field(60),
    ),
];

/// The guest's view of the ID register block, computed once from the board CPU's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestIdRegisters {
    values: [u64; COUNT],
}

impl GuestIdRegisters {
    /// The guest view of the registers that `read_hardware(crm, op2)` reads from the CPU.
    pub fn from_hardware(read_hardware: impl Fn(u8, u8) -> u64) -> Self {
        let mut values = [0; COUNT];
        for (index, value) in values.iter_mut().enumerate() {
            let (crm, op2) = (index / 8 + 1, index % 8);
            *value = read_hardware(crm as u8, op2 as u8);
        }
        for ((crm, op2), hidden) in HIDDEN {
            values[Self::index(crm, op2)] &= !hidden;
        }
        Self { values }
    }

    fn index(crm: u8, op2: u8) -> usize {
        usize::from(crm - 1) * 8 + usize::from(op2)
    }

    /// The value a trapped read answers, if `access` is a read of the ID register block.
    pub fn read(&self, access: &SysRegAccess) -> Option<u64> {
        match access.encoding {
            (3, 0, 0, crm @ 1..=7, op2) if access.read => Some(self.values[Self::index(crm, op2)]),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(encoding: (u8, u8, u8, u8, u8)) -> SysRegAccess {
        SysRegAccess {
            encoding,
            reg: 0,
            read: true,
        }
    }

    #[test]
    fn hides_the_pmu_sve_and_sme_and_keeps_the_rest() {
        // Every register reads as its own (CRm, op2) in each nibble, plus all-ones PMU fields.
        let ids = GuestIdRegisters::from_hardware(|crm, op2| {
            0x1111_1111_1111_1111 * u64::from(crm) + u64::from(op2)
        });
        let dfr0 = ids.read(&read((3, 0, 0, 5, 0))).unwrap();
        assert_eq!((dfr0 >> 8) & 0xf, 0, "PMUVer");
        assert_eq!((dfr0 >> 32) & 0xf, 0, "PMSVer");
        assert_eq!(dfr0 & 0xf, 0x5, "DebugVer stays");
        assert_eq!((dfr0 >> 12) & 0xf, 0x5, "BRPs stay");
        let pfr0 = ids.read(&read((3, 0, 0, 4, 0))).unwrap();
        assert_eq!((pfr0 >> 32) & 0xf, 0, "SVE");
        assert_eq!(pfr0 & 0xf, 0x4, "EL0 stays");
        assert_eq!(ids.read(&read((3, 0, 0, 4, 4))), Some(0), "ZFR0");
        let isar0 = ids.read(&read((3, 0, 0, 6, 0))).unwrap();
        assert_eq!(isar0, 0x6666_6666_6666_6666);
        let dfr0_32 = ids.read(&read((3, 0, 0, 1, 2))).unwrap();
        assert_eq!((dfr0_32 >> 24) & 0xf, 0, "PerfMon");
    }

    #[test]
    fn only_reads_of_the_id_block_are_answered() {
        let ids = GuestIdRegisters::from_hardware(|_, _| 7);
        assert_eq!(ids.read(&read((3, 0, 0, 7, 7))), Some(7));
        assert_eq!(ids.read(&read((3, 0, 0, 0, 5))), None, "MPIDR is not in it");
        assert_eq!(ids.read(&read((3, 3, 9, 12, 0))), None, "PMCR_EL0");
        let write = SysRegAccess {
            encoding: (3, 0, 0, 5, 0),
            reg: 0,
            read: false,
        };
        assert_eq!(ids.read(&write), None);
    }
}
