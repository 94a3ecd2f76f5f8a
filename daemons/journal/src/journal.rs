//! The journal handle, the staging buffer appenders fill, and the journal thread that drains it (group commit).
//!
//! Appenders take the state lock only to assign a sequence number and copy their frame into the staging chunk of
//! the segment it will land in; they never do IO. The journal thread swaps the staged chunks out, writes them
//! (rolling segments where a chunk says so), and fsyncs when a waiter asked for durability, when the oldest
//! unsynced write is `fsync_interval` old, or at close. Progress is published as [`Marks`] through a condvar
//! (blocking waiters) and a `tokio::sync::watch` (async waiters).

use nix::fcntl::PosixFadviseAdvice;
use std::fs::File;
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::frame::{self, encode_frame, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::io::{Backend, IoBackend};
use crate::metrics::Metrics;
use crate::reader::Reader;
use crate::recovery::{self, Mode, RecoveryReport};
use crate::segment::{self, SegmentMeta};
use crate::{Error, ResultExt};

/// Staged bytes beyond which appenders wait for the journal thread: bounds memory when the disk is slower than
/// the appenders.
pub const PENDING_BYTES_MAX: usize = 64 << 20;
/// Recovery reads a whole segment into memory, so segments stay well below the memory of a small host.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// Small segments are for tests; anything smaller cannot hold a useful record.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Spent staging buffers kept for reuse, so steady appending does not reallocate.
const SPARE_BUFFERS_MAX: usize = 2;

/// How a journal is opened.
#[derive(Clone)]
pub struct JournalOptions {
    /// Size each segment is preallocated to; a segment rolls when the next record would not fit.
    pub segment_size_bytes: u64,
    /// The longest an appended record waits for an fsync when nobody asks for one.
    pub fsync_interval: Duration,
    pub io_backend: IoBackend,
    /// The largest record accepted; must fit in a segment with its header.
    pub record_bytes_max: u32,
    /// Start a new segment at open instead of appending to the last one.
    pub new_segment_on_open: bool,
    /// Runs first on the journal thread, e.g. to set its IO priority.
    pub thread_init: Option<Arc<dyn Fn() + Send + Sync>>,
    /// At a roll, once the closed segment is durable, ask the kernel to drop its pages from the page cache
    /// (`POSIX_FADV_DONTNEED`, as PostgreSQL does with WAL segments nothing reads back). The next segment's
    /// pages then reuse freed memory instead of growing the cache: on the VMs we run on, first touches of
    /// fresh memory made zero-filling the spare segment half of the writer's CPU (docs/benchmarks.md). A
    /// reader of the closed segment (the dealer) reads it from the disk instead.
    pub drop_closed_from_cache: bool,
    /// Segments may be removed out of order ([`Journal::remove_segment`]), so a gap in the sequence numbers
    /// between two segments is a removed segment, not a lost one. For a journal that is also its owner's
    /// entry store (the bookie), whose own index says which segments must exist.
    pub allow_segment_gaps: bool,
    /// Records below this sequence number were verified by an earlier open and are covered by the owner's
    /// own checkpoint: recovery reads only the segments that may hold records from here on, and checks just
    /// the header of the others. Their records are still verified by every read. 0 (the default) verifies all.
    pub verified_before_seq: u64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            segment_size_bytes: 64 << 20,
            fsync_interval: Duration::from_secs(1),
            io_backend: IoBackend::Auto,
            record_bytes_max: 16 << 20,
            new_segment_on_open: false,
            thread_init: None,
            drop_closed_from_cache: false,
            allow_segment_gaps: false,
            verified_before_seq: 0,
        }
    }
}

impl std::fmt::Debug for JournalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalOptions")
            .field("segment_size_bytes", &self.segment_size_bytes)
            .field("fsync_interval", &self.fsync_interval)
            .field("io_backend", &self.io_backend)
            .field("record_bytes_max", &self.record_bytes_max)
            .field("new_segment_on_open", &self.new_segment_on_open)
            .field("thread_init", &self.thread_init.is_some())
            .field("drop_closed_from_cache", &self.drop_closed_from_cache)
            .field("allow_segment_gaps", &self.allow_segment_gaps)
            .field("verified_before_seq", &self.verified_before_seq)
            .finish()
    }
}

impl JournalOptions {
    fn validate(&self) -> Result<(), Error> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_size_bytes) {
            return Err(Error::InvalidArgument(format!(
                "segment_size_bytes {} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                self.segment_size_bytes
            )));
        }
        let fits = self.segment_size_bytes - (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES) as u64;
        if u64::from(self.record_bytes_max) > fits || self.record_bytes_max > frame::PAYLOAD_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "record_bytes_max {} does not fit in a segment of {} bytes (at most {})",
                self.record_bytes_max,
                self.segment_size_bytes,
                fits.min(u64::from(frame::PAYLOAD_BYTES_MAX))
            )));
        }
        if self.fsync_interval.is_zero() {
            return Err(Error::InvalidArgument("fsync_interval must be positive".into()));
        }
        Ok(())
    }
}

/// How far the journal has got: every record up to `written` reached the OS, up to `durable` the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    pub written: u64,
    pub durable: u64,
    /// The journal thread hit an IO error; nothing more will be written or made durable.
    pub failed: bool,
    /// The next segment cannot be created: appends are refused ([`Error::CannotGrow`]) until it can.
    pub cannot_grow: bool,
}

/// How often a journal that cannot create its next segment tries again.
pub const GROW_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Where a record was put: the segment (named by its first sequence number) and the frame's byte offset in
/// it, for reading it back directly ([`Journal::read_located`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    pub seq: u64,
    pub segment: u64,
    pub offset: u64,
    pub payload_len: u32,
}

/// Bytes staged for one segment; `new_segment` says the segment must be created first.
struct Chunk {
    new_segment: Option<u64>,
    bytes: Vec<u8>,
    last_seq: u64,
}

struct State {
    next_seq: u64,
    /// Bytes assigned in the segment the newest chunk lands in, header included.
    segment_used: u64,
    /// The first sequence number of the segment the newest chunk lands in.
    segment_first: u64,
    chunks: Vec<Chunk>,
    pending_bytes: usize,
    spare: Vec<Vec<u8>>,
    marks: Marks,
    durable_wanted: u64,
    failure: Option<String>,
    /// Why the next segment cannot be created, while it cannot ([`Marks::cannot_grow`]).
    cannot_grow: Option<String>,
    /// When the journal thread last picked up work or came back from its IO ([`Journal::stalled`]).
    thread_beat: Instant,
    closing: bool,
    writer_idle: bool,
    segments: Vec<SegmentMeta>,
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) record_bytes_max: u32,
    pub(crate) allow_segment_gaps: bool,
    segment_size_bytes: u64,
    fsync_interval: Duration,
    state: Mutex<State>,
    /// Appenders and waiters → journal thread.
    writer_wake: Condvar,
    /// Journal thread → blocked appenders and waiters.
    progress: Condvar,
    marks_tx: watch::Sender<Marks>,
    metrics: Metrics,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug that already stopped the journal thread or an appender; the
        // state itself stays consistent (every update is a few assignments), so keep serving what we can.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The segments and the last readable sequence number, for readers.
    pub(crate) fn view(&self) -> (Vec<SegmentMeta>, u64) {
        let st = self.lock();
        (st.segments.clone(), st.marks.written)
    }
}

/// An open journal. Dropping it closes it (flush and fsync); [`Journal::close`] reports errors.
pub struct Journal {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    backend_name: &'static str,
    /// Held for the journal's lifetime: one process per journal directory.
    _lock: File,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.shared.dir)
            .field("backend", &self.backend_name)
            .finish()
    }
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`: recovers, truncates a torn tail, starts the journal thread.
    pub fn open(dir: &Path, options: JournalOptions) -> Result<(Journal, RecoveryReport), Error> {
        Journal::open_visiting(dir, options, &mut |_, _| {})
    }

    /// [`Journal::open`], calling `visit` with every record recovery verifies, in order (its location and
    /// payload): an owner that indexes its records (the bookie) builds its index from the same single read of
    /// the journal. If the open fails, what was visited is meaningless.
    pub fn open_visiting(
        dir: &Path,
        options: JournalOptions,
        visit: &mut dyn FnMut(Location, &[u8]),
    ) -> Result<(Journal, RecoveryReport), Error> {
        options.validate()?;
        // Durably: a directory entry no fsync covered is lost with the power, and every segment in it too.
        logtank_durable::create_dir_all_durably(dir)?;
        let lock_path = dir.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_path(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked(dir.to_path_buf())),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::Io {
                    path: lock_path,
                    source: e,
                })
            }
        }
        let report = recovery::recover(
            dir,
            options.record_bytes_max,
            Mode::Repair,
            recovery::Skip {
                gaps: options.allow_segment_gaps,
                verified_before_seq: options.verified_before_seq,
            },
            visit,
        )?;
        let backend = Backend::open(options.io_backend).map_err(|source| Error::Io {
            path: dir.into(),
            source,
        })?;
        let backend_name = backend.name();

        let mut segments = report.segments.clone();
        let has_records = report.tail_offset > SEGMENT_HEADER_BYTES as u64;
        // What a crashed predecessor wrote may still sit unsynced in the page cache: make it durable before
        // anything is stacked on top of it (or a new segment starts), so `durable` below is the truth.
        if let Some(last) = segments.last() {
            segment::open_existing(&last.path)?
                .sync_data()
                .with_path(&last.path)?;
        }
        let reuse_last = !(options.new_segment_on_open && has_records);
        // A new segment at open that cannot be created (a full or failing disk) is not a reason to fail the
        // open, when there is a last one to go on in: a daemon restarted on a full disk would otherwise exit
        // and be restarted in a loop. Appends are refused once that one is full, as at any roll.
        let fresh = match segments.last() {
            Some(_) if reuse_last => None,
            last => match segment::create(dir, report.next_seq, options.segment_size_bytes) {
                Ok(created) => Some(created),
                Err(e @ Error::Io { .. }) if last.is_some() => {
                    log::warn!(
                        "journal {}: cannot start a new segment at open ({e}); appending to the last one",
                        dir.display()
                    );
                    None
                }
                Err(e) => return Err(e),
            },
        };
        let (file, offset, segment_first) = match fresh {
            Some((meta, file)) => {
                segments.push(meta);
                (file, SEGMENT_HEADER_BYTES as u64, report.next_seq)
            }
            None => {
                // Without a last segment a new one was made, or its error returned, above.
                let last = segments
                    .last()
                    .ok_or_else(|| Error::InvalidArgument("no journal segment to append to".into()))?;
                (
                    segment::open_existing(&last.path)?,
                    report.tail_offset,
                    last.first_seq,
                )
            }
        };
        let last_seq = report.next_seq - 1;
        let marks = Marks {
            written: last_seq,
            durable: last_seq,
            failed: false,
            cannot_grow: false,
        };
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            record_bytes_max: options.record_bytes_max,
            allow_segment_gaps: options.allow_segment_gaps,
            segment_size_bytes: options.segment_size_bytes,
            fsync_interval: options.fsync_interval,
            state: Mutex::new(State {
                next_seq: report.next_seq,
                segment_used: offset,
                segment_first,
                chunks: Vec::new(),
                pending_bytes: 0,
                spare: Vec::new(),
                marks,
                durable_wanted: 0,
                failure: None,
                cannot_grow: None,
                thread_beat: Instant::now(),
                closing: false,
                writer_idle: false,
                segments,
            }),
            writer_wake: Condvar::new(),
            progress: Condvar::new(),
            marks_tx: watch::Sender::new(marks),
            metrics: Metrics::default(),
        });
        let spare =
            segment::SparePreparer::start(dir, options.segment_size_bytes, options.thread_init.clone())
                .map_err(|source| Error::Io {
                    path: dir.into(),
                    source,
                })?;
        let thread_shared = Arc::clone(&shared);
        let thread_init = options.thread_init.clone();
        let drop_closed_from_cache = options.drop_closed_from_cache;
        let thread = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || {
                if let Some(init) = thread_init {
                    init();
                }
                JournalThread {
                    shared: thread_shared,
                    backend,
                    file,
                    offset,
                    spare,
                    spare_retry_at: None,
                    drop_closed_from_cache,
                }
                .run();
            })
            .map_err(|source| Error::Io {
                path: dir.into(),
                source,
            })?;
        log::info!(
            "journal {} open: records {}..{} ({} segments), IO path {backend_name}",
            dir.display(),
            report.segments.first().map_or(report.next_seq, |s| s.first_seq),
            last_seq,
            shared.lock().segments.len(),
        );
        Ok((
            Journal {
                shared,
                thread: Some(thread),
                backend_name,
                _lock: lock,
            },
            report,
        ))
    }

    /// Appends one record and returns its sequence number. The record is neither written nor durable yet:
    /// wait with [`Journal::wait_written`] or [`Journal::wait_durable`] (or their async twins).
    pub fn append(&self, payload: &[u8]) -> Result<u64, Error> {
        self.append_many(std::slice::from_ref(&payload))
            .map(|range| range.1)
    }

    /// Appends records back to back, in order, and returns the first and last sequence numbers.
    pub fn append_many<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<(u64, u64), Error> {
        self.append_inner(payloads, None)
    }

    /// [`Journal::append_many`], also saying where each record goes (pushed to `locations`, in order), so an
    /// owner that indexes its records can read one back directly with [`Journal::read_located`].
    pub fn append_many_located<P: AsRef<[u8]>>(
        &self,
        payloads: &[P],
        locations: &mut Vec<Location>,
    ) -> Result<(u64, u64), Error> {
        self.append_inner(payloads, Some(locations))
    }

    fn append_inner<P: AsRef<[u8]>>(
        &self,
        payloads: &[P],
        mut locations: Option<&mut Vec<Location>>,
    ) -> Result<(u64, u64), Error> {
        if payloads.is_empty() {
            return Err(Error::InvalidArgument("append of no records".into()));
        }
        let shared = &*self.shared;
        let max = shared.record_bytes_max;
        let mut total = 0;
        for p in payloads {
            let len = p.as_ref().len();
            if len > max as usize {
                return Err(Error::RecordTooLarge { len, max });
            }
            total += frame::frame_len(len);
        }
        let mut st = shared.lock();
        loop {
            if let Some(failure) = &st.failure {
                return Err(Error::Failed(failure.clone()));
            }
            if st.closing {
                return Err(Error::Closed);
            }
            if let Some(why) = &st.cannot_grow {
                return Err(Error::CannotGrow(why.clone()));
            }
            if st.pending_bytes == 0 || st.pending_bytes + total <= PENDING_BYTES_MAX {
                break;
            }
            st = shared.progress.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        let first = st.next_seq;
        for p in payloads {
            let payload = p.as_ref();
            let seq = st.next_seq;
            st.next_seq += 1;
            let len = frame::frame_len(payload.len()) as u64;
            let roll = st.segment_used + len > shared.segment_size_bytes;
            if roll {
                st.segment_used = SEGMENT_HEADER_BYTES as u64;
                st.segment_first = seq;
            }
            if let Some(out) = locations.as_deref_mut() {
                out.push(Location {
                    seq,
                    segment: st.segment_first,
                    offset: st.segment_used,
                    payload_len: payload.len() as u32,
                });
            }
            if roll || st.chunks.is_empty() {
                let bytes = st.spare.pop().unwrap_or_default();
                st.chunks.push(Chunk {
                    new_segment: roll.then_some(seq),
                    bytes,
                    last_seq: seq,
                });
            }
            let hint = st.marks.durable;
            let Some(chunk) = st.chunks.last_mut() else {
                unreachable!("a chunk was pushed above")
            };
            encode_frame(&mut chunk.bytes, seq, hint, payload);
            chunk.last_seq = seq;
            st.segment_used += len;
        }
        st.pending_bytes += total;
        let last = st.next_seq - 1;
        if st.writer_idle {
            shared.writer_wake.notify_one();
        }
        drop(st);
        shared.metrics.appends.inc_by(payloads.len() as u64);
        shared
            .metrics
            .appended_bytes
            .inc_by(payloads.iter().map(|p| p.as_ref().len() as u64).sum());
        Ok((first, last))
    }

    /// Blocks until record `seq` reached the OS (survives a crash of this process, not of the machine).
    pub fn wait_written(&self, seq: u64) -> Result<(), Error> {
        self.wait_blocking(seq, false)
    }

    /// Blocks until record `seq` is on disk (fsynced). Waiters that arrive together share one fsync.
    pub fn wait_durable(&self, seq: u64) -> Result<(), Error> {
        self.wait_blocking(seq, true)
    }

    fn wait_blocking(&self, seq: u64, durable: bool) -> Result<(), Error> {
        let shared = &*self.shared;
        let mut st = shared.lock();
        check_appended(&st, seq)?;
        loop {
            if let Some(failure) = &st.failure {
                return Err(Error::Failed(failure.clone()));
            }
            let reached = if durable {
                st.marks.durable
            } else {
                st.marks.written
            };
            if reached >= seq {
                return Ok(());
            }
            if durable && st.durable_wanted < seq {
                st.durable_wanted = seq;
                if st.writer_idle {
                    shared.writer_wake.notify_one();
                }
            }
            st = shared.progress.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Asks for an fsync covering record `seq` without waiting for it: for a caller that follows progress
    /// through [`Journal::subscribe`] (an event loop must not block, and one `durable` future per request
    /// would cost a watch receiver each).
    pub fn request_durable(&self, seq: u64) -> Result<(), Error> {
        let mut st = self.shared.lock();
        check_appended(&st, seq)?;
        if st.marks.durable < seq && st.durable_wanted < seq {
            st.durable_wanted = seq;
            if st.writer_idle {
                self.shared.writer_wake.notify_one();
            }
        }
        Ok(())
    }

    /// Async twin of [`Journal::wait_written`]; never blocks the executor.
    pub async fn written(&self, seq: u64) -> Result<(), Error> {
        check_appended(&self.shared.lock(), seq)?;
        self.wait_marks(|m| m.written >= seq).await
    }

    /// Async twin of [`Journal::wait_durable`]; never blocks the executor.
    pub async fn durable(&self, seq: u64) -> Result<(), Error> {
        self.request_durable(seq)?;
        self.wait_marks(|m| m.durable >= seq).await
    }

    async fn wait_marks(&self, reached: impl Fn(&Marks) -> bool) -> Result<(), Error> {
        let mut rx = self.shared.marks_tx.subscribe();
        let marks = *rx
            .wait_for(|m| m.failed || reached(m))
            .await
            .map_err(|_| Error::Closed)?;
        if marks.failed && !reached(&marks) {
            let failure = self.shared.lock().failure.clone().unwrap_or_default();
            return Err(Error::Failed(failure));
        }
        Ok(())
    }

    /// A receiver of progress, e.g. for following the tail of the journal.
    pub fn subscribe(&self) -> watch::Receiver<Marks> {
        self.shared.marks_tx.subscribe()
    }

    /// How long the journal thread has been stuck, if it is: records are waiting to be written or made
    /// durable and it has not come back from its IO for longer than `limit` (a hung disk). A daemon stops
    /// feeding its watchdog then, so systemd restarts it (`Daemon::stalled`).
    pub fn stalled(&self, limit: Duration) -> Option<Duration> {
        let st = self.shared.lock();
        let waiting = st.next_seq - 1 > st.marks.written || st.durable_wanted > st.marks.durable;
        let since = st.thread_beat.elapsed();
        (waiting && !st.marks.failed && since > limit).then_some(since)
    }

    /// Why the next segment cannot be created, while it cannot ([`Marks::cannot_grow`]).
    pub fn cannot_grow(&self) -> Option<String> {
        self.shared.lock().cannot_grow.clone()
    }

    pub fn marks(&self) -> Marks {
        self.shared.lock().marks
    }

    /// The sequence number of the last record appended (0 if none ever was).
    pub fn last_appended(&self) -> u64 {
        self.shared.lock().next_seq - 1
    }

    /// Reads records from `seq` on, across segments, up to the last written record at each step.
    pub fn read_from(&self, seq: u64) -> Result<Reader, Error> {
        Reader::live(Arc::clone(&self.shared), seq)
    }

    pub fn segments(&self) -> Vec<SegmentMeta> {
        self.shared.lock().segments.clone()
    }

    /// Deletes whole segments all of whose records are below `seq`; never the segment being appended to.
    /// Returns how many were removed. Open readers keep reading a removed segment they already opened.
    pub fn drop_before(&self, seq: u64) -> Result<usize, Error> {
        let doomed: Vec<SegmentMeta> = {
            let mut st = self.shared.lock();
            let keep_from = st
                .segments
                .windows(2)
                .take_while(|pair| pair[1].first_seq <= seq)
                .count();
            st.segments.drain(..keep_from).collect()
        };
        for meta in &doomed {
            std::fs::remove_file(&meta.path).with_path(&meta.path)?;
            log::info!(
                "journal {}: removed segment {} by retention",
                self.shared.dir.display(),
                meta.path.display()
            );
        }
        if !doomed.is_empty() {
            logtank_durable::fsync_dir(&self.shared.dir)?;
        }
        Ok(doomed.len())
    }

    /// Deletes one closed segment, wherever it is (a journal opened with `allow_segment_gaps`, whose owner
    /// moved every record it still needs out of it). Never the segment being appended to.
    pub fn remove_segment(&self, first_seq: u64) -> Result<(), Error> {
        if !self.shared.allow_segment_gaps {
            return Err(Error::InvalidArgument(
                "remove_segment needs a journal opened with allow_segment_gaps".into(),
            ));
        }
        let meta = {
            let mut st = self.shared.lock();
            let Some(index) = st.segments.iter().position(|s| s.first_seq == first_seq) else {
                return Err(Error::InvalidArgument(format!(
                    "no segment starts at record {first_seq}"
                )));
            };
            if index + 1 == st.segments.len() || st.segment_first == first_seq {
                return Err(Error::InvalidArgument(format!(
                    "segment {first_seq} is the one being appended to"
                )));
            }
            st.segments.remove(index)
        };
        std::fs::remove_file(&meta.path).with_path(&meta.path)?;
        logtank_durable::fsync_dir(&self.shared.dir)?;
        log::info!(
            "journal {}: removed segment {}",
            self.shared.dir.display(),
            meta.path.display()
        );
        Ok(())
    }

    /// The path of the segment that starts at `first_seq`, for reading located records.
    pub fn segment_path(&self, first_seq: u64) -> PathBuf {
        segment::segment_path(&self.shared.dir, first_seq)
    }

    /// Reads back the record at `location` from `file` (its segment, opened by the caller, who may keep it
    /// open for many reads) with one positional read, verifying its checksum and sequence number. The
    /// record must have been written (`Marks::written` ≥ its sequence number).
    pub fn read_located(&self, file: &File, location: &Location) -> Result<Vec<u8>, Error> {
        crate::reader::read_located(
            file,
            &self.segment_path(location.segment),
            location,
            self.shared.record_bytes_max,
        )
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// "io_uring" or "pwrite".
    pub fn backend(&self) -> &'static str {
        self.backend_name
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Writes and fsyncs everything appended, stops the journal thread, and reports a failure if there was one.
    pub fn close(mut self) -> Result<(), Error> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), Error> {
        {
            let mut st = self.shared.lock();
            st.closing = true;
            self.shared.writer_wake.notify_one();
            self.shared.progress.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                return Err(Error::Failed("the journal thread panicked".into()));
            }
        }
        match &self.shared.lock().failure {
            Some(failure) => Err(Error::Failed(failure.clone())),
            None => Ok(()),
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if self.thread.is_some() {
            if let Err(e) = self.shutdown() {
                log::error!("journal {}: {e}", self.shared.dir.display());
            }
        }
    }
}

fn check_appended(st: &State, seq: u64) -> Result<(), Error> {
    if seq >= st.next_seq {
        return Err(Error::InvalidArgument(format!(
            "record {seq} was never appended (the last is {})",
            st.next_seq - 1
        )));
    }
    Ok(())
}

/// The one thread that writes and fsyncs.
struct JournalThread {
    shared: Arc<Shared>,
    backend: Backend,
    file: File,
    offset: u64,
    spare: segment::SparePreparer,
    /// When a spare whose preparation failed is tried again ([`JournalThread::check_spare`]).
    spare_retry_at: Option<Instant>,
    drop_closed_from_cache: bool,
}

impl JournalThread {
    fn run(mut self) {
        let mut last_sync = Instant::now();
        loop {
            let Some((chunks, sync)) = self.next_work(last_sync) else {
                return;
            };
            if chunks.is_empty() && !sync {
                // Woken only to look at the spare again (the journal cannot grow).
                self.check_spare();
                continue;
            }
            let started = Instant::now();
            let bytes: usize = chunks.iter().map(|c| c.bytes.len()).sum();
            let result = self.write_chunks(&chunks, sync);
            if sync {
                self.shared
                    .metrics
                    .fsync_seconds
                    .observe(started.elapsed().as_secs_f64());
                last_sync = Instant::now();
            }
            let mut st = self.shared.lock();
            st.thread_beat = Instant::now();
            match result {
                Ok(()) => {
                    if let Some(last) = chunks.last() {
                        st.marks.written = last.last_seq;
                    }
                    if sync {
                        self.shared.metrics.fsyncs.inc();
                        let made_durable = st.marks.written - st.marks.durable;
                        self.shared.metrics.records_per_fsync.observe(made_durable as f64);
                        st.marks.durable = st.marks.written;
                    }
                }
                Err(e) => {
                    log::error!(
                        "journal {}: {e}; no further writes are accepted",
                        self.shared.dir.display()
                    );
                    st.failure = Some(e.to_string());
                    st.marks.failed = true;
                }
            }
            st.pending_bytes -= bytes;
            for mut chunk in chunks {
                if st.spare.len() < SPARE_BUFFERS_MAX {
                    chunk.bytes.clear();
                    st.spare.push(chunk.bytes);
                }
            }
            let marks = st.marks;
            drop(st);
            self.shared.progress.notify_all();
            self.shared.marks_tx.send_replace(marks);
            if marks.failed {
                return;
            }
            self.check_spare();
        }
    }

    /// Waits for something to do: staged chunks to write, or an fsync that is due. `None` once closed and clean.
    fn next_work(&self, last_sync: Instant) -> Option<(Vec<Chunk>, bool)> {
        let shared = &*self.shared;
        let mut st = shared.lock();
        loop {
            let dirty = st.marks.written > st.marks.durable;
            let due = last_sync.elapsed() >= shared.fsync_interval;
            let wanted = st.durable_wanted > st.marks.durable;
            if !st.chunks.is_empty() {
                // Sync with this write if anyone waits, if the interval is up, or if it is the last write.
                let sync = wanted || due || st.closing;
                st.thread_beat = Instant::now();
                return Some((mem::take(&mut st.chunks), sync));
            }
            if dirty && (wanted || due || st.closing) {
                st.thread_beat = Instant::now();
                return Some((Vec::new(), true));
            }
            if st.closing {
                return None;
            }
            if st.cannot_grow.is_some() && self.spare_retry_at.is_none_or(|at| Instant::now() >= at) {
                return Some((Vec::new(), false));
            }
            st.writer_idle = true;
            st = if st.cannot_grow.is_some() {
                // Wake to try the spare again.
                let left = self.spare_retry_at.map_or(GROW_RETRY_INTERVAL, |at| {
                    at.saturating_duration_since(Instant::now())
                });
                let left = if dirty {
                    left.min(shared.fsync_interval.saturating_sub(last_sync.elapsed()))
                } else {
                    left
                };
                shared
                    .writer_wake
                    .wait_timeout(st, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            } else if dirty {
                let left = shared.fsync_interval.saturating_sub(last_sync.elapsed());
                shared
                    .writer_wake
                    .wait_timeout(st, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            } else {
                shared.writer_wake.wait(st).unwrap_or_else(|p| p.into_inner())
            };
            st.writer_idle = false;
        }
    }

    fn write_chunks(&mut self, chunks: &[Chunk], sync: bool) -> Result<(), Error> {
        let dir = self.shared.dir.clone();
        if chunks.is_empty() {
            return self.backend.sync(&self.file).with_path(&dir);
        }
        for (index, chunk) in chunks.iter().enumerate() {
            if let Some(first_seq) = chunk.new_segment {
                self.roll(first_seq)?;
            }
            let last = index + 1 == chunks.len();
            self.backend
                .write_at(&self.file, &chunk.bytes, self.offset, sync && last)
                .with_path(&dir)?;
            self.offset += chunk.bytes.len() as u64;
        }
        Ok(())
    }

    /// The next segment, waiting for one as long as it cannot be created (a full or failing disk: the
    /// records staged for it wait, new appends are refused with [`Error::CannotGrow`], and the journal goes
    /// on by itself once the disk takes the segment). Fails only if the journal closes meanwhile.
    fn take_spare(&mut self, first_seq: u64) -> Result<(SegmentMeta, File), Error> {
        let dir = self.shared.dir.clone();
        loop {
            let e = match self.spare.take(&dir, first_seq) {
                Ok(taken) => {
                    self.set_cannot_grow(None);
                    return Ok(taken);
                }
                Err(e) => e,
            };
            if self.shared.lock().closing {
                return Err(e);
            }
            self.set_cannot_grow(Some(e.to_string()));
            let mut st = self.shared.lock();
            st.thread_beat = Instant::now(); // Waiting for the disk by design, not stuck in it.
            let _ = self
                .shared
                .writer_wake
                .wait_timeout(st, GROW_RETRY_INTERVAL)
                .unwrap_or_else(|p| p.into_inner());
            self.spare.reorder();
        }
    }

    /// Says early whether the next segment can be made: a spare whose preparation failed refuses appends
    /// now, while the current segment still has room, so no record waits in a roll for a segment that
    /// cannot be created; the spare is tried again every [`GROW_RETRY_INTERVAL`].
    fn check_spare(&mut self) {
        match self.spare.poll() {
            Some(Ok(())) => self.set_cannot_grow(None),
            Some(Err(why)) => {
                self.set_cannot_grow(Some(format!(
                    "{}: {why}",
                    self.shared.dir.join(segment::SPARE_NAME).display()
                )));
                if self.spare_retry_at.is_none_or(|at| Instant::now() >= at) {
                    self.spare.reorder();
                    self.spare_retry_at = Some(Instant::now() + GROW_RETRY_INTERVAL);
                }
            }
            None => {}
        }
    }

    /// Sets or clears [`Marks::cannot_grow`], logging each change once.
    fn set_cannot_grow(&self, why: Option<String>) {
        let mut st = self.shared.lock();
        if st.cannot_grow.is_some() == why.is_some() {
            if why.is_some() {
                st.cannot_grow = why;
            }
            return;
        }
        let dir = self.shared.dir.display();
        match &why {
            Some(why) => log::error!(
                "journal {dir}: cannot create the next segment: {why}; appends are refused until it can (tried \
                 again every {GROW_RETRY_INTERVAL:?})"
            ),
            None => log::info!("journal {dir}: the next segment can be created again; appends go on"),
        }
        st.marks.cannot_grow = why.is_some();
        st.cannot_grow = why;
        let marks = st.marks;
        drop(st);
        self.shared.marks_tx.send_replace(marks);
        self.shared.progress.notify_all();
    }

    /// Makes the current segment durable, then creates the next one.
    fn roll(&mut self, first_seq: u64) -> Result<(), Error> {
        self.backend.sync(&self.file).with_path(&self.shared.dir)?;
        if self.drop_closed_from_cache {
            // Only advice: the data is durable already, and a kernel that ignores it costs nothing but memory.
            if let Err(e) =
                nix::fcntl::posix_fadvise(&self.file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
            {
                log::debug!(
                    "journal {}: posix_fadvise(DONTNEED) of a closed segment: {e}",
                    self.shared.dir.display()
                );
            }
        }
        let (meta, file) = self.take_spare(first_seq)?;
        log::debug!(
            "journal {}: rolled to {}",
            self.shared.dir.display(),
            meta.path.display()
        );
        self.file = file;
        self.offset = SEGMENT_HEADER_BYTES as u64;
        self.shared.lock().segments.push(meta);
        Ok(())
    }
}
