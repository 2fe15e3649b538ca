//! Register access that reads the same in both shapes, for the tests that run against a GICv3
//! and a GICv2 alike.
#![allow(dead_code)] // Each test crate uses its own part.

use gic::lr;
use gic::{Shape, Vgic};

/// Offset of a GICv3 redistributor's SGI frame.
pub const SGI_FRAME: u64 = 0x1_0000;
/// `GICR_WAKER`.
const GICR_WAKER: u64 = 0x14;
/// Per-interrupt registers (the same offsets in the GICv3 and GICv2 distributors).
const IRQ_REGS: core::ops::Range<u64> = 0x080..0xd00;
const IPRIORITYR: u64 = 0x400;
const ITARGETSR: u64 = 0x800;
const ICFGR: u64 = 0xc00;
const GICD_IROUTER: u64 = 0x6000;

/// Defines `mod $name { fn v3(); fn v2(); }` running `$name(Shape::V3)` and `$name(Shape::V2)`
/// for each test function `$name(shape: Shape)`.
#[macro_export]
macro_rules! both_shapes {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn v3() {
                    super::$name(gic::Shape::V3)
                }

                #[test]
                fn v2() {
                    super::$name(gic::Shape::V2)
                }
            }
        )*
    };
}

/// A vGIC of `shape` in its reset state (GICv3: MPIDR = vCPU index) with every redistributor
/// awake.
pub fn vgic(shape: Shape, vcpus: usize, spis: u32) -> Vgic {
    match shape {
        Shape::V3 => {
            let mut v = Vgic::new(vcpus, (0..vcpus as u64).collect(), spis);
            for vcpu in 0..vcpus {
                v.redistributor_write(vcpu, GICR_WAKER, 4, 0);
            }
            v
        }
        Shape::V2 => Vgic::new_v2(vcpus, spis),
    }
}

/// The first INTID a per-interrupt register at `offset` covers.
fn first_intid(offset: u64) -> u64 {
    if offset >= ICFGR {
        (offset - ICFGR) / 4 * 16
    } else if offset >= IPRIORITYR {
        offset - IPRIORITYR
    } else {
        (offset & 0x7f) / 4 * 32
    }
}

/// GICv3: whether `offset` of the distributor layout is a register of INTIDs 0..31 (which live
/// in a redistributor's SGI frame).
fn banked(offset: u64) -> bool {
    IRQ_REGS.contains(&offset) && first_intid(offset) < 32
}

/// A distributor write as vCPU `vcpu` makes it: GICv2 distributor, or GICv3 distributor (SPIs,
/// `GICD_CTLR`) and `vcpu`'s redistributor SGI frame (INTIDs 0..31). Returns the kick mask.
pub fn write(v: &mut Vgic, vcpu: usize, offset: u64, size: u8, value: u64) -> u64 {
    match v.shape() {
        Shape::V2 => v.distributor_v2_write(vcpu, offset, size, value),
        Shape::V3 if banked(offset) => v.redistributor_write(vcpu, SGI_FRAME + offset, size, value),
        Shape::V3 => v.distributor_write(offset, size, value),
    }
}

/// A distributor read as vCPU `vcpu` makes it (see [`write`]).
pub fn read(v: &Vgic, vcpu: usize, offset: u64, size: u8) -> u64 {
    match v.shape() {
        Shape::V2 => v.distributor_v2_read(vcpu, offset, size),
        Shape::V3 if banked(offset) => v.redistributor_read(vcpu, SGI_FRAME + offset, size),
        Shape::V3 => v.distributor_read(offset, size),
    }
}

/// Routes SPI `intid` to `vcpu` (`GICD_IROUTER` affinity, or an `ITARGETSR` byte).
pub fn route(v: &mut Vgic, intid: u32, vcpu: usize) {
    match v.shape() {
        Shape::V3 => v.distributor_write(GICD_IROUTER + 8 * u64::from(intid), 8, vcpu as u64),
        Shape::V2 => v.distributor_v2_write(0, ITARGETSR + u64::from(intid), 1, 1 << vcpu),
    };
    assert_eq!(v.spi_target(intid), Some(vcpu));
}

/// Flushes `vcpu`'s list registers as the hypervisor of the shape would: a GICv2's go through
/// the `GICH_LR` encoding and back.
pub fn flush(v: &mut Vgic, vcpu: usize, lrs: &mut [u64]) -> bool {
    let more = v.flush_to_lrs(vcpu, lrs);
    if v.shape() == Shape::V2 {
        for value in lrs.iter_mut() {
            *value = lr::from_gich(lr::to_gich(*value));
        }
    }
    more
}

/// Folds `vcpu`'s list registers back as the hypervisor of the shape would: a GICv2's are read
/// as `GICH_LR` values.
pub fn sync(v: &mut Vgic, vcpu: usize, lrs: &[u64]) {
    let mut values = lrs.to_vec();
    if v.shape() == Shape::V2 {
        for value in &mut values {
            *value = lr::from_gich(lr::to_gich(*value));
        }
    }
    v.sync_from_lrs(vcpu, &values);
}

/// Whether interrupts reset to Group 1 in `shape`.
pub fn resets_group1(shape: Shape) -> bool {
    shape == Shape::V3
}
