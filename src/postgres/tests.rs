//! Tests against real PostgreSQL binaries. Each instance gets its own directory under /tmp
//! (mode 0755, so the `postgres` OS user can reach it when the tests run as root) and a
//! free loopback port. Without binaries these tests skip, except under `CI=true`.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

const START: Duration = Duration::from_secs(30);
const STOP: Duration = Duration::from_secs(30);
/// Exercises every escaping layer: passfile (`:` `\`), SQL literal (`'` `\`).
const PASSWORD: &str = r"s3cret:it's\pw";

/// Whether PostgreSQL server binaries exist; panics under `CI=true` if not.
fn require_postgres() -> bool {
    match binaries::Binaries::find(None) {
        Ok(_) => true,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("PostgreSQL is required in CI: {e}")
        }
        Err(e) => {
            eprintln!("skipping: {e}");
            false
        }
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn creds() -> ReplicationCredentials {
    ReplicationCredentials {
        user: "pgquorum_replicator".into(),
        password: Secret::new(PASSWORD.into()),
    }
}

/// Replication slot names as `ensure_slots` takes them.
fn slots(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A PostgreSQL instance in its own directory; prints its server log if the test fails.
struct Instance {
    pg: Postgres,
    port: u16,
    dir: tempfile::TempDir,
}

impl Instance {
    fn new() -> Instance {
        let dir = tempfile::Builder::new()
            .prefix("pgq-")
            .tempdir_in("/tmp")
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        let pg = Postgres::new(settings(dir.path().to_path_buf(), port), creds()).unwrap();
        Instance { pg, port, dir }
    }

    /// A new instance running as a primary, with the replication roles and `slot_names`.
    async fn primary(slot_names: &[&str]) -> Instance {
        let i = Instance::new();
        i.pg.initdb().await.unwrap();
        i.pg.start(START).await.unwrap();
        i.pg.create_replication_user().await.unwrap();
        i.pg.ensure_slots(&slots(slot_names)).await.unwrap();
        i
    }

    fn upstream(&self, slot: &str) -> Upstream {
        Upstream {
            host: "127.0.0.1".into(),
            port: self.port,
            slot: slot.into(),
        }
    }

    /// A second, independent `Postgres` for the same directory (a daemon restart).
    fn another_handle(&self) -> Postgres {
        Postgres::new(self.pg.settings().clone(), creds()).unwrap()
    }

    fn postmaster_pid(&self) -> u32 {
        let text = fs::read_to_string(self.pg.settings().data_dir.join("postmaster.pid")).unwrap();
        text.lines().next().unwrap().trim().parse().unwrap()
    }

    /// Rows of `sql` as text, over the same socket the module uses.
    async fn query(&self, sql_text: &str) -> Vec<Vec<Option<String>>> {
        let client = self.pg.connect().await.unwrap();
        let messages = client.simple_query(sql_text).await.unwrap();
        messages
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- server log of {} ---\n{}",
                self.dir.path().display(),
                self.pg.log_tail()
            );
        }
    }
}

fn settings(dir: PathBuf, port: u16) -> Settings {
    Settings {
        bin_dir: None,
        data_dir: dir.join("data"),
        listen_host: "127.0.0.1".into(),
        port,
        socket_dir: dir.join("run"),
        os_user: "postgres".into(),
        passfile: dir.join("pgpass"),
        log_file: dir.join("postgres.log"),
    }
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after `patience`.
async fn eventually<F, Fut>(what: &str, patience: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + patience;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still false after {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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

/// `x:origin` for every row of table `t`, by `x`.
async fn rows_of_t(i: &Instance) -> Vec<String> {
    i.query("SELECT x::text || ':' || origin FROM t ORDER BY x")
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
}

/// Waits until `i` is a replica streaming on `timeline` that has replayed `target`.
async fn streams_to(i: &Instance, timeline: u32, target: Lsn) {
    eventually(
        &format!("replica streams on timeline {timeline} up to {target}"),
        START,
        || async {
            let s = i.pg.status().await;
            s.in_recovery && s.streaming && s.timeline == timeline && s.replayed >= Some(target)
        },
    )
    .await;
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
