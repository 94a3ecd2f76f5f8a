//! The little of RESP (the Redis protocol) the benchmark speaks, as pure functions: commands encoded as
//! arrays of bulk strings, replies parsed from a buffer ("incomplete" until a whole reply is there). No IO,
//! so the load loop owns the socket and this module is unit-tested on bytes.

/// The longest simple string, error or number line accepted (Redis's are a few dozen bytes).
pub const LINE_BYTES_MAX: usize = 64 << 10;
/// The largest bulk string accepted (an `INFO` reply is a few KiB; XADD answers an id).
pub const BULK_BYTES_MAX: usize = 16 << 20;
/// The most elements of an array reply accepted.
pub const ARRAY_LEN_MAX: usize = 1 << 20;
/// Nesting of arrays accepted.
pub const DEPTH_MAX: usize = 8;

/// Appends one command, an array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail; the numbers are formatted without an allocation.
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let a = a.as_ref();
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// One reply, as much of it as the benchmark needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, `+PONG`.
    Simple(String),
    /// `-ERR …`: the command failed.
    Error(String),
    Integer(i64),
    /// `$…`; `None` is the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*…`; `None` is the null array.
    Array(Option<Vec<Reply>>),
}

/// Why bytes are not a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid RESP reply: {}", self.0)
    }
}

impl std::error::Error for Invalid {}

/// Parses the reply at the start of `buf`: `Ok(None)` until it is complete, else the reply and the bytes
/// it took.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, Invalid> {
    parse_at(buf, 0, 0)
}

/// The reply starting at `at` and the position just after it.
fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Reply, usize)>, Invalid> {
    if depth > DEPTH_MAX {
        return Err(Invalid(format!("arrays nested deeper than {DEPTH_MAX}")));
    }
    let Some((line, after)) = line_at(buf, at)? else {
        return Ok(None);
    };
    let Some((&kind, rest)) = line.split_first() else {
        return Err(Invalid("an empty line".into()));
    };
    let text = || String::from_utf8_lossy(rest).into_owned();
    let reply = match kind {
        b'+' => (Reply::Simple(text()), after),
        b'-' => (Reply::Error(text()), after),
        b':' => (Reply::Integer(number(rest)?), after),
        b'$' => match number(rest)? {
            -1 => (Reply::Bulk(None), after),
            n if n < 0 || n as usize > BULK_BYTES_MAX => {
                return Err(Invalid(format!("a bulk string of {n} bytes")))
            }
            n => {
                let end = after + n as usize;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(Invalid("a bulk string not followed by CRLF".into()));
                }
                (Reply::Bulk(Some(buf[after..end].to_vec())), end + 2)
            }
        },
        b'*' => match number(rest)? {
            -1 => (Reply::Array(None), after),
            n if n < 0 || n as usize > ARRAY_LEN_MAX => {
                return Err(Invalid(format!("an array of {n} elements")))
            }
            n => {
                let mut items = Vec::with_capacity((n as usize).min(1024));
                let mut pos = after;
                for _ in 0..n {
                    let Some((item, next)) = parse_at(buf, pos, depth + 1)? else {
                        return Ok(None);
                    };
                    items.push(item);
                    pos = next;
                }
                (Reply::Array(Some(items)), pos)
            }
        },
        other => return Err(Invalid(format!("unknown type byte {other:#04x}"))),
    };
    Ok(Some(reply))
}

/// The line starting at `at` (without its CRLF) and where the next one starts; `None` if incomplete.
fn line_at(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, Invalid> {
    let window = &buf[at.min(buf.len())..];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i > LINE_BYTES_MAX => Err(Invalid(format!("a line longer than {LINE_BYTES_MAX} bytes"))),
        Some(i) => Ok(Some((&window[..i], at + i + 2))),
        None if window.len() > LINE_BYTES_MAX => {
            Err(Invalid(format!("a line longer than {LINE_BYTES_MAX} bytes")))
        }
        None => Ok(None),
    }
}

fn number(digits: &[u8]) -> Result<i64, Invalid> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Invalid(format!("{:?} is not a number", String::from_utf8_lossy(digits))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn encodes_a_command() {
        // The bytes Redis's own clients send for a command.
        let mut out = Vec::new();
        encode_command(&mut out, &["XADD", "s", "*", "k", ""]);
        assert_eq!(
            out,
            b"*5\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n$1\r\nk\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn parses_each_kind_and_says_how_much_it_took() {
        // Every reply kind, followed by the start of another reply that must be left alone.
        let cases: Vec<(&[u8], Reply)> = vec![
            (b"+PONG\r\n", Reply::Simple("PONG".into())),
            (b"-ERR wrong\r\n", Reply::Error("ERR wrong".into())),
            (b":42\r\n", Reply::Integer(42)),
            (
                b"$15\r\n1700000000000-0\r\n",
                Reply::Bulk(Some(b"1700000000000-0".to_vec())),
            ),
            (b"$-1\r\n", Reply::Bulk(None)),
            (b"*-1\r\n", Reply::Array(None)),
            (
                b"*2\r\n$1\r\na\r\n:1\r\n",
                Reply::Array(Some(vec![Reply::Bulk(Some(b"a".to_vec())), Reply::Integer(1)])),
            ),
        ];
        for (bytes, want) in cases {
            let mut buf = bytes.to_vec();
            buf.extend_from_slice(b"+NEXT");
            assert_eq!(parse_reply(&buf).unwrap(), Some((want, bytes.len())), "{bytes:?}");
        }
    }

    #[test]
    fn every_prefix_is_incomplete() {
        // A reply cut anywhere is "incomplete", never an error or a wrong reply.
        let whole = b"*2\r\n$15\r\n1700000000000-0\r\n-ERR x\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse_reply(&whole[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(parse_reply(whole).unwrap().is_some());
    }

    #[test]
    fn refuses_what_is_not_resp() {
        // Garbage, bad lengths and a missing CRLF are errors, not hangs.
        for bad in [
            &b"?x\r\n"[..],
            b"$abc\r\n",
            b"$-5\r\n",
            b"$1\r\nab\r\n",
            b"*-2\r\n",
            b"\r\n",
        ] {
            assert!(parse_reply(bad).is_err(), "{bad:?}");
        }
        let long = vec![b'+'; LINE_BYTES_MAX + 10];
        assert!(parse_reply(&long).is_err());
    }
}
