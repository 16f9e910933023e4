//! `apply`: keeps the replica at a source commit boundary by applying the changelog of the
//! source site, read from the configured cluster, to this site's MariaDB.
//!
//! This module only wires the parts: the verb and its options, the apply process (the lock, the
//! metrics endpoint, restarts with backoff), and one session after another. Each part states
//! its own guarantees:
//!
//! | part | what it does |
//! |---|---|
//! | [`session`] | the state machine: transactions whole, batches, GTID skip, replay bounds, snapshots, schema changes, redo directives. Pure, unit-tested without a server |
//! | [`executor`] | carries out the session's actions on MariaDB: row statements, commits with the checkpoint, rollbacks |
//! | [`ddl`] | runs one schema change, and decides whether it is already in effect |
//! | [`start`] | where a session starts in the topic |
//!
//! Guarantees of the whole: no MariaDB commit ever contains part of a source transaction; a
//! crash at any instant resumes exactly (the checkpoint commits with the data); re-applying any
//! suffix of the topic converges; a record that cannot be applied stops apply with a message
//! naming its offset, GTID, table and key, and the checkpoint never moves past it. Transient
//! faults (deadlock, lock wait, lost connection, broker or registry unavailable) restart the
//! session from the checkpoint after an exponential backoff (`backon`).

pub mod ddl;
pub mod executor;
pub mod session;
pub mod start;
pub mod writeset;

pub use session::Outcome;
pub use start::{align_to_start, AlignError};

use continuum_common::config::DdlPolicy;
use continuum_common::observe::{Health, Status};
use continuum_common::supervise::{shutdown_on_signals, Shutdown, Supervisor};
use continuum_schemas::Decoder;
use mysql_async::Opts;
use rdkafka::consumer::BaseConsumer;

use crate::checkpoint;
use crate::error::{ApplyError, Result};
use crate::lock::{ApplyLock, Wait};
use crate::metrics::{self as m, SourceClock};
use crate::reader::Reader;
use crate::settings::{ApplySettings, PARTITION};
use crate::target::Targets;
use crate::writer::Writer;
use executor::{Committed, Executor};
use session::{Directives, Limits, Session, SessionEnd};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ApplyArgs {
    /// Schema-change policy: apply, skip or stop (overrides consumer.apply.ddl).
    #[arg(long, value_parser = parse_ddl, value_name = "POLICY")]
    pub ddl: Option<DdlPolicy>,
    /// Where to serve /metrics and /health (overrides consumer.metrics_listen).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Do not serve /metrics and /health.
    #[arg(long)]
    pub no_metrics: bool,
    /// Apply what the topic holds when apply starts, then exit.
    #[arg(long)]
    pub until_caught_up: bool,
    /// Connections to write through, 1 to 16 (overrides consumer.apply.connections).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=16))]
    pub connections: Option<u64>,
}

impl ApplyArgs {
    /// Lays the flags over the configuration.
    pub fn override_config(&self, cfg: &mut continuum_common::SiteConfig) {
        if let Some(p) = self.ddl {
            cfg.consumer.apply.ddl = p;
        }
        if let Some(a) = self.metrics_listen {
            cfg.consumer.metrics_listen = a;
        }
        if let Some(n) = self.connections {
            cfg.consumer.apply.connections = n as usize;
        }
    }
}

fn parse_ddl(s: &str) -> std::result::Result<DdlPolicy, String> {
    match s {
        "apply" => Ok(DdlPolicy::Apply),
        "skip" => Ok(DdlPolicy::Skip),
        "stop" => Ok(DdlPolicy::Stop),
        _ => Err(format!("'{s}': expected apply, skip or stop")),
    }
}

/// The `apply` verb.
pub async fn main(mut cfg: continuum_common::SiteConfig, args: ApplyArgs) -> Result<()> {
    args.override_config(&mut cfg);
    let settings = ApplySettings::resolve(&cfg)?;
    let run = RunOptions {
        until_caught_up: args.until_caught_up,
        serve_metrics: !args.no_metrics,
    };
    let shutdown = shutdown_on_signals("stopping at the next commit");
    let outcome = Apply::new(settings, run, Health::default())
        .await?
        .run(shutdown)
        .await?;
    match outcome {
        Outcome::UntilTime { offset, until_ms } => eprintln!(
            "apply stopped at offset {offset}: the next record is newer than --until-time {}. Run `continuum-consumer replay` again (without --until-time) to go on",
            crate::checkpoint::fmt_ms(until_ms)
        ),
        Outcome::CaughtUp { offset } => eprintln!("apply caught up at offset {offset}"),
        Outcome::Signal { offset } => eprintln!("apply stopped by a signal at offset {offset}"),
    }
    Ok(())
}

/// Options of one apply run (beyond the configuration).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop once the checkpoint reaches the high watermark seen when the session started.
    pub until_caught_up: bool,
    /// Serve `/metrics` and `/health`.
    pub serve_metrics: bool,
}

/// The apply process: settings, the lock, and the loop that runs sessions.
pub struct Apply {
    settings: ApplySettings,
    opts: Opts,
    lock: ApplyLock,
    health: Health,
    clock: SourceClock,
    run: RunOptions,
    schema_ready: bool,
    committed: Committed,
    /// Discard ranges found so far (abandoned transactions); kept across sessions.
    discard: Vec<(i64, i64)>,
}

impl Apply {
    /// Takes the apply lock, waiting (as a standby) while another apply holds it.
    pub async fn new(settings: ApplySettings, run: RunOptions, health: Health) -> Result<Apply> {
        let opts = settings.db_opts()?;
        let lock = ApplyLock::take(
            settings.db_opts_plain()?,
            &settings.target(),
            &settings.topic,
            Wait::UntilFree,
        )
        .await?;
        Ok(Apply {
            settings,
            opts,
            lock,
            health,
            clock: SourceClock::default(),
            run,
            schema_ready: false,
            committed: Committed::default(),
            discard: Vec::new(),
        })
    }

    /// Runs until an outcome, a fatal error, or forever.
    pub async fn run(mut self, shutdown: Shutdown) -> Result<Outcome> {
        if self.run.serve_metrics {
            continuum_common::observe::serve(self.settings.metrics_listen, self.health.clone())
                .await
                .map_err(|e| {
                    ApplyError::Config(continuum_common::ConfigError::Invalid {
                        setting: "consumer.metrics_listen".into(),
                        reason: e.to_string(),
                    })
                })?;
        }
        self.clock.spawn_ticker();
        let mut term = shutdown;
        self.health.set("apply", Status::Starting, "starting");
        let mut supervisor = Supervisor::new(
            "apply",
            m::APPLY_ERRORS_TOTAL.name,
            self.health.clone(),
            self.settings.max_retry_delay(),
        );
        let mut directives = Directives::default();
        let mut pending_fatal: Option<ApplyError> = None;
        let result = loop {
            let mut d = directives.clone();
            d.discard.extend(self.discard.iter().copied());
            match self.session(&d, &mut term).await {
                Ok(SessionEnd::Done(o)) => break Ok(o),
                Ok(SessionEnd::StoppedBefore) => {
                    if let Some(e) = pending_fatal.take() {
                        break Err(e);
                    }
                    directives = Directives::default();
                }
                Ok(SessionEnd::Redo(next, fatal)) => {
                    directives = next;
                    if fatal.is_some() {
                        pending_fatal = fatal;
                    }
                }
                Err(e) if e.is_transient() => {
                    let delay = supervisor.transient(
                        self.committed.count,
                        e.kind(),
                        &e,
                        "transient error; restarting from the checkpoint",
                    );
                    if !supervisor.wait(delay, &mut term).await {
                        // Stopped while waiting: at the last checkpoint committed or read.
                        match self.committed.next_offset {
                            Some(offset) => break Ok(Outcome::Signal { offset }),
                            None => break Err(e),
                        }
                    }
                    // Keep the diagnosis going if one was under way; stops are re-derived.
                    directives.stop_before = None;
                    directives.until_at_stop = None;
                }
                Err(e) => break Err(e),
            }
        };
        match &result {
            Ok(o) => {
                tracing::info!(outcome = ?o, "apply stopped");
                self.health
                    .set("apply", Status::Ok, format!("stopped: {o:?}"));
            }
            Err(e) => {
                supervisor.fatal(e.kind(), e);
                m::stalled(true);
                self.record_error(&e.to_string()).await;
            }
        }
        self.lock.release().await;
        result
    }

    async fn record_error(&self, msg: &str) {
        if let Ok(mut c) = mysql_async::Conn::new(self.opts.clone()).await {
            if let Err(e) =
                checkpoint::record_error(&mut c, &self.settings.topic, PARTITION, msg).await
            {
                tracing::warn!(error = %e, "could not record the error in continuum.checkpoint");
            }
            let _ = c.disconnect().await;
        }
    }

    async fn session(&mut self, d: &Directives, term: &mut Shutdown) -> Result<SessionEnd> {
        self.lock.ensure().await?;
        let target = self.settings.target();
        let a = &self.settings.apply;
        let mut w =
            Writer::connect(&self.opts, &target, a.connections, a.lock_wait_timeout).await?;
        if !self.schema_ready {
            checkpoint::ensure_schema(w.conn().await?, &target).await?;
            self.schema_ready = true;
        }
        let loaded =
            checkpoint::load(w.conn().await?, &target, &self.settings.topic, PARTITION).await?;
        let (ck, high) = self.start_point(loaded).await?;
        w.set_parallel(self.committed.parallel_from(ck.next_offset));
        self.committed.next_offset = Some(ck.next_offset);
        if ck.until_reached {
            if let Some(until_ms) = ck.until_ts_ms {
                tracing::info!(
                    offset = ck.next_offset,
                    "apply already stopped at replay --until-time; run `replay` again to go on"
                );
                return Ok(SessionEnd::Done(Outcome::UntilTime {
                    offset: ck.next_offset,
                    until_ms,
                }));
            }
        }
        if let Some(ts) = ck.source_ts_ms {
            self.clock.set(ts);
        }
        let end = self.run.until_caught_up.then_some(high);
        if end.is_some_and(|e| ck.next_offset >= e) {
            return Ok(SessionEnd::Done(Outcome::CaughtUp {
                offset: ck.next_offset,
            }));
        }
        let registry = self.settings.registry()?;
        let consumer: BaseConsumer =
            self.settings
                .consumer_config("apply")?
                .create()
                .map_err(|source| ApplyError::Kafka {
                    what: "creating a consumer".into(),
                    source,
                })?;
        let mut reader = Reader::start(
            consumer,
            self.settings.topic.clone(),
            self.settings.read_from.clone(),
            ck.next_offset,
            Decoder::new(registry),
        )?;
        tracing::info!(
            topic = %self.settings.topic, cluster = %self.settings.read_from, offset = ck.next_offset,
            gtid_position = %ck.gtid_position, replay_until = ?ck.replay_until.as_ref().map(|p| p.to_string()),
            "applying"
        );
        self.health.set(
            "apply",
            Status::Ok,
            format!(
                "applying {} from the {} cluster",
                self.settings.topic, self.settings.read_from
            ),
        );
        let a = &self.settings.apply;
        let mut s = Session::new(
            ck,
            d.clone(),
            Limits {
                rows: a.batch_rows,
                transactions: a.batch_transactions,
                bytes: a.batch_bytes,
                wait: a.batch_wait,
            },
            a.ddl,
            end,
        );
        let mut x = Executor {
            settings: &self.settings,
            opts: &self.opts,
            lock: &self.lock,
            clock: &self.clock,
            committed: &mut self.committed,
            targets: Targets::new(),
            in_flight: Default::default(),
        };
        let r = match x.run(&mut s, &mut w, &mut reader, term).await {
            Err(e) => x.after_error(&mut s, &mut w, e).await,
            ok => ok,
        };
        self.discard.extend_from_slice(s.found_discards());
        drop(reader);
        if r.is_err() {
            w.rollback().await;
        }
        if w.stats != Default::default() {
            tracing::info!(
                parallel_batches = w.stats.overlapped,
                held_rows = w.stats.held_rows,
                "session's batches run beside a commit before them, and rows held back for one"
            );
        }
        w.close().await;
        r
    }
}
