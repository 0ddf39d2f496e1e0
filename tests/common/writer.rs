//! A client that commits numbered rows, one at a time, to whichever of several PostgreSQL
//! servers accepts them, and records each commit it saw acknowledged (psql exited 0 after
//! the server's `COMMIT` answer). A commit that does not answer within [`COMMIT_DEADLINE`]
//! is abandoned (psql killed): never acknowledged.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::node::psql;

/// How long one commit may wait for its answer before the client gives up on it.
pub const COMMIT_DEADLINE: Duration = Duration::from_secs(5);

/// One server: its unix socket directory and port, or (`via` set) a TCP address reached
/// from inside a network namespace as the password role `app`/`app`.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub socket_dir: PathBuf,
    pub port: u16,
    /// `(network namespace, host)`: connect over TCP from inside that namespace instead.
    pub via: Option<(String, String)>,
}

/// An acknowledged commit: the value, the server that acknowledged it, and when.
#[derive(Clone, Debug)]
pub struct Ack {
    pub value: i64,
    pub by: String,
    pub at: Instant,
}

pub struct Writer {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts committing `insert into <table> values (<n>)` for n = 1, 2, ... to the first
    /// target that accepts, trying the one that accepted last first; `pause` between commits.
    pub fn start(table: &str, targets: Vec<Target>, pause: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let table = table.to_string();
        let thread = {
            let (stop, acks) = (stop.clone(), acks.clone());
            std::thread::spawn(move || {
                let mut next = 1i64;
                let mut first = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let order = (0..targets.len()).map(|k| (first + k) % targets.len());
                    for i in order {
                        let sql = format!("insert into {table} values ({next})");
                        if commit(&targets[i], &sql) {
                            let ack = Ack {
                                value: next,
                                by: targets[i].name.clone(),
                                at: Instant::now(),
                            };
                            acks.lock().unwrap().push(ack);
                            first = i;
                            break;
                        }
                    }
                    next += 1;
                    std::thread::park_timeout(pause);
                }
            })
        };
        Writer {
            stop,
            acks,
            thread: Some(thread),
        }
    }

    /// The commits acknowledged so far.
    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    /// Stops the client and returns every acknowledged commit.
    pub fn stop(mut self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
        self.acks()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs one statement with psql; true only if the server acknowledged it in time.
fn commit(target: &Target, sql: &str) -> bool {
    let mut command = match &target.via {
        Some((netns, _)) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns]).arg(psql());
            command
        }
        None => Command::new(psql()),
    };
    let host = match &target.via {
        Some((_, host)) => std::ffi::OsString::from(host),
        None => target.socket_dir.clone().into_os_string(),
    };
    let user = if target.via.is_some() {
        "app"
    } else {
        "postgres"
    };
    let child = command
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", user, "-d"])
        .arg("postgres")
        .arg("-h")
        .arg(host)
        .arg("-p")
        .arg(target.port.to_string())
        .arg("-c")
        .arg(sql)
        .env("PGCONNECT_TIMEOUT", "2")
        .env("PGPASSWORD", "app")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if started.elapsed() < COMMIT_DEADLINE => {
                std::thread::park_timeout(Duration::from_millis(2));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// The values in `acks` that are missing from `rows`.
pub fn lost(acks: &[Ack], rows: &[i64]) -> Vec<i64> {
    let present: std::collections::BTreeSet<i64> = rows.iter().copied().collect();
    acks.iter()
        .map(|a| a.value)
        .filter(|v| !present.contains(v))
        .collect()
}
