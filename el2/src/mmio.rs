//! MMIO emulation: decoding a stage-2 data abort into an access, the interface that emulated
//! devices implement ([`MmioDevice`], raising interrupts through an [`InterruptSink`]), and the
//! vGIC's register frames as such devices.

use devicetree::guest::{GICD_BASE, GICD_SIZE, GICR_BASE, GICR_STRIDE};
use gic::{Shape, Vgic};

/// Why a data abort cannot be emulated as a single register access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioDecodeError {
    /// `ISS.ISV` is clear: the instruction (a pair, writeback or SIMD access) left no syndrome.
    NoSyndrome,
    /// The abort happened during the guest's own stage-1 table walk.
    StageOneWalk,
    /// A cache-maintenance instruction hit the address.
    CacheMaintenance,
    /// The fault is not a translation fault (e.g. a permission fault), given as DFSC.
    NotTranslationFault(u8),
}

impl core::fmt::Display for MmioDecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoSyndrome => write!(f, "no instruction syndrome (ISV=0)"),
            Self::StageOneWalk => write!(f, "fault on the guest's stage-1 table walk"),
            Self::CacheMaintenance => write!(f, "cache maintenance on an unmapped address"),
            Self::NotTranslationFault(dfsc) => {
                write!(f, "fault status {dfsc:#x} is not a translation fault")
            }
        }
    }
}

/// One guest load or store to an emulated address, decoded from `ESR_EL2.ISS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// The intermediate physical address accessed.
    pub ipa: u64,
    /// Access size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// True for a store.
    pub write: bool,
    /// The transfer register, 0..=30, or 31 for XZR/WZR.
    pub reg: u8,
    /// A load that sign-extends to the register width.
    pub sign_extend: bool,
    /// The register is 64 bits wide (X) rather than 32 (W).
    pub sixty_four: bool,
}

impl MmioAccess {
    /// Decodes the ISS of a data abort from a lower EL at `ipa`.
    pub fn decode(iss: u32, ipa: u64) -> Result<Self, MmioDecodeError> {
        if iss & (1 << 24) == 0 {
            return Err(MmioDecodeError::NoSyndrome);
        }
        if iss & (1 << 7) != 0 {
            return Err(MmioDecodeError::StageOneWalk);
        }
        if iss & (1 << 8) != 0 {
            return Err(MmioDecodeError::CacheMaintenance);
        }
        let dfsc = (iss & 0x3f) as u8;
        if dfsc & 0x3c != 0x04 {
            return Err(MmioDecodeError::NotTranslationFault(dfsc));
        }
        Ok(Self {
            ipa,
            size: 1 << ((iss >> 22) & 0x3),
            write: iss & (1 << 6) != 0,
            reg: ((iss >> 16) & 0x1f) as u8,
            sign_extend: iss & (1 << 21) != 0,
            sixty_four: iss & (1 << 15) != 0,
        })
    }

    /// The bits of a register that a store of this size writes.
    pub fn store_value(&self, register: u64) -> u64 {
        register & self.size_mask()
    }

    /// The register value a load of this size produces from the device's `raw` answer:
    /// truncated to the access size, sign-extended if asked, and limited to 32 bits for W registers.
    pub fn load_value(&self, raw: u64) -> u64 {
        let bits = u32::from(self.size) * 8;
        let mut value = raw & self.size_mask();
        if self.sign_extend && bits < 64 {
            let shift = 64 - bits;
            value = (((value << shift) as i64) >> shift) as u64;
        }
        if !self.sixty_four {
            value &= 0xffff_ffff;
        }
        value
    }

    fn size_mask(&self) -> u64 {
        if self.size >= 8 {
            u64::MAX
        } else {
            (1u64 << (u32::from(self.size) * 8)) - 1
        }
    }
}

/// What an access changed besides the registers of the device it reached.
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Interrupt state changed (a vGIC register was written, or a device's interrupt line moved):
    /// list registers filled before the access may be out of date.
    pub interrupts: bool,
    /// The vCPUs (bit n: vCPU n) for which an interrupt became pending and forwardable, to
    /// kick (a vGIC register write by one vCPU can raise an interrupt for another, which may be
    /// running or waiting on another CPU).
    pub kicks: u64,
}

impl Changes {
    /// Interrupt state changed; nobody to kick.
    pub const INTERRUPTS: Self = Self {
        interrupts: true,
        kicks: 0,
    };
}

/// Where devices drive their interrupt lines: the interrupt controller as a device sees it.
pub trait InterruptSink {
    /// Drives the level-sensitive line of interrupt `intid` (an SPI) high or low; returns the
    /// vCPUs (bit n: vCPU n) for which that made it pending and forwardable, to kick.
    fn set_line(&mut self, intid: u32, level: bool) -> u64;
}

/// A device that the hypervisor emulates behind a range of guest-physical addresses.
///
/// Offsets are relative to the device's base. Devices answer every access: registers that do not
/// exist read as zero and ignore writes, as the PrimeCell and GIC specifications ask.
pub trait MmioDevice {
    /// The device's register window: its base address and its size in bytes.
    fn region(&self) -> (u64, u64);
    /// Reads `size` bytes at `offset`: the value, and what the read changed (a read can drain a
    /// FIFO and so lower an interrupt line).
    fn read(&mut self, offset: u64, size: u8) -> (u64, Changes);
    /// Writes the low `size` bytes of `value` at `offset`, and says what that changed.
    fn write(&mut self, offset: u64, size: u8, value: u64) -> Changes;
}

/// Device lines reach the vGIC as SPIs: the vCPU to kick is the one the SPI is routed to.
impl InterruptSink for Vgic {
    fn set_line(&mut self, intid: u32, level: bool) -> u64 {
        // The vCPU argument only selects a bank of SGIs and PPIs.
        Vgic::set_line(self, 0, intid, level).map_or(0, |vcpu| 1 << vcpu)
    }
}

/// The vGIC's distributor frame at [`GICD_BASE`] as vCPU `vcpu` reaches it: a GICv3 or a
/// GICv2 distributor, as the vGIC's shape says (a GICv2's banks its SGIs and PPIs per vCPU).
pub struct GicDistributor<'a> {
    /// The instance's vGIC.
    pub vgic: &'a mut Vgic,
    /// The vCPU that accesses it.
    pub vcpu: usize,
}

impl MmioDevice for GicDistributor<'_> {
    fn region(&self) -> (u64, u64) {
        (GICD_BASE, GICD_SIZE)
    }

    fn read(&mut self, offset: u64, size: u8) -> (u64, Changes) {
        let value = match self.vgic.shape() {
            Shape::V3 => self.vgic.distributor_read(offset, size),
            Shape::V2 => self.vgic.distributor_v2_read(self.vcpu, offset, size),
        };
        (value, Changes::default())
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) -> Changes {
        let kicks = match self.vgic.shape() {
            Shape::V3 => self.vgic.distributor_write(offset, size, value),
            Shape::V2 => self
                .vgic
                .distributor_v2_write(self.vcpu, offset, size, value),
        };
        Changes {
            interrupts: true,
            kicks,
        }
    }
}

/// The vGIC's redistributors as one device: one [`GICR_STRIDE`] frame pair per vCPU, in vCPU
/// order from [`GICR_BASE`].
pub struct GicRedistributors<'a>(pub &'a mut Vgic);

impl GicRedistributors<'_> {
    /// The vCPU whose redistributor holds `offset` (from [`GICR_BASE`]), and the offset in it.
    fn frame(offset: u64) -> (usize, u64) {
        ((offset / GICR_STRIDE) as usize, offset % GICR_STRIDE)
    }
}

impl MmioDevice for GicRedistributors<'_> {
    /// Empty for a GICv2, which has no redistributors.
    fn region(&self) -> (u64, u64) {
        let frames = match self.0.shape() {
            Shape::V3 => self.0.num_vcpus() as u64,
            Shape::V2 => 0,
        };
        (GICR_BASE, GICR_STRIDE * frames)
    }

    fn read(&mut self, offset: u64, size: u8) -> (u64, Changes) {
        let (vcpu, offset) = Self::frame(offset);
        let value = self.0.redistributor_read(vcpu, offset, size);
        (value, Changes::default())
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) -> Changes {
        let (vcpu, offset) = Self::frame(offset);
        Changes {
            interrupts: true,
            kicks: self.0.redistributor_write(vcpu, offset, size, value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a data-abort ISS with a valid syndrome and a level-3 translation fault.
    fn iss(sas: u32, sse: bool, srt: u32, sf: bool, wnr: bool) -> u32 {
        (1 << 24)
            | (sas << 22)
            | (u32::from(sse) << 21)
            | (srt << 16)
            | (u32::from(sf) << 15)
            | (u32::from(wnr) << 6)
            | 0x07
    }

    #[test]
    fn decodes_size_register_and_direction() {
        let load = MmioAccess::decode(iss(2, false, 5, false, false), 0x900_0fe0).unwrap();
        assert_eq!(
            (load.size, load.reg, load.write, load.sixty_four),
            (4, 5, false, false)
        );
        let store = MmioAccess::decode(iss(3, false, 30, true, true), 0x900_0000).unwrap();
        assert_eq!(
            (store.size, store.reg, store.write, store.sixty_four),
            (8, 30, true, true)
        );
        let byte = MmioAccess::decode(iss(0, false, 31, false, true), 0).unwrap();
        assert_eq!((byte.size, byte.reg), (1, 31));
    }

    #[test]
    fn rejects_what_cannot_be_emulated() {
        assert_eq!(
            MmioAccess::decode(0x07, 0),
            Err(MmioDecodeError::NoSyndrome)
        );
        let walk = iss(2, false, 0, false, false) | (1 << 7);
        assert_eq!(
            MmioAccess::decode(walk, 0),
            Err(MmioDecodeError::StageOneWalk)
        );
        let cm = iss(2, false, 0, false, false) | (1 << 8);
        assert_eq!(
            MmioAccess::decode(cm, 0),
            Err(MmioDecodeError::CacheMaintenance)
        );
        let perm = (iss(2, false, 0, false, false) & !0x3f) | 0x0f;
        assert_eq!(
            MmioAccess::decode(perm, 0),
            Err(MmioDecodeError::NotTranslationFault(0x0f))
        );
    }

    #[test]
    fn load_values_follow_width_and_sign() {
        // ldrsb x1: byte sign-extended to 64 bits.
        let ldrsb_x = MmioAccess::decode(iss(0, true, 1, true, false), 0).unwrap();
        assert_eq!(ldrsb_x.load_value(0x1234_5680), 0xffff_ffff_ffff_ff80);
        // ldrsh w1: halfword sign-extended to 32 bits, upper half of X zero.
        let ldrsh_w = MmioAccess::decode(iss(1, true, 1, false, false), 0).unwrap();
        assert_eq!(ldrsh_w.load_value(0xffff_8001), 0xffff_8001);
        // ldrb w1: zero-extended.
        let ldrb = MmioAccess::decode(iss(0, false, 1, false, false), 0).unwrap();
        assert_eq!(ldrb.load_value(0x1ff), 0xff);
        // ldr x1: all 64 bits.
        let ldr_x = MmioAccess::decode(iss(3, false, 1, true, false), 0).unwrap();
        assert_eq!(ldr_x.load_value(u64::MAX - 1), u64::MAX - 1);
        // ldrsw x1: word sign-extended to 64.
        let ldrsw = MmioAccess::decode(iss(2, true, 1, true, false), 0).unwrap();
        assert_eq!(ldrsw.load_value(0x8000_0000), 0xffff_ffff_8000_0000);
    }

    /// A vGIC with `n` vCPUs (affinities 0..n) and the SPIs of an instance.
    fn vgic(n: usize) -> Vgic {
        Vgic::new(n, (0..n as u64).map(|a| (1 << 31) | a).collect(), 64)
    }

    #[test]
    fn redistributor_frames_follow_the_vcpu_index() {
        assert_eq!(GicRedistributors::frame(0), (0, 0));
        assert_eq!(
            GicRedistributors::frame(GICR_STRIDE - 1),
            (0, GICR_STRIDE - 1)
        );
        assert_eq!(GicRedistributors::frame(GICR_STRIDE), (1, 0));
        assert_eq!(
            GicRedistributors::frame(2 * GICR_STRIDE + 0x1_0100),
            (2, 0x1_0100)
        );
        let mut vgic = vgic(3);
        let mut redistributors = GicRedistributors(&mut vgic);
        assert_eq!(redistributors.region(), (GICR_BASE, 3 * GICR_STRIDE));
        for vcpu in 0..3 {
            // GICR_TYPER: Processor_Number [23:8], Last [4] on the last redistributor.
            let (typer, changes) = redistributors.read(vcpu * GICR_STRIDE + 0x8, 8);
            assert_eq!((typer >> 8) & 0xffff, vcpu);
            assert_eq!(typer & (1 << 4) != 0, vcpu == 2);
            assert_eq!(typer >> 32, vcpu, "affinity of vCPU {vcpu}");
            assert_eq!(changes, Changes::default());
        }
    }

    #[test]
    fn gic_writes_change_interrupt_state_and_reads_do_not() {
        let mut vgic = vgic(2);
        let mut distributor = GicDistributor {
            vgic: &mut vgic,
            vcpu: 0,
        };
        assert_eq!(distributor.region(), (GICD_BASE, GICD_SIZE));
        assert_eq!(distributor.write(0x0, 4, 0x2), Changes::INTERRUPTS);
        assert_eq!(distributor.read(0x0, 4), (0x52, Changes::default()));
        // GICR_WAKER of vCPU 1: awake.
        let mut redistributors = GicRedistributors(&mut vgic);
        assert_eq!(
            redistributors.write(GICR_STRIDE + 0x14, 4, 0),
            Changes::INTERRUPTS
        );
        assert_eq!(redistributors.read(0x14, 4).0, 0x6, "vCPU 0 still asleep");
        assert_eq!(redistributors.read(GICR_STRIDE + 0x14, 4).0, 0);
    }

    #[test]
    fn a_gicv2_distributor_banks_per_vcpu_kicks_sgi_targets_and_has_no_redistributors() {
        let mut vgic = Vgic::new_v2(2, 64);
        assert_eq!(GicRedistributors(&mut vgic).region(), (GICR_BASE, 0));
        for vcpu in 0..2 {
            let mut distributor = GicDistributor {
                vgic: &mut vgic,
                vcpu,
            };
            // GICD_ITARGETSR0 reads the accessing CPU's own interface bit.
            assert_eq!(distributor.read(0x800, 1).0, 1 << vcpu);
            // GICD_ISENABLER0: enable SGI 1 on this vCPU.
            assert_eq!(distributor.write(0x100, 4, 1 << 1), Changes::INTERRUPTS);
        }
        let mut distributor = GicDistributor {
            vgic: &mut vgic,
            vcpu: 0,
        };
        assert_eq!(distributor.write(0x0, 4, 1), Changes::INTERRUPTS);
        // GICD_SGIR: SGI 1 to CPU interface 1.
        assert_eq!(
            distributor.write(0xf00, 4, (1 << 1) << 16 | 1),
            Changes {
                interrupts: true,
                kicks: 1 << 1
            }
        );
    }

    #[test]
    fn device_lines_reach_the_vgic_as_spis_and_kick_the_vcpu_they_are_routed_to() {
        let mut vgic = vgic(2);
        assert_eq!(
            InterruptSink::set_line(&mut vgic, 33, true),
            0,
            "not enabled"
        );
        assert!(vgic.irq(1, 33).is_some_and(|irq| irq.line));
        assert_eq!(InterruptSink::set_line(&mut vgic, 33, false), 0);
        assert!(vgic.irq(0, 33).is_some_and(|irq| !irq.line));
        // Group 1 enabled, SPI 33 Group 1, enabled and routed to vCPU 1 (MPIDR affinity 1).
        let mut distributor = GicDistributor {
            vgic: &mut vgic,
            vcpu: 0,
        };
        let _ = distributor.write(0x0, 4, 0x2);
        let _ = distributor.write(0x84, 4, 1 << 1);
        let _ = distributor.write(0x104, 4, 1 << 1);
        let _ = distributor.write(0x6000 + 8 * 33, 8, 1);
        assert_eq!(InterruptSink::set_line(&mut vgic, 33, true), 1 << 1);
    }

    #[test]
    fn store_values_are_truncated() {
        let strh = MmioAccess::decode(iss(1, false, 2, false, true), 0).unwrap();
        assert_eq!(strh.store_value(0xdead_beef), 0xbeef);
        let str_x = MmioAccess::decode(iss(3, false, 2, true, true), 0).unwrap();
        assert_eq!(str_x.store_value(u64::MAX), u64::MAX);
    }
}
