//! How a replica with an empty data dir finds its cluster, or forms it.
//!
//! The replica serves its peer port first (answering only `Discover`), then
//! asks every other replica of the table where it stands, in rounds:
//!
//! * a member that knows its leader: join through that leader (the leader
//!   adds this replica as a learner) and take the cluster's id;
//! * a member without a leader, or a replica forming a cluster: wait;
//! * nobody but replicas that are still looking, all with higher ids than
//!   this one (or nobody at all): if that held for every round over
//!   [`SETTLE`], form a one-voter cluster. Otherwise wait.
//!
//! Why two replicas starting at once cannot both form a cluster: each
//! serves its port before its first round. Of two replicas A and B, the one
//! whose port came up last (say B) sees the other in every round it runs.
//! If A is lower, B never forms one. If B is lower, A may not have seen B
//! in its first rounds; but A forms a cluster only after a round that
//! starts [`SETTLE`] after its first, and B's port was up by then unless B
//! started after A's whole settle time — in which case A says it is
//! forming a cluster (or is a member) by the time B's second round asks,
//! since `SETTLE` is longer than a round can take ([`PROBE_TIMEOUT`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::codec::{decode_wire, encode};
use crate::config::{url_string, Config, Growth};
use crate::error::ApiError;
use crate::pb::raftcdpb::peer_server::{Peer, PeerServer};
use crate::pb::raftcdpb::{PeerReply, PeerRequest};
use crate::raft::network::{PeerError, PeerTransport, Rpc};
use crate::replicas::Replica;
use crate::server::identity::{grown_cluster_id, replica_member_id, token_hash};
use crate::server::ops::{LeaderOp, LeaderReply, Refusal};
use crate::server::replica::{DiscoverReply, DiscoverRequest, Standing};
use crate::server::Identity;
use crate::tls::ServerTls;

/// How long one replica has to answer a `Discover`.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a replica must have seen no lower replica and no cluster
/// before it forms one (longer than a round of probes can take).
pub const SETTLE: Duration = Duration::from_millis(1500);
/// Pause between rounds.
const ROUND_PAUSE: Duration = Duration::from_millis(200);

/// What discovery came to.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub identity: Identity,
    /// This replica forms the cluster (else it joined one as a learner).
    pub founder: bool,
}

/// Errors a replica cannot get past by waiting.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot join: {0}")]
    Refused(String),
}

/// The peer service while discovering: `Discover` only.
struct Discovering {
    token_hash: u64,
    replica_id: u64,
    standing: Arc<Mutex<Standing>>,
}

fn not_yet() -> Status {
    Status::unavailable("this replica is still looking for its cluster")
}

#[tonic::async_trait]
impl Peer for Discovering {
    async fn append_entries(&self, _: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        Err(not_yet())
    }
    type AppendEntriesStreamStream = futures::stream::Empty<Result<PeerReply, Status>>;
    async fn append_entries_stream(
        &self,
        _: Request<tonic::Streaming<PeerRequest>>,
    ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
        Err(not_yet())
    }
    async fn vote(&self, _: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        Err(not_yet())
    }
    async fn install_snapshot(
        &self,
        _: Request<PeerRequest>,
    ) -> Result<Response<PeerReply>, Status> {
        Err(not_yet())
    }
    async fn forward(&self, _: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        Err(not_yet())
    }
    type ForwardStreamStream = futures::stream::Empty<Result<PeerReply, Status>>;
    async fn forward_stream(
        &self,
        _: Request<tonic::Streaming<PeerRequest>>,
    ) -> Result<Response<Self::ForwardStreamStream>, Status> {
        Err(not_yet())
    }
    async fn read_index(&self, _: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        Err(not_yet())
    }
    async fn join(&self, _: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        Err(not_yet())
    }
    async fn timeout_now(&self, _: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        Err(not_yet())
    }
    async fn discover(&self, req: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        let ask: DiscoverRequest = decode_wire(&req.into_inner().payload)
            .map_err(|e| Status::invalid_argument(format!("bad peer message: {e}")))?;
        let standing = self
            .standing
            .lock()
            .map(|s| s.clone())
            .unwrap_or(Standing::Discovering);
        let reply = DiscoverReply {
            token_ok: ask.token_hash == self.token_hash,
            replica_id: self.replica_id,
            standing,
        };
        Ok(Response::new(PeerReply {
            payload: encode(&reply).into(),
            seq: 0,
        }))
    }
}

/// What one round of probes saw.
#[derive(Debug, Default)]
struct Round {
    /// A member knowing its leader: (cluster id, leader id, leader URL).
    led: Option<(u64, u64, String)>,
    /// A cluster is forming or has no leader yet.
    forming: bool,
    /// Replicas still looking, by id.
    looking: Vec<u64>,
}

/// The discovery service still answering on the peer listeners (a founder
/// keeps saying it is forming the cluster until its member serves).
#[derive(Default)]
pub struct Handoff {
    stop: Option<tokio::sync::watch::Sender<bool>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Handoff {
    /// Stop answering; the listeners are free for the member's peer
    /// service (connections arriving meanwhile wait in their queues).
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

/// Find this replica's cluster or form it, serving `Discover` on
/// `listeners` meanwhile. Returns the identity to store, and the service
/// to stop once the member is ready to serve its peer port.
pub async fn discover(
    config: &Config,
    growth: &Growth,
    listeners: &[(url::Url, Arc<TcpListener>)],
    tls: Option<Arc<ServerTls>>,
) -> Result<(Discovered, Handoff), DiscoveryError> {
    let me = growth.replica_id;
    let standing = Arc::new(Mutex::new(Standing::Discovering));
    let service = Discovering {
        token_hash: token_hash(&growth.table.token),
        replica_id: me,
        standing: standing.clone(),
    };
    let router = tonic::service::Routes::new(
        PeerServer::new(service)
            .max_decoding_message_size(64 * 1024)
            .max_encoding_message_size(64 * 1024),
    )
    .into_axum_router();
    let mut alone_since = None;
    loop {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tasks = listeners
            .iter()
            .map(|(url, l)| {
                let tls = tls.clone().filter(|_| url.scheme() == "https");
                let (router, l, stop) = (router.clone(), l.clone(), stop_rx.clone());
                tokio::spawn(async move { crate::net::serve_on(router, &l, tls, stop, 64).await })
            })
            .collect();
        let serving = Handoff {
            stop: Some(stop_tx),
            tasks,
        };
        let next = find(config, growth, &standing, &mut alone_since).await;
        let (cluster_id, leader, url) = match next {
            Next::Form(cluster_id) => {
                let found = Discovered {
                    identity: identity(config, growth, cluster_id),
                    founder: true,
                };
                return Ok((found, serving));
            }
            Next::Join {
                cluster_id,
                leader,
                url,
            } => (cluster_id, leader, url),
        };
        // Stop answering before joining: the leader starts replicating to
        // this replica at once, and its requests had better wait in the
        // listener's queue for the member's peer service than be refused.
        serving.finish().await;
        match join(config, cluster_id, leader, &url, me).await {
            Ok(()) => {
                tracing::info!(
                    replica = me,
                    cluster_id = format!("{cluster_id:x}"),
                    leader = format!("{leader:x}"),
                    "joined the cluster as a learner"
                );
                let found = Discovered {
                    identity: identity(config, growth, cluster_id),
                    founder: false,
                };
                return Ok((found, Handoff::default()));
            }
            Err(JoinFailed::Refused(reason)) => return Err(DiscoveryError::Refused(reason)),
            Err(JoinFailed::Again(reason)) => {
                tracing::debug!(%reason, "joining through the leader failed; trying again");
                tokio::time::sleep(ROUND_PAUSE).await;
            }
        }
    }
}

/// This replica's identity in cluster `cluster_id`.
fn identity(config: &Config, growth: &Growth, cluster_id: u64) -> Identity {
    Identity {
        name: config.name.clone(),
        member_id: replica_member_id(&growth.table.token, growth.replica_id),
        cluster_id,
    }
}

/// What the rounds of probes decided.
enum Next {
    /// Form cluster `cluster_id`.
    Form(u64),
    /// Join through the leader.
    Join {
        cluster_id: u64,
        leader: u64,
        url: String,
    },
}

/// Rounds of probes until one decides (see the module's comment).
/// `alone_since`: when the rounds began to see no cluster and no lower
/// replica looking.
async fn find(
    config: &Config,
    growth: &Growth,
    standing: &Mutex<Standing>,
    alone_since: &mut Option<Instant>,
) -> Next {
    let token = &growth.table.token;
    let me = growth.replica_id;
    let transport = PeerTransport::new(
        0,
        0,
        config.peer_tls.clone(),
        config.max_peer_message_bytes(),
    );
    let others: Vec<&Replica> = growth
        .table
        .replicas
        .iter()
        .filter(|r| r.run_node && r.id != me)
        .collect();
    let ask = DiscoverRequest {
        token_hash: token_hash(token),
        replica_id: me,
    };
    let mut next_log = Instant::now() + Duration::from_secs(5);
    loop {
        let started = Instant::now();
        let round = probe(&transport, &others, &ask).await;
        if let Some((cluster_id, leader, url)) = round.led {
            *alone_since = None;
            return Next::Join {
                cluster_id,
                leader,
                url,
            };
        } else if round.forming || round.looking.iter().any(|id| *id < me) {
            *alone_since = None;
        } else {
            let since = *alone_since.get_or_insert(started);
            if started.duration_since(since) >= SETTLE {
                if let Ok(mut s) = standing.lock() {
                    *s = Standing::Bootstrapping;
                }
                let cluster_id = grown_cluster_id(token, replica_member_id(token, me));
                tracing::info!(
                    replica = me,
                    cluster_id = format!("{cluster_id:x}"),
                    others_looking = ?round.looking,
                    "no cluster found and no lower replica looking: forming the cluster"
                );
                return Next::Form(cluster_id);
            }
        }
        if Instant::now() >= next_log {
            tracing::info!(
                replica = me,
                looking = ?round.looking,
                "looking for the cluster among the replica table's peers"
            );
            next_log = Instant::now() + Duration::from_secs(5);
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    }
}

/// Ask every other replica where it stands.
async fn probe(transport: &PeerTransport, others: &[&Replica], ask: &DiscoverRequest) -> Round {
    let asks = others.iter().map(|r| async move {
        let url = url_string(&r.peer_url);
        let reply: Result<DiscoverReply, PeerError> = transport
            .call_typed(Rpc::Discover, 0, &url, ask, PROBE_TIMEOUT)
            .await;
        (*r, reply)
    });
    let mut round = Round::default();
    for (r, reply) in futures::future::join_all(asks).await {
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(replica = r.id, error = %e, "no answer");
                continue;
            }
        };
        if !reply.token_ok {
            tracing::warn!(
                replica = r.id,
                peer_url = %r.peer_url,
                "this peer has another cluster token: ignored"
            );
            continue;
        }
        match reply.standing {
            Standing::Discovering => round.looking.push(r.id),
            Standing::Bootstrapping | Standing::Member { leader: None, .. } => round.forming = true,
            Standing::Member {
                cluster_id,
                leader: Some((leader, url)),
                ..
            } => round.led = Some((cluster_id, leader, url)),
        }
    }
    round
}

enum JoinFailed {
    /// Try again (no leader any more, a leader change).
    Again(String),
    /// The cluster refuses this replica.
    Refused(String),
}

/// Ask the leader to add this replica as a learner.
async fn join(
    config: &Config,
    cluster_id: u64,
    leader: u64,
    url: &str,
    replica_id: u64,
) -> Result<(), JoinFailed> {
    let transport = PeerTransport::new(
        cluster_id,
        0,
        config.peer_tls.clone(),
        config.max_peer_message_bytes(),
    );
    let reply: Result<Result<LeaderReply, Refusal>, PeerError> = transport
        .call_typed(
            Rpc::Forward,
            leader,
            url,
            &LeaderOp::AddReplica { replica_id },
            crate::server::REQUEST_TIMEOUT,
        )
        .await;
    match reply {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(Refusal::NotLeader(_))) => Err(JoinFailed::Again("not the leader any more".into())),
        Ok(Err(Refusal::Api(ApiError::Internal(reason)))) => Err(JoinFailed::Refused(reason)),
        Ok(Err(Refusal::Api(e))) => Err(JoinFailed::Again(e.to_string())),
        Err(e) => Err(JoinFailed::Again(e.to_string())),
    }
}
