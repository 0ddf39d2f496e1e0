//! The CLI's client of the local daemon's REST API.

use anyhow::{anyhow, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::secret::Secret;

/// How long the CLI waits for the daemon's answer. Every command the API runs is bounded
/// well below this (a Raft proposal by `propose_timeout`, 10 s at most); a daemon that does
/// not answer at all is frozen or overloaded, and the operator should hear so.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Talks to one daemon's API at `host:port`.
pub struct Client {
    base: String,
    admin_token: Option<Secret<String>>,
    http: HyperClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Client {
    pub fn new(addr: &str, admin_token: Option<Secret<String>>) -> Self {
        let http = HyperClient::builder(TokioExecutor::new()).build_http();
        Self {
            base: format!("http://{addr}"),
            admin_token,
            http,
        }
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
            let response = self
                .http
                .request(request.body(body)?)
                .await
                .with_context(|| {
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
}
