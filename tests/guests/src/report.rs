//! PASS/FAIL reporting in the line format the QEMU scenarios look for.

use core::{
    fmt::Display,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{println, smccc::system_off};

static FAILURES: AtomicU32 = AtomicU32::new(0);

/// Prints `PASS: <name>`.
pub fn pass(name: &str) {
    println!("PASS: {name}");
}

/// Prints `FAIL: <name>: <detail>` and counts the failure.
pub fn fail(name: &str, detail: impl Display) {
    FAILURES.fetch_add(1, Ordering::SeqCst);
    println!("FAIL: {name}: {detail}");
}

/// Prints `PASS: <name>` if `ok`, else `FAIL: <name>: <detail>`; returns `ok`.
pub fn check(name: &str, ok: bool, detail: impl Display) -> bool {
    if ok {
        pass(name)
    } else {
        fail(name, detail)
    }
    ok
}

/// Prints the overall `RESULT:` line and powers off.
pub fn finish() -> ! {
    match FAILURES.load(Ordering::SeqCst) {
        0 => println!("RESULT: PASS"),
        n => println!("RESULT: FAIL ({n} failed)"),
    }
    system_off()
}

/// A short formatted string in a fixed buffer (the guests have no allocator); `write!` into it,
/// read it back with [`Text::as_str`]. Text beyond `N` bytes is cut off.
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    /// An empty text.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    /// `args` formatted.
    pub fn format(args: core::fmt::Arguments) -> Self {
        let mut text = Self::new();
        let _ = core::fmt::Write::write_fmt(&mut text, args);
        text
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        match core::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            // Cut inside a UTF-8 sequence: keep the valid prefix.
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = (self.len + s.len()).min(N);
        self.buf[self.len..end].copy_from_slice(&s.as_bytes()[..end - self.len]);
        self.len = end;
        Ok(())
    }
}
