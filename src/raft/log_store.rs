//! The Raft log and hard state (vote, committed, last purged) on [`Storage`].
//!
//! An append is acknowledged to openraft only after a durable flush; openraft
//! hands over entries in batches, so one flush commits a whole group.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};

use super::{LogId, RaftStorageError, TypeConfig};
use crate::storage::{decode, encode, Space, Storage, StorageError, WriteBatch};

type Entry = openraft::Entry<TypeConfig>;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

fn read_err(e: StorageError) -> RaftStorageError {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_err(e: StorageError) -> RaftStorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

/// The log store. Clones share the same storage.
#[derive(Clone)]
pub struct LogStore {
    storage: Storage,
}

impl LogStore {
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        self.storage
            .get(Space::RaftMeta, key)?
            .map(|v| decode(Space::RaftMeta, &v))
            .transpose()
    }

    /// The vote persisted on disk (used at start-up to tell a fresh data dir).
    pub fn stored_vote(&self) -> Result<Option<Vote<u64>>, StorageError> {
        self.meta(KEY_VOTE)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Some(i.saturating_add(1)),
            Bound::Excluded(&i) => Some(i),
            Bound::Unbounded => None,
        };
        let end_key = end.map(|e| e.to_be_bytes());
        let mut out = Vec::new();
        for item in self.storage.scan(
            Space::Log,
            &start.to_be_bytes(),
            end_key.as_ref().map(|k| &k[..]),
        ) {
            let (_, v) = item.map_err(read_err)?;
            out.push(decode::<Entry>(Space::Log, &v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let last_purged: Option<LogId> = self.meta(KEY_PURGED).map_err(read_err)?;
        let last = match self.storage.last(Space::Log).map_err(read_err)? {
            Some((_, v)) => Some(decode::<Entry>(Space::Log, &v).map_err(read_err)?.log_id),
            None => None,
        };
        // Entries at or below the purge point may still be on disk (their
        // deletion runs in the background); they never count as the last.
        let last = std::cmp::max(last, last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), RaftStorageError> {
        let mut b = WriteBatch::new();
        b.put(Space::RaftMeta, KEY_VOTE, encode(vote));
        self.storage.write(b).map_err(write_err)?;
        self.storage.flush().await.map_err(write_err)?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, RaftStorageError> {
        self.meta(KEY_VOTE).map_err(read_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        let mut b = WriteBatch::new();
        b.put(Space::RaftMeta, KEY_COMMITTED, encode(&committed));
        self.storage.write(b).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, RaftStorageError> {
        Ok(self
            .meta::<Option<LogId>>(KEY_COMMITTED)
            .map_err(read_err)?
            .flatten())
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
        let mut b = WriteBatch::new();
        let mut n = 0;
        for e in entries {
            b.put(Space::Log, &e.log_id.index.to_be_bytes(), encode(&e));
            n += 1;
        }
        self.storage.write(b).map_err(write_err)?;
        let flushed = self.storage.flush().await;
        crate::metrics::WAL_FSYNC.observe(started.elapsed());
        super::warn_if_slow("raft log append and flush", started, n);
        callback.log_io_completed(flushed.map_err(std::io::Error::other));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        let mut b = WriteBatch::new();
        self.storage
            .delete_range_into(&mut b, Space::Log, &log_id.index.to_be_bytes(), None)
            .map_err(write_err)?;
        self.storage.write(b).map_err(write_err)?;
        self.storage.flush().await.map_err(write_err)
    }

    /// Purging is logical at once (the purge point is written; openraft
    /// never reads below it) and physical in the background, a few hundred
    /// entries per batch: deleting ten thousand entries in one batch held
    /// the next appends up for 150 ms. Entries a crash leaves behind below
    /// the purge point are deleted by the next purge, which starts from the
    /// beginning of the log.
    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        let mut b = WriteBatch::new();
        b.put(Space::RaftMeta, KEY_PURGED, encode(&log_id));
        self.storage.write(b).map_err(write_err)?;
        self.storage.delete_below_in_background(
            Space::Log,
            log_id.index.saturating_add(1).to_be_bytes().to_vec(),
            "purged Raft log",
        );
        tracing::info!(upto = log_id.index, "purged the Raft log behind a snapshot");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    #[tokio::test]
    async fn purge_is_logical_at_once_and_physical_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let mut b = WriteBatch::new();
        for i in 1..=2000u64 {
            let e = Entry {
                log_id: log_id(i),
                payload: EntryPayload::Blank,
            };
            b.put(Space::Log, &i.to_be_bytes(), encode(&e));
        }
        storage.write(b).unwrap();
        let mut log = LogStore::new(storage.clone());

        log.purge(log_id(1500)).await.unwrap();
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(log_id(1500)));
        assert_eq!(st.last_log_id, Some(log_id(2000)));
        let entries = log.try_get_log_entries(1501..=2000).await.unwrap();
        assert_eq!(entries.len(), 500);

        // The purged entries go, in the background; the rest stay.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (first, _) = storage.first(Space::Log).unwrap().expect("entries left");
            if first == 1501u64.to_be_bytes() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "purged entries not deleted"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(log.try_get_log_entries(1501..).await.unwrap().len(), 500);

        // Entries a crash left below the purge point never count as the
        // last log id.
        let mut b = WriteBatch::new();
        b.put(Space::RaftMeta, KEY_PURGED, encode(&log_id(2500)));
        storage.write(b).unwrap();
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id, Some(log_id(2500)));
    }
}
