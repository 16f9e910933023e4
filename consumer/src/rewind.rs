//! `orphans --rewind`: rolls an old primary's orphans back, so that a failback ends with two
//! identical sites (`pg_rewind`'s job, done from MariaDB's row images).
//!
//! The orphans are the old primary's transactions that the new primary never applied (listed by
//! [`crate::orphans`]). Rewinding them:
//! 1. reads their row changes from the old primary's own binlog with the producer's reader
//!    (`continuum_producer::binlog`), so exactly what the producer would have captured, with
//!    full before- and after-images (`binlog_row_image = FULL`, checked by the producer's
//!    preflight); an orphan that changed a table's definition is refused, as rows cannot undo it;
//! 2. writes them, forward and in commit order, as SQL to a file for the operator to review and,
//!    if wanted, run at the new primary ([`forward_sql`]), and makes that file durable before
//!    anything changes;
//! 3. undoes them in one MariaDB transaction, flagged `skip_replication` (so no producer captures
//!    the undo), in reverse order: each row change's inverse ([`inverse`]) applies only where the
//!    row is still what the orphan left. A row the new primary's history has changed since (its
//!    writes, applied here after the failover) keeps that history: the inverse matches nothing
//!    (or, for a deleted row put back, finds the key taken) and is counted as kept.
//!
//! It runs when the old primary rejoins, before it applies the new primary's writes: it holds
//! the apply lock of the new primary's topic meanwhile, and refuses while an apply holds it.
//! Afterwards the old primary holds only the new primary's history; its checkpoint at the new
//! primary moves past the orphans at the switchover (`promote --orphans discard`), so they never
//! reach the new primary either.
//!
//! Refused, with nothing changed: an orphan that changed a table's definition. Reported, not
//! undone: what a cascading foreign key changed when an orphan deleted (or changed the key of) a
//! parent row, as MariaDB does not binlog it; the report lists those orphans, for `verify
//! --repair`. Columns are planned as apply plans them (generated columns are never written).
//!
//! Limits: a `FLOAT` column is left out of the "still what the orphan left" test (a decimal
//! literal does not compare equal to its single-precision value); a table without a primary key
//! cannot tell a row of the new primary's from an identical orphan's.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use serde::Serialize;

use continuum_common::filter::TableFilter;
use continuum_common::{db, SiteConfig};
use continuum_producer::binlog::{BinlogReader, ReaderSettings, SourceEvent};
use continuum_schemas::{Gtid, GtidPosition, Op, Row, TableSchema};

use crate::error::SiteDbError;
use crate::orphans::{OrphansError, OrphansReport};
use crate::sql::{LiteralError, RowStatements};

/// One row change of an orphan, as the producer would have captured it.
#[derive(Debug, Clone)]
pub struct RowChange {
    pub op: Op,
    pub table: Arc<TableSchema>,
    pub before: Option<Row>,
    pub after: Option<Row>,
}

/// An orphan transaction with its row changes, in binlog order.
#[derive(Debug, Clone)]
pub struct OrphanTx {
    pub gtid: Gtid,
    pub commit_ts_ms: i64,
    pub changes: Vec<RowChange>,
}

/// How to undo one row change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inverse {
    pub gtid: Gtid,
    /// `db.table` and the row's key, for the report.
    pub table: String,
    pub key: String,
    pub sql: String,
    /// It puts a deleted row back: a key already taken means the row is kept.
    pub reinsert: bool,
}

/// What the rewind did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RewindReport {
    /// The SQL file of the rolled-back transactions (none when there were none).
    pub sql_file: Option<PathBuf>,
    pub transactions: usize,
    /// Row changes undone.
    pub rows_rewound: u64,
    /// Row changes left alone because the new primary's history has changed the row since.
    pub rows_kept: u64,
    /// `db.table: key` of each row kept.
    pub kept: Vec<String>,
    /// Each orphan's delete (or key update) of a row that a foreign key with a cascading action
    /// refers to: rows the cascade changed are not in the binlog, so the rewind cannot put them
    /// back. `verify` against the new primary finds any; `verify --repair` brings them back.
    pub cascading: Vec<String>,
}

/// The statements for each table the orphans touch, by `db.table`, as apply plans them on this
/// server ([`crate::target`]: generated columns left out, cascading foreign keys found).
pub type Plans = HashMap<String, Arc<RowStatements>>;

fn plan<'a>(plans: &'a Plans, c: &RowChange) -> Result<&'a RowStatements, LiteralError> {
    plans
        .get(&c.table.qualified_name())
        .map(|p| p.as_ref())
        .ok_or_else(|| LiteralError {
            column: String::new(),
            reason: format!("no statements planned for {}", c.table.qualified_name()),
        })
}

/// Statements for `t` with every column written (tests, where no server plans them).
#[cfg(test)]
fn statements(t: &TableSchema) -> RowStatements {
    let cols: Vec<(usize, continuum_schemas::types::ColumnType, String)> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| (i, c.ty.clone(), c.name.clone()))
        .collect();
    let key = t
        .primary_key
        .iter()
        .map(|&i| (i, t.columns[i].ty.clone(), t.columns[i].name.clone()))
        .collect();
    RowStatements::new(0, &t.db, &t.table, cols, key)
}

fn image(c: &RowChange, before: bool) -> Result<&Row, LiteralError> {
    let (row, which) = if before {
        (&c.before, "before")
    } else {
        (&c.after, "after")
    };
    row.as_ref().ok_or_else(|| LiteralError {
        column: String::new(),
        reason: format!(
            "a {} row change of {} has no {which}-image",
            c.op.code(),
            c.table.qualified_name()
        ),
    })
}

/// The orphans as SQL, forward and in commit order: one transaction each, for the operator to
/// review and, if wanted, run at the new primary.
pub fn forward_sql(txs: &[OrphanTx], plans: &Plans) -> Result<String, LiteralError> {
    let mut out = String::new();
    for tx in txs {
        let when = continuum_schemas::types::DateTime::from_epoch_micros(tx.commit_ts_ms * 1000);
        writeln!(out, "-- orphan {} committed {when} UTC", tx.gtid).expect("writing to a String");
        out.push_str("START TRANSACTION;\n");
        for c in &tx.changes {
            let s = plan(plans, c)?;
            match c.op {
                Op::Insert | Op::Read => {
                    out.push_str(&s.insert_prefix());
                    s.push_row(&mut out, image(c, false)?)?;
                }
                Op::Update => s.push_update(&mut out, image(c, true)?, image(c, false)?)?,
                Op::Delete => {
                    out.push_str(&s.delete_prefix);
                    s.push_key_condition(&mut out, image(c, true)?)?;
                    if s.keyless {
                        out.push_str(" LIMIT 1");
                    }
                }
            }
            out.push_str(";\n");
        }
        out.push_str("COMMIT;\n\n");
    }
    Ok(out)
}

/// The statements that undo `txs`, in the order to run them: the last change of the last
/// transaction first. Each applies only where the row is what the orphan left.
pub fn inverse(txs: &[OrphanTx], plans: &Plans) -> Result<Vec<Inverse>, LiteralError> {
    let mut out = Vec::new();
    for tx in txs.iter().rev() {
        for c in tx.changes.iter().rev() {
            let s = plan(plans, c)?;
            let mut sql = String::new();
            let (key_row, reinsert) = match c.op {
                // Inserted: delete it, if it is still the inserted row.
                Op::Insert | Op::Read => {
                    let after = image(c, false)?;
                    sql.push_str(&s.delete_prefix);
                    s.push_match(&mut sql, after)?;
                    sql.push_str(" LIMIT 1");
                    (after, false)
                }
                // Updated: put the before-image back, if the row is still the after-image.
                Op::Update => {
                    let (before, after) = (image(c, true)?, image(c, false)?);
                    sql.push_str(&s.update_prefix);
                    for (n, (i, ty, name)) in s.columns.iter().enumerate() {
                        if n > 0 {
                            sql.push(',');
                        }
                        sql.push_str(&crate::sql::ident(name));
                        sql.push('=');
                        crate::sql::push_literal(&mut sql, &before[*i], ty, name)?;
                    }
                    sql.push_str(" WHERE ");
                    s.push_match(&mut sql, after)?;
                    sql.push_str(" LIMIT 1");
                    (after, false)
                }
                // Deleted: put it back, unless its key is taken again.
                Op::Delete => {
                    let before = image(c, true)?;
                    sql.push_str(&s.insert_prefix());
                    s.push_row(&mut sql, before)?;
                    (before, true)
                }
            };
            out.push(Inverse {
                gtid: tx.gtid,
                table: c.table.qualified_name(),
                key: s.describe_key(key_row),
                sql,
                reinsert,
            });
        }
    }
    Ok(out)
}

/// Reads the orphans' row changes from the source's binlog, from `start` until the reader
/// covers `end`.
async fn read_orphans(
    cfg: &SiteConfig,
    site: &str,
    start: &GtidPosition,
    end: &GtidPosition,
    server_id: u32,
) -> Result<Vec<OrphanTx>, OrphansError> {
    let dbc = cfg.database_of(site)?;
    let target = db::describe(dbc);
    let opts = db::opts(dbc, &[])?;
    let mut conn = mysql_async::Conn::new(opts.clone())
        .await
        .map_err(SiteDbError::at(site, &target, "connecting"))?;
    let binlog = |e: continuum_producer::error::ProducerError| {
        OrphansError::Binlog(e.to_string(), site.to_owned())
    };
    let mut filter = TableFilter::new(&cfg.producer)?;
    let no_pk = cfg.producer.tables_without_primary_key;
    let facts =
        continuum_producer::preflight::check(&mut conn, &target, server_id, &mut filter, no_pk)
            .await
            .map_err(binlog)?;
    drop(conn);
    let mut reader = BinlogReader::connect(
        opts,
        start,
        ReaderSettings {
            target: target.clone(),
            server_id,
            heartbeat_period: Duration::from_millis(500),
            filter,
            no_pk,
            charsets: facts.charsets,
            crc32: facts.crc32,
        },
    )
    .await
    .map_err(binlog)?;
    let mut out: Vec<OrphanTx> = Vec::new();
    let mut open: Option<OrphanTx> = None;
    let mut events = Vec::new();
    while !reader.position().covers(end) {
        events.clear();
        tokio::time::timeout(Duration::from_secs(30), reader.next(&mut events))
            .await
            .map_err(|_| {
                OrphansError::Binlog(
                    format!(
                        "no binlog event for 30 s at {} while reading the orphans up to {end}",
                        reader.position()
                    ),
                    site.to_owned(),
                )
            })?
            .map_err(binlog)?;
        for ev in events.drain(..) {
            match ev {
                SourceEvent::Begin {
                    gtid, commit_ts_ms, ..
                } => {
                    open = Some(OrphanTx {
                        gtid,
                        commit_ts_ms,
                        changes: Vec::new(),
                    })
                }
                SourceEvent::Row {
                    op,
                    table,
                    before,
                    after,
                    ..
                } => match open.as_mut() {
                    Some(t) => t.changes.push(RowChange {
                        op,
                        table,
                        before,
                        after,
                    }),
                    None => {
                        return Err(OrphansError::Binlog(
                            format!(
                                "a row change of {} outside a transaction",
                                table.qualified_name()
                            ),
                            site.to_owned(),
                        ))
                    }
                },
                SourceEvent::Ddl { ddl, .. } => {
                    let gtid = open
                        .as_ref()
                        .map(|t| t.gtid.to_string())
                        .unwrap_or_default();
                    return Err(OrphansError::Binlog(
                        format!("orphan {gtid} changed a table's definition (`{}`); a rewind undoes row changes only: undo it by hand, or rebuild this site from the new primary", continuum_common::redact::redact(&ddl)),
                        site.to_owned(),
                    ));
                }
                SourceEvent::Commit { gtid, .. } => {
                    if let Some(t) = open.take() {
                        if t.gtid != gtid {
                            return Err(OrphansError::Binlog(
                                format!("transaction {} ended as {gtid}", t.gtid),
                                site.to_owned(),
                            ));
                        }
                        out.push(t);
                    }
                }
                SourceEvent::CaughtUp => {}
            }
        }
    }
    Ok(out)
}

/// Plans the statements of every table `txs` touch, refusing a table that does not match its
/// rows here. Also returns what the binlog cannot say: each delete of a row, or update of a
/// column, that a foreign key with a cascading action refers to (MariaDB does not binlog the
/// rows a cascade changed, so if the cascade changed any, the rewind cannot put them back).
async fn plan_all(
    conn: &mut mysql_async::Conn,
    target: &str,
    txs: &[OrphanTx],
) -> Result<(Plans, Vec<String>), String> {
    let mut cascading = Vec::new();
    let mut targets = crate::target::Targets::new();
    let mut plans = Plans::new();
    for tx in txs {
        for c in &tx.changes {
            let name = c.table.qualified_name();
            if !plans.contains_key(&name) {
                let planned = match targets.plan(conn, target, &c.table).await {
                    Ok(Ok(p)) if p.missing.is_empty() => p,
                    Ok(Ok(p)) => {
                        return Err(format!(
                            "orphan {} changed columns {} of {name} that the table no longer has; nothing was changed",
                            tx.gtid,
                            p.missing.join(", ")
                        ))
                    }
                    Ok(Err(why)) => return Err(format!("orphan {}: {why}; nothing was changed", tx.gtid)),
                    Err(e) => return Err(e.to_string()),
                };
                plans.insert(name.clone(), planned.stmts);
            }
            let s = &plans[&name];
            let cascades = match (c.op, &c.before, &c.after) {
                (Op::Delete, _, _) => s.cascade_delete,
                (Op::Update, Some(b), Some(a)) => s.needs_cascading_update(b, a),
                _ => false,
            };
            if cascades {
                cascading.push(format!(
                    "{} {} {name}: {}",
                    tx.gtid,
                    if c.op == Op::Delete {
                        "deleted"
                    } else {
                        "updated"
                    },
                    c.before
                        .as_ref()
                        .map(|r| s.describe_key(r))
                        .unwrap_or_default()
                ));
            }
        }
    }
    Ok((plans, cascading))
}

/// Rewinds the orphans of `report` (at its source site), writing the SQL file at `sql_file`.
pub async fn rewind(
    cfg: &SiteConfig,
    report: &OrphansReport,
    start: &GtidPosition,
    server_id: u32,
    sql_file: &Path,
) -> Result<RewindReport, OrphansError> {
    let site = report.source.as_str();
    let end: GtidPosition =
        report
            .source_position
            .parse()
            .map_err(|e: continuum_schemas::ParsePositionError| {
                OrphansError::Binlog(e.to_string(), site.to_owned())
            })?;
    let txs = read_orphans(cfg, site, start, &end, server_id).await?;
    let listed = crate::orphans::gtids(report);
    let read: Vec<Gtid> = txs.iter().map(|t| t.gtid).collect();
    if read != listed {
        return Err(OrphansError::Binlog(
            format!("the binlog read for the rewind holds transactions {read:?}, but the orphans listed are {listed:?}; nothing was changed, run it again"),
            site.to_owned(),
        ));
    }
    let dbc = cfg.database_of(site)?;
    let target = db::describe(dbc);
    let opts = db::opts(dbc, &[])?;
    let refuse = |why: String| OrphansError::Binlog(why, site.to_owned());
    let mut conn = crate::writer::connect(&opts, &target)
        .await
        .map_err(|e| refuse(e.to_string()))?;
    let (plans, cascading) = plan_all(&mut conn, &target, &txs).await.map_err(refuse)?;
    let literal = |e: LiteralError| OrphansError::Binlog(e.to_string(), site.to_owned());
    let forward = forward_sql(&txs, &plans).map_err(literal)?;
    let undo = inverse(&txs, &plans).map_err(literal)?;
    let io = |e: std::io::Error| {
        OrphansError::Binlog(
            format!("writing {}: {e}; nothing was changed", sql_file.display()),
            site.to_owned(),
        )
    };
    {
        let mut f = std::fs::File::create(sql_file).map_err(io)?;
        writeln!(
            f,
            "-- The orphans of {site}: its transactions that {} never applied, rolled back at {site} by\n-- `continuum-consumer orphans --rewind`. Review them; to keep any, run them at the new primary.\n",
            report.replica
        )
        .map_err(io)?;
        f.write_all(forward.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }

    let at = |what: &'static str| SiteDbError::at(site, &target, what);
    // Nothing applies the new primary's writes here meanwhile: the rewind goes first.
    let applied_topic = cfg.topic_of(&report.replica)?;
    let lock = match crate::lock::ApplyLock::take(
        opts.clone(),
        &target,
        &applied_topic,
        continuum_common::lock::Wait::No,
    )
    .await
    {
        Ok(l) => l,
        Err(crate::error::ApplyError::LockHeld { holder, .. }) => {
            return Err(OrphansError::Binlog(
                format!("an apply of {applied_topic} runs here (MariaDB connection {holder}): stop `continuum-consumer run` at {site} first. The rewind goes before {site} applies {}'s writes (docs/failover.md); nothing was changed, and {} holds the orphans' SQL", report.replica, sql_file.display()),
                site.to_owned(),
            ))
        }
        Err(e) => return Err(OrphansError::Binlog(e.to_string(), site.to_owned())),
    };
    conn.query_drop("START TRANSACTION")
        .await
        .map_err(at("starting the rewind's transaction"))?;
    let mut out = RewindReport {
        sql_file: Some(sql_file.to_owned()),
        transactions: txs.len(),
        cascading,
        ..Default::default()
    };
    for inv in &undo {
        let done = match conn.query_drop(inv.sql.as_str()).await {
            Ok(()) => conn.affected_rows() > 0,
            Err(mysql_async::Error::Server(e)) if inv.reinsert && e.code == 1062 => false,
            Err(e) => {
                let _ = conn.query_drop("ROLLBACK").await;
                return Err(SiteDbError::at(
                    site,
                    &target,
                    "undoing an orphan's row change; nothing was changed",
                )(e)
                .into());
            }
        };
        if done {
            out.rows_rewound += 1;
        } else {
            out.rows_kept += 1;
            out.kept
                .push(format!("{} {}: {}", inv.gtid, inv.table, inv.key));
        }
    }
    conn.query_drop("COMMIT")
        .await
        .map_err(at("committing the rewind"))?;
    lock.release().await;
    Ok(out)
}

/// The human form.
pub fn render(r: &RewindReport) -> String {
    let mut out = format!(
        "rewind: {} orphan transaction(s) rolled back ({} row changes undone, {} rows kept as the new primary's history changed them since); their SQL is in {}\n",
        r.transactions,
        r.rows_rewound,
        r.rows_kept,
        r.sql_file.as_deref().unwrap_or(Path::new("-")).display()
    );
    for k in &r.kept {
        out.push_str(&format!("  kept {k}\n"));
    }
    if !r.cascading.is_empty() {
        out.push_str("rewind: these orphans deleted (or changed the key of) rows that foreign keys with cascading actions refer to; rows the cascade changed are not in the binlog and were not put back. Once this site has caught up with the new primary, run `continuum-consumer verify --repair` here to bring back any:\n");
        for c in &r.cascading {
            out.push_str(&format!("  {c}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use continuum_schemas::Value;

    fn t() -> Arc<TableSchema> {
        Arc::new(
            TableSchema::parse("d", "t", &["id bigint", "v varchar", "f float"], &["id"]).unwrap(),
        )
    }

    fn change(op: Op, before: Option<(i64, &str)>, after: Option<(i64, &str)>) -> RowChange {
        let row =
            |(id, v): (i64, &str)| vec![Value::Int(id), Value::Text(v.into()), Value::Float(0.5)];
        RowChange {
            op,
            table: t(),
            before: before.map(row),
            after: after.map(row),
        }
    }

    fn plans() -> Plans {
        let t = t();
        Plans::from([(t.qualified_name(), Arc::new(statements(&t)))])
    }

    fn txs() -> Vec<OrphanTx> {
        vec![
            OrphanTx {
                gtid: Gtid::new(1, 1, 7),
                commit_ts_ms: 1_000,
                changes: vec![
                    change(Op::Insert, None, Some((1, "a"))),
                    change(Op::Update, Some((2, "b")), Some((2, "c"))),
                ],
            },
            OrphanTx {
                gtid: Gtid::new(1, 1, 8),
                commit_ts_ms: 2_000,
                changes: vec![change(Op::Delete, Some((3, "d")), None)],
            },
        ]
    }

    #[test]
    fn the_orphans_are_written_forward_one_transaction_each() {
        let sql = forward_sql(&txs(), &plans()).unwrap();
        let stmts: Vec<&str> = sql
            .lines()
            .filter(|l| !l.starts_with("--") && !l.is_empty())
            .collect();
        assert_eq!(stmts.len(), 7, "{sql}");
        assert!(
            sql.starts_with("-- orphan 1-1-7 committed 1970-01-01 00:00:01"),
            "{sql}"
        );
        assert!(
            stmts[1].starts_with("INSERT INTO `d`.`t` (`id`,`v`,`f`) VALUES (1,"),
            "{sql}"
        );
        assert!(
            stmts[2].starts_with("UPDATE `d`.`t` SET `id`=2,")
                && stmts[2].ends_with("WHERE `id`=2;"),
            "{sql}"
        );
        assert_eq!(stmts[3], "COMMIT;");
        assert_eq!(stmts[5], "DELETE FROM `d`.`t` WHERE `id`=3;");
    }

    #[test]
    fn the_inverses_run_last_change_first_and_apply_only_to_the_row_the_orphan_left() {
        let inv = inverse(&txs(), &plans()).unwrap();
        let order: Vec<(u64, &str, bool)> = inv
            .iter()
            .map(|i| (i.gtid.seq, i.sql.split(' ').next().unwrap(), i.reinsert))
            .collect();
        assert_eq!(
            order,
            [
                (8, "INSERT", true),
                (7, "UPDATE", false),
                (7, "DELETE", false)
            ]
        );
        // The deleted row comes back whole; the update's before-image goes back where the row
        // is still its after-image; the insert goes where the row is still the inserted one.
        assert!(
            inv[0]
                .sql
                .starts_with("INSERT INTO `d`.`t` (`id`,`v`,`f`) VALUES (3,"),
            "{}",
            inv[0].sql
        );
        let text = |s: &str| {
            let mut o = String::new();
            crate::sql::push_literal_text(&mut o, s);
            o
        };
        assert_eq!(
            inv[1].sql,
            format!(
                "UPDATE `d`.`t` SET `id`=2,`v`={},`f`=5e-1 WHERE `id`<=>2 AND `v`<=>{} LIMIT 1",
                text("b"),
                text("c")
            )
        );
        // FLOAT is left out of the match.
        assert_eq!(
            inv[2].sql,
            format!(
                "DELETE FROM `d`.`t` WHERE `id`<=>1 AND `v`<=>{} LIMIT 1",
                text("a")
            )
        );
        assert_eq!(
            (inv[2].table.as_str(), inv[2].key.as_str()),
            ("d.t", "id=1")
        );
    }
}
