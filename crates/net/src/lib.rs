//! shoal's transport: the cluster CA and host identities ([`cluster`], [`Identity`]),
//! mutually authenticated QUIC endpoints ([`endpoint`], [`connect`]) tuned to the path
//! ([`Tuning`]), and framed [`shoal_proto::Msg`]s on streams ([`send_msg`],
//! [`recv_msg`]).
//!
//! Transport trust and release trust are separate: the cluster CA decides who may
//! connect; the deploy key (made beside the CA by [`cluster::init`]) signs releases.

pub mod cluster;
mod endpoint;
mod error;
mod frame;
mod identity;
mod tuning;

pub use endpoint::{CID_LEN, bind_socket, connect, endpoint, endpoint_with_socket, local_addr};
pub use error::NetError;
pub use frame::{recv_msg, recv_msg_noting, send_msg};
pub use identity::{ALPN, Identity, PeerName, peer_name, provider};
pub use tuning::{INITIAL_MTU, LOCAL_RTT, MAX_MTU, Tuning, send_window_for};
// Re-exported so callers name the same versions shoal-net was built with.
pub use quinn;
pub use rustls;
