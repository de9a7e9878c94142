//! Group commit in front of Raft.
//!
//! openraft 0.9 turns every `client_write` into its own log append, and each
//! append waits for a durable flush. Under concurrent load that would cost
//! one flush per request. The proposer queues client commands and, whenever
//! a proposal slot is free, proposes everything queued so far as one
//! [`Proposal::Batch`] entry: while one batch is being flushed the next one
//! fills up, so the batch size follows the load by itself (1 when idle).
//! Each command in a batch is still applied on its own with its own
//! revision, and each caller gets its own reply.
//!
//! Every command is checked ([`check_command`]) before it is queued: this is
//! the one place all writes pass, from clients, peers and the lessor alike.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::Raft;
use crate::mvcc::command::Proposal;
use crate::mvcc::validate::{check_command, Limits, Origin, Rejected};
use crate::mvcc::{Command, Reply};

/// Most commands in one batch.
const MAX_BATCH_COMMANDS: usize = 1024;
/// Most request bytes in one batch (etcd's largest request is 1.5 MiB).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Batches in flight at once: one flushing, one more being appended.
const IN_FLIGHT: usize = 2;

/// Why a proposal did not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// This member is not the leader (the leader's id, if known).
    NotLeader(Option<u64>),
    /// Raft has stopped.
    Stopped,
    /// Any other Raft error (e.g. a membership change in progress).
    Other(String),
    /// The command failed its check; nothing was proposed.
    Rejected(Rejected),
}

struct Pending {
    cmd: Command,
    reply: oneshot::Sender<Result<Reply, ProposeError>>,
}

/// Handle to the proposer task. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Pending>,
    limits: Limits,
}

impl Proposer {
    /// Start the proposer for `raft`, checking commands against `limits`; it
    /// stops when every handle is dropped.
    pub fn start(raft: Raft, limits: Limits) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        Self { tx, limits }
    }

    /// Check `cmd` as coming from `origin`, propose it and wait for its reply
    /// from the state machine.
    pub async fn propose(&self, cmd: Command, origin: Origin) -> Result<Reply, ProposeError> {
        check_command(&cmd, origin, &self.limits).map_err(ProposeError::Rejected)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { cmd, reply })
            .map_err(|_| ProposeError::Stopped)?;
        rx.await.unwrap_or(Err(ProposeError::Stopped))
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Wait for a free slot first: what arrives meanwhile joins this batch.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.cmd.size();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.cmd.size();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose_batch(&raft, batch).await;
            drop(permit);
        });
    }
}

async fn propose_batch(raft: &Raft, batch: Vec<Pending>) {
    let (cmds, waiters): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let proposal = match <[Command; 1]>::try_from(cmds) {
        Ok([only]) => Proposal::One(only),
        Err(cmds) if cmds.is_empty() => return,
        Err(cmds) => Proposal::Batch(cmds),
    };
    match raft.client_write(proposal).await {
        Ok(resp) => {
            let replies = resp.data.into_replies();
            let missing = waiters.len().saturating_sub(replies.len());
            if missing > 0 {
                // Cannot happen: the state machine answers every command.
                tracing::error!(missing, "fewer replies than commands in a batch");
            }
            for (w, r) in waiters.into_iter().zip(replies) {
                let _ = w.send(Ok(r));
            }
        }
        Err(e) => {
            let err = match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                    ProposeError::NotLeader(f.leader_id)
                }
                RaftError::APIError(other) => ProposeError::Other(other.to_string()),
                RaftError::Fatal(_) => ProposeError::Stopped,
            };
            for w in waiters {
                let _ = w.send(Err(err.clone()));
            }
        }
    }
}
