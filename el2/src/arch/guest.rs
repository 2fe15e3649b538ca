//! A guest instance in board memory: its RAM, stage-2 tables and VMID, the state its vCPUs
//! share (`Instance`) and each vCPU's saved context. Running vCPUs is `arch::cpu`'s job.

use alloc::string::String;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use devicetree::MemRange;
use devicetree::guest::{GICC_BASE, GICC_SIZE, GuestGic, GuestPlatform, RAM_BASE};
use log::info;
use spin::Mutex;

use crate::arch::{clean_to_poc, console, gic, sysregs, tlb::Stage2Tlb};
use crate::image::{BootLayout, ImageHeader, plan_layout};
use crate::instance::{BoardServices, Instance, Kick, Vcpu};
use crate::memory::{GuestRam, OutsideRam, PhysAllocator, PhysRange};

const PAGE: usize = 4096;
const SZ_2M: u64 = 2 << 20;
/// No vCPU is waiting to reset the instance.
const NOBODY: usize = usize::MAX;

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
    /// A copy into guest RAM was refused (a layout bug caught by the bounds check).
    OutsideRam(OutsideRam),
    /// Another instance on the board has the same name.
    NameTaken,
    /// The board has no free slot or VMID for another instance.
    TooManyInstances,
    /// No instance of that name is in the board's bundle.
    NotInBundle,
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Image(error) => write!(f, "guest image: {error}"),
            Self::NoMemory(size) => {
                write!(f, "no {size:#x} bytes of board memory left for guest RAM")
            }
            Self::Stage2(error) => write!(f, "stage-2 tables: {error}"),
            Self::DeviceTree(error) => write!(f, "guest device tree: {error}"),
            Self::OutsideRam(error) => write!(f, "loading the guest: {error}"),
            Self::NameTaken => write!(f, "an instance of that name already runs"),
            Self::TooManyInstances => write!(f, "the board runs as many instances as it can"),
            Self::NotInBundle => write!(f, "no instance of that name in the board's bundle"),
        }
    }
}

/// What an instance is made from.
#[derive(Clone)]
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
    /// The physical CPUs its vCPUs may run on (bit n: CPU n).
    pub affinity: u64,
    /// Its share of the CPUs relative to other instances.
    pub weight: u32,
}

/// A built instance: its exit-handling state plus the memory, stage-2 tables and vCPU contexts
/// behind it.
pub struct Vm {
    config: InstanceConfig,
    /// The exit-handling state the instance's vCPUs share.
    pub instance: Instance,
    ram: GuestRam,
    ram_range: PhysRange,
    vttbr: u64,
    /// The VMID of its stage-2 context.
    pub vmid: u16,
    /// Each vCPU's context, held by the CPU that runs it.
    pub vcpus: Vec<Mutex<Vcpu>>,
    /// Per physical CPU: 1 + the vCPU that ran there last (0: none), for the stale-TLB check.
    last_ran: Vec<AtomicUsize>,
    /// The vCPU that asked for SYSTEM_RESET and waits for the others to leave, or `NOBODY`.
    resetting: AtomicUsize,
    /// Bit n: vCPU n saw the instance end.
    ended: AtomicU64,
    /// The operator paused it: its vCPUs wait off their CPUs.
    paused: AtomicBool,
    /// Per vCPU: counter ticks it waited for an interrupt while still on its CPU (the
    /// scheduler counts them as run time; they are not CPU time).
    waited: Vec<AtomicU64>,
    /// The operator asked for it to start again once it has ended.
    restart: AtomicBool,
    /// Held paused while it moves to another board (apart from the operator's pause).
    held: AtomicBool,
    /// The board counter when the hold began.
    held_at: AtomicU64,
    /// The tables the hardware walks, and dirty tracking while the instance moves.
    stage2: Mutex<stage2::Stage2Table<HeapFrames, Stage2Tlb>>,
}

/// Copies `bytes` into the instance's RAM at `ipa` (refused outside it) and cleans them to the
/// point of coherency, so the guest sees them with its MMU and caches off.
fn copy_to_guest(ram: &GuestRam, ipa: u64, bytes: &[u8]) -> Result<(), BuildError> {
    let host = ram.write(ipa, bytes).map_err(BuildError::OutsideRam)?;
    clean_to_poc(host, bytes.len() as u64);
    Ok(())
}

impl Vm {
    /// Allocates RAM and maps it at stage 2 for the instance in board slot `slot` with `vmid`;
    /// `cpus` physical CPUs may run its vCPUs, and `kick` reaches them.
    pub fn build(
        config: InstanceConfig,
        slot: usize,
        vmid: u16,
        phys: &mut PhysAllocator,
        stage2_config: stage2::Stage2Config,
        cpus: usize,
        kick: Kick,
    ) -> Result<Self, BuildError> {
        // Refuse a broken image before taking any memory for it (a restored instance has none
        // to start from).
        if !config.kernel.is_empty() {
            ImageHeader::parse(config.kernel).map_err(BuildError::Image)?;
        }
        let ram_pa = phys
            .allocate(config.ram_size, SZ_2M)
            .ok_or(BuildError::NoMemory(config.ram_size))?;
        let ram_range = PhysRange::new(ram_pa, config.ram_size);
        let stage2 = stage2::Stage2Table::new(stage2_config, vmid, HeapFrames, Stage2Tlb).and_then(
            |mut stage2| {
                stage2.map(
                    RAM_BASE,
                    ram_pa,
                    config.ram_size,
                    stage2::MemoryKind::Normal,
                    stage2::Perms::RWX,
                )?;
                // A GICv2 guest's CPU interface is the hardware's virtual one, unemulated.
                if let Some(gicv) = gic::guest_cpu_interface() {
                    stage2.map(
                        GICC_BASE,
                        gicv,
                        GICC_SIZE,
                        stage2::MemoryKind::Device,
                        stage2::Perms::RW,
                    )?;
                }
                Ok(stage2)
            },
        );
        let stage2 = match stage2 {
            Ok(stage2) => stage2,
            Err(error) => {
                phys.free(ram_range);
                return Err(BuildError::Stage2(error));
            }
        };
        // SAFETY: the range was just taken from the physical allocator for this instance alone
        // (and goes back only when the Vm is released), and the EL2 identity map covers board
        // RAM as normal memory.
        let ram = unsafe { GuestRam::new(RAM_BASE, config.ram_size, ram_pa as *mut u8) };
        let affinities: Vec<u64> = (0..config.vcpus as u64).collect();
        let instance = Instance::new(
            &config.name,
            slot,
            config.ram_size,
            &affinities,
            BoardServices {
                console: console::guest_line,
                kick,
                kick_loaded: gic::kick_interrupt,
                checkpoint: crate::arch::transfer::checkpoint_for_guest,
                counter_hz: sysregs::counter_frequency(),
                id_registers: sysregs::guest_id_registers(),
                gic: gic::guest_shape(),
            },
        );
        let vcpu_count = config.vcpus;
        Ok(Self {
            vcpus: instance.vcpus().into_iter().map(Mutex::new).collect(),
            instance,
            config,
            ram,
            ram_range,
            vttbr: stage2.vttbr(),
            vmid,
            last_ran: (0..cpus).map(|_| AtomicUsize::new(0)).collect(),
            resetting: AtomicUsize::new(NOBODY),
            ended: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            waited: (0..vcpu_count).map(|_| AtomicU64::new(0)).collect(),
            restart: AtomicBool::new(false),
            held: AtomicBool::new(false),
            held_at: AtomicU64::new(0),
            stage2: Mutex::new(stage2),
        })
    }

    /// The instance's configuration.
    pub fn config(&self) -> &InstanceConfig {
        &self.config
    }

    /// The stage-2 root and VMID (`VTTBR_EL2`).
    pub fn vttbr(&self) -> u64 {
        self.vttbr
    }

    /// Records that `vcpu` runs on `cpu` now; true if another vCPU of this instance ran there
    /// last, so that TLB entries it left must go.
    pub fn switched_vcpu_on(&self, cpu: usize, vcpu: usize) -> bool {
        let previous = self.last_ran[cpu].swap(vcpu + 1, Ordering::Relaxed);
        previous != 0 && previous != vcpu + 1
    }

    /// `vcpu` asked for SYSTEM_RESET: it waits until the others have left.
    pub fn begin_reset(&self, vcpu: usize) {
        self.resetting.store(vcpu, Ordering::Release);
    }

    /// If `vcpu` waits to reset the instance: reloads it once every other vCPU has left and
    /// returns `Some(true)`, or `Some(false)` while some are still in; `None` if it does not.
    pub fn try_reset(&self, vcpu: usize) -> Option<bool> {
        if self.resetting.load(Ordering::Acquire) != vcpu {
            return None;
        }
        if !self.instance.others_out(vcpu) {
            return Some(false);
        }
        self.resetting.store(NOBODY, Ordering::Release);
        info!("{}: SYSTEM_RESET: reloading the instance", self.config.name);
        if let Err(error) = self.boot() {
            log::error!("{}: reset failed: {error}", self.config.name);
        }
        Some(true)
    }

    /// Records that `vcpu` waited `ticks` for an interrupt while still on its CPU.
    pub fn waited_in_place(&self, vcpu: usize, ticks: u64) {
        self.waited[vcpu].fetch_add(ticks, Ordering::Relaxed);
    }

    /// CPU time of `vcpu` out of `run_time`, the scheduler's run time: less what it waited.
    pub fn cpu_time(&self, vcpu: usize, run_time: u64) -> u64 {
        run_time.saturating_sub(self.waited[vcpu].load(Ordering::Relaxed))
    }

    /// CPU time of the instance out of the scheduler's run time of it.
    pub fn total_cpu_time(&self, run_time: u64) -> u64 {
        let waited: u64 = self
            .waited
            .iter()
            .map(|ticks| ticks.load(Ordering::Relaxed))
            .sum();
        run_time.saturating_sub(waited)
    }

    /// True while the operator, or a move to another board, holds the instance paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire) || self.held.load(Ordering::Acquire)
    }

    /// Holds the instance paused for a move, or lets it go (the caller kicks its vCPUs); the
    /// operator's pause is separate and stays as it is.
    pub fn hold(&self, held: bool) {
        if held && !self.is_held() {
            self.held_at.store(sysregs::counter(), Ordering::Release);
        }
        self.held.store(held, Ordering::Release);
    }

    /// Counter ticks since the current (or last) hold began.
    pub fn held_for(&self) -> u64 {
        sysregs::counter().saturating_sub(self.held_at.load(Ordering::Acquire))
    }

    /// vCPU `vcpu` went idle: it may wait for input after a prompt it printed, so that is
    /// shown. Not while a move holds the instance: its half-written line goes with it, to be
    /// finished on the other board.
    pub fn show_prompt(&self, vcpu: usize) {
        if !self.is_held() {
            self.instance.flush_console(vcpu);
        }
    }

    /// True while a move holds it paused.
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// True once none of its vCPUs is on a CPU (while paused, none comes back).
    pub fn vcpus_off_cpu(&self) -> bool {
        self.vcpus.iter().all(|vcpu| !vcpu.is_locked())
    }

    /// A stage-2 abort at `ipa` inside the instance's RAM, on a data access or (`fetch`) an
    /// instruction fetch: true if the guest should simply retry it, because it was a write that
    /// dirty tracking caught (now logged and writable again) or it raced with a block split
    /// (whose break-before-make leaves the block unmapped for a moment) or the end of tracking.
    #[inline]
    pub fn ram_fault(&self, ipa: u64, fetch: bool) -> bool {
        // Every MMIO exit asks: the range check stays on the fast side.
        let ram = self.ram_range;
        ipa.wrapping_sub(RAM_BASE) < ram.size() && self.resolve_ram_fault(ipa, fetch)
    }

    /// [`Vm::ram_fault`] for an IPA inside the instance's RAM.
    #[cold]
    fn resolve_ram_fault(&self, ipa: u64, fetch: bool) -> bool {
        let mut stage2 = self.stage2.lock();
        if fetch {
            // Tracking never takes execute permission away: only a split's window can fault.
            return stage2
                .translate(ipa)
                .is_some_and(|translation| translation.perms.execute);
        }
        match stage2.handle_dirty_fault(ipa) {
            Ok(true) => true,
            // Out of table memory for a split: the page stays protected; the retried write
            // faults again and may find memory then.
            Err(_) => true,
            Ok(false) => stage2
                .translate(ipa)
                .is_some_and(|translation| translation.perms.write),
        }
    }

    /// Copies RAM page `index` (4 KiB pages from the start of its RAM) into `page`.
    pub fn read_page(&self, index: u64, page: &mut [u8; PAGE]) -> Result<(), OutsideRam> {
        self.ram.read(RAM_BASE + index * PAGE as u64, page)
    }

    /// Writes RAM page `index`; only while no vCPU runs (a restore).
    pub fn write_page(&self, index: u64, page: &[u8; PAGE]) -> Result<(), OutsideRam> {
        let ipa = RAM_BASE + index * PAGE as u64;
        copy_to_guest(&self.ram, ipa, page).map_err(|_| OutsideRam {
            ipa,
            len: PAGE as u64,
        })
    }

    /// Starts logging the pages the guest writes.
    pub fn start_dirty_tracking(&self) -> Result<(), stage2::Stage2Error> {
        let ram = self.ram.ipa_range();
        self.stage2.lock().start_dirty_tracking(ram.start, ram.size)
    }

    /// Appends the page indices written since tracking started or the last call.
    pub fn take_dirty(&self, pages: &mut Vec<u64>) {
        self.stage2
            .lock()
            .take_dirty(|ipa| pages.push((ipa - RAM_BASE) / PAGE as u64));
    }

    /// Stops logging writes; every page is writable again.
    pub fn stop_dirty_tracking(&self) {
        self.stage2.lock().stop_dirty_tracking();
    }

    /// Pauses or resumes the instance (the caller kicks its vCPUs).
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }

    /// Asks for the instance to be started again once it has ended.
    pub fn request_restart(&self) {
        self.restart.store(true, Ordering::Release);
    }

    /// True if the operator asked for a restart.
    pub fn restart_requested(&self) -> bool {
        self.restart.load(Ordering::Acquire)
    }

    /// True if `vcpu`, waiting off its CPU, has something to wake for: an interrupt, the end of
    /// its instance, or (when it waits to reset the instance) the other vCPUs having left. Never
    /// while paused.
    pub fn should_wake(&self, vcpu: usize) -> bool {
        if self.is_paused() {
            return false;
        }
        if !self.instance.is_on(vcpu) {
            // Turned off, or the instance stopped: it must run to see it and leave.
            return true;
        }
        if self.resetting.load(Ordering::Acquire) == vcpu {
            return self.instance.others_out(vcpu);
        }
        self.instance.has_pending(vcpu)
    }

    /// Records that `vcpu` saw the instance end; true for the call that completes the set,
    /// after which the instance can be released.
    pub fn vcpu_ended(&self, vcpu: usize) -> bool {
        let all = (1u64 << self.config.vcpus) - 1;
        let before = self.ended.fetch_or(1 << vcpu, Ordering::AcqRel);
        before != all && before | (1 << vcpu) == all
    }

    /// The board memory the instance's RAM occupies, to give back once it is gone.
    pub fn ram_range(&self) -> PhysRange {
        self.ram_range
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
            gic: match gic::guest_shape() {
                gic::Shape::V3 => GuestGic::V3,
                gic::Shape::V2 => GuestGic::V2,
            },
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
            "{}: {} vCPUs, {} MiB RAM at IPA {RAM_BASE:#x}, VMID {}, kernel at {:#x}, initrd {}, device tree at {:#x}",
            config.name,
            config.vcpus,
            config.ram_size >> 20,
            self.vmid,
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
