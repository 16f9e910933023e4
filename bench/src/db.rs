//! MariaDB helpers: connections, GTID positions, durability settings, the bench tables on the
//! targets, and table checksums to check every contestant ended with the source's rows.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use continuum_schemas::GtidPosition;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder};

/// Where one MariaDB listens and how the bench logs in (an admin login).
#[derive(Debug, Clone)]
pub struct Db {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl Db {
    pub fn opts(&self) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            .prefer_socket(false)
            .into()
    }

    pub async fn conn(&self) -> Result<Conn> {
        Conn::new(self.opts())
            .await
            .with_context(|| format!("connecting to {} ({}:{})", self.name, self.host, self.port))
    }
}

pub async fn var(c: &mut Conn, name: &str) -> Result<String> {
    let v: Option<Option<String>> = c
        .query_first(format!("SELECT CAST(@@{name} AS CHAR)"))
        .await?;
    Ok(v.flatten().unwrap_or_default())
}

pub async fn gtid_binlog_pos(c: &mut Conn) -> Result<GtidPosition> {
    let s = var(c, "gtid_binlog_pos").await?;
    s.parse()
        .with_context(|| format!("parsing gtid_binlog_pos {s:?}"))
}

/// The durability settings of a server, to restore them afterwards.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Durability {
    pub sync_binlog: String,
    pub innodb_flush_log_at_trx_commit: String,
}

impl Durability {
    pub fn strict() -> Durability {
        Durability {
            sync_binlog: "1".into(),
            innodb_flush_log_at_trx_commit: "1".into(),
        }
    }
    pub fn relaxed() -> Durability {
        Durability {
            sync_binlog: "0".into(),
            innodb_flush_log_at_trx_commit: "2".into(),
        }
    }
}

pub async fn durability(c: &mut Conn) -> Result<Durability> {
    Ok(Durability {
        sync_binlog: var(c, "sync_binlog").await?,
        innodb_flush_log_at_trx_commit: var(c, "innodb_flush_log_at_trx_commit").await?,
    })
}

pub async fn set_durability(c: &mut Conn, d: &Durability) -> Result<()> {
    c.query_drop(format!(
        "SET GLOBAL sync_binlog = {}, GLOBAL innodb_flush_log_at_trx_commit = {}",
        d.sync_binlog, d.innodb_flush_log_at_trx_commit
    ))
    .await
    .context("setting sync_binlog and innodb_flush_log_at_trx_commit")?;
    Ok(())
}

/// A SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn q(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `SHOW CREATE TABLE` of every table of `db` on the source, in order.
pub async fn table_definitions(c: &mut Conn, db: &str) -> Result<Vec<(String, String)>> {
    let tables: Vec<String> = c
        .exec("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME", (db,))
        .await?;
    let mut out = Vec::new();
    for t in tables {
        let row: Option<(String, String)> = c
            .query_first(format!("SHOW CREATE TABLE {}.{}", q(db), q(&t)))
            .await?;
        if let Some((_, ddl)) = row {
            out.push((t, ddl));
        }
    }
    Ok(out)
}

/// Re-creates `db` with empty tables on a target, outside its binlog (the target's state
/// before the backlog).
pub async fn recreate(c: &mut Conn, db: &str, defs: &[(String, String)]) -> Result<()> {
    c.query_drop("SET SESSION sql_log_bin = 0").await?;
    c.query_drop(format!("DROP DATABASE IF EXISTS {}", q(db)))
        .await?;
    c.query_drop(format!("CREATE DATABASE {} CHARACTER SET utf8mb4", q(db)))
        .await?;
    for (_, ddl) in defs {
        c.query_drop(format!("USE {}", q(db))).await?;
        c.query_drop(ddl.as_str()).await?;
    }
    c.query_drop("SET SESSION sql_log_bin = 1").await?;
    Ok(())
}

/// Rows and `CHECKSUM TABLE` per table of `db`.
pub async fn checksums(
    c: &mut Conn,
    db: &str,
    tables: &[String],
) -> Result<BTreeMap<String, (u64, u64)>> {
    let mut out = BTreeMap::new();
    for t in tables {
        let n: Option<u64> = c
            .query_first(format!("SELECT COUNT(*) FROM {}.{}", q(db), q(t)))
            .await?;
        let s: Option<(String, Option<u64>)> = c
            .query_first(format!("CHECKSUM TABLE {}.{}", q(db), q(t)))
            .await?;
        out.insert(
            t.clone(),
            (n.unwrap_or(0), s.and_then(|x| x.1).unwrap_or(0)),
        );
    }
    Ok(out)
}

/// The bench's own tables for the steady state's lag probes, written by the bench alone.
pub const PROBE_TABLES: [&str; 2] = ["heartbeat", "heartbeat_fill"];

/// The names of the load tables (everything but the probe tables).
pub fn load_tables(defs: &[(String, String)]) -> Vec<String> {
    defs.iter()
        .map(|(t, _)| t.clone())
        .filter(|t| !PROBE_TABLES.contains(&t.as_str()))
        .collect()
}

/// The stack's MariaDB TLS (`STACK_TLS_CA` in `.stack/env`) as a `[database]` line of a site
/// config, or nothing for a stack without TLS. The bench's own connections are root's, which
/// needs none.
pub fn tls_toml(ca: Option<&str>) -> String {
    match ca {
        Some(ca) => format!("tls = {{ ca_file = \"{ca}\" }}"),
        None => String::new(),
    }
}

/// Where EU's checkpoint row for `topic` (partition 0) says apply has reached, if it has one.
pub async fn checkpoint_position(eu: &Db, topic: &str) -> Result<Option<String>> {
    let mut c = eu.conn().await?;
    let r: Result<Option<String>, _> = c
        .exec_first("SELECT gtid_position FROM continuum.checkpoint WHERE source_topic = ? AND `partition` = 0", (topic,))
        .await;
    let _ = c.disconnect().await;
    Ok(r.unwrap_or(None))
}

/// The next offset apply's checkpoint at EU names for `topic`, if it has one.
pub async fn checkpoint_offset(eu: &Db, topic: &str) -> Result<Option<i64>> {
    let mut c = eu.conn().await?;
    let r: Result<Option<i64>, _> = c
        .exec_first("SELECT next_offset FROM continuum.checkpoint WHERE source_topic = ? AND `partition` = 0", (topic,))
        .await;
    let _ = c.disconnect().await;
    Ok(r.unwrap_or(None))
}

/// Compares a target's bench tables with the source's checksums: whether they match, and
/// which differ.
pub async fn verify(
    target: &Db,
    database: &str,
    tables: &[String],
    source: &BTreeMap<String, (u64, u64)>,
) -> Result<(bool, String)> {
    let mut c = target.conn().await?;
    let got = checksums(&mut c, database, tables).await?;
    let _ = c.disconnect().await;
    let bad: Vec<String> = source
        .iter()
        .filter(|(t, v)| got.get(*t) != Some(v))
        .map(|(t, v)| format!("{t}: source {} rows/{}, target {:?}", v.0, v.1, got.get(t)))
        .collect();
    Ok((bad.is_empty(), bad.join("; ")))
}
