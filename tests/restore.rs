//! Restoring the whole cluster to a point in time (`pgquorum restore --to`) with real
//! pgBackRest and real PostgreSQL: three members sharing one repository directory.

mod common;

use std::time::Duration;

use common::backup::{require_pgbackrest, Repo};
use common::pg::{healthy_cluster, lease, replicas_streaming, writable, FORMATION};
use common::{assert_error, assert_success, eventually, require_postgres, ELECTION};

/// Stanza creation, `pgbackrest check`, archiving.
const ARCHIVED: Duration = Duration::from_secs(60);
/// Every member stopping, the restore, the replay, and two clones.
const RESTORED: Duration = Duration::from_secs(120);

/// The values in table `t` on `node`, in order.
fn rows(node: &common::Node) -> Result<String, String> {
    node.sql("select coalesce(string_agg(v::text, ',' order by v), '') from t")
}

/// Asks for a restore to `to` on `node` and waits until it has ended and the cluster is
/// whole again: one primary, both replicas streaming, every member holding `want` in `t`.
/// Returns the primary.
fn restore(cluster: &common::TestCluster, node: usize, to: &str, want: &str) -> usize {
    let asked = cluster
        .node(node)
        .cli(&["restore", "--to", to, "--wait", "0"]);
    assert_success(&asked, &format!("restore --to {to}"));
    let said = String::from_utf8_lossy(&asked.stdout).into_owned();
    let id = said
        .split_whitespace()
        .nth(1)
        .and_then(|id| id.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no restore id in {said:?}"));
    let report = eventually(RESTORED, &format!("restore {id} to {to} ends"), || {
        let info = cluster.node(node).cli(&["backup", "info", "--json"]);
        let report: serde_json::Value =
            serde_json::from_slice(&info.stdout).map_err(|e| e.to_string())?;
        (report["last_restore"]["id"].as_u64() == Some(id))
            .then_some(report.clone())
            .ok_or(report.to_string())
    });
    assert!(
        report["last_restore"]["ok"].as_bool().unwrap(),
        "restore {id}: {report}"
    );
    let primary = eventually(ELECTION, "the restored primary", || writable(cluster));
    eventually(RESTORED, "both others cloned it and stream", || {
        replicas_streaming(cluster, primary)
    });
    for i in 1..=3 {
        eventually(ARCHIVED, &format!("n{i} holds {want:?}"), || {
            let got = rows(cluster.node(i))?;
            (got == want).then_some(()).ok_or(got)
        });
    }
    primary
}

#[test]
fn a_restore_goes_back_to_latest_after_a_failover_then_to_a_time_between_two_rows() {
    if !require_postgres() || !require_pgbackrest() {
        return;
    }
    let (mut cluster, first) = healthy_cluster();
    let repo = Repo::new();
    let p = cluster.node(first);
    repo.set(p, &[]);
    repo.wait_stanza(p, ARCHIVED);
    p.sql("create table t (v int)").unwrap();
    assert_success(&p.cli(&["backup", "--wait", "50s"]), "backup");
    p.sql("insert into t values (1)").unwrap();

    cluster.node_mut(first).kill_host();
    let second = eventually(ELECTION, "a new primary", || writable(&cluster));
    let n = cluster.node(second);
    // After row 1's commit and the failover, before row 2's commit.
    let between = n.sql("select clock_timestamp()").unwrap();
    n.sql("insert into t values (2)").unwrap();
    let timeline = |node: &common::Node| -> u32 {
        let name = node
            .sql("select pg_walfile_name(pg_current_wal_lsn())")
            .unwrap();
        u32::from_str_radix(&name[..8], 16).unwrap()
    };
    let failed_over = timeline(n);
    cluster.node_mut(first).start();
    eventually(FORMATION, "the old primary rejoins", || {
        replicas_streaming(&cluster, second)
    });

    // Latest, after the failover: both rows, the archive having no gap across it.
    let restored = restore(&cluster, 1 + second % 3, "latest", "1,2");
    let on_latest = timeline(cluster.node(restored));
    assert!(
        on_latest > failed_over,
        "restored onto a new timeline: {failed_over} -> {on_latest}"
    );
    for i in 1..=3 {
        let aside = cluster.node(i).state_dir.join("pgdata.before-restore-1");
        assert!(
            aside.join("PG_VERSION").is_file(),
            "n{i}'s data directory was moved aside, not deleted: {}",
            aside.display()
        );
    }

    // A time between the rows: row 1 only. That time lies on the failover's timeline, two
    // timelines before the one restored from.
    let restored = restore(&cluster, restored, &between, "1");
    let on_time = timeline(cluster.node(restored));
    assert!(on_time > on_latest, "{on_latest} -> {on_time}");
    let (holder, _) = lease(&cluster, restored).unwrap();
    assert_eq!(
        holder as usize, restored,
        "the restored primary holds the lease"
    );
    cluster
        .node(restored)
        .sql("insert into t values (3)")
        .unwrap();
}

#[test]
fn a_restore_target_outside_the_repository_is_refused_and_nothing_stops() {
    if !require_postgres() || !require_pgbackrest() {
        return;
    }
    let (cluster, primary) = healthy_cluster();
    let p = cluster.node(primary);
    let refused = assert_error(&p.cli(&["restore", "--to", "latest"]), 1, "[backup]");
    assert!(refused.contains("backup.repo_path"), "{refused}");
    let repo = Repo::new();
    repo.set(p, &[]);
    repo.wait_stanza(p, ARCHIVED);
    assert_error(
        &p.cli(&["restore", "--to", "latest"]),
        1,
        "the repository has no backup to restore from; take one with `pgquorum backup`",
    );
    assert_success(&p.cli(&["backup", "--wait", "50s"]), "backup");
    let before = lease(&cluster, primary).unwrap();
    for (to, says) in [
        (
            "2000-01-01 00:00:00+00",
            "is before the end of the oldest backup",
        ),
        ("2999-01-01 00:00:00+00", "is in the future"),
        ("yesterday", "is not one of: latest; a WAL position"),
        ("2026-12-07 10:00:00", "a time with its UTC offset"),
        ("0/1", "is before the end of the oldest backup"),
        ("FFFFFFFF/0", "after the last WAL the primary wrote"),
    ] {
        assert_error(&p.cli(&["restore", "--to", to]), 1, says);
    }
    let info = p.cli(&["backup", "info", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert!(report["restore"].is_null(), "no restore recorded: {report}");
    assert_eq!(
        lease(&cluster, primary).unwrap(),
        before,
        "no member stopped"
    );
    assert_eq!(writable(&cluster).unwrap(), primary);
}

#[test]
fn the_restore_drill_restores_the_newest_backup_on_a_replica_and_leaves_nothing_behind() {
    if !require_postgres() || !require_pgbackrest() {
        return;
    }
    let (cluster, primary) = healthy_cluster();
    let p = cluster.node(primary);
    let repo = Repo::new();
    repo.set(p, &[]);
    repo.wait_stanza(p, ARCHIVED);
    assert_error(
        &p.cli(&["backup", "verify"]),
        1,
        "the repository has no backup to verify yet; take one with `pgquorum backup`",
    );
    p.sql("create table t (v int); insert into t values (1)")
        .unwrap();
    assert_success(&p.cli(&["backup", "--wait", "50s"]), "backup");
    let before = lease(&cluster, primary).unwrap();

    let drill = p.cli(&["backup", "verify", "--wait", "50s"]);
    assert_success(&drill, "backup verify");
    let said = String::from_utf8_lossy(&drill.stdout).into_owned();
    assert!(
        said.contains("restored into a scratch directory, consistent at")
            && said.contains("relations readable"),
        "{said}"
    );
    assert!(
        !said.contains(&format!("passed on {}:", p.name)),
        "a replica runs the drill, not the primary: {said}"
    );
    for i in 1..=3 {
        let dir = cluster.node(i).state_dir.join("pgbackrest");
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("verify-"))
            .collect();
        assert!(left.is_empty(), "n{i} left {left:?} in {}", dir.display());
    }
    assert!(
        !repo.has_history("pgquorum", 2),
        "the drill archived nothing of its own"
    );
    let info = p.cli(&["backup", "info"]);
    let text = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(text.contains("last restore drill: "), "{text}");

    // Without the WAL the backup needs to be consistent, the drill fails, and says why.
    let info = p.cli(&["backup", "info", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let needed = report["info"]["backup"][0]["archive"]["start"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(repo.remove_archived("pgquorum", &needed) > 0, "{needed}");
    let broken = assert_error(
        &p.cli(&["backup", "verify", "--wait", "50s"]),
        1,
        "failed on",
    );
    assert!(broken.contains("exited during startup"), "{broken}");
    let info = p.cli(&["backup", "info"]);
    let text = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(text.contains("FAILED"), "{text}");
    for i in 1..=3 {
        let dir = cluster.node(i).state_dir.join("pgbackrest");
        let left = std::fs::read_dir(&dir).unwrap().flatten();
        let left: Vec<_> = left
            .filter(|e| e.file_name().to_string_lossy().starts_with("verify-"))
            .collect();
        assert!(left.is_empty(), "n{i} kept a failed drill's directory");
    }
    assert_eq!(lease(&cluster, primary).unwrap(), before, "no failover");
    eventually(FORMATION, "both replicas still stream", || {
        replicas_streaming(&cluster, primary)
    });
}
