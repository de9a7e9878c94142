//! Peer requests over one long-lived stream per peer, client side: the
//! peer RPCs `ForwardStream` (a follower's forwarded writes to the leader)
//! and `AppendEntriesStream` (the leader's replication to a follower), see
//! proto/raftcd/peer.proto.
//!
//! A follower forwards two thirds of a cluster's writes when clients are
//! spread over the members, and the leader sends each follower a message
//! per batch. As unary calls, each one opened and closed an HTTP/2 stream
//! on both members (headers, trailers, a task on the receiver). Here a
//! member keeps one stream open per peer and kind: a request is one
//! numbered message on it, its reply one message back with the same
//! number, and messages sent together share frames and syscalls.
//!
//! Whether a request may have reached the peer is kept as exact as with
//! unary calls: a request that could not be put on an open stream was not
//! sent; once put on one, a stream that ends before its reply leaves it
//! unknown ([`StreamError::Ended`]). The receiver ends a stream only after
//! replying to every request it ran from it (see the service's side in
//! [`super::peer_service`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tonic_prost::ProstCodec;

use super::peer_client::Connections;
use crate::pb::raftcdpb::{PeerReply, PeerRequest};

/// How long a peer without the stream RPC (an older version) is sent
/// unary calls before the stream is tried again.
const RETRY_STREAM_AFTER: Duration = Duration::from_secs(30);

/// Why a request sent over a stream got no reply.
#[derive(Debug, Clone)]
pub(super) enum StreamError {
    /// The request was not sent: no connection, or the stream had closed.
    NotSent(String),
    /// The peer does not serve the stream RPC: use a unary call.
    Unsupported,
    /// Opening the stream failed with this status (it may carry a
    /// refusal); the request was not sent.
    Refused(tonic::Status),
    /// The stream ended, or the wait timed out, after the request was put
    /// on it: the leader may have run it. The status, if the leader ended
    /// the stream with one.
    Ended(Option<tonic::Status>, String),
}

type Waiter = oneshot::Sender<Result<Bytes, StreamError>>;

/// The open streams of one member for one stream RPC, by peer URL.
pub(super) struct PeerStreams {
    /// The stream RPC's path.
    path: &'static str,
    streams: Mutex<HashMap<String, Slot>>,
    /// Held while a stream is opened, per peer URL: so concurrent callers share one stream, and a peer
    /// slow to answer delays no other peer's stream.
    opening: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Streams opened, requests put on streams.
    opened: AtomicU64,
    sent: AtomicU64,
}

enum Slot {
    Open(Arc<Stream>),
    /// The peer answered `Unimplemented` at this time.
    Unsupported(Instant),
}

/// One open stream.
struct Stream {
    to: u64,
    state: Mutex<State>,
}

struct State {
    /// Where requests go (the request body); dropped to end the stream.
    send: Option<mpsc::UnboundedSender<PeerRequest>>,
    next_seq: u64,
    waiting: HashMap<u64, Waiter>,
    /// Set once the replies ended: nothing more is sent on this stream.
    ended: bool,
}

/// What a request on a stream carries besides its payload.
pub(super) struct Envelope {
    pub cluster_id: u64,
    pub from: u64,
    pub to: u64,
}

impl PeerStreams {
    /// Streams of the RPC at `path` (a `/raftcdpb.Peer/...Stream` method).
    pub(super) fn new(path: &'static str) -> Self {
        Self {
            path,
            streams: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
            opened: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        }
    }

    /// Streams opened and requests put on them so far.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.opened.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed),
        )
    }

    /// Forget every stream: each takes no more requests and ends once the
    /// peer has answered those in flight (after a certificate reload, so
    /// the old connections close).
    pub(super) fn reset(&self) {
        let slots = match self.streams.lock() {
            Ok(mut s) => std::mem::take(&mut *s),
            Err(_) => return,
        };
        for slot in slots.into_values() {
            if let Slot::Open(stream) = slot {
                if let Ok(mut st) = stream.state.lock() {
                    st.ended = true;
                    st.send = None;
                }
            }
        }
    }

    /// Send `payload` to the peer at `url` on its stream (opened on
    /// `connections` if there is none) and wait for the reply until
    /// `deadline`.
    pub(super) async fn call(
        &self,
        connections: &Connections,
        url: &str,
        envelope: Envelope,
        payload: Bytes,
        max_message: usize,
        deadline: tokio::time::Instant,
    ) -> Result<Bytes, StreamError> {
        let stream = match self.current(url, envelope.to) {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(e),
            None => {
                let open = self.open(connections, url, envelope.to, max_message);
                match tokio::time::timeout_at(deadline, open).await {
                    Ok(r) => r?,
                    Err(_) => return Err(StreamError::NotSent("no stream opened in time".into())),
                }
            }
        };
        let (tx, rx) = oneshot::channel();
        let seq = {
            let mut st = stream
                .state
                .lock()
                .map_err(|_| StreamError::NotSent("stream state poisoned".into()))?;
            if st.ended {
                return Err(StreamError::NotSent("the stream had ended".into()));
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            let request = PeerRequest {
                cluster_id: envelope.cluster_id,
                from: envelope.from,
                to: envelope.to,
                payload,
                seq,
            };
            // Sent under the lock: the reader, which ends the stream under
            // it too, either sees this waiter or the send fails.
            let sent = st.send.as_ref().map(|s| s.send(request));
            if !matches!(sent, Some(Ok(()))) {
                st.ended = true;
                return Err(StreamError::NotSent("the stream had ended".into()));
            }
            st.waiting.insert(seq, tx);
            seq
        };
        self.sent.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(StreamError::Ended(None, "the stream was dropped".into())),
            Err(_) => {
                if let Ok(mut st) = stream.state.lock() {
                    st.waiting.remove(&seq);
                }
                Err(StreamError::Ended(None, "no reply in time".into()))
            }
        }
    }

    /// The open stream to `url` (for member `to`), if there is one; an
    /// error if the peer does not serve streams.
    fn current(&self, url: &str, to: u64) -> Option<Result<Arc<Stream>, StreamError>> {
        let mut streams = self.streams.lock().ok()?;
        match streams.get(url) {
            Some(Slot::Open(s)) if s.to == to && !s.ended() => Some(Ok(s.clone())),
            Some(Slot::Unsupported(at)) if at.elapsed() < RETRY_STREAM_AFTER => {
                Some(Err(StreamError::Unsupported))
            }
            Some(_) => {
                streams.remove(url);
                None
            }
            None => None,
        }
    }

    /// Open a stream to `url`, or join another caller's opening.
    async fn open(
        &self,
        connections: &Connections,
        url: &str,
        to: u64,
        max_message: usize,
    ) -> Result<Arc<Stream>, StreamError> {
        let lock = match self.opening.lock() {
            Ok(mut o) => o.entry(url.to_string()).or_default().clone(),
            Err(_) => return Err(StreamError::NotSent("stream state poisoned".into())),
        };
        let _opening = lock.lock().await;
        if let Some(current) = self.current(url, to) {
            return current;
        }
        let connection = connections
            .get(url)
            .await
            .map_err(|e| StreamError::NotSent(e.0))?;
        let origin = connection.origin();
        let mut grpc = tonic::client::Grpc::with_origin(connection, origin)
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        let (send, requests) = mpsc::unbounded_channel();
        let body = tokio_stream::wrappers::UnboundedReceiverStream::new(requests);
        let opened = grpc
            .streaming::<_, PeerRequest, PeerReply, _>(
                tonic::Request::new(body),
                http::uri::PathAndQuery::from_static(self.path),
                ProstCodec::default(),
            )
            .await;
        let replies = match opened {
            Ok(r) => r.into_inner(),
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(peer = %url, rpc = self.path, "the peer has no such stream; sending one call per request");
                if let Ok(mut streams) = self.streams.lock() {
                    streams.insert(url.to_string(), Slot::Unsupported(Instant::now()));
                }
                return Err(StreamError::Unsupported);
            }
            Err(status) => return Err(StreamError::Refused(status)),
        };
        let stream = Arc::new(Stream {
            to,
            state: Mutex::new(State {
                send: Some(send),
                next_seq: 0,
                waiting: HashMap::new(),
                ended: false,
            }),
        });
        tokio::spawn(read_replies(stream.clone(), replies));
        self.opened.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut streams) = self.streams.lock() {
            streams.insert(url.to_string(), Slot::Open(stream.clone()));
        }
        Ok(stream)
    }
}

impl Stream {
    fn ended(&self) -> bool {
        self.state.lock().map(|s| s.ended).unwrap_or(true)
    }
}

/// Hand each reply to its waiter until the stream ends; then every request
/// still waiting learns that it may or may not have run.
async fn read_replies(stream: Arc<Stream>, mut replies: tonic::Streaming<PeerReply>) {
    let end = loop {
        match replies.message().await {
            Ok(Some(reply)) => {
                let waiter = match stream.state.lock() {
                    Ok(mut st) => st.waiting.remove(&reply.seq),
                    Err(_) => None,
                };
                if let Some(w) = waiter {
                    let _ = w.send(Ok(reply.payload));
                }
            }
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    let waiting = match stream.state.lock() {
        Ok(mut st) => {
            st.ended = true;
            st.send = None;
            std::mem::take(&mut st.waiting)
        }
        Err(_) => HashMap::new(),
    };
    let why = match &end {
        Some(s) => format!("the stream ended: {:?}: {}", s.code(), s.message()),
        None => "the stream ended".to_string(),
    };
    tracing::debug!(to = format!("{:x}", stream.to), reason = %why, "peer stream closed");
    for (_, w) in waiting {
        let _ = w.send(Err(StreamError::Ended(end.clone(), why.clone())));
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;

    use futures::StreamExt as _;
    use tokio::net::TcpListener;
    use tonic::{Request, Response, Status, Streaming};

    use super::super::network::{PeerError, PeerTransport, Rpc, REFUSAL_KEY, REFUSED_WRONG_MEMBER};
    use super::*;
    use crate::pb::raftcdpb::peer_server::{Peer, PeerServer};

    type Unary = Result<Response<PeerReply>, Status>;

    /// A leader's peer port as a test drives it: `Forward` echoes its
    /// payload; `ForwardStream` is absent (a version before streams) or
    /// echoes each request with its number, except a request `refuse`
    /// (ends the stream with a refusal) and `hang-up` (ends it plainly).
    struct Leader {
        streams: bool,
        stream_asks: Arc<AtomicUsize>,
        /// Streams open now.
        open: Arc<AtomicUsize>,
    }

    /// Counts a stream as open while it lives.
    struct Open(Arc<AtomicUsize>);

    impl Drop for Open {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    type Replies = Pin<Box<dyn futures::Stream<Item = Result<PeerReply, Status>> + Send>>;

    #[tonic::async_trait]
    impl Peer for Leader {
        async fn append_entries(&self, _: Request<PeerRequest>) -> Unary {
            Err(Status::unimplemented(""))
        }
        type AppendEntriesStreamStream = Replies;
        async fn append_entries_stream(
            &self,
            _: Request<Streaming<PeerRequest>>,
        ) -> Result<Response<Replies>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn vote(&self, _: Request<PeerRequest>) -> Unary {
            Err(Status::unimplemented(""))
        }
        async fn install_snapshot(&self, _: Request<PeerRequest>) -> Unary {
            Err(Status::unimplemented(""))
        }
        async fn forward(&self, req: Request<PeerRequest>) -> Unary {
            Ok(Response::new(PeerReply {
                payload: req.into_inner().payload,
                seq: 0,
            }))
        }
        type ForwardStreamStream = Replies;
        async fn forward_stream(
            &self,
            req: Request<Streaming<PeerRequest>>,
        ) -> Result<Response<Replies>, Status> {
            self.stream_asks.fetch_add(1, Ordering::SeqCst);
            if !self.streams {
                return Err(Status::unimplemented("no such method"));
            }
            self.open.fetch_add(1, Ordering::SeqCst);
            let open = Open(self.open.clone());
            // A refusal is the stream's last item; `hang-up` ends it.
            let replies = req.into_inner().scan(false, move |ended, r| {
                let _open = &open;
                let item = match r {
                    Err(_) => None,
                    Ok(_) if *ended => None,
                    Ok(r) if &r.payload[..] == b"hang-up" => None,
                    Ok(r) if &r.payload[..] == b"refuse" => {
                        *ended = true;
                        let mut s = Status::failed_precondition("this is member 9, not 1");
                        s.metadata_mut().insert(
                            REFUSAL_KEY,
                            tonic::metadata::MetadataValue::from_static(REFUSED_WRONG_MEMBER),
                        );
                        Some(Err(s))
                    }
                    Ok(r) => Some(Ok(PeerReply {
                        payload: r.payload,
                        seq: r.seq,
                    })),
                };
                futures::future::ready(item)
            });
            Ok(Response::new(Box::pin(replies)))
        }
        async fn read_index(&self, _: Request<PeerRequest>) -> Unary {
            Err(Status::unimplemented(""))
        }
        async fn join(&self, _: Request<PeerRequest>) -> Unary {
            Err(Status::unimplemented(""))
        }
        async fn timeout_now(&self, _: Request<PeerRequest>) -> Unary {
            Err(Status::unimplemented(""))
        }
        async fn discover(&self, _: Request<PeerRequest>) -> Unary {
            Err(Status::unimplemented(""))
        }
    }

    /// Serve a [`Leader`] on a loopback port: its URL, its stream asks and
    /// its streams open now.
    async fn leader(streams: bool) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stream_asks = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let svc = PeerServer::new(Leader {
            streams,
            stream_asks: stream_asks.clone(),
            open: open.clone(),
        });
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _keep = stop;
            crate::net::serve_router(svc, listener, None, shutdown, 16).await
        });
        (url, stream_asks, open)
    }

    async fn forward(t: &PeerTransport, url: &str, what: &str) -> Result<Bytes, PeerError> {
        t.call(
            Rpc::Forward,
            1,
            url,
            what.as_bytes().to_vec(),
            Duration::from_secs(5),
        )
        .await
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_stream_and_get_their_own_replies() {
        let (url, asks, open) = leader(true).await;
        let t = PeerTransport::new(7, 2, None, 1 << 20);
        let calls = (0..50).map(|i| {
            let (t, url) = (t.clone(), url.clone());
            async move { (i, forward(&t, &url, &format!("w{i}")).await) }
        });
        for (i, reply) in futures::future::join_all(calls).await {
            assert_eq!(reply.unwrap(), format!("w{i}").as_bytes());
        }
        let counts = t.stream_counts();
        assert_eq!(
            (
                counts.forward_streams_opened,
                counts.forwarded_on_stream,
                counts.forwarded_by_call,
            ),
            (1, 50, 0)
        );
        assert_eq!(asks.load(Ordering::SeqCst), 1);

        // A refusal ends the stream: the refused request did not run.
        let err = forward(&t, &url, "refuse").await.unwrap_err();
        assert!(matches!(err, PeerError::Refused { .. }), "{err:?}");
        assert!(err.not_delivered());
        // A stream that ends before the reply leaves it unknown.
        let err = forward(&t, &url, "hang-up").await.unwrap_err();
        assert!(matches!(err, PeerError::Failed { .. }), "{err:?}");
        assert!(!err.not_delivered());
        // The next request opens a new stream.
        assert_eq!(
            forward(&t, &url, "again").await.unwrap(),
            "again".as_bytes()
        );
        assert_eq!(t.stream_counts().forward_streams_opened, 3);
        // Connections reset (a certificate reload): the open stream ends,
        // the next request opens another.
        t.reset_connections();
        assert_eq!(forward(&t, &url, "anew").await.unwrap(), "anew".as_bytes());
        assert_eq!(t.stream_counts().forward_streams_opened, 4);
        assert_eq!(asks.load(Ordering::SeqCst), 4);
        for _ in 0..500 {
            if open.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            open.load(Ordering::SeqCst),
            1,
            "only the newest stream is open"
        );
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_delays_no_other_peers_stream() {
        // Accepts connections and says nothing: its HTTP/2 handshake hangs.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_url = format!("http://{}", silent.local_addr().unwrap());
        let _held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = silent.accept().await {
                conns.push(c);
            }
        });
        let (url, _, _) = leader(true).await;
        let t = PeerTransport::new(7, 2, None, 1 << 20);
        let stuck = {
            let (t, silent_url) = (t.clone(), silent_url.clone());
            tokio::spawn(async move { forward(&t, &silent_url, "lost").await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answered = tokio::time::timeout(Duration::from_secs(2), forward(&t, &url, "here"));
        assert_eq!(
            answered.await.expect("not held up").unwrap(),
            "here".as_bytes()
        );
        assert!(
            !stuck.is_finished(),
            "the silent peer is still being waited for"
        );
        stuck.abort();
    }

    #[tokio::test]
    async fn a_leader_without_streams_gets_a_call_per_request() {
        let (url, asks, _) = leader(false).await;
        let t = PeerTransport::new(7, 2, None, 1 << 20);
        for i in 0..3 {
            let what = format!("w{i}");
            assert_eq!(forward(&t, &url, &what).await.unwrap(), what.as_bytes());
        }
        let counts = t.stream_counts();
        assert_eq!(
            (
                counts.forward_streams_opened,
                counts.forwarded_on_stream,
                counts.forwarded_by_call,
            ),
            (0, 0, 3)
        );
        // Asked once, then remembered.
        assert_eq!(asks.load(Ordering::SeqCst), 1);
    }
}
