//! Board bundles: every instance of a board in one FIT, each checked on its own.

use alloc::collections::BTreeSet;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::{
    BOARD_NODE, CONFIGURATIONS, Config, ConfigOut, DEFAULT_WEIGHT, FitError, FitOut, GuestBundle,
    ImageOut, Images, check_schedule, child, config_path, escaped, open, opt_str_list_prop,
    opt_str_prop, read_config, sections, str_prop, write_fit,
};

/// A bundle as the hypervisor reads it: every instance, each checked on its own.
#[derive(Debug, PartialEq, Eq)]
pub struct BoardBundle<'a> {
    /// Whether the FIT has a `/hv,board` node. Without one it is a single-guest bundle: its
    /// `default` configuration is its one instance, and it starts at boot.
    pub has_board_node: bool,
    /// With a board node: every `/configurations` child in node order, then each name `hv,start`
    /// lists that no configuration has (refused with [`FitError::MissingNode`]). Without one: the
    /// `default` configuration.
    pub instances: Vec<BundleInstance<'a>>,
}

impl<'a> BoardBundle<'a> {
    /// The instances that start at boot.
    pub fn started(&self) -> impl Iterator<Item = &BundleInstance<'a>> {
        self.instances
            .iter()
            .filter(|instance| instance.start_at_boot)
    }
}

/// One instance of a bundle: a configuration, its board settings, and the guest it describes or
/// why that guest is refused.
#[derive(Debug, PartialEq, Eq)]
pub struct BundleInstance<'a> {
    /// The configuration's node name under `/configurations`, as it is in the FIT (it may hold
    /// any UTF-8: print [`name`](Self::name) instead).
    pub config: String,
    /// `hv,name` if it is readable and valid ([`super::check_instance_name`]), else the
    /// configuration's node name with everything but printable ASCII escaped. Valid `hv,name`s
    /// are unique: a later instance with a name taken by an earlier one (even a refused one) is
    /// refused with [`FitError::DuplicateName`].
    pub name: String,
    /// Whether `/hv,board/hv,start` lists the configuration (without a board node: whether it is
    /// the `default` one, which is always the case).
    pub start_at_boot: bool,
    /// `hv,cpus`: a bitmask of the physical CPUs the instance's vCPUs may run on (bit n: CPU n);
    /// `None`: any CPU (or an unreadable `hv,cpus`, which refuses the instance).
    pub cpus: Option<u32>,
    /// `hv,weight`: the instance's share of the CPUs it competes for, relative to the others
    /// ([`DEFAULT_WEIGHT`] without one, or if it is unreadable, which refuses the instance).
    pub weight: u32,
    /// The instance's images and manifest, or why the instance is refused: an image that fails
    /// its hash, a bad manifest, bad `hv,cpus` or `hv,weight`, a duplicate name …
    pub guest: Result<GuestBundle<'a>, FitError>,
}

/// Reads every instance of a bundle, board or single-guest. The error is for a FIT that cannot be
/// read at all: a bad DTB, no `/images` or `/configurations`, a malformed `/hv,board/hv,start`,
/// or, without a board node, no `default` configuration. Anything else is an error of one
/// instance only, in its [`BundleInstance::guest`]: the other instances are still read.
///
/// With a `/hv,board` node, `hv,start` (a string list of configuration node names) says which
/// instances start at boot; without `hv,start`, the `default` configuration (if any) does.
/// Without a board node the FIT is a single-guest bundle, and its `default` configuration is its
/// one instance.
pub fn parse_board_bundle(blob: &[u8]) -> Result<BoardBundle<'_>, FitError> {
    let fdt = open(blob)?;
    let (root, images, configs) = sections(&fdt)?;
    let board = child(root, BOARD_NODE);
    let (entries, start) = match board {
        None => {
            let default = str_prop(configs, CONFIGURATIONS, "default")?;
            (
                alloc::vec![(default, child(configs, default))],
                alloc::vec![default],
            )
        }
        Some(board) => {
            let path = alloc::format!("/{BOARD_NODE}");
            let start = match opt_str_list_prop(board, &path, "hv,start")? {
                Some(start) => start,
                None => opt_str_prop(configs, CONFIGURATIONS, "default")?
                    .into_iter()
                    .collect(),
            };
            let mut entries: Vec<_> = configs.children().map(|c| (c.name, Some(c))).collect();
            let mut present: BTreeSet<&str> = entries.iter().map(|(name, _)| *name).collect();
            for &name in &start {
                if present.insert(name) {
                    entries.push((name, None));
                }
            }
            (entries, start)
        }
    };

    // Sets, not lists: a hostile bundle may have very many configurations.
    let start: BTreeSet<&str> = start.into_iter().collect();
    let mut images = Images::new(images);
    let (mut seen, mut taken) = (BTreeSet::new(), BTreeSet::new());
    let mut instances = Vec::with_capacity(entries.len());
    for (config, node) in entries {
        let refused = |error| Config {
            name: None,
            cpus: None,
            weight: DEFAULT_WEIGHT,
            guest: Err(error),
        };
        let read = match node {
            _ if !seen.insert(config) => refused(FitError::DuplicateNode(config_path(config))),
            None => refused(FitError::MissingNode(config_path(config))),
            Some(node) => read_config(&mut images, node, blob),
        };
        let mut guest = read.guest;
        if let Some(name) = read.name
            && !taken.insert(name)
            && guest.is_ok()
        {
            guest = Err(FitError::DuplicateName(name.into()));
        }
        instances.push(BundleInstance {
            config: config.into(),
            name: read.name.map_or_else(|| escaped(config), Into::into),
            start_at_boot: start.contains(&config),
            cpus: read.cpus,
            weight: read.weight,
            guest,
        });
    }
    Ok(BoardBundle {
        has_board_node: board.is_some(),
        instances,
    })
}

/// One instance of a board bundle, as [`write_board_bundle`] writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardInstance<'a> {
    /// Its images and manifest.
    pub guest: GuestBundle<'a>,
    /// Whether it starts at boot (listed in `/hv,board/hv,start`).
    pub start_at_boot: bool,
    /// `hv,cpus`: the physical CPUs its vCPUs may run on (bit n: CPU n), if not any.
    pub cpus: Option<u32>,
    /// `hv,weight`: 1..=[`super::MAX_WEIGHT`], [`DEFAULT_WEIGHT`] by default.
    pub weight: u32,
}

impl<'a> BoardInstance<'a> {
    /// `guest`, started at boot, on any CPU, with the default weight.
    pub fn new(guest: GuestBundle<'a>) -> Self {
        Self {
            guest,
            start_at_boot: true,
            cpus: None,
            weight: DEFAULT_WEIGHT,
        }
    }

    /// Checks the manifest ([`GuestBundle::validate`]), that `cpus` allows at least one CPU and
    /// that `weight` is in 1..=[`super::MAX_WEIGHT`].
    pub fn validate(&self) -> Result<(), FitError> {
        self.guest.validate()?;
        check_schedule(self.cpus, self.weight)
    }

    /// Its configuration's node name: `conf-` and the instance name.
    pub fn config_name(&self) -> String {
        alloc::format!("conf-{}", self.guest.name)
    }
}

/// Writes a board bundle: one configuration per instance (`conf-<name>`, in the given order),
/// each kernel and ramdisk stored once however many instances boot it (`kernel-1`, `kernel-2`,
/// `ramdisk-1` … in order of first use; images are the same if their bytes are), and a
/// `/hv,board` node whose `hv,start` lists the instances that start at boot. `default` names
/// the first instance that starts at boot (else the first one), for readers of single-guest
/// bundles. Each instance is validated ([`BoardInstance::validate`]); there is at least one, and
/// their names are unique. The root's `timestamp` is 0 so that the same inputs always give the
/// same bytes.
pub fn write_board_bundle(instances: &[BoardInstance]) -> Result<Vec<u8>, FitError> {
    let Some(first) = instances.first() else {
        return Err(FitError::BadManifest(
            "a board bundle has at least one instance",
        ));
    };
    for (i, instance) in instances.iter().enumerate() {
        instance.validate()?;
        let name = instance.guest.name;
        if instances[..i].iter().any(|other| other.guest.name == name) {
            return Err(FitError::DuplicateName(name.into()));
        }
    }

    // Each distinct image once, with the names of the instances that boot it.
    let mut images = Vec::new();
    let mut configs = Vec::with_capacity(instances.len());
    for instance in instances {
        let guest = &instance.guest;
        let kernel = store(&mut images, "kernel", guest.kernel, guest.name);
        let ramdisk = guest
            .ramdisk
            .map(|data| store(&mut images, "ramdisk", data, guest.name));
        configs.push(ConfigOut {
            node: instance.config_name(),
            guest,
            kernel,
            ramdisk,
            cpus: instance.cpus,
            weight: Some(instance.weight),
        });
    }
    let images = images
        .into_iter()
        .map(|(mut image, users)| {
            image.description = alloc::format!("{} of {}", image.description, users.join(", "));
            image
        })
        .collect();
    let start: Vec<String> = instances
        .iter()
        .filter(|instance| instance.start_at_boot)
        .map(BoardInstance::config_name)
        .collect();
    let default = start
        .first()
        .cloned()
        .unwrap_or_else(|| first.config_name());
    let names: Vec<&str> = instances.iter().map(|i| i.guest.name).collect();
    write_fit(&FitOut {
        description: alloc::format!("board bundle: {}", names.join(", ")),
        images,
        configs,
        default,
        start: Some(start),
    })
}

/// The node name of the `kind` image with these bytes, added to `images` (with `user`, the
/// instance that boots it) unless it is there already.
fn store<'a, 'n>(
    images: &mut Vec<(ImageOut<'a>, Vec<&'n str>)>,
    kind: &'static str,
    data: &'a [u8],
    user: &'n str,
) -> String {
    if let Some((image, users)) = images
        .iter_mut()
        .find(|(image, _)| image.kind == kind && image.data == data)
    {
        users.push(user);
        return image.node.clone();
    }
    let number = images
        .iter()
        .filter(|(image, _)| image.kind == kind)
        .count()
        + 1;
    let node = alloc::format!("{kind}-{number}");
    let description = if kind == "kernel" {
        "Linux kernel"
    } else {
        "initramfs"
    };
    images.push((
        ImageOut {
            node: node.clone(),
            kind,
            description: description.to_string(),
            data,
        },
        alloc::vec![user],
    ));
    node
}
