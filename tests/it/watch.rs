//! `etcdctl watch` against the real raftcd binary: what etcdctl 3.4 prints
//! must be what it prints against etcd 3.4.23 (see the reference transcript;
//! `RAFTCD_TEST_ORACLE=etcd` runs the same assertions against real etcd).
//! `etcdctl watch` runs as a child process whose stdout is read line by line;
//! every wait has a timeout and the child is killed at the end.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::target::Target;
use crate::{common, target};

/// A running `etcdctl watch`.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Watch {
    fn spawn(server: &Target, args: &[&str]) -> Watch {
        Watch::spawn_at(&server.endpoint(), args)
    }

    fn spawn_at(endpoint: &str, args: &[&str]) -> Watch {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl not found: install Debian's etcd-client");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut err = child.stderr.take().expect("stderr");
        let (etx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            let _ = etx.send(s);
        });
        Watch {
            child,
            lines,
            stderr,
        }
    }

    fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Exactly `n` more lines, or panic after a timeout.
    fn read(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => got.push(l),
                Err(_) => panic!("expected {n} lines from etcdctl watch, got {got:?}"),
            }
        }
        got
    }

    /// Assert nothing more is printed for a while.
    fn assert_quiet(&self) {
        if let Some(l) = self.next_line(Duration::from_millis(400)) {
            panic!("unexpected extra output from etcdctl watch: {l:?}");
        }
    }

    /// Drop whatever arrives within `d`.
    fn drain(&self, d: Duration) {
        let deadline = Instant::now() + d;
        while self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
        {}
    }

    /// Wait for the process to exit on its own: (stdout lines, stderr, code).
    fn wait_exit(mut self) -> (Vec<String>, String, i32) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let code = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "etcdctl watch did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            out.push(l);
        }
        let err = self
            .stderr
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        (out, err, code)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ok(server: &Target, args: &[&str]) -> String {
    let out = common::etcdctl(&server.endpoint(), args, None);
    assert_eq!(out.code, 0, "etcdctl {args:?}: {out:?}");
    out.stdout
}

/// The current revision and the ids a response header carries.
fn header(server: &Target) -> serde_json::Value {
    let out = ok(server, &["get", "no-such-key", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    v["header"].clone()
}

fn revision(server: &Target) -> i64 {
    header(server)["revision"].as_i64().expect("revision")
}

/// A watch without `--rev` only sees writes after its stream is set up,
/// which etcdctl does not announce: put `key` until an event shows up,
/// then drop those warm-up events.
fn warm_up(server: &Target, w: &Watch, key: &str) {
    for i in 0..40 {
        ok(server, &["put", key, &format!("ready{i}")]);
        if w.next_line(Duration::from_millis(500)).is_some() {
            w.drain(Duration::from_millis(300));
            return;
        }
    }
    panic!("etcdctl watch never started");
}

fn lines(s: &[&str]) -> Vec<String> {
    s.iter().map(|l| l.to_string()).collect()
}

#[test]
fn watch_key_prints_events_like_etcd() {
    let server = Target::start(&[]);
    let w = Watch::spawn(&server, &["foo"]);
    warm_up(&server, &w, "foo");
    ok(&server, &["put", "foo", "w1"]);
    ok(&server, &["put", "foo2", "other key"]);
    ok(&server, &["put", "foo", "w2"]);
    ok(&server, &["del", "foo"]);
    // The transcript's output (etcd 3.4.23).
    assert_eq!(
        w.read(9),
        lines(&["PUT", "foo", "w1", "PUT", "foo", "w2", "DELETE", "foo", ""])
    );
    w.assert_quiet();
}

#[test]
fn watch_prefix_and_range() {
    let server = Target::start(&[]);
    let w = Watch::spawn(&server, &["foo", "--prefix"]);
    warm_up(&server, &w, "foo");
    ok(&server, &["put", "foo", "w1"]);
    ok(&server, &["put", "fo", "not in prefix"]);
    ok(&server, &["put", "food", "w2"]);
    ok(&server, &["put", "fop", "not in prefix"]);
    ok(&server, &["del", "foo", "--prefix"]);
    let got = w.read(12);
    assert_eq!(
        got,
        lines(&[
            "PUT", "foo", "w1", "PUT", "food", "w2", "DELETE", "foo", "", "DELETE", "food", ""
        ])
    );
    w.assert_quiet();
    drop(w);

    // `watch KEY RANGE_END`: [a, c).
    let w = Watch::spawn(&server, &["a", "c"]);
    warm_up(&server, &w, "a");
    ok(&server, &["put", "b", "1"]);
    ok(&server, &["put", "c", "out"]);
    ok(&server, &["put", "bz", "2"]);
    assert_eq!(w.read(6), lines(&["PUT", "b", "1", "PUT", "bz", "2"]));
    w.assert_quiet();
}

#[test]
fn watch_rev_replays_history_then_goes_live() {
    let server = Target::start(&[]);
    // The transcript's writes before its `watch foo --rev=1`.
    ok(&server, &["put", "foo", "bar"]);
    ok(&server, &["put", "foo", "bar2", "--prev-kv"]);
    ok(&server, &["put", "foo2", "baz"]);
    let out = common::etcdctl(
        &server.endpoint(),
        &["txn"],
        Some("version(\"foo\") > \"0\"\n\ndel foo\n\n\n"),
    );
    assert_eq!(out.code, 0, "{out:?}");
    ok(&server, &["put", "foo", "bar"]);
    let w = Watch::spawn(&server, &["foo", "--rev=1"]);
    assert_eq!(
        w.read(12),
        lines(&[
            "PUT", "foo", "bar", "PUT", "foo", "bar2", "DELETE", "foo", "", "PUT", "foo", "bar"
        ])
    );
    w.assert_quiet();
    // Then live, without a gap or a duplicate.
    ok(&server, &["put", "foo", "live"]);
    assert_eq!(w.read(3), lines(&["PUT", "foo", "live"]));
    w.assert_quiet();
    drop(w);

    // History in JSON: etcd sends the replayed revisions in one response
    // whose header carries the current revision.
    let rev = revision(&server);
    let h = header(&server);
    let w = Watch::spawn(&server, &["foo", "--rev=5", "-w", "json"]);
    let line = w.read(1).remove(0);
    let expect = format!(
        concat!(
            r#"{{"Header":{{"cluster_id":{},"member_id":{},"revision":{},"raft_term":{}}},"#,
            r#""Events":[{{"type":1,"kv":{{"key":"Zm9v","mod_revision":5}}}},"#,
            r#"{{"kv":{{"key":"Zm9v","create_revision":6,"mod_revision":6,"version":1,"value":"YmFy"}}}},"#,
            r#"{{"kv":{{"key":"Zm9v","create_revision":6,"mod_revision":7,"version":2,"value":"bGl2ZQ=="}}}}],"#,
            r#""CompactRevision":0,"Canceled":false,"Created":false}}"#
        ),
        h["cluster_id"], h["member_id"], rev, h["raft_term"]
    );
    assert_eq!(line, expect);
    w.assert_quiet();
}

#[test]
fn watch_prev_kv() {
    let server = Target::start(&[]);
    ok(&server, &["put", "k", "v1"]);
    let next = (revision(&server) + 1).to_string();
    let w = Watch::spawn(&server, &["k", "--prev-kv", &format!("--rev={next}")]);
    ok(&server, &["put", "k", "v2"]);
    ok(&server, &["del", "k"]);
    ok(&server, &["put", "k", "v3"]);
    // etcdctl prints the previous key-value before the event's own.
    assert_eq!(
        w.read(13),
        lines(&["PUT", "k", "v1", "k", "v2", "DELETE", "k", "v2", "k", "", "PUT", "k", "v3"])
    );
    w.assert_quiet();
    drop(w);

    // prev_kv in history replay too, live afterwards.
    let w = Watch::spawn(&server, &["k", "--prev-kv", "--rev=1"]);
    assert_eq!(
        w.read(16),
        lines(&[
            "PUT", "k", "v1", "PUT", "k", "v1", "k", "v2", "DELETE", "k", "v2", "k", "", "PUT",
            "k", "v3"
        ])
    );
    ok(&server, &["put", "k", "v4"]);
    assert_eq!(w.read(5), lines(&["PUT", "k", "v3", "k", "v4"]));
    w.assert_quiet();
}

#[test]
fn watch_compacted_revision_is_canceled() {
    let server = Target::start(&[]);
    ok(&server, &["put", "foo", "a"]);
    ok(&server, &["put", "foo", "b"]);
    ok(&server, &["del", "foo"]);
    ok(&server, &["put", "foo", "c"]);
    assert_eq!(ok(&server, &["compact", "3"]), "compacted revision 3\n");

    let (out, err, code) = Watch::spawn(&server, &["foo", "--rev=2"]).wait_exit();
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(
        err,
        "watch was canceled (etcdserver: mvcc: required revision has been compacted)\n\
         Error: watch is canceled by the server\n"
    );
    assert_eq!(code, 5);

    let h = header(&server);
    let (out, err, code) = Watch::spawn(&server, &["foo", "--rev=2", "-w", "json"]).wait_exit();
    assert_eq!(
        out,
        vec![format!(
            r#"{{"Header":{{"cluster_id":{},"member_id":{},"raft_term":{}}},"Events":[],"CompactRevision":3,"Canceled":true,"Created":false}}"#,
            h["cluster_id"], h["member_id"], h["raft_term"]
        )]
    );
    assert!(
        err.contains("required revision has been compacted"),
        "{err}"
    );
    assert_eq!(code, 5);

    // The compaction revision itself is still watchable (as in etcd).
    let w = Watch::spawn(&server, &["foo", "--rev=3"]);
    assert_eq!(
        w.read(9),
        lines(&["PUT", "foo", "b", "DELETE", "foo", "", "PUT", "foo", "c"])
    );
    w.assert_quiet();
}

#[test]
fn watch_json_like_etcd() {
    let server = Target::start(&[]);
    let w = Watch::spawn(&server, &["foo", "-w", "json"]);
    warm_up(&server, &w, "foo");
    ok(&server, &["del", "foo"]);
    w.drain(Duration::from_millis(300));
    ok(&server, &["put", "foo", "wj"]);
    let rev = revision(&server);
    let h = header(&server);
    // The transcript's line, with this server's ids and revision.
    let expect = format!(
        concat!(
            r#"{{"Header":{{"cluster_id":{},"member_id":{},"revision":{},"raft_term":{}}},"#,
            r#""Events":[{{"kv":{{"key":"Zm9v","create_revision":{},"mod_revision":{},"version":1,"value":"d2o="}}}}],"#,
            r#""CompactRevision":0,"Canceled":false,"Created":false}}"#
        ),
        h["cluster_id"], h["member_id"], rev, h["raft_term"], rev, rev
    );
    assert_eq!(w.read(1), vec![expect]);
    w.assert_quiet();
}

#[test]
fn watch_on_every_member_of_a_cluster() {
    if target::oracle_is_etcd() {
        // The cluster harness runs raftcd members only.
        return;
    }
    let mut c = common::cluster::Cluster::start(3, &[]);
    c.wait_leader(Duration::from_secs(20));
    let out = c.etcdctl(&["put", "seed", "0", "-w", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    let next = v["header"]["revision"].as_i64().expect("revision") + 1;
    let rev = format!("--rev={next}");
    let watches: Vec<Watch> = c
        .members
        .iter()
        .map(|m| Watch::spawn_at(&m.endpoint(), &["cw", "--prev-kv", &rev]))
        .collect();
    for (i, v) in ["a", "b"].iter().enumerate() {
        let out = c.members[i].etcdctl(&["put", "cw", v]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let out = c.members[2].etcdctl(&["del", "cw"]);
    assert_eq!(out.code, 0, "{out:?}");
    for w in &watches {
        // Every member delivers the same events, written on any member.
        assert_eq!(
            w.read(13),
            lines(&["PUT", "cw", "a", "PUT", "cw", "a", "cw", "b", "DELETE", "cw", "b", "cw", ""])
        );
        w.assert_quiet();
    }
}
