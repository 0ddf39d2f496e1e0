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
mod error;
pub mod health;
pub mod history;
pub mod metrics;
mod read;
mod state;

use std::time::Duration;

use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use admin::{MemberRequest, SwitchoverRequest, TokenRequest};
pub use error::ApiError;
pub use read::{ClusterReport, MemberReport};
pub use state::AppState;

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: CancellationToken) {
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
        .route("/admin/reinit", post(admin::request_reinit))
        .route(
            "/config",
            get(admin::show_config)
                .patch(admin::patch_config)
                .put(admin::replace_config),
        )
        .route("/admin/pause", post(admin::pause))
        .route("/admin/resume", post(admin::resume))
        .with_state(state.clone());
    let allowlist = state.allowlist.clone();
    serve_http(listener, app, allowlist, shutdown).await;
}

/// How many connections the REST port keeps open at once (see [`crate::accept`]): health
/// checkers, Prometheus and the CLI need a handful each.
const MAX_API_CONNECTIONS: usize = 256;
/// How long a client may take to send a request's headers, and how long a kept-alive
/// connection may sit idle between requests, before it is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/1.1 on `listener` with `app`, under the connection cap and header timeout, until
/// `shutdown`; then each connection finishes the request it is on and closes.
async fn serve_http(
    listener: TcpListener,
    app: Router,
    allowlist: std::sync::Arc<Vec<crate::net::Network>>,
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
        let (app, allowlist, remote) = (app.clone(), allowlist.clone(), admitted.remote.ip());
        let service = hyper::service::service_fn(move |request: axum::http::Request<_>| {
            let (app, allowlist) = (app.clone(), allowlist.clone());
            async move {
                use tower::ServiceExt as _;
                if !allowlist::allowed(&allowlist, request.method(), request.uri().path(), remote) {
                    return Ok::<_, std::convert::Infallible>(
                        ApiError(
                            axum::http::StatusCode::FORBIDDEN,
                            format!(
                                "{remote} is not in this member's [api] allowlist, which \
                                 unsafe calls must come from; call from an allowed host or \
                                 extend the allowlist"
                            ),
                        )
                        .into_response(),
                    );
                }
                app.oneshot(request.map(axum::body::Body::new)).await
            }
        });
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(admitted.tcp), service);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = admitted.permit;
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}
