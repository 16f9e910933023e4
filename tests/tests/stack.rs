//! The local stack keeps the promises the pipeline relies on, checked against the real servers
//! (`make up`, `.stack/env`):
//!
//! - a broker restarted (gracefully or with SIGKILL) still serves what was written before;
//! - the SF MariaDB restarted keeps its GTID sequence going (same domain, next number);
//! - the registry restarted gracefully maps every schema id to the same schema as before;
//! - an idempotent producer's records come back in order with their headers from a given
//!   offset, and the watermark and time-based offset lookups answer correctly.
//!
//! These tests restart servers: run them alone and one at a time, as the Makefile does
//! (`cargo test -p continuum-tests --test stack -- --test-threads=1`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use continuum_common::kafka::read_at;
use continuum_schemas::{Registry, RegistrySettings, RetryPolicy};
use continuum_tests::{restart_part, stack, stack_cmd, unique_name, workspace_root, Site};
use mysql_async::prelude::Queryable;
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
    let s = stack();
    if s.broker_storage != "sqlite" {
        eprintln!(
            "SKIPPED: the brokers run with BROKER_STORAGE={}, which keeps nothing across a restart; durability is only promised with sqlite",
            s.broker_storage
        );
        return;
    }
    let site = &s.sf;
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
    c.query_drop(format!(
        "CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(20))"
    ))
    .await
    .unwrap();
    c.query_drop(format!("INSERT INTO `{db}`.t VALUES (1, 'before')"))
        .await
        .unwrap();
    let last: String = c.query_first("SELECT @@last_gtid").await.unwrap().unwrap();
    let before: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
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
    let after: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        gtid_of(&after, 1),
        Some((1, seq)),
        "@@gtid_binlog_pos after `stack.sh {how}` and start of sf-db: {after:?}, before: {before:?} (nothing else may write to SF during this suite)"
    );
    let kept: Option<String> = c
        .query_first(format!("SELECT v FROM `{db}`.t WHERE id = 1"))
        .await
        .unwrap();
    assert_eq!(
        kept.as_deref(),
        Some("before"),
        "the committed row survived"
    );
    c.query_drop(format!("INSERT INTO `{db}`.t VALUES (2, 'after')"))
        .await
        .unwrap();
    let next: String = c.query_first("SELECT @@last_gtid").await.unwrap().unwrap();
    assert_eq!(
        next,
        format!("1-1-{}", seq + 1),
        "the first write after the restart takes the next GTID"
    );
    c.query_drop(format!("DROP DATABASE `{db}`")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sf_mariadb_stopped_and_started_continues_gtid() {
    mariadb_restart_continues_gtid("stop").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sf_mariadb_killed_and_started_continues_gtid() {
    mariadb_restart_continues_gtid("kill").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sf_registry_restarted_keeps_schema_ids() {
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
    // another (as when a second topic captures a table after its ALTER). The other subject sorts
    // first, so a restore that took subjects in name order would register the shared schema there
    // first, after which rivven-schema adds no version 2 to the evolving subject.
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

    stack_cmd("stop", &site.registry_part());
    // The start replays the dump and refuses to serve if any subject's ids differ.
    stack_cmd("start", &site.registry_part());

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
    let consumer: BaseConsumer = site
        .consumer_config("test-offsets")
        .create()
        .expect("consumer");
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

/// Kafka answers "no such offset" (-1, `Offset::End`) for a time after the last record. tansu
/// 0.6.0 with sqlite storage answers offset 0 instead (tansu-storage `lite.rs` falls back to
/// `Some(0)`), which would send a client that trusts it back to the start of the topic. This test
/// pins down that gap, and that it is detectable: the record at the answered offset is older
/// than the time asked for. Continuum never trusts the broker alone here (see
/// `continuum-consumer`'s `topic::offset_for_time`, which checks the answer against record
/// timestamps and falls back to a binary search over them).
#[tokio::test(flavor = "multi_thread")]
async fn offsets_for_times_after_the_last_record_is_the_end_or_detectably_wrong() {
    let site = &stack().sf;
    let (topic, base, step) = timed_topic(site, "after_last").await;
    let consumer: BaseConsumer = site
        .consumer_config("test-offsets")
        .create()
        .expect("consumer");
    let ts = base + 9 * step + 1;
    match offset_for_time(&consumer, &topic, ts) {
        Ok(Offset::End) => {}
        Ok(Offset::Offset(o)) => {
            let rec = read_at(&consumer, &topic, o, Duration::from_secs(10))
                .expect("read")
                .expect("a record at the answered offset");
            let rts = rec.timestamp_ms.expect("timestamp");
            assert!(
                rts < ts,
                "the broker answered offset {o} for time {ts}, and the record there has timestamp {rts}: \
                 a wrong answer a client cannot detect"
            );
            eprintln!("broker gap confirmed: offsets_for_times({ts}) after the last record answered offset {o} (timestamp {rts}) instead of the end");
        }
        other => panic!("offsets_for_times for a time after the last record: {other:?}"),
    }
}

/// tansu 0.6.0's sqlite schema has no index on `header (topition, offset_id)`, and every
/// fetched record looks its headers up by those columns, so reads slowed down with every record
/// ever written (measured: 20k records took minutes to read back with 480k headers stored,
/// 6 s with the index). scripts/stack.sh adds the index when it starts a broker; this checks
/// that both brokers have it.
#[test]
fn broker_storage_has_the_header_index() {
    let s = stack();
    if s.broker_storage != "sqlite" {
        return;
    }
    let dir = std::env::var("STACK_DIR")
        .unwrap_or_else(|_| workspace_root().join(".stack").display().to_string());
    for part in ["sf-broker", "eu-broker"] {
        let db = format!("{dir}/{part}/{part}.db");
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys; c=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro', uri=True); \
                 print([r[1] for r in c.execute('PRAGMA index_list(header)')])",
                &db,
            ])
            .output()
            .expect("python3");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("continuum_header_topition_offset"),
            "{db} lacks the header index (stdout {text}, stderr {})",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// tansu 0.6.0 never serves a record larger than its fetch cap (5 MiB), whatever the client asks
/// for: a fetch at that offset returns nothing, so every reader would wait there forever, with no
/// error. Kafka serves it (KIP-74). So the stack's configs (`config/*.toml`) set
/// `producer.max_record_bytes` below the cap, and the producer stops with an error that names the
/// table and the key instead. This checks both sides of that limit: the largest record the
/// producer lets through with the stack's config comes back, and one over 5 MiB does not. If a
/// later tansu serves it, this test fails; then the limit can go.
#[tokio::test(flavor = "multi_thread")]
async fn tansu_0_6_0_serves_no_record_over_its_5_mib_fetch_cap() {
    let site = &stack().sf;
    let cfg = continuum_common::SiteConfig::from_file(&workspace_root().join("config/sf.toml"))
        .expect("config/sf.toml");
    let limit = cfg.producer.max_record_bytes;
    assert!(
        limit < 5 << 20,
        "config/sf.toml: producer.max_record_bytes = {limit} must stay under tansu's 5 MiB cap"
    );
    // The producer refuses a record whose key and value come within 512 bytes of the limit.
    let largest_allowed = limit - 512;
    let over = (5 << 20) + (64 << 10);
    let topic = unique_name("large");
    site.create_topic(&topic, 1).await;
    let producer: FutureProducer = site
        .producer_config("test-large")
        .set("message.max.bytes", (64 << 20).to_string())
        .create()
        .expect("producer");
    // Incompressible bytes: what tansu stores and serves is the size that counts.
    let payload = |n: usize| -> Vec<u8> { (0..n).map(|_| rand::random::<u8>()).collect() };
    let sizes = [largest_allowed, over, 10];
    for (i, n) in sizes.iter().enumerate() {
        let value = payload(*n);
        producer
            .send(
                FutureRecord::to(&topic)
                    .partition(0)
                    .key("k")
                    .payload(&value)
                    .headers(headers_for(i)),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("producing {n} bytes to {topic}: {e}"));
    }
    // Fetch sizes as the pipeline sets them (5 MiB), and far larger ones.
    for fetch in [5usize << 20, 100 << 20] {
        let consumer: BaseConsumer = site
            .consumer_config("test-large")
            .set("fetch.max.bytes", fetch.to_string())
            .set("max.partition.fetch.bytes", fetch.to_string())
            .set("receive.message.max.bytes", (200 << 20).to_string())
            .create()
            .expect("consumer");
        let (_, high) = consumer
            .fetch_watermarks(&topic, 0, READ)
            .expect("watermarks");
        assert_eq!(high, 3, "all three records were written");
        let first = read_at(&consumer, &topic, 0, READ)
            .unwrap_or_else(|e| panic!("fetch {fetch}: reading offset 0: {e}"))
            .unwrap_or_else(|| {
                panic!("fetch {fetch}: offset 0 ({largest_allowed} bytes) never came back")
            });
        assert_eq!(
            first.value.map(|v| v.len()),
            Some(largest_allowed),
            "fetch {fetch}: the largest record the stack's producer allows comes back whole"
        );
        let second = read_at(&consumer, &topic, 1, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("fetch {fetch}: reading offset 1: {e}"));
        assert!(
            second.is_none(),
            "fetch {fetch}: tansu served the {over}-byte record at offset 1; if this tansu serves records over 5 MiB, the stack's max_record_bytes limit can go"
        );
    }
}
