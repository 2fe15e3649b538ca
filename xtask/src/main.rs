//! `cargo xtask <command>`: build, run and test the hypervisor; pack guest bundles.

use std::process::{Command, ExitCode};

use xtask::build::{self, workspace_root};
use xtask::bundle::{self, BundleSpec};
use xtask::linux_guest;
use xtask::qemu::{self, Board};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  build                      build the hypervisor and test guest images into target/images
  run [--kernel IMAGE [--initrd FILE] | --guest FILE] [--vcpus N] [--smp N] [--gic 2|3]
      [--mem MiB]            boot the hypervisor on QEMU virt with a guest, its console on
                             this terminal. Default: Debian's Linux with a busybox shell
                             (fetched once, cached), 2 vCPUs. --kernel/--initrd: your own
                             arm64 Image and initramfs; --guest: a guest bundle (.fit) or a
                             bare arm64 Image as it is
  test                       host unit tests, then every QEMU scenario
  bundle --kernel IMAGE [--initrd FILE] [--name NAME] [--mem SIZE] [--vcpus N]
         [--bootargs \"...\"] -o OUT.fit
                             pack a guest bundle (FIT image, docs/IMAGE-FORMAT.md); defaults:
                             name guest, 128M, 1 vCPU, bootargs \"console=ttyAMA0\"
  linux-guest [--vcpus N]    fetch Debian's arm64 kernel and busybox (once, into
                             target/guest-cache), build the initramfs and the Linux guest
                             bundle target/images/linux-<N>cpu.fit (default 1)
  bench [--only micro|linux] micro-benchmarks (bench guest) and Linux boot to /init under
                             -icount shift=0,sleep=off, with the hypervisor and on the bare
                             board: table on stdout, figures in target/bench.json";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build") => build::build_all(),
        Some("run") => run(&args[1..]),
        Some("test") => test(),
        Some("bundle") => pack(&args[1..]),
        Some("linux-guest") => linux(&args[1..]),
        Some("bench") => xtask::bench::bench(&args[1..]),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    qemu::check_qemu()?;
    let (mut guest, mut kernel, mut initrd) = (None, None, None);
    let (mut vcpus, mut cpus, mut gic, mut memory) = (2, None, 3, 1024);
    let mut options = args.iter();
    while let Some(option) = options.next() {
        let mut value = || options.next().ok_or(format!("{option} needs a value"));
        match option.as_str() {
            "--guest" => guest = Some(std::path::PathBuf::from(value()?)),
            "--kernel" => kernel = Some(std::path::PathBuf::from(value()?)),
            "--initrd" => initrd = Some(std::path::PathBuf::from(value()?)),
            "--vcpus" => vcpus = value()?.parse().map_err(|_| "--vcpus takes a number")?,
            "--smp" => cpus = Some(value()?.parse().map_err(|_| "--smp takes a number")?),
            "--gic" => gic = value()?.parse().map_err(|_| "--gic takes 2 or 3")?,
            "--mem" => memory = value()?.parse().map_err(|_| "--mem takes MiB")?,
            other => return Err(format!("unknown option {other}\n\n{USAGE}")),
        }
    }
    build::build_all()?;
    let guest = match (guest, kernel) {
        (Some(_), Some(_)) => return Err("give either --guest or --kernel, not both".into()),
        (Some(guest), None) if guest.exists() => guest,
        (Some(guest), None) => {
            return Err(format!("guest image {} does not exist", guest.display()));
        }
        (None, Some(kernel)) => {
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
        (None, None) => linux_guest::linux_bundle(vcpus)?,
    };
    let mut board = Board::new(build::hypervisor_image(), guest, "guest");
    board.bootargs = "log=info".into();
    board.cpus = cpus.unwrap_or(vcpus.max(1));
    board.gic_version = gic;
    board.memory_mib = memory;
    eprintln!("xtask: {:?}", board.command());
    eprintln!(
        "xtask: the guest's console is this terminal; `poweroff -f` in it (or Ctrl-C) ends the run"
    );
    let status = board
        .command()
        .status()
        .map_err(|error| format!("cannot start QEMU: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("QEMU exited with {status}"))
    }
}

fn pack(args: &[String]) -> Result<(), String> {
    let mut spec = BundleSpec {
        kernel: Default::default(),
        initrd: None,
        name: "guest".into(),
        memory: 128 << 20,
        vcpus: 1,
        bootargs: "console=ttyAMA0".into(),
    };
    let mut out = None;
    let mut options = args.iter();
    while let Some(option) = options.next() {
        let mut value = || options.next().ok_or(format!("{option} needs a value"));
        match option.as_str() {
            "--kernel" => spec.kernel = value()?.into(),
            "--initrd" => spec.initrd = Some(value()?.into()),
            "--name" => spec.name = value()?.clone(),
            "--mem" => spec.memory = bundle::parse_size(value()?)?,
            "--vcpus" => spec.vcpus = value()?.parse().map_err(|_| "--vcpus takes a number")?,
            "--bootargs" => spec.bootargs = value()?.clone(),
            "-o" | "--output" => out = Some(std::path::PathBuf::from(value()?)),
            other => return Err(format!("unknown option {other}\n\n{USAGE}")),
        }
    }
    let out = out.ok_or(format!("bundle needs -o OUT.fit\n\n{USAGE}"))?;
    if spec.kernel.as_os_str().is_empty() {
        return Err(format!("bundle needs --kernel IMAGE\n\n{USAGE}"));
    }
    bundle::write_bundle_file(&spec, &out)?;
    eprintln!("xtask: wrote {}", out.display());
    Ok(())
}

fn linux(args: &[String]) -> Result<(), String> {
    let vcpus = match args {
        [] => 1,
        [option, n] if option == "--vcpus" => n.parse().map_err(|_| "--vcpus takes a number")?,
        _ => {
            return Err(format!(
                "usage: cargo xtask linux-guest [--vcpus N]\n\n{USAGE}"
            ));
        }
    };
    let bundle = linux_guest::linux_bundle(vcpus)?;
    eprintln!(
        "xtask: kernel {}, initramfs {}, bundle {}",
        linux_guest::kernel_image().display(),
        linux_guest::initramfs_image().display(),
        bundle.display()
    );
    Ok(())
}

fn cargo_test(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
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
    cargo_test(&[
        "--workspace",
        "--exclude",
        "test-guests",
        "--exclude",
        "scenarios",
    ])?;
    eprintln!("xtask: building images");
    build::build_all()?;
    for vcpus in [1, 4] {
        linux_guest::linux_bundle(vcpus)?;
    }
    eprintln!("xtask: QEMU scenarios on {version}");
    cargo_test(&["-p", "scenarios", "--", "--test-threads=2"])
}
