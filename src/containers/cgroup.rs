//! A container's numbers at the kernel's price: memory and CPU read from its cgroup
//! files, found through its init process, for microseconds per container and no
//! work for dockerd.

use std::path::Path;
use std::time::Instant;

use crate::containers::stats::ContainerStat;
use crate::sample::{CgroupCpu, CgroupMemory, CGROUP_ROOT};

/// One container's cgroup files, and the previous CPU reading to difference against.
#[derive(Debug)]
pub(crate) struct CgroupStats {
    memory: CgroupMemory,
    cpu: CgroupCpu,
    previous_cpu: Option<(Instant, u64)>,
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
        let cpu = CgroupCpu::locate(root, &membership)?;
        // The files must be the container's own, not a mount root found instead.
        if !memory.path().to_string_lossy().contains(id) {
            return None;
        }
        let mut stats = CgroupStats {
            memory,
            cpu,
            previous_cpu: None,
        };
        stats.read("probe")?;
        stats.previous_cpu = None;
        Some(stats)
    }

    /// Reads working-set memory and, from the second reading on, CPU since the
    /// previous one (100 = one core). `None` once the cgroup is gone.
    pub(crate) fn read(&mut self, name: &str) -> Option<ContainerStat> {
        let memory = self.memory.read()?;
        let cpu_ns = self.cpu.read_ns()?;
        let now = Instant::now();
        let cpu_percent = self.previous_cpu.and_then(|(then, before)| {
            let wall = now.duration_since(then).as_nanos() as f64;
            (wall > 0.0).then(|| cpu_ns.saturating_sub(before) as f64 / wall * 100.0)
        });
        self.previous_cpu = Some((now, cpu_ns));
        Some(ContainerStat {
            name: name.to_string(),
            memory_bytes: memory.working_set_bytes,
            cpu_percent,
        })
    }
}
