//! List-register scheduling against a simulated guest CPU interface, for both shapes: the
//! scheduling is one model, the shapes differ only in their register frontends and LR encoding.

mod common;

use common::{flush, read, resets_group1, route, sync, write};
use gic::lr::{self, LrState};
use gic::{Shape, Trigger, Vgic};

/// A guest CPU interface acting on its list registers as the hardware does (EOImode 0).
struct Guest {
    lrs: [u64; 4],
}

impl Guest {
    fn new() -> Self {
        Self { lrs: [0; 4] }
    }

    /// Acknowledges the most urgent pending LR (it becomes active).
    fn ack(&mut self) -> Option<u32> {
        let slot = (0..self.lrs.len())
            .filter(|&i| lr::state(self.lrs[i]) == LrState::Pending)
            .min_by_key(|&i| lr::priority(self.lrs[i]))?;
        self.lrs[slot] = lr::with_state(self.lrs[slot], LrState::Active);
        Some(lr::vintid(self.lrs[slot]))
    }

    /// Priority drop and deactivation of `intid`, which must be active in an LR.
    fn eoi(&mut self, intid: u32) {
        let slot = self
            .lrs
            .iter()
            .position(|&v| lr::vintid(v) == intid && lr::state(v).active())
            .unwrap_or_else(|| panic!("INTID {intid} not active in an LR: {:x?}", self.lrs));
        let state = lr::state(self.lrs[slot]);
        self.lrs[slot] = lr::with_state(self.lrs[slot], LrState::from_bits(state.pending(), false));
    }

    /// INTIDs in the LRs, in LR order, with their states.
    fn contents(&self) -> Vec<(u32, LrState)> {
        self.lrs
            .iter()
            .filter(|&&v| lr::state(v) != LrState::Invalid)
            .map(|&v| (lr::vintid(v), lr::state(v)))
            .collect()
    }
}

/// Runs `vcpu` until nothing is left to deliver: each run the guest acknowledges and completes
/// every pending LR; returns the INTIDs in delivery order.
fn drain(v: &mut Vgic, vcpu: usize, g: &mut Guest) -> Vec<u32> {
    let mut delivered = Vec::new();
    for _ in 0..1000 {
        let more = flush(v, vcpu, &mut g.lrs);
        let before = delivered.len();
        while let Some(intid) = g.ack() {
            delivered.push(intid);
            g.eoi(intid);
        }
        sync(v, vcpu, &g.lrs);
        if delivered.len() == before && !more {
            return delivered;
        }
    }
    panic!("no quiescence");
}

/// 4 vCPUs (GICv3: MPIDR 0..3), 64 SPIs routed to vCPU 0, both groups enabled, every SPI
/// enabled and edge-triggered with priority 0xa0, every SGI/PPI enabled; groups as they reset.
fn setup(shape: Shape) -> Vgic {
    let mut v = common::vgic(shape, 4, 64);
    write(&mut v, 0, 0x0, 4, 0x3);
    for word in 1..3 {
        write(&mut v, 0, 0x100 + 4 * word, 4, 0xffff_ffff);
    }
    for word in 2..6 {
        write(&mut v, 0, 0xc00 + 4 * word, 4, 0xaaaa_aaaa);
    }
    for intid in 32..96 {
        write(&mut v, 0, 0x400 + intid, 1, 0xa0);
        route(&mut v, intid as u32, 0);
    }
    for vcpu in 0..4 {
        write(&mut v, vcpu, 0x100, 4, 0xffff_ffff);
    }
    v
}

fn set_priority(v: &mut Vgic, intid: u32, prio: u8) {
    write(v, 0, 0x400 + u64::from(intid), 1, prio.into());
}

fn make_level(v: &mut Vgic, intid: u32) {
    let word = 0xc00 + u64::from(intid / 16) * 4;
    let cfg = read(v, 0, word, 4) & !(2 << (2 * (intid % 16)));
    write(v, 0, word, 4, cfg);
    assert_eq!(v.irq(0, intid).unwrap().trigger, Trigger::Level);
}

#[test]
fn lr_encoding() {
    let value = lr::encode(27, 0xa0, true, Some(27), true, LrState::Pending);
    assert_eq!(
        value,
        lr::HW | 1 << 62 | lr::GROUP1 | 0xa0 << 48 | 27 << 32 | 27
    );
    assert_eq!(lr::pintid(value), Some(27));
    assert_eq!(value & lr::EOI, 0, "no EOI request with HW");
    let value = lr::encode(33, 0x80, false, None, true, LrState::PendingActive);
    assert_eq!(value, 3 << 62 | 0x80 << 48 | lr::EOI | 33);
    assert_eq!(lr::pintid(value), None);
    assert_eq!(lr::state(value), LrState::PendingActive);
    assert_eq!(lr::priority(value), 0x80);
    assert_eq!(lr::vintid(value), 33);
    assert_eq!(
        lr::state(lr::with_state(value, LrState::Active)),
        LrState::Active
    );
    assert_eq!(lr::with_state(value, LrState::Invalid) >> 62, 0);
}

fn priority_order_into_four_lrs_then_the_rest(shape: Shape) {
    let mut v = setup(shape);
    let prios = [
        (40, 0x90),
        (41, 0x10),
        (42, 0xf0),
        (43, 0x30),
        (44, 0x50),
        (45, 0x20),
    ];
    for (intid, prio) in prios {
        set_priority(&mut v, intid, prio);
        v.pulse(0, intid);
    }
    let mut g = Guest::new();
    assert!(flush(&mut v, 0, &mut g.lrs), "2 did not fit");
    assert_eq!(
        g.contents(),
        [41, 45, 43, 44].map(|i| (i, LrState::Pending)).to_vec()
    );
    for &value in &g.lrs {
        assert_eq!(
            value & lr::GROUP1 != 0,
            resets_group1(shape),
            "the group the interrupts reset to"
        );
        assert_eq!(value & (lr::EOI | lr::HW), 0, "edge, no HW");
    }
    assert_eq!(lr::priority(g.lrs[0]), 0x10);
    // The guest completes all four.
    for slot in 0..4 {
        g.lrs[slot] = lr::with_state(g.lrs[slot], LrState::Invalid);
    }
    sync(&mut v, 0, &g.lrs);
    assert!(!flush(&mut v, 0, &mut g.lrs), "the rest fits");
    assert_eq!(
        g.contents(),
        [(40, LrState::Pending), (42, LrState::Pending)]
    );
    assert_eq!(g.lrs[2..], [0, 0]);
    assert_eq!(drain(&mut v, 0, &mut g), [40, 42]);
    assert!(g.contents().is_empty());
    assert!(!v.has_pending(0));
}

fn more_urgent_interrupt_displaces_a_pending_lr(shape: Shape) {
    let mut v = setup(shape);
    for intid in 32..36 {
        v.pulse(0, intid);
    }
    let mut g = Guest::new();
    assert!(!flush(&mut v, 0, &mut g.lrs));
    sync(&mut v, 0, &g.lrs);
    set_priority(&mut v, 50, 0x00);
    v.pulse(0, 50);
    assert!(flush(&mut v, 0, &mut g.lrs));
    assert_eq!(lr::vintid(g.lrs[0]), 50);
    let mut got = drain(&mut v, 0, &mut g);
    got.sort_unstable();
    assert_eq!(
        got,
        [32, 33, 34, 35, 50],
        "the displaced one is kept pending"
    );
}

fn interrupt_storm_each_delivered_exactly_once(shape: Shape) {
    let mut v = setup(shape);
    for intid in 32..72u32 {
        set_priority(&mut v, intid, ((intid * 37) % 32) as u8 * 8);
        for _ in 0..3 {
            v.pulse(0, intid);
        }
    }
    let mut g = Guest::new();
    let mut delivered = drain(&mut v, 0, &mut g);
    assert_eq!(delivered.len(), 40);
    delivered.sort_unstable();
    assert_eq!(delivered, (32..72).collect::<Vec<_>>());
    assert!(!v.has_pending(0));
    assert_eq!(read(&v, 0, 0x204, 4), 0);
}

fn interrupt_storm_with_exits_inside_handlers(shape: Shape) {
    // Each run the guest completes what it acknowledged last run and acknowledges one more
    // (so there is always an active interrupt held over an exit), while new pulses arrive at
    // every exit.
    let mut v = setup(shape);
    for intid in 32..96u32 {
        set_priority(&mut v, intid, ((intid * 11) % 32) as u8 * 8);
    }
    let mut g = Guest::new();
    let mut delivered = vec![0u32; 96];
    let mut handling: Option<u32> = None;
    let mut next = 32;
    for _ in 0..400 {
        for _ in 0..2 {
            if next < 96 {
                v.pulse(0, next);
                next += 1;
            }
        }
        flush(&mut v, 0, &mut g.lrs);
        let mut seen: Vec<u32> = g.contents().iter().map(|c| c.0).collect();
        seen.dedup();
        assert_eq!(seen.len(), g.contents().len(), "an INTID in two LRs");
        if let Some(intid) = handling.take() {
            g.eoi(intid);
        }
        handling = g.ack();
        if let Some(intid) = handling {
            delivered[intid as usize] += 1;
        }
        sync(&mut v, 0, &g.lrs);
        if next == 96 && handling.is_none() && !v.has_pending(0) {
            break;
        }
    }
    assert_eq!(delivered[..32], [0; 32]);
    assert_eq!(delivered[32..], [1; 64]);
}

fn level_line_redelivered_until_lowered(shape: Shape) {
    let mut v = setup(shape);
    make_level(&mut v, 33);
    assert_eq!(v.set_line(0, 33, true), Some(0), "kick vCPU 0");
    let mut g = Guest::new();
    for _ in 0..3 {
        assert!(!flush(&mut v, 0, &mut g.lrs));
        assert_eq!(g.contents(), [(33, LrState::Pending)]);
        assert_ne!(g.lrs[0] & lr::EOI, 0, "level: EOI maintenance requested");
        assert_eq!(g.ack(), Some(33));
        g.eoi(33);
        sync(&mut v, 0, &g.lrs);
        assert!(v.has_pending(0), "line still high");
    }
    // The handler quiets the device (a trapped access: exit, line low, entry), then EOIs.
    flush(&mut v, 0, &mut g.lrs);
    assert_eq!(g.ack(), Some(33));
    sync(&mut v, 0, &g.lrs);
    v.set_line(0, 33, false);
    flush(&mut v, 0, &mut g.lrs);
    assert_eq!(g.contents(), [(33, LrState::Active)], "kept while active");
    g.eoi(33);
    sync(&mut v, 0, &g.lrs);
    assert!(drain(&mut v, 0, &mut g).is_empty());
    assert!(!v.has_pending(0));
}

fn level_line_high_while_active_is_pending_and_active(shape: Shape) {
    let mut v = setup(shape);
    make_level(&mut v, 40);
    v.set_line(0, 40, true);
    let mut g = Guest::new();
    flush(&mut v, 0, &mut g.lrs);
    assert_eq!(g.ack(), Some(40));
    sync(&mut v, 0, &g.lrs);
    flush(&mut v, 0, &mut g.lrs);
    assert_eq!(g.contents(), [(40, LrState::PendingActive)]);
    g.eoi(40);
    assert_eq!(g.ack(), Some(40), "taken again after EOI");
}

fn software_pended_level_interrupt_delivered_once(shape: Shape) {
    let mut v = setup(shape);
    make_level(&mut v, 34);
    write(&mut v, 0, 0x204, 4, 1 << 2);
    let mut g = Guest::new();
    assert_eq!(drain(&mut v, 0, &mut g), [34]);
    assert_eq!(read(&v, 0, 0x204, 4), 0, "acknowledging cleared the latch");
}

fn edge_pulses_merge_until_delivered(shape: Shape) {
    let mut v = setup(shape);
    for _ in 0..5 {
        assert_eq!(v.pulse(0, 50), Some(0));
    }
    let mut g = Guest::new();
    flush(&mut v, 0, &mut g.lrs);
    assert_eq!(g.contents(), [(50, LrState::Pending)]);
    sync(&mut v, 0, &g.lrs);
    v.pulse(0, 50);
    flush(&mut v, 0, &mut g.lrs);
    assert_eq!(g.contents(), [(50, LrState::Pending)], "still one");
    assert_eq!(drain(&mut v, 0, &mut g), [50]);
}

fn edge_pulse_while_active_delivered_again_after_eoi(shape: Shape) {
    let mut v = setup(shape);
    v.pulse(0, 50);
    let mut g = Guest::new();
    flush(&mut v, 0, &mut g.lrs);
    assert_eq!(g.ack(), Some(50));
    sync(&mut v, 0, &g.lrs);
    v.pulse(0, 50);
    v.pulse(0, 50);
    assert!(!flush(&mut v, 0, &mut g.lrs));
    assert_eq!(g.contents(), [(50, LrState::PendingActive)]);
    assert_eq!(g.ack(), None, "not before the EOI");
    g.eoi(50);
    assert_eq!(g.ack(), Some(50));
    g.eoi(50);
    sync(&mut v, 0, &g.lrs);
    assert!(
        drain(&mut v, 0, &mut g).is_empty(),
        "delivered twice in all"
    );
}

fn edge_rising_edges_of_set_line(shape: Shape) {
    let mut v = setup(shape);
    v.set_line(0, 60, true);
    v.set_line(0, 60, true);
    let mut g = Guest::new();
    assert_eq!(drain(&mut v, 0, &mut g), [60], "one rising edge");
    v.set_line(0, 60, false);
    assert!(drain(&mut v, 0, &mut g).is_empty());
    v.set_line(0, 60, true);
    assert_eq!(drain(&mut v, 0, &mut g), [60]);
}

fn hw_mapped_virtual_timer(shape: Shape) {
    let mut v = setup(shape);
    v.set_hw_mapping(1, 27, Some(27));
    write(&mut v, 0, 0x0, 4, 0x3);
    write(&mut v, 1, 0x41b, 1, 0x20);
    assert_eq!(v.set_line(1, 27, true), Some(1));
    let mut g = Guest::new();
    assert!(!flush(&mut v, 1, &mut g.lrs));
    let value = g.lrs[0];
    assert_eq!(lr::vintid(value), 27);
    assert_eq!(lr::pintid(value), Some(27));
    assert_ne!(value & lr::HW, 0);
    assert_eq!(value & lr::EOI, 0);
    assert_eq!(lr::priority(value), 0x20);
    // The physical interrupt is owned by the guest now: the line was consumed.
    sync(&mut v, 1, &g.lrs);
    assert!(v.has_pending(1), "still pending in the LR");
    flush(&mut v, 1, &mut g.lrs);
    assert_eq!(g.ack(), Some(27));
    sync(&mut v, 1, &g.lrs);
    assert!(!v.has_pending(1));
    // The physical timer fires again while the virtual one is active: never pending+active
    // with HW = 1; it waits for the deactivation.
    v.set_line(1, 27, true);
    assert!(!flush(&mut v, 1, &mut g.lrs));
    assert_eq!(g.contents(), [(27, LrState::Active)]);
    g.eoi(27);
    sync(&mut v, 1, &g.lrs);
    assert_eq!(drain(&mut v, 1, &mut g), [27]);
    assert!(drain(&mut v, 0, &mut g).is_empty(), "PPIs are per vCPU");
    v.set_hw_mapping(1, 27, None);
    v.set_line(1, 27, true);
    flush(&mut v, 1, &mut g.lrs);
    assert_eq!(g.lrs[0] & lr::HW, 0);
    assert_ne!(g.lrs[0] & lr::EOI, 0);
}

/// As the hypervisor writes one list register: in the shape's own encoding and back.
fn as_written(v: &Vgic, value: u64) -> u64 {
    match v.shape() {
        Shape::V2 => lr::from_gich(lr::to_gich(value)),
        Shape::V3 => value,
    }
}

fn timer_goes_straight_into_a_free_lr(shape: Shape) {
    let mut v = setup(shape);
    v.set_hw_mapping(0, 27, Some(27));
    v.pulse(0, 32);
    let mut g = Guest::new();
    assert!(!flush(&mut v, 0, &mut g.lrs));
    assert_eq!(g.contents(), [(32, LrState::Pending)]);
    // The timer fires with the LRs as filled: it takes the first free one.
    assert_eq!(v.pulse(0, 27), Some(0));
    let (slot, value) = v.inject_into_free_lr(0, 27, &g.lrs).expect("a free LR");
    assert_eq!(slot, 1);
    assert_eq!(
        value,
        flush_of_timer_alone(shape),
        "the value a flush writes"
    );
    g.lrs[slot] = as_written(&v, value);
    assert_eq!(
        v.inject_into_free_lr(0, 27, &g.lrs),
        None,
        "not into two LRs"
    );
    assert!(v.has_pending(0));
    // A flush (the vGIC changed meanwhile) keeps both, each in one LR; each is delivered once.
    let mut before = g.lrs;
    assert!(!flush(&mut v, 0, &mut g.lrs));
    let mut after = g.lrs;
    before.sort_unstable();
    after.sort_unstable();
    assert_eq!(after, before);
    let mut delivered = drain(&mut v, 0, &mut g);
    delivered.sort_unstable();
    assert_eq!(delivered, [27, 32]);
    assert!(!v.has_pending(0));
    // Full LRs, an interrupt the guest disabled, one not pending: the caller refills instead.
    for intid in 33..37 {
        v.pulse(0, intid);
    }
    flush(&mut v, 0, &mut g.lrs);
    v.pulse(0, 27);
    assert_eq!(v.inject_into_free_lr(0, 27, &g.lrs), None, "no free LR");
    drain(&mut v, 0, &mut g);
    write(&mut v, 0, 0x180, 4, 1 << 27);
    v.pulse(0, 27);
    assert_eq!(v.inject_into_free_lr(0, 27, &g.lrs), None, "disabled");
    assert_eq!(v.inject_into_free_lr(0, 26, &g.lrs), None, "not pending");
    assert_eq!(v.inject_into_free_lr(0, 40, &g.lrs), None, "not private");
}

/// The LR a flush writes for the HW-mapped timer of [`setup`]'s vCPU 0 pending on its own.
fn flush_of_timer_alone(shape: Shape) -> u64 {
    let mut v = setup(shape);
    v.set_hw_mapping(0, 27, Some(27));
    v.pulse(0, 27);
    let mut lrs = [0; 4];
    v.flush_to_lrs(0, &mut lrs);
    lrs[0]
}

fn spi_rerouted_while_in_an_lr_is_handed_to_its_new_owner(shape: Shape) {
    let mut v = setup(shape);
    v.pulse(0, 40);
    let mut g = Guest::new();
    flush(&mut v, 0, &mut g.lrs);
    assert_eq!(g.contents(), [(40, LrState::Pending)]);
    // Rerouted to vCPU 1 while pending in vCPU 0's LR: it stays there until vCPU 0's next exit.
    route(&mut v, 40, 1);
    assert_eq!(v.take_handed_over(), 0);
    sync(&mut v, 0, &g.lrs);
    assert_eq!(v.take_handed_over(), 1 << 1, "vCPU 1 must be told");
    assert_eq!(v.take_handed_over(), 0, "taken once");
    assert!(!flush(&mut v, 0, &mut g.lrs));
    assert!(g.contents().is_empty(), "no longer vCPU 0's");
    let mut other = Guest::new();
    assert_eq!(drain(&mut v, 1, &mut other), [40]);
    // A fold that leaves an SPI with its own vCPU tells nobody.
    v.pulse(0, 41);
    route(&mut v, 41, 0);
    flush(&mut v, 0, &mut g.lrs);
    sync(&mut v, 0, &g.lrs);
    assert_eq!(v.take_handed_over(), 0);
}

fn disabled_interrupts_not_delivered(shape: Shape) {
    let mut v = setup(shape);
    write(&mut v, 0, 0x184, 4, 1 << 5);
    assert_eq!(v.pulse(0, 37), None, "nothing to kick");
    let mut g = Guest::new();
    assert!(!flush(&mut v, 0, &mut g.lrs));
    assert!(g.contents().is_empty());
    assert!(!v.has_pending(0));
    assert_eq!(read(&v, 0, 0x204, 4), 1 << 5, "pending all the same");
    write(&mut v, 0, 0x104, 4, 1 << 5);
    assert!(v.has_pending(0));
    assert_eq!(drain(&mut v, 0, &mut g), [37]);
    // PPIs and SGIs too.
    write(&mut v, 0, 0x180, 4, 1 << 23);
    v.set_line(0, 23, true);
    assert!(drain(&mut v, 0, &mut g).is_empty());
}

fn disabling_while_in_an_lr_keeps_it_pending(shape: Shape) {
    let mut v = setup(shape);
    v.pulse(0, 40);
    let mut g = Guest::new();
    flush(&mut v, 0, &mut g.lrs);
    write(&mut v, 0, 0x184, 4, 1 << 8);
    sync(&mut v, 0, &g.lrs);
    flush(&mut v, 0, &mut g.lrs);
    assert!(g.contents().is_empty());
    assert_eq!(read(&v, 0, 0x204, 4), 1 << 8);
    write(&mut v, 0, 0x104, 4, 1 << 8);
    assert_eq!(drain(&mut v, 0, &mut g), [40]);
}

fn gicd_ctlr_group_enables_gate_delivery(shape: Shape) {
    let mut v = setup(shape);
    write(&mut v, 0, 0x0, 4, 0);
    write(&mut v, 0, 0x84, 4, 0xffff_ffff);
    v.pulse(0, 40);
    let mut g = Guest::new();
    assert!(drain(&mut v, 0, &mut g).is_empty());
    assert!(!v.has_pending(0));
    write(&mut v, 0, 0x0, 4, 0x1);
    assert!(
        drain(&mut v, 0, &mut g).is_empty(),
        "Group 0 enable does not help Group 1"
    );
    write(&mut v, 0, 0x0, 4, 0x2);
    assert_eq!(v.pending_targets(), 0b1);
    assert_eq!(drain(&mut v, 0, &mut g), [40]);
    // A Group 0 SPI needs EnableGrp0, and its LR has Group = 0.
    write(&mut v, 0, 0x84, 4, !(1 << 9));
    v.pulse(0, 41);
    assert!(drain(&mut v, 0, &mut g).is_empty());
    write(&mut v, 0, 0x0, 4, 0x1);
    flush(&mut v, 0, &mut g.lrs);
    assert_eq!(lr::vintid(g.lrs[0]), 41);
    assert_eq!(g.lrs[0] & lr::GROUP1, 0);
    assert_eq!(drain(&mut v, 0, &mut g), [41]);
    // Private interrupts are gated the same way.
    write(&mut v, 0, 0x0, 4, 0x2);
    write(&mut v, 0, 0x80, 4, 0);
    v.pulse(0, 5);
    v.pulse(0, 20);
    assert!(drain(&mut v, 0, &mut g).is_empty());
    assert!(!v.has_pending(0));
    write(&mut v, 0, 0x0, 4, 0x1);
    assert_eq!(drain(&mut v, 0, &mut g), [5, 20]);
}

fn spi_never_in_two_lrs_when_rerouted(shape: Shape) {
    let mut v = setup(shape);
    v.pulse(0, 45);
    let mut g0 = Guest::new();
    let mut g1 = Guest::new();
    flush(&mut v, 0, &mut g0.lrs);
    assert_eq!(g0.contents(), [(45, LrState::Pending)]);
    route(&mut v, 45, 1);
    assert_eq!(v.spi_target(45), Some(1));
    // vCPU 0 still runs with it in an LR: vCPU 1 must not get it.
    flush(&mut v, 1, &mut g1.lrs);
    assert!(g1.contents().is_empty());
    sync(&mut v, 0, &g0.lrs);
    assert!(drain(&mut v, 0, &mut g0).is_empty());
    assert_eq!(drain(&mut v, 1, &mut g1), [45]);
}

fn active_spi_returns_to_the_vcpu_it_is_active_on(shape: Shape) {
    let mut v = setup(shape);
    v.pulse(0, 45);
    let mut g0 = Guest::new();
    let mut g1 = Guest::new();
    flush(&mut v, 0, &mut g0.lrs);
    assert_eq!(g0.ack(), Some(45));
    sync(&mut v, 0, &g0.lrs);
    route(&mut v, 45, 1);
    v.pulse(0, 45);
    flush(&mut v, 1, &mut g1.lrs);
    assert!(g1.contents().is_empty());
    flush(&mut v, 0, &mut g0.lrs);
    assert_eq!(g0.contents(), [(45, LrState::PendingActive)]);
    g0.eoi(45);
    sync(&mut v, 0, &g0.lrs);
    assert!(v.irq(0, 45).unwrap().model_pending());
    assert!(
        drain(&mut v, 0, &mut g0).is_empty(),
        "no longer active: routed to vCPU 1"
    );
    assert_eq!(drain(&mut v, 1, &mut g1), [45]);
}

fn distributor_clears_while_in_flight(shape: Shape) {
    let mut v = setup(shape);
    v.pulse(0, 40);
    v.pulse(0, 41);
    let mut g = Guest::new();
    flush(&mut v, 0, &mut g.lrs);
    assert_eq!(read(&v, 0, 0x204, 4), 0b11 << 8, "in-flight reads pending");
    write(&mut v, 0, 0x284, 4, 1 << 8);
    assert_eq!(read(&v, 0, 0x204, 4), 0b10 << 8);
    assert_eq!(g.ack(), Some(40), "the LR still has it until the next exit");
    sync(&mut v, 0, &g.lrs);
    assert_eq!(read(&v, 0, 0x304, 4), 1 << 8, "active");
    flush(&mut v, 0, &mut g.lrs);
    write(&mut v, 0, 0x384, 4, 1 << 8);
    assert_eq!(read(&v, 0, 0x304, 4), 0);
    sync(&mut v, 0, &g.lrs);
    assert_eq!(read(&v, 0, 0x304, 4), 0, "ICACTIVER wins over the stale LR");
    flush(&mut v, 0, &mut g.lrs);
    assert_eq!(g.contents(), [(41, LrState::Pending)]);
    // ISACTIVER puts an interrupt in the LRs as active (so the guest could deactivate it).
    write(&mut v, 0, 0x304, 4, 1 << 12);
    flush(&mut v, 0, &mut g.lrs);
    assert_eq!(
        g.contents(),
        [(44, LrState::Active), (41, LrState::Pending)]
    );
}

fn flush_without_sync_is_stable(shape: Shape) {
    let mut v = setup(shape);
    for intid in 32..38 {
        v.pulse(0, intid);
    }
    let mut g = Guest::new();
    assert!(flush(&mut v, 0, &mut g.lrs));
    let first = g.lrs;
    let state = v.clone();
    assert!(flush(&mut v, 0, &mut g.lrs));
    assert_eq!(g.lrs, first);
    assert_eq!(v, state);
    assert_eq!(drain(&mut v, 0, &mut g), (32..38).collect::<Vec<_>>());
}

fn active_interrupts_keep_their_lrs(shape: Shape) {
    let mut v = setup(shape);
    for (intid, prio) in [(32, 0x80), (33, 0x70), (34, 0x60), (35, 0x50)] {
        set_priority(&mut v, intid, prio);
        v.pulse(0, intid);
    }
    let mut g = Guest::new();
    flush(&mut v, 0, &mut g.lrs);
    // Nested: the guest takes all four, most urgent first (each preempts... in reverse).
    let mut taken = Vec::new();
    while let Some(i) = g.ack() {
        taken.push(i);
    }
    assert_eq!(taken, [35, 34, 33, 32]);
    sync(&mut v, 0, &g.lrs);
    set_priority(&mut v, 40, 0x00);
    v.pulse(0, 40);
    assert!(flush(&mut v, 0, &mut g.lrs), "no room for the urgent one");
    assert!(g.contents().iter().all(|&(_, s)| s == LrState::Active));
    g.eoi(35);
    sync(&mut v, 0, &g.lrs);
    flush(&mut v, 0, &mut g.lrs);
    assert_eq!(lr::vintid(g.lrs[0]), 34, "actives first, by priority");
    assert!(g.contents().contains(&(40, LrState::Pending)));
}

fn pending_queries_and_kicks(shape: Shape) {
    let mut v = setup(shape);
    assert_eq!(v.pending_targets(), 0);
    assert_eq!(v.highest_pending_priority(2), None);
    route(&mut v, 70, 2);
    assert_eq!(v.pulse(0, 70), Some(2));
    set_priority(&mut v, 71, 0x10);
    route(&mut v, 71, 2);
    v.pulse(3, 71);
    assert_eq!(v.highest_pending_priority(2), Some(0x10));
    write(&mut v, 3, 0x200, 4, 1 << 17);
    assert_eq!(v.pending_targets(), 0b1100);
    assert!(v.has_pending(3));
    assert!(!v.has_pending(0));
    assert_eq!(v.set_line(1, 20, false), None);
    assert_eq!(v.set_line(1, 20, true), Some(1));
    assert_eq!(v.set_line(0, 3, true), None, "SGIs have no line");
    assert_eq!(v.pulse(0, 96), None, "no such SPI");
    assert_eq!(v.highest_pending_priority(9), None);
}

both_shapes!(
    priority_order_into_four_lrs_then_the_rest,
    more_urgent_interrupt_displaces_a_pending_lr,
    interrupt_storm_each_delivered_exactly_once,
    interrupt_storm_with_exits_inside_handlers,
    level_line_redelivered_until_lowered,
    level_line_high_while_active_is_pending_and_active,
    software_pended_level_interrupt_delivered_once,
    edge_pulses_merge_until_delivered,
    edge_pulse_while_active_delivered_again_after_eoi,
    edge_rising_edges_of_set_line,
    hw_mapped_virtual_timer,
    timer_goes_straight_into_a_free_lr,
    spi_rerouted_while_in_an_lr_is_handed_to_its_new_owner,
    disabled_interrupts_not_delivered,
    disabling_while_in_an_lr_keeps_it_pending,
    gicd_ctlr_group_enables_gate_delivery,
    spi_never_in_two_lrs_when_rerouted,
    active_spi_returns_to_the_vcpu_it_is_active_on,
    distributor_clears_while_in_flight,
    flush_without_sync_is_stable,
    active_interrupts_keep_their_lrs,
    pending_queries_and_kicks,
);
