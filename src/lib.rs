//! raftcd: a replicated, strongly consistent key-value store with etcd's v3
//! API, built on openraft and sled, that a program embeds or runs as one
//! binary.
//!
//! Data flows one way:
//!
//! ```text
//! api/ (gRPC + HTTP) ──write──▶ raft/ (openraft: log on storage) ──committed──▶ mvcc/ (state machine)
//!        │   (a follower forwards the write to the leader over the peer service)
//!        └──read: linearize via Raft (a follower asks the leader for the read
//!           index), then read the published mvcc::View (lock-free)
//! ```
//!
//! * [`config`]: etcd-compatible flags into one [`Config`].
//! * [`storage`]: the single narrow interface to the storage engine (sled).
//! * [`mvcc`]: revisions, key history, txn, compaction; deterministic.
//! * [`raft`]: openraft glue: log store, state machine, the peer network
//!   (client and server of `proto/raftcd/peer.proto`).
//! * [`cluster`]: membership, forwarding to the leader, read index, joining.
//! * [`watch`]: fan-out of applied events to watch streams, history replay.
//! * [`api`]: etcd's gRPC services and HTTP endpoints, one file each.
//! * [`lessor`]: the leader's lease deadlines, keep-alives and expiry ticker.
//! * [`node`]: wiring; [`Node::start`] is the one start function.
//! * [`client`]: the in-process KV handle for embedding programs.
//! * [`tls`]: rustls server and client configurations (ring provider);
//!   [`tls::client_channel`] connects to a TLS raftcd with a client
//!   certificate.
//! * [`certs`]: `raftcd certs`, a small CA making server, peer and client
//!   certificates.
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

pub mod api;
pub mod backup;
pub mod certs;
pub mod cli;
pub mod client;
pub mod codec;
pub mod config;
pub mod duration;
pub mod error;
pub mod lessor;
pub mod metrics;
pub mod mvcc;
pub mod net;
pub mod node;
pub mod pb;
pub mod raft;
pub mod server;
pub mod storage;
pub mod tls;
pub mod watch;

pub use client::Client;
pub use config::Config;
pub use error::ApiError;
pub use node::Node;
pub use server::StartError;
