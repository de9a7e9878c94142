//! The peer network: how this member's Raft talks to other members.
//!
//! raftcd currently runs single-member clusters, so there is no peer to
//! reach and every RPC reports the target unreachable. The multi-member
//! issue replaces [`PeerNetwork`] with a tonic client of the peer service
//! (which will also carry TLS and fault injection); nothing else changes.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::{MemberInfo, TypeConfig};

#[derive(Debug, thiserror::Error)]
#[error("peer {0} is not reachable: this build serves single-member clusters only")]
struct NoPeers(u64);

/// Creates connections to peers.
#[derive(Clone, Default)]
pub struct PeerNetwork;

/// A connection to one peer.
pub struct PeerClient {
    target: u64,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, _node: &MemberInfo) -> PeerClient {
        PeerClient { target }
    }
}

impl PeerClient {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<u64, MemberInfo, E> {
        RPCError::Unreachable(Unreachable::new(&NoPeers(self.target)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, MemberInfo, RaftError<u64>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, MemberInfo, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, MemberInfo, RaftError<u64>>> {
        Err(self.unreachable())
    }
}
