//! Building a guest instance in board memory, and running its vCPUs: vCPU n on physical CPU n.

use alloc::string::String;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::sync::atomic::{AtomicBool, Ordering};

use aarch64_cpu::registers::CNTV_CTL_EL0;
use devicetree::MemRange;
use devicetree::guest::{GuestGic, GuestPlatform, RAM_BASE};
use log::info;
use spin::Mutex;
use tock_registers::interfaces::Writeable;

use crate::arch::{clean_to_poc, console, gic, sysregs, tlb::Stage2Tlb, vectors};
use crate::exit::ExitKind;
use crate::image::{BootLayout, ImageHeader, plan_layout};
use crate::instance::{BoardServices, Instance, Next, StopReason, Vcpu, VcpuStatus};
use crate::memory::{GuestRam, OutsideRam, PhysAllocator};

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
    /// More vCPUs than physical CPUs to pin them to.
    TooManyVcpus { vcpus: usize, cpus: usize },
    /// Stage-2 tables could not be built.
    Stage2(stage2::Stage2Error),
    /// The guest device tree could not be written.
    DeviceTree(devicetree::DtError),
    /// A copy into guest RAM was refused (a layout bug caught by the bounds check).
    OutsideRam(OutsideRam),
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Image(error) => write!(f, "guest image: {error}"),
            Self::NoMemory(size) => {
                write!(f, "no {size:#x} bytes of board memory left for guest RAM")
            }
            Self::TooManyVcpus { vcpus, cpus } => {
                write!(
                    f,
                    "{vcpus} vCPUs asked for, but the board has {cpus} CPUs to pin them to"
                )
            }
            Self::Stage2(error) => write!(f, "stage-2 tables: {error}"),
            Self::DeviceTree(error) => write!(f, "guest device tree: {error}"),
            Self::OutsideRam(error) => write!(f, "loading the guest: {error}"),
        }
    }
}

/// What an instance is made from.
pub struct InstanceConfig {
    /// The instance's name.
    pub name: String,
    /// Guest RAM in bytes (a multiple of 2 MiB).
    pub ram_size: u64,
    /// Number of vCPUs.
    pub vcpus: usize,
    /// The kernel, an arm64 Image.
    pub kernel: &'static [u8],
    /// The initramfs, if any.
    pub ramdisk: Option<&'static [u8]>,
    /// The guest's kernel command line.
    pub bootargs: String,
    /// VMID of the instance's stage-2 context.
    pub vmid: u16,
}

/// A built instance: its exit-handling state plus the memory and stage-2 tables behind it.
pub struct Vm {
    config: InstanceConfig,
    /// The exit-handling state the instance's vCPUs share.
    pub instance: Instance,
    ram: GuestRam,
    vttbr: u64,
    console_intid: Option<u32>,
    /// Console input waits in the board UART until the guest's UART has room.
    input_paused: AtomicBool,
    /// Per CPU: the list registers as last filled, and the vGIC epoch they were filled at.
    loaded: Vec<Mutex<LoadedInterrupts>>,
    /// Kept for the instance's lifetime: the tables the hardware walks (and, later, dirty tracking).
    _stage2: Mutex<stage2::Stage2Table<HeapFrames, Stage2Tlb>>,
}

/// Copies `bytes` into the instance's RAM at `ipa` (refused outside it) and cleans them to the
/// point of coherency, so the guest sees them with its MMU and caches off.
fn copy_to_guest(ram: &GuestRam, ipa: u64, bytes: &[u8]) -> Result<(), BuildError> {
    let host = ram.write(ipa, bytes).map_err(BuildError::OutsideRam)?;
    clean_to_poc(host, bytes.len() as u64);
    Ok(())
}

/// The list registers as a CPU last filled them, and the vGIC epoch they reflect.
#[derive(Default)]
struct LoadedInterrupts {
    lrs: [u64; gic::LIST_REGISTERS],
    epoch: u64,
    /// False until filled (and after the vCPU left).
    valid: bool,
}

impl LoadedInterrupts {
    /// True if `lrs` are as filled and the vGIC is still at `epoch`. Compared register by
    /// register: array equality would call `memcmp` on this path.
    fn is_current(&self, lrs: &[u64; gic::LIST_REGISTERS], epoch: u64) -> bool {
        self.valid && self.epoch == epoch && self.lrs.iter().zip(lrs).all(|(a, b)| a == b)
    }
}

/// The vCPU-pinning kick: vCPU n runs on physical CPU n.
fn kick_vcpu(vcpu: usize) {
    gic::kick(vcpu);
}

impl Vm {
    /// Allocates RAM and maps it at stage 2; `cpus` physical CPUs are there to pin vCPUs to, and
    /// `console_intid` is the board UART's interrupt (its input goes to this instance).
    pub fn build(
        config: InstanceConfig,
        phys: &mut PhysAllocator,
        stage2_config: stage2::Stage2Config,
        cpus: usize,
        console_intid: Option<u32>,
    ) -> Result<Self, BuildError> {
        // Refuse a broken image before taking any memory for it.
        ImageHeader::parse(config.kernel).map_err(BuildError::Image)?;
        if config.vcpus == 0 || config.vcpus > cpus {
            return Err(BuildError::TooManyVcpus {
                vcpus: config.vcpus,
                cpus,
            });
        }
        let ram_pa = phys
            .allocate(config.ram_size, SZ_2M)
            .ok_or(BuildError::NoMemory(config.ram_size))?;
        let mut stage2 =
            stage2::Stage2Table::new(stage2_config, config.vmid, HeapFrames, Stage2Tlb)
                .map_err(BuildError::Stage2)?;
        stage2
            .map(
                RAM_BASE,
                ram_pa,
                config.ram_size,
                stage2::MemoryKind::Normal,
                stage2::Perms::RWX,
            )
            .map_err(BuildError::Stage2)?;
        let affinities: Vec<u64> = (0..config.vcpus as u64).collect();
        // SAFETY: the range was just taken from the physical allocator for this instance alone,
        // and the EL2 identity map covers board RAM as normal memory.
        let ram = unsafe { GuestRam::new(RAM_BASE, config.ram_size, ram_pa as *mut u8) };
        Ok(Self {
            instance: Instance::new(
                &config.name,
                config.ram_size,
                &affinities,
                BoardServices {
                    console: console::guest_line,
                    kick: kick_vcpu,
                    counter_hz: sysregs::counter_frequency(),
                    id_registers: sysregs::guest_id_registers(),
                },
            ),
            config,
            ram,
            vttbr: stage2.vttbr(),
            console_intid,
            input_paused: AtomicBool::new(false),
            loaded: (0..cpus)
                .map(|_| Mutex::new(LoadedInterrupts::default()))
                .collect(),
            _stage2: Mutex::new(stage2),
        })
    }

    /// Puts fresh copies of kernel, initramfs and device tree into zeroed RAM and powers on
    /// vCPU 0: the state at first boot and after SYSTEM_RESET.
    pub fn boot(&self) -> Result<(), BuildError> {
        let config = &self.config;
        let header = ImageHeader::parse(config.kernel).map_err(BuildError::Image)?;
        let ramdisk_size = config.ramdisk.map(|ramdisk| ramdisk.len() as u64);
        // The device tree's size depends on the initrd's place, which depends on the device
        // tree's size only through the 2 MiB limit: lay out once with the limit.
        let ram = self.ram.ipa_range();
        let probe = plan_layout(&header, ram, ramdisk_size, 0).map_err(BuildError::Image)?;
        let platform = GuestPlatform {
            name: config.name.clone(),
            ram_size: config.ram_size,
            vcpu_mpidrs: (0..config.vcpus as u64).collect(),
            gic: GuestGic::V3,
            bootargs: config.bootargs.clone(),
            initrd: probe
                .initrd
                .map(|initrd| MemRange::new(initrd.start, initrd.size)),
            virtio_transports: 0,
        };
        let dtb = devicetree::guest::write_guest_dtb(&platform).map_err(BuildError::DeviceTree)?;
        let layout: BootLayout =
            plan_layout(&header, ram, ramdisk_size, dtb.len() as u64).map_err(BuildError::Image)?;
        // The instance's RAM is its own and no vCPU of it runs: zeroing it keeps no trace of
        // what the memory held before.
        self.ram.zero();
        copy_to_guest(&self.ram, layout.kernel.start, config.kernel)?;
        if let (Some(ramdisk), Some(initrd)) = (config.ramdisk, layout.initrd) {
            copy_to_guest(&self.ram, initrd.start, ramdisk)?;
        }
        copy_to_guest(&self.ram, layout.dtb.start, &dtb)?;
        info!(
            "{}: {} vCPUs, {} MiB RAM at IPA {RAM_BASE:#x}, kernel at {:#x}, initrd {}, device tree at {:#x}",
            config.name,
            config.vcpus,
            config.ram_size >> 20,
            layout.entry(),
            layout
                .initrd
                .map_or(String::from("none"), |initrd| alloc::format!(
                    "at {:#x}",
                    initrd.start
                )),
            layout.dtb.start
        );
        self.instance.boot(layout.entry(), layout.dtb.start);
        Ok(())
    }

    /// Runs vCPU `cpu` on physical CPU `cpu` until the instance ends.
    pub fn run_cpu(&self, cpu: usize) -> StopReason {
        let Some(mut vcpu) = self.instance.vcpus().into_iter().nth(cpu) else {
            // More physical CPUs than vCPUs: nothing to run here.
            loop {
                aarch64_cpu::asm::wfi();
            }
        };
        loop {
            match self.instance.poll(cpu) {
                VcpuStatus::Ended(reason) => return reason,
                VcpuStatus::Off => self.wait_for_interrupt(cpu),
                VcpuStatus::Start { entry, context_id } => {
                    vcpu.power_on(entry, context_id);
                    let next = self.run_vcpu(&mut vcpu);
                    self.instance.left(cpu);
                    if next == Next::Reset {
                        self.reset(cpu);
                    }
                }
            }
        }
    }

    fn reset(&self, cpu: usize) {
        while !self.instance.others_out(cpu) {
            self.wait_for_interrupt(cpu);
        }
        info!("{}: SYSTEM_RESET: reloading the instance", self.config.name);
        if let Err(error) = self.boot() {
            log::error!("{}: reset failed: {error}", self.config.name);
        }
    }

    /// Sleeps until a physical interrupt arrives, then handles what arrived.
    fn wait_for_interrupt(&self, cpu: usize) {
        aarch64_cpu::asm::wfi();
        self.take_interrupts(cpu);
    }

    /// Acknowledges and handles every pending physical interrupt on this CPU.
    fn take_interrupts(&self, cpu: usize) {
        while let Some(intid) = gic::acknowledge() {
            gic::priority_drop(intid);
            match intid {
                // Left active: the guest's deactivation of the HW-mapped virtual interrupt
                // deactivates it.
                gic::VTIMER_INTID => {
                    self.instance
                        .timer_fired(cpu, gic::VTIMER_INTID, gic::VTIMER_INTID)
                }
                intid if Some(intid) == self.console_intid => {
                    let mut input = [0u8; 32];
                    let count = console::read_input(&mut input);

                    self.instance.console_input(&input[..count]);
                    gic::deactivate(intid);
                }
                // The maintenance interrupt stays asserted until the list registers change:
                // fold them into the vGIC and refill them now.
                gic::MAINTENANCE_INTID => {
                    self.sync_interrupts(cpu);
                    self.load_interrupts(cpu);
                    gic::deactivate(intid);
                }
                // The emulated physical timer's deadline passed.
                gic::DEADLINE_TIMER_INTID => {
                    sysregs::mask_deadline_timer();
                    self.instance.phys_timer_fired(cpu);
                    gic::deactivate(intid);
                }
                // A kick only makes the run loop look at the vCPU again.
                _ => gic::deactivate(intid),
            }
        }
    }

    /// Fills the list registers with the vCPU's most urgent interrupts, unless they are still
    /// exactly as last filled and the vGIC has not changed since. The vGIC folds in the current
    /// contents first if it has not seen them since its last fill (after a refill on a
    /// maintenance interrupt, say), so they must be the live values, never blanks.
    fn load_interrupts(&self, cpu: usize) {
        let mut loaded = self.loaded[cpu].lock();
        let mut lrs = gic::read_lrs();
        let epoch = self.instance.interrupt_epoch();
        if loaded.is_current(&lrs, epoch) {
            return;
        }
        let refill = self.instance.flush_interrupts(cpu, &mut lrs);
        gic::write_lrs(&lrs, refill);
        *loaded = LoadedInterrupts {
            lrs,
            epoch,
            valid: true,
        };
    }

    /// Folds the list registers into the vGIC after an exit, if the guest changed them.
    fn sync_interrupts(&self, cpu: usize) {
        let lrs = gic::read_lrs();
        let unchanged = {
            let loaded = self.loaded[cpu].lock();
            loaded.is_current(&lrs, loaded.epoch)
        };
        if !unchanged {
            self.instance.sync_interrupts(cpu, &lrs);
        }
    }

    /// Blocks the vCPU on `cpu` (WFI, CPU_SUSPEND) until an interrupt is pending for it; false
    /// if it was turned off meanwhile.
    fn block_until_pending(&self, cpu: usize) -> bool {
        // An idle guest may be waiting for input after a prompt: show the prompt.
        self.instance.flush_console();
        while !self.instance.has_pending(cpu) && self.instance.is_on(cpu) {
            self.wait_for_interrupt(cpu);
        }
        self.instance.is_on(cpu)
    }

    fn run_vcpu(&self, vcpu: &mut Vcpu) -> Next {
        let cpu = vcpu.index;
        sysregs::load_stage2_and_identity(self.vttbr, vcpu.mpidr);
        sysregs::load_el1(&vcpu.el1);
        gic::load_vmcr(vcpu.vmcr);
        self.loaded[cpu].lock().valid = false;
        let mut armed = vcpu.phys_timer.deadline();
        sysregs::arm_deadline_timer(armed);
        let next = loop {
            self.load_interrupts(cpu);
            let kind = vectors::run(&mut vcpu.regs);
            self.sync_interrupts(cpu);
            if kind == ExitKind::Irq {
                self.take_interrupts(cpu);
            }
            let syndrome = sysregs::trap_syndrome();
            if self.input_paused.load(Ordering::Relaxed) && self.instance.console_space() > 0 {
                self.input_paused.store(false, Ordering::Relaxed);
                console::enable_input(true);
            }
            let next = self.instance.handle_exit(
                vcpu,
                kind,
                &syndrome,
                &mut sysregs::LiveEl1,
                sysregs::counter(),
            );
            if vcpu.phys_timer.deadline() != armed {
                armed = vcpu.phys_timer.deadline();
                sysregs::arm_deadline_timer(armed);
            }
            match next {
                Next::Resume => {}
                Next::Wait => {
                    if !self.block_until_pending(cpu) {
                        break Next::Leave;
                    }
                }
                Next::PowerDown { entry, context_id } => {
                    if !self.block_until_pending(cpu) {
                        break Next::Leave;
                    }
                    vcpu.resume_from_power_down(entry, context_id);
                    sysregs::load_el1(&vcpu.el1);
                }
                other => break other,
            }
        };
        vcpu.el1 = sysregs::save_el1();
        vcpu.vmcr = gic::save_vmcr_and_disable();
        // Timers left running would fire for a vCPU that is gone.
        CNTV_CTL_EL0.set(0);
        sysregs::arm_deadline_timer(None);
        gic::deactivate(gic::VTIMER_INTID);
        self.instance.flush_console();
        next
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
