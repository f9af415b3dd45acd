//! The trust and gate sections of the configuration: `[trust]` (named keys and keyless
//! identities) and `[namespaces.gate]` (what a manifest needs to be pulled or promoted).
//! Files named here are read at load time, relative to the config file's directory, so a
//! configuration that loads has all its key material.

use serde::Deserialize;

use super::files::Files;
use crate::policy::gate::{Gate, GateMode, RequiredAttestation, ScanRequirement};
use crate::policy::scan::{AllowEntry, BlockRule, KnownExploited, ScanRules};
use crate::policy::verify::{KeyEntry, KeylessEntry, TrustConfig};

/// `[trust]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTrust {
    #[serde(default)]
    keys: Vec<FileKey>,
    #[serde(default)]
    keyless: Vec<FileKeyless>,
    /// Rekor keys for the transparency-log entries of key-based signatures (optional there).
    #[serde(default)]
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

/// `[namespaces.gate]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileGate {
    #[serde(default = "default_mode")]
    mode: GateMode,
    #[serde(default)]
    signed_by: Vec<String>,
    #[serde(default)]
    signed_by_all: Vec<String>,
    #[serde(default)]
    attestations: Vec<FileAttestation>,
    #[serde(default)]
    sbom: bool,
    #[serde(default)]
    scan: Option<FileScan>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAttestation {
    predicate_type: String,
    #[serde(default)]
    signed_by: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileScan {
    #[serde(default = "default_max_age")]
    max_age: String,
    #[serde(default = "default_block")]
    block: Vec<BlockRule>,
    #[serde(default)]
    known_exploited: Option<String>,
    #[serde(default)]
    signed_by: Vec<String>,
    #[serde(default)]
    allowlist: Vec<FileAllow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAllow {
    id: String,
    reason: String,
    expires: String,
}

fn default_mode() -> GateMode {
    GateMode::Enforce
}
fn default_max_age() -> String {
    "7d".to_owned()
}
fn default_block() -> Vec<BlockRule> {
    vec![BlockRule::CriticalWithFix]
}

/// Parses `7d`, `12h`, `30m`, `3600s` (humantime) into seconds.
fn parse_age(text: &str, what: &str) -> Result<i64, String> {
    humantime::parse_duration(text).map(|d| d.as_secs() as i64).map_err(|err| format!("{what}: {text:?}: {err}"))
}

/// Parses `2027-01-01` or an RFC 3339 time into seconds since the Unix epoch.
fn parse_date(text: &str, what: &str) -> Result<i64, String> {
    let full = if text.len() == 10 { format!("{text}T00:00:00Z") } else { text.to_owned() };
    crate::policy::scan::parse_time(&full).ok_or_else(|| format!("{what}: expected a date like 2027-01-31, found {text:?}"))
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

impl FileGate {
    pub(super) fn load(self, files: &mut Files, trust: &TrustConfig, namespace: &str) -> Result<Gate, String> {
        let what = format!("namespaces {namespace:?} gate");
        let known = |names: &[String]| -> Result<(), String> {
            for name in names {
                let exists = trust.keys.iter().any(|k| &k.name == name) || trust.keyless.iter().any(|k| &k.name == name);
                if !exists {
                    return Err(format!("{what}: signer {name:?} is not a [[trust.keys]] or [[trust.keyless]] name"));
                }
            }
            Ok(())
        };
        known(&self.signed_by)?;
        known(&self.signed_by_all)?;
        let attestations = self
            .attestations
            .into_iter()
            .map(|att| {
                known(&att.signed_by)?;
                Ok(RequiredAttestation { predicate_type: att.predicate_type, signed_by: att.signed_by })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let scan = match self.scan {
            None => None,
            Some(scan) => {
                known(&scan.signed_by)?;
                let known_exploited = match &scan.known_exploited {
                    Some(path) => KnownExploited::parse(files.read(path, &what)?.as_bytes()).map_err(|err| format!("{what}: {err}"))?,
                    None if scan.block.contains(&BlockRule::KnownExploited) => {
                        return Err(format!("{what}: scan.block has known-exploited but no known_exploited catalogue file is set"));
                    }
                    None => KnownExploited::default(),
                };
                let allowlist = scan
                    .allowlist
                    .into_iter()
                    .map(|entry| {
                        let expires = parse_date(&entry.expires, &format!("{what} allowlist {:?}", entry.id))?;
                        Ok(AllowEntry { id: entry.id, reason: entry.reason, expires })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Some(ScanRequirement {
                    signed_by: scan.signed_by,
                    rules: ScanRules { max_age_secs: parse_age(&scan.max_age, &format!("{what} scan.max_age"))?, block: scan.block, allowlist, known_exploited },
                })
            }
        };
        Ok(Gate { mode: self.mode, signed_by: self.signed_by, signed_by_all: self.signed_by_all, attestations, sbom: self.sbom, scan })
    }
}
