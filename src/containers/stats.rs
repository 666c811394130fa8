//! Container resource readings from Docker's stats streams, one per running container.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::StatsOptions;
use bollard::Docker;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt as _;

use super::ContainerStat;

/// A stream silent this long is ended (and restarted on the next tick if the
/// container still runs): Docker sends a reading every second.
const STREAM_SILENCE: Duration = Duration::from_secs(10);

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

/// Follows each running container's stats stream and keeps its latest reading, so a
/// sampler tick reads memory and CPU without waiting on Docker.
///
/// One-shot requests would be the obvious design, but Docker 20.10 answers a one-shot
/// request at once only the first time; later ones wait for its next one-second
/// collection cycle, which made a sweep of 20 containers take 2 s. A stream per
/// container delivers a reading every second instead, and CPU is still computed
/// from loopwatch's own previous reading of that container.
#[derive(Debug, Default)]
pub(crate) struct StatsSampler {
    followed: HashMap<String, Follower>,
}

#[derive(Debug)]
struct Follower {
    latest: Arc<Mutex<Option<ContainerStat>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StatsSampler {
    fn drop(&mut self) {
        for follower in self.followed.values() {
            follower.task.abort();
        }
    }
}

/// Reads one container's stream until it ends, keeping the latest reading.
async fn follow(
    docker: Docker,
    id: String,
    name: String,
    latest: Arc<Mutex<Option<ContainerStat>>>,
) {
    let mut stream = docker.stats(
        &id,
        Some(StatsOptions {
            stream: true,
            one_shot: false,
        }),
    );
    let mut previous: Option<CpuCounters> = None;
    while let Ok(Some(Ok(stats))) = tokio::time::timeout(STREAM_SILENCE, stream.next()).await {
        let counters = cpu_counters(&stats);
        let cpu = match (previous, counters) {
            (Some(previous), Some(now)) => cpu_percent(previous, now),
            _ => None,
        };
        previous = counters.or(previous);
        *latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(ContainerStat {
            name: name.clone(),
            memory_bytes: working_set(&stats),
            cpu_percent: cpu,
        });
    }
}

impl StatsSampler {
    /// Follows the given running containers (starting streams for new ones, ending
    /// those of containers that are gone) and returns their latest readings.
    pub(crate) fn sample(
        &mut self,
        docker: &Docker,
        containers: &[(String, String)],
    ) -> Vec<ContainerStat> {
        let running: HashMap<&str, &str> = containers
            .iter()
            .map(|(id, name)| (id.as_str(), name.as_str()))
            .collect();
        self.followed.retain(|id, follower| {
            let keep = running.contains_key(id.as_str()) && !follower.task.is_finished();
            if !keep {
                follower.task.abort();
            }
            keep
        });
        for (id, name) in &running {
            if !self.followed.contains_key(*id) {
                let latest = Arc::new(Mutex::new(None));
                let task = tokio::spawn(follow(
                    docker.clone(),
                    id.to_string(),
                    name.to_string(),
                    Arc::clone(&latest),
                ));
                self.followed
                    .insert(id.to_string(), Follower { latest, task });
            }
        }
        self.followed
            .values()
            .filter_map(|f| {
                f.latest
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            })
            .collect()
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
