//! The client API: etcd's gRPC services plus `/health` and `/version` over
//! HTTP, all on the client port.
//!
//! Each gRPC service lives in its own file and is thin: validate, then
//! propose a write through Raft ([`crate::Node`]'s write path) or read the
//! current view, then fill etcd's response header. Errors become etcd's
//! status codes in [`error`].

pub mod cluster;
pub mod http;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod status;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;

pub use crate::error::ApiError;

use crate::node::Node;
use crate::pb::etcdserverpb::cluster_server::ClusterServer;
use crate::pb::etcdserverpb::kv_server::KvServer;
use crate::pb::etcdserverpb::lease_server::LeaseServer;
use crate::pb::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::pb::etcdserverpb::watch_server::WatchServer;
use crate::tls::ServerTls;

/// Extra room gRPC gives above `--max-request-bytes`, as etcd does, so that
/// a request just above the limit gets etcd's "request is too large".
pub(crate) const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The version of the etcd API raftcd speaks.
pub const ETCD_VERSION: &str = "3.4.23";
/// The etcd cluster version raftcd reports.
pub const ETCD_CLUSTER_VERSION: &str = "3.4.0";

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

/// The router of everything served on a client port.
pub fn router(node: &Node) -> axum::Router {
    let max = node.inner.config.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let grpc = tonic::service::Routes::new(
        KvServer::new(kv::KvService::new(node.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(
        WatchServer::new(watch::WatchService::new(node.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(
        MaintenanceServer::new(maintenance::MaintenanceService::new(node.clone()))
            .max_decoding_message_size(max),
    )
    .add_service(
        ClusterServer::new(cluster::ClusterService::new(node.clone()))
            .max_decoding_message_size(max),
    )
    .add_service(
        LeaseServer::new(lease::LeaseService::new(node.clone())).max_decoding_message_size(max),
    )
    .into_axum_router()
    .layer(axum::middleware::map_response(status::message_size_status))
    .layer(axum::middleware::from_fn_with_state(
        node.clone(),
        learner_guard,
    ));
    grpc.merge(http::routes(node.clone()))
        .fallback(http::fallback)
}

/// etcd's rule for learners: a learner answers only Status and
/// serializable Range (checked in [`kv::range`]); every other RPC gets
/// "etcdserver: rpc not supported for learner", so clients go elsewhere.
async fn learner_guard(
    axum::extract::State(node): axum::extract::State<Node>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    const ALLOWED: [&str; 2] = ["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"];
    if node.is_learner() && !ALLOWED.contains(&req.uri().path()) {
        return tonic::Status::from(ApiError::NotSupportedForLearner).into_http();
    }
    next.run(req).await
}

/// Serve the client API on `listener` until `shutdown` turns true; over
/// TLS when `tls` is given (an `https://` URL). The TLS handshake runs in
/// each connection's own task, so a slow or plain-text client never holds up
/// the accept loop.
pub async fn serve(
    node: Node,
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    shutdown: signal::Receiver<bool>,
) {
    serve_router(router(&node), listener, tls, shutdown).await
}

/// Serve `router` on `listener` (HTTP/1 and HTTP/2, over TLS when `tls` is
/// given) until `shutdown` turns true: the client API's listeners and the
/// peer service's share this loop.
pub async fn serve_router(
    router: axum::Router,
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    mut shutdown: signal::Receiver<bool>,
) {
    loop {
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
        let svc = TowerToHyperService::new(router.clone());
        let conn_shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(TokioIo::new(stream), svc, peer, conn_shutdown).await,
                Some(tls) => match tls.accept(stream).await {
                    Ok(s) => serve_connection(TokioIo::new(s), svc, peer, conn_shutdown).await,
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
