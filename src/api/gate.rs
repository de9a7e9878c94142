//! What every gRPC call on a client port passes on its way to its service:
//! etcd's rule for learners, and etcd's status for an oversized message.
//!
//! It wraps each service itself ([`Gated`]), so the rules hold whichever
//! way a call comes: straight from the client port's dispatcher
//! ([`super::dispatch`]) or through the router (the JSON gateway's
//! in-process calls). Unlike the two axum middlewares it replaces, it boxes
//! nothing: they cost a get 14 of its 49 allocations (docs/benchmarks.md,
//! session 16).

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::{self, Either, MapOk, Ready, TryFutureExt};
use tonic::body::Body;
use tonic::server::NamedService;

use super::status::etcd_size_status;
use crate::error::ApiError;
use crate::server::Server;

type Response = http::Response<Body>;

/// A service that answers only what its member may answer.
#[derive(Clone)]
pub struct Gated<S> {
    inner: S,
    node: Server,
}

impl<S> Gated<S> {
    pub fn new(node: &Server, inner: S) -> Self {
        Self {
            inner,
            node: node.clone(),
        }
    }
}

impl<S: NamedService> NamedService for Gated<S> {
    const NAME: &'static str = S::NAME;
}

/// The calls a learner answers, as etcd: Status and Range (whose
/// serializable-only rule `Server::range_as` checks); every other
/// call gets "etcdserver: rpc not supported for learner", so clients go
/// elsewhere.
const LEARNER_ANSWERS: [&str; 2] = ["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"];

impl<S, B> tower::Service<http::Request<B>> for Gated<S>
where
    S: tower::Service<http::Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future =
        Either<Ready<Result<Response, Infallible>>, MapOk<S::Future, fn(Response) -> Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if self.node.refuses_clients() && !LEARNER_ANSWERS.contains(&req.uri().path()) {
            let refused = tonic::Status::from(ApiError::NotSupportedForLearner).into_http();
            return Either::Left(future::ready(Ok(refused)));
        }
        Either::Right(
            self.inner
                .call(req)
                .map_ok(size_status as fn(Response) -> Response),
        )
    }
}

/// tonic refuses a message above the decoding limit with `OutOfRange`
/// "Error, decoded message length too large: found N bytes, the limit is: M
/// bytes"; etcd (grpc-go) answers `ResourceExhausted` "grpc: received message
/// larger than max (N vs. M)". The first becomes the second; every other
/// response passes unchanged.
fn size_status(res: Response) -> Response {
    match res
        .extensions()
        .get::<tonic::Status>()
        .and_then(etcd_size_status)
    {
        Some(etcd) => etcd.into_http(),
        None => res,
    }
}
