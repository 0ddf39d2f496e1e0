//! Network partitions with hosts as network namespaces (DESIGN §8.3): needs root; skips
//! without it locally, fails in CI.

mod common;

use std::time::{Duration, Instant};

use common::netns::Hosts;
use common::pg::{replicas_streaming, writable, FORMATION};
use common::writer::{lost, Ack, Writer};
use common::{eventually, require_postgres, TestCluster};

/// From the cut to a writable primary on the majority side.
const FAILOVER: Duration = Duration::from_secs(20);

/// The values of `acks` acknowledged at or after `since`.
fn acked_since(acks: &[Ack], since: std::time::Instant) -> Vec<i64> {
    acks.iter()
        .filter(|a| a.at >= since)
        .map(|a| a.value)
        .collect()
}

/// How many clean shutdowns PostgreSQL's own log records so far.
fn clean_stops(pg_log: &std::path::Path) -> usize {
    std::fs::read_to_string(pg_log)
        .unwrap_or_default()
        .matches("database system is shut down")
        .count()
}

/// Whether member `i`'s PostgreSQL answers as a primary (not in recovery), through its unix
/// socket, which a network cut does not affect.
fn is_primary(cluster: &TestCluster, i: usize) -> bool {
    cluster.node(i).sql("select pg_is_in_recovery()").as_deref() == Ok("f")
}

#[test]
fn a_primary_cut_off_from_both_others_is_fenced_and_rejoins_after_heal() {
    if !require_postgres() {
        return;
    }
    let Some(hosts) = Hosts::create(3) else {
        return;
    };
    let cluster = TestCluster::start_on_hosts(&hosts);
    let old = eventually(FORMATION, "one writable primary", || writable(&cluster));
    eventually(FORMATION, "two replicas stream", || {
        replicas_streaming(&cluster, old)
    });
    cluster
        .node(old)
        .sql(
            "create table t (v bigint primary key); create table m (v bigint primary key); \
             create table w (v bigint primary key); create role app login password 'app'; \
             grant all on t, m, w to app",
        )
        .unwrap();
    let survivors: Vec<usize> = (1..=3).filter(|&i| i != old).collect();

    // A client on each side: one next to the old primary (its unix socket) writing table t,
    // one committing to whichever survivor accepts, writing table m.
    let minority = Writer::start("t", vec![cluster.node(old).pg_target()], Duration::ZERO);
    // And one through the cut-off host's own proxy writer port, from inside that host.
    let through_proxy = Writer::start("w", vec![cluster.node(old).writer_target()], Duration::ZERO);
    eventually(FAILOVER, "the minority clients commit", || {
        let (n, p) = (minority.acks().len(), through_proxy.acks().len());
        (n >= 20 && p >= 5).then_some(()).ok_or((n, p))
    });
    let targets = survivors
        .iter()
        .map(|&i| cluster.node(i).pg_target())
        .collect();
    let majority = Writer::start("m", targets, Duration::ZERO);

    let pg_log = cluster.node(old).state_dir.join("postgresql.log");
    let clean_stops_before = clean_stops(&pg_log);
    let cut = Instant::now();
    cluster.node(old).note("=== harness: host cut off ===");
    hosts.cut(old);

    // Sample both sides until the majority has a writable primary and the old one is not
    // writable: never two primaries at once.
    let mut old_demoted = None;
    let new = eventually(
        FAILOVER,
        "a survivor is primary and the old one is not",
        || {
            let old_primary = is_primary(&cluster, old);
            if !old_primary && old_demoted.is_none() {
                old_demoted = Some(cut.elapsed());
            }
            let writable_survivors: Vec<usize> = survivors
                .iter()
                .copied()
                .filter(|&i| is_primary(&cluster, i))
                .collect();
            assert!(
                !old_primary || writable_survivors.is_empty(),
                "two primaries: n{old} and {writable_survivors:?}"
            );
            match writable_survivors.as_slice() {
                [one] if !old_primary => Ok(*one),
                _ => Err(format!(
                "old primary writable: {old_primary}; writable survivors {writable_survivors:?}"
            )),
            }
        },
    );
    eventually(
        FAILOVER,
        "the majority client commits on the new primary",
        || {
            let n = majority.acks().len();
            (n >= 20).then_some(()).ok_or(n)
        },
    );
    let minority_acks = minority.stop();
    let proxy_acks = through_proxy.stop();
    let majority_acks = majority.stop();

    // No acknowledged write on the cut-off side once the majority's primary acknowledged one.
    let first_majority = majority_acks.first().expect("majority acks").at;
    let late = acked_since(&minority_acks, first_majority);
    assert!(
        late.is_empty(),
        "the cut-off primary acknowledged {late:?} after the new one started"
    );
    // The cut-off host's own writer port acknowledged nothing once its primary was demoted.
    let demoted_at = cut + old_demoted.expect("the old primary was demoted");
    let late = acked_since(&proxy_acks, demoted_at);
    assert!(
        late.is_empty(),
        "the cut-off writer port acknowledged {late:?} after fencing"
    );
    // The daemon demoted its primary itself, with a clean (fast) shutdown: its own fence
    // did not kill it part-way, and the shutdown was not escalated to a crash stop.
    eventually(
        FAILOVER,
        "the old primary's PostgreSQL is shut down",
        || {
            let n = clean_stops(&pg_log);
            (n > clean_stops_before).then_some(()).ok_or(n)
        },
    );
    let since_cut = cluster.node(old).log();
    let since_cut = &since_cut[since_cut.find("=== harness: host cut off").unwrap()..];
    assert!(
        !since_cut.contains("pgquorum fence:"),
        "the fence killed a primary its live daemon was demoting"
    );
    assert!(
        !since_cut.contains("escalating"),
        "the fast shutdown was escalated to an immediate one"
    );
    let after_cut: Vec<_> = minority_acks.iter().filter(|a| a.at > cut).collect();
    let window = after_cut.last().map(|a| a.at.duration_since(cut));

    // Heal: the old primary rejoins as a replica of the new one.
    cluster.node(old).note("=== harness: host healed ===");
    hosts.heal(old);
    eventually(
        FORMATION,
        "the old primary streams from the new one",
        || replicas_streaming(&cluster, new),
    );
    assert_eq!(writable(&cluster), Ok(new));
    let rows: Vec<i64> = cluster
        .node(new)
        .sql("select v from t order by v")
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let majority_rows: Vec<i64> = cluster
        .node(new)
        .sql("select v from m order by v")
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(
        lost(&majority_acks, &majority_rows).is_empty(),
        "the majority's acknowledged writes are all there"
    );
    let lost_after_cut = lost(&minority_acks, &rows);
    eprintln!(
        "partition: through the cut-off host's writer port, {} writes acknowledged after the cut",
        proxy_acks.iter().filter(|a| a.at > cut).count()
    );
    eprintln!(
        "partition (async mode): {} writes acknowledged by the cut-off primary after the cut, \
         the last {:?} after it; {} of them lost; old primary not writable after {:?}; new \
         primary n{new} first acknowledged {:?} after the cut",
        after_cut.len(),
        window,
        lost_after_cut.len(),
        old_demoted,
        first_majority.duration_since(cut),
    );
}
