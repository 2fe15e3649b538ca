//! Everything that can be wrong with a checkpoint stream.

use alloc::string::String;
use core::fmt;

use crate::types::{EndSummary, SectionKind};
use crate::{MAX_BODY, PAGE_SIZE};

/// Why a checkpoint stream (or a page in it) was refused. Every message names what is wrong in
/// terms an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The stream does not start with [`crate::MAGIC`].
    Magic,
    /// The stream has another format version.
    Version {
        /// The version in the stream.
        found: u16,
        /// The only version this build reads ([`crate::VERSION`]).
        supported: u16,
    },
    /// The stream header's flags or reserved field are not zero.
    HeaderReserved {
        /// The flags field.
        flags: u16,
        /// The reserved field.
        reserved: u32,
    },
    /// A frame header has a section kind this version does not know.
    UnknownSection(u16),
    /// A frame header's reserved field is not zero.
    FrameReserved {
        /// The section.
        kind: SectionKind,
        /// The reserved field.
        value: u16,
    },
    /// A body is longer than [`crate::MAX_BODY`] (announced by a frame header, or about to be
    /// written by the [`crate::Writer`]).
    TooLarge {
        /// The section.
        kind: SectionKind,
        /// The body length.
        len: u64,
    },
    /// A body does not match the CRC-32 in its frame header.
    Checksum {
        /// The section.
        kind: SectionKind,
    },
    /// A body does not decode as its section's type.
    Decode {
        /// The section.
        kind: SectionKind,
    },
    /// A body decodes but has bytes left over.
    TrailingBytes {
        /// The section.
        kind: SectionKind,
        /// How many bytes were left.
        count: usize,
    },
    /// The writer could not encode a body.
    Encode {
        /// The section.
        kind: SectionKind,
    },
    /// A section came before the Config section (which must be first).
    MissingConfig {
        /// The section.
        kind: SectionKind,
    },
    /// A second Config, Vgic, Pl011 or Paravirt section.
    Duplicate {
        /// The section.
        kind: SectionKind,
    },
    /// A second Vcpu section for the same vCPU.
    DuplicateVcpu {
        /// The vCPU index.
        index: u16,
    },
    /// A Vcpu section for a vCPU the instance does not have.
    VcpuOutOfRange {
        /// The vCPU index.
        index: u16,
        /// The instance's number of vCPUs.
        vcpus: u16,
    },
    /// A page outside the instance's RAM.
    PageOutOfRange {
        /// The page index.
        index: u64,
        /// The number of pages of the instance's RAM.
        pages: u64,
    },
    /// A field has a value the format does not allow (the reason says which and why).
    Invalid {
        /// The section.
        kind: SectionKind,
        /// What is wrong.
        reason: String,
    },
    /// The End section's counts do not match what the stream contained.
    EndMismatch {
        /// The counts in the End section.
        claimed: EndSummary,
        /// What was read.
        actual: EndSummary,
    },
    /// Bytes after the End section.
    AfterEnd,
    /// The stream stopped before its End section.
    Truncated,
    /// A raw page is not [`crate::PAGE_SIZE`] bytes.
    RawPageSize {
        /// Its length.
        len: usize,
    },
    /// An LZ4 page is corrupt or does not decompress to exactly [`crate::PAGE_SIZE`] bytes.
    Lz4Page,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Magic => write!(f, "not a checkpoint stream (bad magic)"),
            Self::Version { found, supported } => write!(
                f,
                "checkpoint format version {found} is not supported (this build reads version \
                 {supported} only)"
            ),
            Self::HeaderReserved { flags, reserved } => write!(
                f,
                "checkpoint header has flags {flags:#x} and reserved {reserved:#x}, both must be 0"
            ),
            Self::UnknownSection(kind) => write!(
                f,
                "unknown checkpoint section kind {kind} (written by another format version?)"
            ),
            Self::FrameReserved { kind, value } => write!(
                f,
                "checkpoint section {kind}: reserved field is {value:#x}, must be 0"
            ),
            Self::TooLarge { kind, len } => write!(
                f,
                "checkpoint section {kind}: body of {len} bytes is over the limit of {MAX_BODY}"
            ),
            Self::Checksum { kind } => write!(f, "checkpoint section {kind}: checksum mismatch"),
            Self::Decode { kind } => write!(f, "checkpoint section {kind}: body does not decode"),
            Self::TrailingBytes { kind, count } => write!(
                f,
                "checkpoint section {kind}: {count} unexpected bytes after the body"
            ),
            Self::Encode { kind } => write!(f, "checkpoint section {kind}: cannot encode the body"),
            Self::MissingConfig { kind } => write!(
                f,
                "checkpoint section {kind} before the config section (config must come first)"
            ),
            Self::Duplicate { kind } => write!(
                f,
                "checkpoint section {kind} appears twice (at most once is allowed)"
            ),
            Self::DuplicateVcpu { index } => {
                write!(f, "checkpoint has vcpu {index} twice")
            }
            Self::VcpuOutOfRange { index, vcpus } => write!(
                f,
                "checkpoint has vcpu {index} but the instance has {vcpus} vcpus"
            ),
            Self::PageOutOfRange { index, pages } => write!(
                f,
                "checkpoint has page {index} but the instance's RAM has {pages} pages"
            ),
            Self::Invalid { kind, reason } => write!(f, "checkpoint section {kind}: {reason}"),
            Self::EndMismatch { claimed, actual } => write!(
                f,
                "checkpoint end section counts {} sections and {} pages, but the stream had {} \
                 sections and {} pages",
                claimed.sections, claimed.pages, actual.sections, actual.pages
            ),
            Self::AfterEnd => write!(f, "checkpoint stream has data after its end section"),
            Self::Truncated => write!(f, "checkpoint stream is truncated (no end section)"),
            Self::RawPageSize { len } => {
                write!(f, "raw page has {len} bytes, expected {PAGE_SIZE}")
            }
            Self::Lz4Page => write!(
                f,
                "lz4 page is corrupt or does not decompress to {PAGE_SIZE} bytes"
            ),
        }
    }
}

impl core::error::Error for Error {}
