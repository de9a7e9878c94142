//! Group commit in front of Raft.
//!
//! openraft 0.9 turns every `client_write` into its own log append, and each
//! append waits for a durable flush. Under concurrent load that would cost
//! one flush per request. The proposer queues client commands and, whenever
//! a proposal slot is free, proposes everything queued so far as one
//! [`Command::Batch`] entry: while one batch is being flushed the next one
//! fills up, so the batch size follows the load by itself (1 when idle).
//! Each command in a batch is still applied on its own with its own
//! revision, and each caller gets its own reply.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::Raft;
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
}

struct Pending {
    cmd: Command,
    reply: oneshot::Sender<Result<Reply, ProposeError>>,
}

/// Handle to the proposer task. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Proposer {
    /// Start the proposer for `raft`; it stops when every handle is dropped.
    pub fn start(raft: Raft) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        Self { tx }
    }

    /// Propose `cmd` and wait for its reply from the state machine.
    pub async fn propose(&self, cmd: Command) -> Result<Reply, ProposeError> {
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
    let (mut cmds, mut waiters): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let single = cmds.len() == 1;
    let cmd = match cmds.pop() {
        Some(only) if single => only,
        Some(last) => {
            cmds.push(last);
            Command::Batch(cmds)
        }
        None => return,
    };
    match raft.client_write(cmd).await {
        Ok(resp) => match resp.data {
            Reply::Batch(replies) if !single => {
                for (w, r) in waiters.into_iter().zip(replies) {
                    let _ = w.send(Ok(r));
                }
            }
            reply => {
                if let Some(w) = waiters.pop() {
                    let _ = w.send(Ok(reply));
                }
            }
        },
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
