//! etcd's Lease service: LeaseGrant, LeaseRevoke, LeaseKeepAlive,
//! LeaseTimeToLive, LeaseLeases.
//!
//! The work is the core's (`Server::lease_*`); this file adapts the
//! keep-alive stream: one answer per request, until the client or the
//! member stops.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::principal;
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::server::Server;

pub struct LeaseService {
    server: Server,
}

impl LeaseService {
    pub fn new(server: Server) -> Self {
        Self { server }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        Ok(Response::new(
            self.server
                .lease_grant_as(&principal(&self.server, &req).await?, req.into_inner())
                .await?,
        ))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        Ok(Response::new(
            self.server
                .lease_revoke_as(&principal(&self.server, &req).await?, req.into_inner())
                .await?,
        ))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let server = self.server.clone();
        let mut shutdown = server.shutdown_signal();
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
                    Some(Ok(r)) => server.lease_keep_alive(r.id).await.map_err(Status::from),
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
        Ok(Response::new(
            self.server.lease_time_to_live(req.into_inner()),
        ))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        Ok(Response::new(self.server.lease_leases()))
    }
}
