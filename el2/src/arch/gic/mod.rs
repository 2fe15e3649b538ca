//! The physical GIC and the hardware virtual CPU interface: a GICv3 (system-register CPU
//! interface, `ICH_*_EL2`) or a GICv2 such as the Raspberry Pi 4's GIC-400 (memory-mapped GICC
//! and GICH frames). One interface for the rest of the hypervisor; which backend serves it is
//! decided once, by the board's device tree, in [`init`].
//!
//! Physical interrupts the hypervisor takes: the virtual timer PPI (forwarded to the running
//! vCPU with the HW bit, so the guest's deactivation deactivates the physical interrupt), the
//! maintenance PPI (list registers need refilling), SGI 0 (another CPU wants this one to look at
//! its vCPU again), SGI 1 (the vCPU loaded here has a new interrupt: refill, nothing to
//! schedule), the deadline and scheduling timers, and the board devices' SPIs. EOImode is
//! 1 on both: priority drop and deactivation are separate, which is what lets the timer stay
//! active until the guest is done with it.
//!
//! List registers cross this interface in the `ICH_LR<n>_EL2` encoding the vGIC model uses; the
//! GICv2 backend converts to and from `GICH_LR<n>` ([`gic::lr::to_gich`]).

mod gicv2;
mod gicv3;

use core::sync::atomic::{AtomicBool, Ordering};

use spin::Once;

pub use gic::Shape;

/// SGI a CPU sends another to make it re-examine its vCPU.
pub const KICK_SGI: u32 = 0;
/// SGI a CPU sends another that has a vCPU loaded, for which an interrupt became pending:
/// it only refills that vCPU's list registers (no scheduling decision).
pub const INTERRUPT_SGI: u32 = 1;
/// The virtual timer PPI's INTID (PPI 11).
pub const VTIMER_INTID: u32 = 27;
/// The GIC maintenance interrupt's INTID (PPI 9).
pub const MAINTENANCE_INTID: u32 = 25;
/// The INTID of the timer that backs a guest's emulated physical timer: the EL1 physical timer
/// (PPI 14), which guests cannot touch since their accesses to it trap.
pub const DEADLINE_TIMER_INTID: u32 = 30;
/// The INTID of the scheduling timer: the EL2 physical timer (PPI 10).
pub const SCHEDULING_TIMER_INTID: u32 = 26;
/// List registers used (QEMU's GICv3 and GICv2 and the GIC-400 have 4).
pub const LIST_REGISTERS: usize = 4;
/// Priority of the interrupts the hypervisor takes.
const PRIORITY: u8 = 0x80;
/// The private interrupts every CPU takes.
const PRIVATE_INTIDS: [u32; 6] = [
    KICK_SGI,
    INTERRUPT_SGI,
    VTIMER_INTID,
    MAINTENANCE_INTID,
    DEADLINE_TIMER_INTID,
    SCHEDULING_TIMER_INTID,
];

/// Where the board's GIC is, from its device tree.
#[derive(Clone, Copy, Debug)]
pub enum Frames {
    /// A GICv3: distributor and the first redistributor.
    V3 {
        /// GICD.
        distributor: u64,
        /// The first GICR frame.
        redistributors: u64,
    },
    /// A GICv2 with the virtualization extensions.
    V2 {
        /// GICD.
        distributor: u64,
        /// GICC, the physical CPU interface.
        cpu_interface: u64,
        /// GICH, the virtual interface control.
        hyp_interface: u64,
        /// GICV, the virtual CPU interface, which guests reach directly.
        virtual_cpu_interface: u64,
    },
}

/// The board's GIC is a GICv2 (set once by [`init`], before any other CPU runs; read on every
/// exit, so a plain flag rather than a once-cell).
static IS_V2: AtomicBool = AtomicBool::new(false);
/// A GICv2 board's GICV frame.
static VIRTUAL_CPU_INTERFACE: Once<u64> = Once::new();

/// Which backend serves this board.
#[inline(always)]
fn shape() -> Shape {
    if IS_V2.load(Ordering::Relaxed) {
        Shape::V2
    } else {
        Shape::V3
    }
}

/// The GIC shape guests of this board see: the board's own (a GICv2 host can only give
/// guests a GICv2, whose CPU interface is the hardware's GICV frame).
pub fn guest_shape() -> Shape {
    shape()
}

/// The physical address of the virtual CPU interface a GICv2 guest's GICC is mapped to at
/// stage 2; `None` on a GICv3 board, whose guests reach theirs through system registers.
pub fn guest_cpu_interface() -> Option<u64> {
    VIRTUAL_CPU_INTERFACE.get().copied()
}

/// Takes over the board's GIC for `affinities.len()` CPUs and sets up the distributor;
/// `device_intids` are the board devices' interrupts (the console UART, the JSON port, the
/// link), routed to CPU 0.
pub fn init(frames: Frames, affinities: alloc::vec::Vec<u64>, device_intids: &[u32]) {
    match frames {
        Frames::V3 {
            distributor,
            redistributors,
        } => {
            gicv3::init(distributor, redistributors, affinities, device_intids);
        }
        Frames::V2 {
            distributor,
            cpu_interface,
            hyp_interface,
            virtual_cpu_interface,
        } => {
            IS_V2.store(true, Ordering::Relaxed);
            VIRTUAL_CPU_INTERFACE.call_once(|| virtual_cpu_interface);
            gicv2::init(distributor, cpu_interface, hyp_interface, device_intids);
        }
    }
}

/// Sets up this CPU's private interrupts and CPU interface (CPU `cpu` by index).
pub fn init_cpu(cpu: usize) {
    match shape() {
        Shape::V3 => gicv3::init_cpu(cpu),
        Shape::V2 => gicv2::init_cpu(cpu),
    }
}

/// An interrupt the CPU interface handed out, as it must be given back on priority drop and
/// deactivation (on a GICv2 an SGI's acknowledgement carries its source CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupt {
    intid: u32,
    /// The acknowledge register's value.
    raw: u32,
}

impl Interrupt {
    /// A private peripheral interrupt by INTID (no source CPU), e.g. to deactivate the timer.
    pub const fn ppi(intid: u32) -> Self {
        Self { intid, raw: intid }
    }

    /// Its INTID.
    pub const fn intid(self) -> u32 {
        self.intid
    }
}

/// Acknowledges the highest-priority pending interrupt, if any.
pub fn acknowledge() -> Option<Interrupt> {
    match shape() {
        Shape::V3 => gicv3::acknowledge().map(Interrupt::ppi),
        Shape::V2 => gicv2::acknowledge().map(|raw| Interrupt {
            intid: raw & gicv2::IAR_INTID,
            raw,
        }),
    }
}

/// Drops the running priority of `interrupt` (it stays active).
pub fn priority_drop(interrupt: Interrupt) {
    match shape() {
        Shape::V3 => gicv3::priority_drop(interrupt.raw),
        Shape::V2 => gicv2::priority_drop(interrupt.raw),
    }
}

/// Deactivates `interrupt` on this CPU.
pub fn deactivate(interrupt: Interrupt) {
    match shape() {
        Shape::V3 => gicv3::deactivate(interrupt.raw),
        Shape::V2 => gicv2::deactivate(interrupt.raw),
    }
}

/// Sends the kick SGI to physical CPU `cpu`: look at the scheduler again.
pub fn kick(cpu: usize) {
    send_sgi(cpu, KICK_SGI);
}

/// Sends the interrupt SGI to physical CPU `cpu`: the vCPU loaded there has a new interrupt.
pub fn kick_interrupt(cpu: usize) {
    send_sgi(cpu, INTERRUPT_SGI);
}

fn send_sgi(cpu: usize, sgi: u32) {
    // The vGIC update the SGI announces must be visible before the SGI is.
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISHST);
    match shape() {
        Shape::V3 => gicv3::send_sgi(cpu, sgi),
        Shape::V2 => gicv2::send_sgi(cpu, sgi),
    }
}

/// Reads the list registers (`ICH_LR<n>_EL2` encoding).
#[inline]
pub fn read_lrs() -> [u64; LIST_REGISTERS] {
    match shape() {
        Shape::V3 => gicv3::read_lrs(),
        Shape::V2 => gicv2::read_lrs(),
    }
}

/// Writes the list registers (`ICH_LR<n>_EL2` encoding) and turns the virtual CPU interface
/// on, asking for a maintenance interrupt when `refill` (more interrupts wait than fit).
#[inline]
pub fn write_lrs(lrs: &[u64; LIST_REGISTERS], refill: bool) {
    match shape() {
        Shape::V3 => gicv3::write_lrs(lrs, refill),
        Shape::V2 => gicv2::write_lrs(lrs, refill),
    }
}

/// Writes list register `slot` (`ICH_LR<n>_EL2` encoding) of an interface that
/// [`write_lrs`] turned on.
#[inline]
pub fn write_lr(slot: usize, value: u64) {
    match shape() {
        Shape::V3 => gicv3::write_lr(slot, value),
        Shape::V2 => gicv2::write_lr(slot, value),
    }
}

/// Loads a vCPU's virtual CPU interface control and active priorities (as saved by
/// [`save_cpu_interface`] on a board of the same GIC shape).
pub fn load_cpu_interface(vmcr: u64, active_priorities: [u64; 2]) {
    match shape() {
        Shape::V3 => gicv3::load_cpu_interface(vmcr, active_priorities),
        Shape::V2 => gicv2::load_cpu_interface(vmcr, active_priorities),
    }
}

/// Saves the virtual CPU interface control and active priorities, empties the list registers
/// (the caller folded them into the vGIC) and switches the interface off.
pub fn save_cpu_interface() -> (u64, [u64; 2]) {
    match shape() {
        Shape::V3 => gicv3::save_cpu_interface(),
        Shape::V2 => gicv2::save_cpu_interface(),
    }
}
