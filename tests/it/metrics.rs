//! `GET /metrics` on the client port: etcd's metric names in Prometheus text
//! format, values that follow what the member does, and the real
//! `etcdctl check datascale`, which reads `process_resident_memory_bytes`
//! from there (it fails with "Could not find: process_resident_memory_bytes"
//! without it).

use crate::common::{http_get, Server};

/// The value of the unlabeled sample `name` (or `name{labels}` exactly).
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn scrape(s: &Server) -> String {
    let (code, body) = http_get(s.port, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    body
}

#[test]
fn metrics_follow_the_member() {
    let s = Server::start();
    let before = scrape(&s);
    for name in [
        "etcd_server_has_leader",
        "etcd_server_is_leader",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_debugging_mvcc_keys_total",
        "etcd_disk_wal_fsync_duration_seconds_count",
        "etcd_disk_backend_commit_duration_seconds_count",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(sample(&before, name).is_some(), "{name} missing:\n{before}");
    }
    assert_eq!(sample(&before, "etcd_server_has_leader"), Some(1.0));
    assert_eq!(sample(&before, "etcd_server_is_leader"), Some(1.0));
    assert_eq!(sample(&before, "etcd_server_is_learner"), Some(0.0));
    assert!(before.contains("# TYPE etcd_disk_wal_fsync_duration_seconds histogram"));
    assert!(before.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"}"));
    assert!(before.contains("etcd_server_version{server_version=\"3.4.23\"} 1"));
    assert!(sample(&before, "process_resident_memory_bytes").unwrap_or(0.0) > 1e6);

    for i in 0..20 {
        let out = s.etcdctl(&["put", &format!("k{i}"), "v"]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let after = scrape(&s);
    let keys = |b: &str| sample(b, "etcd_debugging_mvcc_keys_total").unwrap_or(-1.0);
    assert_eq!(keys(&after) - keys(&before), 20.0);
    let rev = |b: &str| sample(b, "etcd_debugging_mvcc_current_revision").unwrap_or(-1.0);
    assert_eq!(rev(&after) - rev(&before), 20.0);
    // Each acknowledged put went through at least one log fdatasync and one
    // state machine commit.
    for h in [
        "etcd_disk_wal_fsync_duration_seconds_count",
        "etcd_disk_backend_commit_duration_seconds_count",
    ] {
        let grown = sample(&after, h).unwrap_or(0.0) - sample(&before, h).unwrap_or(0.0);
        assert!(grown >= 20.0, "{h} grew by {grown}");
    }
}

#[test]
fn etcdctl_check_datascale_passes() {
    let s = Server::start();
    let out = s.etcdctl(&["check", "datascale", "--load=s"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("PASS: Approximate system memory used : "),
        "{out:?}"
    );
}
