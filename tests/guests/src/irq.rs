//! IRQ masking (PSTATE.I) and the IRQ vector: acknowledge through the GIC CPU interface (GICv3
//! system registers or GICv2 GICC, see [`gic::acknowledge`]), call the guest's handler, end the
//! interrupt.

use core::sync::atomic::{AtomicUsize, Ordering};

use arm_gic::IntId;

use crate::{gic, println, smp::cpu_id};

/// What a guest runs for every interrupt: `(intid, cpu)`. It runs with IRQs masked and must not
/// block; the runtime ends the interrupt (EOI) when it returns.
pub type Handler = fn(u32, usize);

/// The registered handler (a `Handler` as usize; 0: none).
static HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Registers `handler` for every IRQ on every CPU.
pub fn set_handler(handler: Handler) {
    HANDLER.store(handler as usize, Ordering::SeqCst);
}

/// Masks IRQs (PSTATE.I) and returns the previous DAIF for [`restore`].
#[inline(always)]
pub fn mask() -> u64 {
    let daif: u64;
    // SAFETY: reads DAIF and sets PSTATE.I; no memory is touched (the compiler may not move memory
    // accesses across it, since `nomem` is not given).
    unsafe {
        core::arch::asm!("mrs {0}, daif", "msr daifset, #2", out(reg) daif, options(nostack))
    };
    daif
}

/// Restores DAIF as returned by [`mask`].
#[inline(always)]
pub fn restore(daif: u64) {
    // SAFETY: writes back a DAIF value read earlier.
    unsafe { core::arch::asm!("msr daif, {0}", in(reg) daif, options(nostack)) };
}

/// Unmasks IRQs (clears PSTATE.I); a pending IRQ is taken right after.
#[inline(always)]
pub fn unmask() {
    // SAFETY: clears PSTATE.I only; the vectors handle IRQs.
    unsafe { core::arch::asm!("msr daifclr, #2", "isb", options(nostack)) };
}

/// Waits (WFI, IRQs unmasked in between) until `done()` holds. `done` is checked with IRQs masked
/// before each WFI, so an interrupt that makes it true cannot slip in between check and WFI.
/// Leaves IRQs unmasked.
pub fn wait_until(mut done: impl FnMut() -> bool) {
    loop {
        mask();
        if done() {
            unmask();
            return;
        }
        aarch64_cpu::asm::wfi();
        unmask();
    }
}

/// Called by the vector table for an IRQ taken at EL1: handles every interrupt the CPU interface
/// signals, highest priority first, one at a time.
pub(crate) fn dispatch() {
    let cpu = cpu_id();
    while let Some(ack) = gic::acknowledge() {
        let id = ack.intid();
        match HANDLER.load(Ordering::SeqCst) {
            0 => println!("FAIL: interrupt {id} on CPU {cpu} with no handler registered"),
            f => {
                // SAFETY: only `set_handler` stores into HANDLER, always a `Handler`.
                let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(f) };
                handler(id, cpu);
            }
        }
        gic::end_interrupt(ack);
    }
}

/// INTID as the `arm-gic` type.
pub fn intid(id: u32) -> IntId {
    match id {
        0..16 => IntId::sgi(id),
        16..32 => IntId::ppi(id - 16),
        _ => IntId::spi(id - 32),
    }
}
