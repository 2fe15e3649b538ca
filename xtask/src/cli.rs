//! The `cargo xtask` command line: every command's usage text, and the arguments parsed into typed
//! options without building or running anything.

use std::path::PathBuf;
use std::time::Duration;

use devicetree::fit::{DEFAULT_WEIGHT, MAX_VCPUS, MAX_WEIGHT, MEMORY_GRANULE};

use crate::bench::Selection;
use crate::bundle::{self, BoardPart, BundleSpec, InstanceSpec};
use crate::checkpoint::{
    CheckpointCommand, DEFAULT_RECV_PORT, DEFAULT_RECV_TIMEOUT, DEFAULT_SEND_PORT,
    DEFAULT_SEND_TIMEOUT,
};
use crate::qemu::HYPERVISOR_MIB;

/// Most CPUs the hypervisor runs on: `--smp` is 1 to this.
pub const MAX_CPUS: u32 = 8;
/// The least board RAM `run` accepts, in MiB.
pub const MIN_BOARD_MIB: u32 = 128;
/// Board RAM `run` gives QEMU unless `--mem` says otherwise, in MiB.
pub const DEFAULT_BOARD_MIB: u32 = 1024;
/// vCPUs of `run`'s default and `--kernel` guests unless `--vcpus` says otherwise.
pub const DEFAULT_RUN_VCPUS: u32 = 2;

/// One command's help.
struct CommandHelp {
    name: &'static str,
    /// Its arguments, as its usage line shows them.
    arguments: &'static str,
    /// The arguments of a second form of the command, if it has one (else empty).
    alternative: &'static str,
    /// What it does (may span lines).
    summary: &'static str,
    /// Its options, one per line and indented (empty if it takes none).
    options: &'static str,
}

const COMMANDS: [CommandHelp; 10] = [
    CommandHelp {
        name: "build",
        arguments: "[--platform rpi4 --sd DIR]",
        alternative: "",
        summary: "build the hypervisor and the test guest images into target/images",
        options: "  --platform rpi4 --sd DIR\n                  \
                  also write a real Raspberry Pi 4's boot files into DIR: kernel8.img (the\n                  \
                  hypervisor), guests.fit (two Debian Linux instances), config.txt and\n                  \
                  cmdline.txt, for the SD card's boot partition beside the Pi firmware",
    },
    CommandHelp {
        name: "run",
        arguments: "[--kernel IMAGE [--initrd FILE] | --guest FILE] [--vcpus N] [--smp N] [--mem MiB]\n         \
                    [--gic 2|3 | --board rpi4]",
        alternative: "",
        summary: "boot the hypervisor on QEMU virt with a guest, its console on this terminal;\n\
                  fails if the hypervisor refuses the guest (serial log in target/run-serial.log)",
        options: "  (none)          two instances, web and db, of Debian's Linux with a busybox shell\n                  \
                  (fetched once, cached), 256 MiB each\n  \
                  --kernel IMAGE  your own arm64 Image, packed into a bundle with 256 MiB and the\n                  \
                  console on ttyAMA0\n  \
                  --initrd FILE   an initramfs for --kernel\n  \
                  --guest FILE    a guest bundle (.fit), which names its vCPUs and memory, or a bare\n                  \
                  arm64 Image (1 vCPU, 128 MiB), as it is\n  \
                  --vcpus N       vCPUs of each default instance or of the --kernel guest, 1 to 8\n                  \
                  (default 2)\n  \
                  --smp N         host CPUs, 1 to 8 (default 2); vCPUs are scheduled on them\n  \
                  --mem MiB       board RAM, at least 128 (default 1024): the hypervisor keeps about\n                  \
                  64 MiB, the guests' memory comes on top\n  \
                  --gic 2|3       the board's interrupt controller (default 3); guests see the same\n                  \
                  version (a GICv2 board has at most 8 CPUs)\n  \
                  --board rpi4    QEMU raspi4b instead of virt: a Raspberry Pi 4 (4 CPUs, 2 GiB,\n                  \
                  GIC-400) with Debian's bcm2711-rpi-4-b.dtb (fetched once, cached)\n\n\
                  The keyboard starts with the management shell (el2> ): Ctrl-] types into the next\n\
                  instance, Ctrl-\\ returns to the shell. The board powers off when its last instance\n\
                  does (`poweroff -f` in each Linux), or end the run with Ctrl-C.",
    },
    CommandHelp {
        name: "test",
        arguments: "",
        alternative: "",
        summary: "host unit tests, then every QEMU scenario",
        options: "",
    },
    CommandHelp {
        name: "bundle",
        arguments: "--kernel IMAGE [--initrd FILE] [--name NAME] [--mem SIZE] [--vcpus N]\n         \
                    [--bootargs \"...\"] -o OUT.fit",
        alternative: "(--instance SPEC | --merge FILE)... -o OUT.fit",
        summary: "pack a guest bundle (FIT image, docs/IMAGE-FORMAT.md): one guest, or a board bundle\n\
                  of several instances (--instance, --merge) that stores each image once",
        options: "  --kernel IMAGE     an arm64 kernel Image (required for one guest)\n  \
                  --initrd FILE      an initramfs\n  \
                  --name NAME        instance name: 1 to 32 of A-Z a-z 0-9 . _ -, starting with a\n                     \
                  letter or digit (default guest)\n  \
                  --mem SIZE         guest RAM, a multiple of 2 MiB: 256M, 1G or bytes (default 128M)\n  \
                  --vcpus N          1 to 8 (default 1)\n  \
                  --bootargs \"...\"   the guest kernel's command line (default \"console=ttyAMA0\")\n  \
                  --instance SPEC    one instance of a board bundle; repeat for more. SPEC is\n                     \
                  KEY=VALUE,KEY=VALUE,... and cmdline= takes the rest of SPEC, commas and\n                     \
                  spaces included, so it comes last:\n                       \
                  name=NAME      required, as --name; unique in the bundle\n                       \
                  kernel=IMAGE   required\n                       \
                  initrd=FILE    an initramfs\n                       \
                  mem=SIZE       as --mem (default 128M)\n                       \
                  vcpus=N        1 to 8 (default 1)\n                       \
                  start=yes|no   whether it starts at boot (default yes)\n                       \
                  cpus=MASK      the host CPUs it may run on, bit n for CPU n: 0x3 or 3\n                                      \
                  (default any)\n                       \
                  weight=N       its CPU share against the others, 1 to 65535 (default 256)\n                       \
                  cmdline=...    its kernel's command line (default \"console=ttyAMA0\")\n  \
                  --merge FILE       every instance of a bundle (single-guest or board) with its\n                     \
                  settings; repeat and mix with --instance, instances keep that order\n  \
                  -o, --output FILE  where to write the bundle (required)",
    },
    CommandHelp {
        name: "inspect",
        arguments: "FILE",
        alternative: "",
        summary: "print a guest or board bundle back: per instance its name, configuration, start at\n\
                  boot, CPUs, weight, memory, vCPUs, bootargs, kernel and ramdisk sizes and CRC-32s,\n\
                  or why the hypervisor would refuse it (then the command fails)",
        options: "",
    },
    CommandHelp {
        name: "checkpoint",
        arguments: "recv|send FILE [--port N] [--timeout SECS]",
        alternative: "inspect FILE",
        summary: "recv: take one checkpoint stream from a board on 127.0.0.1, verify it to its end and\n\
                  write FILE, answering the board OK (or ERR, leaving no FILE); send: send FILE as it\n\
                  is to a board and print its answer (fails if it refuses); inspect: print FILE's\n\
                  sections, or why it is malformed (docs/CHECKPOINT-FORMAT.md)",
        options: "  --port N        recv: the port to listen on (default 7071, where QEMU's guestfwd\n                  \
                  takes the board's saves; 0: any free port); send: the board's port\n                  \
                  (default 7070, QEMU's hostfwd to the board)\n  \
                  --timeout SECS  recv: for the whole receive, the wait for the board included\n                  \
                  (default 600); send: for connecting, retried while the board boots, and\n                  \
                  for each wait for the board to take data or answer (default 60)\n\n\
                  recv prints `listening on 127.0.0.1:N` once it listens and a summary line at the\n\
                  end; it writes FILE.partial until the stream is verified.",
    },
    CommandHelp {
        name: "migrate-demo",
        arguments: "",
        alternative: "",
        summary: "two QEMU virt boards joined by a board link: A boots Debian's Linux (2 vCPUs) and\n\
                  moves it to B while it runs; this terminal is B's console (serial logs in\n\
                  target/migrate-demo-a.log and -b.log)",
        options: "",
    },
    CommandHelp {
        name: "linux-guest",
        arguments: "[--vcpus N]",
        alternative: "",
        summary: "fetch Debian's arm64 kernel and busybox (once, into target/guest-cache), build the\n\
                  initramfs and the Linux guest bundle target/images/linux-<N>cpu.fit",
        options: "  --vcpus N  1 to 8 (default 1)",
    },
    CommandHelp {
        name: "bench",
        arguments: "[--only micro|linux|migrate]",
        alternative: "migrate",
        summary: "micro-benchmarks (bench guest) and Linux boot to /init (both Debian kernel\n\
                  flavours, 1 and 4 vCPUs, each twice) under -icount shift=0,sleep=off, with the\n\
                  hypervisor and on the bare board: table on stdout,\n\
                  figures in target/bench.json; then live migration between two boards beside\n\
                  QEMU's own (host time): table on stdout, target/bench-migrate.json",
        options: "  --only micro|linux|migrate  only the micro-benchmarks, only the Linux boots, or\n                              \
                  only the migrations (`bench migrate` too)",
    },
    CommandHelp {
        name: "help",
        arguments: "[COMMAND]",
        alternative: "",
        summary: "this text, or a command's",
        options: "",
    },
];

/// The overall usage: every command with its arguments and what it does.
pub fn usage() -> String {
    let mut text = String::from("usage: cargo xtask <command> [options]\n\ncommands:\n");
    for command in &COMMANDS {
        let line = format!("  {} {}", command.name, command.arguments);
        text.push_str(line.trim_end());
        text.push('\n');
        if !command.alternative.is_empty() {
            text.push_str(&format!("  {} {}\n", command.name, command.alternative));
        }
        for line in command.summary.lines() {
            text.push_str(&format!("      {line}\n"));
        }
    }
    text.push_str("\n`cargo xtask <command> --help` shows a command's options.");
    text
}

/// One command's usage and options, if there is such a command.
pub fn command_usage(name: &str) -> Option<String> {
    let command = COMMANDS.iter().find(|command| command.name == name)?;
    let mut line = format!("usage: cargo xtask {} {}", command.name, command.arguments);
    if !command.alternative.is_empty() {
        line = format!(
            "{}\n       cargo xtask {} {}",
            line.trim_end(),
            command.name,
            command.alternative
        );
    }
    let mut text = format!("{}\n\n{}\n", line.trim_end(), command.summary);
    if !command.options.is_empty() {
        text.push_str(&format!("\noptions:\n{}\n", command.options));
    }
    Some(text.trim_end().to_string())
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invocation {
    /// Print this text on stdout and succeed (`--help`, `-h`, `help`).
    Help(String),
    /// `build`, and the Raspberry Pi 4's SD-card files into this directory if given.
    Build(Option<PathBuf>),
    /// `run`.
    Run(RunOptions),
    /// `test`.
    Test,
    /// `bundle` of one guest: what to pack, and where to write it.
    Bundle(BundleSpec, PathBuf),
    /// `bundle --instance ... --merge ...`: the board bundle's parts in order, and where to write
    /// it.
    BoardBundle(Vec<BoardPart>, PathBuf),
    /// `inspect` this file.
    Inspect(PathBuf),
    /// `checkpoint recv`, `send` or `inspect`.
    Checkpoint(CheckpointCommand),
    /// `linux-guest` with this many vCPUs.
    LinuxGuest(u32),
    /// `migrate-demo`.
    MigrateDemo,
    /// `bench`.
    Bench(Selection),
}

/// The guest `run` boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunGuest {
    /// Debian's Linux with a busybox shell.
    Linux {
        /// Its vCPUs.
        vcpus: u32,
    },
    /// Your own kernel and initramfs, packed into a bundle.
    Kernel {
        /// The arm64 Image.
        kernel: PathBuf,
        /// The initramfs, if any.
        initrd: Option<PathBuf>,
        /// The bundle's vCPUs.
        vcpus: u32,
    },
    /// A guest bundle or bare arm64 Image, as it is.
    File(PathBuf),
}

/// `run`'s options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// The guest.
    pub guest: RunGuest,
    /// Host CPUs (`--smp`); `None`: one per vCPU.
    pub smp: Option<u32>,
    /// Board RAM in MiB.
    pub memory_mib: u32,
    /// The board's GIC version, 2 or 3 (QEMU virt).
    pub gic_version: u32,
    /// A Raspberry Pi 4 (QEMU raspi4b) instead of QEMU virt.
    pub rpi4: bool,
}

/// Parses `cargo xtask`'s arguments (without the program name). The error is the reason, one line,
/// or the usage when no command or an unknown one is given.
pub fn parse(args: &[String]) -> Result<Invocation, String> {
    let Some((command, rest)) = args.split_first() else {
        return Err(format!("no command given\n\n{}", usage()));
    };
    match command.as_str() {
        "-h" | "--help" => Ok(Invocation::Help(usage())),
        "help" => match rest {
            [] => Ok(Invocation::Help(usage())),
            [name] => command_usage(name)
                .map(Invocation::Help)
                .ok_or_else(|| format!("help: unknown command {name:?}\n\n{}", usage())),
            _ => Err("help takes at most one command".into()),
        },
        "build" => parse_build(rest),
        "test" => no_options("test", rest, Invocation::Test),
        "run" => parse_run(rest),
        "bundle" => parse_bundle(rest),
        "inspect" => parse_inspect(rest),
        "checkpoint" => parse_checkpoint(rest),
        "linux-guest" => parse_linux_guest(rest),
        "migrate-demo" => no_options("migrate-demo", rest, Invocation::MigrateDemo),
        "bench" => parse_bench(rest),
        other => Err(format!("unknown command {other:?}\n\n{}", usage())),
    }
}

/// The options of `command` one by one, with their values.
struct Options<'a> {
    command: &'static str,
    args: std::slice::Iter<'a, String>,
}

impl<'a> Options<'a> {
    fn new(command: &'static str, args: &'a [String]) -> Self {
        Self {
            command,
            args: args.iter(),
        }
    }

    fn next(&mut self) -> Option<&'a str> {
        self.args.next().map(String::as_str)
    }

    /// The value that follows `option`.
    fn value(&mut self, option: &str) -> Result<&'a str, String> {
        self.next().ok_or_else(|| format!("{option} needs a value"))
    }

    /// The error for an option `command` does not have.
    fn unknown(&self, option: &str) -> String {
        format!(
            "{} has no option {option:?} (`cargo xtask {} --help` lists them)",
            self.command, self.command
        )
    }

    /// This command's help.
    fn help(&self) -> Invocation {
        Invocation::Help(command_usage(self.command).expect("a known command"))
    }
}

/// Stores `value` for `option` unless the option was given before.
fn once<T>(slot: &mut Option<T>, option: &str, value: T) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{option} is given twice"));
    }
    *slot = Some(value);
    Ok(())
}

fn number(option: &str, text: &str) -> Result<u32, String> {
    text.parse()
        .map_err(|_| format!("{option} takes a number, not {text:?}"))
}

/// A guest's vCPU count: 1 to 8.
fn vcpu_count(text: &str) -> Result<u32, String> {
    match number("--vcpus", text)? {
        0 => Err("--vcpus 0: a guest needs at least 1 vCPU".into()),
        n if n > MAX_VCPUS => Err(format!(
            "--vcpus {n}: a guest has at most {MAX_VCPUS} vCPUs (the hypervisor runs on at most \
             {MAX_CPUS} CPUs)"
        )),
        n => Ok(n),
    }
}

fn no_options(
    command: &'static str,
    args: &[String],
    invocation: Invocation,
) -> Result<Invocation, String> {
    let mut options = Options::new(command, args);
    match options.next() {
        None => Ok(invocation),
        Some("-h" | "--help") => Ok(options.help()),
        Some(other) => Err(format!("{command} takes no arguments, not {other:?}")),
    }
}

fn parse_build(args: &[String]) -> Result<Invocation, String> {
    let (mut platform, mut sd) = (None, None);
    let mut options = Options::new("build", args);
    while let Some(option) = options.next() {
        match option {
            "-h" | "--help" => return Ok(options.help()),
            "--platform" => match options.value(option)? {
                "rpi4" => once(&mut platform, option, ())?,
                other => {
                    return Err(format!(
                        "--platform {other}: the platform with boot files of its own is rpi4"
                    ));
                }
            },
            "--sd" => once(&mut sd, option, PathBuf::from(options.value(option)?))?,
            other => return Err(options.unknown(other)),
        }
    }
    match (platform, sd) {
        (None, None) => Ok(Invocation::Build(None)),
        (Some(()), Some(dir)) => Ok(Invocation::Build(Some(dir))),
        (Some(()), None) => {
            Err("--platform rpi4 needs --sd DIR: where to write the boot files".into())
        }
        (None, Some(_)) => Err("--sd needs --platform rpi4".into()),
    }
}

fn parse_run(args: &[String]) -> Result<Invocation, String> {
    let (mut guest, mut kernel, mut initrd) = (None, None, None);
    let (mut vcpus, mut smp, mut memory, mut gic, mut board) = (None, None, None, None, None);
    let mut options = Options::new("run", args);
    while let Some(option) = options.next() {
        match option {
            "-h" | "--help" => return Ok(options.help()),
            "--guest" => once(&mut guest, option, PathBuf::from(options.value(option)?))?,
            "--kernel" => once(&mut kernel, option, PathBuf::from(options.value(option)?))?,
            "--initrd" => once(&mut initrd, option, PathBuf::from(options.value(option)?))?,
            "--vcpus" => once(&mut vcpus, option, vcpu_count(options.value(option)?)?)?,
            "--smp" => once(&mut smp, option, number(option, options.value(option)?)?)?,
            "--mem" => once(&mut memory, option, number(option, options.value(option)?)?)?,
            "--gic" => once(&mut gic, option, gic_version(options.value(option)?)?)?,
            "--board" => match options.value(option)? {
                "rpi4" => once(&mut board, option, true)?,
                "virt" => once(&mut board, option, false)?,
                other => {
                    return Err(format!(
                        "--board {other}: the boards are virt (QEMU virt, the default) and rpi4"
                    ));
                }
            },
            other => return Err(options.unknown(other)),
        }
    }
    if let Some(cpus) = smp.filter(|cpus| !(1..=MAX_CPUS).contains(cpus)) {
        return Err(format!(
            "--smp {cpus}: the board has 1 to {MAX_CPUS} CPUs, as the hypervisor supports at most \
             {MAX_CPUS}"
        ));
    }
    let rpi4 = board.unwrap_or(false);
    if rpi4 {
        for (given, option) in [
            (smp.is_some(), "--smp"),
            (memory.is_some(), "--mem"),
            (gic.is_some(), "--gic"),
        ] {
            if given {
                return Err(format!(
                    "{option} does not apply to --board rpi4: a Raspberry Pi 4 has 4 CPUs, 2 GiB and a GIC-400"
                ));
            }
        }
    }
    let memory_mib = memory.unwrap_or(DEFAULT_BOARD_MIB);
    if memory_mib < MIN_BOARD_MIB {
        return Err(format!(
            "--mem {memory_mib}: the board needs at least {MIN_BOARD_MIB} MiB: the hypervisor \
             keeps about {HYPERVISOR_MIB} MiB for itself, and the guest's memory comes on top"
        ));
    }
    let guest = match (guest, kernel, initrd) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(
                "--guest runs a bundle or Image as it is: it does not go with --kernel \
                        or --initrd"
                    .into(),
            );
        }
        (Some(_), None, None) if vcpus.is_some() => {
            return Err(
                "--vcpus does not apply to --guest: a bundle names its own vCPUs and a \
                        bare Image gets 1 (--smp sets the host CPUs)"
                    .into(),
            );
        }
        (Some(file), None, None) => RunGuest::File(file),
        (None, None, Some(_)) => {
            return Err("--initrd needs --kernel: the default guest has its own initramfs".into());
        }
        (None, Some(kernel), initrd) => RunGuest::Kernel {
            kernel,
            initrd,
            vcpus: vcpus.unwrap_or(DEFAULT_RUN_VCPUS),
        },
        (None, None, None) => RunGuest::Linux {
            vcpus: vcpus.unwrap_or(DEFAULT_RUN_VCPUS),
        },
    };
    Ok(Invocation::Run(RunOptions {
        guest,
        smp,
        memory_mib,
        gic_version: gic.unwrap_or(3),
        rpi4,
    }))
}

/// `--gic`: 2 or 3.
fn gic_version(text: &str) -> Result<u32, String> {
    match text {
        "2" => Ok(2),
        "3" => Ok(3),
        _ => Err(format!("--gic {text}: the board's GIC is version 2 or 3")),
    }
}

/// Guest RAM in bytes from `text` (`--mem`, `mem=`): a nonzero multiple of 2 MiB.
fn guest_memory(option: &str, text: &str) -> Result<u64, String> {
    let bytes = bundle::parse_size(text).map_err(|why| format!("{option}: {why}"))?;
    if bytes == 0 || !bytes.is_multiple_of(MEMORY_GRANULE) {
        return Err(format!(
            "{option} {text}: guest RAM is a nonzero multiple of 2 MiB (stage 2 maps it in 2 MiB \
             blocks)"
        ));
    }
    Ok(bytes)
}

/// An instance name (`--name`, `name=`).
fn instance_name(option: &str, text: &str) -> Result<String, String> {
    devicetree::fit::check_instance_name(text)
        .map_err(|why| format!("{option} {text:?}: {why}"))?;
    Ok(text.to_string())
}

/// Guest RAM and vCPUs of a bundle unless given.
const DEFAULT_GUEST_MEMORY: u64 = 128 << 20;
/// The guest kernel's command line unless given.
const DEFAULT_BOOTARGS: &str = "console=ttyAMA0";

fn parse_bundle(args: &[String]) -> Result<Invocation, String> {
    let (mut kernel, mut initrd, mut name, mut memory) = (None, None, None, None);
    let (mut vcpus, mut bootargs, mut out) = (None, None, None);
    let mut parts = Vec::new();
    let mut options = Options::new("bundle", args);
    while let Some(option) = options.next() {
        match option {
            "-h" | "--help" => return Ok(options.help()),
            "--kernel" => once(&mut kernel, option, PathBuf::from(options.value(option)?))?,
            "--initrd" => once(&mut initrd, option, PathBuf::from(options.value(option)?))?,
            "--name" => once(
                &mut name,
                option,
                instance_name(option, options.value(option)?)?,
            )?,
            "--mem" => once(
                &mut memory,
                option,
                guest_memory(option, options.value(option)?)?,
            )?,
            "--vcpus" => once(&mut vcpus, option, vcpu_count(options.value(option)?)?)?,
            "--bootargs" => once(&mut bootargs, option, options.value(option)?.to_string())?,
            "--instance" => {
                let instance = parse_instance(options.value(option)?)?;
                let name = &instance.spec.name;
                if parts.iter().any(
                    |part| matches!(part, BoardPart::Instance(other) if other.spec.name == *name),
                ) {
                    return Err(format!(
                        "--instance name={name} is given twice: instance names are unique in a \
                         board bundle"
                    ));
                }
                parts.push(BoardPart::Instance(instance));
            }
            "--merge" => parts.push(BoardPart::Merge(PathBuf::from(options.value(option)?))),
            "-o" | "--output" => once(&mut out, "-o", PathBuf::from(options.value(option)?))?,
            other => return Err(options.unknown(other)),
        }
    }
    if !parts.is_empty() {
        let single = [
            ("--kernel", kernel.is_some()),
            ("--initrd", initrd.is_some()),
            ("--name", name.is_some()),
            ("--mem", memory.is_some()),
            ("--vcpus", vcpus.is_some()),
            ("--bootargs", bootargs.is_some()),
        ];
        if let Some((option, _)) = single.iter().find(|(_, given)| *given) {
            return Err(format!(
                "{option} is for a bundle of one guest: with --instance or --merge, give each \
                 instance's files and manifest in its --instance SPEC"
            ));
        }
        let out = out.ok_or("bundle needs -o OUT.fit")?;
        return Ok(Invocation::BoardBundle(parts, out));
    }
    let kernel = kernel.ok_or("bundle needs --kernel IMAGE (or --instance SPEC / --merge FILE)")?;
    let out = out.ok_or("bundle needs -o OUT.fit")?;
    Ok(Invocation::Bundle(
        BundleSpec {
            kernel,
            initrd,
            name: name.unwrap_or_else(|| "guest".into()),
            memory: memory.unwrap_or(DEFAULT_GUEST_MEMORY),
            vcpus: vcpus.unwrap_or(1),
            bootargs: bootargs.unwrap_or_else(|| DEFAULT_BOOTARGS.into()),
        },
        out,
    ))
}

/// The keys of `--instance`'s SPEC, as the errors list them.
const INSTANCE_KEYS: &str = "name, kernel, initrd, mem, vcpus, start, cpus, weight, cmdline";

/// Parses `--instance`'s SPEC: `KEY=VALUE` fields separated by commas; `cmdline=` takes the rest
/// of the SPEC, commas and spaces included.
fn parse_instance(text: &str) -> Result<InstanceSpec, String> {
    let bad = |why: String| format!("--instance {text:?}: {why}");
    let (mut name, mut kernel, mut initrd, mut memory) = (None, None, None, None);
    let (mut vcpus, mut start, mut cpus, mut weight, mut cmdline) = (None, None, None, None, None);
    let mut rest = text;
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=').filter(|(key, _)| !key.contains(',')) else {
            let field = rest.split(',').next().unwrap_or_default();
            return Err(bad(format!(
                "{field:?} is not KEY=VALUE (keys: {INSTANCE_KEYS})"
            )));
        };
        let value = if key == "cmdline" {
            rest = "";
            after
        } else {
            let (value, next) = after.split_once(',').unwrap_or((after, ""));
            rest = next;
            value
        };
        let twice = |_| bad(format!("{key} is given twice"));
        let empty = || bad(format!("{key}= needs a value"));
        match key {
            "name" => once(&mut name, key, instance_name("name", value).map_err(bad)?),
            "kernel" if value.is_empty() => return Err(empty()),
            "kernel" => once(&mut kernel, key, PathBuf::from(value)),
            "initrd" if value.is_empty() => return Err(empty()),
            "initrd" => once(&mut initrd, key, PathBuf::from(value)),
            "mem" => once(&mut memory, key, guest_memory("mem", value).map_err(bad)?),
            "vcpus" => once(&mut vcpus, key, vcpu_count(value).map_err(bad)?),
            "start" => once(
                &mut start,
                key,
                match value {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(bad(format!("start takes yes or no, not {value:?}"))),
                },
            ),
            "cpus" => once(&mut cpus, key, cpu_mask(value).map_err(bad)?),
            "weight" => once(&mut weight, key, weight_value(value).map_err(bad)?),
            "cmdline" => once(&mut cmdline, key, value.to_string()),
            _ => return Err(bad(format!("no key {key:?} (keys: {INSTANCE_KEYS})"))),
        }
        .map_err(twice)?;
    }
    let name = name.ok_or_else(|| bad("name=NAME is required".into()))?;
    Ok(InstanceSpec {
        spec: BundleSpec {
            kernel: kernel.ok_or_else(|| bad("kernel=IMAGE is required".into()))?,
            initrd,
            name,
            memory: memory.unwrap_or(DEFAULT_GUEST_MEMORY),
            vcpus: vcpus.unwrap_or(1),
            bootargs: cmdline.unwrap_or_else(|| DEFAULT_BOOTARGS.into()),
        },
        start_at_boot: start.unwrap_or(true),
        cpus,
        weight: weight.unwrap_or(DEFAULT_WEIGHT),
    })
}

/// `cpus=`: a bitmask of host CPUs, hexadecimal with `0x` or decimal, with at least one bit and
/// none beyond the CPUs the hypervisor runs on.
fn cpu_mask(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    let mask = parsed.map_err(|_| {
        format!("cpus takes a bitmask of host CPUs such as 0x3 (CPUs 0 and 1), not {text:?}")
    })?;
    if mask == 0 {
        return Err("cpus=0 allows no CPU: give at least one bit".into());
    }
    if mask >> MAX_CPUS != 0 {
        return Err(format!(
            "cpus={text}: the hypervisor runs on at most {MAX_CPUS} CPUs (bits 0 to {})",
            MAX_CPUS - 1
        ));
    }
    Ok(mask)
}

/// `weight=`: 1 to 65535.
fn weight_value(text: &str) -> Result<u32, String> {
    match text.parse() {
        Ok(weight) if (1..=MAX_WEIGHT).contains(&weight) => Ok(weight),
        _ => Err(format!(
            "weight takes a number from 1 to {MAX_WEIGHT}, not {text:?}"
        )),
    }
}

fn parse_inspect(args: &[String]) -> Result<Invocation, String> {
    let mut file = None;
    let mut options = Options::new("inspect", args);
    while let Some(option) = options.next() {
        match option {
            "-h" | "--help" => return Ok(options.help()),
            other if other.starts_with('-') => return Err(options.unknown(other)),
            other => {
                if file.is_some() {
                    return Err("inspect takes one FILE".into());
                }
                file = Some(PathBuf::from(other));
            }
        }
    }
    Ok(Invocation::Inspect(file.ok_or("inspect needs a FILE")?))
}

/// `--port`'s value: 1 to 65535, or 0 (any free port) for `recv`.
fn port_number(form: &str, text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) if form == "recv" => Ok(0),
        Ok(port) if port != 0 => Ok(port),
        _ => Err(format!(
            "--port takes a port number from 1 to 65535{}, not {text:?}",
            if form == "recv" {
                " (or 0: any free port)"
            } else {
                ""
            }
        )),
    }
}

/// `--timeout`'s value: whole seconds, at least 1.
fn timeout_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(format!(
            "--timeout takes a number of seconds, at least 1, not {text:?}"
        )),
    }
}

fn parse_checkpoint(args: &[String]) -> Result<Invocation, String> {
    let mut options = Options::new("checkpoint", args);
    let form = match options.next() {
        None => {
            return Err(
                "checkpoint needs recv, send or inspect (`cargo xtask checkpoint --help`)".into(),
            );
        }
        Some("-h" | "--help") => return Ok(options.help()),
        Some(form @ ("recv" | "send" | "inspect")) => form,
        Some(other) => {
            return Err(format!(
                "checkpoint has no form {other:?}: it is recv, send or inspect"
            ));
        }
    };
    let (mut file, mut port, mut timeout) = (None, None, None);
    while let Some(option) = options.next() {
        match option {
            "-h" | "--help" => return Ok(options.help()),
            "--port" | "--timeout" if form == "inspect" => {
                return Err(format!(
                    "{option} is for checkpoint recv and send, not inspect"
                ));
            }
            "--port" => once(
                &mut port,
                option,
                port_number(form, options.value(option)?)?,
            )?,
            "--timeout" => once(
                &mut timeout,
                option,
                timeout_seconds(options.value(option)?)?,
            )?,
            other if other.starts_with('-') => return Err(options.unknown(other)),
            other => {
                if file.is_some() {
                    return Err(format!("checkpoint {form} takes one FILE"));
                }
                file = Some(PathBuf::from(other));
            }
        }
    }
    let file = file.ok_or_else(|| format!("checkpoint {form} needs a FILE"))?;
    Ok(Invocation::Checkpoint(match form {
        "recv" => CheckpointCommand::Recv {
            file,
            port: port.unwrap_or(DEFAULT_RECV_PORT),
            timeout: timeout.unwrap_or(DEFAULT_RECV_TIMEOUT),
        },
        "send" => CheckpointCommand::Send {
            file,
            port: port.unwrap_or(DEFAULT_SEND_PORT),
            timeout: timeout.unwrap_or(DEFAULT_SEND_TIMEOUT),
        },
        _ => CheckpointCommand::Inspect(file),
    }))
}

fn parse_linux_guest(args: &[String]) -> Result<Invocation, String> {
    let mut vcpus = None;
    let mut options = Options::new("linux-guest", args);
    while let Some(option) = options.next() {
        match option {
            "-h" | "--help" => return Ok(options.help()),
            "--vcpus" => once(&mut vcpus, option, vcpu_count(options.value(option)?)?)?,
            other => return Err(options.unknown(other)),
        }
    }
    Ok(Invocation::LinuxGuest(vcpus.unwrap_or(1)))
}

fn parse_bench(args: &[String]) -> Result<Invocation, String> {
    // `bench migrate` is `bench --only migrate`.
    if let [what, rest @ ..] = args
        && what == "migrate"
    {
        let mut words = vec!["--only".to_string(), what.clone()];
        words.extend_from_slice(rest);
        return parse_bench(&words);
    }
    let mut only = None;
    let mut options = Options::new("bench", args);
    while let Some(option) = options.next() {
        match option {
            "-h" | "--help" => return Ok(options.help()),
            "--only" => once(&mut only, option, options.value(option)?)?,
            other => return Err(options.unknown(other)),
        }
    }
    let (micro, linux, migrate) = match only {
        None => (true, true, true),
        Some("micro") => (true, false, false),
        Some("linux") => (false, true, false),
        Some("migrate") => (false, false, true),
        Some(other) => {
            return Err(format!(
                "--only takes micro, linux or migrate, not {other:?}"
            ));
        }
    };
    Ok(Invocation::Bench(Selection {
        micro,
        linux,
        migrate,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(words: &str) -> Result<Invocation, String> {
        let args: Vec<String> = words.split_whitespace().map(String::from).collect();
        parse(&args)
    }

    fn run(words: &str) -> Result<RunOptions, String> {
        match parse_words(&format!("run {words}"))? {
            Invocation::Run(options) => Ok(options),
            other => panic!("run {words}: {other:?}"),
        }
    }

    fn error(words: &str) -> String {
        let error = parse_words(words).expect_err(words);
        assert!(!error.is_empty(), "{words}");
        error
    }

    #[test]
    fn help_everywhere() {
        for words in ["--help", "-h", "help"] {
            assert_eq!(parse_words(words), Ok(Invocation::Help(usage())), "{words}");
        }
        for command in [
            "build",
            "run",
            "test",
            "bundle",
            "inspect",
            "checkpoint",
            "linux-guest",
            "bench",
            "help",
        ] {
            let own = command_usage(command).unwrap();
            assert!(
                own.starts_with(&format!("usage: cargo xtask {command}")),
                "{own}"
            );
            for flag in ["--help", "-h"] {
                if command != "help" {
                    let words = format!("{command} {flag}");
                    assert_eq!(
                        parse_words(&words),
                        Ok(Invocation::Help(own.clone())),
                        "{words}"
                    );
                }
            }
            assert_eq!(
                parse_words(&format!("help {command}")),
                Ok(Invocation::Help(own))
            );
        }
        // Help wins wherever an option may stand, but not as an option's value.
        assert!(matches!(
            parse_words("run --vcpus 2 -h"),
            Ok(Invocation::Help(text)) if text.contains("--guest FILE")
        ));
        let words: Vec<String> = ["bundle", "--kernel", "k", "--bootargs", "-h", "-o", "o.fit"]
            .map(String::from)
            .into();
        assert!(matches!(parse(&words), Ok(Invocation::Bundle(spec, _)) if spec.bootargs == "-h"));
    }

    #[test]
    fn no_or_unknown_command_is_an_error_with_the_usage() {
        assert_eq!(parse(&[]), Err(format!("no command given\n\n{}", usage())));
        assert!(error("frobnicate").ends_with(&usage()));
        assert!(error("help frobnicate").contains("unknown command"));
        assert!(error("build now").contains("no option \"now\""));
        assert_eq!(parse_words("build"), Ok(Invocation::Build(None)));
        assert_eq!(
            parse_words("build --platform rpi4 --sd card"),
            Ok(Invocation::Build(Some("card".into())))
        );
        for (words, reason) in [
            ("build --platform rpi4", "needs --sd DIR"),
            ("build --sd card", "--sd needs --platform rpi4"),
            (
                "build --platform pi5 --sd card",
                "the platform with boot files of its own is rpi4",
            ),
            ("build --sd a --sd b --platform rpi4", "given twice"),
        ] {
            assert!(error(words).contains(reason), "{words}: {}", error(words));
        }
        assert!(error("test --release").contains("takes no arguments"));
    }

    #[test]
    fn usage_names_every_command_and_option() {
        let text = usage();
        assert!(text.lines().all(|line| line == line.trim_end()), "{text}");
        for command in &COMMANDS {
            let line = format!("  {} {}", command.name, command.arguments);
            assert!(text.contains(line.trim_end()), "{line}");
            if !command.alternative.is_empty() {
                let line = format!("  {} {}\n", command.name, command.alternative);
                assert!(text.contains(&line), "{line}");
                let own = command_usage(command.name).unwrap();
                let line = format!(
                    "\n       cargo xtask {} {}\n",
                    command.name, command.alternative
                );
                assert!(own.contains(&line), "{own}");
            }
            let own = command_usage(command.name).unwrap();
            assert!(own.lines().all(|line| line == line.trim_end()), "{own}");
        }
        let run = command_usage("run").unwrap();
        for option in [
            "--kernel", "--initrd", "--guest", "--vcpus", "--smp", "--mem", "--gic", "--board",
        ] {
            assert!(run.contains(option), "{option}");
        }
        let bundle = command_usage("bundle").unwrap();
        for option in [
            "--kernel",
            "--initrd",
            "--name",
            "--mem",
            "--vcpus",
            "--bootargs",
            "--instance",
            "--merge",
            "-o",
            "name=",
            "kernel=",
            "initrd=",
            "mem=",
            "vcpus=",
            "start=",
            "cpus=",
            "weight=",
            "cmdline=",
        ] {
            assert!(bundle.contains(option), "{option}");
        }
        for key in INSTANCE_KEYS.split(", ") {
            assert!(bundle.contains(&format!("{key}=")), "{key}");
        }
        assert!(usage().contains("  inspect FILE\n"));
        assert!(usage().contains(
            "  checkpoint recv|send FILE [--port N] [--timeout SECS]\n  checkpoint inspect FILE\n"
        ));
        let checkpoint = command_usage("checkpoint").unwrap();
        for text in [
            "--port N",
            "--timeout SECS",
            "7070",
            "7071",
            "600",
            "60)",
            "listening on",
        ] {
            assert!(checkpoint.contains(text), "{text}");
        }
    }

    #[test]
    fn run_defaults_and_guests() {
        assert_eq!(
            run(""),
            Ok(RunOptions {
                guest: RunGuest::Linux { vcpus: 2 },
                smp: None,
                memory_mib: 1024,
                gic_version: 3,
                rpi4: false
            })
        );
        assert_eq!(
            run("--kernel Image --initrd rd --vcpus 4 --smp 8 --mem 2048"),
            Ok(RunOptions {
                guest: RunGuest::Kernel {
                    kernel: "Image".into(),
                    initrd: Some("rd".into()),
                    vcpus: 4
                },
                smp: Some(8),
                memory_mib: 2048,
                gic_version: 3,
                rpi4: false
            })
        );
        assert_eq!(
            run("--guest g.fit --smp 3 --mem 128").map(|o| (o.guest, o.smp)),
            Ok((RunGuest::File("g.fit".into()), Some(3)))
        );
        assert_eq!(run("--vcpus 8").map(|o| o.smp), Ok(None));
        assert_eq!(run("--vcpus 1 --smp 1").map(|o| o.smp), Ok(Some(1)));
        assert_eq!(run("--gic 2").map(|o| o.gic_version), Ok(2));
        assert_eq!(run("--gic 3").map(|o| o.gic_version), Ok(3));
        assert_eq!(run("--board rpi4").map(|o| o.rpi4), Ok(true));
        assert_eq!(run("--board virt --gic 2").map(|o| o.rpi4), Ok(false));
    }

    #[test]
    fn meaningless_run_options_are_errors() {
        for (words, reason) in [
            ("--initrd rd", "--initrd needs --kernel"),
            ("--guest g --kernel k", "does not go with --kernel"),
            (
                "--guest g --initrd rd",
                "does not go with --kernel or --initrd",
            ),
            ("--guest g --vcpus 2", "--vcpus does not apply to --guest"),
            ("--vcpus 0", "at least 1 vCPU"),
            ("--vcpus 9", "at most 8 vCPUs"),
            ("--vcpus two", "takes a number"),
            ("--vcpus -1", "takes a number"),
            ("--smp 0", "1 to 8 CPUs"),
            ("--smp 9", "1 to 8 CPUs"),
            ("--mem 127", "at least 128 MiB"),
            ("--mem 64M", "takes a number"),
            ("--gic 4", "version 2 or 3"),
            ("--gic 2 --gic 3", "given twice"),
            ("--board pi5", "the boards are virt"),
            (
                "--board rpi4 --smp 2",
                "--smp does not apply to --board rpi4",
            ),
            ("--board rpi4 --mem 1024", "--mem does not apply"),
            ("--board rpi4 --gic 3", "--gic does not apply"),
            ("--kernel", "needs a value"),
            ("--vcpus 1 --vcpus 2", "given twice"),
            ("--frobnicate", "no option \"--frobnicate\""),
            ("extra", "no option \"extra\""),
        ] {
            let error = error(&format!("run {words}"));
            assert!(error.contains(reason), "run {words}: {error}");
            assert!(!error.contains('\n'), "run {words}: {error}");
        }
        assert_eq!(run("--mem 128").map(|o| o.memory_mib), Ok(128));
        assert_eq!(
            run("--vcpus 4 --smp 2").map(|o| o.smp),
            Ok(Some(2)),
            "more vCPUs than host CPUs: the hypervisor schedules them"
        );
    }

    #[test]
    fn bundle_options() {
        let bundle = |words: &str| match parse_words(&format!("bundle {words}")) {
            Ok(Invocation::Bundle(spec, out)) => Ok((spec, out)),
            Ok(other) => panic!("{other:?}"),
            Err(error) => Err(error),
        };
        let (spec, out) = bundle("--kernel Image -o out.fit").unwrap();
        assert_eq!(
            spec,
            BundleSpec {
                kernel: "Image".into(),
                initrd: None,
                name: "guest".into(),
                memory: 128 << 20,
                vcpus: 1,
                bootargs: "console=ttyAMA0".into(),
            }
        );
        assert_eq!(out, PathBuf::from("out.fit"));
        let (spec, out) = bundle(
            "--kernel K --initrd R --name vm-1.a_b --mem 2M --vcpus 8 --bootargs quiet --output o",
        )
        .unwrap();
        assert_eq!(
            (spec.initrd, spec.name.as_str(), spec.memory, spec.vcpus),
            (Some("R".into()), "vm-1.a_b", 2 << 20, 8)
        );
        assert_eq!((spec.bootargs.as_str(), out), ("quiet", "o".into()));
        assert_eq!(
            bundle("--kernel K -o o --mem 1G").unwrap().0.memory,
            1 << 30
        );
        assert_eq!(
            bundle("--kernel K -o o --mem 4194304").unwrap().0.memory,
            4 << 20
        );

        for (words, reason) in [
            ("-o o", "needs --kernel"),
            ("--kernel K", "needs -o"),
            ("--kernel K -o o --vcpus 0", "at least 1 vCPU"),
            ("--kernel K -o o --vcpus 9", "at most 8 vCPUs"),
            ("--kernel K -o o --name -x", "starts with a letter or digit"),
            ("--kernel K -o o --name a/b", "only letters, digits"),
            (
                "--kernel K -o o --name 123456789012345678901234567890123",
                "1 to 32 characters",
            ),
            ("--kernel K -o o --mem 0", "nonzero multiple of 2 MiB"),
            ("--kernel K -o o --mem 1M", "nonzero multiple of 2 MiB"),
            ("--kernel K -o o --mem 3M", "nonzero multiple of 2 MiB"),
            ("--kernel K -o o --mem 12X", "bad size"),
            ("--kernel K -o o -o p", "given twice"),
            ("--kernel K -o o --smp 2", "no option \"--smp\""),
        ] {
            let error = bundle(words).expect_err(words);
            assert!(error.contains(reason), "bundle {words}: {error}");
            assert!(!error.contains('\n'), "bundle {words}: {error}");
        }
    }

    #[test]
    fn linux_guest_and_bench_options() {
        assert_eq!(parse_words("linux-guest"), Ok(Invocation::LinuxGuest(1)));
        assert_eq!(
            parse_words("linux-guest --vcpus 4"),
            Ok(Invocation::LinuxGuest(4))
        );
        assert!(error("linux-guest --vcpus 0").contains("at least 1 vCPU"));
        assert!(error("linux-guest --vcpus 9").contains("at most 8 vCPUs"));
        assert!(error("linux-guest 4").contains("no option"));
        let selection = |micro, linux, migrate| {
            Ok(Invocation::Bench(Selection {
                micro,
                linux,
                migrate,
            }))
        };
        assert_eq!(parse_words("bench"), selection(true, true, true));
        assert_eq!(
            parse_words("bench --only micro"),
            selection(true, false, false)
        );
        assert_eq!(
            parse_words("bench --only linux"),
            selection(false, true, false)
        );
        assert_eq!(
            parse_words("bench --only migrate"),
            selection(false, false, true)
        );
        assert_eq!(parse_words("bench migrate"), selection(false, false, true));
        assert!(error("bench --only both").contains("micro, linux or migrate"));
        assert!(error("bench migrate --only micro").contains("given twice"));
        assert!(error("bench --only micro --only linux").contains("given twice"));
        assert!(error("bench --only").contains("needs a value"));
        assert!(error("bench --fast").contains("no option"));
    }

    fn words(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| word.to_string()).collect()
    }

    fn board(args: &[&str]) -> Result<(Vec<BoardPart>, PathBuf), String> {
        let mut all = vec!["bundle"];
        all.extend_from_slice(args);
        match parse(&words(&all))? {
            Invocation::BoardBundle(parts, out) => Ok((parts, out)),
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn instance(spec: &str) -> Result<InstanceSpec, String> {
        match board(&["--instance", spec, "-o", "o.fit"])?.0.as_slice() {
            [BoardPart::Instance(instance)] => Ok(instance.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn board_bundle_options() {
        let (parts, out) = board(&[
            "--instance",
            "name=web,kernel=K,initrd=I,mem=256M,vcpus=2,start=no,cpus=0x3,weight=512,\
             cmdline=console=ttyAMA0 root=/dev/vda ro,quiet=1",
            "--merge",
            "a.fit",
            "--instance",
            "name=db,kernel=K",
            "--merge",
            "b.fit",
            "-o",
            "board.fit",
        ])
        .unwrap();
        assert_eq!(out, PathBuf::from("board.fit"));
        assert_eq!(
            parts,
            [
                BoardPart::Instance(InstanceSpec {
                    spec: BundleSpec {
                        kernel: "K".into(),
                        initrd: Some("I".into()),
                        name: "web".into(),
                        memory: 256 << 20,
                        vcpus: 2,
                        bootargs: "console=ttyAMA0 root=/dev/vda ro,quiet=1".into(),
                    },
                    start_at_boot: false,
                    cpus: Some(3),
                    weight: 512,
                }),
                BoardPart::Merge("a.fit".into()),
                BoardPart::Instance(InstanceSpec {
                    spec: BundleSpec {
                        kernel: "K".into(),
                        initrd: None,
                        name: "db".into(),
                        memory: 128 << 20,
                        vcpus: 1,
                        bootargs: "console=ttyAMA0".into(),
                    },
                    start_at_boot: true,
                    cpus: None,
                    weight: 256,
                }),
                BoardPart::Merge("b.fit".into()),
            ]
        );
        // Only merges; an empty command line; cmdline anywhere but last swallows the rest.
        assert_eq!(
            board(&["--merge", "a.fit", "--merge", "a.fit", "-o", "o"])
                .unwrap()
                .0
                .len(),
            2
        );
        assert_eq!(
            instance("name=a,kernel=K,cmdline=").unwrap().spec.bootargs,
            ""
        );
        let swallowed = instance("name=a,cmdline=x=1,kernel=K");
        assert!(swallowed.unwrap_err().contains("kernel=IMAGE is required"));
        // Decimal masks, the whole range of weights, a trailing comma.
        let spec = instance("cpus=255,weight=65535,name=a,kernel=K,start=yes,").unwrap();
        assert_eq!(
            (spec.cpus, spec.weight, spec.start_at_boot),
            (Some(255), 65535, true)
        );
        assert_eq!(instance("name=a,kernel=K,weight=1").unwrap().weight, 1);
    }

    #[test]
    fn bad_board_bundle_options() {
        for (spec, reason) in [
            ("kernel=K", "name=NAME is required"),
            ("name=a", "kernel=IMAGE is required"),
            ("name=a,kernel=", "kernel= needs a value"),
            ("name=a,kernel=K,initrd=", "initrd= needs a value"),
            ("name=a,kernel=K,name=b", "name is given twice"),
            ("name=a,kernel=K,colour=red", "no key \"colour\""),
            ("name=a,kernel=K,quiet", "\"quiet\" is not KEY=VALUE"),
            ("name=a,quiet,kernel=K", "\"quiet\" is not KEY=VALUE"),
            ("name=a,,kernel=K", "\"\" is not KEY=VALUE"),
            ("", "name=NAME is required"),
            ("name=-a,kernel=K", "starts with a letter or digit"),
            ("name=a b,kernel=K", "only letters, digits"),
            ("name=a,kernel=K,mem=3M", "nonzero multiple of 2 MiB"),
            ("name=a,kernel=K,mem=lots", "bad size"),
            ("name=a,kernel=K,vcpus=0", "at least 1 vCPU"),
            ("name=a,kernel=K,vcpus=9", "at most 8 vCPUs"),
            ("name=a,kernel=K,start=maybe", "start takes yes or no"),
            ("name=a,kernel=K,cpus=0", "allows no CPU"),
            ("name=a,kernel=K,cpus=0x0", "allows no CPU"),
            ("name=a,kernel=K,cpus=0x100", "at most 8 CPUs"),
            ("name=a,kernel=K,cpus=0-3", "bitmask of host CPUs"),
            ("name=a,kernel=K,weight=0", "1 to 65535"),
            ("name=a,kernel=K,weight=65536", "1 to 65535"),
            ("name=a,kernel=K,weight=heavy", "1 to 65535"),
        ] {
            let error = instance(spec).expect_err(spec);
            assert!(error.contains(reason), "{spec}: {error}");
            assert!(error.starts_with("--instance"), "{spec}: {error}");
            assert!(!error.contains('\n'), "{spec}: {error}");
        }
        for (args, reason) in [
            (
                &[
                    "--instance",
                    "name=a,kernel=K",
                    "--instance",
                    "name=a,kernel=L",
                    "-o",
                    "o",
                ][..],
                "name=a is given twice",
            ),
            (&["--instance", "name=a,kernel=K"], "needs -o"),
            (&["--merge", "a.fit"], "needs -o"),
            (&["--instance"], "needs a value"),
            (&["--merge"], "needs a value"),
            (
                &["--instance", "name=a,kernel=K", "--kernel", "K", "-o", "o"],
                "--kernel is for a bundle of one guest",
            ),
            (
                &["--merge", "a.fit", "--bootargs", "quiet", "-o", "o"],
                "--bootargs is for a bundle of one guest",
            ),
            (
                &["--name", "x", "--merge", "a.fit", "-o", "o"],
                "--name is for a bundle of one guest",
            ),
            (
                &["-o", "o"],
                "needs --kernel IMAGE (or --instance SPEC / --merge FILE)",
            ),
        ] {
            let mut all = vec!["bundle"];
            all.extend_from_slice(args);
            let error = parse(&words(&all)).expect_err(&all.join(" "));
            assert!(error.contains(reason), "{args:?}: {error}");
            assert!(!error.contains('\n'), "{args:?}: {error}");
        }
    }

    #[test]
    fn inspect_options() {
        assert_eq!(
            parse_words("inspect board.fit"),
            Ok(Invocation::Inspect("board.fit".into()))
        );
        assert!(error("inspect").contains("needs a FILE"));
        assert!(error("inspect a.fit b.fit").contains("takes one FILE"));
        assert!(error("inspect --all a.fit").contains("no option \"--all\""));
        assert!(matches!(
            parse_words("inspect a.fit --help"),
            Ok(Invocation::Help(text)) if text.starts_with("usage: cargo xtask inspect FILE")
        ));
    }

    fn checkpoint(words: &str) -> Result<CheckpointCommand, String> {
        match parse_words(&format!("checkpoint {words}"))? {
            Invocation::Checkpoint(command) => Ok(command),
            other => panic!("checkpoint {words}: {other:?}"),
        }
    }

    #[test]
    fn checkpoint_options() {
        assert_eq!(
            checkpoint("recv saved.ckpt"),
            Ok(CheckpointCommand::Recv {
                file: "saved.ckpt".into(),
                port: 7071,
                timeout: Duration::from_secs(600)
            })
        );
        assert_eq!(
            checkpoint("recv --port 0 --timeout 5 saved.ckpt"),
            Ok(CheckpointCommand::Recv {
                file: "saved.ckpt".into(),
                port: 0,
                timeout: Duration::from_secs(5)
            })
        );
        assert_eq!(
            checkpoint("send saved.ckpt"),
            Ok(CheckpointCommand::Send {
                file: "saved.ckpt".into(),
                port: 7070,
                timeout: Duration::from_secs(60)
            })
        );
        assert_eq!(
            checkpoint("send s.ckpt --port 65535 --timeout 1"),
            Ok(CheckpointCommand::Send {
                file: "s.ckpt".into(),
                port: 65535,
                timeout: Duration::from_secs(1)
            })
        );
        assert_eq!(
            checkpoint("inspect s.ckpt"),
            Ok(CheckpointCommand::Inspect("s.ckpt".into()))
        );
        for words in [
            "checkpoint --help",
            "checkpoint -h",
            "checkpoint send --help",
            "checkpoint inspect a -h",
        ] {
            assert!(
                matches!(
                    parse_words(words),
                    Ok(Invocation::Help(text)) if text.starts_with(
                        "usage: cargo xtask checkpoint recv|send FILE [--port N] [--timeout SECS]\n       \
                         cargo xtask checkpoint inspect FILE\n"
                    )
                ),
                "{words}"
            );
        }

        for (words, reason) in [
            ("", "needs recv, send or inspect"),
            ("save a", "no form \"save\""),
            ("recv", "checkpoint recv needs a FILE"),
            ("send --port 7070", "checkpoint send needs a FILE"),
            ("inspect", "checkpoint inspect needs a FILE"),
            ("recv a b", "takes one FILE"),
            ("inspect a b", "takes one FILE"),
            ("recv a --port", "needs a value"),
            ("recv a --port 65536", "port number from 1 to 65535 (or 0"),
            ("recv a --port -1", "port number"),
            ("recv a --port http", "port number"),
            ("send a --port 0", "port number from 1 to 65535, not \"0\""),
            ("send a --port 1 --port 2", "given twice"),
            ("send a --timeout 0", "at least 1"),
            ("send a --timeout 1.5", "number of seconds"),
            ("recv a --timeout", "needs a value"),
            (
                "inspect a --port 7070",
                "--port is for checkpoint recv and send",
            ),
            (
                "inspect a --timeout 1",
                "--timeout is for checkpoint recv and send",
            ),
            ("recv a --verbose", "no option \"--verbose\""),
        ] {
            let error = checkpoint(words).expect_err(words);
            assert!(error.contains(reason), "checkpoint {words}: {error}");
            assert!(!error.contains('\n'), "checkpoint {words}: {error}");
        }
    }
}
