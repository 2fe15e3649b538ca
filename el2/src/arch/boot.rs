//! The image's first instructions: the arm64 Image header, the relocation pass, then primary-CPU
//! setup (stack, BSS, vectors) before the first Rust code runs.
//!
//! The image is a position-independent executable linked at address 0 and runs wherever the
//! board's loader put it (QEMU virt at 0x4020_0000, the Raspberry Pi firmware at 0x8_0000,
//! U-Boot at any 2 MiB boundary). Code reaches everything PC-relative; the only absolute
//! addresses are the pointers in `.rodata`/`.data` that the linker lists in `.rela.dyn`, and the
//! entry code adds the load address to each before anything reads them. The EL2 map is an
//! identity map, so the relocated addresses stay right after the MMU is on.

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
    .quad   0xa                     // flags: little-endian, 4 KiB pages, anywhere in RAM
    .quad   0, 0, 0                 // res2..res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5

primary_entry:
    msr     daifset, #0xf
    mov     x19, x0                 // the board's DTB
    bl      reset_el2_control
    // The loader cleaned the image to PoC but may have left clean lines of it in the caches:
    // invalidate them, so that what is written here with the caches off (relocations, BSS,
    // the stack) is not shadowed by stale lines once the caches are on.
    adr     x1, _start
    adrp    x2, __image_end
    add     x2, x2, :lo12:__image_end
    mrs     x3, ctr_el0
    ubfx    x3, x3, #16, #4         // DminLine: log2 of the line size in words
    mov     x4, #4
    lsl     x4, x4, x3
8:  dc      ivac, x1
    add     x1, x1, x4
    cmp     x1, x2
    b.lo    8b
    dsb     sy
    // Relocate: linked at 0, so the load address is the offset to add. A static PIE has
    // only R_AARCH64_RELATIVE entries (no symbols to look up): *(base + offset) = base + addend.
    adr     x20, _start
    adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
5:  cmp     x1, x2
    b.hs    6f
    ldp     x3, x4, [x1], #16       // r_offset, r_info
    ldr     x5, [x1], #8            // r_addend
    cmp     x4, #1027               // R_AARCH64_RELATIVE, symbol 0
    b.ne    1f                      // the linker made something this pass cannot apply: stop
    add     x5, x5, x20
    str     x5, [x3, x20]
    b       5b
6:
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
    bl      reset_el2_control
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

// SCTLR_EL2 is UNKNOWN out of reset on real hardware (endianness, alignment checks, WXN):
// its RES1 bits only (MMU and caches off, little-endian), as Linux does, until mmu::enable.
// Clobbers x1 only; harmless at EL1 (the wrong-level path), where the register does not exist
// and the write is UNDEFINED: so it is skipped there.
reset_el2_control:
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    7f
    ldr     x1, =0x30c50830
    msr     sctlr_el2, x1
    isb
7:  ret

// Secondary CPUs released from a spin table come here with x0 = 0 and their caches off; the
// boot CPU releases one at a time and leaves its index in SPIN_TABLE_INDEX (cleaned to PoC).
.global spin_table_entry
spin_table_entry:
    adrp    x0, {index}
    ldr     x0, [x0, :lo12:{index}]
    b       secondary_entry
"#,
    index = sym SPIN_TABLE_INDEX,
);

/// The index of the CPU the boot CPU is releasing from the spin table.
static SPIN_TABLE_INDEX: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

unsafe extern "C" {
    fn secondary_entry();
    fn spin_table_entry();
}

/// Most CPUs the image has stacks for (`MAX_CPUS` in the linker script).
pub const MAX_CPUS: usize = 8;

/// The physical address where secondary CPUs enter (x0 = their index).
pub fn secondary_entry_address() -> u64 {
    secondary_entry as *const () as u64
}

/// The physical address where a CPU released from a spin table enters, and makes it CPU
/// `index` for the next CPU released (its caches are off: the index is cleaned to PoC).
pub fn spin_table_entry_for(index: usize) -> u64 {
    SPIN_TABLE_INDEX.store(index as u64, core::sync::atomic::Ordering::SeqCst);
    super::clean_to_poc(&raw const SPIN_TABLE_INDEX as u64, 8);
    spin_table_entry as *const () as u64
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
