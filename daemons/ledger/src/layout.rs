//! Where ledger things live in coordination: BookKeeper's layout under a configurable root (default
//! `/ledgers`; DistributedLog's guide uses `/messaging/bookkeeper/ledgers`), so an operator who knows
//! BookKeeper finds everything where they expect it:
//!
//! ```text
//! <root>/INSTANCEID                     the cluster's identity (a UUID), checked against every cookie
//! <root>/LAYOUT                         which layout and metadata format this root uses
//! <root>/available/<host:port>          ephemeral, while the bookie is writable
//! <root>/available/readonly/<host:port> ephemeral, while it is readonly (never both)
//! <root>/cookies/<host:port>            the bookie's cookie
//! <root>/idgen/ID-<seq>                 ephemeral sequential, created and deleted to allocate a ledger id
//! <root>/00/0000/L0001                  ledger 1's metadata (BookKeeper's hierarchical 2-4-4 split)
//! ```

use crate::LedgerError;

pub const DEFAULT_ROOT: &str = "/ledgers";
/// The text of `<root>/LAYOUT`: the hierarchical layout with JSON metadata (format 1).
pub const LAYOUT_TEXT: &str = "1\nlogtank.HierarchicalLedgerLayout:1\nmetadata: json 1\n";
/// Ledger ids come from a sequential node's 10-digit counter, and the hierarchical path has room for 10
/// digits: ids stay below this.
pub const LEDGER_ID_MAX: u64 = 9_999_999_999;
/// A root is a node path; this is far more than any sensible one.
const ROOT_BYTES_MAX: usize = 512;

/// The ledger paths under one root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: String,
}

impl Layout {
    /// Checks `root`: absolute, not `/`, no empty, `.` or `..` components, no trailing slash.
    pub fn new(root: &str) -> Result<Layout, LedgerError> {
        let bad = |why: &str| LedgerError::InvalidArgument(format!("ledgers root {root:?}: {why}"));
        if root.len() > ROOT_BYTES_MAX {
            return Err(bad("too long"));
        }
        let Some(rest) = root.strip_prefix('/') else {
            return Err(bad("must start with /"));
        };
        if rest.is_empty() {
            return Err(bad("cannot be / itself"));
        }
        if rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'))
        {
            return Err(bad("has an empty, . or .. component or a trailing /"));
        }
        Ok(Layout {
            root: root.to_string(),
        })
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn instance_id(&self) -> String {
        format!("{}/INSTANCEID", self.root)
    }

    pub fn layout(&self) -> String {
        format!("{}/LAYOUT", self.root)
    }

    pub fn available(&self) -> String {
        format!("{}/available", self.root)
    }

    pub fn available_bookie(&self, bookie: &str) -> String {
        format!("{}/available/{bookie}", self.root)
    }

    pub fn readonly(&self) -> String {
        format!("{}/available/readonly", self.root)
    }

    pub fn readonly_bookie(&self, bookie: &str) -> String {
        format!("{}/available/readonly/{bookie}", self.root)
    }

    pub fn cookies(&self) -> String {
        format!("{}/cookies", self.root)
    }

    pub fn cookie(&self, bookie: &str) -> String {
        format!("{}/cookies/{bookie}", self.root)
    }

    pub fn idgen(&self) -> String {
        format!("{}/idgen", self.root)
    }

    /// The metadata node of ledger `id`: its 10-digit decimal form split 2-4-4, the last part after `L`.
    pub fn ledger(&self, id: u64) -> String {
        let digits = format!("{id:010}");
        format!(
            "{}/{}/{}/L{}",
            self.root,
            &digits[..2],
            &digits[2..6],
            &digits[6..]
        )
    }

    /// The first-level nodes under the root that hold ledgers (two digits), and nothing else.
    pub fn is_ledger_dir(name: &str) -> bool {
        name.len() == 2 && name.bytes().all(|b| b.is_ascii_digit())
    }

    pub fn is_ledger_subdir(name: &str) -> bool {
        name.len() == 4 && name.bytes().all(|b| b.is_ascii_digit())
    }

    /// The ledger id of `<root>/<top>/<mid>/<leaf>`, if those are a ledger's path components.
    pub fn ledger_id(top: &str, mid: &str, leaf: &str) -> Option<u64> {
        let last = leaf.strip_prefix('L')?;
        if !Layout::is_ledger_dir(top) || !Layout::is_ledger_subdir(mid) || last.len() != 4 {
            return None;
        }
        if !last.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        format!("{top}{mid}{last}").parse().ok()
    }
}

/// Checks a bookie id (its advertised `host:port`): it becomes a node name, so no `/`, and BookKeeper's
/// rule that `readonly` is not a bookie.
pub fn check_bookie_id(id: &str) -> Result<(), LedgerError> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && id != "readonly"
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.[]".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(LedgerError::InvalidArgument(format!(
            "bookie id {id:?} must be host:port (letters, digits, : - _ . [ ]), not \"readonly\""
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_bookkeepers_hierarchical_layout() {
        let l = Layout::new("/messaging/bookkeeper/ledgers").expect("valid");
        assert_eq!(l.ledger(1), "/messaging/bookkeeper/ledgers/00/0000/L0001");
        assert_eq!(
            l.ledger(1234567890),
            "/messaging/bookkeeper/ledgers/12/3456/L7890"
        );
        assert_eq!(Layout::ledger_id("12", "3456", "L7890"), Some(1234567890));
        assert_eq!(Layout::ledger_id("12", "3456", "7890"), None);
        assert_eq!(Layout::ledger_id("idgen", "3456", "L7890"), None);
        assert_eq!(
            l.readonly_bookie("h:1"),
            "/messaging/bookkeeper/ledgers/available/readonly/h:1"
        );
        for bad in ["", "/", "ledgers", "/a/", "/a//b", "/a/../b"] {
            assert!(Layout::new(bad).is_err(), "{bad:?}");
        }
        assert!(check_bookie_id("127.0.0.1:3181").is_ok());
        assert!(check_bookie_id("readonly").is_err());
        assert!(check_bookie_id("a/b:1").is_err());
    }
}
