//! The requests Lock and Election make of the KV store: their keys
//! (`name/LEASE`), compares on create revisions, puts and deletes, the
//! first- and last-created key under a prefix.

use bytes::Bytes;

use crate::error::ApiError;
use crate::mvcc::prefix_end;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::response_op::Response as OpResponse;
use crate::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, RangeRequest, RangeResponse, RequestOp, ResponseHeader,
    TxnResponse,
};

/// `name/`: the prefix of a lock's or an election's keys.
pub(super) fn key_prefix(name: &[u8]) -> Bytes {
    let mut p = name.to_vec();
    p.push(b'/');
    Bytes::from(p)
}

/// `prefix` + the lease id as Go's `%x` writes an int64 (a sign, no two's
/// complement).
pub(super) fn lease_key(prefix: &[u8], lease: i64) -> Bytes {
    let sign = if lease < 0 { "-" } else { "" };
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("{sign}{:x}", lease.unsigned_abs()).as_bytes());
    Bytes::from(k)
}

/// Compare: `key`'s create revision is `rev` (0: the key does not exist).
pub(super) fn created_at(key: &Bytes, rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.clone(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
        ..Default::default()
    }
}

pub(super) fn op(request: Op) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

pub(super) fn get(key: &Bytes) -> RangeRequest {
    RangeRequest {
        key: key.clone(),
        ..Default::default()
    }
}

pub(super) fn delete(key: &Bytes) -> RequestOp {
    op(Op::RequestDeleteRange(DeleteRangeRequest {
        key: key.clone(),
        ..Default::default()
    }))
}

/// The key under `prefix` created first (clientv3's `WithFirstCreate`) or
/// last (`WithLastCreate`), at most `max_create` (0: any).
pub(super) fn by_create(prefix: &Bytes, order: SortOrder, max_create: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.clone(),
        range_end: prefix_end(prefix),
        sort_target: SortTarget::Create as i32,
        sort_order: order as i32,
        limit: 1,
        max_create_revision: max_create,
        ..Default::default()
    }
}

/// The range answer of a txn's `i`th op.
pub(super) fn range_at(resp: &TxnResponse, i: usize) -> Result<&RangeResponse, ApiError> {
    match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(OpResponse::ResponseRange(r)) => Ok(r),
        other => Err(ApiError::Internal(format!(
            "txn op {i}: expected a range response, got {other:?}"
        ))),
    }
}

pub(super) fn header_of(resp: &TxnResponse) -> ResponseHeader {
    resp.header.unwrap_or_default()
}
