//! Garbage collection, one pass at a time across every replica: [`run`] holds the `gc` lease
//! (`lease::hold`: a pass whose lease is lost stops; the protocol leaves nothing half-removed that
//! matters, and the next holder finishes a claimed pass), and reports what was removed. [`schedule`] runs passes in the server every
//! `[gc] every`; `portcullis gc` runs one from the command line. The walks and the sweep are
//! `registry::collect`, the push side `registry::fence`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::registry::collect::{Victim, VictimKind};
use crate::registry::{Registry, RegistryError};

/// The lease's name.
const LEASE: &str = "gc";

/// `[gc]` validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcConfig {
    /// How often the server runs a pass; `None`: only `portcullis gc` does.
    pub every: Option<Duration>,
    /// Nothing written more recently is removed.
    pub grace: Duration,
    /// How long a collector's lease lasts without renewal (it renews at a third of it).
    pub lease: Duration,
}

/// How to run a pass.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// List what a pass would remove now, and remove nothing (no lease taken, nothing written).
    pub dry_run: bool,
}

/// What a pass did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Whether nothing was removed because it was a dry run.
    pub dry_run: bool,
    /// Whether another collector held the lease and this one waited for it.
    pub waited_for_lease: bool,
    /// Whether a pass a collector left unfinished was finished first.
    pub resumed: bool,
    /// The pass's id; `None` in a dry run.
    pub pass: Option<String>,
    /// What was removed, in deletion order.
    pub removed: Vec<Victim>,
    /// Objects removed.
    pub objects: usize,
    /// Objects removed of each kind.
    pub by_kind: BTreeMap<&'static str, usize>,
    /// Content bytes reclaimed.
    pub bytes: u64,
    /// Wall-clock seconds, lease wait included.
    pub seconds: f64,
}

/// Runs one pass (see the module doc).
pub async fn run(registry: &Registry, options: &Options) -> Result<Report, RegistryError> {
    let started = Instant::now();
    if options.dry_run {
        let removed = registry.gc_dry_run().await?;
        return Ok(report(None, false, false, removed, started));
    }
    let outcome = crate::lease::hold(registry, LEASE, registry.config().gc.lease, registry.gc_pass()).await;
    let metrics = &registry.metrics;
    metrics.gc_pass_duration.observe(started.elapsed().as_secs_f64());
    let (swept, waited) = match outcome {
        Ok(held) => (held.value, held.waited),
        Err(err) => {
            metrics.gc_passes.with_label_values(&["failed"]).inc();
            return Err(err);
        }
    };
    metrics.gc_passes.with_label_values(&["done"]).inc();
    for victim in &swept.removed {
        metrics.gc_removed_objects.with_label_values(&[kind_label(victim.kind)]).inc();
        metrics.gc_removed_bytes.inc_by(victim.bytes);
    }
    let report = report(Some(swept.pass), waited, swept.resumed, swept.removed, started);
    // One audit record per pass: what it removed, not each object (the report lists those).
    let detail = serde_json::json!({
        "pass": report.pass,
        "resumed": report.resumed,
        "objects": report.objects,
        "bytes": report.bytes,
        "removed": report.by_kind,
        "seconds": report.seconds,
    });
    registry.record_audit_event("gc_pass", "gc", detail).await;
    Ok(report)
}

fn report(pass: Option<String>, waited_for_lease: bool, resumed: bool, removed: Vec<Victim>, started: Instant) -> Report {
    let bytes = removed.iter().map(|victim| victim.bytes).sum();
    let mut by_kind = BTreeMap::new();
    for victim in &removed {
        *by_kind.entry(kind_label(victim.kind)).or_insert(0) += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    Report { dry_run: pass.is_none(), pass, waited_for_lease, resumed, objects: removed.len(), by_kind, bytes, removed, seconds }
}

fn kind_label(kind: VictimKind) -> &'static str {
    match kind {
        VictimKind::Tag => "tag",
        VictimKind::ReferrerLink => "referrer_link",
        VictimKind::ParentLink => "parent_link",
        VictimKind::PullRecord => "pull_record",
        VictimKind::Manifest => "manifest",
        VictimKind::BlobLink => "blob_link",
        VictimKind::Content => "content",
    }
}

/// Runs a pass every `[gc] every` (read at each turn, so a reload changes it), first one period
/// after start.
pub async fn schedule(registry: Arc<Registry>) {
    crate::lease::every(&registry, |config| config.gc.every, || async {
        match run(&registry, &Options::default()).await {
            Ok(report) => tracing::info!(objects = report.objects, bytes = report.bytes, seconds = report.seconds, "garbage collection pass done"),
            Err(err) => tracing::warn!(error = %err, "garbage collection pass failed; the next one finishes it"),
        }
    })
    .await
}

/// The report as `portcullis gc` prints it without `--json`: one line per object, then a total.
pub fn render(report: &Report) -> String {
    let verb = if report.dry_run { "would remove" } else { "removed" };
    let mut out = String::new();
    if report.waited_for_lease {
        out.push_str("waited for another collector's pass to end\n");
    }
    if report.resumed {
        out.push_str("finished a pass a collector left unfinished\n");
    }
    for victim in &report.removed {
        out.push_str(&format!("{verb} {} {}\n", kind_label(victim.kind), victim.key));
    }
    let pass = report.pass.as_deref().map(|pass| format!(" (pass {pass})")).unwrap_or_default();
    out.push_str(&format!("gc: {verb} {} objects, {} bytes reclaimed, in {:.1}s{pass}\n", report.objects, report.bytes, report.seconds));
    out
}
