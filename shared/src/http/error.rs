//! One JSON error type for every HTTP answer that is not a success:
//! `{"error": "<code>", "message": "<human text>", ...details}`.
//!
//! A 5xx answer never carries internal text: the cause is logged with the
//! request id, and the client gets a public message and that id
//! (`request_id`) to quote. Errors of the layers below convert with `?`
//! (`From<sqlx::Error>`, `From<ClaimError>`, extractor rejections), so
//! handlers do not map errors by hand.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::claim_check::ClaimError;
use crate::db::Failure;

/// An HTTP error with a stable code, a public message and optional details.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Map<String, Value>,
    /// What went wrong inside: logged, never sent.
    cause: Option<String>,
}

impl ApiError {
    /// An error with `status`, machine-readable `code` and public `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Map::new(),
            cause: None,
        }
    }

    /// Adds a field to the JSON body.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.details.insert(key.to_owned(), value);
        self
    }

    /// Records the internal cause: logged with the request id, not sent.
    pub fn caused_by(mut self, cause: impl std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    /// 400 with a reason.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: missing or wrong bearer token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405: the path exists, not with this method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path does not take that method",
        )
    }

    /// 503: a dependency is down; the client may retry.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// 500: the cause is logged, the client learns only that it happened.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
        .caused_by(cause)
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// A detail field of the JSON body, if set.
    pub fn detail(&self, key: &str) -> Option<&Value> {
        self.details.get(key)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = super::ops::request_id();
        if self.status.is_server_error() {
            tracing::warn!(
                status = self.status.as_u16(),
                code = self.code,
                message = %self.message,
                cause = self.cause.as_deref().unwrap_or(""),
                request_id = request_id.as_deref().unwrap_or(""),
                "request failed"
            );
        }
        let mut body = Map::new();
        body.insert("error".into(), Value::from(self.code));
        body.insert("message".into(), Value::from(self.message));
        body.extend(self.details);
        if let (true, Some(id)) = (self.status.is_server_error(), request_id) {
            body.insert("request_id".into(), Value::from(id));
        }
        let mut response = (self.status, Json(Value::Object(body))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was never read: the connection cannot carry
            // another request, and a client must not reuse it for one.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        let failure = Failure::of(&error);
        // Text the database cannot store (a NUL, or a byte sequence invalid in
        // its encoding) that reached a query as a parameter: the client's input.
        if failure.is_unstorable_text() {
            return ApiError::bad_request(
                "invalid_text",
                "a value contains a character the database cannot store (NUL)",
            )
            .caused_by(error);
        }
        match failure {
            Failure::Unavailable => ApiError::unavailable(
                "database_unavailable",
                "the database is unavailable; retry shortly",
            )
            .caused_by(error),
            _ => ApiError::internal(error),
        }
    }
}

impl From<ClaimError> for ApiError {
    fn from(error: ClaimError) -> Self {
        match error {
            ClaimError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, error.code(), error.to_string())
            }
            ClaimError::Database(db) => ApiError::from(db),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                other.code(),
                "the stored payload failed its integrity check",
            )
            .caused_by(other),
        }
    }
}

/// Extractor rejections become JSON errors. A body or query that does not
/// fit (bad JSON, a wrong type, an unknown field) is 400 everywhere.
macro_rules! from_rejection {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for ApiError {
            fn from(rejection: $rejection) -> Self {
                let (status, code) = match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
                    s if s.is_server_error() => return ApiError::internal(rejection.body_text()),
                    _ => (StatusCode::BAD_REQUEST, "bad_request"),
                };
                ApiError::new(status, code, rejection.body_text())
            }
        }
    )*};
}

from_rejection!(BytesRejection, JsonRejection, PathRejection, QueryRejection);
