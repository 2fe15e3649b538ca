//! Which vCPUs a register write must kick: the owners of the interrupts it made pending and
//! forwardable, or moved to another vCPU while they are. Shared by the GICv3 distributor and
//! redistributors and the GICv2 distributor, so that an interrupt raised by one vCPU's write
//! for a vCPU running on another CPU is not left until that CPU's next exit.

use core::ops::Range;

use crate::{CTLR_ENABLE_GRP0, CTLR_ENABLE_GRP1, Vgic, regs};

/// Most interrupts one write can touch (a 32-bit set/clear register).
const KICK_SPAN: usize = 32;

impl Vgic {
    /// Runs `write` (by `vcpu`, touching `intids` of its view) and returns the vCPUs to kick.
    pub(crate) fn write_and_kick(
        &mut self,
        vcpu: usize,
        intids: Range<u32>,
        write: impl FnOnce(&mut Self),
    ) -> u64 {
        let before = self.kick_owners(vcpu, intids.clone());
        write(self);
        let after = self.kick_owners(vcpu, intids);
        before
            .iter()
            .zip(&after)
            .fold(0, |mask, (before, after)| match after {
                Some(owner) if before != after => mask | 1 << owner,
                _ => mask,
            })
    }

    /// The vCPU to kick for each of `vcpu`'s `intids` now (see [`Vgic::kick_target`]).
    fn kick_owners(&self, vcpu: usize, intids: Range<u32>) -> [Option<usize>; KICK_SPAN] {
        let mut owners = [None; KICK_SPAN];
        for (owner, intid) in owners.iter_mut().zip(intids) {
            *owner = self.kick_target(vcpu, intid);
        }
        owners
    }

    /// The INTIDs a write at `offset` (0x080..0xCFF) of the per-interrupt registers can make
    /// pending and forwardable or move: at most [`KICK_SPAN`]; byte registers (`ITARGETSR`)
    /// touch one INTID per byte written.
    pub(crate) fn irq_regs_touched(offset: u64, size: u8) -> Range<u32> {
        let (first, count) = match offset {
            // IGROUPR, I[SC]ENABLER, I[SC]PENDR, I[SC]ACTIVER: 32 INTIDs per word.
            o if (regs::IGROUPR..regs::IPRIORITYR).contains(&o) => ((o & 0x7f) / 4 * 32, 32),
            o if (regs::ITARGETSR..regs::ICFGR).contains(&o) => (o - regs::ITARGETSR, size.min(4)),
            o if (regs::ICFGR..regs::END).contains(&o) => ((o - regs::ICFGR) / 4 * 16, 16),
            _ => (0, 0),
        };
        first as u32..first as u32 + u32::from(count)
    }

    /// A `GICD_CTLR` write of the group enables `value` (either shape): the vCPUs with a
    /// pending, enabled interrupt in a group it enabled.
    pub(crate) fn write_group_enables(&mut self, value: u32) -> u64 {
        let ctlr = value & (CTLR_ENABLE_GRP0 | CTLR_ENABLE_GRP1);
        let enabled = ctlr & !self.ctlr;
        if ctlr == self.ctlr {
            return 0;
        }
        self.ctlr = ctlr;
        self.mark_all();
        if enabled == 0 {
            return 0;
        }
        (0..self.vcpus.len())
            .filter(|&vcpu| self.pending_in_groups(vcpu, enabled))
            .fold(0, |mask, vcpu| mask | 1 << vcpu)
    }

    /// Whether `vcpu` has a pending, forwardable interrupt of a group in `groups` (`GICD_CTLR`
    /// enable bits).
    fn pending_in_groups(&self, vcpu: usize, groups: u32) -> bool {
        let Some(v) = self.vcpus.get(vcpu) else {
            return false;
        };
        let spis = self
            .spis
            .iter()
            .filter(|s| Self::spi_owner(s) == Some(vcpu))
            .map(|s| &s.irq);
        v.private.iter().chain(spis).any(|irq| {
            irq.is_pending() && self.forwardable(irq) && Self::group_enabled_in(groups, irq)
        })
    }
}
