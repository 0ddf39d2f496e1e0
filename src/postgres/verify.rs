//! The restore drill (`pgquorum backup verify`): the repository's newest backup restored
//! into a scratch directory beside this member's data, started as a second, private
//! PostgreSQL that replays to consistency and reads every database's catalog, then
//! stopped and removed. It never writes to the repository (archiving off, no promotion)
//! and listens on no address.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::NoTls;

use super::process::sys;
use super::{Error, Postgres};

/// How long the scratch instance may take to replay the backup to consistency.
const CONSISTENT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Shared memory for the scratch instance, whatever the backup's configuration says: it
/// runs beside this member's own PostgreSQL.
const SHARED_BUFFERS: &str = "shared_buffers=128MB";

/// What a drill found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The backup restored.
    pub label: String,
    /// The databases that accept connections, and the relations their catalogs list.
    pub databases: usize,
    pub relations: i64,
    /// Where replay stopped (the backup's consistency point).
    pub replayed: String,
}

impl Postgres {
    /// Runs the drill in `scratch` (which must not be in use: anything there is removed
    /// first, and it is removed at the end whatever happened).
    pub async fn verify_backup(&self, scratch: &Path) -> Result<Verified, Error> {
        remove_scratch(scratch)?;
        self.create_dir(scratch, Some(0o700))?;
        let result = self.verify_in(scratch).await;
        if let Err(e) = remove_scratch(scratch) {
            tracing::warn!(error = %e, "removing the restore drill's scratch directory");
        }
        result
    }

    async fn verify_in(&self, scratch: &Path) -> Result<Verified, Error> {
        let info = self.pgbackrest(&["info", "--output=json"]).await?;
        let info: serde_json::Value = serde_json::from_str(&info).unwrap_or_default();
        let label = (info
            .pointer("/0/backup")
            .and_then(serde_json::Value::as_array))
        .and_then(|backups| backups.last())
        .and_then(|b| b["label"].as_str())
        .map(str::to_string)
        .ok_or(Error::NoBackupToRestore)?;
        let data = scratch.join("data");
        let pg1 = format!("--pg1-path={}", data.display());
        let set = format!("--set={label}");
        let fetch = self.restore_command_option(Some(&data))?;
        self.pgbackrest(&[
            &pg1,
            &set,
            "--type=immediate",
            "--target-action=pause",
            "--archive-mode=off",
            &fetch,
            "restore",
        ])
        .await?;
        let log_path = scratch.join("postgresql.log");
        let log = std::fs::File::create(&log_path).map_err(|source| Error::Io {
            action: format!("creating {}", log_path.display()),
            source,
        })?;
        let socket = format!("unix_socket_directories={}", scratch.display());
        let port = format!("port={}", self.settings.port);
        let mut cmd = self.command("postgres");
        cmd.arg("-D").arg(&data);
        for setting in [
            port.as_str(),
            socket.as_str(),
            "listen_addresses=",
            "archive_mode=off",
            "hot_standby=on",
            "logging_collector=off",
            "cluster_name=pgquorum-verify",
            SHARED_BUFFERS,
        ] {
            cmd.arg("-c").arg(setting);
        }
        let err = log.try_clone().map_err(|source| Error::Io {
            action: "duplicating the log file handle".into(),
            source,
        })?;
        cmd.stdout(log).stderr(err);
        sys::die_with_parent(&mut cmd);
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Io {
                action: "starting the restore drill's postgres".into(),
                source,
            })?;
        let checked = self.check_scratch(scratch, &mut child, &log_path).await;
        if let Some(pid) = child.id() {
            // A fast shutdown; the kill on drop if it does not end in time.
            let _ = sys::signal(pid, sys::SIGINT);
            let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
        }
        let (databases, relations, replayed) = checked?;
        Ok(Verified {
            label,
            databases,
            relations,
            replayed,
        })
    }

    /// Waits until the scratch instance is consistent and paused there, then reads every
    /// database's catalog.
    async fn check_scratch(
        &self,
        scratch: &Path,
        child: &mut tokio::process::Child,
        log_path: &Path,
    ) -> Result<(usize, i64, String), Error> {
        let deadline = Instant::now() + CONSISTENT_TIMEOUT;
        let failed = |status: String| Error::StartFailed {
            data_dir: scratch.join("data"),
            status,
            log_tail: tail(log_path),
        };
        let client = loop {
            if let Some(status) = child.try_wait().ok().flatten() {
                return Err(failed(status.to_string()));
            }
            if let Ok(client) = self.connect_scratch(scratch, "postgres").await {
                let paused = client
                    .query_one("SELECT pg_is_wal_replay_paused()", &[])
                    .await
                    .is_ok_and(|row| row.get::<_, bool>(0));
                if paused {
                    break client;
                }
            }
            if Instant::now() >= deadline {
                return Err(failed(format!(
                    "not consistent within {CONSISTENT_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let query = |what: &'static str, e: tokio_postgres::Error| Error::Sql {
            action: format!("restore drill: {what}"),
            source: e,
        };
        let replayed: String = client
            .query_one("SELECT pg_last_wal_replay_lsn()::text", &[])
            .await
            .map_err(|e| query("reading the replay position", e))?
            .get(0);
        let names: Vec<String> = client
            .query(
                "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1",
                &[],
            )
            .await
            .map_err(|e| query("listing the databases", e))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut relations = 0;
        for name in &names {
            let db = self.connect_scratch(scratch, name).await?;
            let count: i64 = db
                .query_one("SELECT count(*) FROM pg_class", &[])
                .await
                .map_err(|e| query("reading a database's catalog", e))?
                .get(0);
            relations += count;
        }
        Ok((names.len(), relations, replayed))
    }

    async fn connect_scratch(
        &self,
        scratch: &Path,
        dbname: &str,
    ) -> Result<tokio_postgres::Client, Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(scratch)
            .port(self.settings.port)
            .user("postgres")
            .dbname(dbname)
            .application_name("pgquorum-verify")
            .connect_timeout(Duration::from_secs(2));
        let (client, connection) = config.connect(NoTls).await.map_err(|e| Error::Connect {
            socket_dir: scratch.to_path_buf(),
            port: self.settings.port,
            source: e.into(),
        })?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

fn remove_scratch(scratch: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(scratch) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            action: format!("removing {}", scratch.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The last lines of the drill's log.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
