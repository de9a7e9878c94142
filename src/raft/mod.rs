//! The Raft glue: openraft's type configuration, the log store (on
//! [`crate::storage::Wal`]) and state machine, and the peer network. Only
//! this module knows openraft.
//!
//! Committed entries reach [`state_machine::StateMachine`] in order and in
//! batches; it applies each batch to a working copy of the MVCC store and
//! publishes the new view to readers whole; the state reaches disk at
//! snapshots (the log holds everything since).

pub mod force;
mod log_cache;
pub mod log_store;
pub mod network;
mod peer_client;
pub mod peer_service;
mod peer_stream;
pub mod proposer;
pub mod raft_network;
pub mod state_machine;
mod tokens;

use serde::{Deserialize, Serialize};

use crate::mvcc::command::{Proposal, ProposalReply};

/// What the cluster knows about one member (the Raft `Node` type).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

impl std::fmt::Display for MemberInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_urls.join(","))
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Proposal,
        R = ProposalReply,
        NodeId = u64,
        Node = MemberInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = state_machine::SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;

/// A storage step slower than this is logged as a warning (etcd's
/// `--experimental-warning-apply-duration` default, 100 ms).
pub const SLOW_WARNING: std::time::Duration = std::time::Duration::from_millis(100);

/// Log `what` as slow if it took more than [`SLOW_WARNING`] since `started`.
pub(crate) fn warn_if_slow(what: &'static str, started: std::time::Instant, items: usize) {
    let took = started.elapsed();
    if took > SLOW_WARNING {
        tracing::warn!(
            ?took,
            expected = ?SLOW_WARNING,
            items,
            "{what} took too long"
        );
    }
}
pub type LogId = openraft::LogId<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, MemberInfo>;
pub type RaftStorageError = openraft::StorageError<u64>;
