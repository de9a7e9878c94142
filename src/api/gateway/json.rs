//! JSON ⇄ protobuf for one gateway method, in grpc-gateway v1's `JSONPb{OrigName:
//! true}` form (the serde code is pbjson's, generated in build.rs), plus
//! the error bodies etcd's gateway writes.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Code, Status};

/// A request body that could not become the method's request message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Go's words for a syntax error, or "unexpected EOF".
    #[error("{0}")]
    Syntax(String),
    /// A value of the wrong JSON type or an unknown enum name.
    #[error("{0}")]
    Type(String),
}

/// Protobuf bytes of `Req` from one JSON value (`null` is the empty
/// request, as in jsonpb).
pub fn request<Req>(value: &[u8]) -> Result<Vec<u8>, DecodeError>
where
    Req: prost::Message + Default + DeserializeOwned,
{
    // jsonpb first reads the body into a Go map: anything but an object
    // fails there, with encoding/json's words.
    let go_type = match value.first() {
        Some(b'[') => Some("array"),
        Some(b'"') => Some("string"),
        Some(b't' | b'f') => Some("bool"),
        Some(b'-' | b'0'..=b'9') => Some("number"),
        _ => None,
    };
    if let Some(t) = go_type {
        return Err(DecodeError::Type(format!(
            "json: cannot unmarshal {t} into Go value of type map[string]json.RawMessage"
        )));
    }
    let mut tree: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| DecodeError::Syntax(e.to_string()))?;
    if tree.is_null() {
        return Ok(Vec::new());
    }
    // jsonpb takes `null` for a field as its default value.
    drop_nulls(&mut tree);
    let req = serde_json::from_value::<Req>(tree).map_err(|e| DecodeError::Type(e.to_string()))?;
    Ok(req.encode_to_vec())
}

fn drop_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// JSON of the `Resp` in protobuf bytes `msg`.
pub fn response<Resp>(msg: &[u8]) -> Result<String, Status>
where
    Resp: prost::Message + Default + Serialize,
{
    let resp = Resp::decode(msg).map_err(|e| Status::internal(format!("bad response: {e}")))?;
    let json = serde_json::to_string(&resp)
        .map_err(|e| Status::internal(format!("response to JSON: {e}")))?;
    Ok(go_escape(json))
}

/// Go's encoding/json escapes `<`, `>`, `&`, U+2028 and U+2029 in strings
/// (they can only occur inside strings of a serialized document).
fn go_escape(json: String) -> String {
    if !json.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

fn quoted(s: &str) -> String {
    go_escape(serde_json::Value::from(s).to_string())
}

/// grpc-gateway v1's error body: `{"error":M,"message":M,"code":N}`.
pub fn error_body(status: &Status) -> String {
    let m = quoted(status.message());
    format!(
        r#"{{"error":{m},"message":{m},"code":{}}}"#,
        status.code() as i32
    )
}

/// grpc-gateway v1's error line in a streamed response.
pub fn stream_error_line(status: &Status) -> String {
    let http = http_status(status.code());
    format!(
        r#"{{"error":{{"grpc_code":{},"http_code":{},"message":{},"http_status":{}}}}}"#,
        status.code() as i32,
        http.as_u16(),
        quoted(status.message()),
        quoted(http.canonical_reason().unwrap_or("")),
    ) + "\n"
}

/// grpc-gateway v1.9's `HTTPStatusFromCode` (the version etcd 3.4 ships:
/// FailedPrecondition is still 412).
pub fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as S;
    match code {
        Code::Ok => S::OK,
        Code::Cancelled => S::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => S::BAD_REQUEST,
        Code::DeadlineExceeded => S::GATEWAY_TIMEOUT,
        Code::NotFound => S::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => S::CONFLICT,
        Code::PermissionDenied => S::FORBIDDEN,
        Code::Unauthenticated => S::UNAUTHORIZED,
        Code::ResourceExhausted => S::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => S::PRECONDITION_FAILED,
        Code::Unimplemented => S::NOT_IMPLEMENTED,
        Code::Unavailable => S::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => S::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
    use prost::Message;

    #[test]
    fn request_forms() {
        let req = |s: &str| {
            request::<RangeRequest>(s.as_bytes()).map(|b| RangeRequest::decode(&b[..]).unwrap())
        };
        let r =
            req(r#"{"key":"Zm9v","sortOrder":2,"limit":"3","bogus":[1],"revision":null}"#).unwrap();
        assert_eq!((&r.key[..], r.sort_order, r.limit), (&b"foo"[..], 2, 3));
        let r = req(r#"{"key":"Zm9v","sort_order":"DESCEND","keys_only":true}"#).unwrap();
        assert_eq!((r.sort_order, r.keys_only), (2, true));
        assert_eq!(req("null").unwrap(), RangeRequest::default());
        assert_eq!(
            req("[]").unwrap_err().to_string(),
            "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"
        );
        assert!(req(r#"{"key":5}"#).is_err());
    }

    #[test]
    fn response_form() {
        let resp = RangeResponse {
            header: Some(ResponseHeader {
                cluster_id: u64::MAX,
                revision: 2,
                ..Default::default()
            }),
            count: 1,
            ..Default::default()
        };
        assert_eq!(
            response::<RangeResponse>(&resp.encode_to_vec()).unwrap(),
            r#"{"header":{"cluster_id":"18446744073709551615","revision":"2"},"count":"1"}"#
        );
        let st = Status::new(Code::FailedPrecondition, "a <b> & c");
        assert_eq!(
            error_body(&st),
            r#"{"error":"a \u003cb\u003e \u0026 c","message":"a \u003cb\u003e \u0026 c","code":9}"#
        );
        assert_eq!(
            stream_error_line(&Status::not_found("x")),
            "{\"error\":{\"grpc_code\":5,\"http_code\":404,\"message\":\"x\",\"http_status\":\"Not Found\"}}\n"
        );
    }
}
