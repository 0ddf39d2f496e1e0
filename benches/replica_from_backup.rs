//! Adding a replica of a large database: restored from the pgBackRest repository
//! (`backup.create_replica_from_backup = true`) against cloned with `pg_basebackup` from the
//! primary. Three `pgquorum run` daemons on loopback with real PostgreSQL and real
//! pgBackRest, one repository directory; a table of `PGQ_BENCH_GB` GB (default 2) is
//! loaded, a full backup taken (timed too), then one replica is re-initialised
//! (`pgquorum reinit --force`) once each way. Each time runs from the reinit request until
//! the member streams and has replayed the primary's position at the request.
//!
//! `cargo bench --bench replica_from_backup`; env `PGQ_BENCH_GB`, `PGQ_BENCH_ORDER=backup`
//! (restore first; default pg_basebackup first). Needs root or the tests' prerequisites
//! (`scripts/prereqs.sh` installs PostgreSQL and pgbackrest).

#[path = "../tests/common/mod.rs"]
mod common;
mod report;

use std::time::{Duration, Instant};

use common::backup::Repo;
use common::pg::healthy_cluster;
use common::{assert_success, eventually};

/// The longest one step may take.
const LIMIT: Duration = Duration::from_secs(1800);

fn main() {
    if !common::require_postgres() {
        return;
    }
    let gb: u64 = std::env::var("PGQ_BENCH_GB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let (cluster, primary) = healthy_cluster();
    let repo = Repo::new();
    let p = cluster.node(primary);
    repo.set(p, &[]);
    repo.wait_stanza(p, LIMIT);

    // About 120 bytes per row on disk.
    let rows = gb * 1024 * 1024 * 1024 / 120;
    let loading = Instant::now();
    p.sql(&format!(
        "create table big as select g, md5(g::text) || md5((g + 1)::text) as h \
         from generate_series(1, {rows}) g; checkpoint"
    ))
    .unwrap();
    let size = p
        .sql("select pg_size_pretty(pg_database_size('postgres'))")
        .unwrap();
    eprintln!("loaded {size} in {:.0} s", loading.elapsed().as_secs_f64());
    let started = Instant::now();
    assert_success(&p.cli(&["backup", "--wait=30m"]), "full backup");
    let backup_took = started.elapsed();

    let replica = 1 + primary % 3;
    let r = cluster.node(replica);
    let order: Vec<bool> = match std::env::var("PGQ_BENCH_ORDER").as_deref() {
        Ok("backup") => vec![true, false],
        _ => vec![false, true],
    };
    let mut rows_out = Vec::new();
    for from_backup in order {
        let flag = format!("backup.create_replica_from_backup={from_backup}");
        assert_success(&p.cli(&["config", "set", &flag]), "config set");
        let marker = if from_backup {
            "restored from the pgBackRest repository"
        } else {
            "cloned the cluster"
        };
        let before = r.log().matches(marker).count();
        let target = p.sql("select pg_current_wal_lsn()").unwrap();
        let started = Instant::now();
        assert_success(&p.cli(&["reinit", &r.name, "--force"]), "reinit");
        eventually(LIMIT, "the replica streams, caught up", || {
            if r.log().matches(marker).count() == before {
                return Err("not re-created yet".to_string());
            }
            let done = r.sql(&format!(
                "select status = 'streaming' and pg_last_wal_replay_lsn() >= '{target}' \
                 from pg_stat_wal_receiver"
            ))?;
            (done == "t").then_some(()).ok_or(done)
        });
        let took = started.elapsed();
        let method = if from_backup {
            "from the repository (pgbackrest restore --type=standby)"
        } else {
            "pg_basebackup from the primary"
        };
        rows_out.push((method, took));
    }
    println!("## Adding a replica of a {size} database (one run each)\n");
    println!("machine: {}", report::machine());
    println!(
        "settings: loopback, 3 members, TLS on, {} (lz4, process-max 2), posix repository on the same disk",
        report::command_output(std::path::Path::new("/usr/bin/pgbackrest"), &["version"]).trim()
    );
    println!(
        "full backup taken by a replica: {:.1} s\n",
        backup_took.as_secs_f64()
    );
    println!("| method | reinit to streaming, caught up |");
    println!("|---|---|");
    for (method, took) in rows_out {
        println!("| {method} | {:.1} s |", took.as_secs_f64());
    }
}
