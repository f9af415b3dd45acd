//! The node-local sled index: a cache of [`ManifestSummary`] by digest, and a marker saying the
//! index was completely rebuilt. Deleting its directory loses nothing; a corrupt one is moved aside
//! and started afresh.

use std::path::Path;

use storage::Digest;

use super::{ManifestSummary, MetadataError, Result};

/// Bumped whenever [`ManifestSummary`] changes meaning; a mismatch empties the index, which is then
/// rebuilt from the store. 3: `runnable` replaced `evidence`.
const SCHEMA_VERSION: &[u8] = b"3";

#[derive(Clone)]
pub(super) struct Index {
    summaries: sled::Tree,
    meta: sled::Tree,
}

fn index_error(err: impl std::fmt::Display) -> MetadataError {
    MetadataError::Index(err.to_string())
}

impl Index {
    pub(super) fn open(dir: &Path) -> Result<Index> {
        let db = match sled::open(dir) {
            Ok(db) => db,
            Err(sled::Error::Io(err)) if err.kind() == std::io::ErrorKind::WouldBlock || err.to_string().contains("lock") => {
                return Err(MetadataError::Index(format!(
                    "index directory {} is in use by another process: give each process its own storage.index_dir ({err})",
                    dir.display()
                )));
            }
            Err(err) => {
                // The index is only a cache: move the damaged one aside and start empty.
                let aside = dir.with_extension(format!(
                    "corrupt-{}",
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
                ));
                tracing::warn!(index = %dir.display(), aside = %aside.display(), error = %err, "index unreadable, rebuilding");
                std::fs::rename(dir, &aside).map_err(index_error)?;
                sled::open(dir).map_err(index_error)?
            }
        };
        let meta = db.open_tree("meta").map_err(index_error)?;
        let summaries = db.open_tree("manifest_summaries").map_err(index_error)?;
        let index = Index { summaries, meta };
        if index.meta.get("schema").map_err(index_error)?.as_deref() != Some(SCHEMA_VERSION) {
            index.clear()?;
            index.meta.insert("schema", SCHEMA_VERSION).map_err(index_error)?;
        }
        Ok(index)
    }

    pub(super) fn summary(&self, digest: &Digest) -> Result<Option<ManifestSummary>> {
        match self.summaries.get(digest.hex()).map_err(index_error)? {
            // An entry that does not decode is treated as missing: it will be recomputed.
            Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            None => Ok(None),
        }
    }

    pub(super) fn put_summary(&self, digest: &Digest, summary: &ManifestSummary) -> Result<()> {
        let bytes = serde_json::to_vec(summary).expect("summaries always serialize");
        self.summaries.insert(digest.hex(), bytes).map_err(index_error)?;
        Ok(())
    }

    pub(super) fn complete(&self) -> Result<bool> {
        Ok(self.meta.get("complete").map_err(index_error)?.is_some())
    }

    pub(super) fn mark_complete(&self) -> Result<()> {
        self.meta.insert("complete", b"1").map_err(index_error)?;
        self.meta.flush().map_err(index_error)?;
        Ok(())
    }

    pub(super) fn clear(&self) -> Result<()> {
        self.meta.remove("complete").map_err(index_error)?;
        self.summaries.clear().map_err(index_error)?;
        Ok(())
    }
}
