//! Writes sent to a follower go to the leader on one long-lived forwarding
//! stream (not a peer call each), and each still gets its own reply: its
//! own revision, its own `prev_kv`, its own compare outcome. The leader
//! replicates to each follower on one stream too. After the leader goes,
//! the follower forwards to the new one on a new stream.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, KvClient, PutOptions, Txn, TxnOp, TxnResponse};

use crate::common::cluster::Cluster;
use crate::common::http_get;

/// The value of the unlabeled sample `name` in a `/metrics` body.
fn sample(body: &str, name: &str) -> u64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"))
}

/// (streams opened, forwarded on a stream, forwarded by a call of its own)
/// of one member.
fn forwarded(port: u16) -> (u64, u64, u64) {
    let (code, body) = http_get(port, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    (
        sample(&body, "raftcd_peer_forward_streams_opened_total"),
        sample(&body, "raftcd_peer_forwarded_on_stream_total"),
        sample(&body, "raftcd_peer_forwarded_by_call_total"),
    )
}

/// A txn: if `key`'s value is `expected`, put `new` there.
async fn compare_and_put(kv: &mut KvClient, key: &str, expected: &str, new: &str) -> TxnResponse {
    let txn = Txn::new()
        .when([Compare::value(key, CompareOp::Equal, expected)])
        .and_then([TxnOp::put(key, new, None)]);
    kv.txn(txn).await.expect("txn")
}

/// 64 writers through `endpoint`: each puts its key twice (the second put
/// must return the first value as `prev_kv`) and runs one txn whose compare
/// holds and one whose compare fails. Returns every revision acknowledged.
async fn writers(endpoint: String, tag: &str) -> Vec<i64> {
    let mut pool = Vec::new();
    for _ in 0..8 {
        pool.push(
            etcd_client::Client::connect([endpoint.clone()], None)
                .await
                .expect("connect to the follower"),
        );
    }
    let mut tasks = Vec::new();
    for i in 0..64 {
        let mut kv = pool[i % pool.len()].kv_client();
        let key = format!("fwd/{tag}/{i:02}");
        tasks.push(tokio::spawn(async move {
            let first = kv.put(key.as_str(), format!("a{i}"), None).await;
            let first = first
                .expect("first put")
                .header()
                .expect("header")
                .revision();
            let second = kv
                .put(
                    key.as_str(),
                    format!("b{i}"),
                    Some(PutOptions::new().with_prev_key()),
                )
                .await
                .expect("second put");
            let prev = second.prev_key().expect("prev_kv of the second put");
            assert_eq!(prev.value_str().unwrap(), format!("a{i}"), "{key}");
            let holds = compare_and_put(&mut kv, &key, &format!("b{i}"), &format!("c{i}")).await;
            assert!(holds.succeeded(), "{key}: its own compare holds");
            let fails = compare_and_put(&mut kv, &key, &format!("b{i}"), "never").await;
            assert!(!fails.succeeded(), "{key}: its compare no longer holds");
            let got = kv.get(key.as_str(), None).await.expect("get");
            assert_eq!(got.kvs()[0].value_str().unwrap(), format!("c{i}"), "{key}");
            [
                first,
                second.header().expect("header").revision(),
                holds.header().expect("header").revision(),
            ]
        }));
    }
    let mut revisions = Vec::new();
    for t in tasks {
        revisions.extend(t.await.expect("writer"));
    }
    revisions
}

#[test]
fn writes_through_a_follower_share_one_stream_and_keep_their_own_replies() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    let port = c.members[follower].client_port;
    let before = forwarded(port);
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    let revisions = rt.block_on(writers(c.members[follower].endpoint(), "one"));
    let unique: BTreeSet<i64> = revisions.iter().copied().collect();
    assert_eq!(
        unique.len(),
        revisions.len(),
        "every write its own revision"
    );
    let after = forwarded(port);
    // 64 writers x 4 writes, all forwarded on the one stream this member
    // opened (before them: its own announcement at start used it).
    assert_eq!(after.0, 1, "one stream opened: {before:?} -> {after:?}");
    assert!(after.1 - before.1 >= 256, "{before:?} -> {after:?}");
    assert_eq!(after.2, before.2, "no write forwarded by a call of its own");
    let (_, leader_sent, _) = forwarded(c.members[leader].client_port);
    assert_eq!(leader_sent, 0, "the leader forwards nothing");
    // The leader replicates to each follower on one stream.
    let (code, body) = http_get(c.members[leader].client_port, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert_eq!(
        sample(&body, "raftcd_peer_append_streams_opened_total"),
        2,
        "{body}"
    );
    assert!(
        sample(&body, "raftcd_peer_appends_on_stream_total") > 0,
        "{body}"
    );

    // The leader goes: the follower's stream to it ends, and its writes go
    // to the new leader on a new stream.
    c.members[leader].kill();
    let new_leader = c.wait_leader(Duration::from_secs(20));
    assert_ne!(new_leader, leader);
    let through = if new_leader == follower {
        3 - leader - follower
    } else {
        follower
    };
    let port = c.members[through].client_port;
    let before = forwarded(port);
    let revisions = rt.block_on(writers(c.members[through].endpoint(), "two"));
    assert_eq!(
        revisions.iter().collect::<BTreeSet<_>>().len(),
        revisions.len()
    );
    let after = forwarded(port);
    assert!(
        after.0 - before.0 <= 1,
        "one new stream at most: {before:?} -> {after:?}"
    );
    assert!(after.0 >= 1, "{after:?}");
    assert_eq!(after.2, before.2, "no write forwarded by a call of its own");
    assert!(after.1 - before.1 >= 256, "{before:?} -> {after:?}");
}
