//! Guest bundles (FIT images): round trips, corrupt images and bad manifests.

use devicetree::fit::{
    FitError, GuestBundle, check_instance_name, crc32, parse_board_bundle, parse_bundle,
    write_bundle,
};
use devicetree::guest::RAM_BASE;
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

fn bundle<'a>(kernel: &'a [u8], ramdisk: Option<&'a [u8]>) -> GuestBundle<'a> {
    GuestBundle {
        name: "linux",
        memory: 256 << 20,
        vcpus: 2,
        bootargs: "console=ttyAMA0 rdinit=/init".into(),
        kernel,
        ramdisk,
    }
}

/// Offset of the first occurrence of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

#[test]
fn round_trip_with_ramdisk() {
    let (kernel, ramdisk) = (noise(100_003, 1), noise(5_000, 2));
    let original = bundle(&kernel, Some(&ramdisk));
    let blob = write_bundle(&original).unwrap();
    assert_eq!(parse_bundle(&blob).unwrap(), original);
}

#[test]
fn round_trip_without_ramdisk() {
    let kernel = noise(4096, 3);
    let original = bundle(&kernel, None);
    let blob = write_bundle(&original).unwrap();
    let parsed = parse_bundle(&blob).unwrap();
    assert_eq!(parsed, original);
    assert_eq!(parsed.ramdisk, None);
}

#[test]
fn round_trip_of_a_30_mib_kernel() {
    let kernel = noise(30 << 20, 4);
    let original = bundle(&kernel, Some(b"tiny"));
    let blob = write_bundle(&original).unwrap();
    assert_eq!(parse_bundle(&blob).unwrap(), original);
}

#[test]
fn bundle_is_a_u_boot_style_fit() {
    let kernel = noise(1000, 5);
    let blob = write_bundle(&bundle(&kernel, Some(b"initramfs"))).unwrap();
    let fdt = fdt::Fdt::new(&blob).unwrap();
    let string = |path: &str, name: &str| {
        let value = fdt.find_node(path).unwrap().property(name).unwrap().value;
        std::str::from_utf8(value)
            .unwrap()
            .trim_end_matches('\0')
            .to_string()
    };
    assert_eq!(string("/configurations", "default"), "conf-1");
    assert_eq!(string("/configurations/conf-1", "kernel"), "kernel");
    assert_eq!(string("/configurations/conf-1", "ramdisk"), "ramdisk");
    for (node, kind) in [("/images/kernel", "kernel"), ("/images/ramdisk", "ramdisk")] {
        assert_eq!(string(node, "type"), kind);
        assert_eq!(string(node, "arch"), "arm64");
        assert_eq!(string(node, "os"), "linux");
        assert_eq!(string(node, "compression"), "none");
        assert_eq!(string(&format!("{node}/hash-1"), "algo"), "crc32");
    }
    let value = fdt
        .find_node("/images/kernel/hash-1")
        .unwrap()
        .property("value")
        .unwrap()
        .value;
    assert_eq!(value, crc32(&kernel).to_be_bytes());
    // CRC-32 (IEEE) check value.
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
}

#[test]
fn flipped_kernel_byte_fails_the_kernel_hash() {
    let kernel = noise(10_000, 6);
    let mut blob = write_bundle(&bundle(&kernel, Some(b"ramdisk bytes"))).unwrap();
    let at = find(&blob, &kernel[..64]) + 5000;
    blob[at] ^= 0x40;
    let error = parse_bundle(&blob).unwrap_err();
    assert_eq!(
        error,
        FitError::HashMismatch {
            image: "kernel".into()
        }
    );
    assert!(error.to_string().contains("kernel"), "{error}");
}

#[test]
fn flipped_ramdisk_byte_fails_the_ramdisk_hash() {
    let kernel = noise(1000, 7);
    let mut blob = write_bundle(&bundle(&kernel, Some(b"ramdisk bytes"))).unwrap();
    let at = find(&blob, b"ramdisk bytes");
    blob[at] ^= 1;
    assert_eq!(
        parse_bundle(&blob).unwrap_err(),
        FitError::HashMismatch {
            image: "ramdisk".into()
        }
    );
}

#[test]
fn truncated_blob_is_an_error() {
    let kernel = noise(1000, 8);
    let blob = write_bundle(&bundle(&kernel, None)).unwrap();
    for len in [0, 10, 39, 40, 100, blob.len() / 2, blob.len() - 1] {
        assert!(
            matches!(parse_bundle(&blob[..len]), Err(FitError::Dtb(_))),
            "{len}"
        );
    }
}

/// A hand-written FIT with the configuration node's properties given by `conf`.
fn fit_with(default: Option<&str>, conf: &[(&str, Prop)]) -> Vec<u8> {
    let kernel = b"kernel image";
    let mut w = FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    let images = w.begin_node("images").unwrap();
    let node = w.begin_node("kernel").unwrap();
    w.property("data", kernel).unwrap();
    w.property_string("type", "kernel").unwrap();
    let hash = w.begin_node("hash-1").unwrap();
    w.property_string("algo", "crc32").unwrap();
    w.property_u32("value", crc32(kernel)).unwrap();
    w.end_node(hash).unwrap();
    w.end_node(node).unwrap();
    w.end_node(images).unwrap();
    let configs = w.begin_node("configurations").unwrap();
    if let Some(default) = default {
        w.property_string("default", default).unwrap();
    }
    let node = w.begin_node("conf-1").unwrap();
    for (name, value) in conf {
        match value {
            Prop::Str(s) => w.property_string(name, s).unwrap(),
            Prop::U32(v) => w.property_u32(name, *v).unwrap(),
            Prop::U64(v) => w.property_u64(name, *v).unwrap(),
        }
    }
    w.end_node(node).unwrap();
    w.end_node(configs).unwrap();
    w.end_node(root).unwrap();
    w.finish().unwrap()
}

#[derive(Clone, Copy)]
enum Prop {
    Str(&'static str),
    U32(u32),
    U64(u64),
}

const GOOD_CONF: [(&str, Prop); 5] = [
    ("kernel", Prop::Str("kernel")),
    ("hv,name", Prop::Str("hand")),
    ("hv,memory", Prop::U64(64 << 20)),
    ("hv,vcpus", Prop::U32(1)),
    ("hv,bootargs", Prop::Str("")),
];

fn conf_without(property: &str) -> Vec<(&'static str, Prop)> {
    GOOD_CONF
        .into_iter()
        .filter(|(name, _)| *name != property)
        .collect()
}

fn conf_with(property: &'static str, value: Prop) -> Vec<(&'static str, Prop)> {
    let mut conf = conf_without(property);
    conf.push((property, value));
    conf
}

#[test]
fn hand_written_fit_parses() {
    let blob = fit_with(Some("conf-1"), &GOOD_CONF);
    let parsed = parse_bundle(&blob).unwrap();
    assert_eq!(
        (parsed.name, parsed.memory, parsed.vcpus),
        ("hand", 64 << 20, 1)
    );
    assert_eq!(parsed.kernel, b"kernel image");
    // hv,memory may also be a single cell.
    let blob = fit_with(Some("conf-1"), &conf_with("hv,memory", Prop::U32(2 << 20)));
    assert_eq!(parse_bundle(&blob).unwrap().memory, 2 << 20);
}

/// A FIT whose kernel sits after the DTB, as `mkimage -E` writes it.
fn external_fit(kernel: &[u8], position: Option<u32>) -> Vec<u8> {
    let mut w = FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    let images = w.begin_node("images").unwrap();
    let node = w.begin_node("kernel").unwrap();
    w.property_string("type", "kernel").unwrap();
    w.property_u32("data-size", kernel.len() as u32).unwrap();
    match position {
        Some(position) => w.property_u32("data-position", position).unwrap(),
        None => w.property_u32("data-offset", 4).unwrap(),
    }
    let hash = w.begin_node("hash-1").unwrap();
    w.property_string("algo", "crc32").unwrap();
    w.property_u32("value", crc32(kernel)).unwrap();
    w.end_node(hash).unwrap();
    w.end_node(node).unwrap();
    w.end_node(images).unwrap();
    let configs = w.begin_node("configurations").unwrap();
    w.property_string("default", "conf-1").unwrap();
    let node = w.begin_node("conf-1").unwrap();
    w.property_string("kernel", "kernel").unwrap();
    w.property_string("hv,name", "ext").unwrap();
    w.property_u64("hv,memory", 2 << 20).unwrap();
    w.property_u32("hv,vcpus", 8).unwrap();
    w.property_string("hv,bootargs", "").unwrap();
    w.end_node(node).unwrap();
    w.end_node(configs).unwrap();
    w.end_node(root).unwrap();
    let mut blob = w.finish().unwrap();
    blob.resize(blob.len().next_multiple_of(4) + 4, 0xee);
    blob.extend_from_slice(kernel);
    blob
}

#[test]
fn external_data_is_found() {
    let kernel = noise(777, 12);
    let blob = external_fit(&kernel, None);
    assert_eq!(parse_bundle(&blob).unwrap().kernel, kernel);
    // Same layout whatever the position's value: measure with 0 first.
    let position = (external_fit(&kernel, Some(0)).len() - kernel.len()) as u32;
    let blob = external_fit(&kernel, Some(position));
    assert_eq!(parse_bundle(&blob).unwrap().kernel, kernel);
    // Data beyond the blob, or changed, is an error.
    assert!(matches!(
        parse_bundle(&blob[..blob.len() - 1]),
        Err(FitError::BadProperty {
            property: "data-size",
            ..
        })
    ));
    let mut changed = blob.clone();
    *changed.last_mut().unwrap() ^= 1;
    assert!(matches!(
        parse_bundle(&changed),
        Err(FitError::HashMismatch { .. })
    ));
}

#[test]
fn missing_configuration_is_an_error() {
    let blob = fit_with(None, &GOOD_CONF);
    assert!(matches!(
        parse_bundle(&blob),
        Err(FitError::MissingProperty {
            property: "default",
            ..
        })
    ));
    let blob = fit_with(Some("conf-2"), &GOOD_CONF);
    assert_eq!(
        parse_bundle(&blob),
        Err(FitError::MissingNode("/configurations/conf-2".into()))
    );
}

#[test]
fn missing_kernel_is_an_error() {
    let blob = fit_with(Some("conf-1"), &conf_without("kernel"));
    assert!(matches!(
        parse_bundle(&blob),
        Err(FitError::MissingProperty {
            property: "kernel",
            ..
        })
    ));
    let blob = fit_with(Some("conf-1"), &conf_with("kernel", Prop::Str("kernel-2")));
    assert_eq!(
        parse_bundle(&blob),
        Err(FitError::MissingNode("/images/kernel-2".into()))
    );
    let blob = fit_with(Some("conf-1"), &conf_with("ramdisk", Prop::Str("initrd")));
    assert_eq!(
        parse_bundle(&blob),
        Err(FitError::MissingNode("/images/initrd".into()))
    );
}

#[test]
fn missing_manifest_fields_are_errors() {
    for property in ["hv,name", "hv,memory", "hv,vcpus", "hv,bootargs"] {
        let blob = fit_with(Some("conf-1"), &conf_without(property));
        match parse_bundle(&blob) {
            Err(FitError::MissingProperty { property: p, .. }) => assert_eq!(p, property),
            other => panic!("{property}: {other:?}"),
        }
    }
}

#[test]
fn insane_manifests_are_errors() {
    for (property, value) in [
        ("hv,memory", Prop::U64(0)),
        ("hv,memory", Prop::U64((64 << 20) + 4096)),
        ("hv,vcpus", Prop::U32(0)),
        ("hv,vcpus", Prop::U32(9)),
    ] {
        let blob = fit_with(Some("conf-1"), &conf_with(property, value));
        assert!(
            matches!(parse_bundle(&blob), Err(FitError::BadManifest(_))),
            "{property}"
        );
    }
    for name in [
        "",
        "web\nel2  INFO: forged",
        "\u{1b}[2Jclear",
        "-starts-with-dash",
        "has space",
        "thirty-three-characters-long-name",
        "caf\u{e9}",
    ] {
        let blob = fit_with(Some("conf-1"), &conf_with("hv,name", Prop::Str(name)));
        assert!(
            matches!(parse_bundle(&blob), Err(FitError::BadName(_))),
            "{name:?}"
        );
    }
    for name in [
        "a",
        "web-1",
        "db_2.test",
        "thirty-two-characters-long-name0",
    ] {
        assert_eq!(check_instance_name(name), Ok(()), "{name}");
    }
    let blob = fit_with(Some("conf-1"), &conf_with("hv,vcpus", Prop::U64(1 << 32)));
    assert!(parse_bundle(&blob).is_err());
    let blob = fit_with(Some("conf-1"), &conf_with("hv,name", Prop::U32(7)));
    assert!(parse_bundle(&blob).is_err());
}

#[test]
fn writer_refuses_insane_manifests() {
    let kernel = [0u8; 64];
    let mut b = bundle(&kernel, None);
    b.vcpus = 9;
    assert!(matches!(write_bundle(&b), Err(FitError::BadManifest(_))));
    b.vcpus = 1;
    b.memory = RAM_BASE + 1;
    assert!(matches!(write_bundle(&b), Err(FitError::BadManifest(_))));
}

#[test]
fn random_corruption_never_panics() {
    let (kernel, ramdisk) = (noise(2000, 9), noise(300, 10));
    let blob = write_bundle(&bundle(&kernel, Some(&ramdisk))).unwrap();
    let picks = noise(4 * 20_000, 11);
    let mut rejected = 0;
    for (i, pick) in picks.chunks_exact(4).enumerate() {
        let r = u32::from_le_bytes(pick.try_into().unwrap()) as usize;
        let mut bad = blob.clone();
        match i % 4 {
            // Flip a bit anywhere, or in the header and structure block the parser walks.
            0 => bad[r % blob.len()] ^= 1 << ((r >> 24) % 8),
            1 => bad[r % 64] ^= 1 << ((r >> 24) % 8),
            2 => {
                let at = blob.len() - 1 - r % 600;
                bad[at] = (r >> 16) as u8;
            }
            _ => bad.truncate(r % blob.len()),
        }
        let single = parse_bundle(&bad);
        // The board reader sees the same bundle the same way: its one instance is the default.
        match parse_board_bundle(&bad) {
            Ok(board) => {
                assert!(!board.has_board_node, "{i}");
                let [instance] = board.instances.as_slice() else {
                    panic!("{i}: {board:?}")
                };
                assert_eq!(instance.guest, single, "{i}");
            }
            Err(error) => assert_eq!(Err(error), single, "{i}"),
        }
        rejected += usize::from(single.is_err());
    }
    // Most corruptions are caught (the rest hit description strings or padding).
    assert!(rejected > 10_000, "{rejected}");
}
