//! The server API tests talk to: a fresh raftcd (the default), or, with
//! `RAFTCD_TEST_ORACLE=etcd`, a fresh real etcd 3.4 (`/usr/bin/etcd`), so
//! the same assertions can be checked against etcd itself: every expected
//! value in these tests is etcd's behaviour, not raftcd's.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, http_get, machine_share, member_args, Machine, Server};

pub enum Target {
    Raftcd {
        server: Server,
        _tmp: tempfile::TempDir,
    },
    Etcd {
        child: Child,
        port: u16,
        _tmp: tempfile::TempDir,
        _machine: Machine,
    },
}

/// Whether the tests run against real etcd instead of raftcd.
pub fn oracle_is_etcd() -> bool {
    std::env::var("RAFTCD_TEST_ORACLE").is_ok_and(|v| v == "etcd")
}

impl Target {
    /// A fresh server with `extra` flags (etcd's flag names: both accept them).
    pub fn start(extra: &[&str]) -> Target {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        if oracle_is_etcd() {
            let _machine = machine_share();
            let (child, port) = spawn_etcd(&dir, extra);
            return Target::Etcd {
                child,
                port,
                _tmp: tmp,
                _machine,
            };
        }
        let server = Server::start_in(&dir, free_port(), extra);
        Target::Raftcd { server, _tmp: tmp }
    }

    pub fn port(&self) -> u16 {
        match self {
            Target::Raftcd { server, .. } => server.port,
            Target::Etcd { port, .. } => *port,
        }
    }

    /// `127.0.0.1:PORT`, as etcd clients take it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// [`Target::start`] and an etcd-client connected to it.
    pub async fn with_client(extra: &[&str]) -> (Target, etcd_client::Client) {
        let t = Target::start(extra);
        let c = etcd_client::Client::connect([t.endpoint()], None)
            .await
            .expect("connect");
        (t, c)
    }

    /// `http://127.0.0.1:PORT`, the advertised client URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Target::Etcd { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_etcd(dir: &Path, extra: &[&str]) -> (Child, u16) {
    let port = free_port();
    let child = Command::new("etcd")
        .args(member_args(dir, port, free_port()))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etcd");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(http_get(port, "/health"), Some((200, _))) {
        assert!(Instant::now() < deadline, "etcd not ready in time");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}
