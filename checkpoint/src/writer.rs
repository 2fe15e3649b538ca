//! Writing a stream.

use alloc::vec::Vec;

use serde::Serialize;

use crate::error::Error;
use crate::types::{EndSummary, Section, SectionKind};
use crate::{FRAME_HEADER_LEN, MAGIC, MAX_BODY, VERSION};

/// Appends a checkpoint stream to a caller's `Vec<u8>`, piece by piece, so that the caller can
/// send each piece (over TCP, to a file) and clear the vector in between.
///
/// Call [`header`](Self::header) once, [`section`](Self::section) for the Config section and
/// then for everything else, and [`end`](Self::end) last. The writer counts sections and pages
/// for the End section; it does not check the order (the [`crate::Reader`] does).
#[derive(Debug, Default)]
pub struct Writer {
    sections: u32,
    pages: u64,
}

impl Writer {
    /// A writer that has written nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the 16-byte stream header.
    pub fn header(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }

    /// Appends one section (frame header and body) and counts it. Fails, appending nothing, if
    /// the body would be longer than [`MAX_BODY`].
    ///
    /// A [`Section::End`] given here is written as it is and not counted; [`end`](Self::end)
    /// writes one with the right counts.
    pub fn section(&mut self, section: &Section, out: &mut Vec<u8>) -> Result<(), Error> {
        let kind = section.kind();
        match section {
            Section::Config(body) => frame(kind, body, out)?,
            Section::Memory(body) => frame(kind, body, out)?,
            Section::Vcpu(body) => frame(kind, body, out)?,
            Section::Vgic(body) => frame(kind, body, out)?,
            Section::Pl011(body) => frame(kind, body, out)?,
            Section::Paravirt(body) => frame(kind, body, out)?,
            Section::End(body) => return frame(kind, body, out),
        }
        self.sections = self.sections.saturating_add(1);
        if let Section::Memory(chunk) = section {
            self.pages = self
                .pages
                .saturating_add(u64::try_from(chunk.pages.len()).unwrap_or(u64::MAX));
        }
        Ok(())
    }

    /// Appends the End section with the number of sections and pages written so far.
    pub fn end(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        frame(SectionKind::End, &self.summary(), out)
    }

    /// What the End section would say now.
    pub fn summary(&self) -> EndSummary {
        EndSummary {
            sections: self.sections,
            pages: self.pages,
        }
    }
}

/// Appends a frame: header with a placeholder, body encoded in place, then the real header.
fn frame<T: Serialize>(kind: SectionKind, body: &T, out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    let body_start = out.len();
    if postcard::serialize_with_flavor(body, Append(out)).is_err() {
        out.truncate(start);
        return Err(Error::Encode { kind });
    }
    let (len, crc) = match out.get(body_start..) {
        Some(encoded) => (encoded.len(), crc32fast::hash(encoded)),
        None => (0, crc32fast::hash(&[])),
    };
    let len32 = match u32::try_from(len) {
        Ok(len32) if len <= MAX_BODY => len32,
        _ => {
            out.truncate(start);
            return Err(Error::TooLarge {
                kind,
                len: u64::try_from(len).unwrap_or(u64::MAX),
            });
        }
    };
    let mut header = [0u8; FRAME_HEADER_LEN];
    header
        .iter_mut()
        .zip(
            kind.as_u16()
                .to_le_bytes()
                .into_iter()
                .chain(0u16.to_le_bytes())
                .chain(len32.to_le_bytes())
                .chain(crc.to_le_bytes()),
        )
        .for_each(|(dst, src)| *dst = src);
    if let Some(slot) = out.get_mut(start..body_start) {
        slot.copy_from_slice(&header);
    }
    Ok(())
}

/// A postcard flavor that appends to a borrowed vector.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}
