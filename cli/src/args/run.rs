//! `loopwatch run`: the monitor's settings, the final output, the supervision of the
//! loop, its restarts and the LLM metering proxy, each group under its help heading.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::supervise::{
    LlmProxyOptions, OnHungEvaluation, OnStall, Restart, RestartPolicy, RunOptions,
};

/// The flags and command of `loopwatch run`.
// A new flag goes into one of the groups below (or a new group with its own heading):
// one placed here after them would be listed under the last group's heading.
#[derive(Debug, Args)]
pub struct RunArgs {
    // First, so that no group's help heading takes it.
    /// The loop's command and arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
    /// The monitor: its endpoint, alerting, thresholds and labels.
    #[command(flatten)]
    pub monitor: MonitorFlags,
    /// The final files, and how long they stay served.
    #[command(flatten)]
    pub output: OutputFlags,
    /// Ending the loop's processes.
    #[command(flatten)]
    pub supervision: SupervisionFlags,
    /// Starting the loop again.
    #[command(flatten)]
    pub restarts: RestartFlags,
    /// Metering the loop's LLM calls.
    #[command(flatten)]
    pub llm: LlmProxyFlags,
    /// Reading the local model servers.
    #[command(flatten)]
    pub servers: ModelServerFlags,
    /// Instrumenting a Python loop's framework with no change to its code.
    #[command(flatten)]
    pub instrumentation: InstrumentationFlags,
}

impl RunArgs {
    /// What the supervisor runs on. `--max-restarts` and `--restart-window` go over the
    /// config's `max_restarts` and `restart_window`, so that LoopCrashLooping and the
    /// supervisor count alike; a config file that cannot be read or a value out of
    /// range is an error.
    pub fn into_options(self) -> Result<RunOptions, loopwatch::Error> {
        let restart = self.restarts.policy();
        let limits = self.restarts.thresholds(self.monitor.config.clone())?;
        let limits = self.llm.budget(limits, self.monitor.config.clone())?;
        let limits = self.servers.add_to(limits, self.monitor.config.clone())?;
        let mut monitor = self.monitor.builder(self.output.output_dir);
        if let Some(thresholds) = limits {
            monitor = monitor.thresholds(thresholds);
        }
        Ok(RunOptions {
            monitor,
            linger: self.output.linger,
            grace: self.supervision.grace,
            restart,
            on_stall: self.supervision.on_stall,
            on_hung_evaluation: self.supervision.on_hung_evaluation,
            exit_timeout: self.supervision.exit_timeout(),
            llm_proxy: self.llm.options(),
            instrument: (self.instrumentation.instrument != "none")
                .then_some(self.instrumentation.instrument),
            command: self.command,
        })
    }
}

/// The monitor's settings, as flags; each falls back to its `LOOPWATCH_*` variable and
/// then to the library's default.
#[derive(Debug, Args)]
#[command(next_help_heading = "Monitoring")]
pub struct MonitorFlags {
    /// Address of /metrics and the dashboard (env LOOPWATCH_LISTEN; default
    /// 0.0.0.0:8000); port 0 takes a free port.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Alertmanager base URL, repeatable (env LOOPWATCH_ALERTMANAGER_URLS,
    /// comma-separated).
    #[arg(long = "alertmanager")]
    pub alertmanager: Vec<String>,
    /// Thresholds file, loopwatch.toml (env LOOPWATCH_CONFIG).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Exporter-toolkit web configuration: TLS and basic auth (env
    /// LOOPWATCH_WEB_CONFIG).
    #[arg(long)]
    pub web_config: Option<PathBuf>,
    /// Directory of Prometheus file_sd targets to register this loop in (env
    /// LOOPWATCH_REGISTER_DIR).
    #[arg(long)]
    pub register: Option<PathBuf>,
    /// The experiment this loop belongs to: the `experiment` label of its run info,
    /// alerts, registration and final files (env LOOPWATCH_EXPERIMENT).
    #[arg(long)]
    pub experiment: Option<String>,
    /// The loop's name within its experiment: the `loop` label (env
    /// LOOPWATCH_LOOP_NAME). One name per loop, never per trial or strategy.
    #[arg(long)]
    pub loop_name: Option<String>,
}

impl MonitorFlags {
    /// The monitor's builder with these settings and the final files' directory.
    /// `loopwatch run` forwards signals to its loop and writes the final files when
    /// the loop has exited: the library installs no handler of its own.
    fn builder(self, output_dir: Option<PathBuf>) -> loopwatch::MonitorBuilder {
        let mut builder = loopwatch::Monitor::builder().signals(loopwatch::Signals::Off);
        if let Some(listen) = self.listen {
            builder = builder.listen(listen);
        }
        if let Some(dir) = output_dir {
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

/// Where the final files go and how long they stay served.
#[derive(Debug, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputFlags {
    /// Directory of the final export files (env LOOPWATCH_OUTPUT_DIR; default the
    /// current directory).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// How long to keep serving after the loop exits, so Prometheus scrapes the
    /// final values ("15s", "1m").
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub linger: Duration,
}

/// How the loop's processes are ended.
#[derive(Debug, Args)]
#[command(next_help_heading = "Supervision")]
pub struct SupervisionFlags {
    /// How long the loop's processes may take to exit after a forwarded signal, or
    /// after loopwatch terminated them, and what it left running after it ended,
    /// before SIGKILL (a second signal kills them at once).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// Once LoopStalled fires: none, kill (terminate the loop's processes) or
    /// restart (terminate and start again, whatever --restart says).
    #[arg(long, value_enum, default_value = "none")]
    pub on_stall: OnStall,
    /// Once EvaluationHung fires: none, or kill (end each hung evaluation that
    /// reported a pid inside the loop's own process tree: SIGUSR2 to its process first
    /// when it said it can be interrupted, then, if it has not ended within --grace,
    /// SIGTERM to its process subtree; the loop goes on without it).
    #[arg(long, value_enum, default_value = "none")]
    pub on_hung_evaluation: OnHungEvaluation,
    /// How long the loop may keep running after it said it was done before its
    /// processes are terminated (the run counts as completed); 0 turns it off.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub exit_timeout: Duration,
}

impl SupervisionFlags {
    /// `--exit-timeout`, `None` when it is off.
    fn exit_timeout(&self) -> Option<Duration> {
        (!self.exit_timeout.is_zero()).then_some(self.exit_timeout)
    }
}

/// When and how often the loop is started again.
#[derive(Debug, Args)]
#[command(next_help_heading = "Restarts")]
pub struct RestartFlags {
    /// Start the loop again when it ends: never, on-failure (a non-zero or
    /// signalled exit without `done`) or always (any exit but the operator's stop
    /// and a finished search: `done`, then exit 0).
    #[arg(long, value_enum, default_value = "never")]
    pub restart: Restart,
    /// The first wait before a restart; it doubles with each restart in a row, up
    /// to 5 min.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub restart_delay: Duration,
    /// A loop that ran this long before it ended is restarted after the first
    /// delay again.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub restart_reset: Duration,
    /// Restarts allowed within the restart window; past it loopwatch gives up and
    /// exits with the loop's last status (default: max_restarts of the config, 5).
    #[arg(long)]
    pub max_restarts: Option<u64>,
    /// The window restarts are counted over (default: restart_window of the
    /// config, 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub restart_window: Option<Duration>,
}

impl RestartFlags {
    /// When and how fast the loop is restarted.
    fn policy(&self) -> RestartPolicy {
        RestartPolicy {
            when: self.restart,
            delay: self.restart_delay,
            reset_after: self.restart_reset,
        }
    }

    /// The thresholds of `config` (the flag, else `LOOPWATCH_CONFIG`, else the
    /// defaults) with `--max-restarts` and `--restart-window` over them; `None` when
    /// neither is given, and the monitor reads its thresholds itself.
    fn thresholds(
        &self,
        config: Option<PathBuf>,
    ) -> Result<Option<loopwatch::Thresholds>, loopwatch::Error> {
        if self.max_restarts.is_none() && self.restart_window.is_none() {
            return Ok(None);
        }
        let config = config.or_else(|| std::env::var_os("LOOPWATCH_CONFIG").map(PathBuf::from));
        let mut thresholds = super::thresholds(config.as_deref())?;
        if let Some(n) = self.max_restarts {
            thresholds = thresholds.with_max_restarts(n)?;
        }
        if let Some(window) = self.restart_window {
            thresholds = thresholds.with_restart_window(window)?;
        }
        Ok(Some(thresholds))
    }
}

/// The LLM metering proxy.
#[derive(Debug, Args)]
#[command(next_help_heading = "LLM proxy")]
pub struct LlmProxyFlags {
    /// Meter the loop's LLM calls: a proxy on 127.0.0.1 forwards them to the provider
    /// (OPENAI_BASE_URL, ANTHROPIC_BASE_URL and LOOPWATCH_LLM_PROXY point the loop at
    /// it) and records their tokens, time, cost and errors.
    #[arg(long)]
    pub llm_proxy: bool,
    /// The proxy's address (default 127.0.0.1 on a free port); implies --llm-proxy.
    #[arg(long)]
    pub llm_proxy_listen: Option<SocketAddr>,
    /// One upstream for both APIs (OpenAI under URL/v1, Anthropic under URL); default
    /// the loop's own OPENAI_BASE_URL and ANTHROPIC_BASE_URL, else the providers'
    /// public endpoints. Implies --llm-proxy.
    #[arg(long)]
    pub llm_upstream: Option<String>,
    /// Ask streamed chat and completion requests to the OpenAI-compatible API for
    /// their usage: add "stream_options": {"include_usage": true} where the request
    /// lacks include_usage (vLLM, Ollama and LiteLLM streams otherwise carry none).
    /// Off by default: the loop's stream then ends with one more chunk, without
    /// choices. Implies --llm-proxy.
    #[arg(long)]
    pub llm_request_usage: bool,
    /// The LLM budget in US dollars (over `usd` under [llm.budget] in
    /// loopwatch.toml): LLMBudget fires when it is spent, with warnings at 50% and
    /// 80%, and --llm-budget-action says what else happens.
    #[arg(long, value_name = "USD", value_parser = budget_usd)]
    pub llm_budget_usd: Option<f64>,
    /// What happens when the LLM budget is spent (over `action` under [llm.budget]):
    /// warn (the default: LLMBudget), block (the proxy refuses new calls with the
    /// provider's error; calls in flight finish) or stop (the loop is stopped as by
    /// SIGTERM, then --grace, and not restarted, the proxy refusing its new calls
    /// meanwhile; the final files are written and loopwatch exits with status 3).
    #[arg(long, value_name = "ACTION", value_parser = budget_action)]
    pub llm_budget_action: Option<loopwatch::llm::BudgetAction>,
}

/// `--llm-budget-usd`: a positive, finite amount.
fn budget_usd(text: &str) -> Result<f64, String> {
    match text.trim().trim_start_matches('$').parse::<f64>() {
        Ok(usd) if usd.is_finite() && usd > 0.0 => Ok(usd),
        _ => Err(format!(
            "expected a positive amount of US dollars such as 5 or 12.50, not {text:?}"
        )),
    }
}

/// `--llm-budget-action`: warn, block or stop.
fn budget_action(text: &str) -> Result<loopwatch::llm::BudgetAction, String> {
    text.parse()
}

impl LlmProxyFlags {
    /// `thresholds` (or, when nothing else went over them, those of `config`, else
    /// `LOOPWATCH_CONFIG`, else the defaults) with `--llm-budget-usd` and
    /// `--llm-budget-action` over them; unchanged when neither is given. An action
    /// without an amount anywhere is an error, checked once the flags are applied (a
    /// file may set the action and the flag the amount); when the monitor is left to
    /// read its thresholds itself, it checks them.
    fn budget(
        &self,
        thresholds: Option<loopwatch::Thresholds>,
        config: Option<PathBuf>,
    ) -> Result<Option<loopwatch::Thresholds>, loopwatch::Error> {
        if self.llm_budget_usd.is_none() && self.llm_budget_action.is_none() {
            if let Some(thresholds) = &thresholds {
                thresholds.check()?;
            }
            return Ok(thresholds);
        }
        let mut thresholds = match thresholds {
            Some(thresholds) => thresholds,
            None => {
                let config =
                    config.or_else(|| std::env::var_os("LOOPWATCH_CONFIG").map(PathBuf::from));
                super::thresholds(config.as_deref())?
            }
        };
        if let Some(usd) = self.llm_budget_usd {
            thresholds = thresholds.with_llm_budget_usd(usd)?;
        }
        if let Some(action) = self.llm_budget_action {
            thresholds = thresholds.with_llm_budget_action(action)?;
        }
        thresholds.check()?;
        Ok(Some(thresholds))
    }

    /// The proxy's settings, when any of its flags asks for it.
    fn options(self) -> Option<LlmProxyOptions> {
        (self.llm_proxy
            || self.llm_proxy_listen.is_some()
            || self.llm_upstream.is_some()
            || self.llm_request_usage)
            .then_some(LlmProxyOptions {
                listen: self.llm_proxy_listen,
                upstream: self.llm_upstream,
                request_usage: self.llm_request_usage,
            })
    }
}

/// The local model servers loopwatch reads.
#[derive(Debug, Args)]
#[command(next_help_heading = "Model servers")]
pub struct ModelServerFlags {
    /// Read a local model server at the sampling interval, repeatable: KIND=URL
    /// with KIND vllm, sglang (its /metrics) or ollama (its /api/ps), e.g.
    /// vllm=http://127.0.0.1:8001; NAME:KIND=URL names its `server` label (default
    /// the URL's host:port). Added to the [[llm.servers]] of loopwatch.toml.
    #[arg(long, value_name = "KIND=URL", value_parser = model_server)]
    pub llm_server: Vec<loopwatch::servers::ModelServer>,
}

/// `--llm-server`: KIND=URL (or NAME:KIND=URL).
fn model_server(text: &str) -> Result<loopwatch::servers::ModelServer, String> {
    text.parse()
}

impl ModelServerFlags {
    /// `thresholds` (or, when nothing else went over them, those of `config`, else
    /// `LOOPWATCH_CONFIG`, else the defaults) with the `--llm-server` servers added
    /// after the file's; unchanged when none is given. Too many servers, or two of
    /// one name, are an error.
    fn add_to(
        self,
        thresholds: Option<loopwatch::Thresholds>,
        config: Option<PathBuf>,
    ) -> Result<Option<loopwatch::Thresholds>, loopwatch::Error> {
        if self.llm_server.is_empty() {
            return Ok(thresholds);
        }
        let thresholds = match thresholds {
            Some(thresholds) => thresholds,
            None => {
                let config =
                    config.or_else(|| std::env::var_os("LOOPWATCH_CONFIG").map(PathBuf::from));
                super::thresholds(config.as_deref())?
            }
        };
        let mut llm = thresholds.llm().clone();
        for server in self.llm_server {
            llm = llm.with_server(server)?;
        }
        Ok(Some(thresholds.with_llm(llm)))
    }
}

/// Zero-code instrumentation of the frameworks a Python loop imports.
#[derive(Debug, Args)]
#[command(next_help_heading = "Instrumentation")]
pub struct InstrumentationFlags {
    /// Instrument the frameworks a Python child imports (OpenEvolve, ShinkaEvolve,
    /// Optuna, DEAP, Nevergrad), with no change to its code: auto (every framework at
    /// a tested version), none, or a comma-separated list (optuna,deap; auto,NAME
    /// adds one to auto). Puts loopwatch's instrumentation directory on the child's
    /// PYTHONPATH (its sitecustomize runs the one it shadows); see docs/frameworks.md.
    #[arg(
        long,
        env = crate::supervise::instrument::ENV_INSTRUMENT,
        default_value = "auto",
        value_parser = crate::supervise::instrument::flag
    )]
    pub instrument: String,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["loopwatch", "run"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Run(run) => *run,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_flag_sits_under_a_heading() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let run = cli.find_subcommand("run").unwrap();
        let loose: Vec<String> = run
            .get_arguments()
            .filter(|arg| !arg.is_positional() && arg.get_id() != "help")
            .filter(|arg| arg.get_help_heading().is_none())
            .map(|arg| arg.get_id().to_string())
            .collect();
        assert!(
            loose.is_empty(),
            "flags of loopwatch run without a heading: {loose:?}"
        );
    }

    #[test]
    fn the_defaults_convert_to_the_supervisors_defaults() {
        let options = run_args(&["--", "true"]).into_options().unwrap();
        assert_eq!(options.restart, RestartPolicy::default());
        assert_eq!(options.linger, Duration::ZERO);
        assert_eq!(options.grace, Duration::from_secs(10));
        assert_eq!(options.on_stall, OnStall::None);
        assert_eq!(options.on_hung_evaluation, OnHungEvaluation::None);
        assert_eq!(options.exit_timeout, Some(Duration::from_secs(300)));
        assert_eq!(options.llm_proxy, None);
        assert_eq!(options.command, [OsString::from("true")]);
    }

    #[test]
    fn every_flag_reaches_the_options() {
        let options = run_args(&[
            "--linger=15s",
            "--grace=3s",
            "--on-stall=restart",
            "--on-hung-evaluation=kill",
            "--exit-timeout=0",
            "--restart=on-failure",
            "--restart-delay=2s",
            "--restart-reset=1m",
            "--llm-upstream=http://127.0.0.1:9/",
            "--",
            "python",
            "loop.py",
        ])
        .into_options()
        .unwrap();
        assert_eq!(
            options.restart,
            RestartPolicy {
                when: Restart::OnFailure,
                delay: Duration::from_secs(2),
                reset_after: Duration::from_secs(60),
            }
        );
        assert_eq!(options.linger, Duration::from_secs(15));
        assert_eq!(options.grace, Duration::from_secs(3));
        assert_eq!(options.on_stall, OnStall::Restart);
        assert_eq!(options.on_hung_evaluation, OnHungEvaluation::Kill);
        assert_eq!(options.exit_timeout, None, "0 turns it off");
        assert_eq!(
            options.llm_proxy,
            Some(LlmProxyOptions {
                listen: None,
                upstream: Some("http://127.0.0.1:9/".into()),
                request_usage: false,
            }),
            "--llm-upstream implies --llm-proxy"
        );
        assert_eq!(
            options.command,
            [OsString::from("python"), "loop.py".into()]
        );
    }

    #[test]
    fn a_proxy_address_implies_the_proxy() {
        let options = run_args(&["--llm-proxy-listen=127.0.0.1:0", "--", "true"])
            .into_options()
            .unwrap();
        assert_eq!(
            options.llm_proxy,
            Some(LlmProxyOptions {
                listen: Some("127.0.0.1:0".parse().unwrap()),
                upstream: None,
                request_usage: false,
            })
        );
    }

    #[test]
    fn restart_limits_go_over_the_config_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("loopwatch.toml");
        std::fs::write(&config, "max_restarts = 7\nrestart_window = \"2h\"\n").unwrap();
        let limits = run_args(&["--restart-window=30m", "--", "true"])
            .restarts
            .thresholds(Some(config))
            .unwrap()
            .expect("a limit is given");
        assert_eq!(limits.max_restarts(), 7, "the config's, kept");
        assert_eq!(
            limits.restart_window(),
            Duration::from_secs(1800),
            "the flag's"
        );
        let none = run_args(&["--", "true"]).restarts.thresholds(None).unwrap();
        assert!(none.is_none(), "the monitor reads its own thresholds");
        let zero = run_args(&["--max-restarts=0", "--", "true"]).into_options();
        assert!(zero.is_err(), "{zero:?}");
    }

    #[test]
    fn budget_flags_go_over_the_config_and_an_action_needs_an_amount() {
        use loopwatch::llm::BudgetAction;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("loopwatch.toml");
        std::fs::write(&config, "max_restarts = 7\n[llm.budget]\nusd = 5.0\n").unwrap();
        let budget = |args: &[&str], config: Option<PathBuf>| {
            let args = run_args(args);
            let limits = args.restarts.thresholds(config.clone()).unwrap();
            args.llm.budget(limits, config)
        };
        // The config's amount, the flag's action; the rest of the config kept.
        let t = budget(
            &["--llm-budget-action=stop", "--", "true"],
            Some(config.clone()),
        )
        .unwrap()
        .unwrap();
        let b = t.llm_budget().unwrap();
        assert_eq!((b.usd, b.action), (5.0, BudgetAction::Stop));
        assert_eq!(t.max_restarts(), 7);
        // The flag's amount over the config's.
        let t = budget(&["--llm-budget-usd=$2.50", "--", "true"], Some(config))
            .unwrap()
            .unwrap();
        let b = t.llm_budget().unwrap();
        assert_eq!((b.usd, b.action), (2.5, BudgetAction::Warn));
        // Without either flag the monitor reads its own thresholds.
        assert!(budget(&["--", "true"], None).unwrap().is_none());
        // An action without an amount anywhere, and amounts that are not, are refused.
        let empty = dir.path().join("empty.toml");
        std::fs::write(&empty, "").unwrap();
        assert!(budget(&["--llm-budget-action=block", "--", "true"], Some(empty)).is_err());
        for bad in ["0", "-1", "nan", "inf", "five"] {
            let parsed =
                Cli::try_parse_from(["loopwatch", "run", "--llm-budget-usd", bad, "--", "true"]);
            assert!(parsed.is_err(), "{bad}");
        }
        let parsed =
            Cli::try_parse_from(["loopwatch", "run", "--llm-budget-action=halt", "--", "true"]);
        assert!(parsed.is_err());
    }

    #[test]
    fn model_servers_are_added_to_the_configs_and_bad_ones_refused() {
        use loopwatch::servers::ServerKind;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("loopwatch.toml");
        std::fs::write(
            &config,
            "max_restarts = 7\n[[llm.servers]]\nkind = \"ollama\"\nurl = \"http://127.0.0.1:11434\"\n",
        )
        .unwrap();
        let servers = |args: &[&str], config: Option<PathBuf>| {
            let args = run_args(args);
            let limits = args.restarts.thresholds(config.clone()).unwrap();
            args.servers.add_to(limits, config)
        };
        let t = servers(
            &[
                "--llm-server=vllm=http://127.0.0.1:8001",
                "--llm-server",
                "b:sglang=http://127.0.0.1:30000/",
                "--",
                "true",
            ],
            Some(config.clone()),
        )
        .unwrap()
        .unwrap();
        let read: Vec<(ServerKind, &str)> = t
            .llm()
            .servers()
            .iter()
            .map(|s| (s.kind(), s.name()))
            .collect();
        assert_eq!(
            read,
            [
                (ServerKind::Ollama, "127.0.0.1:11434"),
                (ServerKind::Vllm, "127.0.0.1:8001"),
                (ServerKind::Sglang, "b"),
            ]
        );
        assert_eq!(t.max_restarts(), 7, "the rest of the config kept");
        assert!(servers(&["--", "true"], None).unwrap().is_none());
        // The same host:port as the file's server, unnamed: refused, saying why.
        let err = servers(
            &["--llm-server=vllm=http://127.0.0.1:11434", "--", "true"],
            Some(config),
        )
        .unwrap_err();
        assert!(err.to_string().contains("own name"), "{err}");
        for bad in [
            "vllm",
            "tgi=http://127.0.0.1:1",
            "vllm=https://127.0.0.1:1",
            "vllm=127.0.0.1:8001",
        ] {
            let parsed =
                Cli::try_parse_from(["loopwatch", "run", "--llm-server", bad, "--", "true"]);
            let err = parsed.unwrap_err().to_string();
            assert!(err.contains("--llm-server"), "{bad}: {err}");
        }
    }

    /// A loopwatch.toml that sets the budget's action and no amount is read; the
    /// amount may come from --llm-budget-usd, and only when it comes from nowhere is
    /// it refused (by the monitor, as the file's own thresholds are).
    #[test]
    fn a_files_budget_action_takes_its_amount_from_the_flag() {
        use loopwatch::llm::BudgetAction;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("loopwatch.toml");
        std::fs::write(&config, "[llm.budget]\naction = \"block\"\n").unwrap();
        let options = |args: &[&str]| {
            let args = run_args(args);
            let limits = args.restarts.thresholds(Some(config.clone()))?;
            args.llm.budget(limits, Some(config.clone()))
        };
        for flags in [
            &["--llm-budget-usd=2", "--", "true"][..],
            &["--max-restarts=3", "--llm-budget-usd=2", "--", "true"],
        ] {
            let t = options(flags)
                .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
                .unwrap();
            let b = t.llm_budget().unwrap();
            assert_eq!((b.usd, b.action), (2.0, BudgetAction::Block), "{flags:?}");
        }
        // No amount anywhere: refused once the flags are applied, or, when the monitor
        // reads the file itself, by the monitor's check.
        let err = options(&["--max-restarts=3", "--", "true"]).unwrap_err();
        assert!(err.to_string().contains("needs an amount"), "{err}");
        assert!(options(&["--", "true"]).unwrap().is_none());
        let file = super::super::thresholds(Some(&config)).unwrap();
        assert!(file.check().is_err());
    }
}
