//! Shared by coordd's integration tests: start the real `logtank-coordd` binary on an ephemeral port in a
//! temp dir (process, log and sd_notify handling are logtank-testkit's), and a small blocking ZooKeeper
//! client built on the project's own codec (so tests can send exactly the bytes they mean, pipeline, and
//! misbehave on purpose).
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Duration;

use logtank_testkit::{DaemonProcess, Spec};
use logtank_zk::frame::{next_frame, Frame};
use logtank_zk::jute::{Reader, Writer};
use logtank_zk::{Acl, ConnectRequest, CreateKind, CreateRequest, Request, Stat};

/// How long [`wait_for`] waits for an effect of a server timer.
pub const TIMER_EFFECT_WAIT_MAX: Duration = Duration::from_secs(30);

/// A coordd process. Killed (SIGKILL) on drop unless stopped. The process's own methods (`stop`, `kill9`,
/// `pid`, `is_running`, …) come from [`DaemonProcess`] through `Deref`; the client port's address is a
/// field, read again at every restart.
pub struct Server {
    process: DaemonProcess,
    pub addr: SocketAddr,
    pub root: PathBuf,
}

impl Deref for Server {
    type Target = DaemonProcess;

    fn deref(&self) -> &DaemonProcess {
        &self.process
    }
}

impl DerefMut for Server {
    fn deref_mut(&mut self) -> &mut DaemonProcess {
        &mut self.process
    }
}

impl Server {
    /// Starts coordd with its data under `root` and extra TOML appended to the config.
    pub fn start(root: &Path, extra_toml: &str) -> Server {
        Server::start_on(root, root, extra_toml)
    }

    /// Starts coordd with its config and log under `root` and its data under `data` (a power-loss mount,
    /// whose cuts must not take the config with them).
    pub fn start_on(root: &Path, data: &Path, extra_toml: &str) -> Server {
        let config = root.join("coordd.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\ndata_root = \"{}\"\ntick_ms = 200\n[admin]\nlisten = \"127.0.0.1:0\"\n{extra_toml}",
                data.display()
            ),
        )
        .unwrap();
        let process = DaemonProcess::start(Spec {
            binary: env!("CARGO_BIN_EXE_logtank-coordd").into(),
            args: vec!["--config".into(), config.display().to_string()],
            serving_prefix: logtank_coordd::SERVING_PREFIX,
            log_path: root.join("coordd.log"),
            ..Spec::default()
        });
        Server::of(process, root)
    }

    fn of(process: DaemonProcess, root: &Path) -> Server {
        Server {
            addr: process.addr(),
            process,
            root: root.to_path_buf(),
        }
    }

    /// Starts again on the same data and config (a new port); after a `kill9`, or SIGTERM first (exit 0
    /// asserted).
    pub fn restart(mut self) -> Server {
        self.process.restart();
        Server::of(self.process, &self.root)
    }

    /// Starts the killed server again (after its file system came back).
    pub fn start_again(mut self) -> Server {
        self.process.start_again();
        Server::of(self.process, &self.root)
    }

    /// Everything logged since the log file was created, every run included.
    pub fn log(&self) -> String {
        self.log_file_text()
    }
}

/// One reply frame.
#[derive(Debug, Clone)]
pub struct Reply {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
    pub body: Vec<u8>,
}

/// A blocking client speaking the wire protocol directly.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    next_xid: i32,
    pub session_id: i64,
    pub password: Vec<u8>,
    pub timeout_ms: i32,
    /// Notifications received while waiting for replies: (type, path).
    pub events: Vec<(i32, String)>,
}

impl Client {
    pub fn connect(addr: SocketAddr, timeout_ms: i32) -> Client {
        Client::resume(addr, timeout_ms, 0, vec![0; 16]).unwrap()
    }

    /// Connects with a session id and password; `Err(())` if the server says the session expired.
    pub fn resume(
        addr: SocketAddr,
        timeout_ms: i32,
        session_id: i64,
        password: Vec<u8>,
    ) -> Result<Client, ()> {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        stream.set_nodelay(true).unwrap();
        let req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms,
            session_id,
            password,
            read_only: Some(false),
        };
        stream.write_all(&req.encode()).unwrap();
        let mut c = Client {
            stream,
            buf: Vec::new(),
            next_xid: 1,
            session_id: 0,
            password: vec![],
            timeout_ms: 0,
            events: vec![],
        };
        // A refused connection (e.g. over the per-IP limit) closes without a reply.
        let payload = c.read_frame().ok_or(())?;
        let mut r = Reader::new(&payload);
        let _proto = r.i32().unwrap();
        c.timeout_ms = r.i32().unwrap();
        c.session_id = r.i64().unwrap();
        c.password = r.buffer().unwrap().unwrap_or_default().to_vec();
        if c.timeout_ms <= 0 {
            return Err(());
        }
        Ok(c)
    }

    pub fn read_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Ok(Frame::Complete { payload, used }) = next_frame(&self.buf, 64 << 20) {
                let p = payload.to_vec();
                self.buf.drain(..used);
                return Some(p);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends a request without waiting; returns its xid.
    pub fn send(&mut self, req: &Request) -> i32 {
        let xid = self.next_xid;
        self.next_xid += 1;
        self.send_raw_request(xid, req);
        xid
    }

    pub fn send_raw_request(&mut self, xid: i32, req: &Request) {
        let mut w = Writer::frame();
        w.i32(xid).i32(req.opcode());
        req.encode_body(&mut w);
        // A server killed mid-test makes this fail; the following recv() then reports the closed socket.
        let _ = self.stream.write_all(&w.finish_frame());
    }

    /// The next reply (notifications are collected into `events`); None when the server closed.
    pub fn recv(&mut self) -> Option<Reply> {
        loop {
            let payload = self.read_frame()?;
            let mut r = Reader::new(&payload);
            let (xid, zxid, err) = (r.i32().unwrap(), r.i64().unwrap(), r.i32().unwrap());
            if xid == -1 {
                let (t, _state, path) = (r.i32().unwrap(), r.i32().unwrap(), r.string().unwrap());
                self.events.push((t, path));
                continue;
            }
            return Some(Reply {
                xid,
                zxid,
                err,
                body: r.rest().to_vec(),
            });
        }
    }

    pub fn call(&mut self, req: &Request) -> Reply {
        let xid = self.send(req);
        let reply = self.recv().expect("connection closed");
        assert_eq!(reply.xid, xid, "replies out of order");
        reply
    }

    pub fn create(&mut self, path: &str, data: &[u8], flags: i32) -> Reply {
        self.call(&create_req(path, data, flags))
    }

    /// getData: Ok((data, stat)) or Err(code).
    pub fn get(&mut self, path: &str) -> Result<(Vec<u8>, Stat), i32> {
        let r = self.call(&Request::GetData {
            path: path.into(),
            watch: false,
        });
        if r.err != 0 {
            return Err(r.err);
        }
        let mut rd = Reader::new(&r.body);
        let data = rd.buffer().unwrap().unwrap_or_default().to_vec();
        Ok((data, Stat::decode(&mut rd).unwrap()))
    }

    pub fn children(&mut self, path: &str) -> Result<Vec<String>, i32> {
        let r = self.call(&Request::GetChildren {
            path: path.into(),
            watch: false,
        });
        if r.err != 0 {
            return Err(r.err);
        }
        Ok(Reader::new(&r.body).strings().unwrap())
    }

    pub fn close(mut self) {
        let _ = self.call(&Request::CloseSession);
    }
}

pub fn create_req(path: &str, data: &[u8], flags: i32) -> Request {
    Request::Create(CreateRequest {
        kind: CreateKind::Create,
        path: path.into(),
        data: Some(data.to_vec()),
        acl: vec![Acl::world_all()],
        flags,
        ttl_ms: 0,
    })
}

/// Polls `condition` until it holds; panics naming `what` after [`TIMER_EFFECT_WAIT_MAX`]. For effects that
/// follow a timer in the server (expiry, container removal, status refresh), so tests wait for the effect,
/// not a time.
pub fn wait_for(what: &str, condition: impl FnMut() -> bool) {
    logtank_testkit::wait_for(what, TIMER_EFFECT_WAIT_MAX, condition);
}

/// Sends raw bytes on a fresh connection and returns everything the server sends back before closing.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}
