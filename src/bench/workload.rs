//! The closed loop: `--clients` tasks over the channels, each sending one
//! request and waiting for its answer before the next, until `--total`
//! requests were sent or `--duration` has passed; each tallies its
//! latencies in an HDR histogram, its errors, and what the workload counts
//! (found keys, compare outcomes). A progress bar on stderr follows it.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tonic::transport::Channel;
use tonic::Status;

use super::report::{Report, TxnOutcome};
use super::tally::{record, stamped, status_text, value, Keys, Rng, Tally};
use super::{BenchError, RangeOutcome, Spec, Workload};
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::response_op::Response;
use crate::pb::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// A client pauses this long after a failed request, so that a dead
/// endpoint is not hammered in a tight loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// When the clients stop, and how far they are.
pub(super) struct Limits {
    issued: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    total: Option<u64>,
    deadline: Option<Instant>,
}

impl Limits {
    fn new(spec: &Spec, start: Instant) -> Limits {
        Limits {
            issued: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            total: spec.total,
            deadline: spec.duration.map(|d| start + d),
        }
    }

    /// The number of the next request to send, or `None` to stop.
    fn next(&self) -> Option<u64> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        match self.total {
            Some(t) if n >= t => None,
            _ => Some(n),
        }
    }
}

/// What the clients of one run share.
pub(super) struct Ctx {
    pub workload: Workload,
    pub keys: Keys,
    pub value: Bytes,
    /// The last mod revision seen per key (txn-cas).
    pub known: Vec<AtomicI64>,
    /// Time zero of the watch workload's stamps.
    pub start: Instant,
    pub limits: Limits,
}

/// What one request did, beyond succeeding.
enum Outcome {
    Done,
    Found(bool),
    Cas(bool),
}

/// Which key each request of one client uses.
struct Picker {
    id: u64,
    clients: u64,
    space: u64,
    /// txn-cas without --contended: client i owns keys i, i + clients, ...
    own: bool,
    sequential: bool,
    rng: Rng,
    /// Requests this client sent.
    sent: u64,
}

impl Picker {
    fn new(spec: &Spec, id: u64) -> Picker {
        Picker {
            id,
            clients: spec.clients as u64,
            space: spec.key_space,
            own: spec.workload == (Workload::TxnCas { contended: false }),
            sequential: spec.sequential_keys,
            rng: Rng::new(id),
            sent: 0,
        }
    }

    /// The key number of request `n` (numbered over all clients).
    fn pick(&mut self, n: u64) -> u64 {
        let k = if self.own {
            // Never fewer than one: validation keeps --key-space >= --clients.
            let owned = (self.space - self.id).div_ceil(self.clients);
            let j = if self.sequential {
                self.sent
            } else {
                self.rng.next()
            };
            self.id + self.clients * (j % owned)
        } else if self.sequential {
            n % self.space
        } else {
            self.rng.next() % self.space
        };
        self.sent += 1;
        k
    }
}

/// One closed-loop client.
struct Client {
    kv: KvClient<Channel>,
    picker: Picker,
}

impl Client {
    async fn one(&mut self, ctx: &Ctx, n: u64) -> Result<Outcome, Status> {
        let k = self.picker.pick(n);
        let key = ctx.keys.key(k);
        match ctx.workload {
            Workload::Put => {
                let value = ctx.value.clone();
                self.kv.put(put_request(key, value)).await?;
                Ok(Outcome::Done)
            }
            Workload::Watch => {
                let value = stamped(&ctx.value, ctx.start);
                self.kv.put(put_request(key, value)).await?;
                Ok(Outcome::Done)
            }
            Workload::Range { serializable } => {
                let req = RangeRequest {
                    key,
                    serializable,
                    ..Default::default()
                };
                let resp = self.kv.range(req).await?.into_inner();
                Ok(Outcome::Found(!resp.kvs.is_empty()))
            }
            Workload::TxnCas { .. } => {
                let slot = usize::try_from(k)
                    .ok()
                    .and_then(|k| ctx.known.get(k))
                    .ok_or_else(|| Status::internal("key outside the revision table"))?;
                let txn = cas_request(key, ctx.value.clone(), slot.load(Ordering::Relaxed));
                let resp = self.kv.txn(txn).await?.into_inner();
                if resp.succeeded {
                    if let Some(h) = &resp.header {
                        slot.store(h.revision, Ordering::Relaxed);
                    }
                } else {
                    let seen = resp
                        .responses
                        .iter()
                        .find_map(|r| match &r.response {
                            Some(Response::ResponseRange(g)) => {
                                Some(g.kvs.first().map_or(0, |kv| kv.mod_revision))
                            }
                            _ => None,
                        })
                        .unwrap_or(0);
                    slot.store(seen, Ordering::Relaxed);
                }
                Ok(Outcome::Cas(resp.succeeded))
            }
        }
    }
}

fn put_request(key: Bytes, value: Bytes) -> PutRequest {
    PutRequest {
        key,
        value,
        ..Default::default()
    }
}

/// If the key's mod revision is `seen`, put `value`; else read the key.
fn cas_request(key: Bytes, value: Bytes, seen: i64) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare::mod_revision_is(key.clone(), seen)],
        success: vec![RequestOp::put(key.clone(), value, 0)],
        failure: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key,
                ..Default::default()
            })),
        }],
    }
}

/// The current mod revision of every key of the run (0: absent), read in
/// keys-only pages of 1,000.
async fn known_revisions(kv: &mut KvClient<Channel>, keys: Keys) -> Result<Vec<AtomicI64>, Status> {
    let len = usize::try_from(keys.space)
        .map_err(|_| Status::invalid_argument("--key-space too large"))?;
    let known: Vec<AtomicI64> = (0..len).map(|_| AtomicI64::new(0)).collect();
    let (mut from, end) = keys.range();
    loop {
        let req = RangeRequest {
            key: from.clone(),
            range_end: end.clone(),
            limit: 1000,
            keys_only: true,
            ..Default::default()
        };
        let resp = kv.range(req).await?.into_inner();
        for kv in &resp.kvs {
            let slot = keys
                .number(&kv.key)
                .and_then(|k| usize::try_from(k).ok())
                .and_then(|k| known.get(k));
            if let Some(slot) = slot {
                slot.store(kv.mod_revision, Ordering::Relaxed);
            }
        }
        match resp.kvs.last() {
            Some(last) if resp.more => {
                let mut next = BytesMut::from(&last.key[..]);
                next.put_u8(0);
                from = next.freeze();
            }
            _ => return Ok(known),
        }
    }
}

/// The progress bar: requests done of `--total`, or time of `--duration`.
fn progress(spec: &Spec) -> ProgressBar {
    if !spec.progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (len, template) = match (spec.total, spec.duration) {
        (Some(t), _) => (t, "{elapsed_precise} [{wide_bar}] {pos}/{len} {msg}"),
        (None, d) => (
            d.map_or(1, |d| d.as_millis() as u64),
            "{elapsed_precise} [{wide_bar}] {msg}",
        ),
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Run the clients of `spec` over `channels` until the limits; the merged
/// tally and the wall time.
pub(super) async fn load(
    spec: &Spec,
    channels: &[Channel],
    start: Instant,
) -> Result<(Tally, Duration), BenchError> {
    let keys = Keys::of(spec);
    let known = match spec.workload {
        Workload::TxnCas { .. } => {
            let mut kv = KvClient::new(channels[0].clone());
            known_revisions(&mut kv, keys).await.map_err(|s| {
                BenchError::Setup(format!("reading the keys' revisions: {}", status_text(&s)))
            })?
        }
        _ => Vec::new(),
    };
    let ctx = Arc::new(Ctx {
        workload: spec.workload,
        keys,
        value: value(spec.val_size),
        known,
        start,
        limits: Limits::new(spec, Instant::now()),
    });
    let bar = progress(spec);
    let ticker = {
        let (ctx, bar, by_time) = (Arc::clone(&ctx), bar.clone(), spec.total.is_none());
        let t0 = Instant::now();
        tokio::spawn(async move {
            loop {
                let ok = ctx.limits.ok.load(Ordering::Relaxed);
                let failed = ctx.limits.failed.load(Ordering::Relaxed);
                bar.set_position(if by_time {
                    t0.elapsed().as_millis() as u64
                } else {
                    ok + failed
                });
                bar.set_message(format!("{ok} ok, {failed} errors"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..spec.clients)
        .map(|i| {
            let ctx = Arc::clone(&ctx);
            let mut client = Client {
                kv: KvClient::new(channels[i % channels.len()].clone())
                    .max_decoding_message_size(usize::MAX),
                picker: Picker::new(spec, i as u64),
            };
            tokio::spawn(async move {
                let mut tally = Tally::new();
                while let Some(n) = ctx.limits.next() {
                    let sent = Instant::now();
                    match client.one(&ctx, n).await {
                        Ok(outcome) => {
                            record(&mut tally.latency, sent.elapsed());
                            tally.ok += 1;
                            match outcome {
                                Outcome::Done => {}
                                Outcome::Found(f) => tally.found += u64::from(f),
                                Outcome::Cas(true) => tally.cas_succeeded += 1,
                                Outcome::Cas(false) => tally.cas_failed += 1,
                            }
                            ctx.limits.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(s) => {
                            tracing::debug!(client = i, error = %s, "bench: request failed");
                            tally.error(status_text(&s));
                            ctx.limits.failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(ERROR_PAUSE).await;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut all = Tally::new();
    for t in tasks {
        match t.await {
            Ok(tally) => all.merge(tally),
            Err(e) => all.error(format!("client task failed: {e}")),
        }
    }
    let elapsed = t0.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    Ok((all, elapsed))
}

/// Run a put, range or txn-cas workload.
pub(super) async fn run(spec: &Spec, channels: &[Channel]) -> Result<Report, BenchError> {
    let (tally, elapsed) = load(spec, channels, Instant::now()).await?;
    let mut report = Report::new(spec, &tally, elapsed);
    match spec.workload {
        Workload::Range { .. } => report.range = Some(RangeOutcome { found: tally.found }),
        Workload::TxnCas { .. } => {
            report.txn = Some(TxnOutcome {
                succeeded: tally.cas_succeeded,
                failed: tally.cas_failed,
            })
        }
        Workload::Put | Workload::Watch => {}
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn picker(id: u64, workload: Workload, sequential: bool) -> Picker {
        let spec = Spec {
            workload,
            endpoints: vec!["127.0.0.1:2379".into()],
            tls: None,
            conns: 1,
            clients: 3,
            total: None,
            duration: None,
            key_size: 2,
            val_size: 8,
            key_space: 10,
            sequential_keys: sequential,
            progress: false,
        };
        Picker::new(&spec, id)
    }

    #[test]
    fn own_keys_are_disjoint_and_cover_the_space() {
        for sequential in [true, false] {
            let mut seen = BTreeMap::new();
            for id in 0..3 {
                let mut p = picker(id, Workload::TxnCas { contended: false }, sequential);
                for n in 0..200 {
                    let k = p.pick(n);
                    assert!(k < 10 && k % 3 == id, "client {id} got key {k}");
                    seen.insert(k, id);
                }
            }
            assert_eq!(seen.len(), 10, "sequential {sequential}");
        }
    }

    #[test]
    fn shared_keys_are_sequential_or_spread() {
        let mut p = picker(1, Workload::Put, true);
        let got: Vec<u64> = [0, 1, 9, 10, 23].iter().map(|n| p.pick(*n)).collect();
        assert_eq!(got, [0, 1, 9, 0, 3]);
        let mut p = picker(1, Workload::TxnCas { contended: true }, false);
        let mut hits = [0u32; 10];
        for n in 0..1000 {
            hits[p.pick(n) as usize] += 1;
        }
        assert!(hits.iter().all(|h| *h > 50), "{hits:?}");
    }
}
