//! etcd's Lock service (`v3lockpb.Lock`): Lock, Unlock. The work is the
//! core's (`server::concurrency`).

use tonic::{Request, Response, Status};

use super::principal;
use super::status::concurrency_status;
use crate::pb::v3lockpb::lock_server::Lock;
use crate::pb::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use crate::server::Server;

pub struct LockService {
    server: Server,
}

impl LockService {
    pub fn new(server: Server) -> Self {
        Self { server }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let who = principal(&self.server, &req).await?;
        Ok(Response::new(
            self.server
                .lock(&who, req.into_inner())
                .await
                .map_err(concurrency_status)?,
        ))
    }

    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let who = principal(&self.server, &req).await?;
        Ok(Response::new(
            self.server
                .unlock(&who, req.into_inner())
                .await
                .map_err(concurrency_status)?,
        ))
    }
}
