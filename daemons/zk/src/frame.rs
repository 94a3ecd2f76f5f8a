//! Framing: every message in both directions is a 4-byte big-endian signed length and that many bytes.
//! Before the handshake, the first 4 bytes may instead be a four-letter word (`ruok`, `srvr`, …), which
//! ZooKeeper tells apart by comparing the would-be length with the words' ASCII codes.

use crate::DecodeError;

/// ZooKeeper's default `jute.maxbuffer` (1 MiB − 1): a larger frame closes the connection.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 0xfffff;

/// What the head of a connection's input buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Not enough bytes yet.
    Incomplete,
    /// One whole frame payload and the number of input bytes it used (prefix included).
    Complete { payload: &'a [u8], used: usize },
}

/// Splits off the next frame of at most `frame_bytes_max` payload bytes.
pub fn next_frame(buf: &[u8], frame_bytes_max: usize) -> Result<Frame<'_>, DecodeError> {
    if buf.len() < 4 {
        return Ok(Frame::Incomplete);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 0 || len as usize > frame_bytes_max {
        return Err(DecodeError::FrameLength {
            len: i64::from(len),
            max: frame_bytes_max,
        });
    }
    let used = 4 + len as usize;
    if buf.len() < used {
        return Ok(Frame::Incomplete);
    }
    Ok(Frame::Complete {
        payload: &buf[4..used],
        used,
    })
}

/// The four-letter words coordd knows; ZooKeeper's list minus the ones that change server state.
pub const FOUR_LETTER_WORDS: &[&str] = &[
    "ruok", "srvr", "stat", "mntr", "conf", "cons", "envi", "wchs", "wchc", "wchp", "isro", "dirs", "dump",
];

/// If the first 4 bytes of a fresh connection are a known four-letter word, that word.
pub fn four_letter_word(head: &[u8]) -> Option<&'static str> {
    let word = head.get(..4)?;
    FOUR_LETTER_WORDS.iter().copied().find(|w| w.as_bytes() == word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_frames_and_rejects_bad_lengths() {
        let mut buf = 3i32.to_be_bytes().to_vec();
        buf.extend_from_slice(b"abcX");
        assert_eq!(
            next_frame(&buf, 10),
            Ok(Frame::Complete {
                payload: b"abc",
                used: 7
            })
        );
        assert_eq!(next_frame(&buf[..6], 10), Ok(Frame::Incomplete));
        assert!(next_frame(&(-5i32).to_be_bytes(), 10).is_err());
        assert!(next_frame(&11i32.to_be_bytes(), 10).is_err());
        assert_eq!(four_letter_word(b"ruok"), Some("ruok"));
        assert_eq!(four_letter_word(b"xxxx"), None);
    }
}
