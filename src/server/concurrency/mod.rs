//! etcd's Lock and Election services (etcd 3.4's `v3lock` and `v3election`,
//! which run clientv3's `concurrency` package inside the server), over this
//! member's own Txn, Range, DeleteRange, LeaseGrant and watch hub.
//!
//! * A lock or a candidacy is a key `NAME/LEASE` (the lease id in hex, as
//!   Go's `%x` writes it) bound to the caller's lease; a caller giving lease
//!   0 gets a new lease of [`SESSION_TTL`] seconds that nobody keeps alive,
//!   as etcd's server does.
//! * Waiters are ordered by create revision: a waiter waits for the
//!   deletion of the key with the greatest create revision below its own,
//!   then looks again (etcd's `waitDeletes`), so each deletion wakes one
//!   waiter only.
//! * A waiter whose own key goes (its lease revoked or expired, the key
//!   deleted) stops waiting with [`ApiError::SessionExpired`].
//! * A waiting Lock or Campaign whose client goes away deletes (resigns)
//!   its key, as etcd does when the request's context ends.

use std::convert::Infallible;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::auth::Principal;
use super::Server;
use crate::error::ApiError;
use crate::mvcc::prefix_end;
use crate::pb::etcdserverpb::range_request::SortOrder;
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, RequestOp, ResponseHeader, TxnRequest,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::KeyValue;
use crate::pb::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use crate::pb::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

mod requests;
use requests::{
    by_create, created_at, delete, get, header_of, key_prefix, lease_key, op, range_at,
};

/// The TTL of the lease granted for a Lock or Campaign given lease 0
/// (clientv3 concurrency's `defaultSessionTTL`).
pub const SESSION_TTL: i64 = 60;

/// Leader responses an Observe stream may have queued for a slow client.
const OBSERVE_QUEUE_LEN: usize = 16;

/// A txn run when dropped armed: cleans up after a waiting Lock or
/// Campaign whose client went away (its future is dropped mid-wait).
struct Cleanup {
    server: Server,
    txn: Option<TxnRequest>,
}

impl Cleanup {
    fn new(server: &Server, txn: TxnRequest) -> Self {
        Cleanup {
            server: server.clone(),
            txn: Some(txn),
        }
    }

    /// Run the txn now.
    async fn run(mut self) {
        if let Some(txn) = self.txn.take() {
            if let Err(e) = self.server.txn(txn).await {
                tracing::warn!(error = %e, "cleaning up a lock or election key failed");
            }
        }
    }

    fn disarm(mut self) {
        self.txn = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(txn) = self.txn.take() else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let server = self.server.clone();
        rt.spawn(async move {
            if let Err(e) = server.txn(txn).await {
                tracing::warn!(error = %e, "cleaning up after a canceled wait failed");
            }
        });
    }
}

impl Server {
    /// The lease a lock or candidacy is bound to: `lease`, or a new one of
    /// [`SESSION_TTL`] seconds for 0 (etcd's server opens a session).
    async fn session_lease(&self, who: &Principal, lease: i64) -> Result<i64, ApiError> {
        if lease != 0 {
            return Ok(lease);
        }
        let granted = self
            .lease_grant_as(
                who,
                LeaseGrantRequest {
                    ttl: SESSION_TTL,
                    id: 0,
                },
            )
            .await?;
        Ok(granted.id)
    }

    /// Lock: create `name/LEASE` unless it exists, then wait until no key
    /// under `name/` was created before it. Answers the key.
    pub async fn lock(&self, who: &Principal, r: LockRequest) -> Result<LockResponse, ApiError> {
        let lease = self.session_lease(who, r.lease).await?;
        let prefix = key_prefix(&r.name);
        let key = lease_key(&prefix, lease);
        let owner = op(Op::RequestRange(by_create(&prefix, SortOrder::Ascend, 0)));
        let resp = self
            .txn_as(
                who,
                TxnRequest {
                    compare: vec![created_at(&key, 0)],
                    success: vec![
                        RequestOp::put(key.clone(), Bytes::new(), lease),
                        owner.clone(),
                    ],
                    failure: vec![op(Op::RequestRange(get(&key))), owner],
                },
            )
            .await?;
        let header = header_of(&resp);
        let my_rev = if resp.succeeded {
            header.revision
        } else {
            // The lease already holds (or waits for) this lock: reuse its key.
            range_at(&resp, 0)?
                .kvs
                .first()
                .map(|kv| kv.create_revision)
                .ok_or_else(|| ApiError::Internal("lock key vanished".into()))?
        };
        let first = range_at(&resp, 1)?.kvs.first().map(|kv| kv.create_revision);
        if first.is_none_or(|rev| rev == my_rev) {
            return Ok(LockResponse {
                header: Some(header),
                key,
            });
        }
        let unlock = Cleanup::new(
            self,
            TxnRequest {
                success: vec![delete(&key)],
                ..Default::default()
            },
        );
        match self.wait_deletes(&prefix, &key, my_rev - 1).await {
            Ok(header) => {
                unlock.disarm();
                Ok(LockResponse {
                    header: Some(header),
                    key,
                })
            }
            Err(e) => {
                // etcd releases the key of a failed wait.
                unlock.run().await;
                Err(e)
            }
        }
    }

    /// Unlock: delete the key Lock answered.
    pub async fn unlock(
        &self,
        who: &Principal,
        r: UnlockRequest,
    ) -> Result<UnlockResponse, ApiError> {
        let resp = self
            .delete_range_as(
                who,
                DeleteRangeRequest {
                    key: r.key,
                    ..Default::default()
                },
            )
            .await?;
        Ok(UnlockResponse {
            header: resp.header,
        })
    }

    /// Campaign: create `name/LEASE` with `value` (or take over the lease's
    /// existing key, proclaiming `value` if it differs), then wait until no
    /// key under `name/` was created before it.
    pub async fn campaign(
        &self,
        who: &Principal,
        r: CampaignRequest,
    ) -> Result<CampaignResponse, ApiError> {
        let lease = self.session_lease(who, r.lease).await?;
        let prefix = key_prefix(&r.name);
        let key = lease_key(&prefix, lease);
        let resp = self
            .txn_as(
                who,
                TxnRequest {
                    compare: vec![created_at(&key, 0)],
                    success: vec![RequestOp::put(key.clone(), r.value.clone(), lease)],
                    failure: vec![op(Op::RequestRange(get(&key)))],
                },
            )
            .await?;
        let header = header_of(&resp);
        let mut rev = header.revision;
        let leader = |rev| LeaderKey {
            name: r.name.clone(),
            key: key.clone(),
            rev,
            lease,
        };
        if !resp.succeeded {
            let kv = range_at(&resp, 0)?
                .kvs
                .first()
                .ok_or_else(|| ApiError::Internal("candidate key vanished".into()))?;
            rev = kv.create_revision;
            if kv.value != r.value {
                if let Err(e) = self.proclaim_as(who, &leader(rev), r.value.clone()).await {
                    let _ = self.resign_as(who, &leader(rev)).await;
                    return Err(e);
                }
            }
        }
        let resign = Cleanup::new(self, resign_txn(&leader(rev)));
        let waited = self.wait_deletes(&prefix, &key, rev - 1).await;
        // etcd resigns only when the request's context ends (the drop of an
        // armed `resign`); after any other error the key stays.
        resign.disarm();
        waited?;
        Ok(CampaignResponse {
            header: Some(header),
            leader: Some(leader(rev)),
        })
    }

    /// Proclaim: put `value` on the leader key if it still is the one
    /// created at `rev`, else etcd's "election: not leader".
    pub async fn proclaim(
        &self,
        who: &Principal,
        r: ProclaimRequest,
    ) -> Result<ProclaimResponse, ApiError> {
        let mut leader = r.leader.ok_or(ApiError::MissingLeaderKey)?;
        leader.lease = self.session_lease(who, leader.lease).await?;
        let header = self.proclaim_as(who, &leader, r.value).await?;
        Ok(ProclaimResponse {
            header: Some(header),
        })
    }

    async fn proclaim_as(
        &self,
        who: &Principal,
        leader: &LeaderKey,
        value: Bytes,
    ) -> Result<ResponseHeader, ApiError> {
        let resp = self
            .txn_as(
                who,
                TxnRequest {
                    compare: vec![created_at(&leader.key, leader.rev)],
                    success: vec![RequestOp::put(leader.key.clone(), value, leader.lease)],
                    failure: Vec::new(),
                },
            )
            .await?;
        if !resp.succeeded {
            return Err(ApiError::ElectionNotLeader);
        }
        Ok(header_of(&resp))
    }

    /// Resign: delete the leader key if it still is the one created at
    /// `rev` (answering as well when it is not, as etcd does).
    pub async fn resign(
        &self,
        who: &Principal,
        r: ResignRequest,
    ) -> Result<ResignResponse, ApiError> {
        let mut leader = r.leader.ok_or(ApiError::MissingLeaderKey)?;
        leader.lease = self.session_lease(who, leader.lease).await?;
        let header = self.resign_as(who, &leader).await?;
        Ok(ResignResponse {
            header: Some(header),
        })
    }

    async fn resign_as(
        &self,
        who: &Principal,
        leader: &LeaderKey,
    ) -> Result<ResponseHeader, ApiError> {
        Ok(header_of(&self.txn_as(who, resign_txn(leader)).await?))
    }

    /// Leader: the key under `name/` created first, else etcd's "election:
    /// no leader".
    pub async fn election_leader(
        &self,
        who: &Principal,
        name: &[u8],
    ) -> Result<LeaderResponse, ApiError> {
        let (header, kv) = self.first_candidate(who, &key_prefix(name)).await?;
        Ok(LeaderResponse {
            header: Some(header),
            kv: Some(kv.ok_or(ApiError::ElectionNoLeader)?),
        })
    }

    async fn first_candidate(
        &self,
        who: &Principal,
        prefix: &Bytes,
    ) -> Result<(ResponseHeader, Option<KeyValue>), ApiError> {
        let resp = self
            .range_as(who, by_create(prefix, SortOrder::Ascend, 0))
            .await?;
        Ok((resp.header.unwrap_or_default(), resp.kvs.into_iter().next()))
    }

    /// Observe: the current leader of `name` (or the first one to come),
    /// then every new value it proclaims, then the next leader once its key
    /// is deleted, and so on, until the receiver is dropped or the member
    /// stops (etcd's `Election.Observe`).
    pub fn observe(&self, who: Principal, name: &[u8]) -> mpsc::Receiver<LeaderResponse> {
        let (tx, rx) = mpsc::channel(OBSERVE_QUEUE_LEN);
        let server = self.clone();
        let prefix = key_prefix(name);
        tokio::spawn(async move {
            let mut shutdown = server.shutdown_signal();
            tokio::select! {
                end = server.observe_loop(&who, &prefix, &tx) => {
                    if let Err(e) = end {
                        tracing::debug!(error = %e, "election observer ended");
                    }
                }
                _ = tx.closed() => {}
                _ = shutdown.changed() => {}
            }
        });
        rx
    }

    async fn observe_loop(
        &self,
        who: &Principal,
        prefix: &Bytes,
        tx: &mpsc::Sender<LeaderResponse>,
    ) -> Result<(), ApiError> {
        let send = |header: ResponseHeader, kv: KeyValue| async move {
            tx.send(LeaderResponse {
                header: Some(header),
                kv: Some(kv),
            })
            .await
            .map_err(|_| ApiError::Internal("observer went away".into()))
        };
        loop {
            let (mut header, kv) = self.first_candidate(who, prefix).await?;
            let kv = match kv {
                Some(kv) => kv,
                None => {
                    // Wait for the first put under the prefix.
                    let mut w = self.watch_from(prefix, prefix_end(prefix), header.revision);
                    loop {
                        let resp = next_watch(&mut w).await?;
                        let put = resp
                            .events
                            .into_iter()
                            .find(|e| e.r#type == EventType::Put as i32)
                            .and_then(|e| e.kv);
                        if let Some(kv) = put {
                            header = resp.header.unwrap_or_default();
                            header.revision = kv.mod_revision;
                            break kv;
                        }
                    }
                }
            };
            let key = kv.key.clone();
            send(header, kv).await?;
            // Follow the leader key until it is deleted.
            let mut w = self.watch_from(&key, Bytes::new(), header.revision + 1);
            'leader: loop {
                let resp = next_watch(&mut w).await?;
                let header = resp.header.unwrap_or_default();
                for ev in resp.events {
                    if ev.r#type == EventType::Delete as i32 {
                        break 'leader;
                    }
                    if let Some(kv) = ev.kv {
                        send(header, kv).await?;
                    }
                }
            }
        }
    }

    /// Wait until no key under `prefix` has a create revision at most
    /// `max_create` (etcd's `waitDeletes`): wait for the deletion of the
    /// newest of them, then look again. Fails when `mine` is gone
    /// meanwhile. Answers the header of the last look.
    async fn wait_deletes(
        &self,
        prefix: &Bytes,
        mine: &Bytes,
        max_create: i64,
    ) -> Result<ResponseHeader, ApiError> {
        loop {
            let resp = self
                .txn(TxnRequest {
                    success: vec![
                        op(Op::RequestRange(get(mine))),
                        op(Op::RequestRange(by_create(
                            prefix,
                            SortOrder::Descend,
                            max_create,
                        ))),
                    ],
                    ..Default::default()
                })
                .await?;
            if range_at(&resp, 0)?.kvs.is_empty() {
                return Err(ApiError::SessionExpired);
            }
            let header = header_of(&resp);
            let Some(before) = range_at(&resp, 1)?.kvs.first().map(|kv| kv.key.clone()) else {
                return Ok(header);
            };
            // Either key's deletion after this look ends the wait.
            let mut w = self.watch_from(prefix, prefix_end(prefix), header.revision + 1);
            loop {
                let resp = match next_watch(&mut w).await {
                    Ok(r) => r,
                    // Compacted meanwhile: look again from now.
                    Err(ApiError::Mvcc(crate::mvcc::MvccError::Compacted)) => break,
                    Err(e) => return Err(e),
                };
                let gone = resp.events.iter().any(|e| {
                    e.r#type == EventType::Delete as i32
                        && e.kv
                            .as_ref()
                            .is_some_and(|kv| kv.key == before || kv.key == *mine)
                });
                if gone {
                    break;
                }
            }
        }
    }

    /// A watch on `[key, range_end)` from revision `start` on this member's
    /// hub; it ends when the receiver is dropped.
    fn watch_from(&self, key: &Bytes, range_end: Bytes, start: i64) -> Watching {
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: key.clone(),
                range_end,
                start_revision: start,
                ..Default::default()
            })),
        };
        Watching {
            rx: self
                .watch_hub()
                .open(futures::stream::iter([Ok::<_, Infallible>(create)])),
            shutdown: self.shutdown_signal(),
        }
    }
}

/// An open watch and the member's shutdown signal.
struct Watching {
    rx: mpsc::Receiver<WatchResponse>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

/// The next response of `w` carrying events; a canceled watch is an error
/// (compacted: [`crate::mvcc::MvccError::Compacted`]).
async fn next_watch(w: &mut Watching) -> Result<WatchResponse, ApiError> {
    loop {
        let resp = tokio::select! {
            r = w.rx.recv() => r,
            _ = w.shutdown.changed() => None,
        };
        let resp = resp.ok_or(ApiError::Stopped)?;
        if resp.canceled {
            return Err(if resp.compact_revision != 0 {
                ApiError::Mvcc(crate::mvcc::MvccError::Compacted)
            } else {
                ApiError::Internal(format!("watch canceled: {}", resp.cancel_reason))
            });
        }
        if !resp.events.is_empty() {
            return Ok(resp);
        }
    }
}

/// Delete the leader key if it still is the one created at `leader.rev`.
fn resign_txn(leader: &LeaderKey) -> TxnRequest {
    TxnRequest {
        compare: vec![created_at(&leader.key, leader.rev)],
        success: vec![delete(&leader.key)],
        failure: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_go_hex() {
        let p = key_prefix(b"lk");
        assert_eq!(&lease_key(&p, 0x694d_7b2c_1a2b)[..], b"lk/694d7b2c1a2b");
        assert_eq!(&lease_key(&p, -26)[..], b"lk/-1a");
        assert_eq!(&key_prefix(b"")[..], b"/");
    }
}
