//! Local model servers: vLLM, SGLang and Ollama serving the loop's model on the same
//! host (or network). loopwatch reads each one at the sampling interval, off the
//! loop's thread, and republishes a small stable set of its numbers under loopwatch's
//! names, labelled by server: requests running and waiting, KV-cache usage,
//! preemptions, prefix-cache hit rate, time to first token and queue time, and for
//! Ollama (which has no metrics endpoint) the loaded models and their memory.
//!
//! A server is configured in `loopwatch.toml` or with `loopwatch run --llm-server`:
//!
//! ```toml
//! [[llm.servers]]
//! kind = "vllm"                     # or "sglang", "ollama"
//! url = "http://127.0.0.1:8001"     # the server's base URL (not loopwatch's own, 8000)
//! name = "qwen"                     # optional: the `server` label (default host:port)
//! ```
//!
//! ```
//! use loopwatch::servers::{ModelServer, ServerKind};
//! let server: ModelServer = "vllm=http://127.0.0.1:8001".parse().unwrap();
//! assert_eq!(server.kind(), ServerKind::Vllm);
//! assert_eq!(server.name(), "127.0.0.1:8001");
//! assert_eq!(server.endpoint(), "http://127.0.0.1:8001/metrics");
//! assert!("tgi=http://127.0.0.1:8080".parse::<ModelServer>().is_err());
//! ```
//!
//! The module is pure but for [`fetch`]: the text formats are read by [`exposition`]
//! (Prometheus text, vLLM and SGLang) and [`ollama`] (`/api/ps`) into a [`Reading`]
//! of the server's own cumulative numbers; the monitor's [`book::ServerBook`] keeps
//! each server's latest reading and turns the cumulative numbers into what is
//! republished.

pub mod book;
pub mod exposition;
pub(crate) mod fetch;
pub mod ollama;
mod reading;

pub use reading::{LoadedModel, PrefixCache, ReadFailure, Reading, SumCount};

use serde::{Deserialize, Serialize};

/// Model servers a monitor reads at most: the `server` label stays bounded.
pub const MAX_SERVERS: usize = 8;

/// The longest server name: label values stay short.
const MAX_NAME_CHARS: usize = 64;

/// Which model server software answers at a URL, and so what loopwatch reads there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerKind {
    /// vLLM: its Prometheus `/metrics` (`vllm:` names, current and older).
    Vllm,
    /// SGLang, started with `--enable-metrics`: its Prometheus `/metrics`
    /// (`sglang:` names).
    Sglang,
    /// Ollama, which has no metrics endpoint: `/api/ps`, the models loaded and their
    /// memory.
    Ollama,
}

impl ServerKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [ServerKind; 3] = [ServerKind::Vllm, ServerKind::Sglang, ServerKind::Ollama];

    /// The name `kind = "…"` and `--llm-server KIND=URL` use, and the `kind` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            ServerKind::Vllm => "vllm",
            ServerKind::Sglang => "sglang",
            ServerKind::Ollama => "ollama",
        }
    }

    /// The path read under the server's base URL.
    pub const fn path(self) -> &'static str {
        match self {
            ServerKind::Vllm | ServerKind::Sglang => "/metrics",
            ServerKind::Ollama => "/api/ps",
        }
    }
}

impl std::fmt::Display for ServerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ServerKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        ServerKind::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                format!("unknown model server kind {text:?}: expected vllm, sglang or ollama")
            })
    }
}

/// One model server to read: its kind, its base URL and the name it is labelled by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ServerFile", into = "ServerFile")]
pub struct ModelServer {
    kind: ServerKind,
    /// The base URL, `http://host:port` and any path prefix, without a trailing slash.
    url: String,
    name: String,
    /// The URL's host as written (an IPv6 address in brackets) and port (80 when
    /// none is written).
    host: String,
    port: u16,
}

/// A `[[llm.servers]]` entry as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    kind: String,
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

impl TryFrom<ServerFile> for ModelServer {
    type Error = String;

    fn try_from(file: ServerFile) -> Result<Self, String> {
        let server = ModelServer::new(file.kind.parse()?, &file.url)?;
        match file.name {
            Some(name) => server.with_name(&name),
            None => Ok(server),
        }
    }
}

impl From<ModelServer> for ServerFile {
    fn from(server: ModelServer) -> Self {
        ServerFile {
            kind: server.kind.as_str().to_string(),
            url: server.url,
            name: Some(server.name),
        }
    }
}

impl ModelServer {
    /// A server of `kind` at `url`, its base URL (`http://127.0.0.1:8001`; a path
    /// prefix is kept, and a trailing `/metrics` or `/api/ps` is taken off). Its name
    /// is the URL's `host:port` until [`ModelServer::with_name`] gives another.
    /// Only plain `http://` is read.
    ///
    /// ```
    /// use loopwatch::servers::{ModelServer, ServerKind};
    /// let s = ModelServer::new(ServerKind::Ollama, "http://localhost:11434/").unwrap();
    /// assert_eq!(s.endpoint(), "http://localhost:11434/api/ps");
    /// let err = ModelServer::new(ServerKind::Vllm, "localhost:8001").unwrap_err();
    /// assert!(err.contains("http://"), "{err}");
    /// ```
    pub fn new(kind: ServerKind, url: &str) -> Result<Self, String> {
        let url = url.trim();
        let Some(rest) = url.strip_prefix("http://") else {
            let reason = if url.starts_with("https://") {
                "https is not read: give the server's plain http:// address (model servers on this host or network serve plain HTTP)"
            } else {
                "expected a base URL such as http://127.0.0.1:8001"
            };
            return Err(format!("model server url {url:?}: {reason}"));
        };
        if rest.contains(['?', '#']) || rest.contains(char::is_whitespace) {
            return Err(format!(
                "model server url {url:?}: give the server's base URL, without a query or spaces"
            ));
        }
        // Parsed as the reads will request it: what is accepted here is what they
        // can reach (an IPv6 address in brackets, `http://[::1]:8000`, included).
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("model server url {url:?}: not a URL ({e})"))?;
        let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
            return Err(format!(
                "model server url {url:?}: expected http://HOST:PORT"
            ));
        };
        if authority.as_str().contains('@') {
            return Err(format!(
                "model server url {url:?}: expected http://HOST:PORT, without credentials"
            ));
        }
        let host = authority.host();
        let after_host = authority.as_str().strip_prefix(host).unwrap_or_default();
        if !after_host.is_empty() && !after_host.starts_with(':') {
            return Err(format!(
                "model server url {url:?}: expected http://HOST:PORT"
            ));
        }
        let port = match after_host.strip_prefix(':') {
            None => 80,
            Some(port) => authority
                .port_u16()
                .filter(|_| !port.is_empty())
                .ok_or_else(|| {
                    format!("model server url {url:?}: {port:?} is not a port number")
                })?,
        };
        if host.starts_with('[')
            && host[1..host.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_err()
        {
            return Err(format!(
                "model server url {url:?}: {host} is not an IPv6 address"
            ));
        }
        let authority = authority.as_str();
        let host_port = format!("{host}:{port}");
        let path = uri.path();
        let mut path = path.trim_end_matches('/');
        path = path.strip_suffix(kind.path()).unwrap_or(path);
        let path = path.trim_end_matches('/');
        Ok(ModelServer {
            kind,
            url: format!("http://{authority}{path}"),
            name: host_port,
            host: host.to_string(),
            port,
        })
    }

    /// The same server labelled `name` (at most 64 characters, no control
    /// characters).
    pub fn with_name(mut self, name: &str) -> Result<Self, String> {
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            return Err(format!(
                "model server name {name:?}: expected 1 to {MAX_NAME_CHARS} characters, without control characters"
            ));
        }
        self.name = name.to_string();
        Ok(self)
    }

    /// Its kind.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// Its base URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The name its series are labelled by (`server`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host and port of its URL (the host as written, an IPv6 address in
    /// brackets; port 80 when none is written).
    fn host_port(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// The URL loopwatch reads: `/metrics`, or Ollama's `/api/ps`, under the base URL.
    pub fn endpoint(&self) -> String {
        format!("{}{}", self.url, self.kind.path())
    }
}

impl std::str::FromStr for ModelServer {
    type Err = String;

    /// `KIND=URL`, as `loopwatch run --llm-server` takes it; `KIND=URL=NAME`… is not
    /// accepted: a name is given in `loopwatch.toml`, or as `NAME:KIND=URL`.
    fn from_str(text: &str) -> Result<Self, String> {
        let Some((kind, url)) = text.split_once('=') else {
            return Err(format!(
                "{text:?}: expected KIND=URL, such as vllm=http://127.0.0.1:8001"
            ));
        };
        let (name, kind) = match kind.split_once(':') {
            Some((name, kind)) => (Some(name), kind),
            None => (None, kind),
        };
        let server = ModelServer::new(kind.parse()?, url)?;
        match name {
            Some(name) => server.with_name(name),
            None => Ok(server),
        }
    }
}

/// Checks a list of servers as a monitor reads them: at most [`MAX_SERVERS`], and
/// each name once (two servers on one `host:port` need names of their own).
pub(crate) fn check(servers: &[ModelServer]) -> Result<(), String> {
    if servers.len() > MAX_SERVERS {
        return Err(format!(
            "{} model servers: at most {MAX_SERVERS} are read",
            servers.len()
        ));
    }
    for (i, server) in servers.iter().enumerate() {
        if let Some(other) = servers[..i].iter().find(|s| s.name == server.name) {
            return Err(format!(
                "two model servers are named {:?} ({} and {}): give each its own name",
                server.name,
                other.endpoint(),
                server.endpoint()
            ));
        }
    }
    Ok(())
}

/// Whether `host` (an IP address, `[v6]`, or a name) is this machine: a loopback
/// address, the unspecified address (which reaches this machine), or `localhost`;
/// `None` for a name other than `localhost`, which loopwatch does not resolve.
fn local_ip(host: &str) -> Option<std::net::IpAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case("localhost.") {
        return Some(std::net::Ipv4Addr::LOCALHOST.into());
    }
    host.parse().ok()
}

/// Checks that no server is loopwatch's own endpoint, `listen`: a server on the same
/// port at the same address, or on this machine (loopback, unspecified,
/// `localhost`) while loopwatch listens on loopback or on every address. loopwatch
/// would read its own `/metrics` (vLLM's documented port, 8000, is loopwatch's
/// default). A host name other than `localhost` is not resolved, so not checked.
/// The error names the server's URL and says what to do.
pub(crate) fn check_listen(
    servers: &[ModelServer],
    listen: std::net::SocketAddr,
) -> Result<(), (String, String)> {
    if listen.port() == 0 {
        return Ok(());
    }
    let is_local = |ip: std::net::IpAddr| ip.is_loopback() || ip.is_unspecified();
    for server in servers {
        let (host, port) = server.host_port();
        if port != listen.port() {
            continue;
        }
        let Some(ip) = local_ip(host) else {
            continue;
        };
        let own = ip == listen.ip() || (is_local(listen.ip()) && is_local(ip));
        if own {
            return Err((
                server.url().to_string(),
                format!(
                    "this is loopwatch's own address (it listens on {listen}), not a model server's: \
                     start the model server on another port (vLLM: `vllm serve MODEL --port 8001`) \
                     and give that, or move loopwatch (--listen, LOOPWATCH_LISTEN)"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_made_base_urls() {
        let base = |kind, url| ModelServer::new(kind, url).map(|s| (s.url, s.name));
        assert_eq!(
            base(ServerKind::Vllm, " http://127.0.0.1:8001/metrics/ ").unwrap(),
            ("http://127.0.0.1:8001".into(), "127.0.0.1:8001".into())
        );
        assert_eq!(
            base(ServerKind::Sglang, "http://gpu-box:30000/sglang").unwrap(),
            ("http://gpu-box:30000/sglang".into(), "gpu-box:30000".into())
        );
        assert_eq!(
            base(ServerKind::Ollama, "http://[::1]:11434/api/ps").unwrap(),
            ("http://[::1]:11434".into(), "[::1]:11434".into())
        );
        assert_eq!(
            base(ServerKind::Ollama, "http://ollama").unwrap().1,
            "ollama:80"
        );
        for (url, name) in [
            ("http://[::1]:8001", "[::1]:8001"),
            ("http://[::1]", "[::1]:80"),
            ("http://[fe80::1]:30000/sglang/", "[fe80::1]:30000"),
            ("http://[::]:8001/metrics", "[::]:8001"),
        ] {
            let (base_url, n) = base(ServerKind::Vllm, url).unwrap();
            assert_eq!(n, name, "{url}");
            // What the reads will request parses.
            let endpoint = format!("{base_url}/metrics");
            assert!(endpoint.parse::<hyper::Uri>().is_ok(), "{endpoint}");
        }
        for bad in [
            "",
            "127.0.0.1:8000",
            "https://127.0.0.1:8000",
            "http://",
            "http:///metrics",
            "http://user:pw@host:1",
            "http://host:99999",
            "http://host:port",
            "http://host:1/metrics?x=1",
            "http://ho st:1",
            "http://host:",
            "http://[::1:8001",
            "http://[::1]x:8001",
            "http://[zz::1]:8001",
            "http://a^b:1",
            "http://:8001",
        ] {
            let err = ModelServer::new(ServerKind::Vllm, bad).unwrap_err();
            assert!(err.contains("model server url"), "{bad}: {err}");
        }
    }

    #[test]
    fn flags_name_a_kind_and_a_url() {
        let s: ModelServer = "sglang=http://127.0.0.1:30000".parse().unwrap();
        assert_eq!(
            (s.kind(), s.name()),
            (ServerKind::Sglang, "127.0.0.1:30000")
        );
        let s: ModelServer = "big:VLLM=http://127.0.0.1:8001".parse().unwrap();
        assert_eq!((s.kind(), s.name()), (ServerKind::Vllm, "big"));
        for bad in [
            "vllm",
            "tgi=http://a:1",
            "=http://a:1",
            "vllm=",
            ":vllm=http://a:1",
        ] {
            assert!(bad.parse::<ModelServer>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_server_at_loopwatchs_own_address_is_refused() {
        let refused = |url: &str, listen: &str| {
            let server: ModelServer = format!("vllm={url}").parse().unwrap();
            check_listen(&[server], listen.parse().unwrap()).is_err()
        };
        for (url, listen) in [
            ("http://127.0.0.1:8000", "0.0.0.0:8000"),
            ("http://localhost:8000/v1", "0.0.0.0:8000"),
            ("http://0.0.0.0:8000", "127.0.0.1:8000"),
            ("http://[::1]:8000", "[::]:8000"),
            ("http://127.0.0.1:8000", "[::]:8000"),
            ("http://127.0.0.1:8000", "127.0.0.1:8000"),
            ("http://192.168.1.5:8000", "192.168.1.5:8000"),
        ] {
            assert!(refused(url, listen), "{url} with loopwatch on {listen}");
        }
        for (url, listen) in [
            ("http://127.0.0.1:8001", "0.0.0.0:8000"),
            ("http://127.0.0.1:8000", "0.0.0.0:0"),
            ("http://gpu-box:8000", "0.0.0.0:8000"),
            ("http://192.168.1.6:8000", "0.0.0.0:8000"),
            ("http://127.0.0.1:8000", "192.168.1.5:8000"),
            ("http://ollama", "0.0.0.0:8000"),
        ] {
            assert!(!refused(url, listen), "{url} with loopwatch on {listen}");
        }
        let server: ModelServer = "vllm=http://127.0.0.1:8000".parse().unwrap();
        let (url, why) = check_listen(&[server], "0.0.0.0:8000".parse().unwrap()).unwrap_err();
        assert_eq!(url, "http://127.0.0.1:8000");
        assert!(
            why.contains("loopwatch's own address") && why.contains("--port 8001"),
            "{why}"
        );
    }

    #[test]
    fn names_are_unique_and_servers_bounded() {
        let a: ModelServer = "vllm=http://127.0.0.1:8000".parse().unwrap();
        let b: ModelServer = "sglang=http://127.0.0.1:8000/other".parse().unwrap();
        let err = check(&[a.clone(), b.clone()]).unwrap_err();
        assert!(err.contains("give each its own name"), "{err}");
        assert!(check(&[a.clone(), b.with_name("other").unwrap()]).is_ok());
        let many: Vec<ModelServer> = (0..=MAX_SERVERS)
            .map(|i| a.clone().with_name(&format!("s{i}")).unwrap())
            .collect();
        assert!(check(&many).unwrap_err().contains("at most 8"));
        assert!(a.clone().with_name("").is_err());
        assert!(a.clone().with_name("a\nb").is_err());
        assert!(a.with_name(&"x".repeat(65)).is_err());
    }
}
