//! What the clients share and count: the run's keys and values (with
//! the watch workload's send-time stamp), a small random number generator,
//! and the [`Tally`] of one client or of all: an HDR latency histogram, the
//! errors by message, what the workload counts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use tonic::Status;

use super::Spec;

/// Distinct error messages one tally keeps; the rest are counted together.
const MAX_ERROR_KINDS: usize = 16;
/// Latencies are recorded in microseconds, up to an hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// The latency histogram every tally uses (microseconds, 3 significant digits).
pub(super) fn histogram() -> Histogram<u64> {
    // Fixed, valid bounds: creation cannot fail; fall back to auto-resizing.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .or_else(|_| Histogram::new(3))
        .unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
}

/// Record `d` into `h`.
pub(super) fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).clamp(1, MAX_LATENCY_US));
}

/// The keys of a run: `key_size` decimal digits, zero-padded.
#[derive(Debug, Clone, Copy)]
pub(super) struct Keys {
    pub size: usize,
    pub space: u64,
}

impl Keys {
    pub fn of(spec: &Spec) -> Keys {
        Keys {
            size: spec.key_size,
            space: spec.key_space,
        }
    }

    /// Key number `k`.
    pub fn key(&self, k: u64) -> Bytes {
        Bytes::from(format!("{k:0width$}", width = self.size))
    }

    /// The first key and the end of the range holding every key.
    pub fn range(&self) -> (Bytes, Bytes) {
        let mut end = BytesMut::from(&self.key(self.space - 1)[..]);
        end.put_u8(0);
        (self.key(0), end.freeze())
    }

    /// The number of a key of this run, if it is one.
    pub fn number(&self, key: &[u8]) -> Option<u64> {
        if key.len() != self.size || !key.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(key)
            .ok()?
            .parse()
            .ok()
            .filter(|k| *k < self.space)
    }
}

/// xorshift64*: enough to spread keys.
pub(super) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng((seed + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// What one client (or all, merged) saw.
pub(super) struct Tally {
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// txn-cas: compares that held, and that failed.
    pub cas_succeeded: u64,
    pub cas_failed: u64,
    pub found: u64,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            latency: histogram(),
            ok: 0,
            errors: BTreeMap::new(),
            cas_succeeded: 0,
            cas_failed: 0,
            found: 0,
        }
    }

    pub fn error(&mut self, what: String) {
        let what = if self.errors.len() >= MAX_ERROR_KINDS && !self.errors.contains_key(&what) {
            "(other errors)".to_string()
        } else {
            what
        };
        *self.errors.entry(what).or_default() += 1;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn merge(&mut self, other: Tally) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.ok += other.ok;
        for (what, n) in other.errors {
            *self.errors.entry(what).or_default() += n;
        }
        self.cas_succeeded += other.cas_succeeded;
        self.cas_failed += other.cas_failed;
        self.found += other.found;
    }
}

/// A failed request, as the report names it.
pub(super) fn status_text(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// The value every request writes: `val_size` bytes of `a`…`z`.
pub(super) fn value(size: usize) -> Bytes {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Bytes of the send-time stamp at the start of every value.
pub(super) const STAMP: usize = 8;

/// `value` with its first [`STAMP`] bytes replaced by the nanoseconds since
/// `start` (little endian).
pub(super) fn stamped(value: &Bytes, start: Instant) -> Bytes {
    let nanos = start.elapsed().as_nanos() as u64;
    let mut out = BytesMut::with_capacity(value.len().max(STAMP));
    out.put_u64_le(nanos);
    out.extend_from_slice(value.get(STAMP..).unwrap_or_default());
    out.freeze()
}

/// The stamp of a value, if it has one.
pub(super) fn stamp(value: &[u8]) -> Option<Duration> {
    let b: [u8; STAMP] = value.get(..STAMP)?.try_into().ok()?;
    Some(Duration::from_nanos(u64::from_le_bytes(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_width_decimals() {
        let keys = Keys {
            size: 8,
            space: 10_000,
        };
        assert_eq!(&keys.key(42)[..], b"00000042");
        assert_eq!(keys.number(b"00009999"), Some(9999));
        assert_eq!(keys.number(b"00010000"), None);
        assert_eq!(keys.number(b"0000042"), None);
        assert_eq!(keys.number(b"0000004x"), None);
        let (from, end) = keys.range();
        assert_eq!(&from[..], b"00000000");
        assert_eq!(&end[..], b"00009999\0");
    }

    #[test]
    fn tally_merges_and_caps_error_kinds() {
        let mut a = Tally::new();
        record(&mut a.latency, Duration::from_millis(2));
        a.ok = 1;
        for i in 0..20 {
            a.error(format!("e{i}"));
        }
        let mut b = Tally::new();
        record(&mut b.latency, Duration::from_millis(4));
        b.ok = 1;
        b.error("e0".into());
        a.merge(b);
        assert_eq!((a.ok, a.latency.len(), a.error_count()), (2, 2, 21));
        assert_eq!(a.errors["e0"], 2);
        assert_eq!(a.errors["(other errors)"], 4);
    }

    #[test]
    fn stamps_round_trip() {
        let start = Instant::now() - Duration::from_millis(5);
        let v = stamped(&Bytes::from_static(b"abcdefghijkl"), start);
        assert_eq!(v.len(), 12);
        assert_eq!(&v[STAMP..], b"ijkl");
        let s = stamp(&v).unwrap();
        assert!(
            s >= Duration::from_millis(5) && s < Duration::from_secs(60),
            "{s:?}"
        );
        assert_eq!(stamp(b"short"), None);
    }
}
