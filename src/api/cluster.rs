//! etcd's Cluster service: the member list. Changing membership arrives
//! with multi-member clusters; until then those calls say so.

use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};

pub struct ClusterService {
    node: Node,
}

impl ClusterService {
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    fn members(&self) -> Vec<Member> {
        let metrics = self.node.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, info)| Member {
                id: *id,
                name: info.name.clone(),
                peer_ur_ls: info.peer_urls.clone(),
                client_ur_ls: info.client_urls.clone(),
                is_learner: !voters.contains(id),
            })
            .collect()
    }
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "etcdserver: {what} is not supported by this single-member build"
    ))
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _r: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(not_yet("member add"))
    }

    async fn member_remove(
        &self,
        _r: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(not_yet("member remove"))
    }

    async fn member_update(
        &self,
        _r: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(not_yet("member update"))
    }

    async fn member_list(
        &self,
        _r: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let mut header = self.node.header(0);
        // etcd's member list header carries no revision.
        header.revision = 0;
        Ok(Response::new(MemberListResponse {
            header: Some(header),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        _r: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(not_yet("member promote"))
    }
}
