//! An immutable snapshot of the MVCC store and the read path over it.
//!
//! The index maps every key to its revision history (oldest first). Both the
//! map and the histories are persistent data structures: cloning a view is
//! O(1) and a writer changing its copy never disturbs readers of the old one.
//! The lease table (lease id → granted TTL, refresh time, attached keys) is
//! part of the view in the same way (see [`super::lease`]).

use std::borrow::Cow;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::{ArcSwap, ArcSwapOption};

use bytes::Bytes;
use imbl::{OrdMap, OrdSet};

use super::command::MvccError;
use super::key::IndexKey;
use super::lease::Lease;
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use crate::pb::mvccpb::KeyValue;
use crate::storage::spill::Spill;

pub use super::history::{History, Rev};

/// The entry of `h` visible at revision `rev` (the newest with main <= rev),
/// read back from `spill` unless it is the latest.
pub fn at_revision<'a>(
    h: &'a History,
    rev: i64,
    spill: &Spill,
) -> Result<Option<Cow<'a, Rev>>, MvccError> {
    match h.position_at(rev) {
        None => Ok(None),
        Some(i) => Ok(h.rev(i, spill)?),
    }
}

/// The live (non-deleted) entry of `h` visible at `rev`.
pub fn live_at<'a>(
    h: &'a History,
    rev: i64,
    spill: &Spill,
) -> Result<Option<Cow<'a, Rev>>, MvccError> {
    Ok(at_revision(h, rev, spill)?.filter(|r| !r.is_tombstone()))
}

/// The latest entry of `h` if it is live.
pub fn latest_live(h: &History) -> Option<&Rev> {
    Some(h.latest()).filter(|r| !r.is_tombstone())
}

impl View {
    /// Drop the history compaction at `rev` drops: for every key, each
    /// revision below the newest one at or below `rev`, and that one too if
    /// it is a tombstone. Only revisions at or below `rev` are ever dropped, so running it again at
    /// the same `rev` later (after newer writes) drops exactly what a
    /// previous run left in place: nothing, or what a crash kept on disk.
    pub fn compact_index(&mut self, rev: i64) {
        let keys: Vec<IndexKey> = self.index.keys().cloned().collect();
        for key in keys {
            let Some(h) = self.index.get(&key) else {
                continue;
            };
            let keep_from = match h.position_at(rev) {
                None => continue,
                Some(i) if h.is_tombstone(i) == Some(true) => i + 1,
                Some(i) => i,
            };
            if keep_from == 0 {
                continue;
            }
            match h.keep_from(keep_from) {
                None => self.index.remove(&key),
                Some(kept) => self.index.insert(key, kept),
            };
        }
        // Every spilled revision superseded at or below `rev` is gone.
        self.spill.drop_through(rev);
    }

    /// `key`'s history, searched with an index key (which compares in
    /// place, see `super::key`).
    pub fn history(&self, key: &[u8]) -> Option<&History> {
        self.index.get(&IndexKey::probe(key))
    }

    /// Add `rev` as `key`'s newest revision; the one it supersedes goes to
    /// the spill.
    pub fn push_revision(&mut self, key: IndexKey, rev: Rev) {
        match self.index.get_mut(&key) {
            Some(h) => h.push(rev, &mut self.spill),
            None => {
                self.index.insert(key, History::new(rev));
            }
        }
    }

    /// Every revision of every key, read back (tests and tools).
    pub fn revisions(&self) -> Result<Vec<(Bytes, Rev)>, MvccError> {
        let mut out = Vec::new();
        for (k, h) in self.index.iter() {
            for r in h.revs(&self.spill) {
                out.push((k.bytes().clone(), r?.into_owned()));
            }
        }
        Ok(out)
    }
}

/// An immutable snapshot of the store.
#[derive(Clone, Debug)]
pub struct View {
    pub index: OrdMap<IndexKey, History>,
    /// The current (latest committed) revision. Starts at 1 like etcd.
    pub revision: i64,
    /// The revision the store was last compacted at; -1 if never.
    pub compact_revision: i64,
    /// Granted leases by id.
    pub leases: OrdMap<i64, Lease>,
    /// The auth store (users, roles, enabled flag, auth revision); shared
    /// until an auth change copies it.
    pub auth: Arc<crate::auth::AuthState>,
    /// Where the superseded revisions the index names are kept.
    pub spill: Spill,
}

impl Default for View {
    fn default() -> Self {
        Self {
            index: OrdMap::new(),
            revision: 1,
            compact_revision: -1,
            leases: OrdMap::new(),
            auth: Arc::default(),
            spill: Spill::memory(),
        }
    }
}

/// A key interval as map bounds.
pub type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The keys a request's `key`/`range_end` pair selects, as map bounds.
/// `None` means the (empty) interval selects nothing.
pub fn key_bounds<'a>(key: &'a [u8], range_end: &'a [u8]) -> Option<KeyBounds<'a>> {
    if range_end.is_empty() {
        return Some((Bound::Included(key), Bound::Included(key)));
    }
    if range_end == [0] {
        return Some((Bound::Included(key), Bound::Unbounded));
    }
    if range_end <= key {
        return None;
    }
    Some((Bound::Included(key), Bound::Excluded(range_end)))
}

/// Whether `k` falls in the interval `key`/`range_end` selects.
pub fn in_range(k: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    if range_end.is_empty() {
        return k == key;
    }
    if range_end == [0] {
        return k >= key;
    }
    k >= key && k < range_end
}

impl View {
    /// Iterate `(key, history)` over the interval `key`/`range_end` selects.
    pub fn histories<'a>(
        &'a self,
        key: &'a [u8],
        range_end: &'a [u8],
    ) -> impl Iterator<Item = (&'a Bytes, &'a History)> + 'a {
        let it = key_bounds(key, range_end).map(|(from, to)| {
            // Searched with index keys, which compare in place (see
            // `super::key`); one copy of a single key for both ends.
            let from = from.map(IndexKey::probe);
            let to = match (&from, to) {
                (Bound::Included(k), _) if range_end.is_empty() => Bound::Included(k.clone()),
                (_, to) => to.map(IndexKey::probe),
            };
            self.index.range((from, to))
        });
        it.into_iter().flatten().map(|(k, h)| (k.bytes(), h))
    }

    /// Check a read revision the way etcd does: 0 (or less) means current.
    pub fn read_revision(&self, requested: i64) -> Result<i64, MvccError> {
        if requested > self.revision {
            return Err(MvccError::FutureRevision);
        }
        let rev = if requested <= 0 {
            self.revision
        } else {
            requested
        };
        if rev < self.compact_revision {
            return Err(MvccError::Compacted);
        }
        Ok(rev)
    }

    /// Answer a Range request. `header_revision` is the revision to report
    /// (the store's, or inside a txn with writes, the txn's).
    pub fn range(
        &self,
        req: &RangeRequest,
        header_revision: i64,
    ) -> Result<RangeResponse, MvccError> {
        let rev = self.read_revision(req.revision)?;
        let requested_order =
            SortOrder::try_from(req.sort_order).map_err(|_| MvccError::UnknownSort)?;
        let sort_target =
            SortTarget::try_from(req.sort_target).map_err(|_| MvccError::UnknownSort)?;
        let sort_order = if sort_target != SortTarget::Key && requested_order == SortOrder::None {
            SortOrder::Ascend
        } else {
            requested_order
        };
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let keep = |r: &Rev| {
            (req.min_mod_revision == 0 || r.main >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || r.main <= req.max_mod_revision)
                && (req.min_create_revision == 0 || r.create >= req.min_create_revision)
                && (req.max_create_revision == 0 || r.create <= req.max_create_revision)
        };
        // Without a requested sort order or filters, stop collecting after
        // limit+1 entries (the extra one tells `more`), but keep counting.
        // Like etcd, this looks at the order as requested: a non-key target
        // with order NONE sorts only the first limit+1 keys.
        let collect_cap = if req.limit > 0 && requested_order == SortOrder::None && !filtered {
            req.limit as usize + 1
        } else {
            usize::MAX
        };
        let mut count: i64 = 0;
        let mut kvs: Vec<KeyValue> = Vec::new();
        for (k, h) in self.histories(&req.key, &req.range_end) {
            let Some(r) = live_at(h, rev, &self.spill)? else {
                continue;
            };
            count += 1;
            if req.count_only || kvs.len() >= collect_cap || !keep(&r) {
                continue;
            }
            let mut kv = r.to_kv(k);
            if req.keys_only {
                kv.value = Bytes::new();
            }
            kvs.push(kv);
        }
        match (sort_order, sort_target) {
            (SortOrder::None, _) | (SortOrder::Ascend, SortTarget::Key) => {}
            (SortOrder::Descend, SortTarget::Key) => kvs.reverse(),
            (order, target) => {
                let key_of = |kv: &KeyValue| -> (i64, Bytes) {
                    match target {
                        SortTarget::Version => (kv.version, Bytes::new()),
                        SortTarget::Create => (kv.create_revision, Bytes::new()),
                        SortTarget::Mod => (kv.mod_revision, Bytes::new()),
                        SortTarget::Value => (0, kv.value.clone()),
                        SortTarget::Key => (0, kv.key.clone()),
                    }
                };
                // Stable sort in either direction: equal elements stay in
                // ascending key order, as etcd returns them.
                if order == SortOrder::Descend {
                    kvs.sort_by_key(|kv| std::cmp::Reverse(key_of(kv)));
                } else {
                    kvs.sort_by_key(key_of);
                }
            }
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() > req.limit as usize {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        Ok(RangeResponse {
            header: Some(ResponseHeader {
                revision: header_revision,
                ..Default::default()
            }),
            kvs,
            more,
            count,
        })
    }

    /// etcd's HashKV: a hash of every key revision kept at or below `rev`.
    /// Replicas with the same history have the same hash.
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64), MvccError> {
        let rev = self.read_revision(rev)?;
        let mut h = crc32fast::Hasher::new();
        for (k, hist) in self.index.iter() {
            let upto = hist.first_at_or_after(rev.saturating_add(1));
            for r in hist.revs(&self.spill).take(upto) {
                let r = r?;
                h.update(&r.main.to_be_bytes());
                h.update(&r.sub.to_be_bytes());
                h.update(&(k.bytes().len() as u64).to_be_bytes());
                h.update(k.bytes());
                h.update(&r.create.to_be_bytes());
                h.update(&r.version.to_be_bytes());
                h.update(&r.lease.to_be_bytes());
                match &r.value {
                    Some(v) => {
                        h.update(&[1]);
                        h.update(&(v.len() as u64).to_be_bytes());
                        h.update(v);
                    }
                    None => h.update(&[0]),
                }
            }
        }
        Ok((h.finalize(), rev))
    }

    /// Number of keys with a live value at the current revision.
    pub fn live_keys(&self) -> usize {
        self.index
            .values()
            .filter(|h| !h.latest().is_tombstone())
            .count()
    }
}
/// What readers share with the state machine: the newest view.
///
/// The state machine changes the newest view in place ([`Self::update`]);
/// a reader takes a snapshot of it ([`Self::load`]), an O(1) copy that
/// later changes leave alone. A snapshot is made only when a reader asks
/// for one after a change, and kept for the readers after it until the
/// next change. So while nobody reads, the writer copies nothing: a node of
/// the map is copied (copy-on-write) only when a snapshot taken since its
/// last change still holds it.
#[derive(Clone)]
pub struct ReadView(Arc<Shared>);

struct Shared {
    /// A snapshot of `newest` as it is now; `None` after a change.
    published: ArcSwapOption<View>,
    /// `newest`'s auth store, for checks that need nothing else (a
    /// snapshot per client write would make the writer copy).
    auth: ArcSwap<crate::auth::AuthState>,
    /// The view as of the last change.
    newest: Mutex<View>,
}

impl ReadView {
    /// Start from `view`.
    pub fn new(view: View) -> Self {
        let published = Arc::new(view.clone());
        Self(Arc::new(Shared {
            published: ArcSwapOption::from(Some(published)),
            auth: ArcSwap::new(view.auth.clone()),
            newest: Mutex::new(view),
        }))
    }

    fn newest(&self) -> MutexGuard<'_, View> {
        self.0.newest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replace the view; readers see it from their next [`Self::load`].
    pub fn store(&self, view: Arc<View>) {
        let mut newest = self.newest();
        *newest = (*view).clone();
        self.0.auth.store(view.auth.clone());
        self.0.published.store(Some(view));
    }

    /// Change the view with `f`; readers see the change from their next
    /// [`Self::load`]. Readers that need a snapshot meanwhile wait for `f`:
    /// keep it to one command.
    pub fn update<R>(&self, f: impl FnOnce(&mut View) -> R) -> R {
        let mut newest = self.newest();
        let r = f(&mut newest);
        // Before the lock is released: a reader that comes after sees
        // the change.
        if self.0.published.load().is_some() {
            self.0.published.store(None);
        }
        if !Arc::ptr_eq(&self.0.auth.load(), &newest.auth) {
            self.0.auth.store(newest.auth.clone());
        }
        r
    }

    /// The current auth store (lock-free, and no snapshot made).
    pub fn auth(&self) -> Arc<crate::auth::AuthState> {
        self.0.auth.load_full()
    }

    /// The current view of the store: lock-free unless it changed since
    /// the last snapshot.
    pub fn load(&self) -> Arc<View> {
        if let Some(v) = self.0.published.load_full() {
            return v;
        }
        let newest = self.newest();
        // Another reader may have made the snapshot while this one waited.
        if let Some(v) = self.0.published.load_full() {
            return v;
        }
        let v = Arc::new(newest.clone());
        self.0.published.store(Some(v.clone()));
        v
    }
}

/// The lease side of the key index: which keys each lease holds.
impl View {
    /// Attach `key` to lease `id` (no-op for lease 0 or an unknown lease).
    pub fn attach_key(&mut self, id: i64, key: &Bytes) {
        if id == 0 {
            return;
        }
        if let Some(l) = self.leases.get_mut(&id) {
            l.keys.insert(key.clone());
        }
    }

    /// Detach `key` from lease `id` (no-op for lease 0 or an unknown lease).
    pub fn detach_key(&mut self, id: i64, key: &[u8]) {
        if id == 0 {
            return;
        }
        if let Some(l) = self.leases.get_mut(&id) {
            l.keys.remove(key);
        }
    }

    /// Rebuild every lease's key set from the key index (after loading the
    /// records from storage or a snapshot). Returns the number of live keys
    /// that name a lease the table does not have; they stay unattached.
    pub fn attach_lease_keys(&mut self) -> usize {
        let mut orphans = 0;
        let attached: Vec<(i64, Bytes)> = self
            .index
            .iter()
            .filter_map(|(k, h)| {
                latest_live(h)
                    .filter(|r| r.lease != 0)
                    .map(|r| (r.lease, k.bytes().clone()))
            })
            .collect();
        let ids: Vec<i64> = self.leases.keys().copied().collect();
        for id in ids {
            if let Some(l) = self.leases.get_mut(&id) {
                l.keys = OrdSet::new();
            }
        }
        for (id, key) in attached {
            match self.leases.get_mut(&id) {
                Some(l) => {
                    l.keys.insert(key);
                }
                None => orphans += 1,
            }
        }
        orphans
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::apply::apply_in;
    use crate::mvcc::Command;
    use crate::pb::etcdserverpb::PutRequest;

    fn put(k: &str, v: &str) -> Command {
        Command::Put(PutRequest {
            key: k.to_string().into(),
            value: v.to_string().into(),
            ..Default::default()
        })
    }

    /// A snapshot stays as it was while the view changes under it; readers
    /// after a change see it; readers between two changes share one
    /// snapshot.
    #[test]
    fn snapshots_keep_their_state_and_follow_each_change() {
        let rv = ReadView::new(View::default());
        rv.update(|v| apply_in(v, &put("a", "1")));
        let first = rv.load();
        assert!(
            Arc::ptr_eq(&first, &rv.load()),
            "no change, no new snapshot"
        );
        rv.update(|v| apply_in(v, &put("a", "2")));
        rv.update(|v| apply_in(v, &put("b", "3")));
        let second = rv.load();
        assert_eq!((first.revision, second.revision), (2, 4));
        let latest = |v: &View, k: &str| {
            v.history(k.as_bytes())
                .and_then(latest_live)
                .and_then(|r| r.value.clone())
        };
        assert_eq!(latest(&first, "a").as_deref(), Some(&b"1"[..]));
        assert_eq!(latest(&first, "b"), None);
        assert_eq!(latest(&second, "a").as_deref(), Some(&b"2"[..]));
        assert_eq!(latest(&second, "b").as_deref(), Some(&b"3"[..]));
        // A replaced view is what the next reader sees.
        rv.store(first.clone());
        assert_eq!(rv.load().revision, 2);
        assert!(Arc::ptr_eq(&rv.auth(), &first.auth));
        rv.update(|v| apply_in(v, &put("c", "4")));
        assert_eq!(rv.load().revision, 3);
        assert_eq!(first.revision, 2);
    }
}
