//! The replicated auth store (etcd 3.4's `auth/store.go`): users, roles,
//! their permissions, the enabled flag and the auth revision. Every change
//! is a deterministic function of the state and the command, applied on
//! every member; passwords arrive already hashed (bcrypt runs on the member
//! that took the request, before proposing), so applying never hashes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::AuthError;
use super::perm::{permits, Access, Perm};

/// The user etcd refuses to enable auth without.
pub const ROOT_USER: &str = "root";
/// The role that may do everything.
pub const ROOT_ROLE: &str = "root";

/// Who sent a request, as checked before it was proposed: the user and the
/// auth revision the check saw (etcd's request header `username` and
/// `auth_revision`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub user: String,
    pub revision: u64,
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct User {
    /// The bcrypt hash of the password; `None` for a user added with
    /// `--no-password` (it can only be a client certificate's CN).
    pub password: Option<String>,
    /// Granted roles, sorted.
    pub roles: Vec<String>,
}

/// One role: its key permissions, sorted by key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Role {
    pub perms: Vec<Perm>,
}

/// The whole auth store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub enabled: bool,
    /// Incremented by every change of users, roles or permissions and by
    /// disabling auth (as etcd's `commitRevision`); starts at 1.
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
}

impl Default for AuthState {
    fn default() -> Self {
        Self {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

/// A change of the auth store (the state machine's auth commands).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthChange {
    Enable,
    Disable,
    /// `password`: the bcrypt hash, `None` for no password.
    UserAdd {
        name: String,
        password: Option<String>,
    },
    UserDelete {
        name: String,
    },
    /// `password`: the new bcrypt hash.
    UserChangePassword {
        name: String,
        password: String,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        name: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        name: String,
        perm: Perm,
    },
    RoleRevokePermission {
        role: String,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        range_end: Vec<u8>,
    },
}

impl AuthChange {
    /// Bytes of the names and keys it carries, for the request size limit.
    pub fn size(&self) -> usize {
        use AuthChange::*;
        16 + match self {
            Enable | Disable => 0,
            UserAdd { name, password } => name.len() + password.as_ref().map_or(0, String::len),
            UserDelete { name } | RoleAdd { name } | RoleDelete { name } => name.len(),
            UserChangePassword { name, password } => name.len() + password.len(),
            UserGrantRole { user: a, role: b } | UserRevokeRole { name: a, role: b } => {
                a.len() + b.len()
            }
            RoleGrantPermission { name, perm } => {
                name.len() + perm.key.len() + perm.range_end.len()
            }
            RoleRevokePermission {
                role,
                key,
                range_end,
            } => role.len() + key.len() + range_end.len(),
        }
    }
}

impl User {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles
            .binary_search_by(|r| r.as_str().cmp(role))
            .is_ok()
    }
}

impl AuthState {
    fn bump(&mut self) {
        self.revision += 1;
    }

    /// Apply `change`, as etcd's auth store does; on error nothing changed.
    pub fn apply(&mut self, change: &AuthChange) -> Result<(), AuthError> {
        use AuthChange::*;
        match change {
            Enable => {
                if self.enabled {
                    return Ok(());
                }
                let root = self
                    .users
                    .get(ROOT_USER)
                    .ok_or(AuthError::RootUserNotExist)?;
                if !root.has_role(ROOT_ROLE) {
                    return Err(AuthError::RootRoleNotExist);
                }
                // etcd enables without a new revision.
                self.enabled = true;
            }
            Disable => {
                if !self.enabled {
                    return Ok(());
                }
                self.enabled = false;
                self.bump();
            }
            UserAdd { name, password } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                let user = User {
                    password: password.clone(),
                    roles: Vec::new(),
                };
                self.users.insert(name.clone(), user);
                self.bump();
            }
            UserDelete { name } => {
                if self.enabled && name == ROOT_USER {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.users.remove(name).ok_or(AuthError::UserNotFound)?;
                self.bump();
            }
            UserChangePassword { name, password } => {
                let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                user.password = Some(password.clone());
                self.bump();
            }
            UserGrantRole { user, role } => {
                if !self.users.contains_key(user) {
                    return Err(AuthError::UserNotFound);
                }
                if role != ROOT_ROLE && !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound);
                }
                let u = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                match u.roles.binary_search(role) {
                    // Already granted: etcd ignores it, no new revision.
                    Ok(_) => return Ok(()),
                    Err(at) => u.roles.insert(at, role.clone()),
                }
                self.bump();
            }
            UserRevokeRole { name, role } => {
                if self.enabled && name == ROOT_USER && role == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                let at = u
                    .roles
                    .binary_search(role)
                    .map_err(|_| AuthError::RoleNotGranted)?;
                u.roles.remove(at);
                self.bump();
            }
            RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                self.roles.insert(name.clone(), Role::default());
                self.bump();
            }
            RoleDelete { name } => {
                if self.enabled && name == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
                for u in self.users.values_mut() {
                    u.roles.retain(|r| r != name);
                }
                self.bump();
            }
            RoleGrantPermission { name, perm } => {
                let role = self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)?;
                match role
                    .perms
                    .iter_mut()
                    .find(|p| p.key == perm.key && p.range_end == perm.range_end)
                {
                    Some(p) => p.kind = perm.kind,
                    None => {
                        let at = role.perms.partition_point(|p| p.key <= perm.key);
                        role.perms.insert(at, perm.clone());
                    }
                }
                self.bump();
            }
            RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let r = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                let before = r.perms.len();
                r.perms
                    .retain(|p| !(p.key == *key && p.range_end == *range_end));
                if r.perms.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
                self.bump();
            }
        }
        Ok(())
    }

    /// etcd's `isOpPermitted`: may `caller` read or write `key` (alone, or
    /// up to `range_end`)? Always yes while auth is disabled.
    pub fn check_keys(
        &self,
        caller: Option<&Caller>,
        key: &[u8],
        range_end: &[u8],
        want: Access,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let caller = caller.ok_or(AuthError::UserEmpty)?;
        if caller.revision == 0 {
            return Err(AuthError::UserEmpty);
        }
        if caller.revision < self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        let user = self
            .users
            .get(&caller.user)
            .ok_or(AuthError::PermissionDenied)?;
        if user.has_role(ROOT_ROLE) {
            return Ok(());
        }
        let perms = user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.perms.iter());
        if permits(perms, key, range_end, want) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// etcd's `IsAdminPermitted`: the caller has the root role (always yes
    /// while auth is disabled).
    pub fn check_admin(&self, user: Option<&str>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let user = user.ok_or(AuthError::UserEmpty)?;
        let u = self.users.get(user).ok_or(AuthError::UserNotFound)?;
        if u.has_role(ROOT_ROLE) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Whether `user` exists and has `role`.
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.has_role(role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::perm::PermType;

    fn add_user(s: &mut AuthState, name: &str) {
        s.apply(&AuthChange::UserAdd {
            name: name.into(),
            password: Some("hash".into()),
        })
        .unwrap();
    }

    #[test]
    fn enable_needs_root_with_the_root_role() {
        let mut s = AuthState::default();
        assert_eq!(
            s.apply(&AuthChange::Enable),
            Err(AuthError::RootUserNotExist)
        );
        add_user(&mut s, "root");
        assert_eq!(
            s.apply(&AuthChange::Enable),
            Err(AuthError::RootRoleNotExist)
        );
        let grant = AuthChange::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        };
        s.apply(&grant).unwrap();
        let rev = s.revision;
        s.apply(&grant).unwrap();
        assert_eq!(s.revision, rev, "a repeated grant changes nothing");
        s.apply(&AuthChange::Enable).unwrap();
        assert!(s.enabled);
        assert_eq!(s.revision, rev, "enabling keeps the revision");
        let del = AuthChange::UserDelete {
            name: "root".into(),
        };
        assert_eq!(s.apply(&del), Err(AuthError::InvalidAuthMgmt));
        s.apply(&AuthChange::Disable).unwrap();
        assert_eq!(s.revision, rev + 1);
    }

    #[test]
    fn permissions_follow_roles_and_revisions() {
        let mut s = AuthState::default();
        add_user(&mut s, "root");
        add_user(&mut s, "u");
        for c in [
            AuthChange::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            },
            AuthChange::RoleAdd { name: "r".into() },
            AuthChange::RoleGrantPermission {
                name: "r".into(),
                perm: Perm {
                    kind: PermType::Read,
                    key: b"a/".to_vec(),
                    range_end: b"a0".to_vec(),
                },
            },
            AuthChange::UserGrantRole {
                user: "u".into(),
                role: "r".into(),
            },
            AuthChange::Enable,
        ] {
            s.apply(&c).unwrap();
        }
        let u = Caller {
            user: "u".into(),
            revision: s.revision,
        };
        assert_eq!(s.check_keys(Some(&u), b"a/x", b"", Access::Read), Ok(()));
        assert_eq!(
            s.check_keys(Some(&u), b"a/x", b"", Access::Write),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            s.check_keys(None, b"a/x", b"", Access::Read),
            Err(AuthError::UserEmpty)
        );
        assert_eq!(s.check_admin(Some("u")), Err(AuthError::PermissionDenied));
        assert_eq!(s.check_admin(Some("root")), Ok(()));
        assert_eq!(s.check_admin(Some("x")), Err(AuthError::UserNotFound));
        s.apply(&AuthChange::RoleDelete { name: "r".into() })
            .unwrap();
        assert!(s.users["u"].roles.is_empty());
        assert_eq!(
            s.check_keys(Some(&u), b"a/x", b"", Access::Read),
            Err(AuthError::AuthOldRevision)
        );
    }
}
