//! Per-vCPU bitmaps of list-register candidates, so that [`Vgic::flush_to_lrs`] and
//! [`Vgic::sync_from_lrs`] only visit the interrupts that can matter to a vCPU.
//!
//! Invariant (a superset, kept lazily): whenever an interrupt is an LR candidate of vCPU `v`
//! (an SGI/PPI of `v`, or an SPI not in an LR whose owner is `v`, that is active, or pending and
//! forwardable), its bit is set in `v`'s bitmaps. Every change of state that can make an
//! interrupt a candidate calls [`Vgic::mark`]; `flush_to_lrs` clears the bits of the interrupts
//! it finds are not candidates. `lr_used` is exact: bit `n` is set iff the record of LR `n` is
//! `Some`.
//!
//! [`Vgic::flush_to_lrs`]: crate::Vgic::flush_to_lrs
//! [`Vgic::sync_from_lrs`]: crate::Vgic::sync_from_lrs
//! [`Vgic::mark`]: crate::Vgic::mark

use crate::MAX_SPIS;

/// Words of the SPI bitmap.
pub(crate) const SPI_WORDS: usize = (MAX_SPIS as usize).div_ceil(64);

/// One vCPU's candidate bitmaps.
#[derive(Clone, Debug, Default)]
pub(crate) struct Candidates {
    /// SGIs and PPIs (bit = INTID).
    pub(crate) private: u32,
    /// Bit `w` set when `spis[w]` may be non-zero.
    pub(crate) spi_words: u16,
    /// SPIs (bit = INTID - 32).
    pub(crate) spis: [u64; SPI_WORDS],
    /// List registers whose record holds an INTID.
    pub(crate) lr_used: u16,
    /// An SPI in those list registers was rerouted since the last fold, which hands it over
    /// (kept here, beside `lr_used`, where every fold looks anyway).
    pub(crate) rerouted: bool,
}

/// The bitmaps are a cache derived from (a superset of) the interrupt state: two vGICs with
/// the same interrupt state are equal whatever their bitmaps hold.
impl PartialEq for Candidates {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Candidates {}

impl Candidates {
    /// Sets the bit of SPI index `spi` (INTID - 32).
    #[inline]
    pub(crate) fn set_spi(&mut self, spi: usize) {
        let word = spi / 64;
        if let Some(w) = self.spis.get_mut(word) {
            *w |= 1 << (spi % 64);
            self.spi_words |= 1 << word;
        }
    }

    /// Nothing to flush and nothing to sync.
    #[inline]
    pub(crate) fn is_idle(&self) -> bool {
        self.private == 0 && self.spi_words == 0 && self.lr_used == 0
    }
}

#[cfg(test)]
mod tests {
    use crate::Vgic;
    use crate::lr::{self, LrState};
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    const VCPUS: usize = 3;
    const SPIS: u32 = 64;

    #[derive(Clone, Debug)]
    enum Op {
        SetLine(usize, u32, bool),
        Pulse(usize, u32),
        SendSgi(usize, u64),
        /// A 32-bit register of the distributor's per-interrupt block (SPI words).
        Dist(u64, u64),
        Ctlr(u64),
        Irouter(u64, u64),
        /// A 32-bit register of a redistributor's SGI frame.
        Redist(usize, u64, u64),
        Waker(usize, bool),
        /// A GICv2 distributor write by a vCPU (offset, size, value).
        V2(usize, u64, u8, u64),
        HwMap(usize, u32, Option<u32>),
        /// The vCPU waits in place (its LRs filled unless they are as filled) and a timer of
        /// its fires (a pulse of a private interrupt): straight into a free LR if it can be,
        /// as the hypervisor does.
        Timer(usize, u32),
        /// Flush, then the guest rewrites the state of each LR (bits 0..1 of each nibble).
        Run(usize, u32),
        Sync(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let vcpu = 0..VCPUS;
        let intid = 0..32 + SPIS;
        let reg = prop_oneof![
            Just(0x080u64),
            Just(0x100),
            Just(0x180),
            Just(0x200),
            Just(0x280),
            Just(0x300),
            Just(0x380),
            Just(0x400),
            Just(0xc00),
        ];
        prop_oneof![
            4 => (vcpu.clone(), 16..32 + SPIS, any::<bool>()).prop_map(|(v, i, h)| Op::SetLine(v, i, h)),
            4 => (vcpu.clone(), intid.clone()).prop_map(|(v, i)| Op::Pulse(v, i)),
            2 => (vcpu.clone(), 0..16u64, any::<bool>(), 0..8u64, 0..2u64).prop_map(
                |(v, sgi, irm, list, aff1)| Op::SendSgi(v, sgi << 24 | u64::from(irm) << 40 | aff1 << 16 | list)
            ),
            6 => (reg.clone(), 1..3u64, any::<u64>()).prop_map(|(r, w, val)| {
                let offset = if r == 0x400 { r + w * 32 } else if r == 0xc00 { r + w * 8 } else { r + w * 4 };
                Op::Dist(offset, val)
            }),
            1 => (0..4u64).prop_map(Op::Ctlr),
            2 => (0..SPIS as u64, prop_oneof![Just(0u64), Just(1), Just(0x100), Just(0x200), Just(1 << 31)])
                .prop_map(|(s, val)| Op::Irouter(s, val)),
            3 => (vcpu.clone(), reg, any::<u64>()).prop_map(|(v, r, val)| Op::Redist(v, r, val)),
            1 => (vcpu.clone(), any::<bool>()).prop_map(|(v, s)| Op::Waker(v, s)),
            1 => (vcpu.clone(), 16..32 + SPIS, proptest::option::of(16..64u32)).prop_map(|(v, i, p)| Op::HwMap(v, i, p)),
            3 => (vcpu.clone(), 16..32u32).prop_map(|(v, i)| Op::Timer(v, i)),
            6 => (vcpu.clone(), any::<u32>()).prop_map(|(v, g)| Op::Run(v, g)),
            2 => vcpu.prop_map(Op::Sync),
        ]
    }

    /// Operations on a GICv2: its distributor frame instead of the GICv3 frontends.
    fn op_v2() -> impl Strategy<Value = Op> {
        let vcpu = 0..VCPUS;
        let intid = 0..32 + SPIS;
        // Per-interrupt words of INTIDs 0..95, ITARGETSR (bytes and words), CTLR, SGIR,
        // C/SPENDSGIR.
        let write = prop_oneof![
            6 => (prop_oneof![Just(0x080u64), Just(0x100), Just(0x180), Just(0x200), Just(0x280),
                Just(0x300), Just(0x380)], 0..3u64).prop_map(|(r, w)| (r + 4 * w, 4u8)),
            1 => (0..6u64).prop_map(|w| (0xc00 + 4 * w, 4)),
            1 => (0..24u64).prop_map(|w| (0x400 + 4 * w, 4)),
            3 => (0..96u64).prop_map(|i| (0x800 + i, 1)),
            1 => (8..24u64).prop_map(|w| (0x800 + 4 * w, 4)),
            1 => Just((0u64, 4)),
            3 => Just((0xf00, 4)),
            2 => (0xf10..0xf30u64).prop_map(|o| (o, 1)),
        ];
        prop_oneof![
            4 => (vcpu.clone(), 16..32 + SPIS, any::<bool>()).prop_map(|(v, i, h)| Op::SetLine(v, i, h)),
            4 => (vcpu.clone(), intid).prop_map(|(v, i)| Op::Pulse(v, i)),
            10 => (vcpu.clone(), write, any::<u64>()).prop_map(|(v, (o, s), val)| {
                // Keep SGIR's filter mostly to lists and CTLR's enables mostly on.
                let val = match o {
                    0 if val & 0x10 == 0 => val | 3,
                    0xf00 => val & !(2 << 24),
                    _ => val,
                };
                Op::V2(v, o, s, val)
            }),
            1 => (vcpu.clone(), 16..32 + SPIS, proptest::option::of(16..64u32)).prop_map(|(v, i, p)| Op::HwMap(v, i, p)),
            3 => (vcpu.clone(), 16..32u32).prop_map(|(v, i)| Op::Timer(v, i)),
            6 => (vcpu.clone(), any::<u32>()).prop_map(|(v, g)| Op::Run(v, g)),
            2 => vcpu.prop_map(Op::Sync),
        ]
    }

    /// `has_pending` (bitmaps) agrees with the full scan for every vCPU.
    fn check_has_pending(v: &Vgic) {
        for vcpu in 0..v.num_vcpus() {
            assert_eq!(
                v.has_pending(vcpu),
                v.highest_pending_priority(vcpu).is_some(),
                "vCPU {vcpu}"
            );
        }
    }

    /// Flushes `v` and, independently, a copy whose bitmaps mark every interrupt (the full
    /// scan); both must load the same LRs and leave the same state.
    fn checked_flush(v: &mut Vgic, vcpu: usize, lrs: &mut [u64; 4]) {
        let mut full = v.clone();
        for c in &mut full.cands {
            c.private = !0;
            c.spis = [0; super::SPI_WORDS];
            for index in 0..full.spis.len() {
                c.set_spi(index);
            }
        }
        let mut full_lrs = *lrs;
        let overflow = v.flush_to_lrs(vcpu, lrs);
        let full_overflow = full.flush_to_lrs(vcpu, &mut full_lrs);
        assert_eq!(*lrs, full_lrs);
        assert_eq!(overflow, full_overflow);
        assert_eq!(*v, full);
    }

    /// Runs `ops` on `v`, checking the bitmaps, `has_pending` and a full-scan flush all along.
    fn check_ops(mut v: Vgic, ops: &[Op]) {
        let mut lrs: Vec<[u64; 4]> = vec![[0; 4]; VCPUS];
        // Per vCPU: its LRs are as its last flush left them and nothing else changed since (the
        // hypervisor's interrupt epoch has not moved): a timer may go straight into one.
        let mut as_filled = [false; VCPUS];
        for op in ops {
            let was_filled = as_filled;
            as_filled = [false; VCPUS];
            match *op {
                Op::SetLine(c, i, h) => {
                    v.set_line(c, i, h);
                }
                Op::Pulse(c, i) => {
                    v.pulse(c, i);
                }
                Op::SendSgi(c, val) => {
                    v.send_sgi(c, val);
                }
                Op::Dist(..) | Op::Ctlr(_) | Op::Irouter(..) | Op::Redist(..) | Op::Waker(..) => {
                    let kicked = match *op {
                        Op::Dist(offset, val) => v.distributor_write(offset, 4, val),
                        Op::Ctlr(val) => v.distributor_write(0, 4, val),
                        Op::Irouter(s, val) => v.distributor_write(0x6000 + (32 + s) * 8, 8, val),
                        Op::Redist(c, offset, val) => {
                            v.redistributor_write(c, 0x1_0000 + offset, 4, val)
                        }
                        Op::Waker(c, sleep) => {
                            v.redistributor_write(c, 0x14, 4, u64::from(sleep) << 1)
                        }
                        _ => unreachable!("matched above"),
                    };
                    assert_eq!(kicked & !v.pending_targets(), 0, "kicked without cause");
                }
                Op::V2(c, offset, size, val) => {
                    let kicked = v.distributor_v2_write(c, offset, size, val);
                    // SGIR kicks the targets it latched, forwardable or not.
                    let cause = if offset == 0xf00 {
                        (0..VCPUS)
                            .filter(|&t| v.irq(t, (val & 0xf) as u32).unwrap().latch)
                            .fold(0, |mask, t| mask | 1 << t)
                    } else {
                        v.pending_targets()
                    };
                    assert_eq!(kicked & !cause, 0, "kicked without cause");
                }
                Op::HwMap(c, i, p) => v.set_hw_mapping(c, i, p),
                Op::Timer(c, i) => {
                    // The vCPU waits in place: its LRs are filled before the wait.
                    let mut was_filled = was_filled;
                    if !was_filled[c] {
                        checked_flush(&mut v, c, &mut lrs[c]);
                        was_filled[c] = true;
                    }
                    v.pulse(c, i);
                    if let Some((slot, value)) = v.inject_into_free_lr(c, i, &lrs[c]) {
                        assert_eq!(lrs[c][slot], 0, "a free LR");
                        lrs[c][slot] = value;
                        // Nothing else changed: the epoch stays.
                        as_filled = was_filled;
                    }
                }
                Op::Run(c, guest) => {
                    checked_flush(&mut v, c, &mut lrs[c]);
                    v.check_candidates();
                    check_has_pending(&v);
                    let filled = lrs[c];
                    for (n, value) in lrs[c].iter_mut().enumerate() {
                        if lr::state(*value) != LrState::Invalid && guest & 1 << (8 + n) != 0 {
                            let bits = guest >> (2 * n);
                            *value = lr::with_state(
                                *value,
                                LrState::from_bits(bits & 1 != 0, bits & 2 != 0),
                            );
                        }
                    }
                    // A flush moves no epoch; the guest's LR changes are seen at the next exit.
                    as_filled = was_filled;
                    as_filled[c] = lrs[c] == filled;
                }
                Op::Sync(c) => {
                    v.sync_from_lrs(c, &lrs[c]);
                    as_filled = was_filled;
                    as_filled[c] = false;
                }
            }
            v.check_candidates();
            check_has_pending(&v);
        }
        for (c, lrs) in lrs.iter_mut().enumerate() {
            checked_flush(&mut v, c, lrs);
            v.check_candidates();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn bitmaps_cover_every_candidate(ops in proptest::collection::vec(op(), 1..80)) {
            let mut v = Vgic::new(VCPUS, vec![0, 1, 0x100], SPIS);
            v.distributor_write(0x0, 4, 3);
            check_ops(v, &ops);
        }

        #[test]
        fn bitmaps_cover_every_candidate_v2(ops in proptest::collection::vec(op_v2(), 1..80)) {
            let mut v = Vgic::new_v2(VCPUS, SPIS);
            v.distributor_v2_write(0, 0x0, 4, 3);
            for intid in 32..32 + SPIS as u64 {
                v.distributor_v2_write(0, 0x800 + intid, 1, 1 << (intid % 3));
            }
            check_ops(v, &ops);
        }
    }
}
