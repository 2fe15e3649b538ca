//! The GICv3 backend: the distributor and redistributors through the `arm-gic` driver, the CPU
//! interface through `ICC_*_EL1` and the virtual CPU interface through `ICH_*_EL2`.

use core::ptr::NonNull;

use aarch64_cpu::registers::{
    ICH_HCR_EL2, ICH_LR0_EL2, ICH_LR1_EL2, ICH_LR2_EL2, ICH_LR3_EL2, ICH_VMCR_EL2,
};
use arm_gic::gicv3::registers::{Gicd, GicrSgi};
use arm_gic::gicv3::{GicCpuInterface, GicV3, SgiTarget, SgiTargetGroup};
use arm_gic::{IntId, InterruptGroup, UniqueMmioPointer};
use spin::{Mutex, Once};
use tock_registers::interfaces::{Readable, Writeable};

use super::{LIST_REGISTERS, PRIORITY, PRIVATE_INTIDS};

/// `ICH_HCR_EL2.En`: the virtual CPU interface is on.
const ICH_HCR_EN: u64 = 1;
/// `ICH_HCR_EL2.UIE`: maintenance interrupt when at most one list register is valid.
const ICH_HCR_UIE: u64 = 1 << 1;

struct Physical(GicV3<'static>);

// SAFETY: the driver only holds pointers to the GIC's MMIO frames, which are valid from every
// CPU; all use goes through the mutex below.
unsafe impl Send for Physical {}

static GIC: Mutex<Option<Physical>> = Mutex::new(None);
/// MPIDR affinity of each physical CPU, by index, for addressing SGIs.
static CPU_AFFINITIES: Once<alloc::vec::Vec<u64>> = Once::new();

/// Takes over the GIC at `distributor`/`redistributors` (see [`super::init`]).
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

/// Sets up this CPU's redistributor and CPU interface.
pub fn init_cpu(cpu: usize) {
    GicCpuInterface::enable_system_register_el2(true);
    let mut guard = GIC.lock();
    let gic = &mut guard.as_mut().expect("gic::init ran first").0;
    gic.init_cpu(cpu);
    for intid in PRIVATE_INTIDS.map(int_id) {
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

/// Acknowledges the highest-priority pending interrupt: its INTID.
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

/// Sends SGI `sgi` to physical CPU `cpu`.
pub fn send_sgi(cpu: usize, sgi: u32) {
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
    GicCpuInterface::send_sgi(IntId::sgi(sgi), target, SgiTargetGroup::CurrentGroup1)
        .expect("the hypervisor's SGIs are SGIs");
}

/// Reads the list registers.
#[inline]
pub fn read_lrs() -> [u64; LIST_REGISTERS] {
    [
        ICH_LR0_EL2.get(),
        ICH_LR1_EL2.get(),
        ICH_LR2_EL2.get(),
        ICH_LR3_EL2.get(),
    ]
}

/// Writes the list registers and turns the virtual CPU interface on.
#[inline]
pub fn write_lrs(lrs: &[u64; LIST_REGISTERS], refill: bool) {
    ICH_LR0_EL2.set(lrs[0]);
    ICH_LR1_EL2.set(lrs[1]);
    ICH_LR2_EL2.set(lrs[2]);
    ICH_LR3_EL2.set(lrs[3]);
    ICH_HCR_EL2.set(ICH_HCR_EN | if refill { ICH_HCR_UIE } else { 0 });
}

/// Writes list register `slot` (< [`LIST_REGISTERS`]); the interface is already on.
#[inline]
pub fn write_lr(slot: usize, value: u64) {
    match slot {
        0 => ICH_LR0_EL2.set(value),
        1 => ICH_LR1_EL2.set(value),
        2 => ICH_LR2_EL2.set(value),
        3 => ICH_LR3_EL2.set(value),
        _ => unreachable!("list register {slot} of {LIST_REGISTERS}"),
    }
}

/// Loads `ICH_VMCR_EL2` and the active priorities (`ICH_AP0R0_EL2`, `ICH_AP1R0_EL2`).
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

/// Saves `ICH_VMCR_EL2` and the active priorities, empties the list registers and switches
/// the virtual CPU interface off.
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
