//! `etcdctl snapshot save` against raftcd, then `raftcd snapshot restore`
//! into a new data dir: the new member serves the same keys, revisions and
//! history hash.

use crate::common::{free_port, snapshot_restore as restore, Server};

#[test]
fn save_with_etcdctl_and_restore_with_raftcd() {
    let server = Server::start();
    for i in 0..20 {
        let out = server.etcdctl(&["put", &format!("k{i:02}"), &format!("v{i}")]);
        assert_eq!(out.stdout, "OK\n", "{out:?}");
    }
    let out = server.etcdctl(&["del", "k00"]);
    assert_eq!(out.stdout, "1\n");
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("snap.db");
    let file_s = file.display().to_string();
    let out = server.etcdctl(&["snapshot", "save", &file_s]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, format!("Snapshot saved at {file_s}\n"));
    let size = std::fs::metadata(&file).expect("snapshot file").len();
    assert_eq!(
        size % 512,
        32,
        "etcd's backup shape: 512-byte blocks + SHA-256"
    );
    let before = server.etcdctl(&["get", "k", "--prefix", "-w", "json"]);
    let hash_before = server.etcdctl(&["endpoint", "hashkv", "-w", "json"]);

    let dir = tmp.path().join("restored");
    let out = restore(&file, &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("restored {file_s} at revision 22 into {}\n", dir.display())
    );

    // Restoring into a data dir that holds data is refused.
    let again = restore(&file, &dir);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds data"));

    let restored = Server::start_in(&dir, free_port(), &[]);
    let after = restored.etcdctl(&["get", "k", "--prefix", "-w", "json"]);
    let strip = |s: &str| -> serde_json::Value {
        let mut v: serde_json::Value = serde_json::from_str(s).expect("json");
        v.as_object_mut().expect("object").remove("header");
        v
    };
    assert_eq!(strip(&before.stdout), strip(&after.stdout));
    let rev = |s: &str| -> i64 {
        let v: serde_json::Value = serde_json::from_str(s).expect("json");
        v["header"]["revision"].as_i64().expect("revision")
    };
    assert_eq!(rev(&after.stdout), 22);
    let hash_after = restored.etcdctl(&["endpoint", "hashkv", "-w", "json"]);
    let hash = |s: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(s).expect("json");
        v[0]["HashKV"]["hash"].as_u64().expect("hash")
    };
    assert_eq!(hash(&hash_before.stdout), hash(&hash_after.stdout));

    // A corrupted backup is refused with a clear message.
    let mut bytes = std::fs::read(&file).expect("read");
    bytes[100] ^= 0xff;
    std::fs::write(&file, bytes).expect("write");
    let out = restore(&file, tmp.path().join("other"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
}
