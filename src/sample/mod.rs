//! Samplers: periodic readings of the host and the loop's process. The monitor
//! publishes each sample to observable gauges and feeds it to the evaluator.

mod cgroup;
mod host;
mod procfs;
mod tree;

pub(crate) use cgroup::CgroupMemory;
#[cfg(feature = "docker")]
pub(crate) use cgroup::{CgroupCpu, CGROUP_ROOT};
pub(crate) use host::file_descriptors;
pub use host::{HostSample, HostSampler};
#[cfg(feature = "docker")]
pub(crate) use procfs::read_whole;
pub(crate) use procfs::{process_ids, read_stat};
pub(crate) use tree::children;
pub use tree::process_tree;
