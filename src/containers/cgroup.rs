//! A container's numbers at the kernel's price: memory and CPU read from its cgroup
//! files, found once through its init process and then kept open, so that each sample
//! is two or three `pread`s and a little parsing per container, and no work for
//! dockerd.
//!
//! `memory.stat` is most of that price (the kernel formats some forty lines for it),
//! and it is read only for the inactive file cache that working-set memory leaves out.
//! So it is read again only when the container's memory usage has changed since it
//! was last read, or after [`STAT_MAX_AGE`] samples: an idle sandbox costs two small
//! reads a sample.

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use super::ContainerStat;
use crate::sample::{read_whole, CgroupCpu, CgroupMemory, CGROUP_ROOT};

/// Samples after which `memory.stat` is read again even if usage has not changed
/// (pages can move between the active and inactive lists with usage unchanged).
const STAT_MAX_AGE: u32 = 30;

/// One container's open cgroup files, and the previous CPU reading to difference
/// against.
#[derive(Debug)]
pub(crate) struct CgroupStats {
    /// `memory.usage_in_bytes` (v1) or `memory.current` (v2).
    usage: File,
    /// `memory.stat`, for the inactive file cache.
    stat: File,
    /// `cpuacct.usage` (v1, nanoseconds) or `cpu.stat` (v2, `usage_usec`).
    cpu: File,
    cpu_unified: bool,
    buffer: Vec<u8>,
    previous_cpu: Option<(Instant, u64)>,
    /// Usage when `memory.stat` was last read, the inactive file cache it then
    /// showed, and samples since.
    stat_read_at: Option<(u64, u64)>,
    stat_age: u32,
}

/// The number at the start of `text` (trailing newline allowed).
fn number(text: &[u8]) -> Option<u64> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&text[..digits]).ok()?.parse().ok()
}

/// The value of the `key value` line of a statistics file.
fn field(text: &[u8], key: &[u8]) -> Option<u64> {
    text.split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(b" "))
        .and_then(number)
}

impl CgroupStats {
    /// Finds the cgroup of container `id` through its init process `pid`, as this
    /// host's kernel shows it. `None` where it cannot be seen from here (a remote or
    /// rootless daemon, loopwatch itself in another pid namespace): the path must name
    /// the container, so another process that happens to have that pid here is never
    /// mistaken for it.
    pub(crate) fn of_container(id: &str, pid: u32) -> Option<Self> {
        Self::locate(Path::new(CGROUP_ROOT), id, pid)
    }

    fn locate(root: &Path, id: &str, pid: u32) -> Option<Self> {
        let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        if id.len() < 12 || !membership.contains(id) {
            return None;
        }
        let memory = CgroupMemory::locate(root, &membership)?;
        // The files must be the container's own, not a mount root found instead.
        if !memory.path().to_string_lossy().contains(id) {
            return None;
        }
        let (cpu, cpu_unified) = match CgroupCpu::locate(root, &membership)? {
            CgroupCpu::Accounting(path) => (path, false),
            CgroupCpu::Unified(path) => (path, true),
        };
        let mut stats = CgroupStats {
            usage: File::open(memory.path()).ok()?,
            stat: File::open(memory.stat_path()).ok()?,
            cpu: File::open(cpu).ok()?,
            cpu_unified,
            buffer: vec![0; 8192],
            previous_cpu: None,
            stat_read_at: None,
            stat_age: 0,
        };
        stats.read("probe")?;
        stats.previous_cpu = None;
        Some(stats)
    }

    /// Reads working-set memory and, from the second reading on, CPU since the
    /// previous one (100 = one core). `None` once the cgroup is gone.
    pub(crate) fn read(&mut self, name: &str) -> Option<ContainerStat> {
        let usage = number(read_whole(&self.usage, &mut self.buffer)?)?;
        let inactive = match self.stat_read_at {
            Some((at_usage, inactive)) if at_usage == usage && self.stat_age < STAT_MAX_AGE => {
                self.stat_age += 1;
                inactive
            }
            _ => {
                let stat = read_whole(&self.stat, &mut self.buffer)?;
                let inactive = field(stat, b"total_inactive_file")
                    .or_else(|| field(stat, b"inactive_file"))
                    .unwrap_or(0);
                self.stat_read_at = Some((usage, inactive));
                self.stat_age = 0;
                inactive
            }
        };
        let cpu_text = read_whole(&self.cpu, &mut self.buffer)?;
        let cpu_ns = if self.cpu_unified {
            field(cpu_text, b"usage_usec")?.saturating_mul(1000)
        } else {
            number(cpu_text)?
        };
        let now = Instant::now();
        let cpu_percent = self.previous_cpu.and_then(|(then, before)| {
            let wall = now.duration_since(then).as_nanos() as f64;
            (wall > 0.0).then(|| cpu_ns.saturating_sub(before) as f64 / wall * 100.0)
        });
        self.previous_cpu = Some((now, cpu_ns));
        Some(ContainerStat {
            name: name.to_string(),
            memory_bytes: usage.saturating_sub(inactive),
            cpu_percent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_fields_parse_without_allocating() {
        assert_eq!(number(b"12345\n"), Some(12345));
        assert_eq!(number(b"max\n"), None);
        let stat = b"cache 5\ninactive_file 7\ntotal_inactive_file 9\n";
        assert_eq!(field(stat, b"total_inactive_file"), Some(9));
        assert_eq!(field(stat, b"inactive_file"), Some(7));
        assert_eq!(
            field(b"usage_usec 42\nuser_usec 1\n", b"usage_usec"),
            Some(42)
        );
        assert_eq!(field(stat, b"missing"), None);
    }
}
