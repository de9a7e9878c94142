//! The one narrow interface between raftcd and its storage engine.
//!
//! Everything raftcd persists (the Raft log, the vote, the MVCC records, the
//! state machine's metadata, snapshots) goes through [`Storage`]: ordered
//! keyspaces, atomic batches that may span keyspaces, a durable flush and
//! range scans. Only this module knows the engine is sled, so replacing it
//! (for example with redb) touches this file alone.
//!
//! Large, rarely written values (the `Snapshot` space, where earlier
//! builds kept a whole snapshot copy) live in a separate sled tree:
//! sharing a tree node with the state machine's metadata (written on every
//! apply) would make every apply rewrite the blob. Batches that touch both
//! trees are applied in one sled transaction. Snapshots are no longer
//! stored: the state machine's records are the snapshot.
//!
//! Every value written here is encoded with [`crate::codec`]: a format
//! version byte, then postcard. The readers here add which keyspace a bad
//! record came from.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::codec::CodecError;
pub use crate::codec::{encode, encode_as, FORMAT_LATEST, FORMAT_V1, FORMAT_V2};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open data dir {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("storage engine error: {0}")]
    Engine(#[from] sled::Error),
    #[error("corrupt record in {space:?}: {reason}")]
    Corrupt { space: Space, reason: String },
    #[error("unsupported data format version {found} (this build reads versions up to {FORMAT_LATEST}); was the data dir written by a newer raftcd?")]
    Version { found: u8 },
}

/// The ordered keyspaces. Each is a disjoint, ordered key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Raft log entries by index (u64 big endian).
    Log = 1,
    /// Raft hard state: vote, committed, last purged log id.
    RaftMeta = 2,
    /// MVCC records by (main revision, sub revision).
    Kv = 3,
    /// State machine metadata: last applied, membership, revision, compaction.
    SmMeta = 4,
    /// Large values; only an older data dir's leftover snapshot copy, which
    /// the state machine deletes on open.
    Snapshot = 5,
    /// Identity of this data dir: cluster id, member id, name.
    Identity = 6,
    /// The lease table by lease id (i64 big endian): granted TTL and the
    /// leader's clock at the last grant or persisted refresh.
    Lease = 7,
}

impl Space {
    fn prefix(self) -> u8 {
        self as u8
    }

    /// Whether the space lives in the tree for large, rarely written values.
    fn is_blob(self) -> bool {
        matches!(self, Space::Snapshot)
    }
}

/// Name of the sled tree holding the [`Space::is_blob`] spaces.
const BLOB_TREE: &[u8] = b"blobs";

fn full_key(space: Space, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(space.prefix());
    k.extend_from_slice(key);
    k
}

/// Decode a version-1 record written by [`encode`].
pub fn decode<T: DeserializeOwned>(space: Space, bytes: &[u8]) -> Result<T, StorageError> {
    crate::codec::decode(bytes).map_err(|e| corrupt(space, e))
}

/// The format version of a record and its payload; refuses versions newer
/// than this build reads.
pub fn split_version(space: Space, bytes: &[u8]) -> Result<(u8, &[u8]), StorageError> {
    crate::codec::split_version(bytes).map_err(|e| corrupt(space, e))
}

/// Decode the payload of a record (the bytes after its version byte).
pub fn decode_payload<T: DeserializeOwned>(
    space: Space,
    payload: &[u8],
) -> Result<T, StorageError> {
    crate::codec::decode_payload(payload).map_err(|e| corrupt(space, e))
}

fn corrupt(space: Space, e: CodecError) -> StorageError {
    match e {
        CodecError::Version { found } => StorageError::Version { found },
        other => StorageError::Corrupt {
            space,
            reason: other.to_string(),
        },
    }
}

/// A set of writes applied atomically by [`Storage::write`].
#[derive(Default)]
pub struct WriteBatch {
    main: sled::Batch,
    main_len: usize,
    blobs: sled::Batch,
    blobs_len: usize,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, space: Space, key: &[u8], value: Vec<u8>) {
        if space.is_blob() {
            self.blobs.insert(full_key(space, key), value);
            self.blobs_len += 1;
        } else {
            self.main.insert(full_key(space, key), value);
            self.main_len += 1;
        }
    }

    pub fn delete(&mut self, space: Space, key: &[u8]) {
        if space.is_blob() {
            self.blobs.remove(full_key(space, key));
            self.blobs_len += 1;
        } else {
            self.main.remove(full_key(space, key));
            self.main_len += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.main_len == 0 && self.blobs_len == 0
    }

    /// How many puts and deletes the batch holds.
    pub fn len(&self) -> usize {
        self.main_len + self.blobs_len
    }
}

/// How long [`Storage::open`] waits for a data dir's lock to be released.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// sled reports a data dir locked by another open store only through the
/// message of an `io::Error` ("could not acquire lock on ...").
fn is_lock_conflict(e: &std::io::Error) -> bool {
    e.to_string().contains("could not acquire lock")
}

/// Keys per batch of [`Storage::delete_in_background`].
const BACKGROUND_CHUNK: usize = 512;

/// One stored key/value pair (key without its keyspace prefix).
pub type Pair = (Vec<u8>, Vec<u8>);

/// Handle to the storage engine. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Storage {
    db: sled::Db,
    blobs: sled::Tree,
    path: PathBuf,
    /// One count per live handle: the engine (and its lock on the data dir)
    /// is released when the last one goes.
    handles: std::sync::Arc<()>,
    /// Background deletions still running.
    background: std::sync::Arc<Background>,
}

#[derive(Default)]
struct Background {
    running: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
    /// Set when the store is closing: background work stops between
    /// batches and leaves the rest for the next start.
    stop: std::sync::atomic::AtomicBool,
}

impl Storage {
    /// Open (or create) the store under `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        if dir.exists() && !dir.is_dir() {
            return Err(StorageError::Open {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    "it exists and is not a directory",
                ),
            });
        }
        std::fs::create_dir_all(dir).map_err(|source| StorageError::Open {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("db");
        // sled finishes writing sealed buffers on its own thread pool, and
        // those jobs keep the data dir's lock a moment after the last
        // handle of a closed store is gone: when a store is reopened in the
        // same process (an embedding program restarting its node), wait
        // for them. Another process holding the lock fails after the wait.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            let opened = sled::Config::new()
                .path(&path)
                .cache_capacity(64 * 1024 * 1024)
                .mode(sled::Mode::HighThroughput)
                .open();
            match opened {
                Err(sled::Error::Io(e))
                    if is_lock_conflict(&e) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(sled::Error::Io(source)) => {
                    return Err(StorageError::Open {
                        path: path.clone(),
                        source,
                    })
                }
                Err(other) => return Err(StorageError::Engine(other)),
                Ok(db) => break db,
            }
        };
        let blobs = db.open_tree(BLOB_TREE)?;
        let s = Self {
            db,
            blobs,
            path,
            handles: std::sync::Arc::new(()),
            background: std::sync::Arc::default(),
        };
        s.move_blobs_out_of_main()?;
        Ok(s)
    }

    /// Data dirs written before snapshots had their own tree keep them in
    /// the main one: move them over once.
    fn move_blobs_out_of_main(&self) -> Result<(), StorageError> {
        let mut b = WriteBatch::new();
        for space in [Space::Snapshot] {
            let end = [space.prefix() + 1];
            for item in self.db.range::<&[u8], _>(&[space.prefix()][..]..&end[..]) {
                let (k, v) = item?;
                b.main.remove(k.clone());
                b.main_len += 1;
                b.blobs.insert(k, v);
                b.blobs_len += 1;
            }
        }
        if !b.is_empty() {
            self.write(b)?;
            self.flush_blocking()?;
        }
        Ok(())
    }

    fn tree(&self, space: Space) -> &sled::Tree {
        if space.is_blob() {
            &self.blobs
        } else {
            &self.db
        }
    }

    /// How many handles of this store are alive (this one included).
    pub fn handle_count(&self) -> usize {
        std::sync::Arc::strong_count(&self.handles)
    }

    pub fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .tree(space)
            .get(full_key(space, key))?
            .map(|v| v.to_vec()))
    }

    /// Apply every write of `batch` atomically (all or none survive a crash).
    pub fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        use sled::Transactional;
        match (batch.main_len > 0, batch.blobs_len > 0) {
            (false, false) => {}
            (true, false) => self.db.apply_batch(batch.main)?,
            (false, true) => self.blobs.apply_batch(batch.blobs)?,
            (true, true) => {
                let main: &sled::Tree = &self.db;
                (main, &self.blobs)
                    .transaction(|(m, b)| {
                        m.apply_batch(&batch.main)?;
                        b.apply_batch(&batch.blobs)?;
                        Ok::<(), ConflictableTransactionError<()>>(())
                    })
                    .map_err(|e| match e {
                        TransactionError::Storage(e) => StorageError::Engine(e),
                        TransactionError::Abort(()) => StorageError::Engine(
                            sled::Error::ReportableBug("write batch transaction aborted".into()),
                        ),
                    })?;
            }
        }
        Ok(())
    }

    /// Make every write issued before this call durable.
    ///
    /// Runs on tokio's blocking pool with a counted handle, not with sled's
    /// `flush_async`: a flush whose caller went away (Raft stopping) must
    /// still count as a user of the engine, or the data dir's lock could
    /// outlive [`Storage::handle_count`] reaching one.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let storage = self.clone();
        tokio::task::spawn_blocking(move || storage.flush_blocking())
            .await
            .map_err(|e| {
                StorageError::Engine(sled::Error::ReportableBug(format!(
                    "flush task failed: {e}"
                )))
            })?
    }

    /// Blocking version of [`Storage::flush`].
    pub fn flush_blocking(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        Ok(())
    }

    /// Entries of `space` with keys in `[from, to)` (`to = None`: to the end
    /// of the space), in key order.
    pub fn scan(
        &self,
        space: Space,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> impl DoubleEndedIterator<Item = Result<Pair, StorageError>> {
        let start = Bound::Included(full_key(space, from));
        let end = match to {
            Some(to) => Bound::Excluded(full_key(space, to)),
            None => Bound::Excluded(vec![space.prefix() + 1]),
        };
        self.tree(space).range::<Vec<u8>, _>((start, end)).map(|r| {
            r.map(|(k, v)| (k[1..].to_vec(), v.to_vec()))
                .map_err(StorageError::from)
        })
    }

    /// The last entry of `space`, if any.
    pub fn last(&self, space: Space) -> Result<Option<Pair>, StorageError> {
        self.scan(space, &[], None).next_back().transpose()
    }

    /// The first entry of `space`, if any.
    pub fn first(&self, space: Space) -> Result<Option<Pair>, StorageError> {
        self.scan(space, &[], None).next().transpose()
    }

    /// Add deletes of every key of `space` in `[from, to)` to `batch`.
    pub fn delete_range_into(
        &self,
        batch: &mut WriteBatch,
        space: Space,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Result<(), StorageError> {
        for item in self.scan(space, from, to) {
            let (k, _) = item?;
            batch.delete(space, &k);
        }
        Ok(())
    }

    /// Delete at most `max` of the first keys of `space` that sort below
    /// `to`, in one batch; how many were deleted (0: none are left). Lets a
    /// large range go in small steps that never hold writers up for long.
    pub fn delete_first(&self, space: Space, to: &[u8], max: usize) -> Result<usize, StorageError> {
        let mut batch = WriteBatch::new();
        for item in self.scan(space, &[], Some(to)).take(max) {
            let (k, _) = item?;
            batch.delete(space, &k);
        }
        let n = batch.len();
        self.write(batch)?;
        Ok(n)
    }

    /// Delete `keys` of `space` on a background thread, a few hundred per
    /// batch, so that a large deletion (a compaction's dropped history)
    /// never holds writers up. Only for keys nothing reads any more: if the
    /// process dies first, some stay on disk, and whoever scheduled them
    /// must find them again on open.
    pub fn delete_in_background(&self, space: Space, keys: Vec<Vec<u8>>, what: &'static str) {
        let mut next = 0;
        self.in_background(what, move |storage| {
            let end = (next + BACKGROUND_CHUNK).min(keys.len());
            let chunk = &keys[next..end];
            let mut batch = WriteBatch::new();
            for k in chunk {
                batch.delete(space, k);
            }
            storage.write(batch)?;
            next = end;
            Ok(chunk.len())
        });
    }

    /// Delete every key of `space` below `to` on a background thread, a few
    /// hundred per batch (the Raft log behind a purge point), with the same
    /// rules as [`Storage::delete_in_background`].
    pub fn delete_below_in_background(&self, space: Space, to: Vec<u8>, what: &'static str) {
        self.in_background(what, move |storage| {
            storage.delete_first(space, &to, BACKGROUND_CHUNK)
        });
    }

    /// Run `step` on a background thread until it returns 0 (nothing left)
    /// or fails, or the store starts closing. Counted: the thread holds a
    /// handle, and [`Storage::background_idle`] waits for it.
    fn in_background(
        &self,
        what: &'static str,
        mut step: impl FnMut(&Storage) -> Result<usize, StorageError> + Send + 'static,
    ) {
        use std::sync::atomic::Ordering;
        let storage = self.clone();
        let background = self.background.clone();
        background.running.fetch_add(1, Ordering::SeqCst);
        let done = background.clone();
        let spawned = std::thread::Builder::new()
            .name("raftcd-delete".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let mut deleted = 0;
                loop {
                    if done.stop.load(Ordering::SeqCst) {
                        tracing::debug!(what, "store closing: background deletion left for the next start");
                        break;
                    }
                    match step(&storage) {
                        Ok(0) => break,
                        Ok(n) => deleted += n,
                        Err(e) => {
                            tracing::warn!(error = %e, what, "background deletion failed; the rest is left for later");
                            break;
                        }
                    }
                }
                tracing::debug!(what, deleted, took = ?started.elapsed(), "background deletion done");
                drop(storage);
                done.running.fetch_sub(1, Ordering::SeqCst);
                done.idle.notify_waiters();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, what, "cannot start a background deletion; left for later");
            background.running.fetch_sub(1, Ordering::SeqCst);
            background.idle.notify_waiters();
        }
    }

    /// Stop background deletions between batches (the store is closing);
    /// what is left is found again on the next open.
    pub fn stop_background(&self) {
        self.background
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Resolves once no background deletion is running.
    pub async fn background_idle(&self) {
        loop {
            let idle = self.background.idle.notified();
            if self
                .background
                .running
                .load(std::sync::atomic::Ordering::SeqCst)
                == 0
            {
                return;
            }
            idle.await;
        }
    }

    /// Bytes the engine occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Where the engine keeps its files.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_data_dir_is_waited_for_then_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let first = Storage::open(dir.path()).unwrap();
        // Released while the second open waits: it gets the store.
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(first);
        });
        let second = Storage::open(dir.path()).expect("opened once released");
        release.join().unwrap();
        // Held throughout: refused after the wait, naming the data dir.
        let started = std::time::Instant::now();
        let err = Storage::open(dir.path()).err().expect("still locked");
        assert!(started.elapsed() >= LOCK_WAIT);
        let msg = err.to_string();
        assert!(msg.starts_with("cannot open data dir "), "{msg}");
        assert!(msg.contains("could not acquire lock"), "{msg}");
        drop(second);
    }

    #[tokio::test]
    async fn background_deletion_runs_in_batches_and_stops_when_closing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        let mut b = WriteBatch::new();
        let keys: Vec<Vec<u8>> = (0..2000u64).map(|i| i.to_be_bytes().to_vec()).collect();
        for k in &keys {
            b.put(Space::Kv, k, encode(&1u8));
        }
        s.write(b).unwrap();

        s.delete_in_background(Space::Kv, keys[..1500].to_vec(), "test");
        s.background_idle().await;
        assert_eq!(s.scan(Space::Kv, &[], None).count(), 500);

        // Closing: nothing more is deleted; the caller finds it again later.
        s.stop_background();
        s.delete_in_background(Space::Kv, keys[1500..].to_vec(), "test");
        s.background_idle().await;
        assert_eq!(s.scan(Space::Kv, &[], None).count(), 500);
        assert_eq!(s.handle_count(), 1);
    }

    #[test]
    fn batch_scan_and_versioned_codec() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        let mut b = WriteBatch::new();
        b.put(Space::Log, &1u64.to_be_bytes(), encode(&"one"));
        b.put(Space::Log, &2u64.to_be_bytes(), encode(&"two"));
        b.put(Space::Kv, b"x", encode(&7u32));
        s.write(b).unwrap();
        let logs: Vec<_> = s.scan(Space::Log, &[], None).map(|r| r.unwrap()).collect();
        assert_eq!(logs.len(), 2);
        let (k, v) = s.last(Space::Log).unwrap().unwrap();
        assert_eq!(k, 2u64.to_be_bytes());
        assert_eq!(decode::<String>(Space::Log, &v).unwrap(), "two");
        let mut bad = v.clone();
        bad[0] = 9;
        assert!(matches!(
            decode::<String>(Space::Log, &bad),
            Err(StorageError::Version { found: 9 })
        ));
        let mut b = WriteBatch::new();
        s.delete_range_into(&mut b, Space::Log, &[], None).unwrap();
        s.write(b).unwrap();
        assert!(s.first(Space::Log).unwrap().is_none());
        assert!(s.get(Space::Kv, b"x").unwrap().is_some());
    }

    #[test]
    fn snapshots_live_in_their_own_tree() {
        let dir = tempfile::tempdir().unwrap();
        {
            // An older layout: the snapshot in the main tree.
            let s = Storage::open(dir.path()).unwrap();
            s.db.insert(full_key(Space::Snapshot, b"snap"), encode(&"old"))
                .unwrap();
            s.flush_blocking().unwrap();
        }
        let s = Storage::open(dir.path()).unwrap();
        assert!(s
            .db
            .get(full_key(Space::Snapshot, b"snap"))
            .unwrap()
            .is_none());
        let v = s.get(Space::Snapshot, b"snap").unwrap().unwrap();
        assert_eq!(decode::<String>(Space::Snapshot, &v).unwrap(), "old");
        // One batch over both trees is applied as a whole.
        let mut b = WriteBatch::new();
        b.put(Space::Snapshot, b"snap", encode(&"new"));
        b.put(Space::SmMeta, b"m", encode(&1u8));
        s.write(b).unwrap();
        let v = s.get(Space::Snapshot, b"snap").unwrap().unwrap();
        assert_eq!(decode::<String>(Space::Snapshot, &v).unwrap(), "new");
        assert!(s.get(Space::SmMeta, b"m").unwrap().is_some());
        assert_eq!(s.scan(Space::Snapshot, &[], None).count(), 1);
        assert!(s.scan(Space::SmMeta, &[], None).all(|r| r.is_ok()));
    }
}
