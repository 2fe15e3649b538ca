//! Writing guest bundles (FIT images, `devicetree::fit`) from files on the host.

use std::path::{Path, PathBuf};

use devicetree::fit::{GuestBundle, is_fit, parse_bundle, write_bundle};

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

/// Tells a guest bundle, checked as the hypervisor reads it, from a bare arm64 Image.
pub fn inspect_guest(file: &[u8]) -> Result<GuestFile, String> {
    if is_fit(file) {
        let bundle = parse_bundle(file).map_err(|error| error.to_string())?;
        Ok(GuestFile::Bundle {
            vcpus: bundle.vcpus,
            memory: bundle.memory,
        })
    } else if is_arm64_image(file) {
        Ok(GuestFile::Image)
    } else {
        Err("neither a guest bundle (FIT) nor an arm64 Image".into())
    }
}

/// Reads the spec's files and writes the bundle to `out`.
pub fn write_bundle_file(spec: &BundleSpec, out: &Path) -> Result<(), String> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
    };
    let kernel = read(&spec.kernel)?;
    if !is_arm64_image(&kernel) {
        return Err(format!(
            "{} is not an arm64 Image (no \"ARM\\x64\" magic at offset 56)",
            spec.kernel.display()
        ));
    }
    let ramdisk = spec.initrd.as_deref().map(read).transpose()?;
    let blob = write_bundle(&GuestBundle {
        name: &spec.name,
        memory: spec.memory,
        vcpus: spec.vcpus,
        bootargs: spec.bootargs.clone(),
        kernel: &kernel,
        ramdisk: ramdisk.as_deref(),
    })
    .map_err(|error| error.to_string())?;
    if let Some(dir) = out.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    }
    std::fs::write(out, blob).map_err(|error| format!("cannot write {}: {error}", out.display()))
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
}
