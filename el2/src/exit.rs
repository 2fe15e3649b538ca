//! Decoding why a guest left EL1: the exception class in `ESR_EL2` becomes a typed exit reason.

use crate::mmio::{MmioAccess, MmioDecodeError};

/// Exception classes (`ESR_EL2.EC`) the hypervisor handles.
pub mod ec {
    /// Unknown reason (also used when injecting an undefined instruction).
    pub const UNKNOWN: u8 = 0x00;
    /// WFI or WFE trapped by `HCR_EL2.TWI/TWE`.
    pub const WFX: u8 = 0x01;
    /// HVC from AArch64.
    pub const HVC64: u8 = 0x16;
    /// SMC from AArch64 trapped by `HCR_EL2.TSC`.
    pub const SMC64: u8 = 0x17;
    /// MSR, MRS or system instruction trapped from AArch64.
    pub const SYSREG: u8 = 0x18;
    /// Instruction abort from a lower exception level.
    pub const IABT_LOWER: u8 = 0x20;
    /// Instruction abort taken without a change of exception level.
    pub const IABT_CURRENT: u8 = 0x21;
    /// Data abort from a lower exception level.
    pub const DABT_LOWER: u8 = 0x24;
    /// Data abort taken without a change of exception level.
    pub const DABT_CURRENT: u8 = 0x25;
}

/// How the guest entered EL2: the vector-table slot that caught it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum ExitKind {
    /// A synchronous exception (trap, abort, call).
    Synchronous = 0,
    /// A physical IRQ arrived while the guest ran.
    Irq = 1,
    /// A physical FIQ arrived while the guest ran.
    Fiq = 2,
    /// A system error (asynchronous abort) arrived while the guest ran.
    SError = 3,
}

impl ExitKind {
    /// Converts the value the world-switch code returns.
    pub fn from_raw(raw: u64) -> Option<Self> {
        match raw {
            0 => Some(Self::Synchronous),
            1 => Some(Self::Irq),
            2 => Some(Self::Fiq),
            3 => Some(Self::SError),
            _ => None,
        }
    }
}

/// The fault registers captured at a synchronous exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapSyndrome {
    /// `ESR_EL2`.
    pub esr: u64,
    /// `FAR_EL2`: the faulting virtual address, for aborts.
    pub far: u64,
    /// `HPFAR_EL2`: the faulting IPA's page, for stage-2 aborts.
    pub hpfar: u64,
}

impl TrapSyndrome {
    /// The exception class.
    pub fn ec(&self) -> u8 {
        ((self.esr >> 26) & 0x3f) as u8
    }

    /// The instruction-specific syndrome.
    pub fn iss(&self) -> u32 {
        (self.esr & 0x1ff_ffff) as u32
    }

    /// True for a data abort from the guest (a stage-2 fault on a data access).
    pub fn is_data_abort(&self) -> bool {
        const EC_DATA_ABORT_LOWER: u8 = 0x24;
        self.ec() == EC_DATA_ABORT_LOWER
    }

    /// True for an instruction abort taken from the guest (EC 0x20).
    pub fn is_instruction_abort(&self) -> bool {
        const EC_INSTRUCTION_ABORT_LOWER: u8 = 0x20;
        self.ec() == EC_INSTRUCTION_ABORT_LOWER
    }

    /// True for a data or an instruction abort taken from the guest (EC 0x24 or 0x20: one
    /// compare, on every exit).
    #[inline]
    pub fn is_abort(&self) -> bool {
        self.ec() & !0x04 == 0x20
    }

    /// True for a data abort whose IPA [`TrapSyndrome::fault_ipa`] cannot give: the
    /// architecture leaves `HPFAR_EL2` UNKNOWN for a stage-2 permission fault (DFSC `0b0011xx`)
    /// that was not on a stage-1 table walk (S1PTW clear), so the IPA must come from
    /// translating `FAR_EL2` through the guest's stage 1 (as KVM does).
    pub fn ipa_needs_translation(&self) -> bool {
        const S1PTW: u32 = 1 << 7;
        self.is_data_abort() && self.iss() & 0x3c == 0x0c && self.iss() & S1PTW == 0
    }

    /// The faulting intermediate physical address of a stage-2 abort.
    pub fn fault_ipa(&self) -> u64 {
        ((self.hpfar >> 4) << 12) | (self.far & 0xfff)
    }
}

/// A trapped MSR/MRS access, decoded from the ISS of EC 0x18.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    /// The register's encoding as `(op0, op1, crn, crm, op2)`.
    pub encoding: (u8, u8, u8, u8, u8),
    /// The general-purpose register transferred (31 = XZR).
    pub reg: u8,
    /// True for MRS (a read of the system register).
    pub read: bool,
}

impl SysRegAccess {
    /// Decodes the ISS of a trapped MSR/MRS (EC 0x18).
    #[inline]
    pub fn decode(iss: u32) -> Self {
        Self {
            encoding: (
                ((iss >> 20) & 0x3) as u8,
                ((iss >> 14) & 0x7) as u8,
                ((iss >> 10) & 0xf) as u8,
                ((iss >> 1) & 0xf) as u8,
                ((iss >> 17) & 0x7) as u8,
            ),
            reg: ((iss >> 5) & 0x1f) as u8,
            read: iss & 1 != 0,
        }
    }
}

impl core::fmt::Display for SysRegAccess {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (op0, op1, crn, crm, op2) = self.encoding;
        write!(f, "S{op0}_{op1}_C{crn}_C{crm}_{op2}")
    }
}

/// Why the guest exited, decoded from the exit kind and syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// HVC with its immediate; the SMCCC function id is in x0.
    Hvc { imm: u16 },
    /// Trapped SMC with its immediate; the PC still points at the SMC.
    Smc { imm: u16 },
    /// WFI, or (when `wakes_itself`) WFE, WFIT or WFET: those may complete without an
    /// interrupt (an event, a timeout), so the guest is simply resumed.
    Wfx { wakes_itself: bool },
    /// A trapped system-register access.
    SysReg(SysRegAccess),
    /// A stage-2 data abort with a valid syndrome: a candidate for MMIO emulation.
    Mmio(MmioAccess),
    /// A stage-2 data abort that cannot be emulated (no valid instruction syndrome).
    DataAbort {
        ipa: u64,
        write: bool,
        reason: MmioDecodeError,
    },
    /// A stage-2 instruction abort: the guest executed from an IPA with no RAM.
    InstructionAbort { ipa: u64 },
    /// A physical interrupt.
    Interrupt,
    /// A system error while the guest ran.
    SError,
    /// Any exception class the hypervisor does not handle.
    Unhandled { ec: u8 },
}

impl ExitReason {
    /// The names of the exit reasons, in the order of [`ExitReason::index`]: the rows of an
    /// exit histogram.
    pub const NAMES: [&'static str; 10] = [
        "hvc",
        "smc",
        "wfx",
        "sysreg",
        "mmio",
        "data_abort",
        "instruction_abort",
        "interrupt",
        "serror",
        "unhandled",
    ];

    /// An exit histogram as one line: the reasons that occurred with their counts, in the order
    /// of [`ExitReason::NAMES`] (`hvc 1030, mmio 2040, interrupt 50`), or `none`.
    pub fn histogram(counts: &[(&str, u64)]) -> alloc::string::String {
        use core::fmt::Write;
        let mut line = alloc::string::String::new();
        for (name, count) in counts.iter().filter(|(_, count)| *count > 0) {
            let separator = if line.is_empty() { "" } else { ", " };
            let _ = write!(line, "{separator}{name} {count}");
        }
        if line.is_empty() {
            line.push_str("none");
        }
        line
    }

    /// This reason's row in [`ExitReason::NAMES`].
    pub fn index(&self) -> usize {
        match self {
            Self::Hvc { .. } => 0,
            Self::Smc { .. } => 1,
            Self::Wfx { .. } => 2,
            Self::SysReg(_) => 3,
            Self::Mmio(_) => 4,
            Self::DataAbort { .. } => 5,
            Self::InstructionAbort { .. } => 6,
            Self::Interrupt => 7,
            Self::SError => 8,
            Self::Unhandled { .. } => 9,
        }
    }

    /// Decodes an exit from the vector slot and the syndrome registers.
    pub fn decode(kind: ExitKind, syndrome: &TrapSyndrome) -> Self {
        match kind {
            ExitKind::Irq | ExitKind::Fiq => return Self::Interrupt,
            ExitKind::SError => return Self::SError,
            ExitKind::Synchronous => {}
        }
        let iss = syndrome.iss();
        match syndrome.ec() {
            ec::HVC64 => Self::Hvc { imm: iss as u16 },
            ec::SMC64 => Self::Smc { imm: iss as u16 },
            // ISS.TI: 0b00 WFI, 0b01 WFE, 0b10 WFIT, 0b11 WFET.
            ec::WFX => Self::Wfx {
                wakes_itself: iss & 0b11 != 0,
            },
            ec::SYSREG => Self::SysReg(SysRegAccess::decode(iss)),
            ec::DABT_LOWER => {
                let ipa = syndrome.fault_ipa();
                match MmioAccess::decode(iss, ipa) {
                    Ok(access) => Self::Mmio(access),
                    Err(reason) => Self::DataAbort {
                        ipa,
                        write: iss & (1 << 6) != 0,
                        reason,
                    },
                }
            }
            ec::IABT_LOWER => Self::InstructionAbort {
                ipa: syndrome.fault_ipa(),
            },
            other => Self::Unhandled { ec: other },
        }
    }
}

#[cfg(test)]
mod ipa_tests {
    use super::TrapSyndrome;

    fn abort(iss: u32) -> TrapSyndrome {
        TrapSyndrome {
            esr: 0x24 << 26 | u64::from(iss),
            far: 0,
            hpfar: 0,
        }
    }

    #[test]
    fn only_permission_faults_off_a_table_walk_need_the_far_translated() {
        assert!(
            abort(0x4f).ipa_needs_translation(),
            "write, permission fault level 3"
        );
        assert!(
            abort(0x4d).ipa_needs_translation(),
            "permission fault level 1"
        );
        assert!(
            !abort(0x4f | 1 << 7).ipa_needs_translation(),
            "on a stage-1 walk"
        );
        assert!(!abort(0x47).ipa_needs_translation(), "translation fault");
        assert!(!abort(0x4b).ipa_needs_translation(), "access flag fault");
        let hvc = TrapSyndrome {
            esr: 0x16 << 26 | 0x0c,
            far: 0,
            hpfar: 0,
        };
        assert!(!hvc.ipa_needs_translation());
    }

    #[test]
    fn instruction_aborts_are_told_from_data_aborts() {
        let fetch = TrapSyndrome {
            esr: 0x20 << 26 | 0x07,
            far: 0x41_dc60,
            hpfar: 0x426b1 << 4,
        };
        assert!(fetch.is_instruction_abort() && !fetch.is_data_abort() && fetch.is_abort());
        assert!(abort(0x47).is_abort());
        let hvc = TrapSyndrome {
            esr: 0x16 << 26,
            far: 0,
            hpfar: 0,
        };
        assert!(!hvc.is_abort());
        assert!(!fetch.ipa_needs_translation());
        assert_eq!(fetch.fault_ipa(), 0x426b_1c60);
        assert!(!abort(0x47).is_instruction_abort());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(esr: u64) -> ExitReason {
        ExitReason::decode(
            ExitKind::Synchronous,
            &TrapSyndrome {
                esr,
                far: 0,
                hpfar: 0,
            },
        )
    }

    #[test]
    fn the_histogram_names_what_occurred_in_row_order() {
        let counts: alloc::vec::Vec<(&str, u64)> =
            ExitReason::NAMES.iter().map(|name| (*name, 0)).collect();
        assert_eq!(ExitReason::histogram(&counts), "none");
        let mut counts = counts;
        for (name, count) in [("interrupt", 50), ("hvc", 1030), ("mmio", 2040)] {
            counts.iter_mut().find(|(row, _)| *row == name).unwrap().1 = count;
        }
        assert_eq!(
            ExitReason::histogram(&counts),
            "hvc 1030, mmio 2040, interrupt 50"
        );
    }

    #[test]
    fn calls_and_waits() {
        assert_eq!(sync(0x5a00_0000), ExitReason::Hvc { imm: 0 });
        assert_eq!(sync(0x5a00_0007), ExitReason::Hvc { imm: 7 });
        assert_eq!(sync(0x5e00_0000), ExitReason::Smc { imm: 0 });
        assert_eq!(
            sync(0x0600_0000),
            ExitReason::Wfx {
                wakes_itself: false
            }
        );
        assert_eq!(sync(0x0600_0001), ExitReason::Wfx { wakes_itself: true });
        assert_eq!(
            sync(0x0600_0002),
            ExitReason::Wfx { wakes_itself: true },
            "WFIT has a timeout"
        );
        assert_eq!(sync(0x8600_0000), ExitReason::Unhandled { ec: 0x21 });
    }

    #[test]
    fn sysreg_fields() {
        // mrs x3, S3_0_C15_C0_0: op0=3 op2=0 op1=0 CRn=15 Rt=3 CRm=0, direction read.
        let iss: u64 = (3 << 20) | (15 << 10) | (3 << 5) | 1;
        let ExitReason::SysReg(access) = sync((0x18 << 26) | (1 << 25) | iss) else {
            panic!("not a sysreg exit");
        };
        assert_eq!(access.encoding, (3, 0, 15, 0, 0));
        assert_eq!(access.reg, 3);
        assert!(access.read);
        assert_eq!(access.to_string(), "S3_0_C15_C0_0");
    }

    #[test]
    fn stage2_abort_ipa() {
        let syndrome = TrapSyndrome {
            esr: 0x9000_0046,
            far: 0xffff_0000_1234_5678,
            hpfar: 0x9_0000,
        };
        assert_eq!(syndrome.fault_ipa(), 0x0900_0678);
        let irq = ExitReason::decode(ExitKind::Irq, &syndrome);
        assert_eq!(irq, ExitReason::Interrupt);
        let iabt = TrapSyndrome {
            esr: 0x8200_0006,
            far: 0x1000,
            hpfar: 0x30,
        };
        assert_eq!(
            ExitReason::decode(ExitKind::Synchronous, &iabt),
            ExitReason::InstructionAbort { ipa: 0x3000 }
        );
    }
}
