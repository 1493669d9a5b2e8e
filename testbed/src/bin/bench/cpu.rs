//! Where the CPU goes: each process's time on a CPU from the scheduler's counts.

use anyhow::Context;

/// What each command ran between two counts, in ms per unit of work, for `n` units.
pub(crate) fn cpu_spent(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
    n: usize,
) -> String {
    let spent: Vec<String> = after
        .iter()
        .filter_map(|(command, ns)| {
            let used = ns.saturating_sub(before.get(command).copied().unwrap_or(0));
            (used > 0).then(|| format!("{command} {:.3}", used as f64 / n as f64 / 1e6))
        })
        .collect();
    spent.join(", ")
}

/// Nanoseconds each of `commands` (as `comm` shows them: 15 bytes at most) has run on a CPU, all its processes
/// and threads (the scheduler's own count).
pub(crate) fn cpu_by_command(commands: &[&str]) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let mut by = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let path = entry?.path();
        let Some(pid) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(command) = std::fs::read_to_string(path.join("comm")) else { continue };
        let command = command.trim();
        if commands.contains(&command) {
            let ns = if pid == std::process::id() { own_cpu_ns()? } else { cpu_ns(pid).unwrap_or(0) };
            *by.entry(command.to_owned()).or_insert(0) += ns;
        }
    }
    Ok(by)
}

/// Nanoseconds this process has run on a CPU, the threads that ended included (which `cpu_ns` misses: the
/// client threads of a timed phase end with it), from `/proc/self/stat` in its 10 ms ticks.
pub(crate) fn own_cpu_ns() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The fields after the command, which is in parentheses and may hold spaces: utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').context("/proc/self/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).context("/proc/self/stat field");
    Ok((ticks(11)? + ticks(12)?) * 10_000_000)
}

/// Nanoseconds process `pid` has run on a CPU, all its threads (the scheduler's own count).
pub(crate) fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat")).unwrap_or_default();
        total += stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(total)
}
