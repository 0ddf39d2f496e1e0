//! Rejoining a former primary with `pg_rewind` (DESIGN §4): rather than cloning again, the
//! blocks this data directory changed after its history forked from the new primary's are
//! copied back from the new primary, with the WAL to replay from there.
//!
//! pg_rewind connects to the new primary as [`REWIND_USER`] (created next to the replication
//! role by `create_replication_user`, allowed only to read files through the four functions
//! pg_rewind needs), over TCP with SCRAM, the password coming from the passfile. It runs as
//! the OS user. When the data directory was not shut down cleanly (an immediate stop, a
//! killed postmaster or daemon), pg_rewind first finishes crash recovery itself by running
//! `postgres --single`. Single-user mode refuses standby mode, so:
//!
//! - a former *primary* that crashed but already has `standby.signal` (its replica
//!   configuration was written before the rewind) gets its signal files moved aside for
//!   the run and put back afterwards, whatever the outcome;
//! - a *standby* that crashed mid-recovery cannot be rewound until it has been started as a
//!   replica and stopped cleanly ([`Error::RecoveryUnfinished`], nothing changed).

use std::ffi::OsString;
use std::fs;
use std::path::PathBuf;

use super::process::{combined, tail, LOG_TAIL_LINES};
use super::{conf, io_error, Error, Postgres, Role, Upstream, REWIND_USER};

/// What [`Postgres::rewind`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewindOutcome {
    /// The histories had forked: pg_rewind copied back what differed. The data directory
    /// now starts (as a replica) from the last common checkpoint and replays the source's
    /// WAL up to where the source was when the rewind finished.
    Rewound,
    /// This data directory's history is part of the source's: nothing was copied.
    NotNeeded,
}

/// What pg_rewind prints just before it starts reading the file lists and then changing the
/// target: a failure after this line may have left the data directory half-rewound.
const POINT_OF_NO_RETURN: &str = "rewinding from last common checkpoint";

/// What pg_rewind prints when the target's history is contained in the source's.
const NOT_NEEDED: &str = "no rewind required";
const SAME_TIMELINE: &str = "source and target cluster are on the same timeline";
/// Cluster states (`pg_controldata`) of a data directory last used by a primary.
const PRIMARY_STATES: &[&str] = &[
    "in production",
    "shut down",
    "shutting down",
    "in crash recovery",
];

/// Files that make PostgreSQL start in recovery; single-user mode refuses them.
const SIGNAL_FILES: &[&str] = &["standby.signal", "recovery.signal"];

/// Cluster states (`pg_controldata`) after which crash recovery continues as a primary
/// would: single-user mode can finish it once the signal files are out of the way.
const CRASHED_AS_PRIMARY: &[&str] = &["in production", "shutting down", "in crash recovery"];

impl Postgres {
    /// Rewinds this data directory onto `from` (the new primary) with `pg_rewind`, so that it
    /// can follow `from` as a replica. PostgreSQL must be stopped ([`Error::Running`]
    /// otherwise); it is not started. After an immediate stop or a crash, pg_rewind finishes
    /// crash recovery first (module doc). Holds the start/stop lock throughout.
    ///
    /// On success ([`RewindOutcome::Rewound`] or [`RewindOutcome::NotNeeded`]) the replica
    /// configuration for `from` is written right away, as
    /// [`write_config`](Self::write_config)`(Replica { upstream: Some(from) })` would: a
    /// rewind copies the source's `postgresql.conf`, `pg_hba.conf` and `pgquorum.conf`
    /// (whose port and addresses are the source's) and leaves a data directory that must
    /// never start as a primary. The caller's own `write_config(Replica ..)` afterwards then
    /// reports only what it changes beyond that. `from.slot` must exist on `from` before
    /// the replica is started.
    ///
    /// Before anything else it waits (briefly) for the source's first checkpoint on its
    /// current timeline, which pg_rewind needs to see the source's timeline at all; a
    /// source still without one after that is [`Error::RewindFailed`] with nothing changed.
    ///
    /// On failure, [`Error::RewindFailed`] with the tail of pg_rewind's output, and nothing
    /// else is touched. Its `may_be_damaged` says whether pg_rewind had got as far as
    /// changing files: then only a new clone is safe. Cancelling this future kills
    /// pg_rewind, with the same consequence; do not.
    pub async fn rewind(&self, from: &Upstream) -> Result<RewindOutcome, Error> {
        const ACTION: &str = "rewinding with pg_rewind";
        let _serial = self.lifecycle.lock().await;
        let data_dir = &self.settings.data_dir;
        if self.is_running() {
            return Err(Error::Running {
                action: ACTION,
                data_dir: data_dir.clone(),
            });
        }
        if !data_dir.join("PG_VERSION").is_file() {
            return Err(Error::NoDataDir {
                action: ACTION,
                data_dir: data_dir.clone(),
            });
        }
        let from_addr = format!("{}:{}", from.host, from.port);
        // pg_rewind (PostgreSQL 15 and older) takes the source's timeline from the
        // *checkpoint* in its control file. Until the new primary's first checkpoint
        // after the promotion that is the timeline of its last restartpoint as a
        // standby, which may be several timelines back: pg_rewind then reads the
        // source's history as that timeline's, "finds" the divergence at that
        // timeline's end in ours and rewinds us to a checkpoint before it (seen: "servers
        // diverged at WAL location 0/50000A0 on timeline 1" with the cluster on 9, and a
        // replica asking for long-removed WAL of timeline 1 forever). So wait for that
        // checkpoint first; nothing is changed until it is there.
        self.wait_source_checkpointed(from, &from_addr).await?;
        // When pg_rewind had to finish crash recovery first, its "no rewind required" was
        // judged on a directory that the recovery then changed (it writes an end-of-recovery
        // checkpoint); a second run on the cleanly shut down directory (tens of
        // milliseconds) confirms it before we trust it.
        let mut attempt = 0;
        let mut was_primary = false;
        let (outcome, text) = loop {
            attempt += 1;
            let state = self.cluster_state().await?;
            if attempt == 1 {
                was_primary = PRIMARY_STATES.contains(&state.as_str());
            }
            let clean = matches!(state.as_str(), "shut down" | "shut down in recovery");
            let signals: Vec<&str> = SIGNAL_FILES
                .iter()
                .copied()
                .filter(|name| data_dir.join(name).exists())
                .collect();
            let aside = if clean || signals.is_empty() {
                None
            } else if CRASHED_AS_PRIMARY.contains(&state.as_str()) {
                Some(SetAside::new(self, &signals)?)
            } else {
                return Err(Error::RecoveryUnfinished {
                    data_dir: data_dir.clone(),
                    state,
                });
            };
            let mut target = OsString::from("--target-pgdata=");
            target.push(data_dir);
            let source = format!("--source-server={}", source_conninfo(from));
            tracing::info!(data_dir = %data_dir.display(), from = %from_addr, cluster_state = %state, attempt, "running pg_rewind");
            let run = self
                .run_unchecked(
                    "pg_rewind",
                    &[target.as_os_str(), source.as_ref()],
                    &self.client_env(),
                )
                .await;
            drop(aside);
            let (_, output) = run?;
            let text = combined(&output);
            if !output.status.success() {
                return Err(Error::RewindFailed {
                    data_dir: data_dir.clone(),
                    from: from_addr,
                    status: output.status.to_string(),
                    output: tail(&text, LOG_TAIL_LINES),
                    may_be_damaged: text.contains(POINT_OF_NO_RETURN),
                });
            }
            // Right after a promotion the source's control file still names the old
            // timeline until its first checkpoint; pg_rewind then sees "the same timeline"
            // and would wrongly call the rewind unnecessary. A former primary can never
            // legitimately share a timeline with a valid source (a replica that followed
            // the source can), so for one this means "not yet": nothing was changed, and
            // it is reported as a failure the caller retries.
            if was_primary && text.contains(SAME_TIMELINE) {
                return Err(Error::RewindFailed {
                    data_dir: data_dir.clone(),
                    from: from_addr,
                    status: "source not checkpointed on its new timeline yet".into(),
                    output: tail(&text, LOG_TAIL_LINES),
                    may_be_damaged: false,
                });
            }
            let outcome = if text.contains(NOT_NEEDED) {
                RewindOutcome::NotNeeded
            } else {
                RewindOutcome::Rewound
            };
            if outcome == RewindOutcome::NotNeeded && !clean && attempt == 1 {
                continue;
            }
            break (outcome, text);
        };
        tracing::info!(?outcome, from = %from_addr, output = %text.trim_end(), "pg_rewind finished");
        self.write_config(&Role::Replica {
            upstream: Some(from),
        })?;
        Ok(outcome)
    }

    /// Waits (up to [`SOURCE_CHECKPOINT_WAIT`]) until the last checkpoint of the source
    /// `from` is on the timeline it writes (see [`source_checkpoint_lags`]); after that
    /// [`Error::RewindFailed`] (nothing changed), which the caller retries. Asks the source
    /// with `psql` as [`REWIND_USER`], as pg_rewind will connect.
    async fn wait_source_checkpointed(
        &self,
        from: &Upstream,
        from_addr: &str,
    ) -> Result<(), Error> {
        let conninfo = source_conninfo(from);
        let words = [
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            conninfo.as_str(),
            "-c",
            SOURCE_TIMELINES,
        ];
        let args: Vec<&std::ffi::OsStr> = words.iter().map(|arg| arg.as_ref()).collect();
        let deadline = tokio::time::Instant::now() + SOURCE_CHECKPOINT_WAIT;
        loop {
            // Whatever goes wrong here (the source unreachable, a wrong password), pg_rewind
            // has not run: a clean failure the caller retries.
            let failed = |status: String, output: String| Error::RewindFailed {
                data_dir: self.settings.data_dir.clone(),
                from: from_addr.to_string(),
                status: format!("asking the source for its checkpoint's timeline: {status}"),
                output,
                may_be_damaged: false,
            };
            let out = match self.run("psql", &args, &self.client_env()).await {
                Ok(out) => out,
                Err(Error::CommandFailed { status, output, .. }) => {
                    return Err(failed(status, output))
                }
                Err(e) => return Err(e),
            };
            let Some((checkpoint, current)) = parse_source_timelines(&out) else {
                return Err(failed(
                    "exit status: 0".into(),
                    format!("unexpected answer {:?}", out.trim()),
                ));
            };
            if !source_checkpoint_lags(checkpoint, current) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::RewindFailed {
                    data_dir: self.settings.data_dir.clone(),
                    from: from_addr.to_string(),
                    status: "source not checkpointed on its new timeline yet".into(),
                    output: format!(
                        "the source's last checkpoint is on timeline {checkpoint}, it writes \
                         timeline {}; pg_rewind would take its history for timeline \
                         {checkpoint}'s (pg_rewind was not run)",
                        current.unwrap_or(0)
                    ),
                    may_be_damaged: false,
                });
            }
            tracing::info!(checkpoint_timeline = checkpoint, timeline = ?current, from = %from_addr, "waiting for the source's first checkpoint on its timeline before pg_rewind");
            tokio::time::sleep(SOURCE_CHECKPOINT_POLL).await;
        }
    }

    /// The "Database cluster state" `pg_controldata` reports, e.g. `shut down`.
    pub(super) async fn cluster_state(&self) -> Result<String, Error> {
        let out = self
            .run(
                "pg_controldata",
                &["-D".as_ref(), self.settings.data_dir.as_os_str()],
                &[],
            )
            .await?;
        parse_cluster_state(&out).ok_or_else(|| Error::CommandFailed {
            command: format!("pg_controldata -D {}", self.settings.data_dir.display()),
            status: "exit status: 0".into(),
            output: "no \"Database cluster state\" line in its output".into(),
        })
    }
}

/// What the source is asked before a rewind: the timeline of its last checkpoint (what
/// pg_rewind takes for its timeline) and, unless it is in recovery, the name of the WAL file
/// it writes (whose first 8 hex digits are the timeline it is on).
const SOURCE_TIMELINES: &str = "SELECT timeline_id, CASE WHEN pg_is_in_recovery() THEN '' \
     ELSE pg_walfile_name(pg_current_wal_lsn()) END FROM pg_control_checkpoint()";

/// How long a rewind waits for the new primary's first checkpoint on its timeline (it
/// requests one at the promotion, and pgquorum another right after).
const SOURCE_CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
const SOURCE_CHECKPOINT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The answer to [`SOURCE_TIMELINES`] (`psql -A -t`: `15|0000000F0000000000000059`, or
/// `15|` in recovery): the checkpoint's timeline and the current one, if known.
fn parse_source_timelines(out: &str) -> Option<(u32, Option<u32>)> {
    let (checkpoint, walfile) = out.trim().split_once('|')?;
    let checkpoint = checkpoint.trim().parse().ok()?;
    let walfile = walfile.trim();
    if walfile.is_empty() {
        return Some((checkpoint, None));
    }
    let hex = walfile.get(..8).filter(|_| walfile.len() == 24)?;
    let current = u32::from_str_radix(hex, 16).ok()?;
    Some((checkpoint, Some(current)))
}

/// Whether the source's control file still names an older timeline than the one it writes:
/// then pg_rewind (before PostgreSQL 16) would compute the divergence from the history of
/// the checkpoint's timeline, not the source's, and rewind to the wrong point (or judge
/// "the same timeline"). A source in recovery (`current` unknown) is left to pg_rewind.
fn source_checkpoint_lags(checkpoint: u32, current: Option<u32>) -> bool {
    current.is_some_and(|current| checkpoint < current)
}

/// The libpq connection string pg_rewind uses for `from` (no password: the passfile has it).
fn source_conninfo(from: &Upstream) -> String {
    let port = from.port.to_string();
    [
        ("host", from.host.as_str()),
        ("port", port.as_str()),
        ("user", REWIND_USER),
        ("dbname", "postgres"),
        ("application_name", "pgquorum_rewind"),
        ("connect_timeout", "10"),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", conf::conninfo_value(v)))
    .collect::<Vec<_>>()
    .join(" ")
}

/// The cluster state in `pg_controldata` output (run with `LC_ALL=C`).
fn parse_cluster_state(output: &str) -> Option<String> {
    output
        .lines()
        .find_map(|line| line.strip_prefix("Database cluster state:"))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// What [`Error::RewindFailed`] means for the data directory.
pub(super) fn consequence(may_be_damaged: bool) -> &'static str {
    if may_be_damaged {
        "it had begun changing the data directory, which may be unusable now: only a new clone \
         is safe"
    } else {
        "it stopped before changing any file (at most it finished crash recovery)"
    }
}

/// Signal files moved out of the data directory (kept in memory: pg_rewind deletes target
/// files the source lacks) and written back when dropped, whatever happened meanwhile.
struct SetAside<'a> {
    pg: &'a Postgres,
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl<'a> SetAside<'a> {
    fn new(pg: &'a Postgres, names: &[&str]) -> Result<SetAside<'a>, Error> {
        let mut aside = SetAside {
            pg,
            files: Vec::new(),
        };
        for name in names {
            let path = pg.settings.data_dir.join(name);
            let bytes = fs::read(&path).map_err(io_error(format!("reading {}", path.display())))?;
            fs::remove_file(&path).map_err(io_error(format!(
                "moving {} aside for pg_rewind's crash recovery",
                path.display()
            )))?;
            tracing::info!(file = %path.display(), "set aside: single-user crash recovery refuses it");
            aside.files.push((path, bytes));
        }
        Ok(aside)
    }
}

impl Drop for SetAside<'_> {
    fn drop(&mut self) {
        for (path, bytes) in &self.files {
            if let Err(e) = self.pg.write_file(path, bytes) {
                tracing::error!(file = %path.display(), error = %format!("{:#}", anyhow::Error::from(e)), "putting back a signal file set aside for pg_rewind");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_state_is_read_from_pg_controldata() {
        let out = "pg_control version number:            1300\n\
                   Database system identifier:           7312345678901234567\n\
                   Database cluster state:               shut down in recovery\n\
                   pg_control last modified:             Mon 01 Jan 2024\n";
        assert_eq!(
            parse_cluster_state(out).as_deref(),
            Some("shut down in recovery")
        );
        assert_eq!(parse_cluster_state("garbage"), None);
    }

    #[test]
    fn a_source_whose_checkpoint_is_on_an_older_timeline_is_waited_for() {
        for (answer, parsed, lags) in [
            // Just promoted to 9, its last restartpoint was on timeline 1 (the campaign's
            // "diverged on timeline 1").
            ("1|000000090000000000000034\n", Some((1, Some(9))), true),
            ("8|000000090000000000000034", Some((8, Some(9))), true),
            ("9|000000090000000000000034", Some((9, Some(9))), false),
            ("15|0000000F0000000000000059", Some((15, Some(15))), false),
            // In recovery: no current timeline to compare with.
            ("4|", Some((4, None)), false),
            ("", None, false),
            ("x|000000090000000000000034", None, false),
            ("9|0000000G0000000000000034", None, false),
            ("9|00000009", None, false),
        ] {
            assert_eq!(parse_source_timelines(answer), parsed, "{answer:?}");
            let judged = parsed.is_some_and(|(c, t)| source_checkpoint_lags(c, t));
            assert_eq!(judged, lags, "{answer:?}");
        }
    }

    #[test]
    fn source_conninfo_names_the_rewind_role_and_no_password() {
        let from = Upstream {
            host: "10.0.0.2".into(),
            port: 5433,
            slot: "pgquorum_1".into(),
        };
        assert_eq!(
            source_conninfo(&from),
            "host=10.0.0.2 port=5433 user=pgquorum_rewind dbname=postgres \
             application_name=pgquorum_rewind connect_timeout=10"
        );
    }
}
