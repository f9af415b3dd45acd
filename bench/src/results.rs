//! What one run measured, as written by `measure` and read by `report`: ceilings of the machine,
//! and metrics with one value per server, in the order the table shows them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// portcullis on an open namespace.
pub(crate) const PORTCULLIS: &str = "portcullis";
/// portcullis on a gated namespace (manifest rows only).
pub(crate) const PORTCULLIS_GATED: &str = "portcullis_gated";
/// The CNCF Distribution registry.
pub(crate) const DISTRIBUTION: &str = "distribution";
/// A minimal server in `bench/` doing only what a workload must (issue #20): the most this box
/// and this client can do, which the registries are measured against.
pub(crate) const REFERENCE: &str = "reference";
/// The reference of the manifest rows: `manifest-ceiling`, the same manifest from memory.
pub(crate) const CEILING: &str = "ceiling";

/// Whether a larger value is better; decides nothing but how a reader should read the ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Better {
    /// Throughput, requests per second.
    Higher,
    /// Times, latencies, memory.
    Lower,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Metric {
    /// Stable identifier, e.g. `manifest_get_tag_c64_rps`.
    pub(crate) key: String,
    /// What the row says, e.g. `manifest GET by tag, c=64 (req/s)`.
    pub(crate) label: String,
    /// How to read the ratio.
    pub(crate) better: Better,
    /// Value per server (`portcullis`, `portcullis_gated`, `distribution`).
    pub(crate) values: BTreeMap<String, f64>,
}

/// One machine ceiling measured in the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Ceiling {
    /// Stable identifier, e.g. `sha256_openssl`.
    pub(crate) key: String,
    /// What it is.
    pub(crate) label: String,
    /// MiB/s.
    pub(crate) mib_per_s: f64,
}

/// Everything one `measure` run wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunResults {
    /// Run number, from 1.
    pub(crate) run: u32,
    /// Whether sizes were the tiny smoke sizes.
    pub(crate) smoke: bool,
    /// `fs` or `s3`: where portcullis (and Distribution) kept their data.
    pub(crate) storage: String,
    /// The sizes used, in words, for the table's caption.
    pub(crate) sizes: Vec<String>,
    /// Machine ceilings.
    pub(crate) ceilings: Vec<Ceiling>,
    /// Metrics in table order.
    pub(crate) metrics: Vec<Metric>,
}

impl RunResults {
    /// An empty result for run `run`.
    pub(crate) fn new(run: u32, smoke: bool, storage: &str) -> RunResults {
        RunResults { run, smoke, storage: storage.to_owned(), sizes: Vec::new(), ceilings: Vec::new(), metrics: Vec::new() }
    }

    /// Records `value` of `server` in row `key`, creating the row (with `label`) on first use.
    pub(crate) fn record(&mut self, key: &str, label: &str, better: Better, server: &str, value: f64) {
        let index = match self.metrics.iter().position(|m| m.key == key) {
            Some(index) => index,
            None => {
                self.metrics.push(Metric { key: key.to_owned(), label: label.to_owned(), better, values: BTreeMap::new() });
                self.metrics.len() - 1
            }
        };
        self.metrics[index].values.insert(server.to_owned(), value);
    }

    /// The value of `server` in row `key`, if recorded.
    pub(crate) fn value(&self, key: &str, server: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.key == key)?.values.get(server).copied()
    }

    /// Reads a run's JSON file.
    pub(crate) fn load(path: &Path) -> anyhow::Result<RunResults> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    /// Writes the run's JSON file.
    pub(crate) fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
    }
}
