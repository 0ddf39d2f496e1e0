//! The leader lease: who may run PostgreSQL as the writable primary (DESIGN §3).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::member::NodeId;

/// The fencing epoch. A new epoch starts with every grant of the lease, including a grant to
/// the node that held it before, so an epoch names exactly one tenure.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after this one. Saturates at `u64::MAX`, which no cluster reaches, so that
    /// `apply` stays total.
    pub fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The lease as committed: its holder, the tenure (`epoch`) and the number of committed
/// renewals in that tenure (`seq`, 0 right after the grant).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    pub holder: NodeId,
    pub epoch: Epoch,
    pub seq: u64,
}

impl Lease {
    /// The point a candidate observed, for a compare-and-set takeover: it names this exact
    /// renewal of this exact tenure, so a renewal committed after the observation makes the
    /// takeover fail.
    pub fn as_ref_point(&self) -> LeaseRef {
        LeaseRef {
            epoch: self.epoch,
            seq: self.seq,
        }
    }
}

impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} (epoch {}, renewal {})",
            self.holder, self.epoch, self.seq
        )
    }
}

/// One observed renewal of one tenure; see [`Lease::as_ref_point`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseRef {
    pub epoch: Epoch,
    pub seq: u64,
}

impl fmt::Display for LeaseRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}, renewal {}", self.epoch, self.seq)
    }
}
