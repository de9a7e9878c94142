//! A running raftcd member as a program holds it: the member's core
//! ([`Server`]) wired to its listeners. [`Node::start`] is the one start
//! function; the binary and embedding programs both use it.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::client::Client;
use crate::cluster::{discovery, growth};
use crate::config::{url_string, Config};
use crate::raft::network::FaultFilter;
use crate::server::{Identity, MemberRow, Server, StartError};
use crate::storage::Storage;

/// A running member. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    server: Server,
    /// Addresses the client listeners are bound to.
    client_addrs: Arc<Vec<SocketAddr>>,
}

/// Bind a listener for `url` (peer or client), naming the URL on failure.
async fn listen(url: &url::Url) -> Result<tokio::net::TcpListener, StartError> {
    crate::net::bind(url)
        .await
        .map_err(|source| StartError::Listen {
            url: url_string(url),
            source,
        })
}

impl Node {
    /// Open the data dir, start Raft, serve the peer URLs, wait until the
    /// cluster has a leader, then serve the client URLs.
    pub async fn start(config: Config) -> Result<Node, StartError> {
        Self::start_filtered(config, None).await
    }

    /// [`Node::start`] with a fault filter on the peer transport from the
    /// moment Raft starts (for fault-injection tests: a member restarted
    /// inside a partition stays inside it while it starts).
    #[doc(hidden)]
    pub async fn start_filtered(
        config: Config,
        filter: Option<Arc<dyn FaultFilter>>,
    ) -> Result<Node, StartError> {
        if config.force_new_cluster {
            crate::server::recover::force_new_cluster(&config).await?;
        }
        // A replica of a replica table with an empty data dir first finds
        // its cluster (or forms it), answering on its peer port meanwhile.
        let mut bound = Vec::new();
        let mut found = None;
        let mut founder = false;
        let mut handoff = discovery::Handoff::default();
        if let Some(growth) = config.growth.clone() {
            if !Storage::holds_identity(&config.data_dir) {
                config.check_tls()?;
                for url in &config.listen_peer_urls {
                    bound.push((url.clone(), Arc::new(listen(url).await?)));
                }
                let tls = crate::server::open::load_tls(
                    &config.listen_peer_urls,
                    config.peer_tls.as_ref(),
                    true,
                )?;
                let (d, serving) = discovery::discover(&config, &growth, &bound, tls)
                    .await
                    .map_err(|e| StartError::Rejected(e.to_string()))?;
                found = Some(d.identity);
                founder = d.founder;
                handoff = serving;
            }
        }
        let server = Server::open_as(config, found).await;
        handoff.finish().await;
        let server = server?;
        if filter.is_some() {
            server.set_fault_filter(filter);
        }
        let config = server.config().clone();
        for url in &config.listen_peer_urls {
            let listener = match bound.iter().position(|(u, _)| u == url) {
                Some(i) => Arc::try_unwrap(bound.swap_remove(i).1).map_err(|_| {
                    StartError::Raft("the peer listener is still in use by discovery".into())
                })?,
                None => listen(url).await?,
            };
            tracing::info!(url = %url, addr = ?listener.local_addr().ok(), "serving peer requests");
            let tls = server.peer_tls().filter(|_| url.scheme() == "https");
            server.spawn(crate::raft::peer_service::serve(
                server.peer_service(),
                listener,
                tls,
                server.shutdown_signal(),
                config.max_peer_message_bytes(),
                config.max_peer_connections,
            ));
        }
        match &config.growth {
            Some(_) => server.bootstrap_replica(founder).await?,
            None => server.bootstrap().await?,
        }
        server.start_background();
        server.wait_for_leader().await?;
        server.publish().await;
        let mut client_addrs = Vec::new();
        for url in &config.listen_client_urls {
            let listener = listen(url).await?;
            client_addrs.extend(listener.local_addr().ok());
            tracing::info!(url = %url, addr = ?listener.local_addr().ok(), "serving client requests");
            let tls = server.client_tls().filter(|_| url.scheme() == "https");
            let router = crate::api::router(&server).merge(crate::escrow::service::router(
                crate::escrow::Escrow::new(Client::new(server.clone())),
            ));
            server.spawn(crate::net::serve_router(
                crate::api::ClientService::new(&server, router),
                listener,
                tls,
                server.shutdown_signal(),
                config.max_client_connections,
            ));
        }
        server.watch_tls_files();
        if let Some(growth) = config.growth.clone() {
            server.spawn(growth::run(server.clone(), growth));
        }
        let id = server.identity();
        tracing::info!(
            name = %id.name,
            member_id = format!("{:x}", id.member_id),
            cluster_id = format!("{:x}", id.cluster_id),
            "raftcd member ready"
        );
        Ok(Node {
            server,
            client_addrs: Arc::new(client_addrs),
        })
    }

    /// The payment-channel operations, in-process (see `crate::escrow`).
    pub fn escrow(&self) -> crate::escrow::Escrow {
        crate::escrow::Escrow::new(self.client())
    }

    /// A typed, linearizable KV handle working in-process (no ports).
    pub fn client(&self) -> Client {
        Client::new(self.server.clone())
    }

    /// Addresses the client listeners are bound to (useful with port 0).
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.client_addrs.to_vec()
    }

    /// This member's and its cluster's ids.
    pub fn identity(&self) -> &Identity {
        self.server.identity()
    }

    /// Every member in the local membership configuration.
    pub fn members(&self) -> Vec<MemberRow> {
        self.server.members()
    }

    /// The current leader's member id, as this member knows it.
    pub fn leader(&self) -> Option<u64> {
        self.server.leader()
    }

    /// Whether this member is a learner.
    pub fn is_learner(&self) -> bool {
        self.server.is_learner()
    }

    /// Resolves when the cluster has refused this member for good (it was
    /// removed, or it talks to another cluster); the reason.
    pub async fn refused(&self) -> String {
        self.server.refused().await
    }

    /// Re-read the certificate files (the binary does this on SIGHUP; they
    /// are also re-read when they change). On error the old ones stay.
    pub fn reload_tls(&self) -> Result<(), crate::tls::TlsError> {
        self.server.reload_tls()
    }

    /// Why this member's log stopped accepting writes (a failed fsync or
    /// write), if it did: it acknowledges nothing more until restarted.
    pub fn storage_failure(&self) -> Option<String> {
        self.server.storage_failure()
    }

    /// Certificates (served or trusted) that expired or expire within 7
    /// days.
    pub fn tls_warnings(&self) -> Vec<String> {
        self.server.tls_warnings()
    }

    /// Install (or remove) a fault-injection filter on this member's
    /// outgoing peer requests: drop or delay them per peer, to simulate
    /// partitions and slow links in tests.
    pub fn set_fault_filter(&self, filter: Option<Arc<dyn FaultFilter>>) {
        self.server.set_fault_filter(filter);
    }

    /// Stop serving, stop Raft and flush storage. Once every handle to this
    /// node (its clients included) is dropped, the data dir can be reopened.
    pub async fn shutdown(self) -> Result<(), StartError> {
        self.server.shutdown().await
    }
}
