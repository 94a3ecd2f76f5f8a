//! Transaction-log records, one journal record per zxid. A write is logged as the request it was (with its
//! ACLs resolved), so replay runs it through the same [`State::apply_write`](crate::state::State) again; a
//! failed write is logged as just its zxid, because ZooKeeper spends a zxid on it and clients may have seen
//! that zxid in a reply.

use logtank_zk::jute::{Reader, Writer};
use logtank_zk::{DecodeError, Request};

use crate::state::SessionMeta;

const KIND_REQUEST: u8 = 1;
const KIND_CREATE_SESSION: u8 = 2;
const KIND_CLOSE_SESSION: u8 = 3;
const KIND_ERROR: u8 = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnBody {
    Request(Request),
    CreateSession(SessionMeta),
    /// An explicit closeSession or an expiry: the session's ephemerals go.
    CloseSession,
    /// A write that failed with this error code; only its zxid matters.
    Error(i32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub zxid: i64,
    pub time_ms: i64,
    pub session: i64,
    pub body: TxnBody,
}

impl Txn {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        let kind = match &self.body {
            TxnBody::Request(_) => KIND_REQUEST,
            TxnBody::CreateSession(_) => KIND_CREATE_SESSION,
            TxnBody::CloseSession => KIND_CLOSE_SESSION,
            TxnBody::Error(_) => KIND_ERROR,
        };
        w.buf.push(kind);
        w.i64(self.zxid).i64(self.time_ms).i64(self.session);
        match &self.body {
            TxnBody::Request(req) => {
                w.i32(req.opcode());
                req.encode_body(&mut w);
            }
            TxnBody::CreateSession(meta) => {
                w.i32(meta.timeout_ms).buffer(Some(&meta.password));
            }
            TxnBody::CloseSession => {}
            TxnBody::Error(code) => {
                w.i32(*code);
            }
        }
        w.buf
    }

    pub fn decode(bytes: &[u8]) -> Result<Txn, DecodeError> {
        let (&kind, rest) = bytes
            .split_first()
            .ok_or(DecodeError::Truncated { what: "txn kind" })?;
        let mut r = Reader::new(rest);
        let (zxid, time_ms, session) = (r.i64()?, r.i64()?, r.i64()?);
        let body = match kind {
            KIND_REQUEST => {
                let opcode = r.i32()?;
                TxnBody::Request(Request::decode_body(opcode, &mut r)?)
            }
            KIND_CREATE_SESSION => {
                let timeout_ms = r.i32()?;
                let pw = r.buffer()?.unwrap_or_default();
                let password: [u8; 16] = pw.try_into().map_err(|_| DecodeError::BadLength {
                    what: "password",
                    len: pw.len() as i64,
                })?;
                TxnBody::CreateSession(SessionMeta { timeout_ms, password })
            }
            KIND_CLOSE_SESSION => TxnBody::CloseSession,
            KIND_ERROR => TxnBody::Error(r.i32()?),
            other => {
                return Err(DecodeError::BadLength {
                    what: "txn kind",
                    len: i64::from(other),
                })
            }
        };
        Ok(Txn {
            zxid,
            time_ms,
            session,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txns_round_trip() {
        for body in [
            TxnBody::Request(Request::Delete {
                path: "/a".into(),
                version: 3,
            }),
            TxnBody::CreateSession(SessionMeta {
                timeout_ms: 4000,
                password: [7; 16],
            }),
            TxnBody::CloseSession,
            TxnBody::Error(-101),
        ] {
            let t = Txn {
                zxid: 5,
                time_ms: 6,
                session: 7,
                body,
            };
            assert_eq!(Txn::decode(&t.encode()).unwrap(), t);
        }
        assert!(Txn::decode(&[9, 0]).is_err());
    }
}
