//! The server side of TLS: [`ServerTls`] (certificates reloaded on
//! change, peer-certificate checks, handshakes off the accept loop), expiry
//! warnings and the file watcher.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, SignatureScheme};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::*;

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
