//! etcd's Cluster service: member list, add (voter or learner), remove,
//! update (peer URLs) and promote. Changes run on the leader (forwarded
//! there by any member, see `server::leader`); the list is this member's
//! view of the membership, as in etcd 3.4.

use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::mvcc::validate::Origin;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use crate::server::ops::{LeaderOp, LeaderReply};
use crate::server::{MemberRow, Server};

pub struct ClusterService {
    node: Server,
}

fn member(r: MemberRow) -> Member {
    Member {
        id: r.id,
        name: r.name,
        peer_ur_ls: r.peer_urls,
        client_ur_ls: r.client_urls,
        is_learner: r.is_learner,
    }
}

impl ClusterService {
    pub fn new(node: Server) -> Self {
        Self { node }
    }

    fn header(&self) -> ResponseHeader {
        let mut header = self.node.header(0);
        // etcd's cluster responses carry no revision.
        header.revision = 0;
        header
    }

    /// A membership change by the sender of `req`: etcd's
    /// `checkMembershipOperationPermission` (the root role while auth is
    /// enabled), then the change on the leader.
    async fn change<T>(
        &self,
        req: &Request<T>,
        op: LeaderOp,
    ) -> Result<(Option<Member>, Vec<Member>), Status> {
        let who = super::principal(&self.node, req).await?;
        self.node.check_admin(&who)?;
        Ok(self.change_op(op).await?)
    }

    async fn change_op(&self, op: LeaderOp) -> Result<(Option<Member>, Vec<Member>), ApiError> {
        match self.node.leader_call(op, Origin::Client).await? {
            LeaderReply::Members { member: m, members } => {
                Ok((m.map(member), members.into_iter().map(member).collect()))
            }
            other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        r: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let op = LeaderOp::AddMember {
            peer_urls: r.get_ref().peer_ur_ls.clone(),
            learner: r.get_ref().is_learner,
        };
        let (added, members) = self.change(&r, op).await?;
        Ok(Response::new(MemberAddResponse {
            header: Some(self.header()),
            member: added,
            members,
        }))
    }

    async fn member_remove(
        &self,
        r: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let op = LeaderOp::RemoveMember { id: r.get_ref().id };
        let (_, members) = self.change(&r, op).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: Some(self.header()),
            members,
        }))
    }

    async fn member_update(
        &self,
        r: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let op = LeaderOp::UpdateMember {
            id: r.get_ref().id,
            peer_urls: r.get_ref().peer_ur_ls.clone(),
        };
        let (_, members) = self.change(&r, op).await?;
        Ok(Response::new(MemberUpdateResponse {
            header: Some(self.header()),
            members,
        }))
    }

    async fn member_list(
        &self,
        _r: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: Some(self.header()),
            members: self.node.members().into_iter().map(member).collect(),
        }))
    }

    async fn member_promote(
        &self,
        r: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let op = LeaderOp::PromoteMember { id: r.get_ref().id };
        let (_, members) = self.change(&r, op).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: Some(self.header()),
            members,
        }))
    }
}
