//! `cargo xtask bench`: figures under `-icount shift=0,sleep=off`, with the hypervisor and on the
//! bare board.
//!
//! Under icount with `shift=0` every executed instruction advances virtual time by 1 ns and the
//! `virt` counter runs at 1 GHz, so one counter tick is one instruction whatever exception level ran
//! it, and a run repeats exactly. Each figure is taken twice: with the hypervisor (the guest as a
//! bundle, `virtualization=on`) and with no hypervisor (the same guest at EL1 directly on the board,
//! `virtualization=off`, given to QEMU as its `-kernel`).
//!
//! - Micro-benchmarks: the `bench` test guest (2 vCPUs) prints `BENCH <name> <ticks per operation>`
//!   for each figure, then `BENCH done`, and powers off.
//! - Linux boot to /init: the Debian Linux guest (1 vCPU); the figure is the kernel's own printk
//!   timestamp of `Run /init as init process`, i.e. the time since the kernel's clock started.
//!
//! The table goes to stdout and the figures to `target/bench.json`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::build::{self, workspace_root};
use crate::bundle::{BundleSpec, write_bundle_file};
use crate::linux_guest;
use crate::qemu::{self, CPU};

/// The icount setting every benchmark run uses.
pub const ICOUNT: &str = "shift=0,sleep=off";
/// Longest a micro-benchmark run may take (wall time).
pub const MICRO_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest a Linux boot may take to reach its shell prompt (wall time).
pub const LINUX_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a run may take to end after it has given its figures before QEMU is killed.
const GRACE: Duration = Duration::from_secs(15);

/// The bench guest's name (image `target/images/bench.img`, instance name, log prefix).
pub const BENCH_GUEST: &str = "bench";
/// The bench guest's RAM under the hypervisor.
pub const BENCH_MEMORY: u64 = 64 << 20;
/// The bench guest's vCPUs.
pub const BENCH_VCPUS: u32 = 2;
/// The line that ends the bench guest's figures.
pub const BENCH_DONE: &str = "BENCH done";
/// The Linux line whose printk timestamp is the boot figure.
pub const LINUX_INIT_LINE: &str = "Run /init as init process";
/// What ends the Linux run once its shell prompt is up.
const LINUX_POWEROFF: &str = "poweroff -f\r";

/// The micro-benchmarks the bench guest must report, with their aims (hypervisor figure, in
/// instructions per operation).
pub const MICRO: [(&str, Option<u64>); 4] = [
    ("null_hypercall", Some(120)),
    ("mmio_read", Some(200)),
    ("timer_latency", Some(800)),
    ("sgi_latency", None),
];
/// The aim for Linux boot to /init: at most this many hundredths of a percent over bare.
pub const LINUX_AIM_HUNDREDTHS_PERCENT: u64 = 50;

/// What a figure's aim is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aim {
    /// No aim set.
    None,
    /// The hypervisor figure below this many units.
    Below(u64),
    /// The hypervisor figure at most this many hundredths of a percent above bare.
    OverheadHundredthsPercent(u64),
}

impl Aim {
    /// The aim as text, e.g. `< 120` or `<= 0.5%`.
    pub fn text(self) -> Option<String> {
        match self {
            Aim::None => None,
            Aim::Below(limit) => Some(format!("< {limit}")),
            Aim::OverheadHundredthsPercent(h) => Some(format!("<= {}% over bare", hundredths(h))),
        }
    }

    /// Whether `hypervisor` against `bare` meets the aim (None if there is no aim).
    pub fn met(self, hypervisor: u64, bare: u64) -> Option<bool> {
        match self {
            Aim::None => None,
            Aim::Below(limit) => Some(hypervisor < limit),
            Aim::OverheadHundredthsPercent(h) => {
                Some(u128::from(hypervisor) * 10_000 <= u128::from(bare) * u128::from(10_000 + h))
            }
        }
    }
}

/// One figure, both ways.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Figure {
    /// What is measured.
    pub name: String,
    /// Its unit (`instructions`, `us`).
    pub unit: &'static str,
    /// The figure with the hypervisor.
    pub hypervisor: u64,
    /// The figure on the bare board.
    pub bare: u64,
    /// What the hypervisor figure should be.
    pub aim: Aim,
}

impl Figure {
    /// `hypervisor - bare` with its sign.
    pub fn difference(&self) -> i128 {
        i128::from(self.hypervisor) - i128::from(self.bare)
    }

    /// The overhead as text: the difference, and for figures other than instruction counts (whose
    /// bare-board figure is a handful of instructions) also the percentage.
    pub fn overhead_text(&self) -> String {
        let difference = self.difference();
        let sign = if difference < 0 { "-" } else { "+" };
        let mut text = format!("{sign}{}", difference.unsigned_abs());
        if self.unit != "instructions" && self.bare != 0 {
            // Percent with two decimals, rounded half away from zero.
            let basis = difference * 10_000 * 2 / i128::from(self.bare);
            let rounded = (basis + basis.signum()) / 2;
            text.push_str(&format!(
                " ({sign}{}%)",
                hundredths(rounded.unsigned_abs() as u64)
            ));
        }
        text
    }
}

/// `1234` → `12.34`.
fn hundredths(value: u64) -> String {
    format!("{}.{:02}", value / 100, value % 100)
}

/// Which parts to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The micro-benchmarks.
    pub micro: bool,
    /// Linux boot to /init.
    pub linux: bool,
}

/// `cargo xtask bench`: runs the selected parts, prints the table and writes the JSON.
pub fn bench(selection: Selection) -> Result<(), String> {
    let version = qemu::check_qemu()?;
    build::build_all()?;
    let mut figures = Vec::new();
    if selection.micro {
        figures.extend(micro()?);
    }
    if selection.linux {
        figures.push(linux()?);
    }
    let version = version
        .strip_prefix("QEMU emulator version ")
        .unwrap_or(&version)
        .to_string();
    print!("{}", table(&figures));
    let json = json_path();
    std::fs::write(&json, to_json(&version, &figures))
        .map_err(|error| format!("cannot write {}: {error}", json.display()))?;
    eprintln!("xtask: bench: wrote {} (QEMU {version})", json.display());
    Ok(())
}

/// The QEMU arguments common to every benchmark run.
fn qemu_command(virtualization: bool, cpus: u32, memory: &str) -> Command {
    let mut command = Command::new("qemu-system-aarch64");
    command
        .arg("-M")
        .arg(format!(
            "virt,virtualization={},gic-version=3",
            if virtualization { "on" } else { "off" }
        ))
        .args(["-cpu", CPU])
        .args(["-smp", &cpus.to_string()])
        .args(["-m", memory])
        .args(["-icount", ICOUNT])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"]);
    command
}

/// The hypervisor running `bundle` on a board with `cpus` CPUs and `memory` RAM.
fn hypervisor_command(bundle: &Path, cpus: u32, memory: &str) -> Command {
    let mut command = qemu_command(true, cpus, memory);
    command
        .arg("-kernel")
        .arg(build::hypervisor_image())
        .arg("-initrd")
        .arg(bundle)
        .args(["-append", "log=warn"]);
    command
}

fn require(path: &Path, how: &str) -> Result<(), String> {
    if path.exists() {
        Ok(())
    } else {
        Err(format!("{} is missing: {how}", path.display()))
    }
}

/// The micro-benchmarks, both ways.
fn micro() -> Result<Vec<Figure>, String> {
    let image = build::guest_image(BENCH_GUEST);
    require(
        &image,
        "`cargo xtask build` did not build the bench guest (tests/guests/src/bin/bench.rs)",
    )?;
    let bundle = build::images_dir().join(format!("{BENCH_GUEST}-{BENCH_VCPUS}cpu.fit"));
    write_bundle_file(
        &BundleSpec {
            kernel: image.clone(),
            initrd: None,
            name: BENCH_GUEST.into(),
            memory: BENCH_MEMORY,
            vcpus: BENCH_VCPUS,
            bootargs: "console=ttyAMA0".into(),
        },
        &bundle,
    )?;
    let hypervisor = hypervisor_command(&bundle, 2, "512M");
    let mut bare = qemu_command(false, 2, "512M");
    bare.arg("-kernel").arg(&image);
    eprintln!("xtask: bench: micro-benchmarks, with the hypervisor and on the bare board");
    let (on_hypervisor, on_bare) = both(
        || micro_run("with the hypervisor", hypervisor),
        || micro_run("on the bare board", bare),
    );
    let (on_hypervisor, on_bare) = (on_hypervisor?, on_bare?);
    let mut figures: Vec<Figure> = MICRO
        .iter()
        .map(|&(name, aim)| Figure {
            name: name.into(),
            unit: "instructions",
            hypervisor: lookup(&on_hypervisor, name).expect("checked by micro_run"),
            bare: lookup(&on_bare, name).expect("checked by micro_run"),
            aim: aim.map_or(Aim::None, Aim::Below),
        })
        .collect();
    // Figures the guest reports beyond the known ones, if both runs have them.
    for (name, value) in &on_hypervisor {
        if MICRO.iter().all(|&(known, _)| known != name)
            && let Some(bare) = lookup(&on_bare, name)
        {
            figures.push(Figure {
                name: name.clone(),
                unit: "instructions",
                hypervisor: *value,
                bare,
                aim: Aim::None,
            });
        }
    }
    Ok(figures)
}

fn lookup(figures: &[(String, u64)], name: &str) -> Option<u64> {
    figures
        .iter()
        .find(|(known, _)| known == name)
        .map(|&(_, value)| value)
}

/// Runs the two closures on two threads (each QEMU runs on one host thread under icount).
fn both<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|scope| {
        let a = scope.spawn(a);
        let b = b();
        (a.join().expect("benchmark thread"), b)
    })
}

/// One run of the bench guest: its `BENCH` figures in the order printed.
fn micro_run(how: &str, command: Command) -> Result<Vec<(String, u64)>, String> {
    let run = Session::run(command, MICRO_TIMEOUT, |serial| {
        if serial.lines().any(is_bench_done) {
            Step::Finish
        } else {
            Step::Wait
        }
    })?;
    let fail = |what: String| Err(run.failure(&format!("bench guest {how}: {what}")));
    if !run.finished {
        return fail(format!(
            "no `{BENCH_DONE}` line within {}s",
            MICRO_TIMEOUT.as_secs()
        ));
    }
    let figures = match parse_bench_lines(&run.serial) {
        Ok(figures) => figures,
        Err(error) => return fail(error),
    };
    if let Some(missing) = MICRO
        .iter()
        .find(|&&(name, _)| lookup(&figures, name).is_none())
    {
        return fail(format!("no `BENCH {} <ticks>` line", missing.0));
    }
    if !run.exited {
        eprintln!(
            "xtask: bench: warning: the bench guest {how} did not power the board off within {}s \
             of `{BENCH_DONE}`",
            GRACE.as_secs()
        );
    }
    eprintln!(
        "xtask: bench: bench guest {how}: {} figures ({:.1}s wall)",
        figures.len(),
        run.elapsed.as_secs_f64()
    );
    Ok(figures)
}

/// A serial line without the hypervisor's `[bench] ` prefix.
fn guest_line(line: &str) -> &str {
    let line = line.trim_end();
    line.strip_prefix(&format!("[{BENCH_GUEST}] ") as &str)
        .unwrap_or(line)
}

fn is_bench_done(line: &str) -> bool {
    guest_line(line) == BENCH_DONE
}

/// Every `BENCH <name> <integer>` line of `serial` (with or without the `[bench] ` prefix).
pub fn parse_bench_lines(serial: &str) -> Result<Vec<(String, u64)>, String> {
    let mut figures: Vec<(String, u64)> = Vec::new();
    for line in serial.lines().map(guest_line) {
        let Some(rest) = line.strip_prefix("BENCH ") else {
            continue;
        };
        if rest == "done" {
            break;
        }
        let mut words = rest.split_ascii_whitespace();
        let (Some(name), Some(value), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("malformed line {line:?}"));
        };
        let value: u64 = value
            .parse()
            .map_err(|_| format!("malformed figure in {line:?}"))?;
        if figures.iter().any(|(known, _)| known == name) {
            return Err(format!("`BENCH {name}` twice"));
        }
        figures.push((name.into(), value));
    }
    Ok(figures)
}

/// Linux boot to /init, both ways.
fn linux() -> Result<Figure, String> {
    let bundle = linux_guest::linux_bundle(1)?;
    let (kernel, initramfs) = (linux_guest::kernel_image(), linux_guest::initramfs_image());
    require(&kernel, "run `cargo xtask linux-guest`")?;
    require(&initramfs, "run `cargo xtask linux-guest`")?;
    let hypervisor = hypervisor_command(&bundle, 1, "1G");
    // The bare board gets the RAM the instance has under the hypervisor, not the board's 1 GiB:
    // the kernel's boot time grows with its memory (struct pages, buddy allocator), by about 3.6%
    // of the figure from 256 MiB to 1 GiB, far more than the overhead being measured.
    let mut bare = qemu_command(false, 1, &format!("{}M", linux_guest::MEMORY >> 20));
    bare.arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initramfs)
        .args(["-append", linux_guest::BOOTARGS]);
    eprintln!("xtask: bench: Linux boot to /init, with the hypervisor and on the bare board");
    let (on_hypervisor, on_bare) = both(
        || linux_run("with the hypervisor", hypervisor),
        || linux_run("on the bare board", bare),
    );
    Ok(Figure {
        name: "linux_boot_to_init".into(),
        unit: "us",
        hypervisor: on_hypervisor?,
        bare: on_bare?,
        aim: Aim::OverheadHundredthsPercent(LINUX_AIM_HUNDREDTHS_PERCENT),
    })
}

/// One Linux boot: the printk timestamp of `Run /init as init process` in microseconds.
fn linux_run(how: &str, command: Command) -> Result<u64, String> {
    let mut sent = false;
    let run = Session::run(command, LINUX_TIMEOUT, |serial| {
        if sent {
            return Step::Wait;
        }
        match serial.find(LINUX_INIT_LINE) {
            Some(at) if serial[at..].contains(linux_guest::PROMPT) => {
                sent = true;
                Step::Send(LINUX_POWEROFF.as_bytes().to_vec())
            }
            _ => Step::Wait,
        }
    })?;
    let fail = |what: String| Err(run.failure(&format!("Linux {how}: {what}")));
    if !run.finished {
        return fail(format!(
            "no `{LINUX_INIT_LINE}` line followed by the prompt {:?} within {}s",
            linux_guest::PROMPT,
            LINUX_TIMEOUT.as_secs()
        ));
    }
    let Some(line) = run
        .serial
        .lines()
        .find(|line| line.contains(LINUX_INIT_LINE))
    else {
        return fail(format!("no `{LINUX_INIT_LINE}` line"));
    };
    let Some(us) = printk_microseconds(line) else {
        return fail(format!("no printk timestamp in {line:?}"));
    };
    eprintln!(
        "xtask: bench: Linux {how}: /init at {us} us ({}, {:.1}s wall)",
        if run.exited {
            "powered off"
        } else {
            "killed: `poweroff -f` did not end it"
        },
        run.elapsed.as_secs_f64()
    );
    Ok(us)
}

/// The `[ seconds.micros]` printk timestamp of a kernel log line (after any `[name] ` prefix), in
/// microseconds.
pub fn printk_microseconds(line: &str) -> Option<u64> {
    let at = line.find(LINUX_INIT_LINE).unwrap_or(line.len());
    let head = &line[..at];
    let open = head.rfind('[')?;
    let close = open + head[open..].find(']')?;
    let (seconds, micros) = head[open + 1..close].trim().split_once('.')?;
    if micros.len() != 6 || !micros.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: u64 = seconds.parse().ok()?;
    seconds
        .checked_mul(1_000_000)?
        .checked_add(micros.parse().ok()?)
}

/// What a run's watcher wants after new output.
enum Step {
    /// Keep running.
    Wait,
    /// Write these bytes to QEMU's stdin (the guest's console), then keep running until QEMU exits;
    /// the run has what it needs.
    Send(Vec<u8>),
    /// The run has what it needs: let QEMU exit by itself within the grace period.
    Finish,
}

/// A finished QEMU run.
struct Session {
    /// QEMU's stdout (the serial console), `\r` removed.
    serial: String,
    /// QEMU's stderr.
    stderr: String,
    /// The watcher said the run has what it needs.
    finished: bool,
    /// QEMU exited by itself (not killed).
    exited: bool,
    /// QEMU's exit status, if it exited by itself.
    status: Option<std::process::ExitStatus>,
    /// Wall time of the run.
    elapsed: Duration,
    /// The command line.
    command: String,
}

impl Session {
    /// Runs `command`, calling `watch` with the whole serial output after each chunk, until QEMU
    /// exits, `timeout` passes, or the watcher finished and [`GRACE`] passed.
    fn run(
        mut command: Command,
        timeout: Duration,
        mut watch: impl FnMut(&str) -> Step,
    ) -> Result<Session, String> {
        let line = format!("{command:?}");
        let started = Instant::now();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot start qemu-system-aarch64: {error}"))?;
        let mut stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let errors = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        });
        let (chunks, output) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            loop {
                match stdout.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if chunks.send(buffer[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut bytes = Vec::new();
        // The serial output so far for the watcher (`\r` removed, a character split between two
        // chunks may be replaced; the returned log is decoded once from all bytes).
        let mut text = String::new();
        let mut finished = false;
        let mut deadline = started + timeout;
        let eof = loop {
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            match output.recv_timeout(deadline - now) {
                Ok(chunk) => {
                    bytes.extend_from_slice(&chunk);
                    if !finished {
                        text.extend(
                            String::from_utf8_lossy(&chunk)
                                .chars()
                                .filter(|&c| c != '\r'),
                        );
                    }
                }
                Err(RecvTimeoutError::Timeout) => break false,
                Err(RecvTimeoutError::Disconnected) => break true,
            }
            if finished {
                continue;
            }
            match watch(&text) {
                Step::Wait => {}
                Step::Finish => {
                    finished = true;
                    deadline = deadline.min(Instant::now() + GRACE);
                }
                Step::Send(input) => {
                    finished = true;
                    deadline = deadline.min(Instant::now() + GRACE);
                    if let Some(pipe) = stdin.as_mut() {
                        let _ = pipe.write_all(&input).and_then(|()| pipe.flush());
                    }
                }
            }
        };
        drop(stdin);
        let status = if eof { wait_briefly(&mut child)? } else { None };
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = reader.join();
        // The reader may have sent chunks that the loop has not taken yet.
        while let Ok(chunk) = output.try_recv() {
            bytes.extend_from_slice(&chunk);
        }
        let serial = String::from_utf8_lossy(&bytes).replace('\r', "");
        Ok(Session {
            serial,
            stderr: errors.join().unwrap_or_default(),
            finished,
            exited: status.is_some(),
            status,
            elapsed: started.elapsed(),
            command: line,
        })
    }

    /// An error message with the whole serial log and QEMU's stderr.
    fn failure(&self, what: &str) -> String {
        let ended = match self.status {
            Some(status) => format!("QEMU exited with {status}"),
            None => "QEMU was killed".into(),
        };
        format!(
            "{what} ({ended} after {:.1}s)\ncommand: {}\n----- serial log -----\n{}\n----- QEMU \
             stderr -----\n{}\n-----",
            self.elapsed.as_secs_f64(),
            self.command,
            self.serial,
            self.stderr
        )
    }
}

/// After QEMU closed its stdout: its exit status if it exits within a few seconds.
fn wait_briefly(child: &mut Child) -> Result<Option<std::process::ExitStatus>, String> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|error| format!("waiting for QEMU: {error}"))?
        {
            return Ok(Some(status));
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The table printed on stdout.
pub fn table(figures: &[Figure]) -> String {
    let mut rows = vec![[
        "benchmark".to_string(),
        "hypervisor".into(),
        "bare board".into(),
        "overhead".into(),
        "aim".into(),
    ]];
    for figure in figures {
        let unit = match figure.unit {
            "instructions" => "",
            unit => unit,
        };
        let with_unit = |value: u64| {
            if unit.is_empty() {
                value.to_string()
            } else {
                format!("{value} {unit}")
            }
        };
        let aim = match (
            figure.aim.text(),
            figure.aim.met(figure.hypervisor, figure.bare),
        ) {
            (Some(text), Some(true)) => format!("{text}: met"),
            (Some(text), Some(false)) => format!("{text}: MISSED"),
            _ => "-".into(),
        };
        rows.push([
            figure.name.clone(),
            with_unit(figure.hypervisor),
            with_unit(figure.bare),
            figure.overhead_text(),
            aim,
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for (index, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(column, (cell, width))| {
                // Names and aims left-aligned, figures right-aligned.
                if column == 0 || column == 4 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        text.push_str(cells.join(" | ").trim_end());
        text.push('\n');
        if index == 0 {
            let rule: Vec<String> = widths.iter().map(|&width| "-".repeat(width)).collect();
            text.push_str(&rule.join("-|-"));
            text.push('\n');
        }
    }
    text.push_str(
        "(micro-benchmarks in instructions per operation; under icount one counter tick is one \
         instruction)\n",
    );
    text
}

/// `target/bench.json`.
pub fn to_json(qemu_version: &str, figures: &[Figure]) -> String {
    let mut text = format!(
        "{{\n  \"qemu\": {},\n  \"cpu\": {},\n  \"icount\": {},\n  \"results\": [",
        json_string(qemu_version),
        json_string(CPU),
        json_string(ICOUNT)
    );
    for (index, figure) in figures.iter().enumerate() {
        text.push_str(if index == 0 { "\n" } else { ",\n" });
        text.push_str(&format!(
            "    {{ \"name\": {}, \"unit\": {}, \"hypervisor\": {}, \"bare\": {}, \"aim\": {} }}",
            json_string(&figure.name),
            json_string(figure.unit),
            figure.hypervisor,
            figure.bare,
            figure
                .aim
                .text()
                .as_deref()
                .map_or("null".into(), json_string)
        ));
    }
    text.push_str(if figures.is_empty() {
        "]\n}\n"
    } else {
        "\n  ]\n}\n"
    });
    text
}

/// A JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Where the JSON goes.
pub fn json_path() -> PathBuf {
    workspace_root().join("target").join("bench.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_lines_with_and_without_prefix() {
        let serial = "el2: warn something\n[bench] hello\n[bench] BENCH null_hypercall 97\n\
                      BENCH mmio_read 150\n[bench] BENCH done\nBENCH late 1\n";
        assert_eq!(
            parse_bench_lines(serial),
            Ok(vec![
                ("null_hypercall".into(), 97),
                ("mmio_read".into(), 150)
            ])
        );
        assert!(is_bench_done("[bench] BENCH done"));
        assert!(is_bench_done("BENCH done  "));
        assert!(!is_bench_done("[bench] BENCH done soon"));
        assert!(parse_bench_lines("BENCH x 1.5\n").is_err());
        assert!(parse_bench_lines("BENCH x\n").is_err());
        assert!(parse_bench_lines("BENCH x 1\nBENCH x 2\n").is_err());
    }

    #[test]
    fn printk_timestamps() {
        assert_eq!(
            printk_microseconds("[linux] [    0.882834] Run /init as init process"),
            Some(882_834)
        );
        assert_eq!(
            printk_microseconds("[   12.000001] Run /init as init process"),
            Some(12_000_001)
        );
        assert_eq!(printk_microseconds("Run /init as init process"), None);
        assert_eq!(
            printk_microseconds("[linux] Run /init as init process"),
            None
        );
    }

    #[test]
    fn aims_and_overheads() {
        let boot = Figure {
            name: "linux_boot_to_init".into(),
            unit: "us",
            hypervisor: 882_834,
            bare: 826_906,
            aim: Aim::OverheadHundredthsPercent(50),
        };
        assert_eq!(boot.overhead_text(), "+55928 (+6.76%)");
        assert_eq!(boot.aim.met(boot.hypervisor, boot.bare), Some(false));
        assert_eq!(boot.aim.met(1_005, 1_000), Some(true));
        assert_eq!(boot.aim.met(1_006, 1_000), Some(false));
        assert_eq!(Aim::Below(120).met(119, 5), Some(true));
        assert_eq!(Aim::Below(120).met(120, 5), Some(false));
        assert_eq!(Aim::None.met(1, 1), None);
        let faster = Figure {
            hypervisor: 990,
            bare: 1_000,
            ..boot.clone()
        };
        assert_eq!(faster.overhead_text(), "-10 (-1.00%)");
    }

    fn shell(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn micro_run_needs_every_figure() {
        let figures = micro_run(
            "fake",
            shell(
                "echo '[bench] BENCH null_hypercall 97'; echo 'BENCH mmio_read 150'; \
                 echo 'BENCH timer_latency 700'; echo 'BENCH sgi_latency 900'; echo 'BENCH done'",
            ),
        )
        .unwrap();
        assert_eq!(figures.len(), 4);
        assert_eq!(lookup(&figures, "sgi_latency"), Some(900));

        let error = micro_run(
            "fake",
            shell("echo 'BENCH null_hypercall 97'; echo 'BENCH done'"),
        )
        .unwrap_err();
        assert!(
            error.contains("no `BENCH mmio_read <ticks>` line"),
            "{error}"
        );
        assert!(
            error.contains("----- serial log -----\nBENCH null_hypercall 97\n"),
            "{error}"
        );

        let error = micro_run("fake", shell("echo 'BENCH null_hypercall 97'; exit 1")).unwrap_err();
        assert!(error.contains("no `BENCH done` line"), "{error}");
    }

    #[test]
    fn linux_run_answers_the_prompt() {
        // A fake board: the /init line, the prompt, then it powers off once it reads the command.
        let us = linux_run(
            "fake",
            shell(
                "echo '[linux] [    0.882834] Run /init as init process'; printf 'guest# '; \
                 head -c 12 >/dev/null; echo off",
            ),
        )
        .unwrap();
        assert_eq!(us, 882_834);
        let error = linux_run(
            "fake",
            shell("echo '[    1.000000] Run /init as init process'"),
        )
        .unwrap_err();
        assert!(error.contains("followed by the prompt"), "{error}");
    }

    #[test]
    fn json_is_well_formed() {
        let figures = vec![Figure {
            name: "null_hypercall".into(),
            unit: "instructions",
            hypervisor: 100,
            bare: 3,
            aim: Aim::Below(120),
        }];
        let json = to_json("10.0.2 (\"x\")", &figures);
        assert!(json.contains(r#""qemu": "10.0.2 (\"x\")""#), "{json}");
        assert!(json.contains(
            r#"{ "name": "null_hypercall", "unit": "instructions", "hypervisor": 100, "bare": 3, "aim": "< 120" }"#
        ));
        assert!(to_json("q", &[]).ends_with("\"results\": []\n}\n"));
    }
}
