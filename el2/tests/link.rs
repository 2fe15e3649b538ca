//! The board link's TCP over a simulated wire that drops, duplicates, reorders and corrupts
//! frames: every byte arrives, in order, once.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use el2::net::{ConnectionState, Link, NetConfig};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

/// What the wire does to frames, in frames out of 100.
#[derive(Clone, Copy, Default)]
struct Impairments {
    drop: u32,
    duplicate: u32,
    reorder: u32,
    corrupt: u32,
}

/// Two queues of frames, one per direction, and a deterministic random source.
struct Wire {
    queues: [VecDeque<Vec<u8>>; 2],
    impairments: Impairments,
    rng: u64,
    /// False once the test cuts the wire: every frame is lost.
    up: bool,
}

impl Wire {
    fn roll(&mut self) -> u32 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as u32 % 100
    }

    fn carry(&mut self, towards: usize, mut frame: Vec<u8>) {
        let i = self.impairments;
        if !self.up || self.roll() < i.drop {
            return;
        }
        // Corruption that gets past a real link's frame check: inside IPv4 packets, where the
        // IP and TCP checksums must catch it (ARP has no checksum of its own; Ethernet's FCS
        // guards it on a real wire).
        if self.roll() < i.corrupt && frame.len() > 14 && frame[12..14] == [0x08, 0x00] {
            let at = 14 + self.roll() as usize * (frame.len() - 14) / 100;
            frame[at] ^= 0x5a;
        }
        if self.roll() < i.duplicate {
            self.queues[towards].push_back(frame.clone());
        }
        if self.roll() < i.reorder && !self.queues[towards].is_empty() {
            self.queues[towards].push_front(frame);
        } else {
            self.queues[towards].push_back(frame);
        }
    }
}

/// One end of the wire.
struct End {
    wire: Rc<RefCell<Wire>>,
    side: usize,
}

struct Rx(Vec<u8>);
struct Tx {
    wire: Rc<RefCell<Wire>>,
    towards: usize,
}

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.wire.borrow_mut().carry(self.towards, frame);
        result
    }
}

impl Device for End {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx)> {
        let frame = self.wire.borrow_mut().queues[self.side].pop_front()?;
        Some((
            Rx(frame),
            Tx {
                wire: self.wire.clone(),
                towards: 1 - self.side,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx> {
        Some(Tx {
            wire: self.wire.clone(),
            towards: 1 - self.side,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

fn config(host: u8) -> NetConfig {
    NetConfig {
        address: Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, host), 24),
        gateway: None,
    }
}

/// Sends `size` patterned bytes from A to B over a wire with `impairments`, one millisecond of
/// simulated time per step, returning what B read and whether the transfer fell short;
/// `cut_after` cuts the wire once that many bytes have been queued.
fn transfer(size: usize, impairments: Impairments, cut_after: Option<usize>) -> (Vec<u8>, bool) {
    let wire = Rc::new(RefCell::new(Wire {
        queues: [VecDeque::new(), VecDeque::new()],
        impairments,
        rng: 0x1234_5678_9abc_def1,
        up: true,
    }));
    let end = |side| End {
        wire: wire.clone(),
        side,
    };
    let mut a = Link::new(end(0), [2, 0, 0, 0, 0, 1], &config(1), 1, 0);
    let mut b = Link::new(end(1), [2, 0, 0, 0, 0, 2], &config(2), 2, 0);
    let listener = b.listen(7070).unwrap();
    let sender = a.connect(Ipv4Address::new(10, 0, 0, 2), 7070).unwrap();
    let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4096) as u8).collect();
    let (mut sent, mut received, mut closed) = (0, Vec::new(), false);
    let mut buffer = vec![0; 64 * 1024];
    let mut failed = false;
    for now in 0..120_000u64 {
        a.poll(now);
        b.poll(now);
        if sent < data.len() {
            match a.send(sender, &data[sent..]) {
                Ok(n) => sent += n,
                Err(_) => failed = true,
            }
        } else if !closed {
            a.close(sender);
            closed = true;
        }
        if cut_after.is_some_and(|cut| sent >= cut) {
            wire.borrow_mut().up = false;
        }
        match b.receive(listener, &mut buffer) {
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(_) => break,
        }
        if failed || a.state(sender) == ConnectionState::Closed {
            break;
        }
    }
    assert_eq!(
        &received[..],
        &data[..received.len()],
        "bytes arrive in order, unchanged"
    );
    let incomplete = failed || received.len() < size;
    (received, incomplete)
}

#[test]
fn a_clean_wire_carries_every_byte() {
    let (received, failed) = transfer(2 << 20, Impairments::default(), None);
    assert!(!failed);
    assert_eq!(received.len(), 2 << 20);
}

#[test]
fn tcp_absorbs_drops_duplicates_reordering_and_corruption() {
    let impairments = Impairments {
        drop: 1,
        duplicate: 1,
        reorder: 2,
        corrupt: 1,
    };
    let (received, failed) = transfer(1 << 20, impairments, None);
    assert!(!failed, "the transfer completes");
    assert_eq!(received.len(), 1 << 20);
}

#[test]
fn a_cut_wire_fails_the_sender_instead_of_hanging() {
    let (received, failed) = transfer(4 << 20, Impairments::default(), Some(1 << 20));
    assert!(failed, "the sender sees the connection die");
    assert!(received.len() < 4 << 20);
}
