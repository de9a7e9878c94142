//! Payment channels of Multi-Party Escrow (MPE), the first users' state:
//! what a signed payment is and who signed it ([`payment`]). The channel
//! store and its race-free acceptance across replicas build on it (see
//! docs/escrow.md).

pub mod payment;
