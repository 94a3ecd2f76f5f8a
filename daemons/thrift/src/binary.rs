//! Apache Thrift's binary protocol, the primitive layer: big-endian integers, IEEE-754 doubles, `i32`
//! length-prefixed strings, field headers (`type:u8 id:i16`), container headers and strict message headers
//! (`0x8001_0000 | type`, name, seqid). No IO: a [`Reader`] walks a byte slice, a [`Writer`] appends to a
//! `Vec<u8>`.
//!
//! Every length the peer declares is checked against [`Limits`] before anything is allocated. A length
//! within the limits that runs past the end of the bytes we have is [`DecodeError::Incomplete`] (on a stream
//! more bytes may come); one that would carry the message past `message_bytes_max` is
//! [`DecodeError::Invalid`] at once, so a hostile length costs an error, never memory or a long wait.

use crate::DecodeError;

/// Wire type ids (`TType`).
pub mod ttype {
    pub const STOP: u8 = 0;
    pub const VOID: u8 = 1;
    pub const BOOL: u8 = 2;
    pub const BYTE: u8 = 3;
    pub const DOUBLE: u8 = 4;
    pub const I16: u8 = 6;
    pub const I32: u8 = 8;
    pub const I64: u8 = 10;
    pub const STRING: u8 = 11;
    pub const STRUCT: u8 = 12;
    pub const MAP: u8 = 13;
    pub const SET: u8 = 14;
    pub const LIST: u8 = 15;
    /// Thrift 0.19+; we never write it but skip it like any other type.
    pub const UUID: u8 = 16;

    /// The type's name for error messages.
    pub fn name(t: u8) -> &'static str {
        match t {
            STOP => "stop",
            VOID => "void",
            BOOL => "bool",
            BYTE => "byte",
            DOUBLE => "double",
            I16 => "i16",
            I32 => "i32",
            I64 => "i64",
            STRING => "string",
            STRUCT => "struct",
            MAP => "map",
            SET => "set",
            LIST => "list",
            UUID => "uuid",
            _ => "unknown type",
        }
    }

    /// The fewest bytes one value of this type takes on the wire (`None`: not a value type). Used to bound a
    /// container's declared count by the bytes it needs before walking or allocating anything.
    pub fn min_bytes(t: u8) -> Option<usize> {
        Some(match t {
            BOOL | BYTE => 1,
            I16 => 2,
            I32 => 4,
            DOUBLE | I64 => 8,
            STRING => 4,
            STRUCT => 1,
            MAP => 6,
            SET | LIST => 5,
            UUID => 16,
            _ => return None,
        })
    }

    /// The exact size of a fixed-width type (containers of these are skipped in one step).
    pub fn fixed_bytes(t: u8) -> Option<usize> {
        match t {
            BOOL | BYTE | I16 | I32 | DOUBLE | I64 | UUID => min_bytes(t),
            _ => None,
        }
    }
}

/// Message types of the strict header's low byte.
pub mod message_type {
    pub const CALL: u8 = 1;
    pub const REPLY: u8 = 2;
    pub const EXCEPTION: u8 = 3;
    pub const ONEWAY: u8 = 4;
}

/// The strict header's version word; the low byte carries the message type.
pub const VERSION_1: u32 = 0x8001_0000;
const VERSION_MASK: u32 = 0xffff_0000;

/// One message: a whole `send_batch` or `read_page` reply. IndexTank caps one record at 10 MB and its
/// pages are small; 64 MiB leaves room for large batches while bounding one connection's buffer.
pub const MESSAGE_BYTES_MAX: usize = 64 << 20;
/// One string (a document's field value, a docid). Larger than any document IndexTank's API accepts.
pub const STRING_BYTES_MAX: usize = 16 << 20;
/// One list, set or map. Each element takes at least one byte, so the message limit bounds the count
/// too; this catches absurd counts before any walking.
pub const CONTAINER_LEN_MAX: usize = 10_000_000;
/// Nesting of structs and containers when skipping unknown fields. Our own structs nest 5 deep; 64 bounds
/// the recursion (and the stack) against a peer that nests lists forever.
pub const DEPTH_MAX: usize = 64;
/// A method name. Ours are at most 26 bytes; anything much longer is garbage, not a call to answer.
pub const METHOD_NAME_BYTES_MAX: usize = 256;
/// Elements reserved up front for a decoded list: a count is only a claim until the bytes arrive, so
/// larger lists grow as elements are actually decoded.
pub const PREALLOC_ELEMENTS_MAX: usize = 4096;

const _: () = assert!(STRING_BYTES_MAX <= MESSAGE_BYTES_MAX);
// Lengths travel as i32: a message longer than that could not be described on the wire.
const _: () = assert!(MESSAGE_BYTES_MAX <= i32::MAX as usize);
const _: () = assert!(METHOD_NAME_BYTES_MAX <= STRING_BYTES_MAX);

/// The bounds a decoder enforces on peer-declared sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub message_bytes_max: usize,
    pub string_bytes_max: usize,
    pub container_len_max: usize,
    pub depth_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            message_bytes_max: MESSAGE_BYTES_MAX,
            string_bytes_max: STRING_BYTES_MAX,
            container_len_max: CONTAINER_LEN_MAX,
            depth_max: DEPTH_MAX,
        }
    }
}

/// A strict message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader<'a> {
    pub name: &'a str,
    pub message_type: u8,
    pub seqid: i32,
}

/// Reads binary-protocol values from a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset nothing of the current message may reach past; running into it proves the input invalid.
    end_max: usize,
    /// True when `buf` is all there is: running past its end is then invalid, not incomplete.
    complete: bool,
    limits: Limits,
}

impl<'a> Reader<'a> {
    /// A reader over the start of a stream: the bytes may continue beyond `buf`, and one message (or
    /// record) may take up to `limits.message_bytes_max` bytes from offset 0.
    pub fn new(buf: &'a [u8], limits: &Limits) -> Self {
        Reader {
            buf,
            pos: 0,
            end_max: limits.message_bytes_max,
            complete: false,
            limits: *limits,
        }
    }

    /// A reader over bytes known to be whole (e.g. a body already delimited): a length that runs past the
    /// end of `buf` is invalid.
    pub fn new_complete(buf: &'a [u8], limits: &Limits) -> Self {
        Reader {
            complete: true,
            ..Reader::new(buf, limits)
        }
    }

    /// A stream reader resuming at `pos` inside a message that began at `message_start`.
    pub(crate) fn resume(buf: &'a [u8], message_start: usize, pos: usize, limits: &Limits) -> Self {
        Reader {
            buf,
            pos,
            end_max: message_start.saturating_add(limits.message_bytes_max),
            complete: false,
            limits: *limits,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet (of those we have).
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The bytes read since offset `start` (a span to copy without re-encoding).
    pub fn since(&self, start: usize) -> &'a [u8] {
        &self.buf[start.min(self.pos)..self.pos]
    }

    /// Fails unless `n` more bytes are available: `Invalid` if they would carry the message past its
    /// limit (or past the end of complete input), `Incomplete` if they merely have not arrived yet.
    pub fn need(&self, n: usize, what: &str) -> Result<(), DecodeError> {
        let end = self.pos.saturating_add(n);
        if end <= self.buf.len() {
            return Ok(());
        }
        if end > self.end_max {
            return Err(DecodeError::Invalid(format!(
                "{what} of {n} bytes at offset {} would end past the message limit of {} bytes",
                self.pos, self.end_max
            )));
        }
        if self.complete {
            return Err(DecodeError::Invalid(format!(
                "{what} of {n} bytes at offset {} runs past the end of the data ({} bytes left)",
                self.pos,
                self.remaining()
            )));
        }
        Err(DecodeError::Incomplete)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        self.need(n, what)?;
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    pub fn read_byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>("byte")?[0])
    }

    pub fn read_i8(&mut self) -> Result<i8, DecodeError> {
        Ok(i8::from_be_bytes(self.array("byte")?))
    }

    pub fn read_i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array("i16")?))
    }

    pub fn read_i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array("i32")?))
    }

    pub fn read_i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array("i64")?))
    }

    pub fn read_double(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_be_bytes(self.array("double")?))
    }

    /// Any non-zero byte is true, as every Thrift library reads it.
    pub fn read_bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.read_byte()? != 0)
    }

    /// A length-prefixed byte string, bounded by `string_bytes_max`.
    pub fn read_binary(&mut self) -> Result<&'a [u8], DecodeError> {
        self.read_binary_max(self.limits.string_bytes_max, "string")
    }

    fn read_binary_max(&mut self, max: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let len = self.read_i32()?;
        let len = usize::try_from(len)
            .map_err(|_| DecodeError::Invalid(format!("negative {what} length {len}")))?;
        if len > max {
            return Err(DecodeError::Invalid(format!(
                "{what} length {len} exceeds the limit of {max} bytes"
            )));
        }
        self.take(len, what)
    }

    /// A length-prefixed UTF-8 string, borrowed from the input.
    pub fn read_string(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.read_binary()?;
        std::str::from_utf8(bytes)
            .map_err(|e| DecodeError::Invalid(format!("string is not valid UTF-8 ({e})")))
    }

    /// A field header; `None` for the STOP byte that ends a struct.
    pub fn read_field_header(&mut self) -> Result<Option<(u8, i16)>, DecodeError> {
        let t = self.read_byte()?;
        if t == ttype::STOP {
            return Ok(None);
        }
        Ok(Some((t, self.read_i16()?)))
    }

    /// A container's count, checked against the limits and against the bytes its elements need at least
    /// (`min_element_bytes` each), so that nothing is walked or reserved for a count the input cannot hold.
    fn container_len(&mut self, what: &str, min_element_bytes: usize) -> Result<usize, DecodeError> {
        let count = self.read_i32()?;
        let n = usize::try_from(count)
            .map_err(|_| DecodeError::Invalid(format!("negative {what} size {count}")))?;
        if n > self.limits.container_len_max {
            return Err(DecodeError::Invalid(format!(
                "{what} size {n} exceeds the limit of {} elements",
                self.limits.container_len_max
            )));
        }
        let bytes = n.saturating_mul(min_element_bytes);
        // The context is formatted only on failure: this runs for every list and map of every record, and an
        // eager `format!` here was 7–16 % of the writer's and the recovery client's CPU (docs/benchmarks.md).
        if self.pos.saturating_add(bytes) > self.buf.len() {
            self.need(bytes, &format!("{what} of {n} elements"))?;
        }
        Ok(n)
    }

    fn element_min_bytes(t: u8, what: &str) -> Result<usize, DecodeError> {
        ttype::min_bytes(t)
            .ok_or_else(|| DecodeError::Invalid(format!("{what} element type {t} is not a value type")))
    }

    /// A list header: element type and count. An empty list may declare any element type (some writers
    /// do not care); a non-empty one must declare a value type.
    pub fn read_list_header(&mut self) -> Result<(u8, usize), DecodeError> {
        self.read_seq_header("list")
    }

    pub fn read_set_header(&mut self) -> Result<(u8, usize), DecodeError> {
        self.read_seq_header("set")
    }

    fn read_seq_header(&mut self, what: &str) -> Result<(u8, usize), DecodeError> {
        let t = self.read_byte()?;
        // Peek the count first: an empty container's element type is not checked.
        self.need(4, what)?;
        let peek = i32::from_be_bytes([
            self.buf[self.pos],
            self.buf[self.pos + 1],
            self.buf[self.pos + 2],
            self.buf[self.pos + 3],
        ]);
        let min = if peek > 0 {
            Self::element_min_bytes(t, what)?
        } else {
            1
        };
        Ok((t, self.container_len(what, min)?))
    }

    /// A map header: key type, value type and count.
    pub fn read_map_header(&mut self) -> Result<(u8, u8, usize), DecodeError> {
        let k = self.read_byte()?;
        let v = self.read_byte()?;
        self.need(4, "map")?;
        let peek = i32::from_be_bytes([
            self.buf[self.pos],
            self.buf[self.pos + 1],
            self.buf[self.pos + 2],
            self.buf[self.pos + 3],
        ]);
        let min = if peek > 0 {
            Self::element_min_bytes(k, "map key")? + Self::element_min_bytes(v, "map value")?
        } else {
            1
        };
        Ok((k, v, self.container_len("map", min)?))
    }

    /// A strict message header. A non-strict (unversioned) header is refused: IndexTank's servers and
    /// clients speak strict only, and a first word without the version bit is far more likely garbage.
    pub fn read_message_header(&mut self) -> Result<MessageHeader<'a>, DecodeError> {
        let version = self.read_i32()? as u32;
        if version & 0x8000_0000 == 0 {
            return Err(DecodeError::Invalid(format!(
                "message starts with 0x{version:08x}, not a strict binary-protocol header (0x8001000N): \
                 only the strict binary protocol, unframed, is spoken here"
            )));
        }
        if version & VERSION_MASK != VERSION_1 {
            return Err(DecodeError::Invalid(format!(
                "bad protocol version 0x{:08x} in the message header (expected 0x{VERSION_1:08x})",
                version & VERSION_MASK
            )));
        }
        let message_type = (version & 0xff) as u8;
        if !(message_type::CALL..=message_type::ONEWAY).contains(&message_type) {
            return Err(DecodeError::Invalid(format!(
                "unknown message type {message_type} in the message header"
            )));
        }
        let name = self.read_binary_max(METHOD_NAME_BYTES_MAX, "method name")?;
        let name = std::str::from_utf8(name)
            .map_err(|_| DecodeError::Invalid("method name is not valid UTF-8".to_string()))?;
        let seqid = self.read_i32()?;
        Ok(MessageHeader {
            name,
            message_type,
            seqid,
        })
    }

    /// Skips one value of wire type `t`, however nested, up to `depth_max` levels.
    pub fn skip(&mut self, t: u8) -> Result<(), DecodeError> {
        self.skip_at(t, 0)
    }

    fn skip_at(&mut self, t: u8, depth: usize) -> Result<(), DecodeError> {
        if let Some(n) = ttype::fixed_bytes(t) {
            self.take(n, ttype::name(t))?;
            return Ok(());
        }
        match t {
            ttype::STRING => {
                self.read_binary()?;
            }
            ttype::STRUCT | ttype::MAP | ttype::SET | ttype::LIST => {
                if depth >= self.limits.depth_max {
                    return Err(DecodeError::Invalid(format!(
                        "values nested deeper than {} levels",
                        self.limits.depth_max
                    )));
                }
                match t {
                    ttype::STRUCT => {
                        while let Some((ft, _)) = self.read_field_header()? {
                            self.skip_at(ft, depth + 1)?;
                        }
                    }
                    ttype::MAP => {
                        let (k, v, n) = self.read_map_header()?;
                        match (ttype::fixed_bytes(k), ttype::fixed_bytes(v)) {
                            // The header check already proved the bytes are there (or not yet).
                            (Some(a), Some(b)) => {
                                self.take(n * (a + b), "map")?;
                            }
                            _ => {
                                for _ in 0..n {
                                    self.skip_at(k, depth + 1)?;
                                    self.skip_at(v, depth + 1)?;
                                }
                            }
                        }
                    }
                    _ => {
                        let (e, n) = self.read_seq_header(ttype::name(t))?;
                        match ttype::fixed_bytes(e) {
                            Some(a) => {
                                self.take(n * a, ttype::name(t))?;
                            }
                            None => {
                                for _ in 0..n {
                                    self.skip_at(e, depth + 1)?;
                                }
                            }
                        }
                    }
                }
            }
            _ => return Err(DecodeError::Invalid(format!("unknown wire type {t}"))),
        }
        Ok(())
    }
}

/// Where a scan stands inside one nesting level.
#[derive(Debug, Clone, Copy)]
enum Frame {
    /// Inside a struct: next is a field header or STOP.
    Struct,
    /// Inside a list or set: `left` elements of type `elem` to go.
    Seq { elem: u8, left: usize },
    /// Inside a map: `left` entries to go; `value_next` when the key of the current one is done.
    Map {
        key: u8,
        value: u8,
        left: usize,
        value_next: bool,
    },
}

/// Finds where one message (strict header + one struct) ends in a buffer that grows at the end, without
/// walking again what it has already walked: a stream that delivers a large message in many small reads
/// costs one pass over its bytes, not one per read. It only skips (nothing is allocated but its own stack,
/// bounded by `depth_max`); the same checks as [`Reader::skip`] apply.
///
/// Call [`MessageScanner::scan`] with the same buffer (grown, never drained) until it returns the end;
/// then start a new scanner for the next message.
#[derive(Debug, Clone, Default)]
pub struct MessageScanner {
    /// Set once the header has been read: the body's scan state.
    body: Option<BodyScan>,
}

#[derive(Debug, Clone)]
struct BodyScan {
    /// Offset of the next unread byte.
    pos: usize,
    stack: Vec<Frame>,
}

impl MessageScanner {
    pub fn new() -> Self {
        MessageScanner::default()
    }

    /// `Ok(Some(end))`: `buf[..end]` is one whole message. `Ok(None)`: not yet. `Err`: never will be
    /// (the `Invalid` message says why); `Incomplete` is never returned as an error.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, DecodeError> {
        let body = match &mut self.body {
            Some(b) if b.pos <= buf.len() => b,
            _ => {
                let mut r = Reader::new(buf, limits);
                match r.read_message_header() {
                    Ok(_) => {}
                    Err(DecodeError::Incomplete) => return Ok(None),
                    Err(e) => return Err(e),
                }
                self.body.insert(BodyScan {
                    pos: r.position(),
                    stack: vec![Frame::Struct],
                })
            }
        };
        match body.advance(buf, limits) {
            Err(DecodeError::Incomplete) => Ok(None),
            other => other.map(Some),
        }
    }
}

impl BodyScan {
    /// Walks as far as the bytes go; `Ok(end)` once the outermost struct's STOP is read.
    fn advance(&mut self, buf: &[u8], limits: &Limits) -> Result<usize, DecodeError> {
        loop {
            let Some(top) = self.stack.last().copied() else {
                return Ok(self.pos);
            };
            let mut r = Reader::resume(buf, 0, self.pos, limits);
            // The type of the next value, after taking the field header if the level is a struct.
            let t = match top {
                Frame::Struct => match r.read_field_header()? {
                    None => {
                        self.pos = r.position();
                        self.stack.pop();
                        continue;
                    }
                    Some((t, _)) => t,
                },
                Frame::Seq { left: 0, .. } | Frame::Map { left: 0, .. } => {
                    self.stack.pop();
                    continue;
                }
                Frame::Seq { elem, left } => {
                    if let Some(size) = ttype::fixed_bytes(elem) {
                        // Fixed-width elements: take every whole one that has arrived in one step.
                        let k = (r.remaining() / size).min(left);
                        if k == 0 {
                            r.need(size, ttype::name(elem))?;
                        }
                        self.pos += k * size;
                        self.set_left(left - k);
                        continue;
                    }
                    elem
                }
                Frame::Map {
                    key,
                    value,
                    left,
                    value_next,
                } => {
                    if let (Some(a), Some(b), false) =
                        (ttype::fixed_bytes(key), ttype::fixed_bytes(value), value_next)
                    {
                        let k = (r.remaining() / (a + b)).min(left);
                        if k == 0 {
                            r.need(a + b, "map entry")?;
                        }
                        self.pos += k * (a + b);
                        self.set_left(left - k);
                        continue;
                    }
                    if value_next {
                        value
                    } else {
                        key
                    }
                }
            };
            let pushed = Self::value(&mut r, t)?;
            // The value (and its field header) is complete: commit.
            self.pos = r.position();
            match self.stack.last_mut() {
                Some(Frame::Seq { left, .. }) => *left -= 1,
                Some(Frame::Map { left, value_next, .. }) => {
                    if *value_next {
                        *left -= 1;
                    }
                    *value_next = !*value_next;
                }
                _ => {}
            }
            if let Some(frame) = pushed {
                if self.stack.len() >= limits.depth_max {
                    return Err(DecodeError::Invalid(format!(
                        "values nested deeper than {} levels",
                        limits.depth_max
                    )));
                }
                self.stack.push(frame);
            }
        }
    }

    fn set_left(&mut self, n: usize) {
        if let Some(Frame::Seq { left, .. } | Frame::Map { left, .. }) = self.stack.last_mut() {
            *left = n;
        }
    }

    /// Takes one value of type `t`, or the header of a nested level (returned as the frame to enter).
    fn value(r: &mut Reader<'_>, t: u8) -> Result<Option<Frame>, DecodeError> {
        if let Some(n) = ttype::fixed_bytes(t) {
            r.take(n, ttype::name(t))?;
            return Ok(None);
        }
        Ok(match t {
            ttype::STRING => {
                r.read_binary()?;
                None
            }
            ttype::STRUCT => Some(Frame::Struct),
            ttype::LIST | ttype::SET => {
                let (elem, left) = r.read_seq_header(ttype::name(t))?;
                Some(Frame::Seq { elem, left })
            }
            ttype::MAP => {
                let (key, value, left) = r.read_map_header()?;
                Some(Frame::Map {
                    key,
                    value,
                    left,
                    value_next: false,
                })
            }
            _ => return Err(DecodeError::Invalid(format!("unknown wire type {t}"))),
        })
    }
}

/// Appends binary-protocol values to a byte vector.
#[derive(Debug)]
pub struct Writer<'a> {
    pub out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Writer { out }
    }

    pub fn byte(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }

    pub fn i8(&mut self, v: i8) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn double(&mut self, v: f64) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.byte(u8::from(v))
    }

    /// A length the wire carries as i32. Nothing we encode comes near 2 GiB (a message is at most
    /// [`MESSAGE_BYTES_MAX`]); a larger one is a bug in the caller, so it stops here rather than wrap.
    pub fn len(&mut self, n: usize) -> &mut Self {
        let n = i32::try_from(n).expect("a Thrift length fits in i32");
        self.i32(n)
    }

    pub fn binary(&mut self, v: &[u8]) -> &mut Self {
        self.len(v.len());
        self.out.extend_from_slice(v);
        self
    }

    pub fn string(&mut self, v: &str) -> &mut Self {
        self.binary(v.as_bytes())
    }

    /// Bytes already in the binary protocol (encoded structs), copied as they are.
    pub fn bytes(&mut self, encoded: &[u8]) -> &mut Self {
        self.out.extend_from_slice(encoded);
        self
    }

    pub fn field(&mut self, t: u8, id: i16) -> &mut Self {
        self.byte(t).i16(id)
    }

    /// Ends a struct.
    pub fn stop(&mut self) -> &mut Self {
        self.byte(ttype::STOP)
    }

    pub fn list_header(&mut self, elem: u8, n: usize) -> &mut Self {
        self.byte(elem).len(n)
    }

    pub fn map_header(&mut self, k: u8, v: u8, n: usize) -> &mut Self {
        self.byte(k).byte(v).len(n)
    }

    /// A strict message header.
    pub fn message_header(&mut self, name: &str, message_type: u8, seqid: i32) -> &mut Self {
        self.i32((VERSION_1 | u32::from(message_type)) as i32);
        self.string(name).i32(seqid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A declared string length beyond the limit is invalid at once, without waiting for the bytes.
    #[test]
    fn huge_string_length_is_invalid_not_incomplete() {
        let bytes = i32::MAX.to_be_bytes();
        let err = Reader::new(&bytes, &Limits::default()).read_binary().unwrap_err();
        assert_eq!(
            err,
            DecodeError::Invalid("string length 2147483647 exceeds the limit of 16777216 bytes".into())
        );
    }

    /// A length within the limits whose bytes have not arrived is incomplete on a stream, invalid on
    /// complete input.
    #[test]
    fn short_string_is_incomplete_on_a_stream() {
        let mut bytes = 10i32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        assert_eq!(
            Reader::new(&bytes, &Limits::default()).read_binary(),
            Err(DecodeError::Incomplete)
        );
        assert!(matches!(
            Reader::new_complete(&bytes, &Limits::default()).read_binary(),
            Err(DecodeError::Invalid(_))
        ));
    }

    /// A count whose minimal size would pass the message limit is invalid at once.
    #[test]
    fn container_count_beyond_message_limit_is_invalid() {
        let limits = Limits {
            message_bytes_max: 1000,
            ..Limits::default()
        };
        let mut bytes = vec![ttype::I64];
        bytes.extend_from_slice(&200i32.to_be_bytes());
        assert!(matches!(
            Reader::new(&bytes, &limits).read_list_header(),
            Err(DecodeError::Invalid(_))
        ));
        let mut bytes = vec![ttype::I64];
        bytes.extend_from_slice(&100i32.to_be_bytes());
        assert_eq!(
            Reader::new(&bytes, &limits).read_list_header(),
            Err(DecodeError::Incomplete)
        );
    }

    /// Skipping stops at the depth limit instead of recursing without bound.
    #[test]
    fn skip_depth_is_bounded() {
        let mut bytes = Vec::new();
        for _ in 0..100 {
            bytes.push(ttype::LIST);
            bytes.extend_from_slice(&1i32.to_be_bytes());
        }
        let err = Reader::new(&bytes, &Limits::default())
            .skip(ttype::LIST)
            .unwrap_err();
        assert!(err.to_string().contains("nested deeper than 64"), "{err}");
    }

    /// Message headers round-trip, and unversioned ones are refused.
    #[test]
    fn message_header() {
        let mut out = Vec::new();
        Writer::new(&mut out).message_header("read_page", message_type::CALL, 7);
        let h = Reader::new(&out, &Limits::default())
            .read_message_header()
            .unwrap();
        assert_eq!(
            h,
            MessageHeader {
                name: "read_page",
                message_type: 1,
                seqid: 7
            }
        );
        let old = [0, 0, 0, 9, b'r'];
        assert!(matches!(
            Reader::new(&old, &Limits::default()).read_message_header(),
            Err(DecodeError::Invalid(_))
        ));
    }
}
