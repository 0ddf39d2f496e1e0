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

pub use agent::Agent;

use std::collections::BTreeMap;

use crate::cluster::{BackupConfig, ClusterState, NodeId, RepoType};
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
