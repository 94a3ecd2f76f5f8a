//! Watch tables: one-shot data (and exist) watches, one-shot child watches, persistent and
//! persistent-recursive watches, each path → sessions. Firing follows ZooKeeper's `WatchManager`: one event
//! per session per trigger, one-shot watches removed as they fire, recursive watches never see
//! NodeChildrenChanged.
//!
//! Watches belong to a session's current connection: when it drops, the client re-sends them
//! (`setWatches`) on its next connection, so the server forgets them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use logtank_zk::{event, Acl};

use crate::tree::Trigger;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Data,
    Child,
    Persistent,
    Recursive,
}

/// `removeWatches`/`checkWatches` types (`Watcher.WatcherType`).
pub mod watcher_type {
    pub const CHILDREN: i32 = 1;
    pub const DATA: i32 = 2;
    pub const ANY: i32 = 3;
    pub const PERSISTENT: i32 = 4;
    pub const PERSISTENT_RECURSIVE: i32 = 5;
}

/// One notification to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub session: i64,
    pub event_type: i32,
    pub path: Arc<str>,
}

#[derive(Debug, Default)]
pub struct Watches {
    tables: HashMap<Kind, HashMap<Arc<str>, HashSet<i64>>>,
    by_session: HashMap<i64, HashSet<(Kind, Arc<str>)>>,
    total: usize,
}

impl Watches {
    pub fn new() -> Watches {
        Watches::default()
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn session_count(&self, session: i64) -> usize {
        self.by_session.get(&session).map_or(0, HashSet::len)
    }

    pub fn sessions_watching(&self) -> usize {
        self.by_session.len()
    }

    pub fn paths_watched(&self) -> usize {
        let mut paths: HashSet<&Arc<str>> = HashSet::new();
        for t in self.tables.values() {
            paths.extend(t.keys());
        }
        paths.len()
    }

    /// Paths each session watches (`wchc`).
    pub fn by_session(&self) -> Vec<(i64, Vec<Arc<str>>)> {
        let mut out: Vec<_> = self
            .by_session
            .iter()
            .map(|(s, set)| {
                let mut paths: Vec<_> = set.iter().map(|(_, p)| p.clone()).collect();
                paths.sort();
                paths.dedup();
                (*s, paths)
            })
            .collect();
        out.sort_by_key(|(s, _)| *s);
        out
    }

    pub fn add(&mut self, kind: Kind, path: &str, session: i64) {
        let path: Arc<str> = Arc::from(path);
        if self
            .tables
            .entry(kind)
            .or_default()
            .entry(path.clone())
            .or_default()
            .insert(session)
        {
            self.by_session.entry(session).or_default().insert((kind, path));
            self.total += 1;
        }
    }

    fn remove(&mut self, kind: Kind, path: &str, session: i64) -> bool {
        let Some(table) = self.tables.get_mut(&kind) else {
            return false;
        };
        let Some(set) = table.get_mut(path) else {
            return false;
        };
        if !set.remove(&session) {
            return false;
        }
        if set.is_empty() {
            table.remove(path);
        }
        if let Some(mine) = self.by_session.get_mut(&session) {
            mine.remove(&(kind, Arc::from(path)));
            if mine.is_empty() {
                self.by_session.remove(&session);
            }
        }
        self.total -= 1;
        true
    }

    fn has(&self, kind: Kind, path: &str, session: i64) -> bool {
        self.tables
            .get(&kind)
            .and_then(|t| t.get(path))
            .is_some_and(|s| s.contains(&session))
    }

    /// Drops every watch of a session (its connection closed, or it ended).
    pub fn forget_session(&mut self, session: i64) {
        if let Some(mine) = self.by_session.remove(&session) {
            for (kind, path) in mine {
                if let Some(table) = self.tables.get_mut(&kind) {
                    if let Some(set) = table.get_mut(&path) {
                        set.remove(&session);
                        if set.is_empty() {
                            table.remove(&path);
                        }
                    }
                }
                self.total -= 1;
            }
        }
    }

    fn kinds_for(watch_type: i32) -> &'static [Kind] {
        match watch_type {
            watcher_type::CHILDREN => &[Kind::Child],
            watcher_type::DATA => &[Kind::Data],
            watcher_type::PERSISTENT => &[Kind::Persistent],
            watcher_type::PERSISTENT_RECURSIVE => &[Kind::Recursive],
            _ => &[Kind::Data, Kind::Child, Kind::Persistent, Kind::Recursive],
        }
    }

    /// `checkWatches`: whether the session has a watch of this type on `path`.
    pub fn check(&self, path: &str, watch_type: i32, session: i64) -> bool {
        Watches::kinds_for(watch_type)
            .iter()
            .any(|k| self.has(*k, path, session))
    }

    /// `removeWatches`: false if there was none (NOWATCHER).
    pub fn remove_type(&mut self, path: &str, watch_type: i32, session: i64) -> bool {
        let mut any = false;
        for k in Watches::kinds_for(watch_type) {
            any |= self.remove(*k, path, session);
        }
        any
    }

    /// The notifications a write's triggers cause, in order; one-shot watches that fired are gone after.
    /// A session that may not READ the node (`may_read`) is not told, and its one-shot watch is dropped
    /// all the same, as ZooKeeper 3.8 does.
    pub fn fire(
        &mut self,
        triggers: &[Trigger],
        may_read: impl Fn(i64, &[Acl]) -> bool,
        out: &mut Vec<Event>,
    ) {
        if self.total == 0 {
            return;
        }
        for t in triggers {
            let mut notified: HashSet<i64> = HashSet::new();
            let path = &t.path;
            let one_shot: &[Kind] = match t.event_type {
                event::NODE_CREATED | event::NODE_DATA_CHANGED => &[Kind::Data],
                event::NODE_DELETED => &[Kind::Data, Kind::Child],
                event::NODE_CHILDREN_CHANGED => &[Kind::Child],
                _ => &[],
            };
            for kind in one_shot {
                if let Some(sessions) = self.tables.get_mut(kind).and_then(|t| t.remove(path.as_ref())) {
                    for s in sessions {
                        if let Some(mine) = self.by_session.get_mut(&s) {
                            mine.remove(&(*kind, path.clone()));
                            if mine.is_empty() {
                                self.by_session.remove(&s);
                            }
                        }
                        self.total -= 1;
                        notified.insert(s);
                    }
                }
            }
            if let Some(sessions) = self
                .tables
                .get(&Kind::Persistent)
                .and_then(|t| t.get(path.as_ref()))
            {
                notified.extend(sessions.iter().copied());
            }
            if t.event_type != event::NODE_CHILDREN_CHANGED {
                if let Some(table) = self.tables.get(&Kind::Recursive) {
                    if !table.is_empty() {
                        for prefix in ancestors_and_self(path) {
                            if let Some(sessions) = table.get(prefix) {
                                notified.extend(sessions.iter().copied());
                            }
                        }
                    }
                }
            }
            let mut sessions: Vec<i64> = notified.into_iter().filter(|s| may_read(*s, &t.acl)).collect();
            sessions.sort_unstable();
            out.extend(sessions.into_iter().map(|session| Event {
                session,
                event_type: t.event_type,
                path: path.clone(),
            }));
        }
    }
}

/// `/a/b/c` → `/a/b/c`, `/a/b`, `/a`, `/`.
fn ancestors_and_self(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let current = next?;
        next = match current.rfind('/') {
            _ if current == "/" => None,
            Some(0) => Some("/"),
            Some(i) => Some(&current[..i]),
            None => None,
        };
        Some(current)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trig(path: &str, event_type: i32) -> Trigger {
        Trigger {
            path: Arc::from(path),
            event_type,
            acl: Arc::new(vec![Acl::world_all()]),
        }
    }

    #[test]
    fn one_shot_fires_once_and_persistent_stays() {
        let mut w = Watches::new();
        w.add(Kind::Data, "/a", 1);
        w.add(Kind::Child, "/a", 1);
        w.add(Kind::Persistent, "/a", 2);
        w.add(Kind::Recursive, "/", 3);
        let mut out = Vec::new();
        w.fire(
            &[
                trig("/a", event::NODE_DELETED),
                trig("/", event::NODE_CHILDREN_CHANGED),
            ],
            |_, _| true,
            &mut out,
        );
        let got: Vec<_> = out
            .iter()
            .map(|e| (e.session, e.event_type, e.path.to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, event::NODE_DELETED, "/a".into()),
                (2, 2, "/a".into()),
                (3, 2, "/a".into())
            ]
        );
        assert_eq!(w.total(), 2);
        assert_eq!(
            ancestors_and_self("/a/b").collect::<Vec<_>>(),
            vec!["/a/b", "/a", "/"]
        );
    }
}
