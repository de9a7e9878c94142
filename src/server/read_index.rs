//! Linearizable reads share read-index rounds, as etcd's linearizable read
//! loop does: every read that arrives while a round is in flight waits for
//! the next one, and one round — the leader confirming its leadership with a
//! quorum, or a follower asking the leader once over the peer port — serves
//! all of them. Under load that is one round trip per batch of reads
//! instead of one per read.
//!
//! Why it is safe: a round starts only after every read it serves arrived
//! (the waiters are taken from the queue before the round begins), so the
//! index it returns is the leader's commit index at some moment after each
//! read was invoked; each read then waits until this member applied that
//! far before it looks at the view.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::oneshot;

use super::ops::Refusal;
use super::{Server, REQUEST_TIMEOUT};
use crate::error::ApiError;
use crate::raft::network::Rpc;

/// The result of one round: the read index, or why there is none (nobody
/// leads, leadership moved, the peer port failed, the member stopped).
pub(crate) type RoundResult = Result<u64, Refusal>;

/// The queue of reads waiting for the next round, and whether a round is
/// being driven.
#[derive(Default)]
pub(crate) struct ReadBatcher {
    state: Mutex<Queue>,
    rounds: AtomicU64,
    reads: AtomicU64,
}

#[derive(Default)]
struct Queue {
    driving: bool,
    waiters: Vec<oneshot::Sender<RoundResult>>,
}

impl ReadBatcher {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Read-index rounds run so far on this member (`/metrics`).
    pub(crate) fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Reads served by those rounds (`/metrics`).
    pub(crate) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

impl Server {
    /// A read index for a linearizable read that arrived now: joins the
    /// next round (starting one if none is being driven); the receiver gets
    /// its result (closed: the member stopped). The round runs on a task of
    /// its own, so a caller that gives up (its client went away) never
    /// strands the others. (A plain function returning a concrete type: an
    /// `async fn` here made every caller's future too deep for the
    /// compiler's layout queries.)
    pub(crate) fn read_index(&self) -> oneshot::Receiver<RoundResult> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.inner.reads.queue();
            q.waiters.push(tx);
            !std::mem::replace(&mut q.driving, true)
        };
        if start {
            spawn_driver(self.clone());
        }
        rx
    }

    /// Run rounds while reads wait: take every waiter queued so far, run
    /// one round for all of them, answer them; stop when the queue is empty.
    async fn drive_read_rounds(&self) {
        loop {
            let waiters = {
                let mut q = self.inner.reads.queue();
                if q.waiters.is_empty() {
                    q.driving = false;
                    return;
                }
                std::mem::take(&mut q.waiters)
            };
            let batcher = &self.inner.reads;
            batcher.rounds.fetch_add(1, Ordering::Relaxed);
            batcher
                .reads
                .fetch_add(waiters.len() as u64, Ordering::Relaxed);
            let result = self.read_round().await;
            for w in waiters {
                let _ = w.send(result.clone());
            }
        }
    }

    /// One round: the leader confirms its leadership with a quorum and
    /// gives its commit index; a follower asks the leader for that.
    async fn read_round(&self) -> RoundResult {
        let me = self.inner.identity.member_id;
        let bound = Duration::from_millis(self.inner.config.election_timeout_ms.max(500) * 2)
            .min(REQUEST_TIMEOUT);
        match self.leader() {
            None => Err(Refusal::NotLeader(None)),
            Some(l) if l == me => {
                match tokio::time::timeout(bound, self.inner.raft.get_read_log_id()).await {
                    Err(_) => Err(Refusal::Api(ApiError::Timeout)),
                    Ok(Ok((read, _applied))) => Ok(read.map_or(0, |l| l.index)),
                    Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                        Err(Refusal::NotLeader(f.leader_id))
                    }
                    Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)))) => {
                        Err(Refusal::Api(ApiError::Internal(q.to_string())))
                    }
                    Ok(Err(RaftError::Fatal(_))) => Err(Refusal::Api(ApiError::Stopped)),
                }
            }
            Some(l) => {
                let Some(url) = self.peer_url_of(l) else {
                    return Err(Refusal::NotLeader(Some(l)));
                };
                match self
                    .inner
                    .transport
                    .call_typed::<(), RoundResult>(Rpc::ReadIndex, l, &url, &(), bound)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(error = %e, "read index failed");
                        Err(Refusal::Api(ApiError::Timeout))
                    }
                }
            }
        }
    }
}

/// Start the task that drives rounds. A plain function, so that the
/// futures of the reads that call it do not carry the driver's type (and
/// the compiler need not prove it `Send` inside every caller's future).
fn spawn_driver(server: Server) {
    tokio::spawn(async move { server.drive_read_rounds().await });
}
