//! The per-member backup task. It never touches the HA loop's work: it only runs
//! `pgbackrest` beside it, and only where the cluster state and the local status say so.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{BackupConfig, BackupJob, BackupOutcome, Command, NodeId};
use crate::peers::{LocalStatus, PeerStatuses};
use crate::postgres::{BackrestEndpoint, Postgres};
use crate::raft::RaftHandle;

/// How often the agent looks at the state.
const TICK: Duration = Duration::from_secs(2);
/// How old the primary's status may be for a standby to use its pgBackRest server.
const PRIMARY_FRESH: Duration = Duration::from_secs(10);
/// How often the lease holder compares the repository with the schedule.
const SCHEDULE_CHECK: Duration = Duration::from_secs(30);
/// How long after a failed stanza check it tries again.
const RETRY: Duration = Duration::from_secs(30);

pub struct Agent {
    pub me: NodeId,
    pub handle: RaftHandle,
    pub postgres: Arc<Postgres>,
    pub local: watch::Receiver<LocalStatus>,
    pub peers: watch::Receiver<Arc<PeerStatuses>>,
}

/// This member's `pgbackrest server` and what it was started with.
struct Server {
    child: tokio::process::Child,
    started_for: ServerKey,
}

/// What the server's configuration depends on: the stanza, the members it admits, and
/// its certificate (a renewed one is read at the next start).
type ServerKey = (String, Vec<u64>, Option<std::time::SystemTime>);

/// What the agent last made sure of.
#[derive(Default)]
struct Done {
    /// The `[backup]` (and database) for which this member, as primary, created the stanza
    /// and saw `pgbackrest check` pass.
    stanza: Option<(BackupConfig, u64)>,
    /// No stanza attempt before this.
    retry_at: Option<Instant>,
    /// The pgBackRest server, while `[backup]` takes backups from standbys.
    server: Option<Server>,
    /// When the lease holder next compares the repository with the schedule.
    schedule_at: Option<Instant>,
    /// The backup this member is taking, or took and reported.
    running: Option<(u64, tokio::task::JoinHandle<()>)>,
    /// The timeline for which this member, promoted, pushed the earlier timelines' segments
    /// its `pg_wal` still held (see [`Agent::fill_gap`]).
    filled: Option<u32>,
}

impl Agent {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut done = Done::default();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.cycle(&mut done).await;
        }
    }

    async fn cycle(&self, done: &mut Done) {
        let (backup, holder, system_id, job, members) = {
            let view = self.handle.view();
            let view = view.borrow();
            let state = &view.state;
            (
                state.config.backup.clone(),
                state.lease.map(|l| l.holder),
                state.database,
                state.backup_job.clone(),
                state.members.keys().map(|id| id.0).collect::<Vec<_>>(),
            )
        };
        let serve = backup.as_ref().filter(|b| b.from_standby).map(|b| {
            let cert = std::fs::metadata(self.postgres.backrest_tls().cert);
            (
                b.stanza.clone(),
                members,
                cert.and_then(|m| m.modified()).ok(),
            )
        });
        self.supervise_server(&mut done.server, serve);
        let Some(backup) = backup else {
            done.stanza = None;
            return;
        };
        if let Some(job) = job.as_ref().filter(|job| job.runner == self.me) {
            if done.running.as_ref().map(|(id, _)| *id) != Some(job.id) {
                let primary = holder.and_then(|h| {
                    let peers = self.peers.borrow();
                    let mut fresh = peers.fresh(PRIMARY_FRESH, Instant::now());
                    fresh
                        .find(|(id, _)| *id == h)
                        .and_then(|(_, report)| report.status.backrest.clone())
                });
                let task = tokio::spawn(take_backup(
                    self.me,
                    self.handle.clone(),
                    self.postgres.clone(),
                    job.clone(),
                    primary,
                ));
                done.running = Some((job.id, task));
            }
        }
        let writable = (self.local.borrow().as_ref()).is_some_and(|(s, _)| s.pg.is_writable());
        let (Some(system_id), true, true) = (system_id, holder == Some(self.me), writable) else {
            return;
        };
        let timeline = (self.local.borrow().as_ref()).map_or(0, |(s, _)| s.pg.timeline);
        let wanted = (backup, system_id);
        let waiting = done.retry_at.is_some_and(|at| Instant::now() < at);
        if done.stanza.as_ref() == Some(&wanted) {
            if timeline > 1 && done.filled != Some(timeline) && !waiting {
                match self.fill_gap(timeline).await {
                    Ok(()) => done.filled = Some(timeline),
                    Err(e) => {
                        tracing::warn!(error = %e, "archiving the earlier timelines' segments failed; retrying in 30 s");
                        done.retry_at = Some(Instant::now() + RETRY);
                    }
                }
            }
            let check = done.schedule_at.is_none_or(|at| Instant::now() >= at);
            if job.is_none() && check {
                done.schedule_at = Some(Instant::now() + SCHEDULE_CHECK);
                if let Err(e) = self.follow_schedule(&wanted.0).await {
                    tracing::warn!(error = %format!("{e:#}"), "checking the backup schedule");
                }
            }
            return;
        }
        if waiting {
            return;
        }
        // The configuration is written by the HA loop; until it is, pgbackrest reads none.
        if self.postgres.backrest().is_none() || !self.postgres.backrest_conf().exists() {
            return;
        }
        match self.create_stanza().await {
            Ok(()) => {
                tracing::info!(stanza = %wanted.0.stanza, repo = %wanted.0.repo_path, "pgBackRest stanza ready: WAL is archived to the repository");
                done.stanza = Some(wanted);
                done.retry_at = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "creating the pgBackRest stanza failed; retrying in 30 s");
                done.retry_at = Some(Instant::now() + RETRY);
            }
        }
    }

    /// On the lease holder: requests the backup the schedule says is due, if any (see
    /// [`super::due`]), from the member [`super::choose_runner`] picks.
    async fn follow_schedule(&self, backup: &BackupConfig) -> anyhow::Result<()> {
        if backup
            .full_every
            .or(backup.diff_every)
            .or(backup.incr_every)
            .is_none()
        {
            return Ok(());
        }
        let info = self.postgres.pgbackrest(&["info", "--output=json"]).await?;
        let info: serde_json::Value = serde_json::from_str(&info)?;
        let newest = super::Newest::from_info(&info[0]);
        let now = super::unix_now();
        let Some(kind) = super::due(backup, newest, now) else {
            return Ok(());
        };
        let statuses = {
            let view = self.handle.view().borrow().clone();
            let local = self.local.borrow().as_ref().map(|(s, _)| s.clone());
            let horizon = view.state.config.status_horizon();
            let known =
                (self.peers.borrow()).known_statuses(local.as_ref(), horizon, Instant::now());
            let from_standby = backup.from_standby && self.postgres.backrest_endpoint().is_some();
            super::choose_runner(&view.state, &known, from_standby)
        };
        let Some(runner) = statuses else {
            return Ok(());
        };
        let job = BackupJob {
            id: 0,
            kind,
            runner,
            requested_unix: now,
            scheduled: true,
            verify: false,
        };
        let result = self
            .handle
            .propose(Command::RequestBackup {
                job,
                replace: false,
            })
            .await?;
        tracing::info!(kind = kind.as_str(), runner = %runner, ?result, "the schedule asks for a backup");
        Ok(())
    }

    /// Keeps `pgbackrest server` running with the configuration `wanted` (`None`: not at
    /// all), restarting it when that changes or when it exited.
    fn supervise_server(&self, server: &mut Option<Server>, wanted: Option<ServerKey>) {
        if let Some(running) = server {
            let exited = running.child.try_wait().ok().flatten();
            if exited.is_some() || Some(&running.started_for) != wanted.as_ref() {
                if let Some(status) = exited {
                    tracing::warn!(%status, "the pgBackRest server exited; restarting it");
                }
                *server = None;
                self.postgres.set_backrest_serving(false);
            }
        }
        let (None, Some(key)) = (&server, wanted) else {
            return;
        };
        match self.postgres.spawn_backrest_server(&key.0, &key.1) {
            Ok(Some(child)) => {
                tracing::info!(clients = ?key.1, "pgBackRest server started");
                *server = Some(Server {
                    child,
                    started_for: key,
                });
                self.postgres.set_backrest_serving(true);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "starting the pgBackRest server; retrying"),
        }
    }

    /// `stanza-create` (a no-op on a stanza that exists for this database) and `check`,
    /// which waits until a WAL segment switched now reaches the repository.
    async fn create_stanza(&self) -> anyhow::Result<()> {
        self.postgres.pgbackrest(&["stanza-create"]).await?;
        self.postgres.pgbackrest(&["check"]).await?;
        Ok(())
    }

    /// Pushes the segments of earlier timelines that `pg_wal` still holds. With
    /// `archive_mode = on` a standby archives nothing, and a primary that failed may not have
    /// archived its last segments yet: this member received them, and without this push the
    /// archive would have a gap that no restore could cross. A segment already archived is
    /// a no-op (same checksum) or, as the old primary's copy may differ in bytes past its
    /// last record, refused as a duplicate: either way it is there.
    async fn fill_gap(&self, timeline: u32) -> anyhow::Result<()> {
        let (dir, names) = self.postgres.earlier_timeline_segments(timeline).await?;
        for name in &names {
            let path = dir.join(name).display().to_string();
            match (self.postgres)
                .pgbackrest(&["--no-archive-async", "archive-push", &path])
                .await
            {
                Err(e) if !e.to_string().contains("already exists") => return Err(e.into()),
                _ => {}
            }
        }
        tracing::info!(
            timeline,
            segments = names.len(),
            "archived what pg_wal held of earlier timelines"
        );
        Ok(())
    }
}

/// Takes backup `job` here (or runs the restore drill it asks for) and reports how it
/// ended (retrying the report until it is committed or refused). On a standby, `primary`
/// is the primary's pgBackRest server.
async fn take_backup(
    me: NodeId,
    handle: RaftHandle,
    postgres: Arc<Postgres>,
    job: BackupJob,
    primary: Option<BackrestEndpoint>,
) {
    let kind = job.kind.as_str();
    let (ok, message) = if job.verify {
        drill(&postgres, job.id).await
    } else {
        backup(&postgres, &job, primary.as_ref()).await
    };
    match (ok, job.verify) {
        (true, false) => tracing::info!(id = job.id, kind, label = %message, "backup taken"),
        (false, false) => tracing::warn!(id = job.id, kind, error = %message, "backup failed"),
        (true, true) => tracing::info!(id = job.id, %message, "restore drill passed"),
        (false, true) => tracing::warn!(id = job.id, error = %message, "restore drill failed"),
    }
    let outcome = BackupOutcome {
        id: job.id,
        kind: job.kind,
        runner: me,
        ok,
        message,
        finished_unix: super::unix_now(),
        verify: job.verify,
    };
    let command = Command::FinishBackup { outcome };
    for _ in 0..30 {
        match handle.propose(command.clone()).await {
            Ok(_) => return,
            Err(e) => tracing::warn!(error = %e, "reporting the backup; retrying"),
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Takes the backup `job` asks for; its label, or what failed.
async fn backup(
    postgres: &Postgres,
    job: &BackupJob,
    primary: Option<&BackrestEndpoint>,
) -> (bool, String) {
    let kind = job.kind.as_str();
    let standby = postgres.status().await.in_recovery;
    tracing::info!(id = job.id, kind, standby, "taking a backup");
    let mut args = vec!["backup".to_string(), format!("--type={kind}")];
    match (standby, primary) {
        (false, _) => {}
        (true, Some(primary)) => args.extend(postgres.standby_backup_args(primary)),
        (true, None) => {
            let why = "this member is a standby and the primary's pgBackRest server is not \
                       known (is [postgresql] tls on, and the primary up?)";
            return (false, why.to_string());
        }
    }
    let mut result = postgres.pgbackrest(&refs(&args)).await;
    // Under load, pgBackRest 2.45 sometimes fails a standby backup on a query of the
    // primary's remote, masked as "NULL result required to complete request" (the check in
    // its query's cleanup); not understood yet. Tried once more, with the remote's own log
    // on, so that a second failure leaves its cause in the primary's pgBackRest log.
    if let (Err(e), true) = (&result, standby) {
        if e.to_string().contains("raised from remote") {
            tracing::warn!(id = job.id, error = %e, "the standby backup failed in the primary's pgBackRest remote; trying once more, with its log on");
            args.extend(["--log-subprocess".into(), "--log-level-file=detail".into()]);
            result = postgres.pgbackrest(&refs(&args)).await;
        }
    }
    match result {
        Ok(_) => match newest_label(postgres).await {
            Ok(label) => (true, label),
            Err(e) => (true, format!("taken, but reading its label failed: {e:#}")),
        },
        Err(e) => (false, e.to_string()),
    }
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The restore drill: the newest backup restored into `<state>/pgbackrest/verify-<id>`,
/// started, checked and removed; what it found, or what failed.
async fn drill(postgres: &Postgres, id: u64) -> (bool, String) {
    let scratch = postgres
        .settings()
        .backrest_dir
        .join(format!("verify-{id}"));
    tracing::info!(id, scratch = %scratch.display(), "restore drill: restoring the newest backup");
    let started = Instant::now();
    match postgres.verify_backup(&scratch).await {
        Ok(v) => (
            true,
            format!(
                "backup {} restored into a scratch directory, consistent at {}: {} databases \
                 and {} relations readable, in {:.1} s (scratch directory removed)",
                v.label,
                v.replayed,
                v.databases,
                v.relations,
                started.elapsed().as_secs_f64()
            ),
        ),
        Err(e) => (
            false,
            super::one_line(&format!("{:#}", anyhow::Error::from(e))),
        ),
    }
}

/// The label of the newest backup in the repository (`pgbackrest info`).
async fn newest_label(postgres: &Postgres) -> anyhow::Result<String> {
    let info = postgres.pgbackrest(&["info", "--output=json"]).await?;
    let info: serde_json::Value = serde_json::from_str(&info)?;
    info.pointer("/0/backup")
        .and_then(serde_json::Value::as_array)
        .and_then(|backups| backups.last())
        .and_then(|b| b.get("label"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("pgbackrest info lists no backup"))
}
