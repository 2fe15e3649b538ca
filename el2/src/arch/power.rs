//! Powering the board off, and starting its secondary CPUs, the way its platform says.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::ReadWrite;

use platforms::BoardPower;

use crate::arch::psci;

/// The password every PM register write carries in its top byte.
const PM_PASSWORD: u32 = 0x5a00_0000;
/// `PM_RSTC.WRCFG` field.
const PM_RSTC_WRCFG_MASK: u32 = 0x30;
/// `PM_RSTC.WRCFG`: full reset when the watchdog expires.
const PM_RSTC_WRCFG_FULL_RESET: u32 = 0x20;
/// `PM_RSTS` partition 63 (its bits spread over the even positions): the Raspberry Pi firmware
/// halts instead of booting again (what Linux's bcm2835 watchdog driver writes to power off).
const PM_RSTS_HALT: u32 = 0x555;
/// Watchdog ticks (16 µs each) before the reset.
const PM_WDOG_TICKS: u32 = 10;

register_structs! {
    /// The BCM2835-family power-management watchdog registers.
    PmWatchdog {
        (0x00 => _reserved),
        (0x1c => rstc: ReadWrite<u32>),
        (0x20 => rsts: ReadWrite<u32>),
        (0x24 => wdog: ReadWrite<u32>),
        (0x28 => @END),
    }
}

/// Powers the board off through `power`; parks the CPU if that returns (or there is no way).
pub fn off(power: BoardPower) -> ! {
    match power {
        BoardPower::Psci(conduit) => psci::system_off(conduit),
        BoardPower::PmWatchdog { base } => {
            // SAFETY: `base` is the board's PM block (its platform module), device-mapped by
            // the identity map; nothing else uses it.
            let pm = unsafe { &*(base as *const PmWatchdog) };
            pm.rsts.set(PM_PASSWORD | pm.rsts.get() | PM_RSTS_HALT);
            pm.wdog.set(PM_PASSWORD | PM_WDOG_TICKS);
            pm.rstc.set(
                PM_PASSWORD | (pm.rstc.get() & !PM_RSTC_WRCFG_MASK) | PM_RSTC_WRCFG_FULL_RESET,
            );
        }
        BoardPower::Halt => {}
    }
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// Releases a CPU that waits on the spin table at `release_addr` to `entry`: the address is
/// written and cleaned to where the waiting CPU (caches off) reads it, then SEV wakes it.
pub fn release_from_spin_table(release_addr: u64, entry: u64) {
    // SAFETY: the release address is the CPU's `cpu-release-addr` from the board's device tree,
    // in the memory reservation the firmware made for the spin table; only the waiting CPU
    // reads it.
    unsafe { core::ptr::write_volatile(release_addr as *mut u64, entry) };
    super::clean_to_poc(release_addr, 8);
    aarch64_cpu::asm::sev();
}
