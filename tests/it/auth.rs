//! etcd's v3 auth through the Rust `etcd-client` crate and raw gRPC, against
//! real raftcd processes: users and roles, permissions on every kind of
//! request, tokens (TTL, refresh, replication to every member, JWT),
//! enabling and disabling, and the auth store surviving restarts, snapshots
//! and backups. The servers hash with `--bcrypt-cost 4` (etcd's minimum) to
//! keep the tests quick; the cost does not change any behaviour.

use std::path::Path;
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, Permission, PermissionType, Txn, TxnOp,
    WatchOptions,
};
use raftcd::pb::etcdserverpb::auth_client::AuthClient;
use raftcd::pb::etcdserverpb::kv_client::KvClient;
use raftcd::pb::etcdserverpb::{AuthenticateRequest, RangeRequest};
use tonic::Code;

use crate::common::cluster::Cluster;
use crate::common::{free_port, grpc, Server};

/// The fast bcrypt cost every server here runs with.
const FAST: [&str; 2] = ["--bcrypt-cost", "4"];

fn flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = FAST.to_vec();
    v.extend_from_slice(extra);
    v
}

/// A server with auth flags in a temp dir that outlives restarts.
struct AuthServer {
    server: Option<Server>,
    dir: std::path::PathBuf,
    port: u16,
    extra: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl AuthServer {
    fn start(extra: &[&str]) -> AuthServer {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let port = free_port();
        let extra: Vec<String> = flags(extra).iter().map(|s| s.to_string()).collect();
        let mut s = AuthServer {
            server: None,
            dir,
            port,
            extra,
            _tmp: tmp,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.server = Some(Server::start_in(&self.dir, self.port, &extra));
    }

    /// Kill the process and start it again with the same flags.
    fn restart(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill();
        }
        self.spawn();
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn client(&self) -> Client {
        Client::connect([self.endpoint()], None).await.unwrap()
    }

    async fn login(&self, user: &str, password: &str) -> Result<Client, etcd_client::Error> {
        login(&self.endpoint(), user, password).await
    }
}

async fn login(endpoint: &str, user: &str, password: &str) -> Result<Client, etcd_client::Error> {
    Client::connect(
        [endpoint],
        Some(ConnectOptions::new().with_user(user, password)),
    )
    .await
}

/// root (password "rootpw", root role), alice ("alicepw", role `reader`:
/// read `app/` and write `app/w/`), then auth enabled.
async fn setup(c: &mut Client) {
    c.user_add("root", "rootpw", None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.role_add("reader").await.unwrap();
    c.role_grant_permission("reader", Permission::read("app/").with_prefix())
        .await
        .unwrap();
    c.role_grant_permission("reader", Permission::write("app/w/").with_prefix())
        .await
        .unwrap();
    c.user_add("alice", "alicepw", None).await.unwrap();
    c.user_grant_role("alice", "reader").await.unwrap();
    c.auth_enable().await.unwrap();
}

fn denied() -> (Code, String) {
    (
        Code::PermissionDenied,
        "etcdserver: permission denied".into(),
    )
}

fn invalid_token() -> (Code, String) {
    (
        Code::Unauthenticated,
        "etcdserver: invalid auth token".into(),
    )
}

/// A token from `endpoint`'s Authenticate.
async fn token(endpoint: &str, user: &str, password: &str) -> Result<String, tonic::Status> {
    let mut a = AuthClient::connect(format!("http://{endpoint}"))
        .await
        .unwrap();
    let r = a
        .authenticate(AuthenticateRequest {
            name: user.into(),
            password: password.into(),
        })
        .await?;
    Ok(r.into_inner().token)
}

/// Range `key` on `endpoint` with `token` in the metadata.
async fn get_with(endpoint: &str, token: &str, key: &str) -> Result<usize, (Code, String)> {
    let mut kv = KvClient::connect(format!("http://{endpoint}"))
        .await
        .unwrap();
    let mut req = tonic::Request::new(RangeRequest {
        key: key.to_string().into(),
        ..Default::default()
    });
    req.metadata_mut().insert("token", token.parse().unwrap());
    kv.range(req)
        .await
        .map(|r| r.into_inner().kvs.len())
        .map_err(|s| (s.code(), s.message().to_string()))
}

/// LeaseRevoke on `endpoint` with `token` in the metadata.
async fn revoke_with(endpoint: &str, token: &str, id: i64) -> Result<(), (Code, String)> {
    use raftcd::pb::etcdserverpb::lease_client::LeaseClient;
    let mut l = LeaseClient::connect(format!("http://{endpoint}"))
        .await
        .unwrap();
    let mut req = tonic::Request::new(raftcd::pb::etcdserverpb::LeaseRevokeRequest { id });
    req.metadata_mut().insert("token", token.parse().unwrap());
    l.lease_revoke(req)
        .await
        .map(|_| ())
        .map_err(|s| (s.code(), s.message().to_string()))
}

#[tokio::test]
async fn users_and_roles_crud_with_etcd_s_errors() {
    let s = AuthServer::start(&[]);
    let mut c = s.client().await;
    // Enabling needs a root user, with the root role.
    assert_eq!(
        grpc(c.auth_enable().await),
        (
            Code::FailedPrecondition,
            "etcdserver: root user does not exist".into()
        )
    );
    c.user_add("root", "pw", None).await.unwrap();
    assert_eq!(
        grpc(c.auth_enable().await),
        (
            Code::FailedPrecondition,
            "etcdserver: root user does not have root role".into()
        )
    );
    assert_eq!(
        grpc(c.user_add("root", "pw", None).await),
        (
            Code::FailedPrecondition,
            "etcdserver: user name already exists".into()
        )
    );
    assert_eq!(
        grpc(c.user_add("", "pw", None).await),
        (
            Code::InvalidArgument,
            "etcdserver: user name is empty".into()
        )
    );
    c.user_add("bob", "pw", None).await.unwrap();
    c.role_add("r1").await.unwrap();
    c.role_add("r2").await.unwrap();
    assert_eq!(
        grpc(c.role_add("r1").await),
        (
            Code::FailedPrecondition,
            "etcdserver: role name already exists".into()
        )
    );
    // Granting an unknown role changes nothing.
    assert_eq!(
        grpc(c.user_grant_role("bob", "nope").await),
        (
            Code::FailedPrecondition,
            "etcdserver: role name not found".into()
        )
    );
    assert_eq!(
        grpc(c.user_grant_role("nobody", "r1").await),
        (
            Code::FailedPrecondition,
            "etcdserver: user name not found".into()
        )
    );
    assert!(c.user_get("bob").await.unwrap().roles().is_empty());
    c.user_grant_role("bob", "r2").await.unwrap();
    c.user_grant_role("bob", "r1").await.unwrap();
    assert_eq!(c.user_get("bob").await.unwrap().roles(), ["r1", "r2"]);
    assert_eq!(
        grpc(c.user_revoke_role("root", "r1").await),
        (
            Code::FailedPrecondition,
            "etcdserver: role is not granted to the user".into()
        )
    );
    c.user_revoke_role("bob", "r2").await.unwrap();
    assert_eq!(c.user_get("bob").await.unwrap().roles(), ["r1"]);
    // Permissions: sorted by key, an equal range updated in place.
    c.role_grant_permission("r1", Permission::read("b"))
        .await
        .unwrap();
    c.role_grant_permission("r1", Permission::write("a").with_prefix())
        .await
        .unwrap();
    c.role_grant_permission("r1", Permission::read_write("b"))
        .await
        .unwrap();
    let perms = c.role_get("r1").await.unwrap().permissions();
    let shown: Vec<(i32, Vec<u8>, Vec<u8>)> = perms
        .iter()
        .map(|p| (p.get_type(), p.key().to_vec(), p.range_end().to_vec()))
        .collect();
    assert_eq!(
        shown,
        [
            (PermissionType::Write as i32, b"a".to_vec(), b"b".to_vec()),
            (PermissionType::Readwrite as i32, b"b".to_vec(), Vec::new()),
        ]
    );
    assert_eq!(
        grpc(c.role_revoke_permission("r1", "zz", None).await),
        (
            Code::FailedPrecondition,
            "etcdserver: permission is not granted to the role".into()
        )
    );
    c.role_revoke_permission("r1", "b", None).await.unwrap();
    assert_eq!(c.role_get("r1").await.unwrap().permissions().len(), 1);
    assert_eq!(c.user_list().await.unwrap().users(), ["bob", "root"]);
    assert_eq!(c.role_list().await.unwrap().roles(), ["r1", "r2"]);
    // Deleting a role takes it from its users.
    c.role_delete("r1").await.unwrap();
    assert!(c.user_get("bob").await.unwrap().roles().is_empty());
    assert_eq!(
        grpc(c.role_get("r1").await),
        (
            Code::FailedPrecondition,
            "etcdserver: role name not found".into()
        )
    );
    c.user_delete("bob").await.unwrap();
    assert_eq!(
        grpc(c.user_get("bob").await),
        (
            Code::FailedPrecondition,
            "etcdserver: user name not found".into()
        )
    );
    let e = token(&s.endpoint(), "root", "pw").await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::FailedPrecondition,
            "etcdserver: authentication is not enabled"
        )
    );
    c.user_grant_role("root", "root").await.unwrap();
    c.auth_enable().await.unwrap();
    // Now everything needs credentials.
    assert_eq!(
        grpc(c.get("k", None).await),
        (
            Code::InvalidArgument,
            "etcdserver: user name is empty".into()
        )
    );
    assert_eq!(
        grpc(c.user_list().await),
        (
            Code::InvalidArgument,
            "etcdserver: user name is empty".into()
        )
    );
    let mut root = s.login("root", "pw").await.unwrap();
    assert_eq!(
        grpc(root.user_delete("root").await),
        (
            Code::InvalidArgument,
            "etcdserver: invalid auth management".into()
        )
    );
    assert_eq!(
        grpc(root.user_revoke_role("root", "root").await),
        (
            Code::InvalidArgument,
            "etcdserver: invalid auth management".into()
        )
    );
    root.put("k", "v", None).await.unwrap();
    root.auth_disable().await.unwrap();
    // Disabled again: no credentials needed.
    assert_eq!(c.get("k", None).await.unwrap().kvs().len(), 1);
}

#[tokio::test]
async fn permissions_are_enforced_on_every_kind_of_request() {
    let s = AuthServer::start(&[]);
    let mut c = s.client().await;
    setup(&mut c).await;
    let mut root = s.login("root", "rootpw").await.unwrap();
    root.put("app/x", "1", None).await.unwrap();
    root.put("other", "1", None).await.unwrap();
    let mut alice = s.login("alice", "alicepw").await.unwrap();

    // Reads under app/, not elsewhere.
    assert_eq!(alice.get("app/x", None).await.unwrap().kvs().len(), 1);
    let all = GetOptions::new().with_prefix();
    assert_eq!(
        alice
            .get("app/", Some(all.clone()))
            .await
            .unwrap()
            .kvs()
            .len(),
        1
    );
    assert_eq!(grpc(alice.get("other", None).await), denied());
    assert_eq!(
        grpc(alice.get("", Some(GetOptions::new().with_all_keys())).await),
        denied()
    );
    // Writes under app/w/ only.
    assert_eq!(grpc(alice.put("app/x", "2", None).await), denied());
    assert_eq!(grpc(alice.put("other", "2", None).await), denied());
    alice.put("app/w/1", "a", None).await.unwrap();
    assert_eq!(grpc(alice.delete("app/x", None).await), denied());
    alice.delete("app/w/1", None).await.unwrap();
    // Txn: every compare and both branches are checked.
    let ok = Txn::new().and_then([TxnOp::get("app/x", None), TxnOp::put("app/w/2", "b", None)]);
    assert!(alice.txn(ok).await.unwrap().succeeded());
    let bad_else = Txn::new()
        .and_then([TxnOp::get("app/x", None)])
        .or_else([TxnOp::put("other", "x", None)]);
    assert_eq!(grpc(alice.txn(bad_else).await), denied());
    let bad_compare = Txn::new()
        .when([etcd_client::Compare::value(
            "other",
            etcd_client::CompareOp::Equal,
            "1",
        )])
        .and_then([TxnOp::get("app/x", None)]);
    assert_eq!(grpc(alice.txn(bad_compare).await), denied());
    let read_only = Txn::new().and_then([TxnOp::get("app/", Some(all))]);
    assert!(alice.txn(read_only).await.unwrap().succeeded());
    // Nothing alice was refused happened.
    let r = root.get("other", None).await.unwrap();
    assert_eq!(r.kvs()[0].value(), b"1");
    assert_eq!(
        root.get("app/x", None).await.unwrap().kvs()[0].value(),
        b"1"
    );

    // Leases: revoking needs write permission on the lease's keys. The
    // etcd-client crate sends no token on Lease calls, so its revoke of a
    // lease with keys is anonymous (etcd answers it the same).
    let lease = root.lease_grant(60, None).await.unwrap().id();
    root.put(
        "other",
        "l",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    assert_eq!(
        grpc(alice.lease_revoke(lease).await),
        (
            Code::InvalidArgument,
            "etcdserver: user name is empty".into()
        )
    );
    let t = token(&s.endpoint(), "alice", "alicepw").await.unwrap();
    assert_eq!(revoke_with(&s.endpoint(), &t, lease).await, Err(denied()));
    // ...and attaching to such a lease is refused too.
    assert_eq!(
        grpc(
            alice
                .put(
                    "app/w/3",
                    "x",
                    Some(etcd_client::PutOptions::new().with_lease(lease))
                )
                .await
        ),
        denied()
    );
    let mine = alice.lease_grant(60, None).await.unwrap().id();
    alice
        .put(
            "app/w/3",
            "x",
            Some(etcd_client::PutOptions::new().with_lease(mine)),
        )
        .await
        .unwrap();
    assert_eq!(revoke_with(&s.endpoint(), &t, mine).await, Ok(()));
    assert!(root.get("app/w/3", None).await.unwrap().kvs().is_empty());

    // Watch: checked when created.
    let mut stream = alice
        .watch("app/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let created = stream.message().await.unwrap().unwrap();
    assert!(created.created() && !created.canceled());
    root.put("app/y", "w", None).await.unwrap();
    let ev = stream.message().await.unwrap().unwrap();
    assert_eq!(ev.events()[0].event_type(), EventType::Put);
    let mut refused = alice.watch("other", None).await.unwrap();
    let r = refused.message().await.unwrap().unwrap();
    assert!(r.created() && r.canceled(), "{r:?}");
    assert_eq!(
        r.cancel_reason(),
        "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
    );

    // Admin calls need the root role.
    assert_eq!(grpc(alice.user_list().await), denied());
    assert_eq!(grpc(alice.role_add("x").await), denied());
    assert_eq!(grpc(alice.hash_kv(0).await), denied());
    assert_eq!(grpc(alice.defragment().await), denied());
    assert_eq!(
        grpc(
            alice
                .member_add(["http://127.0.0.1:1".to_string()], None)
                .await
        ),
        denied()
    );
    // But a user sees itself and its roles.
    assert_eq!(alice.user_get("alice").await.unwrap().roles(), ["reader"]);
    assert_eq!(
        alice.role_get("reader").await.unwrap().permissions().len(),
        2
    );
    assert_eq!(grpc(alice.user_get("root").await), denied());
    // Status and member list need no role.
    alice.status().await.unwrap();
    alice.member_list().await.unwrap();
    root.user_list().await.unwrap();
    root.hash_kv(0).await.unwrap();

    // A permission granted now applies at once.
    root.role_grant_permission("reader", Permission::read("other"))
        .await
        .unwrap();
    assert_eq!(alice.get("other", None).await.unwrap().kvs().len(), 1);
}

/// Lock and Election run with the caller's permissions (etcd serves them
/// through its in-process client, which carries the caller's token): a
/// user may lock or campaign only where it may read and write the keys.
#[tokio::test]
async fn lock_and_election_run_with_the_caller_s_permissions() {
    let s = AuthServer::start(&[]);
    let mut c = s.client().await;
    setup(&mut c).await;
    let mut alice = s.login("alice", "alicepw").await.unwrap();

    let held = alice.lock("app/w/lk", None).await.unwrap();
    assert!(held.key().starts_with(b"app/w/lk/"), "{:?}", held.key());
    alice.unlock(held.key()).await.unwrap();
    let (_, message) = grpc(alice.lock("other", None).await);
    assert_eq!(message, "etcdserver: permission denied");
    // Read-only keys: the lock key cannot be written.
    let (_, message) = grpc(alice.lock("app/ro", None).await);
    assert_eq!(message, "etcdserver: permission denied");

    let lease = alice.lease_grant(60, None).await.unwrap().id();
    let won = alice.campaign("app/w/el", "v1", lease).await.unwrap();
    let leader = won.leader().expect("leader key").clone();
    assert_eq!(
        alice
            .leader("app/w/el")
            .await
            .unwrap()
            .kv()
            .map(|kv| kv.value().to_vec()),
        Some(b"v1".to_vec())
    );
    alice
        .resign(Some(etcd_client::ResignOptions::new().with_leader(leader)))
        .await
        .unwrap();
    let (_, message) = grpc(alice.campaign("other", "v1", lease).await);
    assert_eq!(message, "etcdserver: permission denied");
    let (_, message) = grpc(alice.leader("other").await);
    assert_eq!(message, "etcdserver: permission denied");
    // Nothing was written where alice may not write.
    let mut root = s.login("root", "rootpw").await.unwrap();
    let everything = GetOptions::new().with_all_keys();
    let keys: Vec<Vec<u8>> = root
        .get("", Some(everything))
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(|kv| kv.key().to_vec())
        .collect();
    assert!(
        keys.iter().all(|k| k.starts_with(b"app/w/")),
        "keys outside alice's write range: {keys:?}"
    );
}

#[tokio::test]
async fn bad_credentials_are_refused_and_change_nothing() {
    let s = AuthServer::start(&[]);
    let mut c = s.client().await;
    setup(&mut c).await;
    let failed = (
        Code::InvalidArgument,
        "etcdserver: authentication failed, invalid user ID or password".to_string(),
    );
    let e = token(&s.endpoint(), "alice", "wrong").await.unwrap_err();
    assert_eq!((e.code(), e.message().to_string()), failed);
    let e = token(&s.endpoint(), "mallory", "x").await.unwrap_err();
    assert_eq!((e.code(), e.message().to_string()), failed);
    assert!(login(&s.endpoint(), "alice", "wrong").await.is_err());
    // Forged and malformed tokens.
    for t in [
        "",
        "abc",
        "AAAAAAAAAAAAAAAA.1",
        "AAAAAAAAAAAAAAAA.999999999",
    ] {
        assert_eq!(
            get_with(&s.endpoint(), t, "app/x").await,
            Err(invalid_token()),
            "{t:?}"
        );
    }
    // A real token works; after a password change it does not.
    let t = token(&s.endpoint(), "alice", "alicepw").await.unwrap();
    assert_eq!(get_with(&s.endpoint(), &t, "app/x").await, Ok(0));
    assert!(t.split_once('.').unwrap().0.len() == 16, "{t}");
    let mut root = s.login("root", "rootpw").await.unwrap();
    root.user_change_password("alice", "newpw").await.unwrap();
    assert_eq!(
        get_with(&s.endpoint(), &t, "app/x").await,
        Err(invalid_token())
    );
    assert!(login(&s.endpoint(), "alice", "alicepw").await.is_err());
    let t = token(&s.endpoint(), "alice", "newpw").await.unwrap();
    assert_eq!(get_with(&s.endpoint(), &t, "app/x").await, Ok(0));
    // Deleting the user drops its tokens.
    root.user_delete("alice").await.unwrap();
    assert_eq!(
        get_with(&s.endpoint(), &t, "app/x").await,
        Err(invalid_token())
    );
    // Disabling auth drops every token.
    let rt = token(&s.endpoint(), "root", "rootpw").await.unwrap();
    root.auth_disable().await.unwrap();
    assert_eq!(
        get_with(&s.endpoint(), &rt, "app/x").await,
        Err(invalid_token())
    );
}

#[tokio::test]
async fn tokens_expire_when_unused_and_live_while_used() {
    let s = AuthServer::start(&["--auth-token-ttl", "2"]);
    let mut c = s.client().await;
    setup(&mut c).await;
    let mut used = s.login("alice", "alicepw").await.unwrap();
    let mut idle = s.login("alice", "alicepw").await.unwrap();
    idle.get("app/x", None).await.unwrap();
    // Used every half second for 3.5 s: stays valid.
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        used.get("app/x", None).await.unwrap();
    }
    // Unused for more than 2 s: refused.
    assert_eq!(grpc(idle.get("app/x", None).await), invalid_token());
    // A fresh token works again.
    idle.refresh_token().await.unwrap();
    idle.get("app/x", None).await.unwrap();
    used.get("app/x", None).await.unwrap();
}

#[tokio::test]
async fn many_clients_authenticate_and_use_tokens_at_once() {
    let s = AuthServer::start(&["--auth-token-ttl", "2"]);
    let mut c = s.client().await;
    setup(&mut c).await;
    let ep = s.endpoint();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let ep = ep.clone();
            tokio::spawn(async move {
                let mut tokens = Vec::new();
                for round in 0..3 {
                    let t = token(&ep, "alice", "alicepw").await.unwrap();
                    let mut kv = login(&ep, "alice", "alicepw").await.unwrap();
                    kv.put(format!("app/w/{i}/{round}"), "v", None)
                        .await
                        .unwrap();
                    assert_eq!(get_with(&ep, &t, "app/x").await, Ok(0));
                    tokens.push(t);
                }
                tokens
            })
        })
        .collect();
    let mut all = std::collections::BTreeSet::new();
    for t in tasks {
        for token in t.await.unwrap() {
            assert!(all.insert(token), "tokens are unique");
        }
    }
    assert_eq!(all.len(), 24);
    let mut root = s.login("root", "rootpw").await.unwrap();
    let n = root
        .get(
            "app/w/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap()
        .count();
    assert_eq!(n, 24);
}

#[tokio::test]
async fn auth_survives_restarts_snapshots_and_backups() {
    let mut s = AuthServer::start(&["--snapshot-count", "5"]);
    let mut c = s.client().await;
    setup(&mut c).await;
    let mut root = s.login("root", "rootpw").await.unwrap();
    for i in 0..30 {
        root.put(format!("app/{i}"), "v", None).await.unwrap();
    }
    drop((c, root));
    // Restarted from the state file the snapshots wrote plus the log.
    s.restart();
    let mut c = s.client().await;
    assert_eq!(
        grpc(c.get("app/1", None).await),
        (
            Code::InvalidArgument,
            "etcdserver: user name is empty".into()
        )
    );
    let mut alice = s.login("alice", "alicepw").await.unwrap();
    assert_eq!(alice.get("app/1", None).await.unwrap().kvs().len(), 1);
    assert_eq!(grpc(alice.put("app/1", "x", None).await), denied());
    let mut root = s.login("root", "rootpw").await.unwrap();
    assert_eq!(root.user_list().await.unwrap().users(), ["alice", "root"]);
    assert!(
        std::fs::metadata(s.dir.join("state")).is_ok(),
        "a snapshot was written"
    );
    // A backup carries the auth store into a new cluster.
    let backup = s.dir.with_file_name("backup.db");
    let out = crate::common::etcdctl(
        &s.endpoint(),
        &[
            "--user",
            "root:rootpw",
            "snapshot",
            "save",
            &backup.display().to_string(),
        ],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let restored = s.dir.with_file_name("restored");
    let out = crate::common::snapshot_restore(&backup, &restored);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let _r = Server::start_in(&restored, port, &FAST);
    let ep = format!("127.0.0.1:{port}");
    let mut alice = login(&ep, "alice", "alicepw").await.unwrap();
    assert_eq!(alice.get("app/1", None).await.unwrap().kvs().len(), 1);
    assert_eq!(grpc(alice.get("other", None).await), denied());
}

#[tokio::test]
async fn every_member_of_a_cluster_has_the_same_auth_store() {
    let mut cl = Cluster::start(3, &FAST);
    cl.wait_leader(Duration::from_secs(20));
    let eps: Vec<String> = cl.members.iter().map(|m| m.endpoint()).collect();
    let mut c = Client::connect([eps[0].clone()], None).await.unwrap();
    setup(&mut c).await;
    // A token issued through one member is valid on every member at once.
    for (i, ep) in eps.iter().enumerate() {
        let t = token(ep, "alice", "alicepw").await.unwrap();
        for other in &eps {
            assert_eq!(get_with(other, &t, "app/x").await, Ok(0), "from {i}");
            assert_eq!(get_with(other, &t, "zzz").await, Err(denied()));
        }
    }
    for ep in &eps {
        let mut root = login(ep, "root", "rootpw").await.unwrap();
        assert_eq!(root.user_list().await.unwrap().users(), ["alice", "root"]);
        assert_eq!(
            root.role_get("reader").await.unwrap().permissions().len(),
            2
        );
    }
    // A change through a follower reaches everyone.
    let mut root = login(&eps[2], "root", "rootpw").await.unwrap();
    root.role_grant_permission("reader", Permission::read("zzz"))
        .await
        .unwrap();
    for ep in &eps {
        let t = token(ep, "alice", "alicepw").await.unwrap();
        assert_eq!(get_with(ep, &t, "zzz").await, Ok(0));
    }
}

/// An ES256 key pair as PEM files (PKCS#8 private, SPKI public).
fn es256_keys(dir: &Path) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (private, public) = (dir.join("jwt.key"), dir.join("jwt.pub"));
    std::fs::write(&private, key.serialize_pem()).unwrap();
    std::fs::write(&public, key.public_key_pem()).unwrap();
    (private.display().to_string(), public.display().to_string())
}

#[tokio::test]
async fn jwt_tokens_verify_anywhere_and_go_stale_with_the_auth_store() {
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = es256_keys(keys.path());
    let flag = format!("jwt,pub-key={public},priv-key={private},sign-method=ES256,ttl=1m");
    let s = AuthServer::start(&["--auth-token", &flag]);
    let mut c = s.client().await;
    setup(&mut c).await;
    let t = token(&s.endpoint(), "alice", "alicepw").await.unwrap();
    assert_eq!(t.split('.').count(), 3, "a JWT: {t}");
    assert_eq!(get_with(&s.endpoint(), &t, "app/x").await, Ok(0));
    assert_eq!(get_with(&s.endpoint(), &t, "other").await, Err(denied()));
    // Tampered: refused.
    let forged = format!("{t}x");
    assert_eq!(
        get_with(&s.endpoint(), &forged, "app/x").await,
        Err(invalid_token())
    );
    // Any auth change makes it stale, as in etcd.
    let mut root = s.login("root", "rootpw").await.unwrap();
    root.role_add("another").await.unwrap();
    assert_eq!(
        get_with(&s.endpoint(), &t, "app/x").await,
        Err((
            Code::InvalidArgument,
            "etcdserver: revision of auth store is old".into()
        ))
    );
    let t = token(&s.endpoint(), "alice", "alicepw").await.unwrap();
    assert_eq!(get_with(&s.endpoint(), &t, "app/x").await, Ok(0));
}

#[test]
fn bad_auth_flags_are_refused_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for (flags, want) in [
        (
            vec!["--bcrypt-cost", "3"],
            "--bcrypt-cost must be between 4 and 31",
        ),
        (
            vec!["--auth-token-ttl", "0"],
            "--auth-token-ttl must be at least 1",
        ),
        (vec!["--auth-token", "opaque"], "--auth-token must be"),
        (vec!["--auth-token", "jwt,sign-method=RS256"], "pub-key"),
        (
            vec!["--auth-token", "jwt,pub-key=/nonexistent,sign-method=RS256"],
            "cannot read /nonexistent",
        ),
    ] {
        let (status, err) = crate::common::start_refused(&tmp.path().join("d"), &flags);
        assert!(!status.success(), "{flags:?}");
        assert!(err.contains(want), "{flags:?}: {err}");
    }
}

/// etcdctl over mutual TLS to `port`, presenting `name`'s certificate from
/// `dir` (made by `raftcd certs`), with `args`.
fn tls_ctl(dir: &Path, port: u16, name: &str, args: &[&str]) -> crate::common::Out {
    let p = |f: String| dir.join(f).display().to_string();
    let mut all = vec![
        format!("--cacert={}", p("ca.pem".into())),
        format!("--cert={}", p(format!("{name}.pem"))),
        format!("--key={}", p(format!("{name}-key.pem"))),
        "--dial-timeout=3s".into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    crate::common::etcdctl(&format!("https://127.0.0.1:{port}"), &refs, None)
}

#[test]
fn a_client_certificate_s_common_name_is_the_user_without_a_token() {
    let _machine = crate::common::machine_share();
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    crate::common::certs(&certs, &["init"]);
    crate::common::certs(&certs, &["server", "--hosts", "localhost"]);
    crate::common::certs(&certs, &["client", "--name", "root"]);
    crate::common::certs(&certs, &["client", "--name", "alice"]);
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{}", free_port());
    let f = |n: &str| certs.join(n).display().to_string();
    let mut child = std::process::Command::new(crate::common::raftcd_bin())
        .args(["--data-dir", &tmp.path().join("d").display().to_string()])
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(crate::common::peer_args(&peer))
        .args([
            "--cert-file",
            &f("server.pem"),
            "--key-file",
            &f("server-key.pem"),
        ])
        .args(["--trusted-ca-file", &f("ca.pem"), "--client-cert-auth"])
        .args(FAST)
        .env("ETCD_LOG_LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _ = child.stdin.take();
    let _guard = Kill(child);
    let ctl = |name: &str, args: &[&str]| tls_ctl(&certs, port, name, args);
    crate::common::cluster::eventually(Duration::from_secs(30), || {
        (ctl("root", &["endpoint", "health"]).code == 0).then_some(())
    });
    let ok = |out: crate::common::Out, stdout: &str| {
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, stdout),
            "{}",
            out.stderr
        );
    };
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["role", "add", "reader"],
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "app/",
            "--prefix",
        ],
        &["user", "add", "alice", "--no-password"],
        &["user", "grant-role", "alice", "reader"],
        &["put", "app/x", "1"],
        &["auth", "enable"],
    ] {
        let out = ctl("root", args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }
    // No token: the certificate's CN is the user.
    ok(ctl("alice", &["get", "app/x"]), "app/x\n1\n");
    let out = ctl("alice", &["put", "app/x", "2"]);
    assert!(
        out.stderr.contains("Error: etcdserver: permission denied"),
        "{out:?}"
    );
    let out = ctl("alice", &["user", "list"]);
    assert!(
        out.stderr.contains("Error: etcdserver: permission denied"),
        "{out:?}"
    );
    ok(ctl("root", &["user", "list"]), "alice\nroot\n");
    ok(ctl("root", &["put", "app/x", "3"]), "OK\n");
    // A token wins over the certificate.
    ok(
        ctl("alice", &["--user", "root:rootpw", "user", "list"]),
        "alice\nroot\n",
    );
}
