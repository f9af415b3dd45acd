//! `[[namespaces]]` with their `[[namespaces.tag_rules]]` and `[namespaces.gate]`: which rules
//! apply to which repositories, and what a manifest needs to be pulled from or promoted into a
//! gated namespace. Gates name their signers from `[trust]`, so trust is loaded first; a scan
//! rule's known-exploited catalogue is read at load time, relative to the config file.

use serde::Deserialize;

use super::files::Files;
use crate::policy::gate::{Gate, GateMode, RequiredAttestation, ScanRequirement};
use crate::policy::namespaces::{Namespace, TagMode, TagRule};
use crate::policy::retention::Retention;
use crate::policy::scan::{AllowEntry, BlockRule, KnownExploited, ScanRules};
use crate::policy::verify::TrustConfig;

/// `[[namespaces]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileNamespace {
    pattern: String,
    #[serde(default)]
    tags: TagMode,
    #[serde(default)]
    promotion_only: bool,
    #[serde(default)]
    tag_rules: Vec<FileTagRule>,
    #[serde(default)]
    gate: Option<FileGate>,
    #[serde(default)]
    retention: FileRetention,
}

/// `[namespaces.retention]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileRetention {
    keep_last: Option<usize>,
    keep_tags: Vec<String>,
    untagged: Option<String>,
    not_pulled: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTagRule {
    pattern: String,
    tags: TagMode,
}

/// `[namespaces.gate]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileGate {
    mode: GateMode,
    signed_by: Vec<String>,
    signed_by_all: Vec<String>,
    attestations: Vec<FileAttestation>,
    sbom: bool,
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
#[serde(default, deny_unknown_fields)]
struct FileScan {
    max_age: String,
    block: Vec<BlockRule>,
    known_exploited: Option<String>,
    signed_by: Vec<String>,
    allowlist: Vec<FileAllow>,
}

impl Default for FileScan {
    fn default() -> Self {
        FileScan {
            max_age: "7d".to_owned(),
            block: vec![BlockRule::CriticalWithFix],
            known_exploited: None,
            signed_by: Vec::new(),
            allowlist: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAllow {
    id: String,
    reason: String,
    expires: String,
}

/// The namespaces, in order (the first that matches applies), with gates checked against `trust`.
pub(super) fn load(namespaces: Vec<FileNamespace>, trust: &TrustConfig, files: &mut Files) -> Result<Vec<Namespace>, String> {
    namespaces.into_iter().map(|ns| ns.load(trust, files)).collect()
}

impl FileNamespace {
    fn load(self, trust: &TrustConfig, files: &mut Files) -> Result<Namespace, String> {
        let gate = self.gate.map(|gate| gate.load(files, trust, &self.pattern)).transpose()?;
        let tag_rules = self
            .tag_rules
            .into_iter()
            .map(|rule| {
                let pattern = rule.pattern.clone();
                TagRule::new(rule.pattern, rule.tags).map_err(|err| format!("namespaces.tag_rules.pattern {pattern:?}: {err}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let pattern = self.pattern.clone();
        let age = |text: Option<&str>, what: &str| -> Result<Option<std::time::Duration>, String> {
            Ok(text.map(|text| parse_age(text, what)).transpose()?.map(|secs| std::time::Duration::from_secs(secs as u64)))
        };
        let untagged = age(self.retention.untagged.as_deref(), "namespaces.retention.untagged")?;
        let not_pulled = age(self.retention.not_pulled.as_deref(), "namespaces.retention.not_pulled")?;
        let retention = Retention::new(self.retention.keep_last, self.retention.keep_tags, untagged, not_pulled)
            .map_err(|err| format!("namespaces.retention.keep_tags: {err}"))?;
        Namespace::new(self.pattern, self.tags, tag_rules, self.promotion_only, gate, retention)
            .map_err(|err| format!("namespaces.pattern {pattern:?}: {err}"))
    }
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

impl FileGate {
    fn load(self, files: &mut Files, trust: &TrustConfig, namespace: &str) -> Result<Gate, String> {
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
