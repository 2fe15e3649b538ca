//! The foundation: the hypervisor boots at EL2 on QEMU virt, runs a test guest at EL1 under
//! stage 2, and survives a guest that does illegal things.

use scenarios::{Log, board_with_guest, board_with_image};

/// The basic guest's own checks: its RAM, its device tree, the emulated UART and PSCI.
fn basic_guest_passes(cpus: u32) {
    let mut board = board_with_guest("basic");
    board.cpus = cpus;
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
        .has("[basic] PASS: psci")
        .has("[basic] PASS: psci over smc")
        .lacks("FAIL")
        .lacks("PANIC")
        .in_order(
            "[basic] RESULT: PASS",
            "basic: stopped: the guest called SYSTEM_OFF",
        )
        .in_order("basic: stopped", "all instances stopped: powering off");
}

#[test]
fn basic_guest_on_one_cpu() {
    basic_guest_passes(1);
}

#[test]
fn basic_guest_on_four_cpus_with_secondaries_parked() {
    basic_guest_passes(4);
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
