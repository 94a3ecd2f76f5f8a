//! The znode tree: paths to nodes in persistent (structurally shared) maps, so a clone is O(1). That is
//! what makes a `multi` all-or-nothing (apply to a clone, keep it only if every op succeeded) and lets a
//! snapshot be written by another thread while the tree keeps changing.
//!
//! Every operation here is deterministic in (tree, request, zxid, time): the transaction log stores
//! requests, and replaying them through the same functions rebuilds the same tree.

use std::sync::Arc;

use imbl::{HashMap, OrdSet};
use logtank_zk::{err, event, Acl, Stat};

/// `ephemeralOwner` of a container node (`EphemeralType.CONTAINER`).
pub const CONTAINER_OWNER: i64 = i64::MIN;
/// High byte of a TTL node's `ephemeralOwner`; the low 40 bits hold the TTL (`EphemeralType.TTL`).
pub const TTL_OWNER_MASK: i64 = 0xFF00_0000_0000_0000_u64 as i64;
pub const TTL_MS_MAX: i64 = 0xFF_FFFF_FFFF;

/// Nodes every ZooKeeper server has; clients (zkCli's `config`, `ls -R /`) expect them.
pub const SYSTEM_PATHS: [&str; 3] = ["/zookeeper", "/zookeeper/quota", "/zookeeper/config"];

/// One znode. Immutable once in the map: a change inserts a modified copy.
#[derive(Debug, Clone)]
pub struct Node {
    pub data: Option<Arc<[u8]>>,
    pub acl: Arc<Vec<Acl>>,
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    /// Creates of children so far (ZooKeeper's stored cversion; the reported one also counts deletes).
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub pzxid: i64,
    pub children: OrdSet<Arc<str>>,
}

impl Node {
    fn new(data: Option<Arc<[u8]>>, acl: Arc<Vec<Acl>>, zxid: i64, time: i64, owner: i64) -> Node {
        Node {
            data,
            acl,
            czxid: zxid,
            mzxid: zxid,
            ctime: time,
            mtime: time,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: owner,
            pzxid: zxid,
            children: OrdSet::new(),
        }
    }

    /// The Stat clients see (`DataNode.copyStat`).
    pub fn stat(&self) -> Stat {
        let num_children = self.children.len() as i32;
        Stat {
            czxid: self.czxid,
            mzxid: self.mzxid,
            ctime: self.ctime,
            mtime: self.mtime,
            version: self.version,
            cversion: self.cversion.wrapping_mul(2).wrapping_sub(num_children),
            aversion: self.aversion,
            ephemeral_owner: if self.is_container() || self.ttl_ms().is_some() {
                0
            } else {
                self.ephemeral_owner
            },
            data_length: self.data.as_ref().map_or(0, |d| d.len() as i32),
            num_children,
            pzxid: self.pzxid,
        }
    }

    pub fn is_container(&self) -> bool {
        self.ephemeral_owner == CONTAINER_OWNER
    }

    pub fn ttl_ms(&self) -> Option<i64> {
        (self.ephemeral_owner != CONTAINER_OWNER && self.ephemeral_owner & TTL_OWNER_MASK == TTL_OWNER_MASK)
            .then_some(self.ephemeral_owner & TTL_MS_MAX)
    }

    /// The owning session of a plain ephemeral node.
    pub fn ephemeral_session(&self) -> Option<i64> {
        (self.ephemeral_owner != 0 && !self.is_container() && self.ttl_ms().is_none())
            .then_some(self.ephemeral_owner)
    }
}

/// A change a write made, for firing watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub path: Arc<str>,
    pub event_type: i32,
    /// The node's ACL when it fired: only sessions that may READ the node hear of it (ZooKeeper 3.8).
    pub acl: Arc<Vec<Acl>>,
}

/// The whole tree plus the indexes derived from it (per-session ephemerals, containers and TTL nodes).
#[derive(Debug, Clone)]
pub struct DataTree {
    nodes: HashMap<Arc<str>, Arc<Node>>,
    ephemerals: HashMap<i64, OrdSet<Arc<str>>>,
    /// The most ephemerals each session has held at once: it sizes the Java hash set whose iteration order
    /// ZooKeeper deletes them in when the session ends (see [`DataTree::ephemerals_in_close_order`]).
    ephemerals_high_water: HashMap<i64, usize>,
    /// Container and TTL nodes, checked now and then for removal.
    expirable: OrdSet<Arc<str>>,
    data_bytes: u64,
    /// One shared copy of each distinct ACL (almost every node has one of a handful), as ZooKeeper's ACL
    /// cache does. Shared by all clones: interning changes no observable state.
    acls: Arc<AclTable>,
}

/// The ACL interning table: each distinct ACL list once.
type AclTable = std::sync::Mutex<std::collections::HashMap<Vec<Acl>, Arc<Vec<Acl>>>>;

/// Distinct ACLs kept in the interning table; past this, new ACLs are stored per node.
const INTERNED_ACLS_MAX: usize = 4096;

/// Splits `/a/b` into (`/a`, `b`); the parent of `/a` is `/`.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let slash = path.rfind('/')?;
    let parent = if slash == 0 { "/" } else { &path[..slash] };
    Some((parent, &path[slash + 1..]))
}

/// ZooKeeper's `PathUtils.validatePath`: absolute, no empty, `.` or `..` components, no trailing slash,
/// no NUL or other control characters it rejects.
pub fn valid_path(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    if !path.starts_with('/') || path.ends_with('/') {
        return false;
    }
    path[1..].split('/').all(|c| {
        !c.is_empty()
            && c != "."
            && c != ".."
            && !c.chars().any(|ch| {
                ch == '\0'
                    || ('\u{1}'..='\u{1f}').contains(&ch)
                    || ('\u{7f}'..='\u{9f}').contains(&ch)
                    || ('\u{e000}'..='\u{f8ff}').contains(&ch)
                    || ('\u{fff0}'..='\u{ffff}').contains(&ch)
            })
    })
}

impl Default for DataTree {
    fn default() -> Self {
        DataTree::new()
    }
}

impl DataTree {
    /// A tree holding `/` and the `/zookeeper` system nodes.
    pub fn new() -> DataTree {
        let mut tree = DataTree {
            nodes: HashMap::new(),
            ephemerals: HashMap::new(),
            ephemerals_high_water: HashMap::new(),
            expirable: OrdSet::new(),
            data_bytes: 0,
            acls: Default::default(),
        };
        let acl = Arc::new(vec![Acl::world_all()]);
        // ZooKeeper's built-in nodes hold empty (not null) data; /zookeeper/config is read-only to all.
        let empty: Option<Arc<[u8]>> = Some(Arc::from(&[][..]));
        tree.nodes.insert(
            Arc::from("/"),
            Arc::new(Node::new(empty.clone(), acl.clone(), 0, 0, 0)),
        );
        for path in SYSTEM_PATHS {
            let acl = if path == "/zookeeper/config" {
                Arc::new(vec![Acl {
                    perms: logtank_zk::perms::READ,
                    ..Acl::world_all()
                }])
            } else {
                acl.clone()
            };
            tree.insert_loaded(path, Node::new(empty.clone(), acl, 0, 0, 0));
        }
        tree.link_children();
        tree
    }

    /// The shared copy of `acl`.
    pub fn intern_acl(&self, acl: &[Acl]) -> Arc<Vec<Acl>> {
        let mut table = self.acls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = table.get(acl) {
            return shared.clone();
        }
        let shared = Arc::new(acl.to_vec());
        if table.len() < INTERNED_ACLS_MAX {
            table.insert(acl.to_vec(), shared.clone());
        }
        shared
    }

    pub fn get(&self, path: &str) -> Option<&Arc<Node>> {
        self.nodes.get(path)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn approximate_data_bytes(&self) -> u64 {
        self.data_bytes
    }

    pub fn ephemeral_count(&self) -> usize {
        self.ephemerals.values().map(OrdSet::len).sum()
    }

    pub fn ephemerals_of(&self, session: i64) -> Vec<Arc<str>> {
        self.ephemerals
            .get(&session)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A session's ephemerals in the order ZooKeeper deletes them at session close, which clients see in
    /// their watch events. ZooKeeper keeps them in a `java.util.HashSet` (iteration: bucket of
    /// `String.hashCode`, then insertion order, here the creating zxid), and at close deletes them in the
    /// order of a *clone* of that set, which is presized for its current size and filled in the original's
    /// order. Both steps are reproduced here.
    pub fn ephemerals_in_close_order(&self, session: i64) -> Vec<Arc<str>> {
        let paths = self.ephemerals_of(session);
        let high = self
            .ephemerals_high_water
            .get(&session)
            .copied()
            .unwrap_or(0)
            .max(paths.len());
        let spread = |p: &str| {
            let h = java_string_hash(p) as u32;
            h ^ (h >> 16)
        };
        // The original: 16 buckets, doubled whenever its size passed 3/4 of them.
        let mut buckets: u32 = 16;
        while high as u64 * 4 > u64::from(buckets) * 3 {
            buckets *= 2;
        }
        let mut keyed: Vec<(u32, i64, Arc<str>)> = paths
            .into_iter()
            .map(|p| {
                let czxid = self.nodes.get(&*p).map_or(0, |n| n.czxid);
                (spread(&p) & (buckets - 1), czxid, p)
            })
            .collect();
        keyed.sort();
        // The clone: `HashMap.putMapEntries` presizes to tableSizeFor((int)(size / 0.75 + 1)).
        let wanted = (keyed.len() as f64 / 0.75 + 1.0) as u32;
        let clone_buckets = wanted.max(1).next_power_of_two();
        let mut ordered: Vec<Arc<str>> = keyed.into_iter().map(|(_, _, p)| p).collect();
        ordered.sort_by_key(|p| spread(p) & (clone_buckets - 1));
        ordered
    }

    /// Forgets a session's ephemeral bookkeeping once it ended.
    pub fn forget_session(&mut self, session: i64) {
        self.ephemerals_high_water.remove(&session);
    }

    pub fn expirable(&self) -> Vec<Arc<str>> {
        self.expirable.iter().cloned().collect()
    }

    /// Every node with its path, in no particular order (snapshots).
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<Node>)> {
        self.nodes.iter()
    }

    /// Inserts a node read from a snapshot (or a system node); its parent must already be there or come
    /// later through [`DataTree::link_children`].
    pub fn insert_loaded(&mut self, path: &str, mut node: Node) {
        node.children = OrdSet::new();
        let path: Arc<str> = Arc::from(path);
        self.index_new(&path, &node);
        if let Some(old) = self.nodes.insert(path.clone(), Arc::new(node)) {
            self.data_bytes -= (path.len() + old.data.as_ref().map_or(0, |d| d.len())) as u64;
        }
    }

    /// After [`DataTree::insert_loaded`] of any number of nodes in any order: rebuilds every node's child
    /// set. Children are grouped by parent first and inserted in sorted order, one parent at a time, which
    /// keeps a snapshot load of a million nodes well under a second.
    pub fn link_children(&mut self) {
        let paths: Vec<Arc<str>> = self.nodes.keys().cloned().collect();
        let mut by_parent: std::collections::HashMap<&str, Vec<&str>> = std::collections::HashMap::new();
        for path in &paths {
            if &**path == "/" {
                continue;
            }
            if let Some((parent, name)) = split_path(path) {
                by_parent.entry(parent).or_default().push(name);
            }
        }
        for (parent, mut names) in by_parent {
            let Some(node) = self.nodes.get_mut(parent) else {
                continue;
            };
            names.sort_unstable();
            let mut children = OrdSet::new();
            for name in names {
                children.insert(Arc::from(name));
            }
            Arc::make_mut(node).children = children;
        }
    }

    fn index_new(&mut self, path: &Arc<str>, node: &Node) {
        self.data_bytes += (path.len() + node.data.as_ref().map_or(0, |d| d.len())) as u64;
        if let Some(session) = node.ephemeral_session() {
            let set = self.ephemerals.entry(session).or_default();
            set.insert(path.clone());
            let len = set.len();
            let high = self.ephemerals_high_water.entry(session).or_insert(0);
            *high = (*high).max(len);
        } else if node.is_container() || node.ttl_ms().is_some() {
            self.expirable.insert(path.clone());
        }
    }

    /// Creates `path` (already final: sequential suffix applied). The caller checked the parent exists, is
    /// not ephemeral, and the node does not exist.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &mut self,
        path: &str,
        data: Option<Arc<[u8]>>,
        acl: Arc<Vec<Acl>>,
        owner: i64,
        zxid: i64,
        time: i64,
        triggers: &mut Vec<Trigger>,
    ) -> Result<Stat, i32> {
        let (parent_path, name) = split_path(path).ok_or(err::BAD_ARGUMENTS)?;
        let parent = self.nodes.get_mut(parent_path).ok_or(err::NO_NODE)?;
        let parent_acl = parent.acl.clone();
        {
            let p = Arc::make_mut(parent);
            p.cversion = p.cversion.wrapping_add(1);
            p.pzxid = zxid;
            p.children.insert(Arc::from(name));
        }
        let node = Node::new(data, acl.clone(), zxid, time, owner);
        let stat = node.stat();
        let path: Arc<str> = Arc::from(path);
        self.index_new(&path, &node);
        self.nodes.insert(path.clone(), Arc::new(node));
        triggers.push(Trigger {
            path,
            event_type: event::NODE_CREATED,
            acl,
        });
        triggers.push(Trigger {
            path: Arc::from(parent_path),
            event_type: event::NODE_CHILDREN_CHANGED,
            acl: parent_acl,
        });
        Ok(stat)
    }

    /// Deletes `path`; the caller checked versions, emptiness and ACLs.
    pub fn delete(&mut self, path: &str, zxid: i64, triggers: &mut Vec<Trigger>) -> Result<(), i32> {
        let (parent_path, name) = split_path(path).ok_or(err::BAD_ARGUMENTS)?;
        let (key, node) = self.nodes.remove_with_key(path).ok_or(err::NO_NODE)?;
        self.data_bytes -= (key.len() + node.data.as_ref().map_or(0, |d| d.len())) as u64;
        if let Some(session) = node.ephemeral_session() {
            if let Some(set) = self.ephemerals.get_mut(&session) {
                set.remove(path);
                if set.is_empty() {
                    self.ephemerals.remove(&session);
                }
            }
        } else {
            self.expirable.remove(path);
        }
        let mut parent_acl = node.acl.clone();
        if let Some(parent) = self.nodes.get_mut(parent_path) {
            parent_acl = parent.acl.clone();
            let p = Arc::make_mut(parent);
            p.children.remove(name);
            p.pzxid = zxid;
        }
        triggers.push(Trigger {
            path: key,
            event_type: event::NODE_DELETED,
            acl: node.acl.clone(),
        });
        triggers.push(Trigger {
            path: Arc::from(parent_path),
            event_type: event::NODE_CHILDREN_CHANGED,
            acl: parent_acl,
        });
        Ok(())
    }

    pub fn set_data(
        &mut self,
        path: &str,
        data: Option<Arc<[u8]>>,
        zxid: i64,
        time: i64,
        triggers: &mut Vec<Trigger>,
    ) -> Result<Stat, i32> {
        let (key, _) = self.nodes.get_key_value(path).ok_or(err::NO_NODE)?;
        let key = key.clone();
        let node = self.nodes.get_mut(path).ok_or(err::NO_NODE)?;
        let n = Arc::make_mut(node);
        let old_len = n.data.as_ref().map_or(0, |d| d.len()) as u64;
        let new_len = data.as_ref().map_or(0, |d| d.len()) as u64;
        n.data = data;
        n.mzxid = zxid;
        n.mtime = time;
        n.version = n.version.wrapping_add(1);
        let stat = n.stat();
        self.data_bytes = self.data_bytes - old_len + new_len;
        triggers.push(Trigger {
            path: key,
            event_type: event::NODE_DATA_CHANGED,
            acl: n.acl.clone(),
        });
        Ok(stat)
    }

    pub fn set_acl(&mut self, path: &str, acl: Arc<Vec<Acl>>) -> Result<Stat, i32> {
        let node = self.nodes.get_mut(path).ok_or(err::NO_NODE)?;
        let n = Arc::make_mut(node);
        n.acl = acl;
        n.aversion = n.aversion.wrapping_add(1);
        Ok(n.stat())
    }

    /// Number of nodes below `path` (not counting `path`).
    pub fn descendant_count(&self, path: &str) -> Option<u64> {
        let node = self.nodes.get(path)?;
        let mut count = 0u64;
        let mut stack: Vec<(String, Arc<Node>)> = vec![(path.to_string(), node.clone())];
        while let Some((p, n)) = stack.pop() {
            for c in n.children.iter() {
                let child = child_path(&p, c);
                if let Some(cn) = self.nodes.get(child.as_str()) {
                    count += 1;
                    stack.push((child, cn.clone()));
                }
            }
        }
        Some(count)
    }
}

/// Java's `String.hashCode` (over UTF-16 code units, wrapping).
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

pub fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_java() {
        // Values from java.lang.String.hashCode.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(
            java_string_hash("/zookeeper/quota/with/a/long/path"),
            -1_019_663_126
        );
    }

    #[test]
    fn paths_are_validated_like_zookeeper() {
        for ok in ["/", "/a", "/a/b", "/a-1/b.c", "/é"] {
            assert!(valid_path(ok), "{ok}");
        }
        for bad in [
            "", "a", "/a/", "//", "/a//b", "/a/./b", "/a/..", "/a\0b", "/a\u{1}",
        ] {
            assert!(!valid_path(bad), "{bad:?}");
        }
        assert_eq!(split_path("/a"), Some(("/", "a")));
        assert_eq!(split_path("/a/b"), Some(("/a", "b")));
    }

    #[test]
    fn cversion_counts_creates_and_deletes_and_clone_is_isolated() {
        let mut t = DataTree::new();
        let acl = Arc::new(vec![Acl::world_all()]);
        let mut tr = Vec::new();
        for (i, name) in ["/p", "/p/a", "/p/b", "/p/c"].iter().enumerate() {
            t.create(name, None, acl.clone(), 0, i as i64 + 1, 0, &mut tr)
                .unwrap();
        }
        let before = t.clone();
        t.delete("/p/a", 9, &mut tr).unwrap();
        let stat = t.get("/p").unwrap().stat();
        assert_eq!((stat.cversion, stat.num_children, stat.pzxid), (4, 2, 9));
        assert_eq!(before.get("/p").unwrap().stat().num_children, 3);
        // Three system nodes, /p and its two children.
        assert_eq!(t.descendant_count("/"), Some(6));
    }
}
