//! Distributor register model, register by register.

use gic::Vgic;

const CTLR: u64 = 0x0;
const TYPER: u64 = 0x4;
const IIDR: u64 = 0x8;
const TYPER2: u64 = 0xc;
const STATUSR: u64 = 0x10;
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
const IROUTER: u64 = 0x6000;

/// 4 vCPUs (MPIDR 0..3), 64 SPIs (INTIDs 32..95).
fn vgic() -> Vgic {
    Vgic::new(4, vec![0, 1, 2, 3], 64)
}

fn r32(v: &Vgic, offset: u64) -> u64 {
    v.distributor_read(offset, 4)
}

#[test]
fn ctlr_group_enables_with_are_and_ds_fixed() {
    let mut v = vgic();
    assert_eq!(
        r32(&v, CTLR),
        0x50,
        "ARE_NS and DS read as one, groups disabled"
    );
    v.distributor_write(CTLR, 4, 0x3);
    assert_eq!(r32(&v, CTLR), 0x53);
    v.distributor_write(CTLR, 4, 0xffff_ffff);
    assert_eq!(r32(&v, CTLR), 0x53, "RWP reads 0, other bits RAZ/WI");
    v.distributor_write(CTLR, 4, 0x2);
    assert_eq!(r32(&v, CTLR), 0x52);
    v.distributor_write(CTLR, 4, 0);
    assert_eq!(r32(&v, CTLR), 0x50, "ARE cannot be cleared");
    v.distributor_write(CTLR, 1, 0x3);
    assert_eq!(r32(&v, CTLR), 0x50, "byte writes are ignored");
}

#[test]
fn typer_iidr_typer2_statusr() {
    let mut v = vgic();
    let typer = r32(&v, TYPER);
    assert_eq!(typer & 0x1f, 2, "ITLinesNumber = 64 / 32");
    assert_eq!((typer >> 19) & 0x1f, 9, "IDbits: 10 INTID bits");
    assert_eq!(typer & (1 << 17), 0, "no LPIs");
    assert_eq!(typer & (1 << 16), 0, "no MBIS");
    assert_eq!(typer & (1 << 10), 0, "single security state");
    assert_eq!(typer & (1 << 25), 0, "1-of-N supported");
    assert_ne!(typer & (1 << 24), 0, "A3V");
    assert_ne!(typer & (1 << 26), 0, "RSS");
    assert_eq!(typer, 0x0548_0002);
    assert_eq!(r32(&Vgic::new(1, vec![0], 960), TYPER) & 0x1f, 30);
    assert_eq!(r32(&v, IIDR), 0x43b);
    assert_eq!(r32(&v, TYPER2), 0);
    assert_eq!(r32(&v, STATUSR), 0);
    let before = v.clone();
    for reg in [TYPER, IIDR, TYPER2, STATUSR] {
        v.distributor_write(reg, 4, 0xffff_ffff);
    }
    assert_eq!(v, before, "read-only registers ignore writes");
}

#[test]
fn igroupr_read_back_and_banked_word_raz() {
    let mut v = vgic();
    assert_eq!(
        r32(&v, IGROUPR),
        0,
        "INTIDs 0..31 live in the redistributors"
    );
    assert_eq!(r32(&v, IGROUPR + 4), 0xffff_ffff, "reset: Group 1");
    assert_eq!(r32(&v, IGROUPR + 8), 0xffff_ffff);
    assert_eq!(r32(&v, IGROUPR + 12), 0, "beyond the last SPI");
    v.distributor_write(IGROUPR + 4, 4, 0x0000_ffff);
    assert_eq!(r32(&v, IGROUPR + 4), 0x0000_ffff);
    assert!(!v.irq(0, 48).unwrap().group1);
    assert!(v.irq(0, 47).unwrap().group1);
    v.distributor_write(IGROUPR, 4, 0);
    assert!(
        v.irq(0, 0).unwrap().group1,
        "distributor does not reach SGIs"
    );
    assert_eq!(r32(&v, IGROUPR), 0);
}

/// A set/clear register pair: writing ones to the set register sets, to the clear one clears,
/// zeros do nothing, and both read the same state.
fn check_set_clear_pair(set: u64, clear: u64) {
    let mut v = vgic();
    assert_eq!(r32(&v, set + 4), 0);
    v.distributor_write(set + 4, 4, 0x8000_0001);
    v.distributor_write(set + 8, 4, 0x0000_f000);
    v.distributor_write(set + 4, 4, 0x0000_0100);
    assert_eq!(r32(&v, set + 4), 0x8000_0101);
    assert_eq!(r32(&v, clear + 4), 0x8000_0101);
    assert_eq!(r32(&v, set + 8), 0x0000_f000);
    v.distributor_write(clear + 4, 4, 0x0000_0001);
    assert_eq!(r32(&v, set + 4), 0x8000_0100);
    v.distributor_write(clear + 4, 4, 0);
    assert_eq!(r32(&v, clear + 4), 0x8000_0100);
    // Word 0 (SGIs/PPIs) and the words past the last SPI are RAZ/WI.
    let before = v.clone();
    for word in [0, 3, 31] {
        v.distributor_write(set + 4 * word, 4, 0xffff_ffff);
        v.distributor_write(clear + 4 * word, 4, 0xffff_ffff);
        assert_eq!(r32(&v, set + 4 * word), 0);
    }
    assert_eq!(v, before);
    assert_eq!(r32(&v, set + 4), 0x8000_0100, "untouched");
}

#[test]
fn isenabler_icenabler() {
    check_set_clear_pair(ISENABLER, ICENABLER);
    let mut v = vgic();
    v.distributor_write(ISENABLER + 4, 4, 1 << 1);
    assert!(v.irq(0, 33).unwrap().enabled);
}

#[test]
fn ispendr_icpendr() {
    check_set_clear_pair(ISPENDR, ICPENDR);
    let mut v = vgic();
    v.distributor_write(ISPENDR + 4, 4, 1 << 2);
    assert!(v.irq(0, 34).unwrap().latch);
    // A level interrupt with its line high reads pending and ICPENDR does not clear that.
    v.set_line(0, 40, true);
    assert_eq!(r32(&v, ISPENDR + 4), (1 << 2) | (1 << 8));
    v.distributor_write(ICPENDR + 4, 4, 0xffff_ffff);
    assert_eq!(r32(&v, ISPENDR + 4), 1 << 8);
    v.set_line(0, 40, false);
    assert_eq!(r32(&v, ISPENDR + 4), 0);
}

#[test]
fn isactiver_icactiver() {
    check_set_clear_pair(ISACTIVER, ICACTIVER);
}

#[test]
fn ipriorityr_byte_and_word_access() {
    let mut v = vgic();
    let p32 = IPRIORITYR + 32;
    assert_eq!(r32(&v, p32), 0);
    v.distributor_write(p32 + 1, 1, 0xa0);
    assert_eq!(v.distributor_read(p32 + 1, 1), 0xa0);
    assert_eq!(r32(&v, p32), 0x0000_a000);
    assert_eq!(v.irq(0, 33).unwrap().priority, 0xa0);
    v.distributor_write(p32, 4, 0x1020_3040);
    assert_eq!(r32(&v, p32), 0x1020_3040);
    assert_eq!(v.distributor_read(p32 + 2, 1), 0x20);
    assert_eq!(v.distributor_read(p32 + 3, 1), 0x10);
    v.distributor_write(p32 + 3, 1, 0xff);
    assert_eq!(r32(&v, p32), 0xf820_3040, "5 priority bits implemented");
    v.distributor_write(p32 + 4, 4, 0xffff_ffff);
    assert_eq!(r32(&v, p32 + 4), 0xf8f8_f8f8);
    // Last SPI (95) is at byte 95; 96.. are out of range.
    v.distributor_write(IPRIORITYR + 95, 1, 0x80);
    assert_eq!(v.distributor_read(IPRIORITYR + 92, 4), 0x8000_0000);
    let before = v.clone();
    v.distributor_write(IPRIORITYR + 96, 4, 0xffff_ffff);
    v.distributor_write(IPRIORITYR, 4, 0xffff_ffff);
    v.distributor_write(IPRIORITYR + 31, 1, 0xff);
    v.distributor_write(p32, 2, 0xffff);
    v.distributor_write(p32 + 2, 4, 0xffff_ffff);
    assert_eq!(
        v, before,
        "banked, out-of-range, halfword and unaligned writes ignored"
    );
    assert_eq!(r32(&v, IPRIORITYR), 0);
    assert_eq!(r32(&v, IPRIORITYR + 96), 0);
    assert_eq!(v.distributor_read(p32, 2), 0);
    assert_eq!(v.distributor_read(p32 + 2, 4), 0);
}

#[test]
fn itargetsr_raz_wi() {
    let mut v = vgic();
    let before = v.clone();
    for offset in [ITARGETSR, ITARGETSR + 32, ITARGETSR + 0x3fc] {
        v.distributor_write(offset, 4, 0x0101_0101);
        v.distributor_write(offset, 1, 0x01);
        assert_eq!(r32(&v, offset), 0);
        assert_eq!(v.distributor_read(offset, 1), 0);
    }
    assert_eq!(v, before);
}

#[test]
fn icfgr_edge_bits() {
    let mut v = vgic();
    // ICFGR2 covers INTIDs 32..47.
    assert_eq!(r32(&v, ICFGR + 8), 0, "SPIs reset level-triggered");
    v.distributor_write(ICFGR + 8, 4, 0xffff_ffff);
    assert_eq!(
        r32(&v, ICFGR + 8),
        0xaaaa_aaaa,
        "bit 0 of each field is RES0"
    );
    assert_eq!(v.irq(0, 47).unwrap().trigger, gic::Trigger::Edge);
    v.distributor_write(ICFGR + 8, 4, 0x0000_0008);
    assert_eq!(r32(&v, ICFGR + 8), 0x8);
    assert_eq!(v.irq(0, 33).unwrap().trigger, gic::Trigger::Edge);
    assert_eq!(v.irq(0, 32).unwrap().trigger, gic::Trigger::Level);
    v.distributor_write(ICFGR + 20, 4, 0x8000_0000);
    assert_eq!(r32(&v, ICFGR + 20), 0x8000_0000, "INTID 95");
    let before = v.clone();
    for word in [0, 1, 6, 63] {
        v.distributor_write(ICFGR + 4 * word, 4, 0xffff_ffff);
        assert_eq!(r32(&v, ICFGR + 4 * word), 0);
    }
    assert_eq!(
        v, before,
        "ICFGR0/1 (banked) and beyond the last SPI are RAZ/WI"
    );
}

#[test]
fn irouter_64_bit_and_halves() {
    let mut v = vgic();
    let r33 = IROUTER + 8 * 33;
    assert_eq!(v.distributor_read(r33, 8), 0);
    v.distributor_write(r33, 8, 0xffff_ffff_ffff_ffff);
    assert_eq!(
        v.distributor_read(r33, 8),
        0x0000_00ff_80ff_ffff,
        "Aff3, IRM, Aff2..0"
    );
    assert_eq!(v.distributor_read(r33, 4), 0x80ff_ffff);
    assert_eq!(v.distributor_read(r33 + 4, 4), 0xff);
    v.distributor_write(r33 + 4, 4, 0x12);
    assert_eq!(v.distributor_read(r33, 8), 0x0000_0012_80ff_ffff);
    v.distributor_write(r33, 4, 0x0000_0302);
    assert_eq!(v.distributor_read(r33, 8), 0x0000_0012_0000_0302);
    v.distributor_write(r33, 8, 0x3);
    assert_eq!(v.distributor_read(r33, 8), 3);
    assert_eq!(v.spi_target(33), Some(3));
    // Last SPI, then out of range, banked and odd sizes.
    v.distributor_write(IROUTER + 8 * 95, 8, 0x2);
    assert_eq!(v.distributor_read(IROUTER + 8 * 95, 8), 2);
    let before = v.clone();
    for n in [0, 31, 96, 1019] {
        v.distributor_write(IROUTER + 8 * n, 8, 0x1);
        assert_eq!(v.distributor_read(IROUTER + 8 * n, 8), 0);
    }
    v.distributor_write(r33 + 4, 8, 0x1);
    v.distributor_write(r33, 2, 0x1);
    v.distributor_write(r33 + 2, 4, 0x1);
    assert_eq!(v, before);
    assert_eq!(v.distributor_read(r33, 2), 0);
    assert_eq!(v.distributor_read(r33 + 4, 8), 0);
}

#[test]
fn id_registers() {
    let mut v = vgic();
    let pidr2 = r32(&v, 0xffe8);
    assert_eq!((pidr2 >> 4) & 0xf, 3, "ArchRev: GICv3");
    assert_eq!(pidr2, 0x3b);
    assert_eq!(r32(&v, 0xffd0), 0x44, "PIDR4");
    assert_eq!(r32(&v, 0xffe0), 0x92, "PIDR0");
    assert_eq!(r32(&v, 0xffe4), 0xb4, "PIDR1");
    let cidr: Vec<u64> = (0..4).map(|i| r32(&v, 0xfff0 + 4 * i)).collect();
    assert_eq!(cidr, [0x0d, 0xf0, 0x05, 0xb1]);
    assert_eq!(r32(&v, 0xffcc), 0);
    let before = v.clone();
    v.distributor_write(0xffe8, 4, 0);
    assert_eq!(v, before);
    assert_eq!(r32(&v, 0xffe8), 0x3b);
}

#[test]
fn reserved_offsets_raz_wi() {
    let mut v = vgic();
    v.distributor_write(CTLR, 4, 0x3);
    let before = v.clone();
    // SETSPI/CLRSPI, reserved, IGRPMODR, NSACR, SGIR, C/SPENDSGIR, extended ranges, IROUTER
    // gap, beyond the frame and the end of IROUTER.
    let offsets = [
        0x14,
        0x40,
        0x48,
        0x50,
        0x58,
        0x7c,
        0xd00,
        0xd04,
        0xd7c,
        0xe00,
        0xe04,
        0xefc,
        0xf00,
        0xf10,
        0xf20,
        0xf30,
        0x1000,
        0x2000,
        0x5ffc,
        0x8000,
        0xa000,
        0xc000,
        0xfffc + 4,
        0x1_0000,
        0x7ffc,
    ];
    for offset in offsets {
        for size in [1, 2, 4, 8] {
            v.distributor_write(offset, size, u64::MAX);
        }
    }
    assert_eq!(v, before);
    for offset in offsets {
        for size in [1, 2, 4, 8] {
            assert_eq!(v.distributor_read(offset, size), 0, "{offset:#x}/{size}");
        }
    }
}

#[test]
fn wrong_access_sizes_raz_wi() {
    let mut v = vgic();
    let before = v.clone();
    for size in [1, 2, 8] {
        v.distributor_write(ISENABLER + 4, size, u64::MAX);
        v.distributor_write(ICFGR + 8, size, u64::MAX);
        v.distributor_write(IGROUPR + 4, size, 0);
        assert_eq!(v.distributor_read(CTLR, size), 0);
        assert_eq!(v.distributor_read(TYPER, size), 0);
    }
    v.distributor_write(ISENABLER + 5, 4, u64::MAX);
    assert_eq!(v, before);
    assert_eq!(v.distributor_read(IGROUPR + 4, 8), 0);
    assert_eq!(v.distributor_read(IGROUPR + 6, 4), 0);
}

#[test]
fn writes_that_raise_an_spi_say_whom_to_kick() {
    let mut v = vgic();
    // SPI 40 routed to vCPU 2 (Aff0 = 2), enabled, Group 1; the distributor's groups still off.
    assert_eq!(v.distributor_write(IROUTER + 8 * 40, 8, 2), 0);
    assert_eq!(v.distributor_write(IGROUPR + 4, 4, 1 << 8), 0);
    assert_eq!(v.distributor_write(ISENABLER + 4, 4, 1 << 8), 0);
    // Pending, but Group 1 is off: nobody to kick yet; enabling the group kicks its owner.
    assert_eq!(v.distributor_write(ISPENDR + 4, 4, 1 << 8), 0);
    assert_eq!(v.distributor_write(CTLR, 4, 0x2), 1 << 2);
    // Rerouted while pending: its new owner is kicked.
    assert_eq!(v.distributor_write(IROUTER + 8 * 40, 8, 3), 1 << 3);
    // Pending again when it already was: nothing new.
    assert_eq!(v.distributor_write(ISPENDR + 4, 4, 1 << 8), 0);
    // Cleared, then pended: kicked; disabled and enabled while pending: kicked again.
    assert_eq!(v.distributor_write(ICPENDR + 4, 4, 1 << 8), 0);
    assert_eq!(v.distributor_write(ISPENDR + 4, 4, 1 << 8), 1 << 3);
    assert_eq!(v.distributor_write(ICENABLER + 4, 4, 1 << 8), 0);
    assert_eq!(v.distributor_write(ISENABLER + 4, 4, 1 << 8), 1 << 3);
    // Registers that raise nothing kick nobody.
    assert_eq!(v.distributor_write(IPRIORITYR + 40, 1, 0x80), 0);
    assert_eq!(v.distributor_write(TYPER, 4, !0), 0);
}

#[test]
fn a_redistributor_write_that_raises_a_private_interrupt_kicks_its_vcpu() {
    const SGI_FRAME: u64 = 0x1_0000;
    let mut v = vgic();
    v.distributor_write(CTLR, 4, 0x2);
    // vCPU 1's PPI 20: Group 1, enabled, then pended (as another vCPU's write could).
    assert_eq!(v.redistributor_write(1, SGI_FRAME + IGROUPR, 4, 1 << 20), 0);
    assert_eq!(
        v.redistributor_write(1, SGI_FRAME + ISENABLER, 4, 1 << 20),
        0
    );
    assert_eq!(
        v.redistributor_write(1, SGI_FRAME + ISPENDR, 4, 1 << 20),
        1 << 1
    );
    assert_eq!(v.redistributor_write(1, SGI_FRAME + ISPENDR, 4, 1 << 20), 0);
    // GICR_WAKER: no interrupt raised.
    assert_eq!(v.redistributor_write(1, 0x14, 4, 0), 0);
}

#[test]
fn constants_are_what_reads_answer_whatever_is_written() {
    let all_ones = |v: &mut Vgic, offset: u64| match v.shape() {
        gic::Shape::V3 => v.distributor_write(offset, 4, 0xffff_ffff),
        gic::Shape::V2 => v.distributor_v2_write(1, offset, 4, 0xffff_ffff),
    };
    for mut v in [vgic(), Vgic::new_v2(4, 64)] {
        let constants = v.distributor_constants();
        assert_eq!(
            constants.len(),
            14,
            "TYPER, IIDR and 12 identification registers"
        );
        assert_eq!(constants[0].offset, TYPER);
        assert_eq!(
            constants[1],
            gic::ConstantRead {
                offset: IIDR,
                size: 4,
                value: 0x43b
            }
        );
        for constant in &constants {
            let _ = all_ones(&mut v, constant.offset);
        }
        let _ = all_ones(&mut v, CTLR);
        for constant in &constants {
            let (offset, size) = (constant.offset, constant.size);
            let read = match v.shape() {
                gic::Shape::V3 => v.distributor_read(offset, size),
                gic::Shape::V2 => v.distributor_v2_read(3, offset, size),
            };
            assert_eq!(read, constant.value, "{:?} {offset:#x}", v.shape());
        }
        assert_eq!(v.distributor_constants(), constants);
    }
}
