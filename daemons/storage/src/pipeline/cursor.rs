//! Reading a docid-sorted segment record by record, and the k-way merge the sorter and optimizer share.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;

use logtank_thrift::binary::Limits;
use logtank_thrift::{codec, LogRecord};

use crate::error::StorageError;
use crate::framed::{FramedFile, Span};

/// Bytes read per step from each merge input: bounded memory however many records a segment holds.
const CURSOR_READ_BYTES: usize = 1 << 20;

/// Records of one per-index segment in file order.
#[derive(Debug)]
pub(crate) struct RecordCursor {
    file: FramedFile,
    span: Span,
    index: usize,
    done: bool,
    limits: Limits,
}

impl RecordCursor {
    pub fn open(path: &Path, limits: &Limits) -> Result<RecordCursor, StorageError> {
        let file = FramedFile::open(path)?.ok_or_else(|| StorageError::Io {
            path: path.into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        Ok(RecordCursor {
            file,
            span: Span::default(),
            index: 0,
            done: false,
            limits: *limits,
        })
    }

    /// The next record, or `None` at the end. A frame or record that fails its check is an error: a
    /// per-index segment is immutable and was fsynced, so that is corruption.
    pub fn next_record(&mut self) -> Result<Option<LogRecord>, StorageError> {
        loop {
            if let Some(frame) = self.span.frames.get(self.index).copied() {
                self.index += 1;
                let payload = self.span.payload(&frame);
                let (record, _) =
                    codec::decode_record(payload, &self.limits).map_err(|e| StorageError::Corrupt {
                        path: self.file.path().into(),
                        offset: frame.offset,
                        reason: format!("undecodable record: {e}"),
                    })?;
                return Ok(Some(record));
            }
            if self.done {
                return Ok(None);
            }
            let offset = self.span.next_offset;
            let span = self.file.read_span(offset, CURSOR_READ_BYTES)?;
            if let Some(bad) = &span.bad {
                return Err(StorageError::Corrupt {
                    path: self.file.path().into(),
                    offset: span.next_offset,
                    reason: bad.clone(),
                });
            }
            self.done = span.at_end || span.frames.is_empty();
            self.span = span;
            self.index = 0;
        }
    }
}

/// Merges docid-sorted inputs (oldest first). For each docid, in docid order, `fold` gets the records of
/// that docid in input order and returns what to write (or nothing).
pub(crate) fn merge_sorted(
    mut inputs: Vec<RecordCursor>,
    mut fold: impl FnMut(Vec<LogRecord>) -> Option<LogRecord>,
    mut emit: impl FnMut(LogRecord) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut heads: Vec<Option<LogRecord>> = Vec::with_capacity(inputs.len());
    let mut heap = BinaryHeap::new();
    for (i, input) in inputs.iter_mut().enumerate() {
        let head = input.next_record()?;
        if let Some(record) = &head {
            heap.push(Reverse((docid(record).to_string(), i)));
        }
        heads.push(head);
    }
    while let Some(Reverse((key, first))) = heap.pop() {
        let mut group = vec![first];
        while let Some(Reverse((next_key, _))) = heap.peek() {
            if *next_key != key {
                break;
            }
            if let Some(Reverse((_, i))) = heap.pop() {
                group.push(i);
            }
        }
        group.sort_unstable();
        let mut records = Vec::with_capacity(group.len());
        for i in group {
            if let Some(record) = heads[i].take() {
                records.push(record);
            }
            let next = inputs[i].next_record()?;
            if let Some(record) = &next {
                let next_key = docid(record);
                if next_key <= key.as_str() {
                    return Err(StorageError::Invalid(format!(
                        "merge input {i} is not sorted by docid: {next_key:?} after {key:?}"
                    )));
                }
                heap.push(Reverse((next_key.to_string(), i)));
            }
            heads[i] = next;
        }
        if let Some(out) = fold(records) {
            emit(out)?;
        }
    }
    Ok(())
}

pub(crate) fn docid(record: &LogRecord) -> &str {
    record.docid.as_deref().unwrap_or("")
}
