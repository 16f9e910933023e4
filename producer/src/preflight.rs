//! Preflight: before streaming, check the source and refuse with a message that names the
//! setting, the expected and actual values, and the fix. Checked: binary log on, `binlog_format`,
//! `binlog_row_image`, `binlog_row_metadata`, no binlog compression, the privileges the producer
//! needs, a replica `server_id` that clashes with nothing, and primary keys on captured tables.

use std::collections::HashSet;

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use continuum_common::config::NoPrimaryKey;

use crate::error::{DbContext, ProducerError};
use crate::shape::Charsets;
use continuum_common::filter::TableFilter;

/// What the rest of the producer needs to know about the source.
#[derive(Debug, Clone)]
pub struct SourceFacts {
    pub server_id: u32,
    pub crc32: bool,
    /// `@@read_only`: the server is a replica, and its data originated elsewhere.
    pub read_only: bool,
    pub charsets: Charsets,
}

/// The global privileges the producer needs, and why.
pub const REQUIRED_PRIVILEGES: &[(&str, &str)] = &[
    ("REPLICATION SLAVE", "to read the binlog as a replica"),
    (
        "BINLOG MONITOR",
        "to read binlog positions (SHOW BINLOG STATUS, binlog_snapshot_*)",
    ),
    (
        "REPLICATION MASTER ADMIN",
        "to list the source's replicas (SHOW SLAVE HOSTS) and check the server_id",
    ),
    ("SELECT", "to read tables for the snapshot"),
];

fn expect(setting: &str, actual: &str, expected: &str, fix: &str) -> Result<(), ProducerError> {
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ProducerError::Preflight {
            setting: setting.into(),
            expected: expected.into(),
            actual: actual.into(),
            fix: fix.into(),
        })
    }
}

pub async fn check(
    conn: &mut Conn,
    target: &str,
    our_server_id: u32,
    filter: &mut TableFilter,
    no_pk: NoPrimaryKey,
) -> Result<SourceFacts, ProducerError> {
    /// log_bin, binlog_format, binlog_row_image, binlog_row_metadata, server_id,
    /// log_bin_compress, binlog_checksum, read_only.
    type Settings = (String, String, String, String, u32, String, String, u8);
    let row: Option<Settings> = conn
        .query_first(
            "SELECT CAST(@@log_bin AS CHAR), @@binlog_format, @@binlog_row_image, @@binlog_row_metadata, @@server_id, \
             CAST(@@log_bin_compress AS CHAR), @@binlog_checksum, @@read_only",
        )
        .await
        .db(target)?;
    let (log_bin, format, image, metadata, server_id, compress, checksum, read_only) =
        row.ok_or_else(|| ProducerError::Binlog("the server returned no settings".into()))?;
    let restart =
        "set it in the server's configuration ([mariadbd] section) and restart the server";
    expect(
        "log_bin",
        if log_bin == "1" || log_bin.eq_ignore_ascii_case("ON") {
            "ON"
        } else {
            "OFF"
        },
        "ON",
        &format!("enable the binary log (log_bin): {restart}"),
    )?;
    expect(
        "binlog_format",
        &format,
        "ROW",
        "SET GLOBAL binlog_format=ROW (and in the server config)",
    )?;
    expect(
        "binlog_row_image",
        &image,
        "FULL",
        "SET GLOBAL binlog_row_image=FULL (and in the server config)",
    )?;
    expect(
        "binlog_row_metadata",
        &metadata,
        "FULL",
        "SET GLOBAL binlog_row_metadata=FULL (and in the server config)",
    )?;
    expect(
        "log_bin_compress",
        if compress == "1" || compress.eq_ignore_ascii_case("ON") {
            "ON"
        } else {
            "OFF"
        },
        "OFF",
        "SET GLOBAL log_bin_compress=OFF",
    )?;

    // Privileges.
    let granted: Vec<String> = conn
        .query(
            // Only the current user's rows: a user with global SELECT sees everyone's.
            "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES \
             WHERE GRANTEE = CONCAT(\"'\", SUBSTRING_INDEX(CURRENT_USER(), '@', 1), \"'@'\", \
             SUBSTRING_INDEX(CURRENT_USER(), '@', -1), \"'\")",
        )
        .await
        .db(target)?;
    let granted: HashSet<String> = granted.into_iter().map(|p| p.to_uppercase()).collect();
    let all = granted.contains("ALL PRIVILEGES") || granted.contains("SUPER");
    let missing: Vec<String> = REQUIRED_PRIVILEGES
        .iter()
        .filter(|(p, _)| {
            let p = *p;
            !(all
                || granted.contains(p)
                || (p == "BINLOG MONITOR" && granted.contains("REPLICATION CLIENT")))
        })
        .map(|(p, why)| format!("{p} ({why})"))
        .collect();
    if !missing.is_empty() {
        let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.db(target)?;
        return Err(ProducerError::Preflight {
            setting: format!("privileges of {}", user.unwrap_or_default()),
            expected: REQUIRED_PRIVILEGES.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(", "),
            actual: format!("missing {}", missing.join("; ")),
            fix: "GRANT the missing privileges ON *.* to the producer's user (see README.md, 'Grants')".into(),
        });
    }

    // server_id clashes.
    if our_server_id == server_id {
        return Err(ProducerError::Preflight {
            setting: "producer.server_id".into(),
            expected: format!("a replica id different from the source's own server_id {server_id}"),
            actual: our_server_id.to_string(),
            fix: "choose another producer.server_id (CONTINUUM_PRODUCER_SERVER_ID)".into(),
        });
    }
    // A registration that goes away within the grace period was this producer's own binlog
    // connection, dropped by the session that just ended: the server forgets a replica only once
    // its dump thread notices the closed socket. One that stays is another replica.
    let grace = Duration::from_secs(30);
    let started = Instant::now();
    loop {
        let replicas: Vec<mysql_async::Row> = conn.query("SHOW SLAVE HOSTS").await.db(target)?;
        let taken = replicas
            .iter()
            .any(|r| r.get::<Option<u32>, _>("Server_id").flatten() == Some(our_server_id));
        if !taken {
            break;
        }
        if started.elapsed() >= grace {
            return Err(ProducerError::Preflight {
                setting: "producer.server_id".into(),
                expected: "an id no other replica of the source uses".into(),
                actual: format!("{our_server_id}, already registered by a replica of {target} (SHOW SLAVE HOSTS), still after {}s", grace.as_secs()),
                fix: "choose another producer.server_id (CONTINUUM_PRODUCER_SERVER_ID); two replicas with one id disconnect each other".into(),
            });
        }
        tracing::info!(server_id = our_server_id, "the source still lists a replica with this producer's server_id (a connection of a session that just ended, or another replica); looking again in a second");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Tables without a primary key.
    let no_key: Vec<(String, String)> = conn
        .query(
            "SELECT t.TABLE_SCHEMA, t.TABLE_NAME FROM information_schema.TABLES t \
             WHERE t.TABLE_TYPE = 'BASE TABLE' AND NOT EXISTS ( \
               SELECT 1 FROM information_schema.TABLE_CONSTRAINTS c \
               WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME AND c.CONSTRAINT_TYPE = 'PRIMARY KEY') \
             ORDER BY 1, 2",
        )
        .await
        .db(target)?;
    let captured: Vec<String> = no_key
        .into_iter()
        .filter(|(d, t)| filter.captures(d, t))
        .map(|(d, t)| format!("{d}.{t}"))
        .collect();
    if !captured.is_empty() {
        match no_pk {
            NoPrimaryKey::Replicate => {
                tracing::info!(tables = %captured.join(", "), "tables without a primary key are captured with full-row identity (tables_without_primary_key = replicate): apply matches their rows by every value")
            }
            NoPrimaryKey::Refuse => {
                return Err(ProducerError::NoPrimaryKey {
                    tables: captured.join(", "),
                })
            }
            NoPrimaryKey::Exclude => {
                tracing::warn!(tables = %captured.join(", "), "tables without a primary key are not captured (tables_without_primary_key = exclude)");
                for t in captured {
                    filter.exclude_table(t);
                }
            }
        }
    }

    let collations: Vec<(Option<u32>, Option<String>)> = conn
        .query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS")
        .await
        .db(target)?;
    let charsets = Charsets(
        collations
            .into_iter()
            .filter_map(|(id, cs)| Some((u16::try_from(id?).ok()?, cs?)))
            .collect(),
    );
    Ok(SourceFacts {
        server_id,
        crc32: checksum.eq_ignore_ascii_case("CRC32"),
        read_only: read_only != 0,
        charsets,
    })
}
