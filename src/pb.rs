//! The etcd v3 wire types and service traits generated from `proto/`, and
//! raftcd's own peer protocol (`raftcdpb`).
#![allow(clippy::all, missing_docs)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    // serde in grpc-gateway's JSON (pbjson, see build.rs), for the JSON gateway.
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

pub mod authpb {
    tonic::include_proto!("authpb");
    // serde in grpc-gateway's JSON (pbjson, see build.rs), for the JSON gateway.
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    // serde in grpc-gateway's JSON (pbjson, see build.rs), for the JSON gateway.
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// etcd's Lock service (`proto/etcd/v3lockpb/v3lock.proto`).
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    // serde in grpc-gateway's JSON (pbjson, see build.rs), for the JSON gateway.
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// etcd's Election service (`proto/etcd/v3electionpb/v3election.proto`).
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    // serde in grpc-gateway's JSON (pbjson, see build.rs), for the JSON gateway.
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// The peer protocol between members of one cluster (`proto/raftcd/peer.proto`).
pub mod raftcdpb {
    tonic::include_proto!("raftcdpb");
}

/// raftcd's payment-channel service (`proto/raftcd/escrow.proto`).
pub mod escrowpb {
    tonic::include_proto!("raftcd.escrow.v1");
}

impl etcdserverpb::RequestOp {
    /// A txn operation putting `value` at `key`, attached to `lease` (0:
    /// none).
    pub fn put(key: bytes::Bytes, value: bytes::Bytes, lease: i64) -> Self {
        Self {
            request: Some(etcdserverpb::request_op::Request::RequestPut(
                etcdserverpb::PutRequest {
                    key,
                    value,
                    lease,
                    ..Default::default()
                },
            )),
        }
    }
}

impl etcdserverpb::Compare {
    /// `key`'s mod revision is `rev`: the guard of a compare-and-swap.
    pub fn mod_revision_is(key: bytes::Bytes, rev: i64) -> Self {
        Self {
            result: etcdserverpb::compare::CompareResult::Equal as i32,
            target: etcdserverpb::compare::CompareTarget::Mod as i32,
            key,
            range_end: bytes::Bytes::new(),
            target_union: Some(etcdserverpb::compare::TargetUnion::ModRevision(rev)),
        }
    }
}
