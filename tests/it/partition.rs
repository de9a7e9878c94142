//! A three-member cluster embedded in one process, with the peer network's
//! fault filter cutting the leader off: the majority elects a new leader and
//! keeps writing, the isolated old leader refuses linearizable reads instead
//! of answering stale data, and after the partition heals it catches up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftcd::raft::network::{Fault, FaultFilter, Rpc};
use raftcd::{Config, Node};
use url::Url;

use crate::common;

/// Cuts one member (by id) off from the others, both ways.
struct Partition {
    me: u64,
    isolated: Arc<AtomicU64>,
}

impl FaultFilter for Partition {
    fn outgoing(&self, to: u64, _rpc: Rpc) -> Fault {
        let cut = self.isolated.load(Ordering::SeqCst);
        if cut != 0 && (self.me == cut || to == cut) {
            Fault::Drop
        } else {
            Fault::Deliver
        }
    }
}

fn config(dir: &std::path::Path, name: &str, peer: &Url, cluster: &[(String, Vec<Url>)]) -> Config {
    let mut c = Config::embedded(dir.join(name));
    c.name = name.to_string();
    c.listen_peer_urls = vec![peer.clone()];
    c.initial_advertise_peer_urls = vec![peer.clone()];
    c.initial_cluster = cluster.to_vec();
    c.initial_cluster_token = "partition-test".into();
    c.heartbeat_interval_ms = 50;
    c.election_timeout_ms = 500;
    c
}

async fn serializable(node: &Node, key: &str) -> Option<String> {
    let resp = node
        .client()
        .range(raftcd::pb::etcdserverpb::RangeRequest {
            key: key.as_bytes().to_vec().into(),
            serializable: true,
            ..Default::default()
        })
        .await
        .expect("serializable read");
    resp.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_refuses_stale_reads_and_catches_up() {
    let _machine = common::machine_share();
    let tmp = tempfile::tempdir().expect("tempdir");
    let cluster: Vec<(String, Vec<Url>)> = (1..=3)
        .map(|i| {
            let url =
                Url::parse(&format!("http://127.0.0.1:{}", common::free_port())).expect("url");
            (format!("p{i}"), vec![url])
        })
        .collect();
    let starts = cluster
        .iter()
        .map(|(name, urls)| Node::start(config(tmp.path(), name, &urls[0], &cluster)));
    let nodes: Vec<Node> = futures::future::join_all(starts)
        .await
        .into_iter()
        .map(|r| r.expect("start"))
        .collect();
    let isolated = Arc::new(AtomicU64::new(0));
    for n in &nodes {
        n.set_fault_filter(Some(Arc::new(Partition {
            me: n.identity().member_id,
            isolated: isolated.clone(),
        })));
    }

    // A write through any member; find the leader from the Status API.
    nodes[0].client().put("k", "v1").await.expect("put v1");
    let leader_id = nodes[0].leader().expect("a leader");
    let leader = nodes
        .iter()
        .position(|n| n.identity().member_id == leader_id)
        .expect("leader is a member");
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();

    // Cut the leader off. The majority elects a new leader and writes.
    isolated.store(leader_id, Ordering::SeqCst);
    nodes[others[0]]
        .client()
        .put("k", "v2")
        .await
        .expect("majority write");
    assert_eq!(
        nodes[others[1]]
            .client()
            .get("k")
            .await
            .expect("get")
            .map(|kv| kv.value.to_vec()),
        Some(b"v2".to_vec())
    );

    // The old leader still holds v1 locally, but a linearizable read there
    // fails rather than return it.
    assert_eq!(
        serializable(&nodes[leader], "k").await.as_deref(),
        Some("v1")
    );
    // A write there fails too (and is never applied anywhere).
    let started = Instant::now();
    let client = nodes[leader].client();
    let (read, write) = tokio::join!(client.get("k"), client.put("lost", "x"));
    assert!(read.is_err(), "stale linearizable read: {read:?}");
    assert!(write.is_err(), "write without quorum: {write:?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // Heal: the old leader follows the new one and catches up.
    isolated.store(0, Ordering::SeqCst);
    let got = nodes[leader]
        .client()
        .get("k")
        .await
        .expect("read after heal");
    assert_eq!(got.map(|kv| kv.value.to_vec()), Some(b"v2".to_vec()));
    for n in &nodes {
        assert!(n.client().get("lost").await.expect("get").is_none());
    }
    for n in nodes {
        n.shutdown().await.expect("shutdown");
    }
}
