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
