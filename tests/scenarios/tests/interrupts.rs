//! Interrupts, timers and SMP: the test guests `timer`, `sgi`, `storm` and `bench` on the
//! hypervisor's virtual GIC (v3, or v2 under `SCENARIO_GIC=2`), asserting on the guests' own
//! PASS lines.
//!
//! The timer scenarios run under `-icount shift=0,sleep=off`: their checks are about time (no tick
//! a full period late), which on a loaded host under plain TCG depends on the host's scheduling,
//! not on the hypervisor. With icount one counter tick is one instruction and the run repeats.

use scenarios::{Log, board_gic, board_with_bundle, board_with_guest, with_icount};

/// What every passing guest run ends with.
fn passes(log: &Log, guest: &str) {
    log.powered_off()
        .has(&format!("[{guest}] RESULT: PASS"))
        .lacks("FAIL")
        .lacks("PANIC")
        .in_order(
            &format!("[{guest}] RESULT: PASS"),
            &format!("{guest}: stopped: the guest called SYSTEM_OFF"),
        )
        .in_order(
            &format!("{guest}: stopped"),
            "all instances stopped: powering off",
        );
}

#[test]
fn virtual_timer_ticks_500_times_at_1khz_without_losing_one() {
    let log = Log::boot("timer (virtual)", &with_icount(board_with_guest("timer")));
    let guest_gic = match board_gic() {
        2 => "[timer] gic: distributor 0x8000000, cpu interface 0x8010000, 1 cpu(s)",
        _ => "[timer] gic: distributor 0x8000000, redistributors 0x80a0000, 1 cpu(s)",
    };
    log.powered_off()
        .has(guest_gic)
        .has("[timer] virtual timer: 500/500 ticks")
        .has("[timer] PASS: virtual timer 500 ticks")
        .lacks("FAIL: virtual timer")
        .lacks("PANIC");
}

#[test]
fn physical_timer_ticks_100_times_at_1khz_without_losing_one() {
    let log = Log::boot("timer (physical)", &with_icount(board_with_guest("timer")));
    log.has("[timer] PASS: physical timer 100 ticks");
    passes(&log, "timer");
    // Each tick's handler reads the physical counter (trapped, the instance's own time):
    // answered on the fast path, from the exception vector.
    log.check(
        log.exits("timer", "sysreg_fast") >= 100,
        "the physical counter reads answered on the fast path",
    );
}

#[test]
fn sgis_reach_exactly_their_targets_on_four_vcpus() {
    let (board, bundle) = board_with_bundle("sgi", 4, 4);
    let log = Log::boot("sgi", &board);
    std::fs::remove_file(&bundle).ok();
    log.has("sgi: 4 vCPUs, 64 MiB RAM")
        .has("[sgi] all 4 CPUs up and sent their SGIs")
        .has("[sgi] cpu 0 took SGIs 4 10 12")
        .has("[sgi] cpu 1 took SGIs 1 8 12")
        .has("[sgi] cpu 2 took SGIs 2 8 10 12")
        .has("[sgi] cpu 3 took SGIs 3 8 12")
        .has("[sgi] PASS: sgi routing");
    passes(&log, "sgi");
}

#[test]
fn interrupt_storm_beyond_the_list_registers_loses_nothing() {
    let log = Log::boot("storm", &board_with_guest("storm"));
    log.has("[storm] PASS: interrupt storm 40")
        .has("[storm] PASS: interrupt priority order");
    passes(&log, "storm");
}

#[test]
fn bench_guest_reports_every_figure() {
    let (board, bundle) = board_with_bundle("bench", 2, 2);
    let log = Log::boot("bench", &with_icount(board));
    std::fs::remove_file(&bundle).ok();
    log.powered_off().lacks("PANIC").lacks("unexpected");
    for name in [
        "null_hypercall",
        "mmio_read",
        "mmio_write",
        "console_64_bytes",
        "timer_latency",
        "sgi_latency",
    ] {
        let prefix = format!("[bench] BENCH {name} ");
        let value = log
            .serial()
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<u64>().ok());
        assert!(
            value.is_some_and(|v| v > 0),
            "no positive `BENCH {name} <ticks>` line in:\n{}",
            log.serial()
        );
    }
    log.in_order("[bench] BENCH sgi_latency", "[bench] BENCH done")
        .in_order(
            "[bench] BENCH done",
            "bench: stopped: the guest called SYSTEM_OFF",
        );
}
