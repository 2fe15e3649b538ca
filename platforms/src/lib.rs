//! The boards the hypervisor runs on. Each board is one module that turns the board description
//! read from the device tree into a [`Platform`]: its console, how it powers off, and how
//! secondary CPUs start. Adding a board is adding one module.
#![cfg_attr(not(test), no_std)]

pub mod pl011;
mod qemu_virt;
mod rpi4;

use devicetree::Board;

/// Where the early console is when neither the device tree nor an `earlycon=pl011,ADDRESS` boot
/// argument says: the PL011 of QEMU virt. Only a refusal to boot is written there.
pub const FALLBACK_CONSOLE: u64 = 0x0900_0000;

/// How the hypervisor reaches the board's PSCI firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    /// SMC to EL3 firmware (QEMU virt with virtualization=on, most servers).
    Smc,
    /// HVC to a hypervisor above: only where this image was entered at EL1 by mistake and
    /// must still power the board off.
    Hvc,
}

impl From<devicetree::PsciMethod> for PsciConduit {
    fn from(method: devicetree::PsciMethod) -> Self {
        match method {
            devicetree::PsciMethod::Smc => Self::Smc,
            devicetree::PsciMethod::Hvc => Self::Hvc,
        }
    }
}

/// How secondary CPUs are started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecondaryStart {
    /// PSCI CPU_ON through the board's conduit.
    Psci(PsciConduit),
    /// Each CPU waits on its `cpu-release-addr` (device tree): write the entry point there,
    /// then SEV (Raspberry Pi 4).
    SpinTable,
}

/// How the board powers off and resets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoardPower {
    /// PSCI SYSTEM_OFF and SYSTEM_RESET through the conduit.
    Psci(PsciConduit),
    /// The BCM2835-family power-management watchdog at `base`: a full reset, with the "halt"
    /// partition (63) for power-off, which the Raspberry Pi firmware honours by halting.
    PmWatchdog {
        /// Base of the PM block (`PM_RSTC` at +0x1c, `PM_RSTS` +0x20, `PM_WDOG` +0x24).
        base: u64,
    },
    /// No way to power off: the CPUs stop (after the last line on the console).
    Halt,
}

/// A board UART the hypervisor drives (always an ARM PL011).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleUart {
    /// Physical base address of the PL011.
    pub base: u64,
    /// Its interrupt (GIC INTID), if it has one the hypervisor can take.
    pub irq: Option<u32>,
}

/// What the hypervisor needs to know about the board it runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Platform {
    /// Human-readable board name.
    pub name: &'static str,
    /// The console UART: log lines, guest consoles and the management shell.
    pub console: ConsoleUart,
    /// A second PL011 where the management shell answers in JSON, if the board has one free.
    pub management: Option<ConsoleUart>,
    /// How the board powers off.
    pub power: BoardPower,
    /// How secondary CPUs start.
    pub secondary_start: SecondaryStart,
}

/// The PL011 `uart` as a hypervisor UART, if it is one.
fn pl011(uart: Option<&devicetree::Uart>) -> Option<ConsoleUart> {
    uart.filter(|uart| uart.kind == devicetree::UartKind::Pl011)
        .map(|uart| ConsoleUart {
            base: uart.base,
            irq: uart.irq,
        })
}

/// Why the board cannot be run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlatformError {
    /// No module knows the board's root `compatible`.
    UnknownBoard,
    /// The board is known but its device tree lacks something the hypervisor needs.
    Missing(&'static str),
}

impl core::fmt::Display for PlatformError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::UnknownBoard => write!(f, "unsupported board (root compatible not recognised)"),
            Self::Missing(what) => write!(f, "device tree has no {what}"),
        }
    }
}

/// Picks the board module that recognises `board`.
pub fn detect(board: &Board) -> Result<Platform, PlatformError> {
    if qemu_virt::matches(board) {
        return qemu_virt::platform(board);
    }
    if rpi4::matches(board) {
        return rpi4::platform(board);
    }
    Err(PlatformError::UnknownBoard)
}
