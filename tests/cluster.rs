//! Multi-member clusters of real `raftcd` processes on loopback, driven
//! with the real etcdctl: static bootstrap, writes and linearizable reads on
//! any member, leader failure and catch-up, refusing a member of another
//! cluster, membership changes, quorum loss, catch-up by snapshot.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{eventually, Cluster, Member, ELECTION_MS};
use common::free_port;

fn ok(out: &common::Out) -> &str {
    assert_eq!(out.code, 0, "etcdctl failed: {out:?}");
    out.stdout.trim_end()
}

/// (revision, hash) of `endpoint hashkv` on member `i`.
fn hashkv(c: &Cluster, i: usize) -> Option<(i64, u64)> {
    let out = c.members[i].etcdctl(&["endpoint", "hashkv", "-w", "json"]);
    if out.code != 0 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    let h = &v[0]["HashKV"];
    Some((h["header"]["revision"].as_i64()?, h["hash"].as_u64()?))
}

/// Wait until the running members in `which` report the same hashkv at
/// the same revision; that pair.
fn converged(c: &Cluster, which: &[usize]) -> (i64, u64) {
    eventually(Duration::from_secs(20), || {
        let all: Vec<(i64, u64)> = which.iter().map(|i| hashkv(c, *i)).collect::<Option<_>>()?;
        all.windows(2).all(|w| w[0] == w[1]).then(|| all[0])
    })
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

    // The killed member restarts and catches up: same hashkv at the same
    // revision on all three.
    c.members[leader].spawn();
    c.members[leader].wait_ready(Duration::from_secs(20));
    let (rev, _) = converged(&c, &[0, 1, 2]);
    assert_eq!(rev, 5, "4 puts after the initial revision 1");
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
            dir: c.tmp.path().join(format!("intruder-{state}")),
            initial_cluster: String::new(),
            state: state.into(),
            token: "another-token".into(),
            extra: Vec::new(),
            child: None,
        };
        bad.initial_cluster = format!("{},intruder={}", c.initial_cluster(), bad.peer_url());
        bad.spawn();
        let code = bad.wait_exit(Duration::from_secs(15));
        let log = bad.log();
        assert!(
            matches!(code, Some(c) if c != 0),
            "{state}: intruder still running or exited 0: {code:?}\n{log}"
        );
        let expected = match state {
            "existing" => "has another --initial-cluster-token",
            _ => "cluster id mismatch",
        };
        assert!(log.contains(expected), "{state}: {log}");
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
