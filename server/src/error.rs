//! The one error body of the API: `{ "error": { "code", "message" } }` (SPEC section 7), and extractors that
//! turn every bad body into it (never axum's plain-text rejections).

use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use sluice_runtime::executor::ExecError;
use sluice_runtime::StoreError;
use std::time::Duration;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Fields beside `error` in the body (e.g. `diagnostics`).
    pub extra: Option<Box<(&'static str, Value)>>,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), extra: None, retry_after: None }
    }
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} does not exist"))
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn too_many(code: &'static str, message: impl Into<String>, wait: Duration) -> ApiError {
        ApiError { retry_after: Some(wait), ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message) }
    }
    pub fn with(mut self, key: &'static str, value: Value) -> ApiError {
        self.extra = Some(Box::new((key, value)));
        self
    }
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!("internal error: {e}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the server failed to answer; it is logged")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        if e.is_transient() {
            tracing::warn!("store unavailable: {e}");
            return ApiError {
                retry_after: Some(Duration::from_secs(1)),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store is unreachable; try again",
                )
            };
        }
        ApiError::internal(e)
    }
}

impl From<ExecError> for ApiError {
    fn from(e: ExecError) -> ApiError {
        match e {
            ExecError::Store(e) => e.into(),
            ExecError::NoSuchRun => ApiError::not_found("the run"),
            ExecError::NoSuchDeadLetter => ApiError::not_found("the dead letter"),
            ExecError::Invalid(m) => ApiError::internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(extra) = self.extra {
            let (k, v) = *extra;
            body[k] = v;
        }
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_millis().div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

fn from_json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {}", inner(&e)))
        }
        JsonRejection::JsonDataError(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("the body does not fit: {}", inner(&e)),
        ),
        JsonRejection::BytesRejection(b) => from_bytes_rejection(b),
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

/// serde's message without axum's prefix.
fn inner(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = s.to_string();
        src = s.source();
    }
    msg
}

pub fn from_bytes_rejection(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than the limit of {} bytes", crate::BODY_LIMIT),
        );
    }
    ApiError::bad_request("invalid_body", r.body_text())
}

/// `Json<T>` whose rejections are API errors.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(r) => Err(from_json_rejection(r)),
        }
    }
}

/// The raw body, with its rejections as API errors.
pub struct Raw(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Raw {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::body::Bytes::from_request(req, state).await.map(Raw).map_err(from_bytes_rejection)
    }
}

/// `Query<T>` whose rejections are API errors.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Q(v)),
            Err(e) => {
                Err(ApiError::bad_request("invalid_query", format!("the query string does not fit: {}", inner(&e))))
            }
        }
    }
}

/// `Path<T>` whose rejections are API errors.
pub struct P<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for P<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(P(v)),
            Err(e) => Err(ApiError::bad_request("invalid_path", format!("the path does not fit: {}", inner(&e)))),
        }
    }
}
