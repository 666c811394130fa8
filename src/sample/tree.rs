//! A process and every process below it (a supervised loop and its worker pool),
//! summed: resident memory and CPU, read from `/proc`.
//!
//! The tree is walked through each thread's `children` file (one small read per
//! process); where the kernel does not offer it, the parent of every process on the
//! host is read instead. Processes that come and go between two readings are handled:
//! CPU is summed per process from its own previous reading, a process that started
//! since contributes all its CPU time, and one that ended contributes nothing more.

use std::collections::HashMap;
use std::time::Instant;

use super::procfs::{process_ids, read_stat};

/// One reading of a process tree.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct TreeSample {
    /// Summed resident set size, in bytes.
    pub(crate) rss_bytes: u64,
    /// Summed CPU since the previous reading, in percent of one core; 0 on the first.
    pub(crate) cpu_percent: f64,
    /// Processes in the tree now (the root included while it lives).
    pub(crate) processes: u64,
}

/// Linux reports process times in `USER_HZ` ticks, which its user-space ABI fixes at
/// 100 per second on every architecture Rust targets (`sysconf(_SC_CLK_TCK)`).
const TICKS_PER_SECOND: f64 = 100.0;

/// Resident memory from `/proc/<pid>/status` (`VmRSS`, in kB), so no page size is
/// assumed; 0 for a kernel thread or a zombie, which have none.
fn read_rss_bytes(pid: u32) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb.saturating_mul(1024))
}

/// The direct children of `pid` from each of its threads' `children` files; `None`
/// when the kernel has no such files.
fn children_of(pid: u32) -> Option<Vec<u32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut children = Vec::new();
    let mut any = false;
    for task in tasks.flatten() {
        let path = task.path().join("children");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        any = true;
        children.extend(
            text.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    any.then_some(children)
}

/// The direct children of `pid` (zombies included, until their parent reaps them).
pub(crate) fn children(pid: u32) -> Vec<u32> {
    children_of(pid).unwrap_or_else(|| all_parents().remove(&pid).unwrap_or_default())
}

/// Every process on the host with its parent, for kernels without `children` files.
fn all_parents() -> HashMap<u32, Vec<u32>> {
    let mut by_parent: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in process_ids() {
        if let Some(stat) = read_stat(pid) {
            by_parent.entry(stat.parent).or_default().push(pid);
        }
    }
    by_parent
}

/// A process and every process below it (children, grandchildren …), from `/proc`,
/// root first: what `loopwatch run` signals when it ends a loop's whole tree.
///
/// ```
/// let tree = loopwatch::sample::process_tree(std::process::id());
/// assert_eq!(tree[0], std::process::id());
/// ```
pub fn process_tree(root: u32) -> Vec<u32> {
    ProcessTree::new(root).members()
}

/// The root of a process tree, known by its pid and its start (the kernel's start
/// time, in ticks since boot): once that process has ended, its pid may go to
/// another, which is then not taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TreeRoot {
    pid: u32,
    /// `None` when it had ended already when it was noted.
    start: Option<u64>,
}

impl TreeRoot {
    /// The process `pid` as it is now.
    pub(crate) fn of(pid: u32) -> Self {
        TreeRoot {
            pid,
            start: live_start(pid),
        }
    }

    /// Its pid while it is still the process it was noted as; `None` once it has
    /// ended (a zombie has) or its pid went to another process.
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    pub(crate) fn current(&self) -> Option<u32> {
        self.current_with(live_start)
    }

    /// [`current`](Self::current), with the start of a live pid read by `start_of`.
    fn current_with(&self, start_of: impl Fn(u32) -> Option<u64>) -> Option<u32> {
        match (self.start, start_of(self.pid)) {
            (Some(then), Some(now)) if then == now => Some(self.pid),
            _ => None,
        }
    }
}

/// The start (ticks since boot) of a process that runs, `None` for a zombie or one
/// that is gone.
fn live_start(pid: u32) -> Option<u64> {
    read_stat(pid)
        .filter(|stat| !stat.zombie)
        .map(|stat| stat.start_ticks)
}

/// Sums a process tree on each [`tick`](Self::tick).
#[derive(Debug)]
pub(crate) struct ProcessTree {
    root: u32,
    /// Each process's identity (pid, start) and CPU ticks at the previous reading.
    previous: HashMap<(u32, u64), u64>,
    previous_at: Option<Instant>,
}

impl ProcessTree {
    /// A sampler of `root` and its descendants.
    pub(crate) fn new(root: u32) -> Self {
        ProcessTree {
            root,
            previous: HashMap::new(),
            previous_at: None,
        }
    }

    /// The pids of the tree now, root first.
    fn members(&self) -> Vec<u32> {
        let mut members = vec![self.root];
        let mut fallback: Option<HashMap<u32, Vec<u32>>> = None;
        let mut next = 0;
        while next < members.len() {
            let pid = members[next];
            next += 1;
            let children = match children_of(pid) {
                Some(children) => children,
                None => fallback
                    .get_or_insert_with(all_parents)
                    .get(&pid)
                    .cloned()
                    .unwrap_or_default(),
            };
            for child in children {
                // A pid seen twice (reused while walking) is not walked again.
                if !members.contains(&child) && members.len() < 100_000 {
                    members.push(child);
                }
            }
        }
        members
    }

    /// Reads the tree now.
    pub(crate) fn tick(&mut self) -> TreeSample {
        let now = Instant::now();
        let mut sample = TreeSample::default();
        let mut current = HashMap::new();
        let mut cpu_delta_ticks = 0u64;
        for pid in self.members() {
            let Some(stat) = read_stat(pid) else {
                continue; // it ended while the tree was walked
            };
            sample.processes += 1;
            sample.rss_bytes = sample.rss_bytes.saturating_add(read_rss_bytes(pid));
            let key = (pid, stat.start_ticks);
            let before = self.previous.get(&key).copied().unwrap_or(0);
            cpu_delta_ticks = cpu_delta_ticks.saturating_add(stat.cpu_ticks.saturating_sub(before));
            current.insert(key, stat.cpu_ticks);
        }
        if let Some(then) = self.previous_at {
            let wall = now.duration_since(then).as_secs_f64();
            if wall > 0.0 {
                sample.cpu_percent = cpu_delta_ticks as f64 / TICKS_PER_SECOND / wall * 100.0;
            }
        }
        self.previous = current;
        self.previous_at = Some(now);
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_holds_children_and_grandchildren() {
        // sh starts a sleeping grandchild and waits: both are in the tree.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 3 & wait"])
            .spawn()
            .unwrap();
        let mut tree = ProcessTree::new(child.id());
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let mut sample = tree.tick();
        while sample.processes < 2 && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            sample = tree.tick();
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(sample.processes, 2, "{sample:?}");
        assert!(sample.rss_bytes > 0);
        assert!(sample.cpu_percent >= 0.0);
    }

    #[test]
    fn a_tree_root_is_current_until_it_ends_or_its_pid_goes_to_another_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let root = TreeRoot::of(child.id());
        assert_eq!(root.current(), Some(child.id()));
        // The same pid, started at another time: another process.
        let start = root.start.expect("it runs");
        assert_eq!(root.current_with(|_| Some(start + 1)), None);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(root.current(), None, "it ended");
        assert_eq!(TreeRoot::of(child.id()).current(), None, "noted once ended");
    }

    #[test]
    fn a_gone_root_reads_empty() {
        let mut tree = ProcessTree::new(u32::MAX - 1);
        assert_eq!(tree.tick(), TreeSample::default());
    }
}
