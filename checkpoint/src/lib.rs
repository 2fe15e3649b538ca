//! The checkpoint stream: what one paused instance is, as bytes, for save/restore and live
//! migration. Shared by the hypervisor (`el2`, which writes and reads it) and the host tool
//! (`xtask checkpoint inspect`).
//!
//! A stream is a 16-byte header (magic `HVCKPT\0\0`, [`VERSION`], flags, reserved) followed by
//! frames. Each frame is a 12-byte frame header (section kind, reserved, body length, CRC-32 of
//! the body) and a postcard-encoded body, at most [`MAX_BODY`] bytes. The typed bodies are the
//! variants of [`Section`]; the last one is [`Section::End`], which counts what came before it.
//!
//! [`Writer`] appends a stream to a `Vec<u8>`; [`Reader`] takes bytes in pieces of any size (as
//! they arrive from a socket), checks every frame, the order of the sections and their
//! consistency with the instance's [`InstanceConfig`], and hands out [`Section`]s a consumer can
//! trust. Guest pages travel as [`Page`]s, encoded by [`encode_page`] and decoded by
//! [`decode_page`]. docs/CHECKPOINT-FORMAT.md describes the format byte by byte.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]

extern crate alloc;

mod answer;
mod describe;
mod error;
mod page;
mod reader;
mod types;
mod writer;

pub use answer::{ANSWER_OK, MAX_ANSWER, answer_line, parse_answer};
pub use describe::describe;
pub use error::Error;
pub use page::{MemoryChunkBuilder, decode_page, encode_page};
pub use reader::Reader;
pub use types::{
    El1Regs, EndSummary, FpState, GicCpuState, InstanceConfig, IrqState, MemoryChunk, Page,
    PageData, ParavirtState, Pl011State, RedistributorState, Section, SectionKind, SpiState,
    TimerState, VcpuState, VgicState,
};
pub use writer::Writer;

/// The first 8 bytes of every checkpoint stream.
pub const MAGIC: [u8; 8] = *b"HVCKPT\0\0";

/// The format version this build writes and the only one it reads. Any change to the header,
/// the frame or any section body bumps it.
pub const VERSION: u16 = 3;

/// Length of the stream header: magic, version `u16`, flags `u16`, reserved `u32`.
pub const HEADER_LEN: usize = 16;

/// Length of a frame header: kind `u16`, reserved `u16`, body length `u32`, CRC-32 `u32`.
pub const FRAME_HEADER_LEN: usize = 12;

/// The largest body a frame may have (1 MiB + 64 KiB). A frame header announcing more is an
/// error before anything of its body is buffered.
pub const MAX_BODY: usize = 1024 * 1024 + 64 * 1024;

/// Size of a guest page as it travels in [`Section::Memory`] (4 KiB).
pub const PAGE_SIZE: usize = 4096;

/// How many pages [`MemoryChunkBuilder`] puts into one [`MemoryChunk`].
pub const MAX_PAGES_PER_CHUNK: usize = 64;

/// The most vCPUs an instance in a checkpoint may have.
pub const MAX_VCPUS: u16 = 64;

/// The most vCPUs of an instance whose vGIC is a GICv2 (8 CPU interfaces).
pub const MAX_GICV2_VCPUS: u16 = 8;

/// The longest instance name, in bytes (the name is ASCII `[A-Za-z0-9._-]`).
pub const MAX_NAME_LEN: usize = 32;

/// The most SPIs a vGIC may have (INTIDs 32..1020).
pub const MAX_SPIS: u32 = 988;

/// Number of private interrupts (SGIs and PPIs) of each redistributor.
pub const PRIVATE_IRQS: usize = 32;

/// The most bytes a PL011 receive FIFO holds.
pub const MAX_PL011_RX: usize = 32;

/// The most bytes of a partial PL011 output line.
pub const MAX_PL011_LINE: usize = 256;
