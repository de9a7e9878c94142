//! The Watch service's wire behaviour over real gRPC against the real
//! raftcd binary, checked against what etcd 3.4.23 answers to the same
//! requests: watch ids, duplicate ids, empty ranges, cancel, progress
//! requests, filters, prev_kv, future start revisions, periodic progress
//! notifications, fragmentation and compacted start revisions.
//! `RAFTCD_TEST_ORACLE=etcd` runs the same assertions against real etcd.

use std::time::Duration;

use bytes::Bytes;
use raftcd::pb::etcdserverpb::kv_client::KvClient;
use raftcd::pb::etcdserverpb::watch_client::WatchClient;
use raftcd::pb::etcdserverpb::watch_create_request::FilterType;
use raftcd::pb::etcdserverpb::watch_request::RequestUnion;
use raftcd::pb::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, WatchCancelRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::target::Target;

struct Stream {
    tx: mpsc::Sender<WatchRequest>,
    /// The response stream, once the server sent its headers (etcd's gRPC
    /// server sends them with the first response only, so the call is
    /// awaited in a task while requests go out).
    rx: Option<Streaming<WatchResponse>>,
    opening: Option<tokio::task::JoinHandle<Streaming<WatchResponse>>>,
}

impl Stream {
    async fn open(ch: &Channel) -> Stream {
        let (tx, req_rx) = mpsc::channel(16);
        let mut client = WatchClient::new(ch.clone()).max_decoding_message_size(64 << 20);
        let opening = tokio::spawn(async move {
            client
                .watch(ReceiverStream::new(req_rx))
                .await
                .expect("watch")
                .into_inner()
        });
        Stream {
            tx,
            rx: None,
            opening: Some(opening),
        }
    }

    async fn responses(&mut self) -> &mut Streaming<WatchResponse> {
        if let Some(opening) = self.opening.take() {
            let rx = tokio::time::timeout(Duration::from_secs(20), opening)
                .await
                .expect("watch call answered in time")
                .expect("watch call");
            self.rx = Some(rx);
        }
        self.rx.as_mut().expect("response stream")
    }

    async fn send(&self, r: RequestUnion) {
        self.tx
            .send(WatchRequest {
                request_union: Some(r),
            })
            .await
            .expect("send");
    }

    async fn create(&self, c: WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(c)).await;
    }

    async fn next(&mut self) -> WatchResponse {
        tokio::time::timeout(Duration::from_secs(20), self.responses().await.message())
            .await
            .expect("response in time")
            .expect("stream error")
            .expect("stream ended")
    }

    /// Nothing arrives for a while.
    async fn assert_quiet(&mut self, ms: u64) {
        let rx = self.responses().await;
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(ms), rx.message()).await {
            panic!("unexpected response: {m:?}");
        }
    }
}

fn create(key: &str) -> WatchCreateRequest {
    WatchCreateRequest {
        key: Bytes::from(key.to_string()),
        ..Default::default()
    }
}

async fn channel(server: &Target) -> Channel {
    Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

async fn put(ch: &Channel, k: &str, v: &str) -> i64 {
    let r = KvClient::new(ch.clone())
        .put(PutRequest {
            key: Bytes::from(k.to_string()),
            value: Bytes::from(v.to_string()),
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner();
    r.header.expect("header").revision
}

async fn current(ch: &Channel) -> raftcd::pb::etcdserverpb::ResponseHeader {
    KvClient::new(ch.clone())
        .range(RangeRequest {
            key: Bytes::from_static(b"none"),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner()
        .header
        .expect("header")
}

#[tokio::test]
async fn ids_cancel_progress_and_errors_like_etcd() {
    let server = Target::start(&[]);
    let ch = channel(&server).await;
    put(&ch, "x", "1").await;
    let head = current(&ch).await;
    let rev = head.revision;
    let mut s = Stream::open(&ch).await;

    // Server-chosen ids count from 0.
    s.create(create("p")).await;
    let r = s.next().await;
    assert!(r.created && !r.canceled, "{r:?}");
    assert_eq!(r.watch_id, 0);
    let h = r.header.expect("header");
    assert_eq!(
        (h.cluster_id, h.member_id, h.revision),
        (head.cluster_id, head.member_id, rev)
    );
    assert!(h.raft_term > 0);

    // A progress request: watch id -1, the current revision.
    s.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    let r = s.next().await;
    assert_eq!(r.watch_id, -1);
    assert!(!r.created && !r.canceled && r.events.is_empty());
    assert_eq!(r.header.expect("header").revision, rev);

    // Client-chosen id; the same id again is refused with id -1.
    s.create(WatchCreateRequest {
        watch_id: 7,
        ..create("q")
    })
    .await;
    let r = s.next().await;
    assert!(r.created && !r.canceled && r.watch_id == 7, "{r:?}");
    s.create(WatchCreateRequest {
        watch_id: 7,
        ..create("q")
    })
    .await;
    let r = s.next().await;
    assert!(r.created && r.canceled && r.watch_id == -1, "{r:?}");
    assert_eq!(
        r.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    // The server's counter goes on from where it was; ids in use are refused.
    s.create(create("q")).await;
    assert_eq!(s.next().await.watch_id, 1);
    s.create(WatchCreateRequest {
        watch_id: 1,
        ..create("q")
    })
    .await;
    let r = s.next().await;
    assert_eq!((r.watch_id, r.canceled), (-1, true));

    // An empty range.
    s.create(WatchCreateRequest {
        range_end: Bytes::from_static(b"a"),
        ..create("b")
    })
    .await;
    let r = s.next().await;
    assert!(r.created && r.canceled && r.watch_id == -1, "{r:?}");
    assert_eq!(r.cancel_reason, "mvcc: watcher range is empty");

    // Cancel: answered for a known id, silently ignored for an unknown one.
    s.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: 7,
    }))
    .await;
    let r = s.next().await;
    assert!(r.canceled && !r.created && r.watch_id == 7, "{r:?}");
    s.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: 99,
    }))
    .await;
    s.assert_quiet(300).await;
    // Canceled watchers get nothing more; the others go on.
    put(&ch, "q", "v").await;
    let r = s.next().await;
    assert_eq!(r.watch_id, 1);
    assert_eq!(r.events.len(), 1);
    s.assert_quiet(300).await;

    // An empty key watches "\0"; with range_end "\0", every key.
    s.create(WatchCreateRequest {
        range_end: Bytes::from_static(b"\0"),
        ..create("")
    })
    .await;
    let r = s.next().await;
    assert_eq!(r.watch_id, 2);
    let at = put(&ch, "zzz", "1").await;
    let r = s.next().await;
    assert_eq!(r.watch_id, 2);
    assert_eq!(r.header.expect("header").revision, at);
    assert_eq!(r.events[0].kv.as_ref().expect("kv").key, "zzz");
}

#[tokio::test]
async fn filters_prev_kv_and_future_start() {
    let server = Target::start(&[]);
    let ch = channel(&server).await;
    let rev = put(&ch, "f", "0").await;
    let mut s = Stream::open(&ch).await;
    // Starting two revisions ahead, no puts, with prev_kv.
    s.create(WatchCreateRequest {
        start_revision: rev + 2,
        filters: vec![FilterType::Noput as i32],
        prev_kv: true,
        ..create("f")
    })
    .await;
    assert!(s.next().await.created);
    // And one without deletes, without prev_kv, from the next revision.
    s.create(WatchCreateRequest {
        filters: vec![FilterType::Nodelete as i32],
        ..create("f")
    })
    .await;
    assert!(s.next().await.created);
    put(&ch, "f", "1").await; // rev+1
    put(&ch, "f", "2").await; // rev+2
    let del = KvClient::new(ch.clone())
        .delete_range(DeleteRangeRequest {
            key: Bytes::from_static(b"f"),
            ..Default::default()
        })
        .await
        .expect("delete")
        .into_inner()
        .header
        .expect("header")
        .revision;
    let mut by_id: std::collections::BTreeMap<i64, Vec<WatchResponse>> = Default::default();
    for _ in 0..3 {
        let r = s.next().await;
        by_id.entry(r.watch_id).or_default().push(r);
    }
    s.assert_quiet(300).await;
    let only_deletes = &by_id[&0];
    assert_eq!(only_deletes.len(), 1);
    let ev = &only_deletes[0].events[0];
    assert_eq!(ev.r#type, 1);
    let kv = ev.kv.as_ref().expect("kv");
    assert_eq!(
        (kv.key.as_ref(), kv.mod_revision, kv.version),
        (&b"f"[..], del, 0)
    );
    assert_eq!(ev.prev_kv.as_ref().expect("prev_kv").value, "2");
    let only_puts = &by_id[&1];
    assert_eq!(only_puts.len(), 2);
    for (r, v) in only_puts.iter().zip(["1", "2"]) {
        assert_eq!(r.events[0].kv.as_ref().expect("kv").value, v);
        assert!(r.events[0].prev_kv.is_none(), "prev_kv only when asked for");
    }
}

#[tokio::test]
async fn progress_notify_goes_to_idle_watchers() {
    let server = Target::start(&["--experimental-watch-progress-notify-interval", "1s"]);
    let ch = channel(&server).await;
    let rev = put(&ch, "a", "1").await;
    let mut s = Stream::open(&ch).await;
    s.create(WatchCreateRequest {
        progress_notify: true,
        ..create("a")
    })
    .await;
    assert!(s.next().await.created);
    s.create(create("b")).await; // no progress_notify
    assert!(s.next().await.created);
    for _ in 0..2 {
        let r = s.next().await;
        assert_eq!(r.watch_id, 0, "{r:?}");
        assert!(r.events.is_empty() && !r.created && !r.canceled);
        assert_eq!(r.header.expect("header").revision, rev);
    }
    // After a write the notification carries the new revision.
    let rev = put(&ch, "other", "1").await;
    let r = s.next().await;
    assert_eq!((r.watch_id, r.header.expect("header").revision), (0, rev));
}

#[tokio::test]
async fn fragments_large_responses_when_asked() {
    let server = Target::start(&["--max-request-bytes", "1024"]);
    let ch = channel(&server).await;
    let value = "v".repeat(900);
    let mut kv = KvClient::new(ch.clone());
    for i in 0..600 {
        kv.put(PutRequest {
            key: Bytes::from(format!("fr/{i:04}")),
            value: Bytes::from(value.clone()),
            ..Default::default()
        })
        .await
        .expect("put");
    }
    let mut s = Stream::open(&ch).await;
    let prefix = |fragment| WatchCreateRequest {
        range_end: Bytes::from_static(b"fr0"),
        prev_kv: true,
        fragment,
        ..create("fr/")
    };
    s.create(prefix(true)).await;
    assert!(s.next().await.created);
    s.create(prefix(false)).await;
    assert!(s.next().await.created);
    kv.delete_range(DeleteRangeRequest {
        key: Bytes::from_static(b"fr/"),
        range_end: Bytes::from_static(b"fr0"),
        ..Default::default()
    })
    .await
    .expect("delete");
    // The limit is --max-request-bytes plus gRPC's 512 KiB overhead, as in
    // etcd: ~580 KB of events make two fragments.
    let limit = 1024 + 512 * 1024;
    let mut parts = Vec::new();
    let mut whole = None;
    while whole.is_none() || parts.last().is_none_or(|p: &WatchResponse| p.fragment) {
        let r = s.next().await;
        if r.watch_id == 0 {
            parts.push(r);
        } else {
            whole = Some(r);
        }
    }
    assert_eq!(parts.len(), 2, "fragments");
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p.fragment, i + 1 < parts.len());
        assert!(prost::Message::encoded_len(p) < limit);
    }
    let events: Vec<_> = parts.iter().flat_map(|p| p.events.clone()).collect();
    let whole = whole.expect("unfragmented response");
    assert!(!whole.fragment);
    assert_eq!(whole.events.len(), 600);
    assert_eq!(events, whole.events);
    assert!(events.iter().all(|e| e.prev_kv.is_some()));
}

#[tokio::test]
async fn compacted_start_revision_is_canceled() {
    let server = Target::start(&[]);
    let ch = channel(&server).await;
    for i in 0..5 {
        put(&ch, "c", &i.to_string()).await;
    }
    KvClient::new(ch.clone())
        .compact(CompactionRequest {
            revision: 4,
            physical: false,
        })
        .await
        .expect("compact");
    let head = current(&ch).await;
    let mut s = Stream::open(&ch).await;
    s.create(WatchCreateRequest {
        start_revision: 3,
        ..create("c")
    })
    .await;
    let r = s.next().await;
    assert!(r.created && !r.canceled && r.watch_id == 0, "{r:?}");
    let r = s.next().await;
    assert!(r.canceled && !r.created && r.watch_id == 0, "{r:?}");
    assert_eq!(r.compact_revision, 4);
    assert!(r.events.is_empty());
    // etcd sends this one with revision 0 in the header.
    let h = r.header.expect("header");
    assert_eq!(
        (h.cluster_id, h.member_id, h.revision),
        (head.cluster_id, head.member_id, 0)
    );
    // The compaction revision itself can still be watched.
    s.create(WatchCreateRequest {
        start_revision: 4,
        ..create("c")
    })
    .await;
    assert!(s.next().await.created);
    let r = s.next().await;
    let revs: Vec<i64> = r
        .events
        .iter()
        .map(|e| e.kv.as_ref().expect("kv").mod_revision)
        .collect();
    assert_eq!(revs, vec![4, 5, 6]);
    assert_eq!(r.header.expect("header").revision, 6);
}
