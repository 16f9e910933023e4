//! Test harness for the consumer suites: a fake source that runs each transaction on the SF
//! MariaDB (which gives the expected state) and writes the matching change records, in the
//! producer's format (Confluent wire format via `schemas::Encoder`, `continuum.kind` and
//! `continuum.pos` headers, GTIDs 1-1-N), to a topic of the EU cluster, as the mirror would.
//! The replica is the EU MariaDB. Every test uses its own topic and database.
//!
//! Needs the local stack's variables (`. .stack/env`): SF_DB_*, EU_DB_*, SF_BROKERS, EU_BROKERS,
//! SF_REGISTRY, EU_REGISTRY.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use continuum_common::kafka::{ensure_changelog_topic, producer_config};
use continuum_common::SiteConfig;
use continuum_schemas::types::{format_time, DateTime};
use continuum_schemas::{
    BinlogPosition, ChangeEvent, Encoder, Gtid, GtidPosition, Op, Registry, RegistrySettings,
    SchemaChange, SnapshotMarker, SnapshotPhase, SourceInfo, StreamRecord, TableSchema, TxPlace,
    Value,
};
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

// Each suite uses some of these.
#[allow(unused_imports)]
pub use continuum_tests::process::{free_port, kill9, signal, Killed};
#[allow(unused_imports)]
pub use continuum_tests::{site::execute, stack, wait_for, TestSite};

pub const BIN: &str = env!("CARGO_BIN_EXE_continuum-consumer");

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the stack (`make up`) and `. .stack/env` first")
    })
}

#[derive(Clone, Debug)]
pub struct Db {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl Db {
    fn from_env(prefix: &str, admin: bool) -> Db {
        let (u, p) = if admin {
            ("DB_ADMIN_USER", "DB_ADMIN_PASSWORD")
        } else {
            ("DB_USER", "DB_PASSWORD")
        };
        Db {
            host: var(&format!("{prefix}_DB_HOST")),
            port: var(&format!("{prefix}_DB_PORT")).parse().unwrap(),
            user: var(&format!("{prefix}_{u}")),
            password: std::env::var(format!("{prefix}_{p}")).unwrap_or_default(),
        }
    }

    pub async fn conn(&self) -> Conn {
        let opts = OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            .prefer_socket(false)
            .ssl_opts(continuum_tests::stack_ssl());
        let mut c = Conn::new(opts).await.expect("connect to MariaDB");
        c.query_drop("SET time_zone='+00:00', NAMES utf8mb4")
            .await
            .unwrap();
        c
    }
}

/// The number the environment variable `name` holds, or `default` when it is unset or not one.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One test's world: a database (same name on source and replica), a topic, a config file
/// (its [`TestSite`], for EU).
pub struct Fixture {
    pub name: String,
    pub db: String,
    pub topic: String,
    pub source_db: Db,
    pub replica_db: Db,
    pub replica_admin: Db,
    pub source_admin: Db,
    pub config_path: PathBuf,
    pub config_text: String,
    pub cfg: SiteConfig,
    /// The config, database and topic (see [`TestSite`]).
    pub site: TestSite,
}

impl Fixture {
    /// Creates the database on both servers with `ddl` (statements run in it on both).
    /// `apply_settings` are TOML lines for `[consumer.apply]`.
    pub async fn new(name: &str, ddl: &[&str], apply_settings: &str) -> Fixture {
        let source_admin = Db::from_env("SF", true);
        let replica_admin = Db::from_env("EU", true);
        let replica_db = Db::from_env("EU", false);
        // The file is the whole truth: `command` starts the binary without CONTINUUM_*.
        let mut site = TestSite::new(&stack().eu, name);
        site.self_contained()
            .set("consumer.apply.max_retry_delay", "1s")
            .settings("consumer.apply", apply_settings)
            .set("log.filter", "info,continuum_consumer=debug");
        let config_path = site.write();
        let config_text = site.toml();
        let cfg = site.config();
        let (name, db, topic) = (site.db.clone(), site.db.clone(), site.topic.clone());
        for admin in [&source_admin, &replica_admin] {
            let mut c = admin.conn().await;
            // Not in the binlog: the source's changes reach the replica as records only.
            execute(
                &mut c,
                &[
                    "SET SESSION sql_log_bin=0".to_owned(),
                    format!("DROP DATABASE IF EXISTS `{db}`"),
                    format!("CREATE DATABASE `{db}`"),
                    format!("USE `{db}`"),
                ],
            )
            .await;
            execute(&mut c, ddl).await;
        }
        Fixture {
            name,
            db,
            topic,
            source_db: source_admin.clone(),
            replica_db,
            replica_admin,
            source_admin,
            config_path,
            config_text,
            cfg,
            site,
        }
    }

    /// A fixture whose source has one table, `base`, with one row, in the topic.
    pub async fn with_one_table(name: &str) -> (Fixture, Source) {
        let fx = Fixture::new(
            name,
            &["CREATE TABLE base (id INT PRIMARY KEY) ENGINE=InnoDB"],
            "",
        )
        .await;
        let mut src = fx.source().await;
        src.table(table(&fx.db, "base", vec![int_col("id", false)], vec![0]));
        src.txn(vec![("base", RowOp::Insert(vec![Value::Int(1)]))])
            .await;
        src.flush().await;
        (fx, src)
    }

    /// [`Fixture::with_one_table`], applied by a first apply run that is caught up and gone:
    /// the start of the schema-change tests.
    pub async fn caught_up_with_one_table(name: &str) -> (Fixture, Source) {
        let (fx, src) = Fixture::with_one_table(name).await;
        fx.apply_caught_up();
        (fx, src)
    }

    /// A source writing to this fixture's topic on the EU cluster (as mirrored).
    pub async fn source(&self) -> Source {
        self.source_on("eu").await
    }

    pub async fn source_on(&self, site: &str) -> Source {
        let cluster = self.cfg.cluster(site).unwrap().clone();
        let base = continuum_common::kafka::base_config(site, &cluster, "test-admin").unwrap();
        ensure_changelog_topic(&base, &self.topic, 64 << 20, Duration::from_secs(20))
            .await
            .unwrap();
        let mut pcfg = self.cfg.producer.clone();
        // Bigger batches than the producer's default: the local broker's cost is per batch.
        pcfg.linger = Duration::from_millis(env_or("TEST_PRODUCER_LINGER_MS", 20));
        let pc = producer_config(site, &cluster, "test-source", &pcfg).unwrap();
        let producer: FutureProducer = pc.create().unwrap();
        let registry = Registry::new(&RegistrySettings {
            url: cluster.registry.url.clone(),
            ..Default::default()
        })
        .unwrap();
        let mut conn = self.source_db.conn().await;
        conn.query_drop(format!("USE `{}`", self.db)).await.unwrap();
        conn.query_drop("SET SESSION sql_log_bin=0").await.unwrap();
        Source {
            conn,
            encoder: Encoder::new(registry, self.topic.clone()),
            producer,
            topic: self.topic.clone(),
            db: self.db.clone(),
            seq: 0,
            position: GtidPosition::new(),
            tables: HashMap::new(),
            rows: HashMap::new(),
            last_ts: 0,
            ts_step: None,
            produced: 0,
            pending: Vec::new(),
            mirror: None,
        }
    }

    /// Also writes every record to the same topic on `site`'s cluster (as a mirror would,
    /// with that registry's schema ids).
    pub async fn mirror_to(&self, src: &mut Source, site: &str) {
        let other = self.source_on(site).await;
        src.mirror = Some(Box::new(other));
    }

    /// Runs the consumer binary to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run continuum-consumer")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config_path).args(args);
        c.env_remove("CONTINUUM_CONFIG");
        for (k, _) in std::env::vars() {
            if k.starts_with("CONTINUUM_") {
                c.env_remove(k);
            }
        }
        c
    }

    /// Starts `apply` in the background; its log goes to [`Fixture::log_path`].
    pub fn spawn_apply(&self, extra: &[&str]) -> Child {
        let mut args = vec!["apply"];
        args.extend_from_slice(extra);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        self.command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn apply")
    }

    /// Where background applies of this fixture log.
    pub fn log_path(&self) -> PathBuf {
        self.config_path.with_extension("log")
    }

    /// `apply --until-caught-up`, asserting success; returns stderr.
    pub fn apply_caught_up(&self) -> String {
        let out = self.run(&["apply", "--until-caught-up"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "apply failed: {err}");
        err
    }

    /// `apply --until-caught-up`, asserting it fails with every needle in its error line.
    pub async fn apply_caught_up_expect_failure(&self, needles: &[&str]) {
        let out = self.run(&["apply", "--until-caught-up"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "apply should have failed: {err}");
        let last = err
            .lines()
            .rfind(|l| l.starts_with("continuum-consumer: error:"))
            .unwrap_or_default()
            .to_owned();
        for n in needles {
            assert!(
                last.contains(n),
                "'{n}' not in the error message: {last}\n(full stderr: {err})"
            );
        }
    }

    pub async fn replica(&self) -> Conn {
        let mut c = self.replica_admin.conn().await;
        c.query_drop(format!("USE `{}`", self.db)).await.unwrap();
        c
    }

    /// Runs `statements` on the replica, in the test's database (not through apply: the
    /// replica's own changes, e.g. a narrower column, a trigger).
    pub async fn on_replica(&self, statements: &[&str]) {
        execute(&mut self.replica().await, statements).await;
    }

    pub async fn source_conn(&self) -> Conn {
        let mut c = self.source_admin.conn().await;
        c.query_drop(format!("USE `{}`", self.db)).await.unwrap();
        c
    }

    /// (next_offset, gtid_position, replay_until, error) of this topic's checkpoint.
    pub async fn checkpoint(&self) -> Option<(i64, String, Option<String>, Option<String>)> {
        self.checkpoint_columns("next_offset, gtid_position, replay_until, error")
            .await
    }

    /// `columns` (SQL) of this topic's checkpoint row; `None` while there is none.
    pub async fn checkpoint_columns<T: FromRow + Send + 'static>(
        &self,
        columns: &str,
    ) -> Option<T> {
        let mut c = self.replica_admin.conn().await;
        c.exec_first(
            format!("SELECT {columns} FROM continuum.checkpoint WHERE source_topic=?"),
            (&self.topic,),
        )
        .await
        .ok()
        .flatten()
    }

    /// Waits (at most `timeout`) until this topic's checkpoint has a next offset for which
    /// `reached` holds; returns it.
    pub async fn wait_checkpoint(
        &self,
        what: &str,
        timeout: Duration,
        reached: impl Fn(i64) -> bool,
    ) -> i64 {
        wait_for(what, timeout, || async {
            self.checkpoint().await.map(|c| c.0).filter(|&o| reached(o))
        })
        .await
    }

    /// Waits (at most `timeout`) until apply is caught up: the checkpoint is the topic's end
    /// (its high watermark now on the EU cluster), which is returned.
    pub async fn wait_caught_up(&self, what: &str, timeout: Duration) -> i64 {
        let end = self.high_watermark();
        self.wait_checkpoint(what, timeout, |o| o == end).await
    }

    /// CHECKSUM TABLE and COUNT(*) of `tables` on source and replica.
    pub async fn assert_same(&self, tables: &[&str]) {
        let mut s = self.source_conn().await;
        let mut r = self.replica().await;
        for t in tables {
            let q = format!("CHECKSUM TABLE `{}`.`{t}`", self.db);
            let a: Option<(String, Option<i64>)> = s.query_first(&q).await.unwrap();
            let b: Option<(String, Option<i64>)> = r.query_first(&q).await.unwrap();
            let cq = format!("SELECT COUNT(*) FROM `{t}`");
            let ca: Option<i64> = s.query_first(&cq).await.unwrap();
            let cb: Option<i64> = r.query_first(&cq).await.unwrap();
            assert_eq!(ca, cb, "row count of {t}: source vs replica");
            assert_eq!(
                a.unwrap().1,
                b.unwrap().1,
                "CHECKSUM TABLE {t}: source vs replica"
            );
        }
    }

    /// High watermark of the topic on the EU cluster.
    pub fn high_watermark(&self) -> i64 {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let cluster = self.cfg.cluster("eu").unwrap();
        let c: BaseConsumer = continuum_common::kafka::consumer_config("eu", cluster, "test-wm")
            .unwrap()
            .create()
            .unwrap();
        c.fetch_watermarks(&self.topic, 0, Duration::from_secs(10))
            .unwrap()
            .1
    }

    pub async fn drop_databases(&self) {
        for admin in [&self.source_admin, &self.replica_admin] {
            let mut c = admin.conn().await;
            let _ = c.query_drop("SET SESSION sql_log_bin=0").await;
            let _ = c
                .query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.db))
                .await;
        }
    }
}

/// The row `key` of `table` as the model `rows` has it, taken out of the model (it is updated
/// or deleted). For a table without a primary key, `key` is the whole row.
fn take_row(
    rows: &mut HashMap<(String, String), Vec<Value>>,
    table: &str,
    t: &TableSchema,
    key: Vec<Value>,
) -> Vec<Value> {
    if t.primary_key.is_empty() {
        return key;
    }
    rows.remove(&(table.into(), key_of(t, &key)))
        .unwrap_or_else(|| panic!("no row {key:?} in {table}"))
}

/// One change event of a transaction: table, operation, before and after images.
type TxEvent = (Arc<TableSchema>, Op, Option<Vec<Value>>, Option<Vec<Value>>);

/// One row operation of a source transaction.
#[derive(Clone, Debug)]
pub enum RowOp {
    Insert(Vec<Value>),
    /// New full row; the before image comes from the model.
    Update {
        key: Vec<Value>,
        after: Vec<Value>,
    },
    Delete(Vec<Value>),
}

/// The fake source: executes transactions on the source MariaDB and writes their records.
pub struct Source {
    pub conn: Conn,
    pub encoder: Encoder,
    pub producer: FutureProducer,
    pub topic: String,
    pub db: String,
    pub seq: u64,
    pub position: GtidPosition,
    pub tables: HashMap<String, Arc<TableSchema>>,
    /// (table, key text) → row: the model of the source, for before images.
    pub rows: HashMap<(String, String), Vec<Value>>,
    pub last_ts: i64,
    /// When set, each record's timestamp is the previous one plus this many ms.
    pub ts_step: Option<i64>,
    pub produced: i64,
    pending: Vec<rdkafka::producer::DeliveryFuture>,
    /// A copy of this source writing the same records to another cluster.
    pub mirror: Option<Box<Source>>,
}

pub fn key_of(t: &TableSchema, row: &[Value]) -> String {
    t.primary_key
        .iter()
        .map(|&i| format!("{:?}", row[i]))
        .collect::<Vec<_>>()
        .join("|")
}

/// `?`, or a binary-string placeholder for bytes (so INET6, UUID, BIT, GEOMETRY get bytes).
pub fn placeholder(v: &Value) -> &'static str {
    match v {
        Value::Bytes(_) => "CAST(? AS BINARY)",
        _ => "?",
    }
}

pub fn param(v: &Value) -> mysql_async::Value {
    use mysql_async::Value as M;
    match v {
        Value::Null => M::NULL,
        Value::Int(i) => M::Int(*i),
        Value::UInt(u) => M::UInt(*u),
        Value::Decimal(d) => M::Bytes(d.clone().into_bytes()),
        Value::Float(f) => M::Float(*f),
        Value::Double(f) => M::Double(*f),
        Value::Date(d) => M::Bytes(d.to_string().into_bytes()),
        Value::DateTime(d) => M::Bytes(d.to_string().into_bytes()),
        Value::Timestamp(0) => M::Bytes(b"0000-00-00 00:00:00".to_vec()),
        Value::Timestamp(us) => M::Bytes(DateTime::from_epoch_micros(*us).to_string().into_bytes()),
        Value::Time(us) => M::Bytes(format_time(*us).into_bytes()),
        Value::Text(s) => M::Bytes(s.clone().into_bytes()),
        Value::Bytes(b) => M::Bytes(b.clone()),
    }
}

impl Source {
    pub fn table(&mut self, t: TableSchema) -> Arc<TableSchema> {
        let t = Arc::new(t);
        self.tables.insert(t.table.clone(), t.clone());
        t
    }

    pub fn next_ts(&mut self) -> i64 {
        self.last_ts = match self.ts_step {
            Some(step) => self.last_ts + step,
            None => self.last_ts.max(now_ms()),
        };
        self.last_ts
    }

    pub fn set_ts(&mut self, ts: i64) {
        assert!(ts >= self.last_ts);
        self.last_ts = ts;
    }

    /// Sends one record (not waiting for delivery).
    pub async fn send(&mut self, rec: &StreamRecord) -> i64 {
        let ts = self.next_ts();
        if let Some(m) = self.mirror.as_mut() {
            m.send_encoded(rec, ts).await;
        }
        self.send_encoded(rec, ts).await
    }

    /// Sends `rec` encoded with this source's registry, with the timestamp `ts`.
    async fn send_encoded(&mut self, rec: &StreamRecord, ts: i64) -> i64 {
        let enc = self.encoder.encode(rec, ts).await.expect("encode");
        self.send_raw(
            enc.key.as_deref(),
            &enc.value,
            rec.kind(),
            &rec.position().to_string(),
            ts,
        )
        .await
    }

    /// Sends `rec` encoded as the producer does, but with `pos` as its `continuum.pos` header.
    pub async fn send_with_pos_header(&mut self, rec: &StreamRecord, pos: &str) -> i64 {
        let ts = self.next_ts();
        let enc = self.encoder.encode(rec, ts).await.expect("encode");
        self.send_raw(enc.key.as_deref(), &enc.value, rec.kind(), pos, ts)
            .await
    }

    /// Sends raw bytes with the given headers; returns the record's index in this source.
    pub async fn send_raw(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        kind: &str,
        pos: &str,
        ts: i64,
    ) -> i64 {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "continuum.kind",
                value: Some(kind),
            })
            .insert(Header {
                key: "continuum.pos",
                value: Some(pos),
            });
        loop {
            let mut r = FutureRecord::<[u8], [u8]>::to(&self.topic)
                .payload(value)
                .partition(0)
                .timestamp(ts)
                .headers(headers.clone());
            if let Some(k) = key {
                r = r.key(k);
            }
            match self.producer.send_result(r) {
                Ok(f) => {
                    self.pending.push(f);
                    break;
                }
                Err((e, _)) => {
                    assert!(
                        matches!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "produce: {e}"
                    );
                    self.producer.poll(Duration::from_millis(10));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        if self.pending.len() >= 5_000 {
            self.flush().await;
        }
        self.produced += 1;
        self.produced - 1
    }

    /// Waits until everything sent is in the topic.
    pub async fn flush(&mut self) {
        for f in std::mem::take(&mut self.pending) {
            f.await.expect("delivery canceled").expect("delivered");
        }
        if let Some(m) = self.mirror.as_mut() {
            Box::pin(m.flush()).await;
        }
    }

    fn source_info(
        &self,
        gtid: Gtid,
        before: &GtidPosition,
        after: &GtidPosition,
        ts: i64,
    ) -> SourceInfo {
        SourceInfo {
            server_id: 1,
            gtid: Some(gtid),
            gtid_position: after.clone(),
            resume_position: before.clone(),
            binlog: BinlogPosition::new("sf-bin.000001", 4 + self.seq * 100),
            commit_ts_ms: ts,
            snapshot_id: None,
        }
    }

    fn next_gtid(&mut self) -> (Gtid, GtidPosition, GtidPosition) {
        self.seq += 1;
        let g = Gtid::new(1, 1, self.seq);
        let before = self.position.clone();
        let after = before.with(g);
        self.position = after.clone();
        (g, before, after)
    }

    /// Executes `ops` as one transaction on the source, then writes its records.
    /// One transaction that inserts `row` into `table`.
    pub async fn insert(&mut self, table: &str, row: Vec<Value>) -> Gtid {
        self.inserts(table, [row]).await
    }

    /// One transaction that changes the row `key` of `table` to `after`.
    pub async fn update(&mut self, table: &str, key: Vec<Value>, after: Vec<Value>) -> Gtid {
        self.txn(vec![(table, RowOp::Update { key, after })]).await
    }

    /// One transaction that inserts `rows` into `table`.
    pub async fn inserts(
        &mut self,
        table: &str,
        rows: impl IntoIterator<Item = Vec<Value>>,
    ) -> Gtid {
        self.txn(
            rows.into_iter()
                .map(|r| (table, RowOp::Insert(r)))
                .collect(),
        )
        .await
    }

    pub async fn txn(&mut self, ops: Vec<(&str, RowOp)>) -> Gtid {
        // The source first: it enforces constraints.
        let mut sql_tx = self
            .conn
            .start_transaction(Default::default())
            .await
            .unwrap();
        let mut events = Vec::with_capacity(ops.len());
        for (table, op) in ops {
            let t = self.tables[table].clone();
            let q = |s: &str| format!("`{}`", s);
            let cols: Vec<String> = t.columns.iter().map(|c| q(&c.name)).collect();
            // A table without a primary key: a row is all its values (`key` is the whole
            // before-image), and a statement changes one matching row.
            let keyless = t.primary_key.is_empty();
            let key_cols: Vec<usize> = if keyless {
                (0..t.columns.len()).collect()
            } else {
                t.primary_key.clone()
            };
            let key_where = key_cols
                .iter()
                .map(|&i| format!("{}<=>?", q(&t.columns[i].name)))
                .collect::<Vec<_>>()
                .join(" AND ")
                + if keyless { " LIMIT 1" } else { "" };
            let key_params =
                |row: &[Value]| key_cols.iter().map(|&i| param(&row[i])).collect::<Vec<_>>();
            match op {
                RowOp::Insert(row) => {
                    let sql = format!(
                        "INSERT INTO `{}` ({}) VALUES ({})",
                        t.table,
                        cols.join(","),
                        row.iter().map(placeholder).collect::<Vec<_>>().join(",")
                    );
                    sql_tx
                        .exec_drop(sql, row.iter().map(param).collect::<Vec<_>>())
                        .await
                        .unwrap();
                    self.rows
                        .insert((table.into(), key_of(&t, &row)), row.clone());
                    events.push((t.clone(), Op::Insert, None, Some(row)));
                }
                RowOp::Update { key, after } => {
                    let before = take_row(&mut self.rows, table, &t, key);
                    let sets = cols
                        .iter()
                        .zip(&after)
                        .map(|(c, v)| format!("{c}={}", placeholder(v)))
                        .collect::<Vec<_>>()
                        .join(",");
                    let sql = format!("UPDATE `{}` SET {sets} WHERE {key_where}", t.table);
                    let mut p: Vec<mysql_async::Value> = after.iter().map(param).collect();
                    p.extend(key_params(&before));
                    sql_tx.exec_drop(sql, p).await.unwrap();
                    self.rows
                        .insert((table.into(), key_of(&t, &after)), after.clone());
                    events.push((t.clone(), Op::Update, Some(before), Some(after)));
                }
                RowOp::Delete(key) => {
                    let before = take_row(&mut self.rows, table, &t, key);
                    let sql = format!("DELETE FROM `{}` WHERE {key_where}", t.table);
                    sql_tx.exec_drop(sql, key_params(&before)).await.unwrap();
                    events.push((t.clone(), Op::Delete, Some(before), None));
                }
            }
        }
        sql_tx.commit().await.unwrap();
        self.send_txn(events).await
    }

    /// Writes the change events of one transaction (the next GTID, one timestamp), each with
    /// its place in the transaction.
    async fn send_txn(&mut self, events: Vec<TxEvent>) -> Gtid {
        let (gtid, before, after) = self.next_gtid();
        let ts = self.next_ts();
        let n = events.len();
        for (i, (table, op, b, a)) in events.into_iter().enumerate() {
            let rec = StreamRecord::Change(ChangeEvent {
                op,
                table,
                before: b,
                after: a,
                source: self.source_info(gtid, &before, &after, ts),
                tx: Some(TxPlace {
                    index: i as u64,
                    last: i + 1 == n,
                }),
            });
            self.send(&rec).await;
        }
        gtid
    }

    /// A large insert-only transaction, streamed: `rows(i)` gives row i. The source runs it as
    /// multi-row INSERTs in one transaction.
    pub async fn big_insert(
        &mut self,
        table: &str,
        n: usize,
        row: impl Fn(usize) -> Vec<Value>,
    ) -> Gtid {
        let t = self.tables[table].clone();
        let cols: Vec<String> = t.columns.iter().map(|c| format!("`{}`", c.name)).collect();
        let mut sql_tx = self
            .conn
            .start_transaction(Default::default())
            .await
            .unwrap();
        let chunk = 2000;
        let mut i = 0;
        while i < n {
            let m = chunk.min(n - i);
            let one = format!("({})", vec!["?"; cols.len()].join(","));
            let sql = format!(
                "INSERT INTO `{}` ({}) VALUES {}",
                t.table,
                cols.join(","),
                vec![one; m].join(",")
            );
            let mut p = Vec::with_capacity(m * cols.len());
            for j in i..i + m {
                p.extend(row(j).iter().map(param));
            }
            sql_tx.exec_drop(sql, p).await.unwrap();
            i += m;
        }
        sql_tx.commit().await.unwrap();
        let mut events = Vec::with_capacity(n);
        for j in 0..n {
            let r = row(j);
            self.rows.insert((table.into(), key_of(&t, &r)), r.clone());
            events.push((t.clone(), Op::Insert, None, Some(r)));
        }
        self.send_txn(events).await
    }

    /// Insert records of one transaction, without running anything on the source (benchmarks).
    pub async fn records_only_insert(
        &mut self,
        table: &str,
        ids: std::ops::Range<usize>,
        row: impl Fn(usize) -> Vec<Value>,
    ) -> Gtid {
        let t = self.tables[table].clone();
        let events = ids
            .map(|j| (t.clone(), Op::Insert, None, Some(row(j))))
            .collect();
        self.send_txn(events).await
    }

    /// A DDL statement: run on the source (in the test database), then written as a record.
    pub async fn ddl(&mut self, ddl: &str) -> Gtid {
        self.conn.query_drop(ddl).await.unwrap();
        let (gtid, before, after) = self.next_gtid();
        let ts = self.next_ts();
        let rec = StreamRecord::SchemaChange(SchemaChange {
            database: self.db.clone(),
            ddl: ddl.to_owned(),
            source: self.source_info(gtid, &before, &after, ts),
            tx: TxPlace {
                index: 0,
                last: true,
            },
        });
        self.send(&rec).await;
        gtid
    }

    /// `CREATE TABLE ... SELECT` as MariaDB logs it: runs `sql` on the source, then writes one
    /// transaction of the table's definition (as `SHOW CREATE TABLE` prints it, which is what the
    /// binlog holds) followed by its rows. `shape` is the new table's; its columns must be
    /// integers or text.
    pub async fn create_select(&mut self, sql: &str, shape: TableSchema) -> Gtid {
        self.conn.query_drop(sql).await.unwrap();
        let (_, create): (String, String) = self
            .conn
            .query_first(format!("SHOW CREATE TABLE `{}`", shape.table))
            .await
            .unwrap()
            .unwrap();
        let cols: Vec<String> = shape
            .columns
            .iter()
            .map(|c| format!("`{}`", c.name))
            .collect();
        let rows: Vec<mysql_async::Row> = self
            .conn
            .query(format!("SELECT {} FROM `{}`", cols.join(","), shape.table))
            .await
            .unwrap();
        let t = self.table(shape);
        let (gtid, before, after) = self.next_gtid();
        let ts = self.next_ts();
        let last_index = rows.len();
        let rec = StreamRecord::SchemaChange(SchemaChange {
            database: self.db.clone(),
            ddl: create,
            source: self.source_info(gtid, &before, &after, ts),
            tx: TxPlace {
                index: 0,
                last: last_index == 0,
            },
        });
        self.send(&rec).await;
        for (i, r) in rows.into_iter().enumerate() {
            // The text protocol returns every value as bytes; the shape says what they are.
            let row: Vec<Value> = r
                .unwrap()
                .into_iter()
                .zip(&t.columns)
                .map(|(v, c)| match (v, &c.ty) {
                    (mysql_async::Value::NULL, _) => Value::Null,
                    (
                        mysql_async::Value::Bytes(b),
                        continuum_schemas::ColumnType::Integer { .. },
                    ) => Value::Int(String::from_utf8(b).unwrap().parse().unwrap()),
                    (mysql_async::Value::Bytes(b), _) => Value::Text(String::from_utf8(b).unwrap()),
                    (other, _) => panic!("create_select: unsupported value {other:?}"),
                })
                .collect();
            let key = key_of(&t, &row);
            self.rows.insert((t.table.clone(), key), row.clone());
            let rec = StreamRecord::Change(ChangeEvent {
                op: Op::Insert,
                table: t.clone(),
                before: None,
                after: Some(row),
                source: self.source_info(gtid, &before, &after, ts),
                tx: Some(TxPlace {
                    index: i as u64 + 1,
                    last: i + 1 == last_index,
                }),
            });
            self.send(&rec).await;
        }
        gtid
    }

    pub async fn heartbeat(&mut self) {
        let ts = self.next_ts();
        let rec = StreamRecord::Heartbeat(continuum_schemas::Heartbeat {
            server_id: 1,
            position: self.position.clone(),
            ts_ms: ts,
        });
        self.send(&rec).await;
    }

    /// A snapshot of `tables` (START, a row per current source row, END); `stop_after` rows:
    /// write only that many rows and no END (an abandoned snapshot).
    pub async fn snapshot(&mut self, id: &str, tables: &[&str], stop_after: Option<usize>) {
        let ts = self.next_ts();
        let marker = |phase| {
            StreamRecord::Snapshot(SnapshotMarker {
                snapshot_id: id.to_owned(),
                phase,
                server_id: 1,
                position: self.position.clone(),
                tables: tables.iter().map(|t| format!("{}.{t}", self.db)).collect(),
                ts_ms: ts,
            })
        };
        let start = marker(SnapshotPhase::Start);
        let end = marker(SnapshotPhase::End);
        self.send(&start).await;
        let mut sent = 0;
        for table in tables {
            let t = self.tables[*table].clone();
            let mut rows: Vec<Vec<Value>> = self
                .rows
                .iter()
                .filter(|((tn, _), _)| tn == table)
                .map(|(_, r)| r.clone())
                .collect();
            rows.sort_by_key(|r| key_of(&t, r));
            for r in rows {
                if stop_after.is_some_and(|n| sent >= n) {
                    return;
                }
                let rec = StreamRecord::Change(ChangeEvent {
                    op: Op::Read,
                    table: t.clone(),
                    before: None,
                    after: Some(r),
                    source: SourceInfo {
                        server_id: 1,
                        gtid: None,
                        gtid_position: self.position.clone(),
                        resume_position: self.position.clone(),
                        binlog: BinlogPosition::new("sf-bin.000001", 4),
                        commit_ts_ms: ts,
                        snapshot_id: Some(id.to_owned()),
                    },
                    tx: None,
                });
                self.send(&rec).await;
                sent += 1;
            }
        }
        if stop_after.is_none() {
            self.send(&end).await;
        }
    }

    /// Changes the source without writing records (what a snapshot will then carry).
    pub async fn source_only(&mut self, table: &str, op: RowOp) {
        let t = self.tables[table].clone();
        let key_where = t
            .primary_key
            .iter()
            .map(|&i| format!("`{}`=?", t.columns[i].name))
            .collect::<Vec<_>>()
            .join(" AND ");
        let key_params = |row: &[Value]| {
            t.primary_key
                .iter()
                .map(|&i| param(&row[i]))
                .collect::<Vec<_>>()
        };
        match op {
            RowOp::Insert(row) => {
                let cols: Vec<String> = t.columns.iter().map(|c| format!("`{}`", c.name)).collect();
                let sql = format!(
                    "INSERT INTO `{}` ({}) VALUES ({})",
                    t.table,
                    cols.join(","),
                    vec!["?"; cols.len()].join(",")
                );
                self.conn
                    .exec_drop(sql, row.iter().map(param).collect::<Vec<_>>())
                    .await
                    .unwrap();
                self.rows.insert((table.into(), key_of(&t, &row)), row);
            }
            RowOp::Delete(key) => {
                let before = take_row(&mut self.rows, table, &t, key);
                self.conn
                    .exec_drop(
                        format!("DELETE FROM `{}` WHERE {key_where}", t.table),
                        key_params(&before),
                    )
                    .await
                    .unwrap();
            }
            RowOp::Update { key, after } => {
                let before = take_row(&mut self.rows, table, &t, key);
                let set = t
                    .columns
                    .iter()
                    .map(|c| format!("`{}`=?", c.name))
                    .collect::<Vec<_>>()
                    .join(",");
                let mut p: Vec<_> = after.iter().map(param).collect();
                p.extend(key_params(&before));
                self.conn
                    .exec_drop(
                        format!("UPDATE `{}` SET {set} WHERE {key_where}", t.table),
                        p,
                    )
                    .await
                    .unwrap();
                self.rows.insert((table.into(), key_of(&t, &after)), after);
            }
        }
    }
}

pub fn int_col(name: &str, nullable: bool) -> continuum_schemas::Column {
    continuum_schemas::Column {
        name: name.into(),
        ty: continuum_schemas::ColumnType::Integer {
            width: continuum_schemas::types::IntWidth::Int,
            unsigned: false,
        },
        nullable,
    }
}

pub fn bigint_col(name: &str, nullable: bool) -> continuum_schemas::Column {
    continuum_schemas::Column {
        name: name.into(),
        ty: continuum_schemas::ColumnType::Integer {
            width: continuum_schemas::types::IntWidth::Big,
            unsigned: false,
        },
        nullable,
    }
}

pub fn varchar_col(name: &str, nullable: bool) -> continuum_schemas::Column {
    continuum_schemas::Column {
        name: name.into(),
        ty: continuum_schemas::ColumnType::Text {
            kind: continuum_schemas::types::TextKind::VarChar,
        },
        nullable,
    }
}

pub fn varbinary_col(name: &str, nullable: bool) -> continuum_schemas::Column {
    continuum_schemas::Column {
        name: name.into(),
        ty: continuum_schemas::ColumnType::Blob {
            kind: continuum_schemas::types::BlobKind::VarBinary,
        },
        nullable,
    }
}

pub fn table(
    db: &str,
    name: &str,
    columns: Vec<continuum_schemas::Column>,
    pk: Vec<usize>,
) -> TableSchema {
    TableSchema {
        db: db.into(),
        table: name.into(),
        columns,
        primary_key: pk,
    }
}

/// Peak resident set size (VmHWM) of a running process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Every kind of schema change the workload generator emits, and the four renames (which fail
/// when run twice: 1146 for a table, 1054 for a column), in an order that applies on the source
/// of [`Fixture::caught_up_with_one_table`]; the last table standing is `t2`.
pub const SCHEMA_CHANGES: [&str; 10] = [
    "CREATE TABLE t (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(32) NULL, n INT NULL) DEFAULT CHARSET=utf8mb4",
    "ALTER TABLE t ADD COLUMN c0 BIGINT UNSIGNED NULL",
    "ALTER TABLE t MODIFY COLUMN v VARCHAR(56) NULL",
    "ALTER TABLE t DROP COLUMN c0",
    "RENAME TABLE t TO t_renamed",
    "ALTER TABLE t_renamed RENAME TO t2",
    "ALTER TABLE t2 RENAME COLUMN n TO m",
    "ALTER TABLE t2 CHANGE m k BIGINT NULL",
    "CREATE TABLE gone (id INT PRIMARY KEY)",
    "DROP TABLE gone",
];
