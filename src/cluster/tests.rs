//! Behaviour of `apply` as a table of cases (openraft engine-test style), plus properties
//! that span several commands: ids are never reused, epochs only grow, apply is deterministic.

use std::time::Duration;

use super::*;

// ---- builders ----------------------------------------------------------------------------

const SECRET: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
const NOW: u64 = 1_000;

fn member(id: u64) -> Member {
    Member {
        id: NodeId(id),
        name: format!("node{id}"),
        peer_addr: format!("10.0.0.{id}:7400"),
        api_addr: format!("10.0.0.{id}:8008"),
        pg_addr: format!("10.0.0.{id}:5432"),
        tags: Tags::default(),
    }
}

fn token(id: &str, uses_left: u32) -> JoinToken {
    JoinToken {
        id: id.to_string(),
        secret_sha256: SECRET.to_string(),
        uses_left,
        expires_at_unix: NOW + 60,
    }
}

/// A bootstrapped cluster "c1" with member 1 and token "t" (2 uses, expires at NOW + 60).
fn state() -> ClusterState {
    let mut s = ClusterState::default();
    let bootstrap = Command::Bootstrap {
        cluster_id: "c1".into(),
        member: member(1),
        token: token("t", 2),
    };
    assert_eq!(apply(&mut s, &bootstrap), CommandResult::Applied);
    s
}

trait Given: Sized {
    fn with_member(self, id: u64) -> Self;
    fn with_tags(self, id: u64, tags: Tags) -> Self;
    fn with_lease(self, holder: u64, epoch: u64, seq: u64) -> Self;
    fn with_token(self, token: JoinToken) -> Self;
    fn with_switchover(self, from: u64, to: Option<u64>) -> Self;
}

impl Given for ClusterState {
    fn with_member(mut self, id: u64) -> Self {
        self.members.insert(NodeId(id), member(id));
        self.next_node_id = self.next_node_id.max(id + 1);
        self
    }
    fn with_tags(mut self, id: u64, tags: Tags) -> Self {
        self.members.get_mut(&NodeId(id)).unwrap().tags = tags;
        self
    }
    fn with_lease(mut self, holder: u64, epoch: u64, seq: u64) -> Self {
        self.lease = Some(lease(holder, epoch, seq));
        self.last_epoch = Epoch(epoch);
        self.last_holder = Some(NodeId(holder));
        self
    }
    fn with_token(mut self, token: JoinToken) -> Self {
        self.tokens.insert(token.id.clone(), token);
        self
    }
    fn with_switchover(mut self, from: u64, to: Option<u64>) -> Self {
        self.switchover = Some(switchover(from, to));
        self
    }
}

fn lease(holder: u64, epoch: u64, seq: u64) -> Lease {
    Lease {
        holder: NodeId(holder),
        epoch: Epoch(epoch),
        seq,
    }
}

fn at(epoch: u64, seq: u64) -> Option<LeaseRef> {
    Some(LeaseRef {
        epoch: Epoch(epoch),
        seq,
    })
}

fn switchover(from: u64, to: Option<u64>) -> Switchover {
    Switchover {
        from: NodeId(from),
        to: to.map(NodeId),
        at_unix_ms: None,
    }
}

fn register(name: &str) -> Command {
    Command::RegisterMember {
        token_id: "t".into(),
        secret_sha256: SECRET.into(),
        name: name.into(),
        peer_addr: "10.0.0.9:7400".into(),
        api_addr: "10.0.0.9:8008".into(),
        pg_addr: "10.0.0.9:5432".into(),
        tags: Tags::default(),
        now_unix: NOW,
    }
}

fn register_with(name: &str, edit: fn(&mut Command)) -> Command {
    let mut command = register(name);
    edit(&mut command);
    command
}

fn acquire(candidate: u64, expected: Option<LeaseRef>) -> Command {
    Command::AcquireLease {
        candidate: NodeId(candidate),
        expected,
    }
}

fn renew(holder: u64, epoch: u64) -> Command {
    Command::RenewLease {
        holder: NodeId(holder),
        epoch: Epoch(epoch),
    }
}

fn reserve(holder: u64, epoch: u64, at_least: u32) -> Command {
    Command::ReserveTimeline {
        holder: NodeId(holder),
        epoch: Epoch(epoch),
        at_least,
    }
}

/// Member 1's promotion from `timeline` to `new_timeline`.
fn switch(timeline: u32, new_timeline: u32) -> TimelineSwitch {
    TimelineSwitch {
        timeline,
        lsn: crate::postgres::Lsn(0x3000060),
        reason: "no recovery target specified".into(),
        at_unix_ms: 1_000,
        new_primary: NodeId(1),
        new_timeline,
    }
}

fn record_switch(holder: u64, epoch: u64, timeline: u32, new_timeline: u32) -> Command {
    Command::RecordTimelineSwitch {
        holder: NodeId(holder),
        epoch: Epoch(epoch),
        switch: TimelineSwitch {
            new_primary: NodeId(holder),
            ..switch(timeline, new_timeline)
        },
    }
}

/// Node 1 holds the lease in epoch 3; timeline `timeline` was reserved before.
fn reserved(timeline: u32) -> ClusterState {
    let mut s = state().with_lease(1, 3, 0);
    s.timeline = timeline;
    s
}

fn release(holder: u64, epoch: u64) -> Command {
    Command::ReleaseLease {
        holder: NodeId(holder),
        epoch: Epoch(epoch),
    }
}

fn granted(holder: u64, epoch: u64, seq: u64) -> CommandResult {
    CommandResult::Lease {
        lease: lease(holder, epoch, seq),
    }
}

fn rejected(rejection: Rejection) -> CommandResult {
    CommandResult::Rejected { rejection }
}

fn json(state: &ClusterState) -> String {
    serde_json::to_string(state).unwrap()
}

// ---- the table ---------------------------------------------------------------------------

struct Case {
    name: &'static str,
    given: ClusterState,
    command: Command,
    result: CommandResult,
    /// Turns `given` into the expected state; `unchanged` for rejections.
    change: fn(&mut ClusterState),
}

fn unchanged(_: &mut ClusterState) {}

fn cases() -> Vec<Case> {
    let nofailover = Tags {
        nofailover: true,
        ..Tags::default()
    };
    let registered = |s: &mut ClusterState| {
        let mut m = member(2);
        m.name = "db2".into();
        m.peer_addr = "10.0.0.9:7400".into();
        m.api_addr = "10.0.0.9:8008".into();
        m.pg_addr = "10.0.0.9:5432".into();
        s.members.insert(NodeId(2), m);
        s.next_node_id = 3;
        s.tokens.get_mut("t").unwrap().uses_left = 1;
    };
    vec![
        // -- bootstrap
        Case {
            name: "bootstrap sets cluster id, first member, next id and token",
            given: ClusterState::default(),
            command: Command::Bootstrap {
                cluster_id: "c1".into(),
                member: member(1),
                token: token("t", 2),
            },
            result: CommandResult::Applied,
            change: |s| *s = state(),
        },
        Case {
            name: "bootstrap of a bootstrapped cluster is rejected",
            given: state(),
            command: Command::Bootstrap {
                cluster_id: "c2".into(),
                member: member(5),
                token: token("u", 1),
            },
            result: rejected(Rejection::AlreadyBootstrapped {
                cluster_id: "c1".into(),
            }),
            change: unchanged,
        },
        Case {
            name: "bootstrap with an empty cluster id is rejected",
            given: ClusterState::default(),
            command: Command::Bootstrap {
                cluster_id: "".into(),
                member: member(1),
                token: token("t", 2),
            },
            result: rejected(Rejection::InvalidBootstrap(
                "cluster id is empty; give the cluster a non-empty id".into(),
            )),
            change: unchanged,
        },
        Case {
            name: "bootstrap with node id 0 is rejected",
            given: ClusterState::default(),
            command: Command::Bootstrap {
                cluster_id: "c1".into(),
                member: member(0),
                token: token("t", 2),
            },
            result: rejected(Rejection::InvalidBootstrap(
                "the first member has node id 0; node ids start at 1".into(),
            )),
            change: unchanged,
        },
        Case {
            name: "commands other than bootstrap are rejected before bootstrap",
            given: ClusterState::default(),
            command: Command::CreateToken {
                token: token("t", 1),
            },
            result: rejected(Rejection::NotBootstrapped),
            change: unchanged,
        },
        // -- tokens
        Case {
            name: "create token stores a new token",
            given: state(),
            command: Command::CreateToken {
                token: token("u", 5),
            },
            result: CommandResult::Applied,
            change: |s| {
                s.tokens.insert("u".into(), token("u", 5));
            },
        },
        Case {
            name: "create token replaces a token with the same id",
            given: state(),
            command: Command::CreateToken {
                token: token("t", 9),
            },
            result: CommandResult::Applied,
            change: |s| s.tokens.get_mut("t").unwrap().uses_left = 9,
        },
        // -- register
        Case {
            name: "register allocates next id and spends one use of the token",
            given: state(),
            command: register("db2"),
            result: CommandResult::MemberRegistered { id: NodeId(2) },
            change: registered,
        },
        Case {
            name: "register with an unknown token is rejected",
            given: state(),
            command: register_with("db2", |c| {
                if let Command::RegisterMember { token_id, .. } = c {
                    *token_id = "nope".into();
                }
            }),
            result: rejected(Rejection::TokenUnknown { id: "nope".into() }),
            change: unchanged,
        },
        Case {
            name: "register with a wrong secret is rejected before expiry is checked",
            given: state(),
            command: register_with("db2", |c| {
                if let Command::RegisterMember {
                    secret_sha256,
                    now_unix,
                    ..
                } = c
                {
                    *secret_sha256 = "00".into();
                    *now_unix = NOW + 3600;
                }
            }),
            result: rejected(Rejection::TokenSecretMismatch { id: "t".into() }),
            change: unchanged,
        },
        Case {
            name: "register at the expiry second is rejected",
            given: state(),
            command: register_with("db2", |c| {
                if let Command::RegisterMember { now_unix, .. } = c {
                    *now_unix = NOW + 60;
                }
            }),
            result: rejected(Rejection::TokenExpired {
                id: "t".into(),
                expires_at_unix: NOW + 60,
            }),
            change: unchanged,
        },
        Case {
            name: "register one second before expiry is accepted",
            given: state(),
            command: register_with("db2", |c| {
                if let Command::RegisterMember { now_unix, .. } = c {
                    *now_unix = NOW + 59;
                }
            }),
            result: CommandResult::MemberRegistered { id: NodeId(2) },
            change: registered,
        },
        Case {
            name: "register with a used-up token is rejected",
            given: state().with_token(token("t", 0)),
            command: register("db2"),
            result: rejected(Rejection::TokenUsedUp { id: "t".into() }),
            change: unchanged,
        },
        Case {
            name: "register with a name in use is rejected and spends no use",
            given: state(),
            command: register("node1"),
            result: rejected(Rejection::NameInUse {
                name: "node1".into(),
                id: NodeId(1),
            }),
            change: unchanged,
        },
        Case {
            name: "register after a removal gets a fresh id, not the removed one",
            given: {
                let mut s = state().with_member(2);
                s.members.remove(&NodeId(2));
                s
            },
            command: register("node2"),
            result: CommandResult::MemberRegistered { id: NodeId(3) },
            change: |s| {
                let mut m = member(3);
                m.name = "node2".into();
                m.peer_addr = "10.0.0.9:7400".into();
                m.api_addr = "10.0.0.9:8008".into();
                m.pg_addr = "10.0.0.9:5432".into();
                s.members.insert(NodeId(3), m);
                s.next_node_id = 4;
                s.tokens.get_mut("t").unwrap().uses_left = 1;
            },
        },
        // -- update and remove
        Case {
            name: "update member replaces addresses and tags",
            given: state().with_member(2),
            command: Command::UpdateMember {
                member: Member {
                    pg_addr: "db2:6432".into(),
                    tags: nofailover.clone(),
                    ..member(2)
                },
            },
            result: CommandResult::Applied,
            change: |s| {
                let m = s.members.get_mut(&NodeId(2)).unwrap();
                m.pg_addr = "db2:6432".into();
                m.tags.nofailover = true;
            },
        },
        Case {
            name: "update of an unknown member is rejected",
            given: state(),
            command: Command::UpdateMember { member: member(7) },
            result: rejected(Rejection::UnknownMember { id: NodeId(7) }),
            change: unchanged,
        },
        Case {
            name: "update that renames a member is rejected",
            given: state().with_member(2),
            command: Command::UpdateMember {
                member: Member {
                    name: "x".into(),
                    ..member(2)
                },
            },
            result: rejected(Rejection::UnknownMember { id: NodeId(2) }),
            change: unchanged,
        },
        Case {
            name: "remove member keeps next id",
            given: state().with_member(2),
            command: Command::RemoveMember { id: NodeId(2) },
            result: CommandResult::Applied,
            change: |s| {
                s.members.remove(&NodeId(2));
            },
        },
        Case {
            name: "remove of the lease holder frees the lease and keeps last epoch",
            given: state().with_member(2).with_lease(2, 4, 9),
            command: Command::RemoveMember { id: NodeId(2) },
            result: CommandResult::Applied,
            change: |s| {
                s.members.remove(&NodeId(2));
                s.lease = None;
            },
        },
        Case {
            name: "remove of a switchover target clears the switchover",
            given: state()
                .with_member(2)
                .with_lease(1, 1, 0)
                .with_switchover(1, Some(2)),
            command: Command::RemoveMember { id: NodeId(2) },
            result: CommandResult::Applied,
            change: |s| {
                s.members.remove(&NodeId(2));
                s.switchover = None;
            },
        },
        Case {
            name: "remove of an unknown member is rejected",
            given: state(),
            command: Command::RemoveMember { id: NodeId(9) },
            result: rejected(Rejection::UnknownMember { id: NodeId(9) }),
            change: unchanged,
        },
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
    ]
}

#[test]
fn apply_follows_the_rules_in_the_table() {
    let cases = cases();
    assert!(
        cases.len() >= 40,
        "the table shrank to {} cases",
        cases.len()
    );
    for case in cases {
        let before = json(&case.given);
        let mut expected = case.given.clone();
        (case.change)(&mut expected);
        let mut actual = case.given;
        let result = apply(&mut actual, &case.command);
        assert_eq!(result, case.result, "case {:?}: result", case.name);
        assert_eq!(actual, expected, "case {:?}: state", case.name);
        if result.is_rejected() {
            assert_eq!(
                json(&actual),
                before,
                "case {:?}: rejection changed state",
                case.name
            );
        }
    }
}

// ---- properties over sequences -----------------------------------------------------------

#[test]
fn node_ids_are_never_reused_after_removal() {
    let mut s = state().with_token(token("t", 10));
    let mut seen = vec![NodeId(1)];
    for round in 0..4 {
        let name = format!("db{round}");
        let CommandResult::MemberRegistered { id } = apply(&mut s, &register(&name)) else {
            panic!("round {round}: registration of {name} was refused");
        };
        assert!(!seen.contains(&id), "id {id} was handed out twice");
        seen.push(id);
        assert_eq!(
            apply(&mut s, &Command::RemoveMember { id }),
            CommandResult::Applied
        );
    }
    assert_eq!(seen, [1, 2, 3, 4, 5].map(NodeId));
}

#[test]
fn epoch_strictly_increases_across_acquire_release_and_takeover() {
    let mut s = state().with_member(2).with_member(3);
    let mut epochs = Vec::new();
    let mut grant = |s: &mut ClusterState, command: Command| match apply(s, &command) {
        CommandResult::Lease { lease } => epochs.push(lease.epoch),
        other => panic!("{command:?} was not granted: {other:?}"),
    };
    grant(&mut s, acquire(1, None));
    assert!(!apply(&mut s, &renew(1, 1)).is_rejected());
    grant(&mut s, acquire(2, at(1, 1))); // takeover after ttl without renewal
    assert!(
        apply(&mut s, &renew(1, 1)).is_rejected(),
        "the old holder is fenced"
    );
    assert_eq!(apply(&mut s, &release(2, 2)), CommandResult::Applied);
    grant(&mut s, acquire(2, None)); // same node again after a release
    assert!(!apply(&mut s, &Command::RemoveMember { id: NodeId(2) }).is_rejected());
    grant(&mut s, acquire(3, None)); // holder removed
    grant(&mut s, acquire(3, at(4, 0))); // same holder re-acquires
    assert_eq!(epochs, [1, 2, 3, 4, 5].map(Epoch));
    assert_eq!(s.last_epoch, Epoch(5));
}

/// A small deterministic generator, so the sequence is "random" but reproducible.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn arbitrary_command(rng: &mut Lcg, s: &ClusterState) -> Command {
    // Mostly current members, sometimes removed or never-allocated ids.
    let ids: Vec<u64> = s.members.keys().map(|id| id.0).collect();
    let mut node = || match rng.below(5) {
        0 => rng.below(s.next_node_id + 1),
        _ if ids.is_empty() => 1,
        _ => ids[rng.below(ids.len() as u64) as usize],
    };
    let (a, b) = (node(), node());
    let current = s.lease.map(|l| l.as_ref_point());
    match rng.below(20) {
        0 => Command::RemoveMember { id: NodeId(a) },
        1..=2 => register(&format!("db{}", rng.below(8))),
        3 => Command::CreateToken {
            token: token("t", rng.below(3) as u32),
        },
        4..=8 => acquire(a, if rng.below(3) == 0 { None } else { current }),
        9..=13 => renew(a, s.last_epoch.0 - rng.below(2).min(s.last_epoch.0)),
        14..=15 => release(a, s.last_epoch.0),
        16..=17 => Command::RequestSwitchover {
            switchover: switchover(a, Some(b).filter(|_| rng.below(2) == 0)),
        },
        _ => Command::ClearSwitchover,
    }
}

#[test]
fn apply_is_deterministic_and_keeps_invariants_over_a_long_sequence() {
    let mut rng = Lcg(42);
    let start = || state().with_member(2).with_member(3);
    let (mut a, mut b) = (start(), start());
    let (mut grants, mut registrations) = (0, 0);
    let mut last_granted = Epoch(0);
    for step in 0..2_000 {
        let command = arbitrary_command(&mut rng, &a);
        let before = json(&a);
        let result = apply(&mut a, &command);
        assert_eq!(apply(&mut b, &command), result, "step {step}: {command:?}");
        assert_eq!(
            json(&a),
            json(&b),
            "step {step}: states diverged after {command:?}"
        );
        if result.is_rejected() {
            assert_eq!(
                json(&a),
                before,
                "step {step}: rejected {command:?} changed state"
            );
        }
        if let Some(lease) = a.lease {
            assert!(
                a.member(lease.holder).is_some(),
                "step {step}: holder is not a member"
            );
            assert_eq!(lease.epoch, a.last_epoch, "step {step}");
        }
        registrations += matches!(result, CommandResult::MemberRegistered { .. }) as u32;
        if let CommandResult::Lease { lease } = result {
            if lease.seq == 0 {
                grants += 1;
                assert!(
                    lease.epoch > last_granted,
                    "step {step}: epoch did not grow"
                );
                last_granted = lease.epoch;
            }
        }
        assert!(
            a.members.keys().all(|id| id.0 < a.next_node_id),
            "step {step}"
        );
    }
    assert!(
        grants > 50 && registrations > 5,
        "sequence too tame: {grants} grants, {registrations} registrations"
    );
}

// ---- helpers on the state and the wire format --------------------------------------------

#[test]
fn state_helpers_answer_from_the_state() {
    let s = state().with_member(2).with_lease(2, 1, 0);
    assert!(s.is_bootstrapped() && !ClusterState::default().is_bootstrapped());
    assert_eq!(s.member(NodeId(2)), Some(&member(2)));
    assert_eq!(s.member_by_name("node1").map(|m| m.id), Some(NodeId(1)));
    assert_eq!(s.member_by_name("nobody"), None);
    assert_eq!(s.lease_holder(), Some(NodeId(2)));
    assert_eq!(ClusterState::default().next_node_id, 1);
}

#[test]
fn state_and_commands_round_trip_through_json() {
    let s = state()
        .with_member(2)
        .with_lease(2, 3, 4)
        .with_switchover(2, Some(1));
    assert_eq!(serde_json::from_str::<ClusterState>(&json(&s)).unwrap(), s);
    let command: Command = serde_json::from_str(
        r#"{"type":"acquire_lease","candidate":2,"expected":{"epoch":3,"seq":4}}"#,
    )
    .unwrap();
    assert_eq!(command, acquire(2, at(3, 4)));
    let result = rejected(Rejection::InvalidConfig("x".into()));
    let text = serde_json::to_string(&result).unwrap();
    assert_eq!(
        serde_json::from_str::<CommandResult>(&text).unwrap(),
        result
    );
    let tags: Tags = serde_json::from_str("{}").unwrap();
    assert_eq!(tags.failover_priority, 1);
}

#[test]
fn rejections_say_what_and_how_to_fix() {
    let cases = [
        (
            Rejection::LeaseHeld {
                lease: lease(2, 3, 4),
            },
            "lease is held by node 2 (epoch 3, renewal 4)",
        ),
        (
            Rejection::TokenUsedUp { id: "t".into() },
            "join token t has no uses left; create a new one with `pgquorum token create`",
        ),
        (
            Rejection::TokenSecretMismatch { id: "t".into() },
            "join token secret does not match; check the token",
        ),
        (
            Rejection::NameInUse {
                name: "db1".into(),
                id: NodeId(1),
            },
            "member name db1 is already used by node 1; remove it first with \
             `pgquorum node remove db1` or choose another name",
        ),
        (
            Rejection::LeaseNotHeld { current: None },
            "lease is not held by that node in that epoch (it is free); see `pgquorum list` for \
             the current primary",
        ),
    ];
    for (rejection, message) in cases {
        assert_eq!(rejection.to_string(), message);
    }
}

// ---- dynamic configuration ---------------------------------------------------------------

#[test]
fn dynamic_config_reads_humantime_strings_and_defaults_the_rest() {
    let config: DynamicConfig = serde_json::from_str(
        r#"{"ttl":"30s","loop_wait":"10s","synchronous_mode":"quorum",
            "postgresql_parameters":{"work_mem":"64MB"}}"#,
    )
    .unwrap();
    assert_eq!(config.ttl, Duration::from_secs(30));
    assert_eq!(config.loop_wait, Duration::from_secs(10));
    assert_eq!(config.retry_timeout, Duration::from_secs(1));
    assert_eq!(config.synchronous_mode, SynchronousMode::Quorum);
    assert_eq!(config.maximum_lag_on_failover, 1_048_576);
    let text = serde_json::to_string(&config).unwrap();
    assert!(text.contains(r#""ttl":"30s""#), "{text}");
    assert_eq!(
        serde_json::from_str::<DynamicConfig>(&text).unwrap(),
        config
    );
    assert_eq!(
        serde_json::from_str::<DynamicConfig>("{}").unwrap(),
        DynamicConfig::default()
    );
    assert!(serde_json::from_str::<DynamicConfig>(r#"{"tll":"2s"}"#).is_err());
    assert_eq!(DynamicConfig::default().validate(), Ok(()));
}

#[test]
fn dynamic_config_validation_names_the_key_and_the_fix() {
    fn config(edit: fn(&mut DynamicConfig)) -> DynamicConfig {
        let mut config = DynamicConfig::default();
        edit(&mut config);
        config
    }
    fn param(name: &str) -> DynamicConfig {
        let mut config = DynamicConfig::default();
        config.postgresql_parameters.insert(name.into(), "1".into());
        config
    }
    let ms = Duration::from_millis;
    let cases = [
        (
            config(|c| c.ttl = Duration::from_millis(900)),
            "ttl (900ms) must be at least 1s",
        ),
        (
            config(|c| c.loop_wait = Duration::from_millis(50)),
            "loop_wait (50ms) must be at least",
        ),
        (
            config(|c| c.loop_wait = Duration::from_millis(700)),
            "loop_wait (700ms) must be at most",
        ),
        (
            config(|c| c.retry_timeout = Duration::from_secs(2)),
            "retry_timeout (2s) must be less",
        ),
        (
            config(|c| c.member_timeout = Duration::from_millis(2500)),
            "member_timeout (2s 500ms) must be less",
        ),
        (
            param(""),
            "postgresql_parameters key \"\" is not a parameter name",
        ),
        (
            param("Work_Mem"),
            "postgresql_parameters key \"Work_Mem\" is not a parameter name",
        ),
    ];
    for (config, prefix) in cases {
        let message = config.validate().unwrap_err();
        assert!(
            message.starts_with(prefix),
            "{message:?} should start with {prefix:?}"
        );
    }
    assert_eq!(param("auto_explain.log_min_duration").validate(), Ok(()));
    let edge = DynamicConfig {
        ttl: ms(1500),
        loop_wait: ms(500),
        ..Default::default()
    };
    assert_eq!(
        edge.validate(),
        Ok(()),
        "loop_wait of exactly a third of ttl is allowed"
    );
}
