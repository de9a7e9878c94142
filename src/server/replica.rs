//! The member's side of a self-growing cluster (a replica table, see
//! `crate::cluster`): answering a replica that looks for its cluster,
//! adding a replica as a learner, and the promotions and demotions the
//! leader's growth rule decides. The rule itself is `crate::cluster`'s.

use std::collections::{BTreeMap, BTreeSet};

use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use super::identity::{replica_member_id, token_hash};
use super::membership::{members_reply, rows};
use super::ops::{LeaderReply, MemberRow, Refusal};
use super::{Server, StartError};
use crate::config::url_string;
use crate::error::ApiError;
use crate::raft::MemberInfo;

/// A replica of a replica table asking where a peer stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiscoverRequest {
    /// [`token_hash`] of the table's token.
    pub token_hash: u64,
    pub replica_id: u64,
}

/// Where a replica stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// Still looking for its cluster.
    Discovering,
    /// Decided to form the cluster, forming it now.
    Bootstrapping,
    /// A member of cluster `cluster_id`, led by `leader` (member id, peer
    /// URL) if it knows a leader.
    Member {
        cluster_id: u64,
        member_id: u64,
        leader: Option<(u64, String)>,
    },
}

/// The answer to a [`DiscoverRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiscoverReply {
    /// The asker's token is this replica's.
    pub token_ok: bool,
    /// This replica's id in its table (0: not started from a table).
    pub replica_id: u64,
    pub standing: Standing,
}

/// The voter set and learners as the leader's growth rule sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles {
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
    /// Learners whose log has caught up with the leader's (promotable).
    pub caught_up: BTreeSet<u64>,
    /// A membership change is still in progress (joint configuration).
    pub changing: bool,
}

/// This member as the membership describes it: `name` and the peer and
/// client URLs it advertises.
pub(super) fn own_info(config: &crate::config::Config, name: &str) -> MemberInfo {
    MemberInfo {
        name: name.to_string(),
        peer_urls: config
            .initial_advertise_peer_urls
            .iter()
            .map(url_string)
            .collect(),
        client_urls: config
            .advertise_client_urls
            .iter()
            .map(url_string)
            .collect(),
    }
}

impl Server {
    /// Answer a replica looking for its cluster.
    pub(crate) fn serve_discover(&self, req: DiscoverRequest) -> DiscoverReply {
        let config = &self.inner.config;
        let id = &self.inner.identity;
        let leader = self
            .leader()
            .and_then(|l| self.peer_url_of(l).map(|url| (l, url)));
        DiscoverReply {
            token_ok: req.token_hash == token_hash(&config.initial_cluster_token),
            replica_id: config.growth.as_ref().map_or(0, |g| g.replica_id),
            standing: Standing::Member {
                cluster_id: id.cluster_id,
                member_id: id.member_id,
                leader,
            },
        }
    }

    /// The leader adds replica `replica_id` of its table as a learner (a
    /// no-op if it is a member already).
    pub(super) async fn add_replica(&self, replica_id: u64) -> Result<LeaderReply, Refusal> {
        let growth = self.inner.config.growth.as_ref().ok_or_else(|| {
            Refusal::Api(ApiError::Internal(
                "this cluster was not started from a replica table".into(),
            ))
        })?;
        let row = growth.table.replica(replica_id).ok_or_else(|| {
            Refusal::Api(ApiError::Internal(format!(
                "replica {replica_id} is not in the leader's replica table"
            )))
        })?;
        let id = replica_member_id(&growth.table.token, replica_id);
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        if membership.voter_ids().any(|v| v == id) {
            // It asks to join, so it starts from an empty data dir: a voter
            // without its log must not vote. A learner first; the rule
            // promotes it again once it has caught up.
            if id == self.inner.identity.member_id {
                return Err(Refusal::Api(ApiError::Internal(
                    "a replica cannot join through itself".into(),
                )));
            }
            let m = self.demote_replica(id).await?;
            tracing::warn!(
                replica = replica_id,
                member = format!("{id:x}"),
                "a voter's replica rejoins with an empty data dir: demoted to learner until it catches up"
            );
            return Ok(LeaderReply::Members {
                member: m.iter().find(|r| r.id == id).cloned(),
                members: m,
            });
        }
        if membership.get_node(&id).is_some() {
            return Ok(members_reply(&membership, id));
        }
        let info = MemberInfo {
            name: row.name.clone(),
            peer_urls: vec![url_string(&row.peer_url)],
            client_urls: vec![url_string(&row.client_url)],
        };
        let m = self
            .change_membership(ChangeMembers::AddNodes(BTreeMap::from([(id, info)])))
            .await?;
        tracing::info!(
            replica = replica_id,
            member = format!("{id:x}"),
            "replica joined as a learner"
        );
        Ok(members_reply(&m, id))
    }

    /// Voters, learners and which learners could be promoted, from this
    /// member's view (the leader's is the one that counts).
    pub(crate) fn roles(&self) -> Roles {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let m = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = m.voter_ids().collect();
        let learners: BTreeSet<u64> = m.learner_ids().collect();
        let last = metrics.last_log_index.unwrap_or(0);
        let caught_up = learners
            .iter()
            .copied()
            .filter(|id| {
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|l| l.index);
                // etcd's rule for promotion: 90% of the leader's log.
                matched.is_some_and(|m| m.saturating_mul(10) >= last.saturating_mul(9))
            })
            .collect();
        Roles {
            voters,
            learners,
            caught_up,
            changing: m.get_joint_config().len() > 1,
        }
    }

    /// Start a replica's Raft: the founder of a new cluster initializes it
    /// with itself as the only voter; a replica that joined waits for the
    /// leader's entries; a restarted one carries on.
    pub async fn bootstrap_replica(&self, founder: bool) -> Result<(), StartError> {
        if self.resume().await? {
            return Ok(());
        }
        if !founder {
            tracing::info!("waiting for the leader to replicate to this replica");
            return Ok(());
        }
        let me = own_info(&self.inner.config, &self.inner.identity.name);
        self.inner
            .raft
            .initialize(BTreeMap::from([(self.inner.identity.member_id, me)]))
            .await
            .map_err(|e| StartError::Raft(e.to_string()))
    }

    /// Whether member `id` answered this member within `window` (this
    /// member itself always has).
    pub(crate) fn answered_within(&self, id: u64, window: std::time::Duration) -> bool {
        id == self.inner.identity.member_id || self.inner.transport.is_active(id, window)
    }

    /// The leader makes learner `id` a voter.
    pub(crate) async fn promote_replica(&self, id: u64) -> Result<Vec<MemberRow>, Refusal> {
        self.ensure_leader()?;
        let m = self
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
            .await?;
        Ok(rows(&m))
    }

    /// The leader makes voter `id` a learner.
    pub(crate) async fn demote_replica(&self, id: u64) -> Result<Vec<MemberRow>, Refusal> {
        self.ensure_leader()?;
        let m = self
            .change_membership_retaining(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true)
            .await?;
        Ok(rows(&m))
    }
}
