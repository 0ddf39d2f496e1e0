//! PostgreSQL supervision on real PostgreSQL: bootstrap, streaming replicas, failover.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::pg::{healthy_cluster, replicas_streaming, resume_receiving, stop_receiving, writable};
use common::{eventually, require_postgres, OutputExt, TestCluster, ELECTION};

/// Formation, initdb and two base backups.
const FORMATION: Duration = Duration::from_secs(60);
/// From a lost primary to a writable new one.
const FAILOVER: Duration = Duration::from_secs(20);

#[test]
fn three_members_form_one_primary_and_two_streaming_replicas() {
    if !require_postgres() {
        return;
    }
    let started = Instant::now();
    let cluster = TestCluster::start_with_postgres(3);
    let primary = eventually(FORMATION, "one writable primary", || writable(&cluster));
    eventually(FORMATION, "two replicas stream through their slots", || {
        replicas_streaming(&cluster, primary)
    });
    eprintln!("healthy three-member cluster after {:?}", started.elapsed());
    // The lease holder is the writable member.
    let view = cluster.node(1).list();
    let holder = view["lease"]["holder"].as_u64().expect("a lease holder");
    assert_eq!(cluster.index_of_id(&view, holder), primary);

    let p = cluster.node(primary);
    p.sql("create table t (v int primary key)").unwrap();
    p.sql("insert into t values (1), (2)").unwrap();
    for i in cluster.running().into_iter().filter(|&i| i != primary) {
        eventually(
            Duration::from_secs(10),
            &format!("n{i} has the rows"),
            || match cluster.node(i).sql("select count(*) from t").as_deref() {
                Ok("2") => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        // A replica refuses writes.
        assert!(cluster.node(i).sql("insert into t values (3)").is_err());
        // A fresh clone of the primary has nothing of its own to lose: it starts streaming
        // without being stopped again for a rewind.
        let log = cluster.node(i).log();
        assert!(
            !log.contains("decision=\"Rewind\""),
            "n{i} rewound its fresh clone:\n{}",
            log.lines()
                .filter(|l| l.contains("pgquorum::ha"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn a_replica_is_promoted_when_the_primary_host_is_lost() {
    if !require_postgres() {
        return;
    }
    let (mut cluster, old) = healthy_cluster();
    cluster
        .node(old)
        .sql("create table t (v int primary key)")
        .unwrap();
    cluster.node(old).sql("insert into t values (1)").unwrap();
    let survivors: Vec<usize> = cluster
        .running()
        .into_iter()
        .filter(|&i| i != old)
        .collect();
    for &i in &survivors {
        eventually(
            Duration::from_secs(10),
            "the row reaches the replicas",
            || match cluster.node(i).sql("select count(*) from t").as_deref() {
                Ok("1") => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }

    // Host loss: the daemon is SIGKILLed and its PostgreSQL dies with it (the postmaster
    // gets SIGQUIT from its parent-death signal).
    let killed = Instant::now();
    cluster.node_mut(old).kill();
    let new = eventually(FAILOVER, "a survivor accepts a write", || {
        for &i in &survivors {
            if cluster.node(i).sql("insert into t values (2)").is_ok() {
                return Ok(i);
            }
        }
        Err("no survivor accepts writes yet".to_string())
    });
    eprintln!(
        "failover: first write on n{new} {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(writable(&cluster), Ok(new), "exactly one writable member");
    // The failover can be followed in the new primary's log: the cycle's span names the
    // member, the action's span the decision and the lease epoch.
    let log = cluster.node(new).log();
    let promoted = log
        .lines()
        .find(|l| l.contains("promoted to primary"))
        .unwrap_or_else(|| panic!("no promotion in n{new}'s log"));
    assert!(
        promoted.contains(&format!("ha{{member=n{new}"))
            && promoted.contains("action{decision=\"Promote\" epoch="),
        "the promotion is logged inside its cycle's and action's spans: {promoted}"
    );

    let other = *survivors.iter().find(|&&i| i != new).unwrap();
    eventually(
        FAILOVER,
        "the other survivor follows the new primary",
        || match cluster.node(other).sql("select count(*) from t").as_deref() {
            Ok("2") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(
        cluster
            .node(other)
            .sql("select pg_is_in_recovery()")
            .as_deref(),
        Ok("t")
    );
}

#[test]
fn postgres_killed_on_the_primary_is_restarted_in_place() {
    if !require_postgres() {
        return;
    }
    let (cluster, primary) = healthy_cluster();
    let epoch = cluster.node(1).list()["lease"]["epoch"].as_u64().unwrap();
    let pid = cluster
        .node(primary)
        .postmaster_pid()
        .expect("postmaster.pid");
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    eventually(FAILOVER, "the same member is writable again", || {
        let now = cluster.node(primary).postmaster_pid();
        match (
            now,
            cluster
                .node(primary)
                .sql("select pg_is_in_recovery()")
                .as_deref(),
        ) {
            (Some(new_pid), Ok("f")) if new_pid != pid => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    eprintln!("restarted in place after {:?}", killed.elapsed());
    // Same tenure: nobody took over.
    let view = cluster.node(1).list();
    assert_eq!(view["lease"]["epoch"].as_u64(), Some(epoch), "{view}");
    assert_eq!(writable(&cluster), Ok(primary));
}

#[test]
fn a_primary_whose_postgresql_cannot_start_hands_over_at_once() {
    if !require_postgres() {
        return;
    }
    let (cluster, primary) = healthy_cluster();
    let epoch = cluster.node(1).list()["lease"]["epoch"].as_u64().unwrap();
    // A setting PostgreSQL refuses at start, where no supervisor file overrides it.
    let auto = cluster
        .node(primary)
        .state_dir
        .join("pgdata/postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap();
    text.push_str("shared_buffers = 'plenty'\n");
    std::fs::write(&auto, text).unwrap();
    let pid = cluster
        .node(primary)
        .postmaster_pid()
        .expect("postmaster.pid");
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let new = eventually(
        FAILOVER,
        "another member is the writable primary",
        || match writable(&cluster) {
            Ok(i) if i != primary => Ok(i),
            other => Err(format!("{other:?}")),
        },
    );
    eprintln!(
        "PostgreSQL could not start on n{primary}: n{new} writable after {:?}",
        killed.elapsed()
    );
    let view = cluster.node(new).list();
    assert!(view["lease"]["epoch"].as_u64() > Some(epoch), "{view}");
    let log = cluster.node(primary).log();
    assert!(
        log.contains("PostgreSQL failed to start 2 times in a row"),
        "the old primary's log says why it released the lease"
    );
}

#[test]
fn a_replica_tagged_nofailover_is_never_promoted() {
    if !require_postgres() {
        return;
    }
    // n2 and n3 both carry nofailover: with n1 gone nobody may be promoted.
    let mut cluster =
        TestCluster::start_with_postgres_tagged(3, &[2, 3], "[tags]\nnofailover = true\n");
    let primary = eventually(FORMATION, "one writable primary", || writable(&cluster));
    assert_eq!(primary, 1, "only n1 may be primary");
    eventually(FORMATION, "replicas stream", || {
        replicas_streaming(&cluster, 1)
    });
    cluster.node_mut(1).kill();
    // Once the lease has expired, both survivors decide (every cycle) not to take it, and
    // `list` shows why under the table.
    let table = eventually(FAILOVER, "list says why nobody is promoted", || {
        let output = cluster.node(2).cli(&["list"]);
        let text = output.stdout_text();
        let says = |n: &str| {
            text.lines().any(|l| {
                l.contains(&format!("{n}: lease of n1 expired"))
                    && l.contains("not eligible: tagged nofailover")
            })
        };
        if says("n2") && says("n3") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    assert!(table.contains("No primary."), "{table}");
    for i in [2, 3] {
        assert_eq!(
            cluster.node(i).sql("select pg_is_in_recovery()").as_deref(),
            Ok("t"),
            "n{i} must stay a replica"
        );
    }
}

#[test]
fn a_replica_lagging_beyond_maximum_lag_on_failover_is_passed_over() {
    if !require_postgres() {
        return;
    }
    let (mut cluster, primary) = healthy_cluster();
    let set = cluster
        .node(primary)
        .cli(&["config", "set", "maximum_lag_on_failover=65536"]);
    common::assert_success(&set, "config set maximum_lag_on_failover");
    let replicas: Vec<usize> = (1..=3).filter(|&i| i != primary).collect();
    // The lower id would win a tie: make it the one that lags.
    let (lagging, good) = (replicas[0], replicas[1]);
    stop_receiving(cluster.node(lagging));
    let p = cluster.node(primary);
    p.sql("create table t (v int, pad text)").unwrap();
    p.sql("insert into t select g, repeat('x', 1000) from generate_series(1, 2000) g")
        .unwrap();
    eventually(FAILOVER, "the other replica has the rows", || match cluster
        .node(good)
        .sql("select count(*) from t")
        .as_deref()
    {
        Ok("2000") => Ok(()),
        other => Err(format!("{other:?}")),
    });
    cluster.node_mut(primary).kill();
    let new = eventually(FAILOVER, "a survivor is writable", || writable(&cluster));
    resume_receiving(cluster.node(lagging));
    assert_eq!(
        new, good,
        "the replica within maximum_lag_on_failover is promoted"
    );
    // If the lagging replica judged the vacancy before the good one's takeover committed
    // (a race: they wake on their own cycles), it said why it stood aside. The sentence
    // itself is pinned by the decision table; the limit it names is the one this member had
    // applied, which on a loaded host may still be the default (it lags here by more than
    // either).
    let log = cluster.node(lagging).log();
    let judged: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("pgquorum::ha:") && l.contains(" expired (epoch"))
        .collect();
    assert!(
        judged
            .iter()
            .all(|l| l.contains("B behind the highest known position")
                && l.contains("more than maximum_lag_on_failover (")),
        "the lagging replica's log says why it was passed over: {judged:#?}"
    );
}

#[test]
fn the_old_primary_rejoins_on_the_new_timeline_after_a_failover() {
    if !require_postgres() {
        return;
    }
    let (mut cluster, old) = healthy_cluster();
    cluster
        .node(old)
        .sql("create table t (v int primary key)")
        .unwrap();
    // Replication is asynchronous: a kill right after the commit can lose it (CI saw the
    // new primary without the table), which is not what this test is about.
    let survivors: Vec<usize> = (cluster.running().into_iter())
        .filter(|&i| i != old)
        .collect();
    for &i in &survivors {
        eventually(ELECTION, &format!("n{i} replays the table"), || {
            cluster.node(i).sql("select count(*) from t")
        });
    }
    cluster.node_mut(old).kill();
    let new = eventually(FAILOVER, "a survivor accepts a write", || {
        for &i in &survivors {
            if cluster.node(i).sql("insert into t values (1)").is_ok() {
                return Ok(i);
            }
        }
        Err("no survivor accepts writes yet".to_string())
    });
    // The old primary's host comes back with its data.
    cluster.node_mut(old).start();
    eventually(
        FORMATION,
        "the old primary streams from the new one",
        || {
            let node = cluster.node(old);
            match (
                node.sql("select pg_is_in_recovery()").as_deref(),
                node.sql("select count(*) from t").as_deref(),
                node.sql("select status from pg_stat_wal_receiver")
                    .as_deref(),
            ) {
                (Ok("t"), Ok("1"), Ok("streaming")) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    let timeline = cluster
        .node(old)
        .sql("select received_tli from pg_stat_wal_receiver")
        .unwrap();
    assert!(
        timeline.parse::<u32>().unwrap() >= 2,
        "on the new timeline: {timeline}"
    );
    assert_eq!(writable(&cluster), Ok(new));

    // The promotion is in the timeline history, as Patroni's /history shows it: the ended
    // timeline, where it ended, why, when, and the new primary; and `pgquorum history`
    // prints it.
    let new_name = cluster.node(new).name.clone();
    let history = eventually(FAILOVER, "the promotion is in GET /history", || {
        let (code, body) = cluster
            .node(old)
            .get("/history")
            .map_err(|e| e.to_string())?;
        let rows: Value = serde_json::from_str(&body).map_err(|e| format!("{code} {body}: {e}"))?;
        match rows.as_array().map(Vec::as_slice) {
            Some([row]) => Ok(row.clone()),
            _ => Err(format!("{code} {body}")),
        }
    });
    assert_eq!(history[0], 1, "timeline 1 ended: {history}");
    assert!(history[1].as_u64().is_some_and(|lsn| lsn > 0), "{history}");
    assert!(
        history[2].as_str().is_some_and(|r| !r.is_empty()),
        "{history}"
    );
    assert!(
        history[3].as_str().is_some_and(|t| t.ends_with('Z')),
        "{history}"
    );
    assert_eq!(history[4], new_name.as_str(), "{history}");
    let printed = cluster.node(old).cli(&["history"]);
    common::assert_success(&printed, "history");
    let table = String::from_utf8_lossy(&printed.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("| 1 ") && l.contains(&new_name)),
        "{table}"
    );
}

#[test]
fn a_planned_switchover_hands_over_without_losing_an_acknowledged_write() {
    if !require_postgres() {
        return;
    }
    let (cluster, old) = healthy_cluster();
    cluster
        .node(old)
        .sql("create table t (v int primary key)")
        .unwrap();
    let candidate = cluster.running().into_iter().find(|&i| i != old).unwrap();
    let candidate_name = cluster.node(candidate).name.clone();

    // A client commits every 20 ms to whichever member accepts writes, and records each
    // acknowledged value with the instant it was acknowledged.
    let mut acknowledged: Vec<(i64, Instant)> = Vec::new();
    let mut next = 1i64;
    let mut commit = |cluster: &TestCluster, acknowledged: &mut Vec<(i64, Instant)>| {
        for i in cluster.running() {
            if cluster
                .node(i)
                .sql(&format!("insert into t values ({next})"))
                .is_ok()
            {
                acknowledged.push((next, Instant::now()));
                break;
            }
        }
        next += 1;
        std::thread::park_timeout(Duration::from_millis(20));
    };
    for _ in 0..10 {
        commit(&cluster, &mut acknowledged);
    }
    let requested = cluster
        .node(old)
        .cli(&["switchover", "--candidate", &candidate_name]);
    common::assert_success(&requested, "switchover");
    let started = Instant::now();
    while writable(&cluster) != Ok(candidate) {
        assert!(
            started.elapsed() < FAILOVER,
            "the candidate is not primary after {FAILOVER:?}"
        );
        commit(&cluster, &mut acknowledged);
    }
    for _ in 0..10 {
        commit(&cluster, &mut acknowledged);
    }
    let gap = acknowledged
        .windows(2)
        .map(|w| w[1].1.duration_since(w[0].1))
        .max()
        .unwrap();
    eprintln!("switchover: longest gap between acknowledged writes {gap:?}");

    // Every acknowledged write is on the new primary.
    let rows: Vec<i64> = cluster
        .node(candidate)
        .sql("select v from t order by v")
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    for (v, _) in &acknowledged {
        assert!(
            rows.contains(v),
            "acknowledged write {v} lost; rows: {rows:?}"
        );
    }
    // The old primary follows the new one.
    eventually(
        FORMATION,
        "the old primary streams from the candidate",
        || match cluster
            .node(old)
            .sql("select status from pg_stat_wal_receiver")
            .as_deref()
        {
            Ok("streaming") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let view = cluster.node(1).list();
    assert!(
        view["switchover"].is_null() || view.get("switchover").is_none(),
        "{view}"
    );
}

#[test]
fn no_failover_happens_in_maintenance_mode_until_resume() {
    if !require_postgres() {
        return;
    }
    let (mut cluster, old) = healthy_cluster();
    let survivor = cluster.running().into_iter().find(|&i| i != old).unwrap();
    common::assert_success(&cluster.node(survivor).cli(&["pause"]), "pause");
    assert!(cluster
        .node(survivor)
        .cli(&["list"])
        .stdout_text()
        .contains("Maintenance mode: on"));
    cluster.node_mut(old).kill();
    // Several ttls pass and nobody is promoted.
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        for i in cluster.running() {
            assert_eq!(
                cluster.node(i).sql("select pg_is_in_recovery()").as_deref(),
                Ok("t"),
                "n{i} was promoted in maintenance mode"
            );
        }
        std::thread::park_timeout(Duration::from_millis(200));
    }
    common::assert_success(&cluster.node(survivor).cli(&["resume"]), "resume");
    eventually(FAILOVER, "a survivor is promoted after resume", || {
        writable(&cluster)
    });
}

#[test]
fn postgresql_parameters_from_the_dynamic_config_reach_every_member() {
    if !require_postgres() {
        return;
    }
    let (cluster, primary) = healthy_cluster();
    let set = cluster
        .node(2)
        .cli(&["config", "set", "postgresql_parameters.work_mem=77MB"]);
    common::assert_success(&set, "config set work_mem");
    for i in cluster.running() {
        eventually(
            Duration::from_secs(10),
            &format!("n{i} runs with work_mem 77MB"),
            || match cluster.node(i).sql("show work_mem").as_deref() {
                Ok("77MB") => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
    // A parameter that needs a restart is written and reported, not applied by a restart.
    let set = cluster
        .node(1)
        .cli(&["config", "set", "postgresql_parameters.shared_buffers=48MB"]);
    common::assert_success(&set, "config set shared_buffers");
    eventually(
        Duration::from_secs(10),
        "every member reports a pending restart",
        || {
            let view = cluster.node(1).list();
            let pending = view["members"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["pending_restart"].as_bool() == Some(true))
                .count();
            if pending == 3 {
                Ok(())
            } else {
                Err(view.to_string())
            }
        },
    );
    assert_eq!(writable(&cluster), Ok(primary), "no restart, no failover");
    // Parameters pgquorum manages are refused, naming the key.
    let refused = cluster
        .node(3)
        .cli(&["config", "set", "postgresql_parameters.port=1"]);
    common::assert_error(&refused, 1, "\"port\" is managed by pgquorum");
}

/// Whether process `pid` is alive (not gone, not a zombie).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Sends `signal` to process group `pgid`.
fn signal_group(pgid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; -pgid targets the daemon's group.
    unsafe { libc::kill(-(pgid as libc::pid_t), signal) };
}

#[test]
fn the_fence_kills_a_primary_whose_daemon_is_frozen_before_another_is_promoted() {
    if !require_postgres() {
        return;
    }
    let (cluster, primary) = healthy_cluster();
    let old = cluster.node(primary);
    let postmaster = old.postmaster_pid().expect("the primary's postmaster pid");
    let daemon = old.pid().expect("the primary's daemon pid");
    // The daemon, and only it, stops: its PostgreSQL would go on accepting writes from
    // clients connected to it directly, and its replicas would go on confirming them.
    signal_group(daemon, libc::SIGSTOP);
    let others: Vec<usize> = cluster
        .running()
        .into_iter()
        .filter(|&i| i != primary)
        .collect();
    let new = eventually(FAILOVER, "another member is writable", || {
        for &i in &others {
            if cluster.node(i).sql("select pg_is_in_recovery()").as_deref() == Ok("f") {
                // Checked after seeing the new primary: the old one must be gone by now.
                assert!(
                    !alive(postmaster),
                    "n{i} is writable while the frozen n{primary}'s postmaster {postmaster} \
                     still runs"
                );
                return Ok(i);
            }
        }
        Err(format!("old postmaster alive: {}", alive(postmaster)))
    });
    assert!(
        old.log().contains("pgquorum fence:"),
        "the fence should say in n{primary}'s log why it killed PostgreSQL"
    );
    // Thawed, the old primary finds its PostgreSQL dead and its lease gone, and rejoins;
    // through pg_rewind, since a primary killed while writable may have written WAL its
    // replicas never received (found at 100 ms round trip: restarted as a standby as it
    // was, such a member could never follow the new timeline).
    signal_group(daemon, libc::SIGCONT);
    eventually(FAILOVER, "the old primary rejoins as a replica", || {
        replicas_streaming(&cluster, new)
    });
    assert!(
        old.log()
            .contains("data directory was last a primary's; rewinding from"),
        "n{primary} should have been rewound before following n{new}"
    );
}
