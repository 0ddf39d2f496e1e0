//! Rule 4: a member that does not hold the lease: clone, start, follow, rewind, or
//! (see `takeover.rs`) take a vacant lease.

use super::*;

/// Rule 4: another member holds the lease, or it is free or expired.
pub(super) fn as_other(obs: &Observation, lease: NotMine) -> Outcome {
    // The holder, if its own status says it runs a writable primary: the only source to
    // clone from or stream from.
    let primary = match &lease {
        NotMine::Held(holder) if runs_primary(obs, *holder) => Some(*holder),
        _ => None,
    };
    let wait = |text: String| say(obs, Decision::Wait, text);
    let system_id = match (obs.data_dir, obs.database, &lease) {
        (DataDir::Missing, None, NotMine::Vacant(v)) => {
            // Who bootstraps: an eligible member (a nofailover member never becomes primary,
            // not even the first time), and among those that answer, the lowest id — the
            // host that ran `init` while it is up — so members do not race for it.
            if !obs.members.contains_key(&obs.me) {
                return wait(format!(
                    "no database exists and {}; not bootstrapping: this member is not \
                     registered yet",
                    v.what
                ));
            }
            if !may_be_primary(obs, obs.me) {
                return wait(format!(
                    "no database exists and {}; not bootstrapping: this member may never be \
                     primary (nofailover or failover_priority 0)",
                    v.what
                ));
            }
            if let Some(first) = first_eligible_below_me(obs) {
                return wait(format!(
                    "no database exists and {}; leaving the bootstrap to {}",
                    v.what,
                    name(obs, first)
                ));
            }
            let text = format!(
                "no database exists and {}; taking the lease to bootstrap",
                v.what
            );
            return say(
                obs,
                Decision::AcquireLease {
                    expected: v.expected,
                },
                text,
            );
        }
        (DataDir::Missing, None, NotMine::Held(holder)) => {
            return wait(format!(
                "waiting for {} to initialise the database",
                name(obs, *holder)
            ));
        }
        (DataDir::Missing, Some(_), _) => {
            return match primary {
                Some(source) => {
                    let text = format!(
                        "no data directory; cloning from {}, primary with lease epoch {}",
                        name(obs, source),
                        epoch(obs)
                    );
                    say(obs, Decision::Clone { source }, text)
                }
                None => wait(format!(
                    "no data directory; waiting for a primary to clone from: {}",
                    no_primary(obs, &lease)
                )),
            };
        }
        (DataDir::Foreign, _, _) => {
            return wait(
                "data directory is not a PostgreSQL data directory; left untouched".to_string(),
            );
        }
        (DataDir::Initialised { .. }, None, NotMine::Vacant(v)) => {
            // A bootstrap interrupted before the database was recorded (PostgreSQL died,
            // the lease was released): nobody else has this data yet, so the member that
            // ran initdb finishes it rather than leaving the cluster without a database.
            if !may_be_primary(obs, obs.me) {
                return wait(format!(
                    "no database is recorded and {}; this member may never be primary",
                    v.what
                ));
            }
            if let Some(first) = first_eligible_below_me(obs) {
                return wait(format!(
                    "no database is recorded and {}; leaving the bootstrap to {}",
                    v.what,
                    name(obs, first)
                ));
            }
            let text = format!(
                "no database is recorded and {}; taking the lease to finish the bootstrap \
                 with my initialised data directory",
                v.what
            );
            return say(
                obs,
                Decision::AcquireLease {
                    expected: v.expected,
                },
                text,
            );
        }
        (DataDir::Initialised { system_id }, _, _) => system_id,
    };
    if let Some(db) = obs.database.filter(|db| *db != system_id) {
        return wait(format!(
            "data directory belongs to another database (system id {system_id}, the cluster's \
             is {db}); it needs `pgquorum reinit`"
        ));
    }
    if let Some(reason) = &obs.rejoin_blocked {
        if obs.config.remove_data_directory_on_rewind_failure {
            if let Some(source) = primary {
                let text = format!(
                    "cannot rejoin by rewind ({reason}); moving the data directory aside and \
                     cloning from {} (remove_data_directory_on_rewind_failure)",
                    name(obs, source)
                );
                return say(obs, Decision::Reclone { source }, text);
            }
        }
        return wait(format!(
            "cannot rejoin automatically: {reason}; the data directory is left as it is \
             (set remove_data_directory_on_rewind_failure to re-clone it, or see `pgquorum \
             reinit`)"
        ));
    }
    if obs.needs_rewind {
        if let Some(source) = primary {
            if let Some(after) = obs.rewind_retry_in {
                return wait(format!(
                    "data directory was last a primary's; the rewind from {} failed, trying \
                     again in {}",
                    name(obs, source),
                    human(after)
                ));
            }
            let text = format!(
                "data directory was last a primary's; rewinding from {} (lease epoch {}) \
                 before following it",
                name(obs, source),
                epoch(obs)
            );
            return say(obs, Decision::Rewind { source }, text);
        }
    }
    if !obs.pg.running {
        let upstream = match primary {
            Some(p) => format!("of {}", name(obs, p)),
            None => format!("with no primary to follow yet: {}", no_primary(obs, &lease)),
        };
        let text = format!("PostgreSQL stopped; starting it as a replica {upstream}");
        return say(obs, Decision::StartReplica { follow: primary }, text);
    }
    // Running and, since rule 1 did not fence, in recovery.
    match lease {
        NotMine::Held(holder) => replica(obs, holder, primary.is_some()),
        NotMine::Vacant(vacancy) => take_over(obs, vacancy),
    }
}

/// How long a replica of the primary may stay on an older timeline without streaming before
/// it is rewound: following a new timeline normally takes well under a second.
const STALLED_BEHIND_TIMELINE: Duration = Duration::from_secs(3);

/// A running replica while `holder` holds the lease.
fn replica(obs: &Observation, holder: NodeId, holder_is_primary: bool) -> Outcome {
    let leader = name(obs, holder);
    let epoch = epoch(obs);
    let upstream = obs.following.map_or("nobody".to_string(), |f| name(obs, f));
    if obs.following == Some(holder) {
        // A replica that received more of the old timeline than the new primary had when it
        // was promoted cannot follow it: its WAL forked off before its position. pg_rewind
        // brings it back (or finds nothing to do).
        let holder_timeline = obs.peers.get(&holder).map(|p| p.pg.timeline);
        if holder_is_primary
            && !obs.pg.streaming
            && holder_timeline.is_some_and(|tl| obs.pg.timeline < tl)
            && obs.not_streaming_for >= STALLED_BEHIND_TIMELINE
            && obs.rewind_retry_in.is_none()
        {
            let text = format!(
                "replica of {leader} on timeline {} while {leader} is on timeline {}, not \
                 streaming for {}; rewinding from it",
                obs.pg.timeline,
                holder_timeline.unwrap_or_default(),
                human(obs.not_streaming_for)
            );
            return say(obs, Decision::Rewind { source: holder }, text);
        }
        let streaming = if obs.pg.streaming {
            "streaming"
        } else {
            "not streaming"
        };
        let lag = match (peer_position(obs, holder), obs.pg.wal_position) {
            (Some(theirs), Some(mine)) => format!("{} B behind", theirs.bytes_after(mine)),
            _ => "lag unknown".to_string(),
        };
        say(
            obs,
            Decision::Idle,
            format!("replica of {leader}, {streaming}, {lag}"),
        )
    } else if holder_is_primary {
        let text = format!(
            "replica following {upstream}, but {leader} is the primary (lease epoch {epoch}); \
             re-pointing to {leader}"
        );
        say(obs, Decision::Follow { leader: holder }, text)
    } else {
        let text = format!(
            "replica following {upstream}; {leader} holds lease epoch {epoch} but reports no \
             writable primary, so not re-pointing yet"
        );
        say(obs, Decision::Idle, text)
    }
}
