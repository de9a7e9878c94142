//! etcd's Election service (`v3electionpb.Election`): Campaign, Proclaim,
//! Leader, Observe, Resign. The work is the core's
//! (`server::concurrency`); Observe's stream ends when the core's observer
//! does, with no error, as etcd's does.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::status::concurrency_status;
use crate::pb::v3electionpb::election_server::Election;
use crate::pb::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use crate::server::Server;

pub struct ElectionService {
    server: Server,
}

impl ElectionService {
    pub fn new(server: Server) -> Self {
        Self { server }
    }
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        req: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        Ok(Response::new(
            self.server
                .campaign(req.into_inner())
                .await
                .map_err(concurrency_status)?,
        ))
    }

    async fn proclaim(
        &self,
        req: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        Ok(Response::new(
            self.server
                .proclaim(req.into_inner())
                .await
                .map_err(concurrency_status)?,
        ))
    }

    async fn leader(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let name = req.into_inner().name;
        Ok(Response::new(
            self.server
                .election_leader(&name)
                .await
                .map_err(concurrency_status)?,
        ))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<ObserveStream>, Status> {
        let leaders = self.server.observe(&req.into_inner().name);
        Ok(Response::new(Box::pin(
            ReceiverStream::new(leaders).map(Ok),
        )))
    }

    async fn resign(
        &self,
        req: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        Ok(Response::new(
            self.server
                .resign(req.into_inner())
                .await
                .map_err(concurrency_status)?,
        ))
    }
}
