"""Shared helpers of the compatibility scripts in tests/compat: start a real ZooKeeper (tests/compat/real-zk) or
coordd on a loopback port, wait until it answers, send four-letter words, and stop it again.

Imported by zkdiff.py and zkcli-compare; it holds no test of its own. Servers are started in their own process
group and always stopped with SIGTERM (then SIGKILL after a bounded wait), so no test leaves one behind.
"""
import os
import signal
import socket
import subprocess
import time

HERE = os.path.dirname(os.path.realpath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
REAL_ZK = os.path.join(HERE, "real-zk")
# The digest kazoo's harness gives ZooKeeper: user "super", password "test".
SUPER_DIGEST = "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20


def four_letter_word(port, word, timeout_s=2.0):
    """Sends a four-letter word to 127.0.0.1:port and returns the reply (b'' if the server closed at once)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(word.encode() if isinstance(word, str) else word)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)


def port_is_free(port):
    """True if nothing listens on 127.0.0.1:port (TIME_WAIT leftovers do not count: servers use SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def coordd_toml(port, data_root, tick_ms=2000, super_digest=SUPER_DIGEST, sasl_users=None):
    """The coordd config matching what real-zk runs: every 4lw, TTL nodes on, no per-IP connection limit
    (maxClientCnxns=0), the same super digest."""
    users = "".join('"%s" = "%s"\n' % kv for kv in sorted((sasl_users or {}).items()))
    return (
        "[server]\n"
        'listen = "127.0.0.1:%d"\n'
        'data_root = "%s"\n'
        "tick_ms = %d\n"
        "[admin]\n"
        'listen = "127.0.0.1:0"\n'
        "[auth]\n"
        'super_digest = "%s"\n'
        "[auth.sasl_users]\n%s"
        "[four_letter_words]\n"
        'whitelist = ["*"]\n'
        "[limits]\n"
        "ttl_nodes_enabled = true\n"
        "connections_per_ip_max = 0\n" % (port, data_root, tick_ms, super_digest, users)
    )


class Server:
    """One server process (real ZooKeeper or coordd) on 127.0.0.1:port, logging to log_path."""

    def __init__(self, kind, port, data_dir, log_path, coordd_bin=None, tick_ms=2000):
        self.kind = kind
        self.port = port
        self.data_dir = data_dir
        self.log_path = log_path
        os.makedirs(data_dir, exist_ok=True)
        if kind == "zk":
            argv = [REAL_ZK, "--port", str(port), "--data", data_dir, "--tick-ms", str(tick_ms),
                    "--super-digest", SUPER_DIGEST]
        elif kind == "coordd":
            toml = os.path.join(data_dir, "coordd.toml")
            with open(toml, "w") as f:
                f.write(coordd_toml(port, data_dir, tick_ms))
            argv = [coordd_bin, "--config", toml]
        else:
            raise ValueError(kind)
        if not port_is_free(port):
            raise RuntimeError("port %d is already in use" % port)
        self.argv = argv
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def wait_ready(self, timeout_s=READY_TIMEOUT_S):
        """Bounded poll until the server answers `ruok` with `imok`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s before it was ready (log: %s)"
                                   % (self.kind, self.proc.returncode, self.log_path))
            try:
                if four_letter_word(self.port, "ruok", 1.0) == b"imok":
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("%s on port %d not ready after %ss (log: %s)"
                           % (self.kind, self.port, timeout_s, self.log_path))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        return self.proc.returncode
