//! The vGIC's state as a checkpoint carries it, and back.
//!
//! Taken while none of the instance's vCPUs runs, after each one's list registers were folded
//! back ([`Vgic::sync_from_lrs`]): what sat in a list register is then the model's pending or
//! active state, and a restored vGIC refills list registers from it on each vCPU's first entry.
//! Hardware mappings (`hw`) belong to the board, not the checkpoint: the restoring board keeps
//! its own, and a hardware-mapped interrupt's pending state comes back from its device.

use core::fmt;

use checkpoint::{IrqState as SavedIrq, RedistributorState, SpiState, VgicState};

use crate::{IrqState, Shape, Trigger, Vgic};

/// Why a saved vGIC does not fit this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// The saved state is of another GIC architecture version.
    Shape {
        /// The saved `gic_version` (2 or 3, or whatever a hand-made state holds).
        saved: u8,
        /// This vGIC's shape.
        here: Shape,
    },
    /// The saved state has a different number of SPIs.
    Spis {
        /// SPIs in the saved state.
        saved: usize,
        /// SPIs this vGIC has.
        here: u32,
    },
    /// The saved state has a different number of redistributors (vCPUs).
    Vcpus {
        /// Redistributors in the saved state.
        saved: usize,
        /// vCPUs this vGIC has.
        here: usize,
    },
    /// A redistributor does not hold exactly 32 SGIs and PPIs.
    PrivateInterrupts(usize),
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shape { saved, here } => {
                write!(
                    f,
                    "the saved vGIC is a GICv{saved}, this instance's a GICv{}",
                    here.version()
                )
            }
            Self::Spis { saved, here } => {
                write!(f, "the saved vGIC has {saved} SPIs, this one {here}")
            }
            Self::Vcpus { saved, here } => {
                write!(
                    f,
                    "the saved vGIC has {saved} redistributors, this instance {here} vCPUs"
                )
            }
            Self::PrivateInterrupts(count) => {
                write!(
                    f,
                    "a saved redistributor has {count} private interrupts, not 32"
                )
            }
        }
    }
}

fn save_irq(irq: &IrqState) -> SavedIrq {
    SavedIrq {
        enabled: irq.enabled,
        // A hardware-mapped interrupt (the virtual timer's) is pending because its device's
        // line is: the device's own state, restored with it, raises it again where it lands.
        pending: irq.latch && irq.hw.is_none(),
        active: irq.active,
        level: irq.line,
        edge: irq.trigger == Trigger::Edge,
        priority: irq.priority,
        group1: irq.group1,
    }
}

fn restore_irq(irq: &mut IrqState, saved: &SavedIrq) {
    irq.enabled = saved.enabled;
    irq.latch = saved.pending;
    irq.active = saved.active;
    irq.line = saved.level;
    irq.trigger = if saved.edge {
        Trigger::Edge
    } else {
        Trigger::Level
    };
    irq.priority = saved.priority & crate::PRIORITY_MASK;
    irq.group1 = saved.group1;
    irq.in_lr = None;
}

impl Vgic {
    /// The distributor's and every redistributor's state, for a checkpoint. Call only while no
    /// vCPU of the instance runs and after each one's list registers were synced.
    pub fn save(&self) -> VgicState {
        VgicState {
            gic_version: self.shape.version(),
            ctlr: self.ctlr,
            spis: self
                .spis
                .iter()
                .map(|spi| SpiState {
                    irq: save_irq(&spi.irq),
                    route: spi.irouter,
                    targets: spi.targets,
                })
                .collect(),
            redistributors: self
                .vcpus
                .iter()
                .enumerate()
                .map(|(index, vcpu)| RedistributorState {
                    vcpu: index as u16,
                    asleep: vcpu.sleep,
                    private: vcpu.private.iter().map(save_irq).collect(),
                })
                .collect(),
        }
    }

    /// Takes on `saved` (from [`Vgic::save`] on another board): every interrupt's enable,
    /// pending, active, level, trigger, priority and group, SPI routes (GICv3 `route`, GICv2
    /// `targets`, the other ignored) and redistributor wake state. No list register holds
    /// anything afterwards. A state of the other shape is refused. On error nothing has changed.
    pub fn restore(&mut self, saved: &VgicState) -> Result<(), RestoreError> {
        if saved.gic_version != self.shape.version() {
            return Err(RestoreError::Shape {
                saved: saved.gic_version,
                here: self.shape,
            });
        }
        if saved.spis.len() != self.spis.len() {
            return Err(RestoreError::Spis {
                saved: saved.spis.len(),
                here: self.num_spis,
            });
        }
        if saved.redistributors.len() != self.vcpus.len() {
            return Err(RestoreError::Vcpus {
                saved: saved.redistributors.len(),
                here: self.vcpus.len(),
            });
        }
        if let Some(bad) = saved.redistributors.iter().find(|r| r.private.len() != 32) {
            return Err(RestoreError::PrivateInterrupts(bad.private.len()));
        }
        let v3 = self.shape == Shape::V3;
        self.ctlr = saved.ctlr & 0b11;
        for (vcpu, saved) in self.vcpus.iter_mut().zip(&saved.redistributors) {
            // A GICv2 has no redistributors to sleep.
            vcpu.sleep = saved.asleep && v3;
            vcpu.lrs = [None; crate::MAX_LRS];
            for (irq, saved) in vcpu.private.iter_mut().zip(&saved.private) {
                restore_irq(irq, saved);
                irq.active_vcpu = None;
            }
        }
        let cpus = self.v2_cpu_mask();
        for (index, saved) in saved.spis.iter().enumerate() {
            let (irouter, targets, target) = if v3 {
                let irouter = saved.route & crate::distributor::IROUTER_MASK;
                (irouter, 0, self.resolve_route(irouter))
            } else {
                let targets = saved.targets & cpus;
                (0, targets, Self::v2_target(targets))
            };
            let spi = &mut self.spis[index];
            restore_irq(&mut spi.irq, &saved.irq);
            spi.irouter = irouter;
            spi.targets = targets;
            spi.target = target;
            // An active SPI returns to the vCPU it is routed to.
            spi.irq.active_vcpu = spi.irq.active.then_some(target).flatten();
        }
        for candidates in &mut self.cands {
            *candidates = Default::default();
        }
        self.mark_all();
        Ok(())
    }
}
