//! A log segment's format, and recovery: reading every segment of the log
//! directory, checking every record, and deciding what is a torn tail
//! (cut off) and what is damage (refused). See [`super`].

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::frame::{self, Parsed};
use crate::storage::{damaged, io, sync_failed, StorageError, Syncer};

pub(super) const MAGIC: &[u8; 8] = b"RAFTCDwl";
pub(super) const VERSION: u8 = 1;
pub(super) const KIND_HEADER: u8 = 1;
pub(super) const KIND_ENTRY: u8 = 2;
/// A segment is closed once it holds this much.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// The segment being written is allocated this much at a time ahead of
/// its writes (see [`super`]).
pub const PREALLOC_BYTES: u64 = 4 << 20;
/// Zeros written ahead of the records in allocated space, at a time (see
/// [`super`]).
pub const ZERO_AHEAD_BYTES: u64 = 64 << 10;
/// The largest entry read back: bigger than any entry the proposer makes
/// (requests are capped at 256 MiB), small enough to bound a bad length.
pub(super) const MAX_ENTRY: usize = 1 << 30;

/// One segment file.
pub(super) struct Segment {
    pub(super) seq: u64,
    pub(super) first_index: u64,
    pub(super) path: PathBuf,
    pub(super) file: Arc<File>,
    pub(super) len: u64,
    /// The file's size: `len` plus the preallocated space after it, which
    /// holds zeros.
    pub(super) allocated: u64,
    /// Where the zeros written ahead of the records end (at least `len`):
    /// the space from `len` to here holds written zeros, the space after it
    /// up to `allocated` unwritten (allocated) zeros. Zeros are written
    /// only in allocated space; without preallocation (a filesystem
    /// without `fallocate`) this is `len`.
    pub(super) zeroed: u64,
    /// Offset and size of each entry record: entry `first_index + i` is at
    /// `entries[i]`.
    pub(super) entries: Vec<(u64, u32)>,
}

impl Segment {
    pub(super) fn end_index(&self) -> u64 {
        self.first_index + self.entries.len() as u64
    }
}

pub(super) fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}.wal")
}

fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (seq, first) = stem.split_once('-')?;
    if seq.len() != 16 || first.len() != 16 {
        return None;
    }
    let (seq, first) = (
        u64::from_str_radix(seq, 16).ok()?,
        u64::from_str_radix(first, 16).ok()?,
    );
    // Never written (the next sequence number and index must not
    // overflow): not a segment of ours.
    (seq < u64::MAX && first < u64::MAX).then_some((seq, first))
}

/// Index of the first and last entry `segments` hold (`None`: none).
pub(super) fn bounds(segments: &VecDeque<Segment>) -> (Option<u64>, Option<u64>) {
    let first = segments
        .iter()
        .find(|s| !s.entries.is_empty())
        .map(|s| s.first_index);
    let last = segments
        .iter()
        .rev()
        .find(|s| !s.entries.is_empty())
        .map(|s| s.end_index() - 1);
    (first, last)
}

/// What [`recover`] found.
pub(super) struct Recovery {
    pub(super) segments: VecDeque<Segment>,
    pub(super) first: Option<u64>,
    pub(super) last: Option<u64>,
    pub(super) repaired: Option<String>,
}

/// Allocate `len` bytes of `file` from `offset`, extending its size
/// (`fallocate` mode 0: the new space reads as zeros).
#[cfg(target_os = "linux")]
pub(super) fn allocate(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::other(
            "preallocation past the largest file offset",
        ));
    };
    // SAFETY: the descriptor is open for as long as `file` is borrowed;
    // fallocate reads no memory of ours.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere: extend the file (a sparse tail; the size is still committed
/// once per step instead of once per append).
#[cfg(not(target_os = "linux"))]
pub(super) fn allocate(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    file.set_len(offset.saturating_add(len))
}

/// Read and check the log directory `dir` (see [`super::Wal::open`]);
/// repairs a torn tail only once every check passed.
pub(super) fn recover(
    dir: &Path,
    keep_from: u64,
    reach: u64,
    syncer: &dyn Syncer,
) -> Result<Recovery, StorageError> {
    let mut names = Vec::new();
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => Some(listing),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(dir, "list")(e)),
    };
    for item in listing.into_iter().flatten() {
        let item = item.map_err(io(dir, "list"))?;
        let name = item.file_name().to_string_lossy().into_owned();
        match parse_segment_name(&name) {
            Some((seq, first)) => names.push((seq, first, item.path())),
            None => {
                return Err(damaged(
                    &item.path(),
                    0,
                    "a file that is not a raftcd log segment in the log directory",
                ))
            }
        }
    }
    names.sort();
    let mut segments = VecDeque::new();
    // Repairs, made only once every check passed.
    let mut unstarted = None;
    let mut torn_tail = None;
    let count = names.len();
    for (i, (seq, first, path)) in names.into_iter().enumerate() {
        let last = i + 1 == count;
        let (segment, torn) = match read_segment(&path, seq, first, last)? {
            Read::Segment(segment, torn) => (segment, torn),
            Read::Unstarted => {
                unstarted = Some(path);
                continue;
            }
        };
        if let Some(prev) = segments.back() {
            check_follows(prev, &segment, keep_from)?;
        }
        // Only the last segment can be torn.
        torn_tail = torn;
        segments.push_back(segment);
    }
    let (first, last) = bounds(&segments);
    let held = last.unwrap_or(0).max(keep_from.saturating_sub(1));
    if reach > held {
        return Err(damaged(
                dir,
                0,
                format!("the log ends at index {held} but entries up to {reach} were committed or applied from it: the log was cut short"),
            ));
    }
    let mut repaired = None;
    if let Some(path) = unstarted {
        std::fs::remove_file(&path).map_err(io(&path, "remove"))?;
        tracing::warn!(file = %path.display(), "removed a log segment whose header a crash cut short (it held nothing)");
        repaired = Some(format!(
            "{}: removed, its header was cut short",
            path.display()
        ));
    }
    if let (Some((offset, reason)), Some(seg)) = (torn_tail, segments.back()) {
        // Cut the torn record off so the next append follows the last
        // intact one (synced below).
        let path = &seg.path;
        seg.file.set_len(offset).map_err(io(path, "truncate"))?;
        tracing::warn!(file = %path.display(), offset, reason, "the Raft log ended in a torn write (a crash during an append that was never acknowledged); cut it off");
        repaired = Some(format!(
            "{}: cut a torn last record at offset {offset} ({reason})",
            path.display()
        ));
    }
    std::fs::create_dir_all(dir).map_err(io(dir, "create"))?;
    // What a killed process wrote may still be only in the page cache, and
    // a cut changed the size: make the last segment durable before it
    // counts as such.
    if let Some(seg) = segments.back() {
        syncer.sync_all(&seg.file).map_err(sync_failed(&seg.path))?;
    }
    Ok(Recovery {
        segments,
        first,
        last,
        repaired,
    })
}

/// What [`read_segment`] found.
enum Read {
    /// The segment, and a torn tail to cut off (offset, reason).
    Segment(Segment, Option<(u64, &'static str)>),
    /// The last segment was created but its header never fully written: it
    /// holds nothing and goes.
    Unstarted,
}

/// Read and check one segment. For the last segment, a damaged tail with
/// nothing intact after it is reported as torn instead of refused.
fn read_segment(path: &Path, seq: u64, first_index: u64, last: bool) -> Result<Read, StorageError> {
    let bytes = std::fs::read(path).map_err(io(path, "read"))?;
    let head_len = MAGIC.len() + frame::HEADER + 17;
    if last && bytes.len() < head_len && MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())]) {
        if let Parsed::Incomplete = frame::parse(bytes.get(MAGIC.len()..).unwrap_or_default(), 64) {
            return Ok(Read::Unstarted);
        }
    }
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(damaged(
            path,
            0,
            "not a raftcd log segment (wrong magic bytes)",
        ));
    }
    let mut at = MAGIC.len();
    let mut torn = None;
    match frame::parse(&bytes[at..], 64) {
        Parsed::Record {
            kind: KIND_HEADER,
            payload,
            size,
        } if payload.len() == 17 => {
            let version = payload[0];
            let s = u64::from_le_bytes(payload[1..9].try_into().unwrap_or_default());
            let f = u64::from_le_bytes(payload[9..17].try_into().unwrap_or_default());
            if version != VERSION {
                return Err(damaged(path, at as u64, format!("log format version {version} (this build reads {VERSION}); was it written by a newer raftcd?")));
            }
            if (s, f) != (seq, first_index) {
                return Err(damaged(path, at as u64, format!("header says segment {s} from index {f}, the name says {seq} from {first_index}")));
            }
            at += size;
        }
        _ => return Err(damaged(path, at as u64, "bad segment header")),
    }
    let mut entries = Vec::new();
    {
        let mut index = first_index;
        while at < bytes.len() {
            match frame::parse(&bytes[at..], MAX_ENTRY) {
                Parsed::Record {
                    kind: KIND_ENTRY,
                    payload,
                    size,
                } => {
                    let found = payload
                        .get(..8)
                        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
                    if found != Some(index) {
                        return Err(damaged(
                            path,
                            at as u64,
                            format!("expected entry {index}, found {found:?}"),
                        ));
                    }
                    // No log comes near index u64::MAX: one there is
                    // damage (and the next index must not overflow).
                    let Some(next) = index.checked_add(1) else {
                        return Err(damaged(path, at as u64, "entry index u64::MAX"));
                    };
                    entries.push((at as u64, size as u32));
                    index = next;
                    at += size;
                }
                Parsed::Record { kind, .. } => {
                    return Err(damaged(
                        path,
                        at as u64,
                        format!("unknown record kind {kind}"),
                    ))
                }
                // The last segment's preallocated space, never written:
                // the log ends here.
                Parsed::Incomplete | Parsed::Bad(_)
                    if last && bytes[at..].iter().all(|&b| b == 0) =>
                {
                    break;
                }
                Parsed::Incomplete | Parsed::Bad(_)
                    if last && frame::any_record_after(&bytes[at..], MAX_ENTRY).is_none() =>
                {
                    let reason = match frame::parse(&bytes[at..], MAX_ENTRY) {
                        Parsed::Bad(r) => r,
                        _ => "record cut short",
                    };
                    torn = Some((at as u64, reason));
                    break;
                }
                Parsed::Incomplete => {
                    return Err(damaged(
                        path,
                        at as u64,
                        "record cut short before the end of the log",
                    ))
                }
                Parsed::Bad(reason) => return Err(damaged(path, at as u64, reason)),
            }
        }
    }
    // Where the records end (the next append goes there), and the file's
    // size: a torn tail is cut off (see `recover`), preallocated space kept.
    let len = torn.map_or(at as u64, |(offset, _)| offset);
    let allocated = if torn.is_some() {
        len
    } else {
        bytes.len() as u64
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(path, "open"))?;
    Ok(Read::Segment(
        Segment {
            seq,
            first_index,
            path: path.to_path_buf(),
            file: Arc::new(file),
            len,
            allocated,
            zeroed: len,
            entries,
        },
        torn,
    ))
}

/// Segments follow each other without a gap in the indices, except past a
/// purge (a log emptied by a purge starts again after it).
fn check_follows(prev: &Segment, next: &Segment, keep_from: u64) -> Result<(), StorageError> {
    if next.seq != prev.seq + 1 {
        return Err(damaged(
            &next.path,
            0,
            format!(
                "segment {} follows segment {}: a segment is missing",
                next.seq, prev.seq
            ),
        ));
    }
    let expected = prev.end_index();
    if next.first_index != expected
        && !(next.first_index > expected && next.first_index <= keep_from)
    {
        return Err(damaged(&next.path, 0, format!("segment starts at index {} but the previous one ends before {expected}: entries are missing", next.first_index)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::OsSync;

    /// Found by the `wal` fuzz target: a segment starting just below
    /// u64::MAX with two entries overflowed the next index (a panic in
    /// debug builds); it is damage, and a name at u64::MAX is no segment.
    #[test]
    fn indices_at_the_end_of_u64_are_refused_not_overflowed() {
        let dir = tempfile::tempdir().unwrap();
        let first = u64::MAX - 1;
        let mut bytes = MAGIC.to_vec();
        let mut head = vec![VERSION];
        head.extend_from_slice(&1u64.to_le_bytes());
        head.extend_from_slice(&first.to_le_bytes());
        frame::put(&mut bytes, KIND_HEADER, &head);
        for i in [first, u64::MAX] {
            frame::put_parts(&mut bytes, KIND_ENTRY, &[&i.to_le_bytes(), b"e"]);
        }
        std::fs::write(dir.path().join(segment_name(1, first)), &bytes).unwrap();
        let err = recover(dir.path(), 0, 0, &OsSync).err().expect("refused");
        assert!(err.to_string().contains("entry index u64::MAX"), "{err}");
        std::fs::remove_file(dir.path().join(segment_name(1, first))).unwrap();
        std::fs::write(dir.path().join(segment_name(u64::MAX, 1)), &bytes).unwrap();
        let err = recover(dir.path(), 0, 0, &OsSync).err().expect("refused");
        assert!(
            err.to_string().contains("not a raftcd log segment"),
            "{err}"
        );
    }
}
