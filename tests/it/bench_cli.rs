//! `raftcd bench`: the real binary against a real raftcd, its `-w json`
//! report checked against what the server holds afterwards (read back with
//! the real etcdctl), and its refusals of bad flags and dead endpoints.

use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{
    base64_decode, certs, free_port, machine_share, peer_args, raftcd_bin, Server,
};

/// `raftcd bench ARGS` (stderr is a pipe: no progress bar).
fn bench(args: &[&str]) -> Output {
    Command::new(raftcd_bin())
        .arg("bench")
        .args(args)
        .output()
        .expect("run raftcd bench")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run a workload with `-w json` against `server`, expecting success.
fn report(server: &Server, workload: &[&str], args: &[&str]) -> Value {
    let ep = server.endpoint();
    let mut all = workload.to_vec();
    all.extend(["--endpoints", &ep, "-w", "json"]);
    all.extend(args);
    let out = bench(&all);
    assert!(
        out.status.success(),
        "raftcd bench {all:?}: {}\n{}",
        out.status,
        stderr(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} in {v}"))
}

fn f(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} in {v}"))
}

/// `count` successful requests, no errors, sane throughput and ordered
/// percentiles over `samples` latencies.
fn assert_clean(r: &Value, count: u64, samples: u64) {
    assert_eq!(u(r, "/count"), count, "{r}");
    assert_eq!(u(r, "/errors"), 0, "{r}");
    assert_eq!(r["error_counts"], Value::Array(vec![]), "{r}");
    assert_eq!(u(r, "/latency_ms/samples"), samples, "{r}");
    assert!(
        f(r, "/throughput") > 0.0 && f(r, "/elapsed_secs") > 0.0,
        "{r}"
    );
    let l = &r["latency_ms"];
    let seq = ["min", "p50", "p90", "p99", "p99.9", "max"].map(|k| f(l, &format!("/{k}")));
    assert!(seq[0] > 0.0, "{r}");
    assert!(seq.windows(2).all(|w| w[0] <= w[1]), "{r}");
    assert!(f(l, "/mean") >= seq[0] && f(l, "/mean") <= seq[5], "{r}");
}

/// etcdctl's `get FROM TO -w json` (or of one key): the kvs, keys and
/// values decoded.
fn kvs(server: &Server, range: &[&str]) -> Vec<(String, String, i64)> {
    let mut args = vec!["get"];
    args.extend(range);
    args.extend(["-w", "json"]);
    let out = server.etcdctl(&args);
    assert_eq!(out.code, 0, "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).expect("etcdctl json");
    let b64 = |s: &Value| {
        let raw = base64_decode(s.as_str().expect("base64 string"));
        String::from_utf8(raw).expect("utf-8")
    };
    v["kvs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|kv| {
                    (
                        b64(&kv["key"]),
                        b64(&kv["value"]),
                        kv["version"].as_i64().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn put_writes_every_key_then_range_reads_them_both_ways() {
    let server = Server::start();
    let r = report(
        &server,
        &["put"],
        &[
            "--total",
            "200",
            "--clients",
            "4",
            "--conns",
            "2",
            "--key-space",
            "200",
        ],
    );
    let r = {
        // Random keys by default; --sequential-keys writes every key once.
        assert_clean(&r, 200, 200);
        report(
            &server,
            &["put"],
            &[
                "--total",
                "200",
                "--clients",
                "4",
                "--conns",
                "2",
                "--key-space",
                "200",
                "--val-size",
                "16",
                "--sequential-keys",
            ],
        )
    };
    assert_clean(&r, 200, 200);
    assert_eq!(r["workload"], "put");
    assert_eq!((u(&r, "/conns"), u(&r, "/clients")), (2, 4));
    assert_eq!((u(&r, "/key_size"), u(&r, "/val_size")), (8, 16));
    let got = kvs(&server, &["00000000", "00000200"]);
    assert_eq!(got.len(), 200, "every key of the key space exists");
    for (i, (k, v, _)) in got.iter().enumerate() {
        assert_eq!(k, &format!("{i:08}"));
        assert_eq!(v, "abcdefghijklmnop", "the value of {k}");
    }
    for c in ["l", "s"] {
        let r = report(
            &server,
            &["range", "--consistency", c],
            &["--total", "200", "--clients", "4", "--key-space", "200"],
        );
        assert_clean(&r, 200, 200);
        assert_eq!(r["consistency"], c);
        assert_eq!(u(&r, "/range/found"), 200, "every key read exists: {r}");
    }
}

#[test]
fn txn_cas_own_keys_all_succeed_contended_ones_conflict() {
    let server = Server::start();
    let own = report(
        &server,
        &["txn-cas"],
        &["--total", "200", "--clients", "4", "--key-space", "8"],
    );
    assert_clean(&own, 200, 200);
    assert_eq!(own["contended"], false);
    assert_eq!(
        (u(&own, "/txn/succeeded"), u(&own, "/txn/failed")),
        (200, 0)
    );
    let versions = |s: &Server| -> i64 {
        kvs(s, &["00000000", "00000008"])
            .iter()
            .map(|kv| kv.2)
            .sum()
    };
    assert_eq!(versions(&server), 200, "every succeeded compare put once");
    let key0 = kvs(&server, &["00000000"])[0].2;

    let hot = report(
        &server,
        &["txn-cas", "--contended"],
        &["--total", "200", "--clients", "8", "--key-space", "1"],
    );
    assert_clean(&hot, 200, 200);
    assert_eq!(hot["contended"], true);
    let (ok, failed) = (u(&hot, "/txn/succeeded"), u(&hot, "/txn/failed"));
    assert_eq!(ok + failed, 200, "{hot}");
    assert!(ok >= 1, "{hot}");
    assert_eq!(
        kvs(&server, &["00000000"])[0].2,
        key0 + ok as i64,
        "one put per succeeded compare"
    );
}

#[test]
fn watch_gets_every_put_on_every_stream() {
    let server = Server::start();
    let r = report(
        &server,
        &["watch"],
        &["--total", "100", "--clients", "4", "--conns", "2"],
    );
    assert_clean(&r, 100, 200);
    assert_eq!(
        (
            u(&r, "/watch/watchers"),
            u(&r, "/watch/puts"),
            u(&r, "/watch/events")
        ),
        (2, 100, 200)
    );
}

#[test]
fn duration_stops_the_run_and_all_failed_exits_non_zero() {
    let server = Server::start();
    let t0 = Instant::now();
    let r = report(&server, &["put"], &["--duration", "1s", "--clients", "2"]);
    let wall = t0.elapsed();
    assert!(wall < Duration::from_secs(20), "took {wall:?}");
    let secs = f(&r, "/elapsed_secs");
    assert!((0.9..10.0).contains(&secs), "{r}");
    assert!(u(&r, "/count") > 0 && u(&r, "/errors") == 0, "{r}");

    // Values over the server's request limit: every put is refused.
    let ep = server.endpoint();
    let out = bench(&[
        "put",
        "--endpoints",
        &ep,
        "--total",
        "3",
        "--val-size",
        "2000000",
        "-w",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!((u(&r, "/count"), u(&r, "/errors")), (0, 3), "{r}");
    assert_eq!(r["error_counts"][0]["count"], 3);
    let why = r["error_counts"][0]["error"].as_str().unwrap();
    assert!(why.contains("request is too large"), "{why}");
    assert_eq!(
        stderr(&out).trim(),
        "raftcd: error: bench: all 3 requests failed"
    );
}

#[test]
fn bad_flags_and_a_dead_endpoint_say_so_in_one_line() {
    let cases: &[(&[&str], i32, &str)] = &[
        (&["put", "--bogus"], 2, "'--bogus'"),
        (&["put", "--clients", "0"], 2, "--clients"),
        (&["put", "--duration", "10x"], 2, "--duration"),
        (&["put", "--total", "0"], 2, "--total"),
        (&["range", "--consistency", "x"], 2, "--consistency"),
        (&["put", "--key-size", "2"], 2, "--key-size"),
        (
            &["txn-cas", "--clients", "8", "--key-space", "4"],
            2,
            "--key-space",
        ),
        (&["watch", "--val-size", "4"], 2, "--val-size"),
        (&["put", "--cert", "c.pem"], 2, "--key"),
        (
            &["put", "--endpoints", "https://127.0.0.1:1"],
            2,
            "--cacert",
        ),
        (&["put", "--endpoints", "ftp://x:1"], 2, "--endpoints"),
    ];
    let dead = format!("127.0.0.1:{}", free_port());
    let unreachable = ["put", "--endpoints", &dead, "--total", "5"];
    let want = format!("cannot connect to {dead}");
    let cases = cases
        .iter()
        .copied()
        .chain([(&unreachable[..], 1, want.as_str())]);
    for (args, code, needle) in cases {
        let out = bench(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line: {err}"
        );
        assert!(err.starts_with("raftcd: error: bench: "), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err} lacks {needle}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn tls_with_a_client_certificate() {
    let _machine = machine_share();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    certs(dir, &["init"]);
    certs(dir, &["server"]);
    certs(dir, &["client"]);
    let file = |f: &str| dir.join(f).display().to_string();
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let mut child = Kill(
        Command::new(raftcd_bin())
            .args(["--data-dir", &file("data")])
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(peer_args(&format!("http://127.0.0.1:{}", free_port())))
            .args([
                "--cert-file",
                &file("server.pem"),
                "--key-file",
                &file("server-key.pem"),
            ])
            .args(["--trusted-ca-file", &file("ca.pem"), "--client-cert-auth"])
            .env("ETCD_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn raftcd"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.0.try_wait().unwrap().is_none(), "raftcd exited early");
        assert!(Instant::now() < deadline, "raftcd not listening in time");
        std::thread::sleep(Duration::from_millis(30));
    }
    let ep = format!("127.0.0.1:{port}");
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client-key.pem"));
    let tls = ["--cacert", &ca, "--cert", &cert, "--key", &key];
    let mut args = vec!["put", "--endpoints", &ep, "--total", "20", "-w", "json"];
    args.extend(tls);
    let out = bench(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!((u(&r, "/count"), u(&r, "/errors")), (20, 0), "{r}");

    // Without the client certificate the server refuses every request.
    let out = bench(&["put", "--endpoints", &ep, "--total", "3", "--cacert", &ca]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("raftcd: error: bench: "),
        "{}",
        stderr(&out)
    );
}

/// A child process killed when dropped (also when the test fails).
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
