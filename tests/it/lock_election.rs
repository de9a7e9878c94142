//! etcd's Lock and Election services through the Rust `etcd-client` crate,
//! against a fresh raftcd each: lock contention in create-revision order,
//! waits ended by a revoked lease or a client going away, campaigns,
//! proclaims, observers and resignations with two candidates, and etcd's
//! errors. Also: Defragment and MoveLeader answer without a header.
//!
//! Revisions are asserted exactly (a fresh store is at revision 1; lease
//! grants do not change it). `RAFTCD_TEST_ORACLE=etcd cargo test --test it
//! lock_election::` runs the same assertions against the real etcd 3.4.23:
//! every expected value here is what etcd answered, but for one deliberate
//! deviation: a Lock or Campaign whose own lease is revoked while it waits
//! ends at once with "mutex: session is expired" (etcd 3.5's error), where
//! etcd 3.4.23 waits on and then answers a key that no longer exists; the
//! two tests of it assert etcd's answer when run against etcd.

use std::time::Duration;

use etcd_client::{
    Client, GetOptions, LeaderKey, LockOptions, ObserveStream, ProclaimOptions, ResignOptions,
    ResponseHeader,
};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};
use tonic::Code;

use crate::common::grpc;
use crate::target::{oracle_is_etcd, Target};

fn rev(h: Option<&ResponseHeader>) -> i64 {
    h.expect("response header").revision()
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `name/LEASE`, the lease in hex: the key of a lock or a candidate.
fn key_of(name: &str, lease: i64) -> String {
    format!("{name}/{lease:x}")
}

async fn grant(c: &mut Client) -> i64 {
    c.lease_grant(30, None).await.unwrap().id()
}

/// (key, create revision) of every key under `prefix`, oldest first.
async fn keys_under(c: &mut Client, prefix: &str) -> Vec<(String, i64)> {
    let r = c
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let mut ks: Vec<(String, i64)> = r
        .kvs()
        .iter()
        .map(|kv| (s(kv.key()), kv.create_revision()))
        .collect();
    ks.sort_by_key(|k| k.1);
    ks
}

/// Wait until `prefix` holds `n` keys.
async fn until_keys(c: &mut Client, prefix: &str, n: usize) -> Vec<(String, i64)> {
    for _ in 0..400 {
        let ks = keys_under(c, prefix).await;
        if ks.len() == n {
            return ks;
        }
        sleep(Duration::from_millis(25)).await;
    }
    panic!("{prefix} never held {n} keys");
}

/// A Lock call running in the background.
fn lock_in_background(
    c: &Client,
    name: &str,
    lease: i64,
) -> JoinHandle<Result<etcd_client::LockResponse, etcd_client::Error>> {
    let mut c = c.clone();
    let name = name.to_string();
    tokio::spawn(async move {
        c.lock(name, Some(LockOptions::new().with_lease(lease)))
            .await
    })
}

/// The result of a background call, which must come within 10 s.
async fn finished<T>(h: JoinHandle<T>) -> T {
    timeout(Duration::from_secs(10), h)
        .await
        .expect("the call never returned")
        .unwrap()
}

/// A background call is still waiting after a while.
async fn still_waiting<T>(h: &JoinHandle<T>) {
    sleep(Duration::from_millis(400)).await;
    assert!(!h.is_finished(), "the call returned while it should wait");
}

/// The next response of an Observe stream: (header revision, key, value,
/// create revision).
async fn next_seen(obs: &mut ObserveStream) -> (i64, String, String, i64) {
    let r = timeout(Duration::from_secs(10), obs.message())
        .await
        .expect("no leader response")
        .unwrap()
        .expect("the observe stream ended");
    let kv = r.kv().unwrap();
    (
        rev(r.header()),
        s(kv.key()),
        s(kv.value()),
        kv.create_revision(),
    )
}

fn leader_key(name: &str, key: &str, rev: i64, lease: i64) -> LeaderKey {
    LeaderKey::new()
        .with_name(name)
        .with_key(key)
        .with_rev(rev)
        .with_lease(lease)
}

fn same_leader(l: &LeaderKey, name: &str, key: &str, rev: i64, lease: i64) {
    assert_eq!(
        (s(l.name()), s(l.key()), l.rev(), l.lease()),
        (name.to_string(), key.to_string(), rev, lease)
    );
}

#[tokio::test]
async fn lock_contention_in_create_order() {
    let (_t, mut c) = Target::with_client(&[]).await;
    let (l1, l2, l3) = (
        grant(&mut c).await,
        grant(&mut c).await,
        grant(&mut c).await,
    );

    let a = c
        .lock("lk", Some(LockOptions::new().with_lease(l1)))
        .await
        .unwrap();
    assert_eq!(s(a.key()), key_of("lk", l1));
    assert_eq!(
        rev(a.header()),
        2,
        "an uncontended lock: the put's revision"
    );
    // The same lease locking again gets its key back at once.
    let again = c
        .lock("lk", Some(LockOptions::new().with_lease(l1)))
        .await
        .unwrap();
    assert_eq!((s(again.key()), rev(again.header())), (key_of("lk", l1), 2));

    let b = lock_in_background(&c, "lk", l2);
    until_keys(&mut c, "lk/", 2).await;
    let third = lock_in_background(&c, "lk", l3);
    let ks = until_keys(&mut c, "lk/", 3).await;
    assert_eq!(
        ks,
        vec![
            (key_of("lk", l1), 2),
            (key_of("lk", l2), 3),
            (key_of("lk", l3), 4)
        ],
        "every locker's key, in the order they came"
    );
    still_waiting(&b).await;
    assert!(!third.is_finished());

    let u = c.unlock(a.key()).await.unwrap();
    assert_eq!(rev(u.header()), 5);
    let b = finished(b).await.unwrap();
    assert_eq!(s(b.key()), key_of("lk", l2));
    assert_eq!(rev(b.header()), 5, "the header of the look after the wait");
    still_waiting(&third).await;

    let u = c.unlock(b.key()).await.unwrap();
    assert_eq!(rev(u.header()), 6);
    let third = finished(third).await.unwrap();
    assert_eq!((s(third.key()), rev(third.header())), (key_of("lk", l3), 6));
    assert_eq!(keys_under(&mut c, "lk/").await, vec![(key_of("lk", l3), 4)]);

    // Unlocking a key that is gone changes nothing.
    let u = c.unlock(b.key()).await.unwrap();
    assert_eq!(rev(u.header()), 6);
}

#[tokio::test]
async fn lock_waiter_proceeds_when_the_holders_lease_is_revoked() {
    let (_t, mut c) = Target::with_client(&[]).await;
    let (l1, l2) = (grant(&mut c).await, grant(&mut c).await);
    let a = c
        .lock("res", Some(LockOptions::new().with_lease(l1)))
        .await
        .unwrap();
    let b = lock_in_background(&c, "res", l2);
    until_keys(&mut c, "res/", 2).await;
    still_waiting(&b).await;

    let r = c.lease_revoke(l1).await.unwrap();
    assert_eq!(rev(r.header()), 4, "the revoke deleted the holder's key");
    let b = finished(b).await.unwrap();
    assert_eq!((s(b.key()), rev(b.header())), (key_of("res", l2), 4));
    assert_eq!(
        keys_under(&mut c, "res/").await,
        vec![(key_of("res", l2), 3)]
    );
    assert_ne!(a.key(), b.key());
}

#[tokio::test]
async fn lock_wait_ends_when_the_waiters_lease_is_revoked() {
    let (_t, mut c) = Target::with_client(&[]).await;
    let (l1, l2) = (grant(&mut c).await, grant(&mut c).await);
    c.lock("res", Some(LockOptions::new().with_lease(l1)))
        .await
        .unwrap();
    let b = lock_in_background(&c, "res", l2);
    until_keys(&mut c, "res/", 2).await;
    still_waiting(&b).await;

    c.lease_revoke(l2).await.unwrap();
    if oracle_is_etcd() {
        // etcd 3.4.23 waits on, then answers a lock whose key is gone.
        still_waiting(&b).await;
        c.lease_revoke(l1).await.unwrap();
        let b = finished(b).await.unwrap();
        assert_eq!((s(b.key()), rev(b.header())), (key_of("res", l2), 5));
        assert!(keys_under(&mut c, "res/").await.is_empty());
        return;
    }
    let got = finished(b).await;
    assert_eq!(
        grpc(got),
        (Code::Unknown, "mutex: session is expired".to_string())
    );
    assert_eq!(
        keys_under(&mut c, "res/").await,
        vec![(key_of("res", l1), 2)]
    );
}

#[tokio::test]
async fn lock_wait_ends_when_the_waiters_lease_expires() {
    let (_t, mut c) = Target::with_client(&[]).await;
    let l1 = grant(&mut c).await;
    // 2 s: the least TTL a single member with etcd's default timing keeps.
    let l2 = c.lease_grant(2, None).await.unwrap().id();
    c.lock("res", Some(LockOptions::new().with_lease(l1)))
        .await
        .unwrap();
    let b = lock_in_background(&c, "res", l2);
    until_keys(&mut c, "res/", 2).await;
    // Nobody keeps l2 alive: it expires and its key goes.
    until_keys(&mut c, "res/", 1).await;
    if oracle_is_etcd() {
        // etcd 3.4.23 waits on (see the test above).
        still_waiting(&b).await;
        return;
    }
    assert_eq!(
        grpc(finished(b).await),
        (Code::Unknown, "mutex: session is expired".to_string())
    );
}

#[tokio::test]
async fn lock_of_a_client_that_goes_away_is_released() {
    let (_t, mut c) = Target::with_client(&[]).await;
    let (l1, l2) = (grant(&mut c).await, grant(&mut c).await);
    c.lock("res", Some(LockOptions::new().with_lease(l1)))
        .await
        .unwrap();
    let mut c2 = c.clone();
    let gave_up = timeout(
        Duration::from_millis(500),
        c2.lock("res", Some(LockOptions::new().with_lease(l2))),
    )
    .await;
    assert!(gave_up.is_err(), "the second lock must wait");
    // The server deletes the waiter's key once its request is canceled.
    until_keys(&mut c, "res/", 1).await;
    assert_eq!(
        keys_under(&mut c, "res/").await,
        vec![(key_of("res", l1), 2)]
    );
}

#[tokio::test]
async fn lock_without_a_lease_gets_a_session_lease() {
    let (_t, mut c) = Target::with_client(&[]).await;
    let a = c.lock("nolease", None).await.unwrap();
    assert_eq!(rev(a.header()), 2);
    let kv = c.get(a.key(), None).await.unwrap().kvs()[0].clone();
    let lease = kv.lease();
    assert_ne!(lease, 0, "bound to a lease the server granted");
    assert_eq!(s(a.key()), key_of("nolease", lease));
    let ttl = c.lease_time_to_live(lease, None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 60, "clientv3 concurrency's session TTL");
    c.unlock(a.key()).await.unwrap();
}

#[tokio::test]
async fn election_with_two_candidates() {
    let (_t, mut c) = Target::with_client(&[]).await;
    let (l1, l2) = (grant(&mut c).await, grant(&mut c).await);
    let (ka, kb) = (key_of("el", l1), key_of("el", l2));

    assert_eq!(
        grpc(c.leader("el").await),
        (Code::Unknown, "election: no leader".to_string())
    );
    // An observer started before anyone campaigns waits for the first
    // (etcd answers the call only with its first leader).
    let obs = {
        let mut c = c.clone();
        tokio::spawn(async move { c.observe("el").await })
    };
    let a = c.campaign("el", "a", l1).await.unwrap();
    assert_eq!(rev(a.header()), 2);
    let a_leader = a.leader().unwrap().clone();
    same_leader(&a_leader, "el", &ka, 2, l1);
    let mut obs = finished(obs).await.unwrap();
    assert_eq!(next_seen(&mut obs).await, (2, ka.clone(), "a".into(), 2));

    let b = {
        let mut c = c.clone();
        tokio::spawn(async move { c.campaign("el", "b", l2).await })
    };
    until_keys(&mut c, "el/", 2).await;
    still_waiting(&b).await;

    let p = c
        .proclaim(
            "a2",
            Some(ProclaimOptions::new().with_leader(a_leader.clone())),
        )
        .await
        .unwrap();
    assert_eq!(rev(p.header()), 4);
    assert_eq!(next_seen(&mut obs).await, (4, ka.clone(), "a2".into(), 2));
    let l = c.leader("el").await.unwrap();
    let kv = l.kv().unwrap();
    assert_eq!(rev(l.header()), 4);
    assert_eq!(
        (s(kv.key()), s(kv.value()), kv.create_revision(), kv.lease()),
        (ka.clone(), "a2".into(), 2, l1)
    );

    let r = c
        .resign(Some(ResignOptions::new().with_leader(a_leader.clone())))
        .await
        .unwrap();
    assert_eq!(rev(r.header()), 5);
    let b = finished(b).await.unwrap();
    assert_eq!(rev(b.header()), 3, "the header of the campaign's own put");
    let b_leader = b.leader().unwrap().clone();
    same_leader(&b_leader, "el", &kb, 3, l2);
    assert_eq!(next_seen(&mut obs).await, (5, kb.clone(), "b".into(), 3));
    let l = c.leader("el").await.unwrap();
    assert_eq!(s(l.kv().unwrap().value()), "b");

    // The old leader's key no longer leads.
    assert_eq!(
        grpc(
            c.proclaim(
                "late",
                Some(ProclaimOptions::new().with_leader(a_leader.clone()))
            )
            .await
        ),
        (Code::Unknown, "election: not leader".to_string())
    );
    // A stale resign answers, deleting nothing.
    let r = c
        .resign(Some(ResignOptions::new().with_leader(a_leader)))
        .await
        .unwrap();
    assert_eq!(rev(r.header()), 5);
    // A key of the right name but another create revision does not lead.
    let forged = leader_key("el", &kb, 2, l2);
    assert_eq!(
        grpc(
            c.proclaim("x", Some(ProclaimOptions::new().with_leader(forged)))
                .await
        ),
        (Code::Unknown, "election: not leader".to_string())
    );

    let p = c
        .proclaim(
            "b2",
            Some(ProclaimOptions::new().with_leader(b_leader.clone())),
        )
        .await
        .unwrap();
    assert_eq!(rev(p.header()), 6);
    assert_eq!(next_seen(&mut obs).await, (6, kb.clone(), "b2".into(), 3));
    c.resign(Some(ResignOptions::new().with_leader(b_leader)))
        .await
        .unwrap();
    assert_eq!(
        grpc(c.leader("el").await),
        (Code::Unknown, "election: no leader".to_string())
    );
    // The observer waits for the next leader.
    let a = c.campaign("el", "again", l1).await.unwrap();
    assert_eq!(rev(a.header()), 8);
    assert_eq!(next_seen(&mut obs).await, (8, ka, "again".into(), 8));
}

#[tokio::test]
async fn election_errors() {
    let (_t, mut c) = Target::with_client(&[]).await;
    let missing = (
        Code::Unknown,
        "\"leader\" field must be provided".to_string(),
    );
    assert_eq!(grpc(c.proclaim("v", None).await), missing);
    assert_eq!(grpc(c.resign(None).await), missing);
    assert_eq!(
        grpc(c.campaign("el", "v", 0x7777).await),
        (
            Code::Unknown,
            "etcdserver: requested lease not found".to_string()
        )
    );
    assert_eq!(
        grpc(
            c.lock("lk", Some(LockOptions::new().with_lease(0x7777)))
                .await
        ),
        (
            Code::Unknown,
            "etcdserver: requested lease not found".to_string()
        )
    );
}

#[tokio::test]
async fn campaign_of_a_client_that_goes_away_resigns() {
    let (_t, mut c) = Target::with_client(&[]).await;
    let (l1, l2) = (grant(&mut c).await, grant(&mut c).await);
    c.campaign("el", "a", l1).await.unwrap();
    let mut c2 = c.clone();
    let gave_up = timeout(Duration::from_millis(500), c2.campaign("el", "b", l2)).await;
    assert!(gave_up.is_err(), "the second campaign must wait");
    until_keys(&mut c, "el/", 1).await;
    assert_eq!(keys_under(&mut c, "el/").await, vec![(key_of("el", l1), 2)]);
}

#[tokio::test]
async fn campaign_wait_ends_when_the_candidates_lease_is_revoked() {
    let (_t, mut c) = Target::with_client(&[]).await;
    let (l1, l2) = (grant(&mut c).await, grant(&mut c).await);
    c.campaign("el", "a", l1).await.unwrap();
    let b = {
        let mut c = c.clone();
        tokio::spawn(async move { c.campaign("el", "b", l2).await })
    };
    until_keys(&mut c, "el/", 2).await;
    still_waiting(&b).await;
    c.lease_revoke(l2).await.unwrap();
    if oracle_is_etcd() {
        // etcd 3.4.23 waits on, then elects a candidate whose key is gone.
        still_waiting(&b).await;
        c.lease_revoke(l1).await.unwrap();
        let b = finished(b).await.unwrap();
        same_leader(b.leader().unwrap(), "el", &key_of("el", l2), 3, l2);
        assert!(keys_under(&mut c, "el/").await.is_empty());
        return;
    }
    assert_eq!(
        grpc(finished(b).await),
        (Code::Unknown, "mutex: session is expired".to_string())
    );
}

#[tokio::test]
async fn defragment_and_move_leader_answer_without_header() {
    let (_t, mut c) = Target::with_client(&[]).await;
    c.put("k", "v", None).await.unwrap();
    let d = c.defragment().await.unwrap();
    assert!(d.header().is_none(), "etcd 3.4's Defragment has no header");
    let leader = c.status().await.unwrap().leader();
    let m = c.move_leader(leader).await.unwrap();
    assert!(m.header().is_none(), "etcd 3.4's MoveLeader has no header");
}
