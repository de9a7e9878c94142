//! Syncing the log: the flusher thread, which makes everything appended
//! so far durable with one `fdatasync` for every request queued meanwhile
//! (group commit), and a sync on the caller's thread when nothing is
//! queued. See [`super`].

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use super::{Shared, SyncDone, Wal};
use crate::storage::{lock, sync_failed, StorageError};

impl Wal {
    /// Call `done` once everything appended before this call is durable
    /// (or the sync failed). Callbacks run in the order they were queued.
    pub fn sync(&self, done: SyncDone) {
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        if let Err(std::sync::mpsc::SendError(done)) = self.flusher.send(done) {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            done(Err(StorageError::Failed(
                "the log's sync thread is gone".into(),
            )));
        }
    }

    /// [`Wal::sync`], but on the caller's thread (blocking it for one
    /// `fdatasync`) when no sync is queued, so `done` cannot overtake an
    /// earlier callback: two thread hand-offs fewer per sync (to the
    /// flusher and back) for a caller that has nothing else to do
    /// meanwhile.
    pub fn sync_here(&self, done: SyncDone) {
        if self.shared.queued.load(Ordering::SeqCst) == 0 {
            done(sync_appended(&self.shared));
        } else {
            self.sync(done);
        }
    }

    /// [`Wal::sync`], awaited.
    pub async fn sync_now(&self) -> Result<(), StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.sync(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        rx.await
            .unwrap_or_else(|_| Err(StorageError::Failed("the log's sync thread is gone".into())))
    }
}

pub(super) fn fail(shared: &Shared, e: &StorageError) {
    let mut failed = lock(&shared.failed);
    if failed.is_none() {
        tracing::error!(error = %e, "the Raft log cannot be written: this member acknowledges nothing more; restart it (it recovers from what is on disk) once the disk is fixed");
        *failed = Some(e.to_string());
    }
}

/// The flusher: takes every queued sync request, makes the current segment
/// durable once for all of them, and answers them in order.
pub(super) fn flusher(shared: Arc<Shared>, rx: mpsc::Receiver<SyncDone>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let n = batch.len();
        let result = sync_appended(&shared);
        for done in batch {
            done(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StorageError::Failed(e.to_string())),
            });
        }
        shared.queued.fetch_sub(n, Ordering::SeqCst);
    }
}

/// Make everything appended so far durable with one `fdatasync` of the
/// current segment (the earlier ones were synced when closed).
fn sync_appended(shared: &Shared) -> Result<(), StorageError> {
    if let Some(reason) = lock(&shared.failed).clone() {
        return Err(StorageError::Failed(reason));
    }
    let (current, upto) = {
        let st = lock(&shared.state);
        let current = st.segments.back().map(|s| (s.file.clone(), s.path.clone()));
        (current, st.next.and_then(|n| n.checked_sub(1)))
    };
    let Some((file, path)) = current else {
        return Ok(());
    };
    let started = Instant::now();
    let r = shared.syncer.sync_data(&file);
    shared.syncs.fetch_add(1, Ordering::Relaxed);
    if let Some(o) = &shared.observer {
        o(started.elapsed());
    }
    match r.map_err(sync_failed(&path)) {
        Ok(()) => {
            // A truncate since may have cut below it.
            let now = lock(&shared.state).next.and_then(|n| n.checked_sub(1));
            *lock(&shared.durable) = std::cmp::min(upto, now);
            Ok(())
        }
        Err(e) => {
            fail(shared, &e);
            Err(e)
        }
    }
}
