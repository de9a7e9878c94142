//! Durability with real processes: an acknowledged write survives SIGKILL,
//! restart never re-applies an entry, and the data dir opens after being
//! killed in the middle of writes, again and again.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, GetOptions};

use crate::common::{free_port, Server};

async fn connect(server: &Server) -> Client {
    Client::connect([server.endpoint()], None)
        .await
        .expect("connect")
}

/// Every key under `prefix` with its (value, create revision, mod revision).
async fn dump(client: &mut Client, prefix: &str) -> BTreeMap<String, (String, i64, i64)> {
    let resp = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .expect("get prefix");
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().expect("utf8 key").to_string(),
                (
                    kv.value_str().expect("utf8 value").to_string(),
                    kv.create_revision(),
                    kv.mod_revision(),
                ),
            )
        })
        .collect()
}

async fn current_revision(client: &mut Client) -> i64 {
    client
        .get("any", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_without_reapply() {
    let mut server = Server::start();
    let mut client = connect(&server).await;
    let mut acked = BTreeMap::new();
    for i in 0..1000 {
        let key = format!("k/{i:04}");
        let value = format!("v{i}");
        let resp = client
            .put(key.as_str(), value.as_str(), None)
            .await
            .expect("put");
        let rev = resp.header().expect("header").revision();
        assert_eq!(rev, i as i64 + 2, "revisions go up by one per put");
        acked.insert(key, (value, rev, rev));
    }
    drop(client);

    server.kill();
    server.restart();
    let mut client = connect(&server).await;
    assert_eq!(
        dump(&mut client, "k/").await,
        acked,
        "every acknowledged key, same revisions"
    );
    assert_eq!(
        current_revision(&mut client).await,
        1001,
        "no entry applied twice"
    );
    let resp = client
        .put("after", "restart", None)
        .await
        .expect("put after restart");
    assert_eq!(resp.header().expect("header").revision(), 1002);

    // A second restart, after more writes, still re-applies nothing.
    server.restart();
    let mut client = connect(&server).await;
    assert_eq!(current_revision(&mut client).await, 1002);
    assert_eq!(dump(&mut client, "k/").await, acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_during_writes_lose_nothing_acknowledged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let port = free_port();
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut max_acked_rev = 0i64;
    for round in 0..20u64 {
        let mut server = Server::start_in(&dir, port, &[]);
        let client = connect(&server).await;

        // Everything acknowledged in earlier rounds is there.
        let mut c = client.clone();
        let found = dump(&mut c, "r/").await;
        for (k, v) in &acked {
            assert_eq!(
                found.get(k).map(|x| &x.0),
                Some(v),
                "round {round}: lost acknowledged {k}"
            );
        }
        assert!(
            current_revision(&mut c).await >= max_acked_rev,
            "round {round}: revision went back"
        );

        // Writers run until the process dies under them.
        let mut writers = Vec::new();
        for w in 0..4u64 {
            let mut c = client.clone();
            writers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0.. {
                    let key = format!("r/{round:02}/{w}/{i:05}");
                    let value = format!("{round}-{w}-{i}");
                    match c.put(key.as_str(), value.as_str(), None).await {
                        Ok(resp) => {
                            mine.push((key, value, resp.header().map_or(0, |h| h.revision())))
                        }
                        Err(_) => break,
                    }
                }
                mine
            }));
        }
        // Kill at a different point of the write stream each round.
        tokio::time::sleep(Duration::from_millis(150 + 37 * (round % 7))).await;
        server.kill();
        for w in writers {
            for (k, v, rev) in w.await.expect("writer task") {
                max_acked_rev = max_acked_rev.max(rev);
                acked.insert(k, v);
            }
        }
    }
    assert!(
        acked.len() > 100,
        "the writers made progress: {} acks",
        acked.len()
    );
    let server = Server::start_in(&dir, port, &[]);
    let mut client = connect(&server).await;
    let found = dump(&mut client, "r/").await;
    for (k, v) in &acked {
        assert_eq!(found.get(k).map(|x| &x.0), Some(v), "lost acknowledged {k}");
    }
}
