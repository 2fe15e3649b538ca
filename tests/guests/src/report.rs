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
