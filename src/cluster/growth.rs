//! A replica's life in a grown cluster, once it is a member: it keeps its
//! row in the cluster configuration table, and while it leads it keeps the
//! voter set at the size the live replicas ask for.
//!
//! * **Rows.** Replica N keeps `/raftcd/replicas/N` (JSON: id, name, member
//!   id, last heartbeat time, whether it runs a member, its role), written
//!   every `heartbeat_interval_ms` under a lease of `dead_after_ms`
//!   (rounded up to whole seconds, at least the lease minimum). A dead
//!   replica stops refreshing, its lease expires, its row disappears.
//!   `etcdctl get /raftcd/replicas/ --prefix` shows the table.
//! * **Rule.** With L live replicas (rows present and members answering
//!   the leader within `dead_after_ms`, the leader counting itself) the cluster wants [`target_voters`]`(L)` voters: 1 for 1–2, 3
//!   for 3–4, 5 for 5 or more, capped by `max_voters`. The leader takes one
//!   step at a time ([`next_step`]): demote a dead voter to learner; else
//!   promote the lowest-id live learner that has caught up, while voters
//!   are too few; else demote the highest-id voter other than itself, while
//!   they are too many. Each step keeps a live majority in both the old and
//!   the new voter set (joint consensus needs both): a dead voter's
//!   demotion leaves the live voters as they were, and the other two steps
//!   are taken only when every voter is live.
//! * Members that are not replicas of the table (added with `etcdctl
//!   member add`) are left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::Growth;
use crate::error::ApiError;
use crate::pb::etcdserverpb::{LeaseGrantRequest, PutRequest, RangeRequest};
use crate::server::identity::replica_member_id;
use crate::server::ops::Refusal;
use crate::server::Server;

/// The prefix of the cluster configuration table.
pub const ROWS_PREFIX: &str = "/raftcd/replicas/";

/// One replica's row, as stored (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub id: u64,
    pub name: String,
    /// The member id, hexadecimal as etcdctl prints it.
    pub member_id: String,
    /// When the replica last refreshed its row (milliseconds since the Unix
    /// epoch, its own clock).
    pub heartbeat_ms: u64,
    pub runs_node: bool,
    /// "voter", "learner" or "none".
    pub role: String,
}

/// How many voters `live` live replicas call for, at most `max_voters`.
pub fn target_voters(live: usize, max_voters: usize) -> usize {
    let want = match live {
        0..=2 => 1,
        3..=4 => 3,
        _ => 5,
    };
    want.min(max_voters.max(1))
}

/// The membership as the rule sees it, by replica id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
    /// Learners whose log has caught up with the leader's.
    pub caught_up: BTreeSet<u64>,
    /// Replicas whose row is present (the leader's included).
    pub live: BTreeSet<u64>,
    /// The leader's replica id.
    pub leader: u64,
}

/// One membership change of the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Promote(u64),
    Demote(u64),
}

/// The next change towards `target_voters(live)` voters, if any.
pub fn next_step(c: &Census, max_voters: usize) -> Option<Step> {
    let target = target_voters(c.live.len(), max_voters);
    let dead_voter = c
        .voters
        .iter()
        .rev()
        .find(|v| !c.live.contains(v) && **v != c.leader);
    if let Some(&d) = dead_voter {
        return Some(Step::Demote(d));
    }
    if c.voters.len() < target {
        let ready = c
            .learners
            .iter()
            .find(|l| c.live.contains(l) && c.caught_up.contains(l));
        if let Some(&p) = ready {
            return Some(Step::Promote(p));
        }
    }
    if c.voters.len() > target {
        if let Some(&d) = c.voters.iter().rev().find(|v| **v != c.leader) {
            return Some(Step::Demote(d));
        }
    }
    None
}

/// Keep this replica's row and, while leading, the voter set, until the
/// member shuts down.
pub async fn run(server: Server, growth: Growth) {
    let mut shutdown = server.shutdown_signal();
    let mut tick = tokio::time::interval(growth.table.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lease: Option<i64> = None;
    let mut row_problem: Option<String> = None;
    let mut rule_problem: Option<String> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let refreshed = refresh_row(&server, &growth, &mut lease).await;
        note(&mut row_problem, refreshed, "refreshing this replica's row");
        // The steps one tick calls for are taken one after the other (each
        // waits for its membership change to commit), not a tick apart.
        for _ in 0..MAX_STEPS_PER_TICK {
            if server.leader() != Some(server.identity().member_id) {
                break;
            }
            let ruled = apply_rule(&server, &growth).await;
            let stepped = matches!(ruled, Ok(true));
            note(
                &mut rule_problem,
                ruled.map(|_| ()),
                "keeping the voter count",
            );
            if !stepped {
                break;
            }
        }
    }
}

/// Log a problem once (not every tick), and once when it is gone.
fn note(last: &mut Option<String>, result: Result<(), String>, what: &str) {
    match result {
        Ok(()) => {
            if last.take().is_some() {
                tracing::info!("{what}: working again");
            }
        }
        Err(e) => {
            if last.as_deref() != Some(e.as_str()) {
                tracing::warn!(error = %e, "{what} failed; retrying every heartbeat");
            }
            *last = Some(e);
        }
    }
}

/// Write this replica's row under its lease (granting a new lease when the
/// old one is gone).
async fn refresh_row(
    server: &Server,
    growth: &Growth,
    lease: &mut Option<i64>,
) -> Result<(), String> {
    if let Some(id) = *lease {
        let alive = server
            .lease_keep_alive(id)
            .await
            .map_err(|e| e.to_string())?;
        if alive.ttl <= 0 {
            *lease = None;
        }
    }
    let id = match *lease {
        Some(id) => id,
        None => {
            let ttl = growth.table.dead_after.as_millis().div_ceil(1000) as i64;
            let granted = server
                .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                .await
                .map_err(|e| e.to_string())?;
            *lease = Some(granted.id);
            granted.id
        }
    };
    let me = server.identity().member_id;
    let roles = server.roles();
    let role = if roles.voters.contains(&me) {
        "voter"
    } else if roles.learners.contains(&me) {
        "learner"
    } else {
        "none"
    };
    let replica = growth.replica();
    let row = Row {
        id: replica.id,
        name: replica.name.clone(),
        member_id: format!("{me:x}"),
        heartbeat_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        runs_node: true,
        role: role.into(),
    };
    let value = serde_json::to_vec(&row).map_err(|e| e.to_string())?;
    let put = server
        .put(PutRequest {
            key: Bytes::from(format!("{ROWS_PREFIX}{}", replica.id)),
            value: value.into(),
            lease: id,
            ..Default::default()
        })
        .await;
    match put {
        Ok(_) => Ok(()),
        Err(ApiError::Mvcc(e)) => {
            // Most likely the lease expired between keep-alive and put.
            *lease = None;
            Err(e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The replica ids whose rows are present.
fn live_replicas(server: &Server) -> Result<BTreeSet<u64>, String> {
    let view = server.view();
    let rows = view
        .range(
            &RangeRequest {
                key: Bytes::from_static(ROWS_PREFIX.as_bytes()),
                range_end: crate::mvcc::prefix_end(ROWS_PREFIX.as_bytes()),
                keys_only: true,
                ..Default::default()
            },
            view.revision,
        )
        .map_err(|e| e.to_string())?;
    Ok(rows
        .kvs
        .iter()
        .filter_map(|kv| {
            std::str::from_utf8(&kv.key)
                .ok()?
                .strip_prefix(ROWS_PREFIX)?
                .parse()
                .ok()
        })
        .collect())
}

/// The most steps of the rule taken in one heartbeat.
const MAX_STEPS_PER_TICK: usize = 4;

/// One step of the rule, on the leader; whether it took one.
async fn apply_rule(server: &Server, growth: &Growth) -> Result<bool, String> {
    let roles = server.roles();
    if roles.changing {
        return Ok(false);
    }
    let table = &growth.table;
    let by_member: BTreeMap<u64, u64> = table
        .members()
        .map(|r| (replica_member_id(&table.token, r.id), r.id))
        .collect();
    let ids = |set: &BTreeSet<u64>| -> BTreeSet<u64> {
        set.iter()
            .filter_map(|m| by_member.get(m).copied())
            .collect()
    };
    // Live: the row is there, and the member answers the leader (its own
    // status, not only what it last wrote).
    let mut live = live_replicas(server)?;
    live.retain(|id| {
        table.replica(*id).is_some_and(|r| r.run_node)
            && server.answered_within(replica_member_id(&table.token, *id), table.dead_after)
    });
    live.insert(growth.replica_id);
    let census = Census {
        voters: ids(&roles.voters),
        learners: ids(&roles.learners),
        caught_up: ids(&roles.caught_up),
        live,
        leader: growth.replica_id,
    };
    let Some(step) = next_step(&census, table.max_voters) else {
        return Ok(false);
    };
    let member = |replica: u64| replica_member_id(&table.token, replica);
    let done = match step {
        Step::Promote(r) => server.promote_replica(member(r)).await,
        Step::Demote(r) => server.demote_replica(member(r)).await,
    };
    match done {
        Ok(rows) => {
            let voters = rows.iter().filter(|r| !r.is_learner).count();
            tracing::info!(
                ?step,
                live = census.live.len(),
                target = target_voters(census.live.len(), table.max_voters),
                voters,
                "voter set changed"
            );
            Ok(true)
        }
        Err(Refusal::NotLeader(_)) => Ok(false),
        Err(Refusal::Api(e)) => Err(format!("{step:?}: {e}")),
    }
}

/// How long after a replica's death the leader can notice it: the row's
/// lease (whole seconds) plus a heartbeat.
pub fn notice_after(growth: &Growth) -> Duration {
    let secs = growth.table.dead_after.as_millis().div_ceil(1000) as u64;
    Duration::from_secs(secs) + growth.table.heartbeat_interval
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    fn census(voters: &[u64], learners: &[u64], live: &[u64], leader: u64) -> Census {
        Census {
            voters: set(voters),
            learners: set(learners),
            caught_up: set(learners),
            live: set(live),
            leader,
        }
    }

    #[test]
    fn the_voter_count_follows_the_live_replicas() {
        let want: Vec<usize> = (0..=8).map(|n| target_voters(n, 5)).collect();
        assert_eq!(want, [1, 1, 1, 3, 3, 5, 5, 5, 5]);
        assert_eq!(target_voters(5, 3), 3);
        assert_eq!(target_voters(7, 1), 1);
    }

    /// Apply the rule until it rests; every step keeps a live majority of
    /// the old and the new voter set.
    fn settle(mut c: Census, max: usize) -> Census {
        for _ in 0..20 {
            let Some(step) = next_step(&c, max) else {
                return c;
            };
            let before = c.voters.clone();
            match step {
                Step::Promote(r) => {
                    assert!(c.learners.remove(&r));
                    c.voters.insert(r);
                }
                Step::Demote(r) => {
                    assert_ne!(r, c.leader, "the leader never demotes itself");
                    assert!(c.voters.remove(&r));
                    c.learners.insert(r);
                    c.caught_up.insert(r);
                }
            }
            for config in [&before, &c.voters] {
                let live = config.iter().filter(|v| c.live.contains(v)).count();
                assert!(live * 2 > config.len(), "{step:?} loses quorum: {c:?}");
            }
        }
        panic!("the rule does not settle: {c:?}");
    }

    #[test]
    fn replicas_starting_one_by_one_give_1_1_3_3_5_voters() {
        let mut c = census(&[1], &[], &[1], 1);
        let mut counts = Vec::new();
        for n in 1..=5u64 {
            if n > 1 {
                c.learners.insert(n);
                c.caught_up.insert(n);
                c.live.insert(n);
            }
            c = settle(c, 5);
            counts.push(c.voters.len());
        }
        assert_eq!(counts, [1, 1, 3, 3, 5]);
        assert_eq!(c.voters, set(&[1, 2, 3, 4, 5]));
    }

    #[test]
    fn lowest_caught_up_learners_are_promoted_first() {
        let mut c = census(&[4], &[1, 2, 3], &[1, 2, 3, 4], 4);
        c.caught_up = set(&[2, 3]);
        assert_eq!(next_step(&c, 5), Some(Step::Promote(2)));
        let c = settle(c, 5);
        assert_eq!(c.voters, set(&[2, 3, 4]));
    }

    #[test]
    fn a_dead_voter_is_replaced() {
        // Five voters, the leader's replica 1 died; 2 leads now.
        let c = census(&[1, 2, 3, 4, 5], &[], &[2, 3, 4, 5], 2);
        assert_eq!(next_step(&c, 5), Some(Step::Demote(1)));
        let c = settle(c, 5);
        assert_eq!(c.voters.len(), 3);
        assert!(c.voters.contains(&2) && !c.voters.contains(&1));
        // Replica 1 returns as a learner and is promoted again.
        let mut back = c.clone();
        back.live.insert(1);
        let back = settle(back, 5);
        assert_eq!(back.voters, set(&[1, 2, 3, 4, 5]));
    }

    #[test]
    fn three_voters_losing_one_go_down_to_one() {
        let c = settle(census(&[1, 2, 3], &[], &[1, 2], 1), 5);
        assert_eq!(c.voters, set(&[1]));
        // With a sixth live learner instead, the dead voter is replaced.
        let c = settle(census(&[1, 2, 3], &[4, 5], &[1, 2, 4, 5], 2), 5);
        assert_eq!(c.voters.len(), 3);
        assert!(!c.voters.contains(&3));
    }

    #[test]
    fn learners_not_caught_up_wait_and_max_voters_caps() {
        let mut c = census(&[1], &[2, 3], &[1, 2, 3], 1);
        c.caught_up.clear();
        assert_eq!(next_step(&c, 5), None);
        let c = settle(census(&[1], &[2, 3, 4, 5, 6], &[1, 2, 3, 4, 5, 6], 1), 3);
        assert_eq!(c.voters, set(&[1, 2, 3]));
    }
}
