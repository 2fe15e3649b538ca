//! What the host tool and the QEMU scenarios share: where images are built, and how a board is
//! started under QEMU and its serial output collected.

pub mod build;
pub mod qemu;
