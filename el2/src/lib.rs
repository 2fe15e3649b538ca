//! The hypervisor's portable core: everything that decides what happens to a guest, written
//! without touching hardware so that it is tested on the host. The `arch` module (built only for
//! the board) holds the boot code, exception vectors, world switch and system-register access.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

#[cfg(target_os = "none")]
pub mod arch;
pub mod bootargs;
pub mod console_router;
pub mod exit;
pub mod fastpath;
pub mod idregs;
pub mod image;
pub mod instance;
pub mod memory;
pub mod migration;
pub mod mmio;
pub mod net;
pub mod pl011;
pub mod psci;
pub mod ratelimit;
pub mod sched;
pub mod shell;
pub mod timer;
pub mod vcpu;
pub mod vmid;
