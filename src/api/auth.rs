//! The admin token check.

use axum::http::{HeaderMap, StatusCode};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::state::AppState;

/// Accepts the request if it carries `Authorization: Bearer <admin token>`; the comparison
/// takes the same time whatever the presented token.
pub(super) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token)
            if bool::from(
                token
                    .as_bytes()
                    .ct_eq(state.admin_token.expose().as_bytes()),
            ) =>
        {
            Ok(())
        }
        _ => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "admin endpoints need `Authorization: Bearer <token>` with the token from the \
             node's state directory (admin.token)"
                .into(),
        )),
    }
}
