//! A connection's HTTP/2 streams run inside the connection's own task.
//!
//! hyper hands each HTTP/2 stream (a request and its response) to an
//! executor; with tokio's, every request is a task of its own: spawned
//! (allocated, scheduled), woken by the connection task when its request
//! arrives, and waking the connection task to write its response. Here the
//! executor ([`InConn`]) only queues the stream, and the connection's task
//! ([`Driven`]) polls the connection and its streams together: a request
//! whose answer is ready (a serializable read) is read, answered and
//! written in one poll, and one waiting on Raft costs one wake-up when its
//! reply comes instead of two.
//!
//! The peer network's client connections run the same way: hyper's client
//! hands its executor the h2 connection itself and, per request, the future
//! that pipes the request body and the one that waits for the response; in
//! the connection's task, a message written to a peer stream reaches the
//! socket in the poll that reads it from the stream's body.
//!
//! Wake-ups from inside that poll (h2 waking the connection for a response
//! a stream just queued) do not reschedule the task: they mark it for one
//! more round of the same poll ([`BUSY`] becomes [`WOKEN`]), so the task
//! does not yield to itself through the scheduler. The rounds of one poll are bounded
//! ([`MAX_ROUNDS`], and by tokio's cooperative budget); past them the task
//! wakes itself and yields, so a busy connection does not hold its worker.
//!
//! What a connection's streams give up is running on two workers at once.
//! So only [`MAX_INLINE`] streams of a connection run in its task at a time;
//! more are spawned as tasks of their own, as hyper would have. A client
//! that sends everything over one connection (etcd's clients open one per
//! endpoint) with many requests at once still has every worker: 64 clients
//! over 1 connection measured the same as with tokio's executor, while 64
//! over 8 (8 streams each, all in their connections' tasks) gained
//! (docs/benchmarks.md, session 23). Work that takes long runs in
//! `spawn_blocking` already (hashing, backups, state files).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use futures::stream::{FuturesUnordered, StreamExt};
use futures::task::AtomicWaker;

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Rounds (poll the connection, start its new streams, poll the streams)
/// in one poll of [`Driven`] before it yields.
const MAX_ROUNDS: usize = 16;

/// Streams of one connection run in its task at once; more are spawned as
/// tasks of their own, so a connection carrying many requests at once (one
/// client process sending all its calls over one connection, as etcd's
/// clients do) still has every worker to run them on.
const MAX_INLINE: usize = 16;

/// Not being polled: a wake-up wakes the task.
const IDLE: u8 = 0;
/// Being polled: a wake-up asks for one more round.
const BUSY: u8 = 1;
/// Being polled, and woken since the round began.
const WOKEN: u8 = 2;

/// Shared by the executor, the waker the connection and its streams see,
/// and [`Driven`].
#[derive(Default)]
struct Shared {
    /// Streams hyper started since the last round.
    new: Mutex<Vec<Stream>>,
    state: AtomicU8,
    /// The task's own waker, from its latest poll.
    task: AtomicWaker,
    /// Streams running in the connection's task (at most [`MAX_INLINE`]).
    inline: AtomicUsize,
}

impl Shared {
    fn woken(&self) {
        // During a poll, ask it for one more round; otherwise wake the task.
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            match state {
                BUSY => match self.state.compare_exchange(
                    BUSY,
                    WOKEN,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return,
                    Err(now) => state = now,
                },
                WOKEN => return,
                _ => return self.task.wake(),
            }
        }
    }
}

/// The waker the connection and its streams are polled with.
struct ConnWaker(Arc<Shared>);

impl Wake for ConnWaker {
    fn wake(self: Arc<Self>) {
        self.0.woken();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.woken();
    }
}

/// hyper's executor for one connection: it queues the streams for the
/// connection's task ([`Driven`]) to run.
#[derive(Clone, Default)]
pub struct InConn {
    shared: Arc<Shared>,
}

impl<F> hyper::rt::Executor<F> for InConn
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        if self.shared.inline.load(Ordering::Acquire) >= MAX_INLINE {
            tokio::spawn(fut);
            return;
        }
        self.shared.inline.fetch_add(1, Ordering::AcqRel);
        let slot = InlineSlot(self.shared.clone());
        self.shared
            .new
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::pin(async move {
                let _slot = slot;
                fut.await
            }));
        self.shared.woken();
    }
}

/// A stream's place among those run in the connection's task, given back
/// when the stream ends or is dropped.
struct InlineSlot(Arc<Shared>);

impl Drop for InlineSlot {
    fn drop(&mut self) {
        self.0.inline.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection future and the streams its executor was given, polled as
/// one. Its output is the connection's, once the connection and every
/// stream are done (streams still running when the connection ends are
/// polled to their end, as the tasks tokio's executor would have made
/// were).
pub struct Driven<C: Future> {
    /// `None` once it is done.
    conn: Option<Pin<Box<C>>>,
    /// The connection's output, kept until its last stream ends.
    out: Option<C::Output>,
    shared: Arc<Shared>,
    waker: Waker,
    running: FuturesUnordered<Stream>,
}

// The connection is pinned in its box; its output is never pinned.
impl<C: Future> Unpin for Driven<C> {}

impl<C: Future> Driven<C> {
    /// Drive `conn`, whose streams `exec` runs.
    pub fn new(conn: C, exec: &InConn) -> Self {
        let shared = exec.shared.clone();
        Self {
            conn: Some(Box::pin(conn)),
            out: None,
            waker: Waker::from(Arc::new(ConnWaker(shared.clone()))),
            shared,
            running: FuturesUnordered::new(),
        }
    }
}

impl<C: Future> Future for Driven<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        this.shared.task.register(cx.waker());
        let mut inner = Context::from_waker(&this.waker);
        for _ in 0..MAX_ROUNDS {
            this.shared.state.store(BUSY, Ordering::Release);
            if let Some(conn) = this.conn.as_mut() {
                if let Poll::Ready(out) = conn.as_mut().poll(&mut inner) {
                    // The connection is done (its socket closes now); its
                    // streams still running end on their own, as tasks
                    // of their own would.
                    this.conn = None;
                    this.out = Some(out);
                }
            }
            let new = std::mem::take(
                &mut *this
                    .shared
                    .new
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            let started = !new.is_empty();
            this.running.extend(new);
            let mut finished = false;
            while let Poll::Ready(Some(())) = this.running.poll_next_unpin(&mut inner) {
                finished = true;
            }
            if this.running.is_empty() {
                if let Some(out) = this.out.take() {
                    this.shared.state.store(IDLE, Ordering::Release);
                    return Poll::Ready(out);
                }
            }
            // tokio's budget for this poll is spent: its resources answer
            // "not ready" until the task yields, so more rounds would spin.
            if !tokio::task::coop::has_budget_remaining() {
                break;
            }
            // A stream that started or finished may have left work for the
            // connection (a response to write, a window to update).
            if started || finished {
                continue;
            }
            // Nothing new: stop, unless something woke us meanwhile.
            if this
                .shared
                .state
                .compare_exchange(BUSY, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Poll::Pending;
            }
        }
        // Still busy after the rounds, or out of budget: yield, and come
        // back.
        this.shared.state.store(IDLE, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;

    /// A connection stand-in: starts `n` streams through the executor on
    /// its first poll, each finishing when `gate` opens, and ends once
    /// `done` of them finished.
    #[tokio::test]
    async fn streams_run_in_the_connection_task_and_end_with_it() {
        let exec = InConn::default();
        let done = Arc::new(AtomicUsize::new(0));
        let (open, gate) = tokio::sync::watch::channel(false);
        let conn = {
            let exec = exec.clone();
            let done = done.clone();
            let mut started = false;
            futures::future::poll_fn(move |_cx| {
                if !started {
                    started = true;
                    for _ in 0..3 {
                        let done = done.clone();
                        let mut gate = gate.clone();
                        exec.execute(async move {
                            let _ = gate.wait_for(|open| *open).await;
                            done.fetch_add(1, Ordering::SeqCst);
                        });
                    }
                }
                if done.load(Ordering::SeqCst) == 3 {
                    Poll::Ready("ended")
                } else {
                    Poll::Pending
                }
            })
        };
        let task = tokio::spawn(Driven::new(conn, &exec));
        tokio::task::yield_now().await;
        assert_eq!(done.load(Ordering::SeqCst), 0);
        assert!(!task.is_finished());
        // The streams are woken (from outside the task), finish, and their
        // finishing lets the connection see it and end.
        let _ = open.send(true);
        let out = tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("the connection did not end")
            .expect("the task failed");
        assert_eq!(out, "ended");
        assert_eq!(done.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn streams_past_the_bound_run_as_tasks_of_their_own() {
        let exec = InConn::default();
        let done = Arc::new(AtomicUsize::new(0));
        let (open, gate) = tokio::sync::watch::channel(false);
        let extra = 4;
        for _ in 0..MAX_INLINE + extra {
            let done = done.clone();
            let mut gate = gate.clone();
            exec.execute(async move {
                let _ = gate.wait_for(|open| *open).await;
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        // The first MAX_INLINE wait for the connection's task; the rest
        // were spawned.
        assert_eq!(exec.shared.inline.load(Ordering::SeqCst), MAX_INLINE);
        let (end, ended) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(Driven::new(ended, &exec));
        let _ = open.send(true);
        for _ in 0..500 {
            if done.load(Ordering::SeqCst) == MAX_INLINE + extra {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(done.load(Ordering::SeqCst), MAX_INLINE + extra);
        // Each inline stream gave its place back as it ended.
        assert_eq!(exec.shared.inline.load(Ordering::SeqCst), 0);
        let _ = end.send(());
        assert!(task.await.expect("the task failed").is_ok());
    }

    #[tokio::test]
    async fn a_stream_outliving_its_connection_runs_to_its_end() {
        let exec = InConn::default();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let (ran, mut ran_rx) = tokio::sync::oneshot::channel::<()>();
        exec.execute(async move {
            let _ = finished.await;
            let _ = ran.send(());
        });
        // The connection is done at once; its stream is not.
        let task = tokio::spawn(Driven::new(std::future::ready("closed"), &exec));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!task.is_finished(), "ended before its stream");
        let _ = finish.send(());
        assert_eq!(task.await.expect("the task failed"), "closed");
        assert!(ran_rx.try_recv().is_ok(), "the stream was dropped, not run");
    }

    #[tokio::test]
    async fn a_wake_during_the_poll_is_not_lost() {
        // A stream wakes itself while being polled, three times over: each
        // wake must lead to another poll, inside the same poll or after.
        let exec = InConn::default();
        exec.execute({
            let mut left = 3;
            futures::future::poll_fn(move |cx| {
                if left == 0 {
                    return Poll::Ready(());
                }
                left -= 1;
                cx.waker().wake_by_ref();
                Poll::Pending
            })
        });
        let never = futures::future::pending::<()>();
        let mut driven = Box::pin(Driven::new(never, &exec));
        futures::future::poll_fn(|cx| {
            let _ = driven.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
        assert!(driven.running.is_empty(), "a self-wake was lost");
    }
}
