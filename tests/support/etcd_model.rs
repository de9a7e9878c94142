//! A small in-memory model of etcd 3.4's key-value semantics, written to be
//! obviously correct rather than fast: the store is the list of every
//! change ever made, `(revision, key, value or deletion)`, and the state at
//! any revision is that list folded up to it. Revisions, versions,
//! create and mod revisions, `prev_kv`, deleted counts, compaction errors,
//! txn compares and branches, and etcd's request checks (empty keys,
//! `ignore_value` / `ignore_lease`, too many ops, duplicate keys) follow
//! etcd 3.4.23's `etcdserver/apply.go`, `etcdserver/api/v3rpc/key.go` and
//! `mvcc/kvstore_txn.go`.
//!
//! Used by `tests/it/model.rs` (a proptest) and the `state_machine` fuzz
//! target (`fuzz/fuzz_targets/state_machine.rs`), both through
//! `tests/support/model_check.rs`, which applies the same requests to
//! raftcd's state machine and compares every field.
//!
//! Outside the model: leases (every key has lease 0; a put naming a lease is
//! answered `LeaseNotFound`, as etcd answers an unknown lease), sorting on
//! anything but the key (etcd's sort is not stable), and auth. Two places
//! where etcd 3.4.23 behaves by accident are modelled as it means to:
//!
//! * its duplicate-key check reads a delete's `range_end` of `"\0"` (every
//!   key from `key` on) as the literal string `"\0"`, so a txn deleting
//!   from a key on and putting a key after it passes the check, and etcd
//!   then panics applying it if the put has `ignore_value`; here, as in
//!   raftcd, that delete covers every key from `key` on;
//! * it refuses a negative `revision` in a txn's range as compacted (it
//!   compares with the compacted revision, -1 on a new store), while a
//!   range outside a txn reads a negative revision as the latest; here both
//!   read the latest.
//!
//! Only `std` and raftcd's protobuf types (`raftcd::pb`) are used.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use raftcd::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use raftcd::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use raftcd::pb::etcdserverpb::request_op::Request as Op;
use raftcd::pb::etcdserverpb::response_op::Response as OpResponse;
use raftcd::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp,
    TxnRequest, TxnResponse,
};
use raftcd::pb::mvccpb::{event::EventType, Event, KeyValue};

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// A request, as a client sends it.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
}

/// The answer to a [`Request`] (headers carry only the revision).
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
}

/// etcd's errors for these requests, by their etcd names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelError {
    /// `mvcc: required revision has been compacted`
    Compacted,
    /// `mvcc: required revision is a future revision`
    FutureRevision,
    /// `key not found` (also etcd's answer to an empty txn op)
    KeyNotFound,
    /// `key is not provided`
    EmptyKey,
    /// `value is provided`
    ValueProvided,
    /// `lease is provided`
    LeaseProvided,
    /// `requested lease not found`
    LeaseNotFound,
    /// `too many operations in txn request`
    TooManyOps,
    /// `duplicate key given in txn request`
    DuplicateKey,
}

/// What a request did: its answer, and the watch events it made (each
/// PUT with the key's previous live value as `prev_kv`, each DELETE with
/// the deleted value).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub result: Result<Response, ModelError>,
    pub events: Vec<Event>,
}

/// One change: at `rev`, `key` got `value` (`None`: deleted).
#[derive(Debug, Clone)]
struct Change {
    rev: i64,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

/// A live key at some revision.
#[derive(Debug, Clone, PartialEq)]
struct Kv {
    create: i64,
    modified: i64,
    version: i64,
    value: Vec<u8>,
}

type State = BTreeMap<Vec<u8>, Kv>;

/// The model store.
#[derive(Debug, Clone)]
pub struct Model {
    history: Vec<Change>,
    revision: i64,
    compact_revision: i64,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

fn to_kv(key: &[u8], kv: &Kv) -> KeyValue {
    KeyValue {
        key: key.to_vec().into(),
        create_revision: kv.create,
        mod_revision: kv.modified,
        version: kv.version,
        value: kv.value.clone().into(),
        lease: 0,
    }
}

/// The keys `key` / `range_end` select, as etcd reads them: one key
/// (empty end), every key from `key` on (end `"\0"`), or `[key, end)`.
fn selects(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        _ => k >= key && k < end,
    }
}

/// A delete's interval for the duplicate-key check; `None` end: no end.
#[derive(Debug, Clone)]
struct Interval {
    begin: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    fn of(d: &DeleteRangeRequest) -> Self {
        let end = match &d.range_end[..] {
            // A point: [key, key + "\0").
            [] => Some([&d.key[..], &[0]].concat()),
            [0] => None,
            e => Some(e.to_vec()),
        };
        Interval {
            begin: d.key.to_vec(),
            end,
        }
    }

    fn holds(&self, k: &[u8]) -> bool {
        self.begin.as_slice() <= k && self.end.as_ref().is_none_or(|e| k < e.as_slice())
    }
}

fn intersects(dels: &[Interval], k: &[u8]) -> bool {
    dels.iter().any(|d| d.holds(k))
}

/// etcd's `checkIntervals`: the keys a branch puts, and the intervals it
/// deletes; a key put twice, or put and deleted, is a duplicate. Sibling
/// nested txns both run, so they may not put the same key; the two
/// branches of one nested txn may.
fn check_intervals(reqs: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<Interval>), ModelError> {
    let mut dels: Vec<Interval> = reqs
        .iter()
        .filter_map(|r| match &r.request {
            Some(Op::RequestDeleteRange(d)) => Some(Interval::of(d)),
            _ => None,
        })
        .collect();
    let mut puts = BTreeSet::new();
    for r in reqs {
        let Some(Op::RequestTxn(t)) = &r.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || intersects(&dels, k) {
                return Err(ModelError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if puts.contains(k) && !puts_then.contains(k) {
                return Err(ModelError::DuplicateKey);
            }
            if intersects(&dels, k) {
                return Err(ModelError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for r in reqs {
        let Some(Op::RequestPut(p)) = &r.request else {
            continue;
        };
        if puts.contains(&p.key[..]) || intersects(&dels, &p.key) {
            return Err(ModelError::DuplicateKey);
        }
        puts.insert(p.key.to_vec());
    }
    Ok((puts, dels))
}

fn check_put(p: &PutRequest) -> Result<(), ModelError> {
    if p.key.is_empty() {
        return Err(ModelError::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(ModelError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(ModelError::LeaseProvided);
    }
    Ok(())
}

fn check_key(key: &[u8]) -> Result<(), ModelError> {
    if key.is_empty() {
        return Err(ModelError::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` (op count, empty keys, each op's own check).
fn check_txn(t: &TxnRequest, max_ops: usize) -> Result<(), ModelError> {
    let opc = t.compare.len().max(t.success.len()).max(t.failure.len());
    if opc > max_ops {
        return Err(ModelError::TooManyOps);
    }
    for c in &t.compare {
        check_key(&c.key)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Op::RequestRange(r)) => check_key(&r.key)?,
            Some(Op::RequestPut(p)) => check_put(p)?,
            Some(Op::RequestDeleteRange(d)) => check_key(&d.key)?,
            Some(Op::RequestTxn(inner)) => check_txn(inner, max_ops - opc)?,
            None => return Err(ModelError::KeyNotFound),
        }
    }
    Ok(())
}

impl Model {
    /// A new store: revision 1, never compacted.
    pub fn new() -> Self {
        Model {
            history: Vec::new(),
            revision: 1,
            compact_revision: -1,
        }
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The revision of the last compaction (-1: never).
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// Every key ever written, in order.
    pub fn keys(&self) -> BTreeSet<Vec<u8>> {
        self.history.iter().map(|c| c.key.clone()).collect()
    }

    /// The live keys at `rev`: every change up to it, folded.
    fn state_at(&self, rev: i64) -> State {
        let mut state = State::new();
        for c in self.history.iter().take_while(|c| c.rev <= rev) {
            match &c.value {
                Some(v) => {
                    let kv = match state.get(&c.key) {
                        Some(old) => Kv {
                            create: old.create,
                            modified: c.rev,
                            version: old.version + 1,
                            value: v.clone(),
                        },
                        None => Kv {
                            create: c.rev,
                            modified: c.rev,
                            version: 1,
                            value: v.clone(),
                        },
                    };
                    state.insert(c.key.clone(), kv);
                }
                None => {
                    state.remove(&c.key);
                }
            }
        }
        state
    }

    /// Apply one request.
    pub fn apply(&mut self, req: &Request) -> Outcome {
        let mut events = Vec::new();
        let result = match req {
            Request::Range(r) => self.range_top(r).map(Response::Range),
            Request::Put(p) => self.put_top(p, &mut events).map(Response::Put),
            Request::DeleteRange(d) => self.delete_top(d, &mut events).map(Response::DeleteRange),
            Request::Txn(t) => self.txn_top(t, &mut events).map(Response::Txn),
            Request::Compact(c) => self.compact(c).map(Response::Compact),
        };
        if result.is_err() {
            events.clear();
        }
        Outcome { result, events }
    }

    /// The revision a write of the current request gets.
    fn write_rev(&self) -> i64 {
        self.revision + 1
    }

    /// The revision the current request reads at and reports: the write
    /// revision once it changed something.
    fn current(&self) -> i64 {
        match self.history.last() {
            Some(c) if c.rev == self.write_rev() => self.write_rev(),
            _ => self.revision,
        }
    }

    /// Make the current request's changes the new revision.
    fn commit(&mut self) {
        self.revision = self.current();
    }

    fn range_top(&self, r: &RangeRequest) -> Result<RangeResponse, ModelError> {
        check_key(&r.key)?;
        self.read(r, self.revision)
    }

    /// A range as `mvcc`'s `rangeKeys` and the applier's `Range` answer it,
    /// in a request whose current revision is `current`.
    fn read(&self, r: &RangeRequest, current: i64) -> Result<RangeResponse, ModelError> {
        if r.revision > current {
            return Err(ModelError::FutureRevision);
        }
        let rev = if r.revision <= 0 { current } else { r.revision };
        if rev < self.compact_revision {
            return Err(ModelError::Compacted);
        }
        let order = SortOrder::try_from(r.sort_order).expect("model: sort order");
        assert_eq!(
            SortTarget::try_from(r.sort_target),
            Ok(SortTarget::Key),
            "model: only key order is modelled"
        );
        let state = self.state_at(rev);
        let matched: Vec<(&Vec<u8>, &Kv)> = state
            .iter()
            .filter(|(k, _)| selects(k, &r.key, &r.range_end))
            .collect();
        let count = matched.len() as i64;
        let mut kvs: Vec<KeyValue> = if r.count_only {
            Vec::new()
        } else {
            matched
                .into_iter()
                .filter(|(_, kv)| {
                    (r.min_mod_revision == 0 || kv.modified >= r.min_mod_revision)
                        && (r.max_mod_revision == 0 || kv.modified <= r.max_mod_revision)
                        && (r.min_create_revision == 0 || kv.create >= r.min_create_revision)
                        && (r.max_create_revision == 0 || kv.create <= r.max_create_revision)
                })
                .map(|(k, kv)| to_kv(k, kv))
                .collect()
        };
        if order == SortOrder::Descend {
            kvs.reverse();
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() as i64 > r.limit {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value = Vec::new().into();
            }
        }
        Ok(RangeResponse {
            header: header(current),
            kvs,
            more,
            count,
        })
    }

    fn put_top(
        &mut self,
        p: &PutRequest,
        events: &mut Vec<Event>,
    ) -> Result<PutResponse, ModelError> {
        check_put(p)?;
        // Outside a txn etcd looks the lease up first, then the key.
        if p.lease != 0 {
            return Err(ModelError::LeaseNotFound);
        }
        if (p.ignore_value || p.ignore_lease)
            && !self.state_at(self.revision).contains_key(&p.key[..])
        {
            return Err(ModelError::KeyNotFound);
        }
        let resp = self.put(p, events);
        self.commit();
        Ok(resp)
    }

    /// Write a (checked) put at the write revision.
    fn put(&mut self, p: &PutRequest, events: &mut Vec<Event>) -> PutResponse {
        let rev = self.write_rev();
        let prev = self.state_at(rev).get(&p.key[..]).cloned();
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => p.value.to_vec(),
        };
        let new = match &prev {
            Some(prev) => Kv {
                create: prev.create,
                modified: rev,
                version: prev.version + 1,
                value: value.clone(),
            },
            None => Kv {
                create: rev,
                modified: rev,
                version: 1,
                value: value.clone(),
            },
        };
        let prev_kv = prev.as_ref().map(|kv| to_kv(&p.key, kv));
        events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(to_kv(&p.key, &new)),
            prev_kv: prev_kv.clone(),
        });
        self.history.push(Change {
            rev,
            key: p.key.to_vec(),
            value: Some(value),
        });
        PutResponse {
            header: header(rev),
            prev_kv: if p.prev_kv { prev_kv } else { None },
        }
    }

    fn delete_top(
        &mut self,
        d: &DeleteRangeRequest,
        events: &mut Vec<Event>,
    ) -> Result<DeleteRangeResponse, ModelError> {
        check_key(&d.key)?;
        let resp = self.delete(d, events);
        self.commit();
        Ok(resp)
    }

    /// Delete every live key `d` selects at the write revision.
    fn delete(&mut self, d: &DeleteRangeRequest, events: &mut Vec<Event>) -> DeleteRangeResponse {
        let rev = self.write_rev();
        let victims: Vec<(Vec<u8>, Kv)> = self
            .state_at(rev)
            .into_iter()
            .filter(|(k, _)| selects(k, &d.key, &d.range_end))
            .collect();
        let mut prev_kvs = Vec::new();
        for (k, kv) in &victims {
            let prev = to_kv(k, kv);
            events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: k.clone().into(),
                    mod_revision: rev,
                    ..Default::default()
                }),
                prev_kv: Some(prev.clone()),
            });
            self.history.push(Change {
                rev,
                key: k.clone(),
                value: None,
            });
            if d.prev_kv {
                prev_kvs.push(prev);
            }
        }
        DeleteRangeResponse {
            header: header(self.current()),
            deleted: victims.len() as i64,
            prev_kvs,
        }
    }

    fn compact(&mut self, c: &CompactionRequest) -> Result<CompactionResponse, ModelError> {
        if c.revision <= self.compact_revision {
            return Err(ModelError::Compacted);
        }
        if c.revision > self.revision {
            return Err(ModelError::FutureRevision);
        }
        // Reads below it fail from now on; reads at or above it are
        // unchanged, so the history stays whole.
        self.compact_revision = c.revision;
        Ok(CompactionResponse {
            header: header(self.revision),
        })
    }

    /// Whether compare `c` holds on `pre` (the state before the txn).
    fn compare_holds(c: &Compare, pre: &State) -> bool {
        let target = CompareTarget::try_from(c.target).expect("model: compare target");
        let result = CompareResult::try_from(c.result).expect("model: compare result");
        let kvs: Vec<&Kv> = pre
            .iter()
            .filter(|(k, _)| selects(k, &c.key, &c.range_end))
            .map(|(_, kv)| kv)
            .collect();
        let absent = Kv {
            create: 0,
            modified: 0,
            version: 0,
            value: Vec::new(),
        };
        let kvs = if kvs.is_empty() {
            // No value to compare a value with: always false.
            if target == CompareTarget::Value {
                return false;
            }
            vec![&absent]
        } else {
            kvs
        };
        kvs.into_iter().all(|kv| {
            // etcd takes the union's value only if it is the target's kind.
            let ord = match (target, &c.target_union) {
                (CompareTarget::Value, Some(TargetUnion::Value(v))) => {
                    kv.value.as_slice().cmp(&v[..])
                }
                (CompareTarget::Value, _) => kv.value.as_slice().cmp(&[][..]),
                (CompareTarget::Version, Some(TargetUnion::Version(v))) => kv.version.cmp(v),
                (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => kv.create.cmp(v),
                (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => kv.modified.cmp(v),
                (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => 0.cmp(v),
                (CompareTarget::Version, _) => kv.version.cmp(&0),
                (CompareTarget::Create, _) => kv.create.cmp(&0),
                (CompareTarget::Mod, _) => kv.modified.cmp(&0),
                (CompareTarget::Lease, _) => 0.cmp(&0),
            };
            match result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            }
        })
    }

    fn branch<'t>(t: &'t TxnRequest, pre: &State) -> (bool, &'t [RequestOp]) {
        let ok = t.compare.iter().all(|c| Self::compare_holds(c, pre));
        (ok, if ok { &t.success } else { &t.failure })
    }

    /// etcd's `checkRequests` with `checkPut`: along the branches the txn
    /// takes, a put with `ignore_value` or `ignore_lease` needs the key, and
    /// a lease must exist.
    fn check_puts(t: &TxnRequest, pre: &State) -> Result<(), ModelError> {
        for op in Self::branch(t, pre).1 {
            match &op.request {
                Some(Op::RequestTxn(inner)) => Self::check_puts(inner, pre)?,
                Some(Op::RequestPut(p)) => {
                    if (p.ignore_value || p.ignore_lease) && !pre.contains_key(&p.key[..]) {
                        return Err(ModelError::KeyNotFound);
                    }
                    if p.lease != 0 {
                        return Err(ModelError::LeaseNotFound);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// etcd's `checkRequests` with `checkRange`: an explicit revision must
    /// exist before the txn and not be compacted.
    fn check_ranges(&self, t: &TxnRequest, pre: &State) -> Result<(), ModelError> {
        for op in Self::branch(t, pre).1 {
            match &op.request {
                Some(Op::RequestTxn(inner)) => self.check_ranges(inner, pre)?,
                Some(Op::RequestRange(r)) if r.revision > 0 => {
                    if r.revision > self.revision {
                        return Err(ModelError::FutureRevision);
                    }
                    if r.revision < self.compact_revision {
                        return Err(ModelError::Compacted);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn txn_top(
        &mut self,
        t: &TxnRequest,
        events: &mut Vec<Event>,
    ) -> Result<TxnResponse, ModelError> {
        check_txn(t, MAX_TXN_OPS)?;
        check_intervals(&t.success)?;
        check_intervals(&t.failure)?;
        let pre = self.state_at(self.revision);
        Self::check_puts(t, &pre)?;
        self.check_ranges(t, &pre)?;
        let mut resp = self.txn(t, &pre, events);
        resp.header = header(self.current());
        self.commit();
        Ok(resp)
    }

    /// Run a checked txn: compares on the state before it, then the ops of
    /// the branch taken, in order, each seeing the ones before it.
    fn txn(&mut self, t: &TxnRequest, pre: &State, events: &mut Vec<Event>) -> TxnResponse {
        let (succeeded, ops) = Self::branch(t, pre);
        let mut responses = Vec::new();
        for op in ops {
            let response = match &op.request {
                Some(Op::RequestRange(r)) => OpResponse::ResponseRange(
                    self.read(r, self.current())
                        .expect("model: txn ranges are checked first"),
                ),
                Some(Op::RequestPut(p)) => OpResponse::ResponsePut(self.put(p, events)),
                Some(Op::RequestDeleteRange(d)) => {
                    OpResponse::ResponseDeleteRange(self.delete(d, events))
                }
                Some(Op::RequestTxn(inner)) => {
                    let mut r = self.txn(inner, pre, events);
                    r.header = Some(ResponseHeader::default());
                    OpResponse::ResponseTxn(r)
                }
                None => unreachable!("model: empty ops are refused first"),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        TxnResponse {
            header: None,
            succeeded,
            responses,
        }
    }

    /// Every live key at `rev` (for comparing whole states), or why it
    /// cannot be read.
    pub fn all_at(&self, rev: i64) -> Result<RangeResponse, ModelError> {
        self.read(
            &RangeRequest {
                key: vec![0].into(),
                range_end: vec![0].into(),
                revision: rev,
                ..Default::default()
            },
            self.revision,
        )
    }
}
