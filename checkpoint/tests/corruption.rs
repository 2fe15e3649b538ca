//! Damaged streams: truncated, bit-flipped, wrong version, oversize frames.

mod common;

use checkpoint::{
    Error, FRAME_HEADER_LEN, HEADER_LEN, MAX_BODY, Reader, Section, SectionKind, VERSION,
};
use common::*;

/// Feeds the whole stream, then reads and finishes; `Ok` only if everything passed.
fn outcome(bytes: &[u8]) -> Result<usize, Error> {
    let mut reader = Reader::new();
    reader.push(bytes);
    let mut count = 0;
    while reader.next()?.is_some() {
        count += 1;
    }
    reader.finish()?;
    Ok(count)
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    let bytes = small_stream();
    assert!(outcome(&bytes).is_ok());
    for len in 0..bytes.len() {
        let result = outcome(&bytes[..len]);
        assert_eq!(result, Err(Error::Truncated), "truncated to {len} bytes");
    }
}

#[test]
fn every_flipped_byte_is_an_error() {
    let bytes = small_stream();
    for offset in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut damaged = bytes.clone();
            damaged[offset] ^= mask;
            assert!(
                outcome(&damaged).is_err(),
                "byte {offset} ^ {mask:#x} went unnoticed"
            );
        }
    }
}

#[test]
fn every_value_of_every_frame_kind_and_reserved_byte_is_an_error() {
    let bytes = small_stream();
    // Walk the frames and try all 255 other values of each kind and reserved byte (the CRC
    // covers only the body, so a kind that changes to another known kind must be caught by
    // decoding or the checks). Length and CRC bytes are covered by the flips above.
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        for offset in at..at + 4 {
            for value in 0..=255u8 {
                if value == bytes[offset] {
                    continue;
                }
                let mut damaged = bytes.clone();
                damaged[offset] = value;
                assert!(
                    outcome(&damaged).is_err(),
                    "frame header byte {offset} = {value:#x} went unnoticed"
                );
            }
        }
        at += FRAME_HEADER_LEN + len;
    }
}

#[test]
fn errors_name_the_problem() {
    let bytes = small_stream();
    let mut damaged = bytes.clone();
    damaged[3] = b'X';
    assert_eq!(outcome(&damaged), Err(Error::Magic));

    let body_of_first = HEADER_LEN + FRAME_HEADER_LEN;
    let mut damaged = bytes.clone();
    damaged[body_of_first] ^= 1;
    let error = outcome(&damaged).unwrap_err();
    assert_eq!(
        error,
        Error::Checksum {
            kind: SectionKind::Config
        }
    );
    assert_eq!(
        error.to_string(),
        "checkpoint section 1 (config): checksum mismatch"
    );

    let mut damaged = bytes.clone();
    damaged[HEADER_LEN] = 9;
    assert_eq!(outcome(&damaged), Err(Error::UnknownSection(9)));

    let mut damaged = bytes.clone();
    damaged[HEADER_LEN + 2] = 1;
    assert_eq!(
        outcome(&damaged),
        Err(Error::FrameReserved {
            kind: SectionKind::Config,
            value: 1
        })
    );
}

#[test]
fn memory_checksum_message() {
    let sections = sample_sections(3);
    let mut bytes = stream(&sections);
    let config_len = u32::from_le_bytes(bytes[20..24].try_into().unwrap()) as usize;
    let memory_body = HEADER_LEN + FRAME_HEADER_LEN + config_len + FRAME_HEADER_LEN;
    bytes[memory_body + 5] ^= 0x40;
    let error = outcome(&bytes).unwrap_err();
    assert_eq!(
        error.to_string(),
        "checkpoint section 2 (memory): checksum mismatch"
    );
}

#[test]
fn wrong_version_and_header_fields() {
    let bytes = small_stream();
    let mut other = bytes.clone();
    other[8..10].copy_from_slice(&(VERSION + 1).to_le_bytes());
    let error = outcome(&other).unwrap_err();
    assert_eq!(
        error,
        Error::Version {
            found: VERSION + 1,
            supported: VERSION
        }
    );
    assert!(
        error
            .to_string()
            .contains(&format!("version {} is not supported", VERSION + 1)),
        "{error}"
    );

    let mut flags = bytes.clone();
    flags[10] = 1;
    assert_eq!(
        outcome(&flags),
        Err(Error::HeaderReserved {
            flags: 1,
            reserved: 0
        })
    );
    let mut reserved = bytes.clone();
    reserved[15] = 0x80;
    assert_eq!(
        outcome(&reserved),
        Err(Error::HeaderReserved {
            flags: 0,
            reserved: 0x8000_0000
        })
    );
}

#[test]
fn oversize_length_is_refused_before_the_body_is_buffered() {
    for len in [MAX_BODY as u32 + 1, u32::MAX] {
        let mut bytes = header();
        bytes.extend_from_slice(&1u16.to_le_bytes());
        bytes.extend_from_slice(&0u16.to_le_bytes());
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());

        // One byte at a time, then a lot more.
        let mut reader = Reader::new();
        for byte in &bytes {
            reader.push(std::slice::from_ref(byte));
        }
        let more = vec![0u8; 2 * MAX_BODY];
        reader.push(&more);
        assert!(reader.buffered() <= HEADER_LEN + FRAME_HEADER_LEN);
        let expected = Error::TooLarge {
            kind: SectionKind::Config,
            len: u64::from(len),
        };
        assert_eq!(reader.next(), Err(expected.clone()));
        assert_eq!(reader.next(), Err(expected.clone()), "the error stays");
        assert_eq!(reader.finish(), Err(expected));

        // All in one push, after a valid section.
        let mut stream = raw_stream(&[Section::Config(config())]);
        stream.extend_from_slice(&bytes[HEADER_LEN..]);
        stream.extend_from_slice(&more);
        let mut reader = Reader::new();
        reader.push(&stream);
        assert!(reader.buffered() < 1024, "{}", reader.buffered());
        assert!(matches!(reader.next(), Ok(Some(Section::Config(_)))));
        assert!(matches!(reader.next(), Err(Error::TooLarge { .. })));
    }
}

#[test]
fn exactly_max_body_is_accepted_as_a_length() {
    let mut bytes = header();
    bytes.extend_from_slice(&frame(2, 0, &[])[..4]);
    bytes.extend_from_slice(&(MAX_BODY as u32).to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    let mut reader = Reader::new();
    reader.push(&bytes);
    assert_eq!(reader.next(), Ok(None), "waits for the body");
    assert_eq!(reader.finish(), Err(Error::Truncated));
}

#[test]
fn garbage_and_empty_input() {
    assert_eq!(outcome(&[]), Err(Error::Truncated));
    assert_eq!(outcome(&[0u8; 100]), Err(Error::Magic));
    assert_eq!(outcome(&header()), Err(Error::Truncated));
}
