//! Membership: the member list, and the leader's side of `member add`,
//! `remove`, `update`, `promote` and of a started member publishing its name
//! and client URLs, with etcd's strict reconfiguration check.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Membership};

use super::identity::new_member_id;
use super::ops::{LeaderReply, MemberRow, Refusal};
use super::{retry_until, Attempt, Server};
use crate::config::url_string;
use crate::error::ApiError;
use crate::raft::network::peer_url;
use crate::raft::MemberInfo;

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

pub(super) fn rows(m: &Membership<u64, MemberInfo>) -> Vec<MemberRow> {
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

pub(super) fn write_refusal(e: RaftError<u64, ClientWriteError<u64, MemberInfo>>) -> Refusal {
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
            // The leader stays up; the target goes: at least a quorum of
            // the remaining voters must be up (saturating: never underflows).
            if up.saturating_sub(1) < 1 + voters.len().saturating_sub(1) / 2 {
                return Err(ApiError::Unhealthy);
            }
        }
    }
    Ok(())
}

/// The membership after a change, as the Cluster API answers it: the member
/// concerned and every member.
pub(super) fn members_reply(m: &Membership<u64, MemberInfo>, id: u64) -> LeaderReply {
    let members = rows(m);
    let member = members.iter().find(|r| r.id == id).cloned();
    LeaderReply::Members { member, members }
}

impl Server {
    /// Every member in the local membership configuration.
    pub fn members(&self) -> Vec<MemberRow> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        rows(metrics.membership_config.membership())
    }

    /// Member `id` of the local membership, or etcd's "member not found".
    fn member(&self, id: u64) -> Result<MemberRow, ApiError> {
        self.members()
            .into_iter()
            .find(|r| r.id == id)
            .ok_or(ApiError::MemberNotFound)
    }

    /// The first peer URL of member `id`, the one its peers dial.
    /// (Once per forwarded write: the metrics are read in place, not
    /// cloned.)
    pub(crate) fn peer_url_of(&self, id: u64) -> Option<String> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .and_then(|n| peer_url(n).map(str::to_string))
    }

    /// Refuse `peer_urls` if a member other than `except` has one of them.
    fn check_urls_free(&self, peer_urls: &[String], except: Option<u64>) -> Result<(), ApiError> {
        let taken = self
            .members()
            .iter()
            .any(|m| Some(m.id) != except && m.peer_urls.iter().any(|u| peer_urls.contains(u)));
        if taken {
            return Err(ApiError::PeerUrlExists);
        }
        Ok(())
    }

    /// `member add`: a learner, or a voter (added as a learner, then
    /// promoted, in two membership changes).
    pub(super) async fn add_member(
        &self,
        peer_urls: Vec<String>,
        learner: bool,
    ) -> Result<LeaderReply, Refusal> {
        let peer_urls = normalize_urls(&peer_urls)?;
        self.check_urls_free(&peer_urls, None)?;
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
        Ok(members_reply(&m, id))
    }

    /// `member remove`.
    pub(super) async fn remove_member(&self, id: u64) -> Result<LeaderReply, Refusal> {
        let row = self.member(id)?;
        let change = if row.is_learner {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            self.strict_reconfig_check(Reconfig::RemoveVoter(id))?;
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        };
        let m = self.change_membership(change).await?;
        tracing::info!(member = format!("{id:x}"), "member removed");
        Ok(LeaderReply::Members {
            member: Some(row),
            members: rows(&m),
        })
    }

    /// `member update`: new peer URLs.
    pub(super) async fn update_member(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<LeaderReply, Refusal> {
        let peer_urls = normalize_urls(&peer_urls)?;
        let row = self.member(id)?;
        self.check_urls_free(&peer_urls, Some(id))?;
        let info = MemberInfo {
            name: row.name,
            peer_urls,
            client_urls: row.client_urls,
        };
        let m = self
            .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, info)])))
            .await?;
        Ok(members_reply(&m, id))
    }

    /// `member promote`: a learner that has caught up becomes a voter.
    pub(super) async fn promote_member(&self, id: u64) -> Result<LeaderReply, Refusal> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        if !self.member(id)?.is_learner {
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
        Ok(members_reply(&m, id))
    }

    /// A started member publishes its name and client URLs.
    pub(super) async fn publish_member(
        &self,
        id: u64,
        info: MemberInfo,
    ) -> Result<LeaderReply, Refusal> {
        let row = self.member(id)?;
        let m = if row.name == info.name && row.client_urls == info.client_urls {
            let metrics = self.inner.raft.metrics().borrow().clone();
            metrics.membership_config.membership().clone()
        } else {
            let info = MemberInfo {
                peer_urls: row.peer_urls,
                ..info
            };
            self.change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, info)])))
                .await?
        };
        Ok(members_reply(&m, id))
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

    /// One membership change, waiting while another one is in progress.
    pub(super) async fn change_membership(
        &self,
        change: ChangeMembers<u64, MemberInfo>,
    ) -> Result<Membership<u64, MemberInfo>, Refusal> {
        self.change_membership_retaining(change, false).await
    }

    /// As [`Self::change_membership`]; with `retain`, voters taken out of
    /// the voter set stay as learners (a demotion).
    pub(super) async fn change_membership_retaining(
        &self,
        change: ChangeMembers<u64, MemberInfo>,
        retain: bool,
    ) -> Result<Membership<u64, MemberInfo>, Refusal> {
        let raft = &self.inner.raft;
        retry_until(
            super::deadline(),
            |_| async {
                match raft.change_membership(change.clone(), retain).await {
                    Ok(resp) => resp
                        .membership
                        .map(Attempt::Done)
                        .ok_or_else(|| ApiError::Internal("no membership in reply".into()).into()),
                    Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                        ChangeMembershipError::InProgress(_),
                    ))) => Ok(Attempt::Retry),
                    Err(e) => Err(write_refusal(e)),
                }
            },
            || Refusal::Api(ApiError::Timeout),
        )
        .await
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
