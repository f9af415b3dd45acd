//! CPU time of a process, user plus system, from `/proc/<pid>/stat`: the same counters
//! `getrusage(RUSAGE_SELF)` reports for the calling process, readable for any process, so the
//! servers and the driver itself are measured alike.

use anyhow::Context as _;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux the bench runs on).
const TICKS_PER_S: f64 = 100.0;

/// CPU seconds `pid` has used since it started, all its threads.
pub(crate) fn seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}: is the process still running?"))?;
    // Fields after the command name, which is in parentheses and may hold spaces: state is the
    // first, utime (field 14) the 12th and stime (field 15) the 13th.
    let fields: Vec<&str> = text.rsplit_once(')').with_context(|| format!("{path}: no command name"))?.1.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<f64> {
        let field = fields.get(index).with_context(|| format!("{path}: too few fields"))?;
        Ok(field.parse::<u64>().with_context(|| format!("{path}: field {field:?}"))? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_S)
}
