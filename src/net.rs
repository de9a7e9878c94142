//! Listeners: binding a URL's address and serving a service on it (HTTP/1
//! and HTTP/2, over TLS for `https://`), with a limit on open connections.
//! The client listeners and the peer listeners both use it. A connection's
//! writes are gathered until its flush ([`Gathered`]), and requests whose
//! `:authority` h2 would refuse are mended as they are read ([`Mended`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio::sync::Semaphore;

use crate::tls::ServerTls;

mod authority;
mod gather;
mod in_conn;
pub use authority::Mended;
pub use gather::{Gathered, GATHER_LIMIT};
pub use in_conn::{Driven, InConn};

/// The common name of the verified client certificate of the connection a
/// request came on (a request extension, on TLS listeners that require
/// client certificates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertName(pub String);

/// A connection's budget of requests in flight, shared by all its streams
/// (a request extension on listeners served with one, see
/// [`serve_router_with_budget`]): the peer port's streams take a permit per
/// request they run, so a peer cannot multiply its requests in flight by
/// opening more streams on one connection.
#[derive(Debug, Clone)]
pub struct ConnBudget(pub Arc<Semaphore>);

/// Bind a TCP listener for a `http(s)://HOST:PORT` URL.
pub async fn bind(url: &url::Url) -> std::io::Result<TcpListener> {
    let host = url.host_str().unwrap_or("127.0.0.1");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(2379);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    // Prefer IPv4 for "localhost", as etcd's listeners do.
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no address for {host}"),
            )
        })?;
    TcpListener::bind(addr).await
}

/// What a listener serves: an axum router, or the client port's service
/// (which sends gRPC calls straight to their service).
pub trait Serve:
    tower::Service<
        http::Request<Incoming>,
        Response = http::Response<Self::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
    type Body: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static;
}

impl<S, B> Serve for S
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Body = B;
}

/// Serve `svc` on `listener` (HTTP/1 and HTTP/2, over TLS when `tls` is
/// given) until `shutdown` turns true, with at most `max_connections` open
/// at once: the client API's listeners and the peer service's share this
/// loop.
pub async fn serve_router<S: Serve>(
    svc: S,
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    shutdown: signal::Receiver<bool>,
    max_connections: usize,
) {
    serve_on(svc, &listener, tls, shutdown, max_connections).await
}

/// [`serve_router`], with a [`ConnBudget`] of `budget` permits for each
/// connection on every request that comes on it.
pub async fn serve_router_with_budget<S: Serve>(
    svc: S,
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    shutdown: signal::Receiver<bool>,
    max_connections: usize,
    budget: usize,
) {
    serve_listener(svc, &listener, tls, shutdown, max_connections, Some(budget)).await
}

/// [`serve_router`] on a borrowed listener, which stays open (and keeps
/// queueing connections) when serving stops: a replica looking for its
/// cluster answers on its peer port, then hands the same listener to the
/// member's peer service.
pub async fn serve_on<S: Serve>(
    svc: S,
    listener: &TcpListener,
    tls: Option<Arc<ServerTls>>,
    shutdown: signal::Receiver<bool>,
    max_connections: usize,
) {
    serve_listener(svc, listener, tls, shutdown, max_connections, None).await
}

async fn serve_listener<S: Serve>(
    svc: S,
    listener: &TcpListener,
    tls: Option<Arc<ServerTls>>,
    mut shutdown: signal::Receiver<bool>,
    max_connections: usize,
    budget: Option<usize>,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        // Wait for a free connection slot before accepting: past the limit,
        // new connections wait in the kernel's backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let svc = svc.clone();
        let budget = budget.map(|n| ConnBudget(Arc::new(Semaphore::new(n))));
        let conn_shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            // The slot is given back when the connection ends.
            let _permit = permit;
            match tls {
                None => {
                    let io = TokioIo::new(Gathered::new(Mended::new(stream)));
                    let svc = WithConnInfo {
                        inner: svc,
                        name: None,
                        budget,
                    };
                    serve_connection(io, svc, peer, conn_shutdown).await
                }
                Some(tls) => match tls.accept(stream).await {
                    Ok(s) => {
                        let name = s
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(crate::tls::common_name);
                        // Only on connections with a client certificate.
                        let name = name.map(ClientCertName);
                        let svc = WithConnInfo {
                            inner: svc,
                            name,
                            budget,
                        };
                        let io = TokioIo::new(Gathered::new(Mended::new(s)));
                        serve_connection(io, svc, peer, conn_shutdown).await
                    }
                    Err(e) => crate::tls::log_handshake_error(peer, &e),
                },
            }
        });
    }
}

/// Serve HTTP/1 and HTTP/2 (gRPC) on one connection until it ends or
/// `shutdown` changes.
async fn serve_connection<I, S: Serve>(
    io: I,
    svc: WithConnInfo<S>,
    peer: SocketAddr,
    mut shutdown: signal::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let exec = InConn::default();
    let builder = hyper_util::server::conn::auto::Builder::new(exec.clone());
    let conn = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(svc));
    let conn = Driven::new(conn, &exec);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            }
        }
        _ = shutdown.changed() => {}
    }
}

/// A connection's service: `inner`, with what is known of the connection on
/// every request: the verified client certificate's name when it has one,
/// and its budget when it has one.
#[derive(Clone)]
struct WithConnInfo<S> {
    inner: S,
    name: Option<ClientCertName>,
    budget: Option<ConnBudget>,
}

impl<S: Serve> tower::Service<http::Request<Incoming>> for WithConnInfo<S> {
    type Response = S::Response;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Incoming>) -> S::Future {
        if let Some(name) = &self.name {
            req.extensions_mut().insert(name.clone());
        }
        if let Some(budget) = &self.budget {
            req.extensions_mut().insert(budget.clone());
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Empty, Full};

    use super::*;

    /// The budget each request on `addr` sees (its address, and its
    /// permits), over `requests` requests on one new connection.
    async fn budgets_seen(addr: SocketAddr, requests: usize) -> Vec<String> {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut seen = Vec::new();
        for _ in 0..requests {
            let req = http::Request::get("/").body(Empty::<Bytes>::new()).unwrap();
            let body = send.send_request(req).await.unwrap().into_body();
            let bytes = body.collect().await.unwrap().to_bytes();
            seen.push(String::from_utf8(bytes.to_vec()).unwrap());
        }
        seen
    }

    #[tokio::test]
    async fn each_connection_has_its_own_budget_on_every_request() {
        let svc = tower::service_fn(|req: http::Request<Incoming>| async move {
            let seen = match req.extensions().get::<ConnBudget>() {
                Some(ConnBudget(b)) => format!("{:p} {}", Arc::as_ptr(b), b.available_permits()),
                None => "none".to_string(),
            };
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(seen))))
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop, shutdown) = signal::channel(false);
        tokio::spawn(serve_router_with_budget(
            svc, listener, None, shutdown, 8, 7,
        ));

        let first = budgets_seen(addr, 2).await;
        let second = budgets_seen(addr, 1).await;
        assert!(first[0].ends_with(" 7"), "{first:?}");
        assert_eq!(first[0], first[1], "one connection, one budget");
        assert!(second[0].ends_with(" 7"), "{second:?}");
        assert_ne!(first[0], second[0], "two connections shared a budget");

        // Served without a budget, requests carry none.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain = listener.local_addr().unwrap();
        let (_stop, shutdown) = signal::channel(false);
        tokio::spawn(serve_router(svc, listener, None, shutdown, 8));
        assert_eq!(budgets_seen(plain, 1).await, vec!["none".to_string()]);
    }
}
