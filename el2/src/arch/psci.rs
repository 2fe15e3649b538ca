//! Calls from the hypervisor to the board's PSCI firmware.

use platforms::PsciConduit;

/// PSCI SYSTEM_OFF.
const SYSTEM_OFF: u64 = 0x8400_0008;

/// An SMCCC call with `instruction` (`smc #0` or `hvc #0`): function id and result in x0,
/// arguments in x1..x3, and x4..x17 clobbered as SMCCC 1.1 allows.
macro_rules! smccc {
    ($instruction:literal, $result:ident, $args:ident) => {
        core::arch::asm!(
            $instruction,
            inout("x0") $result,
            inout("x1") $args[0] => _, inout("x2") $args[1] => _, inout("x3") $args[2] => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
            out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _,
            out("x15") _, out("x16") _, out("x17") _,
            options(nostack)
        )
    };
}

/// Calls firmware function `function` with up to three arguments; returns x0.
pub fn call(conduit: PsciConduit, function: u64, args: [u64; 3]) -> u64 {
    let mut result = function;
    match conduit {
        // SAFETY: an SMCCC call to EL3 firmware; it may clobber x0-x17, which the asm declares,
        // and it touches no memory the hypervisor owns.
        PsciConduit::Smc => unsafe { smccc!("smc #0", result, args) },
        // SAFETY: as for SMC, to the PSCI implementation one exception level up.
        PsciConduit::Hvc => unsafe { smccc!("hvc #0", result, args) },
    }
    result
}

/// Powers the board off; parks the CPU if the firmware returns.
pub fn system_off(conduit: PsciConduit) -> ! {
    call(conduit, SYSTEM_OFF, [0; 3]);
    loop {
        aarch64_cpu::asm::wfe();
    }
}
