//! The board console: hypervisor log lines (through `log`) and guest console lines share one
//! PL011 under one lock, so lines never interleave.

use alloc::string::String;
use core::fmt::Write;

use platforms::pl011::Pl011Console;
use spin::Mutex;

/// The board UART, the instance whose partial line (a prompt, say) is open on it, and the
/// instance that has the keyboard (its output is shown raw).
struct Console {
    uart: Pl011Console,
    open_line: Option<String>,
    raw: Option<String>,
}

impl Console {
    /// Ends an open partial line so that the next output starts on a line of its own.
    fn close_line(&mut self) {
        if self.open_line.take().is_some() {
            let _ = self.uart.write_str("\n");
        }
    }
}

static CONSOLE: Mutex<Option<Console>> = Mutex::new(None);
static LOGGER: Logger = Logger;

/// Starts the console on the board UART at `base` and routes `log` to it at `level`.
pub fn init(base: u64, level: log::LevelFilter) {
    // SAFETY: `base` comes from the board's device tree, the EL2 identity map covers it as device
    // memory, and nothing else in the hypervisor drives that UART.
    let uart = unsafe { Pl011Console::new(base as usize) };
    *CONSOLE.lock() = Some(Console {
        uart,
        open_line: None,
        raw: None,
    });
    // A second init (there is none) would keep the first logger, which is harmless.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Starts (or stops, while nobody can take more input) the UART's receive interrupt.
pub fn enable_input(enable: bool) {
    if let Some(console) = CONSOLE.lock().as_mut() {
        console.uart.enable_receive_interrupt(enable);
    }
}

/// Moves received bytes into `buffer`; returns how many.
pub fn read_input(buffer: &mut [u8]) -> usize {
    let mut guard = CONSOLE.lock();
    let Some(console) = guard.as_mut() else {
        return 0;
    };
    let mut count = 0;
    while count < buffer.len() {
        let Some(byte) = console.uart.read_byte() else {
            break;
        };
        buffer[count] = byte;
        count += 1;
    }
    count
}

/// Writes formatted text to the console on a line of its own, if the console is up.
pub fn write_fmt(args: core::fmt::Arguments) {
    if let Some(console) = CONSOLE.lock().as_mut() {
        console.close_line();
        // The PL011 driver cannot fail.
        let _ = console.uart.write_fmt(args);
    }
}

/// Writes to the console from a panic, even if the panicking code held the console lock.
pub fn write_fmt_from_panic(args: core::fmt::Arguments) {
    if let Some(mut console) = CONSOLE.try_lock() {
        if let Some(console) = console.as_mut() {
            console.close_line();
            let _ = console.uart.write_fmt(args);
        }
        return;
    }
    // SAFETY: we are panicking on the only running CPU and never return to the lock holder,
    // so taking the console over cannot race with it.
    unsafe { CONSOLE.force_unlock() };
    write_fmt(args);
}

/// Shows the output of `instance` raw from now on (it has the keyboard), or of none.
pub fn set_raw_instance(instance: Option<&str>) {
    if let Some(console) = CONSOLE.lock().as_mut() {
        console.raw = instance.map(String::from);
    }
}

/// Writes `text` on the console as it is (shell echo and replies).
pub fn write_raw(text: &str) {
    if let Some(console) = CONSOLE.lock().as_mut() {
        let _ = console.uart.write_str(text);
    }
}

/// A guest's console output, each line shown with the instance's name in front and control
/// characters escaped; the instance with the keyboard's is shown raw. A partial line stays
/// open so the guest can continue it (a prompt and what is typed after it).
pub fn guest_line(instance: &str, text: &str, ends_line: bool) {
    let mut guard = CONSOLE.lock();
    let Some(console) = guard.as_mut() else {
        return;
    };
    let raw = console.raw.as_deref() == Some(instance);
    if console.open_line.as_deref() != Some(instance) {
        console.close_line();
        if !raw {
            let _ = write!(console.uart, "[{instance}] ");
        }
    }
    if raw {
        let _ = console.uart.write_str(text);
    } else {
        let _ = console.uart.write_str(&crate::pl011::escape_controls(text));
    }
    if ends_line {
        let _ = console.uart.write_str("\n");
        console.open_line = None;
    } else if console.open_line.is_none() {
        console.open_line = Some(instance.into());
    }
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // The crates under the hypervisor speak up only about problems: their INFO lines
        // (virtio-drivers' negotiated features, say) are not the operator's business.
        let ours = metadata.target().starts_with("el2");
        metadata.level() <= log::max_level() && (ours || metadata.level() <= log::Level::Warn)
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            write_fmt(format_args!(
                "el2 {:>5}: {}\n",
                record.level(),
                record.args()
            ));
        }
    }

    fn flush(&self) {}
}
