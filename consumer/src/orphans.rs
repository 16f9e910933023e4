//! `orphans`: the transactions a site committed that the other site never applied — after a
//! failover, the old primary's last writes that did not make it across.
//!
//! How: read the replica's checkpoint for the source's changelog (the GTID position it applied),
//! then read the source's own binlog from that position to its end, as a replica does, and list
//! every transaction that originated there (events written by Continuum's apply carry the
//! `skip_replication` flag and are not listed): GTID, commit time, tables with row counts, DDL.
//!
//! Nothing is applied or dropped: the list is for a person to decide (see docs/failover.md).

use std::collections::BTreeMap;

use futures::StreamExt;
use mysql_async::binlog::events::EventData;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn};
use serde::Serialize;

use continuum_common::binlog::{
    parse_gtid_event, FL_STANDALONE, MARIADB_GTID, SKIP_REPLICATION_FLAG,
};
use continuum_common::{db, ConfigError, SiteConfig};
use continuum_schemas::{Gtid, GtidPosition};

#[derive(Debug, thiserror::Error)]
pub enum OrphansError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{site} MariaDB {target}: {what}: {source}")]
    Db {
        site: String,
        target: String,
        what: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("the {replica} site has no checkpoint for {topic}: it never applied {source_site}'s changelog, so every transaction of {source_site} is unapplied; nothing to compare")]
    NoCheckpoint {
        replica: String,
        topic: String,
        source_site: String,
    },
    #[error("{source_site}'s binlog no longer holds the position {position} that {replica} applied up to (error 1236: {message}); the orphans cannot be listed from the binlog")]
    Purged {
        source_site: String,
        replica: String,
        position: String,
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
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Orphan {
    pub gtid: String,
    /// Commit time, UTC, seconds since the epoch (binlog resolution).
    pub time: i64,
    /// `db.table` -> rows changed.
    pub tables: BTreeMap<String, u64>,
    pub ddl: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OrphansReport {
    pub source: String,
    pub replica: String,
    pub topic: String,
    /// What the replica applied of the source's changelog.
    pub applied_position: String,
    /// The source's binlog position at the time of the report.
    pub source_position: String,
    pub count: usize,
    pub first_time: Option<i64>,
    pub last_time: Option<i64>,
    pub orphans: Vec<Orphan>,
}

struct Open {
    orphan: Orphan,
    flagged: bool,
    standalone: bool,
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
    let dberr = |site: &str, target: &str, what: &str| {
        let (site, target, what) = (site.to_owned(), target.to_owned(), what.to_owned());
        move |source| OrphansError::Db {
            site,
            target,
            what,
            source,
        }
    };
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
    let sopts = db::opts(&source_db, &[])?;
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
    // Read from what the replica applied, in the source's own domains; domains the replica
    // never saw start from the beginning of the source's binlog.
    let start: GtidPosition = source_position
        .iter()
        .filter_map(|g| applied.get(g.domain))
        .collect();
    let server_id = args
        .server_id
        .unwrap_or(cfg.producer.server_id.wrapping_add(1000));
    sconn
        .query_drop("SET @mariadb_slave_capability=4")
        .await
        .map_err(dberr(&source, &starget, "setting up the binlog stream"))?;
    sconn
        .exec_drop("SET @slave_connect_state=?", (start.to_string(),))
        .await
        .map_err(dberr(&source, &starget, "setting up the binlog stream"))?;
    let request = BinlogStreamRequest::new(server_id)
        .with_filename(b"")
        .with_pos(4u64)
        .with_non_blocking();
    let mut stream = sconn
        .get_binlog_stream(request)
        .await
        .map_err(|e| purged(e, &source, &replica, &start, &starget))?;
    let mut open: Option<Open> = None;
    let mut tables: BTreeMap<u64, String> = BTreeMap::new();
    while let Some(ev) = stream.next().await {
        let ev = ev.map_err(|e| purged(e, &source, &replica, &start, &starget))?;
        let h = ev.header();
        let ty = h.event_type_raw();
        if ty == MARIADB_GTID {
            let (gtid, flags) = parse_gtid_event(ev.data(), h.server_id())
                .map_err(|e| OrphansError::Binlog(e, source.clone()))?;
            open = Some(Open {
                orphan: Orphan {
                    gtid: gtid.to_string(),
                    time: h.timestamp() as i64,
                    tables: BTreeMap::new(),
                    ddl: Vec::new(),
                },
                flagged: h.flags_raw() & SKIP_REPLICATION_FLAG != 0,
                standalone: flags & FL_STANDALONE != 0,
            });
            continue;
        }
        let Ok(Some(data)) = ev.read_data() else {
            continue;
        };
        match data {
            EventData::TableMapEvent(t) => {
                tables.insert(
                    t.table_id(),
                    format!("{}.{}", t.database_name(), t.table_name()),
                );
            }
            EventData::RowsEvent(r) => {
                if let (Some(o), Some(tme)) = (open.as_mut(), stream.get_tme(r.table_id())) {
                    let n = r.rows(tme).count() as u64;
                    let name = tables
                        .get(&r.table_id())
                        .cloned()
                        .unwrap_or_else(|| format!("table id {}", r.table_id()));
                    *o.orphan.tables.entry(name).or_default() += n;
                }
            }
            EventData::XidEvent(_) => finish(&mut open, &mut report),
            EventData::QueryEvent(q) => {
                let sql = q.query();
                let upper = sql.trim_start().to_ascii_uppercase();
                if upper.starts_with("COMMIT") || upper.starts_with("ROLLBACK") {
                    finish(&mut open, &mut report);
                } else if !upper.starts_with("BEGIN") {
                    if let Some(o) = open.as_mut() {
                        o.orphan.ddl.push(sql.chars().take(500).collect());
                        if o.standalone {
                            finish(&mut open, &mut report);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    report.count = report.orphans.len();
    report.first_time = report.orphans.first().map(|o| o.time);
    report.last_time = report.orphans.last().map(|o| o.time);
    Ok(report)
}

fn finish(open: &mut Option<Open>, report: &mut OrphansReport) {
    if let Some(o) = open.take() {
        if !o.flagged {
            report.orphans.push(o.orphan);
        }
    }
}

fn purged(
    e: mysql_async::Error,
    source: &str,
    replica: &str,
    start: &GtidPosition,
    target: &str,
) -> OrphansError {
    if let mysql_async::Error::Server(s) = &e {
        if s.code == 1236 {
            return OrphansError::Purged {
                source_site: source.to_owned(),
                replica: replica.to_owned(),
                position: start.to_string(),
                message: s.message.clone(),
            };
        }
    }
    OrphansError::Db {
        site: source.to_owned(),
        target: target.to_owned(),
        what: "reading the binlog".into(),
        source: e,
    }
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

/// `continuum-consumer orphans`: prints the report; true when there are none.
pub async fn main(cfg: SiteConfig, args: OrphansArgs) -> Result<bool, OrphansError> {
    let r = orphans(&cfg, &args).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).expect("report serializes")
        );
    } else {
        print!("{}", render(&r));
    }
    Ok(r.orphans.is_empty())
}

/// The GTIDs of a report, for checks.
pub fn gtids(r: &OrphansReport) -> Vec<Gtid> {
    r.orphans
        .iter()
        .filter_map(|o| o.gtid.parse().ok())
        .collect()
}
