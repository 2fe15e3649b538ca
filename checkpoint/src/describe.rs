//! One-line summaries of sections, for `xtask checkpoint inspect`.

use alloc::format;
use alloc::string::String;

use crate::types::{PageData, Section};

/// One line that says what a section holds, e.g. `config: name=web ram=64 MiB at 0x40000000
/// vcpus=2 weight=100 gic=v3 spis=64 cntfrq=62500000`, `memory: 64 pages (10 zero, 50 lz4, 4
/// raw)` or `vcpu 0: mpidr=0x80000000 pc=0x40080000 pstate=0x3c5 on`.
pub fn describe(section: &Section) -> String {
    match section {
        Section::Config(c) => format!(
            "config: name={} ram={} at {:#x} vcpus={} weight={} gic=v{} spis={} cntfrq={}",
            c.name,
            size(c.ram_bytes),
            c.ram_base,
            c.vcpus,
            c.weight,
            c.gic_version,
            c.spis,
            c.counter_frequency
        ),
        Section::Memory(chunk) => {
            let (mut zero, mut lz4, mut raw) = (0usize, 0usize, 0usize);
            for page in &chunk.pages {
                let counter = match page.data {
                    PageData::Zero => &mut zero,
                    PageData::Lz4(_) => &mut lz4,
                    PageData::Raw(_) => &mut raw,
                };
                *counter = counter.saturating_add(1);
            }
            let range = match (
                chunk.pages.iter().map(|p| p.index).min(),
                chunk.pages.iter().map(|p| p.index).max(),
            ) {
                (Some(first), Some(last)) => format!(", pages {first}..={last}"),
                _ => String::new(),
            };
            format!(
                "memory: {} pages ({zero} zero, {lz4} lz4, {raw} raw){range}",
                chunk.pages.len()
            )
        }
        Section::Vcpu(v) => {
            let resume = match v.resume {
                Some((entry, context)) => {
                    format!(" suspended (resume at {entry:#x} context {context:#x})")
                }
                None => String::new(),
            };
            format!(
                "vcpu {}: mpidr={:#x} pc={:#x} pstate={:#x} {}{resume}",
                v.index,
                v.mpidr,
                v.pc,
                v.pstate,
                if v.powered_on { "on" } else { "off" }
            )
        }
        Section::Vgic(g) => {
            let enabled = g.spis.iter().filter(|s| s.irq.enabled).count();
            let pending = g.spis.iter().filter(|s| s.irq.pending).count();
            let active = g.spis.iter().filter(|s| s.irq.active).count();
            format!(
                "vgic: ctlr={:#x} spis={} ({enabled} enabled, {pending} pending, {active} active) \
                 redistributors={} gic=v{}",
                g.ctlr,
                g.spis.len(),
                g.redistributors.len(),
                g.gic_version
            )
        }
        Section::Pl011(u) => format!(
            "pl011: cr={:#x} lcr_h={:#x} imsc={:#x} ris={:#x} rx={} bytes, partial line={} bytes",
            u.cr,
            u.lcr_h,
            u.imsc,
            u.raw_interrupts,
            u.rx.len(),
            u.line.len()
        ),
        Section::Paravirt(p) => format!(
            "paravirt: {} paused_ticks={} notices_raised={}",
            match p.notice_intid {
                Some(intid) => format!("notice intid={intid}"),
                None => "no notice intid".into(),
            },
            p.paused_ticks,
            p.notices_raised
        ),
        Section::End(e) => format!("end: {} sections, {} pages", e.sections, e.pages),
    }
}

/// `64 MiB`, `1 GiB`, `12 KiB` or `4097 bytes`.
fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = KIB * 1024;
    const GIB: u64 = MIB * 1024;
    if bytes != 0 && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes != 0 && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes != 0 && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}
