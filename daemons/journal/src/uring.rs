//! The only `unsafe` in the journal: submitting io_uring operations whose buffers must outlive them.
//!
//! Every call submits, then waits for all of its completions before returning, so a borrowed buffer is never
//! referenced by the kernel after the borrow ends. A write linked (`IO_LINK`) to an fdatasync makes the sync
//! start only after the write completed; if the write fails or is short the kernel cancels the sync
//! (`-ECANCELED`) and we resubmit the remainder.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::io::RawFd;

use io_uring::{opcode, squeue, types, IoUring, Probe};

const RING_ENTRIES: u32 = 8;
const WRITE_TAG: u64 = 1;
const SYNC_TAG: u64 = 2;
/// One SQE's length field is 32 bits; larger buffers are written in pieces.
const WRITE_PIECE_BYTES_MAX: usize = 1 << 30;

pub(crate) struct Ring {
    ring: IoUring,
}

impl Ring {
    pub(crate) fn new() -> io::Result<Ring> {
        let ring = IoUring::new(RING_ENTRIES)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (code, name) in [(opcode::Write::CODE, "WRITE"), (opcode::Fsync::CODE, "FSYNC")] {
            if !probe.is_supported(code) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("the kernel's io_uring lacks IORING_OP_{name}"),
                ));
            }
        }
        Ok(Ring { ring })
    }

    pub(crate) fn write_at(
        &mut self,
        fd: RawFd,
        mut buf: &[u8],
        mut offset: u64,
        then_sync: bool,
    ) -> io::Result<()> {
        loop {
            let piece = buf.len().min(WRITE_PIECE_BYTES_MAX);
            let last_piece = piece == buf.len();
            let link_sync = then_sync && last_piece;
            let mut write = opcode::Write::new(types::Fd(fd), buf.as_ptr(), piece as u32)
                .offset(offset)
                .build()
                .user_data(WRITE_TAG);
            if link_sync {
                write = write.flags(squeue::Flags::IO_LINK);
            }
            let sync = opcode::Fsync::new(types::Fd(fd))
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data(SYNC_TAG);
            {
                let mut sq = self.ring.submission();
                // SAFETY: `buf` stays borrowed until `wait` below has reaped this operation's completion, so the
                // kernel never reads memory that was freed or reused. The ring has room: it is empty between calls.
                unsafe {
                    sq.push(&write)
                        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
                    if link_sync {
                        sq.push(&sync)
                            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
                    }
                }
            }
            let results = self.wait(if link_sync { 2 } else { 1 })?;
            let written = result_for(&results, WRITE_TAG)?;
            if written == 0 && piece > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "io_uring write wrote nothing",
                ));
            }
            let written = written as usize;
            buf = &buf[written..];
            offset += written as u64;
            if link_sync && written == piece {
                // The write was whole, so the linked sync ran; its result is the durability verdict.
                result_for(&results, SYNC_TAG)?;
                return Ok(());
            }
            if buf.is_empty() {
                // A short final write cancelled the linked sync; the data is all written now, so sync on its own.
                return if then_sync { self.sync(fd) } else { Ok(()) };
            }
        }
    }

    pub(crate) fn sync(&mut self, fd: RawFd) -> io::Result<()> {
        let sync = opcode::Fsync::new(types::Fd(fd))
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(SYNC_TAG);
        // SAFETY: an fsync references no user memory; the ring is empty between calls, so there is room.
        unsafe {
            self.ring
                .submission()
                .push(&sync)
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
        let results = self.wait(1)?;
        result_for(&results, SYNC_TAG).map(|_| ())
    }

    /// Submits what is queued and reaps exactly `count` completions, retrying when a signal interrupts the wait.
    fn wait(&mut self, count: usize) -> io::Result<Vec<(u64, i32)>> {
        let mut results = Vec::with_capacity(count);
        while results.len() < count {
            match self.ring.submit_and_wait(count - results.len()) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            results.extend(self.ring.completion().map(|cqe| (cqe.user_data(), cqe.result())));
        }
        Ok(results)
    }
}

fn result_for(results: &[(u64, i32)], tag: u64) -> io::Result<u32> {
    match results.iter().find(|(t, _)| *t == tag) {
        Some((_, res)) if *res < 0 => Err(io::Error::from_raw_os_error(-res)),
        Some((_, res)) => Ok(*res as u32),
        None => Err(io::Error::other("io_uring completion missing")),
    }
}
