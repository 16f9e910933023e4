//! The local stack keeps the promises the pipeline relies on, checked against the real servers
//! (`make up`, `.stack/env`): Apache Kafka and Apicurio Registry, as a site runs them.
//!
//! - each site's broker is an Apache Kafka JVM, and a stock client's transaction commits on it;
//! - a broker restarted (gracefully or with SIGKILL) still serves what was written before;
//! - the SF MariaDB restarted keeps its GTID sequence going (same domain, next number);
//! - the registry answers a stock Confluent client, and restarted (gracefully or with SIGKILL)
//!   maps every schema id to the same schema as before;
//! - an idempotent producer's records come back in order with their headers from a given
//!   offset, and the watermark and time-based offset lookups answer as Kafka documents them;
//! - a record over a topic's `max.message.bytes` is refused, one under it is served whole even
//!   to a consumer with a smaller fetch size, and a gapless idempotent writer writes nothing
//!   after a refused record.
//!
//! These tests restart servers: run them alone and one at a time, as the Makefile does
//! (`cargo test -p continuum-tests --test stack -- --test-threads=1`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use continuum_common::kafka::read_at;
use continuum_schemas::{Registry, RegistrySettings, RetryPolicy};
use continuum_tests::check::{exec_all, query_one};
use continuum_tests::{
    restart_part, stack, stack_python, unique_name, wait_for_blocking, workspace_root, Site,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, Timestamp, TopicPartitionList};

const READY: Duration = Duration::from_secs(60);
const READ: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Headers shaped like the pipeline's, plus a binary one.
fn headers_for(i: usize) -> OwnedHeaders {
    let pos = format!("txn:1-1-{}:0:last:1-1-{}", i + 1, i);
    let bin = [0u8, 255, i as u8];
    OwnedHeaders::new()
        .insert(Header {
            key: "continuum.kind",
            value: Some("row"),
        })
        .insert(Header {
            key: "continuum.pos",
            value: Some(pos.as_str()),
        })
        .insert(Header {
            key: "bin",
            value: Some(&bin[..]),
        })
}

fn headers_of(m: &OwnedMessage) -> Vec<(String, Option<Vec<u8>>)> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

fn expected_headers(i: usize) -> Vec<(String, Option<Vec<u8>>)> {
    let h = headers_for(i);
    h.iter()
        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
        .collect()
}

/// Produces `n` records (key `k<i>`, value `v<i>`, headers) with an idempotent producer, all in
/// flight at once, and returns the offsets the broker acknowledged, in send order.
async fn produce(
    site: &Site,
    topic: &str,
    n: usize,
    first: usize,
    ts: Option<(i64, i64)>,
) -> Vec<i64> {
    let producer: FutureProducer = site
        .producer_config("test-producer")
        .create()
        .expect("producer");
    let keys: Vec<String> = (first..first + n).map(|i| format!("k{i}")).collect();
    let values: Vec<String> = (first..first + n).map(|i| format!("v{i}")).collect();
    let mut pending = Vec::new();
    for (j, i) in (first..first + n).enumerate() {
        let mut rec = FutureRecord::to(topic)
            .partition(0)
            .key(&keys[j])
            .payload(&values[j])
            .headers(headers_for(i));
        if let Some((base, step)) = ts {
            rec = rec.timestamp(base + step * i as i64);
        }
        pending.push(
            producer
                .send_result(rec)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    let mut offsets = Vec::new();
    for p in pending {
        let d = p.await.expect("delivery future").unwrap_or_else(|(e, _)| {
            panic!("{} cluster: delivery to {topic} failed: {e}", site.name)
        });
        offsets.push(d.offset);
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
    offsets
}

/// Checks that `msgs` are records `first..` as [`produce`] wrote them.
fn check_records(msgs: &[OwnedMessage], first: usize, first_offset: i64) {
    for (j, m) in msgs.iter().enumerate() {
        let i = first + j;
        assert_eq!(
            m.offset(),
            first_offset + j as i64,
            "offsets come back in order, without gaps"
        );
        assert_eq!(
            m.key(),
            Some(format!("k{i}").as_bytes()),
            "key of offset {}",
            m.offset()
        );
        assert_eq!(
            m.payload(),
            Some(format!("v{i}").as_bytes()),
            "value of offset {}",
            m.offset()
        );
        assert_eq!(
            headers_of(m),
            expected_headers(i),
            "headers of offset {}",
            m.offset()
        );
    }
}

async fn broker_restart_keeps_records(how: &str) {
    let site = &stack().sf;
    let topic = unique_name(&format!("broker_{how}"));
    site.create_topic(&topic, 1).await;
    let offsets = produce(site, &topic, 50, 0, None).await;
    assert_eq!(
        offsets,
        (0..50).collect::<Vec<i64>>(),
        "an idempotent producer's offsets before the restart"
    );

    restart_part(&site.broker_part(), how);

    let (low, high) = site.wait_topic_ready(&topic, READY);
    assert_eq!(
        (low, high),
        (0, 50),
        "watermarks of {topic} after `stack.sh {how}` and start of the broker"
    );
    let msgs = site.read_from(&topic, 0, 50, READ);
    check_records(&msgs, 0, 0);

    // Writing goes on where it stopped.
    let offsets = produce(site, &topic, 5, 50, None).await;
    assert_eq!(
        offsets,
        (50..55).collect::<Vec<i64>>(),
        "offsets written after the restart"
    );
    let msgs = site.read_from(&topic, 48, 7, READ);
    check_records(&msgs, 48, 48);
}

#[tokio::test(flavor = "multi_thread")]
async fn sf_broker_stopped_and_started_keeps_records() {
    broker_restart_keeps_records("stop").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sf_broker_killed_and_started_keeps_records() {
    broker_restart_keeps_records("kill").await;
}

/// `(server, seq)` of `domain` in a GTID position such as `1-1-42,2-2-7`.
fn gtid_of(pos: &str, domain: u32) -> Option<(u32, u64)> {
    pos.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .find_map(|g| {
            let mut it = g.split('-');
            let d: u32 = it.next()?.parse().ok()?;
            let srv: u32 = it.next()?.parse().ok()?;
            let seq: u64 = it.next()?.parse().ok()?;
            (d == domain).then_some((srv, seq))
        })
}

async fn mariadb_restart_continues_gtid(how: &str) {
    let site = &stack().sf;
    let db = site.create_database(&format!("gtid_{how}")).await;
    let mut c = site.admin_conn().await;
    exec_all(
        &mut c,
        [
            format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(20))"),
            format!("INSERT INTO `{db}`.t VALUES (1, 'before')"),
        ],
    )
    .await;
    let last: String = query_one(&mut c, "SELECT @@last_gtid").await;
    let before: String = query_one(&mut c, "SELECT @@gtid_binlog_pos").await;
    let (server, seq) = gtid_of(&before, 1)
        .unwrap_or_else(|| panic!("no domain 1 in SF's @@gtid_binlog_pos {before:?}"));
    assert_eq!(server, 1, "SF writes as server 1 in domain 1 ({before})");
    assert_eq!(
        last,
        format!("1-1-{seq}"),
        "the insert is the last transaction of domain 1"
    );
    drop(c);

    restart_part(&site.db_part(), how);

    let mut c = site.wait_db_ready(READY).await;
    let after: String = query_one(&mut c, "SELECT @@gtid_binlog_pos").await;
    assert_eq!(
        gtid_of(&after, 1),
        Some((1, seq)),
        "@@gtid_binlog_pos after `stack.sh {how}` and start of sf-db: {after:?}, before: {before:?} (nothing else may write to SF during this suite)"
    );
    let kept: String = query_one(&mut c, &format!("SELECT v FROM `{db}`.t WHERE id = 1")).await;
    assert_eq!(kept, "before", "the committed row survived");
    exec_all(
        &mut c,
        [format!("INSERT INTO `{db}`.t VALUES (2, 'after')")],
    )
    .await;
    let next: String = query_one(&mut c, "SELECT @@last_gtid").await;
    assert_eq!(
        next,
        format!("1-1-{}", seq + 1),
        "the first write after the restart takes the next GTID"
    );
    exec_all(&mut c, [format!("DROP DATABASE `{db}`")]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sf_mariadb_stopped_and_started_continues_gtid() {
    mariadb_restart_continues_gtid("stop").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sf_mariadb_killed_and_started_continues_gtid() {
    mariadb_restart_continues_gtid("kill").await;
}

/// Schemas registered before `stack.sh <how> sf-registry` and a start keep their ids: Apicurio
/// replays its journal topic (kafkasql) from the site's broker, with no dump to restore.
async fn registry_restart_keeps_schema_ids(how: &str) {
    let site = &stack().sf;
    let ns = unique_name("registry");
    let schemas: Vec<(String, String)> = (0..3)
        .map(|i| {
            let schema = format!(
                r#"{{"type":"record","name":"R{i}","namespace":"{ns}","fields":[{{"name":"f{i}","type":"long"}}]}}"#
            );
            (format!("{ns}-{ns}.R{i}"), schema)
        })
        .collect();
    let reg = || {
        Registry::new(&RegistrySettings {
            url: site.registry.clone(),
            ..Default::default()
        })
        .unwrap()
        .with_retry(RetryPolicy {
            max_elapsed: Some(READ),
        })
    };
    let before = reg();
    let mut ids = Vec::new();
    for (subject, schema) in &schemas {
        ids.push(before.register(subject, schema).await.expect("register"));
    }
    // One schema under two subjects: version 2 of an evolving subject, then version 1 of
    // another (as when a second topic captures a table after its ALTER). Both keep the id.
    let (evolving, copy) = (format!("{ns}-z.Evolving"), format!("{ns}-a.Copy"));
    let s_old = format!(
        r#"{{"type":"record","name":"E","namespace":"{ns}","fields":[{{"name":"a","type":"long"}}]}}"#
    );
    let s_new = format!(
        r#"{{"type":"record","name":"E","namespace":"{ns}","fields":[{{"name":"a","type":"long"}},{{"name":"b","type":["null","long"],"default":null}}]}}"#
    );
    let id_old = before
        .register(&evolving, &s_old)
        .await
        .expect("register v1");
    let id_new = before
        .register(&evolving, &s_new)
        .await
        .expect("register v2");
    assert_ne!(id_old, id_new);
    assert_eq!(
        before
            .register(&copy, &s_new)
            .await
            .expect("register the copy"),
        id_new
    );

    restart_part(&site.registry_part(), how);

    let after = reg(); // a fresh client: nothing cached
    for ((subject, schema), id) in schemas.iter().zip(&ids) {
        let got = after
            .schema_by_id(*id)
            .await
            .unwrap_or_else(|e| panic!("id {id} after the restart: {e}"));
        let got: serde_json::Value = serde_json::from_str(&got).unwrap();
        let want: serde_json::Value = serde_json::from_str(schema).unwrap();
        assert_eq!(
            got, want,
            "schema id {id} ({subject}) maps to the same schema after the restart"
        );
        assert_eq!(
            after.register(subject, schema).await.unwrap(),
            *id,
            "re-registering {subject} gives the same id"
        );
    }
    let after_shared = reg();
    assert_eq!(
        after_shared.register(&evolving, &s_new).await.unwrap(),
        id_new
    );
    assert_eq!(after_shared.register(&copy, &s_new).await.unwrap(), id_new);
    assert_eq!(
        after_shared.register(&evolving, &s_old).await.unwrap(),
        id_old
    );
    let fresh = format!(r#"{{"type":"record","name":"Fresh","namespace":"{ns}","fields":[]}}"#);
    let new_id = after
        .register(&format!("{ns}-{ns}.Fresh"), &fresh)
        .await
        .unwrap();
    assert!(
        new_id > *ids.iter().max().unwrap(),
        "a new schema gets a new id ({new_id}), never an old one ({ids:?})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sf_registry_stopped_and_started_keeps_schema_ids() {
    registry_restart_keeps_schema_ids("stop").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sf_registry_killed_and_started_keeps_schema_ids() {
    registry_restart_keeps_schema_ids("kill").await;
}

/// Apicurio's Confluent-compatible API, as a stock Confluent client (confluent-kafka's
/// `SchemaRegistryClient`) uses it at `SF_REGISTRY`: register, look up by id, by subject and
/// version, and list subjects.
#[test]
fn sf_registry_answers_a_stock_confluent_client() {
    let site = &stack().sf;
    let ns = unique_name("ccompat");
    let out = stack_python(
        r#"
import json, sys
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
url, ns = sys.argv[1], sys.argv[2]
c = SchemaRegistryClient({"url": url})
text = json.dumps({"type": "record", "name": "R", "namespace": ns,
                   "fields": [{"name": "a", "type": "long"}]})
subject = f"{ns}-{ns}.R"
sid = c.register_schema(subject, Schema(text, "AVRO"))
assert c.register_schema(subject, Schema(text, "AVRO")) == sid, "registering again gives the same id"
got = c.get_schema(sid)
assert json.loads(got.schema_str) == json.loads(text), got.schema_str
latest = c.get_latest_version(subject)
assert (latest.schema_id, latest.version) == (sid, 1), (latest.schema_id, latest.version)
assert subject in c.get_subjects(), "the subject is listed"
print(sid)
"#,
        &[&site.registry, &ns],
    );
    let id: u32 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the Confluent client printed {out:?}, not a schema id"));
    assert!(id > 0);
}

/// Ten records with explicit create times one second apart, in the recent past, on a new topic.
async fn timed_topic(site: &Site, name: &str) -> (String, i64, i64) {
    let topic = unique_name(name);
    site.create_topic(&topic, 1).await;
    let base = now_ms() - 60_000;
    let step = 1_000;
    let offsets = produce(site, &topic, 10, 0, Some((base, step))).await;
    assert_eq!(
        offsets,
        (0..10).collect::<Vec<i64>>(),
        "acknowledged offsets, in send order"
    );
    (topic, base, step)
}

/// A client of `site`'s brokers to ask them for offsets.
fn offsets_client(site: &Site) -> BaseConsumer {
    site.consumer_config("test-offsets")
        .create()
        .expect("consumer")
}

/// Asks the broker for the offset of `ts` (ListOffsets by time).
fn offset_for_time(consumer: &BaseConsumer, topic: &str, ts: i64) -> Result<Offset, String> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(ts))
        .unwrap();
    let res = consumer
        .offsets_for_times(tpl, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let e = res
        .find_partition(topic, 0)
        .ok_or("partition 0 missing from the answer")?;
    e.error().map_err(|e| e.to_string())?;
    Ok(e.offset())
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotent_producer_records_come_back_in_order_with_headers_from_an_offset() {
    let site = &stack().sf;
    let (topic, base, step) = timed_topic(site, "fetch").await;
    let msgs = site.read_from(&topic, 3, 7, READ);
    check_records(&msgs, 3, 3);
    for m in &msgs {
        assert_eq!(
            m.timestamp(),
            Timestamp::CreateTime(base + step * m.offset()),
            "create time of offset {}",
            m.offset()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watermarks_and_offsets_for_times_answer_correctly() {
    let site = &stack().sf;
    let (topic, base, step) = timed_topic(site, "offsets").await;
    let consumer = offsets_client(site);
    // Every answer is checked, and all wrong ones are reported together.
    let mut wrong = Vec::new();
    match consumer.fetch_watermarks(&topic, 0, Duration::from_secs(10)) {
        Ok((0, 10)) => {}
        Ok(wm) => wrong.push(format!(
            "fetch_watermarks (ListOffsets earliest, latest) = {wm:?}, want (0, 10)"
        )),
        Err(e) => wrong.push(format!("fetch_watermarks: {e}")),
    }
    let cases = [
        ("before the first record", base - 10_000, 0),
        ("exactly the first record's time", base, 0),
        ("exactly record 3's time", base + 3 * step, 3),
        ("between records 3 and 4", base + 3 * step + step / 2, 4),
        ("exactly the last record's time", base + 9 * step, 9),
    ];
    for (what, ts, want) in cases {
        match offset_for_time(&consumer, &topic, ts) {
            Ok(Offset::Offset(o)) if o == want => {}
            Ok(o) => wrong.push(format!(
                "offsets_for_times {what} (ts {ts}) = {o:?}, want Offset({want})"
            )),
            Err(e) => wrong.push(format!("offsets_for_times {what} (ts {ts}): {e}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "the broker at {} answered wrongly:\n  {}",
        site.brokers,
        wrong.join("\n  ")
    );
}

/// Kafka answers "no such offset" (-1, `Offset::End`) for a time after the last record, never
/// an offset inside the topic (a client that trusted such an answer would go back in time).
#[tokio::test(flavor = "multi_thread")]
async fn offsets_for_times_after_the_last_record_is_the_end() {
    let site = &stack().sf;
    let (topic, base, step) = timed_topic(site, "after_last").await;
    let consumer = offsets_client(site);
    let ts = base + 9 * step + 1;
    assert_eq!(
        offset_for_time(&consumer, &topic, ts),
        Ok(Offset::End),
        "offsets_for_times for a time after the last record of {topic}"
    );
}

/// `.stack/pids/sf-broker.pid` is an Apache Kafka JVM (main class `kafka.Kafka`), and a stock
/// client (confluent-kafka) commits and aborts transactions on it: only the committed records
/// reach a `read_committed` consumer.
#[test]
fn sf_broker_is_apache_kafka_and_commits_a_stock_clients_transaction() {
    let site = &stack().sf;
    let dir = std::env::var("STACK_DIR")
        .unwrap_or_else(|_| workspace_root().join(".stack").display().to_string());
    let pid = std::fs::read_to_string(format!("{dir}/pids/sf-broker.pid")).expect("sf-broker.pid");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim()))
        .unwrap_or_else(|e| panic!("sf-broker pid {}: {e}", pid.trim()));
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(
        args.first().is_some_and(|a| a.ends_with("/java"))
            && args.iter().any(|a| a == "kafka.Kafka"),
        "sf-broker (pid {}) is not a kafka.Kafka JVM: {args:?}",
        pid.trim()
    );

    let topic = unique_name("txn");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(site.create_topic(&topic, 1));
    stack_python(
        r#"
import sys
from confluent_kafka import Producer
brokers, topic = sys.argv[1], sys.argv[2]
p = Producer({"bootstrap.servers": brokers, "transactional.id": topic})
p.init_transactions(60)
def txn(prefix, n, commit):
    p.begin_transaction()
    for i in range(n):
        p.produce(topic, key=f"{prefix}{i}", value=f"{prefix} {i}", partition=0)
    p.flush(30)
    (p.commit_transaction if commit else p.abort_transaction)(30)
txn("committed-a", 3, True)
txn("aborted", 2, False)
txn("committed-b", 1, True)
"#,
        &[&site.brokers, &topic],
    );
    let msgs = site.read_from(&topic, 0, 4, READ);
    let values: Vec<String> = msgs
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(
        values,
        [
            "committed-a 0",
            "committed-a 1",
            "committed-a 2",
            "committed-b 0"
        ],
        "a read_committed consumer sees the committed transactions only"
    );
    // Three transactions' records plus their three commit or abort markers.
    let consumer: BaseConsumer = site.consumer_config("test-txn").create().unwrap();
    let (_, high) = consumer.fetch_watermarks(&topic, 0, READ).unwrap();
    assert_eq!(high, 9, "6 records and 3 transaction markers in {topic}");
}

/// Random bytes: compression cannot shrink them, so the size sent is the size the broker sees.
fn incompressible(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

/// Settings as Continuum's writers build them, for the SF cluster.
fn continuum_site() -> continuum_common::SiteConfig {
    let site = &stack().sf;
    continuum_common::SiteConfig::from_toml(&format!(
        "site = \"sf\"\n[database]\nuser = \"u\"\n[sites.sf]\nbrokers = \"{}\"\nregistry = {{ url = \"{}\" }}\n",
        site.brokers, site.registry
    ))
    .expect("site config")
}

/// Kafka's record limit, both sides of it. A topic created with the cluster's defaults takes
/// about 1 MiB (`message.max.bytes`); a changelog topic that Continuum creates takes
/// `producer.max_record_bytes` (its `max.message.bytes`), and a record just under that comes back
/// whole to a consumer whose fetch size is far smaller (KIP-74).
#[tokio::test(flavor = "multi_thread")]
async fn a_record_over_the_topic_limit_is_refused_and_one_under_it_is_served_whole() {
    use continuum_common::kafka::{base_config, ensure_changelog_topic, topic_max_message_bytes};
    let site = &stack().sf;
    let cfg = continuum_site();
    let admin = base_config("sf", cfg.local(), "test-limit").unwrap();

    let plain = unique_name("limit_default");
    site.create_topic(&plain, 1).await;
    let default_max = topic_max_message_bytes(&admin, &plain, READ).await.unwrap();
    assert!(
        (1 << 20..2 << 20).contains(&default_max),
        "a topic with the cluster's defaults takes about 1 MiB, not {default_max} bytes"
    );
    let producer: FutureProducer = site
        .producer_config("test-limit")
        .set("message.max.bytes", (64 << 20).to_string())
        .create()
        .unwrap();
    let over = incompressible(2 << 20);
    let refused = producer
        .send(
            FutureRecord::to(&plain)
                .partition(0)
                .key("k")
                .payload(&over),
            Duration::from_secs(30),
        )
        .await;
    match refused {
        Err((e, _)) => assert_eq!(
            e.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge),
            "a 2 MiB record to {plain}: {e}"
        ),
        Ok(d) => panic!(
            "the broker took a 2 MiB record into {plain} (offset {})",
            d.offset
        ),
    }

    let big = unique_name("limit_changelog");
    let limit = 8 << 20;
    ensure_changelog_topic(&admin, &big, limit, READ)
        .await
        .unwrap();
    assert_eq!(
        topic_max_message_bytes(&admin, &big, READ).await.unwrap(),
        limit
    );
    let under = incompressible(limit - 600);
    producer
        .send(
            FutureRecord::to(&big).partition(0).key("k").payload(&under),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("a record of {} bytes into {big}: {e}", under.len()));
    let consumer: BaseConsumer = site
        .consumer_config("test-limit")
        .set("fetch.max.bytes", (1 << 20).to_string())
        .set("max.partition.fetch.bytes", (1 << 20).to_string())
        .set("receive.message.max.bytes", (64 << 20).to_string())
        .create()
        .unwrap();
    let back = read_at(&consumer, &big, 0, READ)
        .expect("read")
        .expect("the record under the limit comes back");
    assert_eq!(
        back.value.as_deref(),
        Some(&under[..]),
        "it comes back whole"
    );
}

/// A record the broker refuses stops Continuum's writer with nothing after it written:
/// `enable.gapless.guarantee`. Without it librdkafka would drop the refused record and deliver
/// the ones queued behind it, and a writer resuming after the topic's last record would skip
/// the refused one for good.
#[tokio::test(flavor = "multi_thread")]
async fn a_gapless_writer_writes_nothing_after_a_refused_record() {
    use continuum_common::kafka::producer_config;
    use continuum_common::writer::{SendError, Writer};
    let site = &stack().sf;
    let cfg = continuum_site();
    let topic = unique_name("gapless");
    site.create_topic(&topic, 1).await; // the cluster's ~1 MiB limit
    let pcfg = producer_config("sf", cfg.local(), "test-gapless", &cfg.producer).unwrap();
    let writer = Writer::new(pcfg, &topic, "test_delivered").unwrap();
    let huge = incompressible(2 << 20);
    let send = |i: usize, value: &[u8]| {
        let pos = format!("txn:1-1-{i}:0:last:1-1-{}", i - 1);
        let headers = OwnedHeaders::new().insert(Header {
            key: continuum_schemas::HEADER_POS,
            value: Some(pos.as_bytes()),
        });
        let key = format!("k{i}");
        let value = value.to_vec();
        let (w, topic) = (&writer, &topic);
        async move {
            w.send(
                rdkafka::producer::BaseRecord::<[u8], [u8]>::to(topic)
                    .key(key.as_bytes())
                    .payload(&value[..])
                    .headers(headers),
            )
            .await
        }
    };
    // One small record, the refused one, then more small ones queued right behind it.
    send(1, b"small").await.unwrap();
    let mut queued = vec![send(2, &huge).await];
    for i in 3..10 {
        queued.push(send(i, b"small").await);
    }
    let _ = writer.flush().await;
    match writer.check() {
        Err(SendError::Refused { position, size, .. }) => {
            assert_eq!(
                position, "txn:1-1-2:0:last:1-1-1",
                "the refused record is named"
            );
            assert_eq!(size, huge.len() + 2);
        }
        other => {
            panic!("the writer should report the refused record, not {other:?} (sends: {queued:?})")
        }
    }
    let consumer: BaseConsumer = site.consumer_config("test-gapless").create().unwrap();
    let high = wait_for_blocking("the watermark of the gapless topic", READ, || {
        consumer
            .fetch_watermarks(&topic, 0, READ)
            .ok()
            .map(|(_, h)| h)
    });
    assert_eq!(
        high, 1,
        "only the record before the refused one is in {topic}; nothing queued after it landed"
    );
    let msgs = site.read_from(&topic, 0, 1, READ);
    assert_eq!(msgs[0].key(), Some(&b"k1"[..]));
}
