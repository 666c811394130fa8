//! The `/proc` files the process samplers and sweeps read: the list of processes and
//! each one's `stat` line.

/// What `/proc/<pid>/stat` says about one process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProcStat {
    /// Its parent's pid.
    pub(crate) parent: u32,
    /// User plus system time, in clock ticks.
    pub(crate) cpu_ticks: u64,
    /// Start time after boot, in clock ticks: with the pid, the process's identity.
    pub(crate) start_ticks: u64,
    /// Dead and waiting to be reaped by its parent (state Z or X).
    pub(crate) zombie: bool,
}

/// Parses a `/proc/<pid>/stat` line. The command name is in parentheses and may
/// itself hold spaces and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(line: &str) -> Option<ProcStat> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        parent: u32::try_from(field(4)?).ok()?,
        cpu_ticks: field(14)?.saturating_add(field(15)?),
        start_ticks: field(22)?,
        zombie: matches!(fields.first(), Some(&"Z") | Some(&"X")),
    })
}

/// The `stat` of process `pid`, if it exists.
pub(crate) fn read_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The pids of every process on the host (empty where `/proc` is not mounted).
pub(crate) fn process_ids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_awkward_command_names_parse() {
        let line = "4242 (my (odd) loop) S 17 4242 17 0 -1 4194560 900 0 0 0 \
                    150 50 0 0 20 0 3 0 98765 123456789 2048 18446744073709551615";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.parent, 17);
        assert_eq!(stat.cpu_ticks, 200);
        assert_eq!(stat.start_ticks, 98765);
        assert!(!stat.zombie);
        assert!(parse_stat(&line.replace(") S ", ") Z ")).unwrap().zombie);
        assert_eq!(parse_stat("12 (short) S 1"), None);
    }

    #[test]
    fn this_process_is_listed() {
        assert!(process_ids().any(|pid| pid == std::process::id()));
    }
}
