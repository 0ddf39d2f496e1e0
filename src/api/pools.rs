//! `GET /pools`: this member's pooler, as PgBouncer's SHOW POOLS shows it.

use axum::extract::State;
use axum::Json;

use super::error::ApiError;
use super::state::AppState;
use crate::pooler::pool::PoolsReport;

pub async fn pools(State(state): State<AppState>) -> Result<Json<PoolsReport>, ApiError> {
    let pools = state.pools.as_ref().ok_or_else(|| {
        ApiError::not_found(format!(
            "{} runs no pooler: set [pooler] listen in its configuration file",
            state.name
        ))
    })?;
    Ok(Json(pools.report()))
}
