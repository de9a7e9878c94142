//! The client API: etcd's gRPC services (KV, Watch, Lease, Cluster,
//! Maintenance, Lock, Election), their JSON gateway (`/v3/...`, see
//! [`gateway`]) plus `/health`, `/version` and `/metrics` over HTTP, all on
//! the client port.
//!
//! Each service lives in its own file and is a thin adapter: unwrap the
//! request, call the member's core ([`crate::server::Server`], which checks,
//! goes through Raft or reads the view, and fills the header), wrap the
//! response. Errors become etcd's status codes in one place, [`status`].

pub mod auth;
pub mod cluster;
pub mod dispatch;
pub mod election;
pub mod gate;
pub mod gateway;
pub mod http;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod status;
pub mod watch;

use crate::config::GRPC_OVERHEAD_BYTES;
pub use crate::config::{ETCD_CLUSTER_VERSION, ETCD_VERSION};
use crate::net::ClientCertName;
use crate::pb::etcdserverpb::auth_server::AuthServer;
use crate::pb::etcdserverpb::cluster_server::ClusterServer;
use crate::pb::etcdserverpb::kv_server::KvServer;
use crate::pb::etcdserverpb::lease_server::LeaseServer;
use crate::pb::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::pb::etcdserverpb::watch_server::WatchServer;
use crate::pb::v3electionpb::election_server::ElectionServer;
use crate::pb::v3lockpb::lock_server::LockServer;
use crate::server::auth::{Credentials, Principal};
use crate::server::Server;
pub use dispatch::ClientService;
use gate::Gated;

/// etcd's gRPC services of a member, each behind its [`Gated`] rules.
#[derive(Clone)]
pub(crate) struct Services {
    kv: Gated<KvServer<kv::KvService>>,
    watch: Gated<WatchServer<watch::WatchService>>,
    maintenance: Gated<MaintenanceServer<maintenance::MaintenanceService>>,
    cluster: Gated<ClusterServer<cluster::ClusterService>>,
    lease: Gated<LeaseServer<lease::LeaseService>>,
    lock: Gated<LockServer<lock::LockService>>,
    election: Gated<ElectionServer<election::ElectionService>>,
    auth: Gated<AuthServer<auth::AuthService>>,
}

impl Services {
    fn new(node: &Server) -> Self {
        let max = node.config().max_request_bytes + GRPC_OVERHEAD_BYTES;
        Self {
            kv: Gated::new(
                node,
                KvServer::new(kv::KvService::new(node.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(usize::MAX),
            ),
            watch: Gated::new(
                node,
                WatchServer::new(watch::WatchService::new(node.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(usize::MAX),
            ),
            maintenance: Gated::new(
                node,
                MaintenanceServer::new(maintenance::MaintenanceService::new(node.clone()))
                    .max_decoding_message_size(max),
            ),
            cluster: Gated::new(
                node,
                ClusterServer::new(cluster::ClusterService::new(node.clone()))
                    .max_decoding_message_size(max),
            ),
            lease: Gated::new(
                node,
                LeaseServer::new(lease::LeaseService::new(node.clone()))
                    .max_decoding_message_size(max),
            ),
            lock: Gated::new(
                node,
                LockServer::new(lock::LockService::new(node.clone()))
                    .max_decoding_message_size(max),
            ),
            election: Gated::new(
                node,
                ElectionServer::new(election::ElectionService::new(node.clone()))
                    .max_decoding_message_size(max),
            ),
            auth: Gated::new(
                node,
                AuthServer::new(auth::AuthService::new(node.clone()))
                    .max_decoding_message_size(max),
            ),
        }
    }
}

/// The router of everything served on a client port. The port itself
/// serves [`ClientService`], which sends etcd's gRPC calls straight to
/// their services and the rest to this router.
pub fn router(node: &Server) -> axum::Router {
    let s = Services::new(node);
    let grpc = tonic::service::Routes::new(s.kv)
        .add_service(s.watch)
        .add_service(s.maintenance)
        .add_service(s.cluster)
        .add_service(s.lease)
        .add_service(s.lock)
        .add_service(s.election)
        .add_service(s.auth)
        .into_axum_router();
    let max = node.config().max_request_bytes + GRPC_OVERHEAD_BYTES;
    let gateway = gateway::routes(grpc.clone().fallback(http::fallback), max);
    grpc.merge(http::routes(node.clone()))
        .merge(gateway)
        .fallback(http::fallback)
}

/// What the client presented with `req`: its `token` metadata and the name
/// of its verified client certificate.
pub fn credentials<T>(req: &tonic::Request<T>) -> Credentials {
    Credentials {
        token: req
            .metadata()
            .get("token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        cert_cn: req
            .extensions()
            .get::<ClientCertName>()
            .map(|n| n.0.clone()),
    }
}

/// Who sent `req` (a bad token is etcd's "invalid auth token").
pub async fn principal<T>(
    server: &Server,
    req: &tonic::Request<T>,
) -> Result<Principal, tonic::Status> {
    Ok(server.principal(&credentials(req)).await?)
}
