//! Return codes: BookKeeper's v2 values (`BookieProtocol.EOK` …), so an operator who knows BookKeeper reads
//! them the same way.

/// A response's return code. A newtype rather than an enum: a peer may send any `int32`, and an unknown
/// code must reach the caller as itself, not as a decode failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub i32);

impl Status {
    pub const EOK: Status = Status(0);
    /// The bookie holds nothing of this ledger.
    pub const ENOLEDGER: Status = Status(1);
    /// The bookie holds the ledger but not this entry.
    pub const ENOENTRY: Status = Status(2);
    /// The request is malformed (also: an add whose digest does not match its bytes, an unknown opcode).
    pub const EBADREQ: Status = Status(100);
    /// The bookie could not read or write its disk.
    pub const EIO: Status = Status(101);
    /// The master key does not match the ledger's.
    pub const EUA: Status = Status(102);
    pub const EBADVERSION: Status = Status(103);
    /// The ledger is fenced: a recovery took it over and plain adds are refused.
    pub const EFENCED: Status = Status(104);
    /// The bookie is readonly and refuses adds.
    pub const EREADONLY: Status = Status(105);
    /// The connection already has as many requests in flight as the bookie allows.
    pub const ETOOMANYREQUESTS: Status = Status(106);
    pub const EUNKNOWNLEDGERSTATE: Status = Status(107);

    pub fn is_ok(self) -> bool {
        self == Status::EOK
    }

    pub fn name(self) -> &'static str {
        match self {
            Status::EOK => "EOK",
            Status::ENOLEDGER => "ENOLEDGER",
            Status::ENOENTRY => "ENOENTRY",
            Status::EBADREQ => "EBADREQ",
            Status::EIO => "EIO",
            Status::EUA => "EUA",
            Status::EBADVERSION => "EBADVERSION",
            Status::EFENCED => "EFENCED",
            Status::EREADONLY => "EREADONLY",
            Status::ETOOMANYREQUESTS => "ETOOMANYREQUESTS",
            Status::EUNKNOWNLEDGERSTATE => "EUNKNOWNLEDGERSTATE",
            _ => "unknown status",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}
