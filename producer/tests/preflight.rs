//! Every preflight refusal and the purged-binlog error, against real servers. Some of these
//! change global settings of the SF server or purge its binlogs, so this suite runs on its own
//! (see the Makefile), one test at a time.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use continuum_tests::process::{free_port, Killed};
use mysql_async::prelude::Queryable;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_binlog_settings_are_refused_with_the_setting_named() {
    for (setting, bad, expected) in [
        (
            "binlog_format",
            "STATEMENT",
            "preflight: binlog_format is STATEMENT, expected ROW",
        ),
        (
            "binlog_row_image",
            "MINIMAL",
            "preflight: binlog_row_image is MINIMAL, expected FULL",
        ),
        (
            "binlog_row_metadata",
            "MINIMAL",
            "preflight: binlog_row_metadata is MINIMAL, expected FULL",
        ),
    ] {
        let p = TestPipeline::new("pf_set");
        p.sql(&mut admin().await, &["CREATE DATABASE {db}"]).await;
        let changed = GlobalSetting::set(setting, bad).await;
        let (ok, log) = p.run_to_exit(&[], Duration::from_secs(60));
        drop(changed);
        assert!(!ok, "{setting}={bad} must stop the producer");
        assert!(log.contains(expected), "expected '{expected}' in:\n{log}");
        assert!(
            log.contains("SET GLOBAL"),
            "the message says how to fix it:\n{log}"
        );
        cleanup(&p.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_privileges_are_named() {
    let p = TestPipeline::new("pf_priv");
    let mut c = admin().await;
    let user = format!("np{}", &p.db[p.db.len() - 8..]);
    c.query_drop(format!(
        "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw'"
    ))
    .await
    .unwrap();
    c.query_drop(format!(
        "GRANT SELECT, REPLICATION SLAVE ON *.* TO '{user}'@'127.0.0.1'"
    ))
    .await
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_continuum-producer"))
        .args(["--config", p.config.to_str().unwrap(), "--db-user", &user])
        .env("CONTINUUM_DB_PASSWORD", "pw")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let out = wait_exit(&mut child);
    c.query_drop(format!("DROP USER '{user}'@'127.0.0.1'"))
        .await
        .unwrap();
    assert!(out.contains("missing BINLOG MONITOR"), "{out}");
    assert!(out.contains("REPLICATION MASTER ADMIN"), "{out}");
    assert!(
        !out.contains("missing REPLICATION SLAVE"),
        "granted privileges are not reported: {out}"
    );
    cleanup(&p.dir);
}

fn wait_exit(child: &mut Child) -> String {
    use std::io::Read;
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            let mut s = String::new();
            child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("the producer did not exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_without_a_primary_key_are_listed() {
    let mut p = TestPipeline::new("pf_nopk");
    p.set("producer.tables_without_primary_key", "refuse");
    let mut c = admin().await;
    p.sql(
        &mut c,
        &[
            "CREATE DATABASE {db}",
            "CREATE TABLE {db}.keyed (id INT PRIMARY KEY)",
            "CREATE TABLE {db}.loose (a INT, b INT)",
        ],
    )
    .await;
    let log = p.run_to_failure(&[]);
    assert!(
        log.contains(&format!(
            "tables without a primary key are captured: {}.loose",
            p.db
        )),
        "{log}"
    );
    assert!(!log.contains("keyed"), "{log}");
    // A table without a key left behind would stop every producer that captures everything.
    p.sql(&mut c, &["DROP DATABASE {db}"]).await;
    cleanup(&p.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clashing_server_id_is_refused() {
    let a = TestPipeline::new("pf_sid_a");
    let b = TestPipeline::new("pf_sid_b");
    let mut c = admin().await;
    c.query_drop(format!("CREATE DATABASE {}", a.db))
        .await
        .unwrap();
    c.query_drop(format!("CREATE DATABASE {}", b.db))
        .await
        .unwrap();
    let _running = a.spawn(&[]);
    let s = stack();
    // Wait until A is registered as a replica.
    wait_for(
        "producer A to register as a replica",
        Duration::from_secs(60),
        || async {
            let mut c = admin().await;
            let hosts: Vec<mysql_async::Row> = c.query("SHOW SLAVE HOSTS").await.unwrap();
            hosts
                .iter()
                .any(|r| r.get::<u32, _>("Server_id") == Some(a.server_id))
                .then_some(())
        },
    )
    .await;
    let _ = s;
    let log = b.run_to_failure(&["--server-id", &a.server_id.to_string()]);
    assert!(
        log.contains(&format!(
            "preflight: producer.server_id is {}, already registered by a replica",
            a.server_id
        )),
        "{log}"
    );
    // The source's own id is refused too.
    let log = b.run_to_failure(&["--server-id", "1"]);
    assert!(
        log.contains("a replica id different from the source's own server_id 1"),
        "{log}"
    );
    cleanup(&a.dir);
    cleanup(&b.dir);
}

/// A position the source has purged stops the producer with the way on: --resnapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_position_is_fatal_and_names_resnapshot() {
    let (p, mut c) = TestPipeline::with_database("pf_purge", &[]).await;
    let s = stack();
    // The topic claims a position far in the past of domain 1.
    let admin_cfg = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .clone();
    continuum_common::kafka::ensure_changelog_topic(
        &admin_cfg,
        &p.topic,
        64 << 20,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .create()
        .unwrap();
    let headers = rdkafka::message::OwnedHeaders::new()
        .insert(rdkafka::message::Header {
            key: "continuum.kind",
            value: Some("heartbeat"),
        })
        .insert(rdkafka::message::Header {
            key: "continuum.pos",
            value: Some("at:1-1-1"),
        });
    producer
        .send(
            BaseRecord::<(), [u8]>::to(&p.topic)
                .partition(0)
                .payload(&[0u8, 0, 0, 0, 1][..])
                .headers(headers),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    // Rotate and purge every earlier binlog, so 1-1-1's file is gone.
    c.query_drop("FLUSH BINARY LOGS").await.unwrap();
    let current: String = c
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .map(|r: mysql_async::Row| r.get(0).unwrap())
        .unwrap();
    c.query_drop(format!("PURGE BINARY LOGS TO '{current}'"))
        .await
        .unwrap();
    let log = p.run_to_failure(&[]);
    let line = error_line(&log);
    assert!(line.contains("error 1236"), "{line}");
    assert!(line.contains("were purged"), "{line}");
    assert!(line.contains("--resnapshot"), "{line}");
    // And --resnapshot is indeed the way on.
    let mut prod = p.spawn(&["--resnapshot"]);
    wait_for("a fresh snapshot", Duration::from_secs(60), || async {
        read_topic(&s.brokers, &p.topic)
            .iter()
            .any(|r| r.header_str("continuum.kind") == Some("snapshot"))
            .then_some(())
    })
    .await;
    prod.kill9();
    cleanup(&p.dir);
}

/// The final error line of a producer run (what the operator reads).
fn error_line(log: &str) -> String {
    log.lines()
        .rfind(|l| l.starts_with("continuum-producer: error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{log}"))
        .to_owned()
}

/// Error 1236 has several causes besides a purged binlog, each with its own way on. Every case
/// is reproduced on the SF server, from an empty topic with `--start-position`:
///
/// - a GTID of a domain whose binlog goes further, from a server that never wrote in it: the
///   topic's history and the server's have diverged (`ER_GTID_POSITION_NOT_FOUND_IN_BINLOG2`);
/// - a GTID past the end of the server's binlog: the server never wrote it, so the topic came
///   from another server or an earlier life of this one (`ER_GTID_POSITION_NOT_FOUND_IN_BINLOG`);
/// - a GTID in a gap of the binlog (a transaction logged with `gtid_seq_no` set past the next
///   number), refused because the producer reads with GTID strict mode
///   (`ER_GTID_START_FROM_BINLOG_HOLE`).
///
/// None of them may say the binlog was purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cause_of_error_1236_is_told_apart_with_its_own_advice() {
    let mut c = admin().await;
    let now = gtid_binlog_pos(&mut c).await;
    let seq = now.get(1).expect("SF has written in domain 1").seq;
    // A gap in domain 1: the next transaction is numbered 1000 past the current one.
    let p = TestPipeline::new("pf_1236");
    p.sql(
        &mut c,
        &[
            "CREATE DATABASE {db}",
            "CREATE TABLE {db}.t (id INT PRIMARY KEY)",
        ],
    )
    .await;
    let seq = gtid_binlog_pos(&mut c).await.get(1).unwrap().seq.max(seq);
    c.query_drop(format!("SET SESSION gtid_seq_no = {}", seq + 1000))
        .await
        .unwrap();
    p.sql(&mut c, &["INSERT INTO {db}.t VALUES (1)"]).await;
    let hole = format!("1-1-{}", seq + 500);
    let cases = [
        (
            "1-77-5",
            vec!["1-77-5", "diverged", "verify", "--resnapshot"],
        ),
        (
            "1-1-999999999",
            vec![
                "1-1-999999999",
                "never wrote",
                "database.host",
                "--resnapshot",
            ],
        ),
        (
            hole.as_str(),
            vec![
                hole.as_str(),
                "missing the GTID",
                "not binlogged",
                "--resnapshot",
            ],
        ),
    ];
    let mut wrong = Vec::new();
    for (position, wanted) in cases {
        let q = TestPipeline::new("pf_1236");
        let (ok, log) = q.run_to_exit(&["--start-position", position], Duration::from_secs(60));
        assert!(!ok, "from {position} the producer must stop:\n{log}");
        let line = error_line(&log);
        let missing: Vec<&str> = wanted.into_iter().filter(|w| !line.contains(w)).collect();
        if !line.contains("error 1236") || line.contains("purged") || !missing.is_empty() {
            wrong.push(format!(
                "from {position}: missing {missing:?} or says 'purged': {line}"
            ));
        }
        cleanup(&q.dir);
    }
    assert!(
        wrong.is_empty(),
        "each cause has its own message:\n{}",
        wrong.join("\n")
    );
    cleanup(&p.dir);
}

/// A server without a binary log is refused: a throwaway mariadbd with --skip-log-bin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_without_binary_log_is_refused() {
    let dir = std::env::temp_dir().join(unique_name("nobinlog"));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let ok = Command::new("mariadb-install-db")
        .args([
            "--no-defaults",
            &format!("--datadir={}", data.display()),
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            &format!("--user={}", whoami()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "mariadb-install-db failed");
    let port = free_port();
    // TLS with the stack's certificates, as the binaries are configured for it (.stack/env).
    let tls: Vec<String> = match std::env::var("STACK_TLS_DIR")
        .ok()
        .filter(|d| !d.is_empty())
    {
        Some(d) => vec![
            format!("--ssl-ca={d}/ca.pem"),
            format!("--ssl-cert={d}/server.pem"),
            format!("--ssl-key={d}/server.key"),
        ],
        None => Vec::new(),
    };
    let server = Command::new("mariadbd")
        .args([
            "--no-defaults",
            &format!("--datadir={}", data.display()),
            &format!("--socket={}/s.sock", dir.display()),
            &format!("--port={port}"),
            "--bind-address=127.0.0.1",
            "--skip-log-bin",
            "--skip-name-resolve",
            &format!("--user={}", whoami()),
        ])
        .args(&tls)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Killed)
        .unwrap();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false);
    wait_for("the throwaway server", Duration::from_secs(60), || {
        let o = opts.clone();
        async move { mysql_async::Conn::new(o).await.ok().map(|_| ()) }
    })
    .await;
    let p = TestPipeline::new("pf_nobin");
    let (ok, log) = p.run_to_exit_with(
        &["--db-port", &port.to_string(), "--db-user", "root"],
        Duration::from_secs(60),
        &[],
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!ok);
    assert!(
        log.contains("preflight: log_bin is OFF, expected ON"),
        "{log}"
    );
    cleanup(&p.dir);
}

fn whoami() -> String {
    String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned()
}

/// An error stops the producer with exit status 2, as the README says (0 success, 1 a
/// difference found by verify or orphans, 2 an error), and with its cause said once.
#[test]
fn an_error_exits_2_and_says_its_cause_once() {
    // A config the producer refuses before it connects to anything.
    let mut site = TestSite::new(&continuum_tests::stack().sf, "pf_exit");
    site.set("sites.sf.unknown_setting", 1);
    let cfg = site.write_unchecked();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_continuum-producer"))
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("continuum-producer: error:"))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains("unknown_setting"), "{line}");
    assert_eq!(
        line.matches("unknown field").count(),
        1,
        "the cause is said once: {line}"
    );
    site.remove_dir();
}
