//! `raftcd certs`: a small certificate authority for securing a cluster, in
//! place of the cfssl walkthrough. Made with rcgen (ECDSA P-256), files named
//! as cfssl names them:
//!
//! * `init`: the CA, `ca.pem` and `ca-key.pem`;
//! * `server`: `server.pem` / `server-key.pem`, server auth, for the client
//!   port;
//! * `peer --name NAME`: `NAME.pem` / `NAME-key.pem`, server and client auth,
//!   for the peer port;
//! * `client --name NAME`: `NAME.pem` / `NAME-key.pem`, client auth.
//!
//! Server and peer certificates always hold 127.0.0.1 and localhost besides
//! the given hosts. Key files are written with mode 0600. Files are replaced
//! atomically (a running server watching them never reads half a file).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The default validity, as in the cfssl walkthrough: 43800h (5 years).
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(43800 * 3600);

/// Errors making certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("no CA in {dir}: run `raftcd certs init --dir {dir}` first")]
    NoCa { dir: String },
    #[error("{0} already exists; remove ca.pem and ca-key.pem first to make a new CA")]
    CaExists(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA in {dir} is not usable: {reason}")]
    BadCa { dir: String, reason: String },
    #[error("invalid host {host:?}: {reason}")]
    BadHost { host: String, reason: String },
    #[error("invalid name {0:?}: use letters, digits, '.', '_' and '-' (files are NAME.pem and NAME-key.pem)")]
    BadName(String),
    #[error("invalid expiry: {0}")]
    BadExpiry(String),
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TLS server on the client port.
    Server,
    /// A member: TLS server on the peer port and client of the other members.
    Peer,
    /// A client of the cluster.
    Client,
}

impl Kind {
    fn usages(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Kind::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Kind::Peer => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Kind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        }
    }
}

/// `DIR/NAME.pem` and `DIR/NAME-key.pem`.
pub fn file_names(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    )
}

/// Parse a Go-style duration such as `43800h`, `90m`, `1h30m` or `3600s`
/// for `--expiry`: more than zero.
pub fn parse_duration(s: &str) -> Result<Duration, CertsError> {
    let bad = |why: String| CertsError::BadExpiry(format!("{s:?}: {why} (e.g. 43800h, 720h, 90m)"));
    let d = crate::duration::parse_go_duration(s.trim()).map_err(|e| bad(e.to_string()))?;
    if d.is_zero() {
        return Err(bad("must be more than 0".into()));
    }
    Ok(d)
}

fn check_name(name: &str) -> Result<(), CertsError> {
    let ok = !name.is_empty()
        && name != "ca"
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CertsError::BadName(name.to_string()))
    }
}

fn validity(params: &mut CertificateParams, expiry: Duration) -> Result<(), CertsError> {
    let now = time::OffsetDateTime::now_utc();
    // Backdated a little, as cfssl does, for clocks slightly behind.
    params.not_before = now - time::Duration::minutes(5);
    let expiry =
        time::Duration::try_from(expiry).map_err(|e| CertsError::BadExpiry(e.to_string()))?;
    params.not_after = now
        .checked_add(expiry)
        .ok_or_else(|| CertsError::BadExpiry("too far in the future".into()))?;
    Ok(())
}

/// Write `contents` to `path` through a temporary file and a rename; `mode`
/// is the file's permission bits.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CertsError> {
    let err = |source| CertsError::Write {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("pem.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    let mut f = opts.open(&tmp).map_err(err)?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(err)?;
    drop(f);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

fn write_pair(
    dir: &Path,
    name: &str,
    cert_pem: &str,
    key: &KeyPair,
) -> Result<Vec<PathBuf>, CertsError> {
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let (cert, key_file) = file_names(dir, name);
    // The key first: a certificate never points at a key not yet written.
    write_file(&key_file, &key.serialize_pem(), 0o600)?;
    write_file(&cert, cert_pem, 0o644)?;
    Ok(vec![cert, key_file])
}

/// Make a new CA in `dir`: `ca.pem` and `ca-key.pem`. Refuses to replace an
/// existing CA.
pub fn init(dir: &Path, expiry: Duration) -> Result<Vec<PathBuf>, CertsError> {
    let (cert, key_file) = file_names(dir, "ca");
    for p in [&cert, &key_file] {
        if p.exists() {
            return Err(CertsError::CaExists(p.display().to_string()));
        }
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    // A name of its own: two CAs of one name confuse issuer lookups (a
    // certificate of the other CA would fail its signature check instead
    // of being reported as from an unknown CA).
    let id = sha2::Sha256::digest(key.public_key_raw());
    let id: String = id[..4].iter().map(|b| format!("{b:02x}")).collect();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("raftcd CA {id}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "raftcd");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, expiry)?;
    let ca = params.self_signed(&key)?;
    write_pair(dir, "ca", &ca.pem(), &key)
}

/// The CA of `dir`, to sign with.
pub fn load_ca(dir: &Path) -> Result<Issuer<'static, KeyPair>, CertsError> {
    let (cert, key_file) = file_names(dir, "ca");
    if !cert.exists() && !key_file.exists() {
        return Err(CertsError::NoCa {
            dir: dir.display().to_string(),
        });
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| CertsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let bad = |reason: String| CertsError::BadCa {
        dir: dir.display().to_string(),
        reason,
    };
    let key = KeyPair::from_pem(&read(&key_file)?)
        .map_err(|e| bad(format!("{}: {e}", key_file.display())))?;
    Issuer::from_ca_cert_pem(&read(&cert)?, key)
        .map_err(|e| bad(format!("{}: {e}", cert.display())))
}

/// The subject alternative names of a server or peer certificate: `hosts`
/// plus 127.0.0.1 and localhost, without duplicates.
pub fn sans(kind: Kind, hosts: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if kind != Kind::Client {
        out.push("127.0.0.1".into());
        out.push("localhost".into());
    }
    for h in hosts.iter().map(|h| h.trim()).filter(|h| !h.is_empty()) {
        let h = h.trim_start_matches('[').trim_end_matches(']').to_string();
        if !out.contains(&h) {
            out.push(h);
        }
    }
    out
}

/// Make and sign a certificate named `name` in `dir` with the CA there.
pub fn issue(
    dir: &Path,
    kind: Kind,
    name: &str,
    hosts: &[String],
    expiry: Duration,
) -> Result<Vec<PathBuf>, CertsError> {
    check_name(name)?;
    let ca = load_ca(dir)?;
    let names = sans(kind, hosts);
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    for n in &names {
        let san = match n.parse::<std::net::IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => {
                let dns = rcgen::string::Ia5String::try_from(n.as_str()).map_err(|e| {
                    CertsError::BadHost {
                        host: n.clone(),
                        reason: e.to_string(),
                    }
                })?;
                if !valid_dns_name(n) {
                    return Err(CertsError::BadHost {
                        host: n.clone(),
                        reason: "not an IP address or a DNS name".into(),
                    });
                }
                rcgen::SanType::DnsName(dns)
            }
        };
        params.subject_alt_names.push(san);
    }
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "raftcd");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = kind.usages();
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, expiry)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    write_pair(dir, name, &cert.pem(), &key)
}

/// A DNS name (or `*.` wildcard) as accepted in a certificate.
fn valid_dns_name(s: &str) -> bool {
    let s = s.strip_prefix("*.").unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_writes_them() {
        assert_eq!(parse_duration("43800h").unwrap(), DEFAULT_EXPIRY);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        for bad in ["", "10", "h", "10d", "0h", "-1h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sans_always_hold_loopback_for_servers() {
        assert_eq!(
            sans(Kind::Server, &["10.0.0.1".into(), "localhost".into()]),
            vec!["127.0.0.1", "localhost", "10.0.0.1"]
        );
        assert!(sans(Kind::Client, &[]).is_empty());
    }

    #[test]
    fn names_and_hosts_are_checked() {
        assert!(check_name("member-1").is_ok());
        assert!(check_name("../x").is_err());
        assert!(check_name("ca").is_err());
        assert!(valid_dns_name("etcd.example.com"));
        assert!(!valid_dns_name("bad host"));
        assert!(!valid_dns_name("a..b"));
    }
}
