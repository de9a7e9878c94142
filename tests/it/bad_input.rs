//! Bad requests and bad flags.
//!
//! Every bad request gets etcd's gRPC code and message and changes nothing
//! (the revision and the data are checked afterwards). Every bad flag or data
//! dir makes the binary exit non-zero at once with one clear error line that
//! names the bad value, and never a panic.
//!
//! `RAFTCD_TEST_ORACLE=etcd cargo test --test it bad_input::requests` checks the
//! request expectations against the real etcd 3.4.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_client::{Client, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use raftcd::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use raftcd::pb::etcdserverpb::kv_client::KvClient;
use raftcd::pb::etcdserverpb::request_op::Request as Op;
use raftcd::pb::etcdserverpb::{Compare, PutRequest, RequestOp, TxnRequest};
use tonic::Code;

use crate::common::grpc;
use crate::target::Target;
use crate::{common, target};

const TOO_LARGE: &str = "etcdserver: request is too large";

fn err(code: Code, msg: &str) -> (Code, String) {
    (code, msg.to_string())
}

/// The store's revision and every key/value in it.
async fn state(c: &mut Client) -> (i64, Vec<(Vec<u8>, Vec<u8>)>) {
    let r = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    let kvs = r
        .kvs()
        .iter()
        .map(|k| (k.key().to_vec(), k.value().to_vec()))
        .collect();
    (r.header().unwrap().revision(), kvs)
}

fn raw_put(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        })),
    }
}

#[tokio::test]
async fn requests_oversized_are_rejected() {
    let (_t, mut c) = Target::with_client(&[]).await;
    c.put("keep", "me", None).await.unwrap();
    let before = state(&mut c).await;
    assert_eq!(before.0, 2);

    // Above --max-request-bytes (1.5 MiB by default): etcd's own error.
    let big = vec![b'x'; 1_677_722]; // 1.6 MiB
    assert_eq!(
        grpc(c.put("big", big.clone(), None).await),
        err(Code::InvalidArgument, TOO_LARGE)
    );
    let txn = Txn::new().and_then([TxnOp::put("big", big, None)]);
    assert_eq!(
        grpc(c.txn(txn).await),
        err(Code::InvalidArgument, TOO_LARGE)
    );
    // Far above it, the gRPC message-size limit refuses it first.
    let huge = vec![b'x'; 3 * 1024 * 1024];
    let (code, msg) = grpc(c.put("huge", huge, None).await);
    assert_eq!(code, Code::ResourceExhausted, "{msg}");
    // The PutRequest is 3 MiB of value plus 11 bytes of framing; the limit
    // is --max-request-bytes plus 512 KiB, as in etcd.
    assert_eq!(
        msg,
        "grpc: received message larger than max (3145739 vs. 2097152)"
    );
    assert_eq!(state(&mut c).await, before, "nothing changed");

    // Just below the limit is fine.
    let ok = vec![b'y'; 1024 * 1024];
    let p = c.put("ok", ok.clone(), None).await.unwrap();
    assert_eq!(p.header().unwrap().revision(), 3);
    assert_eq!(c.get("ok", None).await.unwrap().kvs()[0].value(), &ok[..]);
}

#[tokio::test]
async fn requests_max_request_bytes_flag() {
    let (_t, mut c) = Target::with_client(&["--max-request-bytes", "1024"]).await;
    let before = state(&mut c).await;
    assert_eq!(
        grpc(c.put("k", vec![b'x'; 2048], None).await),
        err(Code::InvalidArgument, TOO_LARGE)
    );
    assert_eq!(state(&mut c).await, before);
    let p = c.put("k", vec![b'x'; 512], None).await.unwrap();
    assert_eq!(p.header().unwrap().revision(), 2);
}

#[tokio::test]
async fn requests_malformed_change_nothing() {
    let (_t, mut c) = Target::with_client(&[]).await;
    c.put("a", "1", None).await.unwrap();
    c.put("b", "2", None).await.unwrap();
    let before = state(&mut c).await;
    assert_eq!(before.0, 3);

    let no_key = err(Code::InvalidArgument, "etcdserver: key is not provided");
    assert_eq!(grpc(c.put("", "v", None).await), no_key);
    assert_eq!(grpc(c.get("", None).await), no_key);
    assert_eq!(grpc(c.delete("", None).await), no_key);
    let txn = Txn::new().and_then([TxnOp::put("x", "1", None), TxnOp::put("", "2", None)]);
    assert_eq!(grpc(c.txn(txn).await), no_key);

    let dup = err(
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    let txn = Txn::new().and_then([TxnOp::put("a", "x", None), TxnOp::put("a", "y", None)]);
    assert_eq!(grpc(c.txn(txn).await), dup);
    let txn = Txn::new().or_else([
        TxnOp::delete("a", Some(DeleteOptions::new().with_range("c"))),
        TxnOp::put("b", "y", None),
    ]);
    assert_eq!(grpc(c.txn(txn).await), dup);
    let nested = Txn::new().and_then([TxnOp::put("a", "x", None)]);
    let txn = Txn::new().and_then([TxnOp::put("a", "y", None), TxnOp::txn(nested)]);
    assert_eq!(grpc(c.txn(txn).await), dup);

    let too_many = err(
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    let ops = |n: usize| -> Vec<TxnOp> {
        (0..n)
            .map(|i| TxnOp::put(format!("op{i}"), "v", None))
            .collect()
    };
    assert_eq!(grpc(c.txn(Txn::new().and_then(ops(129))).await), too_many);

    let no_lease = err(Code::NotFound, "etcdserver: requested lease not found");
    let unknown_lease = 0x7a7a_7a7a_7a7a;
    assert_eq!(
        grpc(
            c.put("a", "v", Some(PutOptions::new().with_lease(unknown_lease)))
                .await
        ),
        no_lease
    );
    let txn = Txn::new().and_then([
        TxnOp::put("x", "1", None),
        TxnOp::put("y", "1", Some(PutOptions::new().with_lease(unknown_lease))),
    ]);
    assert_eq!(grpc(c.txn(txn).await), no_lease);

    assert_eq!(state(&mut c).await, before, "nothing changed");
    // The limit itself is allowed: 128 writes, one revision.
    let r = c.txn(Txn::new().and_then(ops(128))).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 4);
}

/// A deliberate difference from etcd 3.4, which accepts a compare with an
/// unknown target or result and silently runs one of the branches: raftcd
/// refuses it with `InvalidArgument` and changes nothing.
#[tokio::test]
async fn requests_unknown_compare_target_and_result() {
    let (t, mut c) = Target::with_client(&[]).await;
    c.put("a", "1", None).await.unwrap();
    let before = state(&mut c).await;
    let mut raw = KvClient::connect(t.url()).await.expect("raw connect");
    let cmp = |target: i32, result: i32| Compare {
        result,
        target,
        key: Bytes::from_static(b"a"),
        range_end: Bytes::new(),
        target_union: Some(TargetUnion::Version(1)),
    };
    let cases = [
        (
            cmp(99, CompareResult::Equal as i32),
            "etcdserver: unknown compare target 99",
        ),
        (
            cmp(CompareTarget::Version as i32, 99),
            "etcdserver: unknown compare result 99",
        ),
    ];
    for (bad, message) in cases {
        let req = TxnRequest {
            compare: vec![bad.clone()],
            success: vec![raw_put("a", "s")],
            failure: vec![raw_put("a", "f")],
        };
        let answer = raw.txn(req).await;
        if target::oracle_is_etcd() {
            assert!(answer.is_ok(), "etcd 3.4 runs the txn: {answer:?}");
            continue;
        }
        let status = answer.expect_err("an unknown enum value is refused");
        assert_eq!(
            (status.code(), status.message()),
            (Code::InvalidArgument, message),
            "{bad:?}"
        );
    }
    if !target::oracle_is_etcd() {
        assert_eq!(state(&mut c).await, before, "nothing changed");
    }
}

#[tokio::test]
async fn requests_max_txn_ops_flag() {
    let (_t, mut c) = Target::with_client(&["--max-txn-ops", "4"]).await;
    let ops = |n: usize| -> Vec<TxnOp> {
        (0..n)
            .map(|i| TxnOp::put(format!("op{i}"), "v", None))
            .collect()
    };
    assert_eq!(
        grpc(c.txn(Txn::new().and_then(ops(5))).await),
        err(
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request"
        )
    );
    assert_eq!(state(&mut c).await, (1, vec![]));
    let r = c.txn(Txn::new().and_then(ops(4))).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 2);
}

/// Run the binary with `args` (and fixed local URLs unless `args` give
/// them), expect a quick non-zero exit, and return stderr.
fn run_failing(args: &[&str]) -> String {
    run_failing_with(args, &[])
}

/// [`run_failing`] with environment variables set.
fn run_failing_with(args: &[&str], env: &[(&str, &str)]) -> String {
    let started = Instant::now();
    let mut child = Command::new(common::raftcd_bin())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("ETCD_LOG_LEVEL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raftcd");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("raftcd {args:?} still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "raftcd {args:?} succeeded");
    assert!(
        !stderr.contains("panicked"),
        "raftcd {args:?} panicked:\n{stderr}"
    );
    stderr
}

/// Exactly one error line, naming `bad`.
fn one_error_line(stderr: &str, bad: &str) {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.to_lowercase().contains("error"))
        .collect();
    assert_eq!(errors.len(), 1, "want one error line:\n{stderr}");
    assert!(
        errors[0].contains(bad),
        "error line does not name {bad:?}: {stderr}"
    );
}

/// A single member's flags (tests/common) with an explicit cluster token.
fn member_args(dir: &Path, client: u16, peer: u16, token: &str) -> Vec<String> {
    let mut args = common::member_args(dir, client, peer);
    args.extend(["--initial-cluster-token".to_string(), token.to_string()]);
    args
}

#[test]
fn flags_bad_values_exit_with_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let dir_s = dir.display().to_string();

    let e = run_failing(&["--data-dir", &dir_s, "--listen-client-urls", "not-a-url"]);
    one_error_line(&e, "not-a-url");
    let e = run_failing(&[
        "--data-dir",
        &dir_s,
        "--listen-client-urls",
        "http//127.0.0.1:2379",
    ]);
    one_error_line(&e, "http//127.0.0.1:2379");
    let e = run_failing(&[
        "--data-dir",
        &dir_s,
        "--initial-advertise-peer-urls",
        "http://[::1:2380",
    ]);
    one_error_line(&e, "http://[::1:2380");
    let e = run_failing(&["--data-dir", &dir_s, "--initial-cluster-state", "old"]);
    one_error_line(&e, "old");
    assert!(!dir.exists(), "bad flags must not create the data dir");
}

/// tokio panics on a worker count that is not a positive number; raftcd
/// reads `TOKIO_WORKER_THREADS` itself and says what is wrong.
#[test]
fn a_bad_worker_thread_count_exits_with_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let dir_s = dir.display().to_string();
    for value in ["abc", "0", ""] {
        let e = run_failing_with(&["--data-dir", &dir_s], &[("TOKIO_WORKER_THREADS", value)]);
        one_error_line(
            &e,
            &format!(
                "TOKIO_WORKER_THREADS must be a number of worker threads above 0, not {value:?}"
            ),
        );
    }
    let e = run_failing_with(
        &["bench", "put", "--endpoints", "127.0.0.1:1", "--total", "1"],
        &[("TOKIO_WORKER_THREADS", "-2")],
    );
    one_error_line(&e, "TOKIO_WORKER_THREADS");
    assert!(
        !dir.exists(),
        "a bad runtime setting must not create the data dir"
    );
}

#[test]
fn flags_unusable_data_dir_exits_with_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (client, peer) = (common::free_port(), common::free_port());

    // A regular file where the data dir should be.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let args = member_args(&file, client, peer, "t");
    let e = run_failing(&args.iter().map(String::as_str).collect::<Vec<_>>());
    one_error_line(&e, &file.display().to_string());
    assert!(e.contains("not a directory"), "{e}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");

    // A data dir below a regular file.
    let below = file.join("data");
    let args = member_args(&below, client, peer, "t");
    let e = run_failing(&args.iter().map(String::as_str).collect::<Vec<_>>());
    one_error_line(&e, &below.display().to_string());

    // A data dir nobody may create (sysfs refuses even root).
    let unwritable = Path::new("/sys/raftcd-test-data");
    let args = member_args(unwritable, client, peer, "t");
    let e = run_failing(&args.iter().map(String::as_str).collect::<Vec<_>>());
    one_error_line(&e, "/sys/raftcd-test-data");
}

/// Start a member with `args` and wait until it answers `/health`.
fn start_member(args: &[String], client: u16) -> std::process::Child {
    let child = Command::new(common::raftcd_bin())
        .args(args)
        .env("ETCD_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn raftcd");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(common::http_get(client, "/health"), Some((200, _))) {
        assert!(Instant::now() < deadline, "raftcd not ready in time");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn flags_data_dir_of_another_cluster_is_refused() {
    let _machine = common::machine_share();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (client, peer) = (common::free_port(), common::free_port());
    let endpoint = format!("127.0.0.1:{client}");

    let mut first = start_member(&member_args(&dir, client, peer, "token-a"), client);
    let out = common::etcdctl(&endpoint, &["put", "k", "v"], None);
    assert_eq!(out.stdout, "OK\n", "{out:?}");
    // A clean stop (SIGTERM).
    let killed = Command::new("kill").arg(first.id().to_string()).status();
    assert!(killed.expect("run kill").success());
    let status = first.wait().expect("wait");
    assert!(status.success(), "clean shutdown: {status}");

    let args = member_args(&dir, client, peer, "token-b");
    let e = run_failing(&args.iter().map(String::as_str).collect::<Vec<_>>());
    one_error_line(&e, "token-b");
    assert!(e.contains(&dir.display().to_string()), "{e}");

    // The data is untouched: the right token still finds it.
    let mut again = start_member(&member_args(&dir, client, peer, "token-a"), client);
    let out = common::etcdctl(&endpoint, &["get", "k", "--print-value-only"], None);
    let _ = again.kill();
    let _ = again.wait();
    assert_eq!(out.stdout, "v\n", "{out:?}");
}
