//! What operators and members ask of the cluster and `apply` keeps until it is done: join
//! tokens, a switchover, a forced failover, an operation on one member's PostgreSQL. Both
//! [`super::command`] (which carries them) and [`super::state`] (which holds them) use these.

use serde::{Deserialize, Serialize};

use super::member::NodeId;

/// A join token as stored in Raft: only the hash of its secret is replicated.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    /// Lowercase hex SHA-256 of the secret, compared with what a joining node presents.
    pub secret_sha256: String,
    /// Registrations this token still admits.
    pub uses_left: u32,
    /// The token admits registrations proposed strictly before this Unix time (seconds).
    pub expires_at_unix: u64,
}

/// A requested hand-over of the lease from its holder.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Switchover {
    /// The current holder, which demotes itself and releases the lease.
    pub from: NodeId,
    /// The member that should take the lease, or `None` for the healthiest eligible one.
    pub to: Option<NodeId>,
    /// Not before this Unix time in milliseconds, judged by the holder; `None` for now.
    pub at_unix_ms: Option<u64>,
}

/// A forced failover requested by an operator (`pgquorum failover --candidate`): `to`
/// takes a vacant lease even if the automatic rules would not let it (lag, synchronous
/// set), accepting that it may lack commits the lost primary acknowledged.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Failover {
    pub to: NodeId,
}

/// An operation an operator asked one member to carry out on its PostgreSQL.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum MemberAction {
    /// Restart PostgreSQL in its current role (a primary keeps its lease).
    Restart,
    /// Replace a replica's data directory with a fresh clone of the primary.
    Reinit,
}

impl MemberAction {
    /// The action as a verb, for messages: "restart", "re-initialise".
    pub fn verb(self) -> &'static str {
        match self {
            MemberAction::Restart => "restart",
            MemberAction::Reinit => "re-initialise",
        }
    }
}
