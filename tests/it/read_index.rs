//! Linearizable reads share read-index rounds (etcd's linearizable read
//! loop): on a follower, many concurrent reads cost fewer round trips to the
//! leader than there are reads, and every read still sees every write that
//! was acknowledged before it began.

use std::time::Duration;

use crate::common::cluster::Cluster;
use crate::common::http_get;

/// The value of the unlabeled sample `name` in a `/metrics` body.
fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"))
}

/// (rounds, reads) of one member's read-index counters.
fn counters(port: u16) -> (f64, f64) {
    let (code, body) = http_get(port, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    (
        sample(&body, "raftcd_server_read_index_rounds_total"),
        sample(&body, "raftcd_server_read_index_reads_total"),
    )
}

#[test]
fn concurrent_follower_reads_share_rounds_and_see_acknowledged_writes() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    let (follower_port, leader_port) = (
        c.members[follower].client_port,
        c.members[leader].client_port,
    );
    let (rounds0, reads0) = counters(follower_port);
    let (leader_rounds0, _) = counters(leader_port);

    const READERS: usize = 64;
    const ROUNDS_EACH: usize = 10;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let writer = etcd_client::Client::connect([c.members[leader].endpoint()], None)
            .await
            .expect("connect to the leader");
        // A few connections, many streams each (as a client pool would).
        let mut pool = Vec::new();
        for _ in 0..8 {
            pool.push(
                etcd_client::Client::connect([c.members[follower].endpoint()], None)
                    .await
                    .expect("connect to the follower"),
            );
        }
        for round in 0..ROUNDS_EACH {
            // Acknowledged by the leader before any read of this round starts ...
            writer
                .kv_client()
                .put("counter", round.to_string(), None)
                .await
                .expect("put");
            // ... so every one of these concurrent follower reads must see it.
            let mut tasks = Vec::new();
            for t in 0..READERS {
                let client = pool[t % pool.len()].clone();
                tasks.push(tokio::spawn(async move {
                    let got = client
                        .kv_client()
                        .get("counter", None)
                        .await
                        .expect("linearizable get on the follower");
                    let value = got.kvs().first().map(|kv| kv.value().to_vec());
                    (t, value)
                }));
            }
            for task in tasks {
                let (t, value) = task.await.expect("reader");
                assert_eq!(
                    value.as_deref(),
                    Some(round.to_string().as_bytes()),
                    "reader {t} of round {round} missed the acknowledged write"
                );
            }
        }
    });

    let (rounds1, reads1) = counters(follower_port);
    let (rounds, reads) = (rounds1 - rounds0, reads1 - reads0);
    let total = (READERS * ROUNDS_EACH) as f64;
    assert!(
        reads >= total,
        "the follower's rounds served {reads} reads, fewer than the {total} made"
    );
    assert!(
        rounds < reads,
        "{reads} concurrent reads took {rounds} read-index rounds: none were shared"
    );
    // Each follower round is one request to the leader, which serves it in
    // a round of its own (shared with other requests that arrive meanwhile).
    let (leader_rounds1, _) = counters(leader_port);
    assert!(
        leader_rounds1 - leader_rounds0 <= rounds + 2.0 * ROUNDS_EACH as f64,
        "the leader ran {} rounds for the follower's {rounds}",
        leader_rounds1 - leader_rounds0
    );
    eprintln!("{reads} follower reads in {rounds} read-index rounds");
}
