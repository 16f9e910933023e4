//! The producer against the real local stack: snapshot and binlog paths agree for every column
//! type, kill -9 at random moments leaves every event in the topic exactly once, a second
//! producer is refused, `skip_replication` events are not captured, DDL mid-stream.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use rand::Rng;

use continuum_schemas::{Gtid, Op, RecordAt, StreamPosition, StreamRecord};
use support::*;

/// (START, END): the offsets in `recs` of the last finished snapshot's markers.
fn last_snapshot(recs: &[(i64, StreamRecord)]) -> (usize, usize) {
    use continuum_schemas::SnapshotPhase;
    let marker = |phase: SnapshotPhase| move |(_, r): &(i64, StreamRecord)| matches!(r, StreamRecord::Snapshot(m) if m.phase == phase);
    let end = recs
        .iter()
        .rposition(marker(SnapshotPhase::End))
        .expect("a finished snapshot");
    let start = recs[..end]
        .iter()
        .rposition(marker(SnapshotPhase::Start))
        .expect("the finished snapshot's start");
    (start, end)
}

/// Waits (a minute at most) until a statement that is `LIKE info` waits for a table metadata
/// lock on SF (one a test holds with `LOCK TABLES`).
async fn wait_for_metadata_lock(what: &str, info: &str) {
    let q = format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '{info}' AND STATE LIKE 'Waiting for table metadata lock'"
    );
    wait_for(what, Duration::from_secs(60), || async {
        let n: i64 = admin().await.query_first(&q).await.unwrap().unwrap();
        (n > 0).then_some(())
    })
    .await;
}

/// Waits (a minute at most) until `producer` logs that it streams the binlog, naming `what` it
/// waits for.
async fn wait_streaming(what: &str, producer: &ProducerProc) {
    wait_for(what, Duration::from_secs(60), || async {
        producer
            .log()
            .contains("streaming the binlog")
            .then_some(())
    })
    .await;
}

/// Waits (a minute at most) until the producer's first snapshot of `topic` has ended: a record
/// at a binlog position (`at:`) is there.
async fn wait_snapshot_end(topic: &str) {
    let brokers = stack().brokers;
    wait_for("the snapshot end", Duration::from_secs(60), || async {
        read_topic(&brokers, topic)
            .iter()
            .any(|r| matches!(pos(r), StreamPosition::At(_)))
            .then_some(())
    })
    .await;
}

/// Waits (a minute at most) until `p`'s topic holds everything the source's binlog holds now
/// (`c` is a connection to the source).
async fn wait_topic_caught_up(p: &TestPipeline, c: &mut mysql_async::Conn) {
    let target = gtid_binlog_pos(c).await;
    wait_caught_up(&stack().brokers, &p.topic, &target, Duration::from_secs(60)).await;
}

/// Holds tables `a` and `b` of `p`'s database (`LOCK TABLES`), starts the producer, waits until
/// its snapshot waits for that lock in a statement `LIKE info`, then runs `changes` on the
/// connection that holds the lock and unlocks; returns the producer.
async fn change_while_the_snapshot_waits(
    p: &TestPipeline,
    what: &str,
    info: &str,
    changes: &[&str],
) -> ProducerProc {
    let mut locker = admin().await;
    p.sql(&mut locker, &["LOCK TABLES {db}.a WRITE, {db}.b WRITE"])
        .await;
    let producer = p.spawn(&[]);
    wait_for_metadata_lock(what, info).await;
    p.sql(&mut locker, changes).await;
    p.sql(&mut locker, &["UNLOCK TABLES"]).await;
    producer
}

async fn decode_all(topic: &str) -> Vec<(i64, StreamRecord)> {
    decode_records(topic)
        .await
        .into_iter()
        .map(|(r, rec)| (r.offset, rec))
        .collect()
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
    let (p, mut c) = TestPipeline::with_database(
        "p_types",
        &[
            "USE {db}",
            "SET SESSION sql_mode = '', time_zone = '+00:00'",
        ],
    )
    .await;
    c.query_drop(format!("CREATE TABLE t {ALL_TYPES}"))
        .await
        .unwrap();
    c.query_drop(ROWS).await.unwrap();

    let mut prod = p.spawn(&[]);
    let s = stack();
    // Snapshot, then delete every row: the delete's before-images come from the binlog.
    wait_snapshot_end(&p.topic).await;
    c.query_drop("DELETE FROM t ORDER BY id").await.unwrap();
    wait_topic_caught_up(&p, &mut c).await;
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
        assert!(
            create.contains(want),
            "the snapshot's definition holds {want}:\n{create}"
        );
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
    let (p, mut c) = TestPipeline::with_database("p_kill", &[]).await;
    let s = stack();
    for t in ["a", "b", "c"] {
        let create =
            format!("CREATE TABLE {{db}}.{t} (id BIGINT PRIMARY KEY, v VARCHAR(64), n INT)");
        p.sql(&mut c, &[&create]).await;
    }
    // The snapshot (of empty tables) first; then the workload, with kills while it streams.
    let mut prod = p.spawn(&[]);
    wait_snapshot_end(&p.topic).await;
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

/// A second producer for the same topic does not exit: it waits for the lock, saying which
/// connection holds it, and takes over when the first one is gone (a standby).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_producer_on_the_same_topic_waits_for_the_lock_and_takes_over() {
    let (p, _c) = TestPipeline::with_database("p_lock", &[]).await;
    let mut first = p.spawn(&[]);
    let s = stack();
    wait_for(
        "the first producer's snapshot",
        Duration::from_secs(60),
        || async { (!read_topic(&s.brokers, &p.topic).is_empty()).then_some(()) },
    )
    .await;
    let mut second = p.spawn_logged(&["--server-id", &(p.server_id + 1).to_string()], "second");
    let waiting = format!("another continuum-producer for {} is running", p.topic);
    wait_for(
        "the second producer to say it waits for the lock",
        Duration::from_secs(60),
        || {
            let log = second.log();
            assert!(
                second.child.try_wait().unwrap().is_none(),
                "the second producer exited instead of waiting:\n{log}"
            );
            let ready = log.contains("held by connection") && log.contains(&waiting);
            async move { ready.then_some(()) }
        },
    )
    .await;
    assert!(
        !second.log().contains("streaming the binlog"),
        "it waits before streaming"
    );
    first.kill9();
    wait_streaming("the second producer to take over", &second).await;
    assert!(
        second.child.try_wait().unwrap().is_none(),
        "the second producer runs"
    );
    drop(second);
    cleanup(&p.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_replication_events_are_not_captured_and_ddl_changes_the_schema() {
    let (p, mut c) = with_table_t("p_skip", "v INT").await;
    let mut prod = p.spawn(&[]);
    wait_snapshot_end(&p.topic).await;
    p.sql(&mut c, &["INSERT INTO {db}.t VALUES (1, 1)"]).await;
    let mut applier = admin().await;
    p.sql(
        &mut applier,
        &[
            "SET SESSION skip_replication = 1",
            "INSERT INTO {db}.t VALUES (100, 100)",
            "UPDATE {db}.t SET v = 2 WHERE id = 1",
        ],
    )
    .await;
    p.sql(
        &mut c,
        &[
            "ALTER TABLE {db}.t ADD COLUMN w VARCHAR(10) DEFAULT 'x'",
            "INSERT INTO {db}.t VALUES (2, 2, 'new')",
        ],
    )
    .await;
    wait_topic_caught_up(&p, &mut c).await;
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

/// [`TestPipeline::with_database`] with one table, `t`: an INT primary key `id`, then
/// `columns` (SQL).
async fn with_table_t(name: &str, columns: &str) -> (TestPipeline, mysql_async::Conn) {
    let create = format!("CREATE TABLE {{db}}.t (id INT PRIMARY KEY, {columns})");
    TestPipeline::with_database(name, &[&create]).await
}

/// Starts the producer with `extra` arguments and waits (a minute at most) until it streams the
/// binlog.
async fn spawn_streaming(p: &TestPipeline, extra: &[&str]) -> ProducerProc {
    let producer = p.spawn(extra);
    wait_streaming("the producer to stream the binlog", &producer).await;
    producer
}

/// Asserts that of `t`'s rows 1, 2 and 3 ([`insert_small_big_small`]) only row 1, the one before
/// the `which` one (2), is in `p`'s topic.
async fn assert_only_the_first_row(p: &TestPipeline, which: &str) {
    assert_eq!(
        ids_in_topic(&p.topic).await,
        [1],
        "only the row before the {which} one is in the topic"
    );
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
    let (p, mut c) = with_table_t("p_topiclimit", "b LONGBLOB").await;
    create_topic_with_limit(&p.topic, 65536).await;
    let mut producer = spawn_streaming(&p, &[]).await;
    insert_small_big_small(&mut c, &p.db, 100_000).await;
    let expect = |what: &str, log: &str| {
        for want in [
            "record too large".to_owned(),
            format!("table {}.t, primary key (id=2)", p.db),
            format!("topic {}'s max.message.bytes = 65536", p.topic),
            "producer.max_record_bytes = 67108864".to_owned(),
        ] {
            assert!(
                log.contains(&want),
                "{what}: the error names {want:?}:\n{log}"
            );
        }
    };
    let (ok, log) = producer.wait_exit(Duration::from_secs(60));
    assert!(!ok);
    expect("first run", &log);
    let log = p.run_to_failure(&[]);
    expect("restart", &log);
    assert_only_the_first_row(&p, "large").await;
    cleanup(&p.dir);
}

/// The broker refuses a record the producer sent (the topic's limit was lowered while the
/// producer ran, after it had read the old one): with `enable.gapless.guarantee` nothing queued
/// after the refused record is written, and the producer stops with an error naming the record's
/// position and the setting to raise, instead of resuming past a gap. Restarted, it reads the
/// new limit and stops at the same row, naming the table and the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_broker_refuses_stops_the_producer_with_nothing_after_it() {
    let (p, mut c) = with_table_t("p_refused", "b LONGBLOB").await;
    let mut producer = spawn_streaming(&p, &[]).await;
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
    let log = p.run_to_failure(&[]);
    assert!(
        log.contains(&format!("table {}.t, primary key (id=2)", p.db))
            && log.contains(&format!("topic {}'s max.message.bytes = 65536", p.topic)),
        "restarted, it names the table, the key and the topic's limit:\n{log}"
    );
    assert_only_the_first_row(&p, "refused").await;
    cleanup(&p.dir);
}

/// A row change whose record exceeds `producer.max_record_bytes` stops the producer with an
/// error that names the table and the key; nothing after it reaches the topic, and a restart
/// stops at the same row again instead of skipping it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_max_record_bytes_stops_the_producer_and_is_never_skipped() {
    let (mut p, mut c) = with_table_t("p_large", "b LONGBLOB").await;
    p.set("producer.max_record_bytes", 65536);
    let mut producer = spawn_streaming(&p, &[]).await;
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
                && log.contains(&format!("table {}.t, primary key (id=2)", p.db))
                && log.contains("producer.max_record_bytes = 65536"),
            "the error names the table, the key and the setting:\n{log}"
        );
    };
    // It stops at the large row.
    let (_, log) = producer.wait_exit(Duration::from_secs(60));
    expect(&log);

    // Restarted, it resumes after the last record in the topic and stops at the same row.
    let log = p.run_to_failure(&[]);
    expect(&log);

    assert_only_the_first_row(&p, "large").await;
    cleanup(&p.dir);
}

/// A binlog event larger than the source's `max_allowed_packet` (MariaDB's default is 16 MiB)
/// is read, as a native replica reads it: an UPDATE of one column of a row holding a 9 MiB BLOB
/// logs a row event of about 19 MB (before and after images). The producer must write that
/// update to the topic without failing on the packet (and, before, retrying for ever).
///
/// The stack's servers allow 256 MiB packets; this test lowers the global value to MariaDB's
/// default only while the producer connects (a connection takes the value it finds then), so
/// that other suites running meanwhile are affected as little as possible. The producer
/// starts at the current position (`--start-position`), so that it connects at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binlog_event_larger_than_the_sources_max_allowed_packet_is_read() {
    let (p, mut c) = with_table_t("p_packet", "n INT, b LONGBLOB").await;
    let s = stack();
    let from = gtid_binlog_pos(&mut c).await.to_string();
    let packet = GlobalSetting::set("max_allowed_packet", &(16 << 20).to_string()).await;
    let mut producer = spawn_streaming(&p, &["--start-position", &from]).await;
    drop(packet);
    p.sql(
        &mut c,
        &[
            "INSERT INTO {db}.t VALUES (1, 0, REPEAT('x', 9 << 20))",
            "UPDATE {db}.t SET n = 1 WHERE id = 1",
        ],
    )
    .await;
    let target = gtid_binlog_pos(&mut c).await;
    let mut dec = decoder().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    let mut update = None;
    'poll: while std::time::Instant::now() < deadline {
        for r in read_topic(&s.brokers, &p.topic).iter().rev() {
            if !matches!(pos(r), StreamPosition::Txn { .. }) {
                continue;
            }
            let at = RecordAt {
                topic: p.topic.clone(),
                partition: 0,
                offset: r.offset,
            };
            if let Ok(StreamRecord::Change(ev)) = dec
                .decode(&at, r.key.as_deref(), r.value.as_deref().unwrap())
                .await
            {
                if ev.op == Op::Update {
                    update = Some(ev);
                    break 'poll;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = producer.log();
    producer.kill9();
    let ev = update.unwrap_or_else(|| {
        panic!("the UPDATE (a binlog event over 16 MiB) did not reach {} within 45 s (source at {target}); producer log:\n{log}", p.topic)
    });
    assert!(
        !log.contains("pipeline interrupted") && !log.contains("stopped"),
        "the producer read the event without an error:\n{log}"
    );
    let after = ev.after.unwrap();
    assert_eq!(
        after[1],
        continuum_schemas::Value::Int(1),
        "the update's new value"
    );
    match &after[2] {
        continuum_schemas::Value::Bytes(b) => assert_eq!(b.len(), 9 << 20, "the BLOB, whole"),
        other => panic!("the BLOB column holds {other:?}"),
    }
    cleanup(&p.dir);
}

/// A snapshot on a source whose current binlog file holds an event larger than the source's
/// `max_allowed_packet` before the snapshot's position: `BINLOG_GTID_POS` reads the file with
/// that limit and gives NULL. The snapshot's position must still be the right one (what
/// `BINLOG_GTID_POS` gives with a larger limit), never an empty position, which would stream
/// the binlog from its beginning. As above, the global value is lowered only while the
/// producer connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_finds_its_position_past_an_event_larger_than_max_allowed_packet() {
    use continuum_schemas::SnapshotPhase;
    let (p, mut c) = with_table_t("p_packetsnap", "b LONGBLOB").await;
    // A row event of 17 MiB in the current binlog file.
    p.sql(
        &mut c,
        &["INSERT INTO {db}.t VALUES (1, REPEAT('x', 17 << 20))"],
    )
    .await;
    let packet = GlobalSetting::set("max_allowed_packet", &(16 << 20).to_string()).await;
    let mut producer = p.spawn(&[]);
    wait_for(
        "the snapshot's connection",
        Duration::from_secs(60),
        || async {
            let log = producer.log();
            (log.contains("snapshot started")
                || log.contains("BINLOG_GTID_POS gave NULL")
                || log.contains("stopped"))
            .then_some(())
        },
    )
    .await;
    drop(packet);
    wait_for("the snapshot's end", Duration::from_secs(240), || async {
        let log = producer.log();
        (log.contains("streaming the binlog") || log.contains("stopped")).then_some(())
    })
    .await;
    let log = producer.log();
    producer.kill9();
    let started = log
        .lines()
        .find(|l| l.contains("snapshot started"))
        .unwrap_or_else(|| panic!("no snapshot:\n{log}"));
    let field = |name: &str| {
        started
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_owned()
    };
    let (file, binlog_pos) = (field("binlog_file"), field("binlog_pos"));
    let expected: Option<String> = c
        .exec_first(
            "SELECT BINLOG_GTID_POS(?, ?)",
            (&file, binlog_pos.parse::<u64>().unwrap()),
        )
        .await
        .unwrap();
    let expected = expected.expect("BINLOG_GTID_POS with 256 MiB packets");
    let start = decode_all(&p.topic)
        .await
        .into_iter()
        .find_map(|(_, r)| match r {
            StreamRecord::Snapshot(m) if m.phase == SnapshotPhase::Start => Some(m.position),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no START marker; log:\n{log}"));
    assert_eq!(
        start.to_string(),
        expected,
        "the snapshot's position at {file}:{binlog_pos}; log:\n{log}"
    );
    assert!(
        !log.contains("stopped"),
        "the producer streams after the snapshot:\n{log}"
    );
    cleanup(&p.dir);
}

/// The stream positions of the topic's records, in order.
fn positions(topic: &str) -> Vec<StreamPosition> {
    read_topic(&stack().brokers, topic)
        .iter()
        .map(pos)
        .collect()
}

/// A producer that resumes inside a transaction writes no heartbeat before it has written that
/// transaction's next record: a heartbeat `at:R` (R the position before the transaction) after
/// `txn:G:i:more` would make the next run start G over from index 0.
///
/// Transaction G changes an excluded table first (16 MiB, so that reaching G's first captured
/// event takes longer than the heartbeat interval), then rows 1, 2 and 3 of a captured table;
/// row 3 is over `producer.max_record_bytes`, so the producer stops with the topic ending at
/// `txn:G:1:more`. Restarted with the same limit, it reads G again and stops at row 3 again: the
/// topic must still end inside G. Restarted with the limit raised, it writes row 3 as G's event
/// 2, and G's events are in the topic once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_heartbeat_is_written_while_resuming_inside_a_transaction() {
    let (mut p, mut c) = with_table_t("p_hbwithin", "b LONGBLOB").await;
    p.sql(
        &mut c,
        &["CREATE TABLE {db}.pad (id INT PRIMARY KEY, b LONGBLOB)"],
    )
    .await;
    // The topic takes large records: only the producer's own limit stops it at row 3.
    create_topic_with_limit(&p.topic, 64 << 20).await;
    p.set("producer.heartbeat_interval", "50ms");
    p.set("producer.exclude", vec![format!("{}.pad", p.db)]);
    p.set("producer.max_record_bytes", 65536);
    let mut producer = spawn_streaming(&p, &[]).await;
    let big: Vec<u8> = (0..100_000).map(|_| rand::random::<u8>()).collect();
    let mut tx = c.start_transaction(Default::default()).await.unwrap();
    for i in 0..4 {
        tx.query_drop(format!(
            "INSERT INTO {}.pad VALUES ({i}, REPEAT('p', 4 << 20))",
            p.db
        ))
        .await
        .unwrap();
    }
    p.sql(
        &mut tx,
        &["INSERT INTO {db}.t VALUES (1, 'one'), (2, 'two')"],
    )
    .await;
    tx.exec_drop(format!("INSERT INTO {}.t VALUES (3, ?)", p.db), (big,))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (ok, log) = producer.wait_exit(Duration::from_secs(60));
    assert!(
        !ok && log.contains("record too large"),
        "the first run stops at row 3:\n{log}"
    );
    let in_g = |p: &StreamPosition| match p {
        StreamPosition::Txn {
            gtid, index, last, ..
        } => Some((*gtid, *index, *last)),
        _ => None,
    };
    let first = positions(&p.topic);
    let (g, index, last) = first
        .last()
        .and_then(in_g)
        .expect("the topic ends inside G");
    assert_eq!(
        (index, last),
        (1, false),
        "the topic ends at G's event 1: {first:?}"
    );

    // Restarted with the same limit: G is read again, up to row 3.
    let (ok, log) = p.run_to_exit(&[], Duration::from_secs(60));
    assert!(
        !ok && log.contains("record too large"),
        "the second run stops at row 3:\n{log}"
    );
    let second = positions(&p.topic);
    assert_eq!(
        second.last(),
        first.last(),
        "nothing was written while the resume inside {g} was pending; the topic now ends with {:?}",
        &second[first.len()..]
    );

    // Restarted with the limit raised: row 3 is G's event 2, and G is in the topic once.
    p.unset("producer.max_record_bytes");
    let mut producer = p.spawn(&[]);
    wait_topic_caught_up(&p, &mut c).await;
    producer.kill9();
    let events: Vec<(u64, bool)> = positions(&p.topic)
        .iter()
        .filter_map(in_g)
        .filter(|(x, _, _)| *x == g)
        .map(|(_, i, l)| (i, l))
        .collect();
    assert_eq!(
        events,
        [(0, false), (1, false), (2, true)],
        "G's events, each once"
    );
    cleanup(&p.dir);
}

/// Decoded snapshot markers of the topic, in order: (phase, tables).
async fn markers(topic: &str) -> Vec<(continuum_schemas::SnapshotPhase, Vec<String>)> {
    decode_all(topic)
        .await
        .into_iter()
        .filter_map(|(_, r)| match r {
            StreamRecord::Snapshot(m) => Some((m.phase, m.tables)),
            _ => None,
        })
        .collect()
}

/// A snapshot of tables that was abandoned (the producer died before its END) is finished by a
/// complete snapshot even when the source is read-only by the time the producer restarts: the
/// replica emptied those tables at the abandoned START, and an empty START/END (what a producer
/// on a read-only source writes for a new topic) would leave them partly loaded for good.
///
/// The first run snapshots SF and is killed while the snapshot waits for table `b` (held by
/// `LOCK TABLES`), after `a`'s rows. The restart reads from the EU server, which is read-only,
/// with the same tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_snapshot_is_finished_when_the_source_is_read_only_now() {
    use continuum_schemas::SnapshotPhase;
    let (mut p, mut c) = TestPipeline::with_database("p_rosnap", &[]).await;
    let mut eu = {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(var("EU_DB_HOST"))
            .tcp_port(var("EU_DB_PORT").parse().unwrap())
            .user(Some(var("EU_DB_ADMIN_USER")))
            .pass(Some(
                std::env::var("EU_DB_ADMIN_PASSWORD").unwrap_or_default(),
            ))
            .prefer_socket(false);
        mysql_async::Conn::new(opts).await.unwrap()
    };
    let read_only: bool = eu.query_first("SELECT @@read_only").await.unwrap().unwrap();
    assert!(read_only, "the stack's EU server is read-only (a replica)");
    p.sql(
        &mut eu,
        &["SET SESSION sql_log_bin = 0", "CREATE DATABASE {db}"],
    )
    .await;
    for conn in [&mut c, &mut eu] {
        for t in ["a", "b"] {
            let create = format!("CREATE TABLE {{db}}.{t} (id INT PRIMARY KEY, v INT)");
            let insert = format!("INSERT INTO {{db}}.{t} VALUES (1, 1), (2, 2), (3, 3)");
            p.sql(conn, &[&create, &insert]).await;
        }
    }
    p.sql(&mut c, &["LOCK TABLES {db}.b WRITE"]).await;
    let mut producer = p.spawn(&[]);
    let s = stack();
    wait_for(
        "the snapshot to have written a's rows",
        Duration::from_secs(60),
        || async {
            let n = read_topic(&s.brokers, &p.topic)
                .iter()
                .filter(|r| r.header_str("continuum.kind") == Some("row"))
                .count();
            (n == 3).then_some(())
        },
    )
    .await;
    producer.kill9();
    c.query_drop("UNLOCK TABLES").await.unwrap();
    let before = markers(&p.topic).await;
    assert_eq!(before.len(), 1, "one START, no END: {before:?}");

    // Restart against the read-only EU server.
    p.set(
        "database.port",
        i64::from(continuum_tests::stack().eu.db_port),
    );
    let mut producer = p.spawn_with(
        &[],
        "restart",
        &[("CONTINUUM_DB_PASSWORD", &var("EU_DB_PASSWORD"))],
    );
    wait_streaming("the restarted producer to stream", &producer).await;
    producer.kill9();
    let after = markers(&p.topic).await;
    let a_b = vec![format!("{}.a", p.db), format!("{}.b", p.db)];
    assert_eq!(
        after[1..].to_vec(),
        vec![(SnapshotPhase::Start, a_b), (SnapshotPhase::End, vec![])],
        "the restart snapshots a and b again; log:\n{}",
        producer.log()
    );
    // Every row of both tables after the new START.
    let recs = decode_all(&p.topic).await;
    let start = recs
        .iter()
        .rposition(
            |(_, r)| matches!(r, StreamRecord::Snapshot(m) if m.phase == SnapshotPhase::Start),
        )
        .unwrap();
    let rows: Vec<String> = recs[start..]
        .iter()
        .filter_map(|(_, r)| match r {
            StreamRecord::Change(ev) if ev.op == Op::Read => {
                Some(format!("{}:{:?}", ev.table.table, ev.key()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 6, "three rows each of a and b: {rows:?}");
    p.sql(&mut eu, &["DROP DATABASE {db}"]).await;
    cleanup(&p.dir);
}

/// The snapshot's table definitions are those of its consistent view. A `DROP COLUMN` committed
/// after the snapshot began but before it read the table's definition (here: while the snapshot
/// waits to read the exact ENUM members of another table, held by `LOCK TABLES`) must not give
/// the snapshot the new definition while the binlog after the snapshot's position still holds
/// row events of the old one (and the DDL itself): apply would stop on a fresh replica.
///
/// Checked in the topic: after the snapshot's END, every row change of `b` has the columns the
/// snapshot gave `b`, and no schema change of `b` follows (it happened before the snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_column_just_after_the_snapshot_starts_gives_no_mixed_shapes() {
    let (p, mut c) = TestPipeline::with_database(
        "p_snapddl",
        &[
            "CREATE TABLE {db}.a (id INT PRIMARY KEY, e ENUM('x','😀'))",
            "CREATE TABLE {db}.b (id INT PRIMARY KEY, x INT, c INT)",
            "INSERT INTO {db}.b VALUES (1, 1, 1), (2, 2, 2)",
        ],
    )
    .await;
    // After the snapshot's position, before it reads b's definition.
    let mut producer = change_while_the_snapshot_waits(
        &p,
        "the snapshot to wait for table a's members",
        &format!("CREATE TEMPORARY TABLE%{}%", p.db),
        &[
            "UPDATE {db}.b SET c = 10 WHERE id = 1",
            "ALTER TABLE {db}.b DROP COLUMN c",
        ],
    )
    .await;
    p.sql(&mut c, &["INSERT INTO {db}.b VALUES (3, 3)"]).await;
    wait_topic_caught_up(&p, &mut c).await;
    producer.kill9();

    let recs = decode_all(&p.topic).await;
    let (start, end) = last_snapshot(&recs);
    let columns = |t: &continuum_schemas::TableSchema| {
        t.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
    };
    let snapshot_b: Vec<Vec<String>> = recs[start..end]
        .iter()
        .filter_map(|(_, r)| match r {
            StreamRecord::Change(ev) if ev.table.table == "b" => Some(columns(&ev.table)),
            _ => None,
        })
        .collect();
    assert!(snapshot_b.len() >= 2, "the snapshot holds b's rows");
    let shape = &snapshot_b[0];
    let mut after = Vec::new();
    for (offset, r) in &recs[end..] {
        match r {
            StreamRecord::Change(ev)
                if ev.table.table == "b"
                    && (ev.op != Op::Insert || &columns(&ev.table) != shape) =>
            {
                after.push(format!(
                    "{offset}: {:?} of b with {:?}",
                    ev.op,
                    columns(&ev.table)
                ))
            }
            StreamRecord::SchemaChange(sc) if sc.ddl.contains(".b") || sc.ddl.contains("`b`") => {
                after.push(format!("{offset}: DDL {}", sc.ddl))
            }
            _ => {}
        }
    }
    assert!(
        after.is_empty(),
        "after the snapshot (which gave b the columns {shape:?}), only the new row of b, in that shape; found: {after:?}"
    );
    assert!(
        snapshot_b.iter().all(|c| c == shape),
        "the snapshot's rows of b have one shape: {snapshot_b:?}"
    );
    cleanup(&p.dir);
}

/// A captured table's definition changes while the snapshot reads another table (a `DROP
/// COLUMN` of `b` while the snapshot waits for `a`, held by `LOCK TABLES`): the snapshot's read
/// of `b` by its planned columns fails, and the producer starts a new snapshot instead of
/// stopping. The topic then ends with a complete snapshot whose rows of `b` have `b`'s new
/// columns, and streaming goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definition_change_while_the_snapshot_reads_starts_it_over() {
    let (p, mut c) = TestPipeline::with_database("p_snapddl2", &[]).await;
    for t in ["a", "b"] {
        let create = format!("CREATE TABLE {{db}}.{t} (id INT PRIMARY KEY, x INT, c INT)");
        let insert = format!("INSERT INTO {{db}}.{t} VALUES (1, 1, 1), (2, 2, 2)");
        p.sql(&mut c, &[&create, &insert]).await;
    }
    let mut producer = change_while_the_snapshot_waits(
        &p,
        "the snapshot to wait for table a's rows",
        &format!("SELECT%FROM `{}`.`a`%", p.db),
        &["ALTER TABLE {db}.b DROP COLUMN c"],
    )
    .await;
    p.sql(&mut c, &["INSERT INTO {db}.b VALUES (3, 3)"]).await;
    wait_topic_caught_up(&p, &mut c).await;
    assert!(
        producer.child.try_wait().unwrap().is_none(),
        "the producer is still running:\n{}",
        producer.log()
    );
    producer.kill9();

    let recs = decode_all(&p.topic).await;
    let (start, _end) = last_snapshot(&recs);
    let mut b_columns: Vec<Vec<String>> = recs[start..]
        .iter()
        .filter_map(|(_, r)| match r {
            StreamRecord::Change(ev) if ev.table.table == "b" => {
                Some(ev.table.columns.iter().map(|c| c.name.clone()).collect())
            }
            _ => None,
        })
        .collect();
    b_columns.dedup();
    assert_eq!(
        b_columns,
        vec![vec!["id".to_string(), "x".into()]],
        "b's rows have b's new columns"
    );
    cleanup(&p.dir);
}

/// Peak resident set size (VmHWM) of a running process, in MiB.
fn peak_rss_mib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kib| kib / 1024)
}

/// A snapshot of a table of wide BLOBs (48 rows of 4 MiB, 192 MiB in all) does not hold the
/// table in memory: chunks are bounded by bytes (`producer.snapshot_chunk_bytes`, default
/// 32 MiB) as well as by rows. Kafka's own queue is bounded here too
/// (`queue.buffering.max.kbytes`), so the producer's peak memory shows the snapshot's. Every
/// row arrives once, in key order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_wide_rows_is_read_in_chunks_bounded_by_bytes() {
    use continuum_schemas::SnapshotPhase;
    let (mut p, mut c) = TestPipeline::with_database(
        "p_wide",
        &["CREATE TABLE {db}.w (id INT PRIMARY KEY, b LONGBLOB)"],
    )
    .await;
    p.site
        .set_key(
            "sites.sf.kafka_options",
            "queue.buffering.max.kbytes",
            "16384",
        )
        .write();
    for id in 1..=48 {
        let insert =
            format!("INSERT INTO {{db}}.w VALUES ({id}, REPEAT(CHAR(64 + {id} % 26), 4 << 20))");
        p.sql(&mut c, &[&insert]).await;
    }
    let mut producer = p.spawn(&[]);
    let pid = producer.child.id();
    let mut peak = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        peak = peak.max(peak_rss_mib(pid).unwrap_or(0));
        if producer.log().contains("snapshot finished") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot end within 180 s:\n{}",
            producer.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    peak = peak.max(peak_rss_mib(pid).unwrap_or(0));
    producer.kill9();
    let ids: Vec<i64> = decode_all(&p.topic)
        .await
        .into_iter()
        .filter_map(|(_, r)| match r {
            StreamRecord::Change(ev) if ev.op == Op::Read => match (
                &ev.after.as_ref().unwrap()[0],
                &ev.after.as_ref().unwrap()[1],
            ) {
                (continuum_schemas::Value::Int(id), continuum_schemas::Value::Bytes(b)) => {
                    assert_eq!(b.len(), 4 << 20, "row {id} whole");
                    Some(*id)
                }
                other => panic!("unexpected row {other:?}"),
            },
            StreamRecord::Snapshot(m) if m.phase == SnapshotPhase::End => None,
            _ => None,
        })
        .collect();
    assert_eq!(
        ids,
        (1..=48).collect::<Vec<i64>>(),
        "every row once, in key order"
    );
    assert!(
        peak < 200,
        "the producer's peak memory was {peak} MiB for a 192 MiB table"
    );
    println!("peak RSS {peak} MiB");
    cleanup(&p.dir);
}

/// A topic that ends inside a mark (the empty START/END holding table definitions that starts
/// an incremental capture), cut short by a crash, is marked again at the same position and
/// streamed from there. It is not taken for an abandoned consistent snapshot, which would read
/// every table again under one long transaction.
///
/// The cut is made by copying the first topic, up to the mark's first definition, into a second
/// topic, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_cut_short_is_written_again_not_taken_for_an_abandoned_snapshot() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let (mut p, mut c) = TestPipeline::with_database(
        "p_remark",
        &[
            "CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT)",
            "INSERT INTO {db}.t VALUES (1, 1), (2, 2)",
        ],
    )
    .await;
    p.set("producer.first_snapshot", "incremental");
    let mut producer = p.spawn(&[]);
    wait_streaming("the first run to stream", &producer).await;
    producer.kill9();
    let s = stack();
    let recs = read_topic(&s.brokers, &p.topic);
    let is_mark = |r: &continuum_common::kafka::FetchedRecord| matches!(pos(r), StreamPosition::Snapshot { id, .. } if id.starts_with("mark-"));
    let start = recs
        .iter()
        .position(is_mark)
        .expect("an empty topic starts with a mark");
    assert!(is_mark(&recs[start + 1]), "the mark's first definition");
    let first_mark = pos(&recs[start]);

    let cut = format!("{}.cut", p.topic);
    let admin_cfg = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .clone();
    continuum_common::kafka::ensure_changelog_topic(
        &admin_cfg,
        &cut,
        64 << 20,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let copier: BaseProducer = admin_cfg.create().unwrap();
    for r in &recs[..=start + 1] {
        let mut headers = rdkafka::message::OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(rdkafka::message::Header {
                key: k,
                value: Some(v.as_slice()),
            });
        }
        let mut rec = BaseRecord::<[u8], [u8]>::to(&cut)
            .partition(0)
            .headers(headers);
        if let Some(k) = &r.key {
            rec = rec.key(k);
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v);
        }
        copier.send(rec).map_err(|(e, _)| e).unwrap();
    }
    copier.flush(Duration::from_secs(10)).unwrap();

    p.set("sites.sf.topic", cut.clone());
    p.sql(&mut c, &["INSERT INTO {db}.t VALUES (3, 3)"]).await;
    let mut producer = p.spawn_logged(&[], "cut");
    wait_streaming("the run on the cut topic to stream", &producer).await;
    let log = producer.log();
    producer.kill9();
    assert!(
        log.contains("marked again") && !log.contains("taking a consistent snapshot"),
        "the cut mark is written again, no consistent snapshot is taken:\n{log}"
    );
    let after: Vec<StreamPosition> = positions(&cut)[start + 2..].to_vec();
    let StreamPosition::Snapshot { id, position } = &after[0] else {
        panic!("a new mark follows the cut one: {after:?}");
    };
    let StreamPosition::Snapshot {
        id: cut_id,
        position: cut_position,
    } = &first_mark
    else {
        unreachable!()
    };
    assert!(id.starts_with("mark-") && id != cut_id, "{after:?}");
    assert_eq!(position, cut_position, "at the cut mark's position");
    assert!(
        after
            .iter()
            .any(|p| matches!(p, StreamPosition::At(at) if at == cut_position)),
        "the new mark ends there: {after:?}"
    );
    cleanup(&p.dir);
}
