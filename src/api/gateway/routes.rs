//! The gateway's paths: etcd 3.4's `google.api.http` annotations in
//! rpc.proto, one line each. etcd 3.4 has no route for HashKV (nor 3.5's
//! AuthStatus and Downgrade), so neither has raftcd.
//!
//! A service added to the client port's gRPC router later needs one line
//! per method here (as Lock and Election below), and its package goes into
//! build.rs's pbjson list.

use super::Method;
use crate::pb::etcdserverpb::*;
use crate::pb::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use crate::pb::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

/// Every (HTTP path, method) pair etcd 3.4's gateway serves.
#[rustfmt::skip]
pub fn etcd_methods() -> Vec<(&'static str, Method)> {
    type M = Method;
    vec![
        // KV
        ("/v3/kv/range", M::unary::<RangeRequest, RangeResponse>("/etcdserverpb.KV/Range")),
        ("/v3/kv/put", M::unary::<PutRequest, PutResponse>("/etcdserverpb.KV/Put")),
        ("/v3/kv/deleterange", M::unary::<DeleteRangeRequest, DeleteRangeResponse>("/etcdserverpb.KV/DeleteRange")),
        ("/v3/kv/txn", M::unary::<TxnRequest, TxnResponse>("/etcdserverpb.KV/Txn")),
        ("/v3/kv/compaction", M::unary::<CompactionRequest, CompactionResponse>("/etcdserverpb.KV/Compact")),
        // Watch
        ("/v3/watch", M::bidi_stream::<WatchRequest, WatchResponse>("/etcdserverpb.Watch/Watch")),
        // Lease (etcd 3.4 keeps the 3.3 `/v3/kv/lease/...` aliases)
        ("/v3/lease/grant", M::unary::<LeaseGrantRequest, LeaseGrantResponse>("/etcdserverpb.Lease/LeaseGrant")),
        ("/v3/lease/revoke", M::unary::<LeaseRevokeRequest, LeaseRevokeResponse>("/etcdserverpb.Lease/LeaseRevoke")),
        ("/v3/kv/lease/revoke", M::unary::<LeaseRevokeRequest, LeaseRevokeResponse>("/etcdserverpb.Lease/LeaseRevoke")),
        ("/v3/lease/keepalive", M::bidi_stream::<LeaseKeepAliveRequest, LeaseKeepAliveResponse>("/etcdserverpb.Lease/LeaseKeepAlive")),
        ("/v3/lease/timetolive", M::unary::<LeaseTimeToLiveRequest, LeaseTimeToLiveResponse>("/etcdserverpb.Lease/LeaseTimeToLive")),
        ("/v3/kv/lease/timetolive", M::unary::<LeaseTimeToLiveRequest, LeaseTimeToLiveResponse>("/etcdserverpb.Lease/LeaseTimeToLive")),
        ("/v3/lease/leases", M::unary::<LeaseLeasesRequest, LeaseLeasesResponse>("/etcdserverpb.Lease/LeaseLeases")),
        ("/v3/kv/lease/leases", M::unary::<LeaseLeasesRequest, LeaseLeasesResponse>("/etcdserverpb.Lease/LeaseLeases")),
        // Cluster
        ("/v3/cluster/member/add", M::unary::<MemberAddRequest, MemberAddResponse>("/etcdserverpb.Cluster/MemberAdd")),
        ("/v3/cluster/member/remove", M::unary::<MemberRemoveRequest, MemberRemoveResponse>("/etcdserverpb.Cluster/MemberRemove")),
        ("/v3/cluster/member/update", M::unary::<MemberUpdateRequest, MemberUpdateResponse>("/etcdserverpb.Cluster/MemberUpdate")),
        ("/v3/cluster/member/list", M::unary::<MemberListRequest, MemberListResponse>("/etcdserverpb.Cluster/MemberList")),
        ("/v3/cluster/member/promote", M::unary::<MemberPromoteRequest, MemberPromoteResponse>("/etcdserverpb.Cluster/MemberPromote")),
        // Maintenance
        ("/v3/maintenance/alarm", M::unary::<AlarmRequest, AlarmResponse>("/etcdserverpb.Maintenance/Alarm")),
        ("/v3/maintenance/status", M::unary::<StatusRequest, StatusResponse>("/etcdserverpb.Maintenance/Status")),
        ("/v3/maintenance/defragment", M::unary::<DefragmentRequest, DefragmentResponse>("/etcdserverpb.Maintenance/Defragment")),
        ("/v3/maintenance/hash", M::unary::<HashRequest, HashResponse>("/etcdserverpb.Maintenance/Hash")),
        ("/v3/maintenance/snapshot", M::server_stream::<SnapshotRequest, SnapshotResponse>("/etcdserverpb.Maintenance/Snapshot")),
        ("/v3/maintenance/transfer-leadership", M::unary::<MoveLeaderRequest, MoveLeaderResponse>("/etcdserverpb.Maintenance/MoveLeader")),
        // Auth: answers once the Auth service is in the gRPC router.
        // Lock and Election (etcd 3.4's v3lock.proto and v3election.proto)
        ("/v3/lock/lock", M::unary::<LockRequest, LockResponse>("/v3lockpb.Lock/Lock")),
        ("/v3/lock/unlock", M::unary::<UnlockRequest, UnlockResponse>("/v3lockpb.Lock/Unlock")),
        ("/v3/election/campaign", M::unary::<CampaignRequest, CampaignResponse>("/v3electionpb.Election/Campaign")),
        ("/v3/election/proclaim", M::unary::<ProclaimRequest, ProclaimResponse>("/v3electionpb.Election/Proclaim")),
        ("/v3/election/leader", M::unary::<LeaderRequest, LeaderResponse>("/v3electionpb.Election/Leader")),
        ("/v3/election/observe", M::server_stream::<LeaderRequest, LeaderResponse>("/v3electionpb.Election/Observe")),
        ("/v3/election/resign", M::unary::<ResignRequest, ResignResponse>("/v3electionpb.Election/Resign")),
        // Auth
        ("/v3/auth/enable", M::unary::<AuthEnableRequest, AuthEnableResponse>("/etcdserverpb.Auth/AuthEnable")),
        ("/v3/auth/disable", M::unary::<AuthDisableRequest, AuthDisableResponse>("/etcdserverpb.Auth/AuthDisable")),
        ("/v3/auth/authenticate", M::unary::<AuthenticateRequest, AuthenticateResponse>("/etcdserverpb.Auth/Authenticate")),
        ("/v3/auth/user/add", M::unary::<AuthUserAddRequest, AuthUserAddResponse>("/etcdserverpb.Auth/UserAdd")),
        ("/v3/auth/user/get", M::unary::<AuthUserGetRequest, AuthUserGetResponse>("/etcdserverpb.Auth/UserGet")),
        ("/v3/auth/user/list", M::unary::<AuthUserListRequest, AuthUserListResponse>("/etcdserverpb.Auth/UserList")),
        ("/v3/auth/user/delete", M::unary::<AuthUserDeleteRequest, AuthUserDeleteResponse>("/etcdserverpb.Auth/UserDelete")),
        ("/v3/auth/user/changepw", M::unary::<AuthUserChangePasswordRequest, AuthUserChangePasswordResponse>("/etcdserverpb.Auth/UserChangePassword")),
        ("/v3/auth/user/grant", M::unary::<AuthUserGrantRoleRequest, AuthUserGrantRoleResponse>("/etcdserverpb.Auth/UserGrantRole")),
        ("/v3/auth/user/revoke", M::unary::<AuthUserRevokeRoleRequest, AuthUserRevokeRoleResponse>("/etcdserverpb.Auth/UserRevokeRole")),
        ("/v3/auth/role/add", M::unary::<AuthRoleAddRequest, AuthRoleAddResponse>("/etcdserverpb.Auth/RoleAdd")),
        ("/v3/auth/role/get", M::unary::<AuthRoleGetRequest, AuthRoleGetResponse>("/etcdserverpb.Auth/RoleGet")),
        ("/v3/auth/role/list", M::unary::<AuthRoleListRequest, AuthRoleListResponse>("/etcdserverpb.Auth/RoleList")),
        ("/v3/auth/role/delete", M::unary::<AuthRoleDeleteRequest, AuthRoleDeleteResponse>("/etcdserverpb.Auth/RoleDelete")),
        ("/v3/auth/role/grant", M::unary::<AuthRoleGrantPermissionRequest, AuthRoleGrantPermissionResponse>("/etcdserverpb.Auth/RoleGrantPermission")),
        ("/v3/auth/role/revoke", M::unary::<AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse>("/etcdserverpb.Auth/RoleRevokePermission")),
    ]
}
