//! An entry as the client formats it and the bookie stores it, byte for byte:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | ledger id |
//! | 8 | 8 | entry id |
//! | 16 | 8 | last add confirmed when the entry was sent (`-1`: none yet) |
//! | 24 | 8 | ledger length: payload bytes of every entry up to and including this one |
//! | 32 | 4 | CRC32C of bytes 0..32 followed by the payload |
//! | 36 | n | payload |
//!
//! All integers big-endian, as in BookKeeper (whose CRC32C digest manager produces these same bytes).

use sha1::{Digest, Sha1};

/// The entry's header: ids, last add confirmed and ledger length.
pub const ENTRY_HEADER_BYTES: usize = 32;
/// A CRC32C digest.
pub const DIGEST_BYTES: usize = 4;
/// What an entry costs beyond its payload.
pub const ENTRY_OVERHEAD_BYTES: usize = ENTRY_HEADER_BYTES + DIGEST_BYTES;
/// BookKeeper's master key: SHA-1 of `"ledger"` and the ledger's password.
pub const MASTER_KEY_BYTES: usize = 20;

pub type MasterKey = [u8; MASTER_KEY_BYTES];

/// The key every add and fencing read carries: proves the sender knows the ledger's password, without
/// sending the password (BookKeeper's `MacDigestManager.genDigest("ledger", password)`).
pub fn master_key(password: &[u8]) -> MasterKey {
    let mut sha = Sha1::new();
    sha.update(b"ledger");
    sha.update(password);
    sha.finalize().into()
}

/// The fields before the digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    pub ledger_id: u64,
    pub entry_id: i64,
    pub lac: i64,
    pub length: u64,
}

impl EntryHeader {
    fn encode(&self) -> [u8; ENTRY_HEADER_BYTES] {
        let mut b = [0u8; ENTRY_HEADER_BYTES];
        b[0..8].copy_from_slice(&self.ledger_id.to_be_bytes());
        b[8..16].copy_from_slice(&self.entry_id.to_be_bytes());
        b[16..24].copy_from_slice(&self.lac.to_be_bytes());
        b[24..32].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    /// The caller passes at least [`ENTRY_HEADER_BYTES`] bytes.
    fn decode(bytes: &[u8]) -> EntryHeader {
        EntryHeader {
            ledger_id: crate::be_u64(bytes, 0),
            entry_id: crate::be_i64(bytes, 8),
            lac: crate::be_i64(bytes, 16),
            length: crate::be_u64(bytes, 24),
        }
    }
}

/// The digest of a header and payload.
fn digest(header: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header), payload)
}

/// Appends the entry (header, digest, payload) to `out`.
pub fn encode_entry(out: &mut Vec<u8>, header: &EntryHeader, payload: &[u8]) {
    let h = header.encode();
    out.reserve(ENTRY_OVERHEAD_BYTES + payload.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(&digest(&h, payload).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The ids of an entry, read without checking its digest (the bookie reads them to answer a request
/// whose digest turns out wrong).
pub fn peek_ids(bytes: &[u8]) -> Option<(u64, i64)> {
    (bytes.len() >= 16).then(|| (crate::be_u64(bytes, 0), crate::be_i64(bytes, 8)))
}

/// A verified entry: its header and payload, borrowed from the stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryView<'a> {
    pub header: EntryHeader,
    pub payload: &'a [u8],
}

/// Why bytes are not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("entry of {0} bytes is shorter than its {ENTRY_OVERHEAD_BYTES}-byte header and digest")]
    TooShort(usize),
    #[error(
        "entry {ledger_id}:{entry_id} fails its digest (CRC32C {actual:#010x}, entry says {stated:#010x})"
    )]
    Digest {
        ledger_id: u64,
        entry_id: i64,
        stated: u32,
        actual: u32,
    },
}

/// Checks an entry's digest and splits it into header and payload.
pub fn parse_entry(bytes: &[u8]) -> Result<EntryView<'_>, EntryError> {
    if bytes.len() < ENTRY_OVERHEAD_BYTES {
        return Err(EntryError::TooShort(bytes.len()));
    }
    let header = EntryHeader::decode(bytes);
    let stated = crate::be_u32(bytes, ENTRY_HEADER_BYTES);
    let payload = &bytes[ENTRY_OVERHEAD_BYTES..];
    let actual = digest(&bytes[..ENTRY_HEADER_BYTES], payload);
    if stated != actual {
        return Err(EntryError::Digest {
            ledger_id: header.ledger_id,
            entry_id: header.entry_id,
            stated,
            actual,
        });
    }
    Ok(EntryView { header, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips_and_any_flipped_bit_fails_the_digest() {
        let header = EntryHeader {
            ledger_id: 7,
            entry_id: 3,
            lac: 2,
            length: 40,
        };
        let mut bytes = Vec::new();
        encode_entry(&mut bytes, &header, b"hello");
        assert_eq!(bytes.len(), ENTRY_OVERHEAD_BYTES + 5);
        let view = parse_entry(&bytes).expect("valid");
        assert_eq!(view.header, header);
        assert_eq!(view.payload, b"hello");
        assert_eq!(peek_ids(&bytes), Some((7, 3)));
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(parse_entry(&bad).is_err(), "bit {bit} flipped went unnoticed");
        }
        assert_eq!(parse_entry(&bytes[..35]), Err(EntryError::TooShort(35)));
    }

    #[test]
    fn master_key_is_sha1_of_ledger_and_password() {
        // SHA-1("ledger") computed independently (sha1sum of the 6 bytes).
        assert_eq!(
            master_key(b""),
            [
                0x85, 0x0b, 0xf1, 0x07, 0x1c, 0x5e, 0x3d, 0x8c, 0x24, 0x23, 0x56, 0x76, 0xf8, 0x81, 0x6a,
                0xe0, 0xcb, 0xe2, 0xf1, 0x4f
            ]
        );
        assert_ne!(master_key(b"a"), master_key(b"b"));
    }
}
