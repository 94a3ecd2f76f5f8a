//! Sequential reads across segments: from a sequence number to the last written record, verifying every frame.
//!
//! A reader never returns a record that fails its checksum or breaks sequence continuity: it returns
//! [`Error::Corrupt`] instead and stops. On a live journal it re-reads the written mark at every step, so it sees
//! records appended after it was created and follows segment rolls.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::frame::{decode_frame, Decoded, SegmentHeader, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::journal::Shared;
use crate::recovery::{self, Mode};
use crate::segment::SegmentMeta;
use crate::{Error, ResultExt};

/// Read-ahead per open segment: large sequential reads.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
    /// The segment (its first sequence number) and byte offset the record was read from.
    pub segment: u64,
    pub offset: u64,
}

impl Record {
    /// Where the record is, for [`crate::Journal::read_located`].
    pub fn location(&self) -> crate::Location {
        crate::Location {
            seq: self.seq,
            segment: self.segment,
            offset: self.offset,
            payload_len: self.payload.len() as u32,
        }
    }
}

enum Source {
    Live(Arc<Shared>),
    /// A journal opened read-only: what recovery verified, fixed.
    Fixed {
        segments: Vec<SegmentMeta>,
        last_seq: u64,
    },
}

impl Source {
    fn view(&self) -> (Vec<SegmentMeta>, u64) {
        match self {
            Source::Live(shared) => shared.view(),
            Source::Fixed { segments, last_seq } => (segments.clone(), *last_seq),
        }
    }
}

struct OpenSegment {
    first_seq: u64,
    path: PathBuf,
    input: BufReader<File>,
    offset: u64,
}

/// An iterator over records; see the module documentation.
pub struct Reader {
    source: Source,
    next_seq: u64,
    record_bytes_max: u32,
    current: Option<OpenSegment>,
    frame: Vec<u8>,
    failed: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

impl Reader {
    pub(crate) fn live(shared: Arc<Shared>, from_seq: u64) -> Result<Reader, Error> {
        let record_bytes_max = shared.record_bytes_max;
        Ok(Reader::new(Source::Live(shared), from_seq, record_bytes_max))
    }

    /// Opens a journal directory for reading only, without repairing anything: verifies every record first
    /// (refusing on corruption, as open does) and reads up to the last valid record, before any torn tail.
    /// Reading a journal a live process appends to is supported only through [`crate::Journal::read_from`].
    pub fn open_dir(
        dir: &Path,
        from_seq: u64,
        record_bytes_max: u32,
    ) -> Result<(Reader, crate::RecoveryReport), Error> {
        let report = recovery::recover(
            dir,
            record_bytes_max,
            Mode::Verify,
            recovery::Skip::default(),
            &mut |_, _| {},
        )?;
        let source = Source::Fixed {
            segments: report.segments.clone(),
            last_seq: report.next_seq - 1,
        };
        Ok((Reader::new(source, from_seq, record_bytes_max), report))
    }

    fn new(source: Source, from_seq: u64, record_bytes_max: u32) -> Reader {
        Reader {
            source,
            next_seq: from_seq.max(1),
            record_bytes_max,
            current: None,
            frame: Vec::new(),
            failed: false,
        }
    }

    /// The sequence number the next record returned will have.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn gaps_allowed(&self) -> bool {
        match &self.source {
            Source::Live(shared) => shared.allow_segment_gaps,
            Source::Fixed { .. } => false,
        }
    }

    fn open_segment_for(&mut self, segments: &[SegmentMeta]) -> Result<(), Error> {
        let Some(meta) = segments.iter().rev().find(|s| s.first_seq <= self.next_seq) else {
            let first_available = segments.first().map_or(1, |s| s.first_seq);
            return Err(Error::Truncated {
                requested: self.next_seq,
                first_available,
            });
        };
        let file = File::open(&meta.path).with_path(&meta.path)?;
        let mut input = BufReader::with_capacity(READ_BUFFER_BYTES, file);
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        input.read_exact(&mut header).with_path(&meta.path)?;
        SegmentHeader::decode(&header).map_err(|e| Error::Corrupt {
            path: meta.path.clone(),
            offset: 0,
            seq: meta.first_seq,
            reason: e.to_string(),
        })?;
        self.current = Some(OpenSegment {
            first_seq: meta.first_seq,
            path: meta.path.clone(),
            input,
            offset: SEGMENT_HEADER_BYTES as u64,
        });
        Ok(())
    }

    fn read_next(&mut self) -> Result<Option<Record>, Error> {
        let (segments, last_seq) = self.source.view();
        let gaps_allowed = self.gaps_allowed();
        if self.next_seq > last_seq {
            return Ok(None);
        }
        if self.current.is_none() {
            self.open_segment_for(&segments)?;
        }
        // Read-ahead may hold bytes from before the journal thread wrote them: on anything but a valid frame,
        // drop the buffer and read the same position once more from the file before judging.
        let mut reread = false;
        loop {
            let Some(seg) = self.current.as_mut() else {
                unreachable!("opened above")
            };
            let frame_start = seg.offset;
            let read = read_frame(seg, &mut self.frame, self.record_bytes_max)?;
            let decoded = read.map(|len| decode_frame(&self.frame[..len], self.record_bytes_max));
            if !matches!(decoded, Some(Decoded::Frame(_))) && !reread {
                reread = true;
                seg.input
                    .seek(SeekFrom::Start(frame_start))
                    .with_path(&seg.path)?;
                seg.offset = frame_start;
                continue;
            }
            match decoded {
                Some(decoded) => {
                    let Decoded::Frame(f) = decoded else {
                        let reason = match decoded {
                            Decoded::Invalid(why) => why.to_string(),
                            _ => "unexpected end of records".to_string(),
                        };
                        return Err(corrupt(seg, frame_start, self.next_seq, reason));
                    };
                    reread = false;
                    if f.seq < self.next_seq {
                        continue; // Skipping to the requested start inside the segment.
                    }
                    if f.seq != self.next_seq {
                        let reason = format!("sequence {} where {} was expected", f.seq, self.next_seq);
                        return Err(corrupt(seg, frame_start, self.next_seq, reason));
                    }
                    self.next_seq += 1;
                    return Ok(Some(Record {
                        seq: f.seq,
                        payload: f.payload.to_vec(),
                        segment: seg.first_seq,
                        offset: frame_start,
                    }));
                }
                None => {
                    // The end of this segment's records: the next one must start exactly here, or (in a
                    // journal whose segments may be removed) later.
                    if segments.iter().any(|s| s.first_seq == self.next_seq) {
                        self.open_segment_for(&segments)?;
                        continue;
                    }
                    if gaps_allowed {
                        if let Some(next) = segments.iter().find(|s| s.first_seq > self.next_seq) {
                            self.next_seq = next.first_seq;
                            self.open_segment_for(&segments)?;
                            continue;
                        }
                    }
                    let reason = "the record is missing (end of segment data)".to_string();
                    return Err(corrupt(seg, frame_start, self.next_seq, reason));
                }
            }
        }
    }
}

/// Reads one whole frame (header, payload, padding) into `buf`; `None` at a zeroed header or end of file.
fn read_frame(
    seg: &mut OpenSegment,
    buf: &mut Vec<u8>,
    record_bytes_max: u32,
) -> Result<Option<usize>, Error> {
    buf.resize(FRAME_HEADER_BYTES, 0);
    match seg.input.read_exact(&mut buf[..FRAME_HEADER_BYTES]) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => {
            return Err(Error::Io {
                path: seg.path.clone(),
                source: e,
            })
        }
    }
    if buf.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len > record_bytes_max {
        // Let the decoder name the problem; nothing past the header is read or allocated.
        return Ok(Some(FRAME_HEADER_BYTES));
    }
    let total = crate::frame::frame_len(len as usize);
    buf.resize(total, 0);
    seg.input
        .read_exact(&mut buf[FRAME_HEADER_BYTES..])
        .with_path(&seg.path)?;
    seg.offset += total as u64;
    Ok(Some(total))
}

/// Reads the one record at `location` of the segment `file` (at `path`, for errors) with one positional
/// read; a frame that fails its checks, or is another record's, is corruption and is never returned.
pub(crate) fn read_located(
    file: &File,
    path: &Path,
    location: &crate::Location,
    record_bytes_max: u32,
) -> Result<Vec<u8>, Error> {
    use std::os::unix::fs::FileExt;
    if location.payload_len > record_bytes_max {
        return Err(Error::InvalidArgument(format!(
            "record of {} bytes exceeds the journal's maximum of {record_bytes_max}",
            location.payload_len
        )));
    }
    let len = crate::frame::frame_len(location.payload_len as usize);
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, location.offset).with_path(path)?;
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        offset: location.offset,
        seq: location.seq,
        reason,
    };
    match decode_frame(&buf, record_bytes_max) {
        Decoded::Frame(f) if f.seq == location.seq && f.payload.len() == location.payload_len as usize => {
            buf.truncate(FRAME_HEADER_BYTES + f.payload.len());
            buf.drain(..FRAME_HEADER_BYTES);
            Ok(buf)
        }
        Decoded::Frame(f) => Err(corrupt(format!(
            "record {} of {} bytes where record {} of {} bytes was written",
            f.seq,
            f.payload.len(),
            location.seq,
            location.payload_len
        ))),
        Decoded::End => Err(corrupt("no record where one was written".into())),
        Decoded::Invalid(why) => Err(corrupt(why.to_string())),
    }
}

fn corrupt(seg: &OpenSegment, offset: u64, seq: u64, reason: String) -> Error {
    Error::Corrupt {
        path: seg.path.clone(),
        offset,
        seq,
        reason,
    }
}

impl Iterator for Reader {
    type Item = Result<Record, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.read_next() {
            Ok(record) => record.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
