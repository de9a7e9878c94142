//! etcd's Auth service: AuthEnable, AuthDisable, Authenticate, User*,
//! Role*. The work is the core's (`server::auth_service`); etcd 3.4 has
//! no AuthStatus.

use tonic::{Request, Response, Status};

use super::principal;
use crate::auth::AuthChange;
use crate::pb::etcdserverpb::auth_server::Auth;
use crate::pb::etcdserverpb::*;
use crate::server::Server;

pub struct AuthService {
    server: Server,
}

impl AuthService {
    pub fn new(server: Server) -> Self {
        Self { server }
    }

    /// Run `change` for the sender of `req`; the reply is an empty
    /// response with the header.
    async fn change<T>(
        &self,
        req: &Request<T>,
        change: AuthChange,
    ) -> Result<ResponseHeader, Status> {
        let who = principal(&self.server, req).await?;
        self.server.auth_change(&who, change).await?;
        Ok(self.server.auth_header())
    }
}

macro_rules! header_only {
    ($t:ident, $h:expr) => {
        Ok(Response::new($t { header: Some($h) }))
    };
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        req: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        header_only!(
            AuthEnableResponse,
            self.change(&req, AuthChange::Enable).await?
        )
    }

    async fn auth_disable(
        &self,
        req: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        header_only!(
            AuthDisableResponse,
            self.change(&req, AuthChange::Disable).await?
        )
    }

    async fn authenticate(
        &self,
        req: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let token = self.server.authenticate(req.into_inner()).await?;
        Ok(Response::new(AuthenticateResponse {
            header: Some(self.server.auth_header()),
            token,
        }))
    }

    async fn user_add(
        &self,
        req: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let who = principal(&self.server, &req).await?;
        let r = req.into_inner();
        let no_password = r.options.is_some_and(|o| o.no_password);
        self.server
            .user_add(&who, r.name, r.password, no_password)
            .await?;
        header_only!(AuthUserAddResponse, self.server.auth_header())
    }

    async fn user_get(
        &self,
        req: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let who = principal(&self.server, &req).await?;
        let name = req.into_inner().name;
        Ok(Response::new(self.server.user_get(&who, &name).await?))
    }

    async fn user_list(
        &self,
        req: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let who = principal(&self.server, &req).await?;
        let (header, users) = self.server.user_list(&who).await?;
        Ok(Response::new(AuthUserListResponse {
            header: Some(header),
            users,
        }))
    }

    async fn user_delete(
        &self,
        req: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let name = req.get_ref().name.clone();
        header_only!(
            AuthUserDeleteResponse,
            self.change(&req, AuthChange::UserDelete { name }).await?
        )
    }

    async fn user_change_password(
        &self,
        req: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let who = principal(&self.server, &req).await?;
        let r = req.into_inner();
        self.server
            .user_change_password(&who, r.name, r.password)
            .await?;
        header_only!(AuthUserChangePasswordResponse, self.server.auth_header())
    }

    async fn user_grant_role(
        &self,
        req: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let r = req.get_ref().clone();
        let change = AuthChange::UserGrantRole {
            user: r.user,
            role: r.role,
        };
        header_only!(AuthUserGrantRoleResponse, self.change(&req, change).await?)
    }

    async fn user_revoke_role(
        &self,
        req: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let r = req.get_ref().clone();
        let change = AuthChange::UserRevokeRole {
            name: r.name,
            role: r.role,
        };
        header_only!(AuthUserRevokeRoleResponse, self.change(&req, change).await?)
    }

    async fn role_add(
        &self,
        req: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let name = req.get_ref().name.clone();
        header_only!(
            AuthRoleAddResponse,
            self.change(&req, AuthChange::RoleAdd { name }).await?
        )
    }

    async fn role_get(
        &self,
        req: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let who = principal(&self.server, &req).await?;
        let role = req.into_inner().role;
        Ok(Response::new(self.server.role_get(&who, &role).await?))
    }

    async fn role_list(
        &self,
        req: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let who = principal(&self.server, &req).await?;
        let (header, roles) = self.server.role_list(&who).await?;
        Ok(Response::new(AuthRoleListResponse {
            header: Some(header),
            roles,
        }))
    }

    async fn role_delete(
        &self,
        req: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let name = req.get_ref().role.clone();
        header_only!(
            AuthRoleDeleteResponse,
            self.change(&req, AuthChange::RoleDelete { name }).await?
        )
    }

    async fn role_grant_permission(
        &self,
        req: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let who = principal(&self.server, &req).await?;
        let r = req.into_inner();
        self.server
            .role_grant_permission(&who, r.name, r.perm)
            .await?;
        header_only!(AuthRoleGrantPermissionResponse, self.server.auth_header())
    }

    async fn role_revoke_permission(
        &self,
        req: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let r = req.get_ref().clone();
        let change = AuthChange::RoleRevokePermission {
            role: r.role,
            key: r.key.to_vec(),
            range_end: r.range_end.to_vec(),
        };
        header_only!(
            AuthRoleRevokePermissionResponse,
            self.change(&req, change).await?
        )
    }
}
