//! [`SimSocket`]: a quinn UDP socket whose datagrams travel through a simulated
//! [`crate::net::Network`] instead of the kernel.
//!
//! quinn 0.11's `AsyncUdpSocket` is the seam (DESIGN.md, "Numbers to get right"):
//! quinn, rustls and everything above run unchanged. The socket accepts GSO-style
//! batches (`segment_size`) so quinn builds several datagrams per call, pushes
//! back with `WouldBlock` while the host's uplink queue is full (as a kernel does
//! when SO_SNDBUF fills), and hands received datagrams over one per buffer.

use crate::net::{Sent, Shared, lock};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

/// Datagrams quinn may put in one [`Transmit`] (quinn caps it at 10 itself).
const MAX_SEGMENTS: usize = 16;

/// The socket of one simulated host; see [`crate::net::Network::socket`].
pub struct SimSocket {
    net: Arc<Shared>,
    ix: usize,
}

impl std::fmt::Debug for SimSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSocket")
            .field("addr", &self.net.hosts[self.ix].addr)
            .finish()
    }
}

impl SimSocket {
    pub(crate) fn new(net: Arc<Shared>, ix: usize) -> SimSocket {
        SimSocket { net, ix }
    }

    /// The host this socket belongs to (index into `Topology::hosts`).
    pub fn host(&self) -> usize {
        self.ix
    }
}

impl AsyncUdpSocket for SimSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(SimPoller { socket: self })
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        let Some(dst) = self.net.host_at(t.destination) else {
            // Nobody there: the datagram leaves and vanishes, as on a real network.
            tracing::trace!(to = %t.destination, "netsim: no host at destination");
            return Ok(());
        };
        let seg = match t.segment_size {
            Some(s) if s > 0 => s,
            _ => t.contents.len().max(1),
        };
        let mtu = self.net.mtu;
        let too_big = t.contents.chunks(seg).filter(|c| c.len() > mtu).count();
        if too_big > 0 {
            self.net
                .counters
                .dropped_mtu
                .fetch_add(too_big as u64, Relaxed);
        }
        let fits = t.contents.chunks(seg).filter(|c| c.len() <= mtu);
        match self.net.send(self.ix as u32, dst, fits) {
            Sent::Accepted => Ok(()),
            Sent::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let host = &self.net.hosts[self.ix];
        let mut inbox = lock(&host.inbox);
        if inbox.queue.is_empty() {
            inbox.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = 0;
        for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()) {
            let Some(d) = inbox.queue.pop_front() else {
                break;
            };
            inbox.bytes -= d.data.len();
            // A buffer shorter than the datagram truncates it, as recvmsg does.
            let len = d.data.len().min(buf.len());
            buf[..len].copy_from_slice(&d.data[..len]);
            *m = RecvMeta {
                addr: d.from,
                len,
                stride: len,
                ecn: None,
                dst_ip: Some(host.ip),
            };
            n += 1;
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.net.hosts[self.ix].addr)
    }

    fn max_transmit_segments(&self) -> usize {
        MAX_SEGMENTS
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

/// Write readiness of a [`SimSocket`]: ready while the host's uplink queue has room.
struct SimPoller {
    socket: Arc<SimSocket>,
}

impl std::fmt::Debug for SimPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPoller")
            .field("socket", &self.socket)
            .finish()
    }
}

impl UdpPoller for SimPoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        if self.socket.net.poll_uplink(self.socket.ix, cx.waker()) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}
