//! Cluster membership and the requests only the leader serves.
//!
//! * Member ids: [`member_id`] for the members of `--initial-cluster`
//!   (the same on every member), [`new_member_id`] for `member add`.
//! * [`LeaderOp`]: what a member asks of the leader — a client write, a
//!   membership change, publishing its own name and client URLs. The leader
//!   runs it with `Node::serve_leader_op`; any member calls
//!   `Node::leader_call`, which runs it locally when this member leads and
//!   otherwise forwards it over the peer service, following leader changes
//!   until the request deadline.
//! * Joining (`--initial-cluster-state existing`): [`join`] asks the listed
//!   peers for this member's id (assigned by `member add`) and the cluster id.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Membership};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::ApiError;
use crate::lessor::RenewError;
use crate::mvcc::{Command, Reply};
use crate::node::{hash_id, url_string, Identity, Node, REQUEST_TIMEOUT};
use crate::raft::network::{peer_url, PeerError, PeerTransport, Rpc};
use crate::raft::proposer::ProposeError;
use crate::raft::MemberInfo;

/// A request only the leader can serve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderOp {
    /// Propose a state machine command.
    Write(Command),
    /// `member add`: a new member with these peer URLs.
    AddMember {
        peer_urls: Vec<String>,
        learner: bool,
    },
    /// `member remove`.
    RemoveMember { id: u64 },
    /// `member update`: new peer URLs.
    UpdateMember { id: u64, peer_urls: Vec<String> },
    /// `member promote`: learner to voter.
    PromoteMember { id: u64 },
    /// A started member publishes its name and client URLs.
    Publish { id: u64, info: MemberInfo },
    /// A lease keep-alive (lease deadlines live in the leader's lessor).
    LeaseKeepAlive { id: i64 },
}

/// One member as the Cluster API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// The leader's answer to a [`LeaderOp`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderReply {
    Write(Reply),
    /// The lease's granted TTL, or 0 if it is gone.
    LeaseKeepAlive {
        ttl: i64,
    },
    /// After a membership change: the member concerned and all members.
    Members {
        member: Option<MemberRow>,
        members: Vec<MemberRow>,
    },
}

/// Why the leader (or a member taking itself for one) did not serve a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Refusal {
    /// This member does not lead; the leader if known. Nothing was done.
    NotLeader(Option<u64>),
    /// The request failed with an error to give the client.
    Api(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Api(e)
    }
}

/// A member started with `--initial-cluster-state existing` introducing
/// itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// [`token_hash`] of its `--initial-cluster-token`.
    pub token_hash: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
}

/// The ids a joining member adopts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinReply {
    pub member_id: u64,
    pub cluster_id: u64,
}

/// The id of member `name` with `peer_urls` in a cluster bootstrapped with
/// `token`: every member computes the same ids for the whole
/// `--initial-cluster`.
pub fn member_id(name: &str, peer_urls: &[url::Url], token: &str) -> u64 {
    let peers: Vec<&str> = peer_urls.iter().map(|u| u.as_str()).collect();
    let mut parts = vec!["member", name, token];
    parts.extend(peers);
    hash_id(&parts)
}

/// The id of a member added at run time: its peer URLs, the cluster token
/// and the time, as etcd does.
pub fn new_member_id(peer_urls: &[String], token: &str) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string();
    let mut sorted: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    sorted.sort();
    let mut parts = vec!["added-member", token, now.as_str()];
    parts.extend(sorted);
    hash_id(&parts)
}

/// What peers compare to tell a joining member of another cluster.
pub fn token_hash(token: &str) -> u64 {
    hash_id(&["cluster-token", token])
}

/// Peer URLs as given by a user, normalized as the membership stores them.
pub fn normalize_urls(urls: &[String]) -> Result<Vec<String>, ApiError> {
    if urls.is_empty() {
        return Err(ApiError::MemberBadUrls);
    }
    urls.iter()
        .map(|u| {
            let parsed = url::Url::parse(u).map_err(|_| ApiError::MemberBadUrls)?;
            if parsed.host_str().is_none() || parsed.port().is_none() {
                return Err(ApiError::MemberBadUrls);
            }
            Ok(url_string(&parsed))
        })
        .collect()
}

fn rows(m: &Membership<u64, MemberInfo>) -> Vec<MemberRow> {
    let voters: BTreeSet<u64> = m.voter_ids().collect();
    m.nodes()
        .map(|(id, info)| MemberRow {
            id: *id,
            name: info.name.clone(),
            peer_urls: info.peer_urls.clone(),
            client_urls: info.client_urls.clone(),
            is_learner: !voters.contains(id),
        })
        .collect()
}

fn write_refusal(e: RaftError<u64, ClientWriteError<u64, MemberInfo>>) -> Refusal {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            Refusal::NotLeader(f.leader_id)
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
            ChangeMembershipError::LearnerNotFound(_) => Refusal::Api(ApiError::MemberNotFound),
            other => Refusal::Api(ApiError::Internal(other.to_string())),
        },
        RaftError::Fatal(_) => Refusal::Api(ApiError::Stopped),
    }
}

/// A membership change the strict reconfiguration check looks at.
#[derive(Debug, Clone, Copy)]
enum Reconfig {
    AddVoter,
    RemoveVoter(u64),
    Promote,
}

/// etcd's `--strict-reconfig-check` rules (`mayAddMember`,
/// `mayRemoveMember`, `mayPromoteMember`), on the voters `voters` as
/// `(id, started)` where started means the member has published its name,
/// and `active(id)`: the member answered this leader recently. `me` is the
/// leader itself, always active.
fn reconfig_check(
    change: Reconfig,
    me: u64,
    voters: &[(u64, bool)],
    active: impl Fn(u64) -> bool,
) -> Result<(), ApiError> {
    let started = |skip: Option<u64>| {
        voters
            .iter()
            .filter(|(id, s)| *s && Some(*id) != skip)
            .count()
    };
    match change {
        Reconfig::AddVoter | Reconfig::Promote => {
            // The future voter counts as a member; a promoted learner also
            // counts as started.
            let members = voters.len() + 1;
            let mut nstarted = started(None);
            if matches!(change, Reconfig::Promote) {
                nstarted += 1;
            }
            // Adding a second member to a one-member cluster is allowed: it
            // is how a cluster restored from a backup grows.
            let restoring = matches!(change, Reconfig::AddVoter) && nstarted == 1 && members == 2;
            if !restoring && nstarted < members / 2 + 1 {
                return Err(ApiError::NotEnoughStartedMembers);
            }
            if matches!(change, Reconfig::AddVoter)
                && voters.iter().any(|(id, _)| *id != me && !active(*id))
            {
                return Err(ApiError::Unhealthy);
            }
        }
        Reconfig::RemoveVoter(target) => {
            let members = voters.iter().filter(|(id, _)| *id != target).count();
            if started(Some(target)) < members / 2 + 1 {
                return Err(ApiError::NotEnoughStartedMembers);
            }
            // A member that is down is not part of the active quorum:
            // removing it is safe.
            if target != me && !active(target) {
                return Ok(());
            }
            let up = voters
                .iter()
                .filter(|(id, _)| *id == me || active(*id))
                .count();
            if up - 1 < 1 + (voters.len() - 1) / 2 {
                return Err(ApiError::Unhealthy);
            }
        }
    }
    Ok(())
}

/// How long to wait before asking again when there is no leader to ask.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

impl Node {
    /// Keep lease `id` alive through the leader; its granted TTL, or 0 if
    /// it is gone.
    pub(crate) async fn lease_keep_alive(&self, id: i64) -> Result<i64, ApiError> {
        match self.leader_call(LeaderOp::LeaseKeepAlive { id }).await? {
            LeaderReply::LeaseKeepAlive { ttl } => Ok(ttl),
            other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    /// Every member in the local membership configuration.
    pub fn members(&self) -> Vec<MemberRow> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        rows(metrics.membership_config.membership())
    }

    pub(crate) fn peer_url_of(&self, id: u64) -> Option<String> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .and_then(|n| peer_url(n).map(str::to_string))
    }

    /// Run `op` on the leader: here if this member leads, else forwarded to
    /// the leader, following leader changes until [`REQUEST_TIMEOUT`].
    pub(crate) async fn leader_call(&self, op: LeaderOp) -> Result<LeaderReply, ApiError> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        let me = self.inner.identity.member_id;
        loop {
            let leader = self.inner.raft.metrics().borrow().current_leader;
            match leader {
                None => {}
                Some(l) if l == me => {
                    match tokio::time::timeout_at(deadline, self.serve_leader_op(op.clone())).await
                    {
                        Err(_) => return Err(ApiError::Timeout),
                        Ok(Ok(r)) => return Ok(r),
                        Ok(Err(Refusal::Api(e))) => return Err(e),
                        Ok(Err(Refusal::NotLeader(_))) => {}
                    }
                }
                Some(l) => match self.forward(l, &op, deadline).await {
                    Ok(Ok(r)) => return Ok(r),
                    Ok(Err(Refusal::Api(e))) => return Err(e),
                    Ok(Err(Refusal::NotLeader(_))) => {}
                    Err(e) if e.not_delivered() => {
                        tracing::debug!(error = %e, "leader unreachable; retrying");
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
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(if leader.is_none() {
                    ApiError::NoLeader
                } else {
                    ApiError::Timeout
                });
            }
            tokio::time::sleep_until((now + RETRY_PAUSE).min(deadline)).await;
        }
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

    /// Serve `op` as the leader (refusing with [`Refusal::NotLeader`] if this
    /// member does not lead).
    pub(crate) async fn serve_leader_op(&self, op: LeaderOp) -> Result<LeaderReply, Refusal> {
        let raft = &self.inner.raft;
        match op {
            // Through the proposer: forwarded writes join the leader's
            // group commit like local ones.
            LeaderOp::Write(cmd) => match self.inner.proposer.propose(cmd).await {
                Ok(Reply::Error(e)) => Err(Refusal::Api(ApiError::Mvcc(e))),
                Ok(reply) => Ok(LeaderReply::Write(reply)),
                Err(ProposeError::NotLeader(hint)) => Err(Refusal::NotLeader(hint)),
                Err(ProposeError::Stopped) => Err(Refusal::Api(ApiError::Stopped)),
                Err(ProposeError::Other(e)) => Err(Refusal::Api(ApiError::Internal(e))),
            },
            LeaderOp::LeaseKeepAlive { id } => {
                let view = self.view();
                let renewed = self.inner.lessor.renew(
                    id,
                    &view,
                    self.leader_term(),
                    crate::lessor::Clock::now(),
                );
                match renewed {
                    Ok(ttl) => Ok(LeaderReply::LeaseKeepAlive { ttl }),
                    Err(RenewError::NotFound) => Ok(LeaderReply::LeaseKeepAlive { ttl: 0 }),
                    Err(RenewError::NotLeader) => {
                        Err(Refusal::NotLeader(raft.metrics().borrow().current_leader))
                    }
                }
            }
            LeaderOp::AddMember { peer_urls, learner } => {
                self.ensure_leader()?;
                let peer_urls = normalize_urls(&peer_urls)?;
                let current = self.members();
                if current
                    .iter()
                    .any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)))
                {
                    return Err(ApiError::PeerUrlExists.into());
                }
                if !learner {
                    self.strict_reconfig_check(Reconfig::AddVoter)?;
                }
                let id = new_member_id(&peer_urls, &self.inner.config.initial_cluster_token);
                let info = MemberInfo {
                    name: String::new(),
                    peer_urls,
                    client_urls: Vec::new(),
                };
                let mut m = self
                    .change_membership(ChangeMembers::AddNodes(BTreeMap::from([(id, info)])))
                    .await?;
                if !learner {
                    m = self
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
                        .await?;
                }
                tracing::info!(member = format!("{id:x}"), learner, "member added");
                let members = rows(&m);
                let member = members.iter().find(|r| r.id == id).cloned();
                Ok(LeaderReply::Members { member, members })
            }
            LeaderOp::RemoveMember { id } => {
                self.ensure_leader()?;
                let current = self.members();
                let row = current
                    .iter()
                    .find(|r| r.id == id)
                    .cloned()
                    .ok_or(ApiError::MemberNotFound)?;
                if !row.is_learner {
                    self.strict_reconfig_check(Reconfig::RemoveVoter(id))?;
                }
                let change = if row.is_learner {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                };
                let m = self.change_membership(change).await?;
                tracing::info!(member = format!("{id:x}"), "member removed");
                Ok(LeaderReply::Members {
                    member: Some(row),
                    members: rows(&m),
                })
            }
            LeaderOp::UpdateMember { id, peer_urls } => {
                self.ensure_leader()?;
                let peer_urls = normalize_urls(&peer_urls)?;
                let current = self.members();
                let row = current
                    .iter()
                    .find(|r| r.id == id)
                    .cloned()
                    .ok_or(ApiError::MemberNotFound)?;
                if current
                    .iter()
                    .any(|m| m.id != id && m.peer_urls.iter().any(|u| peer_urls.contains(u)))
                {
                    return Err(ApiError::PeerUrlExists.into());
                }
                let info = MemberInfo {
                    name: row.name.clone(),
                    peer_urls,
                    client_urls: row.client_urls.clone(),
                };
                let m = self
                    .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, info)])))
                    .await?;
                let members = rows(&m);
                let member = members.iter().find(|r| r.id == id).cloned();
                Ok(LeaderReply::Members { member, members })
            }
            LeaderOp::PromoteMember { id } => {
                self.ensure_leader()?;
                let metrics = raft.metrics().borrow().clone();
                let current = rows(metrics.membership_config.membership());
                let row = current
                    .iter()
                    .find(|r| r.id == id)
                    .ok_or(ApiError::MemberNotFound)?;
                if !row.is_learner {
                    return Err(ApiError::MemberNotLearner.into());
                }
                // etcd's rule: the learner has at least 90% of the leader's log.
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index);
                let last = metrics.last_log_index.unwrap_or(0);
                let ready = matched.is_some_and(|m| m.saturating_mul(10) >= last.saturating_mul(9));
                if !ready {
                    return Err(ApiError::LearnerNotReady.into());
                }
                self.strict_reconfig_check(Reconfig::Promote)?;
                let m = self
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
                    .await?;
                tracing::info!(member = format!("{id:x}"), "learner promoted");
                let members = rows(&m);
                let member = members.iter().find(|r| r.id == id).cloned();
                Ok(LeaderReply::Members { member, members })
            }
            LeaderOp::Publish { id, info } => {
                self.ensure_leader()?;
                let current = self.members();
                let row = current
                    .iter()
                    .find(|r| r.id == id)
                    .ok_or(ApiError::MemberNotFound)?;
                let published = row.name == info.name && row.client_urls == info.client_urls;
                let m = if published {
                    let metrics = raft.metrics().borrow().clone();
                    metrics.membership_config.membership().clone()
                } else {
                    let info = MemberInfo {
                        peer_urls: row.peer_urls.clone(),
                        ..info
                    };
                    self.change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, info)])))
                        .await?
                };
                let members = rows(&m);
                let member = members.iter().find(|r| r.id == id).cloned();
                Ok(LeaderReply::Members { member, members })
            }
        }
    }

    /// Apply etcd's strict reconfiguration check (unless
    /// `--strict-reconfig-check=false`). A member counts as active when it
    /// answered this leader within two election timeouts (the leader
    /// heartbeats every member many times in that span) and no request to
    /// it failed since.
    fn strict_reconfig_check(&self, change: Reconfig) -> Result<(), ApiError> {
        if !self.inner.config.strict_reconfig_check {
            return Ok(());
        }
        let me = self.inner.identity.member_id;
        let voters: Vec<(u64, bool)> = self
            .members()
            .iter()
            .filter(|r| !r.is_learner)
            .map(|r| (r.id, !r.name.is_empty()))
            .collect();
        let window = Duration::from_millis(2 * self.inner.config.election_timeout_ms.max(100));
        let transport = &self.inner.transport;
        let active = |id: u64| transport.is_active(id, window);
        reconfig_check(change, me, &voters, active).inspect_err(|e| {
            tracing::warn!(?change, error = %e, "membership change refused by the strict reconfiguration check");
        })
    }

    fn ensure_leader(&self) -> Result<(), Refusal> {
        let leader = self.inner.raft.metrics().borrow().current_leader;
        if leader == Some(self.inner.identity.member_id) {
            Ok(())
        } else {
            Err(Refusal::NotLeader(leader))
        }
    }

    /// One membership change, waiting while another one is in progress.
    async fn change_membership(
        &self,
        change: ChangeMembers<u64, MemberInfo>,
    ) -> Result<Membership<u64, MemberInfo>, Refusal> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            match self
                .inner
                .raft
                .change_membership(change.clone(), false)
                .await
            {
                Ok(resp) => {
                    return resp
                        .membership
                        .ok_or_else(|| ApiError::Internal("no membership in reply".into()).into())
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(write_refusal(e)),
            }
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
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
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

    /// The leader's read index, for a follower's linearizable read.
    pub(crate) async fn serve_read_index(&self) -> Result<u64, Refusal> {
        match self.inner.raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(read.map_or(0, |l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(Refusal::NotLeader(f.leader_id))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q))) => {
                Err(Refusal::Api(ApiError::Internal(q.to_string())))
            }
            Err(RaftError::Fatal(_)) => Err(Refusal::Api(ApiError::Stopped)),
        }
    }

    /// Answer a member joining with `--initial-cluster-state existing`.
    pub(crate) fn serve_join(&self, req: JoinRequest) -> Result<JoinReply, String> {
        let id = &self.inner.identity;
        if req.token_hash != token_hash(&self.inner.config.initial_cluster_token) {
            tracing::warn!(
                joining = %req.name,
                peer_urls = ?req.peer_urls,
                cluster_id = format!("{:x}", id.cluster_id),
                "refused a member with another --initial-cluster-token"
            );
            return Err(format!(
                "member {:?} ({}) has another --initial-cluster-token than cluster {:x}",
                req.name,
                req.peer_urls.join(","),
                id.cluster_id
            ));
        }
        let wanted: BTreeSet<&String> = req.peer_urls.iter().collect();
        let found = self
            .members()
            .into_iter()
            .find(|m| m.peer_urls.iter().collect::<BTreeSet<_>>() == wanted);
        match found {
            Some(m) if m.name.is_empty() || m.name == req.name => Ok(JoinReply {
                member_id: m.id,
                cluster_id: id.cluster_id,
            }),
            Some(m) => Err(format!(
                "the member with peer URLs {} is {:?}, not {:?}",
                req.peer_urls.join(","),
                m.name,
                req.name
            )),
            None => Err(format!(
                "cluster {:x} has no member with peer URLs {}: add it first with `etcdctl member add {} --peer-urls={}`",
                id.cluster_id,
                req.peer_urls.join(","),
                req.name,
                req.peer_urls.join(",")
            )),
        }
    }
}

/// Errors joining a running cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cannot join: {0}")]
    Refused(String),
    #[error("cannot join: no member of --initial-cluster answered ({0})")]
    NoPeer(String),
}

/// Ask the other members listed in `--initial-cluster` for this member's id
/// and the cluster id (`--initial-cluster-state existing`).
pub async fn join(config: &Config) -> Result<Identity, JoinError> {
    let transport = PeerTransport::new(0, 0, config.peer_tls.clone());
    let me: Vec<String> = config
        .initial_advertise_peer_urls
        .iter()
        .map(url_string)
        .collect();
    let req = JoinRequest {
        token_hash: token_hash(&config.initial_cluster_token),
        name: config.name.clone(),
        peer_urls: me.clone(),
    };
    let peers: Vec<String> = config
        .initial_cluster
        .iter()
        .filter(|(n, _)| *n != config.name)
        .flat_map(|(_, us)| us.iter().map(url_string))
        .filter(|u| !me.contains(u))
        .collect();
    if peers.is_empty() {
        return Err(JoinError::NoPeer(
            "--initial-cluster lists no other member".into(),
        ));
    }
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    let mut last = String::new();
    loop {
        for url in &peers {
            let reply: Result<Result<JoinReply, String>, PeerError> = transport
                .call_typed(Rpc::Join, 0, url, &req, Duration::from_secs(2))
                .await;
            match reply {
                Ok(Ok(r)) => {
                    tracing::info!(
                        peer = %url,
                        member_id = format!("{:x}", r.member_id),
                        cluster_id = format!("{:x}", r.cluster_id),
                        "joined the cluster"
                    );
                    return Ok(Identity {
                        name: config.name.clone(),
                        member_id: r.member_id,
                        cluster_id: r.cluster_id,
                    });
                }
                Ok(Err(reason)) => return Err(JoinError::Refused(format!("{url}: {reason}"))),
                Err(e) => last = e.to_string(),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(JoinError::NoPeer(last));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(_: u64) -> bool {
        true
    }

    #[test]
    fn adding_a_voter_needs_a_started_quorum_and_every_voter_connected() {
        let three = [(1, true), (2, true), (3, true)];
        assert_eq!(reconfig_check(Reconfig::AddVoter, 1, &three, all), Ok(()));
        // One voter down: the 4-member quorum (3) would need it.
        assert_eq!(
            reconfig_check(Reconfig::AddVoter, 1, &three, |id| id != 3),
            Err(ApiError::Unhealthy)
        );
        // Two of three never started: 1 started < quorum 3 of 4.
        let unstarted = [(1, true), (2, false), (3, false)];
        assert_eq!(
            reconfig_check(Reconfig::AddVoter, 1, &unstarted, all),
            Err(ApiError::NotEnoughStartedMembers)
        );
        // Growing a one-member cluster (as after a restore) is allowed.
        assert_eq!(
            reconfig_check(Reconfig::AddVoter, 1, &[(1, true)], all),
            Ok(())
        );
    }

    #[test]
    fn removing_a_voter_keeps_an_active_quorum() {
        let three = [(1, true), (2, true), (3, true)];
        assert_eq!(
            reconfig_check(Reconfig::RemoveVoter(3), 1, &three, all),
            Ok(())
        );
        // Member 3 is down: removing it is safe.
        assert_eq!(
            reconfig_check(Reconfig::RemoveVoter(3), 1, &three, |id| id != 3),
            Ok(())
        );
        // Member 3 is down and 2 is removed: one active member left of the
        // two that remain.
        assert_eq!(
            reconfig_check(Reconfig::RemoveVoter(2), 1, &three, |id| id != 3),
            Err(ApiError::Unhealthy)
        );
        let unstarted = [(1, true), (2, true), (3, false)];
        assert_eq!(
            reconfig_check(Reconfig::RemoveVoter(2), 1, &unstarted, all),
            Err(ApiError::NotEnoughStartedMembers)
        );
    }

    #[test]
    fn promoting_counts_the_learner_as_started() {
        let one = [(1, true)];
        assert_eq!(reconfig_check(Reconfig::Promote, 1, &one, all), Ok(()));
        let unstarted = [(1, true), (2, false), (3, false)];
        assert_eq!(
            reconfig_check(Reconfig::Promote, 1, &unstarted, all),
            Err(ApiError::NotEnoughStartedMembers)
        );
    }
}
