//! The Raft log on the data dir's [`Wal`], and Raft's hard state in the
//! `raft` file ([`Blob::Raft`]).
//!
//! `append` writes the entries and returns; the log's flusher makes them
//! durable with one `fdatasync` for everything appended so far and only
//! then tells openraft (`LogFlushed`), in order, so an entry is never
//! acknowledged before it is on disk and concurrent clients share syncs.
//! The vote and the purge point are written (and synced) before their calls
//! return. The committed log id is written with them and at most once a
//! second as it advances, never past what the log has made durable: at a
//! restart openraft re-applies up to it, and a log that ends before it was
//! cut short (refused, see [`Wal::open`]).
//!
//! The newest entries are also kept in memory ([`super::log_cache`]), so a
//! leader sends them to its followers, and every member applies them,
//! without reading them back from the file and decoding them once per
//! reader.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use super::log_cache::LogCache;
use super::{LogId, RaftStorageError, TypeConfig};
use crate::codec::{decode, encode};
use crate::storage::{Blob, Recovered, Storage, StorageError, Wal};

type Entry = openraft::Entry<TypeConfig>;

fn read_err(e: StorageError) -> RaftStorageError {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_err(e: StorageError) -> RaftStorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

/// Raft's hard state, as the `raft` file holds it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct HardState {
    pub(super) vote: Option<Vote<u64>>,
    pub(super) purged: Option<LogId>,
    pub(super) committed: Option<LogId>,
}

/// How often an advancing committed index is written at most.
const COMMITTED_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The hard state in memory.
#[derive(Debug, Default)]
struct Hard {
    /// As last written to the `raft` file.
    disk: HardState,
    /// The committed log id openraft last saved (may be ahead of the disk).
    committed: Option<LogId>,
    /// The newest committed log id that was durable in the log when
    /// openraft saved it: what may be written.
    safe: Option<LogId>,
    /// When the `raft` file was last written.
    written: Option<std::time::Instant>,
    /// A write of the committed index is scheduled for when the rate
    /// limit allows it (so the last commits before a quiet spell or a
    /// crash reach the file too).
    trailing: bool,
}

/// The log store. Clones share the same log.
pub struct LogStore {
    storage: Storage,
    wal: Wal,
    hard: Arc<Mutex<Hard>>,
    /// One writer of the `raft` file at a time.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Bytes appended so far, for the snapshot policy.
    growth: super::state_machine::LogGrowth,
    /// The newest entries, served to replication without reading the file.
    cache: Arc<LogCache>,
    /// This member's id: entries it proposed as leader are cached as
    /// decoded copies (see `log_cache`); 0 until [`Self::set_member`].
    member: u64,
    /// Held by every reader openraft asked this store for: those read for
    /// replication (the core reads what it applies through the store
    /// itself, the one it appends through). More than one holder: this
    /// member leads others. A plain clone starts its own count.
    readers: Arc<()>,
}

impl Clone for LogStore {
    fn clone(&self) -> Self {
        Self {
            storage: self.storage.clone(),
            wal: self.wal.clone(),
            hard: self.hard.clone(),
            writer: self.writer.clone(),
            growth: self.growth.clone(),
            cache: self.cache.clone(),
            member: self.member,
            readers: Arc::default(),
        }
    }
}

fn decode_entry(storage: &Storage, bytes: &[u8]) -> Result<Entry, StorageError> {
    decode(bytes).map_err(|e| StorageError::Decode {
        file: storage.path().join(crate::storage::WAL_DIR),
        reason: format!("a log entry: {e}"),
    })
}

/// The committed log id the `raft` file of `storage` holds.
pub fn stored_committed(storage: &Storage) -> Result<Option<LogId>, StorageError> {
    Ok(match storage.read(Blob::Raft)? {
        Some(bytes) => {
            let hard: HardState = decode(&bytes).map_err(|e| StorageError::Decode {
                file: storage.file(Blob::Raft),
                reason: e.to_string(),
            })?;
            hard.committed
        }
        None => None,
    })
}

impl LogStore {
    /// Open the log of `storage`: read the hard state and recover the log,
    /// which must reach the committed index (the state file may be ahead of
    /// the log: a snapshot installed just before a crash, which openraft
    /// cleans up); a torn last record is cut off.
    pub fn open(storage: Storage) -> Result<(Self, Recovered), StorageError> {
        let hard: HardState = match storage.read(Blob::Raft)? {
            Some(bytes) => decode(&bytes).map_err(|e| StorageError::Decode {
                file: storage.file(Blob::Raft),
                reason: e.to_string(),
            })?,
            None => HardState::default(),
        };
        let keep_from = hard.purged.map_or(0, |p| p.index.saturating_add(1));
        let reach = hard.committed.map_or(0, |c| c.index);
        let observer: crate::storage::SyncObserver =
            Arc::new(|took| crate::metrics::WAL_FSYNC.observe(took));
        let (wal, recovered) = storage.open_wal(keep_from, reach, Some(observer))?;
        // Behind a purge point the log must start at or before it (a new
        // log's first index is openraft's to choose).
        if let (Some(first), Some(_)) = (recovered.first, hard.purged) {
            if first > keep_from {
                return Err(StorageError::Damaged {
                    file: storage.path().join(crate::storage::WAL_DIR),
                    offset: 0,
                    reason: format!(
                        "the log starts at index {first} but must hold every entry from {keep_from}: entries are missing"
                    ),
                });
            }
        }
        let store = Self {
            storage,
            wal,
            hard: Arc::new(Mutex::new(Hard {
                committed: hard.committed,
                safe: hard.committed,
                disk: hard,
                written: None,
                trailing: false,
            })),
            writer: Arc::default(),
            growth: Arc::default(),
            cache: Arc::default(),
            member: 0,
            readers: Arc::default(),
        };
        Ok((store, recovered))
    }

    /// Tell the log which member it belongs to (before Raft starts).
    pub fn set_member(&mut self, id: u64) {
        self.member = id;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hard> {
        self.hard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hard(&self) -> HardState {
        self.lock().disk.clone()
    }

    /// Update the hard state and write it durably, with the committed log
    /// id as far as the log is durable.
    async fn save(&self, change: impl FnOnce(&mut HardState)) -> Result<(), StorageError> {
        let _writer = self.writer.lock().await;
        let bytes = {
            let mut h = self.lock();
            change(&mut h.disk);
            h.disk.committed = std::cmp::max(h.disk.committed, h.safe);
            h.written = Some(std::time::Instant::now());
            encode(&h.disk)
        };
        self.storage.write_async(Blob::Raft, bytes).await
    }

    /// Bytes appended to the log since it was opened (shared, kept up to
    /// date).
    pub fn growth(&self) -> super::state_machine::LogGrowth {
        self.growth.clone()
    }

    /// The log itself (a clone shares it).
    pub fn wal(&self) -> Wal {
        self.wal.clone()
    }

    fn entries(&self, from: u64, to: u64) -> Result<Vec<Entry>, StorageError> {
        if let Some(entries) = self.cache.get(from, to) {
            return Ok(entries);
        }
        self.wal
            .read(from, to)?
            .iter()
            .map(|b| decode_entry(&self.storage, b))
            .collect()
    }

    /// Whether followers read this log (see `readers`): this member leads
    /// others.
    fn replicating(&self) -> bool {
        Arc::strong_count(&self.readers) > 1
    }

    /// Write `entries` to the log (not synced yet) and keep them in the
    /// cache; returns how many there were.
    fn write(&self, entries: impl IntoIterator<Item = Entry>) -> Result<usize, StorageError> {
        let mut n = 0;
        let mut bytes = 0;
        let replicating = self.replicating();
        let appended = self.wal.append(entries.into_iter().map(|e| {
            n += 1;
            let encoded = encode(&e);
            bytes += encoded.len() as u64;
            let index = e.log_id.index;
            // An entry proposed here holds its requests' buffers: the cache
            // keeps a copy decoded back, which owns just its bytes (see
            // `log_cache`). One that came from a leader was decoded from
            // its message already. Without followers the entry itself is
            // kept for the one read it will have (apply's), which takes it
            // out. An entry that does not decode is not cached.
            if e.log_id.leader_id.node_id != self.member {
                self.cache.push(e, encoded.len());
            } else if !replicating {
                self.cache.push_once(e, encoded.len());
            } else {
                match decode_entry(&self.storage, &encoded) {
                    Ok(copy) => self.cache.push(copy, encoded.len()),
                    Err(_) => self.cache.clear(),
                }
            }
            (index, encoded)
        }));
        if let Err(e) = appended {
            self.cache.clear();
            return Err(e);
        }
        self.growth
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => self.wal.bounds().1.map_or(0, |l| l.saturating_add(1)),
        };
        let keep_from = self.hard().purged.map_or(0, |p| p.index.saturating_add(1));
        self.entries(start.max(keep_from), end).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let purged = self.hard().purged;
        let last = match self.wal.bounds().1 {
            Some(i) if purged.is_none_or(|p| i > p.index) => self
                .entries(i, i.saturating_add(1))
                .map_err(read_err)?
                .pop()
                .map(|e| e.log_id),
            _ => None,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: std::cmp::max(last, purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        Self {
            readers: self.readers.clone(),
            ..self.clone()
        }
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), RaftStorageError> {
        let vote = *vote;
        self.save(|h| h.vote = Some(vote)).await.map_err(write_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, RaftStorageError> {
        Ok(self.hard().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        let durable = self.wal.durable();
        let due = {
            let mut h = self.lock();
            h.committed = committed;
            if committed.is_some_and(|c| durable.is_some_and(|d| c.index <= d)) {
                h.safe = committed;
            }
            // Only what may be written counts: a committed index ahead of
            // the synced log would rewrite the same file every second.
            let behind = h.disk.committed < h.safe;
            let wait = h.written.map_or(std::time::Duration::ZERO, |w| {
                COMMITTED_EVERY.saturating_sub(w.elapsed())
            });
            if !behind || (h.trailing && !wait.is_zero()) {
                None
            } else if wait.is_zero() {
                h.written = Some(std::time::Instant::now());
                Some(wait)
            } else {
                h.trailing = true;
                Some(wait)
            }
        };
        if let Some(wait) = due {
            // In the background: never holds the apply of what was committed.
            let me = self.clone();
            tokio::spawn(async move {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                    me.lock().trailing = false;
                }
                if let Err(e) = me.save(|_| {}).await {
                    tracing::error!(error = %e, "cannot write the Raft hard state");
                }
            });
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, RaftStorageError> {
        Ok(self.hard().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let n = self.write(entries).map_err(write_err)?;
        let done: crate::storage::wal::SyncDone = Box::new(move |r| {
            super::warn_if_slow("raft log append and sync", started, n);
            callback.log_io_completed(r.map_err(std::io::Error::other));
        });
        if self.replicating() {
            // A leader with followers: openraft's core goes on (sends the
            // entries to them) while the flusher syncs.
            self.wal.sync(done);
        } else {
            // Alone (or a follower): the core has nothing to do until the
            // entries are durable; syncing here saves the hand-offs to the
            // flusher thread and back.
            self.wal.sync_here(done);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        self.cache.truncate(log_id.index);
        self.wal.truncate(log_id.index).map_err(write_err)
    }

    /// The purge point is written (synced) first, then the segments wholly
    /// behind it are deleted: a crash between leaves files the next purge
    /// deletes.
    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        self.save(|h| h.purged = Some(log_id))
            .await
            .map_err(write_err)?;
        self.cache.purge(log_id.index);
        let files = self.wal.purge(log_id.index).map_err(write_err)?;
        tracing::info!(
            upto = log_id.index,
            files,
            "purged the Raft log behind a snapshot"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::OsSync;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn blank(i: u64) -> (u64, Vec<u8>) {
        let e = Entry {
            log_id: log_id(i),
            payload: EntryPayload::Blank,
        };
        (i, encode(&e))
    }

    /// An entry holding one put of `value` (as a slice of `buf`, the way a
    /// request's bytes arrive), proposed by member `by`.
    fn put(i: u64, by: u64, buf: &bytes::Bytes) -> Entry {
        use crate::mvcc::command::{Command, Proposal};
        use crate::pb::etcdserverpb::PutRequest;
        let req = PutRequest {
            key: bytes::Bytes::from(format!("k{i}")),
            value: buf.slice(8..72),
            ..Default::default()
        };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, by), i),
            payload: EntryPayload::Normal(Proposal::Batch(vec![Command::Put(req)])),
        }
    }

    /// The value of the put in `e`.
    fn value_of(e: &Entry) -> bytes::Bytes {
        use crate::mvcc::command::Command;
        match &e.payload {
            EntryPayload::Normal(p) => match p.commands() {
                [Command::Put(r)] => r.value.clone(),
                other => panic!("not one put: {other:?}"),
            },
            other => panic!("not a normal entry: {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_newest_entries_are_served_from_memory_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), Arc::new(OsSync)).unwrap();
        let (mut log, _) = LogStore::open(storage).unwrap();
        log.set_member(1);
        let buf = bytes::Bytes::from(vec![7u8; 8192]);
        let inside = |b: &bytes::Bytes| buf.as_ptr_range().contains(&b.as_ptr());

        // No follower reads this log: what this member proposed is kept
        // as written, for apply's one read, which takes it out.
        log.write((1..=3).map(|i| put(i, 1, &buf))).unwrap();
        let once = log.try_get_log_entries(1..4).await.unwrap();
        assert_eq!(once.len(), 3);
        assert!(
            once.iter().all(|e| inside(&value_of(e))),
            "not the entries written"
        );
        assert!(log.cache.get(1, 4).is_none(), "kept after its read");
        assert_eq!(log.try_get_log_entries(1..4).await.unwrap().len(), 3);

        // Leading others: kept, as copies that do not hold the request's
        // buffer, and equal to what the file holds.
        let reader = log.get_log_reader().await;
        log.write((4..=6).map(|i| put(i, 1, &buf))).unwrap();
        let cached = log.cache.get(4, 7).expect("kept");
        let from_file: Vec<Entry> = log
            .wal
            .read(4, 7)
            .unwrap()
            .iter()
            .map(|b| decode_entry(&log.storage, b).unwrap())
            .collect();
        assert_eq!(format!("{cached:?}"), format!("{from_file:?}"));
        assert!(cached.iter().all(|e| !inside(&value_of(e))));
        assert_eq!(value_of(&cached[0]), buf.slice(8..72));

        // Ranges reaching before the cache come from the file, whole.
        let mut r = reader;
        let all = r.try_get_log_entries(1..7).await.unwrap();
        assert_eq!(
            all.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5, 6]
        );

        // Entries from another leader are kept as they came.
        log.truncate(log_id(6)).await.unwrap();
        log.write((6..=7).map(|i| put(i, 2, &buf))).unwrap();
        let got = log.try_get_log_entries(5..8).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id).collect::<Vec<_>>(),
            vec![
                LogId::new(CommittedLeaderId::new(1, 1), 5),
                LogId::new(CommittedLeaderId::new(1, 2), 6),
                LogId::new(CommittedLeaderId::new(1, 2), 7),
            ]
        );
        log.purge(log_id(5)).await.unwrap();
        assert!(log.cache.get(5, 6).is_none());
        assert_eq!(log.try_get_log_entries(6..8).await.unwrap().len(), 2);

        // Once no follower reads the log any more, this member's entries
        // are kept for one read again.
        drop(r);
        log.write((8..=8).map(|i| put(i, 1, &buf))).unwrap();
        let once = log.try_get_log_entries(8..9).await.unwrap();
        assert!(inside(&value_of(&once[0])));
        assert!(log.cache.get(8, 9).is_none());
        assert_eq!(log.try_get_log_entries(8..9).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn hard_state_and_entries_come_back_and_purge_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), Arc::new(OsSync)).unwrap();
        let (mut log, _) = LogStore::open(storage.clone()).unwrap();
        log.wal.append((1..=2000).map(blank)).unwrap();
        log.wal.sync_now().await.unwrap();
        let vote = Vote::new(3, 7);
        log.save_vote(&vote).await.unwrap();
        log.save_committed(Some(log_id(1800))).await.unwrap();
        log.purge(log_id(1500)).await.unwrap();
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(log_id(1500)));
        assert_eq!(st.last_log_id, Some(log_id(2000)));
        assert_eq!(
            log.try_get_log_entries(1501..=2000).await.unwrap().len(),
            500
        );
        // Nothing below the purge point is handed out.
        assert_eq!(
            log.try_get_log_entries(..1600).await.unwrap()[0].log_id,
            log_id(1501)
        );
        drop(log);

        let (mut log, _) = LogStore::open(storage.clone()).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1800)));
        let st = log.get_log_state().await.unwrap();
        assert_eq!(
            (st.last_purged_log_id, st.last_log_id),
            (Some(log_id(1500)), Some(log_id(2000)))
        );

        // Purged past the end (a snapshot from the leader): the log is
        // empty and its last id is the purge point.
        log.purge(log_id(2500)).await.unwrap();
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id, Some(log_id(2500)));
        assert!(log.try_get_log_entries(2000..).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_log_cut_short_below_the_committed_index_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), Arc::new(OsSync)).unwrap();
        let (mut log, _) = LogStore::open(storage.clone()).unwrap();
        log.wal.append((1..=100).map(blank)).unwrap();
        log.wal.sync_now().await.unwrap();
        log.save_committed(Some(log_id(90))).await.unwrap();
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
        log.wal.truncate(50).unwrap();
        drop(log);
        let files = |d: &std::path::Path| -> Vec<(std::path::PathBuf, Vec<u8>)> {
            let mut v: Vec<_> = std::fs::read_dir(d.join("wal"))
                .unwrap()
                .map(|i| {
                    let p = i.unwrap().path();
                    let b = std::fs::read(&p).unwrap();
                    (p, b)
                })
                .collect();
            v.sort();
            v
        };
        let before = files(dir.path());
        let err = LogStore::open(storage.clone())
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("ends at index 49 but entries up to 90"),
            "{err}"
        );
        assert!(err.contains("wal"), "{err}");
        assert_eq!(files(dir.path()), before, "a refused open changed the log");
    }

    #[tokio::test]
    async fn a_committed_index_past_the_durable_log_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), Arc::new(OsSync)).unwrap();
        let (mut log, _) = LogStore::open(storage.clone()).unwrap();
        log.wal.append((1..=10).map(blank)).unwrap();
        log.wal.sync_now().await.unwrap();
        log.save_committed(Some(log_id(8))).await.unwrap();
        // Appended, not yet synced: a follower may learn such entries are
        // committed before its own copy is durable.
        log.wal.append((11..=20).map(blank)).unwrap();
        log.save_committed(Some(log_id(15))).await.unwrap();
        log.save_vote(&Vote::new(2, 1)).await.unwrap();
        drop(log);
        let (mut log, _) = LogStore::open(storage).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(8)));
    }

    /// Found by the `blob` fuzz target: a `raft` file whose purge point is
    /// index u64::MAX overflowed `index + 1` (a panic in debug builds).
    #[tokio::test]
    async fn a_purge_point_at_the_last_index_does_not_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), Arc::new(OsSync)).unwrap();
        let hard = HardState {
            purged: Some(log_id(u64::MAX)),
            ..Default::default()
        };
        storage.write(Blob::Raft, &encode(&hard)).unwrap();
        let (mut log, _) = LogStore::open(storage).unwrap();
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(log_id(u64::MAX)));
        assert!(log.try_get_log_entries(0..).await.unwrap().is_empty());
    }
}
