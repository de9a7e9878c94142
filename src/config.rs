//! The configuration of a member: one validated [`Config`].
//!
//! The embedding API builds a [`Config`] directly (see [`Config::embedded`]);
//! the binary parses etcd's flags (`crate::cli`) into one. Either way,
//! [`Config::validate`] checks it before a member starts.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::replicas::{Mode, ReplicaTable};
use crate::tls::TlsConfig;

/// Errors in the configuration a user gave.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid URL {url:?} in --{flag}: {reason}")]
    BadUrl {
        flag: &'static str,
        url: String,
        reason: String,
    },
    #[error("invalid --initial-cluster entry {0:?}: expected NAME=URL")]
    BadClusterEntry(String),
    #[error("--initial-cluster has no entry for this member's name {0:?}")]
    NameNotInCluster(String),
    #[error("--initial-cluster-state must be \"new\" or \"existing\", not {0:?}")]
    BadClusterState(String),
    #[error("{0}")]
    Invalid(String),
}

/// Whether this member starts a new cluster or joins an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    /// Where to serve the client API. Empty: no listener (embedded use).
    pub listen_client_urls: Vec<Url>,
    pub advertise_client_urls: Vec<Url>,
    pub listen_peer_urls: Vec<Url>,
    pub initial_advertise_peer_urls: Vec<Url>,
    /// `name -> peer URLs` of the initial members.
    pub initial_cluster: Vec<(String, Vec<Url>)>,
    pub initial_cluster_token: String,
    pub initial_cluster_state: ClusterState,
    /// Largest client request accepted (etcd's `--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Most operations in one txn (etcd's `--max-txn-ops`).
    pub max_txn_ops: usize,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    /// Raft entries between snapshots (etcd's `--snapshot-count`).
    pub snapshot_count: u64,
    /// How often idle watchers that asked for `progress_notify` get an empty
    /// response with the current revision (etcd's
    /// `--experimental-watch-progress-notify-interval`).
    pub watch_progress_notify_interval: Duration,
    /// Refuse membership changes that could cost the cluster its quorum
    /// (etcd's `--strict-reconfig-check`, on by default).
    pub strict_reconfig_check: bool,
    /// TLS of the `https://` client URLs (`--cert-file`, `--key-file`,
    /// `--trusted-ca-file`, `--client-cert-auth`).
    pub client_tls: Option<TlsConfig>,
    /// TLS of the `https://` peer URLs, listening and dialing
    /// (`--peer-cert-file`, `--peer-key-file`, `--peer-trusted-ca-file`,
    /// `--peer-client-cert-auth`).
    pub peer_tls: Option<TlsConfig>,
    /// Most client connections open at once, per client listener.
    pub max_client_connections: usize,
    /// Most peer connections open at once, per peer listener.
    pub max_peer_connections: usize,
    /// How the data dir's files are made durable; `None`: the operating
    /// system's `fdatasync`/`fsync`. Tests wrap it to inject failures.
    pub syncer: Option<std::sync::Arc<dyn crate::storage::Syncer>>,
    /// Set when the member is one replica of a replica table
    /// (`--replica-table`): the cluster forms and grows itself.
    pub growth: Option<Growth>,
    /// Set for a replica that runs no member (fixed mode, `run_node =
    /// false`): the members' client URLs its client API passes requests to
    /// (`crate::proxy`).
    pub forward_to: Vec<Url>,
    /// Restart this member's data as a new one-member cluster (etcd's
    /// `--force-new-cluster`; see `crate::server::recover`).
    pub force_new_cluster: bool,
    /// The auth token provider (etcd's `--auth-token`: `simple`, or
    /// `jwt,pub-key=...,priv-key=...,sign-method=...,ttl=...`).
    pub auth_token: crate::auth::jwt::TokenProvider,
    /// How long a simple token lives unused (etcd's `--auth-token-ttl`,
    /// whole seconds, default 300).
    pub auth_token_ttl: Duration,
    /// bcrypt cost of password hashes (etcd's `--bcrypt-cost`, 4..=31,
    /// default 10).
    pub bcrypt_cost: u32,
    /// Deliberately broken, for the linearizability checker's own proof:
    /// followers answer linearizable reads from their local state, skipping
    /// the read index. `false` unless built with the `fault-stale-reads`
    /// feature; never set it in production.
    #[doc(hidden)]
    pub stale_follower_reads: bool,
}

/// A member started from a replica table: which table, which row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Growth {
    pub table: std::sync::Arc<ReplicaTable>,
    pub replica_id: u64,
}

impl Growth {
    /// This replica's row.
    pub fn replica(&self) -> &crate::replicas::Replica {
        // `Config::with_replica_table` checked that the row exists.
        self.table
            .replica(self.replica_id)
            .unwrap_or_else(|| unreachable!("replica {} not in its table", self.replica_id))
    }
}

impl Config {
    /// A single-member configuration with no network listener: the node is
    /// used in-process through [`crate::Node::client`].
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        let peer = Url::parse("http://localhost:2380").unwrap_or_else(|_| unreachable!());
        Self {
            name: "default".into(),
            data_dir: data_dir.into(),
            listen_client_urls: Vec::new(),
            advertise_client_urls: Vec::new(),
            listen_peer_urls: Vec::new(),
            initial_advertise_peer_urls: vec![peer.clone()],
            initial_cluster: vec![("default".into(), vec![peer])],
            initial_cluster_token: "etcd-cluster".into(),
            initial_cluster_state: ClusterState::New,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: 128,
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            snapshot_count: 100_000,
            watch_progress_notify_interval: DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL,
            strict_reconfig_check: true,
            client_tls: None,
            peer_tls: None,
            max_client_connections: DEFAULT_MAX_CLIENT_CONNECTIONS,
            max_peer_connections: DEFAULT_MAX_PEER_CONNECTIONS,
            syncer: None,
            auth_token: crate::auth::jwt::TokenProvider::Simple,
            auth_token_ttl: Duration::from_secs(crate::auth::token::DEFAULT_TOKEN_TTL_SECS),
            bcrypt_cost: crate::auth::password::DEFAULT_BCRYPT_COST,
            stale_follower_reads: cfg!(feature = "fault-stale-reads"),
            growth: None,
            forward_to: Vec::new(),
            force_new_cluster: false,
        }
    }

    /// Make this member replica `replica_id` of `table`: its name, client
    /// and peer URLs come from the row, the cluster token from the table;
    /// every other setting stays. In fixed mode the members are the rows
    /// with `run_node = true`, formed as a static cluster; in incremental
    /// mode the cluster forms and grows itself (see `crate::cluster`).
    pub fn with_replica_table(
        mut self,
        table: ReplicaTable,
        replica_id: u64,
    ) -> Result<Self, ConfigError> {
        let row = table.replica(replica_id).cloned().ok_or_else(|| {
            let ids: Vec<String> = table.replicas.iter().map(|r| r.id.to_string()).collect();
            ConfigError::Invalid(format!(
                "--replica-id {replica_id} is not in the replica table (its ids: {})",
                ids.join(", ")
            ))
        })?;
        if table.mode == Mode::Fixed && !row.run_node {
            self.forward_to = table.members().map(|r| r.client_url.clone()).collect();
        }
        self.name = row.name.clone();
        self.listen_client_urls = vec![row.client_url.clone()];
        self.advertise_client_urls = vec![row.client_url.clone()];
        self.listen_peer_urls = vec![row.peer_url.clone()];
        self.initial_advertise_peer_urls = vec![row.peer_url.clone()];
        self.initial_cluster_token = table.token.clone();
        self.initial_cluster = table
            .members()
            .map(|r| (r.name.clone(), vec![r.peer_url.clone()]))
            .collect();
        self.initial_cluster_state = ClusterState::New;
        self.growth = match table.mode {
            Mode::Fixed => None,
            Mode::Incremental => Some(Growth {
                table: std::sync::Arc::new(table),
                replica_id,
            }),
        };
        Ok(self)
    }

    /// Serve the client API on `url` (e.g. `http://127.0.0.1:2379`).
    pub fn with_client_url(mut self, url: &str) -> Result<Self, ConfigError> {
        let u = parse_urls("listen-client-urls", url)?;
        self.listen_client_urls = u.clone();
        self.advertise_client_urls = u;
        Ok(self)
    }

    /// Serve `https://` client URLs with these certificates (see
    /// [`TlsConfig::with_client_cert_auth`] to require client certificates).
    pub fn with_client_tls(mut self, tls: TlsConfig) -> Self {
        self.client_tls = Some(tls);
        self
    }

    /// Check that every `https://` listener has its certificates.
    /// Check what no member can run with: timing out of bounds (etcd's
    /// rules), empty limits, TLS settings that do not fit the URLs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.election_timeout_ms > MAX_ELECTION_TIMEOUT_MS {
            return Err(ConfigError::Invalid(format!(
                "--election-timeout[{}ms] is too long, and should be set less than {}ms",
                self.election_timeout_ms, MAX_ELECTION_TIMEOUT_MS
            )));
        }
        if self.heartbeat_interval_ms == 0
            || self.election_timeout_ms < self.heartbeat_interval_ms.saturating_mul(5)
        {
            return Err(ConfigError::Invalid(format!(
                "--election-timeout[{}ms] should be at least 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout_ms, self.heartbeat_interval_ms
            )));
        }
        if self.max_txn_ops == 0 {
            return Err(ConfigError::Invalid(
                "--max-txn-ops must be at least 1".into(),
            ));
        }
        if self.max_request_bytes == 0 || self.max_request_bytes > MAX_REQUEST_BYTES_LIMIT {
            return Err(ConfigError::Invalid(format!(
                "--max-request-bytes must be between 1 and {MAX_REQUEST_BYTES_LIMIT}, not {}",
                self.max_request_bytes
            )));
        }
        if self.max_client_connections == 0 || self.max_peer_connections == 0 {
            return Err(ConfigError::Invalid(
                "connection limits must be at least 1".into(),
            ));
        }
        self.check_auth()?;
        self.check_tls()
    }

    /// The auth settings: a bcrypt cost Go's bcrypt accepts, a token TTL of
    /// at least a second, JWT key files that load and match.
    pub fn check_auth(&self) -> Result<(), ConfigError> {
        use crate::auth::password::{MAX_BCRYPT_COST, MIN_BCRYPT_COST};
        if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&self.bcrypt_cost) {
            return Err(ConfigError::Invalid(format!(
                "--bcrypt-cost must be between {MIN_BCRYPT_COST} and {MAX_BCRYPT_COST}, not {}",
                self.bcrypt_cost
            )));
        }
        if self.auth_token_ttl < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "--auth-token-ttl must be at least 1 (seconds)".into(),
            ));
        }
        if let crate::auth::jwt::TokenProvider::Jwt(opts) = &self.auth_token {
            crate::auth::jwt::JwtKeys::load(opts)
                .map_err(|e| ConfigError::Invalid(format!("--auth-token jwt: {e}")))?;
        }
        Ok(())
    }

    /// The largest peer message sent or accepted: room for one Raft entry
    /// of the largest group-commit batch (4 MiB of requests plus one more
    /// request) twice over, and at least 16 MiB. A message above it is
    /// refused unread; the sender splits its append-entries to fit.
    pub fn max_peer_message_bytes(&self) -> usize {
        let request = self.max_request_bytes.saturating_add(GRPC_OVERHEAD_BYTES);
        (16usize << 20).saturating_add(request.saturating_mul(2))
    }

    /// TLS settings that do not fit the URLs (an `https://` URL without a
    /// certificate, or a certificate for `http://` only).
    pub fn check_tls(&self) -> Result<(), ConfigError> {
        check_side(
            &CLIENT_SIDE,
            &self.listen_client_urls,
            self.client_tls.as_ref(),
        )?;
        check_side(&PEER_SIDE, &self.listen_peer_urls, self.peer_tls.as_ref())
    }
}

/// The largest `--max-request-bytes` accepted (etcd warns above 10 MiB;
/// beyond this a single request could not be replicated).
pub const MAX_REQUEST_BYTES_LIMIT: usize = 256 << 20;

/// Default [`Config::max_client_connections`].
pub const DEFAULT_MAX_CLIENT_CONNECTIONS: usize = 4096;
/// Default [`Config::max_peer_connections`].
pub const DEFAULT_MAX_PEER_CONNECTIONS: usize = 256;

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// etcd's default `--experimental-watch-progress-notify-interval`: 10 minutes.
pub const DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);

/// Extra room gRPC gives above `--max-request-bytes`, as etcd does, so that
/// a request just above the limit gets etcd's "request is too large".
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The version of the etcd API raftcd speaks.
pub const ETCD_VERSION: &str = "3.4.23";
/// The etcd cluster version raftcd reports.
pub const ETCD_CLUSTER_VERSION: &str = "3.4.0";

/// The longest election timeout accepted, as etcd's `maxElectionMs`.
pub const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;

/// A URL as the membership stores and shows it (no trailing slash).
pub fn url_string(u: &Url) -> String {
    u.as_str().trim_end_matches('/').to_string()
}

/// `--initial-cluster`: `NAME=URL,...` (a name may repeat for more URLs).
pub(crate) fn parse_cluster(s: &str) -> Result<Vec<(String, Vec<Url>)>, ConfigError> {
    let mut out: Vec<(String, Vec<Url>)> = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = entry
            .split_once('=')
            .ok_or_else(|| ConfigError::BadClusterEntry(entry.to_string()))?;
        if name.is_empty() {
            return Err(ConfigError::BadClusterEntry(entry.to_string()));
        }
        let urls = parse_urls("initial-cluster", url)?;
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, u)) => u.extend(urls),
            None => out.push((name.to_string(), urls)),
        }
    }
    if out.is_empty() {
        return Err(ConfigError::BadClusterEntry(s.to_string()));
    }
    Ok(out)
}

/// Comma-separated `http(s)://HOST:PORT` URLs of flag `--{flag}`.
pub(crate) fn parse_urls(flag: &'static str, s: &str) -> Result<Vec<Url>, ConfigError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |reason: String| ConfigError::BadUrl {
            flag,
            url: part.to_string(),
            reason,
        };
        let u = Url::parse(part).map_err(|e| bad(e.to_string()))?;
        match u.scheme() {
            "http" | "https" => {}
            "unix" | "unixs" => {
                return Err(bad(format!(
                    "scheme {:?} is not supported (use http or https)",
                    u.scheme()
                )))
            }
            other => {
                return Err(bad(format!(
                    "unsupported scheme {other:?} (expected http or https)"
                )))
            }
        }
        if u.host_str().is_none() || u.port_or_known_default().is_none() {
            return Err(bad("expected http://HOST:PORT or https://HOST:PORT".into()));
        }
        if u.path() != "/" && !u.path().is_empty() {
            return Err(bad("URL must not have a path".into()));
        }
        out.push(u);
    }
    if out.is_empty() {
        return Err(ConfigError::BadUrl {
            flag,
            url: s.to_string(),
            reason: "no URL given".into(),
        });
    }
    Ok(out)
}

/// The flag names of one side's TLS settings, for messages.
pub(crate) struct Side {
    pub(crate) what: &'static str,
    pub(crate) cert: &'static str,
    pub(crate) key: &'static str,
    pub(crate) ca: &'static str,
    pub(crate) auth: &'static str,
}

pub(crate) const CLIENT_SIDE: Side = Side {
    what: "client",
    cert: "--cert-file",
    key: "--key-file",
    ca: "--trusted-ca-file",
    auth: "--client-cert-auth",
};

pub(crate) const PEER_SIDE: Side = Side {
    what: "peer",
    cert: "--peer-cert-file",
    key: "--peer-key-file",
    ca: "--peer-trusted-ca-file",
    auth: "--peer-client-cert-auth",
};

fn check_side(side: &Side, listen: &[Url], tls: Option<&TlsConfig>) -> Result<(), ConfigError> {
    let Some(https) = listen.iter().find(|u| u.scheme() == "https") else {
        return Ok(());
    };
    match tls {
        // etcd's own message.
        None => Err(ConfigError::Invalid(format!(
            "TLS key/cert ({}, {}) must be provided for {} url {} with HTTPS scheme",
            side.cert,
            side.key,
            side.what,
            url_string(https)
        ))),
        Some(t) if t.client_cert_auth && t.trusted_ca_file.is_none() => {
            Err(ConfigError::Invalid(format!(
                "{} needs {} (the CA that signs {} certificates); raftcd does not trust the system's CAs for this",
                side.auth, side.ca, side.what
            )))
        }
        Some(_) => Ok(()),
    }
}
