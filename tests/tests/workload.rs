//! The workload generator against the real SF MariaDB of the local stack (`make up`,
//! `. .stack/env`):
//!
//! - a short seeded run logs every commit with its GTID, in commit order (strictly increasing
//!   sequence numbers in domain 1, within `@@gtid_binlog_pos`), with row counts that add up to
//!   the summary; every table gets rows; the bank total holds; every kind of DDL happens;
//! - the same seed on fresh databases writes the same rows (same `CHECKSUM TABLE`), another
//!   seed different ones;
//! - setup is idempotent (a second setup writes nothing to the binlog) and a second run
//!   continues on the first one's databases;
//! - several workers, with lock wait timeouts forced by a blocker, retry and keep the total;
//! - a killed connection is re-established and the run goes on, nothing half-committed;
//! - the binary's `--json` summary and its exit status.
//!
//! Each test writes its own databases (`unique_name`), so they run in parallel.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use continuum_tests::check::{query_one, run_ok};
use continuum_tests::workload::{
    checksum_tables, expected_total, invariant_sum, read_log, run, run_until, setup, Config,
    LogEntry, Login, Summary,
};
use continuum_tests::{stack, unique_name};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

const MAIN_TABLES: [&str; 6] = [
    "all_types",
    "customers",
    "orders",
    "order_lines",
    "users",
    "accounts",
];

/// A config for the stack's SF MariaDB, on fresh databases `<unique prefix>_N`.
fn config(tag: &str) -> Config {
    let sf = &stack().sf;
    Config {
        login: Login {
            host: sf.db_host.clone(),
            port: sf.db_port,
            user: sf.db_admin_user.clone(),
            password: sf.db_admin_password.clone(),
        },
        dsn: None,
        prefix: unique_name(tag),
        log: None,
        json: false,
        ..Config::default()
    }
}

fn log_path(cfg: &Config) -> PathBuf {
    std::env::temp_dir().join(format!("{}.jsonl", cfg.prefix))
}

async fn admin() -> Conn {
    stack().sf.admin_conn().await
}

/// Sets `cfg`'s databases up, with the run's log at [`log_path`]; returns an admin connection
/// and the binlog's sequence number (domain 1) before the run.
async fn set_up_logged(cfg: &mut Config) -> (Conn, u64) {
    cfg.log = Some(log_path(cfg));
    let mut c = admin().await;
    setup(&mut c, cfg).await.unwrap();
    let before = binlog_seq(&mut c).await;
    (c, before)
}

/// The sequence number of domain 1 in `@@gtid_binlog_pos` (0 if none yet).
async fn binlog_seq(c: &mut Conn) -> u64 {
    let pos: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap_or_default();
    pos.split(',')
        .filter_map(|g| {
            let p: Vec<&str> = g.trim().split('-').collect();
            (p.len() == 3 && p[0] == "1").then(|| p[2].parse::<u64>().unwrap())
        })
        .next()
        .unwrap_or(0)
}

/// Every line has a GTID of domain 1, server 1; sequence numbers strictly increase in line
/// order (one worker) and lie in (`before`, `after`].
fn assert_commit_order(log: &[LogEntry], before: u64, after: u64) {
    let mut prev = before;
    for e in log {
        let (d, s, n) = e
            .gtid_parts()
            .unwrap_or_else(|| panic!("bad GTID in {e:?}"));
        assert_eq!(
            (d, s),
            (1, 1),
            "GTID {} is not SF's (domain 1, server 1)",
            e.gtid
        );
        assert!(
            n > prev,
            "GTID {} (line {}) does not follow {prev}: the log is not in commit order",
            e.gtid,
            e.n
        );
        prev = n;
    }
    assert!(
        prev <= after,
        "last logged GTID seq {prev} is past @@gtid_binlog_pos seq {after}"
    );
}

/// Each main table of each of `cfg`'s databases holds as many rows as the run that ended with
/// `s` counted (`when`: which run, for the message).
async fn assert_counts_match(c: &mut Conn, cfg: &Config, s: &Summary, when: &str) {
    for db in cfg.database_names() {
        for t in MAIN_TABLES {
            let rows: u64 = query_one(c, &format!("SELECT COUNT(*) FROM `{db}`.`{t}`")).await;
            assert_eq!(
                Some(rows),
                s.counts
                    .tables
                    .get(&format!("{db}.{t}"))
                    .and_then(|x| x.rows),
                "{db}.{t}: {when}, COUNT(*) and the generator's count"
            );
        }
    }
}

async fn drop_databases(cfg: &Config) {
    let mut c = admin().await;
    for db in cfg.database_names() {
        c.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
            .await
            .unwrap();
    }
    let _ = std::fs::remove_file(log_path(cfg));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_run_logs_every_commit_in_gtid_order_and_keeps_the_invariants() {
    let mut cfg = config("wl_run");
    cfg.databases = 2;
    cfg.seed = 11;
    cfg.transactions = Some(240);
    cfg.large_every = 60;
    cfg.large_rows = 2500;
    cfg.ddl_every = 12;
    cfg.log = Some(log_path(&cfg));
    let mut c = admin().await;
    let before = binlog_seq(&mut c).await;
    let s = run(&cfg).await.expect("workload run");
    let after = binlog_seq(&mut c).await;

    let log = read_log(&log_path(&cfg)).unwrap();
    assert_eq!(
        log.len() as u64,
        s.counts.transactions,
        "one log line per committed transaction"
    );
    assert_eq!(
        s.counts.transactions + s.counts.empty,
        240,
        "every planned transaction committed"
    );
    assert_commit_order(&log, before, after);
    assert_eq!(
        log.last().map(|e| e.gtid.clone()),
        s.gtids.last_gtid,
        "the summary's last GTID"
    );
    assert_eq!(
        log.first().map(|e| e.gtid.clone()),
        s.gtids.first_gtid,
        "the summary's first GTID"
    );
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.n, i as u64, "lines are numbered in order");
        assert_eq!(
            e.rows,
            e.tables.values().sum::<u64>(),
            "rows is the sum of the per-table counts in {e:?}"
        );
        assert!(e.commit_us > 0 && e.committed_at.ends_with('Z'));
        if e.kind != "ddl" {
            assert!(e.rows > 0, "a logged DML transaction changed rows: {e:?}");
        }
    }
    for w in log.windows(2) {
        assert!(
            w[0].commit_us <= w[1].commit_us,
            "commit times never go back"
        );
    }
    assert_eq!(s.counts.rows, log.iter().map(|e| e.rows).sum::<u64>());
    let per_table: u64 = s
        .counts
        .tables
        .values()
        .map(|t| t.inserted + t.updated + t.deleted)
        .sum();
    assert_eq!(
        per_table, s.counts.rows,
        "per-table counts add up to the row changes"
    );

    // The mix: every kind of transaction happened, large ones with --large-rows rows.
    for kind in [
        "small",
        "large",
        "transfer",
        "swap",
        "pk_update",
        "account",
        "ddl",
    ] {
        assert!(
            s.counts.kinds.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} transaction in {:?}",
            s.counts.kinds
        );
    }
    for e in log.iter().filter(|e| e.kind == "large") {
        assert!(e.rows >= 2500, "a large transaction of {} rows", e.rows);
    }
    assert!(
        log.iter().any(|e| e
            .tables
            .keys()
            .map(|t| t.split('.').next().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1),
        "some transaction spans both databases"
    );

    // DDL in the middle of the stream, of every kind, each logged with its statement.
    let ddl: Vec<&str> = log
        .iter()
        .filter(|e| e.kind == "ddl")
        .map(|e| e.ddl.as_deref().expect("a DDL line carries its statement"))
        .collect();
    assert_eq!(ddl.len() as u64, s.counts.ddl);
    for what in [
        "ADD COLUMN",
        "MODIFY COLUMN",
        "DROP COLUMN",
        "CREATE TABLE",
        "RENAME TABLE",
        "DROP TABLE",
    ] {
        assert!(
            ddl.iter().any(|d| d.contains(what)),
            "no {what} among {ddl:#?}"
        );
    }
    let first_ddl = log.iter().position(|e| e.kind == "ddl").unwrap();
    assert!(
        first_ddl > 0 && first_ddl < log.len() - 1,
        "DDL sits between DML"
    );

    // The bank total holds; every table has rows; the checksums see what the model says.
    let total = invariant_sum(&mut c, &cfg.prefix, cfg.databases)
        .await
        .unwrap();
    assert_eq!(total, expected_total(2));
    assert!(s.bank.invariant_ok);
    for db in cfg.database_names() {
        let sums = checksum_tables(&mut c, &db).await.unwrap();
        for t in MAIN_TABLES {
            let (rows, _) = sums
                .get(t)
                .unwrap_or_else(|| panic!("{db}.{t} missing from {sums:?}"));
            assert!(*rows > 0, "{db}.{t} has no rows");
            assert_eq!(
                Some(*rows),
                s.counts
                    .tables
                    .get(&format!("{db}.{t}"))
                    .and_then(|x| x.rows),
                "{db}.{t}: COUNT(*) and the generator's count"
            );
        }
        assert!(
            sums.keys().any(|t| t.starts_with("ddl_")),
            "{db} has a ddl_* table"
        );
    }
    drop_databases(&cfg).await;
}

async fn checksums(cfg: &Config) -> Vec<BTreeMap<String, (u64, u64)>> {
    let mut c = admin().await;
    let mut out = Vec::new();
    for db in cfg.database_names() {
        out.push(checksum_tables(&mut c, &db).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_on_fresh_databases_writes_the_same_rows() {
    let mk = |seed| {
        let mut cfg = config("wl_seed");
        cfg.seed = seed;
        cfg.transactions = Some(150);
        cfg.large_every = 50;
        cfg.large_rows = 1500;
        cfg.ddl_every = 10;
        cfg
    };
    let (a, b, other) = (mk(23), mk(23), mk(24));
    let sa = run(&a).await.unwrap();
    let sb = run(&b).await.unwrap();
    let so = run(&other).await.unwrap();
    assert!(sa.bank.invariant_ok && sb.bank.invariant_ok && so.bank.invariant_ok);
    let (ca, cb, co) = (
        checksums(&a).await,
        checksums(&b).await,
        checksums(&other).await,
    );
    assert_eq!(
        ca, cb,
        "same seed, same tables, same rows, same CHECKSUM TABLE"
    );
    assert_ne!(ca, co, "another seed writes other rows");
    assert_eq!(
        (
            sa.counts.transactions,
            sa.counts.rows,
            sa.counts.ddl,
            &sa.counts.kinds
        ),
        (
            sb.counts.transactions,
            sb.counts.rows,
            sb.counts.ddl,
            &sb.counts.kinds
        )
    );
    let strip = |s: &Summary, prefix: &str| -> BTreeMap<String, _> {
        s.counts
            .tables
            .iter()
            .map(|(k, v)| (k.strip_prefix(prefix).unwrap().to_owned(), v.clone()))
            .collect()
    };
    assert_eq!(
        strip(&sa, &a.prefix),
        strip(&sb, &b.prefix),
        "same per-table counts"
    );
    for cfg in [&a, &b, &other] {
        drop_databases(cfg).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_is_idempotent_and_a_second_run_continues_where_the_first_stopped() {
    let mut cfg = config("wl_again");
    cfg.transactions = Some(100);
    cfg.large_every = 40;
    cfg.large_rows = 1000;
    cfg.ddl_every = 9;
    let mut c = admin().await;
    setup(&mut c, &cfg).await.unwrap();
    // Other tests write too: look for statements on our databases after this point.
    let (file, pos) = {
        let row: Option<mysql_async::Row> = c.query_first("SHOW MASTER STATUS").await.unwrap();
        let row = row.unwrap();
        (
            row.get::<String, _>(0).unwrap(),
            row.get::<u64, _>(1).unwrap(),
        )
    };
    setup(&mut c, &cfg).await.unwrap();
    let events: Vec<mysql_async::Row> = c
        .query(format!("SHOW BINLOG EVENTS IN '{file}' FROM {pos}"))
        .await
        .unwrap();
    let ours = events
        .iter()
        .filter(|r| {
            r.get::<String, _>(5)
                .unwrap_or_default()
                .contains(&cfg.prefix)
        })
        .count();
    assert_eq!(ours, 0, "a second setup wrote to the binlog");

    let s1 = run(&cfg).await.unwrap();
    cfg.seed = 99;
    let s2 = run(&cfg).await.expect("a second run on the same databases");
    assert!(s1.bank.invariant_ok && s2.bank.invariant_ok);
    assert_counts_match(&mut c, &cfg, &s2, "after the second run").await;
    // Still 100 accounts' worth of money per database, whatever opened or closed.
    assert_eq!(
        invariant_sum(&mut c, &cfg.prefix, cfg.databases)
            .await
            .unwrap(),
        expected_total(3)
    );
    drop_databases(&cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_workers_retry_lock_wait_timeouts_and_keep_the_total() {
    let mut cfg = config("wl_workers");
    cfg.workers = 3;
    cfg.databases = 2;
    cfg.duration = Some(Duration::from_secs(5));
    cfg.large_every = 0;
    cfg.lock_wait_timeout = 1;
    let (mut c, before) = set_up_logged(&mut cfg).await;
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let cfg = cfg.clone();
        let stop = stop.clone();
        tokio::spawn(async move { run_until(&cfg, stop).await })
    };
    // A blocker holds every account's row lock for 2.5 s: transfers time out (1 s) and retry.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut blocker = admin().await;
    blocker.query_drop("START TRANSACTION").await.unwrap();
    for db in cfg.database_names() {
        let _: Vec<(i64,)> = blocker
            .query(format!("SELECT id FROM `{db}`.accounts FOR UPDATE"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    blocker.query_drop("COMMIT").await.unwrap();
    let s = handle
        .await
        .unwrap()
        .expect("workload with several workers");
    let after = binlog_seq(&mut c).await;
    assert!(!stop.load(Ordering::Relaxed));
    assert!(
        s.counts.retries > 0,
        "lock wait timeouts were retried: {}",
        s.human()
    );
    assert!(s.bank.invariant_ok, "{}", s.human());
    assert_eq!(
        invariant_sum(&mut c, &cfg.prefix, 2).await.unwrap(),
        expected_total(2)
    );
    let mut log = read_log(&log_path(&cfg)).unwrap();
    assert_eq!(log.len() as u64, s.counts.transactions);
    assert!(
        log.iter().any(|e| e.attempts > 1),
        "some logged transaction needed more than one attempt"
    );
    let workers: std::collections::BTreeSet<usize> = log.iter().map(|e| e.worker).collect();
    assert_eq!(workers.len(), 3, "every worker committed");
    // Several workers log in about commit order; sorted by GTID, the sequence is strict.
    log.sort_by_key(|e| e.gtid_parts().unwrap().2);
    assert_commit_order(&log, before, after);
    drop_databases(&cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_is_re_established_and_nothing_is_half_committed() {
    let mut cfg = config("wl_kill");
    cfg.databases = 2;
    cfg.transactions = Some(400);
    cfg.large_every = 25;
    cfg.large_rows = 1000;
    let (mut c, before) = set_up_logged(&mut cfg).await;
    let handle = {
        let cfg = cfg.clone();
        tokio::spawn(async move { run(&cfg).await })
    };
    // Once the run is under way (lines in its log), find the worker's session (the one
    // running a statement on our databases) and kill it.
    continuum_tests::wait_for(
        "the workload's first commits",
        Duration::from_secs(30),
        || async {
            (std::fs::read_to_string(log_path(&cfg))
                .unwrap_or_default()
                .lines()
                .count()
                >= 20)
                .then_some(())
        },
    )
    .await;
    let me: u64 = query_one(&mut c, "SELECT CONNECTION_ID()").await;
    let mut killed = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while killed == 0 && std::time::Instant::now() < deadline {
        let ids: Vec<u64> = c
            .exec(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> ? AND INFO LIKE ?",
                (me, format!("%{}%", cfg.prefix)),
            )
            .await
            .unwrap();
        for id in ids {
            if c.query_drop(format!("KILL CONNECTION {id}")).await.is_ok() {
                killed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(killed > 0, "found the workload's session to kill");
    let s = handle
        .await
        .unwrap()
        .expect("the run survives a killed connection");
    let after = binlog_seq(&mut c).await;
    assert!(s.counts.reconnects >= 1, "{}", s.human());
    assert!(s.bank.invariant_ok, "{}", s.human());
    assert_eq!(
        invariant_sum(&mut c, &cfg.prefix, 2).await.unwrap(),
        expected_total(2)
    );
    let log = read_log(&log_path(&cfg)).unwrap();
    assert_commit_order(&log, before, after);
    // The generator reloaded its state from the database: its counts match it.
    assert_counts_match(&mut c, &cfg, &s, "after a reconnect").await;
    drop_databases(&cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_a_json_summary_and_fails_on_bad_flags() {
    let cfg = config("wl_bin");
    let sf = &stack().sf;
    let bin = env!("CARGO_BIN_EXE_workload");
    let base: Vec<String> = [
        ("--host", sf.db_host.clone()),
        ("--port", sf.db_port.to_string()),
        ("--user", sf.db_admin_user.clone()),
        ("--password", sf.db_admin_password.clone()),
        ("--prefix", cfg.prefix.clone()),
        ("--databases", "3".to_owned()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect();
    let summary = |args: &[&str]| {
        let out = run_ok(
            Command::new(bin).args(&base).args(args),
            &format!("{args:?}"),
        );
        serde_json::from_slice::<Summary>(&out.stdout).unwrap()
    };
    let s = summary(&["--setup-only", "--json"]);
    assert_eq!(s.counts.transactions, 0);
    assert!(s.bank.invariant_ok);

    let s = summary(&[
        "--transactions",
        "30",
        "--seed",
        "3",
        "--rate",
        "100",
        "--ddl",
        "off",
        "--json",
    ]);
    assert_eq!(s.counts.transactions + s.counts.empty, 30);
    assert_eq!(s.counts.ddl, 0);
    assert!(s.bank.invariant_ok);
    assert!(
        s.throughput.elapsed_s >= 0.25,
        "--rate 100 paces 30 transactions over about 0.3 s, not {}",
        s.throughput.elapsed_s
    );

    // Human output by default.
    let out = run_ok(
        Command::new(bin)
            .args(&base)
            .args(["--transactions", "5", "--ddl=off"]),
        "human output",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bank total 300000.00 (expected 300000.00): ok"),
        "{text}"
    );

    let out = Command::new(bin)
        .args(["--ddl", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap refuses a bad flag value");
    let out = Command::new(bin)
        .args(["--port", "1", "--transactions", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connecting to MariaDB at")
            && String::from_utf8_lossy(&out.stderr).contains(":1:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop_databases(&cfg).await;
}
