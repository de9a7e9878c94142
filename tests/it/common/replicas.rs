//! Replicas of one replica table (`--replica-table`), each a real raftcd
//! process on free loopback ports with its own data dir.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{etcdctl, free_port, machine_share, raftcd_bin, Machine, Out};

/// The replicas of one table.
pub struct Replicas {
    pub dir: tempfile::TempDir,
    pub table: PathBuf,
    /// (client port, peer port) of replica `i + 1`.
    pub ports: Vec<(u16, u16)>,
    pub children: Vec<Option<Child>>,
    _machine: Machine,
}

impl Replicas {
    /// A table of `n` replicas (ids 1..=n) with `settings` (TOML lines
    /// before the rows) and per-row extras (`run_node = false` and such).
    pub fn new(n: usize, settings: &str, row_extra: impl Fn(usize) -> String) -> Replicas {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let mut text = format!("{settings}\n");
        for (i, (c, p)) in ports.iter().enumerate() {
            text.push_str(&format!(
                "\n[[replica]]\nid = {}\nname = \"r{}\"\nclient_url = \"http://127.0.0.1:{c}\"\npeer_url = \"http://127.0.0.1:{p}\"\n{}\n",
                i + 1,
                i + 1,
                row_extra(i + 1)
            ));
        }
        let table = dir.path().join("replicas.toml");
        std::fs::write(&table, text).expect("write table");
        Replicas {
            dir,
            table,
            ports,
            children: (0..n).map(|_| None).collect(),
            _machine: machine_share(),
        }
    }

    /// The data dir of replica `id`.
    pub fn data_dir(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("r{id}"))
    }

    fn log_path(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("r{id}.log"))
    }

    /// The log of replica `id` so far.
    pub fn log(&self, id: usize) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// Start replica `id` (appending to its log).
    pub fn start(&mut self, id: usize) {
        self.start_with(id, &[]);
    }

    /// Start replica `id` with extra flags.
    pub fn start_with(&mut self, id: usize, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("log file");
        let child = Command::new(raftcd_bin())
            .args(["--replica-table", &self.table.display().to_string()])
            .args(["--replica-id", &id.to_string()])
            .args(["--data-dir", &self.data_dir(id).display().to_string()])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(extra)
            .env("ETCD_LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn raftcd");
        self.children[id - 1] = Some(child);
    }

    /// SIGKILL replica `id`.
    pub fn kill(&mut self, id: usize) {
        if let Some(mut c) = self.children[id - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait up to `timeout` for replica `id` to exit on its own; its code.
    pub fn wait_exit(&mut self, id: usize, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.children[id - 1].as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.children[id - 1] = None;
                    return Some(status.code().unwrap_or(-1));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Whether replica `id`'s process runs.
    pub fn running(&mut self, id: usize) -> bool {
        self.children[id - 1]
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// etcdctl against replica `id`.
    pub fn etcdctl(&self, id: usize, args: &[&str]) -> Out {
        let endpoint = format!("127.0.0.1:{}", self.ports[id - 1].0);
        etcdctl(
            &endpoint,
            &[&["--command-timeout=10s"], args].concat(),
            None,
        )
    }

    /// `member list` through replica `id`: (name, is learner) per member.
    pub fn members(&self, id: usize) -> Option<Vec<(String, bool)>> {
        let out = self.etcdctl(id, &["member", "list"]);
        if out.code != 0 {
            return None;
        }
        Some(
            out.stdout
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(", ").collect();
                    Some((f.get(2)?.to_string(), *f.get(5)? == "true"))
                })
                .collect(),
        )
    }

    /// The voters' names, sorted, as replica `id` lists them.
    pub fn voters(&self, id: usize) -> Option<Vec<String>> {
        let mut v: Vec<String> = self
            .members(id)?
            .into_iter()
            .filter(|(_, learner)| !learner)
            .map(|(n, _)| n)
            .collect();
        v.sort();
        Some(v)
    }

    /// The cluster id replica `id` reports (`endpoint status`).
    pub fn cluster_id(&self, id: usize) -> Option<u64> {
        let out = self.etcdctl(id, &["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        v[0]["Status"]["header"]["cluster_id"].as_u64()
    }

    /// Wait until replica `id` answers `/health` with 200.
    pub fn wait_ready(&mut self, id: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            assert!(self.running(id), "replica {id} exited:\n{}", self.log(id));
            if matches!(
                super::http_get(self.ports[id - 1].0, "/health"),
                Some((200, _))
            ) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica {id} not ready in time:\n{}",
                self.log(id)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for c in self.children.iter_mut().filter_map(Option::take) {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
