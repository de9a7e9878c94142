//! The closed loop: `--clients` tasks over the channels, each sending one
//! request and waiting for its answer before the next, until `--total`
//! requests were sent or `--duration` has passed; each tallies its
//! latencies in an HDR histogram, its errors, and what the workload counts
//! (found keys, compare outcomes). A progress bar on stderr follows it.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tonic::transport::Channel;
use tonic::Status;

use super::report::{Report, TxnOutcome};
use super::{watch, BenchError, Spec, Workload};
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::response_op::Response;
use crate::pb::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// A client pauses this long after a failed request, so that a dead
/// endpoint is not hammered in a tight loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Distinct error messages one client keeps; the rest are counted together.
const MAX_ERROR_KINDS: usize = 16;
/// Latencies are recorded in microseconds, up to an hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// The latency histogram every tally uses (microseconds, 3 significant digits).
pub(super) fn histogram() -> Histogram<u64> {
    // Fixed, valid bounds: creation cannot fail; fall back to auto-resizing.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .or_else(|_| Histogram::new(3))
        .unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
}

/// Record `d` into `h`.
pub(super) fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).clamp(1, MAX_LATENCY_US));
}

/// The keys of a run: `key_size` decimal digits, zero-padded.
#[derive(Debug, Clone, Copy)]
pub(super) struct Keys {
    pub size: usize,
    pub space: u64,
}

impl Keys {
    pub fn of(spec: &Spec) -> Keys {
        Keys {
            size: spec.key_size,
            space: spec.key_space,
        }
    }

    /// Key number `k`.
    pub fn key(&self, k: u64) -> Bytes {
        Bytes::from(format!("{k:0width$}", width = self.size))
    }

    /// The first key and the end of the range holding every key.
    pub fn range(&self) -> (Bytes, Bytes) {
        let mut end = BytesMut::from(&self.key(self.space - 1)[..]);
        end.put_u8(0);
        (self.key(0), end.freeze())
    }

    /// The number of a key of this run, if it is one.
    pub fn number(&self, key: &[u8]) -> Option<u64> {
        if key.len() != self.size || !key.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(key)
            .ok()?
            .parse()
            .ok()
            .filter(|k| *k < self.space)
    }
}

/// xorshift64*: enough to spread keys.
pub(super) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng((seed + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

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

/// What one client (or all, merged) saw.
pub(super) struct Tally {
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub cas: TxnOutcome,
    pub found: u64,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            latency: histogram(),
            ok: 0,
            errors: BTreeMap::new(),
            cas: TxnOutcome::default(),
            found: 0,
        }
    }

    pub fn error(&mut self, what: String) {
        let what = if self.errors.len() >= MAX_ERROR_KINDS && !self.errors.contains_key(&what) {
            "(other errors)".to_string()
        } else {
            what
        };
        *self.errors.entry(what).or_default() += 1;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn merge(&mut self, other: Tally) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.ok += other.ok;
        for (what, n) in other.errors {
            *self.errors.entry(what).or_default() += n;
        }
        self.cas.succeeded += other.cas.succeeded;
        self.cas.failed += other.cas.failed;
        self.found += other.found;
    }
}

/// A failed request, as the report names it.
pub(super) fn status_text(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// What the clients of one run share.
pub(super) struct Ctx {
    pub workload: Workload,
    pub keys: Keys,
    pub sequential: bool,
    pub clients: u64,
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

/// One closed-loop client.
struct Client {
    kv: KvClient<Channel>,
    id: u64,
    rng: Rng,
    /// Requests this client sent (txn-cas on own keys).
    sent: u64,
}

impl Client {
    /// The key number of request `n`.
    fn pick(&mut self, ctx: &Ctx, n: u64) -> u64 {
        let space = ctx.keys.space;
        if let Workload::TxnCas { contended: false } = ctx.workload {
            // Client i owns keys i, i + clients, ...: never fewer than one.
            let owned = (space - self.id).div_ceil(ctx.clients);
            let j = if ctx.sequential {
                self.sent
            } else {
                self.rng.next()
            };
            self.sent += 1;
            return self.id + ctx.clients * (j % owned);
        }
        if ctx.sequential {
            n % space
        } else {
            self.rng.next() % space
        }
    }

    async fn one(&mut self, ctx: &Ctx, n: u64) -> Result<Outcome, Status> {
        let k = self.pick(ctx, n);
        let key = ctx.keys.key(k);
        match ctx.workload {
            Workload::Put => {
                let value = ctx.value.clone();
                self.kv.put(put_request(key, value)).await?;
                Ok(Outcome::Done)
            }
            Workload::Watch => {
                let value = watch::stamped(&ctx.value, ctx.start);
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
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Mod as i32,
            key: key.clone(),
            range_end: Bytes::new(),
            target_union: Some(TargetUnion::ModRevision(seen)),
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(put_request(key.clone(), value))),
        }],
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

/// The value every request writes: `val_size` bytes of `a`…`z`.
fn value(size: usize) -> Bytes {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
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
        sequential: spec.sequential_keys,
        clients: spec.clients as u64,
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
                id: i as u64,
                rng: Rng::new(i as u64),
                sent: 0,
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
                                Outcome::Cas(true) => tally.cas.succeeded += 1,
                                Outcome::Cas(false) => tally.cas.failed += 1,
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
        Workload::Range { .. } => report.range = Some(super::RangeOutcome { found: tally.found }),
        Workload::TxnCas { .. } => report.txn = Some(tally.cas),
        Workload::Put | Workload::Watch => {}
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_width_decimals() {
        let keys = Keys {
            size: 8,
            space: 10_000,
        };
        assert_eq!(&keys.key(42)[..], b"00000042");
        assert_eq!(keys.number(b"00009999"), Some(9999));
        assert_eq!(keys.number(b"00010000"), None);
        assert_eq!(keys.number(b"0000042"), None);
        assert_eq!(keys.number(b"0000004x"), None);
        let (from, end) = keys.range();
        assert_eq!(&from[..], b"00000000");
        assert_eq!(&end[..], b"00009999\0");
    }

    #[test]
    fn own_keys_are_disjoint_and_cover_the_space() {
        let ctx = |clients| Ctx {
            workload: Workload::TxnCas { contended: false },
            keys: Keys { size: 2, space: 10 },
            sequential: true,
            clients,
            value: Bytes::new(),
            known: Vec::new(),
            start: Instant::now(),
            limits: Limits {
                issued: AtomicU64::new(0),
                ok: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                total: None,
                deadline: None,
            },
        };
        let ctx = ctx(3);
        let mut seen = BTreeMap::new();
        for id in 0..3 {
            let mut c = Client {
                kv: KvClient::new(Channel::from_static("http://127.0.0.1:1").connect_lazy()),
                id,
                rng: Rng::new(id),
                sent: 0,
            };
            for n in 0..20 {
                let k = c.pick(&ctx, n);
                assert_eq!(k % 3, id, "client {id} got key {k}");
                seen.insert(k, id);
            }
        }
        assert_eq!(seen.len(), 10);
    }
}
