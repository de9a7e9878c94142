//! etcd's Maintenance service: Status, HashKV, Hash, Defragment, Alarm,
//! Snapshot, MoveLeader.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::principal;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use crate::server::Server;

/// Bytes per Snapshot stream message.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

pub struct MaintenanceService {
    server: Server,
}

impl MaintenanceService {
    pub fn new(server: Server) -> Self {
        Self { server }
    }

    /// etcd's `authMaintenanceServer`: the root role while auth is enabled.
    async fn admin<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let who = principal(&self.server, req).await?;
        Ok(self.server.check_admin(&who)?)
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
        Ok(Response::new(self.server.status()))
    }

    async fn defragment(
        &self,
        req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.admin(&req).await?;
        self.server.defragment().await?;
        // etcd 3.4 answers an empty DefragmentResponse, without a header.
        Ok(Response::new(DefragmentResponse::default()))
    }

    async fn hash(&self, req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.admin(&req).await?;
        let (hash, revision, _) = self.server.hash_kv(0).await?;
        Ok(Response::new(HashResponse {
            header: Some(self.server.header(revision)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.admin(&req).await?;
        let (hash, revision, compact_revision) =
            self.server.hash_kv(req.into_inner().revision).await?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.server.header(revision)),
            hash,
            compact_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        req: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        self.admin(&req).await?;
        let (bytes, revision) = self.server.backup().await?;
        let header = self.server.header(revision);
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
        self.admin(&req).await?;
        let target = req.into_inner().target_id;
        self.server.move_leader(target).await?;
        // etcd 3.4 answers a MoveLeader without a header.
        Ok(Response::new(MoveLeaderResponse { header: None }))
    }
}
