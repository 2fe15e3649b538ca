//! The GICv2 list-register encoding (`GICH_LR<n>`) against the canonical `ICH_LR<n>_EL2` one.

use gic::PRIORITY_MASK;
use gic::lr::{self, LrState};
use proptest::prelude::*;

const STATES: [LrState; 4] = [
    LrState::Invalid,
    LrState::Pending,
    LrState::Active,
    LrState::PendingActive,
];

#[test]
fn fields_land_where_gich_lr_has_them() {
    // VirtualID [9:0], EOI [19], Priority [27:23], State [29:28], Grp1 [30].
    let value = lr::encode(33, 0xa8, true, None, true, LrState::Pending);
    assert_eq!(
        lr::to_gich(value),
        33 | 1 << 19 | 0x15 << 23 | 1 << 28 | 1 << 30
    );
    // HW [31] and PhysicalID [19:10], no EOI; active is bit 29; Group 0 leaves bit 30 clear.
    let value = lr::encode(27, 0x20, false, Some(27), true, LrState::Active);
    assert_eq!(
        lr::to_gich(value),
        27 | 27 << 10 | 0x04 << 23 | 1 << 29 | 1 << 31
    );
    let value = lr::encode(1019, 0xf8, false, Some(1019), false, LrState::PendingActive);
    assert_eq!(
        lr::to_gich(value),
        1019 | 1019 << 10 | 0x1f << 23 | 3 << 28 | 1 << 31
    );
    // An SGI: CPUID [12:10] is 0, the model does not track sources.
    let value = lr::encode(3, 0, true, None, false, LrState::Pending);
    assert_eq!(lr::to_gich(value), 3 | 1 << 28 | 1 << 30);
    assert_eq!(lr::to_gich(0), 0, "an empty LR");
    assert_eq!(lr::from_gich(0), 0);
}

#[test]
fn from_gich_decodes_each_field() {
    let value = lr::from_gich(40 | 1 << 19 | 0x10 << 23 | 1 << 28 | 1 << 30);
    assert_eq!(lr::vintid(value), 40);
    assert_eq!(lr::priority(value), 0x80);
    assert_eq!(lr::state(value), LrState::Pending);
    assert_ne!(value & lr::GROUP1, 0);
    assert_ne!(value & lr::EOI, 0);
    assert_eq!(lr::pintid(value), None);
    let value = lr::from_gich(30 | 29 << 10 | 2 << 28 | 1 << 31);
    assert_eq!(lr::vintid(value), 30);
    assert_eq!(lr::pintid(value), Some(29));
    assert_eq!(lr::state(value), LrState::Active);
    assert_eq!(value & (lr::EOI | lr::GROUP1), 0);
    // CPUID and the reserved bits [22:20] are dropped.
    assert_eq!(
        lr::from_gich(5 | 7 << 10 | 7 << 20 | 1 << 28),
        lr::from_gich(5 | 1 << 28)
    );
}

/// Every field combination the model produces comes back unchanged: every vINTID below 1020,
/// every implemented priority, both groups, all four states, HW with a pINTID or not, EOI
/// request or not.
#[test]
fn round_trip_of_every_field_combination_the_model_produces() {
    let priorities = (0..=255u8).filter(|p| p & !PRIORITY_MASK == 0);
    let mut checked = 0u64;
    for vintid in 0..1020 {
        for priority in priorities.clone() {
            for group1 in [false, true] {
                for state in STATES {
                    for (hw, eoi) in [(None, false), (None, true), (Some(vintid), false)] {
                        let value = lr::encode(vintid, priority, group1, hw, eoi, state);
                        assert_eq!(lr::from_gich(lr::to_gich(value)), value, "{value:#x}");
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 1020 * 32 * 2 * 4 * 3);
    // Every physical INTID with HW = 1.
    for pintid in 0..1020 {
        for state in STATES {
            let value = lr::encode(27, 0xa0, true, Some(pintid), true, state);
            assert_eq!(lr::from_gich(lr::to_gich(value)), value);
        }
    }
}

proptest! {
    /// A `GICH_LR` value without CPUID and reserved bits comes back unchanged.
    #[test]
    fn gich_values_round_trip(raw in any::<u32>()) {
        let hw = raw & 1 << 31 != 0;
        let canonical = if hw { raw & !(7 << 20) } else { raw & !(0x1ff << 10 | 7 << 20) };
        prop_assert_eq!(lr::to_gich(lr::from_gich(canonical)), canonical);
        prop_assert_eq!(lr::from_gich(raw), lr::from_gich(canonical));
    }
}
