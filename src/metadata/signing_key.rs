//! The verification-summary signing key the registry generates when none is configured
//! (`keys/vsa-signing-key.pem`), written create-only so that replicas starting together agree on
//! one. What the key is and does is in `signing.rs`.

use bytes::Bytes;
use storage::{BlobStoreError, PutCondition};

use super::{Key, Metadata, MetadataError, Result};

/// Largest key read.
const MAX_KEY: usize = 16 << 10;

impl Metadata {
    /// The generated key, PEM, if one is stored.
    pub async fn signing_key_pem(&self) -> Result<Option<String>> {
        let object = self.store.get_small(&Key::SigningKey.to_string(), MAX_KEY).await?;
        Ok(object.map(|object| String::from_utf8_lossy(&object.bytes).into_owned()))
    }

    /// Stores `pem` as the generated key unless one is stored already; returns the key in force:
    /// `pem`, or the one another replica stored first.
    pub async fn create_signing_key_pem(&self, pem: &str) -> Result<String> {
        let key = Key::SigningKey.to_string();
        match self.store.put_small(&key, Bytes::from(pem.as_bytes().to_vec()), PutCondition::IfAbsent).await {
            Ok(_) => Ok(pem.to_owned()),
            Err(BlobStoreError::PreconditionFailed(_)) => {
                let stored = self.signing_key_pem().await?;
                stored.ok_or_else(|| MetadataError::Corrupt { key, message: "created and then gone".to_owned() })
            }
            Err(err) => Err(err.into()),
        }
    }
}
