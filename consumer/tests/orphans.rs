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

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: `. .stack/env` first"))
}

/// A site config for SF (the old primary, this site) with EU's database as the replica, and
/// the producer rules `include` / `exclude`.
fn config(topic: &str, include: &str, exclude: &str) -> String {
    let tls = continuum_tests::stack_tls_toml();
    let inline_tls = tls.replace("tls = ", ", tls = ");
    format!(
        r#"site = "sf"
[database]
host = "{sfh}"
port = {sfp}
user = "{sfu}"
password = "{sfpw}"
{tls}
[sites.sf]
brokers = "{sfb}"
topic = "{topic}"
registry = {{ url = "{sfr}" }}
[sites.eu]
brokers = "{eub}"
registry = {{ url = "{eur}" }}
database = {{ host = "{euh}", port = {eup}, user = "{euu}", password = "{eupw}"{inline_tls} }}
[producer]
include = [{include}]
exclude = [{exclude}]
[log]
filter = "warn"
"#,
        sfh = env("SF_DB_HOST"),
        sfp = env("SF_DB_PORT"),
        sfu = env("SF_DB_USER"),
        sfpw = env("SF_DB_PASSWORD"),
        sfb = env("SF_BROKERS"),
        sfr = env("SF_REGISTRY"),
        eub = env("EU_BROKERS"),
        eur = env("EU_REGISTRY"),
        euh = env("EU_DB_HOST"),
        eup = env("EU_DB_PORT"),
        euu = env("EU_DB_USER"),
        eupw = env("EU_DB_PASSWORD"),
    )
}

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
    let name = unique("orph");
    let db = format!("ct_{name}");
    let topic = format!("ct.{name}");
    let user = format!("u_{name}");
    let password = format!("S3cret-{name}");
    let link_password = format!("Link-{name}");
    let admin = |site: &str| Db {
        host: env(&format!("{site}_DB_HOST")),
        port: env(&format!("{site}_DB_PORT")).parse().unwrap(),
        user: env(&format!("{site}_DB_ADMIN_USER")),
        password: std::env::var(format!("{site}_DB_ADMIN_PASSWORD")).unwrap_or_default(),
    };
    let sf = admin("SF");
    let eu = admin("EU");
    let mut s = sf.conn().await;
    s.query_drop(format!("CREATE DATABASE `{db}`"))
        .await
        .unwrap();
    s.query_drop(format!("USE `{db}`")).await.unwrap();
    s.query_drop("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .unwrap();
    s.query_drop("CREATE TABLE excl_t (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .unwrap();
    s.query_drop("CREATE TABLE excl_m (id INT PRIMARY KEY) ENGINE=MyISAM")
        .await
        .unwrap();

    // EU applied everything of SF up to now.
    let now: String = s
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    let mut cp = Checkpoint::new(&topic, 0, "eu", 0);
    cp.gtid_position = now.parse().unwrap();
    let mut r = eu.conn().await;
    r.query_drop("SET SESSION sql_log_bin = 0").await.unwrap();
    for sql in SCHEMA_SQL {
        r.query_drop(*sql).await.unwrap();
    }
    r.query_drop(cp.upsert_sql()).await.unwrap();

    // What SF commits after that.
    s.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    s.query_drop("INSERT INTO excl_t VALUES (1)").await.unwrap();
    s.query_drop(format!(
        "CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'"
    ))
    .await
    .unwrap();
    s.query_drop(format!("GRANT SELECT ON `{db}`.* TO '{user}'@'localhost'"))
        .await
        .unwrap();
    s.query_drop("BEGIN").await.unwrap();
    s.query_drop("INSERT INTO t VALUES (2)").await.unwrap();
    s.query_drop("SAVEPOINT s").await.unwrap();
    s.query_drop("INSERT INTO excl_m VALUES (1)").await.unwrap();
    s.query_drop("ROLLBACK TO SAVEPOINT s").await.unwrap();
    s.query_drop("INSERT INTO t VALUES (3)").await.unwrap();
    s.query_drop("COMMIT").await.unwrap();
    s.query_drop(format!(
        "CREATE TABLE fed (id INT PRIMARY KEY) CONNECTION='mysql://app:{link_password}@h/d/t'"
    ))
    .await
    .unwrap();
    s.query_drop("ALTER TABLE t ADD COLUMN v INT")
        .await
        .unwrap();
    s.query_drop(format!("DROP USER '{user}'@'localhost'"))
        .await
        .unwrap();
    let mut applier = sf.conn().await;
    applier
        .query_drop("SET SESSION skip_replication = 1")
        .await
        .unwrap();
    applier
        .query_drop(format!("INSERT INTO `{db}`.t VALUES (100, 100)"))
        .await
        .unwrap();

    let dir = std::env::temp_dir().join("continuum-consumer-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        config(&topic, &format!("\"{db}.*\""), &format!("\"{db}.excl_*\"")),
    )
    .unwrap();
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
    let _ = std::fs::remove_file(&path);
}
