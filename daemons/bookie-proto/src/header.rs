//! The packet header every message starts with: one big-endian `int32`, `version << 24 | opcode << 16 |
//! flags` (BookKeeper's `BookieProtocol.PacketHeader`).

/// BookKeeper's v2 protocol version, whose layout this protocol keeps.
pub const PROTOCOL_VERSION: u8 = 2;
pub const PACKET_HEADER_BYTES: usize = 4;

/// A read that also fences the ledger (ledger recovery): it carries the master key, and the bookie makes the
/// fence durable before it answers.
pub const FLAG_DO_FENCING: u16 = 0x1;
/// An add of ledger recovery: accepted on a fenced ledger.
pub const FLAG_RECOVERY_ADD: u16 = 0x2;
/// Served ahead of normal traffic; a readonly bookie still accepts recovery adds that carry it.
pub const FLAG_HIGH_PRIORITY: u16 = 0x4;

/// The operations, with BookKeeper's v2 opcode numbers. Numbers this protocol does not serve (AUTH 3,
/// GET_BOOKIE_INFO 6, BATCH_READ_ENTRY 7, anything else) decode as [`OpCode::Other`] and get `EBADREQ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    AddEntry,
    ReadEntry,
    ReadLac,
    WriteLac,
    Other(u8),
}

impl OpCode {
    pub fn from_u8(code: u8) -> OpCode {
        match code {
            1 => OpCode::AddEntry,
            2 => OpCode::ReadEntry,
            4 => OpCode::ReadLac,
            5 => OpCode::WriteLac,
            other => OpCode::Other(other),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            OpCode::AddEntry => 1,
            OpCode::ReadEntry => 2,
            OpCode::ReadLac => 4,
            OpCode::WriteLac => 5,
            OpCode::Other(code) => code,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OpCode::AddEntry => "add",
            OpCode::ReadEntry => "read",
            OpCode::ReadLac => "read_lac",
            OpCode::WriteLac => "write_lac",
            OpCode::Other(_) => "unknown",
        }
    }
}

/// A decoded packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    pub version: u8,
    pub op: OpCode,
    pub flags: u16,
}

impl PacketHeader {
    pub fn new(op: OpCode, flags: u16) -> PacketHeader {
        PacketHeader {
            version: PROTOCOL_VERSION,
            op,
            flags,
        }
    }

    pub fn encode(self) -> [u8; PACKET_HEADER_BYTES] {
        let word = u32::from(self.version) << 24 | u32::from(self.op.to_u8()) << 16 | u32::from(self.flags);
        word.to_be_bytes()
    }

    /// The caller passes at least [`PACKET_HEADER_BYTES`] bytes.
    pub fn decode(bytes: &[u8]) -> PacketHeader {
        let word = crate::be_u32(bytes, 0);
        PacketHeader {
            version: (word >> 24) as u8,
            op: OpCode::from_u8((word >> 16) as u8),
            flags: word as u16,
        }
    }

    pub fn has(self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_word_is_bookkeepers_layout() {
        let h = PacketHeader::new(OpCode::ReadEntry, FLAG_DO_FENCING);
        assert_eq!(h.encode(), [2, 2, 0, 1]);
        assert_eq!(PacketHeader::decode(&h.encode()), h);
        let add = PacketHeader::new(OpCode::AddEntry, FLAG_RECOVERY_ADD | FLAG_HIGH_PRIORITY);
        assert_eq!(add.encode(), [2, 1, 0, 6]);
        assert_eq!(PacketHeader::decode(&[2, 9, 0, 0]).op, OpCode::Other(9));
    }
}
