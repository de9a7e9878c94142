//! The JSON gateway (`POST /v3/...`) against what etcd 3.4.23's gateway
//! answers: every case of `tests/data/gateway/cases.txt` is run with the
//! real curl against a fresh raftcd, in order, and compared with
//! `tests/data/gateway/etcd-3.4.23.txt` (recorded from etcd by
//! `tests/data/gateway/record.sh`): HTTP status line, Content-Type and body.
//!
//! Only what legitimately differs between two servers is masked: cluster
//! and member ids and URLs (replaced by placeholders, so each place that
//! must carry this server's id still does), raft terms and indexes, db
//! sizes, hash values, the remaining TTL of a lease and auth tokens.
//! Revisions are never masked. Three error messages are Go's own words for
//! JSON that is well-formed but of the wrong shape ([`GO_TYPE_ERRORS`]):
//! there only the status and code are compared.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Server;

const CASES: &str = include_str!("../data/gateway/cases.txt");
const RECORDED: &str = include_str!("../data/gateway/etcd-3.4.23.txt");

/// Cases whose error message is Go's encoding/json or base64 wording for a
/// value of the wrong type: raftcd's differs, its status and code do not.
const GO_TYPE_ERRORS: &[&str] = &["wrong_type", "bad_base64", "bad_enum"];

/// Numbers (or tokens) that differ between any two servers.
const MASKED: &[(&str, &str)] = &[
    ("\"raft_term\":\"", "<term>"),
    ("\"raftTerm\":\"", "<term>"),
    ("\"raftIndex\":\"", "<index>"),
    ("\"raftAppliedIndex\":\"", "<index>"),
    ("\"dbSize\":\"", "<size>"),
    ("\"dbSizeInUse\":\"", "<size>"),
    ("\"hash\":", "<hash>"),
];

struct Case {
    name: String,
    method: String,
    path: String,
    body: Option<String>,
}

fn cases() -> Vec<Case> {
    CASES
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let mut next = || parts.next().map(str::to_string);
            Case {
                name: next().expect("name"),
                method: next().expect("method"),
                path: next().expect("path"),
                body: next().filter(|b| !b.is_empty()),
            }
        })
        .collect()
}

/// The recorded answers by case name: the text after `=== NAME`.
fn recorded() -> HashMap<String, String> {
    RECORDED
        .split("=== ")
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (name, rest) = s.split_once('\n').expect("section name");
            (name.to_string(), rest.to_string())
        })
        .collect()
}

/// Replace the run of characters matching `keep` after every `prefix`.
fn mask_after(s: &str, prefix: &str, placeholder: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(prefix) {
        let start = i + prefix.len();
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = tail.find(|c: char| !keep(c)).unwrap_or(tail.len());
        if end > 0 {
            out.push_str(placeholder);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn mask(name: &str, text: &str) -> String {
    let mut out = text.to_string();
    for (prefix, placeholder) in MASKED {
        out = mask_after(&out, prefix, placeholder, |c| c.is_ascii_digit());
    }
    out = mask_after(&out, "\"token\":\"", "<token>", |c| c != '"');
    if name.starts_with("lease_timetolive") {
        // The remaining TTL: 59 or 60 depending on timing.
        out = mask_after(&out, "\"TTL\":\"", "<ttl>", |c| c.is_ascii_digit());
    }
    if GO_TYPE_ERRORS.contains(&name) {
        out = mask_after(&out, "{\"error\":", "<go-words>", |c| c != '}');
    }
    out
}

/// The server under test and its identity.
struct Gw {
    server: Server,
    cluster_id: String,
    member_id: String,
    peer_url: String,
}

impl Gw {
    fn start() -> Gw {
        let server = Server::start();
        let status = post(&server, "/v3/maintenance/status", "{}");
        let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
        let members = post(&server, "/v3/cluster/member/list", "{}");
        let members: serde_json::Value = serde_json::from_str(&members).expect("members JSON");
        Gw {
            cluster_id: status["header"]["cluster_id"].as_str().expect("id").into(),
            member_id: status["header"]["member_id"].as_str().expect("id").into(),
            peer_url: members["members"][0]["peerURLs"][0]
                .as_str()
                .expect("peer URL")
                .into(),
            server,
        }
    }

    fn placeholders(&self, s: &str) -> String {
        s.replace(&self.cluster_id, "<cluster>")
            .replace(&self.member_id, "<member>")
            .replace(&self.server.url(), "<client-url>")
            .replace(&self.peer_url, "<peer-url>")
    }

    fn curl_args(&self, case: &Case) -> Vec<String> {
        let mut args: Vec<String> =
            vec!["-s".into(), "-i".into(), "-X".into(), case.method.clone()];
        if case.name.starts_with("watch_") {
            args.extend(["-N".into(), "-m".into(), "20".into()]);
        }
        if let Some(body) = &case.body {
            args.extend(["-d".into(), body.clone()]);
        }
        args.push(format!("{}{}", self.server.url(), case.path));
        args
    }

    /// Run one case the way record.sh does and format it the same way:
    /// status line, Content-Type, blank line, body, newline.
    fn run(&self, case: &Case, expected: &str) -> String {
        let raw = if case.name.starts_with("watch_") {
            self.run_stream(case, expected)
        } else {
            let out = Command::new("curl")
                .args(self.curl_args(case))
                .output()
                .expect("run curl");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        format_response(&raw)
    }

    /// A stream left open: read until the body has as many lines as etcd's
    /// (or the stream ends), then stop curl.
    fn run_stream(&self, case: &Case, expected: &str) -> String {
        let want_lines = expected.split_once("\n\n").map_or(0, |(_, body)| {
            body.strip_suffix('\n')
                .unwrap_or(body)
                .matches('\n')
                .count()
        });
        let mut child = Command::new("curl")
            .args(self.curl_args(case))
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn curl");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut raw = Vec::new();
        let mut put_done = false;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        loop {
            let body_lines = body_of(&raw).map_or(0, |b| b.matches('\n').count());
            if case.name == "watch_live" && body_lines >= 1 && !put_done {
                post(
                    &self.server,
                    "/v3/kv/put",
                    r#"{"key":"Zm9v","value":"bGl2ZQ=="}"#,
                );
                put_done = true;
            }
            if body_lines >= want_lines && body_of(&raw).is_some() && want_lines > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: stream stalled: {raw:?}",
                case.name
            );
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        String::from_utf8_lossy(&raw).into_owned()
    }
}

/// The body of a raw `curl -i` output once the headers are complete.
fn body_of(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn format_response(raw: &str) -> String {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut out = String::new();
    for line in head.lines() {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("http/") {
            out.push_str(line.trim_end());
            out.push('\n');
        } else if let Some(value) = lower.strip_prefix("content-type:") {
            out.push_str(&format!("Content-Type: {}\n", value.trim()));
        }
    }
    out.push('\n');
    out.push_str(body);
    out.push('\n');
    out
}

/// POST `body` to `path` with curl; the response body.
fn post(server: &Server, path: &str, body: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-d", body])
        .arg(format!("{}{path}", server.url()))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl_i(server: &Server, path: &str, body: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-i", "-d", body])
        .arg(format!("{}{path}", server.url()))
        .output()
        .expect("run curl");
    format_response(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn answers_like_etcd_3_4() {
    let gw = Gw::start();
    let recorded = recorded();
    let mut diffs = Vec::new();
    let mut compared = 0;
    for case in cases() {
        let expected = recorded
            .get(&case.name)
            .unwrap_or_else(|| panic!("{} not recorded: run record.sh", case.name));
        let got = gw.run(&case, expected);
        let want = mask(&case.name, expected);
        let got = mask(&case.name, &gw.placeholders(&got));
        compared += 1;
        if got != want {
            diffs.push(format!("=== {}\nwant:\n{want}got:\n{got}", case.name));
        }
    }
    assert_eq!(compared, cases().len(), "every recorded case is compared");
    assert!(
        diffs.is_empty(),
        "{} differences from etcd 3.4:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// curl `-d @FILE` of `body` to `path`: formatted status, type and body.
fn curl_file(server: &Server, path: &str, body: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("body.json");
    std::fs::write(&file, body).expect("write body");
    let out = Command::new("curl")
        .args(["-s", "-i", "-H", "Expect:", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("{}{path}", server.url()))
        .output()
        .expect("run curl");
    format_response(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn snapshot_streams_a_backup_that_restores() {
    let server = Server::start();
    post(&server, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#);
    let out = Command::new("curl")
        .args(["-s", "-d", "{}"])
        .arg(format!("{}/v3/maintenance/snapshot", server.url()))
        .output()
        .expect("run curl");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut blob = Vec::new();
    let mut remaining = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
        let result = &v["result"];
        let chunk = result["blob"].as_str().expect("blob");
        blob.extend(decode_base64(chunk));
        remaining.push(
            result["remaining_bytes"]
                .as_str()
                .unwrap_or("0")
                .to_string(),
        );
    }
    assert!(!blob.is_empty(), "no snapshot data: {text:?}");
    assert_eq!(
        remaining.last().map(String::as_str),
        Some("0"),
        "{remaining:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("snap.db");
    std::fs::write(&file, &blob).expect("write snapshot");
    // `raftcd snapshot restore` checks the trailing sha256 of the backup.
    let restored = crate::common::snapshot_restore(&file, dir.path().join("restored"));
    assert!(restored.status.success(), "restore: {restored:?}");
}

fn decode_base64(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn streams_take_several_requests_in_one_body() {
    let server = Server::start();
    post(&server, "/v3/lease/grant", r#"{"TTL":"60","ID":"5"}"#);
    // Two keep-alives in one body: two answers, then the stream ends.
    let got = curl_i(&server, "/v3/lease/keepalive", r#"{"ID":"5"} {"ID":5}"#);
    let lines: Vec<&str> = got
        .lines()
        .filter(|l| l.starts_with("{\"result\""))
        .collect();
    assert_eq!(lines.len(), 2, "{got}");
    for l in lines {
        assert!(l.ends_with(r#""ID":"5","TTL":"60"}}"#), "{l}");
    }
    // A later request that is not JSON ends the sending side only.
    let got = curl_i(&server, "/v3/lease/keepalive", r#"{"ID":"5"} {bad"#);
    assert!(got.starts_with("HTTP/1.1 200 OK\n"), "{got}");
    assert_eq!(got.matches("{\"result\"").count(), 1, "{got}");
}

#[test]
fn request_bodies_are_bounded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = crate::common::free_port();
    let server = Server::start_in(
        &tmp.path().join("data"),
        port,
        &["--max-request-bytes", "1024"],
    );
    // The protobuf may be --max-request-bytes plus gRPC's 512 KiB; the JSON
    // twice that. Beyond: etcd's "request is too large".
    let filler = "A".repeat(2 * (1024 + 512 * 1024) + 16);
    let body = format!(r#"{{"key":"Zm9v","value":"{filler}"}}"#);
    let got = curl_file(&server, "/v3/kv/put", body.as_bytes());
    assert_eq!(
        got,
        "HTTP/1.1 400 Bad Request\nContent-Type: application/json\n\n\
         {\"error\":\"etcdserver: request is too large\",\"message\":\"etcdserver: request is too large\",\"code\":3}\n"
    );
    // Within the JSON bound but above the gRPC limit: grpc-go's words, as
    // etcd's gateway (a gRPC client of its own server) gets them.
    let filler = "A".repeat(700 * 1024);
    let body = format!(r#"{{"key":"Zm9v","value":"{filler}"}}"#);
    let got = curl_file(&server, "/v3/kv/put", body.as_bytes());
    assert!(
        got.starts_with("HTTP/1.1 429 Too Many Requests\n")
            && got.contains("grpc: received message larger than max")
            && got.contains("\"code\":8}"),
        "{got}"
    );
    // Above --max-request-bytes alone: the server's own check.
    let filler = "A".repeat(4 * 1024);
    let body = format!(r#"{{"key":"Zm9v","value":"{filler}"}}"#);
    let got = curl_file(&server, "/v3/kv/put", body.as_bytes());
    assert!(got.contains("etcdserver: request is too large"), "{got}");
    // The server still answers.
    assert!(post(&server, "/v3/kv/range", r#"{"key":"Zm9v"}"#).contains("\"header\""));
}
