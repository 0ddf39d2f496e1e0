//! A pooled connection to the primary: the pooler's login to it as a client's role (with
//! the ClientKey that client's SCRAM login yielded), the messages it sends, the session
//! parameters it reports, and the statements prepared on it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator as _;
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::scram::{self, KeyedClient, Verifier};
use super::Fatal;
use crate::cluster::Epoch;
use crate::proxy::Target;

/// Session parameters the pooler keeps as each client set them, on whichever connection
/// runs its transaction: those PostgreSQL reports (ParameterStatus), and `extra_float_digits`,
/// which JDBC sets at login and PostgreSQL does not report.
pub const TRACKED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "extra_float_digits",
];

/// Tracked parameters PostgreSQL does not report: the pooler knows their value on a
/// connection only from its own SET.
const UNREPORTED: &[&str] = &["extra_float_digits"];

/// How long a statement the pooler runs itself (SET, DISCARD ALL) may take.
const OWN_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A logged-in connection to the primary.
pub struct Server {
    pub stream: TcpStream,
    /// Bytes read and not yet handled.
    pub buf: BytesMut,
    pub target: Target,
    /// The lease epoch of the primary it was opened to.
    pub epoch: Option<Epoch>,
    /// Its BackendKeyData (pid, secret), for cancel requests.
    pub key: (u32, u32),
    /// Parameter values as reported, and tracked unreported ones as the pooler set them.
    pub params: HashMap<String, String>,
    /// The pooler's statement names prepared on it.
    pub statements: HashSet<String>,
    /// Since it went back to the pool.
    pub idle_since: Instant,
    /// A client changed session state (SET, LISTEN, temporary objects ...): reset it with
    /// DISCARD ALL before another client gets it.
    pub dirty: bool,
}

/// The canonical name of a tracked parameter (startup parameter names are case-blind).
pub fn tracked(name: &str) -> Option<&'static str> {
    TRACKED
        .iter()
        .copied()
        .find(|t| t.eq_ignore_ascii_case(name))
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The NUL-terminated strings of a message body.
pub fn cstrings(body: &[u8]) -> Vec<String> {
    body.split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

impl Server {
    /// Logs in to `target` as `user` on `database` with `client_key`; waits until it is
    /// ready for queries.
    pub async fn connect(
        target: Target,
        epoch: Option<Epoch>,
        user: &str,
        database: &str,
        client_key: [u8; 32],
        verifier: &Verifier,
    ) -> Result<Server, Fatal> {
        let unavailable =
            |e: std::io::Error| Fatal::new("08006", format!("connecting to the primary: {e}"));
        let mut stream = (TcpStream::connect(target.addr.as_str()).await).map_err(unavailable)?;
        let _ = stream.set_nodelay(true);
        let mut out = BytesMut::new();
        let pairs = [("user", user), ("database", database)];
        frontend::startup_message(pairs, &mut out).map_err(unavailable)?;
        stream.write_all(&out).await.map_err(unavailable)?;
        let mut server = Server {
            stream,
            buf: BytesMut::with_capacity(8192),
            target,
            epoch,
            key: (0, 0),
            params: HashMap::new(),
            statements: HashSet::new(),
            idle_since: Instant::now(),
            dirty: false,
        };
        let mut keyed = KeyedClient::new(client_key, verifier.server_key, scram::nonce());
        loop {
            let Some(frame) = server.frame().await.map_err(unavailable)? else {
                return Err(Fatal::new("08006", "the primary closed the connection"));
            };
            out.clear();
            let message = backend::Message::parse(&mut frame.clone())
                .map_err(unavailable)?
                .ok_or_else(|| Fatal::new("08P01", "a truncated message from the primary"))?;
            match message {
                backend::Message::AuthenticationOk => {}
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
                    let last = (keyed.client_final(&server_first)).map_err(|e| {
                        Fatal::new("28000", format!("logging in to the primary: {e}"))
                    })?;
                    frontend::sasl_response(last.as_bytes(), &mut out).map_err(unavailable)?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    let server_final = String::from_utf8_lossy(body.data()).into_owned();
                    keyed.verify_server(&server_final).map_err(|e| {
                        Fatal::new("28000", format!("logging in to the primary: {e}"))
                    })?;
                }
                backend::Message::BackendKeyData(body) => {
                    server.key = (body.process_id() as u32, body.secret_key() as u32);
                }
                backend::Message::ParameterStatus(_) => {
                    server.note_parameter(&frame[5..]);
                }
                backend::Message::ReadyForQuery(_) => return Ok(server),
                backend::Message::NoticeResponse(_) => {}
                backend::Message::ErrorResponse(body) => {
                    let mut fields = body.fields();
                    let mut text = String::from("the primary refused the login");
                    let mut code = String::from("28000");
                    while let Some(field) = fields.next().map_err(unavailable)? {
                        match field.type_() {
                            b'M' => text = String::from_utf8_lossy(field.value_bytes()).into(),
                            b'C' => code = String::from_utf8_lossy(field.value_bytes()).into(),
                            _ => {}
                        }
                    }
                    return Err(Fatal::owned(code, text));
                }
                _ => {
                    return Err(Fatal::new(
                        "28000",
                        "the primary asks for a password the pooler does not have: its \
                         pg_hba.conf must use scram-sha-256 for this role",
                    ))
                }
            }
            if !out.is_empty() {
                server.stream.write_all(&out).await.map_err(unavailable)?;
            }
        }
    }

    /// The next whole message already read, if any.
    pub fn next_frame(&mut self) -> std::io::Result<Option<BytesMut>> {
        // A header is there as soon as its five bytes are; the message may not be.
        let Some(header) = backend::Header::parse(&self.buf)? else {
            return Ok(None);
        };
        let len = header.len() as usize + 1;
        Ok((self.buf.len() >= len).then(|| self.buf.split_to(len)))
    }

    /// Reads until a whole message is there; `None` when the server closed.
    async fn frame(&mut self) -> std::io::Result<Option<BytesMut>> {
        loop {
            if let Some(frame) = self.next_frame()? {
                return Ok(Some(frame));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Records a ParameterStatus body; returns the name and value.
    pub fn note_parameter(&mut self, body: &[u8]) -> Option<(String, String)> {
        let mut parts = cstrings(body).into_iter();
        let (name, value) = (parts.next()?, parts.next()?);
        self.params.insert(name.clone(), value.clone());
        Some((name, value))
    }

    /// Notes a CommandComplete tag: whether it changed session state other clients must not
    /// inherit, or dropped the connection's prepared statements.
    pub fn note_command(&mut self, body: &[u8]) {
        let tag = cstrings(body).into_iter().next().unwrap_or_default();
        if tag == "DISCARD ALL" || tag == "DEALLOCATE ALL" {
            self.statements.clear();
        }
        if changes_session(&tag) {
            self.dirty = true;
        }
    }

    /// Runs `sql` (no rows expected) and reads up to ReadyForQuery, recording reported
    /// parameters; the server's message when it fails.
    pub async fn run(&mut self, sql: &str) -> Result<(), Fatal> {
        let run = async {
            let mut out = BytesMut::new();
            frontend::query(sql, &mut out)?;
            self.stream.write_all(&out).await?;
            let mut failure = None;
            loop {
                let Some(frame) = self.frame().await? else {
                    return Err(std::io::Error::other("the primary closed the connection"));
                };
                match frame[0] {
                    b'S' => {
                        self.note_parameter(&frame[5..]);
                    }
                    b'E' => failure = Some(error_text(&frame[5..])),
                    b'Z' => return Ok(failure),
                    _ => {}
                }
            }
        };
        match tokio::time::timeout(OWN_STATEMENT_TIMEOUT, run).await {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some((code, text)))) => Err(Fatal::owned(code, text)),
            Ok(Err(e)) => Err(Fatal::new("08006", format!("the primary: {e}"))),
            Err(_) => Err(Fatal::new(
                "08006",
                format!("the primary did not answer {sql}"),
            )),
        }
    }

    /// Sets this connection's tracked parameters to what the client wants (`wants`, else
    /// `defaults`: the values a fresh connection reports), in one statement. Afterwards
    /// `wants` holds the values as the server spells them.
    pub async fn apply(
        &mut self,
        wants: &mut BTreeMap<String, String>,
        defaults: &HashMap<String, String>,
    ) -> Result<(), Fatal> {
        let mut sql = String::new();
        let mut unreported = Vec::new();
        for name in TRACKED {
            let want = wants.get(*name).or_else(|| defaults.get(*name));
            if want == self.params.get(*name) {
                continue;
            }
            match want {
                Some(value) => sql.push_str(&format!("SET \"{name}\" TO {};", quote(value))),
                None => sql.push_str(&format!("RESET \"{name}\";")),
            }
            if UNREPORTED.contains(name) {
                unreported.push((*name, want.cloned()));
            }
        }
        if sql.is_empty() {
            return Ok(());
        }
        self.run(&sql).await?;
        for (name, value) in unreported {
            match value {
                Some(v) => self.params.insert(name.to_owned(), v),
                None => self.params.remove(name),
            };
        }
        for name in TRACKED {
            if let (Some(want), Some(have)) = (wants.get_mut(*name), self.params.get(*name)) {
                want.clone_from(have);
            }
        }
        Ok(())
    }

    /// DISCARD ALL, when a client left session state; then it may serve another client.
    pub async fn reset(&mut self) -> Result<(), Fatal> {
        if self.dirty {
            self.run("DISCARD ALL").await?;
            for name in UNREPORTED {
                self.params.remove(*name);
            }
            self.statements.clear();
            self.dirty = false;
        }
        Ok(())
    }
}

/// Whether a command with this CommandComplete tag may leave session state behind (a
/// setting, a listener, a cursor or temporary object, a prepared statement). Also true of
/// `SET LOCAL` and of ordinary DDL, which costs only a reset.
pub fn changes_session(tag: &str) -> bool {
    const SESSION: &[&str] = &[
        "SET",
        "RESET",
        "LISTEN",
        "PREPARE",
        "DECLARE CURSOR",
        "CREATE TABLE",
        "CREATE SEQUENCE",
        "CREATE VIEW",
        "DISCARD",
        "DEALLOCATE",
        "LOAD",
    ];
    SESSION.iter().any(|s| {
        tag == *s
            || tag
                .strip_prefix(s)
                .is_some_and(|rest| rest.starts_with(' '))
    })
}

/// The SQLSTATE and message of an ErrorResponse body.
pub fn error_text(body: &[u8]) -> (String, String) {
    let mut code = String::from("XX000");
    let mut text = String::new();
    for field in body.split(|b| *b == 0) {
        match field.split_first() {
            Some((b'C', v)) => code = String::from_utf8_lossy(v).into_owned(),
            Some((b'M', v)) => text = String::from_utf8_lossy(v).into_owned(),
            _ => {}
        }
    }
    (code, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_changing_commands_mark_the_connection_for_a_reset() {
        for (tag, dirty) in [
            ("SET", true),
            ("RESET", true),
            ("LISTEN", true),
            ("CREATE TABLE", true),
            ("DECLARE CURSOR", true),
            ("SELECT 1", false),
            ("INSERT 0 1", false),
            ("COMMIT", false),
            ("SETTLE", false),
        ] {
            assert_eq!(changes_session(tag), dirty, "{tag}");
        }
        assert_eq!(tracked("datestyle"), Some("DateStyle"));
        assert_eq!(tracked("search_path"), None);
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(
            error_text(b"SERROR\0C42P01\0Mno such table\0\0"),
            ("42P01".into(), "no such table".into())
        );
    }
}
