//! A running raftcd member: storage, Raft, the state machine and the client
//! listeners, wired together. [`Node::start`] is the one start function; the
//! binary and embedding programs both use it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::RaftError;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::ApiError;
use crate::config::{ClusterState, Config};
use crate::mvcc::{Command, Reply, View};
use crate::pb::etcdserverpb::ResponseHeader;
use crate::raft::log_store::LogStore;
use crate::raft::network::PeerNetwork;
use crate::raft::proposer::{ProposeError, Proposer};
use crate::raft::state_machine::{ReadView, StateMachine};
use crate::raft::{MemberInfo, Raft};
use crate::storage::{decode, encode, Space, Storage, StorageError, WriteBatch};
use crate::tls::ServerTls;

/// How long a client request waits for a leader / for its commit.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("data dir {dir} belongs to member {found_name:?} of cluster {found_cluster:x}, but --name {name:?} with --initial-cluster-token {token:?} and --initial-cluster make member {name:?} of cluster {cluster:x}")]
    WrongDataDir {
        dir: String,
        found_name: String,
        found_cluster: u64,
        name: String,
        token: String,
        cluster: u64,
    },
    #[error("this build runs single-member clusters only; --initial-cluster lists {0} members")]
    MultiMember(usize),
    #[error("--initial-cluster-state existing needs a running cluster to join, which this build cannot do yet")]
    JoinUnsupported,
    #[error("cannot listen on {url}: {source}")]
    Listen {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Stable identity of this member and its cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub name: String,
    pub member_id: u64,
    pub cluster_id: u64,
}

fn hash_id(parts: &[&str]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b).max(1)
}

impl Identity {
    /// Member id from name, peer URLs and cluster token; cluster id from the
    /// token and the initial member list. Never zero.
    pub fn derive(config: &Config) -> Self {
        let peers: Vec<String> = config
            .initial_advertise_peer_urls
            .iter()
            .map(|u| u.as_str().to_string())
            .collect();
        let mut parts = vec![
            "member",
            config.name.as_str(),
            config.initial_cluster_token.as_str(),
        ];
        parts.extend(peers.iter().map(String::as_str));
        let member_id = hash_id(&parts);
        let mut members: Vec<String> = config
            .initial_cluster
            .iter()
            .map(|(n, us)| {
                let us: Vec<&str> = us.iter().map(|u| u.as_str()).collect();
                format!("{n}={}", us.join(","))
            })
            .collect();
        members.sort();
        let mut parts = vec!["cluster", config.initial_cluster_token.as_str()];
        parts.extend(members.iter().map(String::as_str));
        Identity {
            name: config.name.clone(),
            member_id,
            cluster_id: hash_id(&parts),
        }
    }
}

/// Raft facts readers need without touching Raft's locks.
#[derive(Default)]
pub struct RaftState {
    pub term: AtomicU64,
    pub leader: AtomicU64,
    pub last_log_index: AtomicU64,
    pub applied_index: AtomicU64,
}

pub(crate) struct Inner {
    pub config: Config,
    pub identity: Identity,
    pub storage: Storage,
    pub raft: Raft,
    pub proposer: Proposer,
    pub view: ReadView,
    pub raft_state: Arc<RaftState>,
    pub watch: crate::watch::WatchHub,
    /// Lease deadlines and keep-alives (leader side).
    pub lessor: crate::lessor::Lessor,
    /// TLS of the `https://` client listeners.
    pub client_tls: Option<Arc<ServerTls>>,
    /// TLS of the `https://` peer listeners and of dialing peers, loaded
    /// and checked at start for the peer service.
    pub peer_tls: Option<Arc<ServerTls>>,
    shutdown_tx: watch::Sender<bool>,
    pub client_addrs: std::sync::Mutex<Vec<std::net::SocketAddr>>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// A running member. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

const KEY_IDENTITY: &[u8] = b"identity";

fn check_identity(storage: &Storage, config: &Config, id: &Identity) -> Result<(), StartError> {
    match storage.get(Space::Identity, KEY_IDENTITY)? {
        Some(v) => {
            let found: Identity = decode(Space::Identity, &v)?;
            if found.cluster_id != id.cluster_id || found.name != id.name {
                return Err(StartError::WrongDataDir {
                    dir: config.data_dir.display().to_string(),
                    found_name: found.name,
                    found_cluster: found.cluster_id,
                    name: id.name.clone(),
                    token: config.initial_cluster_token.clone(),
                    cluster: id.cluster_id,
                });
            }
        }
        None => {
            let mut b = WriteBatch::new();
            b.put(Space::Identity, KEY_IDENTITY, encode(id));
            storage.write(b)?;
            storage.flush_blocking()?;
        }
    }
    Ok(())
}

impl Node {
    /// Open the data dir, start Raft and serve the client URLs.
    pub async fn start(config: Config) -> Result<Node, StartError> {
        if config.initial_cluster.len() > 1 {
            return Err(StartError::MultiMember(config.initial_cluster.len()));
        }
        config.check_tls()?;
        // Certificate problems surface before the data dir is touched.
        let client_tls = load_tls(&config.listen_client_urls, config.client_tls.as_ref())?;
        let peer_tls = load_tls(&config.listen_peer_urls, config.peer_tls.as_ref())?;
        let identity = Identity::derive(&config);
        let storage = Storage::open(&config.data_dir)?;
        check_identity(&storage, &config, &identity)?;
        let log_store = LogStore::new(storage.clone());
        let fresh = log_store.stored_vote()?.is_none();
        if fresh && config.initial_cluster_state == ClusterState::Existing {
            return Err(StartError::JoinUnsupported);
        }
        let sm = StateMachine::open(storage.clone())?;
        let view = sm.read_view();
        let events = sm.event_sender();

        let raft_config = openraft::Config {
            cluster_name: config.initial_cluster_token.clone(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_ms,
            election_timeout_max: config.election_timeout_ms * 2,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_count),
            max_in_snapshot_log_to_keep: 1000,
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| StartError::Raft(e.to_string()))?,
        );
        let raft = Raft::new(identity.member_id, raft_config, PeerNetwork, log_store, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;

        let member = MemberInfo {
            name: config.name.clone(),
            peer_urls: config
                .initial_advertise_peer_urls
                .iter()
                .map(url_string)
                .collect(),
            client_urls: config
                .advertise_client_urls
                .iter()
                .map(url_string)
                .collect(),
        };
        if fresh {
            let mut members = BTreeMap::new();
            members.insert(identity.member_id, member);
            raft.initialize(members)
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
        } else {
            // The only voter: no need to wait a whole election timeout.
            let _ = raft.trigger().elect().await;
        }

        let (shutdown_tx, _) = watch::channel(false);
        let raft_state = Arc::new(RaftState::default());
        let watch = crate::watch::WatchHub::new(
            events,
            view.clone(),
            header_fn(&identity, raft_state.clone()),
            crate::watch::Settings {
                progress_notify_interval: config.watch_progress_notify_interval,
                fragment_bytes: config.max_request_bytes + crate::api::GRPC_OVERHEAD_BYTES,
            },
        );
        let lessor = crate::lessor::Lessor::new(identity.member_id, &config);
        let inner = Arc::new(Inner {
            config,
            identity,
            storage,
            proposer: Proposer::start(raft.clone()),
            raft,
            view,
            raft_state,
            watch,
            lessor,
            client_tls,
            peer_tls,
            shutdown_tx,
            client_addrs: std::sync::Mutex::new(Vec::new()),
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        let node = Node { inner };
        node.spawn(track_metrics(
            node.inner.raft.clone(),
            node.inner.raft_state.clone(),
        ));
        node.wait_for_leader(REQUEST_TIMEOUT).await?;
        node.spawn(crate::lessor::run(node.clone()));
        for url in node.inner.config.listen_client_urls.clone() {
            let listener = crate::api::bind(&url)
                .await
                .map_err(|source| StartError::Listen {
                    url: url_string(&url),
                    source,
                })?;
            if let (Ok(addr), Ok(mut addrs)) =
                (listener.local_addr(), node.inner.client_addrs.lock())
            {
                addrs.push(addr);
            }
            tracing::info!(url = %url, addr = ?listener.local_addr().ok(), "serving client requests");
            let tls = match url.scheme() {
                "https" => node.inner.client_tls.clone(),
                _ => None,
            };
            node.spawn(crate::api::serve(
                node.clone(),
                listener,
                tls,
                node.shutdown_signal(),
            ));
        }
        let watched = node.tls_sides();
        if !watched.is_empty() {
            node.spawn(crate::tls::watch_files(watched, node.shutdown_signal()));
        }
        tracing::info!(
            name = %node.inner.identity.name,
            member_id = format!("{:x}", node.inner.identity.member_id),
            cluster_id = format!("{:x}", node.inner.identity.cluster_id),
            "raftcd member ready"
        );
        Ok(node)
    }

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
        let h = tokio::spawn(f);
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            tasks.push(h);
        }
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown_tx.subscribe()
    }

    async fn wait_for_leader(&self, timeout: Duration) -> Result<(), StartError> {
        let mut m = self.inner.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if m.borrow().current_leader.is_some() {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, m.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(StartError::Raft("raft stopped during start-up".into())),
                Err(_) => return Err(StartError::Raft("no leader elected in time".into())),
            }
        }
    }

    fn tls_sides(&self) -> Vec<Arc<ServerTls>> {
        [&self.inner.client_tls, &self.inner.peer_tls]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Re-read the certificate files (the binary does this on SIGHUP; they
    /// are also re-read when they change). On error the old ones stay.
    pub fn reload_tls(&self) -> Result<(), crate::tls::TlsError> {
        for t in self.tls_sides() {
            t.reload()?;
        }
        Ok(())
    }

    /// Certificates (served or trusted) that expired or expire within 7
    /// days, for `endpoint status`'s `errors`.
    pub fn tls_warnings(&self) -> Vec<String> {
        let now = std::time::SystemTime::now();
        self.tls_sides()
            .iter()
            .flat_map(|t| t.expiry_warnings(now))
            .collect()
    }

    /// This member's and its cluster's ids.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// A typed, linearizable KV handle working in-process (no ports).
    pub fn client(&self) -> crate::client::Client {
        crate::client::Client::new(self.clone())
    }

    /// Addresses the client listeners are bound to (useful with port 0).
    pub fn client_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.inner
            .client_addrs
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Propose a command and wait for its reply. Waits for a leader and
    /// retries within [`REQUEST_TIMEOUT`].
    pub(crate) async fn write(&self, cmd: Command) -> Result<Reply, ApiError> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            let attempt =
                tokio::time::timeout_at(deadline, self.inner.proposer.propose(cmd.clone())).await;
            match attempt {
                Err(_) => return Err(ApiError::Timeout),
                Ok(Ok(Reply::Error(e))) => return Err(ApiError::Mvcc(e)),
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(ProposeError::NotLeader(_))) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ApiError::NoLeader);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Err(ProposeError::Other(e))) => return Err(ApiError::Internal(e)),
                Ok(Err(ProposeError::Stopped)) => return Err(ApiError::Stopped),
            }
        }
    }

    /// Wait until a read on the local view is linearizable.
    pub(crate) async fn linearize(&self) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.inner.raft.ensure_linearizable()).await {
                Err(_) => return Err(ApiError::Timeout),
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(_))) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ApiError::NoLeader);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Err(RaftError::Fatal(_))) => return Err(ApiError::Stopped),
            }
        }
    }

    /// The current term if this member is the leader.
    pub(crate) fn leader_term(&self) -> Option<u64> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        (m.current_leader == Some(self.inner.identity.member_id)).then_some(m.current_term)
    }

    /// The current view of the store, for reads.
    pub(crate) fn view(&self) -> Arc<View> {
        self.inner.view.load()
    }

    /// A response header for `revision`.
    pub(crate) fn header(&self, revision: i64) -> ResponseHeader {
        make_header(&self.inner.identity, &self.inner.raft_state, revision)
    }

    /// Stop serving, stop Raft and flush storage. Once every handle to this
    /// node (its clients included) is dropped, the data dir can be reopened.
    pub async fn shutdown(self) -> Result<(), StartError> {
        let _ = self.inner.shutdown_tx.send(true);
        let tasks: Vec<JoinHandle<()>> = match self.inner.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        self.inner.storage.flush().await?;
        // Raft's log and state machine workers drop their storage handles
        // shortly after Raft stops; wait for that, so that the data dir is
        // free to reopen once the caller drops its last handle to this node.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.inner.storage.handle_count() > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }
}

fn make_header(identity: &Identity, raft_state: &RaftState, revision: i64) -> ResponseHeader {
    ResponseHeader {
        cluster_id: identity.cluster_id,
        member_id: identity.member_id,
        revision,
        raft_term: raft_state.term.load(Ordering::Relaxed),
    }
}

/// [`Node::header`] for parts that do not hold a `Node` (the watch hub).
fn header_fn(identity: &Identity, raft_state: Arc<RaftState>) -> crate::watch::HeaderFn {
    let identity = identity.clone();
    Arc::new(move |revision| make_header(&identity, &raft_state, revision))
}

/// Load one side's TLS if any of its listen URLs is `https://`.
fn load_tls(
    listen: &[url::Url],
    tls: Option<&crate::tls::TlsConfig>,
) -> Result<Option<Arc<ServerTls>>, StartError> {
    match tls {
        Some(t) if listen.iter().any(|u| u.scheme() == "https") => {
            Ok(Some(Arc::new(ServerTls::load(t)?)))
        }
        _ => Ok(None),
    }
}

fn url_string(u: &url::Url) -> String {
    u.as_str().trim_end_matches('/').to_string()
}

async fn track_metrics(raft: Raft, state: Arc<RaftState>) {
    let mut m = raft.metrics();
    loop {
        {
            let cur = m.borrow();
            state.term.store(cur.current_term, Ordering::Relaxed);
            state
                .leader
                .store(cur.current_leader.unwrap_or(0), Ordering::Relaxed);
            state
                .last_log_index
                .store(cur.last_log_index.unwrap_or(0), Ordering::Relaxed);
            state
                .applied_index
                .store(cur.last_applied.map_or(0, |l| l.index), Ordering::Relaxed);
        }
        if m.changed().await.is_err() {
            return;
        }
    }
}
