//! The embedding API, in-process and without ports: `Node::start` with
//! `Config::embedded`, the `Client` handle's KV operations, a clean
//! `shutdown`, a restart on the same data dir finding every key at the same
//! revisions, and racing compare-and-swaps of which exactly one wins.

use std::sync::Arc;

use bytes::Bytes;
use raftcd::client::prefix_end;
use raftcd::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use raftcd::pb::etcdserverpb::request_op::Request as Op;
use raftcd::pb::etcdserverpb::response_op::Response as OpResp;
use raftcd::pb::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use raftcd::pb::mvccpb::KeyValue;
use raftcd::{Config, Node};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// (key, value, create_revision, mod_revision, version)
fn kv(k: &KeyValue) -> (String, String, i64, i64, i64) {
    (
        String::from_utf8_lossy(&k.key).into_owned(),
        String::from_utf8_lossy(&k.value).into_owned(),
        k.create_revision,
        k.mod_revision,
        k.version,
    )
}

fn put_op(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: b(k),
            value: b(v),
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_kv_survives_shutdown_and_restart() {
    let _machine = crate::common::machine_share();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("embedded.raftcd");
    let node = Node::start(Config::embedded(&dir)).await.expect("start");
    assert!(node.client_addrs().is_empty(), "embedded: no listener");
    let c = node.client();

    assert_eq!(c.put("app/a", "1").await.unwrap(), 2);
    assert_eq!(c.put("app/b", "2").await.unwrap(), 3);
    assert_eq!(c.put("other", "x").await.unwrap(), 4);
    assert_eq!(c.put("app/a", "11").await.unwrap(), 5);
    assert_eq!(
        kv(&c.get("app/a").await.unwrap().unwrap()),
        ("app/a".into(), "11".into(), 2, 5, 2)
    );
    assert!(c.get("missing").await.unwrap().is_none());
    let apps: Vec<_> = c.get_prefix("app/").await.unwrap().iter().map(kv).collect();
    assert_eq!(
        apps,
        vec![
            ("app/a".into(), "11".into(), 2, 5, 2),
            ("app/b".into(), "2".into(), 3, 3, 1)
        ]
    );
    assert_eq!(c.delete("other").await.unwrap(), 1); // revision 6
    assert_eq!(c.delete("other").await.unwrap(), 0);
    assert!(c.get("other").await.unwrap().is_none());

    // compare_and_swap on the mod revision; 0 means "absent".
    assert!(c.compare_and_swap("app/b", 3, "22").await.unwrap()); // 7
    assert!(!c.compare_and_swap("app/b", 3, "lost").await.unwrap());
    assert!(c.compare_and_swap("new", 0, "n").await.unwrap()); // 8
    assert!(!c.compare_and_swap("new", 0, "again").await.unwrap());
    assert!(!c.compare_and_swap("app/a", 0, "exists").await.unwrap());
    assert_eq!(
        kv(&c.get("app/b").await.unwrap().unwrap()),
        ("app/b".into(), "22".into(), 3, 7, 2)
    );

    // A txn: two writes, one revision; its read sees them.
    let t = c
        .txn(TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Value as i32,
                key: b("app/a"),
                range_end: Bytes::new(),
                target_union: Some(TargetUnion::Value(b("11"))),
            }],
            success: vec![
                put_op("app/c", "3"),
                put_op("app/d", "4"),
                RequestOp {
                    request: Some(Op::RequestRange(RangeRequest {
                        key: b("app/"),
                        range_end: prefix_end(b"app/"),
                        count_only: true,
                        ..Default::default()
                    })),
                },
            ],
            failure: vec![],
        })
        .await
        .unwrap();
    assert!(t.succeeded);
    assert_eq!(t.header.unwrap().revision, 9);
    let Some(OpResp::ResponseRange(r)) = &t.responses[2].response else {
        panic!("range response")
    };
    assert_eq!(r.count, 4);

    // Everything (the empty prefix), linearizable and serializable.
    let before: Vec<_> = c.get_prefix("").await.unwrap().iter().map(kv).collect();
    assert_eq!(before.len(), 5);
    let serializable = c
        .range(RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            serializable: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(serializable.header.unwrap().revision, 9);
    assert_eq!(serializable.kvs.iter().map(kv).collect::<Vec<_>>(), before);

    node.shutdown().await.expect("shutdown");
    drop(c);

    // Restart on the same dir: same keys, same revisions, same counter.
    let node = Node::start(Config::embedded(&dir)).await.expect("restart");
    let c = node.client();
    let after: Vec<_> = c.get_prefix("").await.unwrap().iter().map(kv).collect();
    assert_eq!(after, before);
    let r = c
        .range(RangeRequest {
            key: b("app/a"),
            revision: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        kv(&r.kvs[0]),
        ("app/a".into(), "1".into(), 2, 2, 1),
        "history kept"
    );
    assert_eq!(r.header.unwrap().revision, 9);
    assert_eq!(c.put("app/e", "5").await.unwrap(), 10);
    assert!(c.compare_and_swap("app/b", 7, "222").await.unwrap()); // 11
    node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_compare_and_swap_has_one_winner() {
    let _machine = crate::common::machine_share();
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(Config::embedded(tmp.path().join("race")))
        .await
        .expect("start");
    let c = node.client();
    let mut expected_rev = 1;
    for round in 0..20 {
        // Both racers read the same revision (0 the first time: absent key).
        let seen = c.get("lock").await.unwrap().map_or(0, |kv| kv.mod_revision);
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let racers: Vec<_> = ["left", "right"]
            .into_iter()
            .map(|who| {
                let (c, barrier) = (c.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let won = c
                        .compare_and_swap("lock", seen, format!("{round}-{who}"))
                        .await
                        .unwrap();
                    (who, won)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for r in racers {
            let (who, won) = r.await.unwrap();
            if won {
                winners.push(who);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        expected_rev += 1;
        let now = c.get("lock").await.unwrap().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&now.value),
            format!("{round}-{}", winners[0])
        );
        assert_eq!(now.mod_revision, expected_rev, "the loser wrote nothing");
        assert_eq!(now.version, round + 1);
    }
    node.shutdown().await.expect("shutdown");
}

/// The in-process client's Lock and Election: a second locker waits until
/// the first unlocks; a lease revoked releases its lock; a campaign is
/// visible as the leader, proclaims change its value, a resign ends it and
/// the next candidate wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_lock_and_election() {
    let _machine = crate::common::machine_share();
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(Config::embedded(tmp.path().join("conc")))
        .await
        .expect("start");
    let c = node.client();

    let first = c.lock("job", 0).await.expect("first lock");
    assert!(first.starts_with(b"job/"), "{first:?}");
    let waiting = {
        let c = c.clone();
        tokio::spawn(async move { c.lock("job", 0).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the second locker got a held lock");
    c.unlock(first.clone()).await.expect("unlock");
    let second = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("the second locker got the lock once released")
        .unwrap()
        .expect("second lock");
    assert_ne!(second, first);
    // A lock bound to a lease goes with it.
    c.unlock(second).await.expect("unlock");
    let lease = c.grant_lease(60).await.unwrap();
    let held = c.lock("job", lease).await.expect("lock on a lease");
    let waiting = {
        let c = c.clone();
        tokio::spawn(async move { c.lock("job", 0).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    c.revoke_lease(lease).await.unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("revoking the holder's lease released the lock")
        .unwrap()
        .expect("lock after revoke");
    assert_ne!(next, held);
    assert!(
        c.get(held).await.unwrap().is_none(),
        "the revoked key is gone"
    );

    assert!(c.leader("boss").await.unwrap().is_none());
    let alice = c.campaign("boss", "alice", 0).await.expect("campaign");
    let shown = c.leader("boss").await.unwrap().expect("a leader");
    assert_eq!(shown.value, Bytes::from("alice"));
    c.proclaim(&alice, "alice-2").await.expect("proclaim");
    assert_eq!(
        c.leader("boss").await.unwrap().map(|kv| kv.value),
        Some(Bytes::from("alice-2"))
    );
    let bob = {
        let c = c.clone();
        tokio::spawn(async move { c.campaign("boss", "bob", 0).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!bob.is_finished(), "bob was elected while alice leads");
    c.resign(&alice).await.expect("resign");
    let bob = tokio::time::timeout(std::time::Duration::from_secs(5), bob)
        .await
        .expect("bob elected once alice resigned")
        .unwrap()
        .expect("campaign");
    assert_eq!(
        c.leader("boss").await.unwrap().map(|kv| kv.value),
        Some(Bytes::from("bob"))
    );
    let err = c
        .proclaim(&alice, "stale")
        .await
        .expect_err("alice no longer leads");
    assert_eq!(err.to_string(), "election: not leader");
    c.resign(&bob).await.unwrap();
    assert!(c.leader("boss").await.unwrap().is_none());
    node.shutdown().await.expect("shutdown");
}
