//! The GICv2 distributor register frame (4 KiB, `GICD_*` of a GICv2 without the security
//! extensions) as one vCPU sees it: INTIDs 0..31 are that vCPU's own SGIs and PPIs, the rest
//! the shared SPIs.
//!
//! SGI sources are not tracked: a pending SGI reads in `CPENDSGIR`/`SPENDSGIR` as pending from
//! CPU 0 only, any source bit written sets or clears the accessing vCPU's SGI latch, and
//! `GICD_SGIR` does not record the sender (list registers get CPUID 0).

use core::ops::Range;

use crate::distributor::{GICD_IIDR, GICD_TYPER, IIDR, id_reg};
use crate::{Bank, Shape, Vgic, regs};

const GICD_CTLR: u64 = 0x000;
const GICD_SGIR: u64 = 0xf00;
const GICD_CPENDSGIR: u64 = 0xf10;
const GICD_SPENDSGIR: u64 = 0xf20;
/// One past the last `SPENDSGIR`.
const SGI_PENDING_END: u64 = 0xf30;
/// `GICD_PIDR4`, start of the identification registers (up to `GICD_CIDR3` at 0xFFC).
pub(crate) const ID_REGS: u64 = 0xfd0;
/// Size of the frame.
const FRAME_SIZE: u64 = 0x1000;

/// `GICD_TYPER.CPUNumber` shift (number of CPU interfaces - 1).
const TYPER_CPU_NUMBER_SHIFT: u32 = 5;

/// PIDR4..7, PIDR0..3, CIDR0..3 of a GIC-400 distributor (Arm, ArchRev 2).
const GICD_IDS: [u8; 12] = [
    0x04, 0x00, 0x00, 0x00, 0x90, 0xb4, 0x2b, 0x00, 0x0d, 0xf0, 0x05, 0xb1,
];

/// The bytes of an access to a byte-accessible register: `size` when it is 1 or 4 and `offset`
/// is aligned to it.
fn byte_lanes(offset: u64, size: u8) -> Option<u32> {
    ((size == 1 || size == 4) && offset.is_multiple_of(u64::from(size))).then_some(u32::from(size))
}

impl Vgic {
    /// A read by vCPU `vcpu` of `size` bytes at `offset` in the GICv2 distributor frame.
    ///
    /// Word registers take 32-bit accesses; `IPRIORITYR`, `ITARGETSR`, `CPENDSGIR` and
    /// `SPENDSGIR` also bytes. INTIDs 0..31 of the per-interrupt registers are `vcpu`'s own;
    /// `ITARGETSR0..7` read `vcpu`'s own bit in every byte. `GICD_SGIR` is write-only. Anything
    /// else, an unknown vCPU, and every register of a GICv3 read as zero.
    pub fn distributor_v2_read(&self, vcpu: usize, offset: u64, size: u8) -> u64 {
        if self.shape != Shape::V2 || vcpu >= self.vcpus.len() || offset >= FRAME_SIZE {
            return 0;
        }
        if (regs::ITARGETSR..regs::ICFGR).contains(&offset) {
            let first = (offset - regs::ITARGETSR) as u32;
            return self.read_bytes(offset, size, |v, i| v.itargetsr(vcpu, first + i));
        }
        if (regs::IGROUPR..regs::END).contains(&offset) {
            return self.irq_regs_read(Bank::V2(vcpu), offset, size);
        }
        if (GICD_CPENDSGIR..SGI_PENDING_END).contains(&offset) {
            let first = ((offset - GICD_CPENDSGIR) % 16) as u32;
            return self.read_bytes(offset, size, |v, i| {
                // Pending "from CPU 0": sources are not tracked.
                v.irq(vcpu, first + i)
                    .map_or(0, |irq| u8::from(irq.is_pending()))
            });
        }
        if offset >= ID_REGS {
            return id_reg(&GICD_IDS, offset - ID_REGS, size);
        }
        if size != 4 || !offset.is_multiple_of(4) {
            return 0;
        }
        u64::from(match offset {
            GICD_CTLR => self.ctlr,
            GICD_TYPER => {
                (self.num_spis / 32) | ((self.vcpus.len() as u32 - 1) << TYPER_CPU_NUMBER_SHIFT)
            }
            GICD_IIDR => IIDR,
            _ => 0,
        })
    }

    /// A write by vCPU `vcpu` of `size` bytes at `offset` in the GICv2 distributor frame, with
    /// the access rules of [`Vgic::distributor_v2_read`]; read-only and reserved registers (and
    /// a GICv3) ignore it.
    ///
    /// Returns the bitmask of vCPUs to kick: for `GICD_SGIR`, the targets whose SGI latch was
    /// newly set (as [`Vgic::send_sgi`], enabled or not); for a `GICD_CTLR` write that enables a
    /// group, the vCPUs with a pending, enabled interrupt of that group; otherwise the owners of
    /// the interrupts this write made pending and forwardable, or moved to another vCPU while
    /// they are (`ISPENDR`, `SPENDSGIR`, `ISENABLER`, `IGROUPR`, `ICFGR`, `ITARGETSR`,
    /// `ICACTIVER` of an SPI active elsewhere).
    ///
    /// `GICD_SGIR`: TargetListFilter \[25:24\] (0: CPUTargetList \[23:16\], 1: every vCPU but
    /// `vcpu`, 2: `vcpu` only, 3: nobody), SGIINTID \[3:0\]; sent whatever the SGI's group (NSATT
    /// is ignored: no security extensions).
    pub fn distributor_v2_write(&mut self, vcpu: usize, offset: u64, size: u8, value: u64) -> u64 {
        if self.shape != Shape::V2 || vcpu >= self.vcpus.len() || offset >= FRAME_SIZE {
            return 0;
        }
        if offset == GICD_CTLR {
            return self.write_ctlr_v2(size, value);
        }
        if offset == GICD_SGIR {
            if size != 4 {
                return 0;
            }
            let (targets, sgi) = self.sgir(vcpu, value);
            return self.latch_sgi(targets, sgi as usize, false);
        }
        let touched = Self::touched_v2(offset, size);
        self.write_and_kick(vcpu, touched, |v| {
            if (regs::ITARGETSR..regs::ICFGR).contains(&offset) {
                let first = (offset - regs::ITARGETSR) as u32;
                v.write_bytes(offset, size, value, |v, i, byte| {
                    v.write_itargetsr(first + i, byte);
                });
            } else if (regs::IGROUPR..regs::END).contains(&offset) {
                v.irq_regs_write(Bank::V2(vcpu), offset, size, value);
            } else if (GICD_CPENDSGIR..SGI_PENDING_END).contains(&offset) {
                let set = offset >= GICD_SPENDSGIR;
                let first = ((offset - GICD_CPENDSGIR) % 16) as u32;
                v.write_bytes(offset, size, value, |v, i, byte| {
                    if byte != 0 {
                        v.set_sgi_pending(vcpu, first + i, set);
                    }
                });
            }
        })
    }

    /// Reads a byte-accessible register: `byte(self, i)` gives byte `i` of the access.
    fn read_bytes(&self, offset: u64, size: u8, byte: impl Fn(&Self, u32) -> u8) -> u64 {
        byte_lanes(offset, size).map_or(0, |lanes| {
            (0..lanes).fold(0, |acc, i| acc | u64::from(byte(self, i)) << (8 * i))
        })
    }

    /// Writes a byte-accessible register: `write(self, i, byte)` for each byte of the access.
    fn write_bytes(
        &mut self,
        offset: u64,
        size: u8,
        value: u64,
        mut write: impl FnMut(&mut Self, u32, u8),
    ) {
        for i in 0..byte_lanes(offset, size).unwrap_or(0) {
            write(self, i, (value >> (8 * i)) as u8);
        }
    }

    /// `GICD_CTLR` write: the group enables. Returns the vCPUs to kick.
    fn write_ctlr_v2(&mut self, size: u8, value: u64) -> u64 {
        if size != 4 {
            return 0;
        }
        self.write_group_enables(value as u32)
    }

    /// The INTIDs (of the accessing vCPU's view) a write at `offset` can make pending and
    /// forwardable, or move to another vCPU.
    fn touched_v2(offset: u64, size: u8) -> Range<u32> {
        if (GICD_SPENDSGIR..SGI_PENDING_END).contains(&offset) {
            let first = ((offset - GICD_SPENDSGIR) % 16) as u32;
            return first..first + u32::from(size.min(4));
        }
        Self::irq_regs_touched(offset, size)
    }

    /// The target vCPUs and the SGI of a `GICD_SGIR` write by `sender`.
    fn sgir(&self, sender: usize, value: u64) -> (u64, u32) {
        let all = u64::from(self.v2_cpu_mask());
        let targets = match (value >> 24) & 3 {
            0 => (value >> 16) & all,
            1 => all & !(1 << sender),
            2 => 1 << sender,
            _ => 0,
        };
        (targets, (value & 0xf) as u32)
    }

    /// Byte `intid` of `ITARGETSR` as `vcpu` reads it.
    fn itargetsr(&self, vcpu: usize, intid: u32) -> u8 {
        if intid < 32 {
            1 << vcpu
        } else {
            self.spis
                .get(intid as usize - 32)
                .map_or(0, |spi| spi.targets)
        }
    }

    /// Writes byte `intid` of `ITARGETSR` (SPIs only: the others are read-only).
    fn write_itargetsr(&mut self, intid: u32, byte: u8) {
        let Some(index) = (intid as usize).checked_sub(32) else {
            return;
        };
        let targets = byte & self.v2_cpu_mask();
        if let Some(spi) = self.spis.get_mut(index) {
            spi.targets = targets;
            self.route_spi(index, Self::v2_target(targets));
            self.mark_spi(index);
        }
    }

    /// Sets (`SPENDSGIR`) or clears (`CPENDSGIR`) the pending latch of `vcpu`'s SGI `sgi`.
    fn set_sgi_pending(&mut self, vcpu: usize, sgi: u32, set: bool) {
        let Some(irq) = self.irq_mut(vcpu, sgi) else {
            return;
        };
        irq.latch = set;
        if !set && let Some(f) = &mut irq.in_lr {
            f.pending = false;
        }
        self.mark(vcpu, sgi);
    }
}
