//! The typed section bodies.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

/// The kind of a section, as the `u16` in its frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum SectionKind {
    /// [`Section::Config`]: the instance's configuration; first, exactly once.
    Config = 1,
    /// [`Section::Memory`]: a chunk of guest pages.
    Memory = 2,
    /// [`Section::Vcpu`]: one vCPU's registers.
    Vcpu = 3,
    /// [`Section::Vgic`]: the virtual GIC's distributor and redistributors.
    Vgic = 4,
    /// [`Section::Pl011`]: the emulated UART.
    Pl011 = 5,
    /// [`Section::Paravirt`]: the paravirtual interface's state.
    Paravirt = 6,
    /// [`Section::End`]: the last section, with the counts of what came before.
    End = 0xFFFF,
}

impl SectionKind {
    /// The kind with this frame-header value, or `None` for a value this version does not know.
    pub const fn from_u16(value: u16) -> Option<Self> {
        match value {
            1 => Some(Self::Config),
            2 => Some(Self::Memory),
            3 => Some(Self::Vcpu),
            4 => Some(Self::Vgic),
            5 => Some(Self::Pl011),
            6 => Some(Self::Paravirt),
            0xFFFF => Some(Self::End),
            _ => None,
        }
    }

    /// The value in the frame header.
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// The lower-case name used in messages (`"memory"`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Memory => "memory",
            Self::Vcpu => "vcpu",
            Self::Vgic => "vgic",
            Self::Pl011 => "pl011",
            Self::Paravirt => "paravirt",
            Self::End => "end",
        }
    }
}

impl fmt::Display for SectionKind {
    /// `"2 (memory)"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_u16(), self.name())
    }
}

/// One section of a checkpoint stream with its typed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Section {
    /// The instance's configuration (kind 1).
    Config(InstanceConfig),
    /// A chunk of guest pages (kind 2).
    Memory(MemoryChunk),
    /// One vCPU (kind 3); boxed, as it is over 1 KiB.
    Vcpu(Box<VcpuState>),
    /// The virtual GIC (kind 4).
    Vgic(VgicState),
    /// The emulated PL011 UART (kind 5).
    Pl011(Pl011State),
    /// The paravirtual interface (kind 6).
    Paravirt(ParavirtState),
    /// The end of the stream (kind 0xFFFF).
    End(EndSummary),
}

impl Section {
    /// This section's kind.
    pub const fn kind(&self) -> SectionKind {
        match self {
            Self::Config(_) => SectionKind::Config,
            Self::Memory(_) => SectionKind::Memory,
            Self::Vcpu(_) => SectionKind::Vcpu,
            Self::Vgic(_) => SectionKind::Vgic,
            Self::Pl011(_) => SectionKind::Pl011,
            Self::Paravirt(_) => SectionKind::Paravirt,
            Self::End(_) => SectionKind::End,
        }
    }
}

/// The instance's configuration: what must exist before anything else can be restored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InstanceConfig {
    /// The instance's name: 1 to 32 characters of `[A-Za-z0-9._-]`.
    pub name: String,
    /// Guest-physical (IPA) address of the start of RAM, page aligned.
    pub ram_base: u64,
    /// Size of RAM in bytes: a nonzero multiple of [`crate::PAGE_SIZE`].
    pub ram_bytes: u64,
    /// Number of vCPUs, 1 to [`crate::MAX_VCPUS`].
    pub vcpus: u16,
    /// The instance's scheduler weight.
    pub weight: u32,
    /// The GIC architecture version the guest sees: 2 or 3.
    pub gic_version: u8,
    /// Number of SPIs of the vGIC (at most [`crate::MAX_SPIS`]).
    pub spis: u32,
    /// The guest's counter frequency (`CNTFRQ_EL0`) in Hz, nonzero.
    pub counter_frequency: u64,
}

/// A chunk of guest pages.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemoryChunk {
    /// The pages, in any order. A page may be sent again later in the stream (live migration
    /// re-sends pages the guest dirtied); the last copy wins.
    pub pages: Vec<Page>,
}

/// One guest page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Page number within the instance's RAM (4 KiB pages, 0 = the page at `ram_base`).
    pub index: u64,
    /// The page's contents.
    pub data: PageData,
}

/// How a page's 4096 bytes are encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PageData {
    /// All bytes zero.
    Zero,
    /// The 4096 bytes as they are.
    Raw(Vec<u8>),
    /// An LZ4 block (no frame, no size prefix) that decompresses to exactly 4096 bytes.
    Lz4(Vec<u8>),
}

/// One vCPU's architectural state at the pause.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VcpuState {
    /// vCPU index, below [`InstanceConfig::vcpus`].
    pub index: u16,
    /// The `MPIDR_EL1` value the guest sees.
    pub mpidr: u64,
    /// Whether the vCPU is powered on (PSCI).
    pub powered_on: bool,
    /// General-purpose registers x0 to x30.
    pub x: [u64; 31],
    /// The guest PC (`ELR_EL2` at the exit).
    pub pc: u64,
    /// The guest PSTATE (`SPSR_EL2` at the exit).
    pub pstate: u64,
    /// EL1 system registers.
    pub el1: El1Regs,
    /// FP/SIMD registers.
    pub fp: FpState,
    /// The EL1 virtual timer (`CNTV_CTL_EL0`, `CNTV_CVAL_EL0`).
    pub virtual_timer: TimerState,
    /// The emulated EL1 physical timer (`CNTP_CTL_EL0`, `CNTP_CVAL_EL0`).
    pub physical_timer: TimerState,
    /// The guest's virtual counter value at the pause; the restorer picks `CNTVOFF_EL2` so the
    /// guest's counter continues from here.
    pub counter: u64,
    /// The vCPU's GIC CPU interface.
    pub gic_cpu: GicCpuState,
    /// After a powering-down PSCI `CPU_SUSPEND`: the entry point and context id the vCPU resumes
    /// at when woken.
    pub resume: Option<(u64, u64)>,
}

/// EL1 (and EL0) system registers of a vCPU, each by its architectural name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct El1Regs {
    /// `SCTLR_EL1`.
    pub sctlr: u64,
    /// `ACTLR_EL1`.
    pub actlr: u64,
    /// `CPACR_EL1`.
    pub cpacr: u64,
    /// `TTBR0_EL1`.
    pub ttbr0: u64,
    /// `TTBR1_EL1`.
    pub ttbr1: u64,
    /// `TCR_EL1`.
    pub tcr: u64,
    /// `MAIR_EL1`.
    pub mair: u64,
    /// `AMAIR_EL1`.
    pub amair: u64,
    /// `VBAR_EL1`.
    pub vbar: u64,
    /// `CONTEXTIDR_EL1`.
    pub contextidr: u64,
    /// `TPIDR_EL0`.
    pub tpidr_el0: u64,
    /// `TPIDRRO_EL0`.
    pub tpidrro_el0: u64,
    /// `TPIDR_EL1`.
    pub tpidr_el1: u64,
    /// `SP_EL0`.
    pub sp_el0: u64,
    /// `SP_EL1`.
    pub sp_el1: u64,
    /// `ELR_EL1`.
    pub elr: u64,
    /// `SPSR_EL1`.
    pub spsr: u64,
    /// `ESR_EL1`.
    pub esr: u64,
    /// `FAR_EL1`.
    pub far: u64,
    /// `AFSR0_EL1`.
    pub afsr0: u64,
    /// `AFSR1_EL1`.
    pub afsr1: u64,
    /// `PAR_EL1`.
    pub par: u64,
    /// `CNTKCTL_EL1`.
    pub cntkctl: u64,
    /// `CSSELR_EL1`.
    pub csselr: u64,
    /// `MDSCR_EL1`.
    pub mdscr: u64,
}

/// FP/SIMD state of a vCPU.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FpState {
    /// V0 to V31.
    pub v: [u128; 32],
    /// `FPCR`.
    pub fpcr: u64,
    /// `FPSR`.
    pub fpsr: u64,
}

/// One generic timer of a vCPU.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TimerState {
    /// `CNT*_CTL_EL0` (ENABLE, IMASK; ISTATUS is recomputed on restore).
    pub control: u64,
    /// `CNT*_CVAL_EL0`, in guest counter ticks.
    pub compare: u64,
}

/// A vCPU's GIC CPU interface (the virtual one: `ICH_VMCR_EL2` and the active priorities).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GicCpuState {
    /// `ICH_VMCR_EL2`.
    pub vmcr: u64,
    /// `ICH_AP0R0_EL2` and `ICH_AP1R0_EL2`.
    pub active_priorities: [u64; 2],
}

/// The virtual GIC: distributor and one redistributor (GICv3) or bank of private interrupts
/// (GICv2) per vCPU.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VgicState {
    /// The GIC architecture version the vGIC presents: 3 or 2, as
    /// [`InstanceConfig::gic_version`].
    pub gic_version: u8,
    /// `GICD_CTLR`.
    pub ctlr: u32,
    /// The SPIs, INTID 32 first; exactly [`InstanceConfig::spis`] of them.
    pub spis: Vec<SpiState>,
    /// One per vCPU, in vCPU order: `redistributors[i].vcpu == i`.
    pub redistributors: Vec<RedistributorState>,
}

/// The state of one virtual interrupt.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IrqState {
    /// Enabled (`ISENABLER`).
    pub enabled: bool,
    /// Pending (latched: edge, or set by `ISPENDR`).
    pub pending: bool,
    /// Active.
    pub active: bool,
    /// The level of the input line (level-sensitive interrupts).
    pub level: bool,
    /// Edge-triggered (`ICFGR`).
    pub edge: bool,
    /// Priority (`IPRIORITYR`).
    pub priority: u8,
    /// Group 1 (`IGROUPR`).
    pub group1: bool,
}

/// The state of one SPI.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpiState {
    /// Its state.
    pub irq: IrqState,
    /// GICv3: the `GICD_IROUTER` value; 0 on a GICv2.
    pub route: u64,
    /// GICv2: the `GICD_ITARGETSR` byte (bit `i` = vCPU `i`); 0 on a GICv3.
    pub targets: u8,
}

/// One redistributor (the private interrupts of one vCPU; on a GICv2 its banked SGIs and PPIs).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RedistributorState {
    /// The vCPU it belongs to.
    pub vcpu: u16,
    /// `GICR_WAKER.ProcessorSleep` (GICv3; false on a GICv2).
    pub asleep: bool,
    /// Exactly 32: SGIs 0-15 and PPIs 16-31.
    pub private: Vec<IrqState>,
}

/// The emulated PL011 UART, by register.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pl011State {
    /// `UARTIBRD`.
    pub ibrd: u64,
    /// `UARTFBRD`.
    pub fbrd: u64,
    /// `UARTLCR_H`.
    pub lcr_h: u64,
    /// `UARTCR`.
    pub cr: u64,
    /// `UARTIFLS`.
    pub ifls: u64,
    /// `UARTIMSC`.
    pub imsc: u64,
    /// `UARTDMACR`.
    pub dmacr: u64,
    /// `UARTILPR`.
    pub ilpr: u64,
    /// `UARTRIS`: the raw interrupt status.
    pub raw_interrupts: u64,
    /// Received bytes not yet read by the guest, oldest first; at most 32.
    pub rx: Vec<u8>,
    /// The guest's partial output line not yet printed; at most 256 bytes.
    pub line: Vec<u8>,
}

/// The paravirtual interface's state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ParavirtState {
    /// The INTID the guest asked to be notified on, if any (below 32 + `spis`).
    pub notice_intid: Option<u32>,
    /// Counter ticks the instance has spent paused so far.
    pub paused_ticks: u64,
    /// Migration notices raised so far (the guest reads the count with each notice).
    pub notices_raised: u64,
}

/// The last section: how many sections and pages came before it. The reader checks both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EndSummary {
    /// Number of sections before the End section.
    pub sections: u32,
    /// Number of [`Page`] records in all Memory sections.
    pub pages: u64,
}
