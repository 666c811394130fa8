//! The GPU sampler: NVML loaded at run time through `nvml-wrapper`, from the library
//! configured (`[gpu] library`, `LOOPWATCH_GPU_LIBRARY`) or the driver's
//! `libnvidia-ml.so.1`.
//!
//! Every call degrades alone: a device that does not support a reading leaves it
//! `None`; a library that lacks a function leaves what that function reads `None`
//! and says so once in the log; a device that stops answering (NVML's "GPU is lost")
//! is reported `lost` while the others are still read.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, EventSet, Nvml};

use super::{GpuDevice, GpuId, GpuSample, GpuXid, DEFAULT_GPU_LIBRARY};

/// Why the GPU sampler could not start: the library cannot be loaded, lacks what
/// every reading needs, or finds no driver. loopwatch logs it once and runs on.
#[derive(Debug, thiserror::Error)]
#[error("GPU sampling is off: {reason} (library {library})")]
pub struct GpuUnavailable {
    /// The library it tried.
    pub library: String,
    /// Why it could not be used.
    pub reason: String,
}

/// What a device is known by, from when the sampler opened NVML.
#[derive(Debug)]
struct Known {
    index: u32,
    uuid: Arc<str>,
    /// NVML's handle of the device, as [`handle_of`] writes it: the one thing an
    /// Xid event of a GPU that fell off the bus still names it by.
    handle: Option<String>,
}

/// A device's NVML handle as text. The crate forbids `unsafe`, and nvml-wrapper
/// gives the raw handle only through an `unsafe` getter; its derived `Debug` writes
/// the handle's address (`Device { device: 0x…, nvml: NVML }`), which is the same
/// for every `Device` of one physical device while NVML runs.
fn handle_of(device: &Device<'_>) -> String {
    format!("{device:?}")
}

/// Samples every GPU NVML finds: utilisation, memory, power, temperature, ECC counts,
/// and the video memory of the loop's own processes.
///
/// Open one with [`GpuSampler::open`], then call [`sample`](Self::sample) at the
/// sampling interval; [`xid_watch`](Self::xid_watch) waits for Xid errors in between.
/// Devices are the ones found when it opened: one that disappears later is reported
/// `lost`, one that appears later is not sampled.
pub struct GpuSampler {
    nvml: Nvml,
    library: String,
    devices: Vec<Known>,
    /// The functions found missing from the library, each logged once.
    missing: RefCell<BTreeSet<String>>,
    /// The readings that failed with another error, each logged once.
    failed: RefCell<BTreeSet<&'static str>>,
}

impl std::fmt::Debug for GpuSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuSampler")
            .field("library", &self.library)
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

/// The words of a failure to load or start NVML.
fn unavailable(library: &str, error: &NvmlError) -> GpuUnavailable {
    let reason = match error {
        NvmlError::LibloadingError(e) => {
            format!("the NVIDIA management library cannot be loaded: {e}")
        }
        NvmlError::FailedToLoadSymbol(e) => {
            format!("the NVIDIA management library lacks a function every reading needs: {e}")
        }
        NvmlError::DriverNotLoaded => "no NVIDIA driver is loaded".to_string(),
        NvmlError::NoPermission => "NVML has no permission to talk to the driver".to_string(),
        other => format!("NVML did not start: {other}"),
    };
    GpuUnavailable {
        library: library.to_string(),
        reason,
    }
}

impl GpuSampler {
    /// Loads NVML from `library` (default [`DEFAULT_GPU_LIBRARY`], found on the
    /// dynamic linker's search path), starts it and lists its devices.
    ///
    /// ```
    /// // On a machine without an NVIDIA driver:
    /// let missing = std::path::Path::new("/nonexistent/libnvidia-ml.so.1");
    /// let err = loopwatch::sample::GpuSampler::open(Some(missing)).unwrap_err();
    /// assert!(err.to_string().contains("cannot be loaded"), "{err}");
    /// ```
    pub fn open(library: Option<&Path>) -> Result<Self, GpuUnavailable> {
        let path: &OsStr = library.map_or(OsStr::new(DEFAULT_GPU_LIBRARY), Path::as_os_str);
        let shown = path.to_string_lossy().into_owned();
        let nvml = Nvml::builder()
            .lib_path(path)
            .init()
            .map_err(|e| unavailable(&shown, &e))?;
        let count = nvml.device_count().map_err(|e| unavailable(&shown, &e))?;
        let mut devices = Vec::new();
        for index in 0..count {
            let device = nvml.device_by_index(index);
            let handle = device.as_ref().ok().map(handle_of);
            let uuid = device.and_then(|device| device.uuid()).unwrap_or_else(|e| {
                tracing::warn!(gpu = index, error = %e, "a GPU's UUID cannot be read; it is labelled by its index");
                format!("GPU-index-{index}")
            });
            devices.push(Known {
                index,
                uuid: uuid.into(),
                handle,
            });
        }
        Ok(GpuSampler {
            nvml,
            library: shown,
            devices,
            missing: RefCell::default(),
            failed: RefCell::default(),
        })
    }

    /// The devices found when NVML was opened.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// The library NVML was loaded from.
    pub fn library(&self) -> &str {
        &self.library
    }

    /// Which of the devices found at start-up `device` is: by its handle first (a
    /// GPU that just fell off the bus answers no question), then by its UUID or
    /// index; `None` when it is none of them.
    fn known_as(&self, device: &Device<'_>) -> Option<GpuId> {
        let handle = handle_of(device);
        let known = self
            .devices
            .iter()
            .find(|k| k.handle.as_deref() == Some(handle.as_str()))
            .or_else(|| {
                let uuid = device.uuid().ok()?;
                self.devices.iter().find(|k| *k.uuid == *uuid)
            })
            .or_else(|| {
                let index = device.index().ok()?;
                self.devices.iter().find(|k| k.index == index)
            })?;
        Some(GpuId::new(known.index, Arc::clone(&known.uuid)))
    }

    /// Keeps a reading, or notes why there is none: a function the library lacks
    /// (logged once per function), a device that is lost, a reading the device does
    /// not support (silently `None`), another failure (logged once per reading).
    fn keep<T>(
        &self,
        what: &'static str,
        result: Result<T, NvmlError>,
        lost: &mut bool,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(NvmlError::GpuLost) => {
                *lost = true;
                None
            }
            Err(NvmlError::NotSupported) => None,
            Err(NvmlError::FailedToLoadSymbol(symbol)) => {
                if self.missing.borrow_mut().insert(symbol.clone()) {
                    tracing::warn!(
                        library = %self.library,
                        reading = what,
                        error = %symbol,
                        "the NVIDIA management library lacks a function: this GPU reading is not sampled, the others are"
                    );
                }
                None
            }
            Err(e) => {
                if self.failed.borrow_mut().insert(what) {
                    tracing::warn!(reading = what, error = %e, "a GPU reading failed; it is left out until it succeeds");
                }
                None
            }
        }
    }

    /// Reads every device, and sums the video memory of the processes whose pids
    /// are in `loop_pids` (the loop's process tree) per device. Processes outside it
    /// are never counted.
    pub fn sample(&self, loop_pids: &[u32]) -> GpuSample {
        let mut sample = GpuSample {
            devices: Vec::with_capacity(self.devices.len()),
        };
        for known in &self.devices {
            let mut device = GpuDevice::new(known.index, Arc::clone(&known.uuid));
            match self.nvml.device_by_index(known.index) {
                Ok(handle) => self.read_device(&handle, &mut device, loop_pids),
                Err(NvmlError::GpuLost | NvmlError::NotFound | NvmlError::InvalidArg) => {
                    device.lost = true;
                }
                Err(e) => {
                    let mut lost = false;
                    self.keep::<()>("handle", Err(e), &mut lost);
                    device.lost = lost;
                }
            }
            if device.lost {
                device = GpuDevice {
                    lost: true,
                    ..GpuDevice::new(known.index, Arc::clone(&known.uuid))
                };
            }
            sample.devices.push(device);
        }
        sample
    }

    fn read_device(&self, handle: &Device<'_>, device: &mut GpuDevice, loop_pids: &[u32]) {
        let mut lost = false;
        if let Some(rates) = self.keep("utilization", handle.utilization_rates(), &mut lost) {
            device.utilization = Some(f64::from(rates.gpu.min(100)) / 100.0);
        }
        if let Some(memory) = self.keep("memory", handle.memory_info(), &mut lost) {
            device.memory_used_bytes = Some(memory.used);
            device.memory_total_bytes = Some(memory.total);
        }
        device.power_watts = self
            .keep("power", handle.power_usage(), &mut lost)
            .map(|milliwatts| f64::from(milliwatts) / 1000.0);
        device.temperature_celsius = self
            .keep(
                "temperature",
                handle.temperature(TemperatureSensor::Gpu),
                &mut lost,
            )
            .map(f64::from);
        device.ecc_corrected = self.keep(
            "ecc",
            handle.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile),
            &mut lost,
        );
        device.ecc_uncorrected = self.keep(
            "ecc",
            handle.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile),
            &mut lost,
        );
        // A process with both a compute and a graphics context is in both lists,
        // with the same memory: counted once, at the larger.
        let mut by_pid: HashMap<u32, u64> = HashMap::new();
        let lists = [
            self.keep("processes", handle.running_compute_processes(), &mut lost),
            self.keep("processes", handle.running_graphics_processes(), &mut lost),
        ];
        let listed = lists.iter().any(Option::is_some);
        for list in lists.into_iter().flatten() {
            for process in list {
                if !loop_pids.contains(&process.pid) {
                    continue;
                }
                let used = match process.used_gpu_memory {
                    UsedGpuMemory::Used(bytes) => bytes,
                    UsedGpuMemory::Unavailable => 0,
                };
                let entry = by_pid.entry(process.pid).or_default();
                *entry = (*entry).max(used);
            }
        }
        device.loop_processes = u32::try_from(by_pid.len()).unwrap_or(u32::MAX);
        // Neither list: the loop's share is unknown, not 0.
        device.loop_memory_bytes =
            listed.then(|| by_pid.values().fold(0u64, |sum, v| sum.saturating_add(*v)));
        device.lost = lost;
    }

    /// Registers every device that reports critical Xid errors in one event set.
    /// Devices that cannot be (lost, no Xid events, the registration fails) are left
    /// out, each said in the log; so is a library without event sets. With none
    /// registered, [`XidWatch::wait`] only returns.
    pub fn xid_watch(&self) -> XidWatch<'_> {
        let candidates: Vec<usize> = (0..self.devices.len())
            .filter(|&at| self.reports_xids(at))
            .collect();
        let (set, watched) = self.register(&candidates);
        if !watched.is_empty() {
            tracing::info!(
                library = %self.library,
                gpus = watched.len(),
                "watching critical Xid errors"
            );
        }
        XidWatch {
            set,
            watched,
            sampler: self,
            failure_logged: false,
        }
    }

    /// Whether the device at `at` of [`Self::devices`] answers and can report critical
    /// Xid errors. A library or device that cannot say is given the benefit of the
    /// doubt: its registration decides.
    fn reports_xids(&self, at: usize) -> bool {
        let known = &self.devices[at];
        let Ok(device) = self.nvml.device_by_index(known.index) else {
            return false; // lost: the sampler reports it
        };
        match device.supported_event_types() {
            Ok(types) if !types.contains(EventTypes::CRITICAL_XID_ERROR) => {
                tracing::info!(
                    gpu = known.index,
                    uuid = &*known.uuid,
                    "this GPU does not report critical Xid errors; they are not watched"
                );
                false
            }
            Err(NvmlError::GpuLost) => false,
            _ => true,
        }
    }

    /// A new event set, or `None` (said in the log) when NVML cannot make one.
    fn new_event_set(&self) -> Option<EventSet<'_>> {
        match self.nvml.create_event_set() {
            Ok(set) => Some(set),
            Err(e) => {
                tracing::warn!(library = %self.library, error = %e, "Xid errors are not watched: NVML cannot create an event set");
                None
            }
        }
    }

    /// Registers the device at `at` in `set` for critical Xid errors. On a failure
    /// nvml-wrapper has freed the set, and every registration in it is gone:
    /// `Err(None)`; `Err(Some(set))` when the device could not even be reached, the
    /// set untouched.
    fn register_one<'s>(
        &'s self,
        at: usize,
        set: EventSet<'s>,
    ) -> Result<EventSet<'s>, Option<EventSet<'s>>> {
        let known = &self.devices[at];
        let Ok(device) = self.nvml.device_by_index(known.index) else {
            return Err(Some(set));
        };
        device
            .register_events(EventTypes::CRITICAL_XID_ERROR, set)
            .map_err(|e| {
                tracing::warn!(gpu = known.index, uuid = &*known.uuid, error = %e.error, "Xid errors of this GPU are not watched: NVML did not register it");
                None
            })
    }

    /// One event set holding every device of `candidates` (positions in
    /// [`Self::devices`]) that can be registered, and those devices; `(None, [])`
    /// when none can be.
    fn register(&self, candidates: &[usize]) -> (Option<EventSet<'_>>, Vec<usize>) {
        let mut watched = Vec::with_capacity(candidates.len());
        let mut set = self.new_event_set();
        for &at in candidates {
            let Some(current) = set.take() else { break };
            set = match self.register_one(at, current) {
                Ok(kept) => {
                    watched.push(at);
                    Some(kept)
                }
                Err(Some(untouched)) => Some(untouched),
                // The set was freed, and the devices registered before with it.
                Err(None) => self.register_again(&mut watched),
            };
        }
        if set.is_none() || watched.is_empty() {
            return (None, Vec::new());
        }
        (set, watched)
    }

    /// A new event set with the devices of `watched` registered again, after a
    /// failed registration freed the one they were in. A device whose registration
    /// fails now is taken out of `watched` and the set made again without it, until
    /// every registration in it held. `None` when NVML cannot make a set.
    fn register_again(&self, watched: &mut Vec<usize>) -> Option<EventSet<'_>> {
        loop {
            let previous = std::mem::take(watched);
            let mut set = self.new_event_set();
            let mut freed_by = None;
            for &at in &previous {
                let Some(current) = set.take() else { break };
                set = match self.register_one(at, current) {
                    Ok(kept) => {
                        watched.push(at);
                        Some(kept)
                    }
                    Err(Some(untouched)) => Some(untouched),
                    Err(None) => {
                        freed_by = Some(at);
                        None
                    }
                };
            }
            match freed_by {
                Some(failed) => {
                    *watched = previous.into_iter().filter(|&at| at != failed).collect()
                }
                None => return set,
            }
        }
    }
}

/// Waits for critical Xid errors on the devices of a [`GpuSampler`].
pub struct XidWatch<'a> {
    set: Option<EventSet<'a>>,
    /// The devices registered in `set`: positions in the sampler's devices.
    watched: Vec<usize>,
    sampler: &'a GpuSampler,
    /// A failure of the wait NVML may recover from was logged (once per watch).
    failure_logged: bool,
}

impl std::fmt::Debug for XidWatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XidWatch")
            .field("watching", &self.set.is_some())
            .field("gpus", &self.watched.len())
            .finish_non_exhaustive()
    }
}

impl XidWatch<'_> {
    /// Whether any device's Xid errors are watched.
    pub fn is_watching(&self) -> bool {
        self.set.is_some()
    }

    /// Waits up to `timeout` for the next Xid error. `None` when none came (or
    /// nothing is watched: then it returns at once, and the caller waits its own way).
    ///
    /// A wait that fails because a watched GPU fell off the bus (NVML's "GPU is
    /// lost"), or for a reason NVML does not know, is taken as passing: said once in
    /// the log, the event set is made again without the GPUs that stopped
    /// answering, and the healthy ones are still watched; this call then waits out
    /// `timeout` (a thread unpark ends it early). Any other failure ends the watch.
    pub fn wait(&mut self, timeout: Duration) -> Option<GpuXid> {
        let set = self.set.as_ref()?;
        let millis = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        match set.wait(millis) {
            Err(NvmlError::Timeout) => None,
            Err(e @ (NvmlError::GpuLost | NvmlError::Unknown)) => {
                if !self.failure_logged {
                    self.failure_logged = true;
                    tracing::warn!(
                        library = %self.sampler.library,
                        error = %e,
                        "waiting for Xid errors failed; the GPUs that stopped answering are no longer watched, the others still are"
                    );
                }
                self.watch_again();
                std::thread::park_timeout(timeout);
                None
            }
            Err(e) => {
                self.set = None;
                self.watched.clear();
                tracing::warn!(library = %self.sampler.library, error = %e, "waiting for Xid errors failed; they are no longer watched");
                None
            }
            Ok(event) => {
                let code = match event.event_data {
                    Some(XidError::Value(code)) => Some(code),
                    _ => None,
                };
                Some(GpuXid {
                    gpu: self.sampler.known_as(&event.device),
                    code,
                })
            }
        }
    }

    /// Makes the event set again with the watched devices that still answer.
    fn watch_again(&mut self) {
        let sampler = self.sampler;
        let before = self.watched.len();
        let candidates: Vec<usize> = self
            .watched
            .iter()
            .copied()
            .filter(|&at| sampler.reports_xids(at))
            .collect();
        self.set = None; // freed before the new one is made
        let (set, watched) = sampler.register(&candidates);
        self.set = set;
        self.watched = watched;
        if self.watched.len() != before {
            tracing::info!(
                library = %sampler.library,
                gpus = self.watched.len(),
                "watching critical Xid errors again, without the GPUs that stopped answering"
            );
        }
    }
}
