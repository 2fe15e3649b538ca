//! SGI generation (`ICC_SGI1R_EL1`) and SPI routing (`GICD_IROUTER`).

use gic::Vgic;

const SGI: u64 = 0x1_0000;

/// `ICC_SGI1R_EL1` value.
fn sgi1r(intid: u64, target_list: u64, aff1: u64, aff2: u64, aff3: u64, rs: u64, irm: bool) -> u64 {
    target_list
        | aff1 << 16
        | intid << 24
        | aff2 << 32
        | u64::from(irm) << 40
        | rs << 44
        | aff3 << 48
}

/// vCPUs with the given MPIDRs, groups and all SGIs enabled.
fn setup(mpidrs: &[u64]) -> Vgic {
    let mut v = Vgic::new(mpidrs.len(), mpidrs.to_vec(), 64);
    v.distributor_write(0x0, 4, 0x3);
    for vcpu in 0..mpidrs.len() {
        v.redistributor_write(vcpu, SGI + 0x100, 4, 0xffff);
    }
    v
}

/// Bitmask of the vCPUs that have `intid` pending.
fn pending_on(v: &Vgic, intid: u32) -> u64 {
    (0..v.num_vcpus())
        .filter(|&c| v.irq(c, intid).unwrap().is_pending())
        .fold(0, |m, c| m | 1 << c)
}

#[test]
fn sgi_target_list() {
    let mut v = setup(&[0, 1, 2, 3]);
    assert_eq!(v.send_sgi(0, sgi1r(1, 0b1010, 0, 0, 0, 0, false)), 0b1010);
    assert_eq!(pending_on(&v, 1), 0b1010);
    assert_eq!(v.pending_targets(), 0b1010);
    assert_eq!(
        v.send_sgi(0, sgi1r(1, 0b1110, 0, 0, 0, 0, false)),
        0b0100,
        "1 and 3 already pending"
    );
    assert_eq!(
        v.send_sgi(2, sgi1r(5, 0b0100, 0, 0, 0, 0, false)),
        0b0100,
        "to itself"
    );
    assert_eq!(pending_on(&v, 5), 0b0100);
    assert_eq!(
        v.send_sgi(0, sgi1r(15, 0b1_0000, 0, 0, 0, 0, false)),
        0,
        "no Aff0 4"
    );
    assert_eq!(
        v.send_sgi(0, sgi1r(2, 0, 0, 0, 0, 0, false)),
        0,
        "empty list"
    );
}

#[test]
fn sgi_broadcast_excludes_the_sender() {
    let mut v = setup(&[0, 1, 2, 3]);
    assert_eq!(
        v.send_sgi(2, sgi1r(3, 0xffff, 7, 7, 7, 3, true)),
        0b1011,
        "IRM ignores the rest"
    );
    assert_eq!(pending_on(&v, 3), 0b1011);
    assert_eq!(v.send_sgi(0, sgi1r(4, 0, 0, 0, 0, 0, true)), 0b1110);
}

#[test]
fn sgi_affinity_and_range_selector() {
    // Aff0 16 and 17 need RS = 1; a second cluster at Aff1 = 1, one at Aff3/Aff2.
    let mpidrs = [0x0, 0x10, 0x11, 0x100, 0x0005_0003_0002];
    let mut v = setup(&mpidrs);
    assert_eq!(v.send_sgi(0, sgi1r(1, 0b11, 0, 0, 0, 1, false)), 0b00110);
    assert_eq!(
        v.send_sgi(0, sgi1r(2, 0b01, 0, 0, 0, 0, false)),
        0b00001,
        "RS 0: Aff0 0 only"
    );
    assert_eq!(
        v.send_sgi(0, sgi1r(3, 0b01, 1, 0, 0, 0, false)),
        0b01000,
        "Aff1 = 1"
    );
    assert_eq!(
        v.send_sgi(0, sgi1r(4, 0b100, 0, 3, 5, 0, false)),
        0b10000,
        "Aff3.Aff2"
    );
    assert_eq!(
        v.send_sgi(0, sgi1r(5, 0b100, 0, 3, 0, 0, false)),
        0,
        "Aff3 mismatch"
    );
    assert_eq!(
        v.send_sgi(0, sgi1r(6, 0xffff, 0, 0, 0, 2, false)),
        0,
        "RS 2: nobody"
    );
}

#[test]
fn sgi_to_group0_or_disabled_sgi() {
    let mut v = setup(&[0, 1]);
    v.redistributor_write(1, SGI + 0x80, 4, !(1 << 7));
    assert_eq!(
        v.send_sgi(0, sgi1r(7, 0b11, 0, 0, 0, 0, false)),
        0b01,
        "Group 0 on vCPU 1"
    );
    v.redistributor_write(1, SGI + 0x180, 4, 1 << 8);
    assert_eq!(
        v.send_sgi(0, sgi1r(8, 0b10, 0, 0, 0, 0, false)),
        0b10,
        "latched"
    );
    assert!(!v.has_pending(1), "but not forwarded while disabled");
    v.redistributor_write(1, SGI + 0x100, 4, 1 << 8);
    assert!(v.has_pending(1));
}

#[test]
fn sgi_delivered_through_the_lrs() {
    let mut v = setup(&[0, 1, 2, 3]);
    v.send_sgi(0, sgi1r(9, 0b10, 0, 0, 0, 0, false));
    let mut lrs = [0u64; 4];
    assert!(!v.flush_to_lrs(1, &mut lrs));
    assert_eq!(gic::lr::vintid(lrs[0]), 9);
    assert_eq!(lrs[0] & gic::lr::EOI, 0, "SGIs are edge-triggered");
    lrs[0] = gic::lr::with_state(lrs[0], gic::lr::LrState::Invalid);
    v.sync_from_lrs(1, &lrs);
    assert!(!v.has_pending(1));
}

#[test]
fn spi_routing_by_affinity() {
    let mpidrs = [0x8000_0000, 0x8000_0001, 0x8000_0100, 0x0000_0001_0000_0000];
    let mut v = setup(&mpidrs);
    v.distributor_write(0x104, 4, 0xffff_ffff);
    assert_eq!(v.spi_target(40), Some(0), "reset: affinity 0.0.0.0");
    v.distributor_write(0x6000 + 8 * 40, 8, 0x100);
    assert_eq!(v.spi_target(40), Some(2));
    v.distributor_write(0x6000 + 8 * 40 + 4, 4, 0x1);
    v.distributor_write(0x6000 + 8 * 40, 4, 0x0);
    assert_eq!(v.spi_target(40), Some(3), "Aff3 = 1 through the high half");
    assert_eq!(v.pulse(0, 40), Some(3));
    let mut lrs = [0u64; 4];
    for vcpu in 0..3 {
        v.flush_to_lrs(vcpu, &mut lrs);
        assert_eq!(lrs, [0; 4], "vCPU {vcpu}");
    }
    v.flush_to_lrs(3, &mut lrs);
    assert_eq!(gic::lr::vintid(lrs[0]), 40);
    // No vCPU with that affinity: not forwarded anywhere.
    v.distributor_write(0x6000 + 8 * 41, 8, 0x5);
    assert_eq!(v.spi_target(41), None);
    assert_eq!(v.pulse(0, 41), None);
    assert_eq!(v.pending_targets(), 0b1000, "only SPI 40 on vCPU 3");
    assert_eq!(v.spi_target(31), None);
    assert_eq!(v.spi_target(96), None);
}

#[test]
fn spi_one_of_n_goes_to_the_lowest_awake_vcpu() {
    let mut v = Vgic::new(4, vec![0, 1, 2, 3], 64);
    v.distributor_write(0x6000 + 8 * 50, 8, 1 << 31);
    assert_eq!(v.distributor_read(0x6000 + 8 * 50, 8), 1 << 31);
    assert_eq!(v.spi_target(50), Some(0), "all asleep: vCPU 0");
    v.redistributor_write(2, 0x14, 4, 0);
    assert_eq!(v.spi_target(50), Some(2));
    v.redistributor_write(1, 0x14, 4, 0);
    assert_eq!(v.spi_target(50), Some(1));
    v.redistributor_write(1, 0x14, 4, 0x2);
    assert_eq!(v.spi_target(50), Some(2));
    v.distributor_write(0x6000 + 8 * 50, 8, 3);
    assert_eq!(v.spi_target(50), Some(3), "back to a fixed target");
    v.redistributor_write(0, 0x14, 4, 0);
    assert_eq!(v.spi_target(50), Some(3));
}
