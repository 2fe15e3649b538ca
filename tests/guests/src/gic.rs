//! The guest's GICv3 (the `arm-gic` driver at EL1), found through the device tree's
//! `arm,gic-v3` node (distributor, then redistributors), shared by every CPU behind a lock.

use core::ptr::NonNull;

use arm_gic::{
    Trigger, UniqueMmioPointer,
    gicv3::{
        GicCpuInterface, GicV3, SgiTarget, SgiTargetGroup,
        registers::{Gicd, GicrSgi},
    },
};

use crate::{
    irq::intid,
    smp::{IrqLock, cpu_id, cpus_from_dt},
};

/// Instance-platform (and QEMU virt) distributor, used when the DT has no `arm,gic-v3` node.
pub const DEFAULT_GICD: usize = 0x0800_0000;
/// Instance-platform (and QEMU virt) first redistributor.
pub const DEFAULT_GICR: usize = 0x080A_0000;

/// GICD_TYPER.
pub const GICD_TYPER: usize = 0x4;
/// GICD_ISPENDR<n>.
pub const GICD_ISPENDR: usize = 0x200;
/// GICD_ISACTIVER<n>.
pub const GICD_ISACTIVER: usize = 0x300;

/// Where the GIC is and how many CPUs (redistributors) it serves.
#[derive(Clone, Copy, Debug)]
pub struct GicInfo {
    /// Distributor base.
    pub gicd: usize,
    /// First redistributor base.
    pub gicr: usize,
    /// CPUs in the DT.
    pub cpus: usize,
}

struct Shared(Option<GicV3<'static>>);
// SAFETY: the driver only holds MMIO pointers to the GIC, which every CPU may use; the lock
// serialises them.
unsafe impl Send for Shared {}

static GIC: IrqLock<Shared> = IrqLock::new(Shared(None));
static INFO: IrqLock<Option<GicInfo>> = IrqLock::new(None);

/// GIC distributor and redistributor bases from the DT's `arm,gic-v3` node.
pub fn from_dt(dtb: usize) -> Option<(usize, usize)> {
    // SAFETY: the boot protocol passes a valid DTB address in x0; `from_ptr` checks the header.
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }.ok()?;
    let mut reg = fdt.find_compatible(&["arm,gic-v3"])?.reg()?;
    let gicd = reg.next()?.starting_address as usize;
    let gicr = reg.next()?.starting_address as usize;
    Some((gicd, gicr))
}

/// Initialises the GIC from the boot CPU: distributor and every redistributor to defaults (group 1,
/// priority 0x80, SPIs level-triggered), this CPU's interface on with priority mask 0xff.
pub fn init(dtb: usize) -> GicInfo {
    let (gicd, gicr) = from_dt(dtb).unwrap_or((DEFAULT_GICD, DEFAULT_GICR));
    let info = GicInfo {
        gicd,
        gicr,
        cpus: cpus_from_dt(dtb),
    };
    // SAFETY: the addresses are the GIC's (from the DT), device-mapped by the boot identity map;
    // this is the only driver instance.
    let mut gic = unsafe {
        GicV3::new(
            UniqueMmioPointer::new(NonNull::new(gicd as *mut Gicd).expect("GICD address")),
            NonNull::new(gicr as *mut GicrSgi).expect("GICR address"),
            info.cpus,
        )
    }
    .expect("GICv3 redistributor layout");
    gic.setup(cpu_id());
    GicCpuInterface::set_priority_mask(0xff);
    GIC.lock().0 = Some(gic);
    *INFO.lock() = Some(info);
    info
}

/// Brings up this (secondary) CPU's redistributor and CPU interface, after [`init`] on the boot CPU.
pub fn init_cpu() {
    with(|gic| gic.init_cpu(cpu_id()));
    GicCpuInterface::enable_group1(true);
    GicCpuInterface::set_priority_mask(0xff);
}

/// Runs `f` with the driver (IRQs masked, lock held).
pub fn with<R>(f: impl FnOnce(&mut GicV3<'static>) -> R) -> R {
    let mut guard = GIC.lock();
    f(guard.0.as_mut().expect("gic::init has not run"))
}

/// What [`init`] found.
pub fn info() -> GicInfo {
    INFO.lock().expect("gic::init has not run")
}

/// Enables interrupt `id` with `priority` (SGIs and PPIs on this CPU's redistributor).
pub fn enable(id: u32, priority: u8) {
    let cpu = Some(cpu_id());
    with(|gic| {
        gic.set_interrupt_priority(intid(id), cpu, priority)
            .and_then(|()| gic.enable_interrupt(intid(id), cpu, true))
            .expect("valid interrupt")
    });
}

/// Disables interrupt `id` (SGIs and PPIs on this CPU's redistributor).
pub fn disable(id: u32) {
    let cpu = Some(cpu_id());
    with(|gic| {
        gic.enable_interrupt(intid(id), cpu, false)
            .expect("valid interrupt")
    });
}

/// Configures SPI `id`: edge or level, priority, routed to CPU `cpu`, and enables it.
pub fn enable_spi(id: u32, edge: bool, priority: u8, cpu: usize) {
    let trigger = if edge { Trigger::Edge } else { Trigger::Level };
    with(|gic| {
        gic.set_trigger(intid(id), None, trigger)
            .expect("valid SPI");
        gic.set_interrupt_priority(intid(id), None, priority)
            .expect("valid SPI");
        gic.distributor()
            .set_routing(intid(id), Some(crate::smp::mpidr_of(cpu)))
            .expect("valid SPI");
        gic.enable_interrupt(intid(id), None, true)
            .expect("valid SPI");
    });
}

/// Sets the priority of SPI `id`.
pub fn set_spi_priority(id: u32, priority: u8) {
    with(|gic| {
        gic.set_interrupt_priority(intid(id), None, priority)
            .expect("valid SPI")
    });
}

/// Sends SGI `sgi` to the CPUs in `targets` (bit n: Aff0 = n, Aff1..3 = 0).
pub fn send_sgi(sgi: u32, targets: u16) {
    GicCpuInterface::send_sgi(
        intid(sgi),
        SgiTarget::List {
            affinity3: 0,
            affinity2: 0,
            affinity1: 0,
            target_list: targets,
        },
        SgiTargetGroup::CurrentGroup1,
    )
    .expect("valid SGI");
}

/// Sends SGI `sgi` to every CPU but this one (ICC_SGI1R_EL1.IRM = 1).
pub fn send_sgi_to_others(sgi: u32) {
    GicCpuInterface::send_sgi(intid(sgi), SgiTarget::All, SgiTargetGroup::CurrentGroup1)
        .expect("valid SGI");
}

/// Reads distributor register `offset` (32 bits).
pub fn gicd_read(offset: usize) -> u32 {
    // SAFETY: a distributor register, device-mapped; reads have no side effects we rely on.
    unsafe { crate::mmio_read32(info().gicd + offset) }
}

/// Writes distributor register `offset` (32 bits).
pub fn gicd_write(offset: usize, value: u32) {
    // SAFETY: a distributor register, device-mapped; the caller chose what the write does.
    unsafe { crate::mmio_write32(info().gicd + offset, value) }
}

/// Number of INTIDs the distributor implements (32 * (GICD_TYPER.ITLinesNumber + 1), at most 1020).
pub fn intid_limit() -> u32 {
    (32 * ((gicd_read(GICD_TYPER) & 0x1f) + 1)).min(1020)
}
