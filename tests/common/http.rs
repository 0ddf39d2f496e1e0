//! The harness's HTTP client of a node's REST API: HTTPS with the node's cluster CA (as
//! the CLI does), or plain HTTP for a node configured with `[api] tls = false`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How the harness speaks to one node's API, from its config file and state directory:
/// `None` for plain HTTP, else a TLS client that trusts the node's CAs (both during a CA
/// rotation) and presents the node's own certificate when the API verifies clients.
pub fn api_tls(
    config_path: &Path,
    state_dir: &Path,
) -> std::io::Result<Option<Arc<rustls::ClientConfig>>> {
    let text = std::fs::read_to_string(config_path)?;
    let config: toml::Table = toml::from_str(&text).map_err(other)?;
    let api = config.get("api").and_then(|a| a.as_table());
    let setting = |key: &str| api.and_then(|a| a.get(key));
    if setting("tls").and_then(|t| t.as_bool()) == Some(false) {
        return Ok(None);
    }
    let ca = pgquorum::ca_rotation::trusted_pem_in(state_dir)?;
    let identity = match setting("verify_client").and_then(|v| v.as_str()) {
        None | Some("none") => None,
        Some(_) => Some(pgquorum::tls::NodeIdentity::load(state_dir).map_err(other)?),
    };
    let client = identity.as_ref().map(|id| (id.cert_pem(), id.key_pem()));
    pgquorum::tls::api_client_config(&ca, client)
        .map(Some)
        .map_err(other)
}

fn other(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Sends `request` as it is to `addr` (over TLS with `tls`, checking that the certificate
/// names `addr`'s IP) and returns all that came back until the server closed.
pub fn exchange(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    request: &[u8],
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    match tls {
        None => send(stream, request),
        Some(config) => {
            let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
            let connection = rustls::ClientConnection::new(config, name).map_err(other)?;
            send(rustls::StreamOwned::new(connection, stream), request)
        }
    }
}

fn send(mut stream: impl Read + Write, request: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(request)?;
    stream.flush()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(reply),
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            // A server that closes without TLS's close_notify, or resets, after answering.
            Err(e)
                if !reply.is_empty()
                    && matches!(
                        e.kind(),
                        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                    ) =>
            {
                return Ok(reply)
            }
            Err(e) => return Err(e),
        }
    }
}

/// A minimal HTTP/1.1 request without a body over a fresh connection: (status, body). The
/// body is everything after the headers until the server closes the connection.
pub fn request(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let reply = exchange(addr, tls, head.as_bytes(), Duration::from_secs(2))?;
    let response = String::from_utf8_lossy(&reply);
    let invalid = |what: &str| std::io::Error::new(ErrorKind::InvalidData, what.to_string());
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("no status"))?;
    Ok((status, body.to_string()))
}
