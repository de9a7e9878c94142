//! The commands that go through Raft into the MVCC store, their replies and
//! the store's errors.
//!
//! Commands are etcd's own request messages. They are persisted in the Raft
//! log with serde; the protobuf messages themselves are carried as their
//! protobuf encoding (stable across versions by construction).

use serde::{Deserialize, Serialize};

use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, TxnRequest, TxnResponse,
};

/// A state machine command, replicated through the Raft log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    Put(#[serde(with = "pbcodec")] PutRequest),
    DeleteRange(#[serde(with = "pbcodec")] DeleteRangeRequest),
    Txn(#[serde(with = "pbcodec")] TxnRequest),
    Compact(#[serde(with = "pbcodec")] CompactionRequest),
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
        }
    }
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
