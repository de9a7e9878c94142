//! The peer network, client side: how this member reaches the others.
//!
//! [`PeerTransport`] is the one place where bytes leave for another member:
//! it owns the connections ([`super::peer_client`]: one HTTP/2 connection
//! per peer URL, dialed on first use), stamps every request with this
//! member's cluster id, maps gRPC failures to [`PeerError`], and runs every outgoing request past an
//! optional [`FaultFilter`] (drop / delay per peer, for partition and
//! linearizability tests). `https://` peers are dialed over TLS with this
//! member's peer certificate (`--peer-cert-file`, `--peer-key-file`),
//! verified against `--peer-trusted-ca-file`, as etcd does.
//!
//! On top of it, [`PeerNetwork`] / [`PeerConnection`] implement openraft's
//! network traits (AppendEntries, Vote, chunked InstallSnapshot), and the
//! node uses [`PeerTransport::call`] directly for forwarded writes,
//! read-index requests and joins. The server side is
//! [`super::peer_service`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tonic_prost::ProstCodec;

use super::peer_client::{Connections, NotSent};
use super::{MemberInfo, TypeConfig};
use crate::codec::{decode_wire, encode};
use crate::pb::raftcdpb::{PeerReply, PeerRequest};
use crate::tls::TlsConfig;

/// gRPC metadata key naming why a peer refused a request.
pub const REFUSAL_KEY: &str = "raftcd-refusal";
/// Refusal: the request came from another cluster.
pub const REFUSED_CLUSTER: &str = "cluster-mismatch";
/// Refusal: the request was meant for another member.
pub const REFUSED_WRONG_MEMBER: &str = "wrong-member";
/// Refusal: the sender was removed from the cluster.
pub const REFUSED_REMOVED: &str = "removed";

/// The peer RPCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Forward,
    ReadIndex,
    Join,
    TimeoutNow,
    Discover,
}

impl Rpc {
    /// The gRPC method's path (service `raftcdpb.Peer`, proto/raftcd/peer.proto).
    fn path(self) -> http::uri::PathAndQuery {
        http::uri::PathAndQuery::from_static(match self {
            Rpc::AppendEntries => "/raftcdpb.Peer/AppendEntries",
            Rpc::Vote => "/raftcdpb.Peer/Vote",
            Rpc::InstallSnapshot => "/raftcdpb.Peer/InstallSnapshot",
            Rpc::Forward => "/raftcdpb.Peer/Forward",
            Rpc::ReadIndex => "/raftcdpb.Peer/ReadIndex",
            Rpc::Join => "/raftcdpb.Peer/Join",
            Rpc::TimeoutNow => "/raftcdpb.Peer/TimeoutNow",
            Rpc::Discover => "/raftcdpb.Peer/Discover",
        })
    }
}

/// What a [`FaultFilter`] does to one outgoing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Send it normally.
    Deliver,
    /// Do not send it; the caller sees the peer as unreachable.
    Drop,
    /// Send it after this long.
    Delay(Duration),
}

/// Decides the fate of each outgoing peer request (fault injection).
pub trait FaultFilter: Send + Sync + 'static {
    /// Called once per request to member `to`.
    fn outgoing(&self, to: u64, rpc: Rpc) -> Fault;
}

/// Why a peer request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// The request certainly did not reach the peer (no connection, or
    /// dropped by the fault filter).
    #[error("peer {to} at {url} is unreachable: {reason}")]
    Unreachable {
        to: u64,
        url: String,
        reason: String,
    },
    /// The request may or may not have reached the peer.
    #[error("request to peer {to} at {url} failed: {reason}")]
    Failed {
        to: u64,
        url: String,
        reason: String,
    },
    /// The peer belongs to another cluster (or we were removed from it, or
    /// the URL now belongs to another member); it refused the request.
    #[error("peer at {url} refused the request: {reason}")]
    Refused {
        url: String,
        kind: String,
        reason: String,
    },
    /// The reply could not be decoded.
    #[error("bad reply from peer {to}: {reason}")]
    BadReply { to: u64, reason: String },
}

impl PeerError {
    /// The request certainly was not executed by the peer.
    pub fn not_delivered(&self) -> bool {
        matches!(
            self,
            PeerError::Unreachable { .. } | PeerError::Refused { .. }
        )
    }
}

/// A refusal seen by this member that means it must not keep going: it
/// talks to another cluster, or it was removed from its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    ClusterMismatch(String),
    Removed(String),
}

/// When requests to one member last succeeded and last failed.
#[derive(Debug, Default, Clone, Copy)]
struct PeerHealth {
    last_reply: Option<Instant>,
    last_failure: Option<Instant>,
}

/// Connections to the other members, shared by Raft and the node.
#[derive(Clone)]
pub struct PeerTransport {
    inner: Arc<TransportInner>,
}

struct TransportInner {
    cluster_id: u64,
    member_id: u64,
    /// Largest message sent or accepted (see `Config::max_peer_message_bytes`).
    max_message: usize,
    connections: Connections,
    filter: RwLock<Option<Arc<dyn FaultFilter>>>,
    rejection: watch::Sender<Option<Rejection>>,
    /// How each member's requests went lately (etcd's transport
    /// `ActiveSince`, used by the strict reconfiguration checks).
    health: Mutex<HashMap<u64, PeerHealth>>,
}

impl PeerTransport {
    /// A transport for member `member_id` of cluster `cluster_id`, with
    /// the peer TLS settings for `https://` peers, sending and accepting
    /// messages of at most `max_message` bytes.
    pub fn new(
        cluster_id: u64,
        member_id: u64,
        tls: Option<TlsConfig>,
        max_message: usize,
    ) -> Self {
        let (rejection, _) = watch::channel(None);
        Self {
            inner: Arc::new(TransportInner {
                cluster_id,
                member_id,
                max_message,
                connections: Connections::new(tls),
                filter: RwLock::new(None),
                rejection,
                health: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Install (or with `None` remove) a fault-injection filter.
    pub fn set_fault_filter(&self, filter: Option<Arc<dyn FaultFilter>>) {
        if let Ok(mut f) = self.inner.filter.write() {
            *f = filter;
        }
    }

    /// Forget every cached peer connection: the next request to each peer
    /// dials anew, with the certificate files as they are now (called after
    /// a certificate reload; requests in flight finish on the old ones).
    pub fn reset_connections(&self) {
        self.inner.connections.reset();
    }

    /// The largest message sent to or accepted from a peer.
    pub fn max_message(&self) -> usize {
        self.inner.max_message
    }

    /// Whether member `to` is reachable now: it answered one of our
    /// requests within `window`, and no request to it failed since.
    pub fn is_active(&self, to: u64, window: Duration) -> bool {
        let Ok(health) = self.inner.health.lock() else {
            return false;
        };
        health.get(&to).is_some_and(|h| {
            h.last_reply
                .is_some_and(|r| r.elapsed() <= window && h.last_failure.is_none_or(|f| f < r))
        })
    }

    /// Send one request to member `to` at `url` and wait at most `timeout`
    /// for its reply payload.
    pub async fn call(
        &self,
        rpc: Rpc,
        to: u64,
        url: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, PeerError> {
        let result = self.call_once(rpc, to, url, payload, timeout).await;
        if let Ok(mut health) = self.inner.health.lock() {
            let h = health.entry(to).or_default();
            match &result {
                Ok(_) => h.last_reply = Some(Instant::now()),
                Err(_) => h.last_failure = Some(Instant::now()),
            }
        }
        result
    }

    /// Refusals that mean this member should stop (see [`Rejection`]).
    pub fn rejections(&self) -> watch::Receiver<Option<Rejection>> {
        self.inner.rejection.subscribe()
    }

    async fn call_once(
        &self,
        rpc: Rpc,
        to: u64,
        url: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, PeerError> {
        let filter = self.inner.filter.read().ok().and_then(|f| f.clone());
        if let Some(f) = filter {
            match f.outgoing(to, rpc) {
                Fault::Deliver => {}
                Fault::Drop => {
                    return Err(PeerError::Unreachable {
                        to,
                        url: url.to_string(),
                        reason: "dropped by the fault filter".into(),
                    })
                }
                Fault::Delay(d) => tokio::time::sleep(d).await,
            }
        }
        let unreachable = |reason: String| PeerError::Unreachable {
            to,
            url: url.to_string(),
            reason,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let connection =
            match tokio::time::timeout_at(deadline, self.inner.connections.get(url)).await {
                Ok(Ok(c)) => c,
                Ok(Err(NotSent(reason))) => return Err(unreachable(reason)),
                Err(_) => return Err(unreachable(format!("no connection within {timeout:?}"))),
            };
        let origin = connection.origin();
        let mut grpc = tonic::client::Grpc::with_origin(connection, origin)
            .max_decoding_message_size(self.inner.max_message)
            .max_encoding_message_size(self.inner.max_message);
        let (cluster_id, from) = match rpc {
            Rpc::Join | Rpc::Discover => (0, 0),
            _ => (self.inner.cluster_id, self.inner.member_id),
        };
        // No grpc-timeout header: the peer port does not act on it, and the
        // deadline is kept here.
        let request = tonic::Request::new(PeerRequest {
            cluster_id,
            from,
            to,
            payload: payload.into(),
        });
        // The generated client's methods, without the method-name extension
        // they insert (two allocations per call that nothing reads).
        let fut = grpc.unary::<_, PeerReply, _>(request, rpc.path(), ProstCodec::default());
        let result = match tokio::time::timeout_at(deadline, fut).await {
            Ok(r) => r,
            Err(_) => {
                return Err(PeerError::Failed {
                    to,
                    url: url.to_string(),
                    reason: format!("no reply within {timeout:?}"),
                })
            }
        };
        match result {
            Ok(reply) => Ok(reply.into_inner().payload.to_vec()),
            Err(status) => Err(self.classify(to, url, status)),
        }
    }

    fn classify(&self, to: u64, url: &str, status: tonic::Status) -> PeerError {
        let refusal = status
            .metadata()
            .get(REFUSAL_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(kind) = refusal {
            let reason = status.message().to_string();
            let rejection = match kind.as_str() {
                REFUSED_CLUSTER => Some(Rejection::ClusterMismatch(reason.clone())),
                REFUSED_REMOVED => Some(Rejection::Removed(reason.clone())),
                _ => None,
            };
            if let Some(r) = rejection {
                tracing::error!(peer = %url, %reason, "a peer refused this member");
                self.inner.rejection.send_replace(Some(r));
            } else {
                tracing::warn!(peer = %url, %reason, "a peer refused a request");
            }
            return PeerError::Refused {
                url: url.to_string(),
                kind,
                reason,
            };
        }
        let reason = format!("{:?}: {}", status.code(), status.message());
        // A request handed back by its closed connection never left.
        let not_sent = std::error::Error::source(&status).is_some_and(|e| e.is::<NotSent>());
        if not_sent {
            PeerError::Unreachable {
                to,
                url: url.to_string(),
                reason,
            }
        } else {
            PeerError::Failed {
                to,
                url: url.to_string(),
                reason,
            }
        }
    }

    /// [`Self::call`] with a typed request and reply, both in the versioned
    /// postcard encoding.
    pub async fn call_typed<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        rpc: Rpc,
        to: u64,
        url: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        self.call_encoded(rpc, to, url, encode(req), timeout).await
    }

    /// [`Self::call_typed`] with the request already encoded.
    pub async fn call_encoded<Resp: DeserializeOwned>(
        &self,
        rpc: Rpc,
        to: u64,
        url: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let bytes = self.call(rpc, to, url, payload, timeout).await?;
        decode_wire(&bytes).map_err(|reason| PeerError::BadReply { to, reason })
    }
}

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

/// The first peer URL of a member, the one its peers dial.
pub fn peer_url(node: &MemberInfo) -> Option<&str> {
    node.peer_urls.first().map(String::as_str)
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
