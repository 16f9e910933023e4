//! `run`: the consumer container of a site. One process, two tasks: mirror the other site's
//! changelog from its cluster into this site's cluster, and apply that local copy to this site's
//! MariaDB. `/metrics` and `/health` cover both.
//!
//! Apply runs only while this site is a replica (its MariaDB is `read_only`). When the site
//! becomes the primary (`promote` makes it writable), apply stops — its connection is dropped,
//! so an open batch rolls back and the checkpoint stays at a commit boundary — and releases its
//! lock; the mirror goes on copying. If the site becomes a replica again, apply resumes from
//! its checkpoint. So the same container serves both roles, and failover needs no
//! re-deployment.
//!
//! Guarantees:
//! - the mirror bounds what a loss of the other site costs, so nothing apply meets stops it: a
//!   record apply cannot apply (the replica refuses it, a schema change fails), a lock another
//!   apply holds, a replica that is down, each stalls apply alone. The error shows in `/health`
//!   (apply `failed`), in `continuum_apply_stalled` and in `status` (the checkpoint's error), and
//!   apply tries again every `consumer.apply.retry_failed_after` until the cause is fixed, then
//!   goes on by itself from its checkpoint;
//! - if the mirror fails (a fatal error of its own), the process stops apply too and exits
//!   non-zero with the cause;
//! - a signal stops both (apply at a commit boundary, the mirror after flushing what it sent).

use std::time::Duration;

use mysql_async::prelude::Queryable;
use tokio::sync::watch;

use continuum_common::observe::{Health, Status};
use continuum_common::{db, ConfigError, SiteConfig};

use crate::apply::{Apply, ApplyArgs, Outcome, RunOptions};
use crate::mirror::{self, MirrorArgs, MirrorError, MirrorSettings};
use crate::settings::ApplySettings;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("mirror failed, so run stops (apply stopped with it): {0}")]
    Mirror(Box<MirrorError>),
    #[error("{0} stopped unexpectedly; run stops the other task too")]
    Ended(&'static str),
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub apply: ApplyArgs,
}

/// Watches this site's role: `true` while its MariaDB is read-only (a replica). An unreachable
/// server keeps the last known role (apply's own retries deal with the outage).
fn watch_role(opts: mysql_async::Opts, stop: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(true);
    tokio::spawn(async move {
        let mut conn: Option<mysql_async::Conn> = None;
        while !*stop.borrow() {
            if conn.is_none() {
                conn = mysql_async::Conn::new(opts.clone()).await.ok();
            }
            if let Some(c) = conn.as_mut() {
                match c.query_first::<u8, _>("SELECT @@read_only").await {
                    Ok(Some(ro)) => {
                        let _ = tx.send_if_modified(|v| {
                            let changed = *v != (ro != 0);
                            *v = ro != 0;
                            changed
                        });
                    }
                    _ => conn = None,
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    rx
}

/// `continuum-consumer run`.
pub async fn main(mut cfg: SiteConfig, args: RunArgs) -> Result<(), RunError> {
    args.apply.override_config(&mut cfg);
    // Mirror the other site's changelog here; apply the local copy.
    let source = crate::settings::apply_source_site(&cfg)?;
    let mirror_settings = MirrorSettings::resolve(
        &cfg,
        &MirrorArgs {
            from: Some(source.clone()),
            to: Some(cfg.site.clone()),
            ..Default::default()
        },
    )?;
    cfg.consumer.apply.source_site = Some(source);
    cfg.consumer.apply.read_from = Some(cfg.site.clone());
    let apply_settings = ApplySettings::resolve(&cfg).map_err(RunError::Config)?;

    let health = Health::default();
    health.set("mirror", Status::Starting, "starting");
    health.set("apply", Status::Starting, "starting");
    if !args.apply.no_metrics {
        continuum_common::observe::serve(cfg.consumer.metrics_listen, health.clone())
            .await
            .map_err(|e| ConfigError::Invalid {
                setting: "consumer.metrics_listen".into(),
                reason: e.to_string(),
            })?;
    }
    tracing::info!(site = %cfg.site, from = %mirror_settings.from, topic = %mirror_settings.topic, "continuum-consumer run starting");
    let stop = continuum_common::supervise::shutdown_on_signals("stopping");
    let mut replica = watch_role(db::opts(&cfg.database, &[])?, stop.clone());
    let mirror_task = mirror::run(mirror_settings, health.clone(), stop.clone());
    tokio::pin!(mirror_task);
    let mut stop_rx = stop.clone();
    loop {
        // This site is the primary: mirror only, until it is a replica again.
        while !*replica.borrow() {
            health.set(
                "apply",
                Status::Ok,
                "not applying: this site is the primary (its MariaDB is writable)",
            );
            tracing::info!("this site is the primary: apply waits; the mirror goes on");
            tokio::select! {
                r = &mut mirror_task => return mirror_end(r, &stop),
                _ = replica.changed() => {}
                _ = stop_rx.changed() => {}
            }
            if *stop.borrow() {
                return mirror_task.await.map_err(|e| RunError::Mirror(Box::new(e)));
            }
        }
        let attempt = async {
            let apply = Apply::new(
                apply_settings.clone(),
                RunOptions {
                    until_caught_up: false,
                    serve_metrics: false,
                },
                health.clone(),
            )
            .await?;
            apply.run(stop.clone()).await
        };
        tokio::pin!(attempt);
        let promoted = loop {
            tokio::select! {
                r = &mut mirror_task => return mirror_end(r, &stop),
                r = &mut attempt => match r {
                    Ok(Outcome::Signal { .. }) => return mirror_task.await.map_err(|e| RunError::Mirror(Box::new(e))),
                    Ok(other) => {
                        tracing::error!(outcome = ?other, "apply ended");
                        return Err(RunError::Ended("apply"));
                    }
                    Err(e) => {
                        // Stalled: the mirror goes on; apply tries again after a while.
                        let wait = apply_settings.apply.retry_failed_after;
                        crate::metrics::stalled(true);
                        health.set("apply", Status::Failed, format!("{e} (trying again every {})", humantime::format_duration(wait)));
                        tracing::error!(error = %e, retry_in = ?wait, "apply stopped at an error; the mirror goes on, and apply tries again after the wait");
                        tokio::select! {
                            r = &mut mirror_task => return mirror_end(r, &stop),
                            _ = tokio::time::sleep(wait) => {}
                            _ = stop_rx.changed() => {}
                        }
                        if *stop.borrow() {
                            return mirror_task.await.map_err(|e| RunError::Mirror(Box::new(e)));
                        }
                        break false;
                    }
                },
                _ = replica.changed() => {
                    if !*replica.borrow() {
                        break true;
                    }
                }
            }
        };
        if promoted {
            // Dropping apply closes its connections: an open batch rolls back, the lock is free.
            tracing::warn!(
                "this site became the primary: apply stops at its last commit; the mirror goes on"
            );
        }
    }
}

fn mirror_end(r: Result<(), MirrorError>, stop: &watch::Receiver<bool>) -> Result<(), RunError> {
    match r {
        Err(e) => Err(RunError::Mirror(Box::new(e))),
        Ok(()) if *stop.borrow() => Ok(()),
        Ok(()) => Err(RunError::Ended("the mirror")),
    }
}
