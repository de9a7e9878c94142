//! The Raft state machine: applies committed entries to the MVCC store.
//!
//! A batch of entries is applied to a working copy of the store's [`View`],
//! the resulting records and the last applied log id are written in one
//! atomic storage batch, and only then is the new view published to readers.
//! A crash therefore never half-applies a batch, and since the last applied
//! log id is stored with the data, restart never applies an entry twice.
//!
//! The lease table is part of the state: lease records live in their own
//! keyspace, written in the same batch, and travel in snapshots (format
//! version 2 of [`SnapshotBody`]; version-1 snapshots, from before leases,
//! still load, with no leases).

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::Arc;

use arc_swap::ArcSwap;
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageIOError,
};
use tokio::sync::broadcast;

use super::{LogId, MemberInfo, RaftStorageError, StoredMembership, TypeConfig};
use crate::mvcc::apply::{apply_proposal, Change};
use crate::mvcc::command::ProposalReply;
use crate::mvcc::lease::Lease;
use crate::mvcc::record::{
    encode_view, lease_key, parse_lease_key, parse_record_key, record_key, LeaseRecord, Record,
    SnapshotBody,
};
use crate::mvcc::{ReadView, View};
use crate::pb::mvccpb::Event;
use crate::storage::{decode, encode, Space, Storage, StorageError, WriteBatch};

type Entry = openraft::Entry<TypeConfig>;

const KEY_APPLIED: &[u8] = b"applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_REVISION: &[u8] = b"revision";
const KEY_COMPACT: &[u8] = b"compact";
/// Where a whole snapshot copy was stored by earlier builds (see `open`).
const KEY_LEGACY_SNAPSHOT: &[u8] = b"current";
const KEY_REMOVED: &[u8] = b"removed";

fn sm_read_err(e: StorageError) -> RaftStorageError {
    StorageIOError::read_state_machine(AnyError::new(&e)).into()
}

fn sm_write_err(e: StorageError) -> RaftStorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

/// The snapshot data openraft moves between members: an encoded
/// [`SnapshotBody`]. A snapshot of this member's own state is encoded only
/// when something reads it (a follower needs it); until then it is just a
/// shared, immutable [`View`]. Snapshots being received are written into it.
pub struct SnapshotData {
    /// Not yet encoded: the view to encode on first access.
    view: Option<Arc<View>>,
    bytes: Cursor<Vec<u8>>,
}

impl SnapshotData {
    fn of_view(view: Arc<View>) -> Self {
        Self {
            view: Some(view),
            bytes: Cursor::new(Vec::new()),
        }
    }

    fn receiving() -> Self {
        Self {
            view: None,
            bytes: Cursor::new(Vec::new()),
        }
    }

    fn bytes(&mut self) -> &mut Cursor<Vec<u8>> {
        if let Some(view) = self.view.take() {
            self.bytes = Cursor::new(encode_view(&view));
        }
        &mut self.bytes
    }

    /// The encoded body.
    pub fn into_bytes(mut self) -> Vec<u8> {
        self.bytes();
        self.bytes.into_inner()
    }
}

impl tokio::io::AsyncRead for SnapshotData {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(self.get_mut().bytes()).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SnapshotData {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(self.get_mut().bytes()).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(self.get_mut().bytes()).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(self.get_mut().bytes()).poll_shutdown(cx)
    }
}

impl tokio::io::AsyncSeek for SnapshotData {
    fn start_seek(
        self: std::pin::Pin<&mut Self>,
        position: std::io::SeekFrom,
    ) -> std::io::Result<()> {
        std::pin::Pin::new(self.get_mut().bytes()).start_seek(position)
    }

    fn poll_complete(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<u64>> {
        std::pin::Pin::new(self.get_mut().bytes()).poll_complete(cx)
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
    view: ReadView,
    applied: Option<LogId>,
    membership: StoredMembership,
    removed: RemovedMembers,
    events: broadcast::Sender<Arc<Vec<Event>>>,
    snapshots: Option<SnapshotCounter>,
}

/// Counts applied client requests and says when a snapshot is due: etcd's
/// `--snapshot-count` counts requests, and one Raft entry of ours can
/// carry many (group commit).
struct SnapshotCounter {
    every: u64,
    since: u64,
    due: tokio::sync::mpsc::UnboundedSender<()>,
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
        for item in storage.scan(Space::Lease, &[], None) {
            let (k, v) = item?;
            let id = parse_lease_key(&k).ok_or_else(|| StorageError::Corrupt {
                space: Space::Lease,
                reason: format!("bad lease key of {} bytes", k.len()),
            })?;
            let r: LeaseRecord = decode(Space::Lease, &v)?;
            view.leases.insert(id, Lease::new(r.ttl, r.refreshed_ms));
        }
        // Compaction deletes dropped history in the background, after the
        // compact revision is stored: whatever a crash kept on disk is
        // dropped again here (compaction at the same revision drops exactly
        // the leftovers) and deleted now.
        if view.compact_revision > 0 {
            let leftovers = view.compact_index(view.compact_revision);
            if !leftovers.is_empty() {
                let mut b = WriteBatch::new();
                for (main, sub) in &leftovers {
                    b.delete(Space::Kv, &record_key(*main, *sub));
                }
                storage.write(b)?;
                tracing::info!(
                    records = leftovers.len(),
                    compact_revision = view.compact_revision,
                    "deleted compacted history left on disk by an interrupted compaction"
                );
            }
        }
        let orphans = view.attach_lease_keys();
        if orphans > 0 {
            tracing::warn!(
                orphans,
                "live keys name leases missing from the lease table"
            );
        }
        let removed: BTreeSet<u64> = get(KEY_REMOVED)?
            .map(|v| decode(Space::SmMeta, &v))
            .transpose()?
            .unwrap_or_default();
        // Before snapshots were derived from the state itself, each one was
        // also stored whole; drop such a leftover copy.
        if storage.get(Space::Snapshot, KEY_LEGACY_SNAPSHOT)?.is_some() {
            let mut b = WriteBatch::new();
            b.delete(Space::Snapshot, KEY_LEGACY_SNAPSHOT);
            storage.write(b)?;
        }
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            storage,
            view: ReadView::new(view),
            applied,
            membership,
            removed: RemovedMembers(Arc::new(ArcSwap::from_pointee(removed))),
            events,
            snapshots: None,
        })
    }

    /// Ask for a snapshot every `every` applied requests: the receiver gets
    /// one message each time (the node then triggers the snapshot).
    pub fn snapshot_every(&mut self, every: u64) -> tokio::sync::mpsc::UnboundedReceiver<()> {
        let (due, rx) = tokio::sync::mpsc::unbounded_channel();
        self.snapshots = Some(SnapshotCounter {
            every: every.max(1),
            since: 0,
            due,
        });
        rx
    }

    pub fn read_view(&self) -> ReadView {
        self.view.clone()
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

    /// The sending side of [`Self::subscribe`], kept by the watch hub so it
    /// can subscribe new streams after the state machine moved into Raft.
    pub fn event_sender(&self) -> broadcast::Sender<Arc<Vec<Event>>> {
        self.events.clone()
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
        let body = SnapshotBody::from_view(view);
        for (main, sub, rec) in &body.records {
            batch.put(Space::Kv, &record_key(*main, *sub), encode(rec));
        }
        for (id, rec) in &body.leases {
            batch.put(Space::Lease, &lease_key(*id), encode(rec));
        }
        batch.put(Space::SmMeta, KEY_REVISION, encode(&view.revision));
        batch.put(Space::SmMeta, KEY_COMPACT, encode(&view.compact_revision));
        storage.write(batch)?;
        storage.flush_blocking()
    }

    /// The snapshot of the current state: what [`SnapshotMeta`] to send
    /// with it, and the view (encoded only if read).
    fn current_snapshot(&self) -> Option<Snapshot<TypeConfig>> {
        let view = self.view.load();
        let meta = snapshot_meta(self.applied?, &self.membership, &view);
        Some(Snapshot {
            meta,
            snapshot: Box::new(SnapshotData::of_view(view)),
        })
    }
}

fn snapshot_meta(
    applied: LogId,
    membership: &StoredMembership,
    view: &View,
) -> SnapshotMeta<u64, MemberInfo> {
    SnapshotMeta {
        last_log_id: Some(applied),
        last_membership: membership.clone(),
        snapshot_id: format!(
            "{}-{}-{}",
            applied.leader_id.term, applied.index, view.revision
        ),
    }
}

/// "Builds" a snapshot: the state machine's own storage already holds the
/// whole state at its last applied log id, so a snapshot is that state made
/// durable, not a copy of it. Building one flushes storage (the log is
/// purged behind the snapshot, so the state must be on disk first); the
/// bytes a lagging follower needs are encoded from the in-memory view only
/// when it needs them ([`SnapshotData`]).
pub struct SnapshotBuilder {
    storage: Storage,
    view: Arc<View>,
    applied: Option<LogId>,
    membership: StoredMembership,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let started = std::time::Instant::now();
        self.storage.flush().await.map_err(sm_write_err)?;
        super::warn_if_slow("snapshot (storage flush)", started, 0);
        let meta = match self.applied {
            Some(applied) => snapshot_meta(applied, &self.membership, &self.view),
            None => SnapshotMeta {
                last_log_id: None,
                last_membership: self.membership.clone(),
                snapshot_id: format!("0-0-{}", self.view.revision),
            },
        };
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotData::of_view(self.view.clone())),
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

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ProposalReply>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut view: View = (*self.view.load()).clone();
        let mut batch = WriteBatch::new();
        let mut replies = Vec::new();
        let mut events = Vec::new();
        // Records dropped by compaction: deleted after the batch, in the
        // background (see `open` for what a crash leaves).
        let mut dropped: Vec<Vec<u8>> = Vec::new();
        for entry in entries {
            self.applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => replies.push(ProposalReply::default()),
                EntryPayload::Membership(m) => {
                    self.set_membership(StoredMembership::new(Some(entry.log_id), m), &mut batch);
                    replies.push(ProposalReply::default());
                }
                EntryPayload::Normal(cmd) => {
                    if let Some(c) = &mut self.snapshots {
                        c.since += cmd.commands().len() as u64;
                    }
                    let applied = apply_proposal(&view, &cmd);
                    for change in applied.changes {
                        match change {
                            Change::Put { main, sub, record } => {
                                batch.put(Space::Kv, &record_key(main, sub), encode(&record))
                            }
                            Change::Remove { main, sub } => {
                                dropped.push(record_key(main, sub).to_vec())
                            }
                            Change::LeasePut { id, record } => {
                                batch.put(Space::Lease, &lease_key(id), encode(&record))
                            }
                            Change::LeaseRemove { id } => {
                                batch.delete(Space::Lease, &lease_key(id))
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
        let n = batch.len();
        let write_started = std::time::Instant::now();
        self.storage.write(batch).map_err(sm_write_err)?;
        crate::metrics::BACKEND_COMMIT.observe(write_started.elapsed());
        super::warn_if_slow("apply", started, n);
        if !dropped.is_empty() {
            self.storage
                .delete_in_background(Space::Kv, dropped, "compacted history");
        }
        if let Some(c) = &mut self.snapshots {
            if c.since >= c.every {
                c.since = 0;
                // Nobody listening: the node is stopping.
                let _ = c.due.send(());
            }
        }
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
            view: self.view.load(),
            applied: self.applied,
            membership: self.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, RaftStorageError> {
        Ok(Box::new(SnapshotData::receiving()))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, MemberInfo>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), RaftStorageError> {
        let data = snapshot.into_bytes();
        let body = SnapshotBody::decode(&data).map_err(|e| {
            sm_read_err(StorageError::Corrupt {
                space: Space::Snapshot,
                reason: e.to_string(),
            })
        })?;
        let mut batch = WriteBatch::new();
        for space in [Space::Kv, Space::Lease] {
            self.storage
                .delete_range_into(&mut batch, space, &[], None)
                .map_err(sm_write_err)?;
        }
        for (main, sub, rec) in &body.records {
            batch.put(Space::Kv, &record_key(*main, *sub), encode(rec));
        }
        for (id, rec) in &body.leases {
            batch.put(Space::Lease, &lease_key(*id), encode(rec));
        }
        let view = body.into_view();
        self.applied = meta.last_log_id;
        self.set_membership(meta.last_membership.clone(), &mut batch);
        self.write_meta(&mut batch, &view);
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
        Ok(self.current_snapshot())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::mvcc::command::Proposal;
    use crate::mvcc::{Command, Reply};
    use crate::pb::etcdserverpb::PutRequest;
    use crate::storage::Pair;

    fn entry(index: u64, cmd: impl Into<Proposal>) -> Entry {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(cmd.into()),
        }
    }

    fn put(key: &str, lease: i64) -> Command {
        Command::Put(PutRequest {
            key: key.to_string().into(),
            value: "v".into(),
            lease,
            ..Default::default()
        })
    }

    fn lease_keys(v: &View, id: i64) -> Vec<Bytes> {
        v.leases[&id].keys.iter().cloned().collect()
    }

    #[tokio::test]
    async fn leases_persist_across_reopen_and_travel_in_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let mut sm = StateMachine::open(storage.clone()).unwrap();
        let entries = vec![
            entry(
                1,
                Command::LeaseGrant {
                    id: 5,
                    ttl: 30,
                    granted_ms: 111,
                },
            ),
            entry(
                2,
                Command::LeaseGrant {
                    id: 6,
                    ttl: 60,
                    granted_ms: 222,
                },
            ),
            entry(3, put("a", 5)),
            entry(4, put("b", 5)),
            entry(5, put("c", 6)),
            entry(6, Command::LeaseRevoke { id: 6 }),
        ];
        let replies = sm.apply(entries).await.unwrap();
        assert!(
            replies
                .iter()
                .all(|r| !matches!(r, ProposalReply::One(Reply::Error(_)))),
            "{replies:?}"
        );
        let view = sm.read_view().load();
        assert_eq!(view.revision, 5);
        drop(sm);

        // Reopen: the lease table and its keys come back from storage.
        let mut sm = StateMachine::open(storage.clone()).unwrap();
        let reopened = sm.read_view().load();
        assert_eq!(reopened.leases, view.leases);
        assert_eq!(
            lease_keys(&reopened, 5),
            vec![Bytes::from("a"), Bytes::from("b")]
        );
        assert!(!reopened.leases.contains_key(&6));
        assert_eq!(
            LeaseRecord::of(&reopened.leases[&5]),
            LeaseRecord {
                ttl: 30,
                refreshed_ms: 111
            }
        );

        // A snapshot carries the leases into another state machine.
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        let storage2 = Storage::open(dir2.path()).unwrap();
        let mut sm2 = StateMachine::open(storage2.clone()).unwrap();
        sm2.install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        let installed = sm2.read_view().load();
        assert_eq!(installed.leases, view.leases);
        assert_eq!(installed.hash_kv(0).unwrap(), view.hash_kv(0).unwrap());
        drop(sm2);
        let again = StateMachine::open(storage2).unwrap().read_view().load();
        assert_eq!(again.leases, view.leases);
    }

    #[tokio::test]
    async fn streamed_encoding_matches_the_body_and_current_snapshot_is_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(Storage::open(dir.path()).unwrap()).unwrap();
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
        let mut entries = vec![entry(
            1,
            Command::LeaseGrant {
                id: 9,
                ttl: 30,
                granted_ms: 1,
            },
        )];
        for i in 0..50u64 {
            entries.push(entry(2 + i, put(&format!("k{}", i % 7), 9)));
        }
        entries.push(entry(
            52,
            Command::DeleteRange(crate::pb::etcdserverpb::DeleteRangeRequest {
                key: "k3".into(),
                ..Default::default()
            }),
        ));
        sm.apply(entries).await.unwrap();
        let view = sm.read_view().load();

        // Same bytes as encoding the owned body: old and new members (and
        // backups) read each other's snapshots.
        let streamed = encode_view(&view);
        assert_eq!(streamed, SnapshotBody::from_view(&view).encode());

        // The current snapshot is the applied state, at the last applied id.
        let snap = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(52));
        let body = SnapshotBody::decode(&snap.snapshot.into_bytes()).unwrap();
        let round = body.into_view();
        assert_eq!(round.hash_kv(0).unwrap(), view.hash_kv(0).unwrap());
        assert_eq!(round.leases, view.leases);
        assert_eq!(round.revision, 52);
    }

    #[tokio::test]
    async fn compacted_history_is_deleted_in_the_background_and_again_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let mut sm = StateMachine::open(storage.clone()).unwrap();
        let mut entries = Vec::new();
        for i in 0..30u64 {
            entries.push(entry(1 + i, put(&format!("k{}", i % 3), 0)));
        }
        sm.apply(entries).await.unwrap();
        let records = |s: &Storage| -> Vec<Pair> {
            s.scan(Space::Kv, &[], None).map(|r| r.unwrap()).collect()
        };
        let before = records(&storage);
        assert_eq!(before.len(), 30);

        let compact = Command::Compact(crate::pb::etcdserverpb::CompactionRequest {
            revision: 28,
            physical: false,
        });
        let replies = sm.apply(vec![entry(31, compact)]).await.unwrap();
        assert!(
            matches!(replies[0], ProposalReply::One(Reply::Compact(_))),
            "{replies:?}"
        );
        let view = sm.read_view().load();
        // Per key, the newest revision at or below 28 and everything after.
        assert_eq!(view.index.values().map(|h| h.len()).sum::<usize>(), 6);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while records(&storage).len() != 6 {
            assert!(std::time::Instant::now() < deadline, "not deleted");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        drop(sm);

        // A crash before the background deletion finished: the dropped
        // records are back on disk. Opening drops and deletes them again.
        let mut b = WriteBatch::new();
        for (k, v) in &before {
            b.put(Space::Kv, k, v.clone());
        }
        storage.write(b).unwrap();
        let reopened = StateMachine::open(storage.clone())
            .unwrap()
            .read_view()
            .load();
        assert_eq!(reopened.hash_kv(0).unwrap(), view.hash_kv(0).unwrap());
        assert_eq!(reopened.index, view.index);
        assert_eq!(records(&storage).len(), 6);
    }

    #[tokio::test]
    async fn snapshots_are_due_every_n_requests_not_every_n_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(Storage::open(dir.path()).unwrap()).unwrap();
        let mut due = sm.snapshot_every(3);
        // One entry carrying a batch of 4 requests: due at once.
        let batch = Proposal::Batch((0..4).map(|i| put(&format!("b{i}"), 0)).collect());
        sm.apply(vec![entry(1, batch)]).await.unwrap();
        assert!(due.try_recv().is_ok());
        // Two single requests: not yet; the third makes it due again.
        sm.apply(vec![entry(2, put("x", 0)), entry(3, put("y", 0))])
            .await
            .unwrap();
        assert!(due.try_recv().is_err());
        sm.apply(vec![entry(4, put("z", 0))]).await.unwrap();
        assert!(due.try_recv().is_ok());
        assert!(due.try_recv().is_err());
    }

    #[test]
    fn an_old_stored_snapshot_copy_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let mut b = WriteBatch::new();
        b.put(
            Space::Snapshot,
            KEY_LEGACY_SNAPSHOT,
            encode(&vec![7u8; 4096]),
        );
        storage.write(b).unwrap();
        StateMachine::open(storage.clone()).unwrap();
        assert!(storage
            .get(Space::Snapshot, KEY_LEGACY_SNAPSHOT)
            .unwrap()
            .is_none());
    }
}
