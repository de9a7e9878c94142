//! The binary's command line: etcd's flags and `ETCD_*` environment
//! variables, and the `certs`, `snapshot`, `storage`, `escrow` and `bench`
//! subcommands, turned into a
//! validated [`Config`] with [`Flags::into_config`].

use std::path::PathBuf;

use clap::Parser;
use url::Url;

pub use crate::bench::BenchCommand;
use crate::config::{
    parse_cluster, parse_urls, ClusterState, Config, ConfigError, Side, CLIENT_SIDE,
    DEFAULT_MAX_CLIENT_CONNECTIONS, DEFAULT_MAX_PEER_CONNECTIONS, DEFAULT_MAX_REQUEST_BYTES,
    PEER_SIDE,
};
use crate::duration::parse_go_duration;
use crate::init::{InitError, StartFile};
use crate::replicas::ReplicaTable;
use crate::tls::TlsConfig;

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
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
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
    /// Specify a v3 authentication token type and its options ('simple' or
    /// 'jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256,ttl=5m').
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,
    /// Time (in seconds) of the auth-token-ttl.
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = crate::auth::token::DEFAULT_TOKEN_TTL_SECS)]
    pub auth_token_ttl: u64,
    /// Specify the cost / strength of the bcrypt algorithm for hashing auth
    /// passwords. Valid values are between 4 and 31.
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = crate::auth::password::DEFAULT_BCRYPT_COST)]
    pub bcrypt_cost: u32,
    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(long, env = "ETCD_STRICT_RECONFIG_CHECK", num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true", value_parser = parse_bool)]
    pub strict_reconfig_check: bool,
    /// Restart this member's data as a new one-member cluster, after its
    /// cluster lost its quorum for good (drops what only the lost members
    /// had; start without it afterwards).
    #[arg(long, env = "ETCD_FORCE_NEW_CLUSTER", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_bool)]
    pub force_new_cluster: bool,
    /// Replica table (TOML): this member is one replica of it and the
    /// cluster forms and grows itself; name, URLs and token come from the
    /// row of --replica-id.
    #[arg(long, env = "RAFTCD_REPLICA_TABLE")]
    pub replica_table: Option<PathBuf>,
    /// This member's row in --replica-table.
    #[arg(long, env = "RAFTCD_REPLICA_ID")]
    pub replica_id: Option<u64>,
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
    /// Data dirs.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Multi-Party Escrow payment channels.
    #[command(subcommand)]
    Escrow(EscrowCommand),
    /// Load any etcd v3 endpoint (raftcd or etcd) and report throughput and
    /// latency percentiles.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// `raftcd escrow ...`.
#[derive(Debug, clap::Subcommand)]
pub enum EscrowCommand {
    /// Offline: print the EIP-55 address that signed a payment.
    Recover {
        #[command(flatten)]
        id: EscrowChannelId,
        /// The channel nonce the payment is for.
        #[arg(long)]
        nonce: String,
        /// The amount the payment authorizes in all.
        #[arg(long)]
        amount: String,
        /// The 65-byte signature r ‖ s ‖ v, hex.
        #[arg(long)]
        signature: String,
    },
    /// Record a channel as the chain has it (new, or updated).
    OpenChannel {
        #[command(flatten)]
        conn: EscrowConn,
        #[command(flatten)]
        id: EscrowChannelId,
        #[arg(long)]
        nonce: String,
        #[arg(long)]
        sender: String,
        #[arg(long)]
        signer: String,
        #[arg(long)]
        recipient: String,
        /// 32 bytes, hex.
        #[arg(long)]
        group_id: String,
        /// The deposit.
        #[arg(long)]
        value: String,
        /// The block number the channel expires at.
        #[arg(long)]
        expiration: String,
    },
    /// Offer a signed payment: exit 0 `accepted`, 1 `refused: <reason>`,
    /// 2 when the outcome is unknown.
    Pay {
        #[command(flatten)]
        conn: EscrowConn,
        #[command(flatten)]
        id: EscrowChannelId,
        #[arg(long)]
        nonce: String,
        #[arg(long)]
        amount: String,
        #[arg(long)]
        signature: String,
        /// The chain's current block.
        #[arg(long)]
        block: String,
    },
    /// Show a channel (`-w json`: numbers as decimal strings).
    Channel {
        #[command(flatten)]
        conn: EscrowConn,
        #[command(flatten)]
        id: EscrowChannelId,
    },
    /// Claim the accepted payment: the channel moves to the next nonce.
    StartClaim {
        #[command(flatten)]
        conn: EscrowConn,
        #[command(flatten)]
        id: EscrowChannelId,
    },
    /// List claims (of one channel with --channel-id).
    Claims {
        #[command(flatten)]
        conn: EscrowConn,
        #[arg(long)]
        mpe_contract: String,
        #[arg(long)]
        channel_id: Option<String>,
    },
    /// Mark a claim settled (redeemed on chain).
    Settle {
        #[command(flatten)]
        conn: EscrowConn,
        #[command(flatten)]
        id: EscrowChannelId,
        /// The nonce of the claim.
        #[arg(long)]
        nonce: String,
    },
}

/// Where `raftcd escrow` commands send their request, and how they print.
#[derive(Debug, Clone, clap::Args)]
pub struct EscrowConn {
    /// Comma-separated client URLs or HOST:PORTs of members.
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// Output: simple or json.
    #[arg(short = 'w', long = "write-out", default_value = "simple")]
    pub write_out: String,
}

/// A channel: contract and id.
#[derive(Debug, Clone, clap::Args)]
pub struct EscrowChannelId {
    /// The MPE contract address (20 bytes hex).
    #[arg(long)]
    pub mpe_contract: String,
    /// The channel id (uint256, decimal or 0x hex).
    #[arg(long)]
    pub channel_id: String,
}

/// `raftcd storage ...`.
#[derive(Debug, clap::Subcommand)]
pub enum StorageCommand {
    /// Write a new data dir holding this member's configuration; then
    /// `raftcd --data-dir DIR` starts the member with no other flags.
    Init {
        /// The member's name.
        #[arg(long)]
        name: String,
        /// The cluster token (etcd's --initial-cluster-token).
        #[arg(long)]
        token: String,
        /// The URL to serve and advertise the client API on.
        #[arg(long)]
        client_url: String,
        /// The URL to serve and advertise the peer port on.
        #[arg(long)]
        peer_url: String,
        /// Every member of the new cluster: NAME=PEER_URL,...
        #[arg(long)]
        initial_cluster: String,
        /// The data dir to create [default: ${name}.raftcd].
        #[arg(long = "data-dir")]
        init_data_dir: Option<PathBuf>,
    },
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
        let watch_progress_notify_interval =
            parse_go_duration(&self.experimental_watch_progress_notify_interval)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
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
        let auth_token =
            crate::auth::jwt::parse_auth_token(&self.auth_token).map_err(ConfigError::Invalid)?;
        let table = match (&self.replica_table, self.replica_id) {
            (None, None) => None,
            (Some(file), Some(id)) => Some((
                ReplicaTable::load(file).map_err(|e| ConfigError::Invalid(e.to_string()))?,
                id,
            )),
            (Some(_), None) => {
                return Err(ConfigError::Invalid(
                    "--replica-table needs --replica-id (this member's row)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "--replica-id needs --replica-table".into(),
                ))
            }
        };
        // The default data dir is named after the member, whose name the
        // replica table gives when there is one.
        let name = table
            .as_ref()
            .and_then(|(t, id)| t.replica(*id))
            .map_or(self.name.clone(), |r| r.name.clone());
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{name}.raftcd")));
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
            max_client_connections: DEFAULT_MAX_CLIENT_CONNECTIONS,
            max_peer_connections: DEFAULT_MAX_PEER_CONNECTIONS,
            syncer: None,
            auth_token,
            auth_token_ttl: std::time::Duration::from_secs(self.auth_token_ttl),
            bcrypt_cost: self.bcrypt_cost,
            stale_follower_reads: cfg!(feature = "fault-stale-reads"),
            growth: None,
            forward_to: Vec::new(),
            force_new_cluster: self.force_new_cluster,
        };
        let config = match table {
            Some((table, id)) => config.with_replica_table(table, id)?,
            None => config,
        };
        // A data dir made by `raftcd storage init` names its member.
        let start = StartFile::load(&config.data_dir).map_err(|e| match e {
            InitError::Config(c) => c,
            other => ConfigError::Invalid(other.to_string()),
        })?;
        let config = match start {
            Some(file) => file.apply(config)?,
            None => config,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
    fn durations_and_timing_flags_are_bounded() {
        let c = flags(&["--experimental-watch-progress-notify-interval", "2s"]).unwrap();
        assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(2));
        assert!(flags(&["--experimental-watch-progress-notify-interval", "0s"]).is_err());
        let e = flags(&["--election-timeout", "1000000000000000"]).unwrap_err();
        assert!(
            e.contains("--election-timeout[1000000000000000ms] is too long"),
            "{e}"
        );
        let e = flags(&["--heartbeat-interval", "1000000000000000000"]).unwrap_err();
        assert!(e.contains("at least 5 times"), "{e}");
        let e = flags(&["--max-request-bytes", "100000000000"]).unwrap_err();
        assert!(e.contains("--max-request-bytes must be between"), "{e}");
        assert!(flags(&["--election-timeout", "50000", "--heartbeat-interval", "100"]).is_ok());
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
