//! The storage decision, measured: the same Raft log (raftcd's `Wal`, one
//! fdatasync per batch) under three ways of keeping the state machine on
//! disk, on the storage issue's workload.
//!
//! ```sh
//! cargo run --release --manifest-path benches/engines/Cargo.toml -- state-file
//! cargo run --release --manifest-path benches/engines/Cargo.toml -- redb-durable
//! cargo run --release --manifest-path benches/engines/Cargo.toml -- redb-log-backed
//! ```
//!
//! Workload: 300,000 puts of 1 KiB values round-robin onto 100 keys, in
//! batches of 64 (what group commit makes of 64 clients); a snapshot every
//! 10,000 puts (raftcd's `--snapshot-count`), after which the log is purged
//! up to 1,000 entries behind it; then compaction to the newest revision of
//! each key and a defragmentation. All three keep the store in memory too,
//! as raftcd does. Printed: fill time, bytes the process wrote
//! (`/proc/self/io`), data dir size after defragmentation, peak RSS.
//!
//! - `state-file`: what raftcd does. Applies write nothing; a snapshot
//!   streams every revision held to the `state` file (synced, renamed), and
//!   waits until the log has grown by the last state file's size (raftcd's
//!   `SnapshotCounter`), so an uncompacted store is written at doubling
//!   sizes.
//! - `redb-durable`: each batch is also committed to redb with
//!   `Durability::Immediate` (an fsync per batch in the state store).
//! - `redb-log-backed`: batches commit with `Durability::None` (the log
//!   replays them); each snapshot commits `Durability::Immediate`.
//!   Defragmentation is `Database::compact`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use raftcd::storage::{Blob, OsSync, Storage};
use redb::{Database, Durability, ReadableTableMetadata, TableDefinition};

const PUTS: u64 = 300_000;
const KEYS: u64 = 100;
const VALUE: usize = 1024;
const BATCH: u64 = 64;
const SNAPSHOT_EVERY: u64 = 10_000;
const KEEP: u64 = 1_000;
const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("kv");

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn proc_field(file: &str, field: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// One revision as the state would hold it: key, value.
fn record(rev: u64) -> (Vec<u8>, Vec<u8>) {
    let key = format!("h{:07}", rev % KEYS).into_bytes();
    let value: Vec<u8> = (0..VALUE)
        .map(|i| b'a' + ((i as u64 + rev) % 26) as u8)
        .collect();
    (key, value)
}

fn encode(rev: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + key.len() + value.len());
    out.extend_from_slice(&rev.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// Stream the state to the `state` file, as raftcd does; its size.
fn write_state(storage: &Storage, state: &BTreeMap<u64, (Vec<u8>, Vec<u8>)>) -> Res<u64> {
    storage.write_with(Blob::State, |w| {
        for (rev, (k, v)) in state {
            w.write_all(&encode(*rev, k, v))?;
        }
        Ok(())
    })?;
    Ok(std::fs::metadata(storage.file(Blob::State))?.len())
}

fn main() -> Res<()> {
    let design = std::env::args().nth(1).unwrap_or_default();
    if !["state-file", "redb-durable", "redb-log-backed"].contains(&design.as_str()) {
        eprintln!("usage: raftcd-engines state-file|redb-durable|redb-log-backed");
        std::process::exit(2);
    }
    let tmp = tempfile::tempdir_in(std::env::var("ENGINES_DIR").unwrap_or_else(|_| "/tmp".into()))?;
    let dir = tmp.path().join("data");
    let storage = Storage::open(&dir, Arc::new(OsSync))?;
    let (wal, _) = storage.open_wal(0, 0, None)?;
    let db = if design.starts_with("redb") {
        let mut b = Database::builder();
        b.set_cache_size(64 << 20);
        Some(b.create(dir.join("state.redb"))?)
    } else {
        None
    };
    let written_before = proc_field("/proc/self/io", "write_bytes:");
    let mut state: BTreeMap<u64, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    let started = Instant::now();
    let rt = tokio_free_sync();
    let mut rev = 0;
    let (mut log_bytes, mut log_at_last, mut state_size, mut since) = (0u64, 0u64, 0u64, 0u64);
    while rev < PUTS {
        let batch: Vec<u64> = (rev + 1..=(rev + BATCH).min(PUTS)).collect();
        let entries: Vec<(u64, Vec<u8>)> = batch
            .iter()
            .map(|r| {
                let (k, v) = record(*r);
                (*r, encode(*r, &k, &v))
            })
            .collect();
        log_bytes += entries.iter().map(|(_, e)| e.len() as u64).sum::<u64>();
        wal.append(entries)?;
        rt(&wal)?;
        for r in &batch {
            state.insert(*r, record(*r));
        }
        if let Some(db) = &db {
            let mut tx = db.begin_write()?;
            tx.set_durability(if design == "redb-durable" {
                Durability::Immediate
            } else {
                Durability::None
            });
            {
                let mut t = tx.open_table(TABLE)?;
                for r in &batch {
                    let (k, v) = &state[r];
                    t.insert(*r, encode(*r, k, v).as_slice())?;
                }
            }
            tx.commit()?;
        }
        let last = *batch.last().unwrap_or(&rev);
        since += batch.len() as u64;
        if since >= SNAPSHOT_EVERY {
            match &db {
                None if log_bytes - log_at_last >= state_size => {
                    state_size = write_state(&storage, &state)?;
                    log_at_last = log_bytes;
                    since = 0;
                    wal.purge(last.saturating_sub(KEEP))?;
                }
                None => {}
                Some(db) => {
                    let mut tx = db.begin_write()?;
                    tx.set_durability(Durability::Immediate);
                    tx.commit()?;
                    since = 0;
                    wal.purge(last.saturating_sub(KEEP))?;
                }
            }
        }
        rev = last;
    }
    let fill = started.elapsed();

    // Compaction to the newest revision of each key, then defragmentation.
    let keep: BTreeMap<Vec<u8>, u64> = state.iter().map(|(r, (k, _))| (k.clone(), *r)).collect();
    let keep_revs: std::collections::BTreeSet<u64> = keep.values().copied().collect();
    let dropped: Vec<u64> = state
        .keys()
        .copied()
        .filter(|r| !keep_revs.contains(r))
        .collect();
    for r in &dropped {
        state.remove(r);
    }
    let defrag_started = Instant::now();
    match db {
        None => {
            write_state(&storage, &state)?;
        }
        Some(mut db) => {
            let mut tx = db.begin_write()?;
            tx.set_durability(Durability::Immediate);
            {
                let mut t = tx.open_table(TABLE)?;
                for r in &dropped {
                    t.remove(*r)?;
                }
                assert_eq!(t.len()?, keep_revs.len() as u64);
            }
            tx.commit()?;
            while db.compact()? {}
        }
    }
    wal.purge(rev.saturating_sub(KEEP))?;
    let defrag = defrag_started.elapsed();
    let written = proc_field("/proc/self/io", "write_bytes:") - written_before;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "| {design} | {:.1} s | {:.0} | {:.0} MiB | {:.2} s | {:.1} MiB (log {:.1} MiB) | {:.0} MiB |",
        fill.as_secs_f64(),
        PUTS as f64 / fill.as_secs_f64(),
        mib(written),
        defrag.as_secs_f64(),
        mib(storage.size_on_disk()),
        mib(wal.size()),
        proc_field("/proc/self/status", "VmHWM:") as f64 / 1024.0,
    );
    Ok(())
}

/// Wait for the log's sync without an async runtime.
fn tokio_free_sync() -> impl Fn(&raftcd::storage::Wal) -> Res<()> {
    |wal| {
        let (tx, rx) = std::sync::mpsc::channel();
        wal.sync(Box::new(move |r| {
            let _ = tx.send(r.map_err(|e| e.to_string()));
        }));
        rx.recv()?.map_err(|e| e.into())
    }
}
