//! Gate decisions: turn the verified evidence of one manifest into a [`Verdict`] under a
//! namespace's [`Gate`]: each requirement with its outcome, the evidence it used or why it failed,
//! warnings, and when the verdict stops holding.
//!
//! Pure: evidence arrives verified (see `policy::verify`); nothing here reads the store.

use serde::Serialize;
use serde_json::Value;

use crate::policy::scan::{self, ScanRules, SCAN_PREDICATE_TYPES};
use crate::policy::verify::EvidenceKind;

/// What a manifest needs in a gated namespace.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Enforce or audit.
    pub mode: GateMode,
    /// A signature from any one of these trust entries.
    pub signed_by: Vec<String>,
    /// A signature from each of these trust entries.
    pub signed_by_all: Vec<String>,
    /// Attestations of these predicate types, each from the listed signers (any trusted when empty).
    pub attestations: Vec<RequiredAttestation>,
    /// An SPDX or CycloneDX attestation.
    pub sbom: bool,
    /// A passing, signed vulnerability scan.
    pub scan: Option<ScanRequirement>,
}

/// Whether a failing verdict refuses or only records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GateMode {
    /// Refuse pulls and promotions that fail (the default).
    #[default]
    Enforce,
    /// Serve, but log and record the would-be denial.
    Audit,
}

/// A required attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredAttestation {
    /// Its in-toto predicate type.
    pub predicate_type: String,
    /// Who may sign it; any trusted entry when empty.
    pub signed_by: Vec<String>,
}

/// A required scan: who may sign it and the rules its findings must pass.
#[derive(Debug, Clone)]
pub struct ScanRequirement {
    /// Who may sign scans; any trusted entry when empty.
    pub signed_by: Vec<String>,
    /// The rules.
    pub rules: ScanRules,
}

/// One piece of evidence that verified against the configured trust.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fact {
    /// Signature or attestation.
    pub kind: EvidenceKind,
    /// The trust entry (`[[trust.keys]]` or `[[trust.keyless]]` name) it verified against.
    pub trust_entry: String,
    /// Who signed: the key name or the certificate's SAN.
    pub identity: String,
    /// The in-toto predicate type of an attestation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicate_type: Option<String>,
    /// Rekor log index, when the evidence carried a verified transparency-log entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rekor_log_index: Option<i64>,
    /// Rekor integrated time, seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rekor_time: Option<i64>,
    /// Where it was found: `referrer sha256:...` or `tag sha256-....sig`.
    pub source: String,
    /// The attestation's predicate, for scan and SBOM rules (not serialised: it can be large).
    #[serde(skip)]
    pub predicate: Option<Value>,
}

/// Evidence that was found but did not verify, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// Where it was found.
    pub source: String,
    /// Why it does not count.
    pub reason: String,
}

/// The outcome of one requirement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Requirement {
    /// `signature`, `signatures (all of)`, `attestation <type>`, `sbom`, `scan`.
    pub name: String,
    /// Whether it is met.
    pub passed: bool,
    /// What met it, or why it is not met.
    pub detail: String,
    /// The evidence it used.
    pub evidence: Vec<Fact>,
}

/// The decision for one manifest in one namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// `repository@digest`.
    pub image: String,
    /// The namespace pattern whose gate applied.
    pub namespace: String,
    /// Enforce or audit.
    pub mode: GateMode,
    /// Whether every requirement is met.
    pub passed: bool,
    /// Each requirement.
    pub requirements: Vec<Requirement>,
    /// Non-blocking findings and other things worth knowing.
    pub warnings: Vec<String>,
    /// Evidence that did not verify.
    pub rejected: Vec<Rejected>,
    /// When this verdict was computed, seconds since the Unix epoch.
    pub evaluated_at: i64,
    /// When it stops holding (scan ages out, allowlist entry expires).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// The configuration revision it was computed under.
    pub policy_revision: String,
    /// Set when the manifest passes through a parent index that passes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_parent: Option<String>,
}

/// SPDX and CycloneDX predicate types that satisfy an SBOM requirement (prefix match).
const SBOM_PREDICATE_PREFIXES: &[&str] = &["https://spdx.dev/Document", "https://cyclonedx.org/bom"];

fn signed_by_any(fact: &Fact, signers: &[String]) -> bool {
    signers.is_empty() || signers.contains(&fact.trust_entry)
}

fn names(signers: &[String]) -> String {
    signers.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
}

/// Evaluates `gate` for `image` at time `now`.
pub fn evaluate(
    gate: &Gate,
    namespace: &str,
    image: &str,
    facts: &[Fact],
    rejected: Vec<Rejected>,
    policy_revision: &str,
    now: i64,
) -> Verdict {
    let mut requirements = Vec::new();
    let mut warnings = Vec::new();
    let mut expires_at: Option<i64> = None;
    let signatures: Vec<&Fact> = facts.iter().filter(|f| f.kind == EvidenceKind::Signature).collect();
    let attestations: Vec<&Fact> = facts.iter().filter(|f| f.kind == EvidenceKind::Attestation).collect();

    if !gate.signed_by.is_empty() {
        let used: Vec<Fact> = signatures.iter().filter(|f| signed_by_any(f, &gate.signed_by)).map(|f| (*f).clone()).collect();
        let detail = match used.first() {
            Some(fact) => format!("signed by '{}' ({})", fact.trust_entry, fact.identity),
            None => format!("no signature from trusted identity {}", names(&gate.signed_by)),
        };
        requirements.push(Requirement { name: "signature".to_owned(), passed: !used.is_empty(), detail, evidence: used });
    }
    if !gate.signed_by_all.is_empty() {
        let missing: Vec<String> =
            gate.signed_by_all.iter().filter(|s| !signatures.iter().any(|f| f.trust_entry == **s)).cloned().collect();
        let used: Vec<Fact> = signatures.iter().filter(|f| gate.signed_by_all.contains(&f.trust_entry)).map(|f| (*f).clone()).collect();
        let detail = if missing.is_empty() {
            format!("signed by each of {}", names(&gate.signed_by_all))
        } else {
            format!("no signature from {}", names(&missing))
        };
        requirements.push(Requirement { name: "signatures (all of)".to_owned(), passed: missing.is_empty(), detail, evidence: used });
    }
    for required in &gate.attestations {
        let used: Vec<Fact> = attestations
            .iter()
            .filter(|f| f.predicate_type.as_deref() == Some(required.predicate_type.as_str()) && signed_by_any(f, &required.signed_by))
            .map(|f| (*f).clone())
            .collect();
        let detail = match used.first() {
            Some(fact) => format!("attested by '{}' ({})", fact.trust_entry, fact.identity),
            None if required.signed_by.is_empty() => format!("no verified {} attestation", required.predicate_type),
            None => format!("no verified {} attestation from {}", required.predicate_type, names(&required.signed_by)),
        };
        let name = format!("attestation {}", required.predicate_type);
        requirements.push(Requirement { name, passed: !used.is_empty(), detail, evidence: used });
    }
    if gate.sbom {
        let used: Vec<Fact> = attestations
            .iter()
            .filter(|f| f.predicate_type.as_deref().is_some_and(|t| SBOM_PREDICATE_PREFIXES.iter().any(|p| t.starts_with(p))))
            .map(|f| (*f).clone())
            .collect();
        let detail = match used.first() {
            Some(fact) => format!("{} from '{}'", fact.predicate_type.as_deref().unwrap_or(""), fact.trust_entry),
            None => "no verified SPDX or CycloneDX attestation".to_owned(),
        };
        requirements.push(Requirement { name: "sbom".to_owned(), passed: !used.is_empty(), detail, evidence: used });
    }
    if let Some(required) = &gate.scan {
        let (requirement, scan_warnings, scan_expiry) = scan_requirement(required, &attestations, now);
        warnings.extend(scan_warnings);
        expires_at = scan_expiry;
        requirements.push(requirement);
    }

    Verdict {
        image: image.to_owned(),
        namespace: namespace.to_owned(),
        mode: gate.mode,
        passed: requirements.iter().all(|r| r.passed),
        requirements,
        warnings,
        rejected,
        evaluated_at: now,
        expires_at,
        policy_revision: policy_revision.to_owned(),
        via_parent: None,
    }
}

/// The newest readable, signed scan decides; older ones are ignored.
fn scan_requirement(required: &ScanRequirement, attestations: &[&Fact], now: i64) -> (Requirement, Vec<String>, Option<i64>) {
    let mut unreadable = Vec::new();
    let mut newest: Option<(scan::ScanReport, &Fact)> = None;
    for fact in attestations.iter().filter(|f| signed_by_any(f, &required.signed_by)) {
        let is_scan = fact.predicate_type.as_deref().is_some_and(|t| SCAN_PREDICATE_TYPES.contains(&t));
        let Some(predicate) = fact.predicate.as_ref().filter(|_| is_scan) else { continue };
        match scan::parse_report(predicate) {
            Ok(report) if newest.as_ref().is_none_or(|(n, _)| report.finished_at > n.finished_at) => newest = Some((report, fact)),
            Ok(_) => {}
            Err(err) => unreadable.push(format!("scan attestation from {}: {err}", fact.source)),
        }
    }
    let Some((report, fact)) = newest else {
        let who = if required.signed_by.is_empty() { String::new() } else { format!(" from {}", names(&required.signed_by)) };
        let requirement = Requirement { name: "scan".to_owned(), passed: false, detail: format!("no signed vulnerability scan{who}"), evidence: Vec::new() };
        return (requirement, unreadable, None);
    };
    let outcome = required.rules.evaluate(&report, now);
    let detail = if outcome.passed {
        format!("{} scan from '{}' passes ({} findings)", report.scanner, fact.trust_entry, report.findings.len())
    } else {
        outcome.failures.join("; ")
    };
    let mut warnings = unreadable;
    warnings.extend(outcome.warnings);
    let requirement = Requirement { name: "scan".to_owned(), passed: outcome.passed, detail, evidence: vec![fact.clone()] };
    (requirement, warnings, Some(outcome.expires_at))
}

impl Verdict {
    /// One line for a client's error output: what is denied and every failed requirement.
    pub fn summary(&self) -> String {
        if self.passed {
            return format!("{} passes the gate of {}", self.image, self.namespace);
        }
        let failed: Vec<String> = self.requirements.iter().filter(|r| !r.passed).map(|r| format!("{}: {}", r.name, r.detail)).collect();
        let mut line = format!("{} denied: {}", self.image, failed.join("; "));
        if !self.rejected.is_empty() {
            let reasons: Vec<String> = self.rejected.iter().map(|r| format!("{} ({})", r.source, r.reason)).collect();
            line.push_str(&format!("; rejected evidence: {}", reasons.join(", ")));
        }
        line
    }

    /// Whether the verdict still holds at `now`.
    pub fn fresh_at(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::scan::{BlockRule, KnownExploited};
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn fact(kind: EvidenceKind, entry: &str, predicate_type: Option<&str>, predicate: Option<Value>) -> Fact {
        Fact {
            kind,
            trust_entry: entry.into(),
            identity: format!("{entry}-identity"),
            predicate_type: predicate_type.map(str::to_owned),
            rekor_log_index: None,
            rekor_time: None,
            source: "referrer sha256:00".into(),
            predicate,
        }
    }

    fn trivy(finished: &str, critical_fixable: bool) -> Value {
        let vulns = if critical_fixable {
            json!([{"VulnerabilityID": "CVE-2026-1", "PkgName": "openssl", "FixedVersion": "3.0.9", "Severity": "CRITICAL"}])
        } else {
            json!([])
        };
        json!({"scanner": {"result": {"SchemaVersion": 2, "Results": [{"Vulnerabilities": vulns}]}}, "metadata": {"scanFinishedOn": finished}})
    }

    fn gate() -> Gate {
        Gate {
            mode: GateMode::Enforce,
            signed_by: vec!["ci".into(), "release".into()],
            signed_by_all: Vec::new(),
            attestations: Vec::new(),
            sbom: false,
            scan: Some(ScanRequirement {
                signed_by: vec!["ci".into()],
                rules: ScanRules { max_age_secs: 7 * 86400, block: vec![BlockRule::CriticalWithFix], allowlist: Vec::new(), known_exploited: KnownExploited::default() },
            }),
        }
    }

    fn check(facts: &[Fact], gate: &Gate) -> Verdict {
        evaluate(gate, "prod/**", "prod/app@sha256:ab", facts, Vec::new(), "rev", NOW)
    }

    #[test]
    fn requirements() {
        let fresh = "2027-01-15T00:00:00Z";
        let now_scan = |fixable| fact(EvidenceKind::Attestation, "ci", Some(scan::COSIGN_VULN_PREDICATE), Some(trivy(fresh, fixable)));
        let signed = fact(EvidenceKind::Signature, "release", None, None);

        let verdict = check(&[], &gate());
        assert!(!verdict.passed);
        assert_eq!(
            verdict.summary(),
            "prod/app@sha256:ab denied: signature: no signature from trusted identity 'ci', 'release'; scan: no signed vulnerability scan from 'ci'"
        );

        let now = scan::parse_time(fresh).unwrap() + 60;
        let at = |facts: &[Fact]| evaluate(&gate(), "prod/**", "i", facts, Vec::new(), "rev", now);
        let verdict = at(&[signed.clone(), now_scan(false)]);
        assert!(verdict.passed, "{verdict:?}");
        assert_eq!(verdict.expires_at, Some(scan::parse_time(fresh).unwrap() + 7 * 86400));

        let verdict = at(&[signed.clone(), now_scan(true)]);
        assert!(!verdict.passed);
        assert!(verdict.summary().contains("scan: 1 blocking finding(s) by trivy: CVE-2026-1"), "{}", verdict.summary());

        // A scan signed by someone the scan rule does not name does not count.
        let other = fact(EvidenceKind::Attestation, "release", Some(scan::COSIGN_VULN_PREDICATE), Some(trivy(fresh, false)));
        assert!(!at(&[signed.clone(), other]).passed);

        // The newest scan decides.
        let old_bad = fact(EvidenceKind::Attestation, "ci", Some(scan::COSIGN_VULN_PREDICATE), Some(trivy("2027-01-14T00:00:00Z", true)));
        assert!(at(&[signed.clone(), old_bad, now_scan(false)]).passed);
    }

    #[test]
    fn all_of_attestations_and_sbom() {
        let mut gate = gate();
        gate.scan = None;
        gate.signed_by = Vec::new();
        gate.signed_by_all = vec!["ci".into(), "release".into()];
        gate.attestations = vec![RequiredAttestation { predicate_type: "https://slsa.dev/provenance/v1".into(), signed_by: vec!["ci".into()] }];
        gate.sbom = true;
        let verdict = check(&[fact(EvidenceKind::Signature, "ci", None, None)], &gate);
        let failed: Vec<&str> = verdict.requirements.iter().filter(|r| !r.passed).map(|r| r.detail.as_str()).collect();
        assert_eq!(
            failed,
            vec!["no signature from 'release'", "no verified https://slsa.dev/provenance/v1 attestation from 'ci'", "no verified SPDX or CycloneDX attestation"]
        );
        let facts = [
            fact(EvidenceKind::Signature, "ci", None, None),
            fact(EvidenceKind::Signature, "release", None, None),
            fact(EvidenceKind::Attestation, "ci", Some("https://slsa.dev/provenance/v1"), None),
            fact(EvidenceKind::Attestation, "release", Some("https://spdx.dev/Document/v2.3"), None),
        ];
        assert!(check(&facts, &gate).passed);
    }
}
