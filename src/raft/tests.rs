//! Pure membership logic.

use std::collections::{BTreeMap, BTreeSet};

use super::{MembershipRole, NodeId, RaftNode};

type Membership = openraft::Membership<NodeId, RaftNode>;

/// Voter sets, joint when more than one.
type Configs<'a> = &'a [&'a [NodeId]];

/// A membership of `configs` (voter sets, joint when more than one) and nodes `1..=nodes`.
fn membership(configs: Configs, nodes: NodeId) -> Membership {
    let configs: Vec<BTreeSet<NodeId>> = configs
        .iter()
        .map(|c| c.iter().copied().collect())
        .collect();
    let nodes: BTreeMap<NodeId, RaftNode> =
        (1..=nodes).map(|id| (id, RaftNode::default())).collect();
    Membership::new(configs, nodes)
}

#[test]
fn a_member_votes_only_when_every_configuration_has_it() {
    use MembershipRole::*;
    let uniform: Configs = &[&[1, 2, 3]];
    let adding_4: Configs = &[&[1, 2, 3], &[1, 2, 3, 4]];
    let removing_3: Configs = &[&[1, 2, 3], &[1, 2]];
    let replacing: Configs = &[&[1, 2, 3], &[2, 3, 4]];
    #[rustfmt::skip]
    let cases: &[(&str, Configs, NodeId, NodeId, MembershipRole)] = &[
        // case                                  configs     nodes id  role
        ("uniform voter",                        uniform,    4,    1,  Voter),
        ("uniform learner",                      uniform,    4,    4,  Learner),
        ("not in raft at all",                   uniform,    4,    7,  Registered),
        ("old voter while adding",               adding_4,   4,    1,  Voter),
        ("added, second step not committed",     adding_4,   4,    4,  Joining),
        ("kept voter while removing",            removing_3, 3,    2,  Voter),
        ("removed, second step not committed",   removing_3, 3,    3,  Leaving),
        ("replaced out",                         replacing,  4,    1,  Leaving),
        ("replaced in",                          replacing,  4,    4,  Joining),
        ("in both of a replacement",             replacing,  4,    2,  Voter),
    ];
    for (case, configs, nodes, id, want) in cases {
        let got = MembershipRole::of(&membership(configs, *nodes), *id);
        assert_eq!(got, *want, "{case}: n{id} in {configs:?}");
    }
}
