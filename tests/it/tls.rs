//! TLS: `raftcd certs` makes a full set of certificates with the
//! walkthrough's usages; a real raftcd serves its client port over mutual
//! TLS to the real curl and the real etcdctl; clients without a certificate,
//! with another CA's or with an expired one are refused at the handshake; a
//! plain-text connection fails fast; bad certificate files stop the start-up
//! with an error naming the file; expiry shows in `endpoint status` and
//! certificates reload on SIGHUP and on file change; an embedding program
//! serves TLS and connects with `raftcd::tls::client_channel`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use x509_parser::prelude::*;

use crate::common::{
    certs, certs_out, etcdctl, free_port, machine_share, peer_args, raftcd_bin, Machine, Out,
};

/// A CA with a server certificate and a client certificate in `dir`.
fn full_set(dir: &Path) {
    certs(dir, &["init"]);
    certs(dir, &["server", "--hosts", "localhost"]);
    certs(dir, &["client"]);
}

fn p(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

/// A raftcd serving `https://127.0.0.1:PORT` with `dir`'s server
/// certificate.
struct TlsServer {
    child: Option<Child>,
    port: u16,
    _data: tempfile::TempDir,
    _machine: Machine,
}

impl TlsServer {
    /// Start with `--cert-file`/`--key-file` from `certs` plus `extra`, and
    /// wait until the port accepts connections (raftcd binds its client
    /// listeners once it is ready).
    fn start(certs: &Path, extra: &[&str]) -> TlsServer {
        Self::start_with(certs, extra, &[])
    }

    fn start_with(certs: &Path, extra: &[&str], env: &[(&str, String)]) -> TlsServer {
        let _machine = machine_share();
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = server_command(data.path(), port);
        if env.is_empty() {
            cmd.args(["--cert-file", &p(certs, "server.pem")])
                .args(["--key-file", &p(certs, "server-key.pem")]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.args(extra).spawn().expect("spawn raftcd");
        let mut s = TlsServer {
            child: Some(child),
            port,
            _data: data,
            _machine,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(st))) = s.child.as_mut().map(|c| c.try_wait()) {
                panic!("raftcd exited early with {st}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return s;
            }
            assert!(Instant::now() < deadline, "raftcd not listening in time");
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The raftcd command for a single member on `port` with https client URLs.
fn server_command(data: &Path, port: u16) -> Command {
    let url = format!("https://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = Command::new(raftcd_bin());
    cmd.args(["--data-dir", &data.join("d").display().to_string()])
        .args(["--listen-client-urls", &url])
        .args(["--advertise-client-urls", &url])
        .args(peer_args(&peer))
        .env("ETCD_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// The real curl; (exit code, stdout, stderr).
fn curl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl not found: install curl (scripts/test does)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// curl `url` trusting the set's CA and presenting its client certificate.
fn curl_as_client(dir: &Path, url: &str) -> (i32, String, String) {
    curl_trusting(dir, Some((dir, "client")), url)
}

/// curl `url` trusting the CA in `ca_dir` and, if given, presenting a
/// certificate (`name`.pem, `name`-key.pem in the given dir).
fn curl_trusting(ca_dir: &Path, cert: Option<(&Path, &str)>, url: &str) -> (i32, String, String) {
    let mut args = vec!["--cacert".to_string(), p(ca_dir, "ca.pem")];
    if let Some((dir, name)) = cert {
        args.push("--cert".into());
        args.push(p(dir, &format!("{name}.pem")));
        args.push("--key".into());
        args.push(p(dir, &format!("{name}-key.pem")));
    }
    args.push(url.to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&refs)
}

/// etcdctl against `url` with `--cacert` and, if given, a client
/// certificate (`name`.pem, `name`-key.pem in `dir`).
fn ctl(url: &str, dir: &Path, client: Option<(&Path, &str)>, args: &[&str]) -> Out {
    let mut all: Vec<String> = vec![
        format!("--cacert={}", p(dir, "ca.pem")),
        "--dial-timeout=2s".into(),
        "--command-timeout=3s".into(),
    ];
    if let Some((cdir, name)) = client {
        all.push(format!("--cert={}", p(cdir, &format!("{name}.pem"))));
        all.push(format!("--key={}", p(cdir, &format!("{name}-key.pem"))));
    }
    all.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    etcdctl(url, &refs, None)
}

/// etcdctl succeeded and printed exactly `stdout`.
#[track_caller]
fn assert_prints(out: &Out, stdout: &str) {
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, stdout),
        "{}",
        out.stderr
    );
}

fn parse_pem(path: &Path) -> Vec<u8> {
    let text = std::fs::read(path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text).unwrap();
    pem.contents
}

fn eku(c: &X509Certificate<'_>) -> (bool, bool) {
    let e = c.extended_key_usage().unwrap().expect("EKU present").value;
    (e.server_auth, e.client_auth)
}

fn sans(c: &X509Certificate<'_>) -> Vec<String> {
    match c.subject_alternative_name().unwrap() {
        None => vec![],
        Some(ext) => ext
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(ip) if ip.len() == 4 => {
                    std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string()
                }
                other => format!("{other:?}"),
            })
            .collect(),
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn certs_make_a_full_set_with_the_walkthrough_usages() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");

    // Nothing can be signed before there is a CA.
    let out = certs_out(&dir, &["server"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run `raftcd certs init"), "{err}");

    certs(&dir, &["init"]);
    certs(&dir, &["server", "--hosts", "10.0.0.1,etcd.example.com"]);
    certs(&dir, &["peer", "--name", "member-1", "--hosts", "10.0.0.2"]);
    certs(&dir, &["peer", "--name", "member-2", "--hosts", "10.0.0.3"]);
    certs(&dir, &["client", "--name", "client"]);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "ca-key.pem",
            "ca.pem",
            "client-key.pem",
            "client.pem",
            "member-1-key.pem",
            "member-1.pem",
            "member-2-key.pem",
            "member-2.pem",
            "server-key.pem",
            "server.pem"
        ]
    );
    for f in files.iter().filter(|f| f.ends_with("-key.pem")) {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f} must be private");
    }

    // Making a second CA over the first is refused.
    let out = certs_out(&dir, &["init"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let ca_der = parse_pem(&dir.join("ca.pem"));
    let (_, ca) = parse_x509_certificate(&ca_der).unwrap();
    assert!(ca.is_ca());
    assert!(ca.key_usage().unwrap().unwrap().value.key_cert_sign());
    let five_years = 43800 * 3600;
    let lifetime = |c: &X509Certificate<'_>| {
        c.validity().not_after.timestamp() - c.validity().not_before.timestamp()
    };
    // Valid from a few minutes ago (clock skew) for 43800h.
    assert!((five_years..five_years + 600).contains(&lifetime(&ca)));

    let check = |name: &str, want_eku: (bool, bool), want_sans: &[&str]| {
        let der = parse_pem(&dir.join(format!("{name}.pem")));
        let (_, c) = parse_x509_certificate(&der).unwrap();
        assert!(!c.is_ca(), "{name}");
        assert_eq!(eku(&c), want_eku, "{name}: (server auth, client auth)");
        assert_eq!(sans(&c), want_sans, "{name}");
        assert_eq!(c.issuer(), ca.subject(), "{name}");
        c.verify_signature(Some(ca.public_key()))
            .unwrap_or_else(|e| panic!("{name} not signed by the CA: {e}"));
        // ECDSA P-256.
        let curve = c.public_key().algorithm.parameters.as_ref().unwrap();
        assert_eq!(
            curve.as_oid().unwrap(),
            x509_parser::oid_registry::OID_EC_P256,
            "{name}"
        );
        assert_eq!(
            c.signature_algorithm.algorithm,
            x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256
        );
        assert!((five_years..five_years + 600).contains(&lifetime(&c)));
        let cn = c.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), name);
    };
    check(
        "server",
        (true, false),
        &["127.0.0.1", "localhost", "10.0.0.1", "etcd.example.com"],
    );
    check(
        "member-1",
        (true, true),
        &["127.0.0.1", "localhost", "10.0.0.2"],
    );
    check(
        "member-2",
        (true, true),
        &["127.0.0.1", "localhost", "10.0.0.3"],
    );
    check("client", (false, true), &[]);

    // --expiry in Go's duration syntax.
    certs(&dir, &["client", "--name", "short", "--expiry", "24h"]);
    let der = parse_pem(&dir.join("short.pem"));
    let (_, c) = parse_x509_certificate(&der).unwrap();
    assert!((86400..86400 + 600).contains(&lifetime(&c)));
    let out = certs_out(&dir, &["client", "--expiry", "5 years"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid expiry"));
}

#[test]
fn mutual_tls_with_curl_and_etcdctl() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    full_set(dir);
    // etcd's environment variables, as an operator's unit file would set.
    let s = TlsServer::start_with(
        dir,
        &[],
        &[
            ("ETCD_CERT_FILE", p(dir, "server.pem")),
            ("ETCD_KEY_FILE", p(dir, "server-key.pem")),
            ("ETCD_TRUSTED_CA_FILE", p(dir, "ca.pem")),
            ("ETCD_CLIENT_CERT_AUTH", "true".into()),
        ],
    );
    let (code, body, err) = curl_as_client(dir, &format!("{}/health", s.url()));
    assert_eq!((code, body.as_str()), (0, r#"{"health":"true"}"#), "{err}");
    // The server certificate names localhost too.
    let (code, body, err) = curl_as_client(dir, &format!("https://localhost:{}/version", s.port));
    assert_eq!(code, 0, "{err}");
    assert!(body.contains(r#""etcdserver":"3.4.23""#), "{body}");

    let me = Some((dir, "client"));
    assert_prints(
        &ctl(&s.url(), dir, me, &["put", "greeting", "hello"]),
        "OK\n",
    );
    assert_prints(
        &ctl(&s.url(), dir, me, &["get", "greeting"]),
        "greeting\nhello\n",
    );
    let out = ctl(&s.url(), dir, me, &["endpoint", "health"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("is healthy"), "{}", out.stderr);
    // Certificates valid for years: no errors in the status.
    let out = ctl(&s.url(), dir, me, &["endpoint", "status", "-w", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("errors"), "{}", out.stdout);
}

#[test]
fn server_tls_without_client_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    full_set(dir);
    let s = TlsServer::start(dir, &[]);
    let (code, body, err) = curl_trusting(dir, None, &format!("{}/health", s.url()));
    assert_eq!((code, body.as_str()), (0, r#"{"health":"true"}"#), "{err}");
    assert_prints(&ctl(&s.url(), dir, None, &["put", "k", "v"]), "OK\n");
    // A client that does not trust the server's CA refuses it.
    let (code, _, err) = curl(&[&format!("{}/health", s.url())]);
    assert_eq!(code, 60, "curl: server certificate not trusted: {err}");
}

/// curl and etcdctl trusting `ca_dir`'s CA and presenting `client` are
/// both refused by `s`: curl at the handshake with a TLS `alert`.
#[track_caller]
fn assert_refused(s: &TlsServer, ca_dir: &Path, client: Option<(&Path, &str)>, alert: &str) {
    let (code, body, err) = curl_trusting(ca_dir, client, &format!("{}/health", s.url()));
    assert_ne!(code, 0);
    assert_eq!(body, "");
    assert!(err.contains(alert), "{err}");
    let out = ctl(&s.url(), ca_dir, client, &["get", "k"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("Error:"), "{}", out.stderr);
}

/// A server with `--client-cert-auth` and one with only
/// `--trusted-ca-file` (etcd requires client certificates then too).
fn auth_server(dir: &Path, ca_only: bool) -> TlsServer {
    let ca = p(dir, "ca.pem");
    if ca_only {
        TlsServer::start(dir, &["--trusted-ca-file", &ca])
    } else {
        TlsServer::start(dir, &["--trusted-ca-file", &ca, "--client-cert-auth"])
    }
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    full_set(dir);
    for ca_only in [false, true] {
        let s = auth_server(dir, ca_only);
        assert_refused(&s, dir, None, "alert certificate required");
    }
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ours");
    let other = tmp.path().join("theirs");
    full_set(&dir);
    full_set(&other);
    let s = auth_server(&dir, false);
    assert_refused(&s, &dir, Some((&other, "client")), "alert unknown ca");
    // A server certificate of our own CA is no client certificate either.
    let (code, _, err) =
        curl_trusting(&dir, Some((&dir, "server")), &format!("{}/health", s.url()));
    assert_ne!(code, 0);
    assert!(err.contains("alert"), "{err}");
}

#[test]
fn an_expired_client_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    full_set(dir);
    // Signed by the right CA, valid from two days ago until yesterday.
    let ca = raftcd::certs::load_ca(dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "expired");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = ::time::OffsetDateTime::now_utc();
    params.not_before = now - ::time::Duration::days(2);
    params.not_after = now - ::time::Duration::days(1);
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("expired.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("expired-key.pem"), key.serialize_pem()).unwrap();

    let s = auth_server(dir, false);
    assert_refused(&s, dir, Some((dir, "expired")), "alert certificate expired");
}

#[test]
fn plain_text_to_the_tls_port_fails_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    full_set(dir);
    let s = auth_server(dir, false);

    // A client that connects and says nothing holds no one up.
    let _silent = TcpStream::connect(("127.0.0.1", s.port)).unwrap();

    // curl with http:// gets told what is wrong, at once.
    let t = Instant::now();
    let (code, _, err) = curl(&["-f", &format!("http://127.0.0.1:{}/health", s.port)]);
    assert_eq!(code, 22, "{err}");
    assert!(err.contains("400"), "{err}");
    let (_, body, _) = curl(&[&format!("http://127.0.0.1:{}/health", s.port)]);
    assert_eq!(body, "Client sent an HTTP request to an HTTPS server.\n");

    // A plain-text gRPC (HTTP/2) client and arbitrary bytes: closed at once.
    for hello in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        &b"\x00\x01\x02\x03 not tls at all"[..],
    ] {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(hello).unwrap();
        let mut buf = Vec::new();
        // Either an orderly close or a reset; never a timeout.
        match c.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) => assert!(
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut,
                "connection left open: {e}"
            ),
        }
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // Meanwhile a real client is served.
    let (code, body, err) = curl_as_client(dir, &format!("{}/health", s.url()));
    assert_eq!((code, body.as_str()), (0, r#"{"health":"true"}"#), "{err}");
}

/// Run raftcd with `args` (https client URL on a free port); it must exit
/// non-zero at once. Returns its stderr.
fn start_fails(args: &[&str]) -> String {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = server_command(data.path(), port)
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success(), "raftcd {args:?} started");
    assert!(
        !data.path().join("d").exists(),
        "the data dir must not be created before the certificates are checked"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_certificate_files_are_startup_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    full_set(dir);
    let (cert, key, ca) = (
        p(dir, "server.pem"),
        p(dir, "server-key.pem"),
        p(dir, "ca.pem"),
    );
    let missing = p(dir, "missing.pem");
    // A key that is not the certificate's.
    let other_key = p(dir, "client-key.pem");
    // Files that are not PEM, or the wrong kind of PEM.
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let junk = junk.display().to_string();
    // An unreadable file (a directory).
    let d = dir.display().to_string();

    let cases: &[(&[&str], String)] = &[
        (
            &["--cert-file", &missing, "--key-file", &key],
            format!("cannot read certificate file {missing}"),
        ),
        (
            &["--cert-file", &cert, "--key-file", &missing],
            format!("cannot read key file {missing}"),
        ),
        (
            &["--cert-file", &cert, "--key-file", &key, "--trusted-ca-file", &missing],
            format!("cannot read CA file {missing}"),
        ),
        (
            &["--cert-file", &cert, "--key-file", &other_key],
            format!("the private key in {other_key} does not match the certificate in {cert}"),
        ),
        (
            &["--cert-file", &junk, "--key-file", &key],
            format!("certificate file {junk} is not usable"),
        ),
        (
            &["--cert-file", &cert, "--key-file", &cert],
            format!("key file {cert} is not usable"),
        ),
        (
            &["--cert-file", &d, "--key-file", &key],
            format!("cannot read certificate file {d}"),
        ),
        // Flags that do not go together, with etcd's message for a missing pair.
        (
            &[],
            "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:".into(),
        ),
        (
            &["--cert-file", &cert],
            "--cert-file is given without --key-file".into(),
        ),
        (
            &["--cert-file", &cert, "--key-file", &key, "--client-cert-auth"],
            "--client-cert-auth needs --trusted-ca-file".into(),
        ),
        (
            &["--cert-file", &cert, "--key-file", &key, "--client-cert-auth=maybe"],
            "not a boolean".into(),
        ),
    ];
    for (args, want) in cases {
        let err = start_fails(args);
        assert!(err.contains(want.as_str()), "{err}");
    }

    // The peer side's files are checked at start too.
    let peer = format!("https://127.0.0.1:{}", free_port());
    let run = |extra: &[&str]| {
        let mut a: Vec<String> = ["--cert-file", &cert, "--key-file", &key]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(peer_args(&peer));
        a.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        start_fails(&refs)
    };
    let err = run(&[]);
    assert!(
        err.contains("TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url https://127.0.0.1:"),
        "{err}"
    );
    let err = run(&[
        "--peer-cert-file",
        &missing,
        "--peer-key-file",
        &key,
        "--peer-trusted-ca-file",
        &ca,
        "--peer-client-cert-auth",
    ]);
    assert!(
        err.contains(&format!("cannot read certificate file {missing}")),
        "{err}"
    );
}

/// `endpoint status` errors of the server, as JSON text.
fn status_errors(s: &TlsServer, dir: &Path) -> String {
    let out = ctl(&s.url(), dir, None, &["endpoint", "status", "-w", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v[0]["Status"]["errors"].to_string()
}

#[test]
fn expiry_shows_in_endpoint_status_and_certificates_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    certs(dir, &["init"]);
    certs(dir, &["server", "--expiry", "100h"]);
    let s = TlsServer::start(dir, &[]);
    let cert = p(dir, "server.pem");
    let errors = status_errors(&s, dir);
    assert!(
        errors.contains(&format!("certificate {cert} expires in 4 days (at ")),
        "{errors}"
    );

    // A renewed certificate is served after SIGHUP.
    certs(dir, &["server"]);
    let st = Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_errors(&s, dir) != "null" {
        assert!(Instant::now() < deadline, "not reloaded on SIGHUP");
        std::thread::sleep(Duration::from_millis(100));
    }

    // And when the files change, without a signal.
    certs(dir, &["server", "--expiry", "30h"]);
    let deadline = Instant::now() + raftcd::tls::WATCH_INTERVAL * 2 + Duration::from_secs(2);
    loop {
        let errors = status_errors(&s, dir);
        if errors.contains("expires in 29 hours") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not reloaded on change: {errors}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // A broken file is not loaded; the server keeps serving.
    std::fs::write(dir.join("server.pem"), "broken\n").unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(300));
    assert!(status_errors(&s, dir).contains("expires in 29 hours"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_node_serves_tls_and_client_channel_connects() {
    use raftcd::pb::etcdserverpb::kv_client::KvClient;
    use raftcd::pb::etcdserverpb::{PutRequest, RangeRequest};
    use raftcd::tls::TlsConfig;

    let _machine = machine_share();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let other = tmp.path().join("other");
    full_set(&dir);
    full_set(&other);
    let f = |d: &Path, n: &str| -> PathBuf { d.join(n) };

    // https without certificates is a start error.
    let bad = raftcd::Config::embedded(tmp.path().join("bad"))
        .with_client_url("https://127.0.0.1:0")
        .unwrap();
    let err = raftcd::Node::start(bad).await.err().expect("must fail");
    assert!(err.to_string().contains("must be provided"), "{err}");

    let config = raftcd::Config::embedded(tmp.path().join("data"))
        .with_client_url("https://127.0.0.1:0")
        .unwrap()
        .with_client_tls(
            TlsConfig::new(f(&dir, "server.pem"), f(&dir, "server-key.pem"))
                .with_client_cert_auth(f(&dir, "ca.pem")),
        );
    let node = raftcd::Node::start(config).await.expect("start");
    let url = format!("https://127.0.0.1:{}", node.client_addrs()[0].port());
    // A channel trusting `ca_dir`'s CA, presenting `client_dir`'s client.pem
    // with the key `key` there.
    let channel = |ca_dir: &Path, client_dir: &Path, key: &str| {
        raftcd::tls::client_channel(
            &url,
            f(ca_dir, "ca.pem"),
            f(client_dir, "client.pem"),
            f(client_dir, key),
        )
    };

    let ch = channel(&dir, &dir, "client-key.pem")
        .await
        .expect("connect");
    let mut kv = KvClient::new(ch);
    let put = kv
        .put(PutRequest {
            key: "k".into(),
            value: "v".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(put.into_inner().header.unwrap().revision, 2);
    let got = kv
        .range(RangeRequest {
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&got.kvs[0].value[..], b"v");

    // Another CA's client certificate: no request goes through.
    let refused = match channel(&dir, &other, "client-key.pem").await {
        Err(_) => true,
        Ok(ch) => KvClient::new(ch)
            .range(RangeRequest {
                key: "k".into(),
                ..Default::default()
            })
            .await
            .is_err(),
    };
    assert!(refused, "another CA's client certificate was accepted");
    // A server from another CA is not trusted by the client.
    let err = channel(&other, &other, "client-key.pem")
        .await
        .expect_err("untrusted server");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    // A bad client file is named.
    let err = channel(&dir, &dir, "nope-key.pem")
        .await
        .expect_err("missing key");
    assert!(err.to_string().contains("nope-key.pem"), "{err}");
    drop(kv);
    node.shutdown().await.unwrap();
}
