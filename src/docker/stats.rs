//! Container resource readings from one-shot Docker stats, polled concurrently.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::StatsOptions;
use bollard::Docker;
use futures_util::future::join_all;
use futures_util::StreamExt as _;

/// Longest wait for one container's stats.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// One container's reading.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContainerStat {
    /// Container name (the metrics' `name` label).
    pub(crate) name: String,
    /// Working-set memory: usage minus inactive file cache, in bytes.
    pub(crate) memory_bytes: u64,
    /// CPU since the previous sample, 100 = one core; `None` on a first sample.
    pub(crate) cpu_percent: Option<f64>,
}

/// CPU counters of one sample, to difference against the next.
#[derive(Debug, Clone, Copy)]
struct CpuCounters {
    container_ns: u64,
    system_ns: u64,
    online_cpus: u32,
}

/// Working set as `docker stats` and cAdvisor report it: usage minus inactive file
/// pages (`inactive_file` on cgroup v2, `total_inactive_file` on v1).
pub(crate) fn working_set(stats: &ContainerStatsResponse) -> u64 {
    let Some(memory) = &stats.memory_stats else {
        return 0;
    };
    let usage = memory.usage.unwrap_or(0);
    let inactive = memory
        .stats
        .as_ref()
        .and_then(|s| {
            s.get("inactive_file")
                .or_else(|| s.get("total_inactive_file"))
                .copied()
        })
        .unwrap_or(0);
    usage.saturating_sub(inactive)
}

fn cpu_counters(stats: &ContainerStatsResponse) -> Option<CpuCounters> {
    let cpu = stats.cpu_stats.as_ref()?;
    Some(CpuCounters {
        container_ns: cpu.cpu_usage.as_ref()?.total_usage?,
        system_ns: cpu.system_cpu_usage?,
        online_cpus: cpu
            .online_cpus
            .or_else(|| {
                cpu.cpu_usage
                    .as_ref()
                    .and_then(|u| u.percpu_usage.as_ref())
                    .map(|p| p.len() as u32)
            })
            .unwrap_or(1)
            .max(1),
    })
}

/// CPU percent between two samples, the formula of `docker stats`: the container's
/// share of the host's CPU time, times the CPUs online (so 100 = one core).
fn cpu_percent(previous: CpuCounters, now: CpuCounters) -> Option<f64> {
    let container = now.container_ns.checked_sub(previous.container_ns)? as f64;
    let system = now.system_ns.checked_sub(previous.system_ns)? as f64;
    (system > 0.0).then(|| container / system * f64::from(now.online_cpus) * 100.0)
}

/// Keeps each container's previous CPU counters, since one-shot stats carry none.
#[derive(Debug, Default)]
pub(crate) struct StatsSampler {
    previous: HashMap<String, CpuCounters>,
}

impl StatsSampler {
    /// Reads every given container concurrently; containers that vanished meanwhile
    /// are skipped, and their previous counters forgotten.
    pub(crate) async fn sample(
        &mut self,
        docker: &Docker,
        containers: &[(String, String)],
    ) -> Vec<ContainerStat> {
        let requests = containers.iter().map(|(id, name)| async move {
            let mut stream = docker.stats(
                id,
                Some(StatsOptions {
                    stream: false,
                    one_shot: true,
                }),
            );
            let reading = tokio::time::timeout(STATS_TIMEOUT, stream.next()).await;
            (id, name, reading)
        });
        let mut readings = Vec::with_capacity(containers.len());
        let mut seen = HashMap::with_capacity(containers.len());
        for (id, name, reading) in join_all(requests).await {
            let Ok(Some(Ok(stats))) = reading else {
                continue;
            };
            let counters = cpu_counters(&stats);
            let cpu = match (self.previous.get(id), counters) {
                (Some(previous), Some(now)) => cpu_percent(*previous, now),
                _ => None,
            };
            if let Some(counters) = counters {
                seen.insert(id.clone(), counters);
            }
            readings.push(ContainerStat {
                name: name.clone(),
                memory_bytes: working_set(&stats),
                cpu_percent: cpu,
            });
        }
        self.previous = seen;
        readings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_the_share_of_host_time_times_cpus() {
        let a = CpuCounters {
            container_ns: 1_000,
            system_ns: 10_000,
            online_cpus: 2,
        };
        let b = CpuCounters {
            container_ns: 6_000,
            system_ns: 20_000,
            online_cpus: 2,
        };
        // Half the host's time on a 2-CPU host: one full core.
        assert_eq!(cpu_percent(a, b), Some(100.0));
        assert_eq!(cpu_percent(b, a), None, "counters that went backwards");
    }

    #[test]
    fn working_set_subtracts_inactive_file_pages() {
        let stats: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "memory_stats": {"usage": 100_000_000u64, "stats": {"total_inactive_file": 30_000_000u64}}
        }))
        .unwrap();
        assert_eq!(working_set(&stats), 70_000_000);
    }
}
