//! The escrow operations over the replicated store: every state change of
//! a channel is one transaction compared on the channel key's
//! `mod_revision` (retried on conflict), so two replicas racing on one
//! channel cannot both win, and a claim and its channel move together.

use alloy_primitives::{Address, U256};
use bytes::Bytes;

use super::channel::{Channel, ChannelKey, Claim};
use super::error::MAX_ATTEMPTS;
pub use super::error::{EscrowError, Refusal};
use super::payment::Payment;
use crate::client::{prefix_end, Client};
use crate::pb::etcdserverpb::{Compare, RangeRequest, RequestOp, TxnRequest};

/// What an update from the chain did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    Created,
    Changed,
    /// Nothing newer than what is stored (a stale or repeated update).
    Unchanged,
}

/// The escrow operations of one member (`Node::escrow`).
#[derive(Clone)]
pub struct Escrow {
    client: Client,
}

fn put(key: String, value: Vec<u8>) -> RequestOp {
    RequestOp::put(Bytes::from(key), Bytes::from(value), 0)
}

/// The rules of a payment against the channel as read.
fn check(
    payment: &Payment,
    recovered: Address,
    cur: &Channel,
    current_block: U256,
) -> Result<(), Refusal> {
    if recovered != cur.signer && recovered != cur.sender {
        return Err(Refusal::WrongSigner {
            recovered,
            signer: cur.signer,
            sender: cur.sender,
        });
    }
    if payment.nonce != cur.nonce {
        return Err(Refusal::WrongNonce {
            got: payment.nonce,
            channel: cur.nonce,
        });
    }
    if payment.amount <= cur.authorized_amount {
        return Err(Refusal::NotMore {
            amount: payment.amount,
            authorized: cur.authorized_amount,
        });
    }
    if payment.amount > cur.value {
        return Err(Refusal::AboveValue {
            amount: payment.amount,
            value: cur.value,
        });
    }
    if current_block >= cur.expiration {
        return Err(Refusal::Expired {
            block: current_block,
            expiration: cur.expiration,
        });
    }
    Ok(())
}

impl Escrow {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The channel and its key's mod revision (0: absent).
    async fn read(&self, key: &ChannelKey) -> Result<Option<(Channel, i64)>, EscrowError> {
        self.read_as(key, true).await
    }

    /// Read the channel linearizably (`fresh`), or from this member's own
    /// state, which may lag: good enough to try a compare-and-swap (a stale
    /// read only makes it fail), never to refuse.
    async fn read_as(
        &self,
        key: &ChannelKey,
        fresh: bool,
    ) -> Result<Option<(Channel, i64)>, EscrowError> {
        let resp = self
            .client
            .range(RangeRequest {
                key: Bytes::from(key.key()),
                serializable: !fresh,
                ..Default::default()
            })
            .await?;
        match resp.kvs.first() {
            None => Ok(None),
            Some(kv) => Ok(Some((Channel::from_json(&kv.value)?, kv.mod_revision))),
        }
    }

    /// The channel as this member has it (may lag the leader by a few
    /// entries).
    pub async fn channel_here(&self, key: &ChannelKey) -> Result<Option<Channel>, EscrowError> {
        Ok(self.read_as(key, false).await?.map(|(c, _)| c))
    }

    /// Write `ops` if the channel key's mod revision is still `rev`.
    async fn swap(
        &self,
        key: &ChannelKey,
        rev: i64,
        ops: Vec<RequestOp>,
    ) -> Result<bool, EscrowError> {
        let resp = self
            .client
            .txn(TxnRequest {
                compare: vec![Compare::mod_revision_is(Bytes::from(key.key()), rev)],
                success: ops,
                failure: vec![],
            })
            .await?;
        Ok(resp.succeeded)
    }

    /// Take channel `key`'s lock for `holder`, bound to a lease of
    /// `ttl_secs` (see [`super::lock`]); `None` if still held by someone
    /// else after `wait`.
    pub async fn lock_channel(
        &self,
        key: &ChannelKey,
        holder: &str,
        ttl_secs: i64,
        wait: std::time::Duration,
    ) -> Result<Option<super::lock::ChannelLock>, EscrowError> {
        super::lock::lock(&self.client, key, holder, ttl_secs, wait).await
    }

    /// The channel, if known.
    pub async fn channel(&self, key: &ChannelKey) -> Result<Option<Channel>, EscrowError> {
        Ok(self.read(key).await?.map(|(c, _)| c))
    }

    /// A channel as the chain has it now: a new one, a deposit added, the
    /// expiration extended, the nonce raised by a claim on chain (which
    /// clears the authorized amount). A lower nonce, or at the same nonce a
    /// lower value or expiration, is stale: nothing changes.
    pub async fn update_channel(
        &self,
        mpe_contract: Address,
        chain: Channel,
    ) -> Result<Result<Updated, Refusal>, EscrowError> {
        let key = ChannelKey {
            mpe_contract,
            channel_id: chain.channel_id,
        };
        for _ in 0..MAX_ATTEMPTS {
            let (next, rev, created) = match self.read(&key).await? {
                None => {
                    let fresh = Channel {
                        authorized_amount: U256::ZERO,
                        signature: Vec::new(),
                        ..chain.clone()
                    };
                    (fresh, 0, true)
                }
                Some((cur, rev)) => {
                    if chain.nonce < cur.nonce {
                        return Ok(Err(Refusal::Stale(format!(
                            "nonce {} is below the stored {}",
                            chain.nonce, cur.nonce
                        ))));
                    }
                    if chain.nonce == cur.nonce
                        && (chain.value < cur.value || chain.expiration < cur.expiration)
                    {
                        return Ok(Err(Refusal::Stale(format!(
                            "value {} / expiration {} below the stored {} / {}",
                            chain.value, chain.expiration, cur.value, cur.expiration
                        ))));
                    }
                    let mut next = Channel {
                        authorized_amount: cur.authorized_amount,
                        signature: cur.signature.clone(),
                        ..chain.clone()
                    };
                    if chain.nonce > cur.nonce {
                        next.authorized_amount = U256::ZERO;
                        next.signature.clear();
                    }
                    if next == cur {
                        return Ok(Ok(Updated::Unchanged));
                    }
                    (next, rev, false)
                }
            };
            if self
                .swap(&key, rev, vec![put(key.key(), next.to_json())])
                .await?
            {
                return Ok(Ok(if created {
                    Updated::Created
                } else {
                    Updated::Changed
                }));
            }
        }
        Err(EscrowError::Contended)
    }

    /// Accept `payment` if, at once: it is signed by the channel's signer
    /// or sender, for the channel's nonce, for more than the authorized
    /// amount and at most the value, before the expiration block. Returns
    /// the new authorized amount.
    pub async fn accept_payment(
        &self,
        payment: &Payment,
        current_block: U256,
    ) -> Result<Result<U256, Refusal>, EscrowError> {
        let recovered = payment.signer()?;
        let key = ChannelKey {
            mpe_contract: payment.mpe_contract,
            channel_id: payment.channel_id,
        };
        // The first attempt reads this member's own state (no round trip
        // to the leader); the compare-and-swap catches a stale read, and a
        // refusal is only given on a fresh one.
        let mut fresh = false;
        for _ in 0..MAX_ATTEMPTS {
            let Some((cur, rev)) = self.read_as(&key, fresh).await? else {
                if fresh {
                    return Err(EscrowError::NotFound(format!(
                        "no channel {} of contract {}",
                        payment.channel_id, payment.mpe_contract
                    )));
                }
                fresh = true;
                continue;
            };
            if let Err(refusal) = check(payment, recovered, &cur, current_block) {
                if fresh {
                    return Ok(Err(refusal));
                }
                fresh = true;
                continue;
            }
            let next = Channel {
                authorized_amount: payment.amount,
                signature: payment.signature.to_vec(),
                ..cur
            };
            if self
                .swap(&key, rev, vec![put(key.key(), next.to_json())])
                .await?
            {
                return Ok(Ok(payment.amount));
            }
            fresh = true;
        }
        Err(EscrowError::Contended)
    }

    /// Start a claim: in one transaction, record the accepted payment of
    /// the current nonce as a claim and move the channel to the next nonce
    /// with nothing authorized. Payments for the old nonce are refused from
    /// then on.
    pub async fn start_claim(
        &self,
        key: &ChannelKey,
    ) -> Result<Result<Claim, Refusal>, EscrowError> {
        for _ in 0..MAX_ATTEMPTS {
            let (cur, rev) = self.read(key).await?.ok_or_else(|| {
                EscrowError::NotFound(format!(
                    "no channel {} of contract {}",
                    key.channel_id, key.mpe_contract
                ))
            })?;
            if cur.authorized_amount.is_zero() {
                return Ok(Err(Refusal::NothingToClaim { nonce: cur.nonce }));
            }
            let claim = Claim {
                channel_id: cur.channel_id,
                nonce: cur.nonce,
                amount: cur.authorized_amount,
                signature: cur.signature.clone(),
                settled: false,
            };
            let next = Channel {
                nonce: cur.nonce.saturating_add(U256::from(1)),
                authorized_amount: U256::ZERO,
                signature: Vec::new(),
                ..cur
            };
            let ops = vec![
                put(key.key(), next.to_json()),
                put(key.claim_key(claim.nonce), claim.to_json()),
            ];
            if self.swap(key, rev, ops).await? {
                return Ok(Ok(claim));
            }
        }
        Err(EscrowError::Contended)
    }

    /// The claims of contract `mpe_contract` (of one channel if given),
    /// oldest first.
    pub async fn claims(
        &self,
        mpe_contract: Address,
        channel_id: Option<U256>,
    ) -> Result<Vec<Claim>, EscrowError> {
        let prefix = match channel_id {
            Some(id) => ChannelKey {
                mpe_contract,
                channel_id: id,
            }
            .claims_prefix(),
            None => ChannelKey::contract_claims_prefix(mpe_contract),
        };
        let resp = self
            .client
            .range(RangeRequest {
                key: Bytes::from(prefix.clone()),
                range_end: prefix_end(prefix.as_bytes()),
                ..Default::default()
            })
            .await?;
        resp.kvs
            .iter()
            .map(|kv| Claim::from_json(&kv.value).map_err(EscrowError::from))
            .collect()
    }

    /// Mark the claim of `nonce` settled (it was redeemed on chain).
    pub async fn settle_claim(
        &self,
        key: &ChannelKey,
        nonce: U256,
    ) -> Result<Result<Claim, Refusal>, EscrowError> {
        let claim_key = key.claim_key(nonce);
        for _ in 0..MAX_ATTEMPTS {
            let kv = self.client.get(claim_key.clone()).await?.ok_or_else(|| {
                EscrowError::NotFound(format!(
                    "no claim of nonce {nonce} on channel {}",
                    key.channel_id
                ))
            })?;
            let mut claim = Claim::from_json(&kv.value)?;
            if claim.settled {
                return Ok(Err(Refusal::Settled { nonce }));
            }
            claim.settled = true;
            let resp = self
                .client
                .txn(TxnRequest {
                    compare: vec![Compare::mod_revision_is(
                        Bytes::from(claim_key.clone()),
                        kv.mod_revision,
                    )],
                    success: vec![put(claim_key.clone(), claim.to_json())],
                    failure: vec![],
                })
                .await?;
            if resp.succeeded {
                return Ok(Ok(claim));
            }
        }
        Err(EscrowError::Contended)
    }
}
