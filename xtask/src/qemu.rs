//! Starting a QEMU `virt` board with the hypervisor, and collecting its serial log with a timeout.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The CPU model every run uses: `max` without SVE, SME and pointer authentication, which the
/// hypervisor does not yet switch per guest.
pub const CPU: &str = "max,sve=off,sme=off,pauth=off";

/// How often a scripted run looks at its stop flag while no output comes.
const STOP_POLL: Duration = Duration::from_millis(200);

/// The QEMU version the project is tested with; older ones lack what the scenarios rely on.
pub const MIN_QEMU_MAJOR: u32 = 10;

/// CPUs of QEMU's `raspi4b`.
pub const RASPI4B_CPUS: u32 = 4;
/// RAM of QEMU's `raspi4b`, in MiB.
pub const RASPI4B_MIB: u32 = 2048;

/// Which QEMU machine a [`Board`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Machine {
    /// `virt` with EL2 (`virtualization=on`), the CPU count, RAM and GIC version of the board.
    Virt,
    /// `raspi4b`: a Raspberry Pi 4 (4 Cortex-A72, 2 GiB, GIC-400) booted with the device tree at
    /// `dtb` (`linux_guest::rpi4_dtb`); the board's CPU count, RAM and GIC are fixed. It powers
    /// off by a watchdog reset, which `-no-reboot` turns into QEMU's exit.
    Raspi4b {
        /// The Raspberry Pi 4 device tree.
        dtb: PathBuf,
    },
}

/// A QEMU board running the hypervisor with one guest image.
#[derive(Clone, Debug)]
pub struct Board {
    /// The machine.
    pub machine: Machine,
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
    /// A file that QEMU also writes the serial output to (overwritten), besides stdio.
    pub serial_log: Option<PathBuf>,
}

/// The address QEMU user networking forwards to the host's checkpoint receiver: where a
/// board's `save` sends (the hypervisor's `SAVE_DESTINATION`).
pub const SAVE_FORWARD: &str = "10.0.2.100:7071";
/// How soon the save forward connects to the host's receiver again after a save.
const SAVE_RECONNECT_MS: u32 = 100;
/// The port a board accepts instances on (`listen`, `restore`).
pub const BOARD_PORT: u16 = 7070;

/// The virtio-net device that carries the board link, on the netdev named `link`.
fn link_device(netdev: String) -> Vec<String> {
    [
        "-netdev",
        &netdev,
        "-device",
        "virtio-net-device,netdev=link",
        "-global",
        "virtio-mmio.force-legacy=false",
    ]
    .map(String::from)
    .to_vec()
}

/// QEMU options for a board link under user networking (the board at 10.0.2.15): its saves reach
/// the host's port `save_port`, and the host reaches its listening port at `board_port`.
pub fn user_link(save_port: Option<u16>, board_port: Option<u16>) -> Vec<String> {
    let mut netdev = String::from("user,id=link");
    if let Some(port) = save_port {
        // The forward is a chardev that connects once, at QEMU's start: after each save the
        // receiver closes it, and it must connect again for the next (`,,` escapes the comma).
        netdev += &format!(
            ",guestfwd=tcp:{SAVE_FORWARD}-tcp:127.0.0.1:{port},,reconnect-ms={SAVE_RECONNECT_MS}"
        );
    }
    if let Some(port) = board_port {
        netdev += &format!(",hostfwd=tcp:127.0.0.1:{port}-10.0.2.15:{BOARD_PORT}");
    }
    link_device(netdev)
}

/// QEMU options for a board-to-board link: Ethernet frames over the Unix socket at `socket`,
/// which this board creates (`server`) or connects to (retrying until the other side is up).
pub fn stream_link(socket: &Path, server: bool) -> Vec<String> {
    let role = if server {
        "server=on".to_string()
    } else {
        "server=off,reconnect-ms=100".to_string()
    };
    link_device(format!(
        "stream,id=link,{role},addr.type=unix,addr.path={}",
        socket.display()
    ))
}

/// QEMU options for deterministic time: one counter tick per instruction, idle time skipped.
pub const ICOUNT: [&str; 2] = ["-icount", "shift=0,sleep=off"];

impl Board {
    /// A one-CPU GICv3 board running `guest` named `name` with 64 MiB of RAM.
    pub fn new(hypervisor: PathBuf, guest: PathBuf, name: &str) -> Self {
        Self {
            machine: Machine::Virt,
            cpus: 1,
            memory_mib: 512,
            gic_version: 3,
            hypervisor,
            guest,
            bootargs: format!("log=info guest.name={name} guest.mem=64M"),
            extra_args: Vec::new(),
            serial_log: None,
        }
    }

    /// A board with no instance of its own that waits for instances on its board `link`
    /// (`net.listen`, and `bootargs` such as `net.addr=`): 2 CPUs, 1 GiB. Its boot module is an
    /// empty file, `target/images/empty.img`.
    pub fn listener(bootargs: &str, link: Vec<String>) -> Result<Self, String> {
        let empty = crate::build::images_dir().join("empty.img");
        std::fs::write(&empty, b"")
            .map_err(|error| format!("cannot write {}: {error}", empty.display()))?;
        let mut board = Self::new(crate::build::hypervisor_image(), empty, "listener");
        board.bootargs = format!("log=info net.listen {bootargs}").trim_end().into();
        board.cpus = 2;
        board.memory_mib = 1024;
        board.extra_args = link;
        Ok(board)
    }

    /// The QEMU command line, serial on stdio (and logged to [`Board::serial_log`] if set).
    pub fn command(&self) -> Command {
        let mut command = Command::new("qemu-system-aarch64");
        match &self.machine {
            Machine::Virt => command
                .arg("-M")
                .arg(format!(
                    "virt,virtualization=on,gic-version={}",
                    self.gic_version
                ))
                .args(["-cpu", CPU])
                .args(["-smp", &self.cpus.to_string()])
                .args(["-m", &format!("{}M", self.memory_mib)]),
            Machine::Raspi4b { dtb } => command
                .args(["-M", "raspi4b", "-no-reboot", "-dtb"])
                .arg(dtb),
        };
        command.args(["-display", "none", "-monitor", "none"]);
        match &self.serial_log {
            None => command.args(["-serial", "stdio"]),
            Some(log) => command
                .arg("-chardev")
                .arg(serial_chardev(log))
                .args(["-serial", "chardev:con0"]),
        };
        command
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
        self.run_scripted_until(timeout, script, &AtomicBool::new(false))
    }

    /// [`Board::run_scripted`] that also ends (killing QEMU, as at the timeout) once `stop` is
    /// set, for a board run beside another that may end first.
    pub fn run_scripted_until(
        &self,
        timeout: Duration,
        script: &[(&str, &str)],
        stop: &AtomicBool,
    ) -> Result<Run, String> {
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
            if left.is_zero() || stop.load(Ordering::Relaxed) {
                break true;
            }
            match received.recv_timeout(left.min(STOP_POLL)) {
                Ok(chunk) => serial.extend_from_slice(&chunk),
                Err(mpsc::RecvTimeoutError::Disconnected) => break false,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
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

/// The `-chardev` option for a console on stdio that is also written to `log`: QEMU option values
/// escape a comma by doubling it.
fn serial_chardev(log: &Path) -> OsString {
    let mut option = OsString::from("stdio,id=con0,signal=on,logappend=off,logfile=");
    match log.to_str() {
        Some(text) => option.push(text.replace(',', ",,")),
        None => option.push(log),
    }
    option
}

/// Where `needle` first occurs in `haystack` (at once if it is empty).
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
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
    /// The run was killed at its timeout (or when its stop flag was set).
    pub timed_out: bool,
    /// QEMU exited with status 0.
    pub success: bool,
}

/// What the hypervisor prints when it refuses to run: `el2 ERROR: <name>: cannot start: <why>` for a
/// guest, `el2 ERROR: cannot boot: <why>` for the board.
const REFUSALS: [&str; 2] = ["cannot start:", "cannot boot:"];
/// How the hypervisor's panic message starts.
const PANIC: &str = "el2 PANIC:";

/// The first line of `serial` in which the hypervisor refuses a guest or the board, or panics,
/// without escape sequences. Only the hypervisor's own lines (`el2 ...`) count: a guest's console
/// lines reach the serial port prefixed with `[name] `.
pub fn hypervisor_refusal(serial: &str) -> Option<String> {
    serial
        .lines()
        .map(|line| strip_escapes(line).trim().to_string())
        .find(|line| {
            line.starts_with(PANIC)
                || line.starts_with("el2 ") && REFUSALS.iter().any(|refusal| line.contains(refusal))
        })
}

/// `text` without terminal escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ESC \`,
/// two-byte `ESC x`) and without other control characters but tabs.
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    // Parameters and intermediates, then one final byte in '@'..='~'.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Board memory the hypervisor keeps for itself (image, heap, tables), about, in MiB.
pub const HYPERVISOR_MIB: u64 = 64;

/// Where QEMU loads the initrd (the guest image) on `virt`: `min(RAM / 2, 128 MiB)` into RAM, page
/// aligned. The device tree follows it at the next 2 MiB boundary and needs up to 1 MiB.
fn initrd_fits(memory_mib: u64, image_size: u64) -> bool {
    let memory = memory_mib << 20;
    let start = (memory / 2).min(128 << 20).next_multiple_of(4096);
    let dtb = (start + image_size).next_multiple_of(2 << 20);
    dtb + (1 << 20) <= memory
}

/// The least board memory in MiB from which on QEMU can load an initrd of `image_size` bytes.
fn min_memory_for_initrd(image_size: u64) -> u64 {
    // Past 256 MiB the initrd's place is fixed at 128 MiB, so fitting only gets easier.
    let mut memory = 256 + image_size.div_ceil(1 << 20) + 4;
    while memory > 1 && initrd_fits(memory - 1, image_size) {
        memory -= 1;
    }
    memory
}

/// Checks that a board with `memory_mib` MiB of RAM can hold the hypervisor and a guest of
/// `guest_memory` bytes whose image, given to QEMU as the initrd, has `image_size` bytes.
pub fn check_board_memory(
    memory_mib: u32,
    guest_memory: u64,
    image_size: u64,
) -> Result<(), String> {
    let memory_mib = u64::from(memory_mib);
    if !initrd_fits(memory_mib, image_size) {
        return Err(format!(
            "--mem {memory_mib}: QEMU cannot load the {} MiB guest image into it (it puts the \
             image at min(RAM/2, 128 MiB) and the device tree after it): use --mem {} or more",
            image_size.div_ceil(1 << 20),
            min_memory_for_initrd(image_size)
        ));
    }
    let guest_mib = guest_memory.div_ceil(1 << 20);
    if memory_mib < guest_mib + HYPERVISOR_MIB {
        return Err(format!(
            "--mem {memory_mib} is too small: the guest has {guest_mib} MiB and the hypervisor \
             keeps about {HYPERVISOR_MIB} MiB for itself, so the board needs at least {} MiB",
            guest_mib + HYPERVISOR_MIB
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_found_in_the_hypervisor_lines() {
        let serial = "el2  INFO: hypervisor starting at EL2 on QEMU virt (2 CPUs)\n\
                      [linux] cannot start: a guest's own words do not count\n\
                      \x1b[31mel2 ERROR: linux: cannot start: no 0x10000000 bytes of board memory left \
                      for guest RAM\x1b[0m\r\n\
                      el2  INFO: all instances stopped: powering off\n";
        assert_eq!(
            hypervisor_refusal(serial).as_deref(),
            Some(
                "el2 ERROR: linux: cannot start: no 0x10000000 bytes of board memory left for \
                 guest RAM"
            )
        );
        assert_eq!(
            hypervisor_refusal("el2 ERROR: cannot boot: only GICv3 boards\n").as_deref(),
            Some("el2 ERROR: cannot boot: only GICv3 boards")
        );
        assert_eq!(
            hypervisor_refusal("el2 PANIC: panicked at el2/src/main.rs:95:13\n").as_deref(),
            Some("el2 PANIC: panicked at el2/src/main.rs:95:13")
        );
        assert_eq!(
            hypervisor_refusal("[guest] el2 ERROR: x: cannot start: y\n"),
            None
        );
        assert_eq!(
            hypervisor_refusal("el2  INFO: guest: stopped: system off\n"),
            None
        );
        assert_eq!(hypervisor_refusal(""), None);
    }

    #[test]
    fn escapes_are_stripped() {
        assert_eq!(strip_escapes("\x1b[1;31mred\x1b[0m plain"), "red plain");
        assert_eq!(strip_escapes("\x1b]0;title\x07after"), "after");
        assert_eq!(strip_escapes("\x1b]0;title\x1b\\after"), "after");
        assert_eq!(strip_escapes("a\x1bcb\r\x08\tc"), "ab\tc");
        assert_eq!(strip_escapes("unterminated \x1b["), "unterminated ");
    }

    #[test]
    fn initrd_placement_matches_qemu() {
        // Measured with QEMU 10.0 `virt`: the largest initrd that loads, and one byte more; the least
        // RAM that loads one.
        const MIB: u64 = 1 << 20;
        assert!(initrd_fits(128, 62 * MIB));
        assert!(!initrd_fits(128, 62 * MIB + 1));
        assert!(initrd_fits(129, 63 * MIB + 1));
        assert!(!initrd_fits(129, 64 * MIB));
        assert!(initrd_fits(256, 126 * MIB));
        assert!(!initrd_fits(256, 127 * MIB));
        assert!(initrd_fits(300, 170 * MIB));
        assert!(!initrd_fits(300, 171 * MIB));
        assert_eq!(min_memory_for_initrd(62 * MIB), 127);
        assert_eq!(min_memory_for_initrd(171 * MIB), 301);
        for size in [0, MIB, 30 * MIB, 100 * MIB, 500 * MIB] {
            let least = min_memory_for_initrd(size);
            assert!(!initrd_fits(least - 1, size), "{size}");
            assert!(
                (least..least + 600).all(|memory| initrd_fits(memory, size)),
                "{size}"
            );
        }
    }

    #[test]
    fn board_memory() {
        const MIB: u64 = 1 << 20;
        assert_eq!(check_board_memory(1024, 256 * MIB, 30 * MIB), Ok(()));
        assert_eq!(check_board_memory(128, 64 * MIB, MIB), Ok(()));
        let error = check_board_memory(256, 256 * MIB, 30 * MIB).unwrap_err();
        assert!(error.contains("needs at least 320 MiB"), "{error}");
        let error = check_board_memory(128, 64 * MIB, 100 * MIB).unwrap_err();
        assert!(
            error.contains("QEMU cannot load the 100 MiB guest image"),
            "{error}"
        );
    }

    #[test]
    fn serial_log_option() {
        let mut board = Board::new("el2.img".into(), "guest.fit".into(), "guest");
        let args = |board: &Board| {
            board
                .command()
                .get_args()
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(args(&board).contains("-serial stdio"));
        board.serial_log = Some("/tmp/a,b/serial.log".into());
        let line = args(&board);
        assert!(
            line.contains(
                "-chardev stdio,id=con0,signal=on,logappend=off,logfile=/tmp/a,,b/serial.log \
                 -serial chardev:con0"
            ),
            "{line}"
        );
        assert!(!line.contains("-serial stdio"), "{line}");
    }
}
