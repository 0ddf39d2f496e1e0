//! `apply` of a CA rotation: begin, each member moving, finish; and what it refuses meanwhile.

use super::*;

fn ca(sha256: &str) -> CaRecord {
    CaRecord {
        sha256: sha256.into(),
        cert_pem: format!("cert of {sha256}"),
        key_pem: format!("key of {sha256}"),
    }
}

/// Members 1 and 2, rotating to CA "n"; `moved` have moved.
fn rotating(moved: &[u64]) -> ClusterState {
    let mut s = state().with_member(2);
    s.ca_rotation = Some(CaRotation {
        next: ca("n"),
        moved: moved.iter().map(|&id| NodeId(id)).collect(),
    });
    s
}

fn in_progress() -> CommandResult {
    rejected(Rejection::CaRotationInProgress {
        next_sha256: "n".into(),
    })
}

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "a CA rotation starts with nobody moved",
            given: state().with_member(2),
            command: Command::BeginCaRotation { next: ca("n") },
            result: CommandResult::Applied,
            change: |s| {
                s.ca_rotation = Some(CaRotation {
                    next: ca("n"),
                    moved: Default::default(),
                });
            },
        },
        Case {
            name: "starting the same CA rotation again changes nothing",
            given: rotating(&[1]),
            command: Command::BeginCaRotation { next: ca("n") },
            result: CommandResult::Applied,
            change: unchanged,
        },
        Case {
            name: "a second CA rotation waits for the first",
            given: rotating(&[]),
            command: Command::BeginCaRotation { next: ca("other") },
            result: in_progress(),
            change: unchanged,
        },
        Case {
            name: "a member moves to the next CA",
            given: rotating(&[1]),
            command: Command::CaMoved {
                id: NodeId(2),
                ca_sha256: "n".into(),
            },
            result: CommandResult::Applied,
            change: |s| {
                s.ca_rotation.as_mut().unwrap().moved.insert(NodeId(2));
            },
        },
        Case {
            name: "moving to another CA than the next is rejected",
            given: rotating(&[]),
            command: Command::CaMoved {
                id: NodeId(2),
                ca_sha256: "stale".into(),
            },
            result: rejected(Rejection::NoCaRotation),
            change: unchanged,
        },
        Case {
            name: "moving with no rotation is rejected",
            given: state().with_member(2),
            command: Command::CaMoved {
                id: NodeId(2),
                ca_sha256: "n".into(),
            },
            result: rejected(Rejection::NoCaRotation),
            change: unchanged,
        },
        Case {
            name: "finishing before every member moved is rejected, naming who has not",
            given: rotating(&[1]),
            command: Command::FinishCaRotation {
                ca_sha256: "n".into(),
            },
            result: rejected(Rejection::CaRotationUnfinished {
                waiting: vec![NodeId(2)],
            }),
            change: unchanged,
        },
        Case {
            name: "finishing makes the next CA the CA and drops the join tokens",
            given: rotating(&[1, 2]),
            command: Command::FinishCaRotation {
                ca_sha256: "n".into(),
            },
            result: CommandResult::Applied,
            change: |s| {
                s.ca = Some(ca("n"));
                s.ca_rotation = None;
                s.tokens.clear();
            },
        },
        Case {
            name: "finishing a rotation to another CA is rejected",
            given: rotating(&[1, 2]),
            command: Command::FinishCaRotation {
                ca_sha256: "other".into(),
            },
            result: rejected(Rejection::NoCaRotation),
            change: unchanged,
        },
        Case {
            name: "a removed member no longer holds the rotation up",
            given: rotating(&[1, 2]),
            command: Command::RemoveMember { id: NodeId(2) },
            result: CommandResult::Applied,
            change: |s| {
                s.members.remove(&NodeId(2));
                s.ca_rotation.as_mut().unwrap().moved.remove(&NodeId(2));
            },
        },
        Case {
            name: "no join token is created during a CA rotation",
            given: rotating(&[]),
            command: Command::CreateToken {
                token: token("t2", 1),
            },
            result: in_progress(),
            change: unchanged,
        },
        Case {
            name: "no member joins during a CA rotation",
            given: rotating(&[]),
            command: register("node9"),
            result: in_progress(),
            change: unchanged,
        },
        Case {
            name: "a wrong token learns nothing of a CA rotation",
            given: rotating(&[]),
            command: register_with("node9", |c| {
                if let Command::RegisterMember { secret_sha256, .. } = c {
                    *secret_sha256 = "wrong".into();
                }
            }),
            result: rejected(Rejection::TokenRefused { id: "t".into() }),
            change: unchanged,
        },
    ]
}
