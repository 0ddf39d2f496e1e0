//! Backups with real pgBackRest (Debian's package) and real PostgreSQL: three members that
//! share one repository directory, as hosts sharing an NFS mount would.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::backup::{require_pgbackrest, Repo};
use common::pg::{healthy_cluster, lease, no_commit_lost_and_no_failover, writable};
use common::writer::Writer;
use common::{assert_error, assert_success, eventually, require_postgres, ELECTION, FORMATION};

const STANZA: &str = "pgquorum";
/// Stanza creation, `pgbackrest check` and the archiving of a switched segment.
const ARCHIVED: Duration = Duration::from_secs(60);

/// Switches `node`'s WAL to a new segment; returns the name of the one just completed
/// (`pg_walfile_name` of a segment's end names that segment).
fn switch(node: &common::Node) -> String {
    node.sql("select pg_walfile_name(pg_switch_wal())").unwrap()
}

/// The current timeline of member `node`'s PostgreSQL, from its WAL file name.
fn timeline(node: &common::Node) -> Result<u32, String> {
    let name = node.sql("select pg_walfile_name(pg_current_wal_lsn())")?;
    u32::from_str_radix(&name[..8], 16).map_err(|e| format!("{name}: {e}"))
}

#[test]
fn a_failover_leaves_no_gap_in_the_archive_even_when_the_old_primary_could_not_archive() {
    if !require_postgres() || !require_pgbackrest() {
        return;
    }
    let (mut cluster, primary) = healthy_cluster();
    let repo = Repo::new();
    let p = cluster.node(primary);
    configure(p, p, &repo);
    for i in 1..=3 {
        let command = cluster.node(i).sql("show archive_command").unwrap();
        assert!(command.contains("archive-push"), "n{i}: {command}");
    }
    p.sql("create table t (v int); insert into t values (1)")
        .unwrap();
    for _ in 0..2 {
        // A switch with nothing written since the last one switches nothing.
        p.sql("insert into t values (1); select pg_switch_wal()")
            .unwrap();
    }
    // Segments before this one may predate the stanza (archived by `:`).
    let first = Repo::segment_of(&switch(p));
    eventually(
        ARCHIVED,
        "the switched segments reach the repository",
        || {
            let failed = p.sql("select failed_count from pg_stat_archiver").unwrap();
            let segments = repo.segments(STANZA);
            (segments.len() >= 3 && failed == "0")
                .then_some(())
                .ok_or(format!("{segments:?}, {failed} failed"))
        },
    );

    // The primary can no longer archive (its spool is unwritable), then writes three more
    // segments: only the replicas have them when its host dies.
    let spool = p.state_dir.join("pgbackrest/spool");
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o000)).unwrap();
    for _ in 0..3 {
        p.sql("insert into t values (1); select pg_switch_wal()")
            .unwrap();
    }
    eventually(ARCHIVED, "the primary's archiving fails", || {
        let failed = p.sql("select failed_count from pg_stat_archiver").unwrap();
        (failed != "0").then_some(()).ok_or(failed)
    });
    p.sql("insert into t values (1)").unwrap();
    let unarchived = switch(p);
    let before = timeline(p).unwrap();
    cluster.node_mut(primary).kill_host();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700)).unwrap();

    let promoted = eventually(ELECTION, "a new primary", || writable(&cluster));
    let n = cluster.node(promoted);
    let after = timeline(n).unwrap();
    assert!(after > before, "a new timeline: {before} -> {after}");
    n.sql("insert into t values (2)").unwrap();
    let last = switch(n);
    eventually(ARCHIVED, "both timelines archived, with no gap", || {
        let archived = repo.archived(STANZA);
        let has = |name: &str| archived.iter().any(|a| a.starts_with(name));
        let done = repo.has_history(STANZA, after)
            && has(&unarchived)
            && has(&last)
            && repo.gap_from(STANZA, first).is_none();
        done.then_some(()).ok_or(archived)
    });
    eventually(ARCHIVED, "the new primary says it pushed them", || {
        (n.log()
            .contains("archived what pg_wal held of earlier timelines"))
        .then_some(())
        .ok_or("not yet")
    });
}

#[test]
fn a_repository_that_is_missing_here_or_a_misspelt_key_is_refused_and_nothing_changes() {
    if !require_postgres() || !require_pgbackrest() {
        return;
    }
    let (cluster, primary) = healthy_cluster();
    let p = cluster.node(primary);
    let before = p.cli(&["config", "show"]);
    assert_success(&before, "config show");
    let backup = p.cli(&["backup"]);
    assert_error(&backup, 1, "the cluster has no [backup] configured");
    let missing = p.cli(&["config", "set", "backup.repo_path=/nonexistent/pgbackrest"]);
    let message = assert_error(&missing, 1, "is not a directory on this member");
    assert!(message.contains("mount the repository"), "{message}");
    let repo = Repo::new();
    let misspelt = p.cli(&[
        "config",
        "set",
        &format!("backup.repo_path={}", repo.path().display()),
        "backup.retention_fulll=3",
    ]);
    assert_error(&misspelt, 1, "unknown field `retention_fulll`");
    let relative = p.cli(&["config", "set", "backup.repo_path=backups"]);
    assert_error(&relative, 1, "must be an absolute path");
    let after = p.cli(&["config", "show"]);
    assert_eq!(
        String::from_utf8_lossy(&before.stdout),
        String::from_utf8_lossy(&after.stdout),
        "the configuration is unchanged"
    );
}

/// Sets `[backup]` to `repo` on `node`'s cluster and waits for its primary to create the
/// stanza.
fn configure(node: &common::Node, primary: &common::Node, repo: &Repo) {
    repo.set(node, &[]);
    repo.wait_stanza(primary, ARCHIVED);
}

#[test]
fn a_backup_on_request_is_taken_once_and_listed_with_its_wal_range() {
    if !require_postgres() || !require_pgbackrest() {
        return;
    }
    let (cluster, primary) = healthy_cluster();
    let repo = Repo::new();
    let p = cluster.node(primary);
    configure(p, p, &repo);
    p.sql("create table t (v int); insert into t values (1)")
        .unwrap();
    let full = p.cli(&["backup", "--type", "full"]);
    assert_success(&full, "backup --type full");
    let said = String::from_utf8_lossy(&full.stdout).into_owned();
    assert!(said.contains("taken by"), "{said}");
    assert!(
        !said.contains(&format!("taken by {}:", p.name)),
        "a replica takes it, not the primary: {said}"
    );
    let incr = cluster
        .node(1 + primary % 3)
        .cli(&["backup", "--type=incr"]);
    assert_success(&incr, "backup --type incr, asked of another member");

    let list = p.cli(&["backup", "list"]);
    assert_success(&list, "backup list");
    let table = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        table.contains("| full") && table.contains("| incr"),
        "{table}"
    );
    let info = p.cli(&["backup", "info", "--json"]);
    assert_success(&info, "backup info --json");
    let report: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let backups = report["info"]["backup"].as_array().unwrap();
    assert_eq!(backups.len(), 2, "one full and one incremental: {report}");
    assert!(report["last"]["ok"].as_bool().unwrap(), "{report}");
    assert!(report["pending"].is_null(), "{report}");
    let wal = &report["info"]["archive"][0];
    assert!(
        wal["min"].as_str().unwrap() <= backups[0]["archive"]["start"].as_str().unwrap(),
        "the WAL each backup needs is archived: {report}"
    );
    let bad = p.cli(&["backup", "--type", "weekly"]);
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    let said = String::from_utf8_lossy(&bad.stderr).into_owned();
    assert!(
        said.contains("\"weekly\" is not a backup type: full, diff or incr"),
        "{said}"
    );
}

/// A sample of `/metrics` on `node`, by metric name.
fn metric(node: &common::Node, name: &str) -> Option<String> {
    let (_, text) = node.get("/metrics").ok()?;
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_string)
}

#[test]
fn an_unreachable_repository_shows_in_metrics_and_list_stops_no_write_and_catches_up() {
    if !require_postgres() || !require_pgbackrest() {
        return;
    }
    let (cluster, primary) = healthy_cluster();
    let repo = Repo::new();
    let p = cluster.node(primary);
    configure(p, p, &repo);
    assert_eq!(metric(p, "pgquorum_archive_failing").as_deref(), Some("0"));
    let before = lease(&cluster, primary).unwrap();
    p.sql("create table t (v bigint primary key)").unwrap();
    let writer = Writer::start(
        "t",
        (1..=3).map(|i| cluster.node(i).pg_target()).collect(),
        Duration::from_millis(10),
    );

    // The repository goes away (as an NFS mount that hangs or is unmounted would).
    std::fs::set_permissions(repo.path(), std::fs::Permissions::from_mode(0o000)).unwrap();
    p.sql("select pg_switch_wal()").unwrap();
    eventually(ARCHIVED, "/metrics shows archiving failing", || {
        let failing = metric(p, "pgquorum_archive_failing");
        (failing.as_deref() == Some("1"))
            .then_some(())
            .ok_or(failing)
    });
    let failures = metric(p, "pgquorum_archive_failures_total").unwrap();
    assert_ne!(failures, "0");
    let other = cluster.node(1 + primary % 3);
    let warning = format!("Warning: WAL archiving fails on {}", p.name);
    eventually(ARCHIVED, "list on another member warns", || {
        let list = other.cli(&["list"]);
        let table = String::from_utf8_lossy(&list.stdout).into_owned();
        table.contains(&warning).then_some(()).ok_or(table)
    });
    p.sql("select pg_switch_wal()").unwrap();
    let wanted = switch(p);

    // It comes back: everything waiting in pg_wal is archived, with no gap.
    std::fs::set_permissions(repo.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
    eventually(ARCHIVED, "archiving catches up", || {
        let failing = metric(p, "pgquorum_archive_failing");
        let archived = repo.archived(STANZA);
        let caught_up = failing.as_deref() == Some("0")
            && archived.iter().any(|n| n.starts_with(&wanted))
            && repo.gap(STANZA).is_none();
        caught_up.then_some(()).ok_or((failing, archived))
    });
    eventually(ARCHIVED, "the warning goes", || {
        let list = other.cli(&["list"]);
        let table = String::from_utf8_lossy(&list.stdout).into_owned();
        (!table.contains("Warning: WAL archiving"))
            .then_some(())
            .ok_or(table)
    });
    let commits = no_commit_lost_and_no_failover(&cluster, primary, writer, before);
    assert!(commits > 0, "the writer committed throughout");
}

#[test]
fn the_schedule_takes_a_full_backup_when_there_is_none_and_a_replica_takes_it() {
    if !require_postgres() || !require_pgbackrest() {
        return;
    }
    let (cluster, primary) = healthy_cluster();
    let repo = Repo::new();
    let p = cluster.node(primary);
    repo.set(p, &["backup.full_every=7d", "backup.incr_every=1h"]);
    let report = eventually(ARCHIVED, "the scheduled full backup", || {
        let info = p.cli(&["backup", "info", "--json"]);
        let report: serde_json::Value =
            serde_json::from_slice(&info.stdout).map_err(|e| e.to_string())?;
        (report["last"]["ok"].as_bool() == Some(true))
            .then_some(report.clone())
            .ok_or(report.to_string())
    });
    let backups = report["info"]["backup"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "one backup, not one per member: {report}");
    assert_eq!(backups[0]["type"], "full", "{report}");
    assert_ne!(
        report["last_runner"],
        p.name.as_str(),
        "a replica took it: {report}"
    );
    assert!(
        p.log().contains("the schedule asks for a backup"),
        "the lease holder asked for it"
    );
}

/// The pids of the pgbackrest backup processes running now (the main one of each backup).
fn backup_pids() -> Vec<i32> {
    let out = std::process::Command::new("pgrep")
        .args(["-f", "pgbackrest .*--stanza=pgquorum backup --type="])
        .output()
        .expect("running pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn signal(pids: &[i32], signal: libc::c_int) {
    for pid in pids {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(*pid, signal) };
    }
}

#[test]
fn a_failover_during_a_backup_fails_that_backup_and_the_next_one_is_usable() {
    if !require_postgres() || !require_pgbackrest() {
        return;
    }
    let (mut cluster, primary) = healthy_cluster();
    let repo = Repo::new();
    let p = cluster.node(primary);
    configure(p, p, &repo);
    p.sql("create table t (v int); insert into t values (1)")
        .unwrap();
    p.sql("create table big as select g, md5(g::text) as h from generate_series(1, 1000000) g")
        .unwrap();
    let other = 1 + primary % 3;
    let asked = cluster.node(other).cli(&["backup", "--wait=0s"]);
    assert_success(&asked, "backup --wait=0s");
    // Hold the backup mid-way, then lose the primary it started on.
    let pids = eventually(ARCHIVED, "the backup runs", || {
        let pids = backup_pids();
        (!pids.is_empty())
            .then_some(pids)
            .ok_or("no pgbackrest backup yet")
    });
    signal(&pids, libc::SIGSTOP);
    cluster.node_mut(primary).kill_host();
    signal(&pids, libc::SIGCONT);
    let promoted = eventually(ELECTION, "a new primary", || writable(&cluster));
    let n = cluster.node(promoted);
    let report = |node: &common::Node| -> serde_json::Value {
        let info = node.cli(&["backup", "info", "--json"]);
        serde_json::from_slice(&info.stdout).unwrap_or_default()
    };
    // pgBackRest gives up on the lost primary after its I/O timeouts (about two minutes
    // here, with its 60 s io-timeout).
    eventually(
        Duration::from_secs(240),
        "the interrupted backup is reported failed",
        || {
            let r = report(n);
            (r["last"]["id"] == 1 && r["last"]["ok"] == false)
                .then_some(())
                .ok_or(r.to_string())
        },
    );
    eventually(ARCHIVED, "list warns of it", || {
        let list = n.cli(&["list"]);
        let table = String::from_utf8_lossy(&list.stdout).into_owned();
        table
            .contains("Warning: the last backup (full, ")
            .then_some(())
            .ok_or(table)
    });

    n.sql("insert into t values (2)").unwrap();
    let again = n.cli(&["backup"]);
    assert_success(&again, "a backup after the failover");
    let r = report(n);
    assert_eq!(r["last"]["ok"], true, "{r}");
    assert_eq!(r["info"]["status"]["code"], 0, "the stanza is healthy: {r}");
    let backups = r["info"]["backup"].as_array().unwrap();
    assert_eq!(
        backups.len(),
        1,
        "the interrupted backup is not listed as one: {r}"
    );
    assert!(
        backups[0]["archive"]["start"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{:08X}", timeline(n).unwrap())),
        "the new backup is on the new timeline: {r}"
    );
}

/// `node` was restored from the repository (not cloned), streams, and has `rows` rows in t.
fn restored_and_streams(node: &common::Node, rows: &str) -> Result<(), String> {
    if !node
        .log()
        .contains("restored from the pgBackRest repository")
    {
        return Err("not restored (yet)".into());
    }
    let status = node.sql("select status from pg_stat_wal_receiver")?;
    let count = node.sql("select count(*) from t")?;
    (status == "streaming" && count == rows)
        .then_some(())
        .ok_or(format!("{status:?}, {count} rows"))
}

#[test]
fn a_member_added_and_one_reinitialised_from_the_repository_stream_and_catch_up() {
    if !require_postgres() || !require_pgbackrest() {
        return;
    }
    let (mut cluster, primary) = healthy_cluster();
    let repo = Repo::new();
    let p = cluster.node(primary);
    repo.set(p, &["backup.create_replica_from_backup=true"]);
    let early = eventually(ARCHIVED, "the stanza, or a refusal before it", || {
        let out = p.cli(&["backup", "--wait=0s"]);
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        match out.status.success() {
            true => Err("accepted".to_string()),
            false if said.contains("the repository has no stanza yet") => Ok(said),
            false => Err(said),
        }
    });
    assert!(early.contains("retry in a few seconds"), "{early}");
    repo.wait_stanza(p, ARCHIVED);
    p.sql("create table t (v int); insert into t values (1)")
        .unwrap();
    // No backup yet: a reinit falls back to pg_basebackup.
    let third = 1 + (primary + 1) % 3;
    let third_name = cluster.node(third).name.clone();
    assert_success(
        &p.cli(&["reinit", &third_name, "--force"]),
        "reinit with no backup",
    );
    let t = cluster.node(third);
    eventually(
        FORMATION,
        "the member cloned with pg_basebackup instead streams",
        || {
            if !t.log().contains("cloning with pg_basebackup instead") {
                return Err("no fallback (yet)".to_string());
            }
            let rows = t.sql("select count(*) from t")?;
            let status = t.sql("select status from pg_stat_wal_receiver")?;
            (rows == "1" && status == "streaming")
                .then_some(())
                .ok_or(format!("{status}, {rows}"))
        },
    );
    assert_success(&p.cli(&["backup"]), "backup");
    // Written after the backup: it comes from the archive or the stream.
    p.sql("insert into t values (2)").unwrap();

    let replica = 1 + primary % 3;
    let name = cluster.node(replica).name.clone();
    assert_success(&p.cli(&["reinit", &name, "--force"]), "reinit of a replica");
    let r = cluster.node(replica);
    eventually(
        FORMATION,
        "the member restored from the repository streams",
        || restored_and_streams(r, "2"),
    );

    let token = p.cli(&["token", "create"]);
    assert_success(&token, "token create");
    let peer = p.peer_addr();
    let mut fourth = cluster.new_node("n4");
    let joined = fourth.join(&peer, String::from_utf8_lossy(&token.stdout).trim());
    assert_success(&joined, "n4 joins");
    fourth.start();
    cluster.add(fourth);
    let n4 = cluster.node(4);
    (cluster.node(primary))
        .sql("insert into t values (3)")
        .unwrap();
    eventually(
        FORMATION,
        "the member added from the repository streams",
        || restored_and_streams(n4, "3"),
    );
}
