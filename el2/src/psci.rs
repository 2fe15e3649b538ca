//! SMCCC calls a guest makes with HVC or SMC: PSCI 1.1 and the Arm architecture service, decoded
//! into typed calls. Executing them is the instance's job.

/// SMCCC and PSCI return codes.
pub mod status {
    /// The call succeeded.
    pub const SUCCESS: i64 = 0;
    /// The function is not implemented (also SMCCC's NOT_SUPPORTED).
    pub const NOT_SUPPORTED: i64 = -1;
    /// An argument is invalid.
    pub const INVALID_PARAMETERS: i64 = -2;
    /// The call cannot be done now.
    pub const DENIED: i64 = -3;
    /// The CPU is already on.
    pub const ALREADY_ON: i64 = -4;
    /// CPU_ON for a CPU whose earlier CPU_ON has not completed.
    pub const ON_PENDING: i64 = -5;
    /// An entry point outside the caller's memory.
    pub const INVALID_ADDRESS: i64 = -9;
}

/// Function identifiers (SMC32 and SMC64 forms where both exist).
pub mod fid {
    /// PSCI_VERSION.
    pub const PSCI_VERSION: u32 = 0x8400_0000;
    /// CPU_SUSPEND, SMC32 form.
    pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
    /// CPU_SUSPEND, SMC64 form.
    pub const CPU_SUSPEND_64: u32 = 0xC400_0001;
    /// CPU_OFF.
    pub const CPU_OFF: u32 = 0x8400_0002;
    /// CPU_ON, SMC32 form.
    pub const CPU_ON_32: u32 = 0x8400_0003;
    /// CPU_ON, SMC64 form.
    pub const CPU_ON_64: u32 = 0xC400_0003;
    /// AFFINITY_INFO, SMC32 form.
    pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
    /// AFFINITY_INFO, SMC64 form.
    pub const AFFINITY_INFO_64: u32 = 0xC400_0004;
    /// MIGRATE_INFO_TYPE.
    pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    /// SYSTEM_OFF.
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    /// SYSTEM_RESET.
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    /// PSCI_FEATURES.
    pub const PSCI_FEATURES: u32 = 0x8400_000A;
    /// SMCCC_VERSION.
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    /// SMCCC_ARCH_FEATURES.
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    /// The project's own: register (or with INTID 0, unregister) for migration notices.
    pub const HV_MIGRATION_NOTICES: u32 = 0xC600_0010;
    /// The project's own: the last migration notice (event, paused ticks, how many so far).
    pub const HV_MIGRATION_STATUS: u32 = 0xC600_0011;
    /// The project's own: take the instance's checkpoint for the management side now.
    pub const HV_CHECKPOINT: u32 = 0xC600_0012;
}

/// PSCI 1.1, as `major << 16 | minor`.
pub const PSCI_VERSION_1_1: u64 = 0x0001_0001;
/// SMCCC 1.1.
pub const SMCCC_VERSION_1_1: u64 = 0x0001_0001;
/// MIGRATE_INFO_TYPE answer: no Trusted OS that needs migrating.
pub const MIGRATE_INFO_NOT_REQUIRED: u64 = 2;

/// A decoded SMCCC call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmcccCall {
    /// PSCI_VERSION.
    PsciVersion,
    /// PSCI_FEATURES for the given function id.
    PsciFeatures(u32),
    /// CPU_ON: power on the vCPU whose MPIDR is `target`, entering at `entry` with x0 = `context_id`.
    CpuOn {
        target: u64,
        entry: u64,
        context_id: u64,
    },
    /// CPU_SUSPEND of the calling vCPU into `power_state` (original format: bit 16 set for a
    /// power-down state, which resumes at `entry` with x0 = `context_id`; clear for standby).
    CpuSuspend {
        power_state: u64,
        entry: u64,
        context_id: u64,
    },
    /// CPU_OFF for the calling vCPU.
    CpuOff,
    /// AFFINITY_INFO for `target` at affinity level `level`.
    AffinityInfo { target: u64, level: u64 },
    /// MIGRATE_INFO_TYPE.
    MigrateInfoType,
    /// SYSTEM_OFF.
    SystemOff,
    /// SYSTEM_RESET.
    SystemReset,
    /// SMCCC_VERSION.
    SmcccVersion,
    /// SMCCC_ARCH_FEATURES for the given function id.
    ArchFeatures(u32),
    /// HV_MIGRATION_NOTICES: send migration notices as interrupt `intid` (0: none).
    MigrationNotices { intid: u64 },
    /// HV_MIGRATION_STATUS.
    MigrationStatus,
    /// HV_CHECKPOINT.
    Checkpoint,
    /// Anything else: answered with NOT_SUPPORTED.
    Unknown(u32),
}

/// Decodes a call from the guest's x0..x3.
#[inline]
pub fn decode(regs: [u64; 4]) -> SmcccCall {
    let function = regs[0] as u32;
    let is_smc32 = function & 0x4000_0000 == 0;
    let arg = |n: usize| {
        if is_smc32 {
            regs[n] & 0xffff_ffff
        } else {
            regs[n]
        }
    };
    match function {
        fid::PSCI_VERSION => SmcccCall::PsciVersion,
        fid::PSCI_FEATURES => SmcccCall::PsciFeatures(arg(1) as u32),
        fid::CPU_ON_32 | fid::CPU_ON_64 => SmcccCall::CpuOn {
            target: arg(1),
            entry: arg(2),
            context_id: arg(3),
        },
        fid::CPU_SUSPEND_32 | fid::CPU_SUSPEND_64 => SmcccCall::CpuSuspend {
            power_state: arg(1),
            entry: arg(2),
            context_id: arg(3),
        },
        fid::CPU_OFF => SmcccCall::CpuOff,
        fid::AFFINITY_INFO_32 | fid::AFFINITY_INFO_64 => SmcccCall::AffinityInfo {
            target: arg(1),
            level: arg(2),
        },
        fid::MIGRATE_INFO_TYPE => SmcccCall::MigrateInfoType,
        fid::SYSTEM_OFF => SmcccCall::SystemOff,
        fid::SYSTEM_RESET => SmcccCall::SystemReset,
        fid::SMCCC_VERSION => SmcccCall::SmcccVersion,
        fid::SMCCC_ARCH_FEATURES => SmcccCall::ArchFeatures(arg(1) as u32),
        fid::HV_MIGRATION_NOTICES => SmcccCall::MigrationNotices { intid: arg(1) },
        fid::HV_MIGRATION_STATUS => SmcccCall::MigrationStatus,
        fid::HV_CHECKPOINT => SmcccCall::Checkpoint,
        other => SmcccCall::Unknown(other),
    }
}

/// The answer to a call that only asks about the firmware interface (its version, which
/// functions exist): the same on every board and for every instance, so it needs no state and
/// no lock. `None` for every call that acts or depends on an instance.
#[inline]
pub fn query_answer(call: SmcccCall) -> Option<i64> {
    Some(match call {
        SmcccCall::PsciVersion => PSCI_VERSION_1_1 as i64,
        SmcccCall::PsciFeatures(function) => psci_features(function),
        SmcccCall::SmcccVersion => SMCCC_VERSION_1_1 as i64,
        SmcccCall::ArchFeatures(function) => arch_features(function),
        SmcccCall::MigrateInfoType => MIGRATE_INFO_NOT_REQUIRED as i64,
        _ => return None,
    })
}

/// The `power_state` bit of CPU_SUSPEND (original format) that asks for a power-down state.
pub const POWER_STATE_POWERDOWN: u64 = 1 << 16;

/// The answer to PSCI_FEATURES: 0 for every function this hypervisor implements (for
/// CPU_SUSPEND, 0 also says: original power_state format, no OS-initiated mode).
pub fn psci_features(function: u32) -> i64 {
    match function {
        fid::PSCI_VERSION
        | fid::CPU_SUSPEND_32
        | fid::CPU_SUSPEND_64
        | fid::CPU_OFF
        | fid::CPU_ON_32
        | fid::CPU_ON_64
        | fid::AFFINITY_INFO_32
        | fid::AFFINITY_INFO_64
        | fid::MIGRATE_INFO_TYPE
        | fid::SYSTEM_OFF
        | fid::SYSTEM_RESET
        | fid::PSCI_FEATURES
        | fid::SMCCC_VERSION => status::SUCCESS,
        _ => status::NOT_SUPPORTED,
    }
}

/// The answer to SMCCC_ARCH_FEATURES: only the discovery call itself; no firmware workarounds.
pub fn arch_features(function: u32) -> i64 {
    match function {
        fid::SMCCC_ARCH_FEATURES => status::SUCCESS,
        _ => status::NOT_SUPPORTED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_projects_own_calls() {
        assert_eq!(
            decode([0xC600_0010, 20, 0, 0]),
            SmcccCall::MigrationNotices { intid: 20 }
        );
        assert_eq!(decode([0xC600_0011, 0, 0, 0]), SmcccCall::MigrationStatus);
        assert_eq!(decode([0xC600_0012, 0, 0, 0]), SmcccCall::Checkpoint);
        assert_eq!(
            decode([0xC600_0013, 0, 0, 0]),
            SmcccCall::Unknown(0xC600_0013)
        );
    }

    #[test]
    fn decodes_psci_calls() {
        assert_eq!(decode([0x8400_0000, 0, 0, 0]), SmcccCall::PsciVersion);
        assert_eq!(
            decode([0xC400_0003, 0x101, 0x4008_0000, 0x55]),
            SmcccCall::CpuOn {
                target: 0x101,
                entry: 0x4008_0000,
                context_id: 0x55
            }
        );
        // SMC32 forms only see the low 32 bits of their arguments.
        assert_eq!(
            decode([0x8400_0003, 0xffff_0000_0000_0001, 0x1_4008_0000, 7]),
            SmcccCall::CpuOn {
                target: 1,
                entry: 0x4008_0000,
                context_id: 7
            }
        );
        assert_eq!(decode([0x8400_0008, 0, 0, 0]), SmcccCall::SystemOff);
        assert_eq!(decode([0x8400_0009, 0, 0, 0]), SmcccCall::SystemReset);
        assert_eq!(
            decode([0x8400_000A, 0x8400_0000, 0, 0]),
            SmcccCall::PsciFeatures(0x8400_0000)
        );
        assert_eq!(
            decode([0xC400_0004, 2, 0, 0]),
            SmcccCall::AffinityInfo {
                target: 2,
                level: 0
            }
        );
        assert_eq!(decode([0x8400_0006, 0, 0, 0]), SmcccCall::MigrateInfoType);
        // The upper half of x0 is ignored: function ids are 32 bits.
        assert_eq!(
            decode([0xffff_ffff_8000_0000, 0, 0, 0]),
            SmcccCall::SmcccVersion
        );
    }

    #[test]
    fn unknown_calls_are_not_supported() {
        assert_eq!(
            decode([0x8600_1234, 0, 0, 0]),
            SmcccCall::Unknown(0x8600_1234)
        );
        assert_eq!(psci_features(0x8600_1234), status::NOT_SUPPORTED);
        assert_eq!(
            psci_features(fid::CPU_SUSPEND_64),
            status::SUCCESS,
            "CPU_SUSPEND, original power_state format"
        );
        assert_eq!(
            decode([0xC400_0001, 0x1_0000, 0x4008_0000, 9]),
            SmcccCall::CpuSuspend {
                power_state: POWER_STATE_POWERDOWN,
                entry: 0x4008_0000,
                context_id: 9
            }
        );
        assert_eq!(psci_features(fid::SYSTEM_OFF), status::SUCCESS);
        assert_eq!(psci_features(fid::SMCCC_VERSION), status::SUCCESS);
        assert_eq!(arch_features(0x8000_8000), status::NOT_SUPPORTED);
        assert_eq!(arch_features(fid::SMCCC_ARCH_FEATURES), status::SUCCESS);
    }
}
