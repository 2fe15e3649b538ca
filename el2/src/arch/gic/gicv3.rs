//! The physical GICv3 (through the `arm-gic` crate) and the hardware virtual CPU interface
//! (`ICH_*_EL2`, through `aarch64-cpu`).
//!
//! Physical interrupts the hypervisor takes: the virtual timer PPI (forwarded to the running
//! vCPU with the HW bit, so the guest's deactivation deactivates the physical interrupt), the
//! maintenance PPI (list registers need refilling), SGI 0 (another CPU wants this one to look at
//! its vCPU again) and the console UART's SPI. EOImode is 1: priority drop and deactivation are
//! separate, which is what lets the timer stay active until the guest is done with it.

use core::ptr::NonNull;

use aarch64_cpu::registers::{
    ICH_HCR_EL2, ICH_LR0_EL2, ICH_LR1_EL2, ICH_LR2_EL2, ICH_LR3_EL2, ICH_VMCR_EL2,
};
use arm_gic::gicv3::registers::{Gicd, GicrSgi};
use arm_gic::gicv3::{GicCpuInterface, GicV3, SgiTarget, SgiTargetGroup};
use arm_gic::{IntId, InterruptGroup, UniqueMmioPointer};
use spin::{Mutex, Once};
use tock_registers::interfaces::{Readable, Writeable};

/// SGI a CPU sends another to make it re-examine its vCPU.
pub const KICK_SGI: u32 = 0;
/// The virtual timer PPI's INTID (PPI 11).
pub const VTIMER_INTID: u32 = 27;
/// The GIC maintenance interrupt's INTID (PPI 9).
pub const MAINTENANCE_INTID: u32 = 25;
/// The INTID of the timer that backs a guest's emulated physical timer: the EL1 physical timer
/// (PPI 14), which guests cannot touch since their accesses to it trap.
pub const DEADLINE_TIMER_INTID: u32 = 30;
/// The INTID of the scheduling timer: the EL2 physical timer (PPI 10).
pub const SCHEDULING_TIMER_INTID: u32 = 26;
/// List registers used (QEMU and GIC-600-class CPUs have at least 4).
pub const LIST_REGISTERS: usize = 4;
/// `ICH_HCR_EL2.En`: the virtual CPU interface is on.
const ICH_HCR_EN: u64 = 1;
/// `ICH_HCR_EL2.UIE`: maintenance interrupt when at most one list register is valid.
const ICH_HCR_UIE: u64 = 1 << 1;
/// Priority of the interrupts the hypervisor takes.
const PRIORITY: u8 = 0x80;

struct Physical(GicV3<'static>);

// SAFETY: the driver only holds pointers to the GIC's MMIO frames, which are valid from every
// CPU; all use goes through the mutex below.
unsafe impl Send for Physical {}

static GIC: Mutex<Option<Physical>> = Mutex::new(None);
/// MPIDR affinity of each physical CPU, by index, for addressing SGIs.
static CPU_AFFINITIES: Once<alloc::vec::Vec<u64>> = Once::new();

/// Takes over the GIC at `distributor`/`redistributors` for `affinities.len()` CPUs and sets up
/// the distributor; `device_intids` are the board devices' interrupts (the console UART, the
/// JSON port), routed to CPU 0.
pub fn init(
    distributor: u64,
    redistributors: u64,
    affinities: alloc::vec::Vec<u64>,
    device_intids: &[u32],
) {
    // SAFETY: the addresses come from the board's device tree, the identity map covers them as
    // device memory, and only this driver (created once, here) touches the GIC's MMIO frames.
    let mut gic = unsafe {
        GicV3::new(
            UniqueMmioPointer::new(NonNull::new(distributor as *mut Gicd).expect("GICD address")),
            NonNull::new(redistributors as *mut GicrSgi).expect("GICR address"),
            affinities.len(),
        )
    }
    .expect("a GICv3 redistributor region");
    GicCpuInterface::enable_system_register_el2(true);
    gic.setup(0);
    for &intid in device_intids {
        let intid = IntId::spi(intid - 32);
        let distributor = gic.distributor();
        distributor
            .set_interrupt_priority(intid, PRIORITY)
            .expect("valid SPI");
        distributor
            .set_routing(intid, Some(affinities[0]))
            .expect("valid SPI");
        distributor
            .enable_interrupt(intid, true)
            .expect("valid SPI");
    }
    *GIC.lock() = Some(Physical(gic));
    CPU_AFFINITIES.call_once(|| affinities);
}

/// Sets up this CPU's redistributor and CPU interface (CPU `cpu` by index).
pub fn init_cpu(cpu: usize) {
    GicCpuInterface::enable_system_register_el2(true);
    let mut guard = GIC.lock();
    let gic = &mut guard.as_mut().expect("gic::init ran first").0;
    gic.init_cpu(cpu);
    for intid in [
        KICK_SGI,
        VTIMER_INTID,
        MAINTENANCE_INTID,
        DEADLINE_TIMER_INTID,
        SCHEDULING_TIMER_INTID,
    ]
    .map(int_id)
    {
        gic.set_interrupt_priority(intid, Some(cpu), PRIORITY)
            .expect("valid private interrupt");
        gic.enable_interrupt(intid, Some(cpu), true)
            .expect("valid private interrupt");
    }
    drop(guard);
    GicCpuInterface::enable_group1(true);
    GicCpuInterface::set_priority_mask(0xff);
    // ICC_CTLR_EL1.EOImode = 1: EOIR drops priority, DIR deactivates.
    // SAFETY: writes the CPU interface control of this CPU; no memory is touched.
    unsafe {
        core::arch::asm!("msr icc_ctlr_el1, {v}", "isb", v = in(reg) 1u64 << 1, options(nostack))
    };
}

/// Acknowledges the highest-priority pending interrupt, if any.
pub fn acknowledge() -> Option<u32> {
    GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1).map(u32::from)
}

/// The `IntId` of an SGI, PPI or SPI number.
fn int_id(intid: u32) -> IntId {
    match intid {
        0..16 => IntId::sgi(intid),
        16..32 => IntId::ppi(intid - 16),
        _ => IntId::spi(intid - 32),
    }
}

/// Drops the running priority of `intid` (it stays active).
pub fn priority_drop(intid: u32) {
    GicCpuInterface::end_interrupt(int_id(intid), InterruptGroup::Group1);
}

/// Deactivates `intid` on this CPU.
pub fn deactivate(intid: u32) {
    // SAFETY: writes the CPU interface's deactivate register; no memory is touched.
    unsafe {
        core::arch::asm!("msr icc_dir_el1, {v}", "isb", v = in(reg) u64::from(intid), options(nostack))
    };
}

/// Sends the kick SGI to physical CPU `cpu`.
pub fn kick(cpu: usize) {
    let Some(affinity) = CPU_AFFINITIES
        .get()
        .and_then(|affinities| affinities.get(cpu))
        .copied()
    else {
        return;
    };
    let target = SgiTarget::List {
        affinity3: (affinity >> 32) as u8,
        affinity2: (affinity >> 16) as u8,
        affinity1: (affinity >> 8) as u8,
        target_list: 1 << (affinity & 0xf),
    };
    // The vGIC update the kick announces must be visible before the SGI is.
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISHST);
    GicCpuInterface::send_sgi(IntId::sgi(KICK_SGI), target, SgiTargetGroup::CurrentGroup1)
        .expect("SGI 0 is an SGI");
}

/// Reads the list registers.
pub fn read_lrs() -> [u64; LIST_REGISTERS] {
    [
        ICH_LR0_EL2.get(),
        ICH_LR1_EL2.get(),
        ICH_LR2_EL2.get(),
        ICH_LR3_EL2.get(),
    ]
}

/// Writes the list registers and turns the virtual CPU interface on, asking for a maintenance
/// interrupt when `refill` (more interrupts wait than fit).
pub fn write_lrs(lrs: &[u64; LIST_REGISTERS], refill: bool) {
    ICH_LR0_EL2.set(lrs[0]);
    ICH_LR1_EL2.set(lrs[1]);
    ICH_LR2_EL2.set(lrs[2]);
    ICH_LR3_EL2.set(lrs[3]);
    ICH_HCR_EL2.set(ICH_HCR_EN | if refill { ICH_HCR_UIE } else { 0 });
}

/// Loads a vCPU's virtual CPU interface control and active priorities (group 0, group 1).
pub fn load_cpu_interface(vmcr: u64, active_priorities: [u64; 2]) {
    ICH_VMCR_EL2.set(vmcr);
    // SAFETY: writes this CPU's virtual CPU interface state; no memory is touched.
    unsafe {
        core::arch::asm!(
            "msr ICH_AP0R0_EL2, {ap0}",
            "msr ICH_AP1R0_EL2, {ap1}",
            ap0 = in(reg) active_priorities[0],
            ap1 = in(reg) active_priorities[1],
            options(nostack)
        )
    };
}

/// Saves the virtual CPU interface control and active priorities, empties the list registers
/// (the caller folded them into the vGIC) and switches the interface off.
pub fn save_cpu_interface() -> (u64, [u64; 2]) {
    let vmcr = ICH_VMCR_EL2.get();
    let (ap0, ap1): (u64, u64);
    // SAFETY: reads this CPU's virtual CPU interface state; no memory is touched.
    unsafe {
        core::arch::asm!(
            "mrs {ap0}, ICH_AP0R0_EL2",
            "mrs {ap1}, ICH_AP1R0_EL2",
            ap0 = out(reg) ap0,
            ap1 = out(reg) ap1,
            options(nostack)
        )
    };
    write_lrs(&[0; LIST_REGISTERS], false);
    ICH_HCR_EL2.set(0);
    (vmcr, [ap0, ap1])
}
