//! The operator's side of the board: where keys typed on the board console go (the management
//! shell, or the instance that has the keyboard: Ctrl-] cycles through the instances, Ctrl-\
//! returns to the shell), the shell's commands, and the same commands answered in JSON on a
//! second UART for tools (docs/MANAGEMENT.md).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

use platforms::pl011::Pl011Console;
use spin::Mutex;

use crate::arch::board::{board, vcpu_id};
use crate::arch::guest::Vm;
use crate::arch::{console, sysregs, transfer};
use crate::console_router::{ConsoleRouter, Focus, Route, switch_notice};
use crate::sched::VcpuState as SchedState;
use crate::shell::{
    self, Command, Edit, InstanceInfo, InstanceRow, InstanceState, LineEditor, MemoryInfo, Reply,
    VcpuRow, VcpuState,
};

/// The console keyboard's routing and the shell's line.
struct Keyboard {
    router: ConsoleRouter,
    editor: LineEditor,
    /// A byte for the instance with the keyboard that its UART had no room for yet.
    held: Option<u8>,
}

/// The JSON port: a second UART, one command per line, one line of JSON per answer.
struct JsonPort {
    uart: Pl011Console,
    editor: LineEditor,
}

static KEYBOARD: Mutex<Keyboard> = Mutex::new(Keyboard {
    router: ConsoleRouter::new(),
    editor: LineEditor::new(),
    held: None,
});
static JSON_PORT: Mutex<Option<JsonPort>> = Mutex::new(None);
/// Console input waits in the board UART (its interrupt off) until the instance with the
/// keyboard has room for the byte held back.
static INPUT_PAUSED: AtomicBool = AtomicBool::new(false);

/// Starts the JSON port on the PL011 at `base`.
pub fn init_json_port(base: u64) {
    // SAFETY: `base` is a PL011 from the board's device tree that nothing else drives (not the
    // console), covered by the EL2 identity map as device memory.
    let mut uart = unsafe { Pl011Console::new(base as usize) };
    uart.enable_receive_interrupt(true);
    *JSON_PORT.lock() = Some(JsonPort {
        uart,
        editor: LineEditor::new(),
    });
}

/// Says how to use the console once the board is up (the keyboard starts with the shell).
pub fn greet() {
    let focus = KEYBOARD.lock().router.focus();
    show_focus(focus, &board().instances());
}

/// Bytes typed on the board console: each goes where the keyboard points.
pub fn console_input() {
    let mut keyboard = KEYBOARD.lock();
    let instances = board().instances();
    loop {
        let byte = match keyboard.held.take() {
            Some(byte) => byte,
            None => {
                let mut byte = [0u8];
                if console::read_input(&mut byte) == 0 {
                    return;
                }
                byte[0]
            }
        };
        match keyboard.router.route(byte, instances.len()) {
            Route::ToInstance(index, byte) => {
                let vm = &instances[index];
                if vm.instance.console_space() == 0 {
                    keyboard.held = Some(byte);
                    INPUT_PAUSED.store(true, Ordering::Release);
                    console::enable_input(false);
                    return;
                }
                vm.instance.console_input(&[byte]);
            }
            Route::ToShell(byte) => {
                let edit = keyboard.editor.feed(byte);
                console::write_raw(core::str::from_utf8(edit.echo()).unwrap_or(""));
                if let Edit::Line(line) = edit {
                    drop(keyboard);
                    let answer = answer(&line, false);
                    if !answer.is_empty() {
                        console::write_raw(&answer);
                        console::write_raw("\n");
                    }
                    console::write_raw(shell::PROMPT);
                    keyboard = KEYBOARD.lock();
                }
            }
            Route::Switched(focus) => show_focus(focus, &instances),
        }
    }
}

/// Takes console input again once `vm` (if it has the keyboard) has room for the byte held
/// back. Called after every exit, so it costs one load when input is flowing.
pub fn resume_console_input(vm: &Vm) {
    if !INPUT_PAUSED.load(Ordering::Acquire) || vm.instance.console_space() == 0 {
        return;
    }
    INPUT_PAUSED.store(false, Ordering::Release);
    console::enable_input(true);
    console_input();
}

/// The instance at `index` of the running list is gone: the keyboard does not stay on it.
pub fn instance_removed(index: usize) {
    let mut keyboard = KEYBOARD.lock();
    if let Some(focus) = keyboard.router.instance_removed(index) {
        keyboard.held = None;
        if INPUT_PAUSED.swap(false, Ordering::AcqRel) {
            console::enable_input(true);
        }
        show_focus(focus, &board().instances());
    }
}

/// Lines arriving on the JSON port: each gets one line of JSON back.
pub fn json_input() {
    let mut port = JSON_PORT.lock();
    let Some(port) = port.as_mut() else {
        return;
    };
    while let Some(byte) = port.uart.read_byte() {
        if let Edit::Line(line) = port.editor.feed(byte) {
            let reply = answer(&line, true);
            if !reply.is_empty() {
                let _ = port.uart.write_str(&reply);
                let _ = port.uart.write_str("\n");
            }
        }
    }
}

fn show_focus(focus: Focus, instances: &[alloc::sync::Arc<Vm>]) {
    let name = focus
        .instance()
        .and_then(|index| instances.get(index))
        .map(|vm| vm.instance.name.as_str());
    console::set_raw_instance(name);
    console::write_fmt(format_args!(
        "{}\n",
        switch_notice(focus, name.unwrap_or(""))
    ));
    if focus == Focus::Shell {
        console::write_raw(shell::PROMPT);
    }
}

/// The answer to one line (JSON when `json` or when the line asks for it); empty for a blank
/// line.
fn answer(line: &str, json: bool) -> String {
    match shell::parse(line) {
        Ok(None) => String::new(),
        Ok(Some(mut request)) => {
            request.json |= json;
            request.render(&execute(&request.command))
        }
        Err(error) if json || error.json => error.to_json(),
        Err(error) => error.render(),
    }
}

/// Carries out one command.
/// A command's outcome as its reply.
fn reply(result: Result<String, String>) -> Reply {
    match result {
        Ok(line) => Reply::Ok(line),
        Err(why) => Reply::Error(why),
    }
}

fn execute(command: &Command) -> Reply {
    let board = board();
    let named = |name: &str| {
        board
            .instances()
            .into_iter()
            .find(|vm| vm.instance.name == name)
    };
    match command {
        Command::List => Reply::List(board.instances().iter().map(|vm| row(vm)).collect()),
        Command::Info(name) => match named(name) {
            Some(vm) => Reply::Info(info(&vm)),
            None => Reply::no_such_instance(name),
        },
        Command::Pause(name) => match named(name) {
            Some(vm) => {
                board.pause(&vm, true);
                Reply::Ok(alloc::format!("{name} paused"))
            }
            None => Reply::no_such_instance(name),
        },
        Command::Resume(name) => match named(name) {
            Some(vm) => {
                board.pause(&vm, false);
                Reply::Ok(alloc::format!("{name} resumed"))
            }
            None => Reply::no_such_instance(name),
        },
        Command::Destroy(name) => match named(name) {
            Some(vm) => {
                vm.instance.destroy();
                Reply::Ok(alloc::format!("{name} destroyed"))
            }
            None => Reply::no_such_instance(name),
        },
        Command::Restart(name) => match named(name) {
            Some(vm) => {
                vm.request_restart();
                vm.instance.destroy();
                Reply::Ok(alloc::format!("{name} restarting"))
            }
            None => Reply::no_such_instance(name),
        },
        Command::Start(name) => match board.start_by_name(name) {
            Ok(()) => Reply::Ok(alloc::format!("{name} started")),
            Err(why) => Reply::Error(alloc::format!("{name}: cannot start: {why}")),
        },
        Command::Free => {
            let (free, largest, total) = board.free_memory();
            Reply::Free(MemoryInfo {
                total_mib: total >> 20,
                free_mib: free >> 20,
                largest_mib: largest >> 20,
            })
        }
        Command::Help => Reply::Help,
        Command::Save(name) => match named(name) {
            Some(vm) => reply(transfer::send(vm, transfer::SAVE_DESTINATION, true)),
            None => Reply::no_such_instance(name),
        },
        Command::Migrate { name, host } => match named(name) {
            Some(vm) => reply(transfer::send(vm, host, false)),
            None => Reply::no_such_instance(name),
        },
        Command::MigrateStatus => Reply::Ok(transfer::status()),
        Command::MigrateCancel => reply(transfer::cancel()),
        Command::Listen => reply(transfer::listen(true)),
        Command::Restore => reply(transfer::listen(false)),
        Command::PowerOff => board.shut_down("poweroff typed on the shell"),
    }
}

fn state(vm: &Vm) -> InstanceState {
    if vm.is_paused() {
        InstanceState::Paused
    } else {
        InstanceState::Running
    }
}

fn row(vm: &Vm) -> InstanceRow {
    let now = sysregs::counter();
    let run_time = board()
        .sched
        .lock()
        .instance_run_time(vm.instance.slot as u32, now);
    InstanceRow {
        name: vm.instance.name.clone(),
        state: state(vm),
        vcpus: vm.instance.vcpu_count(),
        ram_mib: vm.instance.ram_size >> 20,
        cpu_time_ms: sysregs::ticks_to_ms(vm.total_cpu_time(run_time)),
    }
}

fn info(vm: &Vm) -> InstanceInfo {
    let now = sysregs::counter();
    let sched = board().sched.lock();
    let vcpus: Vec<VcpuRow> = (0..vm.instance.vcpu_count())
        .filter_map(|index| {
            let stats = sched.stats(vcpu_id(vm.instance.slot, index), now)?;
            let state = match stats.state {
                _ if vm.is_paused() => VcpuState::Paused,
                SchedState::Off => VcpuState::Off,
                SchedState::Blocked => VcpuState::Waiting,
                SchedState::Runnable | SchedState::Running => VcpuState::Running,
            };
            Some(VcpuRow {
                index,
                state,
                cpu: stats.running_on,
                run_time_ms: sysregs::ticks_to_ms(vm.cpu_time(index, stats.run_time)),
            })
        })
        .collect();
    let run_time = sched.instance_run_time(vm.instance.slot as u32, now);
    drop(sched);
    InstanceInfo {
        name: vm.instance.name.clone(),
        state: state(vm),
        ram_mib: vm.instance.ram_size >> 20,
        vcpus,
        exits: vm.instance.exit_counts(),
        interrupts_injected: vm.instance.interrupts_raised(),
        run_time_ms: sysregs::ticks_to_ms(vm.total_cpu_time(run_time)),
    }
}
