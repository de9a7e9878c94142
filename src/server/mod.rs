//! The core of a member (etcd's `EtcdServer`): Raft over storage, the
//! published store view, the watch hub and the lessor, and the requests
//! served on them. It knows no listener and no gRPC client API: the API
//! adapters (`api/`) and the in-process client call it, and `node.rs` wires
//! it to its listeners.
//!
//! * [`open`]: opening the data dir, starting Raft, forming or joining the
//!   cluster, waiting for a leader.
//! * [`concurrency`]: etcd's Lock and Election services (keys under a
//!   name bound to leases, waiters in create-revision order).
//! * [`auth`]: who a request is from (token, certificate CN) and the
//!   permission checks made before proposing; [`auth_service`]: etcd's
//!   Auth service (users, roles, enable, authenticate).
//! * [`identity`]: member and cluster ids; the data dir's identity check.
//! * [`kv`]: the KV and lease services over Raft (etcd's `RaftKV`).
//! * [`leader`]: what only the leader serves, forwarding to it, leadership
//!   transfer, and the leader's side of the peer port.
//! * [`ops`]: the leader requests and replies that cross the peer port.
//! * [`membership`]: the member list and membership changes.
//! * [`join`]: joining a running cluster.
//! * [`recover`]: restarting a member as a new cluster (`--force-new-cluster`).
//! * [`replica`]: a self-growing cluster's member side: discovery answers,
//!   adding a replica, promotions and demotions.
//! * [`maintenance`]: status, hashes, defragment, backups, metrics figures.
//! * [`tasks`]: the background tasks a member runs (lease expiry, snapshot
//!   triggers, leader probes, Raft metrics).

pub mod auth;
pub mod auth_service;
pub mod concurrency;
pub mod identity;
pub mod join;
pub mod kv;
pub mod leader;
pub mod maintenance;
pub mod membership;
pub mod open;
pub mod ops;
mod read_index;
pub mod recover;
pub mod replica;
pub mod tasks;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use identity::Identity;
pub use open::StartError;
pub use ops::MemberRow;

use crate::config::Config;
use crate::error::ApiError;
use crate::lessor::Lessor;
use crate::mvcc::{ReadView, View};
use crate::pb::etcdserverpb::ResponseHeader;
use crate::raft::network::PeerTransport;
use crate::raft::peer_service::LeaderContact;
use crate::raft::proposer::Proposer;
use crate::raft::state_machine::RemovedMembers;
use crate::raft::Raft;
use crate::storage::Storage;
use crate::tls::ServerTls;
use crate::watch::WatchHub;

/// How long a client request waits for a leader / for its commit.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// How long to wait before asking again when there is no leader to ask.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// The deadline of a request starting now.
fn deadline() -> Instant {
    Instant::now() + REQUEST_TIMEOUT
}

/// What one attempt of a retried request came to.
enum Attempt<T> {
    Done(T),
    /// Not now (no leader, a leader change, a change in progress): again
    /// after a short pause, until the deadline.
    Retry,
}

/// Run `attempt` (given the deadline) until it is done, fails, or the
/// deadline passes; then `timed_out` is the error.
async fn retry_until<T, E, F, Fut>(
    deadline: Instant,
    mut attempt: F,
    timed_out: impl Fn() -> E,
) -> Result<T, E>
where
    F: FnMut(Instant) -> Fut,
    Fut: Future<Output = Result<Attempt<T>, E>>,
{
    loop {
        if let Attempt::Done(t) = attempt(deadline).await? {
            return Ok(t);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(timed_out());
        }
        tokio::time::sleep_until((now + RETRY_PAUSE).min(deadline)).await;
    }
}

/// Raft facts readers need without touching Raft's locks.
#[derive(Default)]
pub struct RaftState {
    pub term: AtomicU64,
    pub leader: AtomicU64,
    /// This member is a learner (not a voter) in the current membership.
    pub is_learner: AtomicBool,
    /// Times this member saw a new leader.
    pub leader_changes: AtomicU64,
}

/// Everything a running member shares; private to this module and its
/// children, which hold the code that uses it.
struct Inner {
    config: Config,
    identity: Identity,
    storage: Storage,
    /// The Raft log, for why it stopped if it did.
    wal: crate::storage::Wal,
    raft: Raft,
    proposer: Proposer,
    view: ReadView,
    raft_state: Arc<RaftState>,
    watch: WatchHub,
    transport: PeerTransport,
    removed: RemovedMembers,
    /// Lease deadlines and keep-alives (leader side).
    lessor: Lessor,
    /// TLS of the `https://` client listeners.
    client_tls: Option<Arc<ServerTls>>,
    /// TLS of the `https://` peer listeners and of dialing peers.
    peer_tls: Option<Arc<ServerTls>>,
    shutdown_tx: watch::Sender<bool>,
    /// When a leader last sent this member entries or a snapshot.
    leader_contact: Arc<LeaderContact>,
    /// Every task spawned for this member, aborted at shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Linearizable reads waiting for a shared read-index round.
    reads: read_index::ReadBatcher,
    /// The simple tokens this member knows (kept by the state machine).
    tokens: Arc<crate::auth::token::SimpleTokens>,
    /// With `--auth-token jwt`: the keys.
    jwt: Option<Arc<crate::auth::jwt::JwtKeys>>,
}

/// The core of a running member. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl Server {
    /// The configuration the member was started with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// This member's and its cluster's ids.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// The current view of the store, for reads.
    pub fn view(&self) -> Arc<View> {
        self.inner.view.load()
    }

    /// The watch hub serving watch streams from applied events.
    pub fn watch_hub(&self) -> &WatchHub {
        &self.inner.watch
    }

    /// A response header for `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        make_header(&self.inner.identity, &self.inner.raft_state, revision)
    }

    /// Whether this member is a learner (etcd serves learners' clients only
    /// Status and serializable Range).
    pub fn is_learner(&self) -> bool {
        self.inner.raft_state.is_learner.load(Ordering::Relaxed)
    }

    /// Whether client requests beyond Status and serializable Range are
    /// refused here: on a learner, as etcd does, except in a cluster grown
    /// from a replica table, where learners are ordinary replicas and serve
    /// their clients (forwarding to the leader).
    pub fn refuses_clients(&self) -> bool {
        self.is_learner() && self.inner.config.growth.is_none()
    }

    /// The current leader's member id, as this member knows it.
    pub fn leader(&self) -> Option<u64> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// The current term if this member is the leader.
    fn leader_term(&self) -> Option<u64> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        (m.current_leader == Some(self.inner.identity.member_id)).then_some(m.current_term)
    }

    /// The error of a request that ran out of time: no leader, or a timeout.
    fn no_leader_or_timeout(&self) -> ApiError {
        match self.leader() {
            None => ApiError::NoLeader,
            Some(_) => ApiError::Timeout,
        }
    }

    /// TLS of the `https://` client listeners, if any.
    pub fn client_tls(&self) -> Option<Arc<ServerTls>> {
        self.inner.client_tls.clone()
    }

    /// TLS of the `https://` peer listeners, if any.
    pub fn peer_tls(&self) -> Option<Arc<ServerTls>> {
        self.inner.peer_tls.clone()
    }

    fn tls_sides(&self) -> Vec<Arc<ServerTls>> {
        [&self.inner.client_tls, &self.inner.peer_tls]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Re-read the certificate files (the binary does this on SIGHUP; they
    /// are also re-read when they change). On error the old ones stay.
    /// Peer connections are dialed anew with the new certificates.
    pub fn reload_tls(&self) -> Result<(), crate::tls::TlsError> {
        for t in self.tls_sides() {
            t.reload()?;
        }
        self.inner.transport.reset_connections();
        Ok(())
    }

    /// Watch the certificate files and reload them when they change.
    pub fn watch_tls_files(&self) {
        let watched = self.tls_sides();
        if watched.is_empty() {
            return;
        }
        let transport = self.inner.transport.clone();
        self.spawn(crate::tls::watch_files(
            watched,
            move || transport.reset_connections(),
            self.shutdown_signal(),
        ));
    }

    /// Certificates (served or trusted) that expired or expire within 7
    /// days, for `endpoint status`'s `errors`.
    pub fn tls_warnings(&self) -> Vec<String> {
        let now = std::time::SystemTime::now();
        self.tls_sides()
            .iter()
            .flat_map(|t| t.expiry_warnings(now))
            .collect()
    }

    /// Install (or remove) a fault-injection filter on this member's
    /// outgoing peer requests.
    pub fn set_fault_filter(&self, filter: Option<Arc<dyn crate::raft::network::FaultFilter>>) {
        self.inner.transport.set_fault_filter(filter);
    }

    /// Run `f` as one of this member's tasks: aborted at shutdown.
    pub fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F) {
        let h = tokio::spawn(f);
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            tasks.push(h);
        }
    }

    /// Turns true when the member shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown_tx.subscribe()
    }

    /// Why this member's log stopped accepting writes (a failed fsync or
    /// write), if it did: it acknowledges nothing more until restarted.
    pub fn storage_failure(&self) -> Option<String> {
        self.inner.wal.failure()
    }

    /// Stop every task and stop Raft (every acknowledged write is already
    /// durable in the log). Once every handle is
    /// dropped, the data dir can be reopened.
    pub async fn shutdown(&self) -> Result<(), StartError> {
        let _ = self.inner.shutdown_tx.send(true);
        let tasks: Vec<JoinHandle<()>> = match self.inner.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        // Raft may have stopped on its own (a failed fsync): still wait for
        // its handles below.
        let stopped = self.inner.raft.shutdown().await;
        // Raft's log and state machine workers drop their storage handles
        // shortly after Raft stops; wait for that, so that the data dir is
        // free to reopen once the caller drops its last handle.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.inner.storage.handle_count() > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        stopped.map_err(|e| StartError::Raft(e.to_string()))
    }
}

fn make_header(identity: &Identity, raft_state: &RaftState, revision: i64) -> ResponseHeader {
    ResponseHeader {
        cluster_id: identity.cluster_id,
        member_id: identity.member_id,
        revision,
        raft_term: raft_state.term.load(Ordering::Relaxed),
    }
}

/// [`Server::header`] for parts that do not hold a `Server` (the watch hub).
fn header_fn(identity: &Identity, raft_state: Arc<RaftState>) -> crate::watch::HeaderFn {
    let identity = identity.clone();
    Arc::new(move |revision| make_header(&identity, &raft_state, revision))
}
