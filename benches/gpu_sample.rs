//! Cost of one GPU sample: every NVML call the GPU sampler makes for two devices
//! (utilisation, memory, power, temperature, both ECC counts, the compute and
//! graphics process lists), against the stand-in NVML (no machine here has a GPU),
//! and with the walk of the loop's process tree the sampler's thread does before
//! each sample.
//!
//! What it measures is loopwatch's side: nvml-wrapper's calls through the loaded
//! library and the sums, with a library that answers at once; the real driver's own
//! time per call comes on top. Results are in docs/performance.md; reproduce with
//! `cargo bench --features gpu --bench gpu_sample`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use loopwatch::sample::{process_tree, GpuSampler};

#[path = "../tests/support/nvml_standin.rs"]
mod nvml_standin;

fn gpu_sample(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let library = nvml_standin::build_standin(dir.path(), nvml_standin::Standin::Whole);
    let me = std::process::id();
    let mut script = String::new();
    for (n, uuid) in [
        "GPU-55555555-aaaa-4000-8000-000000000001",
        "GPU-55555555-bbbb-4000-8000-000000000002",
    ]
    .iter()
    .enumerate()
    {
        script.push_str(&format!(
            "device {uuid} total=85899345920 used=42949672960 util=70 power_mw=300000 temp=70 ecc_corrected=0 ecc_uncorrected=0\n\
             process {n} compute {me} 1073741824\n\
             process {n} compute 4000001 2147483648\n\
             process {n} graphics 4000002 536870912\n"
        ));
    }
    nvml_standin::write_script(&library, &script);
    let sampler = GpuSampler::open(Some(&library)).expect("the stand-in loads");
    let pids = process_tree(me);
    assert_eq!(sampler.sample(&pids).devices.len(), 2);
    c.bench_function("gpu_sample_two_devices", |b| {
        b.iter(|| black_box(sampler.sample(black_box(&pids))))
    });
    c.bench_function("gpu_tick_two_devices_with_process_tree", |b| {
        b.iter(|| black_box(sampler.sample(&process_tree(me))))
    });
}

criterion_group!(benches, gpu_sample);
criterion_main!(benches);
