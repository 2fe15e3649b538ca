//! List-register scheduling: folding LR states back after an exit and loading the most urgent
//! interrupts before an entry.

use crate::lr::{self, LrState};
use crate::{InFlight, MAX_LRS, Trigger, Vgic};

/// Sort key of an LR candidate: active ones first (an active interrupt must stay in an LR so
/// that the guest's deactivation finds it), then priority, then INTID. Lower is better.
fn candidate_key(active: bool, priority: u8, intid: u32) -> u64 {
    u64::from(!active) << 40 | u64::from(priority) << 32 | u64::from(intid)
}

/// Inserts `key` into `best` (sorted ascending, `u64::MAX` = free) if it beats the last entry.
fn insert_best(best: &mut [u64], key: u64) {
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
    /// Folds `vcpu`'s list registers (`ICH_LR<n>_EL2` after an exit) back into the model, using
    /// the record of what the last [`Vgic::flush_to_lrs`] put in each LR (the vINTID field is
    /// not trusted). An LR that went invalid was completed by the guest: its interrupt is no
    /// longer active, and a level interrupt is pending again only while its line is high. An LR
    /// still pending gives its pending state back; an active one leaves the interrupt active
    /// (on this vCPU). LRs missing from `lrs` count as unchanged since the flush.
    pub fn sync_from_lrs(&mut self, vcpu: usize, lrs: &[u64]) {
        let Some(v) = self.vcpus.get_mut(vcpu) else {
            return;
        };
        let record = core::mem::replace(&mut v.lrs, [None; MAX_LRS]);
        for (slot, intid) in record.into_iter().enumerate() {
            let Some(intid) = intid else {
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
        }
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
    /// interrupt with `ICH_HCR_EL2.UIE`/`NPIE` to refill).
    pub fn flush_to_lrs(&mut self, vcpu: usize, lrs: &mut [u64]) -> bool {
        if vcpu >= self.vcpus.len() {
            return false;
        }
        self.sync_from_lrs(vcpu, lrs);
        let slots = lrs.len().min(MAX_LRS);
        let mut best = [u64::MAX; MAX_LRS];
        let mut candidates = 0;
        let private = self.vcpus[vcpu].private.iter().zip(0..);
        let spis = self
            .spis
            .iter()
            .zip(32..)
            .filter(|(s, _)| s.irq.in_lr.is_none() && Self::spi_owner(s) == Some(vcpu))
            .map(|(s, intid)| (&s.irq, intid));
        for (irq, intid) in private.chain(spis) {
            let pending = irq.model_pending() && self.forwardable(irq);
            if irq.active || pending {
                candidates += 1;
                insert_best(
                    &mut best[..slots],
                    candidate_key(irq.active, irq.priority, intid),
                );
            }
        }
        let mut record = [None; MAX_LRS];
        for (slot, lr) in lrs.iter_mut().enumerate() {
            *lr = match best.get(slot) {
                Some(&key) if key != u64::MAX => {
                    let intid = key as u32;
                    record[slot] = Some(intid);
                    self.load_lr(vcpu, intid)
                }
                _ => 0,
            };
        }
        self.vcpus[vcpu].lrs = record;
        candidates > slots
    }

    /// Moves `intid` into an LR of `vcpu` and returns the LR value.
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
