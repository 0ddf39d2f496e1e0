//! The REST API (port 8008): the cluster view and health endpoints, open; and admin
//! endpoints that change the cluster, which need `Authorization: Bearer <admin token>` (the
//! token is in the node's state directory, readable only by the daemon's user).
//!
//! Read-only handlers ([`read`]) serve this node's committed view and the statuses it knows
//! (its own from the HA loop, the others' from the status exchange); admin handlers
//! ([`admin`]) propose changes through Raft like everything else, and `apply` judges them
//! atomically. Errors are one JSON shape: `{"error": "..."}` ([`error`]).
//!
//! Open: the Patroni-compatible health checks (see [`health`], GET, HEAD and OPTIONS),
//! `/liveness`, `/cluster`, `/metrics` (see [`metrics`]) and `/history`.

mod admin;
pub mod allowlist;
mod auth;
mod backup;
mod error;
pub mod health;
pub mod history;
pub mod metrics;
mod pools;
mod read;
mod restore;
mod state;

use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use admin::{MemberRequest, SwitchoverRequest, TokenRequest};
pub use backup::{BackupReport, BackupRequest};
pub use error::ApiError;
pub use read::{ClusterReport, MemberReport};
pub use state::AppState;

/// How the API speaks: HTTPS with `config` (from [`crate::tls::api_server_config`]) and
/// client certificates as `verify` says, or plain HTTP (`[api] tls = false`).
#[derive(Clone)]
pub enum Transport {
    Https {
        config: std::sync::Arc<rustls::ServerConfig>,
        verify: crate::tls::VerifyClient,
    },
    Http,
}

/// Serves the API on `listener` over `transport` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    transport: Transport,
    shutdown: CancellationToken,
) {
    let mut app = Router::new();
    for (path, endpoint) in health::Endpoint::PATHS {
        app = app.route(path, read::health_route(*endpoint));
    }
    let app = app
        .route(
            "/liveness",
            get(read::liveness).options(|state| async { read::liveness(state).await.status() }),
        )
        .route("/cluster", get(read::cluster))
        .route("/metrics", get(read::metrics))
        .route("/history", get(history::history))
        .route("/pools", get(pools::pools))
        .route("/admin/lease/{action}", post(admin::lease))
        .route("/admin/members/{name}", delete(admin::remove_member))
        .route(
            "/admin/tokens",
            post(admin::create_token).get(admin::list_tokens),
        )
        .route("/admin/tokens/{id}", delete(admin::revoke_token))
        .route(
            "/admin/switchover",
            post(admin::request_switchover).delete(admin::cancel_switchover),
        )
        .route(
            "/admin/failover",
            post(admin::request_failover).delete(admin::cancel_failover),
        )
        .route("/admin/restart", post(admin::request_restart))
        .route("/admin/certificate/rotate", post(admin::rotate_certificate))
        .route("/admin/ca", get(admin::ca_status))
        .route("/admin/ca/rotate", post(admin::rotate_ca))
        .route("/admin/reinit", post(admin::request_reinit))
        .route(
            "/config",
            get(admin::show_config)
                .patch(admin::patch_config)
                .put(admin::replace_config),
        )
        .route("/admin/backup", post(backup::request_backup))
        .route("/admin/backup/verify", post(backup::request_verify))
        .route("/backup", get(backup::backup_report))
        .route("/admin/restore", post(restore::request_restore))
        .route("/admin/pause", post(admin::pause))
        .route("/admin/resume", post(admin::resume))
        .with_state(state.clone());
    let allowlist = state.allowlist.clone();
    serve_http(listener, app, allowlist, transport, shutdown).await;
}

/// How many connections the REST port keeps open at once (see [`crate::accept`]): health
/// checkers, Prometheus and the CLI need a handful each.
const MAX_API_CONNECTIONS: usize = 256;
/// How long a client may take to send a request's headers, and how long a kept-alive
/// connection may sit idle between requests, before it is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/1.1 on `listener` with `app` over `transport`, under the connection cap and header
/// timeout (which also bounds the TLS handshake), until `shutdown`; then each connection
/// finishes the request it is on and closes.
async fn serve_http(
    listener: TcpListener,
    app: Router,
    allowlist: Arc<Vec<crate::net::Network>>,
    transport: Transport,
    shutdown: CancellationToken,
) {
    let mut gate = crate::accept::Gate::new(listener, MAX_API_CONNECTIONS, "REST");
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let admitted = tokio::select! {
            _ = shutdown.cancelled() => return,
            admitted = gate.accept() => admitted,
        };
        let _ = admitted.tcp.set_nodelay(true);
        let caller = Caller {
            app: app.clone(),
            allowlist: allowlist.clone(),
            remote: admitted.remote.ip(),
            certified: false,
            verify: crate::tls::VerifyClient::None,
        };
        let (http, transport, shutdown) = (http.clone(), transport.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _permit = admitted.permit;
            match transport {
                Transport::Http => {
                    serve_connection(&http, admitted.tcp, caller, &shutdown).await;
                }
                Transport::Https { config, verify } => {
                    let mut tcp = admitted.tcp;
                    if !starts_tls(&mut tcp).await {
                        return;
                    }
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let handshake = acceptor.accept(tcp);
                    let Ok(Ok(tls)) = tokio::time::timeout(HEADER_READ_TIMEOUT, handshake).await
                    else {
                        return; // a certificate refused, or too slow: nothing served
                    };
                    let certified = tls.get_ref().1.peer_certificates().is_some();
                    let caller = Caller {
                        certified,
                        verify,
                        ..caller
                    };
                    serve_connection(&http, tls, caller, &shutdown).await;
                }
            }
        });
    }
}

/// Whether the client on `tcp` starts a TLS handshake (a handshake record, byte 0x16)
/// within the header timeout. One that speaks plain HTTP instead (a health check or a
/// script not yet moved to HTTPS) is answered 400 with the fix, in clear, and closed.
async fn starts_tls(tcp: &mut tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HEADER_READ_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x16 => true,
        Ok(Ok(1)) => {
            use tokio::io::AsyncWriteExt as _;
            let body = r#"{"error":"this port serves HTTPS with the cluster CA ([api] tls = true): use https:// and the CA from `pgquorum ca export` (curl --cacert; HAProxy check-ssl verify required ca-file), or set [api] tls = false"}"#;
            let reply = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ =
                tokio::time::timeout(HEADER_READ_TIMEOUT, tcp.write_all(reply.as_bytes())).await;
            let _ = tcp.shutdown().await;
            false
        }
        _ => false,
    }
}

/// Who is on one connection, and what it may call: the allowlist and, with
/// `verify_client = optional`, a client certificate for the unsafe calls.
#[derive(Clone)]
struct Caller {
    app: Router,
    allowlist: Arc<Vec<crate::net::Network>>,
    remote: std::net::IpAddr,
    /// Whether it presented a certificate the cluster CA signed (the handshake verified it).
    certified: bool,
    verify: crate::tls::VerifyClient,
}

impl Caller {
    /// Why this caller may not make `request`, if it may not.
    fn refusal<B>(&self, request: &axum::http::Request<B>) -> Option<ApiError> {
        let (method, path) = (request.method(), request.uri().path());
        let forbidden = |message| Some(ApiError(axum::http::StatusCode::FORBIDDEN, message));
        if !allowlist::allowed(&self.allowlist, method, path, self.remote) {
            return forbidden(format!(
                "{} is not in this member's [api] allowlist, which unsafe calls must come \
                 from; call from an allowed host or extend the allowlist",
                self.remote
            ));
        }
        if self.verify == crate::tls::VerifyClient::Optional
            && !self.certified
            && allowlist::is_unsafe(method, path)
        {
            return forbidden(
                "this member's [api] verify_client = \"optional\" requires a client \
                 certificate from the cluster CA for unsafe calls; present one (the CLI on a \
                 member uses the member's own)"
                    .to_string(),
            );
        }
        None
    }
}

/// Serves HTTP/1.1 requests from `caller` on `io` until it closes or `shutdown`.
async fn serve_connection<I>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    caller: Caller,
    shutdown: &CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: axum::http::Request<_>| {
        let caller = caller.clone();
        async move {
            use tower::ServiceExt as _;
            if let Some(refusal) = caller.refusal(&request) {
                return Ok::<_, std::convert::Infallible>(refusal.into_response());
            }
            caller.app.oneshot(request.map(axum::body::Body::new)).await
        }
    });
    let connection = http.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
