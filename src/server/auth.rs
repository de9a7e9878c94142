//! Who a client request is from, and the permission checks made before a
//! request is proposed or read, as etcd 3.4's `EtcdServer` makes them.
//!
//! A request names its user with a token (gRPC metadata `token`) or, with
//! `--client-cert-auth`, its client certificate's common name (the token
//! wins when both are there). While auth is enabled, a write is checked
//! here on this member's view and proposed as [`Command::As`] with the
//! caller and the auth revision the check saw, so the state machine checks
//! it again on the state it is applied to ("revision of auth store is old"
//! when the auth store changed in between). Reads are checked on the view
//! they are answered from. The in-process client is [`Principal::Local`]:
//! the embedding program is trusted and never checked.

use std::time::Duration;

use super::Server;
use crate::auth::token::token_index;
use crate::auth::{AuthError, Caller};
use crate::error::ApiError;
use crate::mvcc::command::ClientOp;
use crate::mvcc::{Command, View};

/// How long a member waits to apply the entry a simple token names before
/// calling the token invalid (it was issued through another member that is
/// ahead).
const TOKEN_WAIT: Duration = Duration::from_secs(2);

/// What a client presented.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The `token` metadata of the request.
    pub token: Option<String>,
    /// The common name of the verified client certificate, when the
    /// listener requires one (`--client-cert-auth`).
    pub cert_cn: Option<String>,
}

/// Who a request is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// This process (the embedded client, the lessor): never checked.
    Local,
    /// A client with neither token nor certificate name.
    Anonymous,
    /// A client known as `user`, checked at auth revision `revision`.
    User(Caller),
}

impl Principal {
    /// The caller to check and to carry in a proposal (none for anonymous
    /// and local requests).
    pub fn caller(&self) -> Option<&Caller> {
        match self {
            Principal::User(c) => Some(c),
            _ => None,
        }
    }

    pub fn user(&self) -> Option<&str> {
        self.caller().map(|c| c.user.as_str())
    }
}

impl Server {
    /// Who presented `creds`: a token must be valid (etcd's "invalid auth
    /// token" otherwise, even while auth is disabled).
    pub async fn principal(&self, creds: &Credentials) -> Result<Principal, ApiError> {
        if let Some(token) = &creds.token {
            return Ok(Principal::User(self.token_caller(token).await?));
        }
        let cert_auth = self
            .inner
            .config
            .client_tls
            .as_ref()
            .is_some_and(|t| t.requires_client_cert());
        match &creds.cert_cn {
            Some(cn) if cert_auth && !cn.is_empty() => Ok(Principal::User(Caller {
                user: cn.clone(),
                revision: self.view().auth.revision,
            })),
            _ => Ok(Principal::Anonymous),
        }
    }

    async fn token_caller(&self, token: &str) -> Result<Caller, ApiError> {
        if let Some(keys) = &self.inner.jwt {
            return keys
                .verify_token(token, 0)
                .map(|(user, revision)| Caller { user, revision })
                .ok_or(ApiError::Auth(AuthError::InvalidAuthToken));
        }
        let index = token_index(token).ok_or(AuthError::InvalidAuthToken)?;
        let tokens = &self.inner.tokens;
        let mut user = tokens.user_of(token);
        if user.is_none() {
            // Issued through a member that is ahead: wait to apply it.
            let waited = self
                .inner
                .raft
                .wait(Some(TOKEN_WAIT))
                .applied_index_at_least(Some(index), "auth token")
                .await;
            if waited.is_ok() {
                user = tokens.user_of(token);
            }
        }
        match user {
            Some(user) => Ok(Caller {
                user,
                revision: self.view().auth.revision,
            }),
            None => {
                tracing::debug!("invalid auth token");
                Err(ApiError::Auth(AuthError::InvalidAuthToken))
            }
        }
    }

    /// The command to propose for `who`: `cmd` itself while auth is
    /// disabled, for local requests and for kinds etcd does not check
    /// (compaction, lease grants); else checked on the current view and
    /// wrapped with the caller, to be checked again when applied.
    pub(super) fn authorize(&self, who: &Principal, cmd: Command) -> Result<Command, ApiError> {
        if *who == Principal::Local {
            return Ok(cmd);
        }
        if !self.inner.view.auth().enabled {
            return Ok(cmd);
        }
        let view = self.view();
        let op = match ClientOp::from_command(cmd) {
            Ok(op) => op,
            Err(other) => return Ok(other),
        };
        crate::mvcc::auth::check_op(&view, who.caller(), &op)?;
        let caller = who.caller().cloned().ok_or(AuthError::UserEmpty)?;
        Ok(Command::As { caller, op })
    }

    /// Check a read of `who` on `view`, the view it is answered from.
    pub(super) fn check_read(
        &self,
        who: &Principal,
        view: &View,
        check: impl FnOnce(&View, Option<&Caller>) -> Result<(), AuthError>,
    ) -> Result<(), ApiError> {
        if *who == Principal::Local {
            return Ok(());
        }
        Ok(check(view, who.caller())?)
    }

    /// etcd's `IsAdminPermitted` for `who` (cluster and most maintenance
    /// calls): the root role while auth is enabled.
    pub fn check_admin(&self, who: &Principal) -> Result<(), ApiError> {
        if *who == Principal::Local {
            return Ok(());
        }
        Ok(self.view().auth.check_admin(who.user())?)
    }

    /// Whether `who` may watch `key`..`range_end` now (a watch is checked
    /// when created, as etcd does).
    pub fn may_watch(&self, who: &Principal, key: &[u8], range_end: &[u8]) -> bool {
        *who == Principal::Local
            || self
                .view()
                .auth
                .check_keys(who.caller(), key, range_end, crate::auth::Access::Read)
                .is_ok()
    }
}
