//! The CLI's client of the local daemon's REST API.

use std::sync::Arc;

use anyhow::{anyhow, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use rustls_pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::secret::Secret;

/// How long the CLI waits for the daemon's answer. Every command the API runs is bounded
/// well below this (a Raft proposal by `propose_timeout`, 10 s at most); a daemon that does
/// not answer at all is frozen or overloaded, and the operator should hear so.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Talks to one daemon's API at `host:port`, over HTTPS when given a TLS configuration
/// (which trusts the cluster CA and checks that `host` is in the API's certificate).
pub struct Client {
    addr: String,
    base: String,
    admin_token: Option<Secret<String>>,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Client {
    pub fn new(
        addr: &str,
        admin_token: Option<Secret<String>>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> anyhow::Result<Self> {
        let tls = match tls {
            Some(config) => {
                let host = crate::net::host_of(addr);
                let name = ServerName::try_from(host.to_string()).with_context(|| {
                    format!("{host:?} ([api] advertise) is neither an IP address nor a DNS name")
                })?;
                Some((tokio_rustls::TlsConnector::from(config), name))
            }
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Self {
            addr: addr.to_string(),
            base: format!("{scheme}://{addr}"),
            admin_token,
            tls,
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.admin_token {
            request = request.header("authorization", format!("Bearer {}", token.expose()));
        }
        let body = match body {
            Some(b) => {
                request = request.header("content-type", "application/json");
                Full::new(Bytes::from(serde_json::to_vec(b)?))
            }
            None => Full::new(Bytes::new()),
        };
        let exchange = async {
            let response = self.send(request.body(body)?).await.with_context(|| {
                format!(
                    "{method} {}{path}: is the daemon running (`pgquorum run`)?",
                    self.base
                )
            })?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                anyhow!(
                    "{method} {}{path}: the daemon did not answer within {ANSWER_TIMEOUT:?}; it \
                     runs but is stuck or overloaded (check its log, e.g. `journalctl -u \
                     pgquorum`)",
                    self.base
                )
            })??;
        if status != StatusCode::OK {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(anyhow!("{message}"));
        }
        serde_json::from_slice(&bytes).with_context(|| format!("decoding the answer of {path}"))
    }

    /// Sends `request` over a fresh connection (a CLI call makes one or two).
    async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .context("TLS with the API (it must present a certificate of the cluster CA naming this address)")?;
                exchange(tls, request).await
            }
            None => exchange(tcp, request).await,
        }
    }
}

async fn exchange<I>(
    io: I,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(connection);
    Ok(sender.send_request(request).await?)
}
