//! `[gc]`: when garbage collection runs in the server, how young content is that it never
//! removes, and how long a collector's lease lasts without renewal.

use std::time::Duration;

use serde::Deserialize;

use crate::gc::GcConfig;

/// `[gc]` as written.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileGc {
    every: String,
    grace: String,
    lease: String,
}

impl Default for FileGc {
    fn default() -> Self {
        FileGc { every: "6h".to_owned(), grace: "1h".to_owned(), lease: "1m".to_owned() }
    }
}

fn duration(text: &str, what: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("gc.{what}: {text:?}: {err}"))
}

impl FileGc {
    pub(super) fn load(self) -> Result<GcConfig, String> {
        let every = match self.every.as_str() {
            "never" => None,
            text => Some(duration(text, "every")?).filter(|every| !every.is_zero()),
        };
        let lease = duration(&self.lease, "lease")?;
        if lease < Duration::from_secs(1) {
            return Err(format!("gc.lease: {:?} is shorter than a second", self.lease));
        }
        Ok(GcConfig { every, grace: duration(&self.grace, "grace")?, lease })
    }
}
