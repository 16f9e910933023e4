//! `continuum-consumer orphans` against the real servers: the SF MariaDB is the old primary,
//! the EU MariaDB the replica whose checkpoint says what it applied. Each test writes its own
//! database on SF after a checkpoint of its own topic, while other suites may write to SF at the
//! same time: only what the producer's include/exclude rules capture may be listed.

mod support;

use std::process::Command;

use mysql_async::prelude::*;
use serde_json::Value as Json;
use support::*;

use continuum_consumer::checkpoint::{Checkpoint, SCHEMA_SQL};
use continuum_tests::check::query_one;

fn orphans(config: &std::path::Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut c = Command::new(BIN);
    c.arg("--config").arg(config).arg("orphans").args(extra);
    for (k, _) in std::env::vars() {
        if k.starts_with("CONTINUUM_") {
            c.env_remove(k);
        }
    }
    let out = c.output().expect("run continuum-consumer orphans");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Only what the pipeline would have replicated is an orphan, and no statement shown holds a
/// credential:
///
/// - rows of a captured table, and DDL on one, are listed; a `CONNECTION` string's password in
///   that DDL is redacted;
/// - rows of an excluded table, `CREATE USER ... IDENTIFIED BY '<password>'`, `GRANT`,
///   `DROP USER`, what a `skip_replication` session wrote, and every other database's writes
///   (other suites' too) are not;
/// - a transaction with `SAVEPOINT` and `ROLLBACK TO` (written to the binlog when a
///   non-transactional table changed after the savepoint) is one transaction, with every row
///   after the `ROLLBACK TO`, as the producer frames it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_the_pipeline_replicates_is_listed_and_credentials_never_show() {
    // SF is the old primary, this site; EU's database the replica. `orphans` runs with none of
    // the caller's CONTINUUM_* settings: the file holds the passwords.
    let mut site = TestSite::new(&stack().sf, "orph");
    let (db, topic) = (site.db.clone(), site.topic.clone());
    site.self_contained()
        .with_database_of(&stack().eu)
        .set("producer.include", vec![format!("{db}.*")])
        .set("producer.exclude", vec![format!("{db}.excl_*")])
        .set("log.filter", "warn");
    let user = format!("u_{db}");
    let password = format!("S3cret-{db}");
    let link_password = format!("Link-{db}");
    let mut s = site
        .create_database(
            &stack().sf,
            &[
                "CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB",
                "CREATE TABLE excl_t (id INT PRIMARY KEY) ENGINE=InnoDB",
                "CREATE TABLE excl_m (id INT PRIMARY KEY) ENGINE=MyISAM",
            ],
        )
        .await;

    // EU applied everything of SF up to now.
    let now: String = query_one(&mut s, "SELECT @@gtid_binlog_pos").await;
    let mut cp = Checkpoint::new(&topic, 0, "eu", 0);
    cp.gtid_position = now.parse().unwrap();
    let mut r = stack().eu.admin_conn().await;
    r.query_drop("SET SESSION sql_log_bin = 0").await.unwrap();
    execute(&mut r, SCHEMA_SQL).await;
    r.query_drop(cp.upsert_sql()).await.unwrap();

    // What SF commits after that.
    execute(
        &mut s,
        &[
            "INSERT INTO t VALUES (1)",
            "INSERT INTO excl_t VALUES (1)",
            &format!("CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'"),
            &format!("GRANT SELECT ON `{db}`.* TO '{user}'@'localhost'"),
            "BEGIN",
            "INSERT INTO t VALUES (2)",
            "SAVEPOINT s",
            "INSERT INTO excl_m VALUES (1)",
            "ROLLBACK TO SAVEPOINT s",
            "INSERT INTO t VALUES (3)",
            "COMMIT",
            &format!(
                "CREATE TABLE fed (id INT PRIMARY KEY) CONNECTION='mysql://app:{link_password}@h/d/t'"
            ),
            "ALTER TABLE t ADD COLUMN v INT",
            &format!("DROP USER '{user}'@'localhost'"),
        ],
    )
    .await;
    let mut applier = stack().sf.admin_conn().await;
    execute(
        &mut applier,
        &[
            "SET SESSION skip_replication = 1",
            &format!("INSERT INTO `{db}`.t VALUES (100, 100)"),
        ],
    )
    .await;

    let path = site.write();
    let (code, json, err) = orphans(&path, &["--json"]);
    let (_, text, text_err) = orphans(&path, &[]);
    for out in [&json, &err, &text, &text_err] {
        for secret in [&password, &link_password] {
            assert!(
                !out.contains(secret.as_str()),
                "a credential is shown:\n{out}"
            );
        }
    }
    assert_eq!(code, Some(1), "orphans were found: {err}");
    let report: Json = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}\n{err}"));
    let listed: Vec<String> = report["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let tables: Vec<String> = o["tables"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(t, n)| format!("{t}={n}"))
                .collect();
            let ddl: Vec<String> = o["ddl"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap().to_owned())
                .collect();
            format!("rows [{}] ddl [{}]", tables.join(", "), ddl.join(" | "))
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            format!("rows [{db}.t=1] ddl []"),
            format!("rows [{db}.t=2] ddl []"),
            "rows [] ddl [CREATE TABLE fed (id INT PRIMARY KEY) CONNECTION='mysql://app:<redacted>@h/d/t']"
                .to_string(),
            "rows [] ddl [ALTER TABLE t ADD COLUMN v INT]".to_string(),
        ],
        "the orphans of {db}, nothing else:\n{text}"
    );

    let _ = r
        .exec_drop(
            "DELETE FROM continuum.checkpoint WHERE source_topic = ?",
            (&topic,),
        )
        .await;
    let _ = s.query_drop(format!("DROP DATABASE `{db}`")).await;
    site.remove_dir();
}
