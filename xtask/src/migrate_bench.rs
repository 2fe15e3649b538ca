//! `cargo xtask bench migrate`: live migration of a running guest between two QEMU virt boards,
//! by the hypervisor over its board link, beside QEMU's own live migration of the same guest
//! (on the bare board, no hypervisor) between two QEMU processes.
//!
//! Cases: the pattern test guest (64 MiB, 2 vCPUs) idle after writing all of its memory once,
//! and rewriting all of it every second; Debian's Linux (256 MiB, 2 vCPUs) idle at its shell,
//! and with a loop writing 16 MiB of random bytes into a tmpfs file again and again.
//!
//! The hypervisor's figures are the sending board's report (`<name>: migrated to ...: N rounds,
//! K KiB in T ms, Z of P pages non-zero, paused D ms`): total from `migrate` to the receiver's
//! answer, downtime from the pause to that answer (the receiver starts the instance as it
//! answers), bytes of checkpoint stream. QEMU's are its `info migrate` once completed. Both
//! count the migration stream, not the TCP/IP framing under it. These run in host time, not
//! under icount (the boards' link is a host socket): the figures vary from run to run with
//! how busy the host is, so they show orders of magnitude, not exact costs.

use std::path::PathBuf;
use std::time::Duration;

use crate::bench::{json_string, render_table};
use crate::build::{self, images_dir, workspace_root};
use crate::bundle::{BundleSpec, write_bundle_file};
use crate::linux_guest;
use crate::qemu::{Board, CPU, stream_link};
use crate::qemu_migration::{QemuMigration, live_migrate};

/// Longest one board of a move may run (wall time).
const TIMEOUT: Duration = Duration::from_secs(400);
/// The pattern guest's RAM and vCPUs.
const PATTERN_MIB: u64 = 64;
/// The Linux guest's vCPUs (its RAM is [`linux_guest::MEMORY`]).
const VCPUS: u32 = 2;
/// The pattern guest's bootargs: rounds without end; idle, it sleeps long between them, and
/// working, a second (it rewrites all of its RAM at about 64 MiB a second, which QEMU's own
/// migration, at its default cap of 128 MiB/s, can keep up with).
const PATTERN_FOREVER: &str = "pattern.rounds=1000000 pattern.seconds=1000000";
const PATTERN_IDLE: &str = "pattern.sleep_ms=20000";
const PATTERN_WORKING: &str = "pattern.sleep_ms=1000";
/// The Linux guest's workload, typed on its shell: 16 MiB of random bytes into a tmpfs file,
/// over and over, `dirtied <n>` after each.
const LINUX_WORKLOAD: &str = "mount -t tmpfs tmpfs /tmp; (i=0; while true; do i=$((i+1)); \
    dd if=/dev/urandom of=/tmp/f bs=1M count=16 2>/dev/null; echo \"dirt\"\"ied $i\"; done) &\r";
/// What the Linux guest answers once it runs on the receiving side.
const LINUX_CHECK: (&str, &str) = ("MOVED-42", "echo MOVED-$((40+2))\r");

/// Which guest a case moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guest {
    Pattern,
    Linux,
}

/// One case of the benchmark.
#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    guest: Guest,
    /// The guest keeps dirtying memory while it moves.
    working: bool,
}

const CASES: [Case; 4] = [
    Case {
        name: "pattern 64 MiB idle",
        guest: Guest::Pattern,
        working: false,
    },
    Case {
        name: "pattern 64 MiB rewriting all each 1 s",
        guest: Guest::Pattern,
        working: true,
    },
    Case {
        name: "linux 256 MiB idle",
        guest: Guest::Linux,
        working: false,
    },
    Case {
        name: "linux 256 MiB writing 16 MiB",
        guest: Guest::Linux,
        working: true,
    },
];

/// The hypervisor's report of a finished move.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MoveReport {
    /// Rounds while the guest ran.
    pub rounds: u64,
    /// Bytes of checkpoint stream (to the KiB).
    pub bytes: u64,
    /// From `migrate` to the receiver's answer.
    pub total_ms: u64,
    /// Pages sent that were not all zero, and all pages sent.
    pub nonzero_pages: u64,
    /// All pages sent (a page sent in several rounds counts each time).
    pub pages: u64,
    /// From the pause to the receiver's answer.
    pub paused_ms: u64,
}

/// The figures in the sending board's `<name>: migrated to ...` line in `serial`.
pub fn parse_move_report(serial: &str, name: &str) -> Option<MoveReport> {
    let marker = format!("{name}: migrated to ");
    let line = serial.lines().find_map(|line| {
        let at = line.find(&marker)?;
        Some(&line[at + marker.len()..])
    })?;
    // "<address>: R rounds, K KiB in T ms, Z of P pages non-zero, paused D ms"
    let figures = line.split_once(": ")?.1;
    let numbers: Vec<u64> = figures
        .split(|c: char| !c.is_ascii_digit())
        .filter(|word| !word.is_empty())
        .map(|word| word.parse().ok())
        .collect::<Option<_>>()?;
    let [rounds, kib, total_ms, nonzero_pages, pages, paused_ms] = numbers[..] else {
        return None;
    };
    Some(MoveReport {
        rounds,
        bytes: kib << 10,
        total_ms,
        nonzero_pages,
        pages,
        paused_ms,
    })
}

/// One case measured both ways.
struct Row {
    case: Case,
    ours: MoveReport,
    qemu: QemuMigration,
}

/// Runs every case and prints the table; the figures go to `target/bench-migrate.json`.
pub fn bench_migrate(qemu_version: &str) -> Result<(), String> {
    build::build_all()?;
    let bundle = linux_guest::linux_bundle(VCPUS)?;
    let mut rows = Vec::new();
    for case in CASES {
        eprintln!("xtask: bench migrate: {} (hypervisor)", case.name);
        let ours = hypervisor_move(case, &bundle)?;
        eprintln!("xtask: bench migrate: {} (QEMU)", case.name);
        let qemu = qemu_move(case)?;
        eprintln!(
            "xtask: bench migrate: {} : hypervisor {ours:?}, QEMU {qemu:?}",
            case.name
        );
        rows.push(Row { case, ours, qemu });
    }
    print!("{}", table(&rows));
    let json = workspace_root().join("target").join("bench-migrate.json");
    std::fs::write(&json, to_json(qemu_version, &rows))
        .map_err(|error| format!("cannot write {}: {error}", json.display()))?;
    eprintln!("xtask: bench migrate: wrote {}", json.display());
    Ok(())
}

/// The pattern guest's bundle for `case`.
fn pattern_bundle(case: Case) -> Result<PathBuf, String> {
    let out = images_dir().join("bench-migrate-pattern.fit");
    let pace = if case.working {
        PATTERN_WORKING
    } else {
        PATTERN_IDLE
    };
    write_bundle_file(
        &BundleSpec {
            kernel: build::guest_image("pattern"),
            initrd: None,
            name: "pattern".into(),
            memory: PATTERN_MIB << 20,
            vcpus: VCPUS,
            bootargs: format!("{PATTERN_FOREVER} {pace}"),
        },
        &out,
    )?;
    Ok(out)
}

/// Moves `case`'s guest from board A to board B under the hypervisor; A's report.
fn hypervisor_move(case: Case, linux_bundle: &std::path::Path) -> Result<MoveReport, String> {
    let socket = workspace_root()
        .join("target")
        .join("bench-migrate-link.sock");
    let _ = std::fs::remove_file(&socket);
    let (image, name) = match case.guest {
        Guest::Pattern => (pattern_bundle(case)?, "pattern"),
        Guest::Linux => (linux_bundle.to_path_buf(), "linux"),
    };
    let migrate = format!("migrate {name} 10.0.0.2\r");
    let moved = format!("{name}: migrated to");
    let mut a_script: Vec<(&str, &str)> = match (case.guest, case.working) {
        // Both CPUs have written their share once.
        (Guest::Pattern, false) => vec![("round 0 ok", ""), ("round 0 ok", &migrate)],
        (Guest::Pattern, true) => vec![("round 3 ok", &migrate)],
        (Guest::Linux, false) => vec![(linux_guest::INIT_MARKER, &migrate)],
        (Guest::Linux, true) => vec![
            (linux_guest::INIT_MARKER, "\x1d"),
            ("keyboard to linux", LINUX_WORKLOAD),
            ("dirtied 1", "\x1c"),
            ("keyboard to the shell", &migrate),
        ],
    };
    a_script.push((&moved, "poweroff\r"));
    let received = format!("{name}: received");
    let b_script: Vec<(&str, &str)> = match case.guest {
        // The guest runs on: another round (after its sleep, when idle).
        Guest::Pattern => vec![(&received, ""), ("round", ""), ("round", "poweroff\r")],
        Guest::Linux => vec![
            (&received, "\x1d"),
            ("keyboard to linux", LINUX_CHECK.1),
            (LINUX_CHECK.0, "poweroff -f\r"),
        ],
    };

    let b = Board::listener("net.addr=10.0.0.2/24", stream_link(&socket, true))?;
    let mut a = Board::new(build::hypervisor_image(), image, name);
    a.bootargs = "log=info net.addr=10.0.0.1/24".into();
    a.extra_args = stream_link(&socket, false);
    a.cpus = b.cpus;
    a.memory_mib = b.memory_mib;
    let (a_run, b_run) = std::thread::scope(|scope| {
        let b_run = scope.spawn(|| b.run_scripted(TIMEOUT, &b_script));
        let a_run = a.run_scripted(TIMEOUT, &a_script);
        (a_run, b_run.join())
    });
    let _ = std::fs::remove_file(&socket);
    let a_run = a_run?;
    let b_run = b_run.map_err(|_| "board B's run panicked".to_string())??;
    let tail = |serial: &str| -> String {
        let lines: Vec<&str> = serial.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    let report = parse_move_report(&a_run.serial, name).ok_or_else(|| {
        format!(
            "{}: board A did not report a move; its log ends:\n{}",
            case.name,
            tail(&a_run.serial)
        )
    })?;
    let checked = match case.guest {
        Guest::Pattern => b_run.serial.matches("round").count() >= 2,
        Guest::Linux => b_run.serial.contains(LINUX_CHECK.0),
    };
    if !checked || b_run.timed_out {
        return Err(format!(
            "{}: the guest did not run on after the move; board B's log ends:\n{}",
            case.name,
            tail(&b_run.serial)
        ));
    }
    Ok(report)
}

/// Moves `case`'s guest between two QEMU processes with QEMU's own live migration.
fn qemu_move(case: Case) -> Result<QemuMigration, String> {
    let mut args: Vec<String> = [
        "-M",
        "virt,gic-version=3",
        "-cpu",
        CPU,
        "-smp",
        &VCPUS.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let (script, check): (Vec<(&str, &str)>, (&str, &str)) = match case.guest {
        Guest::Pattern => {
            let pace = if case.working {
                PATTERN_WORKING
            } else {
                PATTERN_IDLE
            };
            args.extend([
                "-m".into(),
                format!("{PATTERN_MIB}M"),
                "-kernel".into(),
                build::guest_image("pattern").display().to_string(),
                "-append".into(),
                format!("{PATTERN_FOREVER} {pace}"),
            ]);
            let script = if case.working {
                vec![("round 3 ok", "")]
            } else {
                vec![("round 0 ok", ""), ("round 0 ok", "")]
            };
            (script, ("round", ""))
        }
        Guest::Linux => {
            args.extend([
                "-m".into(),
                format!("{}M", linux_guest::MEMORY >> 20),
                "-kernel".into(),
                linux_guest::kernel_image().display().to_string(),
                "-initrd".into(),
                linux_guest::initramfs_image().display().to_string(),
                "-append".into(),
                linux_guest::BOOTARGS.into(),
            ]);
            let script = if case.working {
                vec![
                    (linux_guest::INIT_MARKER, ""),
                    (linux_guest::PROMPT, LINUX_WORKLOAD),
                    ("dirtied 1", ""),
                ]
            } else {
                vec![(linux_guest::INIT_MARKER, ""), (linux_guest::PROMPT, "")]
            };
            (script, LINUX_CHECK)
        }
    };
    live_migrate(&args, &script, check, TIMEOUT).map_err(|why| format!("{}: {why}", case.name))
}

/// Bytes per non-zero page, or `-`.
fn per_page(bytes: u64, pages: u64) -> String {
    bytes
        .checked_div(pages)
        .map_or("-".into(), |per_page| per_page.to_string())
}

fn table(rows: &[Row]) -> String {
    let mut cells = vec![
        [
            "migration",
            "total ms",
            "downtime ms",
            "rounds",
            "stream KiB",
            "B/non-zero page",
            "QEMU total ms",
            "QEMU downtime ms",
            "QEMU syncs",
            "QEMU KiB",
            "QEMU B/non-zero page",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for row in rows {
        let (ours, qemu) = (&row.ours, &row.qemu);
        cells.push(vec![
            row.case.name.into(),
            ours.total_ms.to_string(),
            ours.paused_ms.to_string(),
            ours.rounds.to_string(),
            (ours.bytes >> 10).to_string(),
            per_page(ours.bytes, ours.nonzero_pages),
            qemu.total_ms.to_string(),
            qemu.downtime_ms.to_string(),
            qemu.dirty_syncs.to_string(),
            (qemu.transferred_bytes >> 10).to_string(),
            per_page(qemu.transferred_bytes, qemu.normal_pages),
        ]);
    }
    let mut text = render_table(&cells, &[0]);
    text.push_str(
        "(host time, not icount: figures vary from run to run; bytes are the migration stream, \
         without TCP/IP framing)\n",
    );
    text
}

fn to_json(qemu_version: &str, rows: &[Row]) -> String {
    let mut text = format!(
        "{{\n  \"qemu\": {},\n  \"results\": [",
        json_string(qemu_version)
    );
    for (index, row) in rows.iter().enumerate() {
        let (ours, qemu) = (&row.ours, &row.qemu);
        text.push_str(if index == 0 { "\n" } else { ",\n" });
        text.push_str(&format!(
            "    {{ \"case\": {}, \"hypervisor\": {{ \"total_ms\": {}, \"downtime_ms\": {}, \
             \"rounds\": {}, \"bytes\": {}, \"nonzero_pages\": {}, \"pages\": {} }}, \
             \"qemu\": {{ \"total_ms\": {}, \"downtime_ms\": {}, \"dirty_syncs\": {}, \
             \"bytes\": {}, \"normal_pages\": {}, \"zero_pages\": {} }} }}",
            json_string(row.case.name),
            ours.total_ms,
            ours.paused_ms,
            ours.rounds,
            ours.bytes,
            ours.nonzero_pages,
            ours.pages,
            qemu.total_ms,
            qemu.downtime_ms,
            qemu.dirty_syncs,
            qemu.transferred_bytes,
            qemu.normal_pages,
            qemu.zero_pages
        ));
    }
    text.push_str("\n  ]\n}\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_senders_report_is_parsed() {
        let serial = "el2> el2  INFO: linux: migrated to 10.0.0.2:7070: 2 rounds, 21318 KiB in \
                      3998 ms, 12408 of 65623 pages non-zero, paused 54 ms\n";
        assert_eq!(
            parse_move_report(serial, "linux"),
            Some(MoveReport {
                rounds: 2,
                bytes: 21318 << 10,
                total_ms: 3998,
                nonzero_pages: 12408,
                pages: 65623,
                paused_ms: 54,
            })
        );
        assert_eq!(parse_move_report(serial, "web"), None);
        assert_eq!(
            parse_move_report("linux: migrated to 10.0.0.2:7070: 2 rounds\n", "linux"),
            None
        );
    }
}
