//! What a member asks of the leader and what it answers: the messages of
//! the `Forward` peer RPC, shared by the code that sends them
//! (`leader.rs`) and the code that serves them (`leader.rs`,
//! `membership.rs`).

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::mvcc::{Command, Reply};
use crate::raft::MemberInfo;

/// A request only the leader can serve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderOp {
    /// Propose a state machine command.
    Write(Command),
    /// `member add`: a new member with these peer URLs.
    AddMember {
        peer_urls: Vec<String>,
        learner: bool,
    },
    /// `member remove`.
    RemoveMember { id: u64 },
    /// `member update`: new peer URLs.
    UpdateMember { id: u64, peer_urls: Vec<String> },
    /// `member promote`: learner to voter.
    PromoteMember { id: u64 },
    /// A started member publishes its name and client URLs.
    Publish { id: u64, info: MemberInfo },
    /// A lease keep-alive (lease deadlines live in the leader's lessor).
    LeaseKeepAlive { id: i64 },
    /// A replica of the replica table joins as a learner.
    AddReplica { replica_id: u64 },
}

/// The leader's answer to a [`LeaderOp`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderReply {
    Write(Reply),
    /// The lease's granted TTL, or 0 if it is gone.
    LeaseKeepAlive {
        ttl: i64,
    },
    /// After a membership change: the member concerned and all members.
    Members {
        member: Option<MemberRow>,
        members: Vec<MemberRow>,
    },
}

/// Why the leader (or a member taking itself for one) did not serve a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Refusal {
    /// This member does not lead; the leader if known. Nothing was done.
    NotLeader(Option<u64>),
    /// The request failed with an error to give the client.
    Api(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Api(e)
    }
}

/// One member as the Cluster API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}
