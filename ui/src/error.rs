//! The one API error type: every failure becomes a JSON body with a kind and a status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use weir_core::query::QueryError;
use weir_core::store::{ErrorKind, StoreError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// The request parameter at fault.
    pub parameter: Option<String>,
    /// Byte position in that parameter's value.
    pub position: Option<usize>,
}

impl ApiError {
    pub fn bad_request(parameter: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_request",
            message: message.into(),
            parameter: Some(parameter.into()),
            position: None,
        }
    }

    pub fn query(parameter: &str, e: QueryError) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_query",
            message: format!("{parameter}: {e}"),
            parameter: Some(parameter.into()),
            position: Some(e.pos),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "not_found",
            message: message.into(),
            parameter: None,
            position: None,
        }
    }

    /// No or a wrong access token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "unauthorized",
            message: message.into(),
            parameter: None,
            position: None,
        }
    }

    /// A plugin failed while serving the request (trap, timeout, memory, its own error).
    pub fn plugin_failed(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "plugin_failed",
            message: message.into(),
            parameter: None,
            position: None,
        }
    }

    /// Too many calls at once (a plugin's concurrency or the agent's plugin budget).
    pub fn busy(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "busy",
            message: message.into(),
            parameter: None,
            position: None,
        }
    }

    /// Not allowed on this agent (a read-only replay).
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            kind: "forbidden",
            message: message.into(),
            parameter: None,
            position: None,
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "unavailable",
            message: message.into(),
            parameter: None,
            position: None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match (e.kind(), e) {
            (_, StoreError::Query(q)) => ApiError::query("filter", q),
            (ErrorKind::BadRequest, e) => ApiError {
                status: StatusCode::BAD_REQUEST,
                kind: "bad_request",
                message: e.to_string(),
                parameter: None,
                position: None,
            },
            (ErrorKind::Unavailable, e) => ApiError::unavailable(e.to_string()),
            (ErrorKind::Internal, e) => {
                tracing::error!(error = %e, "request failed");
                ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    kind: "internal",
                    message: e.to_string(),
                    parameter: None,
                    position: None,
                }
            }
        }
    }
}

impl ApiError {
    /// The JSON body every error answer carries.
    pub fn body(&self) -> serde_json::Value {
        let mut err = serde_json::json!({ "kind": self.kind, "message": self.message });
        if let Some(p) = &self.parameter {
            err["parameter"] = p.clone().into();
        }
        if let Some(p) = self.position {
            err["position"] = p.into();
        }
        serde_json::json!({ "error": err })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
