//! List register encodings.
//!
//! The model's canonical encoding, in both shapes, is `ICH_LR<n>_EL2` (GICv3): vINTID
//! \[31:0\], pINTID \[44:32\] (HW = 1) or EOI maintenance request \[41\] (HW = 0), Priority
//! \[55:48\], Group \[60\], HW \[61\], State \[63:62\].
//!
//! A GICv2 hypervisor interface's `GICH_LR<n>` ([`to_gich`], [`from_gich`]): VirtualID \[9:0\],
//! PhysicalID \[19:10\] (HW = 1) or EOI \[19\] and CPUID \[12:10\] (HW = 0), Priority \[27:23\]
//! (the top 5 bits), State \[29:28\], Grp1 \[30\], HW \[31\].

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

/// `GICH_LR.VirtualID` and `PhysicalID` width (10 bits).
const GICH_ID_MASK: u32 = 0x3ff;
/// `GICH_LR.PhysicalID` shift (HW = 1).
const GICH_PHYSICAL_ID_SHIFT: u32 = 10;
/// `GICH_LR.EOI` (HW = 0).
const GICH_EOI: u32 = 1 << 19;
/// `GICH_LR.Priority` shift: priority bits \[7:3\] in \[27:23\].
const GICH_PRIORITY_SHIFT: u32 = 23;
/// `GICH_LR.State` shift: pending \[28\], active \[29\].
const GICH_STATE_SHIFT: u32 = 28;
/// `GICH_LR.Grp1`.
const GICH_GRP1: u32 = 1 << 30;
/// `GICH_LR.HW`.
const GICH_HW: u32 = 1 << 31;

/// `lr` (canonical, as [`encode`] and [`crate::Vgic::flush_to_lrs`] produce it) as a GICv2
/// `GICH_LR<n>` value. The vINTID and pINTID keep their low 10 bits, the priority its top 5
/// (all that [`crate::PRIORITY_MASK`] leaves); CPUID is 0 (the model does not track SGI
/// sources).
pub const fn to_gich(lr: u64) -> u32 {
    let state = state(lr);
    let mut gich = (vintid(lr) & GICH_ID_MASK)
        | ((priority(lr) as u32 >> 3) << GICH_PRIORITY_SHIFT)
        | ((state.pending() as u32) << GICH_STATE_SHIFT)
        | ((state.active() as u32) << (GICH_STATE_SHIFT + 1));
    if lr & GROUP1 != 0 {
        gich |= GICH_GRP1;
    }
    match pintid(lr) {
        Some(p) => gich |= GICH_HW | ((p & GICH_ID_MASK) << GICH_PHYSICAL_ID_SHIFT),
        None if lr & EOI != 0 => gich |= GICH_EOI,
        None => {}
    }
    gich
}

/// A GICv2 `GICH_LR<n>` value in the canonical encoding, as [`crate::Vgic::sync_from_lrs`]
/// takes it; the inverse of [`to_gich`] for every value it produces. CPUID and reserved bits
/// are dropped.
pub const fn from_gich(gich_lr: u32) -> u64 {
    let hw = if gich_lr & GICH_HW != 0 {
        Some((gich_lr >> GICH_PHYSICAL_ID_SHIFT) & GICH_ID_MASK)
    } else {
        None
    };
    encode(
        gich_lr & GICH_ID_MASK,
        (((gich_lr >> GICH_PRIORITY_SHIFT) & 0x1f) << 3) as u8,
        gich_lr & GICH_GRP1 != 0,
        hw,
        gich_lr & GICH_EOI != 0,
        LrState::from_bits(
            gich_lr & (1 << GICH_STATE_SHIFT) != 0,
            gich_lr & (2 << GICH_STATE_SHIFT) != 0,
        ),
    )
}
