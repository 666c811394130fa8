//! The network between the metering proxy and its providers, as a corporate one is:
//! a private CA (made with the openssl CLI) whose certificate the providers' TLS
//! uses, and an HTTP forward proxy.
//!
//! The forward proxy is written here, on loopback, because no proxy server is
//! installable here and the test must see what arrived at it: it records each
//! `CONNECT` (with its `Proxy-Authorization`) and opens the tunnel, and forwards each
//! absolute-form request (`GET http://host:port/path`), request by request, to its
//! host. It speaks the protocol as a real one does (RFC 9110 §9.3.6, RFC 9112 §3.2.2);
//! its only simplification is that it dials the request's host for each new client
//! connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA and a server certificate it issued for `localhost` and 127.0.0.1.
pub struct ServerCertificate {
    /// The CA's certificate (PEM): what `SSL_CERT_FILE` names.
    pub ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl ServerCertificate {
    /// Makes them in `dir` with the openssl CLI.
    pub fn make(dir: &Path) -> Self {
        let run = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl CLI");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=loopwatch test network CA",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        ServerCertificate {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }

    /// A TLS server configuration presenting the certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&self.key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Arc::new(config)
    }
}

/// What arrived at the forward proxy: a request line and its `Proxy-Authorization`.
#[derive(Debug, Clone)]
pub struct ProxySeen {
    /// `CONNECT localhost:PORT HTTP/1.1`, or `GET http://localhost:PORT/v1/models HTTP/1.1`.
    pub request_line: String,
    pub proxy_authorization: Option<String>,
}

/// An HTTP forward proxy on loopback.
pub struct ForwardProxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<ProxySeen>>>,
}

impl ForwardProxy {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<ProxySeen>>> = Arc::default();
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let record = Arc::clone(&record);
                std::thread::spawn(move || relay(stream, &record));
            }
        });
        ForwardProxy { addr, seen }
    }

    /// Its URL with `userinfo` (`user:pass`), for `HTTPS_PROXY` / `HTTP_PROXY`.
    pub fn url(&self, userinfo: &str) -> String {
        format!("http://{userinfo}@{}", self.addr)
    }

    pub fn seen(&self) -> Vec<ProxySeen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads a request head: its request line and its headers (names lower-cased).
fn read_head(reader: &mut impl BufRead) -> Option<(String, Vec<(String, String)>)> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Some((request_line.trim_end().to_string(), headers))
}

fn relay(client: TcpStream, record: &Mutex<Vec<ProxySeen>>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut client_writer = client;
    let mut origin: Option<TcpStream> = None;
    while let Some((request_line, headers)) = read_head(&mut reader) {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        record.lock().unwrap().push(ProxySeen {
            request_line: request_line.clone(),
            proxy_authorization: header("proxy-authorization"),
        });
        let mut words = request_line.split_whitespace();
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        if method == "CONNECT" {
            let Ok(mut upstream) = TcpStream::connect(target) else {
                let _ = client_writer
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
                return;
            };
            if client_writer
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .is_err()
            {
                return;
            }
            // What the client sent after the CONNECT (a TLS hello) goes first.
            let early = reader.buffer().to_vec();
            if upstream.write_all(&early).is_err() {
                return;
            }
            let mut upstream_reader = upstream.try_clone().unwrap();
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut upstream_reader, &mut client_writer);
            });
            let mut client_reader = reader.into_inner();
            let _ = std::io::copy(&mut client_reader, &mut upstream);
            return;
        }
        // Absolute form: to its host, in origin form, without the proxy's headers.
        let Some((host, path)) = target
            .strip_prefix("http://")
            .map(|rest| rest.split_at(rest.find('/').unwrap_or(rest.len())))
        else {
            let _ =
                client_writer.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
            return;
        };
        if origin.is_none() {
            let Ok(stream) = TcpStream::connect(host) else {
                let _ = client_writer
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
                return;
            };
            // Answers go back as they come, whatever their framing.
            let mut answers = stream.try_clone().unwrap();
            let mut back = client_writer.try_clone().unwrap();
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut answers, &mut back);
            });
            origin = Some(stream);
        }
        let origin = origin.as_mut().unwrap();
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let body = if chunked {
            super::read_chunked(&mut reader)
        } else {
            let len: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            body
        };
        let path = if path.is_empty() { "/" } else { path };
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        for (name, value) in &headers {
            if !matches!(
                name.as_str(),
                "proxy-authorization" | "proxy-connection" | "transfer-encoding" | "content-length"
            ) {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        if origin.write_all(head.as_bytes()).is_err() || origin.write_all(&body).is_err() {
            return;
        }
    }
}
