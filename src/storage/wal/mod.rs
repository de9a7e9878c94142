//! The Raft log: entries appended to segment files, made durable by one
//! `fdatasync` for everything appended so far (group commit).
//!
//! ```text
//! wal/SSSSSSSSSSSSSSSS-IIIIIIIIIIIIIIII.wal   sequence, first index (hex)
//!   "RAFTCDwl"  record kind 1 (header): version u8, seq u64le, first index u64le
//!   record kind 2 (entry): index u64le, the encoded entry
//!   ...
//! ```
//!
//! Records are [`super::frame`]s. [`Wal::append`] writes and returns;
//! [`Wal::sync`] queues a callback that a flusher thread calls, in order,
//! once one `fdatasync` has made everything appended before it durable.
//! The segment being written is preallocated ahead of the writes
//! (`fallocate`, [`PREALLOC_BYTES`] at a time): an append then overwrites
//! allocated space instead of growing the file, so its `fdatasync` need not
//! commit a new file size to the filesystem journal (on ext4 here: about
//! 225 µs a sync instead of 375 µs). The unwritten rest reads as zeros,
//! which no record starts with (kind 0 is never written): recovery ends
//! the last segment at its first zero header.
//! Allocated space is still *unwritten* (ext4 marks it so and reads it as
//! zeros): the first write into each of its blocks changes the file's
//! extent map, and the `fdatasync` after it must write the inode as well,
//! one more disk write and wait. Appends crossed into a new block on most
//! syncs under load (a batch of puts is a few KiB), so the writer also
//! writes real zeros ahead of its records, [`ZERO_AHEAD_BYTES`] at a time
//! within the allocated space: one sync in a step writes the zeros and the
//! extent change, the syncs after it write only their records. Measured on
//! the reference machine (ext4, virtio disk): 3.5 KiB appends 234-248 →
//! 149-169 µs per sync; 1 member, 64 clients, 256-byte puts 25.6-26.0k →
//! 28.7-29.0k/s, disk writes per sync 3.2-3.5 → 2.4.
//! A segment is closed (trimmed to its records and synced) at 64 MiB and
//! the next one begun;
//! [`Wal::purge`] deletes whole segments, [`Wal::truncate`] cuts the file
//! that holds the first removed entry, so space comes back as files.
//!
//! Recovery ([`Wal::open`]) reads every segment and checks every record: a
//! damaged or cut-short *last* record of the *last* segment, with nothing
//! intact after it, is a write torn by a crash (never acknowledged, since
//! acknowledgement follows the sync): it is cut off, with a warning. Any
//! other damage (a bad record with intact records after it, a bad header,
//! a gap in the indices, a foreign file) refuses to open, naming the file
//! and offset, and changes nothing.
//!
//! A failed sync is fatal: the kernel may have dropped the dirty pages it
//! could not write, so a retry could "succeed" over lost data. The log
//! stops accepting appends and fails every pending and later sync.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod flush;
use flush::{fail, flusher};
mod segment;

use segment::{
    allocate, bounds, segment_name, Segment, KIND_ENTRY, KIND_HEADER, MAGIC, MAX_ENTRY, VERSION,
};
pub use segment::{PREALLOC_BYTES, SEGMENT_BYTES, ZERO_AHEAD_BYTES};

use super::frame::{self, Parsed};
use super::{blob::sync_dir, damaged, io, lock, sync_failed, StorageError, Syncer};

/// Called by the flusher once a sync is done: the result, and how long the
/// sync took.
pub type SyncDone = Box<dyn FnOnce(Result<(), StorageError>) + Send>;

/// Told how long each sync took (for metrics).
pub type SyncObserver = Arc<dyn Fn(Duration) + Send + Sync>;

struct State {
    segments: VecDeque<Segment>,
    /// Index the next appended entry must have, if the log has entries.
    next: Option<u64>,
    /// The first index the log must hold (entries below it were purged):
    /// a new segment may start past a gap only up to it.
    keep_from: u64,
    next_seq: u64,
}

struct Shared {
    dir: PathBuf,
    syncer: Arc<dyn Syncer>,
    state: Mutex<State>,
    /// Set by the first failed write or sync; every later one fails.
    failed: Mutex<Option<String>>,
    syncs: std::sync::atomic::AtomicU64,
    /// The last index a completed sync made durable.
    durable: Mutex<Option<u64>>,
    /// A segment is closed once it holds this much.
    segment_bytes: u64,
    /// Space allocated ahead of the writes, at a time (0: none).
    prealloc_bytes: u64,
    /// Zeros written ahead of the records, at a time (within allocated
    /// space only).
    zero_ahead: u64,
    /// Preallocation failed once (a filesystem without `fallocate`): the
    /// log grows its files by writing, as it would without it.
    prealloc_off: std::sync::atomic::AtomicBool,
    /// Told each `fdatasync`'s duration.
    observer: Option<SyncObserver>,
    /// Sync requests queued to the flusher and not yet answered.
    queued: std::sync::atomic::AtomicUsize,
}

/// The log. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Wal {
    shared: Arc<Shared>,
    flusher: mpsc::Sender<SyncDone>,
}

/// What recovery found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// First and last index of the entries on disk (`None`: no entries).
    pub first: Option<u64>,
    pub last: Option<u64>,
    /// A torn tail that was cut off: file, offset and reason.
    pub repaired: Option<String>,
}

impl Wal {
    /// Open the log in `dir` (created if missing), recovering what is on
    /// disk. `keep_from`: the first index the log must hold (entries below
    /// it were purged and may be gone); `reach`: an index the log must hold
    /// or have purged (what was committed or applied from it), else it was
    /// cut short. Nothing on disk changes unless every check passes.
    pub fn open(
        dir: &Path,
        keep_from: u64,
        reach: u64,
        syncer: Arc<dyn Syncer>,
        observer: Option<SyncObserver>,
    ) -> Result<(Wal, Recovered), StorageError> {
        Self::open_sized(
            dir,
            keep_from,
            reach,
            syncer,
            observer,
            SEGMENT_BYTES,
            PREALLOC_BYTES,
        )
    }

    fn open_sized(
        dir: &Path,
        keep_from: u64,
        reach: u64,
        syncer: Arc<dyn Syncer>,
        observer: Option<SyncObserver>,
        segment_bytes: u64,
        prealloc_bytes: u64,
    ) -> Result<(Wal, Recovered), StorageError> {
        let segment::Recovery {
            segments,
            first,
            last,
            repaired,
        } = segment::recover(dir, keep_from, reach, &*syncer)?;
        let next = segments.back().map(Segment::end_index);
        let next_seq = segments.back().map_or(1, |s| s.seq + 1);
        let recovered = Recovered {
            first,
            last,
            repaired,
        };
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            syncer,
            state: Mutex::new(State {
                segments,
                next,
                keep_from,
                next_seq,
            }),
            failed: Mutex::new(None),
            syncs: Default::default(),
            durable: Mutex::new(last),
            segment_bytes,
            prealloc_bytes,
            zero_ahead: ZERO_AHEAD_BYTES.min(prealloc_bytes),
            prealloc_off: Default::default(),
            observer,
            queued: Default::default(),
        });
        let (tx, rx) = mpsc::channel::<SyncDone>();
        let flusher_shared = shared.clone();
        std::thread::Builder::new()
            .name("raftcd-wal-sync".into())
            .spawn(move || flusher(flusher_shared, rx))
            .map_err(io(dir, "start the sync thread for"))?;
        Ok((
            Wal {
                shared,
                flusher: tx,
            },
            recovered,
        ))
    }

    fn check_ok(&self) -> Result<(), StorageError> {
        match &*lock(&self.shared.failed) {
            Some(reason) => Err(StorageError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// `r`, and if it failed, the log stops: a failed write or sync is
    /// fatal (see the module docs).
    fn fatal<T>(&self, r: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(e) = &r {
            fail(&self.shared, e);
        }
        r
    }

    /// Write `entries` (index, encoded entry), in index order, after the
    /// last one. Not durable until a [`Wal::sync`] queued after it is done.
    pub fn append<I>(&self, entries: I) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = (u64, Vec<u8>)>,
    {
        self.check_ok()?;
        let mut st = lock(&self.shared.state);
        let mut buf = Vec::new();
        let mut pending: Vec<(u64, u32)> = Vec::new();
        for (index, bytes) in entries {
            if st.next != Some(index) || st.segments.is_empty() {
                // A new segment: the first entry, one past a purge, or the
                // current one is full.
                self.flush_pending(&mut st, &mut buf, &mut pending)?;
                match st.next {
                    Some(next) if next == index => {}
                    Some(next) if index > next && index <= st.keep_from => {}
                    None => {}
                    Some(next) => {
                        return Err(StorageError::Failed(format!(
                            "append of log index {index} where {next} was expected"
                        )))
                    }
                }
                self.close_segment(&mut st)?;
                self.start_segment(&mut st, index)?;
            } else if st
                .segments
                .back()
                .is_some_and(|s| s.len + buf.len() as u64 >= self.shared.segment_bytes)
            {
                self.flush_pending(&mut st, &mut buf, &mut pending)?;
                self.close_segment(&mut st)?;
                self.start_segment(&mut st, index)?;
            }
            let at = buf.len();
            frame::put_parts(&mut buf, KIND_ENTRY, &[&index.to_le_bytes(), &bytes]);
            pending.push((at as u64, (buf.len() - at) as u32));
            st.next = Some(index + 1);
        }
        self.flush_pending(&mut st, &mut buf, &mut pending)
    }

    /// Write the buffered records to the current segment.
    fn flush_pending(
        &self,
        st: &mut State,
        buf: &mut Vec<u8>,
        pending: &mut Vec<(u64, u32)>,
    ) -> Result<(), StorageError> {
        if buf.is_empty() {
            return Ok(());
        }
        let Some(seg) = st.segments.back_mut() else {
            return Err(StorageError::Failed("no segment to append to".into()));
        };
        let end = seg.len + buf.len() as u64;
        let zero_ahead = end > seg.zeroed;
        let zero_to = end.saturating_add(self.shared.zero_ahead);
        self.preallocate(seg, if zero_ahead { zero_to } else { end });
        self.fatal(
            seg.file
                .write_all_at(buf, seg.len)
                .map_err(io(&seg.path, "write")),
        )?;
        if zero_ahead {
            let to = zero_to.min(seg.allocated);
            if to > end {
                self.fatal(write_zeros(&seg.file, end, to).map_err(io(&seg.path, "write")))?;
            }
            seg.zeroed = to.max(end);
        }
        let base = seg.len;
        seg.entries
            .extend(pending.drain(..).map(|(at, size)| (base + at, size)));
        seg.len += buf.len() as u64;
        buf.clear();
        Ok(())
    }

    /// Make sure `seg`'s file has space allocated up to `end`, extending it
    /// by whole [`PREALLOC_BYTES`] steps. A failure is not an error: the
    /// write that follows grows the file (and reports a full disk itself).
    fn preallocate(&self, seg: &mut Segment, end: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let step = self.shared.prealloc_bytes;
        if end <= seg.allocated || step == 0 || self.shared.prealloc_off.load(Relaxed) {
            return;
        }
        let target = end.div_ceil(step).saturating_mul(step);
        match allocate(&seg.file, seg.allocated, target - seg.allocated) {
            Ok(()) => seg.allocated = target,
            Err(e) => {
                self.shared.prealloc_off.store(true, Relaxed);
                tracing::warn!(file = %seg.path.display(), error = %e, "cannot preallocate the Raft log; appends grow the file instead (slower syncs)");
            }
        }
    }

    /// Sync the current segment: it is full, the next one begins. Its
    /// preallocated tail is cut off first, so only the last segment of a
    /// log ever ends in unwritten space.
    fn close_segment(&self, st: &mut State) -> Result<(), StorageError> {
        if let Some(seg) = st.segments.back_mut() {
            let started = Instant::now();
            if seg.allocated > seg.len {
                self.fatal(seg.file.set_len(seg.len).map_err(io(&seg.path, "trim")))?;
                seg.allocated = seg.len;
                seg.zeroed = seg.len;
            }
            self.fatal(
                self.shared
                    .syncer
                    .sync_all(&seg.file)
                    .map_err(sync_failed(&seg.path)),
            )?;
            self.shared
                .syncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(segment = %seg.path.display(), took = ?started.elapsed(), "closed a log segment");
        }
        Ok(())
    }

    fn start_segment(&self, st: &mut State, first_index: u64) -> Result<(), StorageError> {
        let seq = st.next_seq;
        let path = self.shared.dir.join(segment_name(seq, first_index));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(&path, "create"))?;
        let mut head = MAGIC.to_vec();
        let mut payload = vec![VERSION];
        payload.extend_from_slice(&seq.to_le_bytes());
        payload.extend_from_slice(&first_index.to_le_bytes());
        frame::put(&mut head, KIND_HEADER, &payload);
        self.fatal(file.write_all_at(&head, 0).map_err(io(&path, "write")))?;
        // The new name must survive a crash along with what is synced in it.
        self.fatal(sync_dir(&self.shared.dir, &*self.shared.syncer))?;
        st.segments.push_back(Segment {
            seq,
            first_index,
            path,
            file: Arc::new(file),
            len: head.len() as u64,
            allocated: head.len() as u64,
            zeroed: head.len() as u64,
            entries: Vec::new(),
        });
        st.next_seq = seq + 1;
        st.next = Some(first_index);
        Ok(())
    }

    /// The entries with index in `[from, to)`, in order; stops at the first
    /// index the log does not hold.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StorageError> {
        // Where each entry is, per segment, taken under the lock.
        type Spots = Vec<(u64, u32, u64)>;
        let mut parts: Vec<(Arc<std::fs::File>, PathBuf, Spots)> = Vec::new();
        {
            let st = lock(&self.shared.state);
            let mut index = from;
            for seg in st.segments.iter() {
                let mut spots = Vec::new();
                while index < to && index >= seg.first_index && index < seg.end_index() {
                    let (offset, size) = seg.entries[(index - seg.first_index) as usize];
                    spots.push((offset, size, index));
                    index += 1;
                }
                if !spots.is_empty() {
                    parts.push((seg.file.clone(), seg.path.clone(), spots));
                }
            }
        }
        let mut out = Vec::new();
        for (file, path, spots) in parts {
            for (offset, size, index) in spots {
                let mut buf = vec![0u8; size as usize];
                file.read_exact_at(&mut buf, offset)
                    .map_err(io(&path, "read"))?;
                match frame::parse(&buf, MAX_ENTRY) {
                    Parsed::Record {
                        kind: KIND_ENTRY,
                        payload,
                        ..
                    } if payload.len() >= 8 && payload[..8] == index.to_le_bytes() => {}
                    Parsed::Bad(reason) => return Err(damaged(&path, offset, reason)),
                    _ => {
                        return Err(damaged(
                            &path,
                            offset,
                            format!("entry {index} is not where the log put it"),
                        ))
                    }
                }
                // The record is the whole buffer: keep its payload after the
                // index.
                buf.drain(..frame::HEADER + 8);
                out.push(buf);
            }
        }
        Ok(out)
    }

    /// Index of the first and last entry held (`None`: no entries).
    pub fn bounds(&self) -> (Option<u64>, Option<u64>) {
        bounds(&lock(&self.shared.state).segments)
    }

    /// Remove every entry at or after `from`, durably.
    pub fn truncate(&self, from: u64) -> Result<(), StorageError> {
        self.check_ok()?;
        let mut st = lock(&self.shared.state);
        let mut removed_files = false;
        // Later segments go whole (newest first: a crash leaves a prefix).
        while let Some(seg) = st.segments.back() {
            if seg.first_index < from || (seg.first_index == from && st.segments.len() == 1) {
                break;
            }
            let seg = st.segments.pop_back().expect("checked above");
            std::fs::remove_file(&seg.path).map_err(io(&seg.path, "remove"))?;
            removed_files = true;
        }
        if let Some(seg) = st.segments.back_mut() {
            if from < seg.end_index() {
                let keep = from.saturating_sub(seg.first_index) as usize;
                let cut = seg.entries.get(keep).map_or(seg.len, |(offset, _)| *offset);
                // Cut at the first removed entry: what follows (removed
                // entries and preallocated space) is gone, so no stale
                // record can be read back; appends allocate again.
                seg.file.set_len(cut).map_err(io(&seg.path, "truncate"))?;
                seg.entries.truncate(keep);
                seg.len = cut;
                seg.allocated = cut;
                seg.zeroed = cut;
                self.fatal(
                    self.shared
                        .syncer
                        .sync_all(&seg.file)
                        .map_err(sync_failed(&seg.path)),
                )?;
            }
        }
        if removed_files {
            self.fatal(sync_dir(&self.shared.dir, &*self.shared.syncer))?;
        }
        st.next = st.segments.back().map(Segment::end_index);
        if st.next.is_some_and(|n| n > from) {
            st.next = Some(from);
        }
        let mut durable = lock(&self.shared.durable);
        if durable.is_some_and(|d| d >= from) {
            *durable = from.checked_sub(1);
        }
        Ok(())
    }

    /// Entries up to `upto` are no longer needed: delete every segment that
    /// holds nothing after it. Returns the number of files deleted.
    pub fn purge(&self, upto: u64) -> Result<usize, StorageError> {
        let mut st = lock(&self.shared.state);
        st.keep_from = st.keep_from.max(upto.saturating_add(1));
        let mut deleted = 0;
        while let Some(seg) = st.segments.front() {
            // The segment being appended to goes too once it holds nothing
            // needed; the next append begins a new one.
            let needed =
                seg.end_index() > upto + 1 || (seg.entries.is_empty() && seg.first_index > upto);
            if needed {
                break;
            }
            let seg = st.segments.pop_front().expect("checked above");
            std::fs::remove_file(&seg.path).map_err(io(&seg.path, "remove"))?;
            deleted += 1;
        }
        if st.segments.is_empty() {
            st.next = None;
        }
        Ok(deleted)
    }

    /// Bytes of the log's files.
    pub fn size(&self) -> u64 {
        lock(&self.shared.state)
            .segments
            .iter()
            .map(|s| s.len)
            .sum()
    }

    /// The last index a completed sync made durable.
    pub fn durable(&self) -> Option<u64> {
        *lock(&self.shared.durable)
    }

    /// How many file syncs the log has made since it was opened.
    pub fn sync_count(&self) -> u64 {
        self.shared.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why the log stopped accepting writes, if it did.
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.failed).clone()
    }
}

/// Write zeros over `file`'s bytes from `from` to `to`.
fn write_zeros(file: &std::fs::File, from: u64, to: u64) -> std::io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::OsSync;
    use std::fs::File;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn entry(i: u64, tag: u8) -> (u64, Vec<u8>) {
        (i, vec![tag; 40 + (i % 7) as usize])
    }

    /// Small segments (4 KiB) allocated 1 KiB at a time, so tests cross
    /// both boundaries often.
    fn open(dir: &Path, purged: u64) -> Result<(Wal, Recovered), StorageError> {
        Wal::open_sized(dir, purged, 0, Arc::new(OsSync), None, 4096, 1024)
    }

    /// A segment's records without the preallocated zeros after them (a
    /// test entry never ends in a zero byte).
    fn content(path: &Path) -> Vec<u8> {
        let mut bytes = std::fs::read(path).unwrap();
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        bytes.truncate(end);
        bytes
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|i| i.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
        files(dir)
            .into_iter()
            .map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
            .collect()
    }

    #[tokio::test]
    async fn appends_survive_reopen_across_segments_and_purge_deletes_whole_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let (wal, rec) = open(&dir, 0).unwrap();
        assert_eq!(rec, Recovered::default());
        for chunk in (1..=300u64).collect::<Vec<_>>().chunks(7) {
            wal.append(chunk.iter().map(|i| entry(*i, 1))).unwrap();
        }
        wal.sync_now().await.unwrap();
        assert_eq!(
            wal.read(10, 13).unwrap(),
            vec![entry(10, 1).1, entry(11, 1).1, entry(12, 1).1]
        );
        let segments = files(&dir).len();
        assert!(segments > 3, "{segments} segments");
        drop(wal);

        let (wal, rec) = open(&dir, 0).unwrap();
        assert_eq!(
            (rec.first, rec.last, rec.repaired),
            (Some(1), Some(300), None)
        );
        assert_eq!(wal.read(1, 301).unwrap().len(), 300);
        assert_eq!(
            wal.read(299, 400).unwrap(),
            vec![entry(299, 1).1, entry(300, 1).1]
        );

        // Purge: whole segments at or below the point go, the rest stay.
        let deleted = wal.purge(150).unwrap();
        assert!(deleted > 0);
        assert_eq!(files(&dir).len(), segments - deleted);
        let (first, last) = wal.bounds();
        assert!(first.unwrap() <= 151 && last == Some(300), "{first:?}");
        assert_eq!(wal.read(151, 301).unwrap().len(), 150);
        drop(wal);
        let (wal, rec) = open(&dir, 151).unwrap();
        assert_eq!(rec.last, Some(300));
        // Purged past the end (a snapshot installed): every file goes and
        // the log starts again after the purge point.
        wal.purge(1000).unwrap();
        assert!(files(&dir).is_empty());
        wal.append([entry(1001, 2)]).unwrap();
        wal.sync_now().await.unwrap();
        drop(wal);
        let (wal, rec) = open(&dir, 1001).unwrap();
        assert_eq!((rec.first, rec.last), (Some(1001), Some(1001)));
        assert_eq!(wal.read(1001, 1002).unwrap(), vec![entry(1001, 2).1]);
        // An index out of order is refused.
        assert!(wal.append([entry(1005, 2)]).is_err());
    }

    /// The last segment's `(len, zeroed, allocated)`.
    fn tail(wal: &Wal) -> (u64, u64, u64) {
        let st = lock(&wal.shared.state);
        let seg = st.segments.back().unwrap();
        (seg.len, seg.zeroed, seg.allocated)
    }

    #[tokio::test]
    async fn zeros_are_written_ahead_of_the_records_a_step_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let (wal, _) = open(&dir, 0).unwrap();
        let step = wal.shared.zero_ahead;
        assert_eq!(step, 1024, "the test log allocates 1 KiB at a time");
        wal.append([entry(1, 1)]).unwrap();
        let (len, zeroed, allocated) = tail(&wal);
        assert_eq!(zeroed, len + step);
        assert!(allocated >= zeroed, "zeros only in allocated space");
        let path = dir.join(files(&dir).pop().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, allocated);
        assert!(bytes[len as usize..].iter().all(|&b| b == 0));
        // Appends inside the zeroed space write no more zeros; the first
        // one past it writes the next step.
        let mut i = 2;
        while tail(&wal).0 <= zeroed {
            assert_eq!(tail(&wal).1, zeroed);
            wal.append([entry(i, 2)]).unwrap();
            i += 1;
        }
        let (len2, zeroed2, allocated2) = tail(&wal);
        assert_eq!(zeroed2, len2 + step);
        assert!(allocated2 >= zeroed2);
        // Every record reads back, here and after a reopen (which writes
        // zeros again from the end of the records).
        wal.sync_now().await.unwrap();
        let all: Vec<Vec<u8>> = (1..i)
            .map(|j| entry(j, if j == 1 { 1 } else { 2 }).1)
            .collect();
        assert_eq!(wal.read(1, i).unwrap(), all);
        drop(wal);
        let (wal, rec) = open(&dir, 0).unwrap();
        assert_eq!(rec.last, Some(i - 1));
        assert_eq!(tail(&wal).1, tail(&wal).0);
        wal.append([entry(i, 3)]).unwrap();
        assert_eq!(tail(&wal).1, tail(&wal).0 + step);
        wal.sync_now().await.unwrap();
        drop(wal);
        let (wal, rec) = open(&dir, 0).unwrap();
        assert_eq!(rec.last, Some(i));
        assert_eq!(
            wal.read(i - 1, i + 1).unwrap(),
            vec![entry(i - 1, 2).1, entry(i, 3).1]
        );
        // A truncated segment has nothing after its records; appends
        // write zeros ahead again.
        wal.truncate(2).unwrap();
        let (len3, zeroed3, allocated3) = tail(&wal);
        assert_eq!((zeroed3, allocated3), (len3, len3));
        wal.append([entry(2, 4)]).unwrap();
        assert_eq!(tail(&wal).1, tail(&wal).0 + step);
        assert_eq!(wal.read(1, 3).unwrap(), vec![entry(1, 1).1, entry(2, 4).1]);
    }

    #[tokio::test]
    async fn truncate_removes_the_tail_durably_and_appends_follow() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let (wal, _) = open(&dir, 0).unwrap();
        wal.append((1..=200).map(|i| entry(i, 1))).unwrap();
        wal.truncate(120).unwrap();
        assert_eq!(wal.bounds(), (Some(1), Some(119)));
        // The cut file ends at its last kept record: neither removed
        // entries nor preallocated space are left behind it.
        let last = dir.join(files(&dir).pop().unwrap());
        assert_eq!(std::fs::read(&last).unwrap(), content(&last));
        wal.append((120..=130).map(|i| entry(i, 9))).unwrap();
        wal.sync_now().await.unwrap();
        drop(wal);
        let (wal, rec) = open(&dir, 0).unwrap();
        assert_eq!(rec.last, Some(130));
        assert_eq!(
            wal.read(119, 121).unwrap(),
            vec![entry(119, 1).1, entry(120, 9).1]
        );
        // Everything.
        wal.truncate(1).unwrap();
        assert_eq!(wal.bounds(), (None, None));
        wal.append([entry(1, 3)]).unwrap();
        wal.sync_now().await.unwrap();
        drop(wal);
        let (wal, rec) = open(&dir, 0).unwrap();
        assert_eq!((rec.first, rec.last), (Some(1), Some(1)));
        assert_eq!(wal.read(1, 2).unwrap(), vec![entry(1, 3).1]);
    }

    #[tokio::test]
    async fn a_torn_last_record_is_cut_off_with_a_warning_and_appends_follow() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let (wal, _) = open(&dir, 0).unwrap();
        wal.append((1..=20).map(|i| entry(i, 1))).unwrap();
        wal.sync_now().await.unwrap();
        drop(wal);
        let name = files(&dir).pop().unwrap();
        let path = dir.join(&name);
        let preallocated = std::fs::read(&path).unwrap();
        let good = content(&path);
        assert!(preallocated.len() > good.len() && preallocated.len().is_multiple_of(1024));
        // The last record half written, as a crash mid-append leaves it; and
        // the same record written whole but with its last bytes zeroed; both
        // in the preallocated space (zeros after them) and at the end of a
        // file that was not preallocated.
        let mut tail = Vec::new();
        frame::put(
            &mut tail,
            KIND_ENTRY,
            &[21u64.to_le_bytes().to_vec(), vec![7; 60]].concat(),
        );
        let half = &tail[..tail.len() / 2];
        let mut zeroed = tail[..tail.len() - 10].to_vec();
        zeroed.extend_from_slice(&[0; 10]);
        let mut cases = Vec::new();
        for record in [half, &zeroed[..]] {
            let mut in_space = preallocated.clone();
            in_space[good.len()..good.len() + record.len()].copy_from_slice(record);
            cases.push(in_space);
            cases.push([&good[..], record].concat());
        }
        for torn in cases {
            std::fs::write(&path, &torn).unwrap();
            let (wal, rec) = open(&dir, 0).unwrap();
            let note = rec.repaired.expect("repaired");
            assert!(
                note.contains(&name) && note.contains(&format!("offset {}", good.len())),
                "{note}"
            );
            assert_eq!(rec.last, Some(20));
            assert_eq!(std::fs::read(&path).unwrap(), good);
            wal.append([entry(21, 5)]).unwrap();
            wal.sync_now().await.unwrap();
            drop(wal);
            let (wal, rec) = open(&dir, 0).unwrap();
            assert_eq!((rec.last, rec.repaired), (Some(21), None));
            assert_eq!(wal.read(21, 22).unwrap(), vec![entry(21, 5).1]);
            wal.truncate(21).unwrap();
        }
        // A segment created but whose header a crash cut short holds
        // nothing: removed.
        std::fs::write(dir.join(segment_name(99, 21)), &MAGIC[..5]).unwrap();
        let (_, rec) = open(&dir, 0).unwrap();
        assert!(rec.repaired.unwrap().contains("header was cut short"));
        assert_eq!(rec.last, Some(20));
    }

    #[tokio::test]
    async fn damage_anywhere_else_is_refused_naming_the_file_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let (wal, _) = open(&dir, 0).unwrap();
        wal.append((1..=200).map(|i| entry(i, 1))).unwrap();
        wal.sync_now().await.unwrap();
        drop(wal);
        let names = files(&dir);
        let refused = |what: &str| {
            let before = snapshot(&dir);
            match open(&dir, 0) {
                Err(StorageError::Damaged {
                    file,
                    offset,
                    reason,
                }) => {
                    assert!(snapshot(&dir) == before, "{what}: files changed");
                    (file, offset, reason)
                }
                Err(e) => panic!("{what}: {e}"),
                Ok(_) => panic!("{what}: opened"),
            }
        };
        for (i, name) in names.iter().enumerate() {
            let path = dir.join(name);
            let good = std::fs::read(&path).unwrap();
            let records = content(&path).len();
            // Only the last segment keeps preallocated space.
            assert_eq!(records == good.len(), i + 1 < names.len(), "{name}");
            // A bit flipped in an entry in the middle of the records.
            let mut bad = good.clone();
            bad[records / 2] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            let (file, offset, _) = refused(&format!("flip in {name}"));
            assert_eq!(file, path);
            assert!(offset > 0 && offset <= (records / 2) as u64);
            // A bit flipped in the header.
            let mut bad = good.clone();
            bad[MAGIC.len() + frame::HEADER + 3] ^= 1;
            std::fs::write(&path, &bad).unwrap();
            assert_eq!(refused(&format!("header of {name}")).0, path);
            // Another file in its place.
            std::fs::write(&path, b"#!/bin/sh\necho hello\n").unwrap();
            assert!(refused(&format!("foreign {name}"))
                .2
                .contains("wrong magic"));
            // Cut short: for a segment before the last, refused.
            if i + 1 < names.len() {
                std::fs::write(&path, &good[..good.len() - 30]).unwrap();
                refused(&format!("truncated {name}"));
            }
            std::fs::write(&path, &good).unwrap();
        }
        // A missing segment in the middle.
        let middle = dir.join(&names[1]);
        let kept = std::fs::read(&middle).unwrap();
        std::fs::remove_file(&middle).unwrap();
        assert!(refused("missing segment").2.contains("missing"));
        std::fs::write(&middle, kept).unwrap();
        // A file that is not a segment.
        std::fs::write(dir.join("notes.txt"), b"hi").unwrap();
        assert!(refused("foreign file")
            .2
            .contains("not a raftcd log segment"));
        std::fs::remove_file(dir.join("notes.txt")).unwrap();
        assert_eq!(open(&dir, 0).unwrap().1.last, Some(200));
    }

    /// Fails every `fdatasync` after the first `ok` ones.
    #[derive(Debug)]
    struct FailAfter {
        ok: u64,
        calls: AtomicU64,
        delay: Duration,
    }

    /// A log in `dir` whose every `fdatasync` succeeds after `delay`.
    fn slow_wal(dir: &Path, delay: Duration) -> Wal {
        let syncer = Arc::new(FailAfter {
            ok: u64::MAX,
            calls: AtomicU64::new(0),
            delay,
        });
        Wal::open_sized(dir, 0, 0, syncer, None, 1 << 20, 0)
            .unwrap()
            .0
    }

    impl Syncer for FailAfter {
        fn sync_data(&self, file: &File) -> std::io::Result<()> {
            std::thread::sleep(self.delay);
            if self.calls.fetch_add(1, Ordering::SeqCst) >= self.ok {
                return Err(std::io::Error::other("injected EIO"));
            }
            file.sync_data()
        }
        fn sync_all(&self, file: &File) -> std::io::Result<()> {
            file.sync_all()
        }
    }

    #[tokio::test]
    async fn a_failed_sync_is_fatal_and_never_retried() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let syncer = Arc::new(FailAfter {
            ok: 2,
            calls: AtomicU64::new(0),
            delay: Duration::ZERO,
        });
        let (wal, _) = Wal::open_sized(&dir, 0, 0, syncer.clone(), None, 1 << 20, 0).unwrap();
        for i in 1..=2 {
            wal.append([entry(i, 1)]).unwrap();
            wal.sync_now().await.unwrap();
        }
        wal.append([entry(3, 1)]).unwrap();
        let err = wal.sync_now().await.unwrap_err().to_string();
        assert!(err.contains("injected EIO"), "{err}");
        assert!(wal.failure().unwrap().contains("fsync of"));
        // Nothing more is accepted, and no sync is tried again.
        let calls = syncer.calls.load(Ordering::SeqCst);
        assert!(wal.append([entry(4, 1)]).is_err());
        assert!(wal.sync_now().await.is_err());
        assert!(wal.truncate(3).is_err());
        assert_eq!(syncer.calls.load(Ordering::SeqCst), calls);
    }

    #[tokio::test]
    async fn queued_syncs_share_one_fdatasync() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let wal = slow_wal(&dir, Duration::from_millis(20));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 1..=100u64 {
            wal.append([entry(i, 1)]).unwrap();
            let tx = tx.clone();
            wal.sync(Box::new(move |r| {
                let _ = tx.send((i, r.is_ok()));
            }));
        }
        drop(tx);
        let mut order = Vec::new();
        while let Some((i, ok)) = rx.recv().await {
            assert!(ok);
            order.push(i);
        }
        // Answered in order, all of them, with a handful of syncs.
        assert_eq!(order, (1..=100).collect::<Vec<_>>());
        assert!(wal.sync_count() <= 10, "{} syncs", wal.sync_count());
    }

    /// With nothing queued, `sync_here` syncs before it returns, on the
    /// caller's thread, and makes the entries durable; behind a queued
    /// sync it queues too, so callbacks keep their order.
    #[test]
    fn sync_here_syncs_at_once_unless_a_sync_is_queued() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        // Long enough that sync 2 is still running when sync 3 comes.
        let wal = slow_wal(&dir, Duration::from_millis(300));
        let (tx, rx) = std::sync::mpsc::channel();
        let done = |tag: u64| -> SyncDone {
            let tx = tx.clone();
            Box::new(move |r| {
                let _ = tx.send((tag, std::thread::current().id(), r.is_ok()));
            })
        };
        wal.append([entry(1, 1)]).unwrap();
        wal.sync_here(done(1));
        let here = std::thread::current().id();
        assert_eq!(
            rx.try_recv().ok(),
            Some((1, here, true)),
            "not synced at once"
        );
        assert_eq!((wal.sync_count(), wal.durable()), (1, Some(1)));
        // Behind a queued sync: queued, answered after it, by the flusher.
        wal.append([entry(2, 1)]).unwrap();
        wal.sync(done(2));
        wal.append([entry(3, 1)]).unwrap();
        wal.sync_here(done(3));
        let (a, b) = (rx.recv().unwrap(), rx.recv().unwrap());
        assert_eq!((a.0, b.0), (2, 3));
        assert!(a.1 != here && b.1 != here && a.2 && b.2);
        assert_eq!(wal.durable(), Some(3));
        // Nothing queued any more (the flusher counts its batch answered
        // after the last callback returns): at once again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while wal.shared.queued.load(Ordering::SeqCst) > 0 {
            assert!(
                Instant::now() < deadline,
                "the flusher never finished its batch"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        wal.append([entry(4, 1)]).unwrap();
        wal.sync_here(done(4));
        assert_eq!(rx.try_recv().ok(), Some((4, here, true)));
    }
}
