//! The GPUs as the samples and the Xid events left them: the latest reading of each
//! device, its errors over the run (the Xid errors reported, and the ECC errors the
//! driver's counts grew by since the first sample), and the devices lost. Part of the
//! [`RunState`](super::RunState).
//!
//! Of the errors, GPUErrors counts (`alerting`) the fatal Xid errors (`[gpu]
//! fatal_xids`) and the uncorrected ECC errors, on the GPUs the loop's processes use
//! when they use any (else on every GPU); an ECC Xid and the uncorrected count's rise
//! for the same fault, seen within one sample of each other, count once.

use std::sync::Arc;
use std::time::Duration;

use crate::export::{GpuReadings, LiveGpu};
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
    /// How many of them GPUErrors counts.
    pub(crate) alerting: u64,
    /// The Xid code, for an Xid error.
    pub(crate) code: Option<u64>,
    /// Whether the Xid code is in the fatal set (`[gpu] fatal_xids`).
    pub(crate) fatal: bool,
}

/// The Xid codes of ECC faults, which the uncorrected ECC count also shows: 48
/// (double-bit error), 63 and 64 (page retirement or row remapping recorded,
/// failed), 94 and 95 (contained, uncontained error).
const ECC_XIDS: [u64; 5] = [48, 63, 64, 94, 95];

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
    /// ECC Xid errors GPUErrors counted since the previous sample, which an
    /// uncorrected count's rise at the next sample does not count again.
    ecc_xids: u64,
    /// Uncorrected ECC errors GPUErrors counted at the latest sample that no ECC Xid
    /// matched yet: one coming before the next sample is not counted again.
    ecc_unmatched: u64,
}

impl Booked {
    fn new(latest: GpuDevice) -> Self {
        Booked {
            latest,
            ecc: (None, None),
            xid: 0,
            corrected: 0,
            uncorrected: 0,
            last_xid: None,
            ecc_xids: 0,
            ecc_unmatched: 0,
        }
    }
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
                    self.devices.push(Booked::new(device.clone()));
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
                    *total = total.saturating_add(count);
                    errors.push(GpuErrors {
                        gpu: Some(GpuId::new(device.index, Arc::clone(&device.uuid))),
                        kind,
                        count,
                        alerting: 0,
                        code: None,
                        fatal: false,
                    });
                }
            }
            booked.ecc = (
                device.ecc_corrected.or(booked.ecc.0),
                device.ecc_uncorrected.or(booked.ecc.1),
            );
            booked.latest = device.clone();
        }
        // What GPUErrors counts of the uncorrected errors, in the scope the readings
        // just taken give: less the ECC Xid errors it counted since the last sample.
        let mut unmatched = vec![0; self.devices.len()];
        for e in errors
            .iter_mut()
            .filter(|e| e.kind == GpuErrorKind::Uncorrected)
        {
            let uuid = e.gpu.as_ref().map(|g| Arc::clone(&g.uuid));
            let in_scope = self.in_scope(uuid.as_deref());
            let Some(at) = self.position(uuid.as_deref()) else {
                continue;
            };
            let rest = e.count - e.count.min(self.devices[at].ecc_xids);
            if in_scope {
                e.alerting = rest;
                unmatched[at] = rest;
            }
        }
        for (booked, unmatched) in self.devices.iter_mut().zip(unmatched) {
            booked.ecc_xids = 0;
            booked.ecc_unmatched = unmatched;
        }
        (errors, newly_lost)
    }

    /// Where the device of `uuid` is in the books.
    fn position(&self, uuid: Option<&str>) -> Option<usize> {
        let uuid = uuid?;
        self.devices.iter().position(|b| &*b.latest.uuid == uuid)
    }

    /// Whether GPUErrors counts the errors of the device of `uuid` (`None`: a device
    /// NVML no longer names): a GPU the loop's processes use, by its latest reading
    /// (a lost one keeps its last), or any GPU while they use none.
    fn in_scope(&self, uuid: Option<&str>) -> bool {
        let uses = |b: &Booked| b.latest.loop_processes > 0;
        !self.devices.iter().any(uses)
            || self
                .position(uuid)
                .is_some_and(|at| uses(&self.devices[at]))
    }

    /// Books an Xid error (on its device, when it is known); `fatal` when its code is
    /// in the fatal set.
    pub(crate) fn xid(&mut self, xid: &GpuXid, fatal: bool) -> GpuErrors {
        let uuid = xid.gpu.as_ref().map(|g| Arc::clone(&g.uuid));
        let mut alerting = u64::from(fatal && self.in_scope(uuid.as_deref()));
        if let Some(at) = self.position(uuid.as_deref()) {
            let booked = &mut self.devices[at];
            booked.xid = booked.xid.saturating_add(1);
            booked.last_xid = xid.code;
            if alerting > 0 && xid.code.is_some_and(|code| ECC_XIDS.contains(&code)) {
                // The fault the latest sample's uncorrected count already showed.
                if booked.ecc_unmatched > 0 {
                    booked.ecc_unmatched -= 1;
                    alerting = 0;
                } else {
                    booked.ecc_xids = booked.ecc_xids.saturating_add(1);
                }
            }
        }
        GpuErrors {
            gpu: xid.gpu.clone(),
            kind: GpuErrorKind::Xid,
            count: 1,
            alerting,
            code: xid.code,
            fatal,
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

    /// Video memory of the loop's processes over every device still answering whose
    /// processes NVML could list, in bytes; `None` when there is no such device (none
    /// seen yet, none listed) and while the readings are stale.
    pub(crate) fn loop_memory_bytes(&self) -> Option<u64> {
        if self.stale {
            return None;
        }
        self.devices
            .iter()
            .filter(|b| !b.latest.lost)
            .filter_map(|b| b.latest.loop_memory_bytes)
            .reduce(u64::saturating_add)
    }

    /// The highest fraction of video memory in use on a device still answering that
    /// the loop uses (a process of its tree on it); `None` when it uses none, or the
    /// readings are stale.
    pub(crate) fn loop_memory_fraction(&self) -> Option<f64> {
        if self.stale {
            return None;
        }
        self.devices
            .iter()
            .filter(|b| !b.latest.lost && b.latest.loop_processes > 0)
            .filter_map(|b| b.latest.memory_fraction())
            .reduce(f64::max)
    }

    /// Whether the readings are current: stale, or stale for good once the sampler
    /// ended (which forgets the last sample's time).
    fn readings(&self) -> GpuReadings {
        match (self.stale, self.last_sample) {
            (false, _) => GpuReadings::Current,
            (true, Some(_)) => GpuReadings::Stale,
            (true, None) => GpuReadings::Ended,
        }
    }

    /// Every device seen, as the page and the JSON show them.
    pub(crate) fn view(&self) -> Vec<LiveGpu> {
        let readings = self.readings();
        self.devices
            .iter()
            .map(|b| {
                let d = &b.latest;
                LiveGpu {
                    index: d.index,
                    uuid: d.uuid.to_string(),
                    lost: d.lost,
                    readings,
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
        let errors = books.xid(
            &GpuXid {
                gpu: Some(GpuId::new(0, "GPU-a")),
                code: Some(79),
            },
            true,
        );
        assert_eq!((errors.kind, errors.code), (GpuErrorKind::Xid, Some(79)));
        assert_eq!(
            (books.view()[0].xid_errors, books.view()[0].last_xid),
            (1, Some(79))
        );
        // One of a device NVML no longer names is counted, on no device.
        let unknown = books.xid(
            &GpuXid {
                gpu: None,
                code: Some(79),
            },
            true,
        );
        assert_eq!((unknown.gpu, unknown.count), (None, 1));
        assert_eq!(books.view()[0].xid_errors, 1);
    }

    fn xid(books: &mut GpuBooks, uuid: Option<&str>, code: u64) -> GpuErrors {
        let gpu = uuid.map(|u| GpuId::new(0, u));
        let fatal = crate::DEFAULT_FATAL_XIDS.contains(&code);
        books.xid(
            &GpuXid {
                gpu,
                code: Some(code),
            },
            fatal,
        )
    }

    /// A device whose uncorrected ECC count is `uncorrected`, with `processes` of the
    /// loop's processes on it.
    fn used(uuid: &str, uncorrected: u64, processes: u32) -> GpuDevice {
        let mut d = device(uuid, 0, uncorrected);
        d.loop_processes = processes;
        d
    }

    #[test]
    fn only_fatal_xids_alert_and_only_on_the_gpus_the_loop_uses_when_it_uses_any() {
        let mut books = GpuBooks::default();
        // No reading yet, and then the loop on no GPU: every GPU is in scope.
        assert_eq!(xid(&mut books, Some("GPU-b"), 79).alerting, 1);
        books.sample(&GpuSample {
            devices: vec![used("GPU-a", 0, 0), used("GPU-b", 0, 0)],
        });
        assert_eq!(xid(&mut books, Some("GPU-b"), 79).alerting, 1);
        let application = xid(&mut books, Some("GPU-b"), 43);
        assert_eq!(
            (application.count, application.alerting, application.fatal),
            (1, 0, false)
        );
        // The loop's processes on GPU-a: GPU-b's and an unknown GPU's errors count,
        // but do not alert.
        books.sample(&GpuSample {
            devices: vec![used("GPU-a", 0, 2), used("GPU-b", 0, 0)],
        });
        assert_eq!(xid(&mut books, Some("GPU-b"), 79).alerting, 0);
        assert_eq!(xid(&mut books, None, 79).alerting, 0);
        assert_eq!(xid(&mut books, Some("GPU-a"), 79).alerting, 1);
        let (errors, _) = books.sample(&GpuSample {
            devices: vec![used("GPU-a", 0, 2), used("GPU-b", 3, 0)],
        });
        assert_eq!(
            (errors[0].count, errors[0].alerting),
            (3, 0),
            "GPU-b's ECC errors"
        );
        assert_eq!(books.view()[1].xid_errors, 3, "every Xid is counted");
    }

    #[test]
    fn an_ecc_xid_and_the_uncorrected_counts_rise_for_the_same_fault_alert_once() {
        let mut books = GpuBooks::default();
        books.sample(&GpuSample {
            devices: vec![used("GPU-a", 0, 1)],
        });
        // Xid 48, then the count's rise at the next sample: one fault.
        assert_eq!(xid(&mut books, Some("GPU-a"), 48).alerting, 1);
        let (errors, _) = books.sample(&GpuSample {
            devices: vec![used("GPU-a", 1, 1)],
        });
        assert_eq!((errors[0].count, errors[0].alerting), (1, 0));
        // The count's rise first, the Xid after it (before the next sample): one.
        let (errors, _) = books.sample(&GpuSample {
            devices: vec![used("GPU-a", 3, 1)],
        });
        assert_eq!((errors[0].count, errors[0].alerting), (2, 2));
        assert_eq!(xid(&mut books, Some("GPU-a"), 94).alerting, 0);
        // Xid 79 is no ECC fault: it counts whatever the count did.
        assert_eq!(xid(&mut books, Some("GPU-a"), 79).alerting, 1);
        assert_eq!(
            xid(&mut books, Some("GPU-a"), 95).alerting,
            0,
            "the second of the two"
        );
        // A sample later, an ECC Xid is a new fault.
        books.sample(&GpuSample {
            devices: vec![used("GPU-a", 3, 1)],
        });
        assert_eq!(xid(&mut books, Some("GPU-a"), 48).alerting, 1);
        assert_eq!(books.view()[0].ecc_uncorrected, 3);
    }

    #[test]
    fn the_loop_uses_a_gpu_by_its_processes_and_unlisted_memory_is_absent() {
        let mut books = GpuBooks::default();
        // GPU-a: NVML listed no process's memory (a process whose memory it cannot
        // give counts 0), but the loop's process is on it, and it is full.
        let mut a = GpuDevice::reading(0, "GPU-a", 97, 100);
        a.loop_processes = 1;
        a.loop_memory_bytes = Some(0);
        // GPU-b: NVML could list neither of its process lists.
        let b = GpuDevice::reading(1, "GPU-b", 99, 100);
        books.sample(&GpuSample {
            devices: vec![a.clone(), b.clone()],
        });
        assert_eq!(books.loop_memory_fraction(), Some(0.97));
        assert_eq!(books.loop_memory_bytes(), Some(0));
        assert_eq!(books.view()[1].loop_memory_bytes, None);
        books.sample(&GpuSample { devices: vec![b] });
        let mut unlisted = GpuBooks::default();
        unlisted.sample(&GpuSample {
            devices: vec![GpuDevice::reading(0, "GPU-b", 99, 100)],
        });
        assert_eq!(unlisted.loop_memory_bytes(), None, "unknown, not 0");
        assert_eq!(unlisted.loop_memory_fraction(), None, "not the loop's");
    }

    #[test]
    fn counts_near_the_top_of_u64_saturate_and_never_panic() {
        let mut books = GpuBooks::default();
        let mut huge = |uncorrected: u64, memory: u64| {
            let mut d = device("GPU-a", 0, uncorrected);
            d.loop_memory_bytes = Some(memory);
            let mut e = device("GPU-b", 0, 0);
            e.loop_memory_bytes = Some(memory);
            books.sample(&GpuSample {
                devices: vec![d, e],
            })
        };
        huge(0, u64::MAX);
        huge(u64::MAX, u64::MAX);
        // The driver reloaded: all it holds is new, on top of the maximum.
        let (errors, _) = huge(5, u64::MAX);
        assert_eq!(errors[0].count, 5);
        assert_eq!(books.view()[0].ecc_uncorrected, u64::MAX);
        assert_eq!(books.loop_memory_bytes(), Some(u64::MAX));
    }
}
