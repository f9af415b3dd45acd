//! The files a configuration names (keys, certificates, htpasswd, catalogues): read relative to
//! the config file's directory, and hashed, with the configuration text, into the revision that
//! caches are keyed on. Every section reads through one [`Files`], so the revision changes
//! whenever anything that policy, trust or access depends on does.

use std::path::{Path, PathBuf};

use sha2::Digest as _;

/// Reads the files a configuration names, relative to its directory, and hashes everything read
/// into the policy revision.
pub(super) struct Files {
    base: PathBuf,
    revision: sha2::Sha256,
}

impl Files {
    pub(super) fn new(base: &Path, config_text: &str) -> Files {
        let mut revision = sha2::Sha256::new();
        revision.update(config_text.as_bytes());
        Files { base: base.to_owned(), revision }
    }

    /// `path` relative to the config file's directory.
    pub(super) fn resolve(&self, path: &str) -> PathBuf {
        self.base.join(path)
    }

    /// Reads `path`, for error messages naming `what`.
    pub(super) fn read(&mut self, path: &str, what: &str) -> Result<String, String> {
        let full = self.base.join(path);
        let text = std::fs::read_to_string(&full).map_err(|err| format!("{what}: cannot read {}: {err}", full.display()))?;
        self.revision.update((text.len() as u64).to_le_bytes());
        self.revision.update(text.as_bytes());
        Ok(text)
    }

    /// Whether `path` exists.
    pub(super) fn exists(&self, path: &str) -> bool {
        self.base.join(path).exists()
    }

    /// The revision: sha256 of the configuration text and every file it named, in load order.
    pub(super) fn revision(self) -> String {
        hex::encode(self.revision.finalize())
    }
}
