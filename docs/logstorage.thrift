// logtank's storage protocol, as an IDL for Thrift code generators.
//
// These are the services the logtank writer (port 15000), reader (15100) and manager (16000) speak. They
// are wire-compatible with IndexTank's LogStorage: Apache Thrift binary protocol, strict (versioned)
// message headers, no framing, one request at a time per connection. Any Thrift-generated client (for
// example `thrift --gen py docs/logstorage.thrift`, then TSocket + TBufferedTransport + TBinaryProtocol)
// can talk to logtank without changes.
//
// Errors: the services declare no exceptions. Every failure (a bad index_code, a record without docid, a
// readonly or non-master server, data not yet safe to read, an expired page token) comes back as a Thrift
// application exception (TApplicationException) whose message says what went wrong. A message the server
// cannot parse at all gets a PROTOCOL_ERROR exception and the connection is closed; an unknown method gets
// UNKNOWN_METHOD and the connection stays open.
//
// Index codes: index_code becomes a directory name on the storage side. It must be 1 to 128 bytes of
// A-Z a-z 0-9 . _ - and must not start with '.'. Anything else is refused with an application exception.

namespace py logstorage

// One operation on one document, as the API sends it and as segment files store it (records are kept
// exactly in this struct's binary encoding, back to back).
struct LogRecord {
  // Legacy record number. The writer refuses a record that carries it: leave it unset.
  1: optional i64 id,
  // Set by the writer from its own clock when it logs the record; whatever the client sends is replaced.
  2: optional i64 timestamp_ms,
  // The index the record belongs to. Required when writing; records read back from one index's log
  // come without it (the index is the one asked for).
  3: optional string index_code,
  // The document's id within its index. Required.
  4: string docid,
  // True: the document is deleted. With fields, variables or categories as well: delete, then add those.
  5: bool deleted,
  // The whole document (replaces earlier fields of the same docid).
  6: optional map<string, string> fields,
  // Scoring variables by number (merged into earlier ones of the same docid).
  7: optional map<i32, double> variables,
  // Facet categories (merged into earlier ones of the same docid).
  8: optional map<string, string> categories,
}

// A group of records sent or returned together. A batch is not atomic: a failure midway may leave the
// first records logged, and records of other connections may interleave with them.
struct LogBatch {
  1: list<LogRecord> records,
}

// Which part of an index's log a page token points into.
enum PageType {
  initial = 0,
  optimized = 1,
  index = 2,
  live = 3,
}

// Where a paged read continues. Clients treat it as opaque: send the token of the previous page back
// unchanged (or a fresh token, type initial, to start from the beginning). A token can expire when the
// segments it points into are compacted away; the reader then answers with an application exception and
// the client starts again from a fresh token.
struct LogPageToken {
  1: optional PageType type = PageType.initial,
  2: optional i64 timestamp,
  5: optional i64 file_position,
  7: optional PageType next_type,
  8: optional i64 next_timestamp,
  // Field ids 3, 4 and 6 belonged to fields no longer used; they are ignored if sent.
}

// One page of an index's records. No next_page_token means the end of the log: the client has read
// everything there was when the page was made.
struct LogPage {
  1: LogBatch batch,
  2: optional LogPageToken next_page_token,
}

// One segment file of the log. timestamp names the segment; the lengths and end_timestamp may be unset.
struct SegmentInfo {
  1: i64 timestamp,
  2: optional i64 end_timestamp,
  3: optional i64 valid_length,
  4: optional i64 actual_length,
  5: i32 record_count,
  6: bool sorted,
}

// The writer's raw log: segments not yet dealt to their indexes, and where the dealer continues.
struct RawLogInfo {
  1: list<SegmentInfo> undealt_segments,
  2: i64 dealer_next_timestamp,
}

// One index's log: its optimized snapshot, sorted and unsorted segments, and counts the optimizer uses.
struct IndexLogInfo {
  1: list<SegmentInfo> optimized_segments,
  2: list<SegmentInfo> sorted_segments,
  3: list<SegmentInfo> unsorted_segments,
  4: i64 optimized_record_count,
  5: i64 unoptimized_record_count,
  6: i32 unoptimized_segments,
  7: i64 last_optimization_timestamp,
}

// An index's place in the optimization queue: higher priority first, then higher score.
struct QueueScore {
  1: i32 priority,
  2: double score,
}

// Port 15000. Appends records to the raw log.
service LogWriter {
  // Logs every record of the batch. The reply comes once the records are written (or, when the server is
  // configured for it, once they are fsynced); an exception names the first record refused and why.
  void send_batch(1: LogBatch batch),
}

// Port 15100. Reads one index's log in pages, for recovering an index engine.
service LogReader {
  LogPage read_page(1: string index_code, 2: LogPageToken token),
}

// Port 16000. Inspection and maintenance of the stored logs.
service LogManager {
  IndexLogInfo get_index_log_info(1: string index_code),
  RawLogInfo get_raw_log_info(),
  // Asks for the index's segments to be merged into a new optimized snapshot.
  void enqueue_for_optimization(1: string index_code, 2: i32 priority, 3: double score),
  // Deletes the index's log. The deletion is queued: it happens shortly after the reply.
  void delete_index(1: string index_code),
  map<string, QueueScore> get_optimization_queue(),
  // The index codes that have a log on this server.
  list<string> list_existing_indexes(),
}
