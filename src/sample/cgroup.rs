//! The memory limit that kills: when the loop runs in a memory cgroup (a container, a
//! systemd slice) limited below the host's memory, the kernel's OOM killer acts on that
//! cgroup's usage against its limit, long before the host is full. Read from the
//! cgroup filesystem, v2 (unified) or v1, as `docker stats` and cAdvisor do.

use std::path::{Path, PathBuf};

/// Where the cgroup filesystem is mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

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
    fn locate(root: &Path, membership: &str) -> Option<Self> {
        let v1 = membership.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        });
        let (mount, path, files) = match v1 {
            Some(path) => (
                root.join("memory"),
                path,
                ["memory.usage_in_bytes", "memory.limit_in_bytes"],
            ),
            None => {
                let path = membership
                    .lines()
                    .find_map(|line| line.strip_prefix("0::"))?
                    .to_string();
                (root.to_path_buf(), path, ["memory.current", "memory.max"])
            }
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
}
