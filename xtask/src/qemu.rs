//! Starting a QEMU `virt` board with the hypervisor, and collecting its serial log with a timeout.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The CPU model every run uses: `max` without SVE, SME and pointer authentication, which the
/// hypervisor does not yet switch per guest.
pub const CPU: &str = "max,sve=off,sme=off,pauth=off";

/// The QEMU version the project is tested with; older ones lack what the scenarios rely on.
pub const MIN_QEMU_MAJOR: u32 = 10;

/// A QEMU virt board running the hypervisor with one guest image.
#[derive(Clone, Debug)]
pub struct Board {
    /// Host CPUs.
    pub cpus: u32,
    /// Board RAM in MiB.
    pub memory_mib: u32,
    /// GIC version, 2 or 3.
    pub gic_version: u32,
    /// The hypervisor image.
    pub hypervisor: PathBuf,
    /// The guest image, passed as the initrd.
    pub guest: PathBuf,
    /// The hypervisor's command line.
    pub bootargs: String,
    /// More QEMU arguments (e.g. [`ICOUNT`]).
    pub extra_args: Vec<String>,
}

/// QEMU options for deterministic time: one counter tick per instruction, idle time skipped.
pub const ICOUNT: [&str; 2] = ["-icount", "shift=0,sleep=off"];

impl Board {
    /// A one-CPU GICv3 board running `guest` named `name` with 64 MiB of RAM.
    pub fn new(hypervisor: PathBuf, guest: PathBuf, name: &str) -> Self {
        Self {
            cpus: 1,
            memory_mib: 512,
            gic_version: 3,
            hypervisor,
            guest,
            bootargs: format!("log=info guest.name={name} guest.mem=64M"),
            extra_args: Vec::new(),
        }
    }

    /// The QEMU command line, serial on stdio.
    pub fn command(&self) -> Command {
        let mut command = Command::new("qemu-system-aarch64");
        command
            .arg("-M")
            .arg(format!(
                "virt,virtualization=on,gic-version={}",
                self.gic_version
            ))
            .args(["-cpu", CPU])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-m", &format!("{}M", self.memory_mib)])
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            .arg("-kernel")
            .arg(&self.hypervisor)
            .arg("-initrd")
            .arg(&self.guest)
            .args(["-append", &self.bootargs])
            .args(&self.extra_args);
        command
    }

    /// Runs the board until QEMU exits or `timeout` passes, and returns the serial log.
    pub fn run(&self, timeout: Duration) -> Result<Run, String> {
        self.run_scripted(timeout, &[])
    }

    /// Runs the board like [`Board::run`], typing on its console as `script` says: for each
    /// `(expect, input)`, once `expect` has appeared in the serial output after what the previous
    /// step matched, `input` is typed.
    pub fn run_scripted(&self, timeout: Duration, script: &[(&str, &str)]) -> Result<Run, String> {
        let mut child = self
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot start qemu-system-aarch64: {error}"))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (chunks, received) = mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(count @ 1..) = stdout.read(&mut buffer) {
                if chunks.send(buffer[..count].to_vec()).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + timeout;
        let (mut serial, mut searched, mut steps) = (Vec::new(), 0, script.iter());
        let mut step = steps.next();
        let timed_out = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match received.recv_timeout(left) {
                Ok(chunk) => serial.extend_from_slice(&chunk),
                Err(mpsc::RecvTimeoutError::Disconnected) => break false,
                Err(mpsc::RecvTimeoutError::Timeout) => break true,
            }
            while let Some((expect, input)) = step {
                let Some(at) = find(&serial[searched..], expect.as_bytes()) else {
                    break;
                };
                searched += at + expect.len();
                // A console is typed into, not pasted into: a short pause lets the guest's
                // line discipline keep up, as a person's typing would.
                std::thread::sleep(Duration::from_millis(200));
                stdin
                    .write_all(input.as_bytes())
                    .and_then(|()| stdin.flush())
                    .map_err(|error| format!("typing on the console: {error}"))?;
                step = steps.next();
            }
        };
        if timed_out {
            let _ = child.kill();
        }
        let status = child
            .wait()
            .map_err(|error| format!("waiting for QEMU: {error}"))?;
        let serial = String::from_utf8_lossy(&serial).replace('\r', "");
        let mut errors = String::new();
        let _ = stderr.read_to_string(&mut errors);
        Ok(Run {
            serial,
            stderr: errors,
            timed_out,
            success: status.success(),
        })
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// What a board run printed and how it ended.
#[derive(Clone, Debug)]
pub struct Run {
    /// Everything the board wrote to its serial port.
    pub serial: String,
    /// QEMU's own error output.
    pub stderr: String,
    /// The run was killed at its timeout.
    pub timed_out: bool,
    /// QEMU exited with status 0.
    pub success: bool,
}

/// Checks that `qemu-system-aarch64` exists and is new enough; says how to get it if not.
pub fn check_qemu() -> Result<String, String> {
    const HOW: &str = "install QEMU 10 for arm (Debian bookworm: `bash .ci/install-deps`, which adds the \
                       bookworm-backports suite and installs qemu-system-arm from it)";
    let output = Command::new("qemu-system-aarch64")
        .arg("--version")
        .output()
        .map_err(|_| format!("qemu-system-aarch64 not found: {HOW}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.lines().next().unwrap_or_default().to_string();
    let major = version
        .split("version ")
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .and_then(|major| major.parse::<u32>().ok());
    match major {
        Some(major) if major >= MIN_QEMU_MAJOR => Ok(version),
        _ => Err(format!(
            "{version}: QEMU {MIN_QEMU_MAJOR} or newer is needed: {HOW}"
        )),
    }
}
