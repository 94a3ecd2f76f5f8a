//! Jute, ZooKeeper's record encoding: big-endian integers, length-prefixed strings and buffers (`-1` is
//! null), count-prefixed vectors. Records are their fields concatenated, no tags, no padding.
//!
//! Every length read from the peer is checked against the bytes actually left in the frame before anything
//! is allocated, so a hostile length costs an error, never memory.

use crate::DecodeError;

/// Reads jute fields from one frame's bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unread rest of the frame.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated { what });
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.take(4, "int")?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        let b = self.take(8, "long")?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.take(1, "boolean")?[0] != 0)
    }

    /// A length-prefixed byte string; `None` for jute's null (`-1`).
    pub fn buffer(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            return Err(DecodeError::BadLength {
                what: "buffer",
                len: i64::from(len),
            });
        }
        let len = len as usize;
        if len > self.remaining() {
            return Err(DecodeError::BadLength {
                what: "buffer",
                len: len as i64,
            });
        }
        Ok(Some(self.take(len, "buffer")?))
    }

    /// A UTF-8 string. Null reads as the empty string, which every path check then rejects.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        match self.buffer()? {
            None => Ok(String::new()),
            Some(bytes) => String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8),
        }
    }

    /// A vector's element count; `None` for null. The count is bounded by the bytes left (every element
    /// takes at least `min_element_bytes`).
    pub fn vec_len(&mut self, min_element_bytes: usize) -> Result<Option<usize>, DecodeError> {
        let count = self.i32()?;
        if count == -1 {
            return Ok(None);
        }
        if count < 0 || (count as usize).saturating_mul(min_element_bytes.max(1)) > self.remaining() {
            return Err(DecodeError::BadLength {
                what: "vector",
                len: i64::from(count),
            });
        }
        Ok(Some(count as usize))
    }

    pub fn strings(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.vec_len(4)?.unwrap_or(0);
        (0..n).map(|_| self.string()).collect()
    }
}

/// Appends jute fields to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            buf: Vec::with_capacity(64),
        }
    }

    /// A writer whose first 4 bytes are reserved for the frame length (see [`Writer::finish_frame`]).
    pub fn frame() -> Self {
        let mut w = Writer {
            buf: Vec::with_capacity(128),
        };
        w.buf.extend_from_slice(&[0; 4]);
        w
    }

    /// Fills in the reserved length prefix and returns the whole frame.
    pub fn finish_frame(mut self) -> Vec<u8> {
        let len = (self.buf.len() - 4) as i32;
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        self.buf
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.buf.push(u8::from(v));
        self
    }

    pub fn buffer(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            None => self.i32(-1),
            Some(b) => {
                self.i32(b.len() as i32);
                self.buf.extend_from_slice(b);
                self
            }
        }
    }

    pub fn string(&mut self, s: &str) -> &mut Self {
        self.buffer(Some(s.as_bytes()))
    }

    pub fn strings<S: AsRef<str>>(&mut self, v: &[S]) -> &mut Self {
        self.i32(v.len() as i32);
        for s in v {
            self.string(s.as_ref());
        }
        self
    }
}
