//! In-process clusters for the fault schedules. Every member runs on a
//! tokio runtime of its own with one worker thread, so that:
//! - **kill** drops that runtime: every task, connection, listener and
//!   storage handle of the member goes at once, with no shutdown path run
//!   (as `kill -9`, keeping what reached the page cache);
//! - **pause** blocks that one worker: nothing of the member runs — timers,
//!   peer and client traffic, applies — until it resumes, while its peers'
//!   messages wait in the sockets (as SIGSTOP/SIGCONT);
//! - **partitions** cut real peer traffic with the transport's fault filter
//!   (both directions: each side drops what it would send across);
//! - **the network** is never perfect: every peer message is delayed by a
//!   random 0-15 ms, one in 25 by 40-80 ms (jitter and a tail: followers
//!   lag, messages overtake each other), and a **slow** member's messages by
//!   100 ms more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use raftcd::raft::network::{Fault, FaultFilter, Rpc};
use raftcd::{Config, Node};
use tokio::runtime::Runtime;
use url::Url;

#[path = "../support/ports.rs"]
mod ports;
pub use ports::free_port;

/// The network between the members: which side of a partition each member
/// is on (absent: side 0), which member's links are slow, and the jitter
/// every message sees.
#[derive(Default)]
struct Net {
    sides: RwLock<HashMap<u64, u32>>,
    slow: RwLock<Option<u64>>,
    /// xorshift state for the jitter.
    dice: AtomicU64,
}

/// Every message between members is delayed by up to this much (a real
/// network's jitter: it lets followers lag and reorders messages) ...
const JITTER_MS: u64 = 15;
/// ... and one in [`TAIL_ONE_IN`] by [`TAIL_MS`] to twice that (a real
/// network's tail: a follower's replication stalls for a moment).
const TAIL_ONE_IN: u64 = 25;
const TAIL_MS: u64 = 40;
/// A slow member's messages, both ways, take this much longer.
const SLOW_MS: u64 = 100;

impl Net {
    fn side(&self, member: u64) -> u32 {
        self.sides
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&member)
            .copied()
            .unwrap_or(0)
    }

    fn jitter(&self) -> u64 {
        let mut x = self.dice.load(Ordering::Relaxed) | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.dice.store(x, Ordering::Relaxed);
        if (x >> 32).is_multiple_of(TAIL_ONE_IN) {
            TAIL_MS + x % (TAIL_MS + 1)
        } else {
            x % (JITTER_MS + 1)
        }
    }
}

/// The fault filter of one member.
struct Cut {
    me: u64,
    net: Arc<Net>,
}

impl FaultFilter for Cut {
    fn outgoing(&self, to: u64, _rpc: Rpc) -> Fault {
        if self.net.side(self.me) != self.net.side(to) {
            return Fault::Drop;
        }
        let slow = *self.net.slow.read().unwrap_or_else(PoisonError::into_inner);
        let extra = if slow == Some(self.me) || slow == Some(to) {
            SLOW_MS
        } else {
            0
        };
        Fault::Delay(Duration::from_millis(self.net.jitter() + extra))
    }
}

/// One member: its config, and while it runs, its runtime and node.
pub struct Member {
    pub name: String,
    pub client_url: String,
    config: Config,
    id: u64,
    running: Option<(Runtime, Node)>,
    /// A start in progress on a thread of its own (a member that starts
    /// inside a partition waits for a quorum, as etcd does, until healed).
    starting: Option<Starting>,
    /// Removed from the cluster (a replacement whose `member add` was
    /// refused): never started again.
    removed: bool,
}

impl Member {
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }
}

/// A member's start in progress.
struct Starting {
    done: std::sync::mpsc::Receiver<Result<(Runtime, Node), String>>,
    since: Instant,
}

/// A cluster of in-process members on loopback, on temporary storage.
pub struct Cluster {
    pub members: Vec<Member>,
    net: Arc<Net>,
    /// Members started to replace removed ones so far.
    replaced: usize,
    /// Starts that never finished (a member that cannot find its leader).
    pub hung: Vec<String>,
    dir: tempfile::TempDir,
}

async fn connect_admin(endpoint: &str) -> Result<etcd_client::Client, String> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(5));
    etcd_client::Client::connect([endpoint], Some(options))
        .await
        .map_err(|e| format!("connect to {endpoint}: {e}"))
}

/// How long a member's start may take, once the network is healed, before
/// the harness calls it hung.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Start a member on a thread of its own; the receiver gets the result.
/// A start refused at once (the old member's data dir lock or ports not yet
/// released) is tried again for up to 15 s.
fn start_in_background(
    config: Config,
    filter: Arc<dyn FaultFilter>,
) -> std::sync::mpsc::Receiver<Result<(Runtime, Node), String>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        let result = loop {
            match start_member(config.clone(), Some(filter.clone())) {
                Ok(started) => break Ok(started),
                Err(e) if Instant::now() > deadline => break Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let _ = tx.send(result);
    });
    rx
}

fn start_member(
    config: Config,
    filter: Option<Arc<dyn FaultFilter>>,
) -> Result<(Runtime, Node), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("member-{}", config.name))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let node = runtime
        .block_on(Node::start_filtered(config, filter))
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
                c.stale_follower_reads |= stale_reads;
                c
            })
            .collect();
        Cluster::launch(configs, dir)
    }

    /// Start `n` replicas of one replica table (`--replica-table`, mode
    /// incremental): the cluster forms and grows itself (1 voter for 1-2
    /// live replicas, 3 for 3-4, 5 for 5+), and replaces dead voters.
    /// Waits until the voter count is the rule's.
    pub fn start_grown(n: usize, stale_reads: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = "token = \"linearizability-grown\"\nheartbeat_interval_ms = 100\ndead_after_ms = 1000\n".to_string();
        for id in 1..=n {
            text.push_str(&format!(
                "\n[[replica]]\nid = {id}\nname = \"g{id}\"\nclient_url = \"http://127.0.0.1:{}\"\npeer_url = \"http://127.0.0.1:{}\"\n",
                free_port(),
                free_port()
            ));
        }
        let table = raftcd::replicas::ReplicaTable::parse("replicas.toml", &text).expect("table");
        let configs: Vec<Config> = (1..=n)
            .map(|id| {
                let mut c = Config::embedded(dir.path().join(format!("g{id}")))
                    .with_replica_table(table.clone(), id as u64)
                    .expect("replica config");
                c.heartbeat_interval_ms = 50;
                c.election_timeout_ms = 500;
                c.stale_follower_reads |= stale_reads;
                c
            })
            .collect();
        let cluster = Cluster::launch(configs, dir);
        let want = match n {
            0..=2 => 1,
            3..=4 => 3,
            _ => 5,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.voters() != want {
            assert!(
                Instant::now() < deadline,
                "the grown cluster has {} voters after 30 s, not {want}",
                cluster.voters()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// Running members that are voters.
    pub fn voters(&self) -> usize {
        self.members
            .iter()
            .filter_map(|m| m.running.as_ref())
            .filter(|(_, node)| !node.is_learner())
            .count()
    }

    fn launch(configs: Vec<Config>, dir: tempfile::TempDir) -> Cluster {
        // Each member's start waits for the others: start them side by side.
        let started: Vec<(Runtime, Node)> = std::thread::scope(|s| {
            let handles: Vec<_> = configs
                .iter()
                .map(|c| {
                    let c = c.clone();
                    s.spawn(move || start_member(c, None))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("start thread").expect("start member"))
                .collect()
        });
        let net = Arc::new(Net::default());
        let members = configs
            .into_iter()
            .zip(started)
            .map(|(config, (runtime, node))| {
                let id = node.identity().member_id;
                node.set_fault_filter(Some(Arc::new(Cut {
                    me: id,
                    net: net.clone(),
                })));
                Member {
                    name: config.name.clone(),
                    client_url: config.listen_client_urls[0].to_string(),
                    config,
                    id,
                    running: Some((runtime, node)),
                    starting: None,
                    removed: false,
                }
            })
            .collect();
        Cluster {
            members,
            net,
            replaced: 0,
            hung: Vec::new(),
            dir,
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

    /// Whether running member `i` knows a leader (a remembered one too).
    pub fn knows_leader(&self, i: usize) -> bool {
        self.members[i]
            .running
            .as_ref()
            .is_some_and(|(_, node)| node.leader().is_some())
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

    /// Start member `i` again on its data dir, in the background: it
    /// joins the running members once its start finishes (see
    /// [`Cluster::poll_starts`]). Says what it did.
    pub fn restart(&mut self, i: usize) -> String {
        let m = &mut self.members[i];
        if m.is_running() || m.starting.is_some() || m.removed {
            return format!("{} is up", m.name);
        }
        let filter = Arc::new(Cut {
            me: m.id,
            net: self.net.clone(),
        });
        m.starting = Some(Starting {
            done: start_in_background(m.config.clone(), filter),
            since: Instant::now(),
        });
        format!("starting {}", m.name)
    }

    /// Members whose start finished join the running ones; says what
    /// happened to each (a start that failed is reported, not retried).
    pub fn poll_starts(&mut self) -> Vec<String> {
        let mut said = Vec::new();
        for m in &mut self.members {
            let Some(starting) = &m.starting else {
                continue;
            };
            let result = match starting.done.try_recv() {
                Ok(result) => result,
                Err(std::sync::mpsc::TryRecvError::Empty) => continue,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    Err("the start thread died".to_string())
                }
            };
            let took = starting.since.elapsed();
            m.starting = None;
            match result {
                Ok((runtime, node)) => {
                    m.id = node.identity().member_id;
                    node.set_fault_filter(Some(Arc::new(Cut {
                        me: m.id,
                        net: self.net.clone(),
                    })));
                    m.running = Some((runtime, node));
                    said.push(format!(
                        "{} started after {:.1} s",
                        m.name,
                        took.as_secs_f64()
                    ));
                }
                Err(e) => said.push(format!("start of {}: {e}", m.name)),
            }
        }
        said
    }

    /// Wait (up to [`START_TIMEOUT`]) until no start is in progress; a
    /// start still in progress then is recorded in [`Cluster::hung`].
    pub fn wait_started(&mut self) -> Vec<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut said = Vec::new();
        loop {
            said.extend(self.poll_starts());
            if self.members.iter().all(|m| m.starting.is_none()) {
                return said;
            }
            if Instant::now() > deadline {
                let leader = self.leader().map(|l| self.members[l].name.clone());
                for m in self.members.iter().filter(|m| m.starting.is_some()) {
                    self.hung.push(format!(
                        "{} did not finish starting {} s after the network healed (its peers' leader: {leader:?}; started {:.1} s before)",
                        m.name,
                        START_TIMEOUT.as_secs(),
                        m.starting.as_ref().map_or(0.0, |s| s.since.elapsed().as_secs_f64()),
                    ));
                }
                return said;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
        let mut sides = self
            .net
            .sides
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        sides.clear();
        for &i in minority {
            sides.insert(self.members[i].id, 1);
        }
    }

    /// Slow down every message to and from member `i`.
    pub fn slow(&self, i: usize) {
        *self
            .net
            .slow
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(self.members[i].id);
    }

    /// End partitions and slow links.
    pub fn heal(&self) {
        self.net
            .sides
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        *self
            .net
            .slow
            .write()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Replace running member `i` the way an operator would: `member
    /// remove` it (asked of the leader, over gRPC), kill it, `member add` a
    /// new one with a new peer URL and an empty data dir, and start that one
    /// with `--initial-cluster-state existing` on the old one's client URL
    /// (so the clients bound there follow). Says what happened; a refusal
    /// (etcd's strict reconfiguration check under faults) changes nothing.
    pub fn replace(&mut self, i: usize) -> Result<String, String> {
        let leader = self.leader().ok_or("no leader")?;
        let admin = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let endpoint = self.members[leader].client_url.clone();
        let old = self.members[i].id;
        let old_name = self.members[i].name.clone();
        admin.block_on(async {
            let mut client = connect_admin(&endpoint).await?;
            client
                .member_remove(old)
                .await
                .map_err(|e| format!("member remove {old_name} refused: {e}"))?;
            Ok::<_, String>(())
        })?;
        self.kill(i);
        self.members[i].removed = true;

        self.replaced += 1;
        let name = format!("{old_name}r{}", self.replaced);
        let peer =
            Url::parse(&format!("http://127.0.0.1:{}", free_port())).map_err(|e| e.to_string())?;
        let initial_cluster: Vec<(String, Vec<Url>)> = admin.block_on(async {
            let mut client = connect_admin(&endpoint).await?;
            let added = client
                .member_add([peer.to_string()], None)
                .await
                .map_err(|e| format!("member add {name} refused: {e}"))?;
            let mut cluster = Vec::new();
            for m in added.member_list() {
                let member_name = if m.name().is_empty() {
                    name.clone()
                } else {
                    m.name().to_string()
                };
                let urls = m
                    .peer_urls()
                    .iter()
                    .map(|u| Url::parse(u).map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()?;
                cluster.push((member_name, urls));
            }
            Ok::<_, String>(cluster)
        })?;
        let mut config = self.members[i].config.clone();
        config.name = name.clone();
        config.data_dir = self.dir.path().join(&name);
        config.listen_peer_urls = vec![peer.clone()];
        config.initial_advertise_peer_urls = vec![peer];
        config.initial_cluster = initial_cluster;
        config.initial_cluster_state = raftcd::config::ClusterState::Existing;
        self.members[i] = Member {
            name: name.clone(),
            client_url: self.members[i].client_url.clone(),
            config,
            id: 0,
            running: None,
            starting: None,
            removed: false,
        };
        self.restart(i);
        Ok(format!("removed {old_name}, added {name}, starting it"))
    }

    /// Kill every member.
    pub fn stop(mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
