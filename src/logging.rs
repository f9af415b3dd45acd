//! Log output of the binary: the format (`[server] log_format`) and the `tracing` subscriber
//! that writes it to stderr. What is logged is decided where it happens; this only says how it
//! is written.
//!
//! Human-readable lines are coloured only when stderr is a terminal and `NO_COLOR` is unset or
//! empty (no-color.org), so a log redirected to a file or a collector holds no ANSI escapes;
//! `json` is the format for collectors.

use std::ffi::OsStr;
use std::io::IsTerminal as _;

use serde::Deserialize;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), stderr receives.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let colour = use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Whether to colour the log: on a terminal, unless `NO_COLOR` holds a value.
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        let check = |terminal: bool, no_color: Option<&str>, expected: bool| {
            assert_eq!(use_colour(terminal, no_color.map(OsStr::new)), expected, "terminal {terminal}, NO_COLOR {no_color:?}");
        };
        check(true, None, true);
        check(true, Some(""), true);
        check(true, Some("1"), false);
        check(false, None, false);
        check(false, Some("1"), false);
    }
}
