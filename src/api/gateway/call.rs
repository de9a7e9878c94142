//! One gRPC call made in-process through the client port's gRPC router,
//! and its answer turned into the gateway's HTTP response.

use std::pin::Pin;

use axum::body::Body;
use axum::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Router;
use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body_util::BodyExt;
use tonic::{Code, Status};
use tower::Service;

use super::json;

/// A gRPC message frame: uncompressed flag, big-endian length, message.
pub fn frame(msg: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + msg.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out.freeze()
}

/// Call `path` on `grpc` with `body` (request frames) and `metadata`.
pub async fn call(
    grpc: &Router,
    path: &'static str,
    metadata: HeaderMap,
    body: impl Into<Body>,
) -> http::Response<Body> {
    let mut req = http::Request::new(body.into());
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static(path);
    *req.version_mut() = http::Version::HTTP_2;
    let headers = req.headers_mut();
    headers.extend(metadata);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    let mut svc = grpc.clone();
    // The router is always ready and never fails (Infallible).
    let ready =
        std::future::poll_fn(|cx| Service::<http::Request<Body>>::poll_ready(&mut svc, cx)).await;
    match ready {
        Ok(()) => match svc.call(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        },
        Err(never) => match never {},
    }
}

type Messages = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// The messages of a gRPC answer, ending with `Err` unless its status is OK.
fn messages(res: http::Response<Body>) -> Messages {
    if let Some(status) = Status::from_header_map(res.headers()) {
        // A trailers-only answer: the call failed before any message.
        if status.code() != Code::Ok {
            return Box::pin(futures::stream::once(async move { Err(status) }));
        }
    }
    struct Reader {
        body: Body,
        buf: BytesMut,
        done: bool,
    }
    let reader = Reader {
        body: res.into_body(),
        buf: BytesMut::new(),
        done: false,
    };
    Box::pin(futures::stream::unfold(reader, |mut r| async move {
        loop {
            if r.done {
                return None;
            }
            if r.buf.len() >= 5 {
                let len = u32::from_be_bytes([r.buf[1], r.buf[2], r.buf[3], r.buf[4]]) as usize;
                if r.buf[0] != 0 {
                    r.done = true;
                    let e = Status::internal("gateway: compressed gRPC message");
                    return Some((Err(e), r));
                }
                if r.buf.len() >= 5 + len {
                    r.buf.advance(5);
                    let msg = r.buf.split_to(len).freeze();
                    return Some((Ok(msg), r));
                }
            }
            match r.body.frame().await {
                Some(Ok(f)) => match f.into_data() {
                    Ok(data) => r.buf.extend_from_slice(&data),
                    Err(f) => {
                        r.done = true;
                        let status = f
                            .trailers_ref()
                            .and_then(Status::from_header_map)
                            .unwrap_or_else(|| Status::internal("gateway: no grpc-status"));
                        if status.code() != Code::Ok {
                            return Some((Err(status), r));
                        }
                    }
                },
                Some(Err(e)) => {
                    r.done = true;
                    let e = Status::unavailable(format!("gateway: {e}"));
                    return Some((Err(e), r));
                }
                None => r.done = true,
            }
        }
    }))
}

/// A unary answer: its message as JSON, or grpc-gateway's error body.
pub async fn unary_response(
    res: http::Response<Body>,
    encode: fn(&[u8]) -> Result<String, Status>,
) -> Response {
    let mut messages = messages(res);
    let mut first = None;
    while let Some(item) = messages.next().await {
        match item {
            Ok(msg) => {
                first.get_or_insert(msg);
            }
            Err(status) => return super::error_response(&status),
        }
    }
    let Some(msg) = first else {
        return super::error_response(&Status::internal("gateway: no response message"));
    };
    match encode(&msg) {
        Ok(body) => {
            let mut res = super::json_response(StatusCode::OK, body);
            grpc_metadata(res.headers_mut());
            res
        }
        Err(status) => super::error_response(&status),
    }
}

/// A streamed answer: one `{"result":{...}}` line per message, an
/// `{"error":{...}}` line if the call fails. The HTTP status waits for the
/// first message: a call failing before any has the error's status.
pub async fn stream_response(
    res: http::Response<Body>,
    encode: fn(&[u8]) -> Result<String, Status>,
) -> Response {
    let mut messages = messages(res);
    let line = move |item: Result<Bytes, Status>| -> (Bytes, bool) {
        let json = item.and_then(|msg| encode(&msg));
        match json {
            Ok(json) => (Bytes::from(format!("{{\"result\":{json}}}\n")), false),
            Err(status) => (Bytes::from(json::stream_error_line(&status)), true),
        }
    };
    let Some(first) = messages.next().await else {
        let mut res = super::json_response(StatusCode::OK, Body::empty());
        grpc_metadata(res.headers_mut());
        return res;
    };
    let status = match &first {
        Ok(_) => StatusCode::OK,
        Err(s) => json::http_status(s.code()),
    };
    let (first_line, failed) = line(first);
    let rest = futures::stream::unfold((messages, failed), move |(mut m, stop)| async move {
        if stop {
            return None;
        }
        let (l, stop) = line(m.next().await?);
        Some((Ok::<_, std::convert::Infallible>(l), (m, stop)))
    });
    let lines = futures::stream::once(async move { Ok(first_line) }).chain(rest);
    let mut res = super::json_response(status, Body::from_stream(lines));
    if status == StatusCode::OK {
        grpc_metadata(res.headers_mut());
    }
    res
}

/// grpc-gateway passes the gRPC answer's headers on as `Grpc-Metadata-*`.
fn grpc_metadata(headers: &mut HeaderMap) {
    headers.insert(
        HeaderName::from_static("grpc-metadata-content-type"),
        HeaderValue::from_static("application/grpc"),
    );
}
