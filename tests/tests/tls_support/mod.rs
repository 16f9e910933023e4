//! Shared by the TLS suite (`tls.rs`) and the secret-leak suite (`secrets.rs`).
//!
//! Every Kafka link goes to the stack's own brokers, Apache Kafka (`scripts/stack.sh`, "Broker"),
//! through their secured listeners: SSL, which requires a client certificate from the stack's CA
//! (`SF_BROKERS_TLS`, `EU_BROKERS_TLS`), and SASL_SSL with SCRAM-SHA-512 (`SF_BROKERS_SASL`,
//! `EU_BROKERS_SASL`). Both serve the stack's server certificate, for 127.0.0.1 and localhost.
//! MariaDB is the stack's too, over TLS (the `continuum` users REQUIRE SSL).
//!
//! The schema registry is the one link with a terminator of the suites' own: the stack runs
//! Apicurio with plain HTTP and no authentication, so [`TlsProxy`] serves HTTPS with basic auth
//! in front of it (one request per connection). It is for the registry only; every other link is
//! the stack's server itself.
//!
//! [`World`] puts them together: for each site a Kafka link ([`KafkaLink`]: the SSL listener with
//! a client certificate, or the SASL_SSL listener with a SCRAM user), an HTTPS registry with basic
//! auth, and the stack's MariaDB over TLS; it writes both sites' config files and runs the real
//! binaries against them.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use openssl::ssl::{ErrorCode, Ssl, SslAcceptor, SslFiletype, SslMethod};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_openssl::SslStream;

use continuum_tests::check::{exec_all, run_ok};
use continuum_tests::{stack, stack_python, unique_name, workspace_root, Site};

const HINT: &str =
    "run `make up` (which creates the stack's TLS material) and `. .stack/env` first";

// ---------------------------------------------------------------------------------------------
// Certificates

/// The stack's throwaway CA and certificates (`.stack/tls/`, `STACK_TLS_DIR`).
#[derive(Clone, Debug)]
pub struct StackTls {
    pub dir: PathBuf,
}

impl StackTls {
    pub fn get() -> StackTls {
        let dir = PathBuf::from(
            std::env::var("STACK_TLS_DIR")
                .unwrap_or_else(|_| panic!("STACK_TLS_DIR is not set: {HINT}")),
        );
        for f in [
            "ca.pem",
            "ca.key",
            "server.pem",
            "server.key",
            "client.pem",
            "client.key",
        ] {
            assert!(
                dir.join(f).is_file(),
                "{} is missing: {HINT}",
                dir.join(f).display()
            );
        }
        StackTls { dir }
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    /// The stack's CA, to issue certificates its servers and clients trust.
    pub fn authority(&self) -> Ca {
        Ca {
            cert: self.ca(),
            key: self.dir.join("ca.key"),
        }
    }
}

/// A certificate authority: its certificate and its key.
pub struct Ca {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate for [`Ca::issue`] to issue: `<name>.pem` and `<name>.key`, for `cn`; a server
/// certificate for `san` (e.g. `DNS:wrong.example`), or a client certificate. With
/// `key_password`, the key is PKCS#8 encrypted (AES-256) with it.
pub struct Leaf<'a> {
    pub name: &'a str,
    pub cn: &'a str,
    pub san: Option<&'a str>,
    pub client: bool,
    pub key_password: Option<&'a str>,
}

fn openssl(dir: &Path, args: &[&str], env: &[(&str, &str)]) {
    run_ok(
        Command::new("openssl")
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir),
        &format!("openssl {args:?}"),
    );
}

impl Ca {
    /// Issues `leaf` in `dir`, signed by this CA; returns its certificate and key files.
    pub fn issue(&self, dir: &Path, leaf: Leaf) -> (PathBuf, PathBuf) {
        let Leaf {
            name,
            cn,
            san,
            client,
            key_password,
        } = leaf;
        std::fs::create_dir_all(dir).unwrap();
        let key = format!("{name}.plain.key");
        let csr = format!("{name}.csr");
        let ext = format!("{name}.ext");
        let mut exts = vec![
            "basicConstraints=CA:FALSE".to_owned(),
            "keyUsage=critical,digitalSignature,keyEncipherment".to_owned(),
            format!(
                "extendedKeyUsage={}",
                if client { "clientAuth" } else { "serverAuth" }
            ),
        ];
        if let Some(san) = san {
            exts.push(format!("subjectAltName={san}"));
        }
        std::fs::write(dir.join(&ext), exts.join("\n") + "\n").unwrap();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-sha256",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
            &[],
        );
        let pem = format!("{name}.pem");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                self.cert.to_str().unwrap(),
                "-CAkey",
                self.key.to_str().unwrap(),
                "-CAcreateserial",
                "-CAserial",
                &format!("{name}.srl"),
                "-days",
                "30",
                "-sha256",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
            &[],
        );
        let final_key = format!("{name}.key");
        match key_password {
            // The password reaches openssl through its environment, not its command line.
            Some(pw) => openssl(
                dir,
                &[
                    "pkcs8",
                    "-topk8",
                    "-v2",
                    "aes-256-cbc",
                    "-in",
                    &key,
                    "-out",
                    &final_key,
                    "-passout",
                    "env:CONTINUUM_TEST_KEY_PASSWORD",
                ],
                &[("CONTINUUM_TEST_KEY_PASSWORD", pw)],
            ),
            None => std::fs::copy(dir.join(&key), dir.join(&final_key))
                .map(|_| ())
                .unwrap(),
        }
        for f in [key, csr, ext, format!("{name}.srl")] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        (dir.join(pem), dir.join(final_key))
    }
}

/// A CA of its own (not the stack's) in `dir`, made once: `foreign-ca.pem` and its key.
fn foreign_ca(dir: &Path) -> Ca {
    std::fs::create_dir_all(dir).unwrap();
    let (ca, key) = (dir.join("foreign-ca.pem"), dir.join("foreign-ca.key"));
    if !ca.is_file() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-sha256",
                "-days",
                "30",
                "-keyout",
                "foreign-ca.key",
                "-out",
                "foreign-ca.pem",
                "-subj",
                "/CN=Someone else's CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            &[],
        );
    }
    Ca { cert: ca, key }
}

/// A CA of its own (not the stack's) in `dir`, and a server certificate from it for 127.0.0.1
/// and localhost: a certificate with the right names that the stack's CA does not vouch for.
pub fn foreign_server_cert(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca = foreign_ca(dir);
    let (cert, key) = ca.issue(
        dir,
        Leaf {
            name: "foreign-server",
            cn: "localhost",
            san: Some("IP:127.0.0.1,DNS:localhost"),
            client: false,
            key_password: None,
        },
    );
    (ca.cert, cert, key)
}

/// A client certificate (CN `continuum`) and key from the CA of [`foreign_server_cert`]: one
/// the stack's brokers do not trust.
pub fn foreign_client_cert(dir: &Path) -> (PathBuf, PathBuf) {
    foreign_ca(dir).issue(
        dir,
        Leaf {
            name: "foreign-client",
            cn: "continuum",
            san: None,
            client: true,
            key_password: None,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The registry's HTTPS terminator

/// The proxies' own runtime: tests block their threads in rdkafka calls, the proxies must not
/// starve meanwhile.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tls-proxy")
            .enable_all()
            .build()
            .unwrap()
    })
}

/// What a [`TlsProxy`] saw.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Completed TLS handshakes.
    pub handshakes: AtomicU64,
    /// Connections whose handshake failed (plaintext clients, clients that refused the
    /// certificate).
    pub failed_handshakes: AtomicU64,
    /// HTTP requests with the right basic-auth credentials, and without.
    pub authorized: AtomicU64,
    pub unauthorized: AtomicU64,
    pub errors: Mutex<Vec<String>>,
}

impl ProxyStats {
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::SeqCst)
    }
    pub fn failed(&self) -> u64 {
        self.failed_handshakes.load(Ordering::SeqCst)
    }
    pub fn authorized(&self) -> u64 {
        self.authorized.load(Ordering::SeqCst)
    }
    pub fn unauthorized(&self) -> u64 {
        self.unauthorized.load(Ordering::SeqCst)
    }
}

/// Where a [`TlsProxy`] forwards: HTTP/1.1, one request per connection, only with the basic-auth
/// `user:password`; anything else is answered 401.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub user: String,
    pub password: String,
}

impl Upstream {
    /// The stack's registry at `url` (`http://IP:PORT/apis/ccompat/v7`), behind basic auth.
    pub fn registry(url: &str, user: &str, password: &str) -> Upstream {
        let hostport = url.trim_start_matches("http://").split('/').next().unwrap();
        Upstream {
            addr: hostport
                .parse()
                .unwrap_or_else(|_| panic!("registry address {url} is not http://IP:PORT/...")),
            user: user.into(),
            password: password.into(),
        }
    }
}

/// The path of the registry's API under its address (`/apis/ccompat/v7`): the terminator
/// forwards request lines as they are, so its URLs keep it.
pub fn registry_path(url: &str) -> String {
    let rest = url.trim_start_matches("http://");
    rest.find('/')
        .map_or(String::new(), |i| rest[i..].to_owned())
}

/// An HTTPS terminator with basic auth on 127.0.0.1, with the certificate and key given, in
/// front of an HTTP [`Upstream`].
pub struct TlsProxy {
    pub addr: SocketAddr,
    pub stats: Arc<ProxyStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener on 127.0.0.1 on a free port.
pub fn listener() -> StdListener {
    StdListener::bind("127.0.0.1:0").unwrap()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    listener().local_addr().unwrap().port()
}

impl TlsProxy {
    pub fn start(listener: StdListener, cert: &Path, key: &Path, upstream: Upstream) -> TlsProxy {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
        b.set_certificate_chain_file(cert).unwrap();
        b.set_private_key_file(key, SslFiletype::PEM).unwrap();
        b.check_private_key().unwrap();
        let acceptor = Arc::new(b.build());
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stats = Arc::new(ProxyStats::default());
        let _guard = runtime().enter();
        let listener = TcpListener::from_std(listener).unwrap();
        let st = stats.clone();
        let task = runtime().spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                tokio::spawn(handle(tcp, acceptor.clone(), upstream.clone(), st.clone()));
            }
        });
        TlsProxy { addr, stats, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

async fn handle(
    tcp: TcpStream,
    acceptor: Arc<SslAcceptor>,
    upstream: Upstream,
    stats: Arc<ProxyStats>,
) {
    let ssl = Ssl::new(acceptor.context()).unwrap();
    let mut tls = SslStream::new(ssl, tcp).unwrap();
    if let Err(e) = Pin::new(&mut tls).accept().await {
        // A bare EOF (the client hung up without an alert) refused nothing.
        if !(e.code() == ErrorCode::SYSCALL && e.io_error().is_none()) {
            stats.failed_handshakes.fetch_add(1, Ordering::SeqCst);
        }
        stats.errors.lock().unwrap().push(e.to_string());
        return;
    }
    stats.handshakes.fetch_add(1, Ordering::SeqCst);
    let expected = format!(
        "Basic {}",
        base64(format!("{}:{}", upstream.user, upstream.password).as_bytes())
    );
    if let Err(e) = http_one(&mut tls, upstream.addr, &expected, &stats).await {
        stats.errors.lock().unwrap().push(e.to_string());
    }
    let _ = tls.shutdown().await;
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One HTTP/1.1 request: checked for basic auth, forwarded with `Connection: close`, answered
/// with `Connection: close`.
async fn http_one<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    upstream: SocketAddr,
    expected_auth: &str,
    stats: &ProxyStats,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16384];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    let mut content_length = 0usize;
    let mut auth = None;
    for l in lines.filter(|l| !l.is_empty()) {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k.to_ascii_lowercase().as_str() {
            "content-length" => content_length = v.parse().unwrap_or(0),
            "authorization" => {
                auth = Some(v.to_owned());
                continue; // the registry behind needs none
            }
            "connection" | "keep-alive" => continue,
            "transfer-encoding" => {
                client.write_all(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
                return Ok(());
            }
            _ => {}
        }
        headers.push(format!("{k}: {v}"));
    }
    while buf.len() < head_end + content_length {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if auth.as_deref() != Some(expected_auth) {
        stats.unauthorized.fetch_add(1, Ordering::SeqCst);
        let body = r#"{"error_code":401,"message":"Unauthorized"}"#;
        client
            .write_all(
                format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"registry\"\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    .as_bytes(),
            )
            .await?;
        return client.flush().await;
    }
    stats.authorized.fetch_add(1, Ordering::SeqCst);
    let mut up = TcpStream::connect(upstream).await?;
    let mut req = format!("{request_line}\r\n");
    for h in &headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    up.write_all(req.as_bytes()).await?;
    up.write_all(&buf[head_end..head_end + content_length])
        .await?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp).await?;
    match find(&resp, b"\r\n\r\n") {
        Some(i) => {
            let head = String::from_utf8_lossy(&resp[..i]);
            let mut out = String::new();
            for l in head.split("\r\n") {
                let lower = l.to_ascii_lowercase();
                if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
                    continue;
                }
                out.push_str(l);
                out.push_str("\r\n");
            }
            out.push_str("Connection: close\r\n\r\n");
            client.write_all(out.as_bytes()).await?;
            client.write_all(&resp[i + 4..]).await?;
        }
        None => client.write_all(&resp).await?,
    }
    client.flush().await
}

pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A plain TCP forwarder from 127.0.0.2 (loopback too, but an address no certificate of the
/// stack names) to `to`, to reach a server through an address its certificate does not name.
/// It stops when dropped.
pub struct AliasForwarder {
    /// The port it listens on, at 127.0.0.2.
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl AliasForwarder {
    pub fn to(to: SocketAddr) -> AliasForwarder {
        let l = StdListener::bind("127.0.0.2:0").expect("bind 127.0.0.2 (loopback alias)");
        let port = l.local_addr().unwrap().port();
        AliasForwarder {
            port,
            task: tcp_forwarder(l, to),
        }
    }
}

impl Drop for AliasForwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A plain TCP forwarder from `listen` to `to`.
fn tcp_forwarder(listen: StdListener, to: SocketAddr) -> tokio::task::JoinHandle<()> {
    listen.set_nonblocking(true).unwrap();
    let _guard = runtime().enter();
    let l = TcpListener::from_std(listen).unwrap();
    runtime().spawn(async move {
        loop {
            let Ok((mut a, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut b) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Kafka: the stack's secured listeners

/// A site's Kafka settings as the binaries get them: `brokers`, `[sites.<site>.tls]`,
/// `[sites.<site>.sasl]`.
#[derive(Clone, Debug)]
pub struct KafkaLink {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub tls: Option<KafkaTls>,
    /// SCRAM-SHA-512 user and password.
    pub sasl: Option<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct KafkaTls {
    pub ca: PathBuf,
    pub verify_hostname: bool,
    /// Client certificate and key.
    pub client: Option<(PathBuf, PathBuf)>,
    /// The key is encrypted with this password (`ssl.key.password`).
    pub key_password: Option<String>,
}

/// How a [`World`]'s site reaches its cluster.
#[derive(Clone, Debug)]
pub enum Kafka {
    /// The SSL listener, with a client certificate from the stack's CA; its key encrypted with
    /// the password, if one is given.
    Tls { key_password: Option<String> },
    /// The SASL_SSL listener as a SCRAM-SHA-512 user (the stack's CA verifies the broker).
    Sasl { user: String, password: String },
}

/// `host:port` with the host replaced by `host` (the stack's listeners are on 127.0.0.1, whose
/// certificate names localhost too).
pub fn with_host(addr: &str, host: &str) -> String {
    let port = addr.rsplit_once(':').expect("host:port").1;
    format!("{host}:{port}")
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr} is not host:port"))
}

/// Every port of the stack's two brokers: plaintext, controller, SSL, SASL_SSL.
pub fn broker_ports() -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for site in [&stack().sf, &stack().eu] {
        let plain = port_of(&site.brokers);
        ports.extend([
            plain,
            plain + 1,
            port_of(&site.brokers_tls),
            port_of(&site.brokers_sasl),
        ]);
    }
    ports
}

/// Creates or updates SCRAM-SHA-512 user `user` with `password` on `site`'s broker, through its
/// plaintext listener (`scripts/kafka.py scram`); the password goes through a file of `dir`.
pub fn create_scram_user(site: &Site, dir: &Path, user: &str, password: &str) {
    let file = dir.join(format!("scram-{user}"));
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let python = std::env::var("STACK_PYTHON").unwrap_or_else(|_| panic!("STACK_PYTHON: {HINT}"));
    let out = Command::new(&python)
        .arg(workspace_root().join("scripts/kafka.py"))
        .args(["scram", &site.brokers, user])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "kafka.py scram {} {user} failed: {}",
        site.name,
        output_text(&out)
    );
}

/// Deletes SCRAM-SHA-512 user `user` on `site`'s broker (a user one test made).
pub fn delete_scram_user(site: &Site, user: &str) {
    stack_python(
        r#"
import sys
from confluent_kafka.admin import AdminClient, ScramMechanism, UserScramCredentialDeletion
a = AdminClient({"bootstrap.servers": sys.argv[1]})
d = UserScramCredentialDeletion(sys.argv[2], ScramMechanism.SCRAM_SHA_512)
for f in a.alter_user_scram_credentials([d], request_timeout=10).values():
    f.result()
"#,
        &[&site.brokers, user],
    );
}

/// The records partition 0 of `topic` holds on `site`'s cluster (read through its plaintext
/// listener), `None` if there is no such topic.
pub fn records_in(site: &Site, topic: &str) -> Option<i64> {
    let cfg = site.kafka_config("tls-suite-check");
    let partitions =
        continuum_common::kafka::topic_partitions(&cfg, topic, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{} cluster: metadata of {topic}: {e}", site.name));
    partitions?;
    let (low, high) =
        continuum_common::kafka::fetch_watermarks(&cfg, topic, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{} cluster: watermarks of {topic}: {e}", site.name));
    Some(high - low)
}

/// The ports of 127.0.0.1 that process `pid` has established TCP connections to (from /proc:
/// its socket inodes, matched in /proc/net/tcp).
pub fn loopback_peer_ports(pid: u32) -> BTreeSet<u16> {
    let mut inodes = BTreeSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if let Some(i) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.extend(i.parse::<u64>().ok());
            }
        }
    }
    let mut ports = BTreeSet::new();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        if f.len() < 10 || f[3] != "01" {
            continue;
        }
        let inode: u64 = f[9].parse().unwrap_or(0);
        let Some((ip, port)) = f[2].split_once(':') else {
            continue;
        };
        if inodes.contains(&inode) && ip == "0100007F" {
            ports.extend(u16::from_str_radix(port, 16).ok());
        }
    }
    ports
}

/// Waits (bounded) until the ports of the stack's brokers that `p` holds connections to are
/// exactly those of `expected` (`host:port` addresses).
pub fn assert_broker_connections(p: &Proc, expected: &[&str]) {
    let expected: BTreeSet<u16> = expected.iter().map(|a| port_of(a)).collect();
    let pid = p
        .pid()
        .unwrap_or_else(|| panic!("{} is not running", p.name));
    let brokers = broker_ports();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now: BTreeSet<u16> = loopback_peer_ports(pid)
            .intersection(&brokers)
            .copied()
            .collect();
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: connections to the brokers' ports {now:?}, expected {expected:?} (the brokers' ports: {brokers:?})",
            p.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------
// MariaDB over TLS

/// Options for a plaintext connection.
pub fn db_plain_opts(host: &str, port: u16, user: &str, password: &str) -> mysql_async::Opts {
    OptsBuilder::default()
        .ip_or_hostname(host.to_owned())
        .tcp_port(port)
        .user(Some(user.to_owned()))
        .pass(Some(password.to_owned()))
        .prefer_socket(false)
        .into()
}

/// The session's TLS version (`Ssl_version`), empty when the session is plaintext.
pub async fn ssl_version(c: &mut Conn) -> String {
    let r: Option<(String, String)> = c
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_version'")
        .await
        .unwrap();
    r.map(|(_, v)| v).unwrap_or_default()
}

/// The grants each binary needs (docs/security.md), for a user the suites create.
pub const PIPELINE_GRANTS: &[&str] = &[
    "REPLICATION SLAVE, BINLOG MONITOR, REPLICATION MASTER ADMIN ON *.*",
    "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, REFERENCES, CREATE VIEW, SHOW VIEW, READ_ONLY ADMIN ON *.*",
];

/// Creates `user@127.0.0.1` with `password` on both sites, REQUIRE SSL, with the pipeline's
/// grants; kept out of the binlog.
/// (Account statements take no placeholders: names and password must be `[A-Za-z0-9_]`.)
pub async fn create_pipeline_user(user: &str, password: &str) {
    let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    assert!(
        plain(user) && plain(password),
        "user and password must be [A-Za-z0-9_]"
    );
    let account = format!("'{user}'@'127.0.0.1'");
    let create = format!("CREATE OR REPLACE USER {account} IDENTIFIED BY '{password}' REQUIRE SSL");
    let grants = PIPELINE_GRANTS
        .iter()
        .map(|g| format!("GRANT {g} TO {account}"));
    exec_on_both_unlogged(std::iter::once(create).chain(grants).collect()).await;
}

/// Runs `statements` in order at SF, then at EU, each site's out of its binlog.
pub async fn exec_on_both_unlogged(statements: Vec<String>) {
    for site in [&stack().sf, &stack().eu] {
        let mut c = site.admin_conn().await;
        let unlogged = std::iter::once("SET SESSION sql_log_bin=0".to_owned());
        exec_all(&mut c, unlogged.chain(statements.iter().cloned())).await;
    }
}

pub async fn drop_user(user: &str) {
    exec_on_both_unlogged(vec![format!("DROP USER IF EXISTS '{user}'@'127.0.0.1'")]).await;
}

// ---------------------------------------------------------------------------------------------
// The binaries

/// `target/debug/<name>`, refusing a binary older than the sources it is built from: the suites
/// run the real binaries, and a stale one would test old code. `make test` builds them first.
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let bin = target.join("debug").join(name);
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is not built: run `cargo build --workspace --bins` first",
                bin.display()
            )
        });
    fn newest(dir: &Path, t: &mut SystemTime) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                newest(&p, t);
            } else if p.extension().is_some_and(|x| x == "rs")
                // `tests.rs`: a `#[cfg(test)]` module, not part of the binary.
                && p.file_name().is_some_and(|n| n != "tests.rs")
            {
                if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                    *t = (*t).max(m);
                }
            }
        }
    }
    let mut src = SystemTime::UNIX_EPOCH;
    // Only the crates this binary is built from: a newer file elsewhere does not relink it.
    let own = if name.contains("producer") {
        "producer/src"
    } else {
        "consumer/src"
    };
    for d in ["common/src", "schemas/src", own] {
        newest(&workspace_root().join(d), &mut src);
    }
    assert!(
        built >= src,
        "{} is older than its sources: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

/// A command for a binary with none of the caller's `CONTINUUM_*` variables: the config file
/// and the variables given are all it gets.
pub fn command(name: &str) -> Command {
    let mut c = Command::new(binary(name));
    for (k, _) in std::env::vars() {
        if k.starts_with("CONTINUUM_") {
            c.env_remove(k);
        }
    }
    c.current_dir(workspace_root());
    c
}

/// A background process of the pipeline, its output in a log file; stopped with SIGTERM (by
/// PID) when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
    /// Where it serves /metrics and /health, if it does.
    pub metrics_port: Option<u16>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
            metrics_port: None,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits at most `timeout` for the process to exit by itself; its status, or `None` if it
    /// still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.child.as_mut()?;
            if let Some(st) = c.try_wait().unwrap() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the log contains `needle`; panics with the log if the process exits first or
    /// `timeout` passes.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(needle) {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "{} did not log '{needle}' within {timeout:?}; its log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("{} exited ({st}); its log:\n{}", self.name, self.log_text());
        }
    }

    /// SIGTERM, then SIGKILL after 30 s; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// Both sites, secured

/// How the processes get their secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretsVia {
    /// `*_file` settings in the config file.
    Files,
    /// `CONTINUUM_*` environment variables; the config file names no secret.
    Env,
}

#[derive(Clone, Debug)]
pub struct Options {
    /// The MariaDB login of the binaries (on both sites), which must REQUIRE SSL.
    pub db_user: String,
    pub db_password: String,
    /// How each site reaches its cluster.
    pub sf_kafka: Kafka,
    pub eu_kafka: Kafka,
    /// Basic-auth password of user `continuum` on both registries.
    pub registry_password: String,
    /// librdkafka's own `debug` contexts (`kafka_options.debug`), e.g. `security,broker`.
    pub kafka_debug: Option<String>,
}

/// One site's secured endpoints.
pub struct SecureSite {
    pub name: &'static str,
    /// What the binaries are given for this site's cluster; a test may change it.
    pub kafka: KafkaLink,
    pub registry: TlsProxy,
    pub registry_url: String,
    /// The host name the binaries use for this site's MariaDB (a name the certificate has).
    pub db_host: &'static str,
    pub db_port: u16,
}

pub struct World {
    pub dir: PathBuf,
    /// `server_id` of this world's SF producer (its EU one is the next): unique per world, so
    /// that worlds of one test process may run at once.
    pub server_id: u32,
    pub opts: Options,
    pub tls: StackTls,
    pub sf: SecureSite,
    pub eu: SecureSite,
    /// The unique part of every name this world uses (databases, topics).
    pub prefix: String,
    pub sf_topic: String,
    pub eu_topic: String,
}

impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl World {
    pub fn start(name: &str, opts: Options) -> World {
        let tls = StackTls::get();
        let prefix = unique_name(name);
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).unwrap();
        let s = stack();
        // SF's cluster by address (the certificate's IP SAN), EU's by name (its DNS SAN).
        let kafka = |site: &Site, host: &str, k: &Kafka| match k {
            Kafka::Tls { key_password } => {
                let client = match key_password {
                    Some(pw) => tls.authority().issue(
                        &dir,
                        Leaf {
                            name: &format!("{}-client", site.name),
                            cn: "continuum",
                            san: None,
                            client: true,
                            key_password: Some(pw),
                        },
                    ),
                    None => (tls.client_cert(), tls.client_key()),
                };
                KafkaLink {
                    brokers: with_host(&site.brokers_tls, host),
                    tls: Some(KafkaTls {
                        ca: tls.ca(),
                        verify_hostname: true,
                        client: Some(client),
                        key_password: key_password.clone(),
                    }),
                    sasl: None,
                }
            }
            Kafka::Sasl { user, password } => KafkaLink {
                brokers: with_host(&site.brokers_sasl, host),
                tls: Some(KafkaTls {
                    ca: tls.ca(),
                    verify_hostname: true,
                    client: None,
                    key_password: None,
                }),
                sasl: Some((user.clone(), password.clone())),
            },
        };
        let site = |site: &Site, kafka: KafkaLink, db_host: &'static str| {
            let registry = TlsProxy::start(
                listener(),
                &tls.server_cert(),
                &tls.server_key(),
                Upstream::registry(&site.registry, "continuum", &opts.registry_password),
            );
            SecureSite {
                name: site.name,
                kafka,
                // The registry by name (DNS SAN).
                registry_url: format!(
                    "https://localhost:{}{}",
                    registry.port(),
                    registry_path(&site.registry)
                ),
                registry,
                db_host,
                db_port: site.db_port,
            }
        };
        let sf = site(
            &s.sf,
            kafka(&s.sf, "127.0.0.1", &opts.sf_kafka),
            "127.0.0.1",
        );
        let eu = site(
            &s.eu,
            kafka(&s.eu, "localhost", &opts.eu_kafka),
            "localhost",
        );
        static WORLDS: AtomicU64 = AtomicU64::new(0);
        let n = WORLDS.fetch_add(1, Ordering::Relaxed) as u32;
        World {
            server_id: 20_000 + (std::process::id() * 16 + n * 2) % 20_000,
            sf_topic: format!("{prefix}.sf.cdc"),
            eu_topic: format!("{prefix}.eu.cdc"),
            dir,
            opts,
            tls,
            sf,
            eu,
            prefix,
        }
    }

    pub fn site(&self, name: &str) -> &SecureSite {
        match name {
            "sf" => &self.sf,
            "eu" => &self.eu,
            _ => panic!("no site {name}"),
        }
    }

    pub fn site_mut(&mut self, name: &str) -> &mut SecureSite {
        match name {
            "sf" => &mut self.sf,
            "eu" => &mut self.eu,
            _ => panic!("no site {name}"),
        }
    }

    /// The databases this world's producer captures: `<prefix>_*`.
    pub fn database(&self, n: usize) -> String {
        format!("{}_{n}", self.prefix)
    }

    fn secret_file(&self, name: &str, value: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        p
    }

    /// The config file of `site`'s processes, and the environment that goes with it.
    pub fn config(
        &self,
        site: &str,
        via: SecretsVia,
        metrics: (u16, u16),
    ) -> (PathBuf, Vec<(String, String)>) {
        let o = &self.opts;
        let mut env = Vec::new();
        // `key = "<file_name in dir, holding value>"`, or (SecretsVia::Env) nothing, and `value`
        // in the environment as `var`.
        let mut secret = |key: &str, file_name: &str, value: &str, var: String| -> String {
            match via {
                SecretsVia::Files => format!(
                    "{key} = \"{}\"\n",
                    self.secret_file(file_name, value).display()
                ),
                SecretsVia::Env => {
                    env.push((var, value.to_owned()));
                    String::new()
                }
            }
        };
        let me = self.site(site);
        let mut t = format!(
            "site = \"{site}\"\n\n[database]\nhost = \"{}\"\nport = {}\nuser = \"{}\"\n",
            me.db_host, me.db_port, o.db_user
        );
        t += &secret(
            "password_file",
            "db-password",
            &o.db_password,
            "CONTINUUM_DB_PASSWORD".into(),
        );
        t += &format!(
            "[database.tls]\nca_file = \"{}\"\nverify_hostname = true\n\n",
            self.tls.ca().display()
        );
        for s in [&self.sf, &self.eu] {
            let up = s.name.to_uppercase();
            let topic = if s.name == "sf" {
                &self.sf_topic
            } else {
                &self.eu_topic
            };
            t += &format!(
                "[sites.{}]\nbrokers = \"{}\"\ntopic = \"{topic}\"\n",
                s.name, s.kafka.brokers
            );
            t += &format!(
                "[sites.{}.registry]\nurl = \"{}\"\nusername = \"continuum\"\nca_file = \"{}\"\n",
                s.name,
                s.registry_url,
                self.tls.ca().display()
            );
            t += &secret(
                "password_file",
                &format!("{}-registry-password", s.name),
                &o.registry_password,
                format!("CONTINUUM_{up}_REGISTRY_PASSWORD"),
            );
            if let Some(k) = &s.kafka.tls {
                t += &format!(
                    "[sites.{}.tls]\nca_file = \"{}\"\nverify_hostname = {}\n",
                    s.name,
                    k.ca.display(),
                    k.verify_hostname
                );
                if let Some((cert, key)) = &k.client {
                    t += &format!(
                        "cert_file = \"{}\"\nkey_file = \"{}\"\n",
                        cert.display(),
                        key.display()
                    );
                }
                if let Some(pw) = &k.key_password {
                    t += &secret(
                        "key_password_file",
                        &format!("{}-key-password", s.name),
                        pw,
                        format!("CONTINUUM_{up}_TLS_KEY_PASSWORD"),
                    );
                }
            }
            if let Some((user, pw)) = &s.kafka.sasl {
                t += &format!(
                    "[sites.{}.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"{user}\"\n",
                    s.name
                );
                t += &secret(
                    "password_file",
                    &format!("{}-sasl-password", s.name),
                    pw,
                    format!("CONTINUUM_{up}_SASL_PASSWORD"),
                );
            }
            if let Some(d) = &o.kafka_debug {
                t += &format!("[sites.{}.kafka_options]\ndebug = \"{d}\"\n", s.name);
            }
            if s.name != site {
                t += &format!(
                    "[sites.{}.database]\nhost = \"{}\"\nport = {}\nuser = \"{}\"\n",
                    s.name, s.db_host, s.db_port, o.db_user
                );
                t += &secret(
                    "password_file",
                    &format!("{}-db-password", s.name),
                    &o.db_password,
                    format!("CONTINUUM_{up}_DB_PASSWORD"),
                );
                t += &format!(
                    "[sites.{}.database.tls]\nca_file = \"{}\"\n",
                    s.name,
                    self.tls.ca().display()
                );
            }
            t += "\n";
        }
        let server_id = self.server_id + if site == "sf" { 0 } else { 1 };
        t += &format!(
            "[producer]\nserver_id = {server_id}\ninclude = [\"{}_*.*\"]\nheartbeat_interval = \"300ms\"\nmetrics_listen = \"127.0.0.1:{}\"\nmax_retry_delay = \"1s\"\n\n",
            self.prefix, metrics.0
        );
        t += &format!("[consumer]\nmetrics_listen = \"127.0.0.1:{}\"\n[consumer.apply]\nmax_retry_delay = \"1s\"\n[consumer.mirror]\nmax_retry_delay = \"1s\"\n", metrics.1);
        let path = self.dir.join(format!("{site}-{via:?}.toml").to_lowercase());
        std::fs::write(&path, t).unwrap();
        (path, env)
    }

    /// A log file of its own for a process of this world.
    fn log_file(&self, what: &str, site: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{site}-{what}-{n}.log"))
    }

    /// Starts `continuum-producer` for `site`, logging at `log` level.
    pub fn producer(&self, site: &str, via: SecretsVia, log_level: &str) -> Proc {
        let ports = (free_port(), free_port());
        let (cfg, env) = self.config(site, via, ports);
        let mut c = command("continuum-producer");
        c.arg("--config")
            .arg(&cfg)
            .args(["--log", log_level])
            .envs(env);
        let mut p = Proc::spawn(
            &format!("{site}-producer"),
            c,
            &self.log_file("producer", site),
        );
        p.metrics_port = Some(ports.0);
        p
    }

    /// Starts `continuum-consumer run` for `site`.
    pub fn consumer_run(&self, site: &str, via: SecretsVia, log_level: &str) -> Proc {
        self.consumer("run", site, via, log_level)
    }

    /// Starts `continuum-consumer <verb>` (`run`, `mirror`, `apply`) for `site`.
    pub fn consumer(&self, verb: &str, site: &str, via: SecretsVia, log_level: &str) -> Proc {
        let ports = (free_port(), free_port());
        let (cfg, env) = self.config(site, via, ports);
        let mut c = command("continuum-consumer");
        c.arg("--config")
            .arg(&cfg)
            .args(["--log", log_level, verb])
            .envs(env);
        let mut p = Proc::spawn(
            &format!("{site}-consumer-{verb}"),
            c,
            &self.log_file(&format!("consumer-{verb}"), site),
        );
        p.metrics_port = Some(ports.1);
        p
    }

    /// Runs a consumer verb at `site` to completion.
    pub fn consumer_verb(&self, site: &str, via: SecretsVia, args: &[&str]) -> Output {
        let (cfg, env) = self.config(site, via, (free_port(), free_port()));
        command("continuum-consumer")
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .envs(env)
            .output()
            .unwrap()
    }
}

/// Waits until `sql` returns the same rows on EU as on SF (both read by admin), at most
/// `timeout`; panics with both sides and the processes' logs otherwise.
pub async fn wait_replicated(
    sql: &str,
    timeout: Duration,
    procs: &mut [&mut Proc],
) -> Vec<mysql_async::Row> {
    let deadline = Instant::now() + timeout;
    let mut sf = stack().sf.admin_conn().await;
    let mut eu = stack().eu.admin_conn().await;
    loop {
        let want: Vec<Vec<Option<String>>> = rows_as_text(&mut sf, sql).await.unwrap();
        let got = rows_as_text(&mut eu, sql).await;
        if got.as_ref().is_ok_and(|g| *g == want) {
            return sf.query(sql).await.unwrap();
        }
        for p in procs.iter_mut() {
            p.assert_running();
        }
        if Instant::now() > deadline {
            let logs: String = procs
                .iter()
                .map(|p| format!("--- {} ---\n{}\n", p.name, p.log_text()))
                .collect();
            panic!("EU did not catch up within {timeout:?} on `{sql}`:\nSF: {want:?}\nEU: {got:?}\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn rows_as_text(
    c: &mut Conn,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, mysql_async::Error> {
    let rows: Vec<mysql_async::Row> = c.query(sql).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.as_ref(i) {
                    Some(mysql_async::Value::NULL) | None => None,
                    Some(v) => Some(v.as_sql(true)),
                })
                .collect()
        })
        .collect())
}

/// Creates `db` with table `t` on SF, through the binlog: start the producer first, and the
/// pipeline creates them at EU.
pub async fn create_table_sf(db: &str) {
    let table = "t (id INT PRIMARY KEY, v VARCHAR(64), n DECIMAL(12,2))";
    exec_at_sf([
        format!("CREATE DATABASE `{db}`"),
        format!("CREATE TABLE `{db}`.{table}"),
    ])
    .await;
}

/// Runs `statements` in order at SF, as its admin, through the binlog.
pub async fn exec_at_sf<S: AsRef<str>>(statements: impl IntoIterator<Item = S>) {
    exec_all(&mut stack().sf.admin_conn().await, statements).await;
}

/// Drops `db` on both sites, out of the binlog (the pipeline is stopped by then).
pub async fn drop_database_both(db: &str) {
    exec_on_both_unlogged(vec![format!("DROP DATABASE IF EXISTS `{db}`")]).await;
}

/// Transactions `from..from + n` on SF's `db`.t, several rows each, an update and a delete
/// among them.
pub async fn write_transactions(db: &str, from: usize, n: usize) {
    let mut c = stack().sf.admin_conn().await;
    for i in from..from + n {
        let base = (i * 10) as i32;
        let mut tx = c
            .start_transaction(mysql_async::TxOpts::default())
            .await
            .unwrap();
        for j in 0..3 {
            tx.exec_drop(
                format!("INSERT INTO `{db}`.t (id, v, n) VALUES (?, ?, ?)"),
                (base + j, format!("row {i}/{j} é"), format!("{i}.{j}5")),
            )
            .await
            .unwrap();
        }
        tx.exec_drop(
            format!("UPDATE `{db}`.t SET v = CONCAT(v, ' updated') WHERE id = ?"),
            (base,),
        )
        .await
        .unwrap();
        tx.exec_drop(format!("DELETE FROM `{db}`.t WHERE id = ?"), (base + 2,))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

/// `GET path` from 127.0.0.1:`port` (plain HTTP/1.0): status line, headers and body.
pub async fn http_get(port: u16, path: &str) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    c.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
