//! A real Debian Linux kernel with a busybox initramfs boots under the hypervisor, keeps time on
//! every vCPU, runs commands typed on its console, and powers the board off.

use scenarios::{Log, board_with_image};
use xtask::linux_guest;

/// The arch timer's per-CPU interrupt counts from each `/proc/interrupts` listing in `serial`.
fn timer_counts(serial: &str) -> Vec<Vec<u64>> {
    serial
        .lines()
        .filter(|line| line.ends_with("arch_timer"))
        .map(|line| {
            let after_irq = line.split_once(':').map_or("", |(_, rest)| rest);
            after_irq
                .split_whitespace()
                .map_while(|field| field.parse().ok())
                .collect()
        })
        .collect()
}

fn linux_boots_and_runs_a_shell(vcpus: u32) {
    let bundle = linux_guest::bundle_path(vcpus);
    assert!(
        bundle.exists(),
        "{} is missing: run the scenarios with `cargo xtask test`",
        bundle.display()
    );
    let mut board = board_with_image(bundle, "linux");
    board.cpus = vcpus;
    board.memory_mib = 1024;
    const PROMPT: &str = linux_guest::PROMPT;
    // A second of work pinned to every vCPU: an idle CPU of a tickless kernel may take no tick
    // in a second (its next timer can be further away), a busy one takes HZ of them.
    let busy_second = (0..vcpus)
        .map(|cpu| format!("taskset -c {cpu} timeout 1 sh -c 'while :; do :; done' & "))
        .collect::<String>()
        + "wait\r";
    let log = Log::boot_scripted(
        &format!("linux on {vcpus} vCPUs"),
        &board,
        &[
            // The keyboard starts with the management shell: Ctrl-] gives it to the guest,
            // whose output is shown raw from then on.
            (PROMPT, "\x1d"),
            ("keyboard to linux", "cat /proc/cpuinfo\r"),
            (PROMPT, "cat /proc/interrupts\r"),
            (PROMPT, &busy_second),
            (PROMPT, "cat /proc/interrupts\r"),
            (PROMPT, "echo RESULT=$((6*7))\r"),
            (PROMPT, "poweroff -f\r"),
        ],
    );
    log.powered_off()
        .has(linux_guest::INIT_MARKER)
        .has(&format!("GUEST-INIT: cpus {vcpus} "))
        .has("console: keyboard to linux")
        .has("RESULT=42")
        .in_order("RESULT=42", "linux: stopped: the guest called SYSTEM_OFF")
        .lacks(": not found")
        .lacks("PANIC");

    let serial = log.serial();
    let processors: Vec<&str> = serial
        .lines()
        .filter(|line| line.starts_with("processor"))
        .collect();
    assert_eq!(
        processors.len(),
        vcpus as usize,
        "/proc/cpuinfo lists every vCPU:\n{serial}"
    );

    let counts = timer_counts(serial);
    assert_eq!(
        counts.len(),
        2,
        "two /proc/interrupts listings with an arch_timer line:\n{serial}"
    );
    assert_eq!(
        counts[0].len(),
        vcpus as usize,
        "one arch_timer column per vCPU:\n{serial}"
    );
    for (cpu, (before, after)) in counts[0].iter().zip(&counts[1]).enumerate() {
        assert!(
            after > before,
            "the arch timer count of CPU{cpu} grew ({before} -> {after}):\n{serial}"
        );
    }
}

#[test]
fn linux_on_one_vcpu() {
    linux_boots_and_runs_a_shell(1);
}

#[test]
fn linux_on_four_vcpus_on_four_cpus() {
    linux_boots_and_runs_a_shell(4);
}
