//! A relay between two boards' links that the tests control: each QEMU connects its
//! `-netdev stream` to one of the relay's Unix sockets, and the relay forwards Ethernet frames
//! between them (QEMU's stream framing: a 4-byte big-endian length, then the frame). It can drop
//! and corrupt frames at random, and cut the link for a while once a given number of bytes has
//! gone from the first board to the second (counted from the start, or from the end of the cut
//! before).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the relay does to frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Impairments {
    /// Frames dropped, per thousand.
    pub drop_per_mille: u32,
    /// Frames with one byte flipped inside their IPv4 packet, per thousand (what a real wire's
    /// frame check would let through only from a broken switch; IP and TCP checksums catch it).
    pub corrupt_per_mille: u32,
    /// Cuts of the link, one after the other.
    pub cuts: Vec<Cut>,
}

/// A time when nothing passes either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Bytes of frames from the first board to the second before the cut, counted from the
    /// relay's start or from the end of the cut before.
    pub after: u64,
    /// How long it lasts.
    pub lasting: Duration,
}

/// How many frames the relay passed, dropped and corrupted, and whether it cut the link.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Frames forwarded (corrupted ones included).
    pub forwarded: AtomicU64,
    /// Frames dropped at random or during a cut.
    pub dropped: AtomicU64,
    /// Frames corrupted.
    pub corrupted: AtomicU64,
    /// Bytes of frames forwarded from the first board to the second.
    pub bytes_first_to_second: AtomicU64,
    /// Cuts made.
    pub cuts: AtomicU64,
}

struct State {
    impairments: Impairments,
    /// While set and in the future, nothing passes.
    cut_until: Option<Instant>,
    /// Bytes from the first board to the second since the start or the last cut's end.
    since_cut: u64,
    rng: u64,
}

/// A running relay; it forwards until the process ends or both boards hang up.
pub struct Relay {
    /// The relay's counters.
    pub stats: Arc<RelayStats>,
}

impl Relay {
    /// Listens on `first` and `second` (Unix sockets, replaced if they exist) and forwards between
    /// the boards that connect there, as `impairments` says.
    pub fn start(first: &Path, second: &Path, impairments: Impairments) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(first);
        let _ = std::fs::remove_file(second);
        let listeners = [UnixListener::bind(first)?, UnixListener::bind(second)?];
        let state = Arc::new(Mutex::new(State {
            impairments,
            cut_until: None,
            since_cut: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }));
        let stats = Arc::new(RelayStats::default());
        let thread_stats = stats.clone();
        std::thread::spawn(move || {
            let [first, second] = listeners;
            let (Ok((a, _)), Ok((b, _))) = (first.accept(), second.accept()) else {
                return;
            };
            let (a2, b2) = match (a.try_clone(), b.try_clone()) {
                (Ok(a2), Ok(b2)) => (a2, b2),
                _ => return,
            };
            let (reverse_state, reverse_stats) = (state.clone(), thread_stats.clone());
            std::thread::spawn(move || forward(b2, a2, true, &reverse_state, &reverse_stats));
            forward(a, b, false, &state, &thread_stats);
        });
        Ok(Self { stats })
    }
}

impl State {
    /// A number in 0..1000.
    fn roll(&mut self) -> u32 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        ((self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % 1000) as u32
    }
}

/// Forwards frames from `from` to `to` until either side hangs up; `reverse` is the second
/// board's direction.
fn forward(
    mut from: UnixStream,
    mut to: UnixStream,
    reverse: bool,
    state: &Mutex<State>,
    stats: &RelayStats,
) {
    let mut length = [0u8; 4];
    loop {
        if from.read_exact(&mut length).is_err() {
            return;
        }
        let mut frame = vec![0u8; u32::from_be_bytes(length) as usize];
        if from.read_exact(&mut frame).is_err() {
            return;
        }
        let pass = {
            let mut state = state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = Instant::now();
            if state.cut_until.is_some_and(|until| now >= until) {
                state.cut_until = None;
                state.since_cut = 0;
            }
            if !reverse && state.cut_until.is_none() {
                let next = state.impairments.cuts.first().copied();
                if let Some(cut) = next.filter(|cut| state.since_cut >= cut.after) {
                    state.impairments.cuts.remove(0);
                    state.cut_until = Some(now + cut.lasting);
                    stats.cuts.fetch_add(1, Ordering::Relaxed);
                }
            }
            let (drop_per_mille, corrupt_per_mille) = (
                state.impairments.drop_per_mille,
                state.impairments.corrupt_per_mille,
            );
            if state.cut_until.is_some() || state.roll() < drop_per_mille {
                false
            } else {
                // Corrupt only IPv4 packets, past the Ethernet header.
                if state.roll() < corrupt_per_mille
                    && frame.len() > 34
                    && frame[12..14] == [0x08, 0x00]
                {
                    let at = 14 + state.roll() as usize * (frame.len() - 14) / 1000;
                    frame[at] ^= 0x20;
                    stats.corrupted.fetch_add(1, Ordering::Relaxed);
                }
                if !reverse {
                    state.since_cut += frame.len() as u64;
                }
                true
            }
        };
        if !pass {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if !reverse {
            stats
                .bytes_first_to_second
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
        }
        stats.forwarded.fetch_add(1, Ordering::Relaxed);
        if to
            .write_all(&length)
            .and_then(|()| to.write_all(&frame))
            .is_err()
        {
            return;
        }
    }
}
