//! One JSON shape for every error, `{"error": "..."}`, and the answer to a proposal.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::cluster::CommandResult;

/// An API error: a status and a message for `{"error": ...}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<crate::raft::Error> for ApiError {
    fn from(e: crate::raft::Error) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl ApiError {
    pub(super) fn conflict(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::CONFLICT, message.into())
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }

    pub(super) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::NOT_FOUND, message.into())
    }
}

/// A committed command's result as an answer: 409 with the rejection's message, else 200
/// with the result.
pub(super) fn command_response(result: CommandResult) -> Response {
    match result {
        CommandResult::Rejected { rejection } => {
            ApiError(StatusCode::CONFLICT, rejection.to_string()).into_response()
        }
        other => (StatusCode::OK, Json(other)).into_response(),
    }
}
