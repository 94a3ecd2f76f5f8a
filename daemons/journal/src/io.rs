//! The two ways the journal thread writes and syncs: io_uring (write linked to fdatasync) and the portable
//! `pwrite` + `fdatasync` fallback. Both sit behind [`Backend`], so the group-commit logic is written once.
//!
//! io_uring can be missing for reasons an operator cannot always change: the `kernel.io_uring_disabled` sysctl
//! (EPERM), a seccomp filter (EPERM with systemd's `SystemCallErrorNumber=EPERM`, or ENOSYS), an old kernel.
//! [`IoBackend::Auto`] tries io_uring once at open and falls back, logging which path it uses and why.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

/// Which IO path the journal thread uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoBackend {
    /// io_uring when the kernel allows it, otherwise `pwrite` + `fdatasync`.
    #[default]
    Auto,
    /// io_uring or fail to open: for tests and benchmarks that must measure it.
    IoUring,
    /// Always `pwrite` + `fdatasync` (the fallback, forced).
    Pwrite,
}

impl std::str::FromStr for IoBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(IoBackend::Auto),
            "io_uring" | "io-uring" | "uring" => Ok(IoBackend::IoUring),
            "pwrite" | "sync" => Ok(IoBackend::Pwrite),
            other => Err(format!(
                "unknown io backend '{other}' (expected auto, io_uring or pwrite)"
            )),
        }
    }
}

pub(crate) enum Backend {
    Uring(Box<crate::uring::Ring>),
    Pwrite,
}

impl Backend {
    pub(crate) fn open(choice: IoBackend) -> io::Result<Backend> {
        match choice {
            IoBackend::Pwrite => {
                log::info!("journal IO path: pwrite + fdatasync (forced by configuration)");
                Ok(Backend::Pwrite)
            }
            IoBackend::IoUring => Ok(Backend::uring(crate::uring::Ring::new()?)),
            IoBackend::Auto => match crate::uring::Ring::new() {
                Ok(ring) => Ok(Backend::uring(ring)),
                Err(e) => {
                    log::warn!(
                        "journal IO path: pwrite + fdatasync, because io_uring is unavailable ({e}); \
                         check the kernel.io_uring_disabled sysctl and seccomp filters"
                    );
                    Ok(Backend::Pwrite)
                }
            },
        }
    }

    fn uring(ring: crate::uring::Ring) -> Backend {
        log::info!("journal IO path: io_uring (write linked to fdatasync)");
        Backend::Uring(Box::new(ring))
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Uring(_) => "io_uring",
            Backend::Pwrite => "pwrite",
        }
    }

    /// Writes all of `buf` at `offset`; with `then_sync`, the data is durable (fdatasync) on return.
    pub(crate) fn write_at(
        &mut self,
        file: &File,
        buf: &[u8],
        offset: u64,
        then_sync: bool,
    ) -> io::Result<()> {
        match self {
            Backend::Uring(ring) => ring.write_at(file.as_raw_fd(), buf, offset, then_sync),
            Backend::Pwrite => {
                file.write_all_at(buf, offset)?;
                if then_sync {
                    file.sync_data()?;
                }
                Ok(())
            }
        }
    }

    /// Makes everything written to `file` so far durable.
    pub(crate) fn sync(&mut self, file: &File) -> io::Result<()> {
        match self {
            Backend::Uring(ring) => ring.sync(file.as_raw_fd()),
            Backend::Pwrite => file.sync_data(),
        }
    }
}
