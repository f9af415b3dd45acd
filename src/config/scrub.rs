//! `[scrub]`: how often the server re-hashes the stored content, how fast (bytes read per
//! second, so a pass never competes with pulls for the disk or the bucket), and how long a
//! scrubber's lease lasts without renewal.

use std::time::Duration;

use serde::Deserialize;

use crate::scrub::ScrubConfig;

/// `[scrub]` as written.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileScrub {
    every: String,
    bytes_per_second: u64,
    lease: String,
}

impl Default for FileScrub {
    fn default() -> Self {
        FileScrub { every: "24h".to_owned(), bytes_per_second: 16 << 20, lease: "1m".to_owned() }
    }
}

impl FileScrub {
    pub(super) fn load(self) -> Result<ScrubConfig, String> {
        let parse = |text: &str, what: &str| humantime::parse_duration(text).map_err(|err| format!("scrub.{what}: {text:?}: {err}"));
        let every = match self.every.as_str() {
            "never" => None,
            text => Some(parse(text, "every")?).filter(|every| !every.is_zero()),
        };
        if self.bytes_per_second == 0 {
            return Err("scrub.bytes_per_second: expected a positive number of bytes (every = \"never\" turns scrubbing off)".to_owned());
        }
        let lease = parse(&self.lease, "lease")?;
        if lease < Duration::from_secs(1) {
            return Err(format!("scrub.lease: {:?} is shorter than a second", self.lease));
        }
        Ok(ScrubConfig { every, bytes_per_second: self.bytes_per_second, lease })
    }
}
