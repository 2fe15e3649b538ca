//! The board link: TCP/IP (smoltcp) over the board's Ethernet device, for checkpoint streams
//! between boards and to the host. Portable: the device is any `smoltcp` PHY (the hypervisor's
//! virtio-net driver on the board, a simulated wire in host tests). Time is milliseconds of the
//! board's counter; the owner polls the link from its own deadline and the NIC's interrupt.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};

/// Bytes a connection buffers towards the peer: enough to keep a fast link busy between polls
/// (a poll sends at most what the device has transmit buffers for).
const SEND_BUFFER: usize = 512 * 1024;
/// Bytes a connection buffers from the peer.
const RECEIVE_BUFFER: usize = 256 * 1024;
/// A connection whose peer acknowledges nothing for this long is dead.
const TIMEOUT_MS: u64 = 10_000;
/// An idle connection probes its peer this often, so that a receiver whose sender went silent
/// (a cut link) also notices within the timeout.
const KEEP_ALIVE_MS: u64 = 1_000;

/// Where the board sits on its link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The board's address and prefix.
    pub address: Ipv4Cidr,
    /// The router towards other networks, if any.
    pub gateway: Option<Ipv4Address>,
}

impl NetConfig {
    /// QEMU user networking's guest side: 10.0.2.15/24 behind 10.0.2.2 (the host).
    pub const QEMU_USER: Self = Self {
        address: Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24),
        gateway: Some(Ipv4Address::new(10, 0, 2, 2)),
    };
}

/// A TCP connection on the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection(SocketHandle);

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Waiting for the peer (connecting, or listening with nobody connected yet).
    Waiting,
    /// Both ways open.
    Open,
    /// The peer has finished sending; what it sent can still be read.
    PeerClosed,
    /// Closed or reset: nothing more moves.
    Closed,
}

/// Why a link operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetError {
    /// The connection was closed or reset (the peer went away, or it timed out).
    Closed,
    /// The address or port cannot be used (in use, unspecified, or unreachable).
    Unusable,
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => write!(f, "the connection closed or timed out"),
            Self::Unusable => write!(f, "the address or port cannot be used"),
        }
    }
}

/// The board's TCP/IP stack over its Ethernet device `D`.
pub struct Link<D: Device> {
    device: D,
    iface: Interface,
    sockets: SocketSet<'static>,
    /// The next local port for an outgoing connection.
    next_port: u16,
    /// Connections closed by this side, freed once their close is acknowledged.
    closing: Vec<SocketHandle>,
}

fn instant(now_ms: u64) -> Instant {
    Instant::from_millis(i64::try_from(now_ms).unwrap_or(i64::MAX))
}

impl<D: Device> Link<D> {
    /// A stack on `device` (MAC `mac`) at `config`; `seed` varies initial sequence numbers.
    pub fn new(mut device: D, mac: [u8; 6], config: &NetConfig, seed: u64, now_ms: u64) -> Self {
        let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        iface_config.random_seed = seed;
        let mut iface = Interface::new(iface_config, &mut device, instant(now_ms));
        iface.update_ip_addrs(|addresses| {
            // A fresh interface has room for its one address.
            let _ = addresses.push(IpCidr::Ipv4(config.address));
        });
        if let Some(gateway) = config.gateway {
            // Only fails when the route table is full; it is empty.
            let _ = iface.routes_mut().add_default_ipv4_route(gateway);
        }
        Self {
            device,
            iface,
            sockets: SocketSet::new(vec![]),
            next_port: 49152 + (seed % 8192) as u16,
            closing: Vec::new(),
        }
    }

    /// Moves frames between the device and the connections; true if any connection changed.
    pub fn poll(&mut self, now_ms: u64) -> bool {
        let changed = self
            .iface
            .poll(instant(now_ms), &mut self.device, &mut self.sockets)
            == smoltcp::iface::PollResult::SocketStateChanged;
        let sockets = &mut self.sockets;
        self.closing.retain(|&handle| {
            let done = matches!(
                sockets.get::<tcp::Socket>(handle).state(),
                tcp::State::Closed | tcp::State::TimeWait
            );
            if done {
                sockets.remove(handle);
            }
            !done
        });
        changed
    }

    fn new_socket(&mut self) -> tcp::Socket<'static> {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; RECEIVE_BUFFER]),
            tcp::SocketBuffer::new(vec![0; SEND_BUFFER]),
        );
        socket.set_timeout(Some(smoltcp::time::Duration::from_millis(TIMEOUT_MS)));
        socket.set_keep_alive(Some(smoltcp::time::Duration::from_millis(KEEP_ALIVE_MS)));
        socket.set_nagle_enabled(false);
        socket
    }

    /// Opens a connection to `address:port`.
    pub fn connect(&mut self, address: Ipv4Address, port: u16) -> Result<Connection, NetError> {
        let mut socket = self.new_socket();
        let local_port = self.next_port;
        self.next_port = if local_port == u16::MAX {
            49152
        } else {
            local_port + 1
        };
        socket
            .connect(self.iface.context(), (address, port), local_port)
            .map_err(|_| NetError::Unusable)?;
        Ok(Connection(self.sockets.add(socket)))
    }

    /// Waits for one connection on `port`.
    pub fn listen(&mut self, port: u16) -> Result<Connection, NetError> {
        let mut socket = self.new_socket();
        socket.listen(port).map_err(|_| NetError::Unusable)?;
        Ok(Connection(self.sockets.add(socket)))
    }

    /// Where `connection` stands.
    pub fn state(&self, connection: Connection) -> ConnectionState {
        let socket = self.sockets.get::<tcp::Socket>(connection.0);
        match socket.state() {
            tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived => {
                ConnectionState::Waiting
            }
            tcp::State::Established | tcp::State::FinWait1 | tcp::State::FinWait2 => {
                ConnectionState::Open
            }
            tcp::State::CloseWait | tcp::State::LastAck if socket.may_recv() => {
                ConnectionState::PeerClosed
            }
            tcp::State::CloseWait => ConnectionState::PeerClosed,
            _ => ConnectionState::Closed,
        }
    }

    /// Queues as much of `bytes` as the send buffer takes; how much it took.
    pub fn send(&mut self, connection: Connection, bytes: &[u8]) -> Result<usize, NetError> {
        let socket = self.sockets.get_mut::<tcp::Socket>(connection.0);
        if !socket.may_send() {
            return match socket.state() {
                tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Listen => Ok(0),
                _ => Err(NetError::Closed),
            };
        }
        socket.send_slice(bytes).map_err(|_| NetError::Closed)
    }

    /// Reads what has arrived into `buffer`; how much. `Ok(0)` when nothing has arrived yet,
    /// an error once the peer has closed and everything it sent was read.
    pub fn receive(
        &mut self,
        connection: Connection,
        buffer: &mut [u8],
    ) -> Result<usize, NetError> {
        let socket = self.sockets.get_mut::<tcp::Socket>(connection.0);
        if socket.can_recv() {
            return socket.recv_slice(buffer).map_err(|_| NetError::Closed);
        }
        match socket.state() {
            tcp::State::Listen
            | tcp::State::SynSent
            | tcp::State::SynReceived
            | tcp::State::Established
            | tcp::State::FinWait1
            | tcp::State::FinWait2 => Ok(0),
            _ => Err(NetError::Closed),
        }
    }

    /// Finishes sending: the peer reads what is queued, then the end of the stream.
    pub fn close(&mut self, connection: Connection) {
        self.sockets.get_mut::<tcp::Socket>(connection.0).close();
    }

    /// Drops the connection at once (a reset goes to the peer) and frees its buffers.
    pub fn abort(&mut self, connection: Connection, now_ms: u64) {
        self.sockets.get_mut::<tcp::Socket>(connection.0).abort();
        // One poll sends the reset before the socket goes.
        self.poll(now_ms);
        self.sockets.remove(connection.0);
    }

    /// Frees `connection` once its close (see [`Self::close`]) has gone through; it must not
    /// be used after this call.
    pub fn release_when_closed(&mut self, connection: Connection) {
        self.closing.push(connection.0);
    }

    /// The device under the stack.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }
}
