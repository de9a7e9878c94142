//! What the escrow operations answer besides success: the rules'
//! refusals, and the errors that are not the rules' answer.

use alloy_primitives::{Address, U256};

use super::payment::PaymentError;
use crate::error::ApiError;

/// How many times one operation re-reads a channel that changed under it.
pub const MAX_ATTEMPTS: usize = 64;

/// Why the rules refuse a payment or a claim (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the signature recovers {recovered}, neither the channel's signer {signer} nor its sender {sender}")]
    WrongSigner {
        recovered: Address,
        signer: Address,
        sender: Address,
    },
    #[error("nonce {got} is not the channel's nonce {channel}")]
    WrongNonce { got: U256, channel: U256 },
    #[error("amount {amount} is not above the authorized amount {authorized}")]
    NotMore { amount: U256, authorized: U256 },
    #[error("amount {amount} is above the channel's value {value}")]
    AboveValue { amount: U256, value: U256 },
    #[error("the channel expired at block {expiration} (current block {block})")]
    Expired { block: U256, expiration: U256 },
    #[error("nothing to claim: no payment accepted at nonce {nonce}")]
    NothingToClaim { nonce: U256 },
    #[error("the claim of nonce {nonce} is settled already")]
    Settled { nonce: U256 },
    #[error("stale update: {0}")]
    Stale(String),
}

/// Errors that are not the rules' answer.
#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    /// Bad input (InvalidArgument).
    #[error("{0}")]
    Invalid(#[from] PaymentError),
    /// No such channel or claim (NotFound).
    #[error("{0}")]
    NotFound(String),
    /// The store failed or the outcome is unknown.
    #[error("{0}")]
    Store(#[from] ApiError),
    /// The channel kept changing under this operation.
    #[error("the channel kept changing: gave up after {MAX_ATTEMPTS} attempts")]
    Contended,
}
