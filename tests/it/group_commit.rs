//! Group commit: concurrent writes share Raft entries (and so disk
//! flushes), yet each gets its own revision and its own reply.

use std::collections::BTreeSet;

use etcd_client::Client;

use crate::common::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_are_batched_but_keep_their_own_revisions() {
    let server = Server::start();
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(
            Client::connect([server.endpoint()], None)
                .await
                .expect("connect"),
        );
    }
    let status_before = clients[0].status().await.expect("status");
    let index_before = status_before.raft_index();

    let writes = 512;
    let mut tasks = Vec::new();
    for i in 0..writes {
        let mut c = clients[i % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("gc/{i:04}");
            let resp = c
                .put(key.as_str(), format!("v{i}"), None)
                .await
                .expect("put");
            (key, resp.header().expect("header").revision())
        }));
    }
    let mut revisions = BTreeSet::new();
    let mut acked = Vec::new();
    for t in tasks {
        let (key, rev) = t.await.expect("task");
        assert!(revisions.insert(rev), "revision {rev} given twice");
        acked.push((key, rev));
    }
    let expected: BTreeSet<i64> = (2..2 + writes as i64).collect();
    assert_eq!(revisions, expected, "one revision per put, none skipped");
    for (key, rev) in &acked {
        let resp = clients[0].get(key.as_str(), None).await.expect("get");
        let kv = &resp.kvs()[0];
        assert_eq!(kv.mod_revision(), *rev, "{key}");
    }
    let index_after = clients[0].status().await.expect("status").raft_index();
    assert!(
        index_after - index_before < writes as u64,
        "{writes} concurrent puts took {} Raft entries: no batching",
        index_after - index_before
    );
}

/// Writers cancelled at every stage (waiting in the queue, proposing a
/// batch, waiting for a batch another caller proposed) neither stall the
/// writers after them nor lose an acknowledged write: the caller-driven
/// proposer hands its slots on whatever happens to a caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_writers_neither_stall_the_others_nor_lose_their_writes() {
    use std::time::Duration;
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = raftcd::Node::start(raftcd::Config::embedded(tmp.path().join("data")))
        .await
        .expect("start");
    let c = node.client();
    let mut cancelled = 0;
    for round in 0..40u64 {
        let mut tasks = Vec::new();
        for i in 0..32u64 {
            let c = c.clone();
            // Deadlines from 0 to ~1.5 ms: some expire before the put is
            // queued, some while it waits, some while it proposes.
            let deadline = Duration::from_micros((i * 53 + round * 17) % 1500);
            tasks.push(tokio::spawn(async move {
                let key = format!("cancel/{round}/{i}");
                let put = c.put(key.clone(), "v");
                (key, tokio::time::timeout(deadline, put).await)
            }));
        }
        let mut acked = Vec::new();
        for t in tasks {
            match t.await.expect("task") {
                (key, Ok(r)) => {
                    r.expect("put");
                    acked.push(key);
                }
                (_, Err(_)) => cancelled += 1,
            }
        }
        // A write after the round goes through at once: no slot was lost.
        tokio::time::timeout(Duration::from_secs(5), c.put(format!("after/{round}"), "v"))
            .await
            .expect("a write after cancelled writers stalled")
            .expect("put");
        for key in acked {
            assert!(
                c.get(key.clone()).await.expect("get").is_some(),
                "{key} acknowledged but not stored"
            );
        }
    }
    assert!(
        cancelled > 0,
        "no writer was cancelled: the test tests nothing"
    );
    node.shutdown().await.expect("shutdown");
}
