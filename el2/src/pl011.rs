//! The emulated PL011 UART each instance gets as its console.
//!
//! Every byte the guest writes to DR is collected into lines, and each line reaches the board
//! console prefixed with the instance's name. Bytes typed on the board console arrive in a
//! 32-byte receive FIFO. The transmit FIFO never fills, so the transmit interrupt is always
//! raised while unmasked, as on a PL011 whose FIFO drains instantly. The PrimeCell
//! identification registers answer like an ARM PL011 (the AMBA bus in Linux probes them).
//!
//! The guest reaches the UART through a [`Pl011Port`], which drives the UART's interrupt line
//! into an [`InterruptSink`] after every access. The line being written and the receive FIFO's
//! fill level are also in a [`Pl011Fast`], which the fast path (`crate::fastpath`) reaches
//! without the instance's lock: it takes the bytes of a line and answers FR reads, and leaves
//! the rest (a newline, which passes the line on, and every other register) to this model.

use alloc::borrow::Cow;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use crate::mmio::{Changes, InterruptSink, MmioDevice};
use crate::ratelimit::{Admission, LogBudget};

const DR: u64 = 0x000;
const RSR_ECR: u64 = 0x004;
/// The flag register (FR): its offset in the register window.
pub const FR: u64 = 0x018;
const ILPR: u64 = 0x020;
const IBRD: u64 = 0x024;
const FBRD: u64 = 0x028;
const LCR_H: u64 = 0x02c;
const CR: u64 = 0x030;
const IFLS: u64 = 0x034;
const IMSC: u64 = 0x038;
const RIS: u64 = 0x03c;
const MIS: u64 = 0x040;
const ICR: u64 = 0x044;
const DMACR: u64 = 0x048;
const ID_BASE: u64 = 0xfe0;

/// Flag register: receive FIFO empty.
const FR_RXFE: u64 = 1 << 4;
/// Flag register: receive FIFO full.
const FR_RXFF: u64 = 1 << 6;
/// Flag register: transmit FIFO empty.
const FR_TXFE: u64 = 1 << 7;
/// Interrupt bits: receive, transmit, receive timeout.
const INT_RX: u64 = 1 << 4;
const INT_TX: u64 = 1 << 5;
const INT_RT: u64 = 1 << 6;
/// Depth of the receive FIFO.
const RX_FIFO: usize = 32;

/// PeriphID0..3 then PCellID0..3 of an ARM PL011 r1p5, at 0xfe0..0xffc.
const ID_REGISTERS: [u8; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// Longest line passed on at once; longer output is split.
const MAX_LINE: usize = 256;

/// Where console output goes: the instance's name, text without its newline (as the guest
/// wrote it: the sink escapes it, see [`escape_controls`]), and whether the text ends a line
/// (`false` for a partial line passed on early, such as a shell prompt).
pub type LineSink = fn(instance: &str, text: &str, ends_line: bool);

/// Guest text as it may appear on the shared board console: control characters other than tab
/// (C0, DEL and C1, which includes the 8-bit CSI) shown as `\x1b`-style escapes, so a guest can
/// neither drive the operator's terminal nor start a line that looks like the hypervisor's.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    let escaped = |c: char| c.is_control() && c != '\t';
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            // Writing to a String cannot fail.
            let _ = core::fmt::Write::write_fmt(&mut shown, format_args!("\\x{:02x}", c as u32));
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

// The exception vector answers a load of FR whatever its size (`console_flag_read`): every flag
// FR can show must be in its low byte.
const _: () = assert!((FR_TXFE | FR_RXFE | FR_RXFF) >> 8 == 0);

/// FR as it reads with `rx_len` bytes in the receive FIFO (the transmit FIFO is always empty).
fn flags(rx_len: usize) -> u64 {
    let rx_state = match rx_len {
        0 => FR_RXFE,
        RX_FIFO => FR_RXFF,
        _ => 0,
    };
    FR_TXFE | rx_state
}

/// How a line is passed on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Emit {
    /// At its newline.
    Line,
    /// Early, because it reached [`MAX_LINE`]: the rest follows on the same line.
    Split,
    /// Early, unfinished, because the vCPU that wrote it went idle (a prompt).
    Prompt,
}

/// The line being written, and the vCPU that wrote to the data register last (the open line is
/// its own).
struct TxLine {
    bytes: Vec<u8>,
    writer: usize,
}

/// The part of a [`Pl011`] that the fast path uses without the instance's lock: the line being
/// written (under a lock of its own) and the receive FIFO's fill level.
pub struct Pl011Fast {
    tx: Mutex<TxLine>,
    /// FR as a read answers it now (it follows the receive FIFO's level, as the model last
    /// left it): read by the fast path, in the exception vector itself for a plain load.
    flag_register: AtomicU64,
}

impl Pl011Fast {
    /// A read at `offset` if it needs nothing but this part (FR): its value.
    pub fn read(&self, offset: u64) -> Option<u64> {
        (offset == FR).then(|| self.flag_register.load(Ordering::Relaxed))
    }

    /// FR's value as a read answers it now, for a reader that loads it by address (the
    /// exception vector's answer to a plain load of FR).
    pub fn flag_register(&self) -> &AtomicU64 {
        &self.flag_register
    }

    /// True if the line being written is vCPU `vcpu`'s and not empty (a prompt to pass on
    /// when it goes idle); the model's [`Pl011::flush_prompt`] checks again under its lock.
    pub fn holds_line_of(&self, vcpu: usize) -> bool {
        let tx = self.tx.lock();
        !tx.bytes.is_empty() && tx.writer == vcpu
    }

    /// A write of `value` by vCPU `vcpu` at `offset` if it needs nothing but this part: true
    /// for a byte written to DR that goes into the line. A newline, or a byte that would fill
    /// the line, passes the line on: the model's part, under the instance's lock, with the
    /// console budget.
    pub fn write(&self, vcpu: usize, offset: u64, value: u64) -> bool {
        if offset != DR {
            return false;
        }
        let byte = value as u8;
        let mut tx = self.tx.lock();
        if byte == b'\n' || tx.bytes.len() + 1 >= MAX_LINE {
            return false;
        }
        tx.writer = vcpu;
        if byte != b'\r' {
            tx.bytes.push(byte);
        }
        true
    }
}

/// An emulated PL011 with its guest-visible register state.
pub struct Pl011 {
    instance: String,
    sink: LineSink,
    /// Guest-physical base address of the register window.
    base: u64,
    /// The interrupt the UART's line drives.
    intid: u32,
    /// The level last driven on that line.
    irq_level: bool,
    /// The line being written and the receive FIFO's level, shared with the fast path.
    fast: Arc<Pl011Fast>,
    /// An empty buffer the size of a line, swapped with the line being passed on.
    spare: Vec<u8>,
    /// The last text passed on was a prompt, already charged to the budget.
    prompt_shown: bool,
    /// Bounds the lines this UART puts on the board console.
    budget: LogBudget,
    /// The counter and its frequency as last set (the budget's clock).
    clock: (u64, u64),
    rx: VecDeque<u8>,
    ibrd: u64,
    fbrd: u64,
    lcr_h: u64,
    cr: u64,
    ifls: u64,
    imsc: u64,
    dmacr: u64,
    ilpr: u64,
}

impl Pl011 {
    /// The size of the register window.
    pub const WINDOW: u64 = 0x1000;

    /// A UART in its reset state at guest-physical `base`, whose interrupt line drives `intid`
    /// and whose lines go to `sink` under the name `instance`.
    pub fn new(instance: &str, sink: LineSink, base: u64, intid: u32) -> Self {
        Self {
            instance: instance.into(),
            sink,
            base,
            intid,
            irq_level: false,
            fast: Arc::new(Pl011Fast {
                tx: Mutex::new(TxLine {
                    bytes: Vec::with_capacity(MAX_LINE),
                    writer: 0,
                }),
                flag_register: AtomicU64::new(flags(0)),
            }),
            spare: Vec::with_capacity(MAX_LINE),
            prompt_shown: false,
            budget: LogBudget::console(0),
            clock: (0, 1),
            rx: VecDeque::with_capacity(RX_FIFO),
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: 0x300,
            ifls: 0x12,
            imsc: 0,
            dmacr: 0,
            ilpr: 0,
        }
    }

    /// What the fast path shares with this UART.
    pub fn fast(&self) -> Arc<Pl011Fast> {
        self.fast.clone()
    }

    /// A byte written to DR by vCPU `vcpu`.
    fn transmit(&mut self, vcpu: usize, byte: u8) {
        let pass_on = {
            let mut tx = self.fast.tx.lock();
            tx.writer = vcpu;
            let pass_on = match byte {
                b'\n' => Some(Emit::Line),
                b'\r' => None,
                _ => {
                    tx.bytes.push(byte);
                    (tx.bytes.len() >= MAX_LINE).then_some(Emit::Split)
                }
            };
            if pass_on.is_some() {
                core::mem::swap(&mut tx.bytes, &mut self.spare);
            }
            pass_on
        };
        if let Some(how) = pass_on {
            self.emit(how);
        }
    }

    /// Passes the line in the spare buffer on to the sink, `how` it ends, and empties the
    /// buffer. (The line's bytes are swapped into it under the shared part's lock, in the same
    /// hold that decided to pass them on, so that neither buffer is allocated again.)
    fn emit(&mut self, how: Emit) {
        let text = String::from_utf8_lossy(&self.spare);
        let (now, hz) = self.clock;
        // Every line, chunk of a long line and prompt is charged to the console budget, but
        // for the end of a line whose prompt was: a prompt and what is typed after it is one
        // line.
        let charged = !(how == Emit::Line && self.prompt_shown);
        self.prompt_shown = how == Emit::Prompt;
        let admission = if charged {
            self.budget.admit(now, hz)
        } else {
            Admission::Print { suppressed: 0 }
        };
        let ends_line = how == Emit::Line;
        if let Admission::Print { suppressed } = admission {
            if suppressed > 0 {
                let note = alloc::format!(
                    "({suppressed} console lines suppressed: at most {} a second)",
                    self.budget.per_second()
                );
                (self.sink)(&self.instance, &note, true);
            }
            (self.sink)(&self.instance, &text, ends_line);
        }
        drop(text);
        self.spare.clear();
    }

    /// Sets the clock the console budget runs on: the counter reads `now`, at `hz` a second.
    pub fn set_clock(&mut self, now: u64, hz: u64) {
        self.clock = (now, hz.max(1));
    }

    /// Passes on the partial line if vCPU `vcpu` wrote it: a prompt, now that the vCPU that
    /// printed it went idle. Another vCPU's idle time says nothing about a line still being
    /// written (an SMP guest prints from any CPU), so that line waits for its newline.
    pub fn flush_prompt(&mut self, vcpu: usize) {
        let open = {
            let mut tx = self.fast.tx.lock();
            let open = !tx.bytes.is_empty() && tx.writer == vcpu;
            if open {
                core::mem::swap(&mut tx.bytes, &mut self.spare);
            }
            open
        };
        if open {
            self.emit(Emit::Prompt);
        }
    }

    /// A byte arrives on the receive line; dropped (overrun) when the FIFO is full.
    pub fn receive(&mut self, byte: u8) {
        if self.rx.len() < RX_FIFO {
            self.rx.push_back(byte);
            self.rx_changed();
        }
    }

    /// Tells the fast path what FR reads now that the receive FIFO's level changed.
    fn rx_changed(&self) {
        self.fast
            .flag_register
            .store(flags(self.rx.len()), Ordering::Relaxed);
    }

    /// Room left in the receive FIFO.
    pub fn receive_space(&self) -> usize {
        RX_FIFO - self.rx.len()
    }

    /// Raw interrupt status: transmit always, receive and timeout while data waits.
    fn raw_interrupts(&self) -> u64 {
        let rx = if self.rx.is_empty() {
            0
        } else {
            INT_RX | INT_RT
        };
        INT_TX | rx
    }

    /// Level of the UART's interrupt output (any unmasked raw interrupt).
    fn interrupt_level(&self) -> bool {
        self.raw_interrupts() & self.imsc != 0
    }

    /// Drives the interrupt line into `irq` to the UART's level if that moved since it last did,
    /// and says whether it moved.
    pub fn drive_line(&mut self, irq: &mut impl InterruptSink) -> Changes {
        let level = self.interrupt_level();
        if level == self.irq_level {
            return Changes::default();
        }
        self.irq_level = level;
        Changes {
            interrupts: true,
            kicks: irq.set_line(self.intid, level),
        }
    }

    /// The interrupt controller the line goes to was reset, so the line is low there: the UART
    /// drives it again at its next [`Pl011::drive_line`] if its level is high.
    pub fn interrupt_controller_reset(&mut self) {
        self.irq_level = false;
    }

    /// The guest-visible state, for a checkpoint: registers, the receive FIFO and output
    /// that has not reached its newline yet.
    pub fn save(&self) -> checkpoint::Pl011State {
        checkpoint::Pl011State {
            ibrd: self.ibrd,
            fbrd: self.fbrd,
            lcr_h: self.lcr_h,
            cr: self.cr,
            ifls: self.ifls,
            imsc: self.imsc,
            dmacr: self.dmacr,
            ilpr: self.ilpr,
            raw_interrupts: self.raw_interrupts(),
            rx: self.rx.iter().copied().collect(),
            line: self.fast.tx.lock().bytes.clone(),
        }
    }

    /// Takes on `saved` (from [`Pl011::save`] on another board); the interrupt line is driven
    /// again at the next [`Pl011::drive_line`]. The raw interrupt status follows from the FIFO
    /// state, so the saved one is not needed.
    pub fn restore(&mut self, saved: &checkpoint::Pl011State) {
        self.ibrd = saved.ibrd & 0xffff;
        self.fbrd = saved.fbrd & 0x3f;
        self.lcr_h = saved.lcr_h & 0xff;
        self.cr = saved.cr & 0xff87;
        self.ifls = saved.ifls & 0x3f;
        self.imsc = saved.imsc & 0x7ff;
        self.dmacr = saved.dmacr & 0x7;
        self.ilpr = saved.ilpr & 0xff;
        self.rx = saved.rx.iter().copied().take(RX_FIFO).collect();
        self.rx_changed();
        self.irq_level = false;
        let mut tx = self.fast.tx.lock();
        tx.bytes.clear();
        tx.bytes
            .extend(saved.line.iter().copied().take(MAX_LINE - 1));
    }

    /// A guest read of the register at `offset` (any access size).
    pub fn read(&mut self, offset: u64, _size: u8) -> u64 {
        match offset {
            DR => {
                let byte = self.rx.pop_front().map_or(0, u64::from);
                self.rx_changed();
                byte
            }
            FR => flags(self.rx.len()),
            RIS => self.raw_interrupts(),
            MIS => self.raw_interrupts() & self.imsc,
            ILPR => self.ilpr,
            IBRD => self.ibrd,
            FBRD => self.fbrd,
            LCR_H => self.lcr_h,
            CR => self.cr,
            IFLS => self.ifls,
            IMSC => self.imsc,
            DMACR => self.dmacr,
            // No receive errors are ever recorded.
            RSR_ECR => 0,
            ID_BASE..=0xffc if offset.is_multiple_of(4) => {
                u64::from(ID_REGISTERS[((offset - ID_BASE) / 4) as usize])
            }
            _ => 0,
        }
    }

    /// A write of `value` by vCPU `vcpu` to the register at `offset` (any access size).
    pub fn write(&mut self, vcpu: usize, offset: u64, _size: u8, value: u64) {
        match offset {
            DR => self.transmit(vcpu, value as u8),
            ILPR => self.ilpr = value & 0xff,
            IBRD => self.ibrd = value & 0xffff,
            FBRD => self.fbrd = value & 0x3f,
            LCR_H => self.lcr_h = value & 0xff,
            CR => self.cr = value & 0xff87,
            IFLS => self.ifls = value & 0x3f,
            IMSC => self.imsc = value & 0x7ff,
            DMACR => self.dmacr = value & 0x7,
            // Interrupts here are levels of the FIFO state, and no errors are ever recorded, so
            // clearing them changes nothing.
            ICR | RSR_ECR => {}
            // The remaining offsets are read-only or reserved.
            _ => {}
        }
    }
}

/// The UART as the guest reaches it: its registers, with its interrupt line driven into `irq`
/// after every access.
pub struct Pl011Port<'a, S: InterruptSink> {
    /// The UART.
    pub uart: &'a mut Pl011,
    /// The interrupt controller its line goes to.
    pub irq: &'a mut S,
    /// The vCPU that accesses it.
    pub vcpu: usize,
}

impl<S: InterruptSink> MmioDevice for Pl011Port<'_, S> {
    fn region(&self) -> (u64, u64) {
        (self.uart.base, Pl011::WINDOW)
    }

    fn read(&mut self, offset: u64, size: u8) -> (u64, Changes) {
        let value = self.uart.read(offset, size);
        (value, self.uart.drive_line(self.irq))
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) -> Changes {
        self.uart.write(self.vcpu, offset, size, value);
        self.uart.drive_line(self.irq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::string::ToString;

    std::thread_local! {
        static LINES: RefCell<Vec<(String, String, bool)>> = const { RefCell::new(Vec::new()) };
    }

    fn record(instance: &str, text: &str, ends_line: bool) {
        LINES.with(|lines| {
            lines
                .borrow_mut()
                .push((instance.to_string(), text.to_string(), ends_line))
        });
    }

    fn take_lines() -> Vec<(String, String, bool)> {
        LINES.with(|lines| core::mem::take(&mut *lines.borrow_mut()))
    }

    const BASE: u64 = 0x0900_0000;
    const INTID: u32 = 33;

    /// An interrupt controller that records the lines driven into it.
    #[derive(Default)]
    struct Lines(Vec<(u32, bool)>);

    impl InterruptSink for Lines {
        fn set_line(&mut self, intid: u32, level: bool) -> u64 {
            self.0.push((intid, level));
            0
        }
    }

    #[test]
    fn the_port_drives_the_line_when_its_level_moves() {
        let mut uart = Pl011::new("g", record, BASE, INTID);
        let mut irq = Lines::default();
        let mut port = Pl011Port {
            uart: &mut uart,
            irq: &mut irq,
            vcpu: 0,
        };
        assert_eq!(port.region(), (BASE, 0x1000));
        assert_eq!(
            port.write(IMSC, 4, INT_RX),
            Changes::default(),
            "nothing received"
        );
        port.uart.receive(b'a');
        port.uart.receive(b'b');
        assert_eq!(port.read(FR, 4).1, Changes::INTERRUPTS);
        assert_eq!(port.irq.0, [(INTID, true)]);
        assert_eq!(
            port.read(DR, 4),
            (u64::from(b'a'), Changes::default()),
            "a byte still waits"
        );
        assert_eq!(port.read(DR, 4), (u64::from(b'b'), Changes::INTERRUPTS));
        assert_eq!(port.irq.0, [(INTID, true), (INTID, false)]);
        port.uart.receive(b'c');
        assert_eq!(port.read(FR, 4).1, Changes::INTERRUPTS);
        port.uart.interrupt_controller_reset();
        assert_eq!(
            port.write(IMSC, 4, INT_RX),
            Changes::INTERRUPTS,
            "the line is driven again after the controller's reset"
        );
        assert_eq!(
            irq.0,
            [(INTID, true), (INTID, false), (INTID, true), (INTID, true)]
        );
    }

    #[test]
    fn lines_reach_the_sink_with_the_instance_name() {
        let mut uart = Pl011::new("guest0", record, BASE, INTID);
        let mut irq = Lines::default();
        let mut port = |vcpu, text: &[u8]| {
            let mut port = Pl011Port {
                uart: &mut uart,
                irq: &mut irq,
                vcpu,
            };
            for byte in text {
                assert_eq!(port.write(DR, 1, u64::from(*byte)), Changes::default());
            }
        };
        port(0, b"hello\r\nworld");
        assert_eq!(
            take_lines(),
            [("guest0".to_string(), "hello".to_string(), true)]
        );
        uart.flush_prompt(1);
        assert_eq!(take_lines(), [], "vCPU 1 going idle ends nobody's line");
        uart.flush_prompt(0);
        assert_eq!(
            take_lines(),
            [("guest0".to_string(), "world".to_string(), false)],
            "the vCPU that printed a prompt went idle: it is shown"
        );
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        let mut uart = Pl011::new("g", record, BASE, INTID);
        for byte in b"\x1b[2Jred\x07\tok\r\n" {
            uart.write(0, DR, 1, u64::from(*byte));
        }
        let line = take_lines().remove(0).1;
        assert_eq!(line, "\x1b[2Jred\x07\tok", "the sink gets the guest's text");
        assert_eq!(escape_controls(&line), "\\x1b[2Jred\\x07\tok");
        assert_eq!(escape_controls("a\u{9b}b\u{7f}"), "a\\x9bb\\x7f");
        assert_eq!(
            escape_controls("caf\u{e9} \u{1f600}"),
            "caf\u{e9} \u{1f600}"
        );
    }

    #[test]
    fn a_console_flood_is_rate_limited_and_reported() {
        let mut uart = Pl011::new("g", record, BASE, INTID);
        uart.set_clock(0, 1_000_000_000);
        for _ in 0..LogBudget::CONSOLE_BURST + 50 {
            uart.write(0, DR, 1, u64::from(b'x'));
            uart.write(0, DR, 1, u64::from(b'\n'));
        }
        assert_eq!(take_lines().len() as u64, LogBudget::CONSOLE_BURST);
        uart.set_clock(1_000_000_000, 1_000_000_000);
        uart.write(0, DR, 1, u64::from(b'y'));
        uart.write(0, DR, 1, u64::from(b'\n'));
        let lines = take_lines();
        assert_eq!(
            lines[0].1,
            "(50 console lines suppressed: at most 200 a second)"
        );
        assert_eq!(lines[1].1, "y");
    }

    #[test]
    fn long_lines_are_split() {
        let mut uart = Pl011::new("g", record, BASE, INTID);
        for _ in 0..MAX_LINE + 3 {
            uart.write(0, DR, 1, u64::from(b'x'));
        }
        uart.write(0, DR, 1, u64::from(b'\n'));
        let lines = take_lines();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].1.len(), lines[0].2), (MAX_LINE, false));
        assert_eq!((lines[1].1.len(), lines[1].2), (3, true));
    }

    #[test]
    fn output_without_newlines_is_rate_limited_too() {
        let mut uart = Pl011::new("g", record, BASE, INTID);
        uart.set_clock(0, 1_000_000_000);
        for _ in 0..(LogBudget::CONSOLE_BURST + 5) * MAX_LINE as u64 {
            uart.write(0, DR, 1, u64::from(b'x'));
        }
        assert_eq!(take_lines().len() as u64, LogBudget::CONSOLE_BURST);
    }

    #[test]
    fn prompts_are_rate_limited_too_but_the_line_they_start_costs_nothing_more() {
        let mut uart = Pl011::new("g", record, BASE, INTID);
        uart.set_clock(0, 1_000_000_000);
        for _ in 0..LogBudget::CONSOLE_BURST + 5 {
            uart.write(0, DR, 1, u64::from(b'x'));
            uart.flush_prompt(0);
        }
        assert_eq!(take_lines().len() as u64, LogBudget::CONSOLE_BURST);

        let mut uart = Pl011::new("g", record, BASE, INTID);
        uart.set_clock(0, 1_000_000_000);
        for _ in 0..LogBudget::CONSOLE_BURST {
            for byte in b"# ls\n" {
                uart.write(0, DR, 1, u64::from(*byte));
                if *byte == b' ' {
                    uart.flush_prompt(0);
                }
            }
        }
        let lines = take_lines();
        assert_eq!(
            lines.len() as u64,
            2 * LogBudget::CONSOLE_BURST,
            "each prompt and its line"
        );
        assert_eq!(lines[0], ("g".to_string(), "# ".to_string(), false));
        assert_eq!(lines[1], ("g".to_string(), "ls".to_string(), true));
    }

    #[test]
    fn the_fast_path_fills_the_line_the_model_passes_on() {
        let mut uart = Pl011::new("g", record, BASE, INTID);
        let fast = uart.fast();
        assert_eq!(fast.read(FR), Some(FR_TXFE | FR_RXFE));
        uart.receive(b'a');
        assert_eq!(fast.read(FR), Some(FR_TXFE), "a byte waits");
        assert_eq!(
            fast.read(DR),
            None,
            "reading DR takes it from the model's FIFO"
        );
        assert_eq!(uart.read(DR, 4), u64::from(b'a'));
        assert_eq!(fast.read(FR), Some(uart.read(FR, 4)));
        for _ in 0..RX_FIFO {
            uart.receive(b'b');
        }
        assert_eq!(fast.read(FR), Some(FR_TXFE | FR_RXFF));
        assert_eq!(fast.read(IMSC), None);

        for byte in b"he\rllo" {
            assert!(fast.write(1, DR, u64::from(*byte)));
        }
        assert!(
            !fast.write(1, DR, u64::from(b'\n')),
            "a newline is the model's"
        );
        assert!(!fast.write(1, IMSC, 0), "so is every other register");
        uart.flush_prompt(0);
        assert_eq!(take_lines(), [], "vCPU 1 wrote the line");
        uart.write(1, DR, 1, u64::from(b'\n'));
        assert_eq!(take_lines(), [("g".to_string(), "hello".to_string(), true)]);

        for _ in 0..MAX_LINE - 1 {
            assert!(fast.write(0, DR, u64::from(b'x')));
        }
        assert!(
            !fast.write(0, DR, u64::from(b'x')),
            "the byte that fills the line is the model's"
        );
        assert_eq!(
            uart.save().line.len(),
            MAX_LINE - 1,
            "a checkpoint has the open line"
        );
    }

    #[test]
    fn identification_and_flags() {
        let mut uart = Pl011::new("g", record, BASE, INTID);
        let ids: Vec<u64> = (0..8).map(|i| uart.read(ID_BASE + 4 * i, 4)).collect();
        assert_eq!(ids, [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
        assert_eq!(uart.read(FR, 4), FR_TXFE | FR_RXFE);
        assert_eq!(uart.read(0xfe2, 1), 0, "unaligned ID offsets are reserved");
        assert_eq!(uart.read(CR, 4), 0x300, "reset value of UARTCR");
    }

    #[test]
    fn receive_fifo_and_interrupts() {
        let mut uart = Pl011::new("g", record, BASE, INTID);
        assert!(!uart.interrupt_level(), "everything masked at reset");
        uart.write(0, IMSC, 4, INT_RX | INT_RT);
        assert!(!uart.interrupt_level(), "nothing received yet");
        uart.receive(b'l');
        uart.receive(b's');
        assert!(uart.interrupt_level());
        assert_eq!(uart.read(MIS, 4), INT_RX | INT_RT);
        assert_eq!(uart.read(FR, 4) & FR_RXFE, 0);
        assert_eq!(uart.read(DR, 4), u64::from(b'l'));
        assert_eq!(uart.read(DR, 4), u64::from(b's'));
        assert_eq!(uart.read(FR, 4) & FR_RXFE, FR_RXFE);
        assert!(!uart.interrupt_level());
        for byte in 0..40 {
            uart.receive(byte);
        }
        assert_eq!(
            uart.read(FR, 4) & FR_RXFF,
            FR_RXFF,
            "32 bytes fill the FIFO; the rest overrun"
        );
        uart.write(0, IMSC, 4, INT_TX);
        assert_eq!(
            uart.read(MIS, 4),
            INT_TX,
            "the transmit FIFO is always below its trigger level"
        );
    }

    #[test]
    fn control_registers_read_back() {
        let mut uart = Pl011::new("g", record, BASE, INTID);
        uart.write(0, IBRD, 4, 0x1_0027);
        uart.write(0, FBRD, 4, 0xff);
        uart.write(0, LCR_H, 4, 0x70);
        uart.write(0, CR, 4, 0x301);
        uart.write(0, IMSC, 4, 0x50);
        assert_eq!(uart.read(IBRD, 4), 0x0027);
        assert_eq!(uart.read(FBRD, 4), 0x3f);
        assert_eq!(uart.read(LCR_H, 4), 0x70);
        assert_eq!(uart.read(CR, 4), 0x301);
        assert_eq!(uart.read(IMSC, 4), 0x50);
        uart.write(0, FR, 4, 0);
        assert_eq!(uart.read(FR, 4), FR_TXFE | FR_RXFE, "FR is read-only");
        assert_eq!(uart.read(DR, 4), 0, "an empty FIFO reads as zero");
    }
}
