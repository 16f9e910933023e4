//! The replica's tables as apply sees them: which columns exist, which are generated, which
//! form the primary key. Each record's table shape (from its writer schema) is matched to the
//! target table by column name, once per shape, giving the statements that write it.
//!
//! Guarantees:
//! - a record column missing from the target table, a missing table, or a primary key that
//!   differs is reported before any SQL runs, as a mismatch naming the columns;
//! - generated columns of the target are never written (MariaDB computes them);
//! - target columns the record does not carry keep their defaults;
//! - foreign keys pointing at a table with a cascading action (CASCADE, SET NULL, SET DEFAULT)
//!   are found, so that apply lets InnoDB perform the action on the replica: MariaDB does not
//!   binlog the rows a cascade changes, only the parent's change;
//! - a table with triggers on the replica is refused, naming them: apply's statements would fire
//!   them, and the source's trigger effects already arrive as rows;
//! - the cache is dropped after every schema change apply runs, and each session starts with an
//!   empty one, so a trigger created on the replica is found at the next session or schema
//!   change.

use std::collections::HashMap;
use std::sync::Arc;

use continuum_schemas::TableSchema;
use mysql_async::prelude::*;
use mysql_async::Conn;

use crate::error::{ApplyError, Result};
use crate::sql::RowStatements;

#[derive(Debug)]
struct TargetTable {
    /// lower-case name → generated?
    columns: HashMap<String, bool>,
    /// Primary-key column names, lower case, in key order.
    pk: Vec<String>,
    /// Referenced by a foreign key with a cascading ON DELETE action.
    cascade_delete: bool,
    /// Columns (lower case) referenced by a foreign key with a cascading ON UPDATE action.
    cascade_update: Vec<String>,
    /// Triggers on the table, `name (TIMING EVENT)`.
    triggers: Vec<String>,
    /// Has a unique key besides the primary key.
    unique_keys: bool,
}

/// The statements for one record shape, and the record columns the target lacks (written only
/// while re-applying history: a later schema change dropped them).
#[derive(Clone)]
pub struct Planned {
    pub stmts: Arc<RowStatements>,
    pub missing: Vec<String>,
}

/// Matches record table shapes to target tables, caching both.
#[derive(Default)]
pub struct Targets {
    /// Keyed by the address of the decoder's shared `Arc<TableSchema>`; the Arc is kept so the
    /// address is never reused while cached.
    plans: HashMap<usize, (Arc<TableSchema>, Planned)>,
    tables: HashMap<(String, String), Option<Arc<TargetTable>>>,
    next_id: u64,
}

impl Targets {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything (after a schema change).
    pub fn invalidate(&mut self) {
        self.plans.clear();
        self.tables.clear();
    }

    /// The statements for rows of `shape`, if already known.
    pub fn cached(&self, shape: &Arc<TableSchema>) -> Option<Planned> {
        self.plans
            .get(&(Arc::as_ptr(shape) as usize))
            .map(|(_, p)| p.clone())
    }

    /// The statements for rows of `shape`, or `Ok(Err(reason))` if the target table does not
    /// match it. Record columns the target lacks are left out and listed in `missing`: the
    /// caller decides whether that is fatal ([`missing_columns_reason`]).
    pub async fn plan(
        &mut self,
        conn: &mut Conn,
        target: &str,
        shape: &Arc<TableSchema>,
    ) -> Result<std::result::Result<Planned, String>> {
        let key = Arc::as_ptr(shape) as usize;
        if let Some((_, p)) = self.plans.get(&key) {
            return Ok(Ok(p.clone()));
        }
        let table = self.table(conn, target, &shape.db, &shape.table).await?;
        let Some(table) = table else {
            return Ok(Err(format!(
                "table {}.{} does not exist on the replica; create it there with the source's definition (for example from `mariadb-dump --no-data`)",
                shape.db, shape.table
            )));
        };
        // A trigger on the replica would fire on apply's statements (REPLACE fires DELETE and
        // INSERT triggers), while what the source's triggers did is already in the changelog
        // as rows: their effects would happen twice. MariaDB cannot keep a statement's triggers
        // from firing, so apply refuses the table.
        if !table.triggers.is_empty() {
            return Ok(Err(format!(
                "the replica's table {}.{} has triggers: {}. Apply's statements would fire them, and what the source's triggers did already arrives as rows, so it would happen twice. Drop them on the replica (keep their definitions to create after a promotion, when this site takes writes), or exclude the table from the changelog",
                shape.db,
                shape.table,
                table.triggers.join(", ")
            )));
        }
        let missing: Vec<String> = shape
            .columns
            .iter()
            .filter(|c| !table.columns.contains_key(&c.name.to_lowercase()))
            .map(|c| c.name.clone())
            .collect();
        let record_pk: Vec<String> = shape
            .primary_key
            .iter()
            .map(|&i| shape.columns[i].name.to_lowercase())
            .collect();
        // A table without a primary key on both sides is written by full-row identity (see
        // RowStatements::keyless); on one side only, the rows cannot be matched.
        if record_pk.is_empty() != table.pk.is_empty() {
            return Ok(Err(format!(
                "{}.{} has no primary key on the {}, but has one ({}) on the {}; both sides must agree",
                shape.db,
                shape.table,
                if record_pk.is_empty() { "source" } else { "replica" },
                if record_pk.is_empty() { table.pk.join(", ") } else { record_pk.join(", ") },
                if record_pk.is_empty() { "replica" } else { "source" },
            )));
        }
        if let Some(c) = record_pk
            .iter()
            .find(|c| missing.iter().any(|m| m.to_lowercase() == **c))
        {
            return Ok(Err(missing_columns_reason(
                &shape.db,
                &shape.table,
                std::slice::from_ref(c),
            )));
        }
        if record_pk != table.pk {
            return Ok(Err(format!(
                "the replica's primary key of {}.{} is ({}) but the source's is ({}); apply writes rows by the source's key, so the two must agree",
                shape.db,
                shape.table,
                table.pk.join(", "),
                record_pk.join(", ")
            )));
        }
        let columns = shape
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| table.columns.get(&c.name.to_lowercase()) == Some(&false))
            .map(|(i, c)| (i, c.ty.clone(), c.name.clone()))
            .collect();
        let key_cols = shape
            .primary_key
            .iter()
            .map(|&i| {
                (
                    i,
                    shape.columns[i].ty.clone(),
                    shape.columns[i].name.clone(),
                )
            })
            .collect();
        self.next_id += 1;
        let mut p = RowStatements::new(self.next_id, &shape.db, &shape.table, columns, key_cols);
        p.cascade_delete = table.cascade_delete;
        p.cascade_update = table
            .cascade_update
            .iter()
            .filter_map(|c| {
                shape
                    .columns
                    .iter()
                    .position(|col| col.name.eq_ignore_ascii_case(c))
            })
            .collect();
        p.unique_keys = table.unique_keys;
        let p = Planned {
            stmts: Arc::new(p),
            missing,
        };
        self.plans.insert(key, (shape.clone(), p.clone()));
        Ok(Ok(p))
    }
}

/// Why records with columns the target lacks cannot be applied.
pub fn missing_columns_reason(db: &str, table: &str, missing: &[String]) -> String {
    format!(
        "the replica's table {db}.{table} has no column {}; the replica's schema differs from the source's. Add the column(s) on the replica (or replay the missing schema change), then restart apply",
        missing.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
    )
}

impl Targets {
    async fn table(
        &mut self,
        conn: &mut Conn,
        target: &str,
        db: &str,
        table: &str,
    ) -> Result<Option<Arc<TargetTable>>> {
        let k = (db.to_owned(), table.to_owned());
        if let Some(t) = self.tables.get(&k) {
            return Ok(t.clone());
        }
        let what = format!("reading the columns of {db}.{table} from information_schema");
        let err = |source| ApplyError::db(target, &what)(source);
        let cols: Vec<(String, String)> = conn
            .exec(
                "SELECT COLUMN_NAME, IS_GENERATED FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=? AND TABLE_NAME=? ORDER BY ORDINAL_POSITION",
                (db, table),
            )
            .await
            .map_err(err)?;
        let t = if cols.is_empty() {
            None
        } else {
            let keys: Vec<(String, String)> = conn
                .exec(
                    "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA=? AND TABLE_NAME=? AND NON_UNIQUE=0 ORDER BY INDEX_NAME, SEQ_IN_INDEX",
                    (db, table),
                )
                .await
                .map_err(err)?;
            let pk: Vec<String> = keys
                .iter()
                .filter(|(i, _)| i == "PRIMARY")
                .map(|(_, c)| c.clone())
                .collect();
            let unique_keys = keys.iter().any(|(i, _)| i != "PRIMARY");
            // Foreign keys that point at this table and make InnoDB change other rows.
            let fks: Vec<(String, String, String)> = conn
                .exec(
                    "SELECT rc.DELETE_RULE, rc.UPDATE_RULE, k.REFERENCED_COLUMN_NAME
                     FROM information_schema.REFERENTIAL_CONSTRAINTS rc
                     JOIN information_schema.KEY_COLUMN_USAGE k
                       ON k.CONSTRAINT_SCHEMA = rc.CONSTRAINT_SCHEMA AND k.CONSTRAINT_NAME = rc.CONSTRAINT_NAME
                      AND k.TABLE_NAME = rc.TABLE_NAME
                     WHERE rc.UNIQUE_CONSTRAINT_SCHEMA=? AND rc.REFERENCED_TABLE_NAME=?",
                    (db, table),
                )
                .await
                .map_err(err)?;
            let acts = |rule: &str| matches!(rule, "CASCADE" | "SET NULL" | "SET DEFAULT");
            let cascade_delete = fks.iter().any(|(d, _, _)| acts(d));
            let mut cascade_update: Vec<String> = fks
                .iter()
                .filter(|(_, u, _)| acts(u))
                .map(|(_, _, c)| c.to_lowercase())
                .collect();
            cascade_update.sort();
            cascade_update.dedup();
            let triggers: Vec<(String, String, String)> = conn
                .exec(
                    "SELECT TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION FROM information_schema.TRIGGERS \
                     WHERE EVENT_OBJECT_SCHEMA=? AND EVENT_OBJECT_TABLE=? ORDER BY TRIGGER_NAME",
                    (db, table),
                )
                .await
                .map_err(err)?;
            if cascade_delete || !cascade_update.is_empty() {
                tracing::info!(table = %format!("{db}.{table}"), cascade_delete, ?cascade_update,
                    "foreign keys with cascading actions point at this table: its deletes and key updates run with foreign-key checks on");
            }
            Some(Arc::new(TargetTable {
                columns: cols
                    .into_iter()
                    .map(|(n, g)| (n.to_lowercase(), g.eq_ignore_ascii_case("ALWAYS")))
                    .collect(),
                pk: pk.into_iter().map(|n| n.to_lowercase()).collect(),
                cascade_delete,
                cascade_update,
                triggers: triggers
                    .into_iter()
                    .map(|(n, t, e)| format!("{n} ({t} {e})"))
                    .collect(),
                unique_keys,
            }))
        };
        self.tables.insert(k, t.clone());
        Ok(t)
    }
}
