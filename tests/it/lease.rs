//! Leases against the real raftcd binary: etcdctl 3.4's exact output for the
//! lease commands, expiry deleting keys, keep-alive, restart, and the gRPC
//! answers the etcd-client crate sees.

use std::time::{Duration, Instant};

use etcd_client::{Client, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions};

use crate::common::{free_port, grpc, snapshot_restore, Out, Server};

fn ok(o: &Out) -> &str {
    assert_eq!(o.code, 0, "etcdctl failed: {o:?}");
    &o.stdout
}

/// `lease grant TTL` → the lease id (hex) after checking the exact line.
fn grant(s: &Server, ttl: &str, expect_ttl: i64) -> String {
    let out = s.etcdctl(&["lease", "grant", ttl]);
    let line = ok(&out);
    let id = line
        .strip_prefix("lease ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected grant output {line:?}"))
        .to_string();
    assert_eq!(id.len(), 16, "{line:?}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{line:?}");
    assert_eq!(
        line,
        format!("lease {id} granted with TTL({expect_ttl}s)\n")
    );
    id
}

/// Parse `lease <id> granted with TTL(Ts), remaining(Rs)...` → (T, R, rest).
fn time_to_live(s: &Server, id: &str, keys: bool) -> (i64, i64, String) {
    let mut args = vec!["lease", "timetolive", id];
    if keys {
        args.push("--keys");
    }
    let out = s.etcdctl(&args);
    let line = ok(&out).to_string();
    let prefix = format!("lease {id} granted with TTL(");
    let rest = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("unexpected timetolive output {line:?}"));
    let (ttl, rest) = rest.split_once("s), remaining(").expect("remaining");
    let (remaining, rest) = rest.split_once("s)").expect("remaining end");
    (
        ttl.parse().unwrap(),
        remaining.parse().unwrap(),
        rest.to_string(),
    )
}

fn get_value(s: &Server, key: &str) -> String {
    ok(&s.etcdctl(&["get", key, "--print-value-only"])).to_string()
}

fn json(o: &Out) -> serde_json::Value {
    serde_json::from_str(ok(o)).unwrap_or_else(|e| panic!("bad json {o:?}: {e}"))
}

#[test]
fn etcdctl_lease_commands_print_what_etcd_prints() {
    let s = Server::start();
    let id60 = grant(&s, "60", 60);

    // -w json: the same fields etcd 3.4 prints, in its order.
    let out = s.etcdctl(&["lease", "grant", "30", "-w", "json"]);
    let raw = ok(&out).trim().to_string();
    let keys: Vec<&str> = raw
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .map(|kv| kv.split(':').next().unwrap().trim_matches('"'))
        .collect();
    assert_eq!(
        keys,
        [
            "cluster_id",
            "member_id",
            "revision",
            "raft_term",
            "ID",
            "TTL",
            "Error"
        ]
    );
    let j = json(&out);
    assert_eq!(j["TTL"], 30);
    assert_eq!(j["Error"], "");
    assert!(j["raft_term"].as_u64().unwrap() >= 1);
    let id30 = format!("{:016x}", j["ID"].as_i64().unwrap());

    assert_eq!(
        ok(&s.etcdctl(&["put", "leasedkey", "v", &format!("--lease={id30}")])),
        "OK\n"
    );
    // The key carries the lease id.
    let kv = json(&s.etcdctl(&["get", "leasedkey", "-w", "json"]));
    assert_eq!(
        kv["kvs"][0]["lease"].as_i64().unwrap(),
        i64::from_str_radix(&id30, 16).unwrap()
    );

    let (ttl, remaining, rest) = time_to_live(&s, &id30, true);
    assert_eq!(ttl, 30);
    assert!((28..=30).contains(&remaining), "remaining {remaining}");
    assert_eq!(rest, ", attached keys([leasedkey])\n");
    let (_, _, rest) = time_to_live(&s, &id30, false);
    assert_eq!(rest, "\n");

    let id_short = grant(&s, "45", 45);
    let out = s.etcdctl(&["lease", "list"]);
    let lines: Vec<&str> = ok(&out).lines().collect();
    assert_eq!(lines[0], "found 3 leases");
    // etcd lists leases by expiry, soonest first.
    assert_eq!(
        lines[1..],
        [id30.as_str(), id_short.as_str(), id60.as_str()]
    );

    assert_eq!(
        ok(&s.etcdctl(&["lease", "keep-alive", "--once", &id30])),
        format!("lease {id30} keepalived with TTL(30)\n")
    );
    assert_eq!(
        ok(&s.etcdctl(&["lease", "revoke", &id30])),
        format!("lease {id30} revoked\n")
    );
    assert_eq!(ok(&s.etcdctl(&["get", "leasedkey"])), "");
    assert_eq!(
        ok(&s.etcdctl(&["lease", "timetolive", &id30])),
        format!("lease {id30} already expired\n")
    );
    let out = s.etcdctl(&["lease", "list"]);
    assert_eq!(ok(&out), format!("found 2 leases\n{id_short}\n{id60}\n"));

    // Below etcd's minimum (2 s with the default timing) is raised to it.
    grant(&s, "1", 2);

    // Errors, as etcdctl reports them against etcd.
    let errors: [(&[&str], &str); 4] = [
        (
            &["put", "k", "v", "--lease=1234abcd"],
            "Error: etcdserver: requested lease not found\n",
        ),
        (
            &["lease", "revoke", "1234abcd"],
            "Error: failed to revoke lease (etcdserver: requested lease not found)\n",
        ),
        (
            &["lease", "keep-alive", "--once", "1234abcd"],
            "Error: etcdserver: requested lease not found\n",
        ),
        (
            &["lease", "grant", "9000000001"],
            "Error: failed to grant lease (etcdserver: too large lease TTL)\n",
        ),
    ];
    for (args, error) in errors {
        let out = s.etcdctl(args);
        assert_ne!(out.code, 0);
        assert!(out.stderr.ends_with(error), "{out:?}");
    }
    // The failed put wrote nothing.
    assert_eq!(ok(&s.etcdctl(&["get", "k"])), "");
}

#[test]
fn an_expired_lease_deletes_its_keys_in_one_revision() {
    let s = Server::start();
    let id = grant(&s, "2", 2);
    let granted = Instant::now();
    ok(&s.etcdctl(&["put", "short/a", "1", &format!("--lease={id}")]));
    ok(&s.etcdctl(&["put", "short/b", "2", &format!("--lease={id}")]));
    ok(&s.etcdctl(&["put", "other", "3"]));
    let rev_before = json(&s.etcdctl(&["get", "other", "-w", "json"]))["header"]["revision"]
        .as_i64()
        .unwrap();
    assert_eq!(get_value(&s, "short/a"), "1\n");

    // A watcher sees the expiry as DELETE events.
    let mut watcher = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            &format!("--endpoints={}", s.endpoint()),
            "watch",
            "short/",
            "--prefix",
            // From the revision after the puts: a late start replays history.
            &format!("--rev={}", rev_before + 1),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    let stdout = watcher.stdout.take().expect("watch stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = granted + Duration::from_secs(10);
    loop {
        let out = s.etcdctl(&["get", "short/", "--prefix", "--keys-only"]);
        if ok(&out).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "keys of an expired lease still there: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = granted.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "expired too early: {took:?}"
    );
    let mut seen = Vec::new();
    while seen.len() < 6 {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert_eq!(
        seen,
        ["DELETE", "short/a", "", "DELETE", "short/b", ""],
        "the watcher saw the expiry"
    );

    // Both keys went in one revision; the unleased key stayed.
    let h = json(&s.etcdctl(&["get", "other", "-w", "json"]));
    assert_eq!(h["header"]["revision"].as_i64().unwrap(), rev_before + 1);
    assert_eq!(h["kvs"][0]["value"], "Mw==");
    assert_eq!(
        ok(&s.etcdctl(&["lease", "timetolive", &id])),
        format!("lease {id} already expired\n")
    );
    assert_eq!(ok(&s.etcdctl(&["lease", "list"])), "found 0 leases\n");
}

#[test]
fn a_lease_survives_a_restart_with_its_remaining_ttl_and_keys() {
    let mut s = Server::start();
    let kept = grant(&s, "30", 30);
    let plain = grant(&s, "20", 20);
    ok(&s.etcdctl(&["put", "kept", "k", &format!("--lease={kept}")]));
    ok(&s.etcdctl(&["put", "plain", "p", &format!("--lease={plain}")]));
    // A keep-alive after 4 s must survive the restart too (it is persisted
    // through Raft within a lessor tick).
    std::thread::sleep(Duration::from_secs(4));
    ok(&s.etcdctl(&["lease", "keep-alive", "--once", &kept]));
    std::thread::sleep(Duration::from_millis(1000));

    let (_, kept_before, _) = time_to_live(&s, &kept, false);
    let (_, plain_before, _) = time_to_live(&s, &plain, false);
    let t0 = Instant::now();
    // SIGKILL, then the same data dir and port.
    s.restart();
    let (kept_ttl, kept_after, kept_keys) = time_to_live(&s, &kept, true);
    let (plain_ttl, plain_after, plain_keys) = time_to_live(&s, &plain, true);
    let elapsed = t0.elapsed().as_secs_f64();
    assert_eq!((kept_ttl, plain_ttl), (30, 20));
    assert_eq!(kept_keys, ", attached keys([kept])\n");
    assert_eq!(plain_keys, ", attached keys([plain])\n");
    // Time down counts, and a new leader adds its election timeout (1 s):
    // remaining after = before - elapsed + 1, give or take the truncation
    // to whole seconds.
    for (name, before, after) in [
        ("kept", kept_before, kept_after),
        ("plain", plain_before, plain_after),
    ] {
        // Truncation puts `after` in (expect - 1, expect + 1); `elapsed` also
        // spans the etcdctl runs around the restart, hence the extra slack.
        let expect = before as f64 - elapsed + 1.0;
        assert!(
            (after as f64) > expect - 1.2 && (after as f64) < expect + 1.6,
            "{name}: remaining {before}s before, {after}s after a {elapsed:.1}s restart"
        );
    }
    assert!(
        kept_after >= 27,
        "keep-alive lost across restart: {kept_after}"
    );
    assert_eq!(get_value(&s, "kept"), "k\n");
    assert_eq!(get_value(&s, "plain"), "p\n");
    let out = s.etcdctl(&["lease", "list"]);
    assert_eq!(ok(&out), format!("found 2 leases\n{plain}\n{kept}\n"));
    // Still a working lease: revoke removes its key.
    ok(&s.etcdctl(&["lease", "revoke", &plain]));
    assert_eq!(get_value(&s, "plain"), "");
}

#[test]
fn leases_travel_in_a_snapshot_and_restart_their_ttl_on_restore() {
    let s = Server::start();
    let id = grant(&s, "60", 60);
    ok(&s.etcdctl(&["put", "lk", "v", &format!("--lease={id}")]));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("snap.db").display().to_string();
    ok(&s.etcdctl(&["snapshot", "save", &file]));
    let dir = tmp.path().join("restored");
    let out = snapshot_restore(&file, &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = Server::start_in(&dir, free_port(), &[]);
    let (ttl, remaining, keys) = time_to_live(&restored, &id, true);
    assert_eq!((ttl, keys.as_str()), (60, ", attached keys([lk])\n"));
    assert!((59..=61).contains(&remaining), "remaining {remaining}");
    ok(&restored.etcdctl(&["lease", "revoke", &id]));
    assert_eq!(get_value(&restored, "lk"), "");
}

#[tokio::test]
async fn grpc_lease_service_answers_as_etcd() {
    let s = Server::start();
    let mut c = Client::connect([s.url()], None).await.unwrap();

    // A client-chosen id is used; taking it twice fails.
    let g = c
        .lease_grant(10, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await
        .unwrap();
    assert_eq!((g.id(), g.ttl(), g.error()), (0x1234, 10, ""));
    assert_eq!(
        grpc(
            c.lease_grant(10, Some(LeaseGrantOptions::new().with_id(0x1234)))
                .await
        ),
        (
            tonic::Code::FailedPrecondition,
            "etcdserver: lease already exists".into()
        )
    );
    assert_eq!(
        grpc(c.lease_grant(9_000_000_001, None).await),
        (
            tonic::Code::OutOfRange,
            "etcdserver: too large lease TTL".into()
        )
    );
    // Server-chosen ids are distinct and positive; small TTLs are raised.
    let a = c.lease_grant(0, None).await.unwrap();
    let b = c.lease_grant(-5, None).await.unwrap();
    assert!(a.id() > 0 && b.id() > 0 && a.id() != b.id());
    assert_eq!((a.ttl(), b.ttl()), (2, 2));

    c.put("gk", "v", Some(PutOptions::new().with_lease(0x1234)))
        .await
        .unwrap();
    let t = c
        .lease_time_to_live(0x1234, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!((t.id(), t.granted_ttl()), (0x1234, 10));
    assert!((9..=10).contains(&t.ttl()), "{}", t.ttl());
    assert_eq!(t.keys(), [b"gk".to_vec()]);
    let t = c.lease_time_to_live(0x999, None).await.unwrap();
    assert_eq!((t.id(), t.ttl(), t.granted_ttl()), (0x999, -1, 0));

    // Keep-alive stream: the granted TTL back each time; 0 for unknown ids.
    let (mut keeper, mut stream) = c.lease_keep_alive(0x1234).await.unwrap();
    for _ in 0..3 {
        keeper.keep_alive().await.unwrap();
        let r = stream.message().await.unwrap().unwrap();
        assert_eq!((r.id(), r.ttl()), (0x1234, 10));
        assert!(r.header().unwrap().revision() >= 2);
    }
    // etcd-client reads the first answer itself: TTL 0 is "not found".
    let e = c.lease_keep_alive(0x999).await.unwrap_err();
    assert!(
        matches!(&e, etcd_client::Error::LeaseKeepAliveError(m) if m == "lease not found"),
        "{e:?}"
    );

    // Keeping a 2 s lease alive past its TTL keeps its key.
    c.put("kept", "v", Some(PutOptions::new().with_lease(a.id())))
        .await
        .unwrap();
    let (mut ka, mut sa) = c.lease_keep_alive(a.id()).await.unwrap();
    let until = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < until {
        ka.keep_alive().await.unwrap();
        assert_eq!(sa.message().await.unwrap().unwrap().ttl(), 2);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(c.get("kept", None).await.unwrap().kvs().len(), 1);

    // b (2 s, never kept alive) has expired by now.
    let mut ids: Vec<i64> = c
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    ids.sort();
    let mut want = vec![0x1234, a.id()];
    want.sort();
    assert_eq!(ids, want);

    let r = c.lease_revoke(0x1234).await.unwrap();
    assert!(r.header().unwrap().revision() > 0);
    assert!(c.get("gk", None).await.unwrap().kvs().is_empty());
    let not_found = (
        tonic::Code::NotFound,
        "etcdserver: requested lease not found".to_string(),
    );
    assert_eq!(grpc(c.lease_revoke(0x1234).await), not_found);
    assert_eq!(
        grpc(
            c.put("x", "v", Some(PutOptions::new().with_lease(0x1234)))
                .await
        ),
        not_found
    );
}
