//! etcd's Election service (`v3electionpb.Election`): Campaign, Proclaim,
//! Leader, Observe, Resign. The work is the core's
//! (`server::concurrency`); Observe's stream ends when the core's observer
//! does, with no error, as etcd's does.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::principal;
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
        let who = principal(&self.server, &req).await?;
        Ok(Response::new(
            self.server
                .campaign(&who, req.into_inner())
                .await
                .map_err(concurrency_status)?,
        ))
    }

    async fn proclaim(
        &self,
        req: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let who = principal(&self.server, &req).await?;
        Ok(Response::new(
            self.server
                .proclaim(&who, req.into_inner())
                .await
                .map_err(concurrency_status)?,
        ))
    }

    async fn leader(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let who = principal(&self.server, &req).await?;
        let name = req.into_inner().name;
        Ok(Response::new(
            self.server
                .election_leader(&who, &name)
                .await
                .map_err(concurrency_status)?,
        ))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<ObserveStream>, Status> {
        let who = principal(&self.server, &req).await?;
        let leaders = self.server.observe(who, &req.into_inner().name);
        Ok(Response::new(Box::pin(
            ReceiverStream::new(leaders).map(Ok),
        )))
    }

    async fn resign(
        &self,
        req: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let who = principal(&self.server, &req).await?;
        Ok(Response::new(
            self.server
                .resign(&who, req.into_inner())
                .await
                .map_err(concurrency_status)?,
        ))
    }
}
