//! The peer service, server side: what other members of the cluster call,
//! served on `--listen-peer-urls`.
//!
//! Every request is checked before its payload is decoded: it must come
//! from this member's cluster (same cluster id) and be meant for this
//! member. A request from another cluster is refused with
//! `FAILED_PRECONDITION` and a warning naming both cluster ids; such a peer
//! never joins. Raft's messages go straight to openraft; forwarded client
//! writes, read-index requests and joins go to the node (see
//! [`crate::cluster`]). The client side is [`super::network`].

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::network::{
    MAX_PEER_MESSAGE, REFUSAL_KEY, REFUSED_CLUSTER, REFUSED_REMOVED, REFUSED_WRONG_MEMBER,
};
use super::TypeConfig;
use crate::cluster::{JoinRequest, LeaderOp};
use crate::codec::{decode_wire, encode};
use crate::node::Node;
use crate::pb::raftcdpb::peer_server::{Peer, PeerServer};
use crate::pb::raftcdpb::{PeerReply, PeerRequest};
use crate::tls::ServerTls;

/// The peer gRPC service of one member.
pub struct PeerService {
    node: Node,
}

fn refuse(kind: &'static str, msg: String) -> Status {
    let mut status = Status::failed_precondition(msg);
    status.metadata_mut().insert(
        REFUSAL_KEY,
        tonic::metadata::MetadataValue::from_static(kind),
    );
    status
}

fn reply<T: Serialize>(value: &T) -> Response<PeerReply> {
    Response::new(PeerReply {
        payload: encode(value).into(),
    })
}

impl PeerService {
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    /// Check a Raft or leader request's envelope, then decode its payload.
    fn open<T: DeserializeOwned>(&self, req: Request<PeerRequest>) -> Result<T, Status> {
        let req = req.into_inner();
        let me = self.node.identity();
        if req.cluster_id != me.cluster_id {
            tracing::warn!(
                from = format!("{:x}", req.from),
                their_cluster_id = format!("{:x}", req.cluster_id),
                our_cluster_id = format!("{:x}", me.cluster_id),
                "refused a peer request from another cluster (check --initial-cluster-token and --initial-cluster)"
            );
            return Err(refuse(
                REFUSED_CLUSTER,
                format!(
                    "cluster id mismatch: member {:x} of cluster {:x} contacted member {:x} of cluster {:x}",
                    req.from, req.cluster_id, me.member_id, me.cluster_id
                ),
            ));
        }
        if req.to != 0 && req.to != me.member_id {
            return Err(refuse(
                REFUSED_WRONG_MEMBER,
                format!("this is member {:x}, not {:x}", me.member_id, req.to),
            ));
        }
        if self.node.is_removed(req.from) {
            tracing::warn!(
                from = format!("{:x}", req.from),
                "refused a peer request from a removed member"
            );
            return Err(refuse(
                REFUSED_REMOVED,
                format!(
                    "member {:x} was removed from cluster {:x}",
                    req.from, me.cluster_id
                ),
            ));
        }
        decode_wire(&req.payload)
            .map_err(|e| Status::invalid_argument(format!("bad peer message: {e}")))
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(
        &self,
        req: Request<PeerRequest>,
    ) -> Result<Response<PeerReply>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.open(req)?;
        self.node.leader_contact();
        Ok(reply(&self.node.inner.raft.append_entries(rpc).await))
    }

    async fn vote(&self, req: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        let rpc: VoteRequest<u64> = self.open(req)?;
        Ok(reply(&self.node.inner.raft.vote(rpc).await))
    }

    async fn install_snapshot(
        &self,
        req: Request<PeerRequest>,
    ) -> Result<Response<PeerReply>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = self.open(req)?;
        self.node.leader_contact();
        Ok(reply(&self.node.inner.raft.install_snapshot(rpc).await))
    }

    async fn forward(&self, req: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        let op: LeaderOp = self.open(req)?;
        Ok(reply(&self.node.serve_leader_op(op).await))
    }

    async fn read_index(&self, req: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        let () = self.open(req)?;
        Ok(reply(&self.node.serve_read_index().await))
    }

    async fn timeout_now(&self, req: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        let () = self.open(req)?;
        tracing::info!("campaigning now: the leader transfers its leadership here");
        let res: Result<(), String> = self
            .node
            .inner
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|e| e.to_string());
        Ok(reply(&res))
    }

    async fn join(&self, req: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        let join: JoinRequest = decode_wire(&req.into_inner().payload)
            .map_err(|e| Status::invalid_argument(format!("bad peer message: {e}")))?;
        Ok(reply(&self.node.serve_join(join)))
    }
}

/// Serve the peer service on `listener` until `shutdown` turns true, over
/// TLS (`--peer-cert-file` and friends) for an `https://` peer URL.
pub async fn serve(
    node: Node,
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    shutdown: watch::Receiver<bool>,
) {
    let svc = PeerServer::new(PeerService::new(node))
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE);
    let router = tonic::service::Routes::new(svc).into_axum_router();
    crate::api::serve_router(router, listener, tls, shutdown).await
}
