//! A small filesystem of a given size for a test: a tmpfs mounted at a directory (root or CAP_SYS_ADMIN
//! only), unmounted when dropped, and [`fill_to`] to bring it to a usage percentage (the disk-threshold
//! tests of the writer and the bookies).

use std::path::{Path, PathBuf};

/// A mounted tmpfs; unmounts (lazily, so an open file cannot block it) when dropped.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`8m`) at `path` (created); an error says why it could not.
    pub fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .map_err(|e| format!("mount -t tmpfs -o size={size} {}: {e}", path.display()))?;
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Grows or shrinks `fill` so the filesystem is about `percent` used (100: every block, as far as a write
/// of zeros can take it).
pub fn fill_to(mount: &Path, fill: &Path, percent: f64) {
    let stat =
        nix::sys::statvfs::statvfs(mount).unwrap_or_else(|e| panic!("statvfs {}: {e}", mount.display()));
    let unit = stat.fragment_size();
    let used = (stat.blocks() - stat.blocks_free()) * unit;
    let usable = used + stat.blocks_available() * unit;
    let current = std::fs::metadata(fill).map_or(0, |m| m.len());
    let others = used.saturating_sub(current);
    let wanted = (usable as f64 * percent / 100.0) as u64;
    let size = wanted.saturating_sub(others);
    let _ = std::fs::remove_file(fill);
    // Written, not truncated: a sparse file would use no pages. A full disk ends the write early: fine.
    use std::io::Write;
    let mut f = std::fs::File::create(fill).unwrap_or_else(|e| panic!("creating {}: {e}", fill.display()));
    let chunk = vec![0x55u8; 64 << 10];
    let mut left = size as usize;
    while left > 0 {
        let n = left.min(chunk.len());
        if f.write_all(&chunk[..n]).is_err() {
            break;
        }
        left -= n;
    }
}
