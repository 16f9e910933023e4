//! Helpers for the producer suites: the local stack's addresses (from `.stack/env`), a config
//! file per test, the producer binary as a child process, and reading a topic back.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use continuum_common::kafka::FetchedRecord;
use mysql_async::prelude::Queryable;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub use continuum_tests::{unique_name, wait_for, TestSite};

pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `make test`, or `make up` and `. .stack/env` first")
    })
}

pub struct Stack {
    pub db_host: String,
    pub db_port: u16,
    pub db_user: String,
    pub db_password: String,
    pub admin_user: String,
    pub admin_password: String,
    pub brokers: String,
    pub registry: String,
    pub eu_brokers: String,
    pub eu_registry: String,
}

pub fn stack() -> Stack {
    Stack {
        db_host: var("SF_DB_HOST"),
        db_port: var("SF_DB_PORT").parse().unwrap(),
        db_user: var("SF_DB_USER"),
        db_password: var("SF_DB_PASSWORD"),
        admin_user: var("SF_DB_ADMIN_USER"),
        admin_password: std::env::var("SF_DB_ADMIN_PASSWORD").unwrap_or_default(),
        brokers: var("SF_BROKERS"),
        registry: var("SF_REGISTRY"),
        eu_brokers: var("EU_BROKERS"),
        eu_registry: var("EU_REGISTRY"),
    }
}

/// A replica server id no concurrently running test uses.
pub fn server_id() -> u32 {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u32;
    10_000 + (n % 1_000_000_000)
}

pub async fn admin() -> mysql_async::Conn {
    let s = stack();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(s.db_host)
        .tcp_port(s.db_port)
        .user(Some(s.admin_user))
        .pass(Some(s.admin_password))
        .prefer_socket(false);
    let mut c = mysql_async::Conn::new(opts)
        .await
        .expect("admin connection to SF");
    c.query_drop("SET NAMES utf8mb4").await.unwrap();
    c
}

/// A global setting of the SF server changed for a test: [`GlobalSetting::set`] changes it and
/// the guard puts the old value back when dropped (also when the test fails). Other suites use
/// the same server: hold it no longer than needed.
pub struct GlobalSetting {
    name: String,
    old: String,
}

/// `value` as an SQL literal for `SET GLOBAL`: a number as is, anything else quoted.
fn sql_literal(value: &str) -> String {
    if value.parse::<i64>().is_ok() {
        value.to_owned()
    } else {
        format!("'{value}'")
    }
}

impl GlobalSetting {
    pub async fn set(name: &str, value: &str) -> GlobalSetting {
        let mut c = admin().await;
        let old: String = c
            .query_first(format!("SELECT @@GLOBAL.{name}"))
            .await
            .unwrap()
            .unwrap();
        c.query_drop(format!("SET GLOBAL {name} = {}", sql_literal(value)))
            .await
            .unwrap();
        GlobalSetting {
            name: name.to_owned(),
            old,
        }
    }
}

impl Drop for GlobalSetting {
    fn drop(&mut self) {
        let sql = format!("SET GLOBAL {} = {}", self.name, sql_literal(&self.old));
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                admin().await.query_drop(&sql).await.unwrap();
            })
        });
    }
}

pub struct TestPipeline {
    /// The pipeline's site config, database and topic; change it with [`TestPipeline::set`].
    pub site: TestSite,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub db: String,
    pub topic: String,
    pub server_id: u32,
}

impl TestPipeline {
    /// A config for SF capturing `<db>.*` into `<topic>`, as a fresh replica server id; the
    /// database password (and TLS) come from the environment the producer is started with.
    pub fn new(name: &str) -> TestPipeline {
        let mut site = TestSite::new(&continuum_tests::stack().sf, name);
        let server_id = server_id();
        let include = vec![format!("{}.*", site.db)];
        site.set("producer.server_id", i64::from(server_id))
            .set("producer.include", include)
            .set("producer.heartbeat_interval", "300ms")
            .set("producer.max_retry_delay", "1s")
            // These suites test the consistent snapshot of an empty topic, and streaming; the
            // default (`auto`: incremental) is what the e2e suite's pipelines take.
            .set("producer.first_snapshot", "consistent")
            .set("log.filter", "info,continuum_producer=debug");
        let config = site.write();
        TestPipeline {
            dir: site.dir.clone(),
            db: site.db.clone(),
            topic: site.topic.clone(),
            site,
            config,
            server_id,
        }
    }

    /// [`TestPipeline::new`], with its database created on SF and `ddl` run (see
    /// [`TestPipeline::sql`]); returns an admin connection to SF as well.
    pub async fn with_database(name: &str, ddl: &[&str]) -> (TestPipeline, mysql_async::Conn) {
        let p = TestPipeline::new(name);
        let mut c = admin().await;
        let statements: Vec<&str> = ["CREATE DATABASE {db}"]
            .into_iter()
            .chain(ddl.iter().copied())
            .collect();
        p.sql(&mut c, &statements).await;
        (p, c)
    }

    /// Runs `statements` in order on `conn`, each with `{db}` standing for the test's database.
    pub async fn sql(&self, conn: &mut impl Queryable, statements: &[&str]) {
        let statements: Vec<String> = statements
            .iter()
            .map(|s| s.replace("{db}", &self.db))
            .collect();
        continuum_tests::site::execute(conn, &statements).await;
    }

    /// Sets the config's value at a dotted path (`producer.max_record_bytes`) and rewrites it.
    pub fn set(&mut self, path: &str, value: impl Into<toml::Value>) {
        self.site.set(path, value);
        self.site.write();
    }

    /// Removes the config's setting at a dotted path (back to Continuum's default) and
    /// rewrites it.
    pub fn unset(&mut self, path: &str) {
        self.site.unset(path);
        self.site.write();
    }

    pub fn spawn(&self, extra: &[&str]) -> ProducerProc {
        self.spawn_logged(extra, "producer")
    }

    pub fn spawn_logged(&self, extra: &[&str], log_name: &str) -> ProducerProc {
        self.spawn_with(
            extra,
            log_name,
            &[("CONTINUUM_DB_PASSWORD", &stack().db_password)],
        )
    }

    pub fn spawn_with(&self, extra: &[&str], log_name: &str, env: &[(&str, &str)]) -> ProducerProc {
        let log = self.dir.join(format!("{log_name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_continuum-producer"))
            .arg("--config")
            .arg(&self.config)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn continuum-producer");
        ProducerProc { child, log }
    }

    /// Runs the producer to completion (for errors that stop it) and returns (success, log).
    pub fn run_to_exit(&self, extra: &[&str], timeout: Duration) -> (bool, String) {
        self.run_to_exit_with(
            extra,
            timeout,
            &[("CONTINUUM_DB_PASSWORD", &stack().db_password)],
        )
    }

    /// Runs the producer to completion (at most a minute), asserting it fails; returns its log.
    pub fn run_to_failure(&self, extra: &[&str]) -> String {
        let (ok, log) = self.run_to_exit(extra, Duration::from_secs(60));
        assert!(!ok, "the producer must stop with an error:\n{log}");
        log
    }

    pub fn run_to_exit_with(
        &self,
        extra: &[&str],
        timeout: Duration,
        env: &[(&str, &str)],
    ) -> (bool, String) {
        self.spawn_with(extra, &unique_name("run"), env)
            .wait_exit(timeout)
    }
}

pub struct ProducerProc {
    pub child: Child,
    pub log: PathBuf,
}

impl ProducerProc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for the producer to exit on its own; returns (success, log). Panics with
    /// the log, after killing it, if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> (bool, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.success(), self.log());
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!(
                    "producer did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ProducerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn consumer(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "continuum-tests")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", "104857600")
        .set("max.partition.fetch.bytes", "104857600")
        .set("receive.message.max.bytes", "209715200")
        .create()
        .expect("consumer")
}

/// Every record of partition 0, from the start to the current end.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<FetchedRecord> {
    let c = consumer(brokers);
    let (low, high) = match c.fetch_watermarks(topic, 0, Duration::from_secs(10)) {
        Ok(w) => w,
        Err(_) => return Vec::new(),
    };
    if high <= low {
        return Vec::new();
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(low))
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::with_capacity((high - low) as usize);
    let deadline = Instant::now() + Duration::from_secs(300);
    while out.last().map_or(low - 1, |r: &FetchedRecord| r.offset) < high - 1 {
        assert!(
            Instant::now() < deadline,
            "reading {topic} timed out at {} of {high}",
            out.len()
        );
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => out.push(FetchedRecord::from_message(&m)),
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// The `continuum.pos` header of a record.
pub fn pos(r: &FetchedRecord) -> continuum_schemas::StreamPosition {
    r.header_str("continuum.pos")
        .expect("continuum.pos header")
        .parse()
        .unwrap()
}

/// The SF server's current GTID position.
pub async fn gtid_binlog_pos(c: &mut mysql_async::Conn) -> continuum_schemas::GtidPosition {
    let p: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    p.parse().unwrap()
}

/// Waits until the topic's last record is at or after `target` (domain 1, where the tests
/// write).
pub async fn wait_caught_up(
    brokers: &str,
    topic: &str,
    target: &continuum_schemas::GtidPosition,
    timeout: Duration,
) {
    let c = consumer(brokers);
    let deadline = Instant::now() + timeout;
    let mut last_seen = String::new();
    loop {
        if let Ok((_, high)) = c.fetch_watermarks(topic, 0, Duration::from_secs(5)) {
            if high > 0 {
                if let Ok(Some(rec)) =
                    continuum_common::kafka::read_at(&c, topic, high - 1, Duration::from_secs(5))
                {
                    let p = pos(&rec);
                    last_seen = p.to_string();
                    if let Some(after) = p.after() {
                        if target
                            .iter()
                            .filter(|g| g.domain == 1)
                            .all(|g| after.contains(g))
                        {
                            return;
                        }
                    }
                }
            }
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {topic} to reach {target}; last record: {last_seen}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn cleanup(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// The admin client of the SF cluster.
fn kafka_admin() -> rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", stack().brokers)
        .create()
        .expect("admin client")
}

/// Creates `topic` (one partition, records kept whatever their age) with `max.message.bytes`.
pub async fn create_topic_with_limit(topic: &str, max_message_bytes: usize) {
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    let limit = max_message_bytes.to_string();
    let t = NewTopic::new(topic, 1, TopicReplication::Fixed(1))
        .set("retention.ms", "-1")
        .set("max.message.bytes", &limit);
    for r in kafka_admin()
        .create_topics([&t], &AdminOptions::new())
        .await
        .expect("CreateTopics")
    {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// Sets `max.message.bytes` of an existing topic, and waits until the broker applies it.
pub async fn set_topic_limit(topic: &str, max_message_bytes: usize) {
    use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
    let limit = max_message_bytes.to_string();
    let change = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", &limit);
    for r in kafka_admin()
        .alter_configs([&change], &AdminOptions::new())
        .await
        .expect("AlterConfigs")
    {
        r.unwrap_or_else(|(t, e)| panic!("altering {t:?}: {e}"));
    }
    let cfg = {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", stack().brokers);
        c
    };
    wait_for(
        &format!("{topic}'s max.message.bytes to read {max_message_bytes}"),
        Duration::from_secs(30),
        || async {
            let got = continuum_common::kafka::topic_max_message_bytes(
                &cfg,
                topic,
                Duration::from_secs(5),
            )
            .await
            .ok()?;
            (got == max_message_bytes).then_some(())
        },
    )
    .await;
}

/// A decoder through the stack's SF registry.
pub async fn decoder() -> continuum_schemas::Decoder {
    continuum_schemas::Decoder::new(
        continuum_schemas::Registry::new(&continuum_schemas::RegistrySettings {
            url: stack().registry,
            ..Default::default()
        })
        .unwrap(),
    )
}

/// Every record of `topic`, raw (offset, headers) and decoded; the `continuum.pos` header of
/// each equals its payload's position.
pub async fn decode_records(topic: &str) -> Vec<(FetchedRecord, continuum_schemas::StreamRecord)> {
    let mut dec = decoder().await;
    let mut out = Vec::new();
    for r in read_topic(&stack().brokers, topic) {
        let at = continuum_schemas::RecordAt {
            topic: topic.to_owned(),
            partition: 0,
            offset: r.offset,
        };
        let rec = dec
            .decode(&at, r.key.as_deref(), r.value.as_deref().unwrap())
            .await
            .unwrap_or_else(|e| panic!("decoding {at}: {e}"));
        assert_eq!(
            rec.position(),
            pos(&r),
            "header and payload positions agree at {at}"
        );
        out.push((r, rec));
    }
    out
}
