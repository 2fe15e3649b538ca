//! `cargo xtask <command>`: build, run and test the hypervisor; pack guest bundles.
//!
//! Exit status: 0 on success and for `--help`, 1 when a command fails, 2 when the command line is
//! wrong.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use xtask::build::{self, workspace_root};
use xtask::bundle::{self, BoardPart, BundleSpec, GuestFile};
use xtask::cli::{self, Invocation, RunGuest, RunOptions};
use xtask::linux_guest;
use xtask::qemu::{self, Board};

/// RAM of the instance the hypervisor makes of a bare Image given with `run --guest`, in MiB
/// (passed as `guest.mem`).
const BARE_IMAGE_MIB: u64 = 128;
/// Host CPUs of `run`'s board unless `--smp` says otherwise.
const DEFAULT_RUN_CPUS: u32 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invocation = match cli::parse(&args) {
        Ok(invocation) => invocation,
        Err(message) => {
            eprintln!("xtask: {message}");
            return ExitCode::from(2);
        }
    };
    let result = match invocation {
        Invocation::Help(text) => {
            println!("{text}");
            Ok(())
        }
        Invocation::Build(None) => build::build_all(),
        Invocation::Build(Some(dir)) => xtask::sd::write_sd_files(&dir),
        Invocation::Run(options) => run(options),
        Invocation::Test => test(),
        Invocation::Bundle(spec, out) => pack(&spec, &out),
        Invocation::BoardBundle(parts, out) => pack_board(&parts, &out),
        Invocation::Inspect(file) => inspect(&file),
        Invocation::Checkpoint(command) => xtask::checkpoint::run(&command),
        Invocation::LinuxGuest(vcpus) => linux(vcpus),
        Invocation::MigrateDemo => xtask::migrate_demo::migrate_demo(),
        Invocation::Bench(selection) => xtask::bench::bench(selection),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Fails unless `path` is a file that can be read.
fn require_file(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))
}

fn run(options: RunOptions) -> Result<(), String> {
    qemu::check_qemu()?;
    // The guest's vCPUs and RAM, from the user's files before the build, which takes a while.
    let (vcpus, guest_memory, bare_image) = match &options.guest {
        RunGuest::Linux { vcpus } => (
            *vcpus,
            linux_guest::MEMORY * linux_guest::DEFAULT_INSTANCES.len() as u64,
            false,
        ),
        RunGuest::Kernel {
            kernel,
            initrd,
            vcpus,
        } => {
            require_file(kernel)?;
            if let Some(initrd) = initrd {
                require_file(initrd)?;
            }
            (*vcpus, linux_guest::MEMORY, false)
        }
        RunGuest::File(file) => {
            let bytes = std::fs::read(file)
                .map_err(|error| format!("cannot read {}: {error}", file.display()))?;
            match bundle::inspect_guest(&bytes)
                .map_err(|why| format!("{}: {why}", file.display()))?
            {
                GuestFile::Bundle { vcpus, memory } => (vcpus, memory, false),
                GuestFile::Image => (1, BARE_IMAGE_MIB << 20, true),
            }
        }
    };
    // vCPUs are scheduled on the host CPUs: a board with more would only add QEMU threads.
    let cpus = options.smp.unwrap_or(vcpus.min(DEFAULT_RUN_CPUS));
    build::build_all()?;
    let image = match options.guest {
        RunGuest::Linux { vcpus } => linux_guest::board_bundle(vcpus)?,
        RunGuest::Kernel {
            kernel,
            initrd,
            vcpus,
        } => {
            let out = build::images_dir().join("run-guest.fit");
            let spec = BundleSpec {
                kernel,
                initrd,
                name: "guest".into(),
                memory: linux_guest::MEMORY,
                vcpus,
                bootargs: linux_guest::BOOTARGS.into(),
            };
            bundle::write_bundle_file(&spec, &out)?;
            out
        }
        RunGuest::File(file) => file,
    };
    let image_size = std::fs::metadata(&image)
        .map_err(|error| format!("cannot read {}: {error}", image.display()))?
        .len();
    qemu::check_board_memory(options.memory_mib, guest_memory, image_size)?;

    let mut board = Board::new(build::hypervisor_image(), image, "guest");
    board.bootargs = if bare_image {
        format!("log=info guest.mem={BARE_IMAGE_MIB}M")
    } else {
        "log=info".into()
    };
    board.cpus = cpus;
    board.memory_mib = options.memory_mib;
    board.gic_version = options.gic_version;
    if options.rpi4 {
        board.machine = qemu::Machine::Raspi4b {
            dtb: linux_guest::rpi4_dtb()?,
        };
        board.cpus = qemu::RASPI4B_CPUS;
        board.memory_mib = qemu::RASPI4B_MIB;
    }
    let log = serial_log_path();
    // A log an earlier run left must not speak for this one.
    match std::fs::remove_file(&log) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot remove {}: {error}", log.display()));
        }
        _ => {}
    }
    board.serial_log = Some(log.clone());
    eprintln!("xtask: {:?}", board.command());
    eprintln!(
        "xtask: the guest's console is this terminal; `poweroff -f` in it (or Ctrl-C) ends the run"
    );
    let status = board
        .command()
        .status()
        .map_err(|error| format!("cannot start QEMU: {error}"))?;
    // QEMU exits with 0 when the hypervisor powers the board off, also after refusing the guest.
    let serial = std::fs::read(&log)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    if let Some(line) = qemu::hypervisor_refusal(&serial) {
        return Err(format!("{line} (serial log: {})", log.display()));
    }
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "QEMU exited with {status} (serial log: {})",
            log.display()
        ))
    }
}

/// Where `run` logs the serial output: `target/run-serial.log`.
fn serial_log_path() -> PathBuf {
    workspace_root().join("target").join("run-serial.log")
}

fn pack(spec: &BundleSpec, out: &Path) -> Result<(), String> {
    bundle::write_bundle_file(spec, out)?;
    eprintln!("xtask: wrote {}", out.display());
    Ok(())
}

fn pack_board(parts: &[BoardPart], out: &Path) -> Result<(), String> {
    bundle::write_board_bundle_file(parts, out)?;
    eprintln!("xtask: wrote {}", out.display());
    Ok(())
}

/// Prints the file's instances; fails if the file is not a bundle or an instance is refused.
fn inspect(file: &Path) -> Result<(), String> {
    let bytes =
        std::fs::read(file).map_err(|error| format!("cannot read {}: {error}", file.display()))?;
    let (report, refused) =
        bundle::inspect_report(&bytes).map_err(|why| format!("{}: {why}", file.display()))?;
    println!("{}: {report}", file.display());
    match refused {
        0 => Ok(()),
        1 => Err(format!("{}: 1 instance is refused", file.display())),
        n => Err(format!("{}: {n} instances are refused", file.display())),
    }
}

fn linux(vcpus: u32) -> Result<(), String> {
    let bundle = linux_guest::linux_bundle(vcpus)?;
    eprintln!(
        "xtask: kernel {}, initramfs {}, bundle {}",
        linux_guest::kernel_image().display(),
        linux_guest::initramfs_image().display(),
        bundle.display()
    );
    Ok(())
}

/// `cargo test` with `args`, and the environment variable `env` (name, value) if given.
fn cargo_test(args: &[&str], env: Option<(&str, &str)>) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    if let Some((name, value)) = env {
        command.env(name, value);
    }
    let status = command
        .arg("test")
        .args(args)
        .current_dir(workspace_root())
        .status()
        .map_err(|error| format!("cannot run cargo test: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo test {} failed", args.join(" ")))
    }
}

fn test() -> Result<(), String> {
    let version = qemu::check_qemu()?;
    eprintln!("xtask: host unit tests");
    cargo_test(
        &[
            "--workspace",
            "--exclude",
            "test-guests",
            "--exclude",
            "scenarios",
        ],
        None,
    )?;
    eprintln!("xtask: building images");
    build::build_all()?;
    for vcpus in [1, 4] {
        linux_guest::linux_bundle(vcpus)?;
    }
    linux_guest::rpi4_dtb()?;
    eprintln!("xtask: QEMU scenarios on {version}");
    cargo_test(&["-p", "scenarios", "--", "--test-threads=2"], None)?;
    // Again on GICv2, but for the scenarios that exercise nothing of the GIC: image and
    // device-tree refusals, link cuts, the reboot loop.
    eprintln!("xtask: the scenarios again on GICv2 boards (SCENARIO_GIC=2)");
    cargo_test(
        &[
            "-p",
            "scenarios",
            "--test",
            "foundation",
            "--test",
            "interrupts",
            "--test",
            "linux",
            "--test",
            "instances",
            "--test",
            "hardening",
            "--test",
            "migration",
            "--",
            "--test-threads=2",
            "--skip",
            "refused",
            "--skip",
            "user_errors_at_boot",
            "--skip",
            "a_device_tree_the_hypervisor_cannot_use",
            "--skip",
            "link_cuts",
            "--skip",
            "reboots_ten_times",
        ],
        Some(("SCENARIO_GIC", "2")),
    )?;
    run_reports_a_refused_guest()
}

/// `run` itself, on an image the hypervisor refuses (an Image header whose text_offset is not
/// 4 KiB-aligned): it must fail with the hypervisor's reason, not exit 0 as QEMU does.
fn run_reports_a_refused_guest() -> Result<(), String> {
    eprintln!("xtask: `run` on a guest the hypervisor refuses");
    let basic = build::guest_image("basic");
    let mut image = std::fs::read(&basic)
        .map_err(|error| format!("cannot read {}: {error}", basic.display()))?;
    image[8..16].copy_from_slice(&0x1234u64.to_le_bytes());
    let refused = build::images_dir().join("refused-guest.img");
    std::fs::write(&refused, image)
        .map_err(|error| format!("cannot write {}: {error}", refused.display()))?;
    let result = run(RunOptions {
        guest: RunGuest::File(refused),
        smp: None,
        memory_mib: 512,
        gic_version: 3,
        rpi4: false,
    });
    match result {
        Err(why) if why.contains("cannot start: guest image: Image header text_offset") => {
            eprintln!("xtask: `run` failed as it should: {why}");
            Ok(())
        }
        other => Err(format!(
            "`run` on a refused guest should fail with the hypervisor's reason, got {other:?}"
        )),
    }
}
