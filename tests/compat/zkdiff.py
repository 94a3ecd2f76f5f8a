#!/usr/bin/python3
"""Differential test: proves coordd answers a long random workload exactly as Debian's real ZooKeeper 3.8 does.

For each seed it starts a fresh real ZooKeeper (tests/compat/real-zk) and a fresh coordd side by side, opens the
same sessions on both through kazoo, and drives both with one seeded random sequence of operations: creates of
every mode (persistent, ephemeral, sequential, null data, create2, makepath, ACLs), conditional set/delete,
get/exists/getChildren(2) with and without watches, get/set ACLs under digest auth, sync, multi transactions with
failing operations, and session closes (which must delete the session's ephemerals and fire the other sessions'
watches). After every operation it compares both servers' results: return values, exception classes, data, every
Stat field but ctime/mtime, ephemeralOwner as the owning session's slot, child lists (sorted), and the watch
events each session received (with a sync round-trip per watching session, so every event the operation caused
has arrived before the comparison). After a session close it checks (as a super user) that none of the
session's ephemerals is left, and every 200 operations it compares a full dump of the tree. The first divergence is printed with its context; exit 1.

zxids (--zxids):
  exact (default)  raw czxid/mzxid/pzxid and every reply's zxid must be equal. Both servers start empty and see the
                   same requests in the same order, and ZooKeeper's numbering is deterministic: one zxid per
                   createSession, per closeSession and per write request (failed writes and failed multis
                   included; all ops of a multi share one). A server that numbers the same way is
                   indistinguishable; this is what coordd must do.
  order            zxids appearing in Stats must correspond one-to-one and in the same order (the mapping a->b is
                   consistent and strictly increasing), reply zxids are not compared. This accepts a server that
                   numbers transactions differently (say, no zxid for sessions or failed writes) but still
                   orders and groups them like ZooKeeper; use it to tell numbering bugs from ordering bugs.

    tests/compat/zkdiff.py --seeds 10 --ops 2000 [--coordd BIN] [--zxids exact|order] [--first-seed S]
    tests/compat/zkdiff.py --against-real-twice --seeds 3 --ops 2000     # validates the harness: must agree
"""
import argparse
import bisect
import collections
import concurrent.futures
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
import zkcompat  # noqa: E402

from kazoo.client import KazooClient  # noqa: E402
from kazoo.exceptions import KazooException  # noqa: E402
from kazoo.protocol.states import ZnodeStat  # noqa: E402
from kazoo.security import (ACL, Id, OPEN_ACL_UNSAFE, READ_ACL_UNSAFE, CREATOR_ALL_ACL, Permissions,  # noqa: E402
                            make_digest_acl)

SESSIONS = 4              # slots of client sessions driven by the workload
ROOT = "/d"               # the workload's subtree
NAMES = ("a", "b", "c", "d")   # node names at each level below ROOT (depth 1..3)
DUMP_EVERY_OPS = 200
OP_TIMEOUT_S = 10         # a reply slower than this counts as a divergence (a hung server must not hang the test)
SESSION_TIMEOUT_S = 30
AUTH = {0: ("digest", "alice:alice-pw"), 2: ("digest", "bob:bob-pw")}
SUPER_AUTH = ("digest", "super:test")   # zkcompat.SUPER_DIGEST is this user's digest
ACLS = {
    "open": OPEN_ACL_UNSAFE,
    "read": READ_ACL_UNSAFE,
    "creator": CREATOR_ALL_ACL,   # InvalidACL for a session without auth
    "alice+read": [make_digest_acl("alice", "alice-pw", all=True), ACL(Permissions.READ, Id("world", "anyone"))],
    "bob": [make_digest_acl("bob", "bob-pw", all=True)],
    "no-delete": [ACL(Permissions.ALL & ~Permissions.DELETE, Id("world", "anyone"))],
    "no-create": [ACL(Permissions.ALL & ~Permissions.CREATE, Id("world", "anyone"))],
    "empty": [],                  # InvalidACL
}
OP_WEIGHTS = [
    ("create", 22), ("delete", 10), ("set", 12), ("get", 12), ("children", 10), ("exists", 10),
    ("get_acls", 3), ("set_acls", 3), ("sync", 3), ("multi", 9), ("close", 2),
]


class Marker:
    """A callback for kazoo's dispatch_callback: it runs after every callback queued before it."""

    def __init__(self):
        self.event = threading.Event()
        self.func = self.event.set
        self.args = ()


class Zxid:
    """A zxid inside a normalised result; compared by the Comparator according to --zxids."""
    __slots__ = ("v", "reply")

    def __init__(self, v, reply=False):
        self.v = v
        self.reply = reply   # a reply header's zxid (not a Stat field)

    def __repr__(self):
        return "0x%x" % self.v


class Side:
    """One server and the sessions driven against it."""

    def __init__(self, name, server):
        self.name = name
        self.server = server
        self.clients = [None] * SESSIONS
        self.generation = [0] * SESSIONS
        self.owner = {}                      # session id -> "s<slot>g<generation>"
        self.events = [[] for _ in range(SESSIONS)]
        self.events_lock = threading.Lock()
        self.armed = [set() for _ in range(SESSIONS)]   # (kind, path) watches believed registered
        self.observer = None

    def _client(self, auth):
        c = KazooClient(hosts=self.server.address, timeout=SESSION_TIMEOUT_S,
                        auth_data=[auth] if auth else None)
        c.start(timeout=OP_TIMEOUT_S)
        return c

    def open(self, slot):
        c = self._client(AUTH.get(slot))
        self.clients[slot] = c
        tag = "s%dg%d" % (slot, self.generation[slot])
        self.owner[c.client_id[0]] = tag
        self.events[slot] = []
        self.armed[slot] = set()
        # One watcher function per kind and session: kazoo keeps watchers in sets, so repeated registrations of
        # the same function collapse into one call per event, in a fixed order (data watchers, then child ones).
        c.zkdiff_watchers = {kind: self._watcher(slot, c, kind) for kind in ("data", "child")}
        return (tag, Zxid(c.last_zxid, reply=True))

    def _watcher(self, slot, client, kind):
        def watcher(event):
            with self.events_lock:
                if self.clients[slot] is client:
                    self.events[slot].append((kind, event.type, event.path))
                    if event.type in ("CREATED", "CHANGED"):
                        self.armed[slot].discard(("data", event.path))
                    elif event.type == "DELETED":
                        self.armed[slot].discard(("data", event.path))
                        self.armed[slot].discard(("child", event.path))
                    elif event.type == "CHILD":
                        self.armed[slot].discard(("child", event.path))
        return watcher

    def close(self, slot):
        c = self.clients[slot]
        with self.events_lock:
            self.clients[slot] = None     # its last events (the NONE/CLOSED ones kazoo fires) are not compared
        try:
            c.stop()
        finally:
            c.close()
        self.generation[slot] += 1

    def flush_events(self):
        """Makes sure every watch event caused so far has reached the recorded lists: per armed session, a sync
        round-trip (the server sends events before later replies on the same connection), then a marker through
        kazoo's callback queue (watch callbacks run in order on that queue)."""
        for slot, c in enumerate(self.clients):
            if c is None or not self.armed[slot]:
                continue
            c.sync_async("/").get(timeout=OP_TIMEOUT_S)
            m = Marker()
            c.handler.dispatch_callback(m)
            if not m.event.wait(OP_TIMEOUT_S):
                raise RuntimeError("%s: session %d's callback queue is stuck" % (self.name, slot))

    def take_events(self):
        with self.events_lock:
            out = [list(e) for e in self.events]
            for e in self.events:
                e.clear()
        return out

    def stop(self):
        for slot, c in enumerate(self.clients):
            if c is not None:
                try:
                    self.close(slot)
                except Exception:
                    pass
        if self.observer is not None:
            try:
                self.observer.stop()
                self.observer.close()
            except Exception:
                pass
        return self.server.stop()


class Comparator:
    def __init__(self, zxids):
        self.zxids = zxids
        self.a2b = {}
        self.b2a = {}
        self.sorted_a = []

    def _zxid(self, a, b):
        if self.zxids == "exact":
            return a == b
        if self.a2b.get(a, b) != b or self.b2a.get(b, a) != a:
            return False
        if a not in self.a2b:
            # Order: b must lie strictly between the images of a's mapped neighbours.
            i = bisect.bisect_left(self.sorted_a, a)
            if i > 0 and not self.a2b[self.sorted_a[i - 1]] < b:
                return False
            if i < len(self.sorted_a) and not b < self.a2b[self.sorted_a[i]]:
                return False
            self.sorted_a.insert(i, a)
            self.a2b[a] = b
            self.b2a[b] = a
        return True

    def same(self, x, y):
        if isinstance(x, Zxid) or isinstance(y, Zxid):
            if not (isinstance(x, Zxid) and isinstance(y, Zxid)):
                return False
            if self.zxids == "order" and x.reply:
                return True
            return self._zxid(x.v, y.v)
        if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            return type(x) is type(y) and len(x) == len(y) and all(self.same(p, q) for p, q in zip(x, y))
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(self.same(x[k], y[k]) for k in x)
        return type(x) is type(y) and x == y


def norm(side, value):
    """A server-independent form of a kazoo result: sessions as slots, Stats without times, zxids marked."""
    if isinstance(value, BaseException):
        return ("error", type(value).__name__)
    if isinstance(value, ZnodeStat):
        owner = value.ephemeralOwner
        if owner:
            owner = side.owner.get(owner, "session 0x%x (unknown)" % owner)
        return {"czxid": Zxid(value.czxid), "mzxid": Zxid(value.mzxid), "pzxid": Zxid(value.pzxid),
                "version": value.version, "cversion": value.cversion, "aversion": value.aversion,
                "ephemeralOwner": owner, "dataLength": value.dataLength, "numChildren": value.numChildren}
    if isinstance(value, ACL):
        return ("acl", value.perms, value.id.scheme, value.id.id)
    if isinstance(value, (list, tuple)):
        return [norm(side, v) for v in value]
    return value


def call(side, fn):
    """Runs one kazoo async call with a bounded wait; exceptions are results too."""
    try:
        return fn().get(timeout=OP_TIMEOUT_S)
    except Exception as e:   # kazoo exceptions, and the handler's timeout
        return e


class Workload:
    """The seeded operation generator. It decides from its own RNG and from results both sides agreed on, so
    both servers get the same operations."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.known = {ROOT}          # nodes seen to exist (from agreed results)
        self.ephemerals = [set() for _ in range(SESSIONS)]

    def path(self):
        r = self.rng
        if r.random() < 0.35 and len(self.known) > 1:
            return r.choice(sorted(self.known))
        depth = r.choice((1, 2, 2, 3))
        return ROOT + "".join("/" + r.choice(NAMES) for _ in range(depth))

    def data(self):
        r = self.rng.random()
        if r < 0.05:
            return None
        if r < 0.25:
            return b""
        return bytes(self.rng.getrandbits(8) for _ in range(self.rng.choice((1, 5, 20, 100))))

    def version(self):
        return self.rng.choice((-1, -1, -1, 0, 0, 1, 1, 2, 3))

    def watch(self):
        return self.rng.random() < 0.3

    def next_op(self):
        kinds, weights = zip(*OP_WEIGHTS)
        kind = self.rng.choices(kinds, weights)[0]
        slot = self.rng.randrange(SESSIONS)
        r = self.rng
        if kind == "create":
            mode = r.choices(("persistent", "ephemeral", "sequential", "ephemeral_sequential"), (50, 20, 15, 15))[0]
            acl = r.choice(sorted(ACLS)) if r.random() < 0.05 else None
            return (kind, slot, self.path(), self.data(), mode, acl, r.random() < 0.3, r.random() < 0.1)
        if kind in ("delete", "set_acls"):
            extra = (r.choice(sorted(ACLS)) if r.random() < 0.5 else "open") if kind == "set_acls" else None
            return (kind, slot, self.path(), self.version(), extra)
        if kind == "set":
            return (kind, slot, self.path(), self.data() or b"", self.version())
        if kind in ("get", "exists"):
            return (kind, slot, self.path(), self.watch())
        if kind == "children":
            return (kind, slot, self.path(), self.watch(), r.random() < 0.3)
        if kind in ("get_acls", "sync"):
            return (kind, slot, self.path())
        if kind == "multi":
            # Half of the transactions are plausible (new children of known nodes, unconditional updates of
            # known nodes), so that commits succeed as well as fail part-way.
            plausible = r.random() < 0.5
            ops = []
            for _ in range(r.randint(1, 4)):
                k = r.choice(("create", "create", "delete", "set_data", "check"))
                path = r.choice(sorted(self.known)) if plausible else self.path()
                version = -1 if plausible else self.version()
                if k == "create":
                    if plausible:
                        path += "/" + r.choice(NAMES) + "m"
                    ops.append((k, path, self.data() or b"", r.random() < 0.2, r.random() < 0.2))
                elif k == "set_data":
                    ops.append((k, path, self.data() or b"", version))
                else:
                    ops.append((k, path, version))
            return (kind, slot, ops)
        # A close names the ephemerals its session made: afterwards none of them may exist.
        gone = sorted(self.ephemerals[slot])
        self.ephemerals[slot] = set()
        return ("close", slot, gone)

    def learn(self, op, result):
        """Updates the known-node set (and each session's ephemerals) from a result both sides agreed on."""
        kind = op[0]
        if kind == "create" and isinstance(result, (str, tuple)):
            path = result[0] if isinstance(result, tuple) else result
            self.known.add(path)
            if op[4].startswith("ephemeral"):
                self.ephemerals[op[1]].add(path)
        elif kind == "children" and isinstance(result, (list, tuple)):
            names = result[0] if op[4] else result
            self.known.update(op[2] + "/" + n for n in names)
        elif kind == "multi" and isinstance(result, list):
            for sub, r in zip(op[2], result):
                if isinstance(r, str):
                    self.known.add(r)
                    if sub[3]:
                        self.ephemerals[op[1]].add(r)


def apply_op(side, op):
    """Runs op against one side; returns the normalised result (with the reply zxid) and whether it armed a
    watch."""
    kind, slot = op[0], op[1]
    if kind == "close":
        side.close(slot)
        opened = side.open(slot)
        left = [p for p in op[2] if call(side, lambda: side.observer.exists_async(p)) is not None]
        return ("closed", opened, "ephemerals left behind", left), None
    c = side.clients[slot]
    watch_kind = None
    if kind == "create":
        _, _, path, data, mode, acl, include_data, makepath = op
        res = call(side, lambda: c.create_async(
            path, data, acl=ACLS[acl] if acl else None, ephemeral=mode.startswith("ephemeral"),
            sequence=mode.endswith("sequential"), makepath=makepath, include_data=include_data))
    elif kind == "delete":
        res = call(side, lambda: c.delete_async(op[2], version=op[3]))
    elif kind == "set":
        res = call(side, lambda: c.set_async(op[2], op[3], version=op[4]))
    elif kind == "get":
        w = c.zkdiff_watchers["data"] if op[3] else None
        res = call(side, lambda: c.get_async(op[2], watch=w))
        watch_kind = "data" if w and not isinstance(res, BaseException) else None
    elif kind == "exists":
        w = c.zkdiff_watchers["data"] if op[3] else None
        res = call(side, lambda: c.exists_async(op[2], watch=w))
        watch_kind = "data" if w and not isinstance(res, BaseException) else None
    elif kind == "children":
        w = c.zkdiff_watchers["child"] if op[3] else None
        res = call(side, lambda: c.get_children_async(op[2], watch=w, include_data=op[4]))
        if isinstance(res, list):
            res = sorted(res)
        elif isinstance(res, tuple):
            res = (sorted(res[0]), res[1])
        watch_kind = "child" if w and not isinstance(res, BaseException) else None
    elif kind == "get_acls":
        res = call(side, lambda: c.get_acls_async(op[2]))
    elif kind == "set_acls":
        res = call(side, lambda: c.set_acls_async(op[2], ACLS[op[4]], version=op[3]))
    elif kind == "sync":
        res = call(side, lambda: c.sync_async(op[2]))
    elif kind == "multi":
        t = c.transaction()
        for sub in op[2]:
            if sub[0] == "create":
                t.create(sub[1], sub[2], ephemeral=sub[3], sequence=sub[4])
            elif sub[0] == "set_data":
                t.set_data(sub[1], sub[2], version=sub[3])
            elif sub[0] == "delete":
                t.delete(sub[1], version=sub[2])
            else:
                t.check(sub[1], sub[2])
        res = call(side, t.commit_async)
    else:
        raise ValueError(kind)
    if watch_kind:
        with side.events_lock:
            side.armed[slot].add((watch_kind, op[2]))
    return (norm(side, res), Zxid(c.last_zxid, reply=True)), res


def dump(side):
    """The whole workload subtree as read by a super-user session: path -> (data, stat, acls)."""
    o = side.observer
    out = {}
    todo = [ROOT]
    while todo:
        path = todo.pop()
        got = call(side, lambda: o.get_async(path))
        if isinstance(got, BaseException):
            out[path] = norm(side, got)
            continue
        acls = call(side, lambda: o.get_acls_async(path))
        children = call(side, lambda: o.get_children_async(path))
        out[path] = (got[0], norm(side, got[1]), norm(side, acls[0] if isinstance(acls, tuple) else acls))
        if isinstance(children, list):
            todo.extend(path + "/" + ch for ch in sorted(children))
    return out


def describe(x, limit=600):
    s = repr(x)
    return s if len(s) <= limit else s[:limit] + "..."


def outcome(raw):
    if isinstance(raw, BaseException):
        return type(raw).__name__
    if isinstance(raw, list) and any(isinstance(r, BaseException) for r in raw):
        return "failed multi"
    return "ok"


def both(pool, fn, sides, *args):
    """fn(side, *args) on both sides at once; its results in side order."""
    return [f.result() for f in [pool.submit(fn, s, *args) for s in sides]]


def run_seed(seed, ops, make_b, zxids, work_dir, log_dir, ports, outcomes, trace=None):
    """Returns (ok, ops done, seconds spent on the workload); counts (op kind, outcome) in outcomes."""
    sides = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    try:
        a_srv = zkcompat.Server("zk", ports[0], os.path.join(work_dir, "a"), os.path.join(log_dir, "seed%d-a.log" % seed))
        sides.append(Side("real-zk", a_srv))
        b_kind, b_name = make_b
        b_srv = zkcompat.Server(b_kind, ports[1], os.path.join(work_dir, "b"),
                                os.path.join(log_dir, "seed%d-b.log" % seed), coordd_bin=b_name)
        sides.append(Side("coordd" if b_kind == "coordd" else "real-zk#2", b_srv))
        for s in sides:
            s.server.wait_ready()
        a, b = sides
        cmp = Comparator(zxids)
        history = collections.deque(maxlen=5)

        def diverged(index, op, ra, rb, what):
            print("seed %d: DIVERGENCE at op %d (%s): %s" % (seed, index, what, describe(op)))
            for h in history:
                print("   before: op %d %s -> %s" % (h[0], describe(h[1], 200), describe(h[2], 200)))
            print("   %-10s %s" % (a.name + ":", describe(ra, 4000)))
            print("   %-10s %s" % (b.name + ":", describe(rb, 4000)))
            print("   (zxids compared: %s; server logs in %s)" % (zxids, log_dir))
            return False

        # Set-up, identical on both: an observer with super auth creates ROOT; then the client sessions.
        def set_up(side):
            side.observer = side._client(SUPER_AUTH)
            side.observer.create(ROOT, b"root")
            return [side.open(slot) for slot in range(SESSIONS)]

        opened = both(pool, set_up, sides)
        if not cmp.same(opened[0], opened[1]):
            return diverged(-1, "open sessions", opened[0], opened[1], "session set-up"), 0, 0

        def step(side, op):
            norm_res, raw = apply_op(side, op)
            side.flush_events()
            return norm_res, side.take_events(), raw

        wl = Workload(seed)
        started = time.monotonic()
        for i in range(ops):
            op = wl.next_op()
            # Both servers work at once; each side's requests stay in the workload's order.
            (ra, ea, raw), (rb, eb, _) = both(pool, step, sides, op)
            if not cmp.same(ra, rb):
                return diverged(i, op, ra, rb, "result"), i, time.monotonic() - started
            if ea != eb:
                return diverged(i, op, ea, eb, "watch events per session slot"), i, time.monotonic() - started
            wl.learn(op, raw)
            outcomes[(op[0], outcome(raw))] += 1
            if trace:
                trace.write("%d %r -> %r events %r\n" % (i, op, ra, ea))
            history.append((i, op, ra[0]))
            if (i + 1) % DUMP_EVERY_OPS == 0 or i + 1 == ops:
                da, db = both(pool, dump, sides)
                if not cmp.same(da, db):
                    only = sorted(set(da) ^ set(db))
                    diff = sorted(p for p in set(da) & set(db) if not cmp.same(da[p], db[p]))
                    first = diff[0] if diff else None
                    return diverged(i, op, {"only on one side": only, first: first and da[first]},
                                    {first: first and db[first]}, "tree dump after op"), i, time.monotonic() - started
        return True, ops, time.monotonic() - started
    finally:
        pool.shutdown()
        for s in sides:
            s.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--coordd", default=os.environ.get("LOGTANK_COORDD",
                                                       os.path.join(zkcompat.REPO_ROOT, "target/release/logtank-coordd")))
    ap.add_argument("--against-real-twice", action="store_true",
                    help="diff two real ZooKeeper servers (validates that the harness is deterministic)")
    ap.add_argument("--zxids", choices=("exact", "order"), default="exact")
    ap.add_argument("--port", type=int, default=22381, help="real ZooKeeper's port; the other server uses +1")
    ap.add_argument("--stats", action="store_true", help="print how often each operation had each outcome")
    ap.add_argument("--trace", action="store_true",
                    help="write every op with its result and events to <log dir>/seed<N>.trace")
    args = ap.parse_args()

    if args.against_real_twice:
        make_b = ("zk", None)
    else:
        if not os.access(args.coordd, os.X_OK):
            sys.exit("zkdiff: no coordd binary at %s (build it, or pass --coordd / set LOGTANK_COORDD)" % args.coordd)
        make_b = ("coordd", os.path.abspath(args.coordd))
    log_dir = os.path.join(os.environ.get("LOG_DIR", os.path.join(zkcompat.REPO_ROOT, "target", "test-logs")),
                           "zkdiff")
    shutil.rmtree(log_dir, ignore_errors=True)
    os.makedirs(log_dir)
    # kazoo's own warnings (connection drops at session close, say) go to a file, not into the report.
    logging.basicConfig(filename=os.path.join(log_dir, "kazoo.log"), level=logging.WARNING,
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")

    total_ops = 0
    total_s = 0.0
    passed = failed = 0
    outcomes = collections.Counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        with tempfile.TemporaryDirectory(prefix="zkdiff-") as work, \
                open(os.path.join(log_dir, "seed%d.trace" % seed) if args.trace else os.devnull, "w") as trace:
            ok, done, secs = run_seed(seed, args.ops, make_b, args.zxids, work, log_dir, (args.port, args.port + 1),
                                       outcomes, trace)
        total_ops += done
        total_s += secs
        print("seed %d: %s, %d ops in %.1f s" % (seed, "same" if ok else "DIVERGED", done, secs), flush=True)
        if not ok:
            failed += 1
            break
        passed += 1
    if args.stats:
        for (kind, out), n in sorted(outcomes.items()):
            print("   %-9s %-28s %6d" % (kind, out, n))
    rate = total_ops / total_s if total_s else 0.0
    print("zkdiff (%s vs %s, zxids %s): %d ops compared at %.0f ops/s (each op on both servers, with event flushes)"
          % ("real-zk", "real-zk#2" if args.against_real_twice else "coordd", args.zxids, total_ops, rate))
    print("zkdiff: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
