//! The commands that go through Raft into the MVCC store, their replies and
//! the store's errors.
//!
//! Commands are etcd's own request messages. They are persisted in the Raft
//! log with serde; the protobuf messages themselves are carried as their
//! protobuf encoding (stable across versions by construction). The lease
//! commands carry what etcd's messages lack (the leader's clock at a grant or
//! refresh), so they are plain serde structs. New variants are only ever
//! appended, so entries already in a log keep decoding.

use serde::{Deserialize, Serialize};

use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantResponse, LeaseRevokeResponse, PutRequest, PutResponse, TxnRequest, TxnResponse,
};

/// A state machine command, replicated through the Raft log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    Put(#[serde(with = "pbcodec")] PutRequest),
    DeleteRange(#[serde(with = "pbcodec")] DeleteRangeRequest),
    Txn(#[serde(with = "pbcodec")] TxnRequest),
    Compact(#[serde(with = "pbcodec")] CompactionRequest),
    /// Grant lease `id` (chosen before proposing) with `ttl` seconds (already
    /// raised to the minimum); `granted_ms` is the proposing leader's clock.
    LeaseGrant {
        id: i64,
        ttl: i64,
        granted_ms: i64,
    },
    /// Revoke a lease: delete its attached keys in one revision, drop it.
    LeaseRevoke {
        id: i64,
    },
    /// Persist keep-alive refreshes the leader has seen, so a new leader (or
    /// this one after a restart) knows how long each lease still has.
    LeaseCheckpoint {
        refreshes: Vec<LeaseRefresh>,
    },
    /// Several client requests proposed as one Raft entry (group commit).
    /// Each is applied on its own, in order, with its own revision, exactly
    /// as if proposed separately.
    Batch(Vec<Command>),
}

impl Command {
    /// Approximate encoded size, for bounding batches.
    pub fn size(&self) -> usize {
        use prost::Message;
        match self {
            Command::Put(r) => r.encoded_len(),
            Command::DeleteRange(r) => r.encoded_len(),
            Command::Txn(r) => r.encoded_len(),
            Command::Compact(r) => r.encoded_len(),
            Command::Batch(cmds) => cmds.iter().map(Command::size).sum(),
            Command::LeaseGrant { .. } | Command::LeaseRevoke { .. } => 16,
            Command::LeaseCheckpoint { refreshes } => 16 * refreshes.len(),
        }
    }
}

/// One persisted keep-alive: lease `id` was refreshed at the leader's
/// wall-clock time `refreshed_ms` (unix ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRefresh {
    pub id: i64,
    pub refreshed_ms: i64,
}

/// The state machine's answer to one [`Command`]. Only `header.revision` of
/// the responses is filled here; the API layer adds the cluster fields.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to a Raft entry that carries no command (blank or membership).
    #[default]
    None,
    Put(#[serde(with = "pbcodec")] PutResponse),
    DeleteRange(#[serde(with = "pbcodec")] DeleteRangeResponse),
    Txn(#[serde(with = "pbcodec")] TxnResponse),
    Compact(#[serde(with = "pbcodec")] CompactionResponse),
    /// The replies to a [`Command::Batch`], in order.
    Batch(Vec<Reply>),
    /// The command was rejected deterministically; nothing changed.
    Error(MvccError),
    LeaseGrant(#[serde(with = "pbcodec")] LeaseGrantResponse),
    LeaseRevoke(#[serde(with = "pbcodec")] LeaseRevokeResponse),
    /// Answer to a checkpoint: how many of its leases still existed.
    LeaseCheckpoint(usize),
}

/// Errors the store returns for a request. The API layer turns each into
/// etcd's gRPC status code and message (see `api::error`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MvccError {
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("key not found")]
    KeyNotFound,
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExists,
    #[error("too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("key is not provided")]
    EmptyKey,
    #[error("value is provided")]
    ValueProvided,
    #[error("lease is provided")]
    LeaseProvided,
    #[error("too many operations in txn request")]
    TooManyOps,
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    #[error("unknown compare target {0}")]
    UnknownCompareTarget(i32),
    #[error("unknown compare result {0}")]
    UnknownCompareResult(i32),
    #[error("unknown sort order or target")]
    UnknownSort,
}

/// serde adapter: a prost message as its protobuf bytes.
pub(crate) mod pbcodec {
    use prost::Message;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<M: Message, S: Serializer>(m: &M, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&m.encode_to_vec())
    }

    pub fn deserialize<'de, M: Message + Default, D: Deserializer<'de>>(
        d: D,
    ) -> Result<M, D::Error> {
        let buf = serde_bytes::ByteBuf::deserialize(d)?;
        M::decode(buf.as_slice()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_roundtrips_through_the_log_codec() {
        let cmd = Command::Put(PutRequest {
            key: "a/b+c".into(),
            value: vec![0u8, 255, 1].into(),
            lease: 7,
            prev_kv: true,
            ..Default::default()
        });
        let bytes = crate::storage::encode(&cmd);
        let back: Command = crate::storage::decode(crate::storage::Space::Log, &bytes).unwrap();
        match back {
            Command::Put(p) => {
                assert_eq!(&p.key[..], b"a/b+c");
                assert_eq!(&p.value[..], &[0u8, 255, 1]);
                assert_eq!(p.lease, 7);
                assert!(p.prev_kv);
            }
            other => panic!("wrong command {other:?}"),
        }
    }
}
