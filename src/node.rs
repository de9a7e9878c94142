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

use crate::cluster::{LeaderOp, LeaderReply, Refusal};
use crate::config::{ClusterState, Config, ConfigError};
use crate::error::ApiError;
use crate::mvcc::ReadView;
use crate::mvcc::{Command, Reply, View};
use crate::pb::etcdserverpb::ResponseHeader;
use crate::raft::log_store::LogStore;
use crate::raft::network::{PeerNetwork, PeerTransport, Rejection, Rpc};
use crate::raft::proposer::Proposer;
use crate::raft::state_machine::{RemovedMembers, StateMachine};
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
    #[error(transparent)]
    Join(#[from] crate::cluster::JoinError),
    #[error("refused by the cluster: {0}")]
    Rejected(String),
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

pub(crate) fn hash_id(parts: &[&str]) -> u64 {
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
    /// Member id from name, peer URLs (this member's `--initial-cluster`
    /// entry) and cluster token; cluster id from the token and the initial
    /// member list. Never zero. Every member derives the same ids for the
    /// whole initial cluster (see [`crate::cluster::member_id`]).
    pub fn derive(config: &Config) -> Self {
        let own = config
            .initial_cluster
            .iter()
            .find(|(n, _)| *n == config.name)
            .map(|(_, us)| us.clone())
            .unwrap_or_else(|| config.initial_advertise_peer_urls.clone());
        let member_id =
            crate::cluster::member_id(&config.name, &own, &config.initial_cluster_token);
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
    /// This member is a learner (not a voter) in the current membership.
    pub is_learner: std::sync::atomic::AtomicBool,
    /// Times this member saw a new leader.
    pub leader_changes: AtomicU64,
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
    pub transport: PeerTransport,
    pub removed: RemovedMembers,
    /// Lease deadlines and keep-alives (leader side).
    pub lessor: crate::lessor::Lessor,
    /// TLS of the `https://` client listeners.
    pub client_tls: Option<Arc<ServerTls>>,
    /// TLS of the `https://` peer listeners and of dialing peers, loaded
    /// and checked at start for the peer service.
    pub peer_tls: Option<Arc<ServerTls>>,
    shutdown_tx: watch::Sender<bool>,
    /// When a leader last sent this member entries or a snapshot.
    last_leader_contact: std::sync::Mutex<std::time::Instant>,
    pub client_addrs: std::sync::Mutex<Vec<std::net::SocketAddr>>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// A running member. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

const KEY_IDENTITY: &[u8] = b"identity";
const KEY_TOKEN: &[u8] = b"token";

/// This member's identity: the one stored in the data dir, or for a new
/// data dir derived from the flags (`new`) or learnt from the cluster
/// (`existing`), then stored.
async fn resolve_identity(storage: &Storage, config: &Config) -> Result<Identity, StartError> {
    let dir = || config.data_dir.display().to_string();
    let token = crate::cluster::token_hash(&config.initial_cluster_token);
    if let Some(v) = storage.get(Space::Identity, KEY_IDENTITY)? {
        let found: Identity = decode(Space::Identity, &v)?;
        let stored_token: Option<u64> = storage
            .get(Space::Identity, KEY_TOKEN)?
            .map(|v| decode(Space::Identity, &v))
            .transpose()?;
        let derived = Identity::derive(config);
        let cluster_ok = match stored_token {
            Some(t) => t == token,
            // Data dirs of single-member builds did not record the token.
            None => found.cluster_id == derived.cluster_id,
        };
        if found.name != config.name || !cluster_ok {
            return Err(StartError::WrongDataDir {
                dir: dir(),
                found_name: found.name,
                found_cluster: found.cluster_id,
                name: config.name.clone(),
                token: config.initial_cluster_token.clone(),
                cluster: derived.cluster_id,
            });
        }
        return Ok(found);
    }
    let id = match config.initial_cluster_state {
        ClusterState::New => Identity::derive(config),
        ClusterState::Existing => crate::cluster::join(config).await?,
    };
    let mut b = WriteBatch::new();
    b.put(Space::Identity, KEY_IDENTITY, encode(&id));
    b.put(Space::Identity, KEY_TOKEN, encode(&token));
    storage.write(b)?;
    storage.flush_blocking()?;
    Ok(id)
}

/// etcd's rule: a member of a new cluster advertises exactly the peer URLs
/// `--initial-cluster` gives for it.
fn check_own_entry(config: &Config) -> Result<(), ConfigError> {
    if config.initial_cluster_state != ClusterState::New {
        return Ok(());
    }
    let own = config
        .initial_cluster
        .iter()
        .find(|(n, _)| *n == config.name)
        .ok_or_else(|| ConfigError::NameNotInCluster(config.name.clone()))?;
    let mut a: Vec<String> = own.1.iter().map(url_string).collect();
    let mut b: Vec<String> = config
        .initial_advertise_peer_urls
        .iter()
        .map(url_string)
        .collect();
    a.sort();
    b.sort();
    if a != b {
        return Err(ConfigError::Invalid(format!(
            "--initial-cluster has {}={} but --initial-advertise-peer-urls is {}",
            config.name,
            a.join(","),
            b.join(",")
        )));
    }
    Ok(())
}

/// A member that dials `https://` peers verifies their certificates with
/// `--peer-trusted-ca-file` and presents its own peer certificate.
fn check_peer_tls(config: &Config) -> Result<(), ConfigError> {
    let https = config
        .initial_cluster
        .iter()
        .filter(|(n, _)| *n != config.name)
        .flat_map(|(_, us)| us.iter())
        .any(|u| u.scheme() == "https");
    let ready = config
        .peer_tls
        .as_ref()
        .is_some_and(|t| t.trusted_ca_file.is_some());
    if https && !ready {
        return Err(ConfigError::Invalid(
            "--initial-cluster has https:// peers: --peer-cert-file, --peer-key-file and --peer-trusted-ca-file are needed to reach them".into(),
        ));
    }
    Ok(())
}

/// The initial membership every member of a new cluster derives alike.
/// Client URLs are not in `--initial-cluster`: each member publishes its
/// own once the cluster runs (a single member knows them at once).
fn initial_members(config: &Config) -> BTreeMap<u64, MemberInfo> {
    let single = config.initial_cluster.len() == 1;
    config
        .initial_cluster
        .iter()
        .map(|(name, urls)| {
            let id = crate::cluster::member_id(name, urls, &config.initial_cluster_token);
            let client_urls = if single {
                config
                    .advertise_client_urls
                    .iter()
                    .map(url_string)
                    .collect()
            } else {
                Vec::new()
            };
            let info = MemberInfo {
                name: name.clone(),
                peer_urls: urls.iter().map(url_string).collect(),
                client_urls,
            };
            (id, info)
        })
        .collect()
}

impl Node {
    /// Open the data dir, start Raft, serve the peer URLs, wait until the
    /// cluster has a leader, then serve the client URLs.
    pub async fn start(config: Config) -> Result<Node, StartError> {
        check_own_entry(&config)?;
        config.check_tls()?;
        check_peer_tls(&config)?;
        // Certificate problems surface before the data dir is touched.
        let client_tls = load_tls(
            &config.listen_client_urls,
            config.client_tls.as_ref(),
            false,
        )?;
        let peer_tls = load_tls(&config.listen_peer_urls, config.peer_tls.as_ref(), true)?;
        let storage = Storage::open(&config.data_dir)?;
        let identity = resolve_identity(&storage, &config).await?;
        let log_store = LogStore::new(storage.clone());
        let mut sm = StateMachine::open(storage.clone())?;
        let snapshots_due = sm.snapshot_every(config.snapshot_count);
        let view = sm.read_view();
        let events = sm.event_sender();
        let removed = sm.removed_members();

        // openraft waits `leader lease + a random election timeout` after
        // the last heartbeat, the lease being `election_timeout_max`: with
        // min = E/2 and max = E, a follower campaigns 1.5E..2E after the
        // leader went quiet, never before E, like etcd's randomized [E, 2E).
        let election = config.election_timeout_ms.max(2);
        let raft_config = openraft::Config {
            cluster_name: config.initial_cluster_token.clone(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: election / 2,
            election_timeout_max: election,
            // Per snapshot chunk, including installing the last one, which
            // rewrites the whole store on the receiver: generous.
            install_snapshot_timeout: 30_000,
            // The state machine counts requests (etcd's --snapshot-count)
            // and the node triggers snapshots; see `trigger_snapshots`.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: config.snapshot_count.min(1000),
            replication_lag_threshold: config.snapshot_count.max(1000),
            snapshot_max_chunk_size: 1024 * 1024,
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| StartError::Raft(e.to_string()))?,
        );
        let transport = PeerTransport::new(
            identity.cluster_id,
            identity.member_id,
            config.peer_tls.clone(),
        );
        let raft = Raft::new(
            identity.member_id,
            raft_config,
            PeerNetwork::new(transport.clone()),
            log_store,
            sm,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;

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
            transport,
            removed,
            lessor,
            client_tls,
            peer_tls,
            shutdown_tx,
            client_addrs: std::sync::Mutex::new(Vec::new()),
            tasks: std::sync::Mutex::new(Vec::new()),
            last_leader_contact: std::sync::Mutex::new(std::time::Instant::now()),
        });
        let node = Node { inner };
        node.spawn(track_metrics(
            node.inner.raft.clone(),
            node.inner.raft_state.clone(),
        ));
        node.spawn(trigger_snapshots(node.inner.raft.clone(), snapshots_due));
        for url in node.inner.config.listen_peer_urls.clone() {
            let listener = listen(&url).await?;
            tracing::info!(url = %url, addr = ?listener.local_addr().ok(), "serving peer requests");
            let tls = match url.scheme() {
                "https" => node.inner.peer_tls.clone(),
                _ => None,
            };
            node.spawn(crate::raft::peer_service::serve(
                node.clone(),
                listener,
                tls,
                node.shutdown_signal(),
            ));
        }
        node.bootstrap().await?;
        if !node.is_single() {
            node.spawn(probe_when_unled(node.clone(), node.shutdown_signal()));
        }
        node.wait_for_leader().await?;
        node.publish().await;
        node.spawn(crate::lessor::run(node.clone()));
        for url in node.inner.config.listen_client_urls.clone() {
            let listener = listen(&url).await?;
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
            let transport = node.inner.transport.clone();
            node.spawn(crate::tls::watch_files(
                watched,
                move || transport.reset_connections(),
                node.shutdown_signal(),
            ));
        }
        tracing::info!(
            name = %node.inner.identity.name,
            member_id = format!("{:x}", node.inner.identity.member_id),
            cluster_id = format!("{:x}", node.inner.identity.cluster_id),
            "raftcd member ready"
        );
        Ok(node)
    }

    fn is_single(&self) -> bool {
        let c = &self.inner.config;
        c.initial_cluster.len() == 1 && c.initial_cluster_state == ClusterState::New
    }

    /// Form a new cluster, or restart an existing member.
    ///
    /// A new cluster: every member initializes Raft with the same initial
    /// membership (openraft allows this), the lowest id at once and the
    /// others one election timeout per rank later if nobody reached them by
    /// then. So the cluster forms as soon as a quorum is up, and usually
    /// without a split vote. A member joining an existing cluster waits for
    /// the leader's entries instead.
    async fn bootstrap(&self) -> Result<(), StartError> {
        let raft = &self.inner.raft;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if initialized {
            let metrics = raft.metrics().borrow().clone();
            let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
            if voters == [self.inner.identity.member_id] {
                // The only voter: no need to wait a whole election timeout.
                let _ = raft.trigger().elect().await;
            }
            return Ok(());
        }
        if self.inner.config.initial_cluster_state == ClusterState::Existing {
            tracing::info!("waiting for the leader to replicate to this new member");
            return Ok(());
        }
        let members = initial_members(&self.inner.config);
        if self.is_single() {
            return raft
                .initialize(members)
                .await
                .map_err(|e| StartError::Raft(e.to_string()));
        }
        let rank = members
            .keys()
            .position(|id| *id == self.inner.identity.member_id)
            .unwrap_or(0) as u32;
        let delay = Duration::from_millis(self.inner.config.election_timeout_ms) * rank;
        let raft = raft.clone();
        self.spawn(async move {
            tokio::time::sleep(delay).await;
            if let Ok(false) = raft.is_initialized().await {
                tracing::info!(members = members.len(), "initializing the new cluster");
                if let Err(e) = raft.initialize(members).await {
                    tracing::debug!(error = %e, "initialize: cluster already formed");
                }
            }
        });
        Ok(())
    }

    /// Publish this member's name and client URLs in the membership (as
    /// etcd does once a member is started), so `member list` shows them.
    async fn publish(&self) {
        let id = self.inner.identity.member_id;
        let info = MemberInfo {
            name: self.inner.identity.name.clone(),
            peer_urls: Vec::new(),
            client_urls: self
                .inner
                .config
                .advertise_client_urls
                .iter()
                .map(url_string)
                .collect(),
        };
        let known = self
            .members()
            .into_iter()
            .any(|m| m.id == id && m.name == info.name && m.client_urls == info.client_urls);
        if known || self.inner.config.listen_client_urls.is_empty() {
            return;
        }
        let node = self.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.spawn(async move {
            loop {
                match node
                    .leader_call(LeaderOp::Publish {
                        id,
                        info: info.clone(),
                    })
                    .await
                {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "publishing this member's attributes failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            tracing::info!("published this member's name and client URLs");
            let _ = done_tx.send(());
        });
        if tokio::time::timeout(REQUEST_TIMEOUT, done_rx)
            .await
            .is_err()
        {
            tracing::warn!("still publishing this member's attributes; serving clients meanwhile");
        }
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

    /// Wait until the cluster has a leader: a single member waits up to
    /// [`REQUEST_TIMEOUT`]; a member of a larger cluster waits for a quorum
    /// as long as it takes (as etcd does), but stops when its peers refuse
    /// it (another cluster, or removed).
    async fn wait_for_leader(&self) -> Result<(), StartError> {
        let mut m = self.inner.raft.metrics();
        let mut rejections = self.inner.transport.rejections();
        let limit = if self.is_single() {
            Some(tokio::time::Instant::now() + REQUEST_TIMEOUT)
        } else {
            None
        };
        let mut next_log = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if m.borrow().current_leader.is_some() {
                return Ok(());
            }
            if let Some(r) = rejections.borrow().clone() {
                return Err(StartError::Rejected(rejection_message(&r)));
            }
            let wake = limit.map_or(next_log, |l| l.min(next_log));
            tokio::select! {
                changed = m.changed() => {
                    if changed.is_err() {
                        return Err(StartError::Raft("raft stopped during start-up".into()));
                    }
                }
                _ = rejections.changed() => {}
                _ = tokio::time::sleep_until(wake) => {
                    if limit.is_some_and(|l| tokio::time::Instant::now() >= l) {
                        return Err(StartError::Raft("no leader elected in time".into()));
                    }
                    tracing::info!("waiting for a quorum of the cluster's members to elect a leader");
                    next_log = tokio::time::Instant::now() + Duration::from_secs(5);
                }
            }
        }
    }

    /// Resolves when the cluster has refused this member for good (it was
    /// removed, or it talks to another cluster); the reason.
    pub async fn refused(&self) -> String {
        let mut rejections = self.inner.transport.rejections();
        loop {
            if let Some(r) = rejections.borrow_and_update().clone() {
                return rejection_message(&r);
            }
            if self.is_removed(self.inner.identity.member_id) {
                return "this member was removed from the cluster".into();
            }
            tokio::select! {
                changed = rejections.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// A leader just sent this member entries or a snapshot.
    pub(crate) fn leader_contact(&self) {
        if let Ok(mut t) = self.inner.last_leader_contact.lock() {
            *t = std::time::Instant::now();
        }
    }

    /// How long since a leader last sent this member entries or a snapshot
    /// (or since start).
    fn since_leader_contact(&self) -> Duration {
        self.inner
            .last_leader_contact
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    /// Whether `member` was removed from the cluster.
    pub(crate) fn is_removed(&self, member: u64) -> bool {
        member != 0 && self.inner.removed.contains(member)
    }

    /// Install (or remove) a fault-injection filter on this member's
    /// outgoing peer requests: drop or delay them per peer, to simulate
    /// partitions and slow links in tests.
    pub fn set_fault_filter(&self, filter: Option<Arc<dyn crate::raft::network::FaultFilter>>) {
        self.inner.transport.set_fault_filter(filter);
    }

    /// Whether this member is a learner (etcd serves learners' clients only
    /// Status and serializable Range).
    pub fn is_learner(&self) -> bool {
        self.inner.raft_state.is_learner.load(Ordering::Relaxed)
    }

    /// The current leader's member id, as this member knows it.
    pub fn leader(&self) -> Option<u64> {
        self.inner.raft.metrics().borrow().current_leader
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
        self.inner.transport.reset_connections();
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

    /// Propose a command and wait for its reply: on the leader, or forwarded
    /// to it. Follows leader changes within [`REQUEST_TIMEOUT`].
    pub(crate) async fn write(&self, cmd: Command) -> Result<Reply, ApiError> {
        match self.leader_call(LeaderOp::Write(cmd)).await? {
            LeaderReply::Write(reply) => Ok(reply),
            other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    /// Wait until a read on the local view is linearizable: the leader
    /// confirms its leadership (openraft's read index); a follower asks the
    /// leader for that index over the peer service and waits until it has
    /// applied that far.
    pub(crate) async fn linearize(&self) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        let me = self.inner.identity.member_id;
        let raft = &self.inner.raft;
        loop {
            let leader = raft.metrics().borrow().current_leader;
            match leader {
                None => {}
                Some(l) if l == me => {
                    match tokio::time::timeout_at(deadline, raft.ensure_linearizable()).await {
                        Err(_) => return Err(ApiError::Timeout),
                        Ok(Ok(_)) => return Ok(()),
                        Ok(Err(RaftError::APIError(_))) => {}
                        Ok(Err(RaftError::Fatal(_))) => return Err(ApiError::Stopped),
                    }
                }
                Some(l) => {
                    if let Some(url) = self.peer_url_of(l) {
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        let index: Result<Result<u64, Refusal>, _> = self
                            .inner
                            .transport
                            .call_typed(Rpc::ReadIndex, l, &url, &(), left)
                            .await;
                        match index {
                            Ok(Ok(index)) => {
                                let left =
                                    deadline.saturating_duration_since(tokio::time::Instant::now());
                                return match raft
                                    .wait(Some(left))
                                    .applied_index_at_least(Some(index), "read index")
                                    .await
                                {
                                    Ok(_) => Ok(()),
                                    Err(openraft::metrics::WaitError::Timeout(..)) => {
                                        Err(ApiError::Timeout)
                                    }
                                    Err(_) => Err(ApiError::Stopped),
                                };
                            }
                            Ok(Err(r)) => tracing::debug!(refusal = ?r, "read index refused"),
                            Err(e) => tracing::debug!(error = %e, "read index failed"),
                        }
                    }
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(if leader.is_none() {
                    ApiError::NoLeader
                } else {
                    ApiError::Timeout
                });
            }
            tokio::time::sleep_until((now + Duration::from_millis(25)).min(deadline)).await;
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

    /// Wait until this member has applied a compaction at `revision` and
    /// deleted the history it dropped (etcd's `physical` compaction), within
    /// the request deadline.
    pub(crate) async fn compacted_on_disk(&self, revision: i64) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        while self.view().compact_revision < revision {
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::timeout_at(deadline, self.inner.storage.background_idle())
            .await
            .map_err(|_| ApiError::Timeout)
    }

    /// What `/metrics` reports about this member.
    pub(crate) fn metrics_figures(&self) -> crate::metrics::NodeFigures {
        let s = &self.inner.raft_state;
        let leader = s.leader.load(Ordering::Relaxed);
        let view = self.view();
        crate::metrics::NodeFigures {
            member_id: self.inner.identity.member_id,
            has_leader: leader != 0,
            is_leader: leader == self.inner.identity.member_id,
            is_learner: s.is_learner.load(Ordering::Relaxed),
            leader_changes: s.leader_changes.load(Ordering::Relaxed),
            term: s.term.load(Ordering::Relaxed),
            applied_index: s.applied_index.load(Ordering::Relaxed),
            last_log_index: s.last_log_index.load(Ordering::Relaxed),
            db_size: self.inner.storage.size_on_disk(),
            keys: view.live_keys(),
            revision: view.revision,
            compact_revision: view.compact_revision,
            server_version: crate::api::ETCD_VERSION,
            cluster_version: crate::api::ETCD_CLUSTER_VERSION,
        }
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
        self.inner.storage.stop_background();
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
    peer: bool,
) -> Result<Option<Arc<ServerTls>>, StartError> {
    match tls {
        Some(t) if listen.iter().any(|u| u.scheme() == "https") => Ok(Some(Arc::new(if peer {
            ServerTls::load_peer(t)?
        } else {
            ServerTls::load(t)?
        }))),
        _ => Ok(None),
    }
}

/// Bind a listener for `url` (peer or client), naming the URL on failure.
async fn listen(url: &url::Url) -> Result<tokio::net::TcpListener, StartError> {
    crate::api::bind(url)
        .await
        .map_err(|source| StartError::Listen {
            url: url_string(url),
            source,
        })
}

pub(crate) fn url_string(u: &url::Url) -> String {
    u.as_str().trim_end_matches('/').to_string()
}

/// Build a snapshot whenever the state machine says `--snapshot-count`
/// requests were applied since the last one.
async fn trigger_snapshots(raft: Raft, mut due: tokio::sync::mpsc::UnboundedReceiver<()>) {
    while due.recv().await.is_some() {
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}

/// A member that stops hearing from a leader asks its peers, every three
/// election timeouts, whether it still belongs to the cluster. A member
/// removed while it was down learns it this way: a voter would be told when
/// it campaigns, but a learner never campaigns and no leader replicates to
/// it any more. Its peers refuse the probe (a read-index request) with
/// "removed", and the member stops (see [`Node::refused`]).
async fn probe_when_unled(node: Node, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_millis(3 * node.inner.config.election_timeout_ms.max(100));
    let me = node.inner.identity.member_id;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
        let leads = node.inner.raft.metrics().borrow().current_leader == Some(me);
        if leads || node.since_leader_contact() < period {
            continue;
        }
        for row in node.members() {
            let Some(url) = row.peer_urls.first().filter(|_| row.id != me) else {
                continue;
            };
            tracing::debug!(
                peer = format!("{:x}", row.id),
                "no leader contact: probing a peer"
            );
            let _: Result<Result<u64, Refusal>, _> = node
                .inner
                .transport
                .call_typed(Rpc::ReadIndex, row.id, url, &(), period)
                .await;
        }
    }
}

fn rejection_message(r: &Rejection) -> String {
    match r {
        Rejection::ClusterMismatch(reason) => format!(
            "{reason} (check --initial-cluster-token and --initial-cluster: this member belongs to another cluster)"
        ),
        Rejection::Removed(reason) => reason.clone(),
    }
}

async fn track_metrics(raft: Raft, state: Arc<RaftState>) {
    let mut m = raft.metrics();
    loop {
        {
            let cur = m.borrow();
            state.term.store(cur.current_term, Ordering::Relaxed);
            let leader = cur.current_leader.unwrap_or(0);
            let before = state.leader.swap(leader, Ordering::Relaxed);
            if leader != 0 && leader != before {
                state.leader_changes.fetch_add(1, Ordering::Relaxed);
            }
            state
                .last_log_index
                .store(cur.last_log_index.unwrap_or(0), Ordering::Relaxed);
            state
                .applied_index
                .store(cur.last_applied.map_or(0, |l| l.index), Ordering::Relaxed);
            let membership = cur.membership_config.membership();
            let learner = membership.get_node(&cur.id).is_some()
                && !membership.voter_ids().any(|v| v == cur.id);
            state.is_learner.store(learner, Ordering::Relaxed);
        }
        if m.changed().await.is_err() {
            return;
        }
    }
}
