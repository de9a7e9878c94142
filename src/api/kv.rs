//! etcd's KV service: Range, Put, DeleteRange, Txn, Compact.

use tonic::{Request, Response, Status};

use super::principal;
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::server::Server;

pub struct KvService {
    server: Server,
}

impl KvService {
    pub fn new(server: Server) -> Self {
        Self { server }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(
            self.server
                .range_as(&principal(&self.server, &req).await?, req.into_inner())
                .await?,
        ))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(
            self.server
                .put_as(&principal(&self.server, &req).await?, req.into_inner())
                .await?,
        ))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(
            self.server
                .delete_range_as(&principal(&self.server, &req).await?, req.into_inner())
                .await?,
        ))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Ok(Response::new(
            self.server
                .txn_as(&principal(&self.server, &req).await?, req.into_inner())
                .await?,
        ))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Ok(Response::new(
            self.server
                .compact_as(&principal(&self.server, &req).await?, req.into_inner())
                .await?,
        ))
    }
}
