//! PL011 console (TX only, polled), found through the guest's device tree; usable from every CPU.

use core::{
    fmt::{self, Write},
    sync::atomic::{AtomicUsize, Ordering},
};

use tock_registers::{
    interfaces::{Readable, Writeable},
    register_bitfields, register_structs,
    registers::{ReadOnly, ReadWrite},
};

/// QEMU virt / instance-platform UART0, used when the DT names no PL011.
pub const DEFAULT_UART: usize = 0x0900_0000;

register_bitfields! {
    u32,
    /// Flag register.
    pub FR [
        /// Transmit FIFO empty.
        TXFE OFFSET(7) NUMBITS(1) [],
        /// Receive FIFO full.
        RXFF OFFSET(6) NUMBITS(1) [],
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) [],
        /// UART busy transmitting.
        BUSY OFFSET(3) NUMBITS(1) [],
    ],
    /// Interrupt bits, as laid out in IMSC, RIS, MIS and ICR.
    pub INT [
        /// Receive timeout.
        RT OFFSET(6) NUMBITS(1) [],
        /// Transmit (FIFO at or below its trigger level).
        TX OFFSET(5) NUMBITS(1) [],
        /// Receive (FIFO at or above its trigger level).
        RX OFFSET(4) NUMBITS(1) [],
    ]
}

register_structs! {
    /// PL011 register block (the parts the guests use).
    pub Pl011Regs {
        (0x000 => pub dr: ReadWrite<u32>),
        (0x004 => _reserved0),
        (0x018 => pub fr: ReadOnly<u32, FR::Register>),
        (0x01c => _reserved1),
        /// Integer baud rate divisor (16 bits).
        (0x024 => pub ibrd: ReadWrite<u32>),
        /// Fractional baud rate divisor (6 bits).
        (0x028 => pub fbrd: ReadWrite<u32>),
        /// Line control (8 bits).
        (0x02c => pub lcr_h: ReadWrite<u32>),
        /// Control.
        (0x030 => pub cr: ReadWrite<u32>),
        /// Interrupt FIFO level select.
        (0x034 => pub ifls: ReadWrite<u32>),
        /// Interrupt mask set/clear (11 bits).
        (0x038 => pub imsc: ReadWrite<u32, INT::Register>),
        /// Raw interrupt status.
        (0x03c => pub ris: ReadOnly<u32, INT::Register>),
        /// Masked interrupt status.
        (0x040 => pub mis: ReadOnly<u32, INT::Register>),
        (0x044 => _reserved2),
        /// PeriphID0..3 then PCellID0..3 (low byte of each).
        (0xfe0 => pub id: [ReadOnly<u32>; 8]),
        (0x1000 => @END),
    }
}

static BASE: AtomicUsize = AtomicUsize::new(DEFAULT_UART);

/// Base address of the console PL011.
pub fn base() -> usize {
    BASE.load(Ordering::Relaxed)
}

/// The console's register block.
pub fn regs() -> &'static Pl011Regs {
    // SAFETY: `BASE` is a PL011 mapped as device memory by the boot identity map for the whole run.
    unsafe { &*(base() as *const Pl011Regs) }
}

/// Finds the console PL011 in the DT (`/chosen/stdout-path`, else the first "arm,pl011").
pub fn uart_from_dt(dtb: usize) -> Option<usize> {
    // SAFETY: the boot protocol passes a valid DTB address in x0; `from_ptr` checks the header.
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }.ok()?;
    let is_pl011 = |n: &fdt::node::FdtNode| {
        n.compatible()
            .is_some_and(|c| c.all().any(|s| s == "arm,pl011"))
    };
    let stdout = fdt
        .find_node("/chosen")
        .and_then(|c| c.property("stdout-path"))
        .and_then(|p| p.as_str())
        .and_then(|s| fdt.find_node(s.split(':').next().unwrap_or(s)))
        .filter(is_pl011);
    let node = stdout.or_else(|| fdt.find_compatible(&["arm,pl011"]))?;
    Some(node.reg()?.next()?.starting_address as usize)
}

/// Points the console at the DT's PL011 (keeps the default if the DT has none).
pub fn init_from_dt(dtb: usize) {
    if let Some(base) = uart_from_dt(dtb) {
        BASE.store(base, Ordering::Relaxed);
    }
}

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let uart = regs();
        for b in s.bytes() {
            if b == b'\n' {
                put(uart, b'\r');
            }
            put(uart, b);
        }
        Ok(())
    }
}

/// Writes `bytes` as they are, the way an early console does: for each byte, wait while the
/// flag register says the transmit FIFO is full, then write the data register. No lock, no
/// `\r` (for measuring: `cargo xtask bench`'s `console_64_bytes`).
pub fn write_raw(bytes: &[u8]) {
    let uart = regs();
    for &b in bytes {
        put(uart, b);
    }
}

/// Turns the PL011's FIFOs on (`LCR_H.FEN`), as a driver does: with them off, QEMU's PL011
/// paces its output one character at a time in virtual time.
pub fn enable_fifos() {
    const LCR_H_FEN: u32 = 1 << 4;
    let uart = regs();
    uart.lcr_h.set(uart.lcr_h.get() | LCR_H_FEN);
}

fn put(uart: &Pl011Regs, b: u8) {
    while uart.fr.is_set(FR::TXFF) {
        core::hint::spin_loop();
    }
    uart.dr.set(u32::from(b));
}

/// Owner of the console lock: 0 when free, else the owning CPU's index + 1.
static OWNER: AtomicUsize = AtomicUsize::new(0);

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    // One line at a time from any CPU: IRQs are masked while the lock is held (so an interrupt
    // handler that prints cannot deadlock against its own CPU), and a CPU that already holds the
    // lock (a panic or an unexpected exception while printing) prints through it.
    let me = crate::smp::cpu_id() + 1;
    let daif = crate::irq::mask();
    let nested = OWNER.load(Ordering::Relaxed) == me;
    if !nested {
        while OWNER
            .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
    }
    // Console writes cannot fail.
    let _ = Console.write_fmt(args);
    if !nested {
        OWNER.store(0, Ordering::Release);
    }
    crate::irq::restore(daif);
}

/// Prints to the guest console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Prints a line to the guest console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
