//! Test guest `flood`: a hostile guest that floods the hypervisor's log with 1,000,000 unknown
//! HVC calls (each must still answer NOT_SUPPORTED), then points VBAR_EL1 at an unmapped IPA and
//! jumps there with its MMU off, so the instruction abort the hypervisor injects lands on a vector
//! that is itself unmapped. The hypervisor is expected to stop the vCPU: the guest never gets
//! control back, prints no RESULT line and does not power off.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    println!("the test guests only run on aarch64-unknown-none");
}

#[cfg(target_os = "none")]
mod guest {
    use test_guests::{
        check, entry, hvc_call, irq, println, report::Text, smccc::NOT_SUPPORTED, take_exception,
    };

    entry!(run);

    /// An SMCCC function id nobody implements (vendor-specific hypervisor service range).
    const UNKNOWN_FID: u64 = 0x8600_1234;
    const CALLS: u64 = 1_000_000;
    const PROGRESS_EVERY: u64 = 250_000;
    /// An IPA that is neither RAM (0x4000_0000..) nor a device (0x0800_0000..0x0a00_4000).
    const UNMAPPED: u64 = 0x1000_0000;
    /// SCTLR_EL1.M: stage 1 translation (the MMU) enabled.
    const SCTLR_M: u64 = 1;

    fn run(_dtb: usize) -> ! {
        irq::mask();
        println!("flood: starting {CALLS} unknown hypercalls");
        take_exception();
        let mut mismatches = 0u64;
        let mut first_mismatch = None;
        let mut made = 0;
        while made < CALLS {
            for _ in 0..PROGRESS_EVERY {
                let ret = hvc_call(UNKNOWN_FID, 0, 0, 0);
                if ret != NOT_SUPPORTED {
                    mismatches += 1;
                    first_mismatch.get_or_insert(ret);
                }
            }
            made += PROGRESS_EVERY;
            println!("flood: {made} calls made");
        }
        let exc = take_exception();
        check(
            "unknown hvc answered",
            mismatches == 0,
            format_args!(
                "{mismatches} of {CALLS} calls to {UNKNOWN_FID:#x} did not return NOT_SUPPORTED (first: {:#x})",
                first_mismatch.unwrap_or_default()
            ),
        );
        let detail = match exc {
            Some(e) => Text::<160>::format(format_args!("an HVC took an exception at EL1: {e}")),
            None => Text::new(),
        };
        check("flood done", exc.is_none(), detail.as_str());

        println!("flood: faulting at an unmapped vector");
        fault_at_unmapped_vector()
    }

    /// Sets VBAR_EL1 to [`UNMAPPED`], turns the MMU off and branches to [`UNMAPPED`].
    ///
    /// The MMU goes off because the boot identity map makes 0..1 GiB device memory that EL1 may
    /// not execute (PXN): with it on, the fetches would fault at stage 1 and loop inside EL1
    /// without the hypervisor ever seeing them. With it off they reach stage 2: the fetch at
    /// UNMAPPED makes the hypervisor inject an instruction abort at VBAR_EL1 + 0x200, and the
    /// fetch there faults again at that same address.
    fn fault_at_unmapped_vector() -> ! {
        // SAFETY: deliberately ends the guest: nothing after the branch runs. The MMU goes off
        // with the code identity mapped (VA = PA), so the instructions up to the branch are fetched
        // from the same addresses; nothing is read or written in memory.
        unsafe {
            let sctlr: u64;
            core::arch::asm!("mrs {0}, sctlr_el1", out(reg) sctlr, options(nomem, nostack));
            core::arch::asm!(
                "msr vbar_el1, {target}",
                "isb",
                "msr sctlr_el1, {sctlr}",
                "isb",
                "br {target}",
                "2:",
                "wfi",
                "b 2b",
                target = in(reg) UNMAPPED,
                sctlr = in(reg) sctlr & !SCTLR_M,
                options(noreturn, nostack),
            )
        }
    }
}
