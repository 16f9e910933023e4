//! [`TestSite`]: one test's Continuum site — its site config (the TOML that
//! `continuum_common::SiteConfig` reads), its database and its changelog topic — in place of a
//! hand-written TOML per suite.
//!
//! The config is a TOML table built from the stack's addresses ([`crate::stack`]) and changed
//! with [`TestSite::set`] and friends; [`TestSite::write`] checks it parses as a `SiteConfig`
//! (whose sections deny unknown fields) before it writes the file, so a misspelt setting fails
//! the test that wrote it, not the binary it starts.
//!
//! ```no_run
//! # use continuum_tests::{stack, TestSite};
//! let mut site = TestSite::new(&stack().sf, "p_snap");
//! site.set("producer.include", vec![format!("{}.*", site.db)]);
//! let config = site.write();
//! ```

use std::path::PathBuf;

use continuum_common::SiteConfig;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use toml::{Table, Value};

use crate::{stack, unique_name, Site};

/// One test's site: `site` of the stack, a database and a topic no other test uses, and a
/// directory of its own for the config and the logs of the processes the test starts.
#[derive(Clone, Debug)]
pub struct TestSite {
    /// The stack site this config is for (`site = "<name>"`, its `[database]`).
    pub site: Site,
    /// The test's database (see [`unique_name`]); not created until [`TestSite::create_database`].
    pub db: String,
    /// The changelog topic: `sites.sf.topic`, the SF changelog every suite reads or writes.
    pub topic: String,
    /// Where [`TestSite::write`] writes, and where the test's processes log.
    pub dir: PathBuf,
    /// Whether database logins carry their password and TLS in the file (see
    /// [`TestSite::self_contained`]).
    secrets_in_file: bool,
    toml: Table,
}

impl TestSite {
    /// A config for `site` of the local stack, with a database name and a topic made from
    /// `prefix`:
    ///
    /// - `[database]`: the site's MariaDB, as the `continuum` login; its password (and TLS) come
    ///   from the environment the binaries are started with (`CONTINUUM_DB_PASSWORD`,
    ///   `CONTINUUM_DB_TLS_CA_FILE`), unless [`TestSite::self_contained`];
    /// - `[sites.sf]` and `[sites.eu]`: both clusters and registries; `sites.sf.topic` is
    ///   [`TestSite::topic`];
    /// - `producer.metrics_listen` and `consumer.metrics_listen` on a port of the system's
    ///   choosing, so that tests running at once do not collide.
    pub fn new(site: &Site, prefix: &str) -> TestSite {
        let db = unique_name(prefix);
        let topic = format!("{db}.changes");
        let dir = std::env::temp_dir().join("continuum-tests").join(&db);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let s = stack();
        let mut t = TestSite {
            site: site.clone(),
            db,
            topic,
            dir,
            secrets_in_file: false,
            toml: Table::new(),
        };
        t.set("site", site.name);
        t.set("database", t.login(site));
        for cluster in [&s.sf, &s.eu] {
            let mut c = Table::new();
            c.insert("brokers".into(), cluster.brokers.clone().into());
            c.insert(
                "registry".into(),
                table([("url", &cluster.registry)]).into(),
            );
            t.set(&format!("sites.{}", cluster.name), c);
        }
        t.set("sites.sf.topic", t.topic.clone());
        t.set("producer.metrics_listen", "127.0.0.1:0");
        t.set("consumer.metrics_listen", "127.0.0.1:0");
        t
    }

    /// Puts every database login's password and the stack's MariaDB TLS into the file, for
    /// commands started with none of the caller's `CONTINUUM_*` settings: the file is then the
    /// whole truth. (Done for the logins already set and those set later.)
    pub fn self_contained(&mut self) -> &mut Self {
        self.secrets_in_file = true;
        self.set("database", self.login(&self.site.clone()));
        let others: Vec<Site> = [&stack().sf, &stack().eu]
            .into_iter()
            .filter(|s| self.get(&format!("sites.{}.database", s.name)).is_some())
            .cloned()
            .collect();
        for other in others {
            self.with_database_of(&other);
        }
        self
    }

    /// Adds `sites.<other>.database`, the other site's MariaDB as the `continuum` login, for the
    /// verbs that look at it from here (`verify`, `orphans`). Without [`TestSite::self_contained`]
    /// its password comes from `CONTINUUM_<OTHER>_DB_PASSWORD`.
    pub fn with_database_of(&mut self, other: &Site) -> &mut Self {
        let login = self.login(other);
        self.set(&format!("sites.{}.database", other.name), login)
    }

    /// Sets the value at a dotted path (`producer.server_id`, `consumer.apply.batch_rows`),
    /// creating the tables on the way. For a key with dots in it, see [`TestSite::set_key`].
    pub fn set(&mut self, path: &str, value: impl Into<Value>) -> &mut Self {
        let (table, key) = path.rsplit_once('.').unwrap_or(("", path));
        self.set_key(table, key, value)
    }

    /// Sets `key` (taken whole, dots and all) in the table at the dotted path `table` (`""`:
    /// the top level), creating the tables on the way, e.g.
    /// `set_key("sites.sf.kafka_options", "queue.buffering.max.kbytes", "16384")`.
    pub fn set_key(&mut self, table: &str, key: &str, value: impl Into<Value>) -> &mut Self {
        let mut t = &mut self.toml;
        for p in table.split('.').filter(|p| !p.is_empty()) {
            t = t
                .entry(p)
                .or_insert_with(|| Table::new().into())
                .as_table_mut()
                .unwrap_or_else(|| panic!("{p} of {table} is not a table"));
        }
        t.insert(key.to_owned(), value.into());
        self
    }

    /// Removes the value at a dotted path, if set: back to Continuum's default.
    pub fn unset(&mut self, path: &str) -> &mut Self {
        let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
        let table = if parent.is_empty() {
            Some(&mut self.toml)
        } else {
            parent
                .split('.')
                .try_fold(&mut self.toml, |t, p| t.get_mut(p)?.as_table_mut())
        };
        if let Some(t) = table {
            t.remove(key);
        }
        self
    }

    /// Sets every `key = value` line of `settings` (TOML) in the table at `section`, e.g.
    /// `settings("consumer.apply", "batch_rows = 10\nbatch_wait = \"5ms\"")`.
    pub fn settings(&mut self, section: &str, settings: &str) -> &mut Self {
        let parsed: Table = settings
            .parse()
            .unwrap_or_else(|e| panic!("settings for [{section}]: {e}\n{settings}"));
        for (k, v) in parsed {
            self.set(&format!("{section}.{k}"), v);
        }
        self
    }

    /// The value at a dotted path, if set.
    pub fn get(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut v = self.toml.get(parts.next()?)?;
        for p in parts {
            v = v.as_table()?.get(p)?;
        }
        Some(v)
    }

    /// The config's text.
    pub fn toml(&self) -> String {
        toml::to_string(&self.toml).expect("a TOML table serializes")
    }

    /// The config as Continuum reads it (no environment applied); panics, saying why, if it
    /// does not parse, e.g. a setting `SiteConfig` does not know.
    pub fn config(&self) -> SiteConfig {
        let text = self.toml();
        SiteConfig::from_toml(&text)
            .unwrap_or_else(|e| panic!("the test's site config does not parse: {e}\n{text}"))
    }

    /// Checks the config parses ([`TestSite::config`]) and writes it to
    /// `<dir>/<site>.toml`; returns that path. Call it again after a change.
    pub fn write(&self) -> PathBuf {
        self.config();
        self.write_unchecked()
    }

    /// Writes the config as it is, unchecked, where [`TestSite::write`] would: for a test of a
    /// config Continuum must refuse.
    pub fn write_unchecked(&self) -> PathBuf {
        let path = self.config_path();
        std::fs::write(&path, self.toml())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// Where [`TestSite::write`] writes.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(format!("{}.toml", self.site.name))
    }

    /// A file of [`TestSite::dir`], e.g. a process's log.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates the test's database on `on` (the admin login; written to that server's binlog
    /// like any client's) and runs `ddl` in it; returns the connection, in the database.
    pub async fn create_database(&self, on: &Site, ddl: &[&str]) -> Conn {
        let mut c = on.admin_conn().await;
        c.query_drop(format!("CREATE DATABASE `{}`", self.db))
            .await
            .unwrap_or_else(|e| panic!("{}: CREATE DATABASE {}: {e}", on.name, self.db));
        c.query_drop(format!("USE `{}`", self.db)).await.unwrap();
        execute(&mut c, ddl).await;
        c
    }

    /// Creates [`TestSite::topic`] on `on`'s cluster (see [`Site::create_topic`]).
    pub async fn create_topic(&self, on: &Site, partitions: i32) {
        on.create_topic(&self.topic, partitions).await
    }

    /// Removes the test's directory (config and logs).
    pub fn remove_dir(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// `{ host, port, user }` of `site`'s `continuum` login, with its password and TLS when the
    /// file is self-contained.
    fn login(&self, site: &Site) -> Value {
        let mut t = Table::new();
        t.insert("host".into(), site.db_host.clone().into());
        t.insert("port".into(), i64::from(site.db_port).into());
        t.insert("user".into(), site.db_user.clone().into());
        if self.secrets_in_file {
            t.insert("password".into(), site.db_password.clone().into());
            if let Some(ca) = std::env::var("STACK_TLS_CA").ok().filter(|v| !v.is_empty()) {
                t.insert("tls".into(), table([("ca_file", &ca)]).into());
            }
        }
        t.into()
    }
}

/// Runs `statements` in order on `conn` (a connection or a transaction); panics naming the one that fails.
pub async fn execute(conn: &mut impl Queryable, statements: &[impl AsRef<str>]) {
    for sql in statements {
        let sql = sql.as_ref();
        conn.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

fn table<'a>(entries: impl IntoIterator<Item = (&'a str, &'a String)>) -> Table {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::from(v.clone())))
        .collect()
}
