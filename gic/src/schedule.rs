//! List-register scheduling: folding LR states back after an exit and loading the most urgent
//! interrupts before an entry.

use alloc::vec::Vec;

use crate::lr::{self, LrState};
use crate::{InFlight, MAX_LRS, Trigger, Vgic};

/// Sort key of an LR candidate: active ones first (an active interrupt must stay in an LR so
/// that the guest's deactivation finds it), then priority, then INTID (< 1024, 10 bits). Lower
/// is better; `u32::MAX` is never a key.
fn candidate_key(active: bool, priority: u8, intid: u32) -> u32 {
    u32::from(!active) << 30 | u32::from(priority) << 22 | intid
}

/// The INTID of a candidate key.
fn key_intid(key: u32) -> u32 {
    key & 0x3ff
}

/// Inserts `key` into `best` (sorted ascending, `u32::MAX` = free) if it beats the last entry.
fn insert_best(best: &mut [u32], key: u32) {
    let Some(last) = best.last_mut() else {
        return;
    };
    if key >= *last {
        return;
    }
    *last = key;
    let mut i = best.len() - 1;
    while i > 0 && best[i - 1] > best[i] {
        best.swap(i - 1, i);
        i -= 1;
    }
}

impl Vgic {
    /// Folds `vcpu`'s list registers (`ICH_LR<n>_EL2` after an exit; on a GICv2 hypervisor
    /// interface the `GICH_LR<n>` values through [`lr::from_gich`]) back into the model, using
    /// the record of what the last [`Vgic::flush_to_lrs`] put in each LR (the vINTID field is
    /// not trusted). An LR that went invalid was completed by the guest: its interrupt is no
    /// longer active, and a level interrupt is pending again only while its line is high. An LR
    /// still pending gives its pending state back; an active one leaves the interrupt active
    /// (on this vCPU). LRs missing from `lrs` count as unchanged since the flush. An SPI that
    /// was rerouted while it sat in an LR and goes back pending to its new owner is noted for
    /// [`Vgic::take_handed_over`].
    pub fn sync_from_lrs(&mut self, vcpu: usize, lrs: &[u64]) {
        let Some(c) = self.cands.get_mut(vcpu) else {
            return;
        };
        if c.rerouted {
            return self.sync_handing_over(vcpu, lrs);
        }
        let mut used = core::mem::take(&mut c.lr_used);
        while used != 0 {
            let slot = used.trailing_zeros() as usize;
            used &= used - 1;
            let Some(intid) = self.vcpus[vcpu].lrs[slot].take() else {
                continue;
            };
            let Some(irq) = self.irq_mut(vcpu, intid) else {
                continue;
            };
            let Some(f) = irq.in_lr.take() else {
                continue;
            };
            let state = lrs
                .get(slot)
                .map_or(LrState::from_bits(f.pending, f.active), |&v| lr::state(v));
            if state.active() && !f.active_cleared {
                irq.active = true;
                irq.active_vcpu = (intid >= 32).then_some(vcpu as u16);
            }
            if state.pending() && f.pending && f.consumed_pending {
                irq.latch = true;
            }
            self.mark(vcpu, intid);
        }
    }

    /// [`Vgic::sync_from_lrs`] when an SPI in `vcpu`'s LRs was rerouted since the last fold
    /// (rare, so out of line): the fold, then the rerouted SPIs that went back pending are
    /// noted for their new owners.
    #[cold]
    #[inline(never)]
    fn sync_handing_over(&mut self, vcpu: usize, lrs: &[u64]) {
        self.cands[vcpu].rerouted = false;
        let rerouted: Vec<u32> = self.vcpus[vcpu]
            .lrs
            .iter()
            .flatten()
            .copied()
            .filter(|&intid| {
                self.irq(vcpu, intid)
                    .and_then(|irq| irq.in_lr)
                    .is_some_and(|f| f.rerouted)
            })
            .collect();
        self.sync_from_lrs(vcpu, lrs);
        for intid in rerouted {
            if let Some(owner) = self.kick_target(vcpu, intid)
                && owner != vcpu
            {
                self.handed_over |= 1 << owner;
            }
        }
    }

    /// The vCPUs (bit n: vCPU n) that the folds of list registers since the last call handed a
    /// pending SPI to (see [`Vgic::sync_from_lrs`]): the caller kicks them, and they refill.
    pub fn take_handed_over(&mut self) -> u64 {
        core::mem::take(&mut self.handed_over)
    }

    /// Fills `vcpu`'s list registers before an entry: the active interrupts of this vCPU and
    /// then the most urgent (lowest priority value, then lowest INTID) pending, enabled and
    /// group-enabled ones; unused LRs are written 0. Whatever the last flush put in the LRs is
    /// first folded back as by [`Vgic::sync_from_lrs`] (a no-op after a sync), so `lrs` must
    /// hold the current LR values. SPIs held in another vCPU's LRs are skipped.
    ///
    /// Edge-triggered, HW-mapped and software-pended interrupts move their pending state into
    /// the LR; level-triggered interrupts without HW get the EOI maintenance request; HW-mapped
    /// ones get HW = 1 and the physical INTID, and are never written pending+active (a pending
    /// HW interrupt that is active waits in the model until the guest deactivates it).
    ///
    /// Returns true when some candidate did not fit (the hypervisor then asks for a maintenance
    /// interrupt with `ICH_HCR_EL2.UIE`/`NPIE`, or `GICH_HCR`'s, to refill). The values are in
    /// the canonical encoding in both shapes: [`lr::to_gich`] converts them for a GICv2
    /// hypervisor interface.
    pub fn flush_to_lrs(&mut self, vcpu: usize, lrs: &mut [u64]) -> bool {
        let Some(c) = self.cands.get(vcpu) else {
            return false;
        };
        if c.is_idle() {
            // Written only where needed: a plain fill would become a `memset` call.
            for lr in lrs.iter_mut() {
                if *lr != 0 {
                    *lr = 0;
                }
            }
            return false;
        }
        self.sync_from_lrs(vcpu, lrs);
        let slots = lrs.len().min(MAX_LRS);
        let mut best = [u32::MAX; MAX_LRS];
        let mut candidates = 0;
        {
            let Self {
                ctlr,
                spis,
                vcpus,
                cands,
                ..
            } = self;
            let ctlr = *ctlr;
            let (private, c) = (&vcpus[vcpu].private, &mut cands[vcpu]);
            let mut bits = c.private;
            let mut keep = 0;
            while bits != 0 {
                let intid = bits.trailing_zeros();
                bits &= bits - 1;
                let irq = &private[intid as usize];
                if irq.active || (irq.model_pending() && Self::forwardable_in(ctlr, irq)) {
                    keep |= 1 << intid;
                    candidates += 1;
                    insert_best(
                        &mut best[..slots],
                        candidate_key(irq.active, irq.priority, intid),
                    );
                }
            }
            c.private = keep;
            let mut words = c.spi_words;
            let mut words_keep = 0;
            while words != 0 {
                let word = words.trailing_zeros() as usize;
                words &= words - 1;
                let mut bits = c.spis[word];
                let mut keep = 0;
                while bits != 0 {
                    let bit = bits.trailing_zeros();
                    bits &= bits - 1;
                    let index = word * 64 + bit as usize;
                    let Some(spi) = spis.get(index) else {
                        continue;
                    };
                    let irq = &spi.irq;
                    if irq.in_lr.is_none()
                        && (irq.active || (irq.model_pending() && Self::forwardable_in(ctlr, irq)))
                        && Self::spi_owner(spi) == Some(vcpu)
                    {
                        keep |= 1 << bit;
                        candidates += 1;
                        insert_best(
                            &mut best[..slots],
                            candidate_key(irq.active, irq.priority, index as u32 + 32),
                        );
                    }
                }
                c.spis[word] = keep;
                if keep != 0 {
                    words_keep |= 1 << word;
                }
            }
            c.spi_words = words_keep;
        }
        let mut used = 0;
        for (slot, lr) in lrs.iter_mut().enumerate() {
            *lr = match best.get(slot) {
                Some(&key) if key != u32::MAX => {
                    let intid = key_intid(key);
                    self.vcpus[vcpu].lrs[slot] = Some(intid);
                    used |= 1 << slot;
                    self.load_lr(vcpu, intid)
                }
                _ => 0,
            };
        }
        self.cands[vcpu].lr_used = used;
        candidates > slots
    }

    /// Puts private interrupt `intid` of `vcpu` (an SGI or PPI just made pending) straight into
    /// a free list register, as [`Vgic::flush_to_lrs`] would have, without a refill: for a vCPU
    /// whose LRs hold exactly what the last flush put there and whose vGIC has not changed since
    /// except for this interrupt (`lrs` are their live values): the caller knows that from
    /// its own record of the fill and an epoch that every other change moves. Every candidate
    /// of that flush then fitted, so a free LR means this interrupt is the only one waiting (a
    /// change racing with this call moves the epoch after it, and the refill that follows puts
    /// everything in order). Returns the slot and its value (canonical encoding) to write, or
    /// `None` when it does not qualify (already in an LR or active, not pending and
    /// forwardable, no free LR): the caller then refills.
    #[inline]
    pub fn inject_into_free_lr(
        &mut self,
        vcpu: usize,
        intid: u32,
        lrs: &[u64],
    ) -> Option<(usize, u64)> {
        let irq = self.irq(vcpu, intid).filter(|_| intid < 32)?;
        if irq.in_lr.is_some() || irq.active || !irq.model_pending() || !self.forwardable(irq) {
            return None;
        }
        let used = self.cands.get(vcpu)?.lr_used;
        let slot =
            (0..lrs.len().min(MAX_LRS)).find(|&slot| used & 1 << slot == 0 && lrs[slot] == 0)?;
        self.vcpus[vcpu].lrs[slot] = Some(intid);
        self.cands[vcpu].lr_used |= 1 << slot;
        Some((slot, self.load_lr(vcpu, intid)))
    }

    /// Moves `intid` into an LR of `vcpu` and returns the LR value.
    #[inline]
    fn load_lr(&mut self, vcpu: usize, intid: u32) -> u64 {
        let Some(irq) = self.irq(vcpu, intid) else {
            return 0;
        };
        let forwardable = self.forwardable(irq);
        let Some(irq) = self.irq_mut(vcpu, intid) else {
            return 0;
        };
        let active = irq.active;
        let pending = irq.model_pending() && forwardable && !(irq.hw.is_some() && active);
        let mut consumed = false;
        if pending {
            if irq.trigger == Trigger::Edge || irq.hw.is_some() {
                consumed = true;
                irq.latch = false;
                if irq.trigger == Trigger::Level {
                    // A HW level interrupt: the physical one stays active until the guest
                    // deactivates it, and fires again if the line is still high.
                    irq.line = false;
                }
            } else if irq.latch {
                consumed = true;
                irq.latch = false;
            }
        }
        irq.active = false;
        irq.in_lr = Some(InFlight {
            vcpu: vcpu as u16,
            pending,
            active,
            active_cleared: false,
            consumed_pending: consumed,
            rerouted: false,
        });
        lr::encode(
            intid,
            irq.priority,
            irq.group1,
            irq.hw,
            irq.needs_eoi_maintenance(),
            LrState::from_bits(pending, active),
        )
    }
}
