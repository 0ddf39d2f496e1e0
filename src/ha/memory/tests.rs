//! The engine's remembered rules as tables: each case folds a sequence of events into a
//! fresh [`Memory`] and checks what the rule then says.
#![allow(clippy::type_complexity)] // the tables spell out their columns

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::cluster::{DynamicConfig, Lease, Member, SyncState, Tags};
use crate::ha::observe::LeaseClockView;
use crate::ha::Decision;
use crate::postgres::{DataDir, PgStatus};

const TTL: Duration = Duration::from_secs(2);
const LOOP_WAIT: Duration = Duration::from_millis(500);
const RETRY: Duration = Duration::from_secs(1);

fn n(id: u64) -> NodeId {
    NodeId(id)
}

fn lease(epoch: u64) -> Lease {
    Lease {
        holder: n(1),
        epoch: Epoch(epoch),
        seq: 1,
    }
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn member(id: u64) -> Member {
    Member {
        id: n(id),
        name: format!("n{id}"),
        peer_addr: format!("10.0.0.{id}:7400"),
        api_addr: format!("10.0.0.{id}:8008"),
        pg_addr: format!("10.0.0.{id}:5432"),
        tags: Tags::default(),
    }
}

/// Member 1 holding `lease(epoch)` in `mode`, three members.
fn obs(epoch: u64, mode: SynchronousMode) -> Observation {
    Observation {
        me: n(1),
        lease: Some(lease(epoch)),
        lease_clock: LeaseClockView::HeldByMe,
        database: Some(1),
        config: DynamicConfig {
            synchronous_mode: mode,
            ttl: TTL,
            loop_wait: LOOP_WAIT,
            retry_timeout: RETRY,
            ..DynamicConfig::default()
        },
        members: (1..=3).map(|id| (n(id), member(id))).collect(),
        peers: BTreeMap::new(),
        status_age: BTreeMap::new(),
        quiet_replicas: Default::default(),
        data_dir: DataDir::Initialised { system_id: 1 },
        pg: PgStatus {
            running: true,
            ..PgStatus::default()
        },
        following: None,
        down_for: Duration::ZERO,
        start_failure: None,
        pre_promote_refused: None,
        not_streaming_for: Duration::ZERO,
        switchover: None,
        paused: false,
        needs_rewind: false,
        rewind_retry_in: None,
        lease_unchanged_for: Duration::ZERO,
        rejoin_blocked: None,
        sync: None,
        last_epoch: Epoch(epoch),
        last_holder: Some(n(1)),
        last_primary_position: None,
        failover: None,
        action: None,
        recorded_timeline: 0,
        restore: None,
        restored_unix: None,
        now_unix_ms: 0,
    }
}

fn folded(events: Vec<Event>) -> Memory {
    let mut memory = Memory::default();
    for event in events {
        memory.fold(event);
    }
    memory
}

#[test]
fn failed_starts_count_up_and_are_forgotten_once_running_or_not_holding() {
    let t0 = Instant::now();
    let failed = |error: &str| Event::StartFailed {
        error: error.into(),
    };
    let stopped = PgStatus::default();
    let running = PgStatus {
        running: true,
        ..PgStatus::default()
    };
    let other = Lease {
        holder: n(2),
        ..lease(7)
    };
    // (case, events, then observed pg and lease, attempts afterwards)
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<Event>, Option<(&PgStatus, Option<Lease>)>, Option<u32>)> = vec![
        ("none yet", vec![], None, None),
        ("one failure", vec![failed("a")], None, Some(1)),
        ("two failures", vec![failed("a"), failed("b")], None, Some(2)),
        ("a start clears them", vec![failed("a"), Event::PrimaryStarted], None, None),
        ("still down, still holder: kept", vec![failed("a")], Some((&stopped, Some(lease(7)))), Some(1)),
        ("running: forgotten", vec![failed("a")], Some((&running, Some(lease(7)))), None),
        ("another member holds the lease: forgotten", vec![failed("a")], Some((&stopped, Some(other))), None),
        ("no lease: forgotten", vec![failed("a")], Some((&stopped, None)), None),
    ];
    for (case, events, observed, want) in cases {
        let mut memory = folded(events);
        if let Some((pg, lease)) = observed {
            memory.track(n(1), pg, lease.as_ref(), Epoch(7), None, t0);
        }
        assert_eq!(memory.start_failure().map(|f| f.attempts), want, "{case}");
    }
    let memory = folded(vec![failed("first"), failed("second")]);
    assert_eq!(memory.start_failure().unwrap().error, "second");
}

#[test]
fn a_rewind_that_failed_cleanly_waits_for_its_back_off() {
    let t0 = Instant::now();
    let failed = Event::RewindFailedCleanly { at: t0 };
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<Event>, Duration, Option<Duration>)> = vec![
        ("never failed", vec![], ms(0), None),
        ("just failed", vec![failed.clone()], ms(0), Some(REWIND_RETRY)),
        ("two seconds later", vec![failed.clone()], ms(2000), Some(REWIND_RETRY - ms(2000))),
        ("after the back-off", vec![failed.clone()], REWIND_RETRY, None),
        ("a success clears it", vec![failed.clone(), Event::Rewound], ms(0), None),
    ];
    for (case, events, after, want) in cases {
        assert_eq!(folded(events).rewind_retry_in(t0 + after), want, "{case}");
    }
}

#[test]
fn a_pre_promote_refusal_is_held_for_a_while() {
    let t0 = Instant::now();
    let refused = Event::PrePromoteRefused {
        at: t0,
        why: "exit 1".into(),
    };
    let hold = crate::hooks::REFUSAL_HOLD;
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<Event>, Duration, Option<&str>)> = vec![
        ("never refused", vec![], ms(0), None),
        ("just refused", vec![refused.clone()], ms(0), Some("exit 1")),
        ("just before the hold ends", vec![refused.clone()], hold - ms(1), Some("exit 1")),
        ("after the hold", vec![refused.clone()], hold, None),
    ];
    for (case, events, after, want) in cases {
        let got = folded(events).pre_promote_refused(t0 + after);
        assert_eq!(got.as_deref(), want, "{case}");
    }
}

#[test]
fn renewals_block_commits_when_overdue_and_release_them_once_committed() {
    let sent = Instant::now();
    let committed = Event::LeaseCommitted {
        epoch: Epoch(7),
        sent,
    };
    let deadline = sent + TTL - crate::ha::safety_margin(TTL);
    // (case, events, writable, limit, block writes at)
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<Event>, bool, Instant, Option<Instant>)> = vec![
        ("writable, deadline ahead: block at half a loop_wait",
            vec![committed.clone()], true, deadline.min(sent + RETRY), Some(sent + LOOP_WAIT / 2)),
        ("not writable: nothing to block",
            vec![committed.clone()], false, deadline.min(sent + RETRY), None),
        ("already blocked: not again",
            vec![committed.clone(), Event::WritesBlocked], true, deadline.min(sent + RETRY), None),
        ("no renewal of this epoch yet: up to retry_timeout",
            vec![], true, sent + RETRY, Some(sent + LOOP_WAIT / 2)),
    ];
    for (case, events, writable, limit, block) in cases {
        let plan = folded(events).renewal_plan(&lease(7), TTL, LOOP_WAIT, RETRY, writable, sent);
        assert_eq!(
            plan,
            RenewalPlan {
                limit,
                block_writes_at: block
            },
            "{case}"
        );
    }

    // Past the deadline: a renewal may take retry_timeout, and starts a new deadline.
    let late = deadline + ms(10);
    let plan =
        folded(vec![committed.clone()]).renewal_plan(&lease(7), TTL, LOOP_WAIT, RETRY, false, late);
    assert_eq!(plan.limit, late + RETRY);

    // Blocked commits are released by the next committed renewal, once.
    let mut memory = folded(vec![committed, Event::WritesBlocked]);
    assert!(memory.writes_blocked());
    assert_eq!(memory.standby_names().as_deref(), Some(NO_STANDBY));
    assert!(memory.renewal_committed(Epoch(7), sent + ms(700)));
    assert!(!memory.writes_blocked());
    assert!(!memory.renewal_committed(Epoch(7), sent + ms(900)));
    // A new tenure starts unblocked.
    let mut memory = folded(vec![Event::WritesBlocked]);
    memory.fold(Event::TenureBegan {
        epoch: Some(Epoch(8)),
        rule: None,
    });
    assert!(!memory.writes_blocked());
}

#[test]
fn renewing_ahead_needs_a_renewing_primary_in_the_same_tenure_before_its_deadline() {
    let sent = Instant::now();
    let committed = Event::LeaseCommitted {
        epoch: Epoch(7),
        sent,
    };
    let renewed = Event::Executed { renewed: true };
    let previous = obs(7, SynchronousMode::Off);
    let next_epoch = lease(8);
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<Event>, Option<Lease>, Duration, bool)> = vec![
        ("renewed last cycle, same tenure", vec![committed.clone(), renewed.clone()], Some(lease(7)), ms(500), true),
        ("last cycle did something else", vec![committed.clone(), Event::Executed { renewed: false }], Some(lease(7)), ms(500), false),
        ("the tenure changed", vec![committed.clone(), renewed.clone()], Some(next_epoch), ms(500), false),
        ("the lease is gone", vec![committed.clone(), renewed.clone()], None, ms(500), false),
        ("past the deadline: fence first", vec![committed.clone(), renewed.clone()], Some(lease(7)), TTL, false),
    ];
    for (case, events, current, after, want) in cases {
        let memory = folded(events);
        assert_eq!(
            memory.renews_ahead(&previous, current.as_ref(), sent + after),
            want,
            "{case}"
        );
    }
    let mut memory = folded(vec![Event::RenewedAhead]);
    assert!(memory.renewed_ahead());
    memory.fold(Event::Executed { renewed: true });
    assert!(
        !memory.renewed_ahead(),
        "renewing ahead counts for one cycle"
    );
}

#[test]
fn trackers_time_downtime_stalls_and_the_holders_position_per_epoch() {
    let t0 = Instant::now();
    let stopped = PgStatus::default();
    let stalled = PgStatus {
        running: true,
        in_recovery: true,
        ..PgStatus::default()
    };
    let streaming = PgStatus {
        streaming: true,
        ..stalled.clone()
    };
    let mut memory = Memory::default();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let lsn = |v: u64| Some(Lsn(v));
    // (pg, epoch, holder position, at s, down_for s, not streaming for s, last primary position)
    #[rustfmt::skip]
    let steps: Vec<(&PgStatus, u64, Option<Lsn>, u64, u64, u64, Option<Lsn>)> = vec![
        (&stopped,   7, lsn(100), 0, 0, 0, lsn(100)),
        (&stopped,   7, lsn(200), 3, 3, 0, lsn(200)),
        (&stalled,   7, None,     4, 0, 0, lsn(200)),
        (&stalled,   7, lsn(150), 6, 0, 2, lsn(200)),
        (&streaming, 8, None,     7, 0, 0, None),
        (&streaming, 8, lsn(50),  8, 0, 0, lsn(50)),
    ];
    for (i, (pg, epoch, holder, s, down, stall, last)) in steps.into_iter().enumerate() {
        let got = memory.track(n(2), pg, None, Epoch(epoch), holder, at(s));
        let want = Tracked {
            down_for: Duration::from_secs(down),
            not_streaming_for: Duration::from_secs(stall),
            last_primary_position: last,
        };
        assert_eq!(got, want, "step {i}");
    }
    // Building a data directory restarts the downtime; a rewind restarts the stall.
    memory.track(n(2), &stopped, None, Epoch(8), None, at(10));
    memory.acted(&Decision::Clone { source: n(1) });
    let got = memory.track(n(2), &stopped, None, Epoch(8), None, at(12));
    assert_eq!(got.down_for, Duration::ZERO);
    memory.track(n(2), &stalled, None, Epoch(8), None, at(13));
    memory.acted(&Decision::Rewind { source: n(1) });
    let got = memory.track(n(2), &stalled, None, Epoch(8), None, at(15));
    assert_eq!(got.not_streaming_for, Duration::ZERO);
}

#[test]
fn the_synchronous_rule_is_recorded_before_it_is_used_and_settled_after() {
    let t0 = Instant::now();
    let quorum = obs(7, SynchronousMode::Quorum);
    let both = SyncRule {
        members: [n(2), n(3)].into(),
        quorum: 1,
    };
    let flushed: BTreeMap<NodeId, Lsn> = [(n(2), Lsn(500)), (n(3), Lsn(500))].into();

    // A new tenure in quorum mode starts with nothing synchronous.
    let mut memory = Memory::default();
    let began = memory.new_tenure(&quorum).expect("a new tenure");
    memory.fold(began);
    assert_eq!(memory.tenure(), Some(Epoch(7)));
    assert!(memory.new_tenure(&quorum).is_none(), "once per epoch");
    assert_eq!(memory.standby_names(), None);

    // Standbys stream: record the new rule next to the old, then switch to it.
    let SyncPlan::Switch { to, record, .. } = memory.sync_plan(&quorum, &flushed, t0) else {
        panic!(
            "expected a switch, got {:?}",
            memory.sync_plan(&quorum, &flushed, t0)
        );
    };
    assert_eq!(to, both);
    let record = record.expect("the new rule is recorded first");
    assert!(record.contains(&both), "{record:?}");
    memory.fold(Event::SyncSwitched { rule: to, at: t0 });
    assert_eq!(
        memory.standby_names().as_deref(),
        Some("ANY 1 (pgquorum_2, pgquorum_3)")
    );

    // Recorded as both old and new: settle only a loop_wait after the switch, from a target
    // read then, once the new rule's members have flushed past it.
    let recorded = Observation {
        sync: Some(SyncState {
            epoch: Epoch(7),
            rules: record,
        }),
        ..quorum.clone()
    };
    assert_eq!(
        memory.sync_plan(&recorded, &flushed, t0 + ms(100)),
        SyncPlan::Settling
    );
    let later = t0 + LOOP_WAIT;
    assert_eq!(
        memory.sync_plan(&recorded, &flushed, later),
        SyncPlan::ReadTarget
    );
    memory.fold(Event::SyncTarget { lsn: Lsn(900) });
    assert_eq!(
        memory.sync_plan(&recorded, &flushed, later),
        SyncPlan::Settling,
        "no member of the new rule has flushed past the target yet"
    );
    memory.fold(Event::SyncTarget { lsn: Lsn(400) });
    assert_eq!(
        memory.sync_plan(&recorded, &flushed, later),
        SyncPlan::DropOld { rule: both.clone() }
    );
    memory.fold(Event::SyncSettled);

    // Recorded alone: in step.
    let settled = Observation {
        sync: Some(SyncState {
            epoch: Epoch(7),
            rules: vec![both.clone()],
        }),
        ..quorum.clone()
    };
    assert_eq!(
        memory.sync_plan(&settled, &flushed, later),
        SyncPlan::InStep
    );

    // A rule in force after a daemon restart whose settling never started starts it.
    let mut restarted = Memory::default();
    restarted.fold(Event::TenureBegan {
        epoch: Some(Epoch(7)),
        rule: Some(both.clone()),
    });
    assert_eq!(
        restarted.sync_plan(&recorded, &flushed, t0),
        SyncPlan::StartSettling
    );

    // Switched off: PostgreSQL stops waiting and the record is cleared.
    let off = Observation {
        config: DynamicConfig {
            synchronous_mode: SynchronousMode::Off,
            ..settled.config.clone()
        },
        ..settled.clone()
    };
    assert_eq!(
        memory.sync_plan(&off, &flushed, later),
        SyncPlan::TurnOff {
            unset: true,
            clear_record: true
        }
    );
    memory.fold(Event::SyncOff);
    assert_eq!(memory.standby_names(), None);
    let cleared = Observation { sync: None, ..off };
    assert_eq!(
        memory.sync_plan(&cleared, &flushed, later),
        SyncPlan::Nothing
    );
}
