//! Host memory, this process's memory and CPU, and the loop's: read with one reused
//! sysinfo `System` that refreshes only the memory figures and this one process, plus
//! the loop's process tree when the loop is a supervised child.

use std::time::Instant;

use sysinfo::{MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

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
    /// let sample = loopwatch::HostSampler::for_current_process().tick();
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
/// two ticks, and the reused `System` avoids re-reading the whole process table.
///
/// ```
/// let mut sampler = loopwatch::HostSampler::for_current_process();
/// let sample = sampler.tick();
/// assert!(sample.host_memory_total_bytes > 0);
/// assert!(sample.process_rss_bytes > 0);
/// ```
pub struct HostSampler {
    /// `None` where the platform offers no readings; samples then read zero.
    system: Option<System>,
    pid: Option<Pid>,
    /// When the previous tick ran and the process's CPU time then, in milliseconds.
    previous_cpu: Option<(Instant, u64)>,
    /// A supervised loop's process tree; `None` when the loop is this process.
    loop_tree: Option<super::tree::ProcessTree>,
}

impl std::fmt::Debug for HostSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSampler")
            .field("pid", &self.pid)
            .finish()
    }
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
        let pid = sysinfo::get_current_pid().ok();
        let system = System::new()
            .map_err(
                |e| tracing::error!(error = %e, "host sampling is unavailable on this platform"),
            )
            .ok();
        HostSampler {
            system,
            pid,
            previous_cpu: None,
            loop_tree: None,
        }
    }

    /// Refreshes the readings and returns them.
    pub fn tick(&mut self) -> HostSample {
        let Some(system) = self.system.as_mut() else {
            return HostSample::default();
        };
        let mut sample = HostSample::default();
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        if let Some(pid) = self.pid {
            system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                false,
                ProcessRefreshKind::nothing().with_memory().with_cpu(),
            );
            if let Some(process) = system.process(pid) {
                let now = Instant::now();
                let cpu_ms = process.accumulated_cpu_time();
                let percent = match self.previous_cpu.replace((now, cpu_ms)) {
                    // CPU time over wall time, both in milliseconds: 100 per busy core.
                    Some((then, before)) => {
                        let wall_ms = now.duration_since(then).as_secs_f64() * 1000.0;
                        if wall_ms > 0.0 {
                            cpu_ms.saturating_sub(before) as f64 / wall_ms * 100.0
                        } else {
                            0.0
                        }
                    }
                    None => 0.0,
                };
                sample.process_rss_bytes = process.memory();
                sample.process_cpu_percent = percent;
                sample.process_cpu_seconds = cpu_ms as f64 / 1000.0;
                sample.process_virtual_memory_bytes = process.virtual_memory();
                sample.process_start_time_seconds = process.start_time();
            }
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
        let total = system.total_memory();
        sample.host_memory_used_bytes = total.saturating_sub(system.available_memory());
        sample.host_memory_total_bytes = total;
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
