//! One key's revision history, oldest first, as the view holds it.
//!
//! Only a key's latest revision is read on the hot path (puts, txn
//! compares, current reads), so it is the only one kept whole in memory.
//! Each older revision is a 16-byte [`Slot`]: its main revision and where
//! its record is in the store's [`Spill`] (a tombstone needs no record: its
//! sub revision is in the slot). Reads at old revisions, watch replays and
//! snapshots read those records back.
//!
//! A history is one `Arc`, so the index's map entries stay small (the
//! persistent map copies a whole leaf of entries on write). Older slots up
//! to [`FEW`] are a shared slice copied on write (a persistent vector
//! allocates 64 slots at a time); more are a persistent vector, cheap to
//! extend and to share between views. Everything clones in O(1).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use imbl::Vector;

use crate::pb::mvccpb::KeyValue;
use crate::storage::spill::{Spill, SpillError};

/// One revision of one key. `value == None` marks a tombstone (delete).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rev {
    pub main: i64,
    pub sub: u32,
    pub create: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Option<Bytes>,
}

impl Rev {
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    pub fn to_kv(&self, key: &Bytes) -> KeyValue {
        KeyValue {
            key: key.clone(),
            create_revision: self.create,
            mod_revision: self.main,
            version: self.version,
            value: self.value.clone().unwrap_or_default(),
            lease: self.lease,
        }
    }
}

/// Older slots up to this many are kept as a shared slice.
pub const FEW: usize = 32;

/// A superseded revision: its main revision and its place in the spill,
/// or, with [`TOMBSTONE`] set, a tombstone and its sub revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    main: i64,
    loc: u64,
}

const TOMBSTONE: u64 = 1 << 63;

/// Bytes of a spilled record before the value: sub, create, version, lease.
const RECORD_HEAD: usize = 4 + 8 + 8 + 8;

#[derive(Clone, Debug)]
enum Older {
    None,
    Few(Arc<[Slot]>),
    Many(Vector<Slot>),
}

impl Older {
    fn len(&self) -> usize {
        match self {
            Older::None => 0,
            Older::Few(a) => a.len(),
            Older::Many(v) => v.len(),
        }
    }

    fn get(&self, i: usize) -> Option<Slot> {
        match self {
            Older::None => None,
            Older::Few(a) => a.get(i).copied(),
            Older::Many(v) => v.get(i).copied(),
        }
    }

    fn push(&mut self, slot: Slot) {
        match self {
            Older::None => *self = Older::Few(Arc::from([slot])),
            Older::Few(a) if a.len() < FEW => {
                let mut v = Vec::with_capacity(a.len() + 1);
                v.extend_from_slice(a);
                v.push(slot);
                *a = Arc::from(v);
            }
            Older::Few(a) => {
                let mut v: Vector<Slot> = a.iter().copied().collect();
                v.push_back(slot);
                *self = Older::Many(v);
            }
            Older::Many(v) => v.push_back(slot),
        }
    }

    /// The slots from `at` on.
    fn from(&self, at: usize) -> Older {
        let n = self.len();
        if at >= n {
            return Older::None;
        }
        match self {
            Older::None => Older::None,
            Older::Few(a) => Older::Few(Arc::from(&a[at..])),
            Older::Many(v) => {
                let newer = v.clone().split_off(at);
                if newer.len() <= FEW {
                    Older::Few(newer.iter().copied().collect::<Vec<_>>().into())
                } else {
                    Older::Many(newer)
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Inner {
    older: Older,
    latest: Rev,
}

/// A key's history, oldest revision first; never empty.
#[derive(Clone, Debug)]
pub struct History(Arc<Inner>);

impl History {
    /// A history of one revision.
    pub fn new(rev: Rev) -> Self {
        History(Arc::new(Inner {
            older: Older::None,
            latest: rev,
        }))
    }

    /// Number of revisions (at least one).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.0.older.len() + 1
    }

    /// The newest revision.
    pub fn latest(&self) -> &Rev {
        &self.0.latest
    }

    /// Main revision of entry `i`.
    pub fn main(&self, i: usize) -> Option<i64> {
        match self.0.older.get(i) {
            Some(s) => Some(s.main),
            None if i == self.0.older.len() => Some(self.0.latest.main),
            None => None,
        }
    }

    /// Whether entry `i` is a tombstone.
    pub fn is_tombstone(&self, i: usize) -> Option<bool> {
        match self.0.older.get(i) {
            Some(s) => Some(s.loc & TOMBSTONE != 0),
            None if i == self.0.older.len() => Some(self.0.latest.is_tombstone()),
            None => None,
        }
    }

    /// Entry `i`, read back from `spill` unless it is the latest.
    pub fn rev(&self, i: usize, spill: &Spill) -> Result<Option<Cow<'_, Rev>>, SpillError> {
        let Some(slot) = self.0.older.get(i) else {
            return Ok((i == self.0.older.len()).then_some(Cow::Borrowed(&self.0.latest)));
        };
        if slot.loc & TOMBSTONE != 0 {
            return Ok(Some(Cow::Owned(Rev {
                main: slot.main,
                sub: slot.loc as u32,
                create: 0,
                version: 0,
                lease: 0,
                value: None,
            })));
        }
        let rec = spill.read(slot.loc)?;
        let head = rec.get(..RECORD_HEAD).ok_or(SpillError::Damaged {
            loc: slot.loc,
            reason: "record shorter than its fields",
        })?;
        let int = |at: usize| i64::from_le_bytes(head[at..at + 8].try_into().unwrap_or_default());
        Ok(Some(Cow::Owned(Rev {
            main: slot.main,
            sub: u32::from_le_bytes(head[..4].try_into().unwrap_or_default()),
            create: int(4),
            version: int(12),
            lease: int(20),
            value: Some(rec.slice(RECORD_HEAD..)),
        })))
    }

    /// Index of the entry visible at revision `rev`: the newest with
    /// `main <= rev`.
    pub fn position_at(&self, rev: i64) -> Option<usize> {
        if self.0.latest.main <= rev {
            return Some(self.0.older.len());
        }
        let first_after = self.first_at_or_after(rev.saturating_add(1));
        first_after.checked_sub(1)
    }

    /// Index of the first entry with `main >= rev` (`len()` if none).
    pub fn first_at_or_after(&self, rev: i64) -> usize {
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.main(mid) {
                Some(m) if m < rev => lo = mid + 1,
                _ => hi = mid,
            }
        }
        lo
    }

    /// `(index, main revision)` of each entry with `main >= rev`, oldest
    /// first.
    pub fn entries_from(&self, rev: i64) -> impl Iterator<Item = (usize, i64)> + '_ {
        (self.first_at_or_after(rev)..self.len()).filter_map(|i| Some((i, self.main(i)?)))
    }

    /// Add the newest revision; the one it supersedes goes to `spill`.
    pub fn push(&mut self, rev: Rev, spill: &mut Spill) {
        let tag = rev.main;
        let inner = Arc::make_mut(&mut self.0);
        let old = std::mem::replace(&mut inner.latest, rev);
        let loc = match &old.value {
            None => TOMBSTONE | u64::from(old.sub),
            Some(v) => {
                let mut head = [0u8; RECORD_HEAD];
                head[..4].copy_from_slice(&old.sub.to_le_bytes());
                head[4..12].copy_from_slice(&old.create.to_le_bytes());
                head[12..20].copy_from_slice(&old.version.to_le_bytes());
                head[20..].copy_from_slice(&old.lease.to_le_bytes());
                spill.append(&[&head, v], tag) & !TOMBSTONE
            }
        };
        inner.older.push(Slot {
            main: old.main,
            loc,
        });
    }

    /// The history from entry `at` on; `None` if that is nothing.
    pub fn keep_from(&self, at: usize) -> Option<History> {
        let older = self.0.older.len();
        match at {
            0 => Some(self.clone()),
            a if a > older => None,
            a => Some(History(Arc::new(Inner {
                older: self.0.older.from(a),
                latest: self.0.latest.clone(),
            }))),
        }
    }

    /// Every entry, oldest first, read back from `spill`.
    pub fn revs<'a>(
        &'a self,
        spill: &'a Spill,
    ) -> impl Iterator<Item = Result<Cow<'a, Rev>, SpillError>> + 'a {
        (0..self.len()).filter_map(move |i| self.rev(i, spill).transpose())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Rev {
        let tomb = main % 5 == 0;
        Rev {
            main,
            sub: (main % 3) as u32,
            create: if tomb { 0 } else { 1 },
            version: if tomb { 0 } else { main },
            lease: if tomb { 0 } else { main * 7 },
            value: (!tomb).then(|| Bytes::from(main.to_string().repeat(main as usize % 40))),
        }
    }

    #[test]
    fn histories_read_back_what_was_pushed_from_memory_and_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        for mut spill in [Spill::memory(), Spill::open(dir.path()).unwrap()] {
            let mut h = History::new(rev(1));
            let mut plain = vec![rev(1)];
            for i in 2..=100i64 {
                let before = h.clone();
                h.push(rev(i), &mut spill);
                plain.push(rev(i));
                assert_eq!(h.len(), plain.len());
                assert_eq!(h.latest(), plain.last().unwrap());
                // The old history is untouched.
                assert_eq!(before.len(), plain.len() - 1);
                assert_eq!(before.latest(), &plain[plain.len() - 2]);
                let all: Vec<Rev> = h.revs(&spill).map(|r| r.unwrap().into_owned()).collect();
                assert_eq!(all, plain);
                for (j, p) in plain.iter().enumerate() {
                    assert_eq!(h.main(j), Some(p.main));
                    assert_eq!(h.is_tombstone(j), Some(p.is_tombstone()));
                }
                assert_eq!(h.main(plain.len()), None);
                assert!(h.rev(plain.len(), &spill).unwrap().is_none());
            }
            spill.flush();
            // Positions: newest at or below a revision.
            assert_eq!(h.position_at(0), None);
            assert_eq!(h.position_at(1), Some(0));
            assert_eq!(h.position_at(50), Some(49));
            assert_eq!(h.position_at(i64::MAX), Some(99));
            assert_eq!(h.first_at_or_after(50), 49);
            assert_eq!(h.first_at_or_after(101), 100);
            // Keep the newer part: long and short.
            let tail = h.keep_from(90).unwrap();
            let got: Vec<Rev> = tail.revs(&spill).map(|r| r.unwrap().into_owned()).collect();
            assert_eq!(got, plain[90..]);
            assert_eq!(h.keep_from(99).unwrap().len(), 1);
            assert!(h.keep_from(100).is_none());
            assert_eq!(h.keep_from(0).unwrap().len(), 100);
        }
    }
}
