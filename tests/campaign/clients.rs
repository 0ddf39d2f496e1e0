//! The campaign's observers: clients that write unique values through every path a real
//! application uses, and samplers that probe, on every host, whether its PostgreSQL accepts
//! writes. Both append what they see to the [`Recorder`], which keeps the history in memory
//! and on disk as it happens (a campaign that crashes still leaves a readable file).
//!
//! Owns the write protocol (one autocommit `INSERT` of a fresh value, its outcome classified
//! from what the client saw) and the sampling rule of `checker.rs`; knows nothing of faults.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use super::history::{Clock, History, Outcome, Record, Sample, Write};

/// How long a client waits for a connection before it tries again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client waits for the answer to its `INSERT` before it files the write as
/// unknown and drops the connection (a primary cut off from its standbys holds commits).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between a client's writes after an acknowledgement (the "light load").
const WRITE_PAUSE: Duration = Duration::from_millis(50);
/// Pause after a failure (no connection, a read-only member), so a dead path does not spin.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How often each sampler probes its member: the resolution of the dual-primary check.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// A probe without an answer by then counts as "not accepting writes"; below
/// [`SAMPLE_EVERY`], as the checker's rule requires.
const PROBE_TIMEOUT: Duration = Duration::from_millis(90);

/// The table every client writes to and the final read reads.
pub const TABLE: &str = "campaign";
/// The password role the clients use over TCP (the samplers use `postgres` on the socket).
pub const ROLE: &str = "app";

/// The history as it grows: in memory for the checker, and appended line by line to a file.
pub struct Recorder {
    inner: Mutex<(History, BufWriter<File>)>,
    clock: Clock,
}

impl Recorder {
    /// A recorder writing to `path` (created or truncated), timing with `clock`.
    pub fn create(path: &Path, clock: Clock) -> std::io::Result<Arc<Recorder>> {
        let file = BufWriter::new(File::create(path)?);
        Ok(Arc::new(Recorder {
            inner: Mutex::new((History::default(), file)),
            clock,
        }))
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Appends `record` to the history and its file.
    pub fn record(&self, record: Record) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        // A full disk must not stop the campaign: the in-memory history is what is judged.
        let _ = writeln!(inner.1, "{}", record.to_line());
        inner.0.push(record);
    }

    /// Flushes the file and returns a copy of the history so far.
    pub fn snapshot(&self) -> History {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = inner.1.flush();
        inner.0.clone()
    }
}

/// One way a client reaches a server over TCP: a member's writer port, the VIP, or a
/// member's PostgreSQL directly.
#[derive(Clone, Debug)]
pub struct WritePath {
    /// What the history calls it, e.g. `writer port of n2`.
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// A member's PostgreSQL as a sampler reaches it: its unix socket, which no network fault
/// hides.
#[derive(Clone, Debug)]
pub struct SamplePoint {
    pub member: String,
    pub socket_dir: PathBuf,
    pub port: u16,
}

/// The running clients and samplers; [`Observers::stop`] ends them.
pub struct Observers {
    runtime: tokio::runtime::Runtime,
    clients: JoinSet<()>,
    samplers: JoinSet<()>,
    stop_clients: CancellationToken,
    stop_samplers: CancellationToken,
}

impl Observers {
    /// Starts one client per path and one sampler per member, recording into `recorder`.
    pub fn start(paths: &[WritePath], points: &[SamplePoint], recorder: &Arc<Recorder>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("campaign-observer")
            .enable_all()
            .build()
            .expect("building the observers' runtime");
        let stop_clients = CancellationToken::new();
        let stop_samplers = CancellationToken::new();
        let next_value = Arc::new(AtomicI64::new(1));
        let mut clients = JoinSet::new();
        let mut samplers = JoinSet::new();
        for path in paths {
            clients.spawn_on(
                client(
                    path.clone(),
                    next_value.clone(),
                    recorder.clone(),
                    stop_clients.clone(),
                ),
                runtime.handle(),
            );
        }
        for point in points {
            samplers.spawn_on(
                sampler(point.clone(), recorder.clone(), stop_samplers.clone()),
                runtime.handle(),
            );
        }
        Observers {
            runtime,
            clients,
            samplers,
            stop_clients,
            stop_samplers,
        }
    }

    /// Stops the clients and waits until each has its last write's outcome (at most
    /// [`WRITE_TIMEOUT`] and a connect later).
    pub fn stop_clients(&mut self) {
        self.stop_clients.cancel();
        let clients = &mut self.clients;
        self.runtime
            .block_on(async { while clients.join_next().await.is_some() {} });
    }

    /// Stops the samplers (after the final read: they must cover it) and the runtime.
    pub fn stop(mut self) {
        self.stop_clients();
        self.stop_samplers.cancel();
        let samplers = &mut self.samplers;
        self.runtime
            .block_on(async { while samplers.join_next().await.is_some() {} });
    }
}

/// Writes `insert into campaign values (<fresh value>)` through `path` until `stop`, one at a
/// time, recording each attempt that reached the server.
async fn client(
    path: WritePath,
    next_value: Arc<AtomicI64>,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
) {
    let clock = recorder.clock();
    let mut config = tokio_postgres::Config::new();
    config
        .host(&path.host)
        .port(path.port)
        .user(ROLE)
        .password(ROLE)
        .dbname("postgres")
        .application_name("campaign")
        .connect_timeout(CONNECT_TIMEOUT);
    let mut connection: Option<tokio_postgres::Client> = None;
    while !stop.is_cancelled() {
        let invoked_ms = clock.now_ms();
        let client = match &connection {
            Some(client) if !client.is_closed() => client,
            _ => match tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls)).await {
                Ok(Ok((client, conn))) => {
                    tokio::spawn(conn);
                    connection.insert(client)
                }
                // Nothing was sent: not a write, and no value is used up.
                _ => {
                    connection = None;
                    pause(&stop, RETRY_PAUSE).await;
                    continue;
                }
            },
        };
        let value = next_value.fetch_add(1, Ordering::Relaxed);
        let sql = format!("insert into {TABLE} values ({value})");
        let answer = tokio::time::timeout(WRITE_TIMEOUT, client.simple_query(&sql)).await;
        let (outcome, error) = classify(answer);
        recorder.record(Record::Write(Write {
            value,
            path: path.name.clone(),
            invoked_ms,
            completed_ms: clock.now_ms(),
            outcome,
            error,
        }));
        match outcome {
            Outcome::Acknowledged => pause(&stop, WRITE_PAUSE).await,
            // A read-only member may be promoted under this very connection: keep it.
            Outcome::Failed => pause(&stop, RETRY_PAUSE).await,
            Outcome::Unknown => {
                connection = None;
                pause(&stop, RETRY_PAUSE).await;
            }
        }
    }
}

/// What an `INSERT`'s answer says about its commit. Only errors that PostgreSQL reports
/// before anything is written are failures; a lost connection, a timeout, or an error that can
/// come after the local commit (a shutdown or a cancelled wait for a synchronous standby) may
/// have committed: unknown.
fn classify<T>(
    answer: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
) -> (Outcome, Option<String>) {
    match answer {
        Ok(Ok(_)) => (Outcome::Acknowledged, None),
        Err(_) => (
            Outcome::Unknown,
            Some(format!("no answer within {WRITE_TIMEOUT:?}")),
        ),
        Ok(Err(e)) => {
            let certain = e.code().is_some_and(|code| {
                *code == SqlState::READ_ONLY_SQL_TRANSACTION
                    || *code == SqlState::CANNOT_CONNECT_NOW
                    || *code == SqlState::TOO_MANY_CONNECTIONS
            });
            let text = match e.as_db_error() {
                Some(db) => format!("{}: {}", db.code().code(), db.message()),
                None => e.to_string(),
            };
            if certain {
                (Outcome::Failed, Some(text))
            } else {
                (Outcome::Unknown, Some(text))
            }
        }
    }
}

/// Probes `point` every [`SAMPLE_EVERY`] until `stop`: a writable answer is stamped when the
/// probe was sent, anything else when its answer (or timeout) came, as the checker's rule
/// requires.
async fn sampler(point: SamplePoint, recorder: Arc<Recorder>, stop: CancellationToken) {
    let clock = recorder.clock();
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(&point.socket_dir)
        .port(point.port)
        .user("postgres")
        .dbname("postgres")
        .application_name("campaign sampler")
        .connect_timeout(PROBE_TIMEOUT);
    let mut connection: Option<tokio_postgres::Client> = None;
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return,
        }
        let sent_ms = clock.now_ms();
        let probe = async {
            let client = match &connection {
                Some(client) if !client.is_closed() => client,
                _ => {
                    let (client, conn) = config.connect(NoTls).await.ok()?;
                    tokio::spawn(conn);
                    connection.insert(client)
                }
            };
            let rows = client
                .simple_query("select not pg_is_in_recovery()")
                .await
                .ok()?;
            rows.iter().find_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0) == Some("t")),
                _ => None,
            })
        };
        let answer = tokio::time::timeout(PROBE_TIMEOUT, probe).await;
        let accepted_writes = matches!(answer, Ok(Some(true)));
        if !matches!(answer, Ok(Some(_))) {
            // Timed out or failed: start afresh next time.
            connection = None;
        }
        let ms = if accepted_writes {
            sent_ms
        } else {
            clock.now_ms()
        };
        recorder.record(Record::Sample(Sample {
            ms,
            member: point.member.clone(),
            accepted_writes,
        }));
    }
}

/// Sleeps `how_long`, or less if `stop` comes first.
async fn pause(stop: &CancellationToken, how_long: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(how_long) => {}
        _ = stop.cancelled() => {}
    }
}
