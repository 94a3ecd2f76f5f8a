"""Python half of tests/compat/thrift-e2e (run it through that script: it generates the client code first).

Starts logtank-writer and logtank-indexes on ephemeral ports in a temporary data root (with the master and
safe_to_read markers), with small raw segments and small pipeline thresholds so that dealing, sorting (with
external-merge spills), optimizing and cleaning all happen while the test runs. Then, only through a client
that Debian's thrift compiler generated from docs/logstorage.thrift (python3-thrift: TSocket +
TBufferedTransport + strict TBinaryProtocol, as IndexTank's API used):

- two writer connections at once send seeded random batches (adds, field/variable/category updates, bare
  deletes, deletes that re-add, records carrying nothing, empty maps; 1 to ~700 records a batch) to disjoint
  sets of indexes, and the test keeps each index's model (the document state after its records in order,
  the rules of daemons/storage/src/merge.rs `apply`);
- the writer is restarted (SIGTERM, exit 0) in the middle, which must start a new raw segment;
- while the connections write, a reader reads the first index of each connection over and over: each replayed
  state must be the model after one of the batches acknowledged (or in flight) during that read;
- every index is read back page by page three times (in the middle, while the pipeline deals; right after
  the last write; after every index was optimized on request), replayed with the same rules, and compared
  with its model; every record must be well formed (docid set, timestamp_ms stamped by the writer during the
  test, id unset, deleted present, index_code unset or the index asked for);
- the pipeline settles: after enqueue_for_optimization nothing is left outside an index's latest snapshot,
  past the read guard the cleaner leaves that snapshot alone, and the pipeline goes idle;
- every LogManager method is called and its answer checked; delete_index removes a throwaway index;
- refused input comes back as TApplicationException with a message that says what is wrong, and the
  connection stays usable.

Prints one summary line; exit status 1 on any mismatch. Daemon logs: <LOG_DIR>/thrift-e2e/ (the data root is
copied there too on failure).
"""
import argparse
import copy
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

from thrift.Thrift import TApplicationException
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

from logstorage import LogManager, LogReader, LogWriter
from logstorage.ttypes import LogBatch, LogPageToken, LogRecord, QueueScore

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Small on purpose: many raw segments, many per-index segments, sorts that spill, frequent optimizations.
SEGMENT_BYTES = 131072
BATCH_BYTES_MAX = 120000
WRITER_SETTINGS = {
    "writer.segment_size_bytes": SEGMENT_BYTES,
    "writer.batch_bytes_max": BATCH_BYTES_MAX,
}
INDEXES_SETTINGS = {
    "indexes.marker_poll_ms": 50,
    "pipeline.idle_ms": 50,
    "pipeline.page_bytes": 4096,
    "pipeline.sort_unsorted_segments_max": 2,
    "pipeline.sort_unsorted_bytes_max": 131072,
    "pipeline.sort_memory_bytes": 16384,
    "pipeline.optimize_unoptimized_segments_min": 2,
    "pipeline.optimize_inputs_max": 4,
    "pipeline.read_guard_ms": 2000,
}

# Two writer connections, each with its own indexes (so each index's order is its connection's order).
INDEX_SETS = [
    ["alpha", "Beta_2", "long-" + "0123456789" * 12 + "abc"],  # the last one: 128 bytes, the longest allowed
    ["gamma.3-x", "_d"],
]
MAIN_INDEXES = [code for s in INDEX_SETS for code in s]
THROWAWAY = "throwaway-1"
WAIT_MAX_S = 30.0
PAGES_MAX = 50000
RESTARTS_MAX = 3  # expired read positions tolerated per index and read (documented; never expected here)


class Failure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


def wait_for(what, cond, timeout=WAIT_MAX_S, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Failure("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def now_ms():
    return int(time.time() * 1000)


# ---- daemons ------------------------------------------------------------------------------------------

class Daemon:
    """One daemon process, its stderr and stdout appended to log_path; addresses parsed from its log."""

    def __init__(self, name, binary, args, log_path, patterns):
        self.name, self.binary, self.args, self.log_path, self.patterns = name, binary, args, log_path, patterns
        self.proc = None
        self.addrs = {}
        self.starts = 0

    def start(self):
        with open(self.log_path, "a") as log:
            log.write("==== %s start %d: %s %s\n" % (self.name, self.starts + 1, self.binary, " ".join(self.args)))
            log.flush()
            offset = log.tell()
            self.proc = subprocess.Popen([self.binary] + self.args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, env=dict(os.environ, RUST_BACKTRACE="1"))
        self.starts += 1

        def found():
            if self.proc.poll() is not None:
                raise Failure("%s exited with %s at start (log: %s)" % (self.name, self.proc.returncode,
                                                                         self.log_path))
            with open(self.log_path) as f:
                f.seek(offset)
                text = f.read()
            addrs = {}
            for key, pattern in self.patterns.items():
                m = re.search(pattern, text)
                if m:
                    addrs[key] = m.group(1)
            return addrs if len(addrs) == len(self.patterns) else None

        self.addrs = wait_for("%s to log its addresses" % self.name, found)

    def stop(self):
        """SIGTERM; a clean stop exits 0."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failure("%s did not stop within 20 s of SIGTERM (killed)" % self.name)
        self.proc = None
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


def set_args(settings):
    out = []
    for k, v in settings.items():
        out += ["--set", "%s=%s" % (k, v)]
    return out


# ---- the generated client -----------------------------------------------------------------------------

class Conn:
    """One connection with the generated client, as IndexTank's API made them."""

    def __init__(self, service, addr):
        host, port = addr.rsplit(":", 1)
        sock = TSocket.TSocket(host, int(port))
        sock.setTimeout(30000)
        self.transport = TTransport.TBufferedTransport(sock)
        protocol = TBinaryProtocol.TBinaryProtocol(self.transport, strictRead=True, strictWrite=True)
        self.client = service.Client(protocol)
        self.transport.open()

    def close(self):
        self.transport.close()


def encoded_size(obj):
    buf = TTransport.TMemoryBuffer()
    obj.write(TBinaryProtocol.TBinaryProtocol(buf, strictRead=True, strictWrite=True))
    return len(buf.getvalue())


# ---- the model (daemons/storage/src/merge.rs `apply`) ----------------------------------------------------

def apply(docs, r):
    if r.docid is None:
        return
    carries = r.fields is not None or r.variables is not None or r.categories is not None
    if r.deleted:
        docs.pop(r.docid, None)
    if not carries:
        return
    doc = docs.setdefault(r.docid, {"fields": None, "variables": {}, "categories": {}})
    if r.fields is not None:
        doc["fields"] = dict(r.fields)
    if r.variables is not None:
        doc["variables"].update(r.variables)
    if r.categories is not None:
        doc["categories"].update(r.categories)


def diff(code, got, want):
    """A short description of how `got` differs from `want`, or None."""
    if got == want:
        return None
    lines = ["index %r: replayed %d documents, the model has %d" % (code, len(got), len(want))]
    for docid in sorted(set(got) | set(want)):
        if got.get(docid) != want.get(docid):
            lines.append("  %r: replayed %r, model %r" % (docid, got.get(docid), want.get(docid)))
            if len(lines) > 6:
                lines.append("  ...")
                break
    return "\n".join(lines)


# ---- the workload --------------------------------------------------------------------------------------

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789 _-.,;:/\\\"'\u00e9\u00fc\u00df\u65e5\u672c\U0001F600\t\n"
FIELD_NAMES = ["text", "title", "author", "url", "timestamp", "n\u00f6m", ""]
CATEGORY_NAMES = ["color", "size", "brand", "\u8272", ""]
VARIABLE_KEYS = [0, 1, 2, 3, 4, 5, 7, -1, 2**31 - 1, -2**31]
SPECIAL_DOUBLES = [0.0, -0.0, 1.5, -2.25, 1e-300, 1.7976931348623157e308, float("inf"), float("-inf")]


class Workload:
    def __init__(self, rng, codes):
        self.r = rng
        self.codes = codes
        self.docids = {c: ["doc-%d" % i for i in range(120)] + ["d\u00f6c-\u00fc-%d" % i for i in range(20)]
                       + ["x" * 300, "a b/c..d", "\u65e5\u672c-\U0001F600"] for c in codes}

    def text(self, n_max=24):
        r = self.r
        return "".join(r.choice(ALPHABET) for _ in range(r.randint(0, n_max)))

    def fields(self):
        r = self.r
        f = {k: self.text() for k in r.sample(FIELD_NAMES, r.randint(1, 4))}
        if r.random() < 0.03:
            f["text"] = self.text(40) * r.randint(20, 80)  # a few KB
        return f

    def variables(self):
        r = self.r
        return {k: (r.choice(SPECIAL_DOUBLES) if r.random() < 0.2 else r.uniform(-1e6, 1e6))
                for k in r.sample(VARIABLE_KEYS, r.randint(1, 3))}

    def categories(self):
        r = self.r
        return {k: self.text(8) for k in r.sample(CATEGORY_NAMES, r.randint(1, 2))}

    def record(self):
        r = self.r
        code = r.choice(self.codes)
        docid = r.choice(self.docids[code])
        # deleted is a default-requiredness field: leaving it unset must read as false.
        not_deleted = None if r.random() < 0.2 else False
        rec = LogRecord(index_code=code, docid=docid, deleted=not_deleted)
        kind = r.choices(["add", "fields", "variables", "categories", "delete", "readd", "nothing", "empty"],
                         [30, 12, 15, 12, 10, 8, 3, 3])[0]
        if kind == "add":
            rec.fields = self.fields()
            if r.random() < 0.6:
                rec.variables = self.variables()
            if r.random() < 0.5:
                rec.categories = self.categories()
        elif kind == "fields":
            rec.fields = self.fields()
        elif kind == "variables":
            rec.variables = self.variables()
        elif kind == "categories":
            rec.categories = self.categories()
        elif kind == "delete":
            rec.deleted = True
        elif kind == "readd":
            rec.deleted = True
            rec.fields = self.fields()
            if r.random() < 0.5:
                rec.variables = self.variables()
            if r.random() < 0.3:
                rec.categories = self.categories()
        elif kind == "empty":
            which = r.choice(["fields", "variables", "categories"])
            setattr(rec, which, {})
        if r.random() < 0.05:
            rec.timestamp_ms = r.randint(0, 2**40)  # whatever a client sends, the writer stamps its own
        return rec

    def batch(self):
        r = self.r
        x = r.random()
        n = r.randint(300, 700) if x < 0.06 else r.randint(60, 200) if x < 0.2 else r.randint(1, 30)
        records = [self.record() for _ in range(n)]
        batch = LogBatch(records=records)
        while encoded_size(batch) > BATCH_BYTES_MAX - 16384:
            del records[len(records) // 2:]
        return batch


class Writers:
    """Writer connections, one thread each, each owning one of INDEX_SETS. The first index of each set is
    watched: its model after each acknowledged batch of its connection is kept, so a read made while that
    connection writes can be checked against the states it may legitimately see."""

    def __init__(self, seed, models):
        self.models = models
        self.workloads = [Workload(random.Random(seed * 1000 + i), codes)
                          for i, codes in enumerate(INDEX_SETS)]
        self.batches = 0
        self.records = 0
        self.big_batches = 0
        self.lock = threading.Lock()
        self.sent = [0] * len(INDEX_SETS)  # batches sent by connection i (the one in flight included)
        self.acked = [0] * len(INDEX_SETS)
        # WATCHED[i]'s model after connection i's k-th acknowledged batch: states[i][k].
        self.states = [[copy.deepcopy(models[codes[0]])] for codes in INDEX_SETS]

    def run(self, addr, records_per_connection, concurrent_reads=None):
        """Each connection sends batches until it sent `records_per_connection` records;
        `concurrent_reads(done)`, if given, runs on this thread meanwhile."""
        errors = []
        done = threading.Event()
        running = [len(INDEX_SETS)]

        def work(i):
            try:
                conn = Conn(LogWriter, addr)
                sent = 0
                while sent < records_per_connection:
                    batch = self.workloads[i].batch()
                    with self.lock:
                        self.sent[i] += 1
                    conn.client.send_batch(batch)
                    for rec in batch.records:  # acknowledged: now it is history
                        apply(self.models[rec.index_code], rec)
                    state = copy.deepcopy(self.models[INDEX_SETS[i][0]])
                    sent += len(batch.records)
                    with self.lock:
                        self.states[i].append(state)
                        self.acked[i] += 1
                        self.batches += 1
                        self.records += len(batch.records)
                        self.big_batches += len(batch.records) >= 300
                conn.close()
            except Exception as e:  # noqa: BLE001 (reported by the main thread)
                errors.append("writer connection %d: %r" % (i, e))
            finally:
                with self.lock:
                    running[0] -= 1
                    if running[0] == 0:
                        done.set()

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(INDEX_SETS))]
        for t in threads:
            t.start()
        try:
            if concurrent_reads is not None:
                concurrent_reads(done)
        finally:
            for t in threads:
                t.join(120)
                check(not t.is_alive(), "a writer connection hung for 120 s")
        check(not errors, "; ".join(errors))

    def read_while_writing(self, reads, reader_addr):
        """A concurrent_reads for run(): reads the watched indexes over and over while the connections write;
        each replayed state must be the model after some batch acknowledged between the read's start and
        its end (a batch in flight may be seen too, but nothing may be missing or half applied)."""
        def loop(done):
            conn = Conn(LogReader, reader_addr)
            try:
                while not done.is_set():
                    for i, codes in enumerate(INDEX_SETS):
                        with self.lock:
                            lo = self.acked[i]
                        try:
                            docs = reads.read_index(conn.client, codes[0])
                        except Failure as e:
                            if lo == 0 and "does not exist" in str(e):
                                docs = {}  # nothing of this index acknowledged yet: not an index yet
                            else:
                                raise
                        with self.lock:
                            hi = self.sent[i]
                        wait_for("connection %d's batch %d to be acknowledged" % (i, hi),
                                 lambda: self.acked[i] >= hi or done.is_set())
                        if self.acked[i] < hi:
                            return  # that connection failed: run() reports it
                        candidates = self.states[i][lo:hi + 1]
                        if docs not in candidates:
                            d = diff(codes[0], docs, candidates[-1]) if candidates else "no states"
                            raise Failure("a read during writes of %r replayed none of the states after "
                                          "batches %d..%d of its connection; against the last: %s"
                                          % (codes[0], lo, hi, d))
                        reads.concurrent += 1
            finally:
                conn.close()

        return loop


# ---- reading -------------------------------------------------------------------------------------------

class Reads:
    def __init__(self, started_ms):
        self.started_ms = started_ms
        self.pages = 0
        self.records = 0
        self.restarts = 0
        self.with_index_code = 0
        self.concurrent = 0  # reads checked while writes were going on

    def check_record(self, code, rec):
        where = "index %r, record %r" % (code, rec)
        check(isinstance(rec.docid, str) and rec.docid != "", "no docid: " + where)
        check(rec.id is None, "id is set: " + where)
        check(rec.deleted is not None, "deleted is missing: " + where)
        check(isinstance(rec.timestamp_ms, int) and self.started_ms <= rec.timestamp_ms <= now_ms() + 1000,
              "timestamp_ms is not the writer's (the test started at %d): %s" % (self.started_ms, where))
        check(rec.index_code in (None, code), "index_code is another index's: " + where)
        if rec.index_code is not None:
            self.with_index_code += 1

    def read_index(self, reader, code):
        """Every page of `code` from an initial token, replayed; a fresh start if the position expired."""
        for attempt in range(RESTARTS_MAX + 1):
            docs = {}
            token = LogPageToken()
            pages = 0
            try:
                while True:
                    page = reader.read_page(code, token)
                    pages += 1
                    check(page.batch is not None and page.batch.records is not None,
                          "index %r: page %d without a batch" % (code, pages))
                    for rec in page.batch.records:
                        self.check_record(code, rec)
                        apply(docs, rec)
                    self.records += len(page.batch.records)
                    token = page.next_page_token
                    if token is None:
                        break
                    check(pages < PAGES_MAX, "index %r: no end after %d pages" % (code, pages))
                self.pages += pages
                return docs
            except TApplicationException as e:
                self.pages += pages
                if "restart the recovery" not in (e.message or "") or attempt == RESTARTS_MAX:
                    raise Failure("read_page %r (page %d): %s" % (code, pages + 1, e.message))
                self.restarts += 1
        raise AssertionError("unreachable")

    def compare_all(self, reader_addr, models, codes, when):
        conn = Conn(LogReader, reader_addr)
        try:
            for code in codes:
                got = self.read_index(conn.client, code)
                d = diff(code, got, models[code])
                check(d is None, "%s: %s" % (when, d))
        finally:
            conn.close()


# ---- the test ------------------------------------------------------------------------------------------

def expect_error(what, call, *needles, kind=None):
    """`call()` must raise TApplicationException whose message contains every needle."""
    try:
        call()
    except TApplicationException as e:
        msg = e.message or ""
        check(all(n in msg for n in needles),
              "%s: TApplicationException %r does not say %r" % (what, msg, needles))
        if kind is not None:
            check(e.type == kind, "%s: TApplicationException type %s, expected %s" % (what, e.type, kind))
        return msg
    except Exception as e:  # noqa: BLE001
        raise Failure("%s: expected a TApplicationException, got %r" % (what, e))
    raise Failure("%s: accepted, expected a TApplicationException" % what)


def raw_segments(root):
    names = set()
    for sub in ("live", "history"):
        d = os.path.join(root, "storage", "raw", sub)
        if os.path.isdir(d):
            names |= {n for n in os.listdir(d) if n.endswith(".journal")}
    return names


def metrics(admin_addr):
    with urllib.request.urlopen("http://%s/metrics" % admin_addr, timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for m in re.finditer(r"^logtank_indexes_(\w+?)(?:_total)? (\S+)$", text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def check_errors(writer_addr, reader_addr, manager_addr):
    """Refused input: an application exception that says what is wrong; the connection stays usable."""
    w = Conn(LogWriter, writer_addr)
    good = LogRecord(index_code="alpha", docid="never-written", deleted=False, fields={"t": "x"})
    bad_records = [
        ("a record with id set", LogRecord(id=7, index_code="alpha", docid="d", deleted=False, fields={}),
         ("record 2 of the batch", "id")),
        ("an invalid index_code", LogRecord(index_code="../x", docid="d", deleted=False),
         ("record 2 of the batch", "invalid index_code", "../x")),
        ("a missing docid", LogRecord(index_code="alpha", deleted=False, fields={"t": "x"}),
         ("record 2 of the batch", "no docid")),
        ("an empty docid", LogRecord(index_code="alpha", docid="", deleted=False, fields={"t": "x"}),
         ("record 2 of the batch", "empty docid")),
        ("a missing index_code", LogRecord(docid="d", deleted=False, fields={"t": "x"}),
         ("record 2 of the batch", "index_code")),
    ]
    checked = 0
    for what, bad, needles in bad_records:
        # The good record first: the whole batch must be refused (the final comparison proves it was not
        # written: "never-written" would appear in alpha).
        expect_error("send_batch with " + what, lambda: w.client.send_batch(LogBatch([good, bad])),
                     *(needles + ("nothing was written",)))
        checked += 1
    big = LogBatch([LogRecord(index_code="alpha", docid="never-written", deleted=False,
                              fields={"text": "y" * (BATCH_BYTES_MAX + 4096)})])
    expect_error("send_batch larger than writer.batch_bytes_max", lambda: w.client.send_batch(big),
                 "batch_bytes_max")
    checked += 1
    w.client.send_batch(LogBatch([]))  # still usable after every refusal (an empty batch writes nothing)
    w.close()

    r = Conn(LogReader, reader_addr)
    expect_error("read_page of a missing index", lambda: r.client.read_page("no-such-index", LogPageToken()),
                 "no-such-index", "does not exist")
    expect_error("read_page with an invalid index_code", lambda: r.client.read_page("../x", LogPageToken()),
                 "../x", "invalid index_code")
    checked += 2
    # A method of another service on the reader port: UNKNOWN_METHOD, and the connection stays open.
    other = LogWriter.Client(r.client._iprot)
    expect_error("send_batch on the reader port", lambda: other.send_batch(LogBatch([])), "send_batch",
                 kind=TApplicationException.UNKNOWN_METHOD)
    checked += 1
    r.client.read_page("alpha", LogPageToken())
    r.close()

    m = Conn(LogManager, manager_addr)
    expect_error("get_index_log_info of a missing index", lambda: m.client.get_index_log_info("no-such-index"),
                 "no-such-index", "does not exist")
    expect_error("delete_index of a missing index", lambda: m.client.delete_index("no-such-index"),
                 "no-such-index", "does not exist")
    expect_error("enqueue_for_optimization with an invalid index_code",
                 lambda: m.client.enqueue_for_optimization("../x", 1, 1.0), "../x", "invalid index_code")
    checked += 3
    m.client.list_existing_indexes()
    m.close()
    return checked


def brief(info):
    """An IndexLogInfo in one readable line (segments as raw sequence ranges)."""
    if info is None:
        return "None"
    segs = lambda l: "[%s]" % ", ".join("%d-%s" % (s.timestamp, s.end_timestamp) for s in l)  # noqa: E731
    return ("snapshots %s, sorted %s, unsorted %s; snapshot has %d records; unoptimized: %d records in %d segments; "
            "last optimization at %d" % (segs(info.optimized_segments), segs(info.sorted_segments),
                                         segs(info.unsorted_segments), info.optimized_record_count,
                                         info.unoptimized_record_count, info.unoptimized_segments,
                                         info.last_optimization_timestamp))


def wait_for_info(m, code, what, cond, timeout=10.0):
    """Polls get_index_log_info(code) until cond(info); the failure shows the last answer."""
    last = [None]

    def ok():
        last[0] = m.get_index_log_info(code)
        return cond(last[0])

    try:
        wait_for("%r: %s" % (code, what), ok, timeout=timeout)
    except Failure as e:
        raise Failure("%s; get_index_log_info answers: %s" % (e, brief(last[0])))
    return last[0]


def fully_optimized(info):
    """Everything dealt of the index is in its latest snapshot."""
    return (bool(info.optimized_segments) and not info.unsorted_segments and info.unoptimized_record_count == 0
            and info.unoptimized_segments == 0)


def check_manager(manager_addr, models):
    """Every LogManager method; returns a description of what it saw."""
    m = Conn(LogManager, manager_addr).client

    listed = m.list_existing_indexes()
    check(sorted(listed) == sorted(MAIN_INDEXES),
          "list_existing_indexes: %r, expected %r" % (listed, sorted(MAIN_INDEXES)))

    raw = m.get_raw_log_info()
    check(len(raw.undealt_segments) >= 1, "get_raw_log_info: no undealt segment (the writer's head is one)")
    head = raw.undealt_segments[-1]
    check(raw.dealer_next_timestamp > 1 and head.timestamp >= raw.dealer_next_timestamp,
          "get_raw_log_info: dealer at %d, undealt %r" % (raw.dealer_next_timestamp, raw.undealt_segments))

    # An index with something to optimize, queued ahead of everything (lower priority value first).
    infos = {code: m.get_index_log_info(code) for code in MAIN_INDEXES}
    for code, info in infos.items():
        check(info.optimized_record_count >= 0 and info.unoptimized_record_count >= 0
              and info.unoptimized_segments >= 0, "get_index_log_info %r: %r" % (code, info))
        for seg in info.optimized_segments + info.sorted_segments + info.unsorted_segments:
            check(seg.record_count >= 0 and (seg.end_timestamp is None or seg.end_timestamp > seg.timestamp),
                  "get_index_log_info %r: segment %r" % (code, seg))
        if models[code]:
            check(info.optimized_segments or info.sorted_segments or info.unsorted_segments,
                  "get_index_log_info %r: no segments for an index with %d documents" % (code, len(models[code])))
    target = max(MAIN_INDEXES, key=lambda c: infos[c].unoptimized_record_count)
    check(infos[target].unoptimized_record_count > 0, "no index has anything unoptimized: %r" % infos)
    seen = None
    for _ in range(10):  # the pipeline may take it before we look (it polls its queue every cycle)
        enqueued_ms = now_ms()
        m.enqueue_for_optimization(target, -5, 12.5)
        queue = m.get_optimization_queue()
        if target in queue:
            seen = queue[target]
            break
    check(seen == QueueScore(priority=-5, score=12.5),
          "get_optimization_queue never showed %r queued with (-5, 12.5): last saw %r" % (target, seen))
    wait_for("the optimizer to take %r off its queue" % target, lambda: target not in m.get_optimization_queue())
    # Taken off the queue when it starts: its new snapshot follows (unless discovery's optimization, running
    # when we queued it, left nothing to do).
    before = infos[target]
    wait_for_info(m, target, "a snapshot newer than the enqueue_for_optimization (%d) that leaves less unoptimized "
                  "than before (%s)" % (enqueued_ms, brief(before)),
                  lambda i: (i.last_optimization_timestamp >= enqueued_ms - 5 or fully_optimized(i))
                  and not i.unsorted_segments and i.unoptimized_record_count < before.unoptimized_record_count)
    return target


def run(args, log_dir, work):
    started_ms = now_ms() - 1000
    root = os.path.join(work, "data")
    os.makedirs(os.path.join(root, "storage"))
    open(os.path.join(root, "master"), "w").close()
    open(os.path.join(root, "storage", "safe_to_read"), "w").close()
    empty = os.path.join(work, "empty.toml")  # no /etc/logtank file may leak in
    open(empty, "w").close()
    common = ["--config", empty, "--data-root", root, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]

    indexes = Daemon("logtank-indexes", args.indexes,
                     common + ["--manager-listen", "127.0.0.1:0"] + set_args(INDEXES_SETTINGS),
                     os.path.join(log_dir, "indexes.log"),
                     {"reader": r"serving LogReader on (\S+)", "manager": r"serving LogManager on (\S+)",
                      "admin": r"starting: .*, admin (\S+)"})
    writer = Daemon("logtank-writer", args.writer, common + set_args(WRITER_SETTINGS),
                    os.path.join(log_dir, "writer.log"), {"writer": r"serving LogWriter\.send_batch on (\S+)"})
    daemons = [writer, indexes]
    try:
        indexes.start()
        writer.start()
        reader_addr, manager_addr = indexes.addrs["reader"], indexes.addrs["manager"]
        models = {code: {} for code in MAIN_INDEXES + [THROWAWAY]}
        writers = Writers(args.seed, models)
        per_conn = args.records // len(INDEX_SETS)

        # An index that will be deleted: written first, so it is dealt early.
        w = Conn(LogWriter, writer.addrs["writer"])
        throwaway = Workload(random.Random(args.seed), [THROWAWAY])
        batch = LogBatch([throwaway.record() for _ in range(40)])
        w.client.send_batch(batch)
        for rec in batch.records:
            apply(models[THROWAWAY], rec)
        w.close()

        reads = Reads(started_ms)
        writers.run(writer.addrs["writer"], per_conn * 4 // 10, writers.read_while_writing(reads, reader_addr))

        # Restart the writer: its head segment is closed and a new one started.
        before = raw_segments(root)
        rc = writer.stop()
        check(rc == 0, "logtank-writer exited %s on SIGTERM, expected 0" % rc)
        writer.start()
        new = raw_segments(root) - before
        check(len(new) == 1, "a restarted writer must start one new raw segment; new: %r" % sorted(new))

        writers.run(writer.addrs["writer"], per_conn * 3 // 10, writers.read_while_writing(reads, reader_addr))
        errors_checked = check_errors(writer.addrs["writer"], reader_addr, manager_addr)

        # Middle: read everything back while the pipeline deals, sorts and optimizes.
        reads.compare_all(reader_addr, models, MAIN_INDEXES + [THROWAWAY], "read in the middle")

        # The throwaway index: listed once dealt, then deleted.
        m = Conn(LogManager, manager_addr)
        wait_for("%r to be dealt (list_existing_indexes)" % THROWAWAY,
                 lambda: THROWAWAY in m.client.list_existing_indexes())
        m.client.delete_index(THROWAWAY)
        m.close()

        writers.run(writer.addrs["writer"], per_conn - per_conn * 4 // 10 - per_conn * 3 // 10,
                    writers.read_while_writing(reads, reader_addr))
        reads.compare_all(reader_addr, models, MAIN_INDEXES, "read right after the last write")

        m = Conn(LogManager, manager_addr)
        wait_for("%r to disappear from list_existing_indexes after delete_index" % THROWAWAY,
                 lambda: THROWAWAY not in m.client.list_existing_indexes())
        r = Conn(LogReader, reader_addr)
        expect_error("read_page of a deleted index", lambda: r.client.read_page(THROWAWAY, LogPageToken()),
                     THROWAWAY, "does not exist")
        r.close()
        # Everything closed is dealt: only the writer's head is left undealt.
        wait_for("the dealer to deal every closed raw segment",
                 lambda: len(m.client.get_raw_log_info().undealt_segments) == 1)
        m.close()

        optimized = check_manager(manager_addr, models)

        # Every index optimized (queued ahead of discovery) until nothing is left outside its snapshot, then read
        # from it. One round is enough once the pipeline settled (at most optimize_unoptimized_segments_min
        # sorted segments past a snapshot, which fit optimize_inputs_max with it); a second one covers an index
        # that discovery was still working on.
        m = Conn(LogManager, manager_addr).client
        for _ in range(3):
            pending = [c for c in MAIN_INDEXES if not fully_optimized(m.get_index_log_info(c))]
            if not pending:
                break
            for code in pending:
                enqueued_ms = now_ms()
                m.enqueue_for_optimization(code, 0, 1.0)
                wait_for("the optimizer to take %r off its queue" % code,
                         lambda: code not in m.get_optimization_queue())
                wait_for_info(m, code, "a snapshot newer than its enqueue_for_optimization (%d)" % enqueued_ms,
                              lambda i: (i.last_optimization_timestamp >= enqueued_ms - 5 or fully_optimized(i))
                              and not i.unsorted_segments)
        for code in MAIN_INDEXES:
            wait_for_info(m, code, "everything dealt in its latest snapshot after enqueue_for_optimization",
                          fully_optimized, timeout=1)
        reads.compare_all(reader_addr, models, MAIN_INDEXES, "read after optimizing")

        # Past the read guard, the cleaner leaves each index its latest snapshot alone, and the pipeline idles.
        for code in MAIN_INDEXES:
            wait_for_info(m, code, "one snapshot and no other segment once the read guard passed",
                          lambda i: len(i.optimized_segments) == 1 and not i.sorted_segments
                          and not i.unsorted_segments and i.unoptimized_record_count == 0)
        keys = ("dealt_segments", "sorted_indexes", "optimized_indexes", "removed_files")
        last_counts = [None]

        def idle():
            now = tuple(metrics(indexes.addrs["admin"]).get(k) for k in keys)
            same, last_counts[0] = now == last_counts[0], now
            return same

        wait_for("the pipeline to idle (nothing written, everything optimized; %s unchanged over 1 s)"
                 % ", ".join(keys), idle, timeout=10, interval=1.0)
        stats = metrics(indexes.addrs["admin"])
        for key in ("dealt_segments", "sorted_indexes", "optimized_indexes", "removed_files"):
            check(stats.get(key, 0) > 0, "the pipeline never did %s during the test: %r" % (key, stats))
        check(stats.get("pipeline_errors", 0) == 0, "the pipeline failed %s times (see %s)"
              % (stats.get("pipeline_errors"), indexes.log_path))
        segments = len(raw_segments(root))

        for d in daemons:
            rc = d.stop()
            check(rc == 0, "%s exited %s on SIGTERM, expected 0" % (d.name, rc))
        docs = sum(len(models[c]) for c in MAIN_INDEXES)
        return ("%d indexes, %d records in %d batches (%d of 300+ records) over %d connections, writer restarted "
                "once, %d raw segments; %d reads during writes each matched a state of their window; 3 full reads "
                "matched the model (%d documents); %d pages, %d records replayed (%d expired-position restarts, "
                "%d records carried index_code); pipeline: %d dealt, %d sorts, %d optimizations, %d files cleaned; "
                "LogManager: 6 methods (optimized %r on request); %d refusals checked"
                % (len(MAIN_INDEXES) + 1, writers.records + len(batch.records), writers.batches + 1,
                   writers.big_batches, len(INDEX_SETS), segments, reads.concurrent, docs, reads.pages,
                   reads.records, reads.restarts, reads.with_index_code, stats["dealt_segments"],
                   stats["sorted_indexes"], stats["optimized_indexes"], stats["removed_files"], optimized,
                   errors_checked + 1))
    finally:
        for d in daemons:
            d.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--writer", required=True)
    ap.add_argument("--indexes", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--records", type=int, default=20000, help="records over all writer connections")
    args = ap.parse_args()
    for b in (args.writer, args.indexes):
        if not os.access(b, os.X_OK):
            sys.exit("thrift-e2e: no binary at %s (cargo build --release -p logtank-writer -p logtank-indexes)" % b)
    log_dir = os.path.join(os.environ.get("LOG_DIR", os.path.join(REPO_ROOT, "target", "test-logs")), "thrift-e2e")
    shutil.rmtree(log_dir, ignore_errors=True)
    os.makedirs(log_dir)
    t0 = time.monotonic()
    work = tempfile.mkdtemp(prefix="thrift-e2e-")
    try:
        summary = run(args, log_dir, work)
    except Exception as e:  # noqa: BLE001 (any failure: report it, keep the evidence)
        msg = e.message if isinstance(e, (TApplicationException, TTransport.TTransportException)) else str(e)
        if not isinstance(e, (Failure, TApplicationException, TTransport.TTransportException)):
            traceback.print_exc()
        shutil.copytree(os.path.join(work, "data"), os.path.join(log_dir, "data"), dirs_exist_ok=True,
                        ignore_dangling_symlinks=True)
        print("thrift-e2e: FAILED (seed %d, %.1f s): %s %s" % (args.seed, time.monotonic() - t0,
                                                              type(e).__name__, msg))
        print("thrift-e2e: daemon logs and the data root are in %s" % log_dir)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("thrift-e2e: ok (seed %d, %.1f s): %s" % (args.seed, time.monotonic() - t0, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
