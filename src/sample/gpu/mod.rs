//! GPUs: what one reading of NVIDIA's management library (NVML) says about each
//! device, and about the loop's share of it (the video memory of the loop's own
//! processes). The readings are plain data, compiled with or without the `gpu`
//! feature; the sampler that takes them ([`GpuSampler`], feature `gpu`) loads NVML at
//! run time, so a build with the feature runs on a machine without a driver, where
//! the sampler says so once and the rest runs on.

use std::sync::Arc;

#[cfg(feature = "gpu")]
mod nvml;

#[cfg(feature = "gpu")]
pub use nvml::{GpuSampler, GpuUnavailable, XidWatch};

/// The library NVML is loaded from when no other is configured: the driver's, found
/// on the dynamic linker's search path.
pub const DEFAULT_GPU_LIBRARY: &str = "libnvidia-ml.so.1";

/// One reading of one GPU. A value NVML could not give (not supported by the device,
/// or the library lacks the call) is `None`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GpuDevice {
    /// NVML's index of the device (the `gpu_index` label).
    pub index: u32,
    /// The device's UUID, `GPU-…` (the `hw_id` label).
    pub uuid: Arc<str>,
    /// The device stopped answering (NVML's "GPU is lost": it fell off the bus, or
    /// the driver gave it up); no value below is read while it is.
    pub lost: bool,
    /// Fraction of the last sample period the device ran a kernel (0–1).
    pub utilization: Option<f64>,
    /// Video memory in use, in bytes.
    pub memory_used_bytes: Option<u64>,
    /// Video memory in all, in bytes.
    pub memory_total_bytes: Option<u64>,
    /// Power drawn now, in watts.
    pub power_watts: Option<f64>,
    /// Temperature of the die, in degrees Celsius.
    pub temperature_celsius: Option<f64>,
    /// Corrected ECC errors since the driver loaded (NVML's volatile count).
    pub ecc_corrected: Option<u64>,
    /// Uncorrected ECC errors since the driver loaded.
    pub ecc_uncorrected: Option<u64>,
    /// Video memory of the loop's own processes on this device, in bytes: the sum
    /// over the processes of NVML's compute and graphics lists whose pids are in the
    /// loop's process tree (a process in both lists counted once; one whose memory
    /// NVML cannot give counted 0). `None` when NVML could give neither list.
    pub loop_memory_bytes: Option<u64>,
    /// Processes of the loop's tree on this device, in the lists NVML could give (0
    /// when it could give neither): whether the loop uses the device.
    pub loop_processes: u32,
}

impl GpuDevice {
    /// A device with nothing read yet.
    pub(crate) fn new(index: u32, uuid: Arc<str>) -> Self {
        GpuDevice {
            index,
            uuid,
            lost: false,
            utilization: None,
            memory_used_bytes: None,
            memory_total_bytes: None,
            power_watts: None,
            temperature_celsius: None,
            ecc_corrected: None,
            ecc_uncorrected: None,
            loop_memory_bytes: None,
            loop_processes: 0,
        }
    }

    /// Video memory in use as a fraction of the device's (0–1), when both are known.
    ///
    /// ```
    /// let device = loopwatch::sample::GpuDevice::reading(0, "GPU-0", 4 << 30, 16 << 30);
    /// assert_eq!(device.memory_fraction(), Some(0.25));
    /// ```
    pub fn memory_fraction(&self) -> Option<f64> {
        match (self.memory_used_bytes, self.memory_total_bytes) {
            (Some(used), Some(total)) if total > 0 => Some(used as f64 / total as f64),
            _ => None,
        }
    }

    /// A device whose memory reads `used` of `total` bytes and nothing else: for
    /// examples and tests of what consumes readings.
    pub fn reading(index: u32, uuid: &str, used: u64, total: u64) -> Self {
        GpuDevice {
            memory_used_bytes: Some(used),
            memory_total_bytes: Some(total),
            ..GpuDevice::new(index, uuid.into())
        }
    }
}

/// One reading of every GPU the sampler found when it opened NVML, in NVML's order.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct GpuSample {
    /// The devices.
    pub devices: Vec<GpuDevice>,
}

/// A GPU as the sampler knew it when it opened NVML: NVML's index and the UUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct GpuId {
    /// NVML's index of the device (the `gpu_index` label).
    pub index: u32,
    /// The device's UUID, `GPU-…` (the `hw_id` label).
    pub uuid: Arc<str>,
}

impl GpuId {
    /// A device's identity.
    pub fn new(index: u32, uuid: impl Into<Arc<str>>) -> Self {
        GpuId {
            index,
            uuid: uuid.into(),
        }
    }
}

/// A critical Xid error NVML reported on a device (its event set's
/// `nvmlEventTypeXidCriticalError`): the driver's code for a fault it saw (79: the
/// GPU fell off the bus, 48: a double-bit ECC error, 13 and 31: a program's
/// exception or memory fault …).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GpuXid {
    /// The device, matched by the handle NVML gave for it at start-up (a GPU that
    /// just fell off the bus answers nothing else), else by its UUID or index; `None`
    /// when it matches none of the devices found at start-up.
    pub gpu: Option<GpuId>,
    /// The Xid code; `None` when NVML could not say (its 999).
    pub code: Option<u64>,
}

/// Whether this process runs in a pid namespace below the host's (a container
/// without `--pid=host`): NVML names processes by the host's pids, which then match
/// none of the loop's. Read from the `NSpid` line of `/proc/self/status`, which lists
/// one pid per namespace level; `false` where it cannot be read.
#[cfg_attr(not(feature = "gpu"), allow(dead_code))]
pub(crate) fn in_nested_pid_namespace() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| nested(&status))
}

/// Whether a `/proc/<pid>/status` text says its process is in a pid namespace below
/// the host's: its `NSpid` line lists more than one pid (one per level, the host's
/// first). `false` without the line (a kernel before 4.1).
#[cfg_attr(not(feature = "gpu"), allow(dead_code))]
fn nested(status: &str) -> bool {
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .is_some_and(|pids| pids.split_whitespace().count() > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_fraction_needs_both_numbers() {
        let mut device = GpuDevice::reading(0, "GPU-a", 1, 4);
        assert_eq!(device.memory_fraction(), Some(0.25));
        device.memory_total_bytes = Some(0);
        assert_eq!(device.memory_fraction(), None);
        device.memory_total_bytes = None;
        assert_eq!(device.memory_fraction(), None);
    }

    #[test]
    fn a_process_is_nested_when_its_nspid_line_lists_more_than_one_pid() {
        let status = |nspid: &str| format!("Name:\tloop\nTgid:\t5\n{nspid}\nPPid:\t1\n");
        assert!(!nested(&status("NSpid:\t5")), "the host's namespace");
        assert!(nested(&status("NSpid:\t812\t5")), "a container's");
        assert!(
            nested(&status("NSpid:\t9001\t812\t5")),
            "a container's inside one"
        );
        assert!(
            !nested("Name:\tloop\nPid:\t5\n"),
            "no NSpid line: an old kernel"
        );
        assert!(!nested(""));
    }
}
