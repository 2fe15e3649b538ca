//! A vGIC saved on one board and restored on another delivers the same interrupts, in both
//! shapes; a saved vGIC of the other shape is refused.

mod common;

use common::{flush, route, sync, write};
use gic::lr::{self, LrState};
use gic::{RestoreError, Shape, Vgic};

const GICD_CTLR: u64 = 0x0;
const GICD_IGROUPR: u64 = 0x80;
const GICD_ISENABLER: u64 = 0x100;
const GICD_ISPENDR: u64 = 0x200;
const GICD_IPRIORITYR: u64 = 0x400;
const GICD_ITARGETSR: u64 = 0x800;
const GICD_ICFGR: u64 = 0xc00;
const GICD_SGIR: u64 = 0xf00;
const GICD_IROUTER: u64 = 0x6000;

/// A busy vGIC: SPIs enabled, routed, prioritised, grouped and pending, SGIs and a PPI pending,
/// an SPI active on vCPU 1, some of it in vCPU 1's list registers (returned with them).
fn busy(shape: Shape) -> (Vgic, [u64; 4]) {
    let mut vgic = common::vgic(shape, 2, 64);
    write(&mut vgic, 0, GICD_CTLR, 4, 0b11);
    for vcpu in 0..2 {
        write(&mut vgic, vcpu, GICD_ISENABLER, 4, 0xffff_ffff);
    }
    write(&mut vgic, 0, GICD_ISENABLER + 4, 4, 0xffff_0000);
    write(&mut vgic, 0, GICD_IGROUPR + 4, 4, 0x00ff_0000);
    write(&mut vgic, 0, GICD_IPRIORITYR + 48, 4, 0x4080_a0c0);
    write(&mut vgic, 0, GICD_ICFGR + 12, 4, 0xaaaa_0000);
    for intid in 32..95 {
        route(&mut vgic, intid, 0);
    }
    route(&mut vgic, 49, 1);
    // SPI 50 to either vCPU (1-of-N on a GICv3, both in the mask on a GICv2); 95 to nobody.
    match shape {
        Shape::V3 => {
            vgic.distributor_write(GICD_IROUTER + 8 * 50, 8, 1 << 31);
            vgic.distributor_write(GICD_IROUTER + 8 * 95, 8, 0x7);
            vgic.send_sgi(0, 0b10 | (3 << 24));
        }
        Shape::V2 => {
            vgic.distributor_v2_write(0, GICD_ITARGETSR + 50, 1, 0b11);
            vgic.distributor_v2_write(0, GICD_SGIR, 4, (0b10 << 16) | 3);
        }
    }
    assert_eq!(vgic.spi_target(95), None);
    vgic.set_line(0, 49, true);
    vgic.pulse(0, 60);
    vgic.pulse(0, 95);
    write(&mut vgic, 0, GICD_ISPENDR + 4, 4, 1 << 18);
    vgic.set_line(1, 27, true);
    let mut lrs = [0; 4];
    flush(&mut vgic, 1, &mut lrs);
    // The guest takes SPI 49.
    let slot = lrs.iter().position(|&v| lr::vintid(v) == 49).unwrap();
    lrs[slot] = lr::with_state(lrs[slot], LrState::Active);
    (vgic, lrs)
}

fn lrs_after_restore(vgic: &mut Vgic, vcpu: usize) -> Vec<u32> {
    let mut lrs = [0; 4];
    flush(vgic, vcpu, &mut lrs);
    lrs.iter()
        .filter(|&&lr| lr != 0)
        .map(|&lr| lr::vintid(lr))
        .collect()
}

fn saved_state_restores_to_an_equal_vgic(shape: Shape) {
    let (mut source, lrs) = busy(shape);
    // The vCPU leaves its CPU: its list registers fold back before the save.
    sync(&mut source, 1, &lrs);
    let saved = source.save();
    assert_eq!(saved.gic_version, shape.version());
    let mut target = common::vgic(shape, 2, 64);
    target.restore(&saved).unwrap();
    assert_eq!(
        target, source,
        "every interrupt's state, route and wake state"
    );
    assert_eq!(target.save(), saved);
    assert_eq!(target.spi_target(49), Some(1));
    assert_eq!(target.spi_target(95), None);
    let on_1 = lrs_after_restore(&mut target.clone(), 1);
    assert!(on_1.contains(&49), "SPI 49 returns active to vCPU 1");
    assert!(on_1.contains(&3), "the SGI to vCPU 1");
    // And both deliver the same interrupts to each vCPU.
    for vcpu in 0..2 {
        assert_eq!(
            lrs_after_restore(&mut target, vcpu),
            lrs_after_restore(&mut source, vcpu)
        );
    }
}

fn a_saved_vgic_of_another_size_is_refused_and_changes_nothing(shape: Shape) {
    let (mut source, lrs) = busy(shape);
    sync(&mut source, 1, &lrs);
    let saved = source.save();
    let mut other = common::vgic(shape, 4, 64);
    let before = other.clone();
    assert_eq!(
        other.restore(&saved),
        Err(RestoreError::Vcpus { saved: 2, here: 4 })
    );
    assert_eq!(other, before);
    let mut fewer_spis = common::vgic(shape, 2, 32);
    assert!(matches!(
        fewer_spis.restore(&saved),
        Err(RestoreError::Spis { .. })
    ));
    let mut broken = saved.clone();
    broken.redistributors[1].private.pop();
    assert_eq!(
        common::vgic(shape, 2, 64).restore(&broken),
        Err(RestoreError::PrivateInterrupts(31))
    );
}

/// What the model saves passes the checkpoint reader's consistency checks for its shape.
fn saved_state_passes_the_checkpoint_reader(shape: Shape) {
    let (mut source, lrs) = busy(shape);
    sync(&mut source, 1, &lrs);
    let config = checkpoint::InstanceConfig {
        name: "vgic".into(),
        ram_base: 0x4000_0000,
        ram_bytes: 1 << 20,
        vcpus: 2,
        weight: 1,
        gic_version: shape.version(),
        spis: 64,
        counter_frequency: 1,
    };
    let sections = [
        checkpoint::Section::Config(config),
        checkpoint::Section::Vgic(source.save()),
    ];
    let mut writer = checkpoint::Writer::new();
    let mut bytes = Vec::new();
    writer.header(&mut bytes);
    for section in &sections {
        writer.section(section, &mut bytes).unwrap();
    }
    writer.end(&mut bytes).unwrap();
    let mut reader = checkpoint::Reader::new();
    reader.push(&bytes);
    let mut read = Vec::new();
    while let Some(section) = reader.next().unwrap() {
        read.push(section);
    }
    reader.finish().unwrap();
    assert_eq!(read[..2], sections);
}

both_shapes!(
    saved_state_restores_to_an_equal_vgic,
    a_saved_vgic_of_another_size_is_refused_and_changes_nothing,
    saved_state_passes_the_checkpoint_reader,
);

#[test]
fn a_saved_vgic_of_the_other_shape_is_refused_and_changes_nothing() {
    let (mut v2, lrs) = busy(Shape::V2);
    sync(&mut v2, 1, &lrs);
    let (mut v3, lrs) = busy(Shape::V3);
    sync(&mut v3, 1, &lrs);
    let mut here = common::vgic(Shape::V3, 2, 64);
    let before = here.clone();
    let error = here.restore(&v2.save()).unwrap_err();
    assert_eq!(
        error,
        RestoreError::Shape {
            saved: 2,
            here: Shape::V3
        }
    );
    assert_eq!(
        error.to_string(),
        "the saved vGIC is a GICv2, this instance's a GICv3"
    );
    assert_eq!(here, before);
    let mut here = common::vgic(Shape::V2, 2, 64);
    let before = here.clone();
    let error = here.restore(&v3.save()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the saved vGIC is a GICv3, this instance's a GICv2"
    );
    assert_eq!(here, before);
    let mut unknown = v3.save();
    unknown.gic_version = 4;
    assert_eq!(
        v3.restore(&unknown),
        Err(RestoreError::Shape {
            saved: 4,
            here: Shape::V3
        })
    );
}

#[test]
fn saved_routes_belong_to_their_shape() {
    let (mut v2, lrs) = busy(Shape::V2);
    sync(&mut v2, 1, &lrs);
    let saved = v2.save();
    assert!(saved.spis.iter().all(|spi| spi.route == 0));
    assert_eq!(saved.spis[49 - 32].targets, 0b10);
    assert_eq!(saved.spis[50 - 32].targets, 0b11);
    assert_eq!(saved.spis[95 - 32].targets, 0);
    assert!(saved.redistributors.iter().all(|r| !r.asleep));
    // Bits of vCPUs that do not exist are dropped.
    let mut wide = saved.clone();
    wide.spis[0].targets = 0xfc;
    let mut restored = Vgic::new_v2(2, 64);
    restored.restore(&wide).unwrap();
    assert_eq!(restored.spi_target(32), None);
    assert_eq!(restored.save().spis[0].targets, 0);

    let (mut v3, lrs) = busy(Shape::V3);
    sync(&mut v3, 1, &lrs);
    let saved = v3.save();
    assert!(saved.spis.iter().all(|spi| spi.targets == 0));
    assert_eq!(saved.spis[49 - 32].route, 1);
    assert_eq!(saved.spis[50 - 32].route, 1 << 31);
}
