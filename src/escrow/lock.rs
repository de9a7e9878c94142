//! A channel lock for daemons that serve one request per channel at a time
//! (snet-daemon's pattern), bound to the holder's lease: a holder that
//! crashes stops keeping the lease alive and the lock goes with it within
//! the TTL, instead of staying locked until someone intervenes (as a lock
//! without a lease does). Payments and claims need no lock: they are
//! compare-and-swap transactions ([`super::store`]).

use std::time::Duration;

use bytes::Bytes;

use super::channel::{ChannelKey, PREFIX};
use super::error::EscrowError;
use crate::client::Client;

/// A held lock; [`ChannelLock::unlock`] releases it at once, dropping it
/// (or the holder dying) releases it when its lease expires.
pub struct ChannelLock {
    client: Client,
    lease: i64,
    keeper: tokio::task::JoinHandle<()>,
}

/// The lock key of a channel.
pub fn lock_key(key: &ChannelKey) -> String {
    let channel = key.key();
    let tail = channel
        .strip_prefix(&format!("{PREFIX}channels/"))
        .unwrap_or(&channel);
    format!("{PREFIX}locks/{tail}")
}

/// Take the lock of channel `key` for `holder` (any text naming it),
/// bound to a new lease of `ttl_secs`, waiting while someone else holds it,
/// at most `wait`. `Ok(None)`: still held by someone else after `wait`.
pub async fn lock(
    client: &Client,
    key: &ChannelKey,
    holder: &str,
    ttl_secs: i64,
    wait: Duration,
) -> Result<Option<ChannelLock>, EscrowError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut lease = client.grant_lease(ttl_secs).await?;
    let every = Duration::from_millis((ttl_secs.max(1) as u64) * 1000 / 3);
    let mut kept = tokio::time::Instant::now();
    let k = Bytes::from(lock_key(key));
    loop {
        // While waiting, the waiter's own lease must not run out.
        if kept.elapsed() >= every {
            if client.keep_alive(lease).await? <= 0 {
                lease = client.grant_lease(ttl_secs).await?;
            }
            kept = tokio::time::Instant::now();
        }
        let taken = client
            .put_if_absent(k.clone(), Bytes::from(holder.to_string()), lease)
            .await?;
        if taken {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = client.revoke_lease(lease).await;
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keeper = {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if !matches!(client.keep_alive(lease).await, Ok(ttl) if ttl > 0) {
                    return;
                }
            }
        })
    };
    Ok(Some(ChannelLock {
        client: client.clone(),
        lease,
        keeper,
    }))
}

impl ChannelLock {
    /// Release the lock now.
    pub async fn unlock(self) -> Result<(), EscrowError> {
        self.keeper.abort();
        self.client.revoke_lease(self.lease).await?;
        Ok(())
    }

    /// Stop keeping the lease alive without releasing the lock: what a
    /// holder that crashed leaves behind (for tests and drills).
    pub fn abandon(self) {
        self.keeper.abort();
    }
}

impl Drop for ChannelLock {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}
