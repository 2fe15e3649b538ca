//! The real Linux test guest: Debian's arm64 `cloud` kernel and a busybox initramfs, packed as
//! a guest bundle. The generic arm64 kernel of the same version (for the bench, and for the
//! Raspberry Pi 4's device tree that its package carries) is fetched when asked for.
//!
//! The packages come from the Debian archive through apt (the arm64 architecture added to
//! dpkg) and are fetched once into `target/guest-cache/`: delete that directory to fetch again.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use crate::build::{images_dir, run, workspace_root};
use crate::bundle::{
    BoardPart, BundleSpec, InstanceSpec, is_arm64_image, write_board_bundle_file, write_bundle_file,
};
use crate::cpio::Cpio;

/// The metapackage that names the current `cloud` flavour kernel package.
pub const KERNEL_METAPACKAGE: &str = "linux-image-cloud-arm64";
/// The statically linked busybox package.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The Linux guest's command line.
pub const BOOTARGS: &str = "console=ttyAMA0 earlycon=pl011,0x09000000 rdinit=/init";
/// The Linux guest's RAM.
pub const MEMORY: u64 = 256 << 20;
/// The line `/init` prints once the guest's userland is up.
pub const INIT_MARKER: &str = "GUEST-INIT: up";
/// The shell prompt the guest's console shows.
pub const PROMPT: &str = "guest# ";

/// The guest's `/init`: mount the kernel filesystems, say so, then a shell on the console.
const INIT_SCRIPT: &str = r#"#!/bin/sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root PS1='guest# '
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "GUEST-INIT: up"
echo "GUEST-INIT: cpus $(nproc) kernel $(uname -r)"
exec setsid cttyhack sh
"#;

/// Debian's two arm64 kernel flavours, of one version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// `cloud-arm64`: virtual hardware only (the test guest's kernel).
    Cloud,
    /// `arm64`: the generic kernel, with drivers for real boards.
    Generic,
}

impl Flavour {
    /// Both flavours.
    pub const ALL: [Flavour; 2] = [Flavour::Cloud, Flavour::Generic];

    /// Debian's name of the flavour, as its packages end.
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Cloud => "cloud-arm64",
            Flavour::Generic => "arm64",
        }
    }

    /// The decompressed kernel (a raw arm64 Image) in the cache.
    pub fn kernel_image(self) -> PathBuf {
        match self {
            Flavour::Cloud => cache_dir().join("Image"),
            Flavour::Generic => cache_dir().join("Image-arm64"),
        }
    }

    /// Fetches the flavour's kernel, and busybox, into the cache unless they are there.
    pub fn fetch(self) -> Result<(), String> {
        match self {
            Flavour::Cloud => fetch(),
            Flavour::Generic => fetch_generic(),
        }
    }

    /// The bundle [`Flavour::bundle`] writes for `vcpus` vCPUs.
    pub fn bundle_path(self, vcpus: u32) -> PathBuf {
        match self {
            Flavour::Cloud => images_dir().join(format!("linux-{vcpus}cpu.fit")),
            Flavour::Generic => images_dir().join(format!("linux-arm64-{vcpus}cpu.fit")),
        }
    }

    /// Fetches (once), builds the initramfs and writes a guest bundle with this kernel for
    /// `vcpus` vCPUs: instance `linux` with [`MEMORY`] and [`BOOTARGS`].
    pub fn bundle(self, vcpus: u32) -> Result<PathBuf, String> {
        self.fetch()?;
        let initrd = build_initramfs()?;
        let out = self.bundle_path(vcpus);
        let spec = BundleSpec {
            kernel: self.kernel_image(),
            initrd: Some(initrd),
            name: "linux".into(),
            memory: MEMORY,
            vcpus,
            bootargs: BOOTARGS.into(),
        };
        write_bundle_file(&spec, &out)?;
        Ok(out)
    }
}

/// Where fetched packages are cached: `target/guest-cache`.
pub fn cache_dir() -> PathBuf {
    workspace_root().join("target").join("guest-cache")
}

/// The test guest's kernel: the cloud flavour's Image.
pub fn kernel_image() -> PathBuf {
    Flavour::Cloud.kernel_image()
}

/// The static arm64 busybox binary.
pub fn busybox() -> PathBuf {
    cache_dir().join("busybox")
}

/// The initramfs that [`build_initramfs`] writes.
pub fn initramfs_image() -> PathBuf {
    images_dir().join("linux-initramfs.cpio.gz")
}

/// The bundle that [`linux_bundle`] writes for `vcpus` vCPUs.
pub fn bundle_path(vcpus: u32) -> PathBuf {
    Flavour::Cloud.bundle_path(vcpus)
}

/// Fetches the kernel and busybox into the cache unless both are already there.
pub fn fetch() -> Result<(), String> {
    if kernel_image().exists() && busybox().exists() {
        return Ok(());
    }
    let started = Instant::now();
    let cache = cache_dir();
    let (debs, root) = (cache.join("debs"), cache.join("root"));
    for dir in [&debs, &root] {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    }

    // Adding the architecture updates apt's lists; otherwise update only if a package is unknown.
    let fresh_lists = ensure_arm64_architecture()?;
    if !(fresh_lists || available(KERNEL_METAPACKAGE) && available(BUSYBOX_PACKAGE)) {
        apt_update()?;
    }
    let kernel_package =
        kernel_package().ok_or(format!("apt knows no {KERNEL_METAPACKAGE}:arm64"))?;
    eprintln!("xtask: fetching {kernel_package} and {BUSYBOX_PACKAGE} (arm64)");
    download_and_unpack(&[&kernel_package, BUSYBOX_PACKAGE], &debs, &root)?;

    let bin = std::fs::read(root.join("bin/busybox"))
        .map_err(|error| format!("{BUSYBOX_PACKAGE} has no /bin/busybox: {error}"))?;
    let vmlinuz = vmlinuz_in(&root, &kernel_package)?;
    let image = decompress_kernel(&read(&vmlinuz)?)?;
    write_atomically(&busybox(), &bin)?;
    write_atomically(&cache.join("kernel-package"), kernel_package.as_bytes())?;
    write_atomically(&kernel_image(), &image)?;
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&debs);
    eprintln!(
        "xtask: cached {kernel_package} ({} MiB Image) and busybox in {} ({:.1} s)",
        image.len() >> 20,
        cache.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Downloads the arm64 `packages` into `debs` and unpacks them all into `root`.
fn download_and_unpack(packages: &[&str], debs: &Path, root: &Path) -> Result<(), String> {
    let mut download = Command::new("apt-get");
    if is_root() {
        // apt's `_apt` user may not be allowed to write into the work tree; root downloads.
        download.args(["-o", "APT::Sandbox::User=root"]);
    }
    // apt's progress goes to stderr with xtask's own: stdout is for tables (`bench`).
    download
        .args(["download", "-q"])
        .current_dir(debs)
        .stdout(Stdio::from(std::io::stderr()));
    run(download.args(packages.iter().map(|package| format!("{package}:arm64"))))?;
    for deb in read_dir(debs)? {
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(root))?;
    }
    Ok(())
}

/// Where [`rpi4_dtb`] caches the Raspberry Pi 4's device tree.
pub fn rpi4_dtb_path() -> PathBuf {
    cache_dir().join("bcm2711-rpi-4-b.dtb")
}

/// The Raspberry Pi 4's device tree (`bcm2711-rpi-4-b.dtb`), from Debian's generic arm64
/// kernel package: fetched once, then cached.
pub fn rpi4_dtb() -> Result<PathBuf, String> {
    fetch_generic()?;
    Ok(rpi4_dtb_path())
}

/// Fetches the cloud kernel and busybox ([`fetch`]), then Debian's generic arm64 kernel
/// package of the same version unless its two files are cached: its kernel
/// ([`Flavour::Generic`]) and the Raspberry Pi 4's device tree.
fn fetch_generic() -> Result<(), String> {
    // The cloud kernel's package names the version.
    fetch()?;
    let (image, dtb_path) = (Flavour::Generic.kernel_image(), rpi4_dtb_path());
    if image.exists() && dtb_path.exists() {
        return Ok(());
    }
    let cloud = std::fs::read_to_string(cache_dir().join("kernel-package"))
        .map_err(|error| format!("cannot read the cached kernel's package name: {error}"))?;
    let package = cloud.trim().replace("-cloud-arm64", "-arm64");
    let dir = cache_dir().join("generic");
    let (debs, root) = (dir.join("debs"), dir.join("root"));
    let _ = std::fs::remove_dir_all(&dir);
    for dir in [&debs, &root] {
        std::fs::create_dir_all(dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    }
    eprintln!(
        "xtask: fetching {package} (arm64): the generic kernel and the Raspberry Pi 4 device tree"
    );
    download_and_unpack(&[&package], &debs, &root)?;
    let version = package.trim_start_matches("linux-image-");
    let dtb = read(&root.join(format!(
        "usr/lib/linux-image-{version}/broadcom/bcm2711-rpi-4-b.dtb"
    )))?;
    let kernel = decompress_kernel(&read(&vmlinuz_in(&root, &package)?)?)?;
    write_atomically(&dtb_path, &dtb)?;
    write_atomically(&image, &kernel)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The `/boot/vmlinuz-*` that `package` unpacked into `root`.
fn vmlinuz_in(root: &Path, package: &str) -> Result<PathBuf, String> {
    read_dir(&root.join("boot"))?
        .into_iter()
        .find(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or(format!("{package} has no /boot/vmlinuz-*"))
}

/// Debian's arm64 `vmlinuz` is a gzip-compressed Image; a raw Image passes through.
pub fn decompress_kernel(vmlinuz: &[u8]) -> Result<Vec<u8>, String> {
    let image = if vmlinuz.starts_with(&[0x1f, 0x8b]) {
        let mut image = Vec::new();
        GzDecoder::new(vmlinuz)
            .read_to_end(&mut image)
            .map_err(|error| format!("cannot gunzip the kernel: {error}"))?;
        image
    } else {
        vmlinuz.to_vec()
    };
    if !is_arm64_image(&image) {
        return Err("the kernel is not an arm64 Image (no \"ARM\\x64\" magic at offset 56)".into());
    }
    Ok(image)
}

/// Builds the gzip-compressed newc initramfs (busybox and `/init`) into [`initramfs_image`].
pub fn build_initramfs() -> Result<PathBuf, String> {
    let busybox = std::fs::read(busybox())
        .map_err(|error| format!("cannot read {}: {error} (fetch first)", busybox().display()))?;
    const EM_AARCH64: u16 = 183;
    if !busybox.starts_with(b"\x7fELF") || busybox.get(18..20) != Some(&EM_AARCH64.to_le_bytes()) {
        return Err(format!("{} is not an arm64 ELF", self::busybox().display()));
    }
    let mut cpio = Cpio::new();
    for dir in [
        "/bin",
        "/sbin",
        "/usr",
        "/usr/bin",
        "/usr/sbin",
        "/dev",
        "/etc",
    ] {
        cpio.dir(dir, 0o755);
    }
    for dir in ["/proc", "/sys", "/root"] {
        cpio.dir(dir, 0o700);
    }
    cpio.dir("/tmp", 0o1777)
        // The kernel opens /dev/console for init before devtmpfs is mounted.
        .char_device("/dev/console", 0o600, (5, 1))
        .file("/bin/busybox", 0o755, &busybox)
        .symlink("/bin/sh", "busybox")
        .file("/init", 0o755, INIT_SCRIPT.as_bytes());
    let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
    gzip.write_all(&cpio.finish())
        .map_err(|error| format!("gzip: {error}"))?;
    let compressed = gzip.finish().map_err(|error| format!("gzip: {error}"))?;
    write_atomically(&initramfs_image(), &compressed)?;
    Ok(initramfs_image())
}

/// The test guest's bundle (the cloud kernel) for `vcpus` vCPUs:
/// `target/images/linux-<vcpus>cpu.fit` ([`Flavour::bundle`]).
pub fn linux_bundle(vcpus: u32) -> Result<PathBuf, String> {
    Flavour::Cloud.bundle(vcpus)
}

/// The instances of `cargo xtask run`'s default board bundle.
pub const DEFAULT_INSTANCES: [&str; 2] = ["web", "db"];

/// The board bundle `cargo xtask run` boots by default: [`DEFAULT_INSTANCES`], each Debian's
/// Linux with `vcpus` vCPUs and [`MEMORY`], the kernel and initramfs stored once:
/// `target/images/linux-board-<vcpus>cpu.fit`.
pub fn board_bundle(vcpus: u32) -> Result<PathBuf, String> {
    fetch()?;
    let initrd = build_initramfs()?;
    let out = images_dir().join(format!("linux-board-{vcpus}cpu.fit"));
    let parts: Vec<BoardPart> = DEFAULT_INSTANCES
        .iter()
        .map(|name| {
            BoardPart::Instance(InstanceSpec {
                spec: BundleSpec {
                    kernel: kernel_image(),
                    initrd: Some(initrd.clone()),
                    name: (*name).into(),
                    memory: MEMORY,
                    vcpus,
                    bootargs: BOOTARGS.into(),
                },
                start_at_boot: true,
                cpus: None,
                weight: devicetree::fit::DEFAULT_WEIGHT,
            })
        })
        .collect();
    write_board_bundle_file(&parts, &out)?;
    Ok(out)
}

/// Makes sure dpkg has the arm64 architecture; true if it added it (and updated apt's lists).
fn ensure_arm64_architecture() -> Result<bool, String> {
    let output = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .map_err(|error| format!("cannot run dpkg (a Debian host is needed): {error}"))?;
    if String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|a| a.trim() == "arm64")
    {
        return Ok(false);
    }
    if !is_root() {
        return Err("dpkg does not have the arm64 architecture: run \
                    `sudo dpkg --add-architecture arm64 && sudo apt-get update`, then retry"
            .into());
    }
    run(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
    apt_update()?;
    Ok(true)
}

fn apt_update() -> Result<(), String> {
    if !is_root() {
        return Err(format!(
            "apt does not list {KERNEL_METAPACKAGE}:arm64 or {BUSYBOX_PACKAGE}:arm64: \
             run `sudo apt-get update`, then retry"
        ));
    }
    eprintln!("xtask: apt-get update");
    run(Command::new("apt-get").args(["update", "-q"]))
}

fn available(package: &str) -> bool {
    Command::new("apt-cache")
        .args(["show", "--no-all-versions", &format!("{package}:arm64")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The versioned kernel package the metapackage depends on, e.g. `linux-image-6.1.0-56-cloud-arm64`.
fn kernel_package() -> Option<String> {
    let output = Command::new("apt-cache")
        .args(["depends", &format!("{KERNEL_METAPACKAGE}:arm64")])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let package = line.trim().strip_prefix("Depends: ")?;
            let package = package.strip_suffix(":arm64").unwrap_or(package);
            (package.starts_with("linux-image-") && package.ends_with("-cloud-arm64"))
                .then(|| package.to_string())
        })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|error| format!("cannot read {}: {error}", dir.display()))?;
    Ok(entries
        .filter_map(|entry| Some(entry.ok()?.path()))
        .collect())
}

/// Writes through a temporary file so that an interrupted run never leaves a partial file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_kernel_is_decompressed_and_checked() {
        let mut image = vec![0u8; 1 << 16];
        image[56..60].copy_from_slice(b"ARM\x64");
        let mut gzip = GzEncoder::new(Vec::new(), Compression::fast());
        gzip.write_all(&image).unwrap();
        assert_eq!(
            decompress_kernel(&gzip.finish().unwrap()),
            Ok(image.clone())
        );
        assert_eq!(decompress_kernel(&image), Ok(image));
        assert!(decompress_kernel(&[0x1f, 0x8b, 0, 0]).is_err());
        assert!(decompress_kernel(&[0u8; 100]).is_err());
    }
}
