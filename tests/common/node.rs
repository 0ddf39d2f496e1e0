//! One pgquorum node of a test: its temp dir, config file, ports and `pgquorum run` process.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::ports::free_port;
use super::wait::{eventually, scaled};

/// The binary cargo built for this test or bench.
pub const BIN: &str = env!("CARGO_BIN_EXE_pgquorum");

/// The binary the harness runs: `PGQUORUM_BIN` when set (a bench comparing two builds runs
/// the same harness against each), else [`BIN`].
pub fn bin() -> PathBuf {
    std::env::var_os("PGQUORUM_BIN").map_or_else(|| PathBuf::from(BIN), PathBuf::from)
}

/// How long one CLI call may take: longer than any timeout of the product (a join waits up
/// to 30 s).
pub const CLI_DEADLINE: Duration = Duration::from_secs(60);

/// The psql client: on PATH, or in the newest PostgreSQL bin directory.
pub fn psql() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .map(|d| d.join("psql"))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("psql"))
}

/// Whether PostgreSQL server binaries are installed. Tests that need them skip without
/// them locally and fail when `CI=true` (CI installs them).
pub fn require_postgres() -> bool {
    let found = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.path().join("bin/postgres").exists())
        })
        .unwrap_or(false);
    super::needs(found.then_some(()).ok_or_else(|| {
        "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (install the postgresql \
         package)"
            .to_string()
    }))
}

/// Whether the program `tool` (from Debian's `package`) is installed; see [`super::needs`].
pub fn require_tool(tool: &str, package: &str) -> bool {
    let found = Command::new(tool)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    super::needs(
        found
            .then_some(())
            .ok_or_else(|| format!("{tool} is not installed (apt-get install {package})")),
    )
}

/// Whether `PGQ_TLS=off` asks for members without TLS on the REST API and PostgreSQL (the
/// peer port is always mutual TLS).
pub fn tls_off() -> bool {
    std::env::var("PGQ_TLS").as_deref() == Ok("off")
}

/// How many lines of a node's log a failing test prints.
const LOG_TAIL_LINES: usize = 60;

/// A node: owns its temp dir (config file and state dir) and, while started, its daemon.
pub struct Node {
    pub name: String,
    pub peer_port: u16,
    pub api_port: u16,
    /// Used only when the node runs PostgreSQL (see [`Node::with_postgres`]).
    pub pg_port: u16,
    /// The proxy's writer and reader ports.
    pub writer_port: u16,
    pub reader_port: u16,
    pub config_path: PathBuf,
    /// Inside the temp dir; created by `init` or `node join`, not by the harness.
    pub state_dir: PathBuf,
    pub log_path: PathBuf,
    /// The address the node listens on: 127.0.0.1, or its host's address in a network
    /// namespace.
    pub host_ip: String,
    /// The network namespace the daemon and CLI run in (see `netns::Hosts`), if any.
    pub netns: Option<String>,
    child: Option<Child>,
    starts: u32,
    /// The OS user `pgquorum run` runs as (through `setpriv`, with the unit's ambient
    /// capabilities), as the packaged unit's `User=` does; `None`: the test's own user.
    pub run_as: Option<String>,
    /// With `run_as`: the ambient capabilities in setpriv's form (`+net_admin,...`);
    /// default the packaged unit's.
    pub run_caps: Option<String>,
    dir: TempDir,
}

impl Node {
    /// A node named `name` with fresh ports and a config file; nothing is run yet. Its log
    /// goes to `target/test-logs/<test>/<name>.log`.
    pub fn new(test: &str, name: &str) -> Node {
        Self::new_at(test, name, "127.0.0.1", None)
    }

    /// A node on host `netns` (a network namespace) with address `ip`, on the standard ports.
    pub fn on_host(test: &str, name: &str, netns: &str, ip: &str) -> Node {
        Self::new_at(test, name, ip, Some(netns.to_string()))
    }

    fn new_at(test: &str, name: &str, ip: &str, netns: Option<String>) -> Node {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pgq-{name}-"))
            .tempdir()
            .expect("creating a temp dir");
        // PostgreSQL runs as its own OS user when the tests run as root: it must be able to
        // traverse to the state directory inside.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod of the temp dir");
        let log_dir = log_dir(test);
        std::fs::create_dir_all(&log_dir).expect("creating the log dir");
        let log_path = log_dir.join(format!("{name}.log"));
        File::create(&log_path).expect("creating the node log");
        let (peer_port, api_port, pg_port, writer_port, reader_port) = match netns {
            Some(_) => (7400, 8008, 5432, 5000, 5001),
            None => (
                free_port(),
                free_port(),
                free_port(),
                free_port(),
                free_port(),
            ),
        };
        let node = Node {
            name: name.to_string(),
            peer_port,
            api_port,
            pg_port,
            writer_port,
            reader_port,
            host_ip: ip.to_string(),
            netns,
            config_path: dir.path().join(format!("{name}.toml")),
            state_dir: dir.path().join("state"),
            log_path,
            child: None,
            starts: 0,
            run_as: None,
            run_caps: None,
            dir,
        };
        node.write_config(&node.default_config());
        node
    }

    /// The config the harness writes: name, state dir, its ports (peer, API, proxy), LAN
    /// timings.
    pub fn default_config(&self) -> String {
        // PGQ_TLS=off: the REST API (and, with `with_postgres`, PostgreSQL) without TLS, for
        // benches that compare the two.
        let api_tls = if tls_off() { "tls = false\n" } else { "" };
        format!(
            "[node]\nname = \"{}\"\nstate_dir = \"{}\"\n\n[peer]\nlisten = \"{}\"\n\n[api]\n\
             listen = \"{}\"\n{api_tls}\n[raft]\nprofile = \"lan\"\n\n[proxy]\n\
             writer_listen = \"{ip}:{}\"\nreader_listen = \"{ip}:{}\"\n",
            self.name,
            self.state_dir.display(),
            self.peer_addr(),
            self.api_addr(),
            self.writer_port,
            self.reader_port,
            ip = self.host_ip,
        )
    }

    /// Rewrites the config so this node supervises a PostgreSQL on its own port. On a
    /// network-namespace host PostgreSQL listens on every address of the host (so a VIP the
    /// daemon adds reaches it too) and advertises the host's own address.
    pub fn with_postgres(self) -> Node {
        let listen = match self.netns {
            Some(_) => format!(
                "listen = \"0.0.0.0:{port}\"\nadvertise = \"{}:{port}\"",
                self.host_ip,
                port = self.pg_port
            ),
            None => format!(
                "listen = \"{}:{}\"\nbackrest_port = {}",
                self.host_ip,
                self.pg_port,
                free_port()
            ),
        };
        // PGQ_PG_TLS=off (PostgreSQL only) or PGQ_TLS=off: `[postgresql] tls = false`, for
        // benches that compare the two.
        let tls = if tls_off() || std::env::var("PGQ_PG_TLS").as_deref() == Ok("off") {
            "tls = false\n"
        } else {
            ""
        };
        // PGQ_PG_BIN_DIR: another PostgreSQL's binaries (`[postgresql] bin_dir`), to run the
        // suite on another major.
        let bin_dir = std::env::var("PGQ_PG_BIN_DIR")
            .map(|dir| format!("bin_dir = \"{dir}\"\n"))
            .unwrap_or_default();
        let text = format!(
            "{}\n[postgresql]\n{listen}\n{tls}{bin_dir}",
            self.default_config()
        );
        self.write_config(&text);
        self
    }

    /// Sets `[raft] profile` (`lan`, the harness's default, or `wan`).
    pub fn set_profile(&self, profile: &str) {
        let current = std::fs::read_to_string(&self.config_path).expect("reading the config");
        let text = current.replace("profile = \"lan\"", &format!("profile = \"{profile}\""));
        self.write_config(&text);
    }

    /// Adds `lines` (TOML) to this node's `[raft]` table, after its profile.
    pub fn add_raft_settings(&self, lines: &str) {
        if lines.is_empty() {
            return;
        }
        let current = std::fs::read_to_string(&self.config_path).expect("reading the config");
        let (head, tail) = current
            .split_once("[raft]\n")
            .expect("the harness's config has a [raft] table");
        let (profile, rest) = tail.split_once('\n').unwrap_or((tail, ""));
        self.write_config(&format!("{head}[raft]\n{profile}\n{lines}\n{rest}"));
    }

    /// The admin token `init` or `node join` wrote into the state directory.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("admin.token"))
            .expect("reading admin.token")
            .trim()
            .to_string()
    }

    /// VmRSS of the running daemon, in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// Bytes of all files under `<state_dir>/raft` (the Raft store).
    pub fn raft_dir_bytes(&self) -> u64 {
        fn size(path: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(path) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        size(&self.state_dir.join("raft"))
    }

    /// Appends `text` (TOML) to this node's config file.
    pub fn append_config(&self, text: &str) {
        let mut current = std::fs::read_to_string(&self.config_path).expect("reading the config");
        current.push('\n');
        current.push_str(text);
        self.write_config(&current);
    }

    /// Runs `query` with psql through this node's unix socket as `postgres`; returns the
    /// unaligned, tuples-only output, trimmed.
    pub fn sql(&self, query: &str) -> Result<String, String> {
        self.sql_in("postgres", query)
    }

    /// [`sql`](Self::sql) in database `database`.
    pub fn sql_in(&self, database: &str, query: &str) -> Result<String, String> {
        let output = Command::new(psql())
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .arg("-h")
            .arg(self.state_dir.join("run"))
            .arg("-p")
            .arg(self.pg_port.to_string())
            .arg("-c")
            .arg(query)
            .env("PGCONNECT_TIMEOUT", "2")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(format!(
                "{}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// Where a client reaches this node's PostgreSQL: its unix socket.
    pub fn pg_target(&self) -> super::writer::Target {
        super::writer::Target {
            name: self.name.clone(),
            socket_dir: self.state_dir.join("run"),
            port: self.pg_port,
            via: None,
        }
    }

    /// This node's proxy writer port, reached from inside its own network namespace (so a
    /// cut-off host's port stays reachable), as the password role `app`.
    pub fn writer_target(&self) -> super::writer::Target {
        let netns = self
            .netns
            .clone()
            .expect("a node on a network namespace host");
        super::writer::Target {
            name: format!("{} writer port", self.name),
            socket_dir: PathBuf::new(),
            port: self.writer_port,
            via: Some((netns, self.host_ip.clone())),
        }
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config_path, text).expect("writing the config file");
    }

    /// `<host ip>:<peer port>`, what `node join` takes.
    pub fn peer_addr(&self) -> String {
        format!("{}:{}", self.host_ip, self.peer_port)
    }

    pub fn api_addr(&self) -> String {
        format!("{}:{}", self.host_ip, self.api_port)
    }

    /// `pgquorum`, run inside this node's network namespace if it has one.
    fn command(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(bin());
                command
            }
            None => Command::new(bin()),
        }
    }

    fn api_socket(&self) -> SocketAddr {
        self.api_addr().parse().expect("the API address is ip:port")
    }

    /// `pgquorum <args> -c <config>` for this node, not started, without the environment
    /// that would change what it does (`RUST_LOG`, `PGQUORUM_CONFIG`, a join token): for a
    /// caller that runs it on another thread or many times. [`Node::cli`] runs it once.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = self.command();
        command
            .args(args)
            .arg("-c")
            .arg(&self.config_path)
            .env_remove("RUST_LOG")
            .env_remove("PGQUORUM_CONFIG")
            .env_remove("PGQUORUM_JOIN_TOKEN")
            .stdin(Stdio::null());
        command
    }

    /// Runs `pgquorum <args> -c <config>` to completion (killed and a panic after
    /// [`CLI_DEADLINE`]). The call and its output are appended to this node's log.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_env(&[], args)
    }

    /// [`Node::cli`] with extra environment variables.
    pub fn cli_with_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        let out_path = self.dir.path().join(format!("cli-{call}.out"));
        let err_path = self.dir.path().join(format!("cli-{call}.err"));
        let mut child = self
            .cli_command(args)
            .envs(env.iter().copied())
            .stdout(File::create(&out_path).expect("creating the stdout file"))
            .stderr(File::create(&err_path).expect("creating the stderr file"))
            .spawn()
            .expect("running pgquorum");
        let (status, timed_out) = wait_with_deadline(&mut child, scaled(CLI_DEADLINE));
        let output = Output {
            status,
            stdout: std::fs::read(&out_path).unwrap_or_default(),
            stderr: std::fs::read(&err_path).unwrap_or_default(),
        };
        let _ = std::fs::remove_file(out_path);
        let _ = std::fs::remove_file(err_path);
        self.note(&format!(
            "$ pgquorum {} -> {}\n{}{}",
            args.join(" "),
            output.status,
            output.stdout_text(),
            output.stderr_text()
        ));
        assert!(
            !timed_out,
            "`pgquorum {}` on {} did not exit within {CLI_DEADLINE:?}; killed it",
            args.join(" "),
            self.name
        );
        output
    }

    /// `pgquorum init` with `extra` arguments; returns the join token it printed.
    pub fn init(&self, extra: &[&str]) -> String {
        let mut args = vec!["init"];
        args.extend_from_slice(extra);
        let output = self.cli(&args);
        assert_success(&output, &format!("init of {}", self.name));
        output
            .stdout_text()
            .lines()
            .find(|l| l.starts_with("pgq1."))
            .unwrap_or_else(|| panic!("init printed no token: {}", output.stdout_text()))
            .to_string()
    }

    /// `pgquorum node join <peer> --token <token>`.
    pub fn join(&self, peer: &str, token: &str) -> Output {
        self.cli(&["node", "join", peer, "--token", token])
    }

    /// Starts `pgquorum run` in its own process group and waits until its API answers
    /// `/liveness`. Panics if the daemon exits first.
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// [`Node::start`] with extra environment variables for the daemon.
    pub fn start_with_env(&mut self, env: &[(&str, &std::ffi::OsStr)]) {
        self.spawn_with_env(env);
        let what = format!("{} answers /liveness", self.name);
        eventually(Duration::from_secs(10), &what, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("{} exited during start with {status}", self.name);
            }
            match self.get("/liveness") {
                Ok((200, _)) => Ok(()),
                other => Err(other),
            }
        });
    }

    /// Starts `pgquorum run` in its own process group and returns at once (a bench that
    /// times the start waits for what it measures itself).
    pub fn spawn(&mut self) {
        self.spawn_with_env(&[]);
    }

    fn spawn_with_env(&mut self, env: &[(&str, &std::ffi::OsStr)]) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        self.note(&format!("=== harness: start #{} ===", self.starts));
        let log = OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .expect("opening the node log");
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = Command::new("setpriv");
                // As the packaged unit runs it: that user, with the unit's
                // AmbientCapabilities= (or `run_caps`) as ambient capabilities.
                let caps = self
                    .run_caps
                    .clone()
                    .unwrap_or_else(super::os::unit_capabilities_for_setpriv);
                command.args(["--reuid", user, "--regid", user, "--init-groups"]);
                command.args(["--inh-caps", &caps]);
                command.args(["--ambient-caps", &caps]).arg(bin());
                command
            }
            None => self.command(),
        };
        let child = command
            .arg("run")
            .arg("-c")
            .arg(&self.config_path)
            .env_remove("PGQUORUM_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("spawning pgquorum run");
        self.child = Some(child);
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL to the daemon's process group; waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.note("=== harness: SIGKILL ===");
            signal_group(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Host loss: SIGKILL to the daemon's process group and to its postmaster's (the daemon
    /// starts PostgreSQL in a process group of its own) at once; waits until both are gone.
    pub fn kill_host(&mut self) {
        let postmaster = self.live_postmaster();
        let mut child = self
            .child
            .take()
            .expect("kill_host: the node is not running");
        self.note("=== harness: SIGKILL of the daemon's and the postmaster's process groups ===");
        signal_group(&child, libc::SIGKILL);
        if let Some(pid) = postmaster {
            // SAFETY: kill(2) has no memory-safety preconditions; `pid` was a live postgres
            // process just above (see `live_postmaster`).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = child.wait();
        if let Some(pid) = postmaster {
            let what = format!("{}'s killed postmaster to be gone", self.name);
            eventually(Duration::from_secs(60), &what, || {
                (!process_alive(pid)).then_some(())
            });
        }
    }

    /// [`Node::postmaster_pid`] if it names a live `postgres` process (not a reused pid).
    pub fn live_postmaster(&self) -> Option<i32> {
        let pid = self.postmaster_pid()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "postgres" && process_alive(pid)).then_some(pid)
    }

    /// The node's temp dir (config, state dir); removed when the node is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until the daemon exits by itself (a crash point, a fatal error) and returns its
    /// exit status.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let child = self
            .child
            .as_mut()
            .expect("wait_exit: the node is not running");
        let what = format!("{} exits by itself", self.name);
        let status = eventually(deadline, &what, || child.try_wait().ok().flatten());
        self.child = None;
        self.note(&format!("=== harness: exited by itself with {status} ==="));
        status
    }

    /// Sets the debug-build crash point `name` (see `pgquorum::failpoint`), or clears it.
    pub fn set_failpoint(&self, name: &str, on: bool) {
        let dir = self.state_dir.join("failpoints");
        let path = dir.join(name);
        if on {
            std::fs::create_dir_all(&dir).expect("creating the failpoint dir");
            File::create(&path).expect("creating the failpoint file");
        } else if path.exists() {
            std::fs::remove_file(&path).expect("removing the failpoint file");
        }
    }

    /// SIGTERM to the daemon (a graceful stop); waits for it to exit and returns its status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("terminate: the node is not running");
        self.note("=== harness: SIGTERM ===");
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own child, which
        // has not been reaped yet, so the pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let what = format!("{} exits after SIGTERM", self.name);
        let status = eventually(Duration::from_secs(20), &what, || {
            child.try_wait().ok().flatten()
        });
        self.note(&format!("=== harness: exited with {status} ==="));
        status
    }

    /// `pgquorum list --json`, parsed; panics if the command fails.
    pub fn list(&self) -> Value {
        let output = self.cli(&["list", "--json"]);
        assert_success(&output, &format!("list on {}", self.name));
        serde_json::from_slice(&output.stdout).expect("list --json prints JSON")
    }

    /// `GET /cluster` on this node's API, parsed (cheaper than `list` for polling).
    pub fn cluster_view(&self) -> Result<Value, String> {
        match self.get("/cluster") {
            Ok((200, body)) => serde_json::from_str(&body).map_err(|e| format!("{e}: {body}")),
            Ok((status, body)) => Err(format!("GET /cluster: {status} {body}")),
            Err(e) => Err(format!("GET /cluster on {}: {e}", self.name)),
        }
    }

    /// An HTTP/1.1 GET to this node's API (HTTPS unless it has `[api] tls = false`):
    /// (status, body).
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        self.request("GET", path)
    }

    /// An HTTP/1.1 request with `method` (`HEAD`, `OPTIONS`, ...) to this node's API:
    /// (status, body).
    pub fn request(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        super::http::request(self.api_socket(), self.api_tls()?, method, path)
    }

    /// Sends `bytes` as they are to this node's API (inside TLS unless `[api] tls = false`)
    /// and returns what came back until it closed.
    pub fn api_exchange(&self, bytes: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
        super::http::exchange(self.api_socket(), self.api_tls()?, bytes, timeout)
    }

    /// How the harness speaks to this node's API (see [`super::http::api_tls`]).
    pub fn api_tls(&self) -> std::io::Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
        super::http::api_tls(&self.config_path, &self.state_dir)
    }

    /// The pid of this node's postmaster, from the first line of `postmaster.pid` in the
    /// default data directory (`<state_dir>/pgdata`); `None` if PostgreSQL is not running.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.state_dir.join("pgdata/postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Everything this node's daemon (and the harness) wrote to its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).expect("reading the node log")
    }

    /// Appends a harness line to this node's log, between the daemon's lines.
    pub fn note(&self, text: &str) {
        if let Ok(mut log) = OpenOptions::new().append(true).open(&self.log_path) {
            let _ = writeln!(log, "{}", text.trim_end());
        }
    }

    fn print_log_tail(&self) {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        eprintln!(
            "----- last {} lines of {} ({}) -----\n{}\n----- end of {} -----",
            tail.len(),
            self.name,
            self.log_path.display(),
            tail.join("\n"),
            self.name
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_group(&child, libc::SIGKILL);
            let _ = child.wait();
        }
        if std::thread::panicking() {
            self.print_log_tail();
            // PostgreSQL's own log, when this node supervised one.
            let pg_log = self.state_dir.join("postgresql.log");
            if let Ok(text) = std::fs::read_to_string(&pg_log) {
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(30)..];
                eprintln!(
                    "---- {} postgresql.log (last {} lines) ----",
                    self.name,
                    tail.len()
                );
                for line in tail {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Waits for `child`, killing it after `deadline`: (its status, whether it was killed).
fn wait_with_deadline(child: &mut Child, deadline: Duration) -> (ExitStatus, bool) {
    let pid = child.id() as libc::pid_t;
    let (done, watchdog) = mpsc::channel::<()>();
    let killer = std::thread::spawn(move || match watchdog.recv_timeout(deadline) {
        Err(RecvTimeoutError::Timeout) => {
            // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped
            // until `wait` below returns, and `done` is sent right after that.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            true
        }
        _ => false,
    });
    let status = child.wait().expect("waiting for pgquorum");
    let _ = done.send(());
    (status, killer.join().unwrap_or(false))
}

/// Whether `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn signal_group(child: &Child, signal: libc::c_int) {
    // The child was spawned with process_group(0), so its pid is its process group id.
    let pgid = child.id() as libc::pid_t;
    // SAFETY: kill(2) has no memory-safety preconditions; the group is our unreaped child's.
    unsafe { libc::kill(-pgid, signal) };
}

/// `target/test-logs/<test>`; `target` is found from `CARGO_TARGET_TMPDIR` (`target/tmp`).
fn log_dir(test: &str) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .to_path_buf();
    target.join("test-logs").join(test)
}

/// The name of the running test, `<test file>::<test fn>`, from the test thread's name.
pub fn test_name() -> String {
    let krate = module_path!().split("::").next().unwrap_or("tests");
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(name) if name != "main" => name.replace("::", "."),
        _ => "unnamed".to_string(),
    };
    format!("{krate}.{test}")
}

/// Text accessors for a finished CLI call.
pub trait OutputExt {
    /// The exit code (-1 if killed by a signal).
    fn code(&self) -> i32;
    fn stdout_text(&self) -> String;
    fn stderr_text(&self) -> String;
}

impl OutputExt for Output {
    fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Panics with the command's output unless it exited 0.
pub fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed with {}:\nstdout: {}\nstderr: {}",
        output.status,
        output.stdout_text(),
        output.stderr_text()
    );
}

/// Asserts the command failed with `code` and one stderr line `pgquorum: ...` containing
/// `needle`; returns that line.
pub fn assert_error(output: &Output, code: i32, needle: &str) -> String {
    let stderr = output.stderr_text();
    assert_eq!(
        output.code(),
        code,
        "exit code; stdout: {} stderr: {stderr}",
        output.stdout_text()
    );
    let line = stderr.trim_end();
    assert!(
        !line.contains('\n'),
        "the error should be one line: {stderr:?}"
    );
    let message = line
        .strip_prefix("pgquorum: ")
        .unwrap_or_else(|| panic!("the error should start with `pgquorum: `: {line:?}"));
    assert!(
        message.contains(needle),
        "the error should mention {needle:?}: {line:?}"
    );
    line.to_string()
}
