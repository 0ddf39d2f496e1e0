//! The replicated state and `apply`, the only function that changes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::{Command, CommandResult, Rejection};
use super::config::DynamicConfig;
use super::history::TimelineSwitch;
use super::lease::{Epoch, Lease, LeaseRef};
use super::member::{Member, NodeId, Tags};
use super::sync::SyncState;

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

/// Everything Raft replicates (DESIGN §2). Changed only by [`apply`]; every node that has
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
    /// promotion reserves a larger one first ([`Command::ReserveTimeline`]), so no two
    /// primaries ever create the same timeline ID, even when one was cut off before anyone
    /// saw its history file: pg_rewind tells diverged histories apart only by timeline ID.
    pub timeline: u32,
    /// Every promotion, oldest first (see [`super::history`]).
    pub history: Vec<TimelineSwitch>,
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
        }
    }
}

impl ClusterState {
    /// True once a `Bootstrap` command has been applied.
    pub fn is_bootstrapped(&self) -> bool {
        !self.cluster_id.is_empty()
    }

    /// The current member with this id; `None` once it has been removed.
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
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
        let Some(sync) = self.sync.as_ref().filter(|s| {
            self.config.synchronous_mode != super::SynchronousMode::Off && s.epoch == current
        }) else {
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

    /// See [`apply`].
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        apply(self, command)
    }
}

/// Applies one committed command. Pure and total: reads no clock, file or network, never
/// panics, and returns the same result and leaves the same state on every node. A rejected
/// command leaves `state` unchanged (every check runs before the first write).
pub fn apply(state: &mut ClusterState, command: &Command) -> CommandResult {
    apply_checked(state, command).unwrap_or_else(CommandResult::from)
}

/// `apply` with rejections as `Err`, so the checks can use `?`.
fn apply_checked(state: &mut ClusterState, command: &Command) -> Result<CommandResult, Rejection> {
    if !state.is_bootstrapped() && !matches!(command, Command::Bootstrap { .. }) {
        return Err(Rejection::NotBootstrapped);
    }
    match command {
        Command::Bootstrap {
            cluster_id,
            member,
            token,
        } => bootstrap(state, cluster_id, member, token),
        Command::CreateToken { token } => {
            state.tokens.insert(token.id.clone(), token.clone());
            Ok(CommandResult::Applied)
        }
        Command::RegisterMember {
            token_id,
            secret_sha256,
            name,
            peer_addr,
            api_addr,
            pg_addr,
            tags,
            now_unix,
        } => register_member(
            state,
            Registration {
                token_id,
                secret_sha256,
                now_unix: *now_unix,
            },
            |id| Member {
                id,
                name: name.clone(),
                peer_addr: peer_addr.clone(),
                api_addr: api_addr.clone(),
                pg_addr: pg_addr.clone(),
                tags: tags.clone(),
            },
        ),
        Command::UpdateMember { member } => update_member(state, member),
        Command::RemoveMember { id } => remove_member(state, *id),
        Command::AcquireLease {
            candidate,
            expected,
        } => acquire_lease(state, *candidate, *expected),
        Command::RenewLease { holder, epoch } => {
            current_lease(state, *holder, *epoch).map(|lease| {
                lease.seq = lease.seq.saturating_add(1);
                CommandResult::Lease { lease: *lease }
            })
        }
        Command::ReleaseLease { holder, epoch } => {
            current_lease(state, *holder, *epoch)?;
            state.lease = None;
            Ok(CommandResult::Applied)
        }
        Command::SetConfig { config } => match config.validate() {
            Ok(()) => {
                state.config = config.clone();
                Ok(CommandResult::Applied)
            }
            Err(message) => Err(Rejection::InvalidConfig(message)),
        },
        Command::RequestSwitchover { switchover } => request_switchover(state, switchover),
        Command::RecordDatabase {
            holder,
            epoch,
            system_id,
        } => {
            current_lease(state, *holder, *epoch)?;
            match state.database {
                None => {
                    state.database = Some(*system_id);
                    Ok(CommandResult::Applied)
                }
                Some(recorded) if recorded == *system_id => Ok(CommandResult::Applied),
                Some(recorded) => Err(Rejection::DatabaseMismatch {
                    recorded,
                    offered: *system_id,
                }),
            }
        }
        Command::SetPaused { paused } => {
            state.paused = *paused;
            Ok(CommandResult::Applied)
        }
        Command::SetSynchronous {
            holder,
            epoch,
            rules,
        } => {
            current_lease(state, *holder, *epoch)?;
            state.sync = (!rules.is_empty()).then(|| SyncState {
                epoch: *epoch,
                rules: rules.clone(),
            });
            Ok(CommandResult::Applied)
        }
        Command::RequestFailover { failover } => {
            match state.member(failover.to) {
                None => return Err(Rejection::UnknownMember { id: failover.to }),
                Some(m) if m.tags.nofailover => {
                    return Err(Rejection::InvalidSwitchover(format!(
                        "{} (node {}) is tagged nofailover; choose another candidate or clear \
                         the tag",
                        m.name, m.id
                    )))
                }
                Some(_) => {}
            }
            state.failover = Some(failover.clone());
            Ok(CommandResult::Applied)
        }
        Command::ClearFailover => {
            state.failover = None;
            Ok(CommandResult::Applied)
        }
        Command::RequestAction { member, action } => {
            if state.member(*member).is_none() {
                return Err(Rejection::UnknownMember { id: *member });
            }
            state.actions.insert(*member, *action);
            Ok(CommandResult::Applied)
        }
        Command::ActionDone { member, action } => {
            if state.actions.get(member) == Some(action) {
                state.actions.remove(member);
            }
            Ok(CommandResult::Applied)
        }
        Command::ClearSwitchover => {
            state.switchover = None;
            Ok(CommandResult::Applied)
        }
        Command::ReserveTimeline {
            holder,
            epoch,
            at_least,
        } => {
            current_lease(state, *holder, *epoch)?;
            let timeline = (*at_least).max(state.timeline.saturating_add(1));
            state.timeline = timeline;
            Ok(CommandResult::Timeline { timeline })
        }
        Command::RecordTimelineSwitch {
            holder,
            epoch,
            switch,
        } => {
            current_lease(state, *holder, *epoch)?;
            if switch.new_primary != *holder {
                return Err(Rejection::LeaseNotHeld {
                    current: state.lease,
                });
            }
            super::history::record(&mut state.history, switch);
            Ok(CommandResult::Applied)
        }
    }
}

// Each helper below checks everything first and writes only after the last check, which is
// what makes "a rejected command changes nothing" hold.

fn bootstrap(
    state: &mut ClusterState,
    cluster_id: &str,
    member: &Member,
    token: &JoinToken,
) -> Result<CommandResult, Rejection> {
    if state.is_bootstrapped() {
        return Err(Rejection::AlreadyBootstrapped {
            cluster_id: state.cluster_id.clone(),
        });
    }
    if cluster_id.is_empty() {
        return Err(Rejection::InvalidBootstrap(
            "cluster id is empty; give the cluster a non-empty id".to_string(),
        ));
    }
    if member.id.0 == 0 {
        return Err(Rejection::InvalidBootstrap(
            "the first member has node id 0; node ids start at 1".to_string(),
        ));
    }
    state.cluster_id = cluster_id.to_string();
    state.next_node_id = member.id.0.saturating_add(1);
    state.members.insert(member.id, member.clone());
    state.tokens.insert(token.id.clone(), token.clone());
    Ok(CommandResult::Applied)
}

/// The credentials part of a `RegisterMember` command.
struct Registration<'a> {
    token_id: &'a str,
    secret_sha256: &'a str,
    now_unix: u64,
}

fn register_member(
    state: &mut ClusterState,
    registration: Registration<'_>,
    member: impl FnOnce(NodeId) -> Member,
) -> Result<CommandResult, Rejection> {
    let Registration {
        token_id,
        secret_sha256,
        now_unix,
    } = registration;
    let id = token_id.to_string();
    let token = state
        .tokens
        .get(token_id)
        .ok_or_else(|| Rejection::TokenUnknown { id: id.clone() })?;
    if token.secret_sha256 != secret_sha256 {
        return Err(Rejection::TokenSecretMismatch { id });
    }
    if now_unix >= token.expires_at_unix {
        return Err(Rejection::TokenExpired {
            id,
            expires_at_unix: token.expires_at_unix,
        });
    }
    if token.uses_left == 0 {
        return Err(Rejection::TokenUsedUp { id });
    }
    let member = member(NodeId(state.next_node_id));
    if let Some(existing) = state.member_by_name(&member.name) {
        return Err(Rejection::NameInUse {
            name: member.name,
            id: existing.id,
        });
    }
    let new_id = member.id;
    state.next_node_id = state.next_node_id.saturating_add(1);
    if let Some(token) = state.tokens.get_mut(token_id) {
        token.uses_left -= 1;
    }
    state.members.insert(new_id, member);
    Ok(CommandResult::MemberRegistered { id: new_id })
}

fn update_member(state: &mut ClusterState, member: &Member) -> Result<CommandResult, Rejection> {
    match state.members.get_mut(&member.id) {
        Some(existing) if existing.name == member.name => {
            *existing = member.clone();
            Ok(CommandResult::Applied)
        }
        _ => Err(Rejection::UnknownMember { id: member.id }),
    }
}

fn remove_member(state: &mut ClusterState, id: NodeId) -> Result<CommandResult, Rejection> {
    if state.members.remove(&id).is_none() {
        return Err(Rejection::UnknownMember { id });
    }
    if state.lease_holder() == Some(id) {
        // last_epoch is kept, so the next tenure still gets a larger epoch.
        state.lease = None;
    }
    if state
        .switchover
        .as_ref()
        .is_some_and(|s| s.from == id || s.to == Some(id))
    {
        state.switchover = None;
    }
    if state.failover.as_ref().is_some_and(|f| f.to == id) {
        state.failover = None;
    }
    state.actions.remove(&id);
    Ok(CommandResult::Applied)
}

fn acquire_lease(
    state: &mut ClusterState,
    candidate: NodeId,
    expected: Option<LeaseRef>,
) -> Result<CommandResult, Rejection> {
    if state.member(candidate).is_none() {
        return Err(Rejection::UnknownMember { id: candidate });
    }
    if let Some(current) = state.lease {
        // Compare-and-set: a renewal committed after the candidate's observation bumps seq
        // and makes this fail, so a live holder can never be taken over (DESIGN §3).
        if expected != Some(current.as_ref_point()) {
            return Err(Rejection::LeaseHeld { lease: current });
        }
    }
    let lease = Lease {
        holder: candidate,
        epoch: state.last_epoch.next(),
        seq: 0,
    };
    state.last_epoch = lease.epoch;
    state.last_holder = Some(candidate);
    state.lease = Some(lease);
    let fulfils_switchover = state.switchover.as_ref().is_some_and(|s| match s.to {
        Some(to) => to == candidate,
        None => s.from != candidate,
    });
    if fulfils_switchover {
        state.switchover = None;
    }
    if state.failover.as_ref().is_some_and(|f| f.to == candidate) {
        state.failover = None;
    }
    Ok(CommandResult::Lease { lease })
}

/// The current lease if `holder` holds it in `epoch`, else `LeaseNotHeld`.
fn current_lease(
    state: &mut ClusterState,
    holder: NodeId,
    epoch: Epoch,
) -> Result<&mut Lease, Rejection> {
    let current = state.lease;
    match state.lease.as_mut() {
        Some(lease) if lease.holder == holder && lease.epoch == epoch => Ok(lease),
        _ => Err(Rejection::LeaseNotHeld { current }),
    }
}

fn request_switchover(
    state: &mut ClusterState,
    switchover: &Switchover,
) -> Result<CommandResult, Rejection> {
    if state.lease_holder() != Some(switchover.from) {
        return Err(Rejection::LeaseNotHeld {
            current: state.lease,
        });
    }
    if let Some(to) = switchover.to {
        if to == switchover.from {
            return Err(Rejection::InvalidSwitchover(format!(
                "node {to} already holds the lease; choose another target or none"
            )));
        }
        match state.member(to) {
            None => {
                return Err(Rejection::InvalidSwitchover(format!(
                    "target node {to} is not a member; see `pgquorum list` for members"
                )))
            }
            Some(Member {
                tags: Tags {
                    nofailover: true, ..
                },
                name,
                ..
            }) => {
                return Err(Rejection::InvalidSwitchover(format!(
                    "target {name} (node {to}) is tagged nofailover; choose another target or \
                     clear the tag"
                )))
            }
            Some(_) => {}
        }
    }
    if let Some(pending) = &state.switchover {
        return Err(Rejection::SwitchoverPending {
            switchover: pending.clone(),
        });
    }
    state.switchover = Some(switchover.clone());
    Ok(CommandResult::Applied)
}
