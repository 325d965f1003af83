//! Framed messages on QUIC streams: a 4-byte big-endian length, then a postcard body
//! (see `shoal_proto`). The length is checked against the caller's limit before any
//! buffer is allocated, so a peer cannot make us reserve memory by announcing a size.
//!
//! Neither function is cancel-safe: dropping a `recv_msg` future midway loses the
//! bytes already read. Give each stream its own task rather than racing reads in
//! `select!`.

use crate::error::NetError;
use quinn::{ReadExactError, RecvStream, SendStream};
use shoal_proto::{Msg, frame_len};

/// Writes one frame.
pub async fn send_msg(s: &mut SendStream, m: &Msg) -> Result<(), NetError> {
    s.write_all(&m.to_frame()).await?;
    Ok(())
}

/// Reads one frame of at most `limit` body bytes. Returns `Ok(None)` when the stream
/// ends cleanly before the first byte of a frame; an end inside a frame is an error.
pub async fn recv_msg(s: &mut RecvStream, limit: usize) -> Result<Option<Msg>, NetError> {
    recv_msg_noting(s, limit, || ()).await
}

/// As [`recv_msg`], calling `started` once the frame's length has arrived:
/// the answer has begun, and its body is on its way (a downloader counts
/// the pieces arriving at once from this).
pub async fn recv_msg_noting(
    s: &mut RecvStream,
    limit: usize,
    started: impl FnOnce(),
) -> Result<Option<Msg>, NetError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        match s.read(&mut prefix[got..]).await? {
            Some(n) => got += n,
            None if got == 0 => return Ok(None),
            None => {
                return Err(NetError::Truncated {
                    expected: prefix.len(),
                    got,
                });
            }
        }
    }
    let n = frame_len(prefix, limit)?;
    started();
    let mut body = vec![0u8; n];
    s.read_exact(&mut body).await.map_err(|e| match e {
        ReadExactError::FinishedEarly(got) => NetError::Truncated { expected: n, got },
        ReadExactError::ReadError(e) => NetError::Read(e),
    })?;
    Ok(Some(Msg::from_body(&body)?))
}
