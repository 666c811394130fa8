//! The metering proxy's side towards the providers: its upstream URLs, checked at
//! start, and the one HTTP client that reaches them as the machine's other programs
//! would.
//!
//! - **Upstream URLs.** Each must parse as an `http://` or `https://` URL with a host
//!   and no query, and must not be the proxy's own address (it would forward every
//!   call to itself). A bad one is a start-up error naming where it came from
//!   (`--llm-upstream`, `OPENAI_BASE_URL` …). Credentials in one (`user:pass@`) are
//!   never logged nor put in a request line: they are sent as `Authorization: Basic`
//!   on the requests that carry no `Authorization` of their own.
//! - **Proxies.** `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (upper or
//!   lower case, as curl reads them): an `https://` upstream is reached through an
//!   HTTP `CONNECT` tunnel, an `http://` one by sending the request to the proxy
//!   whole; the proxy's own `user:pass@` goes as `Proxy-Authorization`. Only
//!   `http://` proxies are spoken to: a SOCKS or `https://` proxy that would carry an
//!   upstream is a start-up error, and so is a proxy variable that is not a URL.
//! - **Trust.** The bundled webpki roots, and beside them the system's store, or, in
//!   its place as OpenSSL does, the certificates of `SSL_CERT_FILE` / `SSL_CERT_DIR`.
//!   A set `SSL_CERT_FILE` that cannot be read, or holds no certificate, is a start-up
//!   error.
//! - **Sockets.** A connect timeout of [`CONNECT_TIMEOUT`], TCP keepalive every
//!   [`TCP_KEEPALIVE`], no Nagle delay. A failure is logged with its whole chain of
//!   causes (the DNS, TCP or TLS reason), through [`chain`].

use std::borrow::Cow;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::header::HeaderValue;
use hyper::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::error::Error;

/// How long a TCP connection to an upstream (or to the network's proxy) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a pooled upstream connection may be idle before TCP keepalive probes it.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error and all its causes, `outer: inner: innermost`, each said once: what a
/// log line needs to tell a DNS failure from a refused connection or a certificate
/// that is not trusted.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}

/// A URL as it may be shown: any `user:pass@` replaced by `***@`. Works on text that
/// does not parse (a password holding `?`, `#` or `/`), and errs towards hiding:
/// everything between the scheme and the last `@` is hidden.
pub fn redact(url: &str) -> Cow<'_, str> {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].rfind('@') {
        Some(at) => Cow::Owned(format!("{}***{}", &url[..start], &url[start + at..])),
        None => Cow::Borrowed(url),
    }
}

/// The network's proxy settings, from `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
/// `NO_PROXY` (each also in lower case).
#[derive(Clone)]
pub(crate) struct Network {
    matcher: Arc<Matcher>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The matcher's Debug leaves out the proxies' credentials.
        f.debug_struct("Network")
            .field("matcher", &self.matcher)
            .finish()
    }
}

impl Network {
    /// The settings `env` holds (the upper-case name first, as curl reads them); a
    /// proxy variable that is set but is not a URL is an error.
    pub(crate) fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Network, Error> {
        let read = |upper: &'static str, lower: &'static str| -> Result<String, Error> {
            let Some((variable, value)) = [upper, lower]
                .into_iter()
                .find_map(|name| env(name).map(|value| (name, value)))
            else {
                return Ok(String::new());
            };
            let trimmed = value.trim();
            if upper != "NO_PROXY" && !trimmed.is_empty() {
                // As the matcher reads it: a URL, `http://` assumed without a scheme.
                let with_scheme = if trimmed.contains("://") {
                    Cow::Borrowed(trimmed)
                } else {
                    Cow::Owned(format!("http://{trimmed}"))
                };
                let parsed = with_scheme.parse::<Uri>();
                if parsed.as_ref().map_or(true, |uri| uri.host().is_none()) {
                    return Err(Error::InvalidSetting {
                        variable,
                        value: redact(trimmed).into_owned(),
                        reason: "a proxy URL such as http://proxy.example:3128 was expected"
                            .to_string(),
                    });
                }
            }
            Ok(trimmed.to_string())
        };
        // A CGI program's HTTP_PROXY may come from a request's `Proxy:` header.
        let matcher = if env("REQUEST_METHOD").is_some() {
            Matcher::builder().build()
        } else {
            Matcher::builder()
                .all(read("ALL_PROXY", "all_proxy")?)
                .http(read("HTTP_PROXY", "http_proxy")?)
                .https(read("HTTPS_PROXY", "https_proxy")?)
                .no(read("NO_PROXY", "no_proxy")?)
                .build()
        };
        Ok(Network {
            matcher: Arc::new(matcher),
        })
    }

    /// The proxy that carries requests to `dst`, if any.
    fn proxy_for(&self, dst: &Uri) -> Option<Intercept> {
        self.matcher.intercept(dst)
    }
}

/// One upstream, checked: where requests for it go and what they carry besides the
/// loop's own headers.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    /// The base URL requests are built on, without credentials.
    pub(crate) base: String,
    /// The base URL as logged, credentials hidden.
    pub(crate) shown: String,
    /// The proxy it is reached through, as logged; `None` for a direct connection.
    pub(crate) via: Option<String>,
    /// `Authorization: Basic` from the URL's `user:pass@`, for requests without an
    /// `Authorization` of their own.
    pub(crate) basic: Option<HeaderValue>,
    /// `Proxy-Authorization` for an `http://` upstream sent through a proxy that
    /// wants it (an `https://` one gets it in its tunnel's `CONNECT`).
    pub(crate) proxy_authorization: Option<HeaderValue>,
}

impl Upstream {
    /// Checks the base URL `url` of the `api` upstream (named in errors, with `from`,
    /// where the URL came from), for a proxy listening on `own`.
    pub(crate) fn check(
        api: &'static str,
        from: &'static str,
        url: &str,
        own: SocketAddr,
        network: &Network,
    ) -> Result<Upstream, Error> {
        let refuse = |reason: String| Error::ProxyUpstream {
            api,
            from,
            url: redact(url).into_owned(),
            reason,
        };
        if !url.contains("://") {
            return Err(refuse(
                "it has no scheme; write http://… or https://…".to_string(),
            ));
        }
        let uri: Uri = url
            .parse()
            .map_err(|e| refuse(format!("it is not a URL ({e})")))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(other) => {
                return Err(refuse(format!(
                    "its scheme is {other}; http:// or https:// was expected"
                )))
            }
            None => {
                return Err(refuse(
                    "it has no scheme; write http://… or https://…".to_string(),
                ))
            }
        }
        let (Some(authority), Some(host)) = (uri.authority(), uri.host()) else {
            return Err(refuse("it has no host".to_string()));
        };
        if uri.query().is_some() {
            return Err(refuse(
                "it carries a query (?…); each request's path is appended to the base URL, \
                 so the base cannot hold one"
                    .to_string(),
            ));
        }
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        if is_own_address(host, port, own) {
            return Err(refuse(format!(
                "it is the proxy's own address ({own}): every call would be forwarded to the \
                 proxy itself; name the provider or server the loop should reach"
            )));
        }
        let (userinfo, host_port) = match authority.as_str().rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority.as_str()),
        };
        let path = uri.path().trim_end_matches('/');
        let base = format!("{}://{host_port}{path}", uri.scheme_str().unwrap_or("http"));
        let basic = userinfo.and_then(|userinfo| {
            // The matcher turns a URL's `user:pass@` into a Basic credential, with the
            // percent-decoding curl does.
            Matcher::builder()
                .all(format!("http://{userinfo}@{host_port}"))
                .build()
                .intercept(&Uri::from_static("http://upstream"))
                .and_then(|proxy| proxy.basic_auth().cloned())
        });
        let target: Uri = base
            .parse()
            .map_err(|e| refuse(format!("it is not a URL ({e})")))?;
        let proxy = network.proxy_for(&target);
        if let Some(proxy) = &proxy {
            let scheme = proxy.uri().scheme_str().unwrap_or("http");
            if scheme != "http" {
                return Err(refuse(format!(
                    "the network's proxy for it ({}, from {}) speaks {scheme}; loopwatch \
                     reaches upstreams through http:// proxies only. Set NO_PROXY for its \
                     host, or name an http:// proxy",
                    proxy.uri(),
                    if uri.scheme_str() == Some("https") {
                        "HTTPS_PROXY or ALL_PROXY"
                    } else {
                        "HTTP_PROXY or ALL_PROXY"
                    }
                )));
            }
        }
        let proxy_authorization = proxy
            .as_ref()
            .filter(|_| target.scheme_str() == Some("http"))
            .and_then(|proxy| proxy.basic_auth().cloned());
        Ok(Upstream {
            shown: redact(&format!(
                "{}://{authority}{path}",
                uri.scheme_str().unwrap_or("http")
            ))
            .into_owned(),
            via: proxy.as_ref().map(|proxy| proxy.uri().to_string()),
            base,
            basic,
            proxy_authorization,
        })
    }
}

/// Whether `host:port` is where the proxy listens (`own`): the same address, or a
/// loopback or unspecified one for a proxy on loopback or on every address. Names
/// other than `localhost` are not resolved, nor the addresses of other interfaces
/// looked up.
fn is_own_address(host: &str, port: u16, own: SocketAddr) -> bool {
    if port != own.port() {
        return false;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = if host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case("localhost.") {
        None
    } else {
        match host.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => return false,
        }
    };
    let local = ip.is_none_or(|ip| ip.is_loopback() || ip.is_unspecified());
    match own.ip() {
        listen if listen.is_unspecified() => local || ip.is_some_and(|ip| ip == listen),
        listen if listen.is_loopback() => local,
        listen => ip == Some(listen),
    }
}

/// The TLS settings for upstreams: the bundled webpki roots, with the system's store
/// (or `SSL_CERT_FILE` / `SSL_CERT_DIR` in its place, as OpenSSL reads them) beside
/// them; also how many certificates were added to the bundled ones.
pub(crate) fn tls_config(
    env: impl Fn(&str) -> Option<String>,
) -> Result<(rustls::ClientConfig, usize), Error> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let set = |name: &str| env(name).filter(|value| !value.is_empty());
    let (file, dirs) = (set("SSL_CERT_FILE"), set("SSL_CERT_DIR"));
    let mut added = 0;
    if file.is_none() && dirs.is_none() {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(error = %chain(error), "some of the system's trusted certificates could not be read; the LLM proxy goes on with the others and the bundled ones");
        }
        added += roots.add_parsable_certificates(native.certs).0;
    }
    if let Some(file) = file {
        let certs = read_pem(Path::new(&file)).map_err(|reason| Error::InvalidSetting {
            variable: "SSL_CERT_FILE",
            value: file.clone(),
            reason,
        })?;
        let (usable, _) = roots.add_parsable_certificates(certs);
        if usable == 0 {
            return Err(Error::InvalidSetting {
                variable: "SSL_CERT_FILE",
                value: file,
                reason: "it holds no PEM certificate that can be used".to_string(),
            });
        }
        added += usable;
    }
    if let Some(dirs) = dirs {
        let mut certs = Vec::new();
        for dir in std::env::split_paths(&dirs) {
            let entries = std::fs::read_dir(&dir).map_err(|e| Error::InvalidSetting {
                variable: "SSL_CERT_DIR",
                value: dirs.clone(),
                reason: format!("{} cannot be read: {e}", dir.display()),
            })?;
            for entry in entries.flatten() {
                // A directory of hashed names also holds other files: each that is
                // not PEM is passed over, as OpenSSL does.
                certs.extend(read_pem(&entry.path()).unwrap_or_default());
            }
        }
        let (usable, _) = roots.add_parsable_certificates(certs);
        if usable == 0 {
            return Err(Error::InvalidSetting {
                variable: "SSL_CERT_DIR",
                value: dirs,
                reason: "its directories hold no PEM certificate that can be used".to_string(),
            });
        }
        added += usable;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::ProxyTls(Box::new(e)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((config, added))
}

/// The certificates of a PEM file.
fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("its certificates cannot be read: {e}"))
}

/// The client that reaches every upstream: pooled HTTP/1 connections over TLS or
/// plain TCP, through the network's proxy where it has one.
pub(crate) type UpstreamClient<B> = Client<HttpsConnector<Connector>, B>;

/// Builds the [`UpstreamClient`].
pub(crate) fn client<B>(network: &Network, tls: rustls::ClientConfig) -> UpstreamClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    tcp.set_keepalive(Some(TCP_KEEPALIVE));
    tcp.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(Connector {
            tcp,
            network: network.clone(),
        });
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .build(connector)
}

/// Opens the TCP connection under a request to an upstream: straight to it, through
/// a `CONNECT` tunnel of the network's proxy (for `https://`), or to the proxy itself
/// (for `http://`, the request then written in absolute form).
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    tcp: HttpConnector,
    network: Network,
}

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        let proxy = self.network.proxy_for(&dst);
        Box::pin(async move {
            let Some(proxy) = proxy else {
                let io = tcp.call(dst).await?;
                return Ok(Conn { io, proxied: false });
            };
            if dst.scheme_str() == Some("https") {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), tcp);
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let io = tunnel
                    .call(dst)
                    .await
                    .map_err(|e| format!("through the proxy {}: {}", proxy.uri(), chain(&e)))?;
                Ok(Conn { io, proxied: false })
            } else {
                let io = tcp
                    .call(proxy.uri().clone())
                    .await
                    .map_err(|e| format!("to the proxy {}: {}", proxy.uri(), chain(&e)))?;
                Ok(Conn { io, proxied: true })
            }
        })
    }
}

/// A TCP connection to an upstream or a proxy, saying which for hyper (a request
/// to an `http://` upstream through a proxy is written in absolute form).
#[derive(Debug)]
pub(crate) struct Conn {
    io: TokioIo<tokio::net::TcpStream>,
    proxied: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(pairs: &[(&str, &str)]) -> Result<Network, Error> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Network::from_env(move |key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    }

    const OWN: &str = "127.0.0.1:4001";

    fn check(url: &str) -> Result<Upstream, Error> {
        Upstream::check(
            "OpenAI",
            "--llm-upstream",
            url,
            OWN.parse().unwrap(),
            &network(&[]).unwrap(),
        )
    }

    #[test]
    fn credentials_in_urls_are_hidden_even_in_text_that_does_not_parse() {
        assert_eq!(redact("https://u:p@host:1/v1"), "https://***@host:1/v1");
        assert_eq!(redact("https://host/v1"), "https://host/v1");
        assert_eq!(redact("http://u:pa/ss@host/v1"), "http://***@host/v1");
        assert_eq!(redact("u:p@host"), "***@host");
        // A password that makes the URL unparsable is hidden all the same.
        assert_eq!(redact("http://user:pa?ss@gw/v1"), "http://***@gw/v1");
        assert_eq!(redact("http://user:p#w/x@gw/v1"), "http://***@gw/v1");
    }

    #[test]
    fn bad_upstream_urls_are_refused_with_the_reason_and_without_their_credentials() {
        let reason = |url: &str| check(url).unwrap_err().to_string();
        assert!(reason("not a url").contains("no scheme"));
        assert!(reason("http://not a url").contains("is not a URL"));
        assert!(reason("").contains("no scheme"));
        assert!(reason("http://").contains("is not a URL"));
        assert!(reason("localhost:8000/v1").contains("scheme"));
        assert!(reason("ftp://host/v1").contains("scheme is ftp"));
        assert!(reason("https://host/v1?api-version=1").contains("query"));
        let own = reason("http://127.0.0.1:4001/v1");
        assert!(own.contains("the proxy's own address"), "{own}");
        assert!(own.contains("--llm-upstream"), "{own}");
        assert!(reason("http://localhost:4001").contains("own address"));
        assert!(reason("http://[::1]:4001").contains("own address"));
        let hidden = reason("http://user:s3cret@127.0.0.1:4001/v1");
        assert!(!hidden.contains("s3cret"), "{hidden}");
        assert!(hidden.contains("***@127.0.0.1:4001"), "{hidden}");
        assert!(!reason("http://us er:s3cret@host/ v1").contains("s3cret"));
    }

    #[test]
    fn the_own_address_is_matched_by_address_and_port() {
        let own = |host: &str, port: u16, listen: &str| {
            is_own_address(host, port, listen.parse().unwrap())
        };
        assert!(own("127.0.0.1", 4001, "127.0.0.1:4001"));
        assert!(own("127.0.0.2", 4001, "127.0.0.1:4001"));
        assert!(own("localhost", 4001, "127.0.0.1:4001"));
        assert!(own("0.0.0.0", 4001, "127.0.0.1:4001"));
        assert!(!own("127.0.0.1", 4002, "127.0.0.1:4001"));
        assert!(!own("api.openai.com", 4001, "127.0.0.1:4001"));
        assert!(!own("10.1.2.3", 4001, "127.0.0.1:4001"));
        assert!(own("10.1.2.3", 4001, "10.1.2.3:4001"));
        // Another interface's address is not looked up.
        assert!(!own("10.1.2.3", 4001, "0.0.0.0:4001"));
        assert!(own("localhost", 4001, "0.0.0.0:4001"));
        assert!(!own("localhost", 4001, "10.1.2.3:4001"));
    }

    #[test]
    fn good_upstreams_keep_their_path_and_lose_their_credentials() {
        let upstream = check("https://api.openai.com/v1/").unwrap();
        assert_eq!(upstream.base, "https://api.openai.com/v1");
        assert!(upstream.basic.is_none() && upstream.via.is_none());
        let upstream = check("http://user:p%40ss@127.0.0.1:8000/v1").unwrap();
        assert_eq!(upstream.base, "http://127.0.0.1:8000/v1");
        assert_eq!(upstream.shown, "http://***@127.0.0.1:8000/v1");
        // base64("user:p@ss")
        assert_eq!(upstream.basic.unwrap(), "Basic dXNlcjpwQHNz");
        // The proxy's own port on another host is another server.
        assert!(check("http://10.0.0.7:4001").is_ok());
    }

    #[test]
    fn upstreams_go_through_the_networks_proxy_unless_no_proxy_names_them() {
        let net = network(&[
            ("HTTPS_PROXY", "http://puser:ppass@proxy.internal:3128"),
            ("http_proxy", "proxy.internal:8080"),
            ("NO_PROXY", "localhost,10.0.0.0/8"),
        ])
        .unwrap();
        let at = |url: &str| {
            Upstream::check("OpenAI", "OPENAI_BASE_URL", url, OWN.parse().unwrap(), &net).unwrap()
        };
        let https = at("https://api.openai.com/v1");
        assert_eq!(https.via.as_deref(), Some("http://proxy.internal:3128/"));
        // The tunnel's CONNECT carries the credential, not the requests inside it.
        assert!(https.proxy_authorization.is_none());
        let http = at("http://gateway.example:4000/v1");
        // Spaces around a value are not part of it.
        let spaced = network(&[("HTTPS_PROXY", " http://proxy.internal:3128 ")]).unwrap();
        assert!(Upstream::check(
            "OpenAI",
            "OPENAI_BASE_URL",
            "https://api.openai.com",
            OWN.parse().unwrap(),
            &spaced
        )
        .unwrap()
        .via
        .is_some());
        assert_eq!(http.via.as_deref(), Some("http://proxy.internal:8080/"));
        assert!(http.proxy_authorization.is_none());
        assert!(at("https://localhost:8443").via.is_none());
        assert!(at("http://10.1.2.3:8000/v1").via.is_none());
        let net = network(&[("HTTP_PROXY", "http://u:p@proxy.internal:8080")]).unwrap();
        let http = Upstream::check(
            "OpenAI",
            "OPENAI_BASE_URL",
            "http://gateway.example/v1",
            OWN.parse().unwrap(),
            &net,
        )
        .unwrap();
        assert_eq!(http.proxy_authorization.unwrap(), "Basic dTpw");
    }

    #[test]
    fn proxies_that_cannot_be_used_are_start_up_errors() {
        let bad = network(&[("HTTPS_PROXY", "http://pu:pp@ bad proxy")]).unwrap_err();
        let text = bad.to_string();
        assert!(text.contains("HTTPS_PROXY"), "{text}");
        assert!(!text.contains("pp@"), "{text}");
        let socks = network(&[("ALL_PROXY", "socks5h://proxy.internal:1080")]).unwrap();
        let refused = Upstream::check(
            "Anthropic",
            "ANTHROPIC_BASE_URL",
            "https://api.anthropic.com",
            OWN.parse().unwrap(),
            &socks,
        )
        .unwrap_err()
        .to_string();
        assert!(refused.contains("socks5h"), "{refused}");
        assert!(refused.contains("NO_PROXY"), "{refused}");
        // Behind NO_PROXY, the SOCKS proxy does not matter.
        let bypassed = network(&[
            ("ALL_PROXY", "socks5h://proxy.internal:1080"),
            ("no_proxy", "api.anthropic.com"),
        ])
        .unwrap();
        assert!(Upstream::check(
            "Anthropic",
            "ANTHROPIC_BASE_URL",
            "https://api.anthropic.com",
            OWN.parse().unwrap(),
            &bypassed,
        )
        .is_ok());
    }

    #[test]
    fn an_error_chain_is_said_whole_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(Box::new(inner) as BoxError);
        assert_eq!(chain(&outer), "refused");
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        ));
        assert_eq!(
            chain(&e),
            "client error (Connect): Connection refused (os error 111)"
        );
    }

    #[test]
    fn an_unreadable_ssl_cert_file_is_a_start_up_error() {
        let missing = "/nonexistent/loopwatch-ca.pem";
        let e = tls_config(|key| (key == "SSL_CERT_FILE").then(|| missing.to_string()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SSL_CERT_FILE") && e.contains(missing), "{e}");
    }
}
