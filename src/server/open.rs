//! Starting a member's core: checks, certificates, the data dir and its
//! identity, Raft with its log store and state machine, then forming or
//! joining the cluster and waiting for a leader.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::identity::{member_id, token_hash, Identity};
use super::join::join;
use super::ops::LeaderOp;
use super::{header_fn, tasks, Inner, RaftState, Server, REQUEST_TIMEOUT};
use crate::codec::{decode, encode};
use crate::config::{url_string, ClusterState, Config, ConfigError};
use crate::mvcc::validate::Origin;
use crate::raft::log_store::LogStore;
use crate::raft::network::{PeerTransport, Rejection};
use crate::raft::peer_service::{LeaderContact, PeerService};
use crate::raft::proposer::Proposer;
use crate::raft::raft_network::PeerNetwork;
use crate::raft::state_machine::StateMachine;
use crate::raft::{MemberInfo, Raft};
use crate::storage::{Blob, OsSync, Storage, StorageError};
use crate::tls::ServerTls;

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
    Join(#[from] super::join::JoinError),
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

impl Server {
    /// Check the configuration, load the certificates, open the data dir
    /// (learning this member's identity), and start Raft, the proposer, the
    /// watch hub and the lessor. Nothing is served yet.
    pub async fn open(config: Config) -> Result<Server, StartError> {
        Self::open_as(config, None).await
    }

    /// [`Self::open`] for a member whose identity was found before (a
    /// replica that discovered its cluster): `found` is stored if the data
    /// dir holds no identity yet.
    pub async fn open_as(config: Config, found: Option<Identity>) -> Result<Server, StartError> {
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
        let syncer = config
            .syncer
            .clone()
            .unwrap_or_else(|| Arc::new(OsSync) as Arc<dyn crate::storage::Syncer>);
        let storage = Storage::open(&config.data_dir, syncer)?;
        let identity = resolve_identity(&storage, &config, found).await?;
        let mut sm = StateMachine::open(storage.clone())?;
        let tokens = Arc::new(crate::auth::token::SimpleTokens::new(config.auth_token_ttl));
        sm.set_tokens(tokens.clone());
        let jwt = match &config.auth_token {
            crate::auth::jwt::TokenProvider::Simple => None,
            crate::auth::jwt::TokenProvider::Jwt(opts) => {
                Some(Arc::new(crate::auth::jwt::JwtKeys::load(opts).map_err(
                    |e| crate::config::ConfigError::Invalid(format!("--auth-token jwt: {e}")),
                )?))
            }
        };
        let (mut log_store, _recovered) = LogStore::open(storage.clone())?;
        log_store.set_member(identity.member_id);
        let wal = log_store.wal();
        let snapshots_due = sm.snapshot_every(config.snapshot_count, log_store.growth());
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
            // Entries per AppendEntries; the peer network trims a batch that
            // would exceed the peer message limit (see `raft::network`).
            max_payload_entries: 300,
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
            config.max_peer_message_bytes(),
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
                fragment_bytes: config.max_request_bytes + crate::config::GRPC_OVERHEAD_BYTES,
            },
        );
        let lessor = crate::lessor::Lessor::new(identity.member_id, &config);
        let limits = crate::mvcc::validate::Limits {
            max_request_bytes: config.max_request_bytes,
            max_txn_ops: config.max_txn_ops,
        };
        let inner = Arc::new(Inner {
            config,
            identity,
            storage,
            wal,
            proposer: Proposer::new(raft.clone(), limits),
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
            tasks: Mutex::new(Vec::new()),
            reads: Default::default(),
            leader_contact: Arc::new(LeaderContact::default()),
            tokens,
            jwt,
        });
        let server = Server { inner };
        server.spawn(tasks::track_metrics(
            server.inner.raft.clone(),
            server.inner.raft_state.clone(),
        ));
        server.spawn(tasks::trigger_snapshots(
            server.inner.raft.clone(),
            snapshots_due,
        ));
        Ok(server)
    }

    /// The peer service of this member, to serve on its peer listeners.
    pub fn peer_service(&self) -> PeerService<Server> {
        PeerService::new(
            self.inner.raft.clone(),
            self.inner.identity.cluster_id,
            self.inner.identity.member_id,
            self.inner.removed.clone(),
            self.inner.leader_contact.clone(),
            self.clone(),
        )
    }

    /// Start what runs once the member belongs to a cluster: the probe of
    /// an unled member, and the leader's lease expiry ticker.
    pub fn start_background(&self) {
        if !self.is_single() {
            self.spawn(tasks::probe_when_unled(
                self.clone(),
                self.shutdown_signal(),
            ));
        }
        self.spawn(tasks::run_lessor(self.clone()));
    }

    pub(super) fn is_single(&self) -> bool {
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
    pub async fn bootstrap(&self) -> Result<(), StartError> {
        if self.resume().await? {
            return Ok(());
        }
        let raft = &self.inner.raft;
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
        let delay = Duration::from_millis(
            self.inner
                .config
                .election_timeout_ms
                .saturating_mul(u64::from(rank)),
        );
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

    /// A member whose Raft holds state carries on from it (the only voter
    /// campaigns at once, not after an election timeout). Whether it did:
    /// false for a member that has yet to form or join its cluster.
    pub(super) async fn resume(&self) -> Result<bool, StartError> {
        let raft = &self.inner.raft;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if initialized {
            let metrics = raft.metrics().borrow().clone();
            let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
            if voters == [self.inner.identity.member_id] {
                let _ = raft.trigger().elect().await;
            }
        }
        Ok(initialized)
    }

    /// Publish this member's name and client URLs in the membership (as
    /// etcd does once a member is started), so `member list` shows them.
    pub async fn publish(&self) {
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
        let server = self.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.spawn(async move {
            loop {
                let op = LeaderOp::Publish {
                    id,
                    info: info.clone(),
                };
                match server.leader_call(op, Origin::Internal).await
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

    /// Wait until the cluster has a leader: a single member waits up to
    /// [`REQUEST_TIMEOUT`]; a member of a larger cluster waits for a quorum
    /// as long as it takes (as etcd does), but stops when its peers refuse
    /// it (another cluster, or removed).
    pub async fn wait_for_leader(&self) -> Result<(), StartError> {
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
            if self.inner.removed.contains(self.inner.identity.member_id) {
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
}

/// Write the `member` file: `identity`, with the cluster `token` it
/// belongs to.
pub(super) fn store_identity(
    storage: &Storage,
    identity: &Identity,
    token: &str,
) -> Result<(), StorageError> {
    let file = MemberFile {
        identity: identity.clone(),
        token: token_hash(token),
    };
    storage.write(Blob::Member, &encode(&file))
}

/// What the `member` file holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct MemberFile {
    identity: Identity,
    /// Hash of `--initial-cluster-token`.
    token: u64,
}

/// The identity and token hash a `member` file's contents hold (public
/// for the `blob` fuzz target).
#[doc(hidden)]
pub fn decode_member_file(bytes: &[u8]) -> Result<(Identity, u64), crate::codec::CodecError> {
    decode::<MemberFile>(bytes).map(|f| (f.identity, f.token))
}

/// This member's identity: the one stored in the data dir, or for a new
/// data dir derived from the flags (`new`) or learnt from the cluster
/// (`existing`), then stored.
async fn resolve_identity(
    storage: &Storage,
    config: &Config,
    found: Option<Identity>,
) -> Result<Identity, StartError> {
    let dir = || config.data_dir.display().to_string();
    let token = token_hash(&config.initial_cluster_token);
    if let Some(bytes) = storage.read(Blob::Member)? {
        let (found, stored_token) =
            decode_member_file(&bytes).map_err(|e| StorageError::Decode {
                file: storage.file(Blob::Member),
                reason: e.to_string(),
            })?;
        let derived = Identity::derive(config);
        if found.name != config.name || stored_token != token {
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
    let id = match (found, config.initial_cluster_state) {
        (Some(id), _) => id,
        (None, ClusterState::New) => Identity::derive(config),
        (None, ClusterState::Existing) => join(config).await?,
    };
    store_identity(storage, &id, &config.initial_cluster_token)?;
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
            let id = member_id(name, urls, &config.initial_cluster_token);
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

/// Load one side's TLS if any of its listen URLs is `https://`.
pub(crate) fn load_tls(
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

fn rejection_message(r: &Rejection) -> String {
    match r {
        Rejection::ClusterMismatch(reason) => format!(
            "{reason} (check --initial-cluster-token and --initial-cluster: this member belongs to another cluster)"
        ),
        Rejection::Removed(reason) => reason.clone(),
    }
}
