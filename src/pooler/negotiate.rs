//! A client's first packets: TLS (an SSLRequest answered `S` and a handshake, when the
//! pooler has a certificate; `N` otherwise, as for GSSAPI encryption), a cancel request,
//! or the startup message, over TLS once it is on. Refusals here are told to the client on
//! the stream it is on.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::wire::{self, First, WireError};
use super::Fatal;

/// A client's connection: TCP, or TLS over it.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}
pub type Io = Box<dyn ClientIo>;

/// What the first packets asked for.
pub enum Negotiated {
    /// A startup message, on `Io`.
    Startup(Io, BTreeMap<String, String>),
    /// A cancel request with this key.
    Cancel { pid: u32, secret: u32 },
    /// The connection was refused or closed.
    Closed,
}

/// Reads from `stream` into `buf` until `parse` finds a whole item.
pub async fn read_until<S: AsyncRead + Unpin, T>(
    stream: &mut S,
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

/// Tells the client on `stream` that it is refused, with a FATAL error, and closes it.
pub async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, fatal: &Fatal) -> Negotiated {
    tracing::debug!(code = %fatal.code, message = %fatal.message, "pooler: client refused");
    let error = wire::error_response("FATAL", &fatal.code, &fatal.message);
    let _ = stream.write_all(&error).await;
    let _ = stream.shutdown().await;
    Negotiated::Closed
}

/// Reads the client's first packets from `tcp`; `tls` is what an SSLRequest gets.
pub async fn negotiate(
    mut tcp: TcpStream,
    buf: &mut BytesMut,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Negotiated {
    loop {
        let first = match read_until(&mut tcp, buf, wire::parse_first).await {
            Ok(first) => first,
            Err(fatal) => return refuse(&mut tcp, &fatal).await,
        };
        match (first, tls) {
            (First::SslRequest, Some(config)) => {
                // Bytes sent before the handshake would be taken as if they came over TLS
                // (CVE-2021-23214): PostgreSQL refuses them, and so does the pooler.
                if !buf.is_empty() {
                    let fatal = Fatal::new("08P01", "received unencrypted data after SSL request");
                    return refuse(&mut tcp, &fatal).await;
                }
                if tcp.write_all(b"S").await.is_err() {
                    return Negotiated::Closed;
                }
                let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                let mut stream = match acceptor.accept(tcp).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "pooler: TLS handshake failed");
                        return Negotiated::Closed;
                    }
                };
                return match read_until(&mut stream, buf, wire::parse_first).await {
                    Ok(First::Startup { parameters }) => {
                        Negotiated::Startup(Box::new(stream), parameters)
                    }
                    Ok(First::Cancel { pid, secret }) => Negotiated::Cancel { pid, secret },
                    Ok(_) => {
                        let fatal = Fatal::new("08P01", "unexpected encryption request over TLS");
                        refuse(&mut stream, &fatal).await
                    }
                    Err(fatal) => refuse(&mut stream, &fatal).await,
                };
            }
            (First::SslRequest | First::GssEncRequest, _) => {
                if tcp.write_all(b"N").await.is_err() {
                    return Negotiated::Closed;
                }
            }
            (First::Cancel { pid, secret }, _) => return Negotiated::Cancel { pid, secret },
            (First::Startup { parameters }, _) => {
                return Negotiated::Startup(Box::new(tcp), parameters)
            }
        }
    }
}
