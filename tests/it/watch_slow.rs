//! A stalled watch client (creates a watch, never reads) while ~20,000
//! writes of 1 KiB land, over real gRPC against the real raftcd binary: the
//! server keeps serving others, its memory stays bounded, and the stalled
//! watcher later catches up from history, or is canceled with the
//! compaction revision if that history was compacted.

use std::time::Instant;

use etcd_client::{DeleteOptions, WatchOptions};

use crate::common::Server;
use crate::watch_util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_watcher_does_not_block_or_bloat_the_server() {
    let started = Instant::now();
    let server = Server::start();
    let pid = server.child.as_ref().expect("child").id();
    let writer = connect(&server).await;

    // Two stalled clients, each on its own connection: they create a watch
    // on everything and do not read. One is resumed after the writes, the
    // other after a compaction.
    let mut resumed_conn = connect(&server).await;
    let mut resumed = resumed_conn
        .watch("k/", Some(WatchOptions::new().with_prefix()))
        .await
        .expect("watch");
    let mut compacted_conn = connect(&server).await;
    let mut compacted = compacted_conn
        .watch("k/", Some(WatchOptions::new().with_prefix()))
        .await
        .expect("watch");
    // A healthy watcher on another connection keeps being served.
    let mut healthy_conn = connect(&server).await;
    let mut healthy = healthy_conn
        .watch("k/", Some(WatchOptions::new().with_prefix()))
        .await
        .expect("watch");
    assert!(next(&mut healthy).await.created());
    let (done_tx, done_rx) = tokio::sync::watch::channel(0i64);
    let healthy_task = collect(healthy, done_rx);

    // WATCH_SLOW_WRITES=100000 for the long measurement in docs/benchmarks.md.
    let writes: u64 = std::env::var("WATCH_SLOW_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rss_before = rss_kib(pid);
    let all = write_load(&writer, 16, writes, 1024).await;
    let rss_after = rss_kib(pid);
    let last = all.last().map_or(0, |(rev, _, _)| *rev);
    let growth_mib = rss_after.saturating_sub(rss_before) / 1024;
    eprintln!(
        "{writes} writes of 1 KiB with 2 stalled watchers: {:?}; VmRSS {} MiB -> {} MiB (+{} MiB)",
        started.elapsed(),
        rss_before / 1024,
        rss_after / 1024,
        growth_mib
    );
    assert!(growth_mib < 500, "server memory grew by {growth_mib} MiB");

    // The healthy watcher got every event, in order, while the others stalled.
    done_tx.send(last).expect("signal");
    let want = expected_for(&all, "k/");
    assert!(want.len() as u64 > writes * 95 / 100);
    assert_same(
        "healthy",
        &healthy_task.await.expect("healthy watcher"),
        &want,
    );

    // The first stalled client resumes: it catches up from history and gets
    // everything, without a gap or a duplicate.
    assert!(next(&mut resumed).await.created());
    let mut got = Vec::new();
    read_through(&mut resumed, last, &mut got).await;
    assert_same("resumed", &got, &want);

    // Compact away the history the second one still needs, then resume it:
    // what it had queued, then a cancel carrying the compaction revision,
    // as etcd does for a watcher that fell behind a compaction.
    let compact_at = last - 10;
    writer
        .clone()
        .compact(compact_at, None)
        .await
        .expect("compact");
    assert!(next(&mut compacted).await.created());
    let mut got = Vec::new();
    let cancel = loop {
        let resp = next(&mut compacted).await;
        if resp.canceled() {
            break resp;
        }
        got.extend(to_evs(&resp));
        assert!(got.len() < want.len(), "the stalled watcher was not behind");
    };
    assert_same("compacted", &got, &want[..got.len()]);
    assert_eq!(cancel.compact_revision(), compact_at);
    let next_rev = got.last().map_or(1, |e| e.0 + 1);
    assert!(
        next_rev < compact_at,
        "canceled at {next_rev} though {compact_at} is kept"
    );
    eprintln!(
        "resumed: one caught up {} events; the other got {} then a cancel at compact revision {}; total {:?}",
        want.len(),
        got.len(),
        compact_at,
        started.elapsed()
    );

    // Still serving.
    let mut c = connect(&server).await;
    c.put("after", "ok", None).await.expect("put after");
    let r = c
        .delete("k/", Some(DeleteOptions::new().with_prefix()))
        .await
        .expect("delete");
    assert!(r.deleted() > 0);
    drop((resumed_conn, compacted_conn, healthy_conn));
}
