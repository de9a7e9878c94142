//! Decoding a persisted Raft log entry from arbitrary bytes never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use raftcd::raft::TypeConfig;
use raftcd::storage::{decode, Space};

fuzz_target!(|data: &[u8]| {
    let _ = decode::<openraft::Entry<TypeConfig>>(Space::Log, data);
    let _ = decode::<raftcd::mvcc::apply::Record>(Space::Kv, data);
});
