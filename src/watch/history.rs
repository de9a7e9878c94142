//! Replaying a key range's events from the MVCC history kept in a
//! [`View`]: what a watcher that starts in the past, or fell behind, gets.

use bytes::Bytes;

use crate::mvcc::view::History;
use crate::mvcc::{MvccError, View};
use crate::pb::mvccpb::{event::EventType, Event, KeyValue};

/// The event for entry `i` of `key`'s history `h`, with its main and sub
/// revision. `prev_kv` is the entry before it when that one is a live value
/// (and still kept).
fn event_at(
    view: &View,
    key: &Bytes,
    h: &History,
    i: usize,
    with_prev: bool,
) -> Result<Option<(i64, u32, Event)>, MvccError> {
    let Some(r) = h.rev(i, &view.spill)? else {
        return Ok(None);
    };
    let prev_kv = match i.checked_sub(1) {
        Some(p) if with_prev && h.is_tombstone(p) == Some(false) => {
            h.rev(p, &view.spill)?.map(|p| p.to_kv(key))
        }
        _ => None,
    };
    let event = if r.is_tombstone() {
        Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: key.clone(),
                mod_revision: r.main,
                ..Default::default()
            }),
            prev_kv,
        }
    } else {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(r.to_kv(key)),
            prev_kv,
        }
    };
    Ok(Some((r.main, r.sub, event)))
}

/// Entries a replay plans at a time: each pass over the watched keys plans
/// the events of the oldest revisions, up to this many events (a revision is
/// never split, so one revision with more is planned whole). A pass visits
/// every key in the range, so planning far more than one response's worth
/// keeps a replay over K keys from costing K visits per response (it did:
/// 19 s for a watch from revision 1 over 200k keys). ~56 bytes each.
pub const REPLAY_WINDOW: usize = 65_536;

/// A watcher's replay of the history in one view: the events on keys in
/// `key`/`range_end` with revisions in `from..=upto`, handed out a few
/// revisions at a time ([`Replay::next_batch`]).
pub struct Replay<'v> {
    view: &'v View,
    key: &'v [u8],
    range_end: &'v [u8],
    /// The first revision not yet planned.
    next: i64,
    upto: i64,
    with_prev: bool,
    /// Planned entries in revision order (key order within one): the
    /// revision, the key, its history and the entry's index in it.
    plan: std::collections::VecDeque<(i64, Bytes, History, usize)>,
    /// The last revision the plan covers.
    planned_end: i64,
    /// Entries planned per pass ([`REPLAY_WINDOW`]).
    window: usize,
    /// Passes over the keys so far.
    passes: usize,
}

impl<'v> Replay<'v> {
    pub fn new(
        view: &'v View,
        key: &'v [u8],
        range_end: &'v [u8],
        from: i64,
        upto: i64,
        with_prev: bool,
    ) -> Self {
        Self {
            view,
            key,
            range_end,
            next: from,
            upto,
            with_prev,
            plan: Default::default(),
            planned_end: from.saturating_sub(1),
            window: REPLAY_WINDOW,
            passes: 0,
        }
    }

    /// Passes over the watched keys so far (each visits every key).
    pub fn passes(&self) -> usize {
        self.passes
    }

    /// Plan the oldest revisions from `next` on: at most
    /// [`REPLAY_WINDOW`] entries, whole revisions only.
    fn plan(&mut self) {
        let (from, upto, window) = (self.next, self.upto, self.window.max(1));
        self.passes += 1;
        // Pass 1: the REPLAY_WINDOW smallest entry revisions (a max-heap).
        let mut heap = std::collections::BinaryHeap::new();
        let mut least = i64::MAX;
        for (_, h) in self.view.histories(self.key, self.range_end) {
            for (_, main) in h.entries_from(from).take_while(|&(_, m)| m <= upto) {
                if heap.len() >= window {
                    match heap.peek() {
                        Some(&top) if main >= top => break,
                        _ => {
                            heap.pop();
                        }
                    }
                }
                heap.push(main);
                least = least.min(main);
            }
        }
        let end = match heap.peek() {
            // The window's last revision may be cut short: stop before it,
            // unless it is the only one.
            Some(&top) if heap.len() >= window && top > least => top - 1,
            Some(&top) if heap.len() >= window => top,
            _ => upto,
        };
        // Pass 2: the entries in from..=end.
        let mut plan = Vec::new();
        for (k, h) in self.view.histories(self.key, self.range_end) {
            let entries = h.entries_from(from).take_while(|&(_, m)| m <= end);
            plan.extend(entries.map(|(i, main)| (main, k.clone(), h.clone(), i)));
        }
        plan.sort_by_key(|e| e.0);
        self.plan = plan.into();
        self.planned_end = end;
        self.next = end.saturating_add(1);
    }

    /// The events of the next at most `max_revs` revisions that have any,
    /// in revision order (within a revision, in the order they were
    /// written), and the last revision they cover: the next batch starts
    /// after it. `None` once everything through `upto` was handed out.
    pub fn next_batch(&mut self, max_revs: usize) -> Result<Option<(Vec<Event>, i64)>, MvccError> {
        if self.plan.is_empty() {
            if self.next > self.upto || max_revs == 0 {
                return Ok(None);
            }
            self.plan();
        }
        let mut found: Vec<(i64, u32, Event)> = Vec::new();
        let (mut revs, mut last_main) = (0usize, None);
        while let Some(front) = self.plan.front() {
            if last_main != Some(front.0) {
                if revs == max_revs {
                    break;
                }
                revs += 1;
                last_main = Some(front.0);
            }
            let Some((_, key, h, i)) = self.plan.pop_front() else {
                break;
            };
            if let Some(ev) = event_at(self.view, &key, &h, i, self.with_prev)? {
                found.push(ev);
            }
        }
        let last = match last_main {
            Some(m) if !self.plan.is_empty() || revs == max_revs => m,
            _ => self.planned_end,
        };
        found.sort_by_key(|(main, sub, _)| (*main, *sub));
        Ok(Some((found.into_iter().map(|(_, _, e)| e).collect(), last)))
    }
}

/// The events on keys in `key`/`range_end` with revisions in `from..=upto`,
/// but at most `max_revs` distinct revisions of them (the oldest ones), in
/// revision order (and, within a revision, in the order they were written).
/// Returns the events and the last revision covered: the next call starts
/// after it. `prev_kv` is filled when `with_prev` is set. (One batch of a
/// [`Replay`]; the stream replays with `Replay` itself, tests use this.)
#[cfg(test)]
fn collect(
    view: &View,
    key: &[u8],
    range_end: &[u8],
    from: i64,
    upto: i64,
    max_revs: usize,
    with_prev: bool,
) -> Result<(Vec<Event>, i64), MvccError> {
    let mut replay = Replay::new(view, key, range_end, from, upto, with_prev);
    Ok(replay.next_batch(max_revs)?.unwrap_or((Vec::new(), upto)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::apply::apply;
    use crate::mvcc::Command;
    use crate::pb::etcdserverpb::{DeleteRangeRequest, PutRequest};

    fn put(v: &View, k: &str, val: &str) -> View {
        apply(
            v,
            &Command::Put(PutRequest {
                key: Bytes::from(k.to_string()),
                value: Bytes::from(val.to_string()),
                ..Default::default()
            }),
        )
        .view
    }

    fn del(v: &View, k: &str) -> View {
        apply(
            v,
            &Command::DeleteRange(DeleteRangeRequest {
                key: Bytes::from(k.to_string()),
                ..Default::default()
            }),
        )
        .view
    }

    fn revs(evs: &[Event]) -> Vec<(i32, String, i64)> {
        evs.iter()
            .map(|e| {
                let kv = e.kv.clone().unwrap_or_default();
                (
                    e.r#type,
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    kv.mod_revision,
                )
            })
            .collect()
    }

    #[test]
    fn replays_in_revision_order_with_prev_kv() {
        let mut v = View::default();
        v = put(&v, "a", "1"); // 2
        v = put(&v, "b", "1"); // 3
        v = put(&v, "a", "2"); // 4
        v = del(&v, "a"); // 5
        v = put(&v, "c", "1"); // 6
        let (evs, last) = collect(&v, b"a", b"c", 1, v.revision, 1000, true).unwrap();
        assert_eq!(last, 6);
        assert_eq!(
            revs(&evs),
            vec![
                (0, "a".into(), 2),
                (0, "b".into(), 3),
                (0, "a".into(), 4),
                (1, "a".into(), 5)
            ]
        );
        assert!(evs[0].prev_kv.is_none());
        assert_eq!(
            evs[2].prev_kv.as_ref().map(|p| p.value.clone()),
            Some(Bytes::from("1"))
        );
        assert_eq!(
            evs[3].prev_kv.as_ref().map(|p| p.value.clone()),
            Some(Bytes::from("2"))
        );
        let (evs, _) = collect(&v, b"a", b"c", 4, v.revision, 1000, false).unwrap();
        assert_eq!(revs(&evs), vec![(0, "a".into(), 4), (1, "a".into(), 5)]);
        assert!(evs.iter().all(|e| e.prev_kv.is_none()));
    }

    /// Every event in the range, the plain way: all entries, sorted.
    fn everything(v: &View, key: &[u8], end: &[u8], from: i64) -> Vec<Event> {
        let mut all = Vec::new();
        for (k, h) in v.histories(key, end) {
            for (i, _) in h.entries_from(from) {
                all.extend(event_at(v, k, h, i, true).unwrap());
            }
        }
        all.sort_by_key(|(main, sub, _)| (*main, *sub));
        all.into_iter().map(|(_, _, e)| e).collect()
    }

    #[test]
    fn replays_plan_whole_revisions_a_window_at_a_time() {
        use crate::pb::etcdserverpb::request_op::Request;
        use crate::pb::etcdserverpb::{RequestOp, TxnRequest};
        let mut v = View::default();
        let mut seed = 7u64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for step in 0..300 {
            let k = format!("k{:02}", rnd(40));
            v = match rnd(10) {
                0 => del(&v, &k),
                // A txn: several keys in one revision.
                1 | 2 => {
                    let n = 1 + rnd(6);
                    let success = (0..n)
                        .map(|j| {
                            RequestOp::put(
                                Bytes::from(format!("k{:02}", (rnd(8) * 5 + j) % 40)),
                                Bytes::from(format!("t{step}")),
                                0,
                            )
                        })
                        .collect::<Vec<_>>();
                    let mut keys: Vec<_> = success
                        .iter()
                        .map(|o| match &o.request {
                            Some(Request::RequestPut(p)) => p.key.clone(),
                            _ => Bytes::new(),
                        })
                        .collect();
                    keys.sort();
                    keys.dedup();
                    if keys.len() < success.len() {
                        continue;
                    }
                    apply(
                        &v,
                        &Command::Txn(TxnRequest {
                            success,
                            ..Default::default()
                        }),
                    )
                    .view
                }
                _ => put(&v, &k, &format!("v{step}")),
            };
        }
        // A delete of 20 keys: one revision larger than small windows.
        v = apply(
            &v,
            &Command::DeleteRange(DeleteRangeRequest {
                key: Bytes::from("k"),
                range_end: Bytes::from("k20"),
                ..Default::default()
            }),
        )
        .view;
        for (from, key, end) in [(1, "k", "l"), (150, "k1", "k3"), (2, "k05", "")] {
            let want = everything(&v, key.as_bytes(), end.as_bytes(), from);
            let entries = want.len();
            for window in [1, 2, 3, 7, 64, 100_000] {
                for max_revs in [1, 3, 1000] {
                    let mut r =
                        Replay::new(&v, key.as_bytes(), end.as_bytes(), from, v.revision, true);
                    r.window = window;
                    let (mut got, mut prev_last) = (Vec::new(), from - 1);
                    while let Some((evs, last)) = r.next_batch(max_revs).unwrap() {
                        let revs: std::collections::BTreeSet<i64> = evs
                            .iter()
                            .map(|e| e.kv.as_ref().unwrap().mod_revision)
                            .collect();
                        assert!(revs.len() <= max_revs);
                        // Batches cover consecutive revision ranges.
                        assert!(revs.iter().all(|r| *r > prev_last && *r <= last));
                        prev_last = last;
                        got.extend(evs);
                    }
                    assert_eq!(prev_last, v.revision);
                    assert_eq!(got, want, "from {from} window {window} max_revs {max_revs}");
                    // Passes are bounded by the window, not by the batches:
                    // each plans whole revisions, at least one, and with a
                    // window larger than any revision (20 events at most
                    // here) at least window - 20 events.
                    let revisions = want
                        .iter()
                        .map(|e| e.kv.as_ref().unwrap().mod_revision)
                        .collect::<std::collections::BTreeSet<_>>()
                        .len();
                    let bound = if window > 20 {
                        entries / (window - 20) + 2
                    } else {
                        revisions + 1
                    };
                    assert!(
                        r.passes() <= bound,
                        "{} passes, window {window}",
                        r.passes()
                    );
                }
            }
        }
    }

    #[test]
    fn batches_by_revision_count() {
        let mut v = View::default();
        for i in 0..10 {
            v = put(&v, &format!("k{}", i % 3), "x");
        }
        let mut from = 1;
        let mut all = Vec::new();
        let mut calls = 0;
        while from <= v.revision {
            let (evs, last) = collect(&v, b"k", b"l", from, v.revision, 3, false).unwrap();
            let distinct: std::collections::BTreeSet<i64> = evs
                .iter()
                .filter_map(|e| e.kv.as_ref().map(|k| k.mod_revision))
                .collect();
            assert!(distinct.len() <= 3);
            all.extend(evs);
            from = last + 1;
            calls += 1;
        }
        assert_eq!(calls, 4);
        let got: Vec<i64> = all
            .iter()
            .filter_map(|e| e.kv.as_ref().map(|k| k.mod_revision))
            .collect();
        assert_eq!(got, (2..=11).collect::<Vec<_>>());
    }
}
