//! A running cluster of `Node`s formed the way an operator does it: `init` on the first,
//! `node join` + `run` on the others.

use std::time::Duration;

use serde_json::Value;

use super::node::{assert_success, test_name, Node};
use super::wait::eventually;

/// How long forming the cluster, one member at a time, may take.
pub const FORMATION: Duration = Duration::from_secs(20);
/// How long an election may take.
pub const ELECTION: Duration = Duration::from_secs(10);

pub struct TestCluster {
    test: String,
    nodes: Vec<Node>,
    /// The token printed by `init`, valid for `n - 1` joins (all used by `start`).
    init_token: String,
    /// Whether new nodes supervise a PostgreSQL.
    postgres: bool,
    /// `(namespace, address)` of each host when members run on `netns::Hosts`.
    hosts: Vec<(String, String)>,
    /// The `[raft] profile` of every member (`lan` unless asked otherwise).
    profile: String,
    /// More `[raft]` settings of every member (TOML lines), empty unless asked.
    raft: String,
}

impl TestCluster {
    /// `n` members `n1..n<n>`: `init --token-uses <n-1>` and run on `n1`, wait until it
    /// leads, then join and run each other one and wait until every running member sees all
    /// of them as voters under one leader.
    pub fn start(n: usize) -> TestCluster {
        Self::start_opts(n, false)
    }

    /// Like [`TestCluster::start`], with `raft` (TOML lines, e.g. `snapshot_every = 100`) in
    /// every member's `[raft]` table.
    pub fn start_with_raft(n: usize, raft: &str) -> TestCluster {
        Self::start_full_on(n, false, &[], "", Vec::new(), "lan", raft)
    }

    /// Like [`TestCluster::start`], each member supervising its own PostgreSQL.
    pub fn start_with_postgres(n: usize) -> TestCluster {
        Self::start_opts(n, true)
    }

    /// Like [`TestCluster::start_with_postgres`], with `extra` config appended on the
    /// members whose 1-based index is in `tagged` (e.g. a `[tags]` section).
    pub fn start_with_postgres_tagged(n: usize, tagged: &[usize], extra: &str) -> TestCluster {
        Self::start_full(n, true, tagged, extra)
    }

    /// One member on each of `hosts` (network namespaces), each supervising PostgreSQL.
    pub fn start_on_hosts(hosts: &super::netns::Hosts) -> TestCluster {
        Self::start_on_hosts_tagged(hosts, &[], "")
    }

    /// Like [`TestCluster::start_on_hosts`], with `extra` config (e.g. a `[vip]` section)
    /// appended on every member.
    pub fn start_on_hosts_with(hosts: &super::netns::Hosts, extra: &str) -> TestCluster {
        let all: Vec<usize> = (1..=hosts.len()).collect();
        Self::start_on_hosts_tagged(hosts, &all, extra)
    }

    /// Like [`TestCluster::start_on_hosts_with`], every member with `[raft] profile =
    /// <profile>` (`lan` or `wan`).
    pub fn start_on_hosts_with_profile(
        hosts: &super::netns::Hosts,
        extra: &str,
        profile: &str,
    ) -> TestCluster {
        let all: Vec<usize> = (1..=hosts.len()).collect();
        let hosts: Vec<(String, String)> = (1..=hosts.len())
            .map(|i| (hosts.netns(i), hosts.ip(i)))
            .collect();
        Self::start_full_on(hosts.len(), true, &all, extra, hosts, profile, "")
    }

    fn start_on_hosts_tagged(
        hosts: &super::netns::Hosts,
        tagged: &[usize],
        extra: &str,
    ) -> TestCluster {
        let hosts: Vec<(String, String)> = (1..=hosts.len())
            .map(|i| (hosts.netns(i), hosts.ip(i)))
            .collect();
        Self::start_full_on(hosts.len(), true, tagged, extra, hosts, "lan", "")
    }

    fn start_opts(n: usize, postgres: bool) -> TestCluster {
        Self::start_full(n, postgres, &[], "")
    }

    fn start_full(n: usize, postgres: bool, tagged: &[usize], extra: &str) -> TestCluster {
        Self::start_full_on(n, postgres, tagged, extra, Vec::new(), "lan", "")
    }

    fn start_full_on(
        n: usize,
        postgres: bool,
        tagged: &[usize],
        extra: &str,
        hosts: Vec<(String, String)>,
        profile: &str,
        raft: &str,
    ) -> TestCluster {
        assert!(n >= 1);
        let test = test_name();
        let mut first = match hosts.first() {
            Some((ns, ip)) => Node::on_host(&test, "n1", ns, ip),
            None => Node::new(&test, "n1"),
        };
        if postgres {
            first = first.with_postgres();
        }
        first.set_profile(profile);
        first.add_raft_settings(raft);
        if tagged.contains(&1) {
            first.append_config(extra);
        }
        let uses = (n - 1).max(1).to_string();
        let init_token = first.init(&["--token-uses", &uses]);
        first.start();
        eventually(
            FORMATION,
            "n1 leads a bootstrapped one-member cluster",
            || {
                let view = first.cluster_view()?;
                match (view["raft_state"].as_str(), view["members"].as_array()) {
                    (Some("Leader"), Some(members)) if members.len() == 1 => Ok(()),
                    _ => Err(view.to_string()),
                }
            },
        );
        let mut cluster = TestCluster {
            test,
            nodes: vec![first],
            init_token,
            postgres,
            hosts,
            profile: profile.to_string(),
            raft: raft.to_string(),
        };
        for i in 2..=n {
            let mut node = cluster.new_node(&format!("n{i}"));
            if tagged.contains(&i) {
                node.append_config(extra);
            }
            let output = node.join(&cluster.nodes[0].peer_addr(), &cluster.init_token);
            assert_success(&output, &format!("join of n{i}"));
            node.start();
            cluster.nodes.push(node);
            cluster.wait_converged(FORMATION, &format!("n{i} is a voter"));
        }
        cluster
    }

    /// A node of this test that is not (yet) a member: for refused joins.
    pub fn new_node(&self, name: &str) -> Node {
        let index = self.nodes.len();
        let node = match self.hosts.get(index) {
            Some((ns, ip)) => Node::on_host(&self.test, name, ns, ip),
            None => Node::new(&self.test, name),
        };
        let node = if self.postgres {
            node.with_postgres()
        } else {
            node
        };
        node.set_profile(&self.profile);
        node.add_raft_settings(&self.raft);
        node
    }

    /// Makes `node` (from [`Self::new_node`], joined) member `len() + 1` of this cluster.
    pub fn add(&mut self, node: Node) {
        self.nodes.push(node);
    }

    /// Member `i`, 1-based (`node(1)` is `n1`).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i - 1]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i - 1]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Indices of the members whose daemon runs.
    pub fn running(&self) -> Vec<usize> {
        (1..=self.nodes.len())
            .filter(|&i| self.node(i).is_running())
            .collect()
    }

    pub fn init_token(&self) -> &str {
        &self.init_token
    }

    /// Waits until every running member reports all members as voters, exactly one of them
    /// the leader, the same leader and term everywhere, and the leader itself in state
    /// `Leader`. Returns the leader's view.
    pub fn wait_converged(&self, deadline: Duration, what: &str) -> Value {
        eventually(deadline, what, || self.converged())
    }

    /// One check of [`Self::wait_converged`]; `Err` says what is not there yet.
    pub fn converged(&self) -> Result<Value, String> {
        let mut views = Vec::new();
        for i in self.running() {
            views.push((i, self.node(i).cluster_view()?));
        }
        let mut leader: Option<(u64, u64)> = None;
        let mut leader_view = None;
        for (i, view) in &views {
            let members = view["members"].as_array().ok_or("no members")?;
            let roles: Vec<&str> = members
                .iter()
                .map(|m| m["raft_role"].as_str().unwrap_or("?"))
                .collect();
            let leaders = roles.iter().filter(|r| **r == "leader").count();
            if members.len() != self.nodes.len()
                || leaders != 1
                || roles.iter().any(|r| *r != "leader" && *r != "voter")
            {
                return Err(format!("n{i} sees roles {roles:?}: {view}"));
            }
            let here = (
                view["leader"].as_u64().ok_or(format!("n{i}: no leader"))?,
                view["term"].as_u64().unwrap_or(0),
            );
            if leader.is_some_and(|l| l != here) {
                return Err(format!(
                    "members disagree on (leader, term): {leader:?} vs n{i} {here:?}"
                ));
            }
            leader = Some(here);
            if view["raft_state"] == "Leader" {
                leader_view = Some(view.clone());
            }
        }
        leader_view.ok_or_else(|| format!("no running member is in state Leader: {views:?}"))
    }

    /// The index of the member with Raft id `id`, by its name in `view`.
    pub fn index_of_id(&self, view: &Value, id: u64) -> usize {
        let name = view["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["id"] == id))
            .and_then(|m| m["name"].as_str())
            .unwrap_or_else(|| panic!("no member with id {id} in {view}"));
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .map(|p| p + 1)
            .unwrap_or_else(|| panic!("member {name} is not a node of this test"))
    }

    /// Raft id of member `i`, from `view`.
    pub fn id_of(&self, view: &Value, i: usize) -> u64 {
        let name = &self.node(i).name;
        view["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == name.as_str()))
            .and_then(|m| m["id"].as_u64())
            .unwrap_or_else(|| panic!("no member named {name} in {view}"))
    }

    /// The name of the member with Raft id `id` in `view`, or `id <id>`.
    pub fn name_of(&self, view: &Value, id: u64) -> String {
        view["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["id"] == id))
            .and_then(|m| m["name"].as_str())
            .map_or_else(|| format!("id {id}"), str::to_string)
    }

    /// The index of the current leader, once the running members agree on one.
    pub fn leader_index(&self) -> usize {
        let view = self.wait_converged(ELECTION, "the running members agree on a leader");
        let id = view["leader"].as_u64().expect("leader id");
        self.index_of_id(&view, id)
    }
}

/// `(id, name)` of every member in a `/cluster` view, sorted: to compare membership.
pub fn member_names(view: &Value) -> Vec<(u64, String)> {
    let mut members: Vec<(u64, String)> = view["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        m["id"].as_u64().unwrap_or(0),
                        m["name"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    members.sort();
    members
}
