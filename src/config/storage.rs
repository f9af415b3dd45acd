//! `[storage]` and `[storage.s3]`: which object store holds the registry's bytes, and where the
//! node-local index lives. Nothing is opened here: `server::open_store` does that at start.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::{S3Storage, StorageConfig};

/// `[storage]` as written.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileStorage {
    backend: String,
    data_dir: PathBuf,
    index_dir: Option<PathBuf>,
    s3: Option<S3Storage>,
}

impl Default for FileStorage {
    fn default() -> Self {
        FileStorage { backend: "fs".to_owned(), data_dir: PathBuf::from("./data"), index_dir: None, s3: None }
    }
}

/// `[storage]`, validated.
pub(super) struct Storage {
    pub(super) backend: StorageConfig,
    pub(super) index_dir: PathBuf,
}

// Written out rather than derived (with the S3 settings in config.rs, which move to
// `storage::S3Config` later) so that the credentials are never printed.
impl fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |key: &Option<String>| key.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Storage")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &redacted(&self.access_key_id))
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("part_size_mib", &self.part_size_mib)
            .field("single_writer", &self.single_writer)
            .field("checksum_when_required", &self.checksum_when_required)
            .field("redirect_blobs", &self.redirect_blobs)
            .field("presign_expiry_secs", &self.presign_expiry_secs)
            .field("timeout_secs", &self.timeout_secs)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl FileStorage {
    /// `data_dir` is the directory from a flag or the environment, which wins over the file's.
    pub(super) fn load(self, data_dir: Option<PathBuf>) -> Result<Storage, String> {
        let data_dir = data_dir.unwrap_or(self.data_dir);
        let backend = match (self.backend.as_str(), self.s3) {
            ("fs", _) => StorageConfig::Fs { root: data_dir.join("store") },
            ("s3", Some(s3)) => {
                if !(5..=5120).contains(&s3.part_size_mib) {
                    return Err(format!("storage.s3.part_size_mib: expected 5 to 5120, found {}", s3.part_size_mib));
                }
                StorageConfig::S3(s3)
            }
            ("s3", None) => return Err("storage.backend = \"s3\" needs a [storage.s3] section".to_owned()),
            (other, _) => return Err(format!("storage.backend: expected \"fs\" or \"s3\", found {other:?}")),
        };
        Ok(Storage { backend, index_dir: self.index_dir.unwrap_or_else(|| data_dir.join("index")) })
    }
}
