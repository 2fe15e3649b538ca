//! `ICH_LR<n>_EL2` encoding.
//!
//! vINTID \[31:0\], pINTID \[44:32\] (HW = 1) or EOI maintenance request \[41\] (HW = 0),
//! Priority \[55:48\], Group \[60\], HW \[61\], State \[63:62\].

/// EOI maintenance interrupt request (HW = 0 only).
pub const EOI: u64 = 1 << 41;
/// Group 1 interrupt.
pub const GROUP1: u64 = 1 << 60;
/// Hardware interrupt: deactivating the virtual one deactivates pINTID.
pub const HW: u64 = 1 << 61;
const STATE_SHIFT: u32 = 62;
const PINTID_SHIFT: u32 = 32;
const PINTID_MASK: u64 = 0x1fff;
const PRIORITY_SHIFT: u32 = 48;

/// State field of a list register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrState {
    /// Empty: the guest completed the interrupt (or the LR is unused).
    Invalid,
    /// Pending.
    Pending,
    /// Active (acknowledged by the guest, not yet deactivated).
    Active,
    /// Active and pending again.
    PendingActive,
}

impl LrState {
    /// Builds the state from its pending and active bits.
    pub const fn from_bits(pending: bool, active: bool) -> Self {
        match (pending, active) {
            (false, false) => Self::Invalid,
            (true, false) => Self::Pending,
            (false, true) => Self::Active,
            (true, true) => Self::PendingActive,
        }
    }

    /// Pending bit.
    pub const fn pending(self) -> bool {
        matches!(self, Self::Pending | Self::PendingActive)
    }

    /// Active bit.
    pub const fn active(self) -> bool {
        matches!(self, Self::Active | Self::PendingActive)
    }
}

/// The state field of `lr`.
pub const fn state(lr: u64) -> LrState {
    LrState::from_bits(lr & (1 << STATE_SHIFT) != 0, lr & (2 << STATE_SHIFT) != 0)
}

/// `lr` with its state field replaced.
pub const fn with_state(lr: u64, state: LrState) -> u64 {
    let bits = (state.pending() as u64) | ((state.active() as u64) << 1);
    (lr & !(3 << STATE_SHIFT)) | (bits << STATE_SHIFT)
}

/// The virtual INTID of `lr`.
pub const fn vintid(lr: u64) -> u32 {
    lr as u32
}

/// The priority field of `lr`.
pub const fn priority(lr: u64) -> u8 {
    (lr >> PRIORITY_SHIFT) as u8
}

/// The physical INTID of `lr` when its HW bit is set.
pub const fn pintid(lr: u64) -> Option<u32> {
    if lr & HW != 0 {
        Some(((lr >> PINTID_SHIFT) & PINTID_MASK) as u32)
    } else {
        None
    }
}

/// Encodes a list register. With `hw = Some(pintid)` the LR gets HW = 1 and the physical INTID
/// (and no EOI request); otherwise `eoi` sets the EOI maintenance request bit.
pub const fn encode(
    vintid: u32,
    priority: u8,
    group1: bool,
    hw: Option<u32>,
    eoi: bool,
    state: LrState,
) -> u64 {
    let mut lr = with_state(vintid as u64, state) | ((priority as u64) << PRIORITY_SHIFT);
    if group1 {
        lr |= GROUP1;
    }
    match hw {
        Some(p) => lr |= HW | ((p as u64 & PINTID_MASK) << PINTID_SHIFT),
        None if eoi => lr |= EOI,
        None => {}
    }
    lr
}
