//! `apply`, the only function that changes the replicated state.

use super::command::{Command, CommandResult, Rejection};
use super::lease::{Epoch, Lease, LeaseRef};
use super::member::{Member, NodeId, Tags};
use super::request::{JoinToken, MemberAction, Switchover};
use super::state::ClusterState;
use super::sync::SyncState;

impl ClusterState {
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
            key_sha256,
        } => bootstrap(state, cluster_id, member, token).inspect(|_| {
            if let Some(pin) = key_sha256 {
                state.keys.insert(member.id, pin.clone());
            }
        }),
        Command::CreateToken { token } => {
            super::ca::refuse_during_rotation(state)?;
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
            key_sha256,
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
        )
        .inspect(|result| {
            if let (CommandResult::MemberRegistered { id }, Some(pin)) = (result, key_sha256) {
                state.keys.insert(*id, pin.clone());
            }
        }),
        Command::PinKey { id, key_sha256 } => pin_key(state, *id, key_sha256),
        Command::BeginKeyRotation { id, key_sha256 } => {
            if state.member(*id).is_none() {
                return Err(Rejection::UnknownMember { id: *id });
            }
            state.next_keys.insert(*id, key_sha256.clone());
            Ok(CommandResult::Applied)
        }
        Command::EndKeyRotation {
            id,
            key_sha256,
            adopt,
        } => {
            if state.next_keys.get(id) != Some(key_sha256) {
                return Err(Rejection::NoKeyRotation { id: *id });
            }
            state.next_keys.remove(id);
            if *adopt {
                state.keys.insert(*id, key_sha256.clone());
            }
            Ok(CommandResult::Applied)
        }
        Command::BeginCaRotation { next } => super::ca::begin(state, next),
        Command::CaMoved { id, ca_sha256 } => super::ca::moved(state, *id, ca_sha256),
        Command::FinishCaRotation { ca_sha256 } => super::ca::finish(state, ca_sha256),
        Command::RevokeToken { id } => match state.tokens.remove(id) {
            Some(_) => Ok(CommandResult::Applied),
            None => Err(Rejection::UnknownToken { id: id.clone() }),
        },
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
        Command::RequestBackup { job, replace } => {
            super::backup_job::request(state, job.clone(), *replace)
        }
        Command::FinishBackup { outcome } => super::backup_job::finish(state, outcome),
        Command::RequestRestore { restore } => super::restore::request(state, restore.clone()),
        Command::RestoreStopped { id, member } => super::restore::stopped(state, *id, *member),
        Command::FinishRestore { outcome } => super::restore::finish(state, outcome),
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
                Some(m) if m.is_witness() => {
                    return Err(Rejection::InvalidSwitchover(format!(
                        "{} (node {}) is a witness: it has no PostgreSQL to promote; choose a \
                         member with PostgreSQL",
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
        Command::RequestAction { member, action } => request_action(state, *member, *action),
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
        .ok_or_else(|| Rejection::TokenRefused { id: id.clone() })?;
    if token.secret_sha256 != secret_sha256 {
        return Err(Rejection::TokenRefused { id });
    }
    // After the token check: who has no token learns nothing of a rotation.
    super::ca::refuse_during_rotation(state)?;
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

fn pin_key(state: &mut ClusterState, id: NodeId, pin: &str) -> Result<CommandResult, Rejection> {
    if state.member(id).is_none() {
        return Err(Rejection::UnknownMember { id });
    }
    match state.keys.get(&id) {
        Some(recorded) if recorded == pin => Ok(CommandResult::Applied),
        Some(_) => Err(Rejection::KeyAlreadyPinned { id }),
        None => {
            state.keys.insert(id, pin.to_string());
            Ok(CommandResult::Applied)
        }
    }
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
    // Its certificate is refused from now on (see `ClusterState::keys`).
    state.keys.remove(&id);
    state.next_keys.remove(&id);
    if let Some(rotation) = &mut state.ca_rotation {
        rotation.moved.remove(&id);
    }
    if state
        .backup_job
        .as_ref()
        .is_some_and(|job| job.runner == id)
    {
        state.backup_job = None;
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

/// An operation on one member's PostgreSQL, judged here rather than by the proposer so that
/// the judgement and the request are one atomic step: a replica that takes the lease between
/// an operator's `reinit` and its commit is not re-initialised.
fn request_action(
    state: &mut ClusterState,
    id: NodeId,
    action: MemberAction,
) -> Result<CommandResult, Rejection> {
    let member = state.member(id).ok_or(Rejection::UnknownMember { id })?;
    if member.is_witness() {
        return Err(Rejection::InvalidAction(format!(
            "{} (node {id}) is a witness: it has no PostgreSQL to {}",
            member.name,
            action.verb()
        )));
    }
    if action == MemberAction::Reinit && state.lease_holder() == Some(id) {
        return Err(Rejection::InvalidAction(format!(
            "{} (node {id}) is the primary; it is never re-initialised (switch over first with \
             `pgquorum switchover`)",
            member.name
        )));
    }
    state.actions.insert(id, action);
    Ok(CommandResult::Applied)
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
        if state.member(to).is_some_and(Member::is_witness) {
            return Err(Rejection::InvalidSwitchover(format!(
                "target node {to} is a witness: it has no PostgreSQL to promote; choose a member \
                 with PostgreSQL"
            )));
        }
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
