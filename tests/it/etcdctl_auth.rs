//! etcdctl 3.4 conformance of the auth commands: `user`, `role`, `auth`
//! and `--user`, run by the real `etcdctl` against a real raftcd, every
//! output compared exactly with etcd 3.4.23's.
//!
//! How the expected outputs were recorded: etcd 3.4.23 (`/usr/bin/etcd`)
//! was started on free loopback ports in a temp dir (`--data-dir D
//! --listen-client-urls http://127.0.0.1:P --listen-peer-urls
//! http://127.0.0.1:P+1 ...`), the steps below were run in order with
//! etcdctl 3.4.23 (`ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:P ARGS`,
//! stdin where given), and each step's exit code, stdout and stderr were
//! saved; stderr keeps only etcdctl's own lines (clientv3's JSON retry logs,
//! which carry timestamps and client ids, are dropped on both sides). CI has
//! no etcd server, so the outputs are written here.

use crate::common::{etcdctl, Server};

/// One etcdctl run: stdin, args, exit code, stdout, and stderr without
/// clientv3's JSON logs.
type Step = (
    Option<&'static str>,
    &'static [&'static str],
    i32,
    &'static str,
    &'static [&'static str],
);

/// The runs in order, as etcd 3.4.23 answered them.
const STEPS: &[Step] = &[
    (
        None,
        &["auth", "enable"],
        1,
        "",
        &["Error: etcdserver: root user does not exist"],
    ),
    (
        Some("rootpw\n"),
        &["user", "add", "root", "--interactive=false"],
        0,
        "User root created\n",
        &[],
    ),
    (
        None,
        &["user", "add", "alice:alicepw"],
        0,
        "User alice created\n",
        &[],
    ),
    (
        None,
        &["user", "add", "alice:x"],
        1,
        "",
        &["Error: etcdserver: user name already exists"],
    ),
    (
        None,
        &["user", "add", "bob", "--no-password"],
        0,
        "User bob created\n",
        &[],
    ),
    (
        None,
        &["role", "add", "reader"],
        0,
        "Role reader created\n",
        &[],
    ),
    (
        None,
        &["role", "add", "reader"],
        1,
        "",
        &["Error: etcdserver: role name already exists"],
    ),
    (
        None,
        &["role", "grant-permission", "reader", "read", "app/", "--prefix"],
        0,
        "Role reader updated\n",
        &[],
    ),
    (
        None,
        &["role", "grant-permission", "reader", "readwrite", "k1"],
        0,
        "Role reader updated\n",
        &[],
    ),
    (
        None,
        &["role", "grant-permission", "reader", "write", "from", "--from-key"],
        0,
        "Role reader updated\n",
        &[],
    ),
    (
        None,
        &["role", "grant-permission", "reader", "write", "a", "b"],
        0,
        "Role reader updated\n",
        &[],
    ),
    (
        None,
        &["role", "grant-permission", "nope", "read", "x"],
        1,
        "",
        &["Error: etcdserver: role name not found"],
    ),
    (
        None,
        &["role", "get", "reader"],
        0,
        "Role reader\nKV Read:\n\t[app/, app0) (prefix app/)\n\tk1\nKV Write:\n\t[a, b) (prefix a)\n\t[from, <open ended>\n\tk1\n",
        &[],
    ),
    (
        None,
        &["role", "list"],
        0,
        "reader\n",
        &[],
    ),
    (
        None,
        &["user", "grant-role", "alice", "reader"],
        0,
        "Role reader is granted to user alice\n",
        &[],
    ),
    (
        None,
        &["user", "grant-role", "alice", "nope"],
        1,
        "",
        &["Error: etcdserver: role name not found"],
    ),
    (
        None,
        &["user", "grant-role", "nobody", "reader"],
        1,
        "",
        &["Error: etcdserver: user name not found"],
    ),
    (
        None,
        &["user", "get", "alice"],
        0,
        "User: alice\nRoles: reader\n",
        &[],
    ),
    (
        None,
        &["user", "get", "alice", "--detail"],
        0,
        "User: alice\n\nRole reader\nKV Read:\n\t[app/, app0) (prefix app/)\n\tk1\nKV Write:\n\t[a, b) (prefix a)\n\t[from, <open ended>\n\tk1\n",
        &[],
    ),
    (
        None,
        &["user", "list"],
        0,
        "alice\nbob\nroot\n",
        &[],
    ),
    (
        None,
        &["user", "get", "nobody"],
        1,
        "",
        &["Error: etcdserver: user name not found"],
    ),
    (
        None,
        &["role", "get", "nope"],
        1,
        "",
        &["Error: etcdserver: role name not found"],
    ),
    (
        None,
        &["user", "revoke-role", "alice", "nope"],
        1,
        "",
        &["Error: etcdserver: role is not granted to the user"],
    ),
    (
        None,
        &["role", "revoke-permission", "reader", "zz"],
        1,
        "",
        &["Error: etcdserver: permission is not granted to the role"],
    ),
    (
        None,
        &["put", "app/x", "1"],
        0,
        "OK\n",
        &[],
    ),
    (
        None,
        &["put", "other", "1"],
        0,
        "OK\n",
        &[],
    ),
    (
        None,
        &["auth", "enable"],
        0,
        "Authentication Enabled\n",
        &[],
    ),
    (
        None,
        &["get", "k1"],
        1,
        "",
        &["Error: etcdserver: user name is empty"],
    ),
    (
        None,
        &["user", "list"],
        1,
        "",
        &["Error: etcdserver: user name is empty"],
    ),
    (
        None,
        &["--user", "alice:alicepw", "get", "app/x"],
        0,
        "app/x\n1\n",
        &[],
    ),
    (
        None,
        &["--user", "alice:alicepw", "put", "other", "v"],
        0,
        "OK\n",
        &[],
    ),
    (
        None,
        &["--user", "alice:alicepw", "put", "k1", "v1"],
        0,
        "OK\n",
        &[],
    ),
    (
        None,
        &["--user", "alice:alicepw", "get", "k1"],
        0,
        "k1\nv1\n",
        &[],
    ),
    (
        None,
        &["--user", "alice:alicepw", "get", "app/", "--prefix"],
        0,
        "app/x\n1\n",
        &[],
    ),
    (
        None,
        &["--user", "alice:alicepw", "get", "", "--prefix"],
        1,
        "",
        &["Error: etcdserver: permission denied"],
    ),
    (
        None,
        &["--user", "alice:wrong", "get", "k1"],
        2,
        "",
        &["Error: etcdserver: authentication failed, invalid user ID or password"],
    ),
    (
        None,
        &["--user", "nobody:x", "get", "k1"],
        2,
        "",
        &["Error: etcdserver: authentication failed, invalid user ID or password"],
    ),
    (
        None,
        &["--user", "bob:x", "get", "k1"],
        2,
        "",
        &["Error: rpc error: code = Unknown desc = auth: authentication failed, password was given for no password user"],
    ),
    (
        None,
        &["--user", "alice:alicepw", "user", "list"],
        1,
        "",
        &["Error: etcdserver: permission denied"],
    ),
    (
        None,
        &["--user", "alice:alicepw", "user", "get", "alice"],
        0,
        "User: alice\nRoles: reader\n",
        &[],
    ),
    (
        None,
        &["--user", "alice:alicepw", "user", "get", "root"],
        1,
        "",
        &["Error: etcdserver: permission denied"],
    ),
    (
        None,
        &["--user", "alice:alicepw", "role", "get", "reader"],
        0,
        "Role reader\nKV Read:\n\t[app/, app0) (prefix app/)\n\tk1\nKV Write:\n\t[a, b) (prefix a)\n\t[from, <open ended>\n\tk1\n",
        &[],
    ),
    (
        None,
        &["--user", "alice:alicepw", "auth", "disable"],
        1,
        "",
        &["Error: etcdserver: permission denied"],
    ),
    (
        None,
        &["--user", "root:rootpw", "user", "get", "root"],
        0,
        "User: root\nRoles: root\n",
        &[],
    ),
    (
        None,
        &["--user", "root:rootpw", "role", "get", "root"],
        0,
        "Role root\nKV Read:\nKV Write:\n",
        &[],
    ),
    (
        None,
        &["--user", "root:rootpw", "user", "delete", "root"],
        1,
        "",
        &["Error: etcdserver: invalid auth management"],
    ),
    (
        None,
        &["--user", "root:rootpw", "user", "revoke-role", "root", "root"],
        1,
        "",
        &["Error: etcdserver: invalid auth management"],
    ),
    (
        None,
        &["--user", "root:rootpw", "role", "delete", "root"],
        1,
        "",
        &["Error: etcdserver: invalid auth management"],
    ),
    (
        Some("newpw\n"),
        &["--user", "root:rootpw", "user", "passwd", "alice", "--interactive=false"],
        0,
        "Password updated\n",
        &[],
    ),
    (
        None,
        &["--user", "alice:alicepw", "get", "k1"],
        2,
        "",
        &["Error: etcdserver: authentication failed, invalid user ID or password"],
    ),
    (
        None,
        &["--user", "alice:newpw", "get", "k1"],
        0,
        "k1\nv1\n",
        &[],
    ),
    (
        None,
        &["--user", "root:rootpw", "role", "revoke-permission", "reader", "k1"],
        0,
        "Permission of key k1 is revoked from role reader\n",
        &[],
    ),
    (
        None,
        &["--user", "root:rootpw", "role", "revoke-permission", "reader", "app/", "--prefix"],
        0,
        "Permission of range [app/, app0) is revoked from role reader\n",
        &[],
    ),
    (
        None,
        &["--user", "root:rootpw", "role", "revoke-permission", "reader", "from", "--from-key"],
        0,
        "Permission of range [from, <open ended> is revoked from role reader\n",
        &[],
    ),
    (
        None,
        &["--user", "root:rootpw", "role", "get", "reader"],
        0,
        "Role reader\nKV Read:\nKV Write:\n\t[a, b) (prefix a)\n",
        &[],
    ),
    (
        None,
        &["--user", "root:rootpw", "user", "revoke-role", "alice", "reader"],
        0,
        "Role reader is revoked from user alice\n",
        &[],
    ),
    (
        None,
        &["--user", "root:rootpw", "user", "get", "alice"],
        0,
        "User: alice\nRoles:\n",
        &[],
    ),
    (
        None,
        &["--user", "root:rootpw", "role", "delete", "reader"],
        0,
        "Role reader deleted\n",
        &[],
    ),
    (
        None,
        &["--user", "root:rootpw", "user", "delete", "alice"],
        0,
        "User alice deleted\n",
        &[],
    ),
    (
        None,
        &["--user", "root:rootpw", "user", "list"],
        0,
        "bob\nroot\n",
        &[],
    ),
    (
        None,
        &["--user", "root:rootpw", "role", "list"],
        0,
        "root\n",
        &[],
    ),
    (
        None,
        &["--user", "root:rootpw", "auth", "disable"],
        0,
        "Authentication Disabled\n",
        &[],
    ),
    (
        None,
        &["auth", "disable"],
        0,
        "Authentication Disabled\n",
        &[],
    ),
    (
        None,
        &["user", "list"],
        0,
        "bob\nroot\n",
        &[],
    ),
    (
        None,
        &["--user", "root:rootpw", "get", "k1"],
        0,
        "k1\nv1\n",
        &[],
    ),
];

#[test]
fn user_role_and_auth_commands_print_what_etcd_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_in(
        &tmp.path().join("data"),
        crate::common::free_port(),
        &["--bcrypt-cost", "4"],
    );
    for (stdin, args, code, stdout, stderr) in STEPS {
        let out = etcdctl(&server.endpoint(), args, *stdin);
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.starts_with("{\"level\":"))
            .collect();
        assert_eq!(
            (out.code, out.stdout.as_str(), errors),
            (*code, *stdout, stderr.to_vec()),
            "etcdctl {args:?} (stdin {stdin:?})"
        );
    }
}
