//! Snapshot requests: the table `continuum.snapshot_request` on a source, where an operator's
//! `continuum-producer snapshot --table db.t` (or `continuum-consumer verify --repair`) queues a
//! request, and the running producer of the named topic takes it (`producer/src/request.rs`).
//!
//! - A request names tables; [`check_tables`] refuses, with the reason, a table that is not
//!   `db.table`, does not exist, is not captured by `producer.include`/`exclude` (when the
//!   producer's filter is known), is not InnoDB, or has no primary key. The verbs check before
//!   they queue; the producer checks again when it takes the request, and records a refusal in
//!   the request's `error` column.
//! - A request may name key ranges of its tables ([`KeyRange`], the `ranges` column):
//!   `verify --repair` asks for the chunks that differ, not whole tables.
//! - A request is for one changelog topic: several producers may capture one server, each into
//!   its own topic with its own tables, and each takes only its own topic's requests.
//! - What the producer has done of a request is in the topic, not here: this table only says
//!   what was asked, and for the operator, when it started, how many rows are written, and when
//!   it was done.
//! - `continuum` is Continuum's own schema, never captured, so these writes never reach a topic.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use continuum_schemas::KeyPart;
use serde::{Deserialize, Serialize};

use crate::filter::TableFilter;

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("MariaDB {target}: {source}")]
    Db {
        target: String,
        #[source]
        source: mysql_async::Error,
    },
    /// The request cannot be made or found; the message says why.
    #[error("{0}")]
    Refused(String),
}

impl RequestError {
    pub fn is_transient(&self) -> bool {
        match self {
            RequestError::Db { source, .. } => crate::db::is_transient(source),
            RequestError::Refused(_) => false,
        }
    }
}

trait Db<T> {
    fn db(self, target: &str) -> Result<T, RequestError>;
}

impl<T> Db<T> for Result<T, mysql_async::Error> {
    fn db(self, target: &str) -> Result<T, RequestError> {
        self.map_err(|source| RequestError::Db {
            target: target.to_owned(),
            source,
        })
    }
}

pub const CREATE: [&str; 2] = [
    "CREATE DATABASE IF NOT EXISTS continuum",
    "CREATE TABLE IF NOT EXISTS continuum.snapshot_request (\
       id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, \
       topic VARCHAR(249) NOT NULL COMMENT 'the changelog topic of the producer that takes it', \
       tables TEXT NOT NULL COMMENT 'db.table of each table, comma-separated', \
       requested_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), \
       snapshot_id VARCHAR(64) NULL, \
       started_at DATETIME(3) NULL, \
       rows_done BIGINT UNSIGNED NOT NULL DEFAULT 0, \
       done_at DATETIME(3) NULL, \
       error TEXT NULL, \
       ranges MEDIUMTEXT NULL COMMENT 'the key range of each entry of tables, as JSON; NULL: whole tables'\
       , KEY pending (topic, done_at)\
     ) ENGINE=InnoDB COMMENT 'continuum-producer snapshot requests (docs/snapshot.md)'",
];

/// Creates the request table, and adds the `ranges` column to one made by a version without
/// key ranges (which needs `ALTER` on `continuum`, once).
pub async fn create(conn: &mut Conn, target: &str) -> Result<(), RequestError> {
    for sql in CREATE {
        conn.query_drop(sql).await.db(target)?;
    }
    let has_ranges: Option<u64> = conn
        .query_first(
            "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'continuum' AND TABLE_NAME = 'snapshot_request' AND COLUMN_NAME = 'ranges'",
        )
        .await
        .db(target)?;
    if has_ranges == Some(0) {
        conn.query_drop(
            "ALTER TABLE continuum.snapshot_request ADD COLUMN ranges MEDIUMTEXT NULL COMMENT 'the key range of each entry of tables, as JSON; NULL: whole tables'",
        )
        .await
        .db(target)?;
    }
    Ok(())
}

/// A queued request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: u64,
    /// `db.table` of each entry; a table appears once per key range when `ranges` is not empty.
    pub tables: Vec<String>,
    /// The key range of each entry of `tables`; empty: whole tables.
    pub ranges: Vec<KeyRange>,
}

/// A range of a table's primary key: the keys after `from` (exclusive) up to `to` (inclusive),
/// in the key's order; `None` leaves that side open. Bounds are the raw values MariaDB returned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRange {
    pub from: Option<Vec<KeyPart>>,
    pub to: Option<Vec<KeyPart>>,
}

impl KeyRange {
    /// The whole table.
    pub fn whole(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }
}

/// `ranges` as stored in the `ranges` column: `None` (SQL NULL) when every range is a whole table.
pub fn ranges_column(ranges: &[KeyRange]) -> Option<String> {
    match ranges.iter().all(KeyRange::whole) {
        true => None,
        false => Some(serde_json::to_string(ranges).expect("key ranges serialise")),
    }
}

/// Reads the `ranges` column of request `id` with `tables` entries.
pub fn parse_ranges(
    id: u64,
    tables: usize,
    column: Option<&str>,
) -> Result<Vec<KeyRange>, RequestError> {
    let Some(text) = column else {
        return Ok(Vec::new());
    };
    let ranges: Vec<KeyRange> = serde_json::from_str(text).map_err(|e| {
        RequestError::Refused(format!(
            "snapshot request {id}: its ranges column is not a JSON array of key ranges ({e})"
        ))
    })?;
    if ranges.len() != tables {
        return Err(RequestError::Refused(format!(
            "snapshot request {id} names {tables} tables but {} key ranges; it needs one range per table",
            ranges.len()
        )));
    }
    Ok(ranges)
}

/// How a request ended, as the producer recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Done { rows: u64 },
    Failed { rows: u64, error: String },
}

/// Splits the `tables` column (or the verb's list) into `db.table` names.
pub fn split(tables: &str) -> Vec<String> {
    tables
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Why each of `tables` cannot be snapshotted incrementally; empty if every one can. Capture is
/// checked only with the producer's `filter`.
pub async fn check_tables(
    conn: &mut Conn,
    target: &str,
    filter: Option<&TableFilter>,
    tables: &[String],
) -> Result<Vec<String>, RequestError> {
    let mut refused = Vec::new();
    if tables.is_empty() {
        refused.push("no table is named".to_owned());
    }
    for t in tables {
        let Some((d, n)) = t.split_once('.') else {
            refused.push(format!("'{t}' is not db.table"));
            continue;
        };
        if filter.is_some_and(|f| !f.captures(d, n)) {
            refused.push(format!(
                "{t} is not captured (producer.include / producer.exclude, or a system schema)"
            ));
            continue;
        }
        let engine: Option<(String, Option<String>)> = conn
            .exec_first(
                "SELECT TABLE_TYPE, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (d, n),
            )
            .await
            .db(target)?;
        match engine {
            None => {
                refused.push(format!("{t} does not exist on the source"));
                continue;
            }
            Some((ty, _)) if ty != "BASE TABLE" => {
                refused.push(format!("{t} is a {ty}, not a table"));
                continue;
            }
            Some((_, e))
                if !e
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case("InnoDB")) =>
            {
                refused.push(format!(
                    "{t} is not InnoDB ({}), so it has no consistent snapshot",
                    e.unwrap_or_default()
                ));
                continue;
            }
            Some(_) => {}
        }
        let pk: Vec<(String, String)> = conn
            .exec(
                "SELECT k.COLUMN_NAME, c.DATA_TYPE FROM information_schema.KEY_COLUMN_USAGE k \
                 JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = k.TABLE_SCHEMA AND c.TABLE_NAME = k.TABLE_NAME AND c.COLUMN_NAME = k.COLUMN_NAME \
                 WHERE k.TABLE_SCHEMA = ? AND k.TABLE_NAME = ? AND k.CONSTRAINT_NAME = 'PRIMARY' ORDER BY k.ORDINAL_POSITION",
                (d, n),
            )
            .await
            .db(target)?;
        if pk.is_empty() {
            refused.push(format!(
                "{t} has no primary key, so it cannot be read in key ranges"
            ));
        }
        for (column, ty) in &pk {
            if let Some(why) = unordered_key_type(ty) {
                refused.push(format!(
                    "{t} cannot be read in key ranges: its primary-key column {column} is {ty}, {why}"
                ));
            }
        }
    }
    Ok(refused)
}

/// Why a primary-key column of data type `ty` (`information_schema.COLUMNS.DATA_TYPE`) cannot
/// bound key ranges: a range `(pk) > (?)` must select exactly the keys after `?` in the key's
/// own order, on both sites, and a chunk's end keeps its rows' keys by equality with their
/// values as written. `None`: it can.
pub fn unordered_key_type(ty: &str) -> Option<&'static str> {
    match ty.to_ascii_lowercase().as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "double" | "char"
        | "varchar" | "binary" | "varbinary" | "date" | "datetime" | "timestamp" | "time"
        | "year" => None,
        "enum" | "set" => Some("which sorts by member number but compares to a bound by text"),
        "decimal" | "numeric" => {
            Some("which MariaDB compares to a bound as a double, losing digits")
        }
        "float" => Some("whose single-precision values do not compare equal to their decimal form"),
        "bit" => Some("which compares to a bound as text, not as a number"),
        _ => Some("a type whose order Continuum does not bound keys by"),
    }
}

/// Queues a request for `tables` (after [`check_tables`]) for the producer of `topic`; returns
/// its id. `ranges`: the key range of each entry of `tables` (empty: whole tables). Refuses on a
/// read-only source: its rows came from elsewhere (see `snapshot::mark_start`).
pub async fn submit(
    conn: &mut Conn,
    target: &str,
    topic: &str,
    filter: Option<&TableFilter>,
    tables: &[String],
    ranges: &[KeyRange],
) -> Result<u64, RequestError> {
    if !ranges.is_empty() && ranges.len() != tables.len() {
        return Err(RequestError::Refused(format!(
            "a snapshot request needs one key range per table: {} tables, {} ranges",
            tables.len(),
            ranges.len()
        )));
    }
    let read_only: Option<u8> = conn.query_first("SELECT @@read_only").await.db(target)?;
    if read_only.unwrap_or(0) != 0 {
        return Err(RequestError::Refused(format!(
            "{target} is read_only (a replica): its rows came from the other site, and a snapshot would send them back there. Request the snapshot at the primary's site"
        )));
    }
    let mut distinct = tables.to_vec();
    distinct.sort();
    distinct.dedup();
    let refused = check_tables(conn, target, filter, &distinct).await?;
    if !refused.is_empty() {
        return Err(RequestError::Refused(format!(
            "cannot snapshot: {}",
            refused.join("; ")
        )));
    }
    create(conn, target).await?;
    conn.exec_drop(
        "INSERT INTO continuum.snapshot_request (topic, tables, ranges) VALUES (?, ?, ?)",
        (topic, tables.join(","), ranges_column(ranges)),
    )
    .await
    .db(target)?;
    Ok(conn.last_insert_id().unwrap_or(0))
}

/// Whether a MariaDB error says the request table (or its schema) is not there.
pub fn no_table(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(se) if se.code == 1146 || se.code == 1049)
}

/// Waits until request `id` has ended, polling every half second, for at most `timeout`.
/// `Ok(None)`: not ended in time.
pub async fn wait(
    conn: &mut Conn,
    target: &str,
    id: u64,
    timeout: Duration,
) -> Result<Option<Ended>, RequestError> {
    let start = Instant::now();
    loop {
        let row: Option<(Option<String>, u64, Option<String>)> = conn
            .exec_first(
                "SELECT CAST(done_at AS CHAR), rows_done, error FROM continuum.snapshot_request WHERE id = ?",
                (id,),
            )
            .await
            .db(target)?;
        match row {
            None => {
                return Err(RequestError::Refused(format!(
                    "snapshot request {id} is not in continuum.snapshot_request on {target}"
                )))
            }
            Some((Some(_), rows, None)) => return Ok(Some(Ended::Done { rows })),
            Some((Some(_), rows, Some(error))) => return Ok(Some(Ended::Failed { rows, error })),
            Some((None, _, _)) => {}
        }
        if start.elapsed() >= timeout {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_key_types_whose_order_bounds_compare_in_are_taken() {
        for ok in [
            "int",
            "BIGINT",
            "varchar",
            "varbinary",
            "datetime",
            "timestamp",
            "double",
        ] {
            assert_eq!(unordered_key_type(ok), None, "{ok}");
        }
        for bad in [
            "enum", "set", "decimal", "float", "bit", "inet6", "uuid", "blob", "text",
        ] {
            assert!(unordered_key_type(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn key_ranges_are_stored_only_when_one_is_not_a_whole_table() {
        let whole = KeyRange::default();
        assert_eq!(ranges_column(&[whole.clone(), whole.clone()]), None);
        let part = KeyRange {
            from: Some(vec![KeyPart::Int(10)]),
            to: None,
        };
        let text = ranges_column(&[whole.clone(), part.clone()]).unwrap();
        assert_eq!(
            parse_ranges(1, 2, Some(&text)).unwrap(),
            vec![whole, part.clone()]
        );
        assert!(
            parse_ranges(1, 3, Some(&text)).is_err(),
            "one range per table"
        );
        assert!(parse_ranges(1, 1, Some("[{\"from\":1}]")).is_err());
        assert!(parse_ranges(1, 5, None).unwrap().is_empty());
    }

    #[test]
    fn the_tables_column_splits_into_names() {
        assert_eq!(split("a.b, c.d,,"), vec!["a.b", "c.d"]);
        assert!(split("").is_empty());
    }
}
