//! Plain HTTP endpoints on the client port: `/health`, `/version` and
//! `/metrics` (see [`crate::metrics`]), with etcd's bodies.

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{ETCD_CLUSTER_VERSION, ETCD_VERSION};
use crate::server::Server;

pub fn routes(node: Server) -> Router {
    let scraped = node.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let node = scraped.clone();
                async move {
                    let body = crate::metrics::render(&node.metrics_figures());
                    (
                        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                        body,
                    )
                }
            }),
        )
        .route(
            "/health",
            get(move || {
                let node = node.clone();
                async move {
                    // Healthy means a linearizable read goes through now.
                    let (status, body) = match node.linearize().await {
                        Ok(()) => (StatusCode::OK, r#"{"health":"true"}"#),
                        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#),
                    };
                    (status, [(CONTENT_TYPE, "application/json")], body)
                }
            }),
        )
        .route(
            "/version",
            get(|| async {
                let body = format!(
                    r#"{{"etcdserver":"{ETCD_VERSION}","etcdcluster":"{ETCD_CLUSTER_VERSION}","raftcd":"{}"}}"#,
                    env!("CARGO_PKG_VERSION")
                );
                ([(CONTENT_TYPE, "application/json")], body)
            }),
        )
}

/// gRPC calls to a service not served get grpc-go's `Unimplemented`
/// "unknown service etcdserverpb.Auth" (unknown methods of a served service
/// are answered by its tonic server); unknown HTTP paths a 404.
pub async fn fallback(req: Request<Body>) -> Response {
    let grpc = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let path = req.uri().path().trim_start_matches('/');
        let service = path.split_once('/').map_or(path, |(service, _)| service);
        tonic::Status::unimplemented(format!("unknown service {service}")).into_http::<Body>()
    } else {
        (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
    }
}
