//! Sample sections and stream helpers shared by the tests.
#![allow(dead_code)]

use checkpoint::{
    El1Regs, Error, FpState, GicCpuState, InstanceConfig, IrqState, MemoryChunk, PAGE_SIZE,
    ParavirtState, Pl011State, Reader, RedistributorState, Section, SpiState, TimerState,
    VcpuState, VgicState, Writer, encode_page,
};

pub const VCPUS: u16 = 2;
pub const RAM_PAGES: u64 = 64;
pub const SPIS: u32 = 32;

pub fn config() -> InstanceConfig {
    InstanceConfig {
        name: "web-1.test_x".into(),
        ram_base: 0x4000_0000,
        ram_bytes: RAM_PAGES * PAGE_SIZE as u64,
        vcpus: VCPUS,
        weight: 256,
        gic_version: 3,
        spis: SPIS,
        counter_frequency: 62_500_000,
    }
}

/// A page that compresses well.
pub fn text_page() -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    for (i, b) in page.iter_mut().enumerate() {
        *b = b"hello, checkpoint "[i % 18];
    }
    page
}

/// A page that does not compress (xorshift noise).
pub fn noise_page(seed: u64) -> [u8; PAGE_SIZE] {
    let mut state = seed | 1;
    let mut page = [0u8; PAGE_SIZE];
    for b in page.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = state as u8;
    }
    page
}

pub fn memory(indexes: &[u64]) -> MemoryChunk {
    MemoryChunk {
        pages: indexes
            .iter()
            .map(|&index| match index % 3 {
                0 => encode_page(index, &[0; PAGE_SIZE]),
                1 => encode_page(index, &text_page()),
                _ => encode_page(index, &noise_page(index)),
            })
            .collect(),
    }
}

pub fn vcpu(index: u16) -> VcpuState {
    let mut x = [0u64; 31];
    for (i, r) in x.iter_mut().enumerate() {
        *r = (i as u64) << 56 | u64::from(index);
    }
    let mut v = [0u128; 32];
    for (i, r) in v.iter_mut().enumerate() {
        *r = u128::MAX >> i;
    }
    VcpuState {
        index,
        mpidr: 0x8000_0000 | u64::from(index),
        powered_on: index == 0,
        x,
        pc: 0x4008_0000,
        pstate: 0x3c5,
        el1: El1Regs {
            sctlr: 0x30d0_1805,
            ttbr1: u64::MAX,
            mdscr: 1,
            ..El1Regs::default()
        },
        fp: FpState {
            v,
            fpcr: 0x0300_0000,
            fpsr: 0x10,
        },
        virtual_timer: TimerState {
            control: 1,
            compare: u64::MAX - 1,
        },
        physical_timer: TimerState {
            control: 3,
            compare: 12345,
        },
        counter: 987_654_321,
        gic_cpu: GicCpuState {
            vmcr: 0xf000_0003,
            active_priorities: [1, 1 << 31],
        },
        resume: if index == 1 {
            Some((0x4010_0000, 42))
        } else {
            None
        },
    }
}

pub fn vgic() -> VgicState {
    let irq = |n: usize| IrqState {
        enabled: n.is_multiple_of(2),
        pending: n.is_multiple_of(3),
        active: n.is_multiple_of(5),
        level: n.is_multiple_of(7),
        edge: n.is_multiple_of(4),
        priority: (n * 8) as u8,
        group1: true,
    };
    VgicState {
        gic_version: 3,
        ctlr: 0x12,
        spis: (0..SPIS as usize)
            .map(|n| SpiState {
                irq: irq(n),
                route: n as u64 % u64::from(VCPUS),
                targets: 0,
            })
            .collect(),
        redistributors: (0..VCPUS)
            .map(|vcpu| RedistributorState {
                vcpu,
                asleep: vcpu == 1,
                private: (0..32).map(irq).collect(),
            })
            .collect(),
    }
}

pub fn pl011() -> Pl011State {
    Pl011State {
        ibrd: 13,
        fbrd: 1,
        lcr_h: 0x70,
        cr: 0x301,
        ifls: 0x12,
        imsc: 0x50,
        dmacr: 0,
        ilpr: 0,
        raw_interrupts: 0x20,
        rx: b"ls -l\r".to_vec(),
        line: b"partial out".to_vec(),
    }
}

pub fn paravirt() -> ParavirtState {
    ParavirtState {
        notice_intid: Some(40),
        paused_ticks: 1 << 40,
        notices_raised: 3,
    }
}

/// One section of every kind but End; `pages` page indexes go into Memory chunks of 3.
pub fn sample_sections(pages: u64) -> Vec<Section> {
    let mut sections = vec![Section::Config(config())];
    let indexes: Vec<u64> = (0..pages).collect();
    for chunk in indexes.chunks(3) {
        sections.push(Section::Memory(memory(chunk)));
    }
    sections.push(Section::Vcpu(Box::new(vcpu(0))));
    sections.push(Section::Vcpu(Box::new(vcpu(1))));
    sections.push(Section::Vgic(vgic()));
    sections.push(Section::Pl011(pl011()));
    sections.push(Section::Paravirt(paravirt()));
    sections
}

/// Header, the sections, then End with the Writer's counts.
pub fn stream(sections: &[Section]) -> Vec<u8> {
    let mut writer = Writer::new();
    let mut out = Vec::new();
    writer.header(&mut out);
    for section in sections {
        writer.section(section, &mut out).unwrap();
    }
    writer.end(&mut out).unwrap();
    out
}

/// A small valid stream: every section kind, 3 pages (zero, lz4, raw).
pub fn small_stream() -> Vec<u8> {
    stream(&sample_sections(3))
}

/// Header and the sections as given (no End added).
pub fn raw_stream(sections: &[Section]) -> Vec<u8> {
    let mut writer = Writer::new();
    let mut out = Vec::new();
    writer.header(&mut out);
    for section in sections {
        writer.section(section, &mut out).unwrap();
    }
    out
}

/// A frame with the right CRC for `body`.
pub fn frame(kind: u16, reserved: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&reserved.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

pub fn header() -> Vec<u8> {
    let mut out = Vec::new();
    Writer::new().header(&mut out);
    out
}

/// Pushes `bytes` in pieces of the given sizes (cycled), taking every section after each
/// push, then checks `finish`. Returns every section read or the first error.
pub fn read_in_pieces(bytes: &[u8], sizes: &[usize]) -> Result<Vec<Section>, Error> {
    let mut reader = Reader::new();
    let mut sections = Vec::new();
    let mut rest = bytes;
    let mut sizes = sizes.iter().copied().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        reader.push(piece);
        while let Some(section) = reader.next()? {
            sections.push(section);
        }
    }
    reader.finish()?;
    Ok(sections)
}

pub fn read_all(bytes: &[u8]) -> Result<Vec<Section>, Error> {
    read_in_pieces(bytes, &[usize::MAX])
}
