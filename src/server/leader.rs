//! Requests only the leader serves, and how any member gets them served:
//! [`Server::leader_call`] runs a [`LeaderOp`] here when this member leads
//! and otherwise forwards it to the leader over the peer port, following
//! leader changes until the request deadline. Also the leader's side of the
//! peer port ([`PeerHandler`]): forwarded ops, read index, joins.

use std::time::Duration;

use super::join::{JoinReply, JoinRequest};
use super::ops::{LeaderOp, LeaderReply, Refusal};
use super::replica::{DiscoverReply, DiscoverRequest};
use super::{retry_until, Attempt, Server};
use crate::error::ApiError;
use crate::lessor::{Clock, RenewError};
use crate::mvcc::validate::Origin;
use crate::mvcc::{Command, Reply};
use crate::raft::network::{PeerError, Rpc};
use crate::raft::peer_service::PeerHandler;
use crate::raft::proposer::ProposeError;

impl Server {
    /// Run `op` on the leader: here if this member leads, else forwarded to
    /// the leader, following leader changes until the request deadline.
    /// `origin` says who asked, for the validation of a write (a forwarded
    /// write is validated again on the leader as coming from a peer).
    pub(crate) async fn leader_call(
        &self,
        op: LeaderOp,
        origin: Origin,
    ) -> Result<LeaderReply, ApiError> {
        let me = self.inner.identity.member_id;
        let op = &op;
        retry_until(
            super::deadline(),
            |deadline| async move {
                let outcome = match self.leader() {
                    None => return Ok(Attempt::Retry),
                    Some(l) if l == me => {
                        match tokio::time::timeout_at(
                            deadline,
                            self.serve_leader_op(op.clone(), origin),
                        )
                        .await
                        {
                            Err(_) => return Err(ApiError::Timeout),
                            Ok(r) => r,
                        }
                    }
                    Some(l) => match self.forward(l, op, deadline).await {
                        Ok(r) => r,
                        Err(e) if e.not_delivered() => {
                            tracing::debug!(error = %e, "leader unreachable; retrying");
                            return Ok(Attempt::Retry);
                        }
                        Err(e) => {
                            // The leader may have executed it: retrying could
                            // apply a write twice, so give up as etcd does.
                            tracing::warn!(error = %e, "forwarding to the leader failed");
                            return Err(match op {
                                LeaderOp::Write(_) => ApiError::LeaderFail,
                                _ => ApiError::Timeout,
                            });
                        }
                    },
                };
                match outcome {
                    Ok(r) => Ok(Attempt::Done(r)),
                    Err(Refusal::Api(e)) => Err(e),
                    Err(Refusal::NotLeader(_)) => Ok(Attempt::Retry),
                }
            },
            || self.no_leader_or_timeout(),
        )
        .await
    }

    async fn forward(
        &self,
        leader: u64,
        op: &LeaderOp,
        deadline: tokio::time::Instant,
    ) -> Result<Result<LeaderReply, Refusal>, PeerError> {
        let url = self
            .peer_url_of(leader)
            .ok_or_else(|| PeerError::Unreachable {
                to: leader,
                url: String::new(),
                reason: "leader has no known peer URL".into(),
            })?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.inner
            .transport
            .call_typed(Rpc::Forward, leader, &url, op, left)
            .await
    }

    /// Serve `op` as the leader (refusing with [`Refusal::NotLeader`] if
    /// this member does not lead). `origin` says who asked: a write from a
    /// peer passes the same validation as one from a client here, and kinds
    /// only this member's own lessor makes are refused.
    pub(crate) async fn serve_leader_op(
        &self,
        op: LeaderOp,
        origin: Origin,
    ) -> Result<LeaderReply, Refusal> {
        if !matches!(op, LeaderOp::Write(_) | LeaderOp::LeaseKeepAlive { .. }) {
            self.ensure_leader()?;
        }
        match op {
            LeaderOp::Write(cmd) => self.propose(cmd, origin).await.map(LeaderReply::Write),
            LeaderOp::LeaseKeepAlive { id } => {
                let renewed =
                    self.inner
                        .lessor
                        .renew(id, &self.view(), self.leader_term(), Clock::now());
                match renewed {
                    Ok(ttl) => Ok(LeaderReply::LeaseKeepAlive { ttl }),
                    Err(RenewError::NotFound) => Ok(LeaderReply::LeaseKeepAlive { ttl: 0 }),
                    Err(RenewError::NotLeader) => Err(Refusal::NotLeader(self.leader())),
                }
            }
            LeaderOp::AddMember { peer_urls, learner } => self.add_member(peer_urls, learner).await,
            LeaderOp::RemoveMember { id } => self.remove_member(id).await,
            LeaderOp::UpdateMember { id, peer_urls } => self.update_member(id, peer_urls).await,
            LeaderOp::PromoteMember { id } => self.promote_member(id).await,
            LeaderOp::Publish { id, info } => self.publish_member(id, info).await,
            LeaderOp::AddReplica { replica_id } => self.add_replica(replica_id).await,
        }
    }

    /// Propose `cmd` through the group-commit proposer (forwarded writes
    /// join the leader's batches like local ones), which checks it as coming
    /// from `origin` first, and wait for the state machine's reply.
    async fn propose(&self, cmd: Command, origin: Origin) -> Result<Reply, Refusal> {
        match self.inner.proposer.propose(cmd, origin).await {
            Ok(Reply::Error(e)) => Err(Refusal::Api(ApiError::Mvcc(e))),
            Ok(reply) => Ok(reply),
            Err(ProposeError::NotLeader(hint)) => Err(Refusal::NotLeader(hint)),
            Err(ProposeError::Stopped) => Err(Refusal::Api(ApiError::Stopped)),
            Err(ProposeError::Other(e)) => Err(Refusal::Api(ApiError::Internal(e))),
            Err(ProposeError::Rejected(r)) => Err(Refusal::Api(self.rejected(r, origin))),
        }
    }

    pub(super) fn ensure_leader(&self) -> Result<(), Refusal> {
        match self.leader() {
            Some(l) if l == self.inner.identity.member_id => Ok(()),
            other => Err(Refusal::NotLeader(other)),
        }
    }

    /// MoveLeader: hand leadership to voter `target` (this member must lead).
    ///
    /// openraft 0.9 has no leadership transfer, so it is built from what it
    /// has: wait until the target has every entry, stop heartbeats so the
    /// followers' leader leases run out, then ask the target to campaign
    /// (`TimeoutNow`); its log being the longest, it wins. Heartbeats and
    /// elections resume here whatever happens.
    pub(crate) async fn move_leader(&self, target: u64) -> Result<(), ApiError> {
        let me = self.inner.identity.member_id;
        let raft = &self.inner.raft;
        let metrics = raft.metrics().borrow().clone();
        if metrics.current_leader != Some(me) {
            return Err(ApiError::NotLeader);
        }
        if target == me {
            return Ok(());
        }
        if !metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == target)
        {
            return Err(ApiError::BadLeaderTransferee);
        }
        let url = self
            .peer_url_of(target)
            .ok_or(ApiError::BadLeaderTransferee)?;
        let deadline = super::deadline();
        loop {
            let m = raft.metrics().borrow().clone();
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&target).cloned().flatten())
                .map(|l| l.index);
            if m.current_leader != Some(me) {
                return Err(ApiError::NotLeader);
            }
            if matched.is_some() && matched == m.last_log_index {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::LeaderTransferTimeout);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let runtime = raft.runtime_config();
        runtime.heartbeat(false);
        runtime.elect(false);
        let lease = Duration::from_millis(
            raft.config().election_timeout_max + raft.config().heartbeat_interval,
        );
        let transfer = async {
            tokio::time::sleep(lease).await;
            let asked: Result<Result<(), String>, PeerError> = self
                .inner
                .transport
                .call_typed(Rpc::TimeoutNow, target, &url, &(), Duration::from_secs(1))
                .await;
            if let Err(e) | Ok(Err(e)) = asked.map_err(|e| e.to_string()) {
                tracing::warn!(error = %e, "leadership transfer: the target did not campaign");
            }
            let mut m = raft.metrics();
            loop {
                if m.borrow().current_leader == Some(target) {
                    return Ok(());
                }
                match tokio::time::timeout_at(deadline, m.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(ApiError::Stopped),
                    Err(_) => return Err(ApiError::LeaderTransferTimeout),
                }
            }
        };
        let result = transfer.await;
        runtime.heartbeat(true);
        runtime.elect(true);
        if result.is_ok() {
            tracing::info!(to = format!("{target:x}"), "leadership transferred");
        }
        result
    }

    /// The leader's read index, for a follower's linearizable read: joins
    /// this member's next read-index round; a member that does not lead
    /// says so (the follower asks again) instead of asking further.
    async fn serve_read_index(&self) -> Result<u64, Refusal> {
        let me = self.inner.identity.member_id;
        match self.leader() {
            Some(l) if l == me => self
                .read_index()
                .await
                .unwrap_or(Err(Refusal::Api(ApiError::Stopped))),
            other => Err(Refusal::NotLeader(other)),
        }
    }
}

/// The leader's side of the peer port: what other members ask of it.
impl PeerHandler for Server {
    type Forward = LeaderOp;
    type ForwardReply = Result<LeaderReply, Refusal>;
    type ReadIndexReply = Result<u64, Refusal>;
    type Join = JoinRequest;
    type JoinReply = Result<JoinReply, String>;
    type Discover = DiscoverRequest;
    type DiscoverReply = DiscoverReply;

    async fn forward(&self, op: LeaderOp) -> Self::ForwardReply {
        self.serve_leader_op(op, Origin::Peer).await
    }

    async fn read_index(&self) -> Self::ReadIndexReply {
        self.serve_read_index().await
    }

    fn join(&self, req: JoinRequest) -> Self::JoinReply {
        self.serve_join(req)
    }

    fn discover(&self, req: DiscoverRequest) -> DiscoverReply {
        self.serve_discover(req)
    }
}
