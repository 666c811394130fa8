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
    /// Virtual memory size, in bytes.
    pub(crate) virtual_bytes: u64,
    /// Resident set size, in pages.
    pub(crate) rss_pages: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name is in parentheses and may
/// itself hold spaces and parentheses, so fields are counted from the last `)`.
/// Reads without allocating (the host sampler parses its own line every tick).
pub(crate) fn parse_stat(line: &str) -> Option<ProcStat> {
    let rest = &line[line.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); each `nth` skips to the field named.
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let mut number = |skip: usize| fields.nth(skip)?.parse::<u64>().ok();
    let parent = u32::try_from(number(0)?).ok()?;
    let utime = number(14 - 5)?;
    let stime = number(0)?;
    let start_ticks = number(22 - 16)?;
    let virtual_bytes = number(0)?;
    let rss_pages = number(0)?;
    Some(ProcStat {
        parent,
        cpu_ticks: utime.saturating_add(stime),
        start_ticks,
        zombie: matches!(state, "Z" | "X"),
        virtual_bytes,
        rss_pages,
    })
}

/// Reads a whole small file from its start into `buffer` (`pread` at offset 0, so a
/// file kept open reads afresh each time).
pub(crate) fn read_whole<'b>(file: &std::fs::File, buffer: &'b mut [u8]) -> Option<&'b [u8]> {
    use std::os::unix::fs::FileExt as _;
    let read = file.read_at(buffer, 0).ok()?;
    (read > 0).then(|| &buffer[..read])
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
        assert_eq!((stat.virtual_bytes, stat.rss_pages), (123456789, 2048));
        assert!(!stat.zombie);
        assert!(parse_stat(&line.replace(") S ", ") Z ")).unwrap().zombie);
        assert_eq!(parse_stat("12 (short) S 1"), None);
    }

    #[test]
    fn this_process_is_listed() {
        assert!(process_ids().any(|pid| pid == std::process::id()));
    }
}
