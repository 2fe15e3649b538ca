//! The board link at work: the board's NIC under the TCP stack, and the moves that use it. An
//! instance goes out (`save`: a snapshot to a receiver, the instance runs on; `migrate`: it
//! moves and ends here once the other board has it) or comes in (`listen`/`restore`).
//!
//! The work happens in [`work`], which each CPU calls between vCPU slices and when idle, so a
//! move runs beside the instances without a thread of its own; the NIC's interrupt and the
//! stack's own deadline bring a CPU back to it.

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use devicetree::VirtioMmio;
use devicetree::guest::RAM_BASE;
use log::{error, info, warn};
use smoltcp::wire::Ipv4Address;
use spin::Mutex;

use crate::arch::board::{board, kick};
use crate::arch::guest::{InstanceConfig, Vm};
use crate::arch::nic::Nic;
use crate::arch::{gic, sysregs};
use crate::instance::{Notice, Power};
use crate::psci::status;
use checkpoint::answer_line;

use crate::migration::{
    FinalState, Limits, MigrationError, Receiver, Report, SendStatus, Sender, Sink, Source,
};
use crate::net::{Connection, ConnectionState, Link, NetConfig};

/// Where a board accepts incoming instances (`listen`, `restore`).
pub const LISTEN_PORT: u16 = 7070;
/// Where `save` sends a checkpoint: the host's receiver (`cargo xtask checkpoint recv`), which
/// QEMU user networking forwards this address to (`guestfwd`).
pub const SAVE_DESTINATION: &str = "10.0.2.100:7071";
/// Stream bytes produced per call of [`work`]: about 90 frames, so that each call is short and
/// the instances on the CPU that makes it keep running between calls.
const FILL_BYTES: usize = 128 * 1024;
/// Milliseconds to reach the other side before giving up.
const CONNECT_TIMEOUT_MS: u64 = 10_000;

static LINK: Mutex<Option<BoardLink>> = Mutex::new(None);
/// The NIC raised its interrupt or a command started work: a CPU should call [`work`].
static PENDING: AtomicBool = AtomicBool::new(false);

/// An instance on its way out.
struct Outgoing {
    vm: Arc<Vm>,
    sender: Sender,
    connection: Connection,
    destination: String,
    /// A snapshot: the instance runs on here once the receiver has it.
    snapshot: bool,
    buffer: Vec<u8>,
    sent: usize,
    started_ms: u64,
}

/// An instance on its way in.
struct Incoming {
    connection: Connection,
    receiver: Receiver,
    sink: BoardSink,
    /// Waits for another stream once this one is done (`listen`), or not (`restore`).
    keep_listening: bool,
}

/// The board's link and what moves over it.
struct BoardLink {
    link: Link<Nic>,
    config: NetConfig,
    outgoing: Option<Outgoing>,
    incoming: Option<Incoming>,
    /// How the last move ended, for `migrate-status`.
    last: Option<String>,
    /// Received instances waiting for this board's counter to reach theirs.
    deferred: Vec<Ready>,
}

fn now_ms() -> u64 {
    sysregs::ticks_to_ms(sysregs::counter())
}

/// Starts the board link on the first virtio-net device among `slots`; the NIC's interrupt,
/// if any, for the caller to route to this CPU.
pub fn init(slots: &[VirtioMmio], config: NetConfig) -> Option<u32> {
    let nic = Nic::probe(slots)?;
    let (mac, intid) = (nic.mac(), nic.intid);
    let link = Link::new(nic, mac, &config, sysregs::counter(), now_ms());
    info!(
        "board link: virtio-net {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} at {}{}",
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5],
        config.address,
        config
            .gateway
            .map_or(String::new(), |gateway| alloc::format!(" via {gateway}"))
    );
    *LINK.lock() = Some(BoardLink {
        link,
        config,
        outgoing: None,
        incoming: None,
        last: None,
        deferred: Vec::new(),
    });
    intid
}

/// The NIC's interrupt: acknowledged here; the work waits for [`work`].
pub fn interrupt() {
    if let Some(board_link) = LINK.lock().as_mut() {
        board_link.link.device_mut().acknowledge();
    }
    PENDING.store(true, Ordering::Release);
}

/// True if [`work`] has something to do now.
pub fn is_pending() -> bool {
    PENDING.load(Ordering::Acquire)
}

/// Milliseconds until [`work`] must run again even if no frame arrives: soon while a move is in
/// progress (to keep it flowing and its timers running), never otherwise (a frame's arrival
/// raises the NIC's interrupt).
pub fn next_deadline_ms() -> Option<u64> {
    let guard = LINK.try_lock()?;
    let board_link = guard.as_ref()?;
    (board_link.outgoing.is_some()
        || board_link.incoming_active()
        || !board_link.deferred.is_empty())
    .then_some(1)
}

/// Moves frames and pumps the moves in progress. Called with no vCPU on this CPU; does
/// nothing if another CPU is at it.
pub fn work() {
    let Some(mut guard) = LINK.try_lock() else {
        return;
    };
    let Some(board_link) = guard.as_mut() else {
        return;
    };
    PENDING.store(false, Ordering::Release);
    let now = now_ms();
    board_link.link.poll(now);
    board_link.pump_outgoing(now);
    board_link.pump_incoming(now);
    board_link.launch_deferred();
    board_link.link.poll(now);
    // A move in progress wants the next turn as soon as there is one.
    if board_link.outgoing.is_some()
        || board_link.incoming_active()
        || !board_link.deferred.is_empty()
    {
        PENDING.store(true, Ordering::Release);
    }
}

/// Starts sending `vm` to `destination` (`ADDRESS[:PORT]`): a snapshot that leaves it running
/// here, or a move after which it ends here.
pub fn send(vm: Arc<Vm>, destination: &str, snapshot: bool) -> Result<String, String> {
    let mut guard = LINK.lock();
    let board_link = guard.as_mut().ok_or_else(no_link)?;
    if board_link.outgoing.is_some() {
        return Err("another instance is being sent (migrate-status, migrate-cancel)".into());
    }
    let (address, port) = parse_destination(destination, LISTEN_PORT)?;
    let connection = board_link
        .link
        .connect(address, port)
        .map_err(|why| alloc::format!("cannot connect to {address}:{port}: {why}"))?;
    let now = now_ms();
    // A snapshot is consistent at its pause, as a move is; copying while it runs keeps the
    // pause short for both.
    let limits = Limits::LIVE;
    let name = vm.instance.name.clone();
    let destination = alloc::format!("{address}:{port}");
    let what = if snapshot { "saving" } else { "migrating" };
    info!("{name}: {what} to {destination}");
    board_link.outgoing = Some(Outgoing {
        sender: Sender::new(vm.config().ram_size, limits, now),
        vm,
        connection,
        destination: destination.clone(),
        snapshot,
        buffer: Vec::new(),
        sent: 0,
        started_ms: now,
    });
    PENDING.store(true, Ordering::Release);
    Ok(alloc::format!("{name}: {what} to {destination}"))
}

/// HV_CHECKPOINT from the instance in `slot`: its checkpoint goes to the host's receiver, as
/// `save NAME` on the shell sends it. On refusal, the PSCI status for the guest and why.
pub fn checkpoint_for_guest(slot: usize) -> Result<(), (i64, String)> {
    let vm = board()
        .instance(slot)
        .ok_or((status::DENIED, "the instance is going".into()))?;
    if LINK.lock().is_none() {
        return Err((status::NOT_SUPPORTED, no_link()));
    }
    send(vm, SAVE_DESTINATION, true)
        .map(drop)
        .map_err(|why| (status::DENIED, why))
}

/// Accepts instances on [`LISTEN_PORT`]: every stream (`keep_listening`) or one.
pub fn listen(keep_listening: bool) -> Result<String, String> {
    let mut guard = LINK.lock();
    let board_link = guard.as_mut().ok_or_else(no_link)?;
    if let Some(incoming) = &mut board_link.incoming {
        incoming.keep_listening |= keep_listening;
        return Ok(alloc::format!("already listening on port {LISTEN_PORT}"));
    }
    board_link.start_listening(keep_listening)?;
    PENDING.store(true, Ordering::Release);
    Ok(alloc::format!(
        "listening on {}:{LISTEN_PORT}",
        board_link.config.address.address()
    ))
}

/// How the move in progress, or the last one, is going.
pub fn status() -> String {
    let guard = LINK.lock();
    let Some(board_link) = guard.as_ref() else {
        return no_link();
    };
    let mut lines = Vec::new();
    if let Some(out) = &board_link.outgoing {
        let phase = if out.sender.is_paused() {
            "paused for the final copy"
        } else {
            "copying while it runs"
        };
        lines.push(alloc::format!(
            "{}: {} to {}: round {}, {} KiB sent, {phase}",
            out.vm.instance.name,
            if out.snapshot { "saving" } else { "migrating" },
            out.destination,
            out.sender.rounds() + 1,
            out.sender.bytes() >> 10
        ));
    }
    if let Some(incoming) = &board_link.incoming {
        lines.push(match incoming.receiver.name() {
            Some(name) => alloc::format!("receiving {name}"),
            None => alloc::format!("listening on port {LISTEN_PORT}"),
        });
    }
    if let Some(last) = &board_link.last {
        lines.push(alloc::format!("last: {last}"));
    }
    if lines.is_empty() {
        lines.push("no migration".into());
    }
    lines.join("\n")
}

/// Stops the outgoing move; the instance keeps running here.
pub fn cancel() -> Result<String, String> {
    let mut guard = LINK.lock();
    let board_link = guard.as_mut().ok_or_else(no_link)?;
    if board_link.outgoing.is_none() {
        return Err("no migration to cancel".into());
    }
    board_link.fail_outgoing(now_ms(), "cancelled by the operator");
    Ok("cancelled: the instance keeps running here".into())
}

fn no_link() -> String {
    "this board has no network link (QEMU: -device virtio-net-device)".into()
}

/// `ADDRESS[:PORT]`.
fn parse_destination(text: &str, default_port: u16) -> Result<(Ipv4Address, u16), String> {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse()
                .map_err(|_| alloc::format!("bad port in \"{text}\""))?,
        ),
        None => (text, default_port),
    };
    let address = host
        .parse()
        .map_err(|_| alloc::format!("\"{host}\" is not an IPv4 address"))?;
    Ok((address, port))
}

impl BoardLink {
    /// Starts the received instances whose counter this board's has reached.
    fn launch_deferred(&mut self) {
        let now = sysregs::counter();
        self.deferred.retain(|ready| {
            if ready.counter > now {
                return true;
            }
            vm_start(ready);
            if let Some(vm) = board().instance(ready.slot) {
                info!("{}: started", vm.instance.name);
            }
            false
        });
    }

    /// True while an incoming stream is being received (not merely listened for).
    fn incoming_active(&self) -> bool {
        self.incoming
            .as_ref()
            .is_some_and(|incoming| incoming.receiver.name().is_some())
    }

    fn start_listening(&mut self, keep_listening: bool) -> Result<(), String> {
        let connection = self
            .link
            .listen(LISTEN_PORT)
            .map_err(|why| alloc::format!("cannot listen on port {LISTEN_PORT}: {why}"))?;
        self.incoming = Some(Incoming {
            connection,
            receiver: Receiver::new(),
            sink: BoardSink::default(),
            keep_listening,
        });
        Ok(())
    }

    fn pump_outgoing(&mut self, now: u64) {
        let Some(out) = self.outgoing.as_mut() else {
            return;
        };
        match self.link.state(out.connection) {
            ConnectionState::Waiting => {
                if now.saturating_sub(out.started_ms) > CONNECT_TIMEOUT_MS {
                    let why = alloc::format!("{} did not answer", out.destination);
                    self.fail_outgoing(now, &why);
                }
                return;
            }
            ConnectionState::Closed => {
                self.fail_outgoing(now, "the connection closed or timed out");
                return;
            }
            ConnectionState::Open | ConnectionState::PeerClosed => {}
        }
        // An answer, or the peer closing, can come at any time: one before the end of the
        // stream is a refusal.
        let mut answer = [0u8; 256];
        match self.link.receive(out.connection, &mut answer) {
            Ok(0) => {}
            Ok(n) => match out.sender.answer(out.vm.as_ref(), &answer[..n], now) {
                Ok(Some(report)) => return self.finish_outgoing(now, Ok(report)),
                Ok(None) => {}
                Err(why) => return self.finish_outgoing(now, Err(why)),
            },
            Err(_) => {
                return self.fail_outgoing(now, "the receiver closed the link without an answer");
            }
        }
        // What the last call produced goes first; then at most one fill per call.
        if !self.flush_outgoing(now) {
            return;
        }
        let Some(out) = self.outgoing.as_mut() else {
            return;
        };
        match out
            .sender
            .fill(out.vm.as_ref(), &mut out.buffer, FILL_BYTES, now)
        {
            Ok(SendStatus::More | SendStatus::AwaitingAnswer) => {
                self.flush_outgoing(now);
            }
            Ok(SendStatus::Pausing) => {}
            Err(why) => self.finish_outgoing(now, Err(why)),
        }
    }

    /// Hands the outgoing buffer to the connection; true once all of it went.
    fn flush_outgoing(&mut self, now: u64) -> bool {
        let Some(out) = self.outgoing.as_mut() else {
            return false;
        };
        while out.sent < out.buffer.len() {
            match self.link.send(out.connection, &out.buffer[out.sent..]) {
                Ok(0) => return false,
                Ok(n) => out.sent += n,
                Err(why) => {
                    let why = why.to_string();
                    self.fail_outgoing(now, &why);
                    return false;
                }
            }
        }
        out.buffer.clear();
        out.sent = 0;
        true
    }

    /// Gives up on the outgoing move: the instance keeps running here.
    fn fail_outgoing(&mut self, now: u64, why: &str) {
        if let Some(out) = self.outgoing.as_mut() {
            out.sender.fail(out.vm.as_ref());
        }
        self.finish_outgoing(now, Err(MigrationError::Source(why.into())));
    }

    fn finish_outgoing(&mut self, now: u64, result: Result<Report, MigrationError>) {
        let Some(out) = self.outgoing.take() else {
            return;
        };
        let name = out.vm.instance.name.clone();
        let line = match result {
            Ok(report) => {
                let figures = alloc::format!(
                    "{} rounds, {} KiB in {} ms, {} of {} pages non-zero, paused {} ms",
                    report.rounds,
                    report.bytes >> 10,
                    report.total_ms,
                    report.nonzero_pages,
                    report.pages,
                    report.paused_ms
                );
                self.link.close(out.connection);
                if out.snapshot {
                    Source::resume(out.vm.as_ref());
                    alloc::format!("{name}: saved to {}: {figures}", out.destination)
                } else {
                    out.vm.instance.end_moved(&out.destination);
                    // Its vCPUs must run to see the end.
                    Source::resume(out.vm.as_ref());
                    alloc::format!("{name}: migrated to {}: {figures}", out.destination)
                }
            }
            Err(why) => {
                self.link.abort(out.connection, now);
                let what = if out.snapshot { "save" } else { "migration" };
                let when = if out.sender.is_paused() {
                    "in the final copy".into()
                } else {
                    alloc::format!("in round {}", out.sender.rounds() + 1)
                };
                let here = if out.vm.instance.stopped().is_some() {
                    ""
                } else {
                    "; it keeps running here"
                };
                alloc::format!(
                    "{name}: {what} to {} failed {when}: {why}{here}",
                    out.destination
                )
            }
        };
        if line.contains("failed") {
            error!("{line}");
        } else {
            info!("{line}");
        }
        self.last = Some(line);
    }

    fn pump_incoming(&mut self, now: u64) {
        let Some(incoming) = self.incoming.as_mut() else {
            return;
        };
        let mut buffer = [0u8; 4096];
        let mut outcome: Option<Result<String, String>> = None;
        for _ in 0..64 {
            match self.link.receive(incoming.connection, &mut buffer) {
                Ok(0) => break,
                Ok(n) => match incoming.receiver.push(&buffer[..n], &mut incoming.sink) {
                    Ok(true) => {
                        let name = incoming.receiver.name().unwrap_or("?").to_string();
                        outcome = Some(Ok(name));
                        break;
                    }
                    Ok(false) => {}
                    Err(why) => {
                        outcome = Some(Err(why));
                        break;
                    }
                },
                Err(_) => {
                    if self.link.state(incoming.connection) == ConnectionState::Waiting {
                        break;
                    }
                    incoming.receiver.abandon(&mut incoming.sink);
                    outcome = Some(Err(if incoming.receiver.name().is_some() {
                        "the stream broke off before its end".into()
                    } else {
                        "the sender closed the link without sending an instance".into()
                    }));
                    break;
                }
            }
        }
        let Some(result) = outcome else {
            return;
        };
        let answer = answer_line(&result.clone().map(drop));
        // The answer fits the empty send buffer of a connection that only received.
        let _ = self.link.send(incoming.connection, answer.as_bytes());
        self.link.close(incoming.connection);
        self.link.poll(now);
        let line = match result {
            Ok(name) => match incoming.sink.ready.take() {
                Some(ready) if ready.counter > sysregs::counter() => {
                    let wait = sysregs::ticks_to_ms(ready.counter - sysregs::counter());
                    self.deferred.push(ready);
                    alloc::format!(
                        "{name}: received; starts in {wait} ms, once this board's counter reaches the instance's"
                    )
                }
                Some(ready) => {
                    vm_start(&ready);
                    alloc::format!("{name}: received and started")
                }
                None => alloc::format!("{name}: received"),
            },
            Err(why) => alloc::format!("incoming instance refused: {why}; nothing started"),
        };
        if line.contains("refused") {
            error!("{line}");
        } else {
            info!("{line}");
        }
        self.last = Some(line);
        let keep = incoming.keep_listening;
        let finished = self.incoming.take().map(|incoming| incoming.connection);
        if let Some(connection) = finished {
            // Closed above; its FIN goes out with the next polls, then it is freed.
            self.link.release_when_closed(connection);
        }
        if keep && let Err(why) = self.start_listening(true) {
            warn!("{why}");
        }
    }
}

impl Source for Vm {
    fn config(&self) -> checkpoint::InstanceConfig {
        let config = self.config();
        checkpoint::InstanceConfig {
            name: config.name.clone(),
            ram_base: RAM_BASE,
            ram_bytes: config.ram_size,
            vcpus: config.vcpus as u16,
            weight: config.weight,
            gic_version: gic::guest_shape().version(),
            spis: crate::instance::VGIC_SPIS,
            counter_frequency: sysregs::counter_frequency(),
        }
    }

    fn read_page(&self, index: u64, page: &mut [u8; checkpoint::PAGE_SIZE]) {
        if Vm::read_page(self, index, page).is_err() {
            page.fill(0);
        }
    }

    fn start_dirty_tracking(&self) -> Result<(), String> {
        Vm::start_dirty_tracking(self)
            .map_err(|why| alloc::format!("cannot track the guest's writes: {why}"))
    }

    fn take_dirty(&self, pages: &mut Vec<u64>) {
        Vm::take_dirty(self, pages);
    }

    fn stop_dirty_tracking(&self) {
        Vm::stop_dirty_tracking(self);
    }

    fn about_to_pause(&self) -> bool {
        self.instance.notify_migration(Notice::Pausing, 0)
    }

    fn notice_read(&self) -> bool {
        self.instance.migration_notice_read()
    }

    fn pause(&self) -> bool {
        if !self.is_held() {
            self.hold(true);
            for index in 0..self.instance.vcpu_count() {
                kick(self.instance.slot, index);
            }
        }
        self.vcpus_off_cpu()
    }

    fn resume(&self) {
        let was_held = self.is_held();
        self.hold(false);
        for index in 0..self.instance.vcpu_count() {
            kick(self.instance.slot, index);
        }
        if was_held && self.instance.stopped().is_none() {
            self.instance
                .notify_migration(Notice::Resumed, self.held_for());
        }
    }

    fn capture(&self) -> Result<FinalState, String> {
        if let Some(reason) = self.instance.stopped() {
            return Err(alloc::format!("the instance stopped meanwhile: {reason}"));
        }
        let counter = sysregs::counter().wrapping_sub(self.instance.counter_offset());
        let (vgic, pl011, power) = self.instance.save_devices();
        let vcpus = self
            .vcpus
            .iter()
            .zip(power)
            .map(|(vcpu, power)| {
                let vcpu = vcpu.lock();
                match power {
                    Power::Off => vcpu.save(false, counter),
                    Power::On => vcpu.save(true, counter),
                    Power::Starting { entry, context_id } => {
                        let mut starting = vcpu.clone();
                        starting.power_on(entry, context_id);
                        starting.save(true, counter)
                    }
                }
            })
            .collect();
        Ok(FinalState {
            vcpus,
            vgic,
            pl011,
            paravirt: self.instance.save_paravirt(self.held_for()),
        })
    }
}

/// A received instance, restored and ready to start.
#[derive(Clone, Copy)]
struct Ready {
    slot: usize,
    /// Its counter at the pause.
    counter: u64,
    /// Ticks it had been paused on the sending board when its state left.
    paused_before: u64,
    /// This board's counter when its stream ended.
    received_at: u64,
}

/// Builds an incoming instance on this board.
#[derive(Default)]
struct BoardSink {
    built: Option<(usize, Arc<Vm>)>,
    /// Restored and ready to start.
    ready: Option<Ready>,
}

impl Sink for BoardSink {
    fn create(&mut self, config: &checkpoint::InstanceConfig) -> Result<(), String> {
        let here = sysregs::counter_frequency();
        if config.counter_frequency != here {
            return Err(alloc::format!(
                "its counter runs at {} Hz, this board's at {here} Hz",
                config.counter_frequency
            ));
        }
        let version = gic::guest_shape().version();
        if config.gic_version != version || config.spis != crate::instance::VGIC_SPIS {
            return Err(alloc::format!(
                "it has a GICv{} with {} SPIs; instances here have a GICv{version} with {}",
                config.gic_version,
                config.spis,
                crate::instance::VGIC_SPIS
            ));
        }
        if config.ram_base != RAM_BASE || !config.ram_bytes.is_multiple_of(2 << 20) {
            return Err("its RAM is not where or as large as instances here have it".into());
        }
        let board = board();
        // The same instance in this board's bundle gives it an image to reset to.
        let image = board.catalog_entry(&config.name);
        let instance = InstanceConfig {
            name: config.name.clone(),
            ram_size: config.ram_bytes,
            vcpus: usize::from(config.vcpus),
            kernel: image.as_ref().map_or(&[], |image| image.kernel),
            ramdisk: image.as_ref().and_then(|image| image.ramdisk),
            bootargs: image
                .as_ref()
                .map_or(String::new(), |image| image.bootargs.clone()),
            affinity: (1u64 << board.cpus) - 1,
            weight: config.weight,
        };
        let built = board.build(instance).map_err(|why| why.to_string())?;
        self.built = Some(built);
        Ok(())
    }

    fn write_page(&mut self, index: u64, page: &[u8; checkpoint::PAGE_SIZE]) -> Result<(), String> {
        let (_, vm) = self.built.as_ref().ok_or("no instance was built")?;
        vm.write_page(index, page)
            .map_err(|why| alloc::format!("page {index}: {why}"))
    }

    fn finish(&mut self, state: FinalState) -> Result<(), String> {
        let (slot, vm) = self.built.take().ok_or("no instance was built")?;
        match restore(&vm, &state) {
            Ok(()) => {
                self.ready = Some(Ready {
                    slot,
                    counter: state.vcpus.first().map_or(0, |vcpu| vcpu.counter),
                    paused_before: state.paravirt.paused_ticks,
                    received_at: sysregs::counter(),
                });
                Ok(())
            }
            Err(why) => {
                drop(vm);
                board().discard(slot);
                Err(why)
            }
        }
    }

    fn discard(&mut self) {
        if let Some((slot, vm)) = self.built.take() {
            drop(vm);
            board().discard(slot);
        }
    }
}

/// Puts `state` into the freshly built `vm`, whose vCPUs have not run.
fn restore(vm: &Vm, state: &FinalState) -> Result<(), String> {
    for (vcpu, saved) in vm.vcpus.iter().zip(&state.vcpus) {
        vcpu.lock().restore(saved);
    }
    let powered: Vec<bool> = state.vcpus.iter().map(|vcpu| vcpu.powered_on).collect();
    vm.instance
        .restore_devices(&state.vgic, &state.pl011, &powered)?;
    vm.instance.restore_paravirt(&state.paravirt);
    Ok(())
}

/// Starts a restored instance, its counter continuing from where it paused (at most this
/// board's): the guest sees no time pass while it moved, and a notice (if it asked for them)
/// says how long it was paused.
fn vm_start(ready: &Ready) {
    let Some(vm) = board().instance(ready.slot) else {
        return;
    };
    let now = sysregs::counter();
    vm.instance
        .set_counter_offset(now.saturating_sub(ready.counter));
    board().launch(ready.slot);
    let paused = ready.paused_before + now.saturating_sub(ready.received_at);
    vm.instance.notify_migration(Notice::Resumed, paused);
}
