//! Building the hypervisor and the test guests as raw arm64 Images.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The hypervisor's target: soft-float, so it never touches the guests' FP/SIMD registers.
pub const HYPERVISOR_TARGET: &str = "aarch64-unknown-none-softfloat";
/// The test guests' target.
pub const GUEST_TARGET: &str = "aarch64-unknown-none";
/// The bare-metal test guests in `tests/guests`.
pub const TEST_GUESTS: [&str; 12] = [
    "basic", "hostile", "timer", "sgi", "storm", "bench", "psci", "flood", "spin", "pattern",
    "intruder", "idle",
];

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// Where built images go: `target/images`.
pub fn images_dir() -> PathBuf {
    workspace_root().join("target").join("images")
}

/// The hypervisor image.
pub fn hypervisor_image() -> PathBuf {
    images_dir().join("el2.img")
}

/// A test guest's image.
pub fn guest_image(name: &str) -> PathBuf {
    images_dir().join(format!("{name}.img"))
}

/// Runs `command`, failing unless it exits with status 0.
pub(crate) fn run(command: &mut Command) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|error| format!("cannot run {command:?}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {status}"))
    }
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// `llvm-objcopy` from the toolchain's llvm-tools component (rust-toolchain.toml installs it).
fn objcopy() -> Result<PathBuf, String> {
    let output = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(workspace_root())
        .output()
        .map_err(|error| format!("cannot run rustc: {error}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let tool = std::fs::read_dir(sysroot.join("lib/rustlib"))
        .map_err(|error| format!("cannot read the toolchain's rustlib: {error}"))?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin/llvm-objcopy"))
        .find(|path| path.exists());
    tool.ok_or_else(|| "llvm-objcopy not found: run `rustup component add llvm-tools`".into())
}

fn to_image(elf: &Path, image: &Path) -> Result<(), String> {
    run(Command::new(objcopy()?)
        .arg("-O")
        .arg("binary")
        .arg(elf)
        .arg(image))
}

/// Builds the hypervisor and the test guests (release) and writes their raw images.
pub fn build_all() -> Result<(), String> {
    std::fs::create_dir_all(images_dir())
        .map_err(|error| format!("cannot create {:?}: {error}", images_dir()))?;
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "el2",
        "--bin",
        "el2",
        "--target",
        HYPERVISOR_TARGET,
    ]))?;
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "test-guests",
        "--bins",
        "--target",
        GUEST_TARGET,
    ]))?;
    let target = workspace_root().join("target");
    to_image(
        &target.join(HYPERVISOR_TARGET).join("release/el2"),
        &hypervisor_image(),
    )?;
    for guest in TEST_GUESTS {
        to_image(
            &target.join(GUEST_TARGET).join("release").join(guest),
            &guest_image(guest),
        )?;
    }
    Ok(())
}
