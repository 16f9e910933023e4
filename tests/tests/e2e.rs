//! End to end against the local stack, with the real pipeline processes (scripts/pipeline.sh:
//! SF producer, EU `consumer run`, EU producer, SF `consumer run`) and the workload generator.
//!
//! - `pipeline_replicates_a_workload_consistently`: the full SF -> EU path under the generator;
//!   the bank-transfer invariant holds at every sampled read of the EU replica during the run,
//!   and `verify` reports identical at the end.
//! - `chaos_kill9_components_loses_nothing`: kill -9 at random one of the producer, the EU
//!   consumer (mirror and apply), either broker, either MariaDB, and restart it the way an
//!   operator would (`scripts/stack.sh up`, `scripts/pipeline.sh start`, as `make up` and `make
//!   run` do), at least 10 cycles (`CHAOS_CYCLES`, `make soak CYCLES=N`) while the generator
//!   writes. Afterwards `verify` reports identical, every source event is in the changelog once
//!   (checked by a reader that follows the topic during the run, see `ChangelogFollower`), and
//!   EU's binlog shows apply's checkpoint covering every source GTID exactly once.
//!
//! - `an_incremental_snapshot_repairs_a_damaged_replica_while_the_pipeline_runs`: rows deleted,
//!   changed and added on EU by hand (and rows deleted on SF without binlogging) are put right
//!   by `continuum-producer snapshot` of the table, taken while SF writes to it, through the
//!   running pipeline: each chunk's rows replace the replica's, and its end deletes the
//!   replica's rows of its key range that SF does not have.
//!
//! - `verify_repair_makes_a_corrupted_replica_identical_while_the_pipeline_runs`: EU's copies of
//!   two tables (one keyed by a case-insensitive text column and an integer) lose rows, get
//!   others changed, and gain rows SF does not have; `continuum-consumer verify --repair` finds
//!   them, has SF's producer snapshot exactly those two tables while SF writes, waits until EU
//!   applied it, and ends identical.
//!
//! - `kill9_during_an_incremental_snapshot_of_a_million_rows_ends_identical`: SF's producer is
//!   killed with kill -9 three times, at random moments, while it snapshots a table of 1M rows
//!   (`SNAPSHOT_ROWS`) that EU has never seen, and SF writes to it; each restarted producer
//!   resumes the same snapshot at its next chunk (never from zero), and EU ends identical.
//!
//! - `a_purged_binlog_is_recaptured_incrementally_and_eu_ends_identical`: SF's producer is
//!   stopped, SF changes rows and creates a table, and purges the binlog the producer needs;
//!   the producer then refuses to start, naming `--recapture`; with it, the producer streams
//!   from SF's current position (defining every captured table there) and snapshots every
//!   captured table incrementally, while SF writes to the new table at once; EU ends
//!   identical, the new table included. (It purges SF's binlogs: any other pipeline reading
//!   SF from an older position stops.)
//!
//! - `an_empty_topic_is_filled_by_an_incremental_snapshot_when_so_configured`: with
//!   `producer.first_snapshot = "incremental"`, a new pipeline over SF tables that EU lacks
//!   streams from SF's current position and snapshots the tables incrementally, while SF
//!   writes; EU gets the tables and ends identical.
//!
//! They start and stop the shared pipeline, so this suite runs on its own (--test-threads=1).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use continuum_schemas::{Gtid, GtidPosition, StreamPosition};
use continuum_tests::check::{env_or, exec_all, output_text, query_one};
use continuum_tests::{
    stack, stack_python, unique_name, wait_sf_producer_streaming, workload, workspace_root, Site,
};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use rand::{Rng, SeedableRng};

/// A process killed (by its PID) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pipeline of the local stack, confined to this test's databases and topics.
struct Pipeline {
    prefix: String,
    sf_topic: String,
    eu_topic: String,
    dir: PathBuf,
    /// More environment for its processes and verbs.
    extra: Vec<(&'static str, String)>,
}

impl Pipeline {
    fn new(name: &str) -> Pipeline {
        let prefix = unique_name(name);
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).unwrap();
        Pipeline {
            sf_topic: format!("{prefix}.sf.cdc"),
            eu_topic: format!("{prefix}.eu.cdc"),
            prefix,
            dir,
            extra: Vec::new(),
        }
    }

    fn envs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CONTINUUM_PRODUCER_INCLUDE", format!("{}_*.*", self.prefix)),
            ("CONTINUUM_SF_TOPIC", self.sf_topic.clone()),
            ("CONTINUUM_EU_TOPIC", self.eu_topic.clone()),
            ("CONTINUUM_LOG", "info".into()),
        ]
        .into_iter()
        .chain(self.extra.iter().cloned())
        .collect()
    }

    fn script(&self, script: &str, args: &[&str]) -> Output {
        let out = Command::new("bash")
            .arg(workspace_root().join(script))
            .args(args)
            .envs(self.envs())
            .current_dir(workspace_root())
            .output()
            .unwrap();
        out
    }

    fn must(&self, script: &str, args: &[&str]) {
        let out = self.script(script, args);
        assert!(
            out.status.success(),
            "{script} {args:?} failed:\n{}",
            output_text(&out)
        );
    }

    /// Starts the four processes with this test's settings (stopping any already running, which
    /// would have other settings), and waits until SF's producer streams: what SF writes from
    /// then on travels as source transactions. A table the workload created before that point
    /// would reach EU through the first incremental snapshot instead, partial until its end.
    fn start(&self) {
        self.must("scripts/pipeline.sh", &["stop"]);
        self.must("scripts/pipeline.sh", &["start"]);
        wait_sf_producer_streaming(Duration::from_secs(300));
    }

    fn stop(&self) {
        self.must("scripts/pipeline.sh", &["stop"]);
    }

    /// A consumer verb at a site, with that site's pipeline environment.
    fn consumer_at(&self, site: &str, args: &[&str]) -> Output {
        self.verb_at("continuum-consumer", site, args)
    }

    /// A producer verb at a site, with that site's pipeline environment.
    fn producer_at(&self, site: &str, args: &[&str]) -> Output {
        self.verb_at("continuum-producer", site, args)
    }

    fn verb_at(&self, binary: &str, site: &str, args: &[&str]) -> Output {
        let bin = workspace_root().join("target/debug").join(binary);
        Command::new("bash")
            .args([
                "-c",
                &format!("eval \"$(scripts/pipeline.sh env {site})\" && exec \"$0\" \"$@\""),
            ])
            .arg(bin)
            .args(args)
            .envs(self.envs())
            .current_dir(workspace_root())
            .output()
            .unwrap()
    }

    /// Starts `binary` with `args` at a site, with that site's pipeline environment, in the
    /// background; its output goes to `log` in the test's directory. It is killed when the
    /// handle is dropped (a failing test leaves no process behind).
    fn spawn_at(&self, binary: &str, site: &str, args: &[&str], log: &str) -> Killed {
        let bin = workspace_root().join("target/debug").join(binary);
        let out = std::fs::File::create(self.dir.join(log)).unwrap();
        Command::new("bash")
            .args([
                "-c",
                &format!("eval \"$(scripts/pipeline.sh env {site})\" && exec \"$0\" \"$@\""),
            ])
            .arg(bin)
            .args(args)
            .envs(self.envs())
            .current_dir(workspace_root())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .map(Killed)
            .unwrap()
    }

    /// A pipeline for test `name` and `databases` databases of the workload (their names
    /// returned), started, with a [`ChangelogFollower`] on its SF topic from its first record.
    fn start_following(name: &str, databases: usize) -> (Pipeline, Vec<String>, ChangelogFollower) {
        let p = Pipeline::new(name);
        let dbs = p.databases(databases);
        p.start();
        let changelog = ChangelogFollower::start(&p.sf_topic);
        (p, dbs, changelog)
    }

    fn databases(&self, n: usize) -> Vec<String> {
        workload::database_names(&self.prefix, n)
    }

    fn workload(&self, seconds: u64, databases: usize, seed: u64) -> Child {
        let s = &stack().sf;
        let log = std::fs::File::create(self.dir.join("workload.out")).unwrap();
        Command::new(env!("CARGO_BIN_EXE_workload"))
            .args([
                "--prefix",
                &self.prefix,
                "--databases",
                &databases.to_string(),
                "--duration",
                &format!("{seconds}s"),
                "--rate",
                "30",
                "--large-every",
                "150",
                "--large-rows",
                "3000",
                "--ddl",
                "on",
                "--seed",
                &seed.to_string(),
                "--host",
                &s.db_host,
                "--port",
                &s.db_port.to_string(),
                "--user",
                &s.db_admin_user,
                "--password",
                &s.db_admin_password,
                "--log",
                self.dir.join("workload.jsonl").to_str().unwrap(),
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("workload.out")).unwrap_or_default()
    }

    /// Waits for the workload `wl` to end, which it must do successfully, then for EU to apply
    /// all SF has written by then, at most `timeout`.
    async fn workload_done_and_caught_up(&self, mut wl: Child, timeout: Duration) {
        let status = tokio::task::spawn_blocking(move || wl.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "workload failed:\n{}", self.log());
        let target = sf_position().await;
        wait_eu_caught_up(&self.sf_topic, &target, timeout).await;
    }

    /// Once EU has caught up: `dbs` are identical at both sites (`consumer verify`), EU applied
    /// every source GTID once, `changelog` found every record well formed; then stops the
    /// pipeline. Returns the source transactions and the apply commits.
    async fn verify_all_and_stop(
        &self,
        dbs: &[String],
        changelog: ChangelogFollower,
    ) -> (usize, usize) {
        verify(self, dbs);
        let commits = assert_checkpoint_covers_each_gtid_once(&self.sf_topic).await;
        let txns = changelog.finish(&self.sf_topic);
        self.stop();
        (txns, commits)
    }
}

impl Drop for Pipeline {
    /// A failed test leaves no pipeline running behind it: the next suite would find its
    /// processes holding the stack's ports, locks and replica ids.
    fn drop(&mut self) {
        let _ = self.script("scripts/pipeline.sh", &["stop"]);
    }
}

async fn sf_position() -> GtidPosition {
    let mut c = stack().sf.admin_conn().await;
    let p: String = query_one(&mut c, "SELECT @@gtid_binlog_pos").await;
    p.parse().unwrap()
}

/// Waits until EU's apply of the SF changelog covers SF's domain-1 position `target`.
async fn wait_eu_caught_up(topic: &str, target: &GtidPosition, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let want: GtidPosition = target.iter().filter(|g| g.domain == 1).copied().collect();
    let mut last = String::new();
    loop {
        if let Ok(mut c) = mysql_async::Conn::new(stack().eu.admin_opts()).await {
            let got: Result<Option<String>, _> = c
                .exec_first("SELECT gtid_position FROM continuum.checkpoint WHERE source_topic = ? AND `partition` = 0", (topic,))
                .await;
            if let Ok(Some(p)) = got {
                last = p.clone();
                if p.parse::<GtidPosition>().is_ok_and(|p| p.covers(&want)) {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "EU did not apply {topic} up to {want} within {timeout:?}; its checkpoint is at {last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Samples the bank invariant on EU until `stop` flips. Transfers move money between accounts,
/// also across databases, so the invariant is the total over all databases, read by one
/// statement (one consistent read). While the workload sets up, some databases may not be
/// seeded yet: the total is then a whole multiple of one database's seed, never anything else.
async fn sample_invariant(
    dbs: Vec<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (u64, Vec<String>) {
    let per_db = workload::expected_total(1);
    let q = format!(
        "SELECT CAST(SUM(s) * 100 AS CHAR) FROM ({}) x",
        dbs.iter()
            .map(|d| format!("SELECT SUM(balance) AS s FROM `{d}`.accounts"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    );
    let mut samples = 0;
    let mut violations = Vec::new();
    while !*stop.borrow() {
        if let Ok(mut c) = mysql_async::Conn::new(stack().eu.admin_opts()).await {
            // Fails until every database and table exists on EU.
            if let Ok(Some(Some(sum))) = c.query_first::<Option<String>, _>(&q).await {
                let cents: i128 = sum.split('.').next().unwrap().parse().unwrap();
                samples += 1;
                if cents % per_db != 0 || cents / per_db > dbs.len() as i128 {
                    violations.push(format!(
                        "total {} at sample {samples}",
                        workload::format_cents(cents)
                    ));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (samples, violations)
}

fn verify(p: &Pipeline, dbs: &[String]) {
    let out = p.consumer_at("eu", &["verify", "--databases", &dbs.join(",")]);
    let text = output_text(&out);
    eprintln!("{text}");
    assert!(
        out.status.success() && text.contains("verdict: IDENTICAL"),
        "verify found differences:\n{text}"
    );
}

/// Checks the SF changelog while the run is in progress: a reader follows the topic from
/// offset 0 at its tail and checks every record as it arrives, so that every event of every
/// source transaction is in the changelog exactly once, in order, with no offset missing.
///
/// It follows the tail during the run, so that a long soak's topic (close to a million records)
/// is checked as it grows instead of read again at the end. The reader rides through broker
/// kills the way the mirror does (librdkafka reconnects and resumes at its fetch position).
struct ChangelogFollower {
    /// The offset the reader must reach before it reports, -1 while the run is in progress.
    until: Arc<AtomicI64>,
    reader: std::thread::JoinHandle<Result<ChangelogCheck, String>>,
}

/// What the follower has checked so far.
#[derive(Default)]
struct ChangelogCheck {
    next_offset: i64,
    last: Option<(Gtid, u64)>,
    txns: usize,
    errors: usize,
}

impl ChangelogCheck {
    fn feed(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) -> Result<(), String> {
        use rdkafka::message::Headers;
        use rdkafka::Message;
        let offset = m.offset();
        if offset < self.next_offset {
            // librdkafka re-delivers after a reconnect only what it had not handed out; this
            // would be a client-side repeat of an offset already checked, not a copy in the topic.
            return Ok(());
        }
        if offset != self.next_offset {
            return Err(format!(
                "offsets {} to {} are missing from the changelog",
                self.next_offset,
                offset - 1
            ));
        }
        self.next_offset = offset + 1;
        let pos = m
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|x| x.key == "continuum.pos")
                    .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
            })
            .ok_or_else(|| format!("the record at offset {offset} has no continuum.pos header"))?;
        if let Ok(StreamPosition::Txn { gtid, index, .. }) = pos.parse() {
            match self.last {
                Some((g, i)) if g == gtid => {
                    if index != i + 1 {
                        return Err(format!(
                            "{gtid}: event {index} after {i} at offset {offset}"
                        ));
                    }
                }
                Some((g, _)) => {
                    if gtid.seq <= g.seq {
                        return Err(format!("{gtid} after {g} at offset {offset}: a transaction is in the changelog twice or out of order"));
                    }
                    if index != 0 {
                        return Err(format!("{gtid} starts at event {index} at offset {offset}"));
                    }
                    self.txns += 1;
                }
                None => {
                    if index != 0 {
                        return Err(format!("the first transaction {gtid} starts at event {index} at offset {offset}"));
                    }
                    self.txns += 1;
                }
            }
            self.last = Some((gtid, index));
        }
        Ok(())
    }
}

impl ChangelogFollower {
    fn start(topic: &str) -> ChangelogFollower {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::{Offset, TopicPartitionList};
        let sf = &stack().sf;
        sf.wait_topic_ready(topic, Duration::from_secs(60));
        let consumer: BaseConsumer = sf
            .consumer_config("changelog-follower")
            .set("fetch.wait.max.ms", "100")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(0))
            .expect("partition list");
        consumer.assign(&tpl).expect("assign");
        let until = Arc::new(AtomicI64::new(-1));
        let target = until.clone();
        let topic = topic.to_string();
        let reader = std::thread::spawn(move || {
            let mut check = ChangelogCheck::default();
            let mut deadline: Option<Instant> = None;
            loop {
                let until = target.load(Ordering::SeqCst);
                if until >= 0 {
                    if check.next_offset >= until {
                        return Ok(check);
                    }
                    let d =
                        *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(600));
                    if Instant::now() > d {
                        return Err(format!("the changelog reader reached offset {} of {topic}, not {until}, within 600s of the end of the run ({} read errors)", check.next_offset, check.errors));
                    }
                }
                match consumer.poll(Duration::from_millis(500)) {
                    Some(Ok(m)) => check.feed(&m)?,
                    Some(Err(e)) => {
                        // Broker kills show up here (transport failures); librdkafka retries.
                        check.errors += 1;
                        if check.errors % 50 == 1 {
                            eprintln!(
                                "changelog reader: {e} (read error {}, at offset {})",
                                check.errors, check.next_offset
                            );
                        }
                    }
                    None => {}
                }
            }
        });
        ChangelogFollower { until, reader }
    }

    /// Waits (bounded) until the reader has checked the whole topic, and returns the number of
    /// source transactions in it. Panics with the first violation found.
    fn finish(self, topic: &str) -> usize {
        let (_, high) = stack().sf.wait_topic_ready(topic, Duration::from_secs(60));
        self.until.store(high, Ordering::SeqCst);
        let check = self
            .reader
            .join()
            .expect("changelog reader")
            .unwrap_or_else(|e| panic!("{topic}: {e}"));
        eprintln!(
            "changelog: {} records checked, {} source transactions, each once and in order",
            check.next_offset, check.txns
        );
        check.txns
    }
}

/// Reads EU's binlog and checks apply's checkpoint row for `topic`: every update starts where
/// the previous one ended and never goes back, so each source GTID is covered by exactly one
/// apply commit.
async fn assert_checkpoint_covers_each_gtid_once(topic: &str) -> usize {
    let s = &stack().eu;
    let mut conn = mysql_async::Conn::new(s.admin_opts()).await.unwrap();
    exec_all(
        &mut conn,
        [
            "SET @mariadb_slave_capability=4",
            "SET @slave_connect_state=''",
        ],
    )
    .await;
    let req = mysql_async::BinlogStreamRequest::new(4_000_000_000 - (std::process::id() % 1000))
        .with_filename(b"")
        .with_pos(4u64)
        .with_non_blocking();
    let mut stream = conn.get_binlog_stream(req).await.unwrap();
    let mut commits = 0;
    let mut prev_after: Option<GtidPosition> = None;
    let mut cp_table: Option<u64> = None;
    let text = |v: Option<&mysql_async::binlog::value::BinlogValue<'_>>| -> Option<String> {
        match v {
            Some(mysql_async::binlog::value::BinlogValue::Value(mysql_async::Value::Bytes(b))) => {
                Some(String::from_utf8_lossy(b).into_owned())
            }
            _ => None,
        }
    };
    while let Some(ev) = stream.next().await {
        let ev = ev.unwrap();
        let Ok(Some(data)) = ev.read_data() else {
            continue;
        };
        match data {
            // Table ids start again after a server restart, so the checkpoint's id of an
            // earlier run of the server may now map another table: every map event counts.
            mysql_async::binlog::events::EventData::TableMapEvent(t) => {
                if t.database_name() == "continuum" && t.table_name() == "checkpoint" {
                    cp_table = Some(t.table_id());
                } else if cp_table == Some(t.table_id()) {
                    cp_table = None;
                }
            }
            mysql_async::binlog::events::EventData::RowsEvent(r)
                if Some(r.table_id()) == cp_table =>
            {
                let tme = stream.get_tme(r.table_id()).unwrap();
                for row in r.rows(tme) {
                    let (before, after) = row.unwrap();
                    let row_topic = after
                        .as_ref()
                        .or(before.as_ref())
                        .and_then(|r| text(r.as_ref(0)));
                    if row_topic.as_deref() != Some(topic) {
                        continue; // another test's checkpoint (the bench deletes its own)
                    }
                    let after = after.unwrap_or_else(|| {
                        panic!("the checkpoint row of {topic} was deleted; apply never does that")
                    });
                    let a: GtidPosition =
                        text(after.as_ref(4)).unwrap_or_default().parse().unwrap();
                    let b: GtidPosition = before
                        .and_then(|b| text(b.as_ref(4)))
                        .map(|t| t.parse().unwrap())
                        .unwrap_or_default();
                    let a1: GtidPosition = a.iter().filter(|g| g.domain == 1).copied().collect();
                    let b1: GtidPosition = b.iter().filter(|g| g.domain == 1).copied().collect();
                    if let Some(p) = &prev_after {
                        assert_eq!(
                            &b1, p,
                            "an apply commit started at {b1} where the previous one ended at {p}"
                        );
                    }
                    assert!(
                        a1.covers(&b1),
                        "an apply commit moved the checkpoint back from {b1} to {a1}"
                    );
                    prev_after = Some(a1);
                    commits += 1;
                }
            }
            _ => {}
        }
    }
    commits
}

async fn drop_databases(dbs: &[String]) {
    for site in [&stack().sf, &stack().eu] {
        if let Ok(mut c) = mysql_async::Conn::new(site.admin_opts()).await {
            for db in dbs {
                let _ = c
                    .query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                    .await;
            }
        }
    }
}

/// Reads a whole changelog topic with stock Confluent clients (confluent-kafka's consumer and
/// `AvroDeserializer`, the site's registry), and checks that every record decodes, keys
/// included, and that the row changes carry Debezium's `op` codes. Returns how many records were
/// decoded, and of them how many were creates, updates and deletes.
fn decode_with_a_stock_client(site: &Site, topic: &str) -> (u64, u64, u64, u64) {
    let out = stack_python(
        r#"
import sys
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
brokers, registry, topic = sys.argv[1:4]
des = AvroDeserializer(SchemaRegistryClient({"url": registry}))
c = Consumer({"bootstrap.servers": brokers, "group.id": "stock-decode",
              "enable.auto.commit": False, "isolation.level": "read_committed"})
lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
c.assign([TopicPartition(topic, 0, lo)])
n, ops = 0, {"c": 0, "u": 0, "d": 0}
while n < hi - lo:
    m = c.poll(30)
    if m is None:
        sys.exit(f"{topic}: no record after offset {lo + n - 1} within 30 s ({hi - lo} expected)")
    if m.error():
        sys.exit(f"{topic}: {m.error()}")
    v = des(m.value(), SerializationContext(topic, MessageField.VALUE))
    if m.key() is not None:
        des(m.key(), SerializationContext(topic, MessageField.KEY))
    op = v.get("op") if isinstance(v, dict) else None
    if op in ops:
        ops[op] += 1
    n += 1
c.close()
print(n, ops["c"], ops["u"], ops["d"])
"#,
        &[&site.brokers, &site.registry, topic],
    );
    let n: Vec<u64> = out
        .split_whitespace()
        .map(|x| x.parse().expect("a count"))
        .collect();
    assert_eq!(n.len(), 4, "the decoding script printed {out:?}");
    (n[0], n[1], n[2], n[3])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_replicates_a_workload_consistently() {
    let seconds: u64 = env_or("E2E_SECONDS", 120);
    let (p, dbs, changelog) = Pipeline::start_following("e2e", 3);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(sample_invariant(dbs.clone(), stop_rx));
    let wl = p.workload(seconds, 3, 11);
    p.workload_done_and_caught_up(wl, Duration::from_secs(600))
        .await;
    let _ = stop_tx.send(true);
    let (samples, violations) = sampler.await.unwrap();
    assert!(
        violations.is_empty(),
        "partial transactions were visible on EU: {violations:?}"
    );
    assert!(samples > 100, "only {samples} invariant samples were taken");
    let (txns, commits) = p.verify_all_and_stop(&dbs, changelog).await;
    // Both copies of the changelog, each with its own site's registry, decode with stock
    // Confluent clients: the EU copy needs nothing from SF.
    let s = stack();
    for (site, what) in [(&s.sf, "SF's changelog"), (&s.eu, "EU's copy of it")] {
        let (n, c, u, d) = decode_with_a_stock_client(site, &p.sf_topic);
        assert!(
            c > 0 && u > 0 && d > 0,
            "{what}: creates {c}, updates {u}, deletes {d}"
        );
        eprintln!("{what}: {n} records decoded by a stock Confluent client ({c} creates, {u} updates, {d} deletes)");
    }
    eprintln!("pipeline: {seconds}s of workload, {txns} source transactions, {commits} apply commits, {samples} invariant samples, no violation");
    drop_databases(&dbs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill9_components_loses_nothing() {
    let cycles: usize = env_or("CHAOS_CYCLES", 10);
    let (p, dbs, changelog) = Pipeline::start_following("chaos", 2);
    let seconds = (cycles as u64 * 12).max(60);
    let wl = p.workload(seconds, 2, 23);
    let targets = [
        "sf-producer",
        "eu-consumer",
        "sf-broker",
        "eu-broker",
        "sf-db",
        "eu-db",
    ];
    let mut rng = rand::rng();
    let mut log: BTreeMap<usize, String> = BTreeMap::new();
    let started = Instant::now();
    for cycle in 1..=cycles {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2000..6000))).await;
        let target = targets[rng.random_range(0..targets.len())];
        let t0 = started.elapsed().as_secs_f64();
        if target.ends_with("producer") || target.ends_with("consumer") {
            let _ = p.script("scripts/pipeline.sh", &["kill", target]);
        } else {
            let _ = p.script("scripts/stack.sh", &["kill", target]);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3000))).await;
        p.must("scripts/stack.sh", &["up"]);
        p.must("scripts/pipeline.sh", &["start"]);
        let line = format!(
            "cycle {cycle:>3}: killed {target:<12} at {t0:7.1}s, restarted by {:7.1}s",
            started.elapsed().as_secs_f64()
        );
        eprintln!("{line}");
        log.insert(cycle, line);
    }
    p.workload_done_and_caught_up(wl, Duration::from_secs(900))
        .await;
    let (txns, commits) = p.verify_all_and_stop(&dbs, changelog).await;
    eprintln!(
        "chaos: {cycles} cycles in {:.0}s, {txns} source transactions, {commits} apply commits; verify identical, every GTID once",
        started.elapsed().as_secs_f64()
    );
    drop_databases(&dbs).await;
}

/// `CREATE TABLE ... SELECT` through the whole pipeline, keyed and keyless: MariaDB logs each as
/// one transaction (the table, then its rows). Apply stopped for good at the keyed one, and the
/// producer stopped at the keyless one; both now reach EU whole, and the keyless table's later
/// updates and deletes (identical rows included) too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_table_select_replicates_keyed_and_keyless() {
    let p = Pipeline::new("ctas");
    let db = p.databases(1).remove(0);
    let s = stack();
    let mut c = s.sf.admin_conn().await;
    exec_all(
        &mut c,
        [
            &format!("CREATE DATABASE `{db}`"),
            &format!("USE `{db}`"),
            "CREATE TABLE src (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL, qty INT NULL)",
            "INSERT INTO src VALUES (1,'a',1),(2,'b',NULL),(3,'c',3),(4,'a',1)",
        ],
    )
    .await;
    p.start();
    exec_all(
        &mut c,
        [
            "CREATE TABLE keyed (PRIMARY KEY (id)) SELECT id, name FROM src WHERE id > 1",
            "CREATE TABLE loose SELECT name, qty FROM src",
            // Two identical rows ('a',1): deleting one must leave the other.
            "DELETE FROM loose WHERE name = 'a' LIMIT 1",
            "UPDATE loose SET qty = 9 WHERE name = 'b'",
            "INSERT INTO loose VALUES ('c',3)",
        ],
    )
    .await;
    let target = sf_position().await;
    wait_eu_caught_up(&p.sf_topic, &target, Duration::from_secs(180)).await;
    let mut e = s.eu.admin_conn().await;
    for (table, q) in [
        ("keyed", format!("SELECT CONCAT_WS(',', id, name) FROM `{db}`.keyed ORDER BY id")),
        (
            "loose",
            format!("SELECT CONCAT_WS(',', name, IFNULL(qty, 'NULL')) FROM `{db}`.loose ORDER BY name, qty"),
        ),
    ] {
        let at_sf: Vec<String> = c.query(q.as_str()).await.unwrap();
        let at_eu: Vec<String> = e.query(q.as_str()).await.unwrap();
        assert!(!at_sf.is_empty());
        assert_eq!(at_eu, at_sf, "{table} at EU holds what it holds at SF");
    }
    let loose: Vec<String> = e
        .query(format!(
            "SELECT CONCAT_WS(',', name, qty) FROM `{db}`.loose ORDER BY name, qty"
        ))
        .await
        .unwrap();
    assert_eq!(loose, ["a,1", "b,9", "c,3", "c,3"]);
    p.stop();
    drop_databases(&[db]).await;
}

/// A table the replica lost rows of, and rows changed by hand: an incremental snapshot of it
/// (`continuum-producer snapshot --wait`), taken while SF keeps writing to it, brings EU back to
/// identical, through the running pipeline, with nothing stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_snapshot_repairs_a_damaged_replica_while_the_pipeline_runs() {
    let p = Pipeline::new("resnap");
    let db = p.databases(1).remove(0);
    let s = stack();
    let mut c = s.sf.admin_conn().await;
    exec_all(
        &mut c,
        [
            &format!("CREATE DATABASE `{db}`"),
            &format!("USE `{db}`"),
            "CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(40) NOT NULL, n INT)",
            "INSERT INTO t SELECT seq, CONCAT('v', seq), seq % 7 FROM seq_1_to_20000",
        ],
    )
    .await;
    p.start();
    first_snapshot_done(&mut c, &p.sf_topic).await;
    wait_eu_caught_up(&p.sf_topic, &sf_position().await, Duration::from_secs(180)).await;
    // The replica loses rows, gets others changed, and keeps or gains rows the source does not
    // have (before the table's first key, between keys, past its last), behind the pipeline's
    // back.
    let mut e = s.eu.admin_conn().await;
    exec_all(
        &mut e,
        [
            "SET SESSION sql_log_bin = 0",
            &format!("DELETE FROM `{db}`.t WHERE id % 40 = 3"),
            &format!("UPDATE `{db}`.t SET v = 'damaged', n = NULL WHERE id % 50 = 7"),
            &format!("USE `{db}`"),
            "INSERT INTO t VALUES (-5, 'extra', 1), (0, 'extra', 2)",
            "INSERT INTO t SELECT seq, 'extra', 3 FROM seq_30001_to_30040",
        ],
    )
    .await;
    exec_all(
        &mut c,
        [
            "SET SESSION sql_log_bin = 0",
            &format!("DELETE FROM `{db}`.t WHERE id % 60 = 11"),
            "SET SESSION sql_log_bin = 1",
        ],
    )
    .await;
    let out = p.consumer_at("eu", &["verify", "--databases", &db]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify finds the damage:\n{}",
        output_text(&out)
    );
    // SF keeps writing to the table while the snapshot reads it.
    let writer_db = db.clone();
    let (stop_tx, writer) = sf_writer(18, 21_000, None, move |kind, id, n| match kind {
        0 => format!("UPDATE `{writer_db}`.t SET v = CONCAT('w', {n}), n = {n} WHERE id = {id}"),
        1 => format!("DELETE FROM `{writer_db}`.t WHERE id = {id}"),
        _ => format!("REPLACE INTO `{writer_db}`.t VALUES ({id}, CONCAT('i', {n}), {n})"),
    });
    let table = format!("{db}.t");
    let out = p.producer_at(
        "sf",
        &["snapshot", "--table", &table, "--wait", "--timeout", "3m"],
    );
    let text = output_text(&out);
    assert!(
        out.status.success() && text.contains("done:"),
        "the snapshot request ends done:\n{text}"
    );
    stop_tx.send(true).unwrap();
    let writes = writer.await.unwrap();
    assert!(writes > 0);
    wait_eu_caught_up(&p.sf_topic, &sf_position().await, Duration::from_secs(180)).await;
    verify(&p, std::slice::from_ref(&db));
    p.stop();
    drop_databases(&[db]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_repair_makes_a_corrupted_replica_identical_while_the_pipeline_runs() {
    let p = Pipeline::new("repair");
    let db = p.databases(1).remove(0);
    let s = stack();
    let mut c = s.sf.admin_conn().await;
    exec_all(
        &mut c,
        [
            &format!("CREATE DATABASE `{db}`"),
            &format!("USE `{db}`"),
            "CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(40) NOT NULL, n INT)",
            "INSERT INTO t SELECT seq, CONCAT('v', seq), seq % 7 FROM seq_1_to_12000",
            "CREATE TABLE k (region VARCHAR(20) COLLATE utf8mb4_general_ci NOT NULL, n INT NOT NULL, v VARCHAR(40), PRIMARY KEY (region, n))",
            "INSERT INTO k SELECT ELT(1 + seq % 4, 'eu', 'Us', 'ap', 'Ünï'), seq, CONCAT('k', seq) FROM seq_1_to_4000",
            "CREATE TABLE same (id INT PRIMARY KEY, v INT)",
            "INSERT INTO same SELECT seq, seq FROM seq_1_to_500",
            "CREATE TABLE gone (id INT PRIMARY KEY, v VARCHAR(20))",
            "INSERT INTO gone SELECT seq, CONCAT('g', seq) FROM seq_1_to_300",
            // Damaged in three chunks only: only those key ranges are snapshotted.
            "CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(20))",
            "INSERT INTO big SELECT seq, CONCAT('b', seq) FROM seq_1_to_20000",
        ],
    )
    .await;
    p.start();
    first_snapshot_done(&mut c, &p.sf_topic).await;
    wait_eu_caught_up(&p.sf_topic, &sf_position().await, Duration::from_secs(180)).await;
    let mut e = s.eu.admin_conn().await;
    exec_all(
        &mut e,
        [
            "SET SESSION sql_log_bin = 0",
            &format!("USE `{db}`"),
            // Deleted rows, changed values, and rows SF does not have.
            "DELETE FROM t WHERE id % 97 = 5",
            "UPDATE t SET v = 'corrupt', n = NULL WHERE id % 101 = 9",
            "INSERT INTO t VALUES (-1, 'extra', 0), (12001, 'extra', 0), (99999, 'extra', 0)",
            "DELETE FROM k WHERE n % 53 = 1",
            "UPDATE k SET v = NULL WHERE n % 59 = 2",
            // Before every region, between regions, within one, and past the last.
            "INSERT INTO k VALUES ('aa', 1, 'extra'), ('ep', 7, 'extra'), ('eu', 0, 'extra'), ('eu', 4001, 'extra'), ('zz', 1, 'extra')",
            // A table lost altogether: the snapshot brings its definition too.
            "DROP TABLE gone",
            "UPDATE big SET v = 'corrupt' WHERE id IN (4321, 4322)",
            "DELETE FROM big WHERE id = 15555",
            "INSERT INTO big VALUES (-5, 'extra')",
        ],
    )
    .await;
    // SF keeps writing to one of the tables while the repair's snapshot runs, and stops once it
    // is done: verify's second comparison, like any, needs the source to hold still long enough
    // for a chunk to be compared at one position on both sides.
    let writer_db = db.clone();
    let (stop_tx, writer) = sf_writer(
        19,
        12_500,
        Some(db.clone()),
        move |kind, id, n| match kind {
            0 => format!("UPDATE `{writer_db}`.t SET v = CONCAT('w', {n}) WHERE id = {id}"),
            1 => format!("DELETE FROM `{writer_db}`.t WHERE id = {id}"),
            _ => format!("REPLACE INTO `{writer_db}`.t VALUES ({id}, CONCAT('i', {n}), {n})"),
        },
    );
    let out = p.consumer_at(
        "eu",
        &[
            "verify",
            "--databases",
            &db,
            "--repair",
            "--repair-timeout",
            "3m",
        ],
    );
    let text = output_text(&out);
    eprintln!("{text}");
    let _ = stop_tx.send(true); // the writer may have stopped already
    let writes = writer.await.unwrap();
    assert!(writes > 0);
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify --repair ends identical:\n{text}"
    );
    let (first, last) = text
        .split_once("repair: snapshot request")
        .expect("verify --repair queued a snapshot");
    assert!(
        first.contains(&format!("{db}.t"))
            && first.contains(&format!("{db}.k"))
            && first.contains("DIFFERENT"),
        "the first comparison finds both tables different:\n{text}"
    );
    assert!(
        first.contains(&format!("{db}.gone")) && first.contains("only on the source"),
        "the first comparison finds the table missing on EU:\n{text}"
    );
    assert!(
        last.contains("verdict: IDENTICAL"),
        "the comparison after the repair is identical:\n{text}"
    );
    // Exactly the differing and missing tables were snapshotted: t and k, which differ in
    // every chunk, whole; big in the three key ranges of its chunks that differ.
    let (tables, ranges, rows): (String, String, u64) = c
        .exec_first(
            "SELECT tables, ranges, rows_done FROM continuum.snapshot_request WHERE tables LIKE CONCAT('%', ?, '%') ORDER BY id DESC LIMIT 1",
            (&db,),
        )
        .await
        .unwrap()
        .expect("the repair's request");
    let mut tables: Vec<&str> = tables.split(',').collect();
    tables.sort();
    assert_eq!(
        tables,
        [
            format!("{db}.big"),
            format!("{db}.big"),
            format!("{db}.big"),
            format!("{db}.gone"),
            format!("{db}.k"),
            format!("{db}.t")
        ],
        "ranges: {ranges}"
    );
    assert!(
        rows < 12_500 + 4_000 + 300 + 5_000,
        "{rows} rows snapshotted: big is read in its differing ranges only ({ranges})"
    );
    wait_eu_caught_up(&p.sf_topic, &sf_position().await, Duration::from_secs(180)).await;
    verify(&p, std::slice::from_ref(&db));
    p.stop();
    drop_databases(&[db]).await;
}

/// Waits until the first snapshot of `topic`'s pipeline is done: an empty topic over tables
/// that exist is filled by an incremental snapshot (`producer.first_snapshot = "auto"`), so
/// EU's checkpoint reaching SF's position does not mean their rows are there.
async fn first_snapshot_done(c: &mut mysql_async::Conn, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let row: Option<(u64, Option<u64>)> = c
            .exec_first(
                "SELECT COUNT(*), SUM(done_at IS NULL) FROM continuum.snapshot_request WHERE topic = ?",
                (topic,),
            )
            .await
            .unwrap_or(None);
        if let Some((n, Some(0))) = row {
            if n > 0 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the first snapshot of {topic} is not done: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The `tables` of the latest snapshot request naming a table of `db`, once it is done (within
/// `timeout`); it must have ended without error.
async fn request_done(c: &mut mysql_async::Conn, db: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let row: Option<(String, Option<String>, Option<String>)> = c
            .exec_first(
                "SELECT tables, CAST(done_at AS CHAR), error FROM continuum.snapshot_request WHERE tables LIKE CONCAT('%', ?, '.%') ORDER BY id DESC LIMIT 1",
                (db,),
            )
            .await
            .unwrap();
        if let Some((tables, Some(_), error)) = &row {
            assert_eq!(error, &None, "the snapshot of {tables} ends without error");
            return tables.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot request naming {db} is done: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A task writing to SF: every 5 ms one row change of a random key in `1..=max_id`, its kind
/// drawn in `0..3` and its SQL given by `statement(kind, key, n)` (`n` counts the writes), from a
/// generator seeded with `seed`. It writes until told to stop (the sender) or, with
/// `until_snapshot_of`, until a snapshot request naming that database, queued after it started,
/// is done; it returns the
/// number of writes.
fn sf_writer(
    seed: u64,
    max_id: u64,
    until_snapshot_of: Option<String>,
    statement: impl Fn(u32, u64, u64) -> String + Send + 'static,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<u64>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(async move {
        let mut c = stack().sf.admin_conn().await;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut n = 0u64;
        // Only a request queued after the writer starts counts: the pipeline's own first
        // snapshot is a request for the same tables too, and it is already done.
        let after: u64 = c
            .query_first("SELECT COALESCE(MAX(id), 0) FROM continuum.snapshot_request")
            .await
            .unwrap_or(None)
            .unwrap_or(0);
        let done = until_snapshot_of.map(|db| format!("SELECT COUNT(*) FROM continuum.snapshot_request WHERE id > {after} AND tables LIKE '%{db}%' AND done_at IS NOT NULL"));
        while !*stop_rx.borrow() {
            if let Some(done) = &done {
                let snapshots_done: Option<u64> =
                    c.query_first(done.as_str()).await.unwrap_or(None);
                if snapshots_done.unwrap_or(0) > 0 {
                    break;
                }
            }
            let id: u64 = rng.random_range(1..=max_id);
            let sql = statement(rng.random_range(0..3), id, n);
            c.query_drop(sql).await.unwrap();
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        n
    });
    (stop_tx, writer)
}

/// The `rows=` of every `incremental snapshot resumes at its next chunk` line that SF's producer
/// logged for snapshot `id`, in order.
fn resumed_rows(id: &str) -> Vec<u64> {
    let log = std::fs::read_to_string(workspace_root().join(".stack/logs/sf-producer.log"))
        .unwrap_or_default();
    log.lines()
        .filter(|l| {
            l.contains("incremental snapshot resumes at its next chunk")
                && l.contains(&format!("snapshot={id}"))
        })
        .map(|l| {
            let rows = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("rows="))
                .unwrap_or_else(|| panic!("no rows= in the resume line: {l}"));
            rows.parse()
                .unwrap_or_else(|e| panic!("rows={rows} in the resume line ({e}): {l}"))
        })
        .collect()
}

/// A row of `continuum.snapshot_request`, as the test reads it.
struct RequestRow {
    snapshot_id: Option<String>,
    rows: u64,
    done: bool,
    error: Option<String>,
}

async fn snapshot_request(c: &mut mysql_async::Conn, id: u64) -> RequestRow {
    let row: Option<mysql_async::Row> = c
        .exec_first(
            "SELECT snapshot_id, rows_done, done_at IS NOT NULL, error FROM continuum.snapshot_request WHERE id = ?",
            (id,),
        )
        .await
        .unwrap();
    let row = row.unwrap_or_else(|| panic!("no snapshot request {id}"));
    RequestRow {
        snapshot_id: row.get(0).unwrap(),
        rows: row.get(1).unwrap(),
        done: row.get(2).unwrap(),
        error: row.get(3).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_an_incremental_snapshot_of_a_million_rows_ends_identical() {
    let rows: u64 = env_or("SNAPSHOT_ROWS", 1_000_000);
    const KILLS: usize = 3;
    let p = Pipeline::new("snap1m");
    let db = p.databases(1).remove(0);
    let s = stack();
    let mut c = s.sf.admin_conn().await;
    exec_all(
        &mut c,
        [
            &format!("CREATE DATABASE `{db}`"),
            &format!("USE `{db}`"),
            "CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(40) NOT NULL, n INT, d DATETIME(6))",
        ],
    )
    .await;
    p.start();
    wait_eu_caught_up(&p.sf_topic, &sf_position().await, Duration::from_secs(180)).await;
    // Rows the topic never carries: only the incremental snapshot brings them to EU.
    exec_all(
        &mut c,
        [
            "SET SESSION sql_log_bin = 0",
            &format!(
                "INSERT INTO t SELECT seq, CONCAT('v', seq), seq % 1000, '2026-01-01' + INTERVAL seq SECOND FROM seq_1_to_{rows}"
            ),
            "SET SESSION sql_log_bin = 1",
        ],
    )
    .await;
    let writer_db = db.clone();
    let (stop_tx, writer) = sf_writer(20, rows + 1000, None, move |kind, id, n| match kind {
        0 => format!("UPDATE `{writer_db}`.t SET v = CONCAT('w', {n}), n = NULL WHERE id = {id}"),
        1 => format!("DELETE FROM `{writer_db}`.t WHERE id = {id}"),
        _ => format!("REPLACE INTO `{writer_db}`.t VALUES ({id}, CONCAT('i', {n}), {n}, NOW(6))"),
    });
    let table = format!("{db}.t");
    let out = p.producer_at("sf", &["snapshot", "--table", &table]);
    let text = output_text(&out);
    let request: u64 = text
        .split_once("snapshot request ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("the verb prints the request's id:\n{text}"));
    let mut rng = rand::rng();
    let mut snapshot: Option<String> = None;
    let mut before_kills = Vec::new();
    for k in 1..=KILLS {
        // A random moment, once the (restarted) producer is writing chunks again.
        let deadline = Instant::now() + Duration::from_secs(300);
        let floor = before_kills.last().copied().unwrap_or(0);
        loop {
            let RequestRow {
                snapshot_id: sid,
                rows: done_rows,
                done,
                error,
            } = snapshot_request(&mut c, request).await;
            assert!(
                !done,
                "the snapshot ended before kill {k} ({done_rows} rows, error {error:?}); raise SNAPSHOT_ROWS"
            );
            if let Some(sid) = sid {
                assert_eq!(
                    snapshot.get_or_insert_with(|| sid.clone()),
                    &sid,
                    "one snapshot, resumed after each kill"
                );
                if done_rows > floor {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the snapshot makes no progress before kill {k}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if k == 1 {
            // EU's status shows the snapshot being written, from the mirrored topic.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let out = p.consumer_at("eu", &["status", "--json"]);
                let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                if st["incremental_snapshot"]["request"] == request {
                    assert_eq!(st["incremental_snapshot"]["tables_left"][0], table, "{st}");
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "EU's status does not show snapshot request {request}:\n{}",
                    output_text(&out)
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..4000))).await;
        let done_rows = snapshot_request(&mut c, request).await.rows;
        before_kills.push(done_rows);
        let _ = p.script("scripts/pipeline.sh", &["kill", "sf-producer"]);
        eprintln!("kill {k}: {done_rows} rows done by then");
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..2000))).await;
        p.must("scripts/pipeline.sh", &["start"]);
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    let (sid, done_rows, error) = loop {
        let r = snapshot_request(&mut c, request).await;
        if r.done {
            break (r.snapshot_id, r.rows, r.error);
        }
        let done_rows = r.rows;
        assert!(
            Instant::now() < deadline,
            "the snapshot is not done: {done_rows} rows"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    stop_tx.send(true).unwrap();
    let writes = writer.await.unwrap();
    assert_eq!(error, None, "the snapshot ends without error");
    assert_eq!(sid, snapshot, "one snapshot, resumed after each kill");
    let snapshot = snapshot.unwrap();
    // Each restart resumed where the topic said the snapshot was: its count goes on from there
    // (the request's count lags the topic by at most its 2 s update and a chunk cut short).
    let resumed = resumed_rows(&snapshot);
    assert_eq!(
        resumed.len(),
        KILLS,
        "each restarted producer logs that it resumes snapshot {snapshot}: {resumed:?}"
    );
    for (k, (&r, &before)) in resumed.iter().zip(&before_kills).enumerate() {
        assert!(
            r > 0 && r + 40_000 >= before,
            "after kill {}, the producer resumed at {r} rows, where {before} were done before the kill: the snapshot started over",
            k + 1
        );
    }
    // Each write deletes at most one row the snapshot would have read.
    assert!(
        done_rows + writes >= rows,
        "{done_rows} rows written for a table of {rows} that {writes} writes changed"
    );
    assert!(
        (done_rows as f64) < 1.2 * rows as f64,
        "{done_rows} rows written for a table of {rows}: chunks were read again beyond the ones cut short"
    );
    eprintln!(
        "{rows} rows, {KILLS} kills at {before_kills:?} rows, resumed at {resumed:?}, {done_rows} rows written, {writes} writes during it"
    );
    wait_eu_caught_up(&p.sf_topic, &sf_position().await, Duration::from_secs(900)).await;
    verify(&p, std::slice::from_ref(&db));
    p.stop();
    drop_databases(&[db]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_binlog_is_recaptured_incrementally_and_eu_ends_identical() {
    let p = Pipeline::new("recap");
    let db = p.databases(1).remove(0);
    let s = stack();
    let mut c = s.sf.admin_conn().await;
    exec_all(
        &mut c,
        [
            &format!("CREATE DATABASE `{db}`"),
            &format!("USE `{db}`"),
            "CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(40) NOT NULL, n INT)",
            "INSERT INTO t SELECT seq, CONCAT('v', seq), seq % 7 FROM seq_1_to_5000",
        ],
    )
    .await;
    p.start();
    first_snapshot_done(&mut c, &p.sf_topic).await;
    wait_eu_caught_up(&p.sf_topic, &sf_position().await, Duration::from_secs(180)).await;
    p.must("scripts/pipeline.sh", &["stop", "sf-producer"]);
    // While the producer is away, SF changes rows and creates a table, then purges the binlog
    // the producer would resume from.
    exec_all(
        &mut c,
        [
            "UPDATE t SET v = 'gap', n = NULL WHERE id % 10 = 1",
            "DELETE FROM t WHERE id % 13 = 2",
            "INSERT INTO t SELECT seq, CONCAT('new', seq), 0 FROM seq_5001_to_5500",
            "CREATE TABLE born (id INT PRIMARY KEY, v INT)",
            "INSERT INTO born SELECT seq, seq * 2 FROM seq_1_to_200",
            "FLUSH BINARY LOGS",
        ],
    )
    .await;
    let status: mysql_async::Row = c
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .expect("SF writes a binlog");
    let file: String = status.get(0).unwrap();
    // MariaDB keeps a file until InnoDB has checkpointed its transactions: purge until only the
    // current file is left.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        c.query_drop(format!("PURGE BINARY LOGS TO '{file}'"))
            .await
            .unwrap();
        let logs: Vec<(String, u64)> = c.query("SHOW BINARY LOGS").await.unwrap();
        if logs.iter().all(|(f, _)| *f >= file) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SF keeps binlogs before {file}: {logs:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The producer cannot resume, and says how to go on.
    let mut refused = p.spawn_at("continuum-producer", "sf", &[], "producer-refused.log");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = refused.0.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            panic!(
                "the producer kept running on a purged position:\n{}",
                std::fs::read_to_string(p.dir.join("producer-refused.log")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = std::fs::read_to_string(p.dir.join("producer-refused.log")).unwrap();
    assert!(
        !status.success() && log.contains("purged") && log.contains("--recapture"),
        "the producer stops on the purged position, naming --recapture ({status}):\n{log}"
    );
    let mut recapture = p.spawn_at(
        "continuum-producer",
        "sf",
        &["--recapture"],
        "producer-recapture.log",
    );
    // Once the recapture has queued its request (so after the position it streams from), SF
    // writes to the table created in the gap, before the snapshot reaches it: EU must have the
    // table already (the recapture's mark defines every captured table).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let queued: Option<u64> = c
            .exec_first(
                "SELECT COUNT(*) FROM continuum.snapshot_request WHERE tables LIKE CONCAT('%', ?, '.born%')",
                (&db,),
            )
            .await
            .unwrap();
        if queued.unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the recapture queues no request:\n{}",
            tail_of(
                &std::fs::read_to_string(p.dir.join("producer-recapture.log")).unwrap_or_default()
            )
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..20 {
        c.query_drop(format!(
            "INSERT INTO `{db}`.born VALUES ({}, {i})",
            1000 + i
        ))
        .await
        .unwrap();
        c.query_drop(format!(
            "UPDATE `{db}`.t SET n = {i} WHERE id = {}",
            3 + i * 7
        ))
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let row: Option<(String, Option<String>, Option<String>)> = c
            .exec_first(
                "SELECT tables, CAST(done_at AS CHAR), error FROM continuum.snapshot_request WHERE tables LIKE CONCAT('%', ?, '.%') ORDER BY id DESC LIMIT 1",
                (&db,),
            )
            .await
            .unwrap();
        if let Some((tables, Some(_), error)) = row {
            assert_eq!(error, None, "the recapture's snapshot ends without error");
            let mut tables: Vec<&str> = tables.split(',').collect();
            tables.sort();
            assert_eq!(
                tables,
                [format!("{db}.born"), format!("{db}.t")],
                "every captured table"
            );
            break;
        }
        if let Some(st) = recapture.0.try_wait().unwrap() {
            panic!(
                "the producer with --recapture exited ({st}):\n{}",
                std::fs::read_to_string(p.dir.join("producer-recapture.log")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the recapture's snapshot is not done:\n{}",
            tail_of(
                &std::fs::read_to_string(p.dir.join("producer-recapture.log")).unwrap_or_default()
            )
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_eu_caught_up(&p.sf_topic, &sf_position().await, Duration::from_secs(180)).await;
    verify(&p, std::slice::from_ref(&db));
    drop(recapture);
    p.stop();
    drop_databases(&[db]).await;
}

/// The last 40 lines of `text`.
fn tail_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_newly_captured_by_producer_include_is_snapshotted_while_streaming() {
    let mut p = Pipeline::new("newly");
    let dbs = p.databases(2);
    let (kept, added) = (dbs[0].clone(), dbs[1].clone());
    p.extra
        .push(("CONTINUUM_PRODUCER_EXCLUDE", format!("{added}.*")));
    let s = stack();
    let mut c = s.sf.admin_conn().await;
    for db in &dbs {
        exec_all(
            &mut c,
            [
                &format!("CREATE DATABASE `{db}`"),
                &format!("USE `{db}`"),
                "CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(40) NOT NULL)",
                "INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_20000",
            ],
        )
        .await;
    }
    p.start();
    c.query_drop(format!(
        "UPDATE `{added}`.t SET v = 'while left out' WHERE id <= 100"
    ))
    .await
    .unwrap();
    c.query_drop(format!("UPDATE `{kept}`.t SET v = 'kept' WHERE id <= 100"))
        .await
        .unwrap();
    wait_eu_caught_up(&p.sf_topic, &sf_position().await, Duration::from_secs(180)).await;
    let mut e = s.eu.admin_conn().await;
    let there: Option<String> = e
        .exec_first(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
            (&added,),
        )
        .await
        .unwrap();
    assert_eq!(there, None, "{added} is excluded, so the replica lacks it");

    // Stopped, SF goes on writing to the table left out; then the exclude is dropped.
    p.stop();
    c.query_drop(format!(
        "DELETE FROM `{added}`.t WHERE id BETWEEN 200 AND 300"
    ))
    .await
    .unwrap();
    p.extra.clear();
    p.start();
    for i in 0..40u64 {
        c.query_drop(format!(
            "UPDATE `{added}`.t SET v = 'w{i}' WHERE id = {}",
            1 + i * 487
        ))
        .await
        .unwrap();
        c.query_drop(format!(
            "INSERT INTO `{added}`.t VALUES ({}, 'new')",
            30_000 + i
        ))
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let tables = request_done(&mut c, &added, Duration::from_secs(300)).await;
    assert_eq!(tables, format!("{added}.t"), "exactly the new table");
    let recorded: Option<String> = c
        .exec_first(
            "SELECT exclude FROM continuum.capture WHERE topic = ?",
            (&p.sf_topic,),
        )
        .await
        .unwrap();
    assert_eq!(
        recorded.as_deref(),
        Some("[]"),
        "the new filter is recorded"
    );
    wait_eu_caught_up(&p.sf_topic, &sf_position().await, Duration::from_secs(180)).await;
    verify(&p, &dbs);
    p.stop();
    drop_databases(&dbs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_topic_is_filled_by_an_incremental_snapshot_when_so_configured() {
    let mut p = Pipeline::new("first");
    p.extra
        .push(("CONTINUUM_PRODUCER_FIRST_SNAPSHOT", "incremental".into()));
    let db = p.databases(1).remove(0);
    let s = stack();
    let mut c = s.sf.admin_conn().await;
    exec_all(
        &mut c,
        [
            &format!("CREATE DATABASE `{db}`"),
            &format!("USE `{db}`"),
            "CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(40) NOT NULL, n INT)",
            "INSERT INTO t SELECT seq, CONCAT('v', seq), seq % 7 FROM seq_1_to_30000",
            "CREATE TABLE k (region VARCHAR(20) NOT NULL, n INT NOT NULL, PRIMARY KEY (region, n))",
            "INSERT INTO k SELECT ELT(1 + seq % 3, 'eu', 'us', 'ap'), seq FROM seq_1_to_3000",
        ],
    )
    .await;
    p.start();
    // SF writes while the first snapshot runs.
    for i in 0..50u64 {
        c.query_drop(format!(
            "UPDATE `{db}`.t SET v = 'w{i}' WHERE id = {}",
            1 + i * 397
        ))
        .await
        .unwrap();
        c.query_drop(format!("DELETE FROM `{db}`.t WHERE id = {}", 2 + i * 401))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tables = request_done(&mut c, &db, Duration::from_secs(300)).await;
    let mut tables: Vec<&str> = tables.split(',').collect();
    tables.sort();
    assert_eq!(tables, [format!("{db}.k"), format!("{db}.t")]);
    wait_eu_caught_up(&p.sf_topic, &sf_position().await, Duration::from_secs(180)).await;
    verify(&p, std::slice::from_ref(&db));
    p.stop();
    drop_databases(&[db]).await;
}
