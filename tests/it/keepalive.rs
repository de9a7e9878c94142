//! Clients' HTTP/2 keepalive pings never get their connection closed, and
//! idle connections stay open.
//!
//! Two tonic channels talk to one raftcd through a connector that counts
//! connections and the bytes the server sends: one pings every 500 ms (far
//! more often than etcd's grpc-go server tolerates), the other stays silent.
//! After ~6 s idle both still answer on their first and only connection, and
//! the pinging one has received the server's ping acks meanwhile.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use raftcd::pb::etcdserverpb::kv_client::KvClient;
use raftcd::pb::etcdserverpb::RangeRequest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::common::Server;

/// Connections opened and bytes received through one connector.
#[derive(Clone, Default)]
struct Counters {
    connects: Arc<AtomicUsize>,
    received: Arc<AtomicU64>,
}

/// A TCP stream counting the bytes read from it.
struct Counted {
    inner: TcpStream,
    received: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.received.fetch_add(n as u64, Ordering::SeqCst);
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn connect(endpoint: Endpoint, port: u16, counters: Counters) -> Channel {
    let connector = tower::service_fn(move |_: Uri| {
        let counters = counters.clone();
        async move {
            let inner = TcpStream::connect(("127.0.0.1", port)).await?;
            inner.set_nodelay(true)?;
            counters.connects.fetch_add(1, Ordering::SeqCst);
            Ok::<_, io::Error>(TokioIo::new(Counted {
                inner,
                received: counters.received.clone(),
            }))
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .expect("connect")
}

async fn get(kv: &mut KvClient<Channel>, key: &'static str) -> Vec<u8> {
    let r = kv
        .range(RangeRequest {
            key: Bytes::from_static(key.as_bytes()),
            ..Default::default()
        })
        .await
        .expect("range on the same channel")
        .into_inner();
    r.kvs
        .first()
        .map(|kv| kv.value.to_vec())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_pings_and_idle_connections_stay_open() {
    let server = Server::start();
    let out = server.etcdctl(&["put", "k", "v"]);
    assert_eq!(out.stdout, "OK\n", "{out:?}");

    let pinging = Counters::default();
    let silent = Counters::default();
    let ka_endpoint = Endpoint::from_shared(server.url())
        .unwrap()
        .http2_keep_alive_interval(Duration::from_millis(500))
        .keep_alive_while_idle(true)
        .keep_alive_timeout(Duration::from_secs(2));
    let mut ka = KvClient::new(connect(ka_endpoint, server.port, pinging.clone()).await);
    let plain_endpoint = Endpoint::from_shared(server.url()).unwrap();
    let mut plain = KvClient::new(connect(plain_endpoint, server.port, silent.clone()).await);

    assert_eq!(get(&mut ka, "k").await, b"v");
    assert_eq!(get(&mut plain, "k").await, b"v");
    let received_before = pinging.received.load(Ordering::SeqCst);

    tokio::time::sleep(Duration::from_secs(6)).await;

    // The server acked the pings (a PING ack frame is 17 bytes; ~12 pings
    // were sent): had it not, the client would have dropped the connection
    // after the 2 s keepalive timeout and opened a new one.
    let acked = pinging.received.load(Ordering::SeqCst) - received_before;
    assert!(
        acked >= 17 * 6,
        "only {acked} bytes received while idle: no ping acks?"
    );

    assert_eq!(get(&mut ka, "k").await, b"v");
    assert_eq!(get(&mut plain, "k").await, b"v");
    assert_eq!(
        pinging.connects.load(Ordering::SeqCst),
        1,
        "the pinging channel reconnected"
    );
    assert_eq!(
        silent.connects.load(Ordering::SeqCst),
        1,
        "the idle channel reconnected"
    );

    // etcdctl with its own keepalive settings works as usual.
    let out = server.etcdctl(&["--keepalive-time=1s", "--keepalive-timeout=2s", "get", "k"]);
    assert_eq!((out.stdout.as_str(), out.code), ("k\nv\n", 0), "{out:?}");
}
