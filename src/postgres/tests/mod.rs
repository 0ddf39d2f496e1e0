//! Tests against real PostgreSQL binaries. Each instance gets its own directory under /tmp
//! (mode 0755, so the `postgres` OS user can reach it when the tests run as root) and a
//! free loopback port. Without binaries these tests skip, except under `CI=true`.

use std::collections::BTreeSet;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
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
        // Not the replication one: the rewinds below prove the rewind role has its own.
        rewind_password: Secret::new(format!("rewind-{PASSWORD}")),
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
        tls: None,
        backrest_dir: dir.join("pgbackrest"),
        backrest_server: None,
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

mod lag;
mod lifecycle;
mod privilege;
mod rewind;
