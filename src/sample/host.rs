//! Host memory and the loop process's memory and CPU, read with one reused sysinfo
//! `System` that refreshes only the memory figures and this one process.

use std::time::Instant;

use sysinfo::{MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// One reading of the host and of the process being watched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostSample {
    /// Resident set size of the watched process, in bytes.
    pub process_rss_bytes: u64,
    /// CPU used by the watched process since the previous sample, in percent of one
    /// core: 100 means one core fully busy, 200 two cores (the convention of `top`).
    /// The first sample of a sampler reads 0.
    pub process_cpu_percent: f64,
    /// Host memory in use: total minus available, in bytes.
    pub host_memory_used_bytes: u64,
    /// Total host memory, in bytes.
    pub host_memory_total_bytes: u64,
}

impl HostSample {
    /// Host memory in use as a fraction of the total (0.0–1.0).
    ///
    /// ```
    /// let sample = loopwatch::HostSample {
    ///     process_rss_bytes: 0,
    ///     process_cpu_percent: 0.0,
    ///     host_memory_used_bytes: 3,
    ///     host_memory_total_bytes: 4,
    /// };
    /// assert_eq!(sample.host_memory_fraction(), 0.75);
    /// ```
    pub fn host_memory_fraction(&self) -> f64 {
        if self.host_memory_total_bytes == 0 {
            return 0.0;
        }
        self.host_memory_used_bytes as f64 / self.host_memory_total_bytes as f64
    }
}

/// Reads host memory and one process's RSS and CPU on each [`tick`](Self::tick).
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
}

impl std::fmt::Debug for HostSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSampler")
            .field("pid", &self.pid)
            .finish()
    }
}

impl HostSampler {
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
        }
    }

    /// Refreshes the readings and returns them.
    pub fn tick(&mut self) -> HostSample {
        let Some(system) = self.system.as_mut() else {
            return HostSample {
                process_rss_bytes: 0,
                process_cpu_percent: 0.0,
                host_memory_used_bytes: 0,
                host_memory_total_bytes: 0,
            };
        };
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let (process_rss_bytes, process_cpu_percent) = match self.pid {
            Some(pid) => {
                system.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&[pid]),
                    false,
                    ProcessRefreshKind::nothing().with_memory().with_cpu(),
                );
                match system.process(pid) {
                    Some(process) => {
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
                        (process.memory(), percent)
                    }
                    None => (0, 0.0),
                }
            }
            None => (0, 0.0),
        };
        let total = system.total_memory();
        let available = system.available_memory();
        HostSample {
            process_rss_bytes,
            process_cpu_percent,
            host_memory_used_bytes: total.saturating_sub(available),
            host_memory_total_bytes: total,
        }
    }
}
