//! A replica that runs no member (fixed mode, `run_node = false`) still
//! serves the etcd client API on its `client_url`, so its daemon talks to
//! localhost either way: every request (unary or streaming, gRPC or the
//! HTTP endpoints) is passed as it is to the members' client URLs over
//! HTTP/2, spread over the members and away from those that fail.
//!
//! Nothing is decoded here: the members check every request as they
//! always do. The request size limit of `--max-request-bytes` is the
//! members' own.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tower::{Service, ServiceExt};

use crate::config::{url_string, Config};
use crate::tls::{client_tls_config, ServerTls, TlsError};

/// Errors starting a proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {url}: {source}")]
    Listen { url: String, source: std::io::Error },
    #[error("invalid member URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
}

/// A running proxy.
pub struct Proxy {
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The channel to the members: one endpoint per member client URL, over
/// TLS with this replica's client certificate for `https://` members.
fn upstream(config: &Config, members: &[url::Url]) -> Result<Channel, ProxyError> {
    let mut endpoints = Vec::new();
    for u in members {
        let url = url_string(u);
        let bad = |reason: String| ProxyError::BadUrl {
            url: url.clone(),
            reason,
        };
        let mut e = Endpoint::from_shared(url.clone())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        if u.scheme() == "https" {
            let tls = config.client_tls.as_ref().ok_or_else(|| {
                bad("an https:// member needs --cert-file, --key-file and --trusted-ca-file on this replica (its client identity)".into())
            })?;
            let ca = tls.trusted_ca_file.as_deref().ok_or_else(|| {
                bad("an https:// member needs --trusted-ca-file on this replica".into())
            })?;
            let host = u.host_str().unwrap_or("localhost");
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let tls = client_tls_config(ca, Some((&tls.cert_file, &tls.key_file)), host)?;
            e = e.tls_config(tls).map_err(|e| bad(e.to_string()))?;
        }
        endpoints.push(e);
    }
    Ok(Channel::balance_list(endpoints.into_iter()))
}

/// Pass one request on to the members.
async fn pass(
    axum::extract::State(channel): axum::extract::State<Channel>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let mut out = http::Request::from_parts(parts, tonic::body::Body::new(body));
    // The channel puts each member's scheme and authority in.
    let path = out
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    match path.parse() {
        Ok(uri) => *out.uri_mut() = uri,
        Err(_) => return tonic::Status::invalid_argument("bad request path").into_http(),
    }
    let mut channel = channel;
    let sent = match channel.ready().await {
        Ok(ready) => ready.call(out).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(resp) => resp.map(axum::body::Body::new),
        Err(e) => {
            tracing::warn!(error = %e, "no member answered");
            tonic::Status::unavailable(format!("no member of the cluster answered: {e}"))
                .into_http()
        }
    }
}

impl Proxy {
    /// Serve the client API of `config` (its client URLs and TLS) by
    /// passing every request to `members` (their client URLs).
    pub async fn start(config: &Config, members: &[url::Url]) -> Result<Proxy, ProxyError> {
        let channel = upstream(config, members)?;
        let router = axum::Router::new().fallback(pass).with_state(channel);
        let server_tls = match &config.client_tls {
            Some(t)
                if config
                    .listen_client_urls
                    .iter()
                    .any(|u| u.scheme() == "https") =>
            {
                Some(Arc::new(ServerTls::load(t)?))
            }
            _ => None,
        };
        let (shutdown, rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for url in &config.listen_client_urls {
            let listener = crate::net::bind(url)
                .await
                .map_err(|source| ProxyError::Listen {
                    url: url_string(url),
                    source,
                })?;
            tracing::info!(url = %url, members = ?members.iter().map(url_string).collect::<Vec<_>>(), "serving client requests for the cluster's members");
            let tls = server_tls.clone().filter(|_| url.scheme() == "https");
            tasks.push(tokio::spawn(crate::net::serve_router(
                router.clone(),
                listener,
                tls,
                rx.clone(),
                config.max_client_connections,
            )));
        }
        Ok(Proxy { shutdown, tasks })
    }

    /// Stop serving.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
