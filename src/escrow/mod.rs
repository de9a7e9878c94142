//! Payment channels of Multi-Party Escrow (MPE), the first users' state:
//! what a signed payment is and who signed it ([`payment`]), a channel and
//! a claim as stored ([`channel`]), and the operations that change them,
//! each one transaction compared on the channel's revision ([`store`]).
//! See docs/escrow.md.

pub mod channel;
pub mod error;
pub mod lock;
pub mod payment;
pub mod remote;
pub mod service;
pub mod store;

pub use error::{EscrowError, Refusal};
pub use store::{Escrow, Updated};
