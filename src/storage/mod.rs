//! The one narrow interface between raftcd and its disk: a data dir with a
//! Raft log ([`wal`]) and three files written whole ([`blob`]).
//!
//! ```text
//! DATA_DIR/
//!   LOCK      held (flock) while a member uses the dir
//!   member    who this dir belongs to (member id, cluster, name)
//!   raft      Raft's hard state: vote, last purged and committed log id
//!   state     the state machine at its last snapshot
//!   wal/      the Raft log since that snapshot, in segment files
//! ```
//!
//! What is durable when: an appended entry once the log's flusher synced it
//! (before openraft is told, so before any acknowledgement); the vote and
//! the purge point before their calls return; the state machine at each
//! snapshot, before the log behind it is purged. Applies write nothing: a
//! restart loads `state` and replays the log after it.
//!
//! Every file is checksummed ([`frame`]); opening a data dir checks all of
//! them and refuses damage with one error naming the file and the offset
//! (see [`StorageError::Damaged`]). The only repair is cutting a torn last
//! record off the log, which a crash during an append leaves.
//!
//! This module knows nothing of Raft or MVCC: it stores bytes (the callers
//! encode with [`crate::codec`]).

pub mod blob;
pub mod frame;
pub mod spill;
pub mod wal;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use blob::Blob;
pub use wal::{Recovered, SyncDone, SyncObserver, Wal};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open data dir {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open data dir {path}: could not acquire lock on {lock}: another raftcd process is using it")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("cannot {what} {path}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("fsync of {path} failed: {source}; nothing more is acknowledged (the kernel may have dropped the unwritten data, so it is not retried); restart the member once the disk is fixed")]
    SyncFailed {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("data dir file {file} is damaged at offset {offset}: {reason}; refusing to start on it (nothing was changed). Re-seed this member from its peers (docs/architecture.md, \"Recovery\")")]
    Damaged {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("data dir file {file} holds data this build cannot read: {reason}")]
    Decode { file: PathBuf, reason: String },
    #[error("the Raft log stopped after an earlier failure: {0}")]
    Failed(String),
    #[error("data dir {path} was written by an older raftcd with the sled engine, which this build no longer reads. Carry the data over: with the old raftcd serving it, run `etcdctl snapshot save backup.db`, then `raftcd snapshot restore backup.db --data-dir NEW_DIR` with this build and start it on NEW_DIR")]
    OldEngine { path: PathBuf },
    #[error("{0}")]
    Refused(String),
}

/// An I/O error on `path` while doing `what`.
fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// A failed sync of `path`.
fn sync_failed(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::SyncFailed {
        path: path.to_path_buf(),
        source,
    }
}

/// Lock `m`; a panic while it was held leaves whole records behind it, so
/// a poisoned lock is taken as it is.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Damage found in `path` at `offset`.
fn damaged(path: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
    StorageError::Damaged {
        file: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// How the store makes files durable. The default is the operating
/// system's; a test wraps it to inject failures.
pub trait Syncer: Send + Sync + std::fmt::Debug + 'static {
    /// `fdatasync`: the file's data (and the size needed to read it).
    fn sync_data(&self, file: &File) -> std::io::Result<()>;
    /// `fsync`: data and all metadata (used for directories and new files).
    fn sync_all(&self, file: &File) -> std::io::Result<()>;
}

/// The operating system's `fdatasync`/`fsync`.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsSync;

impl Syncer for OsSync {
    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        file.sync_data()
    }

    fn sync_all(&self, file: &File) -> std::io::Result<()> {
        file.sync_all()
    }
}

/// How long [`Storage::open`] waits for a data dir's lock to be released.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Name of the lock file.
const LOCK: &str = "LOCK";
/// Name of the log's directory.
pub const WAL_DIR: &str = "wal";
/// The directory of superseded revisions (not durable; see [`spill`]).
pub const SPILL_DIR: &str = "spill";
/// The member's configuration `raftcd storage init` writes (see
/// `crate::init`); storage leaves it alone.
pub const START_FILE: &str = "raftcd.toml";

/// Handle to a data dir. Cheap to clone; the lock on the dir is released
/// when the last clone goes.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    syncer: Arc<dyn Syncer>,
    /// Where the store's superseded revisions go (emptied at open).
    spill: spill::Spill,
    _lock: File,
}

impl Storage {
    /// Open (or create) the data dir `dir`. An old sled data dir is refused
    /// with how to carry its data over; nothing is read or checked yet
    /// beyond the layout (each file is checked when it is read).
    pub fn open(dir: &Path, syncer: Arc<dyn Syncer>) -> Result<Self, StorageError> {
        let open_err = |source| StorageError::Open {
            path: dir.to_path_buf(),
            source,
        };
        if dir.exists() && !dir.is_dir() {
            return Err(open_err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "it exists and is not a directory",
            )));
        }
        // sled kept `db/conf` and `db/db`; refuse before touching anything.
        if dir.join("db").join("conf").exists() || dir.join("db").join("db").exists() {
            return Err(StorageError::OldEngine {
                path: dir.to_path_buf(),
            });
        }
        std::fs::create_dir_all(dir).map_err(open_err)?;
        let lock_path = dir.join(LOCK);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(open_err)?;
        // A store closed in this process a moment ago may still be letting
        // go (its last handle in a task that is finishing): wait a little.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(StorageError::Locked {
                        path: dir.to_path_buf(),
                        lock: lock_path,
                    })
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(open_err(e)),
            }
        }
        for item in std::fs::read_dir(dir).map_err(open_err)? {
            let item = item.map_err(open_err)?;
            let name = item.file_name().to_string_lossy().into_owned();
            if Blob::ALL.iter().any(|b| blob::tmp_name(*b) == name) {
                // A write interrupted by a crash: the old file is intact.
                std::fs::remove_file(item.path()).map_err(open_err)?;
                tracing::info!(file = %item.path().display(), "removed an interrupted write");
            } else if name != LOCK
                && name != WAL_DIR
                && name != SPILL_DIR
                && name != START_FILE
                && !Blob::ALL.iter().any(|b| b.name() == name)
            {
                tracing::warn!(file = %item.path().display(), "a file raftcd did not write is in the data dir; it is left alone");
            }
        }
        let spill = spill::Spill::open(&dir.join(SPILL_DIR)).map_err(open_err)?;
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                syncer,
                spill,
                _lock: lock,
            }),
        })
    }

    /// The contents of `blob`, checked; `None` if it was never written.
    pub fn read(&self, blob: Blob) -> Result<Option<Vec<u8>>, StorageError> {
        blob::read(&self.inner.dir, blob)
    }

    /// Replace `blob` with `contents`, durably (blocking).
    pub fn write(&self, blob: Blob, contents: &[u8]) -> Result<(), StorageError> {
        blob::write(&self.inner.dir, blob, contents, &*self.inner.syncer)
    }

    /// [`Storage::write`] with contents `fill` streams to the file.
    pub fn write_with(
        &self,
        blob: Blob,
        fill: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<(), StorageError> {
        blob::write_with(&self.inner.dir, blob, &*self.inner.syncer, fill)
    }

    /// [`Storage::write`] on the blocking pool.
    pub async fn write_async(&self, blob: Blob, contents: Vec<u8>) -> Result<(), StorageError> {
        let storage = self.clone();
        tokio::task::spawn_blocking(move || storage.write(blob, &contents))
            .await
            .map_err(|e| StorageError::Failed(format!("write task failed: {e}")))?
    }

    /// Open the Raft log: see [`Wal::open`].
    pub fn open_wal(
        &self,
        keep_from: u64,
        reach: u64,
        observer: Option<SyncObserver>,
    ) -> Result<(Wal, Recovered), StorageError> {
        Wal::open(
            &self.inner.dir.join(WAL_DIR),
            keep_from,
            reach,
            self.inner.syncer.clone(),
            observer,
        )
    }

    /// Whether the data dir `dir` holds a member's identity (without
    /// opening or locking it): a member started there before.
    pub fn holds_identity(dir: &Path) -> bool {
        blob::path(dir, Blob::Member).exists()
    }

    /// A spill with no segments, writing into this data dir's spill
    /// directory (for a store built from the `state` file or a snapshot).
    pub fn spill(&self) -> spill::Spill {
        self.inner.spill.fresh()
    }

    /// The path of a file of the data dir.
    pub fn file(&self, blob: Blob) -> PathBuf {
        blob::path(&self.inner.dir, blob)
    }

    /// How many handles of this store are alive (this one included).
    pub fn handle_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Bytes the data dir's files hold (the log's segments included).
    pub fn size_on_disk(&self) -> u64 {
        fn size(dir: &Path) -> u64 {
            std::fs::read_dir(dir)
                .map(|items| {
                    items
                        .flatten()
                        .map(|i| match i.metadata() {
                            Ok(m) if m.is_dir() => size(&i.path()),
                            Ok(m) => m.len(),
                            Err(_) => 0,
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        size(&self.inner.dir)
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os() -> Arc<dyn Syncer> {
        Arc::new(OsSync)
    }

    #[test]
    fn a_locked_data_dir_is_waited_for_then_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let first = Storage::open(dir.path(), os()).unwrap();
        // Released while the second open waits: it gets the store.
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(first);
        });
        let second = Storage::open(dir.path(), os()).expect("opened once released");
        release.join().unwrap();
        // Held throughout: refused after the wait, naming the data dir.
        let started = std::time::Instant::now();
        let err = Storage::open(dir.path(), os()).err().expect("still locked");
        assert!(started.elapsed() >= LOCK_WAIT);
        let msg = err.to_string();
        assert!(msg.starts_with("cannot open data dir "), "{msg}");
        assert!(msg.contains("could not acquire lock"), "{msg}");
        drop(second);
    }

    #[test]
    fn an_old_sled_data_dir_is_refused_untouched_with_how_to_migrate() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        std::fs::write(dir.path().join("db").join("conf"), b"segment_size: 524288").unwrap();
        let msg = Storage::open(dir.path(), os()).err().unwrap().to_string();
        assert!(msg.contains("sled"), "{msg}");
        assert!(msg.contains("etcdctl snapshot save"), "{msg}");
        assert!(msg.contains("raftcd snapshot restore"), "{msg}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|i| i.unwrap().file_name())
            .collect();
        assert_eq!(names, ["db"]);
    }

    #[test]
    fn blobs_round_trip_and_an_interrupted_write_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), os()).unwrap();
        assert_eq!(s.read(Blob::Raft).unwrap(), None);
        s.write(Blob::Raft, b"vote").unwrap();
        assert_eq!(s.read(Blob::Raft).unwrap().unwrap(), b"vote");
        drop(s);
        std::fs::write(dir.path().join("raft.tmp"), b"half").unwrap();
        let s = Storage::open(dir.path(), os()).unwrap();
        assert!(!dir.path().join("raft.tmp").exists());
        assert_eq!(s.read(Blob::Raft).unwrap().unwrap(), b"vote");
        assert!(s.size_on_disk() > 4);
    }
}
