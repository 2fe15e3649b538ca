//! The virtual GIC: per-interrupt state, list-register scheduling for a hardware virtual CPU
//! interface, and the register frames a guest sees, in one of two [`Shape`]s.
//!
//! One model (pending latches and lines, enables, groups, priorities, level/edge, active state,
//! LR candidates and scheduling) serves both shapes; a shape is only a register frontend, a
//! reset state and a way to route SPIs:
//!
//! - **GICv3** ([`Vgic::new`]): a distributor (`distributor_read`/`_write`, SPIs routed by
//!   `GICD_IROUTER`) and one redistributor per vCPU (`redistributor_read`/`_write`, its SGIs and
//!   PPIs); SGIs come from `ICC_SGI1R_EL1` writes ([`Vgic::send_sgi`]). Only affinity routing
//!   (`GICD_CTLR.ARE` reads 1) and a single security state (`DS` = 1) are modelled; no LPIs, no
//!   ITS, no extended SPI/PPI ranges. Interrupts reset to Group 1.
//! - **GICv2** ([`Vgic::new_v2`], at most [`MAX_V2_VCPUS`] vCPUs): one 4 KiB distributor frame
//!   (`distributor_v2_read`/`_write`) in which INTIDs 0..31 are banked to the accessing vCPU,
//!   SPIs are routed by `GICD_ITARGETSR` target masks and SGIs come from `GICD_SGIR` writes. No
//!   security extensions. Interrupts reset to Group 0 and SPIs to no target.
//!
//! A frontend of the other shape reads as zero and ignores writes. The group enables of
//! `GICD_CTLR` (EnableGrp0 bit 0, EnableGrp1 bit 1 in both shapes) gate every interrupt, SGIs and
//! PPIs included (as QEMU's and KVM's GICs do).
//!
//! The model never touches hardware. The hypervisor traps guest accesses to the register frames,
//! feeds device lines and SGIs in (`set_line`, `pulse`, `send_sgi`), and around every run of a
//! vCPU calls [`Vgic::sync_from_lrs`] after the exit and [`Vgic::flush_to_lrs`] before the entry
//! with the values of its list registers in the `ICH_LR<n>_EL2` encoding, the model's canonical
//! one in both shapes ([`lr::to_gich`] and [`lr::from_gich`] convert to and from a GICv2
//! hypervisor interface's `GICH_LR<n>`).
//!
//! In-flight interrupts: an interrupt loaded into an LR carries an [`InFlight`] record; its
//! pending latch (edge, software-pended) and active state move into the LR, and sync gives back
//! what the LR still holds. Distributor writes that cancel pending or active state of an
//! in-flight interrupt take effect in the model at once and on the LR at the owner's next sync.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod candidates;
mod distributor;
mod distributor_v2;
mod irq;
mod kicks;
pub mod lr;
mod redistributor;
mod regs;
mod schedule;
mod snapshot;

use alloc::vec::Vec;

use candidates::Candidates;

pub use irq::{InFlight, IrqState, Trigger};

/// A register read that answers the same for the life of a vGIC, whatever the guest writes:
/// what an emulator's fast path may answer without the vGIC ([`Vgic::distributor_constants`],
/// [`Vgic::redistributor_constants`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConstantRead {
    /// Offset in the register frame.
    pub offset: u64,
    /// Access size in bytes.
    pub size: u8,
    /// The value read.
    pub value: u64,
}
pub use snapshot::RestoreError;

/// Most list registers the model fills (a GICv3 CPU interface has `ICH_VTR_EL2.ListRegs` + 1 ≤
/// 16; a GICv2 one may have up to 64, of which the model uses the first 16).
pub const MAX_LRS: usize = 16;
/// Most vCPUs per instance (target masks are `u64`).
pub const MAX_VCPUS: usize = 64;
/// Most vCPUs of a GICv2 (CPU interfaces 0..7: `GICD_ITARGETSR` masks are 8 bits).
pub const MAX_V2_VCPUS: usize = 8;
/// Most SPIs (INTIDs 32..991; the next block of 32 would reach the special INTIDs 1020..1023).
pub const MAX_SPIS: u32 = 960;
/// Implemented priority bits (5, as the virtual CPU interface on QEMU): the rest read as zero.
pub const PRIORITY_MASK: u8 = 0xf8;

/// Aff3 \[39:32\], Aff2 \[23:16\], Aff1 \[15:8\], Aff0 \[7:0\] of an MPIDR or `GICD_IROUTER`.
const AFFINITY_MASK: u64 = 0xff_00ff_ffff;
/// `GICD_IROUTER.Interrupt_Routing_Mode`: 1-of-N.
const IROUTER_IRM: u64 = 1 << 31;

/// The architecture a vGIC presents to its guest: which register frames, reset state and SPI
/// routing it has. Scheduling and interrupt state are the same in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// GICv3: distributor with `GICD_IROUTER` routing, one redistributor per vCPU.
    V3,
    /// GICv2: one distributor frame with banked INTIDs 0..31 and `GICD_ITARGETSR` routing.
    V2,
}

impl Shape {
    /// The GIC architecture version: 3 or 2 (as a checkpoint's `gic_version`).
    pub const fn version(self) -> u8 {
        match self {
            Self::V3 => 3,
            Self::V2 => 2,
        }
    }
}

/// An SPI: its interrupt state and routing.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Spi {
    irq: IrqState,
    /// GICv3: `GICD_IROUTER<n>` (affinity and IRM bits only); 0 on a GICv2.
    irouter: u64,
    /// GICv2: `GICD_ITARGETSR` byte (existing vCPUs only); 0 on a GICv3.
    targets: u8,
    /// The vCPU that `irouter` (v3) or `targets` (v2) selects, if any.
    target: Option<u16>,
}

/// One vCPU's redistributor (v3) or banked distributor state (v2) and list-register record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct VcpuState {
    /// The MPIDR (v3); the CPU interface number (v2).
    mpidr: u64,
    /// SGIs 0..15 and PPIs 16..31.
    private: [IrqState; 32],
    /// `GICR_WAKER.ProcessorSleep` (v3; always false on a GICv2).
    sleep: bool,
    /// The INTID loaded into each list register by the last flush (None: LR left empty).
    lrs: [Option<u32>; MAX_LRS],
}

/// Which interrupts a register frame reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bank {
    /// The distributor: SPIs only (banked INTIDs 0..31 are RAZ/WI with affinity routing).
    Dist,
    /// A vCPU's redistributor SGI frame: its SGIs and PPIs.
    Redist(usize),
    /// The GICv2 distributor as a vCPU sees it: its SGIs and PPIs (banked), and the SPIs.
    V2(usize),
}

/// The virtual GIC of one instance (a GICv3 or a GICv2, see [`Shape`]): distributor, each vCPU's
/// private interrupts, and the record of what each vCPU's list registers hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vgic {
    shape: Shape,
    /// `GICD_CTLR` group enables (bits 0 and 1).
    ctlr: u32,
    num_spis: u32,
    spis: Vec<Spi>,
    vcpus: Vec<VcpuState>,
    /// Per-vCPU LR candidate bitmaps (see the `candidates` module).
    cands: Vec<Candidates>,
    /// vCPUs (bit n: vCPU n) that a fold of another vCPU's list registers handed an SPI to,
    /// pending: rerouted while it sat in that vCPU's LR. Taken by [`Vgic::take_handed_over`]
    /// right after the fold, so always 0 at rest.
    handed_over: u64,
}

impl Vgic {
    /// A GICv3 in its reset state for `num_vcpus` vCPUs with the given MPIDRs and `num_spis`
    /// SPIs (INTIDs 32..32 + `num_spis`): every interrupt disabled, Group 1, priority 0, SGIs
    /// edge-triggered and the rest level, SPIs routed to affinity 0, redistributors asleep.
    ///
    /// # Panics
    /// If `vcpu_mpidrs.len() != num_vcpus`, `num_vcpus` is 0 or above [`MAX_VCPUS`], or
    /// `num_spis` is not a multiple of 32 or above [`MAX_SPIS`].
    pub fn new(num_vcpus: usize, vcpu_mpidrs: Vec<u64>, num_spis: u32) -> Self {
        assert!((1..=MAX_VCPUS).contains(&num_vcpus), "vGIC: bad vCPU count");
        assert_eq!(vcpu_mpidrs.len(), num_vcpus, "vGIC: one MPIDR per vCPU");
        let mut vgic = Self::reset(Shape::V3, vcpu_mpidrs, num_spis);
        let target = vgic.resolve_route(0);
        for spi in &mut vgic.spis {
            spi.target = target;
        }
        vgic
    }

    /// A GICv2 in its reset state for `num_vcpus` vCPUs (vCPU `i` is CPU interface `i`) and
    /// `num_spis` SPIs: every interrupt disabled, Group 0, priority 0, SGIs edge-triggered and
    /// the rest level, SPI target masks 0 (not forwarded until the guest writes `ITARGETSR`).
    ///
    /// # Panics
    /// If `num_vcpus` is 0 or above [`MAX_V2_VCPUS`], or `num_spis` is not a multiple of 32 or
    /// above [`MAX_SPIS`].
    pub fn new_v2(num_vcpus: usize, num_spis: u32) -> Self {
        assert!(
            (1..=MAX_V2_VCPUS).contains(&num_vcpus),
            "vGIC: bad vCPU count for a GICv2"
        );
        Self::reset(Shape::V2, (0..num_vcpus as u64).collect(), num_spis)
    }

    /// The reset state common to both shapes; SPIs have no target.
    fn reset(shape: Shape, vcpu_mpidrs: Vec<u64>, num_spis: u32) -> Self {
        assert!(
            num_spis.is_multiple_of(32) && num_spis <= MAX_SPIS,
            "vGIC: bad SPI count"
        );
        let v3 = shape == Shape::V3;
        let irq = |trigger| IrqState {
            group1: v3,
            ..IrqState::new(trigger)
        };
        let mut private = [irq(Trigger::Level); 32];
        for sgi in &mut private[..16] {
            sgi.trigger = Trigger::Edge;
        }
        let num_vcpus = vcpu_mpidrs.len();
        let vcpus = vcpu_mpidrs
            .into_iter()
            .map(|mpidr| VcpuState {
                mpidr,
                private,
                sleep: v3,
                lrs: [None; MAX_LRS],
            })
            .collect();
        Self {
            shape,
            ctlr: 0,
            num_spis,
            spis: (0..num_spis)
                .map(|_| Spi {
                    irq: irq(Trigger::Level),
                    irouter: 0,
                    targets: 0,
                    target: None,
                })
                .collect(),
            vcpus,
            cands: (0..num_vcpus).map(|_| Candidates::default()).collect(),
            handed_over: 0,
        }
    }

    /// Which architecture this vGIC presents.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Number of vCPUs.
    pub fn num_vcpus(&self) -> usize {
        self.vcpus.len()
    }

    /// Number of SPIs.
    pub fn num_spis(&self) -> u32 {
        self.num_spis
    }

    /// The state of `intid` (SGIs and PPIs of `vcpu`; `vcpu` is ignored for SPIs).
    pub fn irq(&self, vcpu: usize, intid: u32) -> Option<&IrqState> {
        if intid < 32 {
            self.vcpus.get(vcpu).map(|v| &v.private[intid as usize])
        } else {
            self.spis.get(intid as usize - 32).map(|s| &s.irq)
        }
    }

    fn irq_mut(&mut self, vcpu: usize, intid: u32) -> Option<&mut IrqState> {
        if intid < 32 {
            self.vcpus
                .get_mut(vcpu)
                .map(|v| &mut v.private[intid as usize])
        } else {
            self.spis.get_mut(intid as usize - 32).map(|s| &mut s.irq)
        }
    }

    /// The interrupt a register frame reaches, if any.
    fn bank_irq(&self, bank: Bank, intid: u32) -> Option<&IrqState> {
        match bank {
            Bank::Dist if intid >= 32 => self.irq(0, intid),
            Bank::Redist(vcpu) if intid < 32 => self.irq(vcpu, intid),
            Bank::V2(vcpu) => self.irq(vcpu, intid),
            _ => None,
        }
    }

    fn bank_irq_mut(&mut self, bank: Bank, intid: u32) -> Option<&mut IrqState> {
        match bank {
            Bank::Dist if intid >= 32 => self.irq_mut(0, intid),
            Bank::Redist(vcpu) if intid < 32 => self.irq_mut(vcpu, intid),
            Bank::V2(vcpu) => self.irq_mut(vcpu, intid),
            _ => None,
        }
    }

    /// The vCPU an SPI is routed to, or none (the SPI is then not forwarded).
    ///
    /// GICv3: the vCPU whose MPIDR affinity matches `GICD_IROUTER<n>`; an SPI routed 1-of-N
    /// (IRM = 1) goes to the lowest-numbered vCPU whose redistributor is awake
    /// (`GICR_WAKER.ProcessorSleep` = 0), or vCPU 0 when all sleep. GICv2: the lowest-numbered
    /// vCPU in its `GICD_ITARGETSR` mask (a GICv2 would make it pending on every CPU in the mask
    /// for the first to take; the model picks one), none when the mask is 0.
    pub fn spi_target(&self, intid: u32) -> Option<usize> {
        let spi = self.spis.get(intid.checked_sub(32)? as usize)?;
        spi.target.map(usize::from)
    }

    fn resolve_route(&self, irouter: u64) -> Option<u16> {
        let index = if irouter & IROUTER_IRM != 0 {
            Some(self.vcpus.iter().position(|v| !v.sleep).unwrap_or(0))
        } else {
            self.vcpus
                .iter()
                .position(|v| v.mpidr & AFFINITY_MASK == irouter & AFFINITY_MASK)
        };
        index.map(|i| i as u16)
    }

    /// The vCPU a GICv2 target mask selects: the lowest-numbered one in it.
    fn v2_target(targets: u8) -> Option<u16> {
        (targets != 0).then(|| targets.trailing_zeros() as u16)
    }

    /// The `GICD_ITARGETSR` bits of the vCPUs that exist.
    fn v2_cpu_mask(&self) -> u8 {
        (0..self.vcpus.len().min(MAX_V2_VCPUS)).fold(0, |mask, i| mask | 1 << i)
    }

    /// Routes SPI index `index` (INTID - 32) to `target`; if that moves it while it sits in a
    /// vCPU's list register, the fold that takes it out hands it over
    /// ([`Vgic::take_handed_over`]).
    pub(crate) fn route_spi(&mut self, index: usize, target: Option<u16>) {
        let spi = &mut self.spis[index];
        if spi.target != target
            && let Some(in_lr) = &mut spi.irq.in_lr
        {
            in_lr.rerouted = true;
            self.cands[usize::from(in_lr.vcpu)].rerouted = true;
        }
        spi.target = target;
    }

    /// Recomputes the target of every SPI routed 1-of-N (after a `GICR_WAKER` change).
    fn retarget_one_of_n(&mut self) {
        let target = self.resolve_route(IROUTER_IRM);
        for index in 0..self.spis.len() {
            if self.spis[index].irouter & IROUTER_IRM != 0 {
                self.route_spi(index, target);
                self.mark_spi(index);
            }
        }
    }

    /// Records that `intid` (an SGI or PPI of `vcpu`, or an SPI) changed state: if it may now
    /// be an LR candidate, sets its bit in its owner's candidate bitmaps. Call after every
    /// change that can make an interrupt active, pending, forwardable or change its owner.
    #[inline]
    pub(crate) fn mark(&mut self, vcpu: usize, intid: u32) {
        if intid < 32 {
            if let (Some(v), Some(c)) = (self.vcpus.get(vcpu), self.cands.get_mut(vcpu)) {
                let irq = &v.private[intid as usize];
                if irq.active || irq.model_pending() {
                    c.private |= 1 << intid;
                }
            }
        } else {
            self.mark_spi(intid as usize - 32);
        }
    }

    /// [`Vgic::mark`] for SPI index `index` (INTID - 32).
    pub(crate) fn mark_spi(&mut self, index: usize) {
        let Some(spi) = self.spis.get(index) else {
            return;
        };
        if !(spi.irq.active || spi.irq.model_pending()) {
            return;
        }
        if let Some(c) = Self::spi_owner(spi).and_then(|o| self.cands.get_mut(o)) {
            c.set_spi(index);
        }
    }

    /// [`Vgic::mark`] for every interrupt (after a `GICD_CTLR` change).
    pub(crate) fn mark_all(&mut self) {
        for vcpu in 0..self.vcpus.len() {
            for intid in 0..32 {
                self.mark(vcpu, intid);
            }
        }
        for index in 0..self.spis.len() {
            self.mark_spi(index);
        }
    }

    /// Checks the candidate bitmaps against the interrupt state (see the `candidates` module).
    #[cfg(test)]
    pub(crate) fn check_candidates(&self) {
        for (vcpu, (v, c)) in self.vcpus.iter().zip(&self.cands).enumerate() {
            for (intid, irq) in v.private.iter().enumerate() {
                if irq.in_lr.is_none()
                    && (irq.active || (irq.model_pending() && self.forwardable(irq)))
                {
                    assert!(
                        c.private & 1 << intid != 0,
                        "vCPU {vcpu} INTID {intid} not marked"
                    );
                }
            }
            for (index, spi) in self.spis.iter().enumerate() {
                let irq = &spi.irq;
                if irq.in_lr.is_none()
                    && Self::spi_owner(spi) == Some(vcpu)
                    && (irq.active || (irq.model_pending() && self.forwardable(irq)))
                {
                    let (word, bit) = (index / 64, index % 64);
                    assert!(
                        c.spis[word] & 1 << bit != 0 && c.spi_words & 1 << word != 0,
                        "vCPU {vcpu} INTID {} not marked",
                        index + 32
                    );
                }
            }
            for (slot, record) in v.lrs.iter().enumerate() {
                assert_eq!(
                    c.lr_used & 1 << slot != 0,
                    record.is_some(),
                    "LR {slot} record"
                );
            }
        }
    }

    /// Whether the group enables `ctlr` (of `GICD_CTLR`) enable the interrupt's group.
    #[inline]
    fn group_enabled_in(ctlr: u32, irq: &IrqState) -> bool {
        ctlr & if irq.group1 {
            CTLR_ENABLE_GRP1
        } else {
            CTLR_ENABLE_GRP0
        } != 0
    }

    /// Enabled and its group enabled: a pending state may be forwarded to a vCPU.
    fn forwardable(&self, irq: &IrqState) -> bool {
        Self::forwardable_in(self.ctlr, irq)
    }

    /// [`Vgic::forwardable`] under the group enables `ctlr`.
    #[inline]
    fn forwardable_in(ctlr: u32, irq: &IrqState) -> bool {
        irq.enabled && Self::group_enabled_in(ctlr, irq)
    }

    /// The vCPU an SPI belongs to now: the one whose LR holds it, the one it is active on, or
    /// its routing target.
    fn spi_owner(spi: &Spi) -> Option<usize> {
        if let Some(f) = spi.irq.in_lr {
            return Some(f.vcpu.into());
        }
        if spi.irq.active
            && let Some(v) = spi.irq.active_vcpu
        {
            return Some(v.into());
        }
        spi.target.map(usize::from)
    }

    /// The vCPU to kick if `intid` is now pending and forwardable.
    fn kick_target(&self, vcpu: usize, intid: u32) -> Option<usize> {
        let irq = self.irq(vcpu, intid)?;
        if !(irq.is_pending() && self.forwardable(irq)) {
            return None;
        }
        if intid < 32 {
            Some(vcpu)
        } else {
            Self::spi_owner(&self.spis[intid as usize - 32])
        }
    }

    /// Drives the input line of a level- or edge-triggered interrupt (PPIs of `vcpu`, or SPIs).
    /// A rising edge on an edge-triggered interrupt sets its latch. Returns the vCPU to kick
    /// when the line went high and the interrupt is pending and forwardable. SGIs are ignored.
    pub fn set_line(&mut self, vcpu: usize, intid: u32, high: bool) -> Option<usize> {
        if intid < 16 {
            return None;
        }
        let irq = self.irq_mut(vcpu, intid)?;
        if high && !irq.line && irq.trigger == Trigger::Edge {
            irq.latch = true;
        }
        irq.line = high;
        self.mark(vcpu, intid);
        if high {
            self.kick_target(vcpu, intid)
        } else {
            None
        }
    }

    /// An edge on `intid` (SGIs and PPIs of `vcpu`, or SPIs): sets the pending latch. Pulses
    /// before the interrupt is delivered merge into one; a pulse while it is active is
    /// delivered again after the guest deactivates it. On a level-triggered interrupt this acts
    /// as a write to `ISPENDR`. Returns the vCPU to kick, as [`Vgic::set_line`].
    #[inline]
    pub fn pulse(&mut self, vcpu: usize, intid: u32) -> Option<usize> {
        self.irq_mut(vcpu, intid)?.latch = true;
        self.mark(vcpu, intid);
        self.kick_target(vcpu, intid)
    }

    /// A write by vCPU `sender` to `ICC_SGI1R_EL1` (GICv3 only; 0 on a GICv2): TargetList
    /// \[15:0\], Aff1 \[23:16\], INTID \[27:24\], Aff2 \[39:32\], IRM \[40\] (all vCPUs but the
    /// sender), RS \[47:44\] (Aff0 = RS * 16 + bit), Aff3 \[55:48\]. Only targets that configure
    /// the SGI as Group 1 receive it. Returns the bitmask of vCPUs whose SGI latch was newly set
    /// (to kick).
    pub fn send_sgi(&mut self, sender: usize, icc_sgi1r: u64) -> u64 {
        if self.shape != Shape::V3 {
            return 0;
        }
        let intid = ((icc_sgi1r >> 24) & 0xf) as usize;
        let broadcast = icc_sgi1r & (1 << 40) != 0;
        let aff321 = ((icc_sgi1r >> 16) & 0xff)
            | (((icc_sgi1r >> 32) & 0xff) << 8)
            | (((icc_sgi1r >> 48) & 0xff) << 16);
        let rs = (icc_sgi1r >> 44) & 0xf;
        let targets = self
            .vcpus
            .iter()
            .enumerate()
            .filter(|&(index, vcpu)| {
                if broadcast {
                    index != sender
                } else {
                    let mpidr = vcpu.mpidr;
                    let aff0 = mpidr & 0xff;
                    let mpidr321 = ((mpidr >> 8) & 0xffff) | ((mpidr >> 16) & 0xff_0000);
                    mpidr321 == aff321 && aff0 >> 4 == rs && icc_sgi1r & (1 << (aff0 & 0xf)) != 0
                }
            })
            .fold(0, |mask, (index, _)| mask | 1 << index);
        self.latch_sgi(targets, intid, true)
    }

    /// Sets the pending latch of SGI `intid` on each vCPU in the bitmask `targets` (with
    /// `group1_only`, only where the SGI is Group 1). Returns the vCPUs whose latch was newly set.
    fn latch_sgi(&mut self, targets: u64, intid: usize, group1_only: bool) -> u64 {
        let mut latched = 0;
        for (index, (vcpu, cands)) in self.vcpus.iter_mut().zip(&mut self.cands).enumerate() {
            let sgi = &mut vcpu.private[intid];
            if targets & 1 << index != 0 && (sgi.group1 || !group1_only) && !sgi.latch {
                sgi.latch = true;
                cands.private |= 1 << intid;
                latched |= 1 << index;
            }
        }
        latched
    }

    /// Maps `intid` (a PPI of `vcpu`, or an SPI) to physical INTID `pintid`: its LRs then get
    /// HW = 1 and the guest's deactivation deactivates the physical interrupt. `None` unmaps.
    /// SGIs cannot be mapped and are ignored.
    #[inline]
    pub fn set_hw_mapping(&mut self, vcpu: usize, intid: u32, pintid: Option<u32>) {
        if intid >= 16
            && let Some(irq) = self.irq_mut(vcpu, intid)
        {
            irq.hw = pintid;
        }
    }

    /// The most urgent priority among the pending, forwardable interrupts of `vcpu` (in its LRs
    /// or not), e.g. to compare with the guest's `ICH_VMCR_EL2.VPMR` (`GICH_VMCR.VMPriMask`).
    /// Exact after [`Vgic::sync_from_lrs`].
    pub fn highest_pending_priority(&self, vcpu: usize) -> Option<u8> {
        let v = self.vcpus.get(vcpu)?;
        let private = v.private.iter();
        let spis = self
            .spis
            .iter()
            .filter(|s| Self::spi_owner(s) == Some(vcpu))
            .map(|s| &s.irq);
        private
            .chain(spis)
            .filter(|irq| irq.is_pending() && self.forwardable(irq))
            .map(|irq| irq.priority)
            .min()
    }

    /// Whether `vcpu` has a pending, forwardable interrupt (a WFI need not block). Looks only
    /// at the vCPU's list registers and its candidate bitmaps, so it is cheap when little is
    /// pending; equal to `highest_pending_priority(vcpu).is_some()`.
    pub fn has_pending(&self, vcpu: usize) -> bool {
        let (Some(c), Some(v)) = (self.cands.get(vcpu), self.vcpus.get(vcpu)) else {
            return false;
        };
        let pending = |irq: &IrqState| irq.is_pending() && self.forwardable(irq);
        let mut used = c.lr_used;
        while used != 0 {
            let slot = used.trailing_zeros() as usize;
            used &= used - 1;
            if v.lrs[slot]
                .and_then(|intid| self.irq(vcpu, intid))
                .is_some_and(pending)
            {
                return true;
            }
        }
        let mut private = c.private;
        while private != 0 {
            let intid = private.trailing_zeros() as usize;
            private &= private - 1;
            if pending(&v.private[intid]) {
                return true;
            }
        }
        let mut words = c.spi_words;
        while words != 0 {
            let word = words.trailing_zeros() as usize;
            words &= words - 1;
            let mut bits = c.spis[word];
            while bits != 0 {
                let spi = &self.spis[word * 64 + bits.trailing_zeros() as usize];
                bits &= bits - 1;
                if Self::spi_owner(spi) == Some(vcpu) && pending(&spi.irq) {
                    return true;
                }
            }
        }
        false
    }

    /// Bitmask of the vCPUs for which [`Vgic::has_pending`] holds (e.g. to kick after a
    /// distributor write).
    pub fn pending_targets(&self) -> u64 {
        (0..self.vcpus.len())
            .filter(|&v| self.has_pending(v))
            .fold(0, |mask, v| mask | 1 << v)
    }
}

/// `GICD_CTLR.EnableGrp0`.
const CTLR_ENABLE_GRP0: u32 = 1 << 0;
/// `GICD_CTLR.EnableGrp1` (DS = 1 layout).
const CTLR_ENABLE_GRP1: u32 = 1 << 1;
