//! A guest instance as the trap handler sees it: its vCPU state, its emulated devices, and what
//! each exit does to them. Nothing here touches hardware, so every path is tested on the host.

use alloc::format;
use alloc::string::String;

use devicetree::guest::{RAM_BASE, UART_BASE};
use log::{debug, warn};

use crate::exit::{ExitKind, ExitReason, TrapSyndrome};
use crate::mmio::{MmioAccess, MmioDevice};
use crate::pl011::{LineSink, Pl011};
use crate::psci::{self, SmcccCall, status};
use crate::vcpu::{El1SysRegs, ExceptionRegisters, GuestException, GuestRegs, inject};

/// The affinity fields of an MPIDR (Aff3, Aff2, Aff1, Aff0).
const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// One virtual CPU: registers while it is off its CPU, and its identity.
#[derive(Clone, Debug)]
pub struct Vcpu {
    /// General-purpose registers, PC and PSTATE.
    pub regs: GuestRegs,
    /// EL1 system registers (live in hardware while the vCPU runs).
    pub el1: El1SysRegs,
    /// The MPIDR the guest reads (`VMPIDR_EL2`), with the RES1 bit 31 set.
    pub mpidr: u64,
}

impl Vcpu {
    /// A vCPU with affinity `affinity` that starts at `entry` with `x0 = arg`.
    pub fn new(affinity: u64, entry: u64, arg: u64) -> Self {
        Self {
            regs: GuestRegs::at_entry(entry, arg),
            el1: El1SysRegs::at_reset(),
            mpidr: (1 << 31) | (affinity & MPIDR_AFFINITY_MASK),
        }
    }

    fn has_affinity(&self, mpidr: u64) -> bool {
        self.mpidr & MPIDR_AFFINITY_MASK == mpidr & MPIDR_AFFINITY_MASK
    }
}

/// Why an instance stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest asked for PSCI SYSTEM_OFF.
    SystemOff,
    /// The guest turned off its last vCPU.
    AllCpusOff,
    /// The guest did something the hypervisor cannot continue from.
    Fault(String),
}

impl core::fmt::Display for StopReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::SystemOff => write!(f, "the guest called SYSTEM_OFF"),
            Self::AllCpusOff => write!(f, "the guest turned off its last vCPU"),
            Self::Fault(why) => write!(f, "{why}"),
        }
    }
}

/// What the run loop does after an exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Enter the guest again.
    Resume,
    /// The guest asked for SYSTEM_RESET: rebuild it from its image.
    Reset,
    /// The instance is finished.
    Stop(StopReason),
}

/// Which instruction made an SMCCC call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conduit {
    Hvc,
    Smc,
}

/// A guest instance's exit-handling state: one vCPU (SMP comes with the vGIC) and its devices.
pub struct Instance {
    /// The instance's name, used in every log line about it and as its console prefix.
    pub name: String,
    /// The vCPU.
    pub vcpu: Vcpu,
    /// Bytes of guest RAM at [`RAM_BASE`].
    pub ram_size: u64,
    uart: Pl011,
}

impl Instance {
    /// An instance called `name` with `ram_size` bytes of RAM whose vCPU starts at `entry` with
    /// x0 = `dtb`; its console lines go to `console`.
    pub fn new(name: &str, ram_size: u64, entry: u64, dtb: u64, console: LineSink) -> Self {
        Self {
            name: name.into(),
            vcpu: Vcpu::new(0, entry, dtb),
            ram_size,
            uart: Pl011::new(name, console),
        }
    }

    /// Handles one exit of the vCPU; `el1` gives the EL1 registers an injected exception writes.
    pub fn handle_exit(
        &mut self,
        kind: ExitKind,
        syndrome: &TrapSyndrome,
        el1: &mut impl ExceptionRegisters,
    ) -> Next {
        let pc = self.vcpu.regs.pc;
        match ExitReason::decode(kind, syndrome) {
            ExitReason::Hvc { .. } => self.smccc(Conduit::Hvc),
            ExitReason::Smc { .. } => {
                // A trapped SMC leaves ELR_EL2 at the SMC itself.
                self.vcpu.regs.skip_instruction();
                self.smccc(Conduit::Smc)
            }
            ExitReason::Wfx { .. } => {
                // Nothing can wake a vCPU until the vGIC and timers exist: continue at once.
                self.vcpu.regs.skip_instruction();
                Next::Resume
            }
            ExitReason::SysReg(access) => {
                let direction = if access.read { "read" } else { "write" };
                warn!(
                    "{}: trapped {direction} of system register {access} at PC {pc:#x}: injecting undefined instruction",
                    self.name
                );
                self.inject(el1, GuestException::Undefined)
            }
            ExitReason::Mmio(access) => self.mmio(access, syndrome.far, el1),
            ExitReason::DataAbort { ipa, write, reason } => {
                let direction = if write { "write to" } else { "read of" };
                warn!(
                    "{}: {direction} IPA {ipa:#x} at PC {pc:#x} cannot be emulated ({reason}): injecting synchronous external abort",
                    self.name
                );
                self.inject(
                    el1,
                    GuestException::DataAbort {
                        far: syndrome.far,
                        write,
                    },
                )
            }
            ExitReason::InstructionAbort { ipa } => {
                warn!(
                    "{}: instruction fetch from unmapped IPA {ipa:#x} at PC {pc:#x}: injecting instruction abort",
                    self.name
                );
                self.inject(el1, GuestException::InstructionAbort { far: syndrome.far })
            }
            ExitReason::Interrupt => Next::Resume,
            ExitReason::SError => Next::Stop(StopReason::Fault(format!(
                "system error while the guest ran at PC {pc:#x}"
            ))),
            ExitReason::Unhandled { ec } => Next::Stop(StopReason::Fault(format!(
                "unhandled exception class {ec:#x} (ESR {:#x}) at PC {pc:#x}",
                syndrome.esr
            ))),
        }
    }

    /// Passes on console output that has not reached its newline.
    pub fn flush_console(&mut self) {
        if self.uart.has_partial_line() {
            self.uart.flush();
        }
    }

    fn inject(&mut self, el1: &mut impl ExceptionRegisters, exception: GuestException) -> Next {
        inject(&mut self.vcpu.regs, el1, exception);
        Next::Resume
    }

    fn device_at(&mut self, ipa: u64) -> Option<(&mut dyn MmioDevice, u64)> {
        let devices: [(u64, &mut dyn MmioDevice); 1] = [(UART_BASE, &mut self.uart)];
        devices
            .into_iter()
            .find(|(base, device)| (*base..*base + device.window_size()).contains(&ipa))
            .map(|(base, device)| (device, ipa - base))
    }

    fn mmio(&mut self, access: MmioAccess, far: u64, el1: &mut impl ExceptionRegisters) -> Next {
        let regs_value = self.vcpu.regs.get(access.reg);
        let Some((device, offset)) = self.device_at(access.ipa) else {
            let in_ram = (RAM_BASE..RAM_BASE + self.ram_size).contains(&access.ipa);
            let direction = if access.write { "write to" } else { "read of" };
            let what = if in_ram {
                "RAM IPA without a mapping"
            } else {
                "unmapped IPA"
            };
            warn!(
                "{}: {direction} {what} {:#x} ({} bytes) at PC {:#x}: injecting synchronous external abort",
                self.name, access.ipa, access.size, self.vcpu.regs.pc
            );
            return self.inject(
                el1,
                GuestException::DataAbort {
                    far,
                    write: access.write,
                },
            );
        };
        if access.write {
            device.write(offset, access.size, access.store_value(regs_value));
        } else {
            let value = access.load_value(device.read(offset, access.size));
            self.vcpu.regs.set(access.reg, value);
        }
        self.vcpu.regs.skip_instruction();
        Next::Resume
    }

    fn smccc(&mut self, conduit: Conduit) -> Next {
        let x = &self.vcpu.regs.x;
        let call = psci::decode([x[0], x[1], x[2], x[3]]);
        debug!("{}: {conduit:?} {call:x?}", self.name);
        let result = match call {
            SmcccCall::PsciVersion => psci::PSCI_VERSION_1_1 as i64,
            SmcccCall::PsciFeatures(function) => psci::psci_features(function),
            SmcccCall::SmcccVersion => psci::SMCCC_VERSION_1_1 as i64,
            SmcccCall::ArchFeatures(function) => psci::arch_features(function),
            SmcccCall::MigrateInfoType => psci::MIGRATE_INFO_NOT_REQUIRED as i64,
            SmcccCall::CpuOn { target, .. } if self.vcpu.has_affinity(target) => status::ALREADY_ON,
            SmcccCall::CpuOn { .. } => status::INVALID_PARAMETERS,
            SmcccCall::AffinityInfo { target, level: 0 } if self.vcpu.has_affinity(target) => 0,
            SmcccCall::AffinityInfo { .. } => status::INVALID_PARAMETERS,
            SmcccCall::CpuOff => return Next::Stop(StopReason::AllCpusOff),
            SmcccCall::SystemOff => return Next::Stop(StopReason::SystemOff),
            SmcccCall::SystemReset => return Next::Reset,
            SmcccCall::Unknown(function) => {
                warn!(
                    "{}: unknown {conduit:?} call {function:#010x} at PC {:#x}: returning NOT_SUPPORTED",
                    self.name, self.vcpu.regs.pc
                );
                status::NOT_SUPPORTED
            }
        };
        self.vcpu.regs.x[0] = result as u64;
        Next::Resume
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: u64 = 0x4000_0000;
    const NOT_SUPPORTED: u64 = u64::MAX;

    fn discard(_: &str, _: &str) {}

    fn instance() -> Instance {
        Instance::new("t", 64 << 20, ENTRY, 0x43e0_0000, discard)
    }

    fn call(instance: &mut Instance, esr: u64, x: [u64; 4]) -> Next {
        instance.vcpu.regs.x[..4].copy_from_slice(&x);
        let mut el1 = El1SysRegs::at_reset();
        instance.handle_exit(
            ExitKind::Synchronous,
            &TrapSyndrome {
                esr,
                far: 0,
                hpfar: 0,
            },
            &mut el1,
        )
    }

    const HVC: u64 = 0x5a00_0000;
    const SMC: u64 = 0x5e00_0000;

    #[test]
    fn psci_over_hvc_and_smc() {
        let mut guest = instance();
        assert_eq!(call(&mut guest, HVC, [0x8400_0000, 0, 0, 0]), Next::Resume);
        assert_eq!(guest.vcpu.regs.x[0], 0x1_0001);
        assert_eq!(
            guest.vcpu.regs.pc, ENTRY,
            "HVC's return address is already past it"
        );
        assert_eq!(call(&mut guest, SMC, [0x8400_0006, 0, 0, 0]), Next::Resume);
        assert_eq!(guest.vcpu.regs.x[0], 2);
        assert_eq!(
            guest.vcpu.regs.pc,
            ENTRY + 4,
            "a trapped SMC is stepped over"
        );
        assert_eq!(
            call(&mut guest, HVC, [0x8400_000A, 0x8400_0008, 0, 0]),
            Next::Resume
        );
        assert_eq!(guest.vcpu.regs.x[0], 0);
        assert_eq!(
            call(&mut guest, HVC, [0x8400_0008, 0, 0, 0]),
            Next::Stop(StopReason::SystemOff)
        );
        assert_eq!(call(&mut guest, HVC, [0x8400_0009, 0, 0, 0]), Next::Reset);
    }

    #[test]
    fn single_vcpu_power_calls() {
        let mut guest = instance();
        call(&mut guest, HVC, [0xC400_0003, 0, ENTRY, 0]);
        assert_eq!(guest.vcpu.regs.x[0] as i64, status::ALREADY_ON);
        call(&mut guest, HVC, [0xC400_0003, 1, ENTRY, 0]);
        assert_eq!(guest.vcpu.regs.x[0] as i64, status::INVALID_PARAMETERS);
        call(&mut guest, HVC, [0xC400_0004, 0, 0, 0]);
        assert_eq!(guest.vcpu.regs.x[0], 0, "vCPU 0 is on");
        assert_eq!(
            call(&mut guest, HVC, [0x8400_0002, 0, 0, 0]),
            Next::Stop(StopReason::AllCpusOff)
        );
    }

    #[test]
    fn unknown_calls_return_not_supported() {
        let mut guest = instance();
        assert_eq!(call(&mut guest, HVC, [0x8600_1234, 0, 0, 0]), Next::Resume);
        assert_eq!(guest.vcpu.regs.x[0], NOT_SUPPORTED);
        assert_eq!(call(&mut guest, SMC, [0xC300_0001, 0, 0, 0]), Next::Resume);
        assert_eq!(guest.vcpu.regs.x[0], NOT_SUPPORTED);
    }

    /// A data abort on `ipa` by `ldr w<reg>` / `str w<reg>` (4 bytes).
    fn data_abort(ipa: u64, reg: u64, write: bool) -> TrapSyndrome {
        let iss = (1 << 24) | (2 << 22) | (reg << 16) | (u64::from(write) << 6) | 0x07;
        TrapSyndrome {
            esr: (0x24 << 26) | (1 << 25) | iss,
            far: ipa,
            hpfar: (ipa >> 12) << 4,
        }
    }

    #[test]
    fn uart_registers_are_emulated() {
        let mut guest = instance();
        let mut el1 = El1SysRegs::at_reset();
        let next = guest.handle_exit(
            ExitKind::Synchronous,
            &data_abort(UART_BASE + 0xff0, 3, false),
            &mut el1,
        );
        assert_eq!(next, Next::Resume);
        assert_eq!(guest.vcpu.regs.x[3], 0x0d);
        assert_eq!(guest.vcpu.regs.pc, ENTRY + 4);
    }

    #[test]
    fn unmapped_accesses_get_an_external_abort() {
        let mut guest = instance();
        let mut el1 = El1SysRegs {
            vbar_el1: 0x4000_8000,
            ..El1SysRegs::at_reset()
        };
        let next = guest.handle_exit(
            ExitKind::Synchronous,
            &data_abort(0x3000_0008, 1, true),
            &mut el1,
        );
        assert_eq!(next, Next::Resume);
        assert_eq!(el1.esr_el1, (0x25 << 26) | (1 << 25) | (1 << 6) | 0x10);
        assert_eq!(el1.far_el1, 0x3000_0008);
        assert_eq!(el1.elr_el1, ENTRY);
        assert_eq!(guest.vcpu.regs.pc, 0x4000_8200);
    }

    #[test]
    fn trapped_sysreg_is_undefined() {
        let mut guest = instance();
        let mut el1 = El1SysRegs {
            vbar_el1: 0x4000_8000,
            ..El1SysRegs::at_reset()
        };
        let iss = (3 << 20) | (15 << 10) | 1;
        let syndrome = TrapSyndrome {
            esr: (0x18 << 26) | (1 << 25) | iss,
            far: 0,
            hpfar: 0,
        };
        assert_eq!(
            guest.handle_exit(ExitKind::Synchronous, &syndrome, &mut el1),
            Next::Resume
        );
        assert_eq!(el1.esr_el1 >> 26, 0);
        assert_eq!(guest.vcpu.regs.pc, 0x4000_8200);
    }

    #[test]
    fn unhandled_classes_stop_the_instance() {
        let mut guest = instance();
        let next = call(&mut guest, 0x0e00_0000, [0; 4]);
        assert!(matches!(next, Next::Stop(StopReason::Fault(why)) if why.contains("0x3")));
    }
}
