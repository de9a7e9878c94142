//! The background tasks of a member, each spawned with [`Server::spawn`]
//! (so shutdown stops them): the leader's lease ticker, snapshot triggers,
//! the probe of a member that hears from no leader, and the Raft metrics
//! mirror.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::ops::Refusal;
use super::{RaftState, Server};
use crate::error::ApiError;
use crate::lessor::{Clock, MAX_REVOKES_PER_TICK, TICK};
use crate::mvcc::validate::Origin;
use crate::mvcc::{Command, MvccError};
use crate::raft::network::Rpc;
use crate::raft::Raft;

/// The leader's expiry ticker, spawned by [`Server::start_background`]: every [`TICK`],
/// persist keep-alive refreshes and revoke expired leases through Raft.
pub(super) async fn run_lessor(server: Server) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        let view = server.view();
        let lessor = &server.inner.lessor;
        let work = lessor.tick(
            &view,
            server.leader_term(),
            Clock::now(),
            MAX_REVOKES_PER_TICK,
        );
        if !work.checkpoint.is_empty() {
            let n = work.checkpoint.len();
            let cmd = Command::LeaseCheckpoint {
                refreshes: work.checkpoint,
            };
            if let Err(e) = server.write(cmd, Origin::Internal).await {
                tracing::warn!(error = %e, leases = n, "lease checkpoint failed");
            }
        }
        for id in work.revoke {
            match server
                .write(Command::LeaseRevoke { id }, Origin::Internal)
                .await
            {
                Ok(_) => tracing::debug!(lease = format!("{id:016x}"), "lease expired and revoked"),
                // Revoked by a client meanwhile.
                Err(ApiError::Mvcc(MvccError::LeaseNotFound)) => {}
                // Tried again next tick.
                Err(e) => {
                    tracing::warn!(lease = format!("{id:016x}"), error = %e, "revoking an expired lease failed")
                }
            }
        }
    }
}

/// Build a snapshot whenever the state machine says `--snapshot-count`
/// requests were applied since the last one.
pub(super) async fn trigger_snapshots(
    raft: Raft,
    mut due: tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    while due.recv().await.is_some() {
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}

/// A member that stops hearing from a leader asks its peers, every three
/// election timeouts, whether it still belongs to the cluster. A member
/// removed while it was down learns it this way: a voter would be told when
/// it campaigns, but a learner never campaigns and no leader replicates to
/// it any more. Its peers refuse the probe (a read-index request) with
/// "removed", and the member stops (see [`Server::refused`]).
pub(super) async fn probe_when_unled(node: Server, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_millis(
        node.inner
            .config
            .election_timeout_ms
            .max(100)
            .saturating_mul(3),
    );
    let me = node.inner.identity.member_id;
    // Said once when the leader is gone for a whole period, once when back.
    let mut unled_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
        match (node.quorum_problem(), unled_since) {
            (Some(problem), None) => {
                tracing::warn!(%problem, "the cluster has no leader");
                unled_since = Some(tokio::time::Instant::now());
            }
            (None, Some(since)) => {
                tracing::info!(after = ?since.elapsed(), "the cluster has a leader again");
                unled_since = None;
            }
            _ => {}
        }
        let leads = node.inner.raft.metrics().borrow().current_leader == Some(me);
        if leads || node.inner.leader_contact.elapsed() < period {
            continue;
        }
        for row in node.members() {
            let Some(url) = row.peer_urls.first().filter(|_| row.id != me) else {
                continue;
            };
            tracing::debug!(
                peer = format!("{:x}", row.id),
                "no leader contact: probing a peer"
            );
            let _: Result<Result<u64, Refusal>, _> = node
                .inner
                .transport
                .call_typed(Rpc::ReadIndex, row.id, url, &(), period)
                .await;
        }
    }
}

/// Mirror Raft's term, leader and membership into [`RaftState`] for
/// lock-free readers. From `Raft::server_metrics`, which openraft sends
/// only when one of them changes: `Raft::metrics` is sent on every turn of
/// its core's loop, several times per write, changed or not, and each send
/// woke this task (often on the other worker thread: 1 member, 1 client,
/// 5.9 context switches per put against 3.3 with one worker thread).
pub(super) async fn track_metrics(raft: Raft, state: Arc<RaftState>) {
    let mut m = raft.server_metrics();
    loop {
        {
            let cur = m.borrow_and_update();
            state
                .term
                .store(cur.vote.leader_id().get_term(), Ordering::Relaxed);
            let leader = cur.current_leader.unwrap_or(0);
            let before = state.leader.swap(leader, Ordering::Relaxed);
            if leader != 0 && leader != before {
                state.leader_changes.fetch_add(1, Ordering::Relaxed);
            }
            let membership = cur.membership_config.membership();
            let learner = membership.get_node(&cur.id).is_some()
                && !membership.voter_ids().any(|v| v == cur.id);
            state.is_learner.store(learner, Ordering::Relaxed);
        }
        if m.changed().await.is_err() {
            return;
        }
    }
}
