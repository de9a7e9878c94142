//! etcd's Watch service: one bidirectional stream per call, served by the
//! member's [`WatchHub`](crate::watch::WatchHub).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::pb::etcdserverpb::watch_server::Watch;
use crate::pb::etcdserverpb::{WatchRequest, WatchResponse};
use crate::server::Server;

pub struct WatchService {
    server: Server,
}

impl WatchService {
    pub fn new(server: Server) -> Self {
        Self { server }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        // The sender's permissions are checked at each watch creation, on
        // the auth store as it is then; a bad token refuses every watch.
        let who = super::principal(&self.server, &req).await;
        let server = self.server.clone();
        let guard: crate::watch::WatchGuard = Arc::new(move |key: &[u8], end: &[u8]| match &who {
            Ok(who) => server.may_watch(who, key, end),
            Err(_) => false,
        });
        let responses = self
            .server
            .watch_hub()
            .open_guarded(req.into_inner(), Some(guard));
        Ok(Response::new(Box::pin(
            ReceiverStream::new(responses).map(Ok),
        )))
    }
}
