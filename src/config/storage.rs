//! `[storage]` and `[storage.s3]`: which object store holds the registry's bytes, and where the
//! node-local index lives. Nothing is opened here: `server::open_store` does that at start.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{S3Storage, StorageConfig};

/// `[storage]` as written.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileStorage {
    backend: String,
    data_dir: PathBuf,
    index_dir: Option<PathBuf>,
    s3: Option<FileS3>,
}

impl Default for FileStorage {
    fn default() -> Self {
        FileStorage { backend: "fs".to_owned(), data_dir: PathBuf::from("./data"), index_dir: None, s3: None }
    }
}

/// `[storage.s3]` as written (see `config/s3.example.toml`).
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileS3 {
    bucket: String,
    region: String,
    endpoint: Option<String>,
    prefix: String,
    force_path_style: bool,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    part_size_mib: u64,
    single_writer: bool,
    checksum_when_required: bool,
    redirect_blobs: bool,
    presign_expiry_secs: u64,
    timeout_secs: u64,
    max_retries: u32,
}

impl Default for FileS3 {
    fn default() -> Self {
        // The store's own defaults, in the file's units.
        let store = ::storage::S3Config::new("", "us-east-1");
        FileS3 {
            bucket: store.bucket,
            region: store.region,
            endpoint: store.endpoint,
            prefix: store.prefix,
            force_path_style: store.force_path_style,
            access_key_id: None,
            secret_access_key: None,
            part_size_mib: store.part_size >> 20,
            single_writer: store.single_writer,
            checksum_when_required: store.checksum_when_required,
            redirect_blobs: false,
            presign_expiry_secs: 300,
            timeout_secs: store.timeout.as_secs(),
            max_retries: store.max_retries,
        }
    }
}

// The keys are never printed: a config dump must not leak them.
impl fmt::Debug for FileS3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileS3").field("bucket", &self.bucket).finish_non_exhaustive()
    }
}

/// `[storage]`, validated.
pub(super) struct Storage {
    pub(super) backend: StorageConfig,
    pub(super) index_dir: PathBuf,
}

impl FileStorage {
    /// `data_dir` is the directory from a flag or the environment, which wins over the file's.
    pub(super) fn load(self, data_dir: Option<PathBuf>) -> Result<Storage, String> {
        let data_dir = data_dir.unwrap_or(self.data_dir);
        let backend = match (self.backend.as_str(), self.s3) {
            ("fs", _) => StorageConfig::Fs { root: data_dir.join("store") },
            ("s3", Some(s3)) => StorageConfig::S3(s3.load()?),
            ("s3", None) => return Err("storage.backend = \"s3\" needs a [storage.s3] section".to_owned()),
            (other, _) => return Err(format!("storage.backend: expected \"fs\" or \"s3\", found {other:?}")),
        };
        Ok(Storage { backend, index_dir: self.index_dir.unwrap_or_else(|| data_dir.join("index")) })
    }
}

impl FileS3 {
    fn load(self) -> Result<S3Storage, String> {
        if self.bucket.is_empty() {
            return Err("storage.s3.bucket is required".to_owned());
        }
        let (min, max) = (::storage::MIN_PART_SIZE >> 20, ::storage::MAX_PART_SIZE >> 20);
        if !(min..=max).contains(&self.part_size_mib) {
            return Err(format!("storage.s3.part_size_mib: expected {min} to {max}, found {}", self.part_size_mib));
        }
        let store = ::storage::S3Config {
            bucket: self.bucket,
            region: self.region,
            endpoint: self.endpoint,
            prefix: self.prefix,
            force_path_style: self.force_path_style,
            access_key_id: self.access_key_id,
            secret_access_key: self.secret_access_key,
            part_size: self.part_size_mib << 20,
            single_writer: self.single_writer,
            checksum_when_required: self.checksum_when_required,
            timeout: Duration::from_secs(self.timeout_secs),
            max_retries: self.max_retries,
        };
        Ok(S3Storage { store, redirect_blobs: self.redirect_blobs, presign_expiry: Duration::from_secs(self.presign_expiry_secs) })
    }
}
