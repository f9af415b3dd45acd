//! `[trust]`: the named public keys and keyless (Fulcio) identities that signatures and
//! attestations verify against, and the Rekor keys of key-based signatures. Every file is read
//! at load time, relative to the config file's directory, so a configuration that loads has all
//! its key material; `registry::verdicts::load_trust` parses it into the verifier's trust.

use serde::Deserialize;

use super::files::Files;
use crate::policy::verify::{KeyEntry, KeylessEntry, TrustConfig};

/// `[trust]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileTrust {
    keys: Vec<FileKey>,
    keyless: Vec<FileKeyless>,
    /// Rekor keys for the transparency-log entries of key-based signatures (optional there).
    rekor_keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    name: String,
    public_key: String,
    /// A missing file leaves the entry without a key (nothing verifies against it) instead of
    /// refusing the configuration; the embedded default uses this for `trust/cosign.pub`.
    #[serde(default)]
    optional: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeyless {
    name: String,
    issuer: String,
    subject: String,
    #[serde(default)]
    fulcio_roots: Vec<String>,
    #[serde(default)]
    rekor_keys: Vec<String>,
    #[serde(default)]
    trusted_root: Option<String>,
}

impl FileTrust {
    pub(super) fn load(self, files: &mut Files) -> Result<TrustConfig, String> {
        let read_all = |files: &mut Files, paths: &[String], what: &str| -> Result<Vec<String>, String> {
            paths.iter().map(|path| files.read(path, what)).collect()
        };
        let mut keys = Vec::new();
        for key in self.keys {
            let what = format!("trust.keys {:?}", key.name);
            let public_key_pem = match files.read(&key.public_key, &what) {
                Ok(pem) => Some(pem),
                Err(_) if key.optional && !files.exists(&key.public_key) => None,
                Err(err) => return Err(err),
            };
            keys.push(KeyEntry { name: key.name, public_key_pem, path: key.public_key });
        }
        let mut keyless = Vec::new();
        for entry in self.keyless {
            let what = format!("trust.keyless {:?}", entry.name);
            if entry.fulcio_roots.is_empty() && entry.trusted_root.is_none() {
                return Err(format!("{what}: needs fulcio_roots or trusted_root"));
            }
            keyless.push(KeylessEntry {
                fulcio_roots_pem: read_all(files, &entry.fulcio_roots, &what)?,
                rekor_keys_pem: read_all(files, &entry.rekor_keys, &what)?,
                trusted_root_json: entry.trusted_root.as_deref().map(|path| files.read(path, &what)).transpose()?,
                name: entry.name,
                issuer: entry.issuer,
                subject: entry.subject,
            });
        }
        let mut names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).chain(keyless.iter().map(|k| k.name.as_str())).collect();
        names.sort();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(format!("trust: the name {:?} is used twice", pair[0]));
        }
        let rekor_keys_pem = read_all(files, &self.rekor_keys, "trust.rekor_keys")?;
        Ok(TrustConfig { keys, keyless, rekor_keys_pem })
    }
}
