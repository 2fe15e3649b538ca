//! The foundation: the hypervisor boots at EL2 on QEMU virt, runs a test guest at EL1 under
//! stage 2, and survives a guest that does illegal things.

use scenarios::{Log, board_with_guest, board_with_image};

/// Fails the scenario unless some line of the log is exactly `line` (ignoring a trailing CR).
fn has_line<'a>(log: &'a Log, line: &str) -> &'a Log {
    log.check(
        log.serial()
            .lines()
            .any(|l| l.trim_end_matches('\r') == line),
        &format!("no line is exactly {line:?}"),
    )
}

/// The SMCCC calls the basic guest makes over SMC, as the hypervisor logs each trapped one.
const BASIC_SMC_CALLS: [&str; 5] = [
    "PsciVersion",
    "MigrateInfoType",
    "PsciFeatures(80000000)",
    "SmcccVersion",
    "AffinityInfo { target: 1, level: 0 }",
];

/// The basic guest's own checks on a board with `cpus` CPUs: its RAM, its device tree, the
/// emulated UART, PSCI over HVC and over SMC (trapped and answered by the hypervisor, as its debug
/// log shows), and that the guest has exactly one CPU whatever the board has.
fn basic_guest_passes(cpus: u32) {
    let mut board = board_with_guest("basic");
    board.cpus = cpus;
    board.bootargs = "log=debug guest.name=basic guest.mem=64M".into();
    let log = Log::boot(&format!("basic on {cpus} CPUs"), &board);
    log.powered_off()
        .has(&format!(
            "hypervisor starting at EL2 on QEMU virt ({cpus} CPUs)"
        ))
        .has("[basic] memory: base=0x40000000 size=0x4000000")
        .has("[basic] PASS: dt memory")
        .has("[basic] PASS: ram pattern")
        .has("[basic] PASS: uart id registers")
        .has("[basic] PASS: uart output")
        .has("[basic] PASS: uart flag register into every register")
        .has("[basic] PASS: uart control registers")
        .has("[basic] PASS: uart interrupt status")
        .has("[basic] PASS: psci")
        .has("[basic] PASS: psci over smc")
        .has("[basic] PASS: one cpu")
        .lacks("FAIL")
        .lacks("PANIC")
        // Nothing the hypervisor logged about the guest was dropped by its rate limit.
        .lacks("suppressed")
        .in_order(
            "[basic] RESULT: PASS",
            "basic: stopped: the guest called SYSTEM_OFF",
        )
        .in_order("basic: stopped", "all instances stopped: powering off");

    // What the guest read from the UART: a PL011 with empty FIFOs, registers that keep what is
    // written (to their widths), and its transmit interrupt raised.
    has_line(
        &log,
        "[basic] uart flags after output: FR=0x90 (TXFE=1 RXFE=1 TXFF=0 RXFF=0 BUSY=0)",
    );
    has_line(
        &log,
        "[basic] uart control registers: wrote IBRD=0x12345 FBRD=0xff LCR_H=0x376 IMSC=0xffff, \
         read back IBRD=0x2345 FBRD=0x3f LCR_H=0x76 IMSC=0x7ff",
    );
    has_line(
        &log,
        "[basic] uart interrupt status: RIS=0x20 MIS=0x20 with IMSC=0x7ff, MIS=0x0 with IMSC=0",
    );

    // PSCI over SMC: the hypervisor trapped each call (once) and answered it. QEMU's own PSCI
    // firmware, were the SMCs to reach it, would answer FEATURES(SMCCC_VERSION) and SMCCC_VERSION
    // with -1, and log nothing.
    has_line(
        &log,
        "[basic] psci over smc: VERSION=0x10001 MIGRATE_INFO_TYPE=0x2 \
         FEATURES(SMCCC_VERSION)=0x0 SMCCC_VERSION=0x10001 AFFINITY_INFO(mpidr 1)=-2",
    );
    for call in BASIC_SMC_CALLS {
        has_line(&log, &format!("el2 DEBUG: basic: vCPU 0: Smc {call}"));
    }
    log.check(
        log.count("el2 DEBUG: basic: vCPU 0: Smc ") == BASIC_SMC_CALLS.len(),
        "one trapped SMC logged per SMC the guest made",
    )
    .in_order(
        "el2 DEBUG: basic: vCPU 0: Smc SmcccVersion",
        "[basic] psci over smc:",
    );

    // One vCPU, whatever the board has: one CPU in the guest's DT, and PSCI (which the guest
    // asked over HVC, as the hypervisor logged) knows no MPIDR 1.
    has_line(
        &log,
        "[basic] cpus: 1 in the device tree (reg 0x0), this CPU is MPIDR 0x0; \
         AFFINITY_INFO(mpidr 0x0)=0 AFFINITY_INFO(mpidr 1)=-2 CPU_ON(mpidr 1)=-2",
    );
    has_line(
        &log,
        "el2 DEBUG: basic: vCPU 0: Hvc AffinityInfo { target: 1, level: 0 }",
    );
    log.has("el2 DEBUG: basic: vCPU 0: Hvc CpuOn { target: 1, ");
}

#[test]
fn basic_guest_on_one_cpu() {
    basic_guest_passes(1);
}

#[test]
fn basic_guest_sees_one_cpu_on_a_four_cpu_board() {
    basic_guest_passes(4);
}

/// The basic guest with the fast path on (`log=info`: under `log=debug` every exit takes the
/// full path, so that each can be logged): its loads of the UART's FR into every register, at
/// every size, are answered in the exception vector (or, sign-extended, by the Rust fast path),
/// and the rest of its checks pass as on the full path.
#[test]
fn basic_guest_on_the_fast_path() {
    let mut board = board_with_guest("basic");
    board.bootargs = "log=info guest.name=basic guest.mem=64M".into();
    let log = Log::boot("basic on the fast path", &board);
    log.powered_off()
        .has("[basic] PASS: uart output")
        .has("[basic] PASS: uart flag register into every register")
        .has("[basic] PASS: uart control registers")
        .has("[basic] PASS: uart interrupt status")
        .has("[basic] PASS: psci")
        .has("[basic] RESULT: PASS")
        .lacks("FAIL")
        .lacks("PANIC");
    // Counted apart from the Rust fast path's: the vector itself answered the 34 plain loads
    // (and the console's own polls).
    log.check(
        log.exits("basic", "fr_fast") >= 34,
        "the flag register loads answered in the exception vector",
    );
}

#[test]
fn hostile_guest_gets_architectural_answers_and_the_hypervisor_survives() {
    let log = Log::boot("hostile", &board_with_guest("hostile"));
    log.powered_off()
        // What the guest saw.
        .has("[hostile] PASS: read unmapped ipa")
        .has("[hostile] PASS: write unmapped ipa")
        .has("[hostile] PASS: unknown hvc")
        .has("[hostile] PASS: unknown smc")
        .has("[hostile] PASS: trapped sysreg")
        .has("[hostile] PASS: still alive")
        .has("[hostile] RESULT: PASS")
        // What the hypervisor logged about each.
        .has("hostile: read of unmapped IPA 0x30000000 (4 bytes)")
        .has("hostile: write to unmapped IPA 0x30000008 (4 bytes)")
        .has("hostile: unknown Hvc call 0x86001234")
        .has("hostile: unknown Smc call 0xc3000001")
        .has("hostile: trapped read of system register S3_0_C15_C0_0")
        .lacks("PANIC")
        .in_order(
            "[hostile] RESULT: PASS",
            "all instances stopped: powering off",
        );
}

#[test]
fn corrupt_guest_image_is_refused_with_a_clear_error() {
    let path = std::env::temp_dir().join(format!("corrupt-guest-{}.img", std::process::id()));
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, garbage).expect("write the corrupt image");
    let log = Log::boot("corrupt image", &board_with_image(path.clone(), "broken"));
    std::fs::remove_file(&path).ok();
    log.powered_off()
        .has("broken: cannot start: guest image: no arm64 Image magic")
        .has("all instances stopped: powering off")
        .lacks("PANIC");
}
