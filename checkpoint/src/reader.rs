//! Reading a stream that arrives in pieces.

use alloc::boxed::Box;
use alloc::format;
use alloc::vec::Vec;

use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::types::{
    EndSummary, InstanceConfig, MemoryChunk, PageData, ParavirtState, Pl011State, Section,
    SectionKind, VcpuState, VgicState,
};
use crate::{
    FRAME_HEADER_LEN, HEADER_LEN, MAGIC, MAX_BODY, MAX_GICV2_VCPUS, MAX_NAME_LEN, MAX_PL011_LINE,
    MAX_PL011_RX, MAX_SPIS, MAX_VCPUS, PAGE_SIZE, PRIVATE_IRQS, VERSION,
};

/// [`PAGE_SIZE`] as the type of RAM sizes.
const PAGE_BYTES: u64 = PAGE_SIZE as u64;

/// Where the reader is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    Frames,
    Ended,
}

/// What the Config section said, for checking everything after it.
#[derive(Debug)]
struct Limits {
    config: InstanceConfig,
    pages: u64,
}

/// A push reader: give it bytes as they arrive with [`push`](Self::push), take checked
/// sections with [`next`](Self::next), and call [`finish`](Self::finish) when the input ends.
///
/// Every section it returns has passed the checks of docs/CHECKPOINT-FORMAT.md: the header,
/// each frame's length and checksum, a body that decodes with nothing left over, the order of
/// the sections and their consistency with the Config section. The first error is final: every
/// later call returns it again.
///
/// It buffers at most the frame being read (header and up to [`MAX_BODY`] bytes of body) plus
/// the bytes pushed since `next` last returned `Ok(None)`: call `next` until it does after each
/// `push`. A frame header announcing a body over [`MAX_BODY`] is refused as soon as its 12 bytes
/// have arrived, and nothing after it is buffered.
#[derive(Debug)]
pub struct Reader {
    /// Bytes received and not yet released; `buf[pos..]` is not consumed yet.
    buf: Vec<u8>,
    pos: usize,
    /// Offset in `buf` of the next frame header whose length `push` has not checked yet.
    scan: usize,
    /// `push` found an oversize frame header and keeps nothing from then on.
    stopped: bool,
    phase: Phase,
    failed: Option<Error>,
    /// Bytes arrived after the End section.
    after_end: bool,
    limits: Option<Limits>,
    sections: u32,
    pages: u64,
    vcpus_seen: u64,
    seen_vgic: bool,
    seen_pl011: bool,
    seen_paravirt: bool,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl Reader {
    /// A reader expecting the stream header.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            scan: HEADER_LEN,
            stopped: false,
            phase: Phase::Header,
            failed: None,
            after_end: false,
            limits: None,
            sections: 0,
            pages: 0,
            vcpus_seen: 0,
            seen_vgic: false,
            seen_pl011: false,
            seen_paravirt: false,
        }
    }

    /// Adds bytes that arrived, in a piece of any size.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() || self.stopped || bytes.is_empty() {
            return;
        }
        if self.phase == Phase::Ended {
            self.after_end = true;
            return;
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos.min(self.buf.len()));
            self.scan = self.scan.saturating_sub(self.pos);
            self.pos = 0;
        }
        let mut input = bytes;
        while !input.is_empty() {
            // Append up to the next frame header, or up to the end of that header.
            let target = if self.buf.len() < self.scan {
                self.scan
            } else {
                self.scan.saturating_add(FRAME_HEADER_LEN)
            };
            let (now, rest) =
                input.split_at(target.saturating_sub(self.buf.len()).min(input.len()));
            self.buf.extend_from_slice(now);
            input = rest;
            if self.buf.len() == self.scan.saturating_add(FRAME_HEADER_LEN) {
                match self.buf.get(self.scan..).and_then(FrameHeader::parse) {
                    Some(header) if header.len <= MAX_BODY => {
                        self.scan = self
                            .scan
                            .saturating_add(FRAME_HEADER_LEN)
                            .saturating_add(header.len);
                    }
                    // `next` reports it when it gets there.
                    _ => {
                        self.stopped = true;
                        return;
                    }
                }
            }
        }
    }

    /// The next section, `Ok(None)` if more bytes are needed first, or the error that makes the
    /// stream unusable.
    #[allow(clippy::should_implement_trait)] // Not an iterator: it can need more input.
    pub fn next(&mut self) -> Result<Option<Section>, Error> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.step();
        match &result {
            Err(error) => {
                self.failed = Some(error.clone());
                self.buf = Vec::new();
                self.pos = 0;
            }
            Ok(_) => {
                if self.pos >= self.buf.len() {
                    // Everything consumed: release it now rather than at the next push.
                    self.scan = self.scan.saturating_sub(self.pos);
                    self.pos = 0;
                    self.buf.clear();
                }
            }
        }
        result
    }

    /// Checks that the stream is complete: its End section was read and nothing followed.
    pub fn finish(&self) -> Result<(), Error> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.phase != Phase::Ended {
            return Err(Error::Truncated);
        }
        if self.after_end || self.pos < self.buf.len() {
            return Err(Error::AfterEnd);
        }
        Ok(())
    }

    /// How many bytes the reader holds now (received and not yet released).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The instance's configuration, once the Config section has been read.
    pub fn config(&self) -> Option<&InstanceConfig> {
        self.limits.as_ref().map(|limits| &limits.config)
    }

    fn pending(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    fn step(&mut self) -> Result<Option<Section>, Error> {
        if self.phase == Phase::Header {
            let Some(header) = self.pending().get(..HEADER_LEN) else {
                return Ok(None);
            };
            check_header(header)?;
            self.pos = self.pos.saturating_add(HEADER_LEN);
            self.phase = Phase::Frames;
        }
        if self.phase == Phase::Ended {
            return if self.after_end || !self.pending().is_empty() {
                Err(Error::AfterEnd)
            } else {
                Ok(None)
            };
        }
        let pending = self.pending();
        let Some(header) = FrameHeader::parse(pending) else {
            return Ok(None);
        };
        let kind = SectionKind::from_u16(header.kind).ok_or(Error::UnknownSection(header.kind))?;
        if header.reserved != 0 {
            return Err(Error::FrameReserved {
                kind,
                value: header.reserved,
            });
        }
        if header.len > MAX_BODY {
            return Err(Error::TooLarge {
                kind,
                len: u64::try_from(header.len).unwrap_or(u64::MAX),
            });
        }
        let frame_len = FRAME_HEADER_LEN.saturating_add(header.len);
        let Some(body) = pending.get(FRAME_HEADER_LEN..frame_len) else {
            return Ok(None);
        };
        if crc32fast::hash(body) != header.crc {
            return Err(Error::Checksum { kind });
        }
        let section = match kind {
            SectionKind::Config => Section::Config(decode::<InstanceConfig>(kind, body)?),
            SectionKind::Memory => Section::Memory(decode::<MemoryChunk>(kind, body)?),
            SectionKind::Vcpu => Section::Vcpu(Box::new(decode::<VcpuState>(kind, body)?)),
            SectionKind::Vgic => Section::Vgic(decode::<VgicState>(kind, body)?),
            SectionKind::Pl011 => Section::Pl011(decode::<Pl011State>(kind, body)?),
            SectionKind::Paravirt => Section::Paravirt(decode::<ParavirtState>(kind, body)?),
            SectionKind::End => Section::End(decode::<EndSummary>(kind, body)?),
        };
        self.accept(&section)?;
        self.pos = self.pos.saturating_add(frame_len);
        Ok(Some(section))
    }

    /// Checks a decoded section against the order rules and what came before, and counts it.
    fn accept(&mut self, section: &Section) -> Result<(), Error> {
        let kind = section.kind();
        let limits = match (&self.limits, section) {
            (None, Section::Config(config)) => {
                check_config(config)?;
                self.limits = Some(Limits {
                    config: config.clone(),
                    pages: config.ram_bytes / PAGE_BYTES,
                });
                self.sections = 1;
                return Ok(());
            }
            (None, _) => return Err(Error::MissingConfig { kind }),
            (Some(limits), _) => limits,
        };
        let config = &limits.config;
        match section {
            Section::Config(_) => return Err(Error::Duplicate { kind }),
            Section::Memory(chunk) => {
                for page in &chunk.pages {
                    if page.index >= limits.pages {
                        return Err(Error::PageOutOfRange {
                            index: page.index,
                            pages: limits.pages,
                        });
                    }
                    if let PageData::Raw(raw) = &page.data
                        && raw.len() != PAGE_SIZE
                    {
                        return Err(Error::Invalid {
                            kind,
                            reason: format!(
                                "page {} is raw with {} bytes, expected {PAGE_SIZE}",
                                page.index,
                                raw.len()
                            ),
                        });
                    }
                }
                let count = u64::try_from(chunk.pages.len()).unwrap_or(u64::MAX);
                self.pages = self.pages.saturating_add(count);
            }
            Section::Vcpu(vcpu) => {
                if vcpu.index >= config.vcpus {
                    return Err(Error::VcpuOutOfRange {
                        index: vcpu.index,
                        vcpus: config.vcpus,
                    });
                }
                let bit = 1u64.checked_shl(u32::from(vcpu.index)).unwrap_or(0);
                if self.vcpus_seen & bit != 0 {
                    return Err(Error::DuplicateVcpu { index: vcpu.index });
                }
                self.vcpus_seen |= bit;
            }
            Section::Vgic(vgic) => {
                if self.seen_vgic {
                    return Err(Error::Duplicate { kind });
                }
                check_vgic(vgic, config)?;
                self.seen_vgic = true;
            }
            Section::Pl011(pl011) => {
                if self.seen_pl011 {
                    return Err(Error::Duplicate { kind });
                }
                check_pl011(pl011)?;
                self.seen_pl011 = true;
            }
            Section::Paravirt(paravirt) => {
                if self.seen_paravirt {
                    return Err(Error::Duplicate { kind });
                }
                check_paravirt(paravirt, config)?;
                self.seen_paravirt = true;
            }
            Section::End(claimed) => {
                let actual = EndSummary {
                    sections: self.sections,
                    pages: self.pages,
                };
                if *claimed != actual {
                    return Err(Error::EndMismatch {
                        claimed: *claimed,
                        actual,
                    });
                }
                self.phase = Phase::Ended;
                return Ok(());
            }
        }
        self.sections = self.sections.saturating_add(1);
        Ok(())
    }
}

/// A parsed frame header.
struct FrameHeader {
    kind: u16,
    reserved: u16,
    len: usize,
    crc: u32,
}

impl FrameHeader {
    /// Parses the frame header at the start of `bytes`, if all 12 bytes are there.
    fn parse(bytes: &[u8]) -> Option<Self> {
        let (kind, rest) = bytes.split_first_chunk::<2>()?;
        let (reserved, rest) = rest.split_first_chunk::<2>()?;
        let (len, rest) = rest.split_first_chunk::<4>()?;
        let (crc, _) = rest.split_first_chunk::<4>()?;
        Some(Self {
            kind: u16::from_le_bytes(*kind),
            reserved: u16::from_le_bytes(*reserved),
            len: usize::try_from(u32::from_le_bytes(*len)).unwrap_or(usize::MAX),
            crc: u32::from_le_bytes(*crc),
        })
    }
}

fn check_header(header: &[u8]) -> Result<(), Error> {
    let (magic, rest) = header.split_first_chunk::<8>().ok_or(Error::Truncated)?;
    let (version, rest) = rest.split_first_chunk::<2>().ok_or(Error::Truncated)?;
    let (flags, rest) = rest.split_first_chunk::<2>().ok_or(Error::Truncated)?;
    let (reserved, _) = rest.split_first_chunk::<4>().ok_or(Error::Truncated)?;
    if *magic != MAGIC {
        return Err(Error::Magic);
    }
    let version = u16::from_le_bytes(*version);
    if version != VERSION {
        return Err(Error::Version {
            found: version,
            supported: VERSION,
        });
    }
    let flags = u16::from_le_bytes(*flags);
    let reserved = u32::from_le_bytes(*reserved);
    if flags != 0 || reserved != 0 {
        return Err(Error::HeaderReserved { flags, reserved });
    }
    Ok(())
}

fn decode<T: DeserializeOwned>(kind: SectionKind, body: &[u8]) -> Result<T, Error> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(Error::TrailingBytes {
            kind,
            count: rest.len(),
        }),
        Err(_) => Err(Error::Decode { kind }),
    }
}

fn invalid(kind: SectionKind, reason: alloc::string::String) -> Error {
    Error::Invalid { kind, reason }
}

fn check_config(config: &InstanceConfig) -> Result<(), Error> {
    let kind = SectionKind::Config;
    let name = &config.name;
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            kind,
            format!(
                "instance name {name:?} is not 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ -"
            ),
        ));
    }
    if config.ram_bytes == 0 || !config.ram_bytes.is_multiple_of(PAGE_BYTES) {
        return Err(invalid(
            kind,
            format!(
                "RAM size {:#x} is not a nonzero multiple of {PAGE_SIZE}",
                config.ram_bytes
            ),
        ));
    }
    if !config.ram_base.is_multiple_of(PAGE_BYTES)
        || config.ram_base.checked_add(config.ram_bytes).is_none()
    {
        return Err(invalid(
            kind,
            format!(
                "RAM at {:#x} is not page aligned or runs past the end of the address space",
                config.ram_base
            ),
        ));
    }
    if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
        return Err(invalid(
            kind,
            format!("{} vcpus, expected 1 to {MAX_VCPUS}", config.vcpus),
        ));
    }
    if !matches!(config.gic_version, 2 | 3) {
        return Err(invalid(
            kind,
            format!("GIC version {}, expected 2 or 3", config.gic_version),
        ));
    }
    if config.spis > MAX_SPIS {
        return Err(invalid(
            kind,
            format!("{} SPIs, at most {MAX_SPIS} are possible", config.spis),
        ));
    }
    if config.counter_frequency == 0 {
        return Err(invalid(kind, "counter frequency is 0".into()));
    }
    Ok(())
}

fn check_vgic(vgic: &VgicState, config: &InstanceConfig) -> Result<(), Error> {
    let kind = SectionKind::Vgic;
    if !matches!(vgic.gic_version, 2 | 3) {
        return Err(invalid(
            kind,
            format!("GIC version {}, expected 2 or 3", vgic.gic_version),
        ));
    }
    if vgic.gic_version != config.gic_version {
        return Err(invalid(
            kind,
            format!(
                "a GICv{}, but the instance has a GICv{}",
                vgic.gic_version, config.gic_version
            ),
        ));
    }
    if u32::try_from(vgic.spis.len()).ok() != Some(config.spis) {
        return Err(invalid(
            kind,
            format!(
                "{} SPIs, but the instance has {}",
                vgic.spis.len(),
                config.spis
            ),
        ));
    }
    if vgic.redistributors.len() != usize::from(config.vcpus) {
        return Err(invalid(
            kind,
            format!(
                "{} redistributors for {} vcpus",
                vgic.redistributors.len(),
                config.vcpus
            ),
        ));
    }
    let v2 = vgic.gic_version == 2;
    if v2 && config.vcpus > MAX_GICV2_VCPUS {
        return Err(invalid(
            kind,
            format!(
                "a GICv2 for {} vcpus, at most {MAX_GICV2_VCPUS}",
                config.vcpus
            ),
        ));
    }
    // A GICv2 target mask names existing vCPUs only (at most 8, checked above).
    let cpus = (0..config.vcpus.min(MAX_GICV2_VCPUS)).fold(0u8, |mask, i| {
        mask | 1u8.checked_shl(u32::from(i)).unwrap_or(0)
    });
    for (index, spi) in vgic.spis.iter().enumerate() {
        let intid = index.saturating_add(32);
        if v2 && spi.route != 0 {
            return Err(invalid(
                kind,
                format!("SPI {intid} of a GICv2 has a GICv3 route {:#x}", spi.route),
            ));
        }
        if !v2 && spi.targets != 0 {
            return Err(invalid(
                kind,
                format!(
                    "SPI {intid} of a GICv3 has GICv2 targets {:#04x}",
                    spi.targets
                ),
            ));
        }
        if spi.targets & !cpus != 0 {
            return Err(invalid(
                kind,
                format!(
                    "SPI {intid} targets {:#04x}, but the instance has {} vcpus",
                    spi.targets, config.vcpus
                ),
            ));
        }
    }
    for (position, redistributor) in vgic.redistributors.iter().enumerate() {
        if v2 && redistributor.asleep {
            return Err(invalid(
                kind,
                format!("vcpu {position} of a GICv2 has an asleep redistributor (it has none)"),
            ));
        }
        if usize::from(redistributor.vcpu) != position {
            return Err(invalid(
                kind,
                format!(
                    "redistributor {position} is for vcpu {}",
                    redistributor.vcpu
                ),
            ));
        }
        if redistributor.private.len() != PRIVATE_IRQS {
            return Err(invalid(
                kind,
                format!(
                    "redistributor of vcpu {} has {} private interrupts, expected {PRIVATE_IRQS}",
                    redistributor.vcpu,
                    redistributor.private.len()
                ),
            ));
        }
    }
    Ok(())
}

fn check_pl011(pl011: &Pl011State) -> Result<(), Error> {
    let kind = SectionKind::Pl011;
    if pl011.rx.len() > MAX_PL011_RX {
        return Err(invalid(
            kind,
            format!(
                "{} received bytes, the FIFO holds {MAX_PL011_RX}",
                pl011.rx.len()
            ),
        ));
    }
    if pl011.line.len() > MAX_PL011_LINE {
        return Err(invalid(
            kind,
            format!(
                "partial line of {} bytes, at most {MAX_PL011_LINE}",
                pl011.line.len()
            ),
        ));
    }
    Ok(())
}

fn check_paravirt(paravirt: &ParavirtState, config: &InstanceConfig) -> Result<(), Error> {
    if let Some(intid) = paravirt.notice_intid
        && intid >= config.spis.saturating_add(32)
    {
        return Err(invalid(
            SectionKind::Paravirt,
            format!(
                "notice INTID {intid} does not exist (the instance has {} SPIs)",
                config.spis
            ),
        ));
    }
    Ok(())
}
