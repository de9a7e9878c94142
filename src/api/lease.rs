//! etcd's Lease service: LeaseGrant, LeaseRevoke, LeaseKeepAlive,
//! LeaseTimeToLive, LeaseLeases.
//!
//! Grants and revokes are Raft writes; keep-alives and TTL questions are
//! answered by the leader's lessor (see [`crate::lessor`]) from the current
//! view. Answers follow etcd 3.4: a keep-alive for an unknown or expired
//! lease gets TTL 0, a time-to-live question about one gets TTL -1.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::ApiError;
use crate::lessor::Clock;
use crate::mvcc::lease::MAX_LEASE_TTL;
use crate::mvcc::{Command, MvccError, Reply};
use crate::node::Node;
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};

pub struct LeaseService {
    node: Node,
}

impl LeaseService {
    pub fn new(node: Node) -> Self {
        Self { node }
    }
}

fn unexpected(reply: Reply) -> ApiError {
    ApiError::Internal(format!("unexpected reply {reply:?}"))
}

/// Grant a lease: id 0 lets the server choose; a TTL below the minimum is
/// raised to it.
pub async fn grant(node: &Node, r: LeaseGrantRequest) -> Result<LeaseGrantResponse, ApiError> {
    if r.ttl > MAX_LEASE_TTL {
        return Err(ApiError::Mvcc(MvccError::LeaseTtlTooLarge));
    }
    let lessor = &node.inner.lessor;
    let ttl = r.ttl.max(lessor.min_ttl());
    let id = if r.id == 0 {
        lessor.next_id(&node.view())
    } else {
        r.id
    };
    let granted_ms = Clock::now().wall_ms;
    match node
        .write(Command::LeaseGrant {
            id,
            ttl,
            granted_ms,
        })
        .await?
    {
        Reply::LeaseGrant(mut g) => {
            g.header = Some(node.header(g.header.map_or(0, |h| h.revision)));
            Ok(g)
        }
        other => Err(unexpected(other)),
    }
}

/// Revoke a lease, deleting its keys.
pub async fn revoke(node: &Node, r: LeaseRevokeRequest) -> Result<LeaseRevokeResponse, ApiError> {
    match node.write(Command::LeaseRevoke { id: r.id }).await? {
        Reply::LeaseRevoke(mut v) => {
            v.header = Some(node.header(v.header.map_or(0, |h| h.revision)));
            Ok(v)
        }
        other => Err(unexpected(other)),
    }
}

/// One keep-alive: the granted TTL, or 0 if the lease is gone. Deadlines
/// live in the leader's lessor, so a follower forwards it there.
pub async fn keep_alive_once(node: &Node, id: i64) -> Result<LeaseKeepAliveResponse, ApiError> {
    let ttl = node.lease_keep_alive(id).await?;
    let view = node.view();
    Ok(LeaseKeepAliveResponse {
        header: Some(node.header(view.revision)),
        id,
        ttl,
    })
}

pub fn time_to_live(node: &Node, r: LeaseTimeToLiveRequest) -> LeaseTimeToLiveResponse {
    let view = node.view();
    let header = Some(node.header(view.revision));
    let remaining = node
        .inner
        .lessor
        .remaining(r.id, &view, node.leader_term(), Clock::now());
    match (remaining, view.leases.get(&r.id)) {
        (Some(left), Some(lease)) => LeaseTimeToLiveResponse {
            header,
            id: r.id,
            // Whole seconds left, truncated, as etcd reports them.
            ttl: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            granted_ttl: lease.ttl,
            keys: if r.keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        },
        _ => LeaseTimeToLiveResponse {
            header,
            id: r.id,
            ttl: -1,
            granted_ttl: 0,
            keys: Vec::new(),
        },
    }
}

pub fn leases(node: &Node) -> LeaseLeasesResponse {
    let view = node.view();
    let ids = node
        .inner
        .lessor
        .by_expiry(&view, node.leader_term(), Clock::now());
    LeaseLeasesResponse {
        header: Some(node.header(view.revision)),
        leases: ids.into_iter().map(|id| LeaseStatus { id }).collect(),
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        Ok(Response::new(grant(&self.node, req.into_inner()).await?))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        Ok(Response::new(revoke(&self.node, req.into_inner()).await?))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let node = self.node.clone();
        let mut shutdown = node.shutdown_signal();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = inbound.next() => m,
                    _ = shutdown.changed() => return,
                };
                let reply = match msg {
                    None => return,
                    Some(Err(status)) => {
                        tracing::debug!(%status, "keep-alive stream ended with an error");
                        return;
                    }
                    Some(Ok(r)) => keep_alive_once(&node, r.id).await.map_err(Status::from),
                };
                let stop = reply.is_err();
                if tx.send(reply).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        Ok(Response::new(time_to_live(&self.node, req.into_inner())))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        Ok(Response::new(leases(&self.node)))
    }
}
