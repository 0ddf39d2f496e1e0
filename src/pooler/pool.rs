//! Pools of server connections, one per database and role, each with at most `pool_size`
//! connections in use; clients beyond it queue, first come first served, for up to
//! `query_wait_timeout`, which also bounds the wait for a primary during a failover.
//! Idle connections to a primary that is no longer the writer are closed, not reused.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::scram::Verifier;
use super::server::Server;
use super::Fatal;
use crate::proxy::Routes;

/// How the pooler hands out server connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A client keeps its connection until it leaves (then DISCARD ALL).
    Session,
    /// A client has a connection for one transaction at a time.
    Transaction,
}

/// The pools' limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub mode: Mode,
    pub pool_size: usize,
    pub query_wait_timeout: Duration,
    pub server_idle_timeout: Duration,
}

/// A pool's database and role.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub database: String,
    pub user: String,
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
    defaults: Mutex<HashMap<String, String>>,
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
    pub clients: usize,
    pub waiting: usize,
    pub active: usize,
    pub idle: usize,
    pub logins: u64,
    pub max_wait_ms: u64,
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
    pools: Mutex<BTreeMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    pub fn new(limits: Limits, routes: watch::Receiver<Routes>) -> Pools {
        Pools {
            limits,
            routes,
            pools: Mutex::new(BTreeMap::new()),
        }
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
                defaults: Mutex::new(HashMap::new()),
                clients: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                active: AtomicUsize::new(0),
                logins: AtomicU64::new(0),
                max_wait_us: AtomicU64::new(0),
            })
        });
        pool.clone()
    }

    /// Every pool's numbers, by database and role.
    pub fn stats(&self) -> Vec<PoolStats> {
        let pools = self.pools.lock().expect("pools lock poisoned");
        pools
            .values()
            .map(|p| PoolStats {
                database: p.key.database.clone(),
                user: p.key.user.clone(),
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
            // Connections to another primary, or idle too long, are dropped (closed).
            idle.retain(|s| {
                s.target == writer && s.epoch == epoch && s.idle_since.elapsed() < timeout
            });
            idle.pop()
        };
        let server = match reused {
            Some(server) => server,
            None => {
                let key = &pool.key;
                let server = Server::connect(
                    writer,
                    epoch,
                    &key.user,
                    &key.database,
                    credentials.client_key,
                    &credentials.verifier,
                )
                .await?;
                pool.logins.fetch_add(1, Ordering::Relaxed);
                let mut defaults = pool.defaults.lock().expect("defaults lock poisoned");
                if defaults.is_empty() {
                    defaults.clone_from(&server.params);
                }
                server
            }
        };
        pool.active.fetch_add(1, Ordering::Relaxed);
        Ok(Lease {
            server,
            pool: pool.clone(),
            _permit: permit,
        })
    }

    /// A place in the pool and the writer, by `deadline`.
    async fn wait(
        &self,
        pool: &Pool,
        deadline: tokio::time::Instant,
    ) -> Result<
        (
            OwnedSemaphorePermit,
            crate::proxy::Target,
            Option<crate::cluster::Epoch>,
        ),
        Fatal,
    > {
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
        let mut routes = self.routes.clone();
        let writer = tokio::time::timeout_at(
            deadline,
            routes.wait_for(|r| r.writer.is_some() && r.epoch.is_some()),
        )
        .await;
        match writer {
            Ok(Ok(routes)) => {
                let writer = routes.writer.clone().expect("waited for a writer");
                Ok((permit, writer, routes.epoch))
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

    /// Gives a connection back when it is idle and still to the writer; closes it
    /// otherwise.
    pub fn release(&self, lease: Lease, reusable: bool) {
        let Lease {
            mut server, pool, ..
        } = lease;
        pool.active.fetch_sub(1, Ordering::Relaxed);
        let current = {
            let routes = self.routes.borrow();
            routes.writer.as_ref() == Some(&server.target) && routes.epoch == server.epoch
        };
        if reusable && current && server.buf.is_empty() && !server.dirty {
            server.idle_since = Instant::now();
            pool.idle.lock().expect("idle lock poisoned").push(server);
        }
    }

    /// The parameters a fresh connection of `pool` reports.
    pub fn defaults(&self, pool: &Pool) -> HashMap<String, String> {
        pool.defaults
            .lock()
            .expect("defaults lock poisoned")
            .clone()
    }
}
