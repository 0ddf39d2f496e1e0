//! Members of the cluster: their stable identity, addresses and failover tags.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The identity of a member, allocated once by `apply` and never reused, even after the
/// member is removed (so a stale message from a removed node can never be mistaken for a new
/// one). It is also the openraft node id.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for NodeId {
    fn from(id: u64) -> Self {
        NodeId(id)
    }
}

/// Per-member failover preferences, with Patroni's names. Every field may be omitted when
/// deserializing and then takes its default.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default)]
pub struct Tags {
    /// This member never takes the lease on its own and is not a switchover target.
    pub nofailover: bool,
    /// The reader port does not route to this member.
    pub noloadbalance: bool,
    /// Among equally healthy candidates the higher value is preferred. Defaults to 1.
    pub failover_priority: u32,
}

impl Default for Tags {
    fn default() -> Self {
        Tags {
            nofailover: false,
            noloadbalance: false,
            failover_priority: 1,
        }
    }
}

/// A registered member. `name` is unique among current members; addresses are `host:port`
/// strings as the operator wrote them (resolution happens at the edges, never in `apply`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub name: String,
    /// Peer gRPC address (Raft and status exchange), default port 7400.
    pub peer_addr: String,
    /// REST address (health endpoints and admin), default port 8008.
    pub api_addr: String,
    /// PostgreSQL address that proxies and replicas connect to, default port 5432.
    pub pg_addr: String,
    #[serde(default)]
    pub tags: Tags,
}

impl Member {
    /// A witness: a voting member without PostgreSQL (it registered no PostgreSQL address).
    /// It never holds data, is never cloned from and never promoted.
    pub fn is_witness(&self) -> bool {
        self.pg_addr.is_empty()
    }
}
