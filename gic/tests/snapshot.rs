//! A vGIC saved on one board and restored on another delivers the same interrupts.

use gic::{RestoreError, Vgic};

const GICD_CTLR: u64 = 0x0;
const GICD_ISENABLER: u64 = 0x100;
const GICD_ISPENDR: u64 = 0x200;
const GICD_IPRIORITYR: u64 = 0x400;
const GICD_ICFGR: u64 = 0xc00;
const GICD_IROUTER: u64 = 0x6000;
const SGI_FRAME: u64 = 0x1_0000;
const GICR_WAKER: u64 = 0x14;

/// A busy vGIC: SPIs enabled, routed, prioritised and pending, SGIs and a PPI in flight, some
/// of it in list registers.
fn busy() -> (Vgic, [u64; 4]) {
    let mut vgic = Vgic::new(2, vec![0, 1], 64);
    vgic.distributor_write(GICD_CTLR, 4, 0b11);
    for vcpu in 0..2 {
        vgic.redistributor_write(vcpu, GICR_WAKER, 4, 0);
        vgic.redistributor_write(vcpu, SGI_FRAME + GICD_ISENABLER, 4, 0xffff_ffff);
    }
    vgic.distributor_write(GICD_ISENABLER + 4, 4, 0xffff_0000);
    vgic.distributor_write(GICD_IPRIORITYR + 48, 4, 0x4080_a0c0);
    vgic.distributor_write(GICD_ICFGR + 12, 4, 0xaaaa_0000);
    vgic.distributor_write(GICD_IROUTER + 8 * 17, 8, 1);
    vgic.distributor_write(GICD_IROUTER + 8 * 18, 8, 1 << 31);
    vgic.set_line(0, 49, true);
    vgic.pulse(0, 60);
    vgic.distributor_write(GICD_ISPENDR + 4, 4, 1 << 18);
    vgic.send_sgi(0, (1 << 16 | 0b10) | (3 << 24));
    vgic.set_line(1, 27, true);
    let mut lrs = [0; 4];
    vgic.flush_to_lrs(1, &mut lrs);
    (vgic, lrs)
}

fn lrs_after_restore(vgic: &mut Vgic, vcpu: usize) -> Vec<u32> {
    let mut lrs = [0; 4];
    vgic.flush_to_lrs(vcpu, &mut lrs);
    lrs.iter()
        .filter(|&&lr| lr != 0)
        .map(|&lr| gic::lr::vintid(lr))
        .collect()
}

#[test]
fn saved_state_restores_to_an_equal_vgic() {
    let (mut source, lrs) = busy();
    // The vCPU leaves its CPU: its list registers fold back before the save.
    source.sync_from_lrs(1, &lrs);
    let saved = source.save();
    let mut target = Vgic::new(2, vec![0, 1], 64);
    target.restore(&saved).unwrap();
    assert_eq!(
        target, source,
        "every interrupt's state, route and wake state"
    );
    assert_eq!(target.save(), saved);
    // And both deliver the same interrupts to each vCPU.
    for vcpu in 0..2 {
        assert_eq!(
            lrs_after_restore(&mut target, vcpu),
            lrs_after_restore(&mut source, vcpu)
        );
    }
    assert!(
        !lrs_after_restore(&mut target.clone(), 1).is_empty(),
        "vCPU 1 has interrupts to take"
    );
}

#[test]
fn a_saved_vgic_of_another_shape_is_refused_and_changes_nothing() {
    let (mut source, lrs) = busy();
    source.sync_from_lrs(1, &lrs);
    let saved = source.save();
    let mut other = Vgic::new(4, vec![0, 1, 2, 3], 64);
    let before = other.clone();
    assert_eq!(
        other.restore(&saved),
        Err(RestoreError::Vcpus { saved: 2, here: 4 })
    );
    assert_eq!(other, before);
    let mut fewer_spis = Vgic::new(2, vec![0, 1], 32);
    assert!(matches!(
        fewer_spis.restore(&saved),
        Err(RestoreError::Spis { .. })
    ));
    let mut broken = saved.clone();
    broken.redistributors[1].private.pop();
    assert_eq!(
        Vgic::new(2, vec![0, 1], 64).restore(&broken),
        Err(RestoreError::PrivateInterrupts(31))
    );
}
