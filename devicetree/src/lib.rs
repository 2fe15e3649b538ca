//! Device tree support for the hypervisor: reads the host board's DTB into a typed [`Board`]
//! description and writes each guest's DTB for the instance platform ([`guest`]).

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod board;
pub mod fit;
pub mod guest;

use alloc::vec::Vec;
use core::fmt;

pub use board::{
    Board, Chosen, Cpu, EnableMethod, GicDescription, Psci, PsciMethod, TimerPpis, Uart, UartKind,
    VirtioMmio, dtb_total_size, earlycon_pl011, parse_board, raw_bootargs,
};

/// A physical address range `[base, base + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemRange {
    /// First byte of the range.
    pub base: u64,
    /// Length of the range in bytes.
    pub size: u64,
}

impl MemRange {
    /// Creates the range `[base, base + size)`.
    pub const fn new(base: u64, size: u64) -> Self {
        Self { base, size }
    }

    /// One past the last byte of the range (saturating at `u64::MAX`).
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }

    /// The parts of `self` not covered by `hole` (zero, one or two ranges).
    fn minus(self, hole: MemRange) -> impl Iterator<Item = MemRange> {
        let below = MemRange::new(
            self.base,
            hole.base.min(self.end()).saturating_sub(self.base),
        );
        let above_base = hole.end().max(self.base);
        let above = MemRange::new(above_base, self.end().saturating_sub(above_base));
        [below, above].into_iter().filter(|r| r.size != 0)
    }
}

/// Subtracts every range in `holes` from every range in `ranges`, splitting ranges as needed.
fn subtract(ranges: &[MemRange], holes: &[MemRange]) -> Vec<MemRange> {
    holes.iter().fold(ranges.to_vec(), |acc, &hole| {
        acc.into_iter().flat_map(|r| r.minus(hole)).collect()
    })
}

/// Errors from reading a host DTB or writing a guest DTB.
#[derive(Debug, PartialEq, Eq)]
pub enum DtError {
    /// The DTB header is missing, truncated or inconsistent.
    BadHeader(&'static str),
    /// The DTB's structure block is malformed.
    BadStructure(&'static str),
    /// A required node is absent.
    MissingNode(&'static str),
    /// A node lacks a required property.
    MissingProperty {
        /// Which node.
        node: &'static str,
        /// Which property.
        property: &'static str,
    },
    /// A property has an unexpected length or value.
    BadProperty {
        /// Which node.
        node: &'static str,
        /// Which property.
        property: &'static str,
    },
    /// The guest platform description cannot be turned into a DTB.
    InvalidGuest(&'static str),
    /// The DTB writer failed.
    Write(vm_fdt::Error),
}

impl DtError {
    /// `node` lacks `property`.
    pub(crate) const fn missing(node: &'static str, property: &'static str) -> Self {
        Self::MissingProperty { node, property }
    }

    /// `node` has a malformed `property`.
    pub(crate) const fn bad(node: &'static str, property: &'static str) -> Self {
        Self::BadProperty { node, property }
    }
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadHeader(why) => write!(f, "bad DTB header: {why}"),
            Self::BadStructure(why) => write!(f, "bad DTB structure: {why}"),
            Self::MissingNode(node) => write!(f, "no {node} node"),
            Self::MissingProperty { node, property } => write!(f, "{node} node has no {property}"),
            Self::BadProperty { node, property } => {
                write!(f, "{node} node has a malformed {property}")
            }
            Self::InvalidGuest(why) => write!(f, "invalid guest platform: {why}"),
            Self::Write(e) => write!(f, "writing the guest DTB failed: {e}"),
        }
    }
}

impl From<vm_fdt::Error> for DtError {
    fn from(e: vm_fdt::Error) -> Self {
        Self::Write(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn r(base: u64, size: u64) -> MemRange {
        MemRange::new(base, size)
    }

    #[test]
    fn subtract_disjoint_leaves_range() {
        assert_eq!(
            subtract(&[r(0x1000, 0x1000)], &[r(0x3000, 0x100)]),
            [r(0x1000, 0x1000)]
        );
        assert_eq!(
            subtract(&[r(0x1000, 0x1000)], &[r(0, 0x1000)]),
            [r(0x1000, 0x1000)]
        );
    }

    #[test]
    fn subtract_splits_in_the_middle() {
        assert_eq!(
            subtract(&[r(0x1000, 0x1000)], &[r(0x1400, 0x100)]),
            [r(0x1000, 0x400), r(0x1500, 0xb00)]
        );
    }

    #[test]
    fn subtract_trims_edges_and_removes_covered() {
        assert_eq!(
            subtract(&[r(0x1000, 0x1000)], &[r(0x800, 0x1000)]),
            [r(0x1800, 0x800)]
        );
        assert_eq!(
            subtract(&[r(0x1000, 0x1000)], &[r(0x1800, 0x1000)]),
            [r(0x1000, 0x800)]
        );
        assert_eq!(subtract(&[r(0x1000, 0x1000)], &[r(0, 0x4000)]), []);
        assert_eq!(subtract(&[r(0x1000, 0x1000)], &[r(0x1000, 0x1000)]), []);
    }

    #[test]
    fn subtract_many_holes_over_many_ranges() {
        let mem = [r(0, 0x1_0000), r(0x10_0000, 0x1_0000)];
        let holes = [r(0, 0x1000), r(0x8000, 0x1000), r(0xf000, 0xf_2000)];
        assert_eq!(
            subtract(&mem, &holes),
            [r(0x1000, 0x7000), r(0x9000, 0x6000), r(0x10_1000, 0xf000)]
        );
    }

    #[test]
    fn subtract_handles_top_of_address_space() {
        let top = r(u64::MAX - 0xfff, 0x1000);
        assert_eq!(
            subtract(&[top], &[r(u64::MAX - 0x7ff, 0x800)]),
            [r(u64::MAX - 0xfff, 0x800)]
        );
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            alloc::format!("{}", DtError::MissingNode("/memory")),
            "no /memory node"
        );
        let e = DtError::missing("GIC", "reg");
        assert_eq!(alloc::format!("{e}"), "GIC node has no reg");
        assert_eq!(
            alloc::format!("{}", DtError::BadHeader("bad magic")),
            "bad DTB header: bad magic"
        );
    }
}
