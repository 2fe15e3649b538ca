//! The board's own network interface: the first virtio-net device among the board's
//! virtio-mmio slots, driven through `virtio-drivers`' raw interface and handed to `smoltcp` as
//! an Ethernet PHY. It belongs to the hypervisor: no guest's stage 2 maps it and no guest device
//! tree names it.
//!
//! Nothing here waits for the device. Transmission copies each frame into one of a fixed pool of
//! transmit buffers, queues it and returns; buffers the device has finished with are reclaimed
//! whenever the device is polled (`receive`, `transmit`, `acknowledge`), and while all of them
//! are in flight the PHY offers no transmit token, so `smoltcp` simply retries on its next poll.
//! Reception keeps a fixed pool of receive buffers queued: a completed frame is copied out and its
//! buffer goes straight back to the device. Every buffer is a heap slice allocated once at probe
//! time and never moved, resized or touched by the CPU while the device owns it.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::ptr::NonNull;

use devicetree::VirtioMmio;
use log::warn;
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Error, Hal, PAGE_SIZE, PhysAddr};

/// Descriptors per virtqueue (receive and transmit each).
const QUEUE_SIZE: usize = 64;
/// Receive buffers, all queued at once: one descriptor each.
const RX_BUFFERS: usize = QUEUE_SIZE;
/// Transmit buffers: one descriptor each, so the transmit queue never runs out before they do.
const TX_BUFFERS: usize = QUEUE_SIZE;
/// Bytes per buffer, receive or transmit: the virtio-net header (10 or 12 bytes) plus a full
/// Ethernet frame, rounded up. Receive buffers must hold at least 1526 bytes.
const BUFFER_SIZE: usize = 2048;
/// The largest Ethernet frame the stack builds (MTU 1500 plus the 14-byte header).
const MAX_FRAME: usize = 1514;

/// DMA memory for virtio queues and buffers: heap pages, which the EL2 identity map makes
/// physical addresses. QEMU's virtio devices are cache-coherent with the CPUs.
pub struct IdentityHal;

fn dma_layout(pages: usize) -> Layout {
    Layout::from_size_align(pages.max(1) * PAGE_SIZE, PAGE_SIZE).expect("page-aligned layout")
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned heap memory owned by the caller until
// `dma_dealloc`; the heap is identity-mapped, so virtual and physical addresses are equal, and
// MMIO addresses are identity-mapped device memory.
unsafe impl Hal for IdentityHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        // SAFETY: the layout has a non-zero size.
        let pointer = unsafe { alloc::alloc::alloc_zeroed(dma_layout(pages)) };
        let pointer = NonNull::new(pointer).expect("heap exhausted allocating virtio queues");
        (pointer.as_ptr() as PhysAddr, pointer)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: the caller passes back what `dma_alloc` returned for `pages` pages.
        unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), dma_layout(pages)) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("MMIO at address zero")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

type Net = VirtIONetRaw<IdentityHal, MmioTransport<'static>, QUEUE_SIZE>;

/// `count` zeroed buffers of [`BUFFER_SIZE`] bytes, each its own heap allocation.
fn buffer_pool(count: usize) -> Box<[Box<[u8]>]> {
    (0..count)
        .map(|_| vec![0u8; BUFFER_SIZE].into_boxed_slice())
        .collect()
}

/// A transmit buffer the device owns.
#[derive(Clone, Copy)]
struct InFlight {
    /// Its index in [`Transmitter::buffers`].
    buffer: usize,
    /// How many bytes of it were queued (header and frame): the slice `transmit_complete` needs.
    len: usize,
}

/// The transmit side: a fixed pool of buffers, each free or queued on the device.
struct Transmitter {
    /// The buffers, allocated once and never resized.
    buffers: Box<[Box<[u8]>]>,
    /// Indices of the buffers the CPU owns. Never holds more than [`TX_BUFFERS`] entries, so
    /// pushing never reallocates.
    free: Vec<usize>,
    /// The buffer the device owns under each queue token (a descriptor index, below
    /// [`QUEUE_SIZE`]).
    in_flight: [Option<InFlight>; QUEUE_SIZE],
}

impl Transmitter {
    fn new() -> Self {
        Self {
            buffers: buffer_pool(TX_BUFFERS),
            free: (0..TX_BUFFERS).rev().collect(),
            in_flight: [None; QUEUE_SIZE],
        }
    }

    /// Takes back every buffer the device has finished sending.
    fn reclaim(&mut self, net: &mut Net) {
        while let Some(token) = net.poll_transmit() {
            let Some(InFlight { buffer, len }) =
                self.in_flight.get(usize::from(token)).copied().flatten()
            else {
                warn!("virtio-net: transmit completion for unknown token {token}");
                return;
            };
            // SAFETY: `in_flight[token]` records that `transmit_begin` returned `token` for
            // exactly `buffers[buffer][..len]`, which has not been moved or touched since.
            match unsafe { net.transmit_complete(token, &self.buffers[buffer][..len]) } {
                Ok(_) => {
                    self.in_flight[usize::from(token)] = None;
                    self.free.push(buffer);
                }
                Err(error) => {
                    warn!("virtio-net: cannot complete transmission {token}: {error:?}");
                    return;
                }
            }
        }
    }

    /// Has `f` build a `len`-byte frame in a free buffer and queues it without waiting. If the
    /// frame cannot be queued, `f` still runs (the stack expects it to) and the frame is dropped.
    fn send<R>(&mut self, net: &mut Net, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let Some(buffer) = self.free.pop() else {
            warn!("virtio-net: no transmit buffer free; frame dropped");
            return f(&mut vec![0; len]);
        };
        let data = &mut self.buffers[buffer];
        let header = match net.fill_buffer_header(data) {
            Ok(header) if header + len <= data.len() => header,
            Ok(_) => {
                warn!("virtio-net: {len}-byte frame too long; dropped");
                self.free.push(buffer);
                return f(&mut vec![0; len]);
            }
            Err(error) => {
                warn!("virtio-net: cannot fill the header: {error:?}; frame dropped");
                self.free.push(buffer);
                return f(&mut vec![0; len]);
            }
        };
        let total = header + len;
        let result = f(&mut data[header..total]);
        // SAFETY: `buffers[buffer]` is a heap slice that is never moved or resized; it left
        // `free`, and `in_flight` (or, if the token is unexpected, nothing) records it from here,
        // so the CPU does not touch it again until `reclaim` passes it to `transmit_complete`.
        match unsafe { net.transmit_begin(&data[..total]) } {
            Ok(token) => match self.in_flight.get_mut(usize::from(token)) {
                Some(slot @ None) => {
                    *slot = Some(InFlight { buffer, len: total });
                }
                _ => {
                    // Cannot happen: tokens are free descriptor indices. The buffer stays out of
                    // the pool for good rather than risk reusing it under the device.
                    warn!("virtio-net: unexpected transmit token {token}; buffer retired");
                }
            },
            Err(error) => {
                warn!("virtio-net: frame not sent: {error:?}");
                self.free.push(buffer);
            }
        }
        result
    }
}

/// The receive side: a fixed pool of buffers, each queued on the device or idle.
struct Receiver {
    /// The buffers, allocated once and never resized.
    buffers: Box<[Box<[u8]>]>,
    /// The buffer the device owns under each queue token (a descriptor index, below
    /// [`QUEUE_SIZE`]).
    queued: [Option<usize>; QUEUE_SIZE],
    /// Indices of buffers the CPU owns, waiting to be queued. Never holds more than
    /// [`RX_BUFFERS`] entries, so pushing never reallocates.
    idle: Vec<usize>,
}

impl Receiver {
    fn new() -> Self {
        Self {
            buffers: buffer_pool(RX_BUFFERS),
            queued: [None; QUEUE_SIZE],
            idle: (0..RX_BUFFERS).rev().collect(),
        }
    }

    /// Queues every idle buffer on the device.
    fn refill(&mut self, net: &mut Net) {
        while let Some(buffer) = self.idle.pop() {
            // SAFETY: `buffers[buffer]` is a heap slice that is never moved or resized; it left
            // `idle`, and `queued` (or, if the token is unexpected, nothing) records it from
            // here, so the CPU does not touch it until `poll` passes it to `receive_complete`.
            match unsafe { net.receive_begin(&mut self.buffers[buffer]) } {
                Ok(token) => match self.queued.get_mut(usize::from(token)) {
                    Some(slot @ None) => *slot = Some(buffer),
                    _ => warn!("virtio-net: unexpected receive token {token}; buffer retired"),
                },
                Err(error) => {
                    warn!("virtio-net: cannot queue a receive buffer: {error:?}");
                    self.idle.push(buffer);
                    return;
                }
            }
        }
    }

    /// The next frame the device has received, copied out; its buffer is queued again at once.
    fn poll(&mut self, net: &mut Net) -> Option<Vec<u8>> {
        loop {
            let token = net.poll_receive()?;
            let Some(buffer) = self.queued.get(usize::from(token)).copied().flatten() else {
                warn!("virtio-net: receive completion for unknown token {token}");
                return None;
            };
            // SAFETY: `queued[token]` records that `receive_begin` returned `token` for
            // `buffers[buffer]`, which has not been moved or touched since.
            let frame = match unsafe { net.receive_complete(token, &mut self.buffers[buffer]) } {
                Ok((header, len)) => {
                    let frame = self.buffers[buffer]
                        .get(header..header + len)
                        .map(<[u8]>::to_vec);
                    if frame.is_none() {
                        warn!("virtio-net: received length {len} overruns the buffer; dropped");
                    }
                    frame
                }
                Err(error @ (Error::NotReady | Error::WrongToken)) => {
                    // The device still owns the buffer.
                    warn!("virtio-net: cannot complete reception {token}: {error:?}");
                    return None;
                }
                Err(error) => {
                    // The buffer came back (e.g. a frame shorter than its header).
                    warn!("virtio-net: bad frame received: {error:?}; dropped");
                    None
                }
            };
            self.queued[usize::from(token)] = None;
            self.idle.push(buffer);
            self.refill(net);
            if frame.is_some() {
                return frame;
            }
        }
    }
}

/// The board's virtio-net device as a `smoltcp` Ethernet PHY that never waits for the device.
pub struct Nic {
    /// The device. Declared first so that it is dropped first: dropping it unsets both queues,
    /// so the device lets go of the buffers before they are freed.
    net: Net,
    rx: Receiver,
    tx: Transmitter,
    /// The interrupt it raises, if the device tree gives one.
    pub intid: Option<u32>,
}

impl Nic {
    /// Finds the first virtio-net device among `slots`, starts it with every receive buffer
    /// queued, and enables its interrupts (received frames and completed transmissions).
    pub fn probe(slots: &[VirtioMmio]) -> Option<Self> {
        slots.iter().find_map(|slot| {
            let header = NonNull::new(slot.base as *mut VirtIOHeader)?;
            // SAFETY: the slot is a virtio-mmio window from the board's device tree, mapped as
            // device memory by the EL2 identity map, and nothing else drives it: probing reads
            // the magic and device ID, and only the one net device found is kept.
            let transport = unsafe { MmioTransport::new(header, slot.size as usize) }.ok()?;
            if transport.device_type() != DeviceType::Network {
                return None;
            }
            match Net::new(transport) {
                Ok(net) => {
                    let mut nic = Self {
                        net,
                        rx: Receiver::new(),
                        tx: Transmitter::new(),
                        intid: slot.irq,
                    };
                    nic.rx.refill(&mut nic.net);
                    nic.net.enable_interrupts();
                    Some(nic)
                }
                Err(error) => {
                    warn!("virtio-net at {:#x}: cannot start it: {error:?}", slot.base);
                    None
                }
            }
        })
    }

    /// Its MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.net.mac_address()
    }

    /// Acknowledges its interrupt and reclaims the transmit buffers the device has finished
    /// with.
    pub fn acknowledge(&mut self) {
        self.net.ack_interrupt();
        self.tx.reclaim(&mut self.net);
    }
}

/// A received frame, copied out so that its buffer went straight back to the device.
pub struct RxFrame(Vec<u8>);

/// The right to send one frame: a transmit buffer was free when it was issued.
pub struct TxSlot<'a> {
    net: &'a mut Net,
    tx: &'a mut Transmitter,
}

impl phy::RxToken for RxFrame {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxSlot<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.tx.send(self.net, len, f)
    }
}

impl phy::Device for Nic {
    type RxToken<'a> = RxFrame;
    type TxToken<'a> = TxSlot<'a>;

    /// The next received frame, with the right to send a reply. Leaves frames queued while no
    /// transmit buffer is free, so that a reply is never lost to a full transmit pool.
    fn receive(&mut self, _timestamp: Instant) -> Option<(RxFrame, TxSlot<'_>)> {
        self.tx.reclaim(&mut self.net);
        if self.tx.free.is_empty() {
            return None;
        }
        let frame = self.rx.poll(&mut self.net)?;
        Some((
            RxFrame(frame),
            TxSlot {
                net: &mut self.net,
                tx: &mut self.tx,
            },
        ))
    }

    /// The right to send one frame, if a transmit buffer is free once completed ones are
    /// reclaimed.
    fn transmit(&mut self, _timestamp: Instant) -> Option<TxSlot<'_>> {
        self.tx.reclaim(&mut self.net);
        if self.tx.free.is_empty() {
            return None;
        }
        Some(TxSlot {
            net: &mut self.net,
            tx: &mut self.tx,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = MAX_FRAME;
        capabilities.max_burst_size = Some(TX_BUFFERS);
        capabilities
    }
}
