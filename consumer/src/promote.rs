//! `promote`: makes this site the primary. Run at the replica site on failover (the primary is
//! lost), or for a planned switchover while the old primary still answers.
//!
//! Steps:
//! 1. refuse if this site is already primary (`read_only` is OFF), saying when it became so;
//! 2. if the old primary's database answers (a switchover): list this site's own orphans (its
//!    transactions the old primary never applied) and refuse without `--orphans`; with
//!    `--orphans discard`, take the old primary's apply lock first, so that no apply there
//!    reads or writes its checkpoint until it has been moved past them;
//! 3. fence the old primary: make it read-only, then read its final GTID position
//!    (`@@gtid_binlog_pos`): from then on it takes no writes, so that position is everything it
//!    ever took;
//! 4. unless `--now`, drain: wait until this site's checkpoint of the old primary's changelog
//!    covers that final position (it gets there through the old primary's heartbeats once its
//!    producer has read its last transaction). With no answer from the old primary (a
//!    failover), wait until apply has applied what the local cluster holds of the changelog,
//!    sampled until then;
//! 5. with `--orphans discard`, move the old primary's checkpoint past them; release its lock;
//! 6. stop applying: make this site writable (`read_only=OFF`); apply sees it, stops at a commit
//!    boundary and releases its lock, which promote takes to be sure apply has stopped;
//! 7. read the final applied GTID position, list the old primary's orphans if it answers (none
//!    after a drain to its final position), record the promotion in `continuum.promotion` and
//!    print the next steps.
//!
//! So at no instant are both sites writable, and a switchover loses no write the old primary
//! acknowledged. If a step before 6 fails, the old primary is made writable again (the error
//! says whether that worked) and this site is left a replica: nothing changed. Repeating
//! promote changes nothing: a site that is already primary is refused.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use rdkafka::consumer::BaseConsumer;
use serde::Serialize;

use continuum_common::lock::{get_lock, lock_holder};
use continuum_common::{db, kafka, ConfigError, SiteConfig};
use continuum_schemas::GtidPosition;

use crate::error::SiteDbError;
use crate::lock::lock_name;
use crate::orphans::{self, OrphansArgs, OrphansReport};

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Db(#[from] SiteDbError),
    #[error("{site} is already the primary{since}; nothing was changed. To move the primary role to another site, run promote there")]
    AlreadyPrimary { site: String, since: String },
    #[error("the drain did not finish within {timeout:?}: apply is at offset {at} of {high} of {topic} in the {site} cluster. Is `continuum-consumer run` running here? Promote without draining with --now (what is not applied becomes orphans)")]
    DrainTimeout {
        site: String,
        topic: String,
        at: i64,
        high: i64,
        timeout: Duration,
    },
    #[error("the drain did not finish within {timeout:?}: {site} applied {topic} up to {applied}, short of {old}'s final position {target} ({behind}). Are {old}'s continuum-producer and `continuum-consumer run` here running? Promote without draining with --now (what is not applied becomes orphans)")]
    DrainToPositionTimeout {
        site: String,
        old: String,
        topic: String,
        applied: String,
        target: String,
        behind: String,
        timeout: Duration,
    },
    #[error("{cause}. {undo}")]
    Undone {
        cause: Box<PromoteError>,
        undo: String,
    },
    #[error("an apply at {old} holds its lock '{lock}' (MariaDB connection {holder}) and did not release it within {waited:?}: {old}'s checkpoint of {topic} cannot be moved past the discarded orphans while it applies. Stop `continuum-consumer run` at {old} (or whatever holds connection {holder}), then run promote again; nothing was changed")]
    OldApplyRunning {
        old: String,
        topic: String,
        lock: String,
        holder: String,
        waited: Duration,
    },
    #[error("apply did not release its lock within {0:?} after the site became writable; is an old apply process stuck? Stop it, then run promote again")]
    ApplyStillRunning(Duration),
    #[error("Kafka: {0}")]
    Kafka(String),
    #[error("{0}")]
    Orphans(#[from] orphans::OrphansError),
    #[error("{site} has {count} transaction(s) that {old} never applied (its orphans, listed below); they would reach {old} once it follows {site} again. Decide before the switchover: --orphans apply (let {old} apply them) or --orphans discard (it skips them). See docs/failover.md\n{list}")]
    UnresolvedOrphans {
        site: String,
        old: String,
        count: usize,
        list: String,
    },
}

/// What happens to this site's own orphans when the old primary follows it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrphanDecision {
    /// The other site applies them, from this site's changelog.
    Apply,
    /// The other site skips them: its checkpoint is moved past them.
    Discard,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PromoteArgs {
    /// Do not wait for apply to drain what the local cluster holds.
    #[arg(long)]
    pub now: bool,
    /// How long to wait for the drain.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "300s")]
    pub drain_timeout: Duration,
    /// What to do with this site's own transactions that the old primary never applied, when
    /// there are any (a switchover back after a failover): required then.
    #[arg(long, value_enum)]
    pub orphans: Option<OrphanDecision>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct Promotion {
    /// The site made the primary (this one).
    pub site: String,
    /// The site that was the primary.
    pub old_primary: String,
    /// The old primary's changelog topic, applied here.
    pub topic: String,
    /// Whether apply here caught up with the old primary's changelog first (not with `--now`).
    pub drained: bool,
    /// The last of the old primary's GTID positions applied here.
    pub applied_position: String,
    /// When this site became writable, UTC (as `continuum.promotion` records it).
    pub promoted_at: String,
    /// Whether the old primary's database answered (so orphans could be listed).
    pub old_primary_reachable: bool,
    /// Whether the old primary is read-only now (made so, or found so); false when it could not
    /// be reached.
    pub old_primary_demoted: bool,
    /// The old primary's transactions this site never applied, if it could be read.
    pub orphans: Option<OrphansReport>,
    /// This site's own orphans (transactions the old primary never applied) and the decision.
    pub own_orphans: Option<OrphansReport>,
    pub own_orphans_decision: Option<OrphanDecision>,
    /// How long the promotion took.
    pub seconds: f64,
}

async fn checkpoint(conn: &mut Conn, topic: &str) -> Result<(i64, String), mysql_async::Error> {
    let r: Option<(i64, String)> = conn
        .exec_first("SELECT next_offset, gtid_position FROM continuum.checkpoint WHERE source_topic = ? AND `partition` = 0", (topic,))
        .await
        .or_else(|e| match &e {
            mysql_async::Error::Server(s) if s.code == 1146 || s.code == 1049 => Ok(None),
            _ => Err(e),
        })?;
    Ok(r.unwrap_or((0, String::new())))
}

/// The domains in which `applied` is short of `target`: (domain, applied seq if any, target
/// seq). Empty when `applied` covers `target`.
pub fn behind(applied: &GtidPosition, target: &GtidPosition) -> Vec<(u32, Option<u64>, u64)> {
    target
        .iter()
        .filter(|g| !applied.contains(g))
        .map(|g| (g.domain, applied.get(g.domain).map(|a| a.seq), g.seq))
        .collect()
}

fn describe_behind(b: &[(u32, Option<u64>, u64)]) -> String {
    b.iter()
        .map(|(d, a, t)| match a {
            Some(a) => format!("domain {d} at {a} of {t}"),
            None => format!("domain {d} at nothing of {t}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How long promote waits for an apply lock (the old primary's, before discarding orphans; its
/// own apply's, after the site became writable).
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Connects to `site`'s database if it is configured and answers within 5 s.
async fn connect_to(cfg: &SiteConfig, site: &str) -> Option<(Conn, String)> {
    let db = cfg.database_of(site).ok()?;
    let opts = db::opts(db, &[]).ok()?;
    match tokio::time::timeout(Duration::from_secs(5), Conn::new(opts)).await {
        Ok(Ok(c)) => Some((c, db::describe(db))),
        _ => None,
    }
}

/// The old primary while promote works on it: fenced (read-only) until the promotion is done,
/// or made writable again if promote fails before this site became writable.
struct OldPrimary {
    site: String,
    target: String,
    conn: Conn,
    fenced: bool,
}

impl OldPrimary {
    fn err(&self, what: &str) -> impl FnOnce(mysql_async::Error) -> SiteDbError + use<> {
        SiteDbError::at(&self.site, &self.target, what)
    }

    /// Makes it read-only and returns its final GTID position: every transaction it took.
    /// (`fenced` says whether promote changed it, and so has to undo that on failure.)
    async fn fence(&mut self) -> Result<GtidPosition, PromoteError> {
        let read_only: Option<u8> = self
            .conn
            .query_first("SELECT @@read_only")
            .await
            .map_err(self.err("reading read_only"))?;
        if read_only != Some(1) {
            self.conn
                .query_drop("SET GLOBAL read_only = ON")
                .await
                .map_err(self.err("making it read-only before this site becomes writable (SET GLOBAL read_only = ON needs READ_ONLY ADMIN or SUPER); nothing was changed"))?;
            self.fenced = true;
        }
        let pos: Option<String> = self
            .conn
            .query_first("SELECT @@gtid_binlog_pos")
            .await
            .map_err(self.err("reading its final GTID position (@@gtid_binlog_pos)"))?;
        let pos = pos.unwrap_or_default();
        pos.parse().map_err(|e| {
            self.err(&format!(
                "reading its final GTID position: '{pos}' does not parse"
            ))(mysql_async::Error::Other(format!("{e}").into()))
            .into()
        })
    }

    /// Undoes the fence after a failure, saying what came of it.
    async fn unfence(&mut self) -> String {
        if !self.fenced {
            return String::new();
        }
        match self.conn.query_drop("SET GLOBAL read_only = OFF").await {
            Ok(()) => {
                self.fenced = false;
                format!(
                    "{} was made writable again: it is still the primary, and nothing was changed",
                    self.site
                )
            }
            Err(e) => format!(
                "{} could not be made writable again ({e}): both sites are read-only now; run SET GLOBAL read_only = OFF at {} to keep it the primary",
                self.site, self.site
            ),
        }
    }
}

/// The old primary's apply lock on this site's changelog, held while its checkpoint is moved.
async fn lock_old_apply(
    old: &str,
    topic: &str,
    target: &str,
    conn: &mut Conn,
) -> Result<(), PromoteError> {
    let name = lock_name(topic);
    let what = |doing: &str| format!("{doing} the apply lock '{name}'");
    if get_lock(conn, &name, Duration::ZERO)
        .await
        .map_err(SiteDbError::at(old, target, &what("taking")))?
    {
        return Ok(());
    }
    let holder = match lock_holder(conn, &name).await {
        Ok(Some(h)) => h.to_string(),
        _ => "unknown".to_owned(),
    };
    tracing::warn!(lock = %name, holder = %holder, "waiting up to {}s for the apply at {old} to release its lock before moving its checkpoint", LOCK_WAIT.as_secs());
    if get_lock(conn, &name, LOCK_WAIT)
        .await
        .map_err(SiteDbError::at(old, target, &what("waiting for")))?
    {
        return Ok(());
    }
    Err(PromoteError::OldApplyRunning {
        old: old.to_owned(),
        topic: topic.to_owned(),
        lock: name,
        holder,
        waited: LOCK_WAIT,
    })
}

pub async fn promote(cfg: &SiteConfig, args: &PromoteArgs) -> Result<Promotion, PromoteError> {
    let started = Instant::now();
    let site = cfg.site.clone();
    let old = crate::settings::apply_source_site(cfg)?;
    let topic = cfg.topic_of(&old)?;
    let target = db::describe(&cfg.database);
    let e = |what: &str| SiteDbError::at(&site, &target, what);
    let mut conn = Conn::new(db::opts(&cfg.database, &[])?)
        .await
        .map_err(e("connecting"))?;
    let read_only: Option<u8> = conn
        .query_first("SELECT @@read_only")
        .await
        .map_err(e("reading read_only"))?;
    if read_only == Some(0) {
        let since: Option<String> = conn
            .exec_first("SELECT CONCAT(' since ', promoted_at, ' UTC') FROM continuum.promotion WHERE site = ? ORDER BY id DESC LIMIT 1", (&site,))
            .await
            .unwrap_or(None);
        return Err(PromoteError::AlreadyPrimary {
            site,
            since: since.unwrap_or_default(),
        });
    }

    // The old primary, if it answers: a planned switchover. Otherwise a failover.
    let mut old_primary = connect_to(cfg, &old)
        .await
        .map(|(conn, target)| OldPrimary {
            site: old.clone(),
            target,
            conn,
            fenced: false,
        });

    // A switchover back: this site's own orphans from before (its transactions the old primary
    // never applied) would reach the old primary once it follows this site again. Never
    // silently: the operator decides.
    let mut own_orphans = None;
    if old_primary.is_some() {
        let own = orphans::orphans(
            cfg,
            &OrphansArgs {
                source: Some(site.clone()),
                replica: Some(old.clone()),
                server_id: None,
                json: false,
                rewind: false,
                sql_file: None,
            },
        )
        .await;
        match own {
            Ok(r) if !r.orphans.is_empty() && args.orphans.is_none() => {
                return Err(PromoteError::UnresolvedOrphans {
                    site,
                    old,
                    count: r.count,
                    list: orphans::render(&r),
                });
            }
            Ok(r) => own_orphans = Some(r),
            // The old primary never applied this site's changelog: nothing to decide.
            Err(orphans::OrphansError::NoCheckpoint { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let discard = match (&own_orphans, args.orphans) {
        (Some(r), Some(OrphanDecision::Discard)) if !r.orphans.is_empty() => Some(r.clone()),
        _ => None,
    };

    // Before the old primary is fenced (its `consumer run` starts applying this site's
    // changelog as soon as it is read-only), take its apply lock when its checkpoint is to be
    // moved past the discarded orphans: an apply that ran meanwhile would overwrite the moved
    // checkpoint at its next commit. Held on a connection of its own until the move is done.
    let mut old_lock: Option<Conn> = None;
    if let (Some(r), Some(op)) = (&discard, &old_primary) {
        let (mut lc, lt) = connect_to(cfg, &old).await.ok_or_else(|| {
            SiteDbError::at(&old, &op.target, "connecting to take its apply lock")(
                mysql_async::Error::Other("no answer within 5 s".into()),
            )
        })?;
        lock_old_apply(&old, &r.topic, &lt, &mut lc).await?;
        old_lock = Some(lc);
    }

    // Fence the old primary, drain everything it took, move its checkpoint if discarding. A
    // failure on the way makes it writable again: nothing changed.
    let prepared = async {
        let final_position = match old_primary.as_mut() {
            Some(op) => Some(op.fence().await?),
            None => None,
        };
        let drained = if args.now {
            false
        } else {
            drain(
                cfg,
                &site,
                &old,
                &topic,
                &mut conn,
                final_position.as_ref(),
                args.drain_timeout,
            )
            .await?;
            true
        };
        if let (Some(r), Some(op)) = (&discard, old_primary.as_mut()) {
            discard_orphans(r, op).await?;
        }
        Ok::<_, PromoteError>(drained)
    }
    .await;
    let drained = match prepared {
        Ok(d) => d,
        Err(cause) => {
            drop(old_lock);
            return Err(match old_primary.as_mut() {
                Some(op) if op.fenced => PromoteError::Undone {
                    undo: op.unfence().await,
                    cause: Box::new(cause),
                },
                _ => cause,
            });
        }
    };
    if let Some(mut lc) = old_lock.take() {
        if let Some(r) = &discard {
            let _ = lc
                .exec_drop("DO RELEASE_LOCK(?)", (lock_name(&r.topic),))
                .await;
        }
        let _ = lc.disconnect().await;
    }

    // Stop applying: the site becomes writable; apply notices, stops at a commit boundary and
    // releases its lock. Holding that lock proves apply has stopped.
    conn.query_drop("SET GLOBAL read_only = OFF")
        .await
        .map_err(e(
            "making the site writable (SET GLOBAL read_only = OFF needs READ_ONLY ADMIN or SUPER)",
        ))?;
    let name = lock_name(&topic);
    let got: Option<Option<i64>> = conn
        .exec_first("SELECT GET_LOCK(?, ?)", (&name, LOCK_WAIT.as_secs()))
        .await
        .map_err(e("waiting for apply to stop"))?;
    if got.flatten() != Some(1) {
        return Err(PromoteError::ApplyStillRunning(LOCK_WAIT));
    }
    let (_, applied) = checkpoint(&mut conn, &topic)
        .await
        .map_err(e("reading the checkpoint"))?;
    let _ = conn.exec_drop("SELECT RELEASE_LOCK(?)", (&name,)).await;

    // The old primary's orphans: none after a drain to its final position.
    let reachable = old_primary.is_some();
    // Read-only now: fenced by promote, or it was already.
    let demoted = old_primary.is_some();
    let orphan_report = if reachable {
        Some(
            orphans::orphans(
                cfg,
                &OrphansArgs {
                    source: Some(old.clone()),
                    replica: Some(site.clone()),
                    server_id: None,
                    json: false,
                    rewind: false,
                    sql_file: None,
                },
            )
            .await?,
        )
    } else {
        None
    };

    // The promotion record is this site's own bookkeeping: flagged, so it is neither captured
    // nor ever reported as an orphan.
    conn.query_drop("SET SESSION skip_replication = 1")
        .await
        .map_err(e("SET SESSION skip_replication = 1"))?;
    for stmt in [
        "CREATE DATABASE IF NOT EXISTS `continuum`",
        "CREATE TABLE IF NOT EXISTS `continuum`.`promotion` (
           `id` BIGINT AUTO_INCREMENT PRIMARY KEY,
           `site` VARCHAR(64) NOT NULL COMMENT 'the site that became primary',
           `old_primary` VARCHAR(64) NOT NULL,
           `source_topic` VARCHAR(249) NOT NULL COMMENT 'the old primary''s changelog',
           `applied_position` TEXT NOT NULL COMMENT 'what this site applied of it',
           `drained` TINYINT NOT NULL,
           `orphans` INT NULL COMMENT 'transactions of the old primary never applied here; NULL: it did not answer',
           `promoted_at` DATETIME(6) NOT NULL
         ) COMMENT 'Continuum: promotions of this site to primary'",
    ] {
        conn.query_drop(stmt).await.map_err(e("creating continuum.promotion"))?;
    }
    conn.exec_drop(
        "INSERT INTO continuum.promotion (site, old_primary, source_topic, applied_position, drained, orphans, promoted_at) \
         VALUES (?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))",
        (&site, &old, &topic, &applied, drained, orphan_report.as_ref().map(|r| r.count as i64)),
    )
    .await
    .map_err(e("recording the promotion"))?;
    let promoted_at: Option<String> = conn
        .query_first("SELECT CAST(MAX(promoted_at) AS CHAR) FROM continuum.promotion")
        .await
        .map_err(e("reading the promotion"))?;
    Ok(Promotion {
        site,
        old_primary: old,
        topic,
        drained,
        applied_position: applied,
        promoted_at: promoted_at.unwrap_or_default(),
        old_primary_reachable: reachable,
        old_primary_demoted: demoted,
        orphans: orphan_report,
        own_orphans_decision: own_orphans
            .as_ref()
            .filter(|r| !r.orphans.is_empty())
            .and(args.orphans),
        own_orphans,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Waits until this site has applied the old primary's changelog: up to its final GTID
/// position when it answered (it is fenced, so that position is final), else up to what the
/// local cluster holds of the changelog (the high watermark, sampled again and again: the
/// mirror may still be copying).
async fn drain(
    cfg: &SiteConfig,
    site: &str,
    old: &str,
    topic: &str,
    conn: &mut Conn,
    final_position: Option<&GtidPosition>,
    timeout: Duration,
) -> Result<(), PromoteError> {
    let target = db::describe(&cfg.database);
    let db_err = |source| SiteDbError::at(site, &target, "reading the checkpoint")(source);
    let deadline = Instant::now() + timeout;
    if let Some(fin) = final_position {
        tracing::info!(%fin, "draining {topic} up to {old}'s final position");
        loop {
            let (_, applied) = checkpoint(conn, topic).await.map_err(db_err)?;
            let applied: GtidPosition = applied.parse().unwrap_or_default();
            let b = behind(&applied, fin);
            if b.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PromoteError::DrainToPositionTimeout {
                    site: site.to_owned(),
                    old: old.to_owned(),
                    topic: topic.to_owned(),
                    applied: applied.to_string(),
                    target: fin.to_string(),
                    behind: describe_behind(&b),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let ccfg = kafka::consumer_config(site, cfg.local(), "continuum-promote")?;
    let consumer: BaseConsumer = ccfg
        .create()
        .map_err(|e| PromoteError::Kafka(e.to_string()))?;
    let consumer = std::sync::Arc::new(consumer);
    loop {
        let (c, t) = (consumer.clone(), topic.to_owned());
        let high = tokio::task::spawn_blocking(move || -> Result<i64, String> {
            match kafka::watermarks(&c, &t, Duration::from_secs(10)) {
                Ok((_, h)) => Ok(h),
                Err(e) if kafka::is_transient(&e) => Ok(0),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .expect("watermarks task")
        .map_err(PromoteError::Kafka)?;
        let (at, _) = checkpoint(conn, topic).await.map_err(db_err)?;
        if at >= high {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(PromoteError::DrainTimeout {
                site: site.to_owned(),
                topic: topic.to_owned(),
                at,
                high,
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Moves the old primary's checkpoint of this site's changelog past the discarded orphans, so it
/// skips them. Its apply lock is held by promote meanwhile.
async fn discard_orphans(r: &OrphansReport, op: &mut OldPrimary) -> Result<(), PromoteError> {
    let pos: GtidPosition = r.source_position.parse().unwrap_or_default();
    let applied: GtidPosition = r.applied_position.parse().unwrap_or_default();
    let merged = crate::checkpoint::merge_max(&applied, &pos);
    // Bookkeeping of this site, not a change to replicate: flagged like apply's own writes, so
    // neither a producer nor `orphans` counts it.
    op.conn
        .query_drop("SET SESSION skip_replication = 1")
        .await
        .map_err(op.err("SET SESSION skip_replication = 1"))?;
    op.conn
        .exec_drop(
            "UPDATE continuum.checkpoint SET gtid_position = ? WHERE source_topic = ? AND `partition` = 0",
            (merged.to_string(), &r.topic),
        )
        .await
        .map_err(op.err("moving the checkpoint past the discarded orphans"))?;
    tracing::warn!(count = r.count, position = %merged, "orphans discarded: {} will skip them", op.site);
    Ok(())
}

pub fn render(p: &Promotion) -> String {
    let mut out = format!(
        "promote: {} is now the primary ({} UTC, {:.1}s)\n  applied of {} ({}): {}\n  drained: {}\n",
        p.site,
        p.promoted_at,
        p.seconds,
        p.old_primary,
        p.topic,
        if p.applied_position.is_empty() { "nothing" } else { &p.applied_position },
        if p.drained { "yes, everything the local cluster held was applied" } else { "no (--now)" }
    );
    match &p.orphans {
        Some(r) if r.orphans.is_empty() => out.push_str(&format!("  orphans: none; {} answered and every transaction of it arrived here\n", p.old_primary)),
        Some(r) => {
            out.push_str(&format!("  orphans: {} transaction(s) of {} never arrived here:\n", r.count, p.old_primary));
            out.push_str(&orphans::render(r));
        }
        None => out.push_str(&format!(
            "  orphans: unknown; {}'s database did not answer. When it is back, run there: continuum-consumer orphans\n",
            p.old_primary
        )),
    }
    if let (Some(r), Some(d)) = (&p.own_orphans, p.own_orphans_decision) {
        out.push_str(&format!(
            "  {} orphan transaction(s) of {} from before: {}\n",
            r.count,
            p.site,
            match d {
                OrphanDecision::Apply =>
                    format!("{} will apply them from {}", p.old_primary, r.topic),
                OrphanDecision::Discard => format!("discarded: {} skips them", p.old_primary),
            }
        ));
    }
    out.push_str("next steps:\n");
    out.push_str(&format!(
        "  1. point the applications at {} (it is writable now);\n",
        p.site
    ));
    if p.old_primary_demoted {
        out.push_str(&format!("  2. {} was made read-only (a replica); its `consumer run` now applies {}'s writes to it (failback);\n  3. it was drained first, so it has no orphans (continuum-consumer orphans at {} says so);\n", p.old_primary, p.site, p.old_primary));
    } else {
        out.push_str(&format!(
            "  2. when {} returns, keep applications off it and make it read-only before anything else writes to it (SET GLOBAL read_only=ON, and read_only=ON in its config), and do not start its `consumer run` yet;\n  3. list its orphans (continuum-consumer orphans at {}) and roll them back there (orphans --rewind: it saves them as SQL first, to review and re-run here if wanted; docs/failover.md); then start its `consumer run`, which applies {}'s writes to it (failback);\n",
            p.old_primary, p.old_primary, p.site
        ));
    }
    out.push_str(&format!(
        "  4. once {} has caught up, run promote at {} to move the primary role back (planned switchover).\n",
        p.old_primary, p.old_primary
    ));
    out
}

/// `continuum-consumer promote`.
pub async fn main(cfg: SiteConfig, args: PromoteArgs) -> Result<(), PromoteError> {
    let p = promote(&cfg, &args).await?;
    crate::report::print(&p, args.json, render);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(s: &str) -> GtidPosition {
        s.parse().unwrap()
    }

    #[test]
    fn drained_when_every_domain_of_the_final_position_is_applied() {
        assert!(behind(&pos("1-1-10,2-2-5"), &pos("1-1-10,2-2-4")).is_empty());
        assert!(behind(&pos("1-1-12"), &pos("1-1-10")).is_empty());
        assert!(behind(&pos("1-1-1"), &pos("")).is_empty());
        let b = behind(&pos("1-1-9,2-2-5"), &pos("0-1-3,1-1-10,2-2-5"));
        assert_eq!(b, vec![(0, None, 3), (1, Some(9), 10)]);
        assert_eq!(
            describe_behind(&b),
            "domain 0 at nothing of 3, domain 1 at 9 of 10"
        );
    }

    #[test]
    fn a_failed_switchover_says_what_became_of_the_old_primary() {
        let e = PromoteError::Undone {
            cause: Box::new(PromoteError::DrainToPositionTimeout {
                site: "eu".into(),
                old: "sf".into(),
                topic: "sf.cdc".into(),
                applied: "1-1-9".into(),
                target: "1-1-10".into(),
                behind: "domain 1 at 9 of 10".into(),
                timeout: Duration::from_secs(5),
            }),
            undo: "sf was made writable again: it is still the primary, and nothing was changed"
                .into(),
        };
        let m = e.to_string();
        assert!(
            m.contains("short of sf's final position 1-1-10 (domain 1 at 9 of 10)")
                && m.ends_with(
                    "sf was made writable again: it is still the primary, and nothing was changed"
                ),
            "{m}"
        );
    }
}
