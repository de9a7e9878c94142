//! Plain HTTP endpoints on the client port: `/health` and `/version`, with
//! etcd's bodies.

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::{ETCD_CLUSTER_VERSION, ETCD_VERSION};
use crate::node::Node;

pub fn routes(node: Node) -> Router {
    Router::new()
        .route(
            "/health",
            get(move || {
                let node = node.clone();
                async move {
                    // Healthy means a linearizable read goes through now.
                    match node.linearize().await {
                        Ok(()) => (StatusCode::OK, r#"{"health":"true"}"#),
                        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#),
                    }
                }
            }),
        )
        .route(
            "/version",
            get(|| async {
                format!(
                    r#"{{"etcdserver":"{ETCD_VERSION}","etcdcluster":"{ETCD_CLUSTER_VERSION}","raftcd":"{}"}}"#,
                    env!("CARGO_PKG_VERSION")
                )
            }),
        )
}
