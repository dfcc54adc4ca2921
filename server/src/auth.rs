//! Who is calling: a tenant's API key (`Authorization: Bearer sk_...`, stored as its SHA-256) or the admin
//! token. A tenant's request also passes its rate limit here.

use crate::error::ApiError;
use crate::{cache, Shared};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use sluice_runtime::catalog::{ApiKey, Tenant};
use std::sync::Arc;

pub fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The stored form of a key. Keys are 32 random bytes, so one SHA-256 is enough (no salt or stretching
/// needed: there is nothing to guess).
pub fn key_hash(key: &str) -> String {
    hex::encode(digest(key))
}

/// A new API key (`sk_` and 43 characters) and its stored record.
pub fn new_key() -> (String, ApiKey) {
    let key = format!("sk_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
    let record = ApiKey {
        id: format!("key_{}", ulid::Ulid::new()),
        hash: key_hash(&key),
        prefix: key.chars().take(10).collect(),
        created_at: crate::api::now_rfc3339(),
    };
    (key, record)
}

/// Equal in constant time (both sides are digests of the same length).
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("send your API key as `Authorization: Bearer sk_...`"))?;
    let value = value.to_str().map_err(|_| ApiError::unauthorized("the Authorization header is not readable text"))?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <key>`"))
}

/// The calling tenant, its rate limit passed. The key's id goes into the request's extensions as [`KeyId`].
pub struct TenantAuth(pub Arc<Tenant>);

/// The id of the API key a request came with (a version's author).
#[derive(Clone, Debug)]
pub struct KeyId(pub String);

impl FromRequestParts<Shared> for TenantAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let key = bearer(parts)?;
        let wrong = || ApiError::unauthorized("the API key is not valid (wrong, or revoked)");
        if !key.starts_with("sk_") || key.len() > 200 {
            return Err(wrong());
        }
        let (owner, key_id) = cache::key_owner(state, &key_hash(key)).await?.ok_or_else(wrong)?;
        let tenant = cache::tenant(state, &owner).await?.ok_or_else(wrong)?;
        limit_requests(state, &tenant, "api").await?;
        parts.extensions.insert(KeyId(key_id));
        Ok(TenantAuth(tenant))
    }
}

/// Refuses a request over the tenant's request rate (shared by every server on the store). `bucket` is
/// `api` for API keys' requests, `webhooks` for inbound webhooks: each has the tenant's rate, so unsigned
/// traffic at a webhook address cannot lock the tenant out of its API.
pub async fn limit_requests(state: &Shared, tenant: &Tenant, bucket: &'static str) -> Result<(), ApiError> {
    let l = tenant.limits;
    if let Some(wait) = state.s.store.rate_limit(&tenant.id, bucket, l.requests_per_second, l.burst).await? {
        state.s.metrics.inc("sluice_rate_limited_total", &[("tenant", &tenant.id), ("limit", bucket)]);
        return Err(ApiError::too_many(
            "rate_limited",
            format!(
                "tenant `{}` may make {} requests a second (bursts of {}); wait and try again",
                tenant.id, l.requests_per_second, l.burst
            ),
            wait,
        ));
    }
    Ok(())
}

/// The admin (`SLUICE_ADMIN_TOKEN`).
pub struct AdminAuth;

impl FromRequestParts<Shared> for AdminAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let Some(expected) = &state.admin_hash else {
            return Err(ApiError::unauthorized(
                "the admin API is off: start the server with SLUICE_ADMIN_TOKEN set to use it",
            ));
        };
        let token = bearer(parts)?;
        if same(&digest(token), expected) {
            Ok(AdminAuth)
        } else {
            Err(ApiError::unauthorized("the admin token is not valid"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashed() {
        let (a, ra) = new_key();
        let (b, _) = new_key();
        assert_ne!(a, b);
        assert!(a.starts_with("sk_") && a.len() == 46, "{a}");
        assert_eq!(ra.hash, key_hash(&a));
        assert!(!ra.hash.contains(&a[3..]));
        assert!(same(&digest("x"), &digest("x")) && !same(&digest("x"), &digest("y")));
    }
}
