//! The Maintenance service's work: status, hashes, defragment, backups,
//! and the figures `/metrics` reports. The walks over the whole store run
//! on the blocking pool, never on a runtime worker.

use std::sync::atomic::Ordering;

use super::Server;
use crate::config::{ETCD_CLUSTER_VERSION, ETCD_VERSION};
use crate::error::ApiError;
use crate::pb::etcdserverpb::StatusResponse;

impl Server {
    /// What `endpoint status` shows.
    pub fn status(&self) -> StatusResponse {
        let view = self.view();
        let size = self.inner.storage.size_on_disk() as i64;
        let rs = &self.inner.raft_state;
        let (raft_index, raft_applied_index) = self.raft_indexes();
        StatusResponse {
            header: Some(self.header(view.revision)),
            version: ETCD_VERSION.to_string(),
            db_size: size,
            leader: rs.leader.load(Ordering::Relaxed),
            raft_index,
            raft_term: rs.term.load(Ordering::Relaxed),
            raft_applied_index,
            errors: self
                .tls_warnings()
                .into_iter()
                .chain(self.quorum_problem())
                .collect(),
            db_size_in_use: size,
            is_learner: self.is_learner(),
        }
    }

    /// Why this member sees no leader, if it sees none: how many voters it
    /// can reach against the quorum the cluster needs (shown by `endpoint
    /// status` in its errors column, and logged once by the unled probe).
    pub fn quorum_problem(&self) -> Option<String> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        if metrics.current_leader.is_some() {
            return None;
        }
        let me = self.inner.identity.member_id;
        let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
        if voters.is_empty() {
            return Some("no leader: this member has not joined a cluster yet".into());
        }
        let window = std::time::Duration::from_millis(
            self.inner
                .config
                .election_timeout_ms
                .max(100)
                .saturating_mul(8),
        );
        let reachable = voters
            .iter()
            .filter(|v| **v == me || self.inner.transport.is_active(**v, window))
            .count();
        let quorum = voters.len() / 2 + 1;
        Some(if reachable < quorum {
            format!(
                "no leader: quorum lost ({reachable} of {} voters reachable, a quorum is {quorum}); writes fail until enough voters return",
                voters.len()
            )
        } else {
            format!(
                "no leader: an election is under way ({reachable} of {} voters reachable)",
                voters.len()
            )
        })
    }

    /// Defragment: write the state file now (a snapshot) and purge the log
    /// behind it, so compacted history and old log segments leave the
    /// disk. Returns the revision it reached.
    pub async fn defragment(&self) -> Result<i64, ApiError> {
        let raft = &self.inner.raft;
        let applied = raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
        let deadline = super::deadline();
        let mut metrics = raft.metrics();
        loop {
            let snapshot = metrics.borrow().snapshot.map_or(0, |l| l.index);
            if snapshot >= applied {
                break;
            }
            // Ignored while a snapshot is being built; asked again once
            // that one is done, if it did not reach `applied`.
            raft.trigger()
                .snapshot()
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return Err(ApiError::Internal("raft stopped".into()));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return Err(ApiError::Timeout),
            }
        }
        Ok(self.view().revision)
    }

    /// The hash of the store's history up to `revision` (0: all of it) and
    /// the current revision, computed off the runtime's workers.
    pub async fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), ApiError> {
        let view = self.view();
        let (current, compact) = (view.revision, view.compact_revision);
        let hashed = tokio::task::spawn_blocking(move || view.hash_kv(revision))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        Ok((hashed.0, current, compact))
    }

    /// A backup of the current store (`etcdctl snapshot save`) and the
    /// revision it holds, encoded off the runtime's workers.
    pub async fn backup(&self) -> Result<(Vec<u8>, i64), ApiError> {
        let view = self.view();
        let revision = view.revision;
        let bytes = tokio::task::spawn_blocking(move || crate::backup::write_backup(&view))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Internal(format!("cannot encode the backup: {e}")))?;
        Ok((bytes, revision))
    }

    /// This member's last log index and last applied index, read from
    /// Raft's metrics when asked (they change with every write).
    fn raft_indexes(&self) -> (u64, u64) {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        (
            m.last_log_index.unwrap_or(0),
            m.last_applied.map_or(0, |l| l.index),
        )
    }

    /// What `/metrics` reports about this member.
    pub fn metrics_figures(&self) -> crate::metrics::NodeFigures {
        let s = &self.inner.raft_state;
        let (last_log_index, applied_index) = self.raft_indexes();
        let leader = s.leader.load(Ordering::Relaxed);
        let view = self.view();
        let streams = self.inner.transport.stream_counts();
        crate::metrics::NodeFigures {
            member_id: self.inner.identity.member_id,
            has_leader: leader != 0,
            is_leader: leader == self.inner.identity.member_id,
            is_learner: s.is_learner.load(Ordering::Relaxed),
            leader_changes: s.leader_changes.load(Ordering::Relaxed),
            read_index_rounds: self.inner.reads.rounds(),
            read_index_reads: self.inner.reads.reads(),
            forward_streams_opened: streams.forward_streams_opened,
            forwarded_on_stream: streams.forwarded_on_stream,
            forwarded_by_call: streams.forwarded_by_call,
            append_streams_opened: streams.append_streams_opened,
            appends_on_stream: streams.appends_on_stream,
            term: s.term.load(Ordering::Relaxed),
            applied_index,
            last_log_index,
            db_size: self.inner.storage.size_on_disk(),
            keys: view.live_keys(),
            revision: view.revision,
            compact_revision: view.compact_revision,
            server_version: ETCD_VERSION,
            cluster_version: ETCD_CLUSTER_VERSION,
        }
    }
}
