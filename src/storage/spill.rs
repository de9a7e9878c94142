//! Superseded key revisions, kept out of memory.
//!
//! The store keeps every uncompacted revision of every key (reads at old
//! revisions, watches from the past, snapshots need them). Only each key's
//! latest revision is read on the hot path; the older ones are written here
//! as checksummed records ([`super::frame`]) and the index keeps 16 bytes
//! per revision: where its record is. A 256-byte value's revision went from
//! ~430 bytes of memory to ~20.
//!
//! **Not durable, on purpose.** Nothing here is ever synced: the `state`
//! file and the Raft log hold every revision, and the spill directory is
//! emptied at start and rebuilt as the store loads. Records are written with
//! plain `pwrite`, 64 KiB at a time (until then they are read from memory);
//! reads `pread` them, so they cost page cache, not the process's memory.
//!
//! **Segments and their lifetime.** Records go into segment files of
//! [`SEGMENT_BYTES`]; a record's place is `seq << 32 | offset`. Each
//! immutable view of the store holds its own set of segments
//! ([`Spill`] is cheap to clone), so a reader, a snapshot being written or
//! a backup being streamed keeps reading the segments its view names while
//! newer views have dropped them. A segment file is deleted when the last
//! set that names it goes. Every record carries a *tag*: the revision that
//! superseded it. Compaction at revision `c` drops every revision whose
//! successor is at or below `c`, so it drops every segment whose largest tag
//! is at or below `c` ([`Spill::drop_through`]).
//!
//! **Failures.** A segment that cannot be created or written makes the
//! spill keep records in memory from then on (a warning says so): the
//! store loses its memory saving, never a revision. A record that reads
//! back damaged is an error for the one request that read it.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::{frame, lock};

/// A segment takes no new record once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 16 << 20;
/// Pending records are written once they reach this many bytes (and at
/// every [`Spill::flush`]).
const FLUSH_AT: usize = 64 << 10;
/// The first read of a record asks for this many bytes (most records fit).
const READ_AHEAD: usize = 512;
/// The frame kind of a spilled record.
const KIND: u8 = 1;

/// Why a spilled record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// The segment was dropped: its revisions were compacted.
    #[error("the revision was compacted")]
    Gone,
    #[error("cannot read spilled revisions from {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spilled revision record {loc:#x} is damaged: {reason}")]
    Damaged { loc: u64, reason: &'static str },
}

/// The segments one view of the store names, and the writer they share.
#[derive(Clone)]
pub struct Spill {
    shared: Arc<Shared>,
    segments: Arc<BTreeMap<u32, Arc<Segment>>>,
}

struct Shared {
    /// Where segment files go; `None`: records stay in memory.
    dir: Option<PathBuf>,
    next_seq: AtomicU32,
    /// Set after a segment could not be created or written.
    in_memory: AtomicBool,
}

struct Segment {
    seq: u32,
    /// The file and its path; `None` for a segment held in memory.
    file: Option<(File, PathBuf)>,
    state: Mutex<SegmentState>,
}

struct SegmentState {
    /// Bytes written to the file; records from here on are in `pending`.
    flushed: u64,
    pending: Vec<u8>,
    /// The largest tag of a record in the segment.
    max_tag: i64,
    /// A write failed: `pending` stays in memory for good.
    failed: bool,
}

impl Segment {
    fn state(&self) -> MutexGuard<'_, SegmentState> {
        lock(&self.state)
    }

    /// Write the pending records to the file (if there is one).
    fn flush_locked(&self, st: &mut SegmentState, shared: &Shared) {
        let Some((file, path)) = &self.file else {
            return;
        };
        if st.failed || st.pending.is_empty() {
            return;
        }
        match file.write_all_at(&st.pending, st.flushed) {
            Ok(()) => {
                st.flushed += st.pending.len() as u64;
                st.pending.clear();
                if st.pending.capacity() > 2 * FLUSH_AT {
                    st.pending.shrink_to(FLUSH_AT);
                }
            }
            Err(e) => {
                st.failed = true;
                if !shared.in_memory.swap(true, Ordering::Relaxed) {
                    tracing::warn!(file = %path.display(), error = %e,
                        "cannot write superseded revisions to disk; keeping them in memory from now on");
                }
            }
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if let Some((_, path)) = &self.file {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::debug!(file = %path.display(), error = %e, "could not remove a spill segment");
            }
        }
    }
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spill")
            .field("dir", &self.shared.dir)
            .field("segments", &self.segments.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Spill {
    /// A spill that keeps its records in memory (no data dir).
    pub fn memory() -> Self {
        Self::with_dir(None)
    }

    /// A spill writing segments into `dir`, which is emptied first (what a
    /// previous run left there is not needed: the store is rebuilt from the
    /// `state` file and the log).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir_all(dir)?;
        Ok(Self::with_dir(Some(dir.to_path_buf())))
    }

    fn with_dir(dir: Option<PathBuf>) -> Self {
        Self {
            shared: Arc::new(Shared {
                dir,
                next_seq: AtomicU32::new(0),
                in_memory: AtomicBool::new(false),
            }),
            segments: Arc::default(),
        }
    }

    /// A spill with the same writer and no segments (for a store built
    /// from scratch: a loaded `state` file, an installed snapshot).
    pub fn fresh(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            segments: Arc::default(),
        }
    }

    /// Whether `self` and `other` write to the same place.
    #[cfg(test)]
    fn same_writer(&self, other: &Spill) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Spill one record whose payload is `parts` one after the other (not
    /// copied into one buffer first), superseded at revision `tag`; returns
    /// its place. It never fails: a record that cannot go to disk stays in
    /// memory.
    pub fn append(&mut self, parts: &[&[u8]], tag: i64) -> u64 {
        let room = |s: &Segment| {
            let st = s.state();
            st.flushed + (st.pending.len() as u64) < SEGMENT_BYTES
        };
        let seg = match self.segments.values().next_back() {
            Some(s) if room(s) => s.clone(),
            _ => self.start_segment(),
        };
        let mut st = seg.state();
        let offset = st.flushed + st.pending.len() as u64;
        frame::put_parts(&mut st.pending, KIND, parts);
        st.max_tag = st.max_tag.max(tag);
        let full = offset + (st.pending.len() as u64) >= SEGMENT_BYTES;
        if st.pending.len() >= FLUSH_AT || full {
            seg.flush_locked(&mut st, &self.shared);
        }
        (u64::from(seg.seq) << 32) | offset
    }

    /// Add a new segment (a file, unless the spill keeps records in
    /// memory) and make it the one records go to.
    fn start_segment(&mut self) -> Arc<Segment> {
        let seq = self.shared.next_seq.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
        let file = match &self.shared.dir {
            Some(dir) if !self.shared.in_memory.load(Ordering::Relaxed) => {
                let path = dir.join(format!("{seq:08x}.spill"));
                match File::options()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)
                {
                    Ok(f) => Some((f, path)),
                    Err(e) => {
                        if !self.shared.in_memory.swap(true, Ordering::Relaxed) {
                            tracing::warn!(file = %path.display(), error = %e,
                                "cannot create a file for superseded revisions; keeping them in memory from now on");
                        }
                        None
                    }
                }
            }
            _ => None,
        };
        let seg = Arc::new(Segment {
            seq,
            file,
            state: Mutex::new(SegmentState {
                flushed: 0,
                pending: Vec::new(),
                max_tag: i64::MIN,
                failed: false,
            }),
        });
        Arc::make_mut(&mut self.segments).insert(seq, seg.clone());
        seg
    }

    /// Write every pending record (after loading a snapshot). Reads never
    /// need it: a pending record is read from memory. The state machine
    /// does not call it per applied batch: that was a `pwrite` on every
    /// write's path for records that wait just as well in memory.
    pub fn flush(&self) {
        for seg in self.segments.values() {
            let mut st = seg.state();
            seg.flush_locked(&mut st, &self.shared);
        }
    }

    /// The record at `loc`.
    pub fn read(&self, loc: u64) -> Result<Bytes, SpillError> {
        let seq = (loc >> 32) as u32;
        let offset = loc & 0xffff_ffff;
        let damaged = |reason| SpillError::Damaged { loc, reason };
        let seg = self.segments.get(&seq).ok_or(SpillError::Gone)?;
        let st = seg.state();
        if offset >= st.flushed {
            let at = usize::try_from(offset - st.flushed).map_err(|_| damaged("offset"))?;
            let buf = st
                .pending
                .get(at..)
                .ok_or(damaged("past the segment's end"))?;
            return Ok(Bytes::copy_from_slice(
                payload(buf, buf.len()).map_err(damaged)?,
            ));
        }
        let flushed = st.flushed;
        drop(st);
        let Some((file, path)) = &seg.file else {
            return Err(damaged("no file behind written records"));
        };
        let io = |source| SpillError::Io {
            path: path.clone(),
            source,
        };
        let avail = usize::try_from(flushed - offset).map_err(|_| damaged("offset"))?;
        let mut buf = vec![0u8; READ_AHEAD.min(avail)];
        file.read_exact_at(&mut buf, offset).map_err(io)?;
        let len = match buf.first_chunk::<4>() {
            Some(l) if buf.len() >= frame::HEADER => u32::from_le_bytes(*l) as usize,
            _ => return Err(damaged("cut short")),
        };
        let total = frame::HEADER + len;
        if total > avail {
            return Err(damaged("record runs past the written end"));
        }
        if total > buf.len() {
            let have = buf.len();
            buf.resize(total, 0);
            file.read_exact_at(&mut buf[have..], offset + have as u64)
                .map_err(io)?;
        }
        buf.truncate(total);
        payload(&buf, len).map_err(damaged)?;
        Ok(Bytes::from(buf).slice(frame::HEADER..))
    }

    /// Forget every segment whose records were all superseded at or below
    /// `tag` (compaction at `tag` dropped them all).
    pub fn drop_through(&mut self, tag: i64) {
        if self.segments.values().any(|s| s.state().max_tag <= tag) {
            Arc::make_mut(&mut self.segments).retain(|_, s| s.state().max_tag > tag);
        }
    }

    /// How many segments this view names, and their bytes (written and
    /// pending).
    #[cfg(test)]
    fn usage(&self) -> (usize, u64) {
        let bytes = self
            .segments
            .values()
            .map(|s| {
                let st = s.state();
                st.flushed + st.pending.len() as u64
            })
            .sum();
        (self.segments.len(), bytes)
    }

    /// Whether records go to files (no write has failed, a dir was given).
    #[cfg(test)]
    fn on_disk(&self) -> bool {
        self.shared.dir.is_some() && !self.shared.in_memory.load(Ordering::Relaxed)
    }
}

/// The payload of the record at the start of `buf`, or why there is none.
fn payload(buf: &[u8], max_payload: usize) -> Result<&[u8], &'static str> {
    match frame::parse(buf, max_payload) {
        frame::Parsed::Record { payload, .. } => Ok(payload),
        frame::Parsed::Incomplete => Err("cut short"),
        frame::Parsed::Bad(reason) => Err(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u32, len: usize) -> Vec<u8> {
        let mut v = i.to_le_bytes().to_vec();
        v.resize(len, (i % 251) as u8);
        v
    }

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn records_read_back_from_files_and_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("leftover.spill"), b"old").unwrap();
        let mut on_disk = Spill::open(&path).unwrap();
        assert_eq!(files(&path), 0, "a previous run's files are removed");
        let mut in_memory = Spill::memory();
        for spill in [&mut on_disk, &mut in_memory] {
            // Short and long records (longer than the first read), some
            // pending and some written.
            let mut locs = Vec::new();
            for i in 0..2000u32 {
                let len = if i % 7 == 0 {
                    3000
                } else {
                    20 + (i as usize % 300)
                };
                locs.push((spill.append(&[&record(i, len)], i64::from(i)), len));
            }
            let check = |spill: &Spill| {
                for (i, (loc, len)) in locs.iter().enumerate() {
                    assert_eq!(spill.read(*loc).unwrap(), record(i as u32, *len));
                }
            };
            check(spill);
            spill.flush();
            check(spill);
        }
        assert!(on_disk.on_disk() && !in_memory.on_disk());
        assert_eq!(files(&path), 1);
        let (_, bytes) = on_disk.usage();
        assert_eq!(
            std::fs::metadata(path.join("00000000.spill"))
                .unwrap()
                .len(),
            bytes
        );
    }

    #[test]
    fn segments_roll_over_and_go_with_the_last_view_that_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill");
        let mut spill = Spill::open(&path).unwrap();
        let big = vec![7u8; 1 << 20];
        let mut locs = Vec::new();
        for tag in 1..=40i64 {
            locs.push(spill.append(&[&big], tag));
        }
        spill.flush();
        let (segments, _) = spill.usage();
        assert!(segments >= 3, "{segments} segments");
        assert_eq!(files(&path), segments);
        // An older view keeps every segment readable after a newer one
        // dropped them.
        let old = spill.clone();
        spill.drop_through(20);
        assert!(matches!(spill.read(locs[0]), Err(SpillError::Gone)));
        assert_eq!(spill.read(locs[39]).unwrap().len(), big.len());
        assert_eq!(old.read(locs[0]).unwrap().len(), big.len());
        assert_eq!(files(&path), segments);
        drop(old);
        let (left, _) = spill.usage();
        assert!(left < segments);
        assert_eq!(files(&path), left, "dropped segments' files are deleted");
        // Everything compacted: no file left, and new records start a new
        // segment.
        spill.drop_through(40);
        assert_eq!((files(&path), spill.usage().0), (0, 0));
        let loc = spill.append(&[b"after"], 41);
        assert_eq!(spill.read(loc).unwrap(), &b"after"[..]);
        // A view built from scratch shares the writer, not the segments.
        let fresh = spill.fresh();
        assert!(fresh.same_writer(&spill) && fresh.usage().0 == 0);
        assert!(matches!(fresh.read(loc), Err(SpillError::Gone)));
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_wrong_answer() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::open(dir.path()).unwrap();
        let a = spill.append(&[&record(1, 100)], 1);
        let b = spill.append(&[&record(2, 5000)], 2);
        spill.flush();
        let file = dir.path().join("00000000.spill");
        let mut bytes = std::fs::read(&file).unwrap();
        let (a_at, b_at) = ((a & 0xffff_ffff) as usize, (b & 0xffff_ffff) as usize);
        bytes[a_at + frame::HEADER + 10] ^= 1;
        bytes[b_at + 2] ^= 0x40; // the length: runs past the end
        std::fs::write(&file, &bytes).unwrap();
        for loc in [a, b] {
            match spill.read(loc) {
                Err(SpillError::Damaged { loc: at, .. }) => assert_eq!(at, loc),
                other => panic!("{other:?}"),
            }
        }
    }
}
