//! The JSON gateway etcd 3.4 serves on its client port (grpc-gateway v1):
//! `POST /v3/kv/range` with `{"key":"Zm9v"}` and so on, so curl scripts
//! written against etcd keep working.
//!
//! Every route is a gRPC method called in-process through the very router
//! the gRPC clients reach ([`super::router`]'s gRPC half, with its learner
//! guard and size limits): the JSON body becomes the protobuf request
//! (pbjson serde, see build.rs), the gRPC answer becomes JSON. Behaviour
//! therefore never differs from gRPC, and a service registered there later
//! (Auth) answers here at once; until then its routes answer what etcd's
//! gateway answers for a service its gRPC server lacks (501, "unknown
//! service etcdserverpb.Auth").
//!
//! The JSON is grpc-gateway v1's `JSONPb{OrigName: true}`: proto field
//! names, 64-bit integers as strings, bytes as base64, enums by name,
//! defaults left out. Errors are `{"error":M,"message":M,"code":N}` with
//! grpc-gateway 1.9's HTTP statuses; streams (watch, keep-alive, snapshot)
//! are one `{"result":{...}}` line per message.

mod call;
mod gojson;
mod json;
mod routes;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use axum::http::{HeaderMap, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::Status;

use crate::error::ApiError;
use gojson::Scan;
pub use routes::etcd_methods;

/// How a method's messages flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses (Snapshot).
    ServerStream,
    /// A stream each way (Watch, LeaseKeepAlive): the body may hold several
    /// JSON requests one after the other.
    BidiStream,
}

/// One gRPC method the gateway serves.
pub struct Method {
    /// The gRPC path, `/etcdserverpb.KV/Range`.
    pub grpc_path: &'static str,
    pub kind: Kind,
    request: fn(&[u8]) -> Result<Vec<u8>, json::DecodeError>,
    response: fn(&[u8]) -> Result<String, Status>,
}

impl Method {
    fn new<Req, Resp>(grpc_path: &'static str, kind: Kind) -> Method
    where
        Req: prost::Message + Default + DeserializeOwned,
        Resp: prost::Message + Default + Serialize,
    {
        Method {
            grpc_path,
            kind,
            request: json::request::<Req>,
            response: json::response::<Resp>,
        }
    }

    /// A unary method: `Method::unary::<RangeRequest, RangeResponse>("/etcdserverpb.KV/Range")`.
    pub fn unary<Req, Resp>(grpc_path: &'static str) -> Method
    where
        Req: prost::Message + Default + DeserializeOwned,
        Resp: prost::Message + Default + Serialize,
    {
        Method::new::<Req, Resp>(grpc_path, Kind::Unary)
    }

    /// A method answering with a stream.
    pub fn server_stream<Req, Resp>(grpc_path: &'static str) -> Method
    where
        Req: prost::Message + Default + DeserializeOwned,
        Resp: prost::Message + Default + Serialize,
    {
        Method::new::<Req, Resp>(grpc_path, Kind::ServerStream)
    }

    /// A method streaming both ways.
    pub fn bidi_stream<Req, Resp>(grpc_path: &'static str) -> Method
    where
        Req: prost::Message + Default + DeserializeOwned,
        Resp: prost::Message + Default + Serialize,
    {
        Method::new::<Req, Resp>(grpc_path, Kind::BidiStream)
    }
}

struct Gateway {
    methods: HashMap<&'static str, Method>,
    /// The gRPC half of the client router.
    grpc: Router,
    /// The largest JSON request (one message of a stream) read.
    max_json: usize,
}

/// The gateway's routes over `grpc`, the client port's gRPC router.
/// `max_message` is the largest protobuf request the gRPC side accepts; a
/// JSON body may be twice that (base64 and field names), and the protobuf
/// it becomes then meets the gRPC limit itself.
pub fn routes(grpc: Router, max_message: usize) -> Router {
    let gateway = Arc::new(Gateway {
        methods: etcd_methods().into_iter().collect(),
        grpc,
        max_json: max_message.saturating_mul(2),
    });
    // etcd 3.4 still serves the v3beta paths of etcd 3.3.
    Router::new()
        .route("/v3/", any(handle))
        .route("/v3/{*path}", any(handle))
        .route("/v3beta/", any(handle))
        .route("/v3beta/{*path}", any(handle))
        .with_state(gateway)
}

async fn handle(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let path = req.uri().path();
    let path = match path.strip_prefix("/v3beta/") {
        Some(rest) => format!("/v3/{rest}"),
        None => path.to_string(),
    };
    let mut res = match gw.methods.get(path.as_str()) {
        None => plain(StatusCode::NOT_FOUND, "Not Found\n"),
        Some(_) if req.method() == HttpMethod::OPTIONS => StatusCode::OK.into_response(),
        Some(_) if req.method() != HttpMethod::POST => {
            plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n")
        }
        Some(m) => gw.serve(m, req).await,
    };
    cors(res.headers_mut());
    res
}

impl Gateway {
    async fn serve(&self, method: &Method, req: Request) -> Response {
        let metadata = forwarded_metadata(req.headers());
        let body = req.into_body();
        match method.kind {
            Kind::Unary | Kind::ServerStream => {
                let msg = match self.unary_request(method, body).await {
                    Ok(msg) => msg,
                    Err(status) => return error_response(&status),
                };
                let res =
                    call::call(&self.grpc, method.grpc_path, metadata, call::frame(&msg)).await;
                if method.kind == Kind::Unary {
                    call::unary_response(res, method.response).await
                } else {
                    call::stream_response(res, method.response).await
                }
            }
            Kind::BidiStream => {
                let requests = match self.request_stream(method, body).await {
                    Ok(s) => s,
                    // grpc-gateway fails the first message with a plain
                    // Go error: code Unknown.
                    Err(e) => return error_response(&Status::unknown(e)),
                };
                let res = call::call(&self.grpc, method.grpc_path, metadata, requests).await;
                call::stream_response(res, method.response).await
            }
        }
    }

    /// The one request of a unary or server-streaming call, as protobuf.
    async fn unary_request(&self, method: &Method, body: Body) -> Result<Vec<u8>, Status> {
        let body = axum::body::to_bytes(body, self.max_json)
            .await
            .map_err(|_| Status::from(ApiError::RequestTooLarge))?;
        match gojson::next_value(&body, true) {
            // Go's decoder: an empty body is io.EOF, which the gateway
            // takes as the empty request.
            Scan::Empty => Ok(Vec::new()),
            Scan::Value { start, end } => (method.request)(&body[start..end]).map_err(|e| {
                tracing::debug!(path = method.grpc_path, error = %e, "gateway: bad JSON request");
                Status::invalid_argument(e.to_string())
            }),
            Scan::Incomplete => Err(Status::invalid_argument("unexpected EOF")),
            Scan::Invalid(e) => Err(Status::invalid_argument(e)),
        }
    }

    /// The requests of a bidirectional stream as gRPC frames: the first is
    /// read (and a bad one refused) before the call; the rest are decoded
    /// as the body arrives, and a bad one ends the sending side, as in
    /// grpc-gateway.
    async fn request_stream(&self, method: &Method, body: Body) -> Result<Body, String> {
        let mut reader = JsonReader {
            body: body.into_data_stream(),
            buf: BytesMut::new(),
            eof: false,
            max: self.max_json,
            decode: method.request,
        };
        let first = reader.next().await?;
        let Some(first) = first else {
            return Ok(Body::empty());
        };
        let rest = futures::stream::unfold(reader, |mut r| async move {
            match r.next().await {
                Ok(Some(msg)) => Some((Ok::<_, std::convert::Infallible>(msg), r)),
                Ok(None) => None,
                Err(e) => {
                    tracing::debug!(error = %e, "gateway: bad JSON in a request stream");
                    None
                }
            }
        });
        let frames = futures::stream::once(async move { Ok(first) }).chain(rest);
        Ok(Body::from_stream(frames))
    }
}

/// Reads JSON values off a request body one at a time, as gRPC frames.
struct JsonReader {
    body: axum::body::BodyDataStream,
    buf: BytesMut,
    eof: bool,
    max: usize,
    decode: fn(&[u8]) -> Result<Vec<u8>, json::DecodeError>,
}

impl JsonReader {
    /// The next request as a gRPC frame; `None` at the end of the body.
    async fn next(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            match gojson::next_value(&self.buf, self.eof) {
                Scan::Value { start, end } => {
                    let msg = (self.decode)(&self.buf[start..end]).map_err(|e| e.to_string())?;
                    self.buf.advance(end);
                    return Ok(Some(call::frame(&msg)));
                }
                Scan::Invalid(e) => return Err(e),
                Scan::Empty if self.eof => return Ok(None),
                Scan::Incomplete if self.eof => return Err("unexpected EOF".into()),
                Scan::Empty | Scan::Incomplete => {}
            }
            if self.buf.len() > self.max {
                return Err(ApiError::RequestTooLarge.to_string());
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(e.to_string()),
                None => self.eof = true,
            }
        }
    }
}

/// The gRPC metadata of a gateway request: etcd reads the token from the
/// `Authorization` header (as metadata `token`), and grpc-gateway passes
/// `Grpc-Metadata-X` headers on as `X`.
fn forwarded_metadata(headers: &HeaderMap) -> HeaderMap {
    let mut md = HeaderMap::new();
    if let Some(token) = headers.get(http::header::AUTHORIZATION) {
        md.insert(HeaderName::from_static("token"), token.clone());
        md.insert(http::header::AUTHORIZATION, token.clone());
    }
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix("grpc-metadata-") else {
            continue;
        };
        if let Ok(key) = HeaderName::try_from(key) {
            md.append(key, value.clone());
        }
    }
    md
}

/// etcd's client port answers every origin (`--cors` defaults to `*`).
fn cors(headers: &mut HeaderMap) {
    for (name, value) in [
        ("access-control-allow-origin", "*"),
        (
            "access-control-allow-methods",
            "POST, GET, OPTIONS, PUT, DELETE",
        ),
        (
            "access-control-allow-headers",
            "accept, content-type, authorization",
        ),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
}

/// Go's `http.Error`.
fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [
            (CONTENT_TYPE, "text/plain; charset=utf-8"),
            (HeaderName::from_static("x-content-type-options"), "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    (status, [(CONTENT_TYPE, "application/json")], body.into()).into_response()
}

/// grpc-gateway's error answer for a failed call.
fn error_response(status: &Status) -> Response {
    json_response(json::http_status(status.code()), json::error_body(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_becomes_the_token() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("abc.42"));
        headers.insert("grpc-metadata-x-trace", HeaderValue::from_static("7"));
        headers.insert("user-agent", HeaderValue::from_static("curl"));
        let md = forwarded_metadata(&headers);
        assert_eq!(md.get("token").map(|v| v.as_bytes()), Some(&b"abc.42"[..]));
        assert_eq!(md.get("x-trace").map(|v| v.as_bytes()), Some(&b"7"[..]));
        assert!(md.get("user-agent").is_none());
    }

    #[test]
    fn one_method_a_path() {
        let methods = etcd_methods();
        let paths: std::collections::HashSet<_> = methods.iter().map(|(p, _)| *p).collect();
        assert_eq!(paths.len(), methods.len());
        let services = [
            "/etcdserverpb.",
            "/v3lockpb.Lock/",
            "/v3electionpb.Election/",
        ];
        for (p, m) in &methods {
            assert!(p.starts_with("/v3/"), "{p}");
            assert!(
                services.iter().any(|s| m.grpc_path.starts_with(s)),
                "{p} -> {}",
                m.grpc_path
            );
        }
    }
}
