//! Restoring this member's data directory to a point in time from the pgBackRest
//! repository, for a restore of the whole cluster (`cluster::restore`), and putting the
//! directory it replaces away.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::{Error, Postgres};
use crate::cluster::RestoreTarget;

/// The recovery settings `pgbackrest restore` writes to `postgresql.auto.conf`, which must
/// go once the restored primary is up: a replica made of it later would otherwise stop
/// replaying at the old target.
const RECOVERY_SETTINGS: [&str; 9] = [
    "recovery_target",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_inclusive",
    "recovery_target_action",
    "recovery_target_timeline",
    "restore_command",
];

/// The `pgbackrest restore` options for `target` from backup `set` (the newest, or the one
/// pgBackRest picks for a time, when `None`). PostgreSQL is promoted at the target; the
/// timeline it follows is set afterwards (see [`Postgres::restore_to`]).
pub fn restore_args(target: &RestoreTarget, set: Option<&str>) -> Vec<String> {
    let mut args = match target {
        RestoreTarget::Latest => vec!["--type=default".to_string()],
        RestoreTarget::Time(t) => vec!["--type=time".into(), format!("--target={t}")],
        RestoreTarget::Lsn(l) => vec!["--type=lsn".into(), format!("--target={l}")],
        RestoreTarget::Name(n) => vec!["--type=name".into(), format!("--target={n}")],
    };
    if *target != RestoreTarget::Latest {
        args.push("--target-action=promote".into());
    }
    if let Some(set) = set {
        args.push(format!("--set={set}"));
    }
    args
}

impl Postgres {
    /// Takes the data directory out of the way: renamed `<data dir>.<suffix>`, or removed
    /// with `remove`. Returns where it went (`None`: removed, or there was none).
    pub fn put_data_dir_away(&self, suffix: &str, remove: bool) -> Result<Option<PathBuf>, Error> {
        let data_dir = &self.settings.data_dir;
        let empty = std::fs::read_dir(data_dir).map_or(true, |mut d| d.next().is_none());
        if empty {
            return Ok(None);
        }
        if remove {
            std::fs::remove_dir_all(data_dir).map_err(|source| Error::Io {
                action: format!("removing {}", data_dir.display()),
                source,
            })?;
            return Ok(None);
        }
        let aside = data_dir.with_extension(suffix);
        std::fs::rename(data_dir, &aside).map_err(|source| Error::Io {
            action: format!(
                "moving {} aside to {} (a data directory that is a mount point cannot be \
                 moved; restore with --force to remove its contents instead)",
                data_dir.display(),
                aside.display()
            ),
            source,
        })?;
        Ok(Some(aside))
    }

    /// Fetches the history file of `timeline` from the archive into `dir`'s pg_wal; false
    /// when the archive has none.
    async fn fetch_history(&self, dir: &Path, timeline: u32) -> Result<bool, Error> {
        let name = format!("{timeline:08X}.history");
        let pg1 = format!("--pg1-path={}", dir.display());
        let dest = dir.join("pg_wal").join(&name).display().to_string();
        match self.pgbackrest(&[&pg1, "archive-get", &name, &dest]).await {
            Ok(_) => Ok(true),
            Err(Error::CommandFailed { output, .. }) if output.contains("unable to find") => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Fills the missing data directory from the repository so that, once started, it
    /// replays the archive to `target` and is promoted there. It follows the newest
    /// timeline, at most `newest`, whose history the archive holds (the cluster's current
    /// line of history); returns that timeline.
    pub async fn restore_to(
        &self,
        target: &RestoreTarget,
        newest: u32,
        set: Option<&str>,
    ) -> Result<u32, Error> {
        let followed = std::sync::Mutex::new(1u32);
        self.populate("restoring to a point in time", |work| {
            let followed = &followed;
            async move {
                let mut args = vec![format!("--pg1-path={}", work.display())];
                args.extend(restore_args(target, set));
                args.push(self.restore_command_option(None)?);
                args.push("restore".into());
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                self.pgbackrest(&refs).await?;
                // After the restore: archive-get reads the restored pg_control to find the
                // archive of this database.
                let mut timeline = 1;
                for candidate in (2..=newest).rev() {
                    if self.fetch_history(&work, candidate).await? {
                        timeline = candidate;
                        break;
                    }
                }
                // A later line wins in PostgreSQL's configuration files.
                let auto = work.join("postgresql.auto.conf");
                let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
                text.push_str(&format!(
                    "# pgquorum restore: follow the cluster's newest timeline\n\
                     recovery_target_timeline = '{timeline}'\n"
                ));
                self.write_file(&auto, text.as_bytes())?;
                *followed.lock().expect("followed lock poisoned") = timeline;
                Ok(())
            }
        })
        .await?;
        let timeline = *followed.lock().expect("followed lock poisoned");
        tracing::info!(%target, timeline, data_dir = %self.settings.data_dir.display(), "restored from the pgBackRest repository; PostgreSQL replays to the target when started");
        Ok(timeline)
    }

    /// [`start`](Self::start) keeping the placeholder history files of a data directory just
    /// restored: its promotion at the end of recovery picks its timeline by them.
    pub async fn start_restored(&self, timeout: Duration) -> Result<(), Error> {
        self.start_keeping(timeout, true).await
    }

    /// Waits until the restored PostgreSQL, started, has replayed to its target and been
    /// promoted. Fails with its log tail when it stops instead (a target the archive does
    /// not reach), or after `timeout`.
    pub async fn wait_restored(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.status().await.is_writable() {
                return Ok(());
            }
            if !self.is_running() {
                return Err(Error::StartFailed {
                    data_dir: self.settings.data_dir.clone(),
                    status: self.last_exit(),
                    log_tail: self.log_tail(),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::StartTimedOut {
                    data_dir: self.settings.data_dir.clone(),
                    waited: timeout,
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Drops the restore's recovery settings from `postgresql.auto.conf` (pgquorum's own
    /// configuration has the `restore_command`), and reloads.
    pub async fn forget_recovery_target(&self) -> Result<(), Error> {
        for name in RECOVERY_SETTINGS {
            self.execute(&format!("ALTER SYSTEM RESET {name}")).await?;
        }
        self.reload().await
    }
}

impl Postgres {
    /// On a primary about to stop for a restore: commits one transaction (a time target up
    /// to now then has a commit to stop at) and switches to a new WAL segment, so that the
    /// archiver's last round at shutdown archives everything written so far.
    pub async fn seal_archive(&self) -> Result<(), Error> {
        let client = self.connect().await?;
        // Separate statements: in one simple query they would be one transaction, and the
        // commit would come after the switch.
        for statement in [
            "SET synchronous_commit TO local",
            "SELECT txid_current()",
            "SELECT pg_switch_wal()",
        ] {
            super::client::sql(
                &format!("sealing the archive: {statement}"),
                client.simple_query(statement),
            )
            .await?;
        }
        Ok(())
    }
}
