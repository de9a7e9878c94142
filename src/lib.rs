//! raftcd: a replicated, strongly consistent key-value store with etcd's v3
//! API, built on openraft over its own checksummed log, that a program
//! embeds or runs as one binary.
//!
//! Data flows one way (see `docs/architecture.md` and the `layering` tests
//! that keep it so):
//!
//! ```text
//! api/ (thin gRPC + HTTP adapters) ─▶ server/ (check, propose or linearized
//!   read, header) ─▶ raft/ (group commit, openraft, log on storage) ─▶
//!   mvcc/ (apply; publish the view) ─▶ watch/ (fan-out to watchers)
//! ```
//!
//! * [`codec`], [`pb`], [`duration`]: encodings and parsers at the bottom.
//! * [`storage`]: the data dir: the Raft log (segments, group-commit
//!   fdatasync, recovery) and the files written whole (member, raft, state).
//! * [`config`]: the validated [`Config`]; [`net`]: listeners.
//! * [`mvcc`]: revisions, key history, txn, compaction, leases; deterministic.
//! * [`error`]: [`ApiError`], how a request ends, in etcd's words.
//! * [`watch`], [`lessor`]: watch fan-out; the leader's lease deadlines.
//! * [`raft`]: openraft glue: log store, state machine, proposer, the peer
//!   network (client and server of `proto/raftcd/peer.proto`).
//! * [`backup`]: the backup file format and `snapshot restore`.
//! * [`server`]: a member's core: start, leader ops, membership, joining,
//!   KV and lease services over Raft.
//! * [`api`]: etcd's gRPC services and HTTP endpoints, one file each.
//! * [`client`]: the in-process KV handle for embedding programs.
//! * [`node`]: [`Node::start`], the one start function: the core wired to
//!   its listeners.
//! * [`bench`]: `raftcd bench`, a closed-loop load generator for any etcd
//!   v3 endpoint (throughput, latency percentiles).
//! * [`cli`]: the binary's flags and subcommands.
//! * [`tls`]: rustls server and client configurations (ring provider);
//!   [`tls::client_channel`] connects to a TLS raftcd with a client
//!   certificate. [`certs`]: `raftcd certs`, a small CA.
//!
//! Embedding a single node needs no ports:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let node = raftcd::Node::start(raftcd::Config::embedded("./data.raftcd")).await?;
//! let kv = node.client();
//! kv.put("greeting", "hello").await?;
//! assert_eq!(kv.get("greeting").await?.unwrap().value, "hello");
//! node.shutdown().await?;
//! # Ok(()) }
//! ```
// The gRPC services' futures nest many async layers (tonic, the server's
// retries, openraft); their layout queries exceed the default depth of 128.
#![recursion_limit = "256"]

pub mod api;
pub mod auth;
pub mod backup;
pub mod bench;
pub mod certs;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod duration;
pub mod error;
pub mod escrow;
pub mod init;
pub mod lessor;
pub mod linearizability;
pub mod metrics;
pub mod mvcc;
pub mod net;
pub mod node;
pub mod pb;
pub mod proxy;
pub mod raft;
pub mod replicas;
pub mod runtime;
pub mod server;
pub mod storage;
pub mod tls;
pub mod watch;

pub use client::Client;
pub use config::Config;
pub use error::ApiError;
pub use node::Node;
pub use server::StartError;
