//! The Raft state machine: applies committed entries to the MVCC store.
//!
//! A batch of entries is applied to a working copy of the store's [`View`]
//! and the new view is published to readers whole, so a reader never sees
//! half a batch. Applies write nothing to disk: the entries are durable in
//! the Raft log, and the state is written whole to the `state` file at each
//! snapshot ([`StateImage`]), before openraft purges the log behind it. A
//! restart loads that image and openraft applies the log after it again,
//! so nothing is applied twice or lost.
//!
//! The lease table is part of the state and travels in snapshots (format
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
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{LogId, MemberInfo, RaftStorageError, StoredMembership, TypeConfig};
use crate::auth::token::SimpleTokens;
use crate::mvcc::apply::apply_proposal_to;
use crate::mvcc::command::ProposalReply;
use crate::mvcc::record::{encode_view, write_view, SnapshotBody};
use crate::mvcc::{ReadView, View};
use crate::pb::mvccpb::Event;
use crate::storage::{Blob, Storage, StorageError};

type Entry = openraft::Entry<TypeConfig>;

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

    /// The encoded body, encoded now if it was not yet (which fails only
    /// if an old revision cannot be read back from the spill).
    fn bytes(&mut self) -> std::io::Result<&mut Cursor<Vec<u8>>> {
        if let Some(view) = self.view.take() {
            self.bytes = Cursor::new(encode_view(&view)?);
        }
        Ok(&mut self.bytes)
    }

    /// Poll the encoded body with `poll` (encoding it first if needed).
    fn poll_bytes<T>(
        self: std::pin::Pin<&mut Self>,
        poll: impl FnOnce(std::pin::Pin<&mut Cursor<Vec<u8>>>) -> std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        match self.get_mut().bytes() {
            Ok(b) => poll(std::pin::Pin::new(b)),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    /// The encoded body.
    pub fn into_bytes(mut self) -> std::io::Result<Vec<u8>> {
        self.bytes()?;
        Ok(self.bytes.into_inner())
    }
}

impl tokio::io::AsyncRead for SnapshotData {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.poll_bytes(|b| b.poll_read(cx, buf))
    }
}

impl tokio::io::AsyncWrite for SnapshotData {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.poll_bytes(|b| b.poll_write(cx, buf))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.poll_bytes(|b| b.poll_flush(cx))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.poll_bytes(|b| b.poll_shutdown(cx))
    }
}

impl tokio::io::AsyncSeek for SnapshotData {
    fn start_seek(
        self: std::pin::Pin<&mut Self>,
        position: std::io::SeekFrom,
    ) -> std::io::Result<()> {
        std::pin::Pin::new(self.get_mut().bytes()?).start_seek(position)
    }

    fn poll_complete(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<u64>> {
        self.poll_bytes(|b| b.poll_complete(cx))
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

/// What the `state` file holds besides the store itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct StateHead {
    pub(super) applied: Option<LogId>,
    pub(super) membership: StoredMembership,
    pub(super) removed: BTreeSet<u64>,
}

/// The state machine written whole: the length of the encoded
/// [`StateHead`] (u32le), the head, then the store as a snapshot body
/// ([`encode_view`], the bytes a follower receives).
pub struct StateImage;

impl StateImage {
    /// Stream the image into `w` (the store is never copied whole).
    pub(super) fn write_to(
        head: &StateHead,
        view: &View,
        w: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        let head = crate::codec::encode(head);
        w.write_all(&(head.len() as u32).to_le_bytes())?;
        w.write_all(&head)?;
        write_view(view, w)
    }

    pub(super) fn decode(
        storage: &Storage,
        bytes: &[u8],
    ) -> Result<(StateHead, View), StorageError> {
        let bad = |reason: String| StorageError::Decode {
            file: storage.file(Blob::State),
            reason,
        };
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("no state header".into()))?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(bad("state header longer than the file".into()));
        }
        let head: StateHead =
            crate::codec::decode(&rest[..len]).map_err(|e| bad(format!("state header: {e}")))?;
        let body = SnapshotBody::decode(&rest[len..]).map_err(|e| bad(format!("store: {e}")))?;
        Ok((head, body.into_view_in(storage.spill())))
    }

    /// Write `view` with `head` durably to the `state` file, one writer
    /// at a time; an image older than the one on disk (a snapshot built
    /// while a newer one was installed) is not written: the file never
    /// goes back behind a log purge.
    async fn write(
        storage: &Storage,
        written: &StateWriter,
        size: &std::sync::atomic::AtomicU64,
        head: StateHead,
        view: Arc<View>,
    ) -> Result<(), StorageError> {
        let mut last = written.lock().await;
        if head.applied < *last {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let storage_file = storage.file(Blob::State);
        let storage = storage.clone();
        let applied = head.applied;
        tokio::task::spawn_blocking(move || {
            storage.write_with(Blob::State, |w| Self::write_to(&head, &view, w))
        })
        .await
        .map_err(|e| StorageError::Failed(format!("state write task failed: {e}")))??;
        *last = applied;
        if let Ok(m) = std::fs::metadata(storage_file) {
            size.store(m.len(), std::sync::atomic::Ordering::Relaxed);
        }
        super::warn_if_slow("state file write", started, 0);
        Ok(())
    }
}

/// The applied log id of the `state` file on disk, held while it is
/// written.
type StateWriter = Arc<tokio::sync::Mutex<Option<LogId>>>;

/// The state machine.
pub struct StateMachine {
    storage: Storage,
    written: StateWriter,
    /// Bytes of the `state` file on disk.
    state_size: Arc<std::sync::atomic::AtomicU64>,
    view: ReadView,
    applied: Option<LogId>,
    membership: StoredMembership,
    removed: RemovedMembers,
    events: broadcast::Sender<Arc<Vec<Event>>>,
    snapshots: Option<SnapshotCounter>,
    /// This member's simple tokens, kept up to date with applied auth
    /// commands (see `raft::tokens`).
    tokens: Option<Arc<SimpleTokens>>,
}

/// Says when a snapshot is due: after `--snapshot-count` applied client
/// requests (as etcd counts them; one Raft entry of ours can carry many),
/// once the log has also grown by as many bytes as the last `state` file
/// holds. A snapshot writes the whole state, so a large store that is not
/// compacted is written at sizes that double, not every few thousand
/// requests: the bytes snapshots write stay within the bytes the log took.
struct SnapshotCounter {
    every: u64,
    since: u64,
    /// Bytes appended to the log so far ([`LogGrowth`]), and at the last
    /// snapshot that was asked for.
    log: LogGrowth,
    log_at_last: u64,
    due: tokio::sync::mpsc::UnboundedSender<()>,
}

/// Bytes appended to the Raft log since the member started: counted by the
/// log store, read by the snapshot policy.
pub type LogGrowth = Arc<std::sync::atomic::AtomicU64>;

impl StateMachine {
    /// Load the state machine from the `state` file (empty if there is
    /// none); openraft applies the log after it.
    pub fn open(storage: Storage) -> Result<Self, StorageError> {
        let (head, view) = match storage.read(Blob::State)? {
            Some(bytes) => StateImage::decode(&storage, &bytes)?,
            None => (
                StateHead::default(),
                View {
                    spill: storage.spill(),
                    ..View::default()
                },
            ),
        };
        let (events, _) = broadcast::channel(1024);
        let state_size = std::fs::metadata(storage.file(Blob::State)).map_or(0, |m| m.len());
        Ok(Self {
            storage,
            written: Arc::new(tokio::sync::Mutex::new(head.applied)),
            state_size: Arc::new(state_size.into()),
            view: ReadView::new(view),
            applied: head.applied,
            membership: head.membership,
            removed: RemovedMembers(Arc::new(ArcSwap::from_pointee(head.removed))),
            events,
            snapshots: None,
            tokens: None,
        })
    }

    /// Keep `tokens` up to date with the auth commands applied from now on.
    pub fn set_tokens(&mut self, tokens: Arc<SimpleTokens>) {
        self.tokens = Some(tokens);
    }

    /// The index of the last entry in the loaded state (0: none).
    pub fn applied_index(&self) -> u64 {
        self.applied.map_or(0, |a| a.index)
    }

    /// Ask for a snapshot every `every` applied requests once `log` grew
    /// by the size of the last state file ([`SnapshotCounter`]): the
    /// receiver gets one message each time (the node then triggers it).
    pub fn snapshot_every(
        &mut self,
        every: u64,
        log: LogGrowth,
    ) -> tokio::sync::mpsc::UnboundedReceiver<()> {
        let (due, rx) = tokio::sync::mpsc::unbounded_channel();
        let log_at_last = log.load(std::sync::atomic::Ordering::Relaxed);
        self.snapshots = Some(SnapshotCounter {
            every: every.max(1),
            since: 0,
            log,
            log_at_last,
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
    fn set_membership(&mut self, next: StoredMembership) {
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

    fn head(&self) -> StateHead {
        StateHead {
            applied: self.applied,
            membership: self.membership.clone(),
            removed: (**self.removed.0.load()).clone(),
        }
    }

    /// Seed an empty data dir with `view` (for `raftcd snapshot restore`):
    /// the store's keys and revisions, no Raft log, no membership. The next
    /// start bootstraps a new cluster on top of it.
    pub fn seed(storage: &Storage, view: &View) -> Result<(), StorageError> {
        let wal = storage.path().join(crate::storage::WAL_DIR);
        let wal_used = std::fs::read_dir(&wal).is_ok_and(|mut d| d.next().is_some());
        if Blob::ALL.iter().any(|b| storage.file(*b).exists()) || wal_used {
            return Err(StorageError::Refused(format!(
                "refusing to restore into {}: the data dir already holds data",
                storage.path().display()
            )));
        }
        storage.write_with(Blob::State, |w| {
            StateImage::write_to(&StateHead::default(), view, w)
        })
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

/// Builds a snapshot: writes the state at its last applied log id to the
/// `state` file, durably (openraft purges the log behind the snapshot once
/// this returns). The bytes a lagging follower needs are encoded from the
/// in-memory view only when it needs them ([`SnapshotData`]).
pub struct SnapshotBuilder {
    storage: Storage,
    written: StateWriter,
    state_size: Arc<std::sync::atomic::AtomicU64>,
    view: Arc<View>,
    head: StateHead,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        StateImage::write(
            &self.storage,
            &self.written,
            &self.state_size,
            self.head.clone(),
            self.view.clone(),
        )
        .await
        .map_err(sm_write_err)?;
        let meta = match self.head.applied {
            Some(applied) => snapshot_meta(applied, &self.head.membership, &self.view),
            None => SnapshotMeta {
                last_log_id: None,
                last_membership: self.head.membership.clone(),
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
        let mut replies = Vec::new();
        let mut events = Vec::new();
        let mut n = 0;
        for entry in entries {
            n += 1;
            self.applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => replies.push(ProposalReply::default()),
                EntryPayload::Membership(m) => {
                    self.set_membership(StoredMembership::new(Some(entry.log_id), m));
                    replies.push(ProposalReply::default());
                }
                EntryPayload::Normal(cmd) => {
                    if let Some(c) = &mut self.snapshots {
                        c.since += cmd.commands().len() as u64;
                    }
                    let (mut reply, applied_events) = apply_proposal_to(&self.view, &cmd);
                    if let Some(t) = &self.tokens {
                        super::tokens::note_auth(t, entry.log_id.index, &cmd, &mut reply);
                    }
                    events.extend(applied_events);
                    replies.push(reply);
                }
            }
        }
        crate::metrics::BACKEND_COMMIT.observe(started.elapsed());
        super::warn_if_slow("apply", started, n);
        if let Some(c) = &mut self.snapshots {
            let log = c.log.load(std::sync::atomic::Ordering::Relaxed);
            let state = self.state_size.load(std::sync::atomic::Ordering::Relaxed);
            if c.since >= c.every && log.saturating_sub(c.log_at_last) >= state {
                c.since = 0;
                c.log_at_last = log;
                // Nobody listening: the node is stopping.
                let _ = c.due.send(());
            }
        }
        if !events.is_empty() {
            // No receiver is not an error: nobody is watching.
            let _ = self.events.send(Arc::new(events));
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            storage: self.storage.clone(),
            written: self.written.clone(),
            state_size: self.state_size.clone(),
            view: self.view.load(),
            head: self.head(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, RaftStorageError> {
        Ok(Box::new(SnapshotData::receiving()))
    }

    /// The received state replaces this member's, durably, before openraft
    /// purges the log behind it.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, MemberInfo>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), RaftStorageError> {
        let data = snapshot.into_bytes().map_err(|e| {
            sm_read_err(StorageError::Failed(format!(
                "a snapshot from the leader cannot be read: {e}"
            )))
        })?;
        let body = SnapshotBody::decode(&data).map_err(|e| {
            sm_read_err(StorageError::Refused(format!(
                "a snapshot from the leader cannot be read: {e}"
            )))
        })?;
        let view = body.into_view_in(self.storage.spill());
        self.applied = meta.last_log_id;
        self.set_membership(meta.last_membership.clone());
        let view = Arc::new(view);
        StateImage::write(
            &self.storage,
            &self.written,
            &self.state_size,
            self.head(),
            view.clone(),
        )
        .await
        .map_err(sm_write_err)?;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            revision = view.revision,
            "installed a snapshot from the leader"
        );
        self.view.store(view);
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
    use crate::mvcc::record::LeaseRecord;
    use crate::mvcc::{Command, Reply};
    use crate::pb::etcdserverpb::PutRequest;
    use crate::storage::OsSync;

    fn open_storage(dir: &std::path::Path) -> Storage {
        Storage::open(dir, Arc::new(OsSync)).unwrap()
    }

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
        let storage = open_storage(dir.path());
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
        // Applies write nothing; a snapshot writes the state file.
        assert!(storage.read(Blob::State).unwrap().is_none());
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        drop(sm);

        // Reopen: the lease table and its keys come back from the file.
        let mut sm = StateMachine::open(storage.clone()).unwrap();
        assert_eq!(sm.applied_index(), 6);
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
        let storage2 = open_storage(dir2.path());
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
        let mut sm = StateMachine::open(open_storage(dir.path())).unwrap();
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
        let streamed = encode_view(&view).unwrap();
        assert_eq!(streamed, SnapshotBody::from_view(&view).unwrap().encode());

        // The current snapshot is the applied state, at the last applied id.
        let snap = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(52));
        let body = SnapshotBody::decode(&snap.snapshot.into_bytes().unwrap()).unwrap();
        let round = body.into_view();
        assert_eq!(round.hash_kv(0).unwrap(), view.hash_kv(0).unwrap());
        assert_eq!(round.leases, view.leases);
        assert_eq!(round.revision, 52);
    }

    #[tokio::test]
    async fn snapshots_are_due_every_n_requests_not_every_n_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(open_storage(dir.path())).unwrap();
        let mut due = sm.snapshot_every(3, LogGrowth::default());
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

    #[tokio::test]
    async fn a_large_state_is_snapshotted_only_once_the_log_grew_as_much() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(open_storage(dir.path())).unwrap();
        let log = LogGrowth::default();
        let mut due = sm.snapshot_every(2, log.clone());
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let state = sm.state_size.load(std::sync::atomic::Ordering::Relaxed);
        assert!(state > 0);
        // Enough requests, not enough log: not yet.
        sm.apply((1..=5u64).map(|i| entry(i, put(&format!("k{i}"), 0))))
            .await
            .unwrap();
        assert!(due.try_recv().is_err());
        log.store(state - 1, std::sync::atomic::Ordering::Relaxed);
        sm.apply(vec![entry(6, put("k6", 0))]).await.unwrap();
        assert!(due.try_recv().is_err());
        // The log grew by the state's size: due, and the count starts again.
        log.store(state, std::sync::atomic::Ordering::Relaxed);
        sm.apply(vec![entry(7, put("k7", 0))]).await.unwrap();
        assert!(due.try_recv().is_ok());
        sm.apply(vec![entry(8, put("k8", 0))]).await.unwrap();
        assert!(due.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_restored_dir_is_seeded_once_and_a_damaged_state_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = open_storage(dir.path());
        let mut sm = StateMachine::open(s.clone()).unwrap();
        sm.apply((1..=20u64).map(|i| entry(i, put(&format!("k{i}"), 0))))
            .await
            .unwrap();
        let view = sm.read_view().load();
        let dir2 = tempfile::tempdir().unwrap();
        let s2 = open_storage(dir2.path());
        StateMachine::seed(&s2, &view).unwrap();
        let seeded = StateMachine::open(s2.clone()).unwrap();
        assert_eq!(seeded.applied_index(), 0);
        assert_eq!(
            seeded.read_view().load().hash_kv(0).unwrap(),
            view.hash_kv(0).unwrap()
        );
        let again = StateMachine::seed(&s2, &view).unwrap_err().to_string();
        assert!(again.contains("already holds data"), "{again}");
        drop(seeded);
        // A flipped bit anywhere in the state file: refused, naming it.
        let path = s2.file(Blob::State);
        let good = std::fs::read(&path).unwrap();
        for at in [3, 12, good.len() / 2, good.len() - 2] {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            std::fs::write(&path, &bad).unwrap();
            let err = StateMachine::open(s2.clone())
                .err()
                .expect("refused")
                .to_string();
            assert!(
                err.contains("state") && err.contains("damaged"),
                "{at}: {err}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), bad);
        }
    }
}
