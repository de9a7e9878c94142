//! A Raft log entry as the log store reads it back (`codec::decode` of an
//! `openraft::Entry`), from arbitrary bytes: never panics, and an entry that
//! decodes re-encodes to bytes that decode to the same entry.
#![no_main]
use libfuzzer_sys::fuzz_target;
use raftcd::codec::{decode, encode};
use raftcd::raft::TypeConfig;

type Entry = openraft::Entry<TypeConfig>;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = decode::<Entry>(data) {
        let again: Entry = decode(&encode(&entry)).expect("a re-encoded entry decodes");
        assert_eq!(format!("{entry:?}"), format!("{again:?}"));
    }
});
