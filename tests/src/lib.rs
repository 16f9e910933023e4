//! Helpers for the suites that run against the local two-site stack (`make up`, `.stack/env`).
//!
//! - [`stack`] reads the stack's addresses and logins from the environment that `.stack/env`
//!   exports, and panics with what to do when they are missing;
//! - [`Site`] opens admin and `continuum` MariaDB connections and builds rdkafka client configs;
//! - [`unique_name`] gives every test its own topics and databases;
//! - [`wait_for`] and [`wait_for_blocking`] poll a condition until a deadline, never sleeping blindly;
//! - [`stack_cmd`] starts, stops or kills one part of the stack (`scripts/stack.sh`), for the
//!   suites that restart servers. Those suites must run alone (`--test-threads=1`, after the
//!   others): see the Makefile.

pub mod check;
pub mod process;
pub mod site;
pub mod workload;

pub use site::TestSite;

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const HINT: &str = "run `make test`, or `make up` and `. .stack/env` first";

/// The stack's MariaDB TLS as TOML for a `[database]` section of a site config:
/// `tls = { ca_file = "<STACK_TLS_CA>" }`, or nothing for a stack without TLS.
pub fn stack_tls_toml() -> String {
    match std::env::var("STACK_TLS_CA").ok().filter(|v| !v.is_empty()) {
        Some(ca) => format!("tls = {{ ca_file = \"{ca}\" }}"),
        None => String::new(),
    }
}

/// TLS to the stack's MariaDB servers, trusting only the stack's CA (`STACK_TLS_CA` in
/// `.stack/env`) and verifying the host name, as the `continuum` users require
/// (`scripts/stack.sh`, "TLS"). `None` for a stack without TLS.
pub fn stack_ssl() -> Option<mysql_async::SslOpts> {
    let ca = std::env::var("STACK_TLS_CA")
        .ok()
        .filter(|v| !v.is_empty())?;
    Some(continuum_common::db::ssl_opts(
        &continuum_common::config::DbTlsConfig {
            ca_file: PathBuf::from(ca),
            verify_hostname: true,
        },
    ))
}

/// Connection options for `user` at `host:port`, always over TCP (the grants under test are
/// those of user@127.0.0.1, never the socket's), with the stack's TLS ([`stack_ssl`]).
pub fn tcp_login(host: &str, port: u16, user: &str, password: &str) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false)
        .ssl_opts(stack_ssl())
}

/// One site of the local stack, as `.stack/env` describes it.
#[derive(Clone, Debug)]
pub struct Site {
    /// `sf` or `eu`.
    pub name: &'static str,
    pub db_host: String,
    pub db_port: u16,
    /// The least-privilege `continuum` login the binaries use.
    pub db_user: String,
    pub db_password: String,
    /// An administrative login over TCP (root on the local stack).
    pub db_admin_user: String,
    pub db_admin_password: String,
    /// `bootstrap.servers` of the site's Kafka cluster (its plaintext listener).
    pub brokers: String,
    /// The same broker's TLS listener (a client certificate from the stack's CA is required).
    pub brokers_tls: String,
    /// The same broker's SASL_SSL listener (SCRAM-SHA-512, see [`Stack::kafka_sasl`]).
    pub brokers_sasl: String,
    /// Base URL of the site's schema registry.
    pub registry: String,
}

/// Both sites.
#[derive(Clone, Debug)]
pub struct Stack {
    pub sf: Site,
    pub eu: Site,
    /// The SCRAM-SHA-512 user and password of both brokers' SASL_SSL listeners.
    pub kafka_sasl: (String, String),
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {HINT}"))
}

impl Site {
    fn from_env(name: &'static str) -> Site {
        let p = name.to_uppercase();
        let port = var(&format!("{p}_DB_PORT"));
        Site {
            name,
            db_host: var(&format!("{p}_DB_HOST")),
            db_port: port
                .parse()
                .unwrap_or_else(|_| panic!("{p}_DB_PORT is not a port number: {port:?}")),
            db_user: var(&format!("{p}_DB_USER")),
            db_password: var(&format!("{p}_DB_PASSWORD")),
            db_admin_user: var(&format!("{p}_DB_ADMIN_USER")),
            db_admin_password: var(&format!("{p}_DB_ADMIN_PASSWORD")),
            brokers: var(&format!("{p}_BROKERS")),
            brokers_tls: var(&format!("{p}_BROKERS_TLS")),
            brokers_sasl: var(&format!("{p}_BROKERS_SASL")),
            registry: var(&format!("{p}_REGISTRY"))
                .trim_end_matches('/')
                .to_owned(),
        }
    }

    /// The stack part names of this site, for [`stack_cmd`].
    pub fn db_part(&self) -> String {
        format!("{}-db", self.name)
    }
    pub fn broker_part(&self) -> String {
        format!("{}-broker", self.name)
    }
    pub fn registry_part(&self) -> String {
        format!("{}-registry", self.name)
    }

    fn db_opts(&self, user: &str, password: &str, db: Option<&str>) -> Opts {
        tcp_login(&self.db_host, self.db_port, user, password)
            .db_name(db)
            .into()
    }

    /// Connection options for the administrative login.
    pub fn admin_opts(&self) -> Opts {
        self.db_opts(&self.db_admin_user, &self.db_admin_password, None)
    }

    /// Connection options for the `continuum` login, optionally with a default database.
    pub fn continuum_opts(&self, db: Option<&str>) -> Opts {
        self.db_opts(&self.db_user, &self.db_password, db)
    }

    /// An administrative connection (root over TCP).
    pub async fn admin_conn(&self) -> Conn {
        Conn::new(self.admin_opts()).await.unwrap_or_else(|e| {
            panic!(
                "{} MariaDB admin login at {}:{}: {e}; {HINT}",
                self.name, self.db_host, self.db_port
            )
        })
    }

    /// A connection as the `continuum` user.
    pub async fn continuum_conn(&self, db: Option<&str>) -> Conn {
        Conn::new(self.continuum_opts(db))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{} MariaDB login {} at {}:{}: {e}; {HINT}",
                    self.name, self.db_user, self.db_host, self.db_port
                )
            })
    }

    /// Waits (bounded) until the server accepts an admin login and answers a query, e.g.
    /// after a restart.
    pub async fn wait_db_ready(&self, timeout: Duration) -> Conn {
        let what = format!(
            "{} MariaDB at {}:{} to accept connections",
            self.name, self.db_host, self.db_port
        );
        wait_for(&what, timeout, || async {
            let mut c = Conn::new(self.admin_opts()).await.ok()?;
            c.query_drop("SELECT 1").await.ok()?;
            Some(c)
        })
        .await
    }

    /// Creates a database for one test (see [`unique_name`]) and returns its name.
    pub async fn create_database(&self, prefix: &str) -> String {
        let db = unique_name(prefix);
        let mut c = self.admin_conn().await;
        c.query_drop(format!("CREATE DATABASE `{db}`"))
            .await
            .expect("CREATE DATABASE");
        db
    }

    /// Plain client settings for the site's cluster.
    pub fn kafka_config(&self, client_id: &str) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            .set("socket.timeout.ms", "10000");
        cfg
    }

    /// An idempotent producer's settings, as the pipeline uses them (`enable.idempotence`,
    /// `acks=all`, lz4).
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut cfg = self.kafka_config(client_id);
        cfg.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        cfg
    }

    /// A consumer that is assigned partitions and reads from explicit offsets; it never
    /// commits (its group id is unique, only because librdkafka wants one).
    pub fn consumer_config(&self, client_id: &str) -> ClientConfig {
        let mut cfg = self.kafka_config(client_id);
        cfg.set("group.id", unique_name("group"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false");
        cfg
    }

    /// Creates a topic (replication factor 1, the local clusters have one broker each) that
    /// keeps its records whatever their age (`retention.ms=-1`): suites write records with fixed
    /// timestamps from the past, which Kafka's default retention (7 days) would delete at once.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        self.create_topic_with(topic, partitions, &[]).await
    }

    /// [`Site::create_topic`] with topic settings of its own (`max.message.bytes`, ...).
    pub async fn create_topic_with(&self, topic: &str, partitions: i32, settings: &[(&str, &str)]) {
        let admin: AdminClient<DefaultClientContext> = self
            .kafka_config("test-admin")
            .create()
            .expect("admin client");
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let res = admin
            .create_topics(
                &[settings.iter().fold(
                    NewTopic::new(topic, partitions, TopicReplication::Fixed(1))
                        .set("retention.ms", "-1"),
                    |t, (k, v)| t.set(k, v),
                )],
                &opts,
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{} cluster {}: CreateTopics {topic}: {e}",
                    self.name, self.brokers
                )
            });
        for r in res {
            r.unwrap_or_else(|(t, e)| panic!("{} cluster: creating topic {t}: {e}", self.name));
        }
    }

    /// Reads `count` records of partition 0 of `topic`, starting at `offset`, in offset order,
    /// waiting at most `timeout` for them. Panics (saying what came back) if fewer arrive.
    pub fn read_from(
        &self,
        topic: &str,
        offset: i64,
        count: usize,
        timeout: Duration,
    ) -> Vec<OwnedMessage> {
        let consumer: BaseConsumer = self
            .consumer_config("test-read")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
            .expect("partition list");
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "{} cluster: read {} of {count} records of {topic} from offset {offset} within {timeout:?} (offsets {:?})",
                    self.name,
                    out.len(),
                    out.iter().map(|m: &OwnedMessage| m.offset()).collect::<Vec<_>>()
                );
            }
            match consumer.poll(left.min(Duration::from_millis(500))) {
                Some(Ok(m)) => out.push(m.detach()),
                Some(Err(e)) => panic!(
                    "{} cluster: reading {topic} from offset {offset}: {e}",
                    self.name
                ),
                None => {}
            }
        }
        out
    }

    /// Waits (bounded) until the cluster answers metadata and ListOffsets for `topic`, e.g.
    /// after a broker restart. Returns the (low, high) watermarks.
    pub fn wait_topic_ready(&self, topic: &str, timeout: Duration) -> (i64, i64) {
        let consumer: BaseConsumer = self
            .consumer_config("wait-ready")
            .create()
            .expect("consumer");
        let what = format!(
            "{} broker {} to serve topic {topic}",
            self.name, self.brokers
        );
        wait_for_blocking(&what, timeout, || {
            consumer
                .fetch_watermarks(topic, 0, Duration::from_secs(2))
                .ok()
        })
    }
}

/// The stack described by the environment (`.stack/env`). Panics, saying what to do, when a
/// variable is missing.
pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| Stack {
        sf: Site::from_env("sf"),
        eu: Site::from_env("eu"),
        kafka_sasl: (
            var("STACK_KAFKA_SASL_USER"),
            var("STACK_KAFKA_SASL_PASSWORD"),
        ),
    })
}

/// A name no other test (in this run or an earlier one) uses, valid as a topic, a database
/// and a subject prefix: `t_<prefix>_<time>_<pid>_<n>`, at most 64 characters.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!(
        "t_{prefix}_{ms}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn interval(attempt: u32) -> Duration {
    // 20 ms, doubling, at most 500 ms between attempts.
    Duration::from_millis((20u64 << attempt.min(5)).min(500))
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what` was awaited.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut attempt = 0;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        let now = Instant::now();
        if now >= deadline {
            panic!("gave up waiting for {what} after {timeout:?}");
        }
        tokio::time::sleep(interval(attempt).min(deadline - now)).await;
        attempt += 1;
    }
}

/// [`wait_for`] for blocking checks (rdkafka's base clients, files, processes).
pub fn wait_for_blocking<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut attempt = 0;
    loop {
        if let Some(v) = check() {
            return v;
        }
        let now = Instant::now();
        if now >= deadline {
            panic!("gave up waiting for {what} after {timeout:?}");
        }
        std::thread::sleep(interval(attempt).min(deadline - now));
        attempt += 1;
    }
}

/// The workspace root (where the Makefile and `scripts/` are).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs `scripts/stack.sh <cmd> <part>` (cmd: `start`, `stop` or `kill`) with the environment
/// of `.stack/env`, and panics with the script's output if it fails. `start` returns once the
/// part is healthy (the script waits, bounded).
pub fn stack_cmd(cmd: &str, part: &str) -> String {
    stack_cmd_result(cmd, part).unwrap_or_else(|e| panic!("{e}"))
}

/// [`stack_cmd`] that returns the failure (with the script's output) instead of panicking,
/// for tests that expect a refusal.
pub fn stack_cmd_result(cmd: &str, part: &str) -> Result<String, String> {
    assert!(
        matches!(cmd, "start" | "stop" | "kill"),
        "stack_cmd: unknown command {cmd}"
    );
    // Fail here, with the hint, rather than inside the script with another stack's defaults.
    let _ = stack();
    let script = workspace_root().join("scripts/stack.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(cmd)
        .arg(part)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "scripts/stack.sh {cmd} {part} failed ({}):\n{text}",
            out.status
        ))
    }
}

/// Runs `script` (Python source) on the stack's Python, the venv with confluent-kafka that
/// `make tools` makes (`STACK_PYTHON` in `.stack/env`), with `args`, and returns its standard
/// output. Panics with both outputs if it fails: for checks made with a stock Kafka client.
pub fn stack_python(script: &str, args: &[&str]) -> String {
    let python = var("STACK_PYTHON");
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{python} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Restarts one part: `stop` (graceful) or `kill` (SIGKILL), then `start`, which waits until
/// it is healthy again.
pub fn restart_part(part: &str, how: &str) {
    assert!(
        matches!(how, "stop" | "kill"),
        "restart_part: how is stop or kill, not {how}"
    );
    stack_cmd(how, part);
    stack_cmd("start", part);
}

/// The port of SF's producer's `/metrics` and `/health` (`producer.metrics_listen` in
/// config/sf.toml, which scripts/pipeline.sh and `make run` use).
pub const SF_PRODUCER_HTTP_PORT: u16 = 9101;

/// The body of `GET /health` on 127.0.0.1:`port`, or `None` while nothing answers there.
fn health(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    c.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Waits until SF's producer streams the binlog (its `/health` says "streaming from"): its
/// start position is fixed, so a table created from now on reaches the topic through the
/// binlog, never through the first incremental snapshot (whose tables are partial on the
/// replica until it ends).
pub fn wait_sf_producer_streaming(timeout: Duration) {
    wait_for_blocking(
        &format!("SF's producer to stream (its /health on 127.0.0.1:{SF_PRODUCER_HTTP_PORT})"),
        timeout,
        || {
            health(SF_PRODUCER_HTTP_PORT)?
                .contains("streaming from")
                .then_some(())
        },
    );
}
