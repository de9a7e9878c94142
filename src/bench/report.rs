//! What a run measured, as JSON (`-w json`) or as a table for people.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::tally::Tally;
use super::{Spec, Workload};

/// Latency in milliseconds. Percentiles come from an HDR histogram
/// (microsecond samples, 3 significant digits).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples behind the figures (requests; for `watch`, events).
    pub samples: u64,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    pub max: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1e3;
        Latency {
            samples: h.len(),
            min: ms(h.min()),
            mean: h.mean() / 1e3,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// How many requests failed with one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCount {
    pub error: String,
    pub count: u64,
}

/// `txn-cas`: the answers' `succeeded` flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOutcome {
    /// Compares that held: the put was done.
    pub succeeded: u64,
    /// Compares that failed (another client wrote the key first).
    pub failed: u64,
}

/// `range`: requests that found their key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeOutcome {
    pub found: u64,
}

/// `watch`: watch streams, puts done, events the watchers got (all of
/// them: `puts * watchers` when none was missed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchOutcome {
    pub watchers: u64,
    pub puts: u64,
    pub events: u64,
}

/// One run's results (`-w json` prints exactly this).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `put`, `range`, `txn-cas` or `watch`.
    pub workload: String,
    /// `range`: `l` (linearizable) or `s` (serializable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// `txn-cas`: whether clients shared keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contended: Option<bool>,
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub clients: usize,
    pub key_size: usize,
    pub val_size: usize,
    pub key_space: u64,
    /// Requests that succeeded (for `watch`: puts).
    pub count: u64,
    /// Requests that failed (and watch streams that broke).
    pub errors: u64,
    /// The errors by message, most frequent first.
    pub error_counts: Vec<ErrorCount>,
    /// Wall time of the load, seconds.
    pub elapsed_secs: f64,
    /// Successful requests per second.
    pub throughput: f64,
    /// Request latency (for `watch`: from sending the put to the event).
    pub latency_ms: Latency,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<RangeOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<TxnOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<WatchOutcome>,
}

impl Report {
    pub(super) fn new(spec: &Spec, tally: &Tally, elapsed: Duration) -> Report {
        let mut error_counts: Vec<ErrorCount> = tally
            .errors
            .iter()
            .map(|(error, count)| ErrorCount {
                error: error.clone(),
                count: *count,
            })
            .collect();
        error_counts.sort_by(|a, b| b.count.cmp(&a.count).then(a.error.cmp(&b.error)));
        let secs = elapsed.as_secs_f64();
        Report {
            workload: spec.workload.name().into(),
            consistency: match spec.workload {
                Workload::Range { serializable } => {
                    Some(if serializable { "s" } else { "l" }.into())
                }
                _ => None,
            },
            contended: match spec.workload {
                Workload::TxnCas { contended } => Some(contended),
                _ => None,
            },
            endpoints: spec.endpoints.clone(),
            conns: spec.conns,
            clients: spec.clients,
            key_size: spec.key_size,
            val_size: spec.val_size,
            key_space: spec.key_space,
            count: tally.ok,
            errors: tally.error_count(),
            error_counts,
            elapsed_secs: secs,
            throughput: if secs > 0.0 {
                tally.ok as f64 / secs
            } else {
                0.0
            },
            latency_ms: Latency::of(&tally.latency),
            range: None,
            txn: None,
            watch: None,
        }
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report for people.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let what = match (&self.consistency, self.contended) {
            (Some(c), _) => format!("{} --consistency {c}", self.workload),
            (_, Some(true)) => format!("{} --contended", self.workload),
            _ => self.workload.clone(),
        };
        let _ = writeln!(s, "raftcd bench {what}");
        let rows: Vec<(&str, String)> = vec![
            ("endpoints", self.endpoints.join(",")),
            (
                "conns / clients",
                format!("{} / {}", self.conns, self.clients),
            ),
            (
                "keys",
                format!(
                    "{} of {} B, values of {} B",
                    self.key_space, self.key_size, self.val_size
                ),
            ),
            (
                "requests",
                format!("{} ok, {} failed", self.count, self.errors),
            ),
            ("elapsed", format!("{:.3} s", self.elapsed_secs)),
            ("throughput", format!("{:.1} requests/s", self.throughput)),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<16} {v}");
        }
        if let Some(r) = self.range {
            let _ = writeln!(s, "  {:<16} {} of {}", "keys found", r.found, self.count);
        }
        if let Some(t) = self.txn {
            let _ = writeln!(
                s,
                "  {:<16} {} succeeded, {} failed",
                "compares", t.succeeded, t.failed
            );
        }
        if let Some(w) = self.watch {
            let _ = writeln!(
                s,
                "  {:<16} {} of {} ({} puts x {} watchers)",
                "events",
                w.events,
                w.puts * w.watchers,
                w.puts,
                w.watchers
            );
        }
        let l = &self.latency_ms;
        let label = if self.watch.is_some() {
            "put to event latency (ms)"
        } else {
            "latency (ms)"
        };
        let _ = writeln!(s, "\n  {label}, {} samples", l.samples);
        let heads = ["min", "mean", "p50", "p90", "p99", "p99.9", "max"];
        let vals = [l.min, l.mean, l.p50, l.p90, l.p99, l.p99_9, l.max];
        let _ = writeln!(
            s,
            "  {}",
            heads.map(|h| format!("{h:>10}")).concat().trim_end()
        );
        let _ = writeln!(
            s,
            "  {}",
            vals.map(|v| format!("{v:>10.3}")).concat().trim_end()
        );
        if !self.error_counts.is_empty() {
            let _ = writeln!(s, "\n  errors");
            for e in &self.error_counts {
                let _ = writeln!(s, "  {:>10}  {}", e.count, e.error);
            }
        }
        s
    }
}
