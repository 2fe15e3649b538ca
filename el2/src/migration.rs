//! Moving a running instance as a checkpoint stream (docs/CHECKPOINT-FORMAT.md): the sender's
//! pre-copy rounds, final pause and wait for the receiver's answer, and the receiver that builds
//! the instance from the stream and starts it only once the whole stream checked out.
//!
//! Portable: the instance is reached through [`Source`] and [`Sink`] (the board's instances on
//! the hardware, fakes in host tests), bytes through the caller's buffers. Nothing here blocks:
//! the board pumps a [`Sender`] or [`Receiver`] whenever the link has room or bytes.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use checkpoint::{
    EndSummary, InstanceConfig, MAX_ANSWER, MemoryChunk, PAGE_SIZE, ParavirtState, Pl011State,
    Reader, Section, VcpuState, VgicState, Writer, parse_answer,
};

/// How long a guest that asked for migration notices has to read the one before the pause.
const NOTICE_GRACE_MS: u64 = 2_000;

/// Pages per memory section.
const PAGES_PER_CHUNK: usize = checkpoint::MAX_PAGES_PER_CHUNK;

/// Everything about an instance besides its memory, taken while its vCPUs are paused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalState {
    /// Each vCPU, in index order.
    pub vcpus: Vec<VcpuState>,
    /// The distributor and redistributors.
    pub vgic: VgicState,
    /// The emulated UART.
    pub pl011: Pl011State,
    /// The paravirtual channel.
    pub paravirt: ParavirtState,
}

/// The instance a [`Sender`] moves.
pub trait Source {
    /// How the receiver must build it.
    fn config(&self) -> InstanceConfig;
    /// Copies RAM page `index` into `page`.
    fn read_page(&self, index: u64, page: &mut [u8; PAGE_SIZE]);
    /// Starts recording which pages the guest writes.
    fn start_dirty_tracking(&self) -> Result<(), String>;
    /// Appends the pages written since tracking started or since the last call.
    fn take_dirty(&self, pages: &mut Vec<u64>);
    /// Stops recording writes.
    fn stop_dirty_tracking(&self);
    /// Tells the guest it is about to be paused (a paravirtual notice, if it asked for them);
    /// called once, before the first [`Source::pause`]. False if the guest gets no notice.
    fn about_to_pause(&self) -> bool {
        false
    }
    /// True once the guest has read the notice [`Source::about_to_pause`] sent.
    fn notice_read(&self) -> bool {
        true
    }
    /// Asks its vCPUs to stop; true once none of them runs (call again until then).
    fn pause(&self) -> bool;
    /// Lets its vCPUs run again.
    fn resume(&self);
    /// Its vCPU, vGIC, device and paravirtual state; only while paused.
    fn capture(&self) -> Result<FinalState, String>;
}

/// The board that receives an instance.
pub trait Sink {
    /// Builds an empty instance for `config` (its RAM zeroed, nothing running).
    fn create(&mut self, config: &InstanceConfig) -> Result<(), String>;
    /// Writes RAM page `index`.
    fn write_page(&mut self, index: u64, page: &[u8; PAGE_SIZE]) -> Result<(), String>;
    /// Installs the final state and starts the instance.
    fn finish(&mut self, state: FinalState) -> Result<(), String>;
    /// Frees whatever `create` built (the stream failed).
    fn discard(&mut self);
}

/// When the sender stops copying while the guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Rounds of copying at most (1: copy once, then pause; 0: pause at once).
    pub max_rounds: u32,
    /// Pause once what is left would cross the link in this many milliseconds.
    pub downtime_ms: u64,
}

impl Limits {
    /// Live migration: up to 30 rounds, 10 ms of downtime.
    pub const LIVE: Self = Self {
        max_rounds: 30,
        downtime_ms: 10,
    };
}

/// Why a move failed. The instance keeps running where it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MigrationError {
    /// The source instance could not do its part (dirty tracking, capture).
    Source(String),
    /// The checkpoint could not be encoded.
    Encode(String),
    /// The receiver refused the stream, and said why.
    Refused(String),
    /// The receiver's answer made no sense.
    BadReply,
}

impl fmt::Display for MigrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Source(why) => write!(f, "{why}"),
            Self::Encode(why) => write!(f, "encoding the checkpoint: {why}"),
            Self::Refused(why) => write!(f, "the receiver refused it: {why}"),
            Self::BadReply => write!(f, "the receiver's answer was not understood"),
        }
    }
}

/// What one round sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Pages sent.
    pub pages: u64,
    /// Pages sent that were not all zero.
    pub nonzero_pages: u64,
    /// Bytes of stream.
    pub bytes: u64,
}

/// Figures of a finished move.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Copy rounds while the guest ran (the final, paused one not counted).
    pub rounds: u32,
    /// Bytes of stream in all.
    pub bytes: u64,
    /// Pages sent in all (a page dirtied again is sent again).
    pub pages: u64,
    /// Non-zero pages sent in all.
    pub nonzero_pages: u64,
    /// Counter ticks of the pause on this side: from the pause to the receiver's answer.
    pub paused_ms: u64,
    /// Milliseconds in all.
    pub total_ms: u64,
}

/// Which pages a round sends.
enum PageSet {
    /// Every page below the count.
    All(u64),
    /// These pages.
    List(Vec<u64>),
}

impl PageSet {
    fn len(&self) -> u64 {
        match self {
            Self::All(count) => *count,
            Self::List(pages) => pages.len() as u64,
        }
    }

    fn get(&self, at: u64) -> Option<u64> {
        match self {
            Self::All(count) => (at < *count).then_some(at),
            Self::List(pages) => pages.get(at as usize).copied(),
        }
    }
}

enum Phase {
    /// Nothing sent yet.
    Start,
    /// Copying `pages` while the guest runs (or, when `paused`, the last dirty pages).
    Copying {
        pages: PageSet,
        next: u64,
        paused: bool,
    },
    /// Waiting for the vCPUs to leave their CPUs; `noticed_at` once the guest was told.
    Pausing { noticed_at: Option<u64> },
    /// Everything sent; waiting for the receiver's answer.
    AwaitingAnswer,
    /// The receiver has the instance.
    Done,
    /// It failed (and the instance runs on here).
    Failed,
}

/// What the sender wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendStatus {
    /// It has more to send once the link takes what is buffered.
    More,
    /// It waits for the instance's vCPUs to pause: pump again soon.
    Pausing,
    /// Everything is sent: it waits for the receiver's answer.
    AwaitingAnswer,
}

/// The sending side of a move.
pub struct Sender {
    writer: Writer,
    phase: Phase,
    limits: Limits,
    ram_pages: u64,
    /// Rounds finished while the guest ran.
    rounds: u32,
    round_start_ms: u64,
    round: RoundReport,
    report: Report,
    started_ms: u64,
    paused_at_ms: Option<u64>,
    answer: Vec<u8>,
    page: Box<[u8; PAGE_SIZE]>,
    /// Dirty pages taken at the end of the last running round, sent in the paused one.
    carried: Vec<u64>,
}

impl Sender {
    /// A sender that will copy an instance of `ram_bytes` under `limits`, starting at `now_ms`.
    pub fn new(ram_bytes: u64, limits: Limits, now_ms: u64) -> Self {
        Self {
            writer: Writer::new(),
            phase: Phase::Start,
            limits,
            ram_pages: ram_bytes / PAGE_SIZE as u64,
            rounds: 0,
            round_start_ms: now_ms,
            round: RoundReport::default(),
            report: Report::default(),
            started_ms: now_ms,
            paused_at_ms: None,
            answer: Vec::new(),
            page: Box::new([0; PAGE_SIZE]),
            carried: Vec::new(),
        }
    }

    /// Rounds finished so far while the guest ran.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// Bytes of stream produced so far.
    pub fn bytes(&self) -> u64 {
        self.report.bytes
    }

    /// True once the instance was paused for the final copy (it stays paused until the move
    /// fails or the receiver has it; this stays true after a failure, to say where it failed).
    pub fn is_paused(&self) -> bool {
        self.paused_at_ms.is_some()
    }

    fn section(&mut self, section: &Section, out: &mut Vec<u8>) -> Result<(), MigrationError> {
        let before = out.len();
        self.writer
            .section(section, out)
            .map_err(|error| MigrationError::Encode(error.to_string()))?;
        let written = (out.len() - before) as u64;
        self.report.bytes += written;
        self.round.bytes += written;
        Ok(())
    }

    /// Produces stream into `out` until it holds about `room` bytes or the sender must wait.
    /// On error the instance has been resumed and tracking stopped.
    pub fn fill(
        &mut self,
        source: &dyn Source,
        out: &mut Vec<u8>,
        room: usize,
        now_ms: u64,
    ) -> Result<SendStatus, MigrationError> {
        let result = self.fill_inner(source, out, room, now_ms);
        if result.is_err() {
            self.fail(source);
        }
        result
    }

    fn fill_inner(
        &mut self,
        source: &dyn Source,
        out: &mut Vec<u8>,
        room: usize,
        now_ms: u64,
    ) -> Result<SendStatus, MigrationError> {
        loop {
            match &mut self.phase {
                Phase::Start => {
                    let before = out.len();
                    self.writer.header(out);
                    self.report.bytes += (out.len() - before) as u64;
                    self.section(&Section::Config(source.config()), out)?;
                    if self.limits.max_rounds == 0 {
                        self.phase = Phase::Pausing { noticed_at: None };
                    } else {
                        source
                            .start_dirty_tracking()
                            .map_err(MigrationError::Source)?;
                        self.begin_round(PageSet::All(self.ram_pages), false, now_ms);
                    }
                }
                Phase::Copying {
                    pages,
                    next,
                    paused,
                } => {
                    if *next >= pages.len() {
                        let paused = *paused;
                        if paused {
                            self.send_final_state(source, out)?;
                            self.phase = Phase::AwaitingAnswer;
                        } else {
                            self.end_round(source, now_ms);
                        }
                        continue;
                    }
                    if out.len() >= room {
                        return Ok(SendStatus::More);
                    }
                    let mut chunk = MemoryChunk { pages: Vec::new() };
                    while chunk.pages.len() < PAGES_PER_CHUNK {
                        let Some(index) = pages.get(*next) else {
                            break;
                        };
                        *next += 1;
                        source.read_page(index, &mut self.page);
                        let page = checkpoint::encode_page(index, &self.page);
                        if page.data != checkpoint::PageData::Zero {
                            self.report.nonzero_pages += 1;
                            self.round.nonzero_pages += 1;
                        }
                        chunk.pages.push(page);
                    }
                    let count = chunk.pages.len() as u64;
                    self.report.pages += count;
                    self.round.pages += count;
                    self.section(&Section::Memory(chunk), out)?;
                }
                Phase::Pausing { noticed_at } => {
                    // A guest that asked for notices gets its own before its vCPUs stop, and
                    // a moment to read it.
                    match *noticed_at {
                        None if source.about_to_pause() => {
                            *noticed_at = Some(now_ms);
                            return Ok(SendStatus::Pausing);
                        }
                        None => *noticed_at = Some(0),
                        Some(at) if at > 0 => {
                            let grace = now_ms.saturating_sub(at) < NOTICE_GRACE_MS;
                            if grace && !source.notice_read() {
                                return Ok(SendStatus::Pausing);
                            }
                        }
                        Some(_) => {}
                    }
                    if !source.pause() {
                        return Ok(SendStatus::Pausing);
                    }
                    self.paused_at_ms = Some(now_ms);
                    let mut dirty = core::mem::take(&mut self.carried);
                    if self.limits.max_rounds == 0 {
                        self.begin_round(PageSet::All(self.ram_pages), true, now_ms);
                    } else {
                        source.take_dirty(&mut dirty);
                        source.stop_dirty_tracking();
                        dirty.sort_unstable();
                        dirty.dedup();
                        self.begin_round(PageSet::List(dirty), true, now_ms);
                    }
                }
                Phase::AwaitingAnswer => return Ok(SendStatus::AwaitingAnswer),
                Phase::Done | Phase::Failed => return Ok(SendStatus::AwaitingAnswer),
            }
        }
    }

    fn begin_round(&mut self, pages: PageSet, paused: bool, now_ms: u64) {
        self.round = RoundReport::default();
        self.round_start_ms = now_ms;
        self.phase = Phase::Copying {
            pages,
            next: 0,
            paused,
        };
    }

    /// A round while the guest ran is over: another, or the pause.
    fn end_round(&mut self, source: &dyn Source, now_ms: u64) {
        self.rounds += 1;
        let ms = now_ms.saturating_sub(self.round_start_ms).max(1);
        let bytes_per_ms = (self.round.bytes / ms).max(1);
        // Pages written since are hardly ever all zero: priced as the round's non-zero ones
        // (the zero pages' few bytes counted in), not as its average page.
        let bytes_per_page = if self.round.nonzero_pages == 0 {
            PAGE_SIZE as u64
        } else {
            self.round.bytes.div_ceil(self.round.nonzero_pages)
        };
        let mut dirty = Vec::new();
        source.take_dirty(&mut dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let left_ms = dirty.len() as u64 * bytes_per_page / bytes_per_ms;
        // A round that leaves nearly as many pages dirty as it sent: the guest dirties pages
        // about as fast as they go, and more rounds would not shrink the pause, only make the
        // move longer.
        let converging = (dirty.len() as u64) < self.round.pages - self.round.pages / 10;
        if left_ms <= self.limits.downtime_ms
            || self.rounds >= self.limits.max_rounds
            || !converging
        {
            // The pages taken now go in the paused round, with whatever the guest writes
            // until it stops.
            self.carried = dirty;
            self.phase = Phase::Pausing { noticed_at: None };
        } else {
            self.begin_round(PageSet::List(dirty), false, now_ms);
        }
    }

    fn send_final_state(
        &mut self,
        source: &dyn Source,
        out: &mut Vec<u8>,
    ) -> Result<(), MigrationError> {
        let state = source.capture().map_err(MigrationError::Source)?;
        for vcpu in state.vcpus {
            self.section(&Section::Vcpu(Box::new(vcpu)), out)?;
        }
        self.section(&Section::Vgic(state.vgic), out)?;
        self.section(&Section::Pl011(state.pl011), out)?;
        self.section(&Section::Paravirt(state.paravirt), out)?;
        let before = out.len();
        self.writer
            .end(out)
            .map_err(|error| MigrationError::Encode(error.to_string()))?;
        self.report.bytes += (out.len() - before) as u64;
        Ok(())
    }

    /// Bytes from the receiver. `Ok(Some(report))` once it has the instance (the caller
    /// then frees or resumes its copy); `Ok(None)` while the answer is incomplete.
    pub fn answer(
        &mut self,
        source: &dyn Source,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<Option<Report>, MigrationError> {
        self.answer.extend_from_slice(bytes);
        let Some(end) = self.answer.iter().position(|&b| b == b'\n') else {
            if self.answer.len() > MAX_ANSWER {
                self.fail(source);
                return Err(MigrationError::BadReply);
            }
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&self.answer[..end]).into_owned();
        match parse_answer(&line) {
            Some(Ok(())) if matches!(self.phase, Phase::AwaitingAnswer) => {
                self.phase = Phase::Done;
                self.report.rounds = self.rounds;
                self.report.total_ms = now_ms.saturating_sub(self.started_ms);
                self.report.paused_ms = now_ms.saturating_sub(self.paused_at_ms.unwrap_or(now_ms));
                Ok(Some(self.report.clone()))
            }
            Some(Err(why)) => {
                self.fail(source);
                Err(MigrationError::Refused(why))
            }
            _ => {
                self.fail(source);
                Err(MigrationError::BadReply)
            }
        }
    }

    /// Gives up: tracking stops and the instance runs on here. Safe to call more than once.
    pub fn fail(&mut self, source: &dyn Source) {
        if matches!(self.phase, Phase::Failed | Phase::Done) {
            return;
        }
        if self.limits.max_rounds > 0 && !matches!(self.phase, Phase::Start) {
            source.stop_dirty_tracking();
        }
        source.resume();
        self.phase = Phase::Failed;
    }
}

/// The receiving side: checks the stream as it arrives, builds the instance through a
/// [`Sink`] and starts it only at a verified end.
pub struct Receiver {
    reader: Reader,
    created: bool,
    vcpus: Vec<VcpuState>,
    vgic: Option<VgicState>,
    pl011: Option<Pl011State>,
    paravirt: Option<ParavirtState>,
    name: Option<String>,
    expected_vcpus: usize,
    page: Box<[u8; PAGE_SIZE]>,
    finished: bool,
}

impl Default for Receiver {
    fn default() -> Self {
        Self::new()
    }
}

impl Receiver {
    /// A receiver waiting for a stream's first byte.
    pub fn new() -> Self {
        Self {
            reader: Reader::new(),
            created: false,
            vcpus: Vec::new(),
            vgic: None,
            pl011: None,
            paravirt: None,
            name: None,
            expected_vcpus: 0,
            page: Box::new([0; PAGE_SIZE]),
            finished: false,
        }
    }

    /// The instance's name, once the stream has said it.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Takes `bytes` of the stream. `Ok(true)` once the instance was started; on error
    /// whatever was built is discarded and the stream must be dropped.
    pub fn push(&mut self, bytes: &[u8], sink: &mut dyn Sink) -> Result<bool, String> {
        let result = self.push_inner(bytes, sink);
        if result.is_err() {
            self.abandon(sink);
        }
        result
    }

    fn push_inner(&mut self, bytes: &[u8], sink: &mut dyn Sink) -> Result<bool, String> {
        if self.finished {
            return Err("data after the end of the checkpoint".into());
        }
        self.reader.push(bytes);
        while let Some(section) = self.reader.next().map_err(|error| error.to_string())? {
            match section {
                Section::Config(config) => {
                    sink.create(&config)?;
                    self.created = true;
                    self.expected_vcpus = usize::from(config.vcpus);
                    self.name = Some(config.name);
                }
                Section::Memory(chunk) => {
                    for page in &chunk.pages {
                        checkpoint::decode_page(&page.data, &mut self.page)
                            .map_err(|error| error.to_string())?;
                        sink.write_page(page.index, &self.page)?;
                    }
                }
                Section::Vcpu(vcpu) => self.vcpus.push(*vcpu),
                Section::Vgic(vgic) => self.vgic = Some(vgic),
                Section::Pl011(pl011) => self.pl011 = Some(pl011),
                Section::Paravirt(paravirt) => self.paravirt = Some(paravirt),
                Section::End(EndSummary { .. }) => {
                    self.reader.finish().map_err(|error| error.to_string())?;
                    let state = self.final_state()?;
                    sink.finish(state)?;
                    self.finished = true;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn final_state(&mut self) -> Result<FinalState, String> {
        let mut vcpus = core::mem::take(&mut self.vcpus);
        vcpus.sort_by_key(|vcpu| vcpu.index);
        if vcpus.len() != self.expected_vcpus {
            return Err(format!(
                "the checkpoint has {} of the instance's {} vCPUs",
                vcpus.len(),
                self.expected_vcpus
            ));
        }
        let missing = |what: &str| format!("the checkpoint has no {what} section");
        Ok(FinalState {
            vcpus,
            vgic: self.vgic.take().ok_or_else(|| missing("vGIC"))?,
            pl011: self.pl011.take().ok_or_else(|| missing("PL011"))?,
            paravirt: self.paravirt.take().unwrap_or_default(),
        })
    }

    /// The stream broke off or failed: frees what was built. Safe to call more than once.
    pub fn abandon(&mut self, sink: &mut dyn Sink) {
        if self.created && !self.finished {
            sink.discard();
        }
        self.created = false;
    }
}
