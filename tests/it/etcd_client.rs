//! The KV and Maintenance APIs through the Rust `etcd-client` crate, against
//! a fresh raftcd each: revisions are asserted exactly (a fresh store is at
//! revision 1, every changing request adds one, a txn adds one however many
//! writes it makes).
//!
//! `RAFTCD_TEST_ORACLE=etcd cargo test --test it etcd_client::` runs the same
//! assertions against the real etcd 3.4.

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, GetResponse,
    KeyValue, PutOptions, ResponseHeader, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use tonic::Code;

use crate::common::grpc;
use crate::target::Target;

/// The `$variant` response in a txn's op responses, or a panic.
macro_rules! op {
    ($resp:expr, $variant:ident) => {
        match $resp {
            TxnOpResponse::$variant(r) => r,
            other => panic!("expected {}, got {other:?}", stringify!($variant)),
        }
    };
}

fn rev(h: Option<&ResponseHeader>) -> i64 {
    h.expect("response header").revision()
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// (key, value, create_revision, mod_revision, version, lease)
type Kv = (String, String, i64, i64, i64, i64);

fn kv(k: &KeyValue) -> Kv {
    (
        s(k.key()),
        s(k.value()),
        k.create_revision(),
        k.mod_revision(),
        k.version(),
        k.lease(),
    )
}

/// `kv` of the first key `get(key, opts)` returns.
async fn first_kv(c: &mut Client, key: &str, opts: Option<GetOptions>) -> Kv {
    kv(&c.get(key, opts).await.unwrap().kvs()[0])
}

/// `kv` of every key under `prefix`.
async fn prefix_kvs(c: &mut Client, prefix: &str) -> Vec<Kv> {
    let r = c
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    r.kvs().iter().map(kv).collect()
}

/// etcd's answer to a read or compaction at a revision not yet written.
fn future() -> (Code, String) {
    (
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision".into(),
    )
}

fn keys(r: &GetResponse) -> Vec<String> {
    r.kvs().iter().map(|k| s(k.key())).collect()
}

async fn current_rev(c: &mut Client) -> i64 {
    rev(c
        .get("\0", Some(GetOptions::new().with_count_only()))
        .await
        .unwrap()
        .header())
}

#[tokio::test]
async fn put_get_delete_with_prev_kv_and_history() {
    let (_t, mut c) = Target::with_client(&[]).await;

    let r = c.get("foo", None).await.unwrap();
    let h = r.header().unwrap();
    assert_eq!(h.revision(), 1, "a fresh store is at revision 1");
    assert_ne!(h.cluster_id(), 0);
    assert_ne!(h.member_id(), 0);
    assert!(h.raft_term() >= 1);
    assert!(r.kvs().is_empty());
    assert_eq!((r.count(), r.more()), (0, false));

    let p = c
        .put("foo", "bar", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(rev(p.header()), 2);
    assert!(p.prev_key().is_none(), "no previous value to return");
    let p = c
        .put("foo", "baz", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(rev(p.header()), 3);
    assert_eq!(
        kv(p.prev_key().unwrap()),
        ("foo".into(), "bar".into(), 2, 2, 1, 0)
    );
    let p = c.put("other", "x", None).await.unwrap();
    assert_eq!(rev(p.header()), 4);
    let p = c.put("other", "y", None).await.unwrap();
    assert_eq!(rev(p.header()), 5);
    assert!(p.prev_key().is_none(), "prev_kv only when asked for");

    let r = c.get("foo", None).await.unwrap();
    assert_eq!(rev(r.header()), 5);
    assert_eq!(r.count(), 1);
    assert_eq!(kv(&r.kvs()[0]), ("foo".into(), "baz".into(), 2, 3, 2, 0));

    let d = c
        .delete("foo", Some(DeleteOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!((rev(d.header()), d.deleted()), (6, 1));
    assert_eq!(d.prev_kvs().len(), 1);
    assert_eq!(
        kv(&d.prev_kvs()[0]),
        ("foo".into(), "baz".into(), 2, 3, 2, 0)
    );
    let d = c
        .delete("foo", Some(DeleteOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(
        (rev(d.header()), d.deleted()),
        (6, 0),
        "deleting nothing changes nothing"
    );
    assert!(d.prev_kvs().is_empty());
    let d = c.delete("other", None).await.unwrap();
    assert_eq!((rev(d.header()), d.deleted()), (7, 1));
    assert!(d.prev_kvs().is_empty(), "prev_kvs only when asked for");

    let r = c.get("foo", None).await.unwrap();
    assert_eq!((rev(r.header()), r.count()), (7, 0));
    let p = c.put("foo", "again", None).await.unwrap();
    assert_eq!(rev(p.header()), 8);
    let r = c.get("foo", None).await.unwrap();
    assert_eq!(
        kv(&r.kvs()[0]),
        ("foo".into(), "again".into(), 8, 8, 1, 0),
        "re-created: new create_revision, version 1"
    );

    // History reads.
    let at = |rv: i64| Some(GetOptions::new().with_revision(rv));
    assert!(c.get("foo", at(1)).await.unwrap().kvs().is_empty());
    let r = c.get("foo", at(2)).await.unwrap();
    assert_eq!(
        rev(r.header()),
        8,
        "the header carries the current revision"
    );
    assert_eq!(kv(&r.kvs()[0]), ("foo".into(), "bar".into(), 2, 2, 1, 0));
    assert_eq!(
        first_kv(&mut c, "foo", at(5)).await,
        ("foo".into(), "baz".into(), 2, 3, 2, 0)
    );
    assert!(
        c.get("foo", at(6)).await.unwrap().kvs().is_empty(),
        "deleted at 6"
    );
    assert_eq!(
        first_kv(&mut c, "other", at(6)).await,
        ("other".into(), "y".into(), 4, 5, 2, 0)
    );
    assert_eq!(grpc(c.get("foo", at(9)).await), future());
    assert_eq!(current_rev(&mut c).await, 8);
}

#[tokio::test]
async fn binary_keys_and_values() {
    let (_t, mut c) = Target::with_client(&[]).await;
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let reversed: Vec<u8> = every_byte.iter().rev().copied().collect();
    let keys_in_order: Vec<Vec<u8>> = vec![
        vec![0x00],
        every_byte.clone(),
        b"a/b+c".to_vec(),
        b"a/b+c/d".to_vec(),
        b"k\x00x".to_vec(),
        vec![0xff],
        vec![0xff, 0xff],
    ];
    // Put them in reverse order: the store sorts by bytes.
    for (i, k) in keys_in_order.iter().rev().enumerate() {
        let p = c.put(k.clone(), every_byte.clone(), None).await.unwrap();
        assert_eq!(rev(p.header()), 2 + i as i64);
    }
    for k in &keys_in_order {
        let r = c.get(k.clone(), None).await.unwrap();
        assert_eq!(r.kvs().len(), 1, "key {k:?}");
        assert_eq!(r.kvs()[0].key(), &k[..]);
        assert_eq!(r.kvs()[0].value(), &every_byte[..]);
    }
    let all = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    let got: Vec<Vec<u8>> = all.kvs().iter().map(|k| k.key().to_vec()).collect();
    assert_eq!(got, keys_in_order);

    let prefix = |p: &[u8]| {
        let p = p.to_vec();
        let mut c = c.clone();
        async move {
            let r = c
                .get(p, Some(GetOptions::new().with_prefix()))
                .await
                .unwrap();
            r.kvs().iter().map(|k| k.key().to_vec()).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        prefix(b"a/").await,
        vec![b"a/b+c".to_vec(), b"a/b+c/d".to_vec()]
    );
    assert_eq!(prefix(b"a/b+c/").await, vec![b"a/b+c/d".to_vec()]);
    assert_eq!(prefix(b"k\x00").await, vec![b"k\x00x".to_vec()]);
    // The prefix end of 0xff is "\0": every key from 0xff on.
    assert_eq!(prefix(&[0xff]).await, vec![vec![0xff], vec![0xff, 0xff]]);
    assert_eq!(prefix(&[0x00]).await, vec![vec![0x00], every_byte.clone()]);

    let p = c
        .put(
            every_byte.clone(),
            reversed.clone(),
            Some(PutOptions::new().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(p.prev_key().unwrap().value(), &every_byte[..]);
    let d = c
        .delete(
            every_byte.clone(),
            Some(DeleteOptions::new().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(d.deleted(), 1);
    assert_eq!(d.prev_kvs()[0].key(), &every_byte[..]);
    assert_eq!(d.prev_kvs()[0].value(), &reversed[..]);
    assert_eq!(rev(d.header()), 2 + keys_in_order.len() as i64 + 1);
}

#[tokio::test]
async fn range_forms_limit_count_keys_only() {
    let (_t, mut c) = Target::with_client(&[]).await;
    for (i, k) in ["a", "b", "c", "c/1", "c/2", "d"].iter().enumerate() {
        let p = c.put(*k, format!("v-{k}"), None).await.unwrap();
        assert_eq!(rev(p.header()), 2 + i as i64);
    }
    let get = |k: &'static str, o: Option<GetOptions>| {
        let mut c = c.clone();
        async move { c.get(k, o).await.unwrap() }
    };
    let r = get("c", None).await;
    assert_eq!(
        (keys(&r), r.count(), r.more()),
        (vec!["c".to_string()], 1, false)
    );
    let r = get("c", Some(GetOptions::new().with_prefix())).await;
    assert_eq!(
        (keys(&r), r.count()),
        (vec!["c".into(), "c/1".into(), "c/2".into()], 3)
    );
    let r = get("c", Some(GetOptions::new().with_from_key())).await;
    assert_eq!(keys(&r), ["c", "c/1", "c/2", "d"]);
    let r = get("b", Some(GetOptions::new().with_range("d"))).await;
    assert_eq!(
        (keys(&r), r.count()),
        (vec!["b".into(), "c".into(), "c/1".into(), "c/2".into()], 4)
    );
    let r = get("d", Some(GetOptions::new().with_range("b"))).await;
    assert_eq!(
        (keys(&r), r.count()),
        (Vec::<String>::new(), 0),
        "range_end before key: nothing"
    );
    let r = get("", Some(GetOptions::new().with_all_keys())).await;
    assert_eq!((r.kvs().len(), r.count(), rev(r.header())), (6, 6, 7));
    assert_eq!(kv(&r.kvs()[3]), ("c/1".into(), "v-c/1".into(), 5, 5, 1, 0));

    // limit / more / count: count is the total before the limit.
    let r = get("", Some(GetOptions::new().with_all_keys().with_limit(2))).await;
    assert_eq!(
        (keys(&r), r.count(), r.more()),
        (vec!["a".into(), "b".into()], 6, true)
    );
    let r = get("", Some(GetOptions::new().with_all_keys().with_limit(6))).await;
    assert_eq!((r.kvs().len(), r.count(), r.more()), (6, 6, false));
    let r = get("", Some(GetOptions::new().with_all_keys().with_limit(100))).await;
    assert_eq!((r.kvs().len(), r.count(), r.more()), (6, 6, false));
    let r = get("c", Some(GetOptions::new().with_prefix().with_limit(1))).await;
    assert_eq!((keys(&r), r.count(), r.more()), (vec!["c".into()], 3, true));

    // keys_only keeps everything but the value; count_only returns no kvs.
    let r = get("c", Some(GetOptions::new().with_prefix().with_keys_only())).await;
    assert_eq!(kv(&r.kvs()[1]), ("c/1".into(), "".into(), 5, 5, 1, 0));
    assert!(r.kvs().iter().all(|k| k.value().is_empty()));
    let r = get(
        "",
        Some(GetOptions::new().with_all_keys().with_count_only()),
    )
    .await;
    assert_eq!((r.kvs().len(), r.count(), r.more()), (0, 6, false));
    let r = get(
        "c",
        Some(
            GetOptions::new()
                .with_prefix()
                .with_count_only()
                .with_limit(1),
        ),
    )
    .await;
    assert_eq!((r.kvs().len(), r.count()), (0, 3));

    // Serializable reads see the same data.
    let r = get(
        "c",
        Some(GetOptions::new().with_prefix().with_serializable()),
    )
    .await;
    assert_eq!(
        (keys(&r), rev(r.header())),
        (vec!["c".into(), "c/1".into(), "c/2".into()], 7)
    );
    // Reads never change the revision.
    assert_eq!(current_rev(&mut c).await, 7);
}

/// Keys whose key, version, create, mod and value orders all differ.
async fn sort_fixture(c: &mut Client) {
    let puts = [
        ("k3", "c"),
        ("k1", "d"),
        ("k4", "a"),
        ("k2", "b"),
        ("k1", "d"),
        ("k3", "c"),
        ("k1", "d"),
        ("k4", "a"),
        ("k3", "c"),
        ("k1", "d"),
    ];
    for (i, (k, v)) in puts.iter().enumerate() {
        let p = c.put(*k, *v, None).await.unwrap();
        assert_eq!(rev(p.header()), 2 + i as i64);
    }
}

#[tokio::test]
async fn sort_filters_and_history() {
    let (_t, mut c) = Target::with_client(&[]).await;
    sort_fixture(&mut c).await;
    // k1: create 3, version 4, mod 11, "d"   k2: create 5, version 1, mod 5, "b"
    // k3: create 2, version 3, mod 10, "c"   k4: create 4, version 2, mod 9, "a"
    assert_eq!(
        prefix_kvs(&mut c, "k").await,
        vec![
            ("k1".into(), "d".into(), 3, 11, 4, 0),
            ("k2".into(), "b".into(), 5, 5, 1, 0),
            ("k3".into(), "c".into(), 2, 10, 3, 0),
            ("k4".into(), "a".into(), 4, 9, 2, 0),
        ]
    );
    let ascending = [
        (SortTarget::Key, ["k1", "k2", "k3", "k4"]),
        (SortTarget::Version, ["k2", "k4", "k3", "k1"]),
        (SortTarget::Create, ["k3", "k1", "k4", "k2"]),
        (SortTarget::Mod, ["k2", "k4", "k3", "k1"]),
        (SortTarget::Value, ["k4", "k2", "k3", "k1"]),
    ];
    for (target, order) in ascending {
        let sorted = |o: SortOrder| {
            let mut c = c.clone();
            async move {
                let r = c
                    .get(
                        "k",
                        Some(GetOptions::new().with_prefix().with_sort(target, o)),
                    )
                    .await
                    .unwrap();
                assert_eq!(r.count(), 4);
                keys(&r)
            }
        };
        let asc: Vec<String> = order.iter().map(|k| k.to_string()).collect();
        let desc: Vec<String> = asc.iter().rev().cloned().collect();
        assert_eq!(sorted(SortOrder::Ascend).await, asc, "{target:?} ascending");
        assert_eq!(
            sorted(SortOrder::Descend).await,
            desc,
            "{target:?} descending"
        );
        // No order given: key order for the key target, ascending otherwise.
        assert_eq!(
            sorted(SortOrder::None).await,
            asc,
            "{target:?} with no order"
        );
    }
    // Sorting happens before the limit.
    let r = c
        .get(
            "k",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Mod, SortOrder::Descend)
                    .with_limit(2),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        (keys(&r), r.count(), r.more()),
        (vec!["k1".into(), "k3".into()], 4, true)
    );

    // Revision filters; count stays the number of keys in the range.
    let filtered = |o: GetOptions| {
        let mut c = c.clone();
        async move {
            let r = c.get("k", Some(o.with_prefix())).await.unwrap();
            (keys(&r), r.count(), r.more())
        }
    };
    let v = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    assert_eq!(
        filtered(GetOptions::new().with_min_mod_revision(9)).await,
        (v(&["k1", "k3", "k4"]), 4, false)
    );
    assert_eq!(
        filtered(GetOptions::new().with_max_mod_revision(9)).await,
        (v(&["k2", "k4"]), 4, false)
    );
    assert_eq!(
        filtered(
            GetOptions::new()
                .with_min_create_revision(3)
                .with_max_create_revision(4)
        )
        .await,
        (v(&["k1", "k4"]), 4, false)
    );
    assert_eq!(
        filtered(GetOptions::new().with_min_create_revision(5)).await,
        (v(&["k2"]), 4, false)
    );
    assert_eq!(
        filtered(GetOptions::new().with_max_create_revision(2)).await,
        (v(&["k3"]), 4, false)
    );
    assert_eq!(
        filtered(GetOptions::new().with_min_mod_revision(9).with_limit(2)).await,
        (v(&["k1", "k3"]), 4, true)
    );
    assert_eq!(
        filtered(
            GetOptions::new()
                .with_min_mod_revision(10)
                .with_max_create_revision(2)
        )
        .await,
        (v(&["k3"]), 4, false)
    );

    // History: the store as it was.
    let r = c
        .get("k1", Some(GetOptions::new().with_revision(6)))
        .await
        .unwrap();
    assert_eq!(kv(&r.kvs()[0]), ("k1".into(), "d".into(), 3, 6, 2, 0));
    let r = c
        .get("k", Some(GetOptions::new().with_prefix().with_revision(4)))
        .await
        .unwrap();
    assert_eq!(
        (keys(&r), r.count(), rev(r.header())),
        (v(&["k1", "k3", "k4"]), 3, 11)
    );
    let r = c
        .get(
            "k",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_revision(7)
                    .with_serializable(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys(&r), v(&["k1", "k2", "k3", "k4"]));
    let r = c
        .get("k", Some(GetOptions::new().with_prefix().with_revision(1)))
        .await
        .unwrap();
    assert_eq!((r.kvs().len(), r.count()), (0, 0));
    let r = c
        .get(
            "k",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_revision(5)
                    .with_min_mod_revision(4),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys(&r), v(&["k2", "k4"]));
    assert_eq!(
        c.get("k", Some(GetOptions::new().with_prefix().with_revision(11)))
            .await
            .unwrap()
            .count(),
        4
    );
    assert_eq!(
        grpc(c.get("k1", Some(GetOptions::new().with_revision(12))).await),
        future()
    );
    assert_eq!(current_rev(&mut c).await, 11);
}

#[tokio::test]
async fn put_ignore_value_and_ignore_lease() {
    let (_t, mut c) = Target::with_client(&[]).await;
    let not_found = (
        Code::InvalidArgument,
        "etcdserver: key not found".to_string(),
    );
    assert_eq!(
        grpc(
            c.put("x", "", Some(PutOptions::new().with_ignore_value()))
                .await
        ),
        not_found
    );
    assert_eq!(
        grpc(
            c.put("x", "v", Some(PutOptions::new().with_ignore_lease()))
                .await
        ),
        not_found
    );
    assert_eq!(current_rev(&mut c).await, 1, "failed puts change nothing");
    assert!(c.get("x", None).await.unwrap().kvs().is_empty());

    assert_eq!(rev(c.put("x", "v1", None).await.unwrap().header()), 2);
    let p = c
        .put(
            "x",
            "",
            Some(PutOptions::new().with_ignore_value().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(rev(p.header()), 3);
    assert_eq!(
        kv(p.prev_key().unwrap()),
        ("x".into(), "v1".into(), 2, 2, 1, 0)
    );
    let r = c.get("x", None).await.unwrap();
    assert_eq!(
        kv(&r.kvs()[0]),
        ("x".into(), "v1".into(), 2, 3, 2, 0),
        "value kept, version bumped"
    );
    let p = c
        .put("x", "v2", Some(PutOptions::new().with_ignore_lease()))
        .await
        .unwrap();
    assert_eq!(rev(p.header()), 4);
    let r = c.get("x", None).await.unwrap();
    assert_eq!(kv(&r.kvs()[0]), ("x".into(), "v2".into(), 2, 4, 3, 0));

    assert_eq!(
        grpc(
            c.put("x", "v3", Some(PutOptions::new().with_ignore_value()))
                .await
        ),
        (
            Code::InvalidArgument,
            "etcdserver: value is provided".into()
        )
    );
    assert_eq!(
        grpc(
            c.put(
                "x",
                "v3",
                Some(PutOptions::new().with_ignore_lease().with_lease(7))
            )
            .await
        ),
        (
            Code::InvalidArgument,
            "etcdserver: lease is provided".into()
        )
    );
    // After a delete the key is missing again.
    c.delete("x", None).await.unwrap();
    assert_eq!(
        grpc(
            c.put("x", "", Some(PutOptions::new().with_ignore_value()))
                .await
        ),
        not_found
    );
    assert_eq!(current_rev(&mut c).await, 5);
}

#[tokio::test]
async fn txn_compares_on_every_target() {
    let (_t, mut c) = Target::with_client(&[]).await;
    c.put("a", "1", None).await.unwrap(); // 2
    c.put("b", "2", None).await.unwrap(); // 3
    c.put("b", "22", None).await.unwrap(); // 4: b create 3, mod 4, version 2
    c.put("p/1", "x", None).await.unwrap(); // 5
    c.put("p/2", "x", None).await.unwrap(); // 6
    use CompareOp::{Equal, Greater, Less, NotEqual};
    let cases: Vec<(Vec<Compare>, bool)> = vec![
        (vec![Compare::version("a", Equal, 1)], true),
        (vec![Compare::version("b", Greater, 1)], true),
        (vec![Compare::version("b", Less, 2)], false),
        (vec![Compare::version("b", NotEqual, 2)], false),
        (vec![Compare::version("missing", Equal, 0)], true),
        (vec![Compare::create_revision("b", Equal, 3)], true),
        (vec![Compare::create_revision("b", Greater, 3)], false),
        (vec![Compare::create_revision("b", Less, 4)], true),
        (vec![Compare::create_revision("b", NotEqual, 3)], false),
        (vec![Compare::mod_revision("b", Equal, 4)], true),
        (vec![Compare::mod_revision("a", Less, 3)], true),
        (vec![Compare::mod_revision("a", Greater, 2)], false),
        (vec![Compare::mod_revision("a", NotEqual, 5)], true),
        (vec![Compare::mod_revision("missing", Less, 1)], true),
        (vec![Compare::value("a", Equal, "1")], true),
        (vec![Compare::value("b", Greater, "2")], true),
        (vec![Compare::value("b", Less, "3")], true),
        (vec![Compare::value("a", NotEqual, "1")], false),
        (vec![Compare::value("a", NotEqual, "2")], true),
        (vec![Compare::lease("a", Equal, 0)], true),
        (vec![Compare::lease("a", Greater, 0)], false),
        (vec![Compare::lease("a", Less, 1)], true),
        (vec![Compare::lease("a", NotEqual, 5)], true),
        // A value compare on a missing key fails whatever it asks.
        (vec![Compare::value("missing", NotEqual, "x")], false),
        (vec![Compare::value("missing", Equal, "")], false),
        (vec![Compare::value("missing", Less, "z")], false),
        // Compares over a range hold only if they hold for every key.
        (vec![Compare::value("p/", Equal, "x").with_prefix()], true),
        (vec![Compare::version("p/", Equal, 1).with_prefix()], true),
        (
            vec![Compare::mod_revision("p/", Greater, 4).with_prefix()],
            true,
        ),
        (
            vec![Compare::mod_revision("p/", Greater, 5).with_prefix()],
            false,
        ),
        (
            vec![Compare::create_revision("a", Less, 4).with_range("c")],
            true,
        ),
        (
            vec![Compare::create_revision("a", Less, 3).with_range("c")],
            false,
        ),
        (
            vec![Compare::version("a", Greater, 0).with_range("\0")],
            true,
        ),
        // An empty range compares like one missing key.
        (
            vec![Compare::version("q/", Greater, 0).with_prefix()],
            false,
        ),
        (
            vec![Compare::create_revision("q/", Equal, 0).with_prefix()],
            true,
        ),
        (vec![Compare::value("q/", Equal, "").with_prefix()], false),
        // Every compare must hold.
        (
            vec![
                Compare::version("a", Equal, 1),
                Compare::value("b", Equal, "22"),
            ],
            true,
        ),
        (
            vec![
                Compare::version("a", Equal, 1),
                Compare::value("b", Equal, "nope"),
            ],
            false,
        ),
        (vec![], true),
    ];
    for (compares, want) in cases {
        let txn = Txn::new()
            .when(compares.clone())
            .and_then([TxnOp::get("a", None)])
            .or_else([TxnOp::get("b", None)]);
        let r = c.txn(txn).await.unwrap();
        assert_eq!(r.succeeded(), want, "{compares:?}");
        assert_eq!(rev(r.header()), 6, "a read-only txn changes nothing");
        let ops = r.op_responses();
        assert_eq!(ops.len(), 1);
        let g = op!(&ops[0], Get);
        assert_eq!(keys(g), [if want { "a" } else { "b" }]);
        assert_eq!(rev(g.header()), 6);
    }
    assert_eq!(current_rev(&mut c).await, 6);
}

#[tokio::test]
async fn txn_writes_nested_txn_and_put_if_absent() {
    let (_t, mut c) = Target::with_client(&[]).await;
    c.put("a", "1", None).await.unwrap(); // 2
    c.put("b", "2", None).await.unwrap(); // 3

    // Three writes and a read: one revision; the read sees the txn's writes.
    let r = c
        .txn(
            Txn::new()
                .when([Compare::value("a", CompareOp::Equal, "1")])
                .and_then([
                    TxnOp::put("a", "10", Some(PutOptions::new().with_prev_key())),
                    TxnOp::put("c", "3", None),
                    TxnOp::delete("b", Some(DeleteOptions::new().with_prev_key())),
                    TxnOp::get("a", None),
                    TxnOp::get("b", None),
                ]),
        )
        .await
        .unwrap();
    assert!(r.succeeded());
    assert_eq!(rev(r.header()), 4);
    let ops = r.op_responses();
    assert_eq!(ops.len(), 5);
    let p = op!(&ops[0], Put);
    assert_eq!(rev(p.header()), 4);
    assert_eq!(
        kv(p.prev_key().unwrap()),
        ("a".into(), "1".into(), 2, 2, 1, 0)
    );
    let p = op!(&ops[1], Put);
    assert_eq!((rev(p.header()), p.prev_key().is_none()), (4, true));
    let d = op!(&ops[2], Delete);
    assert_eq!((rev(d.header()), d.deleted()), (4, 1));
    assert_eq!(kv(&d.prev_kvs()[0]), ("b".into(), "2".into(), 3, 3, 1, 0));
    let g = op!(&ops[3], Get);
    assert_eq!(rev(g.header()), 4);
    assert_eq!(kv(&g.kvs()[0]), ("a".into(), "10".into(), 2, 4, 2, 0));
    let g = op!(&ops[4], Get);
    assert_eq!(g.count(), 0, "deleted earlier in the txn");
    let r = c.get("c", None).await.unwrap();
    assert_eq!(kv(&r.kvs()[0]), ("c".into(), "3".into(), 4, 4, 1, 0));

    // The failure branch may write too.
    let r = c
        .txn(
            Txn::new()
                .when([Compare::value("a", CompareOp::Equal, "1")])
                .and_then([TxnOp::put("a", "never", None)])
                .or_else([TxnOp::put("d", "4", None), TxnOp::get("d", None)]),
        )
        .await
        .unwrap();
    assert!(!r.succeeded());
    assert_eq!(rev(r.header()), 5);
    let ops = r.op_responses();
    let g = op!(&ops[1], Get);
    assert_eq!(kv(&g.kvs()[0]), ("d".into(), "4".into(), 5, 5, 1, 0));
    assert_eq!(s(c.get("a", None).await.unwrap().kvs()[0].value()), "10");

    // Ops report the revision as of their place in the txn: a range or a
    // delete that finds nothing before the first change reports the old one.
    let r = c
        .txn(Txn::new().and_then([
            TxnOp::get("a", None),
            TxnOp::delete("nothing", None),
            TxnOp::put("e", "5", None),
            TxnOp::delete("nothing-either", None),
            TxnOp::get("e", None),
        ]))
        .await
        .unwrap();
    assert_eq!(rev(r.header()), 6);
    let ops = r.op_responses();
    let revs: Vec<i64> = ops
        .iter()
        .map(|o| match o {
            TxnOpResponse::Get(g) => rev(g.header()),
            TxnOpResponse::Delete(d) => rev(d.header()),
            TxnOpResponse::Put(p) => rev(p.header()),
            TxnOpResponse::Txn(t) => rev(t.header()),
        })
        .collect();
    assert_eq!(revs, [5, 5, 6, 6, 6]);

    // A txn with only deletes that find nothing changes nothing.
    let r = c
        .txn(Txn::new().and_then([TxnOp::delete("nothing", None)]))
        .await
        .unwrap();
    assert_eq!(rev(r.header()), 6);

    // Nested txns: every compare is evaluated against the store before the
    // outer txn; the responses nest; one revision for all writes.
    let inner_fails = Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "nope")])
        .and_then([TxnOp::put("n2", "success", None)])
        .or_else([TxnOp::put("n2", "failure", None), TxnOp::get("n2", None)]);
    let inner_holds = Txn::new()
        .when([
            Compare::create_revision("n3", CompareOp::Equal, 0),
            Compare::version("n1", CompareOp::Equal, 0),
        ])
        .and_then([TxnOp::put("n3", "s", None)]);
    let r = c
        .txn(
            Txn::new()
                .when([Compare::version("a", CompareOp::Greater, 0)])
                .and_then([
                    TxnOp::put("n1", "v", None),
                    TxnOp::txn(inner_fails),
                    TxnOp::txn(inner_holds),
                ]),
        )
        .await
        .unwrap();
    assert!(r.succeeded());
    assert_eq!(rev(r.header()), 7);
    let ops = r.op_responses();
    assert_eq!(ops.len(), 3);
    let t1 = op!(&ops[1], Txn);
    assert!(!t1.succeeded());
    assert_eq!(
        rev(t1.header()),
        0,
        "nested txn responses carry an empty header"
    );
    let inner = t1.op_responses();
    assert_eq!(inner.len(), 2);
    let p = op!(&inner[0], Put);
    assert_eq!(rev(p.header()), 7);
    let g = op!(&inner[1], Get);
    assert_eq!(kv(&g.kvs()[0]), ("n2".into(), "failure".into(), 7, 7, 1, 0));
    let t2 = op!(&ops[2], Txn);
    assert!(t2.succeeded());
    assert_eq!(t2.op_responses().len(), 1);
    assert_eq!(
        prefix_kvs(&mut c, "n").await,
        vec![
            ("n1".into(), "v".into(), 7, 7, 1, 0),
            ("n2".into(), "failure".into(), 7, 7, 1, 0),
            ("n3".into(), "s".into(), 7, 7, 1, 0),
        ]
    );

    // Put-if-absent: create_revision == 0 holds only for a missing key.
    let put_if_absent = |v: &'static str| {
        Txn::new()
            .when([Compare::create_revision("lock", CompareOp::Equal, 0)])
            .and_then([TxnOp::put("lock", v, None)])
            .or_else([TxnOp::get("lock", None)])
    };
    let r = c.txn(put_if_absent("me")).await.unwrap();
    assert!(r.succeeded());
    assert_eq!(rev(r.header()), 8);
    let r = c.txn(put_if_absent("you")).await.unwrap();
    assert!(!r.succeeded());
    assert_eq!(rev(r.header()), 8, "the losing txn changes nothing");
    let ops = r.op_responses();
    let g = op!(&ops[0], Get);
    assert_eq!(kv(&g.kvs()[0]), ("lock".into(), "me".into(), 8, 8, 1, 0));
    assert_eq!(current_rev(&mut c).await, 8);
}

#[tokio::test]
async fn compaction_and_revision_errors() {
    let (_t, mut c) = Target::with_client(&[]).await;
    for i in 1..=5 {
        c.put("k", format!("v{i}"), None).await.unwrap(); // revisions 2..=6
    }
    c.put("gone", "x", None).await.unwrap(); // 7
    c.delete("gone", None).await.unwrap(); // 8
    let before = c.hash_kv(0).await.unwrap();
    assert_eq!(before.compact_version(), -1, "never compacted");
    let compacted = (
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted".to_string(),
    );
    let future = future();

    let r = c
        .compact(4, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    assert_eq!(
        rev(r.header()),
        8,
        "compaction does not change the revision"
    );
    let at = |rv: i64| Some(GetOptions::new().with_revision(rv));
    assert_eq!(grpc(c.get("k", at(3)).await), compacted);
    assert_eq!(grpc(c.get("k", at(1)).await), compacted);
    assert_eq!(
        first_kv(&mut c, "k", at(4)).await,
        ("k".into(), "v3".into(), 2, 4, 3, 0)
    );
    assert_eq!(
        first_kv(&mut c, "k", at(6)).await,
        ("k".into(), "v5".into(), 2, 6, 5, 0)
    );
    assert_eq!(
        first_kv(&mut c, "k", None).await,
        ("k".into(), "v5".into(), 2, 6, 5, 0)
    );
    assert_eq!(
        first_kv(&mut c, "gone", at(7)).await,
        ("gone".into(), "x".into(), 7, 7, 1, 0)
    );
    assert_eq!(grpc(c.get("k", at(9)).await), future);

    assert_eq!(grpc(c.compact(4, None).await), compacted);
    assert_eq!(grpc(c.compact(2, None).await), compacted);
    assert_eq!(grpc(c.compact(9, None).await), future);
    assert_eq!(current_rev(&mut c).await, 8);

    let after = c.hash_kv(0).await.unwrap();
    assert_eq!(after.compact_version(), 4);
    assert_eq!(rev(after.header()), 8);
    // A txn reading a compacted revision fails as a whole and writes nothing.
    let txn = Txn::new().and_then([TxnOp::put("t", "v", None), TxnOp::get("k", at(3))]);
    assert_eq!(grpc(c.txn(txn).await), compacted);
    assert!(c.get("t", None).await.unwrap().kvs().is_empty());

    let r = c.compact(8, None).await.unwrap();
    assert_eq!(rev(r.header()), 8);
    assert_eq!(
        first_kv(&mut c, "k", at(8)).await,
        ("k".into(), "v5".into(), 2, 6, 5, 0)
    );
    assert!(c.get("gone", at(8)).await.unwrap().kvs().is_empty());
    assert_eq!(grpc(c.get("gone", at(7)).await), compacted);
    assert_eq!(current_rev(&mut c).await, 8);
}

#[tokio::test]
async fn maintenance_status_hash_kv_member_list() {
    let (t, mut c) = Target::with_client(&[]).await;
    let st = c.status().await.unwrap();
    let h = st.header().unwrap();
    assert!(st.version().starts_with("3.4."), "version {}", st.version());
    assert_eq!(st.leader(), h.member_id(), "a single member leads");
    assert!(st.raft_term() >= 1);
    assert!(st.raft_index() >= st.raft_applied_index() && st.raft_applied_index() >= 1);
    assert!(st.db_size() > 0);
    assert!(st.errors().is_empty());
    assert!(!st.is_learner());
    let (cluster_id, member_id) = (h.cluster_id(), h.member_id());

    let h1 = c.hash_kv(0).await.unwrap();
    assert_eq!(rev(h1.header()), 1);
    assert_eq!(
        c.hash_kv(0).await.unwrap().hash(),
        h1.hash(),
        "hash is stable"
    );
    c.put("k", "v", None).await.unwrap();
    let h2 = c.hash_kv(0).await.unwrap();
    assert_eq!(rev(h2.header()), 2);
    assert_ne!(h2.hash(), h1.hash(), "hash covers the data");
    assert_eq!(
        c.hash_kv(1).await.unwrap().hash(),
        h1.hash(),
        "hash at an older revision"
    );
    assert_eq!(c.hash_kv(2).await.unwrap().hash(), h2.hash());
    assert_eq!(grpc(c.hash_kv(3).await), future());
    let st2 = c.status().await.unwrap();
    assert!(
        st2.raft_index() > st.raft_index(),
        "the put went through the log"
    );
    assert_eq!(rev(st2.header()), 2);

    let ml = c.member_list().await.unwrap();
    let mh = ml.header().unwrap();
    assert_eq!((mh.cluster_id(), mh.member_id()), (cluster_id, member_id));
    assert_eq!(ml.members().len(), 1);
    let m = &ml.members()[0];
    assert_eq!(m.id(), member_id);
    assert_eq!(m.name(), "default");
    assert_eq!(m.client_urls(), [t.url()]);
    assert_eq!(m.peer_urls().len(), 1);
    assert!(
        m.peer_urls()[0].starts_with("http://127.0.0.1:"),
        "{:?}",
        m.peer_urls()
    );
    assert!(!m.is_learner());

    let alarms = c
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    assert!(alarms.alarms().is_empty());
    assert_eq!(current_rev(&mut c).await, 2);
}
