//! The fast path: exits answered straight from the exception vector, without the list-register
//! sync, the scheduler or the instance's lock, because the answer depends on nothing but the
//! trapped instruction, the guest's registers and device state kept apart for it
//! ([`FastDevices`]).
//!
//! - Firmware-interface queries over HVC ([`crate::psci::query_answer`]: PSCI_VERSION,
//!   PSCI_FEATURES, SMCCC_VERSION, SMCCC_ARCH_FEATURES, MIGRATE_INFO_TYPE), with only the
//!   registers a Rust call may clobber saved ([`answer`]).
//! - MMIO ([`mmio`], with x0..x18, x30 and the PC saved): 32-bit reads of the vGIC
//!   distributor's registers that never change (`GICD_TYPER`, `GICD_IIDR`, the identification
//!   registers), reads of the console PL011's flag register, and bytes written to its data
//!   register that only add to the line being written.
//!
//! Everything else falls through to the full path unchanged, and so does every exit while the
//! log level is `debug`, where the full path logs each trapped call (`arch::vectors` checks
//! [`FAST_PATH`]). Answered exits count in the instance's exit histogram as `hvc_fast` and
//! `mmio_fast`. docs/ARCHITECTURE.md has the table of which exit takes which path.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use devicetree::guest::{GICD_BASE, GICD_SIZE};

use crate::exit::TrapSyndrome;
use crate::mmio::MmioAccess;
use crate::pl011::{Pl011, Pl011Fast};
use crate::psci;
use crate::vcpu::GuestRegs;

/// Whether the vectors try the fast path (off under `log=debug`, set once at boot).
pub static FAST_PATH: AtomicBool = AtomicBool::new(false);

/// `ESR_EL2.EC` of an HVC from AArch64: the only exception class that can qualify (the vector
/// checks it before saving anything).
pub const EC_HVC64: u64 = 0x16;

/// `ESR_EL2.EC` of a data abort from a lower EL: an MMIO access, which may qualify.
pub const EC_DATA_ABORT_LOWER: u64 = 0x24;

/// What one instance's fast path answers from: the state of its devices that needs no lock of
/// the instance's, and the count of exits answered. Built with the instance.
pub struct FastDevices {
    /// Guest-physical base of the console UART's register window.
    uart_base: u64,
    uart: Arc<Pl011Fast>,
    /// The vGIC distributor's registers that never change, `(offset, value)`.
    distributor: Vec<(u64, u32)>,
    /// Exits answered: HVC calls, MMIO accesses.
    answered: [AtomicU64; 2],
}

impl FastDevices {
    /// The names of the exit-histogram rows of [`FastDevices::answered`].
    pub const NAMES: [&'static str; 2] = ["hvc_fast", "mmio_fast"];

    /// The fast path of an instance whose console UART is at `uart_base` (its shared part
    /// `uart`) and whose vGIC distributor has the constant registers `distributor`
    /// (`gic::Vgic::distributor_constants`).
    pub fn new(uart_base: u64, uart: Arc<Pl011Fast>, distributor: Vec<(u64, u32)>) -> Self {
        Self {
            uart_base,
            uart,
            distributor,
            answered: [const { AtomicU64::new(0) }; 2],
        }
    }

    /// Exits answered so far, as rows of [`FastDevices::NAMES`].
    pub fn answered(&self) -> [(&'static str, u64); 2] {
        [0, 1].map(|row| (Self::NAMES[row], self.answered[row].load(Ordering::Relaxed)))
    }

    fn count(&self, row: usize) {
        self.answered[row].fetch_add(1, Ordering::Relaxed);
    }
}

/// The vCPU a CPU runs, as the fast path sees it: handed to the vectors while it runs.
pub struct FastVcpu<'a> {
    /// Its instance's fast-path state.
    pub devices: &'a FastDevices,
    /// Its index in the instance.
    pub vcpu: usize,
}

/// Answers the data abort `syndrome` of `vcpu`, whose registers are `regs`, if it qualifies
/// (module docs): the load's register written and the instruction stepped over. False, with
/// `regs` untouched, to take the full path. The vector saves only x0..x18, x30 and the PC into
/// `regs` (x19..x29 stay in the CPU's registers, which a Rust call preserves), so an access
/// that transfers x19..x29 is declined.
#[inline]
pub fn mmio(vcpu: &FastVcpu, regs: &mut GuestRegs, syndrome: &TrapSyndrome) -> bool {
    let Ok(access) = MmioAccess::decode(syndrome.iss(), syndrome.fault_ipa()) else {
        return false;
    };
    if (19..=29).contains(&access.reg) {
        return false;
    }
    let devices = vcpu.devices;
    let within = |base: u64, size: u64| access.ipa.checked_sub(base).filter(|&o| o < size);
    // Answered: Some(the value a load reads, None for a store).
    let answer = if let Some(offset) = within(devices.uart_base, Pl011::WINDOW) {
        if access.write {
            let value = access.store_value(regs.get(access.reg));
            devices.uart.write(vcpu.vcpu, offset, value).then_some(None)
        } else {
            devices.uart.read(offset).map(Some)
        }
    } else if let Some(offset) = within(GICD_BASE, GICD_SIZE) {
        devices
            .distributor
            .iter()
            .find(|(at, _)| *at == offset && !access.write && access.size == 4)
            .map(|&(_, value)| Some(u64::from(value)))
    } else {
        None
    };
    let Some(read) = answer else {
        return false;
    };
    if let Some(value) = read {
        regs.set(access.reg, access.load_value(value));
    }
    regs.skip_instruction();
    devices.count(1);
    true
}

/// Counts an HVC that [`answer`] answered for `vcpu`.
pub fn answered_hvc(vcpu: &FastVcpu) {
    vcpu.devices.count(0);
}

/// The guest's new x0 if the exit with syndrome `esr` and argument registers `x` (x0..x3) is
/// answered on the fast path; `None` to take the full path.
#[inline]
pub fn answer(esr: u64, x: [u64; 4]) -> Option<u64> {
    let (ec, imm) = (esr >> 26 & 0x3f, esr & 0xffff);
    if ec != EC_HVC64 || imm != 0 {
        return None;
    }
    psci::query_answer(psci::decode(x)).map(|answer| answer as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use devicetree::guest::UART_BASE;

    /// ESR_EL2 of an HVC #imm from AArch64 (IL set).
    fn hvc(imm: u16) -> u64 {
        EC_HVC64 << 26 | 1 << 25 | u64::from(imm)
    }

    #[test]
    fn firmware_queries_over_hvc_are_answered() {
        assert_eq!(answer(hvc(0), [0x8400_0000, 0, 0, 0]), Some(0x1_0001));
        assert_eq!(answer(hvc(0), [0x8000_0000, 0, 0, 0]), Some(0x1_0001));
        assert_eq!(answer(hvc(0), [0x8400_0006, 0, 0, 0]), Some(2));
        // PSCI_FEATURES(CPU_ON_64) and of an unknown function; SMCCC_ARCH_FEATURES.
        assert_eq!(answer(hvc(0), [0x8400_000a, 0xc400_0003, 0, 0]), Some(0));
        assert_eq!(
            answer(hvc(0), [0x8400_000a, 0x8400_00ff, 0, 0]),
            Some(psci::status::NOT_SUPPORTED as u64)
        );
        assert_eq!(
            answer(hvc(0), [0x8000_0001, 0x8000_8000, 0, 0]),
            Some(psci::status::NOT_SUPPORTED as u64)
        );
    }

    #[test]
    fn everything_else_takes_the_full_path() {
        // Calls that act or depend on the instance: CPU_ON, AFFINITY_INFO, SYSTEM_OFF, the
        // project's own calls, unknown ones.
        for x0 in [
            0xc400_0003,
            0xc400_0004,
            0x8400_0008,
            0xc600_0010,
            0xc600_0012,
            0x8600_ff01,
        ] {
            assert_eq!(answer(hvc(0), [x0, 1, 2, 3]), None, "{x0:#x}");
        }
        // The right call, the wrong way in: HVC #1, SMC, a data abort, WFI, a system register.
        assert_eq!(answer(hvc(1), [0x8400_0000, 0, 0, 0]), None);
        for ec in [0x17u64, 0x24, 0x01, 0x18] {
            assert_eq!(
                answer(ec << 26 | 1 << 25, [0x8400_0000, 0, 0, 0]),
                None,
                "EC {ec:#x}"
            );
        }
    }

    /// An instance's fast path: its UART at [`UART_BASE`], a GICv3 distributor for 2 vCPUs.
    fn devices() -> (Pl011, FastDevices) {
        fn sink(_: &str, _: &str, _: bool) {}
        let uart = Pl011::new("g", sink, UART_BASE, 33);
        let vgic = gic::Vgic::new(2, alloc::vec![0, 1], 64);
        let fast = FastDevices::new(UART_BASE, uart.fast(), vgic.distributor_constants());
        (uart, fast)
    }

    /// A data abort at `ipa` with a valid syndrome: `size` bytes, register `reg`, a store if
    /// `write`, 64-bit register if `size` is 8.
    fn abort(ipa: u64, size: u8, write: bool, reg: u8) -> TrapSyndrome {
        let sas = u64::from(size.trailing_zeros());
        let iss = 1 << 24
            | sas << 22
            | u64::from(reg) << 16
            | u64::from(size == 8) << 15
            | u64::from(write) << 6
            | 0x07;
        TrapSyndrome {
            esr: EC_DATA_ABORT_LOWER << 26 | 1 << 25 | iss,
            far: ipa & 0xfff,
            hpfar: (ipa >> 12) << 4,
        }
    }

    fn regs() -> GuestRegs {
        GuestRegs {
            x: core::array::from_fn(|n| 0x1000 + n as u64),
            pc: 0x4000_0000,
            pstate: 0,
        }
    }

    #[test]
    fn constant_distributor_registers_are_answered() {
        let (_uart, devices) = devices();
        let vcpu = FastVcpu {
            devices: &devices,
            vcpu: 1,
        };
        let mut r = regs();
        assert!(mmio(&vcpu, &mut r, &abort(GICD_BASE + 4, 4, false, 3)));
        assert_eq!(
            r.x[3], 0x0548_0002,
            "GICD_TYPER: 64 SPIs, IDbits 10, A3V, RSS"
        );
        assert_eq!(r.pc, 0x4000_0004);
        assert!(mmio(
            &vcpu,
            &mut r,
            &abort(GICD_BASE + 0xfffc, 4, false, 30)
        ));
        assert_eq!(r.x[30], 0xb1, "CIDR3");
        assert_eq!(devices.answered(), [("hvc_fast", 0), ("mmio_fast", 2)]);
    }

    #[test]
    fn the_console_uart_flag_reads_and_line_bytes_are_answered() {
        let (mut uart, devices) = devices();
        let vcpu = FastVcpu {
            devices: &devices,
            vcpu: 1,
        };
        let mut r = regs();
        assert!(mmio(&vcpu, &mut r, &abort(UART_BASE + 0x18, 4, false, 18)));
        assert_eq!(r.x[18], 0x90, "FR: TXFE, RXFE");
        r.x[5] = 0x1_0000 | u64::from(b'h');
        assert!(mmio(&vcpu, &mut r, &abort(UART_BASE, 1, true, 5)));
        assert_eq!(r.pc, 0x4000_0008);
        assert_eq!(uart.save().line, b"h", "the byte went into the line");
        r.x[5] = u64::from(b'\n');
        let before = r.clone();
        assert!(!mmio(&vcpu, &mut r, &abort(UART_BASE, 1, true, 5)));
        assert_eq!(
            r, before,
            "a newline is the full path's, and the registers are untouched"
        );
        uart.receive(b'k');
        assert!(mmio(&vcpu, &mut r, &abort(UART_BASE + 0x18, 4, false, 0)));
        assert_eq!(r.x[0], 0x80, "FR: a byte waits");
        assert!(mmio(&vcpu, &mut r, &abort(UART_BASE, 1, true, 31)));
        assert_eq!(uart.save().line, b"h\0", "XZR stores a zero byte");
        assert_eq!(devices.answered(), [("hvc_fast", 0), ("mmio_fast", 4)]);
    }

    #[test]
    fn every_other_access_takes_the_full_path() {
        let (_uart, devices) = devices();
        let vcpu = FastVcpu {
            devices: &devices,
            vcpu: 0,
        };
        let mut no_syndrome = abort(GICD_BASE + 4, 4, false, 3);
        no_syndrome.esr &= !(1 << 24);
        let mut permission = abort(GICD_BASE + 4, 4, false, 3);
        permission.esr = permission.esr & !0x3f | 0x0f;
        for syndrome in [
            no_syndrome,
            permission,
            // The distributor: a register that holds state, a write, other access sizes.
            abort(GICD_BASE, 4, false, 3),
            abort(GICD_BASE + 4, 4, true, 3),
            abort(GICD_BASE + 4, 8, false, 3),
            abort(GICD_BASE + 4, 1, false, 3),
            // The UART: reading DR, its other registers.
            abort(UART_BASE, 4, false, 3),
            abort(UART_BASE + 0x38, 4, true, 3),
            abort(UART_BASE + 0xfe0, 4, false, 3),
            // A register the vector leaves live (x19..x29).
            abort(GICD_BASE + 4, 4, false, 19),
            abort(UART_BASE + 0x18, 4, false, 29),
            abort(UART_BASE, 1, true, 24),
            // A redistributor, RAM, nothing.
            abort(devicetree::guest::GICR_BASE + 8, 4, false, 3),
            abort(devicetree::guest::RAM_BASE, 4, false, 3),
            abort(0x1000, 4, false, 3),
        ] {
            let mut r = regs();
            assert!(!mmio(&vcpu, &mut r, &syndrome), "{syndrome:x?}");
            assert_eq!(r, regs());
        }
        assert_eq!(devices.answered()[1], ("mmio_fast", 0));
    }
}
