//! The disk under raftcd, with real processes: every acknowledged put is
//! behind an `fdatasync` the server made (counted by strace), concurrent
//! clients share them; a damaged data dir is refused at start with the file
//! named and nothing changed; a torn last log record is cut off with a
//! warning and loses nothing acknowledged; an old sled data dir is refused
//! with how to carry its data over; a failing fsync stops acknowledgements.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use raftcd::storage::Syncer;
use raftcd::{Config, Node};

use crate::common::{free_port, start_refused, Server};

/// Every file under `dir` (the lock file aside) with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for item in std::fs::read_dir(d).expect("read dir") {
            let p = item.expect("entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if !p.ends_with("LOCK") {
                out.insert(p.clone(), std::fs::read(&p).expect("read file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// Where the records of a file end: a log segment (magic, then records)
/// is preallocated, so zeros follow its last record; other files end with
/// their records.
fn records_end(path: &Path, bytes: &[u8]) -> usize {
    use raftcd::storage::frame::{parse, Parsed};
    if path.extension().is_none_or(|e| e != "wal") {
        return bytes.len();
    }
    let mut at = 8; // the magic bytes
    while let Parsed::Record { size, .. } = parse(&bytes[at..], 1 << 30) {
        at += size;
    }
    at
}

async fn connect(server: &Server) -> Client {
    Client::connect([server.endpoint()], None)
        .await
        .expect("connect")
}

async fn put_keys(server: &Server, prefix: &str, n: usize) {
    let mut c = connect(server).await;
    for i in 0..n {
        c.put(format!("{prefix}{i:04}"), format!("value-{i}"), None)
            .await
            .expect("put");
    }
}

async fn count_keys(server: &Server, prefix: &str) -> usize {
    let mut c = connect(server).await;
    c.get(
        prefix,
        Some(GetOptions::new().with_prefix().with_count_only()),
    )
    .await
    .expect("count")
    .count() as usize
}

/// strace attached to every thread of `pid`, recording fsync and
/// fdatasync calls in `out`.
fn strace(pid: u32, out: &Path) -> Child {
    let child = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(out)
        .args(["-p", &pid.to_string()])
        .spawn()
        .expect("strace is needed to count syncs (scripts/test installs it)");
    // Attached once it has written nothing yet but runs: give it a moment.
    std::thread::sleep(Duration::from_millis(1500));
    child
}

/// Stop strace (it detaches and flushes) and count the syncs it saw.
fn syncs(mut strace: Child, out: &Path) -> usize {
    let _ = Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status();
    strace.wait().expect("strace exit");
    std::fs::read_to_string(out)
        .expect("strace output")
        .lines()
        .filter(|l| (l.contains("fsync(") || l.contains("fdatasync(")) && !l.contains("resumed"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_put_is_behind_an_fsync_and_concurrent_clients_share_them() {
    let server = Server::start();
    put_keys(&server, "warm/", 5).await;
    let pid = server.child.as_ref().expect("child").id();
    let tmp = tempfile::tempdir().unwrap();

    // 300 sequential puts, each acknowledged before the next is sent.
    let out = tmp.path().join("sequential.strace");
    let tracer = strace(pid, &out);
    put_keys(&server, "seq/", 300).await;
    let sequential = syncs(tracer, &out);
    eprintln!("300 sequential puts: {sequential} fsync/fdatasync calls");
    assert!(
        sequential >= 300,
        "300 acknowledged puts, {sequential} syncs"
    );

    // 64 clients at once share syncs (group commit).
    let out = tmp.path().join("concurrent.strace");
    let tracer = strace(pid, &out);
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(connect(&server).await);
    }
    let mut tasks = Vec::new();
    for t in 0..64usize {
        let mut c = clients[t % 8].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                c.put(format!("conc/{t:02}/{i:02}"), "v", None)
                    .await
                    .expect("put");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let concurrent = syncs(tracer, &out);
    eprintln!("1280 puts from 64 clients: {concurrent} fsync/fdatasync calls");
    assert!(concurrent >= 1, "no sync seen: strace did not attach");
    assert!(
        concurrent * 4 <= 1280,
        "64 clients: {concurrent} syncs for 1280 puts"
    );
    assert_eq!(count_keys(&server, "conc/").await, 1280);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_are_refused_at_start_naming_the_file_and_nothing_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_port();
    let mut server = Server::start_in(&dir, port, &["--snapshot-count", "100"]);
    put_keys(&server, "k/", 250).await;
    server.kill();
    drop(server);
    let pristine = files(&dir);
    let names: Vec<String> = pristine
        .keys()
        .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
        .collect();
    for expected in ["member", "raft", "state"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(names.iter().any(|n| n.starts_with("wal/")), "{names:?}");

    let refused = |what: &str, file: &Path, named: &Path| {
        let before = files(&dir);
        let (status, stderr) = start_refused(&dir, &[]);
        assert!(!status.success(), "{what}: {status}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("raftcd: error:"))
            .unwrap_or_else(|| panic!("{what}: no error line in {stderr}"));
        assert!(
            line.contains(&named.display().to_string()) && line.contains("damaged"),
            "{what} of {}: {line}",
            file.display()
        );
        assert!(
            files(&dir) == before,
            "{what}: a refused start changed the data dir"
        );
    };
    for (path, good) in &pristine {
        let end = records_end(path, good);
        // A bit flipped in the middle of the records.
        let mut bad = good.clone();
        bad[end / 2] ^= 0x08;
        std::fs::write(path, &bad).unwrap();
        refused("bit flip", path, path);
        // Records cut short by a third.
        std::fs::write(path, &good[..end * 2 / 3]).unwrap();
        if path.starts_with(dir.join("wal")) {
            // Cut at a record boundary or not, the log no longer reaches
            // what was committed: the log directory is named.
            refused("truncation", path, &dir.join("wal"));
        } else {
            refused("truncation", path, path);
        }
        // Another file in its place.
        std::fs::write(path, b"not ours\n").unwrap();
        refused("foreign file", path, path);
        std::fs::write(path, good).unwrap();
    }
    assert!(files(&dir) == pristine);
    let server = Server::start_in(&dir, port, &["--snapshot-count", "100"]);
    assert_eq!(count_keys(&server, "k/").await, 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_log_record_is_cut_off_with_a_warning_and_nothing_acknowledged_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_port();
    let mut server = Server::start_in(&dir, port, &[]);
    put_keys(&server, "k/", 50).await;
    server.kill();
    drop(server);
    let segment = files(&dir)
        .into_keys()
        .rfind(|p| p.starts_with(dir.join("wal")))
        .expect("a log segment");
    let preallocated = std::fs::read(&segment).unwrap();
    let end = records_end(&segment, &preallocated);
    assert!(
        end < preallocated.len() && preallocated[end..].iter().all(|&b| b == 0),
        "the segment is preallocated: zeros after its last record"
    );
    let good = preallocated[..end].to_vec();
    // Half a record after the last one, in the preallocated space: a
    // header announcing 200 bytes, 60 of them written.
    let mut record = Vec::new();
    record.extend_from_slice(&200u32.to_le_bytes());
    record.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    record.push(2);
    record.extend_from_slice(&[0x5a; 60]);
    let mut torn = preallocated.clone();
    torn[end..end + record.len()].copy_from_slice(&record);
    std::fs::write(&segment, &torn).unwrap();

    let log = tmp.path().join("stderr");
    let server = Server::start_logged(&dir, port, &[], Some(&log));
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        stderr.contains("torn write") && stderr.contains(&segment.display().to_string()),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&segment).unwrap()[..good.len()], good[..]);
    assert_eq!(count_keys(&server, "k/").await, 50);
    put_keys(&server, "after/", 5).await;
    assert_eq!(count_keys(&server, "after/").await, 5);
}

#[test]
fn an_old_sled_data_dir_is_refused_with_how_to_carry_the_data_over() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(dir.join("db")).unwrap();
    std::fs::write(dir.join("db").join("conf"), b"segment_size: 524288\n").unwrap();
    std::fs::write(dir.join("db").join("db"), vec![7u8; 4096]).unwrap();
    let before = files(&dir);
    let (status, stderr) = start_refused(&dir, &[]);
    assert!(!status.success());
    for needle in ["sled", "etcdctl snapshot save", "raftcd snapshot restore"] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    assert!(files(&dir) == before);
    assert!(!dir.join("LOCK").exists() && !dir.join("wal").exists());
}

/// The operating system's syncs until told to fail them all.
#[derive(Debug, Default)]
struct FailingDisk {
    fail: AtomicBool,
}

impl Syncer for FailingDisk {
    fn sync_data(&self, file: &std::fs::File) -> std::io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected EIO"));
        }
        file.sync_data()
    }

    fn sync_all(&self, file: &std::fs::File) -> std::io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected EIO"));
        }
        file.sync_all()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_acknowledgements_and_the_member_says_why() {
    let _machine = crate::common::machine_share();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let disk = Arc::new(FailingDisk::default());
    let mut config = Config::embedded(&dir);
    config.syncer = Some(disk.clone());
    let node = Node::start(config).await.expect("start");
    let c = node.client();
    c.put("before", "1").await.expect("put before the failure");

    disk.fail.store(true, Ordering::SeqCst);
    let err = c
        .put("during", "2")
        .await
        .expect_err("acknowledged after a failed fsync");
    eprintln!("put after the failed fsync: {err}");
    for i in 0..3 {
        let again = c.put(format!("later{i}"), "3").await;
        assert!(
            again.is_err(),
            "acknowledged after a failed fsync: {again:?}"
        );
    }
    let why = node.storage_failure().expect("the member says why");
    assert!(
        why.contains("fsync") && why.contains("injected EIO"),
        "{why}"
    );
    drop(c);
    let _ = node.shutdown().await;

    // Restarted on a healthy disk: what was acknowledged is there.
    let node = Node::start(Config::embedded(&dir)).await.expect("restart");
    let kv = node
        .client()
        .get("before")
        .await
        .unwrap()
        .expect("acknowledged put");
    assert_eq!(kv.value, "1".as_bytes());
    assert!(node.client().get("later0").await.unwrap().is_none());
    node.shutdown().await.unwrap();
}
