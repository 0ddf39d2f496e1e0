//! The pooled port's logins: a client logs in to the pooler with SCRAM-SHA-256 against its
//! role's verifier (read from this member's PostgreSQL, where roles replicate); its proof
//! yields the key the pooler logs in to the primary with, as that role, when its pool has
//! no idle connection. The client is then told the parameters of a pooled connection
//! (set to what it asked for) and the pooler's own cancel key, and its session is relayed
//! ([`super::relay`]). Every refusal is a PostgreSQL ErrorResponse; nothing a client sends
//! can panic the pooler or reach another client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::negotiate::{negotiate, read_until, refuse, Io, Negotiated};

use super::pool::{Credentials, Mode, PoolKey, Pools, Side};
use super::relay::{self, Client};
use super::scram::{self, ServerExchange, Verifier};
use super::server::{tracked, TRACKED};
use super::wire::{self, WireError};
use super::{Cancels, Fatal};
use crate::postgres::roles::RoleLookup;

/// What the connections need.
pub struct Deps {
    /// Roles' verifiers, read on a kept connection.
    pub roles: Arc<RoleLookup>,
    pub pools: Arc<Pools>,
    /// The pools this port's clients use: the writer's or the readers'.
    pub side: Side,
    /// How long a client may take to log in.
    pub auth_timeout: Duration,
    /// One permit per client allowed at once.
    pub clients: Arc<Semaphore>,
    pub max_client_conn: usize,
    /// Shared by the writer and reader ports: a cancel request may come to either.
    pub cancels: Arc<Cancels>,
    /// What an SSLRequest gets: TLS with this configuration, or `N`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves one client until its session ends.
pub async fn serve(tcp: TcpStream, deps: Arc<Deps>) {
    let _ = tcp.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + deps.auth_timeout;
    let mut buf = BytesMut::with_capacity(8192);
    // A client that does not finish its first packets in time is closed, as PostgreSQL
    // closes an incomplete startup packet.
    let negotiated = tokio::time::timeout_at(deadline, negotiate(tcp, &mut buf, deps.tls.as_ref()));
    let (mut io, parameters) = match negotiated.await {
        Ok(Negotiated::Startup(io, parameters)) => (io, parameters),
        Ok(Negotiated::Cancel { pid, secret }) => return forward_cancel(&deps, pid, secret).await,
        Ok(Negotiated::Closed) | Err(_) => return,
    };
    let login = tokio::time::timeout_at(deadline, log_in(&mut io, &mut buf, parameters, &deps))
        .await
        .unwrap_or_else(|_| {
            Err(Fatal::new(
                "08006",
                "canceling authentication due to timeout",
            ))
        });
    match login {
        Ok(login) => {
            let Login {
                permit: _permit,
                key,
                pool,
                lease,
                wants,
                credentials,
                cancel,
            } = login;
            let (reader, writer) = tokio::io::split(io);
            let session = Client {
                reader,
                writer,
                buf,
                wants,
                credentials,
                cancel,
            };
            pool.clients
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            relay::run(session, lease, pool.clone(), &deps.pools).await;
            pool.clients
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            deps.cancels.remove(key);
        }
        Err(fatal) => {
            refuse(&mut io, &fatal).await;
        }
    }
}

/// A logged-in client, before its session starts.
struct Login {
    permit: tokio::sync::OwnedSemaphorePermit,
    key: (u32, u32),
    pool: Arc<super::pool::Pool>,
    /// The connection the login used, kept in session mode.
    lease: Option<super::pool::Lease>,
    wants: BTreeMap<String, String>,
    credentials: Credentials,
    cancel: Arc<super::CancelSlot>,
}

/// The startup parameters a pooled session takes: the pool's, and tracked ones (by their
/// canonical names). Others would differ between the clients a connection serves.
fn startup_wants(
    parameters: &BTreeMap<String, String>,
    side: Side,
) -> Result<(PoolKey, BTreeMap<String, String>), Fatal> {
    let user = parameters["user"].clone();
    let database = parameters.get("database").unwrap_or(&user).clone();
    let mut wants = BTreeMap::new();
    for (name, value) in parameters {
        if name == "user" || name == "database" {
            continue;
        }
        match tracked(name) {
            Some(name) => {
                wants.insert(name.to_owned(), value.clone());
            }
            None => {
                return Err(Fatal::new(
                    "08P01",
                    format!(
                        "unsupported startup parameter: {name} (pooled connections are shared; \
                         the pooler keeps only {}; use SET LOCAL, ALTER ROLE ... SET, or the \
                         writer port)",
                        TRACKED.join(", ")
                    ),
                ))
            }
        }
    }
    let key = PoolKey {
        database,
        user,
        side,
    };
    Ok((key, wants))
}

/// A SASL message from the client, of at most [`wire::MAX_SASL`] bytes.
async fn sasl_message(stream: &mut Io, buf: &mut BytesMut) -> Result<Vec<u8>, Fatal> {
    // The type first, as PostgreSQL: a message of another type is refused for what it is,
    // whatever length it claims.
    read_until(stream, buf, |b| match b.first() {
        Some(&kind) if kind != b'p' => Err(WireError::Unexpected(kind)),
        _ => Ok(wire::parse_message(b, wire::MAX_SASL)?.map(|(_, body, n)| (body.to_vec(), n))),
    })
    .await
}

/// The login after the startup message: the SCRAM exchange, then a pooled connection set
/// to the client's parameters.
async fn log_in(
    client: &mut Io,
    buf: &mut BytesMut,
    parameters: BTreeMap<String, String>,
    deps: &Deps,
) -> Result<Login, Fatal> {
    let permit = deps.clients.clone().try_acquire_owned().map_err(|_| {
        Fatal::new(
            "53300",
            format!(
                "sorry, too many clients already ([pooler] max_client_conn = {})",
                deps.max_client_conn
            ),
        )
    })?;
    let (pool_key, mut wants) = startup_wants(&parameters, deps.side)?;
    let user = pool_key.user.clone();
    let refused = || {
        Fatal::new(
            "28P01",
            format!("password authentication failed for user \"{user}\""),
        )
    };
    // A role that does not exist or has no SCRAM verifier goes through the same exchange
    // with a verifier nobody knows, so that the answer does not tell which it was.
    let stored = (deps.roles.verifier(&user).await)
        .map_err(|e| Fatal::new("08006", format!("reading role {user}: {e}")))?;
    let known = stored.as_deref().and_then(|v| v.parse::<Verifier>().ok());
    let verifier = known.clone().unwrap_or_else(|| Verifier {
        iterations: 4096,
        salt: rand::random::<[u8; 16]>().to_vec(),
        stored_key: rand::random(),
        server_key: rand::random(),
    });
    client.write_all(&wire::auth_sasl()).await?;
    let (mechanism, first) = wire::sasl_initial(&sasl_message(client, buf).await?)?;
    if mechanism != "SCRAM-SHA-256" {
        return Err(Fatal::new(
            "28000",
            format!("SASL mechanism {mechanism:?} is not supported; use SCRAM-SHA-256"),
        ));
    }
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|_| WireError::Sasl);
    let exchange = ServerExchange::start(verifier.clone(), &text(first)?, &scram::nonce())
        .map_err(|e| Fatal::new("08P01", e.to_string()))?;
    client
        .write_all(&wire::auth_sasl_continue(exchange.server_first()))
        .await?;
    let last = text(sasl_message(client, buf).await?)?;
    let (server_final, client_key) = match exchange.finish(&last) {
        Ok(done) if known.is_some() => done,
        _ => return Err(refused()),
    };
    let credentials = Credentials {
        client_key,
        verifier,
    };
    let pools = &deps.pools;
    let pool = pools.pool(&pool_key);
    let defaults = pools.defaults(&pool);
    // A transaction-mode client of a pool that has had a connection logs in without one
    // (PgBouncer's cached welcome): it is told a fresh connection's parameters with its
    // own, which its first transaction's connection is set to.
    let (lease, mut params) = if pools.limits.mode == Mode::Transaction && !defaults.is_empty() {
        let mut params = (*defaults).clone();
        params.extend(wants.iter().map(|(k, v)| (k.clone(), v.clone())));
        (None, params)
    } else {
        let mut lease = pools.acquire(&pool, &credentials).await?;
        lease
            .server
            .apply(&mut wants, &pools.defaults(&pool))
            .await?;
        let params = lease.server.params.clone();
        (Some(lease), params)
    };
    params.remove("extra_float_digits");
    let (key, cancel) = deps.cancels.register();
    let mut reply = wire::auth_sasl_final(&server_final);
    reply.extend_from_slice(&wire::auth_ok());
    let mut params: Vec<_> = params.into_iter().collect();
    params.sort();
    for (name, value) in &params {
        reply.extend(wire::parameter_status(name, value));
    }
    reply.extend(wire::backend_key_data(key.0, key.1));
    reply.extend(relay::ready_for_query(b'I'));
    if let Err(e) = client.write_all(&reply).await {
        deps.cancels.remove(key);
        if let Some(lease) = lease {
            pools.release(lease, true);
        }
        return Err(e.into());
    }
    let lease = match (pools.limits.mode, lease) {
        (Mode::Session, Some(lease)) => {
            cancel.set(Some(&lease.server));
            Some(lease)
        }
        (_, Some(lease)) => {
            pools.release(lease, true);
            None
        }
        (_, None) => None,
    };
    Ok(Login {
        permit,
        key,
        pool,
        lease,
        wants,
        credentials,
        cancel,
    })
}

/// Passes a cancel request with one of the pooler's keys on to the server connection that
/// client holds now; a key the pooler did not give, or a client between transactions, is
/// ignored, as PostgreSQL ignores a wrong key.
async fn forward_cancel(deps: &Deps, pid: u32, secret: u32) {
    let Some((addr, pid, secret)) = deps.cancels.get((pid, secret)).and_then(|s| s.get()) else {
        return;
    };
    let send = async {
        let mut server = TcpStream::connect(addr.as_str()).await?;
        server.write_all(&wire::cancel_request(pid, secret)).await?;
        server.shutdown().await
    };
    match tokio::time::timeout(Duration::from_secs(5), send).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "pooler: passing a cancel request on"),
        Err(_) => tracing::warn!("pooler: passing a cancel request on timed out"),
    }
}
