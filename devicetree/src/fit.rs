//! The guest bundle: a U-Boot FIT image (Flattened Image Tree, a DTB) carrying one instance's
//! kernel, optional initramfs and manifest. The host tool writes it, the hypervisor reads it.
//!
//! ```text
//! / { description; timestamp; #address-cells = <1>;
//!     images {
//!         kernel  { description; data; type = "kernel";  arch = "arm64"; os = "linux";
//!                   compression = "none"; hash-1 { algo = "crc32"; value = <crc>; }; };
//!         ramdisk { ... type = "ramdisk" ... };                       // optional
//!     };
//!     configurations { default = "conf-1";
//!         conf-1 { description; kernel = "kernel"; ramdisk = "ramdisk";
//!                  hv,name; hv,memory = /bits/ 64 <bytes>; hv,vcpus = <n>; hv,bootargs; };
//!     };
//! };
//! ```
//!
//! `docs/IMAGE-FORMAT.md` describes the format for users of `mkimage` and `dumpimage`.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use fdt::Fdt;
use fdt::node::FdtNode;
use vm_fdt::FdtWriter;

use crate::board::check_header;
use crate::{DtError, dtb_total_size};

/// Guest memory granule: an instance's RAM is a whole number of 2 MiB blocks.
pub const MEMORY_GRANULE: u64 = 2 << 20;
/// Most vCPUs an instance may have.
pub const MAX_VCPUS: u32 = 8;
/// Longest instance name.
pub const MAX_NAME_LEN: usize = 32;

/// Checks an instance name: 1 to 32 characters from `A-Z a-z 0-9 . _ -`, starting with a letter
/// or digit. Names appear in every log line and console prefix, so nothing else may reach the
/// operator's terminal through them.
pub fn check_instance_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err("an instance name has 1 to 32 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("an instance name starts with a letter or digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("an instance name has only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// The configuration that [`write_bundle`] writes and names as `default`.
pub const DEFAULT_CONFIG: &str = "conf-1";

/// One guest instance's bundle: its manifest and the images it boots.
#[derive(Clone, PartialEq, Eq)]
pub struct GuestBundle<'a> {
    /// Instance name (`hv,name`).
    pub name: &'a str,
    /// Guest RAM in bytes (`hv,memory`): a nonzero multiple of 2 MiB.
    pub memory: u64,
    /// Number of vCPUs (`hv,vcpus`), 1..=8.
    pub vcpus: u32,
    /// The guest kernel's command line (`hv,bootargs`).
    pub bootargs: String,
    /// The raw arm64 Image (`/images/kernel/data`).
    pub kernel: &'a [u8],
    /// The initramfs, if any (`/images/ramdisk/data`).
    pub ramdisk: Option<&'a [u8]>,
}

impl fmt::Debug for GuestBundle<'_> {
    /// Shows the images by size and CRC rather than byte by byte.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let image = |data: &[u8]| alloc::format!("{} bytes, crc32 {:08x}", data.len(), crc32(data));
        f.debug_struct("GuestBundle")
            .field("name", &self.name)
            .field("memory", &self.memory)
            .field("vcpus", &self.vcpus)
            .field("bootargs", &self.bootargs)
            .field("kernel", &image(self.kernel))
            .field("ramdisk", &self.ramdisk.map(image))
            .finish()
    }
}

impl GuestBundle<'_> {
    /// Checks the manifest: a safe name ([`check_instance_name`]), memory a nonzero multiple of
    /// 2 MiB, 1..=8 vCPUs.
    pub fn validate(&self) -> Result<(), FitError> {
        check_instance_name(self.name).map_err(FitError::BadName)?;
        if self.memory == 0 || !self.memory.is_multiple_of(MEMORY_GRANULE) {
            return Err(FitError::BadManifest(
                "hv,memory is not a nonzero multiple of 2 MiB",
            ));
        }
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(FitError::BadManifest("hv,vcpus is not in 1..=8"));
        }
        Ok(())
    }
}

/// Why a bundle cannot be read or written.
#[derive(Debug, PartialEq, Eq)]
pub enum FitError {
    /// The blob is not a well-formed DTB (header or structure block).
    Dtb(DtError),
    /// A required node is absent (its path).
    MissingNode(String),
    /// A node lacks a required property.
    MissingProperty {
        /// The node's path.
        node: String,
        /// The property.
        property: &'static str,
    },
    /// A property has a malformed or unsupported value.
    BadProperty {
        /// The node's path.
        node: String,
        /// The property.
        property: &'static str,
    },
    /// An image's data does not match one of its hashes.
    HashMismatch {
        /// The image's node name (`kernel`, `ramdisk`).
        image: String,
    },
    /// An image carries a hash this reader cannot check.
    UnsupportedHash {
        /// The image's node name.
        image: String,
        /// The hash node's `algo`.
        algo: String,
    },
    /// The manifest is present but not sane (see [`GuestBundle::validate`]).
    BadManifest(&'static str),
    /// `hv,name` breaks the naming rule (see [`check_instance_name`]).
    BadName(&'static str),
    /// The DTB writer failed.
    Write(vm_fdt::Error),
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dtb(e) => write!(f, "guest bundle is not a valid FIT: {e}"),
            Self::MissingNode(node) => write!(f, "guest bundle has no {node} node"),
            Self::MissingProperty { node, property } => {
                write!(f, "guest bundle node {node} has no {property}")
            }
            Self::BadProperty { node, property } => {
                write!(f, "guest bundle node {node} has a bad {property}")
            }
            Self::HashMismatch { image } => {
                write!(f, "guest bundle image {image} fails its hash check")
            }
            Self::UnsupportedHash { image, algo } => {
                write!(
                    f,
                    "guest bundle image {image} has an unsupported hash {algo}"
                )
            }
            Self::BadManifest(why) => write!(f, "guest bundle manifest: {why}"),
            Self::BadName(why) => write!(f, "guest bundle manifest: bad hv,name: {why}"),
            Self::Write(e) => write!(f, "writing the guest bundle failed: {e}"),
        }
    }
}

impl From<vm_fdt::Error> for FitError {
    fn from(e: vm_fdt::Error) -> Self {
        Self::Write(e)
    }
}

/// CRC-32 (IEEE 802.3, as U-Boot's `crc32` hash) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// True if `blob` starts like a flattened device tree, as a FIT bundle does (an arm64 Image
/// starts with a branch instruction instead).
pub fn is_fit(blob: &[u8]) -> bool {
    blob.get(..4)
        .is_some_and(|magic| magic == crate::board::FDT_MAGIC.to_be_bytes())
}

/// Reads and checks a guest bundle: DTB header and structure, the default configuration, its
/// kernel (and ramdisk, if named), every hash of those images, and the manifest.
pub fn parse_bundle(blob: &[u8]) -> Result<GuestBundle<'_>, FitError> {
    // The `fdt` crate panics on malformed input: validate everything it will trust first.
    check_header(blob).map_err(FitError::Dtb)?;
    let fdt = Fdt::new(blob)
        .map_err(|_| FitError::Dtb(DtError::BadHeader("rejected by the fdt parser")))?;
    let root = fdt
        .find_node("/")
        .ok_or(FitError::MissingNode("/".into()))?;
    let missing = |path: &str| FitError::MissingNode(path.into());
    let images = child(root, "images").ok_or_else(|| missing("/images"))?;
    let configs = child(root, "configurations").ok_or_else(|| missing("/configurations"))?;
    let default = str_prop(configs, "/configurations", "default")?;
    let conf_path = alloc::format!("/configurations/{default}");
    let conf = child(configs, default).ok_or_else(|| missing(&conf_path))?;

    let image = |property: &'static str| -> Result<Option<&[u8]>, FitError> {
        let Some(name) = opt_str_prop(conf, &conf_path, property)? else {
            return Ok(None);
        };
        let node = child(images, name).ok_or_else(|| missing(&alloc::format!("/images/{name}")))?;
        image_data(node, property, blob).map(Some)
    };
    let kernel = image("kernel")?.ok_or(FitError::MissingProperty {
        node: conf_path.clone(),
        property: "kernel",
    })?;
    let ramdisk = image("ramdisk")?;

    let bundle = GuestBundle {
        name: str_prop(conf, &conf_path, "hv,name")?,
        memory: uint_prop(conf, &conf_path, "hv,memory")?,
        vcpus: u32::try_from(uint_prop(conf, &conf_path, "hv,vcpus")?)
            .map_err(|_| FitError::BadManifest("hv,vcpus is not in 1..=8"))?,
        bootargs: opt_str_prop(conf, &conf_path, "hv,bootargs")?
            .ok_or(FitError::MissingProperty {
                node: conf_path.clone(),
                property: "hv,bootargs",
            })?
            .to_string(),
        kernel,
        ramdisk,
    };
    bundle.validate()?;
    Ok(bundle)
}

/// The child of `parent` named exactly `name`.
fn child<'b, 'a>(parent: FdtNode<'b, 'a>, name: &str) -> Option<FdtNode<'b, 'a>> {
    parent.children().find(|n| n.name == name)
}

/// An image node's data (embedded, or external as `mkimage -E` writes it), after checking its
/// type, arch, compression and every hash.
fn image_data<'a>(
    node: FdtNode<'_, 'a>,
    kind: &'static str,
    blob: &'a [u8],
) -> Result<&'a [u8], FitError> {
    let path = alloc::format!("/images/{}", node.name);
    let bad = |property| FitError::BadProperty {
        node: path.clone(),
        property,
    };
    let image_type = opt_str_prop(node, &path, "type")?;
    let type_ok = match kind {
        "kernel" => matches!(image_type, Some("kernel" | "kernel_noload")),
        _ => image_type == Some("ramdisk"),
    };
    if !type_ok {
        return Err(bad("type"));
    }
    if !matches!(
        opt_str_prop(node, &path, "compression")?,
        None | Some("none")
    ) {
        return Err(bad("compression"));
    }
    if !matches!(opt_str_prop(node, &path, "arch")?, None | Some("arm64")) {
        return Err(bad("arch"));
    }
    let data = match node.property("data") {
        Some(data) => data.value,
        None => external_data(node, &path, blob)?,
    };
    for hash in node.children().filter(|n| n.name.starts_with("hash")) {
        let hash_path = alloc::format!("{path}/{}", hash.name);
        let algo = str_prop(hash, &hash_path, "algo")?;
        if algo != "crc32" {
            return Err(FitError::UnsupportedHash {
                image: node.name.into(),
                algo: algo.into(),
            });
        }
        let value = hash.property("value").ok_or(FitError::MissingProperty {
            node: hash_path.clone(),
            property: "value",
        })?;
        let expected: [u8; 4] = value.value.try_into().map_err(|_| FitError::BadProperty {
            node: hash_path.clone(),
            property: "value",
        })?;
        if u32::from_be_bytes(expected) != crc32(data) {
            return Err(FitError::HashMismatch {
                image: node.name.into(),
            });
        }
    }
    Ok(data)
}

/// Data stored after the FIT's DTB: `data-size` bytes at `data-position` (from the start of the
/// blob) or at `data-offset` (from the end of the DTB, rounded up to 4 bytes).
fn external_data<'a>(
    node: FdtNode<'_, 'a>,
    path: &str,
    blob: &'a [u8],
) -> Result<&'a [u8], FitError> {
    let has = |property| node.property(property).is_some();
    if !has("data-size") || !(has("data-position") || has("data-offset")) {
        return Err(FitError::MissingProperty {
            node: path.into(),
            property: "data",
        });
    }
    let size = uint_prop(node, path, "data-size")?;
    let start = if has("data-position") {
        uint_prop(node, path, "data-position")?
    } else {
        let end_of_dtb = dtb_total_size(blob)
            .map_err(FitError::Dtb)?
            .next_multiple_of(4);
        uint_prop(node, path, "data-offset")?.saturating_add(end_of_dtb as u64)
    };
    usize::try_from(start)
        .ok()
        .zip(usize::try_from(size).ok())
        .and_then(|(start, size)| blob.get(start..start.checked_add(size)?))
        .ok_or(FitError::BadProperty {
            node: path.into(),
            property: "data-size",
        })
}

/// A string property (one NUL-terminated UTF-8 string), or `None` if absent.
fn opt_str_prop<'a>(
    node: FdtNode<'_, 'a>,
    path: &str,
    property: &'static str,
) -> Result<Option<&'a str>, FitError> {
    let Some(prop) = node.property(property) else {
        return Ok(None);
    };
    prop.value
        .strip_suffix(&[0])
        .filter(|s| !s.contains(&0))
        .and_then(|s| core::str::from_utf8(s).ok())
        .map(Some)
        .ok_or(FitError::BadProperty {
            node: path.into(),
            property,
        })
}

/// A required string property.
fn str_prop<'a>(
    node: FdtNode<'_, 'a>,
    path: &str,
    property: &'static str,
) -> Result<&'a str, FitError> {
    opt_str_prop(node, path, property)?.ok_or(FitError::MissingProperty {
        node: path.into(),
        property,
    })
}

/// A required one- or two-cell integer property.
fn uint_prop(node: FdtNode<'_, '_>, path: &str, property: &'static str) -> Result<u64, FitError> {
    let value = node
        .property(property)
        .ok_or(FitError::MissingProperty {
            node: path.into(),
            property,
        })?
        .value;
    match value.len() {
        4 => Ok(u64::from(u32::from_be_bytes(
            value.try_into().unwrap_or_default(),
        ))),
        8 => Ok(u64::from_be_bytes(value.try_into().unwrap_or_default())),
        _ => Err(FitError::BadProperty {
            node: path.into(),
            property,
        }),
    }
}

/// Writes `bundle` as a FIT image (after [`GuestBundle::validate`]). The root's `timestamp` is
/// 0 so that the same inputs always give the same bytes.
pub fn write_bundle(bundle: &GuestBundle) -> Result<Vec<u8>, FitError> {
    bundle.validate()?;
    let mut w = FdtWriter::new()?;
    let root = w.begin_node("")?;
    w.property_string(
        "description",
        &alloc::format!("guest bundle for instance {}", bundle.name),
    )?;
    w.property_u32("timestamp", 0)?;
    w.property_u32("#address-cells", 1)?;

    let images = w.begin_node("images")?;
    write_image(&mut w, "kernel", "Linux kernel", bundle.kernel)?;
    if let Some(ramdisk) = bundle.ramdisk {
        write_image(&mut w, "ramdisk", "initramfs", ramdisk)?;
    }
    w.end_node(images)?;

    let configs = w.begin_node("configurations")?;
    w.property_string("default", DEFAULT_CONFIG)?;
    let conf = w.begin_node(DEFAULT_CONFIG)?;
    w.property_string("description", bundle.name)?;
    w.property_string("kernel", "kernel")?;
    if bundle.ramdisk.is_some() {
        w.property_string("ramdisk", "ramdisk")?;
    }
    w.property_string("hv,name", bundle.name)?;
    w.property_u64("hv,memory", bundle.memory)?;
    w.property_u32("hv,vcpus", bundle.vcpus)?;
    w.property_string("hv,bootargs", &bundle.bootargs)?;
    w.end_node(conf)?;
    w.end_node(configs)?;

    w.end_node(root)?;
    Ok(w.finish()?)
}

/// One `/images` child: `kind` is both the node name and the U-Boot image type.
fn write_image(
    w: &mut FdtWriter,
    kind: &str,
    description: &str,
    data: &[u8],
) -> Result<(), FitError> {
    let node = w.begin_node(kind)?;
    w.property_string("description", description)?;
    w.property("data", data)?;
    w.property_string("type", kind)?;
    w.property_string("arch", "arm64")?;
    w.property_string("os", "linux")?;
    w.property_string("compression", "none")?;
    let hash = w.begin_node("hash-1")?;
    w.property_string("algo", "crc32")?;
    w.property_u32("value", crc32(data))?;
    w.end_node(hash)?;
    w.end_node(node)?;
    Ok(())
}
