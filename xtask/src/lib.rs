//! What the host tool and the QEMU scenarios share: where images are built, guest bundles and the
//! Linux test guest, and how a board is started under QEMU and its serial output collected.

pub mod bench;
pub mod build;
pub mod bundle;
pub mod cpio;
pub mod linux_guest;
pub mod qemu;
