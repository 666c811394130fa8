//! `loopwatch run` of a command, as the tests start it: on a free loopback port, its
//! final files and its log (stderr) in the test's directory, never on the terminal
//! the tests run in; killed when dropped.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::services::free_port;
use super::{http_raw, python, scrape, wait_until};

/// A `loopwatch run` of a command; its stderr goes to `dir/loopwatch.log`.
pub struct Supervised {
    /// The `loopwatch run` process (or the wrapper it runs under).
    pub child: Child,
    /// Its /metrics and dashboard.
    pub addr: SocketAddr,
    /// Its output directory, where its log is too.
    pub dir: PathBuf,
}

/// Variables of the network and the providers that loopwatch would read: a test of
/// the LLM proxy sets its own, none leaks in from the machine.
pub const NETWORK_VARIABLES: [&str; 13] = [
    "OPENAI_BASE_URL",
    "OPENAI_API_BASE",
    "ANTHROPIC_BASE_URL",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// How `loopwatch run` itself is started.
#[derive(Debug, Default)]
pub struct Launch {
    /// A command it runs under (`unshare …`), if any.
    pub wrapper: Vec<OsString>,
    /// More environment, for loopwatch and so for the loop.
    pub env: Vec<(OsString, OsString)>,
    /// Variables of the tests' own environment it is not given.
    pub env_remove: Vec<OsString>,
    /// Its working directory; the tests' own when `None`.
    pub current_dir: Option<PathBuf>,
}

impl Launch {
    /// In `dir`, with none of the machine's [`NETWORK_VARIABLES`] passed on.
    pub fn without_network_settings(dir: &Path) -> Self {
        Launch {
            env_remove: NETWORK_VARIABLES.iter().map(OsString::from).collect(),
            current_dir: Some(dir.to_path_buf()),
            ..Launch::default()
        }
    }
}

impl Supervised {
    /// `loopwatch run [flags] -- python <script_args>`.
    pub fn start(dir: &Path, flags: &[&str], script_args: &[&str]) -> Self {
        let mut command = vec![python().into_os_string()];
        command.extend(script_args.iter().map(OsString::from));
        Self::launch(dir, &Launch::default(), flags, &command)
    }

    /// `loopwatch run --llm-proxy [flags] -- python <script> <args>` in `dir`, with
    /// `env` set for loopwatch (and so for the loop), none of the machine's
    /// [`NETWORK_VARIABLES`] passed on.
    pub fn metered(
        dir: &Path,
        flags: &[&str],
        env: &[(&str, &str)],
        script: &Path,
        args: &[&str],
    ) -> Self {
        let launch = Launch {
            env: env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
            ..Launch::without_network_settings(dir)
        };
        let flags: Vec<&str> = std::iter::once("--llm-proxy")
            .chain(flags.iter().copied())
            .collect();
        let command: Vec<OsString> = [python().into_os_string(), script.into()]
            .into_iter()
            .chain(args.iter().map(OsString::from))
            .collect();
        Self::launch(dir, &launch, &flags, &command)
    }

    /// `loopwatch run [flags] -- <command>`, started as `launch` says. An argument
    /// `{metrics}` of the command becomes the URL of loopwatch's /metrics.
    pub fn launch(dir: &Path, launch: &Launch, flags: &[&str], command: &[OsString]) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics = format!("http://{addr}/metrics");
        let command: Vec<OsString> = command
            .iter()
            .map(|arg| match arg.to_str() {
                Some(text) if text.contains("{metrics}") => {
                    text.replace("{metrics}", &metrics).into()
                }
                _ => arg.clone(),
            })
            .collect();
        let log = std::fs::File::create(dir.join("loopwatch.log")).unwrap();
        let loopwatch = env!("CARGO_BIN_EXE_loopwatch");
        let mut run = match launch.wrapper.split_first() {
            None => Command::new(loopwatch),
            Some((program, args)) => {
                let mut wrapped = Command::new(program);
                wrapped.args(args).arg(loopwatch);
                wrapped
            }
        };
        for name in &launch.env_remove {
            run.env_remove(name);
        }
        if let Some(cwd) = &launch.current_dir {
            run.current_dir(cwd);
        }
        let child = run
            .arg("run")
            .arg(format!("--listen={addr}"))
            .arg(format!("--output-dir={}", dir.display()))
            .args(flags)
            .arg("--")
            .args(&command)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            // Never the terminal the tests run in: the loop would take its foreground.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Supervised {
            child,
            addr,
            dir: dir.to_path_buf(),
        }
    }

    /// Waits until it answers on its endpoint.
    pub fn wait_serving(&self) {
        wait_until(Duration::from_secs(30), "loopwatch run to serve", || {
            http_raw(
                self.addr,
                format!(
                    "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    self.addr
                )
                .as_bytes(),
            )
            .is_ok()
        });
    }

    /// Its exit status, once it has exited; past `timeout` it is killed and the test
    /// fails with its log.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("loopwatch run did not exit in time; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("loopwatch.log")).unwrap_or_default()
    }

    /// Its `metrics_final.json`; the test fails with its log when there is none.
    pub fn final_json(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.join("metrics_final.json"))
            .unwrap_or_else(|e| panic!("no metrics_final.json ({e}); log:\n{}", self.log()));
        serde_json::from_str(&text).unwrap()
    }

    /// The run id of its final files.
    pub fn run_id(&self) -> String {
        self.final_json()["summary"]["run_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A metric's single value in the live exposition.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = scrape(self.addr);
        text.lines()
            .find(|line| line.split([' ', '{']).next() == Some(name))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
