//! Backups with real pgBackRest (Debian's package) and real PostgreSQL: three members that
//! share one repository directory, as hosts sharing an NFS mount would.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::backup::Repo;
use common::pg::{healthy_cluster, writable};
use common::{assert_error, assert_success, eventually, require_postgres, ELECTION};

const STANZA: &str = "pgquorum";
/// Stanza creation, `pgbackrest check` and the archiving of a switched segment.
const ARCHIVED: Duration = Duration::from_secs(60);

fn require_pgbackrest() -> bool {
    common::needs(
        std::path::Path::new("/usr/bin/pgbackrest")
            .is_file()
            .then_some(())
            .ok_or_else(|| "pgbackrest is not installed (apt-get install pgbackrest)".into()),
    )
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
    let set = p.cli(&[
        "config",
        "set",
        &format!("backup.repo_path={}", repo.path().display()),
    ]);
    assert_success(&set, "config set backup.repo_path");
    eventually(ARCHIVED, "the primary creates the stanza", || {
        p.log()
            .contains("pgBackRest stanza ready")
            .then_some(())
            .ok_or_else(|| repo.archived(STANZA))
    });
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
    let unarchived = p
        .sql("select pg_walfile_name(pg_current_wal_lsn() - 1)")
        .unwrap();
    let before = timeline(p).unwrap();
    cluster.node_mut(primary).kill_host();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700)).unwrap();

    let promoted = eventually(ELECTION, "a new primary", || writable(&cluster));
    let n = cluster.node(promoted);
    let after = timeline(n).unwrap();
    assert!(after > before, "a new timeline: {before} -> {after}");
    n.sql("insert into t values (2); select pg_switch_wal()")
        .unwrap();
    let last = n
        .sql("select pg_walfile_name(pg_current_wal_lsn() - 1)")
        .unwrap();
    eventually(ARCHIVED, "both timelines archived, with no gap", || {
        let archived = repo.archived(STANZA);
        let has = |name: &str| archived.iter().any(|a| a.starts_with(name));
        let done = repo.has_history(STANZA, after)
            && has(&unarchived)
            && has(&last)
            && repo.gap(STANZA).is_none();
        done.then_some(()).ok_or(archived)
    });
    assert!(
        n.log()
            .contains("archived what pg_wal held of earlier timelines"),
        "the new primary pushed the old timeline's last segments"
    );
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
    let set = node.cli(&[
        "config",
        "set",
        &format!("backup.repo_path={}", repo.path().display()),
    ]);
    assert_success(&set, "config set backup.repo_path");
    eventually(ARCHIVED, "the primary creates the stanza", || {
        primary
            .log()
            .contains("pgBackRest stanza ready")
            .then_some(())
            .ok_or_else(|| repo.archived(STANZA))
    });
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
