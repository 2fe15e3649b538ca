//! Runtime of the bare-metal test guests: arm64 Image entry, EL1 identity map, exception vectors,
//! PL011 console, SMCCC/PSCI calls and PASS/FAIL reporting; a GIC driver (GICv3 or GICv2, as the
//! device tree says) with an IRQ vector, the generic timers, SMP (secondaries through PSCI CPU_ON,
//! per-CPU stacks, barrier, lock) and a few device tree queries (RAM, model, bootargs).
//!
//! A guest binary defines `fn main(dtb: usize) -> !` and registers it with [`entry!`].
#![cfg(target_os = "none")]
#![no_std]

mod boot;
pub mod console;
pub mod dt;
pub mod exception;
pub mod gic;
pub mod irq;
pub mod report;
pub mod smccc;
pub mod smp;
pub mod timer;

pub use exception::{ExceptionRecord, take_exception};
pub use report::{check, fail, finish, pass};
pub use smccc::{hvc_call, smc_call, system_off};

unsafe extern "Rust" {
    /// The guest's entry, defined by [`entry!`] in the binary.
    fn guest_main(dtb: usize) -> !;
}

/// Registers `$main: fn(usize) -> !` as the guest entry; it receives the DTB address (x0 at boot).
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// Guest entry, called by the runtime once the MMU and console are up.
        #[unsafe(no_mangle)]
        fn guest_main(dtb: usize) -> ! {
            $main(dtb)
        }
    };
}

/// First Rust code, called from the boot assembly with the MMU and caches on.
#[unsafe(no_mangle)]
extern "C" fn test_guests_rust_start(dtb: usize) -> ! {
    console::init_from_dt(dtb);
    // SAFETY: `guest_main` is defined by the binary through `entry!` with this exact signature.
    unsafe { guest_main(dtb) }
}

/// Address of the first byte after the image footprint (BSS and stack included).
pub fn image_end() -> usize {
    unsafe extern "C" {
        static _end: u8;
    }
    // Only the address of the linker-script symbol is taken; it is never read.
    core::ptr::addr_of!(_end) as usize
}

/// Volatile 32-bit read from a physical (identity-mapped) address; it may fault.
///
/// One plain `ldr` (as Linux's `readl`): a load with writeback, which the compiler may pick
/// for a volatile read in a loop, gives a hypervisor no instruction syndrome to emulate it by.
///
/// # Safety
/// `addr` must be 4-byte aligned and reading it must not break anything the guest relies on (a
/// synchronous abort is fine: the vectors record it and skip the access).
#[inline(always)]
pub unsafe fn mmio_read32(addr: usize) -> u32 {
    let value: u32;
    // SAFETY: guaranteed by the caller; the asm reads the one word at `addr`.
    unsafe {
        core::arch::asm!("ldr {v:w}, [{a}]", v = out(reg) value, a = in(reg) addr, options(nostack))
    };
    value
}

/// Volatile 32-bit write to a physical (identity-mapped) address; it may fault. One plain
/// `str`, as [`mmio_read32`] is one `ldr`.
///
/// # Safety
/// As for [`mmio_read32`], for a write.
#[inline(always)]
pub unsafe fn mmio_write32(addr: usize, value: u32) {
    // SAFETY: guaranteed by the caller; the asm writes the one word at `addr`.
    unsafe {
        core::arch::asm!("str {v:w}, [{a}]", v = in(reg) value, a = in(reg) addr, options(nostack))
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("FAIL: panic: {info}");
    system_off()
}
