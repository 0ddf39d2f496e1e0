//! `apply` cases: acquiring, renewing and releasing the lease, and what rides on it (forced
//! failover, the database, the synchronous set, timelines).

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        // -- acquire
        Case {
            name: "free lease is granted with the next epoch",
            given: state(),
            command: acquire(1, None),
            result: granted(1, 1, 0),
            change: |s| {
                s.lease = Some(lease(1, 1, 0));
                s.last_epoch = Epoch(1);
                s.last_holder = Some(NodeId(1));
            },
        },
        Case {
            name: "free lease after a release still gets a larger epoch",
            given: ClusterState {
                lease: None,
                ..state().with_member(2).with_lease(1, 5, 3)
            },
            command: acquire(2, None),
            result: granted(2, 6, 0),
            change: |s| {
                s.lease = Some(lease(2, 6, 0));
                s.last_epoch = Epoch(6);
                s.last_holder = Some(NodeId(2));
            },
        },
        Case {
            name: "acquire by a non-member is rejected",
            given: state(),
            command: acquire(4, None),
            result: rejected(Rejection::UnknownMember { id: NodeId(4) }),
            change: unchanged,
        },
        Case {
            name: "held lease is not granted without an expectation",
            given: state().with_member(2).with_lease(1, 3, 7),
            command: acquire(2, None),
            result: rejected(Rejection::LeaseHeld {
                lease: lease(1, 3, 7),
            }),
            change: unchanged,
        },
        Case {
            name: "takeover of the exact unrenewed lease starts a new tenure",
            given: state().with_member(2).with_lease(1, 3, 7),
            command: acquire(2, at(3, 7)),
            result: granted(2, 4, 0),
            change: |s| {
                s.lease = Some(lease(2, 4, 0));
                s.last_epoch = Epoch(4);
                s.last_holder = Some(NodeId(2));
            },
        },
        Case {
            name: "takeover fails when a renewal was committed after the observation",
            given: state().with_member(2).with_lease(1, 3, 8),
            command: acquire(2, at(3, 7)),
            result: rejected(Rejection::LeaseHeld {
                lease: lease(1, 3, 8),
            }),
            change: unchanged,
        },
        Case {
            name: "takeover fails against a newer tenure",
            given: state().with_member(2).with_lease(1, 4, 0),
            command: acquire(2, at(3, 0)),
            result: rejected(Rejection::LeaseHeld {
                lease: lease(1, 4, 0),
            }),
            change: unchanged,
        },
        Case {
            name: "re-acquire by the same holder starts a new epoch",
            given: state().with_lease(1, 3, 7),
            command: acquire(1, at(3, 7)),
            result: granted(1, 4, 0),
            change: |s| {
                s.lease = Some(lease(1, 4, 0));
                s.last_epoch = Epoch(4);
                s.last_holder = Some(NodeId(1));
            },
        },
        Case {
            name: "grant to the switchover target clears the switchover",
            given: state()
                .with_member(2)
                .with_lease(1, 3, 0)
                .with_switchover(1, Some(2)),
            command: acquire(2, at(3, 0)),
            result: granted(2, 4, 0),
            change: |s| {
                s.lease = Some(lease(2, 4, 0));
                s.last_epoch = Epoch(4);
                s.last_holder = Some(NodeId(2));
                s.switchover = None;
            },
        },
        Case {
            name: "grant to any other member clears an untargeted switchover",
            given: state().with_member(3).with_switchover(1, None),
            command: acquire(3, None),
            result: granted(3, 1, 0),
            change: |s| {
                s.lease = Some(lease(3, 1, 0));
                s.last_epoch = Epoch(1);
                s.last_holder = Some(NodeId(3));
                s.switchover = None;
            },
        },
        Case {
            name: "grant to a non-target keeps the switchover",
            given: state()
                .with_member(2)
                .with_member(3)
                .with_switchover(1, Some(2)),
            command: acquire(3, None),
            result: granted(3, 1, 0),
            change: |s| {
                s.lease = Some(lease(3, 1, 0));
                s.last_epoch = Epoch(1);
                s.last_holder = Some(NodeId(3));
            },
        },
        Case {
            name: "grant back to the switchover source keeps an untargeted switchover",
            given: state().with_switchover(1, None),
            command: acquire(1, None),
            result: granted(1, 1, 0),
            change: |s| {
                s.lease = Some(lease(1, 1, 0));
                s.last_epoch = Epoch(1);
                s.last_holder = Some(NodeId(1));
            },
        },
        // -- renew and release
        Case {
            name: "renew by the holder in its epoch bumps seq",
            given: state().with_lease(1, 3, 7),
            command: renew(1, 3),
            result: granted(1, 3, 8),
            change: |s| s.lease = Some(lease(1, 3, 8)),
        },
        Case {
            name: "renew in a stale epoch is rejected",
            given: state().with_lease(1, 4, 0),
            command: renew(1, 3),
            result: rejected(Rejection::LeaseNotHeld {
                current: Some(lease(1, 4, 0)),
            }),
            change: unchanged,
        },
        Case {
            name: "renew by a non-holder is rejected",
            given: state().with_member(2).with_lease(1, 3, 0),
            command: renew(2, 3),
            result: rejected(Rejection::LeaseNotHeld {
                current: Some(lease(1, 3, 0)),
            }),
            change: unchanged,
        },
        Case {
            name: "renew of a free lease is rejected",
            given: state(),
            command: renew(1, 0),
            result: rejected(Rejection::LeaseNotHeld { current: None }),
            change: unchanged,
        },
        Case {
            name: "a forced failover is recorded for a member",
            given: state().with_member(2),
            command: Command::RequestFailover {
                failover: crate::cluster::Failover { to: NodeId(2) },
            },
            result: CommandResult::Applied,
            change: |s| s.failover = Some(crate::cluster::Failover { to: NodeId(2) }),
        },
        Case {
            name: "a forced failover to a nofailover member is refused",
            given: state().with_member(2).with_tags(
                2,
                Tags {
                    nofailover: true,
                    ..Tags::default()
                },
            ),
            command: Command::RequestFailover {
                failover: crate::cluster::Failover { to: NodeId(2) },
            },
            result: rejected(Rejection::InvalidSwitchover(
                "node2 (node 2) is tagged nofailover; choose another candidate or clear the tag"
                    .into(),
            )),
            change: unchanged,
        },
        Case {
            name: "the failover's candidate taking the lease clears the failover",
            given: {
                let mut s = state().with_member(2).with_lease(1, 3, 4);
                s.failover = Some(crate::cluster::Failover { to: NodeId(2) });
                s
            },
            command: Command::AcquireLease {
                candidate: NodeId(2),
                expected: Some(LeaseRef {
                    epoch: Epoch(3),
                    seq: 4,
                }),
            },
            result: granted(2, 4, 0),
            change: |s| {
                s.lease = Some(lease(2, 4, 0));
                s.last_epoch = Epoch(4);
                s.last_holder = Some(NodeId(2));
                s.failover = None;
            },
        },
        Case {
            name: "an action is requested of a member and cleared when done",
            given: {
                let mut s = state().with_member(2);
                s.actions
                    .insert(NodeId(2), crate::cluster::MemberAction::Restart);
                s
            },
            command: Command::ActionDone {
                member: NodeId(2),
                action: crate::cluster::MemberAction::Restart,
            },
            result: CommandResult::Applied,
            change: |s| {
                s.actions.remove(&NodeId(2));
            },
        },
        Case {
            name: "an action for an unknown member is refused",
            given: state(),
            command: Command::RequestAction {
                member: NodeId(9),
                action: crate::cluster::MemberAction::Reinit,
            },
            result: rejected(Rejection::UnknownMember { id: NodeId(9) }),
            change: unchanged,
        },
        Case {
            name: "pause turns maintenance mode on",
            given: state(),
            command: Command::SetPaused { paused: true },
            result: CommandResult::Applied,
            change: |s| s.paused = true,
        },
        Case {
            name: "the holder records its synchronous rules in its epoch",
            given: state().with_lease(1, 3, 7),
            command: Command::SetSynchronous {
                holder: NodeId(1),
                epoch: Epoch(3),
                rules: vec![crate::cluster::SyncRule {
                    members: [NodeId(2)].into_iter().collect(),
                    quorum: 1,
                }],
            },
            result: CommandResult::Applied,
            change: |s| {
                s.sync = Some(crate::cluster::SyncState {
                    epoch: Epoch(3),
                    rules: vec![crate::cluster::SyncRule {
                        members: [NodeId(2)].into_iter().collect(),
                        quorum: 1,
                    }],
                })
            },
        },
        Case {
            name: "synchronous rules from an old tenure are rejected",
            given: state().with_lease(1, 4, 0),
            command: Command::SetSynchronous {
                holder: NodeId(1),
                epoch: Epoch(3),
                rules: Vec::new(),
            },
            result: rejected(Rejection::LeaseNotHeld {
                current: Some(lease(1, 4, 0)),
            }),
            change: unchanged,
        },
        Case {
            name: "an empty list clears the synchronous record",
            given: {
                let mut s = state().with_lease(1, 3, 7);
                s.sync = Some(crate::cluster::SyncState {
                    epoch: Epoch(2),
                    rules: vec![crate::cluster::SyncRule::none()],
                });
                s
            },
            command: Command::SetSynchronous {
                holder: NodeId(1),
                epoch: Epoch(3),
                rules: Vec::new(),
            },
            result: CommandResult::Applied,
            change: |s| s.sync = None,
        },
        Case {
            name: "the holder's first reservation is what its data directory needs",
            given: state().with_lease(1, 3, 7),
            command: reserve(1, 3, 2),
            result: CommandResult::Timeline { timeline: 2 },
            change: |s| s.timeline = 2,
        },
        Case {
            name: "a timeline reserved by a primary nobody heard from again is never reused",
            // Holder 2 reserved 5 and was cut off; holder 1 is on timeline 4 and knows
            // nothing of 5.
            given: reserved(5),
            command: reserve(1, 3, 5),
            result: CommandResult::Timeline { timeline: 6 },
            change: |s| s.timeline = 6,
        },
        Case {
            name: "a data directory that knows higher timelines reserves above them",
            given: reserved(5),
            command: reserve(1, 3, 9),
            result: CommandResult::Timeline { timeline: 9 },
            change: |s| s.timeline = 9,
        },
        Case {
            name: "the holder records its promotion in the timeline history",
            given: state().with_lease(1, 3, 0),
            command: record_switch(1, 3, 1, 2),
            result: CommandResult::Applied,
            change: |s| s.history.push(switch(1, 2)),
        },
        Case {
            name: "a promotion already in the history is not recorded twice",
            given: {
                let mut s = state().with_lease(1, 3, 0);
                s.history.push(switch(1, 2));
                s
            },
            command: record_switch(1, 3, 1, 2),
            result: CommandResult::Applied,
            change: unchanged,
        },
        Case {
            name: "only the holder records a promotion, and only its own",
            given: state().with_lease(1, 3, 0),
            command: Command::RecordTimelineSwitch {
                holder: NodeId(1),
                epoch: Epoch(3),
                switch: TimelineSwitch {
                    new_primary: NodeId(2),
                    ..switch(1, 2)
                },
            },
            result: rejected(Rejection::LeaseNotHeld {
                current: Some(lease(1, 3, 0)),
            }),
            change: unchanged,
        },
        Case {
            name: "a member that lost the lease records no promotion",
            given: state().with_lease(1, 4, 0),
            command: record_switch(2, 3, 1, 2),
            result: rejected(Rejection::LeaseNotHeld {
                current: Some(lease(1, 4, 0)),
            }),
            change: unchanged,
        },
        Case {
            name: "only the holder in its epoch reserves a timeline",
            given: state().with_lease(1, 4, 0),
            command: reserve(2, 4, 2),
            result: rejected(Rejection::LeaseNotHeld {
                current: Some(lease(1, 4, 0)),
            }),
            change: unchanged,
        },
        Case {
            name: "the holder records the database once",
            given: state().with_lease(1, 3, 7),
            command: Command::RecordDatabase {
                holder: NodeId(1),
                epoch: Epoch(3),
                system_id: 42,
            },
            result: CommandResult::Applied,
            change: |s| s.database = Some(42),
        },
        Case {
            name: "recording the same database again changes nothing",
            given: {
                let mut s = state().with_lease(1, 3, 7);
                s.database = Some(42);
                s
            },
            command: Command::RecordDatabase {
                holder: NodeId(1),
                epoch: Epoch(3),
                system_id: 42,
            },
            result: CommandResult::Applied,
            change: |_| {},
        },
        Case {
            name: "another database is never recorded over the first",
            given: {
                let mut s = state().with_lease(1, 3, 7);
                s.database = Some(42);
                s
            },
            command: Command::RecordDatabase {
                holder: NodeId(1),
                epoch: Epoch(3),
                system_id: 7,
            },
            result: rejected(Rejection::DatabaseMismatch {
                recorded: 42,
                offered: 7,
            }),
            change: |_| {},
        },
        Case {
            name: "only the current holder may record the database",
            given: state().with_lease(1, 3, 7),
            command: Command::RecordDatabase {
                holder: NodeId(2),
                epoch: Epoch(3),
                system_id: 42,
            },
            result: rejected(Rejection::LeaseNotHeld {
                current: Some(lease(1, 3, 7)),
            }),
            change: |_| {},
        },
        Case {
            name: "release by the holder frees the lease and keeps last epoch",
            given: state().with_lease(1, 3, 7),
            command: release(1, 3),
            result: CommandResult::Applied,
            change: |s| s.lease = None,
        },
        Case {
            name: "release in a stale epoch is rejected",
            given: state().with_lease(1, 4, 0),
            command: release(1, 3),
            result: rejected(Rejection::LeaseNotHeld {
                current: Some(lease(1, 4, 0)),
            }),
            change: unchanged,
        },
    ]
}
