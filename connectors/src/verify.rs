//! Verifying inbound webhooks: Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`,
//! 5-minute tolerance, several secrets while rotating) and HMAC-SHA256 of the body in one header. Signatures
//! are compared in constant time. Pure functions: the caller passes the headers, the body and the clock.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a `webhook-timestamp` may be from now, either way (what the official libraries use).
pub const TOLERANCE_S: u64 = 5 * 60;

/// Why a request was refused; the message says what to fix, for the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the request has no `{0}` header; sign it with the Standard Webhooks scheme")]
    MissingHeader(&'static str),
    #[error("the `{0}` header is missing; it must carry the hex HMAC-SHA256 of the body")]
    MissingSignatureHeader(String),
    #[error("`webhook-timestamp` must be whole seconds since the Unix epoch")]
    BadTimestamp,
    #[error("the message is too old: `webhook-timestamp` is more than 5 minutes in the past")]
    TooOld,
    #[error("the message is too new: `webhook-timestamp` is more than 5 minutes in the future")]
    TooNew,
    #[error("no signature matches: the body, the id or the timestamp changed, or it was signed with another secret")]
    NoMatch,
    #[error("the verification secret is not usable: {0}")]
    BadSecret(String),
}

/// What a verified Standard Webhooks message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `webhook-id`: the key for de-duplication.
    pub id: String,
    pub timestamp: u64,
}

fn mac(key: &[u8]) -> Result<Hmac<Sha256>, VerifyError> {
    Hmac::<Sha256>::new_from_slice(key).map_err(|e| VerifyError::BadSecret(e.to_string()))
}

/// The HMAC key of a `whsec_...` secret: the base64-decoded bytes after the prefix.
fn whsec_key(secret: &str) -> Result<Vec<u8>, VerifyError> {
    let b64 = secret.trim().strip_prefix("whsec_").unwrap_or(secret.trim());
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| VerifyError::BadSecret("a Standard Webhooks secret is `whsec_` followed by base64".into()))
}

/// Verifies a Standard Webhooks message. `header` looks a header up by lower-case name. Any `v1` signature
/// made with any of `secrets` is accepted (rotation); other versions are ignored.
pub fn standard_webhooks<'a>(
    secrets: &[String],
    header: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
    now_s: u64,
) -> Result<Verified, VerifyError> {
    let id = header("webhook-id").ok_or(VerifyError::MissingHeader("webhook-id"))?;
    let ts_text = header("webhook-timestamp").ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
    let signatures = header("webhook-signature").ok_or(VerifyError::MissingHeader("webhook-signature"))?;
    let ts: u64 = ts_text.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    if ts.saturating_add(TOLERANCE_S) < now_s {
        return Err(VerifyError::TooOld);
    }
    if ts > now_s.saturating_add(TOLERANCE_S) {
        return Err(VerifyError::TooNew);
    }
    let sigs: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .collect();
    for secret in secrets {
        let key = whsec_key(secret)?;
        for sig in &sigs {
            let mut m = mac(&key)?;
            m.update(id.as_bytes());
            m.update(b".");
            m.update(ts_text.trim().as_bytes());
            m.update(b".");
            m.update(body);
            // `verify_slice` compares in constant time and refuses a signature of another length.
            if m.verify_slice(sig).is_ok() {
                return Ok(Verified { id: id.to_string(), timestamp: ts });
            }
        }
    }
    Err(VerifyError::NoMatch)
}

/// Verifies an HMAC-SHA256 of the body carried as hex in `header_name` (an optional `sha256=` prefix, as
/// GitHub sends it, is accepted). Each of `secrets` is tried (rotation); the secret is used as UTF-8 bytes.
pub fn hmac_sha256<'a>(
    secrets: &[String],
    header_name: &str,
    header: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
) -> Result<(), VerifyError> {
    let name = header_name.to_ascii_lowercase();
    let value = header(&name).ok_or_else(|| VerifyError::MissingSignatureHeader(name.clone()))?;
    let hex_sig = value.trim().strip_prefix("sha256=").unwrap_or(value.trim());
    let sig = hex::decode(hex_sig).map_err(|_| VerifyError::NoMatch)?;
    for secret in secrets {
        let mut m = mac(secret.as_bytes())?;
        m.update(body);
        if m.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn signed(id: &str, ts: u64, body: &[u8]) -> HashMap<String, String> {
        let sig = crate::exec::sign(&[SECRET.to_string()], id, ts, body).unwrap_or_default();
        HashMap::from([
            ("webhook-id".to_string(), id.to_string()),
            ("webhook-timestamp".to_string(), ts.to_string()),
            ("webhook-signature".to_string(), sig),
        ])
    }

    fn check(h: &HashMap<String, String>, body: &[u8], now: u64) -> Result<Verified, VerifyError> {
        standard_webhooks(&[SECRET.to_string()], |k| h.get(k).map(String::as_str), body, now)
    }

    #[test]
    fn standard_webhooks_round_trip_and_refusals() {
        let now = 1_700_000_000;
        let h = signed("msg_1", now, b"{\"a\":1}");
        assert_eq!(check(&h, b"{\"a\":1}", now).map(|v| v.id), Ok("msg_1".into()));
        assert_eq!(check(&h, b"{\"a\":2}", now), Err(VerifyError::NoMatch), "a tampered body");
        assert_eq!(check(&h, b"{\"a\":1}", now + TOLERANCE_S + 1), Err(VerifyError::TooOld));
        assert_eq!(check(&h, b"{\"a\":1}", now - TOLERANCE_S - 1), Err(VerifyError::TooNew));
        for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            let mut h2 = h.clone();
            h2.remove(missing);
            assert!(matches!(check(&h2, b"{\"a\":1}", now), Err(VerifyError::MissingHeader(m)) if m == missing));
        }
        // The truncated signature `v1,` once passed a library that compared the shorter length.
        let mut h3 = h.clone();
        h3.insert("webhook-signature".into(), "v1,".into());
        assert_eq!(check(&h3, b"{\"a\":1}", now), Err(VerifyError::NoMatch));
        // Rotation: the old secret still verifies while both are configured.
        let both = [String::from("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"), SECRET.to_string()];
        assert!(standard_webhooks(&both, |k| h.get(k).map(String::as_str), b"{\"a\":1}", now).is_ok());
    }

    #[test]
    fn hmac_sha256_with_or_without_prefix() {
        let mut m = mac(b"topsecret").unwrap_or_else(|_| unreachable!());
        m.update(b"body");
        let hex_sig = hex::encode(m.finalize().into_bytes());
        for value in [hex_sig.clone(), format!("sha256={hex_sig}")] {
            let h = HashMap::from([("x-hub-signature-256".to_string(), value)]);
            let get = |k: &str| h.get(k).map(String::as_str);
            assert_eq!(hmac_sha256(&["topsecret".into()], "X-Hub-Signature-256", get, b"body"), Ok(()));
            assert_eq!(hmac_sha256(&["other".into()], "x-hub-signature-256", get, b"body"), Err(VerifyError::NoMatch));
            assert_eq!(
                hmac_sha256(&["topsecret".into()], "x-hub-signature-256", get, b"bodx"),
                Err(VerifyError::NoMatch)
            );
        }
        let none = |_: &str| None;
        assert!(matches!(
            hmac_sha256(&["s".into()], "x-signature-256", none, b""),
            Err(VerifyError::MissingSignatureHeader(_))
        ));
    }
}
