//! Samplers: background readings of the host and the loop's process (and, with the
//! containers feature, Docker), published through lock-free cells that observable
//! gauges read at collection time.

mod host;

use std::sync::atomic::{AtomicU64, Ordering};

pub use host::{HostSample, HostSampler};

/// An `f64` readable and writable from any thread without a lock.
#[derive(Debug)]
pub(crate) struct AtomicF64(AtomicU64);

impl AtomicF64 {
    pub(crate) fn new(value: f64) -> Self {
        AtomicF64(AtomicU64::new(value.to_bits()))
    }

    pub(crate) fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    pub(crate) fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

/// The latest host and process readings, shared by the sampler and the gauges.
#[derive(Debug)]
pub(crate) struct HostReadings {
    pub(crate) process_rss_bytes: AtomicF64,
    pub(crate) process_cpu_percent: AtomicF64,
    pub(crate) host_memory_used_bytes: AtomicF64,
    pub(crate) host_memory_total_bytes: AtomicF64,
}

impl Default for HostReadings {
    fn default() -> Self {
        HostReadings {
            process_rss_bytes: AtomicF64::new(f64::NAN),
            process_cpu_percent: AtomicF64::new(f64::NAN),
            host_memory_used_bytes: AtomicF64::new(f64::NAN),
            host_memory_total_bytes: AtomicF64::new(f64::NAN),
        }
    }
}

impl HostReadings {
    pub(crate) fn publish(&self, sample: &HostSample) {
        self.process_rss_bytes.set(sample.process_rss_bytes as f64);
        self.process_cpu_percent.set(sample.process_cpu_percent);
        self.host_memory_used_bytes
            .set(sample.host_memory_used_bytes as f64);
        self.host_memory_total_bytes
            .set(sample.host_memory_total_bytes as f64);
    }
}
