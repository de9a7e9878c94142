//! The Raft log's recovery (`storage::Wal::open`: `wal/segment.rs`) on log
//! directories built from the input: one to three segment files, each
//! either raw bytes or well-formed records (header, entries with their
//! checksums) with the input choosing names, indices, garbage records,
//! payloads, a cut or a flipped bit. Recovery never panics; a log that
//! opens reads back every entry it reports (each decoded as an
//! `openraft::Entry`, as the log store does), opens again without repair,
//! and takes the next append.
#![no_main]
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use raftcd::codec::{decode, encode};
use raftcd::raft::TypeConfig;
use raftcd::storage::frame;
use raftcd::storage::{Syncer, Wal};

type Entry = openraft::Entry<TypeConfig>;

#[derive(Debug)]
struct NoSync;

impl Syncer for NoSync {
    fn sync_data(&self, _: &File) -> std::io::Result<()> {
        Ok(())
    }
    fn sync_all(&self, _: &File) -> std::io::Result<()> {
        Ok(())
    }
}

struct In<'a>(&'a [u8]);

impl In<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }
}

fn dir() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("raftcd-fuzz-wal-{}", std::process::id()))
}

fn open(
    dir: &std::path::Path,
    keep_from: u64,
    reach: u64,
) -> Result<(Wal, raftcd::storage::Recovered), raftcd::storage::StorageError> {
    Wal::open(dir, keep_from, reach, Arc::new(NoSync), None)
}

/// A segment file as `Wal` writes it, from the input.
fn segment(input: &mut In, seq: u64, first: u64) -> Vec<u8> {
    let flags = input.byte();
    let mut out = b"RAFTCDwl".to_vec();
    let version = if flags & 0x10 != 0 { 2 } else { 1 };
    let head_seq = if flags & 0x20 != 0 { seq + 1 } else { seq };
    let mut head = vec![version];
    head.extend_from_slice(&head_seq.to_le_bytes());
    head.extend_from_slice(&first.to_le_bytes());
    frame::put(&mut out, 1, &head);
    let mut index = first;
    for _ in 0..input.byte() % 8 {
        let r = input.byte();
        match r % 8 {
            0 => {
                let n = (input.byte() % 16) as usize;
                out.extend_from_slice(&input.take(n));
            }
            1 => frame::put(&mut out, 3, &input.take(4)),
            _ => {
                let at = if r % 8 == 2 {
                    index.wrapping_add(1)
                } else {
                    index
                };
                let body = if r & 0x10 != 0 {
                    encode(&Entry {
                        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), at),
                        payload: openraft::EntryPayload::Blank,
                    })
                } else {
                    let n = (input.byte() % 32) as usize;
                    input.take(n)
                };
                frame::put_parts(&mut out, 2, &[&at.to_le_bytes(), &body]);
                index = index.wrapping_add(1);
            }
        }
    }
    match input.byte() % 4 {
        0 => {
            let cut = (input.byte() % 24) as usize;
            out.truncate(out.len().saturating_sub(cut));
        }
        1 => {
            let at = usize::from(input.byte()) * 7 % out.len().max(1);
            if let Some(b) = out.get_mut(at) {
                *b ^= 1 << (input.byte() % 8);
            }
        }
        _ => {}
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut input = In(data);
    let dir = dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("fuzz dir");
    let mode = input.byte();
    let n = 1 + mode % 3;
    // Small indices, or (bit 2) sequence numbers and indices near u64::MAX.
    let base = if mode & 4 != 0 { u64::MAX - 9 } else { 0 };
    let keep_from = base + u64::from(input.byte() % 8);
    let reach = base.saturating_add(u64::from(input.byte() % 12));
    let mut first = base + u64::from(input.byte() % 4);
    for seq in 1..=u64::from(n) {
        let kind = input.byte();
        let seq = base + if kind & 0x40 != 0 { seq + 1 } else { seq };
        let bytes = if kind % 8 == 0 {
            let len = usize::from(input.byte()) * 2;
            input.take(len)
        } else {
            segment(&mut input, seq, first)
        };
        let name = format!("{seq:016x}-{first:016x}.wal");
        std::fs::write(dir.join(name), &bytes).expect("write segment");
        first = first.saturating_add(u64::from(input.byte() % 6));
    }
    let Ok((wal, rec)) = open(&dir, keep_from, reach) else {
        return;
    };
    assert_eq!(wal.bounds(), (rec.first, rec.last));
    if let (Some(f), Some(l)) = (rec.first, rec.last) {
        // Every entry from the purge point on (below it a log may have a
        // gap: a new segment may start past what was purged).
        let from = f.max(keep_from);
        let to = l.saturating_add(1);
        let entries = wal.read(from, to).expect("read what recovery found");
        assert_eq!(entries.len() as u64, to.saturating_sub(from), "{rec:?}");
        for e in &entries {
            let _ = decode::<Entry>(e);
        }
    }
    // The next entry (refused only after an empty segment past a purge
    // point, which expects an index past the purge).
    let appended = rec
        .last
        .filter(|l| *l < u64::MAX - 1 && wal.append([(l + 1, b"next".to_vec())]).is_ok());
    drop(wal);
    let (wal, again) = open(&dir, keep_from, reach).expect("a recovered log opens again");
    assert_eq!(again.repaired, None, "{rec:?}");
    assert_eq!(again.first, rec.first);
    match appended {
        Some(l) => {
            assert_eq!(again.last, Some(l + 1));
            assert_eq!(
                wal.read(l + 1, l + 2).expect("read"),
                vec![b"next".to_vec()]
            );
        }
        None => assert_eq!(again.last, rec.last),
    }
});
