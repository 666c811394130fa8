//! Samplers: periodic readings of the host, the loop's process and the GPUs. The monitor
//! publishes each sample to observable gauges and feeds it to the evaluator.

mod cgroup;
mod gpu;
mod host;
mod procfs;
mod tree;

pub(crate) use cgroup::CgroupMemory;
#[cfg(feature = "docker")]
pub(crate) use cgroup::{CgroupCpu, CGROUP_ROOT};
#[cfg(feature = "gpu")]
pub(crate) use gpu::in_nested_pid_namespace;
pub use gpu::{GpuDevice, GpuId, GpuSample, GpuXid, DEFAULT_GPU_LIBRARY};
#[cfg(feature = "gpu")]
pub use gpu::{GpuSampler, GpuUnavailable, XidWatch};
pub(crate) use host::file_descriptors;
pub use host::{HostSample, HostSampler};
#[cfg(feature = "docker")]
pub(crate) use procfs::read_whole;
pub(crate) use procfs::{process_ids, read_stat};
pub use tree::process_tree;
pub(crate) use tree::{children, TreeRoot};
