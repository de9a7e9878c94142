//! Multi-member clusters of real `raftcd` processes on loopback, started
//! with etcd's flags, and etcdctl against all of their endpoints.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{etcdctl, free_port, http_get, machine_share, raftcd_bin, Machine, Out};

/// Raft timing used by cluster tests (etcd's flag names).
pub const HEARTBEAT_MS: u64 = 50;
pub const ELECTION_MS: u64 = 500;

/// The files a client uses to reach `https://` client URLs with a client
/// certificate (etcdctl's `--cacert --cert --key`, curl's the same).
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl ClientTls {
    /// `curl --cacert --cert --key url`: (exit code, body).
    pub fn curl(&self, url: &str) -> (i32, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .args([
                "--cacert", &self.ca, "--cert", &self.cert, "--key", &self.key,
            ])
            .arg(url)
            .output()
            .expect("curl not found: install curl (scripts/test does)");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

/// One member process.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    /// "http" or "https" (peer TLS flags in `extra`).
    pub peer_scheme: &'static str,
    pub dir: PathBuf,
    /// `--initial-cluster` it was started with.
    pub initial_cluster: String,
    pub state: String,
    pub token: String,
    pub extra: Vec<String>,
    /// Set when the client URLs are `https://` (server flags in `extra`):
    /// what etcdctl and the readiness probe present.
    pub client_tls: Option<ClientTls>,
    pub child: Option<Child>,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn client_url(&self) -> String {
        let scheme = if self.client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// What etcdctl's `--endpoints` names for this member.
    fn etcdctl_endpoint(&self) -> String {
        match self.client_tls {
            Some(_) => self.client_url(),
            None => self.endpoint(),
        }
    }

    /// `/health` answers 200 (through curl with the client certificate
    /// when the client URL is `https://`).
    fn healthy(&self) -> bool {
        match &self.client_tls {
            None => matches!(http_get(self.client_port, "/health"), Some((200, _))),
            Some(tls) => {
                let (code, body) = tls.curl(&format!("{}/health", self.client_url()));
                code == 0 && body.contains(r#""health":"true""#)
            }
        }
    }

    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.peer_scheme, self.peer_port)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Spawn the process (stderr captured to `<dir>.log`).
    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.with_extension("log")).expect("log file");
        let child = Command::new(raftcd_bin())
            .args(["--name", &self.name])
            .args(["--data-dir", &self.dir.display().to_string()])
            .args(["--listen-client-urls", &self.client_url()])
            .args(["--advertise-client-urls", &self.client_url()])
            .args(["--listen-peer-urls", &self.peer_url()])
            .args(["--initial-advertise-peer-urls", &self.peer_url()])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", &self.state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_MS.to_string()])
            .args(&self.extra)
            .env("ETCD_LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn raftcd");
        self.child = Some(child);
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    /// Wait until `/health` answers 200.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "member {} exited early with {status}:\n{}",
                        self.name,
                        self.log()
                    );
                }
            }
            if self.healthy() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "member {} not ready in time:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait up to `timeout` for the process to exit: it must exit non-zero
    /// with `why` in its log (`what` names it in a failure).
    #[track_caller]
    pub fn assert_exits(&mut self, timeout: Duration, what: &str, why: &str) {
        let code = self.wait_exit(timeout);
        let log = self.log();
        assert!(matches!(code, Some(c) if c != 0), "{what}: {code:?}\n{log}");
        assert!(log.contains(why), "{what}: {log}");
    }

    /// Wait for the process to exit on its own; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Some(status.code().unwrap_or(-1));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// etcdctl against this member only.
    pub fn etcdctl(&self, args: &[&str]) -> Out {
        etcdctl(
            &self.etcdctl_endpoint(),
            &with_tls(&self.client_tls, args),
            None,
        )
    }
}

/// `args` after the client TLS flags of `tls`, if any.
fn with_tls<'a>(tls: &'a Option<ClientTls>, args: &[&'a str]) -> Vec<&'a str> {
    let mut all: Vec<&str> = Vec::new();
    if let Some(t) = tls {
        all.extend(["--cacert", t.ca.as_str(), "--cert", t.cert.as_str()]);
        all.extend(["--key", t.key.as_str()]);
    }
    all.extend_from_slice(args);
    all
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of member processes sharing one temp dir.
pub struct Cluster {
    pub members: Vec<Member>,
    pub token: String,
    pub tmp: tempfile::TempDir,
    _machine: Machine,
}

impl Cluster {
    /// Start `n` members of a new cluster with etcd-style static bootstrap
    /// flags, all at once, and wait until every one is healthy.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with(n, extra, "http", tempfile::tempdir().expect("tempdir"))
    }

    /// [`Cluster::start`] with peer URLs of `peer_scheme`, in `tmp`.
    pub fn start_with(
        n: usize,
        extra: &[&str],
        peer_scheme: &'static str,
        tmp: tempfile::TempDir,
    ) -> Cluster {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Cluster::start_tls(n, |_| extra.clone(), peer_scheme, None, tmp)
    }

    /// [`Cluster::start_with`] with per-member flags (`extra(i)` for member
    /// `m<i>`, 1-based), and `https://` client URLs reached with
    /// `client_tls` when given (the server's client TLS flags go in
    /// `extra`).
    pub fn start_tls(
        n: usize,
        extra: impl Fn(usize) -> Vec<String>,
        peer_scheme: &'static str,
        client_tls: Option<ClientTls>,
        tmp: tempfile::TempDir,
    ) -> Cluster {
        let _machine = machine_share();
        let token = "test-cluster".to_string();
        let mut members: Vec<Member> = (1..=n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                peer_scheme,
                dir: tmp.path().join(format!("m{i}")),
                initial_cluster: String::new(),
                state: "new".into(),
                token: token.clone(),
                extra: extra(i),
                client_tls: client_tls.clone(),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial_cluster = initial.clone();
            m.spawn();
        }
        for m in &mut members {
            m.wait_ready(Duration::from_secs(30));
        }
        Cluster {
            members,
            token,
            tmp,
            _machine,
        }
    }

    /// `--initial-cluster` of the original members.
    pub fn initial_cluster(&self) -> String {
        self.members[0].initial_cluster.clone()
    }

    /// Comma-separated endpoints of the running members.
    pub fn endpoints(&mut self) -> String {
        self.members
            .iter_mut()
            .filter_map(|m| m.is_running().then(|| m.etcdctl_endpoint()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// etcdctl with `--endpoints` listing every running member.
    pub fn etcdctl(&mut self, args: &[&str]) -> Out {
        let eps = self.endpoints();
        let tls = self.members.first().and_then(|m| m.client_tls.clone());
        etcdctl(&eps, &with_tls(&tls, args), None)
    }

    /// `endpoint status -w json` of one member: (member id, leader id,
    /// raft term, raft index, is learner).
    pub fn status(&self, i: usize) -> Option<Status> {
        let out = self.members[i].etcdctl(&["endpoint", "status", "-w", "json"]);
        if out.code != 0 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        let s = &v[0]["Status"];
        Some(Status {
            member_id: s["header"]["member_id"].as_u64()?,
            leader: s["leader"].as_u64()?,
            is_learner: s["isLearner"].as_bool().unwrap_or(false),
        })
    }

    /// Index of the member every running member names as leader, once they
    /// all agree (waits up to `timeout`).
    pub fn wait_leader(&mut self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.agreed_leader() {
                return i;
            }
            assert!(Instant::now() < deadline, "no agreed leader in time");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Index of the leader if every running member names the same one.
    pub fn agreed_leader(&mut self) -> Option<usize> {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|i| self.members[*i].is_running())
            .collect();
        let mut ids = Vec::new();
        let mut leader = None;
        for i in &running {
            let s = self.status(*i)?;
            ids.push((s.member_id, *i));
            match leader {
                None => leader = Some(s.leader),
                Some(l) if l == s.leader => {}
                Some(_) => return None,
            }
        }
        let leader = leader?;
        ids.iter().find(|(id, _)| *id == leader).map(|(_, i)| *i)
    }
}

/// A member's `endpoint status`.
#[derive(Debug, Clone, Copy)]
pub struct Status {
    pub member_id: u64,
    pub leader: u64,
    pub is_learner: bool,
}

/// Run `f` until it returns `Some`, up to `timeout`.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (revision, hash) of `endpoint hashkv` on member `i`.
pub fn hashkv(c: &Cluster, i: usize) -> Option<(i64, u64)> {
    let out = c.members[i].etcdctl(&["endpoint", "hashkv", "-w", "json"]);
    if out.code != 0 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    let h = &v[0]["HashKV"];
    Some((h["header"]["revision"].as_i64()?, h["hash"].as_u64()?))
}

/// Wait until the running members in `which` report the same hashkv at
/// the same revision; that pair.
pub fn converged(c: &Cluster, which: &[usize]) -> (i64, u64) {
    eventually(Duration::from_secs(20), || {
        let all: Vec<(i64, u64)> = which.iter().map(|i| hashkv(c, *i)).collect::<Option<_>>()?;
        all.windows(2).all(|w| w[0] == w[1]).then(|| all[0])
    })
}

/// Compact at the cluster's current revision (read through `client`), as
/// an operator would; the revision compacted at.
pub async fn compact_now(client: &etcd_client::Client) -> i64 {
    let rev = client
        .kv_client()
        .get("any", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    client
        .kv_client()
        .compact(rev, None)
        .await
        .expect("compact");
    rev
}
