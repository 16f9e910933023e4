//! `orphans`: the transactions a site committed that the other site never applied — after a
//! failover, the old primary's last writes that did not make it across.
//!
//! How: read the replica's checkpoint for the source's changelog (the GTID position it applied),
//! then read the source's own binlog from that position to its end, as a replica does, and list
//! every transaction the source's producer would have captured: GTID, commit time, captured
//! tables with row counts, DDL on captured tables. The binlog is cut into transactions by the
//! producer's own framer (`continuum_common::binlog::Framer`), and what counts as captured is the
//! producer's rules (`producer.include`/`exclude` of this configuration, the system databases
//! never, `tables_without_primary_key`), so a transaction is listed exactly when the producer
//! would have written it. Not listed: what Continuum's apply wrote (`skip_replication`), users,
//! grants and other statements the pipeline does not replicate, changes to excluded or system
//! tables. Every statement shown has its credentials redacted (`continuum_common::redact`).
//!
//! Nothing is applied or dropped: the list is for a person to decide (see docs/failover.md).

use std::collections::BTreeMap;

use futures::StreamExt;
use mysql_async::binlog::events::EventData;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use serde::Serialize;

use continuum_common::binlog::{
    gtid_dump, parse_gtid_event, refusal_of, FrameInput, Framer, Refusal, Step, MARIADB_GTID,
};
use continuum_common::config::NoPrimaryKey;
use continuum_common::filter::TableFilter;
use continuum_common::redact::redact;
use continuum_common::{db, ConfigError, SiteConfig};
use continuum_schemas::{Gtid, GtidPosition};

use crate::error::SiteDbError;

/// What error 1236 means for `orphans`, and what to do.
fn refused(
    source_site: &str,
    replica: &str,
    position: &str,
    refusal: &Refusal,
    message: &str,
) -> String {
    let why = match refusal {
        Refusal::Purged => "the binlog files that hold it were purged".to_owned(),
        Refusal::NotInBinlog { gtid } => format!(
            "{source_site} never wrote GTID {gtid}: its binlog ends before it in that domain, so {source_site} is not the server that wrote what {replica} applied, or it was reset or restored since"
        ),
        Refusal::Diverged { gtid } => format!(
            "GTID {gtid} is not in {source_site}'s binlog although it goes further in that domain: the two sites' histories have diverged"
        ),
        Refusal::StrictModeHole { gtid } => format!(
            "{source_site}'s binlog lacks GTID {gtid} although it holds an earlier and a later one of that domain and server (a transaction that was not binlogged)"
        ),
        Refusal::EventTooLarge => format!(
            "{source_site} could not send a binlog event after it (over its 1 GiB replication limit, max_allowed_packet, or a corrupt binlog)"
        ),
        Refusal::Other => format!("{source_site} refused to send its binlog from there"),
    };
    format!(
        "{source_site}'s binlog cannot be read from the position {position} that {replica} applied up to: {why} (error 1236: {message}). The orphans cannot be listed from the binlog; compare the sites' tables with continuum-consumer verify instead"
    )
}

#[derive(Debug, thiserror::Error)]
pub enum OrphansError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Db(#[from] SiteDbError),
    #[error("the {replica} site has no checkpoint for {topic}: it never applied {source_site}'s changelog, so every transaction of {source_site} is unapplied; nothing to compare")]
    NoCheckpoint {
        replica: String,
        topic: String,
        source_site: String,
    },
    /// Error 1236: the source does not send its binlog from what the replica applied.
    #[error("{}", refused(.source_site, .replica, .position, .refusal, .message))]
    PositionRefused {
        source_site: String,
        replica: String,
        position: String,
        refusal: Refusal,
        message: String,
    },
    #[error("binlog of {site}: {0}", site = .1)]
    Binlog(String, String),
}

#[derive(Debug, Clone, clap::Args)]
pub struct OrphansArgs {
    /// The site whose transactions may be orphaned: the old primary (default: this site).
    #[arg(long, value_name = "SITE")]
    pub source: Option<String>,
    /// The site that should have applied them (default: the other site).
    #[arg(long, value_name = "SITE")]
    pub replica: Option<String>,
    /// Replica server_id to read the binlog with (default: producer.server_id + 1000).
    #[arg(long)]
    pub server_id: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Roll the orphans back at the source site (the old primary, now following the new one):
    /// write them as SQL to `--sql-file`, then undo their row changes in one transaction that
    /// no producer captures (see docs/failover.md).
    #[arg(long)]
    pub rewind: bool,
    /// Where `--rewind` writes the rolled-back transactions as SQL (default:
    /// `orphans-<site>-<unix time>.sql` in the current directory).
    #[arg(long, value_name = "PATH", requires = "rewind")]
    pub sql_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Orphan {
    /// The transaction's GTID at the source.
    pub gtid: String,
    /// Commit time, UTC, seconds since the epoch (binlog resolution).
    pub time: i64,
    /// `db.table` -> rows changed.
    pub tables: BTreeMap<String, u64>,
    /// Its schema changes, as the statements ran (credentials redacted).
    pub ddl: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OrphansReport {
    /// The site whose binlog holds the orphans.
    pub source: String,
    /// The site that did not apply them.
    pub replica: String,
    /// The source's changelog topic, whose checkpoint at the replica says what was applied.
    pub topic: String,
    /// What the replica applied of the source's changelog.
    pub applied_position: String,
    /// The source's binlog position at the time of the report.
    pub source_position: String,
    /// How many orphans: source transactions after `applied_position`.
    pub count: usize,
    /// Commit times of the first and last orphan, UTC seconds since the epoch.
    pub first_time: Option<i64>,
    pub last_time: Option<i64>,
    /// The orphans, in commit order.
    pub orphans: Vec<Orphan>,
}

/// Lists the orphans.
pub async fn orphans(cfg: &SiteConfig, args: &OrphansArgs) -> Result<OrphansReport, OrphansError> {
    let source = args.source.clone().unwrap_or_else(|| cfg.site.clone());
    let replica = match args.replica.clone() {
        Some(r) => r,
        None => {
            if source == cfg.site {
                cfg.other_site("orphans --replica")?
            } else {
                cfg.site.clone()
            }
        }
    };
    let topic = cfg.topic_of(&source)?;
    let source_db = cfg.database_of(&source)?.clone();
    let replica_db = cfg.database_of(&replica)?.clone();
    let dberr = SiteDbError::at;
    let rtarget = db::describe(&replica_db);
    let mut rconn = Conn::new(db::opts(&replica_db, &[])?).await.map_err(dberr(
        &replica,
        &rtarget,
        "connecting",
    ))?;
    let applied: Option<String> = rconn
        .exec_first("SELECT gtid_position FROM continuum.checkpoint WHERE source_topic = ? AND `partition` = 0", (&topic,))
        .await
        .or_else(|e| match &e {
            mysql_async::Error::Server(s) if s.code == 1146 || s.code == 1049 => Ok(None),
            _ => Err(e),
        })
        .map_err(dberr(&replica, &rtarget, "reading the checkpoint"))?;
    let applied: GtidPosition = applied
        .ok_or_else(|| OrphansError::NoCheckpoint {
            replica: replica.clone(),
            topic: topic.clone(),
            source_site: source.clone(),
        })?
        .parse()
        .map_err(|e: continuum_schemas::ParsePositionError| {
            OrphansError::Binlog(e.to_string(), source.clone())
        })?;

    let starget = db::describe(&source_db);
    let sopts = db::replica_opts(&db::opts(&source_db, &[])?);
    let filter = TableFilter::new(&cfg.producer)?;
    let no_pk = cfg.producer.tables_without_primary_key;
    let mut sconn =
        Conn::new(sopts.clone())
            .await
            .map_err(dberr(&source, &starget, "connecting"))?;
    let now: Option<String> = sconn
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .map_err(dberr(&source, &starget, "reading @@gtid_binlog_pos"))?;
    let source_position: GtidPosition =
        now.unwrap_or_default()
            .parse()
            .map_err(|e: continuum_schemas::ParsePositionError| {
                OrphansError::Binlog(e.to_string(), source.clone())
            })?;
    let mut report = OrphansReport {
        source: source.clone(),
        replica: replica.clone(),
        topic,
        applied_position: applied.to_string(),
        source_position: source_position.to_string(),
        count: 0,
        first_time: None,
        last_time: None,
        orphans: Vec::new(),
    };
    if applied.covers(&source_position) {
        return Ok(report);
    }
    let start = read_start(&applied, &source_position);
    let server_id = args
        .server_id
        .unwrap_or(cfg.producer.server_id.wrapping_add(1000));
    let mut stream = gtid_dump(sconn, server_id, &start, true, &[])
        .await
        .map_err(|e| stream_error(e, &source, &replica, &start, &starget))?;
    let mut framer = Framer::new();
    // The transaction being read, as it would be listed.
    let mut open: Option<Orphan> = None;
    // table id -> `db.table` when the producer captures its rows.
    let mut tables: BTreeMap<u64, Option<String>> = BTreeMap::new();
    while let Some(ev) = stream.next().await {
        let ev = ev.map_err(|e| stream_error(e, &source, &replica, &start, &starget))?;
        let h = ev.header();
        if h.event_type_raw() == MARIADB_GTID {
            let (gtid, flags) = parse_gtid_event(ev.data(), h.server_id())
                .map_err(|e| OrphansError::Binlog(e, source.clone()))?;
            framer
                .feed(FrameInput::Gtid {
                    gtid,
                    flags,
                    event_flags: h.flags_raw(),
                })
                .map_err(|e| OrphansError::Binlog(e.to_string(), source.clone()))?;
            open = Some(Orphan {
                gtid: gtid.to_string(),
                time: h.timestamp() as i64,
                tables: BTreeMap::new(),
                ddl: Vec::new(),
            });
            continue;
        }
        let data = ev.read_data().ok().flatten();
        let captured_tx = framer.open().is_some_and(|f| !f.skip_replication);
        let mut statement = None;
        let input = match &data {
            Some(EventData::XidEvent(_)) => FrameInput::Xid,
            Some(EventData::QueryEvent(q)) => {
                statement = Some((q.query().into_owned(), q.schema().into_owned()));
                FrameInput::Query(statement.as_ref().map(|(s, _)| s.as_str()).unwrap_or(""))
            }
            Some(EventData::TableMapEvent(t)) => {
                let (d, n) = (t.database_name(), t.table_name());
                let captured = filter.captures(&d, &n)
                    && (no_pk == NoPrimaryKey::Refuse || has_primary_key(t));
                tables.insert(t.table_id(), captured.then(|| format!("{d}.{n}")));
                FrameInput::Other
            }
            Some(EventData::RowsEvent(r)) => {
                if let (true, Some(o), Some(Some(name)), Some(tme)) = (
                    captured_tx,
                    open.as_mut(),
                    tables.get(&r.table_id()),
                    stream.get_tme(r.table_id()),
                ) {
                    *o.tables.entry(name.clone()).or_default() += r.rows(tme).count() as u64;
                }
                FrameInput::Other
            }
            _ => FrameInput::Other,
        };
        let step = framer
            .feed(input)
            .map_err(|e| OrphansError::Binlog(e.to_string(), source.clone()))?;
        match step {
            Step::Statement { closed } => {
                if let (true, Some(o), Some((sql, schema))) =
                    (captured_tx, open.as_mut(), &statement)
                {
                    if filter.captures_ddl(sql, schema) == Ok(true) {
                        o.ddl.push(redact(sql).chars().take(500).collect());
                    }
                }
                if let Some(frame) = closed {
                    finish(open.take(), frame.skip_replication, &mut report);
                }
            }
            Step::Closed(frame) => finish(open.take(), frame.skip_replication, &mut report),
            _ => {}
        }
    }
    report.count = report.orphans.len();
    report.first_time = report.orphans.first().map(|o| o.time);
    report.last_time = report.orphans.last().map(|o| o.time);
    Ok(report)
}

/// Where the orphans begin in the source's binlog: what the replica applied, in the source's
/// own domains; domains the replica never saw start from the beginning of the source's binlog.
fn read_start(applied: &GtidPosition, source_position: &GtidPosition) -> GtidPosition {
    source_position
        .iter()
        .filter_map(|g| applied.get(g.domain))
        .collect()
}

/// Lists the transaction that just ended, if the producer would have written anything of it.
fn finish(orphan: Option<Orphan>, skip_replication: bool, report: &mut OrphansReport) {
    if let Some(o) = orphan {
        if !skip_replication && (!o.tables.is_empty() || !o.ddl.is_empty()) {
            report.orphans.push(o);
        }
    }
}

/// Whether a TABLE_MAP's metadata (`binlog_row_metadata=FULL`) names a primary key.
fn has_primary_key(tme: &mysql_async::binlog::events::TableMapEvent<'_>) -> bool {
    mysql_async::binlog::events::OptionalMetaExtractor::new(tme.iter_optional_meta())
        .map(|m| m.iter_primary_key().next().is_some())
        .unwrap_or(true)
}

fn stream_error(
    e: mysql_async::Error,
    source: &str,
    replica: &str,
    start: &GtidPosition,
    target: &str,
) -> OrphansError {
    if let mysql_async::Error::Server(s) = &e {
        if s.code == 1236 {
            return OrphansError::PositionRefused {
                source_site: source.to_owned(),
                replica: replica.to_owned(),
                position: start.to_string(),
                refusal: refusal_of(&s.message),
                message: s.message.clone(),
            };
        }
    }
    SiteDbError::at(source, target, "reading the binlog")(e).into()
}

fn fmt_time(secs: i64) -> String {
    continuum_schemas::types::DateTime::from_epoch_micros(secs * 1_000_000).to_string()[..19]
        .to_owned()
        + "Z"
}

/// The human form.
pub fn render(r: &OrphansReport) -> String {
    let mut out = format!(
        "orphans: transactions of {} that {} never applied\n  {} applied {} up to {}; {}'s binlog is at {}\n",
        r.source, r.replica, r.replica, r.topic, r.applied_position, r.source, r.source_position
    );
    if r.orphans.is_empty() {
        out.push_str("  none: every transaction of the source reached the replica\n");
        return out;
    }
    out.push_str(&format!(
        "  {} transaction(s), committed between {} and {}\n",
        r.count,
        r.first_time.map(fmt_time).unwrap_or_default(),
        r.last_time.map(fmt_time).unwrap_or_default()
    ));
    for o in &r.orphans {
        let tables: Vec<String> = o
            .tables
            .iter()
            .map(|(t, n)| format!("{t} ({n} rows)"))
            .collect();
        out.push_str(&format!(
            "  {:<16} {}  {}",
            o.gtid,
            fmt_time(o.time),
            tables.join(", ")
        ));
        for d in &o.ddl {
            out.push_str(&format!("  DDL: {d}"));
        }
        out.push('\n');
    }
    out.push_str("  Nothing was applied or discarded. To decide what to do with them, see docs/failover.md (\"Orphans\").\n");
    out
}

/// What `orphans --rewind` found and did.
#[derive(Debug, Serialize)]
pub struct Rewound {
    pub orphans: OrphansReport,
    pub rewind: crate::rewind::RewindReport,
}

/// `continuum-consumer orphans`: prints the report; true when there are none. With `--rewind`,
/// rolls them back first: true once they are.
pub async fn main(cfg: SiteConfig, args: OrphansArgs) -> Result<bool, OrphansError> {
    let r = orphans(&cfg, &args).await?;
    if !args.rewind {
        crate::report::print(&r, args.json, render);
        return Ok(r.orphans.is_empty());
    }
    if r.orphans.is_empty() {
        let done = Rewound {
            orphans: r,
            rewind: crate::rewind::RewindReport::default(),
        };
        crate::report::print(&done, args.json, |d| render(&d.orphans));
        return Ok(true);
    }
    let positions = r
        .applied_position
        .parse::<GtidPosition>()
        .and_then(|a| Ok((a, r.source_position.parse::<GtidPosition>()?)))
        .map_err(|e| OrphansError::Binlog(e.to_string(), r.source.clone()))?;
    let start = read_start(&positions.0, &positions.1);
    let server_id = args
        .server_id
        .unwrap_or(cfg.producer.server_id.wrapping_add(1000));
    let file = args.sql_file.clone().unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        std::path::PathBuf::from(format!("orphans-{}-{now}.sql", r.source))
    });
    let rewind = crate::rewind::rewind(&cfg, &r, &start, server_id, &file).await?;
    let done = Rewound { orphans: r, rewind };
    crate::report::print(&done, args.json, |d| {
        render(&d.orphans).replace(
            "  Nothing was applied or discarded. To decide what to do with them, see docs/failover.md (\"Orphans\").\n",
            "",
        ) + &crate::rewind::render(&d.rewind)
    });
    Ok(true)
}

/// The GTIDs of a report, for checks.
pub fn gtids(r: &OrphansReport) -> Vec<Gtid> {
    r.orphans
        .iter()
        .filter_map(|o| o.gtid.parse().ok())
        .collect()
}
