//! `[registry]`: what the registry allows and how much it accepts.

use std::time::Duration;

use serde::Deserialize;

use crate::registry::RegistryConfig;

/// `[registry]` as written.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileRegistry {
    delete_enabled: bool,
    max_manifest_bytes: usize,
    max_blob_bytes: u64,
    upload_timeout_secs: u64,
}

impl Default for FileRegistry {
    fn default() -> Self {
        FileRegistry { delete_enabled: true, max_manifest_bytes: 4 << 20, max_blob_bytes: 32 << 30, upload_timeout_secs: 24 * 3600 }
    }
}

impl FileRegistry {
    pub(super) fn load(self) -> Result<RegistryConfig, String> {
        if self.max_manifest_bytes == 0 || self.max_manifest_bytes > 64 << 20 {
            return Err("registry.max_manifest_bytes: expected 1 to 67108864".to_owned());
        }
        Ok(RegistryConfig {
            delete_enabled: self.delete_enabled,
            max_manifest_bytes: self.max_manifest_bytes,
            max_blob_bytes: self.max_blob_bytes,
            upload_timeout: Duration::from_secs(self.upload_timeout_secs),
        })
    }
}
