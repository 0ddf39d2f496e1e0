//! The replicated cluster state and the pure, deterministic `apply` that changes it.
//!
//! Owns the decisions that Raft replicates (DESIGN §2): membership and join tokens, the
//! leader lease with its fencing epoch (DESIGN §3), the dynamic configuration and a requested
//! switchover. Fast-changing status (WAL positions, lag, health) is not here: see `peers`.
//!
//! ```text
//!   proposer (ha, api, cli via api)          every node, same order
//!   Command { .., now_unix } --raft log--> apply(&mut ClusterState, &Command) -> CommandResult
//! ```
//!
//! [`apply`] reads no clock, file or network: time enters only as values the proposer put
//! into a [`Command`]. It is total: every rejection is a [`CommandResult::Rejected`] value,
//! never a panic or an `Err`, and a rejected command leaves the state untouched, so all nodes
//! that apply the same log hold byte-identical states.

mod apply;
mod backup;
mod backup_job;
mod ca;
mod command;
mod config;
pub mod history;
mod lease;
mod member;
mod request;
mod restore;
mod state;
mod sync;

pub use apply::apply;
pub use backup::{BackupConfig, RepoType};
pub use backup_job::{BackupJob, BackupKind, BackupOutcome};
pub use ca::{CaRecord, CaRotation};
pub use command::{Command, CommandResult, Rejection, COMMAND_LEVEL};
pub use config::{DynamicConfig, SynchronousMode};
pub use history::TimelineSwitch;
pub use lease::{Epoch, Lease, LeaseRef};
pub use member::{Member, NodeId, Tags};
pub use request::{Failover, JoinToken, MemberAction, Switchover};
pub use restore::{Restore, RestoreOutcome, RestoreTarget};
pub use state::ClusterState;
pub use sync::{SyncRule, SyncState};

#[cfg(test)]
mod tests;
