//! Cookies: a bookie's identity, written by `logtank bookie format` into each of its data directories and
//! into coordination (`<root>/cookies/<bookie id>`), and checked at every start, so a bookie never serves
//! with silently missing data: started on another bookie's directory, after a metaformat made a new cluster,
//! or at another address than the one it was formatted for, it refuses to start and says what differs.
//!
//! A cookie is a small JSON document: `{"layout":1,"bookie_id":"127.0.0.1:3181","instance_id":"…",
//! "journal_dir":"/data/bookie-1/journal","ledgers_dir":"/data/bookie-1/ledgers"}`, in the file `COOKIE`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::LedgerError;

pub const COOKIE_LAYOUT: u32 = 1;
/// The cookie's file name in each data directory.
pub const COOKIE_FILE: &str = "COOKIE";
/// A cookie is a few hundred bytes; anything much larger is not one.
const COOKIE_BYTES_MAX: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cookie {
    pub layout: u32,
    pub bookie_id: String,
    pub instance_id: String,
    pub journal_dir: String,
    pub ledgers_dir: String,
}

impl Cookie {
    pub fn new(bookie_id: &str, instance_id: &str, journal_dir: &Path, ledgers_dir: &Path) -> Cookie {
        Cookie {
            layout: COOKIE_LAYOUT,
            bookie_id: bookie_id.to_string(),
            instance_id: instance_id.to_string(),
            journal_dir: journal_dir.display().to_string(),
            ledgers_dir: ledgers_dir.display().to_string(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    pub fn from_json(origin: &str, bytes: &[u8]) -> Result<Cookie, LedgerError> {
        if bytes.len() > COOKIE_BYTES_MAX {
            return Err(LedgerError::BadCookie {
                origin: origin.to_string(),
                reason: format!("{} bytes is not a cookie", bytes.len()),
            });
        }
        serde_json::from_slice(bytes).map_err(|e| LedgerError::BadCookie {
            origin: origin.to_string(),
            reason: e.to_string(),
        })
    }

    /// What differs between this cookie (found somewhere) and `expected` (what this bookie is), one phrase
    /// each; empty if they match.
    pub fn differences(&self, expected: &Cookie) -> Vec<String> {
        let mut out = Vec::new();
        let mut field = |name: &str, found: &str, want: &str| {
            if found != want {
                out.push(format!("{name} is {found:?} in the cookie but {want:?} here"));
            }
        };
        field("the bookie id", &self.bookie_id, &expected.bookie_id);
        field(
            "the cluster instance id",
            &self.instance_id,
            &expected.instance_id,
        );
        field("the journal directory", &self.journal_dir, &expected.journal_dir);
        field("the ledgers directory", &self.ledgers_dir, &expected.ledgers_dir);
        if self.layout != expected.layout {
            out.push(format!(
                "cookie layout {} (this bookie writes {})",
                self.layout, expected.layout
            ));
        }
        out
    }
}

pub fn cookie_path(dir: &Path) -> PathBuf {
    dir.join(COOKIE_FILE)
}

/// The cookie in `dir`, `None` if there is none.
pub fn read_dir_cookie(dir: &Path) -> Result<Option<Cookie>, LedgerError> {
    let path = cookie_path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => Cookie::from_json(&path.display().to_string(), &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LedgerError::Io {
            what: path.display().to_string(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_field() {
        let a = Cookie::new("h:1", "id-1", Path::new("/j"), Path::new("/l"));
        assert!(a.differences(&a).is_empty());
        let b = Cookie::new("h:2", "id-2", Path::new("/j"), Path::new("/l2"));
        let d = a.differences(&b);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].contains("bookie id"));
        assert!(d[1].contains("instance id"));
        assert!(d[2].contains("ledgers directory"));
        assert_eq!(Cookie::from_json("x", &a.to_json()).expect("parses"), a);
        assert!(Cookie::from_json("x", b"nope").is_err());
    }
}
