//! Every peer message a member decodes (`codec::decode_wire`): the first
//! byte picks the type, the rest is the payload. Requests the peer service
//! decodes (`raft/peer_service.rs`, `cluster/discovery.rs`): append-entries,
//! vote, install-snapshot, forwarded leader ops (a forwarded write is then
//! checked as the leader checks it), read-index and timeout-now (unit),
//! join, discover; the replies the sending side decodes
//! (`raft/network.rs`); and the gRPC envelope itself (`PeerRequest`,
//! protobuf). Never panics; what decodes re-encodes to an equal value.
#![no_main]
use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use prost::Message;
use raftcd::codec::{decode_wire, encode};
use raftcd::mvcc::validate::{check_command, Limits, Origin};
use raftcd::pb::raftcdpb::{PeerReply, PeerRequest};
use raftcd::raft::TypeConfig;
use raftcd::server::join::{JoinReply, JoinRequest};
use raftcd::server::ops::{LeaderOp, LeaderReply, Refusal};
use raftcd::server::replica::{DiscoverReply, DiscoverRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn round<T: Serialize + DeserializeOwned + Debug>(payload: &[u8]) -> Option<T> {
    let value: T = decode_wire(payload).ok()?;
    let again: T = decode_wire(&encode(&value)).expect("a re-encoded message decodes");
    assert_eq!(format!("{value:?}"), format!("{again:?}"));
    Some(value)
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, payload)) = data.split_first() else {
        return;
    };
    match which % 17 {
        0 => drop(round::<AppendEntriesRequest<TypeConfig>>(payload)),
        1 => drop(round::<VoteRequest<u64>>(payload)),
        2 => drop(round::<InstallSnapshotRequest<TypeConfig>>(payload)),
        3 => {
            if let Some(LeaderOp::Write(cmd)) = round::<LeaderOp>(payload) {
                let limits = Limits {
                    max_request_bytes: 1536 * 1024,
                    max_txn_ops: 128,
                };
                let _ = check_command(&cmd, Origin::Peer, &limits);
            }
        }
        4 => drop(round::<()>(payload)),
        5 => drop(round::<JoinRequest>(payload)),
        6 => drop(round::<DiscoverRequest>(payload)),
        7 => drop(round::<Result<AppendEntriesResponse<u64>, RaftError<u64>>>(
            payload,
        )),
        8 => drop(round::<Result<VoteResponse<u64>, RaftError<u64>>>(payload)),
        9 => drop(round::<
            Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>,
        >(payload)),
        10 => drop(round::<Result<LeaderReply, Refusal>>(payload)),
        11 => drop(round::<Result<u64, Refusal>>(payload)),
        12 => drop(round::<Result<(), String>>(payload)),
        13 => drop(round::<Result<JoinReply, String>>(payload)),
        14 => drop(round::<DiscoverReply>(payload)),
        15 => {
            if let Ok(req) = PeerRequest::decode(payload) {
                assert_eq!(
                    PeerRequest::decode(&req.encode_to_vec()[..]).ok(),
                    Some(req)
                );
            }
        }
        _ => {
            let _ = PeerReply::decode(payload);
        }
    }
});
