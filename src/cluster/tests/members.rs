//! `apply` cases: bootstrap, join tokens, registration, updating and removing members.

use super::*;

/// What registering "db2" (with [`register`]'s addresses) does to [`state`].
fn registered(s: &mut ClusterState) {
    let mut m = member(2);
    m.name = "db2".into();
    m.peer_addr = "10.0.0.9:7400".into();
    m.api_addr = "10.0.0.9:8008".into();
    m.pg_addr = "10.0.0.9:5432".into();
    s.members.insert(NodeId(2), m);
    s.next_node_id = 3;
    s.tokens.get_mut("t").unwrap().uses_left = 1;
}

pub(super) fn cases() -> Vec<Case> {
    let nofailover = Tags {
        nofailover: true,
        ..Tags::default()
    };
    vec![
        // -- bootstrap
        Case {
            name: "bootstrap sets cluster id, first member, next id and token",
            given: ClusterState::default(),
            command: Command::Bootstrap {
                key_sha256: None,
                cluster_id: "c1".into(),
                member: member(1),
                token: token("t", 2),
            },
            result: CommandResult::Applied,
            change: |s| *s = state(),
        },
        Case {
            name: "bootstrap records the first member's key pin",
            given: ClusterState::default(),
            command: Command::Bootstrap {
                key_sha256: Some("k1".into()),
                cluster_id: "c1".into(),
                member: member(1),
                token: token("t", 2),
            },
            result: CommandResult::Applied,
            change: |s| {
                *s = state();
                s.keys.insert(NodeId(1), "k1".into());
            },
        },
        Case {
            name: "bootstrap of a bootstrapped cluster is rejected",
            given: state(),
            command: Command::Bootstrap {
                key_sha256: None,
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
                key_sha256: None,
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
                key_sha256: None,
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
            result: rejected(Rejection::TokenRefused { id: "nope".into() }),
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
            result: rejected(Rejection::TokenRefused { id: "t".into() }),
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
        // -- token revocation
        Case {
            name: "revoke deletes the token",
            given: state(),
            command: Command::RevokeToken { id: "t".into() },
            result: CommandResult::Applied,
            change: |s| {
                s.tokens.remove("t");
            },
        },
        Case {
            name: "revoke of an unknown token is rejected",
            given: state(),
            command: Command::RevokeToken { id: "nope".into() },
            result: rejected(Rejection::UnknownToken { id: "nope".into() }),
            change: unchanged,
        },
        // -- key pins
        Case {
            name: "register with a key pin records it for the new id",
            given: state(),
            command: register_with("db2", |c| {
                if let Command::RegisterMember { key_sha256, .. } = c {
                    *key_sha256 = Some("k2".into());
                }
            }),
            result: CommandResult::MemberRegistered { id: NodeId(2) },
            change: |s| {
                registered(s);
                s.keys.insert(NodeId(2), "k2".into());
            },
        },
        Case {
            name: "a refused registration records no pin",
            given: state(),
            command: register_with("node1", |c| {
                if let Command::RegisterMember { key_sha256, .. } = c {
                    *key_sha256 = Some("k2".into());
                }
            }),
            result: rejected(Rejection::NameInUse {
                name: "node1".into(),
                id: NodeId(1),
            }),
            change: unchanged,
        },
        Case {
            name: "pin a member without one",
            given: state().with_member(2),
            command: Command::PinKey {
                id: NodeId(2),
                key_sha256: "k2".into(),
            },
            result: CommandResult::Applied,
            change: |s| {
                s.keys.insert(NodeId(2), "k2".into());
            },
        },
        Case {
            name: "pinning the recorded key again changes nothing",
            given: state().with_member(2).with_key(2, "k2"),
            command: Command::PinKey {
                id: NodeId(2),
                key_sha256: "k2".into(),
            },
            result: CommandResult::Applied,
            change: unchanged,
        },
        Case {
            name: "a recorded pin is never replaced by PinKey",
            given: state().with_member(2).with_key(2, "k2"),
            command: Command::PinKey {
                id: NodeId(2),
                key_sha256: "minted".into(),
            },
            result: rejected(Rejection::KeyAlreadyPinned { id: NodeId(2) }),
            change: unchanged,
        },
        Case {
            name: "pin of an unknown member is rejected",
            given: state(),
            command: Command::PinKey {
                id: NodeId(7),
                key_sha256: "k7".into(),
            },
            result: rejected(Rejection::UnknownMember { id: NodeId(7) }),
            change: unchanged,
        },
        Case {
            name: "a rotation accepts the new key beside the pin",
            given: state().with_member(2).with_key(2, "k2"),
            command: Command::BeginKeyRotation {
                id: NodeId(2),
                key_sha256: "k2b".into(),
            },
            result: CommandResult::Applied,
            change: |s| {
                s.next_keys.insert(NodeId(2), "k2b".into());
            },
        },
        Case {
            name: "a rotation of an unknown member is rejected",
            given: state(),
            command: Command::BeginKeyRotation {
                id: NodeId(7),
                key_sha256: "k7".into(),
            },
            result: rejected(Rejection::UnknownMember { id: NodeId(7) }),
            change: unchanged,
        },
        Case {
            name: "adopting the rotated key replaces the pin",
            given: state()
                .with_member(2)
                .with_key(2, "k2")
                .with_next_key(2, "k2b"),
            command: Command::EndKeyRotation {
                id: NodeId(2),
                key_sha256: "k2b".into(),
                adopt: true,
            },
            result: CommandResult::Applied,
            change: |s| {
                s.next_keys.clear();
                s.keys.insert(NodeId(2), "k2b".into());
            },
        },
        Case {
            name: "dropping the rotated key keeps the pin",
            given: state()
                .with_member(2)
                .with_key(2, "k2")
                .with_next_key(2, "k2b"),
            command: Command::EndKeyRotation {
                id: NodeId(2),
                key_sha256: "k2b".into(),
                adopt: false,
            },
            result: CommandResult::Applied,
            change: |s| {
                s.next_keys.clear();
            },
        },
        Case {
            name: "ending a rotation to another key is rejected",
            given: state()
                .with_member(2)
                .with_key(2, "k2")
                .with_next_key(2, "k2b"),
            command: Command::EndKeyRotation {
                id: NodeId(2),
                key_sha256: "minted".into(),
                adopt: true,
            },
            result: rejected(Rejection::NoKeyRotation { id: NodeId(2) }),
            change: unchanged,
        },
        Case {
            name: "removing a member also drops its key in rotation",
            given: state()
                .with_member(2)
                .with_key(2, "k2")
                .with_next_key(2, "k2b"),
            command: Command::RemoveMember { id: NodeId(2) },
            result: CommandResult::Applied,
            change: |s| {
                s.members.remove(&NodeId(2));
                s.keys.remove(&NodeId(2));
                s.next_keys.clear();
            },
        },
        Case {
            name: "remove member drops its pin, which revokes its certificate",
            given: state().with_member(2).with_key(2, "k2"),
            command: Command::RemoveMember { id: NodeId(2) },
            result: CommandResult::Applied,
            change: |s| {
                s.members.remove(&NodeId(2));
                s.keys.remove(&NodeId(2));
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
    ]
}
