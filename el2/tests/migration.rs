//! The live-migration engine (`el2::migration`) between a fake instance and a fake board: a
//! sender pumped into a buffer, a receiver fed from it in pieces of random size, the answer line
//! back. Stop-and-copy, pre-copy rounds with a guest writing between pumps, the round limit, and
//! the ways either side gives up.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

use checkpoint::{
    InstanceConfig, IrqState, PAGE_SIZE, ParavirtState, Pl011State, RedistributorState, Section,
    SpiState, VcpuState, VgicState, Writer,
};
use checkpoint::{MAX_ANSWER, answer_line, parse_answer};
use el2::migration::{
    FinalState, Limits, MigrationError, Receiver, Report, SendStatus, Sender, Sink, Source,
};

type Page = Box<[u8; PAGE_SIZE]>;

/// Bytes the simulated link carries per simulated millisecond.
const BYTES_PER_MS: u64 = 32 * 1024;

/// A deterministic xorshift64* generator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64, so that neighbouring seeds differ.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A number in `1..=max`.
    fn size(&mut self, max: usize) -> usize {
        1 + self.below(max as u64) as usize
    }
}

fn config(pages: u64) -> InstanceConfig {
    InstanceConfig {
        name: "guest-1".into(),
        ram_base: 0x4000_0000,
        ram_bytes: pages * PAGE_SIZE as u64,
        vcpus: 2,
        weight: 100,
        gic_version: 3,
        spis: 4,
        counter_frequency: 62_500_000,
    }
}

/// A final state that the reader accepts for `config`, with values worth comparing.
fn final_state(config: &InstanceConfig) -> FinalState {
    let vcpus = (0..config.vcpus)
        .map(|index| {
            let mut vcpu = VcpuState {
                index,
                mpidr: 0x8000_0000 | u64::from(index),
                powered_on: index == 0,
                pc: 0x4008_0000 + u64::from(index) * 4,
                pstate: 0x3c5,
                counter: 123_456_789,
                ..VcpuState::default()
            };
            vcpu.x[0] = u64::from(index);
            vcpu.x[30] = 0xdead_beef;
            vcpu.fp.v[3] = 0x0123_4567_89ab_cdef_0011_2233_4455_6677;
            vcpu.el1.sctlr = 0x30d0_1805;
            vcpu.virtual_timer.compare = 99;
            vcpu
        })
        .collect();
    let private = vec![
        IrqState {
            enabled: true,
            priority: 0xa0,
            group1: true,
            ..IrqState::default()
        };
        checkpoint::PRIVATE_IRQS
    ];
    FinalState {
        vcpus,
        vgic: VgicState {
            gic_version: 3,
            ctlr: 0x12,
            spis: (0..config.spis)
                .map(|i| SpiState {
                    irq: IrqState {
                        pending: i == 1,
                        ..IrqState::default()
                    },
                    route: u64::from(i),
                    targets: 0,
                })
                .collect(),
            redistributors: (0..config.vcpus)
                .map(|vcpu| RedistributorState {
                    vcpu,
                    asleep: false,
                    private: private.clone(),
                })
                .collect(),
        },
        pl011: Pl011State {
            cr: 0x301,
            rx: b"ab".to_vec(),
            line: b"hello".to_vec(),
            ..Pl011State::default()
        },
        paravirt: ParavirtState {
            notice_intid: Some(33),
            paused_ticks: 7,
            notices_raised: 2,
        },
    }
}

/// The instance being moved: RAM, a dirty log, vCPUs that stop after some calls to `pause`.
struct FakeSource {
    config: InstanceConfig,
    ram: RefCell<Vec<Page>>,
    dirty: RefCell<BTreeSet<u64>>,
    tracking: Cell<bool>,
    tracking_starts: Cell<u32>,
    /// `pause` returns true from this call on.
    pause_after: u32,
    pause_calls: Cell<u32>,
    paused: Cell<bool>,
    resumes: Cell<u32>,
    /// RAM when the vCPUs stopped.
    at_pause: RefCell<Option<Vec<Page>>>,
    state: FinalState,
    fail_tracking: bool,
    fail_capture: bool,
    /// Pages the guest wrote before and after the first pause was asked for.
    writes: Cell<u64>,
    writes_while_pausing: Cell<u64>,
}

impl FakeSource {
    fn new(pages: u64, pause_after: u32, rng: &mut Rng) -> Self {
        let config = config(pages);
        let ram = (0..pages)
            .map(|index| {
                let mut page: Page = Box::new([0; PAGE_SIZE]);
                match index % 4 {
                    // Zero.
                    0 => {}
                    // Incompressible.
                    1 => page.iter_mut().for_each(|b| *b = rng.next() as u8),
                    // Sparse: compresses.
                    _ => {
                        for _ in 0..8 {
                            let at = rng.below(PAGE_SIZE as u64) as usize;
                            page[at] = rng.next() as u8 | 1;
                        }
                    }
                }
                page
            })
            .collect();
        Self {
            state: final_state(&config),
            config,
            ram: RefCell::new(ram),
            dirty: RefCell::new(BTreeSet::new()),
            tracking: Cell::new(false),
            tracking_starts: Cell::new(0),
            pause_after,
            pause_calls: Cell::new(0),
            paused: Cell::new(false),
            resumes: Cell::new(0),
            at_pause: RefCell::new(None),
            fail_tracking: false,
            fail_capture: false,
            writes: Cell::new(0),
            writes_while_pausing: Cell::new(0),
        }
    }

    fn pages(&self) -> u64 {
        self.config.ram_bytes / PAGE_SIZE as u64
    }

    /// Whether the guest's vCPUs run.
    fn running(&self) -> bool {
        !self.paused.get()
    }

    /// The guest writes a few bytes of page `index`.
    fn guest_write(&self, index: u64, rng: &mut Rng) {
        assert!(!self.paused.get(), "the guest wrote while paused");
        let mut ram = self.ram.borrow_mut();
        let page = &mut ram[index as usize];
        for _ in 0..4 {
            let at = rng.below(PAGE_SIZE as u64) as usize;
            page[at] = page[at].wrapping_add(1 + rng.below(255) as u8);
        }
        if self.tracking.get() {
            self.dirty.borrow_mut().insert(index);
        }
        self.writes.set(self.writes.get() + 1);
        if self.pause_calls.get() > 0 {
            self.writes_while_pausing
                .set(self.writes_while_pausing.get() + 1);
        }
    }

    fn ram(&self) -> Vec<Page> {
        self.ram.borrow().clone()
    }
}

impl Source for FakeSource {
    fn config(&self) -> InstanceConfig {
        self.config.clone()
    }

    fn read_page(&self, index: u64, page: &mut [u8; PAGE_SIZE]) {
        page.copy_from_slice(&self.ram.borrow()[index as usize][..]);
    }

    fn start_dirty_tracking(&self) -> Result<(), String> {
        if self.fail_tracking {
            return Err("dirty tracking is not available".into());
        }
        self.tracking.set(true);
        self.tracking_starts.set(self.tracking_starts.get() + 1);
        self.dirty.borrow_mut().clear();
        Ok(())
    }

    fn take_dirty(&self, pages: &mut Vec<u64>) {
        pages.extend(std::mem::take(&mut *self.dirty.borrow_mut()));
    }

    fn stop_dirty_tracking(&self) {
        self.tracking.set(false);
    }

    fn pause(&self) -> bool {
        self.pause_calls.set(self.pause_calls.get() + 1);
        if !self.paused.get() && self.pause_calls.get() >= self.pause_after {
            self.paused.set(true);
            *self.at_pause.borrow_mut() = Some(self.ram());
        }
        self.paused.get()
    }

    fn resume(&self) {
        self.resumes.set(self.resumes.get() + 1);
        self.paused.set(false);
        self.pause_calls.set(0);
    }

    fn capture(&self) -> Result<FinalState, String> {
        assert!(self.paused.get(), "capture while the vCPUs run");
        if self.fail_capture {
            return Err("vCPU 1 did not stop".into());
        }
        Ok(self.state.clone())
    }
}

/// The receiving board.
#[derive(Default)]
struct FakeSink {
    config: Option<InstanceConfig>,
    creates: u32,
    ram: Vec<Page>,
    pages_written: u64,
    finished: Option<FinalState>,
    discards: u32,
}

impl Sink for FakeSink {
    fn create(&mut self, config: &InstanceConfig) -> Result<(), String> {
        assert!(self.config.is_none(), "create called twice");
        self.creates += 1;
        self.config = Some(config.clone());
        self.ram = vec![Box::new([0; PAGE_SIZE]); (config.ram_bytes / PAGE_SIZE as u64) as usize];
        Ok(())
    }

    fn write_page(&mut self, index: u64, page: &[u8; PAGE_SIZE]) -> Result<(), String> {
        assert!(self.finished.is_none() && self.discards == 0);
        let slot = self
            .ram
            .get_mut(index as usize)
            .ok_or_else(|| format!("page {index} out of range"))?;
        slot.copy_from_slice(page);
        self.pages_written += 1;
        Ok(())
    }

    fn finish(&mut self, state: FinalState) -> Result<(), String> {
        assert!(self.finished.is_none() && self.discards == 0);
        self.finished = Some(state);
        Ok(())
    }

    fn discard(&mut self) {
        self.discards += 1;
        self.ram.clear();
    }
}

/// Feeds `bytes` to the receiver in pieces of random size: `Ok(true)` once it started the
/// instance (which must be on the last byte).
fn feed(
    receiver: &mut Receiver,
    sink: &mut FakeSink,
    mut bytes: &[u8],
    rng: &mut Rng,
) -> Result<bool, String> {
    while !bytes.is_empty() {
        let (piece, rest) = bytes.split_at(rng.size(9000).min(bytes.len()));
        bytes = rest;
        if receiver.push(piece, sink)? {
            assert!(bytes.is_empty(), "the receiver finished before the end");
            return Ok(true);
        }
    }
    Ok(false)
}

/// Gives the sender an answer line in pieces of random size.
fn give_answer(
    sender: &mut Sender,
    source: &FakeSource,
    line: &str,
    now: u64,
    rng: &mut Rng,
) -> Result<Option<Report>, MigrationError> {
    let mut bytes = line.as_bytes();
    while !bytes.is_empty() {
        let (piece, rest) = bytes.split_at(rng.size(8).min(bytes.len()));
        bytes = rest;
        if let Some(report) = sender.answer(source, piece, now)? {
            assert!(bytes.is_empty(), "a report before the end of the line");
            return Ok(Some(report));
        }
    }
    Ok(None)
}

/// Moves `source` to `sink`: the guest runs between pumps, the stream crosses in random pieces,
/// the receiver's answer comes back. Also returns the stream's length.
fn migrate(
    source: &FakeSource,
    sink: &mut FakeSink,
    limits: Limits,
    room: usize,
    rng: &mut Rng,
    guest: &mut dyn FnMut(&FakeSource, &mut Rng),
) -> (Result<Report, MigrationError>, u64) {
    let mut sender = Sender::new(source.config.ram_bytes, limits, 1000);
    let mut receiver = Receiver::new();
    let mut out = Vec::new();
    let mut now = 1000;
    let mut streamed = 0u64;
    let mut received = false;
    for _ in 0..100_000 {
        guest(source, rng);
        out.clear();
        let status = match sender.fill(source, &mut out, room, now) {
            Ok(status) => status,
            Err(error) => return (Err(error), streamed),
        };
        streamed += out.len() as u64;
        now += 1 + out.len() as u64 / BYTES_PER_MS;
        assert_eq!(sender.bytes(), streamed);
        if !out.is_empty() {
            assert!(!received, "stream after the receiver finished");
            match feed(&mut receiver, sink, &out, rng) {
                Ok(done) => received = done,
                Err(why) => {
                    assert!(!why.is_empty());
                    let line = answer_line(&Err(why));
                    let result = give_answer(&mut sender, source, &line, now, rng);
                    return (result.map(|_| panic!("a refusal accepted")), streamed);
                }
            }
        }
        match status {
            SendStatus::More => assert!(!received),
            SendStatus::Pausing => assert!(!received && !sender.is_paused()),
            SendStatus::AwaitingAnswer => {
                assert!(sender.is_paused());
                assert!(received, "the sender is done, the receiver is not");
                now += 3;
                let report = give_answer(&mut sender, source, &answer_line(&Ok(())), now, rng)
                    .map(|report| report.expect("a complete OK line gives the report"));
                return (report, streamed);
            }
        }
    }
    panic!("the move did not end");
}

/// The guest writes up to `max` random pages per pump while it runs.
fn random_writer(max: u64) -> impl FnMut(&FakeSource, &mut Rng) {
    move |source, rng| {
        if source.running() {
            for _ in 0..rng.below(max + 1) {
                let index = rng.below(source.pages());
                source.guest_write(index, rng);
            }
        }
    }
}

fn assert_moved(source: &FakeSource, sink: &FakeSink) {
    let at_pause = source.at_pause.borrow();
    let at_pause = at_pause.as_ref().expect("the source was paused");
    assert_eq!(sink.config.as_ref(), Some(&source.config));
    assert!(
        sink.ram == *at_pause,
        "the sink's RAM is not the RAM at the pause"
    );
    assert!(
        source.ram() == *at_pause,
        "the source's RAM changed after the pause"
    );
    assert_eq!(sink.finished.as_ref(), Some(&source.state));
    assert_eq!(sink.discards, 0);
    // Still paused: the caller, not the sender, decides what becomes of it.
    assert!(source.paused.get());
    assert_eq!(source.resumes.get(), 0);
    assert!(!source.tracking.get());
}

#[test]
fn stop_and_copy_moves_ram_and_state() {
    let mut rng = Rng::new(1);
    // Not a whole number of chunks; pausing takes a few pumps during which the guest writes.
    let source = FakeSource::new(200, 3, &mut rng);
    let mut sink = FakeSink::default();
    let limits = Limits {
        max_rounds: 0,
        downtime_ms: 10,
    };
    let mut guest = random_writer(3);
    let (report, streamed) = migrate(&source, &mut sink, limits, 64 * 1024, &mut rng, &mut guest);
    let report = report.expect("the move succeeds");
    assert_moved(&source, &sink);
    assert!(source.writes_while_pausing.get() > 0);
    assert_eq!(source.tracking_starts.get(), 0);
    assert_eq!(source.pause_calls.get(), 3);

    let nonzero = source
        .ram()
        .iter()
        .filter(|page| page.iter().any(|&b| b != 0))
        .count() as u64;
    assert!(nonzero > 0 && nonzero < 200);
    assert_eq!(report.rounds, 0);
    assert_eq!(report.pages, 200);
    assert_eq!(report.nonzero_pages, nonzero);
    assert_eq!(report.bytes, streamed);
    assert_eq!(sink.pages_written, 200);
    assert!(report.paused_ms <= report.total_ms);
    assert!(report.total_ms > 0);
}

#[test]
fn stop_and_copy_zero_pages_cost_little() {
    let mut rng = Rng::new(2);
    let source = FakeSource::new(64, 1, &mut rng);
    for page in source.ram.borrow_mut().iter_mut().skip(3) {
        page.fill(0);
    }
    let mut sink = FakeSink::default();
    let limits = Limits {
        max_rounds: 0,
        downtime_ms: 0,
    };
    let (report, streamed) = migrate(
        &source,
        &mut sink,
        limits,
        1 << 20,
        &mut rng,
        &mut |_, _| {},
    );
    let report = report.expect("the move succeeds");
    assert_moved(&source, &sink);
    assert_eq!((report.pages, report.nonzero_pages), (64, 2));
    // One incompressible page, one sparse page, 62 zero pages and the state: about 5 KiB.
    assert!(
        streamed < (2 * PAGE_SIZE) as u64,
        "{streamed} bytes for a 64-page RAM with one incompressible page"
    );
    assert!(streamed * 32 < 64 * PAGE_SIZE as u64);
}

#[test]
fn live_rounds_with_a_writing_guest() {
    let mut rng = Rng::new(3);
    let source = FakeSource::new(512, 4, &mut rng);
    let mut sink = FakeSink::default();
    let limits = Limits {
        max_rounds: 30,
        downtime_ms: 1,
    };
    // One chunk per pump.
    let mut guest = random_writer(24);
    let (report, streamed) = migrate(&source, &mut sink, limits, 1, &mut rng, &mut guest);
    let report = report.expect("the move succeeds");
    assert_moved(&source, &sink);
    assert_eq!(source.tracking_starts.get(), 1);
    assert!(
        report.rounds >= 2 && report.rounds < 30,
        "{} rounds",
        report.rounds
    );
    assert!(source.writes_while_pausing.get() > 0);
    assert!(report.pages > 512);
    assert!(report.nonzero_pages <= report.pages);
    assert_eq!(report.bytes, streamed);
    assert_eq!(sink.pages_written, report.pages);
}

#[test]
fn live_rounds_with_random_seeds() {
    for seed in 0..12 {
        let mut rng = Rng::new(seed);
        let pages = 64 + rng.below(200);
        let source = FakeSource::new(pages, 1 + rng.below(4) as u32, &mut rng);
        let mut sink = FakeSink::default();
        let limits = Limits {
            max_rounds: 1 + rng.below(6) as u32,
            downtime_ms: rng.below(3),
        };
        let room = rng.size(64 * 1024);
        let mut guest = random_writer(rng.below(40));
        let (report, _) = migrate(&source, &mut sink, limits, room, &mut rng, &mut guest);
        let report = report.expect("the move succeeds");
        assert_moved(&source, &sink);
        assert!(report.rounds >= 1 && report.rounds <= limits.max_rounds);
        assert!(report.pages >= pages);
    }
}

#[test]
fn a_guest_that_dirties_everything_is_paused_once_a_round_leaves_as_much_dirty_as_it_sent() {
    let mut rng = Rng::new(4);
    let source = FakeSource::new(128, 2, &mut rng);
    let mut sink = FakeSink::default();
    let limits = Limits {
        max_rounds: 4,
        downtime_ms: 0,
    };
    let mut guest = |source: &FakeSource, rng: &mut Rng| {
        if source.running() {
            for index in 0..source.pages() {
                source.guest_write(index, rng);
            }
        }
    };
    let (report, _) = migrate(&source, &mut sink, limits, 1, &mut rng, &mut guest);
    let report = report.expect("the move succeeds");
    assert_moved(&source, &sink);
    // The first round leaves as much dirty as it sent: no point in a second.
    assert_eq!(report.rounds, 1);
    // One round while it ran, then every page again while paused.
    assert_eq!(report.pages, 2 * 128);
}

/// The whole stream of a stop-and-copy move of `source`, nobody receiving.
fn stream_of(source: &FakeSource) -> Vec<u8> {
    let limits = Limits {
        max_rounds: 0,
        downtime_ms: 0,
    };
    let mut sender = Sender::new(source.config.ram_bytes, limits, 0);
    let mut stream = Vec::new();
    for _ in 0..1000 {
        if sender.fill(source, &mut stream, 1 << 20, 0) == Ok(SendStatus::AwaitingAnswer) {
            return stream;
        }
    }
    panic!("the sender did not finish");
}

#[test]
fn receiver_abandons_a_truncated_stream() {
    let mut rng = Rng::new(5);
    let source = FakeSource::new(100, 1, &mut rng);
    let stream = stream_of(&source);
    let mut sink = FakeSink::default();
    let mut receiver = Receiver::new();
    assert_eq!(
        feed(
            &mut receiver,
            &mut sink,
            &stream[..stream.len() - 1],
            &mut rng
        ),
        Ok(false)
    );
    assert_eq!(receiver.name(), Some("guest-1"));
    assert_eq!(sink.discards, 0);
    receiver.abandon(&mut sink);
    receiver.abandon(&mut sink);
    assert_eq!(sink.discards, 1);
    assert!(sink.finished.is_none());

    // The whole of it works, in pieces of any size.
    let mut sink = FakeSink::default();
    let mut receiver = Receiver::new();
    assert_eq!(feed(&mut receiver, &mut sink, &stream, &mut rng), Ok(true));
    assert!(sink.ram == source.ram());
    assert_eq!(sink.finished.as_ref(), Some(&source.state));
    // Abandoning a started instance frees nothing; more bytes are an error.
    receiver.abandon(&mut sink);
    assert!(receiver.push(&[0], &mut sink).is_err());
    assert_eq!(sink.discards, 0);

    // A byte after the end in the same piece as the end.
    let mut longer = stream.clone();
    longer.push(0);
    let mut sink = FakeSink::default();
    let mut receiver = Receiver::new();
    assert!(receiver.push(&longer, &mut sink).is_err());
    assert_eq!((sink.discards, sink.finished.is_none()), (1, true));
}

/// Offsets of each frame's body in a stream: `(start, end)`.
fn bodies(stream: &[u8]) -> Vec<(usize, usize)> {
    let mut at = checkpoint::HEADER_LEN;
    let mut bodies = Vec::new();
    while at < stream.len() {
        let len = u32::from_le_bytes(stream[at + 4..at + 8].try_into().unwrap()) as usize;
        let start = at + checkpoint::FRAME_HEADER_LEN;
        bodies.push((start, start + len));
        at = start + len;
    }
    assert_eq!(at, stream.len());
    bodies
}

#[test]
fn receiver_refuses_a_flipped_byte() {
    let mut rng = Rng::new(6);
    let source = FakeSource::new(100, 1, &mut rng);
    let stream = stream_of(&source);

    // In the body of the frame in the middle: the checksum catches it.
    let middle = stream.len() / 2;
    let (start, end) = bodies(&stream)
        .into_iter()
        .find(|&(_, end)| end > middle)
        .unwrap();
    let at = middle.clamp(start, end - 1);
    let mut broken = stream.clone();
    broken[at] ^= 0x10;
    let mut sink = FakeSink::default();
    let mut receiver = Receiver::new();
    let why = feed(&mut receiver, &mut sink, &broken, &mut rng).expect_err("a flipped byte");
    assert!(why.contains("checksum"), "{why}");
    assert_eq!(sink.discards, 1);
    assert!(sink.finished.is_none());

    // Anywhere at all: never started, and whatever was created is discarded.
    for i in 0..97 {
        let at = i * (stream.len() - 1) / 96;
        let mut broken = stream.clone();
        broken[at] ^= 1 << (i % 8);
        let mut sink = FakeSink::default();
        let mut receiver = Receiver::new();
        if feed(&mut receiver, &mut sink, &broken, &mut rng).is_ok() {
            // A longer frame length: it waits for bytes that never come.
            receiver.abandon(&mut sink);
        }
        assert!(sink.finished.is_none(), "started with byte {at} flipped");
        assert_eq!(sink.discards, sink.creates, "byte {at}");
    }
}

#[test]
fn receiver_refuses_a_missing_vcpu() {
    let mut rng = Rng::new(7);
    let config = config(16);
    let state = final_state(&config);
    let mut writer = Writer::new();
    let mut stream = Vec::new();
    writer.header(&mut stream);
    let sections = [
        Section::Config(config.clone()),
        Section::Vcpu(Box::new(state.vcpus[1].clone())),
        Section::Vgic(state.vgic.clone()),
        Section::Pl011(state.pl011.clone()),
    ];
    for section in &sections {
        writer.section(section, &mut stream).unwrap();
    }
    writer.end(&mut stream).unwrap();

    let mut sink = FakeSink::default();
    let mut receiver = Receiver::new();
    let why = feed(&mut receiver, &mut sink, &stream, &mut rng).expect_err("a vCPU is missing");
    assert!(why.contains("vCPU"), "{why}");
    assert_eq!((sink.creates, sink.discards), (1, 1));
    assert!(sink.finished.is_none());
    // The error is final.
    assert!(receiver.push(&[0], &mut sink).is_err());
    assert_eq!(sink.discards, 1);
}

/// A live sender run until it waits for the answer, nobody receiving.
fn sent(source: &FakeSource) -> Sender {
    let limits = Limits {
        max_rounds: 3,
        downtime_ms: 10,
    };
    let mut sender = Sender::new(source.config.ram_bytes, limits, 0);
    let mut out = Vec::new();
    for now in 0..1000 {
        out.clear();
        if sender.fill(source, &mut out, 1, now) == Ok(SendStatus::AwaitingAnswer) {
            return sender;
        }
    }
    panic!("the sender did not finish");
}

#[test]
fn sender_refused() {
    let mut rng = Rng::new(8);
    let source = FakeSource::new(64, 2, &mut rng);
    let mut sender = sent(&source);
    assert!(source.paused.get() && !source.tracking.get());
    assert_eq!(sender.answer(&source, b"ERR no ", 50), Ok(None));
    assert_eq!(
        sender.answer(&source, b"memory\n", 50),
        Err(MigrationError::Refused("no memory".into()))
    );
    assert_eq!(source.resumes.get(), 1);
    assert!(!source.paused.get() && !source.tracking.get());
    // Done for good: nothing more happens.
    sender.fail(&source);
    let mut out = Vec::new();
    assert!(sender.fill(&source, &mut out, 1, 60).is_ok());
    assert!(out.is_empty());
    assert_eq!(source.resumes.get(), 1);

    // Refused while it still copies: tracking stops too.
    let source = FakeSource::new(256, 2, &mut rng);
    let limits = Limits {
        max_rounds: 3,
        downtime_ms: 10,
    };
    let mut sender = Sender::new(source.config.ram_bytes, limits, 0);
    for now in 0..2 {
        assert_eq!(sender.fill(&source, &mut out, 1, now), Ok(SendStatus::More));
    }
    assert!(source.tracking.get());
    assert_eq!(
        give_answer(&mut sender, &source, "ERR no memory\n", 3, &mut rng),
        Err(MigrationError::Refused("no memory".into()))
    );
    assert_eq!(source.resumes.get(), 1);
    assert!(!source.tracking.get());
}

#[test]
fn sender_bad_replies() {
    let mut rng = Rng::new(9);
    for reply in ["HELLO\n", "ok\n", "ERR\n", "\n"] {
        let source = FakeSource::new(64, 1, &mut rng);
        let mut sender = sent(&source);
        assert_eq!(
            give_answer(&mut sender, &source, reply, 10, &mut rng),
            Err(MigrationError::BadReply),
            "{reply:?}"
        );
        assert_eq!(source.resumes.get(), 1);
        assert!(!source.tracking.get());
    }

    // An OK before the stream ended.
    let source = FakeSource::new(256, 1, &mut rng);
    let limits = Limits {
        max_rounds: 2,
        downtime_ms: 0,
    };
    let mut sender = Sender::new(source.config.ram_bytes, limits, 0);
    sender.fill(&source, &mut Vec::new(), 1, 0).unwrap();
    assert_eq!(
        sender.answer(&source, b"OK\n", 1),
        Err(MigrationError::BadReply)
    );
    assert_eq!(source.resumes.get(), 1);
    assert!(!source.tracking.get());

    // A line that never ends.
    let source = FakeSource::new(64, 1, &mut rng);
    let mut sender = sent(&source);
    let mut result = Ok(None);
    for _ in 0..10 {
        result = sender.answer(&source, &[b'x'; 100], 10);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(MigrationError::BadReply));
    assert_eq!(source.resumes.get(), 1);
}

#[test]
fn sender_fail_resumes_once() {
    let mut rng = Rng::new(10);
    let source = FakeSource::new(128, 1, &mut rng);
    let limits = Limits {
        max_rounds: 3,
        downtime_ms: 0,
    };
    let mut sender = Sender::new(source.config.ram_bytes, limits, 0);
    sender.fill(&source, &mut Vec::new(), 1, 0).unwrap();
    assert!(source.tracking.get());
    sender.fail(&source);
    sender.fail(&source);
    assert_eq!(source.resumes.get(), 1);
    assert!(!source.tracking.get());

    // Once paused, too.
    let source = FakeSource::new(64, 1, &mut rng);
    let mut sender = sent(&source);
    sender.fail(&source);
    sender.fail(&source);
    assert_eq!(source.resumes.get(), 1);
    assert!(!source.paused.get() && !source.tracking.get());
    assert!(sender.answer(&source, b"OK\n", 5).is_err());
    assert_eq!(source.resumes.get(), 1);
}

#[test]
fn sender_source_failures() {
    let mut rng = Rng::new(11);
    let mut source = FakeSource::new(64, 1, &mut rng);
    source.fail_tracking = true;
    let mut sender = Sender::new(source.config.ram_bytes, Limits::LIVE, 0);
    let error = sender.fill(&source, &mut Vec::new(), 1, 0).unwrap_err();
    assert!(matches!(error, MigrationError::Source(_)), "{error:?}");
    assert_eq!(source.resumes.get(), 1);

    let mut source = FakeSource::new(64, 2, &mut rng);
    source.fail_capture = true;
    let mut sender = Sender::new(source.config.ram_bytes, Limits::LIVE, 0);
    let mut result = Ok(SendStatus::More);
    for now in 0..100 {
        result = sender.fill(&source, &mut Vec::new(), 1, now);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(
        result,
        Err(MigrationError::Source("vCPU 1 did not stop".into()))
    );
    assert_eq!(source.resumes.get(), 1);
    assert!(!source.paused.get() && !source.tracking.get());
}

#[test]
fn answer_lines_round_trip() {
    assert_eq!(answer_line(&Ok(())), "OK\n");
    assert_eq!(parse_answer("OK"), Some(Ok(())));
    assert_eq!(parse_answer("OK\r"), Some(Ok(())));
    for why in ["no memory", "instance \"a\" exists", "é ü"] {
        let line = answer_line(&Err(why.into()));
        assert_eq!(line, format!("ERR {why}\n"));
        assert_eq!(
            parse_answer(line.strip_suffix('\n').unwrap()),
            Some(Err(why.into()))
        );
    }
    assert_eq!(parse_answer("ERR "), Some(Err(String::new())));
    assert_eq!(parse_answer("OKAY"), None);
    assert_eq!(parse_answer("HELLO"), None);
    assert_eq!(parse_answer(""), None);

    // Control characters never reach the line: one line, ending in its only newline.
    let line = answer_line(&Err("bad\nline\r\x1b[2J\x07\tend\u{85}".into()));
    assert_eq!(line, "ERR badline[2Jend\n");
    // Nor the sender's error, from a receiver that sends them anyway.
    assert_eq!(
        parse_answer("ERR a\x1b[2Jb\x07c"),
        Some(Err("a[2Jbc".into()))
    );
}

#[test]
fn long_answers_fit_the_limit() {
    let mut rng = Rng::new(12);
    for why in ["x".repeat(2000), "é".repeat(1000), "€".repeat(1000)] {
        let line = answer_line(&Err(why.clone()));
        assert!(line.len() <= MAX_ANSWER, "{} bytes", line.len());
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let Some(Err(reason)) = parse_answer(line.trim_end_matches('\n')) else {
            panic!("{line:?} does not parse");
        };
        assert!(why.starts_with(&reason) && reason.len() > 400);

        // The sender takes it, in pieces of any size, as the refusal it is.
        let source = FakeSource::new(64, 1, &mut rng);
        let mut sender = sent(&source);
        assert_eq!(
            give_answer(&mut sender, &source, &line, 10, &mut rng),
            Err(MigrationError::Refused(reason))
        );
    }
}
