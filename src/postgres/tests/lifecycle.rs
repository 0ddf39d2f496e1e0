//! Initialise, clone, stream, promote, stop, adopt: one instance's life.

use super::*;

#[tokio::test]
async fn primary_is_cloned_streamed_to_and_replica_promoted() {
    if !require_postgres() {
        return;
    }
    let a = Instance::new();
    assert_eq!(a.pg.data_dir_state(), DataDir::Missing);
    // An existing empty directory (as a package or an operator may leave) is replaced.
    fs::create_dir(&a.pg.settings().data_dir).unwrap();
    assert_eq!(a.pg.data_dir_state(), DataDir::Missing);
    a.pg.initdb().await.unwrap();
    let DataDir::Initialised { system_id } = a.pg.data_dir_state() else {
        panic!("initdb left {:?}", a.pg.data_dir_state());
    };
    assert_ne!(system_id, 0);
    a.pg.start(START).await.unwrap();
    assert!(a.pg.is_running());
    for (path, mode) in [
        (&a.pg.settings().passfile, 0o600),
        (&a.pg.settings().socket_dir, 0o700),
    ] {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(path).unwrap();
        assert_eq!(meta.mode() & 0o777, mode, "{}", path.display());
        if let Some(account) = &a.pg.account {
            assert_eq!(
                meta.uid(),
                account.uid,
                "{} owned by the OS user",
                path.display()
            );
        }
    }
    let primary = a.pg.status().await;
    assert!(primary.running && !primary.in_recovery, "{primary:?}");
    assert!(primary.wal_position.is_some(), "{primary:?}");
    assert_eq!(primary.timeline, 1);

    // Twice: the second run takes the ALTER path.
    a.pg.create_replication_user().await.unwrap();
    a.pg.create_replication_user().await.unwrap();
    let stored = a
        .query("SELECT rolpassword FROM pg_authid WHERE rolname = 'pgquorum_replicator'")
        .await;
    assert!(
        stored[0][0]
            .as_deref()
            .unwrap()
            .starts_with("SCRAM-SHA-256$4096:"),
        "{stored:?}"
    );

    a.pg.execute("SELECT pg_create_physical_replication_slot('other_tool')")
        .await
        .unwrap();
    a.pg.ensure_slots(&slots(&["pgquorum_2", "pgquorum_3"]))
        .await
        .unwrap();
    a.pg.ensure_slots(&slots(&["pgquorum_2"])).await.unwrap();
    let listed = a
        .query("SELECT slot_name FROM pg_replication_slots ORDER BY 1")
        .await;
    let listed: Vec<_> = listed.iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(
        listed,
        ["other_tool", "pgquorum_2"],
        "unwanted pgquorum_ slots go, others stay"
    );

    let b = Instance::new();
    let up = a.upstream("pgquorum_2");
    b.pg.basebackup(&up).await.unwrap();
    assert_eq!(b.pg.data_dir_state(), DataDir::Initialised { system_id });
    assert!(
        b.pg.settings().data_dir.join("standby.signal").exists(),
        "a clone is a standby from the start"
    );
    let replica = Role::Replica {
        upstream: Some(&up),
    };
    assert_eq!(b.pg.write_config(&replica).unwrap(), ConfigChange::Restart);
    assert_eq!(
        b.pg.write_config(&replica).unwrap(),
        ConfigChange::Unchanged
    );
    b.pg.start(START).await.unwrap();
    assert!(b.pg.status().await.in_recovery);

    a.pg.execute("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000)")
        .await
        .unwrap();
    let target = a.pg.status().await.wal_position.unwrap();
    eventually(
        "replica streams and reaches the primary's WAL position",
        START,
        || async {
            let s = b.pg.status().await;
            s.streaming && s.wal_position >= Some(target) && s.replayed >= Some(target)
        },
    )
    .await;
    let active = a
        .query("SELECT active FROM pg_replication_slots WHERE slot_name = 'pgquorum_2'")
        .await;
    assert_eq!(
        active[0][0].as_deref(),
        Some("t"),
        "the replica streams through its slot"
    );

    b.pg.promote(START).await.unwrap();
    let promoted = b.pg.status().await;
    assert!(promoted.running && !promoted.in_recovery, "{promoted:?}");
    assert_eq!(promoted.timeline, 2, "{promoted:?}");
    b.pg.promote(START).await.unwrap(); // already primary: no-op
    let primary_role = Role::Primary {
        synchronous_standby_names: None,
    };
    assert_eq!(
        b.pg.write_config(&primary_role).unwrap(),
        ConfigChange::Reload
    );
    b.pg.reload().await.unwrap();
    // Dropping the standby settings is a reload, and the promoted primary has no restart
    // pending: recovery-only settings (recovery_target_timeline, which PostgreSQL flags as
    // pending restart once it leaves the file) do not apply to a primary.
    eventually("the reload has dropped primary_conninfo", START, || async {
        b.query("SHOW primary_conninfo").await[0][0].as_deref() == Some("")
    })
    .await;
    let pending = b
        .query("SELECT name FROM pg_settings WHERE pending_restart ORDER BY 1")
        .await;
    let status = b.pg.status().await;
    assert!(
        !status.pending_restart,
        "a promoted primary reports a pending restart; pending in pg_settings: {pending:?}"
    );

    b.pg.stop(StopMode::Fast, STOP).await.unwrap();
    a.pg.stop(StopMode::Fast, STOP).await.unwrap();
    assert!(!a.pg.is_running() && !b.pg.is_running());
    assert!(!b.pg.status().await.running);
    b.pg.stop(StopMode::Fast, STOP).await.unwrap(); // not running: no-op
}

/// A standby whose own WAL ends before it is consistent (in a fault campaign: a segment of
/// the new timeline torn by a shutdown just after the switch; here: its clone's WAL removed)
/// started without an upstream never accepts connections, and the start times out leaving it
/// running. Started again with an upstream, the running postmaster must get it: adopted as it
/// was, it waited for ever.
#[tokio::test]
async fn a_standby_left_waiting_for_wal_streams_once_started_with_an_upstream() {
    if !require_postgres() {
        return;
    }
    let a = Instance::primary(&["pgquorum_2"]).await;
    let b = Instance::new();
    let up = a.upstream("pgquorum_2");
    b.pg.basebackup(&up).await.unwrap();
    let pg_wal = b.pg.settings().data_dir.join("pg_wal");
    let mut removed = 0;
    for entry in fs::read_dir(&pg_wal).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.len() == 24 && name.chars().all(|c| c.is_ascii_hexdigit()) {
            fs::remove_file(&path).unwrap();
            removed += 1;
        }
    }
    assert!(
        removed > 0,
        "the clone has WAL segments in {}",
        pg_wal.display()
    );
    a.pg.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    b.pg.write_config(&Role::Replica { upstream: None })
        .unwrap();
    let waited = b.pg.start(Duration::from_secs(3)).await;
    assert!(
        matches!(waited, Err(Error::StartTimedOut { .. })),
        "without an upstream the standby cannot become consistent: {waited:?}"
    );
    assert!(
        b.pg.is_running(),
        "a start that timed out leaves it running"
    );

    let change =
        b.pg.write_config(&Role::Replica {
            upstream: Some(&up),
        })
        .unwrap();
    assert_eq!(change, ConfigChange::Reload);
    b.pg.start_with(change, START).await.unwrap();
    let target = a.pg.status().await.wal_position.unwrap();
    streams_to(&b, 1, target).await;
    assert_eq!(
        b.query("SELECT x::text FROM t").await,
        [[Some("1".to_string())]]
    );

    b.pg.stop(StopMode::Fast, STOP).await.unwrap();
    a.pg.stop(StopMode::Fast, STOP).await.unwrap();
}

#[tokio::test]
async fn postmaster_is_adopted_dies_with_its_owner_and_survives_external_kills() {
    if !require_postgres() {
        return;
    }
    let a = Instance::new();
    a.pg.initdb().await.unwrap();
    let owner = a.another_handle();
    owner.start(START).await.unwrap();
    let pid = a.postmaster_pid();

    // A restarted daemon adopts the running postmaster rather than starting another.
    assert!(a.pg.is_running());
    a.pg.start(START).await.unwrap();
    assert_eq!(a.postmaster_pid(), pid);
    assert!(a.pg.status().await.running);

    // Dropping the owner ends its spawner thread: the death signal stops the postmaster.
    drop(owner);
    eventually("postmaster dies with its owner", STOP, || async {
        !a.pg.is_running()
    })
    .await;

    // Killed behind our back: reported as not running, and stopping it is a no-op.
    a.pg.start(START).await.unwrap();
    let pid = a.postmaster_pid().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    eventually("killed postmaster is noticed", STOP, || async {
        !a.pg.is_running()
    })
    .await;
    a.pg.stop(StopMode::Fast, STOP).await.unwrap();
    assert!(!a.pg.status().await.running);
}

#[tokio::test]
async fn data_dir_that_is_not_ours_is_reported_and_left_alone() {
    if !require_postgres() {
        return;
    }
    let a = Instance::new();
    let data = a.pg.settings().data_dir.clone();
    fs::create_dir_all(&data).unwrap();
    assert_eq!(
        a.pg.data_dir_state(),
        DataDir::Missing,
        "empty counts as missing"
    );
    fs::write(data.join("notes.txt"), "mine").unwrap();
    assert_eq!(a.pg.data_dir_state(), DataDir::Foreign);

    let err =
        a.pg.basebackup(&a.upstream("pgquorum_2"))
            .await
            .unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&data.display().to_string()), "{message}");
    assert!(message.contains("nothing was removed"), "{message}");
    assert!(
        matches!(
            err,
            Error::DataDirNotMissing {
                state: DataDir::Foreign,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        a.pg.initdb().await,
        Err(Error::DataDirNotMissing { .. })
    ));
    assert_eq!(fs::read_to_string(data.join("notes.txt")).unwrap(), "mine");

    fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    assert_eq!(
        a.pg.data_dir_state(),
        DataDir::Foreign,
        "PG_VERSION without pg_control"
    );

    let err = a.pg.start(START).await.unwrap_err();
    assert!(
        matches!(err, Error::StartFailed { .. } | Error::StartTimedOut { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn failed_clone_leaves_nothing_behind() {
    if !require_postgres() {
        return;
    }
    let a = Instance::new();
    let nobody = Upstream {
        host: "127.0.0.1".into(),
        port: free_port(),
        slot: "pgquorum_9".into(),
    };
    let err = a.pg.basebackup(&nobody).await.unwrap_err();
    assert!(matches!(err, Error::CommandFailed { .. }), "{err:?}");
    let left: Vec<_> = fs::read_dir(a.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !left.iter().any(|n| n.contains("data")),
        "leftovers: {left:?}"
    );
    assert_eq!(a.pg.data_dir_state(), DataDir::Missing);
}

#[test]
fn handles_and_errors_cross_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Postgres>();
    shareable::<Error>();
}

#[test]
fn setup_errors_say_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path().to_path_buf(), 5432);
    s.bin_dir = Some(dir.path().join("nowhere"));
    let err = Postgres::new(s, creds()).err().unwrap().to_string();
    assert!(err.contains("bin_dir") && err.contains("nowhere"), "{err}");

    let bad = ReplicationCredentials {
        user: "x; DROP".into(),
        password: Secret::new("p".into()),
        rewind_password: Secret::new("r".into()),
    };
    let s = settings(dir.path().to_path_buf(), 5432);
    assert!(matches!(
        Postgres::new(s, bad),
        Err(Error::BadReplicationUser { .. })
    ));

    if process::is_root() && require_postgres() {
        let mut s = settings(dir.path().to_path_buf(), 5432);
        s.os_user = "no_such_user_pgq".into();
        let err = Postgres::new(s, creds()).err().unwrap().to_string();
        assert!(
            err.contains("no_such_user_pgq") && err.contains("does not exist"),
            "{err}"
        );
    }
}
