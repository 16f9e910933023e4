//! SQL text for apply: quoted identifiers, value literals and the row statements.
//!
//! Guarantees:
//! - every literal is injection-proof whatever the session's `sql_mode`: strings go as
//!   `_utf8mb4 X'…'`, bytes as `X'…'`, numbers as digits, temporal values as quoted text made only
//!   of digits, `-`, `:`, `.` and spaces;
//! - every value a column can hold on the source is written back unchanged (see
//!   [`push_literal`] for the per-type rules, checked against MariaDB 10.11 in `tests/apply.rs`);
//! - consecutive row operations of the same table and kind are merged into one multi-row
//!   statement by [`StatementBuffer`], in order; nothing is reordered.

use std::fmt::Write as _;

use continuum_schemas::types::{format_time, DateTime};
use continuum_schemas::{ColumnType, Value};

/// A value that cannot be written as a literal (MariaDB cannot store it either).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {reason}")]
pub struct LiteralError {
    pub column: String,
    pub reason: String,
}

/// Quotes an identifier with backticks (one definition, in `common::db`).
pub use continuum_common::db::quote_ident as ident;

/// `` `db`.`table` ``.
pub fn qualified(db: &str, table: &str) -> String {
    format!("{}.{}", ident(db), ident(table))
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_hex(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2 + 3);
    out.push_str("X'");
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out.push('\'');
}

/// Appends `s` as a `_utf8mb4 X'…'` string literal.
pub fn push_literal_text(out: &mut String, s: &str) {
    out.push_str("_utf8mb4 ");
    push_hex(out, s.as_bytes());
}

/// A string literal for quoting into a single-quoted SQL string (callers only ever pass text made
/// of digits and punctuation, so no escaping is needed; this is asserted in debug builds).
fn push_quoted_plain(out: &mut String, s: &str) {
    debug_assert!(
        s.bytes()
            .all(|b| b.is_ascii_digit() || b"-:. ".contains(&b)),
        "{s}"
    );
    out.push('\'');
    out.push_str(s);
    out.push('\'');
}

/// Appends the SQL literal for `v`, a value of a column of type `ty`.
///
/// | value | literal |
/// |---|---|
/// | NULL | `NULL` |
/// | integers, YEAR, BIGINT UNSIGNED | decimal digits (`YEAR` 0 is the year 0000) |
/// | DECIMAL | its exact text, checked to be `-?digits[.digits]` |
/// | FLOAT, DOUBLE | shortest round-trip text of the value as a double, in exponent form (`1e-1`), so MariaDB reads an approximate value |
/// | BIT(n) | the unsigned integer of its big-endian bytes |
/// | DATE | `'YYYY-MM-DD'`, zero dates included (the session allows them) |
/// | DATETIME | `'YYYY-MM-DD HH:MM:SS.ffffff'` |
/// | TIMESTAMP | UTC micros as `'YYYY-MM-DD HH:MM:SS.ffffff'` (the session's time zone is `+00:00`); 0 is `'0000-00-00 00:00:00'` |
/// | TIME | `'-H:MM:SS.ffffff'` (signed, hours past 24) |
/// | text, ENUM, SET, JSON | `_utf8mb4 X'…'` |
/// | BINARY, VARBINARY, BLOB, INET4/6, UUID, GEOMETRY (SRID + WKB as MariaDB stores it) | `X'…'` |
pub fn push_literal(
    out: &mut String,
    v: &Value,
    ty: &ColumnType,
    column: &str,
) -> Result<(), LiteralError> {
    let bad = |reason: String| LiteralError {
        column: column.to_owned(),
        reason,
    };
    match v {
        Value::Null => out.push_str("NULL"),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        Value::Decimal(d) => {
            let body = d.strip_prefix('-').unwrap_or(d);
            let (int, frac) = body.split_once('.').unwrap_or((body, "0"));
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if !(digits(int) && digits(frac)) {
                return Err(bad(format!("'{d}' is not a decimal number")));
            }
            out.push_str(d);
        }
        Value::Float(f) => {
            if !f.is_finite() {
                return Err(bad(format!("{f} cannot be stored in a FLOAT column")));
            }
            // The float's exact value as a double: the shortest float text (3.4028235e38) can read
            // back above FLOAT's range as a double.
            let _ = write!(out, "{:e}", *f as f64);
        }
        Value::Double(f) => {
            if !f.is_finite() {
                return Err(bad(format!("{f} cannot be stored in a DOUBLE column")));
            }
            let _ = write!(out, "{f:e}");
        }
        Value::Date(d) => push_quoted_plain(out, &d.to_string()),
        Value::DateTime(dt) => push_quoted_plain(out, &dt.to_string()),
        Value::Timestamp(us) => {
            if *us == 0 {
                push_quoted_plain(out, "0000-00-00 00:00:00");
            } else if *us < 0 {
                return Err(bad(format!("TIMESTAMP {us} µs is before the epoch")));
            } else {
                push_quoted_plain(out, &DateTime::from_epoch_micros(*us).to_string());
            }
        }
        Value::Time(us) => push_quoted_plain(out, &format_time(*us)),
        Value::Text(s) => push_literal_text(out, s),
        Value::Bytes(b) => match ty {
            ColumnType::Bit { .. } => {
                if b.len() > 8 {
                    return Err(bad(format!("BIT value of {} bytes (at most 8)", b.len())));
                }
                let n = b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64);
                let _ = write!(out, "{n}");
            }
            _ => push_hex(out, b),
        },
    }
    Ok(())
}

/// What a [`StatementBuffer`] statement does; consecutive operations of the same kind on the same
/// table merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StmtKind {
    Replace,
    Delete,
    /// DELETE with foreign-key checks on (cascading actions run).
    DeleteChecked,
}

/// Turns foreign-key checks on for one statement; [`FK_OFF`] follows it.
pub const FK_ON: &str = "SET SESSION foreign_key_checks=1;\n";
pub const FK_OFF: &str = ";\nSET SESSION foreign_key_checks=0";

/// How to write rows of one table shape: the pieces of its statements, built once per shape.
#[derive(Debug)]
pub struct RowStatements {
    /// Identifies the shape for merging.
    pub id: u64,
    /// `REPLACE INTO `db`.`t` (`a`,`b`) VALUES `
    pub replace_prefix: String,
    /// `DELETE FROM `db`.`t` WHERE `
    pub delete_prefix: String,
    /// Record column indexes written by REPLACE, in statement order, with their types and names.
    pub columns: Vec<(usize, ColumnType, String)>,
    /// Record column indexes of the primary key, with quoted names. For a table without one,
    /// every written column: a row is identified by all its values, as MariaDB's own
    /// replication does ([`RowStatements::keyless`]).
    pub key: Vec<(usize, ColumnType, String, String)>,
    /// The table has no primary key: rows are inserted with INSERT, and each delete or update
    /// is a statement of its own that changes one row matching every value of the before-image
    /// (`<=>`, so NULLs match), `LIMIT 1`: of two identical rows, one goes.
    pub keyless: bool,
    /// `UPDATE `db`.`t` SET `
    pub update_prefix: String,
    /// The table is referenced by a foreign key whose ON DELETE action changes other rows
    /// (CASCADE, SET NULL, SET DEFAULT): its deletes run with foreign-key checks on, so that
    /// InnoDB performs the action, as on the source (MariaDB does not binlog cascaded changes).
    pub cascade_delete: bool,
    /// Record column indexes referenced by a foreign key whose ON UPDATE action changes other
    /// rows: an update changing one of them runs as an UPDATE with checks on.
    pub cascade_update: Vec<usize>,
    /// Identifies the table (whatever the shape) in write sets: a hash of `db.table`.
    pub table_tag: u64,
    /// The replica's table has a unique key besides the primary key: write sets take the whole
    /// table (see [`crate::apply::writeset`]).
    pub unique_keys: bool,
}

impl RowStatements {
    pub fn new(
        id: u64,
        db: &str,
        table: &str,
        columns: Vec<(usize, ColumnType, String)>,
        key: Vec<(usize, ColumnType, String)>,
    ) -> Self {
        let q = qualified(db, table);
        let keyless = key.is_empty();
        let key = if keyless { columns.clone() } else { key };
        let mut replace_prefix = if keyless {
            format!("INSERT INTO {q} (")
        } else {
            format!("REPLACE INTO {q} (")
        };
        for (i, (_, _, name)) in columns.iter().enumerate() {
            if i > 0 {
                replace_prefix.push(',');
            }
            replace_prefix.push_str(&ident(name));
        }
        replace_prefix.push_str(") VALUES ");
        RowStatements {
            id,
            replace_prefix,
            delete_prefix: format!("DELETE FROM {q} WHERE "),
            columns,
            key: key
                .into_iter()
                .map(|(i, t, n)| {
                    let q = ident(&n);
                    (i, t, n, q)
                })
                .collect(),
            update_prefix: format!("UPDATE {q} SET "),
            keyless,
            cascade_delete: false,
            cascade_update: Vec::new(),
            table_tag: crate::apply::writeset::table_tag(db, table),
            unique_keys: false,
        }
    }

    /// Whether an update from `before` to `after` needs InnoDB's ON UPDATE action.
    pub fn needs_cascading_update(&self, before: &[Value], after: &[Value]) -> bool {
        self.cascade_update.iter().any(|&i| before[i] != after[i])
    }

    /// `UPDATE … SET every written column WHERE key of before`.
    pub fn push_update(
        &self,
        out: &mut String,
        before: &[Value],
        after: &[Value],
    ) -> Result<(), LiteralError> {
        out.push_str(&self.update_prefix);
        for (n, (i, ty, name)) in self.columns.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(&ident(name));
            out.push('=');
            push_literal(out, &after[*i], ty, name)?;
        }
        out.push_str(" WHERE ");
        self.push_key_condition(out, before)?;
        if self.keyless {
            out.push_str(" LIMIT 1");
        }
        Ok(())
    }

    /// `(v1,v2,…)` of the written columns.
    pub fn push_row(&self, out: &mut String, row: &[Value]) -> Result<(), LiteralError> {
        out.push('(');
        for (n, (i, ty, name)) in self.columns.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            push_literal(out, &row[*i], ty, name)?;
        }
        out.push(')');
        Ok(())
    }

    /// The key condition of one row: `` `id`=5 `` or `` (`a`=1 AND `b`=2) ``; for a table
    /// without a primary key, every column, NULL-safe: `` (`a`<=>1 AND `b`<=>NULL) ``.
    pub fn push_key_condition(&self, out: &mut String, row: &[Value]) -> Result<(), LiteralError> {
        let composite = self.key.len() > 1;
        if composite {
            out.push('(');
        }
        let eq = if self.keyless { "<=>" } else { "=" };
        for (n, (i, ty, name, quoted)) in self.key.iter().enumerate() {
            if n > 0 {
                out.push_str(" AND ");
            }
            out.push_str(quoted);
            out.push_str(eq);
            push_literal(out, &row[*i], ty, name)?;
        }
        if composite {
            out.push(')');
        }
        Ok(())
    }

    /// `INSERT INTO `db`.`t` (`a`,`b`) VALUES ` (no REPLACE: a row already there is an error).
    pub fn insert_prefix(&self) -> String {
        match self.replace_prefix.strip_prefix("REPLACE INTO ") {
            Some(rest) => format!("INSERT INTO {rest}"),
            None => self.replace_prefix.clone(),
        }
    }

    /// The condition that `row` is exactly the current row: every written column, NULL-safe
    /// (`<=>`), except `FLOAT` columns, whose stored single-precision value a decimal literal
    /// does not compare equal to.
    pub fn push_match(&self, out: &mut String, row: &[Value]) -> Result<(), LiteralError> {
        let mut n = 0;
        for (i, ty, name) in &self.columns {
            if matches!(ty, ColumnType::Float) {
                continue;
            }
            if n > 0 {
                out.push_str(" AND ");
            }
            n += 1;
            out.push_str(&ident(name));
            out.push_str("<=>");
            push_literal(out, &row[*i], ty, name)?;
        }
        if n == 0 {
            out.push('1');
        }
        Ok(())
    }

    /// The primary key of `row` as text, for messages: `id=5, b='x'`.
    pub fn describe_key(&self, row: &[Value]) -> String {
        self.key
            .iter()
            .map(|(i, _, name, _)| format!("{name}={}", row[*i].describe()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The `DELETE` that cleans a chunk's key range of `db`.`table`: its rows whose primary key
/// (`key`, in key order) is after `?`s (if `from`) and up to `?`s (if `to`), bound by the caller
/// in that order, and not one of `keep` (values in key order, of the key columns' `types`).
pub fn range_delete(
    db: &str,
    table: &str,
    key: &[String],
    from: bool,
    to: bool,
    keep: &[Vec<Value>],
    types: &[ColumnType],
) -> Result<String, LiteralError> {
    let cols = format!(
        "({})",
        key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(",")
    );
    let marks = format!("({})", vec!["?"; key.len()].join(","));
    let mut out = format!("DELETE FROM {} WHERE 1", qualified(db, table));
    if from {
        write!(out, " AND {cols} > {marks}").expect("writing to a String");
    }
    if to {
        write!(out, " AND {cols} <= {marks}").expect("writing to a String");
    }
    if !keep.is_empty() {
        write!(out, " AND {cols} NOT IN (").expect("writing to a String");
        for (n, k) in keep.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push('(');
            for (i, v) in k.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_literal(&mut out, v, &types[i], &key[i])?;
            }
            out.push(')');
        }
        out.push(')');
    }
    Ok(out)
}

/// Most keys in one merged DELETE (the range optimizer handles a few thousand comfortably).
const MAX_DELETE_KEYS: usize = 1000;

/// SQL text waiting to be sent: statements separated by `;`, and one statement per table still
/// open for more rows of the same kind.
///
/// Changes of one table keep their order: a change of another kind than its table's open
/// statement seals that statement first. Changes of different tables may be reordered, so that
/// a batch whose transactions each touch a few tables still sends one multi-row statement per
/// table and kind, not one per row: with `foreign_key_checks=0` and no triggers (apply refuses
/// tables with triggers), a change of one table cannot affect another. The exception is a
/// statement that runs with foreign-key checks on (a cascading `DELETE` or `UPDATE`), whose
/// action reaches other tables: it is a barrier. Every open statement is sealed before it, and
/// it is sealed before any change that follows it, whatever the table.
#[derive(Debug, Default)]
pub struct StatementBuffer {
    /// Sealed statements, in the order they run.
    text: String,
    /// The open statements, in the order they opened: at most one per table shape, and a
    /// [`StmtKind::DeleteChecked`] one only ever alone.
    open: Vec<OpenStatement>,
    rows: usize,
    /// A statement is closed once it reaches this size, so it stays below `max_allowed_packet`.
    max_statement_bytes: usize,
    /// One row's fragment, built before anything is changed (a value can be refused).
    scratch: String,
}

#[derive(Debug)]
struct OpenStatement {
    id: u64,
    kind: StmtKind,
    rows: usize,
    text: String,
}

impl StatementBuffer {
    pub fn new(max_statement_bytes: usize) -> Self {
        StatementBuffer {
            max_statement_bytes,
            ..Default::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.open.is_empty()
    }

    /// Bytes buffered, sealed or open.
    pub fn len(&self) -> usize {
        self.text.len() + self.open.iter().map(|o| o.text.len()).sum::<usize>()
    }

    /// Rows added since the last [`take`](Self::take).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Ends every open statement, so the next row starts a new one.
    pub fn seal(&mut self) {
        for o in std::mem::take(&mut self.open) {
            self.append_sealed(o);
        }
    }

    /// Moves the open statement at `i` to the sealed text.
    fn seal_one(&mut self, i: usize) {
        let o = self.open.remove(i);
        self.append_sealed(o);
    }

    fn append_sealed(&mut self, o: OpenStatement) {
        if !self.text.is_empty() {
            self.text.push_str(";\n");
        }
        self.text.push_str(&o.text);
        if o.kind == StmtKind::DeleteChecked {
            self.text.push_str(FK_OFF);
        }
    }

    /// Adds `REPLACE` of `row` (an after-image).
    pub fn replace(&mut self, stmts: &RowStatements, row: &[Value]) -> Result<(), LiteralError> {
        self.add(stmts, StmtKind::Replace, row)
    }

    /// Adds `DELETE` of the row whose key is in `row` (a before-image), with foreign-key checks
    /// on if the table has cascading foreign keys.
    pub fn delete(&mut self, stmts: &RowStatements, row: &[Value]) -> Result<(), LiteralError> {
        if stmts.keyless {
            return self.one_row(stmts, stmts.cascade_delete, |out| {
                out.push_str(&stmts.delete_prefix);
                stmts.push_key_condition(out, row)?;
                out.push_str(" LIMIT 1");
                Ok(())
            });
        }
        let kind = if stmts.cascade_delete {
            StmtKind::DeleteChecked
        } else {
            StmtKind::Delete
        };
        self.add(stmts, kind, row)
    }

    /// Adds `DELETE` with foreign-key checks off whatever the table.
    pub fn delete_unchecked(
        &mut self,
        stmts: &RowStatements,
        row: &[Value],
    ) -> Result<(), LiteralError> {
        if stmts.keyless {
            return self.one_row(stmts, false, |out| {
                out.push_str(&stmts.delete_prefix);
                stmts.push_key_condition(out, row)?;
                out.push_str(" LIMIT 1");
                Ok(())
            });
        }
        self.add(stmts, StmtKind::Delete, row)
    }

    /// Adds the `UPDATE` of one row of a table without a primary key (a statement of its own).
    pub fn update_one(
        &mut self,
        stmts: &RowStatements,
        before: &[Value],
        after: &[Value],
    ) -> Result<(), LiteralError> {
        self.one_row(stmts, false, |out| stmts.push_update(out, before, after))
    }

    /// A statement of its own for one row, with foreign-key checks on if `checked`.
    fn one_row(
        &mut self,
        _stmts: &RowStatements,
        checked: bool,
        write: impl FnOnce(&mut String) -> Result<(), LiteralError>,
    ) -> Result<(), LiteralError> {
        let mut stmt = std::mem::take(&mut self.scratch);
        stmt.clear();
        if checked {
            stmt.push_str(FK_ON);
        }
        let written = write(&mut stmt);
        if written.is_ok() {
            // Its own statement, in order with everything: the open statements go first.
            self.seal();
            if !self.text.is_empty() {
                self.text.push_str(";\n");
            }
            self.text.push_str(&stmt);
            if checked {
                self.text.push_str(FK_OFF);
            }
            self.rows += 1;
        }
        self.scratch = stmt;
        written
    }

    /// Adds `UPDATE` from `before` to `after` with foreign-key checks on (a single statement).
    pub fn update_checked(
        &mut self,
        stmts: &RowStatements,
        before: &[Value],
        after: &[Value],
    ) -> Result<(), LiteralError> {
        self.one_row(stmts, true, |out| stmts.push_update(out, before, after))
    }

    fn add(
        &mut self,
        stmts: &RowStatements,
        kind: StmtKind,
        row: &[Value],
    ) -> Result<(), LiteralError> {
        // The row's fragment first: a refused value changes nothing.
        let mut frag = std::mem::take(&mut self.scratch);
        frag.clear();
        let built = match kind {
            StmtKind::Replace => stmts.push_row(&mut frag, row),
            StmtKind::Delete | StmtKind::DeleteChecked => stmts.push_key_condition(&mut frag, row),
        };
        if built.is_ok() {
            self.add_fragment(stmts, kind, &frag);
        }
        self.scratch = frag;
        built
    }

    /// Adds one row's fragment to its table's open statement of `kind`, or opens one.
    fn add_fragment(&mut self, stmts: &RowStatements, kind: StmtKind, frag: &str) {
        let barrier_open = self
            .open
            .first()
            .is_some_and(|o| o.kind == StmtKind::DeleteChecked);
        if kind == StmtKind::DeleteChecked || barrier_open {
            // A checked statement runs in order with everything around it.
            let same = self
                .open
                .first()
                .is_some_and(|o| o.id == stmts.id && o.kind == kind);
            if !same {
                self.seal();
            }
        }
        let max = self.max_statement_bytes;
        let mergeable = |o: &OpenStatement| {
            o.kind == kind
                && o.text.len() < max
                && (kind == StmtKind::Replace || o.rows < MAX_DELETE_KEYS)
        };
        match self.open.iter().position(|o| o.id == stmts.id) {
            Some(i) if mergeable(&self.open[i]) => {
                let o = &mut self.open[i];
                o.text.push_str(if kind == StmtKind::Replace {
                    ","
                } else {
                    " OR "
                });
                o.text.push_str(frag);
                o.rows += 1;
            }
            found => {
                // Another kind (or a full statement) of this table: it runs first, in order.
                if let Some(i) = found {
                    self.seal_one(i);
                }
                let mut text = String::new();
                if kind == StmtKind::DeleteChecked {
                    text.push_str(FK_ON);
                }
                text.push_str(if kind == StmtKind::Replace {
                    &stmts.replace_prefix
                } else {
                    &stmts.delete_prefix
                });
                text.push_str(frag);
                self.open.push(OpenStatement {
                    id: stmts.id,
                    kind,
                    rows: 1,
                    text,
                });
            }
        }
        self.rows += 1;
    }

    /// Appends a complete statement of its own (checkpoint, COMMIT …).
    pub fn push_statement(&mut self, sql: &str) {
        self.seal();
        if !self.text.is_empty() {
            self.text.push_str(";\n");
        }
        self.text.push_str(sql);
    }

    /// Takes the text, leaving the buffer empty.
    pub fn take(&mut self) -> String {
        self.seal();
        self.rows = 0;
        std::mem::take(&mut self.text)
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.open.clear();
        self.rows = 0;
        self.text.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use continuum_schemas::types::{BlobKind, Date, IntWidth, TextKind};

    fn lit(v: Value, ty: ColumnType) -> String {
        let mut s = String::new();
        push_literal(&mut s, &v, &ty, "c").unwrap();
        s
    }

    #[test]
    fn literals() {
        let int = ColumnType::Integer {
            width: IntWidth::Int,
            unsigned: false,
        };
        assert_eq!(lit(Value::Null, int.clone()), "NULL");
        assert_eq!(lit(Value::Int(-5), int.clone()), "-5");
        assert_eq!(
            lit(Value::UInt(u64::MAX), int.clone()),
            "18446744073709551615"
        );
        assert_eq!(
            lit(Value::Decimal("-12.500".into()), int.clone()),
            "-12.500"
        );
        assert_eq!(lit(Value::Float(0.5), ColumnType::Float), "5e-1");
        assert_eq!(
            lit(Value::Float(f32::MAX), ColumnType::Float),
            "3.4028234663852886e38"
        );
        assert_eq!(lit(Value::Double(-1.5), ColumnType::Double), "-1.5e0");
        assert_eq!(
            lit(Value::Bytes(vec![0x03, 0xff]), ColumnType::Bit { bits: 10 }),
            "1023"
        );
        assert_eq!(
            lit(
                Value::Date("0000-00-00".parse::<Date>().unwrap()),
                ColumnType::Date
            ),
            "'0000-00-00'"
        );
        assert_eq!(
            lit(Value::Timestamp(0), ColumnType::Timestamp { fsp: 0 }),
            "'0000-00-00 00:00:00'"
        );
        assert_eq!(
            lit(
                Value::Timestamp(1_000_000),
                ColumnType::Timestamp { fsp: 6 }
            ),
            "'1970-01-01 00:00:01.000000'"
        );
        assert_eq!(
            lit(Value::Time(-1), ColumnType::Time { fsp: 6 }),
            "'-0:00:00.000001'"
        );
        assert_eq!(
            lit(
                Value::Text("a'b".into()),
                ColumnType::Text {
                    kind: TextKind::VarChar
                }
            ),
            "_utf8mb4 X'612762'"
        );
        assert_eq!(
            lit(
                Value::Bytes(vec![]),
                ColumnType::Blob {
                    kind: BlobKind::Blob
                }
            ),
            "X''"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        let mut s = String::new();
        assert!(push_literal(
            &mut s,
            &Value::Decimal("1;DROP".into()),
            &ColumnType::Decimal {
                precision: 5,
                scale: 0
            },
            "d"
        )
        .is_err());
        assert!(push_literal(&mut s, &Value::Double(f64::NAN), &ColumnType::Double, "d").is_err());
        assert!(s.is_empty());
    }

    fn stmts(id: u64, cascade: bool) -> RowStatements {
        stmts_of(id, "t", cascade)
    }

    /// Table `d`.`table` of `id INT` (the key) and `v INT`.
    fn stmts_of(id: u64, table: &str, cascade: bool) -> RowStatements {
        let int = ColumnType::Integer {
            width: IntWidth::Int,
            unsigned: false,
        };
        let mut r = RowStatements::new(
            id,
            "d",
            table,
            vec![(0, int.clone(), "id".into()), (1, int.clone(), "v".into())],
            vec![(0, int, "id".into())],
        );
        r.cascade_delete = cascade;
        r
    }

    #[test]
    fn consecutive_ops_merge_in_order() {
        let t = stmts(1, false);
        let u = stmts(2, true);
        let mut b = StatementBuffer::new(1 << 20);
        b.replace(&t, &[Value::Int(1), Value::Int(10)]).unwrap();
        b.replace(&t, &[Value::Int(2), Value::Int(20)]).unwrap();
        b.delete(&t, &[Value::Int(1), Value::Null]).unwrap();
        b.delete(&t, &[Value::Int(3), Value::Null]).unwrap();
        b.delete(&u, &[Value::Int(4), Value::Null]).unwrap();
        b.delete(&u, &[Value::Int(5), Value::Null]).unwrap();
        b.replace(&t, &[Value::Int(3), Value::Int(30)]).unwrap();
        assert_eq!(b.rows(), 7);
        assert_eq!(
            b.take(),
            "REPLACE INTO `d`.`t` (`id`,`v`) VALUES (1,10),(2,20);\n\
             DELETE FROM `d`.`t` WHERE `id`=1 OR `id`=3;\n\
             SET SESSION foreign_key_checks=1;\nDELETE FROM `d`.`t` WHERE `id`=4 OR `id`=5;\nSET SESSION foreign_key_checks=0;\n\
             REPLACE INTO `d`.`t` (`id`,`v`) VALUES (3,30)"
        );
        assert!(b.is_empty());
        b.delete(&u, &[Value::Int(6), Value::Null]).unwrap();
        assert!(
            b.take().ends_with("SET SESSION foreign_key_checks=0"),
            "checks go back off at every end"
        );
    }

    fn int_row(id: i64, v: i64) -> [Value; 2] {
        [Value::Int(id), Value::Int(v)]
    }

    #[test]
    fn changes_of_different_tables_group_by_table_and_keep_their_order_within_it() {
        let (a, b, c) = (
            stmts_of(1, "a", false),
            stmts_of(2, "b", false),
            stmts_of(3, "c", false),
        );
        let mut buf = StatementBuffer::new(1 << 20);
        // Transactions touching a few tables each, interleaved as a batch delivers them.
        buf.replace(&a, &int_row(1, 1)).unwrap();
        buf.replace(&b, &int_row(1, 1)).unwrap();
        buf.delete(&c, &int_row(9, 0)).unwrap();
        buf.replace(&a, &int_row(2, 2)).unwrap();
        buf.delete(&c, &int_row(8, 0)).unwrap();
        buf.replace(&b, &int_row(2, 2)).unwrap();
        // Table a changes kind: its REPLACE runs before its DELETE; the DELETE of key 1 must
        // not run before the REPLACE of key 1.
        buf.delete(&a, &int_row(1, 0)).unwrap();
        buf.replace(&b, &int_row(3, 3)).unwrap();
        buf.replace(&a, &int_row(1, 5)).unwrap();
        assert_eq!(buf.rows(), 9);
        assert_eq!(
            buf.take(),
            "REPLACE INTO `d`.`a` (`id`,`v`) VALUES (1,1),(2,2);\n\
             DELETE FROM `d`.`a` WHERE `id`=1;\n\
             REPLACE INTO `d`.`b` (`id`,`v`) VALUES (1,1),(2,2),(3,3);\n\
             DELETE FROM `d`.`c` WHERE `id`=9 OR `id`=8;\n\
             REPLACE INTO `d`.`a` (`id`,`v`) VALUES (1,5)"
        );
        assert!(buf.is_empty());
        assert_eq!(buf.len(), 0);
    }

    #[test]
    fn a_statement_with_foreign_key_checks_on_is_a_barrier_for_every_table() {
        let (child, parent) = (stmts_of(1, "child", false), stmts_of(2, "parent", true));
        let mut buf = StatementBuffer::new(1 << 20);
        // Source order: a child row, the cascading delete of parents (which may remove that
        // child), then another child row (which must survive it).
        buf.replace(&child, &int_row(1, 10)).unwrap();
        buf.delete(&parent, &int_row(10, 0)).unwrap();
        buf.delete(&parent, &int_row(11, 0)).unwrap();
        buf.replace(&child, &int_row(2, 20)).unwrap();
        buf.delete(&parent, &int_row(20, 0)).unwrap();
        assert_eq!(
            buf.take(),
            "REPLACE INTO `d`.`child` (`id`,`v`) VALUES (1,10);\n\
             SET SESSION foreign_key_checks=1;\nDELETE FROM `d`.`parent` WHERE `id`=10 OR `id`=11;\nSET SESSION foreign_key_checks=0;\n\
             REPLACE INTO `d`.`child` (`id`,`v`) VALUES (2,20);\n\
             SET SESSION foreign_key_checks=1;\nDELETE FROM `d`.`parent` WHERE `id`=20;\nSET SESSION foreign_key_checks=0"
        );
        // A checked update of its own is a barrier too.
        buf.replace(&child, &int_row(3, 30)).unwrap();
        buf.update_checked(&parent, &int_row(20, 0), &int_row(21, 0))
            .unwrap();
        buf.replace(&child, &int_row(4, 40)).unwrap();
        let text = buf.take();
        let (first, rest) = text.split_once("UPDATE").unwrap();
        assert!(
            first.contains("(3,30)") && rest.contains("(4,40)"),
            "{text}"
        );
    }

    #[test]
    fn a_refused_value_leaves_the_buffer_as_it_was() {
        let a = stmts_of(1, "a", false);
        let mut buf = StatementBuffer::new(1 << 20);
        buf.replace(&a, &int_row(1, 1)).unwrap();
        let (len, rows) = (buf.len(), buf.rows());
        // A value no literal can carry (NaN), in the row and in the key.
        let bad = [Value::Int(2), Value::Double(f64::NAN)];
        assert!(buf.replace(&a, &bad).is_err());
        assert!(buf
            .delete(&a, &[Value::Double(f64::NAN), Value::Null])
            .is_err());
        assert_eq!((buf.len(), buf.rows()), (len, rows));
        assert_eq!(buf.take(), "REPLACE INTO `d`.`a` (`id`,`v`) VALUES (1,1)");
    }

    #[test]
    fn a_table_without_a_primary_key_is_written_row_by_row_by_every_value() {
        let int = ColumnType::Integer {
            width: IntWidth::Int,
            unsigned: false,
        };
        let t = RowStatements::new(
            7,
            "d",
            "log",
            vec![(0, int.clone(), "a".into()), (1, int, "b".into())],
            vec![],
        );
        assert!(t.keyless);
        let mut b = StatementBuffer::new(1 << 20);
        b.replace(&t, &[Value::Int(1), Value::Null]).unwrap();
        b.replace(&t, &[Value::Int(1), Value::Null]).unwrap();
        b.delete(&t, &[Value::Int(1), Value::Null]).unwrap();
        b.delete(&t, &[Value::Int(2), Value::Int(3)]).unwrap();
        b.update_one(
            &t,
            &[Value::Int(2), Value::Int(3)],
            &[Value::Int(2), Value::Int(4)],
        )
        .unwrap();
        b.replace(&t, &[Value::Int(5), Value::Int(5)]).unwrap();
        assert_eq!(b.rows(), 6);
        assert_eq!(
            b.take(),
            "INSERT INTO `d`.`log` (`a`,`b`) VALUES (1,NULL),(1,NULL);\n\
             DELETE FROM `d`.`log` WHERE (`a`<=>1 AND `b`<=>NULL) LIMIT 1;\n\
             DELETE FROM `d`.`log` WHERE (`a`<=>2 AND `b`<=>3) LIMIT 1;\n\
             UPDATE `d`.`log` SET `a`=2,`b`=4 WHERE (`a`<=>2 AND `b`<=>3) LIMIT 1;\n\
             INSERT INTO `d`.`log` (`a`,`b`) VALUES (5,5)"
        );
    }

    #[test]
    fn statements_split_at_the_size_limit() {
        let t = stmts(1, false);
        let mut b = StatementBuffer::new(64);
        for i in 0..10 {
            b.replace(&t, &[Value::Int(i), Value::Int(i)]).unwrap();
        }
        let text = b.take();
        assert!(text.matches("REPLACE").count() > 1, "{text}");
    }
}
