//! The GPUs as the samples and the Xid events left them: the latest reading of each
//! device, its errors over the run (the Xid errors reported, and the ECC errors the
//! driver's counts grew by since the first sample), and the devices lost. Part of the
//! [`RunState`](super::RunState).

use std::sync::Arc;
use std::time::Duration;

use crate::export::LiveGpu;
use crate::sample::{GpuDevice, GpuId, GpuSample, GpuXid};

/// Kinds of GPU error, as the `error_type` label of `hw_errors_total` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum GpuErrorKind {
    /// A critical Xid error (NVML's event set).
    Xid,
    /// ECC errors the device corrected.
    Corrected,
    /// ECC errors it could not correct.
    Uncorrected,
}

impl GpuErrorKind {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GpuErrorKind::Xid => "xid",
            GpuErrorKind::Corrected => "corrected",
            GpuErrorKind::Uncorrected => "uncorrected",
        }
    }
}

/// New errors of one device.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GpuErrors {
    /// The device; `None` for an Xid error of a device NVML no longer names.
    pub(crate) gpu: Option<GpuId>,
    pub(crate) kind: GpuErrorKind,
    pub(crate) count: u64,
    /// The Xid code, for an Xid error.
    pub(crate) code: Option<u64>,
}

/// One device over the run.
#[derive(Debug, Clone)]
struct Booked {
    latest: GpuDevice,
    /// The driver's ECC counts at the previous sample (corrected, uncorrected).
    ecc: (Option<u64>, Option<u64>),
    xid: u64,
    corrected: u64,
    uncorrected: u64,
    last_xid: Option<u64>,
}

/// The GPUs of the run.
#[derive(Debug, Default)]
pub(crate) struct GpuBooks {
    devices: Vec<Booked>,
    /// When (monotonic) the latest sample came, and the sampler's period.
    last_sample: Option<(Duration, Duration)>,
    /// No sample came for [`gpu_stale_after`] of the period, or the sampler ended:
    /// the readings are not current, and nothing is judged or shown on them.
    stale: bool,
}

/// Samples missed in a row after which the GPUs' readings are stale.
const STALE_SAMPLES: u32 = 5;

/// The least time without a sample after which the GPUs' readings are stale, so that
/// a short sampling period on a loaded machine is not taken for a blocked sampler.
const STALE_FLOOR: Duration = Duration::from_secs(5);

/// How long the GPUs' readings stand without a new sample: five of the sampler's
/// periods, at least 5 s. A sampler blocked inside NVML (a driver hung on a failing
/// GPU) sends nothing; past this, GPUMemoryHigh resolves and the GPU series go until
/// samples come again.
pub(crate) fn gpu_stale_after(period: Duration) -> Duration {
    period.saturating_mul(STALE_SAMPLES).max(STALE_FLOOR)
}

/// Growth of a cumulative count since the previous reading: nothing on the first,
/// the whole count after a reset (the driver reloaded and started again from zero).
fn growth(previous: Option<u64>, now: Option<u64>) -> u64 {
    match (previous, now) {
        (Some(before), Some(now)) if now >= before => now - before,
        (Some(_), Some(now)) => now,
        _ => 0,
    }
}

impl GpuBooks {
    /// Whether a GPU was ever read.
    pub(crate) fn seen(&self) -> bool {
        !self.devices.is_empty()
    }

    /// Notes a sample taken `at` (monotonic) by a sampler reading every `period`;
    /// returns whether the readings were stale until now.
    pub(crate) fn sampled(&mut self, at: Duration, period: Duration) -> bool {
        self.last_sample = Some((at, period));
        std::mem::replace(&mut self.stale, false)
    }

    /// Whether the readings have just gone stale at `now` (monotonic): how long no
    /// sample came, the first time it is past [`gpu_stale_after`]; `None` otherwise.
    pub(crate) fn gone_stale(&mut self, now: Duration) -> Option<Duration> {
        let (last, period) = self.last_sample?;
        let quiet = now.saturating_sub(last);
        if self.stale || quiet < gpu_stale_after(period) {
            return None;
        }
        self.stale = true;
        Some(quiet)
    }

    /// The sampler ended: the readings are stale for good.
    pub(crate) fn ended(&mut self) {
        self.stale = true;
        self.last_sample = None;
    }

    /// Keeps a sample; returns the new ECC errors and the devices it found lost that
    /// were not before.
    pub(crate) fn sample(&mut self, sample: &GpuSample) -> (Vec<GpuErrors>, Vec<GpuDevice>) {
        let mut errors = Vec::new();
        let mut newly_lost = Vec::new();
        for device in &sample.devices {
            let position = self
                .devices
                .iter()
                .position(|b| b.latest.uuid == device.uuid);
            let booked = match position {
                Some(i) => &mut self.devices[i],
                None => {
                    self.devices.push(Booked {
                        latest: device.clone(),
                        ecc: (None, None),
                        xid: 0,
                        corrected: 0,
                        uncorrected: 0,
                        last_xid: None,
                    });
                    self.devices.last_mut().expect("just pushed")
                }
            };
            if device.lost {
                if !booked.latest.lost || position.is_none() {
                    newly_lost.push(device.clone());
                }
                booked.latest.lost = true;
                continue;
            }
            for (kind, previous, now, total) in [
                (
                    GpuErrorKind::Corrected,
                    booked.ecc.0,
                    device.ecc_corrected,
                    &mut booked.corrected,
                ),
                (
                    GpuErrorKind::Uncorrected,
                    booked.ecc.1,
                    device.ecc_uncorrected,
                    &mut booked.uncorrected,
                ),
            ] {
                let count = growth(previous, now);
                if count > 0 {
                    *total += count;
                    errors.push(GpuErrors {
                        gpu: Some(GpuId::new(device.index, Arc::clone(&device.uuid))),
                        kind,
                        count,
                        code: None,
                    });
                }
            }
            booked.ecc = (
                device.ecc_corrected.or(booked.ecc.0),
                device.ecc_uncorrected.or(booked.ecc.1),
            );
            booked.latest = device.clone();
        }
        (errors, newly_lost)
    }

    /// Books an Xid error (on its device, when it is known).
    pub(crate) fn xid(&mut self, xid: &GpuXid) -> GpuErrors {
        if let Some(gpu) = &xid.gpu {
            if let Some(booked) = self.devices.iter_mut().find(|b| b.latest.uuid == gpu.uuid) {
                booked.xid += 1;
                booked.last_xid = xid.code;
            }
        }
        GpuErrors {
            gpu: xid.gpu.clone(),
            kind: GpuErrorKind::Xid,
            count: 1,
            code: xid.code,
        }
    }

    /// The latest reading of each device still answering, for the instruments; none
    /// while the readings are stale.
    pub(crate) fn answering(&self) -> Vec<GpuDevice> {
        if self.stale {
            return Vec::new();
        }
        self.devices
            .iter()
            .filter(|b| !b.latest.lost)
            .map(|b| b.latest.clone())
            .collect()
    }

    /// Video memory of the loop's processes over every device still answering, in
    /// bytes; `None` before a GPU was seen and while the readings are stale.
    pub(crate) fn loop_memory_bytes(&self) -> Option<u64> {
        (!self.devices.is_empty() && !self.stale).then(|| {
            self.devices
                .iter()
                .filter(|b| !b.latest.lost)
                .map(|b| b.latest.loop_memory_bytes)
                .sum()
        })
    }

    /// The highest fraction of video memory in use on a device still answering that
    /// the loop's processes use; `None` when they use none, or the readings are
    /// stale.
    pub(crate) fn loop_memory_fraction(&self) -> Option<f64> {
        if self.stale {
            return None;
        }
        self.devices
            .iter()
            .filter(|b| !b.latest.lost && b.latest.loop_memory_bytes > 0)
            .filter_map(|b| b.latest.memory_fraction())
            .reduce(f64::max)
    }

    /// Every device seen, as the page and the JSON show them.
    pub(crate) fn view(&self) -> Vec<LiveGpu> {
        self.devices
            .iter()
            .map(|b| {
                let d = &b.latest;
                LiveGpu {
                    index: d.index,
                    uuid: d.uuid.to_string(),
                    lost: d.lost,
                    utilization: d.utilization,
                    memory_used_bytes: d.memory_used_bytes,
                    memory_total_bytes: d.memory_total_bytes,
                    power_watts: d.power_watts,
                    temperature_celsius: d.temperature_celsius,
                    loop_memory_bytes: d.loop_memory_bytes,
                    loop_processes: d.loop_processes,
                    xid_errors: b.xid,
                    last_xid: b.last_xid,
                    ecc_corrected: b.corrected,
                    ecc_uncorrected: b.uncorrected,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(uuid: &str, corrected: u64, uncorrected: u64) -> GpuDevice {
        let mut d = GpuDevice::reading(0, uuid, 1, 2);
        d.ecc_corrected = Some(corrected);
        d.ecc_uncorrected = Some(uncorrected);
        d
    }

    #[test]
    fn ecc_errors_count_from_the_first_sample_and_survive_a_reset() {
        let mut books = GpuBooks::default();
        let (errors, lost) = books.sample(&GpuSample {
            devices: vec![device("GPU-a", 5, 1)],
        });
        assert!(
            errors.is_empty() && lost.is_empty(),
            "the first sample is the baseline"
        );
        let (errors, _) = books.sample(&GpuSample {
            devices: vec![device("GPU-a", 7, 1)],
        });
        assert_eq!(errors.len(), 1);
        assert_eq!(
            (errors[0].kind, errors[0].count),
            (GpuErrorKind::Corrected, 2)
        );
        // The driver reloaded: its counts start again, and all they hold is new.
        let (errors, _) = books.sample(&GpuSample {
            devices: vec![device("GPU-a", 3, 4)],
        });
        let found: Vec<_> = errors.iter().map(|e| (e.kind, e.count)).collect();
        assert_eq!(
            found,
            [(GpuErrorKind::Corrected, 3), (GpuErrorKind::Uncorrected, 3)]
        );
        let view = books.view();
        assert_eq!((view[0].ecc_corrected, view[0].ecc_uncorrected), (5, 3));
    }

    #[test]
    fn a_device_is_reported_lost_once_and_leaves_the_instruments() {
        let mut books = GpuBooks::default();
        let mut lost = device("GPU-b", 0, 0);
        books.sample(&GpuSample {
            devices: vec![device("GPU-a", 0, 0), lost.clone()],
        });
        lost.lost = true;
        let sample = GpuSample {
            devices: vec![device("GPU-a", 0, 0), lost],
        };
        assert_eq!(books.sample(&sample).1.len(), 1);
        assert!(books.sample(&sample).1.is_empty(), "once");
        let answering = books.answering();
        assert_eq!(answering.len(), 1);
        assert_eq!(&*answering[0].uuid, "GPU-a");
        assert!(books.view()[1].lost);
    }

    #[test]
    fn an_xid_error_is_booked_on_its_device() {
        let mut books = GpuBooks::default();
        books.sample(&GpuSample {
            devices: vec![device("GPU-a", 0, 0)],
        });
        let errors = books.xid(&GpuXid {
            gpu: Some(GpuId::new(0, "GPU-a")),
            code: Some(79),
        });
        assert_eq!((errors.kind, errors.code), (GpuErrorKind::Xid, Some(79)));
        assert_eq!(
            (books.view()[0].xid_errors, books.view()[0].last_xid),
            (1, Some(79))
        );
        // One of a device NVML no longer names is counted, on no device.
        let unknown = books.xid(&GpuXid {
            gpu: None,
            code: Some(79),
        });
        assert_eq!((unknown.gpu, unknown.count), (None, 1));
        assert_eq!(books.view()[0].xid_errors, 1);
    }
}
