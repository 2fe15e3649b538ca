//! The per-interrupt registers shared by the GICv3 distributor, the redistributors' SGI frames
//! and the GICv2 distributor (offsets 0x080..0xCFF of each frame).

use crate::{Bank, PRIORITY_MASK, Trigger, Vgic};

pub(crate) const IGROUPR: u64 = 0x080;
pub(crate) const ISENABLER: u64 = 0x100;
pub(crate) const ICENABLER: u64 = 0x180;
pub(crate) const ISPENDR: u64 = 0x200;
pub(crate) const ICPENDR: u64 = 0x280;
pub(crate) const ISACTIVER: u64 = 0x300;
pub(crate) const ICACTIVER: u64 = 0x380;
pub(crate) const IPRIORITYR: u64 = 0x400;
/// One past the last per-interrupt register (`ICFGR` ends at 0xCFF).
pub(crate) const END: u64 = 0xd00;
/// `ITARGETSR` (the GICv2 frontend models it; RAZ/WI here).
pub(crate) const ITARGETSR: u64 = 0x800;
pub(crate) const ICFGR: u64 = 0xc00;

impl Vgic {
    /// Reads a per-interrupt register at `offset` (in 0x080..0xCFF) of `bank`'s frame.
    /// `IPRIORITYR` takes byte and word accesses, the others words only; anything else,
    /// `ITARGETSR` and interrupts outside the bank read as zero.
    pub(crate) fn irq_regs_read(&self, bank: Bank, offset: u64, size: u8) -> u64 {
        if (IPRIORITYR..ITARGETSR).contains(&offset) && (size == 1 || size == 4) {
            if !offset.is_multiple_of(u64::from(size)) {
                return 0;
            }
            let first = (offset - IPRIORITYR) as u32;
            return (0..u32::from(size)).fold(0, |acc, i| {
                let prio = self.bank_irq(bank, first + i).map_or(0, |irq| irq.priority);
                acc | u64::from(prio) << (8 * i)
            });
        }
        if size != 4 || !offset.is_multiple_of(4) {
            return 0;
        }
        if (ICFGR..END).contains(&offset) {
            let first = ((offset - ICFGR) / 4 * 16) as u32;
            return (0..16).fold(0, |acc, i| match self.bank_irq(bank, first + i) {
                Some(irq) if irq.trigger == Trigger::Edge => acc | 2 << (2 * i),
                _ => acc,
            });
        }
        if !(IGROUPR..IPRIORITYR).contains(&offset) {
            return 0;
        }
        let first = ((offset & 0x7f) / 4 * 32) as u32;
        let register = offset & !0x7f;
        (0..32).fold(0, |acc, i| {
            let bit = self
                .bank_irq(bank, first + i)
                .is_some_and(|irq| match register {
                    IGROUPR => irq.group1,
                    ISENABLER | ICENABLER => irq.enabled,
                    ISPENDR | ICPENDR => irq.is_pending(),
                    ISACTIVER | ICACTIVER => irq.is_active(),
                    _ => false,
                });
            acc | u64::from(bit) << i
        })
    }

    /// Writes a per-interrupt register at `offset` (in 0x080..0xCFF) of `bank`'s frame, with
    /// the access rules of [`Vgic::irq_regs_read`]. SGI trigger modes are read-only; in the
    /// GICv2 distributor so are the SGI bits of `ISPENDR`/`ICPENDR` (`SPENDSGIR`/`CPENDSGIR`
    /// set and clear those).
    pub(crate) fn irq_regs_write(&mut self, bank: Bank, offset: u64, size: u8, value: u64) {
        if (IPRIORITYR..ITARGETSR).contains(&offset) && (size == 1 || size == 4) {
            if !offset.is_multiple_of(u64::from(size)) {
                return;
            }
            let first = (offset - IPRIORITYR) as u32;
            for i in 0..u32::from(size) {
                if let Some(irq) = self.bank_irq_mut(bank, first + i) {
                    irq.priority = (value >> (8 * i)) as u8 & PRIORITY_MASK;
                }
            }
            return;
        }
        if size != 4 || !offset.is_multiple_of(4) {
            return;
        }
        let value = value as u32;
        if (ICFGR..END).contains(&offset) {
            let first = ((offset - ICFGR) / 4 * 16) as u32;
            for i in (0..16).filter(|&i| first + i >= 16) {
                if let Some(irq) = self.bank_irq_mut(bank, first + i) {
                    irq.trigger = if value & 2 << (2 * i) != 0 {
                        Trigger::Edge
                    } else {
                        Trigger::Level
                    };
                    self.mark_bank(bank, first + i);
                }
            }
            return;
        }
        if !(IGROUPR..IPRIORITYR).contains(&offset) {
            return;
        }
        let first = ((offset & 0x7f) / 4 * 32) as u32;
        let register = offset & !0x7f;
        let v2 = matches!(bank, Bank::V2(_));
        for i in 0..32 {
            let set = value & 1 << i != 0;
            if !set && register != IGROUPR {
                continue;
            }
            if v2 && first + i < 16 && matches!(register, ISPENDR | ICPENDR) {
                continue;
            }
            let Some(irq) = self.bank_irq_mut(bank, first + i) else {
                continue;
            };
            match register {
                IGROUPR => irq.group1 = set,
                ISENABLER => irq.enabled = true,
                ICENABLER => irq.enabled = false,
                ISPENDR => irq.latch = true,
                ICPENDR => {
                    irq.latch = false;
                    if let Some(f) = &mut irq.in_lr {
                        f.pending = false;
                    }
                }
                ISACTIVER => {
                    irq.active = true;
                    irq.active_vcpu = None;
                }
                ICACTIVER => {
                    irq.active = false;
                    irq.active_vcpu = None;
                    if let Some(f) = &mut irq.in_lr {
                        f.active_cleared = true;
                    }
                }
                _ => {}
            }
            self.mark_bank(bank, first + i);
        }
    }

    /// [`Vgic::mark`] for an interrupt that `bank` reaches.
    fn mark_bank(&mut self, bank: Bank, intid: u32) {
        match bank {
            Bank::Dist => self.mark(0, intid),
            Bank::Redist(vcpu) | Bank::V2(vcpu) => self.mark(vcpu, intid),
        }
    }
}
