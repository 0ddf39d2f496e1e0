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
mod auth;
mod error;
pub mod health;
pub mod history;
pub mod metrics;
mod read;
mod state;

use axum::routing::{delete, get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use admin::{MemberRequest, SwitchoverRequest, TokenRequest};
pub use error::ApiError;
pub use read::{ClusterReport, MemberReport};
pub use state::AppState;

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
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
        .route("/admin/tokens", post(admin::create_token))
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
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
