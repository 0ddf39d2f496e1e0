//! Rule 3: the lease holder, and its side of a planned switchover.

use super::takeover::candidate;
use super::*;

/// Rule 3: this member holds the lease and PostgreSQL is not writable, or holds it with a
/// fresh clock and PostgreSQL is writable.
pub(super) fn as_holder(obs: &Observation) -> Outcome {
    let epoch = epoch(obs);
    let release = |reason: String| {
        // Safety: never release while writable, or a successor could overlap us. Demote
        // first; the next cycle, no longer writable, releases.
        if obs.pg.is_writable() {
            let text = format!(
                "holding lease epoch {epoch} but {reason}; fencing (demoting) before releasing it"
            );
            return say(obs, Decision::Fence { follow: None }, text);
        }
        let text = format!(
            "holding lease epoch {epoch} but {reason}; releasing it so another member takes over"
        );
        say(obs, Decision::ReleaseLease { reason }, text)
    };
    // Becoming writable needs a fresh lease: with an expiring one, renew it and nothing
    // else this cycle; the cycle after a committed renewal becomes writable.
    let expiring = obs.lease_clock == LeaseClockView::HeldByMeExpiring;
    let reclaim = |before: &str| {
        let text = format!(
            "holding lease epoch {epoch}, but no renewal of mine has committed within its \
             deadline; renewing it before {before}"
        );
        say(obs, Decision::ReclaimLease, text)
    };
    match (obs.data_dir, obs.database) {
        (DataDir::Missing, None) => {
            if expiring {
                return reclaim("bootstrapping");
            }
            let text =
                format!("holding lease epoch {epoch}, no database exists; bootstrapping (initdb)");
            return say(obs, Decision::Bootstrap, text);
        }
        (DataDir::Missing, Some(db)) => {
            return release(format!(
                "my data directory is empty while database {db} exists"
            ));
        }
        (DataDir::Foreign, _) => {
            return release("my data directory is not a PostgreSQL data directory".to_string());
        }
        (DataDir::Initialised { system_id }, Some(db)) if system_id != db => {
            return release(format!(
                "my data directory belongs to another database (system id {system_id}, the \
                 cluster's is {db})"
            ));
        }
        // Initialised with no database recorded: a crash between initdb and recording it.
        // The data is ours; the executor records it once the primary runs.
        (DataDir::Initialised { .. }, _) => {}
    }
    if obs.pg.is_writable() && obs.lease_clock == LeaseClockView::HeldByMe {
        if let Some(outcome) = switchover(obs) {
            return outcome;
        }
    }
    if obs.pg.is_writable() {
        let record = if obs.database.is_none() {
            ", recording the database"
        } else {
            ""
        };
        say(
            obs,
            Decision::RenewLease,
            format!("primary, renewing lease epoch {epoch}{record}"),
        )
    } else if let (true, Some(why)) = (obs.pg.running, &obs.pre_promote_refused) {
        release(format!("the pre_promote hook refused promotion: {why}"))
    } else if obs.pg.running && expiring {
        reclaim("promoting")
    } else if obs.pg.running {
        let text = format!("holding lease epoch {epoch} as a replica; promoting");
        say(obs, Decision::Promote, text)
    } else if let Some(failure) = obs
        .start_failure
        .as_ref()
        .filter(|f| f.attempts >= START_ATTEMPTS)
    {
        release(format!(
            "PostgreSQL failed to start {} times in a row (last: {})",
            failure.attempts, failure.error
        ))
    } else if obs.down_for < obs.config.primary_start_timeout && expiring {
        reclaim(&format!(
            "starting PostgreSQL as primary (down for {})",
            human(obs.down_for)
        ))
    } else if obs.down_for < obs.config.primary_start_timeout {
        let text = format!(
            "holding lease epoch {epoch}, PostgreSQL down for {}; starting it as primary \
             (primary_start_timeout {})",
            human(obs.down_for),
            human(obs.config.primary_start_timeout)
        );
        say(obs, Decision::StartPrimary, text)
    } else {
        release(format!(
            "PostgreSQL has been down for {} (primary_start_timeout {})",
            human(obs.down_for),
            human(obs.config.primary_start_timeout)
        ))
    }
}

/// The holder's side of a planned switchover requested from it: hand over once the
/// candidate (named, or the best eligible replica) streams and has caught up; until then
/// keep renewing. `None` when no switchover concerns me.
fn switchover(obs: &Observation) -> Option<Outcome> {
    let switchover = obs.switchover.as_ref().filter(|s| s.from == obs.me)?;
    let epoch = epoch(obs);
    if let Some(at) = switchover.at_unix_ms.filter(|at| *at > obs.now_unix_ms) {
        let when = std::time::UNIX_EPOCH + Duration::from_millis(at);
        let text = format!(
            "primary, renewing lease epoch {epoch}; switchover scheduled at {}",
            humantime_serde::re::humantime::format_rfc3339_seconds(when)
        );
        return Some(say(obs, Decision::RenewLease, text));
    }
    let mine = obs.pg.wal_position;
    let target = match switchover.to {
        Some(to) => Some(to),
        None => obs
            .peers
            .values()
            .filter(|p| covered_by_sync(obs, p.node_id).is_ok())
            .filter_map(|p| candidate(obs, p))
            .max_by_key(|(_, rank)| *rank)
            .map(|(node, _)| node),
    };
    let Some(target) = target else {
        let text = format!(
            "primary, renewing lease epoch {epoch}; switchover requested but no eligible \
             replica answers"
        );
        return Some(say(obs, Decision::RenewLease, text));
    };
    if let Err(why) = covered_by_sync(obs, target) {
        let text = format!(
            "primary, renewing lease epoch {epoch}; switchover to {} waits: {why}",
            name(obs, target)
        );
        return Some(say(obs, Decision::RenewLease, text));
    }
    let peer = obs.peers.get(&target);
    let caught_up = match (peer, mine) {
        (Some(p), Some(mine)) => {
            p.pg.running
                && p.pg.in_recovery
                && p.pg.streaming
                && p.following == Some(obs.me)
                && p.pg
                    .wal_position
                    .is_some_and(|theirs| mine.bytes_after(theirs) <= SWITCHOVER_SLACK)
        }
        _ => false,
    };
    if caught_up {
        let text = format!(
            "primary, handing lease epoch {epoch} over to {} (switchover): stopping PostgreSQL, \
             then releasing the lease",
            name(obs, target)
        );
        return Some(say(obs, Decision::HandOver { to: target }, text));
    }
    let behind = match (peer.and_then(|p| p.pg.wal_position), mine) {
        (Some(theirs), Some(mine)) => format!("{} B behind", mine.bytes_after(theirs)),
        _ => "position unknown".to_string(),
    };
    let text = format!(
        "primary, renewing lease epoch {epoch}; switchover to {} waits for it to catch up \
         ({behind})",
        name(obs, target)
    );
    Some(say(obs, Decision::RenewLease, text))
}

/// In synchronous or quorum mode, whether this tenure's recorded synchronous set includes
/// `target` in every rule, so that once it has caught up it can pass the synchronous guard
/// and take the lease; handing over before that leaves the lease to nobody but me.
fn covered_by_sync(obs: &Observation, target: NodeId) -> Result<(), String> {
    if obs.config.synchronous_mode == SynchronousMode::Off {
        return Ok(());
    }
    let rules = obs.sync_rules();
    if rules.is_empty() {
        return Err("no synchronous set is recorded yet".to_string());
    }
    match rules
        .iter()
        .find(|r| r.needed_answers().is_none() || !r.members.contains(&target))
    {
        Some(rule) => Err(format!(
            "it is not in the recorded synchronous set ({rule}) yet"
        )),
        None => Ok(()),
    }
}

/// How many failed attempts to start PostgreSQL as primary make the holder release the lease
/// at once (a start that fails, rather than one that hangs, is not going to get better; two
/// tolerate a transient failure such as the old postmaster's children still exiting).
const START_ATTEMPTS: u32 = 2;

/// How far behind (bytes) a switchover candidate may be when the primary stops: the fast
/// shutdown sends it the rest, so this only bounds how long that takes.
const SWITCHOVER_SLACK: u64 = 16 * 1024 * 1024;
