//! The newest log entries, kept in memory as they were appended.
//!
//! A leader sends every entry to each follower, and every member applies
//! it; openraft reads the entries for each from the log store. Without this
//! cache each read is a `pread` per entry, a checksum and a decode of every
//! command in it (the keys' and values' bytes copied again): three times
//! per entry on the leader of three members. Entries are kept in order with
//! no gaps; a truncation or a purge trims them, and a range the cache does
//! not wholly hold is read from the log file.
//!
//! What is kept is the entry decoded back from its encoding, not the entry
//! openraft appended: an entry proposed on this member holds its clients'
//! requests, whose keys and values are slices of the buffers the requests
//! arrived in (8 KiB each), and keeping those would pin every buffer
//! (session 17 measured 266 MiB instead of 34 MiB). A decoded entry owns
//! exactly its bytes. The bounds are small: replication and apply read the
//! newest entries, a follower that lags further is served from the file.
//!
//! A member without followers keeps its own entries as appended, each for
//! one read ([`LogCache::push_once`]): the state machine's read takes them
//! out, so they pin their requests' buffers only until applied, and apply
//! reads no file and decodes nothing (1 member, 1 client: the read went
//! from ~9 µs, a `pread` and a decode, to a move).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

type Entry = openraft::Entry<super::TypeConfig>;

/// At most this many entries are kept ...
const MAX_ENTRIES: usize = 64;
/// ... and at most this many encoded bytes of them (the newest entry is
/// kept whatever its size).
const MAX_BYTES: usize = 256 << 10;

/// The cache; shared by the log store's clones.
#[derive(Default)]
pub(super) struct LogCache {
    inner: Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    /// Consecutive entries, with their encoded sizes.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
    /// The entries were kept by [`LogCache::push_once`]: a read takes them.
    once: bool,
}

impl LogCache {
    fn lock(&self) -> MutexGuard<'_, Cached> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keep `entry` (`size` bytes encoded), appended to the log after the
    /// ones kept. An entry that does not follow the newest kept one starts
    /// the cache anew.
    pub(super) fn push(&self, entry: Entry, size: usize) {
        self.keep(entry, size, false);
    }

    /// Keep `entry` as [`LogCache::push`] does, for one read: the read that
    /// returns it takes it out, with every entry before it. Entries kept
    /// the other way are forgotten first, and the other way round.
    pub(super) fn push_once(&self, entry: Entry, size: usize) {
        self.keep(entry, size, true);
    }

    fn keep(&self, entry: Entry, size: usize, once: bool) {
        let mut c = self.lock();
        if c.once != once {
            c.entries.clear();
            c.bytes = 0;
            c.once = once;
        }
        let follows = c
            .entries
            .back()
            .is_none_or(|(last, _)| last.log_id.index.checked_add(1) == Some(entry.log_id.index));
        if !follows {
            c.entries.clear();
            c.bytes = 0;
        }
        c.entries.push_back((entry, size));
        c.bytes += size;
        while c.entries.len() > 1 && (c.entries.len() > MAX_ENTRIES || c.bytes > MAX_BYTES) {
            if let Some((_, n)) = c.entries.pop_front() {
                c.bytes -= n;
            }
        }
    }

    /// Forget every entry (the log's state is unknown after a failed write).
    pub(super) fn clear(&self) {
        let mut c = self.lock();
        c.entries.clear();
        c.bytes = 0;
    }

    /// Forget the entries at and after index `from` (the log was truncated).
    pub(super) fn truncate(&self, from: u64) {
        let mut c = self.lock();
        while c
            .entries
            .back()
            .is_some_and(|(e, _)| e.log_id.index >= from)
        {
            if let Some((_, n)) = c.entries.pop_back() {
                c.bytes -= n;
            }
        }
    }

    /// Forget the entries up to and including index `upto` (purged).
    pub(super) fn purge(&self, upto: u64) {
        let mut c = self.lock();
        while c
            .entries
            .front()
            .is_some_and(|(e, _)| e.log_id.index <= upto)
        {
            if let Some((_, n)) = c.entries.pop_front() {
                c.bytes -= n;
            }
        }
    }

    /// The entries with indexes `from..to`, if the cache holds all of them
    /// (taken out, with those before them, if they were kept for one read).
    pub(super) fn get(&self, from: u64, to: u64) -> Option<Vec<Entry>> {
        let mut c = self.lock();
        let first = c.entries.front()?.0.log_id.index;
        let end = c.entries.back()?.0.log_id.index.checked_add(1)?;
        if from < first || to > end || from >= to {
            return None;
        }
        let skip = usize::try_from(from - first).ok()?;
        let take = usize::try_from(to - from).ok()?;
        if c.once {
            let c = &mut *c;
            let mut out = Vec::with_capacity(take);
            for (i, (e, n)) in c.entries.drain(..skip + take).enumerate() {
                if i >= skip {
                    out.push(e);
                }
                c.bytes -= n;
            }
            return Some(out);
        }
        Some(
            c.entries
                .iter()
                .skip(skip)
                .take(take)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|es| es.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn serves_only_ranges_it_wholly_holds() {
        let cache = LogCache::default();
        assert_eq!(indexes(cache.get(1, 2)), None);
        for i in 5..=9 {
            cache.push(entry(i), 10);
        }
        assert_eq!(indexes(cache.get(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(cache.get(7, 9)), Some(vec![7, 8]));
        assert_eq!(indexes(cache.get(4, 6)), None, "4 is not held");
        assert_eq!(indexes(cache.get(9, 11)), None, "10 is not held");
        assert_eq!(indexes(cache.get(7, 7)), None, "empty ranges go to the log");

        cache.truncate(8);
        assert_eq!(indexes(cache.get(5, 8)), Some(vec![5, 6, 7]));
        assert_eq!(indexes(cache.get(5, 9)), None);
        cache.push(entry(8), 10);
        assert_eq!(indexes(cache.get(7, 9)), Some(vec![7, 8]));

        cache.purge(6);
        assert_eq!(indexes(cache.get(6, 8)), None);
        assert_eq!(indexes(cache.get(7, 9)), Some(vec![7, 8]));

        // A gap starts anew: nothing before it is served.
        cache.push(entry(20), 10);
        assert_eq!(indexes(cache.get(7, 9)), None);
        assert_eq!(indexes(cache.get(20, 21)), Some(vec![20]));
        cache.clear();
        assert_eq!(indexes(cache.get(20, 21)), None);
    }

    #[test]
    fn entries_kept_for_one_read_are_taken_by_it() {
        let cache = LogCache::default();
        for i in 1..=3 {
            cache.push(entry(i), 10);
        }
        // Kept the other way: forgotten.
        for i in 4..=8 {
            cache.push_once(entry(i), 10);
        }
        assert_eq!(indexes(cache.get(3, 5)), None);
        assert_eq!(indexes(cache.get(4, 9)), Some(vec![4, 5, 6, 7, 8]));
        // That read took everything; later ones go to the log.
        assert_eq!(indexes(cache.get(4, 5)), None);
        for i in 9..=12 {
            cache.push_once(entry(i), 10);
        }
        // A read takes its range and what is before it, not what follows.
        assert_eq!(indexes(cache.get(10, 12)), Some(vec![10, 11]));
        assert_eq!(
            indexes(cache.get(9, 10)),
            None,
            "taken with the read after it"
        );
        assert_eq!(cache.lock().bytes, 10);
        assert_eq!(indexes(cache.get(12, 13)), Some(vec![12]));
        assert_eq!(cache.lock().bytes, 0);
        // Kept the usual way again: served as often as asked.
        cache.push(entry(13), 10);
        assert_eq!(indexes(cache.get(13, 14)), Some(vec![13]));
        assert_eq!(indexes(cache.get(13, 14)), Some(vec![13]));
    }

    #[test]
    fn keeps_a_bounded_tail() {
        let cache = LogCache::default();
        for i in 1..=(MAX_ENTRIES as u64 + 10) {
            cache.push(entry(i), 1);
        }
        assert_eq!(indexes(cache.get(10, 12)), None);
        let last = MAX_ENTRIES as u64 + 10;
        assert_eq!(indexes(cache.get(11, 12)), Some(vec![11]));
        assert_eq!(cache.get(11, last + 1).map(|v| v.len()), Some(MAX_ENTRIES));

        // By size: a big entry pushes the older ones out, but stays itself.
        cache.push(entry(last + 1), MAX_BYTES / 2 + 1);
        cache.push(entry(last + 2), MAX_BYTES / 2 + 1);
        assert_eq!(indexes(cache.get(last + 1, last + 3)), None);
        assert_eq!(indexes(cache.get(last + 2, last + 3)), Some(vec![last + 2]));
        cache.push(entry(last + 3), MAX_BYTES * 2);
        assert_eq!(indexes(cache.get(last + 3, last + 4)), Some(vec![last + 3]));
    }
}
