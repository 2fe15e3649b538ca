//! A bounded fuzz run of everything a guest bundle passes through before a byte of it is copied
//! into an instance: the bundle reader, the Image header and the layout planner. Mutated bundles
//! must give an error or a layout with every region inside the instance's RAM, never a panic.

use devicetree::fit::{GuestBundle, parse_bundle, write_bundle};
use el2::image::{ImageHeader, Region, plan_layout};
use proptest::prelude::*;

/// An arm64 Image header with the given fields, followed by `body` bytes of code.
fn kernel(text_offset: u64, image_size: u64, body: usize) -> Vec<u8> {
    let mut image = vec![0u8; 64 + body];
    image[8..16].copy_from_slice(&text_offset.to_le_bytes());
    image[16..24].copy_from_slice(&image_size.to_le_bytes());
    image[24..32].copy_from_slice(&2u64.to_le_bytes());
    image[56..60].copy_from_slice(b"ARM\x64");
    image
}

/// One change to a bundle: overwrite a byte, or cut the bundle short.
#[derive(Clone, Debug)]
enum Mutation {
    Set { at: usize, value: u8 },
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn mutated_bundles_are_refused_or_placed_inside_ram(
        text_offset in prop_oneof![any::<u64>(), (0u64..64).prop_map(|page| page << 12)],
        image_size in prop_oneof![any::<u64>(), 0u64..(8 << 20)],
        ramdisk_len in proptest::option::of(0usize..4096),
        memory_blocks in 1u64..8,
        mutations in proptest::collection::vec(mutation(), 0..8),
    ) {
        let kernel = kernel(text_offset, image_size, 256);
        let ramdisk = ramdisk_len.map(|len| vec![0x5a; len]);
        let bundle = GuestBundle {
            name: "fuzz",
            memory: memory_blocks << 21,
            vcpus: 1,
            bootargs: "console=ttyAMA0".into(),
            kernel: &kernel,
            ramdisk: ramdisk.as_deref(),
        };
        let mut blob = write_bundle(&bundle).expect("a valid bundle");
        for change in mutations {
            match change {
                Mutation::Set { at, value } => {
                    let len = blob.len();
                    if len > 0 {
                        blob[at % len] = value;
                    }
                }
                Mutation::Truncate(len) => blob.truncate(len % (blob.len() + 1)),
            }
        }
        let Ok(parsed) = parse_bundle(&blob) else { return Ok(()) };
        let Ok(header) = ImageHeader::parse(parsed.kernel) else { return Ok(()) };
        let ram = Region { start: 0x4000_0000, size: parsed.memory };
        let initrd = parsed.ramdisk.map(|ramdisk| ramdisk.len() as u64);
        let Ok(layout) = plan_layout(&header, ram, initrd, 0x1000) else { return Ok(()) };
        for region in [Some(layout.kernel), layout.initrd, Some(layout.dtb)].into_iter().flatten() {
            prop_assert!(region.is_inside(&ram), "{region:x?} outside {ram:x?}");
        }
        prop_assert!(layout.kernel.size >= parsed.kernel.len() as u64);
    }
}
