//! The TLS suite, against the local stack (`make up`, `. .stack/env`).
//!
//! Which link runs TLS, and against what:
//!
//! | link | TLS served by |
//! |---|---|
//! | binaries -> MariaDB (both sites) | the stack's MariaDB itself; the `continuum` users REQUIRE SSL |
//! | binaries -> Kafka (both clusters) | the stack's brokers: their SSL listener (a client certificate from the stack's CA required) and their SASL_SSL listener (SCRAM-SHA-512) |
//! | binaries -> schema registry | an HTTPS terminator with basic auth of this suite in front of the stack's registry, which serves plain HTTP (`tls_support`) |
//!
//! - `pipeline_replicates_with_tls_on_every_link`: the real producer at SF and `consumer run` at
//!   EU replicate a few transactions with TLS and verified host names on every link above; every
//!   Kafka connection they hold is to an SSL listener.
//! - `binaries_stop_on_a_refusal_naming_the_setting`: a wrong SASL password, a CA the brokers'
//!   certificate does not chain to, a plaintext client at the TLS port: the producer, the mirror
//!   and `consumer run` (mirror and apply) each stop at once with an error that names the setting
//!   to fix, and write nothing.
//! - Kafka clients, directly (`continuum_common::kafka`'s helpers, which the binaries use): TLS
//!   with the client certificate works by address and by name; refused, each with the setting
//!   named: plaintext at the TLS listener, no client certificate, a client certificate from
//!   another CA, a broker certificate from another CA (with and without the name check), an
//!   address the certificate does not name.
//! - SASL: SCRAM-SHA-512 authenticates over TLS; a wrong password and an unknown user are
//!   refused (`sites.sf.sasl.password`); SCRAM-SHA-256 and PLAIN, which the stack's brokers do
//!   not enable, are refused naming `sites.sf.sasl.mechanism` and what the broker offers; SASL
//!   without TLS at the SASL_SSL listener is refused.
//! - MariaDB: the `continuum` user without TLS is denied; host names and the CA are verified.
//! - Registry: HTTPS and basic auth through the terminator; plain HTTP, a missing or wrong
//!   password, a certificate for another name or from another CA are refused.
//!
//! The tests use their own topics, databases and terminators, so they may run in parallel.

mod tls_support;

use std::path::Path;
use std::time::{Duration, Instant};

use continuum_common::config::SiteConfig;
use continuum_common::kafka::{
    self, base_config, ensure_changelog_topic, producer_config, read_last_stable,
};
use continuum_schemas::{Registry, RegistrySettings, RetryPolicy};
use continuum_tests::check::{exec_row, TempDir};
use continuum_tests::{stack, unique_name, Site};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use tls_support::*;

/// A site config whose `sf` cluster is `brokers`, with `extra` TOML appended (`[sites.sf.tls]`,
/// `[sites.sf.sasl]`).
fn cluster(brokers: &str, extra: &str) -> SiteConfig {
    let c = SiteConfig::from_toml(&format!(
        "site = \"sf\"\n[database]\nuser = \"u\"\n[sites.sf]\nbrokers = \"{brokers}\"\nregistry = {{ url = \"http://127.0.0.1:1\" }}\n{extra}\n"
    ))
    .unwrap();
    c.validate().unwrap();
    c
}

fn tls_section(ca: &Path, cert_key: Option<(&Path, &Path)>, verify_hostname: bool) -> String {
    let mut s = format!(
        "[sites.sf.tls]\nca_file = \"{}\"\nverify_hostname = {verify_hostname}\n",
        ca.display()
    );
    if let Some((c, k)) = cert_key {
        s += &format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\n",
            c.display(),
            k.display()
        );
    }
    s
}

fn sasl_section(mechanism: &str, user: &str, password: &str) -> String {
    format!("[sites.sf.sasl]\nmechanism = \"{mechanism}\"\nusername = \"{user}\"\npassword = \"{password}\"\n")
}

fn client(c: &SiteConfig) -> ClientConfig {
    let mut cfg = base_config("sf", c.local(), "tls-suite").unwrap();
    cfg.set("socket.timeout.ms", "5000");
    cfg
}

/// Asks the cluster of `c` for a topic's metadata through `continuum_common::kafka` (what the
/// producer's and the mirror's sessions do first) and returns the error's text, which must be a
/// fatal security error that came at the refusal, well before the request's 20 s timeout.
fn refused(c: &SiteConfig, why: &str) -> String {
    let started = Instant::now();
    let e = kafka::topic_partitions(&client(c), "tls-suite-probe", Duration::from_secs(20))
        .expect_err(why);
    let took = started.elapsed();
    let text = e.to_string();
    eprintln!("{why} ({took:?}): {text}");
    assert!(
        matches!(e, KafkaError::ClientConfig(..)) && !kafka::is_transient(&e),
        "{why}: expected a fatal security error, got: {text}"
    );
    assert!(
        took < Duration::from_secs(15),
        "{why}: the refusal took {took:?}, as long as a broker that is down"
    );
    text
}

fn assert_names(text: &str, why: &str, parts: &[&str]) {
    for p in parts {
        assert!(
            text.contains(p),
            "{why}: the error does not say `{p}`: {text}"
        );
    }
}

/// Writes one record to a new topic through `c`'s settings and reads it back.
async fn round_trip(c: &SiteConfig, what: &str) {
    let topic = unique_name(what);
    let base = client(c);
    ensure_changelog_topic(&base, &topic, 64 << 20, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{what}: creating {topic}: {e}"));
    let p: ThreadedProducer<DefaultProducerContext> =
        producer_config("sf", c.local(), "tls-suite", &c.producer)
            .unwrap()
            .create()
            .unwrap();
    p.send(BaseRecord::to(&topic).key("k").payload(what))
        .map_err(|(e, _)| e)
        .unwrap();
    p.flush(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{what}: flush: {e}"));
    let reader = kafka::consumer_config("sf", c.local(), "tls-suite").unwrap();
    let last = read_last_stable(&reader, &topic, Duration::from_secs(20))
        .unwrap()
        .expect("the record written");
    assert_eq!(last.value.as_deref(), Some(what.as_bytes()));
}

// ---------------------------------------------------------------------------------------------
// MariaDB

/// `site`'s `continuum` login (`db_user`@127.0.0.1) REQUIRE SSL, as read through `admin`.
async fn assert_requires_ssl(admin: &mut Conn, site: &Site) {
    let ssl_type: Option<String> = exec_row(
        admin,
        "SELECT ssl_type FROM mysql.user WHERE User = ? AND Host = '127.0.0.1'",
        (&site.db_user,),
    )
    .await;
    assert_eq!(
        ssl_type.as_deref(),
        Some("ANY"),
        "{}: {}@127.0.0.1 must REQUIRE SSL (the stack does, unless STACK_DB_REQUIRE_TLS=0)",
        site.name,
        site.db_user
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_refuses_the_continuum_user_without_tls() {
    let tls = StackTls::get();
    for site in [&stack().sf, &stack().eu] {
        assert_requires_ssl(&mut site.admin_conn().await, site).await;

        let e = Conn::new(db_plain_opts(
            &site.db_host,
            site.db_port,
            &site.db_user,
            &site.db_password,
        ))
        .await
        .err()
        .unwrap_or_else(|| panic!("{}: {} logged in without TLS", site.name, site.db_user));
        match &e {
            mysql_async::Error::Server(s) => assert_eq!(
                s.code, 1045,
                "{}: expected access denied, got {e}",
                site.name
            ),
            other => panic!("{}: expected access denied (1045), got {other}", site.name),
        }

        // The same login over TLS, through the binaries' own options (common::db::opts).
        let mut db = continuum_common::config::DatabaseConfig::remote(&site.db_user);
        db.host = site.db_host.clone();
        db.port = site.db_port;
        db.password = Some(continuum_common::Secret::new(site.db_password.clone()));
        let e = Conn::new(continuum_common::db::opts(&db, &[]).unwrap())
            .await
            .expect_err("no TLS configured: refused");
        assert!(e.to_string().contains("Access denied"), "{e}");
        db.set_tls_ca(tls.ca());
        let mut c = Conn::new(continuum_common::db::opts(&db, &[]).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{}: {} over TLS: {e}", site.name, site.db_user));
        let v = ssl_version(&mut c).await;
        assert!(
            v.starts_with("TLS"),
            "{}: session is not TLS (Ssl_version '{v}')",
            site.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_host_name_and_ca_are_verified() {
    let tls = StackTls::get();
    let sf = &stack().sf;
    let dir = TempDir::new("tls_db_names");
    // 127.0.0.2 reaches the SF server too (loopback), but its certificate names only 127.0.0.1
    // and localhost.
    let fwd = AliasForwarder::to(([127, 0, 0, 1], sf.db_port).into());
    let port = fwd.port;

    let db = |host: &str, port: u16, ca: &Path, verify: bool| {
        let mut d = continuum_common::config::DatabaseConfig::remote(&sf.db_user);
        d.host = host.into();
        d.port = port;
        d.password = Some(continuum_common::Secret::new(sf.db_password.clone()));
        d.set_tls_ca(ca);
        d.tls.as_mut().unwrap().verify_hostname = verify;
        continuum_common::db::opts(&d, &[]).unwrap()
    };

    let e = Conn::new(db("127.0.0.2", port, &tls.ca(), true))
        .await
        .expect_err("a name the certificate does not have must be refused");
    let msg = e.to_string();
    assert!(
        msg.contains("certificate verify failed") || msg.to_lowercase().contains("hostname"),
        "expected a certificate error, got: {msg}"
    );
    eprintln!("wrong name refused: {msg}");

    // The same path without the name check connects: only the name was wrong.
    let mut c = Conn::new(db("127.0.0.2", port, &tls.ca(), false))
        .await
        .expect("without the name check the same server is reachable");
    assert!(ssl_version(&mut c).await.starts_with("TLS"));
    // Both names in the certificate work with the check on.
    for host in ["127.0.0.1", "localhost"] {
        let mut c = Conn::new(db(host, sf.db_port, &tls.ca(), true))
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert!(ssl_version(&mut c).await.starts_with("TLS"));
    }
    // A CA that did not sign the server's certificate: refused even without the name check.
    let (foreign_ca, _, _) = foreign_server_cert(&dir);
    let e = Conn::new(db("127.0.0.1", sf.db_port, &foreign_ca, false))
        .await
        .expect_err("another CA must not be trusted");
    assert!(e.to_string().contains("certificate verify failed"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Kafka

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_tls_listener_verifies_both_sides() {
    let tls = StackTls::get();
    let dir = TempDir::new("tls_kafka");
    let sf = &stack().sf;
    let (cert, key) = (tls.client_cert(), tls.client_key());
    let mine = Some((cert.as_path(), key.as_path()));

    // The typed settings: CA, host name check, client certificate. A record goes through, with
    // the broker reached by address and by name (both in its certificate).
    for host in ["127.0.0.1", "localhost"] {
        let good = cluster(
            &with_host(&sf.brokers_tls, host),
            &tls_section(&tls.ca(), mine, true),
        );
        assert_eq!(client(&good).get("security.protocol"), Some("ssl"));
        assert_eq!(
            client(&good).get("ssl.endpoint.identification.algorithm"),
            Some("https")
        );
        round_trip(&good, &format!("over tls {host}")).await;
    }
    // The listener advertises itself alone: every connection a client makes after the first is
    // to the TLS listener too.
    let good = cluster(&sf.brokers_tls, &tls_section(&tls.ca(), mine, true));
    let md_client: BaseConsumer = client(&good).create().unwrap();
    let md = md_client
        .fetch_metadata(None, Duration::from_secs(20))
        .unwrap();
    let advertised: Vec<String> = md
        .brokers()
        .iter()
        .map(|b| format!("{}:{}", b.host(), b.port()))
        .collect();
    assert_eq!(advertised, vec![sf.brokers_tls.clone()]);

    // Plaintext at the TLS listener.
    let e = refused(
        &cluster(&sf.brokers_tls, ""),
        "a plaintext client at the TLS listener",
    );
    assert_names(
        &e,
        "plaintext at TLS",
        &[
            &format!("the listener at {}", sf.brokers_tls),
            "speaks TLS",
            "security.protocol=plaintext",
            "set sites.sf.tls (a [sites.sf.tls] section",
        ],
    );

    // TLS without the client certificate the listener requires, and with one from another CA.
    let e = refused(
        &cluster(&sf.brokers_tls, &tls_section(&tls.ca(), None, true)),
        "no client certificate",
    );
    assert_names(
        &e,
        "no client certificate",
        &[
            "refused this client's certificate",
            "set sites.sf.tls.cert_file and key_file",
            "(cert_file is not set)",
        ],
    );
    let (foreign_cert, foreign_key) = foreign_client_cert(&dir);
    let e = refused(
        &cluster(
            &sf.brokers_tls,
            &tls_section(&tls.ca(), Some((&foreign_cert, &foreign_key)), true),
        ),
        "a client certificate from another CA",
    );
    assert_names(
        &e,
        "client certificate from another CA",
        &[
            "refused this client's certificate",
            &format!("(cert_file is {})", foreign_cert.display()),
        ],
    );

    // A CA that did not sign the broker's certificate: refused with and without the name check.
    let (foreign_ca, _, _) = foreign_server_cert(&dir);
    for verify in [true, false] {
        let e = refused(
            &cluster(&sf.brokers_tls, &tls_section(&foreign_ca, mine, verify)),
            &format!("a CA the broker's certificate does not chain to (verify_hostname {verify})"),
        );
        assert_names(
            &e,
            "untrusted CA",
            &[
                "did not verify",
                "certificate verify failed",
                &format!("set sites.sf.tls.ca_file to the CA that signed the brokers' certificates (it is {})", foreign_ca.display()),
            ],
        );
    }

    // An address the certificate does not name: 127.0.0.2 reaches the same listener (loopback),
    // refused with the name check, answered without it (so the name is what failed).
    let fwd = AliasForwarder::to(sf.brokers_tls.parse().unwrap());
    let other = format!("127.0.0.2:{}", fwd.port);
    let e = refused(
        &cluster(&other, &tls_section(&tls.ca(), mine, true)),
        "an address the certificate does not name",
    );
    assert_names(
        &e,
        "wrong name",
        &[
            "certificate verify failed",
            "the certificate must also name 127.0.0.2, the address in sites.sf.brokers",
        ],
    );
    let unchecked = cluster(&other, &tls_section(&tls.ca(), mine, false));
    kafka::topic_partitions(
        &client(&unchecked),
        "tls-suite-probe",
        Duration::from_secs(20),
    )
    .expect("without the name check, the same listener answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_sha_512_authenticates_and_refuses_the_rest() {
    let tls = StackTls::get();
    let dir = TempDir::new("tls_sasl");
    let sf = &stack().sf;
    let (user, password) = stack().kafka_sasl.clone();
    let sasl = |mechanism: &str, user: &str, password: &str| {
        cluster(
            &sf.brokers_sasl,
            &(tls_section(&tls.ca(), None, true) + &sasl_section(mechanism, user, password)),
        )
    };

    let good = sasl("SCRAM-SHA-512", &user, &password);
    assert_eq!(client(&good).get("security.protocol"), Some("sasl_ssl"));
    assert_eq!(client(&good).get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
    round_trip(&good, "scram 512").await;

    let wrong = format!("MARKER-{}", unique_name("wrong"));
    let e = refused(&sasl("SCRAM-SHA-512", &user, &wrong), "a wrong password");
    assert_names(
        &e,
        "wrong password",
        &[
            &format!(
                "the sf cluster refused the SASL login of user \"{user}\" with SCRAM-SHA-512 at {}",
                sf.brokers_sasl
            ),
            "invalid credentials",
            "set sites.sf.sasl.password (password_file, password or CONTINUUM_SF_SASL_PASSWORD)",
        ],
    );
    assert!(!e.contains(&wrong), "the password is in the error: {e}");
    let nobody = unique_name("nobody");
    let e = refused(
        &sasl("SCRAM-SHA-512", &nobody, &password),
        "an unknown user",
    );
    assert_names(
        &e,
        "unknown user",
        &[
            &format!("user \"{nobody}\""),
            "set sites.sf.sasl.password",
            "or sites.sf.sasl.username to a user it has",
        ],
    );

    // The brokers enable SCRAM-SHA-512 alone (sasl.enabled.mechanisms): a client that asks for
    // another mechanism is refused in the handshake, whatever its password.
    for mechanism in ["SCRAM-SHA-256", "PLAIN"] {
        let e = refused(&sasl(mechanism, &user, &password), mechanism);
        assert_names(
            &e,
            mechanism,
            &[
                &format!("does not offer SASL mechanism {mechanism}"),
                &format!("set sites.sf.sasl.mechanism to one of SCRAM-SHA-512 (it is {mechanism})"),
            ],
        );
    }

    // SASL without TLS at the SASL_SSL listener, and TLS with a CA that did not sign it.
    let e = refused(
        &cluster(
            &sf.brokers_sasl,
            &sasl_section("SCRAM-SHA-512", &user, &password),
        ),
        "SASL without TLS",
    );
    assert_names(
        &e,
        "SASL without TLS",
        &[
            "speaks TLS",
            "security.protocol=sasl_plaintext",
            "set sites.sf.tls (",
        ],
    );
    let (foreign_ca, _, _) = foreign_server_cert(&dir);
    let e = refused(
        &cluster(
            &sf.brokers_sasl,
            &(tls_section(&foreign_ca, None, true)
                + &sasl_section("SCRAM-SHA-512", &user, &password)),
        ),
        "SASL over TLS to a broker of another CA",
    );
    assert_names(
        &e,
        "untrusted CA",
        &["did not verify", "set sites.sf.tls.ca_file"],
    );
}

// ---------------------------------------------------------------------------------------------
// Registry

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_client_verifies_tls_and_sends_basic_auth() {
    let tls = StackTls::get();
    let dir = TempDir::new("tls_registry");
    let password = format!("registry-{}", unique_name("pw"));
    let up = Upstream::registry(&stack().sf.registry, "continuum", &password);
    let path = registry_path(&stack().sf.registry);
    let proxy = TlsProxy::start(
        listener(),
        &tls.server_cert(),
        &tls.server_key(),
        up.clone(),
    );
    let ca = std::fs::read(tls.ca()).unwrap();
    let client = |url: String, auth: Option<(&str, &str)>, ca: Option<Vec<u8>>| {
        Registry::new(&RegistrySettings {
            url,
            basic_auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
            ca_pem: ca,
            timeout: Some(Duration::from_secs(5)),
        })
        .unwrap()
        .with_retry(RetryPolicy {
            max_elapsed: Some(Duration::from_secs(2)),
        })
    };
    // A client trusting the stack's CA, with the right password.
    let with_password = |url: String| client(url, Some(("continuum", &password)), Some(ca.clone()));
    let url = format!("https://localhost:{}{path}", proxy.port());
    let subject = format!("{}-value", unique_name("tls_registry"));
    let schema = r#"{"type":"record","name":"T","namespace":"tls.suite","fields":[{"name":"a","type":"long"}]}"#;

    let id = with_password(url.clone())
        .register(&subject, schema)
        .await
        .expect("register over HTTPS with basic auth");
    let fetched = with_password(url.clone()).schema_by_id(id).await.unwrap();
    assert!(fetched.contains("tls.suite"), "{fetched}");
    assert!(proxy.stats.authorized() >= 2 && proxy.stats.unauthorized() == 0);
    // 127.0.0.1 is in the certificate too.
    with_password(format!("https://127.0.0.1:{}{path}", proxy.port()))
        .schema_by_id(id)
        .await
        .unwrap();

    // A wrong password: refused at once (not retried), and not in the error.
    let e = client(
        url.clone(),
        Some(("continuum", "MARKER-wrong-pw")),
        Some(ca.clone()),
    )
    .schema_by_id(id)
    .await
    .unwrap_err();
    assert!(
        !e.is_transient() && !e.to_string().contains("MARKER-wrong-pw"),
        "{e}"
    );
    assert!(proxy.stats.unauthorized() >= 1);
    // No password at all.
    client(url.clone(), None, Some(ca.clone()))
        .schema_by_id(id)
        .await
        .unwrap_err();

    // Without the stack's CA (system roots only), plain HTTP at the HTTPS port, a certificate
    // for another name, a certificate from another CA: each refused.
    let e = client(url.clone(), Some(("continuum", &password)), None)
        .schema_by_id(id)
        .await
        .unwrap_err();
    eprintln!("unknown CA: {e}");
    with_password(url.replace("https://", "http://"))
        .schema_by_id(id)
        .await
        .unwrap_err();
    let (wrong_cert, wrong_key) = tls.authority().issue(
        &dir,
        Leaf {
            name: "wrong-name",
            cn: "wrong.example",
            san: Some("DNS:wrong.example"),
            client: false,
            key_password: None,
        },
    );
    let wrong = TlsProxy::start(listener(), &wrong_cert, &wrong_key, up.clone());
    let e = with_password(format!("https://localhost:{}{path}", wrong.port()))
        .schema_by_id(id)
        .await
        .unwrap_err();
    eprintln!("wrong registry name: {e}");
    assert_eq!(
        wrong.stats.authorized(),
        0,
        "no request reached a registry with the wrong name"
    );
    let (_, foreign_cert, foreign_key) = foreign_server_cert(&dir);
    let impostor = TlsProxy::start(listener(), &foreign_cert, &foreign_key, up);
    with_password(format!("https://localhost:{}{path}", impostor.port()))
        .schema_by_id(id)
        .await
        .unwrap_err();
    assert_eq!(
        impostor.stats.authorized(),
        0,
        "no request (and no password) went to a server of another CA"
    );
}

// ---------------------------------------------------------------------------------------------
// The pipeline

fn tls_options(registry_password: String) -> Options {
    let s = stack();
    Options {
        db_user: s.sf.db_user.clone(),
        db_password: s.sf.db_password.clone(),
        sf_kafka: Kafka::Tls { key_password: None },
        eu_kafka: Kafka::Tls { key_password: None },
        registry_password,
        kafka_debug: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipeline_replicates_with_tls_on_every_link() {
    let s = stack();
    let w = World::start(
        "tls_e2e",
        tls_options(format!("registry-{}", unique_name("pw"))),
    );
    // Host names are verified on every link: SF's cluster by address, EU's by name.
    assert_eq!(w.sf.kafka.brokers, s.sf.brokers_tls);
    assert_eq!(
        w.eu.kafka.brokers,
        with_host(&s.eu.brokers_tls, "localhost")
    );
    let db = w.database(1);
    let mut producer = w.producer("sf", SecretsVia::Files, "info");
    let mut consumer = w.consumer_run("eu", SecretsVia::Files, "info");
    let started = Instant::now();
    // The schema travels through the binlog too: created once the producer streams.
    producer.wait_log("streaming the binlog", Duration::from_secs(90));
    create_table_sf(&db).await;
    write_transactions(&db, 0, 5).await;
    let rows = wait_replicated(
        &format!("SELECT id, v, n FROM `{db}`.t ORDER BY id"),
        Duration::from_secs(180),
        &mut [&mut producer, &mut consumer],
    )
    .await;
    assert_eq!(rows.len(), 10, "5 transactions of 3 inserts and 1 delete");
    eprintln!("EU caught up in {:?}", started.elapsed());

    // Every Kafka connection of both processes is to a broker's SSL listener, which requires
    // the client certificate (kafka_tls_listener_verifies_both_sides): the producer to SF's, the
    // mirror and apply to SF's and EU's. None to a plaintext or SASL listener.
    assert_broker_connections(&producer, &[&s.sf.brokers_tls]);
    assert_broker_connections(&consumer, &[&s.sf.brokers_tls, &s.eu.brokers_tls]);
    // Every registry call went through HTTPS with the password.
    for site in [&w.sf, &w.eu] {
        assert!(
            site.registry.stats.authorized() > 0,
            "{}: no HTTPS call to the registry",
            site.name
        );
        assert_eq!(site.registry.stats.unauthorized(), 0);
        assert_eq!(
            site.registry.stats.failed(),
            0,
            "{}: failed handshakes: {:?}",
            site.name,
            site.registry.stats.errors.lock().unwrap()
        );
    }
    // MariaDB: the login requires TLS, and the producer's binlog dump and apply's sessions are
    // that login's.
    for (site, what) in [(&s.sf, "Binlog Dump"), (&s.eu, "")] {
        let mut c = site.admin_conn().await;
        assert_requires_ssl(&mut c, site).await;
        let n: u64 = c
            .exec_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ? AND (? = '' OR COMMAND = ?)", (&site.db_user, what, what))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "{}: no session of {} ({what})",
            site.name,
            site.db_user
        );
    }
    assert!(
        producer.stop(),
        "the producer stops cleanly:\n{}",
        producer.log_text()
    );
    assert!(
        consumer.stop(),
        "consumer run stops cleanly:\n{}",
        consumer.log_text()
    );
    drop_database_both(&db).await;
}

/// One misconfiguration of a site's Kafka link, and what its error must say.
struct Refusal {
    what: &'static str,
    /// The site's link with the mistake, from the stack site and its good link.
    link: fn(&Site, &KafkaLink, &Path) -> KafkaLink,
    /// What the error must say, `{site}` standing for the site.
    says: &'static [&'static str],
    /// The site whose link is wrong for the mirror and `consumer run` at EU: `eu` (the target,
    /// met when the mirror creates its topic there) or `sf` (the source, met at its first read).
    mirror_site: &'static str,
}

fn wrong_password(site: &Site, good: &KafkaLink, _: &Path) -> KafkaLink {
    let host = good.brokers.rsplit_once(':').unwrap().0;
    KafkaLink {
        brokers: with_host(&site.brokers_sasl, host),
        tls: good.tls.clone().map(|t| KafkaTls {
            client: None,
            key_password: None,
            ..t
        }),
        sasl: Some((stack().kafka_sasl.0.clone(), unique_name("wrong"))),
    }
}

fn untrusted_ca(_: &Site, good: &KafkaLink, dir: &Path) -> KafkaLink {
    let mut l = good.clone();
    l.tls.as_mut().unwrap().ca = foreign_server_cert(dir).0;
    l
}

fn plaintext_at_tls(_: &Site, good: &KafkaLink, _: &Path) -> KafkaLink {
    KafkaLink {
        brokers: good.brokers.clone(),
        tls: None,
        sasl: None,
    }
}

const REFUSALS: &[Refusal] = &[
    Refusal {
        what: "a wrong SASL password",
        link: wrong_password,
        says: &[
            "refused the SASL login",
            "set sites.{site}.sasl.password (password_file, password or CONTINUUM_",
        ],
        mirror_site: "eu",
    },
    Refusal {
        what: "a CA the brokers' certificate does not chain to",
        link: untrusted_ca,
        says: &[
            "did not verify",
            "set sites.{site}.tls.ca_file to the CA that signed the brokers' certificates",
        ],
        mirror_site: "sf",
    },
    Refusal {
        what: "a plaintext client at the TLS port",
        link: plaintext_at_tls,
        says: &[
            "speaks TLS",
            "security.protocol=plaintext",
            "set sites.{site}.tls (a [sites.{site}.tls] section",
        ],
        mirror_site: "eu",
    },
];

/// Waits (bounded) for `p` to stop by itself, and checks that it failed with an error that says
/// `says` about `site`, and did not take the refusal for an outage to retry.
fn assert_stops_naming(p: &mut Proc, r: &Refusal, site: &str) {
    let Some(status) = p.wait_exit(Duration::from_secs(90)) else {
        panic!(
            "{} with {} still runs after 90 s (it retries as if the broker were down):\n{}",
            p.name,
            r.what,
            p.log_text()
        );
    };
    let log = p.log_text();
    eprintln!("--- {} with {}: {status}\n{log}", p.name, r.what);
    assert!(
        !status.success(),
        "{} exited 0 with {}:\n{log}",
        p.name,
        r.what
    );
    for s in r.says {
        let s = s.replace("{site}", site);
        assert!(
            log.contains(&s),
            "{} with {}: the error does not say `{s}`:\n{log}",
            p.name,
            r.what
        );
    }
    assert!(
        !log.contains("interrupted; resuming"),
        "{} took {} for a transient failure:\n{log}",
        p.name,
        r.what
    );
}

/// `who` did not create `topic` on `site`'s cluster.
fn assert_not_created(site: &Site, topic: &str, who: &str) {
    assert_eq!(
        records_in(site, topic),
        None,
        "{who} created {topic} on {}",
        site.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binaries_stop_on_a_refusal_naming_the_setting() {
    let s = stack();
    let mut w = World::start(
        "tls_refusals",
        tls_options(format!("registry-{}", unique_name("pw"))),
    );
    let foreign = w.dir.join("foreign");
    let (good_sf, good_eu) = (w.sf.kafka.clone(), w.eu.kafka.clone());
    // Rows the producer would snapshot, had it got through.
    let db = w.database(1);
    create_table_sf(&db).await;
    write_transactions(&db, 0, 2).await;

    // The producer, with SF's link wrong: it stops before it creates its topic.
    for r in REFUSALS {
        w.sf.kafka = (r.link)(&s.sf, &good_sf, &foreign);
        let mut p = w.producer("sf", SecretsVia::Files, "info");
        assert_stops_naming(&mut p, r, "sf");
        let who = format!("the producer with {}", r.what);
        assert_not_created(&s.sf, &w.sf_topic, &who);
    }
    w.sf.kafka = good_sf.clone();

    // The mirror (`consumer mirror`) and `consumer run` (mirror and apply) at EU, copying SF's
    // changelog, which holds a record: with EU's link wrong (the target), and with SF's (the
    // source) for the CA. Nothing reaches EU's cluster.
    s.sf.create_topic(&w.sf_topic, 1).await;
    let p: ThreadedProducer<DefaultProducerContext> =
        s.sf.producer_config("tls-suite").create().unwrap();
    p.send(BaseRecord::to(&w.sf_topic).key("k").payload("v"))
        .map_err(|(e, _)| e)
        .unwrap();
    p.flush(Duration::from_secs(20)).unwrap();
    for r in REFUSALS {
        let wrong = r.mirror_site;
        for verb in ["mirror", "run"] {
            match wrong {
                "sf" => w.sf.kafka = (r.link)(&s.sf, &good_sf, &foreign),
                _ => w.eu.kafka = (r.link)(&s.eu, &good_eu, &foreign),
            }
            let mut c = w.consumer(verb, "eu", SecretsVia::Files, "info");
            assert_stops_naming(&mut c, r, wrong);
            if verb == "run" {
                assert!(
                    c.log_text().contains("mirror failed, so run stops"),
                    "{}",
                    c.log_text()
                );
            }
            let who = format!("consumer {verb} with {}", r.what);
            assert_not_created(&s.eu, &w.sf_topic, &who);
            w.sf.kafka = good_sf.clone();
            w.eu.kafka = good_eu.clone();
        }
    }
    drop_database_both(&db).await;
}
