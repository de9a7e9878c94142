//! etcdctl 3.4's `lock` and `elect` against a real raftcd, every output
//! compared exactly to what they print against etcd 3.4.23.
//!
//! etcdctl runs these with clientv3's `concurrency` package (sessions with a
//! kept-alive lease, keys `NAME/LEASE`, waits on watches), so they check the
//! KV, Lease and Watch services working together as etcd's do. The expected
//! outputs were recorded with `scripts/record-lock-elect`, which starts
//! `/usr/bin/etcd` 3.4.23 on free loopback ports in a temporary dir and runs
//! the same steps (SIGINT ends a holder, as Ctrl-C does); its transcript,
//! with the lease ids in the keys replaced by `<lease>`, is what the
//! constants below hold. (`SERVER=target/debug/raftcd
//! scripts/record-lock-elect` prints raftcd's, identical once masked.)

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::cluster::eventually;
use crate::common::Server;

/// Lease ids differ between servers: the hex after `lk/` or `el/` becomes
/// `<lease>`.
fn mask(s: &str) -> String {
    let mut out = s.to_string();
    for prefix in ["lk/", "el/"] {
        let mut masked = String::new();
        let mut rest = out.as_str();
        while let Some(i) = rest.find(prefix) {
            let after = &rest[i + prefix.len()..];
            let end = after
                .find(|c: char| !c.is_ascii_hexdigit())
                .unwrap_or(after.len());
            masked.push_str(&rest[..i + prefix.len()]);
            masked.push_str("<lease>");
            rest = &after[end..];
        }
        masked.push_str(rest);
        out = masked;
    }
    out
}

/// An etcdctl left running (a lock holder, a candidate, an observer), its
/// stdout and stderr going to one file.
struct Bg {
    child: Child,
    out: PathBuf,
}

impl Bg {
    fn start(server: &Server, dir: &tempfile::TempDir, name: &str, args: &[&str]) -> Bg {
        let out = dir.path().join(name);
        let file = std::fs::File::create(&out).expect("output file");
        let child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", server.endpoint()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone"))
            .stderr(file)
            .spawn()
            .expect("etcdctl not found: install Debian's etcd-client (scripts/test does)");
        Bg { child, out }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Wait until the masked output is `want`.
    #[track_caller]
    fn until(&self, want: &str) {
        let got = eventually(Duration::from_secs(20), || {
            let o = mask(&self.output());
            (o == want).then_some(o)
        });
        assert_eq!(got, want);
    }

    /// The output stays `want` (masked) for a while: the command waits.
    #[track_caller]
    fn stays(&self, want: &str) {
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(mask(&self.output()), want, "it should still wait");
    }

    /// SIGINT, as Ctrl-C: etcdctl unlocks (resigns) and exits; its code.
    fn interrupt(&mut self) -> i32 {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s.code().unwrap_or(-1);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "etcdctl did not exit on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The revision `get --prefix PREFIX -w json` reports, and its key count.
fn revision_and_count(server: &Server, prefix: &str) -> (i64, usize) {
    let out = server.etcdctl(&["get", "--prefix", prefix, "-w", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let count = v["kvs"].as_array().map_or(0, |a| a.len());
    (v["header"]["revision"].as_i64().expect("revision"), count)
}

#[test]
fn etcdctl_lock_runs_a_command_holding_the_lock() {
    let server = Server::start();
    let out = server.etcdctl(&[
        "lock",
        "lk",
        "--",
        "sh",
        "-c",
        "echo \"key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV\"",
    ]);
    // etcd 3.4.23: `key=lk/<lease> rev=2`, exit 0, nothing on stderr.
    assert_eq!(
        (out.code, mask(&out.stdout), out.stderr.as_str()),
        (0, "key=lk/<lease> rev=2\n".to_string(), "")
    );
    // The lock was released after the command: etcd answers revision 3.
    assert_eq!(revision_and_count(&server, "lk"), (3, 0));
}

#[test]
fn etcdctl_lock_holds_until_interrupted() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mut l1 = Bg::start(&server, &dir, "l1", &["lock", "lk"]);
    // The holder prints its key and the key's (empty) value.
    l1.until("lk/<lease>\n\n");
    let mut l2 = Bg::start(&server, &dir, "l2", &["lock", "lk"]);
    l2.stays("");
    assert_eq!(revision_and_count(&server, "lk").1, 2, "both keys exist");

    assert_eq!(l1.interrupt(), 0);
    l2.until("lk/<lease>\n\n");
    assert_ne!(l1.output(), l2.output(), "each locker has its own key");
    assert_eq!(l2.interrupt(), 0);
    assert_eq!(revision_and_count(&server, "lk").1, 0, "both unlocked");
    assert_eq!(l1.output().lines().count(), 2, "nothing more printed");
}

#[test]
fn etcdctl_elect_observer_and_two_candidates() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mut obs = Bg::start(&server, &dir, "obs", &["elect", "-l", "el"]);
    obs.stays("");

    let mut c1 = Bg::start(&server, &dir, "c1", &["elect", "el", "p1"]);
    c1.until("el/<lease>\np1\n");
    obs.until("el/<lease>\np1\n");
    let mut c2 = Bg::start(&server, &dir, "c2", &["elect", "el", "p2"]);
    c2.stays("");

    // The first leader resigns: the second is elected, the observer sees it.
    assert_eq!(c1.interrupt(), 0);
    c2.until("el/<lease>\np2\n");
    obs.until("el/<lease>\np1\nel/<lease>\np2\n");
    assert_ne!(c1.output(), c2.output());
    assert_eq!(c2.interrupt(), 0);

    // No leader now: a new observer prints nothing.
    let mut obs2 = Bg::start(&server, &dir, "obs2", &["elect", "-l", "el"]);
    obs2.stays("");
    assert_eq!(obs.interrupt(), 0);
    assert_eq!(obs2.interrupt(), 0);
    assert_eq!(mask(&obs.output()), "el/<lease>\np1\nel/<lease>\np2\n");
    assert_eq!(obs2.output(), "");
}
