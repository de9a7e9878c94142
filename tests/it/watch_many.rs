//! Many watchers under heavy write load over real gRPC (the `etcd-client`
//! crate against the real raftcd binary): exact delivery per watcher, and
//! history replay from revision 1.

use std::time::Instant;

use etcd_client::WatchOptions;

use crate::common::Server;
use crate::watch_util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_watchers_see_exactly_their_events() {
    let started = Instant::now();
    let server = Server::start();
    let writer = connect(&server).await;

    // 100 overlapping prefixes: everything, 10 of `k/A/`, 89 of `k/A/B/`.
    let mut prefixes = vec!["k/".to_string()];
    prefixes.extend((0..10).map(|a| format!("k/{a}/")));
    prefixes.extend((0..89).map(|i| format!("k/{}/{}/", i / 10, i % 10)));
    assert_eq!(prefixes.len(), 100);

    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(connect(&server).await);
    }
    let (done_tx, done_rx) = tokio::sync::watch::channel(0i64);
    let mut watchers = Vec::new();
    for (i, prefix) in prefixes.iter().enumerate() {
        let mut c = conns[i % conns.len()].clone();
        let mut ws = c
            .watch(prefix.clone(), Some(WatchOptions::new().with_prefix()))
            .await
            .expect("watch");
        let created = next(&mut ws).await;
        assert!(created.created(), "{created:?}");
        watchers.push((prefix.clone(), collect(ws, done_rx.clone())));
    }

    let all = write_load(&writer, 16, 10_000, 16).await;
    let last = all.last().map_or(0, |(rev, _, _)| *rev);
    let write_time = started.elapsed();
    done_tx.send(last).expect("signal watchers");

    let mut checked = 0;
    for (prefix, w) in watchers {
        let got = w.await.expect("watcher task");
        assert_same(&prefix, &got, &expected_for(&all, &prefix));
        checked += got.len();
    }
    let puts = all.iter().filter(|(_, _, e)| e.1).count();
    assert!(puts > 9_000, "writes were acknowledged: {puts} put events");
    assert!(checked > 20_000, "watchers saw {checked} events in all");

    // A watcher from revision 1 reproduces the same sequences from history.
    let mut c = connect(&server).await;
    for prefix in ["k/3/", "k/"] {
        let mut ws = c
            .watch(
                prefix,
                Some(WatchOptions::new().with_prefix().with_start_revision(1)),
            )
            .await
            .expect("watch");
        assert!(next(&mut ws).await.created());
        let mut got = Vec::new();
        read_through(&mut ws, last, &mut got).await;
        assert_same(prefix, &got, &expected_for(&all, prefix));
    }
    eprintln!(
        "10,000 writes with 100 watchers: writes {:?}, total {:?}",
        write_time,
        started.elapsed()
    );
}
