//! etcd 3.4's v3 auth, the parts that need no server: the replicated auth
//! store ([`state`]: users, roles, permissions, the enabled flag, the auth
//! revision), key-range permission checks ([`perm`]), password hashing
//! ([`password`]), and the token providers ([`token`] for `simple`,
//! [`jwt`]). The state machine applies [`AuthChange`]s (`mvcc`); the
//! server checks requests against the store and keeps the tokens
//! (`server::auth`); `api::auth` is the gRPC service.

pub mod error;
pub mod jwt;
pub mod password;
pub mod perm;
pub mod state;
pub mod token;

pub use error::{AuthError, ErrorClass};
pub use perm::{Access, Perm, PermType};
pub use state::{AuthChange, AuthState, Caller, ROOT_ROLE, ROOT_USER};
