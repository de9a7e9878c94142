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
            None => last_purged,
        };
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
        let mut b = WriteBatch::new();
        for e in entries {
            b.put(Space::Log, &e.log_id.index.to_be_bytes(), encode(&e));
        }
        self.storage.write(b).map_err(write_err)?;
        let flushed = self.storage.flush().await;
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

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        let mut b = WriteBatch::new();
        b.put(Space::RaftMeta, KEY_PURGED, encode(&log_id));
        let end = log_id.index.saturating_add(1).to_be_bytes();
        self.storage
            .delete_range_into(&mut b, Space::Log, &[], Some(&end))
            .map_err(write_err)?;
        self.storage.write(b).map_err(write_err)?;
        tracing::info!(upto = log_id.index, "purged the Raft log behind a snapshot");
        Ok(())
    }
}
