//! `--force-new-cluster`: turn a stopped member's data into a one-member
//! cluster (etcd's flag, for an operator whose cluster lost its quorum for
//! good). The member first applied every entry known committed and wrote
//! its state file (a snapshot); then, offline:
//!
//! * the state file's membership becomes this member alone (its log id the
//!   snapshot's); the other members are not marked removed: the member
//!   gets a new cluster id (`crate::server::recover`), which keeps the old
//!   ones out, and they may rejoin with empty data dirs under their ids;
//! * the log is emptied: entries beyond the snapshot were not known to be
//!   committed and are dropped, as etcd drops them;
//! * the `raft` file holds the purge point and committed index at the
//!   snapshot, and a vote for this member in the snapshot's term.
//!
//! Each file is replaced whole (write, sync, rename), the state file first:
//! a crash in between leaves a data dir that starts as before or as the
//! new cluster, and running the flag again finishes the job.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{Membership, Vote};

use super::log_store::HardState;
use super::state_machine::StateImage;
use super::{LogId, MemberInfo, StoredMembership};
use crate::codec::encode;
use crate::storage::{Blob, Storage, StorageError, WAL_DIR};

/// Rewrite `storage` (not running) as a cluster of member `me` alone,
/// described by `info`. Returns the snapshot's log id, where the new
/// cluster's log starts.
pub fn single_member(storage: &Storage, me: u64, info: MemberInfo) -> Result<LogId, StorageError> {
    let bytes = storage.read(Blob::State)?.ok_or_else(|| {
        StorageError::Refused("--force-new-cluster: the data dir holds no state file".into())
    })?;
    let (mut head, view) = StateImage::decode(storage, &bytes)?;
    let applied = head.applied.ok_or_else(|| {
        StorageError::Refused("--force-new-cluster: the state file holds no applied entry".into())
    })?;
    head.membership = StoredMembership::new(
        Some(applied),
        Membership::new(vec![BTreeSet::from([me])], BTreeMap::from([(me, info)])),
    );
    storage.write_with(Blob::State, |w| StateImage::write_to(&head, &view, w))?;
    let wal = storage.path().join(WAL_DIR);
    if let Ok(entries) = std::fs::read_dir(&wal) {
        let io =
            |path: std::path::PathBuf, what| move |source| StorageError::Io { path, what, source };
        for e in entries.flatten() {
            std::fs::remove_file(e.path())
                .map_err(io(e.path(), "removing a log segment (--force-new-cluster)"))?;
        }
        // The removals must be durable before the `raft` file says the log
        // starts after the snapshot.
        std::fs::File::open(&wal)
            .and_then(|d| d.sync_all())
            .map_err(io(wal.clone(), "syncing the log directory"))?;
    }
    let hard = HardState {
        vote: Some(Vote::new(applied.leader_id.term, me)),
        purged: Some(applied),
        committed: Some(applied),
    };
    storage.write(Blob::Raft, &encode(&hard))?;
    Ok(applied)
}
