//! Secrets and tokens at rest: XChaCha20-Poly1305 under the master key (`SLUICE_MASTER_KEY`, base64 of 32
//! bytes), with a random 24-byte nonce per value and the owner (tenant and name) bound in as associated data,
//! so a sealed value copied to another tenant or name does not open. The binary reads the key; this module
//! only takes bytes.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

/// Prefix of a sealed value, naming the format so it can change later.
const FORMAT: &str = "v1.";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("SLUICE_MASTER_KEY must be base64 of 32 random bytes (e.g. `openssl rand -base64 32`); {0}")]
    BadKey(String),
    #[error("a sealed value cannot be opened: wrong master key, or the value belongs to another owner or was altered")]
    Open,
    #[error("a sealed value is not in a known format")]
    Format,
}

/// The master key.
#[derive(Clone)]
pub struct MasterKey(XChaCha20Poly1305);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// Reads the key from its base64 text.
    pub fn from_base64(text: &str) -> Result<MasterKey, CryptoError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| CryptoError::BadKey(format!("it does not decode: {e}")))?;
        let key: [u8; 32] =
            bytes.try_into().map_err(|b: Vec<u8>| CryptoError::BadKey(format!("it decodes to {} bytes", b.len())))?;
        Ok(MasterKey(XChaCha20Poly1305::new(Key::from_slice(&key))))
    }

    /// A new random key, as base64 text (for a first start on the embedded store).
    pub fn generate() -> String {
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    }

    /// Seals `plain` for `owner` (e.g. `acme/secret/PARTNER_WHSEC`).
    pub fn seal(&self, owner: &str, plain: &str) -> Result<String, CryptoError> {
        let nonce: [u8; 24] = rand::random();
        let sealed = self
            .0
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain.as_bytes(), aad: owner.as_bytes() })
            .map_err(|_| CryptoError::Open)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{FORMAT}{}", base64::engine::general_purpose::STANDARD.encode(out)))
    }

    /// Opens a value sealed for `owner`.
    pub fn open(&self, owner: &str, sealed: &str) -> Result<String, CryptoError> {
        let b64 = sealed.strip_prefix(FORMAT).ok_or(CryptoError::Format)?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| CryptoError::Format)?;
        if bytes.len() < 24 + 16 {
            return Err(CryptoError::Format);
        }
        let (nonce, body) = bytes.split_at(24);
        let plain = self
            .0
            .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad: owner.as_bytes() })
            .map_err(|_| CryptoError::Open)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_base64(&MasterKey::generate()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn sealed_values_open_only_for_their_owner_and_key() {
        let k = key();
        let sealed = k.seal("acme/secret/TOKEN", "s3cr3t").unwrap_or_default();
        assert!(!sealed.contains("s3cr3t"));
        assert_ne!(sealed, k.seal("acme/secret/TOKEN", "s3cr3t").unwrap_or_default(), "a fresh nonce each time");
        assert_eq!(k.open("acme/secret/TOKEN", &sealed), Ok("s3cr3t".to_string()));
        assert_eq!(k.open("globex/secret/TOKEN", &sealed), Err(CryptoError::Open), "another tenant");
        assert_eq!(key().open("acme/secret/TOKEN", &sealed), Err(CryptoError::Open), "another master key");
        let mut altered = sealed.clone();
        altered.pop();
        altered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(k.open("acme/secret/TOKEN", &altered).is_err());
        assert_eq!(k.open("acme/secret/TOKEN", "plain"), Err(CryptoError::Format));
    }

    #[test]
    fn bad_master_keys_say_how_to_make_one() {
        for bad in ["", "not base64!", "c2hvcnQ="] {
            let e = MasterKey::from_base64(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("32 random bytes"), "{bad:?}: {e}");
        }
        assert_eq!(format!("{:?}", key()), "MasterKey(***)");
    }
}
