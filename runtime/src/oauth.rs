//! OAuth2 connections (on the `oauth2` crate): client credentials, authorization code with PKCE S256, and
//! refresh tokens with rotation, over the egress-checked HTTP client.
//!
//! Tokens are cached per process and renewed shortly before they expire. Only one process refreshes a
//! connection at a time: it takes the connection's lock in the store (on Redis `SET NX PX`, and its write is
//! fenced: it lands only while the lock is still its own; on the embedded store in memory), and the others
//! wait for its result by reading the connection again. A refresh token is therefore used once, so a
//! provider that rotates refresh tokens (and revokes the grant on reuse) is never tripped.

use crate::catalog::Catalog;
use crate::crypto::MasterKey;
use crate::executor::Events;
use crate::store::{now_ms, StoreError};
use futures::future::BoxFuture;
use futures::FutureExt as _;
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpRequest, HttpResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sluice_connectors::{StepError, TokenSource};
use sluice_engine::model::ErrorClass;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

/// How long a refresh may hold a connection's lock; one that takes longer loses it (and its write).
pub const LOCK_MS: u64 = 30_000;
/// The longest a token request may take: well inside the lock, so no second refresh starts while a first
/// is still talking to the provider.
pub const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest token response read.
pub const MAX_TOKEN_RESPONSE: usize = 256 * 1024;
/// A cached token is checked against the store at least this often (a connection deleted, re-authorized
/// or changed elsewhere stops being used within it).
pub const CACHE_CHECK_MS: u64 = 10_000;
/// How long an authorization (`POST .../authorize` to the callback) stays valid.
pub const AUTHORIZATION_TTL_MS: u64 = 10 * 60 * 1000;
/// A token is renewed this long before it expires (at most; a quarter of its lifetime for short ones).
pub const RENEW_BEFORE_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    ClientCredentials,
    AuthorizationCode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Connected,
    NeedsAuthorization,
    Broken,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Connected => "connected",
            Status::NeedsAuthorization => "needs_authorization",
            Status::Broken => "broken",
        }
    }
}

/// The tokens of a connection, sealed as one value in the stored document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tokens {
    access: String,
    refresh: Option<String>,
    /// When the access token expires (ms since the epoch); `None` when the provider did not say.
    expires_ms: Option<u64>,
    obtained_ms: u64,
}

/// A connection as stored. The client secret and the tokens are sealed under the master key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub name: String,
    pub grant: Grant,
    pub token_url: String,
    #[serde(default)]
    pub authorize_url: Option<String>,
    pub client_id: String,
    pub client_secret_sealed: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub auth_method: AuthMethod,
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
    /// The issuer the provider names itself (RFC 9207 `iss`); the authorize URL's origin when not given.
    #[serde(default)]
    pub issuer: Option<String>,
    pub status: Status,
    #[serde(default)]
    pub tokens_sealed: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub granted_scopes: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    pub updated_at: String,
}

/// A pending authorization, found again by its `state` at the callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub tenant: String,
    pub connection: String,
    /// The client the authorization was for.
    #[serde(default)]
    pub client_id: String,
    pub verifier_sealed: String,
    pub redirect_uri: String,
    pub created_ms: u64,
}

fn owner(tenant: &str, name: &str, what: &str) -> String {
    format!("{tenant}/connection/{name}/{what}")
}

fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Why a token could not be had.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenError {
    /// The provider refused the grant (`invalid_grant`, a revoked or used refresh token): the user must
    /// authorize again.
    NeedsAuthorization(String),
    /// The provider refused the client (`invalid_client`, ...): the connection's configuration is wrong.
    Broken(String),
    /// The provider or the network failed; worth trying again (after `retry_after_ms` when it said).
    Transient { class: ErrorClass, message: String, retry_after_ms: Option<u64> },
    /// The store failed.
    Store(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::NeedsAuthorization(m) | TokenError::Broken(m) | TokenError::Store(m) => f.write_str(m),
            TokenError::Transient { message, .. } => f.write_str(message),
        }
    }
}

impl From<TokenError> for StepError {
    fn from(e: TokenError) -> StepError {
        match e {
            TokenError::NeedsAuthorization(m) | TokenError::Broken(m) => StepError::config(m),
            TokenError::Transient { class, message, retry_after_ms } => StepError { class, message, retry_after_ms },
            TokenError::Store(m) => StepError::new(ErrorClass::Network, m),
        }
    }
}

impl From<StoreError> for TokenError {
    fn from(e: StoreError) -> TokenError {
        TokenError::Store(format!("the store: {e}"))
    }
}

/// What the last token-endpoint response was, for errors the `oauth2` crate does not classify.
#[derive(Default)]
struct Seen {
    status: Option<u16>,
    retry_after: Option<String>,
}

/// A client with its token endpoint set (the only endpoint token requests need).
type TokenClient = BasicClient<
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

type TokenResult =
    Result<oauth2::basic::BasicTokenResponse, RequestTokenError<std::io::Error, oauth2::basic::BasicErrorResponse>>;

/// The HTTP client `oauth2` sends token requests with: the egress-checked client, keeping the status and
/// `Retry-After` of the answer for classifying failures the crate does not.
struct Sender {
    client: reqwest::Client,
    egress: sluice_connectors::egress::Egress,
    seen: Arc<Mutex<Seen>>,
}

impl<'c> oauth2::AsyncHttpClient<'c> for Sender {
    type Error = std::io::Error;
    type Future = BoxFuture<'c, Result<HttpResponse, std::io::Error>>;

    fn call(&'c self, req: HttpRequest) -> Self::Future {
        async move {
            let mut req = reqwest::Request::try_from(req).map_err(std::io::Error::other)?;
            sluice_connectors::egress::check_url(req.url(), self.egress).map_err(std::io::Error::other)?;
            *req.timeout_mut() = Some(TOKEN_REQUEST_TIMEOUT);
            let mut resp = self.client.execute(req).await.map_err(std::io::Error::other)?;
            let status = resp.status();
            let mut out = http::Response::builder().status(status);
            for (k, v) in resp.headers() {
                out = out.header(k, v);
            }
            if let Ok(mut s) = self.seen.lock() {
                s.status = Some(status.as_u16());
                s.retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(std::io::Error::other)? {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_TOKEN_RESPONSE {
                    return Err(std::io::Error::other("the token response is larger than 256 KiB"));
                }
            }
            out.body(body).map_err(std::io::Error::other)
        }
        .boxed()
    }
}

fn sender(http: &reqwest::Client, egress: sluice_connectors::egress::Egress) -> (Sender, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    (Sender { client: http.clone(), egress, seen: seen.clone() }, seen)
}

/// A token endpoint's answer, or why it failed: `invalid_grant` needs authorization again, other refusals
/// mean the configuration is broken, 429, 5xx and the network are worth another try.
fn classify(
    conn: &str,
    seen: &Mutex<Seen>,
    result: TokenResult,
) -> Result<oauth2::basic::BasicTokenResponse, TokenError> {
    let (status, retry_after) = seen.lock().map(|s| (s.status, s.retry_after.clone())).unwrap_or((None, None));
    result.map_err(|e| {
        let retry_after_ms = retry_after.and_then(|v| sluice_connectors::retry_after_ms(&v, now_ms()));
        match (&e, status) {
            (_, Some(429)) => TokenError::Transient {
                class: ErrorClass::Http429,
                message: format!("the token endpoint of connection `{conn}` answered 429"),
                retry_after_ms,
            },
            (_, Some(s)) if s >= 500 => TokenError::Transient {
                class: ErrorClass::Http5xx,
                message: format!("the token endpoint of connection `{conn}` answered {s}"),
                retry_after_ms,
            },
            (RequestTokenError::ServerResponse(r), _) => {
                let detail = r.error_description().map(|d| format!(" ({d})")).unwrap_or_default();
                match r.error() {
                    BasicErrorResponseType::InvalidGrant => TokenError::NeedsAuthorization(format!(
                        "connection `{conn}` needs authorization again: the provider refused the grant (invalid_grant{detail}); open POST /v1/connections/{conn}/authorize"
                    )),
                    other => TokenError::Broken(format!(
                        "connection `{conn}` is broken: the provider answered `{}`{detail}; check its client id, secret, scopes and URLs",
                        other.as_ref()
                    )),
                }
            }
            (RequestTokenError::Request(err), _) => TokenError::Transient {
                class: ErrorClass::Network,
                message: format!("the token endpoint of connection `{conn}` is unreachable: {err}"),
                retry_after_ms: None,
            },
            (other, s) => TokenError::Broken(format!(
                "connection `{conn}`: the token endpoint's answer{} is not an OAuth2 token response: {other}",
                s.map(|s| format!(" ({s})")).unwrap_or_default()
            )),
        }
    })
}

fn url<T>(what: &str, s: &str, make: impl FnOnce(String) -> Result<T, url::ParseError>) -> Result<T, TokenError> {
    make(s.to_string()).map_err(|e| TokenError::Broken(format!("`{what}` is not a valid URL: {e}")))
}

/// The connection manager: tokens for steps, the authorization flow for the API.
pub struct Connections {
    catalog: Arc<dyn Catalog>,
    key: MasterKey,
    http: reqwest::Client,
    egress: sluice_connectors::egress::Egress,
    events: OnceLock<Weak<dyn Events>>,
    /// `tenant/name` -> the access token, when to renew it, and when it was last checked against the store.
    cache: Mutex<HashMap<String, (String, u64, u64)>>,
    /// `tenant/name` -> a failure of the token endpoint that asked to wait, and until when: steps waiting
    /// on the same connection get it instead of calling the endpoint again.
    backoff: Mutex<HashMap<String, (u64, TokenError)>>,
    me: Weak<Connections>,
}

impl Connections {
    pub fn new(
        catalog: Arc<dyn Catalog>,
        key: MasterKey,
        http: reqwest::Client,
        egress: sluice_connectors::egress::Egress,
    ) -> Arc<Connections> {
        Arc::new_cyclic(|me| Connections {
            catalog,
            key,
            http,
            egress,
            events: OnceLock::new(),
            cache: Mutex::new(HashMap::new()),
            backoff: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    /// Where `connection.needs_authorization` events go.
    pub fn bind_events(&self, events: Weak<dyn Events>) {
        let _ = self.events.set(events);
    }

    pub fn seal_secret(&self, tenant: &str, name: &str, secret: &str) -> Result<String, String> {
        self.key.seal(&owner(tenant, name, "client_secret"), secret).map_err(|e| e.to_string())
    }

    /// Whether a stored connection's client secret is `secret`.
    pub fn same_secret(&self, tenant: &str, c: &Connection, secret: &str) -> bool {
        self.client_secret(tenant, c).is_ok_and(|s| s == secret)
    }

    pub async fn load(&self, tenant: &str, name: &str) -> Result<Option<Connection>, StoreError> {
        match self.catalog.connection(tenant, name).await? {
            Some(doc) => {
                serde_json::from_str(&doc).map(Some).map_err(|e| StoreError::Corrupt(format!("connection {name}: {e}")))
            }
            None => Ok(None),
        }
    }

    /// Takes the connection's lock, waiting for a refresh in flight (at most `LOCK_MS`).
    async fn lock_wait(&self, tenant: &str, name: &str) -> Result<String, StoreError> {
        let token = ulid::Ulid::new().to_string();
        for _ in 0..(LOCK_MS / 50) {
            if self.catalog.lock(tenant, name, &token, LOCK_MS).await? {
                return Ok(token);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(StoreError::Redis(format!("connection `{name}` stayed locked by a token refresh; try again")))
    }

    /// Stores a connection created or changed through the API, under its lock. With `keep`, the tokens
    /// and status come from the stored copy read under the lock (a refresh that just rotated them is kept).
    pub async fn save_config(
        &self,
        tenant: &str,
        conn: &Connection,
        keep: impl Fn(&Connection) -> bool,
    ) -> Result<(), StoreError> {
        let lock = self.lock_wait(tenant, &conn.name).await?;
        let result = async {
            let mut conn = conn.clone();
            if let Some(fresh) = self.load(tenant, &conn.name).await? {
                if keep(&fresh) {
                    conn.tokens_sealed = fresh.tokens_sealed;
                    conn.expires_at = fresh.expires_at;
                    conn.granted_scopes = fresh.granted_scopes;
                    conn.status = fresh.status;
                    conn.last_error = fresh.last_error;
                }
            }
            let doc = serde_json::to_string(&conn).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            self.catalog.put_connection(tenant, &conn.name, &doc).await
        }
        .await;
        let _ = self.catalog.unlock(tenant, &conn.name, &lock).await;
        self.forget(tenant, &conn.name);
        result
    }

    /// Stores a connection (the callback's tokens), under its lock.
    pub async fn save(&self, tenant: &str, conn: &Connection) -> Result<(), StoreError> {
        self.save_config(tenant, conn, |_| false).await
    }

    /// Deletes a connection under its lock (a refresh in flight cannot bring it back).
    pub async fn delete(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        let lock = self.lock_wait(tenant, name).await?;
        let r = self.catalog.delete_connection(tenant, name).await;
        let _ = self.catalog.unlock(tenant, name, &lock).await;
        self.forget(tenant, name);
        r
    }

    pub fn forget(&self, tenant: &str, name: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(&format!("{tenant}/{name}"));
        }
    }

    /// The token endpoint passes the egress guard (a private or metadata address is a configuration
    /// mistake, not worth a retry).
    fn allowed(&self, c: &Connection) -> Result<(), TokenError> {
        let u = url::Url::parse(&c.token_url)
            .map_err(|e| TokenError::Broken(format!("connection `{}`: `token_url` is not a valid URL: {e}", c.name)))?;
        sluice_connectors::egress::check_url(&u, self.egress)
            .map_err(|e| TokenError::Broken(format!("connection `{}`: {e}", c.name)))
    }

    fn client_secret(&self, tenant: &str, c: &Connection) -> Result<String, TokenError> {
        self.key
            .open(&owner(tenant, &c.name, "client_secret"), &c.client_secret_sealed)
            .map_err(|e| TokenError::Broken(format!("connection `{}`: its client secret does not open: {e}", c.name)))
    }

    fn tokens(&self, tenant: &str, c: &Connection) -> Option<Tokens> {
        let sealed = c.tokens_sealed.as_ref()?;
        let plain = self.key.open(&owner(tenant, &c.name, "tokens"), sealed).ok()?;
        serde_json::from_str(&plain).ok()
    }

    /// When a token should be renewed: shortly before it expires.
    fn renew_at(t: &Tokens) -> u64 {
        match t.expires_ms {
            Some(exp) => {
                let life = exp.saturating_sub(t.obtained_ms);
                exp.saturating_sub(RENEW_BEFORE_MS.min(life / 4))
            }
            // The provider did not say: renewed after an hour (or sooner, on a 401).
            None => t.obtained_ms.saturating_add(3_600_000),
        }
    }

    /// The token of a stored connection, when it is still good and not the rejected one.
    fn usable(&self, tenant: &str, c: &Connection, rejected: Option<&str>) -> Option<(String, u64)> {
        if c.status != Status::Connected {
            return None;
        }
        let t = self.tokens(tenant, c)?;
        let renew = Self::renew_at(&t);
        (renew > now_ms() && rejected != Some(t.access.as_str())).then_some((t.access, renew))
    }

    fn not_connected(c: &Connection) -> TokenError {
        let why = c.last_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default();
        match c.status {
            Status::Broken => TokenError::Broken(format!("connection `{}` is broken{why}; fix it with PUT /v1/connections/{}", c.name, c.name)),
            _ => TokenError::NeedsAuthorization(format!(
                "connection `{}` needs authorization{why}: POST /v1/connections/{}/authorize and open the URL it answers",
                c.name, c.name
            )),
        }
    }

    /// A valid access token (see [`TokenSource`]).
    pub async fn access_token(&self, tenant: &str, name: &str, rejected: Option<&str>) -> Result<String, TokenError> {
        let key = format!("{tenant}/{name}");
        let now = now_ms();
        if let Some((tok, renew, checked)) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            if renew > now && rejected != Some(tok.as_str()) && now.saturating_sub(checked) < CACHE_CHECK_MS {
                return Ok(tok);
            }
        }
        let missing = || {
            TokenError::Broken(format!(
                "this tenant has no OAuth2 connection named `{name}`; create it with PUT /v1/connections/{name}"
            ))
        };
        let deadline = now_ms() + LOCK_MS + 5_000;
        loop {
            let c = self.load(tenant, name).await?.ok_or_else(missing)?;
            if let Some((tok, renew)) = self.usable(tenant, &c, rejected) {
                self.remember(&key, &tok, renew);
                return Ok(tok);
            }
            if c.status != Status::Connected {
                return Err(Self::not_connected(&c));
            }
            if let Some((until, e)) = self.backoff.lock().ok().and_then(|b| b.get(&key).cloned()) {
                if until > now_ms() {
                    return Err(e);
                }
            }
            let lock = ulid::Ulid::new().to_string();
            if self.catalog.lock(tenant, name, &lock, LOCK_MS).await? {
                // Ours. The refresh runs as a task of its own: a step that is cancelled (its timeout, a lost
                // lease) cannot drop a rotated refresh token half-way; it is stored either way.
                let me = self.me.upgrade().ok_or_else(|| TokenError::Store("shutting down".into()))?;
                let (t, n, r) = (tenant.to_string(), name.to_string(), rejected.map(str::to_string));
                let task = tokio::spawn(async move {
                    let result = me.renew(&t, &n, &lock, r.as_deref()).await;
                    let _ = me.catalog.unlock(&t, &n, &lock).await;
                    result
                });
                let (tok, renew) =
                    task.await.map_err(|e| TokenError::Store(format!("the refresh task failed: {e}")))??;
                self.remember(&key, &tok, renew);
                return Ok(tok);
            }
            // Someone else renews: wait for its result.
            if now_ms() > deadline {
                return Err(TokenError::Transient {
                    class: ErrorClass::Timeout,
                    message: format!("connection `{name}`: waited too long for another worker's token refresh"),
                    retry_after_ms: None,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn remember(&self, key: &str, tok: &str, renew: u64) {
        if let Ok(mut c) = self.cache.lock() {
            if c.len() > 10_000 {
                c.clear();
            }
            c.insert(key.to_string(), (tok.to_string(), renew, now_ms()));
        }
    }

    /// Under the lock: a new token by the connection's grant (client credentials, or its refresh token).
    async fn renew(
        &self,
        tenant: &str,
        name: &str,
        lock: &str,
        rejected: Option<&str>,
    ) -> Result<(String, u64), TokenError> {
        let mut c = self
            .load(tenant, name)
            .await?
            .ok_or_else(|| TokenError::Broken(format!("connection `{name}` was deleted")))?;
        if let Some(found) = self.usable(tenant, &c, rejected) {
            return Ok(found);
        }
        let old = self.tokens(tenant, &c);
        // A refused URL or a secret that does not open is the connection's state too (broken), not only
        // this step's error.
        let result = match self.allowed(&c).and_then(|()| self.client_secret(tenant, &c)) {
            Err(e) => Err(e),
            Ok(secret) => match c.grant {
                Grant::ClientCredentials => self.client_credentials(&c, &secret).await,
                Grant::AuthorizationCode => match old.as_ref().and_then(|t| t.refresh.clone()) {
                    Some(refresh) => self.refresh(&c, &secret, &refresh).await,
                    None => Err(TokenError::NeedsAuthorization(format!(
                        "connection `{name}`'s token expired and the provider gave no refresh token; authorize again"
                    ))),
                },
            },
        };
        match result {
            Ok(mut t) => {
                // A provider that does not rotate refresh tokens sends none back: keep the one we had.
                if t.refresh.is_none() {
                    t.refresh = old.and_then(|o| o.refresh);
                }
                let tok = t.access.clone();
                let renew = Self::renew_at(&t);
                self.set_tokens(tenant, &mut c, t)?;
                let doc = serde_json::to_string(&c).map_err(|e| TokenError::Store(e.to_string()))?;
                if !self.catalog.put_connection_locked(tenant, name, &doc, lock).await? {
                    tracing::warn!(
                        tenant,
                        connection = name,
                        "a token refresh outlived its lock; its result is not stored"
                    );
                }
                Ok((tok, renew))
            }
            Err(e @ (TokenError::NeedsAuthorization(_) | TokenError::Broken(_))) => {
                let (status, msg) = match &e {
                    // No user can authorize a client-credentials connection again: its client is refused.
                    TokenError::NeedsAuthorization(m) if c.grant == Grant::ClientCredentials => {
                        (Status::Broken, m.clone())
                    }
                    TokenError::NeedsAuthorization(m) => (Status::NeedsAuthorization, m.clone()),
                    TokenError::Broken(m) => (Status::Broken, m.clone()),
                    _ => (Status::Broken, String::new()),
                };
                tracing::warn!(tenant, connection = name, status = status.as_str(), "{msg}");
                c.status = status;
                c.tokens_sealed = None;
                c.expires_at = None;
                c.last_error = Some(msg.clone());
                c.updated_at = rfc3339(now_ms());
                let doc = serde_json::to_string(&c).map_err(|e| TokenError::Store(e.to_string()))?;
                self.catalog.put_connection_locked(tenant, name, &doc, lock).await?;
                if status == Status::NeedsAuthorization {
                    self.announce(tenant, name, &msg).await;
                }
                Err(e)
            }
            Err(e) => {
                // The endpoint failed for now: steps of this process waiting on it fail the same way until it
                // said to wait (or a second), each by its own retry policy, instead of calling it again.
                if let TokenError::Transient { retry_after_ms, .. } = &e {
                    let until = now_ms() + retry_after_ms.unwrap_or(1_000).min(60_000);
                    if let Ok(mut b) = self.backoff.lock() {
                        b.insert(format!("{tenant}/{name}"), (until, e.clone()));
                    }
                }
                Err(e)
            }
        }
    }

    /// `connection.needs_authorization`, for pipelines that alert the tenant's user.
    async fn announce(&self, tenant: &str, name: &str, reason: &str) {
        let Some(events) = self.events.get().and_then(Weak::upgrade) else { return };
        let id = format!("evt_{}", ulid::Ulid::new());
        let data =
            json!({ "connection": name, "reason": reason, "authorize": format!("/v1/connections/{name}/authorize") });
        if let Err(e) = events.emit(tenant, "connection.needs_authorization", &id, &data).await {
            tracing::warn!(tenant, connection = name, "cannot emit connection.needs_authorization: {e}");
        }
    }

    fn set_tokens(&self, tenant: &str, c: &mut Connection, t: Tokens) -> Result<(), TokenError> {
        let plain = serde_json::to_string(&t).map_err(|e| TokenError::Store(e.to_string()))?;
        c.tokens_sealed = Some(
            self.key.seal(&owner(tenant, &c.name, "tokens"), &plain).map_err(|e| TokenError::Store(e.to_string()))?,
        );
        c.expires_at = t.expires_ms.map(rfc3339);
        c.status = Status::Connected;
        c.last_error = None;
        c.updated_at = rfc3339(now_ms());
        Ok(())
    }

    fn to_tokens(r: &oauth2::basic::BasicTokenResponse) -> Tokens {
        let now = now_ms();
        Tokens {
            access: r.access_token().secret().clone(),
            refresh: r.refresh_token().map(|t| t.secret().clone()),
            // At most a year: a provider's huge `expires_in` neither overflows nor keeps a token forever.
            expires_ms: r.expires_in().map(|d| now.saturating_add((d.as_millis() as u64).min(365 * 24 * 3_600_000))),
            obtained_ms: now,
        }
    }

    /// An `oauth2` client of the connection's token endpoint, authenticating as its configuration says.
    fn token_client(c: &Connection, secret: &str) -> Result<TokenClient, TokenError> {
        Ok(BasicClient::new(ClientId::new(c.client_id.clone()))
            .set_client_secret(ClientSecret::new(secret.to_string()))
            .set_token_uri(url("token_url", &c.token_url, TokenUrl::new)?)
            .set_auth_type(Self::auth_type(c)))
    }

    fn auth_type(c: &Connection) -> AuthType {
        match c.auth_method {
            AuthMethod::ClientSecretBasic => AuthType::BasicAuth,
            AuthMethod::ClientSecretPost => AuthType::RequestBody,
        }
    }

    fn client_credentials<'a>(
        &'a self,
        c: &'a Connection,
        secret: &'a str,
    ) -> BoxFuture<'a, Result<Tokens, TokenError>> {
        async move {
            let client = Self::token_client(c, secret)?;
            let mut req = client.exchange_client_credentials().add_scopes(c.scopes.iter().cloned().map(Scope::new));
            for (k, v) in &c.extra_params {
                req = req.add_extra_param(k.clone(), v.clone());
            }
            let (send, seen) = sender(&self.http, self.egress);
            let r = classify(&c.name, &seen, req.request_async(&send).await)?;
            Ok(Self::to_tokens(&r))
        }
        .boxed()
    }

    fn refresh<'a>(
        &'a self,
        c: &'a Connection,
        secret: &'a str,
        refresh: &'a str,
    ) -> BoxFuture<'a, Result<Tokens, TokenError>> {
        async move {
            let client = Self::token_client(c, secret)?;
            let token = RefreshToken::new(refresh.to_string());
            let (send, seen) = sender(&self.http, self.egress);
            let r = classify(&c.name, &seen, client.exchange_refresh_token(&token).request_async(&send).await)?;
            Ok(Self::to_tokens(&r))
        }
        .boxed()
    }

    /// Starts an authorization (code grant): a fresh `state` and PKCE verifier, kept for 10 minutes;
    /// answers the provider URL to open and when it expires.
    pub async fn authorize(
        &self,
        tenant: &str,
        c: &Connection,
        redirect_uri: &str,
    ) -> Result<(String, String), TokenError> {
        let authorize_url = c
            .authorize_url
            .as_deref()
            .ok_or_else(|| TokenError::Broken(format!("connection `{}` has no `authorize_url`", c.name)))?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = CsrfToken::new_random_len(32);
        let client = BasicClient::new(ClientId::new(c.client_id.clone()))
            .set_auth_uri(url("authorize_url", authorize_url, AuthUrl::new)?)
            .set_redirect_uri(url("redirect_uri", redirect_uri, RedirectUrl::new)?);
        let st = state.clone();
        let mut req = client
            .authorize_url(move || st)
            .add_scopes(c.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge);
        for (k, v) in &c.extra_params {
            req = req.add_extra_param(k.clone(), v.clone());
        }
        let (url, _) = req.url();
        let pending = Pending {
            tenant: tenant.to_string(),
            connection: c.name.clone(),
            client_id: c.client_id.clone(),
            verifier_sealed: self
                .key
                .seal(&format!("oauth-state/{}", state.secret()), verifier.secret())
                .map_err(|e| TokenError::Store(e.to_string()))?,
            redirect_uri: redirect_uri.to_string(),
            created_ms: now_ms(),
        };
        let doc = serde_json::to_string(&pending).map_err(|e| TokenError::Store(e.to_string()))?;
        self.catalog.put_authorization(state.secret(), &doc, AUTHORIZATION_TTL_MS).await?;
        Ok((url.to_string(), rfc3339(now_ms() + AUTHORIZATION_TTL_MS)))
    }

    /// The callback: the `state` is taken (so a replay finds nothing), the issuer checked when sent, and the
    /// code exchanged once. Answers the tenant and connection that are now connected. Refusals call no
    /// provider.
    pub async fn callback(
        &self,
        state: &str,
        code: Option<&str>,
        iss: Option<&str>,
        error: Option<&str>,
    ) -> Result<(String, String), CallbackError> {
        let doc = self.catalog.take_authorization(state).await.map_err(|e| CallbackError::Store(e.to_string()))?;
        let Some(doc) = doc else { return Err(CallbackError::UnknownState) };
        let p: Pending = serde_json::from_str(&doc).map_err(|_| CallbackError::UnknownState)?;
        if now_ms().saturating_sub(p.created_ms) > AUTHORIZATION_TTL_MS {
            return Err(CallbackError::Expired);
        }
        let mut c = self
            .load(&p.tenant, &p.connection)
            .await
            .map_err(|e| CallbackError::Store(e.to_string()))?
            .ok_or(CallbackError::UnknownState)?;
        if c.grant != Grant::AuthorizationCode || c.client_id != p.client_id {
            // Deleted and made again (another client) since this authorization began.
            return Err(CallbackError::UnknownState);
        }
        // RFC 9207: the configured issuer exactly; else the issuer must be where the authorize URL lives
        // (`https://kc/realms/x` for `https://kc/realms/x/protocol/openid-connect/auth`).
        if let Some(iss) = iss {
            let iss_t = iss.trim_end_matches('/');
            let ok = match (&c.issuer, &c.authorize_url) {
                (Some(want), _) => iss_t == want.trim_end_matches('/'),
                (None, Some(auth)) => auth == iss_t || auth.starts_with(&format!("{iss_t}/")),
                (None, None) => false,
            };
            if !ok {
                return Err(CallbackError::WrongIssuer(iss.to_string()));
            }
        }
        if let Some(e) = error {
            return Err(CallbackError::Denied(e.to_string()));
        }
        let code = code.ok_or(CallbackError::NoCode)?;
        let verifier = self
            .key
            .open(&format!("oauth-state/{state}"), &p.verifier_sealed)
            .map_err(|_| CallbackError::UnknownState)?;
        self.allowed(&c).map_err(|e| CallbackError::Provider(e.to_string()))?;
        let secret = self.client_secret(&p.tenant, &c).map_err(|e| CallbackError::Provider(e.to_string()))?;
        let client = Self::token_client(&c, &secret)
            .and_then(|cl| Ok(cl.set_redirect_uri(url("redirect_uri", &p.redirect_uri, RedirectUrl::new)?)))
            .map_err(|e| CallbackError::Provider(e.to_string()))?;
        let code = AuthorizationCode::new(code.to_string());
        let (send, seen) = sender(&self.http, self.egress);
        let sent =
            client.exchange_code(code).set_pkce_verifier(PkceCodeVerifier::new(verifier)).request_async(&send).await;
        let r = classify(&c.name, &seen, sent).map_err(|e| {
            CallbackError::Provider(match e {
                TokenError::NeedsAuthorization(m) | TokenError::Broken(m) | TokenError::Store(m) => m,
                TokenError::Transient { message, .. } => message,
            })
        })?;
        let t = Self::to_tokens(&r);
        c.granted_scopes = r.scopes().map(|s| s.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" "));
        self.set_tokens(&p.tenant, &mut c, t).map_err(|e| CallbackError::Store(format!("{e:?}")))?;
        self.save(&p.tenant, &c).await.map_err(|e| CallbackError::Store(e.to_string()))?;
        tracing::info!(tenant = %p.tenant, connection = %p.connection, "connection authorized");
        Ok((p.tenant, p.connection))
    }

    /// The connection as the API shows it: everything but the secret and the tokens.
    pub fn shown(&self, c: &Connection) -> Value {
        json!({
            "name": c.name, "grant": c.grant, "token_url": c.token_url, "authorize_url": c.authorize_url,
            "client_id": c.client_id, "scopes": c.scopes, "auth_method": c.auth_method,
            "extra_params": c.extra_params, "issuer": c.issuer, "status": c.status.as_str(),
            "expires_at": c.expires_at, "granted_scopes": c.granted_scopes, "last_error": c.last_error,
            "updated_at": c.updated_at,
        })
    }
}

/// Why a callback was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error(
        "this authorization is unknown or was used already; start again with POST /v1/connections/{{name}}/authorize"
    )]
    UnknownState,
    #[error("this authorization expired (they last 10 minutes); start again")]
    Expired,
    #[error("the callback names issuer `{0}`, not this connection's provider")]
    WrongIssuer(String),
    #[error("the provider did not grant access: {0}")]
    Denied(String),
    #[error("the callback has no `code`")]
    NoCode,
    #[error("the provider refused the code: {0}")]
    Provider(String),
    #[error("the store failed: {0}")]
    Store(String),
}

impl TokenSource for Connections {
    fn token<'a>(
        &'a self,
        tenant: &'a str,
        connection: &'a str,
        rejected: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, StepError>> {
        async move { self.access_token(tenant, connection, rejected).await.map_err(StepError::from) }.boxed()
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::SqliteStore;

    fn connection(mgr: &Connections, tenant: &str, token_url: &str) -> Connection {
        Connection {
            name: "crm".into(),
            grant: Grant::AuthorizationCode,
            token_url: token_url.into(),
            authorize_url: Some("https://auth.example.com/authorize".into()),
            client_id: "c".into(),
            client_secret_sealed: mgr.seal_secret(tenant, "crm", "s").unwrap_or_default(),
            scopes: vec![],
            auth_method: AuthMethod::ClientSecretBasic,
            extra_params: BTreeMap::new(),
            issuer: None,
            status: Status::NeedsAuthorization,
            tokens_sealed: None,
            expires_at: None,
            granted_scopes: None,
            last_error: None,
            updated_at: rfc3339(now_ms()),
        }
    }

    #[tokio::test]
    async fn expired_forged_and_replayed_callbacks_never_reach_the_provider() {
        let dir = std::env::temp_dir().join(format!("sluice-oauth-unit-{}", ulid::Ulid::new()));
        let store = Arc::new(SqliteStore::open(&dir).expect("store"));
        let key = MasterKey::from_base64(&MasterKey::generate()).expect("key");
        let mgr = Connections::new(
            store.clone(),
            key,
            reqwest::Client::new(),
            sluice_connectors::egress::Egress::AllowPrivate,
        );
        // A token endpoint that nobody serves: reaching it would answer `Provider`, not the refusals below.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port");
        let c = connection(&mgr, "acme", &format!("http://{closed}/token"));
        mgr.save("acme", &c).await.expect("save");
        let (url, _) = mgr.authorize("acme", &c, "http://127.0.0.1:1/oauth/callback").await.expect("authorize");
        assert!(url.contains("code_challenge_method=S256"));
        let state = url.split("state=").nth(1).and_then(|s| s.split('&').next()).unwrap_or_default().to_string();
        assert_eq!(mgr.callback("forged", Some("x"), None, None).await, Err(CallbackError::UnknownState));
        // An issuer that is not the provider's.
        let e = mgr.callback(&state, Some("x"), Some("https://evil.example"), None).await;
        assert_eq!(e, Err(CallbackError::WrongIssuer("https://evil.example".into())));
        // The state was taken by that attempt: replaying it finds nothing.
        assert_eq!(mgr.callback(&state, Some("x"), None, None).await, Err(CallbackError::UnknownState));
        // An authorization older than its lifetime.
        let pending = Pending {
            tenant: "acme".into(),
            connection: "crm".into(),
            client_id: "c".into(),
            verifier_sealed: String::new(),
            redirect_uri: "http://127.0.0.1:1/oauth/callback".into(),
            created_ms: now_ms() - AUTHORIZATION_TTL_MS - 1,
        };
        let doc = serde_json::to_string(&pending).unwrap_or_default();
        store.put_authorization("old", &doc, 60_000).await.expect("put");
        assert_eq!(mgr.callback("old", Some("x"), None, None).await, Err(CallbackError::Expired));
        // A provider's refusal passed back by the browser.
        let (url, _) = mgr.authorize("acme", &c, "http://127.0.0.1:1/oauth/callback").await.expect("authorize");
        let state = url.split("state=").nth(1).and_then(|s| s.split('&').next()).unwrap_or_default().to_string();
        let e = mgr.callback(&state, None, None, Some("access_denied")).await;
        assert_eq!(e, Err(CallbackError::Denied("access_denied".into())));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn token_endpoints_pass_the_egress_guard() {
        let dir = std::env::temp_dir().join(format!("sluice-oauth-unit-{}", ulid::Ulid::new()));
        let store = Arc::new(SqliteStore::open(&dir).expect("store"));
        let key = MasterKey::from_base64(&MasterKey::generate()).expect("key");
        let mgr = Connections::new(store, key, reqwest::Client::new(), sluice_connectors::egress::Egress::PublicOnly);
        let mut c = connection(&mgr, "acme", "http://169.254.169.254/token");
        c.grant = Grant::ClientCredentials;
        c.status = Status::Connected;
        mgr.save("acme", &c).await.expect("save");
        let e = mgr.access_token("acme", "crm", None).await;
        assert!(matches!(&e, Err(TokenError::Broken(m)) if m.contains("169.254.169.254")), "{e:?}");
        assert_eq!(mgr.load("acme", "crm").await.expect("load").map(|c| c.status), Some(Status::Broken));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
