//! Pools of server connections, one per database and role, each with at most `pool_size`
//! connections in use; clients beyond it queue, first come first served, for up to
//! `query_wait_timeout`, which also bounds the wait for a primary during a failover.
//! Idle connections to a primary that is no longer the writer are closed, not reused.
//! Reader pools (the reader pooled port) hand out connections to the replicas the proxy's
//! reader routes name, with the same lag limits; they are not held for switchovers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::scram::Verifier;
use super::server::Server;
use super::Fatal;
use crate::cluster::{Epoch, Switchover};
use crate::proxy::{Routes, Target};
use crate::raft::ClusterView;

/// How long a failed login to the primary waits for the routes to change before it tries
/// again.
const RETRY: Duration = Duration::from_millis(100);

/// How the pooler hands out server connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A client keeps its connection until it leaves (then DISCARD ALL).
    Session,
    /// A client has a connection for one transaction at a time.
    Transaction,
}

/// Where a pool's connections go: the primary, or the replicas the reader routes name.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    #[default]
    Writer,
    Reader,
}

/// The pools' limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub mode: Mode,
    /// How long new transactions are held for one switchover, at most: past it they go to
    /// the primary as it is.
    pub pause_timeout: Duration,
    pub pool_size: usize,
    pub query_wait_timeout: Duration,
    pub server_idle_timeout: Duration,
}

/// A pool's database and role.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub database: String,
    pub user: String,
    pub side: Side,
}

/// What a client proves its role with: the server logs in with the same key.
#[derive(Clone)]
pub struct Credentials {
    pub client_key: [u8; 32],
    pub verifier: Verifier,
}

/// One database and role's connections.
pub struct Pool {
    pub key: PoolKey,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Server>>,
    /// The parameters a fresh connection reports, from the first login.
    defaults: Mutex<Arc<HashMap<String, String>>>,
    pub clients: AtomicUsize,
    pub waiting: AtomicUsize,
    pub active: AtomicUsize,
    pub logins: AtomicU64,
    /// The longest a client waited for a connection, in microseconds, since start.
    pub max_wait_us: AtomicU64,
}

/// A pool's numbers, as `pgquorum pools` and `/metrics` show them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolStats {
    pub database: String,
    pub user: String,
    /// Absent from older members' answers: their pools are all writer pools.
    #[serde(default)]
    pub side: Side,
    pub clients: usize,
    pub waiting: usize,
    pub active: usize,
    pub idle: usize,
    pub logins: u64,
    pub max_wait_ms: u64,
}

/// What `GET /pools` answers: the mode, whether new transactions are held for a
/// switchover now, and every pool.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolsReport {
    pub mode: Mode,
    pub pool_size: usize,
    pub paused: bool,
    pub pools: Vec<PoolStats>,
}

/// A server connection a client holds; the permit is its place in the pool.
pub struct Lease {
    pub server: Server,
    pub pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

/// Every pool of this member.
pub struct Pools {
    pub limits: Limits,
    routes: watch::Receiver<Routes>,
    /// The cluster state, for a planned switchover.
    view: watch::Receiver<Arc<ClusterView>>,
    /// The switchover new transactions are held for, and since when.
    pause: Mutex<Option<(Switchover, Instant)>>,
    pools: Mutex<BTreeMap<PoolKey, Arc<Pool>>>,
    /// Turns among the readers for new reader connections.
    turn: AtomicUsize,
}

/// The switchover due now from the lease holder, if any: the primary is about to stop.
pub fn handing_over(view: &ClusterView, now_unix_ms: u64) -> Option<Switchover> {
    let state = &view.state;
    let switchover = state.switchover.as_ref()?;
    let from_holder = state.lease.is_some_and(|l| l.holder == switchover.from);
    let due = switchover.at_unix_ms.is_none_or(|at| at <= now_unix_ms);
    (from_holder && due).then(|| switchover.clone())
}

/// Whether `server` may serve `key`'s pool under `routes`: it is to the writer under the
/// same lease, or to one of the readers.
fn usable(key: &PoolKey, server: &Server, routes: &Routes) -> bool {
    match key.side {
        Side::Writer => {
            routes.writer.as_ref() == Some(&server.target) && routes.epoch == server.epoch
        }
        Side::Reader => routes.readers.contains(&server.target),
    }
}

impl Pools {
    pub fn new(
        limits: Limits,
        routes: watch::Receiver<Routes>,
        view: watch::Receiver<Arc<ClusterView>>,
    ) -> Pools {
        Pools {
            limits,
            routes,
            view,
            pause: Mutex::new(None),
            pools: Mutex::new(BTreeMap::new()),
            turn: AtomicUsize::new(0),
        }
    }

    /// How much longer new transactions are held, if they are: while a switchover is due
    /// from the primary, for at most `pause_timeout` per switchover.
    fn held_for(&self) -> Option<Duration> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let due = handing_over(&self.view.borrow(), now_ms);
        let mut pause = self.pause.lock().expect("pause lock poisoned");
        let Some(switchover) = due else {
            if pause.take().is_some() {
                tracing::info!("pooler: switchover over; new transactions go on");
            }
            return None;
        };
        let since = match &*pause {
            Some((held, since)) if *held == switchover => *since,
            _ => {
                tracing::info!(
                    from = %switchover.from,
                    "pooler: switchover due; holding new transactions until the new primary"
                );
                *pause = Some((switchover, Instant::now()));
                Instant::now()
            }
        };
        self.limits.pause_timeout.checked_sub(since.elapsed())
    }

    pub fn routes(&self) -> watch::Receiver<Routes> {
        self.routes.clone()
    }

    /// The pool for `key`, made on first use.
    pub fn pool(&self, key: &PoolKey) -> Arc<Pool> {
        let mut pools = self.pools.lock().expect("pools lock poisoned");
        let pool = pools.entry(key.clone()).or_insert_with(|| {
            Arc::new(Pool {
                key: key.clone(),
                permits: Arc::new(Semaphore::new(self.limits.pool_size)),
                idle: Mutex::new(Vec::new()),
                defaults: Mutex::new(Arc::default()),
                clients: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                active: AtomicUsize::new(0),
                logins: AtomicU64::new(0),
                max_wait_us: AtomicU64::new(0),
            })
        });
        pool.clone()
    }

    /// The report for `GET /pools` and `/metrics`.
    pub fn report(&self) -> PoolsReport {
        PoolsReport {
            mode: self.limits.mode,
            pool_size: self.limits.pool_size,
            paused: self.held_for().is_some(),
            pools: self.stats(),
        }
    }

    /// Every pool's numbers, by database and role.
    pub fn stats(&self) -> Vec<PoolStats> {
        let pools = self.pools.lock().expect("pools lock poisoned");
        pools
            .values()
            .map(|p| PoolStats {
                database: p.key.database.clone(),
                user: p.key.user.clone(),
                side: p.key.side,
                clients: p.clients.load(Ordering::Relaxed),
                waiting: p.waiting.load(Ordering::Relaxed),
                active: p.active.load(Ordering::Relaxed),
                idle: p.idle.lock().expect("idle lock poisoned").len(),
                logins: p.logins.load(Ordering::Relaxed),
                max_wait_ms: p.max_wait_us.load(Ordering::Relaxed) / 1000,
            })
            .collect()
    }

    /// A connection of `pool` to the current primary: an idle one, else a new login with
    /// `credentials`. Waits for a free place and for a primary, up to `query_wait_timeout`.
    pub async fn acquire(
        &self,
        pool: &Arc<Pool>,
        credentials: &Credentials,
    ) -> Result<Lease, Fatal> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.limits.query_wait_timeout;
        pool.waiting.fetch_add(1, Ordering::Relaxed);
        let waited = self.wait(pool, deadline).await;
        pool.waiting.fetch_sub(1, Ordering::Relaxed);
        let (permit, writer, epoch) = waited?;
        let us = started.elapsed().as_micros() as u64;
        pool.max_wait_us.fetch_max(us, Ordering::Relaxed);
        let reused = {
            let mut idle = pool.idle.lock().expect("idle lock poisoned");
            let timeout = self.limits.server_idle_timeout;
            // The least recently used connection, at the bottom, is closed once idle too
            // long: one look per request keeps the pool from holding idle connections.
            if idle
                .first()
                .is_some_and(|s| s.idle_since.elapsed() >= timeout)
            {
                idle.remove(0);
            }
            // The most recently used one that is still to this primary and open; others
            // on top are dropped (closed): to another primary, or closed or spoken on by
            // the server while idle (terminated, the server shutting down).
            let mut found = None;
            // Read in place (no await below): a clone would cost allocations per request.
            let routes = self.routes.borrow();
            while let Some(server) = idle.pop() {
                let open = matches!(
                    server.stream.try_read(&mut [0u8; 1]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                );
                if open && usable(&pool.key, &server, &routes) {
                    found = Some(server);
                    break;
                }
            }
            found
        };
        let server = match reused {
            Some(server) => server,
            None => {
                self.log_in(pool, credentials, writer, epoch, deadline)
                    .await?
            }
        };
        pool.active.fetch_add(1, Ordering::Relaxed);
        Ok(Lease {
            server,
            pool: pool.clone(),
            _permit: permit,
        })
    }

    /// A new connection of `pool` to `writer`. A primary that cannot be reached (it just
    /// stopped) is tried again, at the writer the routes name then, until `deadline`.
    async fn log_in(
        &self,
        pool: &Pool,
        credentials: &Credentials,
        mut writer: Target,
        mut epoch: Option<Epoch>,
        deadline: tokio::time::Instant,
    ) -> Result<Server, Fatal> {
        let key = &pool.key;
        loop {
            let login = Server::connect(
                writer.clone(),
                epoch,
                &key.user,
                &key.database,
                credentials.client_key,
                &credentials.verifier,
            )
            .await;
            match login {
                Ok(server) => {
                    pool.logins.fetch_add(1, Ordering::Relaxed);
                    let mut defaults = pool.defaults.lock().expect("defaults lock poisoned");
                    if defaults.is_empty() {
                        *defaults = Arc::new(server.params.clone());
                    }
                    return Ok(server);
                }
                // Connection failures and a server starting or shutting down are worth
                // another try; a refused login is not.
                Err(fatal)
                    if (fatal.code.starts_with("08") || fatal.code.starts_with("57P"))
                        && tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(error = %fatal.message, "pooler: logging in to the primary; retrying");
                    let mut routes = self.routes.clone();
                    let _ = tokio::time::timeout_at(
                        std::cmp::min(deadline, tokio::time::Instant::now() + RETRY),
                        routes.changed(),
                    )
                    .await;
                    let (w, e) = self.target(pool.key.side, deadline).await?;
                    (writer, epoch) = (w, e);
                }
                Err(fatal) => return Err(fatal),
            }
        }
    }

    /// Where a new connection of a `side` pool goes, by `deadline`: the writer, or the
    /// next reader in turn.
    async fn target(
        &self,
        side: Side,
        deadline: tokio::time::Instant,
    ) -> Result<(Target, Option<Epoch>), Fatal> {
        if side == Side::Writer {
            return self.writer(deadline).await;
        }
        let seconds = self.limits.query_wait_timeout.as_secs_f64();
        let mut routes = self.routes.clone();
        let readers = tokio::time::timeout_at(deadline, routes.wait_for(|r| !r.readers.is_empty()))
            .await
            .map(|waited| waited.map(|r| r.readers.clone()));
        match readers {
            Ok(Ok(readers)) => {
                let turn = self.turn.fetch_add(1, Ordering::Relaxed);
                Ok((readers[turn % readers.len()].clone(), None))
            }
            Ok(Err(_)) => Err(Fatal::new("57P01", "the pooler is shutting down")),
            Err(_) => Err(Fatal::new(
                "57P03",
                format!(
                    "no reader: no member could serve reads for {seconds} s \
                     (query_wait_timeout); see `pgquorum list`"
                ),
            )),
        }
    }

    /// The writer, once the routes name one under the lease the cluster state holds.
    async fn writer(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(Target, Option<Epoch>), Fatal> {
        let seconds = self.limits.query_wait_timeout.as_secs_f64();
        let view = self.view.clone();
        let mut routes = self.routes.clone();
        let writer = tokio::time::timeout_at(
            deadline,
            routes.wait_for(|r| {
                let lease = view.borrow().state.lease.map(|l| l.epoch);
                r.writer.is_some() && r.epoch.is_some() && r.epoch == lease
            }),
        )
        .await;
        match writer {
            Ok(Ok(routes)) => {
                let writer = routes.writer.clone().expect("waited for a writer");
                Ok((writer, routes.epoch))
            }
            Ok(Err(_)) => Err(Fatal::new("57P01", "the pooler is shutting down")),
            Err(_) => Err(Fatal::new(
                "57P03",
                format!(
                    "no primary: the cluster had no writable primary for {seconds} s \
                     (query_wait_timeout); see `pgquorum list`"
                ),
            )),
        }
    }

    /// A place in the pool and the writer, by `deadline`.
    async fn wait(
        &self,
        pool: &Pool,
        deadline: tokio::time::Instant,
    ) -> Result<(OwnedSemaphorePermit, Target, Option<Epoch>), Fatal> {
        let size = self.limits.pool_size;
        let seconds = self.limits.query_wait_timeout.as_secs_f64();
        let permit = tokio::time::timeout_at(deadline, pool.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                Fatal::new(
                    "53300",
                    format!(
                        "query_wait_timeout: no server connection of pool {}/{} came free \
                         within {seconds} s (pool_size {size}, all in use); shorten \
                         transactions or raise [pooler] pool_size (and max_connections)",
                        pool.key.database, pool.key.user
                    ),
                )
            })?
            .expect("pool semaphores are never closed");
        // Writer pools are held during a switchover: until it is over, or for pause_timeout.
        let mut view = self.view.clone();
        while let Some(left) = (pool.key.side == Side::Writer)
            .then(|| self.held_for())
            .flatten()
        {
            let wake = std::cmp::min(deadline, tokio::time::Instant::now() + left);
            tokio::select! {
                _ = view.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        let (target, epoch) = self.target(pool.key.side, deadline).await?;
        Ok((permit, target, epoch))
    }

    /// Gives a connection back when it is idle and still to the writer; closes it
    /// otherwise.
    pub fn release(&self, lease: Lease, reusable: bool) {
        let Lease {
            mut server, pool, ..
        } = lease;
        pool.active.fetch_sub(1, Ordering::Relaxed);
        let current = usable(&pool.key, &server, &self.routes.borrow());
        if reusable && current && server.buf.is_empty() && !server.dirty {
            server.idle_since = Instant::now();
            pool.idle.lock().expect("idle lock poisoned").push(server);
        }
    }

    /// The parameters a fresh connection of `pool` reports.
    pub fn defaults(&self, pool: &Pool) -> Arc<HashMap<String, String>> {
        pool.defaults
            .lock()
            .expect("defaults lock poisoned")
            .clone()
    }
}
