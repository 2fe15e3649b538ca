//! EL2 configuration for running guests, and moving a vCPU's EL1 state in and out of the CPU.

use aarch64_cpu::registers::*;
use tock_registers::interfaces::{Readable, Writeable};

use crate::exit::TrapSyndrome;
use crate::idregs::GuestIdRegisters;
use crate::timer::EmulatedTimer;
use crate::vcpu::{El1SysRegs, ExceptionRegisters, FpRegs};

/// `CPTR_EL2` (E2H = 0): RES1 bits 13, 9 and 7:0, SVE (TZ, bit 8) and SME (TSM, bit 12) trapped,
/// FP/SIMD (TFP, bit 10) not trapped: guests own the FP registers and the hypervisor, built
/// soft-float, never touches them.
const CPTR_EL2_VALUE: u64 = 0x33ff;

/// `VTCR_EL2.VS`: 16-bit VMIDs.
const VTCR_VS: u64 = 1 << 19;

/// How many VMIDs the CPU has, and the `VTCR_EL2` bits that turn them all on: 65536 where it has
/// 16-bit VMIDs (`ID_AA64MMFR1_EL1.VMIDBits`), else 256.
pub fn vmids() -> (usize, u64) {
    if ID_AA64MMFR1_EL1.read(ID_AA64MMFR1_EL1::VMIDBits) == 0b0010 {
        (1 << 16, VTCR_VS)
    } else {
        (1 << 8, 0)
    }
}

/// The physical address size the CPU supports, as `ID_AA64MMFR0_EL1.PARange`.
pub fn parange() -> u8 {
    ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange) as u8
}

/// Reads the ID register `S3_0_C0_C<crm>_<op2>` for `crm` in 1..=7 (the block `HCR_EL2.TID3`
/// traps; unallocated encodings in it read as zero).
fn read_id_register(crm: u8, op2: u8) -> u64 {
    macro_rules! id_block {
        ($($crm:literal: $($op2:literal)*;)*) => {
            match (crm, op2) {
                $($(($crm, $op2) => {
                    let value: u64;
                    // SAFETY: reading an ID register has no side effects and is permitted at EL2.
                    unsafe {
                        core::arch::asm!(
                            concat!("mrs {}, S3_0_C0_C", stringify!($crm), "_", stringify!($op2)),
                            out(reg) value,
                            options(nomem, nostack, preserves_flags)
                        )
                    };
                    value
                })*)*
                _ => 0,
            }
        };
    }
    id_block! {
        1: 0 1 2 3 4 5 6 7;
        2: 0 1 2 3 4 5 6 7;
        3: 0 1 2 3 4 5 6 7;
        4: 0 1 2 3 4 5 6 7;
        5: 0 1 2 3 4 5 6 7;
        6: 0 1 2 3 4 5 6 7;
        7: 0 1 2 3 4 5 6 7;
    }
}

/// The ID registers guests see: this CPU's, less what the hypervisor keeps from guests.
pub fn guest_id_registers() -> GuestIdRegisters {
    GuestIdRegisters::from_hardware(read_id_register)
}

/// The number of PMU event counters (`PMCR_EL0.N`), 0 where the CPU has no PMU.
fn pmu_counters() -> u64 {
    let version = ID_AA64DFR0_EL1.read(ID_AA64DFR0_EL1::PMUVer);
    if version == 0 || version == 0xf {
        return 0;
    }
    let pmcr: u64;
    // SAFETY: the CPU has an architected PMU (checked above); reading PMCR_EL0 at EL2 has no
    // side effects.
    unsafe {
        core::arch::asm!("mrs {}, pmcr_el0", out(reg) pmcr, options(nomem, nostack, preserves_flags))
    };
    (pmcr >> 11) & 0x1f
}

/// `MDCR_EL2`: every PMU and debug register access from EL1/EL0 traps (PMU: TPM, TPMCR;
/// debug: TDA, TDOSA, TDRA). HPMN keeps its architected meaning (all counters), as firmware
/// leaves it, since the board's firmware may leave the register UNKNOWN. Guests see no PMU
/// (`crate::idregs`: undefined if touched), and debug registers read as zero.
fn configure_debug_traps() {
    MDCR_EL2.write(
        MDCR_EL2::TPM::SET
            + MDCR_EL2::TPMCR::SET
            + MDCR_EL2::TDA::SET
            + MDCR_EL2::TDOSA::SET
            + MDCR_EL2::TDRA::SET
            + MDCR_EL2::HPMN.val(pmu_counters()),
    );
}

/// Sets up this CPU's EL2 controls for running guests: stage 2 on, guests in AArch64, physical
/// interrupts to EL2, and traps for SMC, WFI/WFE, ID registers, IMPLEMENTATION DEFINED
/// registers, and the PMU and debug registers.
pub fn configure_el2(vtcr: u64) {
    HCR_EL2.write(
        HCR_EL2::VM::Enable
            + HCR_EL2::RW::EL1IsAarch64
            + HCR_EL2::IMO::EnableVirtualIRQ
            + HCR_EL2::FMO::EnableVirtualFIQ
            + HCR_EL2::AMO::SET
            + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
            + HCR_EL2::TWI::SET
            + HCR_EL2::TWE::SET
            + HCR_EL2::TIDCP::SET
            + HCR_EL2::TID3::SET
            + HCR_EL2::FB::SET
            + HCR_EL2::BSU::InnerShareable
            + HCR_EL2::PTW::SET,
    );
    CPTR_EL2.set(CPTR_EL2_VALUE);
    configure_debug_traps();
    // The guest's physical counter and timer registers trap and are emulated (`crate::timer`)
    // in the instance's own time, so that time can move with an instance; its virtual counter
    // gets the instance's offset (CNTVOFF_EL2) whenever one of its vCPUs is loaded.
    CNTHCTL_EL2.write(CNTHCTL_EL2::EL1PCEN::CLEAR + CNTHCTL_EL2::EL1PCTEN::CLEAR);
    CNTVOFF_EL2.set(0);
    VTCR_EL2.set(vtcr);
    // Reset-UNKNOWN on real hardware, where the firmware (the Pi's stub) may leave them so:
    // the guests' MIDR_EL1 reads VPIDR_EL2, and HSTR_EL2 would trap AArch32 CP15 accesses.
    // SAFETY: writes EL2 configuration registers of this CPU; no memory is touched.
    unsafe {
        core::arch::asm!(
            "mrs {midr}, midr_el1",
            "msr vpidr_el2, {midr}",
            "msr hstr_el2, xzr",
            midr = out(reg) _,
            options(nostack)
        )
    };
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Makes `vttbr` (stage-2 root and VMID) and `mpidr` current for the next guest entry.
pub fn load_stage2_and_identity(vttbr: u64, mpidr: u64) {
    VTTBR_EL2.set(vttbr);
    VMPIDR_EL2.set(mpidr);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// The counter's frequency in ticks per second (`CNTFRQ_EL0`, set by the board's firmware).
pub fn counter_frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// Milliseconds in `ticks` of the counter.
pub fn ticks_to_ms(ticks: u64) -> u64 {
    ticks / (counter_frequency() / 1000).max(1)
}

/// Counter ticks in `ms` milliseconds.
pub fn ms_to_ticks(ms: u64) -> u64 {
    ms.saturating_mul(counter_frequency() / 1000)
}

/// The physical counter.
pub fn counter() -> u64 {
    CNTPCT_EL0.get()
}

/// The counter as the vCPU loaded here sees it: its instance's time, the board's counter less
/// `CNTVOFF_EL2` (loaded with the instance's offset).
pub fn guest_counter() -> u64 {
    CNTVCT_EL0.get()
}

/// Arms this CPU's deadline timer (the EL1 physical timer, which guests cannot reach) to fire
/// at `deadline`, or stops it.
pub fn arm_deadline_timer(deadline: Option<u64>) {
    match deadline {
        Some(deadline) => {
            CNTP_CVAL_EL0.set(deadline);
            CNTP_CTL_EL0.write(CNTP_CTL_EL0::ENABLE::SET + CNTP_CTL_EL0::IMASK::CLEAR);
        }
        None => CNTP_CTL_EL0.write(CNTP_CTL_EL0::ENABLE::CLEAR),
    }
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Arms this CPU's scheduling timer (the EL2 physical timer, CNTHP) to fire at `deadline` (a
/// slice's end, or a waiting vCPU's wake-up), or stops it.
pub fn arm_scheduling_timer(deadline: Option<u64>) {
    match deadline {
        Some(deadline) => {
            // SAFETY: writes the EL2 timer's compare value; no memory is touched
            // (aarch64-cpu has no CNTHP_CVAL_EL2).
            unsafe {
                core::arch::asm!("msr CNTHP_CVAL_EL2, {}", in(reg) deadline, options(nostack))
            };
            CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
        }
        None => CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::CLEAR),
    }
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Silences this CPU's scheduling timer after it fired, until it is armed again.
pub fn mask_scheduling_timer() {
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::SET);
}

/// Loads a vCPU's virtual timer and its instance's counter offset (`CNTVOFF_EL2`).
pub fn load_virtual_timer(timer: &EmulatedTimer, counter_offset: u64) {
    CNTVOFF_EL2.set(counter_offset);
    CNTV_CVAL_EL0.set(timer.compare);
    CNTV_CTL_EL0.set(timer.control);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Saves the running vCPU's virtual timer and stops it, so that it cannot fire for the next.
pub fn save_virtual_timer() -> EmulatedTimer {
    let timer = EmulatedTimer {
        // ENABLE and IMASK; ISTATUS is derived from the counter.
        control: CNTV_CTL_EL0.get() & 0b11,
        compare: CNTV_CVAL_EL0.get(),
    };
    CNTV_CTL_EL0.set(0);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    timer
}

core::arch::global_asm!(
    r#"
.arch_extension fp
.arch_extension simd
// fn fp_save(regs: *mut FpRegs)
.global fp_save
fp_save:
    stp     q0, q1, [x0, #0]
    stp     q2, q3, [x0, #32]
    stp     q4, q5, [x0, #64]
    stp     q6, q7, [x0, #96]
    stp     q8, q9, [x0, #128]
    stp     q10, q11, [x0, #160]
    stp     q12, q13, [x0, #192]
    stp     q14, q15, [x0, #224]
    stp     q16, q17, [x0, #256]
    stp     q18, q19, [x0, #288]
    stp     q20, q21, [x0, #320]
    stp     q22, q23, [x0, #352]
    stp     q24, q25, [x0, #384]
    stp     q26, q27, [x0, #416]
    stp     q28, q29, [x0, #448]
    stp     q30, q31, [x0, #480]
    mrs     x1, fpcr
    mrs     x2, fpsr
    str     x1, [x0, #512]
    str     x2, [x0, #520]
    ret

// fn fp_restore(regs: *const FpRegs)
.global fp_restore
fp_restore:
    ldp     q0, q1, [x0, #0]
    ldp     q2, q3, [x0, #32]
    ldp     q4, q5, [x0, #64]
    ldp     q6, q7, [x0, #96]
    ldp     q8, q9, [x0, #128]
    ldp     q10, q11, [x0, #160]
    ldp     q12, q13, [x0, #192]
    ldp     q14, q15, [x0, #224]
    ldp     q16, q17, [x0, #256]
    ldp     q18, q19, [x0, #288]
    ldp     q20, q21, [x0, #320]
    ldp     q22, q23, [x0, #352]
    ldp     q24, q25, [x0, #384]
    ldp     q26, q27, [x0, #416]
    ldp     q28, q29, [x0, #448]
    ldp     q30, q31, [x0, #480]
    ldr     x1, [x0, #512]
    ldr     x2, [x0, #520]
    msr     fpcr, x1
    msr     fpsr, x2
    ret
"#
);

unsafe extern "C" {
    fn fp_save(regs: *mut FpRegs);
    fn fp_restore(regs: *const FpRegs);
}

/// Saves the FP/SIMD registers the running vCPU left in the CPU (the hypervisor, built
/// soft-float, never uses them itself).
pub fn save_fp(regs: &mut FpRegs) {
    // SAFETY: `regs` is a valid, exclusively borrowed FpRegs with the layout the assembly
    // writes (32 16-byte registers, then FPCR and FPSR; checked by a host test); the routine
    // clobbers only x1 and x2, which the C ABI lets it.
    unsafe { fp_save(regs) }
}

/// Loads a vCPU's FP/SIMD registers into the CPU before it runs.
pub fn restore_fp(regs: &FpRegs) {
    // SAFETY: as for `save_fp`; the routine only reads `regs`.
    unsafe { fp_restore(regs) }
}

/// Invalidates this CPU's stage-1 TLB entries of the current VMID (another vCPU of the same
/// instance ran here last: entries it left may not hold for this one).
pub fn flush_guest_tlb_local() {
    // SAFETY: TLB maintenance only; it reads no memory.
    unsafe { core::arch::asm!("tlbi vmalle1", "dsb nsh", "isb", options(nostack)) };
}

/// Silences this CPU's deadline timer after it fired, until it is armed again.
pub fn mask_deadline_timer() {
    CNTP_CTL_EL0.write(CNTP_CTL_EL0::ENABLE::SET + CNTP_CTL_EL0::IMASK::SET);
}

/// The IPA the loaded vCPU's stage 1 maps virtual address `va` to (an EL1 read), if it maps
/// it: what a stage-2 permission fault's `HPFAR_EL2` does not reliably give. The guest's
/// `PAR_EL1` is left as it was.
pub fn guest_ipa_of(va: u64) -> Option<u64> {
    const PAR_F: u64 = 1;
    const PAR_PA: u64 = 0x000f_ffff_ffff_f000;
    let saved = PAR_EL1.get();
    // SAFETY: an address translation of the loaded guest's stage 1 into PAR_EL1 (restored
    // below); it reads guest page tables through the MMU, changes no memory.
    unsafe { core::arch::asm!("at s1e1r, {va}", "isb", va = in(reg) va, options(nostack)) };
    let par = PAR_EL1.get();
    PAR_EL1.set(saved);
    (par & PAR_F == 0).then_some(par & PAR_PA | va & 0xfff)
}

/// The syndrome registers of the exit that just happened.
pub fn trap_syndrome() -> TrapSyndrome {
    TrapSyndrome {
        esr: ESR_EL2.get(),
        far: FAR_EL2.get(),
        hpfar: HPFAR_EL2.get(),
    }
}

/// Loads a vCPU's EL1 registers into the CPU.
pub fn load_el1(regs: &El1SysRegs) {
    SCTLR_EL1.set(regs.sctlr_el1);
    ACTLR_EL1.set(regs.actlr_el1);
    CPACR_EL1.set(regs.cpacr_el1);
    TTBR0_EL1.set(regs.ttbr0_el1);
    TTBR1_EL1.set(regs.ttbr1_el1);
    TCR_EL1.set(regs.tcr_el1);
    MAIR_EL1.set(regs.mair_el1);
    AMAIR_EL1.set(regs.amair_el1);
    VBAR_EL1.set(regs.vbar_el1);
    CONTEXTIDR_EL1.set(regs.contextidr_el1);
    TPIDR_EL0.set(regs.tpidr_el0);
    TPIDRRO_EL0.set(regs.tpidrro_el0);
    TPIDR_EL1.set(regs.tpidr_el1);
    SP_EL0.set(regs.sp_el0);
    SP_EL1.set(regs.sp_el1);
    ELR_EL1.set(regs.elr_el1);
    SPSR_EL1.set(regs.spsr_el1);
    ESR_EL1.set(regs.esr_el1);
    FAR_EL1.set(regs.far_el1);
    AFSR0_EL1.set(regs.afsr0_el1);
    AFSR1_EL1.set(regs.afsr1_el1);
    PAR_EL1.set(regs.par_el1);
    CNTKCTL_EL1.set(regs.cntkctl_el1);
    CSSELR_EL1.set(regs.csselr_el1);
    MDSCR_EL1.set(regs.mdscr_el1);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Reads a vCPU's EL1 registers back out of the CPU.
pub fn save_el1() -> El1SysRegs {
    El1SysRegs {
        sctlr_el1: SCTLR_EL1.get(),
        actlr_el1: ACTLR_EL1.get(),
        cpacr_el1: CPACR_EL1.get(),
        ttbr0_el1: TTBR0_EL1.get(),
        ttbr1_el1: TTBR1_EL1.get(),
        tcr_el1: TCR_EL1.get(),
        mair_el1: MAIR_EL1.get(),
        amair_el1: AMAIR_EL1.get(),
        vbar_el1: VBAR_EL1.get(),
        contextidr_el1: CONTEXTIDR_EL1.get(),
        tpidr_el0: TPIDR_EL0.get(),
        tpidrro_el0: TPIDRRO_EL0.get(),
        tpidr_el1: TPIDR_EL1.get(),
        sp_el0: SP_EL0.get(),
        sp_el1: SP_EL1.get(),
        elr_el1: ELR_EL1.get(),
        spsr_el1: SPSR_EL1.get(),
        esr_el1: ESR_EL1.get(),
        far_el1: FAR_EL1.get(),
        afsr0_el1: AFSR0_EL1.get(),
        afsr1_el1: AFSR1_EL1.get(),
        par_el1: PAR_EL1.get(),
        cntkctl_el1: CNTKCTL_EL1.get(),
        csselr_el1: CSSELR_EL1.get(),
        mdscr_el1: MDSCR_EL1.get(),
    }
}

/// The EL1 registers of the vCPU currently loaded on this CPU.
pub struct LiveEl1;

impl ExceptionRegisters for LiveEl1 {
    fn vector_base(&self) -> u64 {
        VBAR_EL1.get()
    }

    fn enter_exception(&mut self, esr: u64, far: Option<u64>, elr: u64, spsr: u64) {
        ESR_EL1.set(esr);
        if let Some(far) = far {
            FAR_EL1.set(far);
        }
        ELR_EL1.set(elr);
        SPSR_EL1.set(spsr);
    }
}
