//! `verify` against the real local stack: identical tables are reported identical; a difference
//! planted by hand (an updated row, a deleted row, an extra row, NULL against empty, a table on
//! one side only) is found and named, with exit status 1.

use std::process::Command;

use continuum_consumer::checkpoint::{self, Checkpoint};
use continuum_schemas::GtidPosition;
use continuum_tests::site::execute;
use continuum_tests::{stack, Site, TestSite};
use mysql_async::prelude::Queryable;

const TABLES: &[&str] = &[
    "CREATE TABLE t1 (id INT PRIMARY KEY, v VARCHAR(40), d DECIMAL(12,3), dt DATETIME(6), f DOUBLE, b BLOB)",
    "CREATE TABLE t2 (a INT, b VARCHAR(10), v VARCHAR(10), PRIMARY KEY (a, b))",
];

/// Creates the test's database with [`TABLES`] on `on`, and fills them alike on either site.
async fn fill(site: &TestSite, on: &Site) -> mysql_async::Conn {
    let mut conn = site.create_database(on, TABLES).await;
    for chunk in 0..5 {
        let rows: Vec<String> = (chunk * 500..(chunk + 1) * 500)
            .map(|i| {
                format!(
                    "({i}, 'v{i} ü', {i}.125, '2024-01-02 03:04:05.{:06}', {i}.5e-3, X'{:04x}')",
                    i, i
                )
            })
            .collect();
        conn.query_drop(format!("INSERT INTO t1 VALUES {}", rows.join(",")))
            .await
            .unwrap();
    }
    conn.query_drop("INSERT INTO t2 VALUES (1, 'x', ''), (1, 'y', NULL), (2, 'x', 'z')")
        .await
        .unwrap();
    conn
}

fn run_verify(cfg: &std::path::Path, db: &str, json: bool) -> (i32, String) {
    let s = stack();
    let out = Command::new(env!("CARGO_BIN_EXE_continuum-consumer"))
        .arg("--config")
        .arg(cfg)
        .args(["verify", "--databases", db, "--chunk-rows", "1000"])
        .args(json.then_some("--json"))
        .env("CONTINUUM_DB_PASSWORD", &s.eu.db_password)
        .env("CONTINUUM_SF_DB_PASSWORD", &s.sf.db_password)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_identical_then_names_planted_differences() {
    let s = stack();
    // EU's config, with SF's database; the passwords come from the environment.
    let mut site = TestSite::new(&s.eu, "verify");
    site.with_database_of(&s.sf);
    let cfg = site.write();
    let (db, topic) = (site.db.clone(), site.topic.clone());
    let mut sf = fill(&site, &s.sf).await;
    let mut eu = fill(&site, &s.eu).await;
    // The replica claims to be past any source position, so verify needs no pipeline here.
    checkpoint::ensure_schema(&mut eu, "eu").await.unwrap();
    let mut cp = Checkpoint::new(&topic, 0, "eu", 0);
    cp.gtid_position = "1-1-999999999999".parse::<GtidPosition>().unwrap();
    eu.query_drop(cp.upsert_sql()).await.unwrap();

    let (code, out) = run_verify(&cfg, &db, false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdict: IDENTICAL"), "{out}");
    assert!(
        out.contains(&format!("{db}.t1"))
            && out.contains("rows 2500/2500")
            && out.contains("chunks 3/3 equal"),
        "{out}"
    );

    // Both connections are in the test's database.
    execute(
        &mut eu,
        &[
            "UPDATE t1 SET v = 'tampered' WHERE id = 1500",
            "DELETE FROM t1 WHERE id = 10",
            "INSERT INTO t1 (id, v) VALUES (99999, 'extra')",
            "UPDATE t2 SET v = NULL WHERE a = 1 AND b = 'x'",
            "CREATE TABLE eu_only (id INT PRIMARY KEY)",
        ],
    )
    .await;
    execute(&mut sf, &["CREATE TABLE sf_only (id INT PRIMARY KEY)"]).await;

    let (code, out) = run_verify(&cfg, &db, false);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("verdict: DIFFERENT"), "{out}");
    let (code, json) = run_verify(&cfg, &db, true);
    assert_eq!(code, 1, "{json}");
    let r: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(r["identical"], false);
    assert_eq!(
        r["source_only"],
        serde_json::json!([format!("{db}.sf_only")])
    );
    assert_eq!(
        r["replica_only"],
        serde_json::json!([format!("{db}.eu_only")])
    );
    let table = |name: &str| {
        r["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == format!("{db}.{name}"))
            .unwrap()
            .clone()
    };
    let t1 = table("t1");
    let diffs = t1["differences"].as_array().unwrap();
    let all = |field: &str| {
        diffs
            .iter()
            .flat_map(|d| {
                d[field]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(all("changed"), vec!["1500"], "{json}");
    assert_eq!(all("missing"), vec!["10"], "{json}");
    assert_eq!(all("extra"), vec!["99999"], "{json}");
    let t2 = table("t2");
    let d2 = &t2["differences"].as_array().unwrap()[0];
    assert_eq!(
        d2["changed"],
        serde_json::json!(["1, x"]),
        "NULL against '' is a difference: {json}"
    );
    site.remove_dir();
}
