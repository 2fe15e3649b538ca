//! A polled driver for the board's ARM PL011 UART, used as the hypervisor's console.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! {u32,
    FR [
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) [],
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
    ],
    LCR_H [
        /// FIFOs enabled (otherwise a one-character holding register).
        FEN OFFSET(4) NUMBITS(1) [],
        /// Word length: 0b11 is eight bits.
        WLEN OFFSET(5) NUMBITS(2) [],
    ],
    IMSC [
        /// Receive interrupt mask.
        RXIM OFFSET(4) NUMBITS(1) [],
        /// Receive timeout interrupt mask.
        RTIM OFFSET(6) NUMBITS(1) [],
    ]
}

register_structs! {
    /// The PL011 registers the console uses.
    Registers {
        (0x00 => dr: ReadWrite<u32>),
        (0x04 => _reserved0),
        (0x18 => fr: ReadOnly<u32, FR::Register>),
        (0x1c => _reserved1),
        (0x2c => lcr_h: ReadWrite<u32, LCR_H::Register>),
        (0x30 => _reserved2),
        (0x38 => imsc: ReadWrite<u32, IMSC::Register>),
        (0x3c => @END),
    }
}

/// The board console: a PL011 whose baud rate firmware or QEMU has already set; the console
/// only switches its FIFOs on (8 data bits), so that a line goes out without waiting on every
/// character.
pub struct Pl011Console {
    registers: &'static Registers,
}

impl Pl011Console {
    /// A console on the PL011 at `base`.
    ///
    /// # Safety
    /// `base` must be the address of a PL011's registers, mapped as device memory, used by
    /// nothing else for the life of the console.
    pub unsafe fn new(base: usize) -> Self {
        // SAFETY: the caller guarantees `base` points at a PL011 register block that stays
        // mapped and is used only through this console.
        let registers: &'static Registers = unsafe { &*(base as *const Registers) };
        registers
            .lcr_h
            .write(LCR_H::FEN::SET + LCR_H::WLEN.val(0b11));
        Self { registers }
    }

    /// Raises the UART's interrupt whenever received data waits (or never, if `enable` is false).
    pub fn enable_receive_interrupt(&mut self, enable: bool) {
        let mask = if enable {
            IMSC::RXIM::SET + IMSC::RTIM::SET
        } else {
            IMSC::RXIM::CLEAR + IMSC::RTIM::CLEAR
        };
        self.registers.imsc.write(mask);
    }

    /// Takes one received byte, if any.
    pub fn read_byte(&mut self) -> Option<u8> {
        (!self.registers.fr.is_set(FR::RXFE)).then(|| self.registers.dr.get() as u8)
    }

    /// Sends one byte, waiting while the transmit FIFO is full.
    pub fn write_byte(&mut self, byte: u8) {
        while self.registers.fr.is_set(FR::TXFF) {
            core::hint::spin_loop();
        }
        self.registers.dr.set(u32::from(byte));
    }
}

// SAFETY: the console owns its UART (see `new`), and registers are only touched through
// `&mut self`, so moving it to another CPU cannot cause concurrent access.
unsafe impl Send for Pl011Console {}

impl core::fmt::Write for Pl011Console {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        for byte in text.bytes() {
            if byte == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
        Ok(())
    }
}
