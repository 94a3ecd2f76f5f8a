//! The replicated state: the tree, the sessions, the last zxid, and the rules that turn a write request
//! into a new state and a reply. It is a pure state machine: no IO, no clock (the caller passes zxid and
//! time), so the live server and transaction-log replay run exactly the same code.
//!
//! Checks follow ZooKeeper's `PrepRequestProcessor` order, so the same bad request gets the same error
//! code from coordd as from ZooKeeper (e.g. a create under a missing parent is NONODE even if its own name
//! is also invalid).

use std::collections::BTreeMap;
use std::sync::Arc;

use logtank_zk::{err, perms, Acl, CreateKind, CreateRequest, MultiOp, MultiResult, Request, Response, Stat};

use crate::acl::AuthIds;
use crate::tree::{self, DataTree, Trigger, CONTAINER_OWNER, TTL_MS_MAX, TTL_OWNER_MASK};

/// A session as persisted: what a reconnecting client must present, and its negotiated timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionMeta {
    pub timeout_ms: i32,
    pub password: [u8; 16],
}

#[derive(Debug, Clone, Default)]
pub struct State {
    pub tree: DataTree,
    pub sessions: BTreeMap<i64, SessionMeta>,
    pub last_zxid: i64,
    pub ttl_enabled: bool,
}

/// Who is asking. `auth: None` is transaction-log replay: the request was checked when it was first
/// accepted, and the log holds it with its ACLs already resolved.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub session: i64,
    pub auth: Option<&'a AuthIds>,
}

impl Caller<'_> {
    fn allows(&self, acl: &[Acl], perm: i32) -> bool {
        self.auth.is_none_or(|a| a.allows(acl, perm))
    }
}

/// The outcome of one write: the reply's error code and body, and what watches it fires.
#[derive(Debug)]
pub struct WriteOutcome {
    pub err: i32,
    pub response: Response,
    pub triggers: Vec<Trigger>,
    /// Whether the write changed the state. A failed multi replies OK (its per-op results say what
    /// failed) but changed nothing, so it must be logged as a failed write: logged as a request, replay
    /// (which checks no ACLs) would apply what was refused live.
    pub applied: bool,
}

fn is_special(path: &str) -> bool {
    tree::SYSTEM_PATHS.contains(&path) || path == "/"
}

fn check_version(expected: i32, current: i32) -> Result<(), i32> {
    if expected != -1 && expected != current {
        Err(err::BAD_VERSION)
    } else {
        Ok(())
    }
}

impl State {
    pub fn new(ttl_enabled: bool) -> State {
        State {
            ttl_enabled,
            ..State::default()
        }
    }

    /// Resolves what must be resolved before a request goes into the log (the `auth` ACL scheme), so
    /// replay does not need the session's credentials. Errors here are the request's reply.
    pub fn resolve(&self, mut req: Request, auth: &AuthIds) -> Result<Request, i32> {
        match &mut req {
            Request::Create(c) => {
                c.acl = auth
                    .fixup(&c.acl)
                    .or_else(|e| self.invalid_acl_after_parent(c, e))?
            }
            Request::SetAcl { acl, .. } => *acl = auth.fixup(acl)?,
            Request::Multi(ops) => {
                for o in ops.iter_mut() {
                    if let MultiOp::Create(c) = o {
                        // An invalid ACL inside a multi fails that op when it is applied, so keep it.
                        if let Ok(fixed) = auth.fixup(&c.acl) {
                            c.acl = fixed;
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(req)
    }

    /// ZooKeeper checks the path shape before the ACL: a create with a bad path and a bad ACL is
    /// BADARGUMENTS, not INVALIDACL.
    fn invalid_acl_after_parent(&self, c: &CreateRequest, acl_err: i32) -> Result<Vec<Acl>, i32> {
        if c.path.rfind('/').is_none() || c.path.contains('\0') {
            return Err(err::BAD_ARGUMENTS);
        }
        Err(acl_err)
    }

    /// Applies a write that was given `zxid`. On error the state is unchanged (the zxid is still used).
    pub fn apply_write(&mut self, req: &Request, zxid: i64, time: i64, caller: Caller<'_>) -> WriteOutcome {
        self.last_zxid = self.last_zxid.max(zxid);
        let mut triggers = Vec::new();
        let result = match req {
            Request::Multi(ops) => return self.multi(ops, zxid, time, caller),
            // A single op checks everything before it changes anything, so it works on the tree itself:
            // no copy of the paths it touches, which a clone of the persistent maps would cost.
            _ => Self::write_op(
                self.ttl_enabled,
                &mut self.tree,
                req,
                zxid,
                time,
                caller,
                &mut triggers,
            )
            .map(|(resp, _)| resp),
        };
        match result {
            Ok(response) => WriteOutcome {
                err: err::OK,
                response,
                triggers,
                applied: true,
            },
            Err(code) => WriteOutcome {
                err: code,
                response: Response::Empty,
                triggers: Vec::new(),
                applied: false,
            },
        }
    }

    /// One write op against `tree`. Invariant: on `Err` the tree is unchanged (all checks come first).
    #[allow(clippy::too_many_arguments)]
    fn write_op(
        ttl_enabled: bool,
        tree: &mut DataTree,
        req: &Request,
        zxid: i64,
        time: i64,
        caller: Caller<'_>,
        triggers: &mut Vec<Trigger>,
    ) -> Result<(Response, Option<MultiResult>), i32> {
        match req {
            Request::Create(c) => {
                let (path, stat) = create_in(tree, ttl_enabled, c, zxid, time, caller, triggers)?;
                Ok(match c.kind {
                    CreateKind::Create => (
                        Response::Create { path: path.clone() },
                        Some(MultiResult::Create { path }),
                    ),
                    _ => (
                        Response::Create2 {
                            path: path.clone(),
                            stat,
                        },
                        Some(MultiResult::Create2 { path, stat }),
                    ),
                })
            }
            Request::Delete { path, version } => {
                delete_in(tree, path, *version, zxid, caller, triggers)?;
                Ok((Response::Empty, Some(MultiResult::Delete)))
            }
            Request::DeleteContainer { path } => {
                // A client may not remove a non-container this way.
                let node = tree.get(path).ok_or(err::NO_NODE)?;
                if !node.is_container() && node.ttl_ms().is_none() {
                    return Err(err::BAD_ARGUMENTS);
                }
                delete_in(tree, path, -1, zxid, caller, triggers)?;
                Ok((Response::Empty, Some(MultiResult::Delete)))
            }
            Request::SetData { path, data, version } => {
                let node = existing_node(tree, path, caller, perms::WRITE)?;
                check_version(*version, node.version)?;
                let data = data.as_deref().map(Arc::from);
                let stat = tree.set_data(path, data, zxid, time, triggers)?;
                Ok((Response::Stat(stat), Some(MultiResult::SetData { stat })))
            }
            Request::SetAcl { path, acl, version } => {
                let node = existing_node(tree, path, caller, perms::ADMIN)?;
                check_version(*version, node.aversion)?;
                let acl = tree.intern_acl(acl);
                let stat = tree.set_acl(path, acl)?;
                Ok((Response::Stat(stat), None))
            }
            Request::Check { path, version } => {
                let node = existing_node(tree, path, caller, perms::READ)?;
                check_version(*version, node.version)?;
                Ok((Response::Stat(node.stat()), Some(MultiResult::Check)))
            }
            _ => Err(err::UNIMPLEMENTED),
        }
    }

    fn multi(&mut self, ops: &[MultiOp], zxid: i64, time: i64, caller: Caller<'_>) -> WriteOutcome {
        let mut scratch = self.tree.clone();
        let mut triggers = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        for (i, o) in ops.iter().enumerate() {
            let req = match o {
                MultiOp::Create(c) => Request::Create(c.clone()),
                MultiOp::Delete { path, version } => Request::Delete {
                    path: path.clone(),
                    version: *version,
                },
                MultiOp::SetData { path, data, version } => Request::SetData {
                    path: path.clone(),
                    data: data.clone(),
                    version: *version,
                },
                MultiOp::Check { path, version } => Request::Check {
                    path: path.clone(),
                    version: *version,
                },
            };
            let acl_ok = match o {
                MultiOp::Create(c) => caller.auth.is_none_or(|a| a.fixup(&c.acl).is_ok()) || c.acl.is_empty(),
                _ => true,
            };
            let r = if acl_ok && !(matches!(o, MultiOp::Create(c) if c.acl.is_empty())) {
                Self::write_op(
                    self.ttl_enabled,
                    &mut scratch,
                    &req,
                    zxid,
                    time,
                    caller,
                    &mut triggers,
                )
            } else {
                Err(err::INVALID_ACL)
            };
            match r {
                Ok((_, Some(res))) => results.push(res),
                Ok((_, None)) => results.push(MultiResult::Error(err::OK)),
                Err(code) => {
                    let mut failed: Vec<MultiResult> = (0..i).map(|_| MultiResult::Error(err::OK)).collect();
                    failed.push(MultiResult::Error(code));
                    failed.extend((i + 1..ops.len()).map(|_| MultiResult::Error(err::RUNTIME_INCONSISTENCY)));
                    return WriteOutcome {
                        err: err::OK,
                        response: Response::Multi(failed),
                        triggers: Vec::new(),
                        applied: false,
                    };
                }
            }
        }
        self.tree = scratch;
        WriteOutcome {
            err: err::OK,
            response: Response::Multi(results),
            triggers,
            applied: true,
        }
    }

    /// Ends a session: its ephemerals go, in path order. Returns the watches that fires.
    pub fn close_session(&mut self, session: i64, zxid: i64) -> Vec<Trigger> {
        self.last_zxid = self.last_zxid.max(zxid);
        self.sessions.remove(&session);
        let mut triggers = Vec::new();
        for path in self.tree.ephemerals_in_close_order(session) {
            // Ephemerals have no children, so this cannot fail for NOTEMPTY.
            let _ = self.tree.delete(&path, zxid, &mut triggers);
        }
        self.tree.forget_session(session);
        triggers
    }

    pub fn open_session(&mut self, session: i64, meta: SessionMeta, zxid: i64) {
        self.last_zxid = self.last_zxid.max(zxid);
        self.sessions.insert(session, meta);
    }

    /// Looks a node up for a read, checking `perm` (0 = no check, as for `exists`).
    pub fn read_node(&self, path: &str, perm: i32, auth: &AuthIds) -> Result<&tree::Node, i32> {
        let node = self.tree.get(path).ok_or(err::NO_NODE)?;
        if perm != 0 && !auth.allows(&node.acl, perm) {
            return Err(err::NO_AUTH);
        }
        Ok(node)
    }

    /// Children names of a node, as clients expect them (any order; ours is sorted).
    pub fn children(&self, path: &str) -> Vec<String> {
        self.tree
            .get(path)
            .map(|n| n.children.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default()
    }

    pub fn stat(&self, path: &str) -> Option<Stat> {
        self.tree.get(path).map(|n| n.stat())
    }
}

/// The create rules (`PrepRequestProcessor.pRequest2TxnCreate`). Returns the final path and the new Stat.
fn create_in(
    tree: &mut DataTree,
    ttl_enabled: bool,
    c: &CreateRequest,
    zxid: i64,
    time: i64,
    caller: Caller<'_>,
    triggers: &mut Vec<Trigger>,
) -> Result<(String, Stat), i32> {
    let flags = c.flags;
    if !(0..=6).contains(&flags) {
        return Err(err::BAD_ARGUMENTS);
    }
    let is_ttl = flags == 5 || flags == 6;
    let is_container = flags == 4;
    match c.kind {
        CreateKind::Ttl if !is_ttl => return Err(err::BAD_ARGUMENTS),
        CreateKind::Container if !is_container => return Err(err::BAD_ARGUMENTS),
        CreateKind::Create | CreateKind::Create2 if is_ttl || is_container => return Err(err::BAD_ARGUMENTS),
        _ => {}
    }
    if is_ttl {
        if !ttl_enabled {
            return Err(err::UNIMPLEMENTED);
        }
        if c.ttl_ms <= 0 || c.ttl_ms > TTL_MS_MAX {
            return Err(err::BAD_ARGUMENTS);
        }
    }
    let ephemeral = flags == 1 || flags == 3;
    let sequential = flags == 2 || flags == 3 || flags == 6;
    let slash = c.path.rfind('/').ok_or(err::BAD_ARGUMENTS)?;
    if c.path.contains('\0') {
        return Err(err::BAD_ARGUMENTS);
    }
    if c.acl.is_empty() {
        return Err(err::INVALID_ACL);
    }
    let parent_path = if slash == 0 { "/" } else { &c.path[..slash] };
    let parent = tree.get(parent_path).ok_or(err::NO_NODE)?;
    if !caller.allows(&parent.acl, perms::CREATE) {
        return Err(err::NO_AUTH);
    }
    let path = if sequential {
        format!("{}{:010}", c.path, parent.cversion)
    } else {
        c.path.clone()
    };
    if !tree::valid_path(&path) || path == "/" {
        return Err(err::BAD_ARGUMENTS);
    }
    if tree.get(&path).is_some() {
        return Err(err::NODE_EXISTS);
    }
    if parent.ephemeral_session().is_some() {
        return Err(err::NO_CHILDREN_FOR_EPHEMERALS);
    }
    let owner = if ephemeral {
        caller.session
    } else if is_container {
        CONTAINER_OWNER
    } else if is_ttl {
        TTL_OWNER_MASK | c.ttl_ms
    } else {
        0
    };
    let data = c.data.as_deref().map(Arc::from);
    let acl = tree.intern_acl(&c.acl);
    let stat = tree.create(&path, data, acl, owner, zxid, time, triggers)?;
    Ok((path, stat))
}

/// The checks setData, setACL and check share, in ZooKeeper's order: path shape, existence, permission.
fn existing_node<'t>(
    tree: &'t DataTree,
    path: &str,
    caller: Caller<'_>,
    perm: i32,
) -> Result<&'t tree::Node, i32> {
    if !tree::valid_path(path) {
        return Err(err::BAD_ARGUMENTS);
    }
    let node = tree.get(path).ok_or(err::NO_NODE)?;
    if !caller.allows(&node.acl, perm) {
        return Err(err::NO_AUTH);
    }
    Ok(node)
}

fn delete_in(
    tree: &mut DataTree,
    path: &str,
    version: i32,
    zxid: i64,
    caller: Caller<'_>,
    triggers: &mut Vec<Trigger>,
) -> Result<(), i32> {
    let slash = path.rfind('/').ok_or(err::BAD_ARGUMENTS)?;
    if path.contains('\0') || is_special(path) {
        return Err(err::BAD_ARGUMENTS);
    }
    let parent_path = if slash == 0 { "/" } else { &path[..slash] };
    let parent = tree.get(parent_path).ok_or(err::NO_NODE)?;
    if !caller.allows(&parent.acl, perms::DELETE) {
        return Err(err::NO_AUTH);
    }
    let node = tree.get(path).ok_or(err::NO_NODE)?;
    check_version(version, node.version)?;
    if !node.children.is_empty() {
        return Err(err::NOT_EMPTY);
    }
    tree.delete(path, zxid, triggers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(path: &str, flags: i32) -> Request {
        Request::Create(CreateRequest {
            kind: CreateKind::Create,
            path: path.into(),
            data: Some(b"x".to_vec()),
            acl: vec![Acl::world_all()],
            flags,
            ttl_ms: 0,
        })
    }

    const REPLAY: Caller<'static> = Caller {
        session: 7,
        auth: None,
    };

    #[test]
    fn create_errors_follow_zookeeper_order() {
        let mut s = State::new(false);
        assert_eq!(s.apply_write(&create("/a/b/", 0), 1, 0, REPLAY).err, err::NO_NODE);
        assert_eq!(s.apply_write(&create("/a", 0), 2, 0, REPLAY).err, 0);
        assert_eq!(
            s.apply_write(&create("/a/", 0), 3, 0, REPLAY).err,
            err::BAD_ARGUMENTS
        );
        assert_eq!(
            s.apply_write(&create("/a", 0), 4, 0, REPLAY).err,
            err::NODE_EXISTS
        );
        assert_eq!(s.apply_write(&create("/e", 1), 5, 0, REPLAY).err, 0);
        assert_eq!(
            s.apply_write(&create("/e/x", 0), 6, 0, REPLAY).err,
            err::NO_CHILDREN_FOR_EPHEMERALS
        );
        assert_eq!(
            s.apply_write(&create("/a", 7), 7, 0, REPLAY).err,
            err::BAD_ARGUMENTS
        );
        let out = s.apply_write(&create("/a/s-", 2), 8, 0, REPLAY);
        assert_eq!(
            out.response,
            Response::Create {
                path: "/a/s-0000000000".into()
            }
        );
        assert_eq!(s.tree.ephemerals_of(7).len(), 1);
        s.close_session(7, 9);
        assert!(s.tree.get("/e").is_none());
    }

    #[test]
    fn failed_multi_changes_nothing_and_reports_each_op() {
        let mut s = State::new(false);
        let multi = Request::Multi(vec![
            MultiOp::Create(CreateRequest {
                kind: CreateKind::Create,
                path: "/m".into(),
                data: None,
                acl: vec![Acl::world_all()],
                flags: 0,
                ttl_ms: 0,
            }),
            MultiOp::SetData {
                path: "/m".into(),
                data: None,
                version: 5,
            },
            MultiOp::Delete {
                path: "/m".into(),
                version: -1,
            },
        ]);
        let out = s.apply_write(&multi, 1, 0, REPLAY);
        assert_eq!(
            out.response,
            Response::Multi(vec![
                MultiResult::Error(0),
                MultiResult::Error(err::BAD_VERSION),
                MultiResult::Error(err::RUNTIME_INCONSISTENCY)
            ])
        );
        assert!(s.tree.get("/m").is_none());
        assert!(out.triggers.is_empty());
    }
}
