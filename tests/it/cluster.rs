//! Multi-member clusters of real `raftcd` processes on loopback, driven
//! with the real etcdctl: static bootstrap, writes and linearizable reads on
//! any member, leader failure and catch-up, refusing a member of another
//! cluster, membership changes, quorum loss, catch-up by snapshot, client
//! and peer certificate auth with a set made by `raftcd certs`.

use std::time::{Duration, Instant};

use crate::common;
use crate::common::cluster::{
    compact_now, converged, eventually, ClientTls, Cluster, Member, ELECTION_MS,
};
use crate::common::{certs, free_port};

fn ok(out: &common::Out) -> &str {
    assert_eq!(out.code, 0, "etcdctl failed: {out:?}");
    out.stdout.trim_end()
}

fn member_list(c: &mut Cluster) -> Vec<serde_json::Value> {
    let out = c.etcdctl(&["member", "list", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(ok(&out)).expect("member list json");
    v["members"].as_array().cloned().unwrap_or_default()
}

#[test]
fn three_members_replicate_fail_over_and_catch_up() {
    let mut c = Cluster::start(3, &[]);

    // The same leader on all three; `member list` has three started voters.
    let leader = c.wait_leader(Duration::from_secs(10));
    let members = member_list(&mut c);
    assert_eq!(members.len(), 3, "{members:?}");
    for m in &c.members {
        let row = members
            .iter()
            .find(|r| r["name"] == m.name.as_str())
            .unwrap_or_else(|| panic!("{} missing from {members:?}", m.name));
        assert_eq!(row["peerURLs"], serde_json::json!([m.peer_url()]));
        assert_eq!(row["clientURLs"], serde_json::json!([m.client_url()]));
        assert!(row.get("isLearner").is_none(), "{row}");
    }
    let out = c.etcdctl(&["member", "list"]);
    let text = ok(&out);
    for m in &c.members {
        let line = format!(
            ", started, {}, {}, {}, false",
            m.name,
            m.peer_url(),
            m.client_url()
        );
        assert!(text.contains(&line), "{text}");
    }

    // A put on a follower, a linearizable get on the other follower.
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    assert_eq!(
        ok(&c.members[followers[0]].etcdctl(&["put", "k1", "v1"])),
        "OK"
    );
    assert_eq!(
        ok(&c.members[followers[1]].etcdctl(&["get", "k1"])),
        "k1\nv1"
    );
    assert_eq!(ok(&c.members[leader].etcdctl(&["get", "k1"])), "k1\nv1");
    // Serializable reads are local and see it once applied.
    eventually(Duration::from_secs(5), || {
        let out = c.members[followers[1]].etcdctl(&["get", "k1", "--consistency=s"]);
        (out.stdout.trim_end() == "k1\nv1").then_some(())
    });
    // Through all endpoints at once too.
    assert_eq!(ok(&c.etcdctl(&["put", "k2", "v2"])), "OK");
    assert_eq!(ok(&c.etcdctl(&["get", "k2"])), "k2\nv2");

    // Leases work through any member (keep-alives reach the leader's lessor).
    let out = c.members[followers[0]].etcdctl(&["lease", "grant", "60"]);
    let granted = ok(&out).to_string();
    assert!(granted.ends_with(" granted with TTL(60s)"), "{granted}");
    let lease = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    let out = c.members[followers[1]].etcdctl(&["put", "--lease", &lease, "lk", "lv"]);
    assert_eq!(ok(&out), "OK");
    let out = c.members[followers[1]].etcdctl(&["lease", "keep-alive", "--once", &lease]);
    assert_eq!(ok(&out), format!("lease {lease} keepalived with TTL(60)"));
    let out = c.members[followers[0]].etcdctl(&["lease", "timetolive", &lease, "--keys"]);
    assert!(ok(&out).ends_with("attached keys([lk])"), "{out:?}");
    let out = c.members[followers[0]].etcdctl(&["lease", "revoke", &lease]);
    assert_eq!(ok(&out), format!("lease {lease} revoked"));
    assert_eq!(ok(&c.members[followers[1]].etcdctl(&["get", "lk"])), "");

    // move-leader hands leadership to a follower.
    let target = c.status(followers[0]).expect("status").member_id;
    let from = c.status(leader).expect("status").member_id;
    let out = c.etcdctl(&["move-leader", &format!("{target:x}")]);
    assert_eq!(
        ok(&out),
        format!("Leadership transferred from {from:x} to {target:x}")
    );
    let leader = c.wait_leader(Duration::from_secs(5));
    assert_eq!(leader, followers[0]);
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();

    // Kill the leader: the others elect a new one within 3 election timeouts.
    let old = c.status(leader).expect("status").member_id;
    let killed_at = Instant::now();
    c.members[leader].kill();
    let new_leader = eventually(Duration::from_secs(10), || {
        let s = c.status(followers[0])?;
        (s.leader != old && s.leader != 0).then_some(s.leader)
    });
    let elapsed = killed_at.elapsed();
    assert!(
        elapsed < Duration::from_millis(3 * ELECTION_MS),
        "new leader after {elapsed:?}"
    );
    let agreed = c.wait_leader(Duration::from_secs(5));
    assert_eq!(c.status(agreed).expect("status").member_id, new_leader);

    // Writes through each remaining member succeed.
    for (n, i) in followers.iter().enumerate() {
        let key = format!("after-kill-{n}");
        assert_eq!(ok(&c.members[*i].etcdctl(&["put", &key, "x"])), "OK");
    }
    assert_eq!(
        ok(&c.members[followers[0]].etcdctl(&["get", "after-kill-1"])),
        "after-kill-1\nx"
    );

    // With a voter down, etcd's strict reconfiguration check refuses to
    // add a voter (the new quorum would need the dead member) or to remove
    // a live one; the membership is unchanged.
    let spare = free_port();
    let out = c.members[followers[0]].etcdctl(&[
        "member",
        "add",
        "n4",
        &format!("--peer-urls=http://127.0.0.1:{spare}"),
    ]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("Error: etcdserver: unhealthy cluster"),
        "{out:?}"
    );
    let live = c.status(followers[1]).expect("status").member_id;
    let out = c.members[followers[0]].etcdctl(&["member", "remove", &format!("{live:x}")]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("Error: etcdserver: unhealthy cluster"),
        "{out:?}"
    );
    assert_eq!(member_list(&mut c).len(), 3);

    // The killed member restarts and catches up: same hashkv at the same
    // revision on all three.
    c.members[leader].spawn();
    c.members[leader].wait_ready(Duration::from_secs(20));
    let (rev, _) = converged(&c, &[0, 1, 2]);
    // Revision 1, then k1, k2, lk, its revocation, after-kill-0/1.
    assert_eq!(rev, 7);
    assert_eq!(
        ok(&c.members[leader].etcdctl(&["get", "after-kill-0"])),
        "after-kill-0\nx"
    );

    // A member of another cluster (wrong token) is refused and never joins,
    // whether it tries to join or to bootstrap with the running members.
    let before = member_list(&mut c).len();
    for state in ["existing", "new"] {
        let mut bad = Member {
            name: "intruder".into(),
            client_port: free_port(),
            peer_port: free_port(),
            peer_scheme: "http",
            dir: c.tmp.path().join(format!("intruder-{state}")),
            initial_cluster: String::new(),
            state: state.into(),
            token: "another-token".into(),
            extra: Vec::new(),
            client_tls: None,
            child: None,
        };
        bad.initial_cluster = format!("{},intruder={}", c.initial_cluster(), bad.peer_url());
        bad.spawn();
        let expected = match state {
            "existing" => "has another --initial-cluster-token",
            _ => "cluster id mismatch",
        };
        let what = format!("{state}: intruder still running or exited 0");
        bad.assert_exits(Duration::from_secs(15), &what, expected);
    }
    let refusals: usize = c
        .members
        .iter()
        .map(|m| {
            m.log().matches("another cluster").count()
                + m.log().matches("another --initial-cluster-token").count()
        })
        .sum();
    assert!(refusals > 0, "the members logged no refusal");
    assert_eq!(member_list(&mut c).len(), before);
    assert_eq!(ok(&c.etcdctl(&["put", "still", "fine"])), "OK");
    assert_eq!(ok(&c.etcdctl(&["get", "still"])), "still\nfine");
    converged(&c, &[0, 1, 2]);
}

/// The hex member id in etcdctl's "Member <id> added to cluster <cid>".
fn added_id(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .nth(1)
        .expect("member id in member add output")
        .to_string()
}

/// `etcdctl member add NAME --learner` with a free peer port: etcdctl's
/// output, the new member's hex id, and the member (not started yet) with
/// the `ETCD_INITIAL_CLUSTER` etcdctl printed.
fn add_learner(c: &mut Cluster, name: &str) -> (String, String, Member) {
    let peer_port = free_port();
    let out = c.etcdctl(&[
        "member",
        "add",
        name,
        "--learner",
        &format!("--peer-urls=http://127.0.0.1:{peer_port}"),
    ]);
    let text = ok(&out).to_string();
    let id = added_id(&text);
    let initial_cluster = text
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("ETCD_INITIAL_CLUSTER line")
        .to_string();
    let member = Member {
        name: name.into(),
        client_port: free_port(),
        peer_port,
        peer_scheme: "http",
        dir: c.tmp.path().join(name),
        initial_cluster,
        state: "existing".into(),
        token: c.token.clone(),
        extra: Vec::new(),
        client_tls: None,
        child: None,
    };
    (text, id, member)
}

#[test]
fn learner_joins_is_promoted_and_removed() {
    let mut c = Cluster::start(3, &[]);
    for i in 0..20 {
        ok(&c.etcdctl(&["put", &format!("pre/{i}"), "v"]));
    }

    // etcdctl member add --learner: the new member is listed, unstarted.
    let (text, id, mut m4) = add_learner(&mut c, "m4");
    let peer_url = m4.peer_url();
    assert!(text.starts_with("Member "), "{text}");
    assert!(text.contains(" added to cluster "), "{text}");
    assert!(text.contains("ETCD_NAME=\"m4\""), "{text}");
    assert!(
        text.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{text}"
    );
    assert!(
        text.contains(&format!("ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{peer_url}\"")),
        "{text}"
    );
    assert!(
        m4.initial_cluster.contains(&format!("m4={peer_url}")),
        "{}",
        m4.initial_cluster
    );
    let list = ok(&c.etcdctl(&["member", "list"])).to_string();
    assert!(
        list.contains(&format!("{id}, unstarted, , {peer_url}, , true")),
        "{list}"
    );

    // A learner that has not caught up cannot be promoted (etcd's error).
    let out = c.etcdctl(&["member", "promote", &id]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains(
            "Error: etcdserver: can only promote a learner member which is in sync with leader"
        ),
        "{out:?}"
    );

    // It starts with --initial-cluster-state existing and catches up.
    m4.spawn();
    m4.wait_ready(Duration::from_secs(20));
    c.members.push(m4);
    let s = c.status(3).expect("learner status");
    assert!(s.is_learner);
    eventually(Duration::from_secs(10), || {
        let out = c.members[3].etcdctl(&["get", "pre/19", "--consistency=s"]);
        (out.stdout.trim_end() == "pre/19\nv").then_some(())
    });
    // Like etcd, a learner serves only Status and serializable reads.
    let out = c.members[3].etcdctl(&["put", "on-learner", "x"]);
    assert!(
        out.stderr
            .contains("Error: etcdserver: rpc not supported for learner"),
        "{out:?}"
    );
    let out = c.members[3].etcdctl(&["get", "pre/1"]);
    assert!(
        out.stderr
            .contains("Error: etcdserver: rpc not supported for learner"),
        "{out:?}"
    );
    let list = ok(&c.members[0].etcdctl(&["member", "list"])).to_string();
    let m4_line = format!(
        "{id}, started, m4, {peer_url}, {}, true",
        c.members[3].client_url()
    );
    assert!(list.contains(&m4_line), "{list}");

    // Promote: four voters.
    let out = c.members[1].etcdctl(&["member", "promote", &id]);
    assert!(
        ok(&out).starts_with(&format!("Member {id:>16} promoted in cluster ")),
        "{out:?}"
    );
    let list = ok(&c.members[0].etcdctl(&["member", "list"])).to_string();
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(list.lines().all(|l| l.ends_with(", false")), "{list}");
    // The new voter learns of its promotion with the next replication.
    eventually(Duration::from_secs(5), || {
        (!c.status(3)?.is_learner).then_some(())
    });
    ok(&c.etcdctl(&["put", "with-four", "yes"]));
    assert_eq!(
        ok(&c.members[3].etcdctl(&["get", "with-four"])),
        "with-four\nyes"
    );

    // Remove it again: back to three, and the removed process is refused
    // from then on (it stops with a clear message).
    let out = c.members[0].etcdctl(&["member", "remove", &id]);
    assert!(
        ok(&out).starts_with(&format!("Member {id:>16} removed from cluster ")),
        "{out:?}"
    );
    c.members[3].assert_exits(
        Duration::from_secs(10),
        "removed member still running",
        "was removed from cluster",
    );
    let list = ok(&c.etcdctl(&["member", "list"])).to_string();
    assert_eq!(list.lines().count(), 3, "{list}");
    ok(&c.etcdctl(&["put", "with-three", "again"]));
    converged(&c, &[0, 1, 2]);

    // Its data dir cannot rejoin either.
    c.members[3].spawn();
    c.members[3].assert_exits(
        Duration::from_secs(15),
        "removed member rejoined",
        "was removed from cluster",
    );
}

/// A learner removed while it is down is refused when it comes back: no
/// leader replicates to it and a learner never campaigns, so it asks its
/// peers once it stops hearing from a leader, and stops with etcd's
/// "removed" refusal instead of waiting forever.
#[test]
fn a_learner_removed_while_down_stops_when_it_restarts() {
    let mut c = Cluster::start(3, &[]);
    let (_, id, mut m4) = add_learner(&mut c, "m4");
    m4.spawn();
    m4.wait_ready(Duration::from_secs(20));
    ok(&c.etcdctl(&["put", "seen-by-m4", "v"]));
    eventually(Duration::from_secs(10), || {
        let out = m4.etcdctl(&["get", "seen-by-m4", "--consistency=s"]);
        (out.stdout.trim_end() == "seen-by-m4\nv").then_some(())
    });

    m4.kill();
    let out = c.etcdctl(&["member", "remove", &id]);
    assert!(
        ok(&out).starts_with(&format!("Member {id:>16} removed from cluster ")),
        "{out:?}"
    );
    m4.spawn();
    m4.assert_exits(
        Duration::from_secs(20),
        "removed learner still running",
        "was removed from cluster",
    );
    let list = ok(&c.etcdctl(&["member", "list"])).to_string();
    assert_eq!(list.lines().count(), 3, "{list}");
}

#[test]
fn five_members_survive_two_failures_and_refuse_writes_without_quorum() {
    let mut c = Cluster::start(5, &[]);
    let leader = c.wait_leader(Duration::from_secs(10));
    ok(&c.etcdctl(&["put", "a", "1"]));

    // Kill the leader and one more: three of five still write.
    let second = (leader + 1) % 5;
    c.members[leader].kill();
    c.members[second].kill();
    for i in (0..5).filter(|i| *i != leader && *i != second) {
        let out = c.members[i].etcdctl(&["put", &format!("k{i}"), "v"]);
        assert_eq!(ok(&out), "OK");
    }
    let alive: Vec<usize> = (0..5).filter(|i| *i != leader && *i != second).collect();
    converged(&c, &alive);

    // A third failure: no quorum. Writes fail with an error within the
    // request deadline rather than hang.
    c.members[alive[0]].kill();
    let started = Instant::now();
    let out = c.members[alive[1]].etcdctl(&["--command-timeout=30s", "put", "lost", "v"]);
    let took = started.elapsed();
    assert_ne!(out.code, 0, "write without quorum succeeded: {out:?}");
    assert!(
        out.stderr.contains("etcdserver: request timed out")
            || out.stderr.contains("etcdserver: no leader"),
        "{out:?}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // Serializable reads still work locally.
    assert_eq!(
        ok(&c.members[alive[2]].etcdctl(&["get", "a", "--consistency=s"])),
        "a\n1"
    );
}

#[test]
fn lagging_member_catches_up_by_snapshot() {
    let mut c = Cluster::start(3, &["--snapshot-count", "100"]);
    let leader = c.wait_leader(Duration::from_secs(10));
    let lagging = (leader + 1) % 3;
    c.members[lagging].kill();

    // Many writes (with a compaction in between) while it is down: the
    // leader snapshots and purges its log.
    let endpoints: Vec<String> = (0..3)
        .filter(|i| *i != lagging)
        .map(|i| c.members[i].endpoint())
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = etcd_client::Client::connect(endpoints, None)
            .await
            .expect("connect");
        let mut tasks = Vec::new();
        for t in 0..8 {
            let mut kv = client.kv_client();
            tasks.push(tokio::spawn(async move {
                for i in 0..150 {
                    kv.put(format!("bulk/{t}/{i}"), format!("value-{i}"), None)
                        .await
                        .expect("put");
                }
            }));
        }
        for (n, t) in tasks.into_iter().enumerate() {
            t.await.expect("writer");
            if n == 3 {
                compact_now(&client).await;
            }
        }
    });

    // It restarts, receives a snapshot (its log is gone on the leader) and
    // ends up with the same data.
    c.members[lagging].spawn();
    c.members[lagging].wait_ready(Duration::from_secs(30));
    let (rev, _) = converged(&c, &[0, 1, 2]);
    assert_eq!(rev, 1 + 8 * 150);
    let purged = (0..3).filter(|i| *i != lagging).all(|i| {
        c.members[i]
            .log()
            .contains("purged the Raft log behind a snapshot")
    });
    assert!(purged, "the members that stayed up kept their whole log");
    assert!(
        c.members[lagging]
            .log()
            .contains("installed a snapshot from the leader"),
        "no snapshot installed:\n{}",
        c.members[lagging].log()
    );
    let out = c.members[lagging].etcdctl(&["get", "bulk/7/149", "--consistency=s"]);
    assert_eq!(ok(&out), "bulk/7/149\nvalue-149");
    let out = c.members[lagging].etcdctl(&["get", "bulk/", "--prefix", "--keys-only"]);
    assert_eq!(ok(&out).lines().filter(|l| !l.is_empty()).count(), 1200);
}

#[test]
fn members_talk_over_mutual_tls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs_dir = tmp.path().join("certs");
    certs(&certs_dir, &["init"]);
    certs(
        &certs_dir,
        &["peer", "--name", "member", "--hosts", "127.0.0.1"],
    );
    let file = |f: &str| certs_dir.join(f).display().to_string();
    let (cert, key, ca) = (file("member.pem"), file("member-key.pem"), file("ca.pem"));
    let flags = [
        "--peer-cert-file",
        cert.as_str(),
        "--peer-key-file",
        key.as_str(),
        "--peer-trusted-ca-file",
        ca.as_str(),
        "--peer-client-cert-auth",
    ];
    let mut c = Cluster::start_with(3, &flags, "https", tmp);
    let leader = c.wait_leader(Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    assert_eq!(
        ok(&c.members[follower].etcdctl(&["put", "tls", "yes"])),
        "OK"
    );
    let other = (leader + 2) % 3;
    assert_eq!(ok(&c.members[other].etcdctl(&["get", "tls"])), "tls\nyes");
    let list = ok(&c.etcdctl(&["member", "list"])).to_string();
    assert!(
        list.contains(&format!(", {}, ", c.members[0].peer_url())),
        "{list}"
    );
    assert!(c.members[0].peer_url().starts_with("https://"));

    // A would-be member whose certificate comes from another CA is refused
    // in the handshake: it cannot even ask to join.
    let other = c.tmp.path().join("other-ca");
    certs(&other, &["init"]);
    certs(
        &other,
        &["peer", "--name", "member", "--hosts", "127.0.0.1"],
    );
    let other_file = |f: &str| other.join(f).display().to_string();
    let mut stranger = Member {
        name: "stranger".into(),
        client_port: free_port(),
        peer_port: free_port(),
        peer_scheme: "https",
        dir: c.tmp.path().join("stranger"),
        initial_cluster: String::new(),
        state: "existing".into(),
        token: c.token.clone(),
        extra: vec![
            "--peer-cert-file".into(),
            other_file("member.pem"),
            "--peer-key-file".into(),
            other_file("member-key.pem"),
            "--peer-trusted-ca-file".into(),
            other_file("ca.pem"),
            "--peer-client-cert-auth".into(),
        ],
        client_tls: None,
        child: None,
    };
    stranger.initial_cluster = format!("{},stranger={}", c.initial_cluster(), stranger.peer_url());
    stranger.spawn();
    stranger.assert_exits(Duration::from_secs(20), "stranger", "cannot join");
    assert_eq!(member_list(&mut c).len(), 3);
}

/// Peer certificates rotate to a new CA while the cluster runs: each
/// member's files are rewritten and reloaded (SIGHUP), and connections made
/// afterwards present the new certificate. A member restarted after the
/// rotation trusts only the new CA, so it is reached only if the others
/// dial it with their new certificates, not with the ones they cached.
#[test]
fn peer_certificates_rotate_to_a_new_ca_while_the_cluster_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (old, new) = (tmp.path().join("ca-old"), tmp.path().join("ca-new"));
    for d in [&old, &new] {
        certs(d, &["init"]);
        certs(d, &["peer", "--name", "member", "--hosts", "127.0.0.1"]);
    }
    let read = |d: &std::path::Path, f: &str| std::fs::read(d.join(f)).expect("read cert file");
    let live = |root: &std::path::Path, i: usize, f: &str| root.join(format!("live-{i}")).join(f);
    let both_cas = [read(&old, "ca.pem"), read(&new, "ca.pem")].concat();
    for i in 1..=3 {
        std::fs::create_dir_all(live(tmp.path(), i, "")).expect("mkdir");
        std::fs::write(live(tmp.path(), i, "peer.pem"), read(&old, "member.pem")).unwrap();
        std::fs::write(
            live(tmp.path(), i, "peer-key.pem"),
            read(&old, "member-key.pem"),
        )
        .unwrap();
        std::fs::write(live(tmp.path(), i, "trust.pem"), &both_cas).unwrap();
    }
    let root = tmp.path().to_path_buf();
    let flags = |i: usize| -> Vec<String> {
        let f = |name: &str| live(&root, i, name).display().to_string();
        vec![
            "--peer-cert-file".into(),
            f("peer.pem"),
            "--peer-key-file".into(),
            f("peer-key.pem"),
            "--peer-trusted-ca-file".into(),
            f("trust.pem"),
            "--peer-client-cert-auth".into(),
        ]
    };
    let mut c = Cluster::start_tls(3, flags, "https", None, tmp);
    let leader = c.wait_leader(Duration::from_secs(10));
    ok(&c.etcdctl(&["put", "before", "rotation"]));

    // Rotate: the new CA's certificate, and trust in the new CA only.
    for i in 1..=3 {
        std::fs::write(live(&root, i, "peer.pem"), read(&new, "member.pem")).unwrap();
        std::fs::write(live(&root, i, "peer-key.pem"), read(&new, "member-key.pem")).unwrap();
        std::fs::write(live(&root, i, "trust.pem"), read(&new, "ca.pem")).unwrap();
    }
    for m in &c.members {
        let pid = m.child.as_ref().expect("running").id();
        let before = m.log().matches("SIGHUP: certificates reloaded").count();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
        eventually(Duration::from_secs(10), || {
            (m.log().matches("SIGHUP: certificates reloaded").count() > before).then_some(())
        });
    }

    // Restart a follower: every connection to it is new.
    let x = (leader + 1) % 3;
    c.members[x].kill();
    ok(&c.etcdctl(&["put", "while", "down"]));
    c.members[x].spawn();
    c.members[x].wait_ready(Duration::from_secs(30));
    ok(&c.etcdctl(&["put", "after", "rotation"]));
    eventually(Duration::from_secs(10), || {
        let out = c.members[x].etcdctl(&["get", "after", "--consistency=s"]);
        (out.stdout.trim_end() == "after\nrotation").then_some(())
    });
    converged(&c, &[0, 1, 2]);
}

/// A 3-member cluster with client AND peer certificate auth, from a set
/// made by `raftcd certs`: init; server; one peer certificate per member;
/// a client certificate. Client and peer URLs are all `https://`.
fn secure_cluster() -> Cluster {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("certs");
    certs(&dir, &["init"]);
    certs(&dir, &["server", "--hosts", "127.0.0.1"]);
    for i in 1..=3 {
        certs(
            &dir,
            &[
                "peer",
                "--name",
                &format!("member-{i}"),
                "--hosts",
                "127.0.0.1",
            ],
        );
    }
    certs(&dir, &["client", "--name", "client"]);
    let file = |f: &str| dir.join(f).display().to_string();
    let client = ClientTls {
        ca: file("ca.pem"),
        cert: file("client.pem"),
        key: file("client-key.pem"),
    };
    let flags = |i: usize| -> Vec<String> {
        vec![
            "--cert-file".into(),
            file("server.pem"),
            "--key-file".into(),
            file("server-key.pem"),
            "--trusted-ca-file".into(),
            file("ca.pem"),
            "--client-cert-auth".into(),
            "--peer-cert-file".into(),
            file(&format!("member-{i}.pem")),
            "--peer-key-file".into(),
            file(&format!("member-{i}-key.pem")),
            "--peer-trusted-ca-file".into(),
            file("ca.pem"),
            "--peer-client-cert-auth".into(),
        ]
    };
    Cluster::start_tls(3, flags, "https", Some(client), tmp)
}

#[test]
fn three_members_with_client_and_peer_cert_auth() {
    let mut c = secure_cluster();
    let tls = c.members[0].client_tls.clone().expect("client tls");
    for m in &c.members {
        assert!(m.client_url().starts_with("https://"));
        let (code, body) = tls.curl(&format!("https://127.0.0.1:{}/health", m.client_port));
        assert_eq!(
            (code, body.as_str()),
            (0, r#"{"health":"true"}"#),
            "{}",
            m.name
        );
    }
    let leader = c.wait_leader(Duration::from_secs(10));

    // Put through one member, get through another, each by itself; then
    // through all three https endpoints at once.
    let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
    assert_eq!(ok(&c.members[a].etcdctl(&["put", "secure", "yes"])), "OK");
    assert_eq!(ok(&c.members[b].etcdctl(&["get", "secure"])), "secure\nyes");
    let eps = c.endpoints();
    assert_eq!(eps.matches("https://127.0.0.1:").count(), 3, "{eps}");
    assert_eq!(ok(&c.etcdctl(&["put", "all", "three"])), "OK");
    assert_eq!(ok(&c.etcdctl(&["get", "all"])), "all\nthree");

    // member list: https peer and client URLs (client URLs are published
    // once the cluster runs).
    eventually(Duration::from_secs(10), || {
        let list = ok(&c.etcdctl(&["member", "list"])).to_string();
        c.members
            .iter()
            .all(|m| {
                list.contains(&format!(
                    ", started, {}, {}, {}, false",
                    m.name,
                    m.peer_url(),
                    m.client_url()
                ))
            })
            .then_some(())
    });
    let list = ok(&c.etcdctl(&["member", "list"])).to_string();
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(!list.contains("http://"), "{list}");

    // endpoint status over the three endpoints names exactly one leader.
    let status = ok(&c.etcdctl(&["endpoint", "status"])).to_string();
    let leaders: Vec<&str> = status
        .lines()
        .filter(|l| l.split(", ").nth(4) == Some("true"))
        .collect();
    assert_eq!(leaders.len(), 1, "{status}");
    assert!(
        leaders[0].starts_with(&format!("{}, ", c.members[leader].client_url())),
        "{status}"
    );
    assert_eq!(status.lines().count(), 3, "{status}");
}

#[test]
fn a_peer_with_a_client_only_certificate_cannot_join() {
    let mut c = secure_cluster();
    c.wait_leader(Duration::from_secs(10));
    let dir = c.tmp.path().join("certs");
    // Same CA, but a client certificate (clientAuth usage only).
    certs(&dir, &["client", "--name", "intruder"]);
    let file = |f: &str| dir.join(f).display().to_string();

    // Even once an operator has added it, the intruder cannot join: every
    // member's peer listener wants a peer certificate (serverAuth too).
    let peer_port = free_port();
    let peer_url = format!("https://127.0.0.1:{peer_port}");
    let out = c.etcdctl(&[
        "member",
        "add",
        "intruder",
        &format!("--peer-urls={peer_url}"),
    ]);
    let id = added_id(ok(&out));
    let mut intruder = Member {
        name: "intruder".into(),
        client_port: free_port(),
        peer_port,
        peer_scheme: "https",
        dir: c.tmp.path().join("intruder"),
        initial_cluster: format!("{},intruder={peer_url}", c.initial_cluster()),
        state: "existing".into(),
        token: c.token.clone(),
        extra: vec![
            "--peer-cert-file".into(),
            file("intruder.pem"),
            "--peer-key-file".into(),
            file("intruder-key.pem"),
            "--peer-trusted-ca-file".into(),
            file("ca.pem"),
            "--peer-client-cert-auth".into(),
        ],
        client_tls: None,
        child: None,
    };
    intruder.spawn();
    intruder.assert_exits(
        Duration::from_secs(20),
        "intruder still running or exited 0",
        "cannot join",
    );
    let refused = c
        .members
        .iter()
        .any(|m| m.log().contains("without the serverAuth usage"));
    assert!(refused, "no member refused the client-only certificate");

    // It never became a member: still unstarted, then removed; the three
    // members keep serving.
    let list = ok(&c.etcdctl(&["member", "list"])).to_string();
    assert!(
        list.contains(&format!(", unstarted, , {peer_url}, , false")),
        "{list}"
    );
    assert_eq!(list.matches(", started, ").count(), 3, "{list}");
    ok(&c.etcdctl(&["member", "remove", &id]));
    assert_eq!(member_list(&mut c).len(), 3);
    assert_eq!(ok(&c.etcdctl(&["put", "after", "intruder"])), "OK");
    assert_eq!(ok(&c.etcdctl(&["get", "after"])), "after\nintruder");
    converged(&c, &[0, 1, 2]);
}
