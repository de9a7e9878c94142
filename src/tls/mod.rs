//! TLS for raftcd's listeners and clients: rustls with the `ring` provider
//! only (no OpenSSL, no aws-lc).
//!
//! * [`TlsConfig`]: one side's files and flags, as etcd's `--cert-file`,
//!   `--key-file`, `--trusted-ca-file`, `--client-cert-auth` (and the same
//!   four `--peer-*` flags for the peer side).
//! * [`ServerTls`]: a loaded server configuration for one listener. A
//!   trusted CA (or `client_cert_auth`) makes client certificates required
//!   and verified against that CA, as etcd does. ALPN offers `h2` and
//!   `http/1.1`. [`ServerTls::accept`] does the handshake with a timeout and
//!   answers a plain-text HTTP request with a clear 400 instead of hanging.
//!   [`ServerTls::reload`] re-reads the files (on SIGHUP or when
//!   [`watch_files`] sees them change); a failed reload keeps the old
//!   certificates. [`ServerTls::expiry_warnings`] feeds `endpoint status`.
//! * [`client_tls_config`] / [`client_channel`]: a tonic client (the
//!   embedding API's) with a CA and a client certificate;
//!   [`client_config`]: the same as a rustls configuration (the peer
//!   network's dialer).
//!
//! Both the client listener and the peer listener use these types. The peer
//! listener ([`ServerTls::load_peer`]) also requires the connecting side's
//! certificate to carry the serverAuth usage: only a peer certificate (both
//! usages) is accepted there, never a client-only one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`watch_files`] looks for changed certificate files.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);
/// Certificates expiring sooner than this are reported by `endpoint status`.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

/// ALPN protocols a server offers: gRPC needs `h2`; curl may use either.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// One side's TLS files and flags (client side: `--cert-file` ...; peer
/// side: `--peer-cert-file` ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain this side presents (leaf first).
    pub cert_file: PathBuf,
    /// PEM private key of the leaf certificate (PKCS#8, SEC1 or PKCS#1).
    pub key_file: PathBuf,
    /// PEM CA bundle verifying the other side's certificate. On a server,
    /// setting it makes client certificates required (as in etcd).
    pub trusted_ca_file: Option<PathBuf>,
    /// Require and verify client certificates (needs `trusted_ca_file`).
    pub client_cert_auth: bool,
}

impl TlsConfig {
    /// Serve with `cert_file`/`key_file`; no client certificates asked.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        Self {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            trusted_ca_file: None,
            client_cert_auth: false,
        }
    }

    /// Require client certificates signed by the CA in `ca_file`.
    pub fn with_client_cert_auth(mut self, ca_file: impl Into<PathBuf>) -> Self {
        self.trusted_ca_file = Some(ca_file.into());
        self.client_cert_auth = true;
        self
    }

    /// Whether a server with these settings requires client certificates.
    pub fn requires_client_cert(&self) -> bool {
        self.client_cert_auth || self.trusted_ca_file.is_some()
    }
}

/// A TLS file that cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not usable: {reason}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("--client-cert-auth needs --trusted-ca-file (the CA that signs client certificates)")]
    NoClientCa,
    #[error("TLS setup: {0}")]
    Setup(String),
}

const CERT: &str = "certificate file";
const KEY: &str = "key file";
const CA: &str = "CA file";

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(what: &'static str, path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        what,
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn parse_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(what, path, "no PEM CERTIFICATE found"));
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c)
            .map_err(|e| invalid(what, path, format!("bad certificate: {e}")))?;
    }
    Ok(certs)
}

/// The PEM certificates in `path` (a chain or a CA bundle).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(CERT, path)
}

/// The PEM private key in `path`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(KEY, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            invalid(KEY, path, "no PEM PRIVATE KEY found")
        }
        e => invalid(KEY, path, format!("bad PEM: {e}")),
    })
}

/// The CA certificates in `path` as a root store.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in parse_certs(CA, path)? {
        roots
            .add(c)
            .map_err(|e| invalid(CA, path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The crypto provider of every TLS configuration raftcd builds.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Load a certificate chain and its key, checking that they belong together.
pub fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let certs = load_certs(cert_file)?;
    let key = load_key(key_file)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| invalid(KEY, key_file, e.to_string()))?;
    let ck = CertifiedKey::new(certs, signing);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert_file.to_path_buf(),
                key: key_file.to_path_buf(),
            })
        }
        Err(e) => Err(invalid(CERT, cert_file, e.to_string())),
    }
}

/// The subject's common name of a certificate (the first CN), if any:
/// with `--client-cert-auth`, the user of a request that carries no token.
pub fn common_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// The end of the validity period of the first certificate in `der`.
fn not_after(der: &CertificateDer<'_>) -> Option<SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let secs = cert.validity().not_after.timestamp();
    Some(if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH
    })
}

pub fn client_tls_config(
    ca_file: &Path,
    client_cert: Option<(&Path, &Path)>,
    domain: &str,
) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
    // Parse everything first, so a bad file is named in the error.
    parse_certs(CA, ca_file)?;
    let ca = read(CA, ca_file)?;
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name(domain);
    if let Some((cert_file, key_file)) = client_cert {
        load_certified_key(cert_file, key_file)?;
        let identity =
            tonic::transport::Identity::from_pem(read(CERT, cert_file)?, read(KEY, key_file)?);
        tls = tls.identity(identity);
    }
    Ok(tls)
}

/// A rustls client configuration: `ca_file`'s certificates are the only
/// roots, `client_cert` (certificate and key files) is presented when the
/// server asks for one, and ALPN offers `h2` (the peer network's dialer).
pub fn client_config(
    ca_file: &Path,
    client_cert: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(load_roots(ca_file)?);
    let mut config = match client_cert {
        Some((cert_file, key_file)) => {
            let key = load_certified_key(cert_file, key_file)?;
            builder
                .with_client_auth_cert(key.cert, load_key(key_file)?)
                .map_err(|e| invalid(KEY, key_file, e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Connect a tonic channel to a TLS raftcd at `url` (`https://HOST:PORT`),
/// trusting `ca_file` and authenticating with `cert_file`/`key_file`. Use
/// it with the generated clients, e.g.
/// `raftcd::pb::etcdserverpb::kv_client::KvClient::new(channel)`.
pub async fn client_channel(
    url: &str,
    ca_file: impl AsRef<Path>,
    cert_file: impl AsRef<Path>,
    key_file: impl AsRef<Path>,
) -> Result<tonic::transport::Channel, TlsError> {
    let parsed = url::Url::parse(url).map_err(|e| TlsError::Setup(format!("{url}: {e}")))?;
    if parsed.scheme() != "https" {
        return Err(TlsError::Setup(format!("{url}: expected an https:// URL")));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| TlsError::Setup(format!("{url}: no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tls = client_tls_config(
        ca_file.as_ref(),
        Some((cert_file.as_ref(), key_file.as_ref())),
        &host,
    )?;
    tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| TlsError::Setup(format!("{url}: {e}")))?
        .tls_config(tls)
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| TlsError::Setup(format!("cannot connect to {url}: {}", error_chain(&e))))
}

/// An error and its sources, `: `-separated.
/// A tonic client TLS configuration trusting `ca_file`, presenting the
/// certificate in `cert_file`/`key_file` if given, and checking the server
/// certificate against `domain` (a DNS name or an IP address).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

mod server;

pub use server::{log_handshake_error, watch_files, HandshakeError, ServerTls};
