//! The client port's service: a call to one of etcd's gRPC services goes
//! straight to that service (each behind its [`Gated`] rules); everything
//! else (the JSON gateway, `/health`, `/version`, `/metrics`, other gRPC
//! services such as escrow's, unknown paths) to the axum router.
//!
//! Through the router, a gRPC call paid for a path match, its URL
//! parameters and matched path in the request's extensions, a clone of the
//! boxed route and boxed bodies: 13 of a get's 35 allocations
//! (docs/benchmarks.md, session 16).

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::{Either, MapOk, TryFutureExt};
use http_body_util::Either as EitherBody;
use hyper::body::Incoming;
use tonic::server::NamedService;
use tower::Service;

use super::gate::Gated;
use super::{kv, Services};
use crate::pb::etcdserverpb::kv_server::KvServer;
use crate::server::Server;

type Request = http::Request<Incoming>;
type GrpcResponse = http::Response<tonic::body::Body>;
type RouterResponse = http::Response<axum::body::Body>;
/// A response of either side.
pub type Response = http::Response<EitherBody<tonic::body::Body, axum::body::Body>>;
/// A gated service's future: every generated service's is the same boxed one.
type GrpcFuture = <Gated<KvServer<kv::KvService>> as Service<Request>>::Future;
type RouterFuture = <axum::Router as Service<Request>>::Future;

/// What a client port serves (see the module's documentation).
#[derive(Clone)]
pub struct ClientService {
    grpc: Services,
    rest: axum::Router,
}

impl ClientService {
    /// etcd's services of `node`, and `rest` for everything else.
    pub fn new(node: &Server, rest: axum::Router) -> Self {
        Self {
            grpc: Services::new(node),
            rest,
        }
    }
}

/// The gRPC service a path names (`/etcdserverpb.KV/Range` names
/// `etcdserverpb.KV`).
fn service_of(path: &str) -> Option<&str> {
    Some(path.strip_prefix('/')?.split_once('/')?.0)
}

fn grpc(res: GrpcResponse) -> Response {
    res.map(EitherBody::Left)
}

fn routed(res: RouterResponse) -> Response {
    res.map(EitherBody::Right)
}

impl Service<Request> for ClientService {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        MapOk<GrpcFuture, fn(GrpcResponse) -> Response>,
        MapOk<RouterFuture, fn(RouterResponse) -> Response>,
    >;

    /// Always ready: the generated services and the router are.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        fn named<S: NamedService>(_: &S) -> &'static str {
            S::NAME
        }
        let name = service_of(req.uri().path()).unwrap_or("");
        let s = &mut self.grpc;
        let call = if name == named(&s.kv) {
            s.kv.call(req)
        } else if name == named(&s.watch) {
            s.watch.call(req)
        } else if name == named(&s.lease) {
            s.lease.call(req)
        } else if name == named(&s.maintenance) {
            s.maintenance.call(req)
        } else if name == named(&s.cluster) {
            s.cluster.call(req)
        } else if name == named(&s.lock) {
            s.lock.call(req)
        } else if name == named(&s.election) {
            s.election.call(req)
        } else if name == named(&s.auth) {
            s.auth.call(req)
        } else {
            return Either::Right(self.rest.call(req).map_ok(routed as fn(_) -> _));
        };
        Either::Left(call.map_ok(grpc as fn(_) -> _))
    }
}

#[cfg(test)]
mod tests {
    use super::service_of;

    #[test]
    fn a_path_names_its_grpc_service() {
        assert_eq!(
            service_of("/etcdserverpb.KV/Range"),
            Some("etcdserverpb.KV")
        );
        assert_eq!(service_of("/v3lockpb.Lock/Unlock"), Some("v3lockpb.Lock"));
        assert_eq!(service_of("/health"), None);
        assert_eq!(service_of("/"), None);
        assert_eq!(service_of(""), None);
        assert_eq!(service_of("/v3/kv/range"), Some("v3"));
    }
}
