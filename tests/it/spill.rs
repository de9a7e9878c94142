//! Superseded revisions kept out of memory (`storage/spill.rs`), seen from
//! outside: a real embedded member on a real data dir. Old revisions read
//! back from the spill files, are there again after a restart (the spill is
//! rebuilt from the `state` file and the log), a damaged record is an error
//! for the read that needs it and never a wrong value, and compaction
//! deletes the files.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftcd::pb::etcdserverpb::RangeRequest;
use raftcd::{Client, Config, Node};

const PUTS: usize = 300;

fn value(i: usize) -> String {
    format!("{i:05}-").repeat(200) // 1.2 KiB
}

fn spill_files(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("spill"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.path(), e.metadata().unwrap().len())
        })
        .collect();
    files.sort();
    files
}

/// The value of `key` at `revision`, or the error's text.
async fn at(c: &Client, key: &str, revision: i64) -> Result<Bytes, String> {
    c.range(RangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        revision,
        ..Default::default()
    })
    .await
    .map(|r| r.kvs.first().map(|kv| kv.value.clone()).unwrap_or_default())
    .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_revisions_read_back_from_spill_files_across_restart_damage_and_compaction() {
    let _machine = crate::common::machine_share();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let node = Node::start(Config::embedded(&dir)).await.expect("start");
    let c = node.client();
    let mut revs = Vec::new();
    for i in 0..PUTS {
        revs.push(c.put("hot", value(i)).await.unwrap());
        c.put(format!("cold{}", i % 10), "x").await.unwrap();
    }
    for (i, rev) in revs.iter().enumerate() {
        assert_eq!(at(&c, "hot", *rev).await.unwrap(), value(i), "rev {rev}");
    }
    // The superseded values are on disk, not in the process: all but the
    // newest records, which wait in memory until 64 KiB of them are due.
    let spilled: u64 = spill_files(&dir).iter().map(|f| f.1).sum();
    assert!(
        spilled as usize > (PUTS - 1) * value(0).len() - (64 << 10),
        "{spilled} bytes spilled"
    );
    drop(c);
    node.shutdown().await.expect("shutdown");

    // Restarted: the spill dir is rebuilt from the state file and the log.
    let node = Node::start(Config::embedded(&dir)).await.expect("restart");
    let c = node.client();
    for (i, rev) in revs.iter().enumerate() {
        assert_eq!(
            at(&c, "hot", *rev).await.unwrap(),
            value(i),
            "rev {rev} after restart"
        );
    }
    // Damage in the middle of the spill: a read that needs a damaged
    // record fails and says so; none returns a wrong value.
    let files = spill_files(&dir);
    assert!(!files.is_empty());
    for (path, len) in &files {
        let mut bytes = std::fs::read(path).unwrap();
        for at in (0..bytes.len()).step_by(4096).skip(1) {
            bytes[at] ^= 0x20;
        }
        assert_eq!(bytes.len() as u64, *len);
        std::fs::write(path, bytes).unwrap();
    }
    let mut failed = 0;
    for (i, rev) in revs.iter().enumerate().take(PUTS - 1) {
        match at(&c, "hot", *rev).await {
            Ok(v) => assert_eq!(v, value(i), "rev {rev}: a wrong value, not an error"),
            Err(e) => {
                assert!(e.contains("damaged"), "{e}");
                failed += 1;
            }
        }
    }
    assert!(failed > 0, "no read met the damage");
    // The latest revisions are in memory: untouched.
    assert_eq!(at(&c, "hot", 0).await.unwrap(), value(PUTS - 1));

    // Compaction at the latest revision drops every superseded revision:
    // the files go (once no older view of the store names them).
    let last = c.put("hot", "last").await.unwrap();
    c.compact(last).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !spill_files(&dir).is_empty() {
        assert!(Instant::now() < deadline, "left: {:?}", spill_files(&dir));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(at(&c, "hot", revs[0])
        .await
        .unwrap_err()
        .contains("compacted"));
    assert_eq!(at(&c, "hot", 0).await.unwrap(), "last");
    drop(c);
    node.shutdown().await.expect("shutdown");
}
