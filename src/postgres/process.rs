//! The postmaster as a child process, and running PostgreSQL programs as the OS user.
//!
//! The postmaster is forked by one dedicated, long-lived thread (the [`Spawner`]) with
//! `PR_SET_PDEATHSIG` = SIGQUIT: the kernel delivers that signal when the *thread* that
//! forked the child exits, so forking from a tokio blocking thread (which exits when idle)
//! would shut PostgreSQL down at random. The spawner thread lives as long as [`Postgres`];
//! when the daemon dies, or drops its `Postgres`, the postmaster does an immediate shutdown.
//!
//! A postmaster that was already running when this `Postgres` was created (found through
//! `postmaster.pid` with a live `postgres` process behind it) is *adopted*: [`Postgres::start`]
//! returns once it accepts connections and [`Postgres::stop`] signals it by pid. Because of the
//! death signal, a postmaster left by an earlier daemon run is rare (it needs a daemon that
//! died between fork and exec); adoption mostly covers one started by hand (`pg_ctl`) or by a
//! distribution's service.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{io_error, ConfigChange, Error, Postgres, StopMode};

/// How often start and stop look at the postmaster.
const POLL: Duration = Duration::from_millis(50);
/// How often a stopping postmaster is checked on: its shutting-down status is what lets
/// the fence stand down (see [`Postgres::stop_then`]).
const STOP_POLL: Duration = Duration::from_millis(10);

/// How much of the server log an error quotes.
pub(super) const LOG_TAIL_LINES: usize = 15;

pub use sys::{effective_ids, is_root, raise_open_files_limit};

/// The capabilities a daemon that is not root needs to run PostgreSQL as another OS user:
/// switch to it (SETUID, SETGID), hand it the files it reads (CHOWN, FOWNER), read and write
/// its data and socket directories (DAC_OVERRIDE) and signal its postmaster (KILL).
pub const SWITCH_CAPABILITIES: [(u32, &str); 6] = [
    (sys::CAP_SETUID, "CAP_SETUID"),
    (sys::CAP_SETGID, "CAP_SETGID"),
    (sys::CAP_CHOWN, "CAP_CHOWN"),
    (sys::CAP_FOWNER, "CAP_FOWNER"),
    (sys::CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE"),
    (sys::CAP_KILL, "CAP_KILL"),
];

/// What a hook must not inherit from the daemon's ambient set: [`SWITCH_CAPABILITIES`].
const HOOK_DROPPED_CAPABILITIES: [u32; SWITCH_CAPABILITIES.len()] = {
    let mut caps = [0; SWITCH_CAPABILITIES.len()];
    let mut i = 0;
    while i < caps.len() {
        caps[i] = SWITCH_CAPABILITIES[i].0;
        i += 1;
    }
    caps
};

/// Whether the daemon may run PostgreSQL as another OS user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privilege {
    /// Effective uid 0.
    Root,
    /// Its own user with every one of [`SWITCH_CAPABILITIES`] (the packaged unit).
    Capabilities,
    /// Neither root nor CAP_SETUID: PostgreSQL runs as the daemon's user.
    Unprivileged,
    /// CAP_SETUID without the rest: a misconfiguration, refused.
    Partial { missing: Vec<&'static str> },
}

/// The daemon's [`Privilege`], from its effective uid and capability set.
pub fn privilege() -> Privilege {
    if is_root() {
        return Privilege::Root;
    }
    privilege_from(sys::effective_capabilities())
}

/// [`privilege`] for a process that is not root and has effective capabilities `effective`.
pub fn privilege_from(effective: u64) -> Privilege {
    let has = |cap: u32| effective & (1 << cap) != 0;
    if !has(sys::CAP_SETUID) {
        return Privilege::Unprivileged;
    }
    let missing: Vec<&'static str> = SWITCH_CAPABILITIES
        .iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Privilege::Capabilities
    } else {
        Privilege::Partial { missing }
    }
}

/// Makes `cmd` (a hook) run without the daemon's power over other users' files and
/// processes; it keeps the rest of the daemon's ambient capabilities.
pub fn drop_switch_capabilities(cmd: &mut tokio::process::Command) {
    sys::lower_ambient(cmd, &HOOK_DROPPED_CAPABILITIES);
}

/// The OS account PostgreSQL runs as when the daemon may switch users.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl Account {
    /// Looks `name` up in the user database (getpwnam_r).
    pub fn lookup(name: &str) -> Result<Account, Error> {
        sys::lookup_user(name)
            .map_err(io_error(format!("looking up OS user {name:?}")))?
            .ok_or_else(|| Error::UnknownUser {
                user: name.to_string(),
            })
    }

    /// Checks that every existing ancestor directory of `path` can be entered by this
    /// account (owner, primary group or other execute bit; supplementary groups are dropped
    /// when we switch user, so they do not count). Missing directories are created later
    /// by us with mode 0755 or owned by the account.
    pub fn check_reachable(&self, path: &Path) -> Result<(), Error> {
        use std::os::unix::fs::MetadataExt;
        for dir in path
            .ancestors()
            .skip(1)
            .filter(|d| !d.as_os_str().is_empty())
        {
            let Ok(meta) = fs::metadata(dir) else {
                continue;
            };
            let mode = meta.mode();
            let searchable = if meta.uid() == self.uid {
                mode & 0o100 != 0
            } else if meta.gid() == self.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !searchable {
                return Err(Error::NotReachable {
                    path: path.to_path_buf(),
                    user: self.name.clone(),
                    blocked: dir.to_path_buf(),
                });
            }
        }
        Ok(())
    }
}

/// The postmaster we spawned, and how the last one ended.
#[derive(Default)]
pub struct Postmaster {
    child: Option<Child>,
    last_exit: Option<std::process::ExitStatus>,
}

/// A request to the spawner thread: fork this command, send back the child.
type SpawnRequest = (Command, oneshot::Sender<io::Result<Child>>);

/// The thread that forks the postmaster (see the module doc). It ends when the `Spawner`
/// is dropped, which fires the postmaster's death signal.
pub struct Spawner {
    requests: mpsc::Sender<SpawnRequest>,
}

impl Spawner {
    pub fn start() -> Result<Spawner, Error> {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("pg-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .map_err(io_error("starting the postmaster spawner thread"))?;
        Ok(Spawner { requests })
    }

    async fn spawn(&self, command: Command) -> io::Result<Child> {
        let (reply, answer) = oneshot::channel();
        let gone = || io::Error::other("the postmaster spawner thread has stopped");
        self.requests.send((command, reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

impl Postgres {
    /// A command for PostgreSQL program `program` (a name in the bin dir): as the OS user
    /// when the daemon may switch to it, with no supplementary group or capability of the
    /// daemon's, in `/`, with the PG* variables that could redirect it removed, `LC_ALL`
    /// set, and `HOME` set to the OS user's home.
    pub(super) fn command(&self, program: &str) -> Command {
        self.command_at(&self.bin.tool(program))
    }

    /// [`command`](Self::command) for the executable at `path`.
    pub(super) fn command_at(&self, path: &Path) -> Command {
        let mut cmd = Command::new(path);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(&key);
            }
        }
        sys::drop_privileges(&mut cmd, self.account.is_some());
        cmd.env_remove(crate::systemd::NOTIFY_SOCKET)
            .env("LC_ALL", self.locale)
            .current_dir("/")
            .stdin(Stdio::null());
        if let Some(account) = &self.account {
            // std drops supplementary groups (setgroups(0)) when uid is set as root.
            cmd.uid(account.uid)
                .gid(account.gid)
                .env("HOME", &account.home);
        }
        cmd
    }

    /// Runs `program args..` to completion (killed if the future is dropped). Returns its
    /// stdout; a non-zero exit is [`Error::CommandFailed`] with the tail of its output.
    /// `env` adds variables; never pass secrets in `args`.
    pub(super) async fn run(
        &self,
        program: &str,
        args: &[&OsStr],
        env: &[(&str, &OsStr)],
    ) -> Result<String, Error> {
        let (rendered, output) = self.run_unchecked(program, args, env).await?;
        checked(rendered, output)
    }

    /// [`run`](Self::run) without judging the exit status: the rendered command line (for
    /// messages) and everything the program returned.
    pub(super) async fn run_unchecked(
        &self,
        program: &str,
        args: &[&OsStr],
        env: &[(&str, &OsStr)],
    ) -> Result<(String, std::process::Output), Error> {
        let mut cmd = self.command(program);
        cmd.args(args).envs(env.iter().copied());
        let rendered = render_command(program, args);
        let output = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(io_error(format!("running {rendered}")))?;
        Ok((rendered, output))
    }

    /// Whether the postmaster is alive: our child has not exited, or `postmaster.pid` names
    /// a live `postgres` process. Reaps our child if it has exited.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// The pid of the live postmaster, ours or adopted.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let mut pm = self.postmaster.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(child) = pm.child.as_mut() {
            match child.try_wait() {
                Ok(None) => return Some(child.id()),
                Ok(Some(status)) => {
                    tracing::info!(%status, "postmaster exited");
                    pm.child = None;
                    pm.last_exit = Some(status);
                }
                Err(e) => tracing::warn!(error = %e, "checking on the postmaster"),
            }
        }
        drop(pm);
        let text = fs::read_to_string(self.settings.data_dir.join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        sys::is_live_postgres(pid).then_some(pid)
    }

    /// Starts the postmaster (`postgres -D data_dir`, as the OS user, output appended to
    /// `log_file`, in its own process group so a terminal's Ctrl-C reaches only the daemon)
    /// and waits until it accepts connections, polling every 50 ms. An already running
    /// postmaster for this data directory is adopted instead of starting a second one.
    ///
    /// Errors: no data directory; the postmaster exits meanwhile ([`Error::StartFailed`]
    /// with the log tail); or `timeout` passes ([`Error::StartTimedOut`] — it is left
    /// running, e.g. still in crash recovery; [`stop`](Self::stop) it if unwanted).
    pub async fn start(&self, timeout: Duration) -> Result<(), Error> {
        self.start_keeping(timeout, false).await
    }

    /// [`start`](Self::start), keeping the placeholder history files with `placeholders`.
    pub(super) async fn start_keeping(
        &self,
        timeout: Duration,
        placeholders: bool,
    ) -> Result<(), Error> {
        let _serial = self.lifecycle.lock().await;
        let deadline = Instant::now() + timeout;
        let data_dir = &self.settings.data_dir;
        if let Some(pid) = self.postmaster_pid() {
            let ours = self
                .postmaster
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .child
                .is_some();
            if !ours {
                tracing::info!(pid, data_dir = %data_dir.display(), "adopting a running postmaster");
            }
        } else {
            if !data_dir.join("PG_VERSION").is_file() {
                return Err(Error::NoDataDir {
                    action: "starting postgres",
                    data_dir: data_dir.clone(),
                });
            }
            // Left by a promotion that never finished (or a fetch cut short): a standby
            // whose recovery target were a placeholder would refuse to start.
            let removed = if placeholders {
                Vec::new()
            } else {
                self.remove_stray_timeline_placeholders()?
            };
            if !removed.is_empty() {
                tracing::info!(timelines = ?removed, "removed stray placeholder history files");
            }
            self.create_dir(&self.settings.socket_dir, Some(0o700))?;
            let log = self.open_log()?;
            let mut cmd = self.command("postgres");
            cmd.arg("-D").arg(data_dir).process_group(0);
            cmd.stdout(
                log.try_clone()
                    .map_err(io_error("duplicating the log file handle"))?,
            );
            cmd.stderr(log);
            sys::die_with_parent(&mut cmd);
            let child = self.spawner.spawn(cmd).await.map_err(io_error(format!(
                "starting {} -D {}",
                self.bin.tool("postgres").display(),
                data_dir.display()
            )))?;
            tracing::info!(pid = child.id(), data_dir = %data_dir.display(), "started postgres");
            let mut pm = self.postmaster.lock().unwrap_or_else(|e| e.into_inner());
            pm.child = Some(child);
            pm.last_exit = None;
        }
        loop {
            if self.connect().await.is_ok() {
                return Ok(());
            }
            if !self.is_running() {
                return Err(Error::StartFailed {
                    data_dir: data_dir.clone(),
                    status: self.last_exit(),
                    log_tail: self.log_tail(),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::StartTimedOut {
                    data_dir: data_dir.clone(),
                    waited: timeout,
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Makes a running postmaster re-read its configuration and TLS files (SIGHUP, as
    /// `pg_reload_conf()` does, but also while it is starting up and accepts no
    /// connections); nothing when none runs, as the next start reads them.
    pub fn reload_files(&self) -> Result<(), Error> {
        match self.postmaster_pid() {
            Some(pid) => signal_postmaster(pid, sys::SIGHUP),
            None => Ok(()),
        }
    }

    /// [`start`](Self::start) with the configuration [`write_config`](Self::write_config)
    /// just wrote, which returned `change`. A postmaster already running for this data
    /// directory (one whose start timed out, such as a standby that cannot become consistent
    /// without an upstream to stream from) still has the configuration it was started with,
    /// and adopting it as it is would keep that: a reload is sent as SIGHUP, since it may not
    /// accept connections for `pg_reload_conf()`, and a restart stops it first.
    pub async fn start_with(&self, change: ConfigChange, timeout: Duration) -> Result<(), Error> {
        if let Some(pid) = self.postmaster_pid() {
            match change {
                ConfigChange::Unchanged => {}
                ConfigChange::Reload => {
                    tracing::info!(
                        pid,
                        "configuration changed: reloading the running postmaster (SIGHUP)"
                    );
                    signal_postmaster(pid, sys::SIGHUP)?;
                }
                ConfigChange::Restart => self.stop(StopMode::Fast, timeout).await?,
            }
        }
        self.start(timeout).await
    }

    /// Stops the postmaster (ours or adopted): SIGINT for [`StopMode::Fast`], SIGQUIT for
    /// [`StopMode::Immediate`], then waits until it has exited. A fast stop still running
    /// after `timeout` is escalated to immediate, which gets another `timeout`. Not running
    /// is success. Cancelling it only stops the waiting; a signal already sent stays sent.
    pub async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<(), Error> {
        self.stop_then(mode, timeout, |_| {}).await
    }

    /// [`stop`](Self::stop), calling `shutting_down(pid)` as soon as the postmaster says in
    /// `postmaster.pid` that it is shutting down (or has exited): from then on it has told
    /// every client backend to exit and refuses new connections, so it commits nothing
    /// more for clients while its shutdown checkpoint and the rest of its WAL to connected
    /// standbys finish. Not called if it never says so within `timeout`.
    pub async fn stop_then(
        &self,
        mode: StopMode,
        timeout: Duration,
        shutting_down: impl FnOnce(u32),
    ) -> Result<(), Error> {
        let _serial = self.lifecycle.lock().await;
        let Some(pid) = self.postmaster_pid() else {
            return Ok(());
        };
        let mut shutting_down = Some(shutting_down);
        let mut signal = match mode {
            StopMode::Fast => sys::SIGINT,
            StopMode::Immediate => sys::SIGQUIT,
        };
        loop {
            let name = if signal == sys::SIGINT {
                "SIGINT"
            } else {
                "SIGQUIT"
            };
            tracing::info!(pid, signal = name, "stopping postgres");
            signal_postmaster(pid, signal)?;
            let deadline = Instant::now() + timeout;
            while self.postmaster_pid() == Some(pid) {
                if self.postmaster_says_stopping() {
                    if let Some(tell) = shutting_down.take() {
                        tell(pid);
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(STOP_POLL).await;
            }
            if let Some(tell) = shutting_down
                .take()
                .filter(|_| self.postmaster_pid() != Some(pid))
            {
                tell(pid);
            }
            if self.postmaster_pid() != Some(pid) {
                tracing::info!(pid, "postgres stopped");
                return Ok(());
            }
            if signal == sys::SIGQUIT {
                return Err(Error::StopTimedOut {
                    pid,
                    data_dir: self.settings.data_dir.clone(),
                    waited: timeout,
                });
            }
            tracing::warn!(
                pid,
                ?timeout,
                "fast shutdown too slow; escalating to immediate"
            );
            signal = sys::SIGQUIT;
        }
    }

    /// Whether `postmaster.pid` gives the postmaster's status as `stopping` (line 8, which
    /// PostgreSQL 10 and later write when a shutdown request arrives).
    fn postmaster_says_stopping(&self) -> bool {
        fs::read_to_string(self.settings.data_dir.join("postmaster.pid"))
            .is_ok_and(|text| text.lines().nth(7).map(str::trim) == Some("stopping"))
    }

    /// How our last postmaster ended, for messages.
    pub(super) fn last_exit(&self) -> String {
        let pm = self.postmaster.lock().unwrap_or_else(|e| e.into_inner());
        pm.last_exit
            .map_or_else(|| "exit status unknown".into(), |s| s.to_string())
    }

    /// Opens `log_file` for appending (created mode 0640, owned by the OS user).
    fn open_log(&self) -> Result<fs::File, Error> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = &self.settings.log_file;
        if let Some(parent) = path.parent() {
            self.create_dir(parent, None)?;
        }
        let file = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        self.chown(path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        Ok(file)
    }

    /// The last lines of `log_file`, for error messages.
    pub(super) fn log_tail(&self) -> String {
        match fs::read(&self.settings.log_file) {
            Ok(bytes) => {
                let start = bytes.len().saturating_sub(8192);
                tail(&String::from_utf8_lossy(&bytes[start..]), LOG_TAIL_LINES)
            }
            Err(e) => format!("(cannot read {}: {e})", self.settings.log_file.display()),
        }
    }
}

/// A program's stderr followed by its stdout, as text.
/// The stdout of a program that exited with 0; else [`Error::CommandFailed`] with the tail
/// of its output, naming it as `rendered`.
pub(super) fn checked(rendered: String, output: std::process::Output) -> Result<String, Error> {
    if !output.status.success() {
        return Err(Error::CommandFailed {
            command: rendered,
            status: output.status.to_string(),
            output: tail(&combined(&output), LOG_TAIL_LINES),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub(super) fn combined(output: &std::process::Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    text
}

/// The last `n` lines of `text`.
pub(super) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `program arg arg` for messages (arguments never hold secrets).
fn render_command(program: &str, args: &[&OsStr]) -> String {
    let mut out = OsString::from(program);
    for arg in args {
        out.push(" ");
        out.push(arg);
    }
    out.to_string_lossy().into_owned()
}

/// SIGKILL to every process of group `pgid` (a child started with `process_group(0)`):
/// what it started dies with it. Best effort.
pub fn kill_group(pgid: u32) {
    if let Err(e) = sys::signal_group(pgid, libc::SIGKILL) {
        tracing::debug!(pgid, error = %e, "killing a process group");
    }
}

/// Whether `pid` is a live (not zombie) `postgres` process (see `sys::is_live_postgres`);
/// for the fence, which kills a postmaster only if its pid still names one.
pub(crate) fn is_live_postgres(pid: u32) -> bool {
    sys::is_live_postgres(pid)
}

/// SIGKILL to process group `pgid` (> 1), with the error: the fence reports it.
pub(crate) fn kill_group_checked(pgid: u32) -> io::Result<()> {
    sys::signal_group(pgid, libc::SIGKILL)
}

/// Sends `signal` to postmaster `pid`; one that has just exited (ESRCH) is no error.
fn signal_postmaster(pid: u32, signal: libc::c_int) -> Result<(), Error> {
    match sys::signal(pid, signal) {
        Err(e) if e.raw_os_error() != Some(libc::ESRCH) => Err(Error::Io {
            action: format!("signalling postmaster {pid}"),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The few libc calls std does not wrap.
pub(super) mod sys;
pub(super) use sys::filesystem_bytes;
