//! The auth store's side of the state machine: applying auth changes and
//! `Authenticate`, and checking a client request's keys against the
//! caller's permissions, as etcd 3.4's `authApplierV3` does
//! (`etcdserver/apply_auth.go`). The same checks run before proposing
//! (`server::auth`), so a refusal usually comes early; here they run again
//! on the state the request is applied to.

use super::command::{ClientOp, Command, MvccError, Reply};
use super::view::View;
use crate::auth::{Access, AuthError, AuthState, Caller};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest};

/// Apply [`Command::Auth`] or [`Command::Authenticate`] to `view`: the
/// reply, and the new auth store if it changed (other commands are not
/// auth's: [`Reply::None`]).
pub fn apply_auth(view: &View, cmd: &Command) -> (Reply, Option<AuthState>) {
    let result = match cmd {
        Command::Auth { caller, change } => {
            let mut auth = (*view.auth).clone();
            view.auth
                .check_admin(caller.as_ref().map(|c| c.user.as_str()))
                .and_then(|()| auth.apply(change))
                .map(|()| (Some(auth), Reply::Auth))
        }
        Command::Authenticate {
            name,
            prefix,
            checked_revision,
            ..
        } => authenticate(view, name, *checked_revision).map(|()| {
            let token = prefix.clone();
            (None, Reply::Authenticated { token })
        }),
        _ => Ok((None, Reply::None)),
    };
    match result {
        Ok((auth, reply)) => (reply, auth),
        Err(e) => (Reply::Error(MvccError::Auth(e)), None),
    }
}

/// etcd's `Authenticate` at apply: the password was checked before
/// proposing, at `checked_revision`.
fn authenticate(view: &View, name: &str, checked_revision: u64) -> Result<(), AuthError> {
    let auth = &view.auth;
    if !auth.enabled {
        return Err(AuthError::AuthNotEnabled);
    }
    match auth.users.get(name) {
        Some(u) if u.password.is_some() => {}
        _ => return Err(AuthError::AuthFailed),
    }
    if auth.revision != checked_revision {
        return Err(AuthError::AuthOldRevision);
    }
    Ok(())
}

/// Check a client request of `caller` against the auth store and the
/// lease table of `view`.
pub fn check_op(view: &View, caller: Option<&Caller>, op: &ClientOp) -> Result<(), AuthError> {
    match op {
        ClientOp::Put(r) => check_put(view, caller, r),
        ClientOp::DeleteRange(r) => check_delete(view, caller, r),
        ClientOp::Txn(t) => check_txn(view, caller, t),
        ClientOp::LeaseRevoke { id } => check_lease_keys(view, caller, *id),
    }
}

/// Range: read permission on the range.
pub fn check_range(
    view: &View,
    caller: Option<&Caller>,
    r: &RangeRequest,
) -> Result<(), AuthError> {
    view.auth
        .check_keys(caller, &r.key, &r.range_end, Access::Read)
}

/// Put: write permission on the key, on every key already attached to its
/// lease (etcd: a user who could not revoke the lease may not attach to
/// it), and read permission for `prev_kv`.
pub fn check_put(view: &View, caller: Option<&Caller>, r: &PutRequest) -> Result<(), AuthError> {
    let auth = &view.auth;
    auth.check_keys(caller, &r.key, &[], Access::Write)?;
    check_lease_keys(view, caller, r.lease)?;
    if r.prev_kv {
        auth.check_keys(caller, &r.key, &[], Access::Read)?;
    }
    Ok(())
}

/// DeleteRange: read permission for `prev_kv`, write permission on the range.
pub fn check_delete(
    view: &View,
    caller: Option<&Caller>,
    r: &DeleteRangeRequest,
) -> Result<(), AuthError> {
    let auth = &view.auth;
    if r.prev_kv {
        auth.check_keys(caller, &r.key, &r.range_end, Access::Read)?;
    }
    auth.check_keys(caller, &r.key, &r.range_end, Access::Write)
}

/// Txn: read permission on every compared range, and every operation of
/// both branches, whichever runs (nested txns too).
pub fn check_txn(view: &View, caller: Option<&Caller>, t: &TxnRequest) -> Result<(), AuthError> {
    if !view.auth.enabled {
        return Ok(());
    }
    for c in &t.compare {
        view.auth
            .check_keys(caller, &c.key, &c.range_end, Access::Read)?;
    }
    for op in t.success.iter().chain(t.failure.iter()) {
        match &op.request {
            Some(Request::RequestRange(r)) => check_range(view, caller, r)?,
            // etcd 3.4 checks only the put's key in a txn.
            Some(Request::RequestPut(r)) => {
                view.auth.check_keys(caller, &r.key, &[], Access::Write)?
            }
            Some(Request::RequestDeleteRange(r)) => check_delete(view, caller, r)?,
            Some(Request::RequestTxn(inner)) => check_txn(view, caller, inner)?,
            None => {}
        }
    }
    Ok(())
}

/// Write permission on every key attached to lease `id` (etcd's
/// `checkLeasePuts`; LeaseRevoke deletes them all).
pub fn check_lease_keys(view: &View, caller: Option<&Caller>, id: i64) -> Result<(), AuthError> {
    if id == 0 || !view.auth.enabled {
        return Ok(());
    }
    if let Some(lease) = view.leases.get(&id) {
        for key in lease.keys.iter() {
            view.auth.check_keys(caller, key, &[], Access::Write)?;
        }
    }
    Ok(())
}
