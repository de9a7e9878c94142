//! Request checks made before a write is proposed, as etcd's API layer makes
//! them: they reject malformed requests without touching the log.
//!
//! [`check_command`] is the one check every command passes before it is
//! proposed, whether a client sent it here, a peer forwarded it, or this
//! member's lessor made it.

use prost::Message;

use super::command::{ClientOp, Command, MvccError};
use super::lease::MAX_LEASE_TTL;
use super::view::in_range;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// Where a command to propose came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A client of this member.
    Client,
    /// Another member, forwarding a write to this leader.
    Peer,
    /// This member itself: the leader's own lessor.
    Internal,
}

/// The request limits of the cluster's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest protobuf-encoded put, delete or txn request
    /// (`--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Most operations in one txn (`--max-txn-ops`).
    pub max_txn_ops: usize,
}

/// Most refreshes in one lease checkpoint.
pub const MAX_CHECKPOINT_REFRESHES: usize = 100_000;

/// Why a command may not be proposed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The request is malformed, as etcd would answer it.
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    /// The request is larger than the configured limit (etcd's
    /// "request is too large").
    #[error("request is too large")]
    TooLarge,
    /// The origin may not send this kind of command.
    #[error("command not allowed: {0}")]
    NotAllowed(&'static str),
}

/// The check every command passes before it is proposed, whatever path it
/// came by. Cheap: no store access, linear in the request's size.
pub fn check_command(cmd: &Command, origin: Origin, limits: &Limits) -> Result<(), Rejected> {
    let within = |len: usize| {
        if len > limits.max_request_bytes {
            Err(Rejected::TooLarge)
        } else {
            Ok(())
        }
    };
    match cmd {
        Command::Put(r) => {
            check_put(r)?;
            within(r.encoded_len())
        }
        Command::DeleteRange(r) => {
            check_delete(r)?;
            within(r.encoded_len())
        }
        Command::Txn(r) => {
            within(r.encoded_len())?;
            Ok(check_txn(r, limits.max_txn_ops)?)
        }
        // etcd: a revision at or below the compacted one (-1 at first) is
        // `ErrCompacted`, so a negative one always is. Revision 0 is left to
        // the store, as etcd does (accepted once on a never-compacted store).
        Command::Compact(r) if r.revision < 0 => Err(MvccError::Compacted.into()),
        Command::Compact(_) => Ok(()),
        // Id 0 means "none" (the API picks an id before proposing); etcd
        // accepts any other client-chosen id, negative ones included.
        Command::LeaseGrant { id: 0, .. } | Command::LeaseRevoke { id: 0 } => {
            Err(MvccError::LeaseNotFound.into())
        }
        Command::LeaseGrant { ttl, .. } if !(1..=MAX_LEASE_TTL).contains(ttl) => {
            Err(MvccError::LeaseTtlTooLarge.into())
        }
        Command::LeaseGrant { .. } | Command::LeaseRevoke { .. } => Ok(()),
        Command::LeaseCheckpoint { .. } if origin != Origin::Internal => Err(Rejected::NotAllowed(
            "lease checkpoints are made by the leader's lessor only",
        )),
        Command::LeaseCheckpoint { refreshes } if refreshes.len() > MAX_CHECKPOINT_REFRESHES => {
            Err(Rejected::TooLarge)
        }
        Command::LeaseCheckpoint { .. } => Ok(()),
        Command::Reserved(n) => match *n {},
        Command::Auth { .. } | Command::Authenticate { .. } => within(cmd.size()),
        Command::As { op, .. } => match op {
            ClientOp::Put(r) => {
                check_put(r)?;
                within(r.encoded_len())
            }
            ClientOp::DeleteRange(r) => {
                check_delete(r)?;
                within(r.encoded_len())
            }
            ClientOp::Txn(r) => {
                within(r.encoded_len())?;
                Ok(check_txn(r, limits.max_txn_ops)?)
            }
            ClientOp::LeaseRevoke { id: 0 } => Err(MvccError::LeaseNotFound.into()),
            ClientOp::LeaseRevoke { .. } => Ok(()),
        },
    }
}

pub fn check_range(r: &RangeRequest) -> Result<(), MvccError> {
    if r.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

pub fn check_put(r: &PutRequest) -> Result<(), MvccError> {
    if r.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(r: &DeleteRangeRequest) -> Result<(), MvccError> {
    if r.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` plus its duplicate-key rule.
pub fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), MvccError> {
    check_txn_ops(r, max_txn_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

fn check_txn_ops(r: &TxnRequest, max_txn_ops: usize) -> Result<(), MvccError> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len());
    if opc > max_txn_ops {
        return Err(MvccError::TooManyOps);
    }
    for c in &r.compare {
        if c.key.is_empty() {
            return Err(MvccError::EmptyKey);
        }
        CompareTarget::try_from(c.target).map_err(|_| MvccError::UnknownCompareTarget(c.target))?;
        CompareResult::try_from(c.result).map_err(|_| MvccError::UnknownCompareResult(c.result))?;
    }
    for op in r.success.iter().chain(r.failure.iter()) {
        check_op(op, max_txn_ops - opc)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_txn_ops: usize) -> Result<(), MvccError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(r)) => check_put(r),
        Some(Request::RequestDeleteRange(r)) => check_delete(r),
        Some(Request::RequestTxn(t)) => check_txn_ops(t, max_txn_ops),
        // An empty op, as etcd answers it.
        None => Err(MvccError::KeyNotFound),
    }
}

/// The keys a branch writes: single-key puts and delete intervals.
#[derive(Default)]
struct Writes {
    puts: std::collections::BTreeSet<Vec<u8>>,
    dels: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Writes {
    fn deletes(&self, key: &[u8]) -> bool {
        self.dels.iter().any(|(s, e)| in_range(key, s, e))
    }
    fn puts(&self, key: &[u8]) -> bool {
        self.puts.contains(key)
    }
}

/// etcd's `checkIntervals`, for one branch: a key may be put at most once
/// and never both put and deleted. A nested txn's puts must not meet a put
/// or delete of this branch or of a nested txn before it (sibling txns
/// both run); its two branches may put the same key (only one runs).
fn check_intervals(ops: &[RequestOp]) -> Result<Writes, MvccError> {
    let mut w = Writes::default();
    for op in ops {
        if let Some(Request::RequestDeleteRange(d)) = &op.request {
            w.dels.push((d.key.to_vec(), d.range_end.to_vec()));
        }
    }
    // Nested txns first, as etcd does.
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let then = check_intervals(&t.success)?;
        let other = check_intervals(&t.failure)?;
        for k in &then.puts {
            if w.puts(k) || w.deletes(k) {
                return Err(MvccError::DuplicateKey);
            }
        }
        w.puts.extend(then.puts.iter().cloned());
        for k in other.puts {
            if (w.puts(&k) && !then.puts(&k)) || w.deletes(&k) {
                return Err(MvccError::DuplicateKey);
            }
            w.puts.insert(k);
        }
        w.dels.extend(then.dels);
        w.dels.extend(other.dels);
    }
    for op in ops {
        if let Some(Request::RequestPut(p)) = &op.request {
            if w.puts(&p.key) || w.deletes(&p.key) {
                return Err(MvccError::DuplicateKey);
            }
            w.puts.insert(p.key.to_vec());
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.to_string().into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.to_string().into(),
                range_end: end.to_string().into(),
                prev_kv: false,
            })),
        }
    }

    #[test]
    fn duplicate_keys_rejected_per_branch() {
        let t = |success: Vec<RequestOp>, failure: Vec<RequestOp>| TxnRequest {
            compare: vec![],
            success,
            failure,
        };
        assert_eq!(
            check_txn(&t(vec![put("a"), put("a")], vec![]), 128),
            Err(MvccError::DuplicateKey)
        );
        assert_eq!(
            check_txn(&t(vec![del("a", "c"), put("b")], vec![]), 128),
            Err(MvccError::DuplicateKey)
        );
        assert_eq!(check_txn(&t(vec![put("a")], vec![put("a")]), 128), Ok(()));
        assert_eq!(
            check_txn(&t(vec![del("a", "c"), del("b", "d")], vec![]), 128),
            Ok(())
        );
        let nested = RequestOp {
            request: Some(Request::RequestTxn(t(vec![put("a")], vec![put("a")]))),
        };
        assert_eq!(check_txn(&t(vec![nested.clone()], vec![]), 128), Ok(()));
        assert_eq!(
            check_txn(&t(vec![nested.clone(), put("a")], vec![]), 128),
            Err(MvccError::DuplicateKey)
        );
        assert_eq!(
            check_txn(&t(vec![nested, del("a", "")], vec![]), 128),
            Err(MvccError::DuplicateKey)
        );
        let many: Vec<RequestOp> = (0..129).map(|i| put(&format!("k{i}"))).collect();
        assert_eq!(check_txn(&t(many, vec![]), 128), Err(MvccError::TooManyOps));
    }

    const LIMITS: Limits = Limits {
        max_request_bytes: 1024,
        max_txn_ops: 128,
    };

    fn check(cmd: &Command, origin: Origin) -> Result<(), Rejected> {
        check_command(cmd, origin, &LIMITS)
    }

    fn put_cmd(key: &str, value_len: usize) -> Command {
        Command::Put(PutRequest {
            key: key.to_string().into(),
            value: vec![b'v'; value_len].into(),
            ..Default::default()
        })
    }

    /// A txn nested `depth` txns deep, one put at the bottom.
    fn nested_txn(depth: usize) -> TxnRequest {
        let mut t = TxnRequest {
            success: vec![put("k")],
            ..Default::default()
        };
        for _ in 0..depth {
            t = TxnRequest {
                success: vec![RequestOp {
                    request: Some(Request::RequestTxn(t)),
                }],
                ..Default::default()
            };
        }
        t
    }

    #[test]
    fn puts_deletes_and_txns_are_checked_and_bounded_in_size() {
        for origin in [Origin::Client, Origin::Peer, Origin::Internal] {
            assert_eq!(check(&put_cmd("k", 10), origin), Ok(()));
            assert_eq!(
                check(&put_cmd("", 10), origin),
                Err(Rejected::Mvcc(MvccError::EmptyKey))
            );
            assert_eq!(check(&put_cmd("k", 2000), origin), Err(Rejected::TooLarge));
        }
        let del = |key: &str, end: &str| {
            Command::DeleteRange(DeleteRangeRequest {
                key: key.to_string().into(),
                range_end: end.to_string().into(),
                prev_kv: false,
            })
        };
        assert_eq!(check(&del("a", "b"), Origin::Peer), Ok(()));
        assert_eq!(
            check(&del("", "b"), Origin::Peer),
            Err(Rejected::Mvcc(MvccError::EmptyKey))
        );
        assert_eq!(
            check(&del("a", &"z".repeat(2000)), Origin::Peer),
            Err(Rejected::TooLarge)
        );
        let txn = |success: Vec<RequestOp>| {
            Command::Txn(TxnRequest {
                success,
                ..Default::default()
            })
        };
        assert_eq!(check(&txn(vec![put("a"), put("b")]), Origin::Peer), Ok(()));
        assert_eq!(
            check(&txn(vec![put("a"), put("a")]), Origin::Peer),
            Err(Rejected::Mvcc(MvccError::DuplicateKey))
        );
        let many = (0..129).map(|i| put(&format!("{i}"))).collect();
        let roomy = Limits {
            max_request_bytes: 1 << 20,
            ..LIMITS
        };
        assert_eq!(
            check_command(&txn(many), Origin::Peer, &roomy),
            Err(Rejected::Mvcc(MvccError::TooManyOps))
        );
        let big = (0..100).map(|i| put(&format!("key-{i:020}"))).collect();
        assert_eq!(check(&txn(big), Origin::Peer), Err(Rejected::TooLarge));
    }

    #[test]
    fn compaction_below_any_revision_is_compacted() {
        let compact = |revision| {
            Command::Compact(crate::pb::etcdserverpb::CompactionRequest {
                revision,
                physical: false,
            })
        };
        assert_eq!(check(&compact(5), Origin::Client), Ok(()));
        // As etcd: 0 is left to the store (accepted on a never-compacted one).
        assert_eq!(check(&compact(0), Origin::Client), Ok(()));
        for rev in [-1, i64::MIN] {
            assert_eq!(
                check(&compact(rev), Origin::Peer),
                Err(Rejected::Mvcc(MvccError::Compacted))
            );
        }
    }

    #[test]
    fn lease_grants_and_revokes_need_an_id_and_a_sane_ttl() {
        let grant = |id, ttl| Command::LeaseGrant {
            id,
            ttl,
            granted_ms: 1,
        };
        assert_eq!(check(&grant(7, 60), Origin::Client), Ok(()));
        assert_eq!(check(&grant(-7, 1), Origin::Peer), Ok(()));
        assert_eq!(check(&grant(7, MAX_LEASE_TTL), Origin::Peer), Ok(()));
        assert_eq!(
            check(&grant(0, 60), Origin::Client),
            Err(Rejected::Mvcc(MvccError::LeaseNotFound))
        );
        for ttl in [0, -5, MAX_LEASE_TTL + 1, i64::MAX] {
            assert_eq!(
                check(&grant(7, ttl), Origin::Peer),
                Err(Rejected::Mvcc(MvccError::LeaseTtlTooLarge)),
                "ttl {ttl}"
            );
        }
        assert_eq!(check(&Command::LeaseRevoke { id: 7 }, Origin::Peer), Ok(()));
        assert_eq!(
            check(&Command::LeaseRevoke { id: 0 }, Origin::Client),
            Err(Rejected::Mvcc(MvccError::LeaseNotFound))
        );
    }

    #[test]
    fn only_this_leaders_lessor_makes_checkpoints_and_they_are_bounded() {
        use super::super::command::LeaseRefresh;
        let checkpoint = |n| Command::LeaseCheckpoint {
            refreshes: vec![
                LeaseRefresh {
                    id: 1,
                    refreshed_ms: 2,
                };
                n
            ],
        };
        assert_eq!(check(&checkpoint(3), Origin::Internal), Ok(()));
        for origin in [Origin::Client, Origin::Peer] {
            let refused = check(&checkpoint(3), origin);
            assert!(
                matches!(refused, Err(Rejected::NotAllowed(_))),
                "{refused:?}"
            );
        }
        assert_eq!(
            check(&checkpoint(MAX_CHECKPOINT_REFRESHES), Origin::Internal),
            Ok(())
        );
        assert_eq!(
            check(&checkpoint(MAX_CHECKPOINT_REFRESHES + 1), Origin::Internal),
            Err(Rejected::TooLarge)
        );
        assert_eq!(
            Rejected::NotAllowed("lease checkpoints are made by the leader's lessor only")
                .to_string(),
            "command not allowed: lease checkpoints are made by the leader's lessor only"
        );
    }

    #[test]
    fn nested_txns_deeper_than_prosts_limit_do_not_decode() {
        // prost (without `no-recursion-limit`) allows 100 nested messages;
        // each txn level is two (RequestOp, TxnRequest).
        let shallow = nested_txn(40);
        let back = TxnRequest::decode(shallow.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, shallow);
        let deep = nested_txn(100).encode_to_vec();
        let err = TxnRequest::decode(deep.as_slice()).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
        // Nor inside a Raft entry.
        use super::super::command::Proposal;
        use crate::codec::{decode, encode};
        let entry = encode(&Proposal::One(Command::Txn(nested_txn(100))));
        assert!(decode::<Proposal>(&entry).is_err());
        let entry = encode(&Proposal::One(Command::Txn(shallow)));
        assert!(decode::<Proposal>(&entry).is_ok());
    }

    #[test]
    fn checking_a_txn_nested_a_hundred_deep_does_not_overflow_the_stack() {
        let ok = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| check_txn(&nested_txn(100), 128).is_ok())
            .unwrap()
            .join()
            .unwrap();
        assert!(ok);
        assert_eq!(check(&Command::Txn(nested_txn(100)), Origin::Peer), Ok(()));
    }
}
