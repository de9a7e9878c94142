//! The checksummed record every raftcd file is made of.
//!
//! ```text
//! +------------+------------+--------+-----------------+
//! | len: u32le | crc: u32le | kind:u8| payload (len B) |
//! +------------+------------+--------+-----------------+
//! ```
//!
//! `crc` is CRC-32 (IEEE, `crc32fast`) over the kind byte and the payload.
//! Kind 0 is never written, so a run of zeros (a file extended but never
//! written, as a crash can leave it) never reads as a record. A reader
//! bounds `len` before it reads the payload: a flipped length bit cannot
//! make it allocate gigabytes.

/// Bytes before the payload: length, checksum, kind.
pub const HEADER: usize = 9;

/// Append one record to `out`.
pub fn put(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    put_parts(out, kind, &[payload]);
}

/// Append one record whose payload is `parts` one after the other (no copy
/// of them into a payload first).
pub fn put_parts(out: &mut Vec<u8>, kind: u8, parts: &[&[u8]]) {
    debug_assert!(kind != 0, "kind 0 is reserved");
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(total).unwrap_or(u32::MAX);
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    for p in parts {
        h.update(p);
    }
    out.reserve(HEADER + total);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.push(kind);
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// CRC-32 of a record's kind and payload.
pub fn checksum(kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(payload);
    h.finalize()
}

/// What [`parse`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole, intact record; `size` is its length with the header.
    Record {
        kind: u8,
        payload: &'a [u8],
        size: usize,
    },
    /// The buffer ends inside the record (a torn write, or a truncated
    /// file).
    Incomplete,
    /// The bytes are not a record: the reason.
    Bad(&'static str),
}

/// Parse the record at the start of `buf`; a payload longer than
/// `max_payload` is refused unread.
pub fn parse(buf: &[u8], max_payload: usize) -> Parsed<'_> {
    let Some(header) = buf.get(..HEADER) else {
        return Parsed::Incomplete;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let kind = header[8];
    if kind == 0 {
        return Parsed::Bad("record kind 0 (zeroed or never written)");
    }
    if len > max_payload {
        return Parsed::Bad("record length over the limit");
    }
    let Some(payload) = buf.get(HEADER..HEADER + len) else {
        return Parsed::Incomplete;
    };
    if checksum(kind, payload) != crc {
        return Parsed::Bad("checksum mismatch");
    }
    Parsed::Record {
        kind,
        payload,
        size: HEADER + len,
    }
}

/// Whether an intact record starts anywhere in `buf` after its first byte:
/// tells damage in the middle of a file (intact records follow it) from a
/// torn tail (nothing intact follows).
pub fn any_record_after(buf: &[u8], max_payload: usize) -> Option<usize> {
    (1..buf.len().saturating_sub(HEADER - 1))
        .find(|&at| matches!(parse(&buf[at..], max_payload), Parsed::Record { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_named() {
        let mut buf = Vec::new();
        put(&mut buf, 1, b"hello");
        put(&mut buf, 2, b"");
        let Parsed::Record {
            kind,
            payload,
            size,
        } = parse(&buf, 100)
        else {
            panic!("first record")
        };
        assert_eq!((kind, payload, size), (1, &b"hello"[..], HEADER + 5));
        assert!(matches!(
            parse(&buf[size..], 100),
            Parsed::Record {
                kind: 2,
                size: HEADER,
                ..
            }
        ));
        // Every single bit flip in the first record is caught.
        for bit in 0..(size * 8) {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            match parse(&bad, 100) {
                Parsed::Record { payload, kind, .. } => {
                    panic!("bit {bit}: read kind {kind} {payload:?}")
                }
                Parsed::Bad(_) | Parsed::Incomplete => {}
            }
        }
        let mut parts = Vec::new();
        put_parts(&mut parts, 1, &[b"hel", b"", b"lo"]);
        assert_eq!(parts, buf[..size]);
        assert_eq!(parse(&buf[..size - 1], 100), Parsed::Incomplete);
        assert_eq!(parse(&buf[..3], 100), Parsed::Incomplete);
        assert_eq!(parse(&buf, 4), Parsed::Bad("record length over the limit"));
        assert!(matches!(parse(&[0u8; 64], 100), Parsed::Bad(_)));
        // A damaged first record with an intact one behind it.
        let mut bad = buf.clone();
        bad[HEADER + 1] ^= 0x40;
        assert_eq!(any_record_after(&bad, 100), Some(size));
        assert_eq!(any_record_after(&buf[..size], 100), None);
        assert_eq!(any_record_after(&[0u8; 100], 100), None);
    }
}
