//! Joining a running cluster (`--initial-cluster-state existing`): the new
//! member asks the peers of `--initial-cluster` for the id `member add` gave
//! it and for the cluster id; a member answers from its membership.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::identity::{token_hash, Identity};
use super::{Server, REQUEST_TIMEOUT};
use crate::config::{url_string, Config};
use crate::raft::network::{PeerError, PeerTransport, Rpc};

/// A member started with `--initial-cluster-state existing` introducing
/// itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// [`token_hash`] of its `--initial-cluster-token`.
    pub token_hash: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
}

/// The ids a joining member adopts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinReply {
    pub member_id: u64,
    pub cluster_id: u64,
}

impl Server {
    /// Answer a member joining with `--initial-cluster-state existing`.
    pub(crate) fn serve_join(&self, req: JoinRequest) -> Result<JoinReply, String> {
        let id = &self.inner.identity;
        if req.token_hash != token_hash(&self.inner.config.initial_cluster_token) {
            tracing::warn!(
                joining = %req.name,
                peer_urls = ?req.peer_urls,
                cluster_id = format!("{:x}", id.cluster_id),
                "refused a member with another --initial-cluster-token"
            );
            return Err(format!(
                "member {:?} ({}) has another --initial-cluster-token than cluster {:x}",
                req.name,
                req.peer_urls.join(","),
                id.cluster_id
            ));
        }
        let wanted: BTreeSet<&String> = req.peer_urls.iter().collect();
        let found = self
            .members()
            .into_iter()
            .find(|m| m.peer_urls.iter().collect::<BTreeSet<_>>() == wanted);
        match found {
            Some(m) if m.name.is_empty() || m.name == req.name => Ok(JoinReply {
                member_id: m.id,
                cluster_id: id.cluster_id,
            }),
            Some(m) => Err(format!(
                "the member with peer URLs {} is {:?}, not {:?}",
                req.peer_urls.join(","),
                m.name,
                req.name
            )),
            None => Err(format!(
                "cluster {:x} has no member with peer URLs {}: add it first with `etcdctl member add {} --peer-urls={}`",
                id.cluster_id,
                req.peer_urls.join(","),
                req.name,
                req.peer_urls.join(",")
            )),
        }
    }
}

/// Errors joining a running cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cannot join: {0}")]
    Refused(String),
    #[error("cannot join: no member of --initial-cluster answered ({0})")]
    NoPeer(String),
}

/// Ask the other members listed in `--initial-cluster` for this member's id
/// and the cluster id (`--initial-cluster-state existing`).
pub async fn join(config: &Config) -> Result<Identity, JoinError> {
    let transport = PeerTransport::new(
        0,
        0,
        config.peer_tls.clone(),
        config.max_peer_message_bytes(),
    );
    let me: Vec<String> = config
        .initial_advertise_peer_urls
        .iter()
        .map(url_string)
        .collect();
    let req = JoinRequest {
        token_hash: token_hash(&config.initial_cluster_token),
        name: config.name.clone(),
        peer_urls: me.clone(),
    };
    let peers: Vec<String> = config
        .initial_cluster
        .iter()
        .filter(|(n, _)| *n != config.name)
        .flat_map(|(_, us)| us.iter().map(url_string))
        .filter(|u| !me.contains(u))
        .collect();
    if peers.is_empty() {
        return Err(JoinError::NoPeer(
            "--initial-cluster lists no other member".into(),
        ));
    }
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    let mut last = String::new();
    loop {
        for url in &peers {
            let reply: Result<Result<JoinReply, String>, PeerError> = transport
                .call_typed(Rpc::Join, 0, url, &req, Duration::from_secs(2))
                .await;
            match reply {
                Ok(Ok(r)) => {
                    tracing::info!(
                        peer = %url,
                        member_id = format!("{:x}", r.member_id),
                        cluster_id = format!("{:x}", r.cluster_id),
                        "joined the cluster"
                    );
                    return Ok(Identity {
                        name: config.name.clone(),
                        member_id: r.member_id,
                        cluster_id: r.cluster_id,
                    });
                }
                Ok(Err(reason)) => return Err(JoinError::Refused(format!("{url}: {reason}"))),
                Err(e) => last = e.to_string(),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(JoinError::NoPeer(last));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
