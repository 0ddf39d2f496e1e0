//! The commands proposed to Raft and the results `apply` returns for them.

use serde::{Deserialize, Serialize};

use super::backup_job::{BackupJob, BackupOutcome};
use super::ca::CaRecord;
use super::config::DynamicConfig;
use super::history::TimelineSwitch;
use super::lease::{Epoch, Lease, LeaseRef};
use super::member::{Member, NodeId, Tags};
use super::request::{Failover, JoinToken, MemberAction, Switchover};
use super::restore::{Restore, RestoreOutcome};
use super::sync::SyncRule;

/// The newest command this binary's `apply` knows, by the level it came with. Members report
/// theirs (`PeerStatus::command_level`); a command of a level some member lacks is not
/// proposed (a binary that cannot decode an entry stops applying the log).
///
/// - 1: [`Command::PinKey`].
/// - 2: [`Command::RevokeToken`].
/// - 3: [`Command::SetConfig`] with `pg_hba` rules (older binaries refuse the field).
/// - 4: [`Command::BeginKeyRotation`] and [`Command::EndKeyRotation`].
/// - 5: [`Command::BeginCaRotation`], [`Command::CaMoved`], [`Command::FinishCaRotation`].
/// - 6: [`Command::SetConfig`] with `backup` (older binaries refuse the field),
///   [`Command::RequestBackup`], [`Command::FinishBackup`].
/// - 7: [`Command::RequestRestore`], [`Command::RestoreStopped`], [`Command::FinishRestore`];
///   [`Command::RequestBackup`] and [`Command::FinishBackup`] of a restore drill (older
///   binaries would take a backup instead).
pub const COMMAND_LEVEL: u32 = 7;

/// A decision proposed to Raft. Commands carry every value `apply` needs, including time
/// (`now_unix`), judged by the proposer; `apply` adds nothing from the node it runs on.
///
/// Every command except [`Command::Bootstrap`] is rejected with
/// [`Rejection::NotBootstrapped`] until the cluster is bootstrapped.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Creates the cluster with its first member and first join token. Only once.
    Bootstrap {
        cluster_id: String,
        member: Member,
        token: JoinToken,
        /// The first member's key pin (see `ClusterState::keys`).
        #[serde(default)]
        key_sha256: Option<String>,
    },
    /// Stores a join token, replacing one with the same id.
    CreateToken { token: JoinToken },
    /// Admits a new member on presentation of a join token; allocates its [`NodeId`].
    RegisterMember {
        token_id: String,
        /// Hex SHA-256 of the secret the joining node presented.
        secret_sha256: String,
        name: String,
        peer_addr: String,
        api_addr: String,
        pg_addr: String,
        #[serde(default)]
        tags: Tags,
        /// The proposer's wall clock, in seconds since the Unix epoch, to judge expiry.
        now_unix: u64,
        /// The pin of the key in the joiner's certificate request (see `ClusterState::keys`).
        #[serde(default)]
        key_sha256: Option<String>,
    },
    /// Records the key pin of a member that has none (one that joined before pins existed);
    /// a recorded pin is never replaced by this command.
    PinKey { id: NodeId, key_sha256: String },
    /// Starts rotating member `id`'s key: `key_sha256` is accepted beside its pin from now
    /// on (replacing the key of an earlier rotation that did not end).
    BeginKeyRotation { id: NodeId, key_sha256: String },
    /// Ends the rotation of member `id`'s key to `key_sha256`: with `adopt`, that key
    /// becomes the pin and the old one is refused from then on; without, it is dropped.
    EndKeyRotation {
        id: NodeId,
        key_sha256: String,
        adopt: bool,
    },
    /// Starts moving the cluster to the CA `next` (`pgquorum ca rotate`): every member
    /// trusts it beside the current one from now on. Joins and new join tokens are refused
    /// until the rotation finishes.
    BeginCaRotation { next: CaRecord },
    /// Member `id` presents a node certificate from the rotation's next CA `ca_sha256`.
    CaMoved { id: NodeId, ca_sha256: String },
    /// Ends the rotation to CA `ca_sha256` once every member has moved: it becomes the CA,
    /// the old one is trusted no more, and the join tokens (which pin the old one) are
    /// dropped.
    FinishCaRotation { ca_sha256: String },
    /// Deletes a join token before it is used up or expires.
    RevokeToken { id: String },
    /// Replaces the addresses and tags of the member with the same id and name.
    UpdateMember { member: Member },
    /// Removes a member; releases its lease and clears a switchover that names it.
    RemoveMember { id: NodeId },
    /// Compare-and-set on the lease. `expected` is `None` to take a free lease, or the exact
    /// lease the proposer watched go unrenewed for `ttl` on its own clock (DESIGN §3).
    AcquireLease {
        candidate: NodeId,
        expected: Option<LeaseRef>,
    },
    /// Records one renewal of the holder's current tenure.
    RenewLease { holder: NodeId, epoch: Epoch },
    /// Gives the lease up voluntarily (after the holder has stopped being writable).
    ReleaseLease { holder: NodeId, epoch: Epoch },
    /// Replaces the dynamic configuration after [`DynamicConfig::validate`].
    SetConfig { config: DynamicConfig },
    /// Asks the lease holder to hand over; at most one is pending at a time.
    RequestSwitchover { switchover: Switchover },
    /// Cancels a pending switchover; applied even if none is pending.
    ClearSwitchover,
    /// Records the PostgreSQL database of this cluster (its system identifier) after the
    /// bootstrap primary ran initdb. Once recorded it never changes: a member whose data
    /// directory has another identifier is never promoted and no second initdb happens.
    /// Only the lease holder may record it.
    RecordDatabase {
        holder: NodeId,
        epoch: Epoch,
        system_id: u64,
    },
    /// Maintenance mode on or off: while paused, supervisors take no automatic action
    /// (a primary keeps renewing its lease; fencing still applies).
    SetPaused { paused: bool },
    /// Asks `failover.to` to take the lease as soon as it is vacant, whatever the automatic
    /// rules say (operator's decision). Refused for a member tagged nofailover.
    RequestFailover { failover: Failover },
    /// Cancels a pending forced failover.
    ClearFailover,
    /// Asks `member` to carry out `action` on its PostgreSQL; replaces a pending one.
    RequestAction {
        member: NodeId,
        action: MemberAction,
    },
    /// `member` finished `action` (clears it if still pending).
    ActionDone {
        member: NodeId,
        action: MemberAction,
    },
    /// Records the synchronous rules of the holder's tenure (see `cluster::sync`); an empty
    /// list clears the record (asynchronous mode). Only the lease holder may record them.
    SetSynchronous {
        holder: NodeId,
        epoch: Epoch,
        rules: Vec<SyncRule>,
    },
    /// Reserves the timeline the holder's PostgreSQL is about to be promoted to: the larger
    /// of `at_least` (one above every timeline its data directory knows) and one above the
    /// highest timeline reserved before. Only the lease holder may reserve.
    ReserveTimeline {
        holder: NodeId,
        epoch: Epoch,
        at_least: u32,
    },
    /// Asks `job.runner` to take a backup (`job.id` is assigned by `apply`); with
    /// `replace`, in place of a pending one whose runner stopped answering.
    RequestBackup { job: BackupJob, replace: bool },
    /// The runner of backup `outcome.id` reports how it ended.
    FinishBackup { outcome: BackupOutcome },
    /// Takes the cluster back to `restore.target` (`restore.id` is assigned by `apply`):
    /// every member stops PostgreSQL, then `restore.runner` restores (see
    /// `cluster::restore`).
    RequestRestore { restore: Restore },
    /// `member` has stopped PostgreSQL and put its data directory away for restore `id`.
    RestoreStopped { id: u64, member: NodeId },
    /// The runner of restore `outcome.id` reports how it ended.
    FinishRestore { outcome: RestoreOutcome },
    /// Records a promotion in the timeline history (`GET /history`): only the lease holder,
    /// about its own promotion; a timeline already recorded is not recorded again.
    RecordTimelineSwitch {
        holder: NodeId,
        epoch: Epoch,
        switch: TimelineSwitch,
    },
}

/// What applying a command did. Identical on every node for the same log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CommandResult {
    /// The command changed the state as described on its variant.
    Applied,
    /// A member was registered under this new id.
    MemberRegistered { id: NodeId },
    /// The lease after a successful acquire or renew.
    Lease { lease: Lease },
    /// The timeline a `ReserveTimeline` reserved.
    Timeline { timeline: u32 },
    /// The id a `RequestBackup` gave the backup.
    BackupRequested { id: u64 },
    /// The id a `RequestRestore` gave the restore.
    RestoreRequested { id: u64 },
    /// The command was refused and the state is unchanged.
    Rejected { rejection: Rejection },
}

impl Command {
    /// The [`COMMAND_LEVEL`] this command came with: every member's binary must report at
    /// least this before it is proposed (0: understood by every version).
    pub fn level(&self) -> u32 {
        match self {
            Command::PinKey { .. } => 1,
            Command::RevokeToken { .. } => 2,
            Command::SetConfig { config } if config.backup.is_some() => 6,
            Command::RequestBackup { job, .. } if job.verify => 7,
            Command::FinishBackup { outcome } if outcome.verify => 7,
            Command::RequestBackup { .. } | Command::FinishBackup { .. } => 6,
            Command::RequestRestore { .. }
            | Command::RestoreStopped { .. }
            | Command::FinishRestore { .. } => 7,
            Command::SetConfig { config } if !config.pg_hba.is_empty() => 3,
            Command::BeginKeyRotation { .. } | Command::EndKeyRotation { .. } => 4,
            Command::BeginCaRotation { .. }
            | Command::CaMoved { .. }
            | Command::FinishCaRotation { .. } => 5,
            _ => 0,
        }
    }
}

impl CommandResult {
    /// True if and only if the command was refused (and so changed nothing).
    pub fn is_rejected(&self) -> bool {
        matches!(self, CommandResult::Rejected { .. })
    }
}

impl From<Rejection> for CommandResult {
    fn from(rejection: Rejection) -> Self {
        CommandResult::Rejected { rejection }
    }
}

/// Why a command was refused. These are normal outcomes of a replicated decision (two
/// candidates racing for the lease, an expired token), not failures of the node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    #[error("cluster is not bootstrapped yet; run `pgquorum init` on the first node")]
    NotBootstrapped,
    #[error(
        "cluster {cluster_id} is already bootstrapped; add nodes with `pgquorum node join` instead"
    )]
    AlreadyBootstrapped { cluster_id: String },
    #[error("invalid bootstrap: {0}")]
    InvalidBootstrap(String),
    /// An unknown token id and a wrong secret get the same answer, so that one cannot probe
    /// which ids exist.
    #[error(
        "join token refused: this cluster has no token with that id and secret; copy the whole \
         token again, or create one with `pgquorum token create`"
    )]
    TokenRefused { id: String },
    #[error(
        "node {id} already has a different key pinned; a member's key changes only by \
         certificate rotation"
    )]
    KeyAlreadyPinned { id: NodeId },
    #[error(
        "node {id} has no key rotation to that key in progress; start one with \
         `pgquorum cert rotate` on that member"
    )]
    NoKeyRotation { id: NodeId },
    #[error(
        "a CA rotation (to the CA with sha256 {next_sha256}) is under way: joins and new join \
         tokens wait until `pgquorum ca rotate --finish`"
    )]
    CaRotationInProgress { next_sha256: String },
    #[error("no CA rotation to that CA is under way; start one with `pgquorum ca rotate`")]
    NoCaRotation,
    #[error(
        "the CA rotation cannot finish yet: nodes {waiting:?} still present certificates from \
         the old CA; start them (each moves once it is up), or remove the ones that are gone \
         with `pgquorum node remove`"
    )]
    CaRotationUnfinished { waiting: Vec<NodeId> },
    #[error(
        "join token {id} expired at unix time {expires_at_unix}; create a new one with \
         `pgquorum token create`"
    )]
    TokenExpired { id: String, expires_at_unix: u64 },
    #[error("join token {id} has no uses left; create a new one with `pgquorum token create`")]
    TokenUsedUp { id: String },
    #[error("there is no join token {id}; `pgquorum token list` shows the ones there are")]
    UnknownToken { id: String },
    #[error(
        "member name {name} is already used by node {id}; remove it first with \
         `pgquorum node remove {name}` or choose another name"
    )]
    NameInUse { name: String, id: NodeId },
    #[error("node {id} is not a member with that id and name; see `pgquorum list` for members")]
    UnknownMember { id: NodeId },
    #[error("the cluster has no [backup] configured; set one with `pgquorum config set backup.repo_path=<directory every member mounts>`")]
    NoBackupConfigured,
    #[error("backup {id} is still being taken by {runner}; wait for it (`pgquorum backup list` shows it), or if {runner} is gone, ask again once it has been silent for a minute")]
    BackupInProgress { id: u64, runner: String },
    #[error("there is no pending backup {id} (it finished, or was replaced)")]
    NoSuchBackup { id: u64 },
    #[error("restore {id} by {runner} is under way; `pgquorum backup info` shows where it is")]
    RestoreInProgress { id: u64, runner: String },
    #[error("there is no restore {id} under way (it finished)")]
    NoSuchRestore { id: u64 },
    #[error("lease is held by {lease}")]
    LeaseHeld { lease: Lease },
    #[error(
        "lease is not held by that node in that epoch (it is {}); see `pgquorum list` for the \
         current primary",
        describe(.current)
    )]
    LeaseNotHeld { current: Option<Lease> },
    #[error("invalid dynamic configuration: {0}")]
    InvalidConfig(String),
    #[error("invalid switchover: {0}")]
    InvalidSwitchover(String),
    #[error("refused: {0}")]
    InvalidAction(String),
    #[error(
        "the cluster's database is already recorded with system identifier {recorded}; \
         a data directory with identifier {offered} belongs to another database"
    )]
    DatabaseMismatch { recorded: u64, offered: u64 },
    #[error(
        "a switchover from node {} is already pending; wait for it to finish or clear it first",
        .switchover.from
    )]
    SwitchoverPending { switchover: Switchover },
}

fn describe(lease: &Option<Lease>) -> String {
    match lease {
        Some(lease) => format!("held by {lease}"),
        None => "free".to_string(),
    }
}
