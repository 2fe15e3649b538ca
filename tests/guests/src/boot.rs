//! arm64 Image header, early boot (stack, BSS, vectors, FP, MMU), the secondary-CPU entry and the
//! exception vector table.

// Static identity map (4K granule, T0SZ = 25: a level-1 table of 1 GiB blocks):
// 0..1 GiB Device-nGnRE (MAIR attr 0), 1..2 GiB Normal WB inner shareable (MAIR attr 1).
// Block descriptor bits: valid block 0b01, AttrIndx[4:2], SH[9:8], AF[10], PXN[53], UXN[54].
core::arch::global_asm!(
    r#"
    .equ BLOCK_DEVICE, (1 | (0 << 2) | (1 << 10) | (1 << 53) | (1 << 54))
    .equ BLOCK_NORMAL, (1 | (1 << 2) | (3 << 8) | (1 << 10) | (1 << 54))
    .equ MAIR_VALUE, 0xff04
    // T0SZ 25, IRGN0/ORGN0 WB-WA, SH0 inner, TG0 4K, EPD1, IPS 40-bit
    .equ TCR_VALUE, (25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (2 << 32))
    // RES1 bits (11, 20, 22, 23, 28, 29) | M | C | SA | I
    .equ SCTLR_VALUE, (0x30d00800 | (1 << 0) | (1 << 2) | (1 << 3) | (1 << 12))

    .section .text.head, "ax"
    .global _start
_start:
    b       __boot                  // code0
    .long   0                       // code1
    .quad   __text_offset           // text_offset
    .quad   __image_size            // image_size (whole footprint, BSS and stack included)
    .quad   0x2                     // flags: little-endian, 4K pages, 2 MiB-aligned base
    .quad   0, 0, 0                 // res2..res4
    .long   0x644d5241              // magic "ARM\x64"
    .long   0                       // res5

__boot:
    mov     x19, x0                 // DTB address
    adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:  bl      __cpu_init
    mov     x0, x19
    bl      test_guests_rust_start
3:  wfi
    b       3b

    // Secondary CPUs (PSCI CPU_ON) enter here at EL1 with the MMU off and x0 = context_id, which
    // the runtime sets to the top of the CPU's stack. Nothing is read from memory before the MMU
    // and caches are on (the primary's writes may still sit in its cache).
    .global __secondary_entry
__secondary_entry:
    mov     sp, x0
    bl      __cpu_init
    bl      test_guests_secondary_start
4:  wfi
    b       4b

    // Per-CPU setup shared by every CPU: vectors, FP/SIMD access, the identity map, MMU and caches.
    // Clobbers x1 only.
__cpu_init:
    adrp    x1, __vectors
    add     x1, x1, :lo12:__vectors
    msr     vbar_el1, x1
    mov     x1, #(3 << 20)          // CPACR_EL1.FPEN: no FP/SIMD traps at EL1
    msr     cpacr_el1, x1
    ldr     x1, =MAIR_VALUE
    msr     mair_el1, x1
    ldr     x1, =TCR_VALUE
    msr     tcr_el1, x1
    adrp    x1, __boot_l1
    msr     ttbr0_el1, x1
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    ldr     x1, =SCTLR_VALUE
    msr     sctlr_el1, x1
    isb
    ret
    .ltorg

    .section .rodata.boot_l1, "a"
    .balign 4096
__boot_l1:
    .quad   0x00000000 | BLOCK_DEVICE
    .quad   0x40000000 | BLOCK_NORMAL
    .fill   510, 8, 0

    // Exception vectors: every entry saves x0/x1, passes its index (0..15) and joins the common path.
    .macro VENTRY kind
    .balign 0x80
    sub     sp, sp, #560
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       __vector_common
    .endm

    .section .text.vectors, "ax"
    .balign 2048
    .global __vectors
__vectors:
    VENTRY 0
    VENTRY 1
    VENTRY 2
    VENTRY 3
    VENTRY 4
    VENTRY 5
    VENTRY 6
    VENTRY 7
    VENTRY 8
    VENTRY 9
    VENTRY 10
    VENTRY 11
    VENTRY 12
    VENTRY 13
    VENTRY 14
    VENTRY 15

    // Saves every caller-saved register (x0-x18, x30, FPSR/FPCR, q0-q7, q16-q31) around the Rust
    // handler; callee-saved registers are preserved by the handler itself.
__vector_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x30, [sp, #144]
    mrs     x1, fpsr
    mrs     x2, fpcr
    stp     x1, x2, [sp, #160]
    stp     q0, q1, [sp, #176]
    stp     q2, q3, [sp, #208]
    stp     q4, q5, [sp, #240]
    stp     q6, q7, [sp, #272]
    stp     q16, q17, [sp, #304]
    stp     q18, q19, [sp, #336]
    stp     q20, q21, [sp, #368]
    stp     q22, q23, [sp, #400]
    stp     q24, q25, [sp, #432]
    stp     q26, q27, [sp, #464]
    stp     q28, q29, [sp, #496]
    stp     q30, q31, [sp, #528]
    bl      test_guests_exception
    ldp     q30, q31, [sp, #528]
    ldp     q28, q29, [sp, #496]
    ldp     q26, q27, [sp, #464]
    ldp     q24, q25, [sp, #432]
    ldp     q22, q23, [sp, #400]
    ldp     q20, q21, [sp, #368]
    ldp     q18, q19, [sp, #336]
    ldp     q16, q17, [sp, #304]
    ldp     q6, q7, [sp, #272]
    ldp     q4, q5, [sp, #240]
    ldp     q2, q3, [sp, #208]
    ldp     q0, q1, [sp, #176]
    ldp     x1, x2, [sp, #160]
    msr     fpsr, x1
    msr     fpcr, x2
    ldp     x18, x30, [sp, #144]
    ldp     x16, x17, [sp, #128]
    ldp     x14, x15, [sp, #112]
    ldp     x12, x13, [sp, #96]
    ldp     x10, x11, [sp, #80]
    ldp     x8, x9, [sp, #64]
    ldp     x6, x7, [sp, #48]
    ldp     x4, x5, [sp, #32]
    ldp     x2, x3, [sp, #16]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #560
    eret
"#
);
