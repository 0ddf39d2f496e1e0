//! Backups and WAL archiving with pgBackRest, driven by the cluster (DESIGN §4, issue 19).
//!
//! ```text
//!  DynamicConfig.backup ─► backrest_of ─► Postgres::set_backrest ─► pgbackrest.conf,
//!                                                  archive_command / restore_command
//!  Agent (one task per member): on the lease holder, creates the stanza and checks that
//!  archiving works, once per [backup] configuration
//! ```
//!
//! Every member archives (`archive_mode = always`): the WAL a primary had not archived when
//! it failed is archived by the standbys that received it, and the history file of each new
//! timeline by the member promoted to it, so the archive has no gap across a failover.

mod agent;
pub mod restore;

pub use agent::Agent;

use std::collections::BTreeMap;

use crate::cluster::{BackupConfig, BackupKind, ClusterState, NodeId, RepoType};
use crate::postgres::{Backrest, PgStatus};

/// Seconds since the Unix epoch by this host's clock (for the proposals it makes).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Who takes the next backup: with `from_standby`, the streaming replica furthest ahead
/// (ties to the lowest id), so the primary's disks and CPU are spared; otherwise, or with
/// no such replica, the lease holder when its PostgreSQL is writable. Pure.
pub fn choose_runner(
    state: &ClusterState,
    statuses: &BTreeMap<NodeId, PgStatus>,
    from_standby: bool,
) -> Option<NodeId> {
    let holder = state.lease_holder()?;
    let member = |id: &NodeId| state.member(*id).is_some_and(|m| !m.is_witness());
    let replica = statuses
        .iter()
        .filter(|(id, pg)| {
            **id != holder && member(id) && pg.running && pg.in_recovery && pg.streaming
        })
        .max_by(|(a, x), (b, y)| x.wal_position.cmp(&y.wal_position).then(b.cmp(a)))
        .map(|(id, _)| *id);
    match replica {
        Some(id) if from_standby => Some(id),
        _ => statuses
            .get(&holder)
            .is_some_and(PgStatus::is_writable)
            .then_some(holder),
    }
}

/// When the newest backup of each type finished (Unix seconds), as the repository says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Newest {
    pub full: Option<u64>,
    pub diff: Option<u64>,
    pub incr: Option<u64>,
}

impl Newest {
    /// From `pgbackrest info --output=json`'s entry for the stanza.
    pub fn from_info(info: &serde_json::Value) -> Newest {
        let mut newest = Newest::default();
        for backup in info["backup"].as_array().into_iter().flatten() {
            let stop = backup
                .pointer("/timestamp/stop")
                .and_then(serde_json::Value::as_u64);
            let slot = match backup["type"].as_str() {
                Some("full") => &mut newest.full,
                Some("diff") => &mut newest.diff,
                Some("incr") => &mut newest.incr,
                _ => continue,
            };
            *slot = (*slot).max(stop);
        }
        newest
    }
}

/// The backup the schedule asks for at `now`, if any: a full one when the newest full is
/// older than `full_every` (or there is none), else a differential when the newest full or
/// differential is older than `diff_every`, else an incremental when the newest backup of
/// any type is older than `incr_every`. Nothing without a schedule. Pure.
pub fn due(config: &BackupConfig, newest: Newest, now: u64) -> Option<BackupKind> {
    let older = |at: Option<u64>, every: Option<std::time::Duration>| {
        every.is_some_and(|every| at.is_none_or(|at| now.saturating_sub(at) >= every.as_secs()))
    };
    let scheduled = config
        .full_every
        .or(config.diff_every)
        .or(config.incr_every);
    if scheduled.is_some() && newest.full.is_none() {
        return Some(BackupKind::Full);
    }
    let full_or_diff = newest.full.max(newest.diff);
    let any = full_or_diff.max(newest.incr);
    if older(newest.full, config.full_every) {
        Some(BackupKind::Full)
    } else if older(full_or_diff, config.diff_every) {
        Some(BackupKind::Diff)
    } else if older(any, config.incr_every) {
        Some(BackupKind::Incr)
    } else {
        None
    }
}

/// What `list` warns of about backups: the primary failing to archive, the last backup
/// failing. Pure: from the state and the members' statuses.
pub fn warnings(state: &ClusterState, statuses: &BTreeMap<NodeId, PgStatus>) -> Vec<String> {
    let mut out = Vec::new();
    if state.config.backup.is_none() {
        return out;
    }
    let holder = state.lease_holder();
    let archiver = holder
        .and_then(|h| statuses.get(&h))
        .and_then(|pg| pg.archive);
    if let (Some(holder), Some(archiver)) = (holder, archiver.filter(|a| a.failing())) {
        let since = archiver
            .archived_unix
            .map_or("since it started".to_string(), |at| {
                format!("since {}", rfc3339(at))
            });
        out.push(format!(
            "WAL archiving fails on {} ({} failed attempts; nothing archived {since}): writes \
             go on and WAL waits in pg_wal; check the repository (`pgquorum backup info`, \
             pgBackRest's log in the state directory)",
            state.name_of(holder),
            archiver.failed_count
        ));
    }
    if let Some(last) = state.last_backup.as_ref().filter(|b| !b.ok) {
        out.push(format!(
            "the last backup ({}, {} on {}) failed: {}",
            last.kind.as_str(),
            rfc3339(last.finished_unix),
            state.name_of(last.runner),
            last.message.lines().next().unwrap_or_default()
        ));
    }
    out
}

fn rfc3339(unix: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// One line for a failure that may carry a PostgreSQL log tail: the first line, then the
/// tail's FATAL and ERROR lines (what an operator reads first).
pub fn one_line(text: &str) -> String {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default().trim_end_matches(':');
    let first = first.trim_end_matches("; log tail");
    let causes: Vec<&str> = lines
        .filter_map(|l| {
            let (_, cause) = l.split_once("FATAL:").or_else(|| l.split_once("ERROR:"))?;
            // A client turned away while it started up says nothing of why it stopped.
            Some(cause.trim()).filter(|c| *c != "the database system is starting up")
        })
        .collect();
    match causes.is_empty() {
        true => first.to_string(),
        false => format!("{first}: {}", causes.join("; ")),
    }
}

/// What can be checked of `config` on this member before it is proposed: pgbackrest is
/// installed, and a directory repository exists here. The message names the fix.
pub fn precheck(config: &BackupConfig) -> Result<(), String> {
    crate::postgres::backrest_bin().map_err(|e| e.to_string())?;
    if matches!(config.repo_type, RepoType::Posix | RepoType::Cifs) {
        let path = std::path::Path::new(&config.repo_path);
        if !path.is_dir() {
            return Err(format!(
                "backup.repo_path {} is not a directory on this member: mount the repository \
                 at that path on every member first (an NFS export, say), or correct the path; \
                 nothing was changed",
                config.repo_path
            ));
        }
    }
    Ok(())
}

/// The `[global]` lines of every member's `pgbackrest.conf` for `config`. Pure.
pub fn backrest_of(config: &BackupConfig) -> Backrest {
    let mut global: Vec<(String, String)> = vec![
        ("repo1-type".into(), config.repo_type.as_str().into()),
        ("repo1-path".into(), config.repo_path.clone()),
        (
            "repo1-retention-full".into(),
            config.retention_full.to_string(),
        ),
    ];
    if let Some(diff) = config.retention_diff {
        global.push(("repo1-retention-diff".into(), diff.to_string()));
    }
    for (key, value) in &config.repo_options {
        global.push((format!("repo1-{key}"), value.clone()));
    }
    for (key, value) in [
        ("compress-type", config.compress_type.clone()),
        ("process-max", config.process_max.to_string()),
        // archive-push returns once the segment is queued in the spool and pushed by a
        // background process, several at a time; archive-get prefetches likewise.
        ("archive-async", "y".into()),
        // A backup starts with an immediate checkpoint rather than waiting for the next.
        ("start-fast", "y".into()),
        // A restore into an existing directory copies only what differs.
        ("delta", "y".into()),
        ("log-level-console", "warn".into()),
        ("log-level-file", "info".into()),
    ] {
        global.push((key.into(), value));
    }
    Backrest {
        stanza: config.stanza.clone(),
        global,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_with_a_log_tail_is_told_in_one_line_with_its_fatal_lines() {
        let text = "replaying: postgres in /d exited during startup (exit status: 1); log tail:\n\
                    2026-12-07 15:03:04.769 UTC [1] LOG:  starting point-in-time recovery\n\
                    2026-12-07 15:03:04.903 UTC [1] FATAL:  could not locate required checkpoint record\n\
                    ERROR: [073]: unable to chdir() to '/w'";
        assert_eq!(
            one_line(text),
            "replaying: postgres in /d exited during startup (exit status: 1): could not locate \
             required checkpoint record; [073]: unable to chdir() to '/w'"
        );
        assert_eq!(one_line("pgbackrest failed"), "pgbackrest failed");
    }

    #[test]
    fn the_repository_options_become_repo1_lines_after_the_typed_ones() {
        let mut config = BackupConfig {
            repo_type: RepoType::S3,
            repo_path: "/cluster-a".into(),
            retention_diff: Some(3),
            ..Default::default()
        };
        config
            .repo_options
            .insert("s3-bucket".into(), "backups".into());
        let backrest = backrest_of(&config);
        assert_eq!(backrest.stanza, "pgquorum");
        let lines: Vec<String> = (backrest.global.iter())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            lines[..5],
            [
                "repo1-type=s3",
                "repo1-path=/cluster-a",
                "repo1-retention-full=2",
                "repo1-retention-diff=3",
                "repo1-s3-bucket=backups",
            ]
        );
        assert!(lines.contains(&"archive-async=y".to_string()));
    }

    #[test]
    fn a_backup_is_taken_by_the_replica_furthest_ahead_else_by_a_writable_primary() {
        use crate::cluster::{Epoch, Lease, Member, Tags};
        use crate::postgres::Lsn;
        let mut state = ClusterState::default();
        for id in 1..=4 {
            let pg_addr = if id == 4 {
                String::new()
            } else {
                format!("h{id}:5432")
            };
            let member = Member {
                id: NodeId(id),
                name: format!("n{id}"),
                peer_addr: String::new(),
                api_addr: String::new(),
                pg_addr,
                tags: Tags::default(),
            };
            state.members.insert(NodeId(id), member);
        }
        state.lease = Some(Lease {
            holder: NodeId(1),
            epoch: Epoch(1),
            seq: 0,
        });
        let primary = PgStatus {
            running: true,
            ..Default::default()
        };
        let replica = |at: u64| PgStatus {
            running: true,
            in_recovery: true,
            streaming: true,
            wal_position: Some(Lsn(at)),
            ..Default::default()
        };
        let statuses = |entries: &[(u64, PgStatus)]| -> BTreeMap<NodeId, PgStatus> {
            entries
                .iter()
                .map(|(id, s)| (NodeId(*id), s.clone()))
                .collect()
        };
        let cases = [
            (
                statuses(&[(1, primary.clone()), (2, replica(5)), (3, replica(9))]),
                true,
                Some(3),
            ),
            (
                statuses(&[(1, primary.clone()), (2, replica(9)), (3, replica(9))]),
                true,
                Some(2),
            ),
            (
                statuses(&[(1, primary.clone()), (2, replica(9))]),
                false,
                Some(1),
            ),
            (
                statuses(&[
                    (1, primary.clone()),
                    (
                        2,
                        PgStatus {
                            streaming: false,
                            ..replica(9)
                        },
                    ),
                ]),
                true,
                Some(1),
            ),
            (
                statuses(&[(1, PgStatus::default()), (2, replica(9))]),
                false,
                None,
            ),
            (
                statuses(&[(1, primary.clone()), (4, replica(99))]),
                true,
                Some(1),
            ),
        ];
        for (i, (statuses, from_standby, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                choose_runner(&state, &statuses, from_standby),
                want.map(NodeId),
                "case {i}"
            );
        }
    }

    #[test]
    fn list_warns_of_failing_archiving_on_the_primary_and_of_a_failed_backup() {
        use crate::cluster::{BackupKind, BackupOutcome, Epoch, Lease, Member, Tags};
        use crate::postgres::Archiver;
        let mut state = ClusterState::default();
        state.members.insert(
            NodeId(1),
            Member {
                id: NodeId(1),
                name: "n1".into(),
                peer_addr: String::new(),
                api_addr: String::new(),
                pg_addr: "h1:5432".into(),
                tags: Tags::default(),
            },
        );
        state.lease = Some(Lease {
            holder: NodeId(1),
            epoch: Epoch(1),
            seq: 0,
        });
        let failing = Archiver {
            failed_count: 3,
            archived_unix: Some(1_796_600_000),
            failed_unix: Some(1_796_600_060),
        };
        let statuses: BTreeMap<NodeId, PgStatus> = [(
            NodeId(1),
            PgStatus {
                running: true,
                archive: Some(failing),
                ..Default::default()
            },
        )]
        .into();
        assert!(
            warnings(&state, &statuses).is_empty(),
            "no [backup]: archive_command is ':'"
        );
        state.config.backup = Some(BackupConfig {
            repo_path: "/mnt/b".into(),
            ..Default::default()
        });
        let said = warnings(&state, &statuses);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].starts_with(
                "WAL archiving fails on n1 (3 failed attempts; nothing archived since 2026-"
            ),
            "{said:?}"
        );
        state.last_backup = Some(BackupOutcome {
            id: 4,
            kind: BackupKind::Incr,
            runner: NodeId(1),
            ok: false,
            message: "pgbackrest backup failed\nmore".into(),
            finished_unix: 1_796_600_100,
            verify: false,
        });
        let healthy: BTreeMap<NodeId, PgStatus> = [(
            NodeId(1),
            PgStatus {
                archive: Some(Archiver {
                    archived_unix: Some(1_796_600_120),
                    ..failing
                }),
                ..Default::default()
            },
        )]
        .into();
        let said = warnings(&state, &healthy);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].starts_with("the last backup (incr, "), "{said:?}");
        assert!(
            said[0].ends_with("on n1) failed: pgbackrest backup failed"),
            "{said:?}"
        );
    }

    #[test]
    fn the_schedule_asks_for_the_largest_type_that_is_due() {
        let day = std::time::Duration::from_secs(86_400);
        let weekly_daily = BackupConfig {
            repo_path: "/b".into(),
            full_every: Some(7 * day),
            diff_every: Some(day),
            ..Default::default()
        };
        let hourly = BackupConfig {
            incr_every: Some(day / 24),
            ..weekly_daily.clone()
        };
        let now = 100 * 86_400;
        let at = |days_ago: u64| Some(now - days_ago * 86_400);
        let newest = |full, diff, incr| Newest { full, diff, incr };
        let cases = [
            (
                "no schedule",
                BackupConfig::default(),
                newest(None, None, None),
                None,
            ),
            (
                "nothing yet",
                weekly_daily.clone(),
                newest(None, None, None),
                Some(BackupKind::Full),
            ),
            (
                "a fresh full",
                weekly_daily.clone(),
                newest(at(0), None, None),
                None,
            ),
            (
                "full 2 days old",
                weekly_daily.clone(),
                newest(at(2), None, None),
                Some(BackupKind::Diff),
            ),
            (
                "a diff today",
                weekly_daily.clone(),
                newest(at(2), at(0), None),
                None,
            ),
            (
                "full 8 days old",
                weekly_daily.clone(),
                newest(at(8), at(0), None),
                Some(BackupKind::Full),
            ),
            (
                "hourly incr due",
                hourly.clone(),
                newest(Some(now - 3 * 3600), None, Some(now - 7200)),
                Some(BackupKind::Incr),
            ),
            (
                "incr fresh",
                hourly,
                newest(at(0), None, Some(now - 60)),
                None,
            ),
            (
                "only incrementals scheduled, none yet but a full",
                BackupConfig {
                    incr_every: Some(day),
                    repo_path: "/b".into(),
                    ..Default::default()
                },
                newest(at(3), None, None),
                Some(BackupKind::Incr),
            ),
        ];
        for (what, config, newest, want) in cases {
            assert_eq!(due(&config, newest, now), want, "{what}");
        }
        let info = serde_json::json!({"backup": [
            {"type": "full", "timestamp": {"stop": 10}},
            {"type": "incr", "timestamp": {"stop": 20}},
            {"type": "full", "timestamp": {"stop": 30}},
        ]});
        assert_eq!(Newest::from_info(&info), newest(Some(30), None, Some(20)));
    }

    #[test]
    fn the_conf_file_has_the_shared_lines_then_this_members_stanza() {
        let backrest = backrest_of(&BackupConfig {
            repo_path: "/mnt/b".into(),
            ..Default::default()
        });
        let text = crate::postgres::render_backrest_conf(
            &backrest,
            std::path::Path::new("/var/lib/pgquorum/pgbackrest"),
            &[("pg1-path", "/var/lib/pgquorum/data".into())],
        );
        let global = text.find("[global]\n").unwrap();
        let stanza = text
            .find("\n[pgquorum]\npg1-path=/var/lib/pgquorum/data\n")
            .unwrap();
        assert!(global < stanza, "{text}");
        assert!(text.contains("spool-path=/var/lib/pgquorum/pgbackrest/spool\n"));
        assert!(text[global..stanza].contains("repo1-path=/mnt/b\n"));
    }
}
