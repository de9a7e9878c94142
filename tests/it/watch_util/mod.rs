//! Helpers shared by the watch load tests (`watch_many`, `watch_slow`):
//! a write load that records the events of every acknowledged write, and
//! readers of watch streams.

use std::time::Duration;

use etcd_client::{Client, EventType, Txn, TxnOp, WatchStream};

use crate::common::Server;

/// One expected event: (revision, put?, key, value).
pub type Ev = (i64, bool, String, String);

/// A tiny deterministic generator (no rand dependency needed).
pub struct Lcg(u64);

impl Lcg {
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

pub fn key(a: u64, b: u64, n: u64) -> String {
    format!("k/{a}/{b}/{n}")
}

pub async fn connect(server: &Server) -> Client {
    Client::connect([server.endpoint()], None)
        .await
        .expect("connect")
}

/// Run `writers` tasks doing `total` writes (puts, deletes, 3-put txns) on
/// keys `k/A/B/N` with values of `value_len` bytes; the events of every
/// acknowledged write, in revision order.
pub async fn write_load(
    client: &Client,
    writers: u64,
    total: u64,
    value_len: usize,
) -> Vec<(i64, usize, Ev)> {
    let mut tasks = Vec::new();
    for t in 0..writers {
        let mut c = client.clone();
        let per = total / writers + u64::from(t < total % writers);
        tasks.push(tokio::spawn(async move {
            let mut rng = Lcg(t * 7919 + 17);
            let mut evs: Vec<(i64, usize, Ev)> = Vec::new();
            let pad = "x".repeat(value_len.saturating_sub(12));
            for i in 0..per {
                let val = format!("{t}-{i}-{pad}");
                let op = rng.next(10);
                let (a, b, n) = (rng.next(10), rng.next(10), rng.next(5));
                let k = key(a, b, n);
                if op == 0 {
                    let r = c.delete(k.clone(), None).await.expect("delete");
                    if r.deleted() == 1 {
                        let rev = r.header().expect("header").revision();
                        evs.push((rev, 0, (rev, false, k, String::new())));
                    }
                } else if op == 1 {
                    // Three keys differing in N: distinct, one revision.
                    let keys: Vec<String> = (0..3).map(|j| key(a, b, (n + j) % 5)).collect();
                    let ops: Vec<TxnOp> = keys
                        .iter()
                        .enumerate()
                        .map(|(j, k)| TxnOp::put(k.clone(), format!("{val}-{j}"), None))
                        .collect();
                    let r = c.txn(Txn::new().and_then(ops)).await.expect("txn");
                    let rev = r.header().expect("header").revision();
                    for (j, k) in keys.into_iter().enumerate() {
                        evs.push((rev, j, (rev, true, k, format!("{val}-{j}"))));
                    }
                } else {
                    let r = c.put(k.clone(), val.clone(), None).await.expect("put");
                    let rev = r.header().expect("header").revision();
                    evs.push((rev, 0, (rev, true, k, val)));
                }
            }
            evs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    all.sort_by_key(|(rev, seq, _)| (*rev, *seq));
    all
}

pub fn expected_for(all: &[(i64, usize, Ev)], prefix: &str) -> Vec<Ev> {
    all.iter()
        .filter(|(_, _, e)| e.2.starts_with(prefix))
        .map(|(_, _, e)| e.clone())
        .collect()
}

pub fn to_evs(resp: &etcd_client::WatchResponse) -> Vec<Ev> {
    resp.events()
        .iter()
        .map(|e| {
            let kv = e.kv().expect("kv");
            (
                kv.mod_revision(),
                e.event_type() == EventType::Put,
                kv.key_str().expect("utf8").to_string(),
                kv.value_str().expect("utf8").to_string(),
            )
        })
        .collect()
}

pub async fn next(ws: &mut WatchStream) -> etcd_client::WatchResponse {
    tokio::time::timeout(Duration::from_secs(30), ws.message())
        .await
        .expect("watch response in time")
        .expect("watch stream error")
        .expect("watch stream ended")
}

/// Read events until a progress response shows everything up to `rev` was
/// delivered.
pub async fn read_through(ws: &mut WatchStream, rev: i64, got: &mut Vec<Ev>) {
    loop {
        ws.request_progress().await.expect("progress request");
        loop {
            let resp = next(ws).await;
            if resp.watch_id() == -1 {
                let at = resp.header().expect("header").revision();
                if at >= rev {
                    return;
                }
                break;
            }
            assert!(!resp.canceled(), "watcher canceled: {resp:?}");
            got.extend(to_evs(&resp));
        }
    }
}

pub fn assert_same(prefix: &str, got: &[Ev], want: &[Ev]) {
    if got != want {
        let first_diff = got.iter().zip(want.iter()).position(|(g, w)| g != w);
        panic!(
            "watcher {prefix:?}: got {} events, want {}; first difference at {:?}: got {:?} want {:?}",
            got.len(),
            want.len(),
            first_diff,
            first_diff.and_then(|i| got.get(i)),
            first_diff.and_then(|i| want.get(i)),
        );
    }
}

/// Collect a watch stream's events until `done` carries the last revision
/// written, then read through it.
pub fn collect(
    mut ws: WatchStream,
    mut done: tokio::sync::watch::Receiver<i64>,
) -> tokio::task::JoinHandle<Vec<Ev>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            tokio::select! {
                m = ws.message() => {
                    let resp = m.expect("watch stream error").expect("watch stream ended");
                    assert!(!resp.canceled(), "watcher canceled: {resp:?}");
                    got.extend(to_evs(&resp));
                }
                _ = done.changed() => break,
            }
        }
        let last = *done.borrow();
        read_through(&mut ws, last, &mut got).await;
        got
    })
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}
