//! The generic timer from EL1: counters (with an ISB so reads are not hoisted), and the virtual
//! (CNTV_*, PPI 27) and EL1 physical (CNTP_*, PPI 30) timers.

use core::arch::asm;

/// INTID of the virtual timer (PPI 11).
pub const VIRT_INTID: u32 = 27;
/// INTID of the EL1 physical timer (PPI 14).
pub const PHYS_INTID: u32 = 30;

/// CNTx_CTL_EL0.ENABLE.
pub const CTL_ENABLE: u64 = 1;
/// CNTx_CTL_EL0.IMASK.
pub const CTL_IMASK: u64 = 2;
/// CNTx_CTL_EL0.ISTATUS (read-only): the timer condition is met.
pub const CTL_ISTATUS: u64 = 4;

macro_rules! sysreg_rw {
    ($get:ident, $set:ident, $reg:literal) => {
        #[doc = concat!("Reads ", $reg, ".")]
        #[inline(always)]
        pub fn $get() -> u64 {
            let v: u64;
            // SAFETY: reading a timer register has no side effects.
            unsafe { asm!(concat!("mrs {0}, ", $reg), out(reg) v, options(nomem, nostack)) };
            v
        }
        #[doc = concat!("Writes ", $reg, " (then ISB).")]
        #[inline(always)]
        pub fn $set(v: u64) {
            // SAFETY: the timer registers only affect the timer interrupt.
            unsafe { asm!(concat!("msr ", $reg, ", {0}"), "isb", in(reg) v, options(nomem, nostack)) };
        }
    };
}

sysreg_rw!(cntv_cval, set_cntv_cval, "cntv_cval_el0");
sysreg_rw!(cntv_ctl, set_cntv_ctl, "cntv_ctl_el0");
sysreg_rw!(cntp_cval, set_cntp_cval, "cntp_cval_el0");
sysreg_rw!(cntp_ctl, set_cntp_ctl, "cntp_ctl_el0");

/// Counter frequency in Hz (CNTFRQ_EL0).
pub fn frequency() -> u64 {
    let v: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { asm!("mrs {0}, cntfrq_el0", out(reg) v, options(nomem, nostack)) };
    v
}

/// The virtual counter (CNTVCT_EL0), read after an ISB.
#[inline(always)]
pub fn counter() -> u64 {
    let v: u64;
    // SAFETY: reading the counter has no side effects; the ISB orders it after earlier code.
    unsafe { asm!("isb", "mrs {0}, cntvct_el0", out(reg) v, options(nostack)) };
    v
}

/// The physical counter (CNTPCT_EL0), read after an ISB.
#[inline(always)]
pub fn phys_counter() -> u64 {
    let v: u64;
    // SAFETY: as for `counter`.
    unsafe { asm!("isb", "mrs {0}, cntpct_el0", out(reg) v, options(nostack)) };
    v
}

/// Busy-waits `ticks` counter ticks (IRQs are taken meanwhile if unmasked).
pub fn delay(ticks: u64) {
    let end = counter() + ticks;
    while counter() < end {
        core::hint::spin_loop();
    }
}
