//! Key-range permissions as etcd 3.4 merges and checks them
//! (`auth/range_perm_cache.go`): every permission of every role of a user
//! becomes an interval in a read set and/or a write set; a single key is
//! permitted when some interval holds it, a range when the union of the
//! intervals covers all of it.

use serde::{Deserialize, Serialize};

/// etcd's `authpb.Permission.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermType {
    Read,
    Write,
    ReadWrite,
}

impl PermType {
    /// From the protobuf enum value; `None` for an unknown one.
    pub fn from_i32(v: i32) -> Option<Self> {
        match v {
            0 => Some(PermType::Read),
            1 => Some(PermType::Write),
            2 => Some(PermType::ReadWrite),
            _ => None,
        }
    }

    pub fn as_i32(self) -> i32 {
        match self {
            PermType::Read => 0,
            PermType::Write => 1,
            PermType::ReadWrite => 2,
        }
    }

    fn grants(self, want: Access) -> bool {
        matches!(
            (self, want),
            (PermType::ReadWrite, _)
                | (PermType::Read, Access::Read)
                | (PermType::Write, Access::Write)
        )
    }
}

/// What a request needs on its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One permission of a role: `key` alone (a single key), `key` to
/// `range_end` (exclusive), or from `key` on (`range_end` = `"\0"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Perm {
    pub kind: PermType,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
}

/// A half-open key interval; `end` `None` is past every key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Interval<'a> {
    begin: &'a [u8],
    end: End<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum End<'a> {
    /// Just `begin` (etcd's affine point: `[begin, begin + "\0")`).
    Point,
    Before(&'a [u8]),
    Infinite,
}

impl<'a> Interval<'a> {
    /// The interval of a permission or request, as etcd reads `range_end`.
    fn of(key: &'a [u8], range_end: &'a [u8]) -> Self {
        let end = match range_end {
            [] => End::Point,
            [0] => End::Infinite,
            e => End::Before(e),
        };
        Interval { begin: key, end }
    }

    fn holds(&self, k: &[u8]) -> bool {
        k >= self.begin
            && match self.end {
                End::Point => k == self.begin,
                End::Before(e) => k < e,
                End::Infinite => true,
            }
    }

    /// Whether every key from `from` (inclusive) is in the interval, up to
    /// where it ends: returns the first key past it, or `None` when it runs
    /// to infinity. `None` from the outer `Option` if `from` is not held.
    fn reach_from(&self, from: &[u8]) -> Option<Option<Vec<u8>>> {
        if !self.holds(from) {
            return None;
        }
        Some(match self.end {
            End::Point => Some([self.begin, &[0]].concat()),
            End::Before(e) => Some(e.to_vec()),
            End::Infinite => None,
        })
    }
}

/// Whether `perms` grant `want` on `key` alone (`range_end` empty) or on the
/// whole range `key`..`range_end`.
pub fn permits<'a>(
    perms: impl IntoIterator<Item = &'a Perm>,
    key: &[u8],
    range_end: &[u8],
    want: Access,
) -> bool {
    let granted: Vec<Interval<'_>> = perms
        .into_iter()
        .filter(|p| p.kind.grants(want))
        .map(|p| Interval::of(&p.key, &p.range_end))
        .collect();
    if range_end.is_empty() {
        return granted.iter().any(|i| i.holds(key));
    }
    let end: Option<&[u8]> = if range_end == [0] {
        None
    } else {
        Some(range_end)
    };
    if end.is_some_and(|e| e <= key) {
        // An empty range: etcd's interval tree finds nothing to cover it.
        return false;
    }
    // Walk from `key`, jumping to the farthest end of an interval holding
    // the current position, until past `end` or stuck in a gap.
    let mut at: Vec<u8> = key.to_vec();
    loop {
        let mut best: Option<Option<Vec<u8>>> = None;
        for i in &granted {
            match (i.reach_from(&at), &best) {
                (None, _) => {}
                (Some(None), _) => return true,
                (Some(Some(r)), Some(Some(b))) if r <= *b => {}
                (Some(Some(r)), _) => best = Some(Some(r)),
            }
        }
        match best {
            Some(Some(next)) => {
                if end.is_some_and(|e| next.as_slice() >= e) {
                    return true;
                }
                if next <= at {
                    return false;
                }
                at = next;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: PermType, key: &str, end: &str) -> Perm {
        Perm {
            kind,
            key: key.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
        }
    }

    #[test]
    fn single_keys_ranges_and_merging() {
        let perms = [
            p(PermType::Read, "a", "c"),
            p(PermType::ReadWrite, "c", "e"),
            p(PermType::Write, "x", ""),
            p(PermType::Read, "z", "\0"),
        ];
        assert!(permits(&perms, b"a", b"", Access::Read));
        assert!(permits(&perms, b"b", b"", Access::Read));
        assert!(!permits(&perms, b"b", b"", Access::Write));
        // [a,c) and [c,e) merge into [a,e).
        assert!(permits(&perms, b"a", b"e", Access::Read));
        assert!(!permits(&perms, b"a", b"f", Access::Read));
        assert!(permits(&perms, b"c", b"d", Access::Write));
        assert!(permits(&perms, b"x", b"", Access::Write));
        assert!(!permits(&perms, b"xa", b"", Access::Write));
        // The point "x" covers the range [x, x\0) exactly.
        assert!(permits(&perms, b"x", b"x\0", Access::Write));
        assert!(!permits(&perms, b"x", b"y", Access::Write));
        // From "z" on.
        assert!(permits(&perms, b"zz", b"", Access::Read));
        assert!(permits(&perms, b"z", b"\0", Access::Read));
        assert!(!permits(&perms, b"y", b"\0", Access::Read));
        // Empty ranges are refused.
        assert!(!permits(&perms, b"b", b"a", Access::Read));
        assert!(!permits(&[], b"a", b"", Access::Read));
    }

    #[test]
    fn the_whole_key_space() {
        let all = [p(PermType::ReadWrite, "\0", "\0")];
        assert!(permits(&all, b"\0", b"\0", Access::Read));
        assert!(permits(&all, b"anything", b"", Access::Write));
    }
}
