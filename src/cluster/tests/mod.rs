//! Behaviour of `apply` as a table of cases (openraft engine-test style), one file per kind
//! of command, plus properties that span several commands ([`sequences`]: ids are never
//! reused, epochs only grow, apply is deterministic) and the wire format ([`wire`]).

use std::time::Duration;

use super::*;

mod admin;
mod backup;
mod ca;
mod lease;
mod members;
mod sequences;
mod wire;

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
        key_sha256: None,
        cluster_id: "c1".into(),
        member: member(1),
        token: token("t", 2),
    };
    assert_eq!(apply(&mut s, &bootstrap), CommandResult::Applied);
    s
}

trait Given: Sized {
    fn with_member(self, id: u64) -> Self;
    /// A member without PostgreSQL.
    fn with_witness(self, id: u64) -> Self;
    fn with_tags(self, id: u64, tags: Tags) -> Self;
    fn with_lease(self, holder: u64, epoch: u64, seq: u64) -> Self;
    fn with_token(self, token: JoinToken) -> Self;
    fn with_switchover(self, from: u64, to: Option<u64>) -> Self;
    fn with_key(self, id: u64, pin: &str) -> Self;
    fn with_next_key(self, id: u64, pin: &str) -> Self;
}

impl Given for ClusterState {
    fn with_member(mut self, id: u64) -> Self {
        self.members.insert(NodeId(id), member(id));
        self.next_node_id = self.next_node_id.max(id + 1);
        self
    }
    fn with_witness(self, id: u64) -> Self {
        let mut s = self.with_member(id);
        s.members.get_mut(&NodeId(id)).unwrap().pg_addr.clear();
        s
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
    fn with_key(mut self, id: u64, pin: &str) -> Self {
        self.keys.insert(NodeId(id), pin.into());
        self
    }
    fn with_next_key(mut self, id: u64, pin: &str) -> Self {
        self.next_keys.insert(NodeId(id), pin.into());
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
        key_sha256: None,
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
#[test]
fn apply_follows_the_rules_in_the_table() {
    let cases: Vec<Case> = [
        members::cases(),
        lease::cases(),
        admin::cases(),
        ca::cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
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
