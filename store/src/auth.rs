//! API keys: `authorization: Bearer <key>` on gRPC and HTTP alike.
//!
//! Keys are random, shown once at creation, and stored only as their SHA-256
//! hash. A resolved key is cached in process for a short while so the store
//! is not asked on every request; a revoked key therefore keeps working for
//! at most [`CACHE_TTL`].

use std::sync::Arc;
use std::time::Duration;

use crate::{Store, StoreError, Tenant};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_CAPACITY: u64 = 10_000;
const KEY_PREFIX: &str = "aforo_";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing `authorization: Bearer <api key>`")]
    Missing,
    #[error("the authorization header is not `Bearer <api key>`")]
    Malformed,
    #[error("unknown API key")]
    Unknown,
    #[error("cannot check the API key: {0}")]
    Store(#[from] StoreError),
}

/// A freshly generated key: the plaintext (shown once), its hash and a
/// prefix that identifies it in listings without revealing it.
pub struct GeneratedKey {
    pub plaintext: String,
    pub hash: String,
    pub prefix: String,
}

pub fn generate_key() -> GeneratedKey {
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut secret);
    let plaintext = format!("{KEY_PREFIX}{}", hex::encode(secret));
    GeneratedKey {
        hash: hash_key(&plaintext),
        prefix: plaintext[..KEY_PREFIX.len() + 6].to_owned(),
        plaintext,
    }
}

pub fn hash_key(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

/// Creates a key for `tenant` in the store and returns it.
pub async fn create_key(
    store: &dyn Store,
    tenant: &Tenant,
    label: &str,
) -> Result<GeneratedKey, StoreError> {
    let key = generate_key();
    store
        .create_api_key(tenant.id, &key.hash, &key.prefix, label)
        .await?;
    Ok(key)
}

/// Resolves API keys to tenants.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn Store>,
    /// By key hash.
    cache: moka::sync::Cache<String, Tenant>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Authenticator {
            store,
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(CACHE_TTL)
                .build(),
        }
    }

    /// Resolves the value of an `authorization` header.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Tenant, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, key) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
            return Err(AuthError::Malformed);
        }
        let hash = hash_key(key.trim());
        if let Some(tenant) = self.cache.get(&hash) {
            return Ok(tenant);
        }
        // A hash lookup needs no constant-time comparison: the index finds
        // the hash or not, and the hash reveals nothing of the key.
        let tenant = self
            .store
            .tenant_for_api_key(&hash)
            .await?
            .ok_or(AuthError::Unknown)?;
        self.cache.insert(hash, tenant.clone());
        Ok(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_random_and_hash_to_what_is_stored() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a.plaintext, b.plaintext);
        assert!(a.plaintext.starts_with("aforo_"));
        assert_eq!(a.plaintext.len(), 6 + 48);
        assert_eq!(hash_key(&a.plaintext), a.hash);
        assert!(a.plaintext.starts_with(&a.prefix));
        assert!(!a.hash.contains(&a.plaintext[6..]));
    }
}
