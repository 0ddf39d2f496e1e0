//! The `[backup]` section: what it accepts, what it refuses and why, and the command level
//! that keeps it from members whose binary would refuse the field; backups and restores as
//! the cluster state records them.

use super::*;
use crate::cluster::{Restore, RestoreOutcome, RestoreTarget};

fn with_backup(edit: fn(&mut BackupConfig)) -> DynamicConfig {
    let mut backup = BackupConfig {
        repo_path: "/mnt/pgbackrest".into(),
        ..Default::default()
    };
    edit(&mut backup);
    DynamicConfig {
        backup: Some(backup),
        ..Default::default()
    }
}

#[test]
fn a_backup_section_is_refused_with_the_key_and_the_fix() {
    let cases: [(DynamicConfig, &str); 12] = [
        (
            with_backup(|b| b.repo_path.clear()),
            "backup.repo_path is missing",
        ),
        (
            with_backup(|b| b.repo_path = "backups".into()),
            "backup.repo_path \"backups\" must be an absolute path",
        ),
        (
            with_backup(|b| b.repo_path = "/mnt/my backups".into()),
            "backup.repo_path \"/mnt/my backups\" must be an absolute path",
        ),
        (
            with_backup(|b| b.stanza = "Main Cluster".into()),
            "backup.stanza \"Main Cluster\" is not a stanza name",
        ),
        (
            with_backup(|b| b.retention_full = 0),
            "backup.retention_full (0) must be at least 1",
        ),
        (
            with_backup(|b| b.compress_type = "xz".into()),
            "backup.compress_type \"xz\" is not one of",
        ),
        (
            with_backup(|b| b.process_max = 0),
            "backup.process_max (0) must be between 1 and 64",
        ),
        (
            with_backup(|b| b.full_every = Some(Duration::from_secs(5))),
            "backup.full_every must be at least 1m",
        ),
        (
            with_backup(|b| {
                b.repo_options.insert("repo1-s3-bucket".into(), "x".into());
            }),
            "backup.repo_options key \"repo1-s3-bucket\" is set by pgquorum",
        ),
        (
            with_backup(|b| {
                b.repo_options.insert("path".into(), "/elsewhere".into());
            }),
            "backup.repo_options key \"path\" is set by pgquorum",
        ),
        (
            with_backup(|b| {
                b.repo_options
                    .insert("s3-bucket".into(), "db\n[evil]".into());
            }),
            "backup.repo_options value of \"s3-bucket\" is empty or holds a newline",
        ),
        (
            {
                let mut c = with_backup(|_| {});
                c.postgresql_parameters
                    .insert("archive_command".into(), "cp %p /x".into());
                c
            },
            "postgresql_parameters key \"archive_command\" is set by pgquorum while [backup]",
        ),
    ];
    for (config, prefix) in cases {
        let message = config.validate().unwrap_err();
        assert!(
            message.starts_with(prefix),
            "{message:?} should start with {prefix:?}"
        );
    }
    let s3 = with_backup(|b| {
        b.repo_type = RepoType::S3;
        b.repo_options.insert("s3-bucket".into(), "db".into());
        b.full_every = Some(Duration::from_secs(7 * 86_400));
    });
    assert_eq!(s3.validate(), Ok(()));
    let mut own = DynamicConfig::default();
    own.postgresql_parameters
        .insert("archive_command".into(), "cp %p /x".into());
    assert_eq!(
        own.validate(),
        Ok(()),
        "without [backup] it is the operator's"
    );
}

#[test]
fn a_backup_section_parses_with_defaults_and_refuses_unknown_keys() {
    let parsed: DynamicConfig =
        serde_json::from_str(r#"{"backup": {"repo_path": "/mnt/b"}}"#).unwrap();
    let backup = parsed.backup.unwrap();
    assert_eq!(backup.stanza, "pgquorum");
    assert_eq!(backup.retention_full, 2);
    assert_eq!(backup.repo_type, RepoType::Posix);
    let error = serde_json::from_str::<DynamicConfig>(r#"{"backup": {"repo_pth": "/mnt/b"}}"#)
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown field `repo_pth`"), "{error}");
    let none = serde_json::to_value(DynamicConfig::default()).unwrap();
    assert!(
        none.get("backup").is_none(),
        "absent when unset, so older members can decode the config"
    );
}

#[test]
fn a_config_with_backup_needs_command_level_6() {
    let with = Command::SetConfig {
        config: with_backup(|_| {}),
    };
    assert_eq!(with.level(), 6);
    let mut both = with_backup(|_| {});
    both.pg_hba
        .push("host all all 0.0.0.0/0 scram-sha-256".into());
    assert_eq!(Command::SetConfig { config: both }.level(), 6);
    let without = Command::SetConfig {
        config: DynamicConfig::default(),
    };
    assert_eq!(without.level(), 0);
}

fn backed_up_cluster() -> ClusterState {
    let mut state = state().with_member(2).with_member(3);
    state.config = with_backup(|_| {});
    state
}

fn job(runner: u64) -> BackupJob {
    BackupJob {
        id: 0,
        kind: BackupKind::Full,
        runner: NodeId(runner),
        requested_unix: NOW,
        scheduled: false,
        verify: false,
    }
}

fn outcome(id: u64, runner: u64) -> BackupOutcome {
    BackupOutcome {
        id,
        kind: BackupKind::Full,
        runner: NodeId(runner),
        ok: true,
        message: "20261207-111500F".into(),
        finished_unix: NOW + 60,
        verify: false,
    }
}

#[test]
fn one_backup_at_a_time_by_the_member_named_until_it_reports() {
    let request = |runner, replace| Command::RequestBackup {
        job: job(runner),
        replace,
    };
    let mut no_config = state().with_member(2);
    assert_eq!(
        apply(&mut no_config, &request(2, false)),
        Rejection::NoBackupConfigured.into()
    );
    let mut state = backed_up_cluster();
    assert_eq!(
        apply(&mut state, &request(9, false)),
        Rejection::UnknownMember { id: NodeId(9) }.into()
    );
    assert_eq!(
        apply(&mut state, &request(2, false)),
        CommandResult::BackupRequested { id: 1 }
    );
    let before = state.clone();
    assert_eq!(
        apply(&mut state, &request(3, false)),
        Rejection::BackupInProgress {
            id: 1,
            runner: "node2".into()
        }
        .into()
    );
    assert_eq!(state, before, "a refusal changes nothing");
    // Only the named runner finishes it.
    let finish = |id, runner| Command::FinishBackup {
        outcome: outcome(id, runner),
    };
    assert!(apply(&mut state, &finish(1, 3)).is_rejected());
    // Its runner went silent: the proposer replaces it, and the late report is refused.
    assert_eq!(
        apply(&mut state, &request(3, true)),
        CommandResult::BackupRequested { id: 2 }
    );
    assert!(apply(&mut state, &finish(1, 2)).is_rejected());
    assert_eq!(apply(&mut state, &finish(2, 3)), CommandResult::Applied);
    assert_eq!(state.backup_job, None);
    assert_eq!(state.last_backup, Some(outcome(2, 3)));
    assert_eq!(state.last_good_backup, Some(outcome(2, 3)));
    apply(&mut state, &request(2, false));
    let failed = BackupOutcome {
        ok: false,
        ..outcome(3, 2)
    };
    apply(
        &mut state,
        &Command::FinishBackup {
            outcome: failed.clone(),
        },
    );
    assert_eq!(state.last_backup, Some(failed));
    assert_eq!(
        state.last_good_backup,
        Some(outcome(2, 3)),
        "a failed backup leaves the last good one"
    );
}

#[test]
fn removing_the_runner_drops_its_backup() {
    let mut state = backed_up_cluster();
    let request = Command::RequestBackup {
        job: job(2),
        replace: false,
    };
    apply(&mut state, &request);
    apply(&mut state, &Command::RemoveMember { id: NodeId(2) });
    assert_eq!(state.backup_job, None);
    assert_eq!(
        Command::FinishBackup {
            outcome: outcome(1, 2)
        }
        .level(),
        6
    );
}

fn restore_request(runner: u64) -> Command {
    Command::RequestRestore {
        restore: Restore {
            id: 0,
            target: RestoreTarget::Latest,
            runner: NodeId(runner),
            remove_old: false,
            set: None,
            requested_unix: NOW,
            stopped: [NodeId(3)].into(),
        },
    }
}

#[test]
fn a_restore_is_recorded_stopped_member_by_member_and_finished_by_its_runner() {
    let mut no_config = state().with_member(2);
    assert_eq!(
        apply(&mut no_config, &restore_request(2)),
        Rejection::NoBackupConfigured.into()
    );
    let mut state = backed_up_cluster();
    state.switchover = Some(switchover(1, Some(2)));
    assert_eq!(
        apply(&mut state, &restore_request(9)),
        Rejection::UnknownMember { id: NodeId(9) }.into()
    );
    assert_eq!(
        apply(&mut state, &restore_request(2)),
        CommandResult::RestoreRequested { id: 1 }
    );
    let restore = state.restore.clone().unwrap();
    assert!(restore.stopped.is_empty(), "a request carries no reports");
    assert_eq!(
        state.switchover, None,
        "nobody switches over during a restore"
    );
    let before = state.clone();
    assert_eq!(
        apply(&mut state, &restore_request(3)),
        Rejection::RestoreInProgress {
            id: 1,
            runner: "node2".into()
        }
        .into()
    );
    assert_eq!(
        apply(
            &mut state,
            &Command::RequestBackup {
                job: job(2),
                replace: false
            }
        ),
        Rejection::RestoreInProgress {
            id: 1,
            runner: "node2".into()
        }
        .into()
    );
    assert_eq!(state, before);
    let stopped = |id, member| Command::RestoreStopped {
        id,
        member: NodeId(member),
    };
    assert_eq!(
        apply(&mut state, &stopped(7, 1)),
        Rejection::NoSuchRestore { id: 7 }.into()
    );
    for member in [1, 2, 3] {
        assert_eq!(
            apply(&mut state, &stopped(1, member)),
            CommandResult::Applied
        );
    }
    let restore = state.restore.clone().unwrap();
    assert!(restore.waiting_for(&state.members).is_empty());
    let outcome = |runner| RestoreOutcome {
        id: 1,
        target: RestoreTarget::Latest,
        runner: NodeId(runner),
        ok: true,
        message: "restored".into(),
        finished_unix: NOW,
    };
    assert_eq!(
        apply(
            &mut state,
            &Command::FinishRestore {
                outcome: outcome(3)
            }
        ),
        Rejection::NoSuchRestore { id: 1 }.into(),
        "only the runner finishes it"
    );
    assert_eq!(
        apply(
            &mut state,
            &Command::FinishRestore {
                outcome: outcome(2)
            }
        ),
        CommandResult::Applied
    );
    assert_eq!(state.restore, None);
    assert_eq!(state.last_restore, Some(outcome(2)));
    assert_eq!(restore_request(2).level(), 7);
}
