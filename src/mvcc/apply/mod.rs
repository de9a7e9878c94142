//! Executing committed commands against the store.
//!
//! [`Applier`] changes a [`View`] for one command. A put, and a txn that
//! can fail only before its first change, change the view in place; any
//! other command changes a copy that replaces the view if it succeeds, so a
//! rejected command changes nothing ([`apply_in`]). All writes of one
//! command share one main revision and get increasing sub revisions, as in
//! etcd.
//!
//! Lease commands live here too: a put attaches its key to its lease (and
//! detaches it from the one its previous revision had), a delete detaches,
//! and revoking a lease deletes every attached key in one revision, with a
//! DELETE event for each, before dropping the lease.

use bytes::Bytes;

use super::command::{ClientOp, Command, LeaseRefresh, MvccError, Proposal, ProposalReply, Reply};
use super::lease::{Lease, MAX_LEASE_TTL};

use super::key::IndexKey;
use super::view::{latest_live, ReadView, Rev, View};

mod txn;
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantResponse, LeaseRevokeResponse, PutRequest, PutResponse, ResponseHeader, TxnRequest,
};
use crate::pb::mvccpb::{event::EventType, Event, KeyValue};
use txn::txn_in_place;

/// The outcome of applying one command (`R` = [`Reply`]) or one Raft entry's
/// [`Proposal`] (`R` = [`ProposalReply`]).
pub struct Applied<R = Reply> {
    pub reply: R,
    /// The new view to publish (unchanged on error).
    pub view: View,
    /// Watch events, in revision order.
    pub events: Vec<Event>,
}

/// Apply `cmd` to `view`. Never fails as a whole: request errors come back
/// as `Reply::Error` with the view unchanged.
pub fn apply(view: &View, cmd: &Command) -> Applied {
    let mut view = view.clone();
    let (reply, events) = apply_in(&mut view, cmd);
    Applied {
        reply,
        view,
        events,
    }
}

fn reply_is_error(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(_))
}

/// Apply `cmd` to `base`'s copy `next` (which starts equal to `base`).
/// On error `next` is left half-changed: the caller drops it.
fn apply_on_copy(base: &View, next: &mut View, cmd: &Command) -> (Reply, Vec<Event>) {
    if matches!(cmd, Command::Auth { .. } | Command::Authenticate { .. }) {
        let (reply, auth) = super::auth::apply_auth(base, cmd);
        if let Some(auth) = auth {
            next.auth = std::sync::Arc::new(auth);
        }
        return (reply, Vec::new());
    }
    let mut a = Applier::new(next, Some(base));
    let result = match cmd {
        Command::Put(req) => a.put(req).map(Reply::Put),
        Command::DeleteRange(req) => a.delete_range(req).map(Reply::DeleteRange),
        Command::Txn(req) => a.txn_top(req).map(Reply::Txn),
        Command::Compact(req) => a.compact(req).map(Reply::Compact),
        Command::LeaseGrant {
            id,
            ttl,
            granted_ms,
        } => a.lease_grant(*id, *ttl, *granted_ms).map(Reply::LeaseGrant),
        Command::LeaseRevoke { id } => a.lease_revoke(*id).map(Reply::LeaseRevoke),
        Command::LeaseCheckpoint { refreshes } => {
            Ok(Reply::LeaseCheckpoint(a.lease_checkpoint(refreshes)))
        }
        Command::Reserved(n) => match *n {},
        Command::Auth { .. } | Command::Authenticate { .. } => Ok(Reply::None),
        Command::As { caller, op } => match super::auth::check_op(base, Some(caller), op) {
            Err(e) => Err(MvccError::Auth(e)),
            Ok(()) => match op {
                ClientOp::Put(req) => a.put(req).map(Reply::Put),
                ClientOp::DeleteRange(req) => a.delete_range(req).map(Reply::DeleteRange),
                ClientOp::Txn(req) => a.txn_top(req).map(Reply::Txn),
                ClientOp::LeaseRevoke { id } => a.lease_revoke(*id).map(Reply::LeaseRevoke),
            },
        },
    };
    a.outcome(result)
}

/// Apply `cmd` to `view` itself. A put, and a txn that cannot fail after
/// its first change ([`txn_in_place`]), change `view` in place: nothing is
/// copied, and a node of the map that no reader shares is changed where it
/// is. Any other command is applied to a copy that replaces `view` if it
/// succeeds (it may fail half-way and must then change nothing).
pub fn apply_in(view: &mut View, cmd: &Command) -> (Reply, Vec<Event>) {
    match in_place(cmd) {
        Some(op) => apply_in_place(view, cmd, op),
        None => {
            let mut next = view.clone();
            let (reply, events) = apply_on_copy(view, &mut next, cmd);
            if !reply_is_error(&reply) {
                *view = next;
            }
            (reply, events)
        }
    }
}

/// [`apply_in`] on the view readers share. A command applied in place is
/// applied under the view's lock ([`ReadView::update`]); any other one (a
/// compaction, a lease revoke, a large delete may take long) on a snapshot,
/// outside it, so readers never wait for more than one put or txn.
fn apply_shared(view: &ReadView, cmd: &Command) -> (Reply, Vec<Event>) {
    if let Some(op) = in_place(cmd) {
        return view.update(|v| apply_in_place(v, cmd, op));
    }
    // The state machine is the only writer: nothing changes the view
    // between this snapshot and the store.
    let base = view.load();
    let applied = apply(&base, cmd);
    if !reply_is_error(&applied.reply) {
        view.store(std::sync::Arc::new(applied.view));
    }
    (applied.reply, applied.events)
}

/// What of `cmd` [`apply_in`] applies in place, if it does.
fn in_place(cmd: &Command) -> Option<InPlace<'_>> {
    match cmd {
        Command::Put(req)
        | Command::As {
            op: ClientOp::Put(req),
            ..
        } => Some(InPlace::Put(req)),
        Command::Txn(req)
        | Command::As {
            op: ClientOp::Txn(req),
            ..
        } if txn_in_place(req) => Some(InPlace::Txn(req)),
        _ => None,
    }
}

/// `cmd`'s `op` applied to `view` itself; it fails, if at all, before its
/// first change.
fn apply_in_place(view: &mut View, cmd: &Command, op: InPlace<'_>) -> (Reply, Vec<Event>) {
    if let Command::As { caller, op } = cmd {
        if let Err(e) = super::auth::check_op(view, Some(caller), op) {
            return (Reply::Error(MvccError::Auth(e)), Vec::new());
        }
    }
    let mut a = Applier::new(view, None);
    let result = match op {
        InPlace::Put(req) => a.put(req).map(Reply::Put),
        InPlace::Txn(req) => a.txn_top(req).map(Reply::Txn),
    };
    a.outcome(result)
}

/// The commands [`apply_in`] applies in place.
enum InPlace<'c> {
    Put(&'c PutRequest),
    Txn(&'c TxnRequest),
}

/// Apply a Raft entry's proposal: each command in order, each on its own
/// with its own revision, as if proposed separately.
pub fn apply_proposal(view: &View, proposal: &Proposal) -> Applied<ProposalReply> {
    let mut view = view.clone();
    let (reply, events) = apply_proposal_with(proposal, |cmd| apply_in(&mut view, cmd));
    Applied {
        reply,
        view,
        events,
    }
}

/// [`apply_proposal`] on the view readers share, one command at a time
/// (see [`apply_shared`]).
pub fn apply_proposal_to(view: &ReadView, proposal: &Proposal) -> (ProposalReply, Vec<Event>) {
    apply_proposal_with(proposal, |cmd| apply_shared(view, cmd))
}

fn apply_proposal_with(
    proposal: &Proposal,
    mut apply: impl FnMut(&Command) -> (Reply, Vec<Event>),
) -> (ProposalReply, Vec<Event>) {
    match proposal {
        Proposal::One(cmd) => {
            let (reply, events) = apply(cmd);
            (ProposalReply::One(reply), events)
        }
        Proposal::Batch(cmds) => {
            let mut events = Vec::new();
            let mut replies = Vec::with_capacity(cmds.len());
            for c in cmds {
                let (reply, mut e) = apply(c);
                if events.is_empty() {
                    events = e;
                } else {
                    events.append(&mut e);
                }
                replies.push(reply);
            }
            (ProposalReply::Batch(replies), events)
        }
    }
}

struct Applier<'a> {
    /// The view before this command (txn compares are evaluated against
    /// it); `None` when applied in place, where `view` is it until the
    /// first change.
    base: Option<&'a View>,
    /// `base`'s revision.
    base_revision: i64,
    view: &'a mut View,
    /// The revision writes of this command get.
    write_rev: i64,
    next_sub: u32,
    events: Vec<Event>,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

impl<'a> Applier<'a> {
    fn new(view: &'a mut View, base: Option<&'a View>) -> Self {
        let base_revision = view.revision;
        Self {
            base,
            base_revision,
            write_rev: base_revision + 1,
            view,
            next_sub: 0,
            events: Vec::new(),
        }
    }

    /// The state before this command.
    fn base(&self) -> &View {
        match self.base {
            Some(b) => b,
            None => self.view,
        }
    }

    fn changed(&self) -> bool {
        self.next_sub > 0
    }

    /// The revision a response reports: the new one once something changed.
    fn current_rev(&self) -> i64 {
        if self.changed() {
            self.write_rev
        } else {
            self.base_revision
        }
    }

    /// The reply and events of a command that ended with `result`: on
    /// success the view takes the command's revision; on error there are
    /// no events (the caller keeps or drops the view).
    fn outcome(self, result: Result<Reply, MvccError>) -> (Reply, Vec<Event>) {
        match result {
            Ok(reply) => {
                if self.changed() {
                    self.view.revision = self.write_rev;
                }
                (reply, self.events)
            }
            Err(e) => (Reply::Error(e), Vec::new()),
        }
    }

    fn latest_live(&self, key: &[u8]) -> Option<Rev> {
        self.view.history(key).and_then(latest_live).cloned()
    }

    fn write(&mut self, key: IndexKey, rev: Rev) {
        self.view.push_revision(key, rev);
        // Later reads in the same txn see this write, as in etcd.
        self.view.revision = self.write_rev;
    }

    fn check_lease(&self, lease: i64) -> Result<(), MvccError> {
        if lease != 0 && !self.view.leases.contains_key(&lease) {
            return Err(MvccError::LeaseNotFound);
        }
        Ok(())
    }

    fn put(&mut self, req: &PutRequest) -> Result<PutResponse, MvccError> {
        // etcd looks the lease up before the key (a txn's puts were checked
        // in its order, key first, by `check_path`).
        if !req.ignore_lease {
            self.check_lease(req.lease)?;
        }
        // One lookup: the key as the store holds it (to share its
        // allocation; a new key gets its own copy, never a slice of the
        // request's buffer, which it would pin) and its live revision.
        let probe = IndexKey::probe(&req.key);
        let (key, prev) = match self.view.index.get_key_value(&probe) {
            Some((k, h)) => (k.clone(), latest_live(h).cloned()),
            None => (probe, None),
        };
        let value = if req.ignore_value {
            prev.as_ref()
                .and_then(|p| p.value.clone())
                .ok_or(MvccError::KeyNotFound)?
        } else {
            // Its own copy: a slice of the request's buffer would pin it.
            Bytes::copy_from_slice(&req.value)
        };
        let lease = if req.ignore_lease {
            prev.as_ref()
                .map(|p| p.lease)
                .ok_or(MvccError::KeyNotFound)?
        } else {
            req.lease
        };
        let sub = self.next_sub;
        self.next_sub += 1;
        let rev = Rev {
            main: self.write_rev,
            sub,
            create: prev.as_ref().map_or(self.write_rev, |p| p.create),
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
            value: Some(value),
        };
        if let Some(p) = &prev {
            if p.lease != lease {
                self.view.detach_key(p.lease, key.bytes());
            }
        }
        self.view.attach_key(lease, key.bytes());
        let prev_kv = prev.as_ref().map(|p| p.to_kv(key.bytes()));
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(rev.to_kv(key.bytes())),
            prev_kv: prev_kv.clone(),
        });
        self.write(key, rev);
        Ok(PutResponse {
            header: header(self.write_rev),
            prev_kv: if req.prev_kv { prev_kv } else { None },
        })
    }

    fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, MvccError> {
        let victims: Vec<(Bytes, Rev)> = self
            .view
            .histories(&req.key, &req.range_end)
            .filter_map(|(k, h)| latest_live(h).map(|r| (k.clone(), r.clone())))
            .collect();
        let mut prev_kvs = Vec::new();
        for (key, prev) in &victims {
            let prev_kv = self.delete_key(key, prev);
            if req.prev_kv {
                prev_kvs.push(prev_kv);
            }
        }
        Ok(DeleteRangeResponse {
            header: header(self.current_rev()),
            deleted: victims.len() as i64,
            prev_kvs,
        })
    }

    /// Delete one live key at this command's revision: a tombstone, a
    /// DELETE event, and the key leaves its lease. Returns the previous kv.
    fn delete_key(&mut self, key: &Bytes, prev: &Rev) -> KeyValue {
        let sub = self.next_sub;
        self.next_sub += 1;
        let tomb = Rev {
            main: self.write_rev,
            sub,
            create: 0,
            version: 0,
            lease: 0,
            value: None,
        };
        let prev_kv = prev.to_kv(key);
        self.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: key.clone(),
                mod_revision: self.write_rev,
                ..Default::default()
            }),
            prev_kv: Some(prev_kv.clone()),
        });
        self.view.detach_key(prev.lease, key);
        self.write(IndexKey::new(key.clone()), tomb);
        prev_kv
    }

    fn lease_grant(
        &mut self,
        id: i64,
        ttl: i64,
        granted_ms: i64,
    ) -> Result<LeaseGrantResponse, MvccError> {
        if id == 0 {
            return Err(MvccError::LeaseNotFound);
        }
        if ttl > MAX_LEASE_TTL {
            return Err(MvccError::LeaseTtlTooLarge);
        }
        if self.view.leases.contains_key(&id) {
            return Err(MvccError::LeaseExists);
        }
        let lease = Lease::new(ttl, granted_ms);
        self.view.leases.insert(id, lease);
        Ok(LeaseGrantResponse {
            header: header(self.current_rev()),
            id,
            ttl,
            error: String::new(),
        })
    }

    fn lease_revoke(&mut self, id: i64) -> Result<LeaseRevokeResponse, MvccError> {
        let lease = self
            .view
            .leases
            .get(&id)
            .cloned()
            .ok_or(MvccError::LeaseNotFound)?;
        for key in lease.keys.iter() {
            if let Some(prev) = self.latest_live(key) {
                self.delete_key(key, &prev);
            }
        }
        self.view.leases.remove(&id);
        Ok(LeaseRevokeResponse {
            header: header(self.current_rev()),
        })
    }

    /// Record refreshes of the leases that still exist; unknown ids (revoked
    /// meanwhile) are skipped. Returns how many were recorded.
    fn lease_checkpoint(&mut self, refreshes: &[LeaseRefresh]) -> usize {
        let mut n = 0;
        for r in refreshes {
            let Some(l) = self.view.leases.get_mut(&r.id) else {
                continue;
            };
            if r.refreshed_ms <= l.refreshed_ms {
                continue;
            }
            l.refreshed_ms = r.refreshed_ms;
            n += 1;
        }
        n
    }

    fn compact(&mut self, req: &CompactionRequest) -> Result<CompactionResponse, MvccError> {
        let rev = req.revision;
        if rev <= self.view.compact_revision {
            return Err(MvccError::Compacted);
        }
        if rev > self.view.revision {
            return Err(MvccError::FutureRevision);
        }
        self.view.compact_index(rev);
        self.view.compact_revision = rev;
        Ok(CompactionResponse {
            header: header(self.view.revision),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
    use crate::pb::etcdserverpb::request_op::Request;
    use crate::pb::etcdserverpb::response_op::Response;
    use crate::pb::etcdserverpb::{Compare, RangeRequest, RangeResponse, RequestOp};

    fn put(v: &View, k: &str, val: &str) -> View {
        let a = apply(
            v,
            &Command::Put(PutRequest {
                key: k.to_string().into(),
                value: val.to_string().into(),
                ..Default::default()
            }),
        );
        assert!(!matches!(a.reply, Reply::Error(_)));
        a.view
    }

    fn get(v: &View, k: &str, rev: i64) -> Result<RangeResponse, MvccError> {
        v.range(
            &RangeRequest {
                key: k.to_string().into(),
                revision: rev,
                ..Default::default()
            },
            v.revision,
        )
    }

    #[test]
    fn a_stored_revision_keeps_no_part_of_the_request_buffer() {
        // A request decoded out of a larger buffer (as tonic decodes a
        // frame's messages): what the store keeps must not pin it.
        let frame = Bytes::from(vec![b'x'; 1 << 20]);
        let within = |b: &Bytes| frame.as_ptr_range().contains(&b.as_ptr());
        let req = |v: &View| {
            apply(
                v,
                &Command::Put(PutRequest {
                    key: frame.slice(0..8),
                    value: frame.slice(8..264),
                    ..Default::default()
                }),
            )
            .view
        };
        let first = req(&View::default());
        let second = req(&first);
        let (key, history) = second.index.iter().next().expect("one key");
        let key = key.bytes();
        assert_eq!((&key[..], history.len()), (&b"xxxxxxxx"[..], 2));
        assert!(!within(key), "the index key is a slice of the request");
        for rev in history.revs(&second.spill) {
            let rev = rev.unwrap();
            let value = rev.value.as_ref().expect("a value");
            assert_eq!(value.len(), 256);
            assert!(!within(value), "a stored value is a slice of the request");
        }
    }

    #[test]
    fn a_batch_applies_each_command_on_its_own_in_order() {
        let v = View::default();
        let cmd = |k: &str| {
            Command::Put(PutRequest {
                key: k.to_string().into(),
                value: "v".into(),
                ..Default::default()
            })
        };
        // Rejected by the store: no such lease.
        let bad = Command::LeaseRevoke { id: 99 };
        let batch = Proposal::Batch(vec![cmd("a"), bad, cmd("b")]);
        let a = apply_proposal(&v, &batch);
        let ProposalReply::Batch(replies) = &a.reply else {
            panic!("{:?}", a.reply)
        };
        let revs: Vec<_> = replies
            .iter()
            .map(|r| match r {
                Reply::Put(p) => p.header.as_ref().map_or(0, |h| h.revision),
                _ => -1,
            })
            .collect();
        assert_eq!(revs, [2, -1, 3]);
        assert_eq!((a.view.revision, a.events.len()), (3, 2));
        let one = apply_proposal(&v, &Proposal::One(cmd("a")));
        assert!(matches!(one.reply, ProposalReply::One(Reply::Put(_))));
        assert_eq!(one.view.revision, 2);
    }

    #[test]
    fn revisions_versions_and_history() {
        let v = View::default();
        let v = put(&v, "foo", "bar");
        let v = put(&v, "foo", "bar2");
        let v = put(&v, "foo2", "baz");
        assert_eq!(v.revision, 4);
        let r = get(&v, "foo", 0).unwrap();
        let kv = &r.kvs[0];
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        assert_eq!(&kv.value[..], b"bar2");
        assert_eq!(&get(&v, "foo", 2).unwrap().kvs[0].value[..], b"bar");
        assert!(get(&v, "foo", 1).unwrap().kvs.is_empty());
        assert_eq!(get(&v, "foo", 5), Err(MvccError::FutureRevision));

        let del = apply(
            &v,
            &Command::DeleteRange(DeleteRangeRequest {
                key: "foo".into(),
                range_end: "fop".into(),
                prev_kv: true,
            }),
        );
        let Reply::DeleteRange(d) = &del.reply else {
            panic!()
        };
        assert_eq!(d.deleted, 2);
        assert_eq!(d.prev_kvs.len(), 2);
        let v = put(&del.view, "foo", "again");
        let kv = &get(&v, "foo", 0).unwrap().kvs[0];
        assert_eq!((kv.create_revision, kv.version), (6, 1));

        let c = apply(
            &v,
            &Command::Compact(CompactionRequest {
                revision: 5,
                physical: true,
            }),
        );
        assert!(matches!(c.reply, Reply::Compact(_)));
        let v = c.view;
        assert_eq!(get(&v, "foo", 4), Err(MvccError::Compacted));
        assert!(get(&v, "foo", 5).unwrap().kvs.is_empty());
        // foo2 was deleted at 5: compacting at 5 drops its whole history.
        assert!(!v.index.contains_key(&b"foo2"[..]));
        let again = apply(
            &v,
            &Command::Compact(CompactionRequest {
                revision: 5,
                physical: false,
            }),
        );
        assert!(matches!(again.reply, Reply::Error(MvccError::Compacted)));
    }

    #[test]
    fn txn_compare_on_missing_key_and_rollback() {
        let v = View::default();
        let put_if_absent = |v: &View, val: &str| {
            apply(
                v,
                &Command::Txn(TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Create as i32,
                        key: "lock".into(),
                        range_end: Bytes::new(),
                        target_union: Some(TargetUnion::CreateRevision(0)),
                    }],
                    success: vec![RequestOp {
                        request: Some(Request::RequestPut(PutRequest {
                            key: "lock".into(),
                            value: val.to_string().into(),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![],
                }),
            )
        };
        let a = put_if_absent(&v, "me");
        let Reply::Txn(t) = &a.reply else { panic!() };
        assert!(t.succeeded);
        let b = put_if_absent(&a.view, "you");
        let Reply::Txn(t) = &b.reply else { panic!() };
        assert!(!t.succeeded);
        assert_eq!(b.view.revision, a.view.revision);

        // A value compare on a missing key fails, even NOT_EQUAL.
        let vc = Compare {
            result: CompareResult::NotEqual as i32,
            target: CompareTarget::Value as i32,
            key: "nokey".into(),
            range_end: Bytes::new(),
            target_union: Some(TargetUnion::Value("x".into())),
        };
        let mut copy = b.view.clone();
        let applier = Applier::new(&mut copy, Some(&b.view));
        assert!(!applier.compare(&vc).unwrap());

        // A failing op rolls back every write of the txn.
        let bad = apply(
            &b.view,
            &Command::Txn(TxnRequest {
                compare: vec![],
                success: vec![
                    RequestOp {
                        request: Some(Request::RequestPut(PutRequest {
                            key: "x".into(),
                            value: "1".into(),
                            ..Default::default()
                        })),
                    },
                    RequestOp {
                        request: Some(Request::RequestPut(PutRequest {
                            key: "y".into(),
                            value: "1".into(),
                            lease: 42,
                            ..Default::default()
                        })),
                    },
                ],
                failure: vec![],
            }),
        );
        assert!(matches!(bad.reply, Reply::Error(MvccError::LeaseNotFound)));
        assert!(!bad.view.index.contains_key(&b"x"[..]));
    }

    /// `apply_in` changes nothing on any failure, in place or on a copy:
    /// the lease check of a txn's put runs before its first write; a
    /// delete before a put that keeps the deleted key's value fails after
    /// a write (so that txn is applied on a copy).
    #[test]
    fn a_failed_command_changes_nothing_applied_in_place() {
        let op = |r: Request| RequestOp { request: Some(r) };
        let put_req = |k: &str, lease: i64, ignore_value: bool| {
            op(Request::RequestPut(PutRequest {
                key: k.to_string().into(),
                value: if ignore_value {
                    Bytes::new()
                } else {
                    "1".into()
                },
                lease,
                ignore_value,
                ..Default::default()
            }))
        };
        let txn = |success: Vec<RequestOp>| {
            Command::Txn(TxnRequest {
                compare: vec![],
                success,
                failure: vec![],
            })
        };
        let lease_late = txn(vec![put_req("x", 0, false), put_req("y", 42, false)]);
        let delete_then_keep = txn(vec![
            op(Request::RequestDeleteRange(DeleteRangeRequest {
                key: "k".into(),
                ..Default::default()
            })),
            put_req("k", 0, true),
        ]);
        let Command::Txn(t) = &lease_late else {
            unreachable!()
        };
        assert!(txn_in_place(t));
        let Command::Txn(t) = &delete_then_keep else {
            unreachable!()
        };
        assert!(!txn_in_place(t));
        let bad_put = Command::Put(PutRequest {
            key: "z".into(),
            value: "1".into(),
            lease: 7,
            ..Default::default()
        });
        let start = put(&View::default(), "k", "v");
        let want = start.revisions().unwrap();
        for (cmd, err) in [
            (lease_late, MvccError::LeaseNotFound),
            (delete_then_keep, MvccError::KeyNotFound),
            (bad_put, MvccError::LeaseNotFound),
        ] {
            let mut v = start.clone();
            let (reply, events) = apply_in(&mut v, &cmd);
            assert!(
                matches!(&reply, Reply::Error(e) if *e == err),
                "{cmd:?}: {reply:?}"
            );
            assert!(events.is_empty());
            assert_eq!(
                (v.revision, v.revisions().unwrap()),
                (start.revision, want.clone())
            );
        }
    }

    /// In place or on a copy (the path every other command takes), a
    /// command has the same outcome.
    #[test]
    fn applied_in_place_as_on_a_copy() {
        let op = |r: Request| RequestOp { request: Some(r) };
        let start = put(&put(&View::default(), "a", "1"), "b", "2");
        let cas = |rev: i64| {
            Command::Txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Mod as i32,
                    key: "a".into(),
                    range_end: Bytes::new(),
                    target_union: Some(TargetUnion::ModRevision(rev)),
                }],
                success: vec![
                    op(Request::RequestPut(PutRequest {
                        key: "a".into(),
                        value: "3".into(),
                        prev_kv: true,
                        ..Default::default()
                    })),
                    op(Request::RequestRange(RangeRequest {
                        key: "a".into(),
                        range_end: "c".into(),
                        ..Default::default()
                    })),
                    op(Request::RequestDeleteRange(DeleteRangeRequest {
                        key: "b".into(),
                        prev_kv: true,
                        ..Default::default()
                    })),
                ],
                failure: vec![op(Request::RequestRange(RangeRequest {
                    key: "a".into(),
                    ..Default::default()
                }))],
            })
        };
        for cmd in [
            cas(2),
            cas(1),
            Command::Put(PutRequest {
                key: "a".into(),
                value: "4".into(),
                prev_kv: true,
                ..Default::default()
            }),
        ] {
            let mut on_copy = start.clone();
            let (copy_reply, copy_events) = apply_on_copy(&start, &mut on_copy, &cmd);
            let mut v = start.clone();
            let (reply, events) = apply_in(&mut v, &cmd);
            // (replies have no `PartialEq`; their debug forms show every field)
            assert_eq!(format!("{reply:?}"), format!("{copy_reply:?}"));
            assert_eq!(events, copy_events);
            assert_eq!(v.revision, on_copy.revision);
            assert_eq!(v.revisions().unwrap(), on_copy.revisions().unwrap());
        }
    }

    #[test]
    fn txn_reads_see_earlier_writes_of_the_txn() {
        let v = put(&View::default(), "foo", "bar");
        let op = |r: Request| RequestOp { request: Some(r) };
        let a = apply(
            &v,
            &Command::Txn(TxnRequest {
                compare: vec![],
                success: vec![
                    op(Request::RequestPut(PutRequest {
                        key: "foo".into(),
                        value: "newval".into(),
                        ..Default::default()
                    })),
                    op(Request::RequestRange(RangeRequest {
                        key: "foo".into(),
                        ..Default::default()
                    })),
                ],
                failure: vec![],
            }),
        );
        let Reply::Txn(t) = &a.reply else {
            panic!("{:?}", a.reply)
        };
        let Some(Response::ResponseRange(r)) = &t.responses[1].response else {
            panic!()
        };
        assert_eq!(r.header.as_ref().map(|h| h.revision), Some(3));
        assert_eq!(&r.kvs[0].value[..], b"newval");
        assert_eq!((r.kvs[0].mod_revision, r.kvs[0].version), (3, 2));
    }
}

/// The store against a plain model: a full copy of the key space per
/// revision. Random puts, deletes, range deletes, compactions and reads at
/// random revisions must agree with the model.
#[cfg(test)]
mod model_tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::pb::etcdserverpb::RangeRequest;

    type State = BTreeMap<Vec<u8>, (Vec<u8>, i64, i64, i64)>; // value, create, mod, version

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn key(i: u64) -> Vec<u8> {
        format!("k{:02}", i).into_bytes()
    }

    #[test]
    fn store_matches_model_under_random_ops() {
        // Old revisions kept in memory, and spilled to files on disk.
        let dir = tempfile::tempdir().unwrap();
        let disk = crate::storage::spill::Spill::open(dir.path()).unwrap();
        let mut hashes = std::collections::BTreeMap::new();
        for (seed, on_disk) in (1..=20u64).flat_map(|s| [(s, false), (s, true)]) {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut view = View::default();
            if on_disk {
                view.spill = disk.fresh();
            }
            // history[r] = state at revision r (index 0 unused).
            let mut history: Vec<State> = vec![State::new(), State::new()];
            let mut compacted = -1i64;
            for step in 0..400 {
                let cur = history.last().cloned().unwrap_or_default();
                let rev = history.len() as i64; // the revision a write would get
                match rng.below(10) {
                    0..=4 => {
                        let k = key(rng.below(20));
                        let v = format!("v{step}").into_bytes();
                        let a = apply(
                            &view,
                            &Command::Put(PutRequest {
                                key: k.clone().into(),
                                value: v.clone().into(),
                                ..Default::default()
                            }),
                        );
                        assert!(matches!(a.reply, Reply::Put(_)));
                        view = a.view;
                        let mut next = cur.clone();
                        let (create, version) = match cur.get(&k) {
                            Some((_, c, _, ver)) => (*c, ver + 1),
                            None => (rev, 1),
                        };
                        next.insert(k, (v, create, rev, version));
                        history.push(next);
                    }
                    5 | 6 => {
                        let a = rng.below(20);
                        let b = a + rng.below(4);
                        let (start, end) = (key(a), if b == a { vec![] } else { key(b) });
                        let applied = apply(
                            &view,
                            &Command::DeleteRange(DeleteRangeRequest {
                                key: start.clone().into(),
                                range_end: end.clone().into(),
                                prev_kv: false,
                            }),
                        );
                        let Reply::DeleteRange(d) = &applied.reply else {
                            panic!("delete failed")
                        };
                        view = applied.view;
                        let mut next = cur.clone();
                        next.retain(|k, _| !super::super::view::in_range(k, &start, &end));
                        assert_eq!(d.deleted as usize, cur.len() - next.len());
                        if d.deleted > 0 {
                            history.push(next);
                        }
                    }
                    7 => {
                        let current = history.len() as i64 - 1;
                        let target = 1 + rng.below(current as u64) as i64;
                        let applied = apply(
                            &view,
                            &Command::Compact(CompactionRequest {
                                revision: target,
                                physical: false,
                            }),
                        );
                        if target <= compacted {
                            assert!(matches!(applied.reply, Reply::Error(MvccError::Compacted)));
                        } else {
                            assert!(matches!(applied.reply, Reply::Compact(_)));
                            compacted = target;
                            view = applied.view;
                        }
                    }
                    _ => {}
                }
                assert_eq!(
                    view.revision,
                    history.len() as i64 - 1,
                    "seed {seed} step {step}"
                );
                // Read everything at a random revision and compare.
                let current = history.len() as i64 - 1;
                let at = 1 + rng.below(current as u64) as i64;
                let resp = view.range(
                    &RangeRequest {
                        key: vec![0u8].into(),
                        range_end: vec![0u8].into(),
                        revision: at,
                        ..Default::default()
                    },
                    view.revision,
                );
                if at < compacted {
                    assert_eq!(resp, Err(MvccError::Compacted));
                    continue;
                }
                let resp = resp.unwrap_or_else(|e| panic!("seed {seed} step {step}: {e}"));
                let got: State = resp
                    .kvs
                    .iter()
                    .map(|kv| {
                        (
                            kv.key.to_vec(),
                            (
                                kv.value.to_vec(),
                                kv.create_revision,
                                kv.mod_revision,
                                kv.version,
                            ),
                        )
                    })
                    .collect();
                assert_eq!(
                    got, history[at as usize],
                    "seed {seed} step {step} rev {at}"
                );
                assert_eq!(resp.count as usize, got.len());
            }
            // Both ways of keeping old revisions hash alike, and the
            // snapshot of a spilled store reads back whole.
            let hash = view.hash_kv(0).unwrap();
            assert_eq!(*hashes.entry(seed).or_insert(hash), hash, "seed {seed}");
            let body = crate::mvcc::record::encode_view(&view).unwrap();
            let back = crate::mvcc::record::SnapshotBody::decode(&body).unwrap();
            let back = back.into_view_in(disk.fresh());
            assert_eq!(back.revisions().unwrap(), view.revisions().unwrap());
            assert_eq!(back.hash_kv(0).unwrap(), hash);
        }
        // Segment files go with the last view that names them.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
