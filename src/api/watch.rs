//! etcd's Watch service: one bidirectional stream per call, served by the
//! node's [`WatchHub`](crate::watch::WatchHub).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::node::Node;
use crate::pb::etcdserverpb::watch_server::Watch;
use crate::pb::etcdserverpb::{WatchRequest, WatchResponse};

pub struct WatchService {
    node: Node,
}

impl WatchService {
    pub fn new(node: Node) -> Self {
        Self { node }
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
        let responses = self.node.inner.watch.open(req.into_inner());
        Ok(Response::new(Box::pin(
            ReceiverStream::new(responses).map(Ok),
        )))
    }
}
