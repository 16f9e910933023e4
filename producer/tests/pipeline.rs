//! The producer against the real local stack: snapshot and binlog paths agree for every column
//! type, kill -9 at random moments leaves every event in the topic exactly once, a second
//! producer is refused, `skip_replication` events are not captured, DDL mid-stream.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use rand::Rng;

use continuum_schemas::{
    Decoder, Gtid, Op, RecordAt, Registry, RegistrySettings, StreamPosition, StreamRecord,
};
use support::*;

async fn decoder() -> Decoder {
    Decoder::new(
        Registry::new(&RegistrySettings {
            url: stack().registry,
            ..Default::default()
        })
        .unwrap(),
    )
}

async fn decode_all(topic: &str) -> Vec<(i64, StreamRecord)> {
    let s = stack();
    let mut dec = decoder().await;
    let mut out = Vec::new();
    for r in read_topic(&s.brokers, topic) {
        let at = RecordAt {
            topic: topic.to_owned(),
            partition: 0,
            offset: r.offset,
        };
        let rec = dec
            .decode(&at, r.key.as_deref(), r.value.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(
            rec.position(),
            pos(&r),
            "header and payload positions agree at {at}"
        );
        out.push((r.offset, rec));
    }
    out
}

const ALL_TYPES: &str = "(
  id INT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED, mi MEDIUMINT, miu MEDIUMINT UNSIGNED,
  i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
  d65 DECIMAL(65,30), d10 DECIMAL(10,2), f FLOAT, dbl DOUBLE, b1 BIT(1), b64 BIT(64), bo BOOL,
  dt DATE, yr YEAR, dt0 DATETIME, dt6 DATETIME(6), ts0 TIMESTAMP NULL DEFAULT NULL, ts6 TIMESTAMP(6) NULL DEFAULT NULL,
  tm TIME, tm6 TIME(6),
  c CHAR(10), vc VARCHAR(100), tt TINYTEXT, tx TEXT, mt MEDIUMTEXT, lt LONGTEXT,
  bn BINARY(16), vb VARBINARY(100), tb TINYBLOB, bl BLOB, mb MEDIUMBLOB, lb LONGBLOB,
  en ENUM('a','b c','😀'), st SET('x','y','z','😀'), js JSON, g GEOMETRY, i4 INET4, i6 INET6, u UUID,
  `odd name ü` INT
)";

const ROWS: &str = "INSERT INTO t VALUES
 (1, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
  '-99999999999999999999999999999999999.999999999999999999999999999999', -99999999.99, -3.40282e38, -1.7976931348623157e308, b'0', b'0', FALSE,
  '1000-01-01', 1901, '1000-01-01 00:00:00', '1000-01-01 00:00:00.000000', '1970-01-01 00:00:01', '1970-01-01 00:00:01.000000',
  '-838:59:59', '-838:59:59.999999',
  '', '', '', '', '', '',
  X'00000000000000000000000000000000', X'', X'', X'', X'', X'',
  '😀', 'x,😀', '[]', ST_GeomFromText('POINT(0 0)'), '0.0.0.0', '::', '00000000-0000-0000-0000-000000000000', 0),
 (2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807, 18446744073709551615,
  '99999999999999999999999999999999999.999999999999999999999999999999', 99999999.99, 3.40282e38, 1.7976931348623157e308, b'1', b'1111111111111111111111111111111111111111111111111111111111111111', TRUE,
  '9999-12-31', 2155, '9999-12-31 23:59:59', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07', '2038-01-19 03:14:07.999999',
  '838:59:59', '838:59:59.999999',
  'tenchars!!', 'héllo 😀 𝄞', 'tiny', 'text', 'medium', 'long ✓',
  X'FFEEDDCCBBAA99887766554433221100', X'FF00FE', X'00', X'C328', X'FFFF', X'00FF00',
  'b c', 'x,z', '{\"k\": [1, 2.5, \"ü\"]}', ST_GeomFromText('LINESTRING(1 2, 3 4)', 4326), '255.255.255.255', '2001:db8::ff00:42:8329', '123e4567-e89b-12d3-a456-426655440000', 7),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 2, 1, 0, 0, 0, 0, 0, 0, 0, 9223372036854775808,
  '0.000000000000000000000000000001', 0.01, 1.5, 0.1, b'1', b'1000000000000000000000000000000000000000000000000000000000000001', 2,
  '0000-00-00', 0, '0000-00-00 00:00:00', '2024-00-15 12:00:00.5', '0000-00-00 00:00:00', '2024-05-06 07:08:09.123456',
  '25:00:00', '-00:00:00.000001',
  'trail  ', 'quote '' backslash \\\\ nul', '𝄞', '', '', '',
  X'01', X'00', X'', X'', X'', X'',
  '', '', 'null', ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))'), '10.0.0.1', '::1', '6ccd780c-baba-1026-9564-5b8c656024db', -1)";

/// Snapshot reads and binlog row images of the same rows are identical: same schema id, same
/// values, for every column type. The snapshot's `CREATE TABLE` keeps ENUM and SET members that
/// MariaDB itself prints as `?` (characters outside utf8mb3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_binlog_paths_produce_identical_records() {
    let p = TestPipeline::new("p_types");
    let mut c = admin().await;
    c.query_drop(format!("CREATE DATABASE {}", p.db))
        .await
        .unwrap();
    c.query_drop(format!("USE {}", p.db)).await.unwrap();
    c.query_drop("SET SESSION sql_mode = '', time_zone = '+00:00'")
        .await
        .unwrap();
    c.query_drop(format!("CREATE TABLE t {ALL_TYPES}"))
        .await
        .unwrap();
    c.query_drop(ROWS).await.unwrap();

    let mut prod = p.spawn(&[]);
    let s = stack();
    // Snapshot, then delete every row: the delete's before-images come from the binlog.
    wait_for("the snapshot end", Duration::from_secs(60), || async {
        read_topic(&s.brokers, &p.topic)
            .iter()
            .any(|r| matches!(pos(r), StreamPosition::At(_)))
            .then_some(())
    })
    .await;
    c.query_drop("DELETE FROM t ORDER BY id").await.unwrap();
    let target = gtid_binlog_pos(&mut c).await;
    wait_caught_up(&s.brokers, &p.topic, &target, Duration::from_secs(60)).await;
    prod.kill9();

    let raw = read_topic(&s.brokers, &p.topic);
    let recs = decode_all(&p.topic).await;
    let mut snap = BTreeMap::new();
    let mut deleted = BTreeMap::new();
    for ((_, rec), r) in recs.iter().zip(&raw) {
        if let StreamRecord::Change(ev) = rec {
            let id = format!("{:?}", ev.key());
            let schema_id = u32::from_be_bytes(r.value.as_ref().unwrap()[1..5].try_into().unwrap());
            match ev.op {
                Op::Read => {
                    snap.insert(id, (schema_id, ev.after.clone().unwrap(), ev.table.clone()))
                }
                Op::Delete => deleted.insert(
                    id,
                    (schema_id, ev.before.clone().unwrap(), ev.table.clone()),
                ),
                other => panic!("unexpected {other:?}"),
            };
        }
    }
    let create = recs
        .iter()
        .find_map(|(_, r)| match r {
            StreamRecord::SchemaChange(sc) if sc.ddl.starts_with("CREATE TABLE") => {
                Some(sc.ddl.clone())
            }
            _ => None,
        })
        .expect("the snapshot's CREATE TABLE");
    for want in ["enum('a','b c','😀')", "set('x','y','z','😀')"] {
        assert!(create.contains(want), "the snapshot's definition holds {want}:\n{create}");
    }
    assert_eq!(snap.len(), 4, "four snapshot reads");
    assert_eq!(deleted.len(), 4, "four deletes");
    for (id, (sid, row, shape)) in &snap {
        let (bid, brow, bshape) = &deleted[id];
        assert_eq!(shape.columns, bshape.columns, "shape of {id}");
        for (i, col) in shape.columns.iter().enumerate() {
            assert_eq!(
                row[i], brow[i],
                "row {id}, column {} ({})",
                col.name, col.ty
            );
        }
        assert_eq!(
            sid, bid,
            "snapshot and binlog use one schema id for row {id}"
        );
    }
    cleanup(&p.dir);
}

/// Kill -9 the producer at 20+ random moments during a multi-table workload with large
/// transactions: every event of every source transaction is in the topic exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_random_moments_loses_and_duplicates_nothing() {
    let p = TestPipeline::new("p_kill");
    let s = stack();
    let mut c = admin().await;
    c.query_drop(format!("CREATE DATABASE {}", p.db))
        .await
        .unwrap();
    for t in ["a", "b", "c"] {
        c.query_drop(format!(
            "CREATE TABLE {}.{t} (id BIGINT PRIMARY KEY, v VARCHAR(64), n INT)",
            p.db
        ))
        .await
        .unwrap();
    }
    // The snapshot (of empty tables) first; then the workload, with kills while it streams.
    let mut prod = p.spawn(&[]);
    wait_for("the snapshot end", Duration::from_secs(60), || async {
        read_topic(&s.brokers, &p.topic)
            .iter()
            .any(|r| matches!(pos(r), StreamPosition::At(_)))
            .then_some(())
    })
    .await;
    // Workload: small multi-table transactions, updates and deletes, and a few big ones.
    let db = p.db.clone();
    let workload = tokio::spawn(async move {
        let mut c = admin().await;
        let mut gtids: Vec<(Gtid, usize)> = Vec::new();
        let mut next_id: i64 = 1;
        let started = std::time::Instant::now();
        let mut round = 0;
        while started.elapsed() < Duration::from_secs(30) {
            round += 1;
            let mut tx = c.start_transaction(Default::default()).await.unwrap();
            let mut rows = 0;
            let big = round % 150 == 40;
            let n = if big { 3_000 } else { 1 + (round % 5) };
            for t in ["a", "b", "c"] {
                let values: Vec<String> = (0..n)
                    .map(|k| {
                        format!(
                            "({}, 'v{}', {})",
                            next_id + k as i64,
                            next_id + k as i64,
                            round
                        )
                    })
                    .collect();
                tx.query_drop(format!("INSERT INTO {db}.{t} VALUES {}", values.join(",")))
                    .await
                    .unwrap();
                rows += n;
                if !big {
                    tx.query_drop(format!(
                        "UPDATE {db}.{t} SET n = n + 1 WHERE id = {}",
                        next_id
                    ))
                    .await
                    .unwrap();
                    rows += 1;
                }
            }
            if round % 7 == 0 {
                tx.query_drop(format!("DELETE FROM {db}.a WHERE id = {}", next_id))
                    .await
                    .unwrap();
                rows += 1;
            }
            next_id += n as i64;
            tx.commit().await.unwrap();
            let g: String = c.query_first("SELECT @@last_gtid").await.unwrap().unwrap();
            gtids.push((g.parse().unwrap(), rows));
            if !big {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        gtids
    });

    let mut rng = rand::rng();
    let mut kills = 0;
    while !workload.is_finished() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..2000))).await;
        prod.kill9();
        kills += 1;
        prod = p.spawn(&[]);
    }
    let expected = workload.await.unwrap();
    let target = gtid_binlog_pos(&mut c).await;
    wait_caught_up(&s.brokers, &p.topic, &target, Duration::from_secs(600)).await;
    prod.kill9();
    assert!(kills >= 20, "only {kills} kills");

    // Every (gtid, index) exactly once, in GTID order, each transaction complete with `last`.
    let records = read_topic(&s.brokers, &p.topic);
    let mut seen: Vec<(Gtid, u64, bool)> = Vec::new();
    for r in &records {
        if let StreamPosition::Txn {
            gtid, index, last, ..
        } = pos(r)
        {
            seen.push((gtid, index, last));
        }
    }
    let mut per_tx: Vec<(Gtid, u64)> = Vec::new();
    let mut expect_index = 0u64;
    for (i, (g, idx, last)) in seen.iter().enumerate() {
        if *idx == 0 {
            if let Some((pg, _)) = per_tx.last() {
                assert!(pg.seq < g.seq, "transactions out of order: {pg} then {g}");
            }
            per_tx.push((*g, 0));
            expect_index = 0;
        }
        let cur = per_tx.last_mut().unwrap();
        assert_eq!(cur.0, *g, "event {i} of {g} interleaves with {}", cur.0);
        assert_eq!(
            *idx, expect_index,
            "transaction {g}: index {idx} where {expect_index} was due (duplicate or gap)"
        );
        expect_index += 1;
        cur.1 += 1;
        if i + 1 < seen.len() && seen[i + 1].1 != 0 {
            assert!(!last, "{g} index {idx} marked last but more follow");
        } else {
            assert!(
                *last,
                "{g} index {idx} is the final event but not marked last"
            );
        }
    }
    let got: HashMap<Gtid, u64> = per_tx.into_iter().collect();
    for (g, rows) in &expected {
        assert_eq!(
            got.get(g).copied(),
            Some(*rows as u64),
            "transaction {g}: rows in topic vs committed"
        );
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "no transactions beyond the workload's"
    );
    // Some restarts resumed inside a transaction (the topic's last record was not its last).
    let log = std::fs::read_to_string(p.dir.join("producer.log")).unwrap();
    let within = log.matches("decision=Within").count();
    assert!(within >= 1, "no kill landed inside a transaction");
    eprintln!(
        "{kills} kills ({within} resumed inside a transaction), {} transactions, {} records",
        expected.len(),
        records.len()
    );
    cleanup(&p.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_producer_on_the_same_topic_is_refused() {
    let p = TestPipeline::new("p_lock");
    let mut c = admin().await;
    c.query_drop(format!("CREATE DATABASE {}", p.db))
        .await
        .unwrap();
    let first = p.spawn(&[]);
    let s = stack();
    wait_for(
        "the first producer's snapshot",
        Duration::from_secs(60),
        || async { (!read_topic(&s.brokers, &p.topic).is_empty()).then_some(()) },
    )
    .await;
    let (ok, log) = p.run_to_exit(
        &["--server-id", &(p.server_id + 1).to_string()],
        Duration::from_secs(60),
    );
    assert!(!ok, "second producer must fail");
    assert!(
        log.contains("is held by connection") && log.contains("another continuum-producer for"),
        "{log}"
    );
    drop(first);
    cleanup(&p.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_replication_events_are_not_captured_and_ddl_changes_the_schema() {
    let p = TestPipeline::new("p_skip");
    let s = stack();
    let mut c = admin().await;
    c.query_drop(format!("CREATE DATABASE {}", p.db))
        .await
        .unwrap();
    c.query_drop(format!(
        "CREATE TABLE {}.t (id INT PRIMARY KEY, v INT)",
        p.db
    ))
    .await
    .unwrap();
    let mut prod = p.spawn(&[]);
    wait_for("the snapshot end", Duration::from_secs(60), || async {
        read_topic(&s.brokers, &p.topic)
            .iter()
            .any(|r| matches!(pos(r), StreamPosition::At(_)))
            .then_some(())
    })
    .await;
    c.query_drop(format!("INSERT INTO {}.t VALUES (1, 1)", p.db))
        .await
        .unwrap();
    let mut applier = admin().await;
    applier
        .query_drop("SET SESSION skip_replication = 1")
        .await
        .unwrap();
    applier
        .query_drop(format!("INSERT INTO {}.t VALUES (100, 100)", p.db))
        .await
        .unwrap();
    applier
        .query_drop(format!("UPDATE {}.t SET v = 2 WHERE id = 1", p.db))
        .await
        .unwrap();
    c.query_drop(format!(
        "ALTER TABLE {}.t ADD COLUMN w VARCHAR(10) DEFAULT 'x'",
        p.db
    ))
    .await
    .unwrap();
    c.query_drop(format!("INSERT INTO {}.t VALUES (2, 2, 'new')", p.db))
        .await
        .unwrap();
    let target = gtid_binlog_pos(&mut c).await;
    wait_caught_up(&s.brokers, &p.topic, &target, Duration::from_secs(60)).await;
    prod.kill9();

    let recs = decode_all(&p.topic).await;
    let mut kinds = Vec::new();
    for (_, r) in &recs {
        match r {
            StreamRecord::Change(ev) if ev.op != Op::Read => {
                let id = ev.after.as_ref().or(ev.before.as_ref()).unwrap()[0].clone();
                kinds.push(format!(
                    "{:?} {:?} cols={}",
                    ev.op,
                    id,
                    ev.table.columns.len()
                ));
            }
            StreamRecord::SchemaChange(sc) if sc.source.snapshot_id.is_none() => {
                kinds.push(format!("ddl {}", sc.ddl.contains("ADD COLUMN w")))
            }
            _ => {}
        }
    }
    assert_eq!(
        kinds,
        vec!["Insert Int(1) cols=2".to_string(), "ddl true".into(), "Insert Int(2) cols=3".into()],
        "skip_replication rows (id 100, the update) are absent; the row after the DDL has the new column"
    );
    let last_row = recs.iter().rev().find_map(|(_, r)| match r {
        StreamRecord::Change(ev) => Some(ev.clone()),
        _ => None,
    });
    let ev = last_row.unwrap();
    assert_eq!(ev.table.columns[2].name, "w");
    assert_eq!(
        ev.after.unwrap()[2],
        continuum_schemas::Value::Text("new".into())
    );
    cleanup(&p.dir);
}

/// Inserts rows 1, 2 and 3 into `db.t` (a LONGBLOB column), each in its own transaction; row 2
/// holds `big` random bytes. Random, so that compression cannot shrink the record: the broker
/// checks a batch's size as sent, compressed.
async fn insert_small_big_small(c: &mut mysql_async::Conn, db: &str, big: usize) {
    for (id, len) in [(1, 100), (2, big), (3, 100)] {
        let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        c.exec_drop(format!("INSERT INTO {db}.t VALUES (?, ?)"), (id, bytes))
            .await
            .unwrap();
    }
}

/// The ids of the rows of `t` in the topic, in order.
async fn ids_in_topic(topic: &str) -> Vec<i64> {
    decode_all(topic)
        .await
        .into_iter()
        .filter_map(|(_, r)| match r {
            StreamRecord::Change(ev) if ev.table.table == "t" => match ev.key().first() {
                Some(continuum_schemas::Value::Int(id)) => Some(*id),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A topic that takes smaller records than `producer.max_record_bytes` (its
/// `max.message.bytes` was set by hand): the producer reads the topic's limit, and stops at a
/// larger row change with an error naming the table, the key and both settings. Nothing after
/// it reaches the topic, and a restart stops at the same row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_with_a_lower_limit_stops_the_producer_naming_both_settings() {
    let p = TestPipeline::new("p_topiclimit");
    create_topic_with_limit(&p.topic, 65536).await;
    let mut c = admin().await;
    c.query_drop(format!("CREATE DATABASE {}", p.db)).await.unwrap();
    c.query_drop(format!("CREATE TABLE {}.t (id INT PRIMARY KEY, b LONGBLOB)", p.db))
        .await
        .unwrap();
    let mut producer = p.spawn(&[]);
    wait_for("the producer to stream the binlog", Duration::from_secs(60), || async {
        producer.log().contains("streaming the binlog").then_some(())
    })
    .await;
    insert_small_big_small(&mut c, &p.db, 100_000).await;
    let expect = |what: &str, log: &str| {
        for want in [
            "record too large".to_owned(),
            format!("table {}.t, primary key (Int(2))", p.db),
            format!("topic {}'s max.message.bytes = 65536", p.topic),
            "producer.max_record_bytes = 67108864".to_owned(),
        ] {
            assert!(log.contains(&want), "{what}: the error names {want:?}:\n{log}");
        }
    };
    let (ok, log) = producer.wait_exit(Duration::from_secs(60));
    assert!(!ok);
    expect("first run", &log);
    let (ok, log) = p.run_to_exit(&[], Duration::from_secs(60));
    assert!(!ok, "a restarted producer must stop again:\n{log}");
    expect("restart", &log);
    assert_eq!(ids_in_topic(&p.topic).await, [1], "only the row before the large one is in the topic");
    cleanup(&p.dir);
}

/// The broker refuses a record the producer sent (the topic's limit was lowered while the
/// producer ran, after it had read the old one): with `enable.gapless.guarantee` nothing queued
/// after the refused record is written, and the producer stops with an error naming the record's
/// position and the setting to raise, instead of resuming past a gap. Restarted, it reads the
/// new limit and stops at the same row, naming the table and the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_broker_refuses_stops_the_producer_with_nothing_after_it() {
    let p = TestPipeline::new("p_refused");
    let mut c = admin().await;
    c.query_drop(format!("CREATE DATABASE {}", p.db)).await.unwrap();
    c.query_drop(format!("CREATE TABLE {}.t (id INT PRIMARY KEY, b LONGBLOB)", p.db))
        .await
        .unwrap();
    let mut producer = p.spawn(&[]);
    wait_for("the producer to stream the binlog", Duration::from_secs(60), || async {
        producer.log().contains("streaming the binlog").then_some(())
    })
    .await;
    set_topic_limit(&p.topic, 65536).await;
    insert_small_big_small(&mut c, &p.db, 100_000).await;
    let (ok, log) = producer.wait_exit(Duration::from_secs(60));
    assert!(!ok);
    for want in [
        format!("the {} broker refused the record at position txn:", p.topic),
        "Nothing after it was written".to_owned(),
        "Raise the topic's max.message.bytes".to_owned(),
    ] {
        assert!(log.contains(&want), "the error names {want:?}:\n{log}");
    }
    let (ok, log) = p.run_to_exit(&[], Duration::from_secs(60));
    assert!(!ok, "a restarted producer must stop again:\n{log}");
    assert!(
        log.contains(&format!("table {}.t, primary key (Int(2))", p.db))
            && log.contains(&format!("topic {}'s max.message.bytes = 65536", p.topic)),
        "restarted, it names the table, the key and the topic's limit:\n{log}"
    );
    assert_eq!(ids_in_topic(&p.topic).await, [1], "only the row before the refused one is in the topic");
    cleanup(&p.dir);
}

/// A row change whose record exceeds `producer.max_record_bytes` stops the producer with an
/// error that names the table and the key; nothing after it reaches the topic, and a restart
/// stops at the same row again instead of skipping it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_max_record_bytes_stops_the_producer_and_is_never_skipped() {
    let p = TestPipeline::new("p_large");
    p.set_producer_option("max_record_bytes = 65536");
    let mut c = admin().await;
    c.query_drop(format!("CREATE DATABASE {}", p.db))
        .await
        .unwrap();
    c.query_drop(format!(
        "CREATE TABLE {}.t (id INT PRIMARY KEY, b LONGBLOB)",
        p.db
    ))
    .await
    .unwrap();
    let mut producer = p.spawn(&[]);
    wait_for(
        "the producer to stream the binlog",
        Duration::from_secs(60),
        || async {
            producer
                .log()
                .contains("streaming the binlog")
                .then_some(())
        },
    )
    .await;
    for (id, len) in [(1, 100), (2, 100_000), (3, 100)] {
        c.query_drop(format!(
            "INSERT INTO {}.t VALUES ({id}, REPEAT('x', {len}))",
            p.db
        ))
        .await
        .unwrap();
    }
    let expect = |log: &str| {
        assert!(
            log.contains("record too large")
                && log.contains(&format!("table {}.t, primary key (Int(2))", p.db))
                && log.contains("producer.max_record_bytes = 65536"),
            "the error names the table, the key and the setting:\n{log}"
        );
    };
    // It stops at the large row.
    let (_, log) = producer.wait_exit(Duration::from_secs(60));
    expect(&log);

    // Restarted, it resumes after the last record in the topic and stops at the same row.
    let (ok, log) = p.run_to_exit(&[], Duration::from_secs(60));
    assert!(!ok, "a restarted producer must stop again:\n{log}");
    expect(&log);

    let ids: Vec<i64> = decode_all(&p.topic)
        .await
        .into_iter()
        .filter_map(|(_, r)| match r {
            StreamRecord::Change(ev) if ev.table.table == "t" => match ev.key().first() {
                Some(continuum_schemas::Value::Int(id)) => Some(*id),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        ids,
        [1],
        "only the row before the large one is in the topic"
    );
    cleanup(&p.dir);
}
