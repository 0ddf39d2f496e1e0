//! Diverged timelines: pg_rewind and the reserved timeline.

use super::*;

/// `x:origin` for every row of table `t`, by `x`.
async fn rows_of_t(i: &Instance) -> Vec<String> {
    i.query("SELECT x::text || ':' || origin FROM t ORDER BY x")
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
}

#[tokio::test]
async fn old_primary_that_kept_writing_is_rewound_and_follows_the_new_one() {
    if !require_postgres() {
        return;
    }
    let started = std::time::Instant::now();
    let a = Instance::new();
    a.pg.initdb().await.unwrap();
    a.pg.start(START).await.unwrap();
    a.pg.create_replication_user().await.unwrap();
    a.pg.create_replication_user().await.unwrap(); // idempotent
    let rewind_role = a
        .query(
            "SELECT rolcanlogin, rolsuper, rolreplication,
                    has_function_privilege('pgquorum_rewind', 'pg_catalog.pg_ls_dir(text, boolean, boolean)', 'EXECUTE')
                AND has_function_privilege('pgquorum_rewind', 'pg_catalog.pg_stat_file(text, boolean)', 'EXECUTE')
                AND has_function_privilege('pgquorum_rewind', 'pg_catalog.pg_read_binary_file(text)', 'EXECUTE')
                AND has_function_privilege('pgquorum_rewind', 'pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)', 'EXECUTE'),
                    rolpassword LIKE 'SCRAM-SHA-256$4096:%'
             FROM pg_authid WHERE rolname = 'pgquorum_rewind'",
        )
        .await;
    let t = Some("t".to_string());
    let f = Some("f".to_string());
    assert_eq!(
        rewind_role,
        [vec![t.clone(), f.clone(), f.clone(), t.clone(), t.clone()]],
        "login, not superuser, not replication, may read files, SCRAM password"
    );
    a.pg.ensure_slots(&slots(&["pgquorum_2"])).await.unwrap();
    a.pg.execute(
        "CREATE TABLE t (x int PRIMARY KEY, origin text); INSERT INTO t VALUES (1, 'both')",
    )
    .await
    .unwrap();

    // B: a streaming replica of A, then promoted (timeline 2) and written to.
    let b = Instance::new();
    let b_follows_a = a.upstream("pgquorum_2");
    b.pg.basebackup(&b_follows_a).await.unwrap();
    b.pg.write_config(&Role::Replica {
        upstream: Some(&b_follows_a),
    })
    .unwrap();
    b.pg.start(START).await.unwrap();
    streams_to(&b, 1, a.pg.status().await.wal_position.unwrap()).await;
    b.pg.promote(START).await.unwrap();
    b.pg.write_config(&Role::Primary {
        synchronous_standby_names: None,
    })
    .unwrap();
    b.pg.reload().await.unwrap();
    b.pg.execute("INSERT INTO t VALUES (2, 'new primary')")
        .await
        .unwrap();

    // The old primary keeps writing after the promotion, so its history forks from B's;
    // then it crashes.
    a.pg.execute(
        "INSERT INTO t VALUES (3, 'diverged'); UPDATE t SET origin = 'changed on A' WHERE x = 1;
         CREATE TABLE only_on_a AS SELECT generate_series(1, 10000) AS y",
    )
    .await
    .unwrap();
    a.pg.stop(StopMode::Immediate, STOP).await.unwrap();
    assert_eq!(a.pg.cluster_state().await.unwrap(), "in production");
    let system_id = a.pg.data_dir_state();
    assert!(matches!(system_id, DataDir::Initialised { .. }));

    // Only a stopped server is rewound.
    let err = b.pg.rewind(&a.upstream("pgquorum_9")).await.unwrap_err();
    assert!(matches!(err, Error::Running { .. }), "{err:?}");
    assert!(b.pg.is_running());

    b.pg.ensure_slots(&slots(&["pgquorum_1"])).await.unwrap();
    let a_follows_b = b.upstream("pgquorum_1");
    let replica = Role::Replica {
        upstream: Some(&a_follows_b),
    };
    let t0 = std::time::Instant::now();
    assert_eq!(
        a.pg.rewind(&a_follows_b).await.unwrap(),
        RewindOutcome::Rewound
    );
    eprintln!("rewind of a crashed primary: {:?}", t0.elapsed());
    assert_eq!(a.pg.data_dir_state(), system_id);
    let data = a.pg.settings().data_dir.clone();
    assert!(data.join("standby.signal").exists());
    assert_eq!(
        a.pg.write_config(&replica).unwrap(),
        ConfigChange::Unchanged,
        "the rewind already wrote the replica configuration"
    );
    let conf = fs::read_to_string(data.join("pgquorum.conf")).unwrap();
    assert!(conf.contains(&format!("port = {}", a.port)), "{conf}");
    a.pg.start(START).await.unwrap();
    b.pg.execute("INSERT INTO t VALUES (4, 'streamed')")
        .await
        .unwrap();
    streams_to(&a, 2, b.pg.status().await.wal_position.unwrap()).await;
    assert_eq!(
        rows_of_t(&a).await,
        ["1:both", "2:new primary", "4:streamed"],
        "B's rows and none of A's diverged writes"
    );
    assert_eq!(
        a.query("SELECT to_regclass('only_on_a') IS NULL").await,
        [vec![t.clone()]]
    );

    // A replica that simply follows: nothing to rewind, and no harm done.
    a.pg.stop(StopMode::Fast, STOP).await.unwrap();
    assert_eq!(a.pg.cluster_state().await.unwrap(), "shut down in recovery");
    let t0 = std::time::Instant::now();
    let again = a.pg.rewind(&a_follows_b).await.unwrap();
    eprintln!(
        "rewind of a following replica: {again:?} in {:?}",
        t0.elapsed()
    );
    a.pg.start(START).await.unwrap();
    b.pg.execute("INSERT INTO t VALUES (5, 'still streamed')")
        .await
        .unwrap();
    streams_to(&a, 2, b.pg.status().await.wal_position.unwrap()).await;
    assert_eq!(
        rows_of_t(&a).await,
        ["1:both", "2:new primary", "4:streamed", "5:still streamed"]
    );

    // A standby that crashed mid-recovery: refused untouched; starting it once fixes that.
    a.pg.stop(StopMode::Immediate, STOP).await.unwrap();
    assert_eq!(a.pg.cluster_state().await.unwrap(), "in archive recovery");
    let err = a.pg.rewind(&a_follows_b).await.unwrap_err();
    assert!(matches!(err, Error::RecoveryUnfinished { .. }), "{err:?}");
    assert!(err.to_string().contains("start it as a replica"), "{err}");
    assert_eq!(a.pg.cluster_state().await.unwrap(), "in archive recovery");
    assert!(data.join("standby.signal").exists());
    a.pg.start(START).await.unwrap();
    a.pg.stop(StopMode::Fast, STOP).await.unwrap();

    // A wrong password: pg_rewind fails before touching anything.
    let mut wrong_settings = a.pg.settings().clone();
    wrong_settings.passfile = a.dir.path().join("wrong-pgpass");
    let wrong = Postgres::new(
        wrong_settings,
        ReplicationCredentials {
            user: "pgquorum_replicator".into(),
            password: Secret::new("not the password".into()),
            rewind_password: Secret::new("not the password either".into()),
        },
    )
    .unwrap();
    let err = wrong.rewind(&a_follows_b).await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(
            err,
            Error::RewindFailed {
                may_be_damaged: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(message.contains("pg_rewind"), "{message}");
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
    assert_eq!(a.pg.data_dir_state(), system_id);
    assert_eq!(a.pg.cluster_state().await.unwrap(), "shut down in recovery");
    drop(wrong);

    // A fails over to A (timeline 3) by mistake, writes, crashes; its replica configuration
    // (standby.signal) is written before the rewind. pg_rewind's crash recovery still runs.
    a.pg.start(START).await.unwrap();
    a.pg.promote(START).await.unwrap();
    a.pg.execute("INSERT INTO t VALUES (6, 'A on timeline 3')")
        .await
        .unwrap();
    a.pg.stop(StopMode::Immediate, STOP).await.unwrap();
    assert_eq!(a.pg.cluster_state().await.unwrap(), "in production");
    a.pg.write_config(&replica).unwrap();
    assert!(data.join("standby.signal").exists());
    let t0 = std::time::Instant::now();
    assert_eq!(
        a.pg.rewind(&a_follows_b).await.unwrap(),
        RewindOutcome::Rewound
    );
    eprintln!(
        "rewind of a crashed primary with standby.signal: {:?}",
        t0.elapsed()
    );
    assert!(data.join("standby.signal").exists());
    a.pg.start(START).await.unwrap();
    b.pg.execute("INSERT INTO t VALUES (7, 'back on timeline 2')")
        .await
        .unwrap();
    streams_to(&a, 2, b.pg.status().await.wal_position.unwrap()).await;
    assert_eq!(
        rows_of_t(&a).await,
        [
            "1:both",
            "2:new primary",
            "4:streamed",
            "5:still streamed",
            "7:back on timeline 2"
        ]
    );

    a.pg.stop(StopMode::Fast, STOP).await.unwrap();
    b.pg.stop(StopMode::Fast, STOP).await.unwrap();
    eprintln!("whole rewind test: {:?}", started.elapsed());
}

/// Two replicas of one primary promoted one after the other, the first cut off before the
/// second knew its timeline: without a reservation both would create timeline 2, and
/// pg_rewind would find "no rewind required" for the first and let it replay the second's
/// WAL over its own. With the cluster's reservation the second creates timeline 3, and the
/// first is rewound onto it.
#[tokio::test]
async fn a_reserved_timeline_keeps_two_promotions_apart_so_the_cut_off_one_is_rewound() {
    if !require_postgres() {
        return;
    }
    let a = Instance::primary(&["pgquorum_2", "pgquorum_3"]).await;
    a.pg.execute(
        "CREATE TABLE t (x int PRIMARY KEY, origin text); INSERT INTO t VALUES (1, 'both')",
    )
    .await
    .unwrap();
    let (b, c) = (Instance::new(), Instance::new());
    for (replica, slot) in [(&b, "pgquorum_2"), (&c, "pgquorum_3")] {
        let up = a.upstream(slot);
        replica.pg.basebackup(&up).await.unwrap();
        replica
            .pg
            .write_config(&Role::Replica {
                upstream: Some(&up),
            })
            .unwrap();
        replica.pg.start(START).await.unwrap();
        streams_to(replica, 1, a.pg.status().await.wal_position.unwrap()).await;
    }
    a.pg.stop(StopMode::Fast, STOP).await.unwrap();
    let primary_role = Role::Primary {
        synchronous_standby_names: None,
    };
    // What `Command::ReserveTimeline` reserves: the larger of what the data directory needs
    // and one above the last reservation.
    let mut last_reserved = 0;
    let mut reserve = |at_least: u32| {
        last_reserved = at_least.max(last_reserved + 1);
        last_reserved
    };

    // B is promoted, writes, and is cut off: nobody ever fetches its timeline's history.
    let b_next = b.pg.lowest_next_timeline(1).unwrap();
    assert_eq!(b_next, 2);
    let b_timeline = reserve(b_next);
    assert_eq!(
        b.pg.place_timeline_placeholders(1, b_timeline).unwrap(),
        Vec::<u32>::new()
    );
    b.pg.promote(START).await.unwrap();
    assert_eq!(b.pg.status().await.timeline, 2);
    b.pg.write_config(&primary_role).unwrap();
    b.pg.reload().await.unwrap();
    b.pg.execute("INSERT INTO t VALUES (2, 'B, cut off')")
        .await
        .unwrap();
    b.pg.stop(StopMode::Immediate, STOP).await.unwrap();

    // C knows of no timeline but 1, as PostgreSQL would: it would pick 2 as well.
    let c_next = c.pg.lowest_next_timeline(1).unwrap();
    assert_eq!(c_next, 2, "C has not seen B's timeline");
    let c_timeline = reserve(c_next);
    assert_eq!(c_timeline, 3);
    assert_eq!(
        c.pg.place_timeline_placeholders(1, c_timeline).unwrap(),
        [2]
    );
    let c_wal = c.pg.settings().data_dir.join("pg_wal");
    assert!(timeline::is_placeholder(&timeline::history_path(&c_wal, 2)).unwrap());
    c.pg.promote(START).await.unwrap();
    assert_eq!(c.pg.status().await.timeline, 3, "the reserved timeline");
    assert_eq!(
        c.pg.remove_stray_timeline_placeholders().unwrap(),
        Vec::<u32>::new(),
        "below the new timeline the placeholder stays, for standbys to fetch"
    );
    assert!(timeline::is_placeholder(&timeline::history_path(&c_wal, 2)).unwrap());
    assert!(
        !timeline::is_placeholder(&timeline::history_path(&c_wal, 3)).unwrap(),
        "PostgreSQL wrote timeline 3's history itself"
    );
    c.pg.write_config(&primary_role).unwrap();
    c.pg.reload().await.unwrap();
    c.pg.execute("INSERT INTO t VALUES (3, 'C on timeline 3')")
        .await
        .unwrap();

    // B follows C: its timeline 2 is not C's, so pg_rewind takes its own write back.
    c.pg.ensure_slots(&slots(&["pgquorum_2"])).await.unwrap();
    let b_follows_c = c.upstream("pgquorum_2");
    assert_eq!(
        b.pg.rewind(&b_follows_c).await.unwrap(),
        RewindOutcome::Rewound
    );
    // A placeholder left by a promotion that never finished is removed at the next start
    // (a standby would otherwise take it for its recovery target and refuse to start).
    let b_wal = b.pg.settings().data_dir.join("pg_wal");
    fs::write(
        timeline::history_path(&b_wal, 9),
        timeline::placeholder_text(),
    )
    .unwrap();
    b.pg.start(START).await.unwrap();
    assert!(!timeline::history_path(&b_wal, 9).exists());
    c.pg.execute("INSERT INTO t VALUES (4, 'streamed')")
        .await
        .unwrap();
    streams_to(&b, 3, c.pg.status().await.wal_position.unwrap()).await;
    assert_eq!(
        rows_of_t(&b).await,
        ["1:both", "3:C on timeline 3", "4:streamed"],
        "C's rows and not B's cut-off write"
    );

    // A, the old primary, stopped cleanly on timeline 1: following C it fetches the history
    // of every timeline up to 3 from C, the placeholder for 2 included.
    c.pg.ensure_slots(&slots(&["pgquorum_1", "pgquorum_2"]))
        .await
        .unwrap();
    let a_follows_c = c.upstream("pgquorum_1");
    a.pg.write_config(&Role::Replica {
        upstream: Some(&a_follows_c),
    })
    .unwrap();
    a.pg.start(START).await.unwrap();
    c.pg.execute("INSERT INTO t VALUES (5, 'to A')")
        .await
        .unwrap();
    streams_to(&a, 3, c.pg.status().await.wal_position.unwrap()).await;
    assert_eq!(
        rows_of_t(&a).await,
        ["1:both", "3:C on timeline 3", "4:streamed", "5:to A"]
    );
    for i in [&a, &b, &c] {
        i.pg.stop(StopMode::Fast, STOP).await.unwrap();
    }
}
