//! The board console: hypervisor log lines (through `log`) and guest console lines share one
//! PL011 under one lock, so lines never interleave.

use core::fmt::Write;

use platforms::pl011::Pl011Console;
use spin::Mutex;

static CONSOLE: Mutex<Option<Pl011Console>> = Mutex::new(None);
static LOGGER: Logger = Logger;

/// Starts the console on the board UART at `base` and routes `log` to it at `level`.
pub fn init(base: u64, level: log::LevelFilter) {
    // SAFETY: `base` comes from the board's device tree, the EL2 identity map covers it as device
    // memory, and nothing else in the hypervisor drives that UART.
    *CONSOLE.lock() = Some(unsafe { Pl011Console::new(base as usize) });
    // A second init (there is none) would keep the first logger, which is harmless.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Starts delivering console input as the UART's interrupt.
pub fn enable_input() {
    if let Some(console) = CONSOLE.lock().as_mut() {
        console.enable_receive_interrupt();
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
        let Some(byte) = console.read_byte() else {
            break;
        };
        buffer[count] = byte;
        count += 1;
    }
    count
}

/// Writes formatted text to the console, if it is up.
pub fn write_fmt(args: core::fmt::Arguments) {
    if let Some(console) = CONSOLE.lock().as_mut() {
        // The PL011 driver cannot fail.
        let _ = console.write_fmt(args);
    }
}

/// Writes to the console from a panic, even if the panicking code held the console lock.
pub fn write_fmt_from_panic(args: core::fmt::Arguments) {
    if let Some(mut console) = CONSOLE.try_lock() {
        if let Some(console) = console.as_mut() {
            let _ = console.write_fmt(args);
        }
        return;
    }
    // SAFETY: we are panicking on the only running CPU and never return to the lock holder,
    // so taking the console over cannot race with it.
    unsafe { CONSOLE.force_unlock() };
    write_fmt(args);
}

/// A guest's console line, shown with the instance's name in front.
pub fn guest_line(instance: &str, line: &str) {
    write_fmt(format_args!("[{instance}] {line}\n"));
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
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
