//! Everything that touches the hardware: boot entry, exception vectors and world switch, the EL2
//! MMU, system registers, TLB maintenance and firmware calls. Built only for the board.

pub mod board;
pub mod boot;
pub mod console;
pub mod cpu;
pub mod gic;
pub mod guest;
pub mod heap;
pub mod management;
pub mod mmu;
pub mod nic;
pub mod power;
pub mod psci;
pub mod sysregs;
pub mod tlb;
pub mod transfer;
pub mod vectors;

/// Cleans `[start, start + len)` to the point of coherency, so that an observer with its MMU
/// and caches off (a guest at entry, a CPU coming up) sees what was written through the caches.
pub fn clean_to_poc(start: u64, len: u64) {
    const LINE: u64 = 64;
    let mut line = start & !(LINE - 1);
    while line < start + len {
        // SAFETY: cache maintenance by address on memory the hypervisor maps; no data changes.
        unsafe { core::arch::asm!("dc cvac, {line}", line = in(reg) line, options(nostack)) };
        line += LINE;
    }
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
}
