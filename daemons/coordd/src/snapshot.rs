//! Snapshots of the state: `snapshot.<zxid as 16 hex digits>` in the data directory, written to a temp
//! file, fsynced, renamed, directory fsynced. A snapshot names the journal sequence number it covers, so
//! recovery replays the transaction log from the record after it.
//!
//! Format (big-endian, jute fields): magic `LTZKSNP1`, zxid, journal seq, sessions (id, timeout,
//! password), nodes (path, data, ACL, stat fields), then a CRC32C of all that. A snapshot that fails its
//! checksum is reported and skipped in favour of the previous one.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use logtank_durable::{AtomicFile, DurableError};
use logtank_zk::jute::{Reader, Writer};
use logtank_zk::{decode_acls, encode_acls};

use crate::state::{SessionMeta, State};
use crate::tree::{DataTree, Node};

pub const MAGIC: &[u8; 8] = b"LTZKSNP1";
const PREFIX: &str = "snapshot.";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: corrupt snapshot: {why}")]
    Corrupt { path: PathBuf, why: String },
}

/// A failed durable step (create, fsync, rename, directory fsync) is an IO error on the path it concerned.
impl From<DurableError> for SnapshotError {
    fn from(e: DurableError) -> SnapshotError {
        SnapshotError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A snapshot file in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub zxid: i64,
    pub path: PathBuf,
}

/// Removes what a crash in the middle of a snapshot left (`snapshot.<zxid>.tmp`: never committed, and as
/// large as a whole snapshot). Returns how many.
pub fn remove_leftovers(dir: &Path) -> Result<usize, SnapshotError> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(PREFIX) && name.ends_with(".tmp") {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err(&path))?;
            log::warn!(
                "removed {}: a snapshot interrupted before it was committed",
                path.display()
            );
            removed += 1;
        }
    }
    Ok(removed)
}

/// Snapshot files, newest first.
pub fn list(dir: &Path) -> Result<Vec<SnapshotFile>, SnapshotError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(hex) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        if let Ok(zxid) = u64::from_str_radix(hex, 16) {
            out.push(SnapshotFile {
                zxid: zxid as i64,
                path: entry.path(),
            });
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.zxid));
    Ok(out)
}

/// Writes `state` (taken at `zxid`, covering journal records up to `journal_seq`). Returns the file.
pub fn write(
    dir: &Path,
    tree: &DataTree,
    sessions: &[(i64, SessionMeta)],
    zxid: i64,
    journal_seq: u64,
) -> Result<SnapshotFile, SnapshotError> {
    let path = dir.join(format!("{PREFIX}{:016x}", zxid as u64));
    // `snapshot.<zxid>.tmp` until committed; removed if the write fails.
    let file = AtomicFile::create(&path)?;
    let tmp = file.tmp_path().to_path_buf();
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut crc = 0u32;
    let mut emit = |out: &mut BufWriter<AtomicFile>, bytes: &[u8]| -> Result<(), SnapshotError> {
        crc = crc32c::crc32c_append(crc, bytes);
        out.write_all(bytes).map_err(io_err(&tmp))
    };
    let mut w = Writer::new();
    w.buf.extend_from_slice(MAGIC);
    w.i64(zxid).i64(journal_seq as i64).i32(sessions.len() as i32);
    for (id, meta) in sessions {
        w.i64(*id).i32(meta.timeout_ms).buffer(Some(&meta.password));
    }
    w.i64(tree.node_count() as i64);
    emit(&mut out, &w.buf)?;
    for (p, n) in tree.iter() {
        w.buf.clear();
        w.string(p).buffer(n.data.as_deref());
        encode_acls(&mut w, &n.acl);
        w.i64(n.czxid).i64(n.mzxid).i64(n.ctime).i64(n.mtime);
        w.i32(n.version)
            .i32(n.cversion)
            .i32(n.aversion)
            .i64(n.ephemeral_owner)
            .i64(n.pzxid);
        emit(&mut out, &w.buf)?;
    }
    out.write_all(&crc.to_be_bytes()).map_err(io_err(&tmp))?;
    let file = out.into_inner().map_err(|e| SnapshotError::Io {
        path: tmp.clone(),
        source: e.into_error(),
    })?;
    file.commit()?;
    Ok(SnapshotFile { zxid, path })
}

/// What a snapshot restores.
#[derive(Debug)]
pub struct Loaded {
    pub state: State,
    pub journal_seq: u64,
}

/// Reads and verifies one snapshot.
pub fn load(path: &Path, ttl_enabled: bool) -> Result<Loaded, SnapshotError> {
    // One allocation of the file's size (read_to_end would grow and copy).
    let bytes = fs::read(path).map_err(io_err(path))?;
    decode(&bytes, ttl_enabled, path)
}

/// Verifies and decodes a snapshot's bytes (`path` names it in errors). Pure, so it is fuzzed.
pub fn decode(bytes: &[u8], ttl_enabled: bool, path: &Path) -> Result<Loaded, SnapshotError> {
    let corrupt = |why: String| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    if bytes.len() < MAGIC.len() + 4 || &bytes[..8] != MAGIC {
        return Err(corrupt("bad magic".into()));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]);
    if crc32c::crc32c(body) != stored {
        return Err(corrupt("checksum mismatch".into()));
    }
    let mut r = Reader::new(&body[8..]);
    let d = |e: logtank_zk::DecodeError| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    let zxid = r.i64().map_err(d)?;
    let journal_seq = r.i64().map_err(d)? as u64;
    let mut state = State::new(ttl_enabled);
    state.last_zxid = zxid;
    let sessions = r.i32().map_err(d)?;
    for _ in 0..sessions.max(0) {
        let id = r.i64().map_err(d)?;
        let timeout_ms = r.i32().map_err(d)?;
        let pw = r.buffer().map_err(d)?.unwrap_or_default();
        let password: [u8; 16] = pw.try_into().map_err(|_| corrupt("password length".into()))?;
        state.sessions.insert(id, SessionMeta { timeout_ms, password });
    }
    let nodes = r.i64().map_err(d)?;
    let mut tree = DataTree::new();
    for _ in 0..nodes.max(0) {
        // The path as a slice of the file, copied once into the tree's key.
        let p = r.buffer().map_err(d)?.unwrap_or_default();
        let p = std::str::from_utf8(p).map_err(|_| corrupt("path is not UTF-8".into()))?;
        let data = r.buffer().map_err(d)?.map(Arc::from);
        let acl = decode_acls(&mut r).map_err(d)?;
        let acl = tree.intern_acl(&acl);
        let node = Node {
            data,
            acl,
            czxid: r.i64().map_err(d)?,
            mzxid: r.i64().map_err(d)?,
            ctime: r.i64().map_err(d)?,
            mtime: r.i64().map_err(d)?,
            version: r.i32().map_err(d)?,
            cversion: r.i32().map_err(d)?,
            aversion: r.i32().map_err(d)?,
            ephemeral_owner: r.i64().map_err(d)?,
            pzxid: r.i64().map_err(d)?,
            children: Default::default(),
        };
        tree.insert_loaded(p, node);
    }
    tree.link_children();
    state.tree = tree;
    Ok(Loaded { state, journal_seq })
}

/// Removes all but the newest `keep` snapshots (and stray temp files). Returns the oldest kept one.
pub fn prune(dir: &Path, keep: usize) -> Result<Option<SnapshotFile>, SnapshotError> {
    let all = list(dir)?;
    for old in all.iter().skip(keep) {
        fs::remove_file(&old.path).map_err(io_err(&old.path))?;
    }
    Ok(all.into_iter().take(keep).next_back())
}

/// The journal sequence number a snapshot covers, from its header alone.
pub fn load_journal_seq(path: &Path) -> Result<u64, SnapshotError> {
    let mut head = [0u8; 24];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(io_err(path))?;
    if &head[..8] != MAGIC {
        return Err(SnapshotError::Corrupt {
            path: path.to_path_buf(),
            why: "bad magic".into(),
        });
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&head[16..24]);
    Ok(u64::from_be_bytes(seq))
}
