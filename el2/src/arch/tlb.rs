//! Stage-2 TLB maintenance for the `stage2` crate.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::VTTBR_EL2;
use tock_registers::interfaces::{Readable, Writeable};

/// Invalidates stage-2 translations on every CPU in the inner-shareable domain.
pub struct Stage2Tlb;

impl Stage2Tlb {
    /// Runs `invalidate` with `vmid` current (TLBI by IPA and VMALL act on VTTBR_EL2's VMID).
    fn with_vmid(vmid: u16, invalidate: impl FnOnce()) {
        let saved = VTTBR_EL2.get();
        VTTBR_EL2.set(u64::from(vmid) << 48);
        barrier::isb(barrier::SY);
        invalidate();
        barrier::dsb(barrier::ISH);
        VTTBR_EL2.set(saved);
        barrier::isb(barrier::SY);
    }
}

impl stage2::TlbMaintenance for Stage2Tlb {
    fn table_update_barrier(&mut self) {
        barrier::dsb(barrier::ISHST);
    }

    fn invalidate_ipa(&mut self, vmid: u16, ipa: u64) {
        Self::with_vmid(vmid, || {
            // SAFETY: TLB maintenance only; it reads no memory. Stage-1 entries that combined the
            // old stage-2 entry go too (VMALLE1IS), as the architecture requires.
            unsafe {
                core::arch::asm!(
                    "tlbi ipas2e1is, {page}",
                    "dsb ish",
                    "tlbi vmalle1is",
                    page = in(reg) ipa >> 12,
                    options(nostack)
                );
            }
        });
    }

    fn invalidate_vmid(&mut self, vmid: u16) {
        Self::with_vmid(vmid, || {
            // SAFETY: TLB maintenance only; it reads no memory.
            unsafe { core::arch::asm!("tlbi vmalls12e1is", options(nostack)) };
        });
    }
}
