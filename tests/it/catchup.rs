//! A member down while 100,000 writes (with compactions) land on the rest
//! of a 3-member cluster rejoins by snapshot, converges to the same
//! `hashkv`, and the data dirs stay bounded (the log is purged behind
//! snapshots). It loads the machine for about two minutes and must not
//! slow the timing-sensitive failover tests: it takes the machine alone
//! (`common::machine_alone`), so no other test runs a server meanwhile.
//! `CATCHUP_WRITES=20000` for a quicker run.

use std::time::Duration;

use crate::common::cluster::{compact_now, converged, Cluster};

/// Bytes under `dir`, recursively.
fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match entry.metadata() {
            Ok(m) if m.is_dir() => total += dir_size(&entry.path()),
            Ok(m) => total += m.len(),
            Err(_) => {}
        }
    }
    total
}

#[test]
fn member_down_for_100k_writes_rejoins_by_snapshot_with_a_bounded_log() {
    let _alone = crate::common::machine_alone();
    let writes: usize = std::env::var("CATCHUP_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut c = Cluster::start(3, &["--snapshot-count", "200"]);
    let leader = c.wait_leader(Duration::from_secs(10));
    let lagging = (leader + 1) % 3;
    c.members[lagging].kill();
    let up: Vec<usize> = (0..3).filter(|i| *i != lagging).collect();
    let endpoints: Vec<String> = up.iter().map(|i| c.members[*i].endpoint()).collect();
    let started = std::time::Instant::now();
    let mut sizes = Vec::new();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = etcd_client::Client::connect(endpoints, None)
            .await
            .expect("connect");
        let writers = 32;
        let rounds = 4;
        let per_round = writes / rounds / writers;
        for round in 0..rounds {
            let mut tasks = Vec::new();
            for t in 0..writers {
                let mut kv = client.kv_client();
                tasks.push(tokio::spawn(async move {
                    for i in 0..per_round {
                        // 1,000 keys, rewritten over and over.
                        let key = format!("hot/{:03}", (t * per_round + i) % 1000);
                        kv.put(key, format!("r{round}-{i}"), None)
                            .await
                            .expect("put");
                    }
                }));
            }
            for t in tasks {
                t.await.expect("writer");
            }
            // Compact behind every round, as an operator (or etcd's
            // auto-compaction) would.
            compact_now(&client).await;
            sizes.push(
                up.iter()
                    .map(|i| dir_size(&c.members[*i].dir))
                    .max()
                    .unwrap_or(0),
            );
        }
    });
    let written = started.elapsed();
    let total = (writes / 4 / 32) * 4 * 32;

    c.members[lagging].spawn();
    c.members[lagging].wait_ready(Duration::from_secs(60));
    let (rev, _) = converged(&c, &[0, 1, 2]);
    assert_eq!(rev, 1 + total as i64);
    assert!(
        c.members[lagging]
            .log()
            .contains("installed a snapshot from the leader"),
        "no snapshot installed"
    );
    let mib = |b: u64| b / (1024 * 1024);
    eprintln!(
        "{total} writes in {written:?}; largest data dir of the members that stayed up after each quarter: {:?} MiB; rejoined member: {} MiB",
        sizes.iter().map(|s| mib(*s)).collect::<Vec<_>>(),
        mib(dir_size(&c.members[lagging].dir))
    );
    // Bounded: the log is purged behind snapshots and the history compacted,
    // so the last quarter must not have grown the data dir without bound.
    let (first, last) = (sizes[0], sizes[sizes.len() - 1]);
    assert!(
        last < first * 2 + 64 * 1024 * 1024,
        "data dir kept growing: {:?} MiB",
        sizes.iter().map(|s| mib(*s)).collect::<Vec<_>>()
    );
}
