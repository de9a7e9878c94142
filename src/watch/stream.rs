//! One watch stream: its watchers, its request handling and the task that
//! moves events from the state machine's broadcast to the stream's output.
//!
//! Behaviour follows etcd 3.4's watch server: server-chosen watch ids count
//! up from 0 per stream (skipping ids in use), a client-chosen id in use or an
//! empty key range is answered `created` + `canceled` with watch id -1, a
//! create is answered `created` before any event, a cancel of a known id is
//! answered `canceled`, a progress request gets an empty response with watch
//! id -1, a start revision below the compaction point gets `compact_revision`
//! and `canceled`, `fragment` splits responses of at least
//! [`Settings::fragment_bytes`](super::Settings) encoded bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, MissedTickBehavior};

use super::{history, HubInner, HISTORY_BATCH_REVS};
use crate::mvcc::view::in_range;
use crate::mvcc::{MvccError, View};
use crate::pb::etcdserverpb::watch_create_request::FilterType;
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::{
    ResponseHeader, WatchCancelRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::pb::mvccpb::{event::EventType, Event};

/// etcd's cancel reason for a client-chosen watch id already in use.
pub const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's cancel reason for a key range that selects nothing.
pub const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";
/// The cancel reason of a watch its user may not read (etcd 3.4 sends the
/// gRPC error's text).
pub const ERR_PERMISSION_DENIED: &str =
    "rpc error: code = PermissionDenied desc = etcdserver: permission denied";

/// Batches a progress request or tick processes before answering, so the
/// revision it reports is current without starving on a busy channel.
const MAX_DRAIN: usize = 1024;

/// The client went away: the stream's task ends.
#[derive(Debug)]
struct Closed;

/// One watcher of a stream.
#[derive(Debug)]
struct Watcher {
    id: i64,
    key: Bytes,
    range_end: Bytes,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// The first revision not yet delivered (or skipped) for this watcher.
    min_rev: i64,
    /// No events were sent since the last progress tick.
    idle: bool,
}

impl Watcher {
    /// The event as this watcher gets it, or `None` if it is not for it.
    fn shape(&self, ev: &Event) -> Option<Event> {
        let kv = ev.kv.as_ref()?;
        if !in_range(&kv.key, &self.key, &self.range_end) {
            return None;
        }
        let is_put = ev.r#type == EventType::Put as i32;
        if (is_put && self.no_put) || (!is_put && self.no_delete) {
            return None;
        }
        let mut ev = ev.clone();
        if !self.prev_kv {
            ev.prev_kv = None;
        }
        Some(ev)
    }
}

/// The state and task of one stream.
pub(crate) struct StreamTask {
    hub: Arc<HubInner>,
    rx: broadcast::Receiver<Arc<Vec<Event>>>,
    out: mpsc::Sender<WatchResponse>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    /// Every revision up to this one has been delivered to (or skipped by)
    /// every watcher of the stream.
    synced_rev: i64,
    /// May this stream watch a key range (auth)? `None`: anything.
    guard: Option<super::WatchGuard>,
}

async fn send(out: &mpsc::Sender<WatchResponse>, resp: WatchResponse) -> Result<(), Closed> {
    out.send(resp).await.map_err(|_| Closed)
}

/// Split `resp` into fragments of less than `limit` encoded bytes each (at
/// least one event per fragment); all but the last have `fragment` set.
fn fragments(resp: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if resp.events.len() < 2 || resp.encoded_len() < limit {
        return vec![resp];
    }
    let mut base = resp;
    let events = std::mem::take(&mut base.events);
    base.fragment = true;
    let base_len = base.encoded_len();
    let mut out = Vec::new();
    let mut cur = base.clone();
    let mut cur_len = base_len;
    for ev in events {
        // A repeated message field: one tag byte, the length, the message.
        let n = ev.encoded_len();
        let ev_len = 1 + prost::encoding::encoded_len_varint(n as u64) + n;
        if !cur.events.is_empty() && cur_len + ev_len >= limit {
            out.push(std::mem::replace(&mut cur, base.clone()));
            cur_len = base_len;
        }
        cur.events.push(ev);
        cur_len += ev_len;
    }
    cur.fragment = false;
    out.push(cur);
    out
}

impl StreamTask {
    pub(crate) fn new(
        hub: Arc<HubInner>,
        rx: broadcast::Receiver<Arc<Vec<Event>>>,
        out: mpsc::Sender<WatchResponse>,
        synced_rev: i64,
        guard: Option<super::WatchGuard>,
    ) -> Self {
        Self {
            hub,
            rx,
            out,
            watchers: BTreeMap::new(),
            next_id: 0,
            synced_rev,
            guard,
        }
    }

    fn header(&self, rev: i64) -> ResponseHeader {
        (self.hub.header)(rev)
    }

    /// Serve the stream until the client goes away.
    pub(crate) async fn run<S, E>(mut self, mut requests: S)
    where
        S: Stream<Item = Result<WatchRequest, E>> + Send + Unpin + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let period = self.hub.settings.progress_notify_interval;
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut requests_open = true;
        let out = self.out.clone();
        loop {
            let step = tokio::select! {
                req = requests.next(), if requests_open => match req {
                    Some(Ok(req)) => self.on_request(req).await,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "watch request stream failed");
                        requests_open = false;
                        Ok(())
                    }
                    // The client closed its sending side; keep delivering
                    // events, as etcd does.
                    None => {
                        requests_open = false;
                        Ok(())
                    }
                },
                msg = self.rx.recv() => match msg {
                    Ok(batch) => self.on_batch(&batch).await,
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(lost_batches = n, "watch stream fell behind; catching up from history");
                        self.catch_up().await
                    }
                    // The state machine is gone: the node is shutting down.
                    Err(RecvError::Closed) => Err(Closed),
                },
                _ = ticker.tick() => self.on_tick().await,
                _ = out.closed() => Err(Closed),
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn on_request(&mut self, req: WatchRequest) -> Result<(), Closed> {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.on_create(c).await,
            Some(RequestUnion::CancelRequest(c)) => self.on_cancel(c).await,
            Some(RequestUnion::ProgressRequest(_)) => {
                self.drain().await?;
                let resp = WatchResponse {
                    header: Some(self.header(self.synced_rev)),
                    watch_id: -1,
                    ..Default::default()
                };
                send(&self.out, resp).await
            }
            None => Ok(()),
        }
    }

    async fn on_create(&mut self, c: WatchCreateRequest) -> Result<(), Closed> {
        let view = self.hub.view.load();
        // etcd: an empty key means "\0", the smallest key.
        let key = if c.key.is_empty() {
            Bytes::from_static(&[0])
        } else {
            c.key
        };
        let range_end = c.range_end;
        let refuse = |reason: &str| WatchResponse {
            header: Some(self.header(view.revision)),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        if !range_end.is_empty() && range_end.as_ref() != [0] && key >= range_end {
            return send(&self.out, refuse(ERR_EMPTY_RANGE)).await;
        }
        if let Some(guard) = &self.guard {
            if !guard(&key, &range_end) {
                // etcd 3.4: created and canceled, with the request's id.
                let resp = WatchResponse {
                    watch_id: c.watch_id,
                    ..refuse(ERR_PERMISSION_DENIED)
                };
                return send(&self.out, resp).await;
            }
        }
        let id = if c.watch_id != 0 {
            if self.watchers.contains_key(&c.watch_id) {
                return send(&self.out, refuse(ERR_DUPLICATE_ID)).await;
            }
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        let start = if c.start_revision == 0 {
            view.revision + 1
        } else {
            c.start_revision
        };
        let has = |f: FilterType| c.filters.contains(&(f as i32));
        let w = Watcher {
            id,
            key,
            range_end,
            no_put: has(FilterType::Noput),
            no_delete: has(FilterType::Nodelete),
            prev_kv: c.prev_kv,
            fragment: c.fragment,
            progress_notify: c.progress_notify,
            min_rev: start,
            idle: true,
        };
        let created = WatchResponse {
            header: Some(self.header(view.revision)),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        send(&self.out, created).await?;
        self.watchers.insert(id, w);
        self.replay(id, &view).await
    }

    async fn on_cancel(&mut self, c: WatchCancelRequest) -> Result<(), Closed> {
        if self.watchers.remove(&c.watch_id).is_none() {
            // etcd answers nothing for an unknown id.
            return Ok(());
        }
        let resp = WatchResponse {
            header: Some(self.header(self.hub.view.load().revision)),
            watch_id: c.watch_id,
            canceled: true,
            ..Default::default()
        };
        send(&self.out, resp).await
    }

    /// Send `events` to watcher `w` (already shaped for it), fragmenting if
    /// it asked for that.
    async fn send_events(
        out: &mpsc::Sender<WatchResponse>,
        fragment_bytes: usize,
        w: &mut Watcher,
        header: ResponseHeader,
        events: Vec<Event>,
    ) -> Result<(), Closed> {
        w.idle = false;
        let resp = WatchResponse {
            header: Some(header),
            watch_id: w.id,
            events,
            ..Default::default()
        };
        if w.fragment {
            for part in fragments(resp, fragment_bytes) {
                send(out, part).await?;
            }
            Ok(())
        } else {
            send(out, resp).await
        }
    }

    /// Deliver one applied batch: one response per revision per watcher
    /// with matching events.
    async fn on_batch(&mut self, batch: &[Event]) -> Result<(), Closed> {
        let rev_of = |e: &Event| e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
        let fragment_bytes = self.hub.settings.fragment_bytes;
        for group in batch.chunk_by(|a, b| rev_of(a) == rev_of(b)) {
            let Some(rev) = group.first().map(rev_of) else {
                continue;
            };
            if rev <= self.synced_rev {
                continue;
            }
            let header = self.header(rev);
            for w in self.watchers.values_mut() {
                if rev < w.min_rev {
                    continue;
                }
                let events: Vec<Event> = group.iter().filter_map(|e| w.shape(e)).collect();
                if !events.is_empty() {
                    Self::send_events(&self.out, fragment_bytes, w, header, events).await?;
                }
            }
            self.synced_rev = rev;
        }
        Ok(())
    }

    /// The receiver lost batches: replay every watcher from the current view.
    async fn catch_up(&mut self) -> Result<(), Closed> {
        let view = self.hub.view.load();
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            if let Some(w) = self.watchers.get_mut(&id) {
                w.min_rev = w.min_rev.max(self.synced_rev + 1);
            }
            self.replay(id, &view).await?;
        }
        self.synced_rev = self.synced_rev.max(view.revision);
        Ok(())
    }

    /// Replay watcher `id`'s events from its `min_rev` through `view`'s
    /// revision, then make it live from the next revision. A watcher that
    /// needs compacted history is canceled with `compact_revision`.
    async fn replay(&mut self, id: i64, view: &View) -> Result<(), Closed> {
        let Some(w) = self.watchers.get_mut(&id) else {
            return Ok(());
        };
        if view.compact_revision > 0 && w.min_rev < view.compact_revision {
            return self
                .cancel_replay(id, view.compact_revision, String::new())
                .await;
        }
        let fragment_bytes = self.hub.settings.fragment_bytes;
        let header = (self.hub.header)(view.revision);
        // The watcher is borrowed again to send each batch.
        let (key, range_end) = (w.key.clone(), w.range_end.clone());
        let mut replay =
            history::Replay::new(view, &key, &range_end, w.min_rev, view.revision, w.prev_kv);
        loop {
            let (events, _) = match replay.next_batch(HISTORY_BATCH_REVS) {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(e) => {
                    // History this watcher needs cannot be read (compacted
                    // under it, or a damaged spill record): cancel it,
                    // saying why, rather than skip events.
                    tracing::warn!(watch_id = id, error = %e, "canceling a watcher whose history cannot be read");
                    let compact_revision = if e == MvccError::Compacted {
                        self.hub.view.load().compact_revision
                    } else {
                        0
                    };
                    return self
                        .cancel_replay(id, compact_revision, format!("etcdserver: {e}"))
                        .await;
                }
            };
            let events: Vec<Event> = events.iter().filter_map(|e| w.shape(e)).collect();
            if !events.is_empty() {
                Self::send_events(&self.out, fragment_bytes, w, header, events).await?;
            }
        }
        w.min_rev = w.min_rev.max(view.revision + 1);
        Ok(())
    }

    /// Cancel watcher `id` whose replay cannot go on; etcd sends this with
    /// revision 0 in the header.
    async fn cancel_replay(
        &mut self,
        id: i64,
        compact_revision: i64,
        cancel_reason: String,
    ) -> Result<(), Closed> {
        self.watchers.remove(&id);
        let resp = WatchResponse {
            header: Some((self.hub.header)(0)),
            watch_id: id,
            canceled: true,
            compact_revision,
            cancel_reason,
            ..Default::default()
        };
        send(&self.out, resp).await
    }

    /// Process what the receiver already holds (bounded), so a progress
    /// answer reports a current revision.
    async fn drain(&mut self) -> Result<(), Closed> {
        for _ in 0..MAX_DRAIN {
            match self.rx.try_recv() {
                Ok(batch) => self.on_batch(&batch).await?,
                Err(TryRecvError::Lagged(_)) => self.catch_up().await?,
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Closed) => return Err(Closed),
            }
        }
        Ok(())
    }

    /// Periodic progress: an empty response to every `progress_notify`
    /// watcher that got no events since the last tick.
    async fn on_tick(&mut self) -> Result<(), Closed> {
        if !self.watchers.values().any(|w| w.progress_notify) {
            return Ok(());
        }
        self.drain().await?;
        let header = self.header(self.synced_rev);
        for w in self.watchers.values_mut() {
            if w.progress_notify && w.idle {
                let resp = WatchResponse {
                    header: Some(header),
                    watch_id: w.id,
                    ..Default::default()
                };
                send(&self.out, resp).await?;
            }
            w.idle = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::mvccpb::KeyValue;

    fn ev(n: usize) -> Event {
        Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: Bytes::from(format!("k{n}")),
                value: Bytes::from(vec![b'v'; 100]),
                mod_revision: 5,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn fragments_split_below_limit() {
        let resp = WatchResponse {
            watch_id: 3,
            events: (0..50).map(ev).collect(),
            ..Default::default()
        };
        let whole = resp.encoded_len();
        assert_eq!(fragments(resp.clone(), whole + 1).len(), 1);
        let parts = fragments(resp.clone(), 1000);
        assert!(parts.len() > 1);
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.fragment, i + 1 < parts.len());
            assert!(p.encoded_len() < 1000, "{}", p.encoded_len());
            assert_eq!(p.watch_id, 3);
        }
        let events: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(events, resp.events);
        // One event never splits, however large.
        let one = WatchResponse {
            events: vec![ev(1)],
            ..Default::default()
        };
        assert_eq!(fragments(one, 10).len(), 1);
    }
}
