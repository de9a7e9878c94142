//! The commands that go through Raft into the MVCC store, their replies and
//! the store's errors.
//!
//! Commands are etcd's own request messages. They are persisted in the Raft
//! log with serde; the protobuf messages themselves are carried as their
//! protobuf encoding (stable across versions by construction). The lease
//! commands carry what etcd's messages lack (the leader's clock at a grant or
//! refresh), so they are plain serde structs. New variants are only ever
//! appended, so entries already in a log keep decoding.
//!
//! A Raft entry carries a [`Proposal`]: one command or a flat batch of them.
//! Nesting is impossible by type (a batch holds commands, never batches), so
//! decoding an entry, from the log or from a peer, has a fixed depth whatever
//! the bytes say. [`Proposal`] encodes exactly as the earlier recursive
//! `Command` enum did (a batch was its variant 7), so old logs keep decoding.

use serde::de::Deserializer;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::auth::{AuthChange, AuthError, Caller};
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantResponse, LeaseRevokeResponse, PutRequest, PutResponse, TxnRequest, TxnResponse,
};

/// A state machine command, replicated through the Raft log inside a
/// [`Proposal`].
///
/// Its serde variant indices are the wire format of the Raft log. Index 7
/// belongs to [`Proposal::Batch`], so [`Command::Reserved`] holds it with
/// an uninhabited payload: it can never be built, and variant 7 never
/// decodes as a command. New kinds go at the end, mirrored in the decoder
/// of [`Proposal`] (the `wire_index` test stops the build until they are).
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
    /// Index 7, [`Proposal::Batch`]'s: never a command.
    #[doc(hidden)]
    Reserved(Never),
    /// A change of the auth store. `caller` is who asked, when auth was
    /// enabled as the request was checked: while auth is enabled the
    /// change is applied only for a caller with the root role.
    Auth {
        caller: Option<Caller>,
        change: AuthChange,
    },
    /// Issue a simple token for `name`, whose password the proposing member
    /// checked at auth revision `checked_revision` (refused with "revision
    /// of auth store is old" if the store changed since). The token is
    /// `prefix` + "." + the entry's Raft index; `issued_ms` is the proposing
    /// member's clock.
    Authenticate {
        name: String,
        prefix: String,
        issued_ms: i64,
        checked_revision: u64,
    },
    /// A client request made while auth was enabled, by `caller`: checked
    /// again against the auth store and the lease table when applied.
    As {
        caller: Caller,
        op: ClientOp,
    },
}

/// The client requests checked against the auth store when applied (the
/// others need no permission or are checked before proposing only).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ClientOp {
    Put(#[serde(with = "pbcodec")] PutRequest),
    DeleteRange(#[serde(with = "pbcodec")] DeleteRangeRequest),
    Txn(#[serde(with = "pbcodec")] TxnRequest),
    LeaseRevoke { id: i64 },
}

impl ClientOp {
    /// The request of `cmd` if it is one of these kinds; `cmd` back if not.
    pub fn from_command(cmd: Command) -> Result<ClientOp, Command> {
        match cmd {
            Command::Put(r) => Ok(ClientOp::Put(r)),
            Command::DeleteRange(r) => Ok(ClientOp::DeleteRange(r)),
            Command::Txn(r) => Ok(ClientOp::Txn(r)),
            Command::LeaseRevoke { id } => Ok(ClientOp::LeaseRevoke { id }),
            other => Err(other),
        }
    }

    fn size(&self) -> usize {
        use prost::Message;
        match self {
            ClientOp::Put(r) => r.encoded_len(),
            ClientOp::DeleteRange(r) => r.encoded_len(),
            ClientOp::Txn(r) => r.encoded_len(),
            ClientOp::LeaseRevoke { .. } => 16,
        }
    }
}

/// A type with no values: the payload of [`Command::Reserved`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Never {}

impl Command {
    /// Approximate encoded size, for bounding batches.
    pub fn size(&self) -> usize {
        use prost::Message;
        match self {
            Command::Put(r) => r.encoded_len(),
            Command::DeleteRange(r) => r.encoded_len(),
            Command::Txn(r) => r.encoded_len(),
            Command::Compact(r) => r.encoded_len(),
            Command::LeaseGrant { .. } | Command::LeaseRevoke { .. } => 16,
            Command::LeaseCheckpoint { refreshes } => 16 * refreshes.len(),
            Command::Reserved(n) => match *n {},
            Command::Auth { caller, change } => {
                change.size() + caller.as_ref().map_or(0, |c| c.user.len() + 8)
            }
            Command::Authenticate { name, prefix, .. } => 32 + name.len() + prefix.len(),
            Command::As { caller, op } => op.size() + caller.user.len() + 8,
        }
    }
}

/// The payload of one Raft log entry: a single command, or several client
/// requests proposed together (group commit). Each command of a batch is
/// applied on its own, in order, with its own revision, exactly as if
/// proposed separately.
///
/// Encoded exactly as the earlier recursive `Command` enum: `One(c)` as `c`
/// (variant 0..=6) and `Batch(v)` as that enum's `Batch(v)` (variant 7, then
/// the sequence). A batch inside a batch does not decode.
#[derive(Clone, Debug)]
pub enum Proposal {
    /// One command.
    One(Command),
    /// Several commands, applied in order.
    Batch(Vec<Command>),
}

/// The serde variant index of [`Proposal::Batch`] (the old `Command::Batch`).
const BATCH_VARIANT: u32 = 7;

impl Proposal {
    /// The commands, in the order they are applied.
    pub fn commands(&self) -> &[Command] {
        match self {
            Proposal::One(c) => std::slice::from_ref(c),
            Proposal::Batch(cmds) => cmds,
        }
    }
}

impl From<Command> for Proposal {
    fn from(cmd: Command) -> Self {
        Proposal::One(cmd)
    }
}

impl Serialize for Proposal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Proposal::One(cmd) => cmd.serialize(s),
            Proposal::Batch(cmds) => {
                s.serialize_newtype_variant("Command", BATCH_VARIANT, "Batch", cmds)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Proposal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match ProposalWire::deserialize(d)? {
            ProposalWire::Put(r) => Command::Put(r).into(),
            ProposalWire::DeleteRange(r) => Command::DeleteRange(r).into(),
            ProposalWire::Txn(r) => Command::Txn(r).into(),
            ProposalWire::Compact(r) => Command::Compact(r).into(),
            ProposalWire::LeaseGrant {
                id,
                ttl,
                granted_ms,
            } => Command::LeaseGrant {
                id,
                ttl,
                granted_ms,
            }
            .into(),
            ProposalWire::LeaseRevoke { id } => Command::LeaseRevoke { id }.into(),
            ProposalWire::LeaseCheckpoint { refreshes } => {
                Command::LeaseCheckpoint { refreshes }.into()
            }
            ProposalWire::Batch(cmds) => Proposal::Batch(cmds),
            ProposalWire::Auth { caller, change } => Command::Auth { caller, change }.into(),
            ProposalWire::Authenticate {
                name,
                prefix,
                issued_ms,
                checked_revision,
            } => Command::Authenticate {
                name,
                prefix,
                issued_ms,
                checked_revision,
            }
            .into(),
            ProposalWire::As { caller, op } => Command::As { caller, op }.into(),
        })
    }
}

/// How a [`Proposal`] is decoded: [`Command`]'s variants in the same order,
/// then the batch, whose elements are plain (non-recursive) commands.
#[derive(Deserialize)]
#[serde(rename = "Command")]
enum ProposalWire {
    Put(#[serde(with = "pbcodec")] PutRequest),
    DeleteRange(#[serde(with = "pbcodec")] DeleteRangeRequest),
    Txn(#[serde(with = "pbcodec")] TxnRequest),
    Compact(#[serde(with = "pbcodec")] CompactionRequest),
    LeaseGrant {
        id: i64,
        ttl: i64,
        granted_ms: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    LeaseCheckpoint {
        refreshes: Vec<LeaseRefresh>,
    },
    Batch(Vec<Command>),
    Auth {
        caller: Option<Caller>,
        change: AuthChange,
    },
    Authenticate {
        name: String,
        prefix: String,
        issued_ms: i64,
        checked_revision: u64,
    },
    As {
        caller: Caller,
        op: ClientOp,
    },
}

/// The state machine's answer to one [`Proposal`] (openraft's response
/// type): the reply to its command, or one reply per command of a batch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ProposalReply {
    /// The reply to [`Proposal::One`], or [`Reply::None`] for an entry that
    /// carries no command.
    One(Reply),
    /// The replies to a [`Proposal::Batch`], in order.
    Batch(Vec<Reply>),
}

impl Default for ProposalReply {
    fn default() -> Self {
        ProposalReply::One(Reply::None)
    }
}

impl ProposalReply {
    /// The replies, one per command, in order.
    pub fn into_replies(self) -> Vec<Reply> {
        match self {
            ProposalReply::One(r) => vec![r],
            ProposalReply::Batch(rs) => rs,
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
    /// The command was rejected deterministically; nothing changed.
    Error(MvccError),
    LeaseGrant(#[serde(with = "pbcodec")] LeaseGrantResponse),
    LeaseRevoke(#[serde(with = "pbcodec")] LeaseRevokeResponse),
    /// Answer to a checkpoint: how many of its leases still existed.
    LeaseCheckpoint(usize),
    /// An auth change was applied (or was a no-op, as etcd allows).
    Auth,
    /// A simple token was issued: the state machine completes `token`
    /// (the prefix) with the entry's index.
    Authenticated {
        token: String,
    },
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
    /// Refused by the auth store (its message is etcd's whole string).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// An old revision could not be read back from the spill (see
    /// [`crate::storage::spill`]).
    #[error("mvcc: {0}")]
    History(String),
}

impl From<crate::storage::spill::SpillError> for MvccError {
    fn from(e: crate::storage::spill::SpillError) -> Self {
        match e {
            crate::storage::spill::SpillError::Gone => MvccError::Compacted,
            e => MvccError::History(e.to_string()),
        }
    }
}

/// serde adapter: a prost message as its protobuf bytes.
pub(crate) mod pbcodec {
    use std::borrow::Cow;
    use std::cell::RefCell;

    use prost::Message;
    use serde::{Deserializer, Serializer};

    /// Encode buffers larger than this are not kept for the next command.
    const KEEP: usize = 64 * 1024;

    thread_local! {
        /// Reused by [`serialize`] instead of a new vector per command.
        static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    pub fn serialize<M: Message, S: Serializer>(m: &M, s: S) -> Result<S::Ok, S::Error> {
        BUF.with(|b| match b.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                m.encode(&mut *buf).map_err(serde::ser::Error::custom)?;
                let done = s.serialize_bytes(&buf);
                if buf.capacity() > KEEP {
                    *buf = Vec::new();
                }
                done
            }
            Err(_) => s.serialize_bytes(&m.encode_to_vec()),
        })
    }

    /// Decodes from the input in place when the deserializer lends its
    /// bytes (postcard from a slice does), or else from a copy.
    pub fn deserialize<'de, M: Message + Default, D: Deserializer<'de>>(
        d: D,
    ) -> Result<M, D::Error> {
        let buf: Cow<'de, [u8]> = serde_bytes::deserialize(d)?;
        M::decode(&*buf).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode, FORMAT_V1};

    /// The recursive command enum as it was before [`Proposal`], to prove
    /// the log format did not change.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    enum OldCommand {
        Put(#[serde(with = "pbcodec")] PutRequest),
        DeleteRange(#[serde(with = "pbcodec")] DeleteRangeRequest),
        Txn(#[serde(with = "pbcodec")] TxnRequest),
        Compact(#[serde(with = "pbcodec")] CompactionRequest),
        LeaseGrant { id: i64, ttl: i64, granted_ms: i64 },
        LeaseRevoke { id: i64 },
        LeaseCheckpoint { refreshes: Vec<LeaseRefresh> },
        Batch(Vec<OldCommand>),
    }

    /// Every kind, as (old, new).
    fn samples() -> Vec<(OldCommand, Command)> {
        let put = PutRequest {
            key: "k".into(),
            value: "v".into(),
            lease: 3,
            ..Default::default()
        };
        let del = DeleteRangeRequest {
            key: "a".into(),
            range_end: "z".into(),
            prev_kv: true,
        };
        let txn = TxnRequest {
            success: vec![crate::pb::etcdserverpb::RequestOp {
                request: Some(crate::pb::etcdserverpb::request_op::Request::RequestPut(
                    put.clone(),
                )),
            }],
            ..Default::default()
        };
        let compact = CompactionRequest {
            revision: 9,
            physical: true,
        };
        let refreshes = vec![LeaseRefresh {
            id: 4,
            refreshed_ms: 1234,
        }];
        vec![
            (OldCommand::Put(put.clone()), Command::Put(put)),
            (
                OldCommand::DeleteRange(del.clone()),
                Command::DeleteRange(del),
            ),
            (OldCommand::Txn(txn.clone()), Command::Txn(txn)),
            (OldCommand::Compact(compact), Command::Compact(compact)),
            (
                OldCommand::LeaseGrant {
                    id: 5,
                    ttl: 60,
                    granted_ms: 77,
                },
                Command::LeaseGrant {
                    id: 5,
                    ttl: 60,
                    granted_ms: 77,
                },
            ),
            (
                OldCommand::LeaseRevoke { id: -2 },
                Command::LeaseRevoke { id: -2 },
            ),
            (
                OldCommand::LeaseCheckpoint {
                    refreshes: refreshes.clone(),
                },
                Command::LeaseCheckpoint { refreshes },
            ),
        ]
    }

    /// A command's serde variant index. No wildcard: a new kind fails to
    /// build here, as a reminder that index 7 is [`Proposal::Batch`]'s.
    fn wire_index(c: &Command) -> u8 {
        match c {
            Command::Put(_) => 0,
            Command::DeleteRange(_) => 1,
            Command::Txn(_) => 2,
            Command::Compact(_) => 3,
            Command::LeaseGrant { .. } => 4,
            Command::LeaseRevoke { .. } => 5,
            Command::LeaseCheckpoint { .. } => 6,
            Command::Reserved(n) => match *n {},
            Command::Auth { .. } => 8,
            Command::Authenticate { .. } => 9,
            Command::As { .. } => 10,
        }
    }

    #[test]
    fn proposals_encode_exactly_as_the_old_recursive_command() {
        let (old, new): (Vec<_>, Vec<_>) = samples().into_iter().unzip();
        for (o, n) in old.iter().zip(&new) {
            let bytes = encode(o);
            assert_eq!(bytes[1], wire_index(n), "{n:?}");
            assert_eq!(encode(&Proposal::One(n.clone())), bytes, "{n:?}");
            // Old bytes decode as the new type, and re-encode identically.
            let back: Proposal = decode(&bytes).unwrap();
            assert!(matches!(back, Proposal::One(_)));
            assert_eq!(encode(&back), bytes);
            // And what is written now still reads as the old type.
            let _: OldCommand = decode(&encode(&back)).unwrap();
        }
        let old_batch = encode(&OldCommand::Batch(old));
        let new_batch = Proposal::Batch(new);
        assert_eq!(encode(&new_batch), old_batch);
        let back: Proposal = decode(&old_batch).unwrap();
        let Proposal::Batch(cmds) = &back else {
            panic!("not a batch: {back:?}")
        };
        assert_eq!(cmds.len(), 7);
        assert_eq!(encode(&back), old_batch);
        let OldCommand::Batch(cmds) = decode(&old_batch).unwrap() else {
            panic!("not an old batch")
        };
        assert_eq!(cmds.len(), 7);
        let empty: Proposal = decode(&encode(&OldCommand::Batch(vec![]))).unwrap();
        assert!(matches!(empty, Proposal::Batch(v) if v.is_empty()));
    }

    #[test]
    fn auth_commands_take_the_indices_after_the_batch() {
        let cmds = vec![
            Command::Auth {
                caller: None,
                change: AuthChange::RoleAdd { name: "r".into() },
            },
            Command::Authenticate {
                name: "u".into(),
                prefix: "p".into(),
                issued_ms: 1,
                checked_revision: 2,
            },
            Command::As {
                caller: Caller {
                    user: "u".into(),
                    revision: 3,
                },
                op: ClientOp::LeaseRevoke { id: 4 },
            },
        ];
        for c in &cmds {
            let bytes = encode(&Proposal::One(c.clone()));
            assert_eq!(bytes[1], wire_index(c), "{c:?}");
            let back: Proposal = decode(&bytes).unwrap();
            assert_eq!(encode(&back), bytes);
        }
        let batch = encode(&Proposal::Batch(cmds));
        let back: Proposal = decode(&batch).unwrap();
        assert!(matches!(back, Proposal::Batch(v) if v.len() == 3));
    }

    #[test]
    fn a_batch_inside_a_batch_does_not_decode() {
        let (old, _): (Vec<_>, Vec<_>) = samples().into_iter().unzip();
        let nested = OldCommand::Batch(vec![old[0].clone(), OldCommand::Batch(old)]);
        assert!(decode::<Proposal>(&encode(&nested)).is_err());
        // Nor does a bare variant 7 decode as a command.
        assert!(decode::<Command>(&[FORMAT_V1, 7, 0]).is_err());
    }

    #[test]
    fn deeply_nested_batches_are_an_error_not_a_stack_overflow() {
        const DEPTH: usize = 100_000;
        // The old encoding of Batch([Batch([... Batch([]) ...])]).
        let mut bytes = vec![FORMAT_V1];
        for _ in 0..DEPTH {
            bytes.extend([7, 1]);
        }
        bytes.extend([7, 0]);
        // On a small stack, so any recursion per level would overflow it.
        let decoded = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || decode::<Proposal>(&bytes).is_err())
            .unwrap()
            .join()
            .unwrap();
        assert!(decoded);
    }

    #[test]
    fn proposal_replies_list_one_reply_per_command() {
        assert!(matches!(
            ProposalReply::default().into_replies()[..],
            [Reply::None]
        ));
        let batch = ProposalReply::Batch(vec![Reply::None, Reply::LeaseCheckpoint(2)]);
        assert_eq!(batch.into_replies().len(), 2);
        let one = Proposal::from(Command::LeaseRevoke { id: 1 });
        assert_eq!(one.commands().len(), 1);
    }

    #[test]
    fn command_roundtrips_through_the_log_codec() {
        let cmd = Command::Put(PutRequest {
            key: "a/b+c".into(),
            value: vec![0u8, 255, 1].into(),
            lease: 7,
            prev_kv: true,
            ..Default::default()
        });
        let bytes = crate::codec::encode(&cmd);
        let back: Command = crate::codec::decode(&bytes).unwrap();
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
