//! The GICv2 backend (QEMU virt's `gic-version=2`, the Raspberry Pi 4's GIC-400): the
//! distributor (GICD), the CPU interface (GICC) and the virtual interface control (GICH), all
//! memory-mapped, through `tock-registers` blocks.
//!
//! Written here rather than with `arm-gic`'s GICv2 driver, which has no way to set an SPI's
//! CPU targets (`GICD_ITARGETSR`, without which an SPI reaches no CPU), to split priority drop
//! from deactivation (`GICC_CTLR.EOImode`, `GICC_DIR`), nor any GICH register.
//!
//! Group and security: on a GIC without the Security Extensions (QEMU virt) every interrupt
//! stays in Group 0 and bit 0 of GICD_CTLR and GICC_CTLR enables it; on a GIC with them (the
//! GIC-400), the firmware (or QEMU's direct kernel boot) puts every interrupt in Group 1 and
//! this hypervisor sees the Non-secure copies, where bit 0 enables Group 1. Either way bit 0,
//! and GICC_CTLR bit 9 is EOImode (EOImodeNS in the Non-secure copy).

use core::sync::atomic::{AtomicU8, Ordering};

use spin::Once;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

use super::{LIST_REGISTERS, PRIORITY, PRIVATE_INTIDS};
use crate::arch::boot::MAX_CPUS;

/// `GICC_IAR.InterruptID`.
pub const IAR_INTID: u32 = 0x3ff;
/// The INTID an acknowledge reads when nothing is pending.
const SPURIOUS: u32 = 1023;
/// `GICC_CTLR`: bit 0 enables signalling, bit 9 is EOImode (EOIR only drops priority).
const GICC_CTLR_ENABLE_EOIMODE: u32 = 1 | 1 << 9;
/// `GICH_HCR.En`: the virtual CPU interface is on.
const GICH_HCR_EN: u32 = 1;
/// `GICH_HCR.UIE`: maintenance interrupt when at most one list register is valid.
const GICH_HCR_UIE: u32 = 1 << 1;

register_structs! {
    /// The distributor registers the hypervisor uses.
    Gicd {
        (0x000 => ctlr: ReadWrite<u32>),
        (0x004 => typer: ReadOnly<u32>),
        (0x008 => _reserved0),
        (0x100 => isenabler: [ReadWrite<u32>; 32]),
        (0x180 => icenabler: [ReadWrite<u32>; 32]),
        (0x200 => _reserved1),
        (0x400 => ipriorityr: [ReadWrite<u8>; 1024]),
        (0x800 => itargetsr: [ReadWrite<u8>; 1024]),
        (0xc00 => _reserved2),
        (0xf00 => sgir: WriteOnly<u32>),
        (0xf04 => @END),
    },

    /// The CPU interface registers the hypervisor uses (banked per CPU).
    Gicc {
        (0x0000 => ctlr: ReadWrite<u32>),
        (0x0004 => pmr: ReadWrite<u32>),
        (0x0008 => _reserved0),
        (0x000c => iar: ReadOnly<u32>),
        (0x0010 => eoir: WriteOnly<u32>),
        (0x0014 => _reserved1),
        (0x1000 => dir: WriteOnly<u32>),
        (0x1004 => @END),
    },

    /// The virtual interface control registers (banked per CPU).
    Gich {
        (0x000 => hcr: ReadWrite<u32>),
        (0x004 => vtr: ReadOnly<u32>),
        (0x008 => vmcr: ReadWrite<u32>),
        (0x00c => _reserved0),
        (0x0f0 => apr: ReadWrite<u32>),
        (0x0f4 => _reserved1),
        (0x100 => lr: [ReadWrite<u32>; 64]),
        (0x200 => @END),
    }
}

/// The frames' addresses.
struct Frames {
    gicd: usize,
    gicc: usize,
    gich: usize,
}

static FRAMES: Once<Frames> = Once::new();
/// Each CPU's CPU interface mask (`GICD_ITARGETSR0` as that CPU reads it), for SGI targets.
static CPU_MASKS: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];

fn frames() -> &'static Frames {
    FRAMES.get().expect("gic::init ran first")
}

fn gicd() -> &'static Gicd {
    // SAFETY: the address is the board's GICD from its device tree, mapped as device memory by
    // the identity map for the hypervisor's lifetime; registers are accessed only through
    // volatile reads and writes of the block.
    unsafe { &*(frames().gicd as *const Gicd) }
}

fn gicc() -> &'static Gicc {
    // SAFETY: as for `gicd`, the board's GICC frame (banked: each CPU reaches its own).
    unsafe { &*(frames().gicc as *const Gicc) }
}

fn gich() -> &'static Gich {
    // SAFETY: as for `gicd`, the board's GICH frame (banked: each CPU reaches its own).
    unsafe { &*(frames().gich as *const Gich) }
}

/// Takes over the GIC at the three frames and sets up the distributor: every SPI disabled but
/// `device_intids`, which go to CPU 0 (whose CPU interface is the one calling).
pub fn init(distributor: u64, cpu_interface: u64, hyp_interface: u64, device_intids: &[u32]) {
    FRAMES.call_once(|| Frames {
        gicd: distributor as usize,
        gicc: cpu_interface as usize,
        gich: hyp_interface as usize,
    });
    let gicd = gicd();
    gicd.ctlr.set(0);
    let lines = ((gicd.typer.get() & 0x1f) as usize + 1) * 32;
    for register in &gicd.icenabler[1..lines / 32] {
        register.set(u32::MAX);
    }
    let boot_cpu = gicd.itargetsr[0].get();
    for &intid in device_intids {
        let index = intid as usize;
        gicd.ipriorityr[index].set(PRIORITY);
        gicd.itargetsr[index].set(boot_cpu);
        gicd.isenabler[index / 32].set(1 << (index % 32));
    }
    gicd.ctlr.set(1);
}

/// Sets up this CPU's private interrupts, CPU interface and virtual interface control.
pub fn init_cpu(cpu: usize) {
    let gicd = gicd();
    // Reads as this CPU's own interface bit in every byte.
    CPU_MASKS[cpu].store(gicd.itargetsr[0].get(), Ordering::Relaxed);
    gicd.icenabler[0].set(u32::MAX);
    for intid in PRIVATE_INTIDS {
        gicd.ipriorityr[intid as usize].set(PRIORITY);
        gicd.isenabler[0].set(1 << intid);
    }
    gich().hcr.set(0);
    let gicc = gicc();
    gicc.pmr.set(0xff);
    gicc.ctlr.set(GICC_CTLR_ENABLE_EOIMODE);
    debug_assert!((gich().vtr.get() & 0x3f) as usize + 1 >= LIST_REGISTERS);
}

/// Acknowledges the highest-priority pending interrupt: the acknowledge register's value (an
/// SGI's carries its source CPU, which EOIR and DIR want back).
pub fn acknowledge() -> Option<u32> {
    let iar = gicc().iar.get();
    (iar & IAR_INTID != SPURIOUS).then_some(iar)
}

/// Drops the running priority of the interrupt `iar` acknowledged (it stays active).
pub fn priority_drop(iar: u32) {
    gicc().eoir.set(iar);
}

/// Deactivates the interrupt `iar` acknowledged.
pub fn deactivate(iar: u32) {
    gicc().dir.set(iar);
}

/// `GICD_SGIR.TargetListFilter`: the requesting CPU only.
const SGIR_TO_SELF: u32 = 0b10 << 24;

/// Sends SGI `sgi` to physical CPU `cpu` (`GICD_SGIR`, by its CPU interface mask). A GIC with
/// one CPU interface reads `ITARGETSR0` as zero, so a CPU without a mask is the only one: the
/// SGI goes to "self".
pub fn send_sgi(cpu: usize, sgi: u32) {
    let Some(mask) = CPU_MASKS.get(cpu).map(|m| m.load(Ordering::Relaxed)) else {
        return;
    };
    let target = if mask == 0 {
        SGIR_TO_SELF
    } else {
        u32::from(mask) << 16
    };
    gicd().sgir.set(target | sgi);
}

/// Reads the list registers, in the `ICH_LR<n>_EL2` encoding. Kept out of line: the exit path
/// of a GICv3 board must not pay for the GICv2 conversion's code.
#[inline(never)]
pub fn read_lrs() -> [u64; LIST_REGISTERS] {
    let lr = &gich().lr;
    core::array::from_fn(|n| gic::lr::from_gich(lr[n].get()))
}

/// Writes the list registers (given in the `ICH_LR<n>_EL2` encoding) and turns the virtual CPU
/// interface on. Out of line, as [`read_lrs`].
#[inline(never)]
pub fn write_lrs(lrs: &[u64; LIST_REGISTERS], refill: bool) {
    let gich = gich();
    for (register, lr) in gich.lr.iter().zip(lrs) {
        register.set(gic::lr::to_gich(*lr));
    }
    gich.hcr
        .set(GICH_HCR_EN | if refill { GICH_HCR_UIE } else { 0 });
}

/// Writes list register `slot` (given in the `ICH_LR<n>_EL2` encoding); the interface is
/// already on. Out of line, as [`read_lrs`].
#[inline(never)]
pub fn write_lr(slot: usize, value: u64) {
    gich().lr[slot].set(gic::lr::to_gich(value));
}

/// Loads `GICH_VMCR` and `GICH_APR` (the first active-priorities word).
pub fn load_cpu_interface(vmcr: u64, active_priorities: [u64; 2]) {
    let gich = gich();
    gich.vmcr.set(vmcr as u32);
    gich.apr.set(active_priorities[0] as u32);
}

/// Saves `GICH_VMCR` and `GICH_APR`, empties the list registers and switches the virtual CPU
/// interface off.
pub fn save_cpu_interface() -> (u64, [u64; 2]) {
    let gich = gich();
    let saved = (u64::from(gich.vmcr.get()), [u64::from(gich.apr.get()), 0]);
    for register in &gich.lr[..LIST_REGISTERS] {
        register.set(0);
    }
    gich.hcr.set(0);
    saved
}
