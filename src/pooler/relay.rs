//! A logged-in client's session: its messages go to a pooled server connection, held for
//! the whole session (session mode) or for one transaction at a time (transaction mode),
//! and the server's answers come back, with the pooler's own prepared statements kept out
//! of the client's view. Reads and writes of both sides share one loop, so neither side's
//! full buffer can stall the other.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::io::{ReadHalf, WriteHalf};

use super::negotiate::Io;
use super::pool::{Credentials, Lease, Mode, Pool, Pools};
use super::statements::{self, ClientStatements, MAX_SERVER_STATEMENTS};
use super::track::Tracker;
use super::wire;
use super::{CancelSlot, Fatal};

/// The longest client message: bigger ones end the session (PostgreSQL allows 1 GB; a
/// pooler that holds whole messages must stop sooner).
pub const MAX_MESSAGE: usize = 256 << 20;
/// Past this much unsent data to one side, the other side is not read.
const HIGH_WATER: usize = 256 << 10;

/// A logged-in client.
pub struct Client {
    pub reader: ReadHalf<Io>,
    pub writer: WriteHalf<Io>,
    /// Bytes read and not yet handled.
    pub buf: BytesMut,
    /// Tracked parameters as the client set them.
    pub wants: BTreeMap<String, String>,
    pub credentials: Credentials,
    pub cancel: Arc<CancelSlot>,
}

/// The session until the client leaves or is closed; `held` is the connection the login
/// used, if the session keeps it.
pub async fn run(mut client: Client, held: Option<Lease>, pool: Arc<Pool>, pools: &Pools) {
    let mut session = Session {
        statements: ClientStatements::default(),
        tracker: Tracker::default(),
        lease: held,
        to_client: Vec::new(),
        to_server: Vec::new(),
        discarding: false,
        status: b'I',
    };
    let result = session.serve(&mut client, &pool, pools).await;
    if let Err(fatal) = &result {
        let mut error = std::mem::take(&mut session.to_client);
        error.extend(wire::error_response("FATAL", &fatal.code, &fatal.message));
        let _ = client.writer.write_all(&error).await;
        tracing::debug!(code = %fatal.code, message = %fatal.message, "pooler: session closed");
    }
    session.end(pools).await;
    let _ = client.writer.shutdown().await;
}

enum Event {
    ClientRead(std::io::Result<usize>),
    ServerRead(std::io::Result<usize>),
    ClientWrote(std::io::Result<usize>),
    ServerWrote(std::io::Result<usize>),
    /// The routes changed (`false`: their sender is gone).
    Routes(bool),
}

struct Session {
    statements: ClientStatements,
    tracker: Tracker,
    lease: Option<Lease>,
    to_client: Vec<u8>,
    to_server: Vec<u8>,
    /// A request could not get a connection: its messages up to the next Sync are dropped.
    discarding: bool,
    /// The transaction status of the last ReadyForQuery.
    status: u8,
}

impl Session {
    /// Returns `Ok` when the client left.
    async fn serve(
        &mut self,
        client: &mut Client,
        pool: &Arc<Pool>,
        pools: &Pools,
    ) -> Result<(), Fatal> {
        let mut routes = pools.routes();
        loop {
            if self.handle_client(client, pool, pools).await? {
                return Ok(());
            }
            self.handle_server(client, pools).await?;
            let read_client = self.to_server.len() < HIGH_WATER;
            let read_server = self.lease.is_some() && self.to_client.len() < HIGH_WATER;
            let Session {
                lease,
                to_client,
                to_server,
                ..
            } = self;
            let (mut server_read, mut server_write) = match lease {
                Some(lease) => {
                    let (r, w) = lease.server.stream.split();
                    (Some((r, &mut lease.server.buf)), Some(w))
                }
                None => (None, None),
            };
            let (client_read, client_write) = (&mut client.reader, &mut client.writer);
            let event = tokio::select! {
                read = client_read.read_buf(&mut client.buf), if read_client => {
                    Event::ClientRead(read)
                }
                read = async {
                    let (r, buf) = server_read.as_mut().expect("guarded");
                    r.read_buf(*buf).await
                }, if read_server && server_read.is_some() => Event::ServerRead(read),
                wrote = async {
                    server_write.as_mut().expect("guarded").write(to_server).await
                }, if !to_server.is_empty() && server_write.is_some() => Event::ServerWrote(wrote),
                wrote = client_write.write(to_client), if !to_client.is_empty() => {
                    Event::ClientWrote(wrote)
                }
                changed = routes.changed() => Event::Routes(changed.is_ok()),
            };
            match event {
                Event::ClientRead(read) => {
                    if read? == 0 {
                        return Ok(());
                    }
                }
                Event::ServerRead(read) => {
                    if read.map_err(lost)? == 0 {
                        return Err(lost(std::io::Error::other("it closed the connection")));
                    }
                }
                Event::ServerWrote(wrote) => {
                    let n = wrote.map_err(lost)?;
                    self.to_server.drain(..n);
                }
                Event::ClientWrote(wrote) => {
                    let n = wrote?;
                    self.to_client.drain(..n);
                }
                Event::Routes(true) => self.check_primary(pools)?,
                Event::Routes(false) => {
                    return Err(Fatal::new("57P01", "the pooler is shutting down"));
                }
            }
        }
    }

    /// A held connection whose primary is no longer the writer cannot go on: the lease
    /// that made it writable is gone.
    fn check_primary(&mut self, pools: &Pools) -> Result<(), Fatal> {
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        // A replica is not made writable by a lease; a reader whose routes changed serves
        // on until the connection goes back.
        if lease.pool.key.side == super::pool::Side::Reader {
            return Ok(());
        }
        let routes = pools.routes().borrow().clone();
        if routes.epoch.is_some() && routes.epoch != lease.server.epoch {
            let lease = self.lease.take().expect("checked");
            pools.release(lease, false);
            return Err(Fatal::new(
                "08006",
                "the primary changed during this transaction or session (a failover); \
                 whatever was not committed is lost, and a COMMIT in flight may or may not \
                 have happened: reconnect and check",
            ));
        }
        Ok(())
    }

    /// Handles the client's whole messages; `true` when it said Terminate.
    async fn handle_client(
        &mut self,
        client: &mut Client,
        pool: &Arc<Pool>,
        pools: &Pools,
    ) -> Result<bool, Fatal> {
        loop {
            let parsed = wire::parse_message(&client.buf, MAX_MESSAGE)
                .map_err(|_| Fatal::new("08P01", "invalid message length"))?;
            let Some((kind, _, len)) = parsed else {
                return Ok(false);
            };
            let raw = client.buf.split_to(len);
            let body = &raw[5..];
            if kind == b'X' {
                return Ok(true);
            }
            if self.discarding {
                if matches!(kind, b'S' | b'Q' | b'F') {
                    self.discarding = false;
                    self.to_client.extend(ready_for_query(b'I'));
                }
                continue;
            }
            if self.lease.is_none() {
                match pools.acquire(pool, &client.credentials).await {
                    Ok(mut lease) => {
                        let defaults = pools.defaults(pool);
                        lease.server.apply(&mut client.wants, &defaults).await?;
                        client.cancel.set(Some(&lease.server));
                        self.lease = Some(lease);
                    }
                    Err(fatal) => {
                        // This request fails; the session goes on.
                        let error = wire::error_response("ERROR", &fatal.code, &fatal.message);
                        self.to_client.extend(error);
                        if matches!(kind, b'S' | b'Q' | b'F') {
                            self.to_client.extend(ready_for_query(b'I'));
                        } else {
                            self.discarding = true;
                        }
                        continue;
                    }
                }
            }
            let server = &mut self.lease.as_mut().expect("acquired").server;
            statements::translate(
                kind,
                body,
                &raw,
                &mut self.statements,
                &mut server.statements,
                &mut self.tracker,
                &mut self.to_server,
            )?;
            for reply in self.tracker.replies() {
                self.to_client.extend(reply);
            }
        }
    }

    /// Handles the server's whole messages, and gives the connection back at the end of a
    /// transaction in transaction mode.
    async fn handle_server(&mut self, client: &mut Client, pools: &Pools) -> Result<(), Fatal> {
        let Some(lease) = &mut self.lease else {
            return Ok(());
        };
        let server = &mut lease.server;
        while let Some(frame) = server.next_frame().map_err(lost)? {
            let tag = frame[0];
            let outcome = self.tracker.received(tag);
            for name in outcome.unprepared {
                server.statements.remove(&name);
            }
            match tag {
                b'S' => {
                    if let Some((name, value)) = server.note_parameter(&frame[5..]) {
                        if let Some(name) = super::server::tracked(&name) {
                            client.wants.insert(name.to_owned(), value);
                        }
                    }
                }
                b'C' => server.note_command(&frame[5..]),
                b'Z' => self.status = frame.get(5).copied().unwrap_or(b'I'),
                _ => {}
            }
            if !outcome.swallow {
                self.to_client.extend_from_slice(&frame);
            }
            for reply in self.tracker.replies() {
                self.to_client.extend(reply);
            }
        }
        let transaction_over = self.status == b'I' && self.tracker.idle();
        if transaction_over && pools.limits.mode == Mode::Transaction && self.to_server.is_empty() {
            let mut lease = self.lease.take().expect("held");
            client.cancel.set(None);
            let reusable = lease.server.statements.len() <= MAX_SERVER_STATEMENTS
                && lease.server.reset().await.is_ok();
            pools.release(lease, reusable);
        }
        Ok(())
    }

    /// Gives the connection back if the client left it idle; closes it otherwise.
    async fn end(&mut self, pools: &Pools) {
        if let Some(mut lease) = self.lease.take() {
            let idle = self.status == b'I' && self.tracker.idle() && self.to_server.is_empty();
            // A session's state is the client's: reset it whatever the client ran.
            if pools.limits.mode == Mode::Session {
                lease.server.dirty = true;
            }
            let reusable = idle
                && lease.server.statements.len() <= MAX_SERVER_STATEMENTS
                && lease.server.reset().await.is_ok();
            pools.release(lease, reusable);
        }
    }
}

fn lost(e: std::io::Error) -> Fatal {
    Fatal::new(
        "08006",
        format!("lost the connection to the primary: {e}; a transaction open on it is lost"),
    )
}

/// ReadyForQuery with transaction status `status`.
pub fn ready_for_query(status: u8) -> Vec<u8> {
    vec![b'Z', 0, 0, 0, 5, status]
}
