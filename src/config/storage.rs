//! `[storage]` and `[storage.s3]`: which object store holds the registry's bytes, and where the
//! node-local index lives. Nothing is opened here: `server::open_store` does that at start.

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
