//! Mutated streams and random bodies: the reader must answer, never panic.

mod common;

use checkpoint::{Reader, Section};
use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    match *mutation {
        Mutation::Flip(at, mask) if len > 0 => bytes[at % len] ^= mask,
        Mutation::Insert(at, byte) => bytes.insert(at % (len + 1), byte),
        Mutation::Delete(at) if len > 0 => {
            bytes.remove(at % len);
        }
        Mutation::Truncate(at) => bytes.truncate(at % (len + 1)),
        _ => {}
    }
}

/// Reads `bytes` in pieces; returns whether the stream was accepted in full.
fn accepted(bytes: &[u8], piece: usize) -> bool {
    read_in_pieces(bytes, &[piece]).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutated_streams_never_panic(
        mutations in prop::collection::vec(mutation(), 1..6),
        piece in 1usize..5000,
    ) {
        let original = small_stream();
        let mut bytes = original.clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let ok = accepted(&bytes, piece);
        // Only an unchanged stream (mutations that cancel out) may pass.
        if bytes != original {
            prop_assert!(!ok, "accepted a damaged stream");
        }
    }

    /// Frames with a correct CRC but random bodies reach the decoder and the checks.
    #[test]
    fn random_bodies_never_panic(
        kind in prop_oneof![1u16..=7, Just(0xffff)],
        body in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut bytes = raw_stream(&[Section::Config(config())]);
        bytes.extend_from_slice(&frame(kind, 0, &body));
        let mut reader = Reader::new();
        reader.push(&bytes);
        while let Ok(Some(_)) = reader.next() {}
        let _ = reader.finish();
    }

    /// Random bodies that are valid postcard prefixes of the right types: mutate a real body.
    #[test]
    fn mutated_bodies_with_good_crc_never_panic(
        which in 0usize..6,
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let sections = sample_sections(3);
        let section = &sections[which.min(sections.len() - 1)];
        let mut body = Vec::new();
        checkpoint::Writer::new().section(section, &mut body).unwrap();
        let kind = u16::from_le_bytes([body[0], body[1]]);
        let mut body = body.split_off(12);
        for m in &mutations {
            apply(&mut body, m);
        }
        let mut bytes = if kind == 1 { header() } else { raw_stream(&[Section::Config(config())]) };
        bytes.extend_from_slice(&frame(kind, 0, &body));
        let mut reader = Reader::new();
        reader.push(&bytes);
        while let Ok(Some(_)) = reader.next() {}
        let _ = reader.finish();
    }
}
