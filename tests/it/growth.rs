//! The self-growing cluster (`--replica-table`, incremental mode): real
//! raftcd processes of one replica table on loopback, checked with etcdctl.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::cluster::eventually;
use crate::common::replicas::Replicas;

/// Rows refreshed every 200 ms, dead after 2 s.
const SETTINGS: &str = "token = \"grow-test\"\nheartbeat_interval_ms = 200\ndead_after_ms = 2000";

fn no_extra(_: usize) -> String {
    String::new()
}

/// The replica ids whose rows `/raftcd/replicas/` holds, as replica `via`
/// reads them, with each row's role.
fn rows(r: &Replicas, via: usize) -> Option<Vec<(u64, String)>> {
    let out = r.etcdctl(
        via,
        &["get", "/raftcd/replicas/", "--prefix", "--print-value-only"],
    );
    if out.code != 0 {
        return None;
    }
    out.stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            Some((v["id"].as_u64()?, v["role"].as_str()?.to_string()))
        })
        .collect()
}

/// The replica whose member leads, as replica `via` sees it.
fn leader_replica(r: &Replicas, via: usize) -> Option<usize> {
    let out = r.etcdctl(via, &["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    let leader = v[0]["Status"]["leader"].as_u64()?;
    let list = r.etcdctl(via, &["member", "list"]);
    list.stdout.lines().find_map(|l| {
        let f: Vec<&str> = l.split(", ").collect();
        let id = u64::from_str_radix(f.first()?, 16).ok()?;
        (id == leader).then(|| f.get(2)?.strip_prefix('r')?.parse().ok())?
    })
}

#[test]
fn replicas_started_one_by_one_grow_the_voters_1_1_3_3_5_and_replace_a_dead_leader() {
    let mut r = Replicas::new(5, SETTINGS, no_extra);
    let wanted = [1, 1, 3, 3, 5];
    for n in 1..=5 {
        r.start(n);
        r.wait_ready(n, Duration::from_secs(30));
        let voters = eventually(Duration::from_secs(20), || {
            let m = r.members(n)?;
            let voters = m.iter().filter(|(_, learner)| !learner).count();
            (m.len() == n && voters == wanted[n - 1]).then_some(voters)
        });
        assert_eq!(voters, wanted[n - 1], "after starting replica {n}");
        // A write through the newest replica (a learner for n = 2 and 4)
        // is read back through the first.
        let key = format!("k{n}");
        let put = r.etcdctl(n, &["put", &key, &format!("v{n}")]);
        assert_eq!(put.stdout.trim(), "OK", "put through replica {n}: {put:?}");
        let got = r.etcdctl(1, &["get", &key, "--print-value-only"]);
        assert_eq!(got.stdout.trim(), format!("v{n}"));
    }
    // Every replica keeps its row, and the rows say who votes.
    let table = eventually(Duration::from_secs(10), || {
        let t = rows(&r, 1)?;
        (t.len() == 5 && t.iter().all(|(_, role)| role == "voter")).then_some(t)
    });
    let ids: Vec<u64> = table.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);

    // The leader's replica dies while a client writes through another one.
    let dead = eventually(Duration::from_secs(10), || leader_replica(&r, 1));
    let via = if dead == 1 { 2 } else { 1 };
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let writer = {
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        let endpoint = format!("127.0.0.1:{}", r.ports[via - 1].0);
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let out = crate::common::etcdctl(
                    &endpoint,
                    &["--command-timeout=15s", "put", &format!("w{i}"), "x"],
                    None,
                );
                if out.code == 0 {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!("write {i} failed: {out:?}");
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let killed = Instant::now();
    r.kill(dead);
    let voters = eventually(Duration::from_secs(20), || {
        let t = rows(&r, via)?;
        let v = r.voters(via)?;
        let gone = !t.iter().any(|(id, _)| *id == dead as u64);
        (gone && v.len() == 3).then_some(v)
    });
    let replaced_in = killed.elapsed();
    assert!(!voters.contains(&format!("r{dead}")), "{voters:?}");
    // Dead after 2 s; the rest is the election and the lease's rounding.
    assert!(
        replaced_in < Duration::from_secs(2 + 8),
        "replaced after {replaced_in:?}"
    );
    // Back again: it rejoins as a learner and the voters are five again.
    r.start(dead);
    r.wait_ready(dead, Duration::from_secs(30));
    let voters = eventually(Duration::from_secs(20), || {
        let v = r.voters(via)?;
        (v.len() == 5).then_some(v)
    });
    assert!(voters.contains(&format!("r{dead}")));
    // The writer runs through the whole change (and a little past it when
    // the change was quick and etcdctl slow to spawn: at least 11 writes).
    eventually(Duration::from_secs(30), || {
        (done.load(Ordering::Relaxed) > 10 || failed.load(Ordering::Relaxed) > 0).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "writes failed during the change"
    );
    assert!(done.load(Ordering::Relaxed) > 10);
    let got = r.etcdctl(dead, &["get", "k5", "--print-value-only"]);
    assert_eq!(got.stdout.trim(), "v5");
}

#[test]
fn three_replicas_started_at_the_same_instant_form_one_cluster() {
    for round in 0..20 {
        let mut r = Replicas::new(3, SETTINGS, no_extra);
        // Alternate the order the processes are spawned in.
        let order: [usize; 3] = if round % 2 == 0 { [1, 2, 3] } else { [3, 2, 1] };
        for id in order {
            r.start(id);
        }
        for id in order {
            r.wait_ready(id, Duration::from_secs(30));
        }
        let ids: Vec<u64> = (1..=3)
            .map(|id| eventually(Duration::from_secs(10), || r.cluster_id(id)))
            .collect();
        assert!(
            ids.iter().all(|c| *c == ids[0]),
            "round {round}: cluster ids {ids:x?}\n{}\n{}\n{}",
            r.log(1),
            r.log(2),
            r.log(3)
        );
        let voters = eventually(Duration::from_secs(20), || {
            let v = r.voters(1)?;
            (v.len() == 3).then_some(v)
        });
        assert_eq!(voters, ["r1", "r2", "r3"], "round {round}");
        let founders = (1..=3)
            .filter(|id| r.log(*id).contains("forming the cluster"))
            .count();
        assert_eq!(founders, 1, "round {round}");
    }
}

#[test]
fn a_bad_replica_table_is_one_clear_error() {
    let r = Replicas::new(2, SETTINGS, no_extra);
    let text = std::fs::read_to_string(&r.table).unwrap();
    let bad = r.dir.path().join("bad.toml");
    let run = |table: &std::path::Path, id: &str| {
        let out = std::process::Command::new(crate::common::raftcd_bin())
            .args(["--replica-table", &table.display().to_string()])
            .args(["--replica-id", id])
            .args([
                "--data-dir",
                &r.dir.path().join("unused").display().to_string(),
            ])
            .output()
            .expect("run raftcd");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // A duplicate id on line 13 (the second row's id).
    std::fs::write(&bad, text.replace("id = 2", "id = 1")).unwrap();
    let (code, err) = run(&bad, "1");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("line 13") && err.contains("duplicate replica id 1"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // An even max_voters.
    std::fs::write(
        &bad,
        text.replace(
            "dead_after_ms = 2000",
            "dead_after_ms = 2000\nmax_voters = 2",
        ),
    )
    .unwrap();
    let (code, err) = run(&bad, "1");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("line 4") && err.contains("max_voters"),
        "{err}"
    );
    // An unknown replica id.
    let (code, err) = run(&r.table, "7");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--replica-id 7 is not in the replica table"),
        "{err}"
    );
    // An unreadable file.
    let (code, err) = run(&r.dir.path().join("missing.toml"), "1");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("missing.toml") && err.contains("cannot read"),
        "{err}"
    );
    assert!(!r.dir.path().join("unused").exists(), "nothing written");
}

#[test]
fn fixed_mode_runs_members_on_the_chosen_replicas_and_the_others_serve_clients() {
    let run = |id: usize| format!("run_node = {}", matches!(id, 1 | 2 | 4));
    let mut r = Replicas::new(5, "token = \"fixed-test\"\nmode = \"fixed\"", run);
    for id in 1..=5 {
        r.start(id);
    }
    for id in 1..=5 {
        r.wait_ready(id, Duration::from_secs(30));
    }
    let voters = eventually(Duration::from_secs(10), || r.voters(3));
    assert_eq!(voters, ["r1", "r2", "r4"]);
    for id in [3, 5] {
        assert!(!r.data_dir(id).exists(), "replica {id} runs no member");
    }
    let put = r.etcdctl(3, &["put", "via-3", "read-via-5"]);
    assert_eq!(put.stdout.trim(), "OK", "{put:?}");
    let got = r.etcdctl(5, &["get", "via-3", "--print-value-only"]);
    assert_eq!(got.stdout.trim(), "read-via-5", "{got:?}");
    // A watch through one member-less replica sees a put through the other.
    let endpoint = format!("127.0.0.1:{}", r.ports[4].0);
    let watch = std::thread::spawn(move || {
        let mut child = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([&format!("--endpoints={endpoint}"), "watch", "w"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("etcdctl watch");
        let mut out = child.stdout.take().expect("stdout");
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !String::from_utf8_lossy(&seen).contains("hello") {
            match std::io::Read::read(&mut out, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        String::from_utf8_lossy(&seen).to_string()
    });
    std::thread::sleep(Duration::from_secs(1));
    let put = r.etcdctl(3, &["put", "w", "hello"]);
    assert_eq!(put.stdout.trim(), "OK");
    assert_eq!(watch.join().unwrap(), "PUT\nw\nhello\n");
    // A member down: the replicas without one go on through the others.
    r.kill(1);
    let put = r.etcdctl(5, &["put", "after", "member-1-died"]);
    assert_eq!(put.stdout.trim(), "OK", "{put:?}");
    let got = r.etcdctl(3, &["get", "after", "--print-value-only"]);
    assert_eq!(got.stdout.trim(), "member-1-died", "{got:?}");
}

/// Start replicas 1..=n one by one and wait until all are voters.
fn grown(n: usize) -> Replicas {
    let mut r = Replicas::new(n, SETTINGS, no_extra);
    for id in 1..=n {
        r.start(id);
        r.wait_ready(id, Duration::from_secs(30));
    }
    eventually(Duration::from_secs(30), || {
        (r.voters(1)?.len() == target(n)).then_some(())
    });
    r
}

fn target(live: usize) -> usize {
    match live {
        0..=2 => 1,
        3..=4 => 3,
        _ => 5,
    }
}

#[test]
fn losing_the_quorum_fails_writes_in_time_and_the_cluster_recovers_when_voters_return() {
    let mut r = grown(5);
    // Three of five voters die at once: faster than replacement can act.
    for id in 1..=3 {
        r.kill(id);
    }
    let started = Instant::now();
    let put = r.etcdctl(4, &["put", "during", "loss"]);
    let took = started.elapsed();
    assert_ne!(put.code, 0, "{put:?}");
    assert!(
        put.stderr.contains("no leader") || put.stderr.contains("timed out"),
        "{put:?}"
    );
    assert!(took < Duration::from_secs(9), "the write took {took:?}");
    // `endpoint status` says why, and the log says so once.
    let why = eventually(Duration::from_secs(10), || {
        let out = r.etcdctl(4, &["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        let errors = v[0]["Status"]["errors"].as_array()?.clone();
        errors
            .iter()
            .filter_map(|e| e.as_str())
            .find(|e| e.contains("quorum lost"))
            .map(str::to_string)
    });
    assert!(
        why.contains("2 of 5 voters reachable, a quorum is 3"),
        "{why}"
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        r.log(4).matches("the cluster has no leader").count(),
        1,
        "{}",
        r.log(4)
    );
    // One voter back is a quorum again: writes work without anyone's help.
    r.start(1);
    let put = eventually(Duration::from_secs(30), || {
        let out = r.etcdctl(4, &["put", "after", "recovery"]);
        (out.code == 0).then_some(out)
    });
    assert_eq!(put.stdout.trim(), "OK");
    let got = r.etcdctl(5, &["get", "after", "--print-value-only"]);
    assert_eq!(got.stdout.trim(), "recovery");
}

#[test]
fn force_new_cluster_restarts_a_survivor_as_a_cluster_of_its_own() {
    let mut r = grown(3);
    let put = r.etcdctl(3, &["put", "before", "the-loss"]);
    assert_eq!(put.stdout.trim(), "OK", "{put:?}");
    // Let the followers learn the commit and write it down.
    std::thread::sleep(Duration::from_secs(2));
    r.kill(1);
    r.kill(2);
    r.kill(3);
    r.start_with(3, &["--force-new-cluster"]);
    r.wait_ready(3, Duration::from_secs(30));
    let members = r.members(3).expect("member list");
    assert_eq!(members, [("r3".to_string(), false)]);
    let got = r.etcdctl(3, &["get", "before", "--print-value-only"]);
    assert_eq!(got.stdout.trim(), "the-loss", "{got:?}");
    let put = r.etcdctl(3, &["put", "after", "forced"]);
    assert_eq!(put.stdout.trim(), "OK", "{put:?}");
    assert!(r
        .log(3)
        .contains("--force-new-cluster: this member now forms a new cluster alone"));
    // An old member with its old data belongs to the old cluster: refused.
    r.start(1);
    let code = r.wait_exit(1, Duration::from_secs(30));
    assert!(matches!(code, Some(c) if c != 0), "{code:?}\n{}", r.log(1));
    assert!(r.log(1).contains("cluster id mismatch"), "{}", r.log(1));
    // With an empty data dir it joins the new cluster.
    std::fs::remove_dir_all(r.data_dir(1)).unwrap();
    r.start(1);
    r.wait_ready(1, Duration::from_secs(30));
    let got = eventually(Duration::from_secs(10), || {
        let out = r.etcdctl(1, &["get", "after", "--print-value-only"]);
        (out.stdout.trim() == "forced").then_some(out.stdout)
    });
    assert_eq!(got.trim(), "forced");
    let members = r.members(3).expect("member list");
    assert_eq!(members.len(), 2, "{members:?}");
}

/// The embedding API grows the same way: two nodes in one process, each
/// started from its row of one table, form one cluster with one voter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_nodes_started_from_one_table_form_one_cluster() {
    let r = Replicas::new(2, SETTINGS, no_extra);
    let table = raftcd::replicas::ReplicaTable::load(&r.table).expect("table");
    let start = |id: usize| {
        let config = raftcd::Config::embedded(r.data_dir(id))
            .with_replica_table(table.clone(), id as u64)
            .expect("row");
        raftcd::Node::start(config)
    };
    let first = start(1).await.expect("node 1");
    let second = start(2).await.expect("node 2");
    assert_eq!(first.identity().cluster_id, second.identity().cluster_id);
    second
        .client()
        .put("grown", "embedded")
        .await
        .expect("put via 2");
    let kv = first
        .client()
        .get("grown")
        .await
        .expect("get via 1")
        .expect("key");
    assert_eq!(&kv.value[..], b"embedded");
    let members = first.members();
    assert_eq!(members.len(), 2);
    assert_eq!(members.iter().filter(|m| !m.is_learner).count(), 1);
    let rows = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let rows = first
                .client()
                .get_prefix("/raftcd/replicas/")
                .await
                .expect("rows");
            if rows.len() == 2 {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("both rows");
    assert!(String::from_utf8_lossy(&rows[1].value).contains("\"role\":\"learner\""));
    second.shutdown().await.expect("shutdown 2");
    first.shutdown().await.expect("shutdown 1");
}

/// The table works beside the TLS flags: mutual TLS on the peer port,
/// discovery and joining included.
#[test]
fn a_table_with_mutual_tls_peers_grows_as_well() {
    let mut r = Replicas::new(3, SETTINGS, no_extra);
    let text = std::fs::read_to_string(&r.table).unwrap();
    std::fs::write(
        &r.table,
        text.replace("peer_url = \"http://", "peer_url = \"https://"),
    )
    .unwrap();
    let dir = r.dir.path().join("certs");
    crate::common::certs(&dir, &["init"]);
    for id in 1..=3 {
        crate::common::certs(&dir, &["peer", "--name", &format!("r{id}")]);
    }
    let file = |name: &str| dir.join(name).display().to_string();
    for id in 1..=3 {
        let (cert, key) = (file(&format!("r{id}.pem")), file(&format!("r{id}-key.pem")));
        let ca = file("ca.pem");
        r.start_with(
            id,
            &[
                "--peer-cert-file",
                &cert,
                "--peer-key-file",
                &key,
                "--peer-trusted-ca-file",
                &ca,
                "--peer-client-cert-auth",
            ],
        );
        r.wait_ready(id, Duration::from_secs(30));
    }
    let voters = eventually(Duration::from_secs(20), || {
        let v = r.voters(1)?;
        (v.len() == 3).then_some(v)
    });
    assert_eq!(voters, ["r1", "r2", "r3"]);
    let put = r.etcdctl(3, &["put", "over", "tls"]);
    assert_eq!(put.stdout.trim(), "OK", "{put:?}");
    let got = r.etcdctl(1, &["get", "over", "--print-value-only"]);
    assert_eq!(got.stdout.trim(), "tls");
    assert!(r.members(1).unwrap().len() == 3);
    let list = r.etcdctl(1, &["member", "list"]);
    assert!(list.stdout.contains("https://127.0.0.1:"), "{list:?}");
}

/// A replica that lost its data dir rejoins under its member id with an
/// empty log: the leader takes it back as a learner (it must not vote
/// without its log) and its log going back to nothing is no crash (openraft
/// `loosen-follower-log-revert`; without it the leader's Raft panicked in a
/// debug build and, in a release build, kept counting entries the replica
/// no longer has).
#[test]
fn a_voter_whose_data_dir_is_lost_rejoins_as_a_learner_first() {
    let mut r = grown(3);
    let leader = eventually(Duration::from_secs(10), || leader_replica(&r, 1));
    let lost = if leader == 3 { 2 } else { 3 };
    r.kill(lost);
    std::fs::remove_dir_all(r.data_dir(lost)).unwrap();
    r.start(lost);
    r.wait_ready(lost, Duration::from_secs(30));
    assert!(
        r.log(leader)
            .contains("rejoins with an empty data dir: demoted to learner"),
        "{}",
        r.log(leader)
    );
    let voters = eventually(Duration::from_secs(20), || {
        let v = r.voters(leader)?;
        (v.len() == 3).then_some(v)
    });
    assert!(voters.contains(&format!("r{lost}")));
    let put = r.etcdctl(lost, &["put", "after", "rejoin"]);
    assert_eq!(put.stdout.trim(), "OK", "{put:?}");
    for id in 1..=3 {
        assert!(r.running(id), "replica {id} stopped:\n{}", r.log(id));
        assert!(!r.log(id).contains("panicked"), "{}", r.log(id));
    }
}
