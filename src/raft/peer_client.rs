//! The peer network's connections: one HTTP/2 connection per peer URL,
//! dialed on first use and again once it has closed.
//!
//! A request goes from its caller straight to hyper's connection task.
//! tonic's `Channel` would first hand each one to a `tower::buffer` worker
//! task, one more task hop and several allocations per request, for every
//! AppendEntries, forwarded write and read-index call.
//!
//! Whether a failed request may have reached the peer is known here, not
//! guessed from an error message: a failed dial, or a request handed back
//! by hyper because its connection closed before sending it, is
//! [`NotSent`]; anything else may have been delivered.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Uri;
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::body::Body;

use crate::tls::TlsConfig;

/// How long a TCP connect to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 pings on an idle connection, and how long a ping's answer may
/// take before the connection counts as dead.
const KEEPALIVE: Duration = Duration::from_secs(5);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request that certainly did not leave this member: its connection
/// could not be opened, or closed before the request was written to it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotSent(pub String);

/// The connections to the other members, by peer URL.
pub(super) struct Connections {
    tls: Option<TlsConfig>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// One peer URL's connection.
struct Slot {
    /// Where the URL points, parsed once.
    target: Target,
    state: Mutex<SlotState>,
    /// Held while dialing, so concurrent callers share one dial.
    dialing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct SlotState {
    send: Option<SendRequest<Body>>,
    /// The last dial's failure and when it ended.
    failed: Option<(Instant, String)>,
}

impl Connections {
    /// Connections dialed over TLS with `tls` for `https://` peers.
    pub(super) fn new(tls: Option<TlsConfig>) -> Self {
        Self {
            tls,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Forget every connection: the next request dials anew (requests in
    /// flight finish on the old ones).
    pub(super) fn reset(&self) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.clear();
        }
    }

    /// An open connection to `url`, dialed if there is none. A caller that
    /// waited for another caller's dial gets that dial's failure.
    pub(super) async fn get(&self, url: &str) -> Result<Connection, NotSent> {
        let slot = {
            let mut slots = self
                .slots
                .lock()
                .map_err(|_| NotSent("connection cache poisoned".into()))?;
            match slots.get(url) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(Slot {
                        target: Target::parse(url).map_err(NotSent)?,
                        state: Mutex::new(SlotState::default()),
                        dialing: tokio::sync::Mutex::new(()),
                    });
                    slots.insert(url.to_string(), s.clone());
                    s
                }
            }
        };
        let asked = Instant::now();
        if let Some(send) = slot.open() {
            return Ok(Connection::new(send, &slot));
        }
        let _dialing = slot.dialing.lock().await;
        if let Some(send) = slot.open() {
            return Ok(Connection::new(send, &slot));
        }
        if let Ok(state) = slot.state.lock() {
            if let Some((at, why)) = &state.failed {
                if *at >= asked {
                    return Err(NotSent(why.clone()));
                }
            }
        }
        let dialed = self.dial(url, &slot.target).await;
        let mut state = slot
            .state
            .lock()
            .map_err(|_| NotSent("connection cache poisoned".into()))?;
        match dialed {
            Ok(send) => {
                state.send = Some(send.clone());
                state.failed = None;
                Ok(Connection::new(send, &slot))
            }
            Err(why) => {
                state.failed = Some((Instant::now(), why.clone()));
                Err(NotSent(why))
            }
        }
    }

    /// Open a connection to `url` (at `target`): TCP, then TLS for
    /// `https://`, then the HTTP/2 handshake; the connection's task is
    /// spawned.
    async fn dial(&self, url: &str, target: &Target) -> Result<SendRequest<Body>, String> {
        let tls = match target.https {
            true => Some(self.client_tls(url)?),
            false => None,
        };
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| format!("tcp connect error: no connection within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("tcp connect error: {e}"))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("tcp connect error: {e}"))?;
        if let Some(tls) = tls {
            let connector = tokio_rustls::TlsConnector::from(tls);
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| format!("bad peer host in {url:?}: {e}"))?;
            let tls = tokio::time::timeout(KEEPALIVE, connector.connect(name, tcp))
                .await
                .map_err(|_| format!("TLS handshake with {url}: no answer within {KEEPALIVE:?}"))?
                .map_err(|e| format!("TLS handshake with {url}: {e}"))?;
            handshake(TokioIo::new(tls)).await
        } else {
            handshake(TokioIo::new(tcp)).await
        }
    }

    /// TLS to dial an `https://` peer: this member's peer certificate, the
    /// peer CA (read now, so a reload takes effect on the next dial).
    fn client_tls(&self, url: &str) -> Result<Arc<rustls::ClientConfig>, String> {
        let tls = self.tls.as_ref();
        let (Some(tls), Some(ca)) = (tls, tls.and_then(|t| t.trusted_ca_file.as_ref())) else {
            return Err(format!(
                "peer {url} is https: --peer-cert-file, --peer-key-file and --peer-trusted-ca-file are needed to reach it"
            ));
        };
        crate::tls::client_config(ca, Some((&tls.cert_file, &tls.key_file)))
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }
}

impl Slot {
    /// The connection, if it is still open.
    fn open(&self) -> Option<SendRequest<Body>> {
        let state = self.state.lock().ok()?;
        state.send.as_ref().filter(|s| !s.is_closed()).cloned()
    }
}

/// The HTTP/2 handshake on an open stream; spawns the connection's task.
async fn handshake<T>(io: TokioIo<T>) -> Result<SendRequest<Body>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The connection's streams (its h2 connection, each request's body and
    // response) run in the connection's task (see `net::in_conn`).
    let exec = crate::net::InConn::default();
    let handshake = http2::Builder::new(exec.clone())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true)
        .handshake(io);
    let (send, conn) = tokio::time::timeout(KEEPALIVE, handshake)
        .await
        .map_err(|_| format!("HTTP/2 handshake: no answer within {KEEPALIVE:?}"))?
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let conn = crate::net::Driven::new(conn, &exec);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "peer connection ended");
        }
    });
    Ok(send)
}

/// Where a peer URL points.
struct Target {
    /// The host to dial and verify (an IPv6 address without brackets).
    host: String,
    port: u16,
    https: bool,
    /// The origin (scheme and authority) requests to it carry.
    origin: Uri,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let u = url::Url::parse(url).map_err(|e| format!("bad peer URL {url:?}: {e}"))?;
        let https = match u.scheme() {
            "http" => false,
            "https" => true,
            s => {
                return Err(format!(
                    "bad peer URL {url:?}: scheme {s} is not http or https"
                ))
            }
        };
        let host = u
            .host_str()
            .ok_or_else(|| format!("bad peer URL {url:?}: no host"))?;
        let port = u
            .port_or_known_default()
            .ok_or_else(|| format!("bad peer URL {url:?}: no port"))?;
        let origin = format!("{}://{host}:{port}", u.scheme())
            .parse()
            .map_err(|e| format!("bad peer URL {url:?}: {e}"))?;
        Ok(Target {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
            https,
            origin,
        })
    }
}

/// One open connection, as the service a tonic client sends through.
#[derive(Clone)]
pub(super) struct Connection {
    send: SendRequest<Body>,
    origin: Uri,
}

impl Connection {
    fn new(send: SendRequest<Body>, slot: &Slot) -> Self {
        Connection {
            send,
            origin: slot.target.origin.clone(),
        }
    }

    /// The origin requests on this connection carry (for tonic's
    /// `with_origin`).
    pub(super) fn origin(&self) -> Uri {
        self.origin.clone()
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, BoxError>> + Send>>;

impl tower::Service<http::Request<Body>> for Connection {
    type Response = http::Response<Incoming>;
    type Error = BoxError;
    type Future = ResponseFuture;

    /// Always ready: a closed connection hands the request back in `call`
    /// (tonic would turn a readiness error into a status without its cause).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> ResponseFuture {
        let sent = self.send.try_send_request(req);
        Box::pin(async move {
            sent.await.map_err(|mut e| -> BoxError {
                if e.take_message().is_some() {
                    Box::new(NotSent(format!("connection closed: {}", e.into_error())))
                } else {
                    Box::new(e.into_error())
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper_util::rt::TokioExecutor;
    use tokio::net::TcpListener;
    use tower::Service;

    use super::*;

    /// An HTTP/2 server on a loopback port answering every request with an
    /// empty 200, until the returned task is aborted; counts connections.
    async fn server() -> (String, tokio::task::JoinHandle<()>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
                });
                conns.spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (url, task, accepted)
    }

    fn request(origin: &Uri) -> http::Request<Body> {
        http::Request::post(format!("{origin}x"))
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn a_peer_that_does_not_listen_is_not_sent_to() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let conns = Connections::new(None);
        let err = conns
            .get(&format!("http://127.0.0.1:{port}"))
            .await
            .err()
            .expect("nothing listens there");
        assert!(err.0.contains("tcp connect error"), "{err}");
        let err = conns.get("https://127.0.0.1:1").await.err().unwrap();
        assert!(err.0.contains("--peer-trusted-ca-file"), "{err}");
        let err = conns.get("ftp://127.0.0.1:1").await.err().unwrap();
        assert!(err.0.contains("not http or https"), "{err}");
    }

    #[tokio::test]
    async fn one_connection_is_shared_and_redialed_once_closed() {
        let (url, task, accepted) = server().await;
        let conns = Connections::new(None);
        let (first, second) = tokio::join!(conns.get(&url), conns.get(&url));
        let (mut first, mut second) = (first.unwrap(), second.unwrap());
        let origin = first.origin();
        assert_eq!(origin.to_string(), format!("{url}/"));
        for c in [&mut first, &mut second] {
            let reply = c.call(request(&origin)).await.unwrap();
            assert_eq!(reply.status(), http::StatusCode::OK);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection per URL");

        // The server goes: the connection closes, a request on it is handed
        // back as not sent, and the next `get` dials again (and fails).
        task.abort();
        let _ = task.await;
        for _ in 0..200 {
            if first.send.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(first.send.is_closed());
        let err = first.call(request(&origin)).await.unwrap_err();
        assert!(err.is::<NotSent>(), "{err}");
        let err = conns
            .get(&url)
            .await
            .err()
            .expect("redialed, nothing there");
        assert!(err.0.contains("tcp connect error"), "{err}");
    }
}
