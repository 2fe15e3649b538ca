//! What the host tool and the QEMU scenarios share: where images are built, guest bundles and the
//! Linux test guest, how a board is started under QEMU and its serial output collected, and the
//! `cargo xtask` command line.

pub mod bench;
pub mod build;
pub mod bundle;
pub mod checkpoint;
pub mod cli;
pub mod cpio;
pub mod linux_guest;
pub mod migrate_bench;
pub mod migrate_demo;
pub mod qemu;
pub mod qemu_migration;
pub mod relay;
pub mod sd;
