//! The KV and lease services over Raft, as etcd's `RaftKV`: each request is
//! checked, then proposed through Raft (writes) or answered from the
//! published view once linearized (reads), and its response header filled.
//! The gRPC adapters (`api::kv`, `api::lease`) and the in-process client
//! both call these; nothing above this file knows about Raft.

use std::time::Duration;

use super::auth::Principal;
use super::ops::{LeaderOp, LeaderReply, Refusal};
use super::{retry_until, Attempt, Server};
use crate::error::ApiError;
use crate::lessor::Clock;
use crate::mvcc::validate::{self, Limits, Origin, Rejected};
use crate::mvcc::{Command, MvccError, Reply};
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader,
    TxnRequest, TxnResponse,
};

/// A response whose header the state machine stamped with its revision
/// only; [`Server::stamp`] adds the cluster fields.
trait Stamped {
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! stamped {
    ($($t:ty),*) => {$(
        impl Stamped for $t {
            fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        }
    )*};
}
stamped!(
    PutResponse,
    DeleteRangeResponse,
    TxnResponse,
    CompactionResponse,
    LeaseGrantResponse,
    LeaseRevokeResponse
);

/// A txn that only reads can be answered from the local view.
fn txn_is_read_only(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(t.failure.iter())
        .all(|op| match &op.request {
            Some(Op::RequestRange(_)) => true,
            Some(Op::RequestTxn(inner)) => txn_is_read_only(inner),
            _ => false,
        })
}

fn txn_is_serializable(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(t.failure.iter())
        .all(|op| match &op.request {
            Some(Op::RequestRange(r)) => r.serializable,
            Some(Op::RequestTxn(inner)) => txn_is_serializable(inner),
            _ => true,
        })
}

fn unexpected(reply: Reply) -> ApiError {
    ApiError::Internal(format!("unexpected reply {reply:?}"))
}

impl Server {
    /// The one validation every command passes before it is proposed,
    /// whatever path it came by (a client here, a peer forwarding one, this
    /// member's lessor).
    pub(super) fn check_command(&self, cmd: &Command, origin: Origin) -> Result<(), ApiError> {
        validate::check_command(cmd, origin, &self.limits()).map_err(|r| self.rejected(r, origin))
    }

    /// A refused command, in etcd's words.
    pub(super) fn rejected(&self, r: Rejected, origin: Origin) -> ApiError {
        match r {
            Rejected::Mvcc(e) => ApiError::Mvcc(e),
            Rejected::TooLarge => ApiError::RequestTooLarge,
            Rejected::NotAllowed(why) => {
                tracing::warn!(?origin, why, "refused a command");
                ApiError::NotAllowed(why.to_string())
            }
        }
    }

    /// The request limits every command is checked against.
    pub(super) fn limits(&self) -> Limits {
        let config = &self.inner.config;
        Limits {
            max_request_bytes: config.max_request_bytes,
            max_txn_ops: config.max_txn_ops,
        }
    }

    /// Propose `cmd` and wait for its reply: on the leader, or forwarded to
    /// it. Follows leader changes within the request deadline.
    pub(crate) async fn write(&self, cmd: Command, origin: Origin) -> Result<Reply, ApiError> {
        match self.leader_call(LeaderOp::Write(cmd), origin).await? {
            LeaderReply::Write(reply) => Ok(reply),
            other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    /// A client write of `who` whose reply is `pick`'s kind, its header
    /// filled.
    async fn submit<T: Stamped>(
        &self,
        who: &Principal,
        cmd: Command,
        pick: fn(Reply) -> Option<T>,
    ) -> Result<T, ApiError> {
        self.check_command(&cmd, Origin::Client)?;
        let cmd = self.authorize(who, cmd)?;
        let reply = self.write(cmd, Origin::Client).await?;
        pick(reply).map(|r| self.stamp(r)).ok_or_else(|| {
            ApiError::Internal("unexpected reply kind from the state machine".into())
        })
    }

    /// Fill the cluster fields of a response the state machine made.
    fn stamp<T: Stamped>(&self, mut resp: T) -> T {
        let revision = resp.header_mut().map_or(0, |h| h.revision);
        *resp.header_mut() = Some(self.header(revision));
        resp
    }

    /// Range: linearizable unless `serializable` is set.
    pub async fn range(&self, r: RangeRequest) -> Result<RangeResponse, ApiError> {
        self.range_as(&Principal::Local, r).await
    }

    pub async fn put(&self, r: PutRequest) -> Result<PutResponse, ApiError> {
        self.put_as(&Principal::Local, r).await
    }

    pub async fn delete_range(
        &self,
        r: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, ApiError> {
        self.delete_range_as(&Principal::Local, r).await
    }

    pub async fn txn(&self, r: TxnRequest) -> Result<TxnResponse, ApiError> {
        self.txn_as(&Principal::Local, r).await
    }

    pub async fn compact(&self, r: CompactionRequest) -> Result<CompactionResponse, ApiError> {
        self.compact_as(&Principal::Local, r).await
    }

    pub async fn lease_grant(&self, r: LeaseGrantRequest) -> Result<LeaseGrantResponse, ApiError> {
        self.lease_grant_as(&Principal::Local, r).await
    }

    pub async fn lease_revoke(
        &self,
        r: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, ApiError> {
        self.lease_revoke_as(&Principal::Local, r).await
    }

    /// Range for `who`, checked on the view it reads.
    pub async fn range_as(
        &self,
        who: &Principal,
        r: RangeRequest,
    ) -> Result<RangeResponse, ApiError> {
        validate::check_range(&r)?;
        if !r.serializable && self.refuses_clients() {
            return Err(ApiError::NotSupportedForLearner);
        }
        if !r.serializable {
            self.linearize().await?;
        }
        let view = self.view();
        self.check_read(who, &view, |v, c| crate::mvcc::auth::check_range(v, c, &r))?;
        let mut resp = view.range(&r, view.revision)?;
        resp.header = Some(self.header(view.revision));
        Ok(resp)
    }

    pub async fn put_as(&self, who: &Principal, r: PutRequest) -> Result<PutResponse, ApiError> {
        self.submit(who, Command::Put(r), |reply| match reply {
            Reply::Put(p) => Some(p),
            _ => None,
        })
        .await
    }

    pub async fn delete_range_as(
        &self,
        who: &Principal,
        r: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, ApiError> {
        self.submit(who, Command::DeleteRange(r), |reply| match reply {
            Reply::DeleteRange(d) => Some(d),
            _ => None,
        })
        .await
    }

    /// Txn: one that only reads is answered from the local view.
    pub async fn txn_as(&self, who: &Principal, r: TxnRequest) -> Result<TxnResponse, ApiError> {
        let cmd = Command::Txn(r);
        let Command::Txn(t) = &cmd else {
            return Err(ApiError::Internal("txn".into()));
        };
        if !txn_is_read_only(t) {
            return self
                .submit(who, cmd, |reply| match reply {
                    Reply::Txn(t) => Some(t),
                    _ => None,
                })
                .await;
        }
        self.check_command(&cmd, Origin::Client)?;
        if !txn_is_serializable(t) {
            self.linearize().await?;
        }
        let view = self.view();
        self.check_read(who, &view, |v, c| crate::mvcc::auth::check_txn(v, c, t))?;
        match crate::mvcc::apply::apply(&view, &cmd).reply {
            Reply::Txn(t) => Ok(self.stamp(t)),
            Reply::Error(e) => Err(ApiError::Mvcc(e)),
            other => Err(unexpected(other)),
        }
    }

    /// Compact: with `physical`, wait until the dropped history is deleted
    /// from disk, as etcd does.
    pub async fn compact_as(
        &self,
        who: &Principal,
        r: CompactionRequest,
    ) -> Result<CompactionResponse, ApiError> {
        // A cheap pre-check against the local view saves a Raft round trip:
        // what this member has compacted, the cluster has. Not so a future
        // revision: a follower's view may lag a revision the client already
        // read elsewhere, so only the state machine decides that, at apply.
        if r.revision <= self.view().compact_revision {
            return Err(ApiError::Mvcc(MvccError::Compacted));
        }
        let (revision, physical) = (r.revision, r.physical);
        let resp = self
            .submit(who, Command::Compact(r), |reply| match reply {
                Reply::Compact(c) => Some(c),
                _ => None,
            })
            .await?;
        if physical {
            self.compacted_on_disk(revision).await?;
        }
        Ok(resp)
    }

    /// Grant a lease: id 0 lets the server choose; a TTL below the minimum
    /// is raised to it.
    pub async fn lease_grant_as(
        &self,
        who: &Principal,
        r: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, ApiError> {
        if r.ttl > crate::mvcc::lease::MAX_LEASE_TTL {
            return Err(ApiError::Mvcc(MvccError::LeaseTtlTooLarge));
        }
        let lessor = &self.inner.lessor;
        let ttl = r.ttl.max(lessor.min_ttl());
        let id = if r.id == 0 {
            lessor.next_id(&self.view())
        } else {
            r.id
        };
        let granted_ms = Clock::now().wall_ms;
        let cmd = Command::LeaseGrant {
            id,
            ttl,
            granted_ms,
        };
        self.submit(who, cmd, |reply| match reply {
            Reply::LeaseGrant(g) => Some(g),
            _ => None,
        })
        .await
    }

    /// Revoke a lease, deleting its keys.
    pub async fn lease_revoke_as(
        &self,
        who: &Principal,
        r: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, ApiError> {
        self.submit(
            who,
            Command::LeaseRevoke { id: r.id },
            |reply| match reply {
                Reply::LeaseRevoke(v) => Some(v),
                _ => None,
            },
        )
        .await
    }

    /// One keep-alive: the granted TTL, or 0 if the lease is gone. Deadlines
    /// live in the leader's lessor, so a follower forwards it there.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<LeaseKeepAliveResponse, ApiError> {
        let ttl = match self
            .leader_call(LeaderOp::LeaseKeepAlive { id }, Origin::Client)
            .await?
        {
            LeaderReply::LeaseKeepAlive { ttl } => ttl,
            other => return Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
        };
        Ok(LeaseKeepAliveResponse {
            header: Some(self.header(self.view().revision)),
            id,
            ttl,
        })
    }

    /// How long a lease has left (-1: no such lease, as etcd 3.4 answers).
    pub fn lease_time_to_live(&self, r: LeaseTimeToLiveRequest) -> LeaseTimeToLiveResponse {
        let view = self.view();
        let header = Some(self.header(view.revision));
        let remaining = self
            .inner
            .lessor
            .remaining(r.id, &view, self.leader_term(), Clock::now());
        match (remaining, view.leases.get(&r.id)) {
            (Some(left), Some(lease)) => LeaseTimeToLiveResponse {
                header,
                id: r.id,
                // Whole seconds left, truncated, as etcd reports them.
                ttl: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                granted_ttl: lease.ttl,
                keys: if r.keys {
                    lease.keys.iter().cloned().collect()
                } else {
                    Vec::new()
                },
            },
            _ => LeaseTimeToLiveResponse {
                header,
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        }
    }

    /// Every lease, the one expiring first first.
    pub fn lease_leases(&self) -> LeaseLeasesResponse {
        let view = self.view();
        let ids = self
            .inner
            .lessor
            .by_expiry(&view, self.leader_term(), Clock::now());
        LeaseLeasesResponse {
            header: Some(self.header(view.revision)),
            leases: ids.into_iter().map(|id| LeaseStatus { id }).collect(),
        }
    }

    /// Wait until a read on the local view is linearizable: get a read
    /// index from a round shared with the reads that arrived meanwhile (the
    /// leader confirms its leadership with a quorum; a follower asks the
    /// leader over the peer port; see `read_index.rs`), then wait until this
    /// member has applied that far.
    pub async fn linearize(&self) -> Result<(), ApiError> {
        retry_until(
            super::deadline(),
            |deadline| async move {
                let Some(leader) = self.leader() else {
                    return Ok(Attempt::Retry);
                };
                if self.inner.config.stale_follower_reads && leader != self.inner.identity.member_id
                {
                    return Ok(Attempt::Done(()));
                }
                let index = match tokio::time::timeout_at(deadline, self.read_index()).await {
                    Err(_) => return Err(ApiError::Timeout),
                    Ok(Err(_closed)) => return Err(ApiError::Stopped),
                    Ok(Ok(Ok(index))) => index,
                    Ok(Ok(Err(Refusal::Api(ApiError::Stopped)))) => return Err(ApiError::Stopped),
                    Ok(Ok(Err(r))) => {
                        tracing::debug!(refusal = ?r, "no read index this round");
                        return Ok(Attempt::Retry);
                    }
                };
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self
                    .inner
                    .raft
                    .wait(Some(left))
                    .applied_index_at_least(Some(index), "read index")
                    .await
                {
                    Ok(_) => Ok(Attempt::Done(())),
                    Err(openraft::metrics::WaitError::Timeout(..)) => Err(ApiError::Timeout),
                    Err(_) => Err(ApiError::Stopped),
                }
            },
            || self.no_leader_or_timeout(),
        )
        .await
    }

    /// Wait until this member has applied a compaction at `revision`
    /// (etcd's `physical` compaction), within the request deadline: the
    /// history it drops leaves memory at once and the disk with the next
    /// snapshot (or defragment).
    async fn compacted_on_disk(&self, revision: i64) -> Result<(), ApiError> {
        let deadline = super::deadline();
        while self.view().compact_revision < revision {
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }
}
