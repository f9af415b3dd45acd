//! The markdown `scripts/bench` prints: the machine's ceilings (and on S3 the store's own), one
//! table of medians over the runs with the ratio portcullis / Distribution, the manifest rows as
//! shares of the reference server's (`manifest-ceiling`), on S3 the blob rows as shares of the
//! store's throughput, and the targets of BENCHMARKS.md, each met or missed by these numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::results::{RunResults, CEILING, DISTRIBUTION, PORTCULLIS, PORTCULLIS_GATED, REFERENCE};

/// Renders the report of `runs` (at least one, all of the same kind).
pub(crate) fn render(runs: &[RunResults]) -> anyhow::Result<String> {
    let first = runs.first().ok_or_else(|| anyhow::anyhow!("no runs to report"))?;
    anyhow::ensure!(
        runs.iter().all(|r| r.storage == first.storage && r.smoke == first.smoke),
        "the runs differ in storage or smoke mode; report them separately"
    );
    let medians = Medians::of(runs);
    // A run is measured in several files (one per workload group); rows keep the order in
    // which they first appear.
    let mut run_numbers: Vec<u32> = runs.iter().map(|r| r.run).collect();
    run_numbers.sort_unstable();
    run_numbers.dedup();
    let mut sizes: Vec<&String> = Vec::new();
    let mut ceilings: Vec<&crate::results::Ceiling> = Vec::new();
    let mut metrics: Vec<&crate::results::Metric> = Vec::new();
    for run in runs {
        sizes.extend(run.sizes.iter().filter(|s| !sizes.contains(s)).collect::<Vec<_>>());
        ceilings.extend(run.ceilings.iter().filter(|c| !ceilings.iter().any(|seen| seen.key == c.key)).collect::<Vec<_>>());
        metrics.extend(run.metrics.iter().filter(|m| !metrics.iter().any(|seen| seen.key == m.key)).collect::<Vec<_>>());
    }
    let mut out = String::new();
    let mode = if first.smoke { ", smoke sizes (these numbers mean nothing)" } else { "" };
    writeln!(out, "Medians over {} run(s), storage `{}`{mode}.", run_numbers.len(), first.storage)?;
    let sizes: Vec<&str> = sizes.iter().map(|s| s.as_str()).collect();
    writeln!(out, "Sizes: {}.", sizes.join("; "))?;
    writeln!(out)?;

    writeln!(out, "| ceiling | MiB/s |")?;
    writeln!(out, "|---|---:|")?;
    for ceiling in &ceilings {
        writeln!(out, "| {} | {} |", ceiling.label, number(medians.ceiling(&ceiling.key).unwrap_or(f64::NAN)))?;
    }
    writeln!(out)?;

    writeln!(out, "| workload | portcullis | portcullis, gated | Distribution | reference (ceiling) | portcullis / Distribution | gated / Distribution |")?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
    let (referenced, metrics): (Vec<_>, Vec<_>) = metrics.into_iter().partition(|m| medians.metric(&m.key, REFERENCE).is_some());
    for metric in &metrics {
        let value = |server: &str| medians.metric(&metric.key, server);
        let ratio = |server: &str| match (value(server), value(DISTRIBUTION)) {
            (Some(ours), Some(theirs)) if theirs > 0.0 => format!("{:.2}", ours / theirs),
            _ => String::new(),
        };
        let cell = |server: &str| value(server).map(number).unwrap_or_default();
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            metric.label,
            cell(PORTCULLIS),
            cell(PORTCULLIS_GATED),
            cell(DISTRIBUTION),
            cell(CEILING),
            ratio(PORTCULLIS),
            ratio(PORTCULLIS_GATED)
        )?;
    }
    writeln!(out)?;

    if !referenced.is_empty() {
        reference_table(&mut out, &medians, &referenced)?;
    }
    ceiling_table(&mut out, &metrics, &medians)?;
    if first.storage == "s3" {
        s3_table(&mut out, &medians)?;
    }

    writeln!(out, "| target | measured | |")?;
    writeln!(out, "|---|---|---|")?;
    for target in targets(&medians, &first.storage) {
        let verdict = match target.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        writeln!(out, "| {} | {} | {verdict} |", target.what, target.measured)?;
    }
    Ok(out)
}

/// Medians per (metric, server) and per ceiling.
struct Medians {
    metrics: BTreeMap<(String, String), f64>,
    ceilings: BTreeMap<String, f64>,
}

impl Medians {
    fn of(runs: &[RunResults]) -> Medians {
        let mut metric_samples: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
        let mut ceiling_samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for run in runs {
            for metric in &run.metrics {
                for (server, value) in &metric.values {
                    metric_samples.entry((metric.key.clone(), server.clone())).or_default().push(*value);
                }
            }
            for ceiling in &run.ceilings {
                ceiling_samples.entry(ceiling.key.clone()).or_default().push(ceiling.mib_per_s);
            }
        }
        Medians {
            metrics: metric_samples.into_iter().map(|(key, samples)| (key, median(samples))).collect(),
            ceilings: ceiling_samples.into_iter().map(|(key, samples)| (key, median(samples))).collect(),
        }
    }

    fn metric(&self, key: &str, server: &str) -> Option<f64> {
        self.metrics.get(&(key.to_owned(), server.to_owned())).copied()
    }

    fn ceiling(&self, key: &str) -> Option<f64> {
        self.ceilings.get(key).copied()
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2.0
    }
}

/// Three significant digits or so: 12345, 123, 12.3, 1.23, 0.123.
fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// The rows measured on a reference server too (see `results::REFERENCE`), each server's value
/// also as a share of the reference's.
fn reference_table(out: &mut String, medians: &Medians, metrics: &[&crate::results::Metric]) -> anyhow::Result<()> {
    writeln!(out, "| against the reference | reference | portcullis | portcullis / reference | Distribution | Distribution / reference |")?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    for metric in metrics {
        let value = |server: &str| medians.metric(&metric.key, server);
        let reference = value(REFERENCE).unwrap_or(f64::NAN);
        let cell = |server: &str| value(server).map(number).unwrap_or_default();
        let share = |server: &str| value(server).filter(|_| reference > 0.0).map(|v| format!("{:.0}%", 100.0 * v / reference)).unwrap_or_default();
        writeln!(out, "| {} | {} | {} | {} | {} | {} |", metric.label, number(reference), cell(PORTCULLIS), share(PORTCULLIS), cell(DISTRIBUTION), share(DISTRIBUTION))?;
    }
    writeln!(out)?;
    Ok(())
}

/// The manifest throughput rows against the reference server's: open and gated as shares of it,
/// and what the gate costs (gated / open). Issue #20 goal 1 wants both shares at 50% or more and
/// gated / open at 0.9 or more.
fn ceiling_table(out: &mut String, metrics: &[&crate::results::Metric], medians: &Medians) -> anyhow::Result<()> {
    let rows: Vec<_> = metrics.iter().filter(|m| m.key.starts_with("manifest_") && m.key.ends_with("_rps")).filter(|m| medians.metric(&m.key, CEILING).is_some()).collect();
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(out, "| manifest row | reference (ceiling) req/s | portcullis, % of it | gated, % of it | gated / open |")?;
    writeln!(out, "|---|---:|---:|---:|---:|")?;
    for metric in rows {
        let value = |server: &str| medians.metric(&metric.key, server);
        let share = |server: &str| match (value(server), value(CEILING)) {
            (Some(ours), Some(ceiling)) if ceiling > 0.0 => format!("{:.0}%", 100.0 * ours / ceiling),
            _ => String::new(),
        };
        let gate_cost = match (value(PORTCULLIS_GATED), value(PORTCULLIS)) {
            (Some(gated), Some(open)) if open > 0.0 => format!("{:.2}", gated / open),
            _ => String::new(),
        };
        let ceiling = value(CEILING).map(number).unwrap_or_default();
        writeln!(out, "| {} | {ceiling} | {} | {} | {gate_cost} |", metric.label, share(PORTCULLIS), share(PORTCULLIS_GATED))?;
    }
    writeln!(out)?;
    Ok(())
}

/// The blob rows against what the store itself does with a plain S3 client on the same bytes:
/// an upload against 8 MiB `PutObject`s followed by the server-side copy of a commit (the two
/// one after the other, as in a registry), a download against `GetObject`.
fn s3_table(out: &mut String, medians: &Medians) -> anyhow::Result<()> {
    let upload_ceiling = match (medians.ceiling("s3_put_parts"), medians.ceiling("s3_copy")) {
        (Some(put), Some(copy)) => Some(1.0 / (1.0 / put + 1.0 / copy)),
        _ => None,
    };
    let rows = [
        ("upload_mono", upload_ceiling, "8 MiB PutObjects, then the server-side copy"),
        ("upload_chunked", upload_ceiling, "8 MiB PutObjects, then the server-side copy"),
        ("download", medians.ceiling("s3_get"), "GetObject"),
        ("download_redirect", medians.ceiling("s3_get"), "GetObject"),
    ];
    writeln!(out, "| blob row on S3 | store ceiling (MiB/s) | portcullis, % of it | Distribution, % of it |")?;
    writeln!(out, "|---|---:|---:|---:|")?;
    for (key, ceiling, what) in rows {
        let Some(ceiling) = ceiling else { continue };
        let share = |server: &str| medians.metric(key, server).map(|value| format!("{:.0}%", 100.0 * value / ceiling)).unwrap_or_default();
        writeln!(out, "| {key} | {} ({what}) | {} | {} |", number(ceiling), share(PORTCULLIS), share(DISTRIBUTION))?;
    }
    writeln!(out)?;
    Ok(())
}

struct Target {
    what: String,
    measured: String,
    met: Option<bool>,
}

/// The targets BENCHMARKS.md states, checked against the medians. On S3 the upload, download
/// and promotion targets, which are about the filesystem, are left out (the S3 table above
/// compares those rows with the store's own throughput instead).
fn targets(medians: &Medians, storage: &str) -> Vec<Target> {
    let on_fs = storage != "s3";
    let mut targets = Vec::new();
    let ceiling = match (medians.ceiling("sha256_openssl"), medians.ceiling("page_cache_write")) {
        (Some(sha), Some(write)) => Some(sha.min(write)),
        _ => None,
    };
    for (key, what) in [("upload_mono", "monolithic"), ("upload_chunked", "chunked")].into_iter().filter(|_| on_fs) {
        let value = medians.metric(key, PORTCULLIS);
        let (measured, met) = match (value, ceiling) {
            (Some(value), Some(ceiling)) => (format!("{} MiB/s = {:.0}% of {}", number(value), 100.0 * value / ceiling, number(ceiling)), Some(value >= 0.8 * ceiling)),
            _ => (String::new(), None),
        };
        targets.push(Target { what: format!("blob upload ({what}) >= 80% of min(sha256, page-cache write)"), measured, met });
    }

    for (key, what) in [("uploads_mono", "monolithic"), ("uploads_chunked", "chunked")].into_iter().filter(|_| on_fs) {
        let (measured, met) = match (medians.metric(key, PORTCULLIS), medians.metric(key, REFERENCE)) {
            (Some(ours), Some(reference)) => (format!("{} MiB/s = {:.0}% of {}", number(ours), 100.0 * ours / reference, number(reference)), Some(ours >= 0.9 * reference)),
            _ => (String::new(), None),
        };
        targets.push(Target { what: format!("blob upload ({what}) >= 90% of the uploads reference (#20)"), measured, met });
    }

    if on_fs {
        let download = medians.metric("download", PORTCULLIS);
        let (measured, met) = match (download, medians.metric("download", DISTRIBUTION)) {
            (Some(ours), Some(theirs)) => {
                let loopback = medians.ceiling("loopback").map(|l| format!(", {:.0}% of loopback", 100.0 * ours / l)).unwrap_or_default();
                (format!("{:.2}x Distribution{loopback}", ours / theirs), Some(ours >= 2.0 * theirs))
            }
            _ => (String::new(), None),
        };
        targets.push(Target { what: "blob download >= 2x Distribution, near the loopback ceiling".to_owned(), measured, met });
    }

    for protocol in ["h1", "h2"].into_iter().filter(|_| on_fs) {
        let value = medians.metric(&format!("tls_download_share_{protocol}"), PORTCULLIS);
        let ceiling = match (medians.metric(&format!("tls_download_{protocol}"), PORTCULLIS), medians.ceiling("loopback_tls")) {
            (Some(download), Some(ceiling)) => format!(", {:.0}% of the loopback TLS ceiling", 100.0 * download / ceiling),
            _ => String::new(),
        };
        targets.push(Target {
            what: format!("blob download over TLS ({protocol}) loses < 15% of plain HTTP (#20)"),
            measured: value.map(|v| format!("{:.0}% of plain{ceiling}", 100.0 * v)).unwrap_or_default(),
            met: value.map(|v| v > 0.85),
        });
    }

    for method in ["get", "head"] {
        for by in ["tag", "digest"] {
            let key = format!("manifest_{method}_{by}_c64_rps");
            let (measured, met) = match (medians.metric(&key, PORTCULLIS_GATED), medians.metric(&key, DISTRIBUTION)) {
                (Some(ours), Some(theirs)) => (format!("{:.2}x ({} vs {} req/s)", ours / theirs, number(ours), number(theirs)), Some(ours >= 5.0 * theirs)),
                _ => (String::new(), None),
            };
            let what = format!("manifest {} by {by}, c=64, gated: >= 5x Distribution req/s", method.to_uppercase());
            targets.push(Target { what, measured, met });
        }
    }

    for method in ["get", "head"] {
        for by in ["tag", "digest"] {
            let key = format!("manifest_{method}_{by}_c64_rps");
            let value = |server: &str| medians.metric(&key, server);
            let (measured, met) = match (value(PORTCULLIS), value(PORTCULLIS_GATED), value(CEILING)) {
                (Some(open), Some(gated), Some(ceiling)) => (
                    format!("open {:.0}%, gated {:.0}% of {} req/s; gated / open {:.2}", 100.0 * open / ceiling, 100.0 * gated / ceiling, number(ceiling), gated / open),
                    Some(open >= 0.5 * ceiling && gated >= 0.5 * ceiling && gated >= 0.9 * open),
                ),
                _ => (String::new(), None),
            };
            let what = format!("manifest {} by {by}, c=64: open and gated >= 50% of the reference (ceiling), gated >= 90% of open (#20)", method.to_uppercase());
            targets.push(Target { what, measured, met });
        }
    }

    let below = |key: &str, server: &str, limit: f64, unit: &str, what: &str| {
        let value = medians.metric(key, server);
        Target {
            what: what.to_owned(),
            measured: value.map(|v| format!("{} {unit}", number(v))).unwrap_or_default(),
            met: value.map(|v| v < limit),
        }
    };
    targets.push(below("verdict_cold_p99", PORTCULLIS, 20.0, "ms", "cold verdict p99 < 20 ms"));
    if on_fs {
        targets.push(below("promotion_p99", PORTCULLIS, 100.0, "ms", "promotion of 20 layers (p99) < 100 ms on the filesystem"));
    }
    targets.push(below("admission_mutate_p99", PORTCULLIS, 10.0, "ms", "admission webhook, mutate, 20 containers (p99) < 10 ms"));
    targets.push(below("admission_validate_p99", PORTCULLIS, 10.0, "ms", "admission webhook, validate, 20 containers, cached verdicts (p99) < 10 ms"));
    targets.push(below("rss_idle", PORTCULLIS, 64.0, "MiB", "idle memory < 64 MiB"));
    targets.push(below("rss_peak_parallel_uploads", PORTCULLIS, 256.0, "MiB", "peak memory with 64 concurrent uploads < 256 MiB"));
    targets.push(below("rss_peak_heavy_one", PORTCULLIS, 128.0, "MiB", "peak memory with 16 concurrent verdicts of an image with heavy evidence < 128 MiB"));
    let (measured, met) = match (medians.metric("gc_time", PORTCULLIS), medians.metric("gc_time", DISTRIBUTION)) {
        (Some(ours), Some(theirs)) => (format!("{} s vs {} s ({:.2}x)", number(ours), number(theirs), ours / theirs), Some(ours < theirs)),
        _ => (String::new(), None),
    };
    targets.push(Target { what: "garbage collection: portcullis, serving, finishes before Distribution, read-only".to_owned(), measured, met });
    for page in ["repositories_first", "repositories_middle", "repositories_prefix", "repositories_contains", "repository", "image", "promotions", "audit", "upstreams", "drift"] {
        let what = format!("console page {} (p99) < 50 ms with 10,000 repositories", page.replace('_', " "));
        targets.push(below(&format!("console_{page}_p99"), PORTCULLIS, 50.0, "ms", &what));
    }
    targets
}
