//! etcd's Maintenance service: Status, HashKV, Hash, Defragment, Alarm,
//! Snapshot, MoveLeader.

use std::pin::Pin;
use std::sync::atomic::Ordering;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::ETCD_VERSION;
use crate::error::ApiError;
use crate::node::Node;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};

/// Bytes per Snapshot stream message.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

pub struct MaintenanceService {
    node: Node,
}

impl MaintenanceService {
    pub fn new(node: Node) -> Self {
        Self { node }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, _req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        // No alarm is ever raised: the store has no space quota to exceed yet.
        // etcd's Alarm reply carries no header (`alarm list -w json` is `{}`).
        Ok(Response::new(AlarmResponse {
            header: None,
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let inner = &self.node.inner;
        let view = self.node.view();
        let size = inner.storage.size_on_disk() as i64;
        let rs = &inner.raft_state;
        let is_learner = self.node.is_learner();
        Ok(Response::new(StatusResponse {
            header: Some(self.node.header(view.revision)),
            version: ETCD_VERSION.to_string(),
            db_size: size,
            leader: rs.leader.load(Ordering::Relaxed),
            raft_index: rs.last_log_index.load(Ordering::Relaxed),
            raft_term: rs.term.load(Ordering::Relaxed),
            raft_applied_index: rs.applied_index.load(Ordering::Relaxed),
            errors: self.node.tls_warnings(),
            db_size_in_use: size,
            is_learner,
        }))
    }

    async fn defragment(
        &self,
        _req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        // The engine reclaims space on its own; make everything durable.
        self.node
            .inner
            .storage
            .flush()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let view = self.node.view();
        Ok(Response::new(DefragmentResponse {
            header: Some(self.node.header(view.revision)),
        }))
    }

    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let view = self.node.view();
        let (hash, _) = view.hash_kv(0).map_err(ApiError::from)?;
        Ok(Response::new(HashResponse {
            header: Some(self.node.header(view.revision)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let view = self.node.view();
        let (hash, _) = view
            .hash_kv(req.into_inner().revision)
            .map_err(ApiError::from)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.node.header(view.revision)),
            hash,
            compact_revision: view.compact_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _req: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let view = self.node.view();
        let header = self.node.header(view.revision);
        let bytes = tokio::task::spawn_blocking(move || crate::backup::write_backup(&view))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let total = bytes.len();
        let chunks: Vec<Result<SnapshotResponse, Status>> = bytes
            .chunks(SNAPSHOT_CHUNK)
            .scan(0usize, |sent, c| {
                *sent += c.len();
                Some(Ok(SnapshotResponse {
                    header: Some(header),
                    remaining_bytes: (total - *sent) as u64,
                    blob: bytes::Bytes::copy_from_slice(c),
                }))
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = req.into_inner().target_id;
        self.node.move_leader(target).await?;
        let view = self.node.view();
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.node.header(view.revision)),
        }))
    }
}
