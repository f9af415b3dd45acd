//! Scrub, one pass at a time across every replica: [`run`] holds the `scrub` lease
//! (`lease::hold`), hashes every piece of stored content at `[scrub] bytes_per_second`
//! (`Registry::scrub_pass`), quarantines what does not match its digest, and reports it.
//! [`schedule`] runs passes in the server every `[scrub] every`; `portcullis scrub` runs one from
//! the command line. What quarantine means for reads is in ARCHITECTURE.md (Lifecycles, Scrub).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::registry::scrub::{Scrubbed, Throttle, TICK};
use crate::registry::{Registry, RegistryError};

/// The lease's name.
const LEASE: &str = "scrub";

/// `[scrub]` validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubConfig {
    /// How often the server runs a pass; `None`: only `portcullis scrub` does.
    pub every: Option<Duration>,
    /// Bytes read per second at most.
    pub bytes_per_second: u64,
    /// How long a scrubber's lease lasts without renewal (it renews at a third of it).
    pub lease: Duration,
}

/// What a pass found, and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Whether another scrubber held the lease and this one waited for it.
    pub waited_for_lease: bool,
    /// What was hashed, found corrupt, healed, forgotten, and is quarantined now.
    #[serde(flatten)]
    pub found: Scrubbed,
    /// Bytes the pace allowed per tick of a tenth of a second.
    pub bytes_per_tick: u64,
    /// Ticks the pass waited for.
    pub ticks: u64,
    /// Wall-clock seconds, lease wait included.
    pub seconds: f64,
}

impl Report {
    /// Whether the store holds content that is not served (found now or before).
    pub fn anything_corrupt(&self) -> bool {
        !self.found.corrupt.is_empty() || !self.found.quarantined.is_empty()
    }
}

/// Runs one pass (see the module doc).
pub async fn run(registry: &Registry) -> Result<Report, RegistryError> {
    let started = Instant::now();
    let config = registry.config().scrub.clone();
    let mut throttle = Throttle::new(config.bytes_per_second, TICK);
    let outcome = crate::lease::hold(registry, LEASE, config.lease, registry.scrub_pass(&mut throttle)).await;
    let metrics = &registry.metrics;
    metrics.scrub_pass_duration.observe(started.elapsed().as_secs_f64());
    let held = match outcome {
        Ok(held) => held,
        Err(err) => {
            metrics.scrub_passes.with_label_values(&["failed"]).inc();
            return Err(err);
        }
    };
    metrics.scrub_passes.with_label_values(&["done"]).inc();
    Ok(Report {
        waited_for_lease: held.waited,
        found: held.value,
        bytes_per_tick: throttle.per_tick(),
        ticks: throttle.ticks(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Runs a pass every `[scrub] every` (read at each turn, so a reload changes it), first one
/// period after start.
pub async fn schedule(registry: Arc<Registry>) {
    crate::lease::every(&registry, |config| config.scrub.every, || async {
        match run(&registry).await {
            Ok(report) => tracing::info!(
                objects = report.found.objects,
                bytes = report.found.bytes,
                corrupt = report.found.corrupt.len(),
                quarantined = report.found.quarantined.len(),
                seconds = report.seconds,
                "scrub pass done"
            ),
            Err(err) => tracing::warn!(error = %err, "scrub pass failed; the next one starts over"),
        }
    })
    .await
}

/// The report as `portcullis scrub` prints it: with `listed` (`--report`) each corrupt object
/// this pass found, each healed one and everything still quarantined; then a total.
pub fn render(report: &Report, listed: bool) -> String {
    let mut out = String::new();
    if listed {
        out.push_str(&objects(report));
    }
    out.push_str(&format!(
        "scrub: {} objects, {} checked, {} corrupt found, {} quarantined, in {:.1}s\n",
        report.found.objects,
        crate::human::size(report.found.bytes),
        report.found.corrupt.len(),
        report.found.quarantined.len(),
        report.seconds
    ));
    out
}

fn objects(report: &Report) -> String {
    let mut out = String::new();
    if report.waited_for_lease {
        out.push_str("waited for another scrubber's pass to end\n");
    }
    for corrupt in &report.found.corrupt {
        let action = if corrupt.quarantined { "quarantined" } else { "changed meanwhile, left in place" };
        let linked = match corrupt.repositories.as_slice() {
            [] => "linked nowhere".to_owned(),
            repositories => format!("in {}", repositories.join(", ")),
        };
        out.push_str(&format!(
            "corrupt {} {} ({} bytes) hashes to {}: {action}; {linked}\n",
            corrupt.kind.as_str(),
            corrupt.digest,
            corrupt.size,
            corrupt.actual
        ));
    }
    for digest in &report.found.healed {
        out.push_str(&format!("healed {digest}: its right bytes were pushed again\n"));
    }
    for digest in &report.found.forgotten {
        out.push_str(&format!("forgot {digest}: nothing links it any more\n"));
    }
    for quarantined in &report.found.quarantined {
        out.push_str(&format!("quarantined {} {} ({} bytes): not served until pushed again\n", quarantined.kind.as_str(), quarantined.digest, quarantined.size));
    }
    out
}
