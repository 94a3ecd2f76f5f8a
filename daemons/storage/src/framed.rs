//! Reading and writing segment files in the journal's format (logtank-journal's `frame` module): a 32-byte
//! header, then checksummed frames. Raw segments are the writer's journal segments (one frame per batch);
//! per-index segments use the same format with one frame per record, so one verified framing covers every
//! file logtank stores, and `logtank journal verify` works on all of them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use logtank_journal::frame::{self, Decoded, SegmentHeader, SEGMENT_HEADER_BYTES};

use crate::error::{IoContext, StorageError};

/// The largest frame payload read back: a raw batch (the writer's `batch_bytes_max` must stay below it) or
/// one record. A length field above it is corruption or a bad token, never an allocation.
pub const FRAME_PAYLOAD_BYTES_MAX: u32 = 64 << 20;
/// Write buffer of a segment being written.
const WRITE_BUFFER_BYTES: usize = 1 << 20;
/// Smallest read: one syscall fetches many small frames.
const READ_CHUNK_BYTES_MIN: usize = 256 << 10;

/// A segment file opened for reading.
#[derive(Debug)]
pub(crate) struct FramedFile {
    path: PathBuf,
    file: File,
    len: u64,
    pub first_seq: u64,
}

/// One frame read back: its offset in the file and where its payload sits in [`Span::buf`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpanFrame {
    pub offset: u64,
    pub seq: u64,
    pub payload: (usize, usize),
}

/// Frames read from one position on.
#[derive(Debug, Default)]
pub(crate) struct Span {
    pub buf: Vec<u8>,
    pub frames: Vec<SpanFrame>,
    /// The offset just past the last frame returned: where the next read starts.
    pub next_offset: u64,
    /// Nothing more is written after `next_offset` (zeros or the end of the file).
    pub at_end: bool,
    /// A frame at `next_offset` failed its check (a torn tail of a segment being written, or corruption).
    pub bad: Option<String>,
}

impl Span {
    pub fn payload(&self, frame: &SpanFrame) -> &[u8] {
        &self.buf[frame.payload.0..frame.payload.1]
    }
}

impl FramedFile {
    /// Opens `path`; `Ok(None)` when it does not exist (a segment moved or removed meanwhile).
    pub fn open(path: &Path) -> Result<Option<FramedFile>, StorageError> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).at(path),
        };
        let len = file.metadata().at(path)?.len();
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        if len < SEGMENT_HEADER_BYTES as u64 {
            return Err(StorageError::Corrupt {
                path: path.into(),
                offset: 0,
                reason: "shorter than a segment header".into(),
            });
        }
        file.read_exact_at(&mut header, 0).at(path)?;
        let header = SegmentHeader::decode(&header).map_err(|e| StorageError::Corrupt {
            path: path.into(),
            offset: 0,
            reason: e.to_string(),
        })?;
        Ok(Some(FramedFile {
            path: path.into(),
            file,
            len,
            first_seq: header.first_seq,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length when opened (a preallocated raw segment: its full size, zeros after the data).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Reads whole frames starting at `offset` until `budget_bytes` of file are consumed (the frame crossing
    /// the budget is finished), the data ends, or a frame fails its check.
    pub fn read_span(&self, offset: u64, budget_bytes: usize) -> Result<Span, StorageError> {
        let offset = offset.max(SEGMENT_HEADER_BYTES as u64);
        let mut span = Span {
            next_offset: offset,
            ..Span::default()
        };
        if offset >= self.len {
            span.at_end = true;
            return Ok(span);
        }
        let want = budget_bytes.max(READ_CHUNK_BYTES_MIN);
        self.fill(&mut span.buf, offset, want)?;
        let mut pos = 0usize;
        loop {
            if pos >= budget_bytes && !span.frames.is_empty() {
                break;
            }
            match frame::decode_frame(&span.buf[pos..], FRAME_PAYLOAD_BYTES_MAX) {
                Decoded::Frame(f) => {
                    let start = pos + frame::FRAME_HEADER_BYTES;
                    span.frames.push(SpanFrame {
                        offset: offset + pos as u64,
                        seq: f.seq,
                        payload: (start, start + f.payload.len()),
                    });
                    pos += f.frame_len;
                }
                Decoded::End => {
                    span.at_end = true;
                    break;
                }
                Decoded::Invalid(frame::Invalid::Truncated)
                    if offset + (span.buf.len() as u64) < self.len =>
                {
                    // The chunk ends inside this frame: read the rest of it (its length is in the header,
                    // bounded by FRAME_PAYLOAD_BYTES_MAX) and decode again.
                    let more = frame_bytes_needed(&span.buf[pos..]).max(READ_CHUNK_BYTES_MIN);
                    let have = span.buf.len();
                    let extra = self.fill_more(&mut span.buf, offset + have as u64, more)?;
                    if extra == 0 {
                        span.at_end = true;
                        break;
                    }
                }
                Decoded::Invalid(frame::Invalid::Truncated) => {
                    // The file ends inside a frame: a torn tail, or a file cut short.
                    span.bad = Some("the file ends inside a record".into());
                    break;
                }
                Decoded::Invalid(why) => {
                    span.bad = Some(why.to_string());
                    break;
                }
            }
            if offset + pos as u64 >= self.len {
                span.at_end = true;
                break;
            }
        }
        span.next_offset = offset + pos as u64;
        Ok(span)
    }

    fn fill(&self, buf: &mut Vec<u8>, offset: u64, want: usize) -> Result<(), StorageError> {
        self.fill_more(buf, offset, want).map(|_| ())
    }

    fn fill_more(&self, buf: &mut Vec<u8>, offset: u64, want: usize) -> Result<usize, StorageError> {
        let available = self.len.saturating_sub(offset);
        let n = (want as u64).min(available) as usize;
        let start = buf.len();
        buf.resize(start + n, 0);
        let mut done = 0;
        while done < n {
            match self.file.read_at(&mut buf[start + done..], offset + done as u64) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).at(&self.path),
            }
        }
        buf.truncate(start + done);
        Ok(done)
    }
}

/// How many more bytes the frame starting at `bytes` needs, from its length field (or a header's worth).
fn frame_bytes_needed(bytes: &[u8]) -> usize {
    if bytes.len() < frame::FRAME_HEADER_BYTES {
        return frame::FRAME_HEADER_BYTES;
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]).min(FRAME_PAYLOAD_BYTES_MAX);
    frame::frame_len(len as usize).saturating_sub(bytes.len())
}

/// A per-index segment being written under a temporary name; [`SegmentWriter::finish`] makes it durable
/// and gives it its final name.
#[derive(Debug)]
pub(crate) struct SegmentWriter {
    tmp: PathBuf,
    out: BufWriter<File>,
    next_seq: u64,
    frame: Vec<u8>,
    bytes: u64,
}

impl SegmentWriter {
    /// Starts `dir/.tmp-<label>`; a leftover of a crash under that name is overwritten.
    pub fn create(dir: &Path, label: &str) -> Result<SegmentWriter, StorageError> {
        SegmentWriter::create_buffered(dir, label, WRITE_BUFFER_BYTES)
    }

    /// [`SegmentWriter::create`] with a write buffer of `buffer_bytes` (the dealer writes many at once).
    pub fn create_buffered(
        dir: &Path,
        label: &str,
        buffer_bytes: usize,
    ) -> Result<SegmentWriter, StorageError> {
        logtank_durable::create_dir_all_durably(dir)?;
        let tmp = dir.join(format!(".tmp-{label}"));
        let file = File::create(&tmp).at(&tmp)?;
        let mut out = BufWriter::with_capacity(buffer_bytes, file);
        out.write_all(&SegmentHeader { first_seq: 1 }.encode()).at(&tmp)?;
        Ok(SegmentWriter {
            tmp,
            out,
            next_seq: 1,
            frame: Vec::new(),
            bytes: SEGMENT_HEADER_BYTES as u64,
        })
    }

    pub fn append(&mut self, payload: &[u8]) -> Result<(), StorageError> {
        if payload.len() > FRAME_PAYLOAD_BYTES_MAX as usize {
            return Err(StorageError::Invalid(format!(
                "a record of {} bytes exceeds the segment limit of {FRAME_PAYLOAD_BYTES_MAX}",
                payload.len()
            )));
        }
        self.frame.clear();
        frame::encode_frame(&mut self.frame, self.next_seq, self.next_seq, payload);
        self.out.write_all(&self.frame).at(&self.tmp)?;
        self.bytes += self.frame.len() as u64;
        self.next_seq += 1;
        Ok(())
    }

    pub fn records(&self) -> u64 {
        self.next_seq - 1
    }

    /// Flushes, fsyncs, renames to `path` and fsyncs the directory.
    pub fn finish(self, path: &Path) -> Result<u64, StorageError> {
        let SegmentWriter { tmp, out, bytes, .. } = self;
        let file = out.into_inner().map_err(|e| StorageError::Io {
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().at(&tmp)?;
        drop(file);
        logtank_durable::rename_durably(&tmp, path)?;
        Ok(bytes)
    }

    /// Removes the temporary file (the segment is not wanted after all).
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}
