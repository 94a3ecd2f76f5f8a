//! Shared by coordd's integration tests: start the real `logtank-coordd` binary on an ephemeral port in a
//! temp dir, and a small blocking ZooKeeper client built on the project's own codec (so tests can send
//! exactly the bytes they mean, pipeline, and misbehave on purpose).
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use logtank_zk::frame::{next_frame, Frame};
use logtank_zk::jute::{Reader, Writer};
use logtank_zk::{Acl, ConnectRequest, CreateKind, CreateRequest, Request, Stat};

/// A coordd process. Killed (SIGKILL) on drop unless stopped.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub root: PathBuf,
    config: PathBuf,
}

impl Server {
    /// Starts coordd with its data under `root` and extra TOML appended to the config.
    pub fn start(root: &Path, extra_toml: &str) -> Server {
        let config = root.join("coordd.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\ndata_root = \"{}\"\ntick_ms = 200\n[admin]\nlisten = \"127.0.0.1:0\"\n{extra_toml}",
                root.display()
            ),
        )
        .unwrap();
        Server::start_with(root, &config)
    }

    fn start_with(root: &Path, config: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_logtank-coordd"))
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log_path = root.join("coordd.log");
        std::thread::spawn(move || {
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path)
                .unwrap();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if let Some(addr) = line.split("serving ZooKeeper clients on ").nth(1) {
                    let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let log = std::fs::read_to_string(root.join("coordd.log")).unwrap_or_default();
                panic!("coordd did not start:\n{log}");
            }
        };
        Server {
            child: Some(child),
            addr,
            root: root.to_path_buf(),
            config: config.to_path_buf(),
        }
    }

    /// Starts again on the same data and config (a new port).
    pub fn restart(mut self) -> Server {
        self.stop();
        Server::start_with(&self.root.clone(), &self.config.clone())
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; panics unless the exit status is 0.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::SIGTERM,
            )
            .unwrap();
            let status = c.wait().unwrap();
            assert!(status.success(), "coordd exited with {status}");
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("coordd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
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

/// Polls `condition` every 20 ms until it holds; panics naming `what` after 30 s. For effects that follow a
/// timer in the server (expiry, container removal, status refresh), so tests wait for the effect, not a time.
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
