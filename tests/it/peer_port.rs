//! The peer port under hostile or misbehaving peers, spoken to directly
//! with the peer gRPC client: a deeply nested payload is refused without
//! overflowing the stack, a message over `Config::max_peer_message_bytes`
//! is refused unread, a command only the leader's own lessor may make
//! (`LeaseCheckpoint`) is refused when a peer forwards it while a normal
//! forwarded write succeeds and is validated as a client's would be, and a
//! request from another cluster is refused with `FAILED_PRECONDITION`.
//! After each refusal the member keeps serving.

use std::path::Path;

use raftcd::codec::{decode_wire, encode};
use raftcd::mvcc::command::LeaseRefresh;
use raftcd::mvcc::{Command, MvccError, Reply};
use raftcd::pb::etcdserverpb::PutRequest;
use raftcd::pb::raftcdpb::peer_client::PeerClient;
use raftcd::pb::raftcdpb::PeerRequest;
use raftcd::server::ops::{LeaderOp, LeaderReply, Refusal};
use raftcd::{ApiError, Config, Node};
use tonic::transport::Channel;
use tonic::Code;
use url::Url;

/// A member id no real member has; the peer service only refuses removed
/// members, so a made-up sender is let through to the payload.
const FAKE_PEER: u64 = 42;

/// A single member with a peer listener on a free loopback port.
fn config(dir: &Path) -> (Config, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let mut c = Config::embedded(dir.join("peer-port.raftcd"));
    c.listen_peer_urls = vec![url.clone()];
    c.initial_advertise_peer_urls = vec![url.clone()];
    c.initial_cluster = vec![(c.name.clone(), vec![url])];
    c.initial_cluster_token = "peer-port-test".into();
    (c, port)
}

async fn peer_client(port: u16) -> PeerClient<Channel> {
    PeerClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap()
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

/// A request from the fake peer to `node`, with a raw payload.
fn request(node: &Node, payload: Vec<u8>) -> PeerRequest {
    PeerRequest {
        cluster_id: node.identity().cluster_id,
        from: FAKE_PEER,
        to: node.identity().member_id,
        payload: payload.into(),
        seq: 0,
    }
}

fn put(key: &str, value: &str) -> Command {
    Command::Put(PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    })
}

/// Forward `op` to `node` as the fake peer; the decoded answer.
async fn forward(
    client: &mut PeerClient<Channel>,
    node: &Node,
    op: &LeaderOp,
) -> Result<LeaderReply, Refusal> {
    let reply = client
        .forward(request(node, encode(op)))
        .await
        .expect("a well-formed forward is answered")
        .into_inner();
    decode_wire(&reply.payload).expect("the reply decodes")
}

/// The member still answers its in-process client and a well-formed
/// forwarded write.
async fn still_serves(node: &Node, client: &mut PeerClient<Channel>, tag: &str) {
    let c = node.client();
    let key = format!("after/{tag}");
    c.put(key.clone(), "local").await.unwrap();
    let kv = c.get(key.clone()).await.unwrap().expect("the key just put");
    assert_eq!(&kv.value[..], b"local");

    let fwd_key = format!("forwarded/{tag}");
    match forward(client, node, &LeaderOp::Write(put(&fwd_key, "fwd"))).await {
        Ok(LeaderReply::Write(Reply::Put(_))) => {}
        other => panic!("a forwarded put after {tag}: {other:?}"),
    }
    let kv = c.get(fwd_key).await.unwrap().expect("the forwarded key");
    assert_eq!(&kv.value[..], b"fwd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_peer_message_is_refused_and_the_member_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, port) = config(tmp.path());
    let _machine = crate::common::machine_share();
    let node = Node::start(cfg).await.expect("start");
    let mut client = peer_client(port).await;

    // Version 1, `LeaderOp::Write`, then 200,000 times "variant 7 (what was
    // `Command::Batch`), a sequence of length 1": were the decoded types
    // recursive, this would nest 200,000 deep and overflow the stack.
    let mut payload = vec![1u8, 0];
    for _ in 0..200_000 {
        payload.extend_from_slice(&[7, 1]);
    }
    match client.forward(request(&node, payload)).await {
        Err(status) => {
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains("bad peer message"), "{status:?}");
        }
        // A decodable prefix the leader then refuses is fine too, as long
        // as nothing crashed.
        Ok(reply) => {
            let answer: Result<LeaderReply, Refusal> =
                decode_wire(&reply.into_inner().payload).expect("the reply decodes");
            assert!(answer.is_err(), "a nested batch was accepted: {answer:?}");
        }
    }

    still_serves(&node, &mut client, "nested").await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_peer_message_is_refused_and_the_member_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut cfg, port) = config(tmp.path());
    cfg.max_request_bytes = 1024;
    let limit = cfg.max_peer_message_bytes();
    let _machine = crate::common::machine_share();
    let node = Node::start(cfg).await.expect("start");
    let mut client = peer_client(port).await;

    let mut payload = vec![0u8; limit + 1];
    payload[0] = 1;
    let status = client
        .append_entries(request(&node, payload))
        .await
        .expect_err("a message over the limit is refused");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(status.message().contains("too large"), "{status:?}");

    still_serves(&node, &mut client, "oversized").await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_only_command_from_a_peer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, port) = config(tmp.path());
    let _machine = crate::common::machine_share();
    let node = Node::start(cfg).await.expect("start");
    let mut client = peer_client(port).await;

    let checkpoint = LeaderOp::Write(Command::LeaseCheckpoint {
        refreshes: vec![LeaseRefresh {
            id: 7,
            refreshed_ms: 1,
        }],
    });
    match forward(&mut client, &node, &checkpoint).await {
        Err(Refusal::Api(ApiError::NotAllowed(_))) => {}
        other => panic!("a forwarded lease checkpoint: {other:?}"),
    }

    // The same fake peer's ordinary write goes through...
    match forward(&mut client, &node, &LeaderOp::Write(put("k", "v"))).await {
        Ok(LeaderReply::Write(Reply::Put(_))) => {}
        other => panic!("a forwarded put: {other:?}"),
    }
    let kv = node.client().get("k").await.unwrap().expect("k");
    assert_eq!(&kv.value[..], b"v");

    // ...and is validated as a client's would be.
    match forward(&mut client, &node, &LeaderOp::Write(put("", "v"))).await {
        Err(Refusal::Api(ApiError::Mvcc(MvccError::EmptyKey))) => {}
        other => panic!("a forwarded put with an empty key: {other:?}"),
    }

    still_serves(&node, &mut client, "checkpoint").await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_another_cluster_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, port) = config(tmp.path());
    let _machine = crate::common::machine_share();
    let node = Node::start(cfg).await.expect("start");
    let mut client = peer_client(port).await;

    let mut req = request(&node, encode(&LeaderOp::Write(put("other", "cluster"))));
    req.cluster_id = node.identity().cluster_id.wrapping_add(1);
    let status = client
        .forward(req)
        .await
        .expect_err("another cluster's request is refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(node.client().get("other").await.unwrap().is_none());

    still_serves(&node, &mut client, "other-cluster").await;
    node.shutdown().await.unwrap();
}
