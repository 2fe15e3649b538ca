//! The board's management shell, without its hardware: the line editor that turns typed bytes
//! into lines, the parser that turns a line into a typed [`Request`], and the rendering of each
//! answer as text for the operator or as one line of JSON for programs.
//!
//! The caller (the board console, or the second UART that speaks only JSON) feeds bytes to a
//! [`LineEditor`], writes back [`Edit::echo`], [`parse`]s each completed line, carries the
//! [`Command`] out against its instance table, fills a [`Reply`] from plain data structs
//! ([`InstanceRow`], [`InstanceInfo`], [`MemoryInfo`]) and writes [`Request::render`].
//!
//! ```text
//! list                  info NAME        pause NAME     resume NAME
//! destroy NAME          restart NAME     start NAME     free           help
//! migrate NAME HOST     migrate-status   migrate-cancel listen  save NAME  restore
//! ```
//!
//! Every command takes `--json` anywhere on the line, or a leading `json` word, and then answers
//! with one line of JSON: `{"ok":true,"command":"list","instances":[...]}` or
//! `{"ok":false,"command":"pause","error":"no instance named x"}`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::pl011::escape_controls;

/// The prompt the board console shows while the keyboard is on the shell.
pub const PROMPT: &str = "el2> ";

/// Longest line the editor takes, in bytes; further characters ring the bell and are dropped.
pub const MAX_LINE: usize = 256;

/// What one byte did to the line being edited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Nothing (a control byte, part of an escape sequence, backspace on an empty line).
    Ignored,
    /// This printable character was added to the line.
    Insert(u8),
    /// The last character was erased.
    Erase,
    /// The line is full ([`MAX_LINE`]); the character was dropped.
    Full,
    /// Ctrl-C: the line was thrown away.
    Cancel,
    /// CR or LF ended this line (without its terminator; possibly empty).
    Line(String),
}

impl Edit {
    /// What to write back to the terminal for this edit. Line ends are `\n` (the board console
    /// writes `\r\n` for it).
    pub fn echo(&self) -> &[u8] {
        match self {
            Self::Ignored => b"",
            Self::Insert(byte) => core::slice::from_ref(byte),
            Self::Erase => b"\x08 \x08",
            Self::Full => b"\x07",
            Self::Cancel => b"^C\n",
            Self::Line(_) => b"\n",
        }
    }
}

/// Where the editor is in a terminal escape sequence (arrow keys and the like send them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Started,
    /// After `ESC [` or `ESC O`: parameter bytes until a final byte.
    Sequence,
}

/// The shell's line editor: printable ASCII up to [`MAX_LINE`] bytes, backspace (0x08 or 0x7f),
/// Ctrl-C to drop the line, CR, LF or CR LF to end it. Other control bytes, bytes above 0x7e and
/// terminal escape sequences (arrow keys, function keys) are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineEditor {
    line: String,
    /// The last byte was a CR: an LF right after it ends no second line.
    after_cr: bool,
    escape: Escape,
}

impl Default for LineEditor {
    fn default() -> Self {
        Self::new()
    }
}

impl LineEditor {
    /// An empty line.
    pub const fn new() -> Self {
        Self {
            line: String::new(),
            after_cr: false,
            escape: Escape::None,
        }
    }

    /// Takes one typed byte.
    pub fn feed(&mut self, byte: u8) -> Edit {
        let after_cr = core::mem::take(&mut self.after_cr);
        match self.escape {
            Escape::Started => {
                self.escape = Escape::None;
                match byte {
                    b'[' | b'O' => {
                        self.escape = Escape::Sequence;
                        return Edit::Ignored;
                    }
                    // Alt plus a key.
                    0x20..=0x7e => return Edit::Ignored,
                    _ => {}
                }
            }
            Escape::Sequence => match byte {
                0x20..=0x3f => return Edit::Ignored,
                0x40..=0x7e => {
                    self.escape = Escape::None;
                    return Edit::Ignored;
                }
                _ => self.escape = Escape::None,
            },
            Escape::None => {}
        }
        match byte {
            b'\r' => {
                self.after_cr = true;
                Edit::Line(core::mem::take(&mut self.line))
            }
            b'\n' if after_cr => Edit::Ignored,
            b'\n' => Edit::Line(core::mem::take(&mut self.line)),
            0x08 | 0x7f => match self.line.pop() {
                Some(_) => Edit::Erase,
                None => Edit::Ignored,
            },
            0x03 => {
                self.line.clear();
                Edit::Cancel
            }
            0x1b => {
                self.escape = Escape::Started;
                Edit::Ignored
            }
            0x20..=0x7e if self.line.len() >= MAX_LINE => Edit::Full,
            0x20..=0x7e => {
                self.line.push(char::from(byte));
                Edit::Insert(byte)
            }
            _ => Edit::Ignored,
        }
    }

    /// The line typed so far (to redraw it after output interrupted the prompt).
    pub fn pending(&self) -> &str {
        &self.line
    }

    /// Throws the line typed so far away.
    pub fn clear(&mut self) {
        self.line.clear();
        self.escape = Escape::None;
    }
}

/// A shell command with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `list`: every instance with its state, vCPUs, RAM and CPU time.
    List,
    /// `info NAME`: one instance in detail.
    Info(String),
    /// `pause NAME`: stop running the instance's vCPUs, keeping its state.
    Pause(String),
    /// `resume NAME`: run a paused instance again.
    Resume(String),
    /// `destroy NAME`: stop the instance at once and free its memory.
    Destroy(String),
    /// `restart NAME`: reset the instance and boot it again.
    Restart(String),
    /// `start NAME`: boot a stopped instance.
    Start(String),
    /// `free`: the board's memory.
    Free,
    /// `help`: the commands.
    Help,
    /// `migrate NAME HOST`: move a running instance to another board.
    Migrate {
        /// The instance.
        name: String,
        /// The board to move it to.
        host: String,
    },
    /// `migrate-status`: how the current migration is going.
    MigrateStatus,
    /// `migrate-cancel`: stop the current migration; the instance keeps running here.
    MigrateCancel,
    /// `listen`: wait for an instance migrated from another board.
    Listen,
    /// `save NAME`: write the instance's state out.
    Save(String),
    /// `restore`: start an instance from saved state.
    Restore,
    /// `poweroff`: stop every instance and power the board off.
    PowerOff,
}

impl Command {
    /// The command's word, as typed and as the `"command"` field of its JSON reply.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Info(_) => "info",
            Self::Pause(_) => "pause",
            Self::Resume(_) => "resume",
            Self::Destroy(_) => "destroy",
            Self::Restart(_) => "restart",
            Self::Start(_) => "start",
            Self::Free => "free",
            Self::Help => "help",
            Self::Migrate { .. } => "migrate",
            Self::MigrateStatus => "migrate-status",
            Self::MigrateCancel => "migrate-cancel",
            Self::Listen => "listen",
            Self::Save(_) => "save",
            Self::Restore => "restore",
            Self::PowerOff => "poweroff",
        }
    }

    /// The instance the command names, if it names one.
    pub fn instance(&self) -> Option<&str> {
        match self {
            Self::Info(name)
            | Self::Pause(name)
            | Self::Resume(name)
            | Self::Destroy(name)
            | Self::Restart(name)
            | Self::Start(name)
            | Self::Save(name)
            | Self::Migrate { name, .. } => Some(name),
            Self::List
            | Self::Free
            | Self::Help
            | Self::MigrateStatus
            | Self::MigrateCancel
            | Self::Listen
            | Self::Restore
            | Self::PowerOff => None,
        }
    }
}

/// A parsed line: the command, and whether the answer is wanted as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub command: Command,
    /// Answer with one line of JSON (`--json`, or a leading `json` word).
    pub json: bool,
}

impl Request {
    /// The answer to this request, in the form it asked for (without a final newline).
    pub fn render(&self, reply: &Reply) -> String {
        if self.json {
            reply.to_json(self.command.name())
        } else {
            reply.to_human()
        }
    }
}

/// A line that is not a valid command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The command word as typed (empty if the line had none), for the JSON reply.
    pub command: String,
    /// The line asked for a JSON answer.
    pub json: bool,
    /// One line saying what is wrong.
    pub message: String,
}

impl ParseError {
    /// The error as a reply.
    pub fn reply(&self) -> Reply {
        Reply::Error(self.message.clone())
    }

    /// The error as one line of JSON, whatever the line asked for (for the JSON-only UART).
    pub fn to_json(&self) -> String {
        self.reply().to_json(&self.command)
    }

    /// The error in the form the line asked for (without a final newline).
    pub fn render(&self) -> String {
        if self.json {
            self.to_json()
        } else {
            self.reply().to_human()
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// One command for `help`: how it is typed and what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CommandHelp {
    /// The command word and its arguments, e.g. `info NAME`.
    pub usage: &'static str,
    /// One line about it.
    pub about: &'static str,
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[CommandHelp] = &[
    CommandHelp {
        usage: "list",
        about: "instances with their state, vCPUs, RAM and CPU time",
    },
    CommandHelp {
        usage: "info NAME",
        about: "one instance: its vCPUs, exits by reason, interrupts and run time",
    },
    CommandHelp {
        usage: "pause NAME",
        about: "stop running the instance's vCPUs, keeping its state",
    },
    CommandHelp {
        usage: "resume NAME",
        about: "run a paused instance again",
    },
    CommandHelp {
        usage: "destroy NAME",
        about: "stop the instance at once and free its memory",
    },
    CommandHelp {
        usage: "restart NAME",
        about: "reset the instance and boot it again",
    },
    CommandHelp {
        usage: "start NAME",
        about: "boot a stopped instance",
    },
    CommandHelp {
        usage: "free",
        about: "the board's memory: total, free and the largest free block",
    },
    CommandHelp {
        usage: "help",
        about: "this list",
    },
    CommandHelp {
        usage: "migrate NAME HOST",
        about: "move a running instance to the board at HOST (ADDRESS[:PORT]) while it runs",
    },
    CommandHelp {
        usage: "migrate-status",
        about: "how the current move is going, and how the last one ended",
    },
    CommandHelp {
        usage: "migrate-cancel",
        about: "stop the current move; the instance keeps running here",
    },
    CommandHelp {
        usage: "listen",
        about: "accept instances moved from other boards (port 7070)",
    },
    CommandHelp {
        usage: "save NAME",
        about: "stream the instance's checkpoint to the host (cargo xtask checkpoint recv); it runs on",
    },
    CommandHelp {
        usage: "restore",
        about: "accept one checkpoint (cargo xtask checkpoint send) and start its instance",
    },
    CommandHelp {
        usage: "poweroff",
        about: "stop every instance and power the board off",
    },
];

/// How the command `word` is typed, if it is a command.
fn usage(word: &str) -> Option<&'static str> {
    COMMANDS
        .iter()
        .map(|help| help.usage)
        .find(|usage| usage.split(' ').next() == Some(word))
}

/// Parses one line: `Ok(None)` for a blank line, else the request or what is wrong with it.
///
/// Words are separated by spaces or tabs. `--json` may appear anywhere, and a leading `json`
/// word means the same; any other word starting with `--` is an error.
pub fn parse(line: &str) -> Result<Option<Request>, ParseError> {
    let mut words = line.split([' ', '\t']).filter(|word| !word.is_empty());
    let mut json = false;
    let mut rest: Vec<&str> = Vec::new();
    for (position, word) in words.by_ref().enumerate() {
        match word {
            "--json" => json = true,
            "json" if position == 0 => json = true,
            _ => rest.push(word),
        }
    }
    let Some((&word, args)) = rest.split_first() else {
        if json {
            return Err(ParseError {
                command: String::new(),
                json,
                message: String::from("missing command (help lists the commands)"),
            });
        }
        return Ok(None);
    };
    let error = |message: String| ParseError {
        command: String::from(word),
        json,
        message,
    };
    let Some(usage) = usage(word) else {
        return Err(error(format!(
            "unknown command \"{word}\" (help lists the commands)"
        )));
    };
    if let Some(option) = args.iter().find(|arg| arg.starts_with("--")) {
        return Err(error(format!(
            "unknown option \"{option}\" (usage: {usage})"
        )));
    }
    let wanted: Vec<&str> = usage.split(' ').skip(1).collect();
    if let Some(missing) = wanted.get(args.len()) {
        return Err(error(format!("missing {missing} (usage: {usage})")));
    }
    if let Some(extra) = args.get(wanted.len()) {
        return Err(error(format!("unexpected \"{extra}\" (usage: {usage})")));
    }
    let arg = |index: usize| String::from(args[index]);
    let command = match word {
        "list" => Command::List,
        "info" => Command::Info(arg(0)),
        "pause" => Command::Pause(arg(0)),
        "resume" => Command::Resume(arg(0)),
        "destroy" => Command::Destroy(arg(0)),
        "restart" => Command::Restart(arg(0)),
        "start" => Command::Start(arg(0)),
        "free" => Command::Free,
        "help" => Command::Help,
        "migrate" => Command::Migrate {
            name: arg(0),
            host: arg(1),
        },
        "migrate-status" => Command::MigrateStatus,
        "migrate-cancel" => Command::MigrateCancel,
        "listen" => Command::Listen,
        "save" => Command::Save(arg(0)),
        "restore" => Command::Restore,
        "poweroff" => Command::PowerOff,
        // `usage` found the word in COMMANDS, and every entry there has an arm above.
        _ => return Err(error(format!("unknown command \"{word}\""))),
    };
    Ok(Some(Request { command, json }))
}

/// An instance's state as the shell shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Being loaded or booting its first vCPU.
    Starting,
    /// Its vCPUs run.
    Running,
    /// Paused by the operator (`pause`): its vCPUs do not run, its state is kept.
    Paused,
    /// Ended (the guest powered off, or `destroy`).
    Stopped,
    /// Stopped by the hypervisor after a fault it cannot continue from.
    Crashed,
    /// Being moved to another board.
    Migrating,
}

impl InstanceState {
    /// The state's word, as in the JSON replies.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
            Self::Crashed => "crashed",
            Self::Migrating => "migrating",
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A vCPU's state as the shell shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VcpuState {
    /// Powered off (not started yet, or PSCI CPU_OFF).
    Off,
    /// In the guest, or ready to enter it.
    Running,
    /// Blocked in WFI or CPU_SUSPEND until an interrupt.
    Waiting,
    /// Held by `pause`.
    Paused,
}

impl VcpuState {
    /// The state's word, as in the JSON replies.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Paused => "paused",
        }
    }
}

impl fmt::Display for VcpuState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of `list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceRow {
    /// The instance's name.
    pub name: String,
    /// Its state.
    pub state: InstanceState,
    /// How many vCPUs it has.
    pub vcpus: usize,
    /// Its RAM, in MiB.
    pub ram_mib: u64,
    /// Time its vCPUs spent in the guest, summed, in milliseconds.
    pub cpu_time_ms: u64,
}

/// One vCPU in `info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VcpuRow {
    /// The vCPU's index in its instance.
    pub index: usize,
    /// Its state.
    pub state: VcpuState,
    /// The physical CPU it runs on, if it is on one.
    pub cpu: Option<usize>,
    /// Time it spent in the guest, in milliseconds.
    pub run_time_ms: u64,
}

/// The answer to `info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceInfo {
    /// The instance's name.
    pub name: String,
    /// Its state.
    pub state: InstanceState,
    /// Its RAM, in MiB.
    pub ram_mib: u64,
    /// Its vCPUs.
    pub vcpus: Vec<VcpuRow>,
    /// Exits by reason (`"hvc"`, `"mmio"`, `"wfi"`...), in the order to show them; a JSON
    /// object in the JSON reply.
    #[serde(serialize_with = "exits_as_object")]
    pub exits: Vec<(&'static str, u64)>,
    /// Virtual interrupts injected into it.
    pub interrupts_injected: u64,
    /// Time since it started, in milliseconds.
    pub run_time_ms: u64,
}

/// Serializes `(reason, count)` pairs as one JSON object, in their order.
fn exits_as_object<S: Serializer>(
    exits: &[(&'static str, u64)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(exits.len()))?;
    for (reason, count) in exits {
        map.serialize_entry(reason, count)?;
    }
    map.end()
}

/// The answer to `free`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryInfo {
    /// Board memory the hypervisor manages, in MiB.
    pub total_mib: u64,
    /// Of that, not given to an instance or the hypervisor, in MiB.
    pub free_mib: u64,
    /// The largest free block (the most RAM one new instance can get), in MiB.
    pub largest_mib: u64,
}

/// The answer to a command, filled by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `list`.
    List(Vec<InstanceRow>),
    /// `info`.
    Info(InstanceInfo),
    /// `free`.
    Free(MemoryInfo),
    /// `help`: the commands in [`COMMANDS`] and the console keys.
    Help,
    /// An action was done; one line saying so (e.g. `web paused`).
    Ok(String),
    /// The command failed; one line saying why.
    Error(String),
}

impl Reply {
    /// The answer to a command that names an instance that does not exist.
    pub fn no_such_instance(name: &str) -> Self {
        Self::Error(format!("no instance named {name}"))
    }

    /// Whether the command succeeded.
    pub const fn is_ok(&self) -> bool {
        !matches!(self, Self::Error(_))
    }

    /// The answer for the operator: one or more lines separated by `\n`, without a final newline.
    /// Control characters in names and messages are escaped.
    pub fn to_human(&self) -> String {
        match self {
            Self::List(rows) => human_list(rows),
            Self::Info(info) => human_info(info),
            Self::Free(memory) => table(
                &[
                    ("TOTAL(MiB)", Align::Right),
                    ("FREE(MiB)", Align::Right),
                    ("LARGEST(MiB)", Align::Right),
                ],
                &[[memory.total_mib, memory.free_mib, memory.largest_mib]
                    .iter()
                    .map(|mib| format!("{mib}"))
                    .collect()],
            ),
            Self::Help => human_help(),
            Self::Ok(message) => escape_controls(message).into_owned(),
            Self::Error(message) => format!("error: {}", escape_controls(message)),
        }
    }

    /// The answer for programs: one line of JSON (no newline in it or after it),
    /// `{"ok":true,"command":"<command>",...}` or `{"ok":false,"command":"<command>","error":"..."}`.
    pub fn to_json(&self, command: &str) -> String {
        serde_json::to_string(&Envelope {
            command,
            reply: self,
        })
        // Every field is a string, number, bool, list or string-keyed map: serializing cannot fail.
        .unwrap_or_else(|_| String::from(r#"{"ok":false,"error":"reply not representable"}"#))
    }
}

/// A reply with the `ok` and `command` fields every JSON answer has.
struct Envelope<'a> {
    command: &'a str,
    reply: &'a Reply,
}

impl Serialize for Envelope<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("ok", &self.reply.is_ok())?;
        map.serialize_entry("command", self.command)?;
        match self.reply {
            Reply::List(rows) => map.serialize_entry("instances", rows)?,
            Reply::Info(info) => map.serialize_entry("instance", info)?,
            Reply::Free(memory) => map.serialize_entry("memory", memory)?,
            Reply::Help => map.serialize_entry("commands", COMMANDS)?,
            Reply::Ok(message) => map.serialize_entry("message", message)?,
            Reply::Error(message) => map.serialize_entry("error", message)?,
        }
        map.end()
    }
}

/// How a table column is aligned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A table with a header line, columns two spaces apart, no trailing spaces.
fn table(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|(title, _)| title.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = columns
        .iter()
        .map(|(title, _)| String::from(*title))
        .collect();
    let mut text = String::new();
    for (number, row) in core::iter::once(&header).chain(rows).enumerate() {
        if number > 0 {
            text.push('\n');
        }
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column > 0 {
                line.push_str("  ");
            }
            let pad = widths[column].saturating_sub(cell.chars().count());
            let spaces = " ".repeat(pad);
            match columns[column].1 {
                Align::Left => {
                    line.push_str(cell);
                    line.push_str(&spaces);
                }
                Align::Right => {
                    line.push_str(&spaces);
                    line.push_str(cell);
                }
            }
        }
        text.push_str(line.trim_end());
    }
    text
}

fn human_list(rows: &[InstanceRow]) -> String {
    if rows.is_empty() {
        return String::from("no instances");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            Vec::from([
                escape_controls(&row.name).into_owned(),
                String::from(row.state.as_str()),
                format!("{}", row.vcpus),
                format!("{}", row.ram_mib),
                format!("{}", row.cpu_time_ms),
            ])
        })
        .collect();
    table(
        &[
            ("NAME", Align::Left),
            ("STATE", Align::Left),
            ("VCPUS", Align::Right),
            ("RAM(MiB)", Align::Right),
            ("CPU(ms)", Align::Right),
        ],
        &cells,
    )
}

fn human_info(info: &InstanceInfo) -> String {
    let exits = if info.exits.is_empty() {
        String::from("none")
    } else {
        info.exits
            .iter()
            .map(|(reason, count)| format!("{} {count}", escape_controls(reason)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!(
        "name:        {}\n\
         state:       {}\n\
         ram:         {} MiB\n\
         run time:    {} ms\n\
         interrupts:  {} injected\n\
         exits:       {exits}",
        escape_controls(&info.name),
        info.state,
        info.ram_mib,
        info.run_time_ms,
        info.interrupts_injected,
    );
    if !info.vcpus.is_empty() {
        let cells: Vec<Vec<String>> = info
            .vcpus
            .iter()
            .map(|vcpu| {
                Vec::from([
                    format!("{}", vcpu.index),
                    String::from(vcpu.state.as_str()),
                    vcpu.cpu
                        .map_or_else(|| String::from("-"), |cpu| format!("{cpu}")),
                    format!("{}", vcpu.run_time_ms),
                ])
            })
            .collect();
        text.push('\n');
        text.push_str(&table(
            &[
                ("VCPU", Align::Right),
                ("STATE", Align::Left),
                ("CPU", Align::Right),
                ("RUN(ms)", Align::Right),
            ],
            &cells,
        ));
    }
    text
}

fn human_help() -> String {
    let width = COMMANDS
        .iter()
        .map(|help| help.usage.len())
        .max()
        .unwrap_or(0);
    let mut text = String::from("commands (add --json for a one-line JSON answer):");
    for help in COMMANDS {
        text.push_str(&format!("\n  {:width$}  {}", help.usage, help.about));
    }
    text.push_str(
        "\nkeys: Ctrl-] puts the keyboard on the next instance, Ctrl-\\ back on this shell",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn request(line: &str) -> Request {
        parse(line)
            .unwrap_or_else(|error| panic!("{line:?}: {error}"))
            .unwrap_or_else(|| panic!("{line:?} is blank"))
    }

    fn error(line: &str) -> ParseError {
        match parse(line) {
            Err(error) => error,
            Ok(request) => panic!("{line:?} parsed as {request:?}"),
        }
    }

    fn json_of(text: &str) -> Value {
        assert!(!text.contains('\n'), "{text}");
        serde_json::from_str(text).unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    fn name(text: &str) -> String {
        String::from(text)
    }

    #[test]
    fn every_command_parses() {
        let cases = [
            ("list", Command::List),
            ("info web", Command::Info(name("web"))),
            ("pause web", Command::Pause(name("web"))),
            ("resume web", Command::Resume(name("web"))),
            ("destroy web", Command::Destroy(name("web"))),
            ("restart web", Command::Restart(name("web"))),
            ("start web", Command::Start(name("web"))),
            ("free", Command::Free),
            ("help", Command::Help),
            (
                "migrate web board2",
                Command::Migrate {
                    name: name("web"),
                    host: name("board2"),
                },
            ),
            ("migrate-status", Command::MigrateStatus),
            ("migrate-cancel", Command::MigrateCancel),
            ("listen", Command::Listen),
            ("save web", Command::Save(name("web"))),
            ("restore", Command::Restore),
            ("poweroff", Command::PowerOff),
        ];
        assert_eq!(cases.len(), COMMANDS.len());
        for (line, command) in cases {
            let parsed = request(line);
            assert_eq!(parsed.command, command, "{line}");
            assert!(!parsed.json);
            assert_eq!(line.split(' ').next(), Some(parsed.command.name()));
        }
    }

    #[test]
    fn commands_name_their_instance() {
        assert_eq!(request("info db").command.instance(), Some("db"));
        assert_eq!(request("migrate db b").command.instance(), Some("db"));
        assert_eq!(request("list").command.instance(), None);
        assert_eq!(request("poweroff").command, Command::PowerOff);
    }

    #[test]
    fn spaces_and_tabs_separate_words_and_blank_lines_are_nothing() {
        assert_eq!(
            request("  info \t web  ").command,
            Command::Info(name("web"))
        );
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("   \t "), Ok(None));
    }

    #[test]
    fn json_is_asked_for_by_a_flag_anywhere_or_a_leading_word() {
        for line in [
            "list --json",
            "--json list",
            "json list",
            "json --json list",
            "info --json web",
            "info web --json",
            "json info web",
        ] {
            let parsed = request(line);
            assert!(parsed.json, "{line}");
        }
        assert_eq!(request("json info web").command, Command::Info(name("web")));
        // Only a leading `json` is the flag: elsewhere it is an argument.
        assert_eq!(request("info json").command, Command::Info(name("json")));
        assert!(!request("info json").json);
    }

    #[test]
    fn unknown_commands_are_errors_that_point_to_help() {
        let unknown = error("frobnicate web");
        assert_eq!(unknown.command, "frobnicate");
        assert!(!unknown.json);
        assert_eq!(
            unknown.message,
            "unknown command \"frobnicate\" (help lists the commands)"
        );
        assert_eq!(
            unknown.render(),
            "error: unknown command \"frobnicate\" (help lists the commands)"
        );
        // Commands are lower case, as `help` shows them.
        assert_eq!(error("LIST").command, "LIST");
    }

    #[test]
    fn missing_and_extra_arguments_are_errors_with_the_usage() {
        assert_eq!(error("info").message, "missing NAME (usage: info NAME)");
        assert_eq!(
            error("migrate web").message,
            "missing HOST (usage: migrate NAME HOST)"
        );
        assert_eq!(error("list x").message, "unexpected \"x\" (usage: list)");
        assert_eq!(
            error("pause a b").message,
            "unexpected \"b\" (usage: pause NAME)"
        );
        assert_eq!(
            error("restore now").message,
            "unexpected \"now\" (usage: restore)"
        );
        assert_eq!(
            error("list --all").message,
            "unknown option \"--all\" (usage: list)"
        );
        for command in COMMANDS {
            let word = command.usage.split(' ').next().unwrap();
            let arguments = command.usage.split(' ').count() - 1;
            let mut line = String::from(word);
            for _ in 0..=arguments {
                line.push_str(" x");
            }
            assert!(parse(&line).is_err(), "{line}");
            if arguments > 0 {
                assert!(parse(word).is_err(), "{word}");
            }
        }
    }

    #[test]
    fn errors_answer_in_json_when_asked() {
        let missing = error("json pause");
        assert!(missing.json);
        assert_eq!(
            json_of(&missing.render()),
            json!({"ok": false, "command": "pause", "error": "missing NAME (usage: pause NAME)"})
        );
        let nothing = error("--json");
        assert_eq!(
            json_of(&nothing.render()),
            json!({"ok": false, "command": "", "error": "missing command (help lists the commands)"})
        );
        assert!(error("json").json);
        let unknown = error("bogus \"q\\ --json");
        assert_eq!(json_of(&unknown.render())["command"], "bogus");
        let human = error("list x");
        assert!(!human.json);
        assert_eq!(
            human.to_json(),
            r#"{"ok":false,"command":"list","error":"unexpected \"x\" (usage: list)"}"#
        );
        assert_eq!(unknown.reply(), Reply::Error(unknown.message.clone()));
    }

    #[test]
    fn the_editor_collects_printable_characters_until_a_line_end() {
        let mut editor = LineEditor::new();
        for &byte in b"list" {
            assert_eq!(editor.feed(byte), Edit::Insert(byte));
        }
        assert_eq!(editor.pending(), "list");
        let end = editor.feed(b'\r');
        assert_eq!(end, Edit::Line(name("list")));
        assert_eq!(end.echo(), b"\n");
        assert_eq!(editor.pending(), "");
        assert_eq!(Edit::Insert(b'x').echo(), b"x");
    }

    #[test]
    fn crlf_ends_one_line_and_lf_alone_ends_one_too() {
        let mut editor = LineEditor::new();
        let mut lines = Vec::new();
        for &byte in b"a\r\nb\nc\r\rd\n\n" {
            if let Edit::Line(line) = editor.feed(byte) {
                lines.push(line);
            }
        }
        assert_eq!(lines, ["a", "b", "c", "", "d", ""]);
    }

    #[test]
    fn both_backspaces_erase_one_character() {
        let mut editor = LineEditor::new();
        for &byte in b"infx" {
            editor.feed(byte);
        }
        let erase = editor.feed(0x7f);
        assert_eq!(erase, Edit::Erase);
        assert_eq!(erase.echo(), b"\x08 \x08");
        assert_eq!(editor.feed(b'o'), Edit::Insert(b'o'));
        assert_eq!(editor.feed(0x08), Edit::Erase);
        assert_eq!(editor.feed(0x08), Edit::Erase);
        assert_eq!(editor.feed(0x7f), Edit::Erase);
        assert_eq!(editor.feed(0x7f), Edit::Erase);
        // Nothing left to erase: nothing is echoed.
        assert_eq!(editor.feed(0x7f), Edit::Ignored);
        assert_eq!(editor.feed(0x08).echo(), b"");
        assert_eq!(editor.pending(), "");
    }

    #[test]
    fn an_overlong_line_rings_the_bell_and_keeps_its_start() {
        let mut editor = LineEditor::new();
        for _ in 0..MAX_LINE {
            assert_eq!(editor.feed(b'a'), Edit::Insert(b'a'));
        }
        let full = editor.feed(b'b');
        assert_eq!(full, Edit::Full);
        assert_eq!(full.echo(), b"\x07");
        for _ in 0..1000 {
            assert_eq!(editor.feed(b'c'), Edit::Full);
        }
        // Erasing makes room again.
        assert_eq!(editor.feed(0x7f), Edit::Erase);
        assert_eq!(editor.feed(b'z'), Edit::Insert(b'z'));
        match editor.feed(b'\n') {
            Edit::Line(line) => {
                assert_eq!(line.len(), MAX_LINE);
                assert!(line.ends_with("az"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn control_bytes_and_escape_sequences_are_ignored() {
        let mut editor = LineEditor::new();
        let mut typed = Vec::new();
        // Tab, NUL, bell, DEL-less controls, 8-bit bytes, arrow keys (CSI and SS3), a CSI with
        // parameters (Delete key), Alt-x, then "ok".
        for &byte in b"\t\x00\x07\x01\x80\xff\x1b[A\x1bOB\x1b[3~\x1bxok" {
            match editor.feed(byte) {
                Edit::Insert(inserted) => typed.push(inserted),
                Edit::Ignored => {}
                other => panic!("{byte:#x}: {other:?}"),
            }
        }
        assert_eq!(typed, b"ok");
        // A line end right after ESC still ends the line.
        editor.feed(0x1b);
        assert_eq!(editor.feed(b'\r'), Edit::Line(name("ok")));
    }

    #[test]
    fn ctrl_c_throws_the_line_away() {
        let mut editor = LineEditor::new();
        for &byte in b"destroy web" {
            editor.feed(byte);
        }
        let cancel = editor.feed(0x03);
        assert_eq!(cancel, Edit::Cancel);
        assert_eq!(cancel.echo(), b"^C\n");
        assert_eq!(editor.pending(), "");
        editor.feed(b'x');
        editor.clear();
        assert_eq!(editor.feed(b'\n'), Edit::Line(String::new()));
    }

    fn rows() -> Vec<InstanceRow> {
        Vec::from([
            InstanceRow {
                name: name("web"),
                state: InstanceState::Running,
                vcpus: 2,
                ram_mib: 256,
                cpu_time_ms: 123_456,
            },
            InstanceRow {
                name: name("db-primary"),
                state: InstanceState::Paused,
                vcpus: 1,
                ram_mib: 1024,
                cpu_time_ms: 7,
            },
        ])
    }

    fn info() -> InstanceInfo {
        InstanceInfo {
            name: name("web"),
            state: InstanceState::Running,
            ram_mib: 256,
            vcpus: Vec::from([
                VcpuRow {
                    index: 0,
                    state: VcpuState::Running,
                    cpu: Some(1),
                    run_time_ms: 1200,
                },
                VcpuRow {
                    index: 1,
                    state: VcpuState::Waiting,
                    cpu: None,
                    run_time_ms: 80,
                },
            ]),
            exits: Vec::from([("hvc", 12), ("mmio", 4000), ("wfi", 900)]),
            interrupts_injected: 4711,
            run_time_ms: 60_000,
        }
    }

    #[test]
    fn list_is_an_aligned_table() {
        assert_eq!(
            Reply::List(rows()).to_human(),
            "NAME        STATE    VCPUS  RAM(MiB)  CPU(ms)\n\
             web         running      2       256   123456\n\
             db-primary  paused       1      1024        7"
        );
        assert_eq!(Reply::List(Vec::new()).to_human(), "no instances");
    }

    #[test]
    fn list_in_json() {
        let text = Reply::List(rows()).to_json("list");
        assert!(text.starts_with(r#"{"ok":true,"command":"list","instances":["#));
        assert_eq!(
            json_of(&text),
            json!({"ok": true, "command": "list", "instances": [
                {"name": "web", "state": "running", "vcpus": 2, "ram_mib": 256, "cpu_time_ms": 123456},
                {"name": "db-primary", "state": "paused", "vcpus": 1, "ram_mib": 1024, "cpu_time_ms": 7},
            ]})
        );
        assert_eq!(
            json_of(&Reply::List(Vec::new()).to_json("list"))["instances"],
            json!([])
        );
    }

    #[test]
    fn info_is_a_block_with_a_vcpu_table() {
        assert_eq!(
            Reply::Info(info()).to_human(),
            "name:        web\n\
             state:       running\n\
             ram:         256 MiB\n\
             run time:    60000 ms\n\
             interrupts:  4711 injected\n\
             exits:       hvc 12, mmio 4000, wfi 900\n\
             VCPU  STATE    CPU  RUN(ms)\n   \
                0  running    1     1200\n   \
                1  waiting    -       80"
        );
        let mut quiet = info();
        quiet.exits.clear();
        quiet.vcpus.clear();
        assert!(Reply::Info(quiet).to_human().ends_with("exits:       none"));
    }

    #[test]
    fn info_in_json_has_exits_as_an_object() {
        assert_eq!(
            json_of(&Reply::Info(info()).to_json("info")),
            json!({"ok": true, "command": "info", "instance": {
                "name": "web", "state": "running", "ram_mib": 256,
                "vcpus": [
                    {"index": 0, "state": "running", "cpu": 1, "run_time_ms": 1200},
                    {"index": 1, "state": "waiting", "cpu": null, "run_time_ms": 80},
                ],
                "exits": {"hvc": 12, "mmio": 4000, "wfi": 900},
                "interrupts_injected": 4711,
                "run_time_ms": 60000,
            }})
        );
        // The exits keep the caller's order.
        assert!(
            Reply::Info(info())
                .to_json("info")
                .contains(r#""exits":{"hvc":12,"mmio":4000,"wfi":900}"#)
        );
    }

    #[test]
    fn free_in_both_forms() {
        let memory = Reply::Free(MemoryInfo {
            total_mib: 2048,
            free_mib: 700,
            largest_mib: 512,
        });
        assert_eq!(
            memory.to_human(),
            "TOTAL(MiB)  FREE(MiB)  LARGEST(MiB)\n      2048        700           512"
        );
        assert_eq!(
            json_of(&memory.to_json("free")),
            json!({"ok": true, "command": "free",
                   "memory": {"total_mib": 2048, "free_mib": 700, "largest_mib": 512}})
        );
    }

    #[test]
    fn actions_answer_ok_or_error() {
        let done = Reply::Ok(name("web paused"));
        assert!(done.is_ok());
        assert_eq!(done.to_human(), "web paused");
        assert_eq!(
            done.to_json("pause"),
            r#"{"ok":true,"command":"pause","message":"web paused"}"#
        );
        let missing = Reply::no_such_instance("x");
        assert!(!missing.is_ok());
        assert_eq!(missing.to_human(), "error: no instance named x");
        assert_eq!(
            missing.to_json("pause"),
            r#"{"ok":false,"command":"pause","error":"no instance named x"}"#
        );
    }

    #[test]
    fn help_lists_every_command_and_the_keys() {
        let text = Reply::Help.to_human();
        for command in COMMANDS {
            assert!(text.contains(command.usage), "{}", command.usage);
        }
        assert!(text.contains("Ctrl-]") && text.contains("Ctrl-\\"));
        let value = json_of(&Reply::Help.to_json("help"));
        assert_eq!(value["ok"], true);
        assert_eq!(value["commands"].as_array().unwrap().len(), COMMANDS.len());
        assert_eq!(
            value["commands"][1],
            json!({"usage": "info NAME", "about": COMMANDS[1].about})
        );
    }

    #[test]
    fn names_and_messages_are_escaped_in_json() {
        let nasty = "we\"b\\x\n\u{1b}[2J\u{7f}é";
        let mut row = rows().remove(0);
        row.name = name(nasty);
        let text = Reply::List(Vec::from([row])).to_json("list");
        assert_eq!(json_of(&text)["instances"][0]["name"], nasty);
        let text = Reply::Error(name(nasty)).to_json("pa\"use");
        let value = json_of(&text);
        assert_eq!(value["error"], nasty);
        assert_eq!(value["command"], "pa\"use");
    }

    #[test]
    fn names_are_escaped_for_the_terminal() {
        let mut row = rows().remove(0);
        row.name = name("a\u{1b}[2Jb");
        assert!(
            Reply::List(Vec::from([row]))
                .to_human()
                .contains("a\\x1b[2Jb  running")
        );
        assert_eq!(
            Reply::Error(name("bad\nline")).to_human(),
            "error: bad\\x0aline"
        );
    }

    #[test]
    fn a_request_renders_in_the_form_it_asked_for() {
        let reply = Reply::Ok(name("web resumed"));
        assert_eq!(request("resume web").render(&reply), "web resumed");
        assert_eq!(
            request("json resume web").render(&reply),
            r#"{"ok":true,"command":"resume","message":"web resumed"}"#
        );
    }
}
