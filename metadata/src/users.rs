//! Users: one salted SCRAM credential per user and mechanism under
//! `users/<name>/<mechanism>` (RFC 5802's `StoredKey` and `ServerKey`, the
//! salt and the iteration count; never a password). The credentials are
//! computed and checked by `sluice-auth`; this module only stores them.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::keys::Key;
use crate::model::{Catalog, ModelError, ModelResult};

/// A SCRAM mechanism credentials are stored for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramMechanism {
    /// Both, strongest first.
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha512, ScramMechanism::Sha256];

    /// The SASL name.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// By SASL name (case-insensitive).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Kafka's `ScramMechanism` code (AlterUserScramCredentials).
    pub fn code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// By Kafka code.
    pub fn from_code(code: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.code() == code)
    }

    /// Bytes of the mechanism's hash output.
    pub fn hash_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }
}

impl std::fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Fewest iterations a credential may have (RFC 7677 recommends 4096;
/// Kafka's own lower bound).
pub const ITERATIONS_MIN: u32 = 4096;
/// Most iterations a credential may have (Kafka's upper bound): a
/// PLAIN login hashes this many times.
pub const ITERATIONS_MAX: u32 = 16384;
/// Longest user name.
pub const USER_NAME_MAX_LEN: usize = 256;

/// One user's credential for one mechanism, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    /// The salt (base64 in the store).
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
}

mod b64 {
    use super::*;

    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Refuse a user name the store cannot key or SCRAM cannot carry.
pub fn validate_user_name(name: &str) -> ModelResult<()> {
    if name.is_empty() || name.len() > USER_NAME_MAX_LEN {
        return Err(ModelError::Invalid(format!(
            "a user name has 1 to {USER_NAME_MAX_LEN} bytes"
        )));
    }
    if name.chars().any(|c| c == '/' || c.is_control()) {
        return Err(ModelError::Invalid(format!(
            "user name {name:?} contains '/' or a control character"
        )));
    }
    Ok(())
}

/// An HTTP bearer token as stored (under the digest of its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The principal the token acts as (`User:alice`).
    pub principal: String,
    /// When it was created, ms since the epoch.
    pub created_ms: i64,
    /// What it is for.
    #[serde(default)]
    pub description: String,
}

impl Catalog {
    /// Store a token by the digest of its secret.
    pub async fn put_token(&self, digest: &str, token: &TokenRecord) -> ModelResult<()> {
        let value = serde_json::to_vec(token)
            .map_err(|e| ModelError::Invalid(format!("encoding a token: {e}")))?;
        self.store()
            .put(&self.keys().token(digest), value.into(), None)
            .await?;
        Ok(())
    }

    /// The token stored under `digest`, if any.
    pub async fn token(&self, digest: &str) -> ModelResult<Option<TokenRecord>> {
        if digest.is_empty() || digest.contains('/') {
            return Ok(None);
        }
        let Some(kv) = self.store().get(&self.keys().token(digest)).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&kv.value)
            .map(Some)
            .map_err(|e| ModelError::Invalid(format!("{}: {e}", kv.key)))
    }

    /// Every token: (digest, record).
    pub async fn tokens(&self) -> ModelResult<Vec<(String, TokenRecord)>> {
        let keys = self.keys();
        let mut out = Vec::new();
        for kv in self.store().range(&keys.tokens()).await?.kvs {
            if let Some(Key::Token { digest }) = keys.parse(&kv.key) {
                let record = serde_json::from_slice(&kv.value)
                    .map_err(|e| ModelError::Invalid(format!("{}: {e}", kv.key)))?;
                out.push((digest.to_string(), record));
            }
        }
        Ok(out)
    }

    /// Revoke every token whose digest starts with `prefix` (at least 8
    /// hex digits); how many were.
    pub async fn revoke_tokens(&self, prefix: &str) -> ModelResult<usize> {
        if prefix.len() < 8 {
            return Err(ModelError::Invalid(
                "name a token by at least 8 digits of its digest".into(),
            ));
        }
        let mut revoked = 0;
        for (digest, _) in self.tokens().await? {
            if digest.starts_with(prefix)
                && self.store().delete(&self.keys().token(&digest)).await?
            {
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    /// `user`'s credential for `mechanism`, if there is one.
    pub async fn user_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> ModelResult<Option<ScramCredential>> {
        if validate_user_name(user).is_err() {
            return Ok(None);
        }
        let key = self.keys().user_credential(user, mechanism.name());
        let Some(kv) = self.store().get(&key).await? else {
            return Ok(None);
        };
        let credential = serde_json::from_slice(&kv.value)
            .map_err(|e| ModelError::Invalid(format!("{key}: {e}")))?;
        Ok(Some(credential))
    }

    /// Every user and the (mechanism, iterations) of each credential.
    pub async fn users(&self) -> ModelResult<BTreeMap<String, Vec<(ScramMechanism, u32)>>> {
        let keys = self.keys();
        let mut users: BTreeMap<String, Vec<(ScramMechanism, u32)>> = BTreeMap::new();
        for kv in self.store().range(&keys.users()).await?.kvs {
            let Some(Key::UserCredential { name, mechanism }) = keys.parse(&kv.key) else {
                continue;
            };
            let Some(mechanism) = ScramMechanism::parse(mechanism) else {
                continue;
            };
            let credential: ScramCredential = serde_json::from_slice(&kv.value)
                .map_err(|e| ModelError::Invalid(format!("{}: {e}", kv.key)))?;
            users
                .entry(name.to_string())
                .or_default()
                .push((mechanism, credential.iterations));
        }
        Ok(users)
    }

    /// Create or replace `user`'s credential for `mechanism`.
    pub async fn put_user_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
        credential: &ScramCredential,
    ) -> ModelResult<()> {
        validate_user_name(user)?;
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&credential.iterations) {
            return Err(ModelError::Invalid(format!(
                "iterations must be between {ITERATIONS_MIN} and {ITERATIONS_MAX}"
            )));
        }
        let key = self.keys().user_credential(user, mechanism.name());
        let value = serde_json::to_vec(credential)
            .map_err(|e| ModelError::Invalid(format!("encoding a credential: {e}")))?;
        self.store().put(&key, value.into(), None).await?;
        Ok(())
    }

    /// Delete `user`'s credential for `mechanism` (every mechanism when
    /// `None`); whether there was one.
    pub async fn delete_user_credential(
        &self,
        user: &str,
        mechanism: Option<ScramMechanism>,
    ) -> ModelResult<bool> {
        validate_user_name(user)?;
        let mut deleted = false;
        for m in ScramMechanism::ALL {
            if mechanism.is_none_or(|only| only == m) {
                let key = self.keys().user_credential(user, m.name());
                deleted |= self.store().delete(&key).await?;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::embedded::EmbeddedStore;

    fn credential(iterations: u32) -> ScramCredential {
        ScramCredential {
            salt: vec![1, 2, 3],
            iterations,
            stored_key: vec![4; 32],
            server_key: vec![5; 32],
        }
    }

    #[tokio::test]
    async fn credentials_are_stored_per_user_and_mechanism() {
        let catalog = Catalog::new(Arc::new(EmbeddedStore::in_memory()), "c");
        let sha512 = ScramMechanism::Sha512;
        catalog
            .put_user_credential("alice", sha512, &credential(4096))
            .await
            .unwrap();
        catalog
            .put_user_credential("alice", ScramMechanism::Sha256, &credential(8192))
            .await
            .unwrap();
        assert_eq!(
            catalog.user_credential("alice", sha512).await.unwrap(),
            Some(credential(4096))
        );
        assert_eq!(catalog.user_credential("bob", sha512).await.unwrap(), None);
        let users = catalog.users().await.unwrap();
        assert_eq!(
            users["alice"],
            vec![(ScramMechanism::Sha256, 8192), (sha512, 4096)]
        );
        assert!(catalog
            .delete_user_credential("alice", Some(sha512))
            .await
            .unwrap());
        assert!(!catalog
            .delete_user_credential("alice", Some(sha512))
            .await
            .unwrap());
        assert!(catalog.delete_user_credential("alice", None).await.unwrap());
        assert!(catalog.users().await.unwrap().is_empty());
        // refused: too few iterations, a name with a slash
        assert!(catalog
            .put_user_credential("alice", sha512, &credential(100))
            .await
            .is_err());
        assert!(catalog
            .put_user_credential("a/b", sha512, &credential(4096))
            .await
            .is_err());
        // the salt is base64 in the store
        let text = serde_json::to_string(&credential(4096)).unwrap();
        assert!(text.contains("\"salt\":\"AQID\""), "{text}");
    }

    #[test]
    fn mechanisms_by_name_and_code() {
        for m in ScramMechanism::ALL {
            assert_eq!(ScramMechanism::parse(m.name()), Some(m));
            assert_eq!(ScramMechanism::from_code(m.code()), Some(m));
        }
        assert_eq!(
            ScramMechanism::parse("scram-sha-256"),
            Some(ScramMechanism::Sha256)
        );
        assert_eq!(ScramMechanism::parse("PLAIN"), None);
    }
}
