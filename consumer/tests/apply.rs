//! Apply against the real local stack: records written in the producer's format to a topic of
//! the EU cluster, applied by the real binary to the EU MariaDB, compared with the SF MariaDB
//! where the same transactions ran (CHECKSUM TABLE and row counts).
//!
//! Run: `. .stack/env && cargo test --release -p continuum-consumer --test apply`

mod support;

use std::time::Duration;

use continuum_schemas::types::{BlobKind, DateTime, IntWidth, TextKind};
use continuum_schemas::{Column, ColumnType, StreamRecord, TableSchema, Value};
use continuum_tests::process::wait_for_takeover;
use mysql_async::prelude::*;
use rand::{Rng, SeedableRng};
use support::*;

const BANK_DDL: &[&str] = &[
    "CREATE TABLE accounts (id INT PRIMARY KEY, owner VARCHAR(64) NOT NULL UNIQUE, balance BIGINT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE ledger (id BIGINT PRIMARY KEY, account_id INT NOT NULL, amount BIGINT NOT NULL, note VARBINARY(64) NULL,
       FOREIGN KEY (account_id) REFERENCES accounts(id) ON DELETE CASCADE) ENGINE=InnoDB",
];

fn bank_tables(src: &mut Source, db: &str) {
    src.table(table(
        db,
        "accounts",
        vec![
            int_col("id", false),
            varchar_col("owner", false),
            bigint_col("balance", false),
        ],
        vec![0],
    ));
    src.table(table(
        db,
        "ledger",
        vec![
            bigint_col("id", false),
            int_col("account_id", false),
            bigint_col("amount", false),
            varbinary_col("note", true),
        ],
        vec![0],
    ));
}

fn account(id: i64, owner: &str, balance: i64) -> Vec<Value> {
    vec![
        Value::Int(id),
        Value::Text(owner.into()),
        Value::Int(balance),
    ]
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(x) => *x,
        other => panic!("not an int: {other:?}"),
    }
}

fn row_of(src: &Source, table: &str, key: i64) -> Vec<Value> {
    let t = &src.tables[table];
    let mut probe = vec![Value::Null; t.columns.len()];
    probe[t.primary_key[0]] = Value::Int(key);
    src.rows[&(table.to_string(), key_of(t, &probe))].clone()
}

fn col(name: &str, ty: ColumnType) -> Column {
    Column {
        name: name.into(),
        ty,
        nullable: true,
    }
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The table most of these tests write: `a`, an INT key and an INT value.
const A_DDL: &str = "CREATE TABLE a (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB";

/// Table `name` of `db` as the source describes it: the INT primary key `id`, then `columns`.
fn keyed(db: &str, name: &str, columns: Vec<Column>) -> TableSchema {
    let mut all = vec![int_col("id", false)];
    all.extend(columns);
    table(db, name, all, vec![0])
}

/// A fixture (default apply settings) whose databases hold the tables `ddl` creates, and its
/// source, which knows none of them yet.
async fn fixture(name: &str, ddl: &[&str]) -> (Fixture, Source) {
    let fx = Fixture::new(name, ddl, "").await;
    let src = fx.source().await;
    (fx, src)
}

/// Table `a` ([`A_DDL`]) as the source describes it.
fn a_table(db: &str) -> TableSchema {
    keyed(db, "a", vec![int_col("v", false)])
}

/// [`fixture`] with the one table `a` ([`A_DDL`]), which the source knows.
async fn with_table_a(name: &str) -> (Fixture, Source) {
    let (fx, mut src) = fixture(name, &[A_DDL]).await;
    src.table(a_table(&fx.db));
    (fx, src)
}

/// [`fixture`] with one table, `table`: the INT primary key `id` and a `VARCHAR(20) NOT NULL`
/// column `column`, which the source knows.
async fn with_text_table(name: &str, table: &str, column: &str) -> (Fixture, Source) {
    let ddl = format!(
        "CREATE TABLE {table} (id INT PRIMARY KEY, {column} VARCHAR(20) NOT NULL) ENGINE=InnoDB"
    );
    let (fx, mut src) = fixture(name, &[&ddl]).await;
    src.table(keyed(&fx.db, table, vec![varchar_col(column, false)]));
    (fx, src)
}

/// The number `sql` (a COUNT) reads on the replica, in the test's database.
async fn replica_number(fx: &Fixture, sql: &str) -> Option<i64> {
    fx.replica().await.query_first(sql).await.unwrap()
}

/// Asserts the replica's `table` (in the test's database) holds `rows` rows, saying `why`.
async fn assert_replica_rows(fx: &Fixture, table: &str, rows: i64, why: &str) {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    assert_eq!(replica_number(fx, &sql).await, Some(rows), "{table}: {why}");
}

/// Runs the consumer with `args`, asserting it succeeds; its output.
fn run_ok(fx: &Fixture, args: &[&str]) -> std::process::Output {
    let out = fx.run(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    out
}

/// `status --json`, asserting the state it reports is `state`; the whole report.
fn assert_state(fx: &Fixture, state: &str) -> serde_json::Value {
    let st = json(&fx.run(&["status", "--json"]));
    assert_eq!(st["state"], state, "{st}");
    st
}

/// `apply --until-caught-up`, asserting the checkpoint is then the topic's end (naming `what`
/// was applied); returns apply's stderr.
async fn apply_to_end(fx: &Fixture, what: &str) -> String {
    let err = fx.apply_caught_up();
    assert_eq!(
        fx.checkpoint().await.unwrap().0,
        fx.high_watermark(),
        "{what}: {err}"
    );
    err
}

/// `apply --until-caught-up`, asserting it fails with every needle in its error line and the
/// checkpoint stays at `checkpoint`, the start of the transaction it stopped at.
async fn apply_stops_at(fx: &Fixture, needles: &[&str], checkpoint: i64) {
    fx.apply_caught_up_expect_failure(needles).await;
    assert_eq!(
        fx.checkpoint().await.unwrap().0,
        checkpoint,
        "the checkpoint is at the start of the transaction apply stopped at"
    );
}

/// SQL counting the tables named `name` in the current database (0 or 1).
fn tables_named(name: &str) -> String {
    format!(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA=DATABASE() AND TABLE_NAME='{name}'"
    )
}

/// `SHOW CREATE TABLE t2` on `conn`: the statement that creates it.
async fn create_t2(mut conn: mysql_async::Conn) -> String {
    let (_, create): (String, String) = conn
        .query_first("SHOW CREATE TABLE t2")
        .await
        .unwrap()
        .unwrap();
    create
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips() {
    let (fx, mut src) = fixture(
        "types",
        &["CREATE TABLE types (id INT PRIMARY KEY,
            ti TINYINT NULL, su SMALLINT UNSIGNED NULL, mi MEDIUMINT NULL, iu INT UNSIGNED NULL, bi BIGINT NULL,
            bu BIGINT UNSIGNED NULL, de DECIMAL(65,30) NULL, fl FLOAT NULL, dbl DOUBLE NULL, bt BIT(10) NULL, yr YEAR NULL,
            dt DATE NULL, tm TIME(6) NULL, dtm DATETIME(6) NULL, ts TIMESTAMP(6) NULL DEFAULT NULL, ch CHAR(5) NULL,
            vc VARCHAR(100) NULL, tx TEXT NULL, bn BINARY(4) NULL, vb VARBINARY(100) NULL, bl BLOB NULL,
            en ENUM('a','b c','it''s') NULL, st SET('x','y','z') NULL, js JSON NULL, ge GEOMETRY NULL, i6 INET6 NULL, uu UUID NULL,
            gen INT AS (ti + 1) VIRTUAL) ENGINE=InnoDB"],
    )
    .await;
    let i = |width, unsigned| ColumnType::Integer { width, unsigned };
    let integer = |name, width, unsigned, typical, extreme| {
        (
            name,
            i(width, unsigned),
            Value::Int(typical),
            Value::Int(extreme),
        )
    };
    let text = |kind| ColumnType::Text { kind };
    let blob = |kind| ColumnType::Blob { kind };
    let names = |v: &[&str]| v.iter().map(|&s| s.to_owned()).collect::<Vec<String>>();
    let point = {
        // SRID 4326, then WKB POINT(1 2).
        let mut g = vec![0xE6, 0x10, 0, 0, 1, 1, 0, 0, 0];
        g.extend(1f64.to_le_bytes());
        g.extend(2f64.to_le_bytes());
        g
    };
    let dt = |s: &str| s.parse::<DateTime>().unwrap();
    let max_time = (838 * 3600 + 59 * 60 + 59) * 1_000_000 + 999_999;
    // Each column of `types` but the generated one: its type, a typical value, an extreme one.
    let cases: Vec<(&str, ColumnType, Value, Value)> = vec![
        integer("id", IntWidth::Int, false, 1, 2),
        integer("ti", IntWidth::Tiny, false, -7, -128),
        integer("su", IntWidth::Small, true, 300, 65535),
        integer("mi", IntWidth::Medium, false, -70000, -8_388_608),
        integer("iu", IntWidth::Int, true, 4_000_000_000, 4_294_967_295),
        integer("bi", IntWidth::Big, false, -9_000_000_000, i64::MIN),
        (
            "bu",
            i(IntWidth::Big, true),
            Value::UInt(10_000_000_000_000_000_000),
            Value::UInt(u64::MAX),
        ),
        (
            "de",
            ColumnType::Decimal {
                precision: 65,
                scale: 30,
            },
            Value::Decimal("-12345.678900000000000000000000000001".into()),
            Value::Decimal(
                "99999999999999999999999999999999999.999999999999999999999999999999".into(),
            ),
        ),
        (
            "fl",
            ColumnType::Float,
            Value::Float(0.1),
            Value::Float(f32::MAX),
        ),
        (
            "dbl",
            ColumnType::Double,
            Value::Double(-2.5e-300),
            Value::Double(f64::MIN_POSITIVE),
        ),
        (
            "bt",
            ColumnType::Bit { bits: 10 },
            Value::Bytes(vec![0x01, 0x02]),
            Value::Bytes(vec![0x03, 0xff]),
        ),
        ("yr", ColumnType::Year, Value::Int(2024), Value::Int(0)),
        (
            "dt",
            ColumnType::Date,
            Value::Date("2024-02-29".parse().unwrap()),
            Value::Date("0000-00-00".parse().unwrap()),
        ),
        (
            "tm",
            ColumnType::Time { fsp: 6 },
            Value::Time(-max_time),
            Value::Time(max_time),
        ),
        (
            "dtm",
            ColumnType::DateTime { fsp: 6 },
            Value::DateTime(dt("2024-01-02 03:04:05.123456")),
            Value::DateTime(dt("2024-00-15 00:00:00.000001")),
        ),
        (
            "ts",
            ColumnType::Timestamp { fsp: 6 },
            Value::Timestamp(1_700_000_000_123_456),
            Value::Timestamp(0),
        ),
        (
            "ch",
            text(TextKind::Char),
            Value::Text("ab".into()),
            Value::Text("".into()),
        ),
        (
            "vc",
            text(TextKind::VarChar),
            Value::Text("héllo 😀 ünïcode ' \" \\ ; --".into()),
            Value::Text("x".repeat(100)),
        ),
        (
            "tx",
            text(TextKind::Text),
            Value::Text("line1\nline2\0nul\u{1a}".into()),
            Value::Text("".into()),
        ),
        (
            "bn",
            ColumnType::Binary { len: 4 },
            Value::Bytes(vec![1, 0, 0, 0]),
            Value::Bytes(vec![0, 0, 0, 0]),
        ),
        (
            "vb",
            blob(BlobKind::VarBinary),
            Value::Bytes(vec![0, 0xff, b'\'', b'\\']),
            Value::Bytes(vec![]),
        ),
        (
            "bl",
            blob(BlobKind::Blob),
            Value::Bytes((0..=255).collect()),
            Value::Bytes(vec![]),
        ),
        (
            "en",
            ColumnType::Enum {
                values: names(&["a", "b c", "it's"]),
            },
            Value::Text("b c".into()),
            Value::Text("it's".into()),
        ),
        (
            "st",
            ColumnType::Set {
                values: names(&["x", "y", "z"]),
            },
            Value::Text("x,z".into()),
            Value::Text("".into()),
        ),
        (
            "js",
            text(TextKind::LongText),
            Value::Text(r#"{"k": [1, "two", null]}"#.into()),
            Value::Text("{}".into()),
        ),
        (
            "ge",
            ColumnType::Geometry,
            Value::Bytes(point.clone()),
            Value::Bytes(point),
        ),
        (
            "i6",
            ColumnType::Binary { len: 16 },
            Value::Bytes([[0u8; 15].as_slice(), &[1]].concat()),
            Value::Bytes(vec![0; 16]),
        ),
        (
            "uu",
            ColumnType::Binary { len: 16 },
            Value::Bytes(vec![
                0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17,
                0x40, 0x00,
            ]),
            Value::Bytes(vec![0xff; 16]),
        ),
    ];
    let mut columns: Vec<Column> = cases
        .iter()
        .map(|(name, ty, ..)| col(name, ty.clone()))
        .collect();
    columns[0].nullable = false;
    src.table(table(&fx.db, "types", columns, vec![0]));
    let typical: Vec<Value> = cases.iter().map(|c| c.2.clone()).collect();
    let extremes: Vec<Value> = cases.iter().map(|c| c.3.clone()).collect();
    let mut nulls = vec![Value::Null; 28];
    nulls[0] = Value::Int(3);
    src.txn(vec![
        ("types", RowOp::Insert(typical.clone())),
        ("types", RowOp::Insert(extremes.clone())),
        ("types", RowOp::Insert(nulls)),
    ])
    .await;
    // An update of every column, and an update back.
    let mut changed = extremes.clone();
    changed[1] = Value::Int(127);
    changed[17] = Value::Text("changed".into());
    src.update("types", extremes.clone(), changed.clone()).await;
    src.flush().await;
    fx.apply_caught_up();
    fx.assert_same(&["types"]).await;
    // Column by column, as text, to name a difference if there is one.
    let cols = "id,ti,su,mi,iu,bi,bu,de,fl,dbl,HEX(bt),yr,dt,tm,dtm,ts,ch,vc,HEX(tx),HEX(bn),HEX(vb),HEX(bl),en,st,js,HEX(ge),HEX(i6),HEX(uu),gen";
    let q = format!("SELECT CONCAT_WS('|', {cols}) FROM types ORDER BY id");
    let a: Vec<Option<String>> = fx.source_conn().await.query(&q).await.unwrap();
    let b: Vec<Option<String>> = fx.replica().await.query(&q).await.unwrap();
    assert_eq!(a, b);
    fx.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_partial_transaction_is_ever_visible() {
    // Small batches: many commits, so many intermediate states to observe.
    let fx = Fixture::new(
        "bank",
        BANK_DDL,
        "batch_transactions = 7\nbatch_wait = \"5ms\"",
    )
    .await;
    let mut src = fx.source().await;
    bank_tables(&mut src, &fx.db);
    const N: i64 = 100;
    const TOTAL: i64 = N * 1000;
    src.txn(
        (0..N)
            .map(|i| {
                (
                    "accounts",
                    RowOp::Insert(account(i, &format!("owner{i}"), 1000)),
                )
            })
            .collect(),
    )
    .await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut ledger_id = 0;
    let mut transfer = |src: &mut Source, rng: &mut rand::rngs::StdRng| {
        let a = rng.random_range(0..N);
        let mut b = rng.random_range(0..N);
        if b == a {
            b = (a + 1) % N;
        }
        let x = rng.random_range(1..50);
        let ra = row_of(src, "accounts", a);
        let rb = row_of(src, "accounts", b);
        let upd = |r: &Vec<Value>, d: i64| RowOp::Update {
            key: r.clone(),
            after: vec![r[0].clone(), r[1].clone(), Value::Int(int(&r[2]) + d)],
        };
        if rng.random_bool(0.5) {
            // Between two accounts, in one table.
            vec![("accounts", upd(&ra, -x)), ("accounts", upd(&rb, x))]
        } else {
            // A fee into the ledger: two tables.
            ledger_id += 1;
            vec![
                ("accounts", upd(&ra, -x)),
                (
                    "ledger",
                    RowOp::Insert(vec![
                        Value::Int(ledger_id),
                        Value::Int(a),
                        Value::Int(x),
                        Value::Null,
                    ]),
                ),
            ]
        }
    };
    for _ in 0..1500 {
        let ops = transfer(&mut src, &mut rng);
        src.txn(ops).await;
    }
    src.flush().await;
    let mut apply = fx.spawn_apply(&[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let db = fx.replica_admin.clone();
        let name = fx.db.clone();
        tokio::spawn(async move {
            let mut c = db.conn().await;
            c.query_drop(format!("USE `{name}`")).await.unwrap();
            let mut seen = std::collections::BTreeSet::new();
            let mut reads = 0u64;
            loop {
                let r: Option<(i64, i64, i64)> = c
                    .query_first(
                        "SELECT (SELECT COUNT(*) FROM accounts),
                                (SELECT COALESCE(SUM(balance),0) FROM accounts) + (SELECT COALESCE(SUM(amount),0) FROM ledger),
                                (SELECT COUNT(*) FROM ledger)",
                    )
                    .await
                    .unwrap();
                let (count, total, ledger) = r.unwrap();
                reads += 1;
                assert!(
                    count == 0 || count == N,
                    "partial transaction visible: {count} accounts"
                );
                if count == N {
                    assert_eq!(
                        total, TOTAL,
                        "partial transaction visible: total {total} (ledger rows {ledger})"
                    );
                }
                seen.insert(ledger);
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
            }
            (reads, seen.len())
        })
    };
    // More transfers while apply runs.
    for _ in 0..1500 {
        let ops = transfer(&mut src, &mut rng);
        src.txn(ops).await;
    }
    src.heartbeat().await;
    src.flush().await;
    fx.wait_caught_up(
        "apply to reach the end of the topic",
        Duration::from_secs(120),
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, states) = reader.await.unwrap();
    kill9(&mut apply);
    eprintln!("{reads} consistent reads, {states} distinct ledger states observed during apply");
    assert!(
        states > 20,
        "the reader saw only {states} states: it did not run during apply"
    );
    fx.assert_same(&["accounts", "ledger"]).await;
    fx.drop_databases().await;
}

const SWAP_DDL: &[&str] = &[
    "CREATE TABLE u (id INT PRIMARY KEY, code VARCHAR(20) NOT NULL UNIQUE, v INT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE k (a INT NOT NULL, b INT NOT NULL, name VARCHAR(20) NOT NULL UNIQUE, PRIMARY KEY (a, b)) ENGINE=InnoDB",
];

/// Unique swaps, primary-key updates (single and composite), deletes and re-used unique values.
async fn swap_workload(
    fx: &Fixture,
    src: &mut Source,
    txns: usize,
    seed: u64,
    mut mid: impl FnMut(usize, &mut Source),
) {
    src.table(keyed(
        &fx.db,
        "u",
        vec![varchar_col("code", false), int_col("v", false)],
    ));
    src.table(table(
        &fx.db,
        "k",
        vec![
            int_col("a", false),
            int_col("b", false),
            varchar_col("name", false),
        ],
        vec![0, 1],
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut ids: Vec<i64> = (0..40).collect();
    let mut next_id = 1000;
    let mut free_codes: Vec<String> = Vec::new();
    src.inserts(
        "u",
        ids.iter()
            .map(|&i| vec![Value::Int(i), Value::Text(format!("c{i}")), Value::Int(0)]),
    )
    .await;
    let mut keys: Vec<(i64, i64)> = (0..20).map(|i| (i, 0)).collect();
    src.inserts(
        "k",
        keys.iter()
            .map(|&(a, b)| vec![Value::Int(a), Value::Int(b), Value::Text(format!("n{a}"))]),
    )
    .await;
    for n in 0..txns {
        mid(n, src);
        let get = |src: &Source, id: i64| row_of(src, "u", id);
        match rng.random_range(0..10) {
            0..=2 if ids.len() >= 2 => {
                // Swap two codes through a temporary value, as an application must.
                let x = ids[rng.random_range(0..ids.len())];
                let mut y = ids[rng.random_range(0..ids.len())];
                if x == y {
                    y = ids[(ids.iter().position(|&i| i == x).unwrap() + 1) % ids.len()];
                }
                let (rx, ry) = (get(src, x), get(src, y));
                let tmp = |r: &Vec<Value>, code: Value| {
                    vec![r[0].clone(), code, Value::Int(int(&r[2]) + 1)]
                };
                src.txn(vec![
                    (
                        "u",
                        RowOp::Update {
                            key: rx.clone(),
                            after: tmp(&rx, Value::Text(format!("tmp{n}"))),
                        },
                    ),
                    (
                        "u",
                        RowOp::Update {
                            key: ry.clone(),
                            after: tmp(&ry, rx[1].clone()),
                        },
                    ),
                    (
                        "u",
                        RowOp::Update {
                            key: tmp(&rx, Value::Text(format!("tmp{n}"))),
                            after: tmp(&rx, ry[1].clone()),
                        },
                    ),
                ])
                .await;
            }
            3 | 4 if !ids.is_empty() => {
                // Primary-key update keeping the unique code.
                let p = rng.random_range(0..ids.len());
                let x = ids[p];
                let r = get(src, x);
                next_id += 1;
                ids[p] = next_id;
                src.update(
                    "u",
                    r.clone(),
                    vec![Value::Int(next_id), r[1].clone(), r[2].clone()],
                )
                .await;
            }
            5 if ids.len() > 5 => {
                let p = rng.random_range(0..ids.len());
                let x = ids.remove(p);
                let r = get(src, x);
                if let Value::Text(c) = &r[1] {
                    free_codes.push(c.clone());
                }
                src.txn(vec![("u", RowOp::Delete(r))]).await;
            }
            6 if !free_codes.is_empty() => {
                // Re-use a deleted row's unique code for a new row.
                next_id += 1;
                ids.push(next_id);
                let c = free_codes.remove(0);
                src.insert(
                    "u",
                    vec![Value::Int(next_id), Value::Text(c), Value::Int(-1)],
                )
                .await;
            }
            7 => {
                // Composite primary-key update and a name swap in one transaction.
                let i = rng.random_range(0..keys.len());
                let j = (i + 1 + rng.random_range(0..keys.len() - 1)) % keys.len();
                let (ka, kb) = (keys[i], keys[j]);
                let find = |src: &Source, (a, b): (i64, i64)| {
                    let t = &src.tables["k"];
                    src.rows[&(
                        "k".to_string(),
                        key_of(t, &[Value::Int(a), Value::Int(b), Value::Null]),
                    )]
                        .clone()
                };
                let (ra, rb) = (find(src, ka), find(src, kb));
                let moved = (ka.0, ka.1 + 100);
                keys[i] = moved;
                src.txn(vec![
                    (
                        "k",
                        RowOp::Update {
                            key: ra.clone(),
                            after: vec![
                                Value::Int(moved.0),
                                Value::Int(moved.1),
                                Value::Text(format!("t{n}")),
                            ],
                        },
                    ),
                    (
                        "k",
                        RowOp::Update {
                            key: rb.clone(),
                            after: vec![rb[0].clone(), rb[1].clone(), ra[2].clone()],
                        },
                    ),
                    (
                        "k",
                        RowOp::Update {
                            key: vec![Value::Int(moved.0), Value::Int(moved.1), Value::Null],
                            after: vec![Value::Int(moved.0), Value::Int(moved.1), rb[2].clone()],
                        },
                    ),
                ])
                .await;
            }
            _ if !ids.is_empty() => {
                let x = ids[rng.random_range(0..ids.len())];
                let r = get(src, x);
                src.update(
                    "u",
                    r.clone(),
                    vec![r[0].clone(), r[1].clone(), Value::Int(int(&r[2]) + 10)],
                )
                .await;
            }
            _ => {}
        }
        if n % 25 == 0 {
            src.heartbeat().await;
        }
    }
    src.flush().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_swaps_and_key_updates_converge_and_every_replay_ends_identical() {
    let (fx, mut src) = fixture("swaps", SWAP_DDL).await;
    let mut mid_offset = 0;
    let mut mid_time = 0;
    swap_workload(&fx, &mut src, 400, 11, |n, s| {
        if n == 200 {
            std::thread::sleep(Duration::from_millis(30));
            mid_time = s.next_ts();
            mid_offset = s.produced + 1; // most likely inside a transaction: replay moves it back
        }
    })
    .await;
    fx.apply_caught_up();
    fx.assert_same(&["u", "k"]).await;
    let end = fx.high_watermark();
    let position = src.position.to_string();
    assert_eq!(fx.checkpoint().await.unwrap().0, end);

    let time = chrono::DateTime::from_timestamp_millis(mid_time)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mid = mid_offset.to_string();
    for args in [
        vec!["replay", "--from-beginning", "--json"],
        vec!["replay", "--to-offset", &mid, "--json"],
        vec!["replay", "--from-time", &time, "--json"],
    ] {
        let rep = json(&run_ok(&fx, &args));
        assert_eq!(
            rep["replay_until"],
            serde_json::json!(position),
            "{args:?}: {rep}"
        );
        if args[1] == "--from-time" {
            eprintln!(
                "replay --from-time: broker's ListOffsets-by-time correct: {}",
                rep["broker_time_lookup_ok"]
            );
            let off = rep["offset"].as_i64().unwrap();
            assert!(off > 0 && off < end, "{rep}");
        }
        assert_state(&fx, "replaying");
        fx.apply_caught_up();
        fx.assert_same(&["u", "k"]).await;
        let (off, gtid, replay_until, _) = fx.checkpoint().await.unwrap();
        assert_eq!(
            (off, gtid.as_str(), replay_until),
            (end, position.as_str(), None),
            "after {args:?}"
        );
    }
    fx.drop_databases().await;
}

/// The sum of `field=N` over the log lines of `log`.
fn log_sum(log: &str, field: &str) -> u64 {
    let needle = format!("{field}=");
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find(&needle)? + needle.len()..];
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse::<u64>().ok()
        })
        .sum()
}

/// Apply on four connections with one source transaction per batch, over runs of transactions
/// that touch disjoint rows (inserts of new keys) and runs that conflict: a hot row updated over
/// and over, unique values handed from row to row, key updates, deleted unique values used
/// again. Batches must run side by side, wait where they conflict, and commit in source order:
/// the replica ends identical, with no lock wait met on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_run_side_by_side_and_commit_in_source_order_where_they_conflict() {
    let mut ddl = SWAP_DDL.to_vec();
    ddl.push(A_DDL);
    let fx = Fixture::new(
        "parallel",
        &ddl,
        "batch_transactions = 1\nconnections = 4\nlock_wait_timeout = \"3s\"",
    )
    .await;
    let mut src = fx.source().await;
    src.table(a_table(&fx.db));
    src.insert("a", vec![Value::Int(0), Value::Int(0)]).await;
    let mut next = 1;
    for round in 0..6 {
        for _ in 0..60 {
            src.insert("a", vec![Value::Int(next), Value::Int(round)])
                .await;
            next += 1;
        }
        for k in 0..30 {
            let hot = row_of(&src, "a", 0);
            src.update("a", hot, vec![Value::Int(0), Value::Int(round * 100 + k)])
                .await;
        }
    }
    swap_workload(&fx, &mut src, 400, 23, |_, _| {}).await;
    let log = apply_to_end(&fx, "the planted transactions").await;
    fx.assert_same(&["a", "u", "k"]).await;
    assert_eq!(
        replica_number(&fx, "SELECT v FROM a WHERE id = 0").await,
        Some(529),
        "the hot row holds the last update"
    );
    let (parallel, waits) = (
        log_sum(&log, "parallel_batches"),
        log_sum(&log, "held_rows"),
    );
    eprintln!("batches side by side: {parallel}; rows held back for a conflicting commit: {waits}");
    assert!(parallel > 0, "no batch ran beside a commit: {log}");
    assert!(
        waits > 0,
        "no row was held back for a conflicting commit: {log}"
    );
    assert!(
        !log.contains("met a lock wait"),
        "batches side by side met a lock wait: {log}"
    );
    fx.drop_databases().await;
}

const FK_DDL: &[&str] = &[
    "CREATE TABLE p (id INT PRIMARY KEY, code VARCHAR(10) NOT NULL UNIQUE, v INT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE c (id INT PRIMARY KEY, pid INT NOT NULL, FOREIGN KEY (pid) REFERENCES p(id) ON DELETE CASCADE ON UPDATE CASCADE) ENGINE=InnoDB",
    "CREATE TABLE g (id INT PRIMARY KEY, cid INT NOT NULL, FOREIGN KEY (cid) REFERENCES c(id) ON DELETE CASCADE) ENGINE=InnoDB",
    "CREATE TABLE n (id INT PRIMARY KEY, pcode VARCHAR(10) NULL, FOREIGN KEY (pcode) REFERENCES p(code) ON DELETE SET NULL ON UPDATE CASCADE) ENGINE=InnoDB",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_key_actions_run_on_the_replica_as_on_the_source() {
    let (fx, mut src) = fixture("fk", FK_DDL).await;
    src.table(keyed(
        &fx.db,
        "p",
        vec![varchar_col("code", false), int_col("v", false)],
    ));
    src.table(keyed(&fx.db, "c", vec![int_col("pid", false)]));
    src.table(keyed(&fx.db, "g", vec![int_col("cid", false)]));
    src.table(keyed(&fx.db, "n", vec![varchar_col("pcode", true)]));
    let p =
        |id: i64, code: &str, v: i64| vec![Value::Int(id), Value::Text(code.into()), Value::Int(v)];
    let mut ops = vec![];
    for i in 1..=5 {
        ops.push(("p", RowOp::Insert(p(i, &format!("p{i}"), 0))));
        for j in 0..3 {
            let cid = i * 10 + j;
            ops.push(("c", RowOp::Insert(vec![Value::Int(cid), Value::Int(i)])));
            ops.push((
                "g",
                RowOp::Insert(vec![Value::Int(cid * 10), Value::Int(cid)]),
            ));
        }
        ops.push((
            "n",
            RowOp::Insert(vec![Value::Int(i), Value::Text(format!("p{i}"))]),
        ));
    }
    src.txn(ops).await;
    // The source logs only the parent's change; InnoDB changes the children.
    src.txn(vec![("p", RowOp::Delete(p(1, "p1", 0)))]).await; // cascades to c, g; n.pcode = NULL
    src.update("p", p(2, "p2", 0), p(20, "p2", 0)).await; // c.pid 2 -> 20
    src.update("p", p(3, "p3", 0), p(3, "p3new", 0)).await; // n.pcode
    src.update("p", p(4, "p4", 0), p(4, "p4", 99)).await; // REPLACE: no cascade
    src.flush().await;
    fx.apply_caught_up();
    fx.assert_same(&["p", "c", "g", "n"]).await;
    let children = replica_number(&fx, "SELECT COUNT(*) FROM c WHERE pid = 4").await;
    assert_eq!(children, Some(3), "REPLACE of a parent must not cascade");
    // Re-applying everything over the newer state converges too.
    run_ok(&fx, &["replay", "--from-beginning"]);
    fx.apply_caught_up();
    fx.assert_same(&["p", "c", "g", "n"]).await;
    fx.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_record_stops_apply_and_the_checkpoint_stays() {
    let (fx, mut src) = with_table_a("poison").await;
    for i in 0..5 {
        src.insert("a", vec![Value::Int(i), Value::Int(i)]).await;
    }
    // Not Confluent wire format, with the headers of a row event of transaction 1-1-6.
    let before = src.position.clone();
    let ts = src.next_ts();
    let poison = src
        .send_raw(
            Some(b"k"),
            b"\x07garbage",
            "row",
            &format!("txn:1-1-6:0:last:{before}"),
            ts,
        )
        .await;
    src.flush().await;
    let needles = [
        &format!("@{poison}"),
        "1-1-6",
        "does not decode",
        "magic byte",
    ];
    apply_stops_at(&fx, &needles, poison).await;
    let st = assert_state(&fx, "stopped-at-error");
    assert!(
        st["error"].as_str().unwrap().contains("does not decode"),
        "{st}"
    );
    // Again: same stop, same checkpoint.
    apply_stops_at(&fx, &[&format!("@{poison}")], poison).await;
    assert_replica_rows(&fx, "a", 5, "the rows before the poison record").await;
    fx.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_missing_on_the_replica_names_the_record() {
    let (fx, mut src) = fixture(
        "missing",
        &[
            A_DDL,
            "CREATE TABLE m (id INT PRIMARY KEY, x INT NULL, y VARCHAR(20) NULL) ENGINE=InnoDB",
        ],
    )
    .await;
    fx.on_replica(&["ALTER TABLE m DROP COLUMN y"]).await;
    src.table(a_table(&fx.db));
    src.table(keyed(
        &fx.db,
        "m",
        vec![int_col("x", true), varchar_col("y", true)],
    ));
    src.insert("a", vec![Value::Int(1), Value::Int(1)]).await;
    let first = src.produced;
    src.txn(vec![
        ("a", RowOp::Insert(vec![Value::Int(2), Value::Int(2)])),
        (
            "m",
            RowOp::Insert(vec![Value::Int(42), Value::Int(1), Value::Text("y".into())]),
        ),
    ])
    .await;
    src.flush().await;
    let needles = [
        &format!("@{}", first + 1),
        "GTID 1-1-2",
        &format!("table {}.m", fx.db),
        "primary key id=42",
        "no column `y`",
    ];
    apply_stops_at(&fx, &needles, first).await;
    assert_replica_rows(&fx, "a", 1, "no part of the failing transaction is applied").await;
    fx.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_replica_refuses_is_pinned_to_its_record() {
    let (fx, mut src) = with_text_table("refused", "r", "s").await;
    fx.on_replica(&["ALTER TABLE r MODIFY s VARCHAR(5) NOT NULL"])
        .await;
    let mut bad_offset = 0;
    let mut bad_start = 0;
    for i in 0..300 {
        if i == 150 {
            bad_start = src.produced;
            bad_offset = bad_start + 1;
            src.txn(vec![
                (
                    "r",
                    RowOp::Insert(vec![Value::Int(i), Value::Text("ok".into())]),
                ),
                (
                    "r",
                    RowOp::Insert(vec![Value::Int(10_000), Value::Text("far too long".into())]),
                ),
            ])
            .await;
        } else {
            src.insert("r", vec![Value::Int(i), Value::Text("ok".into())])
                .await;
        }
    }
    src.flush().await;
    let needles = [&format!("@{bad_offset}"), "id=10000", "Data too long"];
    apply_stops_at(&fx, &needles, bad_start).await;
    assert_replica_rows(
        &fx,
        "r",
        150,
        "every transaction before the failing one is applied, nothing after",
    )
    .await;
    fx.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_apply_in_order_and_re_applying_them_is_harmless() {
    let (fx, mut src) = Fixture::caught_up_with_one_table("ddl").await;
    let v1 = keyed(&fx.db, "t2", vec![int_col("a", true)]);
    let v2 = keyed(
        &fx.db,
        "t2",
        vec![int_col("a", true), varchar_col("b", true)],
    );
    let v3 = keyed(&fx.db, "t2", vec![varchar_col("b", true)]);
    // Each schema change is also run on the replica first: the state a crash leaves between
    // running a schema change and committing the checkpoint past it.
    let steps: Vec<(&str, Option<continuum_schemas::TableSchema>)> = vec![
        (
            "CREATE TABLE t2 (id INT PRIMARY KEY, a INT NULL) ENGINE=InnoDB",
            Some(v1),
        ),
        ("ALTER TABLE t2 ADD COLUMN b VARCHAR(10) NULL", Some(v2)),
        ("CREATE INDEX ib ON t2 (b)", None),
        ("ALTER TABLE t2 DROP COLUMN a", Some(v3)),
        ("CREATE TABLE t3 (id INT PRIMARY KEY) ENGINE=InnoDB", None),
        ("DROP TABLE t3", None),
        ("CREATE DATABASE IF NOT EXISTS ct_ddl_extra_db_unused", None),
    ];
    let mut id = 0;
    for (ddl, shape) in steps {
        if !ddl.contains("ct_ddl_extra") {
            fx.replica().await.query_drop(ddl).await.unwrap();
        }
        src.ddl(ddl).await;
        if let Some(t) = shape {
            src.table(t.clone());
            for _ in 0..3 {
                id += 1;
                let row: Vec<Value> = t
                    .columns
                    .iter()
                    .map(|c| match c.name.as_str() {
                        "id" => Value::Int(id),
                        "a" => Value::Int(id * 10),
                        _ => Value::Text(format!("b{id}")),
                    })
                    .collect();
                src.txn(vec![("t2", RowOp::Insert(row))]).await;
            }
        }
        src.flush().await;
        apply_to_end(&fx, ddl).await;
    }
    fx.assert_same(&["base", "t2"]).await;
    assert_eq!(
        create_t2(fx.source_conn().await).await,
        create_t2(fx.replica().await).await
    );
    // Re-applying the whole history, schema changes included, over the final schema.
    run_ok(&fx, &["replay", "--from-beginning"]);
    fx.apply_caught_up();
    fx.assert_same(&["base", "t2"]).await;
    let t3 = replica_number(&fx, &tables_named("t3")).await;
    assert_eq!(t3, Some(0));
    let _ = fx
        .replica()
        .await
        .query_drop("DROP DATABASE IF EXISTS ct_ddl_extra_db_unused")
        .await;
    fx.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_policy_stop_and_skip() {
    let (fx, mut src) = Fixture::with_one_table("ddlpolicy").await;
    let ddl_offset = src.produced;
    src.ddl("CREATE TABLE extra (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await;
    src.insert("base", vec![Value::Int(2)]).await;
    src.flush().await;
    let out = fx.run(&["apply", "--until-caught-up", "--ddl", "stop"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("CREATE TABLE extra")
            && err.contains(&format!("@{ddl_offset}"))
            && err.contains("ddl = \"stop\""),
        "{err}"
    );
    assert_eq!(fx.checkpoint().await.unwrap().0, ddl_offset);
    run_ok(&fx, &["apply", "--until-caught-up", "--ddl", "skip"]);
    let extra = replica_number(&fx, &tables_named("extra")).await;
    assert_eq!(extra, Some(0), "skipped: not run on the replica");
    fx.assert_same(&["base"]).await;
    fx.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_snapshot_leaves_no_stale_rows() {
    let (fx, mut src) = with_text_table("snap", "s", "v").await;
    // Rows that exist before capture starts: only snapshots carry them.
    for i in 1..=100 {
        src.source_only(
            "s",
            RowOp::Insert(vec![Value::Int(i), Value::Text(format!("v{i}"))]),
        )
        .await;
    }
    // The replica has leftovers from an earlier life, too.
    fx.on_replica(&["INSERT INTO s VALUES (5000, 'stale'), (5001, 'stale')"])
        .await;
    // Snapshot A: abandoned after 60 rows.
    src.snapshot("A", &["s"], Some(60)).await;
    src.flush().await;
    fx.apply_caught_up();
    let st = assert_state(&fx, "snapshot-loading");
    assert_eq!(st["snapshot_loading"], "A", "{st}");
    assert_replica_rows(&fx, "s", 60, "while A loads, the table holds A's rows only").await;
    // The source changes, then snapshot B is taken in full.
    for i in 1..=20 {
        src.source_only("s", RowOp::Delete(vec![Value::Int(i), Value::Null]))
            .await;
    }
    for i in 101..=110 {
        src.source_only(
            "s",
            RowOp::Insert(vec![Value::Int(i), Value::Text(format!("v{i}"))]),
        )
        .await;
    }
    src.snapshot("B", &["s"], None).await;
    for i in 21..=25 {
        src.update(
            "s",
            vec![Value::Int(i), Value::Null],
            vec![Value::Int(i), Value::Text("after".into())],
        )
        .await;
    }
    // The producer dies inside a transaction and starts over with snapshot C: the partial
    // transaction's rows must not appear.
    let (gtid, before, after) = (
        continuum_schemas::Gtid::new(1, 1, src.seq + 1),
        src.position.clone(),
        src.position
            .with(continuum_schemas::Gtid::new(1, 1, src.seq + 1)),
    );
    let t = src.tables["s"].clone();
    for idx in 0..3u64 {
        let rec = StreamRecord::Change(continuum_schemas::ChangeEvent {
            op: continuum_schemas::Op::Insert,
            table: t.clone(),
            before: None,
            after: Some(vec![
                Value::Int(9000 + idx as i64),
                Value::Text("abandoned".into()),
            ]),
            source: continuum_schemas::SourceInfo {
                server_id: 1,
                gtid: Some(gtid),
                gtid_position: after.clone(),
                resume_position: before.clone(),
                binlog: continuum_schemas::BinlogPosition::new("sf-bin.000001", 4),
                commit_ts_ms: now_ms(),
                snapshot_id: None,
            },
            tx: Some(continuum_schemas::TxPlace {
                index: idx,
                last: false,
            }),
        });
        src.send(&rec).await;
    }
    src.snapshot("C", &["s"], None).await;
    src.txn(vec![(
        "s",
        RowOp::Delete(vec![Value::Int(30), Value::Null]),
    )])
    .await;
    src.flush().await;
    fx.apply_caught_up();
    fx.assert_same(&["s"]).await;
    let st = assert_state(&fx, "stopped");
    assert_eq!(st["gtid_applied"], src.position.to_string());
    fx.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lock_and_metrics() {
    let fx = Fixture::new("status", &[A_DDL], "").await;
    assert_state(&fx, "not-started");
    let mut src = fx.source().await;
    src.table(a_table(&fx.db));
    for i in 0..20 {
        src.insert("a", vec![Value::Int(i), Value::Int(i)]).await;
    }
    src.heartbeat().await;
    src.flush().await;
    let port = free_port();
    let mut apply = fx.spawn_apply(&["--metrics-listen", &format!("127.0.0.1:{port}")]);
    let high = fx
        .wait_caught_up("apply to catch up", Duration::from_secs(60))
        .await;
    let st = assert_state(&fx, "idle");
    assert_eq!(st["checkpoint_offset"], high);
    assert_eq!(st["high_watermark"], high);
    assert_eq!(st["records_behind"], 0);
    assert_eq!(st["gtid_applied"], src.position.to_string());
    assert_eq!(st["gtid_latest"], src.position.to_string());
    assert_eq!(st["last_applied_gtid"], format!("1-1-{}", src.seq));
    assert!(st["seconds_behind_source"].as_f64().unwrap() < 60.0, "{st}");
    assert!(st["apply_connection"].is_number(), "{st}");
    let text = String::from_utf8_lossy(&fx.run(&["status"]).stdout).into_owned();
    assert!(
        text.contains("state            idle")
            && text.contains(&format!("offset {high} of {high} (0 records behind)")),
        "{text}"
    );
    // Only one apply per topic: a second one waits for the lock, saying which connection holds
    // it, and applies nothing meanwhile.
    let holder = apply_lock_holder(&fx).await.expect("apply holds its lock");
    let second_log = fx.config_path.with_extension("second.log");
    let second = Killed(
        fx.command(&["apply", "--until-caught-up", "--no-metrics"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&second_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let waiting = format!(
        "held by connection {holder}: an apply of {} is running",
        fx.topic
    );
    let mut second = second;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(&second_log).unwrap_or_default();
        assert!(
            second.0.try_wait().unwrap().is_none(),
            "the second apply exited instead of waiting:\n{log}"
        );
        if log.contains(&waiting) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second apply did not say {waiting:?} within 60s:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(second);
    // Metrics and health.
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for m in [
        "continuum_apply_rows_total",
        "continuum_apply_transactions_total",
        "continuum_apply_batch_rows",
        "continuum_apply_seconds_behind_source",
        "continuum_apply_checkpoint_offset",
    ] {
        assert!(body.contains(m), "{m} missing from /metrics:\n{body}");
    }
    assert!(
        body.contains(&format!("continuum_apply_checkpoint_offset {high}")),
        "{body}"
    );
    let health = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // Live: new transactions arrive and are applied.
    src.insert("a", vec![Value::Int(100), Value::Int(100)])
        .await;
    src.flush().await;
    fx.wait_caught_up("apply to apply a live transaction", Duration::from_secs(30))
        .await;
    // SIGTERM stops it cleanly.
    signal(apply.id(), "TERM");
    let status = apply.wait().unwrap();
    assert!(status.success(), "{status:?}");
    fx.assert_same(&["a"]).await;
    assert_state(&fx, "stopped");
    fx.drop_databases().await;
}

/// The replica connection that holds the apply lock of the fixture's topic, if any.
async fn apply_lock_holder(fx: &Fixture) -> Option<i64> {
    let mut c = fx.replica_admin.conn().await;
    c.exec_first::<Option<i64>, _, _>(
        "SELECT IS_USED_LOCK(?)",
        (continuum_consumer::lock::lock_name(&fx.topic),),
    )
    .await
    .unwrap()
    .flatten()
}

/// Apply's host stops answering (simulated: the process is SIGSTOPped, so its connections stay
/// open and silent, like a dead host's half-open ones). MariaDB frees the apply lock when it
/// drops the silent lock connection (its short `wait_timeout`), so a replacement started
/// meanwhile waits, then takes over and applies. When the stopped apply wakes up, it finds the
/// lock gone and commits nothing: the replica matches the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_on_a_host_that_stopped_answering_is_replaced() {
    let (fx, mut src) = with_table_a("deadhost").await;
    async fn write(src: &mut Source, from: i64, to: i64) {
        for i in from..to {
            src.insert("a", vec![Value::Int(i), Value::Int(i)]).await;
        }
        src.heartbeat().await;
        src.flush().await;
    }
    write(&mut src, 0, 5).await;
    let first = Killed(fx.spawn_apply(&["--no-metrics"]));
    fx.wait_caught_up("the first apply to catch up", Duration::from_secs(60))
        .await;
    let holder = apply_lock_holder(&fx)
        .await
        .expect("the first apply holds the lock");
    assert!(signal(first.0.id(), "STOP"), "SIGSTOP the first apply");
    let stopped = std::time::Instant::now();

    let second_log = fx.config_path.with_extension("second.log");
    let mut second = Killed(
        fx.command(&["apply", "--no-metrics"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&second_log).unwrap())
            .spawn()
            .unwrap(),
    );
    write(&mut src, 5, 10).await;
    let high = fx.high_watermark();
    let applied_all = async || fx.checkpoint().await.is_some_and(|c| c.0 == high);
    wait_for_takeover(
        &mut second.0,
        Duration::from_secs(90),
        stopped,
        holder,
        applied_all,
        async || apply_lock_holder(&fx).await,
        || std::fs::read_to_string(&second_log).unwrap_or_default(),
    )
    .await;

    // The first apply wakes up and reads the new records too: it must not commit them.
    assert!(signal(first.0.id(), "CONT"), "SIGCONT the first apply");
    write(&mut src, 10, 15).await;
    fx.wait_caught_up(
        "the replacement to apply the last transactions",
        Duration::from_secs(60),
    )
    .await;
    wait_for(
        "the first apply to find its lock gone",
        Duration::from_secs(60),
        || async {
            std::fs::read_to_string(fx.log_path())
                .unwrap_or_default()
                .contains("lost the apply lock")
                .then_some(())
        },
    )
    .await;
    drop(first);
    drop(second);
    fx.assert_same(&["a"]).await;
    assert_replica_rows(&fx, "a", 15, "every transaction, applied once").await;
    fx.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_time_stops_before_the_first_newer_transaction() {
    let (fx, mut src) = with_table_a("until").await;
    src.set_ts(now_ms() - 100_000);
    src.ts_step = Some(1);
    for i in 0..50 {
        src.insert("a", vec![Value::Int(i), Value::Int(i)]).await;
    }
    // A transaction whose records span the cut: none of it may be applied.
    let cut_start = src.produced;
    let cut = src.last_ts + 5;
    src.txn(
        (50..60)
            .map(|i| ("a", RowOp::Insert(vec![Value::Int(i), Value::Int(i)])))
            .collect(),
    )
    .await;
    for i in 60..80 {
        src.insert("a", vec![Value::Int(i), Value::Int(i)]).await;
    }
    src.flush().await;
    fx.apply_caught_up();
    // A point-in-time rebuild: empty the replica, replay from the beginning until the cut.
    fx.on_replica(&["DELETE FROM a"]).await;
    let t = chrono::DateTime::from_timestamp_millis(cut)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    run_ok(&fx, &["replay", "--from-beginning", "--until-time", &t]);
    let err = fx.apply_caught_up();
    assert!(err.contains("until-time"), "{err}");
    assert_replica_rows(&fx, "a", 50, "exactly the transactions before the cut").await;
    assert_eq!(fx.checkpoint().await.unwrap().0, cut_start);
    assert_state(&fx, "until-time-reached");
    // Apply again stops again; a replay without --until-time goes on.
    fx.apply_caught_up();
    assert_eq!(fx.checkpoint().await.unwrap().0, cut_start);
    run_ok(&fx, &["replay", "--to-offset", &cut_start.to_string()]);
    fx.apply_caught_up();
    fx.assert_same(&["a"]).await;
    fx.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_to_another_cluster_finds_the_place_by_gtid() {
    let (fx, mut src) = with_table_a("switch").await;
    fx.mirror_to(&mut src, "sf").await;
    // Offsets differ between the clusters: the SF copy has extra records at its start.
    for _ in 0..7 {
        src.mirror.as_mut().unwrap().heartbeat().await;
    }
    for i in 0..30 {
        src.insert("a", vec![Value::Int(i), Value::Int(i)]).await;
    }
    src.flush().await;
    fx.apply_caught_up(); // from the EU cluster
    for i in 30..60 {
        src.inserts(
            "a",
            (0..3).map(|j| vec![Value::Int(i * 10 + j), Value::Int(i)]),
        )
        .await;
    }
    src.flush().await;
    let out = run_ok(&fx, &["--read-from", "sf", "apply", "--until-caught-up"]);
    assert!(
        stderr(&out).contains("found its place here by GTID position"),
        "{}",
        stderr(&out)
    );
    fx.assert_same(&["a"]).await;
    let (cluster, off): (String, i64) = fx
        .checkpoint_columns("cluster, next_offset")
        .await
        .expect("a checkpoint row");
    assert_eq!(cluster, "sf");
    assert_eq!(off, fx.high_watermark() + 7, "the SF copy's end");
    fx.drop_databases().await;
}

/// A crash between a schema change and the checkpoint past it runs the schema change again.
/// Each kind the workload generator emits, and the renames, is first run on the replica (the
/// state such a crash leaves), then applied: apply must see from the replica's schema that it is
/// already in effect and go on. Renames fail when run twice (1146 for a table, 1054 for a
/// column), which no list of "already done" error codes covered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_run_again_after_a_crash_is_recognised_from_the_replicas_schema() {
    let (fx, mut src) = Fixture::caught_up_with_one_table("ddlrerun").await;
    let steps = SCHEMA_CHANGES;
    for ddl in steps {
        fx.replica().await.query_drop(ddl).await.unwrap();
        src.ddl(ddl).await;
        src.flush().await;
        apply_to_end(&fx, &format!("apply passes `{ddl}` run again")).await;
    }
    for conn in [fx.source_conn().await, fx.replica().await] {
        let t2 = create_t2(conn).await;
        assert!(t2.contains("`k` bigint(20) DEFAULT NULL"), "{t2}");
    }
    // A schema change the replica refuses for another reason still stops apply, naming why.
    fx.on_replica(&["ALTER TABLE t2 ADD COLUMN z INT NULL"])
        .await;
    src.ddl("ALTER TABLE t2 ADD COLUMN z VARCHAR(10) NULL, ADD COLUMN y INT NULL")
        .await;
    src.flush().await;
    fx.apply_caught_up_expect_failure(&["ADD COLUMN z", "column y of", "is not there"])
        .await;
    fx.drop_databases().await;
}

/// `CREATE TABLE ... SELECT` is one source transaction: the new table's definition, then its
/// rows. Apply ran schema changes only alone in their transaction, and stopped for good at it
/// ("a schema change must be a transaction of its own"). Now the table is created, its rows
/// follow and commit with the checkpoint; and after a crash between the two (the table already
/// there, its rows not) applying it again converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_table_select_replicates_the_table_then_its_rows() {
    let (fx, mut src) = with_text_table("ctas", "src", "name").await;
    let shape = |name: &str| keyed(&fx.db, name, vec![varchar_col("name", false)]);
    for i in 1..=5 {
        src.insert("src", vec![Value::Int(i), Value::Text(format!("n{i}"))])
            .await;
    }
    src.create_select(
        "CREATE TABLE copy (PRIMARY KEY (id)) SELECT id, name FROM src WHERE id > 1",
        shape("copy"),
    )
    .await;
    src.insert("src", vec![Value::Int(6), Value::Text("n6".into())])
        .await;
    src.flush().await;
    apply_to_end(&fx, "a CREATE TABLE ... SELECT").await;
    fx.assert_same(&["src", "copy"]).await;

    // A crash after the statement and before its rows committed: the table is there, empty.
    fx.on_replica(&["CREATE TABLE copy2 (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)"])
        .await;
    src.create_select(
        "CREATE TABLE copy2 (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL) SELECT id, name FROM src",
        shape("copy2"),
    )
    .await;
    // And one whose SELECT finds nothing: the statement alone is the transaction.
    src.create_select(
        "CREATE TABLE copy3 (PRIMARY KEY (id)) SELECT id, name FROM src WHERE id < 0",
        shape("copy3"),
    )
    .await;
    src.flush().await;
    apply_to_end(
        &fx,
        "its rows again, and a CREATE TABLE ... SELECT of no rows",
    )
    .await;
    fx.assert_same(&["src", "copy", "copy2", "copy3"]).await;
    fx.drop_databases().await;
}

/// A trigger on the replica would fire on apply's statements, while what the source's triggers
/// did already arrives as rows: its effect would happen twice. Apply refuses the table, naming
/// the trigger, and applies nothing of it; with the trigger gone it goes on. Before, apply ran
/// and the replica's audit table held a row per REPLACE (the trigger fired), the source's none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_on_the_replica_is_refused_naming_it() {
    let (fx, mut src) = fixture(
        "trigger",
        &[
            "CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB",
            "CREATE TABLE audit (n INT AUTO_INCREMENT PRIMARY KEY, id INT) ENGINE=InnoDB",
        ],
    )
    .await;
    fx.on_replica(&["CREATE TRIGGER t_ins AFTER INSERT ON t FOR EACH ROW INSERT INTO audit (id) VALUES (NEW.id)"]).await;
    src.table(keyed(&fx.db, "t", vec![int_col("v", false)]));
    src.insert("t", vec![Value::Int(1), Value::Int(1)]).await;
    src.flush().await;
    fx.apply_caught_up_expect_failure(&["has triggers: t_ins (AFTER INSERT)", ".t"])
        .await;
    assert_replica_rows(&fx, "audit", 0, "the trigger never fired").await;
    fx.on_replica(&["DROP TRIGGER t_ins"]).await;
    fx.apply_caught_up();
    fx.assert_same(&["t", "audit"]).await;
    fx.drop_databases().await;
}

/// A table without a primary key is applied as MariaDB's own replication does it: a row is all
/// its values, an insert is an INSERT, and a delete or an update changes one row matching the
/// before-image (two identical rows stay two; deleting one leaves the other). A keyless
/// `CREATE TABLE ... SELECT` is replicated like a keyed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_primary_key_is_applied_by_every_value() {
    let (fx, mut src) = fixture(
        "keyless",
        &["CREATE TABLE log (a INT NULL, b VARCHAR(10) NULL) ENGINE=InnoDB"],
    )
    .await;
    let shape = |name: &str| {
        table(
            &fx.db,
            name,
            vec![int_col("a", true), varchar_col("b", true)],
            vec![],
        )
    };
    src.table(shape("log"));
    let row = |a: i64, b: Option<&str>| {
        vec![
            Value::Int(a),
            b.map_or(Value::Null, |b| Value::Text(b.into())),
        ]
    };
    src.txn(vec![
        ("log", RowOp::Insert(row(1, Some("x")))),
        ("log", RowOp::Insert(row(1, Some("x")))),
        ("log", RowOp::Insert(row(2, None))),
        ("log", RowOp::Insert(row(3, Some("y")))),
    ])
    .await;
    src.update("log", row(2, None), row(2, Some("z"))).await;
    src.txn(vec![
        ("log", RowOp::Delete(row(1, Some("x")))),
        ("log", RowOp::Delete(row(3, Some("y")))),
    ])
    .await;
    src.create_select("CREATE TABLE copy SELECT a, b FROM log", shape("copy"))
        .await;
    src.flush().await;
    apply_to_end(&fx, "changes of a table without a primary key").await;
    fx.assert_same(&["log", "copy"]).await;
    let rows: Vec<(i64, Option<String>)> = fx
        .replica()
        .await
        .query(format!("SELECT a, b FROM `{}`.log ORDER BY a", fx.db))
        .await
        .unwrap();
    assert_eq!(rows, [(1, Some("x".into())), (2, Some("z".into()))]);
    fx.drop_databases().await;
}

/// A record's position is in its payload and in its `continuum.pos` header. Apply trusted the
/// header alone: a record whose header had been rewritten (here: to a transaction the
/// checkpoint already holds) was skipped as a duplicate. Now the two must agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_header_that_disagrees_with_the_payload_stops_apply() {
    let (fx, mut src) = with_table_a("poshdr").await;
    let t = src.tables["a"].clone();
    src.insert("a", vec![Value::Int(1), Value::Int(1)]).await;
    let before = src.position.clone();
    let rec = continuum_schemas::StreamRecord::Change(continuum_schemas::ChangeEvent {
        op: continuum_schemas::Op::Insert,
        table: t,
        before: None,
        after: Some(vec![Value::Int(2), Value::Int(2)]),
        source: continuum_schemas::SourceInfo {
            server_id: 1,
            gtid: Some(continuum_schemas::Gtid::new(1, 1, 2)),
            gtid_position: before.with(continuum_schemas::Gtid::new(1, 1, 2)),
            resume_position: before.clone(),
            binlog: continuum_schemas::BinlogPosition::new("b.000001", 4),
            commit_ts_ms: 1,
            snapshot_id: None,
        },
        tx: Some(continuum_schemas::TxPlace {
            index: 0,
            last: true,
        }),
    });
    // The header names 1-1-1, which the replica holds; the payload is 1-1-2.
    let bad = src
        .send_with_pos_header(&rec, &format!("txn:1-1-1:0:last:{}", "1-1-0"))
        .await;
    src.flush().await;
    fx.apply_caught_up_expect_failure(&[
        &format!("@{bad}"),
        "header says 'txn:1-1-1:0:last:1-1-0'",
        "payload is at 'txn:1-1-2:0:last:",
    ])
    .await;
    assert_replica_rows(&fx, "a", 1, "not the record whose header disagrees").await;
    fx.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caught_up_apply_commits_each_transaction_without_waiting_for_batch_wait() {
    // batch_wait far beyond the test's bound: only "a batch with nothing queued behind it
    // commits at once" can make each transaction visible in time.
    let fx = Fixture::new("idle_commit", &[A_DDL], "batch_wait = \"10m\"").await;
    let mut src = fx.source().await;
    src.table(a_table(&fx.db));
    let _apply = Killed(fx.spawn_apply(&["--no-metrics"]));
    for round in 1..=3i64 {
        src.insert("a", vec![Value::Int(round), Value::Int(round * 10)])
            .await;
        src.flush().await;
        fx.wait_caught_up(
            &format!("transaction {round} to commit while batch_wait (10m) runs"),
            Duration::from_secs(30),
        )
        .await;
        assert_replica_rows(&fx, "a", round, "each transaction committed on its own").await;
    }
}

/// Apply's multi-row statements, their values in hex, are larger than the row events they
/// make: with `BINLOG ADMIN` (the stack's user has it), apply's session leaves their text out of
/// the replica's binlog (`binlog_annotate_row_events=0`), and writes only the row events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_leaves_its_statement_text_out_of_the_replicas_binlog() {
    let (fx, mut src) = with_table_a("annotations").await;
    let mut admin = fx.replica().await;
    let (file, from): (String, u64) = admin
        .query_first("SHOW BINLOG STATUS")
        .await
        .unwrap()
        .map(|row: mysql_async::Row| {
            (
                row.get::<String, _>(0).unwrap(),
                row.get::<u64, _>(1).unwrap(),
            )
        })
        .expect("the replica writes a binlog");
    for i in 0..20 {
        src.insert("a", vec![Value::Int(i), Value::Int(i)]).await;
    }
    src.flush().await;
    apply_to_end(&fx, "20 inserts").await;
    assert_replica_rows(&fx, "a", 20, "every insert applied").await;
    // Other tests write to the same binlog: only the events naming this test's table count.
    let events: Vec<(String, String)> = admin
        .query(format!("SHOW BINLOG EVENTS IN '{file}' FROM {from}"))
        .await
        .unwrap()
        .into_iter()
        .map(|row: mysql_async::Row| {
            (
                row.get::<String, _>("Event_type").unwrap(),
                row.get::<String, _>("Info").unwrap_or_default(),
            )
        })
        .collect();
    // A table map's Info reads `table_id: 14459 (db.a)`.
    let table = format!("({}.a)", fx.db);
    let maps = events
        .iter()
        .filter(|(ty, info)| ty == "Table_map" && info.contains(&table))
        .count();
    assert!(
        maps > 0,
        "apply's row events for {table} are in {file} after {from}"
    );
    let annotated: Vec<&String> = events
        .iter()
        .filter(|(ty, info)| ty == "Annotate_rows" && info.contains(&fx.db))
        .map(|(_, info)| info)
        .collect();
    assert!(
        annotated.is_empty(),
        "apply's statement text is in the replica's binlog: {annotated:?}"
    );
}
