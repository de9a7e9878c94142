//! The watch workload: one watch stream per connection on the whole key
//! space, created before the first put; the clients put values stamped
//! with their send time, and each watcher records, per event, the time from
//! that stamp to the event's arrival. After the last put the watchers get
//! [`DRAIN`] to catch up to every successful put.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch as signal};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Streaming;
use tonic::transport::Channel;

use super::report::{Report, WatchOutcome};
use super::tally::{histogram, record, stamp, status_text, Keys};
use super::workload::load;
use super::{BenchError, Spec};
use crate::pb::etcdserverpb::watch_client::WatchClient;
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use crate::pb::mvccpb::event::EventType;

/// How long the watchers may take, after the last put, to see every event.
const DRAIN: Duration = Duration::from_secs(10);
/// How long creating a watch may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(10);

/// When a watcher may stop: once it has `events`, or at `deadline`.
#[derive(Debug, Clone, Copy)]
struct Drain {
    events: u64,
    deadline: Instant,
}

/// What one watcher saw.
struct Seen {
    latency: Histogram<u64>,
    events: u64,
    error: Option<String>,
}

/// Create a watch on the run's keys over `channel`; the stream after its
/// `created` answer, and the sender that keeps the request side open.
async fn create(
    channel: Channel,
    keys: Keys,
) -> Result<(Streaming<WatchResponse>, mpsc::Sender<WatchRequest>), String> {
    let (tx, rx) = mpsc::channel(1);
    let (key, range_end) = keys.range();
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key,
            range_end,
            ..Default::default()
        })),
    };
    tx.send(create)
        .await
        .map_err(|_| "watch request stream closed".to_string())?;
    let mut client = WatchClient::new(channel).max_decoding_message_size(usize::MAX);
    let mut stream = client
        .watch(ReceiverStream::new(rx))
        .await
        .map_err(|s| status_text(&s))?
        .into_inner();
    match stream.message().await {
        Ok(Some(r)) if r.created && !r.canceled => Ok((stream, tx)),
        Ok(Some(r)) => Err(format!(
            "the server did not create the watch: {}",
            r.cancel_reason
        )),
        Ok(None) => Err("the server closed the watch stream".into()),
        Err(s) => Err(status_text(&s)),
    }
}

/// Read events until the drain is met, the stream ends or fails.
async fn watcher(
    mut stream: Streaming<WatchResponse>,
    keys: Keys,
    start: Instant,
    mut drain: signal::Receiver<Option<Drain>>,
) -> Seen {
    let mut seen = Seen {
        latency: histogram(),
        events: 0,
        error: None,
    };
    loop {
        let until = *drain.borrow_and_update();
        if until.is_some_and(|d| seen.events >= d.events) {
            return seen;
        }
        let next = async {
            match until {
                Some(d) => tokio::time::timeout_at(d.deadline.into(), stream.message())
                    .await
                    .ok(),
                None => Some(stream.message().await),
            }
        };
        tokio::select! {
            msg = next => match msg {
                None => return seen, // drain deadline: the report shows the missing events
                Some(Ok(Some(resp))) => {
                    let now = start.elapsed();
                    for ev in &resp.events {
                        let Some(kv) = ev.kv.as_ref() else { continue };
                        if ev.r#type != EventType::Put as i32 || keys.number(&kv.key).is_none() {
                            continue;
                        }
                        if let Some(sent) = stamp(&kv.value).filter(|s| *s <= now) {
                            record(&mut seen.latency, now - sent);
                            seen.events += 1;
                        }
                    }
                    if resp.canceled {
                        seen.error = Some(format!("watch canceled: {}", resp.cancel_reason));
                        return seen;
                    }
                }
                Some(Ok(None)) => {
                    seen.error = Some("the server closed the watch stream".into());
                    return seen;
                }
                Some(Err(s)) => {
                    seen.error = Some(format!("watch: {}", status_text(&s)));
                    return seen;
                }
            },
            changed = drain.changed(), if until.is_none() => {
                if changed.is_err() {
                    return seen;
                }
            }
        }
    }
}

/// Run the watch workload.
pub(super) async fn run(spec: &Spec, channels: &[Channel]) -> Result<Report, BenchError> {
    let keys = Keys::of(spec);
    let start = Instant::now();
    let creates = channels.iter().map(|ch| async move {
        tokio::time::timeout(CREATE_TIMEOUT, create(ch.clone(), keys))
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    });
    let streams = futures::future::try_join_all(creates)
        .await
        .map_err(|e| BenchError::Setup(format!("creating a watch: {e}")))?;
    let (drain_tx, drain_rx) = signal::channel(None);
    let mut senders = Vec::with_capacity(streams.len());
    let watchers: Vec<_> = streams
        .into_iter()
        .map(|(stream, tx)| {
            senders.push(tx);
            tokio::spawn(watcher(stream, keys, start, drain_rx.clone()))
        })
        .collect();
    let (mut tally, elapsed) = load(spec, channels, start).await?;
    let _ = drain_tx.send(Some(Drain {
        events: tally.ok,
        deadline: Instant::now() + DRAIN,
    }));
    let mut latency = histogram();
    let mut events = 0;
    for w in watchers {
        match w.await {
            Ok(seen) => {
                let _ = latency.add(&seen.latency);
                events += seen.events;
                if let Some(e) = seen.error {
                    tally.error(e);
                }
            }
            Err(e) => tally.error(format!("watcher task failed: {e}")),
        }
    }
    drop(senders);
    let puts = tally.ok;
    tally.latency = latency;
    let mut report = Report::new(spec, &tally, elapsed);
    report.watch = Some(WatchOutcome {
        watchers: channels.len() as u64,
        puts,
        events,
    });
    Ok(report)
}
