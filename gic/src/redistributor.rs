//! The redistributor frames of each vCPU of a GICv3 (`RD_base` then `SGI_base` at +64 KiB,
//! `GICR_*`).

use crate::distributor::{ID_REGS, IIDR, id_reg};
use alloc::vec::Vec;

use crate::{Bank, ConstantRead, Shape, Vgic, regs};

const GICR_IIDR: u64 = 0x4;
const GICR_TYPER: u64 = 0x8;
const GICR_WAKER: u64 = 0x14;
/// Offset of the SGI frame.
const SGI_BASE: u64 = 0x1_0000;
/// Size of one vCPU's redistributor (two 64 KiB frames).
const FRAME_SIZE: u64 = 0x2_0000;

/// `GICR_TYPER.Last`.
const TYPER_LAST: u64 = 1 << 4;
/// `GICR_WAKER.ProcessorSleep`.
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
/// `GICR_WAKER.ChildrenAsleep`.
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

/// PIDR4..7, PIDR0..3, CIDR0..3 of a redistributor (as QEMU's GICv3: Arm, ArchRev 3).
const GICR_IDS: [u8; 12] = [
    0x44, 0x00, 0x00, 0x00, 0x93, 0xb4, 0x3b, 0x00, 0x0d, 0xf0, 0x05, 0xb1,
];

impl Vgic {
    /// A guest read of `size` bytes at `offset` in `vcpu`'s redistributor (0..0x2_0000:
    /// `RD_base`, then `SGI_base` at 0x1_0000). `GICR_TYPER` takes 64-bit or 32-bit halves,
    /// `IPRIORITYR` bytes or words, the others words; anything else, an unknown vCPU and
    /// reserved registers (`GICR_CTLR`, `STATUSR`, `PROPBASER`, `PENDBASER`, `IGRPMODR0`,
    /// `NSACR`, ...) read as zero, as does everything on a GICv2 (which has no redistributors).
    pub fn redistributor_read(&self, vcpu: usize, offset: u64, size: u8) -> u64 {
        if self.shape != Shape::V3 || vcpu >= self.vcpus.len() || offset >= FRAME_SIZE {
            return 0;
        }
        if offset >= SGI_BASE {
            let offset = offset - SGI_BASE;
            if (regs::IGROUPR..regs::END).contains(&offset) {
                return self.irq_regs_read(Bank::Redist(vcpu), offset, size);
            }
            return 0;
        }
        if offset >= ID_REGS {
            return id_reg(&GICR_IDS, offset - ID_REGS, size);
        }
        match (offset, size) {
            (GICR_TYPER, 8) => self.gicr_typer(vcpu),
            (GICR_TYPER, 4) => self.gicr_typer(vcpu) & 0xffff_ffff,
            (0xc, 4) => self.gicr_typer(vcpu) >> 32,
            (GICR_IIDR, 4) => u64::from(IIDR),
            (GICR_WAKER, 4) => u64::from(if self.vcpus[vcpu].sleep {
                WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP
            } else {
                0
            }),
            _ => 0,
        }
    }

    /// A guest write of `size` bytes at `offset` in `vcpu`'s redistributor, with the access
    /// rules of [`Vgic::redistributor_read`]. Only `GICR_WAKER.ProcessorSleep` and the SGI
    /// frame's per-interrupt registers hold state; the rest (and a GICv2) ignore writes.
    ///
    /// Returns the bitmask of vCPUs to kick: `vcpu` itself if the write made one of its SGIs or
    /// PPIs pending and forwardable (another vCPU, on another CPU, may have written it). A
    /// `GICR_WAKER` change that reroutes 1-of-N SPIs kicks nobody (their new owner finds them at
    /// its next entry).
    pub fn redistributor_write(&mut self, vcpu: usize, offset: u64, size: u8, value: u64) -> u64 {
        if self.shape != Shape::V3 || vcpu >= self.vcpus.len() || offset >= FRAME_SIZE {
            return 0;
        }
        if offset >= SGI_BASE {
            let offset = offset - SGI_BASE;
            if (regs::IGROUPR..regs::END).contains(&offset) {
                return self.write_and_kick(vcpu, Self::irq_regs_touched(offset, size), |v| {
                    v.irq_regs_write(Bank::Redist(vcpu), offset, size, value)
                });
            }
        } else if offset == GICR_WAKER && size == 4 {
            let sleep = value as u32 & WAKER_PROCESSOR_SLEEP != 0;
            if self.vcpus[vcpu].sleep != sleep {
                self.vcpus[vcpu].sleep = sleep;
                self.retarget_one_of_n();
            }
        }
        0
    }

    /// The registers of `vcpu`'s redistributor whose reads never change (`GICR_TYPER` as one
    /// 64-bit read or two 32-bit halves, `GICR_IIDR`, the identification registers); none on a
    /// GICv2, which has no redistributors.
    pub fn redistributor_constants(&self, vcpu: usize) -> Vec<ConstantRead> {
        if self.shape != Shape::V3 || vcpu >= self.vcpus.len() {
            return Vec::new();
        }
        [
            (GICR_TYPER, 8),
            (GICR_TYPER, 4),
            (GICR_TYPER + 4, 4),
            (GICR_IIDR, 4),
        ]
        .into_iter()
        .chain((0..12).map(|index| (ID_REGS + 4 * index, 4)))
        .map(|(offset, size)| ConstantRead {
            offset,
            size,
            value: self.redistributor_read(vcpu, offset, size),
        })
        .collect()
    }

    /// `GICR_TYPER`: Affinity_Value \[63:32\] (Aff3.Aff2.Aff1.Aff0 of the MPIDR),
    /// Processor_Number \[23:8\] = vCPU index, Last \[4\] on the last vCPU, no LPIs.
    fn gicr_typer(&self, vcpu: usize) -> u64 {
        let mpidr = self.vcpus[vcpu].mpidr;
        let affinity = (mpidr & 0xff_ffff) | ((mpidr >> 8) & 0xff00_0000);
        let last = if vcpu + 1 == self.vcpus.len() {
            TYPER_LAST
        } else {
            0
        };
        affinity << 32 | (vcpu as u64) << 8 | last
    }
}
