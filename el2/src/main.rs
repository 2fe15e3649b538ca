//! The hypervisor image for the board (`aarch64-unknown-none-softfloat`). Boot order: device
//! tree → platform → console and log → memory map, EL2 MMU and heap → GIC → the default instance
//! from the boot module → secondary CPUs → every CPU runs its vCPU → power off when it stops.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("el2 is the hypervisor image for the board: build it with `cargo xtask build`");
}

#[cfg(target_os = "none")]
mod board {
    extern crate alloc;

    use alloc::boxed::Box;
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::panic::PanicInfo;

    use devicetree::{Board, GicDescription};
    use el2::arch::guest::{InstanceConfig, Vm, boot_module};
    use el2::arch::{boot, console, gic, heap, mmu, psci, sysregs};
    use el2::bootargs::BootArgs;
    use el2::memory::{PhysAllocator, PhysRange};
    use log::{error, info, warn};
    use platforms::{Platform, PsciConduit, SecondaryStart};
    use spin::Once;

    /// Bytes of board memory added to the heap once the memory map is known.
    const HEAP_SIZE: u64 = 32 << 20;
    /// The kernel command line the default instance gets.
    const GUEST_BOOTARGS: &str = "console=ttyAMA0 earlycon";
    /// PSCI CPU_ON for the board's secondary CPUs.
    const CPU_ON: u64 = 0xC400_0003;

    /// The board's PSCI conduit, once known; the panic handler powers off through it.
    static CONDUIT: Once<PsciConduit> = Once::new();
    /// What every CPU needs once the boot CPU has set up the board.
    static SETUP: Once<Setup> = Once::new();
    /// The running instance, once built.
    static VM: Once<&'static Vm> = Once::new();

    struct Setup {
        parange: u8,
        vtcr: u64,
    }

    /// First Rust code on the boot CPU, called from `_start` with the board's DTB.
    #[unsafe(no_mangle)]
    extern "C" fn boot_primary(dtb: usize) -> ! {
        heap::init_boot_heap();
        // SAFETY: the loader passes the DTB's address in x0; its header gives its size, and the
        // DTB stays untouched (it is reserved below) for the life of the hypervisor.
        let dtb_bytes = unsafe {
            let header = core::slice::from_raw_parts(dtb as *const u8, 40);
            let size = devicetree::dtb_total_size(header).unwrap_or(40);
            core::slice::from_raw_parts(dtb as *const u8, size)
        };
        // Without a board description there is no console to complain on: just stop.
        let Ok(board) = devicetree::parse_board(dtb_bytes) else {
            psci::system_off(PsciConduit::Smc)
        };
        let Ok(platform) = platforms::detect(&board) else {
            psci::system_off(PsciConduit::Smc)
        };
        CONDUIT.call_once(|| platform.psci);
        let args = BootArgs::parse(board.chosen.bootargs.as_deref().unwrap_or(""));
        console::init(platform.console.base, args.log_level);
        info!(
            "hypervisor starting at EL2 on {} ({} CPUs)",
            platform.name,
            board.cpus.len()
        );
        for word in &args.unknown {
            warn!("ignoring unknown boot argument `{word}`");
        }

        let ram: Vec<PhysRange> = board
            .memory
            .iter()
            .map(|range| PhysRange::new(range.base, range.size))
            .collect();
        mmu::build(&ram);
        let parange = sysregs::parange();
        mmu::enable(parange);
        let mut phys = PhysAllocator::new(
            board
                .usable_memory()
                .iter()
                .map(|r| PhysRange::new(r.base, r.size)),
        );
        phys.reserve(boot::image_range());
        phys.reserve(PhysRange::new(dtb as u64, dtb_bytes.len() as u64));
        let Some(module) = board.chosen.initrd else {
            panic!("no guest image: pass one as the initrd (QEMU: -initrd <guest image>)");
        };
        phys.reserve(PhysRange::new(module.base, module.size));
        let heap_start = phys
            .allocate(HEAP_SIZE, 4096)
            .expect("board memory for the heap");
        heap::grow(heap_start, HEAP_SIZE);
        info!(
            "{} MiB of board memory free for guests",
            phys.free_bytes() >> 20
        );

        let cpus = board.cpus.len().min(boot::MAX_CPUS);
        let console_intid = board.uart.as_ref().and_then(|uart| uart.irq);
        start_gic(&board, cpus, console_intid);
        let stage2_config = stage2::Stage2Config::from_parange(parange);
        let setup = SETUP.call_once(|| Setup {
            parange,
            vtcr: stage2_config.vtcr(),
        });
        sysregs::configure_el2(setup.vtcr);
        gic::init_cpu(0);
        console::enable_input(true);

        // SAFETY: the module range was reserved above and nothing writes it.
        let module = unsafe { boot_module(module.base, module.size) };
        let config = match instance_config(module, &args) {
            Ok(config) => config,
            Err(why) => {
                error!("{}: cannot start: {why}", args.guest_name);
                shut_down(platform.psci)
            }
        };
        let name = config.name.clone();
        let vm = match Vm::build(config, &mut phys, stage2_config, cpus, console_intid) {
            Ok(vm) => &*Box::leak(Box::new(vm)),
            Err(why) => {
                error!("{name}: cannot start: {why}");
                shut_down(platform.psci)
            }
        };
        if let Err(why) = vm.boot() {
            error!("{name}: cannot start: {why}");
            shut_down(platform.psci);
        }
        VM.call_once(|| vm);
        start_secondaries(&board, cpus, &platform);
        let reason = vm.run_cpu(0);
        info!("{}: stopped: {reason}", vm.instance.name);
        shut_down(platform.psci)
    }

    /// The default instance from the boot module: a guest bundle (FIT) with its own manifest, or
    /// a bare arm64 Image described by the hypervisor's bootargs.
    fn instance_config(module: &'static [u8], args: &BootArgs) -> Result<InstanceConfig, String> {
        if !devicetree::fit::is_fit(module) {
            return Ok(InstanceConfig {
                name: args.guest_name.clone(),
                ram_size: args.guest_mem,
                vcpus: 1,
                kernel: module,
                ramdisk: None,
                bootargs: String::from(GUEST_BOOTARGS),
                vmid: 1,
            });
        }
        let bundle = devicetree::fit::parse_bundle(module)
            .map_err(|why| alloc::format!("guest bundle: {why}"))?;
        Ok(InstanceConfig {
            name: String::from(bundle.name),
            ram_size: bundle.memory,
            vcpus: bundle.vcpus as usize,
            kernel: bundle.kernel,
            ramdisk: bundle.ramdisk,
            bootargs: bundle.bootargs,
            vmid: 1,
        })
    }

    fn shut_down(conduit: PsciConduit) -> ! {
        info!("all instances stopped: powering off");
        psci::system_off(conduit)
    }

    fn start_gic(board: &Board, cpus: usize, console_intid: Option<u32>) {
        let GicDescription::V3 {
            distributor,
            redistributors,
            ..
        } = &board.gic
        else {
            panic!("only GICv3 boards are supported so far");
        };
        let affinities = board.cpus.iter().take(cpus).map(|cpu| cpu.mpidr).collect();
        gic::init(
            distributor.base,
            redistributors[0].base,
            affinities,
            console_intid,
        );
    }

    /// Starts the board's secondary CPUs the way its platform says they start.
    fn start_secondaries(board: &Board, cpus: usize, platform: &Platform) {
        let SecondaryStart::Psci = platform.secondary_start;
        for (index, cpu) in board.cpus.iter().enumerate().take(cpus).skip(1) {
            let result = psci::call(
                platform.psci,
                CPU_ON,
                [cpu.mpidr, boot::secondary_entry_address(), index as u64],
            );
            if result != 0 {
                warn!(
                    "CPU {index} (MPIDR {:#x}) did not start: PSCI error {}",
                    cpu.mpidr, result as i64
                );
            }
        }
    }

    /// First Rust code on a secondary CPU, called from `secondary_entry` with its index.
    #[unsafe(no_mangle)]
    extern "C" fn boot_secondary(index: usize) -> ! {
        let setup = SETUP
            .get()
            .expect("the boot CPU finished setup before starting secondaries");
        mmu::enable(setup.parange);
        sysregs::configure_el2(setup.vtcr);
        gic::init_cpu(index);
        let vm = VM
            .get()
            .expect("the instance exists before secondaries start");
        let reason = vm.run_cpu(index);
        log::debug!("CPU {index}: {} ended ({reason})", vm.instance.name);
        loop {
            aarch64_cpu::asm::wfi();
        }
    }

    #[panic_handler]
    fn panic(info: &PanicInfo) -> ! {
        console::write_fmt_from_panic(format_args!("el2 PANIC: {info}\n"));
        psci::system_off(*CONDUIT.get().unwrap_or(&PsciConduit::Smc))
    }
}
