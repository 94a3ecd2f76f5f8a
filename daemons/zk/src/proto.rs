//! ZooKeeper's records (`zookeeper.jute`) as Rust types, with the decoders a server needs for requests and
//! the encoders it needs for replies (plus the reverse pair, so tests and tools can speak the client side).

use crate::jute::{Reader, Writer};
use crate::DecodeError;

/// Opcodes (`ZooDefs.OpCode`).
pub mod op {
    pub const NOTIFICATION: i32 = 0;
    pub const CREATE: i32 = 1;
    pub const DELETE: i32 = 2;
    pub const EXISTS: i32 = 3;
    pub const GET_DATA: i32 = 4;
    pub const SET_DATA: i32 = 5;
    pub const GET_ACL: i32 = 6;
    pub const SET_ACL: i32 = 7;
    pub const GET_CHILDREN: i32 = 8;
    pub const SYNC: i32 = 9;
    pub const PING: i32 = 11;
    pub const GET_CHILDREN2: i32 = 12;
    pub const CHECK: i32 = 13;
    pub const MULTI: i32 = 14;
    pub const CREATE2: i32 = 15;
    pub const RECONFIG: i32 = 16;
    pub const CHECK_WATCHES: i32 = 17;
    pub const REMOVE_WATCHES: i32 = 18;
    pub const CREATE_CONTAINER: i32 = 19;
    pub const DELETE_CONTAINER: i32 = 20;
    pub const CREATE_TTL: i32 = 21;
    pub const MULTI_READ: i32 = 22;
    pub const AUTH: i32 = 100;
    pub const SET_WATCHES: i32 = 101;
    pub const SASL: i32 = 102;
    pub const GET_EPHEMERALS: i32 = 103;
    pub const GET_ALL_CHILDREN_NUMBER: i32 = 104;
    pub const SET_WATCHES2: i32 = 105;
    pub const ADD_WATCH: i32 = 106;
    pub const WHO_AM_I: i32 = 107;
    pub const CREATE_SESSION: i32 = -10;
    pub const CLOSE_SESSION: i32 = -11;
    pub const ERROR: i32 = -1;
}

/// Error codes (`KeeperException.Code`) a server sends.
pub mod err {
    pub const OK: i32 = 0;
    pub const SYSTEM_ERROR: i32 = -1;
    pub const RUNTIME_INCONSISTENCY: i32 = -2;
    pub const MARSHALLING_ERROR: i32 = -5;
    pub const UNIMPLEMENTED: i32 = -6;
    pub const BAD_ARGUMENTS: i32 = -8;
    pub const NO_NODE: i32 = -101;
    pub const NO_AUTH: i32 = -102;
    pub const BAD_VERSION: i32 = -103;
    pub const NO_CHILDREN_FOR_EPHEMERALS: i32 = -108;
    pub const NODE_EXISTS: i32 = -110;
    pub const NOT_EMPTY: i32 = -111;
    pub const SESSION_EXPIRED: i32 = -112;
    pub const INVALID_ACL: i32 = -114;
    pub const AUTH_FAILED: i32 = -115;
    /// A state-changing request sent to a read-only server.
    pub const NOT_READONLY: i32 = -119;
    pub const NO_WATCHER: i32 = -121;
    pub const RECONFIG_DISABLED: i32 = -123;
    pub const QUOTA_EXCEEDED: i32 = -125;
    pub const THROTTLED_OP: i32 = -127;
}

/// Special xids.
pub mod xid {
    pub const NOTIFICATION: i32 = -1;
    pub const PING: i32 = -2;
    pub const AUTH: i32 = -4;
    pub const SET_WATCHES: i32 = -8;
}

/// ACL permission bits (`ZooDefs.Perms`).
pub mod perms {
    pub const READ: i32 = 1;
    pub const WRITE: i32 = 2;
    pub const CREATE: i32 = 4;
    pub const DELETE: i32 = 8;
    pub const ADMIN: i32 = 16;
    pub const ALL: i32 = 31;
}

/// Watcher event types (`Watcher.Event.EventType`).
pub mod event {
    pub const NONE: i32 = -1;
    pub const NODE_CREATED: i32 = 1;
    pub const NODE_DELETED: i32 = 2;
    pub const NODE_DATA_CHANGED: i32 = 3;
    pub const NODE_CHILDREN_CHANGED: i32 = 4;
    pub const DATA_WATCH_REMOVED: i32 = 5;
    pub const CHILD_WATCH_REMOVED: i32 = 6;
    pub const PERSISTENT_WATCH_REMOVED: i32 = 7;
    /// The only keeper state a server puts in a notification.
    pub const STATE_SYNC_CONNECTED: i32 = 3;
}

/// Bytes a `Stat` takes on the wire.
pub const STAT_BYTES: usize = 68;
/// Password length every client accepts (the C client reads exactly 16 bytes).
pub const PASSWORD_BYTES: usize = 16;

/// A znode's metadata as clients see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    pub pzxid: i64,
}

impl Stat {
    pub fn encode(&self, w: &mut Writer) {
        w.i64(self.czxid).i64(self.mzxid).i64(self.ctime).i64(self.mtime);
        w.i32(self.version).i32(self.cversion).i32(self.aversion);
        w.i64(self.ephemeral_owner)
            .i32(self.data_length)
            .i32(self.num_children)
            .i64(self.pzxid);
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Stat, DecodeError> {
        Ok(Stat {
            czxid: r.i64()?,
            mzxid: r.i64()?,
            ctime: r.i64()?,
            mtime: r.i64()?,
            version: r.i32()?,
            cversion: r.i32()?,
            aversion: r.i32()?,
            ephemeral_owner: r.i64()?,
            data_length: r.i32()?,
            num_children: r.i32()?,
            pzxid: r.i64()?,
        })
    }
}

/// An identity: `world:anyone`, `digest:user:hash`, `ip:1.2.3.4`, `auth:` (the creator's ids), `super:…`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id {
    pub scheme: String,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Acl {
    pub perms: i32,
    pub id: Id,
}

impl Acl {
    pub fn world_all() -> Acl {
        Acl {
            perms: perms::ALL,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }
    }
}

pub fn decode_acls(r: &mut Reader<'_>) -> Result<Vec<Acl>, DecodeError> {
    // An ACL takes at least 12 bytes (perms + two string lengths).
    let n = r.vec_len(12)?.unwrap_or(0);
    (0..n)
        .map(|_| {
            Ok(Acl {
                perms: r.i32()?,
                id: Id {
                    scheme: r.string()?,
                    id: r.string()?,
                },
            })
        })
        .collect()
}

pub fn encode_acls(w: &mut Writer, acls: &[Acl]) {
    w.i32(acls.len() as i32);
    for a in acls {
        w.i32(a.perms).string(&a.id.scheme).string(&a.id.id);
    }
}

/// `ConnectRequest` plus the `readOnly` byte newer clients append (absent in the 44-byte old form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    pub protocol_version: i32,
    pub last_zxid_seen: i64,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub password: Vec<u8>,
    /// `None` for an old client that sent no `readOnly` byte; its reply must omit the byte too.
    pub read_only: Option<bool>,
}

impl ConnectRequest {
    pub fn decode(payload: &[u8]) -> Result<ConnectRequest, DecodeError> {
        let mut r = Reader::new(payload);
        let req = ConnectRequest {
            protocol_version: r.i32()?,
            last_zxid_seen: r.i64()?,
            timeout_ms: r.i32()?,
            session_id: r.i64()?,
            password: r.buffer()?.unwrap_or_default().to_vec(),
            read_only: if r.is_empty() { None } else { Some(r.bool()?) },
        };
        Ok(req)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::frame();
        w.i32(self.protocol_version)
            .i64(self.last_zxid_seen)
            .i32(self.timeout_ms)
            .i64(self.session_id);
        w.buffer(Some(&self.password));
        if let Some(ro) = self.read_only {
            w.bool(ro);
        }
        w.finish_frame()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectResponse {
    pub timeout_ms: i32,
    pub session_id: i64,
    pub password: [u8; PASSWORD_BYTES],
    /// Whether to append the `readOnly` byte (only for clients that sent one).
    pub with_read_only: bool,
}

impl ConnectResponse {
    /// The reply to an unknown or expired session: timeout 0, id 0, a zero password.
    pub fn expired(with_read_only: bool) -> ConnectResponse {
        ConnectResponse {
            timeout_ms: 0,
            session_id: 0,
            password: [0; PASSWORD_BYTES],
            with_read_only,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::frame();
        w.i32(0)
            .i32(self.timeout_ms)
            .i64(self.session_id)
            .buffer(Some(&self.password));
        if self.with_read_only {
            w.bool(false);
        }
        w.finish_frame()
    }

    /// Decodes a handshake reply payload, as a client reads it. A password of any length other than
    /// [`PASSWORD_BYTES`] is invalid (every server sends 16 bytes, or none for a refused session, which reads
    /// as zeros).
    pub fn decode(payload: &[u8]) -> Result<ConnectResponse, DecodeError> {
        let mut r = Reader::new(payload);
        let _protocol_version = r.i32()?;
        let timeout_ms = r.i32()?;
        let session_id = r.i64()?;
        let mut password = [0; PASSWORD_BYTES];
        match r.buffer()? {
            None | Some([]) => {}
            Some(p) if p.len() == PASSWORD_BYTES => password.copy_from_slice(p),
            Some(p) => {
                return Err(DecodeError::BadLength {
                    what: "password",
                    len: p.len() as i64,
                })
            }
        }
        let with_read_only = !r.is_empty();
        if with_read_only {
            r.bool()?;
        }
        Ok(ConnectResponse {
            timeout_ms,
            session_id,
            password,
            with_read_only,
        })
    }
}

/// Which create opcode a create came in as: it decides the reply body and which flags are legal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateKind {
    Create,
    Create2,
    Container,
    Ttl,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub kind: CreateKind,
    pub path: String,
    pub data: Option<Vec<u8>>,
    pub acl: Vec<Acl>,
    pub flags: i32,
    /// Only for `createTTL`.
    pub ttl_ms: i64,
}

/// A write that may appear inside `multi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiOp {
    Create(CreateRequest),
    Delete {
        path: String,
        version: i32,
    },
    SetData {
        path: String,
        data: Option<Vec<u8>>,
        version: i32,
    },
    Check {
        path: String,
        version: i32,
    },
}

impl MultiOp {
    pub fn opcode(&self) -> i32 {
        match self {
            MultiOp::Create(c) => create_opcode(c.kind),
            MultiOp::Delete { .. } => op::DELETE,
            MultiOp::SetData { .. } => op::SET_DATA,
            MultiOp::Check { .. } => op::CHECK,
        }
    }

    pub fn path(&self) -> &str {
        match self {
            MultiOp::Create(c) => &c.path,
            MultiOp::Delete { path, .. } | MultiOp::SetData { path, .. } | MultiOp::Check { path, .. } => {
                path
            }
        }
    }
}

/// A read that may appear inside `multiRead`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOp {
    GetChildren { path: String },
    GetData { path: String },
}

fn create_opcode(kind: CreateKind) -> i32 {
    match kind {
        CreateKind::Create => op::CREATE,
        CreateKind::Create2 => op::CREATE2,
        CreateKind::Container => op::CREATE_CONTAINER,
        CreateKind::Ttl => op::CREATE_TTL,
    }
}

/// Every request a client can send after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    CloseSession,
    Create(CreateRequest),
    Delete {
        path: String,
        version: i32,
    },
    /// `deleteContainer` is server-internal in ZooKeeper; a client sending it is treated as a delete.
    DeleteContainer {
        path: String,
    },
    Exists {
        path: String,
        watch: bool,
    },
    GetData {
        path: String,
        watch: bool,
    },
    SetData {
        path: String,
        data: Option<Vec<u8>>,
        version: i32,
    },
    GetAcl {
        path: String,
    },
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
    GetChildren {
        path: String,
        watch: bool,
    },
    GetChildren2 {
        path: String,
        watch: bool,
    },
    Sync {
        path: String,
    },
    Check {
        path: String,
        version: i32,
    },
    Multi(Vec<MultiOp>),
    MultiRead(Vec<ReadOp>),
    Reconfig,
    CheckWatches {
        path: String,
        watch_type: i32,
    },
    RemoveWatches {
        path: String,
        watch_type: i32,
    },
    Auth {
        scheme: String,
        auth: Vec<u8>,
    },
    SetWatches(SetWatches),
    Sasl {
        token: Vec<u8>,
    },
    GetEphemerals {
        prefix: String,
    },
    GetAllChildrenNumber {
        path: String,
    },
    AddWatch {
        path: String,
        mode: i32,
    },
    WhoAmI,
    /// An opcode this server does not know: answered with UNIMPLEMENTED, the connection stays open.
    Unknown(i32),
}

/// `SetWatches` / `SetWatches2`: the watches a reconnecting client had.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetWatches {
    pub relative_zxid: i64,
    pub data: Vec<String>,
    pub exist: Vec<String>,
    pub child: Vec<String>,
    pub persistent: Vec<String>,
    pub persistent_recursive: Vec<String>,
}

/// A request frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub xid: i32,
    pub opcode: i32,
}

impl Request {
    /// Decodes one request frame (header and body).
    pub fn decode(payload: &[u8]) -> Result<(RequestHeader, Request), DecodeError> {
        let mut r = Reader::new(payload);
        let header = RequestHeader {
            xid: r.i32()?,
            opcode: r.i32()?,
        };
        let req = Request::decode_body(header.opcode, &mut r)?;
        Ok((header, req))
    }

    /// Decodes a request body for `opcode`. Trailing bytes are tolerated, as ZooKeeper does.
    pub fn decode_body(opcode: i32, r: &mut Reader<'_>) -> Result<Request, DecodeError> {
        let req = match opcode {
            op::PING => Request::Ping,
            op::CLOSE_SESSION => Request::CloseSession,
            op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
                Request::Create(decode_create(opcode, r)?)
            }
            op::DELETE => Request::Delete {
                path: r.string()?,
                version: r.i32()?,
            },
            op::DELETE_CONTAINER => Request::DeleteContainer { path: r.string()? },
            op::EXISTS => Request::Exists {
                path: r.string()?,
                watch: r.bool()?,
            },
            op::GET_DATA => Request::GetData {
                path: r.string()?,
                watch: r.bool()?,
            },
            op::SET_DATA => Request::SetData {
                path: r.string()?,
                data: owned(r.buffer()?),
                version: r.i32()?,
            },
            op::GET_ACL => Request::GetAcl { path: r.string()? },
            op::SET_ACL => Request::SetAcl {
                path: r.string()?,
                acl: decode_acls(r)?,
                version: r.i32()?,
            },
            op::GET_CHILDREN => Request::GetChildren {
                path: r.string()?,
                watch: r.bool()?,
            },
            op::GET_CHILDREN2 => Request::GetChildren2 {
                path: r.string()?,
                watch: r.bool()?,
            },
            op::SYNC => Request::Sync { path: r.string()? },
            op::CHECK => Request::Check {
                path: r.string()?,
                version: r.i32()?,
            },
            op::MULTI => Request::Multi(decode_multi(r)?),
            op::MULTI_READ => Request::MultiRead(decode_multi_read(r)?),
            op::RECONFIG => Request::Reconfig,
            op::CHECK_WATCHES => Request::CheckWatches {
                path: r.string()?,
                watch_type: r.i32()?,
            },
            op::REMOVE_WATCHES => Request::RemoveWatches {
                path: r.string()?,
                watch_type: r.i32()?,
            },
            op::AUTH => {
                let _type = r.i32()?;
                Request::Auth {
                    scheme: r.string()?,
                    auth: owned(r.buffer()?).unwrap_or_default(),
                }
            }
            op::SET_WATCHES | op::SET_WATCHES2 => {
                let mut sw = SetWatches {
                    relative_zxid: r.i64()?,
                    data: r.strings()?,
                    exist: r.strings()?,
                    child: r.strings()?,
                    ..SetWatches::default()
                };
                if opcode == op::SET_WATCHES2 {
                    sw.persistent = r.strings()?;
                    sw.persistent_recursive = r.strings()?;
                }
                Request::SetWatches(sw)
            }
            op::SASL => Request::Sasl {
                token: owned(r.buffer()?).unwrap_or_default(),
            },
            op::GET_EPHEMERALS => Request::GetEphemerals { prefix: r.string()? },
            op::GET_ALL_CHILDREN_NUMBER => Request::GetAllChildrenNumber { path: r.string()? },
            op::ADD_WATCH => Request::AddWatch {
                path: r.string()?,
                mode: r.i32()?,
            },
            op::WHO_AM_I => Request::WhoAmI,
            other => Request::Unknown(other),
        };
        Ok(req)
    }

    /// Whether this request changes the tree (and so takes a zxid and a transaction-log record).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Create(_)
                | Request::Delete { .. }
                | Request::DeleteContainer { .. }
                | Request::SetData { .. }
                | Request::SetAcl { .. }
                | Request::Check { .. }
                | Request::Multi(_)
                | Request::CloseSession
        )
    }

    /// Encodes this request as a client would send it (tests, tools, the transaction log).
    pub fn encode_body(&self, w: &mut Writer) {
        match self {
            Request::Ping
            | Request::CloseSession
            | Request::Reconfig
            | Request::WhoAmI
            | Request::Unknown(_) => {}
            Request::Create(c) => encode_create(w, c),
            Request::Delete { path, version } => {
                w.string(path).i32(*version);
            }
            Request::DeleteContainer { path }
            | Request::GetAcl { path }
            | Request::Sync { path }
            | Request::GetEphemerals { prefix: path }
            | Request::GetAllChildrenNumber { path } => {
                w.string(path);
            }
            Request::Exists { path, watch }
            | Request::GetData { path, watch }
            | Request::GetChildren { path, watch }
            | Request::GetChildren2 { path, watch } => {
                w.string(path).bool(*watch);
            }
            Request::SetData { path, data, version } => {
                w.string(path).buffer(data.as_deref()).i32(*version);
            }
            Request::SetAcl { path, acl, version } => {
                w.string(path);
                encode_acls(w, acl);
                w.i32(*version);
            }
            Request::Check { path, version } => {
                w.string(path).i32(*version);
            }
            Request::Multi(ops) => {
                for o in ops {
                    w.i32(o.opcode()).bool(false).i32(-1);
                    match o {
                        MultiOp::Create(c) => encode_create(w, c),
                        MultiOp::Delete { path, version } | MultiOp::Check { path, version } => {
                            w.string(path).i32(*version);
                        }
                        MultiOp::SetData { path, data, version } => {
                            w.string(path).buffer(data.as_deref()).i32(*version);
                        }
                    }
                }
                w.i32(-1).bool(true).i32(-1);
            }
            Request::MultiRead(ops) => {
                for o in ops {
                    let (code, path) = match o {
                        ReadOp::GetChildren { path } => (op::GET_CHILDREN, path),
                        ReadOp::GetData { path } => (op::GET_DATA, path),
                    };
                    w.i32(code).bool(false).i32(-1).string(path).bool(false);
                }
                w.i32(-1).bool(true).i32(-1);
            }
            Request::CheckWatches { path, watch_type } | Request::RemoveWatches { path, watch_type } => {
                w.string(path).i32(*watch_type);
            }
            Request::Auth { scheme, auth } => {
                w.i32(0).string(scheme).buffer(Some(auth));
            }
            Request::SetWatches(sw) => {
                w.i64(sw.relative_zxid)
                    .strings(&sw.data)
                    .strings(&sw.exist)
                    .strings(&sw.child);
                if !sw.persistent.is_empty() || !sw.persistent_recursive.is_empty() {
                    w.strings(&sw.persistent).strings(&sw.persistent_recursive);
                }
            }
            Request::Sasl { token } => {
                w.buffer(Some(token));
            }
            Request::AddWatch { path, mode } => {
                w.string(path).i32(*mode);
            }
        }
    }

    /// The opcode this request is sent with.
    pub fn opcode(&self) -> i32 {
        match self {
            Request::Ping => op::PING,
            Request::CloseSession => op::CLOSE_SESSION,
            Request::Create(c) => create_opcode(c.kind),
            Request::Delete { .. } => op::DELETE,
            Request::DeleteContainer { .. } => op::DELETE_CONTAINER,
            Request::Exists { .. } => op::EXISTS,
            Request::GetData { .. } => op::GET_DATA,
            Request::SetData { .. } => op::SET_DATA,
            Request::GetAcl { .. } => op::GET_ACL,
            Request::SetAcl { .. } => op::SET_ACL,
            Request::GetChildren { .. } => op::GET_CHILDREN,
            Request::GetChildren2 { .. } => op::GET_CHILDREN2,
            Request::Sync { .. } => op::SYNC,
            Request::Check { .. } => op::CHECK,
            Request::Multi(_) => op::MULTI,
            Request::MultiRead(_) => op::MULTI_READ,
            Request::Reconfig => op::RECONFIG,
            Request::CheckWatches { .. } => op::CHECK_WATCHES,
            Request::RemoveWatches { .. } => op::REMOVE_WATCHES,
            Request::Auth { .. } => op::AUTH,
            Request::SetWatches(sw) => {
                if sw.persistent.is_empty() && sw.persistent_recursive.is_empty() {
                    op::SET_WATCHES
                } else {
                    op::SET_WATCHES2
                }
            }
            Request::Sasl { .. } => op::SASL,
            Request::GetEphemerals { .. } => op::GET_EPHEMERALS,
            Request::GetAllChildrenNumber { .. } => op::GET_ALL_CHILDREN_NUMBER,
            Request::AddWatch { .. } => op::ADD_WATCH,
            Request::WhoAmI => op::WHO_AM_I,
            Request::Unknown(code) => *code,
        }
    }
}

fn owned(b: Option<&[u8]>) -> Option<Vec<u8>> {
    b.map(<[u8]>::to_vec)
}

fn decode_create(opcode: i32, r: &mut Reader<'_>) -> Result<CreateRequest, DecodeError> {
    let kind = match opcode {
        op::CREATE => CreateKind::Create,
        op::CREATE2 => CreateKind::Create2,
        op::CREATE_CONTAINER => CreateKind::Container,
        _ => CreateKind::Ttl,
    };
    let path = r.string()?;
    let data = owned(r.buffer()?);
    let acl = decode_acls(r)?;
    let flags = r.i32()?;
    let ttl_ms = if kind == CreateKind::Ttl { r.i64()? } else { 0 };
    Ok(CreateRequest {
        kind,
        path,
        data,
        acl,
        flags,
        ttl_ms,
    })
}

fn encode_create(w: &mut Writer, c: &CreateRequest) {
    w.string(&c.path).buffer(c.data.as_deref());
    encode_acls(w, &c.acl);
    w.i32(c.flags);
    if c.kind == CreateKind::Ttl {
        w.i64(c.ttl_ms);
    }
}

/// Upper bound on the ops in one multi: a frame of 1 MiB cannot hold more headers than this anyway.
pub const MULTI_OPS_MAX: usize = 1 << 17;

/// The framing `multi` and `multiRead` share: `MultiHeader{type, done, err}` before each op, a `done`
/// header at the end. `decode_op` reads one op of the given type.
fn decode_multi_ops<T>(
    r: &mut Reader<'_>,
    what: &'static str,
    mut decode_op: impl FnMut(i32, &mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let mut ops = Vec::new();
    loop {
        let (opcode, done) = (r.i32()?, r.bool()?);
        let _err = r.i32()?;
        if done {
            return Ok(ops);
        }
        if ops.len() >= MULTI_OPS_MAX {
            return Err(DecodeError::BadLength {
                what,
                len: ops.len() as i64,
            });
        }
        ops.push(decode_op(opcode, r)?);
    }
}

fn decode_multi(r: &mut Reader<'_>) -> Result<Vec<MultiOp>, DecodeError> {
    decode_multi_ops(r, "multi", |opcode, r| {
        Ok(match opcode {
            op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
                MultiOp::Create(decode_create(opcode, r)?)
            }
            op::DELETE => MultiOp::Delete {
                path: r.string()?,
                version: r.i32()?,
            },
            op::SET_DATA => MultiOp::SetData {
                path: r.string()?,
                data: owned(r.buffer()?),
                version: r.i32()?,
            },
            op::CHECK => MultiOp::Check {
                path: r.string()?,
                version: r.i32()?,
            },
            other => return Err(DecodeError::BadMultiOp(other)),
        })
    })
}

fn decode_multi_read(r: &mut Reader<'_>) -> Result<Vec<ReadOp>, DecodeError> {
    decode_multi_ops(r, "multiRead", |opcode, r| {
        let o = match opcode {
            op::GET_CHILDREN => ReadOp::GetChildren { path: r.string()? },
            op::GET_DATA => ReadOp::GetData { path: r.string()? },
            other => return Err(DecodeError::BadMultiOp(other)),
        };
        let _watch = r.bool()?;
        Ok(o)
    })
}

/// One `ClientInfo` of a whoAmI reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub auth_scheme: String,
    pub user: String,
}

/// One result inside a multi or multiRead reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiResult {
    Create { path: String },
    Create2 { path: String, stat: Stat },
    Delete,
    SetData { stat: Stat },
    Check,
    GetData { data: Option<Vec<u8>>, stat: Stat },
    GetChildren { children: Vec<String> },
    Error(i32),
}

/// A successful reply's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Header-only replies (delete, ping, setWatches, removeWatches, auth, closeSession).
    Empty,
    Create {
        path: String,
    },
    Create2 {
        path: String,
        stat: Stat,
    },
    /// exists, setData, setACL, check.
    Stat(Stat),
    GetData {
        data: Option<Vec<u8>>,
        stat: Stat,
    },
    GetAcl {
        acl: Vec<Acl>,
        stat: Stat,
    },
    Children(Vec<String>),
    Children2 {
        children: Vec<String>,
        stat: Stat,
    },
    Sync {
        path: String,
    },
    Multi(Vec<MultiResult>),
    Strings(Vec<String>),
    Number(i32),
    /// addWatch replies with an `ErrorResponse{0}` body.
    ErrorBody(i32),
    WhoAmI(Vec<ClientInfo>),
    Sasl {
        token: Vec<u8>,
    },
}

impl Response {
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Response::Empty => {}
            Response::Create { path } | Response::Sync { path } => {
                w.string(path);
            }
            Response::Create2 { path, stat } => {
                w.string(path);
                stat.encode(w);
            }
            Response::Stat(stat) => stat.encode(w),
            Response::GetData { data, stat } => {
                w.buffer(data.as_deref());
                stat.encode(w);
            }
            Response::GetAcl { acl, stat } => {
                encode_acls(w, acl);
                stat.encode(w);
            }
            Response::Children(c) | Response::Strings(c) => {
                w.strings(c);
            }
            Response::Children2 { children, stat } => {
                w.strings(children);
                stat.encode(w);
            }
            Response::Multi(results) => {
                for res in results {
                    encode_multi_result(w, res);
                }
                w.i32(-1).bool(true).i32(-1);
            }
            Response::Number(n) | Response::ErrorBody(n) => {
                w.i32(*n);
            }
            Response::WhoAmI(infos) => {
                w.i32(infos.len() as i32);
                for i in infos {
                    w.string(&i.auth_scheme).string(&i.user);
                }
            }
            Response::Sasl { token } => {
                w.buffer(Some(token));
            }
        }
    }
}

fn encode_multi_result(w: &mut Writer, res: &MultiResult) {
    match res {
        MultiResult::Create { path } => {
            w.i32(op::CREATE).bool(false).i32(0).string(path);
        }
        MultiResult::Create2 { path, stat } => {
            w.i32(op::CREATE2).bool(false).i32(0).string(path);
            stat.encode(w);
        }
        MultiResult::Delete => {
            w.i32(op::DELETE).bool(false).i32(0);
        }
        MultiResult::SetData { stat } => {
            w.i32(op::SET_DATA).bool(false).i32(0);
            stat.encode(w);
        }
        MultiResult::Check => {
            w.i32(op::CHECK).bool(false).i32(0);
        }
        MultiResult::GetData { data, stat } => {
            w.i32(op::GET_DATA).bool(false).i32(0).buffer(data.as_deref());
            stat.encode(w);
        }
        MultiResult::GetChildren { children } => {
            w.i32(op::GET_CHILDREN).bool(false).i32(0).strings(children);
        }
        MultiResult::Error(code) => {
            w.i32(op::ERROR).bool(false).i32(*code).i32(*code);
        }
    }
}

/// A reply frame's header: the request's xid (or a special one, [`xid`]), the server's last zxid, the error
/// code (`0` when a body follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
}

impl ReplyHeader {
    /// Bytes a reply header takes on the wire.
    pub const BYTES: usize = 16;

    /// Decodes the header of a reply payload, as a client reads it; `r` is left at the body.
    pub fn decode(r: &mut Reader<'_>) -> Result<ReplyHeader, DecodeError> {
        Ok(ReplyHeader {
            xid: r.i32()?,
            zxid: r.i64()?,
            err: r.i32()?,
        })
    }
}

/// Encodes a whole reply frame: header, then the body when `err == 0`.
pub fn encode_reply(xid: i32, zxid: i64, err: i32, body: &Response) -> Vec<u8> {
    let mut w = Writer::frame();
    w.i32(xid).i64(zxid).i32(err);
    if err == 0 {
        body.encode(&mut w);
    }
    w.finish_frame()
}

/// Encodes a watch notification frame (xid -1, zxid -1).
pub fn encode_notification(event_type: i32, path: &str) -> Vec<u8> {
    let mut w = Writer::frame();
    w.i32(xid::NOTIFICATION).i64(-1).i32(0);
    w.i32(event_type).i32(event::STATE_SYNC_CONNECTED).string(path);
    w.finish_frame()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_request_both_forms() {
        let mut req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 7,
            timeout_ms: 30000,
            session_id: 0,
            password: vec![0; 16],
            read_only: Some(false),
        };
        let frame = req.encode();
        assert_eq!(frame.len(), 4 + 45);
        assert_eq!(ConnectRequest::decode(&frame[4..]).unwrap(), req);
        req.read_only = None;
        let frame = req.encode();
        assert_eq!(frame.len(), 4 + 44);
        assert_eq!(ConnectRequest::decode(&frame[4..]).unwrap(), req);
        let resp = ConnectResponse::expired(true).encode();
        assert_eq!(resp.len(), 4 + 37);
        assert_eq!(ConnectResponse::expired(false).encode().len(), 4 + 36);
    }

    #[test]
    fn client_side_decoders_read_what_the_server_encodes() {
        // A client reads back the handshake reply in both forms and a reply header with its body after it.
        for with_read_only in [true, false] {
            let resp = ConnectResponse {
                timeout_ms: 10_000,
                session_id: 0x1234,
                password: [7; 16],
                with_read_only,
            };
            let frame = resp.encode();
            assert_eq!(ConnectResponse::decode(&frame[4..]).unwrap(), resp);
        }
        let mut w = Writer::new();
        w.i32(0).i32(0).i64(0).i32(3).buf.extend_from_slice(b"abc");
        assert!(ConnectResponse::decode(&w.buf).is_err());
        let frame = encode_reply(9, 0x55, 0, &Response::Create { path: "/a".into() });
        let mut r = Reader::new(&frame[4..]);
        assert_eq!(
            ReplyHeader::decode(&mut r).unwrap(),
            ReplyHeader {
                xid: 9,
                zxid: 0x55,
                err: 0
            }
        );
        assert_eq!(r.string().unwrap(), "/a");
        assert_eq!(r.remaining(), 0);
        let frame = encode_reply(3, 7, err::NO_NODE, &Response::Empty);
        assert_eq!(frame.len(), 4 + ReplyHeader::BYTES);
        let mut r = Reader::new(&frame[4..]);
        assert_eq!(ReplyHeader::decode(&mut r).unwrap().err, err::NO_NODE);
        assert!(ReplyHeader::decode(&mut Reader::new(&frame[4..12])).is_err());
    }

    #[test]
    fn requests_round_trip() {
        let reqs = vec![
            Request::Create(CreateRequest {
                kind: CreateKind::Ttl,
                path: "/a".into(),
                data: None,
                acl: vec![Acl::world_all()],
                flags: 5,
                ttl_ms: 100,
            }),
            Request::Multi(vec![
                MultiOp::Check {
                    path: "/x".into(),
                    version: 3,
                },
                MultiOp::SetData {
                    path: "/y".into(),
                    data: Some(b"d".to_vec()),
                    version: -1,
                },
                MultiOp::Delete {
                    path: "/z".into(),
                    version: 1,
                },
            ]),
            Request::MultiRead(vec![ReadOp::GetData { path: "/a".into() }]),
            Request::SetWatches(SetWatches {
                relative_zxid: 9,
                data: vec!["/d".into()],
                persistent: vec!["/p".into()],
                ..SetWatches::default()
            }),
            Request::Auth {
                scheme: "digest".into(),
                auth: b"u:p".to_vec(),
            },
        ];
        for req in reqs {
            let mut w = Writer::new();
            w.i32(5).i32(req.opcode());
            req.encode_body(&mut w);
            let (h, back) = Request::decode(&w.buf).unwrap();
            assert_eq!(h.xid, 5);
            assert_eq!(back, req);
        }
    }

    #[test]
    fn hostile_lengths_are_errors_not_allocations() {
        let mut w = Writer::new();
        w.i32(1).i32(op::SET_ACL).string("/a").i32(i32::MAX);
        assert!(Request::decode(&w.buf).is_err());
        let mut w = Writer::new();
        w.i32(1).i32(op::GET_DATA).i32(1_000_000);
        assert!(Request::decode(&w.buf).is_err());
    }

    #[test]
    fn failed_multi_reply_matches_zookeeper_bytes() {
        // Reply observed from ZooKeeper 3.8 for a multi whose second op failed with BADVERSION.
        let body = Response::Multi(vec![
            MultiResult::Error(0),
            MultiResult::Error(err::BAD_VERSION),
            MultiResult::Error(err::RUNTIME_INCONSISTENCY),
        ]);
        let mut w = Writer::new();
        body.encode(&mut w);
        let hex: String = w.buf.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "ffffffff000000000000000000ffffffff00ffffff99ffffff99ffffffff00fffffffefffffffeffffffff01ffffffff"
        );
    }
}
