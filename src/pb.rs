//! The etcd v3 wire types and service traits generated from `proto/`, and
//! raftcd's own peer protocol (`raftcdpb`).
#![allow(clippy::all, missing_docs)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

pub mod authpb {
    tonic::include_proto!("authpb");
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd's Lock service (`proto/etcd/v3lockpb/v3lock.proto`).
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// etcd's Election service (`proto/etcd/v3electionpb/v3election.proto`).
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// The peer protocol between members of one cluster (`proto/raftcd/peer.proto`).
pub mod raftcdpb {
    tonic::include_proto!("raftcdpb");
}

/// raftcd's payment-channel service (`proto/raftcd/escrow.proto`).
pub mod escrowpb {
    tonic::include_proto!("raftcd.escrow.v1");
}
