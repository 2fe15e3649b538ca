//! Writing guest bundles (FIT images, `devicetree::fit`) from files on the host, single-guest or
//! board bundles, and reading any of them back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use devicetree::fit::{
    BoardInstance, GuestBundle, MAX_VCPUS, crc32, is_fit, parse_board_bundle, write_board_bundle,
    write_bundle,
};

/// Offset of the arm64 Image header's magic.
const IMAGE_MAGIC_OFFSET: usize = 56;
/// The arm64 Image header's magic, "ARM\x64".
const IMAGE_MAGIC: &[u8; 4] = b"ARM\x64";

/// What goes into a bundle: the files to read and the instance's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleSpec {
    /// An arm64 Image (raw, with the Image header).
    pub kernel: PathBuf,
    /// An initramfs, if any.
    pub initrd: Option<PathBuf>,
    /// Instance name.
    pub name: String,
    /// Guest RAM in bytes (a multiple of 2 MiB).
    pub memory: u64,
    /// Number of vCPUs (1..=8).
    pub vcpus: u32,
    /// Guest kernel command line.
    pub bootargs: String,
}

/// One instance of a board bundle packed from files (`bundle --instance`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSpec {
    /// Its files and manifest.
    pub spec: BundleSpec,
    /// Whether it starts at boot.
    pub start_at_boot: bool,
    /// The physical CPUs it may run on (bit n: CPU n), if not any.
    pub cpus: Option<u32>,
    /// Its scheduling weight.
    pub weight: u32,
}

/// What goes into a board bundle, in command-line order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BoardPart {
    /// An instance packed from files (`--instance`).
    Instance(InstanceSpec),
    /// Every instance of an existing bundle, single-guest or board, with its board settings
    /// (`--merge`).
    Merge(PathBuf),
}

/// Whether `image` carries the arm64 Image header's magic.
pub fn is_arm64_image(image: &[u8]) -> bool {
    image.get(IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4) == Some(IMAGE_MAGIC)
}

/// What a guest image file is to the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestFile {
    /// A guest bundle whose manifest asks for these vCPUs and this much RAM (bytes).
    Bundle {
        /// Its vCPUs.
        vcpus: u32,
        /// Its RAM in bytes.
        memory: u64,
    },
    /// A bare arm64 Image: the hypervisor's bootargs give its instance.
    Image,
}

/// Tells a guest bundle, checked as the hypervisor reads it, from a bare arm64 Image. For a
/// board bundle, the vCPUs and memory are those of the instances that start at boot and are not
/// refused, added up (the vCPUs up to 8, the most CPUs the hypervisor runs on); it is an error if
/// there is no such instance.
pub fn inspect_guest(file: &[u8]) -> Result<GuestFile, String> {
    if is_fit(file) {
        let board = parse_board_bundle(file).map_err(|error| error.to_string())?;
        let mut started = board.started().peekable();
        if started.peek().is_none() {
            return Err("no instance of the bundle starts at boot".into());
        }
        let (mut vcpus, mut memory, mut first_error) = (0u32, 0u64, None);
        for instance in started {
            match &instance.guest {
                Ok(guest) => {
                    vcpus = vcpus.saturating_add(guest.vcpus);
                    memory = memory.saturating_add(guest.memory);
                }
                Err(error) => {
                    first_error.get_or_insert_with(|| format!("{}: {error}", instance.name));
                }
            }
        }
        if vcpus == 0 {
            return Err(first_error.unwrap_or_default());
        }
        Ok(GuestFile::Bundle {
            vcpus: vcpus.min(MAX_VCPUS),
            memory,
        })
    } else if is_arm64_image(file) {
        Ok(GuestFile::Image)
    } else {
        Err("neither a guest bundle (FIT) nor an arm64 Image".into())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
}

/// Fails unless `kernel`, read from `path`, is an arm64 Image.
fn check_kernel(kernel: &[u8], path: &Path) -> Result<(), String> {
    if is_arm64_image(kernel) {
        Ok(())
    } else {
        Err(format!(
            "{} is not an arm64 Image (no \"ARM\\x64\" magic at offset 56)",
            path.display()
        ))
    }
}

/// Writes `blob` to `out`, creating its directory.
fn write_out(out: &Path, blob: &[u8]) -> Result<(), String> {
    if let Some(dir) = out.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    }
    std::fs::write(out, blob).map_err(|error| format!("cannot write {}: {error}", out.display()))
}

/// The bundle of `spec`, whose files are `kernel` and `ramdisk`.
fn guest<'a>(spec: &'a BundleSpec, kernel: &'a [u8], ramdisk: Option<&'a [u8]>) -> GuestBundle<'a> {
    GuestBundle {
        name: &spec.name,
        memory: spec.memory,
        vcpus: spec.vcpus,
        bootargs: spec.bootargs.clone(),
        kernel,
        ramdisk,
    }
}

/// Reads the spec's files and writes the bundle to `out`.
pub fn write_bundle_file(spec: &BundleSpec, out: &Path) -> Result<(), String> {
    let kernel = read(&spec.kernel)?;
    check_kernel(&kernel, &spec.kernel)?;
    let ramdisk = spec.initrd.as_deref().map(read).transpose()?;
    let blob = write_bundle(&guest(spec, &kernel, ramdisk.as_deref()))
        .map_err(|error| error.to_string())?;
    write_out(out, &blob)
}

/// Reads the parts' files and writes a board bundle of every instance, in order, to `out`:
/// `--instance` parts from their files, `--merge` parts with every instance of the bundle (each
/// must be accepted). Images shared by several instances are stored once.
pub fn write_board_bundle_file(parts: &[BoardPart], out: &Path) -> Result<(), String> {
    // Every file once, however many instances name it.
    let mut files: BTreeMap<&Path, Vec<u8>> = BTreeMap::new();
    for part in parts {
        let paths = match part {
            BoardPart::Instance(instance) => {
                vec![
                    Some(instance.spec.kernel.as_path()),
                    instance.spec.initrd.as_deref(),
                ]
            }
            BoardPart::Merge(file) => vec![Some(file.as_path())],
        };
        for path in paths.into_iter().flatten() {
            if !files.contains_key(path) {
                files.insert(path, read(path)?);
            }
        }
    }
    let mut instances = Vec::new();
    for part in parts {
        match part {
            BoardPart::Instance(instance) => {
                let spec = &instance.spec;
                let kernel = &files[spec.kernel.as_path()];
                check_kernel(kernel, &spec.kernel)?;
                let ramdisk = spec.initrd.as_deref().map(|path| files[path].as_slice());
                instances.push(BoardInstance {
                    guest: guest(spec, kernel, ramdisk),
                    start_at_boot: instance.start_at_boot,
                    cpus: instance.cpus,
                    weight: instance.weight,
                });
            }
            BoardPart::Merge(file) => {
                let blob = &files[file.as_path()];
                let what = |why: String| format!("cannot merge {}: {why}", file.display());
                if !is_fit(blob) {
                    return Err(what("not a guest bundle (FIT)".into()));
                }
                let board = parse_board_bundle(blob).map_err(|error| what(error.to_string()))?;
                for instance in board.instances {
                    let guest = instance.guest.map_err(|error| {
                        what(format!("instance {} is refused: {error}", instance.name))
                    })?;
                    instances.push(BoardInstance {
                        guest,
                        start_at_boot: instance.start_at_boot,
                        cpus: instance.cpus,
                        weight: instance.weight,
                    });
                }
            }
        }
    }
    for (i, instance) in instances.iter().enumerate() {
        let name = instance.guest.name;
        if instances[..i].iter().any(|other| other.guest.name == name) {
            return Err(format!(
                "two instances are named {name}: instance names are unique in a board bundle"
            ));
        }
    }
    let blob = write_board_bundle(&instances).map_err(|error| error.to_string())?;
    write_out(out, &blob)
}

/// `inspect`'s report on a file: every instance of a bundle (or what the file is otherwise), and
/// how many instances are refused.
pub fn inspect_report(file: &[u8]) -> Result<(String, usize), String> {
    let image = |data: &[u8]| format!("{} bytes, crc32 {:08x}", data.len(), crc32(data));
    if !is_fit(file) {
        if is_arm64_image(file) {
            return Ok((
                format!("a bare arm64 Image ({}), not a guest bundle", image(file)),
                0,
            ));
        }
        return Err("neither a guest bundle (FIT) nor an arm64 Image".into());
    }
    let board = parse_board_bundle(file).map_err(|error| error.to_string())?;
    let count = board.instances.len();
    let started = board.started().count();
    let mut text = if board.has_board_node {
        format!(
            "board bundle: {count} instance{}, {started} started at boot\n",
            if count == 1 { "" } else { "s" }
        )
    } else {
        "single-guest bundle (no /hv,board node): its default configuration starts at boot\n"
            .to_string()
    };
    let mut refused = 0;
    for instance in &board.instances {
        let config: String = instance.config.escape_default().collect();
        let _ = writeln!(
            text,
            "\ninstance {} (configuration {config})",
            instance.name
        );
        let yes_no = if instance.start_at_boot { "yes" } else { "no" };
        let _ = writeln!(text, "  start at boot: {yes_no}");
        let cpus = match instance.cpus {
            None => "any".to_string(),
            Some(mask) => {
                let list: Vec<String> = (0..32)
                    .filter(|bit| mask & (1 << bit) != 0)
                    .map(|bit| bit.to_string())
                    .collect();
                format!("{mask:#x} ({})", list.join(", "))
            }
        };
        let _ = writeln!(text, "  cpus:          {cpus}");
        let _ = writeln!(text, "  weight:        {}", instance.weight);
        match &instance.guest {
            Ok(guest) => {
                let memory = if guest.memory.is_multiple_of(1 << 20) {
                    format!("{} MiB", guest.memory >> 20)
                } else {
                    format!("{} bytes", guest.memory)
                };
                let _ = writeln!(text, "  memory:        {memory}");
                let _ = writeln!(text, "  vcpus:         {}", guest.vcpus);
                let _ = writeln!(text, "  bootargs:      {:?}", guest.bootargs);
                let _ = writeln!(text, "  kernel:        {}", image(guest.kernel));
                let ramdisk = guest.ramdisk.map_or_else(|| "none".to_string(), image);
                let _ = writeln!(text, "  ramdisk:       {ramdisk}");
            }
            Err(error) => {
                refused += 1;
                let _ = writeln!(text, "  REFUSED:       {error}");
            }
        }
    }
    Ok((text.trim_end().to_string(), refused))
}

/// A size in bytes: a number with an optional `K`, `M` or `G` suffix (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("bad size {text:?}: expected e.g. 256M, 1G or a number of bytes");
    let lower = text.to_ascii_lowercase();
    let body = lower.trim_end_matches("ib").trim_end_matches('b');
    let (digits, shift) = match body.char_indices().last() {
        Some((i, 'k')) => (&body[..i], 10),
        Some((i, 'm')) => (&body[..i], 20),
        Some((i, 'g')) => (&body[..i], 30),
        _ => (body, 0),
    };
    let value: u64 = digits.parse().map_err(|_| bad())?;
    value.checked_mul(1 << shift).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "M", "12X", "-1M", "99999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bundle_file_round_trips() {
        let dir = std::env::temp_dir().join(format!("xtask-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut kernel = vec![0u8; 4096];
        kernel[56..60].copy_from_slice(IMAGE_MAGIC);
        std::fs::write(dir.join("Image"), &kernel).unwrap();
        std::fs::write(dir.join("initrd"), b"cpio").unwrap();
        let spec = BundleSpec {
            kernel: dir.join("Image"),
            initrd: Some(dir.join("initrd")),
            name: "t".into(),
            memory: 64 << 20,
            vcpus: 3,
            bootargs: "quiet".into(),
        };
        write_bundle_file(&spec, &dir.join("out/t.fit")).unwrap();
        let blob = std::fs::read(dir.join("out/t.fit")).unwrap();
        let bundle = devicetree::fit::parse_bundle(&blob).unwrap();
        assert_eq!((bundle.name, bundle.vcpus), ("t", 3));
        assert_eq!(
            inspect_guest(&blob),
            Ok(GuestFile::Bundle {
                vcpus: 3,
                memory: 64 << 20
            })
        );
        assert_eq!(inspect_guest(&kernel), Ok(GuestFile::Image));
        assert!(inspect_guest(b"cpio").is_err());
        assert!(inspect_guest(&blob[..blob.len() / 2]).is_err());
        assert_eq!(
            (bundle.kernel, bundle.ramdisk),
            (&kernel[..], Some(&b"cpio"[..]))
        );

        let not_an_image = BundleSpec {
            kernel: dir.join("initrd"),
            ..spec
        };
        let error = write_bundle_file(&not_an_image, &dir.join("bad.fit")).unwrap_err();
        assert!(error.contains("not an arm64 Image"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A scratch directory for one test.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A fake arm64 Image of 4 KiB whose body says `tag`.
    fn fake_kernel(tag: &str) -> Vec<u8> {
        let mut kernel = vec![0u8; 4096];
        kernel[56..60].copy_from_slice(IMAGE_MAGIC);
        kernel[64..64 + tag.len()].copy_from_slice(tag.as_bytes());
        kernel
    }

    fn instance(dir: &Path, name: &str, kernel: &str, initrd: Option<&str>) -> InstanceSpec {
        InstanceSpec {
            spec: BundleSpec {
                kernel: dir.join(kernel),
                initrd: initrd.map(|initrd| dir.join(initrd)),
                name: name.into(),
                memory: 32 << 20,
                vcpus: 2,
                bootargs: format!("console=ttyAMA0 hostname={name}"),
            },
            start_at_boot: true,
            cpus: None,
            weight: 256,
        }
    }

    #[test]
    fn board_bundle_file_of_instances_and_merges() {
        let dir = scratch("board");
        let (kernel_a, kernel_b) = (fake_kernel("a"), fake_kernel("b"));
        std::fs::write(dir.join("a.Image"), &kernel_a).unwrap();
        std::fs::write(dir.join("b.Image"), &kernel_b).unwrap();
        std::fs::write(dir.join("initrd"), b"cpio").unwrap();
        // A single-guest bundle with the same kernel as "web": stored once when merged.
        let single = BundleSpec {
            kernel: dir.join("a.Image"),
            initrd: None,
            name: "single".into(),
            memory: 64 << 20,
            vcpus: 1,
            bootargs: String::new(),
        };
        write_bundle_file(&single, &dir.join("single.fit")).unwrap();
        let parts = [
            BoardPart::Instance(InstanceSpec {
                cpus: Some(0x3),
                weight: 512,
                ..instance(&dir, "web", "a.Image", Some("initrd"))
            }),
            BoardPart::Merge(dir.join("single.fit")),
            BoardPart::Instance(InstanceSpec {
                start_at_boot: false,
                ..instance(&dir, "db", "b.Image", Some("initrd"))
            }),
        ];
        write_board_bundle_file(&parts, &dir.join("out/board.fit")).unwrap();
        let blob = std::fs::read(dir.join("out/board.fit")).unwrap();
        assert!(blob.len() < 2 * 4096 + 2048, "{} bytes", blob.len());
        let board = parse_board_bundle(&blob).unwrap();
        let summary: Vec<_> = board
            .instances
            .iter()
            .map(|i| (i.name.as_str(), i.start_at_boot, i.cpus, i.weight))
            .collect();
        assert_eq!(
            summary,
            [
                ("web", true, Some(3), 512),
                ("single", true, None, 256),
                ("db", false, None, 256)
            ]
        );
        let guests: Vec<_> = board
            .instances
            .iter()
            .map(|i| i.guest.as_ref().unwrap())
            .collect();
        assert_eq!(guests[0].kernel, kernel_a);
        assert_eq!(guests[1].kernel, kernel_a);
        assert_eq!((guests[1].memory, guests[1].ramdisk), (64 << 20, None));
        assert_eq!(
            (guests[2].kernel, guests[2].ramdisk),
            (&kernel_b[..], Some(&b"cpio"[..]))
        );
        // For `run`: the started instances' vCPUs and memory, added up.
        assert_eq!(
            inspect_guest(&blob),
            Ok(GuestFile::Bundle {
                vcpus: 3,
                memory: 96 << 20
            })
        );

        // A board bundle merges too, and its settings survive.
        let again = [
            BoardPart::Merge(dir.join("out/board.fit")),
            BoardPart::Instance(instance(&dir, "extra", "b.Image", None)),
        ];
        write_board_bundle_file(&again, &dir.join("again.fit")).unwrap();
        let merged = std::fs::read(dir.join("again.fit")).unwrap();
        let merged = parse_board_bundle(&merged).unwrap();
        assert_eq!(merged.instances.len(), 4);
        assert_eq!(merged.instances[..3], board.instances[..]);

        // Refusals, each with its reason.
        let duplicate = [
            BoardPart::Merge(dir.join("single.fit")),
            BoardPart::Merge(dir.join("single.fit")),
        ];
        let error = write_board_bundle_file(&duplicate, &dir.join("x.fit")).unwrap_err();
        assert!(error.contains("two instances are named single"), "{error}");
        let not_a_kernel = [BoardPart::Instance(instance(&dir, "x", "initrd", None))];
        let error = write_board_bundle_file(&not_a_kernel, &dir.join("x.fit")).unwrap_err();
        assert!(error.contains("not an arm64 Image"), "{error}");
        let not_a_bundle = [BoardPart::Merge(dir.join("a.Image"))];
        let error = write_board_bundle_file(&not_a_bundle, &dir.join("x.fit")).unwrap_err();
        assert!(error.contains("not a guest bundle"), "{error}");
        let missing = [BoardPart::Merge(dir.join("nowhere.fit"))];
        let error = write_board_bundle_file(&missing, &dir.join("x.fit")).unwrap_err();
        assert!(error.contains("cannot read"), "{error}");
        let mut broken = std::fs::read(dir.join("single.fit")).unwrap();
        let at = broken.windows(4096).position(|w| w == kernel_a).unwrap() + 2000;
        broken[at] ^= 1;
        std::fs::write(dir.join("broken.fit"), &broken).unwrap();
        let error =
            write_board_bundle_file(&[BoardPart::Merge(dir.join("broken.fit"))], &dir.join("x"))
                .unwrap_err();
        assert!(
            error.contains("instance single is refused") && error.contains("hash check"),
            "{error}"
        );
        assert!(!dir.join("x.fit").exists() && !dir.join("x").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn inspect_reports_every_instance() {
        let (kernel, other) = (fake_kernel("k"), fake_kernel("other"));
        let guest = |name, kernel| GuestBundle {
            name,
            memory: 64 << 20,
            vcpus: 2,
            bootargs: "console=ttyAMA0 \u{1b}[2J".into(),
            kernel,
            ramdisk: Some(b"cpio"),
        };
        let instances = [
            BoardInstance {
                cpus: Some(0x5),
                weight: 100,
                ..BoardInstance::new(guest("web", &kernel))
            },
            BoardInstance {
                start_at_boot: false,
                ..BoardInstance::new(guest("db", &other))
            },
        ];
        let mut blob = write_board_bundle(&instances).unwrap();
        let (report, refused) = inspect_report(&blob).unwrap();
        assert_eq!(refused, 0);
        for line in [
            "board bundle: 2 instances, 1 started at boot",
            "instance web (configuration conf-web)",
            "  start at boot: yes",
            "  cpus:          0x5 (0, 2)",
            "  weight:        100",
            "  memory:        64 MiB",
            "  vcpus:         2",
            "  bootargs:      \"console=ttyAMA0 \\u{1b}[2J\"",
            &format!("  kernel:        4096 bytes, crc32 {:08x}", crc32(&kernel)),
            &format!("  ramdisk:       4 bytes, crc32 {:08x}", crc32(b"cpio")),
            "instance db (configuration conf-db)",
            "  start at boot: no",
            "  cpus:          any",
            "  weight:        256",
        ] {
            assert!(report.lines().any(|l| l == line), "{line:?} in\n{report}");
        }
        assert!(!report.contains('\u{1b}'));

        let at = blob.windows(4096).position(|w| w == other).unwrap() + 100;
        blob[at] ^= 1;
        let (report, refused) = inspect_report(&blob).unwrap();
        assert_eq!(refused, 1);
        assert!(
            report.contains("  REFUSED:       guest bundle image kernel-2 fails its hash check"),
            "{report}"
        );
        // `run` starts the one that is fine.
        assert_eq!(
            inspect_guest(&blob),
            Ok(GuestFile::Bundle {
                vcpus: 2,
                memory: 64 << 20
            })
        );

        let single = write_bundle(&guest("one", &kernel)).unwrap();
        let (report, refused) = inspect_report(&single).unwrap();
        assert_eq!(refused, 0);
        assert!(report.starts_with("single-guest bundle"), "{report}");
        assert!(
            report.contains("instance one (configuration conf-1)"),
            "{report}"
        );
        let (report, _) = inspect_report(&kernel).unwrap();
        assert!(report.contains("bare arm64 Image (4096 bytes"), "{report}");
        assert!(inspect_report(b"cpio").is_err());
        assert!(inspect_report(&single[..100]).is_err());
    }

    #[test]
    fn run_refuses_a_board_that_starts_nothing() {
        let kernel = fake_kernel("k");
        let mut idle = BoardInstance::new(GuestBundle {
            name: "idle",
            memory: 2 << 20,
            vcpus: 1,
            bootargs: String::new(),
            kernel: &kernel,
            ramdisk: None,
        });
        idle.start_at_boot = false;
        let blob = write_board_bundle(&[idle.clone()]).unwrap();
        assert!(inspect_guest(&blob).unwrap_err().contains("no instance"));
        idle.start_at_boot = true;
        let mut blob = write_board_bundle(&[idle]).unwrap();
        let at = blob.windows(4096).position(|w| w == kernel).unwrap() + 100;
        blob[at] ^= 1;
        let error = inspect_guest(&blob).unwrap_err();
        assert!(
            error.starts_with("idle: ") && error.contains("hash check"),
            "{error}"
        );
    }
}
