//! etcd's Auth service on a member: enabling and disabling auth, users,
//! roles and permissions (changes through Raft, checked for the root role
//! when applied, as etcd's `authApplierV3` does), lookups (linearized reads
//! of the view), and `Authenticate`.
//!
//! Passwords are hashed here, on the member that took the request, on the
//! blocking pool, before proposing: the log and every member see only the
//! bcrypt hash, and applying never runs bcrypt.

use super::auth::Principal;
use super::Server;
use crate::auth::jwt::JwtKeys;
use crate::auth::{password, AuthChange, AuthError, Perm, PermType};
use crate::error::ApiError;
use crate::mvcc::validate::Origin;
use crate::mvcc::{Command, MvccError, Reply};
use crate::pb::authpb;
use crate::pb::etcdserverpb::{
    AuthRoleGetResponse, AuthUserGetResponse, AuthenticateRequest, ResponseHeader,
};

impl Server {
    /// The header of an auth response: the current revision of the store.
    pub fn auth_header(&self) -> ResponseHeader {
        self.header(self.view().revision)
    }

    /// Propose an auth change by `who`; the state machine checks the root
    /// role while auth is enabled.
    pub async fn auth_change(&self, who: &Principal, change: AuthChange) -> Result<(), ApiError> {
        let cmd = Command::Auth {
            caller: who.caller().cloned(),
            change,
        };
        self.check_command(&cmd, Origin::Client)?;
        match self.write(cmd, Origin::Client).await? {
            Reply::Auth => Ok(()),
            other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    /// bcrypt `password` at the configured cost, on the blocking pool.
    async fn hash_password(&self, password: String) -> Result<String, ApiError> {
        let cost = self.inner.config.bcrypt_cost;
        tokio::task::spawn_blocking(move || password::hash(&password, cost))
            .await
            .map_err(|e| ApiError::Internal(format!("password hashing failed: {e}")))?
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// UserAdd: the password is hashed before proposing (none with
    /// `no_password`).
    pub async fn user_add(
        &self,
        who: &Principal,
        name: String,
        password: String,
        no_password: bool,
    ) -> Result<(), ApiError> {
        if name.is_empty() {
            return Err(AuthError::UserEmpty.into());
        }
        let password = if no_password {
            None
        } else {
            Some(self.hash_password(password).await?)
        };
        self.auth_change(who, AuthChange::UserAdd { name, password })
            .await
    }

    /// UserChangePassword: hashed before proposing.
    pub async fn user_change_password(
        &self,
        who: &Principal,
        name: String,
        password: String,
    ) -> Result<(), ApiError> {
        if !self.view().auth.users.contains_key(&name) {
            return Err(AuthError::UserNotFound.into());
        }
        let password = self.hash_password(password).await?;
        self.auth_change(who, AuthChange::UserChangePassword { name, password })
            .await
    }

    /// RoleGrantPermission: etcd's permission types only.
    pub async fn role_grant_permission(
        &self,
        who: &Principal,
        name: String,
        perm: Option<authpb::Permission>,
    ) -> Result<(), ApiError> {
        let perm = perm.unwrap_or_default();
        let kind = PermType::from_i32(perm.perm_type).ok_or(AuthError::InvalidAuthMgmt)?;
        let perm = Perm {
            kind,
            key: perm.key.to_vec(),
            range_end: perm.range_end.to_vec(),
        };
        self.auth_change(who, AuthChange::RoleGrantPermission { name, perm })
            .await
    }

    /// The auth view after a linearized read.
    async fn auth_read(&self) -> Result<std::sync::Arc<crate::mvcc::View>, ApiError> {
        self.linearize().await?;
        Ok(self.view())
    }

    /// UserGet: the root role, or the user asking about itself.
    pub async fn user_get(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<AuthUserGetResponse, ApiError> {
        let view = self.auth_read().await?;
        if who.user() != Some(name) && *who != Principal::Local {
            view.auth.check_admin(who.user())?;
        }
        let user = view.auth.users.get(name).ok_or(AuthError::UserNotFound)?;
        Ok(AuthUserGetResponse {
            header: Some(self.header(view.revision)),
            roles: user.roles.clone(),
        })
    }

    /// UserList: the root role.
    pub async fn user_list(
        &self,
        who: &Principal,
    ) -> Result<(ResponseHeader, Vec<String>), ApiError> {
        let view = self.auth_read().await?;
        self.check_admin_on(who, &view)?;
        Ok((
            self.header(view.revision),
            view.auth.users.keys().cloned().collect(),
        ))
    }

    /// RoleGet: the root role, or a user that has the role.
    pub async fn role_get(
        &self,
        who: &Principal,
        role: &str,
    ) -> Result<AuthRoleGetResponse, ApiError> {
        let view = self.auth_read().await?;
        let own = who.user().is_some_and(|u| view.auth.has_role(u, role));
        if !own {
            self.check_admin_on(who, &view)?;
        }
        let r = view.auth.roles.get(role).ok_or(AuthError::RoleNotFound)?;
        Ok(AuthRoleGetResponse {
            header: Some(self.header(view.revision)),
            perm: r
                .perms
                .iter()
                .map(|p| authpb::Permission {
                    perm_type: p.kind.as_i32(),
                    key: p.key.clone().into(),
                    range_end: p.range_end.clone().into(),
                })
                .collect(),
        })
    }

    /// RoleList: the root role.
    pub async fn role_list(
        &self,
        who: &Principal,
    ) -> Result<(ResponseHeader, Vec<String>), ApiError> {
        let view = self.auth_read().await?;
        self.check_admin_on(who, &view)?;
        Ok((
            self.header(view.revision),
            view.auth.roles.keys().cloned().collect(),
        ))
    }

    fn check_admin_on(&self, who: &Principal, view: &crate::mvcc::View) -> Result<(), ApiError> {
        if *who == Principal::Local {
            return Ok(());
        }
        Ok(view.auth.check_admin(who.user())?)
    }

    /// Authenticate: check the password here (bcrypt, on the blocking
    /// pool), then issue a token: a simple token through Raft (every member
    /// learns it), or a JWT signed here. Retried while the auth store
    /// changed between the check and the apply, as etcd does.
    pub async fn authenticate(&self, r: AuthenticateRequest) -> Result<String, ApiError> {
        let deadline = super::deadline();
        loop {
            let view = self.auth_read().await?;
            let auth = &view.auth;
            if !auth.enabled {
                return Err(AuthError::AuthNotEnabled.into());
            }
            let hash = auth
                .users
                .get(&r.name)
                .ok_or(AuthError::AuthFailed)?
                .password
                .clone()
                .ok_or(AuthError::NoPasswordUser)?;
            let checked_revision = auth.revision;
            let password = r.password.clone();
            let ok = tokio::task::spawn_blocking(move || password::verify(&password, &hash))
                .await
                .map_err(|e| ApiError::Internal(format!("password check failed: {e}")))?;
            if !ok {
                tracing::info!(user = %r.name, "authentication failed, invalid password");
                return Err(AuthError::AuthFailed.into());
            }
            if let Some(keys) = &self.inner.jwt {
                return jwt_token(keys, &r.name, checked_revision);
            }
            let prefix = crate::auth::token::random_prefix()
                .ok_or_else(|| ApiError::Internal("no random numbers for a token".into()))?;
            let cmd = Command::Authenticate {
                name: r.name.clone(),
                prefix,
                issued_ms: crate::lessor::Clock::now().wall_ms,
                checked_revision,
            };
            self.check_command(&cmd, Origin::Client)?;
            match self.write(cmd, Origin::Client).await {
                Ok(Reply::Authenticated { token }) => return Ok(token),
                Ok(other) => return Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
                Err(ApiError::Mvcc(MvccError::Auth(AuthError::AuthOldRevision)))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tracing::info!("auth store changed while authenticating; retrying");
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn jwt_token(keys: &JwtKeys, user: &str, revision: u64) -> Result<String, ApiError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    keys.sign_token(user, revision, now)
        .map_err(ApiError::Internal)
}
