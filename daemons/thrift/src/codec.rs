//! The storage protocol's structs ([`crate::types`]) to and from binary-protocol bytes, plus byte-level
//! walks over encoded `LogRecord`s for the paths that move records without decoding them (segment files
//! are encoded records back to back, and `read_page` replies copy them from disk).
//!
//! Decoding follows what Thrift-generated code does: fields may come in any order, a later duplicate
//! wins, unknown field ids are skipped by type, and a known id with the wrong wire type is skipped too.
//! A container whose element types do not match a known field is refused instead (generated code would
//! misread it; we would rather say so than silently drop a document's data).
//!
//! Encoding writes fields in id order, optional ones only when set, like IndexTank's generated Java, so
//! a record we write is byte-identical to one IndexTank writes.

use std::collections::BTreeMap;

use crate::binary::{ttype, Limits, Reader, Writer, PREALLOC_ELEMENTS_MAX};
use crate::types::*;
use crate::DecodeError;

type Result<T> = std::result::Result<T, DecodeError>;

// ---------------------------------------------------------------------------------------------------
// Decoding helpers.

/// Walks one struct's fields up to its STOP byte. `field` decodes a field it knows (matching id and wire
/// type) and returns true; anything it returns false for is skipped. Errors say which field of which
/// struct they happened in.
pub(crate) fn read_struct<'a>(
    r: &mut Reader<'a>,
    name: &str,
    mut field: impl FnMut(&mut Reader<'a>, u8, i16) -> Result<bool>,
) -> Result<()> {
    loop {
        let header = r
            .read_field_header()
            .map_err(|e| e.context(|| format!("in {name}")))?;
        let Some((t, id)) = header else {
            return Ok(());
        };
        let in_field = |e: DecodeError| e.context(|| format!("in field {id} of {name}"));
        if !field(r, t, id).map_err(in_field)? {
            r.skip(t).map_err(in_field)?;
        }
    }
}

/// Refuses a non-empty container whose element types are not the ones the field declares.
fn expect_elements(n: usize, found: &[u8], expected: &[u8], what: &str) -> Result<()> {
    if n > 0 && found != expected {
        let names = |ts: &[u8]| ts.iter().map(|t| ttype::name(*t)).collect::<Vec<_>>().join(", ");
        return Err(DecodeError::Invalid(format!(
            "{what} declares element types ({}) instead of ({})",
            names(found),
            names(expected)
        )));
    }
    Ok(())
}

fn read_owned_string(r: &mut Reader<'_>) -> Result<String> {
    Ok(r.read_string()?.to_owned())
}

fn read_string_map(r: &mut Reader<'_>) -> Result<BTreeMap<String, String>> {
    let (k, v, n) = r.read_map_header()?;
    expect_elements(n, &[k, v], &[ttype::STRING, ttype::STRING], "map<string,string>")?;
    let mut map = BTreeMap::new();
    for _ in 0..n {
        let key = read_owned_string(r)?;
        let value = read_owned_string(r)?;
        map.insert(key, value);
    }
    Ok(map)
}

fn read_i32_double_map(r: &mut Reader<'_>) -> Result<BTreeMap<i32, f64>> {
    let (k, v, n) = r.read_map_header()?;
    expect_elements(n, &[k, v], &[ttype::I32, ttype::DOUBLE], "map<i32,double>")?;
    let mut map = BTreeMap::new();
    for _ in 0..n {
        let key = r.read_i32()?;
        let value = r.read_double()?;
        map.insert(key, value);
    }
    Ok(map)
}

/// A list whose elements `read` decodes; errors name the element.
pub(crate) fn read_list<'a, T>(
    r: &mut Reader<'a>,
    elem: u8,
    what: &str,
    mut read: impl FnMut(&mut Reader<'a>) -> Result<T>,
) -> Result<Vec<T>> {
    let (t, n) = r.read_list_header()?;
    expect_elements(n, &[t], &[elem], what)?;
    let mut items = Vec::with_capacity(n.min(PREALLOC_ELEMENTS_MAX));
    for i in 0..n {
        items.push(read(r).map_err(|e| e.context(|| format!("in element {i} of {what}")))?);
    }
    Ok(items)
}

fn read_page_type(r: &mut Reader<'_>) -> Result<PageType> {
    let v = r.read_i32()?;
    PageType::from_i32(v).ok_or_else(|| {
        DecodeError::Invalid(format!(
            "page type {v} is not one of initial (0), optimized (1), index (2), live (3)"
        ))
    })
}

/// Decodes the struct a decoder was called for from the start of `bytes`, returning the bytes consumed.
fn decode_with<'a, T>(
    bytes: &'a [u8],
    limits: &Limits,
    read: impl FnOnce(&mut Reader<'a>) -> Result<T>,
) -> Result<(T, usize)> {
    let mut r = Reader::new(bytes, limits);
    let value = read(&mut r)?;
    Ok((value, r.position()))
}

// ---------------------------------------------------------------------------------------------------
// LogRecord.

/// Reads one `LogRecord` struct.
pub fn read_record(r: &mut Reader<'_>) -> Result<LogRecord> {
    let mut rec = LogRecord::default();
    read_struct(r, "LogRecord", |r, t, id| {
        match (id, t) {
            (1, ttype::I64) => rec.id = Some(r.read_i64()?),
            (2, ttype::I64) => rec.timestamp_ms = Some(r.read_i64()?),
            (3, ttype::STRING) => rec.index_code = Some(read_owned_string(r)?),
            (4, ttype::STRING) => rec.docid = Some(read_owned_string(r)?),
            (5, ttype::BOOL) => rec.deleted = r.read_bool()?,
            (6, ttype::MAP) => rec.fields = Some(read_string_map(r)?),
            (7, ttype::MAP) => rec.variables = Some(read_i32_double_map(r)?),
            (8, ttype::MAP) => rec.categories = Some(read_string_map(r)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(rec)
}

fn write_string_map(w: &mut Writer<'_>, id: i16, map: &BTreeMap<String, String>) {
    w.field(ttype::MAP, id)
        .map_header(ttype::STRING, ttype::STRING, map.len());
    for (k, v) in map {
        w.string(k).string(v);
    }
}

/// Writes one `LogRecord` struct: fields in id order, each only if set, `deleted` always (IndexTank's
/// generated Java does), then STOP.
pub fn write_record(w: &mut Writer<'_>, r: &LogRecord) {
    if let Some(v) = r.id {
        w.field(ttype::I64, 1).i64(v);
    }
    if let Some(v) = r.timestamp_ms {
        w.field(ttype::I64, 2).i64(v);
    }
    if let Some(v) = &r.index_code {
        w.field(ttype::STRING, 3).string(v);
    }
    if let Some(v) = &r.docid {
        w.field(ttype::STRING, 4).string(v);
    }
    w.field(ttype::BOOL, 5).bool(r.deleted);
    if let Some(m) = &r.fields {
        write_string_map(w, 6, m);
    }
    if let Some(m) = &r.variables {
        w.field(ttype::MAP, 7)
            .map_header(ttype::I32, ttype::DOUBLE, m.len());
        for (k, v) in m {
            w.i32(*k).double(*v);
        }
    }
    if let Some(m) = &r.categories {
        write_string_map(w, 8, m);
    }
    w.stop();
}

pub fn encode_record(out: &mut Vec<u8>, r: &LogRecord) {
    write_record(&mut Writer::new(out), r);
}

/// Decodes the record at the start of `bytes`; returns it and the bytes it took.
pub fn decode_record(bytes: &[u8], limits: &Limits) -> Result<(LogRecord, usize)> {
    decode_with(bytes, limits, read_record)
}

/// The length of the encoded struct at the start of `bytes`, found by skipping (nothing is built). Walks
/// concatenated records fast; `Incomplete` for a record cut short (a torn tail).
pub fn record_len(bytes: &[u8], limits: &Limits) -> Result<usize> {
    let mut r = Reader::new(bytes, limits);
    r.skip(ttype::STRUCT)
        .map_err(|e| e.context(|| "in LogRecord".to_string()))?;
    Ok(r.position())
}

/// Field 3 (`index_code`) of the record at the start of `bytes`, and the record's length. The rest of the
/// record is skipped, not decoded; a duplicate field 3 wins over an earlier one, as in a full decode.
pub fn record_index_code_and_len<'a>(bytes: &'a [u8], limits: &Limits) -> Result<(Option<&'a str>, usize)> {
    let mut r = Reader::new(bytes, limits);
    let mut code = None;
    read_struct(&mut r, "LogRecord", |r, t, id| {
        if (id, t) == (3, ttype::STRING) {
            code = Some(r.read_string()?);
            return Ok(true);
        }
        Ok(false)
    })?;
    Ok((code, r.position()))
}

/// Field 3 (`index_code`) of the record at the start of `bytes`, without decoding the rest.
pub fn record_index_code<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Option<&'a str>> {
    Ok(record_index_code_and_len(bytes, limits)?.0)
}

/// Appends the record at the start of `bytes` to `out` without its `index_code` field (the dealer stores
/// records per index without it), copying every other field's bytes as they are. Returns the bytes of
/// input consumed.
pub fn copy_record_without_index_code(bytes: &[u8], limits: &Limits, out: &mut Vec<u8>) -> Result<usize> {
    let mut r = Reader::new(bytes, limits);
    let mark = out.len();
    let result = (|| loop {
        let start = r.position();
        let Some((t, id)) = r.read_field_header()? else {
            out.push(ttype::STOP);
            return Ok(r.position());
        };
        r.skip(t)
            .map_err(|e| e.context(|| format!("in field {id} of LogRecord")))?;
        if (id, t) != (3, ttype::STRING) {
            out.extend_from_slice(r.since(start));
        }
    })();
    if result.is_err() {
        // Leave `out` as it was, so a caller can retry once more bytes came.
        out.truncate(mark);
    }
    result
}

/// What [`copy_record_for_write`] found in a record: the fields the writer's rules look at (a later
/// duplicate wins, as in a full decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordForWrite<'a> {
    /// Bytes of input the record took.
    pub len: usize,
    /// Field 1 (`id`, legacy) was present.
    pub has_id: bool,
    pub index_code: Option<&'a str>,
    pub docid: Option<&'a str>,
}

/// Appends the record at the start of `bytes` to `out` as the writer stores it, without building it: every
/// field's bytes as sent except `timestamp_ms` (field 2), which is replaced by `timestamp_ms` at the end,
/// followed by `deleted = false` if the record had no `deleted` (field 5 has default requiredness: readers
/// get it on every record, as [`write_record`] writes it).
///
/// Checks exactly what [`decode_record`] checks (UTF-8 strings, the element types of the known maps, every
/// length within `limits`), so whatever this accepts, a later full decode accepts and reads back as the
/// record that was sent, stamped. On error `out` is left as it was.
pub fn copy_record_for_write<'a>(
    bytes: &'a [u8],
    limits: &Limits,
    timestamp_ms: i64,
    out: &mut Vec<u8>,
) -> Result<RecordForWrite<'a>> {
    let mut r = Reader::new_complete(bytes, limits);
    let mark = out.len();
    let mut found = RecordForWrite {
        len: 0,
        has_id: false,
        index_code: None,
        docid: None,
    };
    let mut has_deleted = false;
    let result = (|| loop {
        let start = r.position();
        let header = r
            .read_field_header()
            .map_err(|e| e.context(|| "in LogRecord".to_string()))?;
        let Some((t, id)) = header else {
            let mut w = Writer::new(out);
            w.field(ttype::I64, 2).i64(timestamp_ms);
            if !has_deleted {
                w.field(ttype::BOOL, 5).bool(false);
            }
            w.stop();
            return Ok(r.position());
        };
        let in_field = |e: DecodeError| e.context(|| format!("in field {id} of LogRecord"));
        match (id, t) {
            (1, ttype::I64) => {
                r.read_i64().map_err(in_field)?;
                found.has_id = true;
            }
            (3, ttype::STRING) => found.index_code = Some(r.read_string().map_err(in_field)?),
            (4, ttype::STRING) => found.docid = Some(r.read_string().map_err(in_field)?),
            (5, ttype::BOOL) => {
                r.read_bool().map_err(in_field)?;
                has_deleted = true;
            }
            (6 | 8, ttype::MAP) => check_string_map(&mut r).map_err(in_field)?,
            (7, ttype::MAP) => check_i32_double_map(&mut r).map_err(in_field)?,
            _ => r.skip(t).map_err(in_field)?,
        }
        if id != 2 {
            out.extend_from_slice(r.since(start));
        }
    })();
    match result {
        Ok(len) => Ok(RecordForWrite { len, ..found }),
        Err(e) => {
            out.truncate(mark);
            Err(e)
        }
    }
}

/// [`read_string_map`]'s checks without building the map.
fn check_string_map(r: &mut Reader<'_>) -> Result<()> {
    let (k, v, n) = r.read_map_header()?;
    expect_elements(n, &[k, v], &[ttype::STRING, ttype::STRING], "map<string,string>")?;
    for _ in 0..n {
        r.read_string()?;
        r.read_string()?;
    }
    Ok(())
}

/// [`read_i32_double_map`]'s checks without building the map.
fn check_i32_double_map(r: &mut Reader<'_>) -> Result<()> {
    let (k, v, n) = r.read_map_header()?;
    expect_elements(n, &[k, v], &[ttype::I32, ttype::DOUBLE], "map<i32,double>")?;
    for _ in 0..n {
        r.read_i32()?;
        r.read_double()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// LogBatch, LogPageToken, LogPage.

pub fn read_batch(r: &mut Reader<'_>) -> Result<LogBatch> {
    let mut batch = LogBatch::default();
    read_struct(r, "LogBatch", |r, t, id| {
        match (id, t) {
            (1, ttype::LIST) => batch.records = read_list(r, ttype::STRUCT, "list<LogRecord>", read_record)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(batch)
}

/// Reads one `LogBatch` struct as a [`RawBatch`]: the records' bytes are delimited by skipping, not decoded.
/// A later duplicate field 1 wins, as in [`read_batch`].
pub fn read_batch_raw(r: &mut Reader<'_>) -> Result<RawBatch> {
    let mut batch = RawBatch::default();
    read_struct(r, "LogBatch", |r, t, id| {
        if (id, t) != (1, ttype::LIST) {
            return Ok(false);
        }
        let what = "list<LogRecord>";
        let (elem, n) = r.read_list_header()?;
        expect_elements(n, &[elem], &[ttype::STRUCT], what)?;
        let start = r.position();
        for i in 0..n {
            r.skip(ttype::STRUCT)
                .map_err(|e| e.context(|| format!("in element {i} of {what}")))?;
        }
        batch = RawBatch {
            records: r.since(start).to_vec(),
            count: n,
        };
        Ok(true)
    })?;
    Ok(batch)
}

impl RawBatch {
    /// The batch a client would send for `batch`, as a server reading it raw sees it.
    pub fn from_batch(batch: &LogBatch) -> RawBatch {
        let mut records = Vec::new();
        for record in &batch.records {
            encode_record(&mut records, record);
        }
        RawBatch {
            records,
            count: batch.records.len(),
        }
    }
}

pub fn write_batch(w: &mut Writer<'_>, b: &LogBatch) {
    w.field(ttype::LIST, 1)
        .list_header(ttype::STRUCT, b.records.len());
    for rec in &b.records {
        write_record(w, rec);
    }
    w.stop();
}

pub fn encode_batch(out: &mut Vec<u8>, b: &LogBatch) {
    write_batch(&mut Writer::new(out), b);
}

pub fn decode_batch(bytes: &[u8], limits: &Limits) -> Result<(LogBatch, usize)> {
    decode_with(bytes, limits, read_batch)
}

pub fn read_page_token(r: &mut Reader<'_>) -> Result<LogPageToken> {
    let mut tok = LogPageToken::default();
    read_struct(r, "LogPageToken", |r, t, id| {
        match (id, t) {
            (1, ttype::I32) => tok.page_type = Some(read_page_type(r)?),
            (2, ttype::I64) => tok.timestamp = Some(r.read_i64()?),
            (5, ttype::I64) => tok.file_position = Some(r.read_i64()?),
            (7, ttype::I32) => tok.next_type = Some(read_page_type(r)?),
            (8, ttype::I64) => tok.next_timestamp = Some(r.read_i64()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(tok)
}

/// Fields 3, 4 and 6 (IndexTank's obsolete ones) are never written.
pub fn write_page_token(w: &mut Writer<'_>, tok: &LogPageToken) {
    if let Some(v) = tok.page_type {
        w.field(ttype::I32, 1).i32(v.to_i32());
    }
    if let Some(v) = tok.timestamp {
        w.field(ttype::I64, 2).i64(v);
    }
    if let Some(v) = tok.file_position {
        w.field(ttype::I64, 5).i64(v);
    }
    if let Some(v) = tok.next_type {
        w.field(ttype::I32, 7).i32(v.to_i32());
    }
    if let Some(v) = tok.next_timestamp {
        w.field(ttype::I64, 8).i64(v);
    }
    w.stop();
}

pub fn encode_page_token(out: &mut Vec<u8>, tok: &LogPageToken) {
    write_page_token(&mut Writer::new(out), tok);
}

pub fn decode_page_token(bytes: &[u8], limits: &Limits) -> Result<(LogPageToken, usize)> {
    decode_with(bytes, limits, read_page_token)
}

pub fn read_page(r: &mut Reader<'_>) -> Result<LogPage> {
    let mut page = LogPage::default();
    read_struct(r, "LogPage", |r, t, id| {
        match (id, t) {
            (1, ttype::STRUCT) => page.batch = read_batch(r)?,
            (2, ttype::STRUCT) => page.next_page_token = Some(read_page_token(r)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(page)
}

pub fn write_page(w: &mut Writer<'_>, p: &LogPage) {
    w.field(ttype::STRUCT, 1);
    write_batch(w, &p.batch);
    if let Some(tok) = &p.next_page_token {
        w.field(ttype::STRUCT, 2);
        write_page_token(w, tok);
    }
    w.stop();
}

pub fn encode_page(out: &mut Vec<u8>, p: &LogPage) {
    write_page(&mut Writer::new(out), p);
}

pub fn decode_page(bytes: &[u8], limits: &Limits) -> Result<(LogPage, usize)> {
    decode_with(bytes, limits, read_page)
}

/// Writes a `LogPage` whose records are already encoded `LogRecord` structs back to back (copied from a
/// segment file): a `list<struct>` on the wire is the element type, the count, then the structs.
///
/// The next page's token (field 2) comes FIRST, before the records: a client that reads it from the first
/// bytes of the reply can ask for the next page while it is still receiving and walking this one, so the
/// server builds page n+1 while the client parses page n ([`crate::Client::read_pages_raw`]). Field order
/// means nothing to a Thrift reader; [`write_page`] keeps id order, byte for byte what generated code writes.
pub fn write_page_raw(w: &mut Writer<'_>, record_count: usize, records: &[u8], next: Option<&LogPageToken>) {
    if let Some(tok) = next {
        w.field(ttype::STRUCT, 2);
        write_page_token(w, tok);
    }
    w.field(ttype::STRUCT, 1);
    w.field(ttype::LIST, 1).list_header(ttype::STRUCT, record_count);
    w.out.extend_from_slice(records);
    w.stop();
    w.stop();
}

// ---------------------------------------------------------------------------------------------------
// The manager's structs.

pub fn read_segment_info(r: &mut Reader<'_>) -> Result<SegmentInfo> {
    let mut s = SegmentInfo::default();
    read_struct(r, "SegmentInfo", |r, t, id| {
        match (id, t) {
            (1, ttype::I64) => s.timestamp = r.read_i64()?,
            (2, ttype::I64) => s.end_timestamp = Some(r.read_i64()?),
            (3, ttype::I64) => s.valid_length = Some(r.read_i64()?),
            (4, ttype::I64) => s.actual_length = Some(r.read_i64()?),
            (5, ttype::I32) => s.record_count = r.read_i32()?,
            (6, ttype::BOOL) => s.sorted = r.read_bool()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(s)
}

pub fn write_segment_info(w: &mut Writer<'_>, s: &SegmentInfo) {
    w.field(ttype::I64, 1).i64(s.timestamp);
    if let Some(v) = s.end_timestamp {
        w.field(ttype::I64, 2).i64(v);
    }
    if let Some(v) = s.valid_length {
        w.field(ttype::I64, 3).i64(v);
    }
    if let Some(v) = s.actual_length {
        w.field(ttype::I64, 4).i64(v);
    }
    w.field(ttype::I32, 5).i32(s.record_count);
    w.field(ttype::BOOL, 6).bool(s.sorted);
    w.stop();
}

pub fn encode_segment_info(out: &mut Vec<u8>, s: &SegmentInfo) {
    write_segment_info(&mut Writer::new(out), s);
}

pub fn decode_segment_info(bytes: &[u8], limits: &Limits) -> Result<(SegmentInfo, usize)> {
    decode_with(bytes, limits, read_segment_info)
}

fn read_segments(r: &mut Reader<'_>) -> Result<Vec<SegmentInfo>> {
    read_list(r, ttype::STRUCT, "list<SegmentInfo>", read_segment_info)
}

fn write_segments(w: &mut Writer<'_>, id: i16, segments: &[SegmentInfo]) {
    w.field(ttype::LIST, id)
        .list_header(ttype::STRUCT, segments.len());
    for s in segments {
        write_segment_info(w, s);
    }
}

pub fn read_raw_log_info(r: &mut Reader<'_>) -> Result<RawLogInfo> {
    let mut info = RawLogInfo::default();
    read_struct(r, "RawLogInfo", |r, t, id| {
        match (id, t) {
            (1, ttype::LIST) => info.undealt_segments = read_segments(r)?,
            (2, ttype::I64) => info.dealer_next_timestamp = r.read_i64()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(info)
}

pub fn write_raw_log_info(w: &mut Writer<'_>, info: &RawLogInfo) {
    write_segments(w, 1, &info.undealt_segments);
    w.field(ttype::I64, 2).i64(info.dealer_next_timestamp);
    w.stop();
}

pub fn encode_raw_log_info(out: &mut Vec<u8>, info: &RawLogInfo) {
    write_raw_log_info(&mut Writer::new(out), info);
}

pub fn decode_raw_log_info(bytes: &[u8], limits: &Limits) -> Result<(RawLogInfo, usize)> {
    decode_with(bytes, limits, read_raw_log_info)
}

pub fn read_index_log_info(r: &mut Reader<'_>) -> Result<IndexLogInfo> {
    let mut info = IndexLogInfo::default();
    read_struct(r, "IndexLogInfo", |r, t, id| {
        match (id, t) {
            (1, ttype::LIST) => info.optimized_segments = read_segments(r)?,
            (2, ttype::LIST) => info.sorted_segments = read_segments(r)?,
            (3, ttype::LIST) => info.unsorted_segments = read_segments(r)?,
            (4, ttype::I64) => info.optimized_record_count = r.read_i64()?,
            (5, ttype::I64) => info.unoptimized_record_count = r.read_i64()?,
            (6, ttype::I32) => info.unoptimized_segments = r.read_i32()?,
            (7, ttype::I64) => info.last_optimization_timestamp = r.read_i64()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(info)
}

pub fn write_index_log_info(w: &mut Writer<'_>, info: &IndexLogInfo) {
    write_segments(w, 1, &info.optimized_segments);
    write_segments(w, 2, &info.sorted_segments);
    write_segments(w, 3, &info.unsorted_segments);
    w.field(ttype::I64, 4).i64(info.optimized_record_count);
    w.field(ttype::I64, 5).i64(info.unoptimized_record_count);
    w.field(ttype::I32, 6).i32(info.unoptimized_segments);
    w.field(ttype::I64, 7).i64(info.last_optimization_timestamp);
    w.stop();
}

pub fn encode_index_log_info(out: &mut Vec<u8>, info: &IndexLogInfo) {
    write_index_log_info(&mut Writer::new(out), info);
}

pub fn decode_index_log_info(bytes: &[u8], limits: &Limits) -> Result<(IndexLogInfo, usize)> {
    decode_with(bytes, limits, read_index_log_info)
}

pub fn read_queue_score(r: &mut Reader<'_>) -> Result<QueueScore> {
    let mut q = QueueScore::default();
    read_struct(r, "QueueScore", |r, t, id| {
        match (id, t) {
            (1, ttype::I32) => q.priority = r.read_i32()?,
            (2, ttype::DOUBLE) => q.score = r.read_double()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(q)
}

pub fn write_queue_score(w: &mut Writer<'_>, q: &QueueScore) {
    w.field(ttype::I32, 1).i32(q.priority);
    w.field(ttype::DOUBLE, 2).double(q.score);
    w.stop();
}

pub fn encode_queue_score(out: &mut Vec<u8>, q: &QueueScore) {
    write_queue_score(&mut Writer::new(out), q);
}

pub fn decode_queue_score(bytes: &[u8], limits: &Limits) -> Result<(QueueScore, usize)> {
    decode_with(bytes, limits, read_queue_score)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LogRecord {
        LogRecord {
            id: None,
            timestamp_ms: Some(1_325_721_721_123),
            index_code: Some("idx".into()),
            docid: Some("doc1".into()),
            deleted: false,
            fields: Some(BTreeMap::from([
                ("text".into(), "hello".into()),
                ("timestamp".into(), "1".into()),
            ])),
            variables: Some(BTreeMap::from([(0, 1.5), (3, -2.0)])),
            categories: None,
        }
    }

    /// The byte layout IndexTank writes: field headers in id order, `deleted` always, STOP at the end.
    #[test]
    fn record_layout_is_indextanks() {
        let r = LogRecord {
            docid: Some("d".into()),
            ..LogRecord::default()
        };
        let mut out = Vec::new();
        encode_record(&mut out, &r);
        assert_eq!(out, [11, 0, 4, 0, 0, 0, 1, b'd', 2, 0, 5, 0, 0]);
    }

    /// Encoding then decoding gives the record back, and the span helpers agree on its length.
    #[test]
    fn record_round_trip_and_spans() {
        let mut out = Vec::new();
        encode_record(&mut out, &sample());
        let len = out.len();
        out.extend_from_slice(b"next record");
        let limits = Limits::default();
        assert_eq!(decode_record(&out, &limits).unwrap(), (sample(), len));
        assert_eq!(record_len(&out, &limits).unwrap(), len);
        assert_eq!(record_index_code(&out, &limits).unwrap(), Some("idx"));
        let mut stripped = Vec::new();
        assert_eq!(
            copy_record_without_index_code(&out, &limits, &mut stripped).unwrap(),
            len
        );
        let mut expected = sample();
        expected.index_code = None;
        assert_eq!(decode_record(&stripped, &limits).unwrap().0, expected);
    }

    /// Unknown fields and known ids with the wrong wire type are skipped, as generated code does.
    #[test]
    fn unknown_and_mistyped_fields_are_skipped() {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        w.field(ttype::LIST, 99)
            .list_header(ttype::STRING, 2)
            .string("a")
            .string("b");
        w.field(ttype::I32, 4).i32(5); // docid as i32: skipped
        w.field(ttype::STRING, 4).string("doc");
        w.stop();
        let (r, n) = decode_record(&out, &Limits::default()).unwrap();
        assert_eq!(n, out.len());
        assert_eq!(r.docid.as_deref(), Some("doc"));
        assert_eq!(r.fields, None);
    }

    /// Errors say what is wrong and where.
    #[test]
    fn error_names_field_and_struct() {
        let mut out = Vec::new();
        Writer::new(&mut out).field(ttype::STRING, 4).i32(i32::MAX);
        let err = decode_record(&out, &Limits::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "string length 2147483647 exceeds the limit of 16777216 bytes in field 4 of LogRecord"
        );
    }

    /// Every strict prefix of an encoded page is incomplete.
    #[test]
    fn prefixes_are_incomplete() {
        let page = LogPage {
            batch: LogBatch {
                records: vec![sample(), LogRecord::default()],
            },
            next_page_token: Some(LogPageToken {
                page_type: Some(PageType::Live),
                timestamp: Some(5),
                file_position: Some(77),
                next_type: None,
                next_timestamp: Some(9),
            }),
        };
        let mut out = Vec::new();
        encode_page(&mut out, &page);
        for i in 0..out.len() {
            assert_eq!(
                decode_page(&out[..i], &Limits::default()),
                Err(DecodeError::Incomplete),
                "{i}"
            );
        }
        assert_eq!(decode_page(&out, &Limits::default()).unwrap(), (page, out.len()));
    }
}
