//! The server's side of the PostgreSQL protocol that the pooler speaks to its clients until
//! they are logged in: the first packet (an SSL or GSS request, a cancel request, or the
//! startup message), the client's SASL messages, and the backend messages it answers with.
//! postgres-protocol has the client's side (writing frontend, reading backend messages);
//! this is the other direction. Parsing is pure and bounded: a packet is refused, with a
//! PostgreSQL error, before it is buffered past PostgreSQL's own limit.

use std::collections::BTreeMap;

/// PostgreSQL's limit on the first packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP: usize = 10_000;
/// The longest SASL message a client may send.
pub const MAX_SASL: usize = 4_096;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
const PROTOCOL_3_0: u32 = 196_608;

/// The first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum First {
    /// Asks for TLS (answered `S` or `N`, then the startup message follows).
    SslRequest,
    /// Asks for GSSAPI encryption (answered `N`).
    GssEncRequest,
    /// Cancels the query of the session with this key.
    Cancel { pid: u32, secret: u32 },
    /// Protocol 3.0 with its parameters (`user`, `database`, `application_name`, options).
    Startup {
        parameters: BTreeMap<String, String>,
    },
}

/// Why a client's packet is refused; becomes a PostgreSQL error to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("invalid length of startup packet")]
    Length,
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    Protocol { major: u32, minor: u32 },
    #[error("invalid startup packet layout: expected terminator as last byte")]
    Layout,
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    /// PostgreSQL's wording, with the type byte as a number.
    #[error("expected SASL response, got message type {0}")]
    Unexpected(u8),
    #[error("invalid message length")]
    MessageLength,
    #[error("malformed SASL message")]
    Sasl,
    #[error("invalid message format")]
    Message,
    #[error("invalid frontend message type {0:?}")]
    Invalid(char),
}

impl WireError {
    /// The SQLSTATE PostgreSQL uses for it.
    pub fn code(&self) -> &'static str {
        match self {
            WireError::Protocol { .. } => "0A000",
            _ => "08P01",
        }
    }
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[..4].try_into().expect("four bytes"))
}

/// The first packet at the start of `buf`, and its length; `None` while more bytes are
/// needed.
pub fn parse_first(buf: &[u8]) -> Result<Option<(First, usize)>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = be32(buf) as usize;
    if !(8..=MAX_STARTUP).contains(&len) {
        return Err(WireError::Length);
    }
    if buf.len() < len {
        return Ok(None);
    }
    let code = be32(&buf[4..]);
    let body = &buf[8..len];
    let first = match code {
        SSL_REQUEST if len == 8 => First::SslRequest,
        GSSENC_REQUEST if len == 8 => First::GssEncRequest,
        CANCEL_REQUEST if len == 16 => First::Cancel {
            pid: be32(body),
            secret: be32(&body[4..]),
        },
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => return Err(WireError::Length),
        PROTOCOL_3_0 => First::Startup {
            parameters: parameters(body)?,
        },
        other => {
            return Err(WireError::Protocol {
                major: other >> 16,
                minor: other & 0xffff,
            })
        }
    };
    Ok(Some((first, len)))
}

/// `name\0value\0 ... \0`: the startup message's parameters; a user is required.
fn parameters(body: &[u8]) -> Result<BTreeMap<String, String>, WireError> {
    let Some((&0, fields)) = body.split_last() else {
        return Err(WireError::Layout);
    };
    let mut parameters = BTreeMap::new();
    let mut parts = fields.split(|b| *b == 0);
    while let Some(name) = parts.next() {
        if name.is_empty() {
            break;
        }
        let value = parts.next().ok_or(WireError::Layout)?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| WireError::Layout);
        parameters.insert(text(name)?, text(value)?);
    }
    if parameters.get("user").is_none_or(String::is_empty) {
        return Err(WireError::NoUser);
    }
    Ok(parameters)
}

/// A message read by [`parse_message`]: its type byte, body, and whole length.
pub type Message<'a> = (u8, &'a [u8], usize);

/// A regular message (type byte, length, body) at the start of `buf`; `None` while more
/// bytes are needed. `max` bounds the body.
pub fn parse_message(buf: &[u8], max: usize) -> Result<Option<Message<'_>>, WireError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = be32(&buf[1..]) as usize;
    if len < 4 || len - 4 > max {
        return Err(WireError::MessageLength);
    }
    if buf.len() < len + 1 {
        return Ok(None);
    }
    Ok(Some((buf[0], &buf[5..len + 1], len + 1)))
}

/// The client's SASLInitialResponse body: the mechanism and its first message.
pub fn sasl_initial(body: &[u8]) -> Result<(String, Vec<u8>), WireError> {
    let nul = body.iter().position(|b| *b == 0).ok_or(WireError::Sasl)?;
    let mechanism = String::from_utf8(body[..nul].to_vec()).map_err(|_| WireError::Sasl)?;
    let rest = &body[nul + 1..];
    if rest.len() < 4 {
        return Err(WireError::Sasl);
    }
    let len = i32::from_be_bytes(rest[..4].try_into().expect("four bytes"));
    let data = &rest[4..];
    if usize::try_from(len).ok() != Some(data.len()) {
        return Err(WireError::Sasl);
    }
    Ok((mechanism, data.to_vec()))
}

/// The CancelRequest packet for the session with this key, as a client sends it.
pub fn cancel_request(pid: u32, secret: u32) -> Vec<u8> {
    let mut out = 16u32.to_be_bytes().to_vec();
    for word in [CANCEL_REQUEST, pid, secret] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out
}

/// One backend message: type byte, length, body.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(kind);
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn authentication(code: u32, data: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(data);
    message(b'R', &body)
}

/// AuthenticationSASL offering SCRAM-SHA-256.
pub fn auth_sasl() -> Vec<u8> {
    authentication(10, b"SCRAM-SHA-256\0\0")
}

/// AuthenticationSASLContinue with the server-first message.
pub fn auth_sasl_continue(data: &str) -> Vec<u8> {
    authentication(11, data.as_bytes())
}

/// AuthenticationSASLFinal with the server-final message.
pub fn auth_sasl_final(data: &str) -> Vec<u8> {
    authentication(12, data.as_bytes())
}

/// AuthenticationOk.
pub fn auth_ok() -> Vec<u8> {
    authentication(0, b"")
}

/// ParameterStatus: a session parameter's value.
pub fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    message(b'S', format!("{name}\0{value}\0").as_bytes())
}

/// BackendKeyData: the key a client cancels its queries with.
pub fn backend_key_data(pid: u32, secret: u32) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    body.extend_from_slice(&secret.to_be_bytes());
    message(b'K', &body)
}

/// An ErrorResponse (severity FATAL or ERROR) with SQLSTATE `code`, as PostgreSQL sends it.
pub fn error_response(severity: &str, code: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', text),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(b'E', &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u32, body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn first_packets_are_read_or_refused_as_postgresql_does() {
        let startup = packet(PROTOCOL_3_0, b"user\0app\0database\0shop\0\0");
        let got = parse_first(&startup).unwrap().unwrap();
        assert_eq!(got.1, startup.len());
        let First::Startup { parameters } = got.0 else {
            panic!("{got:?}")
        };
        assert_eq!(parameters["user"], "app");
        assert_eq!(parameters["database"], "shop");
        let cancel = packet(CANCEL_REQUEST, &[0, 0, 0, 7, 0, 0, 0, 9]);
        assert_eq!(cancel_request(7, 9), cancel);
        type Want = Result<Option<First>, WireError>;
        let cases: Vec<(Vec<u8>, Want)> = vec![
            (packet(SSL_REQUEST, b""), Ok(Some(First::SslRequest))),
            (packet(GSSENC_REQUEST, b""), Ok(Some(First::GssEncRequest))),
            (
                cancel.clone(),
                Ok(Some(First::Cancel { pid: 7, secret: 9 })),
            ),
            (cancel[..10].to_vec(), Ok(None)),
            (startup[..3].to_vec(), Ok(None)),
            (b"GET / HTTP/1.1\r\n\r\n".to_vec(), Err(WireError::Length)),
            (vec![0, 0, 0, 4], Err(WireError::Length)),
            (vec![0, 1, 0, 0, 0, 3, 0, 0], Err(WireError::Length)),
            (packet(SSL_REQUEST, b"xx"), Err(WireError::Length)),
            (
                packet(0x0002_0000, b"user\0a\0\0"),
                Err(WireError::Protocol { major: 2, minor: 0 }),
            ),
            (packet(PROTOCOL_3_0, b"user\0app"), Err(WireError::Layout)),
            (packet(PROTOCOL_3_0, b"user\0\0"), Err(WireError::NoUser)),
            (
                packet(PROTOCOL_3_0, b"database\0shop\0\0"),
                Err(WireError::NoUser),
            ),
            (
                packet(PROTOCOL_3_0, b"user\0\xff\0\0"),
                Err(WireError::Layout),
            ),
        ];
        for (bytes, want) in cases {
            let got = parse_first(&bytes).map(|o| o.map(|(first, _)| first));
            assert_eq!(got, want, "{bytes:?}");
        }
    }

    #[test]
    fn sasl_messages_are_bounded_and_checked() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&9i32.to_be_bytes());
        body.extend_from_slice(b"n,,n=,r=x");
        assert_eq!(
            sasl_initial(&body).unwrap(),
            ("SCRAM-SHA-256".to_string(), b"n,,n=,r=x".to_vec())
        );
        assert_eq!(sasl_initial(&body[..body.len() - 1]), Err(WireError::Sasl));
        assert_eq!(sasl_initial(b"SCRAM"), Err(WireError::Sasl));
        let msg = message(b'p', b"hello");
        assert_eq!(
            parse_message(&msg, 16).unwrap(),
            Some((b'p', &b"hello"[..], msg.len()))
        );
        assert_eq!(parse_message(&msg[..6], 16).unwrap(), None);
        assert_eq!(parse_message(&msg, 4), Err(WireError::MessageLength));
        assert_eq!(
            parse_message(&[b'p', 0, 0, 0, 2], 16),
            Err(WireError::MessageLength)
        );
    }

    #[test]
    fn backend_messages_have_postgresqls_framing() {
        assert_eq!(auth_ok(), vec![b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
        let sasl = auth_sasl();
        assert_eq!(&sasl[..9], &[b'R', 0, 0, 0, 23, 0, 0, 0, 10]);
        assert!(sasl.ends_with(b"SCRAM-SHA-256\0\0"));
        let error = error_response("FATAL", "28P01", "password authentication failed");
        assert_eq!(error[0], b'E');
        assert_eq!(be32(&error[1..]) as usize, error.len() - 1);
        assert!(error.ends_with(b"Mpassword authentication failed\0\0"));
    }
}
