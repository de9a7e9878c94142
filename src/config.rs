//! Configuration: etcd-compatible flags and `ETCD_*` environment variables
//! turned into one validated [`Config`].
//!
//! The embedding API builds a [`Config`] directly (see [`Config::embedded`]);
//! the binary parses [`Flags`] and calls [`Flags::into_config`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use url::Url;

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
            snapshot_count: 10_000,
            watch_progress_notify_interval: DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL,
            strict_reconfig_check: true,
            client_tls: None,
            peer_tls: None,
        }
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
    pub fn check_tls(&self) -> Result<(), ConfigError> {
        check_side(
            &CLIENT_SIDE,
            &self.listen_client_urls,
            self.client_tls.as_ref(),
        )?;
        check_side(&PEER_SIDE, &self.listen_peer_urls, self.peer_tls.as_ref())
    }
}

/// The flag names of one side's TLS settings, for messages.
struct Side {
    what: &'static str,
    cert: &'static str,
    key: &'static str,
    ca: &'static str,
    auth: &'static str,
}

const CLIENT_SIDE: Side = Side {
    what: "client",
    cert: "--cert-file",
    key: "--key-file",
    ca: "--trusted-ca-file",
    auth: "--client-cert-auth",
};

const PEER_SIDE: Side = Side {
    what: "peer",
    cert: "--peer-cert-file",
    key: "--peer-key-file",
    ca: "--peer-trusted-ca-file",
    auth: "--peer-client-cert-auth",
};

fn url_text(u: &Url) -> String {
    u.as_str().trim_end_matches('/').to_string()
}

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
            url_text(https)
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

/// One side's TLS flags into a [`TlsConfig`]: cert and key go together; with
/// only `http://` listeners the flags are ignored with a warning, as etcd
/// does.
fn tls_from_flags(
    side: &Side,
    listen: &[Url],
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    auth: bool,
) -> Result<Option<TlsConfig>, ConfigError> {
    let tls = match (cert, key) {
        (Some(cert_file), Some(key_file)) => Some(TlsConfig {
            cert_file,
            key_file,
            trusted_ca_file: ca.clone(),
            client_cert_auth: auth,
        }),
        (Some(_), None) => {
            return Err(ConfigError::Invalid(format!(
                "{} is given without {}",
                side.cert, side.key
            )))
        }
        (None, Some(_)) => {
            return Err(ConfigError::Invalid(format!(
                "{} is given without {}",
                side.key, side.cert
            )))
        }
        (None, None) => None,
    };
    if !listen.iter().any(|u| u.scheme() == "https") {
        let given: Vec<&str> = [
            (tls.is_some(), side.cert),
            (tls.is_some(), side.key),
            (ca.is_some(), side.ca),
            (auth, side.auth),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, f)| *f)
        .collect();
        if !given.is_empty() {
            tracing::warn!(
                "{} {} given but no {} URL to listen on is https://; ignoring them for http:// URLs",
                given.join(", "),
                if given.len() == 1 { "is" } else { "are" },
                side.what
            );
        }
    }
    Ok(tls)
}

/// A boolean flag value as Go's `strconv.ParseBool` reads it (etcd's
/// `--client-cert-auth=true` and `ETCD_CLIENT_CERT_AUTH=true`).
fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (true or false)")),
    }
}

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// etcd's default `--experimental-watch-progress-notify-interval`: 10 minutes.
pub const DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);

/// Parse a Go duration string as etcd's flags take it: a sequence of decimal
/// numbers with units `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, e.g. `10m`,
/// `1m30s`, `500ms`, `1.5s`. A bare `0` is zero.
pub fn parse_go_duration(s: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::Invalid(format!("invalid duration {s:?}"));
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += n * secs_per_unit;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// The server's command-line flags, named as etcd's.
#[derive(Debug, Parser)]
#[command(
    name = "raftcd",
    version,
    about = "A replicated key-value store with the etcd v3 API",
    args_override_self = true
)]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory [default: ${name}.raftcd].
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Comma-separated URLs to listen on for client traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub listen_client_urls: String,
    /// Comma-separated client URLs advertised to the cluster.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub advertise_client_urls: String,
    /// Comma-separated URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub listen_peer_urls: String,
    /// Comma-separated peer URLs advertised to the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration: NAME=PEER_URL,... [default: ${name}=${initial-advertise-peer-urls}].
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Initial cluster token, distinguishing clusters.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,
    /// "new" to bootstrap a cluster, "existing" to join one.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,
    /// Maximum client request size in bytes.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Maximum number of operations in a txn.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Number of committed entries between snapshots.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 10_000)]
    pub snapshot_count: u64,
    /// Duration of periodic watch progress notifications (Go duration, e.g. `10m`).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m"
    )]
    pub experimental_watch_progress_notify_interval: String,
    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA cert file; setting it makes client certificates required.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_bool)]
    pub client_cert_auth: bool,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// Path to the peer server TLS trusted CA file; setting it makes peer certificates required.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_bool)]
    pub peer_client_cert_auth: bool,
    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(long, env = "ETCD_STRICT_RECONFIG_CHECK", num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true", value_parser = parse_bool)]
    pub strict_reconfig_check: bool,
    /// Log level: debug, info, warn, error.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Option<SubCommand>,
}

/// Commands besides serving (the default).
#[derive(Debug, clap::Subcommand)]
pub enum SubCommand {
    /// Backups made with `etcdctl snapshot save`.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Make a CA and the server, peer and client certificates it signs.
    #[command(subcommand)]
    Certs(CertsCommand),
}

/// `raftcd certs ...`: files named as cfssl names them.
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Make a new CA: ca.pem and ca-key.pem.
    Init {
        #[command(flatten)]
        common: CertsCommon,
    },
    /// Make server.pem and server-key.pem for the client port (server auth).
    Server {
        /// Comma-separated IP addresses and DNS names besides 127.0.0.1 and localhost.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        #[command(flatten)]
        common: CertsCommon,
    },
    /// Make NAME.pem and NAME-key.pem for a member's peer port (server and client auth).
    Peer {
        /// The member's name (--name of that member).
        #[arg(long)]
        name: String,
        /// Comma-separated IP addresses and DNS names besides 127.0.0.1 and localhost.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        #[command(flatten)]
        common: CertsCommon,
    },
    /// Make NAME.pem and NAME-key.pem for a client (client auth).
    Client {
        /// The client's name (its certificate's common name).
        #[arg(long, default_value = "client")]
        name: String,
        #[command(flatten)]
        common: CertsCommon,
    },
}

/// Options every `raftcd certs` command takes.
#[derive(Debug, clap::Args)]
pub struct CertsCommon {
    /// Directory of the CA and the files made.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Validity, Go style (43800h is 5 years).
    #[arg(long, default_value = "43800h")]
    pub expiry: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Create a new data dir holding the keys and revisions of a backup.
    Restore {
        /// The file `etcdctl snapshot save` wrote.
        file: PathBuf,
        /// The data dir to create (must not hold data yet).
        #[arg(long = "data-dir")]
        restore_data_dir: PathBuf,
    },
}

fn parse_urls(flag: &'static str, s: &str) -> Result<Vec<Url>, ConfigError> {
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

fn parse_cluster(s: &str) -> Result<Vec<(String, Vec<Url>)>, ConfigError> {
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

impl Flags {
    /// Validate the flags into a [`Config`].
    pub fn into_config(self) -> Result<Config, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::Invalid("--name must not be empty".into()));
        }
        let listen_client_urls = parse_urls("listen-client-urls", &self.listen_client_urls)?;
        let advertise_client_urls =
            parse_urls("advertise-client-urls", &self.advertise_client_urls)?;
        let listen_peer_urls = parse_urls("listen-peer-urls", &self.listen_peer_urls)?;
        let initial_advertise_peer_urls = parse_urls(
            "initial-advertise-peer-urls",
            &self.initial_advertise_peer_urls,
        )?;
        let initial_cluster = match &self.initial_cluster {
            Some(s) => parse_cluster(s)?,
            None => vec![(self.name.clone(), initial_advertise_peer_urls.clone())],
        };
        if !initial_cluster.iter().any(|(n, _)| *n == self.name) {
            return Err(ConfigError::NameNotInCluster(self.name));
        }
        let initial_cluster_state = match self.initial_cluster_state.as_str() {
            "new" => ClusterState::New,
            "existing" => ClusterState::Existing,
            other => return Err(ConfigError::BadClusterState(other.to_string())),
        };
        if self.max_txn_ops == 0 {
            return Err(ConfigError::Invalid(
                "--max-txn-ops must be at least 1".into(),
            ));
        }
        if self.max_request_bytes == 0 {
            return Err(ConfigError::Invalid(
                "--max-request-bytes must be at least 1".into(),
            ));
        }
        if self.heartbeat_interval == 0 || self.election_timeout < 5 * self.heartbeat_interval {
            return Err(ConfigError::Invalid(format!(
                "--election-timeout[{}ms] should be at least 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout, self.heartbeat_interval
            )));
        }
        let watch_progress_notify_interval =
            parse_go_duration(&self.experimental_watch_progress_notify_interval)?;
        if watch_progress_notify_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "--experimental-watch-progress-notify-interval must be greater than 0".into(),
            ));
        }
        let client_tls = tls_from_flags(
            &CLIENT_SIDE,
            &listen_client_urls,
            self.cert_file,
            self.key_file,
            self.trusted_ca_file,
            self.client_cert_auth,
        )?;
        let peer_tls = tls_from_flags(
            &PEER_SIDE,
            &listen_peer_urls,
            self.peer_cert_file,
            self.peer_key_file,
            self.peer_trusted_ca_file,
            self.peer_client_cert_auth,
        )?;
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.raftcd", self.name)));
        let config = Config {
            name: self.name,
            data_dir,
            listen_client_urls,
            advertise_client_urls,
            listen_peer_urls,
            initial_advertise_peer_urls,
            initial_cluster,
            initial_cluster_token: self.initial_cluster_token,
            initial_cluster_state,
            max_request_bytes: self.max_request_bytes,
            max_txn_ops: self.max_txn_ops,
            heartbeat_interval_ms: self.heartbeat_interval,
            election_timeout_ms: self.election_timeout,
            snapshot_count: self.snapshot_count.max(1),
            watch_progress_notify_interval,
            strict_reconfig_check: self.strict_reconfig_check,
            client_tls,
            peer_tls,
        };
        config.check_tls()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["raftcd"];
        argv.extend_from_slice(args);
        Flags::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .into_config()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_match_etcd() {
        let c = flags(&[]).unwrap();
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir, PathBuf::from("default.raftcd"));
        assert_eq!(c.listen_client_urls[0].as_str(), "http://localhost:2379/");
        assert_eq!(c.initial_cluster[0].0, "default");
        assert_eq!(c.max_request_bytes, 1572864);
        assert_eq!(c.max_txn_ops, 128);
        assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(600));
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_go_duration("1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "10", "s", "1x", "-1s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
        let c = flags(&["--experimental-watch-progress-notify-interval", "2s"]).unwrap();
        assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(2));
        assert!(flags(&["--experimental-watch-progress-notify-interval", "0s"]).is_err());
    }

    #[test]
    fn bad_values_get_clear_errors() {
        let e = flags(&["--listen-client-urls", "127.0.0.1:2379"]).unwrap_err();
        assert!(e.contains("listen-client-urls"), "{e}");
        let e = flags(&["--listen-client-urls", "ftp://127.0.0.1:2379"]).unwrap_err();
        assert!(e.contains("unsupported scheme"), "{e}");
        let e = flags(&["--initial-cluster", "other=http://127.0.0.1:2380"]).unwrap_err();
        assert!(e.contains("no entry for this member"), "{e}");
        let e = flags(&["--initial-cluster-state", "old"]).unwrap_err();
        assert!(e.contains("initial-cluster-state"), "{e}");
        let e = flags(&["--initial-cluster", "default"]).unwrap_err();
        assert!(e.contains("NAME=URL"), "{e}");
    }

    #[test]
    fn a_repeated_flag_takes_the_last_value_as_etcd_does() {
        let c = flags(&[
            "--name",
            "a",
            "--name",
            "b",
            "--initial-cluster",
            "b=http://127.0.0.1:2380",
        ])
        .unwrap();
        assert_eq!(c.name, "b");
    }

    #[test]
    fn tls_flags_as_etcd_takes_them() {
        let https = [
            "--listen-client-urls",
            "https://127.0.0.1:2379",
            "--advertise-client-urls",
            "https://127.0.0.1:2379",
        ];
        let mut args = https.to_vec();
        args.extend([
            "--cert-file",
            "s.pem",
            "--key-file",
            "s-key.pem",
            "--trusted-ca-file",
            "ca.pem",
            "--client-cert-auth",
        ]);
        let c = flags(&args).unwrap();
        let t = c.client_tls.unwrap();
        assert_eq!(t.cert_file, PathBuf::from("s.pem"));
        assert_eq!(t.trusted_ca_file, Some(PathBuf::from("ca.pem")));
        assert!(t.client_cert_auth && t.requires_client_cert());
        assert!(c.peer_tls.is_none());

        // --client-cert-auth=false and a CA alone: certificates still required.
        let mut a = https.to_vec();
        a.extend([
            "--cert-file=s.pem",
            "--key-file=k.pem",
            "--trusted-ca-file=ca.pem",
            "--client-cert-auth=false",
        ]);
        let t = flags(&a).unwrap().client_tls.unwrap();
        assert!(!t.client_cert_auth && t.requires_client_cert());

        // http:// URLs with certificates: ignored with a warning, as etcd.
        let c = flags(&["--cert-file", "s.pem", "--key-file", "k.pem"]).unwrap();
        assert!(c.client_tls.is_some());
        assert!(c.check_tls().is_ok());

        let e = flags(&https).unwrap_err();
        assert!(e.contains("TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 with HTTPS scheme"), "{e}");
        let e = flags(&["--key-file", "k.pem"]).unwrap_err();
        assert!(e.contains("--key-file is given without --cert-file"), "{e}");
        let e = flags(&["--peer-cert-file", "p.pem"]).unwrap_err();
        assert!(
            e.contains("--peer-cert-file is given without --peer-key-file"),
            "{e}"
        );
        let e = flags(&[
            "--listen-peer-urls",
            "https://127.0.0.1:2380",
            "--peer-cert-file",
            "p.pem",
            "--peer-key-file",
            "pk.pem",
            "--peer-client-cert-auth",
        ])
        .unwrap_err();
        assert!(
            e.contains("--peer-client-cert-auth needs --peer-trusted-ca-file"),
            "{e}"
        );
        let e = flags(&["--listen-client-urls", "unixs://x:1"]).unwrap_err();
        assert!(e.contains("not supported"), "{e}");
    }
}
