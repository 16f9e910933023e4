//! `promote`: makes this site the primary. Run at the replica site on failover (the primary is
//! lost), or at the old primary for a planned switchover back once it has caught up.
//!
//! Steps:
//! 1. refuse if this site is already primary (`read_only` is OFF), saying when it became so;
//! 2. unless `--now`, drain: wait until apply has applied everything the local cluster holds of
//!    the other site's changelog;
//! 3. stop applying: make this site writable (`read_only=OFF`); apply sees it, stops at a commit
//!    boundary and releases its lock, which promote takes to be sure apply has stopped;
//! 4. read the final applied GTID position, and, if the old primary's database answers, list
//!    its transactions that never arrived (its orphans) and make it read-only (a replica);
//! 5. record the promotion in `continuum.promotion` and print the next steps.
//!
//! Repeating it changes nothing: a site that is already primary is refused.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use rdkafka::consumer::BaseConsumer;
use serde::Serialize;

use continuum_common::{db, kafka, ConfigError, SiteConfig};

use crate::lock::lock_name;
use crate::orphans::{self, OrphansArgs, OrphansReport};

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
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
    pub site: String,
    pub old_primary: String,
    pub topic: String,
    pub drained: bool,
    /// The last of the old primary's GTID positions applied here.
    pub applied_position: String,
    pub promoted_at: String,
    /// Whether the old primary's database answered (so orphans could be listed).
    pub old_primary_reachable: bool,
    pub old_primary_demoted: bool,
    pub orphans: Option<OrphansReport>,
    /// This site's own orphans (transactions the old primary never applied) and the decision.
    pub own_orphans: Option<OrphansReport>,
    pub own_orphans_decision: Option<OrphanDecision>,
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

pub async fn promote(cfg: &SiteConfig, args: &PromoteArgs) -> Result<Promotion, PromoteError> {
    let started = Instant::now();
    let site = cfg.site.clone();
    let old = match &cfg.consumer.apply.source_site {
        Some(s) => s.clone(),
        None => cfg.other_site("consumer.apply.source_site")?,
    };
    let topic = cfg.topic_of(&old)?;
    let target = db::describe(&cfg.database);
    let e = |what: &str| {
        let (site, target, what) = (site.clone(), target.clone(), what.to_owned());
        move |source| PromoteError::Db {
            site,
            target,
            what,
            source,
        }
    };
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

    // Drain what the local cluster holds of the old primary's changelog.
    let mut drained = false;
    if !args.now {
        let cluster = cfg.local().clone();
        let ccfg = kafka::consumer_config(&site, &cluster, "continuum-promote")?;
        let t = topic.clone();
        let high = tokio::task::spawn_blocking(move || -> Result<i64, String> {
            let c: BaseConsumer = ccfg.create().map_err(|e| e.to_string())?;
            match kafka::watermarks(&c, &t, Duration::from_secs(10)) {
                Ok((_, h)) => Ok(h),
                Err(e) if kafka::is_transient(&e) => Ok(0),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .expect("watermarks task")
        .map_err(PromoteError::Kafka)?;
        let deadline = Instant::now() + args.drain_timeout;
        loop {
            let (at, _) = checkpoint(&mut conn, &topic)
                .await
                .map_err(e("reading the checkpoint"))?;
            if at >= high {
                drained = true;
                break;
            }
            if Instant::now() > deadline {
                return Err(PromoteError::DrainTimeout {
                    site,
                    topic,
                    at,
                    high,
                    timeout: args.drain_timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // A switchover back: this site's own orphans from before (its transactions the old primary
    // never applied) would reach the old primary once it follows this site again. Never
    // silently: the operator decides.
    let mut own_orphans = None;
    if let Ok(old_db) = cfg.database_of(&old) {
        if let Ok(opts) = db::opts(old_db, &[]) {
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), Conn::new(opts)).await {
                let own = orphans::orphans(
                    cfg,
                    &OrphansArgs {
                        source: Some(site.clone()),
                        replica: Some(old.clone()),
                        server_id: None,
                        json: false,
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
        }
    }

    // Stop applying: the site becomes writable; apply notices, stops at a commit boundary and
    // releases its lock. Holding that lock proves apply has stopped.
    conn.query_drop("SET GLOBAL read_only = OFF")
        .await
        .map_err(e(
            "making the site writable (SET GLOBAL read_only = OFF needs READ_ONLY ADMIN or SUPER)",
        ))?;
    let name = lock_name(&topic);
    let wait = Duration::from_secs(60);
    let got: Option<Option<i64>> = conn
        .exec_first("SELECT GET_LOCK(?, ?)", (&name, wait.as_secs()))
        .await
        .map_err(e("waiting for apply to stop"))?;
    if got.flatten() != Some(1) {
        return Err(PromoteError::ApplyStillRunning(wait));
    }
    let (_, applied) = checkpoint(&mut conn, &topic)
        .await
        .map_err(e("reading the checkpoint"))?;
    let _ = conn.exec_drop("SELECT RELEASE_LOCK(?)", (&name,)).await;

    // The old primary: orphans and demotion, if it answers.
    let mut reachable = false;
    let mut demoted = false;
    let mut orphan_report = None;
    if let Ok(old_db) = cfg.database_of(&old) {
        if let Ok(opts) = db::opts(old_db, &[]) {
            let connect = tokio::time::timeout(Duration::from_secs(5), Conn::new(opts)).await;
            if let Ok(Ok(mut oc)) = connect {
                reachable = true;
                demoted = oc.query_drop("SET GLOBAL read_only = ON").await.is_ok();
                if let (Some(r), Some(OrphanDecision::Discard)) = (&own_orphans, args.orphans) {
                    if !r.orphans.is_empty() {
                        // The old primary's apply is stopped (it was the primary until now);
                        // moving its checkpoint past the orphans makes it skip them.
                        let target = db::describe(old_db);
                        let pos: continuum_schemas::GtidPosition =
                            r.source_position.parse().unwrap_or_default();
                        let applied: continuum_schemas::GtidPosition =
                            r.applied_position.parse().unwrap_or_default();
                        let merged = crate::checkpoint::merge_max(&applied, &pos);
                        // Bookkeeping of this site, not a change to replicate: flagged like
                        // apply's own writes, so neither a producer nor `orphans` counts it.
                        oc.query_drop("SET SESSION skip_replication = 1")
                            .await
                            .map_err(|source| PromoteError::Db {
                                site: old.clone(),
                                target: target.clone(),
                                what: "SET SESSION skip_replication = 1".into(),
                                source,
                            })?;
                        oc.exec_drop(
                            "UPDATE continuum.checkpoint SET gtid_position = ? WHERE source_topic = ? AND `partition` = 0",
                            (merged.to_string(), &r.topic),
                        )
                        .await
                        .map_err(|source| PromoteError::Db { site: old.clone(), target, what: "moving the checkpoint past the discarded orphans".into(), source })?;
                        tracing::warn!(count = r.count, position = %merged, "orphans discarded: {old} will skip them");
                    }
                }
                let report = orphans::orphans(
                    cfg,
                    &OrphansArgs {
                        source: Some(old.clone()),
                        replica: Some(site.clone()),
                        server_id: None,
                        json: false,
                    },
                )
                .await?;
                orphan_report = Some(report);
            }
        }
    }

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
        out.push_str(&format!("  2. {} was made read-only (a replica); its `consumer run` now applies {}'s writes to it (failback);\n", p.old_primary, p.site));
    } else {
        out.push_str(&format!(
            "  2. when {} returns, keep applications off it and make it read-only before anything else writes to it (SET GLOBAL read_only=ON, and read_only=ON in its config); its `consumer run` then applies {}'s writes to it (failback);\n",
            p.old_primary, p.site
        ));
    }
    out.push_str(&format!(
        "  3. review its orphans (continuum-consumer orphans at {}), decide per docs/failover.md;\n  4. once {} has caught up, run promote at {} to move the primary role back (planned switchover).\n",
        p.old_primary, p.old_primary, p.old_primary
    ));
    out
}

/// `continuum-consumer promote`.
pub async fn main(cfg: SiteConfig, args: PromoteArgs) -> Result<(), PromoteError> {
    let p = promote(&cfg, &args).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&p).expect("promotion serializes")
        );
    } else {
        print!("{}", render(&p));
    }
    Ok(())
}
