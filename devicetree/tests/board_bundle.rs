//! Board bundles (one FIT, several instances): round trips, shared images, per-instance errors,
//! single-guest bundles read as boards, and a FIT written by U-Boot's mkimage.

use devicetree::fit::{
    BoardBundle, BoardInstance, BundleInstance, DEFAULT_WEIGHT, FitError, GuestBundle, crc32,
    parse_board_bundle, parse_bundle, write_board_bundle, write_bundle,
};
use vm_fdt::FdtWriter;

/// Deterministic pseudo-random bytes (xorshift), so failures repeat.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn guest<'a>(name: &'a str, kernel: &'a [u8], ramdisk: Option<&'a [u8]>) -> GuestBundle<'a> {
    GuestBundle {
        name,
        memory: 64 << 20,
        vcpus: 2,
        bootargs: format!("console=ttyAMA0 hostname={name}"),
        kernel,
        ramdisk,
    }
}

/// How many times `needle` occurs in `haystack`.
fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

fn instance<'b, 'a>(board: &'b BoardBundle<'a>, name: &str) -> &'b BundleInstance<'a> {
    board
        .instances
        .iter()
        .find(|instance| instance.name == name)
        .unwrap_or_else(|| panic!("no instance {name} in {board:?}"))
}

fn string(fdt: &fdt::Fdt, path: &str, name: &str) -> String {
    let value = fdt.find_node(path).unwrap().property(name).unwrap().value;
    std::str::from_utf8(value)
        .unwrap()
        .trim_end_matches('\0')
        .to_string()
}

#[test]
fn round_trip_of_three_instances() {
    let (kernel_a, kernel_b, ramdisk) = (noise(30_001, 1), noise(20_000, 2), noise(700, 3));
    let web = BoardInstance {
        cpus: Some(0x3),
        weight: 512,
        ..BoardInstance::new(guest("web", &kernel_a, Some(&ramdisk)))
    };
    let db = BoardInstance {
        guest: GuestBundle {
            memory: 256 << 20,
            vcpus: 1,
            ..guest("db", &kernel_b, None)
        },
        ..BoardInstance::new(guest("db", &kernel_b, None))
    };
    let batch = BoardInstance {
        start_at_boot: false,
        cpus: Some(0x80),
        weight: 1,
        ..BoardInstance::new(guest("batch.1", &kernel_a, Some(&ramdisk)))
    };
    let written = [web, db, batch];
    let blob = write_board_bundle(&written).unwrap();
    let board = parse_board_bundle(&blob).unwrap();
    assert!(board.has_board_node);
    let expected: Vec<BundleInstance> = written
        .iter()
        .map(|w| BundleInstance {
            config: format!("conf-{}", w.guest.name),
            name: w.guest.name.into(),
            start_at_boot: w.start_at_boot,
            cpus: w.cpus,
            weight: w.weight,
            guest: Ok(w.guest.clone()),
        })
        .collect();
    assert_eq!(board.instances, expected);
    let started: Vec<&str> = board.started().map(|i| i.name.as_str()).collect();
    assert_eq!(started, ["web", "db"]);

    // The FIT's layout, as U-Boot tools see it.
    let fdt = fdt::Fdt::new(&blob).unwrap();
    assert_eq!(string(&fdt, "/hv,board", "hv,start"), "conf-web\0conf-db");
    assert_eq!(string(&fdt, "/configurations", "default"), "conf-web");
    assert_eq!(
        string(&fdt, "/configurations/conf-db", "kernel"),
        "kernel-2"
    );
    assert_eq!(
        string(&fdt, "/configurations/conf-batch.1", "ramdisk"),
        "ramdisk-1"
    );
    // The default configuration is what single-guest readers take.
    assert_eq!(parse_bundle(&blob).unwrap(), written[0].guest);
    // Writing is deterministic.
    assert_eq!(write_board_bundle(&written).unwrap(), blob);
}

#[test]
fn shared_images_are_stored_once() {
    let (kernel, ramdisk) = (noise(100_000, 4), noise(10_000, 5));
    let instances: Vec<BoardInstance> = ["a", "b", "c", "d"]
        .into_iter()
        .map(|name| BoardInstance::new(guest(name, &kernel, None)))
        .collect();
    let blob = write_board_bundle(&instances).unwrap();
    assert!(blob.len() < kernel.len() + 4096, "{} bytes", blob.len());
    assert_eq!(count(&blob, &kernel[..64]), 1);
    let fdt = fdt::Fdt::new(&blob).unwrap();
    let images: Vec<_> = fdt.find_node("/images").unwrap().children().collect();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].name, "kernel-1");
    assert_eq!(
        images[0].property("data").unwrap().value.len(),
        kernel.len()
    );
    assert_eq!(
        string(&fdt, "/images/kernel-1", "description"),
        "Linux kernel of a, b, c, d"
    );
    for name in ["a", "b", "c", "d"] {
        let path = format!("/configurations/conf-{name}");
        assert_eq!(string(&fdt, &path, "kernel"), "kernel-1");
    }
    let board = parse_board_bundle(&blob).unwrap();
    assert_eq!(board.instances.len(), 4);
    for instance in &board.instances {
        // Each instance borrows the one copy.
        let parsed = instance.guest.as_ref().unwrap();
        assert_eq!(parsed.kernel, kernel);
        assert!(blob.as_ptr_range().contains(&parsed.kernel.as_ptr()));
    }

    // Identical bytes are shared whatever the source; different bytes, or a kernel and a ramdisk
    // with the same bytes, are not.
    let copy = kernel.clone();
    let mixed = [
        BoardInstance::new(guest("a", &kernel, Some(&ramdisk))),
        BoardInstance::new(guest("b", &copy, Some(&ramdisk))),
        BoardInstance::new(guest("c", &ramdisk, Some(&kernel))),
    ];
    let blob = write_board_bundle(&mixed).unwrap();
    assert_eq!(count(&blob, &kernel[..64]), 2);
    assert_eq!(count(&blob, &ramdisk[..64]), 2);
    let fdt = fdt::Fdt::new(&blob).unwrap();
    let names: Vec<&str> = fdt
        .find_node("/images")
        .unwrap()
        .children()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["kernel-1", "ramdisk-1", "kernel-2", "ramdisk-2"]);
    let board = parse_board_bundle(&blob).unwrap();
    for (instance, written) in board.instances.iter().zip(&mixed) {
        assert_eq!(instance.guest.as_ref(), Ok(&written.guest));
    }
}

#[test]
fn a_corrupted_image_refuses_only_the_instances_that_boot_it() {
    let (shared, own) = (noise(8_000, 6), noise(8_000, 7));
    let instances = [
        BoardInstance::new(guest("one", &shared, None)),
        BoardInstance::new(guest("two", &own, None)),
        BoardInstance::new(guest("three", &shared, None)),
    ];
    let blob = write_board_bundle(&instances).unwrap();

    let mut bad = blob.clone();
    let at = bad.windows(64).position(|w| w == &own[..64]).unwrap() + 4_000;
    bad[at] ^= 0x10;
    let board = parse_board_bundle(&bad).unwrap();
    assert_eq!(
        instance(&board, "two").guest,
        Err(FitError::HashMismatch {
            image: "kernel-2".into()
        })
    );
    for name in ["one", "three"] {
        assert_eq!(
            instance(&board, name).guest.as_ref().unwrap().kernel,
            shared
        );
    }

    let mut bad = blob.clone();
    let at = bad.windows(64).position(|w| w == &shared[..64]).unwrap() + 100;
    bad[at] ^= 0x01;
    let board = parse_board_bundle(&bad).unwrap();
    for name in ["one", "three"] {
        assert_eq!(
            instance(&board, name).guest,
            Err(FitError::HashMismatch {
                image: "kernel-1".into()
            })
        );
    }
    assert!(instance(&board, "two").guest.is_ok());
}

/// A property value for a hand-written FIT.
#[derive(Clone, Copy, Debug)]
enum Prop {
    Str(&'static str),
    U32(u32),
    U64(u64),
    Bytes(&'static [u8]),
}

/// A hand-written configuration: its node name and properties.
type Conf = (&'static str, Vec<(&'static str, Prop)>);

/// A sane configuration named `node` for instance `name`, booting image `kernel`.
fn conf(node: &'static str, name: &'static str) -> Conf {
    (
        node,
        vec![
            ("kernel", Prop::Str("kernel")),
            ("hv,name", Prop::Str(name)),
            ("hv,memory", Prop::U64(32 << 20)),
            ("hv,vcpus", Prop::U32(1)),
            ("hv,bootargs", Prop::Str("console=ttyAMA0")),
        ],
    )
}

/// `conf` with `property` set to `value` (replaced or added).
fn with(mut conf: Conf, property: &'static str, value: Prop) -> Conf {
    conf.1.retain(|(name, _)| *name != property);
    conf.1.push((property, value));
    conf
}

const KERNEL: &[u8] = b"kernel image";

/// A hand-written FIT: one image `kernel`, these configurations, `default` if given, and a board
/// node with these `hv,start` properties if given (`None` inside: a board node without one).
fn fit(default: Option<&str>, configs: &[Conf], start: Option<Option<Prop>>) -> Vec<u8> {
    let mut w = FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    let images = w.begin_node("images").unwrap();
    let node = w.begin_node("kernel").unwrap();
    w.property("data", KERNEL).unwrap();
    w.property_string("type", "kernel").unwrap();
    let hash = w.begin_node("hash-1").unwrap();
    w.property_string("algo", "crc32").unwrap();
    w.property_u32("value", crc32(KERNEL)).unwrap();
    w.end_node(hash).unwrap();
    w.end_node(node).unwrap();
    w.end_node(images).unwrap();
    let node = w.begin_node("configurations").unwrap();
    if let Some(default) = default {
        w.property_string("default", default).unwrap();
    }
    for (name, props) in configs {
        let conf = w.begin_node(name).unwrap();
        for (name, value) in props {
            set(&mut w, name, *value);
        }
        w.end_node(conf).unwrap();
    }
    w.end_node(node).unwrap();
    if let Some(start) = start {
        let board = w.begin_node("hv,board").unwrap();
        if let Some(start) = start {
            set(&mut w, "hv,start", start);
        }
        w.end_node(board).unwrap();
    }
    w.end_node(root).unwrap();
    w.finish().unwrap()
}

fn set(w: &mut FdtWriter, name: &str, value: Prop) {
    match value {
        Prop::Str(s) => w.property_string(name, s).unwrap(),
        Prop::U32(v) => w.property_u32(name, v).unwrap(),
        Prop::U64(v) => w.property_u64(name, v).unwrap(),
        Prop::Bytes(b) => w.property(name, b).unwrap(),
    }
}

#[test]
fn each_instance_is_checked_on_its_own() {
    let configs = [
        conf("conf-good", "good"),
        with(conf("conf-novcpu", "novcpu"), "hv,vcpus", Prop::U32(0)),
        with(conf("conf-manyvcpus", "many"), "hv,vcpus", Prop::U32(9)),
        with(
            conf("conf-badname", "x"),
            "hv,name",
            Prop::Str("bad name\n"),
        ),
        conf("conf-again", "good"),
        with(
            conf("conf-nokernel", "nokernel"),
            "kernel",
            Prop::Str("vmlinuz"),
        ),
        with(
            conf("conf-badmem", "badmem"),
            "hv,memory",
            Prop::U64(3 << 20),
        ),
        conf("conf-fine", "fine"),
    ];
    let start = Prop::Bytes(b"conf-good\0conf-novcpu\0conf-badname\0conf-again\0conf-fine\0");
    let blob = fit(None, &configs, Some(Some(start)));
    let board = parse_board_bundle(&blob).unwrap();
    let summary: Vec<(&str, &str, bool)> = board
        .instances
        .iter()
        .map(|i| (i.config.as_str(), i.name.as_str(), i.start_at_boot))
        .collect();
    assert_eq!(
        summary,
        [
            ("conf-good", "good", true),
            ("conf-novcpu", "novcpu", true),
            ("conf-manyvcpus", "many", false),
            ("conf-badname", "conf-badname", true),
            ("conf-again", "good", true),
            ("conf-nokernel", "nokernel", false),
            ("conf-badmem", "badmem", false),
            ("conf-fine", "fine", true),
        ]
    );
    let errors: Vec<Option<FitError>> =
        board.instances.into_iter().map(|i| i.guest.err()).collect();
    assert!(
        matches!(
            errors.as_slice(),
            [
                None,
                Some(FitError::BadManifest("hv,vcpus is not in 1..=8")),
                Some(FitError::BadManifest("hv,vcpus is not in 1..=8")),
                Some(FitError::BadName(_)),
                Some(FitError::DuplicateName(name)),
                Some(FitError::MissingNode(node)),
                Some(FitError::BadManifest(_)),
                None,
            ] if name == "good" && node == "/images/vmlinuz"
        ),
        "{errors:?}"
    );
    let duplicate = errors[4].as_ref().unwrap().to_string();
    assert!(duplicate.contains("hv,name good is taken"), "{duplicate}");
}

#[test]
fn a_refused_instance_still_claims_its_name() {
    // The first "web" cannot start, but the second is still the duplicate: which instance is
    // refused does not depend on which one is broken.
    let configs = [
        with(conf("conf-a", "web"), "hv,vcpus", Prop::U32(0)),
        conf("conf-b", "web"),
    ];
    let blob = fit(None, &configs, Some(None));
    let board = parse_board_bundle(&blob).unwrap();
    assert!(matches!(
        board.instances[0].guest,
        Err(FitError::BadManifest(_))
    ));
    assert_eq!(
        board.instances[1].guest,
        Err(FitError::DuplicateName("web".into()))
    );
    // A configuration named like another instance, refused for its own name, claims nothing.
    let configs = [
        with(conf("web", "x"), "hv,name", Prop::U32(7)),
        conf("conf-b", "web"),
    ];
    let blob = fit(None, &configs, Some(None));
    let board = parse_board_bundle(&blob).unwrap();
    assert_eq!(board.instances[0].name, "web");
    assert!(matches!(
        board.instances[0].guest,
        Err(FitError::BadProperty {
            property: "hv,name",
            ..
        })
    ));
    assert!(board.instances[1].guest.is_ok());
}

#[test]
fn scheduling_properties() {
    let configs = [
        with(
            with(conf("conf-a", "a"), "hv,cpus", Prop::U32(0xf0)),
            "hv,weight",
            Prop::U32(65535),
        ),
        conf("conf-b", "b"),
        with(conf("conf-c", "c"), "hv,cpus", Prop::U32(0)),
        with(conf("conf-d", "d"), "hv,weight", Prop::U32(0)),
        with(conf("conf-e", "e"), "hv,weight", Prop::U32(65536)),
        with(conf("conf-f", "f"), "hv,cpus", Prop::U64(3)),
        with(conf("conf-g", "g"), "hv,weight", Prop::Str("heavy")),
    ];
    let blob = fit(None, &configs, Some(None));
    let board = parse_board_bundle(&blob).unwrap();
    let fields: Vec<(Option<u32>, u32, bool)> = board
        .instances
        .iter()
        .map(|i| (i.cpus, i.weight, i.guest.is_ok()))
        .collect();
    assert_eq!(
        fields,
        [
            (Some(0xf0), 65535, true),
            (None, DEFAULT_WEIGHT, true),
            (Some(0), DEFAULT_WEIGHT, false),
            (None, 0, false),
            (None, 65536, false),
            (None, DEFAULT_WEIGHT, false),
            (None, DEFAULT_WEIGHT, false),
        ]
    );
    assert_eq!(
        board.instances[2].guest,
        Err(FitError::BadManifest("hv,cpus allows no CPU"))
    );
    assert_eq!(
        board.instances[5].guest,
        Err(FitError::BadProperty {
            node: "/configurations/conf-f".into(),
            property: "hv,cpus"
        })
    );
    assert!(matches!(
        board.instances[6].guest,
        Err(FitError::BadProperty {
            property: "hv,weight",
            ..
        })
    ));
}

#[test]
fn the_start_list() {
    let configs = [conf("conf-a", "a"), conf("conf-b", "b")];
    let started = |blob: &[u8]| -> Vec<String> {
        parse_board_bundle(blob)
            .unwrap()
            .started()
            .map(|i| i.config.clone())
            .collect()
    };
    // Without hv,start, the default configuration starts (if there is one).
    assert_eq!(
        started(&fit(Some("conf-b"), &configs, Some(None))),
        ["conf-b"]
    );
    assert!(started(&fit(None, &configs, Some(None))).is_empty());
    // An empty list starts nothing; names may repeat.
    assert!(started(&fit(Some("conf-a"), &configs, Some(Some(Prop::Bytes(b""))))).is_empty());
    let twice = Prop::Bytes(b"conf-b\0conf-b\0");
    assert_eq!(started(&fit(None, &configs, Some(Some(twice)))), ["conf-b"]);
    // A name no configuration has is a refused instance of its own.
    let typo = Prop::Bytes(b"conf-a\0conf-typo\0");
    let blob = fit(None, &configs, Some(Some(typo)));
    let board = parse_board_bundle(&blob).unwrap();
    assert_eq!(board.instances.len(), 3);
    let last = &board.instances[2];
    assert_eq!(
        (last.config.as_str(), last.name.as_str()),
        ("conf-typo", "conf-typo")
    );
    assert!(last.start_at_boot);
    assert_eq!(
        last.guest,
        Err(FitError::MissingNode("/configurations/conf-typo".into()))
    );
    assert!(board.instances[0].guest.is_ok() && board.instances[0].start_at_boot);
    assert!(board.instances[1].guest.is_ok() && !board.instances[1].start_at_boot);
    // A start list that cannot be read leaves nothing to go by.
    for bad in [
        Prop::Bytes(b"conf-a"),
        Prop::Bytes(b"\0"),
        Prop::Bytes(b"conf-a\0\0conf-b\0"),
        Prop::Bytes(b"conf-\xff\0"),
        Prop::U32(1),
    ] {
        assert_eq!(
            parse_board_bundle(&fit(None, &configs, Some(Some(bad)))),
            Err(FitError::BadProperty {
                node: "/hv,board".into(),
                property: "hv,start"
            }),
            "{bad:?}"
        );
    }
}

#[test]
fn without_a_board_node_only_the_default_starts() {
    let kernel = noise(5_000, 8);
    let single = GuestBundle {
        vcpus: 3,
        ..guest("linux", &kernel, Some(b"initramfs"))
    };
    let blob = write_bundle(&single).unwrap();
    assert_eq!(
        parse_board_bundle(&blob).unwrap(),
        BoardBundle {
            has_board_node: false,
            instances: vec![BundleInstance {
                config: "conf-1".into(),
                name: "linux".into(),
                start_at_boot: true,
                cpus: None,
                weight: DEFAULT_WEIGHT,
                guest: Ok(single),
            }]
        }
    );

    // Other configurations (say, for U-Boot) are not instances.
    let configs = [
        ("conf-uboot", vec![("kernel", Prop::Str("kernel"))]),
        conf("conf-hv", "hv"),
    ];
    let blob = fit(Some("conf-hv"), &configs, None);
    let board = parse_board_bundle(&blob).unwrap();
    assert_eq!(board.instances.len(), 1);
    assert_eq!(board.instances[0].name, "hv");
    assert!(board.instances[0].start_at_boot && board.instances[0].guest.is_ok());
    // A default that names no configuration is a refused instance; no default at all is an
    // error of the whole bundle, as for parse_bundle.
    let blob = fit(Some("conf-x"), &configs, None);
    let board = parse_board_bundle(&blob).unwrap();
    assert_eq!(
        board.instances[0].guest,
        Err(FitError::MissingNode("/configurations/conf-x".into()))
    );
    assert!(matches!(
        parse_board_bundle(&fit(None, &configs, None)),
        Err(FitError::MissingProperty {
            property: "default",
            ..
        })
    ));
}

#[test]
fn whole_bundle_errors() {
    let blob = fit(None, &[conf("conf-a", "a")], Some(None));
    for len in [0, 10, 39, 40, blob.len() / 2, blob.len() - 1] {
        assert!(
            matches!(parse_board_bundle(&blob[..len]), Err(FitError::Dtb(_))),
            "{len}"
        );
    }
    let mut w = FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    let images = w.begin_node("images").unwrap();
    w.end_node(images).unwrap();
    let board = w.begin_node("hv,board").unwrap();
    w.end_node(board).unwrap();
    w.end_node(root).unwrap();
    assert_eq!(
        parse_board_bundle(&w.finish().unwrap()),
        Err(FitError::MissingNode("/configurations".into()))
    );
}

#[test]
fn node_names_reach_no_terminal_unescaped() {
    // The writer refuses such a node name: patch it in.
    let (placeholder, hostile) = (b"conf-0123456789", b"conf\x1b[2J\nforged");
    let configs = [with(
        conf("conf-0123456789", "x"),
        "hv,name",
        Prop::Str("bad\nname"),
    )];
    let patch = |mut blob: Vec<u8>| {
        let at = blob.windows(15).position(|w| w == placeholder).unwrap();
        blob[at..at + 15].copy_from_slice(hostile);
        blob
    };
    let blob = patch(fit(None, &configs, Some(None)));
    let board = parse_board_bundle(&blob).unwrap();
    let instance = &board.instances[0];
    assert_eq!(instance.config, "conf\u{1b}[2J\nforged");
    assert_eq!(instance.name, "conf\\u{1b}[2J\\nforged");
    assert!(matches!(instance.guest, Err(FitError::BadName(_))));
    let typo = Prop::Bytes(b"conf\x1b[31m\0");
    let blob = patch(fit(None, &configs, Some(Some(typo))));
    let board = parse_board_bundle(&blob).unwrap();
    let error = board.instances[1].guest.as_ref().unwrap_err().to_string();
    assert_eq!(
        error,
        "guest bundle has no /configurations/conf\\u{1b}[31m node"
    );
}

#[test]
fn duplicate_configuration_nodes() {
    let configs = [conf("conf-a", "a"), conf("conf-a", "b")];
    let blob = fit(None, &configs, Some(None));
    let board = parse_board_bundle(&blob).unwrap();
    assert!(board.instances[0].guest.is_ok());
    assert_eq!(
        board.instances[1].guest,
        Err(FitError::DuplicateNode("/configurations/conf-a".into()))
    );
}

#[test]
fn the_writer_refuses_what_the_reader_would() {
    let kernel = noise(100, 9);
    let ok = BoardInstance::new(guest("ok", &kernel, None));
    assert!(matches!(
        write_board_bundle(&[]),
        Err(FitError::BadManifest(_))
    ));
    assert_eq!(
        write_board_bundle(&[ok.clone(), ok.clone()]),
        Err(FitError::DuplicateName("ok".into()))
    );
    for bad in [
        BoardInstance {
            cpus: Some(0),
            ..ok.clone()
        },
        BoardInstance {
            weight: 0,
            ..ok.clone()
        },
        BoardInstance {
            weight: 65536,
            ..ok.clone()
        },
        BoardInstance::new(GuestBundle {
            vcpus: 0,
            ..ok.guest.clone()
        }),
        BoardInstance::new(GuestBundle {
            name: "no way",
            ..ok.guest.clone()
        }),
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
        assert!(
            write_board_bundle(&[ok.clone(), bad.clone()]).is_err(),
            "{bad:?}"
        );
    }
    // No instance starts at boot: the first is still the default.
    let idle = [BoardInstance {
        start_at_boot: false,
        ..ok.clone()
    }];
    let blob = write_board_bundle(&idle).unwrap();
    assert_eq!(parse_board_bundle(&blob).unwrap().started().count(), 0);
    assert_eq!(parse_bundle(&blob).unwrap(), ok.guest);
}

#[test]
fn random_corruption_of_a_board_bundle_never_panics() {
    let (kernel_a, kernel_b, ramdisk) = (noise(1500, 10), noise(900, 11), noise(300, 12));
    let instances = [
        BoardInstance {
            cpus: Some(3),
            ..BoardInstance::new(guest("web", &kernel_a, Some(&ramdisk)))
        },
        BoardInstance::new(guest("db", &kernel_b, None)),
        BoardInstance {
            start_at_boot: false,
            ..BoardInstance::new(guest("spare", &kernel_a, Some(&ramdisk)))
        },
    ];
    let blob = write_board_bundle(&instances).unwrap();
    let picks = noise(4 * 20_000, 13);
    let (mut unreadable, mut refused) = (0, 0);
    for (i, pick) in picks.chunks_exact(4).enumerate() {
        let r = u32::from_le_bytes(pick.try_into().unwrap()) as usize;
        let mut bad = blob.clone();
        match i % 4 {
            0 => bad[r % blob.len()] ^= 1 << ((r >> 24) % 8),
            1 => bad[r % 64] ^= 1 << ((r >> 24) % 8),
            2 => {
                // The tail: the configurations and the board node.
                let at = blob.len() - 1 - r % 900;
                bad[at] = (r >> 16) as u8;
            }
            _ => bad.truncate(r % blob.len()),
        }
        let _ = parse_bundle(&bad);
        match parse_board_bundle(&bad) {
            Err(_) => unreadable += 1,
            Ok(board) => {
                refused += usize::from(board.instances.iter().any(|i| i.guest.is_err()));
                for instance in board.instances {
                    // Whatever is accepted is sane.
                    if let Ok(guest) = instance.guest {
                        assert!(guest.validate().is_ok());
                        assert!(instance.weight >= 1 && instance.cpus != Some(0));
                    }
                }
            }
        }
    }
    // Most corruptions are caught (the rest hit descriptions or padding), many of them by one
    // instance's checks while the bundle as a whole still reads.
    assert!(unreadable + refused > 12_000, "{unreadable} + {refused}");
    assert!(refused > 2_000, "{refused}");
}

/// The fixtures written by mkimage from `tests/fixtures/board.its`.
fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn a_board_bundle_from_mkimage_loads() {
    let (web_kernel, db_kernel, db_ramdisk) = (
        fixture("board-web.Image"),
        fixture("board-db.Image"),
        fixture("board-db.cpio"),
    );
    // The inputs are what board.its says they are.
    for image in [&web_kernel, &db_kernel] {
        assert_eq!(image.len(), 4096);
        assert_eq!(&image[56..60], b"ARM\x64");
        assert_eq!(image[8..16], 0u64.to_le_bytes());
        assert_eq!(image[16..24], 4096u64.to_le_bytes());
        assert_eq!(image[24..32], 2u64.to_le_bytes());
    }
    for file in ["board.fit", "board-external.fit"] {
        let blob = fixture(file);
        let board = parse_board_bundle(&blob).unwrap();
        assert!(board.has_board_node, "{file}");
        assert_eq!(
            board.instances,
            [
                BundleInstance {
                    config: "conf-web".into(),
                    name: "web".into(),
                    start_at_boot: true,
                    cpus: Some(0x3),
                    weight: 512,
                    guest: Ok(GuestBundle {
                        name: "web",
                        memory: 64 << 20,
                        vcpus: 2,
                        bootargs: "console=ttyAMA0 quiet".into(),
                        kernel: &web_kernel,
                        ramdisk: None,
                    }),
                },
                BundleInstance {
                    config: "conf-db".into(),
                    name: "db".into(),
                    start_at_boot: true,
                    cpus: None,
                    weight: DEFAULT_WEIGHT,
                    guest: Ok(GuestBundle {
                        name: "db",
                        memory: 32 << 20,
                        vcpus: 1,
                        bootargs: "console=ttyAMA0 rdinit=/init".into(),
                        kernel: &db_kernel,
                        ramdisk: Some(&db_ramdisk),
                    }),
                },
            ],
            "{file}"
        );
        assert_eq!(parse_bundle(&blob).unwrap().name, "web", "{file}");
    }
    // mkimage computed the hashes: a flipped byte of db's kernel refuses db alone.
    let mut blob = fixture("board.fit");
    let at = blob
        .windows(47)
        .position(|w| w == b"fake arm64 Image for the board.its fixture: db\n")
        .unwrap();
    blob[at] ^= 0x20;
    let board = parse_board_bundle(&blob).unwrap();
    assert!(board.instances[0].guest.is_ok());
    assert_eq!(
        board.instances[1].guest,
        Err(FitError::HashMismatch {
            image: "kernel-db".into()
        })
    );
}

#[test]
fn very_many_configurations() {
    // Each configuration names an image of its own that does not exist, and the start list names
    // as many more: list lookups would make this quadratic.
    let mut w = FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    let images = w.begin_node("images").unwrap();
    for i in 0..5_000 {
        let node = w.begin_node(&format!("kernel-{i}")).unwrap();
        w.property_string("type", "kernel").unwrap();
        w.property("data", KERNEL).unwrap();
        w.end_node(node).unwrap();
    }
    w.end_node(images).unwrap();
    let configs = w.begin_node("configurations").unwrap();
    let mut start = Vec::new();
    for i in 0..20_000 {
        let node = w.begin_node(&format!("conf-{i}")).unwrap();
        w.property_string("kernel", &format!("kernel-{}", 5_000 + i))
            .unwrap();
        w.property_string("hv,name", &format!("i{i}")).unwrap();
        w.end_node(node).unwrap();
        start.push(format!("conf-x{i}"));
    }
    w.end_node(configs).unwrap();
    let board = w.begin_node("hv,board").unwrap();
    w.property_string_list("hv,start", start).unwrap();
    w.end_node(board).unwrap();
    w.end_node(root).unwrap();
    let blob = w.finish().unwrap();
    let board = parse_board_bundle(&blob).unwrap();
    assert_eq!(board.instances.len(), 40_000);
    assert!(board.instances.iter().all(|i| i.guest.is_err()));
}
