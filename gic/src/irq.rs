//! The state of one interrupt.

/// Trigger mode of an interrupt (`GICD_ICFGR<n>` / `GICR_ICFGR<n>`, bit 1 of each field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Pending while the input line is high or the pending latch is set.
    Level,
    /// Each rising edge (or pulse) sets the pending latch.
    Edge,
}

/// What a list register holds for an interrupt that is "in flight" (loaded into an LR by
/// [`Vgic::flush_to_lrs`](crate::Vgic::flush_to_lrs) and not yet folded back by
/// [`Vgic::sync_from_lrs`](crate::Vgic::sync_from_lrs)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// The vCPU whose list register holds the interrupt.
    pub vcpu: u16,
    /// The LR was written pending and no `ICPENDR` write has cancelled that since.
    pub pending: bool,
    /// The LR was written active.
    pub active: bool,
    /// An `ICACTIVER` write cleared the active state while the interrupt was in the LR.
    pub active_cleared: bool,
    /// The model's pending state (latch, or a HW interrupt's line) moved into the LR; it comes
    /// back as the latch if the LR is still pending at sync.
    pub consumed_pending: bool,
    /// An SPI whose route changed while it sat in the LR: the sync that takes it out hands it
    /// to its new owner ([`crate::Vgic::take_handed_over`]).
    pub rerouted: bool,
}

/// The state of one interrupt (an SGI or PPI of one vCPU, or an SPI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqState {
    /// Forwarding enabled (`ISENABLER` / `ICENABLER`).
    pub enabled: bool,
    /// Pending latch: set by an edge, a pulse, an SGI or an `ISPENDR` write.
    pub latch: bool,
    /// Active in the model (not counting an LR that holds it).
    pub active: bool,
    /// Level of the input line.
    pub line: bool,
    /// Edge or level triggered.
    pub trigger: Trigger,
    /// Priority (lower is more urgent), masked to the implemented bits ([`PRIORITY_MASK`](crate::PRIORITY_MASK)).
    pub priority: u8,
    /// Group 1 (`IGROUPR` bit set) rather than Group 0.
    pub group1: bool,
    /// Physical INTID this interrupt is mapped to (LRs get HW = 1), if any.
    pub hw: Option<u32>,
    /// SPIs only: the vCPU on which the interrupt became active (it returns there until deactivated).
    pub active_vcpu: Option<u16>,
    /// The list register currently holding this interrupt, if any.
    pub in_lr: Option<InFlight>,
}

impl IrqState {
    /// Reset state: disabled, idle, priority 0, Group 1 (as KVM's GICv3 model; a GICv2 resets
    /// to Group 0), given trigger.
    pub(crate) const fn new(trigger: Trigger) -> Self {
        Self {
            enabled: false,
            latch: false,
            active: false,
            line: false,
            trigger,
            priority: 0,
            group1: true,
            hw: None,
            active_vcpu: None,
            in_lr: None,
        }
    }

    /// Pending according to the model alone: latch set, or a level line high.
    pub fn model_pending(&self) -> bool {
        self.latch || (self.trigger == Trigger::Level && self.line)
    }

    /// Best known pending state: the model's, or pending in a list register.
    pub fn is_pending(&self) -> bool {
        self.model_pending() || self.in_lr.is_some_and(|f| f.pending)
    }

    /// Best known active state: the model's, or written active into a list register.
    pub fn is_active(&self) -> bool {
        self.active || self.in_lr.is_some_and(|f| f.active && !f.active_cleared)
    }

    /// Level-triggered and not mapped to a physical interrupt: such an LR asks for an EOI
    /// maintenance interrupt so that the line can be sampled again.
    pub(crate) fn needs_eoi_maintenance(&self) -> bool {
        self.trigger == Trigger::Level && self.hw.is_none()
    }
}
