//! The hypervisor image for the board (`aarch64-unknown-none-softfloat`). Boot order: device
//! tree → platform → console and log → memory map, EL2 MMU and heap → the default instance from
//! the boot module → run it → power the board off when it stops.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("el2 is the hypervisor image for the board: build it with `cargo xtask build`");
}

#[cfg(target_os = "none")]
mod board {
    extern crate alloc;

    use alloc::string::String;
    use core::panic::PanicInfo;

    use el2::arch::guest::{InstanceConfig, Vm, boot_module};
    use el2::arch::{boot, console, heap, mmu, psci, sysregs};
    use el2::bootargs::BootArgs;
    use el2::memory::{PhysAllocator, PhysRange};
    use log::{error, info, warn};
    use platforms::PsciConduit;
    use spin::Once;

    /// Bytes of board memory added to the heap once the memory map is known.
    const HEAP_SIZE: u64 = 32 << 20;
    /// The kernel command line the default instance gets.
    const GUEST_BOOTARGS: &str = "console=ttyAMA0 earlycon";

    /// The board's PSCI conduit, once known; the panic handler powers off through it.
    static CONDUIT: Once<PsciConduit> = Once::new();

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
        let board = match devicetree::parse_board(dtb_bytes) {
            Ok(board) => board,
            // No console yet: nothing can be said, so stop the board.
            Err(_) => psci::system_off(PsciConduit::Smc),
        };
        let platform = match platforms::detect(&board) {
            Ok(platform) => platform,
            Err(_) => psci::system_off(PsciConduit::Smc),
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

        let ram: alloc::vec::Vec<PhysRange> = board
            .memory
            .iter()
            .map(|range| PhysRange::new(range.base, range.size))
            .collect();
        mmu::enable(&ram, sysregs::parange());
        let mut phys = PhysAllocator::new(
            board
                .usable_memory()
                .iter()
                .map(|r| PhysRange::new(r.base, r.size)),
        );
        phys.reserve(boot::image_range());
        phys.reserve(PhysRange::new(dtb as u64, dtb_bytes.len() as u64));
        let Some(initrd) = board.chosen.initrd else {
            panic!("no guest image: pass one as the initrd (QEMU: -initrd <guest Image>)");
        };
        phys.reserve(PhysRange::new(initrd.base, initrd.size));
        let heap_start = phys
            .allocate(HEAP_SIZE, 4096)
            .expect("board memory for the heap");
        heap::grow(heap_start, HEAP_SIZE);
        info!(
            "{} MiB of board memory free for guests",
            phys.free_bytes() >> 20
        );

        let stage2_config = stage2::Stage2Config::from_parange(sysregs::parange());
        sysregs::configure_el2(stage2_config.vtcr());
        // SAFETY: the initrd range was reserved above and nothing writes it.
        let kernel = unsafe { boot_module(initrd.base, initrd.size) };
        let config = InstanceConfig {
            name: args.guest_name.clone(),
            ram_size: args.guest_mem,
            kernel,
            bootargs: String::from(GUEST_BOOTARGS),
            vmid: 1,
        };
        match Vm::build(config, &mut phys, stage2_config) {
            Ok(mut vm) => {
                let reason = vm.run();
                info!("{}: stopped: {reason}", args.guest_name);
            }
            Err(why) => error!("{}: cannot start: {why}", args.guest_name),
        }
        info!("all instances stopped: powering off");
        psci::system_off(platform.psci)
    }

    #[panic_handler]
    fn panic(info: &PanicInfo) -> ! {
        console::write_fmt_from_panic(format_args!("el2 PANIC: {info}\n"));
        psci::system_off(*CONDUIT.get().unwrap_or(&PsciConduit::Smc))
    }
}
