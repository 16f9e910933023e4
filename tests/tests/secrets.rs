//! The secret-leak suite, against the local stack (`make up`, `. .stack/env`).
//!
//! Every secret the pipeline takes is set to one marker string, and each is the real credential,
//! so that the pipeline only works if it was used:
//!
//! | secret | real where |
//! |---|---|
//! | MariaDB password (`database.password_file`, `CONTINUUM_DB_PASSWORD`, `CONTINUUM_<SITE>_DB_PASSWORD`) | a MariaDB user of this test on both sites, with that password, REQUIRE SSL |
//! | SASL password (`sites.sf.sasl.password_file`, `CONTINUUM_SF_SASL_PASSWORD`) | a SCRAM-SHA-512 user of this test on SF's broker (made through `scripts/kafka.py scram`), with that password; SF's cluster is reached through its SASL_SSL listener |
//! | TLS key password (`sites.eu.tls.key_password_file`, `CONTINUUM_EU_TLS_KEY_PASSWORD`) | EU's client key is encrypted with it; EU's cluster is reached through its SSL listener, which requires the client certificate |
//! | registry password (`sites.<site>.registry.password_file`, `CONTINUUM_<SITE>_REGISTRY_PASSWORD`) | the registries' HTTPS terminators (`tls_support`) require basic auth with it |
//!
//! The SF producer reads its secrets from files, the EU `consumer run` from the environment. Both
//! run at debug level (and once more with librdkafka's own debug output) and replicate a few
//! transactions; a MariaDB user is created with the marker as password meanwhile (MariaDB writes
//! `IDENTIFIED BY '...'` into the binlog as typed). Then `status`, `verify`, every `--help` and
//! `--version`, config errors that hold the marker, runtime errors with the marker as credential,
//! `/metrics`, `/health` and the `Debug` output of the loaded configs. The marker (and the
//! basic-auth header it makes) must be in none of those outputs or logs.
//!
//! The runtime errors are real: with the SASL password, the key password or the registry password
//! one character off, the process that uses it must stop with an error naming that setting.

mod tls_support;

use std::process::Output;
use std::time::Duration;

use continuum_common::config::SiteConfig;
use continuum_tests::{stack, unique_name, wait_for_blocking};
use tls_support::*;

struct Outputs {
    marker: String,
    needles: Vec<String>,
    seen: Vec<(String, String)>,
}

impl Outputs {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        let (what, text) = (what.into(), text.into());
        eprintln!("--- {what}: {} bytes", text.len());
        self.seen.push((what, text));
    }

    fn output(&mut self, what: impl Into<String>, o: &Output) -> String {
        let text = output_text(o);
        self.add(what, text.clone());
        text
    }

    /// Panics listing every output that holds a needle, with the lines that do.
    fn assert_clean(&self) {
        let mut leaks = Vec::new();
        for (what, text) in &self.seen {
            for n in &self.needles {
                if text.contains(n.as_str()) {
                    let lines: Vec<&str> = text
                        .lines()
                        .filter(|l| l.contains(n.as_str()))
                        .take(5)
                        .collect();
                    leaks.push(format!("{what}:\n  {}", lines.join("\n  ")));
                }
            }
        }
        assert!(
            leaks.is_empty(),
            "the secret {} leaked into {} output(s):\n{}",
            self.marker,
            leaks.len(),
            leaks.join("\n")
        );
    }
}

fn temp_config(w: &World, name: &str, text: &str) -> std::path::PathBuf {
    let p = w.dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_is_ever_printed() {
    let marker = format!(
        "MARKER{:016x}{:08x}",
        rand::random::<u64>(),
        std::process::id()
    );
    let user = unique_name("secrets").replace("t_secrets", "cs");
    create_pipeline_user(&user, &marker).await;
    let scram_user = unique_name("secrets scram");
    let mut w = World::start(
        "secrets",
        Options {
            db_user: user.clone(),
            db_password: marker.clone(),
            sf_kafka: Kafka::Sasl {
                user: scram_user.clone(),
                password: marker.clone(),
            },
            eu_kafka: Kafka::Tls {
                key_password: Some(marker.clone()),
            },
            registry_password: marker.clone(),
            kafka_debug: None,
        },
    );
    create_scram_user(&stack().sf, &w.dir, &scram_user, &marker);
    // The broker takes the new credential from its metadata log: wait (bounded) until it
    // admits the login, so that the pipeline does not meet a refusal that is only early.
    {
        let sasl = w.sf.kafka.clone();
        let c = SiteConfig::from_toml(&format!(
            "site = \"sf\"\n[database]\nuser = \"u\"\n[sites.sf]\nbrokers = \"{}\"\nregistry = {{ url = \"http://127.0.0.1:1\" }}\n[sites.sf.tls]\nca_file = \"{}\"\n[sites.sf.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"{scram_user}\"\npassword = \"{marker}\"\n",
            sasl.brokers,
            w.tls.ca().display()
        ))
        .unwrap();
        let cfg = continuum_common::kafka::base_config("sf", c.local(), "secrets-suite").unwrap();
        wait_for_blocking(
            &format!("SF's broker to admit SCRAM user {scram_user}"),
            Duration::from_secs(60),
            || {
                continuum_common::kafka::topic_partitions(
                    &cfg,
                    "secrets-probe",
                    Duration::from_secs(5),
                )
                .ok()
            },
        );
    }
    let mut out = Outputs {
        needles: vec![
            marker.clone(),
            base64(format!("continuum:{marker}").as_bytes()),
        ],
        marker: marker.clone(),
        seen: Vec::new(),
    };

    // 1. The pipeline at debug level, replicating.
    let db = w.database(1);
    let mut producer = w.producer("sf", SecretsVia::Files, "debug");
    let mut consumer = w.consumer_run("eu", SecretsVia::Env, "debug");
    producer.wait_log("streaming the binlog", Duration::from_secs(90));
    create_table_sf(&db).await;
    write_transactions(&db, 0, 3).await;
    {
        // A password in the binlog: the producer reads this statement and leaves it out.
        let leak_user = format!("{user}_b");
        let account = format!("'{leak_user}'@'127.0.0.1'");
        exec_at_sf([
            format!("CREATE USER {account} IDENTIFIED BY '{marker}'"),
            format!("DROP USER {account}"),
        ])
        .await;
    }
    write_transactions(&db, 3, 2).await;
    let sql = format!("SELECT id, v, n FROM `{db}`.t ORDER BY id");
    let rows = wait_replicated(
        &sql,
        Duration::from_secs(180),
        &mut [&mut producer, &mut consumer],
    )
    .await;
    assert_eq!(rows.len(), 10);
    // The credentials were the ones in use: the producer's Kafka connections are all to SF's
    // SASL_SSL listener (which admits SCRAM-SHA-512 logins only, and the test's user has the
    // marker as its one password); `consumer run`'s to SF's SASL_SSL listener (the mirror's
    // source) and to EU's SSL listener (which requires the client certificate, whose key the
    // marker decrypts).
    assert_broker_connections(&producer, &[&stack().sf.brokers_sasl]);
    assert_broker_connections(
        &consumer,
        &[&stack().sf.brokers_sasl, &stack().eu.brokers_tls],
    );
    for site in [&w.sf, &w.eu] {
        assert!(
            site.registry.stats.authorized() > 0,
            "{}: the registry password was used",
            site.name
        );
    }
    for p in [&producer, &consumer] {
        let port = p.metrics_port.unwrap();
        out.add(
            format!("{} /metrics", p.name),
            http_get(port, "/metrics").await,
        );
        out.add(
            format!("{} /health", p.name),
            http_get(port, "/health").await,
        );
    }

    // 2. Operator verbs while the pipeline runs, secrets from files and from the environment.
    for via in [SecretsVia::Files, SecretsVia::Env] {
        for args in [
            &["status"][..],
            &["status", "--json"],
            &["--log", "debug", "verify", "--databases", &db],
        ] {
            let o = w.consumer_verb("eu", via, args);
            let text = out.output(format!("consumer {args:?} ({via:?})"), &o);
            assert!(
                o.status.success(),
                "consumer {args:?} ({via:?}) failed:\n{text}"
            );
        }
    }

    assert!(producer.stop(), "the producer stops cleanly");
    assert!(consumer.stop(), "consumer run stops cleanly");
    out.add("sf producer log (debug)", producer.log_text());
    out.add("eu consumer run log (debug)", consumer.log_text());
    assert!(
        producer.log_text().contains("DEBUG"),
        "the producer logged at debug level"
    );
    assert!(
        consumer.log_text().contains("DEBUG"),
        "consumer run logged at debug level"
    );
    assert!(
        producer
            .log_text()
            .contains("statement not replicated statement=CREATE USER"),
        "the producer read the CREATE USER statement (and logged its kind only)"
    );

    // 3. Once more with librdkafka's own debug output (security, broker, configuration).
    w.opts.kafka_debug = Some("security,broker,conf,protocol".into());
    let mut producer = w.producer("sf", SecretsVia::Env, "debug");
    let mut consumer = w.consumer_run("eu", SecretsVia::Files, "debug");
    producer.wait_log("streaming the binlog", Duration::from_secs(90));
    write_transactions(&db, 5, 1).await;
    wait_replicated(
        &sql,
        Duration::from_secs(180),
        &mut [&mut producer, &mut consumer],
    )
    .await;
    producer.stop();
    consumer.stop();
    assert!(
        producer.log_text().contains("librdkafka") || producer.log_text().contains("rdkafka"),
        "librdkafka's debug output reached the log"
    );
    out.add("sf producer log (librdkafka debug)", producer.log_text());
    out.add(
        "eu consumer run log (librdkafka debug)",
        consumer.log_text(),
    );
    w.opts.kafka_debug = None;

    // 4. --help and --version, with every secret in the environment.
    let (cfg, env) = w.config("eu", SecretsVia::Env, (free_port(), free_port()));
    for (bin, args) in [
        ("continuum-producer", &["--help"][..]),
        ("continuum-producer", &["-h"]),
        ("continuum-producer", &["--version"]),
        ("continuum-consumer", &["--help"]),
        ("continuum-consumer", &["--version"]),
        ("continuum-consumer", &["run", "--help"]),
        ("continuum-consumer", &["apply", "--help"]),
        ("continuum-consumer", &["status", "--help"]),
        ("continuum-consumer", &["mirror", "--help"]),
        ("continuum-consumer", &["replay", "--help"]),
        ("continuum-consumer", &["verify", "--help"]),
        ("continuum-consumer", &["promote", "--help"]),
        ("continuum-consumer", &["orphans", "--help"]),
    ] {
        let o = command(bin)
            .args(args)
            .envs(env.iter().cloned())
            .env("CONTINUUM_CONFIG", &cfg)
            .output()
            .unwrap();
        let text = out.output(format!("{bin} {args:?}"), &o);
        assert!(
            o.status.success() && !text.is_empty(),
            "{bin} {args:?}: {text}"
        );
    }

    // 5. Config errors that hold the secret.
    let (good_files, _) = w.config("eu", SecretsVia::Files, (free_port(), free_port()));
    let good = std::fs::read_to_string(&good_files).unwrap();
    let db_section = "[database]\n";
    assert!(good.contains(db_section));
    let bad_configs = [
        (
            "a typo in a key, the secret as its value",
            good.replacen(
                db_section,
                &format!("{db_section}pasword = \"{marker}\"\n"),
                1,
            ),
        ),
        (
            "a syntax error on the secret's line",
            good.replacen(
                db_section,
                &format!("{db_section}password = \"{marker}\" x\n"),
                1,
            ),
        ),
        (
            "the secret where a number belongs",
            good.replacen(
                &format!("port = {}\n", stack().eu.db_port),
                &format!("port = \"{marker}\"\n"),
                1,
            ),
        ),
        (
            "the secret where a string belongs",
            good.replacen(
                "username = \"continuum\"",
                &format!("username = {{ password = \"{marker}\" }}"),
                1,
            ),
        ),
        (
            "credentials in the registry URL",
            good.replacen(
                "url = \"https://",
                &format!("url = \"https://continuum:{marker}@"),
                1,
            ),
        ),
        (
            "a reserved librdkafka key holding the secret",
            format!("{good}\n[sites.sf.kafka_options]\n\"sasl.password\" = \"{marker}\"\n"),
        ),
        (
            "the secret as a duration",
            good.replacen(
                "max_retry_delay = \"1s\"\n[consumer.mirror]",
                &format!("max_retry_delay = \"{marker}\"\n[consumer.mirror]"),
                1,
            ),
        ),
    ];
    for (i, (what, text)) in bad_configs.iter().enumerate() {
        let path = temp_config(&w, &format!("bad-{i}.toml"), text);
        for (bin, args) in [
            ("continuum-producer", &["--log", "debug"][..]),
            ("continuum-consumer", &["--log", "debug", "status"]),
        ] {
            let o = command(bin)
                .arg("--config")
                .arg(&path)
                .args(args)
                .output()
                .unwrap();
            let t = out.output(format!("{bin}: {what}"), &o);
            assert!(
                !o.status.success(),
                "{bin} accepted a config with {what}:\n{t}"
            );
        }
    }
    // A secret in an environment variable for a setting that is not configured.
    let (no_sasl, _) = {
        let saved = w.sf.kafka.sasl.take();
        let r = w.config("eu", SecretsVia::Files, (free_port(), free_port()));
        w.sf.kafka.sasl = saved;
        r
    };
    for var in ["CONTINUUM_SF_SASL_PASSWORD", "CONTINUUM_EU_SASL_PASSWORD"] {
        let o = command("continuum-consumer")
            .arg("--config")
            .arg(&no_sasl)
            .args(["status"])
            .env(var, &marker)
            .output()
            .unwrap();
        let t = out.output(format!("{var} without a sasl section"), &o);
        assert!(!o.status.success() && t.contains(var), "{t}");
    }

    // 6. Runtime errors with the secret as (part of) a credential.
    let wrong_user = good.replacen(&format!("user = \"{user}\""), "user = \"nobody_at_all\"", 1);
    let path = temp_config(&w, "wrong-user.toml", &wrong_user);
    let o = command("continuum-consumer")
        .arg("--config")
        .arg(&path)
        .args(["--log", "debug", "status"])
        .output()
        .unwrap();
    let t = out.output("status: unknown MariaDB user, the secret as password", &o);
    assert!(!o.status.success() && t.contains("Access denied"), "{t}");
    // The secret plus one character: a wrong password that contains the secret.
    let (cfg, env) = w.config("eu", SecretsVia::Env, (free_port(), free_port()));
    let wrong = |var: &str| -> Vec<(String, String)> {
        env.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if k == var { format!("{v}x") } else { v.clone() },
                )
            })
            .collect()
    };
    let o = command("continuum-consumer")
        .arg("--config")
        .arg(&cfg)
        .args(["--log", "debug", "status"])
        .envs(wrong("CONTINUUM_DB_PASSWORD"))
        .output()
        .unwrap();
    let t = out.output("status: wrong MariaDB password", &o);
    assert!(!o.status.success() && t.contains("Access denied"), "{t}");
    // A wrong SASL password, key password and registry password, at debug level, each to the
    // process that uses it: each stops by itself (bounded), with an error naming the setting.
    let wrong_secret = |site: &str, var: &str| -> (std::path::PathBuf, Vec<(String, String)>) {
        let (cfg, env) = w.config(site, SecretsVia::Env, (free_port(), free_port()));
        assert!(env.iter().any(|(k, _)| k == var), "{site} has no {var}");
        let env = env
            .into_iter()
            .map(|(k, v)| {
                let v = if k == var { format!("{v}x") } else { v };
                (k, v)
            })
            .collect();
        (cfg, env)
    };
    // (binary, its arguments, the site of its config, the variable, what its error says)
    type WrongSecret = (
        &'static str,
        &'static [&'static str],
        &'static str,
        &'static str,
        &'static [&'static str],
    );
    let runs: [WrongSecret; 3] = [
        (
            "continuum-producer",
            &[],
            "sf",
            "CONTINUUM_SF_SASL_PASSWORD",
            &["refused the SASL login", "set sites.sf.sasl.password"],
        ),
        (
            "continuum-consumer",
            &["run"],
            "eu",
            "CONTINUUM_EU_TLS_KEY_PASSWORD",
            &["Kafka (eu cluster) creating", "ssl.key.location failed"],
        ),
        (
            "continuum-producer",
            &[],
            "sf",
            "CONTINUUM_SF_REGISTRY_PASSWORD",
            &["401"],
        ),
    ];
    for (i, (bin, args, site, var, says)) in runs.into_iter().enumerate() {
        let (cfg, env) = wrong_secret(site, var);
        let mut c = command(bin);
        c.arg("--config")
            .arg(&cfg)
            .args(["--log", "debug"])
            .args(args)
            .envs(env);
        let mut p = Proc::spawn(var, c, &w.dir.join(format!("wrong-{var}.log")));
        if var.ends_with("REGISTRY_PASSWORD") {
            // The producer asks the registry when it meets a table it has no schema for yet.
            p.wait_log("streaming the binlog", Duration::from_secs(90));
            let table = format!("`{db}`.t{i}");
            exec_at_sf([
                format!("CREATE TABLE {table} (id INT PRIMARY KEY, v VARCHAR(8))"),
                format!("INSERT INTO {table} VALUES (1, 'a')"),
            ])
            .await;
        }
        let status = p.wait_exit(Duration::from_secs(90));
        let log = p.log_text();
        out.add(format!("{bin} {args:?}: wrong {var}"), log.clone());
        assert!(
            status.is_some_and(|s| !s.success()),
            "{bin} {args:?} with a wrong {var} did not stop with an error within 90 s ({status:?}):\n{log}"
        );
        for part in says {
            assert!(
                log.contains(part),
                "{bin} with a wrong {var} does not say `{part}`:\n{log}"
            );
        }
    }
    let (cfg, env) = wrong_secret("eu", "CONTINUUM_EU_TLS_KEY_PASSWORD");
    let o = command("continuum-consumer")
        .arg("--config")
        .arg(&cfg)
        .args(["--log", "debug", "status"])
        .envs(env)
        .output()
        .unwrap();
    let t = out.output("status: wrong key password", &o);
    assert!(t.contains("ssl.key.location failed"), "{t}");

    // 7. Debug output of the loaded configurations.
    for via in [SecretsVia::Files, SecretsVia::Env] {
        for site in ["sf", "eu"] {
            let (path, env) = w.config(site, via, (free_port(), free_port()));
            let mut c = SiteConfig::from_file(&path).unwrap();
            c.apply_env(|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
                .unwrap();
            c.validate().unwrap();
            assert_eq!(
                c.database.password().unwrap().unwrap().expose(),
                marker,
                "the secret was loaded"
            );
            out.add(
                format!("{site} config ({via:?}), Debug"),
                format!("{c:?}\n{c:#?}\n{:?}\n{:?}", c.database, c.local()),
            );
        }
    }

    // SECRETS_SUITE_DUMP=FILE keeps every output checked, to read them.
    if let Ok(f) = std::env::var("SECRETS_SUITE_DUMP") {
        let all: String = out
            .seen
            .iter()
            .map(|(w, t)| format!("===== {w}\n{t}\n"))
            .collect();
        std::fs::write(f, all).unwrap();
    }
    out.assert_clean();
    eprintln!("{} outputs checked for the secret", out.seen.len());
    drop_database_both(&db).await;
    drop_user(&user).await;
    delete_scram_user(&stack().sf, &scram_user);
}
