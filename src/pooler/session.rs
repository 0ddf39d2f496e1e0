//! The pooled port's connections, so far in session mode without reuse: a client logs in
//! to the pooler with SCRAM-SHA-256 against its role's verifier (read from this member's
//! PostgreSQL, where roles replicate), the pooler logs in to the primary as that role with
//! the key the login yielded, and then relays the session. Every refusal is a PostgreSQL
//! ErrorResponse; nothing a client sends can panic the pooler or reach another client.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator as _;
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::scram::{self, KeyedClient, ServerExchange, Verifier};
use super::wire::{self, First, WireError};
use crate::postgres::Postgres;
use crate::proxy::Routes;

/// What the connections need.
pub struct Deps {
    pub postgres: Arc<Postgres>,
    /// The proxy's routing table: the writer is where sessions go.
    pub routes: watch::Receiver<Routes>,
    /// How long a client may take to log in.
    pub auth_timeout: Duration,
}

/// A reason to end a client's connection, told to it as a FATAL error.
#[derive(Debug)]
struct Fatal {
    code: &'static str,
    message: String,
}

impl Fatal {
    fn new(code: &'static str, message: impl Into<String>) -> Fatal {
        Fatal {
            code,
            message: message.into(),
        }
    }
}

impl From<WireError> for Fatal {
    fn from(e: WireError) -> Fatal {
        Fatal::new(e.code(), e.to_string())
    }
}

impl From<std::io::Error> for Fatal {
    fn from(e: std::io::Error) -> Fatal {
        Fatal::new("08006", format!("connection failure: {e}"))
    }
}

/// Serves one client until its session ends.
pub async fn serve(mut client: TcpStream, deps: Arc<Deps>) {
    let _ = client.set_nodelay(true);
    let mut from_client = BytesMut::with_capacity(8192);
    let login = tokio::time::timeout(
        deps.auth_timeout,
        log_in(&mut client, &mut from_client, &deps),
    )
    .await
    .unwrap_or_else(|_| {
        Err(Fatal::new(
            "08006",
            "canceling authentication due to timeout",
        ))
    });
    match login {
        Ok(Some((server, from_server))) => relay(client, from_client, server, from_server).await,
        Ok(None) => {}
        Err(fatal) => {
            tracing::debug!(code = fatal.code, message = %fatal.message, "pooler: client refused");
            let error = wire::error_response("FATAL", fatal.code, &fatal.message);
            let _ = client.write_all(&error).await;
            let _ = client.shutdown().await;
        }
    }
}

/// Reads from `stream` into `buf` until `parse` finds a whole item.
async fn read_until<T>(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    mut parse: impl FnMut(&[u8]) -> Result<Option<(T, usize)>, WireError>,
) -> Result<T, Fatal> {
    loop {
        if let Some((item, used)) = parse(&buf[..])? {
            let _ = buf.split_to(used);
            return Ok(item);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(Fatal::new("08006", "the client closed the connection"));
        }
    }
}

/// A SASL message from the client, of at most [`wire::MAX_SASL`] bytes.
async fn sasl_message(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Vec<u8>, Fatal> {
    let (kind, body) = read_until(stream, buf, |b| {
        Ok(wire::parse_message(b, wire::MAX_SASL)?.map(|(k, body, n)| ((k, body.to_vec()), n)))
    })
    .await?;
    match kind {
        b'p' => Ok(body),
        other => Err(WireError::Unexpected(char::from(other)).into()),
    }
}

/// The login: the client's startup and SCRAM exchange, then the pooler's own login to the
/// primary. `None` when the connection needs nothing more (a cancel request).
async fn log_in(
    client: &mut TcpStream,
    buf: &mut BytesMut,
    deps: &Deps,
) -> Result<Option<(TcpStream, BytesMut)>, Fatal> {
    let parameters = loop {
        match read_until(client, buf, wire::parse_first).await? {
            // TLS to clients is not built yet: libpq then goes on without it (sslmode=prefer).
            First::SslRequest | First::GssEncRequest => client.write_all(b"N").await?,
            First::Cancel { pid, secret } => {
                forward_cancel(deps, pid, secret).await;
                return Ok(None);
            }
            First::Startup { parameters } => break parameters,
        }
    };
    let user = parameters["user"].clone();
    let refused = || {
        Fatal::new(
            "28P01",
            format!("password authentication failed for user \"{user}\""),
        )
    };
    // A role that does not exist or has no SCRAM verifier goes through the same exchange
    // with a verifier nobody knows, so that the answer does not tell which it was.
    let stored = (deps.postgres.role_verifier(&user).await)
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
    let (server, from_server) = server_login(&parameters, client_key, &verifier, deps).await?;
    let mut reply = wire::auth_sasl_final(&server_final);
    reply.extend_from_slice(&wire::auth_ok());
    client.write_all(&reply).await?;
    Ok(Some((server, from_server)))
}

/// Passes a cancel request on to the primary. Sessions are relayed with the primary's own
/// BackendKeyData, so the key is the primary's; after a change of primary it matches
/// nothing there, which PostgreSQL ignores, as it does a wrong key.
async fn forward_cancel(deps: &Deps, pid: u32, secret: u32) {
    let Some(target) = deps.routes.borrow().writer.clone() else {
        return;
    };
    let send = async {
        let mut server = TcpStream::connect(target.addr.as_str()).await?;
        server.write_all(&wire::cancel_request(pid, secret)).await?;
        server.shutdown().await
    };
    match tokio::time::timeout(Duration::from_secs(5), send).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "pooler: passing a cancel request on"),
        Err(_) => tracing::warn!("pooler: passing a cancel request on timed out"),
    }
}

/// Logs in to the primary as the client's role with its ClientKey; returns the connection
/// and what it already sent after AuthenticationOk (parameters, key, ReadyForQuery).
async fn server_login(
    parameters: &std::collections::BTreeMap<String, String>,
    client_key: [u8; 32],
    verifier: &Verifier,
    deps: &Deps,
) -> Result<(TcpStream, BytesMut), Fatal> {
    let writer = deps.routes.borrow().writer.clone();
    let target = writer.ok_or_else(|| {
        Fatal::new(
            "57P03",
            "no primary: the cluster has no writable primary now (a failover?); retry",
        )
    })?;
    let unavailable =
        |e: std::io::Error| Fatal::new("08006", format!("connecting to the primary: {e}"));
    let mut server = (TcpStream::connect(target.addr.as_str()).await).map_err(unavailable)?;
    let _ = server.set_nodelay(true);
    let mut out = BytesMut::new();
    let pairs = parameters.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    frontend::startup_message(pairs, &mut out).map_err(unavailable)?;
    server.write_all(&out).await.map_err(unavailable)?;
    let mut keyed = KeyedClient::new(client_key, verifier.server_key, scram::nonce());
    let mut from_server = BytesMut::with_capacity(8192);
    loop {
        let message = loop {
            match backend::Message::parse(&mut from_server).map_err(unavailable)? {
                Some(message) => break message,
                None => {
                    if server
                        .read_buf(&mut from_server)
                        .await
                        .map_err(unavailable)?
                        == 0
                    {
                        return Err(Fatal::new("08006", "the primary closed the connection"));
                    }
                }
            }
        };
        out.clear();
        match message {
            backend::Message::AuthenticationOk => return Ok((server, from_server)),
            backend::Message::AuthenticationSasl(body) => {
                let mut mechanisms = body.mechanisms();
                let mut scram_offered = false;
                while let Some(m) = mechanisms.next().map_err(unavailable)? {
                    scram_offered |= m == "SCRAM-SHA-256";
                }
                if !scram_offered {
                    return Err(Fatal::new("28000", "the primary offers no SCRAM-SHA-256"));
                }
                let first = keyed.client_first();
                frontend::sasl_initial_response("SCRAM-SHA-256", first.as_bytes(), &mut out)
                    .map_err(unavailable)?;
            }
            backend::Message::AuthenticationSaslContinue(body) => {
                let server_first = String::from_utf8_lossy(body.data()).into_owned();
                let last = (keyed.client_final(&server_first))
                    .map_err(|e| Fatal::new("28000", format!("logging in to the primary: {e}")))?;
                frontend::sasl_response(last.as_bytes(), &mut out).map_err(unavailable)?;
            }
            backend::Message::AuthenticationSaslFinal(body) => {
                let server_final = String::from_utf8_lossy(body.data()).into_owned();
                keyed
                    .verify_server(&server_final)
                    .map_err(|e| Fatal::new("28000", format!("logging in to the primary: {e}")))?;
            }
            backend::Message::ErrorResponse(body) => {
                let mut fields = body.fields();
                let mut text = String::from("the primary refused the login");
                while let Some(field) = fields.next().map_err(unavailable)? {
                    if field.type_() == b'M' {
                        text = String::from_utf8_lossy(field.value_bytes()).into_owned();
                    }
                }
                return Err(Fatal::new("28000", text));
            }
            _ => {
                return Err(Fatal::new(
                    "28000",
                    "the primary asks for a password the pooler does not have: its pg_hba.conf \
                     must use scram-sha-256 for this role",
                ))
            }
        }
        server.write_all(&out).await.map_err(unavailable)?;
    }
}

/// Relays a logged-in session until either side closes, starting with what each side sent
/// ahead.
async fn relay(
    mut client: TcpStream,
    from_client: BytesMut,
    mut server: TcpStream,
    from_server: BytesMut,
) {
    if server.write_all(&from_client).await.is_err()
        || client.write_all(&from_server).await.is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}
