//! The auth errors, in etcd 3.4's words (its `rpctypes`); `api::status`
//! gives each etcd's gRPC code.

use serde::{Deserialize, Serialize};

/// Why an auth request, or a request checked against the auth store, failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AuthError {
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// A password for a user added with `--no-password` (etcd 3.4 answers
    /// its auth store's own error, unmapped: gRPC code Unknown).
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
}

/// etcd's gRPC code of an auth error, as a name `api::status` maps (this
/// module knows no gRPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    InvalidArgument,
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
    Unknown,
}

impl AuthError {
    /// The gRPC code etcd answers this error with.
    pub fn class(&self) -> ErrorClass {
        use AuthError::*;
        match self {
            UserEmpty | RoleEmpty | AuthFailed | InvalidAuthMgmt | AuthOldRevision => {
                ErrorClass::InvalidArgument
            }
            RootUserNotExist | RootRoleNotExist | UserAlreadyExist | UserNotFound
            | RoleAlreadyExist | RoleNotFound | RoleNotGranted | PermissionNotGranted
            | AuthNotEnabled => ErrorClass::FailedPrecondition,
            PermissionDenied => ErrorClass::PermissionDenied,
            InvalidAuthToken => ErrorClass::Unauthenticated,
            NoPasswordUser => ErrorClass::Unknown,
        }
    }
}
