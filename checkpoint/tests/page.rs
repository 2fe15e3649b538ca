//! The page codec.

mod common;

use checkpoint::{Error, PAGE_SIZE, PageData, decode_page, encode_page};
use common::{noise_page, text_page};
use proptest::prelude::*;

fn round_trip(page: &[u8; PAGE_SIZE]) -> PageData {
    let encoded = encode_page(17, page);
    assert_eq!(encoded.index, 17);
    let mut out = [0x55u8; PAGE_SIZE];
    decode_page(&encoded.data, &mut out).unwrap();
    assert_eq!(&out, page);
    encoded.data
}

#[test]
fn zero_page() {
    assert_eq!(round_trip(&[0; PAGE_SIZE]), PageData::Zero);
}

#[test]
fn compressible_page() {
    match round_trip(&text_page()) {
        PageData::Lz4(data) => assert!(data.len() < 200, "{}", data.len()),
        other => panic!("{other:?}"),
    }
    let mut one = [0u8; PAGE_SIZE];
    one[4095] = 1;
    assert!(matches!(round_trip(&one), PageData::Lz4(_)));
}

#[test]
fn random_page_goes_raw() {
    match round_trip(&noise_page(99)) {
        PageData::Raw(data) => assert_eq!(data.len(), PAGE_SIZE),
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_size_raw_is_rejected() {
    let mut out = [0u8; PAGE_SIZE];
    for len in [0, 1, PAGE_SIZE - 1, PAGE_SIZE + 1] {
        assert_eq!(
            decode_page(&PageData::Raw(vec![0; len]), &mut out),
            Err(Error::RawPageSize { len })
        );
    }
}

#[test]
fn bad_lz4_is_rejected() {
    let mut out = [0u8; PAGE_SIZE];
    let PageData::Lz4(good) = encode_page(0, &text_page()).data else {
        panic!("not lz4")
    };
    // Cut short, garbage, empty.
    for bad in [good[..good.len() - 3].to_vec(), vec![0xff; 40], Vec::new()] {
        assert_eq!(
            decode_page(&PageData::Lz4(bad), &mut out),
            Err(Error::Lz4Page)
        );
    }
    // Valid LZ4 of the wrong size: half a page, and two pages.
    for size in [PAGE_SIZE / 2, PAGE_SIZE * 2] {
        let mut compressed = vec![0u8; lz4_flex::block::get_maximum_output_size(size)];
        let len = lz4_flex::block::compress_into(&vec![7u8; size], &mut compressed).unwrap();
        compressed.truncate(len);
        assert_eq!(
            decode_page(&PageData::Lz4(compressed), &mut out),
            Err(Error::Lz4Page)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_page_round_trips(seed in any::<u64>(), zeros in 0usize..PAGE_SIZE, fill in any::<u8>()) {
        let mut page = noise_page(seed);
        page[..zeros].fill(fill);
        round_trip(&page);
    }

    #[test]
    fn random_lz4_never_panics(data in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut out = [0u8; PAGE_SIZE];
        let _ = decode_page(&PageData::Lz4(data), &mut out);
    }
}
