//! A payment channel and a claim as the store keeps them: JSON under
//! `/raftcd/escrow/`, readable with `etcdctl get --prefix`; numbers as
//! decimal strings (a uint256 does not fit JSON's numbers), addresses
//! EIP-55, byte strings `0x` hex.
//!
//! * `/raftcd/escrow/channels/<contract>/<channel id, 64 hex digits>`
//! * `/raftcd/escrow/claims/<contract>/<channel id>/<nonce, 64 hex digits>`
//!
//! `<contract>` is the lowercase hex address without `0x`; fixed-width hex
//! ids keep the keys in numeric order.

use alloy_primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use super::payment::{parse_address, parse_hex, parse_u256, to_hex, PaymentError};

/// The prefix of every escrow key.
pub const PREFIX: &str = "/raftcd/escrow/";

/// A contract's part of a key: lowercase hex without `0x`.
fn contract_dir(mpe_contract: Address) -> String {
    to_hex(mpe_contract.as_slice())[2..].to_string()
}

/// A channel's identity: `[MPE contract address, channel id]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelKey {
    pub mpe_contract: Address,
    pub channel_id: U256,
}

impl ChannelKey {
    fn contract(&self) -> String {
        contract_dir(self.mpe_contract)
    }

    /// The channel's key.
    pub fn key(&self) -> String {
        format!(
            "{PREFIX}channels/{}/{:064x}",
            self.contract(),
            self.channel_id
        )
    }

    /// The prefix of the channel's claims.
    pub fn claims_prefix(&self) -> String {
        format!(
            "{PREFIX}claims/{}/{:064x}/",
            self.contract(),
            self.channel_id
        )
    }

    /// The key of the claim of `nonce`.
    pub fn claim_key(&self, nonce: U256) -> String {
        format!("{}{nonce:064x}", self.claims_prefix())
    }

    /// The prefix of every claim of contract `mpe_contract`.
    pub fn contract_claims_prefix(mpe_contract: Address) -> String {
        format!("{PREFIX}claims/{}/", contract_dir(mpe_contract))
    }
}

/// A channel: what the chain says, and what the replicas accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub channel_id: U256,
    pub nonce: U256,
    pub sender: Address,
    pub signer: Address,
    pub recipient: Address,
    pub group_id: [u8; 32],
    /// The deposit.
    pub value: U256,
    /// The block number the channel expires at.
    pub expiration: U256,
    /// The largest amount accepted at this nonce (0: none yet).
    pub authorized_amount: U256,
    /// The signature of that payment (empty: none yet).
    pub signature: Vec<u8>,
}

/// A claim started on a channel: the payment to redeem on chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub channel_id: U256,
    pub nonce: U256,
    pub amount: U256,
    pub signature: Vec<u8>,
    pub settled: bool,
}

#[derive(Serialize, Deserialize)]
struct ChannelJson {
    channel_id: String,
    nonce: String,
    sender: String,
    signer: String,
    recipient: String,
    group_id: String,
    value: String,
    expiration: String,
    authorized_amount: String,
    signature: String,
}

#[derive(Serialize, Deserialize)]
struct ClaimJson {
    channel_id: String,
    nonce: String,
    amount: String,
    signature: String,
    settled: bool,
}

fn unhex(what: &'static str, s: &str) -> Result<Vec<u8>, PaymentError> {
    parse_hex(s).map_err(|reason| PaymentError::Field {
        what,
        value: s.to_string(),
        reason,
    })
}

/// A 32-byte group id from hex.
pub fn parse_group_id(s: &str) -> Result<[u8; 32], PaymentError> {
    let bytes = unhex("group id", s)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| PaymentError::Field {
        what: "group id",
        value: s.to_string(),
        reason: format!("{} bytes; a group id is 32", bytes.len()),
    })
}

impl Channel {
    /// The stored form.
    pub fn to_json(&self) -> Vec<u8> {
        let j = ChannelJson {
            channel_id: self.channel_id.to_string(),
            nonce: self.nonce.to_string(),
            sender: self.sender.to_checksum(None),
            signer: self.signer.to_checksum(None),
            recipient: self.recipient.to_checksum(None),
            group_id: to_hex(&self.group_id),
            value: self.value.to_string(),
            expiration: self.expiration.to_string(),
            authorized_amount: self.authorized_amount.to_string(),
            signature: to_hex(&self.signature),
        };
        serde_json::to_vec(&j).unwrap_or_default()
    }

    /// Read the stored form back (a malformed value is an error, never a
    /// default channel).
    pub fn from_json(bytes: &[u8]) -> Result<Self, PaymentError> {
        let j: ChannelJson = serde_json::from_slice(bytes).map_err(|e| PaymentError::Field {
            what: "stored channel",
            value: String::from_utf8_lossy(bytes).into_owned(),
            reason: e.to_string(),
        })?;
        Ok(Channel {
            channel_id: parse_u256("channel_id", &j.channel_id)?,
            nonce: parse_u256("nonce", &j.nonce)?,
            sender: parse_address("sender", &j.sender)?,
            signer: parse_address("signer", &j.signer)?,
            recipient: parse_address("recipient", &j.recipient)?,
            group_id: parse_group_id(&j.group_id)?,
            value: parse_u256("value", &j.value)?,
            expiration: parse_u256("expiration", &j.expiration)?,
            authorized_amount: parse_u256("authorized_amount", &j.authorized_amount)?,
            signature: unhex("signature", &j.signature)?,
        })
    }
}

impl Claim {
    /// The stored form.
    pub fn to_json(&self) -> Vec<u8> {
        let j = ClaimJson {
            channel_id: self.channel_id.to_string(),
            nonce: self.nonce.to_string(),
            amount: self.amount.to_string(),
            signature: to_hex(&self.signature),
            settled: self.settled,
        };
        serde_json::to_vec(&j).unwrap_or_default()
    }

    /// Read the stored form back.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PaymentError> {
        let j: ClaimJson = serde_json::from_slice(bytes).map_err(|e| PaymentError::Field {
            what: "stored claim",
            value: String::from_utf8_lossy(bytes).into_owned(),
            reason: e.to_string(),
        })?;
        Ok(Claim {
            channel_id: parse_u256("channel_id", &j.channel_id)?,
            nonce: parse_u256("nonce", &j.nonce)?,
            amount: parse_u256("amount", &j.amount)?,
            signature: unhex("signature", &j.signature)?,
            settled: j.settled,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_and_claims_round_trip_and_keys_sort_by_number() {
        let c = Channel {
            channel_id: U256::MAX,
            nonce: U256::from(3),
            sender: Address::repeat_byte(1),
            signer: Address::repeat_byte(2),
            recipient: Address::repeat_byte(3),
            group_id: [9; 32],
            value: U256::from(1000),
            expiration: U256::from(99),
            authorized_amount: U256::from(10),
            signature: vec![1, 2, 3],
        };
        assert_eq!(Channel::from_json(&c.to_json()).unwrap(), c);
        let claim = Claim {
            channel_id: U256::from(7),
            nonce: U256::from(2),
            amount: U256::from(5),
            signature: vec![4; 65],
            settled: false,
        };
        assert_eq!(Claim::from_json(&claim.to_json()).unwrap(), claim);
        let key = |id: u64| {
            ChannelKey {
                mpe_contract: Address::repeat_byte(0xab),
                channel_id: U256::from(id),
            }
            .key()
        };
        assert!(key(9) < key(10) && key(10) < key(1 << 40));
        assert!(key(9).starts_with("/raftcd/escrow/channels/abababab"));
        assert!(Channel::from_json(b"{}").is_err());
    }
}
