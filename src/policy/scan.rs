//! Vulnerability-scan rules: read a verified scan predicate (cosign's vuln predicate carrying Trivy
//! or Grype JSON, or a Trivy report as the predicate itself), then decide which findings block,
//! which are allowed with a warning, and when the decision stops holding.
//!
//! Pure: the caller has verified the attestation and hands over its predicate; the known-exploited
//! catalogue (CISA KEV JSON) is loaded once by the caller through [`KnownExploited::parse`].

use std::collections::HashSet;

use serde_json::Value;

/// cosign's vulnerability predicate type.
pub const COSIGN_VULN_PREDICATE: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";

/// Predicate types whose predicate is a scan report this module reads.
pub const SCAN_PREDICATE_TYPES: &[&str] = &[
    COSIGN_VULN_PREDICATE,
    "https://trivy.dev/report",
    "https://aquasecurity.github.io/trivy/report",
    "https://cosign.sigstore.dev/attestation/v1",
];

/// Severity of a finding, normalised across scanners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// Unknown or negligible.
    Unknown,
    /// LOW
    Low,
    /// MEDIUM
    Medium,
    /// HIGH
    High,
    /// CRITICAL
    Critical,
}

/// One vulnerability in one package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// CVE or GHSA id.
    pub id: String,
    /// Normalised severity.
    pub severity: Severity,
    /// Affected package.
    pub package: String,
    /// A version that fixes it, if the scanner knows one.
    pub fixed_version: Option<String>,
}

/// A scan report reduced to what the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// Which scanner produced it (`trivy`, `grype`).
    pub scanner: String,
    /// When the scan finished, seconds since the Unix epoch.
    pub finished_at: i64,
    /// Every finding.
    pub findings: Vec<Finding>,
}

/// What blocks a pull or promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockRule {
    /// Any CRITICAL finding.
    Critical,
    /// A CRITICAL finding with a fixed version available.
    CriticalWithFix,
    /// Any HIGH or CRITICAL finding.
    High,
    /// A HIGH or CRITICAL finding with a fixed version available.
    HighWithFix,
    /// A finding listed in the known-exploited catalogue, whatever its severity.
    KnownExploited,
}

/// An allowlisted vulnerability: accepted until `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    /// The vulnerability id.
    pub id: String,
    /// Why it is accepted.
    pub reason: String,
    /// Seconds since the Unix epoch after which it no longer counts.
    pub expires: i64,
}

/// The CVE ids of a known-exploited catalogue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownExploited {
    ids: HashSet<String>,
}

/// The rules of a scan requirement.
#[derive(Debug, Clone)]
pub struct ScanRules {
    /// A scan older than this (seconds, by its finish time) counts as missing.
    pub max_age_secs: i64,
    /// What blocks.
    pub block: Vec<BlockRule>,
    /// Accepted vulnerabilities.
    pub allowlist: Vec<AllowEntry>,
    /// The known-exploited catalogue, when configured.
    pub known_exploited: KnownExploited,
}

/// The outcome of applying [`ScanRules`] to one report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScanOutcome {
    /// Whether the report passes.
    pub passed: bool,
    /// Why it fails, one line each (empty when it passes).
    pub failures: Vec<String>,
    /// Findings that do not block, allowlisted ones, and expired allowlist entries.
    pub warnings: Vec<String>,
    /// When this outcome stops holding (report ages out, or an allowlist entry in use expires).
    pub expires_at: i64,
}

/// Why a predicate is not a scan report this module reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a readable scan report: {0}")]
pub struct ScanParseError(String);

impl KnownExploited {
    /// Parses the CISA KEV JSON format (`{"vulnerabilities":[{"cveID":"CVE-..."}, ...]}`).
    pub fn parse(bytes: &[u8]) -> Result<KnownExploited, ScanParseError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|err| ScanParseError(format!("KEV catalogue: {err}")))?;
        let entries = doc["vulnerabilities"].as_array().ok_or_else(|| ScanParseError("KEV catalogue has no vulnerabilities array".to_owned()))?;
        let ids = entries.iter().filter_map(|entry| entry["cveID"].as_str()).map(str::to_owned).collect();
        Ok(KnownExploited { ids })
    }

    /// Whether `id` is listed.
    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }
}

fn severity(text: &str) -> Severity {
    match text.to_ascii_uppercase().as_str() {
        "CRITICAL" => Severity::Critical,
        "HIGH" => Severity::High,
        "MEDIUM" => Severity::Medium,
        "LOW" => Severity::Low,
        _ => Severity::Unknown,
    }
}

/// Parses an RFC 3339 timestamp to seconds since the Unix epoch.
pub fn parse_time(text: &str) -> Option<i64> {
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z').split('.').next()?)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
}

/// Reads a scan predicate: cosign's vuln predicate (`scanner.result` holds Trivy or Grype JSON,
/// `metadata.scanFinishedOn` the time) or a bare Trivy or Grype report.
pub fn parse_report(predicate: &Value) -> Result<ScanReport, ScanParseError> {
    if let Some(result) = predicate.pointer("/scanner/result") {
        let mut report = parse_scanner_json(result)?;
        if let Some(finished) = predicate.pointer("/metadata/scanFinishedOn").and_then(Value::as_str).and_then(parse_time) {
            report.finished_at = finished;
        }
        return Ok(report);
    }
    parse_scanner_json(predicate)
}

fn parse_scanner_json(doc: &Value) -> Result<ScanReport, ScanParseError> {
    if let Some(results) = doc.get("Results") {
        return parse_trivy(doc, results);
    }
    if let Some(matches) = doc.get("matches") {
        return parse_grype(doc, matches);
    }
    Err(ScanParseError("neither Trivy (Results) nor Grype (matches) JSON".to_owned()))
}

fn parse_trivy(doc: &Value, results: &Value) -> Result<ScanReport, ScanParseError> {
    let results = results.as_array().ok_or_else(|| ScanParseError("Trivy Results is not an array".to_owned()))?;
    let mut findings = Vec::new();
    for result in results {
        for vuln in result["Vulnerabilities"].as_array().into_iter().flatten() {
            let id = vuln["VulnerabilityID"].as_str().ok_or_else(|| ScanParseError("Trivy finding without VulnerabilityID".to_owned()))?;
            findings.push(Finding {
                id: id.to_owned(),
                severity: severity(vuln["Severity"].as_str().unwrap_or("")),
                package: vuln["PkgName"].as_str().unwrap_or("?").to_owned(),
                fixed_version: vuln["FixedVersion"].as_str().filter(|v| !v.is_empty()).map(str::to_owned),
            });
        }
    }
    let finished_at = doc["CreatedAt"].as_str().and_then(parse_time).unwrap_or(0);
    Ok(ScanReport { scanner: "trivy".to_owned(), finished_at, findings })
}

fn parse_grype(doc: &Value, matches: &Value) -> Result<ScanReport, ScanParseError> {
    let matches = matches.as_array().ok_or_else(|| ScanParseError("Grype matches is not an array".to_owned()))?;
    let mut findings = Vec::new();
    for found in matches {
        let vuln = &found["vulnerability"];
        let id = vuln["id"].as_str().ok_or_else(|| ScanParseError("Grype match without vulnerability.id".to_owned()))?;
        let fixed = (vuln.pointer("/fix/state").and_then(Value::as_str) == Some("fixed"))
            .then(|| vuln.pointer("/fix/versions/0").and_then(Value::as_str).map(str::to_owned))
            .flatten();
        findings.push(Finding {
            id: id.to_owned(),
            severity: severity(vuln["severity"].as_str().unwrap_or("")),
            package: found.pointer("/artifact/name").and_then(Value::as_str).unwrap_or("?").to_owned(),
            fixed_version: fixed,
        });
    }
    let finished_at = doc.pointer("/descriptor/timestamp").and_then(Value::as_str).and_then(parse_time).unwrap_or(0);
    Ok(ScanReport { scanner: "grype".to_owned(), finished_at, findings })
}

fn blocks(rule: BlockRule, finding: &Finding, known_exploited: &KnownExploited) -> bool {
    let fixable = finding.fixed_version.is_some();
    match rule {
        BlockRule::Critical => finding.severity == Severity::Critical,
        BlockRule::CriticalWithFix => finding.severity == Severity::Critical && fixable,
        BlockRule::High => finding.severity >= Severity::High,
        BlockRule::HighWithFix => finding.severity >= Severity::High && fixable,
        BlockRule::KnownExploited => known_exploited.contains(&finding.id),
    }
}

fn describe(finding: &Finding) -> String {
    match &finding.fixed_version {
        Some(fixed) => format!("{} ({:?} in {}, fixed in {fixed})", finding.id, finding.severity, finding.package),
        None => format!("{} ({:?} in {}, no fix)", finding.id, finding.severity, finding.package),
    }
}

impl ScanRules {
    /// Applies the rules to `report` at time `now` (seconds since the Unix epoch).
    pub fn evaluate(&self, report: &ScanReport, now: i64) -> ScanOutcome {
        let mut failures = Vec::new();
        let mut warnings = Vec::new();
        let mut expires_at = report.finished_at.saturating_add(self.max_age_secs);
        let age = now - report.finished_at;
        if age > self.max_age_secs {
            failures.push(format!(
                "scan by {} finished {}s ago, older than the allowed {}s: it counts as missing",
                report.scanner, age, self.max_age_secs
            ));
        }
        for entry in self.allowlist.iter().filter(|entry| entry.expires <= now) {
            warnings.push(format!("allowlist entry {} expired at {} and no longer counts", entry.id, entry.expires));
        }
        let mut blocking: Vec<(&Finding, Vec<BlockRule>)> = Vec::new();
        for finding in &report.findings {
            let rules: Vec<BlockRule> = self.block.iter().copied().filter(|rule| blocks(*rule, finding, &self.known_exploited)).collect();
            if rules.is_empty() {
                if finding.severity >= Severity::High {
                    warnings.push(format!("{} does not block under this policy", describe(finding)));
                }
                continue;
            }
            match self.allowlist.iter().find(|entry| entry.id == finding.id && entry.expires > now) {
                Some(entry) => {
                    warnings.push(format!("{} allowlisted until {}: {}", describe(finding), entry.expires, entry.reason));
                    expires_at = expires_at.min(entry.expires);
                }
                None => blocking.push((finding, rules)),
            }
        }
        if !blocking.is_empty() {
            let ids: Vec<String> = blocking.iter().map(|(finding, _)| finding.id.clone()).collect();
            let mut unique = ids.clone();
            unique.sort();
            unique.dedup();
            failures.push(format!(
                "{} blocking finding(s) by {}: {}",
                unique.len(),
                report.scanner,
                blocking.iter().map(|(f, rules)| format!("{} [{}]", describe(f), rule_names(rules))).collect::<Vec<_>>().join(", ")
            ));
        }
        ScanOutcome { passed: failures.is_empty(), failures, warnings, expires_at }
    }
}

fn rule_names(rules: &[BlockRule]) -> String {
    rules
        .iter()
        .map(|rule| match rule {
            BlockRule::Critical => "critical",
            BlockRule::CriticalWithFix => "critical-with-fix",
            BlockRule::High => "high",
            BlockRule::HighWithFix => "high-with-fix",
            BlockRule::KnownExploited => "known-exploited",
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn trivy(created: &str, vulns: Value) -> Value {
        json!({"SchemaVersion": 2, "CreatedAt": created, "ArtifactName": "x", "Results": [{"Target": "x", "Vulnerabilities": vulns}]})
    }

    fn rules(block: Vec<BlockRule>) -> ScanRules {
        ScanRules { max_age_secs: 7 * 86400, block, allowlist: Vec::new(), known_exploited: KnownExploited::default() }
    }

    #[test]
    fn trivy_in_cosign_predicate() {
        let predicate = json!({
            "scanner": {"uri": "pkg:github/aquasecurity/trivy", "version": "0.50.0", "result": trivy("2027-01-01T00:00:00Z", json!([
                {"VulnerabilityID": "CVE-1", "PkgName": "openssl", "InstalledVersion": "1", "FixedVersion": "2", "Severity": "CRITICAL"},
                {"VulnerabilityID": "CVE-2", "PkgName": "zlib", "InstalledVersion": "1", "Severity": "CRITICAL"}
            ]))},
            "metadata": {"scanStartedOn": "2027-01-10T00:00:00Z", "scanFinishedOn": "2027-01-10T00:01:00Z"}
        });
        let report = parse_report(&predicate).unwrap();
        assert_eq!(report.scanner, "trivy");
        assert_eq!(report.finished_at, parse_time("2027-01-10T00:01:00Z").unwrap());
        assert_eq!(report.findings.len(), 2);
        assert_eq!(report.findings[0].fixed_version.as_deref(), Some("2"));
        assert_eq!(report.findings[1].fixed_version, None);
    }

    #[test]
    fn grype_report() {
        let doc = json!({
            "matches": [
                {"vulnerability": {"id": "CVE-3", "severity": "High", "fix": {"versions": ["1.2"], "state": "fixed"}}, "artifact": {"name": "curl", "version": "1.0"}},
                {"vulnerability": {"id": "CVE-4", "severity": "Critical", "fix": {"versions": [], "state": "not-fixed"}}, "artifact": {"name": "bash", "version": "5"}}
            ],
            "descriptor": {"name": "grype", "version": "0.74.0", "timestamp": "2027-01-10T00:00:00.123456789Z"}
        });
        let report = parse_report(&doc).unwrap();
        assert_eq!(report.scanner, "grype");
        assert_eq!(report.finished_at, parse_time("2027-01-10T00:00:00Z").unwrap());
        assert_eq!(report.findings[0], Finding { id: "CVE-3".into(), severity: Severity::High, package: "curl".into(), fixed_version: Some("1.2".into()) });
        assert_eq!(report.findings[1].fixed_version, None);
        assert!(parse_report(&json!({"nothing": 1})).is_err());
    }

    fn report(findings: Vec<(&str, Severity, bool)>, finished_at: i64) -> ScanReport {
        let findings = findings
            .into_iter()
            .map(|(id, severity, fix)| Finding { id: id.into(), severity, package: "p".into(), fixed_version: fix.then(|| "9".into()) })
            .collect();
        ScanReport { scanner: "trivy".into(), finished_at, findings }
    }

    #[test]
    fn rules_block_warn_and_expire() {
        let fresh = NOW - 3600;
        let findings = vec![("CVE-A", Severity::Critical, true), ("CVE-B", Severity::Critical, false), ("CVE-C", Severity::High, false)];
        let base = rules(vec![BlockRule::CriticalWithFix]);

        let outcome = base.evaluate(&report(findings.clone(), fresh), NOW);
        assert!(!outcome.passed);
        assert!(outcome.failures[0].contains("1 blocking finding(s)") && outcome.failures[0].contains("CVE-A"), "{outcome:?}");
        assert_eq!(outcome.warnings.len(), 2, "unfixed CRITICAL and HIGH are warnings: {outcome:?}");

        let mut allowed = base.clone();
        allowed.allowlist.push(AllowEntry { id: "CVE-A".into(), reason: "not reachable".into(), expires: NOW + 100 });
        let outcome = allowed.evaluate(&report(findings.clone(), fresh), NOW);
        assert!(outcome.passed, "{outcome:?}");
        assert!(outcome.warnings.iter().any(|w| w.contains("allowlisted") && w.contains("not reachable")));
        assert_eq!(outcome.expires_at, NOW + 100);

        let mut expired = base.clone();
        expired.allowlist.push(AllowEntry { id: "CVE-A".into(), reason: "old".into(), expires: NOW - 1 });
        let outcome = expired.evaluate(&report(findings.clone(), fresh), NOW);
        assert!(!outcome.passed);
        assert!(outcome.warnings.iter().any(|w| w.contains("expired")));

        let outcome = base.evaluate(&report(vec![], NOW - 8 * 86400), NOW);
        assert!(!outcome.passed && outcome.failures[0].contains("counts as missing"), "{outcome:?}");

        let outcome = rules(vec![BlockRule::Critical]).evaluate(&report(findings.clone(), fresh), NOW);
        assert!(outcome.failures[0].contains("2 blocking"), "{outcome:?}");
        let outcome = rules(vec![BlockRule::HighWithFix]).evaluate(&report(findings, fresh), NOW);
        assert!(outcome.failures[0].contains("1 blocking"), "{outcome:?}");
    }

    #[test]
    fn known_exploited() {
        let kev = KnownExploited::parse(br#"{"catalogVersion":"1","vulnerabilities":[{"cveID":"CVE-K"}]}"#).unwrap();
        let mut with_kev = rules(vec![BlockRule::KnownExploited]);
        with_kev.known_exploited = kev;
        let outcome = with_kev.evaluate(&report(vec![("CVE-K", Severity::High, false), ("CVE-L", Severity::High, true)], NOW), NOW);
        assert!(!outcome.passed);
        assert!(outcome.failures[0].contains("CVE-K") && !outcome.failures[0].contains("CVE-L"), "{outcome:?}");
        assert!(KnownExploited::parse(b"[]").is_err());
    }
}
