//! Everything that touches the hardware: boot entry, exception vectors and world switch, the EL2
//! MMU, system registers, TLB maintenance and firmware calls. Built only for the board.

pub mod boot;
pub mod console;
pub mod guest;
pub mod heap;
pub mod mmu;
pub mod psci;
pub mod sysregs;
pub mod tlb;
pub mod vectors;
