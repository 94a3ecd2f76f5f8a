//! Framing: every message in both directions is a big-endian `int32` length and that many bytes (Netty's
//! `LengthFieldBasedFrameDecoder(max, 0, 4, 0, 4)` in BookKeeper).

/// BookKeeper's `nettyMaxFrameSizeBytes`: a longer frame closes the connection. An entry of the journal's
/// default record limit fits with room for the headers.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 5 << 20;
/// The length prefix.
pub const LENGTH_BYTES: usize = 4;

/// What the head of a connection's input buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Not enough bytes yet.
    Incomplete,
    /// One whole message (without its length) and the input bytes it used (length included).
    Complete { body: &'a [u8], used: usize },
}

/// A length no message may have: the stream cannot be followed past it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame length {len} outside 4..={max}")]
pub struct FrameError {
    pub len: i64,
    pub max: usize,
}

/// Splits off the next message of at most `frame_bytes_max` bytes. Every message holds at least its
/// 4-byte packet header, so a shorter length is as wrong as a longer one.
pub fn next_frame(buf: &[u8], frame_bytes_max: usize) -> Result<Frame<'_>, FrameError> {
    let Some(prefix) = buf.get(..LENGTH_BYTES) else {
        return Ok(Frame::Incomplete);
    };
    let len = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if len < 4 || len as usize > frame_bytes_max {
        return Err(FrameError {
            len: i64::from(len),
            max: frame_bytes_max,
        });
    }
    let used = LENGTH_BYTES + len as usize;
    if buf.len() < used {
        return Ok(Frame::Incomplete);
    }
    Ok(Frame::Complete {
        body: &buf[LENGTH_BYTES..used],
        used,
    })
}

/// Appends a message: reserves the length, lets `body` write, then fills the length in.
pub(crate) fn put_frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_BYTES]);
    body(out);
    let len = out.len() - start - LENGTH_BYTES;
    // A message longer than i32::MAX cannot be framed; every caller bounds entries far below it.
    let len = i32::try_from(len).expect("message shorter than 2 GiB");
    out[start..start + LENGTH_BYTES].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_frames_and_refuses_lengths_outside_the_bounds() {
        let mut buf = 5i32.to_be_bytes().to_vec();
        buf.extend_from_slice(b"abcdeX");
        assert_eq!(
            next_frame(&buf, 10),
            Ok(Frame::Complete {
                body: b"abcde",
                used: 9
            })
        );
        assert_eq!(next_frame(&buf[..8], 10), Ok(Frame::Incomplete));
        assert_eq!(next_frame(&buf[..3], 10), Ok(Frame::Incomplete));
        assert!(next_frame(&(-5i32).to_be_bytes(), 10).is_err());
        assert!(next_frame(&3i32.to_be_bytes(), 10).is_err());
        assert!(next_frame(&11i32.to_be_bytes(), 10).is_err());
    }
}
