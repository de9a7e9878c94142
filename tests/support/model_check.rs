//! raftcd's MVCC state machine against the etcd model
//! (`tests/support/etcd_model.rs`): the same requests go to both, and every
//! answer, every watch event, the revision and the compacted revision must
//! agree, step by step; at the end every revision is read from both.
//!
//! raftcd's side is driven the way a member drives it: a write is checked
//! with `check_command` (as `Server::propose` does), then applied with
//! `apply_proposal_to` on a `ReadView` (as `StateMachine::apply` applies a
//! Raft entry's proposal: one command, or a group-commit batch, changing
//! the view in place); a range is checked with `check_range` and read from
//! a snapshot of the view (as `Server::range` does). A snapshot held
//! across every other step must read the same after it.
//!
//! Sequences come from bytes ([`run`]): the fuzz target `state_machine`
//! and the proptest `tests/it/model.rs` share the generator. Included with
//! `#[path]` next to `etcd_model`.

#![allow(dead_code)]

use raftcd::mvcc::apply::apply_proposal_to;
use raftcd::mvcc::command::{Proposal, ProposalReply};
use raftcd::mvcc::validate::{check_command, check_range, Limits, Origin, Rejected};
use raftcd::mvcc::{Command, MvccError, ReadView, Reply, View};
use raftcd::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use raftcd::pb::etcdserverpb::range_request::SortOrder;
use raftcd::pb::etcdserverpb::request_op::Request as Op;
use raftcd::pb::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use super::etcd_model::{Model, ModelError, Request, Response, MAX_TXN_OPS};

/// The limits requests are checked against (etcd's defaults).
pub const LIMITS: Limits = Limits {
    max_request_bytes: 1536 * 1024,
    max_txn_ops: MAX_TXN_OPS,
};

/// One step: a request on its own, or writes proposed together (one Raft
/// entry holding a batch, as group commit makes it).
#[derive(Debug, Clone)]
pub enum Step {
    One(Request),
    Batch(Vec<Request>),
}

fn model_error(e: &MvccError) -> Result<ModelError, String> {
    Ok(match e {
        MvccError::Compacted => ModelError::Compacted,
        MvccError::FutureRevision => ModelError::FutureRevision,
        MvccError::KeyNotFound => ModelError::KeyNotFound,
        MvccError::LeaseNotFound => ModelError::LeaseNotFound,
        MvccError::EmptyKey => ModelError::EmptyKey,
        MvccError::ValueProvided => ModelError::ValueProvided,
        MvccError::LeaseProvided => ModelError::LeaseProvided,
        MvccError::TooManyOps => ModelError::TooManyOps,
        MvccError::DuplicateKey => ModelError::DuplicateKey,
        other => {
            return Err(format!(
                "raftcd answered {other:?}, which etcd never does here"
            ))
        }
    })
}

fn command(req: &Request) -> Option<Command> {
    Some(match req {
        Request::Range(_) => return None,
        Request::Put(p) => Command::Put(p.clone()),
        Request::DeleteRange(d) => Command::DeleteRange(d.clone()),
        Request::Txn(t) => Command::Txn(t.clone()),
        Request::Compact(c) => Command::Compact(*c),
    })
}

fn response(reply: Reply) -> Result<Result<Response, ModelError>, String> {
    Ok(match reply {
        Reply::Put(p) => Ok(Response::Put(p)),
        Reply::DeleteRange(d) => Ok(Response::DeleteRange(d)),
        Reply::Txn(t) => Ok(Response::Txn(t)),
        Reply::Compact(c) => Ok(Response::Compact(c)),
        Reply::Error(e) => Err(model_error(&e)?),
        other => return Err(format!("unexpected reply {other:?}")),
    })
}

/// raftcd's view and the model, fed the same steps.
pub struct Pair {
    pub view: ReadView,
    pub model: Model,
    log: Vec<Step>,
}

impl Default for Pair {
    fn default() -> Self {
        Self::new()
    }
}

impl Pair {
    pub fn new() -> Self {
        Pair {
            view: ReadView::new(View::default()),
            model: Model::new(),
            log: Vec::new(),
        }
    }

    fn disagree(&self, what: String) -> String {
        let mut s = format!("raftcd and the etcd model disagree: {what}\nsteps:\n");
        for (i, step) in self.log.iter().enumerate() {
            s.push_str(&format!("  {i}: {step:?}\n"));
        }
        s
    }

    /// Apply `step` to both and compare.
    pub fn step(&mut self, step: &Step) -> Result<(), String> {
        self.log.push(step.clone());
        let reqs: Vec<&Request> = match step {
            Step::One(r) => vec![r],
            Step::Batch(rs) => rs.iter().collect(),
        };
        // raftcd: ranges are read at once; writes are checked, and the
        // accepted ones applied as one proposal.
        let mut ours: Vec<Option<Result<Response, ModelError>>> = Vec::new();
        // Every other step, a snapshot is held across it (the writer then
        // copies what it changes); otherwise nothing holds one, and the
        // writer changes the view in place from the second command on.
        let held = if self.log.len().is_multiple_of(2) {
            let v = self.view.load();
            let revisions = v.revisions().map_err(|e| e.to_string())?;
            Some((v, revisions))
        } else {
            None
        };
        let revision_before = self.view.load().revision;
        let mut accepted = Vec::new();
        let mut slots = Vec::new();
        for (i, req) in reqs.iter().enumerate() {
            match req {
                Request::Range(r) => {
                    let read = check_range(r)
                        .and_then(|()| {
                            let view = self.view.load();
                            view.range(r, view.revision)
                        })
                        .map(Response::Range);
                    ours.push(Some(match read {
                        Ok(resp) => Ok(resp),
                        Err(e) => Err(model_error(&e)?),
                    }));
                }
                _ => {
                    let cmd = command(req).expect("a write");
                    match check_command(&cmd, Origin::Client, &LIMITS) {
                        Ok(()) => {
                            ours.push(None);
                            slots.push(i);
                            accepted.push(cmd);
                        }
                        Err(Rejected::Mvcc(e)) => ours.push(Some(Err(model_error(&e)?))),
                        Err(other) => {
                            return Err(self.disagree(format!("request {i} refused: {other}")))
                        }
                    }
                }
            }
        }
        let mut events = Vec::new();
        if !accepted.is_empty() {
            let proposal = match step {
                Step::One(_) => Proposal::One(accepted.pop().expect("one")),
                Step::Batch(_) => Proposal::Batch(accepted),
            };
            let (reply, applied_events) = apply_proposal_to(&self.view, &proposal);
            let revision_after = self.view.load().revision;
            let replies = match reply {
                ProposalReply::One(r) => vec![r],
                ProposalReply::Batch(rs) => rs,
            };
            if replies.len() != slots.len() {
                return Err(self.disagree(format!(
                    "{} replies to {} commands",
                    replies.len(),
                    slots.len()
                )));
            }
            for (slot, reply) in slots.into_iter().zip(replies) {
                ours[slot] = Some(response(reply)?);
            }
            if applied_events.is_empty() && revision_after != revision_before {
                return Err(self.disagree("the revision moved without an event".into()));
            }
            events = applied_events;
        }
        if let Some((v, revisions)) = held {
            if v.revisions().map_err(|e| e.to_string())? != revisions {
                return Err(self.disagree("a snapshot held across the step changed".into()));
            }
        }
        let view = self.view.load();
        // The model, one request after the other.
        let mut theirs_events = Vec::new();
        for (i, req) in reqs.iter().enumerate() {
            let outcome = self.model.apply(req);
            let ours = ours[i].as_ref().expect("answered");
            if *ours != outcome.result {
                return Err(self.disagree(format!(
                    "request {i} of the last step:\n  {req:?}\n  raftcd: {ours:?}\n  model:  {:?}",
                    outcome.result
                )));
            }
            theirs_events.extend(outcome.events);
        }
        if events != theirs_events {
            return Err(self.disagree(format!(
                "events of the last step:\n  raftcd: {events:?}\n  model:  {theirs_events:?}"
            )));
        }
        if (view.revision, view.compact_revision)
            != (self.model.revision(), self.model.compact_revision())
        {
            return Err(self.disagree(format!(
                "revision, compacted revision: raftcd {:?}, model {:?}",
                (view.revision, view.compact_revision),
                (self.model.revision(), self.model.compact_revision())
            )));
        }
        Ok(())
    }

    /// Read every key at every revision (and just outside) from both.
    pub fn finish(&self) -> Result<(), String> {
        let low = self.model.compact_revision().min(0) - 1;
        for rev in low..=self.model.revision() + 1 {
            let req = RangeRequest {
                key: vec![0].into(),
                range_end: vec![0].into(),
                revision: rev,
                ..Default::default()
            };
            let view = self.view.load();
            let ours = match view.range(&req, view.revision) {
                Ok(r) => Ok(r),
                Err(e) => Err(model_error(&e)?),
            };
            let theirs = self.model.all_at(rev);
            if ours != theirs {
                return Err(self.disagree(format!(
                    "everything at revision {rev}:\n  raftcd: {ours:?}\n  model:  {theirs:?}"
                )));
            }
        }
        Ok(())
    }
}

/// Apply `steps` to a new pair and compare throughout.
pub fn check(steps: &[Step]) -> Result<(), String> {
    let mut pair = Pair::new();
    for s in steps {
        pair.step(s)?;
    }
    pair.finish()
}

/// Bytes read as choices; zeros once they run out.
struct Src<'a> {
    data: &'a [u8],
    at: usize,
}

impl Src<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn below(&mut self, n: u8) -> u8 {
        self.byte() % n
    }

    /// True one time in `n`.
    fn one_in(&mut self, n: u8) -> bool {
        self.below(n) == 0
    }

    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

const KEYS: [&[u8]; 8] = [b"a", b"a\0", b"ab", b"b", b"ba", b"c", b"\xff", b"z"];
const VALUES: [&[u8]; 5] = [b"", b"x", b"y", b"xy", b"\0"];

/// The generator: requests over a few keys that sort next to each other,
/// revisions around the interesting ones, and every flag.
struct Gen<'a, 'm> {
    src: Src<'a>,
    model: &'m Model,
}

impl Gen<'_, '_> {
    fn key(&mut self) -> Vec<u8> {
        if self.src.one_in(40) {
            return Vec::new();
        }
        KEYS[self.src.below(KEYS.len() as u8) as usize].to_vec()
    }

    fn value(&mut self) -> Vec<u8> {
        VALUES[self.src.below(VALUES.len() as u8) as usize].to_vec()
    }

    fn range_end(&mut self, key: &[u8]) -> Vec<u8> {
        match self.src.below(8) {
            0..=2 => Vec::new(),
            3 => vec![0],
            4 => raftcd::mvcc::prefix_end(key).to_vec(),
            _ => KEYS[self.src.below(KEYS.len() as u8) as usize].to_vec(),
        }
    }

    fn revision(&mut self) -> i64 {
        let (rev, compacted) = (self.model.revision(), self.model.compact_revision());
        let b = i64::from(self.src.byte());
        match self.src.below(8) {
            0 => 0,
            1 => rev,
            2 => rev - b % 4,
            3 => compacted,
            4 => compacted - 1,
            5 => rev + 1,
            6 => -(b % 3) - 1,
            _ => b % (rev + 2),
        }
    }

    fn range(&mut self) -> RangeRequest {
        let key = self.key();
        let range_end = self.range_end(&key);
        let limit = match self.src.below(8) {
            0 => 1,
            1 => 2,
            2 => -1,
            3 => 3,
            _ => 0,
        };
        let revision = if self.src.one_in(2) {
            0
        } else {
            self.revision()
        };
        let sort_order = match self.src.below(6) {
            0 => SortOrder::Ascend,
            1 => SortOrder::Descend,
            _ => SortOrder::None,
        } as i32;
        let flags = self.src.byte();
        let filter = |on: bool, g: &mut Self| if on { g.revision() } else { 0 };
        RangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            limit,
            revision,
            sort_order,
            keys_only: flags & 1 != 0,
            count_only: flags & 2 != 0 && flags & 4 != 0,
            serializable: flags & 8 != 0,
            min_mod_revision: filter(flags & 0x30 == 0x10, self),
            max_mod_revision: filter(flags & 0x30 == 0x20, self),
            min_create_revision: filter(flags & 0xc0 == 0x40, self),
            max_create_revision: filter(flags & 0xc0 == 0x80, self),
            ..Default::default()
        }
    }

    fn put(&mut self) -> PutRequest {
        let key = self.key();
        let value = self.value();
        let flags = self.src.byte();
        let ignore_value = flags & 0x7 == 1;
        let ignore_lease = flags & 0x38 == 0x8;
        PutRequest {
            key: key.into(),
            // With ignore_value the value must be empty; now and then not.
            value: if ignore_value && flags & 0x40 == 0 {
                Vec::new().into()
            } else {
                value.into()
            },
            // The model has no leases: lease 7 is never granted. It checks
            // that ignore_lease comes without one, and which error an
            // unknown lease gets when the key is missing too.
            lease: if flags & 0xc0 == 0xc0 { 7 } else { 0 },
            prev_kv: self.src.one_in(2),
            ignore_value,
            ignore_lease,
        }
    }

    fn delete(&mut self) -> DeleteRangeRequest {
        let key = self.key();
        DeleteRangeRequest {
            range_end: self.range_end(&key).into(),
            key: key.into(),
            prev_kv: self.src.one_in(2),
        }
    }

    fn number(&mut self) -> i64 {
        match self.src.below(4) {
            0 => 0,
            1 => 1,
            2 => 2,
            _ => self.revision(),
        }
    }

    fn compare(&mut self) -> Compare {
        let key = self.key();
        let range_end = if self.src.one_in(4) {
            self.range_end(&key)
        } else {
            Vec::new()
        };
        let target = match self.src.below(5) {
            0 => CompareTarget::Version,
            1 => CompareTarget::Create,
            2 => CompareTarget::Mod,
            3 => CompareTarget::Value,
            _ => CompareTarget::Lease,
        };
        let result = match self.src.below(4) {
            0 => CompareResult::Equal,
            1 => CompareResult::NotEqual,
            2 => CompareResult::Greater,
            _ => CompareResult::Less,
        };
        // Mostly the target's own kind of value; sometimes another kind,
        // or none.
        let kind = match self.src.below(8) {
            0 => 5,
            1 => self.src.below(5),
            _ => target as u8,
        };
        let target_union = match kind {
            0 => Some(TargetUnion::Version(self.number())),
            1 => Some(TargetUnion::CreateRevision(self.number())),
            2 => Some(TargetUnion::ModRevision(self.number())),
            3 => Some(TargetUnion::Value(self.value().into())),
            4 => Some(TargetUnion::Lease(self.number() % 2)),
            _ => None,
        };
        Compare {
            result: result as i32,
            target: target as i32,
            key: key.into(),
            range_end: range_end.into(),
            target_union,
        }
    }

    fn ops(&mut self, depth: u8) -> Vec<RequestOp> {
        let n = self.src.below(4);
        (0..n)
            .map(|_| {
                let request = match self.src.below(16) {
                    0..=4 => Some(Op::RequestPut(self.put())),
                    5..=8 => Some(Op::RequestDeleteRange(self.delete())),
                    9..=13 => Some(Op::RequestRange(self.range())),
                    14 if depth < 2 => Some(Op::RequestTxn(self.txn(depth + 1))),
                    14 => Some(Op::RequestRange(self.range())),
                    _ if self.src.one_in(4) => None,
                    _ => Some(Op::RequestPut(self.put())),
                };
                RequestOp { request }
            })
            .collect()
    }

    fn txn(&mut self, depth: u8) -> TxnRequest {
        let n = self.src.below(4);
        TxnRequest {
            compare: (0..n).map(|_| self.compare()).collect(),
            success: self.ops(depth),
            failure: self.ops(depth),
        }
    }

    fn compact(&mut self) -> CompactionRequest {
        CompactionRequest {
            revision: self.revision(),
            physical: self.src.one_in(2),
        }
    }

    fn write(&mut self) -> Request {
        match self.src.below(8) {
            0..=2 => Request::Put(self.put()),
            3 => Request::DeleteRange(self.delete()),
            4..=6 => Request::Txn(self.txn(0)),
            _ => Request::Compact(self.compact()),
        }
    }

    fn step(&mut self) -> Step {
        Step::One(match self.src.below(16) {
            0..=4 => Request::Put(self.put()),
            5..=6 => Request::DeleteRange(self.delete()),
            7..=10 => Request::Txn(self.txn(0)),
            11..=13 => Request::Range(self.range()),
            14 => Request::Compact(self.compact()),
            _ => {
                let n = 2 + self.src.below(3);
                return Step::Batch((0..n).map(|_| self.write()).collect());
            }
        })
    }
}

/// Read up to `max_steps` steps from `data`, apply each to raftcd and the
/// model, and compare throughout. Returns the number of steps run.
pub fn run(data: &[u8], max_steps: usize) -> Result<usize, String> {
    let mut pair = Pair::new();
    let mut src = Src { data, at: 0 };
    let mut n = 0;
    while n < max_steps && !src.done() {
        let step = {
            let mut g = Gen {
                src,
                model: &pair.model,
            };
            let step = g.step();
            src = g.src;
            step
        };
        pair.step(&step)?;
        n += 1;
    }
    pair.finish()?;
    Ok(n)
}
