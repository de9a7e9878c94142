//! `--force-new-cluster` (etcd's flag): a member whose cluster lost its
//! quorum for good restarts as a cluster of its own, from its own data.
//!
//! The member starts once without serving anyone and without campaigning,
//! so that Raft applies every entry known committed, writes its state
//! file (as a Defragment does), and stops. Then the data dir is rewritten
//! offline (`crate::raft::force`): this member alone, the log behind the
//! state file dropped; and the member gets a new
//! cluster id, so the old members, should they come back with their old
//! data, are refused instead of disturbing the new cluster. They rejoin
//! with empty data dirs: as learners through discovery (a replica table)
//! or with `member add` and `--initial-cluster-state existing`.
//!
//! The risk, as with etcd: writes that a majority acknowledged but this
//! member never received are lost, and revisions can be reused if another
//! member of the old cluster keeps serving. Writes it received in the last
//! second before it stopped may be dropped too: the `raft` file's
//! committed index trails the commits by up to a second, and entries past
//! it are not known to be committed. Use it only when the quorum is
//! gone for good, on the member with the most recent data, and start
//! without the flag afterwards (each start with it forms a new cluster).

use std::sync::Arc;

use super::identity::{grown_cluster_id, Identity};
use super::open::store_identity;
use super::{Server, StartError};
use crate::config::Config;
use crate::storage::{OsSync, Storage};

/// Wait until Raft applied every entry the `raft` file says is
/// committed, then write the state file there.
async fn apply_and_write(server: &Server) -> Result<(), crate::error::ApiError> {
    let committed = crate::raft::log_store::stored_committed(&server.inner.storage)
        .map_err(|e| crate::error::ApiError::Internal(e.to_string()))?
        .map_or(0, |c| c.index);
    let mut metrics = server.inner.raft.metrics();
    tracing::info!(
        committed,
        "--force-new-cluster: applying the committed entries"
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while metrics.borrow().last_applied.map_or(0, |l| l.index) < committed {
        if tokio::time::timeout_at(deadline, metrics.changed())
            .await
            .is_err()
        {
            return Err(crate::error::ApiError::Internal(format!(
                "the committed entries up to {committed} were not applied in time"
            )));
        }
    }
    // openraft counts the state it loaded as a snapshot already, so ask
    // for one explicitly and wait for the file.
    let file = server.inner.storage.file(crate::storage::Blob::State);
    let modified = |f: &std::path::Path| std::fs::metadata(f).and_then(|m| m.modified()).ok();
    let before = modified(&file);
    server
        .inner
        .raft
        .trigger()
        .snapshot()
        .await
        .map_err(|e| crate::error::ApiError::Internal(e.to_string()))?;
    loop {
        let now = modified(&file);
        if now.is_some() && now != before {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(crate::error::ApiError::Internal(
                "the state file was not written in time".into(),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Turn the data dir of `config` into a one-member cluster (see the
/// module's comment); the caller then starts the member as usual.
pub async fn force_new_cluster(config: &Config) -> Result<(), StartError> {
    if !Storage::holds_identity(&config.data_dir) {
        return Err(StartError::Rejected(format!(
            "--force-new-cluster needs the data dir of a member; {} holds none",
            config.data_dir.display()
        )));
    }
    let mut quiet = config.clone();
    quiet.force_new_cluster = false;
    let server = Server::open(quiet).await?;
    server.inner.raft.runtime_config().elect(false);
    let identity = server.identity().clone();
    let written = apply_and_write(&server).await;
    server.shutdown().await?;
    drop(server);
    written.map_err(|e| StartError::Raft(format!("--force-new-cluster: {e}")))?;

    let syncer = config
        .syncer
        .clone()
        .unwrap_or_else(|| Arc::new(OsSync) as Arc<dyn crate::storage::Syncer>);
    let storage = Storage::open(&config.data_dir, syncer)?;
    let info = super::replica::own_info(config, &identity.name);
    let from = crate::raft::force::single_member(&storage, identity.member_id, info)?;
    let cluster_id = grown_cluster_id(&config.initial_cluster_token, identity.member_id);
    store_identity(
        &storage,
        &Identity {
            cluster_id,
            ..identity.clone()
        },
        &config.initial_cluster_token,
    )?;
    tracing::warn!(
        member_id = format!("{:x}", identity.member_id),
        old_cluster_id = format!("{:x}", identity.cluster_id),
        cluster_id = format!("{cluster_id:x}"),
        log_index = from.index,
        "--force-new-cluster: this member now forms a new cluster alone, from its own data; add the other members back with empty data dirs, and start this one without the flag from now on"
    );
    Ok(())
}
