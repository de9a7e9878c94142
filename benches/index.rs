//! The key index's lookup cost: nanoseconds per single-key get
//! (`View::range`) and per applied put on a store of 10,000 keys (8-byte
//! keys, 256-byte values, like `scripts/bench`'s load, one view per put),
//! and the bare search of an `OrdMap` with the same keys as `Bytes` (what
//! the index's keys were before) and as `IndexKey` (their first bytes in
//! place, `src/mvcc/key.rs`).
//!
//! `cargo bench --bench index -- [--keys N] [--lookups N]`. Prints a
//! Markdown table for docs/benchmarks.md.

use std::hint::black_box;
use std::ops::Bound;
use std::time::Instant;

use bytes::Bytes;
use imbl::OrdMap;
use raftcd::mvcc::apply::apply;
use raftcd::mvcc::key::IndexKey;
use raftcd::mvcc::{Command, View};
use raftcd::pb::etcdserverpb::{PutRequest, RangeRequest};

fn key(i: u64) -> Bytes {
    Bytes::from(format!("{i:08}"))
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn per_op(ops: u64, run: impl FnOnce()) -> f64 {
    let start = Instant::now();
    run();
    start.elapsed().as_nanos() as f64 / ops as f64
}

fn main() {
    let keys = arg("--keys", 10_000).max(1);
    let lookups = arg("--lookups", 1_000_000).max(1);
    let put = |k: Bytes| {
        Command::Put(PutRequest {
            key: k,
            value: Bytes::from(vec![b'v'; 256]),
            ..Default::default()
        })
    };
    // Keys inserted in a scattered order, as a load fills them.
    let mut view = View::default();
    let mut plain: OrdMap<Bytes, u64> = OrdMap::new();
    let mut headed: OrdMap<IndexKey, u64> = OrdMap::new();
    for i in 0..keys {
        let k = key(i.wrapping_mul(7919) % keys);
        view = apply(&view, &put(k.clone())).view;
        plain.insert(k.clone(), i);
        headed.insert(IndexKey::new(k), i);
    }
    let wanted: Vec<Bytes> = (0..lookups)
        .map(|i| key(i.wrapping_mul(2_654_435_761) % keys))
        .collect();
    println!(
        "| round | search, `OrdMap<Bytes, _>` | search, `OrdMap<IndexKey, _>` | get, `View::range` | applied put |"
    );
    println!("|---|---:|---:|---:|---:|");
    for round in 1..=3 {
        let get = per_op(lookups, || {
            for k in &wanted {
                let req = RangeRequest {
                    key: k.clone(),
                    ..Default::default()
                };
                black_box(view.range(&req, 0).map(|r| r.kvs.len()).unwrap_or(0));
            }
        });
        let search = per_op(lookups, || {
            for k in &wanted {
                let k: &[u8] = k;
                let found = plain.range::<_, [u8]>((Bound::Included(k), Bound::Included(k)));
                black_box(found.count());
            }
        });
        let headed_search = per_op(lookups, || {
            for k in &wanted {
                let probe = IndexKey::probe(k);
                let found = headed.range((Bound::Included(probe.clone()), Bound::Included(probe)));
                black_box(found.count());
            }
        });
        let puts = (lookups / 10).max(1);
        let mut v = view.clone();
        let put_ns = per_op(puts, || {
            for k in wanted.iter().take(puts as usize) {
                v = apply(&v, &put(k.clone())).view;
            }
        });
        println!(
            "| {round} | {search:.0} ns | {headed_search:.0} ns | {get:.0} ns | {put_ns:.0} ns |"
        );
    }
}
