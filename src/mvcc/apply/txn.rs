//! Txns: compares, the branch taken, etcd's checks before anything runs,
//! and the ops in order.

use super::{header, latest_live, Applier};
use crate::mvcc::command::MvccError;
use crate::mvcc::view::Rev;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::response_op::Response;
use crate::pb::etcdserverpb::{
    Compare, RangeResponse, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};

/// Whether `req` can fail only before its first change, whichever branch
/// it takes: its checks ([`Applier::check_path`]: each put's lease, each
/// range's revision) and its compares run first, on the state before it.
/// That holds for a txn without nested txns, empty ops, puts that keep the
/// value or lease of a key (an earlier delete in the txn can make those
/// fail), and ranges at a past revision (read back from disk) or with an
/// unknown sort.
pub(super) fn txn_in_place(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Request::RequestPut(p)) => !p.ignore_value && !p.ignore_lease,
            Some(Request::RequestDeleteRange(_)) => true,
            Some(Request::RequestRange(r)) => {
                r.revision <= 0
                    && SortOrder::try_from(r.sort_order).is_ok()
                    && SortTarget::try_from(r.sort_target).is_ok()
            }
            Some(Request::RequestTxn(_)) | None => false,
        })
}

impl Applier<'_> {
    pub(super) fn compare(&self, c: &Compare) -> Result<bool, MvccError> {
        let target = CompareTarget::try_from(c.target)
            .map_err(|_| MvccError::UnknownCompareTarget(c.target))?;
        let result = CompareResult::try_from(c.result)
            .map_err(|_| MvccError::UnknownCompareResult(c.result))?;
        // Evaluate against the state before the txn (its latest revisions),
        // over one key or a range.
        let mut keys: Vec<Option<&Rev>> = Vec::new();
        if c.range_end.is_empty() {
            keys.push(self.base().history(&c.key).and_then(latest_live));
        } else {
            for (_, h) in self.base().histories(&c.key, &c.range_end) {
                if let Some(r) = latest_live(h) {
                    keys.push(Some(r));
                }
            }
            // An empty range compares like one missing key, as in etcd.
            if keys.is_empty() {
                keys.push(None);
            }
        }
        for r in keys {
            if !compare_one(target, result, c.target_union.as_ref(), r) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn compares_hold(&self, cmps: &[Compare]) -> Result<bool, MvccError> {
        for c in cmps {
            if !self.compare(c)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(super) fn txn_top(&mut self, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
        // As etcd, before anything runs: first every put on the branches
        // taken, then every range's revision (so a txn with both kinds of
        // mistake fails as etcd's does).
        let mut range_error = None;
        self.check_path(req, &mut range_error)?;
        if let Some(e) = range_error {
            return Err(e);
        }
        let mut resp = self.txn(req)?;
        resp.header = header(self.current_rev());
        Ok(resp)
    }

    /// etcd's `checkRequests` over the branches `req` takes (on the state
    /// before the txn): a put's error at once, the first range's in
    /// `range_error`.
    fn check_path(
        &self,
        req: &TxnRequest,
        range_error: &mut Option<MvccError>,
    ) -> Result<(), MvccError> {
        let ops = if self.compares_hold(&req.compare)? {
            &req.success
        } else {
            &req.failure
        };
        for op in ops {
            match &op.request {
                Some(Request::RequestTxn(t)) => self.check_path(t, range_error)?,
                Some(Request::RequestPut(p)) => {
                    let live = |k: &[u8]| self.base().history(k).and_then(latest_live);
                    if (p.ignore_value || p.ignore_lease) && live(&p.key).is_none() {
                        return Err(MvccError::KeyNotFound);
                    }
                    self.check_lease(p.lease)?;
                }
                Some(Request::RequestRange(r)) if range_error.is_none() => {
                    if r.revision > self.base_revision {
                        *range_error = Some(MvccError::FutureRevision);
                    } else if r.revision > 0 && r.revision < self.base().compact_revision {
                        *range_error = Some(MvccError::Compacted);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
        let succeeded = self.compares_hold(&req.compare)?;
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => {
                    // An explicit revision must exist before the txn, as in etcd.
                    if r.revision > self.base_revision {
                        return Err(MvccError::FutureRevision);
                    }
                    let resp: RangeResponse = self.view.range(r, self.current_rev())?;
                    Response::ResponseRange(resp)
                }
                Some(Request::RequestPut(p)) => Response::ResponsePut(self.put(p)?),
                Some(Request::RequestDeleteRange(d)) => {
                    Response::ResponseDeleteRange(self.delete_range(d)?)
                }
                Some(Request::RequestTxn(t)) => {
                    let mut inner = self.txn(t)?;
                    inner.header = Some(ResponseHeader::default());
                    Response::ResponseTxn(inner)
                }
                None => return Err(MvccError::KeyNotFound),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        // Each response keeps the revision as of its place in the txn, as in
        // etcd: a delete or range before the first change reports the old one.
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }
}

/// Evaluate one compare against one key's state (`None`: absent key).
fn compare_one(
    target: CompareTarget,
    result: CompareResult,
    tu: Option<&TargetUnion>,
    r: Option<&Rev>,
) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match target {
        CompareTarget::Value => {
            // A value compare on a missing key always fails.
            let Some(r) = r else { return false };
            let want: &[u8] = match tu {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            r.value.as_deref().unwrap_or_default().cmp(want)
        }
        _ => {
            let have = match (target, r) {
                (_, None) => 0,
                (CompareTarget::Version, Some(r)) => r.version,
                (CompareTarget::Create, Some(r)) => r.create,
                (CompareTarget::Mod, Some(r)) => r.main,
                (CompareTarget::Lease, Some(r)) => r.lease,
                (CompareTarget::Value, Some(_)) => 0,
            };
            // As etcd's compareKV: the union's value counts only if it is
            // the target's own kind; any other kind compares with 0.
            let want = match (target, tu) {
                (CompareTarget::Version, Some(TargetUnion::Version(v)))
                | (CompareTarget::Create, Some(TargetUnion::CreateRevision(v)))
                | (CompareTarget::Mod, Some(TargetUnion::ModRevision(v)))
                | (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => *v,
                _ => 0,
            };
            have.cmp(&want)
        }
    };
    match result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}
