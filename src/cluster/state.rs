//! The replicated state: what every node holds after applying the same log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::backup_job::{BackupJob, BackupOutcome};
use super::ca::{CaRecord, CaRotation};
use super::config::{DynamicConfig, SynchronousMode};
use super::history::TimelineSwitch;
use super::lease::{Epoch, Lease};
use super::member::{Member, NodeId};
use super::request::{Failover, JoinToken, MemberAction, Switchover};
use super::restore::{Restore, RestoreOutcome};
use super::sync::SyncState;

/// Everything Raft replicates (DESIGN §2). Changed only by `apply`; every node that has
/// applied the same log prefix holds an identical value, and its JSON is the snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default)]
pub struct ClusterState {
    /// Empty until the cluster is bootstrapped.
    pub cluster_id: String,
    /// The id the next registered member gets. Only grows, so ids are never reused.
    pub next_node_id: u64,
    pub members: BTreeMap<NodeId, Member>,
    /// The current lease, `None` when free.
    pub lease: Option<Lease>,
    /// The epoch of the latest grant, kept when the lease is released so the next grant's
    /// epoch is still larger than every epoch before it.
    pub last_epoch: Epoch,
    /// The holder of `last_epoch`, kept when the lease is released or expires: the one member
    /// known to hold every commit acknowledged so far (it took the lease holding every
    /// earlier one, then acknowledged the rest itself). `None` before the first grant and in
    /// states written before this field existed.
    pub last_holder: Option<NodeId>,
    pub config: DynamicConfig,
    pub switchover: Option<Switchover>,
    /// Join tokens by id.
    pub tokens: BTreeMap<String, JoinToken>,
    /// The system identifier of the cluster's PostgreSQL database, once initdb has run.
    pub database: Option<u64>,
    /// Maintenance mode (`pgquorum pause`): no automatic failover or other action.
    pub paused: bool,
    /// The synchronous set as the primary recorded it; `None` in asynchronous mode.
    pub sync: Option<SyncState>,
    /// A pending forced failover.
    pub failover: Option<Failover>,
    /// Operations requested of members, until each reports it done.
    pub actions: BTreeMap<NodeId, MemberAction>,
    /// The highest PostgreSQL timeline reserved for a promotion (0 before the first). Every
    /// promotion reserves a larger one first (the `ReserveTimeline` command), so no two
    /// primaries ever create the same timeline ID, even when one was cut off before anyone
    /// saw its history file: pg_rewind tells diverged histories apart only by timeline ID.
    pub timeline: u32,
    /// Every promotion, oldest first (see [`super::history`]).
    pub history: Vec<TimelineSwitch>,
    /// Each member's key pin: hex SHA-256 of the SubjectPublicKeyInfo its certificate
    /// certifies. A peer is accepted only with a certificate for its member's pinned key, so
    /// a removed member (no pin left) and a certificate minted with the CA for a member's id
    /// (another key) are refused. Recorded at join and bootstrap; a member from before pins
    /// existed records its own at its next start (trust on first use), once.
    pub keys: BTreeMap<NodeId, String>,
    /// A member's key in rotation (`pgquorum cert rotate`): accepted beside its pin until
    /// the rotation ends, when it replaces the pin or is dropped. Absent from the JSON when
    /// empty, so a snapshot without rotations reads the same in every version.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub next_keys: BTreeMap<NodeId, String>,
    /// The cluster CA once a rotation replaced the one `init` created (which lives only in
    /// each member's `ca.pem` and `ca.key`): from then on this, not the files, says which CA
    /// a member uses, and a member that missed the end of the rotation rewrites its files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaRecord>,
    /// A CA rotation under way (`pgquorum ca rotate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_rotation: Option<CaRotation>,
    /// The backup requested and not yet finished (`pgquorum backup`, or the schedule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_job: Option<BackupJob>,
    /// How the last backup ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupOutcome>,
    /// The last backup that succeeded (the same as `last_backup` unless that one failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_good_backup: Option<BackupOutcome>,
    /// How the last restore drill (`pgquorum backup verify`) ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_verify: Option<BackupOutcome>,
    /// The id of the last backup requested (0: none yet).
    #[serde(skip_serializing_if = "is_zero")]
    pub next_backup_id: u64,
    /// The restore under way (`pgquorum restore --to`): while it lasts no member runs
    /// PostgreSQL but its runner, restoring.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<Restore>,
    /// How the last restore ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_restore: Option<RestoreOutcome>,
    /// The id of the last restore requested (0: none yet).
    #[serde(skip_serializing_if = "is_zero")]
    pub next_restore_id: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState {
            cluster_id: String::new(),
            next_node_id: 1,
            members: BTreeMap::new(),
            lease: None,
            last_epoch: Epoch(0),
            last_holder: None,
            config: DynamicConfig::default(),
            switchover: None,
            tokens: BTreeMap::new(),
            database: None,
            paused: false,
            sync: None,
            failover: None,
            actions: BTreeMap::new(),
            timeline: 0,
            history: Vec::new(),
            keys: BTreeMap::new(),
            next_keys: BTreeMap::new(),
            ca: None,
            ca_rotation: None,
            backup_job: None,
            last_backup: None,
            last_good_backup: None,
            last_verify: None,
            next_backup_id: 0,
            restore: None,
            last_restore: None,
            next_restore_id: 0,
        }
    }
}

impl ClusterState {
    /// The keys member `id` may present: its pin and, while a rotation lasts, its next key.
    /// `None` when it has no pin (it joined before pins existed and has not recorded one):
    /// then any certificate of the cluster CA for its id is accepted.
    pub fn accepted_keys(&self, id: NodeId) -> Option<Vec<String>> {
        let pin = self.keys.get(&id)?;
        Some(
            std::iter::once(pin)
                .chain(self.next_keys.get(&id))
                .cloned()
                .collect(),
        )
    }

    /// True once a `Bootstrap` command has been applied.
    pub fn is_bootstrapped(&self) -> bool {
        !self.cluster_id.is_empty()
    }

    /// The current member with this id; `None` once it has been removed.
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// The name of member `id`, or its id for one that has been removed, for messages.
    pub fn name_of(&self, id: NodeId) -> String {
        self.member(id)
            .map_or_else(|| id.to_string(), |m| m.name.clone())
    }

    /// The current member with this name (names are unique among current members).
    pub fn member_by_name(&self, name: &str) -> Option<&Member> {
        self.members.values().find(|m| m.name == name)
    }

    /// The member allowed to be the writable primary, if any.
    pub fn lease_holder(&self) -> Option<NodeId> {
        self.lease.map(|lease| lease.holder)
    }

    /// The members recorded as synchronous standbys of the current tenure: those in every
    /// recorded rule (so none while a rule without standby is recorded, and during a change
    /// only those synchronous before and after it); empty in asynchronous mode.
    pub fn synchronous_members(&self) -> std::collections::BTreeSet<NodeId> {
        let current = self.lease.map_or(self.last_epoch, |l| l.epoch);
        let Some(sync) = self
            .sync
            .as_ref()
            .filter(|s| self.config.synchronous_mode != SynchronousMode::Off && s.epoch == current)
        else {
            return Default::default();
        };
        let mut rules = sync.rules.iter();
        let Some(first) = rules.next().filter(|r| r.quorum > 0) else {
            return Default::default();
        };
        rules.fold(first.members.clone(), |acc, rule| {
            if rule.quorum == 0 {
                Default::default()
            } else {
                acc.intersection(&rule.members).copied().collect()
            }
        })
    }
}
