//! The image's first instructions: the arm64 Image header, then primary-CPU setup (stack, BSS,
//! vectors) before the first Rust code runs.

core::arch::global_asm!(
    r#"
.section .text.head, "ax"
.global _start
_start:
    // arm64 Image header (Documentation/arch/arm64/booting.rst): QEMU, U-Boot and the
    // Raspberry Pi firmware all load an image with this header the same way.
    b       primary_entry           // code0
    .long   0                       // code1
    .quad   0                       // text_offset: loaded at a 2 MiB-aligned base
    .quad   __image_size            // image_size, including BSS and stacks
    .quad   0x2                     // flags: little-endian, 4 KiB pages, base near start of RAM
    .quad   0, 0, 0                 // res2..res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5

primary_entry:
    msr     daifset, #0xf
    mov     x19, x0                 // the board's DTB
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    ldr     x2, =__stack_size
    add     sp, x1, x2              // CPU 0's stack is the first one
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
2:  cmp     x1, x2
    b.hs    3f
    stp     xzr, xzr, [x1], #16
    b       2b
3:  mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    4f                      // not entered at EL2: say so on the console, power off
    adrp    x1, el2_vectors
    add     x1, x1, :lo12:el2_vectors
    msr     vbar_el2, x1
    isb
    mov     x0, x19
    bl      boot_primary
4:  mov     x0, x19
    lsr     x1, x1, #2
    bl      boot_at_wrong_level
1:  wfe
    b       1b

// Secondary CPUs start here (PSCI CPU_ON) at EL2 with the MMU off and x0 = their CPU index.
.global secondary_entry
secondary_entry:
    msr     daifset, #0xf
    mov     x19, x0
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    ldr     x2, =__stack_size
    madd    x1, x2, x19, x1
    add     sp, x1, x2              // the top of stack number `index`
    adrp    x1, el2_vectors
    add     x1, x1, :lo12:el2_vectors
    msr     vbar_el2, x1
    isb
    mov     x0, x19
    bl      boot_secondary
    b       1b
"#
);

unsafe extern "C" {
    fn secondary_entry();
}

/// Most CPUs the image has stacks for (`MAX_CPUS` in the linker script).
pub const MAX_CPUS: usize = 8;

/// The physical address where secondary CPUs enter (x0 = their index).
pub fn secondary_entry_address() -> u64 {
    secondary_entry as *const () as u64
}

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// The physical range the hypervisor image occupies, stacks and BSS included.
pub fn image_range() -> crate::memory::PhysRange {
    // Only the addresses of the linker-defined symbols are taken, never their contents.
    let (start, end) = (
        &raw const __image_start as u64,
        &raw const __image_end as u64,
    );
    crate::memory::PhysRange { start, end }
}
