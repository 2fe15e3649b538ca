//! The fast path: exits answered straight from the exception vector, without the list-register
//! sync, the scheduler or the instance's lock, because the answer depends on nothing but the
//! trapped instruction, the guest's registers and state kept apart for it ([`FastState`]).
//!
//! - Firmware-interface queries over HVC ([`crate::psci::query_answer`]: PSCI_VERSION,
//!   PSCI_FEATURES, SMCCC_VERSION, SMCCC_ARCH_FEATURES, MIGRATE_INFO_TYPE), with only the
//!   registers a Rust call may clobber saved ([`answer`]).
//! - MMIO ([`mmio`], with x0..x18, x30 and the PC saved): reads of the vGIC's registers that
//!   never change (the distributor's `GICD_TYPER`, `GICD_IIDR` and identification registers;
//!   each redistributor's `GICR_TYPER`, `GICR_IIDR` and identification registers), reads of the
//!   console PL011's flag register, and bytes written to its data register that only add to
//!   the line being written.
//! - System registers ([`sysreg`], saved as for MMIO): reads of the ID register block (TID3),
//!   from the board's guest view of them, and reads of the emulated physical timer and counter
//!   (`CNTP_CTL_EL0`, `CNTP_CVAL_EL0`, `CNTP_TVAL_EL0`, `CNTPCT_EL0`, `CNTPCTSS_EL0`), from the vCPU's own
//!   timer state and the instance's time.
//!
//! Everything else falls through to the full path unchanged, and so does every exit while the
//! log level is `debug`, where the full path logs each trapped call (`arch::vectors` checks
//! [`FAST_PATH`]). Answered exits count in the instance's exit histogram as `hvc_fast`,
//! `mmio_fast` and `sysreg_fast`. docs/ARCHITECTURE.md has the table of which exit takes which
//! path.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use devicetree::guest::{GICD_BASE, GICD_SIZE, GICR_BASE, GICR_STRIDE};
use gic::{ConstantRead, Shape, Vgic};

use crate::exit::{SysRegAccess, TrapSyndrome};
use crate::idregs::GuestIdRegisters;
use crate::mmio::MmioAccess;
use crate::pl011::{Pl011, Pl011Fast};
use crate::psci;
use crate::timer::{EmulatedTimer, TimerRegister};
use crate::vcpu::GuestRegs;

/// Whether the vectors try the fast path (off under `log=debug`, set once at boot).
pub static FAST_PATH: AtomicBool = AtomicBool::new(false);

/// `ESR_EL2.EC` of an HVC from AArch64: the only exception class that can qualify (the vector
/// checks it before saving anything).
pub const EC_HVC64: u64 = 0x16;

/// `ESR_EL2.EC` of a data abort from a lower EL: an MMIO access, which may qualify.
pub const EC_DATA_ABORT_LOWER: u64 = 0x24;

/// `ESR_EL2.EC` of a trapped MSR/MRS: a system-register access, which may qualify.
pub const EC_SYSREG: u64 = 0x18;

/// The rows of [`FastState::answered`].
const HVC: usize = 0;
const MMIO: usize = 1;
const SYSREG: usize = 2;
/// Loads of the console UART's FR answered in the vector itself (`console_flag_read`).
const FR: usize = 3;
/// How many rows.
const ROWS: usize = 4;

/// What one instance's fast path answers from: the state of its devices and CPUs that needs no
/// lock of the instance's, and the count of exits answered. Built with the instance.
pub struct FastState {
    /// Guest-physical base of the console UART's register window.
    uart_base: u64,
    uart: Arc<Pl011Fast>,
    /// The address of the UART's FR value (`Pl011Fast::flag_register`, inside `uart`, which
    /// keeps it alive), for the vector's answer to a plain load of FR.
    uart_flags: usize,
    /// The vGIC distributor's registers that never change.
    distributor: Vec<ConstantRead>,
    /// Those of each vCPU's redistributor (none on a GICv2), by vCPU.
    redistributors: Vec<Vec<ConstantRead>>,
    /// What trapped ID register reads answer.
    id_registers: GuestIdRegisters,
    /// Exits answered, per vCPU.
    answered: Vec<Answered>,
}

/// One vCPU's counts of answered exits (HVC calls, MMIO accesses, system-register accesses, FR
/// loads answered in the vector: the rows of [`FastState::NAMES`]), on a cache line of its own:
/// its CPU adds to them on every answered exit, and counts that an instance's vCPUs shared would
/// bounce between their CPUs. Only the CPU that runs the vCPU writes them (the vCPU's lock hands
/// them from CPU to CPU), so a load and a store count, here and in the vector.
#[repr(align(64))]
pub struct Answered([AtomicU64; ROWS]);

impl Answered {
    fn count(&self, row: usize) {
        let counter = &self.0[row];
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

impl FastState {
    /// The names of the exit-histogram rows of [`FastState::answered`].
    pub const NAMES: [&'static str; ROWS] = ["hvc_fast", "mmio_fast", "sysreg_fast", "fr_fast"];

    /// The fast path of an instance whose console UART is at `uart_base` (its shared part
    /// `uart`), whose vGIC is `vgic` (its constant registers are taken from it) and whose ID
    /// registers read as `id_registers`.
    pub fn new(
        uart_base: u64,
        uart: Arc<Pl011Fast>,
        vgic: &Vgic,
        id_registers: GuestIdRegisters,
    ) -> Self {
        Self {
            uart_base,
            uart_flags: core::ptr::from_ref(uart.flag_register()) as usize,
            uart,
            distributor: vgic.distributor_constants(),
            redistributors: match vgic.shape() {
                Shape::V3 => (0..vgic.num_vcpus())
                    .map(|vcpu| vgic.redistributor_constants(vcpu))
                    .collect(),
                Shape::V2 => Vec::new(),
            },
            id_registers,
            answered: (0..vgic.num_vcpus())
                .map(|_| Answered([const { AtomicU64::new(0) }; ROWS]))
                .collect(),
        }
    }

    /// Exits answered so far, as rows of [`FastState::NAMES`].
    pub fn answered(&self) -> [(&'static str, u64); ROWS] {
        [HVC, MMIO, SYSREG, FR].map(|row| {
            let sum = self
                .answered
                .iter()
                .map(|vcpu| vcpu.0[row].load(Ordering::Relaxed))
                .sum();
            (Self::NAMES[row], sum)
        })
    }

    /// What vCPU `vcpu` (an index of this instance's) answers from while it runs, with its
    /// emulated physical timer as it stands (see [`FastVcpu::phys_timer`]).
    pub fn vcpu(&self, vcpu: usize, phys_timer: EmulatedTimer) -> FastVcpu<'_> {
        FastVcpu {
            state: self,
            vcpu,
            phys_timer,
            answered: &self.answered[vcpu],
        }
    }

    /// The console UART's part that needs no lock of the instance's.
    pub fn console(&self) -> &Pl011Fast {
        &self.uart
    }
}

/// Where the vector finds what it answers a plain load of the console UART's FR from (byte
/// offsets, for `arch::vectors`): the FastVcpu's FastState, and in it the UART's base and the
/// address of FR's value; the FastVcpu's counts, and in them the answered MMIO exits.
pub mod offsets {
    use core::mem::offset_of;

    use super::{FR, FastState, FastVcpu};

    /// `FastVcpu::state`.
    pub const VCPU_STATE: usize = offset_of!(FastVcpu, state);
    /// `FastState::uart_base`.
    pub const UART_BASE: usize = offset_of!(FastState, uart_base);
    /// `FastState::uart_flags`.
    pub const UART_FLAGS: usize = offset_of!(FastState, uart_flags);
    /// `FastVcpu::answered`.
    pub const VCPU_ANSWERED: usize = offset_of!(FastVcpu, answered);
    /// The `fr_fast` row in an `Answered`.
    pub const ANSWERED_FR: usize = 8 * FR;
    /// FR's offset in the UART's window.
    pub const UART_FR: u64 = crate::pl011::FR;
}

/// The vCPU a CPU runs, as the fast path sees it: handed to the vectors while it runs.
pub struct FastVcpu<'a> {
    /// Its instance's fast-path state.
    pub state: &'a FastState,
    /// Its index in the instance.
    pub vcpu: usize,
    /// Its emulated physical timer, as the run loop last handed it over (only the full path
    /// changes it, and the run loop copies it in before every entry).
    pub phys_timer: EmulatedTimer,
    /// Its counts of answered exits.
    answered: &'a Answered,
}

/// Answers the trapped system-register access `syndrome` of `vcpu`, whose registers are
/// `regs`, if it is a read of the ID register block or of the emulated physical timer or
/// counter (`guest_now` gives the instance's counter): the register written and the
/// instruction stepped over. False, with `regs` untouched, to take the full path; as for
/// [`mmio`], also for an access that transfers x19..x29.
#[inline]
pub fn sysreg(
    vcpu: &FastVcpu,
    regs: &mut GuestRegs,
    syndrome: &TrapSyndrome,
    guest_now: impl FnOnce() -> u64,
) -> bool {
    let access = SysRegAccess::decode(syndrome.iss());
    if (19..=29).contains(&access.reg) || !access.read {
        return false;
    }
    let value = if let Some(value) = vcpu.state.id_registers.read(&access) {
        value
    } else if let Some(register) = TimerRegister::decode(access.encoding) {
        vcpu.phys_timer.read(register, guest_now())
    } else {
        return false;
    };
    regs.set(access.reg, value);
    regs.skip_instruction();
    vcpu.answered.count(SYSREG);
    true
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
    let state = vcpu.state;
    let within = |base: u64, size: u64| access.ipa.checked_sub(base).filter(|&o| o < size);
    // Answered: Some(the value a load reads, None for a store).
    let answer = if let Some(offset) = within(state.uart_base, Pl011::WINDOW) {
        if access.write {
            let value = access.store_value(regs.get(access.reg));
            state.uart.write(vcpu.vcpu, offset, value).then_some(None)
        } else {
            state.uart.read(offset).map(Some)
        }
    } else if access.write {
        None
    } else if let Some(offset) = within(GICD_BASE, GICD_SIZE) {
        constant(&state.distributor, offset, access.size)
    } else if let Some(offset) = within(GICR_BASE, GICR_STRIDE * state.redistributors.len() as u64)
    {
        let frame = &state.redistributors[(offset / GICR_STRIDE) as usize];
        constant(frame, offset % GICR_STRIDE, access.size)
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
    vcpu.answered.count(MMIO);
    true
}

/// The value of the constant read at `offset` of `size` bytes in `registers`, as a load's answer.
fn constant(registers: &[ConstantRead], offset: u64, size: u8) -> Option<Option<u64>> {
    registers
        .iter()
        .find(|register| register.offset == offset && register.size == size)
        .map(|register| Some(register.value))
}

/// Counts an HVC that [`answer`] answered for `vcpu`.
pub fn answered_hvc(vcpu: &FastVcpu) {
    vcpu.answered.count(HVC);
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

    use crate::timer::TimerRegister;

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
    fn devices() -> (Pl011, FastState) {
        fn sink(_: &str, _: &str, _: bool) {}
        let uart = Pl011::new("g", sink, UART_BASE, 33);
        let vgic = gic::Vgic::new(2, alloc::vec![0, 1], 64);
        // Every ID register reads as 0x1000 + (CRm << 4) + op2.
        let ids = GuestIdRegisters::from_hardware(|crm, op2| 0x1000 + u64::from(crm << 4 | op2));
        let fast = FastState::new(UART_BASE, uart.fast(), &vgic, ids);
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

    /// vCPU `vcpu` of the instance with fast path `state`, its physical timer disabled.
    fn on(state: &FastState, vcpu: usize) -> FastVcpu<'_> {
        state.vcpu(vcpu, EmulatedTimer::default())
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
        let vcpu = on(&devices, 1);
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
        assert_eq!(devices.answered()[..2], [("hvc_fast", 0), ("mmio_fast", 2)]);
    }

    #[test]
    fn each_vcpu_counts_on_its_own_and_the_histogram_adds_them_up() {
        let (_uart, devices) = devices();
        let (first, second) = (on(&devices, 0), on(&devices, 1));
        let mut r = regs();
        assert!(mmio(&first, &mut r, &abort(GICD_BASE + 4, 4, false, 3)));
        assert!(mmio(&second, &mut r, &abort(GICD_BASE + 4, 4, false, 3)));
        assert!(mmio(&second, &mut r, &abort(UART_BASE + 0x18, 4, false, 3)));
        answered_hvc(&first);
        assert_eq!(
            (
                first.answered.0[MMIO].load(Ordering::Relaxed),
                second.answered.0[MMIO].load(Ordering::Relaxed)
            ),
            (1, 2)
        );
        assert_eq!(
            devices.answered(),
            [
                ("hvc_fast", 1),
                ("mmio_fast", 3),
                ("sysreg_fast", 0),
                ("fr_fast", 0)
            ]
        );
        assert_eq!(core::mem::align_of::<Answered>(), 64, "a cache line each");
    }

    #[test]
    fn constant_redistributor_registers_of_every_frame_are_answered() {
        let (_uart, devices) = devices();
        let vcpu = on(&devices, 0);
        let mut r = regs();
        // GICR_TYPER of vCPU 1's frame (as Linux reads each frame to find its own), whole and
        // its upper half; GICR_PIDR2 of vCPU 0's.
        let typer = GICR_BASE + GICR_STRIDE + 8;
        assert!(mmio(&vcpu, &mut r, &abort(typer, 8, false, 4)));
        assert_eq!(r.x[4], 0x1_0000_0110, "Aff0 1, processor 1, Last");
        assert!(mmio(&vcpu, &mut r, &abort(typer + 4, 4, false, 5)));
        assert_eq!(r.x[5], 1);
        assert!(mmio(&vcpu, &mut r, &abort(GICR_BASE + 0xffe8, 4, false, 6)));
        assert_eq!(r.x[6], 0x3b, "PIDR2: GICv3");
        assert_eq!(r.pc, 0x4000_000c);
        assert_eq!(devices.answered()[1], ("mmio_fast", 3));
    }

    #[test]
    fn the_console_uart_flag_reads_and_line_bytes_are_answered() {
        let (mut uart, devices) = devices();
        let vcpu = on(&devices, 1);
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
        assert_eq!(devices.answered()[..2], [("hvc_fast", 0), ("mmio_fast", 4)]);
    }

    #[test]
    fn every_other_access_takes_the_full_path() {
        let (_uart, devices) = devices();
        let vcpu = on(&devices, 0);
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
            // A redistributor: registers that hold state, a write, beyond the last frame.
            abort(GICR_BASE + 0x14, 4, false, 3),
            abort(GICR_BASE + GICR_STRIDE + 0x1_0100, 4, false, 3),
            abort(GICR_BASE + 8, 8, true, 3),
            abort(GICR_BASE + 2 * GICR_STRIDE + 8, 8, false, 3),
            // RAM, nothing.
            abort(devicetree::guest::RAM_BASE, 4, false, 3),
            abort(0x1000, 4, false, 3),
        ] {
            let mut r = regs();
            assert!(!mmio(&vcpu, &mut r, &syndrome), "{syndrome:x?}");
            assert_eq!(r, regs());
        }
        assert_eq!(devices.answered()[1], ("mmio_fast", 0));
    }

    /// A trapped MRS (`read`) or MSR of `(op0, op1, CRn, CRm, op2)` with register `reg`.
    fn system_register(encoding: (u64, u64, u64, u64, u64), reg: u64, read: bool) -> TrapSyndrome {
        let (op0, op1, crn, crm, op2) = encoding;
        let iss = op0 << 20 | op2 << 17 | op1 << 14 | crn << 10 | reg << 5 | crm << 1;
        TrapSyndrome {
            esr: EC_SYSREG << 26 | 1 << 25 | iss | u64::from(read),
            far: 0,
            hpfar: 0,
        }
    }

    #[test]
    fn id_register_reads_are_answered_and_other_system_registers_are_not() {
        let (_uart, state) = devices();
        let vcpu = on(&state, 0);
        let mut r = regs();
        // ID_AA64PFR0_EL1 (CRm 4, op2 0) into x7, ID_AA64ISAR0_EL1 (CRm 6, op2 0) into x30.
        assert!(sysreg(
            &vcpu,
            &mut r,
            &system_register((3, 0, 0, 4, 0), 7, true),
            || unreachable!()
        ));
        assert_eq!(r.x[7], 0x1040);
        assert!(sysreg(
            &vcpu,
            &mut r,
            &system_register((3, 0, 0, 6, 0), 30, true),
            || unreachable!()
        ));
        assert_eq!(r.x[30], 0x1060);
        assert_eq!(r.pc, 0x4000_0008);
        assert_eq!(state.answered()[2], ("sysreg_fast", 2));
        for syndrome in [
            // A write to an ID register, one into x19, ICC_SGI1R_EL1, a timer write, CNTV_CTL.
            system_register((3, 0, 0, 4, 0), 7, false),
            system_register((3, 0, 0, 4, 0), 19, true),
            system_register((3, 0, 12, 11, 5), 1, false),
            system_register((3, 3, 14, 2, 1), 1, false),
            system_register((3, 3, 14, 3, 1), 1, true),
        ] {
            let mut r = regs();
            assert!(
                !sysreg(&vcpu, &mut r, &syndrome, || unreachable!()),
                "{syndrome:x?}"
            );
            assert_eq!(r, regs());
        }
        assert_eq!(state.answered()[2], ("sysreg_fast", 2));
    }

    #[test]
    fn physical_timer_and_counter_reads_are_answered_from_the_vcpu() {
        let (_uart, state) = devices();
        let mut vcpu = on(&state, 1);
        let now = 5_000;
        vcpu.phys_timer
            .write(TimerRegister::CompareValue, now + 700, now);
        vcpu.phys_timer.write(TimerRegister::Control, 1, now);
        let mut r = regs();
        let mut read = |encoding, reg, now: u64| {
            assert!(sysreg(
                &vcpu,
                &mut r,
                &system_register(encoding, reg, true),
                || now
            ));
            r.x[reg as usize]
        };
        assert_eq!(read((3, 3, 14, 2, 1), 2, now), 1, "CNTP_CTL: enabled");
        assert_eq!(read((3, 3, 14, 2, 1), 2, now + 700), 5, "ISTATUS when due");
        assert_eq!(read((3, 3, 14, 2, 2), 3, now), now + 700, "CNTP_CVAL");
        assert_eq!(read((3, 3, 14, 2, 0), 4, now + 200), 500, "CNTP_TVAL");
        assert_eq!(read((3, 3, 14, 0, 1), 30, 1234), 1234, "CNTPCT");
        assert_eq!(r.pc, 0x4000_0014);
        assert_eq!(state.answered()[2], ("sysreg_fast", 5));
    }
}
