//! openraft's network traits over [`PeerTransport`]: [`PeerNetwork`] /
//! [`PeerConnection`] send AppendEntries (split to fit the message cap),
//! Vote and chunked InstallSnapshot to one peer and map what went wrong to
//! openraft's errors. The transport under it is [`super::network`].

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;

use super::network::{peer_url, PeerError, PeerTransport, Rpc};
use super::{MemberInfo, TypeConfig};
use crate::codec::encode;

/// How many of `entries` (at least one) fit in a message of `max` bytes,
/// leaving room for the request's other fields.
fn fitting_prefix(entries: &[openraft::Entry<TypeConfig>], max: usize) -> usize {
    let budget = max.saturating_sub(64 * 1024);
    let mut used = 0usize;
    for (i, e) in entries.iter().enumerate() {
        used = used.saturating_add(encode(e).len());
        if used > budget {
            return i.max(1);
        }
    }
    entries.len()
}

/// openraft's network factory: one [`PeerConnection`] per target member.
#[derive(Clone)]
pub struct PeerNetwork {
    transport: PeerTransport,
}

impl PeerNetwork {
    pub fn new(transport: PeerTransport) -> Self {
        Self { transport }
    }
}

/// openraft's view of one peer.
pub struct PeerConnection {
    transport: PeerTransport,
    target: u64,
    url: String,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &MemberInfo) -> PeerConnection {
        PeerConnection {
            transport: self.transport.clone(),
            target,
            url: peer_url(node).unwrap_or_default().to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

impl PeerConnection {
    /// Send one Raft request, `payload` being its encoding.
    async fn raft_call<Resp, E>(
        &self,
        rpc: Rpc,
        payload: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, MemberInfo, RaftError<u64, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.url.is_empty() {
            return Err(RPCError::Unreachable(Unreachable::new(&Message(format!(
                "member {:x} has no peer URL",
                self.target
            )))));
        }
        let reply: Result<Result<Resp, RaftError<u64, E>>, PeerError> = self
            .transport
            .call_encoded(rpc, self.target, &self.url, payload, option.hard_ttl())
            .await;
        match reply {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e) if e.not_delivered() => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, MemberInfo, RaftError<u64>>> {
        // openraft bounds a batch by entry count only: a request above the
        // peer message limit is cut to the longest prefix that fits, and the
        // reply says how far it got (openraft sends the rest next). One
        // entry always fits: a proposer batch is far below the limit (see
        // `Config::max_peer_message_bytes`). The request is encoded once;
        // only an oversized one is sized entry by entry and encoded again.
        let all = rpc.entries.len();
        let max = self.transport.max_message();
        let mut payload = encode(&rpc);
        let mut keep = all;
        if payload.len() > max {
            keep = fitting_prefix(&rpc.entries, max);
            rpc.entries.truncate(keep);
            payload = encode(&rpc);
        }
        let last = rpc.entries.last().map(|e| e.log_id);
        let resp = self.raft_call(Rpc::AppendEntries, payload, &option).await?;
        Ok(match resp {
            AppendEntriesResponse::Success if keep < all => {
                tracing::debug!(
                    sent = keep,
                    all,
                    "append-entries trimmed to the peer message limit"
                );
                AppendEntriesResponse::PartialSuccess(last)
            }
            other => other,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, MemberInfo, RaftError<u64, InstallSnapshotError>>,
    > {
        self.raft_call(Rpc::InstallSnapshot, encode(&rpc), &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, MemberInfo, RaftError<u64>>> {
        self.raft_call(Rpc::Vote, encode(&rpc), &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Retry an unreachable peer soon: on loopback and LANs a restarted
        // member is back within a few hundred milliseconds.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
