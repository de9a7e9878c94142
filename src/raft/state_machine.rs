//! The Raft state machine: applies committed entries to the MVCC store.
//!
//! A batch of entries is applied to a working copy of the store's [`View`],
//! the resulting records and the last applied log id are written in one
//! atomic storage batch, and only then is the new view published to readers.
//! A crash therefore never half-applies a batch, and since the last applied
//! log id is stored with the data, restart never applies an entry twice.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::Arc;

use arc_swap::ArcSwap;
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageIOError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{LogId, MemberInfo, RaftStorageError, StoredMembership, TypeConfig};
use crate::mvcc::apply::{apply, parse_record_key, record_key, Change, Record};
use crate::mvcc::{Reply, View};
use crate::pb::mvccpb::Event;
use crate::storage::{decode, encode, Space, Storage, StorageError, WriteBatch};

type Entry = openraft::Entry<TypeConfig>;

const KEY_APPLIED: &[u8] = b"applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_REVISION: &[u8] = b"revision";
const KEY_COMPACT: &[u8] = b"compact";
const KEY_SNAPSHOT: &[u8] = b"current";
const KEY_REMOVED: &[u8] = b"removed";

fn sm_read_err(e: StorageError) -> RaftStorageError {
    StorageIOError::read_state_machine(AnyError::new(&e)).into()
}

fn sm_write_err(e: StorageError) -> RaftStorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

/// The whole state machine as shipped in a snapshot.
#[derive(Serialize, Deserialize)]
pub struct SnapshotBody {
    pub revision: i64,
    pub compact_revision: i64,
    pub records: Vec<(i64, u32, Record)>,
}

impl SnapshotBody {
    pub fn from_view(view: &View) -> Self {
        let mut records = Vec::new();
        for (k, h) in view.index.iter() {
            for r in h.iter() {
                records.push((r.main, r.sub, Record::from_rev(k, r)));
            }
        }
        records.sort_by_key(|(m, s, _)| (*m, *s));
        Self {
            revision: view.revision,
            compact_revision: view.compact_revision,
            records,
        }
    }

    pub fn into_view(self) -> View {
        let mut view = View {
            revision: self.revision,
            compact_revision: self.compact_revision,
            ..View::default()
        };
        for (main, sub, rec) in self.records {
            let (key, rev) = rec.into_rev(main, sub);
            view.index.entry(key).or_default().push_back(rev);
        }
        view
    }
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, MemberInfo>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// What readers share with the state machine: the published view.
#[derive(Clone)]
pub struct ReadView(Arc<ArcSwap<View>>);

impl ReadView {
    /// The current view of the store (lock-free).
    pub fn load(&self) -> Arc<View> {
        self.0.load_full()
    }
}

/// Ids of the members removed from the cluster, as far as this member's
/// applied log tells; their peer requests are refused.
#[derive(Clone, Default)]
pub struct RemovedMembers(Arc<ArcSwap<BTreeSet<u64>>>);

impl RemovedMembers {
    pub fn contains(&self, id: u64) -> bool {
        self.0.load().contains(&id)
    }
}

/// The state machine.
pub struct StateMachine {
    storage: Storage,
    view: Arc<ArcSwap<View>>,
    applied: Option<LogId>,
    membership: StoredMembership,
    removed: RemovedMembers,
    events: broadcast::Sender<Arc<Vec<Event>>>,
}

impl StateMachine {
    /// Load the state machine from storage, rebuilding the in-memory index.
    pub fn open(storage: Storage) -> Result<Self, StorageError> {
        let get = |key: &[u8]| storage.get(Space::SmMeta, key);
        let applied: Option<LogId> = get(KEY_APPLIED)?
            .map(|v| decode(Space::SmMeta, &v))
            .transpose()?
            .flatten();
        let membership: StoredMembership = get(KEY_MEMBERSHIP)?
            .map(|v| decode(Space::SmMeta, &v))
            .transpose()?
            .unwrap_or_default();
        let mut view = View::default();
        if let Some(v) = get(KEY_REVISION)? {
            view.revision = decode(Space::SmMeta, &v)?;
        }
        if let Some(v) = get(KEY_COMPACT)? {
            view.compact_revision = decode(Space::SmMeta, &v)?;
        }
        for item in storage.scan(Space::Kv, &[], None) {
            let (k, v) = item?;
            let (main, sub) = parse_record_key(&k).ok_or_else(|| StorageError::Corrupt {
                space: Space::Kv,
                reason: format!("bad record key of {} bytes", k.len()),
            })?;
            let rec: Record = decode(Space::Kv, &v)?;
            let (key, rev) = rec.into_rev(main, sub);
            view.index.entry(key).or_default().push_back(rev);
        }
        let removed: BTreeSet<u64> = get(KEY_REMOVED)?
            .map(|v| decode(Space::SmMeta, &v))
            .transpose()?
            .unwrap_or_default();
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            storage,
            view: Arc::new(ArcSwap::from_pointee(view)),
            applied,
            membership,
            removed: RemovedMembers(Arc::new(ArcSwap::from_pointee(removed))),
            events,
        })
    }

    pub fn read_view(&self) -> ReadView {
        ReadView(self.view.clone())
    }

    /// The members removed from the cluster (shared, kept up to date).
    pub fn removed_members(&self) -> RemovedMembers {
        self.removed.clone()
    }

    /// Switch to membership `next`, remembering who left.
    fn set_membership(&mut self, next: StoredMembership, b: &mut WriteBatch) {
        let stays: BTreeSet<u64> = next.membership().nodes().map(|(id, _)| *id).collect();
        let left: Vec<u64> = self
            .membership
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| !stays.contains(id))
            .collect();
        if !left.is_empty() {
            let mut removed = (**self.removed.0.load()).clone();
            removed.extend(left);
            // A member added again (same id) is welcome back.
            removed.retain(|id| !stays.contains(id));
            b.put(Space::SmMeta, KEY_REMOVED, encode(&removed));
            self.removed.0.store(Arc::new(removed));
        }
        self.membership = next;
    }

    /// Applied events, one message per applied batch, for the watch hub.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<Event>>> {
        self.events.subscribe()
    }

    fn write_meta(&self, b: &mut WriteBatch, view: &View) {
        b.put(Space::SmMeta, KEY_APPLIED, encode(&self.applied));
        b.put(Space::SmMeta, KEY_MEMBERSHIP, encode(&self.membership));
        b.put(Space::SmMeta, KEY_REVISION, encode(&view.revision));
        b.put(Space::SmMeta, KEY_COMPACT, encode(&view.compact_revision));
    }

    /// Seed an empty data dir with `view` (for `raftcd snapshot restore`):
    /// the store's keys and revisions, no Raft log, no membership. The next
    /// start bootstraps a new cluster on top of it.
    pub fn seed(storage: &Storage, view: &View) -> Result<(), StorageError> {
        if storage.first(Space::Kv)?.is_some() || storage.first(Space::SmMeta)?.is_some() {
            return Err(StorageError::Corrupt {
                space: Space::Kv,
                reason: "refusing to restore into a data dir that already holds data".into(),
            });
        }
        let mut batch = WriteBatch::new();
        for (main, sub, rec) in &SnapshotBody::from_view(view).records {
            batch.put(Space::Kv, &record_key(*main, *sub), encode(rec));
        }
        batch.put(Space::SmMeta, KEY_REVISION, encode(&view.revision));
        batch.put(Space::SmMeta, KEY_COMPACT, encode(&view.compact_revision));
        storage.write(batch)?;
        storage.flush_blocking()
    }

    fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        self.storage
            .get(Space::Snapshot, KEY_SNAPSHOT)?
            .map(|v| decode(Space::Snapshot, &v))
            .transpose()
    }
}

/// Builds snapshots from a view captured when the builder was made.
pub struct SnapshotBuilder {
    storage: Storage,
    view: Arc<View>,
    applied: Option<LogId>,
    membership: StoredMembership,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let body = SnapshotBody::from_view(&self.view);
        let data = encode(&body);
        let snapshot_id = match &self.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.view.revision),
            None => format!("0-0-{}", self.view.revision),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let mut b = WriteBatch::new();
        b.put(Space::Snapshot, KEY_SNAPSHOT, encode(&stored));
        self.storage.write(b).map_err(sm_write_err)?;
        // The log is purged behind this snapshot: it must be durable first.
        self.storage.flush().await.map_err(sm_write_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut view: View = (**self.view.load()).clone();
        let mut batch = WriteBatch::new();
        let mut replies = Vec::new();
        let mut events = Vec::new();
        for entry in entries {
            self.applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => replies.push(Reply::None),
                EntryPayload::Membership(m) => {
                    self.set_membership(StoredMembership::new(Some(entry.log_id), m), &mut batch);
                    replies.push(Reply::None);
                }
                EntryPayload::Normal(cmd) => {
                    let applied = apply(&view, &cmd);
                    for change in applied.changes {
                        match change {
                            Change::Put { main, sub, record } => {
                                batch.put(Space::Kv, &record_key(main, sub), encode(&record))
                            }
                            Change::Remove { main, sub } => {
                                batch.delete(Space::Kv, &record_key(main, sub))
                            }
                        }
                    }
                    view = applied.view;
                    events.extend(applied.events);
                    replies.push(applied.reply);
                }
            }
        }
        self.write_meta(&mut batch, &view);
        self.storage.write(batch).map_err(sm_write_err)?;
        self.view.store(Arc::new(view));
        if !events.is_empty() {
            // No receiver is not an error: nobody is watching.
            let _ = self.events.send(Arc::new(events));
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            storage: self.storage.clone(),
            view: self.view.load_full(),
            applied: self.applied,
            membership: self.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, RaftStorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, MemberInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), RaftStorageError> {
        let data = snapshot.into_inner();
        let body: SnapshotBody = decode(Space::Snapshot, &data).map_err(sm_read_err)?;
        let mut batch = WriteBatch::new();
        self.storage
            .delete_range_into(&mut batch, Space::Kv, &[], None)
            .map_err(sm_write_err)?;
        for (main, sub, rec) in &body.records {
            batch.put(Space::Kv, &record_key(*main, *sub), encode(rec));
        }
        let view = body.into_view();
        self.applied = meta.last_log_id;
        self.set_membership(meta.last_membership.clone(), &mut batch);
        self.write_meta(&mut batch, &view);
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        batch.put(Space::Snapshot, KEY_SNAPSHOT, encode(&stored));
        self.storage.write(batch).map_err(sm_write_err)?;
        self.storage.flush().await.map_err(sm_write_err)?;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            revision = view.revision,
            "installed a snapshot from the leader"
        );
        self.view.store(Arc::new(view));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        Ok(self
            .load_snapshot()
            .map_err(sm_read_err)?
            .map(|s| Snapshot {
                meta: s.meta,
                snapshot: Box::new(Cursor::new(s.data)),
            }))
    }
}
