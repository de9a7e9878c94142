//! The in-process client handle of an embedded node: the same KV operations
//! as the gRPC API (same validation, same Raft path, same linearizability),
//! with no network in between.
//!
//! It runs with no auth: it is the embedding program itself, so its
//! requests are never checked against users and permissions, even while
//! auth is enabled for the node's network clients.

use bytes::Bytes;

use crate::error::ApiError;
use crate::pb::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use crate::pb::mvccpb::KeyValue;
use crate::pb::v3electionpb::{CampaignRequest, LeaderKey, ProclaimRequest, ResignRequest};
use crate::pb::v3lockpb::{LockRequest, UnlockRequest};
use crate::server::auth::Principal;
use crate::server::Server;

/// The range end of a key prefix (re-exported for embedding programs).
pub use crate::mvcc::prefix_end;

/// A KV handle bound to a running member (see `Node::client`).
#[derive(Clone)]
pub struct Client {
    server: Server,
}

impl Client {
    pub(crate) fn new(server: Server) -> Self {
        Self { server }
    }

    /// Put `value` at `key`; returns the new revision.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<i64, ApiError> {
        let resp = self
            .server
            .put(PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            })
            .await?;
        Ok(resp.header.map_or(0, |h| h.revision))
    }

    /// Linearizable read of one key.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<KeyValue>, ApiError> {
        let resp = self
            .range(RangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .await?;
        Ok(resp.kvs.into_iter().next())
    }

    /// Linearizable read of every key starting with `prefix` (an empty
    /// prefix: every key, as in etcd's clientv3).
    pub async fn get_prefix(&self, prefix: impl Into<Bytes>) -> Result<Vec<KeyValue>, ApiError> {
        let mut key: Bytes = prefix.into();
        let range_end = prefix_end(&key);
        if key.is_empty() {
            key = Bytes::from_static(&[0]);
        }
        let resp = self
            .range(RangeRequest {
                key,
                range_end,
                ..Default::default()
            })
            .await?;
        Ok(resp.kvs)
    }

    /// Any Range request (set `serializable` for a local read).
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, ApiError> {
        self.server.range(req).await
    }

    /// Delete one key; returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<i64, ApiError> {
        let resp = self
            .server
            .delete_range(DeleteRangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .await?;
        Ok(resp.deleted)
    }

    /// Any Txn request.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, ApiError> {
        self.server.txn(req).await
    }

    /// Put `value` only if `key`'s mod revision is `expected_mod_revision`
    /// (0: only if the key does not exist). Returns whether it was written.
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Bytes>,
        expected_mod_revision: i64,
        value: impl Into<Bytes>,
    ) -> Result<bool, ApiError> {
        self.put_if_mod(key.into(), expected_mod_revision, value.into(), 0)
            .await
    }

    /// Put `value` bound to lease `lease` only if `key` does not exist
    /// (a lock, a registration). Returns whether it was written.
    pub async fn put_if_absent(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        lease: i64,
    ) -> Result<bool, ApiError> {
        self.put_if_mod(key.into(), 0, value.into(), lease).await
    }

    async fn put_if_mod(
        &self,
        key: Bytes,
        expected_mod_revision: i64,
        value: Bytes,
        lease: i64,
    ) -> Result<bool, ApiError> {
        let resp = self
            .txn(TxnRequest {
                compare: vec![Compare::mod_revision_is(key.clone(), expected_mod_revision)],
                success: vec![RequestOp::put(key, value, lease)],
                failure: vec![],
            })
            .await?;
        Ok(resp.succeeded)
    }

    /// Grant a lease of `ttl` seconds; its id.
    pub async fn grant_lease(&self, ttl: i64) -> Result<i64, ApiError> {
        let resp = self
            .server
            .lease_grant(LeaseGrantRequest { ttl, id: 0 })
            .await?;
        Ok(resp.id)
    }

    /// Keep lease `id` alive once: its TTL, or 0 if it is gone.
    pub async fn keep_alive(&self, id: i64) -> Result<i64, ApiError> {
        Ok(self.server.lease_keep_alive(id).await?.ttl)
    }

    /// Revoke lease `id`, deleting its keys.
    pub async fn revoke_lease(&self, id: i64) -> Result<(), ApiError> {
        self.server
            .lease_revoke(LeaseRevokeRequest { id })
            .await
            .map(|_| ())
    }

    /// Compact history up to `revision`.
    pub async fn compact(&self, revision: i64) -> Result<(), ApiError> {
        self.server
            .compact(CompactionRequest {
                revision,
                physical: true,
            })
            .await?;
        Ok(())
    }

    /// Acquire the lock `name` as etcd's Lock service does: wait until this
    /// caller's key `name/LEASE` is the oldest under `name/`. The key is
    /// bound to `lease` (0: a new lease of 60 s nobody keeps alive, as
    /// etcd's server does); revoking the lease releases the lock. Returns
    /// the key that holds it, for [`Client::unlock`].
    pub async fn lock(&self, name: impl Into<Bytes>, lease: i64) -> Result<Bytes, ApiError> {
        let req = LockRequest {
            name: name.into(),
            lease,
        };
        Ok(self.server.lock(&Principal::Local, req).await?.key)
    }

    /// Release a lock [`Client::lock`] returned.
    pub async fn unlock(&self, key: impl Into<Bytes>) -> Result<(), ApiError> {
        let req = UnlockRequest { key: key.into() };
        self.server.unlock(&Principal::Local, req).await.map(|_| ())
    }

    /// Campaign in the election `name` with `value` (etcd's Election
    /// service): wait until elected; the candidacy is bound to `lease` (0:
    /// a new 60 s lease). Returns the leader key for
    /// [`Client::proclaim`] and [`Client::resign`].
    pub async fn campaign(
        &self,
        name: impl Into<Bytes>,
        value: impl Into<Bytes>,
        lease: i64,
    ) -> Result<LeaderKey, ApiError> {
        let req = CampaignRequest {
            name: name.into(),
            lease,
            value: value.into(),
        };
        let resp = self.server.campaign(&Principal::Local, req).await?;
        resp.leader
            .ok_or_else(|| ApiError::Internal("campaign answered without a leader key".into()))
    }

    /// Announce a new value as the leader `leader` (etcd's "election: not
    /// leader" if that leadership is gone).
    pub async fn proclaim(
        &self,
        leader: &LeaderKey,
        value: impl Into<Bytes>,
    ) -> Result<(), ApiError> {
        let req = ProclaimRequest {
            leader: Some(leader.clone()),
            value: value.into(),
        };
        self.server
            .proclaim(&Principal::Local, req)
            .await
            .map(|_| ())
    }

    /// The current leader of the election `name`: its key and value, or
    /// `None` when nobody campaigns.
    pub async fn leader(&self, name: impl Into<Bytes>) -> Result<Option<KeyValue>, ApiError> {
        let name: Bytes = name.into();
        match self.server.election_leader(&Principal::Local, &name).await {
            Ok(resp) => Ok(resp.kv),
            Err(ApiError::ElectionNoLeader) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Give up the leadership `leader` (nothing happens if it is gone).
    pub async fn resign(&self, leader: &LeaderKey) -> Result<(), ApiError> {
        let req = ResignRequest {
            leader: Some(leader.clone()),
        };
        self.server.resign(&Principal::Local, req).await.map(|_| ())
    }
}
