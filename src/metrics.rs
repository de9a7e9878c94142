//! Prometheus metrics on `GET /metrics` of the client port, under etcd's
//! names, so the dashboards and alerts operators have for etcd keep working
//! (and `etcdctl check datascale`, which reads
//! `process_resident_memory_bytes` from there).
//!
//! Two kinds of source: latency histograms recorded where the work happens
//! ([`WAL_FSYNC`]: each `fdatasync` of the Raft log, etcd's
//! `etcd_disk_wal_fsync_duration_seconds`; [`BACKEND_COMMIT`]: the state
//! machine's commit of an applied batch (in memory; the state file is
//! written at snapshots), etcd's `etcd_disk_backend_commit_duration_seconds`)
//! and gauges read when scraped (Raft state, store size, process figures
//! from `/proc/self`). The histograms are per process: members embedded in
//! one process share them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket upper bounds in seconds: etcd's disk histograms, 1 ms doubling to
/// about 8 s.
const BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// A latency histogram with [`BUCKETS`], updated lock-free.
pub struct Histogram {
    /// Per bucket (not cumulative); the last slot counts values above all.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Self {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Raft log append + durable flush (etcd: WAL fsync).
pub static WAL_FSYNC: Histogram = Histogram::new();
/// State machine commit of an applied batch (etcd: backend commit).
pub static BACKEND_COMMIT: Histogram = Histogram::new();

/// What the node reports at scrape time.
pub struct NodeFigures {
    pub member_id: u64,
    pub has_leader: bool,
    pub is_leader: bool,
    pub is_learner: bool,
    pub leader_changes: u64,
    /// Read-index rounds this member ran for linearizable reads, and the
    /// reads those rounds served (several reads share a round).
    pub read_index_rounds: u64,
    pub read_index_reads: u64,
    /// Forwarding streams this member opened to a leader, requests it
    /// forwarded on them, and requests it forwarded as calls of their own.
    pub forward_streams_opened: u64,
    pub forwarded_on_stream: u64,
    pub forwarded_by_call: u64,
    /// AppendEntries streams this member opened to followers, and the
    /// AppendEntries it sent on them.
    pub append_streams_opened: u64,
    pub appends_on_stream: u64,
    pub term: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub db_size: u64,
    pub keys: usize,
    pub revision: i64,
    pub compact_revision: i64,
    pub server_version: &'static str,
    pub cluster_version: &'static str,
}

fn gauge(out: &mut String, name: &str, help: &str, kind: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// The whole `/metrics` body (Prometheus text format 0.0.4).
pub fn render(n: &NodeFigures) -> String {
    let mut out = String::new();
    let b = |v: bool| u8::from(v);
    gauge(
        &mut out,
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        "gauge",
        b(n.has_leader),
    );
    gauge(
        &mut out,
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        "gauge",
        b(n.is_leader),
    );
    gauge(
        &mut out,
        "etcd_server_is_learner",
        "Whether or not this member is a learner. 1 if is, 0 otherwise.",
        "gauge",
        b(n.is_learner),
    );
    gauge(
        &mut out,
        "etcd_server_leader_changes_seen_total",
        "The number of leader changes seen.",
        "counter",
        n.leader_changes,
    );
    gauge(
        &mut out,
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.",
        "gauge",
        n.applied_index,
    );
    gauge(
        &mut out,
        "etcd_server_proposals_pending",
        "The current number of pending proposals to commit.",
        "gauge",
        n.last_log_index.saturating_sub(n.applied_index),
    );
    gauge(
        &mut out,
        "raftcd_server_read_index_rounds_total",
        "Read-index rounds run for linearizable reads (a leader's quorum confirmation, or a follower's request to the leader).",
        "counter",
        n.read_index_rounds,
    );
    gauge(
        &mut out,
        "raftcd_server_read_index_reads_total",
        "Linearizable reads (and followers' read-index requests, on the leader) served by those rounds.",
        "counter",
        n.read_index_reads,
    );
    gauge(
        &mut out,
        "raftcd_peer_forward_streams_opened_total",
        "Forwarding streams this member opened to a leader.",
        "counter",
        n.forward_streams_opened,
    );
    gauge(
        &mut out,
        "raftcd_peer_forwarded_on_stream_total",
        "Requests (writes, membership changes) this member forwarded to the leader on a forwarding stream.",
        "counter",
        n.forwarded_on_stream,
    );
    gauge(
        &mut out,
        "raftcd_peer_forwarded_by_call_total",
        "Requests this member forwarded to the leader as calls of their own (a leader without forwarding streams).",
        "counter",
        n.forwarded_by_call,
    );
    gauge(
        &mut out,
        "raftcd_peer_append_streams_opened_total",
        "AppendEntries streams this member opened to followers.",
        "counter",
        n.append_streams_opened,
    );
    gauge(
        &mut out,
        "raftcd_peer_appends_on_stream_total",
        "AppendEntries requests this member sent to followers on those streams.",
        "counter",
        n.appends_on_stream,
    );
    gauge(
        &mut out,
        "raftcd_raft_term",
        "The current Raft term.",
        "gauge",
        n.term,
    );
    let _ = writeln!(
        out,
        "# HELP etcd_server_id Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.\n# TYPE etcd_server_id gauge\netcd_server_id{{server_id=\"{:x}\"}} 1",
        n.member_id
    );
    let _ = writeln!(
        out,
        "# HELP etcd_server_version Which version is running. 1 for 'server_version' label with current version.\n# TYPE etcd_server_version gauge\netcd_server_version{{server_version=\"{}\"}} 1",
        n.server_version
    );
    let _ = writeln!(
        out,
        "# HELP etcd_cluster_version Which version is running. 1 for 'cluster_version' label with current cluster version\n# TYPE etcd_cluster_version gauge\netcd_cluster_version{{cluster_version=\"{}\"}} 1",
        major_minor(n.cluster_version)
    );
    gauge(
        &mut out,
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        "gauge",
        n.db_size,
    );
    gauge(
        &mut out,
        "etcd_debugging_mvcc_keys_total",
        "Total number of keys.",
        "gauge",
        n.keys,
    );
    gauge(
        &mut out,
        "etcd_debugging_mvcc_current_revision",
        "The current revision of store.",
        "gauge",
        n.revision,
    );
    gauge(
        &mut out,
        "etcd_debugging_mvcc_compact_revision",
        "The revision of the last compaction in store.",
        "gauge",
        n.compact_revision.max(0),
    );
    WAL_FSYNC.write(
        &mut out,
        "etcd_disk_wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL.",
    );
    BACKEND_COMMIT.write(
        &mut out,
        "etcd_disk_backend_commit_duration_seconds",
        "The latency distributions of commit called by backend.",
    );
    process(&mut out);
    out
}

/// "3.4.0" → "3.4", as etcd labels its cluster version.
fn major_minor(v: &str) -> String {
    v.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// Clock ticks per second in `/proc` figures (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// Go's standard process collector, from `/proc/self`: what
/// `etcdctl check datascale` reads (`process_resident_memory_bytes`).
fn process(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may contain spaces) in ")".
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is f[N - 3].
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        gauge(
            out,
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
            (utime + stime) / USER_HZ,
        );
    }
    if let Some(vsize) = field(23) {
        gauge(
            out,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            "gauge",
            vsize,
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(kib) = rss_kib {
        gauge(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "gauge",
            kib * 1024,
        );
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        gauge(
            out,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            "gauge",
            boot + start / USER_HZ,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            out,
            "process_open_fds",
            "Number of open file descriptors.",
            "gauge",
            fds.count(),
        );
    }
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        })
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(max) = max_fds {
        gauge(
            out,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            "gauge",
            max,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let mut out = String::new();
        h.write(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.002\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.004\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"8.192\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
        assert!(out.contains("x_sum 20.0035\n"), "{out}");
    }
}
