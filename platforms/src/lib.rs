//! The boards the hypervisor runs on. Each board is one module that turns the board description
//! read from the device tree into a [`Platform`]: its console, how the hypervisor calls firmware
//! (PSCI conduit), and how secondary CPUs start. Adding a board is adding one module.
#![cfg_attr(not(test), no_std)]

pub mod pl011;
mod qemu_virt;

use devicetree::Board;

/// Where the early console is when neither the device tree nor an `earlycon=pl011,ADDRESS` boot
/// argument says: the PL011 of QEMU virt, the one board so far. Only a refusal to boot is
/// written there.
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
    Psci,
}

/// The board console the hypervisor logs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleUart {
    /// Physical base address of an ARM PL011.
    pub base: u64,
}

/// What the hypervisor needs to know about the board it runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Platform {
    /// Human-readable board name.
    pub name: &'static str,
    /// The console UART.
    pub console: ConsoleUart,
    /// The PSCI conduit for SYSTEM_OFF, CPU_ON and friends.
    pub psci: PsciConduit,
    /// How secondary CPUs start.
    pub secondary_start: SecondaryStart,
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
    Err(PlatformError::UnknownBoard)
}
