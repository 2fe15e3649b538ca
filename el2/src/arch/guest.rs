//! Building a guest instance in board memory and running its vCPU on this CPU.

use alloc::string::String;
use alloc::vec;
use core::alloc::Layout;

use devicetree::guest::{GuestGic, GuestPlatform, RAM_BASE};
use log::info;

use crate::arch::{console, sysregs, tlb::Stage2Tlb, vectors};
use crate::image::{ImageHeader, plan_layout};
use crate::instance::{Instance, Next, StopReason};
use crate::memory::PhysAllocator;

const PAGE: usize = 4096;
const SZ_2M: u64 = 2 << 20;

/// Stage-2 table pages come from the heap, which the EL2 identity map makes physical addresses.
struct HeapFrames;

// SAFETY: pages come zeroed from the global allocator with the requested size and alignment,
// belong to the caller until freed, and are identity-mapped, so `table_ptr(pa)` is `pa`.
unsafe impl stage2::FrameAllocator for HeapFrames {
    fn alloc_zeroed(&mut self, pages: usize) -> Option<u64> {
        let layout = Layout::from_size_align(pages * PAGE, pages * PAGE).ok()?;
        // SAFETY: the layout has a non-zero size.
        let pointer = unsafe { alloc::alloc::alloc_zeroed(layout) };
        (!pointer.is_null()).then_some(pointer as u64)
    }

    fn free(&mut self, pa: u64, pages: usize) {
        let layout =
            Layout::from_size_align(pages * PAGE, pages * PAGE).expect("valid when allocated");
        // SAFETY: `pa` came from alloc_zeroed above with this same layout (the stage2 crate frees
        // exactly what it allocated), and the heap is identity-mapped.
        unsafe { alloc::alloc::dealloc(pa as *mut u8, layout) };
    }

    fn table_ptr(&self, pa: u64) -> *mut u64 {
        pa as *mut u64
    }
}

/// Why an instance could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// The kernel image is not bootable.
    Image(crate::image::ImageError),
    /// Not enough board memory for the instance's RAM.
    NoMemory(u64),
    /// Stage-2 tables could not be built.
    Stage2(stage2::Stage2Error),
    /// The guest device tree could not be written.
    DeviceTree(devicetree::DtError),
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Image(error) => write!(f, "guest image: {error}"),
            Self::NoMemory(size) => {
                write!(f, "no {size:#x} bytes of board memory left for guest RAM")
            }
            Self::Stage2(error) => write!(f, "stage-2 tables: {error:?}"),
            Self::DeviceTree(error) => write!(f, "guest device tree: {error}"),
        }
    }
}

/// What an instance is made from.
pub struct InstanceConfig<'a> {
    /// The instance's name.
    pub name: String,
    /// Guest RAM in bytes (a multiple of 2 MiB).
    pub ram_size: u64,
    /// The kernel, an arm64 Image.
    pub kernel: &'a [u8],
    /// The guest's kernel command line.
    pub bootargs: String,
    /// VMID of the instance's stage-2 context.
    pub vmid: u16,
}

/// A built instance: its exit-handling state plus the memory and stage-2 tables behind it.
pub struct Vm<'a> {
    config: InstanceConfig<'a>,
    instance: Instance,
    ram: u64,
    stage2: stage2::Stage2Table<HeapFrames, Stage2Tlb>,
}

fn copy_to_guest(ram: u64, ipa: u64, bytes: &[u8]) {
    let destination = (ram + (ipa - RAM_BASE)) as *mut u8;
    // SAFETY: the layout placed `bytes` inside the instance's RAM, which this Vm owns and which
    // the EL2 identity map covers as normal memory; the source is hypervisor memory elsewhere.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), destination, bytes.len()) };
    clean_to_poc(destination as u64, bytes.len() as u64);
}

/// Cleans a range to the point of coherency, so a guest starting with its MMU and caches off
/// sees what the hypervisor wrote through its cacheable mapping.
fn clean_to_poc(start: u64, len: u64) {
    const LINE: u64 = 64;
    let mut line = start & !(LINE - 1);
    while line < start + len {
        // SAFETY: cache maintenance by address on memory the hypervisor maps; no data changes.
        unsafe { core::arch::asm!("dc cvac, {line}", line = in(reg) line, options(nostack)) };
        line += LINE;
    }
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
}

impl<'a> Vm<'a> {
    /// Allocates RAM, maps it at stage 2, writes the guest's device tree and loads the kernel.
    pub fn build(
        config: InstanceConfig<'a>,
        phys: &mut PhysAllocator,
        stage2_config: stage2::Stage2Config,
    ) -> Result<Self, BuildError> {
        // Refuse a broken image before taking any memory for it.
        ImageHeader::parse(config.kernel).map_err(BuildError::Image)?;
        let ram = phys
            .allocate(config.ram_size, SZ_2M)
            .ok_or(BuildError::NoMemory(config.ram_size))?;
        let mut stage2 =
            stage2::Stage2Table::new(stage2_config, config.vmid, HeapFrames, Stage2Tlb)
                .map_err(BuildError::Stage2)?;
        stage2
            .map(
                RAM_BASE,
                ram,
                config.ram_size,
                stage2::MemoryKind::Normal,
                stage2::Perms::RWX,
            )
            .map_err(BuildError::Stage2)?;
        let mut vm = Self {
            instance: Instance::new(&config.name, config.ram_size, 0, 0, console::guest_line),
            config,
            ram,
            stage2,
        };
        vm.load()?;
        Ok(vm)
    }

    /// Puts a fresh copy of kernel and device tree into zeroed RAM and resets the vCPU: the
    /// state at first boot and after SYSTEM_RESET.
    fn load(&mut self) -> Result<(), BuildError> {
        let config = &self.config;
        let platform = GuestPlatform {
            name: config.name.clone(),
            ram_size: config.ram_size,
            vcpu_mpidrs: vec![0],
            gic: GuestGic::V3,
            bootargs: config.bootargs.clone(),
            initrd: None,
            virtio_transports: 0,
        };
        let dtb = devicetree::guest::write_guest_dtb(&platform).map_err(BuildError::DeviceTree)?;
        let header = ImageHeader::parse(config.kernel).map_err(BuildError::Image)?;
        let layout = plan_layout(&header, RAM_BASE, config.ram_size, None, dtb.len() as u64)
            .map_err(BuildError::Image)?;
        // SAFETY: the instance's RAM is ours alone and identity-mapped; zeroing it keeps no trace
        // of whatever the memory held before.
        unsafe { core::ptr::write_bytes(self.ram as *mut u8, 0, config.ram_size as usize) };
        copy_to_guest(self.ram, layout.kernel, config.kernel);
        copy_to_guest(self.ram, layout.dtb, &dtb);
        self.instance = Instance::new(
            &config.name,
            config.ram_size,
            layout.kernel,
            layout.dtb,
            console::guest_line,
        );
        info!(
            "{}: {} MiB RAM at IPA {RAM_BASE:#x} (PA {:#x}), kernel at {:#x}, device tree at {:#x}",
            config.name,
            config.ram_size >> 20,
            self.ram,
            layout.kernel,
            layout.dtb
        );
        Ok(())
    }

    /// Runs the instance's vCPU on this CPU until the instance stops.
    pub fn run(&mut self) -> StopReason {
        loop {
            sysregs::load_stage2_and_identity(self.stage2.vttbr(), self.instance.vcpu.mpidr);
            sysregs::load_el1(&self.instance.vcpu.el1);
            let next = loop {
                let kind = vectors::run(&mut self.instance.vcpu.regs);
                let syndrome = sysregs::trap_syndrome();
                match self
                    .instance
                    .handle_exit(kind, &syndrome, &mut sysregs::LiveEl1)
                {
                    Next::Resume => continue,
                    other => break other,
                }
            };
            self.instance.vcpu.el1 = sysregs::save_el1();
            self.instance.flush_console();
            match next {
                Next::Stop(reason) => return reason,
                Next::Reset => {
                    info!("{}: SYSTEM_RESET: reloading the instance", self.config.name);
                    if let Err(error) = self.load() {
                        return StopReason::Fault(alloc::format!("reset failed: {error}"));
                    }
                }
                Next::Resume => unreachable!("the inner loop only breaks on Stop or Reset"),
            }
        }
    }
}

/// A boot module (the initrd the loader placed) as bytes, in place.
///
/// # Safety
/// `[start, start + size)` must be RAM covered by the identity map and reserved from the
/// physical allocator for good, so that nothing ever writes it.
pub unsafe fn boot_module(start: u64, size: u64) -> &'static [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { core::slice::from_raw_parts(start as *const u8, size as usize) }
}
