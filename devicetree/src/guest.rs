//! The instance platform every guest sees (mirroring QEMU virt) and its DTB writer.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use vm_fdt::FdtWriter;

use crate::{DtError, MemRange};

/// Guest RAM base.
pub const RAM_BASE: u64 = 0x4000_0000;
/// GIC distributor base.
pub const GICD_BASE: u64 = 0x0800_0000;
/// GIC distributor size.
pub const GICD_SIZE: u64 = 0x1_0000;
/// GICv3 redistributor region base.
pub const GICR_BASE: u64 = 0x080A_0000;
/// GICv3 redistributor size per vCPU (RD + SGI frames).
pub const GICR_STRIDE: u64 = 0x2_0000;
/// GICv2 CPU interface base.
pub const GICC_BASE: u64 = 0x0801_0000;
/// GICv2 CPU interface size (two 4 KiB pages, GICC_DIR in the second).
pub const GICC_SIZE: u64 = 0x2000;
/// Virtual PL011 base.
pub const UART_BASE: u64 = 0x0900_0000;
/// Virtual PL011 size.
pub const UART_SIZE: u64 = 0x1000;
/// Virtual PL011 SPI number (INTID 32 + 1).
pub const UART_SPI: u32 = 1;
/// First virtio-mmio transport.
pub const VIRTIO_MMIO_BASE: u64 = 0x0a00_0000;
/// Distance between virtio-mmio transports.
pub const VIRTIO_MMIO_STRIDE: u64 = 0x200;
/// SPI number of transport 0 (transport n uses SPI 16 + n).
pub const VIRTIO_SPI_BASE: u32 = 16;
/// Most virtio-mmio transports (as on QEMU virt).
pub const MAX_VIRTIO_TRANSPORTS: u32 = 32;
/// Secure physical timer PPI.
pub const TIMER_SECURE_PHYS_PPI: u32 = 13;
/// Non-secure physical timer PPI.
pub const TIMER_PHYS_PPI: u32 = 14;
/// Virtual timer PPI.
pub const TIMER_VIRT_PPI: u32 = 11;
/// Hypervisor timer PPI.
pub const TIMER_HYP_PPI: u32 = 10;
/// GIC maintenance interrupt PPI.
pub const MAINTENANCE_PPI: u32 = 9;
/// Most vCPUs with a GICv2 shape.
pub const MAX_GICV2_VCPUS: usize = 8;
/// Most vCPUs whose redistributors fit between GICR_BASE and UART_BASE.
pub const MAX_GICV3_VCPUS: usize = ((UART_BASE - GICR_BASE) / GICR_STRIDE) as usize;

const GIC_PHANDLE: u32 = 1;
const CLOCK_PHANDLE: u32 = 2;
const SPI: u32 = 0;
const PPI: u32 = 1;
const EDGE_RISING: u32 = 1;
const LEVEL_HIGH: u32 = 4;
const UART_CLOCK_HZ: u32 = 24_000_000;

/// Which GIC shape the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestGic {
    /// GICv3: GICD + one redistributor region.
    V3,
    /// GICv2: GICD + GICC.
    V2,
}

/// One instance's platform, from which its DTB is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestPlatform {
    /// Instance name, written as the root `model`.
    pub name: String,
    /// RAM size in bytes, mapped at [`RAM_BASE`].
    pub ram_size: u64,
    /// One MPIDR per vCPU, boot vCPU first.
    pub vcpu_mpidrs: Vec<u64>,
    /// GIC shape.
    pub gic: GuestGic,
    /// Kernel command line.
    pub bootargs: String,
    /// Guest-physical initrd range, inside RAM.
    pub initrd: Option<MemRange>,
    /// Number of virtio-mmio transports to describe.
    pub virtio_transports: u32,
}

impl GuestPlatform {
    fn validate(&self) -> Result<(), DtError> {
        let invalid = |why| Err(DtError::InvalidGuest(why));
        let vcpus = self.vcpu_mpidrs.len();
        let ram = MemRange::new(RAM_BASE, self.ram_size);
        if vcpus == 0 {
            return invalid("no vCPUs");
        }
        if self.gic == GuestGic::V2 && vcpus > MAX_GICV2_VCPUS {
            return invalid("GICv2 supports at most 8 vCPUs");
        }
        if self.gic == GuestGic::V3 && vcpus > MAX_GICV3_VCPUS {
            return invalid("too many vCPUs for the GICv3 redistributor region");
        }
        let mut sorted = self.vcpu_mpidrs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != vcpus {
            return invalid("duplicate vCPU MPIDR");
        }
        if self.ram_size == 0 || RAM_BASE.checked_add(self.ram_size).is_none() {
            return invalid("bad RAM size");
        }
        if self.virtio_transports > MAX_VIRTIO_TRANSPORTS {
            return invalid("too many virtio-mmio transports");
        }
        if let Some(initrd) = self.initrd
            && (initrd.base < ram.base
                || initrd
                    .base
                    .checked_add(initrd.size)
                    .is_none_or(|e| e > ram.end()))
        {
            return invalid("initrd outside guest RAM");
        }
        Ok(())
    }

    /// Flags cell of a PPI: level-high, plus the CPU mask on GICv2 (as QEMU writes it).
    fn ppi_flags(&self) -> u32 {
        match self.gic {
            GuestGic::V3 => LEVEL_HIGH,
            GuestGic::V2 => (((1 << self.vcpu_mpidrs.len()) - 1) << 8) | LEVEL_HIGH,
        }
    }
}

/// Writes the guest's DTB for `platform`.
pub fn write_guest_dtb(platform: &GuestPlatform) -> Result<Vec<u8>, DtError> {
    platform.validate()?;
    let mut w = FdtWriter::new()?;
    let root = w.begin_node("")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_string("compatible", "linux,dummy-virt")?;
    w.property_string("model", &platform.name)?;
    w.property_u32("interrupt-parent", GIC_PHANDLE)?;

    let node = w.begin_node(&format!("memory@{RAM_BASE:x}"))?;
    w.property_string("device_type", "memory")?;
    w.property_array_u64("reg", &[RAM_BASE, platform.ram_size])?;
    w.end_node(node)?;

    write_cpus(&mut w, &platform.vcpu_mpidrs)?;

    let node = w.begin_node("psci")?;
    w.property_string_list("compatible", strings(&["arm,psci-1.0", "arm,psci-0.2"]))?;
    w.property_string("method", "hvc")?;
    w.end_node(node)?;

    let flags = platform.ppi_flags();
    let node = w.begin_node("timer")?;
    w.property_string_list(
        "compatible",
        strings(&["arm,armv8-timer", "arm,armv7-timer"]),
    )?;
    let ppis = [
        TIMER_SECURE_PHYS_PPI,
        TIMER_PHYS_PPI,
        TIMER_VIRT_PPI,
        TIMER_HYP_PPI,
    ];
    w.property_array_u32("interrupts", &ppis.map(|ppi| [PPI, ppi, flags]).concat())?;
    w.property_null("always-on")?;
    w.end_node(node)?;

    write_gic(&mut w, platform)?;

    let node = w.begin_node("apb-pclk")?;
    w.property_string("compatible", "fixed-clock")?;
    w.property_u32("#clock-cells", 0)?;
    w.property_u32("clock-frequency", UART_CLOCK_HZ)?;
    w.property_string("clock-output-names", "clk24mhz")?;
    w.property_phandle(CLOCK_PHANDLE)?;
    w.end_node(node)?;

    let uart_path = format!("/pl011@{UART_BASE:x}");
    let node = w.begin_node(&uart_path[1..])?;
    w.property_string_list("compatible", strings(&["arm,pl011", "arm,primecell"]))?;
    w.property_array_u64("reg", &[UART_BASE, UART_SIZE])?;
    w.property_array_u32("interrupts", &[SPI, UART_SPI, LEVEL_HIGH])?;
    w.property_array_u32("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE])?;
    w.property_string_list("clock-names", strings(&["uartclk", "apb_pclk"]))?;
    w.end_node(node)?;

    for n in 0..platform.virtio_transports {
        let base = VIRTIO_MMIO_BASE + u64::from(n) * VIRTIO_MMIO_STRIDE;
        let node = w.begin_node(&format!("virtio_mmio@{base:x}"))?;
        w.property_string("compatible", "virtio,mmio")?;
        w.property_array_u64("reg", &[base, VIRTIO_MMIO_STRIDE])?;
        w.property_array_u32("interrupts", &[SPI, VIRTIO_SPI_BASE + n, EDGE_RISING])?;
        w.property_null("dma-coherent")?;
        w.end_node(node)?;
    }

    let node = w.begin_node("chosen")?;
    w.property_string("bootargs", &platform.bootargs)?;
    w.property_string("stdout-path", &uart_path)?;
    if let Some(initrd) = platform.initrd {
        w.property_u64("linux,initrd-start", initrd.base)?;
        w.property_u64("linux,initrd-end", initrd.end())?;
    }
    w.end_node(node)?;

    let node = w.begin_node("aliases")?;
    w.property_string("serial0", &uart_path)?;
    w.end_node(node)?;

    w.end_node(root)?;
    Ok(w.finish()?)
}

fn write_cpus(w: &mut FdtWriter, mpidrs: &[u64]) -> Result<(), DtError> {
    let wide = mpidrs.iter().any(|&m| m > u64::from(u32::MAX));
    let node = w.begin_node("cpus")?;
    w.property_u32("#address-cells", if wide { 2 } else { 1 })?;
    w.property_u32("#size-cells", 0)?;
    for &mpidr in mpidrs {
        let cpu = w.begin_node(&format!("cpu@{mpidr:x}"))?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,armv8")?;
        if wide {
            w.property_u64("reg", mpidr)?;
        } else {
            w.property_u32("reg", mpidr as u32)?;
        }
        w.property_string("enable-method", "psci")?;
        w.end_node(cpu)?;
    }
    w.end_node(node)?;
    Ok(())
}

fn write_gic(w: &mut FdtWriter, platform: &GuestPlatform) -> Result<(), DtError> {
    let node = w.begin_node(&format!("intc@{GICD_BASE:x}"))?;
    match platform.gic {
        GuestGic::V3 => {
            let gicr_size = GICR_STRIDE * platform.vcpu_mpidrs.len() as u64;
            w.property_string("compatible", "arm,gic-v3")?;
            w.property_u32("#redistributor-regions", 1)?;
            w.property_array_u64("reg", &[GICD_BASE, GICD_SIZE, GICR_BASE, gicr_size])?;
            // QEMU writes the maintenance PPI level-high without a CPU mask, even on GICv2.
            w.property_array_u32("interrupts", &[PPI, MAINTENANCE_PPI, LEVEL_HIGH])?;
        }
        GuestGic::V2 => {
            w.property_string("compatible", "arm,cortex-a15-gic")?;
            w.property_array_u64("reg", &[GICD_BASE, GICD_SIZE, GICC_BASE, GICC_SIZE])?;
        }
    }
    w.property_u32("#interrupt-cells", 3)?;
    // No children and no interrupt-map users: dtc wants interrupt providers to say so.
    w.property_u32("#address-cells", 0)?;
    w.property_null("interrupt-controller")?;
    w.property_phandle(GIC_PHANDLE)?;
    w.end_node(node)?;
    Ok(())
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}
