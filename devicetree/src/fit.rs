//! Guest bundles: U-Boot FIT images (Flattened Image Trees, DTBs) carrying guest instances'
//! kernels, optional initramfs and manifests. The host tool writes them, the hypervisor reads them.
//!
//! A **single-guest bundle** ([`write_bundle`], [`parse_bundle`]) holds one instance:
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
//!                  hv,name; hv,memory = /bits/ 64 <bytes>; hv,vcpus = <n>; hv,bootargs;
//!                  hv,cpus = <mask>; hv,weight = <w>; };             // last two optional
//!     };
//! };
//! ```
//!
//! A **board bundle** ([`write_board_bundle`], [`parse_board_bundle`]) holds every instance of a
//! board: one configuration per instance, images shared between instances stored once, and a
//! `/hv,board` node naming the configurations that start at boot:
//!
//! ```text
//! / { ...
//!     images { kernel-1 {...}; ramdisk-1 {...}; kernel-2 {...}; };
//!     configurations { default = "conf-web";
//!         conf-web { kernel = "kernel-1"; ramdisk = "ramdisk-1"; hv,name = "web"; ...;
//!                    hv,cpus = <0x3>; hv,weight = <512>; };
//!         conf-db  { kernel = "kernel-1"; hv,name = "db"; ...; hv,weight = <256>; };
//!     };
//!     hv,board { description; hv,start = "conf-web", "conf-db"; };
//! };
//! ```
//!
//! `docs/IMAGE-FORMAT.md` describes the format for users of `mkimage` and `dumpimage`.

mod board_bundle;

pub use board_bundle::{
    BoardBundle, BoardInstance, BundleInstance, parse_board_bundle, write_board_bundle,
};

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::{self, Write as _};

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
/// Scheduling weight of an instance without `hv,weight`.
pub const DEFAULT_WEIGHT: u32 = 256;
/// Largest `hv,weight` (the least is 1).
pub const MAX_WEIGHT: u32 = 65535;
/// Name of the root's child that makes a FIT a board bundle (`hv,start` lists the configurations
/// that start at boot).
pub const BOARD_NODE: &str = "hv,board";

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
    /// An earlier instance of the board bundle already has this `hv,name`.
    DuplicateName(String),
    /// An earlier `/configurations` child has this path too.
    DuplicateNode(String),
    /// The DTB writer failed.
    Write(vm_fdt::Error),
}

/// Shows a string taken from a bundle with everything but printable ASCII escaped, so that node
/// names cannot carry newlines or terminal escapes into log lines.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                ' '..='~' if c != '\\' => f.write_char(c)?,
                _ => write!(f, "{}", c.escape_default())?,
            }
        }
        Ok(())
    }
}

/// `text` as [`Escaped`] shows it.
fn escaped(text: &str) -> String {
    Escaped(text).to_string()
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dtb(e) => write!(f, "guest bundle is not a valid FIT: {e}"),
            Self::MissingNode(node) => write!(f, "guest bundle has no {} node", Escaped(node)),
            Self::MissingProperty { node, property } => {
                write!(f, "guest bundle node {} has no {property}", Escaped(node))
            }
            Self::BadProperty { node, property } => {
                write!(
                    f,
                    "guest bundle node {} has a bad {property}",
                    Escaped(node)
                )
            }
            Self::HashMismatch { image } => {
                write!(
                    f,
                    "guest bundle image {} fails its hash check",
                    Escaped(image)
                )
            }
            Self::UnsupportedHash { image, algo } => {
                write!(
                    f,
                    "guest bundle image {} has an unsupported hash {}",
                    Escaped(image),
                    Escaped(algo)
                )
            }
            Self::BadManifest(why) => write!(f, "guest bundle manifest: {why}"),
            Self::BadName(why) => write!(f, "guest bundle manifest: bad hv,name: {why}"),
            Self::DuplicateName(name) => write!(
                f,
                "guest bundle manifest: hv,name {} is taken by an earlier instance",
                Escaped(name)
            ),
            Self::DuplicateNode(node) => {
                write!(f, "guest bundle has a second {} node", Escaped(node))
            }
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

/// Reads and checks a single-guest bundle, or the `default` configuration of a board bundle: DTB
/// header and structure, the default configuration, its kernel (and ramdisk, if named), every hash
/// of those images, and the manifest (`hv,cpus` and `hv,weight` too, if present).
///
/// [`parse_board_bundle`] reads every instance of a board bundle.
pub fn parse_bundle(blob: &[u8]) -> Result<GuestBundle<'_>, FitError> {
    let fdt = open(blob)?;
    let (_, images, configs) = sections(&fdt)?;
    let default = str_prop(configs, CONFIGURATIONS, "default")?;
    let conf =
        child(configs, default).ok_or_else(|| FitError::MissingNode(config_path(default)))?;
    read_config(&mut Images::new(images), conf, blob).guest
}

/// Path of the configurations node.
const CONFIGURATIONS: &str = "/configurations";

/// Path of the configuration node `name`.
fn config_path(name: &str) -> String {
    alloc::format!("{CONFIGURATIONS}/{name}")
}

/// Checks the DTB header and walks its whole structure block, then opens it: the `fdt` crate
/// panics on malformed input, so everything it will trust is validated first.
fn open(blob: &[u8]) -> Result<Fdt<'_>, FitError> {
    check_header(blob).map_err(FitError::Dtb)?;
    Fdt::new(blob).map_err(|_| FitError::Dtb(DtError::BadHeader("rejected by the fdt parser")))
}

/// The root, `/images` and `/configurations` nodes.
fn sections<'b, 'a>(
    fdt: &'b Fdt<'a>,
) -> Result<(FdtNode<'b, 'a>, FdtNode<'b, 'a>, FdtNode<'b, 'a>), FitError> {
    let root = fdt
        .find_node("/")
        .ok_or(FitError::MissingNode("/".into()))?;
    let images = child(root, "images").ok_or(FitError::MissingNode("/images".into()))?;
    let configs =
        child(root, "configurations").ok_or(FitError::MissingNode(CONFIGURATIONS.into()))?;
    Ok((root, images, configs))
}

/// One configuration, read and checked on its own.
struct Config<'a> {
    /// `hv,name`, if it is readable and valid.
    name: Option<&'a str>,
    /// `hv,cpus`, if present and readable.
    cpus: Option<u32>,
    /// `hv,weight` if present and readable, else [`DEFAULT_WEIGHT`].
    weight: u32,
    /// The instance, or why it is refused.
    guest: Result<GuestBundle<'a>, FitError>,
}

/// The `/images` children by name (the first of each name, as [`child`] finds it), and those
/// already read and checked, by name and kind: several configurations may name the same image,
/// whose hashes then need computing once. Maps rather than lists, as a hostile bundle may have
/// very many images and configurations.
struct Images<'b, 'a> {
    nodes: BTreeMap<&'a str, FdtNode<'b, 'a>>,
    checked: BTreeMap<(&'a str, &'static str), &'a [u8]>,
}

impl<'b, 'a> Images<'b, 'a> {
    fn new(images: FdtNode<'b, 'a>) -> Self {
        let mut nodes = BTreeMap::new();
        for node in images.children() {
            nodes.entry(node.name).or_insert(node);
        }
        Self {
            nodes,
            checked: BTreeMap::new(),
        }
    }
}

/// Reads the configuration `conf`: its images and their hashes, its manifest and its scheduling
/// properties. Nothing here is an error for anything but this configuration.
fn read_config<'a>(
    images: &mut Images<'_, 'a>,
    conf: FdtNode<'_, 'a>,
    blob: &'a [u8],
) -> Config<'a> {
    let path = config_path(conf.name);
    let name = opt_str_prop(conf, &path, "hv,name")
        .ok()
        .flatten()
        .filter(|name| check_instance_name(name).is_ok());
    let cpus = opt_u32_prop(conf, &path, "hv,cpus");
    let weight = opt_u32_prop(conf, &path, "hv,weight");
    let (cpus_value, weight_value) = (
        cpus.as_ref().ok().copied().flatten(),
        weight
            .as_ref()
            .ok()
            .copied()
            .flatten()
            .unwrap_or(DEFAULT_WEIGHT),
    );
    let guest = read_guest(images, conf, &path, blob).and_then(|guest| {
        check_schedule(cpus?, weight?.unwrap_or(DEFAULT_WEIGHT))?;
        Ok(guest)
    });
    Config {
        name,
        cpus: cpus_value,
        weight: weight_value,
        guest,
    }
}

/// Checks the scheduling properties: `hv,cpus` allows at least one CPU, `hv,weight` is in
/// 1..=[`MAX_WEIGHT`].
fn check_schedule(cpus: Option<u32>, weight: u32) -> Result<(), FitError> {
    if cpus == Some(0) {
        return Err(FitError::BadManifest("hv,cpus allows no CPU"));
    }
    if !(1..=MAX_WEIGHT).contains(&weight) {
        return Err(FitError::BadManifest("hv,weight is not in 1..=65535"));
    }
    Ok(())
}

/// The configuration's images (checked) and manifest (validated).
fn read_guest<'a>(
    images: &mut Images<'_, 'a>,
    conf: FdtNode<'_, 'a>,
    conf_path: &str,
    blob: &'a [u8],
) -> Result<GuestBundle<'a>, FitError> {
    let mut image = |kind: &'static str| -> Result<Option<&'a [u8]>, FitError> {
        let Some(name) = opt_str_prop(conf, conf_path, kind)? else {
            return Ok(None);
        };
        if let Some(&data) = images.checked.get(&(name, kind)) {
            return Ok(Some(data));
        }
        let node = *images
            .nodes
            .get(name)
            .ok_or_else(|| FitError::MissingNode(alloc::format!("/images/{name}")))?;
        let data = image_data(node, kind, blob)?;
        images.checked.insert((node.name, kind), data);
        Ok(Some(data))
    };
    let kernel = image("kernel")?.ok_or(FitError::MissingProperty {
        node: conf_path.into(),
        property: "kernel",
    })?;
    let ramdisk = image("ramdisk")?;

    let bundle = GuestBundle {
        name: str_prop(conf, conf_path, "hv,name")?,
        memory: uint_prop(conf, conf_path, "hv,memory")?,
        vcpus: u32::try_from(uint_prop(conf, conf_path, "hv,vcpus")?)
            .map_err(|_| FitError::BadManifest("hv,vcpus is not in 1..=8"))?,
        bootargs: opt_str_prop(conf, conf_path, "hv,bootargs")?
            .ok_or(FitError::MissingProperty {
                node: conf_path.into(),
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

/// An optional one-cell property.
fn opt_u32_prop(
    node: FdtNode<'_, '_>,
    path: &str,
    property: &'static str,
) -> Result<Option<u32>, FitError> {
    let Some(prop) = node.property(property) else {
        return Ok(None);
    };
    let bytes: [u8; 4] = prop.value.try_into().map_err(|_| FitError::BadProperty {
        node: path.into(),
        property,
    })?;
    Ok(Some(u32::from_be_bytes(bytes)))
}

/// An optional string list (`"a", "b"`: NUL-terminated, nonempty UTF-8 strings one after the
/// other; an empty property is the empty list).
fn opt_str_list_prop<'a>(
    node: FdtNode<'_, 'a>,
    path: &str,
    property: &'static str,
) -> Result<Option<Vec<&'a str>>, FitError> {
    let Some(prop) = node.property(property) else {
        return Ok(None);
    };
    let bad = || FitError::BadProperty {
        node: path.into(),
        property,
    };
    if prop.value.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let body = prop.value.strip_suffix(&[0]).ok_or_else(bad)?;
    body.split(|&b| b == 0)
        .map(|s| {
            core::str::from_utf8(s)
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(bad)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Writes `bundle` as a single-guest FIT image (after [`GuestBundle::validate`]): images `kernel`
/// and `ramdisk`, configuration `conf-1`, no board node. The root's `timestamp` is 0 so that the
/// same inputs always give the same bytes.
pub fn write_bundle(bundle: &GuestBundle) -> Result<Vec<u8>, FitError> {
    bundle.validate()?;
    let mut images = alloc::vec![ImageOut {
        node: "kernel".into(),
        kind: "kernel",
        description: "Linux kernel".into(),
        data: bundle.kernel,
    }];
    if let Some(ramdisk) = bundle.ramdisk {
        images.push(ImageOut {
            node: "ramdisk".into(),
            kind: "ramdisk",
            description: "initramfs".into(),
            data: ramdisk,
        });
    }
    let conf = ConfigOut {
        node: DEFAULT_CONFIG.into(),
        guest: bundle,
        kernel: "kernel".into(),
        ramdisk: bundle.ramdisk.map(|_| "ramdisk".into()),
        cpus: None,
        weight: None,
    };
    write_fit(&FitOut {
        description: alloc::format!("guest bundle for instance {}", bundle.name),
        images,
        configs: alloc::vec![conf],
        default: DEFAULT_CONFIG.into(),
        start: None,
    })
}

/// A FIT to write.
struct FitOut<'a> {
    /// The root's description.
    description: String,
    /// The `/images` children.
    images: Vec<ImageOut<'a>>,
    /// The `/configurations` children.
    configs: Vec<ConfigOut<'a, 'a>>,
    /// `/configurations/default`.
    default: String,
    /// `/hv,board/hv,start`, if there is a board node.
    start: Option<Vec<String>>,
}

/// One `/images` child to write.
struct ImageOut<'a> {
    node: String,
    /// The U-Boot image type: `kernel` or `ramdisk`.
    kind: &'static str,
    description: String,
    data: &'a [u8],
}

/// One `/configurations` child to write.
struct ConfigOut<'g, 'a> {
    node: String,
    guest: &'g GuestBundle<'a>,
    /// The `/images` children it names.
    kernel: String,
    ramdisk: Option<String>,
    cpus: Option<u32>,
    weight: Option<u32>,
}

/// Writes `fit`; the root's `timestamp` is 0 so that the same inputs always give the same bytes.
fn write_fit(fit: &FitOut) -> Result<Vec<u8>, FitError> {
    let mut w = FdtWriter::new()?;
    let root = w.begin_node("")?;
    w.property_string("description", &fit.description)?;
    w.property_u32("timestamp", 0)?;
    w.property_u32("#address-cells", 1)?;

    let images = w.begin_node("images")?;
    for image in &fit.images {
        let node = w.begin_node(&image.node)?;
        w.property_string("description", &image.description)?;
        w.property("data", image.data)?;
        w.property_string("type", image.kind)?;
        w.property_string("arch", "arm64")?;
        w.property_string("os", "linux")?;
        w.property_string("compression", "none")?;
        let hash = w.begin_node("hash-1")?;
        w.property_string("algo", "crc32")?;
        w.property_u32("value", crc32(image.data))?;
        w.end_node(hash)?;
        w.end_node(node)?;
    }
    w.end_node(images)?;

    let configs = w.begin_node("configurations")?;
    w.property_string("default", &fit.default)?;
    for conf in &fit.configs {
        let guest = conf.guest;
        let node = w.begin_node(&conf.node)?;
        w.property_string("description", guest.name)?;
        w.property_string("kernel", &conf.kernel)?;
        if let Some(ramdisk) = &conf.ramdisk {
            w.property_string("ramdisk", ramdisk)?;
        }
        w.property_string("hv,name", guest.name)?;
        w.property_u64("hv,memory", guest.memory)?;
        w.property_u32("hv,vcpus", guest.vcpus)?;
        w.property_string("hv,bootargs", &guest.bootargs)?;
        if let Some(cpus) = conf.cpus {
            w.property_u32("hv,cpus", cpus)?;
        }
        if let Some(weight) = conf.weight {
            w.property_u32("hv,weight", weight)?;
        }
        w.end_node(node)?;
    }
    w.end_node(configs)?;

    if let Some(start) = &fit.start {
        let board = w.begin_node(BOARD_NODE)?;
        w.property_string("description", "instances of this board")?;
        w.property_string_list("hv,start", start.clone())?;
        w.end_node(board)?;
    }

    w.end_node(root)?;
    Ok(w.finish()?)
}
