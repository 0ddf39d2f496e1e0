//! The local PostgreSQL: binaries, data directory, generated configuration, the postmaster
//! child process, and the few queries the HA loop needs (DESIGN §4).
//!
//! ```text
//!  ha::execute ─► Postgres ─┬─ binaries   find bin dir + major version
//!                           ├─ bootstrap  data_dir_state, initdb, pg_basebackup (atomic)
//!                           ├─ conf       pgquorum.conf, pg_hba.conf, standby.signal (pure)
//!                           ├─ process    postmaster child: start/adopt, stop, is_running
//!                           ├─ client     status, promote, slots, roles over the unix socket
//!                           ├─ rewind     pg_rewind a former primary onto the new one
//!                           ├─ tls        its TLS files, and verify-full for other members
//!                           └─ files      atomic writes owned by PostgreSQL's OS user
//! ```
//!
//! When the daemon may act as another user (root, or its own user with the capabilities of
//! [`process::Privilege::Capabilities`], as the packaged unit runs it), every PostgreSQL
//! program runs as `Settings::os_user`, and the files it must read are owned by that user;
//! the daemon's own secrets stay 0600 files of the daemon's user, which no PostgreSQL role
//! can read. The
//! postmaster dies with the daemon (`PR_SET_PDEATHSIG` = SIGQUIT): a daemon that is killed
//! must not leave a writable primary behind that a failover would duplicate. Dropping a
//! [`Postgres`] whose postmaster is still running has the same effect.

mod backrest;
mod binaries;
mod bootstrap;
mod client;
mod conf;
mod files;
mod pitr;
pub(crate) mod process;
mod rewind;
pub mod roles;
mod status;
#[cfg(test)]
mod tests;
mod timeline;
mod tls;
mod verify;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub use backrest::{
    backrest_bin, client_cn as backrest_client_cn, render_conf as render_backrest_conf, Backrest,
    BackrestEndpoint, BackrestServer,
};
pub use client::Standby;
pub use conf::{ConfigChange, REWIND_USER};
pub use pitr::restore_args;
pub use rewind::RewindOutcome;
pub use status::{Archiver, DataDir, Lsn, PgRole, PgStatus};
pub use tls::TlsFiles;
pub use verify::Verified;

use crate::secret::Secret;
use binaries::Binaries;
use process::{Account, Postmaster, Spawner};

/// Per-host PostgreSQL settings, from the `[postgresql]` section of the config file. Every
/// path must be reachable by `os_user` when the daemon runs as root ([`Postgres::new`]
/// checks that each existing parent directory is searchable by it).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Directory with `postgres`, `initdb`, ...; `None` finds the newest packaged install.
    pub bin_dir: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// `listen_addresses`, e.g. `127.0.0.1` or `*`.
    pub listen_host: String,
    pub port: u16,
    /// `unix_socket_directories`; created mode 0700 owned by `os_user`, which is what makes
    /// the `local all all trust` rule of `pg_hba.conf` safe.
    pub socket_dir: PathBuf,
    /// Whom PostgreSQL runs as when the daemon may switch users (root, or its own user
    /// with [`process::SWITCH_CAPABILITIES`]); ignored otherwise.
    pub os_user: String,
    /// A libpq passfile (0600, owned by `os_user`) written by [`Postgres::new`] with the
    /// passwords of the replication role and of [`REWIND_USER`], so no password appears on
    /// a command line or in a config file.
    pub passfile: PathBuf,
    /// PostgreSQL's stderr (and stdout) are appended here.
    pub log_file: PathBuf,
    /// TLS from the cluster CA for PostgreSQL's own traffic, `None` for plain TCP.
    pub tls: Option<TlsFiles>,
    /// pgBackRest's configuration, spool, logs and locks (see `backrest.rs`).
    pub backrest_dir: PathBuf,
    /// Where this member's pgBackRest TLS server listens, when it runs one (with TLS on).
    pub backrest_server: Option<BackrestServer>,
}

/// The role replicas (and `pg_basebackup`) authenticate as.
#[derive(Debug, Clone)]
pub struct ReplicationCredentials {
    /// A plain identifier, e.g. `pgquorum_replicator`, other than [`REWIND_USER`] (checked by
    /// [`Postgres::new`]).
    pub user: String,
    pub password: Secret<String>,
    /// The password of [`REWIND_USER`].
    pub rewind_password: Secret<String>,
}

/// Whom a replica streams from, and the physical slot it uses there. The slot name is also
/// the replica's `application_name`, which is what `synchronous_standby_names` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    pub slot: String,
}

/// What the generated configuration makes of this PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role<'a> {
    Primary {
        synchronous_standby_names: Option<String>,
    },
    /// `upstream: None` is a standby that does not stream (yet): it replays what it has.
    Replica { upstream: Option<&'a Upstream> },
}

/// How [`Postgres::stop`] asks the postmaster to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// SIGINT: abort transactions, checkpoint, exit.
    Fast,
    /// SIGQUIT: exit at once; crash recovery at the next start.
    Immediate,
}

/// Errors of this module. Messages say what was being done and, for setup problems, how to
/// fix them; the underlying cause is the `source`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no PostgreSQL server binaries found in {searched}; install postgresql or set [postgresql] bin_dir")]
    BinariesNotFound { searched: String },
    #[error("[postgresql] bin_dir {}: no postgres executable there; point it at the directory holding postgres, initdb and pg_basebackup", dir.display())]
    NoServerBinary { dir: PathBuf },
    #[error("PostgreSQL {version} in {} is too old: pgquorum needs {} or newer", dir.display(), binaries::MIN_VERSION)]
    UnsupportedVersion { version: u32, dir: PathBuf },
    #[error("[postgresql] os_user {user:?} does not exist; create it (the postgresql package does) or set os_user")]
    UnknownUser { user: String },
    #[error("{} is not reachable by OS user {user}: it cannot enter {}; run chmod o+x on it or choose another path", path.display(), blocked.display())]
    NotReachable {
        path: PathBuf,
        user: String,
        blocked: PathBuf,
    },
    #[error("the daemon has CAP_SETUID but not {missing}, which it also needs to run PostgreSQL as OS user {user:?}; grant them all (the packaged unit's AmbientCapabilities= lists them) or run the daemon as {user}")]
    MissingCapabilities { missing: String, user: String },
    #[error("replication user {user:?} {why}")]
    BadReplicationUser { user: String, why: &'static str },
    #[error("{action}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error("{command} failed ({status}): {output}")]
    CommandFailed {
        command: String,
        status: String,
        output: String,
    },
    #[error("{action} in {}: the data directory is {}; nothing was removed. Move it away or empty it to proceed", data_dir.display(), describe(state))]
    DataDirNotMissing {
        action: &'static str,
        data_dir: PathBuf,
        state: DataDir,
    },
    #[error("{action} in {}: there is no PostgreSQL data directory; initdb or clone first", data_dir.display())]
    NoDataDir {
        action: &'static str,
        data_dir: PathBuf,
    },
    #[error("connecting to PostgreSQL on {}/.s.PGSQL.{port}", socket_dir.display())]
    Connect {
        socket_dir: PathBuf,
        port: u16,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{action}")]
    Sql {
        action: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("postgres in {} exited during startup ({status}); log tail:\n{log_tail}", data_dir.display())]
    StartFailed {
        data_dir: PathBuf,
        status: String,
        log_tail: String,
    },
    #[error("postgres in {} did not accept connections within {waited:?} (left running); log tail:\n{log_tail}", data_dir.display())]
    StartTimedOut {
        data_dir: PathBuf,
        waited: Duration,
        log_tail: String,
    },
    #[error("postmaster {pid} in {} still running {waited:?} after SIGQUIT", data_dir.display())]
    StopTimedOut {
        pid: u32,
        data_dir: PathBuf,
        waited: Duration,
    },
    #[error("promotion did not finish within {waited:?}")]
    PromoteTimedOut { waited: Duration },
    #[error("{action} in {}: PostgreSQL is running there; stop it first", data_dir.display())]
    Running {
        action: &'static str,
        data_dir: PathBuf,
    },
    #[error("pg_rewind of {} from {from} failed ({status}); {}; pg_rewind said:\n{output}", data_dir.display(), rewind::consequence(*may_be_damaged))]
    RewindFailed {
        data_dir: PathBuf,
        /// `host:port` of the source server.
        from: String,
        status: String,
        /// The tail of pg_rewind's output.
        output: String,
        /// pg_rewind had reached the point where it changes the data directory: it may be
        /// unusable now, and only a fresh clone is safe.
        may_be_damaged: bool,
    },
    #[error("cannot rewind {}: it was not shut down cleanly while in recovery (cluster state {state:?}), and pg_rewind cannot finish a standby's recovery itself; start it as a replica until it accepts connections, stop it with a fast shutdown, then rewind. Nothing was changed", data_dir.display())]
    RecoveryUnfinished { data_dir: PathBuf, state: String },
    #[error("pgbackrest is not installed on this member: install it (apt-get install pgbackrest, or dnf install pgbackrest) on every member before configuring [backup]")]
    BackrestNotFound,
    #[error("the cluster has no [backup] configured; set one with `pgquorum config set backup.repo_path=<directory every member mounts>`")]
    NoBackup,
    #[error("the repository has no backup of the current line of history to make a replica of (none yet, or all from before the last restore)")]
    NoBackupToRestore,
}

fn describe(state: &DataDir) -> String {
    match state {
        DataDir::Missing => "missing".into(),
        DataDir::Initialised { system_id } => {
            format!("an initialised cluster (system identifier {system_id})")
        }
        DataDir::Foreign => "not empty and not a PostgreSQL cluster pgquorum can use".into(),
    }
}

fn io_error(action: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let action = action.into();
    move |source| Error::Io { action, source }
}

/// This host's PostgreSQL. `Send + Sync`; one per daemon, shared as `Arc<Postgres>`.
///
/// Calls do not lock each other out except [`start`](Self::start) and
/// [`stop`](Self::stop), which are serialised. Each query opens its own short-lived
/// connection over the unix socket as the `postgres` superuser.
pub struct Postgres {
    settings: Settings,
    creds: ReplicationCredentials,
    bin: Binaries,
    /// Whom PostgreSQL programs run as; `None` when the daemon is not root (run as ourselves).
    account: Option<Account>,
    /// `LC_ALL` for child processes: `C.UTF-8` when the system has it, else `C`.
    locale: &'static str,
    /// The postmaster we spawned, if any (see `process.rs`).
    postmaster: Mutex<Postmaster>,
    /// The long-lived thread that forks the postmaster, so its death signal is tied to the
    /// daemon and not to a short-lived runtime thread.
    spawner: Spawner,
    /// Serialises start and stop.
    lifecycle: tokio::sync::Mutex<()>,
    /// User parameters from the dynamic configuration, written into `pgquorum.conf`.
    parameters: Mutex<BTreeMap<String, String>>,
    /// The operator's `pg_hba` rules from the dynamic configuration (empty: the defaults).
    hba_rules: Mutex<Vec<String>>,
    /// The cluster's pgBackRest repository, from `[backup]`.
    backrest: Mutex<Option<Backrest>>,
    /// Whether this member's pgBackRest TLS server is running (see `backrest.rs`).
    backrest_serving: std::sync::atomic::AtomicBool,
    /// The connection [`Postgres::status`] reuses from cycle to cycle: a new connection is a
    /// new backend, and starting one took up to a second on a saturated host (measured),
    /// while a query on an open one is answered at once.
    status_client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

impl Postgres {
    /// Finds the binaries, resolves `os_user` when the daemon may switch to it, checks that
    /// the paths are reachable by it, and writes the passfile (mode 0600, owned by `os_user`). Starts
    /// nothing besides the spawner thread. Errors say what is missing and how to fix it.
    pub fn new(settings: Settings, creds: ReplicationCredentials) -> Result<Self, Error> {
        if creds.user.is_empty()
            || !creds
                .user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::BadReplicationUser {
                user: creds.user,
                why: "is not a plain identifier (letters, digits, underscore)",
            });
        }
        if creds.user == REWIND_USER {
            return Err(Error::BadReplicationUser {
                user: creds.user,
                why: "is reserved for pg_rewind; choose another name",
            });
        }
        let bin = Binaries::find(settings.bin_dir.as_deref())?;
        let account = match process::privilege() {
            process::Privilege::Unprivileged => None,
            process::Privilege::Partial { missing } => {
                return Err(Error::MissingCapabilities {
                    missing: missing.join(", "),
                    user: settings.os_user.clone(),
                })
            }
            process::Privilege::Root | process::Privilege::Capabilities => {
                let account = Account::lookup(&settings.os_user)?;
                if account.uid == process::effective_ids().0 {
                    None
                } else {
                    for path in [
                        &settings.data_dir,
                        &settings.socket_dir,
                        &settings.passfile,
                        &settings.log_file,
                    ] {
                        account.check_reachable(path)?;
                    }
                    Some(account)
                }
            }
        };
        let locale = if ["C.UTF-8", "C.utf8"]
            .iter()
            .any(|name| Path::new("/usr/lib/locale").join(name).exists())
        {
            "C.UTF-8"
        } else {
            "C"
        };
        let pg = Postgres {
            spawner: Spawner::start()?,
            settings,
            creds,
            bin,
            account,
            locale,
            postmaster: Mutex::new(Postmaster::default()),
            lifecycle: tokio::sync::Mutex::new(()),
            parameters: Mutex::new(BTreeMap::new()),
            hba_rules: Mutex::new(Vec::new()),
            backrest: Mutex::new(None),
            backrest_serving: std::sync::atomic::AtomicBool::new(false),
            status_client: tokio::sync::Mutex::new(None),
        };
        let passfile = conf::passfile(
            &pg.creds.user,
            pg.creds.password.expose(),
            pg.creds.rewind_password.expose(),
        );
        pg.write_file(&pg.settings.passfile, passfile.as_bytes())?;
        Ok(pg)
    }

    /// PostgreSQL's OS uid when it is not the daemon's.
    pub fn os_uid(&self) -> Option<u32> {
        self.account.as_ref().map(|a| a.uid)
    }

    /// The major version of the server binaries in use, e.g. 15.
    pub fn version(&self) -> u32 {
        self.bin.version
    }

    /// The settings this instance was built with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Sets the user parameters (from the dynamic configuration) that the next
    /// [`write_config`](Self::write_config) writes. Returns whether they changed.
    pub fn set_parameters(&self, parameters: &BTreeMap<String, String>) -> bool {
        let mut current = self.parameters.lock().expect("parameters lock poisoned");
        if *current == *parameters {
            return false;
        }
        *current = parameters.clone();
        true
    }

    /// Sets the operator's `pg_hba` rules that the next [`write_config`](Self::write_config)
    /// writes. Returns whether they changed.
    pub fn set_hba_rules(&self, rules: &[String]) -> bool {
        let mut current = self.hba_rules.lock().expect("hba rules lock poisoned");
        if current.as_slice() == rules {
            return false;
        }
        *current = rules.to_vec();
        true
    }

    /// Renders the configuration for `role` into the data directory and reports what a
    /// running server needs to apply it: appends `include 'pgquorum.conf'` to
    /// `postgresql.conf` once, rewrites `pgquorum.conf` and `pg_hba.conf` atomically when
    /// they differ, and creates or removes `standby.signal`. Does not reload or restart
    /// anything. Errors if the data directory has no `postgresql.conf`.
    pub fn write_config(&self, role: &Role) -> Result<ConfigChange, Error> {
        self.write_config_in(&self.settings.data_dir, role)
    }

    /// [`write_config`](Self::write_config) for the cluster in `dir`.
    fn write_config_in(&self, dir: &Path, role: &Role) -> Result<ConfigChange, Error> {
        let main = dir.join("postgresql.conf");
        let text =
            fs::read_to_string(&main).map_err(io_error(format!("reading {}", main.display())))?;
        let mut change = ConfigChange::Unchanged;
        if let Some(updated) = conf::with_include(&text) {
            self.write_file(&main, updated.as_bytes())?;
            change = ConfigChange::Restart;
        }

        let archiving = self.write_backrest(dir)?;
        let tls_paths = self.settings.tls.as_ref().map(|t| {
            (
                t.cert.to_string_lossy().into_owned(),
                t.key.to_string_lossy().into_owned(),
                t.ca.to_string_lossy().into_owned(),
            )
        });
        let inputs = conf::Inputs {
            listen_host: &self.settings.listen_host,
            port: self.settings.port,
            socket_dir: &self.settings.socket_dir.to_string_lossy(),
            passfile: &self.settings.passfile.to_string_lossy(),
            replication_user: &self.creds.user,
            version: self.bin.version,
            tls: tls_paths.as_ref().map(|(c, k, a)| conf::TlsPaths {
                cert: c,
                key: k,
                ca: a,
            }),
            wal_filesystem_bytes: process::filesystem_bytes(&dir.join("pg_wal")).ok(),
            archiving: archiving.as_ref(),
        };
        let parameters = self
            .parameters
            .lock()
            .expect("parameters lock poisoned")
            .clone();
        let rendered = conf::render(&inputs, role, &parameters);
        let path = dir.join(conf::FILE);
        let old = match fs::read_to_string(&path) {
            Ok(old) => Some(old),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(format!("reading {}", path.display()))(e)),
        };
        if old.as_deref() != Some(rendered.as_str()) {
            let before = old
                .as_deref()
                .map(conf::parse)
                .unwrap_or_else(BTreeMap::new);
            change = change.max(conf::classify(
                &before,
                &conf::parse(&rendered),
                inputs.version,
            ));
            if old.is_none() {
                change = ConfigChange::Restart;
            }
            self.write_file(&path, rendered.as_bytes())?;
        }

        let hba = dir.join("pg_hba.conf");
        let rules = self
            .hba_rules
            .lock()
            .expect("hba rules lock poisoned")
            .clone();
        let rendered = conf::render_hba(&self.creds.user, self.settings.tls.is_some(), &rules);
        if fs::read_to_string(&hba).ok().as_deref() != Some(rendered.as_str()) {
            self.write_file(&hba, rendered.as_bytes())?;
            change = change.max(ConfigChange::Reload);
        }

        let signal = dir.join("standby.signal");
        let wanted = matches!(role, Role::Replica { .. });
        if signal.exists() != wanted {
            if wanted {
                self.write_file(&signal, b"")?;
            } else {
                fs::remove_file(&signal)
                    .map_err(io_error(format!("removing {}", signal.display())))?;
            }
            change = ConfigChange::Restart;
        }
        Ok(change)
    }

    /// The timelines of the history files in `pg_wal`.
    fn histories(pg_wal: &Path) -> Result<Vec<u32>, Error> {
        timeline::histories(pg_wal).map_err(|source| Error::Io {
            action: format!("listing the timeline history files in {}", pg_wal.display()),
            source,
        })
    }

    /// One above every timeline this data directory knows of (`current`, and each history
    /// file in `pg_wal`): the lowest a promotion of it may create (see [`timeline`]).
    pub fn lowest_next_timeline(&self, current: u32) -> Result<u32, Error> {
        let pg_wal = self.settings.data_dir.join("pg_wal");
        let known = Self::histories(&pg_wal)?;
        Ok(timeline::lowest_next(current, known))
    }

    /// How timeline `tli` began, from its history file in `pg_wal`: the parent timeline, the
    /// switch position, PostgreSQL's reason, and when the file was written (Unix ms).
    /// `None` for timeline 1, or when the file is missing or a placeholder.
    pub fn timeline_switch(&self, tli: u32) -> Result<Option<(u32, Lsn, String, u64)>, Error> {
        let path = timeline::history_path(&self.settings.data_dir.join("pg_wal"), tli);
        let io = |source| Error::Io {
            action: format!("reading {}", path.display()),
            source,
        };
        let text = match fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            other => other.map_err(io)?,
        };
        let written = fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(io)?
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Ok(
            timeline::last_switch(&text)
                .map(|(parent, lsn, reason)| (parent, lsn, reason, written)),
        )
    }

    /// Writes the placeholder history files that make the promotion of this replica, on
    /// timeline `current`, create timeline `reserved`; returns their timelines.
    pub fn place_timeline_placeholders(
        &self,
        current: u32,
        reserved: u32,
    ) -> Result<Vec<u32>, Error> {
        let pg_wal = self.settings.data_dir.join("pg_wal");
        let known = Self::histories(&pg_wal)?;
        let missing = timeline::missing_below(current, reserved, known);
        let text = timeline::placeholder_text();
        for tli in &missing {
            self.write_file(&timeline::history_path(&pg_wal, *tli), text.as_bytes())?;
        }
        Ok(missing)
    }

    /// Removes the placeholder history files no real one covers (those of a promotion that
    /// failed; a finished one keeps its placeholders for its standbys to fetch); returns
    /// their timelines.
    pub fn remove_stray_timeline_placeholders(&self) -> Result<Vec<u32>, Error> {
        let pg_wal = self.settings.data_dir.join("pg_wal");
        timeline::remove_stray_placeholders(&pg_wal).map_err(|source| Error::Io {
            action: format!(
                "removing pgquorum's stray placeholder history files from {}",
                pg_wal.display()
            ),
            source,
        })
    }
}
