//! Patroni-compatible health endpoints, `/metrics` and `pgquorum list` on real daemons with
//! real PostgreSQL: each kind of member answers the status codes Patroni would give.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, require_postgres, Node, OutputExt, TestCluster};

/// Formation, initdb and two base backups.
const FORMATION: Duration = Duration::from_secs(60);
/// For a change (a write, a pause, a crash) to show in the answers: a few status rounds.
const SETTLE: Duration = Duration::from_secs(15);

/// The checks asserted for every kind of member, in this order.
const CHECKS: [&str; 7] = [
    "/primary",
    "/replica",
    "/replica?lag=1MB",
    "/read-only",
    "/health",
    "/readiness",
    "/leader",
];
const PRIMARY: [u16; 7] = [200, 503, 503, 200, 200, 200, 200];
const REPLICA: [u16; 7] = [503, 200, 200, 200, 200, 200, 503];
/// Replay paused, more than `maximum_lag_on_failover` (1 MB) behind.
const LAGGING: [u16; 7] = [503, 200, 503, 200, 200, 503, 503];
const STOPPED: [u16; 7] = [503; 7];

/// GET, HEAD and OPTIONS of every path on `node`: Ok if all three give `expected` and HEAD
/// and OPTIONS give no body; Err says what differs.
fn answers(node: &Node, paths: &[&str], expected: &[u16]) -> Result<(), String> {
    let mut wrong = Vec::new();
    for (path, want) in paths.iter().zip(expected) {
        for method in ["GET", "HEAD", "OPTIONS"] {
            let (code, body) = node
                .request(method, path)
                .map_err(|e| format!("{method} {path} on {}: {e}", node.name))?;
            if code != *want {
                wrong.push(format!("{method} {path}: {code}, want {want} ({body})"));
            } else if method != "GET" && !body.is_empty() {
                wrong.push(format!("{method} {path}: a body: {body:?}"));
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}", node.name, wrong.join("; ")))
    }
}

/// Waits until `node` answers the [`CHECKS`] with `expected`.
fn wait_answers(node: &Node, what: &str, expected: [u16; 7]) {
    let started = Instant::now();
    eventually(SETTLE, &format!("{} answers as {what}", node.name), || {
        answers(node, &CHECKS, &expected)
    });
    eprintln!(
        "{} answers as {what} after {:?}",
        node.name,
        started.elapsed()
    );
}

/// The `/cluster` rows as (name, role, state, timeline).
fn roles(node: &Node) -> Result<Vec<(String, String, String, u64)>, String> {
    let view = node.cluster_view()?;
    Ok(view["members"]
        .as_array()
        .ok_or("no members")?
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_string(),
                m["role"].as_str().unwrap_or_default().to_string(),
                m["state"].as_str().unwrap_or_default().to_string(),
                m["timeline"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// Waits until `node` lists one running Leader and two streaming Replicas on timeline 1;
/// returns the indices (primary, [replicas]).
fn wait_healthy(node: &Node) -> (usize, [usize; 2]) {
    eventually(FORMATION, "one leader and two streaming replicas", || {
        let rows = roles(node)?;
        let leaders: Vec<&str> = rows
            .iter()
            .filter(|(_, role, state, tl)| role == "Leader" && state == "running" && *tl == 1)
            .map(|(name, ..)| name.as_str())
            .collect();
        let replicas: Vec<&str> = rows
            .iter()
            .filter(|(_, role, state, tl)| role == "Replica" && state == "streaming" && *tl == 1)
            .map(|(name, ..)| name.as_str())
            .collect();
        match (leaders.as_slice(), replicas.as_slice()) {
            ([leader], [a, b]) => {
                let index = |name: &str| name.trim_start_matches('n').parse::<usize>().unwrap();
                Ok((index(leader), [index(a), index(b)]))
            }
            _ => Err(format!("{rows:?}")),
        }
    })
}

/// The sample lines of a Prometheus text exposition as (name, value); Err for a line that
/// is not `name{labels} value`.
fn parse_metrics(text: &str) -> Result<Vec<(String, f64)>, String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let bad = || format!("not `name{{labels}} value`: {line:?}");
            let (name, rest) = line.split_once('{').ok_or_else(bad)?;
            let (labels, value) = rest.rsplit_once("} ").ok_or_else(bad)?;
            let name_ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            let labels_ok = labels.split(',').all(|pair| {
                pair.split_once('=').is_some_and(|(k, v)| {
                    !k.is_empty() && v.len() >= 2 && v.starts_with('"') && v.ends_with('"')
                })
            });
            let value: f64 = value.parse().map_err(|_| bad())?;
            if name_ok && labels_ok {
                Ok((name.to_string(), value))
            } else {
                Err(bad())
            }
        })
        .collect()
}

fn metrics(node: &Node) -> Vec<(String, f64)> {
    let (code, text) = node.get("/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "{text}");
    parse_metrics(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", node.name))
}

fn metric(samples: &[(String, f64)], name: &str) -> Option<f64> {
    samples.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

#[test]
fn primary_replica_lagging_and_stopped_members_answer_as_patroni_does() {
    if !require_postgres() {
        return;
    }
    let started = Instant::now();
    let cluster = TestCluster::start_with_postgres(3);
    let (p, [r1, r2]) = wait_healthy(cluster.node(1));
    eprintln!("healthy cluster after {:?}", started.elapsed());
    let (primary, lagging, stopping) = (cluster.node(p), cluster.node(r1), cluster.node(r2));

    // `pgquorum list` reads like `patronictl list`.
    let output = cluster.node(1).cli(&["list"]);
    common::assert_success(&output, "list");
    let text = output.stdout_text();
    assert!(text.contains("(lease epoch "), "{text}");
    let rows: Vec<Vec<String>> = text
        .lines()
        .filter(|l| l.starts_with("| n"))
        .map(|l| {
            let inner = l.trim().trim_start_matches('|').trim_end_matches('|');
            inner.split('|').map(|c| c.trim().to_string()).collect()
        })
        .collect();
    let mut seen: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r[2].as_str(), r[3].as_str(), r[4].as_str()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("Leader", "running", "1"),
            ("Replica", "streaming", "1"),
            ("Replica", "streaming", "1")
        ],
        "{text}"
    );
    for row in &rows {
        let i: usize = row[0].trim_start_matches('n').parse().unwrap();
        assert_eq!(
            row[1],
            format!("127.0.0.1:{}", cluster.node(i).pg_port),
            "{text}"
        );
    }

    wait_answers(primary, "the primary", PRIMARY);
    wait_answers(lagging, "a replica", REPLICA);
    wait_answers(stopping, "a replica", REPLICA);
    for (path, want) in [("/sync", 503), ("/async", 200), ("/patroni", 200)] {
        assert_eq!(lagging.get(path).unwrap().0, want, "{path} on a replica");
    }
    let (code, history) = primary.get("/history").unwrap();
    assert_eq!((code, history.as_str()), (200, "[]"));
    let (_, doc) = lagging.get("/replica").unwrap();
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(
        (&doc["role"], &doc["state"], &doc["timeline"]),
        (&"replica".into(), &"running".into(), &1.into()),
        "{doc}"
    );

    // Metrics parse, and say who is what.
    let names = [
        "pgquorum_up",
        "pgquorum_raft_term",
        "pgquorum_raft_leader",
        "pgquorum_lease_epoch",
        "pgquorum_lease_holder",
        "pgquorum_members",
        "pgquorum_postgres_running",
        "pgquorum_postgres_primary",
        "pgquorum_postgres_timeline",
        "pgquorum_postgres_wal_position_bytes",
    ];
    let on_primary = metrics(primary);
    let on_replica = metrics(lagging);
    for name in names {
        assert!(metric(&on_primary, name).is_some(), "{name} on the primary");
        assert!(metric(&on_replica, name).is_some(), "{name} on a replica");
    }
    assert_eq!(metric(&on_primary, "pgquorum_lease_holder"), Some(1.0));
    assert_eq!(metric(&on_primary, "pgquorum_postgres_primary"), Some(1.0));
    assert_eq!(metric(&on_primary, "pgquorum_members"), Some(3.0));
    assert_eq!(metric(&on_replica, "pgquorum_lease_holder"), Some(0.0));
    assert_eq!(metric(&on_replica, "pgquorum_postgres_primary"), Some(0.0));
    assert!(metric(&on_replica, "pgquorum_replication_lag_bytes").is_some());
    let raft_leaders: f64 = cluster
        .running()
        .iter()
        .map(|&i| metric(&metrics(cluster.node(i)), "pgquorum_raft_leader").unwrap())
        .sum();
    assert_eq!(raft_leaders, 1.0, "exactly one raft leader");

    // A replica whose replay is paused falls behind a 1 MB limit but stays a replica.
    lagging.sql("select pg_wal_replay_pause()").unwrap();
    primary
        .sql("create table big as select repeat('x', 1000) from generate_series(1, 5000)")
        .unwrap();
    // Received everything (write mode within 1 MB) while replay stays behind: the lag is the
    // pause, not two status snapshots taken at different moments.
    let paths: Vec<&str> = CHECKS
        .iter()
        .copied()
        .chain(["/replica?lag=1MB&mode=write", "/replica?lag=64MB"])
        .collect();
    let expected: Vec<u16> = LAGGING.iter().copied().chain([200, 200]).collect();
    let paused = Instant::now();
    eventually(SETTLE, "the paused replica answers as lagging", || {
        answers(lagging, &paths, &expected)
    });
    eprintln!(
        "{} answers as a lagging replica after {:?}",
        lagging.name,
        paused.elapsed()
    );
    // The holder's position in the lag is from its last status (one HA cycle old at most),
    // which may predate the end of the insert.
    eventually(SETTLE, "the lag metric shows the paused replay", || {
        let lag = metric(&metrics(lagging), "pgquorum_replication_lag_bytes");
        lag.filter(|lag| *lag > 2_000_000.0)
            .map(|_| ())
            .ok_or(format!("replication lag {lag:?}"))
    });
    lagging.sql("select pg_wal_replay_resume()").unwrap();
    wait_answers(lagging, "a replica again", REPLICA);

    // A replica whose postmaster died: caught between the HA cycle that notices and the
    // supervisor's restart. Every check of one round must see it stopped (/health is asked
    // again last, so a restart in the middle of the round makes the round not count).
    let pid = stopping.postmaster_pid().expect("the postmaster's pid");
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is read from the
    // postmaster.pid of a PostgreSQL this test started.
    let killed = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(killed, 0, "SIGKILL to postmaster {pid}");
    let paths: Vec<&str> = CHECKS.iter().copied().chain(["/health"]).collect();
    let expected: Vec<u16> = STOPPED.iter().copied().chain([503]).collect();
    eventually(
        SETTLE,
        "the replica answers as stopped",
        || match stopping.get("/health") {
            Ok((503, _)) => answers(stopping, &paths, &expected),
            other => Err(format!("/health: {other:?}")),
        },
    );
    let (_, doc) = stopping.get("/patroni").unwrap();
    eprintln!("stopped replica's status: {doc}");
    wait_answers(
        stopping,
        "a replica after the supervisor's restart",
        REPLICA,
    );
    eprintln!("whole scenario took {:?}", started.elapsed());
}

#[test]
fn a_witness_answers_503_to_every_role_check_and_200_to_liveness() {
    let cluster = TestCluster::start(1);
    let witness = cluster.node(1);
    let mut paths: Vec<&str> = CHECKS.to_vec();
    paths.extend(["/", "/read-write", "/sync", "/async", "/replica?lag=16kB"]);
    answers(witness, &paths, &[503; 12]).unwrap();
    answers(witness, &["/liveness", "/patroni"], &[200; 2]).unwrap();
    assert_eq!(witness.get("/history").unwrap(), (200, "[]".to_string()));

    // Even holding the lease, a witness is no leader: it has no PostgreSQL.
    let output = witness.cli(&["lease", "acquire"]);
    common::assert_success(&output, "lease acquire");
    eventually(SETTLE, "the witness holds the lease", || {
        match witness.cluster_view()?["lease"]["holder"].as_u64() {
            Some(_) => Ok(()),
            None => Err("no holder".to_string()),
        }
    });
    answers(witness, &["/leader", "/primary"], &[503, 503]).unwrap();

    let samples = metrics(witness);
    assert_eq!(metric(&samples, "pgquorum_up"), Some(1.0));
    assert_eq!(metric(&samples, "pgquorum_raft_leader"), Some(1.0));
    assert_eq!(metric(&samples, "pgquorum_lease_holder"), Some(1.0));
    assert_eq!(metric(&samples, "pgquorum_postgres_running"), Some(0.0));
    assert_eq!(metric(&samples, "pgquorum_postgres_timeline"), None);

    let output = witness.cli(&["list"]);
    common::assert_success(&output, "list");
    let text = output.stdout_text();
    let row = text
        .lines()
        .find(|l| l.starts_with("| n1"))
        .unwrap_or_else(|| panic!("no row for n1:\n{text}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells[1..5], ["n1", &witness.peer_addr(), "", ""], "{text}");
}
