//! Named prepared statements in transaction mode, as PgBouncer 1.21 keeps them: a client's
//! statements live in the pooler, and whichever server connection runs its transaction
//! gets them prepared under a name of the pooler's, derived from the statement's text and
//! parameter types (SHA-256), so connections share them between clients.
//!
//! [`translate`] turns one frontend message into what the server connection is sent, and
//! records in the [`Tracker`] what it owes; pure, so that its table tests need no server.

use std::collections::{HashMap, HashSet};

use ring::digest;

use super::track::{Expect, Tracker};
use super::wire::WireError;

/// CloseComplete, made up for a Close of a client's statement.
const CLOSE_COMPLETE: &[u8] = b"3\0\0\0\x04";
/// ParseComplete, made up for a statement the connection already has.
const PARSE_COMPLETE: &[u8] = b"1\0\0\0\x04";

/// Statements a server connection holds past one client's transaction: more, and it is
/// closed instead of going back to the pool.
pub const MAX_SERVER_STATEMENTS: usize = 1_000;

/// A client's named statement: the server's name for it and the Parse body after the name
/// (query text, parameter types).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    server_name: String,
    definition: Vec<u8>,
}

/// One client's named statements, by the client's name.
#[derive(Debug, Default)]
pub struct ClientStatements {
    by_name: HashMap<String, Statement>,
}

impl ClientStatements {
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// A NUL-terminated string at the start of `body`, and the rest.
fn cstr(body: &[u8]) -> Result<(&str, &[u8]), WireError> {
    let nul = body
        .iter()
        .position(|b| *b == 0)
        .ok_or(WireError::Message)?;
    let text = std::str::from_utf8(&body[..nul]).map_err(|_| WireError::Message)?;
    Ok((text, &body[nul + 1..]))
}

fn frame(kind: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum::<usize>() + 4;
    let mut out = Vec::with_capacity(len + 1);
    out.push(kind);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// The server's name for a statement with this definition (query text and types).
fn server_name(definition: &[u8]) -> String {
    let hash = digest::digest(&digest::SHA256, definition);
    format!("pgq_{}", hex::encode(&hash.as_ref()[..16]))
}

/// Appends to `out` a Parse of `statement` under its server name, unless the connection
/// has it.
fn ensure(
    statement: &Statement,
    server: &mut HashSet<String>,
    tracker: &mut Tracker,
    out: &mut Vec<u8>,
) {
    if server.insert(statement.server_name.clone()) {
        let name = format!("{}\0", statement.server_name);
        out.extend(frame(b'P', &[name.as_bytes(), &statement.definition]));
        tracker.sent(Expect::Parse {
            statement: Some(statement.server_name.clone()),
            swallow: true,
        });
    }
}

/// Translates the client's message `kind`/`body` (its whole frame `raw`) for the server
/// connection whose statements are `server`: appends what to send to `out` and records
/// what is owed in `tracker`. `Terminate` and messages outside a session are the caller's.
pub fn translate(
    kind: u8,
    body: &[u8],
    raw: &[u8],
    client: &mut ClientStatements,
    server: &mut HashSet<String>,
    tracker: &mut Tracker,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    match kind {
        b'P' => {
            let (name, definition) = cstr(body)?;
            if name.is_empty() {
                out.extend_from_slice(raw);
                tracker.sent(Expect::Parse {
                    statement: None,
                    swallow: false,
                });
                return Ok(());
            }
            let statement = Statement {
                server_name: server_name(definition),
                definition: definition.to_vec(),
            };
            if server.insert(statement.server_name.clone()) {
                let name = format!("{}\0", statement.server_name);
                out.extend(frame(b'P', &[name.as_bytes(), definition]));
                tracker.sent(Expect::Parse {
                    statement: Some(statement.server_name.clone()),
                    swallow: false,
                });
            } else {
                tracker.sent(Expect::Reply(PARSE_COMPLETE.to_vec()));
            }
            client.by_name.insert(name.to_owned(), statement);
        }
        b'B' => {
            let (portal, rest) = cstr(body)?;
            let (name, rest) = cstr(rest)?;
            match client.by_name.get(name) {
                // The unnamed statement, or one the client never prepared: as sent (the
                // server says it does not exist, as it would have).
                None => out.extend_from_slice(raw),
                Some(statement) => {
                    ensure(statement, server, tracker, out);
                    let names = format!("{portal}\0{}\0", statement.server_name);
                    out.extend(frame(b'B', &[names.as_bytes(), rest]));
                }
            }
            tracker.sent(Expect::Bind);
        }
        b'D' | b'C' => {
            let (&what, rest) = body.split_first().ok_or(WireError::Message)?;
            let (name, _) = cstr(rest)?;
            match (what, kind) {
                (b'S', b'C') if !name.is_empty() => {
                    // Closing a client's statement only forgets it: the connection's copy
                    // may serve other clients. PostgreSQL answers CloseComplete for a
                    // name it does not know, too.
                    client.by_name.remove(name);
                    tracker.sent(Expect::Reply(CLOSE_COMPLETE.to_vec()));
                    return Ok(());
                }
                (b'S', _) => {
                    match client.by_name.get(name) {
                        Some(statement) => {
                            ensure(statement, server, tracker, out);
                            let renamed = format!("S{}\0", statement.server_name);
                            out.extend(frame(b'D', &[renamed.as_bytes()]));
                        }
                        None => out.extend_from_slice(raw),
                    }
                    tracker.sent(Expect::DescribeStatement);
                }
                (b'P', b'D') => {
                    out.extend_from_slice(raw);
                    tracker.sent(Expect::DescribePortal);
                }
                (b'P', _) => {
                    out.extend_from_slice(raw);
                    tracker.sent(Expect::Close);
                }
                _ => return Err(WireError::Message),
            }
        }
        b'E' => {
            out.extend_from_slice(raw);
            tracker.sent(Expect::Execute);
        }
        b'S' => {
            out.extend_from_slice(raw);
            tracker.sent(Expect::Sync);
        }
        b'Q' | b'F' => {
            out.extend_from_slice(raw);
            tracker.sent(Expect::Query);
        }
        b'H' => {
            out.extend_from_slice(raw);
            tracker.sent_unanswered();
        }
        // COPY data from the client, answered by the Query or Execute that started it.
        b'd' | b'c' | b'f' => out.extend_from_slice(raw),
        other => return Err(WireError::Invalid(char::from(other))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
        frame(kind, &[body])
    }

    fn parse_msg(name: &str, query: &str) -> Vec<u8> {
        msg(b'P', format!("{name}\0{query}\0\0\0").as_bytes())
    }

    fn bind_msg(statement: &str) -> Vec<u8> {
        msg(b'B', format!("\0{statement}\0\0\0\0\0\0\0").as_bytes())
    }

    /// Translates `messages` for one connection; returns the kinds sent to the server, with
    /// statement names as the server sees them, and the replies due so far.
    fn send(
        messages: &[Vec<u8>],
        client: &mut ClientStatements,
        server: &mut HashSet<String>,
    ) -> (Vec<String>, usize) {
        let mut tracker = Tracker::default();
        let mut out = Vec::new();
        let mut replies = 0;
        for m in messages {
            translate(m[0], &m[5..], m, client, server, &mut tracker, &mut out).unwrap();
            replies += tracker.replies().len();
        }
        let mut sent = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
            let body = &rest[5..len + 1];
            let shown = match rest[0] {
                b'P' | b'D' | b'C' => {
                    let (n, _) = cstr(body).unwrap_or(("?", &[]));
                    format!("{}:{}", char::from(rest[0]), n)
                }
                b'B' => {
                    let (_, r) = cstr(body).unwrap();
                    format!("B:{}", cstr(r).unwrap().0)
                }
                k => char::from(k).to_string(),
            };
            sent.push(shown);
            rest = &rest[len + 1..];
        }
        (sent, replies)
    }

    #[test]
    fn a_clients_statements_follow_it_to_any_connection() {
        let one = server_name(b"select $1\0\0\0");
        let two = server_name(b"select 2\0\0\0");
        let mut client = ClientStatements::default();
        let mut a = HashSet::new();
        let mut b = HashSet::new();
        let sync = msg(b'S', b"");
        let execute = msg(b'E', b"\0\0\0\0\0");

        // Prepared on connection a under the server's name.
        let (sent, replies) = send(
            &[
                parse_msg("s1", "select $1"),
                bind_msg("s1"),
                execute.clone(),
                sync.clone(),
            ],
            &mut client,
            &mut a,
        );
        assert_eq!(
            sent,
            [
                format!("P:{one}"),
                format!("B:{one}"),
                "E".into(),
                "S".into()
            ]
        );
        assert_eq!(replies, 0);

        // The next transaction runs on b: the statement is prepared there first.
        let (sent, _) = send(
            &[bind_msg("s1"), execute.clone(), sync.clone()],
            &mut client,
            &mut b,
        );
        assert_eq!(
            sent,
            [
                format!("P:{one}"),
                format!("B:{one}"),
                "E".into(),
                "S".into()
            ]
        );

        // Another client preparing the same text on a gets a made-up ParseComplete.
        let mut other = ClientStatements::default();
        let (sent, replies) = send(
            &[parse_msg("x", "select $1"), bind_msg("x"), sync.clone()],
            &mut other,
            &mut a,
        );
        assert_eq!(sent, [format!("B:{one}"), "S".into()]);
        assert_eq!(replies, 1);

        // Describe is renamed; a Close only forgets the client's name; unnamed ones pass.
        let describe = msg(b'D', b"Ss1\0");
        let close = msg(b'C', b"Ss1\0");
        let (sent, replies) = send(
            &[
                describe,
                close,
                parse_msg("", "select 2"),
                bind_msg(""),
                sync.clone(),
            ],
            &mut client,
            &mut a,
        );
        assert_eq!(
            sent,
            [format!("D:S{one}"), "P:".into(), "B:".into(), "S".into()]
        );
        assert_eq!(
            replies, 0,
            "the CloseComplete waits for the Describe's answers"
        );
        assert!(client.is_empty());
        assert!(!a.contains(&two));

        // A statement the client never prepared goes as sent, for the server to refuse.
        let (sent, _) = send(&[bind_msg("nope"), sync], &mut client, &mut a);
        assert_eq!(sent, ["B:nope", "S"]);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let mut client = ClientStatements::default();
        let mut server = HashSet::new();
        let mut tracker = Tracker::default();
        let mut out = Vec::new();
        for (kind, body) in [
            (b'P', &b"no terminator"[..]),
            (b'B', b"\0"),
            (b'D', b""),
            (b'D', b"Xname\0"),
            (b'C', b"S"),
            (b'p', b"password\0"),
            (b'z', b""),
        ] {
            let raw = msg(kind, body);
            let got = translate(
                kind,
                body,
                &raw,
                &mut client,
                &mut server,
                &mut tracker,
                &mut out,
            );
            assert!(got.is_err(), "{}: {body:?}", char::from(kind));
        }
    }
}
