//! Who this member is: its name, member id and cluster id, how they are
//! derived for a new cluster, stored in the data dir and checked on restart,
//! and the initial membership every member of a new cluster derives alike.

use sha2::{Digest, Sha256};

use crate::config::Config;

/// Stable identity of this member and its cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub name: String,
    pub member_id: u64,
    pub cluster_id: u64,
}

fn hash_id(parts: &[&str]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b).max(1)
}

impl Identity {
    /// Member id from name, peer URLs (this member's `--initial-cluster`
    /// entry) and cluster token; cluster id from the token and the initial
    /// member list. Never zero. Every member derives the same ids for the
    /// whole initial cluster (see [`member_id`]).
    pub fn derive(config: &Config) -> Self {
        let own = config
            .initial_cluster
            .iter()
            .find(|(n, _)| *n == config.name)
            .map(|(_, us)| us.clone())
            .unwrap_or_else(|| config.initial_advertise_peer_urls.clone());
        let member_id = member_id(&config.name, &own, &config.initial_cluster_token);
        let mut members: Vec<String> = config
            .initial_cluster
            .iter()
            .map(|(n, us)| {
                let us: Vec<&str> = us.iter().map(|u| u.as_str()).collect();
                format!("{n}={}", us.join(","))
            })
            .collect();
        members.sort();
        let mut parts = vec!["cluster", config.initial_cluster_token.as_str()];
        parts.extend(members.iter().map(String::as_str));
        Identity {
            name: config.name.clone(),
            member_id,
            cluster_id: hash_id(&parts),
        }
    }
}

/// The id of member `name` with `peer_urls` in a cluster bootstrapped with
/// `token`: every member computes the same ids for the whole
/// `--initial-cluster`.
pub fn member_id(name: &str, peer_urls: &[url::Url], token: &str) -> u64 {
    let peers: Vec<&str> = peer_urls.iter().map(|u| u.as_str()).collect();
    let mut parts = vec!["member", name, token];
    parts.extend(peers);
    hash_id(&parts)
}

/// The id of a member added at run time: its peer URLs, the cluster token
/// and the time, as etcd does.
pub fn new_member_id(peer_urls: &[String], token: &str) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string();
    let mut sorted: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    sorted.sort();
    let mut parts = vec!["added-member", token, now.as_str()];
    parts.extend(sorted);
    hash_id(&parts)
}

/// The member id of replica `replica_id` of a replica table with `token`:
/// the same on every replica, so the leader maps rows to members.
pub fn replica_member_id(token: &str, replica_id: u64) -> u64 {
    hash_id(&["replica", token, &replica_id.to_string()])
}

/// The id of a cluster that replica member `member_id` forms alone: the
/// token, the founder and the time, so that two clusters formed by
/// mistake never share an id.
pub fn grown_cluster_id(token: &str, member_id: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string();
    hash_id(&["grown-cluster", token, &member_id.to_string(), &now])
}

/// What peers compare to tell a joining member of another cluster.
pub fn token_hash(token: &str) -> u64 {
    hash_id(&["cluster-token", token])
}
