//! The guest's GIC, found through the device tree and driven by the `arm-gic` driver at EL1, shared
//! by every CPU behind a lock: a GICv3 (`arm,gic-v3` node: distributor, then redistributors; the
//! CPU interface through the ICC_* system registers) or a GICv2 (`arm,cortex-a15-gic` or
//! `arm,gic-400` node: distributor, then the memory-mapped CPU interface GICC).
//!
//! On a GICv2 every interrupt stays in group 0 (as Linux keeps them: GICD_CTLR = 1, GICC_CTLR = 1)
//! when the GIC has no Security Extensions, SPIs are routed through GICD_ITARGETSR (CPU interface
//! n is CPU n, MPIDR Aff0 = n, as on QEMU virt and under the hypervisor) and SGI target lists are
//! CPU interface masks, the same bits as the GICv3 target lists the callers pass.

use core::{
    fmt,
    ptr::NonNull,
    sync::atomic::{AtomicU8, Ordering},
};

use arm_gic::{
    IntId, InterruptGroup, Trigger, UniqueMmioPointer,
    gicv2::{
        self, GicV2, SgiTargetListFilter,
        registers::{Gicc, Gicd as Gicv2d},
    },
    gicv3::{
        GicCpuInterface, GicV3, SgiTarget, SgiTargetGroup,
        registers::{Gicd, GicrSgi},
    },
};

use crate::{
    irq::intid,
    smp::{IrqLock, cpu_id, cpus_from_dt},
};

/// Instance-platform (and QEMU virt) distributor, used when the DT has no GIC node.
pub const DEFAULT_GICD: usize = 0x0800_0000;
/// Instance-platform (and QEMU virt) first redistributor (GICv3).
pub const DEFAULT_GICR: usize = 0x080A_0000;
/// Instance-platform (and QEMU virt) CPU interface (GICv2).
pub const DEFAULT_GICC: usize = 0x0801_0000;

/// DT compatibles of a GICv3.
const GICV3_COMPATIBLE: &[&str] = &["arm,gic-v3"];
/// DT compatibles of a GICv2.
const GICV2_COMPATIBLE: &[&str] = &["arm,cortex-a15-gic", "arm,gic-400"];

/// GICD_TYPER.
pub const GICD_TYPER: usize = 0x4;
/// `GICD_IGROUPR<n>`.
pub const GICD_IGROUPR: usize = 0x80;
/// `GICD_ICENABLER<n>`.
pub const GICD_ICENABLER: usize = 0x180;
/// `GICD_ISPENDR<n>`.
pub const GICD_ISPENDR: usize = 0x200;
/// `GICD_ISACTIVER<n>`.
pub const GICD_ISACTIVER: usize = 0x300;
/// `GICD_IPRIORITYR<n>` (a byte per INTID).
pub const GICD_IPRIORITYR: usize = 0x400;
/// `GICD_ITARGETSR<n>` (GICv2: a byte per INTID, bit n = CPU interface n).
pub const GICD_ITARGETSR: usize = 0x800;
/// `GICD_ICFGR<n>` (two bits per INTID).
pub const GICD_ICFGR: usize = 0xc00;

/// GICC_CTLR (GICv2 CPU interface).
const GICC_CTLR: usize = 0x0;
/// GICC_IAR: interrupt ID in bits [9:0], the source CPU of an SGI in bits [12:10].
const GICC_IAR_INTID: u32 = 0x3ff;
/// The default priority [`init`] gives every interrupt.
const DEFAULT_PRIORITY: u8 = 0x80;

/// The GIC architecture the guest drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// GICv2: memory-mapped CPU interface, GICD_ITARGETSR routing, group 0.
    V2,
    /// GICv3: redistributors, system register CPU interface, affinity routing, group 1.
    V3,
}

/// Where each CPU's part of the GIC is, besides the distributor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuInterface {
    /// GICv3: the first redistributor (the CPU interface is the ICC_* system registers).
    Redistributors(usize),
    /// GICv2: the memory-mapped CPU interface (GICC), banked per CPU.
    Gicc(usize),
}

impl fmt::Display for CpuInterface {
    /// `redistributors 0x80a0000` (GICv3) or `cpu interface 0x8010000` (GICv2).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redistributors(gicr) => write!(f, "redistributors {gicr:#x}"),
            Self::Gicc(gicc) => write!(f, "cpu interface {gicc:#x}"),
        }
    }
}

/// Where the GIC is, which one it is and how many CPUs it serves.
#[derive(Clone, Copy, Debug)]
pub struct GicInfo {
    /// Distributor base.
    pub gicd: usize,
    /// Redistributors (GICv3) or CPU interface (GICv2) base; it also tells the version.
    pub cpu_interface: CpuInterface,
    /// CPUs in the DT.
    pub cpus: usize,
}

impl GicInfo {
    /// The GIC architecture version.
    pub fn version(&self) -> Version {
        match self.cpu_interface {
            CpuInterface::Redistributors(_) => Version::V3,
            CpuInterface::Gicc(_) => Version::V2,
        }
    }

    /// First redistributor base (GICv3 only).
    pub fn gicr(&self) -> Option<usize> {
        match self.cpu_interface {
            CpuInterface::Redistributors(gicr) => Some(gicr),
            CpuInterface::Gicc(_) => None,
        }
    }

    /// CPU interface base (GICv2 only).
    pub fn gicc(&self) -> Option<usize> {
        match self.cpu_interface {
            CpuInterface::Gicc(gicc) => Some(gicc),
            CpuInterface::Redistributors(_) => None,
        }
    }
}

/// The driver for the GIC found.
enum Driver {
    V2(V2),
    V3(GicV3<'static>),
}

/// A GICv2: the driver, and the bases for what it cannot do.
struct V2 {
    gic: GicV2<'static>,
    gicd: usize,
    gicc: usize,
}

impl V2 {
    /// Sets the priority byte of `id` (this CPU's bank for SGIs and PPIs) by a read-modify-write
    /// of its GICD_IPRIORITYR word. (arm-gic 0.10's `GicV2::set_interrupt_priority` writes the
    /// whole word, setting the other three INTIDs' priorities to 0.)
    fn set_priority(&mut self, id: u32, priority: u8) {
        self.set_byte(GICD_IPRIORITYR, id, priority);
    }

    /// Sets byte `id` of the byte-per-INTID distributor registers at `base` (GICD_IPRIORITYR,
    /// GICD_ITARGETSR) by a read-modify-write of its word.
    fn set_byte(&mut self, base: usize, id: u32, value: u8) {
        let offset = base + (id as usize & !3);
        let shift = 8 * (id % 4);
        // SAFETY: a distributor register of this GIC, device-mapped.
        let word = unsafe { crate::mmio_read32(self.gicd + offset) } & !(0xff << shift);
        gicd_write_at(self.gicd, offset, word | u32::from(value) << shift);
    }
}

struct Shared(Option<Driver>);
// SAFETY: the driver only holds MMIO pointers to the GIC, which every CPU may use; the lock
// serialises them.
unsafe impl Send for Shared {}

static GIC: IrqLock<Shared> = IrqLock::new(Shared(None));
static INFO: IrqLock<Option<GicInfo>> = IrqLock::new(None);
/// The version [`init`] found, for the IRQ path (which must not take the INFO lock): 0 before
/// [`init`] (then the GICv3 system registers are used, as before there was a choice), 2 or 3.
static VERSION: AtomicU8 = AtomicU8::new(0);

/// The start addresses of the first two `reg` regions of the first node compatible with one of
/// `compatible`: `None` if there is no such node, `Some(None)` if its `reg` has fewer regions.
fn two_regs(fdt: &fdt::Fdt, compatible: &[&str]) -> Option<Option<(usize, usize)>> {
    let node = fdt.find_compatible(compatible)?;
    let pair = (|| {
        let mut reg = node.reg()?;
        let first = reg.next()?.starting_address as usize;
        let second = reg.next()?.starting_address as usize;
        Some((first, second))
    })();
    Some(pair)
}

/// The GIC the DT describes: distributor base and CPU interface (redistributors for an
/// `arm,gic-v3` node, else GICC for an `arm,cortex-a15-gic` / `arm,gic-400` node). A node whose
/// `reg` cannot be read gets the platform's default addresses for its version; `None` if the DT
/// cannot be read or has neither node.
pub fn from_dt(dtb: usize) -> Option<(usize, CpuInterface)> {
    // SAFETY: the boot protocol passes a valid DTB address in x0; `from_ptr` checks the header.
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }.ok()?;
    if let Some(regs) = two_regs(&fdt, GICV3_COMPATIBLE) {
        let (gicd, gicr) = regs.unwrap_or((DEFAULT_GICD, DEFAULT_GICR));
        return Some((gicd, CpuInterface::Redistributors(gicr)));
    }
    let regs = two_regs(&fdt, GICV2_COMPATIBLE)?;
    let (gicd, gicc) = regs.unwrap_or((DEFAULT_GICD, DEFAULT_GICC));
    Some((gicd, CpuInterface::Gicc(gicc)))
}

/// Initialises the GIC the DT describes (a GICv3 with the platform's default addresses if it
/// describes none) from the boot CPU, and this CPU's interface (on, priority mask 0xff).
///
/// GICv3: distributor and every redistributor to defaults (group 1, priority 0x80, SPIs
/// level-triggered, all disabled). GICv2: every interrupt in group 0 (group 1 if the GIC has the
/// Security Extensions), SPIs and this CPU's SGIs/PPIs disabled with priority 0x80, SPIs
/// level-triggered; the distributor on. The other CPUs' banked SGIs/PPIs keep their reset state
/// (a GICv2 only lets each CPU reach its own).
pub fn init(dtb: usize) -> GicInfo {
    let (gicd, cpu_interface) =
        from_dt(dtb).unwrap_or((DEFAULT_GICD, CpuInterface::Redistributors(DEFAULT_GICR)));
    let info = GicInfo {
        gicd,
        cpu_interface,
        cpus: cpus_from_dt(dtb),
    };
    let driver = match cpu_interface {
        CpuInterface::Redistributors(gicr) => {
            // SAFETY: the addresses are the GIC's (from the DT), device-mapped by the boot
            // identity map; this is the only driver instance.
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
            Driver::V3(gic)
        }
        CpuInterface::Gicc(gicc) => {
            assert!(gicd != 0 && gicc != 0, "GICv2 addresses");
            // SAFETY: the addresses are the GIC's (from the DT), device-mapped by the boot
            // identity map; this is the only driver instance.
            let mut gic = unsafe { GicV2::new(gicd as *mut Gicv2d, gicc as *mut Gicc) };
            let limit = itlines_limit(gicd);
            // Defaults before the distributor forwards anything: disabled, priority 0x80, SPIs
            // level-triggered (ICFGR0, SGIs, is read-only; ICFGR1, PPIs, left as it is). Word 0
            // of ICENABLER and words 0..8 of IPRIORITYR are this CPU's bank.
            let priorities = u32::from_ne_bytes([DEFAULT_PRIORITY; 4]);
            for word in 0..limit.div_ceil(32) {
                gicd_write_at(gicd, GICD_ICENABLER + 4 * word, u32::MAX);
            }
            for word in 0..limit.div_ceil(4) {
                gicd_write_at(gicd, GICD_IPRIORITYR + 4 * word, priorities);
            }
            for word in 2..limit.div_ceil(16) {
                gicd_write_at(gicd, GICD_ICFGR + 4 * word, 0);
            }
            // Groups (all 0 without the Security Extensions), GICD_CTLR, then this CPU's
            // interface: GICC_CTLR = 1, GICC_PMR = 0xff.
            gic.setup();
            Driver::V2(V2 { gic, gicd, gicc })
        }
    };
    GIC.lock().0 = Some(driver);
    *INFO.lock() = Some(info);
    VERSION.store(
        match info.version() {
            Version::V2 => 2,
            Version::V3 => 3,
        },
        Ordering::SeqCst,
    );
    info
}

/// Brings up this (secondary) CPU's part of the GIC, after [`init`] on the boot CPU: on a GICv3 its
/// redistributor and system register CPU interface (group 1 on, priority mask 0xff); on a GICv2
/// its banked CPU interface (GICC_CTLR enable, GICC_PMR 0xff) and its banked GICD_IGROUPR0 (the
/// group [`init`] chose). Its SGI/PPI enables and priorities (banked on a GICv2: GICD_ISENABLER0,
/// GICD_IPRIORITYR0..7) are left as they are; [`enable`] on this CPU sets them.
pub fn init_cpu() {
    with(|driver| match driver {
        Driver::V3(gic) => {
            gic.init_cpu(cpu_id());
            GicCpuInterface::enable_group1(true);
            GicCpuInterface::set_priority_mask(0xff);
        }
        Driver::V2(v2) => {
            // As `GicV2::setup` set every word: group 1 with the Security Extensions (where a
            // non-secure write is ignored anyway), else group 0.
            let group = if v2.gic.typer().has_security_extension() {
                u32::MAX
            } else {
                0
            };
            gicd_write_at(v2.gicd, GICD_IGROUPR, group);
            v2.gic.set_priority_mask(0xff);
            // SAFETY: GICC_CTLR of this CPU's banked CPU interface (from the DT), device-mapped;
            // bit 0 enables the group the interrupts are in, as `GicV2::setup` does.
            unsafe { crate::mmio_write32(v2.gicc + GICC_CTLR, 1) };
        }
    });
}

/// Runs `f` with the driver (IRQs masked, lock held).
fn with<R>(f: impl FnOnce(&mut Driver) -> R) -> R {
    let mut guard = GIC.lock();
    f(guard.0.as_mut().expect("gic::init has not run"))
}

/// Runs `f` with the GICv2 driver (IRQs masked, lock held).
fn with_v2<R>(f: impl FnOnce(&mut V2) -> R) -> R {
    with(|driver| match driver {
        Driver::V2(v2) => f(v2),
        Driver::V3(_) => unreachable!("GICv2 access with a GICv3 driver"),
    })
}

/// What [`init`] found.
pub fn info() -> GicInfo {
    INFO.lock().expect("gic::init has not run")
}

/// The GIC version [`init`] found (GICv3 before [`init`], whose system registers the lock-free
/// paths then use, as before there was a choice). Reads no lock: the IRQ path uses it.
#[inline]
pub fn version() -> Version {
    match VERSION.load(Ordering::Relaxed) {
        2 => Version::V2,
        _ => Version::V3,
    }
}

/// Enables interrupt `id` with `priority` (SGIs and PPIs: this CPU's, on its redistributor on a
/// GICv3, in its bank of GICD_ISENABLER0 / GICD_IPRIORITYR on a GICv2).
pub fn enable(id: u32, priority: u8) {
    let cpu = Some(cpu_id());
    with(|driver| match driver {
        Driver::V3(gic) => gic
            .set_interrupt_priority(intid(id), cpu, priority)
            .and_then(|()| gic.enable_interrupt(intid(id), cpu, true))
            .expect("valid interrupt"),
        Driver::V2(v2) => {
            v2.set_priority(id, priority);
            v2.gic
                .enable_interrupt(intid(id), true)
                .expect("valid interrupt");
        }
    });
}

/// Disables interrupt `id` (SGIs and PPIs: this CPU's).
pub fn disable(id: u32) {
    let cpu = Some(cpu_id());
    with(|driver| match driver {
        Driver::V3(gic) => gic
            .enable_interrupt(intid(id), cpu, false)
            .expect("valid interrupt"),
        Driver::V2(v2) => v2
            .gic
            .enable_interrupt(intid(id), false)
            .expect("valid interrupt"),
    });
}

/// Configures SPI `id`: edge or level, priority, routed to CPU `cpu` (GICv3: GICD_IROUTER to MPIDR
/// Aff0 = `cpu`; GICv2: GICD_ITARGETSR to CPU interface `cpu` alone), and enables it.
pub fn enable_spi(id: u32, edge: bool, priority: u8, cpu: usize) {
    let trigger = if edge { Trigger::Edge } else { Trigger::Level };
    with(|driver| match driver {
        Driver::V3(gic) => {
            gic.set_trigger(intid(id), None, trigger)
                .expect("valid SPI");
            gic.set_interrupt_priority(intid(id), None, priority)
                .expect("valid SPI");
            gic.distributor()
                .set_routing(intid(id), Some(crate::smp::mpidr_of(cpu)))
                .expect("valid SPI");
            gic.enable_interrupt(intid(id), None, true)
                .expect("valid SPI");
        }
        Driver::V2(v2) => {
            assert!(id >= 32, "enable_spi({id}): not an SPI");
            assert!(
                cpu < 8,
                "enable_spi: a GICv2 has CPU interfaces 0..8, not {cpu}"
            );
            v2.gic.set_trigger(intid(id), trigger);
            v2.set_priority(id, priority);
            v2.set_byte(GICD_ITARGETSR, id, 1 << cpu);
            v2.gic.enable_interrupt(intid(id), true).expect("valid SPI");
        }
    });
}

/// Sets the priority of SPI `id`.
pub fn set_spi_priority(id: u32, priority: u8) {
    with(|driver| match driver {
        Driver::V3(gic) => gic
            .set_interrupt_priority(intid(id), None, priority)
            .expect("valid SPI"),
        Driver::V2(v2) => v2.set_priority(id, priority),
    });
}

/// Sends SGI `sgi` to the CPUs in `targets` (bit n: CPU n; GICv3: Aff0 = n, Aff1..3 = 0; GICv2:
/// CPU interface n, GICD_SGIR TargetListFilter 0b00, CPUs 0..8 only).
pub fn send_sgi(sgi: u32, targets: u16) {
    match version() {
        Version::V3 => GicCpuInterface::send_sgi(
            intid(sgi),
            SgiTarget::List {
                affinity3: 0,
                affinity2: 0,
                affinity1: 0,
                target_list: targets,
            },
            SgiTargetGroup::CurrentGroup1,
        )
        .expect("valid SGI"),
        Version::V2 => with_v2(|v2| {
            v2.gic.send_sgi(
                intid(sgi),
                gicv2::SgiTarget::List {
                    target_list_filter: SgiTargetListFilter::CPUTargetList,
                    target_list: targets,
                },
            )
        }),
    }
}

/// Sends SGI `sgi` to every CPU but this one (GICv3: ICC_SGI1R_EL1.IRM = 1; GICv2: GICD_SGIR
/// TargetListFilter 0b01).
pub fn send_sgi_to_others(sgi: u32) {
    match version() {
        Version::V3 => {
            GicCpuInterface::send_sgi(intid(sgi), SgiTarget::All, SgiTargetGroup::CurrentGroup1)
                .expect("valid SGI")
        }
        // Not `gicv2::SgiTarget::All`: arm-gic 0.10 sends that with TargetListFilter 0b00 and all
        // eight CPUs in the list, this one included.
        Version::V2 => with_v2(|v2| {
            v2.gic.send_sgi(
                intid(sgi),
                gicv2::SgiTarget::List {
                    target_list_filter: SgiTargetListFilter::ForwardOthersOnly,
                    target_list: 0,
                },
            )
        }),
    }
}

/// An interrupt this CPU acknowledged, to end with [`end_interrupt`].
#[derive(Clone, Copy, Debug)]
pub struct Acknowledged {
    /// What the acknowledge register read (GICC_IAR keeps the source CPU of an SGI in bits
    /// `[12:10]`), written back as is to end the interrupt.
    raw: IntId,
    /// The interrupt ID (GICv2: GICC_IAR bits `[9:0]`).
    intid: u32,
    version: Version,
}

impl Acknowledged {
    /// The interrupt ID (GICv2: GICC_IAR bits `[9:0]`).
    #[inline]
    pub fn intid(self) -> u32 {
        self.intid
    }

    /// GICv2: the CPU that sent this SGI (GICC_IAR.CPUID, bits `[12:10]`); 0 for anything else.
    pub fn source_cpu(self) -> usize {
        match self.version {
            Version::V3 => 0,
            Version::V2 => (u32::from(self.raw) >> 10 & 0x7) as usize,
        }
    }
}

/// Acknowledges the highest priority interrupt signalled to this CPU (GICv3: ICC_IAR1_EL1; GICv2:
/// GICC_IAR, group 0, through the driver under the lock); `None` if there is none (spurious, 1023).
#[inline]
pub fn acknowledge() -> Option<Acknowledged> {
    match version() {
        Version::V3 => {
            GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1).map(|raw| {
                Acknowledged {
                    raw,
                    intid: u32::from(raw),
                    version: Version::V3,
                }
            })
        }
        Version::V2 => with_v2(|v2| v2.gic.get_and_acknowledge_interrupt(InterruptGroup::Group0))
            .map(|raw| Acknowledged {
                raw,
                intid: u32::from(raw) & GICC_IAR_INTID,
                version: Version::V2,
            }),
    }
}

/// Ends (drops the running priority and deactivates) an interrupt [`acknowledge`] returned (GICv3:
/// ICC_EOIR1_EL1; GICv2: GICC_EOIR, with the whole value GICC_IAR read).
#[inline]
pub fn end_interrupt(ack: Acknowledged) {
    match ack.version {
        Version::V3 => GicCpuInterface::end_interrupt(ack.raw, InterruptGroup::Group1),
        Version::V2 => with_v2(|v2| v2.gic.end_interrupt(ack.raw, InterruptGroup::Group0)),
    }
}

/// Reads distributor register `offset` (32 bits).
pub fn gicd_read(offset: usize) -> u32 {
    // SAFETY: a distributor register, device-mapped; reads have no side effects we rely on.
    unsafe { crate::mmio_read32(info().gicd + offset) }
}

/// Writes distributor register `offset` (32 bits).
pub fn gicd_write(offset: usize, value: u32) {
    gicd_write_at(info().gicd, offset, value);
}

/// Writes register `offset` of the distributor at `gicd`.
fn gicd_write_at(gicd: usize, offset: usize, value: u32) {
    // SAFETY: a distributor register, device-mapped; the caller chose what the write does.
    unsafe { crate::mmio_write32(gicd + offset, value) }
}

/// INTIDs the distributor at `gicd` implements (32 * (GICD_TYPER.ITLinesNumber + 1), at most 1020).
fn itlines_limit(gicd: usize) -> usize {
    // SAFETY: GICD_TYPER of the distributor at `gicd`, device-mapped; reading it is harmless.
    let typer = unsafe { crate::mmio_read32(gicd + GICD_TYPER) };
    (32 * ((typer as usize & 0x1f) + 1)).min(1020)
}

/// Number of INTIDs the distributor implements (32 * (GICD_TYPER.ITLinesNumber + 1), at most 1020).
pub fn intid_limit() -> u32 {
    itlines_limit(info().gicd) as u32
}
