//! The watch hub: fans the state machine's applied events out to etcd watch
//! streams, and replays history from the MVCC [`View`](crate::mvcc::View)
//! for watchers that start in the past or fall behind.
//!
//! # Flow
//!
//! The state machine publishes one `Arc<Vec<Event>>` per applied batch on a
//! tokio broadcast channel (all events of one revision together, revisions in
//! order). Every gRPC `Watch` stream gets one task ([`stream`]) with its own
//! broadcast receiver; the task owns all watchers of that stream, answers
//! create / cancel / progress requests, filters each revision's events per
//! watcher and writes responses into the stream's bounded output queue.
//!
//! A watcher is *live* from revision `min_rev` on. Creating a watcher with a
//! `start_revision` at or below the current revision first replays the
//! history `[start_revision, R]` from the view `R` it loaded, then moves
//! `min_rev` to `R + 1`; live events at or below `R` are skipped for it, so the
//! switch from history to live has neither a gap nor a duplicate (the
//! receiver was subscribed before the view was loaded, and the state machine
//! publishes a view before broadcasting its events).
//!
//! # Bounds (slow watchers)
//!
//! Nothing here ever blocks the state machine: the broadcast send does not
//! wait for receivers. Memory per stream is bounded:
//!
//! * the output queue of a stream holds at most [`OUTPUT_QUEUE_LEN`]
//!   responses; a live response carries one revision's events, a history
//!   response at most [`HISTORY_BATCH_REVS`] revisions (as etcd). Event values
//!   are reference-counted slices of the store's own history, not copies.
//!   The queue is per stream, not per watcher, because a stream is the unit
//!   of flow control on the wire: all watchers of a stream share one HTTP/2
//!   stream, so one of them cannot be read without the others.
//! * when the output queue is full the stream task waits, and its broadcast
//!   receiver falls behind; the broadcast ring keeps at most the newest
//!   `1024` batches for all receivers together. A receiver that lost batches
//!   (`RecvError::Lagged`) catches every watcher of its stream up from the
//!   current view (from each watcher's next revision, [`HISTORY_BATCH_REVS`]
//!   revisions at a time), then continues live. A watcher whose next
//!   revision was compacted meanwhile is canceled with `compact_revision`
//!   set, as etcd does.
//!
//! So a client that never reads costs one output queue, the transport's
//! flow-control buffers and a share of the broadcast ring, whatever the
//! write rate; other streams and writers are not slowed down by it.

pub mod history;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{broadcast, mpsc};

use crate::mvcc::ReadView;
use crate::pb::etcdserverpb::{ResponseHeader, WatchRequest, WatchResponse};
use crate::pb::mvccpb::Event;

/// Responses a stream may have queued before its task waits for the client.
pub const OUTPUT_QUEUE_LEN: usize = 128;

/// Most revisions one history (catch-up) response carries, as etcd's
/// `watchBatchMaxRevs`.
pub const HISTORY_BATCH_REVS: usize = 1000;

/// Builds a response header for a revision (cluster id, member id, term).
pub type HeaderFn = Arc<dyn Fn(i64) -> ResponseHeader + Send + Sync>;

/// Tunables of the hub.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Period of `progress_notify` responses to idle watchers.
    pub progress_notify_interval: Duration,
    /// A response of a `fragment` watcher at least this large (encoded) is
    /// split; etcd uses `--max-request-bytes` plus its gRPC overhead.
    pub fragment_bytes: usize,
}

pub(crate) struct HubInner {
    events: broadcast::Sender<Arc<Vec<Event>>>,
    view: ReadView,
    header: HeaderFn,
    settings: Settings,
}

/// The watch hub of a node. Cheap to clone.
#[derive(Clone)]
pub struct WatchHub {
    inner: Arc<HubInner>,
}

/// Whether a watch stream may watch `key`..`range_end`.
pub type WatchGuard = Arc<dyn Fn(&[u8], &[u8]) -> bool + Send + Sync>;

impl WatchHub {
    /// A hub over the state machine's event channel and published view.
    pub fn new(
        events: broadcast::Sender<Arc<Vec<Event>>>,
        view: ReadView,
        header: HeaderFn,
        settings: Settings,
    ) -> Self {
        Self {
            inner: Arc::new(HubInner {
                events,
                view,
                header,
                settings,
            }),
        }
    }

    /// Serve one watch stream: `requests` are the client's messages; the
    /// returned receiver yields the responses. The stream's task ends when
    /// the receiver is dropped.
    pub fn open<S, E>(&self, requests: S) -> mpsc::Receiver<WatchResponse>
    where
        S: Stream<Item = Result<WatchRequest, E>> + Send + Unpin + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        self.open_guarded(requests, None)
    }

    /// [`Self::open`], with every watch creation asked of `guard` (auth:
    /// may this stream read the range?); a refused one is answered created
    /// and canceled, "permission denied".
    pub fn open_guarded<S, E>(
        &self,
        requests: S,
        guard: Option<WatchGuard>,
    ) -> mpsc::Receiver<WatchResponse>
    where
        S: Stream<Item = Result<WatchRequest, E>> + Send + Unpin + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        // Subscribe before loading the view: every batch newer than the
        // loaded view then reaches this receiver.
        let rx = self.inner.events.subscribe();
        let revision = self.inner.view.load().revision;
        let (tx, out) = mpsc::channel(OUTPUT_QUEUE_LEN);
        let task = stream::StreamTask::new(self.inner.clone(), rx, tx, revision, guard);
        tokio::spawn(task.run(requests));
        out
    }
}
