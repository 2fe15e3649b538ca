//! A guest instance as the trap handler sees it: per-vCPU register state, the instance-wide state
//! its vCPUs share (vGIC, emulated UART, power states), and what each exit does to them. Nothing
//! here touches hardware, so every path is tested on the host.
//!
//! A data abort on an address without a mapping is routed by address through the instance's
//! device table, whose entries (vGIC distributor, vGIC redistributors, PL011) are each an
//! [`MmioDevice`] over the shared state.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use devicetree::guest::{RAM_BASE, UART_BASE, UART_SPI};
use gic::{Shape, Vgic};
use log::{Level, warn};
use spin::Mutex;

use crate::exit::{ExitKind, ExitReason, SysRegAccess, TrapSyndrome};
use crate::fastpath::{FastState, FastVcpu};
use crate::idregs::GuestIdRegisters;
use crate::mmio::{Changes, GicDistributor, GicRedistributors, MmioAccess, MmioDevice};
use crate::pl011::{LineSink, Pl011, Pl011Port};
use crate::psci::{self, SmcccCall, status};
use crate::ratelimit::{Admission, LogBudget};
use crate::timer::{EmulatedTimer, PHYS_TIMER_INTID, TimerRegister};
use crate::vcpu::{El1SysRegs, ExceptionRegisters, FpRegs, GuestException, GuestRegs, inject};

/// The affinity fields of an MPIDR (Aff3, Aff2, Aff1, Aff0).
const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;
/// `ICC_SGI1R_EL1` as `(op0, op1, CRn, CRm, op2)`.
const ICC_SGI1R_EL1: (u8, u8, u8, u8, u8) = (3, 0, 12, 11, 5);
/// SPIs the vGIC offers (INTIDs 32..96): the UART and 32 virtio transports fit.
/// SPIs of every instance's vGIC.
pub const VGIC_SPIS: u32 = 64;
/// INTID of the instance's UART interrupt.
const UART_INTID: u32 = 32 + UART_SPI;
/// `op0` of the debug system registers (`DBGB*`, `DBGW*`, `MDSCR_EL1`, `OSLAR_EL1`, ...).
const DEBUG_OP0: u8 = 2;
/// A vCPU that takes the same fault at the same PC this many times in a row, with no other
/// exit between, can make no progress: it is stopped.
const FAULT_STREAK_LIMIT: u32 = 1000;

/// Makes vCPU `vcpu` of the instance in board slot `slot` notice a change: wakes it where it
/// waits, or interrupts the physical CPU it runs on.
pub type Kick = fn(slot: usize, vcpu: usize);

/// Tells physical CPU `cpu`, which has a vCPU loaded, that the vCPU has a new interrupt: it
/// refills the vCPU's list registers without a scheduling decision.
pub type KickLoaded = fn(cpu: usize);

/// Starts taking the checkpoint of the instance in a slot (see [`BoardServices::checkpoint`]).
pub type Checkpoint = fn(slot: usize) -> Result<(), (i64, String)>;

/// What the board provides each instance.
#[derive(Clone, Debug)]
pub struct BoardServices {
    /// Where the instance's console lines go.
    pub console: LineSink,
    /// Reaches a vCPU wherever it is.
    pub kick: Kick,
    /// Reaches the CPU a vCPU is loaded on, for a new interrupt.
    pub kick_loaded: KickLoaded,
    /// Starts taking the checkpoint of the instance in a slot for the management side
    /// (HV_CHECKPOINT); else the status for the guest (NOT_SUPPORTED: no board link; DENIED:
    /// a move is on) and why.
    pub checkpoint: Checkpoint,
    /// Counter ticks per second (`CNTFRQ_EL0`).
    pub counter_hz: u64,
    /// The CPU ID registers as guests see them.
    pub id_registers: GuestIdRegisters,
    /// The shape of the guests' interrupt controller (the board's own GIC version).
    pub gic: Shape,
}

/// An injected fault, the PC it was taken at, and how many times in a row it was injected.
type FaultStreak = (GuestException, u64, u32);

/// One virtual CPU's state while it is off its physical CPU.
#[derive(Clone, Debug)]
pub struct Vcpu {
    /// Index within the instance.
    pub index: usize,
    /// General-purpose registers, PC and PSTATE.
    pub regs: GuestRegs,
    /// EL1 system registers (live in hardware while the vCPU runs).
    pub el1: El1SysRegs,
    /// The MPIDR the guest reads (`VMPIDR_EL2`), with the RES1 bit 31 set.
    pub mpidr: u64,
    /// The vGIC virtual CPU interface control (`ICH_VMCR_EL2`).
    pub vmcr: u64,
    /// The emulated EL1 physical timer.
    pub phys_timer: EmulatedTimer,
    /// The guest's own virtual timer (`CNTV_CTL_EL0`, `CNTV_CVAL_EL0`), live while it runs.
    pub virtual_timer: EmulatedTimer,
    /// FP/SIMD registers, live while it runs.
    pub fp: FpRegs,
    /// The virtual CPU interface's active priorities (`ICH_AP0R0_EL2`, `ICH_AP1R0_EL2`).
    pub active_priorities: [u64; 2],
    /// Set by CPU_SUSPEND to a power-down state: where the vCPU restarts once woken.
    pub powered_down: Option<(u64, u64)>,
    /// The last injected fault and its PC, and how many times in a row it was injected.
    fault_streak: Option<FaultStreak>,
}

/// The board counter value at which the instance's counter, `counter_offset` behind the board's
/// (modulo 2^64: an instance restored from another board may be ahead), reaches `deadline`; the
/// board counter reads `now`. The same value whatever `now` is (callers compare it with what
/// they armed), clamped to the counter's range rather than wrapping: a deadline passed before
/// the board started is 0, one beyond the end of time is the end of time.
fn board_time(deadline: u64, counter_offset: u64, now: u64) -> u64 {
    let guest_now = now.wrapping_sub(counter_offset);
    if deadline <= guest_now {
        now.saturating_sub(guest_now - deadline)
    } else {
        now.saturating_add(deadline - guest_now)
    }
}

impl Vcpu {
    /// vCPU `index` with affinity `affinity`, entering at `entry` with `x0 = arg`.
    pub fn new(index: usize, affinity: u64, entry: u64, arg: u64) -> Self {
        Self {
            index,
            regs: GuestRegs::at_entry(entry, arg),
            el1: El1SysRegs::at_reset(),
            mpidr: (1 << 31) | (affinity & MPIDR_AFFINITY_MASK),
            vmcr: 0,
            phys_timer: EmulatedTimer::default(),
            virtual_timer: EmulatedTimer::default(),
            fp: FpRegs::default(),
            active_priorities: [0; 2],
            powered_down: None,
            fault_streak: None,
        }
    }

    /// When this vCPU, waiting for an interrupt off its CPU, must be woken, in board counter
    /// ticks: the earlier of its virtual and emulated physical timers' deadlines (both in the
    /// instance's time, `counter_offset` behind the board's, which reads `now`).
    pub fn wake_deadline(&self, counter_offset: u64, now: u64) -> Option<u64> {
        let virtual_deadline = self
            .virtual_timer
            .deadline()
            .map(|deadline| board_time(deadline, counter_offset, now));
        match (virtual_deadline, self.phys_deadline(counter_offset, now)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The emulated physical timer's deadline in board counter ticks, if it is armed.
    pub fn phys_deadline(&self, counter_offset: u64, now: u64) -> Option<u64> {
        self.phys_timer
            .deadline()
            .map(|deadline| board_time(deadline, counter_offset, now))
    }

    /// Puts the vCPU back to its power-on state, entering at `entry` with `x0 = arg`.
    pub fn power_on(&mut self, entry: u64, arg: u64) {
        *self = Self::new(self.index, self.mpidr, entry, arg);
    }

    /// Wakes the vCPU from a CPU_SUSPEND power-down state: registers and EL1 system registers
    /// as at power-on, entering at `entry` with `x0 = context_id`; its interrupt controller
    /// and timer state stay (they are what woke it).
    pub fn resume_from_power_down(&mut self, entry: u64, context_id: u64) {
        self.regs = GuestRegs::at_entry(entry, context_id);
        self.el1 = El1SysRegs::at_reset();
        self.fault_streak = None;
    }
}

impl Vcpu {
    /// The vCPU's context for a checkpoint (taken off its CPU), with `powered_on` its power
    /// state and `counter` the instance's virtual counter at the pause.
    pub fn save(&self, powered_on: bool, counter: u64) -> checkpoint::VcpuState {
        let e = &self.el1;
        checkpoint::VcpuState {
            index: self.index as u16,
            mpidr: self.mpidr,
            powered_on,
            x: self.regs.x,
            pc: self.regs.pc,
            pstate: self.regs.pstate,
            el1: checkpoint::El1Regs {
                sctlr: e.sctlr_el1,
                actlr: e.actlr_el1,
                cpacr: e.cpacr_el1,
                ttbr0: e.ttbr0_el1,
                ttbr1: e.ttbr1_el1,
                tcr: e.tcr_el1,
                mair: e.mair_el1,
                amair: e.amair_el1,
                vbar: e.vbar_el1,
                contextidr: e.contextidr_el1,
                tpidr_el0: e.tpidr_el0,
                tpidrro_el0: e.tpidrro_el0,
                tpidr_el1: e.tpidr_el1,
                sp_el0: e.sp_el0,
                sp_el1: e.sp_el1,
                elr: e.elr_el1,
                spsr: e.spsr_el1,
                esr: e.esr_el1,
                far: e.far_el1,
                afsr0: e.afsr0_el1,
                afsr1: e.afsr1_el1,
                par: e.par_el1,
                cntkctl: e.cntkctl_el1,
                csselr: e.csselr_el1,
                mdscr: e.mdscr_el1,
            },
            fp: checkpoint::FpState {
                v: self.fp.v,
                fpcr: self.fp.fpcr,
                fpsr: self.fp.fpsr,
            },
            virtual_timer: checkpoint::TimerState {
                control: self.virtual_timer.control,
                compare: self.virtual_timer.compare,
            },
            physical_timer: checkpoint::TimerState {
                control: self.phys_timer.control,
                compare: self.phys_timer.compare,
            },
            counter,
            gic_cpu: checkpoint::GicCpuState {
                vmcr: self.vmcr,
                active_priorities: self.active_priorities,
            },
            resume: self.powered_down,
        }
    }

    /// Takes on a context saved on another board by [`Vcpu::save`]; its MPIDR stays this
    /// board's (the instance's vCPU layout is the same on both).
    pub fn restore(&mut self, saved: &checkpoint::VcpuState) {
        let e = &saved.el1;
        self.regs = GuestRegs {
            x: saved.x,
            pc: saved.pc,
            pstate: saved.pstate,
        };
        self.el1 = El1SysRegs {
            sctlr_el1: e.sctlr,
            actlr_el1: e.actlr,
            cpacr_el1: e.cpacr,
            ttbr0_el1: e.ttbr0,
            ttbr1_el1: e.ttbr1,
            tcr_el1: e.tcr,
            mair_el1: e.mair,
            amair_el1: e.amair,
            vbar_el1: e.vbar,
            contextidr_el1: e.contextidr,
            tpidr_el0: e.tpidr_el0,
            tpidrro_el0: e.tpidrro_el0,
            tpidr_el1: e.tpidr_el1,
            sp_el0: e.sp_el0,
            sp_el1: e.sp_el1,
            elr_el1: e.elr,
            spsr_el1: e.spsr,
            esr_el1: e.esr,
            far_el1: e.far,
            afsr0_el1: e.afsr0,
            afsr1_el1: e.afsr1,
            par_el1: e.par,
            cntkctl_el1: e.cntkctl,
            csselr_el1: e.csselr,
            mdscr_el1: e.mdscr,
        };
        self.fp = FpRegs {
            v: saved.fp.v,
            fpcr: saved.fp.fpcr,
            fpsr: saved.fp.fpsr,
        };
        self.virtual_timer = EmulatedTimer {
            control: saved.virtual_timer.control,
            compare: saved.virtual_timer.compare,
        };
        self.phys_timer = EmulatedTimer {
            control: saved.physical_timer.control,
            compare: saved.physical_timer.compare,
        };
        self.vmcr = saved.gic_cpu.vmcr;
        self.active_priorities = saved.gic_cpu.active_priorities;
        self.powered_down = saved.resume;
        self.fault_streak = None;
    }
}

/// What a timer that fired did to the vCPU it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerRaise {
    /// Nothing it can take now (the interrupt is disabled, or its group is).
    Nothing,
    /// An interrupt to take (or one that waits until the guest deactivates it); the epoch
    /// moved, so its list registers are refilled.
    Pending,
    /// An interrupt to take, already given list register `slot` as `value`
    /// (`ICH_LR<n>_EL2` encoding): the caller writes that one register, and nothing else
    /// changed.
    InLr {
        /// The free list register it takes.
        slot: usize,
        /// Its value.
        value: u64,
    },
}

/// Why an instance stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest asked for PSCI SYSTEM_OFF.
    SystemOff,
    /// The guest turned off all its vCPUs.
    AllCpusOff,
    /// The guest did something the hypervisor cannot continue from.
    Fault(String),
    /// The operator destroyed it.
    Destroyed,
    /// It moved to another board (at this address), which runs it now.
    Moved(String),
}

impl core::fmt::Display for StopReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::SystemOff => write!(f, "the guest called SYSTEM_OFF"),
            Self::AllCpusOff => write!(f, "the guest turned off all its vCPUs"),
            Self::Fault(why) => write!(f, "{why}"),
            Self::Destroyed => write!(f, "destroyed by the operator"),
            Self::Moved(destination) => write!(f, "moved to {destination}"),
        }
    }
}

/// What the physical CPU does after an exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Enter the guest again.
    Resume,
    /// The vCPU waits for an interrupt (WFI, CPU_SUSPEND standby): resume once one is pending,
    /// which may be at once (the run loop asks the vGIC, through the refill of the list
    /// registers that an entry needs anyway).
    Wait,
    /// This vCPU is off (CPU_OFF, or the instance stopped or is being reset): leave the guest.
    Leave,
    /// The guest asked for SYSTEM_RESET: the other vCPUs have been told to leave; reload the
    /// instance once they have.
    Reset,
    /// PSCI CPU_SUSPEND to a power-down state: block until an interrupt is pending, then start
    /// the vCPU afresh (power-on register state) at `entry` with x0 = `context_id`.
    PowerDown { entry: u64, context_id: u64 },
}

/// What a physical CPU about to run a vCPU should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuStatus {
    /// The vCPU is off: nothing to run.
    Off,
    /// The vCPU was powered on: start it at `entry` with `x0 = context_id`.
    Start { entry: u64, context_id: u64 },
    /// The vCPU is on: continue from its saved state.
    Continue,
    /// The instance is finished.
    Ended(StopReason),
}

/// A vCPU's PSCI power state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    /// Off (never started, or CPU_OFF).
    Off,
    /// CPU_ON was called: it starts at `entry` with `x0 = context_id` when next run.
    Starting {
        /// Where it starts.
        entry: u64,
        /// Its x0 at the start.
        context_id: u64,
    },
    /// On: it continues from its saved context.
    On,
}

/// Which instruction made an SMCCC call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conduit {
    Hvc,
    Smc,
}

/// Instance-wide state, shared by its vCPUs under one lock.
struct Shared {
    vgic: Vgic,
    uart: Pl011,
    power: Vec<Power>,
    /// Bit n: vCPU n is between its start and the moment its CPU reported it left.
    in_guest: u64,
    /// The vCPU that asked for SYSTEM_RESET and waits for the others to leave.
    resetting: Option<usize>,
    stop: Option<StopReason>,
    /// Where migration notices go (HV_MIGRATION_NOTICES), and the last one sent.
    notices: Notices,
}

/// A migration notice, as HV_MIGRATION_STATUS reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Notice {
    /// None yet.
    #[default]
    None = 0,
    /// A move is about to pause the instance.
    Pausing = 1,
    /// The instance runs again after a move; it was paused for the ticks given.
    Resumed = 2,
}

/// The paravirtual migration channel of an instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Notices {
    /// The interrupt notices raise on vCPU 0, if the guest registered one.
    intid: Option<u32>,
    last: Notice,
    /// Counter ticks the instance was paused, for [`Notice::Resumed`].
    paused_ticks: u64,
    /// Notices sent so far.
    count: u64,
    /// The guest has read the last notice (HV_MIGRATION_STATUS since it was sent).
    read: bool,
}

/// The emulated devices of an instance: the entries of its device table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Device {
    /// The vGIC distributor.
    Distributor,
    /// The vGIC redistributors, one per vCPU.
    Redistributors,
    /// The PL011 console UART.
    Uart,
}

impl Device {
    /// The device table, searched by address on every MMIO exit.
    const TABLE: [Self; 3] = [Self::Distributor, Self::Redistributors, Self::Uart];
}

/// A device of the table as an access reaches it, borrowed from the instance-wide state.
enum DeviceView<'a> {
    Distributor(GicDistributor<'a>),
    Redistributors(GicRedistributors<'a>),
    Uart(Pl011Port<'a, Vgic>),
}

impl MmioDevice for DeviceView<'_> {
    fn region(&self) -> (u64, u64) {
        match self {
            Self::Distributor(device) => device.region(),
            Self::Redistributors(device) => device.region(),
            Self::Uart(device) => device.region(),
        }
    }

    fn read(&mut self, offset: u64, size: u8) -> (u64, Changes) {
        match self {
            Self::Distributor(device) => device.read(offset, size),
            Self::Redistributors(device) => device.read(offset, size),
            Self::Uart(device) => device.read(offset, size),
        }
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) -> Changes {
        match self {
            Self::Distributor(device) => device.write(offset, size, value),
            Self::Redistributors(device) => device.write(offset, size, value),
            Self::Uart(device) => device.write(offset, size, value),
        }
    }
}

impl Shared {
    /// `device` as an access by vCPU `vcpu` reaches it.
    fn device(&mut self, device: Device, vcpu: usize) -> DeviceView<'_> {
        match device {
            Device::Distributor => DeviceView::Distributor(GicDistributor {
                vgic: &mut self.vgic,
                vcpu,
            }),
            Device::Redistributors => DeviceView::Redistributors(GicRedistributors(&mut self.vgic)),
            Device::Uart => DeviceView::Uart(Pl011Port {
                uart: &mut self.uart,
                irq: &mut self.vgic,
                vcpu,
            }),
        }
    }

    /// The device whose region holds `ipa`, and the offset of `ipa` in that region.
    fn route(&mut self, ipa: u64) -> Option<(Device, u64)> {
        Device::TABLE.into_iter().find_map(|device| {
            let (base, size) = self.device(device, 0).region();
            let offset = ipa.checked_sub(base).filter(|offset| *offset < size)?;
            Some((device, offset))
        })
    }

    /// Performs `access` by vCPU `vcpu`, a store of `register` if it writes, on the device at
    /// its address: the value read (0 for a store) and what the access changed; `None` if no
    /// device is there.
    fn access(
        &mut self,
        access: &MmioAccess,
        register: u64,
        vcpu: usize,
    ) -> Option<(u64, Changes)> {
        let (device, offset) = self.route(access.ipa)?;
        let mut device = self.device(device, vcpu);
        Some(if access.write {
            let changes = device.write(offset, access.size, access.store_value(register));
            (0, changes)
        } else {
            device.read(offset, access.size)
        })
    }
}

/// A vGIC of `shape` in its reset state, for vCPUs with `mpidrs`.
fn reset_vgic(shape: Shape, mpidrs: &[u64]) -> Vgic {
    match shape {
        Shape::V3 => Vgic::new(mpidrs.len(), mpidrs.to_vec(), VGIC_SPIS),
        Shape::V2 => Vgic::new_v2(mpidrs.len(), VGIC_SPIS),
    }
}

/// A guest instance: its name, its RAM size, and the state its vCPUs share.
pub struct Instance {
    /// The instance's name, used in every log line about it and as its console prefix.
    pub name: String,
    /// Bytes of guest RAM at [`RAM_BASE`].
    pub ram_size: u64,
    /// The instance's slot on its board (what [`Kick`] names it by).
    pub slot: usize,
    mpidrs: Vec<u64>,
    /// What the fast path answers from, without `shared`'s lock.
    fast: FastState,
    shared: Mutex<Shared>,
    kick: Kick,
    kick_loaded: KickLoaded,
    /// Per vCPU: 1 + the physical CPU it is loaded on (its registers and list registers live
    /// there), 0 while it is not.
    loaded_on: Vec<AtomicUsize>,
    checkpoint: Checkpoint,
    /// Counter ticks per second (`CNTFRQ_EL0`), for the log budget.
    counter_hz: u64,
    /// What trapped ID register reads answer.
    id_registers: GuestIdRegisters,
    /// Bounds the log lines this instance can make the hypervisor print.
    log_budget: Mutex<LogBudget>,
    /// Bit n: vCPU n is on and the instance has not stopped (read on every exit, without the lock).
    running: AtomicU64,
    /// Counts changes to the vGIC's state, so a CPU can tell that its list registers are
    /// current. A timer's interrupt put straight into a free list register of the CPU that runs
    /// its vCPU ([`TimerRaise::InLr`]) changes the vGIC without moving it: that CPU's registers
    /// already say so, and no other vCPU's depend on it.
    interrupt_epoch: AtomicU64,
    /// Exits by reason (rows of [`ExitReason::NAMES`]).
    exits: [AtomicU64; ExitReason::NAMES.len()],
    /// Interrupts raised for the guest: timer expiries, SGIs, device lines going up.
    interrupts_raised: AtomicU64,
    /// What the instance's counters lag the board's by (`CNTVOFF_EL2` for its virtual counter,
    /// and the same for the physical counter and timer it reads through traps).
    counter_offset: AtomicU64,
}

impl Instance {
    /// An instance called `name` in board slot `slot`, with `ram_size` bytes of RAM and one
    /// vCPU per entry of `affinities`, served by `board`.
    pub fn new(
        name: &str,
        slot: usize,
        ram_size: u64,
        affinities: &[u64],
        board: BoardServices,
    ) -> Self {
        let mpidrs: Vec<u64> = affinities
            .iter()
            .map(|a| (1 << 31) | (a & MPIDR_AFFINITY_MASK))
            .collect();
        let vgic = reset_vgic(board.gic, &mpidrs);
        let uart = Pl011::new(name, board.console, UART_BASE, UART_INTID);
        let fast = FastState::new(UART_BASE, uart.fast(), &vgic, board.id_registers.clone());
        Self {
            name: name.into(),
            ram_size,
            fast,
            shared: Mutex::new(Shared {
                vgic,
                uart,
                power: alloc::vec![Power::Off; mpidrs.len()],
                in_guest: 0,
                resetting: None,
                stop: None,
                notices: Notices::default(),
            }),
            slot,
            mpidrs,
            kick: board.kick,
            kick_loaded: board.kick_loaded,
            loaded_on: affinities.iter().map(|_| AtomicUsize::new(0)).collect(),
            checkpoint: board.checkpoint,
            counter_hz: board.counter_hz.max(1),
            id_registers: board.id_registers,
            log_budget: Mutex::new(LogBudget::new(0)),
            running: AtomicU64::new(0),
            interrupt_epoch: AtomicU64::new(0),
            exits: [const { AtomicU64::new(0) }; ExitReason::NAMES.len()],
            interrupts_raised: AtomicU64::new(0),
            counter_offset: AtomicU64::new(0),
        }
    }

    /// Changes instance-wide state that the vGIC depends on, and records that it changed.
    fn update<R>(&self, change: impl FnOnce(&mut Shared) -> R) -> R {
        let result = change(&mut self.shared.lock());
        self.interrupt_epoch.fetch_add(1, Ordering::Release);
        result
    }

    /// Moves the interrupt epoch on if `changes` says interrupt state changed.
    fn record(&self, changes: Changes) {
        if changes.interrupts {
            self.interrupt_epoch.fetch_add(1, Ordering::Release);
        }
    }

    /// Changes whenever the vGIC's state may have changed other than through a vCPU's own list
    /// registers: a CPU whose list registers are as it wrote them, and that sees the same epoch
    /// as at its last fill, need not fill them again.
    pub fn interrupt_epoch(&self) -> u64 {
        self.interrupt_epoch.load(Ordering::Acquire)
    }

    /// The vCPUs, each at its power-on state.
    pub fn vcpus(&self) -> Vec<Vcpu> {
        self.mpidrs
            .iter()
            .enumerate()
            .map(|(index, mpidr)| Vcpu::new(index, *mpidr, 0, 0))
            .collect()
    }

    /// The vGIC, the UART and each vCPU's power state, for a checkpoint. Only while no vCPU of
    /// the instance runs (each one's list registers folded back when it left its CPU).
    pub fn save_devices(&self) -> (checkpoint::VgicState, checkpoint::Pl011State, Vec<Power>) {
        let shared = self.shared.lock();
        (shared.vgic.save(), shared.uart.save(), shared.power.clone())
    }

    /// Takes on the state of an instance saved on another board: the vGIC, the UART and which
    /// vCPUs are on (these continue from the contexts the caller restored). Nothing changes
    /// on error.
    pub fn restore_devices(
        &self,
        vgic: &checkpoint::VgicState,
        uart: &checkpoint::Pl011State,
        powered_on: &[bool],
    ) -> Result<(), String> {
        if powered_on.len() != self.mpidrs.len() {
            return Err(alloc::format!(
                "{} vCPU power states for {} vCPUs",
                powered_on.len(),
                self.mpidrs.len()
            ));
        }
        let mut running = 0u64;
        self.update(|shared| -> Result<(), String> {
            shared
                .vgic
                .restore(vgic)
                .map_err(|error| error.to_string())?;
            shared.uart.restore(uart);
            shared.uart.interrupt_controller_reset();
            for (index, on) in powered_on.iter().enumerate() {
                shared.power[index] = if *on { Power::On } else { Power::Off };
                if *on {
                    running |= 1 << index;
                }
            }
            shared.in_guest = running;
            shared.resetting = None;
            shared.stop = None;
            // The UART's line is driven into the restored vGIC (`update` records the change).
            let Shared { uart, vgic, .. } = shared;
            let _ = uart.drive_line(vgic);
            Ok(())
        })?;
        self.running.store(running, Ordering::Release);
        for vcpu in 0..self.mpidrs.len() {
            self.kick_vcpu(vcpu);
        }
        Ok(())
    }

    /// (Re)starts the instance: every vCPU off but vCPU 0, which enters at `entry` with x0 = `dtb`.
    pub fn boot(&self, entry: u64, dtb: u64) {
        self.update(|shared| {
            shared.vgic = reset_vgic(shared.vgic.shape(), &self.mpidrs);
            shared.uart.interrupt_controller_reset();
            shared.power.fill(Power::Off);
            shared.power[0] = Power::Starting {
                entry,
                context_id: dtb,
            };
            shared.resetting = None;
            shared.stop = None;
            shared.notices = Notices::default();
        });
        self.running.store(0, Ordering::Release);
        self.kick_vcpu(0);
    }

    /// What the CPU that runs vCPU `vcpu` should do while the vCPU is not running.
    pub fn poll(&self, vcpu: usize) -> VcpuStatus {
        let mut shared = self.shared.lock();
        if let Some(reason) = &shared.stop {
            return VcpuStatus::Ended(reason.clone());
        }
        match shared.power[vcpu] {
            Power::Starting { entry, context_id } => {
                shared.power[vcpu] = Power::On;
                shared.in_guest |= 1 << vcpu;
                self.running.fetch_or(1 << vcpu, Ordering::AcqRel);
                VcpuStatus::Start { entry, context_id }
            }
            Power::On => VcpuStatus::Continue,
            Power::Off => VcpuStatus::Off,
        }
    }

    /// The CPU running `vcpu` reports that the vCPU left the guest (after `Next::Leave/Reset`);
    /// a vCPU waiting to reset the instance is woken to see it.
    pub fn left(&self, vcpu: usize) {
        let resetting = {
            let mut shared = self.shared.lock();
            shared.in_guest &= !(1 << vcpu);
            shared.resetting.filter(|waiter| *waiter != vcpu)
        };
        if let Some(waiter) = resetting {
            self.kick_vcpu(waiter);
        }
    }

    /// Prints a log line the guest caused, within the instance's log budget (see
    /// [`LogBudget`]); reports how many lines were dropped before it.
    fn guest_log(&self, level: Level, now: u64, args: core::fmt::Arguments) {
        if level > log::max_level() {
            return;
        }
        let admission = self.log_budget.lock().admit(now, self.counter_hz);
        match admission {
            Admission::Print { suppressed: 0 } => log::log!(level, "{}: {args}", self.name),
            Admission::Print { suppressed } => log::log!(
                level,
                "{}: {args} ({suppressed} lines about this instance suppressed before this one: at most {} a second)",
                self.name,
                LogBudget::PER_SECOND
            ),
            Admission::Drop => {}
        }
    }

    /// Reports lines the log budget dropped and has not reported yet (when a vCPU or the
    /// instance stops, so that nothing goes unmentioned).
    fn report_suppressed(&self) {
        let suppressed = self.log_budget.lock().take_suppressed();
        if suppressed > 0 {
            warn!(
                "{}: {suppressed} more lines about this instance were suppressed (at most {} a second)",
                self.name,
                LogBudget::PER_SECOND
            );
        }
    }

    /// Why the instance stopped, if it has.
    pub fn stopped(&self) -> Option<StopReason> {
        self.shared.lock().stop.clone()
    }

    /// True while `vcpu` is on and the instance has not stopped.
    pub fn is_on(&self, vcpu: usize) -> bool {
        self.running.load(Ordering::Acquire) & (1 << vcpu) != 0
    }

    /// True once no vCPU but `except` is still in the guest (a reset waits for this).
    pub fn others_out(&self, except: usize) -> bool {
        self.shared.lock().in_guest & !(1 << except) == 0
    }

    /// Passes on console output that vCPU `vcpu` left without its newline (a prompt), now
    /// that the vCPU is idle.
    pub fn flush_console(&self, vcpu: usize) {
        // Without the instance's lock when there is nothing to pass on, as on most waits.
        if self.fast.console().holds_line_of(vcpu) {
            self.shared.lock().uart.flush_prompt(vcpu);
        }
    }

    /// Fills `lrs` (the list registers) for entering `vcpu`; true if interrupts are left over.
    pub fn flush_interrupts(&self, vcpu: usize, lrs: &mut [u64]) -> bool {
        let (overflow, handed_over) = {
            let vgic = &mut self.shared.lock().vgic;
            let overflow = vgic.flush_to_lrs(vcpu, lrs);
            (overflow, vgic.take_handed_over())
        };
        if handed_over != 0 {
            self.hand_over(handed_over, vcpu);
        }
        overflow
    }

    /// Folds the list registers of `vcpu` back into the vGIC after an exit.
    pub fn sync_interrupts(&self, vcpu: usize, lrs: &[u64]) {
        let handed_over = {
            let vgic = &mut self.shared.lock().vgic;
            vgic.sync_from_lrs(vcpu, lrs);
            vgic.take_handed_over()
        };
        if handed_over != 0 {
            self.hand_over(handed_over, vcpu);
        }
    }

    /// A fold of `vcpu`'s list registers gave the vCPUs of `targets` an SPI (rerouted while it
    /// sat in one of them): they refill and, wherever they wait, are kicked. Rare: out of line.
    #[cold]
    #[inline(never)]
    fn hand_over(&self, targets: u64, vcpu: usize) {
        self.interrupt_epoch.fetch_add(1, Ordering::Release);
        self.kick_all(targets, vcpu);
    }

    /// True if `vcpu` has an interrupt to take (ends a WFI).
    pub fn has_pending(&self, vcpu: usize) -> bool {
        self.shared.lock().vgic.has_pending(vcpu)
    }

    /// What the instance's counters lag the board's by, in counter ticks.
    pub fn counter_offset(&self) -> u64 {
        self.counter_offset.load(Ordering::Acquire)
    }

    /// Sets what the instance's counters lag the board's by (an instance restored on another
    /// board continues its time from where it paused); takes effect at each vCPU's next load.
    pub fn set_counter_offset(&self, offset: u64) {
        self.counter_offset.store(offset, Ordering::Release);
    }

    /// Exits so far by reason, as `(name, count)`: those of the full path, then those the
    /// fast path answered.
    pub fn exit_counts(&self) -> Vec<(&'static str, u64)> {
        ExitReason::NAMES
            .iter()
            .zip(&self.exits)
            .map(|(name, count)| (*name, count.load(Ordering::Relaxed)))
            .chain(self.fast.answered())
            .collect()
    }

    /// What the fast path of `vcpu` answers from while it runs, as the vCPU stands now (its
    /// physical timer changes only on the full path: the run loop copies it in again before
    /// each entry).
    pub fn fast_vcpu(&self, vcpu: &Vcpu) -> FastVcpu<'_> {
        self.fast.vcpu(vcpu.index, vcpu.phys_timer)
    }

    /// Interrupts raised for the guest so far.
    pub fn interrupts_raised(&self) -> u64 {
        self.interrupts_raised.load(Ordering::Relaxed)
    }

    /// Stops the instance at the operator's request: every vCPU leaves at its next exit.
    pub fn destroy(&self) {
        self.stop(&mut self.shared.lock(), StopReason::Destroyed, usize::MAX);
    }

    /// Ends the instance here because `destination` runs it now.
    pub fn end_moved(&self, destination: &str) {
        self.stop(
            &mut self.shared.lock(),
            StopReason::Moved(destination.into()),
            usize::MAX,
        );
    }

    /// The virtual timer of `vcpu` fired: deliver its PPI `intid`, backed by physical INTID
    /// `pintid`. `lrs_as_filled` are the live list registers of the CPU that runs `vcpu` if
    /// they are exactly as its last fill left them and the epoch has not moved since: the
    /// interrupt may then go straight into a free one.
    pub fn timer_fired(
        &self,
        vcpu: usize,
        intid: u32,
        pintid: u32,
        lrs_as_filled: Option<&[u64]>,
    ) -> TimerRaise {
        self.raise_timer(vcpu, intid, lrs_as_filled, |vgic| {
            vgic.set_hw_mapping(vcpu, intid, Some(pintid));
            vgic.pulse(vcpu, intid)
        })
    }

    /// The hypervisor's deadline for the emulated physical timer of `vcpu` passed: its level
    /// rises (`lrs_as_filled` as for [`Instance::timer_fired`]).
    pub fn phys_timer_fired(&self, vcpu: usize, lrs_as_filled: Option<&[u64]>) -> TimerRaise {
        self.raise_timer(vcpu, PHYS_TIMER_INTID, lrs_as_filled, |vgic| {
            vgic.set_line(vcpu, PHYS_TIMER_INTID, true)
        })
    }

    /// Raises private interrupt `intid` of `vcpu` by `raise` (which returns the vCPU to kick),
    /// straight into a free list register where [`Vgic::inject_into_free_lr`] allows: the
    /// epoch then stays, and no CPU refills for it.
    fn raise_timer(
        &self,
        vcpu: usize,
        intid: u32,
        lrs_as_filled: Option<&[u64]>,
        raise: impl FnOnce(&mut Vgic) -> Option<usize>,
    ) -> TimerRaise {
        self.interrupts_raised.fetch_add(1, Ordering::Relaxed);
        let raised = {
            let vgic = &mut self.shared.lock().vgic;
            if raise(vgic) != Some(vcpu) {
                TimerRaise::Nothing
            } else if let Some((slot, value)) =
                lrs_as_filled.and_then(|lrs| vgic.inject_into_free_lr(vcpu, intid, lrs))
            {
                return TimerRaise::InLr { slot, value };
            } else {
                TimerRaise::Pending
            }
        };
        self.interrupt_epoch.fetch_add(1, Ordering::Release);
        raised
    }

    /// How many bytes the instance's UART can take now.
    pub fn console_space(&self) -> usize {
        self.shared.lock().uart.receive_space()
    }

    /// Bytes typed on the board console arrive at the instance's UART.
    pub fn console_input(&self, bytes: &[u8]) {
        let changes = {
            let mut shared = self.shared.lock();
            let shared = &mut *shared;
            for byte in bytes {
                shared.uart.receive(*byte);
            }
            shared.uart.drive_line(&mut shared.vgic)
        };
        self.record(changes);
        if changes.interrupts {
            // The UART's line rose or fell: wake whichever vCPU now has it pending, wherever
            // it waits (typing is rare; asking each vCPU is cheap enough).
            for vcpu in 0..self.mpidrs.len() {
                if self.has_pending(vcpu) {
                    self.kick_vcpu(vcpu);
                }
            }
        }
    }

    /// Stops the whole instance with `reason` and tells every other vCPU to leave.
    fn stop(&self, shared: &mut Shared, reason: StopReason, caller: usize) {
        if shared.stop.is_none() {
            shared.stop = Some(reason);
        }
        shared.power.fill(Power::Off);
        self.running.store(0, Ordering::Release);
        self.kick_others(caller);
    }

    fn kick_others(&self, caller: usize) {
        (0..self.mpidrs.len())
            .filter(|n| *n != caller)
            .for_each(|n| self.kick_vcpu(n));
    }

    /// Counts the interrupts raised for the vCPUs in `targets` (bit n: vCPU n) and kicks them,
    /// but for `caller`, whose exit this is: it refills its list registers on re-entry anyway
    /// (the interrupt epoch moved), and a kick would only cost it one more exit.
    fn kick_all(&self, targets: u64, caller: usize) {
        if targets == 0 {
            return;
        }
        self.interrupts_raised
            .fetch_add(u64::from(targets.count_ones()), Ordering::Relaxed);
        let others = targets & !(1 << caller);
        if others == 0 {
            return;
        }
        // The vGIC changes these kicks announce come before the reads of where the vCPUs
        // are loaded, as `vcpu_loaded` orders a CPU's unloading before it looks at the vGIC
        // again (the vGIC's lock orders the two as well): either a kick finds its vCPU
        // loaded, or that CPU sees the change.
        fence(Ordering::SeqCst);
        (0..self.mpidrs.len())
            .filter(|&n| others & (1 << n) != 0)
            .for_each(|n| match self.loaded_on[n].load(Ordering::Relaxed) {
                0 => self.kick_vcpu(n),
                on => (self.kick_loaded)(on - 1),
            });
    }

    fn kick_vcpu(&self, vcpu: usize) {
        (self.kick)(self.slot, vcpu);
    }

    /// Physical CPU `cpu` has loaded vCPU `vcpu` (`Some`), or has taken it off (`None`): then
    /// before the CPU looks at the vGIC for it again (`has_pending`, say), so that a kick for a
    /// new interrupt either finds it loaded or is seen there (see `kick_all`).
    pub fn vcpu_loaded(&self, vcpu: usize, cpu: Option<usize>) {
        if let Some(on) = self.loaded_on.get(vcpu) {
            on.store(cpu.map_or(0, |cpu| cpu + 1), Ordering::Relaxed);
            fence(Ordering::SeqCst);
        }
    }

    /// The number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.mpidrs.len()
    }

    /// Handles one exit of `vcpu`; `el1` gives the EL1 registers an injected exception writes,
    /// and `now` is the physical counter.
    pub fn handle_exit(
        &self,
        vcpu: &mut Vcpu,
        kind: ExitKind,
        syndrome: &TrapSyndrome,
        el1: &mut impl ExceptionRegisters,
        now: u64,
    ) -> Next {
        let pc = vcpu.regs.pc;
        let reason = ExitReason::decode(kind, syndrome);
        self.exits[reason.index()].fetch_add(1, Ordering::Relaxed);
        // Any exit but an interrupt ends a streak of identical faults, unless it is the same
        // fault again (`inject_fault` puts the streak back then).
        let streak = match reason {
            ExitReason::Interrupt => vcpu.fault_streak,
            _ => vcpu.fault_streak.take(),
        };
        let next = match reason {
            ExitReason::Hvc { .. } => self.smccc(vcpu, Conduit::Hvc, now),
            ExitReason::Smc { .. } => {
                // A trapped SMC leaves ELR_EL2 at the SMC itself.
                vcpu.regs.skip_instruction();
                self.smccc(vcpu, Conduit::Smc, now)
            }
            ExitReason::Wfx { wakes_itself } => {
                vcpu.regs.skip_instruction();
                if wakes_itself {
                    Next::Resume
                } else {
                    Next::Wait
                }
            }
            ExitReason::SysReg(access) => self.sysreg(vcpu, access, el1, now, streak),
            ExitReason::Mmio(access) => self.mmio(vcpu, access, syndrome.far, el1, now, streak),
            ExitReason::DataAbort { ipa, write, reason } => {
                let direction = if write { "write to" } else { "read of" };
                self.guest_log(
                    Level::Warn,
                    now,
                    format_args!(
                        "{direction} IPA {ipa:#x} at PC {pc:#x} cannot be emulated ({reason}): injecting synchronous external abort"
                    ),
                );
                let exception = GuestException::DataAbort {
                    far: syndrome.far,
                    write,
                };
                self.inject_fault(vcpu, el1, exception, streak)
            }
            ExitReason::InstructionAbort { ipa } => {
                self.guest_log(
                    Level::Warn,
                    now,
                    format_args!(
                        "instruction fetch from unmapped IPA {ipa:#x} at PC {pc:#x}: injecting instruction abort"
                    ),
                );
                let exception = GuestException::InstructionAbort { far: syndrome.far };
                self.inject_fault(vcpu, el1, exception, streak)
            }
            ExitReason::Interrupt => Next::Resume,
            ExitReason::SError => self.fault(
                vcpu.index,
                format!("system error while the guest ran at PC {pc:#x}"),
            ),
            ExitReason::Unhandled { ec } => self.fault(
                vcpu.index,
                format!(
                    "unhandled exception class {ec:#x} (ESR {:#x}) at PC {pc:#x}",
                    syndrome.esr
                ),
            ),
        };
        if next == Next::Resume && !self.is_on(vcpu.index) {
            // Another vCPU stopped or reset the instance meanwhile.
            return Next::Leave;
        }
        next
    }

    /// A trapped system-register access: an SGI, an ID or debug register, the physical counter
    /// and timer; anything else is undefined for the guest.
    fn sysreg(
        &self,
        vcpu: &mut Vcpu,
        access: SysRegAccess,
        el1: &mut impl ExceptionRegisters,
        now: u64,
        streak: Option<FaultStreak>,
    ) -> Next {
        if access.encoding == ICC_SGI1R_EL1 && !access.read {
            let value = vcpu.regs.get(access.reg);
            let targets = self.update(|shared| shared.vgic.send_sgi(vcpu.index, value));
            self.kick_all(targets, vcpu.index);
        } else if let Some(value) = self.id_registers.read(&access) {
            vcpu.regs.set(access.reg, value);
        } else if access.encoding.0 == DEBUG_OP0 {
            // The debug registers (trapped by MDCR_EL2.TDA/TDOSA/TDRA) read as zero and ignore
            // writes: guests get no breakpoints, watchpoints or debug state.
            if access.read {
                vcpu.regs.set(access.reg, 0);
            }
        } else if let Some(register) = TimerRegister::decode(access.encoding) {
            // The instance's own physical time: the board's counter less its offset, as its
            // virtual counter is (CNTVCT = CNTPCT - CNTVOFF).
            let guest_now = now.wrapping_sub(self.counter_offset());
            if access.read {
                vcpu.regs
                    .set(access.reg, vcpu.phys_timer.read(register, guest_now));
            } else {
                vcpu.phys_timer
                    .write(register, vcpu.regs.get(access.reg), guest_now);
                // Only a write can move the line (the deadline timer raises it when due).
                let level = vcpu.phys_timer.asserted(guest_now);
                self.update(|shared| shared.vgic.set_line(vcpu.index, PHYS_TIMER_INTID, level));
            }
        } else {
            return self.undefined_sysreg(vcpu, el1, access, now, streak);
        }
        vcpu.regs.skip_instruction();
        Next::Resume
    }

    /// Makes the guest take `exception`, unless that cannot help it: a vCPU whose exception
    /// vector faults again at the same PC, or that takes the same fault at the same PC over and
    /// over, is stopped with one line instead of looping.
    fn inject_fault(
        &self,
        vcpu: &mut Vcpu,
        el1: &mut impl ExceptionRegisters,
        exception: GuestException,
        streak: Option<FaultStreak>,
    ) -> Next {
        let pc = vcpu.regs.pc;
        let count = match streak {
            Some((last, last_pc, count)) if (last, last_pc) == (exception, pc) => count + 1,
            _ => 1,
        };
        vcpu.fault_streak = Some((exception, pc, count));
        inject(&mut vcpu.regs, el1, exception);
        if vcpu.regs.pc == pc && matches!(exception, GuestException::InstructionAbort { .. }) {
            return self.stop_vcpu(
                vcpu.index,
                format!(
                    "its exception vector at {pc:#x} is not mapped: the instruction abort there would repeat forever"
                ),
            );
        }
        if count >= FAULT_STREAK_LIMIT {
            return self.stop_vcpu(
                vcpu.index,
                format!(
                    "it took the same fault ({exception:?}) at PC {pc:#x} {count} times in a row"
                ),
            );
        }
        Next::Resume
    }

    /// Turns `vcpu` off for good because it cannot make progress (the instance stops if it was
    /// the last vCPU on).
    fn stop_vcpu(&self, vcpu: usize, why: String) -> Next {
        self.report_suppressed();
        warn!("{}: stopping vCPU {vcpu}: {why}", self.name);
        self.power_off(
            vcpu,
            StopReason::Fault(format!("vCPU {vcpu} was stopped: {why}")),
        );
        Next::Leave
    }

    /// Turns `vcpu` off; if it was the last one on, the instance stops for `last_reason`.
    fn power_off(&self, vcpu: usize, last_reason: StopReason) {
        let mut shared = self.shared.lock();
        shared.power[vcpu] = Power::Off;
        self.running.fetch_and(!(1 << vcpu), Ordering::AcqRel);
        if shared.power.iter().all(|power| *power == Power::Off) {
            self.stop(&mut shared, last_reason, vcpu);
        }
    }

    /// True if `ipa` is an address in the instance's RAM.
    fn in_ram(&self, ipa: u64) -> bool {
        (RAM_BASE..RAM_BASE + self.ram_size).contains(&ipa)
    }

    fn fault(&self, caller: usize, why: String) -> Next {
        self.report_suppressed();
        warn!("{}: stopping: {why}", self.name);
        self.stop(&mut self.shared.lock(), StopReason::Fault(why), caller);
        Next::Leave
    }

    fn undefined_sysreg(
        &self,
        vcpu: &mut Vcpu,
        el1: &mut impl ExceptionRegisters,
        access: SysRegAccess,
        now: u64,
        streak: Option<FaultStreak>,
    ) -> Next {
        let direction = if access.read { "read" } else { "write" };
        self.guest_log(
            Level::Warn,
            now,
            format_args!(
                "trapped {direction} of system register {access} at PC {:#x}: injecting undefined instruction",
                vcpu.regs.pc
            ),
        );
        self.inject_fault(vcpu, el1, GuestException::Undefined, streak)
    }

    fn mmio(
        &self,
        vcpu: &mut Vcpu,
        access: MmioAccess,
        far: u64,
        el1: &mut impl ExceptionRegisters,
        now: u64,
        streak: Option<FaultStreak>,
    ) -> Next {
        let register = vcpu.regs.get(access.reg);
        let outcome = {
            let mut shared = self.shared.lock();
            // The UART's console budget runs on the counter of the latest MMIO exit.
            shared.uart.set_clock(now, self.counter_hz);
            shared.access(&access, register, vcpu.index)
        };
        let Some((value, changes)) = outcome else {
            let in_ram = self.in_ram(access.ipa);
            let direction = if access.write { "write to" } else { "read of" };
            let what = if in_ram {
                "RAM IPA without a mapping"
            } else {
                "unmapped IPA"
            };
            self.guest_log(
                Level::Warn,
                now,
                format_args!(
                    "{direction} {what} {:#x} ({} bytes) at PC {:#x}: injecting synchronous external abort",
                    access.ipa, access.size, vcpu.regs.pc
                ),
            );
            let exception = GuestException::DataAbort {
                far,
                write: access.write,
            };
            return self.inject_fault(vcpu, el1, exception, streak);
        };
        self.record(changes);
        self.kick_all(changes.kicks, vcpu.index);
        if !access.write {
            vcpu.regs.set(access.reg, access.load_value(value));
        }
        vcpu.regs.skip_instruction();
        Next::Resume
    }

    /// The vCPU whose MPIDR is `mpidr`; `None` also for an MPIDR with bits set outside the
    /// affinity fields, which PSCI calls INVALID_PARAMETERS.
    fn vcpu_with_affinity(&self, mpidr: u64) -> Option<usize> {
        if mpidr & !MPIDR_AFFINITY_MASK != 0 {
            return None;
        }
        self.mpidrs
            .iter()
            .position(|m| m & MPIDR_AFFINITY_MASK == mpidr & MPIDR_AFFINITY_MASK)
    }

    fn smccc(&self, vcpu: &mut Vcpu, conduit: Conduit, now: u64) -> Next {
        let x = &vcpu.regs.x;
        let call = psci::decode([x[0], x[1], x[2], x[3]]);
        self.guest_log(
            Level::Debug,
            now,
            format_args!("vCPU {}: {conduit:?} {call:x?}", vcpu.index),
        );
        let result = match call {
            // The firmware-interface queries, answered as the fast path answers them.
            SmcccCall::PsciVersion
            | SmcccCall::PsciFeatures(_)
            | SmcccCall::SmcccVersion
            | SmcccCall::ArchFeatures(_)
            | SmcccCall::MigrateInfoType => {
                psci::query_answer(call).unwrap_or(status::NOT_SUPPORTED)
            }
            SmcccCall::CpuOn {
                target,
                entry,
                context_id,
            } => self.cpu_on(target, entry, context_id),
            SmcccCall::AffinityInfo { target, level: 0 } => match self.vcpu_with_affinity(target) {
                Some(n) => match self.shared.lock().power[n] {
                    Power::On => 0,
                    Power::Off => 1,
                    Power::Starting { .. } => 2,
                },
                None => status::INVALID_PARAMETERS,
            },
            SmcccCall::AffinityInfo { .. } => status::INVALID_PARAMETERS,
            SmcccCall::CpuSuspend {
                power_state,
                entry,
                context_id,
            } => {
                if power_state & psci::POWER_STATE_POWERDOWN == 0 {
                    // Standby: a WFI that returns SUCCESS once an interrupt is pending.
                    vcpu.regs.x[0] = status::SUCCESS as u64;
                    return Next::Wait;
                }
                if !self.in_ram(entry) {
                    status::INVALID_ADDRESS
                } else {
                    return Next::PowerDown { entry, context_id };
                }
            }
            SmcccCall::CpuOff => {
                self.power_off(vcpu.index, StopReason::AllCpusOff);
                return Next::Leave;
            }
            SmcccCall::SystemOff => {
                self.stop(&mut self.shared.lock(), StopReason::SystemOff, vcpu.index);
                return Next::Leave;
            }
            SmcccCall::SystemReset => {
                let mut shared = self.shared.lock();
                shared.power.fill(Power::Off);
                shared.resetting = Some(vcpu.index);
                drop(shared);
                self.running.store(0, Ordering::Release);
                self.kick_others(vcpu.index);
                return Next::Reset;
            }
            SmcccCall::MigrationNotices { intid } => self.register_notices(intid),
            SmcccCall::Checkpoint => self.checkpoint_call(now),
            SmcccCall::MigrationStatus => {
                let notices = {
                    let mut shared = self.shared.lock();
                    shared.notices.read = true;
                    shared.notices
                };
                vcpu.regs.x[1] = notices.paused_ticks;
                vcpu.regs.x[2] = notices.count;
                notices.last as i64
            }
            SmcccCall::Unknown(function) => {
                self.guest_log(
                    Level::Warn,
                    now,
                    format_args!(
                        "unknown {conduit:?} call {function:#010x} at PC {:#x}: returning NOT_SUPPORTED",
                        vcpu.regs.pc
                    ),
                );
                status::NOT_SUPPORTED
            }
        };
        vcpu.regs.x[0] = result as u64;
        Next::Resume
    }

    /// HV_CHECKPOINT: asks the board, logs the outcome within the budget. Out of line: the
    /// hypercall path stays small for the calls that are frequent.
    #[cold]
    #[inline(never)]
    fn checkpoint_call(&self, now: u64) -> i64 {
        match (self.checkpoint)(self.slot) {
            Ok(()) => {
                self.guest_log(Level::Info, now, format_args!("asks for its checkpoint"));
                status::SUCCESS
            }
            Err((refusal, why)) => {
                self.guest_log(
                    Level::Warn,
                    now,
                    format_args!("asks for its checkpoint: {why}"),
                );
                refusal
            }
        }
    }

    /// HV_MIGRATION_NOTICES: a free PPI (16..=23) or one of the instance's SPIs other than its
    /// UART's; 0 unregisters.
    fn register_notices(&self, intid: u64) -> i64 {
        let usable = matches!(intid, 16..=23)
            || (32..32 + u64::from(VGIC_SPIS)).contains(&intid) && intid != u64::from(UART_INTID);
        if intid != 0 && !usable {
            return status::INVALID_PARAMETERS;
        }
        self.shared.lock().notices.intid = (intid != 0).then_some(intid as u32);
        status::SUCCESS
    }

    /// Sends migration notice `notice` (with `paused_ticks` for [`Notice::Resumed`]) to the
    /// guest, if it registered for them; true if it did.
    pub fn notify_migration(&self, notice: Notice, paused_ticks: u64) -> bool {
        let intid = self.update(|shared| {
            let intid = shared.notices.intid?;
            shared.notices.last = notice;
            shared.notices.paused_ticks = paused_ticks;
            shared.notices.count += 1;
            shared.notices.read = false;
            shared.vgic.pulse(0, intid);
            Some(intid)
        });
        if intid.is_some() {
            self.interrupts_raised.fetch_add(1, Ordering::Relaxed);
            self.kick_vcpu(0);
        }
        intid.is_some()
    }

    /// True once the guest has read the last migration notice (or never registered for them).
    pub fn migration_notice_read(&self) -> bool {
        let notices = self.shared.lock().notices;
        notices.intid.is_none() || notices.read
    }

    /// The paravirtual channel's state, for a checkpoint.
    pub fn save_paravirt(&self, paused_ticks: u64) -> checkpoint::ParavirtState {
        let notices = self.shared.lock().notices;
        checkpoint::ParavirtState {
            notice_intid: notices.intid,
            paused_ticks,
            notices_raised: notices.count,
        }
    }

    /// Takes on the paravirtual channel of an instance saved on another board.
    pub fn restore_paravirt(&self, saved: &checkpoint::ParavirtState) {
        let mut shared = self.shared.lock();
        shared.notices.intid = saved.notice_intid;
        shared.notices.count = saved.notices_raised;
    }

    fn cpu_on(&self, target: u64, entry: u64, context_id: u64) -> i64 {
        let Some(n) = self.vcpu_with_affinity(target) else {
            return status::INVALID_PARAMETERS;
        };
        if !self.in_ram(entry) {
            return status::INVALID_ADDRESS;
        }
        let mut shared = self.shared.lock();
        match shared.power[n] {
            Power::On => status::ALREADY_ON,
            Power::Starting { .. } => status::ON_PENDING,
            Power::Off => {
                shared.power[n] = Power::Starting { entry, context_id };
                drop(shared);
                self.kick_vcpu(n);
                status::SUCCESS
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU64, Ordering};
    use devicetree::guest::{GICD_BASE, GICD_SIZE, GICR_BASE, GICR_STRIDE, UART_SIZE};

    const ENTRY: u64 = 0x4020_0000;
    /// The counter at every test exit.
    const NOW: u64 = 1_000_000;
    /// The counter's frequency in the tests.
    const HZ: u64 = 1_000_000_000;
    const DTB: u64 = 0x43e0_0000;
    const NOT_SUPPORTED: u64 = u64::MAX;
    const HVC: u64 = 0x5a00_0000;
    const SMC: u64 = 0x5e00_0000;

    fn discard(_: &str, _: &str, _: bool) {}

    std::thread_local! {
        static KICKED: AtomicU64 = const { AtomicU64::new(0) };
    }

    fn record_kick(_slot: usize, vcpu: usize) {
        KICKED.with(|kicked| kicked.fetch_or(1 << vcpu, Ordering::Relaxed));
    }

    std::thread_local! {
        static KICKED_CPUS: AtomicU64 = const { AtomicU64::new(0) };
    }

    fn record_kick_loaded(cpu: usize) {
        KICKED_CPUS.with(|kicked| kicked.fetch_or(1 << cpu, Ordering::Relaxed));
    }

    fn take_kicks() -> u64 {
        KICKED.with(|kicked| kicked.swap(0, Ordering::Relaxed))
    }

    /// An instance with `n` vCPUs whose vCPU 0 has started.
    fn instance(n: u64) -> (Instance, Vcpu) {
        instance_with(n, |_| Ok(()), Shape::V3)
    }

    /// [`instance`] on a board whose HV_CHECKPOINT answers as `checkpoint` does and whose
    /// guests see a GIC of `gic`'s shape.
    fn instance_with(n: u64, checkpoint: Checkpoint, gic: Shape) -> (Instance, Vcpu) {
        let affinities: Vec<u64> = (0..n).collect();
        let board = BoardServices {
            console: discard,
            kick: record_kick,
            kick_loaded: record_kick_loaded,
            checkpoint,
            counter_hz: HZ,
            id_registers: GuestIdRegisters::from_hardware(|crm, op2| u64::from(crm) << op2),
            gic,
        };
        let guest = Instance::new("t", 0, 64 << 20, &affinities, board);
        guest.boot(ENTRY, DTB);
        let mut vcpu = guest.vcpus().remove(0);
        let VcpuStatus::Start { entry, context_id } = guest.poll(0) else {
            panic!("vCPU 0 starts")
        };
        vcpu.power_on(entry, context_id);
        take_kicks();
        (guest, vcpu)
    }

    fn exit(guest: &Instance, vcpu: &mut Vcpu, syndrome: TrapSyndrome) -> (Next, El1SysRegs) {
        let mut el1 = El1SysRegs {
            vbar_el1: 0x4000_8000,
            ..El1SysRegs::at_reset()
        };
        let next = guest.handle_exit(vcpu, ExitKind::Synchronous, &syndrome, &mut el1, NOW);
        (next, el1)
    }

    fn call(guest: &Instance, vcpu: &mut Vcpu, esr: u64, x: [u64; 4]) -> Next {
        vcpu.regs.x[..4].copy_from_slice(&x);
        exit(
            guest,
            vcpu,
            TrapSyndrome {
                esr,
                far: 0,
                hpfar: 0,
            },
        )
        .0
    }

    #[test]
    fn hv_checkpoint_asks_the_board_and_passes_its_refusal_on() {
        let (guest, mut vcpu) = instance(1);
        call(&guest, &mut vcpu, HVC, [0xC600_0012, 0, 0, 0]);
        assert_eq!(vcpu.regs.x[0], 0);
        let (guest, mut vcpu) = instance_with(
            1,
            |_| Err((status::DENIED, "a move is on".into())),
            Shape::V3,
        );
        call(&guest, &mut vcpu, HVC, [0xC600_0012, 0, 0, 0]);
        assert_eq!(vcpu.regs.x[0] as i64, status::DENIED);
    }

    #[test]
    fn psci_over_hvc_and_smc() {
        let (guest, mut vcpu) = instance(1);
        assert_eq!(vcpu.regs.x[0], DTB);
        assert_eq!(
            call(&guest, &mut vcpu, HVC, [0x8400_0000, 0, 0, 0]),
            Next::Resume
        );
        assert_eq!(vcpu.regs.x[0], 0x1_0001);
        assert_eq!(
            vcpu.regs.pc, ENTRY,
            "HVC's return address is already past it"
        );
        assert_eq!(
            call(&guest, &mut vcpu, SMC, [0x8400_0006, 0, 0, 0]),
            Next::Resume
        );
        assert_eq!(vcpu.regs.x[0], 2);
        assert_eq!(vcpu.regs.pc, ENTRY + 4, "a trapped SMC is stepped over");
        assert_eq!(
            call(&guest, &mut vcpu, HVC, [0x8400_000A, 0x8400_0008, 0, 0]),
            Next::Resume
        );
        assert_eq!(vcpu.regs.x[0], 0);
        assert_eq!(
            call(&guest, &mut vcpu, HVC, [0x8400_0008, 0, 0, 0]),
            Next::Leave
        );
        assert_eq!(guest.poll(0), VcpuStatus::Ended(StopReason::SystemOff));
    }

    #[test]
    fn cpu_on_starts_a_secondary_and_kicks_it() {
        let (guest, mut vcpu) = instance(4);
        assert_eq!(guest.poll(2), VcpuStatus::Off);
        call(&guest, &mut vcpu, HVC, [0xC400_0003, 2, 0x4020_1000, 0x77]);
        assert_eq!(vcpu.regs.x[0], 0);
        assert_eq!(take_kicks(), 1 << 2);
        call(&guest, &mut vcpu, HVC, [0xC400_0004, 2, 0, 0]);
        assert_eq!(vcpu.regs.x[0], 2, "ON_PENDING until the vCPU runs");
        call(&guest, &mut vcpu, HVC, [0xC400_0003, 2, 0x4020_1000, 0x77]);
        assert_eq!(vcpu.regs.x[0] as i64, status::ON_PENDING);
        assert_eq!(
            guest.poll(2),
            VcpuStatus::Start {
                entry: 0x4020_1000,
                context_id: 0x77
            }
        );
        call(&guest, &mut vcpu, HVC, [0xC400_0004, 2, 0, 0]);
        assert_eq!(vcpu.regs.x[0], 0, "ON");
        call(&guest, &mut vcpu, HVC, [0xC400_0003, 2, 0x4020_1000, 0x77]);
        assert_eq!(vcpu.regs.x[0] as i64, status::ALREADY_ON);
        call(&guest, &mut vcpu, HVC, [0xC400_0003, 9, 0x4020_1000, 0]);
        assert_eq!(vcpu.regs.x[0] as i64, status::INVALID_PARAMETERS);
        call(&guest, &mut vcpu, HVC, [0xC400_0004, 3, 0, 0]);
        assert_eq!(vcpu.regs.x[0], 1, "OFF");
    }

    #[test]
    fn last_cpu_off_stops_the_instance() {
        let (guest, mut vcpu) = instance(2);
        call(&guest, &mut vcpu, HVC, [0xC400_0003, 1, ENTRY, 0]);
        let VcpuStatus::Start { entry, context_id } = guest.poll(1) else {
            panic!("vCPU 1 starts")
        };
        let mut second = guest.vcpus().remove(1);
        second.power_on(entry, context_id);
        assert_eq!(
            call(&guest, &mut vcpu, HVC, [0x8400_0002, 0, 0, 0]),
            Next::Leave
        );
        assert_eq!(guest.poll(0), VcpuStatus::Off, "vCPU 0 is off ...");
        assert_eq!(guest.poll(1), VcpuStatus::Continue, "... vCPU 1 runs on");
        assert_eq!(
            call(&guest, &mut second, HVC, [0x8400_0002, 0, 0, 0]),
            Next::Leave
        );
        assert_eq!(guest.poll(0), VcpuStatus::Ended(StopReason::AllCpusOff));
    }

    #[test]
    fn system_off_and_reset_make_the_others_leave() {
        let (guest, mut vcpu) = instance(3);
        call(&guest, &mut vcpu, HVC, [0xC400_0003, 1, ENTRY, 0]);
        assert!(matches!(guest.poll(1), VcpuStatus::Start { .. }));
        take_kicks();
        assert_eq!(
            call(&guest, &mut vcpu, HVC, [0x8400_0009, 0, 0, 0]),
            Next::Reset
        );
        assert_eq!(take_kicks(), 0b110);
        assert!(!guest.others_out(0), "vCPU 1 has not left yet");
        guest.left(1);
        assert!(guest.others_out(0));
        guest.boot(ENTRY, DTB);
        assert!(matches!(guest.poll(0), VcpuStatus::Start { .. }));
        assert_eq!(
            call(&guest, &mut vcpu, HVC, [0x8400_0008, 0, 0, 0]),
            Next::Leave
        );
        assert_eq!(guest.poll(1), VcpuStatus::Ended(StopReason::SystemOff));
    }

    #[test]
    fn unknown_calls_return_not_supported() {
        let (guest, mut vcpu) = instance(1);
        assert_eq!(
            call(&guest, &mut vcpu, HVC, [0x8600_1234, 0, 0, 0]),
            Next::Resume
        );
        assert_eq!(vcpu.regs.x[0], NOT_SUPPORTED);
        assert_eq!(
            call(&guest, &mut vcpu, SMC, [0xC300_0001, 0, 0, 0]),
            Next::Resume
        );
        assert_eq!(vcpu.regs.x[0], NOT_SUPPORTED);
    }

    /// A data abort on `ipa` by `ldr w<reg>` / `str w<reg>` (4 bytes).
    fn data_abort(ipa: u64, reg: u64, write: bool) -> TrapSyndrome {
        let iss = (1 << 24) | (2 << 22) | (reg << 16) | (u64::from(write) << 6) | 0x07;
        TrapSyndrome {
            esr: (0x24 << 26) | (1 << 25) | iss,
            far: ipa,
            hpfar: (ipa >> 12) << 4,
        }
    }

    #[test]
    fn uart_and_gic_registers_are_emulated() {
        let (guest, mut vcpu) = instance(2);
        assert_eq!(
            exit(&guest, &mut vcpu, data_abort(UART_BASE + 0xff0, 3, false)).0,
            Next::Resume
        );
        assert_eq!(vcpu.regs.x[3], 0x0d);
        assert_eq!(vcpu.regs.pc, ENTRY + 4);
        exit(&guest, &mut vcpu, data_abort(GICD_BASE + 0xffe8, 4, false));
        assert_eq!((vcpu.regs.x[4] >> 4) & 0xf, 3, "GICD_PIDR2 says GICv3");
        exit(
            &guest,
            &mut vcpu,
            data_abort(GICR_BASE + GICR_STRIDE + 0x8, 5, false),
        );
        assert_eq!(
            (vcpu.regs.x[5] >> 8) & 0xffff,
            1,
            "second redistributor belongs to vCPU 1"
        );
    }

    #[test]
    fn every_region_routes_its_first_and_last_byte_and_nothing_around_it() {
        let (guest, _) = instance(3);
        let mut shared = guest.shared.lock();
        // The regions the guest's device tree describes.
        let table = [
            (Device::Distributor, GICD_BASE, GICD_SIZE),
            (Device::Redistributors, GICR_BASE, 3 * GICR_STRIDE),
            (Device::Uart, UART_BASE, UART_SIZE),
        ];
        for (device, base, size) in table {
            assert_eq!(shared.route(base), Some((device, 0)), "{device:?}");
            assert_eq!(
                shared.route(base + size - 1),
                Some((device, size - 1)),
                "{device:?}"
            );
            assert_eq!(shared.route(base - 1), None, "before {device:?}");
            assert_eq!(shared.route(base + size), None, "after {device:?}");
        }
        assert_eq!(shared.route(0), None);
        assert_eq!(shared.route(u64::MAX), None);
    }

    #[test]
    fn the_redistributor_follows_from_the_address() {
        let (guest, mut vcpu) = instance(3);
        for target in 0..3 {
            // GICR_TYPER, the low word: Processor_Number [23:8], Last [4].
            let typer = GICR_BASE + target * GICR_STRIDE + 0x8;
            exit(&guest, &mut vcpu, data_abort(typer, 5, false));
            assert_eq!((vcpu.regs.x[5] >> 8) & 0xffff, target);
            assert_eq!(vcpu.regs.x[5] & (1 << 4) != 0, target == 2, "Last");
        }
        assert_eq!(
            guest
                .shared
                .lock()
                .route(GICR_BASE + 2 * GICR_STRIDE + 0x1_0100),
            Some((Device::Redistributors, 2 * GICR_STRIDE + 0x1_0100))
        );
        // Just past the last redistributor: nothing there.
        let (_, el1) = exit(
            &guest,
            &mut vcpu,
            data_abort(GICR_BASE + 3 * GICR_STRIDE + 0x8, 5, false),
        );
        assert_eq!(el1.esr_el1 >> 26, 0x25, "a data abort is injected");
    }

    #[test]
    fn only_accesses_that_change_interrupt_state_move_the_epoch() {
        let (guest, mut vcpu) = instance(1);
        let epoch = guest.interrupt_epoch();
        exit(&guest, &mut vcpu, data_abort(GICD_BASE + 0x4, 1, false)); // GICD_TYPER
        exit(&guest, &mut vcpu, data_abort(UART_BASE + 0x18, 1, false)); // UARTFR
        assert_eq!(guest.interrupt_epoch(), epoch, "reads without side effects");
        vcpu.regs.x[1] = 1 << 5;
        exit(&guest, &mut vcpu, data_abort(UART_BASE + 0x38, 1, true)); // UARTIMSC.TXIM
        assert_eq!(guest.interrupt_epoch(), epoch + 1, "the UART line rose");
        exit(&guest, &mut vcpu, data_abort(UART_BASE + 0x38, 1, true));
        assert_eq!(guest.interrupt_epoch(), epoch + 1, "the line stays up");
        exit(&guest, &mut vcpu, data_abort(GICR_BASE + 0x14, 1, true)); // GICR_WAKER
        assert_eq!(
            guest.interrupt_epoch(),
            epoch + 2,
            "a vGIC register written"
        );
        let spi = guest.shared.lock().vgic.irq(0, UART_INTID).cloned();
        assert!(
            spi.is_some_and(|irq| irq.line),
            "the vGIC sees the UART line"
        );
    }

    #[test]
    fn a_new_interrupt_for_a_loaded_vcpu_goes_to_its_cpu_without_the_scheduler() {
        let (guest, mut vcpu) = instance(2);
        // SGIs are Group 1 in vCPU 1's redistributor.
        vcpu.regs.x[2] = u64::from(u32::MAX);
        exit(
            &guest,
            &mut vcpu,
            data_abort(GICR_BASE + GICR_STRIDE + 0x1_0080, 2, true),
        );
        let kicked_cpus = || KICKED_CPUS.with(|kicked| kicked.swap(0, Ordering::Relaxed));
        take_kicks();
        // vCPU 0 sends SGI `n` to vCPU 1 (target list bit 1).
        let mut send = |n: u64| {
            vcpu.regs.x[3] = n << 24 | 0b10;
            exit(&guest, &mut vcpu, sysreg((3, 0, 12, 11, 5), 3, false));
        };
        send(1);
        assert_eq!(
            (take_kicks(), kicked_cpus()),
            (0b10, 0),
            "not loaded: the scheduler's kick"
        );
        guest.vcpu_loaded(1, Some(3));
        send(2);
        assert_eq!(
            (take_kicks(), kicked_cpus()),
            (0, 1 << 3),
            "loaded on CPU 3: that CPU"
        );
        guest.vcpu_loaded(1, None);
        send(3);
        assert_eq!((take_kicks(), kicked_cpus()), (0b10, 0), "taken off again");
    }

    #[test]
    fn a_uart_interrupt_raised_by_one_vcpu_kicks_the_vcpu_it_is_routed_to() {
        let (guest, mut vcpu) = instance(2);
        let (word, bit) = (u64::from(UART_INTID / 32), UART_INTID % 32);
        let mut write = |ipa: u64, size: u8, value: u64| {
            vcpu.regs.x[2] = value;
            let sas = u64::from(size.trailing_zeros());
            let mut syndrome = data_abort(ipa, 2, true);
            syndrome.esr = syndrome.esr & !(0b11 << 22) | sas << 22 | u64::from(size == 8) << 15;
            exit(&guest, &mut vcpu, syndrome);
        };
        // Group 1 on, the UART's SPI Group 1, enabled and routed to vCPU 1.
        write(GICD_BASE, 4, 0x2);
        write(GICD_BASE + 0x80 + 4 * word, 4, 1 << bit);
        write(GICD_BASE + 0x100 + 4 * word, 4, 1 << bit);
        write(GICD_BASE + 0x6000 + 8 * u64::from(UART_INTID), 8, 1);
        take_kicks();
        // vCPU 0 unmasks the UART's transmit interrupt: the line rises.
        write(UART_BASE + 0x38, 4, 1 << 5);
        assert_eq!(take_kicks(), 1 << 1, "vCPU 1, wherever it waits, is woken");
        assert!(guest.has_pending(1));
    }

    #[test]
    fn unmapped_accesses_get_an_external_abort() {
        let (guest, mut vcpu) = instance(1);
        let (next, el1) = exit(&guest, &mut vcpu, data_abort(0x3000_0008, 1, true));
        assert_eq!(next, Next::Resume);
        assert_eq!(el1.esr_el1, (0x25 << 26) | (1 << 25) | (1 << 6) | 0x10);
        assert_eq!(el1.far_el1, 0x3000_0008);
        assert_eq!(el1.elr_el1, ENTRY);
        assert_eq!(vcpu.regs.pc, 0x4000_8200);
    }

    fn sysreg(encoding: (u64, u64, u64, u64, u64), reg: u64, read: bool) -> TrapSyndrome {
        let (op0, op1, crn, crm, op2) = encoding;
        let iss = (op0 << 20)
            | (op2 << 17)
            | (op1 << 14)
            | (crn << 10)
            | (reg << 5)
            | (crm << 1)
            | u64::from(read);
        TrapSyndrome {
            esr: (0x18 << 26) | (1 << 25) | iss,
            far: 0,
            hpfar: 0,
        }
    }

    #[test]
    fn trapped_sysreg_is_undefined() {
        let (guest, mut vcpu) = instance(1);
        let (next, el1) = exit(&guest, &mut vcpu, sysreg((3, 0, 15, 0, 0), 0, true));
        assert_eq!(next, Next::Resume);
        assert_eq!(el1.esr_el1 >> 26, 0);
        assert_eq!(vcpu.regs.pc, 0x4000_8200);
    }

    #[test]
    fn sgi_writes_kick_their_targets() {
        let (guest, mut vcpu) = instance(4);
        // SGI 3 to Aff0 targets 0 (the sender), 1 and 2: the sender is not kicked, it sees its
        // own SGI when it re-enters.
        vcpu.regs.x[7] = (3 << 24) | 0b111;
        assert_eq!(
            exit(&guest, &mut vcpu, sysreg((3, 0, 12, 11, 5), 7, false)).0,
            Next::Resume
        );
        assert_eq!(take_kicks(), 0b110);
        assert_eq!(vcpu.regs.pc, ENTRY + 4);
        assert!(guest.has_pending(1) || guest.poll(1) == VcpuStatus::Off);
    }

    #[test]
    fn a_redistributor_write_that_raises_another_vcpus_interrupt_kicks_it() {
        let (guest, mut vcpu) = instance(4);
        let mut write = |ipa: u64, value: u64| {
            vcpu.regs.x[7] = value;
            exit(&guest, &mut vcpu, data_abort(ipa, 7, true));
        };
        let sgi_frame = GICR_BASE + 2 * GICR_STRIDE + 0x1_0000;
        write(GICD_BASE, 0x2); // GICD_CTLR.EnableGrp1
        write(sgi_frame + 0x080, 1 << 20); // vCPU 2's IGROUPR0: PPI 20 in Group 1
        write(sgi_frame + 0x100, 1 << 20); // ISENABLER0
        take_kicks();
        write(sgi_frame + 0x200, 1 << 20); // ISPENDR0, written by vCPU 0
        assert_eq!(take_kicks(), 1 << 2);
    }

    #[test]
    fn gicv2_sgir_writes_kick_their_targets() {
        let (guest, mut vcpu) = instance_with(4, |_| Ok(()), Shape::V2);
        // GICD_CTLR = 1 (Group 0, where a GICv2 guest's interrupts are).
        vcpu.regs.x[7] = 1;
        exit(&guest, &mut vcpu, data_abort(GICD_BASE, 7, true));
        // GICD_SGIR: SGI 3 to CPU interfaces 1 and 2.
        vcpu.regs.x[7] = (0b110 << 16) | 3;
        assert_eq!(
            exit(&guest, &mut vcpu, data_abort(GICD_BASE + 0xf00, 7, true)).0,
            Next::Resume
        );
        assert_eq!(take_kicks(), 0b110);
        // No redistributors: their frames are unmapped IPA for a GICv2 guest.
        let (_, el1) = exit(&guest, &mut vcpu, data_abort(GICR_BASE + 0x8, 5, false));
        assert_eq!(el1.esr_el1 >> 26, 0x25, "data abort injected");
    }

    #[test]
    fn wfi_waits_and_a_timer_makes_its_interrupt_pending() {
        let (guest, mut vcpu) = instance(1);
        let wfi = TrapSyndrome {
            esr: (0x01 << 26) | (1 << 25),
            far: 0,
            hpfar: 0,
        };
        assert_eq!(exit(&guest, &mut vcpu, wfi).0, Next::Wait);
        assert_eq!(vcpu.regs.pc, ENTRY + 4);
        // Enable the virtual timer PPI in vCPU 0's redistributor, then let it fire.
        vcpu.regs.x[2] = u64::from(u32::MAX);
        exit(&guest, &mut vcpu, data_abort(GICR_BASE + 0x1_0080, 2, true));
        vcpu.regs.x[2] = 1 << 27;
        exit(&guest, &mut vcpu, data_abort(GICR_BASE + 0x1_0100, 2, true));
        vcpu.regs.x[2] = 0x2;
        exit(&guest, &mut vcpu, data_abort(GICD_BASE, 2, true));
        assert_eq!(
            guest.timer_fired(0, 27, 27, None),
            TimerRaise::Pending,
            "pending and forwardable"
        );
        assert!(guest.has_pending(0));
        // WFI still waits: the run loop's refill finds the interrupt and resumes at once.
        let pc = vcpu.regs.pc;
        assert_eq!(exit(&guest, &mut vcpu, wfi).0, Next::Wait);
        assert_eq!(vcpu.regs.pc, pc + 4);
        // The guest takes it; with the list registers as filled, the next one goes straight
        // into a free one and nothing else has to be refilled.
        let mut lrs = [0; 4];
        guest.flush_interrupts(0, &mut lrs);
        lrs[0] = 0;
        guest.sync_interrupts(0, &lrs);
        guest.flush_interrupts(0, &mut lrs);
        assert_eq!(lrs, [0; 4], "taken");
        let epoch = guest.interrupt_epoch();
        let TimerRaise::InLr { slot: 0, value } = guest.timer_fired(0, 27, 27, Some(&lrs)) else {
            panic!("not into the free LR 0");
        };
        assert_eq!(value as u32, 27, "vINTID 27");
        assert_eq!(guest.interrupt_epoch(), epoch, "no refill for anyone");
        assert!(guest.has_pending(0));
    }

    #[test]
    fn console_input_raises_the_uart_interrupt() {
        let (guest, mut vcpu) = instance(2);
        let mut write = |ipa: u64, value: u64| {
            vcpu.regs.x[2] = value;
            exit(&guest, &mut vcpu, data_abort(ipa, 2, true));
        };
        write(GICD_BASE + 0x100 + 4, 1 << (UART_INTID - 32)); // GICD_ISENABLER1
        write(GICD_BASE + 0x6100 + 8 * u64::from(UART_INTID), 0); // GICD_IROUTER: vCPU 0
        write(GICD_BASE, 0x2); // GICD_CTLR.EnableGrp1
        write(UART_BASE + 0x38, 1 << 4); // UARTIMSC.RXIM
        assert!(!guest.has_pending(0));
        guest.console_input(b"ls");
        assert!(guest.has_pending(0));
        exit(&guest, &mut vcpu, data_abort(UART_BASE, 4, false));
        assert_eq!(vcpu.regs.x[4], u64::from(b'l'));
        exit(&guest, &mut vcpu, data_abort(UART_BASE, 4, false));
        assert_eq!(vcpu.regs.x[4], u64::from(b's'));
        assert!(
            !guest.has_pending(0),
            "the line drops once the FIFO is empty"
        );
    }

    #[test]
    fn physical_timer_is_emulated() {
        let (guest, mut vcpu) = instance(1);
        vcpu.regs.x[3] = u64::from(u32::MAX);
        exit(&guest, &mut vcpu, data_abort(GICR_BASE + 0x1_0080, 3, true)); // IGROUPR0
        vcpu.regs.x[3] = 1 << PHYS_TIMER_INTID;
        exit(&guest, &mut vcpu, data_abort(GICR_BASE + 0x1_0100, 3, true)); // ISENABLER0
        vcpu.regs.x[3] = 0x2;
        exit(&guest, &mut vcpu, data_abort(GICD_BASE, 3, true)); // GICD_CTLR
        vcpu.regs.x[5] = NOW + 500;
        exit(&guest, &mut vcpu, sysreg((3, 3, 14, 2, 2), 5, false)); // CNTP_CVAL_EL0
        vcpu.regs.x[5] = 1;
        exit(&guest, &mut vcpu, sysreg((3, 3, 14, 2, 1), 5, false)); // CNTP_CTL_EL0 = ENABLE
        assert_eq!(vcpu.phys_timer.deadline(), Some(NOW + 500));
        assert!(!guest.has_pending(0), "not yet due");
        exit(&guest, &mut vcpu, sysreg((3, 3, 14, 2, 0), 6, true)); // CNTP_TVAL_EL0
        assert_eq!(vcpu.regs.x[6], 500);
        assert_eq!(guest.phys_timer_fired(0, None), TimerRaise::Pending);
        assert!(guest.has_pending(0));
        vcpu.regs.x[5] = 0;
        exit(&guest, &mut vcpu, sysreg((3, 3, 14, 2, 1), 5, false)); // disable
        assert!(
            !guest.has_pending(0),
            "the level drops with the timer disabled"
        );
    }

    #[test]
    fn unhandled_classes_stop_the_instance() {
        let (guest, mut vcpu) = instance(2);
        assert_eq!(call(&guest, &mut vcpu, 0x0e00_0000, [0; 4]), Next::Leave);
        assert!(
            matches!(guest.poll(1), VcpuStatus::Ended(StopReason::Fault(why)) if why.contains("0x3"))
        );
    }

    #[test]
    fn psci_refuses_entries_outside_ram_and_reserved_mpidr_bits() {
        let (guest, mut vcpu) = instance(2);
        call(&guest, &mut vcpu, HVC, [0xC400_0003, 1, 0, 0]);
        assert_eq!(vcpu.regs.x[0] as i64, status::INVALID_ADDRESS);
        call(
            &guest,
            &mut vcpu,
            HVC,
            [0xC400_0003, 1, 0x4000_0000 + (64 << 20), 0],
        );
        assert_eq!(
            vcpu.regs.x[0] as i64,
            status::INVALID_ADDRESS,
            "just past RAM"
        );
        assert_eq!(take_kicks(), 0, "nothing was started");
        call(
            &guest,
            &mut vcpu,
            HVC,
            [0xC400_0003, (1 << 40) | 1, ENTRY, 0],
        );
        assert_eq!(vcpu.regs.x[0] as i64, status::INVALID_PARAMETERS);
        call(&guest, &mut vcpu, HVC, [0xC400_0004, (1 << 31) | 1, 0, 0]);
        assert_eq!(vcpu.regs.x[0] as i64, status::INVALID_PARAMETERS);
        call(&guest, &mut vcpu, HVC, [0xC400_0001, 1 << 16, 0x10, 0]);
        assert_eq!(vcpu.regs.x[0] as i64, status::INVALID_ADDRESS);
        assert_eq!(guest.poll(1), VcpuStatus::Off);
    }

    #[test]
    fn cpu_suspend_standby_waits_and_power_down_restarts_at_the_entry() {
        let (guest, mut vcpu) = instance(1);
        assert_eq!(
            call(&guest, &mut vcpu, HVC, [0xC400_0001, 0, 0, 0]),
            Next::Wait
        );
        assert_eq!(vcpu.regs.x[0], 0, "standby returns SUCCESS once woken");
        assert_eq!(
            call(
                &guest,
                &mut vcpu,
                HVC,
                [0xC400_0001, 1 << 16, ENTRY + 0x40, 0x99]
            ),
            Next::PowerDown {
                entry: ENTRY + 0x40,
                context_id: 0x99
            }
        );
        vcpu.el1.sctlr_el1 = 0x1;
        vcpu.resume_from_power_down(ENTRY + 0x40, 0x99);
        assert_eq!((vcpu.regs.pc, vcpu.regs.x[0]), (ENTRY + 0x40, 0x99));
        assert_eq!(vcpu.el1, El1SysRegs::at_reset(), "EL1 state is lost");
    }

    #[test]
    fn a_vcpu_leaving_wakes_the_one_that_resets() {
        let (guest, mut vcpu) = instance(3);
        call(&guest, &mut vcpu, HVC, [0xC400_0003, 2, ENTRY, 0]);
        assert!(matches!(guest.poll(2), VcpuStatus::Start { .. }));
        take_kicks();
        assert_eq!(
            call(&guest, &mut vcpu, HVC, [0x8400_0009, 0, 0, 0]),
            Next::Reset
        );
        take_kicks();
        guest.left(2);
        assert_eq!(take_kicks(), 1 << 0, "vCPU 0 waits for vCPU 2 to leave");
        assert!(guest.others_out(0));
        guest.left(0);
        assert_eq!(take_kicks(), 0, "the resetting vCPU does not kick itself");
    }

    #[test]
    fn a_vector_that_faults_at_itself_stops_the_vcpu_once() {
        let (guest, mut vcpu) = instance(1);
        let vector = 0x1000_0000;
        let fetch = |pc: u64| TrapSyndrome {
            esr: (0x20 << 26) | (1 << 25) | 0x07,
            far: pc,
            hpfar: (pc >> 12) << 4,
        };
        let mut el1 = El1SysRegs {
            vbar_el1: vector - 0x200,
            ..El1SysRegs::at_reset()
        };
        vcpu.regs.pc = 0x2000_0000;
        let next = guest.handle_exit(
            &mut vcpu,
            ExitKind::Synchronous,
            &fetch(0x2000_0000),
            &mut el1,
            NOW,
        );
        assert_eq!((next, vcpu.regs.pc), (Next::Resume, vector));
        let next = guest.handle_exit(
            &mut vcpu,
            ExitKind::Synchronous,
            &fetch(vector),
            &mut el1,
            NOW,
        );
        assert_eq!(next, Next::Leave);
        assert!(matches!(
            guest.poll(0),
            VcpuStatus::Ended(StopReason::Fault(why)) if why.contains("not mapped")
        ));
    }

    #[test]
    fn the_same_fault_at_the_same_pc_stops_the_vcpu_after_a_streak() {
        let (guest, mut vcpu) = instance(1);
        let mut el1 = El1SysRegs {
            vbar_el1: 0x4000_8000,
            ..El1SysRegs::at_reset()
        };
        let load = data_abort(0x3000_0000, 1, false);
        let mut leaves = 0;
        for round in 0..FAULT_STREAK_LIMIT {
            vcpu.regs.pc = ENTRY;
            if round == 500 {
                // A timer interrupt in between does not end the streak.
                guest.handle_exit(
                    &mut vcpu,
                    ExitKind::Irq,
                    &TrapSyndrome::default(),
                    &mut el1,
                    NOW,
                );
            }
            if guest.handle_exit(&mut vcpu, ExitKind::Synchronous, &load, &mut el1, NOW)
                == Next::Leave
            {
                leaves += 1;
            }
        }
        assert_eq!(leaves, 1, "stopped on the last of the streak");
        assert!(!guest.is_on(0));

        // Any other exit in between ends a streak.
        let (guest, mut vcpu) = instance(1);
        for _ in 0..2 * FAULT_STREAK_LIMIT {
            vcpu.regs.pc = ENTRY;
            assert_eq!(
                guest.handle_exit(&mut vcpu, ExitKind::Synchronous, &load, &mut el1, NOW),
                Next::Resume
            );
            call(&guest, &mut vcpu, HVC, [0x8400_0000, 0, 0, 0]);
        }
    }

    #[test]
    fn id_registers_come_from_the_board_view_and_debug_registers_are_raz_wi() {
        let (guest, mut vcpu) = instance(1);
        exit(&guest, &mut vcpu, sysreg((3, 0, 0, 6, 1), 4, true));
        assert_eq!(
            vcpu.regs.x[4],
            6 << 1,
            "ID_AA64ISAR1_EL1 as the board gave it"
        );
        assert_eq!(vcpu.regs.pc, ENTRY + 4);
        vcpu.regs.x[5] = 0xdead;
        exit(&guest, &mut vcpu, sysreg((2, 0, 0, 2, 2), 5, false)); // MDSCR_EL1
        exit(&guest, &mut vcpu, sysreg((2, 0, 0, 2, 2), 5, true));
        assert_eq!(vcpu.regs.x[5], 0, "writes are ignored, reads are zero");
        assert_eq!(
            vcpu.regs.pc,
            ENTRY + 12,
            "each access stepped over, none faulted"
        );
        exit(&guest, &mut vcpu, sysreg((3, 3, 9, 12, 0), 5, true)); // PMCR_EL0
        assert_eq!(
            vcpu.regs.pc, 0x4000_8200,
            "the PMU is undefined: to the vector"
        );
    }

    #[test]
    fn the_physical_counter_and_timer_run_in_the_instance_time() {
        let (guest, mut vcpu) = instance(1);
        guest.set_counter_offset(400_000);
        exit(&guest, &mut vcpu, sysreg((3, 3, 14, 0, 1), 3, true)); // CNTPCT_EL0
        assert_eq!(vcpu.regs.x[3], NOW - 400_000);
        vcpu.regs.x[5] = NOW - 400_000 + 500;
        exit(&guest, &mut vcpu, sysreg((3, 3, 14, 2, 2), 5, false)); // CNTP_CVAL_EL0
        vcpu.regs.x[5] = 1;
        exit(&guest, &mut vcpu, sysreg((3, 3, 14, 2, 1), 5, false)); // CNTP_CTL_EL0
        assert_eq!(
            vcpu.phys_deadline(guest.counter_offset(), NOW),
            Some(NOW + 500),
            "armed in board time"
        );
        exit(&guest, &mut vcpu, sysreg((3, 3, 14, 2, 0), 6, true)); // CNTP_TVAL_EL0
        assert_eq!(vcpu.regs.x[6], 500);
        assert_eq!(
            vcpu.wake_deadline(guest.counter_offset(), NOW),
            Some(NOW + 500)
        );
        // Restored from a board whose counter was ahead: the offset is "negative".
        guest.set_counter_offset(NOW.wrapping_sub(1 << 40));
        vcpu.regs.x[5] = (1 << 40) + 700;
        exit(&guest, &mut vcpu, sysreg((3, 3, 14, 2, 2), 5, false)); // CNTP_CVAL_EL0
        assert_eq!(
            vcpu.wake_deadline(guest.counter_offset(), NOW),
            Some(NOW + 700)
        );
        vcpu.regs.x[5] = 5;
        exit(&guest, &mut vcpu, sysreg((3, 3, 14, 2, 2), 5, false)); // long past
        assert_eq!(vcpu.phys_deadline(guest.counter_offset(), NOW), Some(0));
        assert_eq!(
            vcpu.phys_deadline(guest.counter_offset(), NOW + 1000),
            Some(0),
            "a passed deadline stays where it was"
        );
    }
}
