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

    use alloc::string::String;
    use alloc::vec::Vec;
    use core::panic::PanicInfo;
    use core::sync::atomic::{AtomicUsize, Ordering};

    use devicetree::fit::DEFAULT_WEIGHT;
    use devicetree::{Board, EnableMethod, GicDescription, UartKind};
    use el2::arch::board::{self, BoardDevices};
    use el2::arch::guest::{InstanceConfig, boot_module};
    use el2::arch::{
        boot, console, cpu, gic, heap, management, mmu, power, psci, sysregs, transfer,
    };
    use el2::bootargs::BootArgs;
    use el2::memory::{PhysAllocator, PhysRange};
    use log::{error, info, warn};
    use platforms::{BoardPower, Platform, PlatformError, PsciConduit, SecondaryStart};
    use spin::Once;

    /// Bytes of board memory added to the heap once the memory map is known.
    const HEAP_SIZE: u64 = 32 << 20;
    /// The kernel command line the default instance gets.
    const GUEST_BOOTARGS: &str = "console=ttyAMA0 earlycon";
    /// Alignment of a guest's RAM (its stage-2 block size).
    const GUEST_RAM_ALIGN: u64 = 2 << 20;
    /// PSCI CPU_ON for the board's secondary CPUs.
    const CPU_ON: u64 = 0xC400_0003;

    /// How the board powers off, once known; the panic handler powers off through it.
    static POWER: Once<BoardPower> = Once::new();
    /// Secondary CPUs that reached their run loop.
    static SECONDARIES_UP: AtomicUsize = AtomicUsize::new(0);
    /// What every CPU needs once the boot CPU has set up the board.
    static SETUP: Once<Setup> = Once::new();

    struct Setup {
        parange: u8,
        vtcr: u64,
    }

    /// The board's DTB as bytes, in place.
    ///
    /// # Safety
    /// `dtb` must be the address the loader passed in x0: a DTB that stays untouched (it is
    /// reserved from the allocator) for the life of the hypervisor.
    unsafe fn dtb_bytes(dtb: usize) -> &'static [u8] {
        // SAFETY: per the caller, the header is readable; its size field bounds the rest.
        unsafe {
            let header = core::slice::from_raw_parts(dtb as *const u8, 40);
            let size = devicetree::dtb_total_size(header).unwrap_or(40);
            core::slice::from_raw_parts(dtb as *const u8, size)
        }
    }

    /// Where the boot CPU goes if the loader entered the image below (or above) EL2: says so
    /// on the UART the DTB names, then powers the board off through its PSCI method.
    #[unsafe(no_mangle)]
    extern "C" fn boot_at_wrong_level(dtb: usize, level: u64) -> ! {
        heap::init_boot_heap();
        // SAFETY: `dtb` is what the loader passed in x0.
        let dtb = unsafe { dtb_bytes(dtb) };
        let board = devicetree::parse_board(dtb).ok();
        refuse_early(
            dtb,
            board.as_ref(),
            format_args!(
                "entered at EL{level}, but the hypervisor runs at EL2 (QEMU: -M virt,virtualization=on)"
            ),
        )
    }

    /// Refuses to boot before the platform is known: the reason on the early console (the
    /// device tree's PL011, else `earlycon=pl011,ADDRESS` in its boot arguments, else
    /// [`platforms::FALLBACK_CONSOLE`]), then power off through the device tree's PSCI method
    /// (the board's own way if its platform is known; SMC if there is no device tree).
    fn refuse_early(dtb: &[u8], board: Option<&Board>, why: core::fmt::Arguments) -> ! {
        let uart = board
            .and_then(|board| board.uart.as_ref())
            .filter(|uart| uart.kind == UartKind::Pl011)
            .map(|uart| uart.base);
        let base = uart
            .or_else(|| devicetree::raw_bootargs(dtb).and_then(devicetree::earlycon_pl011))
            .unwrap_or(platforms::FALLBACK_CONSOLE);
        console::init(base, log::LevelFilter::Info);
        error!("cannot boot: {why}");
        // A known board powers off its own way; else through the device tree's PSCI, if any.
        let power = board.map_or(BoardPower::Psci(PsciConduit::Smc), |board| {
            platforms::detect(board).map_or_else(
                |_| match &board.psci {
                    Some(psci) => BoardPower::Psci(psci.method.into()),
                    None => BoardPower::Halt,
                },
                |platform| platform.power,
            )
        });
        power::off(power)
    }

    /// Refuses to boot for a reason that is the user's to fix: one line, then power off.
    fn refuse(power: BoardPower, why: core::fmt::Arguments) -> ! {
        error!("cannot boot: {why}");
        power::off(power)
    }

    /// First Rust code on the boot CPU, called from `_start` with the board's DTB.
    #[unsafe(no_mangle)]
    extern "C" fn boot_primary(dtb: usize) -> ! {
        heap::init_boot_heap();
        // SAFETY: `dtb` is what the loader passed in x0; it is reserved below.
        let dtb_bytes = unsafe { dtb_bytes(dtb) };
        let host = devicetree::parse_board(dtb_bytes).unwrap_or_else(|why| {
            refuse_early(
                dtb_bytes,
                None,
                format_args!("the board's device tree cannot be used: {why}"),
            )
        });
        let platform = platforms::detect(&host).unwrap_or_else(|why| match why {
            PlatformError::UnknownBoard => refuse_early(
                dtb_bytes,
                Some(&host),
                format_args!(
                    "{why}: the device tree's root is compatible with \"{}\"",
                    host.compatible.join("\", \"")
                ),
            ),
            PlatformError::Missing(_) => {
                refuse_early(dtb_bytes, Some(&host), format_args!("{why}"))
            }
        });
        POWER.call_once(|| platform.power);
        let args = BootArgs::parse(host.chosen.bootargs.as_deref().unwrap_or(""));
        let level = args
            .as_ref()
            .map_or(log::LevelFilter::Info, |args| args.log_level);
        console::init(platform.console.base, level);
        // Under `log=debug` every trapped call goes the full way, which logs it.
        el2::fastpath::FAST_PATH.store(level < log::LevelFilter::Debug, Ordering::Relaxed);
        info!(
            "hypervisor starting at EL2 on {} ({} CPUs)",
            platform.name,
            host.cpus.len()
        );
        let args = args.unwrap_or_else(|bad| refuse(platform.power, format_args!("{bad}")));
        for word in &args.unknown {
            warn!("ignoring unknown boot argument `{word}`");
        }
        let gic_frames = match &host.gic {
            GicDescription::V3 {
                distributor,
                redistributors,
                ..
            } => gic::Frames::V3 {
                distributor: distributor.base,
                redistributors: redistributors[0].base,
            },
            GicDescription::V2 {
                distributor,
                cpu_interface,
                hyp_interface: Some(hyp_interface),
                virtual_cpu_interface: Some(virtual_cpu_interface),
                ..
            } => gic::Frames::V2 {
                distributor: distributor.base,
                cpu_interface: cpu_interface.base,
                hyp_interface: hyp_interface.base,
                virtual_cpu_interface: virtual_cpu_interface.base,
            },
            GicDescription::V2 { .. } => refuse(
                platform.power,
                format_args!(
                    "the board's GICv2 has no virtualization extensions in its device tree (GICH and GICV frames; QEMU: -M virt,virtualization=on)"
                ),
            ),
        };
        let cpus = host.cpus.len().min(boot::MAX_CPUS);
        if host.cpus.len() > cpus {
            warn!(
                "the board has {} CPUs; the hypervisor uses the first {cpus}",
                host.cpus.len()
            );
        }
        // QEMU passes no initrd at all for an empty file; other loaders may pass an empty one.
        // A board that listens for incoming instances may start with none of its own.
        let module = host.chosen.initrd.filter(|module| module.size > 0);
        if module.is_none() && !args.listen {
            refuse(
                platform.power,
                format_args!(
                    "no guest image (none was given, or it is empty): pass a guest bundle or an arm64 Image as the initrd (QEMU: -initrd FILE), or net.listen to wait for instances from another board"
                ),
            )
        }

        let ram: Vec<PhysRange> = host
            .memory
            .iter()
            .map(|range| PhysRange::new(range.base, range.size))
            .collect();
        mmu::build(&ram);
        let parange = sysregs::parange();
        mmu::enable(parange);
        let mut phys = PhysAllocator::new(
            host.usable_memory()
                .iter()
                .map(|r| PhysRange::new(r.base, r.size)),
        );
        phys.reserve(boot::image_range());
        phys.reserve(PhysRange::new(dtb as u64, dtb_bytes.len() as u64));
        if let Some(module) = module {
            phys.reserve(PhysRange::new(module.base, module.size));
        }
        let Some(heap_start) = phys.allocate(HEAP_SIZE, 4096) else {
            refuse(
                platform.power,
                format_args!(
                    "the board has {} MiB of memory left after the hypervisor image, its DTB and the guest image; the hypervisor needs {} MiB for itself, plus the guest's RAM",
                    phys.free_bytes() >> 20,
                    HEAP_SIZE >> 20
                ),
            )
        };
        heap::grow(heap_start, HEAP_SIZE);
        info!(
            "{} MiB of board memory free for guests (the largest instance can have {} MiB)",
            phys.free_bytes() >> 20,
            phys.largest_block(GUEST_RAM_ALIGN) >> 20
        );

        let console_intid = platform.console.irq;
        let json_uart = platform.management;
        let json_intid = json_uart.and_then(|uart| uart.irq);
        let affinities = host.cpus.iter().take(cpus).map(|cpu| cpu.mpidr).collect();
        let nic_intid = transfer::init(&host.virtio_mmio, args.net);
        let device_intids: Vec<u32> = console_intid
            .into_iter()
            .chain(json_intid)
            .chain(nic_intid)
            .collect();
        gic::init(gic_frames, affinities, &device_intids);
        let stage2_config = stage2::Stage2Config::from_parange(parange);
        let (vmid_count, vmid_bits) = sysregs::vmids();
        let setup = SETUP.call_once(|| Setup {
            parange,
            vtcr: stage2_config.vtcr() | vmid_bits,
        });
        // Secondaries read it before their MMU and caches are on: it must be in memory.
        el2::arch::clean_to_poc(
            &raw const SETUP as u64,
            core::mem::size_of_val(&SETUP) as u64,
        );
        sysregs::configure_el2(setup.vtcr);
        gic::init_cpu(0);
        console::enable_input(true);
        if let Some(uart) = json_uart {
            management::init_json_port(uart.base);
            info!("management JSON port on the UART at {:#x}", uart.base);
        }

        let slice = sysregs::counter_frequency() * args.slice_ms / 1000;
        let board = board::init(
            phys,
            stage2_config,
            vmid_count,
            cpus,
            slice,
            BoardDevices {
                console_intid,
                json_intid,
                nic_intid,
                power: platform.power,
            },
        );
        // SAFETY: the module range was reserved above and nothing writes it.
        let module = module.map(|module| unsafe { boot_module(module.base, module.size) });
        let mut started = 0;
        let entries = module.map_or_else(Vec::new, |module| bundle_instances(module, &args, cpus));
        for entry in entries {
            let (name, start_at_boot) = (entry.name, entry.start_at_boot);
            let config = match entry.config {
                Ok(config) => config,
                Err(why) => {
                    error!("{name}: cannot start: {why}");
                    continue;
                }
            };
            board.add_to_catalog(config.clone());
            if !start_at_boot {
                continue;
            }
            match board.start(config) {
                Ok(_) => started += 1,
                Err(why) => error!("{name}: cannot start: {why}"),
            }
        }
        if args.listen {
            match transfer::listen(true) {
                Ok(line) => info!("{line}"),
                Err(why) => error!("net.listen: {why}"),
            }
        } else if started == 0 {
            board.shut_down("all instances stopped");
        }
        management::greet();
        start_secondaries(&host, cpus, &platform);
        cpu::run(0)
    }

    /// One instance of the boot module, as the hypervisor will start it.
    struct BundleEntry {
        name: String,
        start_at_boot: bool,
        config: Result<InstanceConfig, String>,
    }

    /// The instances of the boot module: those of a board bundle (FIT), each checked on its own,
    /// or one bare arm64 Image described by the hypervisor's bootargs.
    fn bundle_instances(module: &'static [u8], args: &BootArgs, cpus: usize) -> Vec<BundleEntry> {
        let all_cpus = (1u64 << cpus) - 1;
        if !devicetree::fit::is_fit(module) {
            return alloc::vec![BundleEntry {
                name: args.guest_name.clone(),
                start_at_boot: true,
                config: Ok(InstanceConfig {
                    name: args.guest_name.clone(),
                    ram_size: args.guest_mem,
                    vcpus: 1,
                    kernel: module,
                    ramdisk: None,
                    bootargs: String::from(GUEST_BOOTARGS),
                    affinity: all_cpus,
                    weight: DEFAULT_WEIGHT,
                }),
            }];
        }
        let bundle = match devicetree::fit::parse_board_bundle(module) {
            Ok(bundle) => bundle,
            Err(why) => {
                return alloc::vec![BundleEntry {
                    name: args.guest_name.clone(),
                    start_at_boot: true,
                    config: Err(alloc::format!("guest bundle: {why}")),
                }];
            }
        };
        bundle
            .instances
            .into_iter()
            .map(|instance| BundleEntry {
                config: instance
                    .guest
                    .map(|guest| InstanceConfig {
                        name: String::from(guest.name),
                        ram_size: guest.memory,
                        vcpus: guest.vcpus as usize,
                        kernel: guest.kernel,
                        ramdisk: guest.ramdisk,
                        bootargs: guest.bootargs,
                        affinity: instance
                            .cpus
                            .map(u64::from)
                            .map(|cpus| cpus & all_cpus)
                            .filter(|cpus| *cpus != 0)
                            .unwrap_or(all_cpus),
                        weight: instance.weight,
                    })
                    .map_err(|why| alloc::format!("guest bundle: {why}")),
                name: instance.name,
                start_at_boot: instance.start_at_boot,
            })
            .collect()
    }

    /// Starts the board's secondary CPUs the way its platform says they start.
    fn start_secondaries(board: &Board, cpus: usize, platform: &Platform) {
        for (index, cpu) in board.cpus.iter().enumerate().take(cpus).skip(1) {
            match (platform.secondary_start, cpu.enable_method) {
                (SecondaryStart::Psci(conduit), _) => {
                    let result = psci::call(
                        conduit,
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
                (SecondaryStart::SpinTable, EnableMethod::SpinTable { release_addr }) => {
                    // One at a time: the entry code reads its index from one shared word.
                    let up = SECONDARIES_UP.load(Ordering::Acquire);
                    power::release_from_spin_table(release_addr, boot::spin_table_entry_for(index));
                    let deadline = sysregs::counter() + sysregs::counter_frequency();
                    while SECONDARIES_UP.load(Ordering::Acquire) == up {
                        if sysregs::counter() > deadline {
                            warn!(
                                "CPU {index} (MPIDR {:#x}) did not leave its spin table at {release_addr:#x} within a second",
                                cpu.mpidr
                            );
                            return;
                        }
                        core::hint::spin_loop();
                    }
                    info!(
                        "CPU {index} (MPIDR {:#x}) up, released from its spin table at {release_addr:#x}",
                        cpu.mpidr
                    );
                }
                (SecondaryStart::SpinTable, _) => warn!(
                    "CPU {index} (MPIDR {:#x}) has no spin-table release address",
                    cpu.mpidr
                ),
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
        SECONDARIES_UP.fetch_add(1, Ordering::Release);
        cpu::run(index)
    }

    #[panic_handler]
    fn panic(info: &PanicInfo) -> ! {
        console::write_fmt_from_panic(format_args!("el2 PANIC: {info}\n"));
        power::off(*POWER.get().unwrap_or(&BoardPower::Psci(PsciConduit::Smc)))
    }
}
