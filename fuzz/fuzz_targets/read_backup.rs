//! Reading a backup file (`raftcd snapshot restore`, `backup::read_backup`)
//! never panics: from arbitrary bytes, and from the same bytes made into a
//! file that passes the size and checksum checks (padded to 512 bytes,
//! SHA-256 appended; the first byte's low bit puts the magic in front), so
//! the length field and the body are the fuzzer's. A backup that reads
//! back re-encodes to an equal store.
#![no_main]
use libfuzzer_sys::fuzz_target;
use raftcd::backup::{read_backup, write_backup};
use raftcd::mvcc::View;
use sha2::{Digest, Sha256};

fn check(file: &[u8]) {
    if let Ok(view) = read_backup(file) {
        let again = read_backup(&write_backup(&view)).expect("re-read");
        assert_eq!(view.hash_kv(0).ok(), again.hash_kv(0).ok());
        assert_eq!(view.revision, again.revision);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut file = Vec::new();
    if mode & 1 == 1 {
        file.extend_from_slice(&write_backup(&View::default())[..8]);
    }
    file.extend_from_slice(rest);
    let padded = file.len().max(1).div_ceil(512) * 512;
    file.resize(padded, 0);
    let sum = Sha256::digest(&file);
    file.extend_from_slice(&sum);
    check(&file);
});
