//! Redistributor register model, register by register.

use gic::{Trigger, Vgic};

const CTLR: u64 = 0x0;
const IIDR: u64 = 0x4;
const TYPER: u64 = 0x8;
const STATUSR: u64 = 0x10;
const WAKER: u64 = 0x14;
const PROPBASER: u64 = 0x70;
const PENDBASER: u64 = 0x78;
const SGI: u64 = 0x1_0000;
const IGROUPR0: u64 = SGI + 0x80;
const ISENABLER0: u64 = SGI + 0x100;
const ICENABLER0: u64 = SGI + 0x180;
const ISPENDR0: u64 = SGI + 0x200;
const ICPENDR0: u64 = SGI + 0x280;
const ISACTIVER0: u64 = SGI + 0x300;
const ICACTIVER0: u64 = SGI + 0x380;
const IPRIORITYR0: u64 = SGI + 0x400;
const ICFGR0: u64 = SGI + 0xc00;
const ICFGR1: u64 = SGI + 0xc04;
const IGRPMODR0: u64 = SGI + 0xd00;
const NSACR: u64 = SGI + 0xe00;

/// 4 vCPUs with distinct affinity levels.
const MPIDRS: [u64; 4] = [0x8000_0000, 0x8000_0001, 0x8000_0100, 0x12_8034_0506];

fn vgic() -> Vgic {
    Vgic::new(4, MPIDRS.to_vec(), 64)
}

fn r32(v: &Vgic, vcpu: usize, offset: u64) -> u64 {
    v.redistributor_read(vcpu, offset, 4)
}

#[test]
fn typer_affinity_processor_number_last() {
    let v = vgic();
    let expect = [
        0x0000_0000_0000_0000,
        0x0000_0001_0000_0100,
        0x0000_0100_0000_0200,
        0x1234_0506_0000_0310,
    ];
    for (vcpu, &typer) in expect.iter().enumerate() {
        assert_eq!(v.redistributor_read(vcpu, TYPER, 8), typer, "vCPU {vcpu}");
        assert_eq!(r32(&v, vcpu, TYPER), typer & 0xffff_ffff);
        assert_eq!(r32(&v, vcpu, TYPER + 4), typer >> 32);
        assert_eq!(typer & 1, 0, "no PLPIS");
    }
    let single = Vgic::new(1, vec![0], 32);
    assert_eq!(
        single.redistributor_read(0, TYPER, 8),
        0x10,
        "the only one is the last"
    );
}

#[test]
fn typer_is_read_only() {
    let mut v = vgic();
    let before = v.clone();
    v.redistributor_write(1, TYPER, 8, u64::MAX);
    v.redistributor_write(1, TYPER, 4, u64::MAX);
    v.redistributor_write(1, TYPER + 4, 4, u64::MAX);
    assert_eq!(v, before);
}

#[test]
fn waker_processor_sleep_and_children_asleep() {
    let mut v = vgic();
    for vcpu in 0..4 {
        assert_eq!(r32(&v, vcpu, WAKER), 0x6, "reset: asleep");
    }
    v.redistributor_write(1, WAKER, 4, 0);
    assert_eq!(r32(&v, 1, WAKER), 0);
    assert_eq!(r32(&v, 0, WAKER), 0x6, "per vCPU");
    v.redistributor_write(1, WAKER, 4, 0x4);
    assert_eq!(r32(&v, 1, WAKER), 0, "ChildrenAsleep is read-only");
    v.redistributor_write(1, WAKER, 4, 0x2);
    assert_eq!(r32(&v, 1, WAKER), 0x6);
    v.redistributor_write(1, WAKER, 4, 0xffff_fff9);
    assert_eq!(r32(&v, 1, WAKER), 0);
    v.redistributor_write(1, WAKER, 1, 0x2);
    assert_eq!(r32(&v, 1, WAKER), 0, "byte write ignored");
}

#[test]
fn ctlr_iidr_statusr_lpi_registers() {
    let mut v = vgic();
    assert_eq!(r32(&v, 0, IIDR), 0x43b);
    let before = v.clone();
    for offset in [CTLR, IIDR, STATUSR, PROPBASER, PENDBASER] {
        v.redistributor_write(2, offset, 4, u64::MAX);
        v.redistributor_write(2, offset, 8, u64::MAX);
    }
    assert_eq!(v, before);
    assert_eq!(r32(&v, 2, CTLR), 0, "EnableLPIs RAZ/WI, RWP 0");
    assert_eq!(r32(&v, 2, STATUSR), 0);
    assert_eq!(v.redistributor_read(2, PROPBASER, 8), 0);
    assert_eq!(v.redistributor_read(2, PENDBASER, 8), 0);
}

#[test]
fn id_registers() {
    let v = vgic();
    for vcpu in 0..4 {
        let pidr2 = r32(&v, vcpu, 0xffe8);
        assert_eq!((pidr2 >> 4) & 0xf, 3, "ArchRev: GICv3");
        assert_eq!(r32(&v, vcpu, 0xffe0), 0x93, "PIDR0");
        assert_eq!(r32(&v, vcpu, 0xfffc), 0xb1, "CIDR3");
    }
    assert_eq!(
        r32(&v, 0, SGI + 0xffe8),
        0,
        "no ID registers in the SGI frame"
    );
}

#[test]
fn igroupr0_per_vcpu() {
    let mut v = vgic();
    assert_eq!(r32(&v, 0, IGROUPR0), 0xffff_ffff, "reset: Group 1");
    v.redistributor_write(0, IGROUPR0, 4, 0xffff_0000);
    assert_eq!(r32(&v, 0, IGROUPR0), 0xffff_0000);
    assert_eq!(r32(&v, 1, IGROUPR0), 0xffff_ffff);
    assert!(!v.irq(0, 3).unwrap().group1);
    assert!(v.irq(1, 3).unwrap().group1);
    assert_eq!(r32(&v, 0, IGROUPR0 + 4), 0, "no SPIs in a redistributor");
}

fn check_set_clear_pair(set: u64, clear: u64) {
    let mut v = vgic();
    assert_eq!(r32(&v, 3, set), 0);
    v.redistributor_write(3, set, 4, 0x0800_0002);
    v.redistributor_write(3, set, 4, 0x0001_0000);
    assert_eq!(r32(&v, 3, set), 0x0801_0002);
    assert_eq!(r32(&v, 3, clear), 0x0801_0002);
    assert_eq!(r32(&v, 2, set), 0, "per vCPU");
    v.redistributor_write(3, clear, 4, 0x0800_0000);
    assert_eq!(r32(&v, 3, set), 0x0001_0002);
    let before = v.clone();
    v.redistributor_write(3, set + 4, 4, u64::MAX);
    v.redistributor_write(3, clear + 4, 4, u64::MAX);
    v.redistributor_write(3, set, 1, u64::MAX);
    v.redistributor_write(3, clear, 8, u64::MAX);
    assert_eq!(v, before, "SPI words, bytes and 64-bit accesses ignored");
    assert_eq!(r32(&v, 3, set + 4), 0);
    // The distributor does not reach them.
    v.distributor_write(set - SGI, 4, u64::MAX);
    v.distributor_write(clear - SGI, 4, u64::MAX);
    assert_eq!(v, before);
}

#[test]
fn isenabler0_icenabler0() {
    check_set_clear_pair(ISENABLER0, ICENABLER0);
}

#[test]
fn ispendr0_icpendr0() {
    check_set_clear_pair(ISPENDR0, ICPENDR0);
    let mut v = vgic();
    v.set_line(1, 27, true);
    assert_eq!(
        r32(&v, 1, ISPENDR0),
        1 << 27,
        "level PPI with its line high"
    );
    assert_eq!(r32(&v, 0, ISPENDR0), 0);
}

#[test]
fn isactiver0_icactiver0() {
    check_set_clear_pair(ISACTIVER0, ICACTIVER0);
}

#[test]
fn ipriorityr0_to_7() {
    let mut v = vgic();
    v.redistributor_write(2, IPRIORITYR0 + 27, 1, 0xa0);
    assert_eq!(v.redistributor_read(2, IPRIORITYR0 + 27, 1), 0xa0);
    assert_eq!(r32(&v, 2, IPRIORITYR0 + 24), 0xa000_0000);
    assert_eq!(r32(&v, 1, IPRIORITYR0 + 24), 0, "per vCPU");
    for word in 0..8u64 {
        let value = (0..4).fold(0, |acc, i| acc | ((4 * word + i) * 8 + 3) << (8 * i));
        v.redistributor_write(2, IPRIORITYR0 + 4 * word, 4, value);
    }
    for intid in 0..32u64 {
        let prio = v.redistributor_read(2, IPRIORITYR0 + intid, 1);
        assert_eq!(prio, intid * 8, "INTID {intid}: low 3 bits not implemented");
        assert_eq!(
            u64::from(v.irq(2, intid as u32).unwrap().priority),
            intid * 8
        );
    }
    let before = v.clone();
    v.redistributor_write(2, IPRIORITYR0 + 32, 4, u64::MAX);
    v.redistributor_write(2, IPRIORITYR0 + 33, 1, u64::MAX);
    assert_eq!(v, before);
    assert_eq!(r32(&v, 2, IPRIORITYR0 + 32), 0);
}

#[test]
fn icfgr0_read_only_icfgr1_writable() {
    let mut v = vgic();
    assert_eq!(r32(&v, 0, ICFGR0), 0xaaaa_aaaa, "SGIs are edge-triggered");
    assert_eq!(r32(&v, 0, ICFGR1), 0, "PPIs reset level-triggered");
    v.redistributor_write(0, ICFGR0, 4, 0);
    assert_eq!(r32(&v, 0, ICFGR0), 0xaaaa_aaaa);
    v.redistributor_write(0, ICFGR1, 4, 0xffff_ffff);
    assert_eq!(r32(&v, 0, ICFGR1), 0xaaaa_aaaa);
    assert_eq!(v.irq(0, 31).unwrap().trigger, Trigger::Edge);
    v.redistributor_write(0, ICFGR1, 4, 0x0080_0000);
    assert_eq!(r32(&v, 0, ICFGR1), 0x0080_0000, "only INTID 27 edge");
    assert_eq!(r32(&v, 1, ICFGR1), 0, "per vCPU");
    assert_eq!(r32(&v, 0, ICFGR1 + 4), 0);
}

#[test]
fn igrpmodr0_nsacr_and_reserved_raz_wi() {
    let mut v = vgic();
    let before = v.clone();
    let offsets = [
        IGRPMODR0,
        NSACR,
        SGI,
        SGI + 0x8,
        SGI + 0x800,
        SGI + 0xf00,
        SGI + 0xffe8,
        0x1_fffc,
        0x2_0000,
        0x3_0000,
        0x40,
        0x1000,
    ];
    for offset in offsets {
        for size in [1, 2, 4, 8] {
            v.redistributor_write(0, offset, size, u64::MAX);
        }
    }
    assert_eq!(v, before);
    for offset in offsets {
        assert_eq!(r32(&v, 0, offset), 0, "{offset:#x}");
    }
}

#[test]
fn unknown_vcpu_raz_wi() {
    let mut v = vgic();
    let before = v.clone();
    v.redistributor_write(4, WAKER, 4, 0);
    v.redistributor_write(4, ISENABLER0, 4, u64::MAX);
    assert_eq!(v, before);
    assert_eq!(v.redistributor_read(4, TYPER, 8), 0);
    assert_eq!(r32(&v, 4, 0xffe8), 0);
}

#[test]
fn constants_are_what_reads_answer_whatever_is_written() {
    let mut v = vgic();
    let constants: Vec<_> = (0..4).map(|vcpu| v.redistributor_constants(vcpu)).collect();
    for (vcpu, frame) in constants.iter().enumerate() {
        assert_eq!(
            frame.len(),
            16,
            "TYPER (one 64-bit, two 32-bit reads), IIDR, 12 identification registers"
        );
        assert_eq!((frame[0].offset, frame[0].size), (TYPER, 8));
        assert_eq!(frame[0].value, v.redistributor_read(vcpu, TYPER, 8));
        for constant in frame {
            v.redistributor_write(vcpu, constant.offset, constant.size, u64::MAX);
        }
        v.redistributor_write(vcpu, CTLR, 4, u64::MAX);
        v.redistributor_write(vcpu, WAKER, 4, 0);
    }
    for (vcpu, frame) in constants.iter().enumerate() {
        for constant in frame {
            assert_eq!(
                v.redistributor_read(vcpu, constant.offset, constant.size),
                constant.value,
                "vCPU {vcpu} {constant:x?}"
            );
        }
        assert_eq!(v.redistributor_constants(vcpu), *frame);
    }
    assert_eq!(v.redistributor_constants(4), [], "no such vCPU");
    assert_eq!(Vgic::new_v2(2, 64).redistributor_constants(0), [], "GICv2");
}
