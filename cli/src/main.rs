//! The `loopwatch` command: operator tools around the loopwatch SDK.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loopwatch_cli::{compare, fleet, generate, supervise};

/// Operator tools for loops watched by loopwatch.
#[derive(Debug, Parser)]
#[command(name = "loopwatch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The monitor's settings, as flags; each falls back to its `LOOPWATCH_*` variable and
/// then to the library's default.
#[derive(Debug, Args)]
struct MonitorFlags {
    /// Address of /metrics and the dashboard (env LOOPWATCH_LISTEN; default
    /// 0.0.0.0:8000); port 0 takes a free port.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory of the final export files (env LOOPWATCH_OUTPUT_DIR; default the
    /// current directory).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Alertmanager base URL, repeatable (env LOOPWATCH_ALERTMANAGER_URLS,
    /// comma-separated).
    #[arg(long = "alertmanager")]
    alertmanager: Vec<String>,
    /// Thresholds file, loopwatch.toml (env LOOPWATCH_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Exporter-toolkit web configuration: TLS and basic auth (env
    /// LOOPWATCH_WEB_CONFIG).
    #[arg(long)]
    web_config: Option<PathBuf>,
    /// Directory of Prometheus file_sd targets to register this loop in (env
    /// LOOPWATCH_REGISTER_DIR).
    #[arg(long)]
    register: Option<PathBuf>,
    /// The experiment this loop belongs to: the `experiment` label of its run info,
    /// alerts, registration and final files (env LOOPWATCH_EXPERIMENT).
    #[arg(long)]
    experiment: Option<String>,
    /// The loop's name within its experiment: the `loop` label (env
    /// LOOPWATCH_LOOP_NAME). One name per loop, never per trial or strategy.
    #[arg(long)]
    loop_name: Option<String>,
}

impl MonitorFlags {
    fn builder(self) -> loopwatch::MonitorBuilder {
        // `loopwatch run` forwards signals to its loop and writes the final files when
        // the loop has exited; the library installs no handler of its own.
        let mut builder = loopwatch::Monitor::builder().signals(loopwatch::Signals::Off);
        if let Some(listen) = self.listen {
            builder = builder.listen(listen);
        }
        if let Some(dir) = self.output_dir {
            builder = builder.output_dir(dir);
        }
        if !self.alertmanager.is_empty() {
            builder = builder.alertmanager_urls(self.alertmanager);
        }
        if let Some(config) = self.config {
            builder = builder.config_file(config);
        }
        if let Some(web_config) = self.web_config {
            builder = builder.web_config(web_config);
        }
        if let Some(dir) = self.register {
            builder = builder.register(dir);
        }
        if let Some(experiment) = self.experiment {
            builder = builder.experiment(experiment);
        }
        if let Some(name) = self.loop_name {
            builder = builder.loop_name(name);
        }
        builder
    }
}

impl MonitorFlags {
    /// The builder, with `--max-restarts` and `--restart-window` over the config's
    /// `max_restarts` and `restart_window`, so LoopCrashLooping and the supervisor
    /// count alike. A bad config or value is exit code 2.
    fn builder_with_restart_limits(
        self,
        max_restarts: Option<u64>,
        restart_window: Option<Duration>,
    ) -> Result<loopwatch::MonitorBuilder, ExitCode> {
        if max_restarts.is_none() && restart_window.is_none() {
            return Ok(self.builder());
        }
        let config = self
            .config
            .clone()
            .or_else(|| std::env::var_os("LOOPWATCH_CONFIG").map(PathBuf::from));
        let mut t = thresholds(config)?;
        let invalid = |err: loopwatch::Error| {
            eprintln!("error: {err}");
            ExitCode::from(2)
        };
        if let Some(n) = max_restarts {
            t = t.with_max_restarts(n).map_err(invalid)?;
        }
        if let Some(window) = restart_window {
            t = t.with_restart_window(window).map_err(invalid)?;
        }
        Ok(self.builder().thresholds(t))
    }
}

/// The flags and command of `loopwatch run`.
#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    monitor: MonitorFlags,
    /// How long to keep serving after the loop exits, so Prometheus scrapes the
    /// final values ("15s", "1m").
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    linger: Duration,
    /// How long the loop's processes may take to exit after a forwarded signal, or
    /// after loopwatch terminated them, and what it left running after it ended,
    /// before SIGKILL (a second signal kills them at once).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// Start the loop again when it ends: never, on-failure (a non-zero or
    /// signalled exit without `done`) or always (any exit but the operator's stop
    /// and a finished search: `done`, then exit 0).
    #[arg(long, value_enum, default_value = "never")]
    restart: supervise::Restart,
    /// The first wait before a restart; it doubles with each restart in a row, up
    /// to 5 min.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    restart_delay: Duration,
    /// A loop that ran this long before it ended is restarted after the first
    /// delay again.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    restart_reset: Duration,
    /// Restarts allowed within the restart window; past it loopwatch gives up and
    /// exits with the loop's last status (default: max_restarts of the config, 5).
    #[arg(long)]
    max_restarts: Option<u64>,
    /// The window restarts are counted over (default: restart_window of the
    /// config, 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    restart_window: Option<Duration>,
    /// Once LoopStalled fires: none, kill (terminate the loop's processes) or
    /// restart (terminate and start again, whatever --restart says).
    #[arg(long, value_enum, default_value = "none")]
    on_stall: supervise::OnStall,
    /// How long the loop may keep running after it said it was done before its
    /// processes are terminated (the run counts as completed); 0 turns it off.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    exit_timeout: Duration,
    /// Meter the loop's LLM calls: a proxy on 127.0.0.1 forwards them to the provider
    /// (OPENAI_BASE_URL, ANTHROPIC_BASE_URL and LOOPWATCH_LLM_PROXY point the loop at
    /// it) and records their tokens, time, cost and errors.
    #[arg(long)]
    llm_proxy: bool,
    /// The proxy's address (default 127.0.0.1 on a free port); implies --llm-proxy.
    #[arg(long)]
    llm_proxy_listen: Option<SocketAddr>,
    /// One upstream for both APIs (OpenAI under URL/v1, Anthropic under URL); default
    /// the loop's own OPENAI_BASE_URL and ANTHROPIC_BASE_URL, else the providers'
    /// public endpoints. Implies --llm-proxy.
    #[arg(long)]
    llm_upstream: Option<String>,
    /// The loop's command and arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<OsString>,
}

/// The runs and outputs of `loopwatch compare`.
#[derive(Debug, Args)]
struct CompareArgs {
    /// The runs: each a metrics_final.json, or the output directory holding one
    /// (the run's --output-dir, LOOPWATCH_OUTPUT_DIR).
    #[arg(required = true, value_name = "RUN")]
    runs: Vec<PathBuf>,
    /// Where to write the page (default compare.html in the current directory;
    /// with --json, a page is written only when this is given).
    #[arg(long, short, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Print the table of final figures as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a loop in any language under loopwatch: its reports arrive on a Unix socket
    /// (LOOPWATCH_SOCKET), its process tree is sampled, /metrics and the dashboard are
    /// served, alerts raised, and the final files written when it exits. Exits with
    /// the loop's status (128 + signal when a signal ended it).
    Run(Box<RunArgs>),
    /// List the loops registered on this host: pid, experiment, loop, run id,
    /// iteration, iterations per second, success rate, alerts firing, uptime and
    /// endpoint. Exits 0 when every registered loop answered, 1 when a registration's
    /// owner is gone or a loop did not answer (they are listed), 2 when the directory
    /// cannot be read.
    Ps {
        /// The registration directory (the loops' --register; env
        /// LOOPWATCH_REGISTER_DIR).
        #[arg(
            long,
            env = "LOOPWATCH_REGISTER_DIR",
            default_value = "prometheus/targets"
        )]
        register: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Serve one page listing this host's registered loops, their state and links to
    /// each loop's own page (and /api/v1/loops as JSON); no Grafana needed.
    Fleet {
        /// The registration directory (env LOOPWATCH_REGISTER_DIR).
        #[arg(
            long,
            env = "LOOPWATCH_REGISTER_DIR",
            default_value = "prometheus/targets"
        )]
        register: PathBuf,
        /// Address of the page.
        #[arg(long, default_value = "127.0.0.1:8100")]
        listen: SocketAddr,
    },
    /// Compare finished runs: one self-contained HTML page (it opens offline) that
    /// overlays each run's best Sharpe so far against iterations, wall time and LLM
    /// spend, labelled by experiment, loop and run id, above a table of their final
    /// figures. Exits 2 when a run cannot be read (the message names the file), 1 when
    /// the page cannot be written.
    Compare(CompareArgs),
    /// Print the table of every exported metric (Markdown, as in docs/metrics.md).
    Metrics,
    /// Print every setting of a monitor: the environment variables and the
    /// loopwatch.toml keys, with their defaults (Markdown, as in docs/configuration.md).
    Config,
    /// Regenerate the Prometheus rules and their promtool tests (prometheus/).
    Rules {
        /// Repository root to write under.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Thresholds file (loopwatch.toml), as the monitor reads it; default: the
        /// requirements' numbers.
        #[arg(long, env = "LOOPWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Regenerate the Grafana dashboards (grafana/dashboards/loopwatch.json and
    /// loopwatch-fleet.json).
    Dashboard {
        /// Repository root to write under.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Thresholds file (loopwatch.toml), as the monitor reads it; default: the
        /// requirements' numbers.
        #[arg(long, env = "LOOPWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Remove orphaned containers and terminate orphaned processes of dead loops on
    /// this host (after a crash, say). Those of live loops, of other hosts, and
    /// unmarked ones are never touched.
    Cleanup {
        /// Only list the orphans; remove and terminate nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Metrics => {
            print!("{}", loopwatch::catalog::markdown_table());
            ExitCode::SUCCESS
        }
        Command::Config => {
            print!(
                "{}\n{}",
                loopwatch::EnvVariable::markdown_table(),
                loopwatch::Thresholds::markdown_table()
            );
            ExitCode::SUCCESS
        }
        Command::Rules { root, config } => match thresholds(config) {
            Ok(t) => written(
                generate::write_rules(&root, &t),
                &[generate::RULES_FILE, generate::RULES_TEST_FILE],
            ),
            Err(code) => code,
        },
        Command::Dashboard { root, config } => match thresholds(config) {
            Ok(t) => written(
                generate::write_dashboard(&root, &t),
                &[generate::DASHBOARD_FILE, generate::FLEET_DASHBOARD_FILE],
            ),
            Err(code) => code,
        },
        Command::Cleanup { dry_run } => cleanup(dry_run),
        Command::Ps { register, json } => ps(&register, json),
        Command::Compare(CompareArgs { runs, output, json }) => {
            ExitCode::from(compare::run(&runs, json, output.as_deref()))
        }
        Command::Fleet { register, listen } => match fleet::serve(register, listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot serve the fleet page on {listen}: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run(run) => {
            let RunArgs {
                monitor,
                linger,
                grace,
                restart,
                restart_delay,
                restart_reset,
                max_restarts,
                restart_window,
                on_stall,
                exit_timeout,
                llm_proxy,
                llm_proxy_listen,
                llm_upstream,
                command,
            } = *run;
            let monitor = match monitor.builder_with_restart_limits(max_restarts, restart_window) {
                Ok(builder) => builder,
                Err(code) => return code,
            };
            ExitCode::from(supervise::run(supervise::RunOptions {
                monitor,
                linger,
                grace,
                restart: supervise::RestartPolicy {
                    when: restart,
                    delay: restart_delay,
                    reset_after: restart_reset,
                },
                on_stall,
                exit_timeout: (!exit_timeout.is_zero()).then_some(exit_timeout),
                llm_proxy: (llm_proxy || llm_proxy_listen.is_some() || llm_upstream.is_some())
                    .then_some(supervise::LlmProxyOptions {
                        listen: llm_proxy_listen,
                        upstream: llm_upstream,
                    }),
                command,
            }))
        }
    }
}

/// The thresholds of a file, or the defaults without one; a bad file is exit code 2.
fn thresholds(config: Option<PathBuf>) -> Result<loopwatch::Thresholds, ExitCode> {
    match config {
        None => Ok(loopwatch::Thresholds::default()),
        Some(path) => loopwatch::Thresholds::from_file(&path).map_err(|err| {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }),
    }
}

fn ps(register: &std::path::Path, json: bool) -> ExitCode {
    let entries = match fleet::list(register) {
        Ok(entries) => entries,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", register.display());
            return ExitCode::from(2);
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        );
    } else {
        print!("{}", fleet::table(&entries));
    }
    if entries.iter().any(|e| e.problem.is_some()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn cleanup(dry_run: bool) -> ExitCode {
    let processes = loopwatch::cleanup_orphaned_processes(dry_run);
    print_sweep(
        &processes,
        ("would terminate process", "terminated process"),
        "orphaned processes",
        "live or remote owners",
    );
    let containers = match loopwatch::cleanup_orphans(dry_run) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("error: containers not swept: {err}");
            return ExitCode::from(2);
        }
    };
    print_sweep(
        &containers,
        ("would remove container", "removed container"),
        "orphaned containers",
        "live, remote or unverifiable owners",
    );
    if containers.failed.is_empty() && processes.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints what one sweep did with each orphan, then its totals.
fn print_sweep<T: PartialEq + std::fmt::Display>(
    report: &loopwatch::SweepReport<T>,
    (would, did): (&str, &str),
    what: &str,
    alone: &str,
) {
    for orphan in &report.orphans {
        let verdict = match (report.dry_run, report.cleaned.contains(orphan)) {
            (true, _) => would,
            (false, true) => did,
            (false, false) => "FAILED",
        };
        println!("{verdict} {orphan}");
    }
    println!(
        "{} {what}, {} cleaned up, {} failed, {} left alone ({alone})",
        report.orphans.len(),
        report.cleaned.len(),
        report.failed.len(),
        report.left_alone
    );
}

fn written(result: std::io::Result<()>, files: &[&str]) -> ExitCode {
    match result {
        Ok(()) => {
            for file in files {
                println!("wrote {file}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
