//! GICv2 distributor register model, register by register.

use gic::{MAX_V2_VCPUS, Shape, Trigger, Vgic};

const CTLR: u64 = 0x0;
const TYPER: u64 = 0x4;
const IIDR: u64 = 0x8;
const IGROUPR: u64 = 0x80;
const ISENABLER: u64 = 0x100;
const ICENABLER: u64 = 0x180;
const ISPENDR: u64 = 0x200;
const ICPENDR: u64 = 0x280;
const ISACTIVER: u64 = 0x300;
const ICACTIVER: u64 = 0x380;
const IPRIORITYR: u64 = 0x400;
const ITARGETSR: u64 = 0x800;
const ICFGR: u64 = 0xc00;
const SGIR: u64 = 0xf00;
const CPENDSGIR: u64 = 0xf10;
const SPENDSGIR: u64 = 0xf20;

/// 4 vCPUs, 64 SPIs (INTIDs 32..95).
fn vgic() -> Vgic {
    Vgic::new_v2(4, 64)
}

fn r32(v: &Vgic, vcpu: usize, offset: u64) -> u64 {
    v.distributor_v2_read(vcpu, offset, 4)
}

fn w32(v: &mut Vgic, vcpu: usize, offset: u64, value: u64) -> u64 {
    v.distributor_v2_write(vcpu, offset, 4, value)
}

/// `GICD_SGIR` value.
fn sgir(filter: u64, list: u64, intid: u64) -> u64 {
    filter << 24 | list << 16 | intid
}

/// Both groups enabled, every interrupt enabled on every vCPU, SPIs 32..95 targeted at vCPU 0.
fn enabled() -> Vgic {
    let mut v = vgic();
    w32(&mut v, 0, CTLR, 0x3);
    for vcpu in 0..4 {
        w32(&mut v, vcpu, ISENABLER, 0xffff_ffff);
    }
    w32(&mut v, 0, ISENABLER + 4, 0xffff_ffff);
    w32(&mut v, 0, ISENABLER + 8, 0xffff_ffff);
    for word in 8..24 {
        w32(&mut v, 0, ITARGETSR + 4 * word, 0x0101_0101);
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
fn shape_and_constructor_limits() {
    let v = vgic();
    assert_eq!(v.shape(), Shape::V2);
    assert_eq!(Vgic::new(1, vec![0], 32).shape(), Shape::V3);
    assert_eq!((v.num_vcpus(), v.num_spis()), (4, 64));
    assert_eq!(Vgic::new_v2(MAX_V2_VCPUS, 960).num_vcpus(), 8);
    assert_eq!((Shape::V3.version(), Shape::V2.version()), (3, 2));
}

#[test]
#[should_panic(expected = "GICv2")]
fn more_than_eight_vcpus_panics() {
    Vgic::new_v2(MAX_V2_VCPUS + 1, 32);
}

#[test]
#[should_panic(expected = "GICv2")]
fn no_vcpu_panics() {
    Vgic::new_v2(0, 32);
}

#[test]
#[should_panic(expected = "SPI count")]
fn bad_spi_count_panics() {
    Vgic::new_v2(1, 33);
}

#[test]
fn reset_state() {
    let v = vgic();
    for vcpu in 0..4 {
        assert_eq!(r32(&v, vcpu, IGROUPR), 0, "Group 0");
        assert_eq!(r32(&v, vcpu, ISENABLER), 0);
        assert_eq!(r32(&v, vcpu, ICFGR), 0xaaaa_aaaa, "SGIs edge-triggered");
        assert_eq!(r32(&v, vcpu, ICFGR + 4), 0, "PPIs level-sensitive");
        assert_eq!(r32(&v, vcpu, IPRIORITYR + 16), 0);
    }
    for word in 1..3 {
        assert_eq!(r32(&v, 0, IGROUPR + 4 * word), 0, "Group 0");
        assert_eq!(r32(&v, 0, ISENABLER + 4 * word), 0);
        assert_eq!(r32(&v, 0, ISPENDR + 4 * word), 0);
        assert_eq!(r32(&v, 0, ISACTIVER + 4 * word), 0);
    }
    for word in 2..6 {
        assert_eq!(r32(&v, 0, ICFGR + 4 * word), 0, "SPIs level-sensitive");
    }
    for word in 8..24 {
        assert_eq!(r32(&v, 0, ITARGETSR + 4 * word), 0, "SPIs target no CPU");
    }
    for intid in 32..96 {
        assert_eq!(v.spi_target(intid), None);
        assert!(!v.irq(0, intid).unwrap().group1);
    }
    assert_eq!(r32(&v, 0, CTLR), 0);
}

#[test]
fn ctlr_group_enables() {
    let mut v = vgic();
    assert_eq!(r32(&v, 0, CTLR), 0);
    w32(&mut v, 0, CTLR, 0x1);
    assert_eq!(r32(&v, 2, CTLR), 0x1, "not banked");
    w32(&mut v, 1, CTLR, 0xffff_ffff);
    assert_eq!(r32(&v, 0, CTLR), 0x3, "EnableGrp0 and EnableGrp1 only");
    w32(&mut v, 0, CTLR, 0x2);
    assert_eq!(r32(&v, 0, CTLR), 0x2);
    v.distributor_v2_write(0, CTLR, 1, 0x3);
    v.distributor_v2_write(0, CTLR, 2, 0x3);
    assert_eq!(
        r32(&v, 0, CTLR),
        0x2,
        "byte and halfword writes are ignored"
    );
    assert_eq!(v.distributor_v2_read(0, CTLR, 1), 0);
}

#[test]
fn typer_and_iidr() {
    let mut v = vgic();
    let typer = r32(&v, 0, TYPER);
    assert_eq!(typer & 0x1f, 2, "ITLinesNumber = 64 / 32");
    assert_eq!((typer >> 5) & 0x7, 3, "CPUNumber = 4 - 1");
    assert_eq!(typer & (1 << 10), 0, "no security extensions");
    assert_eq!(typer, 0x62);
    assert_eq!(r32(&v, 3, TYPER), 0x62, "the same for every CPU");
    assert_eq!(r32(&Vgic::new_v2(1, 960), 0, TYPER), 30);
    assert_eq!(r32(&Vgic::new_v2(8, 32), 0, TYPER), 0xe1);
    assert_eq!(r32(&Vgic::new_v2(2, 0), 0, TYPER), 0x20);
    assert_eq!(r32(&v, 0, IIDR), 0x43b, "Arm");
    let before = v.clone();
    for reg in [TYPER, IIDR] {
        assert_eq!(w32(&mut v, 0, reg, 0xffff_ffff), 0);
    }
    assert_eq!(v, before, "read-only registers ignore writes");
}

#[test]
fn id_registers_of_a_gic_400() {
    let mut v = vgic();
    let pidr2 = r32(&v, 0, 0xfe8);
    assert_eq!((pidr2 >> 4) & 0xf, 2, "ArchRev: GICv2");
    assert_eq!(pidr2, 0x2b);
    assert_eq!(r32(&v, 0, 0xfd0), 0x04, "PIDR4");
    for pidr in [0xfd4, 0xfd8, 0xfdc, 0xfec] {
        assert_eq!(r32(&v, 0, pidr), 0, "PIDR5..7, PIDR3");
    }
    assert_eq!(r32(&v, 0, 0xfe0), 0x90, "PIDR0");
    assert_eq!(r32(&v, 0, 0xfe4), 0xb4, "PIDR1");
    let cidr: Vec<u64> = (0..4).map(|i| r32(&v, 1, 0xff0 + 4 * i)).collect();
    assert_eq!(cidr, [0x0d, 0xf0, 0x05, 0xb1]);
    assert_eq!(r32(&v, 0, 0xfcc), 0);
    assert_eq!(v.distributor_v2_read(0, 0xfe8, 1), 0, "words only");
    assert_eq!(
        r32(&v, 0, 0xffe8),
        0,
        "the GICv3 place is outside the frame"
    );
    let before = v.clone();
    w32(&mut v, 0, 0xfe8, 0);
    assert_eq!(v, before);
}

#[test]
fn private_interrupts_are_banked_per_vcpu() {
    let mut v = vgic();
    w32(&mut v, 1, ISENABLER, 0x0001_0002);
    assert!(v.irq(1, 1).unwrap().enabled);
    assert!(v.irq(1, 16).unwrap().enabled);
    assert!(!v.irq(0, 1).unwrap().enabled);
    assert_eq!(r32(&v, 1, ISENABLER), 0x0001_0002);
    assert_eq!(r32(&v, 0, ISENABLER), 0);
    w32(&mut v, 2, IGROUPR, 0xffff_0000);
    assert_eq!(r32(&v, 2, IGROUPR), 0xffff_0000);
    assert_eq!(r32(&v, 3, IGROUPR), 0);
    assert!(v.irq(2, 20).unwrap().group1);
    v.distributor_v2_write(3, IPRIORITYR + 27, 1, 0xa5);
    assert_eq!(v.distributor_v2_read(3, IPRIORITYR + 27, 1), 0xa0);
    assert_eq!(r32(&v, 3, IPRIORITYR + 24), 0xa000_0000);
    assert_eq!(r32(&v, 0, IPRIORITYR + 24), 0);
    assert_eq!(v.irq(3, 27).unwrap().priority, 0xa0);
    // PPIs' trigger is configurable per vCPU, SGIs' is not.
    w32(&mut v, 0, ICFGR + 4, 0xffff_ffff);
    assert_eq!(r32(&v, 0, ICFGR + 4), 0xaaaa_aaaa);
    assert_eq!(r32(&v, 1, ICFGR + 4), 0);
    assert_eq!(v.irq(0, 31).unwrap().trigger, Trigger::Edge);
    w32(&mut v, 0, ICFGR, 0);
    assert_eq!(r32(&v, 0, ICFGR), 0xaaaa_aaaa);
    // Active state of a PPI is banked too.
    w32(&mut v, 2, ISACTIVER, 1 << 27);
    assert_eq!(r32(&v, 2, ICACTIVER), 1 << 27);
    assert_eq!(r32(&v, 1, ICACTIVER), 0);
    w32(&mut v, 2, ICACTIVER, 1 << 27);
    assert_eq!(r32(&v, 2, ISACTIVER), 0);
}

/// A set/clear register pair on SPI words: ones set, or clear, zeros do nothing, both read
/// the same state, and every vCPU sees the same SPIs.
fn check_set_clear_pair(set: u64, clear: u64) {
    let mut v = vgic();
    assert_eq!(r32(&v, 0, set + 4), 0);
    w32(&mut v, 0, set + 4, 0x8000_0001);
    w32(&mut v, 1, set + 8, 0x0000_f000);
    w32(&mut v, 2, set + 4, 0x0000_0100);
    assert_eq!(r32(&v, 3, set + 4), 0x8000_0101);
    assert_eq!(r32(&v, 0, clear + 4), 0x8000_0101);
    assert_eq!(r32(&v, 0, set + 8), 0x0000_f000);
    w32(&mut v, 3, clear + 4, 0x0000_0001);
    assert_eq!(r32(&v, 0, set + 4), 0x8000_0100);
    w32(&mut v, 0, clear + 4, 0);
    assert_eq!(r32(&v, 1, clear + 4), 0x8000_0100);
    // The words past the last SPI are RAZ/WI.
    let before = v.clone();
    for word in [3, 31] {
        w32(&mut v, 0, set + 4 * word, 0xffff_ffff);
        w32(&mut v, 0, clear + 4 * word, 0xffff_ffff);
        assert_eq!(r32(&v, 0, set + 4 * word), 0);
    }
    assert_eq!(v, before);
}

#[test]
fn isenabler_icenabler() {
    check_set_clear_pair(ISENABLER, ICENABLER);
}

#[test]
fn ispendr_icpendr() {
    check_set_clear_pair(ISPENDR, ICPENDR);
}

#[test]
fn isactiver_icactiver() {
    check_set_clear_pair(ISACTIVER, ICACTIVER);
}

#[test]
fn igroupr_spis() {
    let mut v = vgic();
    w32(&mut v, 1, IGROUPR + 4, 0x0000_ffff);
    assert_eq!(r32(&v, 0, IGROUPR + 4), 0x0000_ffff);
    assert!(v.irq(0, 47).unwrap().group1);
    assert!(!v.irq(0, 48).unwrap().group1);
    assert_eq!(r32(&v, 0, IGROUPR + 12), 0, "beyond the last SPI");
}

#[test]
fn ispendr_ignores_sgis() {
    let mut v = vgic();
    w32(&mut v, 0, ISPENDR, 0xffff_ffff);
    assert_eq!(r32(&v, 0, ISPENDR), 0xffff_0000, "PPIs only");
    assert_eq!(r32(&v, 1, ISPENDR), 0, "banked");
    v.distributor_v2_write(0, SPENDSGIR, 1, 1);
    assert_eq!(r32(&v, 0, ISPENDR), 0xffff_0001, "ISPENDR reads SGIs");
    w32(&mut v, 0, ICPENDR, 0xffff_ffff);
    assert_eq!(r32(&v, 0, ICPENDR), 0x0000_0001, "ICPENDR clears PPIs only");
}

#[test]
fn ipriorityr_byte_and_word_access() {
    let mut v = vgic();
    let p32 = IPRIORITYR + 32;
    v.distributor_v2_write(0, p32 + 1, 1, 0xa0);
    assert_eq!(v.distributor_v2_read(2, p32 + 1, 1), 0xa0);
    assert_eq!(r32(&v, 0, p32), 0x0000_a000);
    w32(&mut v, 0, p32, 0x1020_3040);
    assert_eq!(r32(&v, 0, p32), 0x1020_3040);
    w32(&mut v, 0, p32 + 4, 0xffff_ffff);
    assert_eq!(r32(&v, 0, p32 + 4), 0xf8f8_f8f8, "5 priority bits");
    v.distributor_v2_write(0, IPRIORITYR + 95, 1, 0x80);
    assert_eq!(r32(&v, 0, IPRIORITYR + 92), 0x8000_0000);
    let before = v.clone();
    w32(&mut v, 0, IPRIORITYR + 96, 0xffff_ffff);
    v.distributor_v2_write(0, p32, 2, 0xffff);
    v.distributor_v2_write(0, p32 + 2, 4, 0xffff_ffff);
    assert_eq!(
        v, before,
        "out-of-range, halfword and unaligned writes ignored"
    );
    assert_eq!(r32(&v, 0, IPRIORITYR + 96), 0);
    assert_eq!(v.distributor_v2_read(0, p32, 2), 0);
}

#[test]
fn itargetsr_private_bytes_read_the_own_cpu() {
    let mut v = vgic();
    for vcpu in 0..4 {
        let own = 1u64 << vcpu;
        for word in 0..8 {
            assert_eq!(r32(&v, vcpu, ITARGETSR + 4 * word), own * 0x0101_0101);
        }
        assert_eq!(v.distributor_v2_read(vcpu, ITARGETSR + 27, 1), own);
    }
    let before = v.clone();
    w32(&mut v, 0, ITARGETSR, 0x0f0f_0f0f);
    v.distributor_v2_write(1, ITARGETSR + 31, 1, 0x0f);
    assert_eq!(v, before, "read-only");
}

#[test]
fn itargetsr_spi_bytes_and_words() {
    let mut v = vgic();
    v.distributor_v2_write(0, ITARGETSR + 33, 1, 0b0100);
    assert_eq!(v.distributor_v2_read(3, ITARGETSR + 33, 1), 0b0100);
    assert_eq!(r32(&v, 1, ITARGETSR + 32), 0x0000_0400);
    assert_eq!(v.spi_target(33), Some(2));
    w32(&mut v, 2, ITARGETSR + 32, 0x0807_0201);
    assert_eq!(r32(&v, 0, ITARGETSR + 32), 0x0807_0201);
    assert_eq!(v.distributor_v2_read(0, ITARGETSR + 34, 1), 0x07);
    let targets: Vec<_> = (32..36).map(|i| v.spi_target(i)).collect();
    assert_eq!(targets, [Some(0), Some(1), Some(0), Some(3)]);
    // Only the 4 CPUs that exist.
    w32(&mut v, 0, ITARGETSR + 92, 0xffff_f0ff);
    assert_eq!(r32(&v, 0, ITARGETSR + 92), 0x0f0f_000f, "INTIDs 92..95");
    assert_eq!(v.spi_target(93), None);
    assert_eq!(v.spi_target(95), Some(0));
    // Beyond the last SPI, halfword and unaligned accesses.
    let before = v.clone();
    w32(&mut v, 0, ITARGETSR + 96, 0x0101_0101);
    v.distributor_v2_write(0, ITARGETSR + 40, 2, 0x0101);
    v.distributor_v2_write(0, ITARGETSR + 41, 4, 0x0101_0101);
    assert_eq!(v, before);
    assert_eq!(r32(&v, 0, ITARGETSR + 96), 0);
    assert_eq!(r32(&v, 0, ITARGETSR + 0x3fc), 0);
    assert_eq!(v.distributor_v2_read(0, ITARGETSR + 32, 2), 0);
    assert_eq!(v.distributor_v2_read(0, ITARGETSR + 33, 4), 0);
}

#[test]
fn spi_delivery_target_is_the_lowest_cpu_in_the_mask() {
    let mut v = enabled();
    v.distributor_v2_write(0, ITARGETSR + 40, 1, 0b1100);
    assert_eq!(v.spi_target(40), Some(2));
    assert_eq!(v.pulse(0, 40), Some(2));
    assert_eq!(v.pending_targets(), 0b0100);
    assert_eq!(
        v.distributor_v2_write(0, ITARGETSR + 40, 1, 0b1000),
        0b1000,
        "moved while pending: kick the new target"
    );
    assert_eq!(v.pending_targets(), 0b1000);
    assert_eq!(v.distributor_v2_write(0, ITARGETSR + 40, 1, 0), 0);
    assert_eq!(v.spi_target(40), None);
    assert_eq!(v.pending_targets(), 0, "targets no CPU: not forwarded");
    assert_eq!(r32(&v, 0, ISPENDR + 4), 1 << 8, "but pending");
    let mut lrs = [0; 4];
    for vcpu in 0..4 {
        assert!(!v.flush_to_lrs(vcpu, &mut lrs));
        assert_eq!(lrs, [0; 4]);
    }
    assert_eq!(v.distributor_v2_write(1, ITARGETSR + 40, 1, 0b10), 0b10);
    v.flush_to_lrs(1, &mut lrs);
    assert_eq!(gic::lr::vintid(lrs[0]), 40);
}

#[test]
fn sgir_target_list_filters_and_kick_mask() {
    let mut v = enabled();
    assert_eq!(w32(&mut v, 0, SGIR, sgir(0, 0b1010, 1)), 0b1010);
    assert_eq!(pending_on(&v, 1), 0b1010);
    assert_eq!(v.pending_targets(), 0b1010);
    assert_eq!(
        w32(&mut v, 0, SGIR, sgir(0, 0b1110, 1)),
        0b0100,
        "1 and 3 already pending"
    );
    assert_eq!(
        w32(&mut v, 2, SGIR, sgir(1, 0xff, 2)),
        0b1011,
        "all but the sender, whatever the list"
    );
    assert_eq!(pending_on(&v, 2), 0b1011);
    assert_eq!(w32(&mut v, 3, SGIR, sgir(2, 0, 15)), 0b1000, "to itself");
    assert_eq!(pending_on(&v, 15), 0b1000);
    assert_eq!(w32(&mut v, 0, SGIR, sgir(3, 0xff, 4)), 0, "reserved filter");
    assert_eq!(w32(&mut v, 0, SGIR, sgir(0, 0xf0, 4)), 0, "no CPUs 4..7");
    assert_eq!(w32(&mut v, 0, SGIR, sgir(0, 0, 4)), 0, "empty list");
    assert_eq!(pending_on(&v, 4), 0);
    // NSATT and other bits are ignored: the SGI is sent whatever its group.
    w32(&mut v, 1, IGROUPR, 1 << 6);
    assert_eq!(
        w32(&mut v, 0, SGIR, sgir(0, 0b0011, 6) | 1 << 15 | 0xfff0),
        0b0011
    );
    assert_eq!(pending_on(&v, 6), 0b0011);
    assert!(v.irq(1, 6).unwrap().group1);
    // A disabled SGI is latched all the same, and its target kicked (as `send_sgi` does).
    w32(&mut v, 2, ICENABLER, 1 << 7);
    assert_eq!(w32(&mut v, 0, SGIR, sgir(0, 0b0100, 7)), 0b0100);
    assert_eq!(pending_on(&v, 7), 0b0100);
    assert!(!v.irq(2, 7).unwrap().enabled, "not forwarded");
    assert_eq!(w32(&mut v, 2, ISENABLER, 1 << 7), 0b0100, "enabling kicks");
    // Write-only, words only.
    assert_eq!(r32(&v, 0, SGIR), 0);
    let before = v.clone();
    v.distributor_v2_write(0, SGIR, 1, 8);
    v.distributor_v2_write(0, SGIR, 2, 8);
    assert_eq!(v, before);
}

#[test]
fn spendsgir_cpendsgir() {
    let mut v = enabled();
    // SGI 5 is byte 1 of SPENDSGIR1; any source bit pends it on the accessing vCPU.
    assert_eq!(v.distributor_v2_write(2, SPENDSGIR + 5, 1, 0x80), 0b100);
    assert_eq!(pending_on(&v, 5), 0b100);
    assert_eq!(r32(&v, 2, SPENDSGIR + 4), 0x0000_0100, "pending from CPU 0");
    assert_eq!(r32(&v, 2, CPENDSGIR + 4), 0x0000_0100);
    assert_eq!(v.distributor_v2_read(2, CPENDSGIR + 5, 1), 0x01);
    assert_eq!(r32(&v, 1, SPENDSGIR + 4), 0, "banked");
    assert_eq!(
        v.distributor_v2_write(2, SPENDSGIR + 5, 1, 0x01),
        0,
        "already pending"
    );
    // Words: bytes 0..3 of SPENDSGIR3 are SGIs 12..15; zero bytes do nothing.
    assert_eq!(w32(&mut v, 1, SPENDSGIR + 12, 0x0100_0400), 0b10);
    assert_eq!(r32(&v, 1, SPENDSGIR + 12), 0x0100_0100);
    assert_eq!((pending_on(&v, 13), pending_on(&v, 15)), (0b10, 0b10));
    assert_eq!(pending_on(&v, 12), 0);
    w32(&mut v, 1, CPENDSGIR + 12, 0x0100_0000);
    assert_eq!(r32(&v, 1, SPENDSGIR + 12), 0x0000_0100);
    v.distributor_v2_write(2, CPENDSGIR + 5, 1, 0x40);
    assert_eq!(pending_on(&v, 5), 0, "any source bit clears");
    assert_eq!(w32(&mut v, 2, CPENDSGIR + 4, 0), 0);
    // Halfword and unaligned accesses are ignored.
    let before = v.clone();
    v.distributor_v2_write(0, SPENDSGIR, 2, 0x0101);
    v.distributor_v2_write(0, SPENDSGIR + 2, 4, 0x0101_0101);
    assert_eq!(v, before);
    assert_eq!(v.distributor_v2_read(1, SPENDSGIR + 12, 2), 0);
}

#[test]
fn group_enables_gate_delivery_and_kick_on_enable() {
    let mut v = vgic();
    for vcpu in 0..4 {
        w32(&mut v, vcpu, ISENABLER, 0xffff_ffff);
    }
    w32(&mut v, 0, ISENABLER + 4, 0xffff_ffff);
    v.distributor_v2_write(0, ITARGETSR + 32, 1, 0b10);
    v.distributor_v2_write(0, ITARGETSR + 33, 1, 0b100);
    w32(&mut v, 0, IGROUPR + 4, 1 << 1);
    // SPI 32 (Group 0) to vCPU 1, SPI 33 (Group 1) to vCPU 2, SGI 3 (Group 0) to vCPU 3.
    assert_eq!(v.pulse(0, 32), None, "groups disabled");
    assert_eq!(v.pulse(0, 33), None);
    assert_eq!(
        w32(&mut v, 0, SGIR, sgir(0, 0b1000, 3)),
        0b1000,
        "latched: kicked"
    );
    assert_eq!(v.pending_targets(), 0);
    let mut lrs = [0; 4];
    assert!(!v.flush_to_lrs(1, &mut lrs));
    assert_eq!(lrs, [0; 4]);
    assert_eq!(w32(&mut v, 0, CTLR, 0x1), 0b1010, "Group 0: vCPUs 1 and 3");
    assert_eq!(v.pending_targets(), 0b1010);
    assert_eq!(w32(&mut v, 0, CTLR, 0x1), 0, "no change");
    assert_eq!(w32(&mut v, 0, CTLR, 0x3), 0b0100, "Group 1: vCPU 2 only");
    assert_eq!(w32(&mut v, 0, CTLR, 0x2), 0, "disabling kicks nobody");
    assert_eq!(v.pending_targets(), 0b0100);
    assert_eq!(w32(&mut v, 0, CTLR, 0x3), 0b1010);
    v.flush_to_lrs(1, &mut lrs);
    assert_eq!(gic::lr::vintid(lrs[0]), 32);
    assert_eq!(lrs[0] & gic::lr::GROUP1, 0, "Group 0 list register");
    v.flush_to_lrs(2, &mut lrs);
    assert_eq!(gic::lr::vintid(lrs[0]), 33);
    assert_ne!(lrs[0] & gic::lr::GROUP1, 0);
}

#[test]
fn kick_masks_of_per_interrupt_writes() {
    let mut v = enabled();
    v.distributor_v2_write(0, ITARGETSR + 70, 1, 0b100);
    assert_eq!(
        w32(&mut v, 1, ISPENDR + 8, 1 << 6),
        0b100,
        "SPI 70 to vCPU 2"
    );
    assert_eq!(w32(&mut v, 1, ISPENDR + 8, 1 << 6), 0, "already pending");
    w32(&mut v, 0, ICENABLER + 8, 1 << 6);
    assert_eq!(w32(&mut v, 3, ISENABLER + 8, 1 << 6), 0b100);
    assert_eq!(w32(&mut v, 0, IPRIORITYR + 68, 0xffff_ffff), 0);
    assert_eq!(w32(&mut v, 0, ICPENDR + 8, 1 << 6), 0);
    assert_eq!(w32(&mut v, 3, ISPENDR, 1 << 20), 0b1000, "PPI 20 of vCPU 3");
    // A level PPI with its line high becomes pending by turning level.
    w32(&mut v, 1, ICFGR + 4, 0x8 << 8);
    v.set_line(1, 21, true);
    w32(&mut v, 1, ICPENDR, 1 << 21);
    assert!(
        !v.irq(1, 21).unwrap().is_pending(),
        "edge: the latch is cleared"
    );
    assert_eq!(w32(&mut v, 1, ICFGR + 4, 0), 0b10);
    // Regrouping into an enabled group.
    w32(&mut v, 0, CTLR, 0x1);
    w32(&mut v, 0, IGROUPR + 8, 1 << 7);
    v.pulse(0, 71);
    assert_eq!(v.pending_targets() & 1, 0, "SPI 71 is Group 1, disabled");
    assert_eq!(w32(&mut v, 0, IGROUPR + 8, 0), 0b1);
}

#[test]
fn reserved_offsets_and_unknown_vcpus_raz_wi() {
    let mut v = enabled();
    v.pulse(0, 40);
    let before = v.clone();
    let offsets = [
        0x00c, 0x010, 0x040, 0x07c, 0xd00, 0xd04, 0xdfc, 0xe00, 0xefc, 0xf04, 0xf0c, 0xf30, 0xf40,
        0xfcc, 0x1000, 0x2000, 0x6000, 0xffe8, 0x1_0000,
    ];
    for offset in offsets {
        for size in [1, 2, 4, 8] {
            assert_eq!(v.distributor_v2_write(0, offset, size, u64::MAX), 0);
            assert_eq!(
                v.distributor_v2_read(0, offset, size),
                0,
                "{offset:#x}/{size}"
            );
        }
    }
    for (offset, size) in [(ISENABLER, 4), (ITARGETSR, 1), (CTLR, 4), (TYPER, 4)] {
        assert_eq!(v.distributor_v2_read(4, offset, size), 0, "no vCPU 4");
        assert_eq!(v.distributor_v2_write(4, offset, size, u64::MAX), 0);
    }
    assert_eq!(v, before);
}

#[test]
fn wrong_access_sizes_raz_wi() {
    let mut v = enabled();
    v.pulse(0, 40);
    let before = v.clone();
    for size in [1, 2, 8] {
        for offset in [
            ISENABLER + 4,
            ICENABLER + 4,
            ISPENDR + 4,
            ICFGR + 8,
            IGROUPR + 4,
        ] {
            v.distributor_v2_write(0, offset, size, u64::MAX);
            v.distributor_v2_write(0, offset, size, 0);
            assert_eq!(v.distributor_v2_read(0, offset, size), 0);
        }
        assert_eq!(v.distributor_v2_read(0, CTLR, size), 0);
        assert_eq!(v.distributor_v2_read(0, TYPER, size), 0);
    }
    v.distributor_v2_write(0, ISENABLER + 5, 4, u64::MAX);
    v.distributor_v2_write(0, ITARGETSR + 32, 8, u64::MAX);
    assert_eq!(v, before);
    assert_eq!(v.distributor_v2_read(0, IGROUPR + 6, 4), 0);
    assert_eq!(v.distributor_v2_read(0, ITARGETSR + 32, 8), 0);
}

#[test]
fn frontends_of_the_other_shape_raz_wi() {
    let mut v2 = enabled();
    let before = v2.clone();
    v2.distributor_write(CTLR, 4, 0);
    v2.distributor_write(ISENABLER + 4, 4, 0xffff_ffff);
    v2.redistributor_write(0, 0x1_0100, 4, 0xffff_ffff);
    v2.redistributor_write(0, 0x14, 4, 0x2);
    assert_eq!(v2.send_sgi(0, 0xf | 1 << 40), 0);
    assert_eq!(v2, before);
    assert_eq!(v2.distributor_read(CTLR, 4), 0);
    assert_eq!(v2.distributor_read(TYPER, 4), 0);
    assert_eq!(v2.redistributor_read(0, 0x8, 8), 0);
    assert_eq!(v2.redistributor_read(0, 0x1_0100, 4), 0);

    let mut v3 = Vgic::new(2, vec![0, 1], 32);
    v3.distributor_write(CTLR, 4, 0x3);
    let before = v3.clone();
    assert_eq!(w32(&mut v3, 0, CTLR, 0), 0);
    assert_eq!(w32(&mut v3, 0, SGIR, sgir(1, 0, 1)), 0);
    assert_eq!(w32(&mut v3, 0, ISENABLER, 0xffff_ffff), 0);
    assert_eq!(v3, before);
    assert_eq!(r32(&v3, 0, TYPER), 0);
    assert_eq!(r32(&v3, 0, CTLR), 0);
}
