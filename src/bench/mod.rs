//! `raftcd bench`: a closed-loop load generator for any etcd v3 endpoint
//! (raftcd or a real etcd), like etcd's `benchmark` tool.
//!
//! * [`BenchCommand`]: the subcommands `put`, `range`, `txn-cas` and
//!   `watch`, with the flags every one takes ([`CommonArgs`]).
//! * [`Spec`]: one validated run; [`run`] does it and returns a [`Report`]
//!   (throughput, latency percentiles from an HDR histogram, errors),
//!   printed as a table or as JSON (`-w json`).
//! * `conn`: the `--conns` gRPC channels, spread over `--endpoints`, with
//!   TLS from `--cacert`/`--cert`/`--key`.
//! * `workload`: the closed loop: `--clients` tasks, each sending one
//!   request and waiting for its answer before the next, until `--total`
//!   requests were sent or `--duration` has passed.
//! * `watch`: the watch workload's watchers (put to event latency).
//!
//! Keys are `--key-size` decimal digits (`00000000` … `00009999` for the
//! defaults), values `--val-size` bytes; request *n* picks a random key of
//! the `--key-space`, or key *n* mod `--key-space` with `--sequential-keys`.

mod conn;
mod report;
mod tally;
mod watch;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::duration::parse_go_duration;
use crate::tls::TlsError;

pub use report::{ErrorCount, Latency, RangeOutcome, Report, TxnOutcome, WatchOutcome};

/// Requests sent when neither `--total` nor `--duration` is given.
pub const DEFAULT_TOTAL: u64 = 10_000;

/// `raftcd bench ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Put a `--val-size` value on a key of the key space, per request.
    Put {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Range (get) one key of the key space, per request.
    Range {
        #[command(flatten)]
        common: CommonArgs,
        /// l: linearizable (through the leader's read index), s: serializable
        /// (the member's local state).
        #[arg(long, value_enum, default_value = "l")]
        consistency: Consistency,
    },
    /// Compare-and-swap by txn: put the key if its mod revision is the last
    /// one this client saw, else read it (a failed compare).
    TxnCas {
        #[command(flatten)]
        common: CommonArgs,
        /// All clients work on the whole key space (compares fail when
        /// another client got there first; `--key-space 1` is the most
        /// contended). Without it each client owns its keys (key i belongs to
        /// client i mod --clients) and every compare succeeds.
        #[arg(long)]
        contended: bool,
    },
    /// Latency from sending a put to its event arriving on a watcher: one
    /// watch stream per connection on the whole key space, the clients put.
    Watch {
        #[command(flatten)]
        common: CommonArgs,
    },
}

/// The flags every `raftcd bench` workload takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Comma-separated client URLs or HOST:PORTs; connection i goes to
    /// endpoint i mod their number.
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// gRPC connections the clients share (client i uses connection i mod --conns).
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Requests to send in all [default: 10000 unless --duration is given].
    #[arg(long)]
    pub total: Option<u64>,
    /// How long to run (Go style: 10s, 1m30s); with --total, whichever ends first.
    #[arg(long, value_parser = parse_go_duration)]
    pub duration: Option<Duration>,
    /// Key size in bytes (decimal digits, zero-padded).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    /// Request n uses key n mod --key-space instead of a random key.
    #[arg(long)]
    pub sequential_keys: bool,
    /// CA bundle verifying the servers' certificates (makes HOST:PORT endpoints https).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Client certificate (with --key) for servers that require one.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Output: table (for people; `simple` is the same) or json.
    #[arg(short = 'w', long = "write-out", value_enum, default_value = "table")]
    pub write_out: WriteOut,
}

/// `range --consistency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

/// `-w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteOut {
    #[value(alias = "simple")]
    Table,
    Json,
}

/// What the clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Put,
    Range { serializable: bool },
    TxnCas { contended: bool },
    Watch,
}

impl Workload {
    /// The subcommand's name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Range { .. } => "range",
            Workload::TxnCas { .. } => "txn-cas",
            Workload::Watch => "watch",
        }
    }
}

/// The TLS files of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cacert: PathBuf,
    pub cert: Option<(PathBuf, PathBuf)>,
}

/// One validated run.
#[derive(Debug, Clone)]
pub struct Spec {
    pub workload: Workload,
    pub endpoints: Vec<String>,
    pub tls: Option<TlsFiles>,
    pub conns: usize,
    pub clients: usize,
    /// Stop after this many requests were sent (if given).
    pub total: Option<u64>,
    /// Stop after this long (if given).
    pub duration: Option<Duration>,
    pub key_size: usize,
    pub val_size: usize,
    pub key_space: u64,
    pub sequential_keys: bool,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

/// Why a run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag value that cannot work (exit 2, as clap's own errors).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    /// The run's setup (reading revisions, creating watches) failed.
    #[error("{0}")]
    Setup(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

fn usage(msg: impl Into<String>) -> BenchError {
    BenchError::Usage(msg.into())
}

/// The most digits a key of `key_space` keys needs.
fn digits(key_space: u64) -> usize {
    key_space.saturating_sub(1).max(1).ilog10() as usize + 1
}

impl Spec {
    /// Validate a subcommand's flags.
    pub fn from_command(cmd: &BenchCommand) -> Result<Spec, BenchError> {
        let (workload, c) = match cmd {
            BenchCommand::Put { common } => (Workload::Put, common),
            BenchCommand::Range {
                common,
                consistency,
            } => (
                Workload::Range {
                    serializable: *consistency == Consistency::S,
                },
                common,
            ),
            BenchCommand::TxnCas { common, contended } => (
                Workload::TxnCas {
                    contended: *contended,
                },
                common,
            ),
            BenchCommand::Watch { common } => (Workload::Watch, common),
        };
        let endpoints: Vec<String> = c
            .endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect();
        let tls =
            match (&c.cacert, &c.cert, &c.key) {
                (_, Some(_), None) => return Err(usage("--cert is given without --key")),
                (_, None, Some(_)) => return Err(usage("--key is given without --cert")),
                (None, Some(_), Some(_)) => return Err(usage(
                    "--cert and --key need --cacert (the CA that signed the server's certificate)",
                )),
                (None, None, None) => None,
                (Some(ca), cert, key) => Some(TlsFiles {
                    cacert: ca.clone(),
                    cert: cert.clone().zip(key.clone()),
                }),
            };
        let spec = Spec {
            workload,
            endpoints,
            tls,
            conns: c.conns,
            clients: c.clients,
            total: match (c.total, c.duration) {
                (None, None) => Some(DEFAULT_TOTAL),
                (t, _) => t,
            },
            duration: c.duration,
            key_size: c.key_size,
            val_size: c.val_size,
            key_space: c.key_space,
            sequential_keys: c.sequential_keys,
            progress: true,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Check the numbers of a spec built by hand as [`Spec::from_command`] does.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.endpoints.is_empty() {
            return Err(usage("--endpoints names no endpoint"));
        }
        if !(1..=10_000).contains(&self.conns) {
            return Err(usage(format!(
                "--conns must be in 1..=10000, not {}",
                self.conns
            )));
        }
        if !(1..=100_000).contains(&self.clients) {
            return Err(usage(format!(
                "--clients must be in 1..=100000, not {}",
                self.clients
            )));
        }
        if self.total == Some(0) {
            return Err(usage("--total must be at least 1"));
        }
        if self.duration == Some(Duration::ZERO) {
            return Err(usage("--duration must be above 0"));
        }
        if self.key_space == 0 {
            return Err(usage("--key-space must be at least 1"));
        }
        let need = digits(self.key_space);
        if self.key_size < need || self.key_size > 1 << 20 {
            return Err(usage(format!(
                "--key-size must be in {need}..=1048576 for --key-space {} (keys are decimal numbers), not {}",
                self.key_space, self.key_size
            )));
        }
        if self.val_size > 64 << 20 {
            return Err(usage(format!(
                "--val-size must be at most 67108864, not {}",
                self.val_size
            )));
        }
        match self.workload {
            Workload::Watch if self.val_size < tally::STAMP => Err(usage(format!(
                "watch needs --val-size of at least {} (the value carries the send time), not {}",
                tally::STAMP,
                self.val_size
            ))),
            Workload::TxnCas { contended: false } if self.key_space < self.clients as u64 => {
                Err(usage(format!(
                    "txn-cas without --contended gives each client keys of its own: --key-space ({}) must be at least --clients ({})",
                    self.key_space, self.clients
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Do one run.
pub async fn run(spec: &Spec) -> Result<Report, BenchError> {
    spec.validate()?;
    let channels = conn::connect_all(spec).await?;
    match spec.workload {
        Workload::Watch => watch::run(spec, &channels).await,
        _ => workload::run(spec, &channels).await,
    }
}

/// `raftcd bench ...` from the binary: run, print the report on stdout,
/// errors as one line on stderr. Exit 0 if any request succeeded, 1 if
/// all failed or the run could not start, 2 for flag values that cannot
/// work.
pub fn main(cmd: &BenchCommand) -> ExitCode {
    let write_out = match cmd {
        BenchCommand::Put { common }
        | BenchCommand::Range { common, .. }
        | BenchCommand::TxnCas { common, .. }
        | BenchCommand::Watch { common } => common.write_out,
    };
    let result = Spec::from_command(cmd).and_then(|spec| {
        let rt = crate::runtime::build().map_err(BenchError::Runtime)?;
        rt.block_on(run(&spec))
    });
    match result {
        Ok(report) => {
            match write_out {
                WriteOut::Json => println!("{}", report.to_json()),
                WriteOut::Table => print!("{}", report.table()),
            }
            if report.count == 0 && report.errors > 0 {
                eprintln!(
                    "raftcd: error: bench: all {} requests failed",
                    report.errors
                );
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("raftcd: error: bench: {e}");
            ExitCode::from(if matches!(e, BenchError::Usage(_)) {
                2
            } else {
                1
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_digits() {
        assert_eq!(digits(1), 1);
        assert_eq!(digits(10), 1);
        assert_eq!(digits(11), 2);
        assert_eq!(digits(10_000), 4);
        assert_eq!(digits(10_001), 5);
    }
}
