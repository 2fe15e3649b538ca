//! Exception handling: synchronous exceptions from EL1 are recorded and skipped, IRQs go to
//! [`crate::irq`], anything else ends the run with a FAIL line.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering, compiler_fence};

use aarch64_cpu::registers::{ELR_EL1, ESR_EL1, FAR_EL1, Readable, Writeable};

use crate::{println, smccc::system_off};

/// What a synchronous exception taken at EL1 looked like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExceptionRecord {
    /// ESR_EL1 (syndrome).
    pub esr: u64,
    /// FAR_EL1 (faulting address; only meaningful for aborts).
    pub far: u64,
    /// ELR_EL1 (address of the instruction that took the exception).
    pub elr: u64,
}

impl ExceptionRecord {
    /// Exception class, ESR[31:26].
    pub fn ec(&self) -> u64 {
        (self.esr >> 26) & 0x3f
    }

    /// Data/instruction fault status code, ISS[5:0].
    pub fn fsc(&self) -> u64 {
        self.esr & 0x3f
    }

    /// Write-not-read, ISS[6] (data aborts).
    pub fn wnr(&self) -> bool {
        self.esr & (1 << 6) != 0
    }
}

impl core::fmt::Display for ExceptionRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        write!(
            f,
            "ESR={:#x} (EC={:#x}) FAR={:#x} ELR={:#x}",
            self.esr,
            self.ec(),
            self.far,
            self.elr
        )
    }
}

static PENDING: AtomicBool = AtomicBool::new(false);
static ESR: AtomicU64 = AtomicU64::new(0);
static FAR: AtomicU64 = AtomicU64::new(0);
static ELR: AtomicU64 = AtomicU64::new(0);

/// Full compiler barrier: no memory access (volatile or not) moves across it.
#[inline(always)]
fn barrier() {
    compiler_fence(Ordering::SeqCst);
    // SAFETY: an empty asm statement; without `nomem` the compiler must assume it touches memory.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) };
}

/// Returns and clears the last synchronous exception taken at EL1, if any.
///
/// Call it once before a test access (to start clean) and once after it.
pub fn take_exception() -> Option<ExceptionRecord> {
    barrier();
    let record = PENDING
        .swap(false, Ordering::SeqCst)
        .then(|| ExceptionRecord {
            esr: ESR.load(Ordering::SeqCst),
            far: FAR.load(Ordering::SeqCst),
            elr: ELR.load(Ordering::SeqCst),
        });
    barrier();
    record
}

const KINDS: [&str; 16] = [
    "sync/EL1t",
    "IRQ/EL1t",
    "FIQ/EL1t",
    "SError/EL1t",
    "sync/EL1h",
    "IRQ/EL1h",
    "FIQ/EL1h",
    "SError/EL1h",
    "sync/lower-A64",
    "IRQ/lower-A64",
    "FIQ/lower-A64",
    "SError/lower-A64",
    "sync/lower-A32",
    "IRQ/lower-A32",
    "FIQ/lower-A32",
    "SError/lower-A32",
];

/// Called by the vector table with the vector index (0..15).
#[unsafe(no_mangle)]
extern "C" fn test_guests_exception(kind: u64) {
    let (esr, far, elr) = (ESR_EL1.get(), FAR_EL1.get(), ELR_EL1.get());
    if kind == 4 {
        if PENDING.load(Ordering::SeqCst) {
            // An earlier exception was never looked at: something faulted that no test expected.
            println!(
                "FAIL: unexpected exception sync/EL1h (previous one unclaimed: ESR={:#x} ELR={:#x}) ESR={esr:#x} ELR={elr:#x}",
                ESR.load(Ordering::SeqCst),
                ELR.load(Ordering::SeqCst)
            );
            system_off();
        }
        ESR.store(esr, Ordering::SeqCst);
        FAR.store(far, Ordering::SeqCst);
        ELR.store(elr, Ordering::SeqCst);
        PENDING.store(true, Ordering::SeqCst);
        ELR_EL1.set(elr + 4);
        return;
    }
    if kind == 5 {
        crate::irq::dispatch();
        return;
    }
    let name = KINDS.get(kind as usize).copied().unwrap_or("?");
    println!("FAIL: unexpected exception {name} ESR={esr:#x} ELR={elr:#x}");
    system_off();
}
