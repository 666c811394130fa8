//! Memory and CPU of a cgroup, read from the cgroup filesystem, v2 (unified) or v1, as
//! `docker stats` and cAdvisor compute them, for microseconds per read.
//!
//! Two users: the loop's own cgroup (when it runs in a container or slice limited
//! below the host's memory, the kernel's OOM killer acts on that cgroup's usage against
//! its limit, long before the host is full), and the sandbox containers of a run,
//! whose numbers are read here rather than asked of Docker every second.

use std::path::{Path, PathBuf};

/// Where the cgroup filesystem is mounted.
pub(crate) const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The files of one memory cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMemory {
    /// Usage: `memory.current` (v2) or `memory.usage_in_bytes` (v1).
    usage: PathBuf,
    /// Limit: `memory.max` (v2) or `memory.limit_in_bytes` (v1).
    limit: PathBuf,
    /// Statistics, for the inactive file cache the kernel can reclaim.
    stat: PathBuf,
}

// Used by the containers feature only.
#[cfg_attr(not(feature = "docker"), allow(dead_code))]
/// The cumulative CPU time of one cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CgroupCpu {
    /// v2: `cpu.stat`, whose `usage_usec` line counts microseconds.
    Unified(PathBuf),
    /// v1: `cpuacct.usage`, nanoseconds.
    Accounting(PathBuf),
}

#[cfg_attr(not(feature = "docker"), allow(dead_code))]
impl CgroupCpu {
    /// Finds the CPU accounting of the cgroup a `/proc/<pid>/cgroup` text names.
    pub(crate) fn locate(root: &Path, membership: &str) -> Option<Self> {
        match controller_path(membership, "cpuacct") {
            Some(path) => {
                let mount = ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"]
                    .iter()
                    .map(|m| root.join(m))
                    .find(|m| m.is_dir())?;
                existing(&mount, &path, "cpuacct.usage").map(CgroupCpu::Accounting)
            }
            None => {
                let path = unified_path(membership)?;
                existing(root, &path, "cpu.stat").map(CgroupCpu::Unified)
            }
        }
    }

    /// Cumulative CPU time in nanoseconds.
    #[cfg(test)]
    fn read_ns(&self) -> Option<u64> {
        match self {
            CgroupCpu::Accounting(path) => std::fs::read_to_string(path).ok()?.trim().parse().ok(),
            CgroupCpu::Unified(path) => std::fs::read_to_string(path)
                .ok()?
                .lines()
                .find_map(|line| line.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|usec| usec.saturating_mul(1000)),
        }
    }
}

/// The path of the v1 hierarchy holding `controller`, from a `/proc/<pid>/cgroup` text.
fn controller_path(membership: &str, controller: &str) -> Option<String> {
    membership.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })
}

/// The v2 path (`0::/path`), from a `/proc/<pid>/cgroup` text.
fn unified_path(membership: &str) -> Option<String> {
    membership
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_string)
}

// Used by the containers feature only.
#[cfg_attr(not(feature = "docker"), allow(dead_code))]
/// `mount/path/file` if it exists, else `mount/file` (inside a container the cgroup is
/// usually mounted as the root itself).
fn existing(mount: &Path, path: &str, file: &str) -> Option<PathBuf> {
    [
        mount.join(path.trim_start_matches('/')),
        mount.to_path_buf(),
    ]
    .into_iter()
    .map(|dir| dir.join(file))
    .find(|candidate| candidate.is_file())
}

/// One reading of a memory cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CgroupReading {
    /// The working set: usage minus inactive file cache (what cannot be reclaimed
    /// without pressure, as Kubernetes and cAdvisor count it).
    pub(crate) working_set_bytes: u64,
    /// The limit, or `None` when the cgroup has none.
    pub(crate) limit_bytes: Option<u64>,
}

impl CgroupMemory {
    /// The memory cgroup of the current process, if the cgroup filesystem shows one.
    pub(crate) fn of_current_process() -> Option<Self> {
        let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        Self::locate(Path::new(CGROUP_ROOT), &membership)
    }

    /// Finds the cgroup's directory under `root` from a `/proc/<pid>/cgroup` text:
    /// the v1 `memory` controller's line, else the v2 line (`0::/path`). Inside a
    /// container the cgroup is usually mounted as the root itself, so the root is
    /// tried when the full path does not exist.
    pub(crate) fn locate(root: &Path, membership: &str) -> Option<Self> {
        let (mount, path, files) = match controller_path(membership, "memory") {
            Some(path) => (
                root.join("memory"),
                path,
                ["memory.usage_in_bytes", "memory.limit_in_bytes"],
            ),
            None => (
                root.to_path_buf(),
                unified_path(membership)?,
                ["memory.current", "memory.max"],
            ),
        };
        let relative = path.trim_start_matches('/');
        [mount.join(relative), mount]
            .into_iter()
            .find(|dir| dir.join(files[0]).is_file() && dir.join(files[1]).is_file())
            .map(|dir| CgroupMemory {
                usage: dir.join(files[0]),
                limit: dir.join(files[1]),
                stat: dir.join("memory.stat"),
            })
    }

    // Used by the containers feature only.
    /// The usage file, which names the cgroup's directory.
    #[cfg_attr(not(feature = "docker"), allow(dead_code))]
    pub(crate) fn path(&self) -> &Path {
        &self.usage
    }

    /// The statistics file (`memory.stat`).
    #[cfg(feature = "docker")]
    pub(crate) fn stat_path(&self) -> &Path {
        &self.stat
    }

    /// Reads usage, inactive file cache and limit; `None` if a file cannot be read.
    pub(crate) fn read(&self) -> Option<CgroupReading> {
        let number = |path: &Path| -> Option<Option<u64>> {
            let text = std::fs::read_to_string(path).ok()?;
            let text = text.trim();
            // v2 writes "max" for no limit; v1 writes a number near i64::MAX.
            if text == "max" {
                return Some(None);
            }
            let value: u64 = text.parse().ok()?;
            Some((value < 1 << 62).then_some(value))
        };
        let usage = number(&self.usage)??;
        let limit_bytes = number(&self.limit)?;
        let stat = std::fs::read_to_string(&self.stat).unwrap_or_default();
        let inactive_file = ["total_inactive_file ", "inactive_file "]
            .iter()
            .find_map(|key| {
                stat.lines()
                    .find_map(|line| line.strip_prefix(key))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        Some(CgroupReading {
            working_set_bytes: usage.saturating_sub(inactive_file),
            limit_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn v2_in_a_container_reads_the_mounted_root() {
        let root = tempfile::tempdir().unwrap();
        write(
            root.path(),
            &[
                ("memory.current", "300000000\n"),
                ("memory.max", "268435456\n"),
                (
                    "memory.stat",
                    "anon 1\ninactive_file 100000000\nactive_file 5\n",
                ),
            ],
        );
        // The container sees its own cgroup as "/" (cgroup namespace).
        let cgroup = CgroupMemory::locate(root.path(), "0::/\n").unwrap();
        assert_eq!(
            cgroup.read(),
            Some(CgroupReading {
                working_set_bytes: 200_000_000,
                limit_bytes: Some(268_435_456)
            })
        );
        write(root.path(), &[("memory.max", "max\n")]);
        assert_eq!(cgroup.read().unwrap().limit_bytes, None);
    }

    #[test]
    fn v1_follows_the_memory_controller_path_or_falls_back_to_the_mount() {
        let root = tempfile::tempdir().unwrap();
        let membership = "9:name=systemd:/\n4:memory:/docker/abc\n0::/\n";
        let nested = root.path().join("memory/docker/abc");
        write(
            &nested,
            &[
                ("memory.usage_in_bytes", "500\n"),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory.stat", "inactive_file 1\ntotal_inactive_file 100\n"),
            ],
        );
        let cgroup = CgroupMemory::locate(root.path(), membership).unwrap();
        assert_eq!(
            cgroup.read(),
            Some(CgroupReading {
                working_set_bytes: 400,
                limit_bytes: None
            }),
            "the hierarchical count, and an unlimited cgroup"
        );
        // Inside a container only the mount root exists.
        let inside = tempfile::tempdir().unwrap();
        write(
            &inside.path().join("memory"),
            &[
                ("memory.usage_in_bytes", "500\n"),
                ("memory.limit_in_bytes", "1000\n"),
            ],
        );
        let cgroup = CgroupMemory::locate(inside.path(), membership).unwrap();
        assert_eq!(cgroup.read().unwrap().limit_bytes, Some(1000));
        assert!(CgroupMemory::locate(tempfile::tempdir().unwrap().path(), membership).is_none());
    }

    #[test]
    fn cpu_time_in_nanoseconds_from_either_version() {
        let root = tempfile::tempdir().unwrap();
        write(
            &root.path().join("sys/a"),
            &[("cpu.stat", "usage_usec 1500\nuser_usec 1000\n")],
        );
        let v2 = CgroupCpu::locate(&root.path().join("sys"), "0::/a\n").unwrap();
        assert_eq!(v2.read_ns(), Some(1_500_000));
        write(
            &root.path().join("cpu,cpuacct/docker/abc"),
            &[("cpuacct.usage", "123456789\n")],
        );
        let v1 = CgroupCpu::locate(
            root.path(),
            "3:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n",
        )
        .unwrap();
        assert_eq!(v1.read_ns(), Some(123_456_789));
    }
}
