//! Test guest `hostile`: illegal operations (unmapped IPA accesses, unknown HVC/SMC calls, an
//! IMPLEMENTATION DEFINED system register), each reported with what the guest received.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    println!("the test guests only run on aarch64-unknown-none");
}

#[cfg(target_os = "none")]
mod guest {
    use test_guests::{
        check, entry, fail, finish, hvc_call, mmio_read32, mmio_write32, println, smc_call,
        smccc::{NOT_SUPPORTED, PSCI_VERSION},
        take_exception,
    };

    entry!(run);

    /// EC of a data abort taken without a change in exception level.
    const EC_DABT_CUR: u64 = 0x25;
    /// DFSC of a synchronous external abort.
    const DFSC_SEA: u64 = 0x10;
    /// EC of an Undefined Instruction exception.
    const EC_UNKNOWN: u64 = 0x00;

    fn run(_dtb: usize) -> ! {
        abort("read unmapped ipa", 0x3000_0000, false);
        abort("write unmapped ipa", 0x3000_0008, true);
        call("unknown hvc", 0x8600_1234, hvc_call);
        call("unknown smc", 0xc300_0001, smc_call);
        sysreg();

        take_exception();
        let version = hvc_call(PSCI_VERSION, 0, 0, 0);
        let exc = take_exception();
        match exc {
            Some(e) => fail(
                "still alive",
                format_args!("PSCI_VERSION took an exception at EL1: {e}"),
            ),
            None => {
                println!("still alive: PSCI_VERSION={version:#x}");
                check(
                    "still alive",
                    version == 0x1_0001,
                    "expected PSCI_VERSION 0x10001",
                );
            }
        }
        finish()
    }

    /// One 32-bit access to an address with nothing behind it: expects a synchronous external abort.
    fn abort(name: &str, addr: usize, write: bool) {
        take_exception();
        // SAFETY: nothing of the guest lives at `addr` (an aligned, unbacked IPA); the expected
        // abort is recorded and skipped by the vectors.
        let value = unsafe {
            if write {
                mmio_write32(addr, 0xdead_beef);
                0
            } else {
                mmio_read32(addr)
            }
        };
        match take_exception() {
            Some(e) => {
                println!(
                    "{name}: ESR={:#x} FAR={:#x} (EC={:#x} DFSC={:#x} WnR={})",
                    e.esr,
                    e.far,
                    e.ec(),
                    e.fsc(),
                    e.wnr() as u8
                );
                let ok = e.ec() == EC_DABT_CUR
                    && e.fsc() == DFSC_SEA
                    && e.wnr() == write
                    && e.far == addr as u64;
                check(
                    name,
                    ok,
                    format_args!(
                        "expected EC=0x25 DFSC=0x10 WnR={} FAR={addr:#x}",
                        write as u8
                    ),
                );
            }
            None if write => fail(name, "no exception"),
            None => fail(name, format_args!("no exception, read {value:#x}")),
        }
    }

    /// An SMCCC call nobody implements: expects NOT_SUPPORTED in x0 and no exception.
    fn call(name: &str, fid: u64, conduit: fn(u64, u64, u64, u64) -> u64) {
        take_exception();
        let ret = conduit(fid, 0, 0, 0);
        match take_exception() {
            Some(e) => fail(name, format_args!("{fid:#x} took an exception at EL1: {e}")),
            None => {
                println!("{name}: {fid:#x} -> x0={ret:#x}");
                check(
                    name,
                    ret == NOT_SUPPORTED,
                    "expected NOT_SUPPORTED (0xffffffffffffffff)",
                );
            }
        }
    }

    /// Reads an IMPLEMENTATION DEFINED register (trapped by HCR_EL2.TIDCP): expects an Undefined
    /// Instruction exception at EL1.
    fn sysreg() {
        const NAME: &str = "trapped sysreg";
        take_exception();
        // SAFETY: reading a system register has no side effect here; if it is undefined, the
        // vectors record the exception and skip the instruction.
        unsafe { core::arch::asm!("mrs {0}, S3_0_C15_C0_0", out(reg) _, options(nostack)) };
        match take_exception() {
            Some(e) => {
                println!(
                    "{NAME}: ESR={:#x} (EC={:#x}) ELR={:#x}",
                    e.esr,
                    e.ec(),
                    e.elr
                );
                check(
                    NAME,
                    e.ec() == EC_UNKNOWN,
                    "expected EC=0x00 (Undefined Instruction)",
                );
            }
            None => fail(NAME, "S3_0_C15_C0_0 read without an exception"),
        }
    }
}
