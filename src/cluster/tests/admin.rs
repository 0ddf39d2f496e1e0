//! `apply` cases: the dynamic configuration, switchovers and operations on members.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    let nofailover = Tags {
        nofailover: true,
        ..Tags::default()
    };
    vec![
        // -- config
        Case {
            name: "set config replaces a valid config",
            given: state(),
            command: Command::SetConfig {
                config: DynamicConfig {
                    ttl: Duration::from_secs(30),
                    ..DynamicConfig::default()
                },
            },
            result: CommandResult::Applied,
            change: |s| s.config.ttl = Duration::from_secs(30),
        },
        Case {
            name: "set config with an invalid config is rejected with the reason",
            given: state(),
            command: Command::SetConfig {
                config: DynamicConfig {
                    loop_wait: Duration::from_secs(2),
                    ..DynamicConfig::default()
                },
            },
            result: rejected(Rejection::InvalidConfig(
                "loop_wait (2s) must be at most a third of ttl (2s) so a holder can renew at \
                 least twice before the lease expires; lower loop_wait or raise ttl"
                    .into(),
            )),
            change: unchanged,
        },
        // -- switchover
        Case {
            name: "switchover from the holder to an eligible member is recorded",
            given: state().with_member(2).with_lease(1, 1, 0),
            command: Command::RequestSwitchover {
                switchover: switchover(1, Some(2)),
            },
            result: CommandResult::Applied,
            change: |s| s.switchover = Some(switchover(1, Some(2))),
        },
        Case {
            name: "switchover from a non-holder is rejected",
            given: state().with_member(2).with_lease(1, 1, 0),
            command: Command::RequestSwitchover {
                switchover: switchover(2, None),
            },
            result: rejected(Rejection::LeaseNotHeld {
                current: Some(lease(1, 1, 0)),
            }),
            change: unchanged,
        },
        Case {
            name: "switchover to a nofailover member is rejected",
            given: state()
                .with_member(2)
                .with_tags(2, nofailover.clone())
                .with_lease(1, 1, 0),
            command: Command::RequestSwitchover {
                switchover: switchover(1, Some(2)),
            },
            result: rejected(Rejection::InvalidSwitchover(
                "target node2 (node 2) is tagged nofailover; choose another target or clear \
                 the tag"
                    .into(),
            )),
            change: unchanged,
        },
        Case {
            name: "switchover to a non-member is rejected",
            given: state().with_lease(1, 1, 0),
            command: Command::RequestSwitchover {
                switchover: switchover(1, Some(8)),
            },
            result: rejected(Rejection::InvalidSwitchover(
                "target node 8 is not a member; see `pgquorum list` for members".into(),
            )),
            change: unchanged,
        },
        Case {
            name: "switchover to the holder itself is rejected",
            given: state().with_lease(1, 1, 0),
            command: Command::RequestSwitchover {
                switchover: switchover(1, Some(1)),
            },
            result: rejected(Rejection::InvalidSwitchover(
                "node 1 already holds the lease; choose another target or none".into(),
            )),
            change: unchanged,
        },
        Case {
            name: "second switchover while one is pending is rejected",
            given: state()
                .with_member(2)
                .with_lease(1, 1, 0)
                .with_switchover(1, None),
            command: Command::RequestSwitchover {
                switchover: switchover(1, Some(2)),
            },
            result: rejected(Rejection::SwitchoverPending {
                switchover: switchover(1, None),
            }),
            change: unchanged,
        },
        Case {
            name: "clear switchover removes a pending one",
            given: state().with_switchover(1, None),
            command: Command::ClearSwitchover,
            result: CommandResult::Applied,
            change: |s| s.switchover = None,
        },
        Case {
            name: "clear switchover with none pending is applied",
            given: state(),
            command: Command::ClearSwitchover,
            result: CommandResult::Applied,
            change: unchanged,
        },
        // -- operations on members and forced failover, judged when applied so that the
        //    judgement and the request are one atomic step
        Case {
            name: "a reinit of a replica is recorded",
            given: state().with_member(2).with_lease(1, 3, 0),
            command: Command::RequestAction {
                member: NodeId(2),
                action: MemberAction::Reinit,
            },
            result: CommandResult::Applied,
            change: |s| {
                s.actions.insert(NodeId(2), MemberAction::Reinit);
            },
        },
        Case {
            name: "a reinit of the lease holder is refused",
            given: state().with_member(2).with_lease(2, 3, 0),
            command: Command::RequestAction {
                member: NodeId(2),
                action: MemberAction::Reinit,
            },
            result: rejected(Rejection::InvalidAction(
                "node2 (node 2) is the primary; it is never re-initialised (switch over first \
                 with `pgquorum switchover`)"
                    .into(),
            )),
            change: unchanged,
        },
        Case {
            name: "a restart of the lease holder is recorded (it keeps its lease)",
            given: state().with_member(2).with_lease(2, 3, 0),
            command: Command::RequestAction {
                member: NodeId(2),
                action: MemberAction::Restart,
            },
            result: CommandResult::Applied,
            change: |s| {
                s.actions.insert(NodeId(2), MemberAction::Restart);
            },
        },
        Case {
            name: "a reinit of a witness is refused",
            given: state().with_witness(3),
            command: Command::RequestAction {
                member: NodeId(3),
                action: MemberAction::Reinit,
            },
            result: rejected(Rejection::InvalidAction(
                "node3 (node 3) is a witness: it has no PostgreSQL to re-initialise".into(),
            )),
            change: unchanged,
        },
        Case {
            name: "a restart of a witness is refused",
            given: state().with_witness(3),
            command: Command::RequestAction {
                member: NodeId(3),
                action: MemberAction::Restart,
            },
            result: rejected(Rejection::InvalidAction(
                "node3 (node 3) is a witness: it has no PostgreSQL to restart".into(),
            )),
            change: unchanged,
        },
        Case {
            name: "a forced failover to a witness is refused",
            given: state().with_witness(3),
            command: Command::RequestFailover {
                failover: Failover { to: NodeId(3) },
            },
            result: rejected(Rejection::InvalidSwitchover(
                "node3 (node 3) is a witness: it has no PostgreSQL to promote; choose a member \
                 with PostgreSQL"
                    .into(),
            )),
            change: unchanged,
        },
        Case {
            name: "a switchover to a witness is refused",
            given: state().with_witness(3).with_lease(1, 3, 0),
            command: Command::RequestSwitchover {
                switchover: switchover(1, Some(3)),
            },
            result: rejected(Rejection::InvalidSwitchover(
                "target node 3 is a witness: it has no PostgreSQL to promote; choose a member \
                 with PostgreSQL"
                    .into(),
            )),
            change: unchanged,
        },
        Case {
            name: "a switchover while the lease is free is refused",
            given: state().with_member(2),
            command: Command::RequestSwitchover {
                switchover: switchover(1, Some(2)),
            },
            result: rejected(Rejection::LeaseNotHeld { current: None }),
            change: unchanged,
        },
    ]
}
