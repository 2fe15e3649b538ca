//! Property test: the vGIC against a reference model of GIC pending/active semantics, for
//! edge-triggered SPIs on one vCPU whose guest acknowledges and completes interrupts through
//! its list registers while device events and distributor writes happen at exits; a GICv3
//! (Group 1) or a GICv2 (Group 0, list registers through `GICH_LR`).

mod common;

use common::{flush, sync, write};
use gic::lr::{self, LrState};
use gic::{Shape, Vgic};
use proptest::prelude::*;

const FIRST: u32 = 32;
const COUNT: u32 = 10;

#[derive(Clone, Debug)]
enum Exit {
    Pulse(u32),
    SetPending(u32),
    ClearPending(u32),
    Enable(u32),
    Disable(u32),
    SetActive(u32),
    ClearActive(u32),
}

#[derive(Clone, Debug)]
enum GuestOp {
    Ack,
    /// Complete the n-th active LR (modulo their number).
    Eoi(usize),
}

#[derive(Clone, Copy, Debug, Default)]
struct Reference {
    pending: bool,
    active: bool,
    enabled: bool,
}

fn exit_op() -> impl Strategy<Value = Exit> {
    let irq = FIRST..FIRST + COUNT;
    prop_oneof![
        4 => irq.clone().prop_map(Exit::Pulse),
        1 => irq.clone().prop_map(Exit::SetPending),
        1 => irq.clone().prop_map(Exit::ClearPending),
        1 => irq.clone().prop_map(Exit::Enable),
        1 => irq.clone().prop_map(Exit::Disable),
        1 => irq.clone().prop_map(Exit::SetActive),
        1 => irq.prop_map(Exit::ClearActive),
    ]
}

fn guest_op() -> impl Strategy<Value = GuestOp> {
    prop_oneof![Just(GuestOp::Ack), (0..4usize).prop_map(GuestOp::Eoi)]
}

fn word_bit(intid: u32) -> (u64, u64) {
    (u64::from(intid / 32) * 4, 1 << (intid % 32))
}

/// Checks the LRs just written by a flush against the reference.
fn check_lrs(lrs: &[u64; 4], reference: &[Reference], overflow: bool) {
    let mut seen = Vec::new();
    for &value in lrs.iter().filter(|&&v| lr::state(v) != LrState::Invalid) {
        let intid = lr::vintid(value);
        assert!(!seen.contains(&intid), "INTID {intid} in two LRs: {lrs:x?}");
        seen.push(intid);
        let r = reference[(intid - FIRST) as usize];
        let state = lr::state(value);
        assert_eq!(state.active(), r.active, "INTID {intid} active");
        assert_eq!(
            state.pending(),
            r.pending && r.enabled,
            "INTID {intid} pending"
        );
    }
    let wanted = reference
        .iter()
        .filter(|r| r.active || (r.pending && r.enabled))
        .count();
    assert_eq!(seen.len(), wanted.min(4));
    assert_eq!(overflow, wanted > 4);
}

fn ack(lrs: &mut [u64; 4], reference: &mut [Reference]) {
    let best = (0..4)
        .filter(|&i| lr::state(lrs[i]) == LrState::Pending)
        .min_by_key(|&i| lr::priority(lrs[i]));
    if let Some(slot) = best {
        lrs[slot] = lr::with_state(lrs[slot], LrState::Active);
        let r = &mut reference[(lr::vintid(lrs[slot]) - FIRST) as usize];
        assert!(
            r.pending && !r.active,
            "acknowledged an interrupt that was not pending"
        );
        r.pending = false;
        r.active = true;
    }
}

fn eoi(lrs: &mut [u64; 4], reference: &mut [Reference], n: usize) {
    let active: Vec<usize> = (0..4).filter(|&i| lr::state(lrs[i]).active()).collect();
    if active.is_empty() {
        return;
    }
    let slot = active[n % active.len()];
    let state = lr::state(lrs[slot]);
    lrs[slot] = lr::with_state(lrs[slot], LrState::from_bits(state.pending(), false));
    reference[(lr::vintid(lrs[slot]) - FIRST) as usize].active = false;
}

/// Applies a device event or distributor write to the vGIC and the reference.
fn apply(v: &mut Vgic, reference: &mut [Reference], op: &Exit) {
    let (intid, reg) = match *op {
        Exit::Pulse(i) => {
            v.pulse(0, i);
            reference[(i - FIRST) as usize].pending = true;
            return;
        }
        Exit::SetPending(i) => (i, 0x200),
        Exit::ClearPending(i) => (i, 0x280),
        Exit::Enable(i) => (i, 0x100),
        Exit::Disable(i) => (i, 0x180),
        Exit::SetActive(i) => (i, 0x300),
        Exit::ClearActive(i) => (i, 0x380),
    };
    let (word, bit) = word_bit(intid);
    write(v, 0, reg + word, 4, bit);
    let r = &mut reference[(intid - FIRST) as usize];
    match reg {
        0x200 => r.pending = true,
        0x280 => r.pending = false,
        0x100 => r.enabled = true,
        0x180 => r.enabled = false,
        0x300 => r.active = true,
        _ => r.active = false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn matches_the_reference_model(
        v2 in any::<bool>(),
        priorities in proptest::collection::vec(0u8..32, COUNT as usize),
        runs in proptest::collection::vec(
            (
                proptest::collection::vec(exit_op(), 0..4),
                proptest::collection::vec(guest_op(), 0..6),
                proptest::collection::vec(exit_op(), 0..3),
            ),
            1..40,
        ),
    ) {
        let shape = if v2 { Shape::V2 } else { Shape::V3 };
        let mut v = common::vgic(shape, 1, 32);
        // Only the group the interrupts reset to: Group 1 on a GICv3, Group 0 on a GICv2.
        write(&mut v, 0, 0x0, 4, if common::resets_group1(shape) { 0x2 } else { 0x1 });
        write(&mut v, 0, 0xc08, 4, 0xaaaa_aaaa);
        let mut reference = vec![Reference::default(); COUNT as usize];
        for (i, &p) in priorities.iter().enumerate() {
            let intid = FIRST + i as u32;
            write(&mut v, 0, 0x400 + u64::from(intid), 1, u64::from(p) * 8);
            common::route(&mut v, intid, 0);
        }
        let mut lrs = [0u64; 4];
        for (exits, guest, late) in &runs {
            for op in exits {
                apply(&mut v, &mut reference, op);
            }
            let overflow = flush(&mut v, 0, &mut lrs);
            check_lrs(&lrs, &reference, overflow);
            for op in guest {
                match op {
                    GuestOp::Ack => ack(&mut lrs, &mut reference),
                    GuestOp::Eoi(n) => eoi(&mut lrs, &mut reference, *n),
                }
            }
            // Events while the vCPU still runs (another CPU), after the guest's steps.
            for op in late {
                apply(&mut v, &mut reference, op);
            }
            sync(&mut v, 0, &lrs);
            for (i, r) in reference.iter().enumerate() {
                let irq = v.irq(0, FIRST + i as u32).unwrap();
                prop_assert_eq!(irq.is_pending(), r.pending, "INTID {} pending", FIRST + i as u32);
                prop_assert_eq!(irq.is_active(), r.active, "INTID {} active", FIRST + i as u32);
            }
            prop_assert_eq!(v.has_pending(0), reference.iter().any(|r| r.pending && r.enabled));
        }
        // Enable everything and let the guest finish: all that is pending is delivered once.
        write(&mut v, 0, 0x104, 4, 0xffff_ffff);
        for r in &mut reference {
            r.enabled = true;
        }
        for _ in 0..100 {
            let overflow = flush(&mut v, 0, &mut lrs);
            check_lrs(&lrs, &reference, overflow);
            while lrs.iter().any(|&x| lr::state(x).active()) {
                eoi(&mut lrs, &mut reference, 0);
            }
            ack(&mut lrs, &mut reference);
            sync(&mut v, 0, &lrs);
        }
        prop_assert!(reference.iter().all(|r| !r.pending && !r.active));
        prop_assert_eq!(v.pending_targets(), 0);
    }
}
