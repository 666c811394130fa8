//! `--sandbox docker`: each generation's back-tests run in labelled, resource-limited
//! containers started through loopwatch's sandbox launcher. The worker is this same
//! program, mounted read-only into the local busybox image with the host's C
//! libraries; the job travels in the `EVOLVE_JOB` environment variable (its presence
//! is what makes the program a worker), the results come back on standard output as
//! JSON.

use std::path::PathBuf;
use std::time::Duration;

use loopwatch::sandbox::{Sandbox, SandboxSpec};
use serde::{Deserialize, Serialize};

use crate::prices::Rng;
use crate::strategy::{self, Failure, Rule, Score};

/// Image the containers run (built by `scripts/sandbox-image`).
pub const DEFAULT_IMAGE: &str = "loopwatch-sandbox:1";
const JOB_VARIABLE: &str = "EVOLVE_JOB";

/// One container's share of a generation.
#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    pub prices: Vec<f64>,
    pub resample_seed: u64,
    pub resamples: usize,
    pub min_trades: usize,
    pub rules: Vec<Rule>,
}

/// The job, when this process runs as a worker inside a sandbox container.
pub fn worker_job() -> Option<String> {
    std::env::var(JOB_VARIABLE).ok()
}

/// Runs inside the container: reads the job, back-tests, prints the outcomes.
pub fn work(job: &str) -> Result<(), String> {
    let job: Job = serde_json::from_str(job).map_err(|e| format!("bad job: {e}"))?;
    let mut rng = Rng::new(job.resample_seed);
    let resamples = strategy::resample(&job.prices, job.resamples, &mut rng);
    let outcomes: Vec<Result<Score, Failure>> = job
        .rules
        .iter()
        .map(|rule| strategy::backtest(rule, &job.prices, &resamples, job.min_trades))
        .collect();
    println!(
        "{}",
        serde_json::to_string(&outcomes).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// Runs a generation's back-tests in `workers` concurrent containers.
pub struct SandboxedBacktests {
    pub sandbox: Sandbox,
    pub image: String,
    pub workers: usize,
}

impl SandboxedBacktests {
    pub fn run(
        &self,
        rules: &[Rule],
        prices: &[f64],
        resample_seed: u64,
        resamples: usize,
        min_trades: usize,
    ) -> Vec<Result<Score, Failure>> {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("evolve"));
        let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
        let name = exe
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let chunk = rules.len().div_ceil(self.workers.max(1));
        std::thread::scope(|scope| {
            let handles: Vec<_> = rules
                .chunks(chunk.max(1))
                .map(|chunk| {
                    let job = Job {
                        prices: prices.to_vec(),
                        resample_seed,
                        resamples,
                        min_trades,
                        rules: chunk.to_vec(),
                    };
                    let job = serde_json::to_string(&job).unwrap_or_default();
                    let spec = SandboxSpec::new(&self.image, [format!("/loopwatch/{name}")])
                        .with_env(JOB_VARIABLE, job)
                        .with_pids(16)
                        .with_timeout(Duration::from_secs(120))
                        .bind_read_only(&dir, "/loopwatch")
                        .bind_read_only("/usr/lib", "/usr/lib")
                        .bind_read_only("/usr/lib64", "/usr/lib64");
                    let sandbox = &self.sandbox;
                    let size = chunk.len();
                    scope.spawn(move || {
                        let failed = || vec![Err(Failure::SandboxUnavailable); size];
                        match sandbox.run(&spec) {
                            Ok(output) if output.exit_code == 0 => {
                                serde_json::from_str(output.stdout.trim()).unwrap_or_else(|e| {
                                    eprintln!(
                                        "sandbox worker answered nonsense ({e}): {}",
                                        output.stdout
                                    );
                                    failed()
                                })
                            }
                            Ok(output) => {
                                eprintln!(
                                    "sandbox worker exited with {}: {}",
                                    output.exit_code,
                                    output.stderr.trim()
                                );
                                failed()
                            }
                            Err(e) => {
                                eprintln!("sandbox unavailable: {e}");
                                failed()
                            }
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    }
}
