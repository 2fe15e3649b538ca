//! The GICv3 distributor register frame (64 KiB, `GICD_*`).

use alloc::vec::Vec;

use crate::regs;
use crate::{AFFINITY_MASK, Bank, ConstantRead, IROUTER_IRM, Shape, Vgic};

const GICD_CTLR: u64 = 0x0;
pub(crate) const GICD_TYPER: u64 = 0x4;
pub(crate) const GICD_IIDR: u64 = 0x8;
const GICD_IROUTER: u64 = 0x6000;
const GICD_IROUTER_END: u64 = 0x8000;
/// `GICD_PIDR4`, start of the identification registers (up to `GICD_CIDR3` at 0xFFFC).
pub(crate) const ID_REGS: u64 = 0xffd0;

/// `GICD_CTLR.ARE_NS` (RAO/WI: affinity routing only).
const CTLR_ARE: u32 = 1 << 4;
/// `GICD_CTLR.DS` (RAO/WI: single security state).
const CTLR_DS: u32 = 1 << 6;
/// Implementer Arm (JEP106 0x43B), product 0, revision 0.
pub(crate) const IIDR: u32 = 0x0000_043b;
/// `GICD_TYPER.IDbits`: 10 INTID bits.
const TYPER_IDBITS: u32 = 9 << 19;
/// `GICD_TYPER.A3V`: Aff3 supported.
const TYPER_A3V: u32 = 1 << 24;
/// `GICD_TYPER.RSS`: SGI targets with Aff0 0..255 (range selector).
const TYPER_RSS: u32 = 1 << 26;
/// `GICD_IROUTER` bits that hold state: Aff3, IRM, Aff2, Aff1, Aff0.
pub(crate) const IROUTER_MASK: u64 = AFFINITY_MASK | IROUTER_IRM;

/// PIDR4..7, PIDR0..3, CIDR0..3 of the distributor (as QEMU's GICv3: Arm, ArchRev 3).
const GICD_IDS: [u8; 12] = [
    0x44, 0x00, 0x00, 0x00, 0x92, 0xb4, 0x3b, 0x00, 0x0d, 0xf0, 0x05, 0xb1,
];

/// One identification register from a table of 12 (PIDR4..7, PIDR0..3, CIDR0..3); `offset` is
/// the register's offset from `PIDR4`.
pub(crate) fn id_reg(ids: &[u8; 12], offset: u64, size: u8) -> u64 {
    if size != 4 || !offset.is_multiple_of(4) {
        return 0;
    }
    ids.get((offset / 4) as usize).map_or(0, |&b| u64::from(b))
}

impl Vgic {
    /// The distributor registers whose values never change for this vGIC (`GICD_TYPER`,
    /// `GICD_IIDR` and the identification registers), as their 32-bit reads.
    pub fn distributor_constants(&self) -> Vec<ConstantRead> {
        let ids = match self.shape {
            Shape::V3 => ID_REGS,
            Shape::V2 => crate::distributor_v2::ID_REGS,
        };
        [GICD_TYPER, GICD_IIDR]
            .into_iter()
            .chain((0..12).map(|index| ids + 4 * index))
            .map(|offset| ConstantRead {
                offset,
                size: 4,
                value: match self.shape {
                    Shape::V3 => self.distributor_read(offset, 4),
                    Shape::V2 => self.distributor_v2_read(0, offset, 4),
                },
            })
            .collect()
    }

    /// A guest read of `size` bytes at `offset` in the GICv3 distributor frame. Word registers
    /// take 32-bit accesses, `IPRIORITYR` also bytes, `IROUTER` 64-bit or 32-bit halves; anything
    /// else (and any reserved or out-of-range register, and every register of a GICv2) reads as
    /// zero.
    pub fn distributor_read(&self, offset: u64, size: u8) -> u64 {
        if self.shape != Shape::V3 {
            return 0;
        }
        if (GICD_IROUTER..GICD_IROUTER_END).contains(&offset) {
            return match self.irouter_access(offset, size) {
                Some((spi, None)) => self.spis[spi].irouter,
                Some((spi, Some(high))) => {
                    (self.spis[spi].irouter >> if high { 32 } else { 0 }) & 0xffff_ffff
                }
                None => 0,
            };
        }
        if (regs::IGROUPR..regs::END).contains(&offset) {
            return self.irq_regs_read(Bank::Dist, offset, size);
        }
        if offset >= ID_REGS {
            return id_reg(&GICD_IDS, offset - ID_REGS, size);
        }
        if size != 4 || !offset.is_multiple_of(4) {
            return 0;
        }
        u64::from(match offset {
            GICD_CTLR => self.ctlr | CTLR_ARE | CTLR_DS,
            GICD_TYPER => (self.num_spis / 32) | TYPER_IDBITS | TYPER_A3V | TYPER_RSS,
            GICD_IIDR => IIDR,
            _ => 0,
        })
    }

    /// A guest write of `size` bytes at `offset` in the GICv3 distributor frame, with the access
    /// rules of [`Vgic::distributor_read`]; read-only and reserved registers (and a GICv2)
    /// ignore it.
    ///
    /// Returns the bitmask of vCPUs to kick: the owners of the SPIs this write made pending and
    /// forwardable or routed elsewhere while they are (`ISPENDR`, `ISENABLER`, `IGROUPR`,
    /// `ICFGR`, `IROUTER`, ...), and for a `GICD_CTLR` write that enables a group the vCPUs with
    /// a pending, enabled interrupt of it.
    pub fn distributor_write(&mut self, offset: u64, size: u8, value: u64) -> u64 {
        if self.shape != Shape::V3 {
            return 0;
        }
        if (GICD_IROUTER..GICD_IROUTER_END).contains(&offset) {
            let Some((spi, half)) = self.irouter_access(offset, size) else {
                return 0;
            };
            let intid = spi as u32 + 32;
            self.write_and_kick(0, intid..intid + 1, |v| {
                let old = v.spis[spi].irouter;
                let new = match half {
                    None => value,
                    Some(false) => (old & !0xffff_ffff) | (value & 0xffff_ffff),
                    Some(true) => (old & 0xffff_ffff) | (value << 32),
                } & IROUTER_MASK;
                let target = v.resolve_route(new);
                v.spis[spi].irouter = new;
                v.route_spi(spi, target);
                v.mark_spi(spi);
            })
        } else if (regs::IGROUPR..regs::END).contains(&offset) {
            self.write_and_kick(0, Self::irq_regs_touched(offset, size), |v| {
                v.irq_regs_write(Bank::Dist, offset, size, value)
            })
        } else if offset == GICD_CTLR && size == 4 {
            self.write_group_enables(value as u32)
        } else {
            0
        }
    }

    /// Decodes an `IROUTER` access: the SPI index and `None` for a 64-bit access, or
    /// `Some(high half)` for a 32-bit one.
    fn irouter_access(&self, offset: u64, size: u8) -> Option<(usize, Option<bool>)> {
        let spi = ((offset - GICD_IROUTER) / 8).checked_sub(32)?;
        if spi >= u64::from(self.num_spis) {
            return None;
        }
        match size {
            8 if offset.is_multiple_of(8) => Some((spi as usize, None)),
            4 if offset.is_multiple_of(4) => Some((spi as usize, Some(offset % 8 == 4))),
            _ => None,
        }
    }
}
