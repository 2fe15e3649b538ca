//! The EL2 vector table and the world switch: `enter_guest` loads a vCPU's general-purpose
//! registers and ERETs to it; an exception from the guest saves them again and returns from
//! `enter_guest` with the kind of exit. Exceptions taken at EL2 itself are hypervisor bugs.
//!
//! A synchronous exception from AArch64 first tries the fast path (`crate::fastpath`): for an
//! HVC, with only the registers a Rust call may clobber saved on the stack, `fast_exit` decides;
//! for a data abort or a trapped system register, with those registers and x0, x1 and the PC
//! saved into the vCPU's `GuestRegs`, `fast_mmio` or `fast_sysreg` does. An exit that either answers returns to the guest at once, any
//! other continues as a full exit.

use core::ffi::c_void;

use crate::arch::sysregs;
use crate::exit::ExitKind;
use crate::fastpath::{self, FastVcpu};
use crate::vcpu::GuestRegs;

core::arch::global_asm!(
    r#"
.macro guest_exit kind
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mov     x1, #\kind
    b       guest_exit_common
.endm

.macro guest_sync
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    b       guest_sync_entry
.endm

// x2..x17 into the GuestRegs at x0, and back: what every save and load of the guest's
// registers shares.
.macro store_x2_to_x17
    stp     x2, x3, [x0, #16]
    stp     x4, x5, [x0, #32]
    stp     x6, x7, [x0, #48]
    stp     x8, x9, [x0, #64]
    stp     x10, x11, [x0, #80]
    stp     x12, x13, [x0, #96]
    stp     x14, x15, [x0, #112]
    stp     x16, x17, [x0, #128]
.endm

.macro load_x2_to_x17
    ldp     x2, x3, [x0, #16]
    ldp     x4, x5, [x0, #32]
    ldp     x6, x7, [x0, #48]
    ldp     x8, x9, [x0, #64]
    ldp     x10, x11, [x0, #80]
    ldp     x12, x13, [x0, #96]
    ldp     x14, x15, [x0, #112]
    ldp     x16, x17, [x0, #128]
.endm

// Saves the guest's registers into the GuestRegs at x0, with its x0, x1 popped from the stack.
.macro save_guest_regs
    store_x2_to_x17
    stp     x18, x19, [x0, #144]
    stp     x20, x21, [x0, #160]
    stp     x22, x23, [x0, #176]
    stp     x24, x25, [x0, #192]
    stp     x26, x27, [x0, #208]
    stp     x28, x29, [x0, #224]
    str     x30, [x0, #240]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x0]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x2, x3, [x0, #248]
.endm

// Loads the guest's registers from the GuestRegs at x0 and returns to it.
.macro load_guest_regs_and_eret
    ldp     x1, x2, [x0, #248]      // pc, pstate
    msr     elr_el2, x1
    msr     spsr_el2, x2
    load_x2_to_x17
    ldp     x18, x19, [x0, #144]
    ldp     x20, x21, [x0, #160]
    ldp     x22, x23, [x0, #176]
    ldp     x24, x25, [x0, #192]
    ldp     x26, x27, [x0, #208]
    ldp     x28, x29, [x0, #224]
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0]
    eret
.endm

// The fast path for a data abort or a system register, answered by `handler`: the registers a
// Rust call may clobber, x0/x1 and the PC saved into the GuestRegs (x19..x29 stay live: the
// handler declines an access that names one). Answered (x0 = 1): those come back and the guest
// resumes at the PC the handler stepped on. Declined: the rest goes into the GuestRegs and the
// exit goes on as a full one.
.macro fast_trap handler
    adrp    x1, {fast_path}
    ldrb    w1, [x1, :lo12:{fast_path}]
    cbz     w1, guest_sync_full
    ldr     x0, [sp, #(16 + 96)]    // the GuestRegs pointer enter_guest saved
    store_x2_to_x17
    str     x18, [x0, #144]
    str     x30, [x0, #240]
    ldp     x2, x3, [sp]            // the guest's x0, x1
    stp     x2, x3, [x0]
    mrs     x2, elr_el2
    str     x2, [x0, #248]
    ldr     x1, [sp, #(16 + 104)]   // the FastVcpu pointer
    bl      \handler
    ldr     x1, [sp, #(16 + 96)]
    cbz     x0, 4f
    mov     x0, x1
    ldr     x1, [x0, #248]
    msr     elr_el2, x1
    load_x2_to_x17
    ldr     x18, [x0, #144]
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0]
    add     sp, sp, #16
    eret
4:  str     x19, [x1, #152]
    stp     x20, x21, [x1, #160]
    stp     x22, x23, [x1, #176]
    stp     x24, x25, [x1, #192]
    stp     x26, x27, [x1, #208]
    stp     x28, x29, [x1, #224]
    mrs     x2, spsr_el2
    str     x2, [x1, #256]
    add     sp, sp, #16
    mov     x1, #0                  // ExitKind::Synchronous
    b       return_to_host
.endm

// A plain load of the console UART's FR, which an early console makes before every byte it
// writes: answered here, before any register is saved, with x2/x3 borrowed besides the pushed
// x0/x1. It qualifies with a syndrome (ISV), as a load (WnR clear) without sign extension
// (SSE), of a stage-2 translation fault (DFSC 0b0001xx) that is no stage-1 walk or cache
// maintenance, at the instance's UART base + FR (counted as `fr_fast`); the value is the UART's
// FR as its model last set it (all of it in the low byte, so the access size does not matter),
// written into the transfer register (ISS SRT [20:16]) through a table of two
// instructions an entry. Anything else falls through with the registers as they came (FAR_EL2's
// page offset is looked at first, so other accesses pay four instructions). ISS: FnV [10] clear
// says FAR_EL2 is valid.
.macro console_flag_read
    mrs     x1, far_el2
    and     x1, x1, #0xfff
    cmp     x1, #{uart_fr}
    b.ne    9f                      // not FR's offset in its page: four instructions for others
    adrp    x1, {fast_path}
    ldrb    w1, [x1, :lo12:{fast_path}]
    cbz     w1, guest_sync_full
    stp     x2, x3, [sp, #-16]!
    mrs     x0, esr_el2
    mov     w1, #0x05fc
    movk    w1, #0x0120, lsl #16    // ISV [24], SSE [21], FnV [10], CM [8], S1PTW [7], WnR [6], DFSC [5:2]
    and     w1, w0, w1
    mov     w2, #0x0004
    movk    w2, #0x0100, lsl #16
    cmp     w1, w2
    b.ne    5f
    ldr     x3, [sp, #(32 + 104)]   // the FastVcpu
    ldr     x0, [x3, #{vcpu_state}] // its FastState
    mrs     x1, hpfar_el2
    lsr     x1, x1, #4
    mrs     x2, far_el2
    bfi     x2, x1, #12, #52        // the IPA: HPFAR_EL2.FIPA, then FAR_EL2[11:0]
    ldr     x1, [x0, #{uart_base}]
    add     x1, x1, #{uart_fr}
    cmp     x1, x2
    b.ne    5f
    ldr     x1, [x3, #{vcpu_answered}]
    ldr     x2, [x1, #{answered_fr}] // this vCPU's count of FR loads answered here (only
    add     x2, x2, #1               // this CPU writes it while the vCPU runs)
    str     x2, [x1, #{answered_fr}]
    ldr     x0, [x0, #{uart_flags}]
    ldr     x0, [x0]                // FR's value
    mrs     x1, esr_el2
    ubfx    x1, x1, #16, #5         // SRT
    adr     x2, 7f
    add     x2, x2, x1, lsl #3
    br      x2
7:  str     x0, [sp, #16]           // x0 and x1 come back from the stack
    b       8f
    str     x0, [sp, #24]
    b       8f
    str     x0, [sp]                // so do the borrowed x2 and x3
    b       8f
    str     x0, [sp, #8]
    b       8f
    .irp n, 4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30
    mov     x\n, x0
    b       8f
    .endr
    b       8f                      // XZR: nothing written
    nop
8:  mrs     x1, elr_el2
    add     x1, x1, #4
    msr     elr_el2, x1
    ldp     x2, x3, [sp], #16
    ldp     x0, x1, [sp], #16
    eret
5:  ldp     x2, x3, [sp], #16
9:
.endm

// The registers a Rust call may clobber besides x0/x1 (x2..x18, x30), on the stack and back.
.macro push_call_clobbered
    stp     x2, x3, [sp, #-144]!
    stp     x4, x5, [sp, #16]
    stp     x6, x7, [sp, #32]
    stp     x8, x9, [sp, #48]
    stp     x10, x11, [sp, #64]
    stp     x12, x13, [sp, #80]
    stp     x14, x15, [sp, #96]
    stp     x16, x17, [sp, #112]
    stp     x18, x30, [sp, #128]
.endm

.macro pop_call_clobbered
    ldp     x4, x5, [sp, #16]
    ldp     x6, x7, [sp, #32]
    ldp     x8, x9, [sp, #48]
    ldp     x10, x11, [sp, #64]
    ldp     x12, x13, [sp, #80]
    ldp     x14, x15, [sp, #96]
    ldp     x16, x17, [sp, #112]
    ldp     x18, x30, [sp, #128]
    ldp     x2, x3, [sp], #144
.endm

.macro el2_fault kind
    .balign 0x80
    mov     x0, #\kind
    b       el2_fault_entry
.endm

.section .text.vectors, "ax"
.balign 0x800
.global el2_vectors
el2_vectors:
    // Current EL with SP_EL0, then with SP_ELx: the hypervisor itself faulted.
    el2_fault 0
    el2_fault 1
    el2_fault 2
    el2_fault 3
    el2_fault 4
    el2_fault 5
    el2_fault 6
    el2_fault 7
    // Lower EL, AArch64 and then AArch32: the guest exited.
    guest_sync
    guest_exit 1
    guest_exit 2
    guest_exit 3
    guest_exit 0
    guest_exit 1
    guest_exit 2
    guest_exit 3

// fn enter_guest(regs: *mut GuestRegs, fast: *const FastVcpu) -> u64 (the ExitKind)
.global enter_guest
enter_guest:
    stp     x29, x30, [sp, #-112]!
    stp     x19, x20, [sp, #16]
    stp     x21, x22, [sp, #32]
    stp     x23, x24, [sp, #48]
    stp     x25, x26, [sp, #64]
    stp     x27, x28, [sp, #80]
    stp     x0, x1, [sp, #96]       // found again by the exit paths
    load_guest_regs_and_eret

// A synchronous exception from AArch64, the guest's x0, x1 pushed: the fast path if it is on
// and answers, else a full exit. Any exception class but an HVC, a data abort or a trapped
// system register pays nine instructions.
guest_sync_entry:
    mrs     x1, esr_el2
    lsr     x1, x1, #26
    cmp     x1, #{ec_hvc64}
    b.eq    3f
    cmp     x1, #{ec_data_abort}
    b.eq    guest_sync_data_abort
    cmp     x1, #{ec_sysreg}
    b.ne    guest_sync_full
    // Of the system registers only an MRS of the ID block or of the generic timer can
    // qualify: ISS op0 = 3 [21:20], op1 = 0, CRn = 0 or op1 = 3, CRn = 14 [16:14, 13:10],
    // direction = read [0] (x0 is free: it is pushed).
    mrs     x0, esr_el2
    mov     w1, #0xfc01
    movk    w1, #0x31, lsl #16
    and     w0, w0, w1
    mov     w1, #0x0001
    movk    w1, #0x30, lsl #16
    cmp     w0, w1
    b.eq    guest_sync_sysreg
    mov     w1, #0xf801
    movk    w1, #0x30, lsl #16
    cmp     w0, w1
    b.ne    guest_sync_full
guest_sync_sysreg:
    fast_trap {fast_sysreg}
guest_sync_data_abort:
    console_flag_read
    fast_trap {fast_mmio}
    // An HVC: only the call-clobbered registers saved; `fast_exit` answers (x0 = 1, the
    // guest's new x0 in x1) or the exit goes on as a full one.
3:  adrp    x1, {fast_path}
    ldrb    w1, [x1, :lo12:{fast_path}]
    cbz     w1, guest_sync_full
    push_call_clobbered
    ldr     x5, [sp, #(144 + 16 + 104)] // fast_exit(esr, x0, x1, x2, x3, the FastVcpu)
    mov     x4, x3
    mov     x3, x2
    ldp     x1, x2, [sp, #144]
    mrs     x0, esr_el2
    bl      {fast_exit}
    cbz     x0, 1f
    mov     x0, x1
    pop_call_clobbered
    ldr     x1, [sp, #8]            // the guest's x1; its x0 is the answer
    add     sp, sp, #16
    eret
1:  pop_call_clobbered
guest_sync_full:
    mov     x1, #0                  // ExitKind::Synchronous
    b       guest_exit_common

// Entered from a lower-EL vector with the guest's x0, x1 pushed and the exit kind in x1.
guest_exit_common:
    ldr     x0, [sp, #(16 + 96)]    // the GuestRegs pointer enter_guest saved
    save_guest_regs
// The guest's registers saved, the exit kind in x1: back to enter_guest's caller.
return_to_host:
    mov     x0, x1
    ldp     x19, x20, [sp, #16]
    ldp     x21, x22, [sp, #32]
    ldp     x23, x24, [sp, #48]
    ldp     x25, x26, [sp, #64]
    ldp     x27, x28, [sp, #80]
    ldp     x29, x30, [sp], #112
    ret

el2_fault_entry:
    mrs     x1, esr_el2
    mrs     x2, elr_el2
    mrs     x3, far_el2
    bl      el2_exception
"#,
    fast_path = sym fastpath::FAST_PATH,
    ec_hvc64 = const fastpath::EC_HVC64,
    ec_data_abort = const fastpath::EC_DATA_ABORT_LOWER,
    ec_sysreg = const fastpath::EC_SYSREG,
    fast_exit = sym fast_exit,
    fast_mmio = sym fast_mmio,
    fast_sysreg = sym fast_sysreg,
    vcpu_state = const fastpath::offsets::VCPU_STATE,
    uart_base = const fastpath::offsets::UART_BASE,
    uart_flags = const fastpath::offsets::UART_FLAGS,
    vcpu_answered = const fastpath::offsets::VCPU_ANSWERED,
    answered_fr = const fastpath::offsets::ANSWERED_FR,
    uart_fr = const fastpath::offsets::UART_FR,
);

/// What `fast_exit` tells the vector: whether it answered, and the guest's new x0. Returned in
/// x0 and x1 (a 16-byte composite, AAPCS64).
#[repr(C)]
struct FastAnswer {
    answered: u64,
    x0: u64,
}

/// The fast path's decision on an HVC, called from the vector with interrupts masked and only
/// the caller-saved registers saved: it touches no shared state but the instance's count of
/// answered exits (see `crate::fastpath`).
extern "C" fn fast_exit(
    esr: u64,
    x0: u64,
    x1: u64,
    x2: u64,
    x3: u64,
    fast: *const FastVcpu,
) -> FastAnswer {
    match fastpath::answer(esr, [x0, x1, x2, x3]) {
        Some(x0) => {
            // SAFETY: the vector passes the FastVcpu that `run` was given, which outlives the
            // guest's run and is only read.
            fastpath::answered_hvc(unsafe { &*fast });
            FastAnswer { answered: 1, x0 }
        }
        None => FastAnswer { answered: 0, x0 },
    }
}

/// The fast path's decision on a data abort, called from the vector with interrupts masked and
/// the guest's x0..x18, x30 and PC saved in `regs` (x19..x29 are still in their registers:
/// `fastpath::mmio` declines an access that names one of those): 1 if answered (the guest
/// resumes from `regs`), 0 for a full exit.
extern "C" fn fast_mmio(regs: *mut GuestRegs, fast: *const FastVcpu) -> u64 {
    // SAFETY: the vector passes the GuestRegs and the FastVcpu that `run` was given: `run` holds
    // the one exclusively and the other shared for as long as the guest runs, and nothing else
    // touches them meanwhile (this CPU is in the vector, not in `run`'s caller).
    let (regs, fast) = unsafe { (&mut *regs, &*fast) };
    u64::from(fastpath::mmio(fast, regs, &sysregs::trap_syndrome()))
}

/// The fast path's decision on a trapped MRS of the ID register block or the generic timer,
/// called as `fast_mmio`.
extern "C" fn fast_sysreg(regs: *mut GuestRegs, fast: *const FastVcpu) -> u64 {
    // SAFETY: the vector passes the GuestRegs and the FastVcpu that `run` was given: `run` holds
    // the one exclusively and the other shared for as long as the guest runs, and nothing else
    // touches them meanwhile (this CPU is in the vector, not in `run`'s caller).
    let (regs, fast) = unsafe { (&mut *regs, &*fast) };
    let syndrome = sysregs::trap_syndrome();
    u64::from(fastpath::sysreg(
        fast,
        regs,
        &syndrome,
        sysregs::guest_counter,
    ))
}

unsafe extern "C" {
    /// `fast` is a `*const FastVcpu`, which the assembly only hands on to the fast path.
    fn enter_guest(regs: *mut GuestRegs, fast: *const c_void) -> u64;
}

/// Runs the vCPU whose registers are `regs` until it exits, and says how it exited; `fast` is
/// what its fast path answers from meanwhile.
///
/// The vCPU's EL1 system registers and the stage-2 context must already be loaded.
pub fn run(regs: &mut GuestRegs, fast: &FastVcpu) -> ExitKind {
    // SAFETY: `regs` is a valid, exclusively borrowed GuestRegs with the layout the assembly
    // expects (checked by a unit test), and `fast` is valid for the call; enter_guest preserves
    // every callee-saved register and the stack, and returns only after the guest exits back
    // to EL2.
    let raw = unsafe { enter_guest(regs, core::ptr::from_ref(fast).cast()) };
    ExitKind::from_raw(raw).expect("the vector table only passes ExitKind values")
}

/// Called from the vector table when the hypervisor itself takes an exception: always a bug.
#[unsafe(no_mangle)]
extern "C" fn el2_exception(kind: u64, esr: u64, elr: u64, far: u64) -> ! {
    let what = ["synchronous", "IRQ", "FIQ", "SError"][(kind & 3) as usize];
    panic!("{what} exception at EL2: ESR_EL2={esr:#x} ELR_EL2={elr:#x} FAR_EL2={far:#x}");
}
