//! One key's revision history, oldest first, as the view holds it.
//!
//! Most keys have a few revisions (a compacted store has one per key), a
//! few have thousands. A persistent vector (`imbl::Vector`) allocates its
//! elements in chunks of 64: for a key with two revisions that is a 4.6 KiB
//! chunk, which made 10,000 keys written twice cost 46 MiB. So a history of
//! up to [`FEW`] revisions is a shared slice copied on each write (at most
//! a few KiB), and a longer one is a persistent vector, cheap to extend and
//! to share between views. Both clone in O(1).

use std::sync::Arc;

use bytes::Bytes;
use imbl::Vector;

use crate::pb::mvccpb::KeyValue;

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

/// Histories up to this many revisions are kept as a shared slice.
pub const FEW: usize = 32;

/// A key's history, oldest revision first.
#[derive(Clone, Debug)]
pub enum History {
    /// Up to [`FEW`] revisions, copied on write.
    Few(Arc<[Rev]>),
    /// More: a persistent vector.
    Many(Vector<Rev>),
}

impl Default for History {
    fn default() -> Self {
        History::Few(Arc::from(Vec::new()))
    }
}

impl PartialEq for History {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for History {}

impl History {
    pub fn len(&self) -> usize {
        match self {
            History::Few(a) => a.len(),
            History::Many(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> Option<&Rev> {
        match self {
            History::Few(a) => a.get(i),
            History::Many(v) => v.get(i),
        }
    }

    pub fn last(&self) -> Option<&Rev> {
        match self {
            History::Few(a) => a.last(),
            History::Many(v) => v.last(),
        }
    }

    /// The revisions, oldest first.
    pub fn iter(&self) -> Iter<'_> {
        match self {
            History::Few(a) => Iter::Few(a.iter()),
            History::Many(v) => Iter::Many(v.iter()),
        }
    }

    pub fn binary_search_by(
        &self,
        f: impl FnMut(&Rev) -> std::cmp::Ordering,
    ) -> Result<usize, usize> {
        match self {
            History::Few(a) => a.binary_search_by(f),
            History::Many(v) => v.binary_search_by(f),
        }
    }

    /// Add the newest revision.
    pub fn push_back(&mut self, rev: Rev) {
        match self {
            History::Few(a) if a.len() < FEW => {
                let mut v = Vec::with_capacity(a.len() + 1);
                v.extend_from_slice(a);
                v.push(rev);
                *a = Arc::from(v);
            }
            History::Few(a) => {
                let mut v: Vector<Rev> = a.iter().cloned().collect();
                v.push_back(rev);
                *self = History::Many(v);
            }
            History::Many(v) => v.push_back(rev),
        }
    }

    /// Split at `at`: `self` keeps the older part, the newer one (from
    /// `at` on) is returned, as a shared slice again if it is short.
    pub fn split_off(&mut self, at: usize) -> History {
        match self {
            History::Few(a) => {
                let at = at.min(a.len());
                let newer = History::Few(Arc::from(&a[at..]));
                *a = Arc::from(&a[..at]);
                newer
            }
            History::Many(v) => {
                let newer = v.split_off(at.min(v.len()));
                if newer.len() <= FEW {
                    History::Few(newer.iter().cloned().collect::<Vec<_>>().into())
                } else {
                    History::Many(newer)
                }
            }
        }
    }
}

/// Iterator over a [`History`], oldest first.
pub enum Iter<'a> {
    Few(std::slice::Iter<'a, Rev>),
    Many(imbl::vector::Iter<'a, Rev, imbl::shared_ptr::DefaultSharedPtr>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Rev;

    fn next(&mut self) -> Option<&'a Rev> {
        match self {
            Iter::Few(i) => i.next(),
            Iter::Many(i) => i.next(),
        }
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Few(i) => i.next_back(),
            Iter::Many(i) => i.next_back(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Rev {
        Rev {
            main,
            sub: 0,
            create: 1,
            version: main,
            lease: 0,
            value: Some(Bytes::from(main.to_string())),
        }
    }

    #[test]
    fn short_and_long_histories_behave_alike() {
        let mut h = History::default();
        let mut plain = Vec::new();
        for i in 1..=100i64 {
            h.push_back(rev(i));
            plain.push(rev(i));
            let shared = h.clone();
            assert_eq!(matches!(h, History::Few(_)), i as usize <= FEW);
            assert_eq!(h.len(), plain.len());
            assert_eq!(h.last(), plain.last());
            assert!(h.iter().eq(plain.iter()));
            assert!(h.iter().rev().eq(plain.iter().rev()));
            assert_eq!(h.get(i as usize / 2), plain.get(i as usize / 2));
            assert_eq!(
                h.binary_search_by(|r| r.main.cmp(&(i / 2))),
                plain.binary_search_by(|r| r.main.cmp(&(i / 2)))
            );
            assert_eq!(shared, h);
        }
        // Split a long one: the short newer part is a slice again.
        let mut older = h.clone();
        let newer = older.split_off(90);
        assert!(matches!(newer, History::Few(_)));
        assert!(newer.iter().eq(plain[90..].iter()));
        assert!(older.iter().eq(plain[..90].iter()));
        // And a short one.
        let mut few = History::default();
        for i in 1..=5 {
            few.push_back(rev(i));
        }
        let tail = few.split_off(3);
        assert!(few.iter().eq(plain[..3].iter()));
        assert!(tail.iter().eq(plain[3..5].iter()));
        assert_eq!(few.split_off(10).len(), 0);
    }
}
