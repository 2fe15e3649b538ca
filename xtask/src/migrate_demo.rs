//! `cargo xtask migrate-demo`: two QEMU virt boards joined by a board link (a Unix socket
//! carrying their Ethernet frames). Board A boots Debian's Linux and, once its shell is up,
//! moves it to board B while it runs; this terminal is B's console throughout, so the instance
//! arrives in front of you and you type into it there.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::build::{self, workspace_root};
use crate::linux_guest;
use crate::qemu::{self, Board, stream_link};

/// The moving instance's vCPUs.
const VCPUS: u32 = 2;
/// Board A's and board B's addresses on their link.
const ADDRESS_A: &str = "10.0.0.1/24";
const ADDRESS_B: &str = "10.0.0.2";
/// Longest board A may take to boot Linux and move it.
const A_TIMEOUT: Duration = Duration::from_secs(600);

/// `target/migrate-demo-<what>`.
fn target_file(what: &str) -> PathBuf {
    workspace_root()
        .join("target")
        .join(format!("migrate-demo-{what}"))
}

/// Runs the demo; returns once board B powers off (or QEMU is interrupted).
pub fn migrate_demo() -> Result<(), String> {
    qemu::check_qemu()?;
    build::build_all()?;
    let bundle = linux_guest::linux_bundle(VCPUS)?;
    let socket = target_file("link.sock");
    let (a_log, b_log) = (target_file("a.log"), target_file("b.log"));
    let _ = std::fs::remove_file(&socket);

    // B: no instance of its own, listening; its console is this terminal.
    let mut b = Board::listener(
        &format!("net.addr={ADDRESS_B}/24"),
        stream_link(&socket, true),
    )?;
    b.serial_log = Some(b_log.clone());

    // A: Linux, moved to B as soon as its shell is up, then A powers off.
    let mut a = Board::new(build::hypervisor_image(), bundle, "linux");
    a.bootargs = format!("log=info net.addr={ADDRESS_A}");
    a.cpus = b.cpus;
    a.memory_mib = b.memory_mib;
    a.extra_args = stream_link(&socket, false);

    eprintln!(
        "xtask: board B's console is this terminal (log: {}).\n\
         xtask: board A (log: {}) boots Linux ({VCPUS} vCPUs) and moves it to B once its shell is\n\
         xtask: up, with `migrate linux {ADDRESS_B}` on A's shell. When B says `linux: received\n\
         xtask: and started`, Ctrl-] types into Linux (try `cat /proc/uptime`: it did not restart),\n\
         xtask: Ctrl-\\ returns to B's shell (`migrate-status`, `list`); `poweroff` there ends the demo.",
        b_log.display(),
        a_log.display()
    );
    let mut b_qemu = b
        .command()
        .spawn()
        .map_err(|error| format!("cannot start QEMU for board B: {error}"))?;
    let migrate = format!("migrate linux {ADDRESS_B}\r");
    let stop_a = AtomicBool::new(false);
    let b_status = std::thread::scope(|scope| {
        let a_run = scope.spawn(|| {
            let run = a.run_scripted_until(
                A_TIMEOUT,
                &[
                    (linux_guest::INIT_MARKER, migrate.as_str()),
                    ("linux: migrated to", "poweroff\r"),
                ],
                &stop_a,
            );
            report_board_a(run, &a_log);
        });
        let status = b_qemu.wait();
        stop_a.store(true, Ordering::Relaxed);
        let _ = a_run.join();
        status
    });
    let _ = std::fs::remove_file(&socket);
    let status = b_status.map_err(|error| format!("waiting for board B: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "board B's QEMU exited with {status} (serial log: {})",
            b_log.display()
        ))
    }
}

/// Writes board A's serial log to `log` and says on this terminal how the move went.
fn report_board_a(run: Result<qemu::Run, String>, log: &Path) {
    let run = match run {
        Ok(run) => run,
        Err(why) => return eprintln!("\r\nxtask: board A: {why}\r"),
    };
    if let Err(error) = std::fs::write(log, &run.serial) {
        eprintln!("\r\nxtask: cannot write {}: {error}\r", log.display());
    }
    let moved = run.serial.lines().find_map(|line| {
        ["linux: migrated to", "linux: migration to"]
            .iter()
            .find_map(|what| line.find(what).map(|at| &line[at..]))
    });
    match moved {
        Some(line) => eprintln!("\r\nxtask: board A: {line}\r"),
        None => eprintln!(
            "\r\nxtask: board A ended without moving Linux (serial log: {})\r",
            log.display()
        ),
    }
}
