//! The handlers of SPEC section 9, one module per resource. Each handler is annotated for the OpenAPI
//! document (`crate::openapi`), so the document is made from the same types the handlers use.

pub mod admin;
pub mod connections;
pub mod hooks;
pub mod ops;
pub mod pipelines;
pub mod runs;
pub mod secrets;
pub mod sync;

use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The error body of every 4xx and 5xx answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `not_found`, `rate_limited`, `invalid_pipeline`.
    pub code: String,
    /// What went wrong and how to fix it, for people.
    pub message: String,
}

/// One diagnostic, as `sluice validate --format json` prints it.
#[derive(Serialize, ToSchema)]
pub struct DiagnosticOut {
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// `error` or `warning`.
    pub severity: String,
    /// A stable code, e.g. `S1004` (docs/diagnostics.md).
    pub code: String,
    pub message: String,
    pub hint: Option<String>,
}

/// A 422: the error, and for an invalid pipeline (`invalid_pipeline`) every diagnostic.
#[derive(Serialize, ToSchema)]
pub struct InvalidPipelineBody {
    pub error: ErrorDetail,
    /// Present with `invalid_pipeline`: what `sluice validate --format json` prints.
    pub diagnostics: Option<Vec<DiagnosticOut>>,
}

/// Paging of a list: `limit` items after the `cursor` of the previous page's `next`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// The `next` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 1000 (default 100).
    pub limit: Option<usize>,
}

impl Page {
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(100),
            Some(n @ 1..=1000) => Ok(n),
            Some(n) => Err(ApiError::bad_request("invalid_query", format!("`limit` is {n}; it must be 1 to 1000"))),
        }
    }
}

/// A page of `items` sorted by a key (ascending, or descending when `newest_first`); answers the page and
/// the `next` cursor. The page starts after the cursor by order, so it works when the cursor's item went.
pub fn paginate<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> &str,
    page: &Page,
    newest_first: bool,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let limit = page.limit()?;
    let mut out: Vec<T> = match &page.cursor {
        Some(c) if newest_first => items.into_iter().filter(|i| key(i) < c.as_str()).collect(),
        Some(c) => items.into_iter().filter(|i| key(i) > c.as_str()).collect(),
        None => items,
    };
    let next = if out.len() > limit {
        out.truncate(limit);
        out.last().map(|i| key(i).to_string())
    } else {
        None
    };
    Ok((out, next))
}

/// A name in a path (pipeline, secret, tenant): checked before it reaches the store, so it can never form
/// another key.
pub fn check_name(kind: &str, s: &str, secret: bool) -> Result<(), ApiError> {
    let ok = if secret {
        !s.is_empty()
            && s.len() <= 128
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    } else {
        !s.is_empty()
            && s.len() <= 63
            && s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if ok {
        return Ok(());
    }
    let rule = if secret {
        "letters, digits and `_`, not starting with a digit, at most 128"
    } else {
        "lower-case letters, digits and `-`, starting with a letter or digit, at most 63"
    };
    Err(ApiError::bad_request("invalid_name", format!("`{}` is not a valid {kind} name: use {rule}", s.escape_debug())))
}

/// An id in a path (`run_...`, `dl_...`): refused early when it cannot be one.
pub fn check_id(s: &str, prefix: &str, what: &str) -> Result<(), ApiError> {
    let ok = s.strip_prefix(prefix).is_some_and(|r| r.len() == 26 && r.chars().all(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(what))
    }
}
