//! The domain error: how a client request can end, in etcd's words.
//!
//! Every layer below the API returns it; the API layer alone turns it into
//! a gRPC status (`api::status`). It also crosses the peer port inside a
//! leader's refusal, so it is serializable.

use crate::mvcc::MvccError;

/// An error a client request can end in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ApiError {
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    /// Refused by the auth store or the token check.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    LeaderFail,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    #[error("etcdserver: {0}")]
    Internal(String),
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    /// A command its sender may not propose (a peer forwarding a kind only
    /// the leader itself makes).
    #[error("etcdserver: {0}")]
    NotAllowed(String),
    /// Election: no key under the election's prefix (clientv3 concurrency's
    /// `ErrElectionNoLeader`).
    #[error("election: no leader")]
    ElectionNoLeader,
    /// Election: the leader key given is not (any more) the leader's.
    #[error("election: not leader")]
    ElectionNotLeader,
    /// Election: Proclaim or Resign without a leader key.
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    /// Lock or Campaign: the caller's own key went (its lease was revoked
    /// or expired) while it waited.
    #[error("mutex: session is expired")]
    SessionExpired,
}
