//! etcd's KV service: Range, Put, DeleteRange, Txn, Compact.

use prost::Message;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::mvcc::apply::apply;
use crate::mvcc::{validate, Command, MvccError, Reply};
use crate::node::Node;
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};

pub struct KvService {
    node: Node,
}

impl KvService {
    pub fn new(node: Node) -> Self {
        Self { node }
    }
}

fn check_size<M: Message>(node: &Node, m: &M) -> Result<(), ApiError> {
    if m.encoded_len() > node.inner.config.max_request_bytes {
        return Err(ApiError::RequestTooLarge);
    }
    Ok(())
}

fn unexpected(reply: Reply) -> ApiError {
    ApiError::Internal(format!("unexpected reply {reply:?}"))
}

/// A txn that only reads can be answered from the local view.
fn txn_is_read_only(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(t.failure.iter())
        .all(|op| match &op.request {
            Some(Op::RequestRange(_)) => true,
            Some(Op::RequestTxn(inner)) => txn_is_read_only(inner),
            _ => false,
        })
}

fn txn_is_serializable(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(t.failure.iter())
        .all(|op| match &op.request {
            Some(Op::RequestRange(r)) => r.serializable,
            Some(Op::RequestTxn(inner)) => txn_is_serializable(inner),
            _ => true,
        })
}

/// Range: linearizable unless `serializable` is set.
pub async fn range(node: &Node, r: RangeRequest) -> Result<RangeResponse, ApiError> {
    validate::check_range(&r)?;
    if !r.serializable && node.is_learner() {
        return Err(ApiError::NotSupportedForLearner);
    }
    if !r.serializable {
        node.linearize().await?;
    }
    let view = node.view();
    let mut resp = view.range(&r, view.revision)?;
    resp.header = Some(node.header(view.revision));
    Ok(resp)
}

pub async fn put(node: &Node, r: PutRequest) -> Result<PutResponse, ApiError> {
    validate::check_put(&r)?;
    check_size(node, &r)?;
    match node.write(Command::Put(r)).await? {
        Reply::Put(mut p) => {
            p.header = Some(node.header(p.header.map_or(0, |h| h.revision)));
            Ok(p)
        }
        other => Err(unexpected(other)),
    }
}

pub async fn delete_range(
    node: &Node,
    r: DeleteRangeRequest,
) -> Result<DeleteRangeResponse, ApiError> {
    validate::check_delete(&r)?;
    check_size(node, &r)?;
    match node.write(Command::DeleteRange(r)).await? {
        Reply::DeleteRange(mut d) => {
            d.header = Some(node.header(d.header.map_or(0, |h| h.revision)));
            Ok(d)
        }
        other => Err(unexpected(other)),
    }
}

pub async fn txn(node: &Node, r: TxnRequest) -> Result<TxnResponse, ApiError> {
    validate::check_txn(&r, node.inner.config.max_txn_ops)?;
    check_size(node, &r)?;
    let reply = if txn_is_read_only(&r) {
        if !txn_is_serializable(&r) {
            node.linearize().await?;
        }
        let view = node.view();
        apply(&view, &Command::Txn(r)).reply
    } else {
        node.write(Command::Txn(r)).await?
    };
    match reply {
        Reply::Txn(mut t) => {
            t.header = Some(node.header(t.header.map_or(0, |h| h.revision)));
            Ok(t)
        }
        Reply::Error(e) => Err(ApiError::Mvcc(e)),
        other => Err(unexpected(other)),
    }
}

pub async fn compact(node: &Node, r: CompactionRequest) -> Result<CompactionResponse, ApiError> {
    // Cheap pre-checks against the local view save a Raft round trip; the
    // state machine checks again at apply time.
    let view = node.view();
    if r.revision <= view.compact_revision {
        return Err(ApiError::Mvcc(MvccError::Compacted));
    }
    if r.revision > view.revision {
        return Err(ApiError::Mvcc(MvccError::FutureRevision));
    }
    let (revision, physical) = (r.revision, r.physical);
    match node.write(Command::Compact(r)).await? {
        Reply::Compact(mut c) => {
            if physical {
                node.compacted_on_disk(revision).await?;
            }
            c.header = Some(node.header(c.header.map_or(0, |h| h.revision)));
            Ok(c)
        }
        other => Err(unexpected(other)),
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(range(&self.node, req.into_inner()).await?))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(put(&self.node, req.into_inner()).await?))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(
            delete_range(&self.node, req.into_inner()).await?,
        ))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Ok(Response::new(txn(&self.node, req.into_inner()).await?))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Ok(Response::new(compact(&self.node, req.into_inner()).await?))
    }
}
