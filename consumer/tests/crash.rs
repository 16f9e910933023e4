//! Crash safety: apply is killed with SIGKILL at 20+ random moments while a workload arrives
//! (multi-table transactions, foreign-key chains with cascades, unique swaps, primary-key
//! updates, deletes, and one transaction of 100k rows); after a final uninterrupted run the
//! replica equals the source (CHECKSUM TABLE and row counts of every table) and the checkpoint
//! is the end of the topic.
//!
//! Run: `. .stack/env && cargo test --release -p continuum-consumer --test crash -- --nocapture`

mod support;

use std::time::{Duration, Instant};

use continuum_schemas::types::DateTime;
use continuum_schemas::Value;
use mysql_async::prelude::*;
use rand::{Rng, SeedableRng};
use support::*;

const DDL: &[&str] = &[
    "CREATE TABLE customers (id INT PRIMARY KEY, email VARCHAR(64) NOT NULL UNIQUE, credit BIGINT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id INT NOT NULL, total BIGINT NOT NULL,
       FOREIGN KEY (customer_id) REFERENCES customers(id) ON DELETE CASCADE ON UPDATE CASCADE) ENGINE=InnoDB",
    "CREATE TABLE order_lines (id BIGINT PRIMARY KEY, order_id BIGINT NOT NULL, sku VARCHAR(16) NOT NULL, qty INT NOT NULL,
       FOREIGN KEY (order_id) REFERENCES orders(id) ON DELETE CASCADE) ENGINE=InnoDB",
    "CREATE TABLE items (id BIGINT PRIMARY KEY, code VARCHAR(32) NOT NULL UNIQUE, payload VARBINARY(100) NULL, created DATETIME(6) NOT NULL) ENGINE=InnoDB",
];
const TABLES: &[&str] = &["customers", "orders", "order_lines", "items"];

fn setup(src: &mut Source, db: &str) {
    src.table(table(
        db,
        "customers",
        vec![
            int_col("id", false),
            varchar_col("email", false),
            bigint_col("credit", false),
        ],
        vec![0],
    ));
    src.table(table(
        db,
        "orders",
        vec![
            bigint_col("id", false),
            int_col("customer_id", false),
            bigint_col("total", false),
        ],
        vec![0],
    ));
    src.table(table(
        db,
        "order_lines",
        vec![
            bigint_col("id", false),
            bigint_col("order_id", false),
            varchar_col("sku", false),
            int_col("qty", false),
        ],
        vec![0],
    ));
    let created = continuum_schemas::Column {
        name: "created".into(),
        ty: continuum_schemas::ColumnType::DateTime { fsp: 6 },
        nullable: false,
    };
    src.table(table(
        db,
        "items",
        vec![
            bigint_col("id", false),
            varchar_col("code", false),
            varbinary_col("payload", true),
            created,
        ],
        vec![0],
    ));
}

fn item(i: usize) -> Vec<Value> {
    vec![
        Value::Int(i as i64),
        Value::Text(format!("item-{i:08}")),
        Value::Bytes(format!("payload {i} ").repeat(3).into_bytes()),
        Value::DateTime(DateTime::from_epoch_micros(
            1_700_000_000_000_000 + i as i64 * 1_000_123,
        )),
    ]
}

fn get(src: &Source, t: &str, id: i64) -> Option<Vec<Value>> {
    let tab = &src.tables[t];
    let mut probe = vec![Value::Null; tab.columns.len()];
    probe[0] = Value::Int(id);
    src.rows.get(&(t.to_string(), key_of(tab, &probe))).cloned()
}

/// Mixed transactions: orders with lines (three tables), credit moves, email swaps, customer
/// id changes (cascading to orders), customer deletes (cascading to orders and lines), item
/// key updates and deletes.
async fn mixed(src: &mut Source, rng: &mut rand::rngs::StdRng, n: usize, state: &mut State) {
    for _ in 0..n {
        let cust: Vec<i64> = state.customers.clone();
        match rng.random_range(0..10) {
            0..=3 => {
                let c = cust[rng.random_range(0..cust.len())];
                state.next_order += 1;
                let o = state.next_order;
                let mut ops = vec![(
                    "orders",
                    RowOp::Insert(vec![Value::Int(o), Value::Int(c), Value::Int(0)]),
                )];
                for l in 0..rng.random_range(1..4) {
                    ops.push((
                        "order_lines",
                        RowOp::Insert(vec![
                            Value::Int(o * 10 + l),
                            Value::Int(o),
                            Value::Text(format!("sku{l}")),
                            Value::Int(l + 1),
                        ]),
                    ));
                }
                let r = get(src, "customers", c).unwrap();
                let credit = match r[2] {
                    Value::Int(x) => x,
                    _ => 0,
                };
                ops.push((
                    "customers",
                    RowOp::Update {
                        key: r.clone(),
                        after: vec![r[0].clone(), r[1].clone(), Value::Int(credit - 5)],
                    },
                ));
                src.txn(ops).await;
                state.orders.push((o, c));
            }
            4 => {
                // Swap two emails through a temporary value.
                let a = cust[rng.random_range(0..cust.len())];
                let b = cust[rng.random_range(0..cust.len())];
                if a == b {
                    continue;
                }
                let (ra, rb) = (
                    get(src, "customers", a).unwrap(),
                    get(src, "customers", b).unwrap(),
                );
                let with = |r: &Vec<Value>, e: Value| vec![r[0].clone(), e, r[2].clone()];
                let tmp = Value::Text(format!("tmp-{}", state.next_order));
                src.txn(vec![
                    (
                        "customers",
                        RowOp::Update {
                            key: ra.clone(),
                            after: with(&ra, tmp.clone()),
                        },
                    ),
                    (
                        "customers",
                        RowOp::Update {
                            key: rb.clone(),
                            after: with(&rb, ra[1].clone()),
                        },
                    ),
                    (
                        "customers",
                        RowOp::Update {
                            key: with(&ra, tmp),
                            after: with(&ra, rb[1].clone()),
                        },
                    ),
                ])
                .await;
            }
            5 => {
                // Customer id change: ON UPDATE CASCADE moves the orders on both sides.
                let p = rng.random_range(0..state.customers.len());
                let c = state.customers[p];
                state.next_customer += 1;
                let new = state.next_customer;
                let r = get(src, "customers", c).unwrap();
                src.update(
                    "customers",
                    r.clone(),
                    vec![Value::Int(new), r[1].clone(), r[2].clone()],
                )
                .await;
                state.customers[p] = new;
                for o in state.orders.iter_mut().filter(|o| o.1 == c) {
                    o.1 = new;
                }
                // The source's InnoDB moved the orders: so does the model.
                for ((t, _), row) in src.rows.iter_mut() {
                    if t == "orders" && row[1] == Value::Int(c) {
                        row[1] = Value::Int(new);
                    }
                }
            }
            6 if state.customers.len() > 10 => {
                // Delete a customer: orders and lines go by cascade (not in the binlog).
                let p = rng.random_range(0..state.customers.len());
                let c = state.customers.remove(p);
                let r = get(src, "customers", c).unwrap();
                src.txn(vec![("customers", RowOp::Delete(r))]).await;
                let gone: Vec<i64> = state
                    .orders
                    .iter()
                    .filter(|o| o.1 == c)
                    .map(|o| o.0)
                    .collect();
                state.orders.retain(|o| o.1 != c);
                src.rows.retain(|(t, _), row| match t.as_str() {
                    "orders" => row[1] != Value::Int(c),
                    "order_lines" => !matches!(row[1], Value::Int(o) if gone.contains(&o)),
                    _ => true,
                });
            }
            7 => {
                // An item's primary key changes.
                let i = rng.random_range(0..state.items.len());
                let old = state.items[i];
                let Some(r) = get(src, "items", old) else {
                    continue;
                };
                let new = 10_000_000 + old * 3 + rng.random_range(0..3);
                if get(src, "items", new).is_some() {
                    continue;
                }
                src.update(
                    "items",
                    r.clone(),
                    vec![Value::Int(new), r[1].clone(), r[2].clone(), r[3].clone()],
                )
                .await;
                state.items[i] = new;
            }
            8 => {
                let i = rng.random_range(0..state.items.len());
                let id = state.items.swap_remove(i);
                if let Some(r) = get(src, "items", id) {
                    src.txn(vec![("items", RowOp::Delete(r))]).await;
                }
            }
            _ => {
                if let Some(&(o, _)) = state.orders.last() {
                    let Some(r) = get(src, "orders", o) else {
                        continue;
                    };
                    src.update(
                        "orders",
                        r.clone(),
                        vec![r[0].clone(), r[1].clone(), Value::Int(99)],
                    )
                    .await;
                }
            }
        }
        if rng.random_range(0..20) == 0 {
            src.heartbeat().await;
        }
    }
}

struct State {
    customers: Vec<i64>,
    next_customer: i64,
    orders: Vec<(i64, i64)>,
    next_order: i64,
    items: Vec<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_then_resume_converges() {
    let big: usize = env_or("CRASH_BIG_TXN_ROWS", 100_000);
    let kills: usize = env_or("CRASH_KILLS", 24);
    let fx = Fixture::new("crash", DDL, "").await;
    let mut src = fx.source().await;
    setup(&mut src, &fx.db);
    let started = Instant::now();
    // Before: customers and some items.
    src.inserts(
        "customers",
        (0..50).map(|i| {
            vec![
                Value::Int(i),
                Value::Text(format!("c{i}@x")),
                Value::Int(1000),
            ]
        }),
    )
    .await;
    src.txn(
        (0..500)
            .map(|i| ("items", RowOp::Insert(item(1_000_000 + i))))
            .collect(),
    )
    .await;
    src.flush().await;
    let producer = {
        let mut src = src;
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(42);
            let mut state = State {
                customers: (0..50).collect(),
                next_customer: 1000,
                orders: vec![],
                next_order: 0,
                items: (1_000_000..1_000_500).collect(),
            };
            mixed(&mut src, &mut rng, 400, &mut state).await;
            src.flush().await;
            src.big_insert("items", big, item).await;
            state.items.extend((0..200).map(|i| i as i64));
            src.flush().await;
            for round in 0..6 {
                mixed(&mut src, &mut rng, 150, &mut state).await;
                src.flush().await;
                tokio::time::sleep(Duration::from_millis(200 + round * 100)).await;
            }
            src.heartbeat().await;
            src.flush().await;
            src
        })
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(std::process::id() as u64);
    let mut peak_rss = 0;
    for k in 0..kills {
        let mut apply = fx.spawn_apply(&["--no-metrics"]);
        let life = Duration::from_millis(rng.random_range(150..5000));
        let until = Instant::now() + life;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(25)).await;
            if let Some(r) = peak_rss_kib(apply.id()) {
                peak_rss = peak_rss.max(r);
            }
        }
        kill9(&mut apply);
        let ck = fx.checkpoint().await;
        eprintln!(
            "kill {k:2} after {life:?}: checkpoint {:?}",
            ck.as_ref().map(|c| (c.0, c.1.clone()))
        );
    }
    let src = producer.await.unwrap();
    eprintln!(
        "workload and {kills} kills took {:?}; peak RSS of apply {} MiB",
        started.elapsed(),
        peak_rss / 1024
    );
    let t = Instant::now();
    let mut apply = fx.spawn_apply(&["--no-metrics", "--until-caught-up"]);
    loop {
        if let Some(r) = peak_rss_kib(apply.id()) {
            peak_rss = peak_rss.max(r);
        }
        if let Some(status) = apply.try_wait().unwrap() {
            assert!(status.success(), "final apply failed");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "final apply took {:?}; peak RSS {} MiB",
        t.elapsed(),
        peak_rss / 1024
    );
    fx.assert_same(TABLES).await;
    let (off, gtid, _, err) = fx.checkpoint().await.unwrap();
    assert_eq!(off, fx.high_watermark(), "checkpoint = end of topic");
    assert_eq!(gtid, src.position.to_string());
    assert_eq!(err, None);
    let items: Option<i64> = fx
        .replica()
        .await
        .query_first("SELECT COUNT(*) FROM items")
        .await
        .unwrap();
    assert!(
        items.unwrap() as usize >= big,
        "the big transaction is there"
    );
    assert!(
        peak_rss < 128 * 1024,
        "peak RSS {} KiB above 128 MiB",
        peak_rss
    );
    fx.drop_databases().await;
}

/// Issue 15 item 3: apply runs a schema change on a connection of its own, then commits the
/// checkpoint past it, so a crash between the two runs it again on restart. Here apply is
/// killed with SIGKILL at exactly that instant, for each kind of schema change the workload
/// generator emits and for the renames (which fail when run twice: 1146 for a table, 1054 for a
/// column): the test holds the checkpoint row locked, waits until apply has run the schema
/// change and is blocked committing the checkpoint, kills it, releases the row, and starts apply
/// again. Every restart must get past the schema change it finds already done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_each_schema_change_and_its_checkpoint_then_resume() {
    let (fx, mut src) = Fixture::caught_up_with_one_table("ddlkill").await;
    let steps = SCHEMA_CHANGES;
    let mut apply = fx.spawn_apply(&["--no-metrics"]);
    for ddl in steps {
        // Apply is caught up: the checkpoint is the end of the topic.
        let end = fx
            .wait_caught_up(
                "apply to reach the end of the topic",
                Duration::from_secs(60),
            )
            .await;
        let before = replica_columns(&fx).await;
        // Hold the checkpoint row: apply's commit past the schema change waits for it.
        let mut locker = fx.replica_admin.conn().await;
        locker.query_drop("START TRANSACTION").await.unwrap();
        let held: Option<i64> = locker
            .exec_first(
                "SELECT next_offset FROM continuum.checkpoint WHERE source_topic = ? FOR UPDATE",
                (&fx.topic,),
            )
            .await
            .unwrap();
        assert_eq!(held, Some(end));
        let mine: u64 = locker
            .query_first(
                "SELECT trx_id FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = CONNECTION_ID()",
            )
            .await
            .unwrap()
            .expect("the locker's transaction");
        src.ddl(ddl).await;
        src.flush().await;
        wait_for(&format!("apply to wait on the checkpoint after `{ddl}`"), Duration::from_secs(60), || async {
            let mut w = fx.replica_admin.conn().await;
            let n: Option<i64> = w
                .exec_first(
                    "SELECT COUNT(*) FROM information_schema.innodb_lock_waits WHERE blocking_trx_id = ?",
                    (mine,),
                )
                .await
                .unwrap();
            (n == Some(1)).then_some(())
        })
        .await;
        assert_ne!(
            replica_columns(&fx).await,
            before,
            "`{ddl}` has run on the replica before the checkpoint past it"
        );
        // The process dies, and so does the statement it had sent: a crash an instant earlier
        // would not have sent it. Killing the blocked connection rolls its transaction back.
        let waiter: u64 = locker
            .exec_first(
                "SELECT r.trx_mysql_thread_id FROM information_schema.innodb_lock_waits w \
                 JOIN information_schema.innodb_trx r ON r.trx_id = w.requesting_trx_id \
                 WHERE w.blocking_trx_id = ?",
                (mine,),
            )
            .await
            .unwrap()
            .expect("apply's blocked connection");
        kill9(&mut apply);
        locker
            .query_drop(format!("KILL CONNECTION {waiter}"))
            .await
            .unwrap();
        locker.query_drop("ROLLBACK").await.unwrap();
        assert_eq!(
            fx.checkpoint().await.map(|c| c.0),
            Some(end),
            "the checkpoint is still before `{ddl}`"
        );
        apply = fx.spawn_apply(&["--no-metrics"]);
    }
    fx.wait_caught_up(
        "apply to pass the last schema change",
        Duration::from_secs(60),
    )
    .await;
    assert!(
        apply.try_wait().unwrap().is_none(),
        "apply is still running, not stopped at a schema change it ran before"
    );
    kill9(&mut apply);
    let (_, _, _, err) = fx.checkpoint().await.unwrap();
    assert_eq!(err, None);
    let show = |mut c: mysql_async::Conn| async move {
        let t: (String, String) = c
            .query_first("SHOW CREATE TABLE t2")
            .await
            .unwrap()
            .unwrap();
        t.1
    };
    assert_eq!(
        show(fx.replica().await).await,
        show(fx.source_conn().await).await,
        "t2 has the same definition at both sites"
    );
    fx.drop_databases().await;
}

/// Every column of the fixture's replica database: (table, column, type), in order.
async fn replica_columns(fx: &Fixture) -> Vec<(String, String, String)> {
    let mut c = fx.replica().await;
    c.exec(
        "SELECT table_name, column_name, column_type FROM information_schema.columns \
         WHERE table_schema = ? ORDER BY table_name, ordinal_position",
        (&fx.db,),
    )
    .await
    .unwrap()
}
