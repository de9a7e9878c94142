//! Reading a backup file from arbitrary bytes never panics; a backup that
//! reads back re-encodes to an equal store.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = raftcd::backup::read_backup(data) {
        let again = raftcd::backup::read_backup(&raftcd::backup::write_backup(&view)).expect("re-read");
        assert_eq!(view.hash_kv(0).ok(), again.hash_kv(0).ok());
    }
});
