//! The files written whole (`storage/blob.rs`, records from
//! `storage/frame.rs`) and what they hold. The input's first byte picks the
//! file (`member`, `raft`, `state`) and whether the rest is the raw file
//! (magic, records, end record: `Storage::read` must refuse or return it,
//! never panic) or its contents, written through `Storage::write` (read back
//! unchanged, then decoded as a member starting on the data dir decodes
//! it: the identity, the Raft hard state through `stored_committed` and
//! `LogStore::open`, the state image through `StateMachine::open`). The
//! whole input also goes through `frame::parse` (a record that parses
//! re-encodes to the same bytes) and `frame::any_record_after`.
#![no_main]
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use raftcd::mvcc::record::{encode_view, SnapshotBody};
use raftcd::pb::etcdserverpb::RangeRequest;
use raftcd::raft::log_store::{stored_committed, LogStore};
use raftcd::raft::state_machine::StateMachine;
use raftcd::server::open::decode_member_file;
use raftcd::storage::frame::{self, Parsed};
use raftcd::storage::{Blob, Storage, Syncer};

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

fn storage() -> &'static Storage {
    static S: OnceLock<Storage> = OnceLock::new();
    S.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("raftcd-fuzz-blob-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Storage::open(&dir, Arc::new(NoSync)).expect("fuzz data dir")
    })
}

fn frames(data: &[u8]) {
    const MAX: usize = 1 << 20;
    let mut at = 0;
    while let Parsed::Record {
        kind,
        payload,
        size,
    } = frame::parse(&data[at..], MAX)
    {
        assert!(kind != 0 && size == frame::HEADER + payload.len());
        let mut again = Vec::new();
        frame::put(&mut again, kind, payload);
        assert_eq!(&again[..], &data[at..at + size]);
        at += size;
    }
    if let Some(next) = frame::any_record_after(data, MAX) {
        assert!(matches!(
            frame::parse(&data[next..], MAX),
            Parsed::Record { .. }
        ));
    }
}

/// Decode `blob`'s contents (on disk in `storage`) as a starting member does.
fn contents(storage: &Storage, blob: Blob, bytes: &[u8]) {
    match blob {
        Blob::Member => {
            let _ = decode_member_file(bytes);
        }
        Blob::Raft => {
            let _ = stored_committed(storage);
            let _ = LogStore::open(storage.clone());
            let _ = std::fs::remove_dir_all(storage.path().join(raftcd::storage::WAL_DIR));
        }
        Blob::State => {
            let Ok(sm) = StateMachine::open(storage.clone()) else {
                return;
            };
            let _ = sm.applied_index();
            let view = sm.read_view().load();
            let _ = view.hash_kv(0);
            let all = RangeRequest {
                key: vec![0].into(),
                range_end: vec![0].into(),
                ..Default::default()
            };
            let _ = view.range(&all, view.revision);
            // What is sent to a lagging follower re-encodes the same.
            let sent = encode_view(&view);
            let back = SnapshotBody::decode(&sent).expect("a sent snapshot decodes");
            assert_eq!(encode_view(&back.into_view()), sent);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    frames(data);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let storage = storage();
    let blob = Blob::ALL[usize::from(mode % 3)];
    if mode & 4 == 0 {
        std::fs::write(storage.file(blob), rest).expect("write the file");
        if let Ok(Some(bytes)) = storage.read(blob) {
            contents(storage, blob, &bytes);
        }
    } else {
        storage.write(blob, rest).expect("write through storage");
        assert_eq!(storage.read(blob).expect("read back"), Some(rest.to_vec()));
        contents(storage, blob, rest);
    }
    let _ = std::fs::remove_file(storage.file(blob));
});
