//! The index's key: a key's bytes, with their first 16 bytes also kept in
//! place as one big-endian number.
//!
//! A lookup in the index compares the wanted key with some thirty keys on
//! its way down the map's nodes. Comparing two `Bytes` follows each to its
//! own heap allocation, a cache miss per probed key that made the search
//! the largest item of a get's CPU (docs/benchmarks.md, session 15). With
//! the head in place, keys that differ in their first 16 bytes compare
//! without leaving the node, and keys of up to 16 bytes never leave it.
//!
//! The order is exactly the bytes' lexicographic order (a shorter key that
//! is a prefix of a longer one comes first), so the map can still be
//! searched with a plain `&[u8]` ([`Borrow`]); the hot paths search with an
//! [`IndexKey`] ([`IndexKey::probe`]) to compare heads.

use std::borrow::Borrow;
use std::cmp::Ordering;

use bytes::Bytes;

/// How many leading bytes of a key compare in place.
const HEAD: usize = 16;

/// A key of the index (see the module's documentation).
#[derive(Clone, Debug)]
pub struct IndexKey {
    /// The first [`HEAD`] bytes, zero-padded, big-endian.
    head: u128,
    bytes: Bytes,
}

impl IndexKey {
    pub fn new(bytes: Bytes) -> Self {
        let mut head = [0u8; HEAD];
        let n = bytes.len().min(HEAD);
        head[..n].copy_from_slice(&bytes[..n]);
        Self {
            head: u128::from_be_bytes(head),
            bytes,
        }
    }

    /// A key to search the index for `key` with: a copy of it, which a
    /// new key can become (the index never keeps a slice of a request).
    pub fn probe(key: &[u8]) -> Self {
        Self::new(Bytes::copy_from_slice(key))
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl Ord for IndexKey {
    fn cmp(&self, other: &Self) -> Ordering {
        match self.head.cmp(&other.head) {
            // Equal heads of keys of at most HEAD bytes: the zero padding
            // matched, so the shorter key is a prefix of the longer.
            Ordering::Equal if self.bytes.len() <= HEAD && other.bytes.len() <= HEAD => {
                self.bytes.len().cmp(&other.bytes.len())
            }
            Ordering::Equal => self.bytes[..].cmp(&other.bytes[..]),
            unequal => unequal,
        }
    }
}

impl PartialOrd for IndexKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for IndexKey {
    fn eq(&self, other: &Self) -> bool {
        self.head == other.head && self.bytes == other.bytes
    }
}

impl Eq for IndexKey {}

impl Borrow<[u8]> for IndexKey {
    fn borrow(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: &[u8]) -> IndexKey {
        IndexKey::new(Bytes::copy_from_slice(b))
    }

    #[test]
    fn prefixes_and_zero_bytes_order_as_bytes() {
        let ordered: [&[u8]; 9] = [
            b"",
            b"\0",
            b"\0\0",
            b"a",
            b"a\0",
            b"a\0\x01",
            b"aaaaaaaaaaaaaaaa",
            b"aaaaaaaaaaaaaaaa\0",
            b"aaaaaaaaaaaaaaaab",
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(key(a).cmp(&key(b)), i.cmp(&j), "{a:?} vs {b:?}");
                assert_eq!(key(a) == key(b), i == j);
            }
        }
    }

    proptest! {
        /// The order (and equality) of index keys is their bytes' order.
        #[test]
        fn orders_as_its_bytes(
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(b'a'), any::<u8>()], 0..40),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(b'a'), any::<u8>()], 0..40),
            shared in 0usize..40,
        ) {
            // Often a common prefix, so heads tie and the tails decide.
            let shared = shared.min(a.len());
            let mut b2 = a[..shared].to_vec();
            b2.extend_from_slice(&b);
            for (x, y) in [(&a, &b), (&a, &b2)] {
                prop_assert_eq!(key(x).cmp(&key(y)), x.cmp(y));
                prop_assert_eq!(key(x) == key(y), x == y);
            }
        }
    }
}
