//! Writer → Reader round trips, whole, byte by byte and in random pieces.

mod common;

use checkpoint::{
    EndSummary, Error, MAX_BODY, MAX_PAGES_PER_CHUNK, MemoryChunk, MemoryChunkBuilder, PAGE_SIZE,
    Page, PageData, Reader, Section, SectionKind, Writer, describe, encode_page,
};
use common::*;
use proptest::prelude::*;

fn expected(sections: &[Section], pages: u64) -> Vec<Section> {
    let mut all = sections.to_vec();
    all.push(Section::End(EndSummary {
        sections: sections.len() as u32,
        pages,
    }));
    all
}

#[test]
fn every_section_kind_round_trips_whole() {
    let sections = sample_sections(9);
    let bytes = stream(&sections);
    let read = read_all(&bytes).unwrap();
    assert_eq!(read, expected(&sections, 9));
    let kinds: Vec<SectionKind> = read.iter().map(Section::kind).collect();
    for kind in [
        SectionKind::Config,
        SectionKind::Memory,
        SectionKind::Vcpu,
        SectionKind::Vgic,
        SectionKind::Pl011,
        SectionKind::Paravirt,
        SectionKind::End,
    ] {
        assert!(kinds.contains(&kind), "{kind} missing");
    }
}

#[test]
fn round_trips_one_byte_at_a_time() {
    let sections = sample_sections(6);
    let bytes = stream(&sections);
    assert_eq!(
        read_in_pieces(&bytes, &[1]).unwrap(),
        expected(&sections, 6)
    );
}

#[test]
fn page_encodings_all_appear_in_the_sample() {
    let Section::Memory(chunk) = &sample_sections(3)[1] else {
        panic!("no memory section")
    };
    let kinds: Vec<&str> = chunk
        .pages
        .iter()
        .map(|p| match p.data {
            PageData::Zero => "zero",
            PageData::Lz4(_) => "lz4",
            PageData::Raw(_) => "raw",
        })
        .collect();
    assert_eq!(kinds, ["zero", "lz4", "raw"]);
}

#[test]
fn header_layout_is_as_documented() {
    let bytes = small_stream();
    assert_eq!(&bytes[..8], b"HVCKPT\0\0");
    assert_eq!(&bytes[8..16], &[3, 0, 0, 0, 0, 0, 0, 0]);
    // First frame: config, reserved 0, length, CRC of the body.
    assert_eq!(&bytes[16..20], &[1, 0, 0, 0]);
    let len = u32::from_le_bytes(bytes[20..24].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
    assert_eq!(crc, crc32fast::hash(&bytes[28..28 + len]));
    // Last frame: End, 0xFFFF.
    let end = bytes.len() - 12 - 2;
    assert_eq!(&bytes[end..end + 2], &[0xff, 0xff]);
}

#[test]
fn a_full_chunk_of_raw_pages_fits_and_a_huge_one_is_refused() {
    let mut builder = MemoryChunkBuilder::new();
    let mut chunks = Vec::new();
    for index in 0..(MAX_PAGES_PER_CHUNK as u64 + 1) {
        chunks.extend(builder.push(encode_page(index, &noise_page(index + 7))));
    }
    assert_eq!(builder.len(), 1);
    chunks.extend(builder.finish());
    assert_eq!(chunks.len(), 2);
    let mut writer = Writer::new();
    let mut out = Vec::new();
    for chunk in &chunks {
        assert!(
            chunk
                .pages
                .iter()
                .all(|p| matches!(p.data, PageData::Raw(_)))
        );
        writer
            .section(&Section::Memory(chunk.clone()), &mut out)
            .unwrap();
    }
    assert_eq!(writer.summary().pages, MAX_PAGES_PER_CHUNK as u64 + 1);

    let huge = MemoryChunk {
        pages: (0..(MAX_BODY / PAGE_SIZE + 1) as u64)
            .map(|index| Page {
                index,
                data: PageData::Raw(vec![0xa5; PAGE_SIZE]),
            })
            .collect(),
    };
    let before = out.len();
    let error = writer
        .section(&Section::Memory(huge), &mut out)
        .unwrap_err();
    assert!(matches!(
        error,
        Error::TooLarge {
            kind: SectionKind::Memory,
            ..
        }
    ));
    assert_eq!(out.len(), before, "nothing appended");
    assert_eq!(writer.summary().pages, MAX_PAGES_PER_CHUNK as u64 + 1);
}

#[test]
fn builder_splits_by_size_as_well_as_count() {
    let mut builder = MemoryChunkBuilder::new();
    let big = |index| Page {
        index,
        data: PageData::Raw(vec![1; MAX_BODY / 3]),
    };
    assert!(builder.push(big(0)).is_none());
    assert!(builder.push(big(1)).is_none());
    let full = builder.push(big(2)).expect("third page does not fit");
    assert_eq!(full.pages.len(), 2);
    assert_eq!(builder.len(), 1);
    let mut out = Vec::new();
    Writer::new()
        .section(&Section::Memory(full), &mut out)
        .unwrap();
}

#[test]
fn reader_memory_stays_bounded() {
    let sections = sample_sections(60);
    let bytes = stream(&sections);
    let mut reader = Reader::new();
    let mut most = 0;
    for piece in bytes.chunks(1000) {
        reader.push(piece);
        most = most.max(reader.buffered());
        while reader.next().unwrap().is_some() {}
    }
    reader.finish().unwrap();
    assert!(most < 2 * 1000 + 4 * 4200, "{most}");
}

#[test]
fn config_is_available_after_the_first_section() {
    let bytes = small_stream();
    let mut reader = Reader::new();
    reader.push(&bytes);
    assert!(reader.config().is_none());
    reader.next().unwrap();
    assert_eq!(reader.config(), Some(&config()));
}

#[test]
fn describe_says_what_is_inside() {
    let read = read_all(&stream(&sample_sections(3))).unwrap();
    let lines: Vec<String> = read.iter().map(describe).collect();
    assert_eq!(
        lines[0],
        "config: name=web-1.test_x ram=256 KiB at 0x40000000 vcpus=2 weight=256 gic=v3 spis=32 \
         cntfrq=62500000"
    );
    assert_eq!(
        lines[1],
        "memory: 3 pages (1 zero, 1 lz4, 1 raw), pages 0..=2"
    );
    assert_eq!(
        lines[2],
        "vcpu 0: mpidr=0x80000000 pc=0x40080000 pstate=0x3c5 on"
    );
    assert_eq!(
        lines[3],
        "vcpu 1: mpidr=0x80000001 pc=0x40080000 pstate=0x3c5 off suspended (resume at 0x40100000 \
         context 0x2a)"
    );
    assert!(
        lines[4].starts_with("vgic: ctlr=0x12 spis=32 (16 enabled"),
        "{}",
        lines[4]
    );
    assert!(
        lines[4].ends_with("redistributors=2 gic=v3"),
        "{}",
        lines[4]
    );
    assert!(lines[5].starts_with("pl011: cr=0x301"), "{}", lines[5]);
    assert_eq!(
        lines[6],
        "paravirt: notice intid=40 paused_ticks=1099511627776 notices_raised=3"
    );
    assert_eq!(lines[7], "end: 7 sections, 3 pages");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trips_in_random_pieces(sizes in prop::collection::vec(1usize..300, 1..20)) {
        let sections = sample_sections(4);
        let bytes = stream(&sections);
        prop_assert_eq!(read_in_pieces(&bytes, &sizes).unwrap(), expected(&sections, 4));
    }
}
