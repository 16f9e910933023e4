//! Runs one schema change on the replica, on a connection of its own (a DDL statement commits
//! by itself in MariaDB, so it can never join the batch's transaction).
//!
//! Guarantees: a schema change runs in its database's context; one whose effect is already in
//! place (apply crashed after the DDL and before the checkpoint past it committed, so it runs
//! again) counts as applied; anything else MariaDB refuses stops apply with the statement and
//! the reason.

use continuum_schemas::SchemaChange;
use mysql_async::prelude::*;
use mysql_async::Opts;

use crate::error::{ApplyError, RecordContext, Result};
use crate::metrics as m;
use crate::writer;

/// MariaDB errors that mean a schema change's effect is already present.
pub const DDL_ALREADY_DONE: &[(u16, &str)] = &[
    (1007, "database exists"),
    (1008, "database does not exist"),
    (1050, "table exists"),
    (1051, "unknown table"),
    (1060, "duplicate column"),
    (1061, "duplicate key name"),
    (1068, "multiple primary key"),
    (1091, "cannot drop: no such column or key"),
    (1826, "duplicate foreign key constraint name"),
    (4092, "unknown sequence"),
    (1359, "trigger exists"),
    (1360, "trigger does not exist"),
    (1304, "routine exists"),
    (1305, "routine does not exist"),
];

/// Runs `sc` on the replica `target`.
pub async fn run(
    opts: &Opts,
    target: &str,
    at: Box<RecordContext>,
    sc: &SchemaChange,
) -> Result<()> {
    let mut conn = writer::connect(opts, target).await?;
    let db_err = |what: &str, source| ApplyError::Db {
        target: target.to_owned(),
        what: what.to_owned(),
        source,
    };
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
    let _ = conn.disconnect().await;
    match r {
        Ok(()) => {
            tracing::info!(offset = at.offset, gtid = %at.gtid, ddl = %sc.ddl, "schema change applied");
            m::ddl("applied");
            Ok(())
        }
        Err(mysql_async::Error::Server(e))
            if DDL_ALREADY_DONE.iter().any(|(c, _)| *c == e.code) =>
        {
            let why = DDL_ALREADY_DONE
                .iter()
                .find(|(c, _)| *c == e.code)
                .map(|(_, w)| *w)
                .unwrap_or("");
            tracing::warn!(offset = at.offset, gtid = %at.gtid, ddl = %sc.ddl, code = e.code, error = %e.message,
                "schema change already in effect ({why}); counted as applied");
            m::ddl("already_applied");
            Ok(())
        }
        Err(e) if crate::error::db_error_is_transient(&e) => {
            Err(db_err("running a schema change", e))
        }
        Err(e) => Err(ApplyError::Ddl {
            at,
            target: target.to_owned(),
            ddl: sc.ddl.clone(),
            reason: e.to_string(),
        }),
    }
}
