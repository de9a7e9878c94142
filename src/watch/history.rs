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

/// The events on keys in `key`/`range_end` with revisions in `from..=upto`,
/// but at most `max_revs` distinct revisions of them (the oldest ones), in
/// revision order (and, within a revision, in the order they were written).
/// Returns the events and the last revision covered: the next call starts
/// after it. `prev_kv` is filled when `with_prev` is set.
pub fn collect(
    view: &View,
    key: &[u8],
    range_end: &[u8],
    from: i64,
    upto: i64,
    max_revs: usize,
    with_prev: bool,
) -> Result<(Vec<Event>, i64), MvccError> {
    if from > upto || max_revs == 0 {
        return Ok((Vec::new(), upto));
    }
    // Pass 1: the `max_revs` smallest revisions present in the range.
    let mut revs = std::collections::BTreeSet::new();
    for (_, h) in view.histories(key, range_end) {
        let mut i = h.first_at_or_after(from);
        while let Some(main) = h.main(i) {
            if main > upto {
                break;
            }
            if revs.len() >= max_revs {
                match revs.last() {
                    Some(&last) if main >= last => break,
                    _ => {}
                }
            }
            revs.insert(main);
            if revs.len() > max_revs {
                revs.pop_last();
            }
            i += 1;
        }
    }
    let last = if revs.len() < max_revs {
        upto
    } else {
        revs.last().copied().unwrap_or(upto)
    };
    // Pass 2: the events in `from..=last`.
    let mut found: Vec<(i64, u32, Event)> = Vec::new();
    for (k, h) in view.histories(key, range_end) {
        let mut i = h.first_at_or_after(from);
        while let Some(main) = h.main(i) {
            if main > last {
                break;
            }
            if let Some(ev) = event_at(view, k, h, i, with_prev)? {
                found.push(ev);
            }
            i += 1;
        }
    }
    found.sort_by_key(|(main, sub, _)| (*main, *sub));
    Ok((found.into_iter().map(|(_, _, e)| e).collect(), last))
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
