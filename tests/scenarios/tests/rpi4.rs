//! The Raspberry Pi 4 (QEMU `raspi4b` with Debian's Pi 4 device tree): the same hypervisor image
//! as on QEMU virt, loaded at 0x8_0000 by the board's loader, relocates itself, drives the
//! GIC-400, releases the other three cores from their spin table, runs the same guests, and
//! powers the board off through the PM watchdog (QEMU exits on that reset with -no-reboot).

use scenarios::{Log, board_with_guest, board_with_image, on_raspi4b};
use xtask::linux_guest;

/// What every Pi boot shows before its guests: the board recognised, all four cores up.
fn boots_as_a_pi(log: &Log) {
    log.has("hypervisor starting at EL2 on Raspberry Pi 4 (4 CPUs)")
        .has("CPU 1 (MPIDR 0x1) up, released from its spin table at 0xe0")
        .has("CPU 2 (MPIDR 0x2) up, released from its spin table at 0xe8")
        .has("CPU 3 (MPIDR 0x3) up, released from its spin table at 0xf0")
        .lacks("did not leave its spin table")
        .lacks("PANIC");
}

#[test]
fn the_timer_guest_keeps_its_500_ticks_on_a_raspberry_pi_4() {
    let board = on_raspi4b(board_with_guest("timer"), true);
    let log = Log::boot("timer on raspi4b", &board);
    boots_as_a_pi(&log);
    log.powered_off()
        .has("[timer] gic: distributor 0x8000000, cpu interface 0x8010000, 1 cpu(s); counter 62500000 Hz")
        .has("[timer] virtual timer: 500/500 ticks")
        .has("[timer] PASS: virtual timer 500 ticks")
        .has("[timer] PASS: physical timer 100 ticks")
        .lacks("FAIL")
        .in_order(
            "[timer] RESULT: PASS",
            "timer: stopped: the guest called SYSTEM_OFF",
        )
        .in_order("timer: stopped", "all instances stopped: powering off");
}

#[test]
fn linux_on_four_vcpus_boots_to_its_shell_on_a_raspberry_pi_4() {
    let bundle = linux_guest::bundle_path(4);
    assert!(
        bundle.exists(),
        "{} is missing: run the scenarios with `cargo xtask test`",
        bundle.display()
    );
    let board = on_raspi4b(board_with_image(bundle, "linux"), false);
    const PROMPT: &str = linux_guest::PROMPT;
    let log = Log::boot_scripted(
        "linux on raspi4b",
        &board,
        &[
            (PROMPT, "\x1d"),
            ("keyboard to linux", "echo RESULT=$((6*7))\r"),
            (PROMPT, "poweroff -f\r"),
        ],
    );
    boots_as_a_pi(&log);
    log.powered_off()
        .has(linux_guest::INIT_MARKER)
        .has("GUEST-INIT: cpus 4 ")
        .has("RESULT=42")
        .in_order("RESULT=42", "linux: stopped: the guest called SYSTEM_OFF");
}
