//! The snapshot body (`mvcc::record::SnapshotBody`): what InstallSnapshot
//! carries to a lagging follower (`StateMachine::install_snapshot` decodes
//! it and builds the view) and what the `state` file and backups hold
//! after their headers. From arbitrary bytes: decoding and building the
//! view never panic, the view answers reads and hashes, and it re-encodes
//! to bytes that decode to the same view.
#![no_main]
use libfuzzer_sys::fuzz_target;
use raftcd::mvcc::record::{encode_view, SnapshotBody};
use raftcd::pb::etcdserverpb::RangeRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = SnapshotBody::decode(data) else {
        return;
    };
    let view = body.into_view();
    let _ = view.hash_kv(0);
    let _ = view.live_keys();
    let all = RangeRequest {
        key: vec![0].into(),
        range_end: vec![0].into(),
        ..Default::default()
    };
    let _ = view.range(&all, view.revision);
    let sent = encode_view(&view);
    let again = SnapshotBody::decode(&sent)
        .expect("a re-encoded snapshot decodes")
        .into_view();
    assert_eq!(encode_view(&again), sent);
    assert_eq!(view.hash_kv(0).ok(), again.hash_kv(0).ok());
});
