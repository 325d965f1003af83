//! Flow-control windows, stream limits and socket buffers sized from the path.
//!
//! A QUIC stream moves at most one receive window per round trip, so a window below
//! the bandwidth-delay product caps throughput: quinn's default stream window
//! (1.25 MB, sized for 100 Mbit/s at 100 ms) holds one stream near 250 Mbit/s on a
//! 40 ms cross-datacenter link. Windows here are twice the BDP, never below quinn's
//! defaults, which leaves room for the congestion window to probe past the BDP.

use quinn::{IdleTimeout, TransportConfig, VarInt};
use std::time::Duration;

/// quinn 0.11's default stream receive window (12.5 MB/s x 100 ms).
const QUINN_STREAM_WINDOW: u64 = 1_250_000;
/// quinn 0.11's default send window (8 stream windows).
const QUINN_SEND_WINDOW: u64 = 8 * QUINN_STREAM_WINDOW;
/// quinn 0.11's default limit on concurrent streams per direction.
const QUINN_MAX_STREAMS: u32 = 100;
/// quinn's initial MTU (the QUIC minimum) and the one size probed above it.
pub const INITIAL_MTU: u16 = 1200;
const MTU_PROBE: u16 = 1452;
/// The largest UDP payload QUIC allows (RFC 9000's `max_udp_payload_size`).
pub const MAX_MTU: u16 = 65527;
/// The round trip between two hosts of one datacenter, as large operators
/// report it: what [`send_window_for`] sizes a connection inside one for.
/// Not measured per connection: hosts connect while their links are already
/// busy, and a handshake's round trip then holds a queue's delay (10-60 ms
/// in the 48-host simulation, against 0.5 ms on idle links).
pub const LOCAL_RTT: Duration = Duration::from_micros(500);
/// The fewest bytes in flight [`send_window_for`] allows a connection: four
/// full packets, so a path whose bandwidth-delay product is smaller than a
/// packet (a slow link with a sub-millisecond round trip) still runs at its
/// rate between the acknowledgements.
const MIN_SEND_WINDOW: u64 = 4 * MTU_PROBE as u64;
/// Ack-eliciting packets a peer may take in before it must acknowledge
/// (QUIC's ACK-frequency extension; quinn's default, without it, is 1: an
/// ACK for every other packet). See `transport`.
const ACK_ELICITING_THRESHOLD: u32 = 3;
/// A typical piece (a compressed 64 KiB average chunk) for counting requests in flight.
const TYPICAL_PIECE: u64 = 64 << 10;
/// Beyond this many concurrent streams the per-stream state costs more than it buys.
const MAX_STREAMS_CAP: u32 = 4096;
/// Socket buffers: enough for a burst while the endpoint task is busy, bounded so a
/// huge BDP does not ask the kernel for absurd amounts.
const MIN_SOCKET_BUFFER: u64 = 4 << 20;
const MAX_SOCKET_BUFFER: u64 = 64 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Receive window of one stream (bytes).
    pub stream_window: u64,
    /// Receive window of a whole connection (bytes).
    pub conn_window: u64,
    /// Bytes a connection may have sent but not yet acknowledged, over all streams.
    pub send_window: u64,
    /// Concurrent streams a peer may open, per direction.
    pub max_streams: u32,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// Keep-alive interval (zero disables), well under `idle_timeout` so idle tracker
    /// connections survive a lost keep-alive.
    pub keep_alive: Duration,
    /// SO_RCVBUF and SO_SNDBUF to ask the kernel for (bytes).
    pub socket_buffer: usize,
    /// The path's MTU as UDP payload bytes, when the operator knows it
    /// (`path_mtu` in the configs): connections start there and send no
    /// probe. None: start at 1200 and probe once (see `transport`).
    pub path_mtu: Option<u16>,
}

impl Tuning {
    /// Tuning for a path of `bandwidth_bytes_per_s` and round-trip time `rtt`.
    pub fn for_path(bandwidth_bytes_per_s: u64, rtt: Duration) -> Tuning {
        let bdp = bdp(bandwidth_bytes_per_s, rtt);
        let stream_window = bdp.saturating_mul(2).max(QUINN_STREAM_WINDOW);
        // Several streams share a connection; one slow reader must not starve the rest.
        let conn_window = stream_window.saturating_mul(2);
        let send_window = bdp.saturating_mul(2).max(QUINN_SEND_WINDOW);
        // Enough streams for one request per typical piece over two BDPs.
        let pieces = (bdp.saturating_mul(2) / TYPICAL_PIECE).min(u64::from(MAX_STREAMS_CAP));
        let max_streams = (pieces as u32).max(QUINN_MAX_STREAMS);
        let socket_buffer = bdp.clamp(MIN_SOCKET_BUFFER, MAX_SOCKET_BUFFER);
        Tuning {
            stream_window,
            conn_window,
            send_window,
            max_streams,
            // A host that died without a word (SIGKILL, power) is noticed within
            // this time, so its chunks stop counting as held nearby.
            idle_timeout: Duration::from_secs(10).max(rtt.saturating_mul(10)),
            keep_alive: Duration::from_secs(2),
            socket_buffer: usize::try_from(socket_buffer).unwrap_or(usize::MAX),
            path_mtu: None,
        }
    }

    /// This tuning on a path whose MTU (UDP payload bytes) is known; 0:
    /// unknown. Sizes outside what QUIC allows are brought inside it.
    pub fn with_path_mtu(mut self, mtu: u16) -> Tuning {
        self.path_mtu = (mtu != 0).then(|| mtu.clamp(INITIAL_MTU, MAX_MTU));
        self
    }

    /// The bandwidth-delay product of a path, in bytes.
    pub fn bdp(bandwidth_bytes_per_s: u64, rtt: Duration) -> u64 {
        bdp(bandwidth_bytes_per_s, rtt)
    }

    /// quinn's transport configuration for this tuning.
    pub fn transport(&self) -> Result<TransportConfig, crate::NetError> {
        let mut t = TransportConfig::default();
        // Windows beyond QUIC's varint range are clamped, not refused: they mean "unlimited".
        let var = |v: u64| VarInt::from_u64(v).unwrap_or(VarInt::MAX);
        t.stream_receive_window(var(self.stream_window))
            .receive_window(var(self.conn_window))
            .send_window(self.send_window)
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_streams))
            .max_idle_timeout(Some(IdleTimeout::try_from(self.idle_timeout).map_err(
                |_| {
                    crate::NetError::Config(format!(
                        "idle timeout {:?} too large",
                        self.idle_timeout
                    ))
                },
            )?))
            .keep_alive_interval((!self.keep_alive.is_zero()).then_some(self.keep_alive))
            // Streams of equal priority go out in the order they were written,
            // not round-robin: a piece that is first in line finishes first and
            // can be passed on, instead of every piece finishing late together.
            .send_fairness(false);
        // One path-MTU probe, straight at quinn's upper bound (1452 bytes of
        // UDP payload, what a 1500-byte Ethernet path carries), instead of a
        // binary search of five from 1200: every pair of hosts keeps a
        // connection, so probes are paid per pair, and in the 48-host
        // simulation the search was a tenth of all bytes between
        // datacenters. A path that drops the probe stays at 1200.
        //
        // A known path MTU is where connections start, with nothing above it
        // to probe: the probe and the packets of 1200 bytes sent before it
        // returns (1% of the seed's upload in the 48-host simulation) are
        // saved. If the path drops packets of that size after all, quinn's
        // black-hole detection falls back to 1200; discovery stays on so
        // that one probe, straight at the known size, tries it again after
        // quinn's cooldown. (The endpoint accepts packets of that size:
        // `endpoint_with_socket`.)
        let (start, top) = match self.path_mtu {
            Some(m) => (m, m),
            None => (INITIAL_MTU, MTU_PROBE),
        };
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(top)
            .minimum_change((top - INITIAL_MTU).max(1));
        t.initial_mtu(start).mtu_discovery_config(Some(mtu));
        // Ask the peer for an ACK every fourth data packet instead of every
        // other one. Every host sends about as much as it receives, so the
        // ACKs for what it sends come in on the downlink that bounds its
        // transfer: at every other packet they were 2.6% of each host's
        // bytes in the 48-host simulation. A larger threshold (9) made that
        // run slower: senders then learn of losses and free their windows
        // later. Reordered packets are still acknowledged at once.
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(VarInt::from_u32(ACK_ELICITING_THRESHOLD));
        t.ack_frequency_config(Some(ack));
        Ok(t)
    }
}

impl Default for Tuning {
    /// 1 Gbit/s at 40 ms: the cross-datacenter link shoal is built for.
    fn default() -> Self {
        Tuning::for_path(125_000_000, Duration::from_millis(40))
    }
}

/// Bytes one connection may have in flight on a path of `bandwidth_bytes_per_s`
/// (the host's link) and round trip `rtt`: twice the path's bandwidth-delay
/// product, at least [`MIN_SEND_WINDOW`]. Nodes hold connections inside their
/// datacenter to it (at [`LOCAL_RTT`]); across, the tuning's window stands.
///
/// Why a cap below quinn's: within a datacenter many hosts send to one at
/// once (a host fetches from every neighbour holding what it lacks), and a
/// loss-based congestion controller grows each sender's window until that
/// host's switch queue overflows: in the 48-host simulation 8% of the seed's
/// packets were dropped there and sent again, on the link that bounds the
/// whole transfer. Twice the bandwidth-delay product still lets one sender fill
/// the path alone; what several senders can queue at one receiver is then
/// bounded by their windows, not by the queue.
pub fn send_window_for(bandwidth_bytes_per_s: u64, rtt: Duration) -> u64 {
    bdp(bandwidth_bytes_per_s, rtt)
        .saturating_mul(2)
        .max(MIN_SEND_WINDOW)
}

fn bdp(bandwidth_bytes_per_s: u64, rtt: Duration) -> u64 {
    let b = u128::from(bandwidth_bytes_per_s) * rtt.as_nanos() / 1_000_000_000;
    u64::try_from(b).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_window_is_twice_the_path_bdp_and_never_below_four_packets() {
        // 1 Gbit/s at 40 ms: 5 MB in flight fill the path, 10 MB are allowed.
        assert_eq!(
            send_window_for(125_000_000, Duration::from_millis(40)),
            10_000_000
        );
        // 20 Mbit/s at 0.5 ms: a BDP of 1,250 bytes, less than a packet.
        let local = send_window_for(2_500_000, LOCAL_RTT);
        assert_eq!(local, MIN_SEND_WINDOW);
        assert!(local >= 4 * 1452);
        // 1 Gbit/s inside a datacenter: 125 KB.
        assert_eq!(send_window_for(125_000_000, LOCAL_RTT), 125_000);
        // Extremes neither overflow nor go to zero.
        assert_eq!(
            send_window_for(u64::MAX, Duration::from_secs(1000)),
            u64::MAX
        );
        assert_eq!(send_window_for(0, Duration::ZERO), MIN_SEND_WINDOW);
    }

    #[test]
    fn never_below_quinn_defaults_and_extremes_do_not_overflow() {
        let slow = Tuning::for_path(1_000_000, Duration::from_millis(1));
        assert_eq!(slow.stream_window, QUINN_STREAM_WINDOW);
        assert_eq!(slow.send_window, QUINN_SEND_WINDOW);
        assert_eq!(slow.max_streams, QUINN_MAX_STREAMS);
        assert_eq!(slow.socket_buffer as u64, MIN_SOCKET_BUFFER);
        slow.transport().unwrap();
        let huge = Tuning::for_path(u64::MAX, Duration::from_secs(1000));
        assert_eq!(huge.max_streams, MAX_STREAMS_CAP);
        assert_eq!(huge.socket_buffer as u64, MAX_SOCKET_BUFFER);
        huge.transport().unwrap();
    }
}
