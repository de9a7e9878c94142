//! Shared test harness: runs the real `raftcd` binary on free loopback ports
//! with a temporary data dir, and runs the real `etcdctl` against it.

pub mod cluster;
pub mod replicas;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

#[path = "../../support/ports.rs"]
mod ports;
pub use ports::free_port;

/// The machine the tests share. They all run in one process, side by side on
/// the harness's threads; a test that loads the whole machine for minutes
/// (`catchup`, which had a test binary of its own for this) would slow the
/// timing-sensitive ones (elections, lease expiry) into failing. So it takes
/// the machine alone, and every server, cluster or embedded node a test
/// starts holds a share of it: the two never run at the same time.
static MACHINE: RwLock<()> = RwLock::new(());

enum Hold {
    Shared {
        _guard: RwLockReadGuard<'static, ()>,
    },
    Alone {
        _guard: RwLockWriteGuard<'static, ()>,
    },
}

thread_local! {
    /// This thread's hold on [`MACHINE`] and how many [`Machine`]s use it: a
    /// test that starts several servers takes the lock once (taking a read
    /// lock twice on one thread can deadlock behind a waiting writer).
    static HOLD: RefCell<(usize, Option<Hold>)> = const { RefCell::new((0, None)) };
}

/// A hold on the machine, released when the last one of its thread drops.
/// Not `Send`: it belongs to the test thread that took it.
pub struct Machine(PhantomData<*const ()>);

impl Machine {
    fn take(alone: bool) -> Machine {
        HOLD.with(|h| {
            let mut h = h.borrow_mut();
            match (&h.1, alone) {
                (None, false) => {
                    let _guard = MACHINE.read().unwrap_or_else(PoisonError::into_inner);
                    h.1 = Some(Hold::Shared { _guard });
                }
                (None, true) => {
                    let _guard = MACHINE.write().unwrap_or_else(PoisonError::into_inner);
                    h.1 = Some(Hold::Alone { _guard });
                }
                (Some(Hold::Shared { .. }), true) => {
                    panic!("take the machine alone before starting any server")
                }
                (Some(_), _) => {}
            }
            h.0 += 1;
        });
        Machine(PhantomData)
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let released = HOLD.with(|h| {
            let mut h = h.borrow_mut();
            h.0 -= 1;
            if h.0 == 0 {
                h.1.take()
            } else {
                None
            }
        });
        drop(released);
    }
}

/// A share of the machine, for a test that runs raftcd (a process or an
/// embedded node) other than through [`Server`] or `Cluster`, which take it.
pub fn machine_share() -> Machine {
    Machine::take(false)
}

/// The machine alone: waits until no other test holds a share, and keeps
/// every other test from starting a server until dropped.
pub fn machine_alone() -> Machine {
    Machine::take(true)
}

/// A raftcd process.
pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub name: String,
    _tmp: Option<tempfile::TempDir>,
    _machine: Machine,
}

/// The raftcd binary: cargo's, or `RAFTCD_BIN` if set (a copy, for a
/// target dir that several checkouts build into at once).
pub fn raftcd_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("RAFTCD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_raftcd").to_string())
    })
}

impl Server {
    /// Start a fresh single-member server in a new temp dir.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let mut s = Server::start_in(&dir, free_port(), &[]);
        s._tmp = Some(tmp);
        s
    }

    /// Start a server on `dir` and `port` with extra flags, and wait until
    /// it answers `/health`.
    pub fn start_in(dir: &Path, port: u16, extra: &[&str]) -> Server {
        Server::start_logged(dir, port, extra, None)
    }

    /// [`Server::start_in`], with its stderr written to `log` if given.
    pub fn start_logged(dir: &Path, port: u16, extra: &[&str], log: Option<&Path>) -> Server {
        let _machine = machine_share();
        let child = spawn_logged(dir, port, extra, log);
        let mut s = Server {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
            name: "default".into(),
            _tmp: None,
            _machine,
        };
        s.wait_ready(Duration::from_secs(30));
        s
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("raftcd exited early with {status}");
                }
            }
            if let Some((200, _)) = http_get(self.port, "/health") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "raftcd on port {} not ready in time",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL the process (no shutdown, no flush).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill and start again on the same data dir and port.
    pub fn restart(&mut self) {
        self.kill();
        let child = spawn(&self.dir, self.port, &[]);
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30));
    }

    /// Run etcdctl against this server.
    pub fn etcdctl(&self, args: &[&str]) -> Out {
        etcdctl(&self.endpoint(), args, None)
    }

    /// Run etcdctl with `stdin`.
    pub fn etcdctl_in(&self, args: &[&str], stdin: &str) -> Out {
        etcdctl(&self.endpoint(), args, Some(stdin))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The peer port of the member owning `dir`: chosen once, then reused, so a
/// restarted member keeps its identity (member and cluster ids derive from
/// the peer URLs).
pub fn peer_port(dir: &Path) -> u16 {
    let file = dir.with_extension("peer-port");
    if let Some(p) = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return p;
    }
    let p = free_port();
    std::fs::write(&file, p.to_string()).expect("write peer port file");
    p
}

/// The flags of a single-member server, shared by raftcd and etcd (the
/// oracle in tests/target): data dir, client URL, peer URL.
pub fn member_args(dir: &Path, port: u16, peer_port: u16) -> Vec<String> {
    let url = format!("http://127.0.0.1:{port}");
    let mut args: Vec<String> = [
        "--data-dir",
        &dir.display().to_string(),
        "--listen-client-urls",
        &url,
        "--advertise-client-urls",
        &url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(peer_args(&format!("http://127.0.0.1:{peer_port}")));
    args
}

/// The peer flags of a single-member cluster (member `default`) on `peer`.
pub fn peer_args(peer: &str) -> Vec<String> {
    [
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        &format!("default={peer}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn spawn(dir: &Path, port: u16, extra: &[&str]) -> Child {
    spawn_logged(dir, port, extra, None)
}

fn spawn_logged(dir: &Path, port: u16, extra: &[&str], log: Option<&Path>) -> Child {
    let stderr = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("stderr file")),
        None => Stdio::inherit(),
    };
    Command::new(raftcd_bin())
        .args(member_args(dir, port, peer_port(dir)))
        .args(extra)
        .env("ETCD_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn raftcd")
}

/// Start raftcd on `dir` expecting it to refuse: its exit status and what
/// it printed on stderr. Panics if it is still running after 30 s.
pub fn start_refused(dir: &Path, extra: &[&str]) -> (std::process::ExitStatus, String) {
    let _machine = machine_share();
    let log = dir.with_extension("stderr");
    let mut child = Command::new(raftcd_bin())
        .args(member_args(dir, free_port(), peer_port(dir)))
        .args(extra)
        .env("ETCD_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("stderr file"))
        .spawn()
        .expect("spawn raftcd");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "raftcd started on {}: {}",
                dir.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&log).expect("read stderr");
    let _ = std::fs::remove_file(&log);
    (status, stderr)
}

/// Standard base64 (as etcd's JSON carries bytes), decoded; panics on a
/// character outside the alphabet (test input only).
pub fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let d = ALPHABET.iter().position(|x| *x == c).expect("base64 digit") as u32;
        acc = (acc << 6) | d;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// A plain HTTP/1.1 GET on 127.0.0.1:port; (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status: u16 = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

/// Output of one etcdctl run.
#[derive(Debug)]
pub struct Out {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// Run the real etcdctl (v3 API). Panics if etcdctl is not installed: the
/// compatibility tests must fail, never skip, without it.
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("etcdctl not found: install Debian's etcd-client (scripts/test does)");
    if let Some(input) = stdin {
        let mut sin = child.stdin.take().expect("stdin");
        sin.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("etcdctl output");
    Out {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// Run `raftcd certs ARGS` (in `dir` via `--dir`), expecting success.
pub fn certs(dir: &Path, args: &[&str]) {
    let out = certs_out(dir, args);
    assert!(
        out.status.success(),
        "raftcd certs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `raftcd certs ARGS` (in `dir` via `--dir`).
pub fn certs_out(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(raftcd_bin())
        .arg("certs")
        .args(args)
        .args(["--dir", &dir.display().to_string()])
        .output()
        .expect("run raftcd certs")
}

/// `raftcd snapshot restore FILE --data-dir DIR`.
pub fn snapshot_restore(file: impl AsRef<Path>, dir: impl AsRef<Path>) -> std::process::Output {
    Command::new(raftcd_bin())
        .args(["snapshot", "restore"])
        .arg(file.as_ref())
        .arg("--data-dir")
        .arg(dir.as_ref())
        .output()
        .expect("run raftcd snapshot restore")
}

/// The gRPC code and message of a failed etcd-client request.
pub fn grpc(r: Result<impl std::fmt::Debug, etcd_client::Error>) -> (tonic::Code, String) {
    match r {
        Err(etcd_client::Error::GRpcStatus(s)) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC error status, got {other:?}"),
    }
}
