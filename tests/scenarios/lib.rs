//! Helpers for the QEMU scenarios in `tests/`: boot a board, then assert on its serial log,
//! printing the whole log when an assertion fails.

use std::path::PathBuf;
use std::time::Duration;

use xtask::build;
use xtask::bundle::{
    BoardPart, BundleSpec, InstanceSpec, write_board_bundle_file, write_bundle_file,
};
use xtask::linux_guest;
use xtask::qemu::ICOUNT;
use xtask::qemu::{Board, Machine, RASPI4B_CPUS, RASPI4B_MIB, Run};

/// Longest a scenario may run before it is killed and fails.
pub const TIMEOUT: Duration = Duration::from_secs(90);

/// A board with the built hypervisor running the test guest `guest`.
pub fn board_with_guest(guest: &str) -> Board {
    let hypervisor = build::hypervisor_image();
    let image = build::guest_image(guest);
    for path in [&hypervisor, &image] {
        assert!(
            path.exists(),
            "{} is missing: run the scenarios with `cargo xtask test`",
            path.display()
        );
    }
    board_on_scenario_gic(Board::new(hypervisor, image, guest))
}

/// `board` with the GIC version [`board_gic`] says.
fn board_on_scenario_gic(mut board: Board) -> Board {
    board.gic_version = board_gic();
    board
}

/// `board` under `-icount shift=0,sleep=off`: one counter tick per instruction, idle time
/// skipped, so timing checks hold however loaded the host is.
pub fn with_icount(mut board: Board) -> Board {
    board.extra_args.extend(ICOUNT.map(String::from));
    board
}

/// The GIC version of the QEMU virt boards the scenarios boot: `SCENARIO_GIC` (2 or 3), 3 if
/// unset. `cargo xtask test` runs the scenarios on GICv3, then again (but for the Raspberry
/// Pi's) with `SCENARIO_GIC=2`: the hypervisor then drives a GICv2 and its guests see one.
pub fn board_gic() -> u32 {
    match std::env::var("SCENARIO_GIC").as_deref() {
        Err(_) | Ok("3") => 3,
        Ok("2") => 2,
        Ok(other) => panic!("SCENARIO_GIC={other}: the GIC version is 2 or 3"),
    }
}

/// `board` as a Raspberry Pi 4: QEMU `raspi4b` with Debian's Pi 4 device tree (4 CPUs, 2 GiB,
/// GIC-400), under `-icount shift=4,sleep=off` when `icount` (its counter runs at 62.5 MHz:
/// one tick per 16 instructions).
pub fn on_raspi4b(mut board: Board, icount: bool) -> Board {
    let dtb = linux_guest::rpi4_dtb_path();
    assert!(
        dtb.exists(),
        "{} is missing: run the scenarios with `cargo xtask test`",
        dtb.display()
    );
    board.machine = Machine::Raspi4b { dtb };
    board.cpus = RASPI4B_CPUS;
    board.memory_mib = RASPI4B_MIB;
    if icount {
        board
            .extra_args
            .extend(["-icount", "shift=4,sleep=off"].map(String::from));
    }
    board
}

/// A board with no instance of its own that waits for instances on its board `link`
/// (`Board::listener`), with the GIC version [`board_gic`] says: a move needs the same version
/// on both boards.
pub fn listening_board(bootargs: &str, link: Vec<String>) -> Board {
    board_on_scenario_gic(Board::listener(bootargs, link).expect("the listening board"))
}

/// A board whose guest image is the file at `image`.
pub fn board_with_image(image: PathBuf, name: &str) -> Board {
    board_on_scenario_gic(Board::new(build::hypervisor_image(), image, name))
}

/// A board with `cpus` host CPUs running the test guest `guest` with `vcpus` vCPUs: the guest image
/// is packed into a guest bundle (64 MiB) in the temporary directory, whose path is returned too
/// (delete it when done).
pub fn board_with_bundle(guest: &str, vcpus: u32, cpus: u32) -> (Board, PathBuf) {
    let image = build::guest_image(guest);
    assert!(
        image.exists(),
        "{} is missing: run the scenarios with `cargo xtask test`",
        image.display()
    );
    let bundle = std::env::temp_dir().join(format!(
        "{guest}-{vcpus}vcpu-{}-{:?}.fit",
        std::process::id(),
        std::thread::current().id()
    ));
    write_bundle_file(
        &BundleSpec {
            kernel: image,
            initrd: None,
            name: guest.into(),
            memory: 64 << 20,
            vcpus,
            bootargs: String::new(),
        },
        &bundle,
    )
    .unwrap_or_else(|error| panic!("bundle for {guest}: {error}"));
    let mut board = board_with_image(bundle.clone(), guest);
    board.cpus = cpus;
    (board, bundle)
}

/// An instance for [`board_with_instances`]: `image` (a test guest's, or a kernel) with `vcpus`
/// vCPUs and `memory_mib` of RAM, started at boot if `start`.
pub fn instance(
    name: &str,
    image: PathBuf,
    initrd: Option<PathBuf>,
    memory_mib: u64,
    vcpus: u32,
    start: bool,
) -> InstanceSpec {
    InstanceSpec {
        spec: BundleSpec {
            kernel: image,
            initrd,
            name: name.into(),
            memory: memory_mib << 20,
            vcpus,
            bootargs: xtask::linux_guest::BOOTARGS.into(),
        },
        start_at_boot: start,
        cpus: None,
        weight: devicetree::fit::DEFAULT_WEIGHT,
    }
}

/// A board with `cpus` host CPUs whose boot module is a board bundle of `instances`, written to
/// the temporary directory as `<stem>-<pid>.fit` (returned too: delete it when done).
pub fn board_with_instances(stem: &str, instances: &[InstanceSpec], cpus: u32) -> (Board, PathBuf) {
    let bundle = std::env::temp_dir().join(format!("{stem}-{}.fit", std::process::id()));
    let parts: Vec<BoardPart> = instances.iter().cloned().map(BoardPart::Instance).collect();
    write_board_bundle_file(&parts, &bundle)
        .unwrap_or_else(|error| panic!("board bundle {stem}: {error}"));
    let mut board = board_with_image(bundle.clone(), stem);
    board.bootargs = "log=info".into();
    board.cpus = cpus;
    board.memory_mib = 1024;
    (board, bundle)
}

/// A finished board run with assertions that show the serial log when they fail.
pub struct Log {
    run: Run,
    name: String,
    /// Logs of other boards of the same scenario, shown too when an assertion fails.
    peers: Vec<(String, String)>,
}

impl Log {
    /// Boots `board` and waits for it to power off (or time out).
    pub fn boot(name: &str, board: &Board) -> Self {
        let run = board
            .run(TIMEOUT)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        Self {
            run,
            name: name.into(),
            peers: Vec::new(),
        }
    }

    /// Boots `board` and types `script` on its console (see `Board::run_scripted`).
    pub fn boot_scripted(name: &str, board: &Board, script: &[(&str, &str)]) -> Self {
        Self::boot_scripted_within(name, board, script, TIMEOUT)
    }

    /// [`Log::boot_scripted`] for scenarios that need longer than [`TIMEOUT`].
    pub fn boot_scripted_within(
        name: &str,
        board: &Board,
        script: &[(&str, &str)],
        timeout: Duration,
    ) -> Self {
        let run = board
            .run_scripted(timeout, script)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        Self {
            run,
            name: name.into(),
            peers: Vec::new(),
        }
    }

    /// The number of lines containing `text`.
    pub fn count(&self, text: &str) -> usize {
        self.run
            .serial
            .lines()
            .filter(|line| line.contains(text))
            .count()
    }

    /// How many exits for `reason` (a row of the exit histogram, e.g. `sysreg_fast`) the
    /// hypervisor logged for `instance` when it stopped; 0 for a reason that did not occur.
    pub fn exits(&self, instance: &str, reason: &str) -> u64 {
        let Some(histogram) = xtask::bench::parse_exit_histogram(self.serial(), instance) else {
            self.fail(&format!("no exit histogram for {instance}"));
        };
        histogram
            .into_iter()
            .find_map(|(row, count)| (row == reason).then_some(count))
            .unwrap_or(0)
    }

    /// Fails the scenario with `what` (and the log) unless `ok`.
    pub fn check(&self, ok: bool, what: &str) -> &Self {
        if !ok {
            self.fail(what);
        }
        self
    }

    /// The serial log.
    pub fn serial(&self) -> &str {
        &self.run.serial
    }

    /// Shows `peer`'s serial log too when an assertion on this one fails (boards that work
    /// together: the cause may be on the other).
    pub fn with_peer(mut self, peer: &Log) -> Self {
        self.peers
            .push((peer.name.clone(), peer.run.serial.clone()));
        self
    }

    fn fail(&self, what: &str) -> ! {
        let peers: String = self
            .peers
            .iter()
            .map(|(name, serial)| format!("----- {name}'s serial log -----\n{serial}\n"))
            .collect();
        panic!(
            "scenario {}: {what}\n----- serial log -----\n{}\n----- QEMU stderr -----\n{}\n{peers}-----",
            self.name, self.run.serial, self.run.stderr
        );
    }

    /// The board powered itself off (QEMU exited 0) before the timeout.
    pub fn powered_off(&self) -> &Self {
        if self.run.timed_out {
            self.fail(&format!("timed out after {TIMEOUT:?}"));
        }
        if !self.run.success {
            self.fail("QEMU exited with an error");
        }
        self
    }

    /// Some line contains `text`.
    pub fn has(&self, text: &str) -> &Self {
        if !self.run.serial.lines().any(|line| line.contains(text)) {
            self.fail(&format!("no line contains {text:?}"));
        }
        self
    }

    /// No line contains `text`.
    pub fn lacks(&self, text: &str) -> &Self {
        if let Some(line) = self.run.serial.lines().find(|line| line.contains(text)) {
            self.fail(&format!("unexpected line {line:?}"));
        }
        self
    }

    /// The lines containing `first` and then `second` appear in that order.
    pub fn in_order(&self, first: &str, second: &str) -> &Self {
        let position = |text: &str| self.run.serial.lines().position(|line| line.contains(text));
        match (position(first), position(second)) {
            (Some(a), Some(b)) if a < b => self,
            _ => self.fail(&format!("expected {first:?} before {second:?}")),
        }
    }
}
