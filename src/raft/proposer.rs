//! Group commit in front of Raft, proposed by the callers themselves.
//!
//! openraft 0.9 turns every `client_write` into its own log append, and each
//! append waits for a durable flush. Under concurrent load that would cost
//! one flush per request. So at most [`IN_FLIGHT`] proposals are in Raft at
//! once; a command that finds every slot taken waits in a queue, and when a
//! slot frees, everything queued so far goes into Raft as one
//! [`Proposal::Batch`] entry: while one batch is being flushed the next one
//! fills up, so the batch size follows the load by itself (1 when idle).
//! Each command in a batch is still applied on its own with its own
//! revision, and each caller gets its own reply.
//!
//! There is no proposer task: the caller that finds a free slot proposes
//! its command itself, and a slot that frees is handed to the first queued
//! caller, who proposes its command with everything queued behind it and
//! answers the others. An idle member's write thus crosses no task
//! boundary of ours: the request's task hands the entry to openraft and is
//! woken by the state machine's reply (before: request task → proposer
//! task → a task per batch → openraft → … → the batch task → the request
//! task). A proposing caller that is cancelled (its client went away)
//! leaves a task behind that answers its batch and passes the slot on.
//!
//! Every command is checked ([`check_command`]) before it is queued: this is
//! the one place all writes pass, from clients, peers and the lessor alike.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::error::ClientWriteError;

use super::{MemberInfo, Raft, TypeConfig};
use crate::mvcc::command::Proposal;
use crate::mvcc::validate::{check_command, Limits, Origin, Rejected};
use crate::mvcc::{Command, Reply};

/// Most commands in one batch.
const MAX_BATCH_COMMANDS: usize = 1024;
/// Most request bytes in one batch (etcd's largest request is 1.5 MiB).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Batches in flight at once. One: while a batch is flushed, replicated and
/// applied, the next one fills up. Two (one flushing, one being appended)
/// made batches half as large and cost more per write than the overlap
/// gained: 1 member, 64 clients, puts 23-26k/s with one against 22.8-23.4k
/// with two, 7-11% less CPU per put (docs/benchmarks.md, session 19).
const IN_FLIGHT: usize = 1;

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

/// What a queued caller is woken with.
enum Wake {
    /// Its command was applied (or failed).
    Done(Result<Reply, ProposeError>),
    /// A slot is its: propose this (its own command) and what is queued.
    Lead(Command),
}

struct Pending {
    cmd: Command,
    wake: tokio::sync::oneshot::Sender<Wake>,
}

#[derive(Default)]
struct Queue {
    /// Commands waiting for a slot. Never non-empty while a slot is free.
    pending: VecDeque<Pending>,
    /// Slots taken: batches proposed (or about to be) and not answered.
    in_flight: usize,
}

/// The slots and the queue of callers waiting for one.
#[derive(Default)]
struct Slots {
    queue: Mutex<Queue>,
}

impl Slots {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Take a free slot for `cmd` (`Ok`: propose it), or queue it.
    fn enter(self: &Arc<Self>, cmd: Command) -> Result<Command, Waiting> {
        let mut q = self.lock();
        if q.in_flight < IN_FLIGHT {
            q.in_flight += 1;
            return Ok(cmd);
        }
        let (wake, rx) = tokio::sync::oneshot::channel();
        q.pending.push_back(Pending { cmd, wake });
        Err(Waiting {
            rx,
            slots: self.clone(),
        })
    }

    /// `first` and what is queued behind it, within the batch limits, and
    /// the callers of the queued ones.
    fn batch(&self, first: Command) -> (Vec<Command>, Vec<tokio::sync::oneshot::Sender<Wake>>) {
        let mut q = self.lock();
        let mut bytes = first.size();
        let mut cmds = vec![first];
        let mut waiters = Vec::new();
        while cmds.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
            let Some(p) = q.pending.pop_front() else {
                break;
            };
            bytes += p.cmd.size();
            cmds.push(p.cmd);
            waiters.push(p.wake);
        }
        (cmds, waiters)
    }

    /// A batch was answered: hand its slot to the first queued caller, or
    /// free it.
    fn release(&self) {
        loop {
            let next = {
                let mut q = self.lock();
                match q.pending.pop_front() {
                    Some(p) => p,
                    None => {
                        q.in_flight = q.in_flight.saturating_sub(1);
                        return;
                    }
                }
            };
            // A caller that went away takes its command with it (never
            // proposed, never acknowledged); the slot goes to the next one.
            if next.wake.send(Wake::Lead(next.cmd)).is_ok() {
                return;
            }
        }
    }
}

struct Inner {
    raft: Raft,
    slots: Arc<Slots>,
}

/// Proposes commands to Raft in batches. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    inner: Arc<Inner>,
    limits: Limits,
}

type WriteResult =
    Result<openraft::raft::ClientWriteResponse<TypeConfig>, ClientWriteError<u64, MemberInfo>>;
type ReplyRx = tokio::sync::oneshot::Receiver<WriteResult>;

impl Proposer {
    /// A proposer for `raft`, checking commands against `limits`.
    pub fn new(raft: Raft, limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                raft,
                slots: Arc::default(),
            }),
            limits,
        }
    }

    /// Check `cmd` as coming from `origin`, propose it and wait for its reply
    /// from the state machine.
    pub async fn propose(&self, cmd: Command, origin: Origin) -> Result<Reply, ProposeError> {
        check_command(&cmd, origin, &self.limits).map_err(ProposeError::Rejected)?;
        let cmd = match self.inner.slots.enter(cmd) {
            Ok(cmd) => cmd,
            Err(waiting) => match waiting.wake().await {
                Ok(Wake::Done(r)) => return r,
                Ok(Wake::Lead(cmd)) => cmd,
                Err(_) => return Err(ProposeError::Stopped),
            },
        };
        self.lead(cmd).await
    }

    /// Holding a slot: propose `first` with what is queued, answer the
    /// others, pass the slot on, and return `first`'s reply.
    async fn lead(&self, first: Command) -> Result<Reply, ProposeError> {
        let (cmds, waiters) = self.inner.slots.batch(first);
        let proposal = match <[Command; 1]>::try_from(cmds) {
            Ok([only]) => Proposal::One(only),
            Err(cmds) => Proposal::Batch(cmds),
        };
        let mut flight = InFlight {
            slots: Some(self.inner.slots.clone()),
            waiters,
            rx: None,
        };
        match self.inner.raft.client_write_ff(proposal).await {
            Ok(rx) => {
                let rx = flight.rx.insert(rx);
                let result = rx.await;
                flight.rx = None;
                flight.finish(Some(result))
            }
            Err(_) => flight.finish(None),
        }
    }
}

/// A queued caller's end of its wake-up. Dropped unanswered (the caller
/// was cancelled) after a slot was handed to it, it passes the slot on.
struct Waiting {
    rx: tokio::sync::oneshot::Receiver<Wake>,
    slots: Arc<Slots>,
}

impl Waiting {
    async fn wake(mut self) -> Result<Wake, tokio::sync::oneshot::error::RecvError> {
        (&mut self.rx).await
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        // No slot can be handed over after this; one handed over before
        // is passed on.
        self.rx.close();
        if let Ok(Wake::Lead(_)) = self.rx.try_recv() {
            self.slots.release();
        }
    }
}

/// A batch in Raft and the slot it holds. Dropped unfinished (its caller
/// was cancelled), it finishes in a task of its own.
struct InFlight {
    /// `None` once finished.
    slots: Option<Arc<Slots>>,
    /// The callers of the batch's commands after the first.
    waiters: Vec<tokio::sync::oneshot::Sender<Wake>>,
    /// The state machine's reply, once proposed.
    rx: Option<ReplyRx>,
}

impl InFlight {
    /// Pass the slot on, answer the waiters from `result` (`None`: Raft
    /// stopped before the proposal), and return the first command's reply.
    fn finish(
        &mut self,
        result: Option<Result<WriteResult, tokio::sync::oneshot::error::RecvError>>,
    ) -> Result<Reply, ProposeError> {
        if let Some(slots) = self.slots.take() {
            slots.release();
        }
        let waiters = std::mem::take(&mut self.waiters);
        let answers: Result<Vec<Reply>, ProposeError> = match result {
            Some(Ok(Ok(resp))) => Ok(resp.data.into_replies()),
            Some(Ok(Err(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ProposeError::NotLeader(f.leader_id))
            }
            Some(Ok(Err(other))) => Err(ProposeError::Other(other.to_string())),
            Some(Err(_)) | None => Err(ProposeError::Stopped),
        };
        match answers {
            Ok(replies) => {
                if replies.len() != waiters.len() + 1 {
                    // Cannot happen: the state machine answers every command.
                    tracing::error!(
                        commands = waiters.len() + 1,
                        replies = replies.len(),
                        "a batch's replies do not match its commands"
                    );
                }
                let mut replies = replies.into_iter();
                let first = replies.next().ok_or(ProposeError::Stopped);
                for (w, r) in waiters.into_iter().zip(replies) {
                    let _ = w.send(Wake::Done(Ok(r)));
                }
                first
            }
            Err(e) => {
                for w in waiters {
                    let _ = w.send(Wake::Done(Err(e.clone())));
                }
                Err(e)
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.slots.is_none() {
            return;
        }
        let rx = self.rx.take();
        let mut rest = InFlight {
            slots: self.slots.take(),
            waiters: std::mem::take(&mut self.waiters),
            rx: None,
        };
        match (rx, tokio::runtime::Handle::try_current()) {
            (Some(rx), Ok(handle)) => {
                handle.spawn(async move {
                    let result = rx.await;
                    let _ = rest.finish(Some(result));
                });
            }
            _ => {
                let _ = rest.finish(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn cmd(id: i64) -> Command {
        Command::LeaseRevoke { id }
    }

    fn id(cmd: &Command) -> i64 {
        match cmd {
            Command::LeaseRevoke { id } => *id,
            other => panic!("{other:?}"),
        }
    }

    fn state(slots: &Slots) -> (usize, usize) {
        let q = slots.lock();
        (q.in_flight, q.pending.len())
    }

    #[test]
    fn callers_queue_behind_full_slots_and_a_freed_slot_goes_to_the_first() {
        let slots = Arc::new(Slots::default());
        for i in 0..IN_FLIGHT as i64 {
            assert_eq!(slots.enter(cmd(i)).map(|c| id(&c)).ok(), Some(i));
        }
        let (Err(first), Err(second)) = (slots.enter(cmd(10)), slots.enter(cmd(11))) else {
            panic!("a slot was free beyond {IN_FLIGHT}");
        };
        assert_eq!(state(&slots), (IN_FLIGHT, 2));
        slots.release();
        // The first queued caller leads: its own command first, then the
        // rest of the queue in one batch.
        let Some(Ok(Wake::Lead(c))) = first.wake().now_or_never() else {
            panic!("the first queued caller was not handed the slot");
        };
        let (cmds, waiters) = slots.batch(c);
        assert_eq!(cmds.iter().map(id).collect::<Vec<_>>(), vec![10, 11]);
        assert_eq!(state(&slots), (IN_FLIGHT, 0));
        for w in waiters {
            assert!(w.send(Wake::Done(Err(ProposeError::Stopped))).is_ok());
        }
        assert!(matches!(
            second.wake().now_or_never(),
            Some(Ok(Wake::Done(Err(ProposeError::Stopped))))
        ));
        for _ in 0..IN_FLIGHT {
            slots.release();
        }
        assert_eq!(state(&slots), (0, 0));
    }

    #[test]
    fn a_slot_handed_to_a_caller_that_went_away_is_passed_on() {
        let slots = Arc::new(Slots::default());
        for i in 0..IN_FLIGHT as i64 {
            assert!(slots.enter(cmd(i)).is_ok());
        }
        let (Err(gone), Err(next)) = (slots.enter(cmd(10)), slots.enter(cmd(11))) else {
            panic!("a slot was free beyond {IN_FLIGHT}");
        };
        // The slot reaches `gone`, which is dropped before it looks: the
        // slot must go to `next`, not be lost.
        slots.release();
        drop(gone);
        let Some(Ok(Wake::Lead(c))) = next.wake().now_or_never() else {
            panic!("the slot was lost with the caller that went away");
        };
        assert_eq!(id(&c), 11);
        assert_eq!(state(&slots), (IN_FLIGHT, 0));
        // A caller that went away before any slot came is skipped, and
        // with nobody left the slot is freed.
        let Err(early) = slots.enter(cmd(12)) else {
            panic!("a slot was free");
        };
        drop(early);
        slots.release();
        assert_eq!(state(&slots), (IN_FLIGHT - 1, 0));
        assert_eq!(slots.enter(cmd(13)).map(|c| id(&c)).ok(), Some(13));
    }
}
