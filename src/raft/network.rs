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
//! On top of it, [`super::raft_network`] implements openraft's network
//! traits (AppendEntries, Vote, chunked InstallSnapshot), and the node uses
//! [`PeerTransport::call`] directly for forwarded writes (on a stream per
//! leader, [`super::forward_stream`]), read-index requests and joins. The
//! server side is [`super::peer_service`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tonic_prost::ProstCodec;

use super::peer_client::{Connections, NotSent};
use super::peer_stream::{Envelope, PeerStreams, StreamError};
use super::MemberInfo;
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

/// How this member forwarded requests to a leader, and sent AppendEntries
/// to followers (`/metrics`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamCounts {
    /// Forwarding streams opened.
    pub forward_streams_opened: u64,
    /// Forwarded requests put on a stream.
    pub forwarded_on_stream: u64,
    /// Forwarded requests sent as unary calls (the leader had no streams).
    pub forwarded_by_call: u64,
    /// AppendEntries streams opened to followers, and AppendEntries sent
    /// on them.
    pub append_streams_opened: u64,
    pub appends_on_stream: u64,
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
    /// Forwarded requests' streams to the leader (`Rpc::Forward`), and
    /// AppendEntries' streams to the followers.
    forward_streams: PeerStreams,
    append_streams: PeerStreams,
    /// Forwarded requests sent as unary calls.
    forwarded_by_call: AtomicU64,
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
                forward_streams: PeerStreams::new("/raftcdpb.Peer/ForwardStream"),
                append_streams: PeerStreams::new("/raftcdpb.Peer/AppendEntriesStream"),
                forwarded_by_call: AtomicU64::new(0),
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
        self.inner.forward_streams.reset();
        self.inner.append_streams.reset();
    }

    /// How this member forwarded requests and sent AppendEntries so far.
    pub fn stream_counts(&self) -> StreamCounts {
        let (forward_streams_opened, forwarded_on_stream) = self.inner.forward_streams.counts();
        let (append_streams_opened, appends_on_stream) = self.inner.append_streams.counts();
        StreamCounts {
            forward_streams_opened,
            forwarded_on_stream,
            append_streams_opened,
            appends_on_stream,
            forwarded_by_call: self.inner.forwarded_by_call.load(Ordering::Relaxed),
        }
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
    /// for its reply payload. A forwarded request or an AppendEntries goes
    /// on this member's stream of its kind to `to` ([`super::peer_stream`]),
    /// or as a call of its own if `to` has no such stream.
    pub async fn call(
        &self,
        rpc: Rpc,
        to: u64,
        url: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, PeerError> {
        let result = match self.filter(to, url, rpc).await {
            Err(e) => Err(e),
            Ok(()) => match self.streams_for(rpc) {
                Some(streams) => {
                    self.stream_once(streams, rpc, to, url, payload.into(), timeout)
                        .await
                }
                None => self.send(rpc, to, url, payload.into(), timeout).await,
            },
        };
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

    /// Run the fault filter (if any) on a request to `to`: Err if it is
    /// dropped, after the delay if it is delayed.
    async fn filter(&self, to: u64, url: &str, rpc: Rpc) -> Result<(), PeerError> {
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
        Ok(())
    }

    /// The streams requests of kind `rpc` go on, if they go on streams.
    fn streams_for(&self, rpc: Rpc) -> Option<&PeerStreams> {
        match rpc {
            Rpc::Forward => Some(&self.inner.forward_streams),
            Rpc::AppendEntries => Some(&self.inner.append_streams),
            _ => None,
        }
    }

    /// A request on `streams`, this member's stream of its kind to `to`, or
    /// as its own call if `to` has no such stream (past the fault filter).
    async fn stream_once(
        &self,
        streams: &PeerStreams,
        rpc: Rpc,
        to: u64,
        url: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, PeerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let envelope = Envelope {
            cluster_id: self.inner.cluster_id,
            from: self.inner.member_id,
            to,
        };
        let sent = streams.call(
            &self.inner.connections,
            url,
            envelope,
            payload.clone(),
            self.inner.max_message,
            deadline,
        );
        let failed = |reason: String| PeerError::Failed {
            to,
            url: url.to_string(),
            reason,
        };
        match sent.await {
            Ok(reply) => Ok(reply),
            Err(StreamError::Unsupported) => {
                if rpc == Rpc::Forward {
                    self.inner.forwarded_by_call.fetch_add(1, Ordering::Relaxed);
                }
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                self.send(rpc, to, url, payload, left).await
            }
            Err(StreamError::NotSent(reason)) => Err(PeerError::Unreachable {
                to,
                url: url.to_string(),
                reason,
            }),
            Err(StreamError::Refused(status)) => Err(self.classify(to, url, status)),
            Err(StreamError::Ended(Some(status), _)) => match self.classify(to, url, status) {
                // A refusal ends a stream before the refused request and
                // those after it run.
                e @ PeerError::Refused { .. } => Err(e),
                e => Err(failed(e.to_string())),
            },
            Err(StreamError::Ended(None, reason)) => Err(failed(reason)),
        }
    }

    /// One unary call, past the fault filter.
    async fn send(
        &self,
        rpc: Rpc,
        to: u64,
        url: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, PeerError> {
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
            payload,
            seq: 0,
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
            Ok(reply) => Ok(reply.into_inner().payload),
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

/// The first peer URL of a member, the one its peers dial.
pub fn peer_url(node: &MemberInfo) -> Option<&str> {
    node.peer_urls.first().map(String::as_str)
}
