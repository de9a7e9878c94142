//! etcdctl 3.4 conformance: the real `etcdctl` against a real `raftcd`, with
//! every output compared exactly to what etcd 3.4.23 prints for the same
//! commands (`shared/reference/etcdctl-3.4.23-transcript.txt`, and etcd
//! 3.4.23 itself for the cases the transcript lacks).
//!
//! Only what legitimately differs between two servers is masked: cluster and
//! member ids (replaced by `<cluster>` / `<member>`, so every place that must
//! carry *this* server's id is still checked), raft terms and indexes,
//! timings, db sizes and hash values. Revisions are never masked: each test
//! starts a fresh server (revision 1, first write gets 2) and states the
//! revisions etcd would report.

use crate::common::{Out, Server};

// ---------------------------------------------------------------------------
// Harness: a server, etcdctl runs, masking and comparison helpers.
// ---------------------------------------------------------------------------

/// A fresh raftcd plus the identities its outputs must carry.
struct Ctl {
    server: Server,
    cluster_id: u64,
    member_id: u64,
    /// The peer URL the member was started with.
    peer_url: String,
}

impl Ctl {
    fn start() -> Ctl {
        let server = Server::start();
        let out = server.etcdctl(&["endpoint", "status", "-w", "json"]);
        assert_eq!(out.code, 0, "endpoint status failed: {out:?}");
        let status: serde_json::Value = serde_json::from_str(&out.stdout).expect("status json");
        let header = &status[0]["Status"]["header"];
        let cluster_id = header["cluster_id"].as_u64().expect("cluster_id");
        let member_id = header["member_id"].as_u64().expect("member_id");
        assert!(cluster_id != 0 && member_id != 0, "zero ids: {header}");
        let peer_url = started_flag(&server, "--initial-advertise-peer-urls");
        Ctl {
            server,
            cluster_id,
            member_id,
            peer_url,
        }
    }

    fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    fn member_hex(&self) -> String {
        format!("{:x}", self.member_id)
    }

    /// Run etcdctl, optionally with stdin.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        match stdin {
            Some(input) => self.server.etcdctl_in(args, input),
            None => self.server.etcdctl(args),
        }
    }

    /// Replace what legitimately differs from etcd with placeholders.
    fn mask(&self, s: &str) -> String {
        let mut out = s
            .replace(&self.cluster_id.to_string(), "<cluster>")
            .replace(&self.member_id.to_string(), "<member>")
            .replace(&self.member_hex(), "<member>");
        for (prefix, placeholder) in MASKED_NUMBERS {
            out = mask_after(&out, prefix, placeholder, |c| c.is_ascii_digit());
        }
        out = mask_after(&out, "\"took\":\"", "<took>", |c| c != '"');
        mask_after(&out, "took = ", "<took>", |c| c != '\n')
    }

    /// `etcdctl ARGS` exits 0, prints exactly `stdout` (one entry per line)
    /// once masked, and nothing on stderr.
    #[track_caller]
    fn expect(&self, args: &[&str], stdout: &[&str]) {
        self.check(args, None, stdout);
    }

    /// Like [`Ctl::expect`], feeding `stdin` (for `txn`).
    #[track_caller]
    fn expect_in(&self, args: &[&str], stdin: &str, stdout: &[&str]) {
        self.check(args, Some(stdin), stdout);
    }

    #[track_caller]
    fn check(&self, args: &[&str], stdin: Option<&str>, stdout: &[&str]) {
        let out = self.run(args, stdin);
        assert_eq!(
            (out.code, self.mask(&out.stdout), out.stderr.as_str()),
            (0, lines(stdout), ""),
            "etcdctl {args:?} (stdin {stdin:?})"
        );
    }

    /// `etcdctl ARGS` exits 1 with `Error: <error>` as its only stderr line
    /// (besides clientv3's JSON retry log) and prints nothing on stdout.
    #[track_caller]
    fn expect_error(&self, args: &[&str], error: &str) {
        let out = self.run(args, None);
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.starts_with("{\"level\":"))
            .collect();
        let want = format!("Error: {error}");
        assert_eq!(
            (out.code, out.stdout.as_str(), errors),
            (1, "", vec![want.as_str()]),
            "etcdctl {args:?}: {out:?}"
        );
    }

    /// Run a command that must succeed and parse its JSON output.
    #[track_caller]
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(args, None);
        assert_eq!(out.code, 0, "etcdctl {args:?}: {out:?}");
        serde_json::from_str(&out.stdout).expect("json output")
    }
}

/// Numbers that differ between servers, by the text that precedes them.
const MASKED_NUMBERS: &[(&str, &str)] = &[
    ("\"raft_term\":", "<term>"),
    ("\"raftTerm\":", "<term>"),
    ("\"RaftTerm\" : ", "<term>"),
    ("\"raftIndex\":", "<index>"),
    ("\"raftAppliedIndex\":", "<index>"),
    ("\"dbSize\":", "<size>"),
    ("\"dbSizeInUse\":", "<size>"),
    ("\"hash\":", "<hash>"),
];

/// Replace the run of characters matching `keep` after every `prefix`.
fn mask_after(s: &str, prefix: &str, placeholder: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(prefix) {
        let after = &rest[i + prefix.len()..];
        let end = after.find(|c| !keep(c)).unwrap_or(after.len());
        out.push_str(&rest[..i + prefix.len()]);
        out.push_str(placeholder);
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The value of `flag` on the running server's command line.
fn started_flag(server: &Server, flag: &str) -> String {
    let pid = server.child.as_ref().expect("server running").id();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read cmdline");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let i = args
        .iter()
        .position(|a| a == flag)
        .expect("flag on command line");
    args[i + 1].clone()
}

/// Lines as etcdctl prints them: each ends with a newline.
fn lines(ls: &[&str]) -> String {
    ls.iter().map(|l| format!("{l}\n")).collect()
}

/// Standard base64, as etcdctl's JSON shows keys and values.
fn b64(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A response header as etcdctl's JSON prints it, ids masked.
fn hdr(revision: i64) -> String {
    format!(
        r#"{{"cluster_id":<cluster>,"member_id":<member>,"revision":{revision},"raft_term":<term>}}"#
    )
}

/// A KeyValue as etcdctl's JSON prints it (empty value omitted).
fn kv(key: &str, create: i64, modified: i64, version: i64, value: &str) -> String {
    let mut s = format!(
        r#"{{"key":"{}","create_revision":{create},"mod_revision":{modified},"version":{version}"#,
        b64(key)
    );
    if !value.is_empty() {
        s += &format!(r#","value":"{}""#, b64(value));
    }
    s + "}"
}

/// A RangeResponse as `get -w json` prints it (zero fields omitted).
fn range_json(revision: i64, kvs: &[String], more: bool, count: i64) -> String {
    let mut s = format!(r#"{{"header":{}"#, hdr(revision));
    if !kvs.is_empty() {
        s += &format!(r#","kvs":[{}]"#, kvs.join(","));
    }
    if more {
        s += r#","more":true"#;
    }
    if count != 0 {
        s += &format!(r#","count":{count}"#);
    }
    s + "}"
}

/// An ASCII table as etcdctl's `-w table` draws it: headers centered,
/// cells right-aligned, one space of padding.
fn table(headers: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("{}+", "-".repeat(w + 2)))
        .collect();
    let rule = format!("+{rule}");
    let head: String = headers
        .iter()
        .zip(&widths)
        .map(|(h, w)| {
            let left = (w - h.len()) / 2;
            format!(
                " {}{h}{} |",
                " ".repeat(left),
                " ".repeat(w - h.len() - left)
            )
        })
        .collect();
    let mut out = vec![rule.clone(), format!("|{head}"), rule.clone()];
    for r in rows {
        let cells: String = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!(" {c:>w$} |"))
            .collect();
        out.push(format!("|{cells}"));
    }
    out.push(rule);
    out
}

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

/// The put/get/del/txn part of etcd's transcript, command for command: on a
/// fresh server every revision must come out as it did on etcd.
#[test]
fn transcript_put_get_del_txn() {
    let s = Ctl::start();
    s.expect(
        &["version"],
        &["etcdctl version: 3.4.23", "API version: 3.4"],
    );
    s.expect(&["put", "foo", "bar"], &["OK"]); // rev 2
    s.expect(&["put", "foo", "bar2", "--prev-kv"], &["OK", "foo", "bar"]); // rev 3
    s.expect(&["put", "foo2", "baz"], &["OK"]); // rev 4
    s.expect(&["get", "foo"], &["foo", "bar2"]);
    s.expect(&["get", "foo", "--print-value-only"], &["bar2"]);
    s.expect(
        &["get", "foo", "--prefix", "--keys-only"],
        &["foo", "", "foo2", ""],
    );
    s.expect(
        &["get", "foo", "-w", "json"],
        &[r#"{"header":{"cluster_id":<cluster>,"member_id":<member>,"revision":4,"raft_term":<term>},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":3,"version":2,"value":"YmFyMg=="}],"count":1}"#],
    );
    s.expect(
        &["get", "foo", "--prefix", "-w", "json"],
        &[r#"{"header":{"cluster_id":<cluster>,"member_id":<member>,"revision":4,"raft_term":<term>},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":3,"version":2,"value":"YmFyMg=="},{"key":"Zm9vMg==","create_revision":4,"mod_revision":4,"version":1,"value":"YmF6"}],"count":2}"#],
    );
    s.expect(&["get", "nosuchkey"], &[]);
    s.expect(
        &["get", "nosuchkey", "-w", "json"],
        &[r#"{"header":{"cluster_id":<cluster>,"member_id":<member>,"revision":4,"raft_term":<term>}}"#],
    );
    s.expect(
        &["get", "foo", "-w", "fields"],
        &[
            r#""ClusterID" : <cluster>"#,
            r#""MemberID" : <member>"#,
            r#""Revision" : 4"#,
            r#""RaftTerm" : <term>"#,
            r#""Key" : "foo""#,
            r#""CreateRevision" : 2"#,
            r#""ModRevision" : 3"#,
            r#""Version" : 2"#,
            r#""Value" : "bar2""#,
            r#""Lease" : 0"#,
            r#""More" : false"#,
            r#""Count" : 1"#,
        ],
    );
    s.expect(
        &["get", "foo", "--rev=1", "-w", "json"],
        &[r#"{"header":{"cluster_id":<cluster>,"member_id":<member>,"revision":4,"raft_term":<term>}}"#],
    );
    s.expect(
        &["put", "foo3", "x", "-w", "json"],
        &[r#"{"header":{"cluster_id":<cluster>,"member_id":<member>,"revision":5,"raft_term":<term>}}"#],
    );
    s.expect(&["del", "foo2"], &["1"]); // rev 6
    s.expect(&["del", "nosuchkey"], &["0"]);
    s.expect(
        &["del", "foo", "--prefix", "--prev-kv"],
        &["2", "foo", "bar2", "foo3", "x"],
    ); // rev 7
    s.expect(&["put", "foo", "bar"], &["OK"]); // rev 8

    // txn -i: prompts on stdout; a read after a write in the same txn sees it.
    s.expect_in(
        &["txn", "-i"],
        "value(\"foo\") = \"bar\"\n\nput foo newval\nget foo\n\nput foo other\n\n",
        &[
            "compares:",
            "success requests (get, put, del):",
            "failure requests (get, put, del):",
            "SUCCESS",
            "",
            "OK",
            "",
            "foo",
            "newval",
        ],
    ); // rev 9
    s.expect_in(
        &["txn"],
        "mod(\"foo\") = \"1\"\n\nput foo never\n\nget foo\n\n",
        &["FAILURE", "", "foo", "newval"],
    );
    s.expect_in(
        &["txn", "-w", "json"],
        "value(\"foo\") = \"newval\"\n\nput foo v3\n\nget foo\n\n",
        &[r#"{"header":{"cluster_id":<cluster>,"member_id":<member>,"revision":10,"raft_term":<term>},"succeeded":true,"responses":[{"Response":{"ResponsePut":{"header":{"revision":10}}}}]}"#],
    ); // rev 10
    s.expect_in(
        &["txn", "-w", "json"],
        "value(\"foo\") = \"nope\"\n\nput foo v4\n\nget foo\n\n",
        &[r#"{"header":{"cluster_id":<cluster>,"member_id":<member>,"revision":10,"raft_term":<term>},"responses":[{"Response":{"ResponseRange":{"header":{"revision":10},"kvs":[{"key":"Zm9v","create_revision":8,"mod_revision":10,"version":3,"value":"djM="}],"count":1}}}]}"#],
    );
    s.expect_in(
        &["txn"],
        "create(\"lockkey\") = \"0\"\n\nput lockkey me\n\nget lockkey\n\n",
        &["SUCCESS", "", "OK"],
    ); // rev 11
    s.expect_in(
        &["txn"],
        "version(\"foo\") > \"0\"\nmod(\"foo\") < \"1000000\"\n\ndel foo\n\n\n",
        &["SUCCESS", "", "1"],
    ); // rev 12
    s.expect(
        &["get", "", "--prefix", "-w", "json"],
        &[&range_json(12, &[kv("lockkey", 11, 11, 1, "me")], false, 1)],
    );
}

/// get: key ranges, revisions, sorting on every target in both orders,
/// limits, output formats, and keys with `/`, `+`, `=` and spaces.
#[test]
fn get_ranges_sorting_and_limits() {
    let s = Ctl::start();
    s.expect(&["put", "a/1", "x y"], &["OK"]); // rev 2
    s.expect(&["put", "a/2", "z"], &["OK"]); // rev 3
    s.expect(&["put", "a/3", "y"], &["OK"]); // rev 4
    s.expect(&["put", "a/1", "w"], &["OK"]); // rev 5
    s.expect(&["put", "a/0", "b"], &["OK"]); // rev 6
    s.expect(&["put", "a/2", "c"], &["OK"]); // rev 7
    s.expect(&["put", "b", "1"], &["OK"]); // rev 8

    // State at revision 8: key -> (create, mod, version, value).
    let state = |k: &str| -> (i64, i64, i64, &'static str) {
        match k {
            "a/0" => (6, 6, 1, "b"),
            "a/1" => (2, 5, 2, "w"),
            "a/2" => (3, 7, 2, "c"),
            "a/3" => (4, 4, 1, "y"),
            "b" => (8, 8, 1, "1"),
            _ => unreachable!(),
        }
    };
    let pairs = |keys: &[&'static str]| -> Vec<&'static str> {
        keys.iter().flat_map(|k| [*k, state(k).3]).collect()
    };
    let kvs = |keys: &[&str]| -> Vec<String> {
        keys.iter()
            .map(|k| {
                let (c, m, v, val) = state(k);
                kv(k, c, m, v, val)
            })
            .collect()
    };

    // Ranges.
    s.expect(
        &["get", "a/", "--prefix"],
        &pairs(&["a/0", "a/1", "a/2", "a/3"]),
    );
    s.expect(&["get", "a/1", "a/3"], &pairs(&["a/1", "a/2"]));
    s.expect(&["get", "--from-key", "a/2"], &pairs(&["a/2", "a/3", "b"]));
    s.expect(
        &["get", "", "--prefix", "--keys-only"],
        &["a/0", "", "a/1", "", "a/2", "", "a/3", "", "b", ""],
    );
    s.expect(
        &["get", "a/", "--prefix", "--print-value-only"],
        &["b", "w", "c", "y"],
    );
    s.expect(
        &["get", "a/", "--prefix", "--keys-only", "-w", "json"],
        &[&range_json(
            8,
            &[
                kv("a/0", 6, 6, 1, ""),
                kv("a/1", 2, 5, 2, ""),
                kv("a/2", 3, 7, 2, ""),
                kv("a/3", 4, 4, 1, ""),
            ],
            false,
            4,
        )],
    );
    s.expect(&["get", "a/"], &[]);
    s.expect(
        &["get", "a/", "-w", "json"],
        &[&range_json(8, &[], false, 0)],
    );

    // Past revisions.
    s.expect(&["get", "a/1", "--rev=2"], &["a/1", "x y"]);
    s.expect(&["get", "a/1", "--rev=4"], &["a/1", "x y"]);
    s.expect(&["get", "a/1", "--rev=5"], &["a/1", "w"]);
    s.expect(&["get", "a/0", "--rev=5"], &[]);
    s.expect(
        &["get", "a/", "--prefix", "--rev=4", "-w", "json"],
        &[&range_json(
            8,
            &[
                kv("a/1", 2, 2, 1, "x y"),
                kv("a/2", 3, 3, 1, "z"),
                kv("a/3", 4, 4, 1, "y"),
            ],
            false,
            3,
        )],
    );
    s.expect(&["get", "a/1", "--rev=8"], &["a/1", "w"]);
    s.expect_error(&["get", "a/1", "--rev=9"], FUTURE);

    // Sorting. Ties stay in ascending key order in both directions, as etcd
    // 3.4.23 returns them.
    let sorted = [
        ("KEY", "ASCEND", ["a/0", "a/1", "a/2", "a/3"]),
        ("KEY", "DESCEND", ["a/3", "a/2", "a/1", "a/0"]),
        ("VERSION", "ASCEND", ["a/0", "a/3", "a/1", "a/2"]),
        ("VERSION", "DESCEND", ["a/1", "a/2", "a/0", "a/3"]),
        ("CREATE", "ASCEND", ["a/1", "a/2", "a/3", "a/0"]),
        ("CREATE", "DESCEND", ["a/0", "a/3", "a/2", "a/1"]),
        ("MODIFY", "ASCEND", ["a/3", "a/1", "a/0", "a/2"]),
        ("MODIFY", "DESCEND", ["a/2", "a/0", "a/1", "a/3"]),
        ("VALUE", "ASCEND", ["a/0", "a/2", "a/1", "a/3"]),
        ("VALUE", "DESCEND", ["a/3", "a/1", "a/2", "a/0"]),
    ];
    for (target, order, keys) in sorted {
        let by = format!("--sort-by={target}");
        let ord = format!("--order={order}");
        s.expect(&["get", "a/", "--prefix", &by, &ord], &pairs(&keys));
    }
    // A target without an order sorts ascending.
    s.expect(
        &["get", "a/", "--prefix", "--sort-by=VERSION"],
        &pairs(&["a/0", "a/3", "a/1", "a/2"]),
    );
    // An order without a target sorts by key.
    s.expect(
        &["get", "a/", "--prefix", "--order=DESCEND"],
        &pairs(&["a/3", "a/2", "a/1", "a/0"]),
    );

    // Limits: `count` is the whole range, `more` says it was cut.
    s.expect(
        &["get", "a/", "--prefix", "--limit=2"],
        &pairs(&["a/0", "a/1"]),
    );
    s.expect(
        &["get", "a/", "--prefix", "--limit=2", "-w", "json"],
        &[&range_json(8, &kvs(&["a/0", "a/1"]), true, 4)],
    );
    s.expect(
        &["get", "a/", "--prefix", "--limit=4", "-w", "json"],
        &[&range_json(
            8,
            &kvs(&["a/0", "a/1", "a/2", "a/3"]),
            false,
            4,
        )],
    );
    s.expect(
        &["get", "a/", "--prefix", "--limit=10", "-w", "json"],
        &[&range_json(
            8,
            &kvs(&["a/0", "a/1", "a/2", "a/3"]),
            false,
            4,
        )],
    );
    s.expect(
        &[
            "get",
            "a/",
            "--prefix",
            "--limit=2",
            "--sort-by=VERSION",
            "--order=ASCEND",
            "-w",
            "json",
        ],
        &[&range_json(8, &kvs(&["a/0", "a/3"]), true, 4)],
    );
    s.expect(
        &[
            "get",
            "a/",
            "--prefix",
            "--limit=2",
            "--sort-by=KEY",
            "--order=DESCEND",
            "-w",
            "json",
        ],
        &[&range_json(8, &kvs(&["a/3", "a/2"]), true, 4)],
    );
    // etcd quirk: with a non-key target but no order, the limit applies to
    // the key-ordered range first, then what is left is sorted.
    s.expect(
        &[
            "get",
            "a/",
            "--prefix",
            "--limit=2",
            "--sort-by=VERSION",
            "-w",
            "json",
        ],
        &[&range_json(8, &kvs(&["a/0", "a/1"]), true, 4)],
    );
    s.expect(
        &["get", "a/", "--prefix", "--limit=2", "-w", "fields"],
        &[
            r#""ClusterID" : <cluster>"#,
            r#""MemberID" : <member>"#,
            r#""Revision" : 8"#,
            r#""RaftTerm" : <term>"#,
            r#""Key" : "a/0""#,
            r#""CreateRevision" : 6"#,
            r#""ModRevision" : 6"#,
            r#""Version" : 1"#,
            r#""Value" : "b""#,
            r#""Lease" : 0"#,
            r#""Key" : "a/1""#,
            r#""CreateRevision" : 2"#,
            r#""ModRevision" : 5"#,
            r#""Version" : 2"#,
            r#""Value" : "w""#,
            r#""Lease" : 0"#,
            r#""More" : true"#,
            r#""Count" : 4"#,
        ],
    );

    // Keys and values with `/`, `+`, `=` and spaces.
    let key = "dir/k=v+w x";
    let value = "val = + / x";
    s.expect(&["put", key, value], &["OK"]); // rev 9
    s.expect(&["get", key], &[key, value]);
    s.expect(
        &["get", "dir/k=v+", "--prefix", "--print-value-only"],
        &[value],
    );
    s.expect(
        &["get", key, "-w", "json"],
        &[&range_json(9, &[kv(key, 9, 9, 1, value)], false, 1)],
    );
    s.expect(&["put", key, "a+b=c d", "--prev-kv"], &["OK", key, value]); // rev 10
    s.expect(
        &["del", "dir/", "--prefix", "--prev-kv"],
        &["1", key, "a+b=c d"],
    ); // rev 11
    s.expect(&["get", "dir/", "--prefix"], &[]);
}

/// del in every form, put/del `--prev-kv` in JSON, and txn compares of every
/// kind (value/version/create/mod with =, >, <, !=) on both branches.
#[test]
fn del_and_txn_compares() {
    let s = Ctl::start();
    s.expect(&["put", "a/1", "1"], &["OK"]); // rev 2
    s.expect(&["put", "a/2", "2"], &["OK"]); // rev 3
    s.expect(&["put", "a/3", "3"], &["OK"]); // rev 4
    s.expect(&["del", "a/1"], &["1"]); // rev 5
    s.expect(&["del", "a/1"], &["0"]);
    s.expect(&["del", "a/", "--prefix"], &["2"]); // rev 6
    s.expect(&["del", "a/", "--prefix"], &["0"]);
    s.expect(&["put", "x", "1"], &["OK"]); // rev 7
    s.expect(&["del", "x", "--prev-kv"], &["1", "x", "1"]); // rev 8
    s.expect(&["put", "b", "1"], &["OK"]); // rev 9
    s.expect(
        &["del", "b", "--prev-kv", "-w", "json"],
        &[&format!(
            r#"{{"header":{},"deleted":1,"prev_kvs":[{}]}}"#,
            hdr(10),
            kv("b", 9, 9, 1, "1")
        )],
    ); // rev 10
    s.expect(
        &["del", "b", "-w", "json"],
        &[&format!(r#"{{"header":{}}}"#, hdr(10))],
    );
    s.expect(
        &["del", "b", "-w", "fields"],
        &[
            r#""ClusterID" : <cluster>"#,
            r#""MemberID" : <member>"#,
            r#""Revision" : 10"#,
            r#""RaftTerm" : <term>"#,
            r#""Deleted" : 0"#,
        ],
    );
    // A recreated key starts again at version 1 with a new create revision.
    s.expect(
        &["put", "x", "1", "--prev-kv", "-w", "json"],
        &[&format!(r#"{{"header":{}}}"#, hdr(11))],
    ); // rev 11
    s.expect(
        &["put", "x", "2", "--prev-kv", "-w", "json"],
        &[&format!(
            r#"{{"header":{},"prev_kv":{}}}"#,
            hdr(12),
            kv("x", 11, 11, 1, "1")
        )],
    ); // rev 12
    s.expect(
        &["get", "x", "-w", "json"],
        &[&range_json(12, &[kv("x", 11, 12, 2, "2")], false, 1)],
    );

    // t: create 13, mod 14, version 2, value "6".
    s.expect(&["put", "t", "5"], &["OK"]); // rev 13
    s.expect(&["put", "t", "6"], &["OK"]); // rev 14
    let compares = [
        (r#"value("t") = "6""#, true),
        (r#"value("t") = "5""#, false),
        (r#"value("t") > "5""#, true),
        (r#"value("t") > "6""#, false),
        (r#"value("t") < "7""#, true),
        (r#"value("t") < "6""#, false),
        (r#"value("t") != "5""#, true),
        (r#"value("t") != "6""#, false),
        (r#"version("t") = "2""#, true),
        (r#"version("t") = "1""#, false),
        (r#"version("t") > "1""#, true),
        (r#"version("t") > "2""#, false),
        (r#"version("t") < "3""#, true),
        (r#"version("t") < "2""#, false),
        (r#"version("t") != "1""#, true),
        (r#"version("t") != "2""#, false),
        (r#"create("t") = "13""#, true),
        (r#"create("t") = "14""#, false),
        (r#"create("t") > "12""#, true),
        (r#"create("t") > "13""#, false),
        (r#"create("t") < "14""#, true),
        (r#"create("t") < "13""#, false),
        (r#"create("t") != "14""#, true),
        (r#"create("t") != "13""#, false),
        (r#"mod("t") = "14""#, true),
        (r#"mod("t") = "13""#, false),
        (r#"mod("t") > "13""#, true),
        (r#"mod("t") > "14""#, false),
        (r#"mod("t") < "15""#, true),
        (r#"mod("t") < "14""#, false),
        (r#"mod("t") != "13""#, true),
        (r#"mod("t") != "14""#, false),
        // A missing key has version, create and mod 0; any value compare
        // on it fails, even `!=`.
        (r#"version("nokey") = "0""#, true),
        (r#"create("nokey") = "0""#, true),
        (r#"mod("nokey") > "0""#, false),
        (r#"value("nokey") = """#, false),
        (r#"value("nokey") != "x""#, false),
        // Several compares must all hold.
        ("value(\"t\") = \"6\"\nversion(\"t\") = \"2\"", true),
        ("value(\"t\") = \"6\"\nversion(\"t\") = \"1\"", false),
    ];
    for (cmp, holds) in compares {
        let stdin = format!("{cmp}\n\nget t\n\nget x\n\n");
        let want: &[&str] = if holds {
            &["SUCCESS", "", "t", "6"]
        } else {
            &["FAILURE", "", "x", "2"]
        };
        s.expect_in(&["txn"], &stdin, want);
    }
    // Read-only txns change nothing.
    s.expect(
        &["get", "t", "-w", "json"],
        &[&range_json(14, &[kv("t", 13, 14, 2, "6")], false, 1)],
    );

    // Put-if-absent: the first wins, the second sees the holder.
    let lock = "create(\"lock\") = \"0\"\n\nput lock me\n\nget lock\n\n";
    s.expect_in(&["txn"], lock, &["SUCCESS", "", "OK"]); // rev 15
    s.expect_in(&["txn"], lock, &["FAILURE", "", "lock", "me"]);

    // Writes on the failure branch; several ops share one revision and
    // later ops see earlier ones.
    s.expect_in(
        &["txn"],
        "value(\"t\") = \"5\"\n\nput t never\n\nput t 7\nput u 1\n\n",
        &["FAILURE", "", "OK", "", "OK"],
    ); // rev 16
    s.expect_in(
        &["txn", "-w", "json"],
        "\nput p/1 a\nput p/2 b\ndel u\nget p/ --prefix\nget p/ --prefix --keys-only --limit=1\n\n\n",
        &[&format!(
            concat!(
                r#"{{"header":{},"succeeded":true,"responses":["#,
                r#"{{"Response":{{"ResponsePut":{{"header":{{"revision":17}}}}}}}},"#,
                r#"{{"Response":{{"ResponsePut":{{"header":{{"revision":17}}}}}}}},"#,
                r#"{{"Response":{{"ResponseDeleteRange":{{"header":{{"revision":17}},"deleted":1}}}}}},"#,
                r#"{{"Response":{{"ResponseRange":{{"header":{{"revision":17}},"kvs":[{},{}],"count":2}}}}}},"#,
                r#"{{"Response":{{"ResponseRange":{{"header":{{"revision":17}},"kvs":[{}],"more":true,"count":2}}}}}}"#,
                "]}}"
            ),
            hdr(17),
            kv("p/1", 17, 17, 1, "a"),
            kv("p/2", 17, 17, 1, "b"),
            kv("p/1", 17, 17, 1, ""),
        )],
    ); // rev 17
    s.expect(&["get", "t"], &["t", "7"]);
    s.expect(&["get", "u"], &[]);
    // Two writes to one key in one txn are refused and change nothing.
    let out = s.run(&["txn"], Some("\nput d 1\nput d 2\n\n\n"));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .lines()
            .any(|l| l == "Error: etcdserver: duplicate key given in txn request"),
        "{out:?}"
    );
    s.expect(
        &["get", "", "--prefix", "--keys-only"],
        &["lock", "", "p/1", "", "p/2", "", "t", "", "x", ""],
    );
    s.expect(
        &["put", "z", "1", "-w", "json"],
        &[&format!(r#"{{"header":{}}}"#, hdr(18))],
    );
}

/// compaction, reading around it, and hashkv's view of it.
#[test]
fn compaction_and_revisions() {
    let s = Ctl::start();
    for i in 1..=5 {
        s.expect(&["put", "k", &format!("v{i}")], &["OK"]); // revs 2..=6
    }
    let hashkv = |s: &Ctl| -> (u64, i64, i64) {
        let v = s.json(&["endpoint", "hashkv", "-w", "json"]);
        let h = &v[0]["HashKV"];
        (
            h["hash"].as_u64().expect("hash"),
            h["compact_revision"].as_i64().expect("compact_revision"),
            h["header"]["revision"].as_i64().expect("revision"),
        )
    };
    let (h1, compacted, rev) = hashkv(&s);
    assert_eq!((compacted, rev), (-1, 6));
    s.expect(
        &["endpoint", "hashkv", "-w", "json"],
        &[&format!(
            r#"[{{"Endpoint":"{}","HashKV":{{"header":{},"hash":<hash>,"compact_revision":-1}}}}]"#,
            s.endpoint(),
            hdr(6)
        )],
    );
    let (h1_again, _, _) = hashkv(&s);
    assert_eq!(h1, h1_again, "hash changed without a write");
    s.expect(&["put", "k", "v6"], &["OK"]); // rev 7
    let (h2, _, rev) = hashkv(&s);
    assert_eq!(rev, 7);
    assert_ne!(h1, h2, "hash did not change after a write");
    let plain = s.run(&["endpoint", "hashkv"], None);
    assert_eq!(
        (plain.code, plain.stdout),
        (0, format!("{}, {h2}\n", s.endpoint()))
    );

    s.expect_error(&["compaction", "8"], FUTURE);
    s.expect(&["compaction", "4"], &["compacted revision 4"]);
    s.expect_error(&["compaction", "4"], COMPACTED);
    s.expect_error(&["compaction", "3"], COMPACTED);
    s.expect_error(&["get", "k", "--rev=3"], COMPACTED);
    s.expect_error(&["get", "k", "--rev=1"], COMPACTED);
    s.expect(&["get", "k", "--rev=4"], &["k", "v3"]);
    s.expect(&["get", "k", "--rev=6"], &["k", "v5"]);
    s.expect_error(&["get", "k", "--rev=8"], FUTURE);
    s.expect(
        &["get", "k", "-w", "json"],
        &[&range_json(7, &[kv("k", 2, 7, 6, "v6")], false, 1)],
    );
    assert_eq!(hashkv(&s).1, 4);

    s.expect(
        &["compaction", "--physical", "6"],
        &["compacted revision 6"],
    );
    s.expect_error(&["get", "k", "--rev=5"], COMPACTED);
    s.expect(&["get", "k", "--rev=6"], &["k", "v5"]);
    assert_eq!(hashkv(&s).1, 6);
    // Compaction is not a write: the revision stays.
    s.expect(&["put", "k", "v7"], &["OK"]); // rev 8
    s.expect(
        &["get", "k", "-w", "json"],
        &[&range_json(8, &[kv("k", 2, 8, 7, "v7")], false, 1)],
    );
}

/// member list, endpoint health/status, defrag, alarm list, snapshot save.
#[test]
fn cluster_and_maintenance() {
    let s = Ctl::start();
    let ep = s.endpoint();
    let client_url = s.server.url();
    let name = s.server.name.clone();
    let peer = s.peer_url.clone();

    s.expect(
        &["member", "list"],
        &[&format!(
            "<member>, started, {name}, {peer}, {client_url}, false"
        )],
    );
    s.expect(
        &["member", "list", "-w", "json"],
        &[&format!(
            r#"{{"header":{{"cluster_id":<cluster>,"member_id":<member>,"raft_term":<term>}},"members":[{{"ID":<member>,"name":"{name}","peerURLs":["{peer}"],"clientURLs":["{client_url}"]}}]}}"#
        )],
    );
    // The table is checked unmasked: the id's width shapes it.
    let out = s.run(&["member", "list", "-w", "table"], None);
    let want = table(
        &[
            "ID",
            "STATUS",
            "NAME",
            "PEER ADDRS",
            "CLIENT ADDRS",
            "IS LEARNER",
        ],
        &[vec![
            s.member_hex(),
            "started".into(),
            name.clone(),
            peer.clone(),
            client_url.clone(),
            "false".into(),
        ]],
    );
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(
        (out.code, out.stdout, out.stderr),
        (0, lines(&want), String::new())
    );

    // endpoint health prints to stderr, as etcdctl 3.4 does.
    let out = s.run(&["endpoint", "health"], None);
    assert_eq!(
        (out.code, out.stdout.as_str(), s.mask(&out.stderr)),
        (
            0,
            "",
            format!("{ep} is healthy: successfully committed proposal: took = <took>\n")
        )
    );
    s.expect(
        &["endpoint", "health", "-w", "json"],
        &[&format!(
            r#"[{{"endpoint":"{ep}","health":true,"took":"<took>"}}]"#
        )],
    );

    s.expect(&["put", "foo", "bar"], &["OK"]); // rev 2
    s.expect(
        &["endpoint", "status", "-w", "json"],
        &[&format!(
            r#"[{{"Endpoint":"{ep}","Status":{{"header":{},"version":"3.4.23","dbSize":<size>,"leader":<member>,"raftIndex":<index>,"raftTerm":<term>,"raftAppliedIndex":<index>,"dbSizeInUse":<size>}}}}]"#,
            hdr(2)
        )],
    );
    let status = s.json(&["endpoint", "status", "-w", "json"]);
    let st = &status[0]["Status"];
    let raft_index = st["raftIndex"].as_u64().expect("raftIndex");
    assert!(raft_index > 0);
    assert_eq!(st["raftAppliedIndex"].as_u64(), Some(raft_index));
    assert_eq!(st["leader"].as_u64(), Some(s.member_id));
    assert_eq!(st["raftTerm"], st["header"]["raft_term"]);
    // Plain: endpoint, id, version, db size, is leader, is learner, raft
    // term, raft index, raft applied index, errors.
    let out = s.run(&["endpoint", "status"], None);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""));
    let line = out.stdout.strip_suffix('\n').expect("one line");
    let cols: Vec<&str> = line.split(", ").collect();
    assert_eq!(cols.len(), 10, "{line:?}");
    assert_eq!(cols[..3], [ep.as_str(), s.member_hex().as_str(), "3.4.23"]);
    assert!(cols[3].ends_with('B'), "db size {:?}", cols[3]);
    assert_eq!(cols[4..6], ["true", "false"]);
    assert!(
        cols[6].parse::<u64>().is_ok_and(|t| t >= 1),
        "raft term {:?}",
        cols[6]
    );
    assert_eq!(cols[7], cols[8], "raft index != applied index");
    assert!(cols[7].parse::<u64>().is_ok(), "raft index {:?}", cols[7]);
    assert_eq!(cols[9], "");

    s.expect(
        &["defrag"],
        &[&format!("Finished defragmenting etcd member[{ep}]")],
    );
    s.expect(
        &["defrag", "-w", "json"],
        &[&format!("Finished defragmenting etcd member[{ep}]")],
    );
    s.expect(&["alarm", "list"], &[]);
    s.expect(&["alarm", "list", "-w", "json"], &["{}"]);

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("snap.db");
    let file = file.to_str().expect("utf-8 path");
    let out = s.run(&["snapshot", "save", file], None);
    assert_eq!(
        (out.code, out.stdout),
        (0, format!("Snapshot saved at {file}\n")),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("Error"), "{}", out.stderr);
    let size = std::fs::metadata(file).expect("snapshot file").len();
    assert_eq!(size % 512, 32, "snapshot size {size}");
    // Nothing above wrote: the revision is still 2.
    s.expect(
        &["get", "foo", "-w", "json"],
        &[&range_json(2, &[kv("foo", 2, 2, 1, "bar")], false, 1)],
    );
}

/// etcdctl dials each endpoint of `endpoint status`, `endpoint hashkv` and
/// `snapshot save` on its own, and with an `http://` endpoint grpc-go then
/// sends `http://HOST:PORT` as the requests' `:authority`. etcd serves
/// them; so must we (h2 alone refuses them with `PROTOCOL_ERROR`).
#[test]
fn maintenance_through_an_endpoint_given_with_its_scheme() {
    let s = Ctl::start();
    let url = s.server.url();
    let ctl = |args: &[&str]| crate::common::etcdctl(&url, args, None);
    let out = ctl(&["put", "foo", "bar"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "OK\n"),
        "{}",
        out.stderr
    );

    let out = ctl(&["endpoint", "status"]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{}", out.stdout);
    let line = out.stdout.strip_suffix('\n').expect("one line");
    let cols: Vec<&str> = line.split(", ").collect();
    assert_eq!(cols.len(), 10, "{line:?}");
    assert_eq!(cols[..3], [url.as_str(), s.member_hex().as_str(), "3.4.23"]);
    assert_eq!(cols[4..6], ["true", "false"]);

    let out = ctl(&["endpoint", "hashkv"]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{}", out.stdout);
    let (ep, hash) = out.stdout.trim_end().split_once(", ").expect("two columns");
    assert_eq!(ep, url);
    assert!(hash.parse::<u32>().is_ok(), "hash {hash:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("snap.db");
    let file = file.to_str().expect("utf-8 path");
    let out = ctl(&["snapshot", "save", file]);
    assert_eq!(
        (out.code, out.stdout),
        (0, format!("Snapshot saved at {file}\n")),
        "{}",
        out.stderr
    );
    let size = std::fs::metadata(file).expect("snapshot file").len();
    assert_eq!(size % 512, 32, "snapshot size {size}");
}
