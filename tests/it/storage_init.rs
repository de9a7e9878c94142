//! `raftcd storage init`: three data dirs made by it, three members started
//! with `raftcd --data-dir DIR` alone, one cluster of three voters.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::cluster::eventually;
use crate::common::{etcdctl, free_port, http_get, machine_share, raftcd_bin};

#[test]
fn three_initialized_data_dirs_start_as_one_cluster_of_three_voters() {
    let _machine = machine_share();
    let tmp = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let cluster: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("n{}=http://127.0.0.1:{p}", i + 1))
        .collect();
    let cluster = cluster.join(",");
    let dir = |i: usize| tmp.path().join(format!("n{}.raftcd", i + 1));
    let init = |i: usize| {
        let (c, p) = ports[i];
        Command::new(raftcd_bin())
            .args(["storage", "init", "--name", &format!("n{}", i + 1)])
            .args(["--token", "init-test"])
            .args(["--client-url", &format!("http://127.0.0.1:{c}")])
            .args(["--peer-url", &format!("http://127.0.0.1:{p}")])
            .args(["--initial-cluster", &cluster])
            .args(["--data-dir", &dir(i).display().to_string()])
            .output()
            .expect("run raftcd storage init")
    };
    for i in 0..3 {
        let out = init(i);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(
            stdout.contains(&format!("raftcd --data-dir {}", dir(i).display())),
            "{stdout}"
        );
    }
    // A second init on a data dir is refused and changes nothing.
    let before = std::fs::read(dir(0).join("raftcd.toml")).unwrap();
    let again = init(0);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert_eq!(std::fs::read(dir(0).join("raftcd.toml")).unwrap(), before);

    let mut children: Vec<std::process::Child> = (0..3)
        .map(|i| {
            let log = std::fs::File::create(dir(i).with_extension("log")).unwrap();
            Command::new(raftcd_bin())
                .args(["--data-dir", &dir(i).display().to_string()])
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .env("ETCD_LOG_LEVEL", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn raftcd")
        })
        .collect();
    let log = |i: usize| std::fs::read_to_string(dir(i).with_extension("log")).unwrap_or_default();
    for (i, (c, _)) in ports.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(http_get(*c, "/health"), Some((200, _))) {
            assert!(
                Instant::now() < deadline,
                "n{} not ready:\n{}",
                i + 1,
                log(i)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let endpoint = |i: usize| format!("127.0.0.1:{}", ports[i].0);
    let list = eventually(Duration::from_secs(10), || {
        let out = etcdctl(&endpoint(2), &["member", "list"], None);
        (out.code == 0 && out.stdout.lines().count() == 3).then_some(out.stdout)
    });
    for i in 1..=3 {
        assert!(
            list.lines()
                .any(|l| l.contains(&format!(", n{i}, ")) && l.ends_with("false")),
            "{list}"
        );
    }
    let put = etcdctl(&endpoint(0), &["put", "made-by", "init"], None);
    assert_eq!(put.stdout.trim(), "OK", "{put:?}");
    let got = etcdctl(
        &endpoint(2),
        &["get", "made-by", "--print-value-only"],
        None,
    );
    assert_eq!(got.stdout.trim(), "init");
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
}
