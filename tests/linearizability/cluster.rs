//! In-process clusters for the fault schedules. Every member runs on a
//! tokio runtime of its own with one worker thread, so that:
//! - **kill** drops that runtime: every task, connection, listener and
//!   storage handle of the member goes at once, with no shutdown path run
//!   (as `kill -9`, keeping what reached the page cache);
//! - **pause** blocks that one worker: nothing of the member runs — timers,
//!   peer and client traffic, applies — until it resumes, while its peers'
//!   messages wait in the sockets (as SIGSTOP/SIGCONT);
//! - **partitions** cut real peer traffic with the transport's fault filter
//!   (both directions: each side drops what it would send across).

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use raftcd::raft::network::{Fault, FaultFilter, Rpc};
use raftcd::{Config, Node};
use tokio::runtime::Runtime;
use url::Url;

/// A free loopback port, never one handed out before in this process.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port");
        let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Which side of a partition each member is on (absent: side 0).
#[derive(Default)]
struct Sides(RwLock<HashMap<u64, u32>>);

impl Sides {
    fn side(&self, member: u64) -> u32 {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&member)
            .copied()
            .unwrap_or(0)
    }
}

/// The fault filter of one member.
struct Cut {
    me: u64,
    sides: Arc<Sides>,
}

impl FaultFilter for Cut {
    fn outgoing(&self, to: u64, _rpc: Rpc) -> Fault {
        if self.sides.side(self.me) == self.sides.side(to) {
            Fault::Deliver
        } else {
            Fault::Drop
        }
    }
}

/// One member: its config, and while it runs, its runtime and node.
pub struct Member {
    pub name: String,
    pub client_url: String,
    config: Config,
    id: u64,
    running: Option<(Runtime, Node)>,
}

impl Member {
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }
}

/// A cluster of in-process members on loopback, on temporary storage.
pub struct Cluster {
    pub members: Vec<Member>,
    sides: Arc<Sides>,
    _dir: tempfile::TempDir,
}

fn start_member(config: Config) -> Result<(Runtime, Node), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("member-{}", config.name))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let node = runtime
        .block_on(Node::start(config))
        .map_err(|e| e.to_string())?;
    Ok((runtime, node))
}

impl Cluster {
    /// Start `n` members; with `stale_reads`, the deliberately broken
    /// follower reads (`Config::stale_follower_reads`).
    pub fn start(n: usize, stale_reads: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let peers: Vec<(String, Vec<Url>)> = (0..n)
            .map(|i| {
                let url = Url::parse(&format!("http://127.0.0.1:{}", free_port())).expect("url");
                (format!("m{i}"), vec![url])
            })
            .collect();
        let configs: Vec<Config> = peers
            .iter()
            .map(|(name, urls)| {
                let client = Url::parse(&format!("http://127.0.0.1:{}", free_port())).expect("url");
                let mut c = Config::embedded(dir.path().join(name));
                c.name = name.clone();
                c.listen_peer_urls = urls.clone();
                c.initial_advertise_peer_urls = urls.clone();
                c.listen_client_urls = vec![client.clone()];
                c.advertise_client_urls = vec![client];
                c.initial_cluster = peers.clone();
                c.initial_cluster_token = "linearizability".into();
                c.heartbeat_interval_ms = 50;
                c.election_timeout_ms = 500;
                c.stale_follower_reads = stale_reads;
                c
            })
            .collect();
        // Each member's start waits for the others: start them side by side.
        let started: Vec<(Runtime, Node)> = std::thread::scope(|s| {
            let handles: Vec<_> = configs
                .iter()
                .map(|c| {
                    let c = c.clone();
                    s.spawn(move || start_member(c))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("start thread").expect("start member"))
                .collect()
        });
        let sides = Arc::new(Sides::default());
        let members = configs
            .into_iter()
            .zip(started)
            .map(|(config, (runtime, node))| {
                let id = node.identity().member_id;
                node.set_fault_filter(Some(Arc::new(Cut {
                    me: id,
                    sides: sides.clone(),
                })));
                Member {
                    name: config.name.clone(),
                    client_url: config.listen_client_urls[0].to_string(),
                    config,
                    id,
                    running: Some((runtime, node)),
                }
            })
            .collect();
        Cluster {
            members,
            sides,
            _dir: dir,
        }
    }

    /// The leader as the running members see it (the first one that knows).
    pub fn leader(&self) -> Option<usize> {
        let id = self
            .members
            .iter()
            .filter_map(|m| m.running.as_ref())
            .find_map(|(_, node)| node.leader())?;
        self.members
            .iter()
            .position(|m| m.id == id && m.is_running())
    }

    /// Wait until some running member knows a running leader.
    pub fn wait_leader(&self, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill member `i` at once (see the module doc).
    pub fn kill(&mut self, i: usize) {
        if let Some((runtime, node)) = self.members[i].running.take() {
            runtime.shutdown_background();
            drop(node);
        }
    }

    /// Start member `i` again on its data dir (waiting for the old one's
    /// storage lock and ports to be released).
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        if self.members[i].is_running() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        let (runtime, node) = loop {
            match start_member(self.members[i].config.clone()) {
                Ok(started) => break started,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("restart of {}: {e}", self.members[i].name))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        node.set_fault_filter(Some(Arc::new(Cut {
            me: self.members[i].id,
            sides: self.sides.clone(),
        })));
        self.members[i].running = Some((runtime, node));
        Ok(())
    }

    /// Freeze member `i` for `how_long` (see the module doc); returns at once.
    pub fn pause(&self, i: usize, how_long: Duration) {
        if let Some((runtime, _)) = &self.members[i].running {
            runtime.spawn(async move {
                // Blocks the member's only worker thread on purpose.
                std::thread::sleep(how_long);
            });
        }
    }

    /// Cut the members in `minority` off from the others.
    pub fn partition(&self, minority: &[usize]) {
        let mut sides = self.sides.0.write().unwrap_or_else(PoisonError::into_inner);
        sides.clear();
        for &i in minority {
            sides.insert(self.members[i].id, 1);
        }
    }

    pub fn heal(&self) {
        self.sides
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Kill every member.
    pub fn stop(mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
