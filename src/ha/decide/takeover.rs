//! Taking a free or expired lease: who is the healthiest eligible replica, and whether a
//! takeover keeps every acknowledged commit in synchronous and quorum modes.

use super::*;

/// A running replica while the lease is free or expired: take it if this member is the
/// healthiest eligible one.
pub(super) fn take_over(obs: &Observation, vacancy: Vacancy) -> Outcome {
    let wait = |why: String| say(obs, Decision::Wait, format!("{}; {why}", vacancy.what));
    let still_writable = obs.peers.values().find(|p| p.pg.is_writable()).map(|p| {
        wait(format!(
            "{} still reports itself writable",
            name(obs, p.node_id)
        ))
    });
    // A forced failover names who takes the lease, whatever lag or the synchronous set
    // say: the operator accepts the loss. Others leave it to the candidate for 2 x ttl.
    if let Some(failover) = &obs.failover {
        if failover.to == obs.me {
            let eligible = obs.database.is_some()
                && obs.members.get(&obs.me).is_some_and(|m| !m.tags.nofailover);
            if let Some(outcome) = &still_writable {
                return outcome.clone();
            }
            if let (true, Some(mine)) = (eligible, obs.pg.wal_position) {
                let text = format!(
                    "{}; taking over as the candidate of a forced failover ({mine})",
                    vacancy.what
                );
                let expected = vacancy.expected;
                return say(obs, Decision::TakeOver { expected }, text);
            }
        } else if obs.lease_unchanged_for < obs.config.ttl * 2 {
            return wait(format!(
                "forced failover to {} requested",
                name(obs, failover.to)
            ));
        }
    }
    let mine = match my_position_if_eligible(obs) {
        Ok(mine) => mine,
        Err(why) => return wait(format!("not eligible: {why}")),
    };
    // A planned switchover reserves a freshly released lease for its candidate (or, with
    // none named, for anyone but the old primary) until ttl has passed.
    if let Some(switchover) = &obs.switchover {
        if obs.lease_unchanged_for < obs.config.ttl {
            match switchover.to {
                Some(to) if to == obs.me => {
                    let text = format!(
                        "{}; taking over as the switchover candidate ({mine})",
                        vacancy.what
                    );
                    let expected = vacancy.expected;
                    return say(obs, Decision::TakeOver { expected }, text);
                }
                Some(to) => {
                    return wait(format!("switchover to {} in progress", name(obs, to)));
                }
                None if switchover.from == obs.me => {
                    return wait("I am the old primary of a switchover".to_string());
                }
                None => {}
            }
        }
    }
    if let Some(outcome) = still_writable {
        return outcome;
    }
    // Compare positions only once every replica that answers has reported one taken after the
    // old primary stopped writing: an older report may understate how far it got, and
    // promoting a member behind another leaves that one unable to follow without a rewind.
    let since = since_writable(obs);
    let stale = obs.peers.values().find(|p| {
        p.pg.running
            && p.pg.in_recovery
            && obs
                .status_age
                .get(&p.node_id)
                .is_none_or(|age| *age >= since)
    });
    if let Some(stale) = stale {
        return wait(format!(
            "waiting for a position from {} taken after the old primary stopped",
            name(obs, stale.node_id)
        ));
    }
    // A replica that stopped answering a moment ago may be ahead of me: give it as long again
    // to answer before promoting without it. Seen once: a poll round that waited for the cut-off
    // old primary let a replica's last answer age past the limit just as the lease expired,
    // and a replica 12.7 s of WAL behind it took over.
    if let Some(quiet) = obs.quiet_replicas.iter().next() {
        return wait(format!(
            "{} stopped answering a moment ago, as a replica; waiting for it (at most {} after \
             its last answer) in case it is ahead",
            name(obs, *quiet),
            human(obs.config.status_horizon() * 2)
        ));
    }
    let my_rank = (mine, priority(obs, obs.me), std::cmp::Reverse(obs.me));
    // The old primary of an untargeted switchover stands aside while the lease is reserved:
    // deferring to it would leave the lease to nobody until the reservation ends.
    let standing_aside = obs
        .switchover
        .as_ref()
        .filter(|s| s.to.is_none() && obs.lease_unchanged_for < obs.config.ttl)
        .map(|s| s.from);
    // The last holder defers to nobody: it is as advanced as anyone (they only ever had its
    // WAL), and when its record says "no synchronous standby" it is the only member that may
    // take the lease at all, so deferring to a peer would leave the lease to nobody.
    let last_holder = obs.last_holder == Some(obs.me);
    let best = obs
        .peers
        .values()
        .filter(|p| !last_holder && Some(p.node_id) != standing_aside)
        .filter_map(|p| candidate(obs, p))
        .max_by_key(|(_, rank)| *rank)
        .filter(|(_, rank)| *rank > my_rank);
    if let Some((node, (lsn, prio, _))) = best {
        return wait(format!(
            "{} is a better candidate (at {lsn} with failover_priority {prio}; I am at {mine} \
             with {})",
            name(obs, node),
            my_rank.1
        ));
    }
    // The others' positions, for whoever reads the log after a failover.
    let others: String = obs
        .peers
        .values()
        .filter(|p| p.pg.running)
        .filter_map(|p| {
            let lsn = p.pg.wal_position?;
            Some(format!("; {} at {lsn}", name(obs, p.node_id)))
        })
        .collect();
    let text = format!(
        "{}; taking over as the healthiest replica ({mine}){others}",
        vacancy.what
    );
    let expected = vacancy.expected;
    say(obs, Decision::TakeOver { expected }, text)
}

/// A candidate's rank: higher WAL position first, then higher failover_priority, then the
/// lower node id.
type Rank = (Lsn, u32, std::cmp::Reverse<NodeId>);

/// My WAL position if I may take the lease, else why not.
pub(super) fn my_position_if_eligible(obs: &Observation) -> Result<Lsn, String> {
    if obs.database.is_none() {
        return Err("no database is recorded".to_string());
    }
    let Some(member) = obs.members.get(&obs.me) else {
        return Err("not a registered member".to_string());
    };
    if member.tags.nofailover {
        return Err("tagged nofailover".to_string());
    }
    if member.tags.failover_priority == 0 {
        return Err("failover_priority is 0".to_string());
    }
    if let Some(why) = &obs.pre_promote_refused {
        return Err(format!("the pre_promote hook refused promotion: {why}"));
    }
    let Some(mine) = obs.pg.wal_position else {
        return Err("my WAL position is unknown".to_string());
    };
    synchronous_guard(obs, mine)?;
    let limit = obs.config.maximum_lag_on_failover;
    let highest = highest_position(obs).unwrap_or(mine);
    let lag = highest.bytes_after(mine);
    if lag > limit {
        return Err(format!(
            "{lag} B behind the highest known position {highest}, more than \
             maximum_lag_on_failover ({limit} B)"
        ));
    }
    Ok(mine)
}

/// In synchronous or quorum mode, whether my taking over keeps every acknowledged commit:
/// for every recorded rule, enough of its members answered with a status taken after the
/// old primary stopped being writable, and none of them is ahead of me (`cluster::sync`).
pub(super) fn synchronous_guard(obs: &Observation, mine: Lsn) -> Result<(), String> {
    if obs.config.synchronous_mode == SynchronousMode::Off {
        return Ok(());
    }
    // The holder of the latest tenure taking its lease back (after a restart, a crash or a
    // failed handover of its own) has every acknowledged commit: it took the lease holding
    // every earlier one and acknowledged the rest itself, and nobody has rewound or
    // replaced its data since, as that needs a later primary. Without this, a record of "no
    // synchronous standby" would keep every member out, it included.
    if obs.last_holder == Some(obs.me) {
        return Ok(());
    }
    let rules = obs.sync_rules();
    if rules.is_empty() {
        return Err(
            "in synchronous mode only a member of the recorded synchronous set may be \
                    promoted; none is recorded"
                .to_string(),
        );
    }
    let since_writable = since_writable(obs);
    let position = |id: NodeId| -> Option<Lsn> {
        if id == obs.me {
            return Some(mine);
        }
        let fresh = obs
            .status_age
            .get(&id)
            .is_some_and(|age| *age < since_writable);
        let peer = obs.peers.get(&id).filter(|_| fresh)?;
        peer.pg.wal_position.filter(|_| peer.pg.running)
    };
    for rule in &rules {
        let Some(needed) = rule.needed_answers() else {
            return Err(format!(
                "the primary recorded \"{rule}\" (synchronous mode), so no member is known to \
                 hold every acknowledged commit; waiting for it or for `pgquorum failover`"
            ));
        };
        let answered: Vec<(NodeId, Lsn)> = rule
            .members
            .iter()
            .filter_map(|id| Some((*id, position(*id)?)))
            .collect();
        if answered.len() < needed {
            let names: Vec<String> = rule.members.iter().map(|id| name(obs, *id)).collect();
            return Err(format!(
                "synchronous set [{}] needs {needed} of its members to report a position taken \
                 after the old primary stopped, {} did",
                names.join(", "),
                answered.len()
            ));
        }
        if let Some((id, theirs)) = answered.iter().find(|(_, lsn)| *lsn > mine) {
            return Err(format!(
                "synchronous member {} is ahead ({theirs}; I am at {mine})",
                name(obs, *id)
            ));
        }
    }
    Ok(())
}

/// How long ago, at the latest, the old primary stopped being writable: a status taken less
/// long ago than this shows every WAL position it reached. A released lease was released
/// only after that; an expired one's holder gave up at the latest `ttl - margin` after the
/// renewal I saw last.
pub(super) fn since_writable(obs: &Observation) -> Duration {
    let ttl = obs.config.ttl;
    match obs.lease_clock {
        LeaseClockView::Expired { .. } => obs
            .lease_unchanged_for
            .saturating_sub(ttl - crate::ha::safety_margin(ttl)),
        _ => obs.lease_unchanged_for,
    }
}

/// A peer's rank if it could take the lease: a registered member not tagged nofailover,
/// with failover_priority > 0, not standing aside after a `pre_promote` refusal, a running
/// replica of this database whose WAL position is
/// known and within `maximum_lag_on_failover` of the highest.
pub(super) fn candidate(obs: &Observation, peer: &PeerStatus) -> Option<(NodeId, Rank)> {
    let tags = &obs.members.get(&peer.node_id)?.tags;
    let lsn = peer.pg.wal_position?;
    let highest = highest_position(obs)?;
    let eligible = !tags.nofailover
        && tags.failover_priority > 0
        && !peer.pre_promote_refused
        && peer.pg.running
        && peer.pg.in_recovery
        && obs
            .database
            .map(|system_id| DataDir::Initialised { system_id })
            == Some(peer.data_dir)
        && highest.bytes_after(lsn) <= obs.config.maximum_lag_on_failover;
    eligible.then_some((
        peer.node_id,
        (lsn, tags.failover_priority, std::cmp::Reverse(peer.node_id)),
    ))
}
