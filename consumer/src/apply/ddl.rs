//! Runs one schema change on the replica, on a connection of its own (a DDL statement commits
//! by itself in MariaDB, so it can never join the batch's transaction).
//!
//! Guarantees: a schema change runs in its database's context. One that MariaDB refuses counts
//! as applied only if the replica's schema shows every effect the statement has
//! ([`continuum_common::ddl::effects`]: the old name gone and the new one there for a rename, the
//! column there for an ADD, ...): that is the state a crash between the schema change and the
//! checkpoint past it leaves, and running it again must not stop apply. A statement whose effects
//! cannot be read from it, or whose effects are not all there, stops apply with the statement
//! and MariaDB's reason.

use continuum_common::ddl::{effects, Effect};
use continuum_schemas::SchemaChange;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

use crate::error::{ApplyError, RecordContext, Result};
use crate::metrics as m;
use crate::writer;

/// Runs `sc` on the replica `target`.
pub async fn run(
    opts: &Opts,
    target: &str,
    at: Box<RecordContext>,
    sc: &SchemaChange,
) -> Result<()> {
    let mut conn = writer::connect(opts, target).await?;
    let db_err = |what: &str, source| ApplyError::db(target, what)(source);
    if !sc.database.is_empty() {
        let use_db = format!("USE {}", crate::sql::ident(&sc.database));
        match conn.query_drop(use_db).await {
            Ok(()) => {}
            // The database may be what this very statement creates or drops.
            Err(mysql_async::Error::Server(e)) if e.code == 1049 => {
                tracing::info!(database = %sc.database, "the schema change's default database does not exist; running it without one");
            }
            Err(e) => return Err(db_err("selecting the schema change's database", e)),
        }
    }
    let r = conn.query_drop(sc.ddl.as_str()).await;
    let r = match r {
        Ok(()) => Ok(()),
        Err(e) if crate::error::db_error_is_transient(&e) => {
            let _ = conn.disconnect().await;
            return Err(db_err("running a schema change", e));
        }
        Err(e) => {
            // Refused: already in effect (run before a crash), or really refused?
            let done = match effects(&sc.ddl, &sc.database) {
                Some(list) => missing_effects(&mut conn, &list)
                    .await
                    .map_err(|e| db_err("reading the replica's schema", e))?,
                None => vec!["its effects cannot be read from the statement alone".into()],
            };
            Err((e, done))
        }
    };
    let _ = conn.disconnect().await;
    match r {
        Ok(()) => {
            tracing::info!(offset = at.offset, gtid = %at.gtid, ddl = %sc.ddl, "schema change applied");
            m::ddl("applied");
            Ok(())
        }
        Err((e, missing)) if missing.is_empty() => {
            tracing::warn!(offset = at.offset, gtid = %at.gtid, ddl = %sc.ddl, error = %e,
                "schema change already in effect: the replica's schema shows all it does; counted as applied");
            m::ddl("already_applied");
            Ok(())
        }
        Err((e, missing)) => Err(ApplyError::Ddl {
            at,
            target: target.to_owned(),
            ddl: sc.ddl.clone(),
            reason: format!(
                "{e}; it is not already in effect on the replica ({})",
                missing.join(", ")
            ),
        }),
    }
}

/// The effects the replica's schema does not show, described; empty if it shows them all.
async fn missing_effects(
    conn: &mut Conn,
    list: &[Effect],
) -> Result<Vec<String>, mysql_async::Error> {
    let mut missing = Vec::new();
    for e in list {
        let (want, what, sql, params): (bool, String, &str, Vec<String>) = match e {
            Effect::DatabaseExists(d) | Effect::DatabaseAbsent(d) => (
                matches!(e, Effect::DatabaseExists(_)),
                format!("database {d}"),
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                vec![d.clone()],
            ),
            Effect::TableExists(d, t) | Effect::TableAbsent(d, t) => (
                matches!(e, Effect::TableExists(..)),
                format!("table {d}.{t}"),
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                vec![d.clone(), t.clone()],
            ),
            Effect::ColumnExists(d, t, c) | Effect::ColumnAbsent(d, t, c) => (
                matches!(e, Effect::ColumnExists(..)),
                format!("column {c} of {d}.{t}"),
                "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND COLUMN_NAME = ?",
                vec![d.clone(), t.clone(), c.clone()],
            ),
            Effect::IndexExists(d, t, i) | Effect::IndexAbsent(d, t, i) => (
                matches!(e, Effect::IndexExists(..)),
                format!("index {i} of {d}.{t}"),
                "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = ?",
                vec![d.clone(), t.clone(), i.clone()],
            ),
            Effect::ForeignKeyExists(d, t, k) | Effect::ForeignKeyAbsent(d, t, k) => (
                matches!(e, Effect::ForeignKeyExists(..)),
                format!("foreign key {k} of {d}.{t}"),
                "SELECT COUNT(*) FROM information_schema.TABLE_CONSTRAINTS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = ? AND CONSTRAINT_TYPE = 'FOREIGN KEY'",
                vec![d.clone(), t.clone(), k.clone()],
            ),
        };
        let n: Option<u64> = conn.exec_first(sql, params).await?;
        let there = n.unwrap_or(0) > 0;
        if there != want {
            missing.push(if want {
                format!("{what} is not there")
            } else {
                format!("{what} is still there")
            });
        }
    }
    Ok(missing)
}
