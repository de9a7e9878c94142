//! Listeners: binding a URL's address and serving a router on it (HTTP/1
//! and HTTP/2, over TLS for `https://`), with a limit on open connections.
//! The client listeners and the peer listeners both use it. A connection's
//! writes are gathered until its flush ([`Gathered`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio::sync::Semaphore;

use crate::tls::ServerTls;

mod gather;
pub use gather::{Gathered, GATHER_LIMIT};

/// The common name of the verified client certificate of the connection a
/// request came on (a request extension, on TLS listeners that require
/// client certificates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertName(pub String);

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

/// Serve `router` on `listener` (HTTP/1 and HTTP/2, over TLS when `tls` is
/// given) until `shutdown` turns true, with at most `max_connections` open
/// at once: the client API's listeners and the peer service's share this
/// loop.
pub async fn serve_router(
    router: axum::Router,
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    shutdown: signal::Receiver<bool>,
    max_connections: usize,
) {
    serve_on(router, &listener, tls, shutdown, max_connections).await
}

/// [`serve_router`] on a borrowed listener, which stays open (and keeps
/// queueing connections) when serving stops: a replica looking for its
/// cluster answers on its peer port, then hands the same listener to the
/// member's peer service.
pub async fn serve_on(
    router: axum::Router,
    listener: &TcpListener,
    tls: Option<Arc<ServerTls>>,
    mut shutdown: signal::Receiver<bool>,
    max_connections: usize,
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
        let router = router.clone();
        let svc = TowerToHyperService::new(router.clone());
        let conn_shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            // The slot is given back when the connection ends.
            let _permit = permit;
            match tls {
                None => {
                    let io = TokioIo::new(Gathered::new(stream));
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
                        let svc = match name {
                            // Only on connections with a client certificate.
                            Some(cn) => TowerToHyperService::new(
                                router.layer(axum::Extension(ClientCertName(cn))),
                            ),
                            None => svc,
                        };
                        serve_connection(TokioIo::new(Gathered::new(s)), svc, peer, conn_shutdown)
                            .await
                    }
                    Err(e) => crate::tls::log_handshake_error(peer, &e),
                },
            }
        });
    }
}

/// Serve HTTP/1 and HTTP/2 (gRPC) on one connection until it ends or
/// `shutdown` changes.
async fn serve_connection<I>(
    io: I,
    svc: TowerToHyperService<axum::Router>,
    peer: SocketAddr,
    mut shutdown: signal::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(io, svc);
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
