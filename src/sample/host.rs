//! Host memory, this process's memory and CPU, and the loop's: read straight from
//! `/proc`, through files opened once and re-read in place (`pread` at offset 0, into
//! one reused buffer), plus the loop's process tree when the loop is a supervised
//! child. A tick reads two files: the process's `stat` line and `/proc/meminfo`. What
//! does not change (the page size, the process's start time) is read once.

use std::fs::File;
use std::time::Instant;

use super::procfs::{parse_stat, read_whole};

/// One reading of the host, of this process and of the loop.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct HostSample {
    /// Resident set size of this process, in bytes.
    pub process_rss_bytes: u64,
    /// CPU used by this process since the previous sample, in percent of one core:
    /// 100 means one core fully busy, 200 two cores (the convention of `top`). The
    /// first sample of a sampler reads 0.
    pub process_cpu_percent: f64,
    /// Resident memory of the loop: this process's, or for a supervised loop the sum
    /// over its whole process tree (the loop and its workers), in bytes.
    pub loop_rss_bytes: u64,
    /// CPU of the loop since the previous sample, in percent of one core, on the same
    /// terms as `loop_rss_bytes`.
    pub loop_cpu_percent: f64,
    /// Processes of the loop: 1 for this process, the size of a supervised loop's
    /// tree (0 once it has ended).
    pub loop_processes: u64,
    /// Host memory in use: total minus available, in bytes.
    pub host_memory_used_bytes: u64,
    /// Total host memory, in bytes.
    pub host_memory_total_bytes: u64,
    /// CPU time the watched process has used since it started, in seconds.
    pub process_cpu_seconds: f64,
    /// Virtual memory of the watched process, in bytes.
    pub process_virtual_memory_bytes: u64,
    /// Start time of the watched process, in seconds since the Unix epoch.
    pub process_start_time_seconds: u64,
}

impl HostSample {
    /// Host memory in use as a fraction of the total (0.0–1.0).
    ///
    /// ```
    /// let sample = loopwatch::sample::HostSampler::for_current_process().tick();
    /// let fraction = sample.host_memory_fraction();
    /// assert!(fraction > 0.0 && fraction < 1.0);
    /// ```
    pub fn host_memory_fraction(&self) -> f64 {
        if self.host_memory_total_bytes == 0 {
            return 0.0;
        }
        self.host_memory_used_bytes as f64 / self.host_memory_total_bytes as f64
    }
}

/// Reads host memory, this process's RSS and CPU, and the loop's, on each
/// [`tick`](Self::tick).
///
/// Keep one sampler and call `tick` periodically: CPU usage is the difference between
/// two ticks, and the files stay open between them.
///
/// ```
/// let mut sampler = loopwatch::sample::HostSampler::for_current_process();
/// let sample = sampler.tick();
/// assert!(sample.host_memory_total_bytes > 0);
/// assert!(sample.process_rss_bytes > 0);
/// ```
pub struct HostSampler {
    /// `/proc/<pid>/stat` of the watched process; `None` where `/proc` is not mounted.
    stat: Option<File>,
    /// `/proc/meminfo`.
    meminfo: Option<File>,
    /// One buffer for both files (meminfo is about 1.5 KiB).
    buffer: Box<[u8; 4096]>,
    page_size: u64,
    /// Start time of the process in seconds since the Unix epoch, once known.
    start_time_seconds: Option<u64>,
    /// When the previous tick ran and the process's CPU time then, in clock ticks.
    previous_cpu: Option<(Instant, u64)>,
    /// A supervised loop's process tree; `None` when the loop is this process.
    loop_tree: Option<super::tree::ProcessTree>,
}

impl std::fmt::Debug for HostSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSampler")
            .field("readable", &self.stat.is_some())
            .finish_non_exhaustive()
    }
}

/// Linux's `USER_HZ`: process times are in hundredths of a second.
const TICKS_PER_SECOND: u64 = 100;

/// `MemTotal` and `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn parse_meminfo(text: &[u8]) -> Option<(u64, u64)> {
    let (mut total, mut available) = (None, None);
    for line in text.split(|&b| b == b'\n') {
        let value = |prefix: &[u8]| -> Option<u64> {
            let rest = line.strip_prefix(prefix)?;
            let digits: &[u8] = rest.trim_ascii_start().split(|&b| b == b' ').next()?;
            let kb: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
            Some(kb.saturating_mul(1024))
        };
        if let Some(v) = value(b"MemTotal:") {
            total = Some(v);
        } else if let Some(v) = value(b"MemAvailable:") {
            available = Some(v);
        }
        if total.is_some() && available.is_some() {
            break;
        }
    }
    Some((total?, available?))
}

/// The host's boot time in seconds since the Unix epoch (`btime` of `/proc/stat`).
fn boot_time_seconds() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

impl HostSampler {
    /// A sampler watching the loop running in another process (a supervised child)
    /// and every process below it: its memory and CPU are summed over the tree.
    pub fn for_process_tree(root_pid: u32) -> Self {
        HostSampler {
            loop_tree: Some(super::tree::ProcessTree::new(root_pid)),
            ..Self::for_current_process()
        }
    }

    /// A sampler watching the current process.
    pub fn for_current_process() -> Self {
        let stat = File::open("/proc/self/stat")
            .map_err(|e| tracing::error!(error = %e, "process sampling is unavailable: /proc/self/stat cannot be read"))
            .ok();
        let meminfo = File::open("/proc/meminfo")
            .map_err(|e| tracing::error!(error = %e, "host memory sampling is unavailable: /proc/meminfo cannot be read"))
            .ok();
        let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096);
        HostSampler {
            stat,
            meminfo,
            buffer: Box::new([0; 4096]),
            page_size: u64::try_from(page_size).unwrap_or(4096),
            start_time_seconds: None,
            previous_cpu: None,
            loop_tree: None,
        }
    }

    /// Refreshes the readings and returns them.
    pub fn tick(&mut self) -> HostSample {
        let mut sample = HostSample::default();
        let fields = self
            .stat
            .as_ref()
            .and_then(|file| read_whole(file, &mut self.buffer[..]))
            .and_then(|line| parse_stat(std::str::from_utf8(line).ok()?));
        if let Some(fields) = fields {
            let now = Instant::now();
            let percent = match self.previous_cpu.replace((now, fields.cpu_ticks)) {
                // CPU time over wall time: 100 per busy core.
                Some((then, before)) => {
                    let wall = now.duration_since(then).as_secs_f64();
                    let cpu =
                        fields.cpu_ticks.saturating_sub(before) as f64 / TICKS_PER_SECOND as f64;
                    if wall > 0.0 {
                        cpu / wall * 100.0
                    } else {
                        0.0
                    }
                }
                None => 0.0,
            };
            sample.process_rss_bytes = fields.rss_pages.saturating_mul(self.page_size);
            sample.process_cpu_percent = percent;
            sample.process_cpu_seconds = fields.cpu_ticks as f64 / TICKS_PER_SECOND as f64;
            sample.process_virtual_memory_bytes = fields.virtual_bytes;
            sample.process_start_time_seconds = *self.start_time_seconds.get_or_insert_with(|| {
                boot_time_seconds().unwrap_or(0) + fields.start_ticks / TICKS_PER_SECOND
            });
        }
        match self.loop_tree.as_mut() {
            Some(tree) => {
                let reading = tree.tick();
                sample.loop_rss_bytes = reading.rss_bytes;
                sample.loop_cpu_percent = reading.cpu_percent;
                sample.loop_processes = reading.processes;
            }
            None => {
                sample.loop_rss_bytes = sample.process_rss_bytes;
                sample.loop_cpu_percent = sample.process_cpu_percent;
                sample.loop_processes = 1;
            }
        }
        let memory = self
            .meminfo
            .as_ref()
            .and_then(|file| read_whole(file, &mut self.buffer[..]))
            .and_then(parse_meminfo);
        if let Some((total, available)) = memory {
            sample.host_memory_used_bytes = total.saturating_sub(available);
            sample.host_memory_total_bytes = total;
        }
        sample
    }
}

/// Open file descriptors of this process and their limit (soft `RLIMIT_NOFILE`), from
/// `/proc/self`; `None` where it is not mounted.
pub(crate) fn file_descriptors() -> Option<(u64, u64)> {
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let max = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())?;
    Some((open, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_parses() {
        let meminfo =
            b"MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   12000000 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            Some((24_000_000 * 1024, 12_000_000 * 1024))
        );
        assert_eq!(parse_meminfo(b"MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn a_tick_agrees_with_the_kernel() {
        let mut sampler = HostSampler::for_current_process();
        let first = sampler.tick();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        let rss = first.process_rss_bytes as f64;
        assert!(
            (rss / (rss_kb * 1024) as f64 - 1.0).abs() < 0.1,
            "{first:?} vs {rss_kb} kB"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(first.process_start_time_seconds <= now);
        assert!(first.process_start_time_seconds + 3600 > now, "{first:?}");
        assert!(first.host_memory_used_bytes < first.host_memory_total_bytes);
        // Burn CPU: the second tick sees it.
        let until = Instant::now() + std::time::Duration::from_millis(60);
        while Instant::now() < until {
            std::hint::black_box(0u64.wrapping_add(1));
        }
        let second = sampler.tick();
        assert!(second.process_cpu_seconds >= first.process_cpu_seconds);
        assert!(second.process_cpu_percent > 0.0, "{second:?}");
    }
}
