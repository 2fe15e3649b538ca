//! A virtual CPU's architectural state, kept in plain structs so that it can be switched, inspected
//! and (later) checkpointed; and the injection of synchronous exceptions into the guest.

use crate::exit::ec;

/// PSTATE for EL1 with SP_EL1 (EL1h).
pub const PSTATE_EL1H: u64 = 0b0101;
/// PSTATE for EL1 with SP_EL0 (EL1t).
pub const PSTATE_EL1T: u64 = 0b0100;
/// PSTATE.{D,A,I,F} all set.
pub const PSTATE_DAIF: u64 = 0xf << 6;
/// The mode field of PSTATE/SPSR.
const PSTATE_MODE: u64 = 0b1111;
/// `SCTLR_EL1` reset value: only the RES1 bits, MMU and caches off.
pub const SCTLR_EL1_RESET: u64 = 0x30d0_0800;
/// `ESR.IL`: a 32-bit instruction.
const ESR_IL: u64 = 1 << 25;
/// Fault status code: synchronous external abort, not on a table walk.
const FSC_SYNC_EXTERNAL: u64 = 0x10;

/// General-purpose registers, PC and PSTATE, as the world-switch code saves and loads them.
///
/// The layout is fixed: x0..x30 at offsets 0..248, `pc` at 248, `pstate` at 256.
#[repr(C)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestRegs {
    /// x0..x30.
    pub x: [u64; 31],
    /// The guest's PC (`ELR_EL2` while the guest is out).
    pub pc: u64,
    /// The guest's PSTATE (`SPSR_EL2` while the guest is out).
    pub pstate: u64,
}

impl GuestRegs {
    /// Registers for entering a kernel at EL1h with the MMU off, interrupts masked and `x0 = arg`.
    pub fn at_entry(entry: u64, arg: u64) -> Self {
        let mut regs = Self {
            pc: entry,
            pstate: PSTATE_EL1H | PSTATE_DAIF,
            ..Self::default()
        };
        regs.x[0] = arg;
        regs
    }

    /// Reads register `n`, where 31 is the zero register.
    pub fn get(&self, n: u8) -> u64 {
        self.x.get(usize::from(n)).copied().unwrap_or(0)
    }

    /// Writes register `n`; writes to 31 (the zero register) are dropped.
    pub fn set(&mut self, n: u8, value: u64) {
        if let Some(slot) = self.x.get_mut(usize::from(n)) {
            *slot = value;
        }
    }

    /// Steps over the trapped 32-bit instruction.
    pub fn skip_instruction(&mut self) {
        self.pc = self.pc.wrapping_add(4);
    }
}

/// The FP/SIMD register file: V0..V31, FPCR and FPSR, laid out for the save/restore code.
#[repr(C, align(16))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FpRegs {
    /// V0..V31.
    pub v: [u128; 32],
    /// `FPCR`.
    pub fpcr: u64,
    /// `FPSR`.
    pub fpsr: u64,
}

/// The EL1 (and EL0) system registers a guest owns, saved while its vCPU is not on a CPU.
#[repr(C)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)] // Each field is the architectural register of the same name.
pub struct El1SysRegs {
    pub sctlr_el1: u64,
    pub actlr_el1: u64,
    pub cpacr_el1: u64,
    pub ttbr0_el1: u64,
    pub ttbr1_el1: u64,
    pub tcr_el1: u64,
    pub mair_el1: u64,
    pub amair_el1: u64,
    pub vbar_el1: u64,
    pub contextidr_el1: u64,
    pub tpidr_el0: u64,
    pub tpidrro_el0: u64,
    pub tpidr_el1: u64,
    pub sp_el0: u64,
    pub sp_el1: u64,
    pub elr_el1: u64,
    pub spsr_el1: u64,
    pub esr_el1: u64,
    pub far_el1: u64,
    pub afsr0_el1: u64,
    pub afsr1_el1: u64,
    pub par_el1: u64,
    pub cntkctl_el1: u64,
    pub csselr_el1: u64,
    pub mdscr_el1: u64,
}

impl El1SysRegs {
    /// The architectural reset state a freshly powered-on vCPU sees.
    pub fn at_reset() -> Self {
        Self {
            sctlr_el1: SCTLR_EL1_RESET,
            ..Self::default()
        }
    }
}

/// Access to the EL1 registers that exception entry writes: the live registers while a vCPU is
/// loaded on its CPU, or its saved [`El1SysRegs`] otherwise.
pub trait ExceptionRegisters {
    /// `VBAR_EL1`.
    fn vector_base(&self) -> u64;
    /// Writes `ESR_EL1`, `FAR_EL1` (when given), `ELR_EL1` and `SPSR_EL1` as exception entry does.
    fn enter_exception(&mut self, esr: u64, far: Option<u64>, elr: u64, spsr: u64);
}

impl ExceptionRegisters for El1SysRegs {
    fn vector_base(&self) -> u64 {
        self.vbar_el1
    }

    fn enter_exception(&mut self, esr: u64, far: Option<u64>, elr: u64, spsr: u64) {
        self.esr_el1 = esr;
        if let Some(far) = far {
            self.far_el1 = far;
        }
        self.elr_el1 = elr;
        self.spsr_el1 = spsr;
    }
}

/// A synchronous exception the hypervisor makes the guest take at EL1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestException {
    /// An undefined instruction (e.g. a trapped system register the guest may not use).
    Undefined,
    /// A synchronous external abort on a data access to `far` (the virtual address).
    DataAbort { far: u64, write: bool },
    /// A synchronous external abort on an instruction fetch from `far`.
    InstructionAbort { far: u64 },
}

/// Makes the guest take `exception` as the architecture would: the syndrome and return state go
/// to the EL1 registers, and the guest continues at the right entry of its vector table with
/// EL1h and all interrupts masked.
pub fn inject(regs: &mut GuestRegs, el1: &mut impl ExceptionRegisters, exception: GuestException) {
    let mode = regs.pstate & PSTATE_MODE;
    let from_el0 = mode == 0;
    // Same-EL exception classes are one above the lower-EL ones (0x24 → 0x25, 0x20 → 0x21).
    let same_el = u64::from(!from_el0);
    let (esr, far) = match exception {
        GuestException::Undefined => ((u64::from(ec::UNKNOWN) << 26) | ESR_IL, None),
        GuestException::DataAbort { far, write } => {
            let class = u64::from(ec::DABT_LOWER) + same_el;
            let wnr = u64::from(write) << 6;
            ((class << 26) | ESR_IL | wnr | FSC_SYNC_EXTERNAL, Some(far))
        }
        GuestException::InstructionAbort { far } => {
            let class = u64::from(ec::IABT_LOWER) + same_el;
            ((class << 26) | ESR_IL | FSC_SYNC_EXTERNAL, Some(far))
        }
    };
    let vector_offset = match mode {
        PSTATE_EL1T => 0x000,
        PSTATE_EL1H => 0x200,
        _ => 0x400,
    };
    el1.enter_exception(esr, far, regs.pc, regs.pstate);
    regs.pc = el1.vector_base() + vector_offset;
    regs.pstate = PSTATE_EL1H | PSTATE_DAIF;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_state() {
        let regs = GuestRegs::at_entry(0x4000_0000, 0x47e0_0000);
        assert_eq!(regs.pc, 0x4000_0000);
        assert_eq!(regs.x[0], 0x47e0_0000);
        assert_eq!(regs.pstate, 0x3c5);
        assert_eq!(core::mem::offset_of!(GuestRegs, pc), 248);
        assert_eq!(core::mem::offset_of!(GuestRegs, pstate), 256);
    }

    #[test]
    fn fp_register_layout_matches_the_save_code() {
        assert_eq!(core::mem::offset_of!(FpRegs, fpcr), 512);
        assert_eq!(core::mem::offset_of!(FpRegs, fpsr), 520);
        assert_eq!(core::mem::align_of::<FpRegs>(), 16);
    }

    #[test]
    fn zero_register() {
        let mut regs = GuestRegs::default();
        regs.set(31, 5);
        assert_eq!(regs.get(31), 0);
        regs.set(30, 5);
        assert_eq!(regs.get(30), 5);
    }

    #[test]
    fn data_abort_from_el1h() {
        let mut regs = GuestRegs {
            pc: 0x4000_1000,
            pstate: 0x3c5,
            ..GuestRegs::default()
        };
        let mut el1 = El1SysRegs {
            vbar_el1: 0x4000_8000,
            ..El1SysRegs::at_reset()
        };
        inject(
            &mut regs,
            &mut el1,
            GuestException::DataAbort {
                far: 0x3000_0000,
                write: true,
            },
        );
        assert_eq!(el1.esr_el1, (0x25 << 26) | (1 << 25) | (1 << 6) | 0x10);
        assert_eq!(el1.far_el1, 0x3000_0000);
        assert_eq!(el1.elr_el1, 0x4000_1000);
        assert_eq!(el1.spsr_el1, 0x3c5);
        assert_eq!(regs.pc, 0x4000_8200);
        assert_eq!(regs.pstate, 0x3c5);
    }

    #[test]
    fn undefined_from_el0_uses_lower_el_vector() {
        let mut regs = GuestRegs {
            pc: 0x1234,
            pstate: 0x0,
            ..GuestRegs::default()
        };
        let mut el1 = El1SysRegs {
            vbar_el1: 0x8000,
            far_el1: 77,
            ..El1SysRegs::default()
        };
        inject(&mut regs, &mut el1, GuestException::Undefined);
        assert_eq!(el1.esr_el1, 1 << 25);
        assert_eq!(
            el1.far_el1, 77,
            "FAR is untouched for an undefined instruction"
        );
        assert_eq!(regs.pc, 0x8400);
        assert_eq!(el1.spsr_el1, 0);
    }

    #[test]
    fn instruction_abort_from_el1t() {
        let mut regs = GuestRegs {
            pc: 0x5000,
            pstate: 0x4,
            ..GuestRegs::default()
        };
        let mut el1 = El1SysRegs {
            vbar_el1: 0x8000,
            ..El1SysRegs::default()
        };
        inject(
            &mut regs,
            &mut el1,
            GuestException::InstructionAbort { far: 0x5000 },
        );
        assert_eq!(el1.esr_el1 >> 26, 0x21);
        assert_eq!(regs.pc, 0x8000);
    }
}
