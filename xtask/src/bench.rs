//! `cargo xtask bench`: figures under `-icount shift=0,sleep=off`, with the hypervisor and on the
//! bare board.
//!
//! Under icount with `shift=0` every executed instruction advances virtual time by 1 ns and the
//! `virt` counter runs at 1 GHz, so one counter tick is one instruction whatever exception level ran
//! it, and a run repeats exactly. Each figure is taken twice: with the hypervisor (the guest as a
//! bundle, `virtualization=on`) and with no hypervisor (the same guest at EL1 directly on the board,
//! `virtualization=off`, given to QEMU as its `-kernel`), except those of instances sharing a CPU,
//! which mean nothing on the bare board.
//!
//! - Micro-benchmarks: the `bench` test guest (2 vCPUs) prints `BENCH <name> <ticks per operation>`
//!   for each figure, then `BENCH done`, and powers off.
//! - Sharing a CPU (with the hypervisor only: the bare-board column is `-`), on boards with one
//!   CPU and two instances of one vCPU each, run with the micro-benchmarks:
//!   - `vcpu_switch`: the instructions from the last one of a vCPU whose slice ends to the first
//!     one of the next vCPU, of another instance (timer interrupt, exit, scheduler, saving the
//!     one and loading the other). Two copies of the bench guest with `bench.switches=N` and
//!     `sched.slice_ms=1` both spin reading the counter; a gap of more than 100 µs between two
//!     reads is one time switched out. Each reports its mean gap (from its last read before the
//!     switch to its first after it) and its mean run between gaps (first read to last), over
//!     [`SWITCH_GAPS`] gaps after the first few. One instance's gap is a switch away, the other
//!     instance's run and a switch back, so a switch is `(gap - other's run) / 2`: the figure is
//!     `(gap_a + gap_b - run_a - run_b) / 4`. It holds about one iteration of the guests' loop
//!     (11 instructions) besides the hypervisor's part, and it does not depend on the slice (1 and
//!     4 ms give the same figure to an instruction). Subtracting the measured run rather than the
//!     slice matters: the slice is counted from the scheduler's pick, so `(gap - slice) / 2`
//!     would leave out half the loading of the incoming vCPU (1548 instead of 2130).
//!   - `null_hypercall_busy_neighbour`, `timer_latency_busy_neighbour`: the bench guest with
//!     `bench.neighbour=1` (it waits until it has been switched out once, so the neighbour runs)
//!     beside the CPU-bound `spin` guest (`spin.seconds=1`, still spinning when the bench guest
//!     is done), at the default slice. Compared with the same figures of the bench guest alone
//!     on the same kind of board: the overhead column is then the difference from alone. Both
//!     runs make [`BUSY_CALLS`] null hypercalls instead of 1000, so that they span slices: the
//!     calls are timed in batches of 10 and the batches in which the vCPU was switched out are
//!     left out (module docs of the bench guest), so the figure is the cost of the call itself
//!     with the neighbour switching in and out. The timer latency includes switching the busy
//!     vCPU out when the timer wakes the bench vCPU (the scheduler lets a vCPU woken after a
//!     sleep preempt at once).
//! - Linux boot to /init: the Debian Linux guest with each of Debian's two arm64 kernel flavours
//!   (`cloud-arm64`, the test guest's, and the generic `arm64`, of the same version), with 1 and
//!   with 4 vCPUs on a board with as many CPUs; the figure is the kernel's own printk timestamp
//!   of `Run /init as init process`, i.e. the time since the kernel's clock started. Each row is
//!   run twice, both ways, and the table's `second run` column says how the second run differed
//!   (the aim is `same`); the exit histogram of each first run under the hypervisor is printed.
//!
//! Every run gets `-seed` [`SEED`]: with the host's entropy behind RNDR and the device tree's
//! seeds, Linux boots did not repeat (the same image under the hypervisor reached /init 1.2 and
//! 3.6 ms apart with 4 vCPUs).
//!
//! The table goes to stdout and the figures to `target/bench.json`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use devicetree::fit::DEFAULT_WEIGHT;

use crate::build::{self, workspace_root};
use crate::bundle::{
    BoardPart, BundleSpec, InstanceSpec, write_board_bundle_file, write_bundle_file,
};
use crate::linux_guest::{self, Flavour};
use crate::qemu::{self, CPU};

/// The icount setting every benchmark run uses.
pub const ICOUNT: &str = "shift=0,sleep=off";
/// The seed of QEMU's random numbers in every benchmark run: the guest's RNDR and the
/// `kaslr-seed`/`rng-seed` QEMU puts in a bare board's device tree come from the host's
/// entropy otherwise, and Linux, which seeds its hash tables, address-space layout and stack
/// offsets from them, then takes a different path on each boot (4 vCPUs: thousands of µs).
pub const SEED: &str = "1";
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
/// The board console key that gives the keyboard to the (first) instance: under the hypervisor
/// it starts with the management shell.
const NEXT_INSTANCE: &str = "\x1d";

/// The micro-benchmarks the bench guest must report, with their aims (hypervisor figure, in
/// instructions per operation).
pub const MICRO: [(&str, Option<u64>); 6] = [
    ("null_hypercall", Some(80)),
    ("mmio_read", Some(150)),
    ("mmio_write", None),
    ("console_64_bytes", Some(16_000)),
    ("timer_latency", Some(400)),
    ("sgi_latency", Some(600)),
];
/// The instances of the vCPU switch run: two copies of the bench guest.
pub const SWITCH_INSTANCES: [&str; 2] = ["switch-a", "switch-b"];
/// Gaps (times switched out) each of them measures.
pub const SWITCH_GAPS: u64 = 50;
/// The scheduler's slice in the vCPU switch run, in milliseconds.
pub const SWITCH_SLICE_MS: u64 = 1;
/// The busy neighbour: the `spin` test guest.
pub const NEIGHBOUR: &str = "spin";
/// How long the neighbour spins (guest time, seconds): far longer than the bench guest needs.
pub const NEIGHBOUR_SECONDS: u64 = 1;
/// Null hypercalls (and MMIO reads) the bench guest makes beside the busy neighbour and alone:
/// at about 320 instructions each, longer than a 4 ms slice.
pub const BUSY_CALLS: u64 = 20_000;
/// The bench guest's figures also taken beside the busy neighbour.
pub const BESIDE_BUSY: [&str; 2] = ["null_hypercall", "timer_latency"];
/// What the figures taken beside the busy neighbour add to their names.
pub const BUSY_SUFFIX: &str = "_busy_neighbour";
/// The line of the spin guest that says it has stopped spinning.
const NEIGHBOUR_END: &str = "spin: total";
/// The line the bench guest prints once it has been switched out for the neighbour.
const NEIGHBOUR_RUNS: &str = "the neighbour runs";

/// The vCPU counts of the Linux rows (the board has as many CPUs).
pub const LINUX_VCPUS: [u32; 2] = [1, 4];
/// The aim for Linux boot to /init: at most this many hundredths of a percent over bare.
pub const LINUX_AIM_HUNDREDTHS_PERCENT: u64 = 50;

/// What a figure's aim is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aim {
    /// No aim set.
    None,
    /// The hypervisor figure at most this many units.
    AtMost(u64),
    /// The hypervisor figure at most this many hundredths of a percent above bare.
    OverheadHundredthsPercent(u64),
}

impl Aim {
    /// The aim as text, e.g. `<= 80` or `<= 0.5%`.
    pub fn text(self) -> Option<String> {
        match self {
            Aim::None => None,
            Aim::AtMost(limit) => Some(format!("<= {limit}")),
            Aim::OverheadHundredthsPercent(h) => Some(format!("<= {}% over bare", hundredths(h))),
        }
    }

    /// Whether `hypervisor` against `bare` meets the aim (None if there is no aim, or it is an
    /// overhead and there is no bare-board figure).
    pub fn met(self, hypervisor: u64, bare: Option<u64>) -> Option<bool> {
        match self {
            Aim::None => None,
            Aim::AtMost(limit) => Some(hypervisor <= limit),
            Aim::OverheadHundredthsPercent(h) => {
                Some(u128::from(hypervisor) * 10_000 <= u128::from(bare?) * u128::from(10_000 + h))
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
    /// The figure on the bare board, if it means anything there.
    pub bare: Option<u64>,
    /// For a figure taken beside a busy instance: the same figure with the instance alone on
    /// its CPU.
    pub alone: Option<u64>,
    /// What the hypervisor figure should be.
    pub aim: Aim,
    /// The same figure from a second run, for figures that are run twice to show that they
    /// repeat: with the hypervisor and on the bare board.
    pub again: Option<(u64, Option<u64>)>,
}

impl Figure {
    /// A figure with the hypervisor and on the bare board.
    pub fn both_ways(name: &str, unit: &'static str, hypervisor: u64, bare: u64, aim: Aim) -> Self {
        Figure {
            name: name.into(),
            unit,
            hypervisor,
            bare: Some(bare),
            alone: None,
            aim,
            again: None,
        }
    }

    /// A figure with the hypervisor only (in instructions, with no aim), compared with `alone`
    /// if given.
    pub fn hypervisor_only(name: &str, hypervisor: u64, alone: Option<u64>) -> Self {
        Figure {
            name: name.into(),
            unit: "instructions",
            hypervisor,
            bare: None,
            alone,
            aim: Aim::None,
            again: None,
        }
    }

    /// What the hypervisor figure is compared with: the bare board, else alone.
    fn baseline(&self) -> Option<u64> {
        self.bare.or(self.alone)
    }

    /// `hypervisor - bare` (or `- alone` for a figure beside a busy instance) with its sign.
    pub fn difference(&self) -> Option<i128> {
        Some(i128::from(self.hypervisor) - i128::from(self.baseline()?))
    }

    /// The overhead as text: the difference, and for figures other than instruction counts (whose
    /// bare-board figure is a handful of instructions) also the percentage; for a figure beside a
    /// busy instance, the difference from alone; `-` for one with nothing to compare with.
    pub fn overhead_text(&self) -> String {
        let (Some(difference), Some(baseline)) = (self.difference(), self.baseline()) else {
            return "-".into();
        };
        let sign = if difference < 0 { "-" } else { "+" };
        let mut text = format!("{sign}{}", difference.unsigned_abs());
        if self.unit != "instructions" && baseline != 0 {
            // Percent with two decimals, rounded half away from zero.
            let basis = difference * 10_000 * 2 / i128::from(baseline);
            let rounded = (basis + basis.signum()) / 2;
            text.push_str(&format!(
                " ({sign}{}%)",
                hundredths(rounded.unsigned_abs() as u64)
            ));
        }
        if self.bare.is_none() {
            text.push_str(&format!(" over alone ({baseline})"));
        }
        text
    }

    /// How the second run differed from the first (`same`, or the differences), `-` for a
    /// figure taken once.
    pub fn repeat_text(&self) -> String {
        let Some((hypervisor, bare)) = self.again else {
            return "-".into();
        };
        let change = |first: u64, second: u64| match i128::from(second) - i128::from(first) {
            0 => "same".to_string(),
            difference if self.unit == "instructions" => format!("{difference:+}"),
            difference => format!("{difference:+} {}", self.unit),
        };
        let changes = [
            Some(("hypervisor", change(self.hypervisor, hypervisor))),
            self.bare
                .zip(bare)
                .map(|(first, second)| ("bare", change(first, second))),
        ];
        if changes.iter().flatten().all(|(_, text)| text == "same") {
            return "same".into();
        }
        let parts: Vec<String> = changes
            .iter()
            .flatten()
            .map(|(which, text)| format!("{which} {text}"))
            .collect();
        parts.join(", ")
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
    /// Live migration (`crate::migrate_bench`).
    pub migrate: bool,
}

/// `cargo xtask bench`: runs the selected parts, prints the table and writes the JSON.
pub fn bench(selection: Selection) -> Result<(), String> {
    let version = qemu::check_qemu()?;
    build::build_all()?;
    let (mut figures, mut histograms) = (Vec::new(), Vec::new());
    if selection.micro {
        for gic in [3, 2] {
            let (rows, histogram) = micro(gic)?;
            figures.extend(rows);
            histograms.push(histogram);
        }
        figures.extend(sharing()?);
    }
    if selection.linux {
        let (rows, exits) = linux()?;
        figures.extend(rows);
        histograms.extend(exits);
    }
    let version = version
        .strip_prefix("QEMU emulator version ")
        .unwrap_or(&version)
        .to_string();
    if selection.micro || selection.linux {
        print!("{}", table(&figures));
        for histogram in &histograms {
            println!(
                "(exits of the instance under the hypervisor, {}: {})",
                histogram.run,
                histogram_text(&histogram.exits)
            );
        }
        let json = json_path();
        std::fs::write(&json, to_json(&version, &figures, &histograms))
            .map_err(|error| format!("cannot write {}: {error}", json.display()))?;
        eprintln!("xtask: bench: wrote {} (QEMU {version})", json.display());
    }
    if selection.migrate {
        crate::migrate_bench::bench_migrate(&version)?;
    }
    Ok(())
}

/// The QEMU arguments common to every benchmark run, on QEMU virt with GIC version `gic`.
fn qemu_command(gic: u32, virtualization: bool, cpus: u32, memory: &str) -> Command {
    let mut command = Command::new("qemu-system-aarch64");
    command
        .arg("-M")
        .arg(format!(
            "virt,virtualization={},gic-version={gic}",
            if virtualization { "on" } else { "off" }
        ))
        .args(["-cpu", CPU])
        .args(["-smp", &cpus.to_string()])
        .args(["-m", memory])
        .args(["-icount", ICOUNT])
        .args(["-seed", SEED])
        // No default NIC: QEMU's user-mode network behind it made the bare board's Linux boot
        // differ by a microsecond now and then (with 4 CPUs even with the console in a file), and
        // the bare kernel probed a virtio-net device that the instance under the hypervisor does
        // not have.
        .args(["-nic", "none"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"]);
    command
}

/// The hypervisor running `bundle` on a GICv`gic` board with `cpus` CPUs and `memory` RAM,
/// with `bootargs` after `log=info` (the level that logs an instance's exit histogram when it
/// stops; nothing is logged at it while a guest measures).
fn hypervisor_command(gic: u32, bundle: &Path, cpus: u32, memory: &str, bootargs: &str) -> Command {
    let mut command = qemu_command(gic, true, cpus, memory);
    command
        .arg("-kernel")
        .arg(build::hypervisor_image())
        .arg("-initrd")
        .arg(bundle)
        .args(["-append", format!("log=info {bootargs}").trim_end()]);
    command
}

fn require(path: &Path, how: &str) -> Result<(), String> {
    if path.exists() {
        Ok(())
    } else {
        Err(format!("{} is missing: {how}", path.display()))
    }
}

/// The exits of one run's instance, by reason, and which run it was.
pub struct ExitHistogram {
    /// The run, e.g. `micro_gicv3`.
    pub run: String,
    /// `(reason, count)` for the reasons that occurred.
    pub exits: Vec<(String, u64)>,
}

/// The micro-benchmarks, both ways, on a board with GIC version `gic` (the GICv2 rows are
/// named with a `_gicv2` suffix), and the bench guest's exit histogram under the hypervisor.
fn micro(gic: u32) -> Result<(Vec<Figure>, ExitHistogram), String> {
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
    let hypervisor = hypervisor_command(gic, &bundle, 2, "512M", "");
    let mut bare = qemu_command(gic, false, 2, "512M");
    bare.arg("-kernel").arg(&image);
    eprintln!(
        "xtask: bench: micro-benchmarks on GICv{gic}, with the hypervisor and on the bare board"
    );
    let suffix = if gic == 2 { "_gicv2" } else { "" };
    let (on_hypervisor, on_bare) = both(
        || micro_run("with the hypervisor", hypervisor),
        || micro_run("on the bare board", bare),
    );
    let ((on_hypervisor, serial), (on_bare, _)) = (on_hypervisor?, on_bare?);
    let exits = parse_exit_histogram(&serial, BENCH_GUEST).ok_or_else(|| {
        format!("the hypervisor logged no exit histogram for `{BENCH_GUEST}` (GICv{gic})")
    })?;
    let mut figures: Vec<Figure> = MICRO
        .iter()
        .map(|&(name, aim)| {
            Figure::both_ways(
                &format!("{name}{suffix}"),
                "instructions",
                lookup(&on_hypervisor, name).expect("checked by micro_run"),
                lookup(&on_bare, name).expect("checked by micro_run"),
                aim.map_or(Aim::None, Aim::AtMost),
            )
        })
        .collect();
    // Figures the guest reports beyond the known ones, if both runs have them.
    for (name, value) in &on_hypervisor {
        if MICRO.iter().all(|&(known, _)| known != name)
            && let Some(bare) = lookup(&on_bare, name)
        {
            figures.push(Figure::both_ways(
                &format!("{name}{suffix}"),
                "instructions",
                *value,
                bare,
                Aim::None,
            ));
        }
    }
    let histogram = ExitHistogram {
        run: format!("micro_gicv{gic}"),
        exits,
    };
    Ok((figures, histogram))
}

/// An instance of one vCPU with the bench guest's RAM running `image` with `bootargs` after the
/// console's.
fn one_vcpu_instance(name: &str, image: &Path, bootargs: &str) -> BoardPart {
    BoardPart::Instance(InstanceSpec {
        spec: BundleSpec {
            kernel: image.to_path_buf(),
            initrd: None,
            name: name.into(),
            memory: BENCH_MEMORY,
            vcpus: 1,
            bootargs: format!("console=ttyAMA0 {bootargs}").trim_end().into(),
        },
        start_at_boot: true,
        cpus: None,
        weight: DEFAULT_WEIGHT,
    })
}

/// Writes `target/images/bench-<stem>.fit` with `instances`.
fn board_bundle(stem: &str, instances: &[BoardPart]) -> Result<PathBuf, String> {
    let bundle = build::images_dir().join(format!("bench-{stem}.fit"));
    write_board_bundle_file(instances, &bundle)?;
    Ok(bundle)
}

/// The figures of instances sharing one CPU (module docs): the vCPU switch, and the null
/// hypercall and timer latency beside a busy instance and alone.
fn sharing() -> Result<Vec<Figure>, String> {
    let bench = build::guest_image(BENCH_GUEST);
    let spin = build::guest_image(NEIGHBOUR);
    for image in [&bench, &spin] {
        require(image, "`cargo xtask build` did not build the test guests")?;
    }
    let switches = format!("bench.switches={SWITCH_GAPS}");
    let calls = format!("bench.calls={BUSY_CALLS}");
    let switch = board_bundle(
        "switch",
        &SWITCH_INSTANCES.map(|name| one_vcpu_instance(name, &bench, &switches)),
    )?;
    let busy = board_bundle(
        "busy",
        &[
            one_vcpu_instance(BENCH_GUEST, &bench, &format!("{calls} bench.neighbour=1")),
            one_vcpu_instance(
                NEIGHBOUR,
                &spin,
                &format!("spin.seconds={NEIGHBOUR_SECONDS}"),
            ),
        ],
    )?;
    let alone = board_bundle("alone", &[one_vcpu_instance(BENCH_GUEST, &bench, &calls)])?;
    let slice = format!("sched.slice_ms={SWITCH_SLICE_MS}");
    let switch = hypervisor_command(3, &switch, 1, "512M", &slice);
    let busy = hypervisor_command(3, &busy, 1, "512M", "");
    let alone = hypervisor_command(3, &alone, 1, "512M", "");
    eprintln!(
        "xtask: bench: sharing one CPU: vCPU switches, the bench guest beside a busy instance and \
         alone"
    );
    let (switch, busy, alone) = std::thread::scope(|scope| {
        let switch = scope.spawn(|| switch_run(switch));
        let busy = scope.spawn(|| busy_run(busy));
        let alone = instances_run("alone on one CPU", alone, &[BENCH_GUEST]);
        (
            switch.join().expect("benchmark thread"),
            busy.join().expect("benchmark thread"),
            alone,
        )
    });
    let (switch, busy, alone) = (switch?, busy?, alone?.1.remove(0));
    let mut figures = vec![Figure::hypervisor_only("vcpu_switch", switch, None)];
    for name in BESIDE_BUSY {
        let alone = lookup(&alone, name)
            .ok_or_else(|| format!("the bench guest alone on one CPU gave no `BENCH {name}`"))?;
        figures.push(Figure::hypervisor_only(
            &format!("{name}{BUSY_SUFFIX}"),
            lookup(&busy, name).expect("checked by busy_run"),
            Some(alone),
        ));
    }
    Ok(figures)
}

/// The vCPU switch run: the switch in instructions, from both instances' mean gap and run.
fn switch_run(command: Command) -> Result<u64, String> {
    let (run, figures) = instances_run("vCPU switch", command, &SWITCH_INSTANCES)?;
    let mut means = [[0u64; 2]; 2];
    for (instance, figures) in figures.iter().enumerate() {
        for (index, name) in ["switch_gap", "switch_run"].into_iter().enumerate() {
            means[instance][index] = lookup(figures, name).ok_or_else(|| {
                run.failure(&format!(
                    "vCPU switch: no `BENCH {name}` from {}",
                    SWITCH_INSTANCES[instance]
                ))
            })?;
        }
    }
    let [[gap_a, run_a], [gap_b, run_b]] = means;
    let Some(switch) = switch_cost([gap_a, gap_b], [run_a, run_b]) else {
        return Err(run.failure(&format!(
            "vCPU switch: gaps {gap_a} and {gap_b}, runs {run_a} and {run_b}: the instances did \
             not take turns"
        )));
    };
    eprintln!(
        "xtask: bench: vCPU switch: mean gaps {gap_a} and {gap_b}, runs {run_a} and {run_b}: \
         {switch} instructions a switch"
    );
    Ok(switch)
}

/// One vCPU switch from the two instances' mean gaps and runs (module docs): each gap is a
/// switch away, the other instance's run and a switch back, so `(gaps - runs) / 4`. `None` if
/// that is not positive or not under a tenth of the runs: the instances did not take turns
/// (one gap holding two runs of the other, say).
pub fn switch_cost(gaps: [u64; 2], runs: [u64; 2]) -> Option<u64> {
    let (gaps, runs) = (gaps[0] + gaps[1], runs[0] + runs[1]);
    let switch = gaps.checked_sub(runs)? / 4;
    (switch > 0 && switch < runs / 20).then_some(switch)
}

/// The bench guest beside the busy neighbour: its figures, once it is checked that the
/// neighbour ran before the bench guest measured and was still spinning when it was done.
fn busy_run(command: Command) -> Result<Vec<(String, u64)>, String> {
    let how = "beside a busy instance";
    let (run, mut figures) = instances_run(how, command, &[BENCH_GUEST])?;
    let figures = figures.remove(0);
    let fail = |what: &str| Err(run.failure(&format!("bench guest {how}: {what}")));
    let lines: Vec<&str> = run.serial.lines().collect();
    // The first line of `instance`'s that holds `what`.
    let at = |instance: &str, what: &str| {
        lines.iter().position(|line| {
            instance_line(line, instance).is_some_and(|printed| printed.contains(what))
        })
    };
    let (bench, neighbour) = (BENCH_GUEST, NEIGHBOUR);
    let Some(runs) = at(bench, NEIGHBOUR_RUNS) else {
        return fail(&format!(
            "no `{NEIGHBOUR_RUNS}` line: it was never switched out"
        ));
    };
    let first_figure = at(bench, "BENCH ").expect("instances_run found figures");
    let done = at(bench, BENCH_DONE).expect("instances_run found it");
    if runs > first_figure {
        return fail("it measured before it was switched out");
    }
    if at(neighbour, NEIGHBOUR_END).is_some_and(|end| end < done) {
        return fail(&format!(
            "the neighbour stopped spinning before `{BENCH_DONE}`: make it spin longer"
        ));
    }
    for name in BESIDE_BUSY {
        if lookup(&figures, name).is_none() {
            return fail(&format!("no `BENCH {name} <ticks>` line"));
        }
    }
    for line in &lines {
        if let Some(left_out) = instance_line(line, bench).filter(|line| line.contains("left out"))
        {
            eprintln!("xtask: bench: {how}: {left_out}");
        }
    }
    Ok(figures)
}

/// `BENCH` figures in the order printed: name and value.
pub type Figures = Vec<(String, u64)>;

/// One run of a board of instances: the `BENCH` figures of each instance in `names`, once
/// every one of them has printed `BENCH done`.
fn instances_run(
    how: &str,
    command: Command,
    names: &[&str],
) -> Result<(Session, Vec<Figures>), String> {
    let run = Session::run(command, MICRO_TIMEOUT, |serial| {
        if names.iter().all(|name| {
            serial
                .lines()
                .any(|line| instance_line(line, name) == Some(BENCH_DONE))
        }) {
            Step::Finish
        } else {
            Step::Wait
        }
    })?;
    if !run.finished {
        return Err(run.failure(&format!(
            "{how}: not every one of {} printed `{BENCH_DONE}` within {}s",
            names.join(", "),
            MICRO_TIMEOUT.as_secs()
        )));
    }
    let mut figures = Vec::new();
    for name in names {
        match parse_instance_bench_lines(&run.serial, name) {
            Ok(found) => figures.push(found),
            Err(error) => return Err(run.failure(&format!("{how}: {name}: {error}"))),
        }
    }
    if !run.exited {
        eprintln!(
            "xtask: bench: warning: the board {how} did not power off within {}s of the last \
             `{BENCH_DONE}`",
            GRACE.as_secs()
        );
    }
    eprintln!(
        "xtask: bench: {how}: {} figures ({:.1}s wall)",
        figures.iter().map(Vec::len).sum::<usize>(),
        run.elapsed.as_secs_f64()
    );
    Ok((run, figures))
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

/// One run of the bench guest: its `BENCH` figures in the order printed, and the serial log.
fn micro_run(how: &str, command: Command) -> Result<(Vec<(String, u64)>, String), String> {
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
    Ok((figures, run.serial))
}

/// The exit histogram the hypervisor logs when instance `name` stops
/// (`<name>: exits: hvc 1030, mmio 2040, ...`), as `(reason, count)` pairs.
pub fn parse_exit_histogram(serial: &str, name: &str) -> Option<Vec<(String, u64)>> {
    let marker = format!("{name}: exits: ");
    let line = serial.lines().find_map(|line| {
        let at = line.find(&marker)?;
        Some(line[at + marker.len()..].trim_end())
    })?;
    if line == "none" {
        return Some(Vec::new());
    }
    line.split(", ")
        .map(|entry| {
            let (reason, count) = entry.split_once(' ')?;
            Some((reason.to_string(), count.parse().ok()?))
        })
        .collect()
}

/// One line of an exit histogram for the table's notes: `hvc 1030, mmio 2040`.
fn histogram_text(histogram: &[(String, u64)]) -> String {
    histogram
        .iter()
        .map(|(reason, count)| format!("{reason} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
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
    parse_lines(serial.lines().map(guest_line))
}

/// Every `BENCH <name> <integer>` line that instance `name` printed (`[name] BENCH ...`) on a
/// board with several.
pub fn parse_instance_bench_lines(serial: &str, name: &str) -> Result<Vec<(String, u64)>, String> {
    parse_lines(serial.lines().filter_map(|line| instance_line(line, name)))
}

/// What instance `name` printed on `line` (`[name] text`), if it printed it. The board's first
/// instance line may follow the management shell's prompt (`el2> [name] text`).
fn instance_line<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("[{name}] ");
    let at = line.find(&prefix as &str)?;
    (at == 0 || line[..at].ends_with("> ")).then(|| line[at + prefix.len()..].trim_end())
}

/// The `BENCH <name> <integer>` lines of `lines` up to `BENCH done`.
fn parse_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Vec<(String, u64)>, String> {
    let mut figures: Vec<(String, u64)> = Vec::new();
    for line in lines {
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

/// Linux boot to /init for each kernel flavour and vCPU count ([`LINUX_VCPUS`]), both ways,
/// each taken twice to show that it repeats; with the exits of each first run under the
/// hypervisor.
fn linux() -> Result<(Vec<Figure>, Vec<ExitHistogram>), String> {
    let (mut figures, mut histograms) = (Vec::new(), Vec::new());
    for flavour in Flavour::ALL {
        for vcpus in LINUX_VCPUS {
            let name = linux_row_name(flavour, vcpus);
            let bundle = flavour.bundle(vcpus)?;
            let mut runs = Vec::new();
            for run in 1..=2 {
                eprintln!(
                    "xtask: bench: {name} (run {run} of 2), with the hypervisor and on the bare \
                     board"
                );
                let hypervisor = hypervisor_command(3, &bundle, vcpus, "1G", "");
                // The bare board gets the RAM the instance has under the hypervisor, not the
                // board's 1 GiB: the kernel's boot time grows with its memory (struct pages,
                // buddy allocator), by about 3.6% of the figure from 256 MiB to 1 GiB, far more
                // than the overhead being measured.
                let mut bare =
                    qemu_command(3, false, vcpus, &format!("{}M", linux_guest::MEMORY >> 20));
                bare.arg("-kernel")
                    .arg(flavour.kernel_image())
                    .arg("-initrd")
                    .arg(linux_guest::initramfs_image())
                    .args(["-append", linux_guest::BOOTARGS]);
                let (on_hypervisor, on_bare) = both(
                    || linux_run(&name, "with the hypervisor", hypervisor, NEXT_INSTANCE),
                    || linux_run(&name, "on the bare board", bare, ""),
                );
                runs.push((on_hypervisor?, on_bare?));
            }
            let [(first, first_bare), (second, second_bare)] =
                <[_; 2]>::try_from(runs).unwrap_or_else(|_| unreachable!("two runs were taken"));
            let exits = parse_exit_histogram(&first.serial, "linux").ok_or(format!(
                "{name}: the hypervisor logged no exit histogram for `linux`"
            ))?;
            histograms.push(ExitHistogram {
                run: name.clone(),
                exits,
            });
            let mut figure = Figure::both_ways(
                &name,
                "us",
                first.init_us,
                first_bare.init_us,
                Aim::OverheadHundredthsPercent(LINUX_AIM_HUNDREDTHS_PERCENT),
            );
            figure.again = Some((second.init_us, Some(second_bare.init_us)));
            figures.push(figure);
        }
    }
    Ok((figures, histograms))
}

/// The name of the Linux row for `flavour` with `vcpus` vCPUs, e.g. `linux_init_cloud_4vcpu`.
pub fn linux_row_name(flavour: Flavour, vcpus: u32) -> String {
    let flavour = match flavour {
        Flavour::Cloud => "cloud",
        Flavour::Generic => "generic",
    };
    format!("linux_init_{flavour}_{vcpus}vcpu")
}

/// One Linux boot's figure and its serial log.
struct LinuxRun {
    /// The printk timestamp of [`LINUX_INIT_LINE`], in microseconds.
    init_us: u64,
    /// The board's serial output.
    serial: String,
}

/// One Linux boot of row `row`: the printk timestamp of `Run /init as init process`. `focus` is
/// typed before `poweroff -f` (the key that gives a hypervisor's instance the keyboard).
fn linux_run(row: &str, how: &str, command: Command, focus: &str) -> Result<LinuxRun, String> {
    let mut sent = false;
    let run = Session::run(command, LINUX_TIMEOUT, |serial| {
        if sent {
            return Step::Wait;
        }
        match serial.find(LINUX_INIT_LINE) {
            Some(at) if serial[at..].contains(linux_guest::PROMPT) => {
                sent = true;
                Step::Send(format!("{focus}{LINUX_POWEROFF}").into_bytes())
            }
            _ => Step::Wait,
        }
    })?;
    let fail = |what: String| Err(run.failure(&format!("{row} {how}: {what}")));
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
        "xtask: bench: {row} {how}: /init at {us} us ({}, {:.1}s wall)",
        if run.exited {
            "powered off"
        } else {
            "killed: `poweroff -f` did not end it"
        },
        run.elapsed.as_secs_f64()
    );
    Ok(LinuxRun {
        init_us: us,
        serial: run.serial,
    })
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
    let mut rows = vec![vec![
        "benchmark".to_string(),
        "hypervisor".into(),
        "bare board".into(),
        "overhead".into(),
        "aim".into(),
    ]];
    let repeated = figures.iter().any(|figure| figure.again.is_some());
    if repeated {
        rows[0].push("second run".into());
    }
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
        let bare = figure.bare.map_or("-".into(), with_unit);
        let aim = match (
            figure.aim.text(),
            figure.aim.met(figure.hypervisor, figure.bare),
        ) {
            (Some(text), Some(true)) => format!("{text}: met"),
            (Some(text), Some(false)) => format!("{text}: MISSED"),
            _ => "-".into(),
        };
        let mut row = vec![
            figure.name.clone(),
            with_unit(figure.hypervisor),
            bare,
            figure.overhead_text(),
            aim,
        ];
        if repeated {
            row.push(figure.repeat_text());
        }
        rows.push(row);
    }
    // Names, aims and repeats left-aligned, figures right-aligned.
    let mut text = render_table(&rows, &[0, 4, 5]);
    text.push_str(
        "(micro-benchmarks in instructions per operation; under icount one counter tick is one \
         instruction)\n",
    );
    if repeated {
        text.push_str(
            "(second run: the figures of a second run of the same images, against the first; \
             they should be the same)\n",
        );
    }
    if figures.iter().any(|figure| figure.alone.is_some()) {
        text.push_str(&format!(
            "(*{BUSY_SUFFIX}: beside a CPU-bound instance on one CPU, overhead against the same \
             figure alone on it)\n"
        ));
    }
    text
}

/// `rows` (the first is the header) as a text table: columns padded to their widest cell,
/// right-aligned except `left_columns`, a rule under the header.
pub fn render_table(rows: &[Vec<String>], left_columns: &[usize]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for (index, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(column, (cell, &width))| {
                if left_columns.contains(&column) {
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
    text
}

/// `target/bench.json`.
pub fn to_json(qemu_version: &str, figures: &[Figure], histograms: &[ExitHistogram]) -> String {
    let mut text = format!(
        "{{\n  \"qemu\": {},\n  \"cpu\": {},\n  \"icount\": {},\n  \"seed\": {},\n  \"results\": [",
        json_string(qemu_version),
        json_string(CPU),
        json_string(ICOUNT),
        json_string(SEED)
    );
    for (index, figure) in figures.iter().enumerate() {
        text.push_str(if index == 0 { "\n" } else { ",\n" });
        let alone = figure
            .alone
            .map_or(String::new(), |alone| format!(", \"alone\": {alone}"));
        let again = figure.again.map_or(String::new(), |(hypervisor, bare)| {
            format!(
                ", \"second_run\": {{ \"hypervisor\": {hypervisor}, \"bare\": {} }}",
                bare.map_or("null".into(), |bare| bare.to_string())
            )
        });
        text.push_str(&format!(
            "    {{ \"name\": {}, \"unit\": {}, \"hypervisor\": {}, \"bare\": {}{alone}, \"aim\": {}{again} }}",
            json_string(&figure.name),
            json_string(figure.unit),
            figure.hypervisor,
            figure.bare.map_or("null".into(), |bare| bare.to_string()),
            figure
                .aim
                .text()
                .as_deref()
                .map_or("null".into(), json_string)
        ));
    }
    text.push_str(if figures.is_empty() { "]" } else { "\n  ]" });
    text.push_str(",\n  \"exits\": {");
    for (index, histogram) in histograms.iter().enumerate() {
        let counts: Vec<String> = histogram
            .exits
            .iter()
            .map(|(reason, count)| format!("{}: {count}", json_string(reason)))
            .collect();
        text.push_str(&format!(
            "{}\n    {}: {{ {} }}",
            if index == 0 { "" } else { "," },
            json_string(&histogram.run),
            counts.join(", ")
        ));
    }
    text.push_str(if histograms.is_empty() {
        "}\n}\n"
    } else {
        "\n  }\n}\n"
    });
    text
}

/// A JSON string literal.
pub fn json_string(text: &str) -> String {
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
        let boot = Figure::both_ways(
            "linux_boot_to_init",
            "us",
            882_834,
            826_906,
            Aim::OverheadHundredthsPercent(50),
        );
        assert_eq!(boot.overhead_text(), "+55928 (+6.76%)");
        assert_eq!(boot.aim.met(boot.hypervisor, boot.bare), Some(false));
        assert_eq!(boot.aim.met(1_005, Some(1_000)), Some(true));
        assert_eq!(boot.aim.met(1_006, Some(1_000)), Some(false));
        assert_eq!(boot.aim.met(1_006, None), None);
        assert_eq!(Aim::AtMost(120).met(120, Some(5)), Some(true));
        assert_eq!(Aim::AtMost(120).met(121, Some(5)), Some(false));
        assert_eq!(Aim::AtMost(120).met(119, None), Some(true));
        assert_eq!(Aim::None.met(1, Some(1)), None);
        let faster = Figure {
            hypervisor: 990,
            bare: Some(1_000),
            ..boot.clone()
        };
        assert_eq!(faster.overhead_text(), "-10 (-1.00%)");

        let switch = Figure::hypervisor_only("vcpu_switch", 2130, None);
        assert_eq!(switch.difference(), None);
        assert_eq!(switch.overhead_text(), "-");
        let busy = Figure::hypervisor_only("timer_latency_busy_neighbour", 3968, Some(2468));
        assert_eq!(busy.difference(), Some(1500));
        assert_eq!(busy.overhead_text(), "+1500 over alone (2468)");
        let table = table(&[faster, switch, busy]);
        // The cells of the row of `name`, trimmed.
        let row = |name: &str| -> Vec<String> {
            let line = table
                .lines()
                .find(|line| line.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no row {name} in\n{table}"));
            line.split(" | ")
                .map(|cell| cell.trim().to_string())
                .collect()
        };
        assert_eq!(row("linux_boot_to_init")[1..3], ["990 us", "1000 us"]);
        assert_eq!(row("vcpu_switch"), ["vcpu_switch", "2130", "-", "-", "-"]);
        assert_eq!(
            row("timer_latency_busy_neighbour")[1..],
            ["3968", "-", "+1500 over alone (2468)", "-"]
        );
        assert!(table.contains("(*_busy_neighbour: beside"), "{table}");
        assert!(
            !table.contains("second run"),
            "no column for figures taken once"
        );
    }

    #[test]
    fn second_runs_are_compared_with_the_first() {
        let boot = |again| Figure {
            again,
            ..Figure::both_ways("linux_init_cloud_1vcpu", "us", 800_000, 790_000, Aim::None)
        };
        assert_eq!(boot(None).repeat_text(), "-");
        assert_eq!(boot(Some((800_000, Some(790_000)))).repeat_text(), "same");
        assert_eq!(
            boot(Some((800_035, Some(790_000)))).repeat_text(),
            "hypervisor +35 us, bare same"
        );
        assert_eq!(
            boot(Some((799_990, Some(790_001)))).repeat_text(),
            "hypervisor -10 us, bare +1 us"
        );
        let table = table(&[boot(Some((800_035, Some(790_000))))]);
        assert!(
            table
                .lines()
                .next()
                .is_some_and(|header| header.ends_with("| second run")),
            "{table}"
        );
        assert!(table.contains("| hypervisor +35 us, bare same"), "{table}");
        let json = to_json("10", &[boot(Some((800_035, None)))], &[]);
        assert!(
            json.contains(r#""second_run": { "hypervisor": 800035, "bare": null }"#),
            "{json}"
        );
    }

    #[test]
    fn switch_cost_pairs_each_gap_with_the_other_run() {
        // The figures of one run: (1003097 - 998837) / 2 = (1003136 - 998876) / 2 = 2130.
        assert_eq!(
            switch_cost([1_003_097, 1_003_136], [998_876, 998_837]),
            Some(2130)
        );
        // A gap no longer than the runs, or holding two runs of the other: no figure.
        assert_eq!(switch_cost([1_000, 1_000], [1_000, 1_000]), None);
        assert_eq!(switch_cost([900, 900], [1_000, 1_000]), None);
        assert_eq!(
            switch_cost([2_004_000, 1_002_000], [1_000_000, 1_000_000]),
            None
        );
    }

    #[test]
    fn instance_lines_are_told_apart() {
        let serial = "el2> [switch-a] BENCH switch_gap 12\n[switch-b] BENCH switch_gap 10\n\
                      [switch-a] bench: gaps\n[switch-a] BENCH switch_run 7\n\
                      [switch-b] BENCH switch_run 8\n[switch-a] BENCH done\n\
                      [switch-a] BENCH late 1\nBENCH stray 3\nx[switch-b] BENCH forged 1\n";
        assert_eq!(
            parse_instance_bench_lines(serial, "switch-a"),
            Ok(vec![("switch_gap".into(), 12), ("switch_run".into(), 7)])
        );
        assert_eq!(
            parse_instance_bench_lines(serial, "switch-b"),
            Ok(vec![("switch_gap".into(), 10), ("switch_run".into(), 8)])
        );
        assert_eq!(parse_instance_bench_lines(serial, "switch"), Ok(vec![]));
    }

    #[test]
    fn instances_run_waits_for_every_instance() {
        let (_, figures) = instances_run(
            "fake",
            shell(
                "echo '[a] BENCH x 1'; echo '[a] BENCH done'; echo '[b] BENCH x 2'; \
                 echo '[b] BENCH done'",
            ),
            &["a", "b"],
        )
        .unwrap();
        assert_eq!(figures, vec![vec![("x".into(), 1)], vec![("x".into(), 2)]]);
        let Err(error) = instances_run(
            "fake",
            shell("echo '[a] BENCH x 1'; echo '[a] BENCH done'"),
            &["a", "b"],
        ) else {
            panic!("a board without b's figures passed");
        };
        assert!(error.contains("not every one of a, b printed"), "{error}");
    }

    #[test]
    fn busy_run_checks_the_neighbour() {
        let good = "echo '[bench] bench: switched out for 4003094 ticks: the neighbour runs'; \
                    echo '[bench] BENCH null_hypercall 317'; echo '[bench] BENCH timer_latency 3968'; \
                    echo '[bench] BENCH done'; echo '[spin] spin: total 5 iterations on 1 vCPUs'";
        let figures = busy_run(shell(good)).unwrap();
        assert_eq!(lookup(&figures, "timer_latency"), Some(3968));

        let never_switched = "echo '[bench] bench: not switched out within 1 s: no neighbour'; \
                              echo '[bench] BENCH null_hypercall 317'; \
                              echo '[bench] BENCH timer_latency 2468'; echo '[bench] BENCH done'";
        let error = busy_run(shell(never_switched)).unwrap_err();
        assert!(error.contains("never switched out"), "{error}");

        let stopped_early = "echo '[bench] bench: switched out for 9 ticks: the neighbour runs'; \
                             echo '[spin] spin: total 5 iterations on 1 vCPUs'; \
                             echo '[bench] BENCH null_hypercall 317'; \
                             echo '[bench] BENCH timer_latency 2468'; echo '[bench] BENCH done'";
        let error = busy_run(shell(stopped_early)).unwrap_err();
        assert!(error.contains("stopped spinning before"), "{error}");

        let missing = "echo '[bench] bench: switched out for 9 ticks: the neighbour runs'; \
                       echo '[bench] BENCH null_hypercall 317'; echo '[bench] BENCH done'";
        let error = busy_run(shell(missing)).unwrap_err();
        assert!(
            error.contains("no `BENCH timer_latency <ticks>` line"),
            "{error}"
        );
    }

    fn shell(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn the_exit_histogram_is_read_from_the_hypervisors_log() {
        let serial = "el2  INFO: bench: stopped: the guest called SYSTEM_OFF (it ran 9 ms)\n\
                      el2  INFO: bench: exits: hvc 1030, mmio 2040, interrupt 50\n\
                      el2  INFO: other: exits: none\n";
        assert_eq!(
            parse_exit_histogram(serial, "bench"),
            Some(vec![
                ("hvc".into(), 1030),
                ("mmio".into(), 2040),
                ("interrupt".into(), 50)
            ])
        );
        assert_eq!(parse_exit_histogram(serial, "other"), Some(Vec::new()));
        assert_eq!(parse_exit_histogram(serial, "absent"), None);
        assert_eq!(
            parse_exit_histogram("x: exits: hvc many\n", "x"),
            None,
            "a count that is no number"
        );
        assert_eq!(
            histogram_text(&[("hvc".into(), 1), ("wfx".into(), 2)]),
            "hvc 1, wfx 2"
        );
    }

    #[test]
    fn micro_run_needs_every_figure() {
        let (figures, _) = micro_run(
            "fake",
            shell(
                "echo '[bench] BENCH null_hypercall 97'; echo 'BENCH mmio_read 150'; \
                 echo 'BENCH mmio_write 160'; echo 'BENCH console_64_bytes 9000'; \
                 echo 'BENCH timer_latency 700'; echo 'BENCH sgi_latency 900'; echo 'BENCH done'",
            ),
        )
        .unwrap();
        assert_eq!(figures.len(), 6);
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
        let run = linux_run(
            "linux_init_fake",
            "fake",
            shell(
                "echo '[linux] [    0.882834] Run /init as init process'; printf 'guest# '; \
                 head -c 12 >/dev/null; echo off",
            ),
            "",
        )
        .unwrap();
        assert_eq!(run.init_us, 882_834);
        assert!(run.serial.ends_with("guest# off\n"), "{:?}", run.serial);
        let error = linux_run(
            "linux_init_fake",
            "fake",
            shell("echo '[    1.000000] Run /init as init process'"),
            "",
        )
        .map(|run| run.init_us)
        .unwrap_err();
        assert!(
            error.starts_with("linux_init_fake fake: ") && error.contains("followed by the prompt"),
            "{error}"
        );
    }

    #[test]
    fn json_is_well_formed() {
        let figures = vec![
            Figure::both_ways("null_hypercall", "instructions", 100, 3, Aim::AtMost(120)),
            Figure::hypervisor_only("vcpu_switch", 2130, None),
            Figure::hypervisor_only("null_hypercall_busy_neighbour", 101, Some(100)),
        ];
        let histograms = [
            ExitHistogram {
                run: "micro_gicv3".into(),
                exits: vec![("hvc".into(), 1030), ("mmio".into(), 2040)],
            },
            ExitHistogram {
                run: "micro_gicv2".into(),
                exits: Vec::new(),
            },
        ];
        let json = to_json("10.0.2 (\"x\")", &figures, &histograms);
        assert!(
            json.ends_with(
                "\"exits\": {\n    \"micro_gicv3\": { \"hvc\": 1030, \"mmio\": 2040 },\n    \"micro_gicv2\": {  }\n  }\n}\n"
            ),
            "{json}"
        );
        assert!(json.contains(r#""qemu": "10.0.2 (\"x\")""#), "{json}");
        assert!(json.contains(
            r#"{ "name": "null_hypercall", "unit": "instructions", "hypervisor": 100, "bare": 3, "aim": "<= 120" },"#
        ));
        assert!(json.contains(
            r#"{ "name": "vcpu_switch", "unit": "instructions", "hypervisor": 2130, "bare": null, "aim": null },"#
        ));
        assert!(json.contains(
            r#"{ "name": "null_hypercall_busy_neighbour", "unit": "instructions", "hypervisor": 101, "bare": null, "alone": 100, "aim": null }"#
        ));
        assert!(to_json("q", &[], &[]).ends_with("\"results\": [],\n  \"exits\": {}\n}\n"));
    }
}
