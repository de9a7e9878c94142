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
//!   embedding API's, and the peer network's) with a CA and a client
//!   certificate.
//!
//! Both the client listener and the peer listener use these types. The peer
//! listener ([`ServerTls::load_peer`]) also requires the connecting side's
//! certificate to carry the serverAuth usage: only a peer certificate (both
//! usages) is accepted there, never a client-only one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, SignatureScheme};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

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

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// One load of a [`TlsConfig`]'s files.
struct Loaded {
    config: Arc<ServerConfig>,
    /// Modification times of the files when read, to notice changes.
    stamps: Vec<Option<SystemTime>>,
    /// (file, end of validity) of the served certificate and the CAs.
    expiries: Vec<(PathBuf, SystemTime)>,
}

fn files(s: &TlsConfig) -> Vec<&Path> {
    let mut f = vec![s.cert_file.as_path(), s.key_file.as_path()];
    if let Some(ca) = &s.trusted_ca_file {
        f.push(ca);
    }
    f
}

fn stamps(s: &TlsConfig) -> Vec<Option<SystemTime>> {
    files(s)
        .into_iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// The peer listener's client verifier: the CA's usual checks (chain and
/// the clientAuth usage), and the serverAuth usage as well, so that only a
/// peer certificate (both usages) connects, never a client-only one.
#[derive(Debug)]
struct PeerClientVerifier(Arc<dyn ClientCertVerifier>);

/// Whether `der` is a certificate whose extended key usage allows serverAuth.
fn has_server_auth(der: &CertificateDer<'_>) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.server_auth || eku.value.any)
}

impl ClientCertVerifier for PeerClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        if !has_server_auth(end_entity) {
            tracing::warn!("refused a peer certificate without the serverAuth usage (a client-only certificate is not a peer certificate)");
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn load_server(s: &TlsConfig, peer: bool) -> Result<Loaded, TlsError> {
    if s.client_cert_auth && s.trusted_ca_file.is_none() {
        return Err(TlsError::NoClientCa);
    }
    let stamps = stamps(s);
    let key = load_certified_key(&s.cert_file, &s.key_file)?;
    let mut expiries = Vec::new();
    if let Some(t) = key.cert.first().and_then(not_after) {
        expiries.push((s.cert_file.clone(), t));
    }
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = match &s.trusted_ca_file {
        Some(ca) => {
            let roots = load_roots(ca)?;
            if let Some(t) = parse_certs(CA, ca)?.iter().filter_map(not_after).min() {
                expiries.push((ca.clone(), t));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid(CA, ca, e.to_string()))?;
            if peer {
                builder.with_client_cert_verifier(Arc::new(PeerClientVerifier(verifier)))
            } else {
                builder.with_client_cert_verifier(verifier)
            }
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Fixed(Arc::new(key))));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Loaded {
        config: Arc::new(config),
        stamps,
        expiries,
    })
}

/// Why an accepted connection did not become a TLS stream.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake not finished within {0:?}")]
    Timeout(Duration),
    #[error("plain-text HTTP request on a TLS port (answered 400)")]
    PlainText,
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
}

/// The TLS side of one listener: its loaded configuration, reloadable.
pub struct ServerTls {
    settings: TlsConfig,
    /// A peer listener: client certificates need serverAuth too.
    peer: bool,
    loaded: ArcSwap<Loaded>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Read and check the files of `settings`.
    pub fn load(settings: &TlsConfig) -> Result<Self, TlsError> {
        Self::load_as(settings, false)
    }

    /// [`ServerTls::load`] for the peer listener: a connecting member must
    /// present a peer certificate (clientAuth and serverAuth usages).
    pub fn load_peer(settings: &TlsConfig) -> Result<Self, TlsError> {
        Self::load_as(settings, true)
    }

    fn load_as(settings: &TlsConfig, peer: bool) -> Result<Self, TlsError> {
        let loaded = load_server(settings, peer)?;
        Ok(Self {
            settings: settings.clone(),
            peer,
            loaded: ArcSwap::from_pointee(loaded),
        })
    }

    /// The settings this was loaded from.
    pub fn settings(&self) -> &TlsConfig {
        &self.settings
    }

    /// The current rustls configuration (e.g. for a tonic or hyper server).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.loaded.load().config.clone()
    }

    /// Re-read the files now. On error the previous certificates stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load_server(&self.settings, self.peer)?;
        self.loaded.store(Arc::new(fresh));
        tracing::info!(cert = %self.settings.cert_file.display(), "reloaded TLS certificates");
        Ok(())
    }

    /// Reload if a file's modification time changed since the last load.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        if stamps(&self.settings) == self.loaded.load().stamps {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// Warnings for certificates that expired or expire within 7 days.
    pub fn expiry_warnings(&self, now: SystemTime) -> Vec<String> {
        self.loaded
            .load()
            .expiries
            .iter()
            .filter_map(|(path, end)| expiry_warning(path, *end, now))
            .collect()
    }

    /// Handshake on an accepted connection, within [`HANDSHAKE_TIMEOUT`].
    /// A plain-text HTTP request is answered with a 400 saying so.
    pub async fn accept(&self, stream: TcpStream) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let acceptor = TlsAcceptor::from(self.server_config());
        let work = async move {
            let mut first = [0u8; 1];
            let n = stream
                .peek(&mut first)
                .await
                .map_err(HandshakeError::Failed)?;
            // A TLS record starts with 0x16 (handshake); an HTTP request
            // (or the HTTP/2 preface) with an upper-case method name.
            if n == 1 && first[0].is_ascii_uppercase() {
                refuse_plain_text(stream).await;
                return Err(HandshakeError::PlainText);
            }
            match acceptor.accept(stream).into_fallible().await {
                Ok(tls) => Ok(tls),
                Err((e, io)) => {
                    linger(io).await;
                    Err(HandshakeError::Failed(e))
                }
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
            .await
            .map_err(|_| HandshakeError::Timeout(HANDSHAKE_TIMEOUT))?
    }
}

fn expiry_warning(path: &Path, end: SystemTime, now: SystemTime) -> Option<String> {
    let when = humantime_utc(end);
    match end.duration_since(now) {
        Err(_) => Some(format!("certificate {} expired at {when}", path.display())),
        Ok(left) if left < EXPIRY_WARNING => {
            let hours = left.as_secs() / 3600;
            let (n, unit) = if hours >= 48 {
                (hours / 24, "days")
            } else {
                (hours, "hours")
            };
            Some(format!(
                "certificate {} expires in {n} {unit} (at {when})",
                path.display()
            ))
        }
        Ok(_) => None,
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
fn humantime_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => format!("{secs} s after the epoch"),
    }
}

/// Close a refused connection so that the client reads the TLS alert: a
/// close with unread data (the client's first request, sent before it
/// learns it is refused) would reset the connection and lose the alert.
async fn linger(mut io: TcpStream) {
    let _ = io.shutdown().await;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Answer a plain-text HTTP request on a TLS port as Go's servers do, so
/// that `curl http://...` says what is wrong, then close.
async fn refuse_plain_text(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
    let _ = stream
        .write_all(
            b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        )
        .await;
    let _ = stream.shutdown().await;
}

/// Reload every `tls` whose files changed, every [`WATCH_INTERVAL`], until
/// `shutdown` turns true. A failed reload is logged and retried.
/// `on_reload` runs after any successful reload (the peer transport drops
/// its connections so new ones present the new certificate).
pub async fn watch_files(
    tls: Vec<Arc<ServerTls>>,
    on_reload: impl Fn() + Send + 'static,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let mut reloaded = false;
        for t in &tls {
            match t.reload_if_changed() {
                Ok(changed) => reloaded |= changed,
                Err(e) => {
                    tracing::warn!(error = %e, "certificate files changed but cannot be loaded; keeping the previous ones");
                }
            }
        }
        if reloaded {
            on_reload();
        }
    }
}

/// A tonic client TLS configuration trusting `ca_file`, presenting the
/// certificate in `cert_file`/`key_file` if given, and checking the server
/// certificate against `domain` (a DNS name or an IP address).
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

/// Log a failed handshake from `peer`.
pub fn log_handshake_error(peer: SocketAddr, e: &HandshakeError) {
    match e {
        HandshakeError::PlainText => {
            tracing::warn!(%peer, "rejected connection: plain-text HTTP request to a TLS port")
        }
        HandshakeError::Timeout(_) => tracing::debug!(%peer, error = %e, "rejected connection"),
        HandshakeError::Failed(err) => {
            tracing::warn!(%peer, error = %err, "rejected connection: TLS handshake failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_warnings_under_seven_days() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let p = Path::new("server.pem");
        assert_eq!(
            expiry_warning(p, now + Duration::from_secs(30 * 86400), now),
            None
        );
        let w = expiry_warning(p, now + Duration::from_secs(3 * 86400 + 60), now).unwrap();
        assert!(
            w.starts_with("certificate server.pem expires in 3 days (at 2023-11-"),
            "{w}"
        );
        let w = expiry_warning(p, now + Duration::from_secs(5 * 3600), now).unwrap();
        assert!(w.contains("expires in 5 hours"), "{w}");
        let w = expiry_warning(p, now - Duration::from_secs(1), now).unwrap();
        assert!(w.contains("expired at 2023-11-14 22:13:19 UTC"), "{w}");
    }
}
