//! Resident memory of a server process, from `/proc/<pid>/status`: `VmRSS` now and `VmHWM`, the
//! peak since start or since the last [`reset_peak`].

use anyhow::Context as _;

/// Current resident set, MiB.
pub(crate) fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    status_kib(pid, "VmRSS").map(|kib| kib as f64 / 1024.0)
}

/// Peak resident set since start or the last [`reset_peak`], MiB.
pub(crate) fn peak_mib(pid: u32) -> anyhow::Result<f64> {
    status_kib(pid, "VmHWM").map(|kib| kib as f64 / 1024.0)
}

/// Resets the peak to the current resident set (`echo 5 > /proc/<pid>/clear_refs`, Linux 4.0+), so
/// that the next [`peak_mib`] is the peak of one workload rather than of the process's life.
pub(crate) fn reset_peak(pid: u32) -> anyhow::Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").with_context(|| format!("write {path} (needs the same user as the server, or root)"))
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}: is the server still running?"))?;
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("{path} has no {field}"))?;
    let kib = line.trim().trim_end_matches("kB").trim();
    kib.parse().with_context(|| format!("{path}: {field} is {line:?}"))
}
