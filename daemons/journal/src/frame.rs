//! The journal's on-disk formats, as pure functions: bytes in, typed values out.
//!
//! Nothing here does IO, so every decoder can be property-tested and fuzzed on its own (STYLE #1).
//!
//! A segment file starts with a [`SEGMENT_HEADER_BYTES`]-byte header, then frames back to back, each padded to
//! [`FRAME_ALIGN_BYTES`]. The rest of a preallocated segment reads as zeros, which decode as [`Decoded::End`].
//!
//! Frame layout, little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4 | payload length |
//! | 4  | 4 | CRC32C of bytes 0..4 and 8..24+length (everything but itself) |
//! | 8  | 8 | sequence number (the first record of a journal is 1; 0 never occurs) |
//! | 16 | 8 | durable hint: the highest sequence number known durable when this frame was encoded |
//! | 24 | length | payload |
//!
//! The durable hint is what lets recovery tell a torn tail from corruption: a bad record at sequence `s` that a
//! later valid frame declares durable (hint ≥ `s`) had been fsynced, so it is corruption, not a torn write.

/// Bytes of a frame header (length, crc, sequence, durable hint).
pub const FRAME_HEADER_BYTES: usize = 24;
/// Frames start on this boundary, so a resynchronising scan only tries aligned offsets.
pub const FRAME_ALIGN_BYTES: usize = 8;
/// Bytes of a segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Identifies a logtank journal segment and its format version.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LTJRNL01";
/// Bumped on any incompatible change of the frame or header layout.
pub const FORMAT_VERSION: u32 = 1;
/// The largest payload the format can describe at all; options choose a smaller limit.
pub const PAYLOAD_BYTES_MAX: u32 = 256 << 20;

const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(FRAME_ALIGN_BYTES));
const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(FRAME_ALIGN_BYTES));

/// The size a frame with `payload_len` bytes of payload occupies on disk, padding included.
pub fn frame_len(payload_len: usize) -> usize {
    (FRAME_HEADER_BYTES + payload_len).next_multiple_of(FRAME_ALIGN_BYTES)
}

/// Appends one encoded frame (with padding) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, seq: u64, durable_hint: u64, payload: &[u8]) {
    debug_assert!(seq > 0, "sequence numbers start at 1");
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    assert!(
        len <= PAYLOAD_BYTES_MAX,
        "payload length is checked by the caller"
    );
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&durable_hint.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = frame_crc(&out[start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.resize(start + frame_len(payload.len()), 0);
}

fn frame_crc(frame_without_padding: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&frame_without_padding[0..4]);
    crc32c::crc32c_append(crc, &frame_without_padding[8..])
}

/// A frame that decoded and passed its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub seq: u64,
    pub durable_hint: u64,
    pub payload: &'a [u8],
    /// Bytes this frame occupies, padding included: the next frame starts this far on.
    pub frame_len: usize,
}

/// Why bytes that should hold a frame do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The length field exceeds the configured maximum.
    LengthTooLarge { len: u32, max: u32 },
    /// The frame runs past the end of the bytes available.
    Truncated,
    /// The checksum does not match the contents.
    Checksum,
    /// Sequence number 0 is never written.
    ZeroSequence,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::LengthTooLarge { len, max } => {
                write!(f, "record length {len} exceeds the maximum {max}")
            }
            Invalid::Truncated => write!(f, "record is truncated"),
            Invalid::Checksum => write!(f, "record checksum mismatch"),
            Invalid::ZeroSequence => write!(f, "record has sequence number 0"),
        }
    }
}

/// The result of decoding at one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    Frame(Frame<'a>),
    /// An all-zero header: no frame was ever written here (preallocated space).
    End,
    Invalid(Invalid),
}

/// Decodes the frame at the start of `bytes`, which extend to the end of the written area or the file.
pub fn decode_frame(bytes: &[u8], payload_max: u32) -> Decoded<'_> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return if bytes.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Invalid(Invalid::Truncated)
        };
    }
    let header = &bytes[..FRAME_HEADER_BYTES];
    if header.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let len = read_u32(header, 0);
    if len > payload_max.min(PAYLOAD_BYTES_MAX) {
        return Decoded::Invalid(Invalid::LengthTooLarge {
            len,
            max: payload_max,
        });
    }
    let end = FRAME_HEADER_BYTES + len as usize;
    if bytes.len() < end {
        return Decoded::Invalid(Invalid::Truncated);
    }
    if read_u32(header, 4) != frame_crc(&bytes[..end]) {
        return Decoded::Invalid(Invalid::Checksum);
    }
    let seq = read_u64(header, 8);
    if seq == 0 {
        return Decoded::Invalid(Invalid::ZeroSequence);
    }
    // Segments are zero-filled, so the padding is always there; a file cut inside it was cut short, and
    // the next frame must start on an aligned offset (regression: a physically shortened segment).
    let padded = frame_len(len as usize);
    if bytes.len() < padded {
        return Decoded::Invalid(Invalid::Truncated);
    }
    Decoded::Frame(Frame {
        seq,
        durable_hint: read_u64(header, 16),
        payload: &bytes[FRAME_HEADER_BYTES..end],
        frame_len: padded,
    })
}

/// The fixed header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Sequence number of the first record this segment holds (or will hold).
    pub first_seq: u64,
}

/// Why a segment header is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadHeader {
    Short,
    Magic,
    Version(u32),
    Checksum,
}

impl std::fmt::Display for BadHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadHeader::Short => write!(f, "segment header is truncated"),
            BadHeader::Magic => write!(f, "not a logtank journal segment (bad magic)"),
            BadHeader::Version(v) => write!(f, "unsupported segment format version {v}"),
            BadHeader::Checksum => write!(f, "segment header checksum mismatch"),
        }
    }
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..24]);
        out[24..28].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, BadHeader> {
        if bytes.len() < SEGMENT_HEADER_BYTES {
            return Err(BadHeader::Short);
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err(BadHeader::Magic);
        }
        if read_u32(bytes, 24) != crc32c::crc32c(&bytes[0..24]) {
            return Err(BadHeader::Checksum);
        }
        let version = read_u32(bytes, 8);
        if version != FORMAT_VERSION {
            return Err(BadHeader::Version(version));
        }
        Ok(SegmentHeader {
            first_seq: read_u64(bytes, 16),
        })
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Proves a frame decodes back to exactly what was encoded, and where the next frame starts.
    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 7, 3, b"hello");
        assert_eq!(buf.len(), frame_len(5));
        assert_eq!(buf.len() % FRAME_ALIGN_BYTES, 0);
        match decode_frame(&buf, 1024) {
            Decoded::Frame(f) => {
                assert_eq!(
                    (f.seq, f.durable_hint, f.payload, f.frame_len),
                    (7, 3, &b"hello"[..], buf.len())
                )
            }
            other => panic!("{other:?}"),
        }
    }

    // Proves zeros (preallocated space) read as the end, and a partial header as truncated.
    #[test]
    fn zeros_are_end_and_partial_header_is_truncated() {
        assert_eq!(decode_frame(&[0; 100], 1024), Decoded::End);
        assert_eq!(decode_frame(&[0; 3], 1024), Decoded::End);
        assert_eq!(
            decode_frame(&[1, 0, 0], 1024),
            Decoded::Invalid(Invalid::Truncated)
        );
    }

    // Proves a length beyond the limit is rejected before anything is read or allocated.
    #[test]
    fn oversized_length_rejected() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 1, 0, &[9; 100]);
        assert!(matches!(
            decode_frame(&buf, 99),
            Decoded::Invalid(Invalid::LengthTooLarge { len: 100, .. })
        ));
    }

    // Proves segment headers round-trip and a flipped byte is caught.
    #[test]
    fn segment_header() {
        let h = SegmentHeader { first_seq: 42 };
        let mut bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        bytes[17] ^= 1;
        assert_eq!(SegmentHeader::decode(&bytes), Err(BadHeader::Checksum));
        assert_eq!(SegmentHeader::decode(&[0; 32]), Err(BadHeader::Magic));
    }

    proptest! {
        // Proves that no single flipped bit anywhere in a frame yields a frame with a different content:
        // it is either rejected or (if the flip hit padding) decodes to the original.
        #[test]
        fn bit_flip_never_yields_wrong_frame(payload in proptest::collection::vec(any::<u8>(), 0..300),
                                            seq in 1u64..u64::MAX, hint: u64, pos: usize, bit in 0u8..8) {
            let mut buf = Vec::new();
            encode_frame(&mut buf, seq, hint, &payload);
            let pos = pos % buf.len();
            buf[pos] ^= 1 << bit;
            match decode_frame(&buf, 1 << 20) {
                Decoded::Frame(f) => {
                    prop_assert!(pos >= FRAME_HEADER_BYTES + payload.len(), "flip at {} went unnoticed", pos);
                    prop_assert_eq!((f.seq, f.durable_hint, f.payload), (seq, hint, &payload[..]));
                }
                Decoded::End | Decoded::Invalid(_) => {}
            }
        }

        // Proves that any prefix of a frame is never mistaken for a complete one.
        #[test]
        fn truncation_never_yields_frame(payload in proptest::collection::vec(any::<u8>(), 0..300), cut: usize) {
            let mut buf = Vec::new();
            encode_frame(&mut buf, 5, 1, &payload);
            let cut = cut % (FRAME_HEADER_BYTES + payload.len());
            prop_assert!(!matches!(decode_frame(&buf[..cut], 1 << 20), Decoded::Frame(_)));
        }

        // Proves arbitrary bytes never panic the decoder.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_frame(&bytes, 1 << 20);
            let _ = SegmentHeader::decode(&bytes);
        }
    }
}
