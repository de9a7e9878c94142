//! The `--conns` gRPC channels of a run, spread over `--endpoints`, plain
//! or TLS (`--cacert`, `--cert`, `--key`, as etcdctl takes them).

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::{usage, BenchError, Spec};
use crate::tls::client_tls_config;

/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one unary request may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An error and its sources, `: `-separated, skipping repeats.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The URL of one `--endpoints` entry: as given if it has a scheme, else
/// `https://` with `--cacert` and `http://` without.
fn url(endpoint: &str, tls: bool) -> Result<url::Url, BenchError> {
    let text = if endpoint.contains("://") {
        endpoint.to_string()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    };
    let parsed = url::Url::parse(&text)
        .map_err(|e| usage(format!("bad endpoint {endpoint:?} in --endpoints: {e}")))?;
    match parsed.scheme() {
        "http" | "https" if parsed.host_str().is_some() => Ok(parsed),
        _ => Err(usage(format!(
            "bad endpoint {endpoint:?} in --endpoints: expected HOST:PORT or an http(s):// URL"
        ))),
    }
}

/// A tonic endpoint for one `--endpoints` entry.
fn endpoint(spec: &Spec, e: &str) -> Result<Endpoint, BenchError> {
    let u = url(e, spec.tls.is_some())?;
    let mut ep = Endpoint::from_shared(u.to_string())
        .map_err(|err| usage(format!("bad endpoint {e:?} in --endpoints: {err}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true);
    if u.scheme() == "https" {
        let Some(files) = &spec.tls else {
            return Err(usage(format!(
                "{e} is https: give --cacert (the CA that signed the server's certificate)"
            )));
        };
        let host = u
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let cert = files.cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        let tls = client_tls_config(&files.cacert, cert, host)?;
        ep = ep
            .tls_config(tls)
            .map_err(|err| BenchError::Setup(format!("TLS for {e}: {}", chain(&err))))?;
    }
    Ok(ep)
}

/// Open `spec.conns` channels: connection i to endpoint i mod their
/// number, each a connection of its own.
pub(super) async fn connect_all(spec: &Spec) -> Result<Vec<Channel>, BenchError> {
    let endpoints = spec
        .endpoints
        .iter()
        .map(|e| Ok((e.as_str(), endpoint(spec, e)?)))
        .collect::<Result<Vec<_>, BenchError>>()?;
    let opens = (0..spec.conns).map(|i| {
        let (name, ep) = &endpoints[i % endpoints.len()];
        async move {
            ep.connect().await.map_err(|err| BenchError::Connect {
                endpoint: name.to_string(),
                reason: chain(&err),
            })
        }
    });
    let channels = futures::future::try_join_all(opens).await?;
    tracing::debug!(conns = channels.len(), "bench: connected");
    Ok(channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        assert_eq!(
            url("127.0.0.1:2379", false).unwrap().as_str(),
            "http://127.0.0.1:2379/"
        );
        assert_eq!(
            url("localhost:2379", true).unwrap().as_str(),
            "https://localhost:2379/"
        );
        assert_eq!(
            url("http://[::1]:2379", true).unwrap().as_str(),
            "http://[::1]:2379/"
        );
        for bad in ["unix:///tmp/x", "http://", "ftp://h:1"] {
            assert!(url(bad, false).is_err(), "{bad}");
        }
    }
}
