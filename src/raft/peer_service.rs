//! The peer service, server side: what other members of the cluster call,
//! served on `--listen-peer-urls`.
//!
//! Every request is checked before its payload is decoded: it must come
//! from this member's cluster (same cluster id) and be meant for this
//! member. A request from another cluster is refused with
//! `FAILED_PRECONDITION` and a warning naming both cluster ids; such a peer
//! never joins. Messages are capped in size (from `--max-request-bytes`,
//! see `Config::max_peer_message_bytes`) and decoded into non-recursive
//! types only. Raft's messages go straight to openraft; forwarded leader
//! requests, read-index requests and joins go to a [`PeerHandler`] (the
//! member's core implements it). The client side is [`super::network`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, TryAcquireError};
use tonic::{Request, Response, Status, Streaming};

use super::network::{REFUSAL_KEY, REFUSED_CLUSTER, REFUSED_REMOVED, REFUSED_WRONG_MEMBER};
use super::state_machine::RemovedMembers;
use super::{Raft, TypeConfig};
use crate::codec::{decode_wire, encode};
use crate::net::ConnBudget;
use crate::pb::raftcdpb::peer_server::{Peer, PeerServer};
use crate::pb::raftcdpb::{PeerReply, PeerRequest};
use crate::tls::ServerTls;

/// What the peer port asks of the member beyond Raft's own messages:
/// requests forwarded to the leader, read-index requests and joins. The
/// payload types are the handler's; they are decoded (bounded, versioned)
/// before the handler sees them.
pub trait PeerHandler: Clone + Send + Sync + 'static {
    type Forward: DeserializeOwned + Send;
    type ForwardReply: Serialize + Send;
    type ReadIndexReply: Serialize + Send;
    type Join: DeserializeOwned + Send;
    type JoinReply: Serialize + Send;
    type Discover: DeserializeOwned + Send;
    type DiscoverReply: Serialize + Send;

    /// A request another member forwards to this one as the leader.
    fn forward(&self, op: Self::Forward) -> impl Future<Output = Self::ForwardReply> + Send;
    /// The leader's read index, for a follower's linearizable read.
    fn read_index(&self) -> impl Future<Output = Self::ReadIndexReply> + Send;
    /// A member started with `--initial-cluster-state existing` asks for
    /// its ids.
    fn join(&self, req: Self::Join) -> Self::JoinReply;
    /// A replica of a replica table asks where this member stands.
    fn discover(&self, req: Self::Discover) -> Self::DiscoverReply;
}

/// When a leader last sent this member entries or a snapshot.
#[derive(Debug)]
pub struct LeaderContact(Mutex<Instant>);

impl Default for LeaderContact {
    fn default() -> Self {
        Self(Mutex::new(Instant::now()))
    }
}

impl LeaderContact {
    fn touch(&self) {
        if let Ok(mut t) = self.0.lock() {
            *t = Instant::now();
        }
    }

    /// How long since the last contact (or since start).
    pub fn elapsed(&self) -> Duration {
        self.0.lock().map(|t| t.elapsed()).unwrap_or_default()
    }
}

/// The peer gRPC service of one member.
pub struct PeerService<H> {
    raft: Raft,
    gate: Gate,
    contact: Arc<LeaderContact>,
    handler: H,
}

fn refuse(kind: &'static str, msg: String) -> Status {
    let mut status = Status::failed_precondition(msg);
    status.metadata_mut().insert(
        REFUSAL_KEY,
        tonic::metadata::MetadataValue::from_static(kind),
    );
    status
}

fn reply<T: Serialize>(value: &T) -> Response<PeerReply> {
    Response::new(PeerReply {
        payload: encode(value).into(),
        seq: 0,
    })
}

impl<H: PeerHandler> PeerService<H> {
    /// The service of member `member_id` of cluster `cluster_id`.
    pub fn new(
        raft: Raft,
        cluster_id: u64,
        member_id: u64,
        removed: RemovedMembers,
        contact: Arc<LeaderContact>,
        handler: H,
    ) -> Self {
        Self {
            raft,
            gate: Gate {
                cluster_id,
                member_id,
                removed,
            },
            contact,
            handler,
        }
    }

    /// Check a Raft or leader request's envelope, then decode its payload.
    fn open<T: DeserializeOwned>(&self, req: Request<PeerRequest>) -> Result<T, Status> {
        self.gate.open(&req.into_inner())
    }
}

/// The checks of a request's envelope (each stream keeps a copy).
#[derive(Clone)]
struct Gate {
    cluster_id: u64,
    member_id: u64,
    removed: RemovedMembers,
}

impl Gate {
    /// Check a request's envelope, then decode its payload.
    fn open<T: DeserializeOwned>(&self, req: &PeerRequest) -> Result<T, Status> {
        let me = (self.cluster_id, self.member_id);
        if req.cluster_id != me.0 {
            tracing::warn!(
                from = format!("{:x}", req.from),
                their_cluster_id = format!("{:x}", req.cluster_id),
                our_cluster_id = format!("{:x}", me.0),
                "refused a peer request from another cluster (check --initial-cluster-token and --initial-cluster)"
            );
            return Err(refuse(
                REFUSED_CLUSTER,
                format!(
                    "cluster id mismatch: member {:x} of cluster {:x} contacted member {:x} of cluster {:x}",
                    req.from, req.cluster_id, me.1, me.0
                ),
            ));
        }
        if req.to != 0 && req.to != me.1 {
            return Err(refuse(
                REFUSED_WRONG_MEMBER,
                format!("this is member {:x}, not {:x}", me.1, req.to),
            ));
        }
        if req.from != 0 && self.removed.contains(req.from) {
            tracing::warn!(
                from = format!("{:x}", req.from),
                "refused a peer request from a removed member"
            );
            return Err(refuse(
                REFUSED_REMOVED,
                format!("member {:x} was removed from cluster {:x}", req.from, me.0),
            ));
        }
        decode_wire(&req.payload)
            .map_err(|e| Status::invalid_argument(format!("bad peer message: {e}")))
    }
}

#[tonic::async_trait]
impl<H: PeerHandler> Peer for PeerService<H> {
    async fn append_entries(
        &self,
        req: Request<PeerRequest>,
    ) -> Result<Response<PeerReply>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.open(req)?;
        self.contact.touch();
        Ok(reply(&self.raft.append_entries(rpc).await))
    }

    type AppendEntriesStreamStream = PeerStream;

    async fn append_entries_stream(
        &self,
        req: Request<Streaming<PeerRequest>>,
    ) -> Result<Response<PeerStream>, Status> {
        let (gate, raft, contact) = (self.gate.clone(), self.raft.clone(), self.contact.clone());
        let start: Start = Box::new(move |req: PeerRequest| {
            let rpc: AppendEntriesRequest<TypeConfig> = gate.open(&req)?;
            contact.touch();
            let raft = raft.clone();
            Ok(Box::pin(async move {
                (req.seq, encode(&raft.append_entries(rpc).await))
            }))
        });
        Ok(Response::new(PeerStream::of(req, start)))
    }

    async fn vote(&self, req: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        let rpc: VoteRequest<u64> = self.open(req)?;
        Ok(reply(&self.raft.vote(rpc).await))
    }

    async fn install_snapshot(
        &self,
        req: Request<PeerRequest>,
    ) -> Result<Response<PeerReply>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = self.open(req)?;
        self.contact.touch();
        Ok(reply(&self.raft.install_snapshot(rpc).await))
    }

    async fn forward(&self, req: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        let op: H::Forward = self.open(req)?;
        Ok(reply(&self.handler.forward(op).await))
    }

    type ForwardStreamStream = PeerStream;

    async fn forward_stream(
        &self,
        req: Request<Streaming<PeerRequest>>,
    ) -> Result<Response<PeerStream>, Status> {
        let (gate, handler) = (self.gate.clone(), self.handler.clone());
        let start: Start = Box::new(move |req: PeerRequest| {
            let op: H::Forward = gate.open(&req)?;
            let handler = handler.clone();
            Ok(Box::pin(async move {
                (req.seq, encode(&handler.forward(op).await))
            }))
        });
        Ok(Response::new(PeerStream::of(req, start)))
    }

    async fn read_index(&self, req: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        let () = self.open(req)?;
        Ok(reply(&self.handler.read_index().await))
    }

    async fn timeout_now(&self, req: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        let () = self.open(req)?;
        tracing::info!("campaigning now: the leader transfers its leadership here");
        let res: Result<(), String> = self.raft.trigger().elect().await.map_err(|e| e.to_string());
        Ok(reply(&res))
    }

    async fn join(&self, req: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        let join: H::Join = decode_wire(&req.into_inner().payload)
            .map_err(|e| Status::invalid_argument(format!("bad peer message: {e}")))?;
        Ok(reply(&self.handler.join(join)))
    }

    async fn discover(&self, req: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        let ask: H::Discover = decode_wire(&req.into_inner().payload)
            .map_err(|e| Status::invalid_argument(format!("bad peer message: {e}")))?;
        Ok(reply(&self.handler.discover(ask)))
    }
}

/// Most requests of one stream running at once. Past it the stream reads
/// no more of them until one finishes, and the sender waits on HTTP/2 flow
/// control: a peer cannot make this member hold an unbounded number of
/// requests (each up to the message cap). A member opens two streams to
/// each peer.
pub const MAX_STREAM_IN_FLIGHT: usize = 200;

/// Most requests running at once over all the streams of one peer
/// connection (its [`ConnBudget`]): a connection may carry up to 200
/// streams (hyper's default), and without a budget shared by them a peer
/// could hold 200 times [`MAX_STREAM_IN_FLIGHT`]. An honest member's two
/// streams fit in it at their own bound each.
pub const MAX_CONN_IN_FLIGHT: usize = 2 * MAX_STREAM_IN_FLIGHT;

/// A request read from a stream, started: its number and encoded reply.
type Run = Pin<Box<dyn Future<Output = (u64, Vec<u8>)> + Send>>;
/// What a stream does with each request it reads: check and decode it,
/// then run it (or refuse it, which ends the stream).
type Start = Box<dyn FnMut(PeerRequest) -> Result<Run, Status> + Send>;
/// Waiting for a permit of the connection's budget.
type Acquire = Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>;

/// A running request and the permit of its connection's budget it holds.
struct Running {
    run: Run,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Future for Running {
    type Output = (u64, Vec<u8>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.run.as_mut().poll(cx)
    }
}

/// The receiving side of one peer's stream (`ForwardStream`,
/// `AppendEntriesStream`): its replies, as the requests read from it
/// finish. Polled by the stream's own HTTP/2 task: no task of its own,
/// none per request.
///
/// A request refused by its envelope or undecodable ends the stream with
/// that status, after the replies to every request read before it; it and
/// the ones after it are not run (the sender counts them as not sent).
/// At most [`MAX_STREAM_IN_FLIGHT`] requests run at once, and each holds a
/// permit of its connection's [`ConnBudget`] (when served with one): a
/// request is read only once its permit is there.
pub struct PeerStream<R = Streaming<PeerRequest>> {
    start: Start,
    /// The peer's requests; `None` once they ended or one was refused.
    requests: Option<R>,
    running: FuturesUnordered<Running>,
    /// The status the stream ends with, once `running` is empty.
    end: Option<Status>,
    budget: Option<ConnBudget>,
    /// A permit taken and not yet used (no request was ready for it).
    spare: Option<OwnedSemaphorePermit>,
    /// Waiting for a permit, the budget being spent.
    acquiring: Option<Acquire>,
}

impl PeerStream {
    /// The stream of `req`, running its requests with `start` within the
    /// budget of the connection it came on.
    fn of(req: Request<Streaming<PeerRequest>>, start: Start) -> Self {
        let budget = req.extensions().get::<ConnBudget>().cloned();
        Self::new(req.into_inner(), start, budget)
    }
}

impl<R> PeerStream<R> {
    fn new(requests: R, start: Start, budget: Option<ConnBudget>) -> Self {
        Self {
            start,
            requests: Some(requests),
            running: FuturesUnordered::new(),
            end: None,
            budget,
            spare: None,
            acquiring: None,
        }
    }

    /// A permit for the next request: `Ready(None)` without a budget.
    fn poll_permit(&mut self, cx: &mut Context<'_>) -> Poll<Option<OwnedSemaphorePermit>> {
        let Some(ConnBudget(budget)) = &self.budget else {
            return Poll::Ready(None);
        };
        if let Some(permit) = self.spare.take() {
            return Poll::Ready(Some(permit));
        }
        let acquiring = match &mut self.acquiring {
            Some(a) => a,
            None => match budget.clone().try_acquire_owned() {
                Ok(permit) => return Poll::Ready(Some(permit)),
                // Never closed; if it were, the stream's own bound holds.
                Err(TryAcquireError::Closed) => return Poll::Ready(None),
                Err(TryAcquireError::NoPermits) => {
                    let budget = budget.clone();
                    self.acquiring
                        .insert(Box::pin(async move { budget.acquire_owned().await.ok() }))
                }
            },
        };
        let permit = ready!(acquiring.as_mut().poll(cx));
        self.acquiring = None;
        Poll::Ready(permit)
    }
}

impl<R> futures::Stream for PeerStream<R>
where
    R: futures::Stream<Item = Result<PeerRequest, Status>> + Unpin,
{
    type Item = Result<PeerReply, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // Read every request ready now (up to the bounds), so they run
        // together. At a bound, a finishing request (of this stream, or of
        // another on the connection) wakes this task.
        while this.running.len() < MAX_STREAM_IN_FLIGHT && this.requests.is_some() {
            let Poll::Ready(permit) = this.poll_permit(cx) else {
                break;
            };
            let Some(requests) = this.requests.as_mut() else {
                break;
            };
            match Pin::new(requests).poll_next(cx) {
                Poll::Pending => {
                    this.spare = permit;
                    break;
                }
                Poll::Ready(None) => this.requests = None,
                Poll::Ready(Some(Err(status))) => {
                    tracing::debug!(error = %status, "a peer stream's requests ended");
                    this.requests = None;
                }
                Poll::Ready(Some(Ok(req))) => match (this.start)(req) {
                    Ok(run) => this.running.push(Running {
                        run,
                        _permit: permit,
                    }),
                    Err(status) => {
                        this.requests = None;
                        this.end = Some(status);
                    }
                },
            }
        }
        if this.requests.is_none() {
            // Nothing more to read: give the budget back.
            this.spare = None;
            this.acquiring = None;
        }
        match Pin::new(&mut this.running).poll_next(cx) {
            Poll::Ready(Some((seq, payload))) => Poll::Ready(Some(Ok(PeerReply {
                payload: payload.into(),
                seq,
            }))),
            Poll::Ready(None) if this.requests.is_none() => Poll::Ready(this.end.take().map(Err)),
            _ => Poll::Pending,
        }
    }
}

/// Serve the peer service on `listener` until `shutdown` turns true, over
/// TLS (`--peer-cert-file` and friends) for an `https://` peer URL, with at
/// most `max_message` bytes a message and `max_connections` connections.
pub async fn serve<H: PeerHandler>(
    service: PeerService<H>,
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    shutdown: watch::Receiver<bool>,
    max_message: usize,
    max_connections: usize,
) {
    // The peer port serves this one service, so its calls go straight to
    // it: no router between (an unknown path gets tonic's Unimplemented,
    // as the router's fallback answered).
    let svc = PeerServer::new(service)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    crate::net::serve_router_with_budget(
        svc,
        listener,
        tls,
        shutdown,
        max_connections,
        MAX_CONN_IN_FLIGHT,
    )
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::StreamExt;
    use tokio::sync::Semaphore;

    use super::*;

    /// `n` requests numbered from 0, and a `Start` whose requests each run
    /// until `gate` lets one through, counting the ones started.
    fn gated(
        n: usize,
        gate: &Arc<Semaphore>,
        started: &Arc<AtomicUsize>,
    ) -> (
        futures::channel::mpsc::UnboundedReceiver<Result<PeerRequest, Status>>,
        Start,
    ) {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        for seq in 0..n as u64 {
            tx.unbounded_send(Ok(PeerRequest {
                seq,
                ..Default::default()
            }))
            .unwrap();
        }
        let (gate, started) = (gate.clone(), started.clone());
        let start: Start = Box::new(move |req: PeerRequest| {
            started.fetch_add(1, Ordering::SeqCst);
            let gate = gate.clone();
            Ok(Box::pin(async move {
                gate.acquire().await.unwrap().forget();
                (req.seq, Vec::new())
            }))
        });
        (rx, start)
    }

    #[tokio::test]
    async fn the_streams_of_a_connection_share_its_budget() {
        let budget = ConnBudget(Arc::new(Semaphore::new(250)));
        let gate = Arc::new(Semaphore::new(0));
        let (started_a, started_b) = (Arc::default(), Arc::default());
        let (rx, start) = gated(260, &gate, &started_a);
        let mut a = PeerStream::new(rx, start, Some(budget.clone()));
        let (rx, start) = gated(260, &gate, &started_b);
        let mut b = PeerStream::new(rx, start, Some(budget.clone()));

        // a runs its own bound's worth; b only what the budget has left.
        assert!(futures::poll!(a.next()).is_pending());
        assert!(futures::poll!(b.next()).is_pending());
        assert_eq!(started_a.load(Ordering::SeqCst), MAX_STREAM_IN_FLIGHT);
        assert_eq!(started_b.load(Ordering::SeqCst), 50);
        assert_eq!(budget.0.available_permits(), 0);

        // Ten of a's finish: their permits come back, and a takes them
        // again for ten more (the budget, not b's own bound, held b).
        gate.add_permits(10);
        for _ in 0..10 {
            a.next().await.unwrap().unwrap();
        }
        assert!(futures::poll!(a.next()).is_pending());
        assert!(futures::poll!(b.next()).is_pending());
        assert_eq!(
            started_a.load(Ordering::SeqCst) + started_b.load(Ordering::SeqCst),
            260
        );
        assert_eq!(budget.0.available_permits(), 0);

        // The rest: every request of both answered once, and the whole
        // budget back once both streams ended.
        gate.add_permits(1000);
        let (mut n_a, mut n_b) = (10, 0);
        loop {
            tokio::select! {
                r = a.next(), if n_a < 260 => { r.unwrap().unwrap(); n_a += 1; }
                r = b.next(), if n_b < 260 => { r.unwrap().unwrap(); n_b += 1; }
                else => break,
            }
        }
        assert!(a.next().await.is_none() && b.next().await.is_none());
        drop((a, b));
        assert_eq!(budget.0.available_permits(), 250);
    }

    #[tokio::test]
    async fn a_stream_runs_at_most_its_bound_of_requests_at_once() {
        let total = MAX_STREAM_IN_FLIGHT + 50;
        // Each request runs until the gate lets one through.
        let gate = Arc::new(Semaphore::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let (rx, start) = gated(total, &gate, &started);
        let mut stream = PeerStream::new(rx, start, None);

        // Nothing can finish: the bound's worth of requests runs, no more.
        assert!(futures::poll!(stream.next()).is_pending());
        assert_eq!(started.load(Ordering::SeqCst), MAX_STREAM_IN_FLIGHT);

        // Ten finish: ten replies, and ten requests read in their place.
        gate.add_permits(10);
        let mut seqs = Vec::new();
        for _ in 0..10 {
            seqs.push(stream.next().await.unwrap().unwrap().seq);
        }
        assert!(futures::poll!(stream.next()).is_pending());
        assert_eq!(started.load(Ordering::SeqCst), MAX_STREAM_IN_FLIGHT + 10);

        // The rest: every request answered once, then the stream ends.
        gate.add_permits(total);
        while let Some(reply) = stream.next().await {
            seqs.push(reply.unwrap().seq);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (0..total as u64).collect::<Vec<_>>());
        assert_eq!(started.load(Ordering::SeqCst), total);
    }
}
