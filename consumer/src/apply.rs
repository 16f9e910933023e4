//! `apply`: keeps the replica at a source commit boundary by applying the changelog of the
//! source site, read from the configured cluster, to this site's MariaDB.
//!
//! What it does, per record, in topic order:
//! - row changes of a source transaction are buffered as statements (REPLACE of the after-image
//!   keyed by primary key; DELETE by key; a key change deletes the old key first) and sent in
//!   chunks; the MariaDB transaction commits only at a source-transaction boundary, together
//!   with the checkpoint row, after `batch_rows` / `batch_transactions` / `batch_bytes` or
//!   `batch_wait`;
//! - a transaction whose GTID the checkpoint's position already contains is skipped, except
//!   during a replay (until the position recorded by `replay` is passed again);
//! - a schema change commits the batch, runs (policy `consumer.apply.ddl`), and commits the
//!   checkpoint past it; "already done" errors count as applied, so re-running it after a crash
//!   is harmless;
//! - snapshot START deletes the listed tables' rows (in the same transaction as the checkpoint
//!   that says "loading"), the snapshot's rows are REPLACEd, END sets the GTID position;
//! - heartbeats advance the checkpoint and the source time (lag).
//!
//! Guarantees: no MariaDB commit ever contains part of a source transaction; a crash at any
//! instant resumes exactly (the checkpoint commits with the data); re-applying any suffix of
//! the topic converges; a record that cannot be applied stops apply with a message naming its
//! offset, GTID, table and key, and the checkpoint never moves past it. Transient faults
//! (deadlock, lock wait, lost connection, broker or registry unavailable) restart the session
//! from the checkpoint after an exponential backoff (`backon`).

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use continuum_common::config::DdlPolicy;
use continuum_common::observe::{Health, Status};
use continuum_schemas::{
    ChangeEvent, Decoder, Gtid, GtidPosition, Op, SchemaChange, SnapshotMarker, SnapshotPhase,
    StreamPosition, StreamRecord,
};
use mysql_async::prelude::*;
use mysql_async::Opts;
use rdkafka::consumer::BaseConsumer;

use crate::checkpoint::{self, merge_max, Checkpoint, LoadingSnapshot};
use crate::error::{ApplyError, RecordContext, Result};
use crate::lock::ApplyLock;
use crate::metrics::{self as m, OpCounts, SourceClock};
use crate::reader::{gtid_text, Incoming, Reader};
use crate::settings::{ApplySettings, PARTITION};
use crate::sql::{describe_value, RowStatements};
use crate::target::Targets;
use crate::topic::{position_of, TopicReader};
use crate::writer::{self, Writer};

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
    if let Some(p) = args.ddl {
        cfg.consumer.apply.ddl = p;
    }
    if let Some(a) = args.metrics_listen {
        cfg.consumer.metrics_listen = a;
    }
    let settings = ApplySettings::resolve(&cfg)?;
    let run = RunOptions {
        until_caught_up: args.until_caught_up,
        serve_metrics: !args.no_metrics,
    };
    let outcome = Apply::new(settings, run, Health::default())
        .await?
        .run()
        .await?;
    match outcome {
        Outcome::UntilTime { offset, until_ms } => eprintln!(
            "apply stopped at offset {offset}: the next record is newer than --until-time {}. Run `continuum-consumer replay` again (without --until-time) to go on",
            crate::replay::fmt_ms(until_ms)
        ),
        Outcome::CaughtUp { offset } => eprintln!("apply caught up at offset {offset}"),
        Outcome::Signal { offset } => eprintln!("apply stopped by a signal at offset {offset}"),
    }
    Ok(())
}

/// Why an apply run ended without error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `--until-caught-up`: everything the topic held at start is applied.
    CaughtUp { offset: i64 },
    /// `replay --until-time` reached: the record at `offset` is newer.
    UntilTime { offset: i64, until_ms: i64 },
    /// A shutdown signal.
    Signal { offset: i64 },
}

/// Options of one apply run (beyond the configuration).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop once the checkpoint reaches the high watermark seen when the session started.
    pub until_caught_up: bool,
    /// Serve `/metrics` and `/health`.
    pub serve_metrics: bool,
}

/// How a session ended.
#[allow(clippy::large_enum_variant)]
enum SessionEnd {
    Done(Outcome),
    /// The directive's `stop_before` was reached.
    StoppedBefore,
    /// Rolled back; run again with these directives (and then fail with the error, if any).
    Redo(Directives, Option<ApplyError>),
}

/// In-memory instructions for the next session, after a rollback.
#[derive(Debug, Clone, Default)]
struct Directives {
    /// Commit everything before this offset, then end the session.
    stop_before: Option<i64>,
    /// Mark `until_reached` when stopping at `stop_before`.
    until_at_stop: Option<i64>,
    /// Offsets to ignore: transactions the producer abandoned.
    discard: Vec<(i64, i64)>,
    /// Statement per row and commit per source transaction through this offset, to find the
    /// record behind a failed multi-row statement; with the original error.
    diagnose: Option<(i64, String)>,
}

struct OpenTxn {
    gtid: Gtid,
    next_index: u64,
    first_offset: i64,
    skip: bool,
    /// Rows of it sent or buffered.
    rows: usize,
}

#[derive(Default)]
struct Batch {
    ops: OpCounts,
    txns: u64,
    skipped: u64,
    bytes: usize,
    started: Option<Instant>,
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
    commits: u64,
    /// Discard ranges found so far (abandoned transactions); kept across sessions.
    discard: Vec<(i64, i64)>,
}

impl Apply {
    /// Takes the apply lock; fails at once if another apply holds it.
    pub async fn new(settings: ApplySettings, run: RunOptions, health: Health) -> Result<Apply> {
        let opts = settings.db_opts()?;
        let lock = ApplyLock::acquire(
            settings.db_opts_plain()?,
            &settings.target(),
            &settings.topic,
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
            commits: 0,
            discard: Vec::new(),
        })
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(
                self.settings
                    .max_retry_delay()
                    .max(Duration::from_millis(200)),
            )
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Runs until an outcome, a fatal error, or forever.
    pub async fn run(mut self) -> Result<Outcome> {
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
        let mut term = signal_stream();
        self.health.set("apply", Status::Starting, "starting");
        let mut backoff = self.backoff();
        let mut directives = Directives::default();
        let mut pending_fatal: Option<ApplyError> = None;
        let result = loop {
            let commits_before = self.commits;
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
                    if self.commits > commits_before {
                        backoff = self.backoff();
                    }
                    let delay = backoff.next().unwrap_or(Duration::from_secs(1));
                    m::error(e.kind());
                    tracing::warn!(error = %e, retry_in = ?delay, "apply: transient error; restarting from the checkpoint");
                    self.health
                        .set("apply", Status::Starting, format!("retrying after: {e}"));
                    tokio::time::sleep(delay).await;
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
                m::error(e.kind());
                self.health.set("apply", Status::Failed, e.to_string());
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

    fn topic_reader(&self) -> Result<TopicReader> {
        let c: BaseConsumer = self
            .settings
            .consumer_config("apply-seek")?
            .create()
            .map_err(|source| ApplyError::Kafka {
                what: "creating a consumer".into(),
                source,
            })?;
        Ok(TopicReader::new(c, &self.settings.topic))
    }

    /// Where to start: the checkpoint's offset on the same cluster; on another cluster the
    /// first record the checkpoint's GTID position does not cover; the topic's start if there is
    /// no checkpoint. Also returns the high watermark.
    async fn start_point(&self, loaded: Option<Checkpoint>) -> Result<(Checkpoint, i64)> {
        let s = &self.settings;
        let reader = self.topic_reader()?;
        let topic = s.topic.clone();
        let cluster = s.read_from.clone();
        let kafka = |what: &str| {
            let what = what.to_owned();
            move |source| ApplyError::Kafka { what, source }
        };
        let r = reader.clone();
        let (parts, marks) = blocking(move || {
            let p = r.partitions()?;
            let w = if p.is_some() {
                Some(r.watermarks()?)
            } else {
                None
            };
            Ok((p, w))
        })
        .await
        .map_err(kafka("reading the topic's metadata"))?;
        let topic_err = |reason: String| ApplyError::Topic {
            topic: topic.clone(),
            cluster: cluster.clone(),
            reason,
        };
        match parts {
            None => {
                return Err(ApplyError::NoTopic {
                    topic: topic.clone(),
                    cluster: cluster.clone(),
                })
            }
            Some(1) => {}
            Some(n) => {
                return Err(topic_err(format!(
                    "has {n} partitions; a changelog must have exactly one (it is the binlog, in order)"
                )))
            }
        }
        let (low, high) = marks.unwrap_or((0, 0));
        let ck = match loaded {
            None => {
                tracing::info!(%topic, %cluster, offset = low, "no checkpoint yet: applying from the start of the topic");
                Checkpoint::new(&topic, PARTITION, &cluster, low)
            }
            Some(c) if c.cluster == cluster => {
                if c.next_offset < low {
                    return Err(topic_err(format!(
                        "the checkpoint is at offset {}, but the topic now starts at {low}: records {}..{low} were deleted before this replica applied them. Restore the replica from a fresh snapshot (restart the producer with --resnapshot) or run `continuum-consumer replay --from-beginning` knowing those changes are missing",
                        c.next_offset, c.next_offset
                    )));
                }
                if c.next_offset > high {
                    return Err(topic_err(format!(
                        "the checkpoint is at offset {}, beyond the topic's end {high}: the topic was recreated or truncated. Run `continuum-consumer replay --from-beginning` to apply it again from the start",
                        c.next_offset
                    )));
                }
                c
            }
            Some(mut c) => {
                let covered_pos = c.gtid_position.clone();
                let loading = c.snapshot.as_ref().map(|l| l.id.clone());
                let r = reader.clone();
                let found = blocking(move || {
                    let o = r.first_where(low, high, |rec| {
                        match position_of(rec) {
                            Some(StreamPosition::Txn { gtid, .. }) => covered_pos.contains(&gtid),
                            Some(StreamPosition::At(p)) => covered_pos.covers(&p),
                            Some(StreamPosition::Snapshot { id, position }) => {
                                loading.as_deref() != Some(id.as_str())
                                    && covered_pos.covers(&position)
                            }
                            None => false,
                        }
                        .then_some(())
                        .is_none()
                    })?;
                    align_to_start(&r, low, o, high)
                })
                .await
                .map_err(|e| match e {
                    AlignError::Kafka(source) => ApplyError::Kafka {
                        what: "finding the checkpoint's place by GTID".into(),
                        source,
                    },
                    AlignError::Other(reason) => topic_err(reason),
                })?;
                tracing::warn!(
                    from = %c.cluster, to = %cluster, gtid_position = %c.gtid_position, offset = found,
                    "the checkpoint refers to another cluster: found its place here by GTID position"
                );
                c.cluster = cluster.clone();
                c.next_offset = found;
                c
            }
        };
        Ok((ck, high))
    }

    async fn session(
        &mut self,
        d: &Directives,
        term: &mut tokio::sync::mpsc::Receiver<()>,
    ) -> Result<SessionEnd> {
        self.lock.ensure().await?;
        let target = self.settings.target();
        let mut w = Writer::connect(&self.opts, &target).await?;
        if !self.schema_ready {
            checkpoint::ensure_schema(w.conn().await?, &target).await?;
            self.schema_ready = true;
        }
        let loaded =
            checkpoint::load(w.conn().await?, &target, &self.settings.topic, PARTITION).await?;
        let (ck, high) = self.start_point(loaded).await?;
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
        let mut s = Session {
            settings: &self.settings,
            opts: &self.opts,
            lock: &self.lock,
            clock: &self.clock,
            commits: &mut self.commits,
            found_discards: &mut self.discard,
            d: d.clone(),
            committed: ck.clone(),
            pending: ck,
            open: None,
            batch: Batch::default(),
            targets: Targets::new(),
            end,
            last_offset: -1,
        };
        let r = s.run(&mut w, &mut reader, term).await;
        drop(reader);
        if r.is_err() {
            w.rollback().await;
        }
        w.close().await;
        r
    }
}

/// Runs a blocking topic call off the async workers.
async fn blocking<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, E> + Send + 'static,
) -> std::result::Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

#[derive(Debug)]
pub enum AlignError {
    Kafka(rdkafka::error::KafkaError),
    Other(String),
}

impl From<rdkafka::error::KafkaError> for AlignError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        AlignError::Kafka(e)
    }
}

/// Moves `o` back to where what it is part of starts: a source transaction's first event, or
/// a snapshot's START marker. Returns `high` for `o >= high`.
pub fn align_to_start(
    r: &TopicReader,
    low: i64,
    o: i64,
    high: i64,
) -> std::result::Result<i64, AlignError> {
    if o >= high {
        return Ok(high);
    }
    let rec = r.must_read(o)?;
    if rec.offset >= high {
        return Ok(high);
    }
    let o = rec.offset;
    match position_of(&rec) {
        Some(StreamPosition::Txn { gtid, index, .. }) if index > 0 => {
            let start = o - index as i64;
            if start >= low {
                let first = r.must_read(start)?;
                if let Some(StreamPosition::Txn {
                    gtid: g, index: 0, ..
                }) = position_of(&first)
                {
                    if g == gtid && first.offset == start {
                        return Ok(start);
                    }
                }
            }
            Err(AlignError::Other(format!(
                "offset {o} is event {index} of transaction {gtid}, and its first event is not at offset {start}; choose an offset where a transaction starts"
            )))
        }
        Some(StreamPosition::Snapshot { id, .. }) => {
            let want = id.clone();
            let start = r.first_where(low, o + 1, |x| {
                matches!(position_of(x), Some(StreamPosition::Snapshot { id, .. }) if id == want)
            })?;
            let first = r.must_read(start)?;
            if first.header_str(crate::reader::KIND_HEADER) == Some("snapshot") {
                Ok(start)
            } else {
                Err(AlignError::Other(format!(
                    "offset {o} is part of snapshot {id}, whose START marker is no longer in the topic (the first record of it is at {start}); choose an offset after the snapshot's END or restore from a new snapshot"
                )))
            }
        }
        _ => Ok(o),
    }
}

#[allow(clippy::large_enum_variant)]
enum Flow {
    Continue,
    End(SessionEnd),
}

struct Session<'a> {
    settings: &'a ApplySettings,
    opts: &'a Opts,
    lock: &'a ApplyLock,
    clock: &'a SourceClock,
    commits: &'a mut u64,
    found_discards: &'a mut Vec<(i64, i64)>,
    d: Directives,
    /// What the checkpoint row says now.
    committed: Checkpoint,
    /// What the next commit writes: the last consistent point reached.
    pending: Checkpoint,
    open: Option<OpenTxn>,
    batch: Batch,
    targets: Targets,
    /// `--until-caught-up`: the offset to reach.
    end: Option<i64>,
    /// Offset of the last record handled.
    last_offset: i64,
}

impl Session<'_> {
    fn progress(&self) -> bool {
        self.pending != self.committed
    }

    fn diagnosing(&self, offset: i64) -> bool {
        self.d
            .diagnose
            .as_ref()
            .is_some_and(|(until, _)| offset <= *until)
    }

    async fn run(
        &mut self,
        w: &mut Writer,
        reader: &mut Reader,
        term: &mut tokio::sync::mpsc::Receiver<()>,
    ) -> Result<SessionEnd> {
        match self.run_inner(w, reader, term).await {
            // A multi-row statement (or the commit) failed: redo the batch one row per statement
            // and one source transaction per commit, to name the record MariaDB refuses.
            Err(e @ ApplyError::Db { .. }) if !e.is_transient() && self.d.diagnose.is_none() => {
                w.rollback().await;
                let upto = self.last_offset.max(self.committed.next_offset);
                tracing::warn!(error = %e, from = self.committed.next_offset, to = upto,
                    "a batch failed; applying it again row by row to find the record");
                Ok(SessionEnd::Redo(
                    Directives {
                        diagnose: Some((upto, e.to_string())),
                        ..self.d.clone()
                    },
                    None,
                ))
            }
            other => other,
        }
    }

    async fn run_inner(
        &mut self,
        w: &mut Writer,
        reader: &mut Reader,
        term: &mut tokio::sync::mpsc::Receiver<()>,
    ) -> Result<SessionEnd> {
        loop {
            if self.open.is_none() {
                if let Some(end) = self.end {
                    if self.pending.next_offset >= end {
                        self.commit(w).await?;
                        return Ok(SessionEnd::Done(Outcome::CaughtUp {
                            offset: self.pending.next_offset,
                        }));
                    }
                }
            }
            let waiting_batch = self.open.is_none() && (self.progress() || w.dirty());
            let deadline = self
                .batch
                .started
                .map(|t| t + self.settings.apply.batch_wait)
                .filter(|_| waiting_batch);
            let next = tokio::select! {
                biased;
                _ = term.recv() => {
                    if self.open.is_none() {
                        self.commit(w).await?;
                    } else {
                        w.rollback().await;
                    }
                    return Ok(SessionEnd::Done(Outcome::Signal { offset: self.committed.next_offset }));
                }
                _ = sleep_until(deadline) => {
                    self.commit(w).await?;
                    continue;
                }
                n = reader.recv() => n,
            };
            let flow = match next {
                None => {
                    return Err(ApplyError::Topic {
                        topic: self.settings.topic.clone(),
                        cluster: self.settings.read_from.clone(),
                        reason: "the reader stopped without an error".into(),
                    })
                }
                Some(Err(e)) => self.fail(w, e).await?,
                Some(Ok(inc)) => {
                    self.last_offset = inc.offset;
                    match self.handle(w, inc).await {
                        Ok(f) => f,
                        Err(e @ ApplyError::Db { .. }) => return Err(e),
                        Err(e) if e.is_transient() => return Err(e),
                        Err(e) => self.fail(w, e).await?,
                    }
                }
            };
            if let Flow::End(e) = flow {
                return Ok(e);
            }
        }
    }

    /// A fatal error at a record: commit the complete transactions before it (so the
    /// checkpoint names the failing one), then fail.
    async fn fail(&mut self, w: &mut Writer, e: ApplyError) -> Result<Flow> {
        if e.is_transient() {
            return Err(e);
        }
        match &self.open {
            Some(o) if o.rows > 0 => {
                let first = o.first_offset;
                w.rollback().await;
                Ok(Flow::End(SessionEnd::Redo(
                    Directives {
                        stop_before: Some(first),
                        ..self.d.clone()
                    },
                    Some(e),
                )))
            }
            _ => {
                self.open = None;
                if let Err(ce) = self.commit(w).await {
                    tracing::warn!(error = %ce, "could not commit the transactions before the failing record");
                }
                Err(e)
            }
        }
    }

    fn ctx(&self, inc: &Incoming, table: &str, key: String) -> RecordContext {
        RecordContext {
            topic: self.settings.topic.clone(),
            offset: inc.offset,
            gtid: gtid_text(Some(&inc.pos)),
            table: table.to_owned(),
            key,
        }
    }

    fn skip_gtid(&self, gtid: &Gtid) -> bool {
        let replaying = self
            .pending
            .replay_until
            .as_ref()
            .is_some_and(|r| r.contains(gtid));
        !replaying && self.pending.gtid_position.contains(gtid)
    }

    fn touch_batch(&mut self) {
        if self.batch.started.is_none() {
            self.batch.started = Some(Instant::now());
        }
    }

    async fn handle(&mut self, w: &mut Writer, inc: Incoming) -> Result<Flow> {
        // Directives of a redo.
        if let Some(stop) = self.d.stop_before {
            if inc.offset >= stop {
                self.open = None;
                if let Some(until_ms) = self.d.until_at_stop {
                    self.pending.until_reached = true;
                    self.commit(w).await?;
                    return Ok(Flow::End(SessionEnd::Done(Outcome::UntilTime {
                        offset: self.pending.next_offset,
                        until_ms,
                    })));
                }
                self.commit(w).await?;
                return Ok(Flow::End(SessionEnd::StoppedBefore));
            }
        }
        if self
            .d
            .discard
            .iter()
            .any(|(a, b)| (*a..*b).contains(&inc.offset))
        {
            tracing::debug!(
                offset = inc.offset,
                "discarding a record of an abandoned transaction"
            );
            return Ok(Flow::Continue);
        }
        if let Some(until) = self.d.diagnose.as_ref().map(|(u, _)| *u) {
            if inc.offset > until && self.open.is_none() {
                // The diagnosis passed the failing region without reproducing the error.
                let (_, original) = self.d.diagnose.take().unwrap();
                return Err(ApplyError::Record {
                    at: Box::new(RecordContext {
                        topic: self.settings.topic.clone(),
                        offset: until,
                        ..Default::default()
                    }),
                    reason: format!("a batch ending here failed ({original}), and applying its rows one by one did not reproduce it"),
                    fix: "check the replica's MariaDB error log and the table definitions, then restart apply".into(),
                });
            }
        }
        // Point-in-time stop.
        if let (Some(until_ms), Some(ts)) = (self.pending.until_ts_ms, inc.timestamp_ms) {
            if ts > until_ms {
                match &self.open {
                    Some(o) if o.rows > 0 => {
                        let first = o.first_offset;
                        w.rollback().await;
                        return Ok(Flow::End(SessionEnd::Redo(
                            Directives {
                                stop_before: Some(first),
                                until_at_stop: Some(until_ms),
                                ..self.d.clone()
                            },
                            None,
                        )));
                    }
                    _ => {
                        self.open = None;
                        self.pending.until_reached = true;
                        self.commit(w).await?;
                        tracing::info!(
                            offset = inc.offset,
                            until_ms,
                            "reached replay --until-time"
                        );
                        return Ok(Flow::End(SessionEnd::Done(Outcome::UntilTime {
                            offset: self.pending.next_offset,
                            until_ms,
                        })));
                    }
                }
            }
        }
        match (&inc.pos, &inc.record) {
            (
                StreamPosition::Txn {
                    gtid,
                    index,
                    last,
                    resume,
                },
                StreamRecord::Change(ev),
            ) => {
                self.txn_row(w, &inc, *gtid, *index, *last, resume, ev)
                    .await
            }
            (StreamPosition::Snapshot { id, .. }, StreamRecord::Change(ev)) => {
                self.snapshot_row(w, &inc, id, ev).await
            }
            (
                StreamPosition::Txn {
                    gtid,
                    index,
                    last,
                    resume,
                },
                StreamRecord::SchemaChange(sc),
            ) => self.ddl(w, &inc, *gtid, *index, *last, resume, sc).await,
            (StreamPosition::Snapshot { id, .. }, StreamRecord::SchemaChange(sc)) => {
                self.snapshot_ddl(w, &inc, id, sc).await
            }
            (_, StreamRecord::Heartbeat(h)) => self.heartbeat(w, &inc, &h.position, h.ts_ms).await,
            (_, StreamRecord::Snapshot(mk)) => match mk.phase {
                SnapshotPhase::Start => self.snapshot_start(w, &inc, mk).await,
                SnapshotPhase::End => self.snapshot_end(w, &inc, mk).await,
            },
            (p, r) => Err(ApplyError::Record {
                at: Box::new(self.ctx(&inc, "", String::new())),
                reason: format!(
                    "a {} record with position '{p}' does not fit the changelog's rules",
                    r.kind()
                ),
                fix: "the topic holds a record the producer does not write; find what wrote it"
                    .into(),
            }),
        }
    }

    /// After a consistent point: commit if the batch is full (or always while diagnosing).
    async fn consistent_point(&mut self, w: &mut Writer, offset: i64) -> Result<Flow> {
        let a = &self.settings.apply;
        let full = self.batch.ops.total() as usize >= a.batch_rows
            || self.batch.txns as usize >= a.batch_transactions
            || self.batch.bytes >= a.batch_bytes
            || self
                .batch
                .started
                .is_some_and(|t| t.elapsed() >= a.batch_wait)
            || self.diagnosing(offset);
        if full {
            self.commit(w).await?;
        }
        Ok(Flow::Continue)
    }

    #[allow(clippy::too_many_arguments)]
    async fn txn_row(
        &mut self,
        w: &mut Writer,
        inc: &Incoming,
        gtid: Gtid,
        index: u64,
        last: bool,
        resume: &GtidPosition,
        ev: &ChangeEvent,
    ) -> Result<Flow> {
        self.open_txn(inc, gtid, index)?;
        let skip = self.open.as_ref().is_some_and(|o| o.skip);
        if !skip {
            self.row(w, inc, ev).await?;
            if let Some(o) = self.open.as_mut() {
                o.rows += 1;
            }
        }
        if !last {
            return Ok(Flow::Continue);
        }
        self.close_txn(inc, gtid, resume, ev.source.commit_ts_ms, skip);
        self.consistent_point(w, inc.offset).await
    }

    /// Checks that a transaction's event is the next one expected, opening the transaction at
    /// its first event.
    fn open_txn(&mut self, inc: &Incoming, gtid: Gtid, index: u64) -> Result<()> {
        match &mut self.open {
            Some(o) if o.gtid == gtid && o.next_index == index => {
                o.next_index += 1;
                Ok(())
            }
            Some(o) => {
                let (og, oi, of) = (o.gtid, o.next_index, o.first_offset);
                Err(ApplyError::Record {
                    at: Box::new(self.ctx(inc, "", String::new())),
                    reason: format!(
                        "it is event {index} of transaction {gtid}, but transaction {og} (from offset {of}) is still open and expects event {oi}: the topic holds an incomplete transaction that no snapshot replaces"
                    ),
                    fix: "the producer's resume went wrong; restart the producer with --resnapshot to write a fresh snapshot, then start apply again".into(),
                })
            }
            None => {
                let contained = self.pending.gtid_position.contains(&gtid);
                if index != 0 && !contained {
                    return Err(ApplyError::Record {
                        at: Box::new(self.ctx(inc, "", String::new())),
                        reason: format!("it is event {index} of transaction {gtid}, whose earlier events this apply never saw"),
                        fix: "move the checkpoint to the transaction's first event (`continuum-consumer replay --to-offset`)".into(),
                    });
                }
                let skip = index != 0 || self.skip_gtid(&gtid);
                self.open = Some(OpenTxn {
                    gtid,
                    next_index: index + 1,
                    first_offset: inc.offset,
                    skip,
                    rows: 0,
                });
                Ok(())
            }
        }
    }

    fn close_txn(
        &mut self,
        inc: &Incoming,
        gtid: Gtid,
        resume: &GtidPosition,
        commit_ts_ms: i64,
        skip: bool,
    ) {
        self.open = None;
        let after = resume.with(gtid);
        let p = &mut self.pending;
        if skip {
            p.gtid_position = merge_max(&p.gtid_position, &after);
            self.batch.skipped += 1;
        } else {
            p.gtid_position = if p.replay_until.is_some() {
                after
            } else {
                merge_max(&p.gtid_position, &after)
            };
            p.last_gtid = Some(gtid);
            self.batch.txns += 1;
        }
        if commit_ts_ms > 0 {
            p.source_ts_ms = Some(commit_ts_ms);
        }
        p.next_offset = inc.offset + 1;
        p.record_ts_ms = inc.timestamp_ms;
        if let Some(r) = &p.replay_until {
            if p.gtid_position.covers(r) {
                tracing::info!(replay_until = %r, offset = inc.offset, "replay passed its end position: GTID skip resumes");
                p.replay_until = None;
            }
        }
        self.touch_batch();
    }

    /// Buffers the statements of one row change.
    async fn row(&mut self, w: &mut Writer, inc: &Incoming, ev: &ChangeEvent) -> Result<()> {
        let cached = self.targets.cached(&ev.table);
        let planned = match cached {
            Some(p) => Ok(p),
            None => {
                self.targets
                    .plan(w.conn().await?, &self.settings.target(), &ev.table)
                    .await?
            }
        };
        let planned = match planned {
            Ok(p) => p,
            Err(reason) => {
                return Err(ApplyError::Record {
                    at: Box::new(self.ctx(inc, &ev.table.qualified_name(), key_text(ev))),
                    reason,
                    fix: "fix the replica's schema, then restart apply".into(),
                })
            }
        };
        if !planned.missing.is_empty() {
            // Re-applying history (replay, or a snapshot row written before a later schema change):
            // the columns a later schema change dropped are left out; the suffix converges.
            let replaying = match &inc.pos {
                StreamPosition::Txn { gtid, .. } => self
                    .pending
                    .replay_until
                    .as_ref()
                    .is_some_and(|r| r.contains(gtid)),
                _ => false,
            };
            if !replaying {
                return Err(ApplyError::Record {
                    at: Box::new(self.ctx(inc, &ev.table.qualified_name(), key_text(ev))),
                    reason: crate::target::missing_columns_reason(
                        &ev.table.db,
                        &ev.table.table,
                        &planned.missing,
                    ),
                    fix: "fix the replica's schema, then restart apply".into(),
                });
            }
            tracing::debug!(table = %ev.table.qualified_name(), missing = ?planned.missing, offset = inc.offset,
                "replay: leaving out columns the replica no longer has");
        }
        let plan = planned.stmts;
        let bad_image = |what: &str| ApplyError::Record {
            at: Box::new(self.ctx(inc, &ev.table.qualified_name(), key_text(ev))),
            reason: format!("a {} change without its {what} image", ev.op.code()),
            fix: "the source must log full row images (binlog_row_image=FULL)".into(),
        };
        if matches!(ev.op, Op::Insert | Op::Read | Op::Update) && ev.after.is_none() {
            return Err(bad_image("after"));
        }
        if ev.op == Op::Delete && ev.before.is_none() {
            return Err(bad_image("before"));
        }
        let at = self.ctx(inc, &ev.table.qualified_name(), key_text(ev));
        let literal_err = |e: crate::sql::LiteralError| ApplyError::Record {
            at: Box::new(at.clone()),
            reason: e.to_string(),
            fix: "the value cannot be stored by MariaDB; check the source row".into(),
        };
        let checked = buffer_row(&mut w.buf, &plan, ev, true).map_err(literal_err)?;
        match ev.op {
            Op::Insert => self.batch.ops.insert += 1,
            Op::Update => self.batch.ops.update += 1,
            Op::Delete => self.batch.ops.delete += 1,
            Op::Read => self.batch.ops.read += 1,
        }
        self.batch.bytes += inc.size;
        self.touch_batch();
        let flushed = if self.diagnosing(inc.offset) {
            w.buf.seal();
            w.flush_now().await
        } else {
            w.maybe_flush().await
        };
        let flushed = match flushed {
            // A foreign-key action refused by the replica's newer rows (a replay): apply the row
            // without the action, as the rows it would change are re-applied by the suffix.
            Err(e)
                if checked
                    && self.diagnosing(inc.offset)
                    && matches!(e.server_code(), Some(1451 | 1452 | 1062)) =>
            {
                tracing::warn!(offset = inc.offset, table = %ev.table.qualified_name(), key = %key_text(ev), error = %e,
                    "a foreign-key action could not run against the replica's rows (re-applying over newer state?); applying the row without it");
                w.execute(
                    "SET SESSION foreign_key_checks=0".into(),
                    "turning foreign-key checks off",
                )
                .await?;
                buffer_row(&mut w.buf, &plan, ev, false).map_err(literal_err)?;
                w.buf.seal();
                w.flush_now().await
            }
            other => other,
        };
        match flushed {
            Ok(()) => Ok(()),
            Err(e) if e.is_transient() => Err(e),
            Err(e @ ApplyError::Db { .. }) if self.diagnosing(inc.offset) => Err(ApplyError::Record {
                at: Box::new(self.ctx(inc, &ev.table.qualified_name(), key_text(ev))),
                reason: format!("MariaDB refused it: {}", source_text(&e)),
                fix: "make the replica's table accept the source's row (its definition must match the source's), then restart apply".into(),
            }),
            Err(e) => Err(e),
        }
    }

    /// A record of snapshot `id` fits only while that snapshot loads here.
    fn check_loading(&self, inc: &Incoming, id: &str, what: &str, at: RecordContext) -> Result<()> {
        match &self.pending.snapshot {
            Some(l) if l.id == id => Ok(()),
            other => Err(ApplyError::Record {
                at: Box::new(at),
                reason: format!(
                    "it is {what} of snapshot {id}, but this replica is {} (its START marker was not applied here)",
                    match other {
                        Some(l) => format!("loading snapshot {}", l.id),
                        None => "not loading a snapshot".into(),
                    }
                ),
                fix: format!("replay from the snapshot's START: `continuum-consumer replay --to-offset {}` finds it", inc.offset),
            }),
        }
    }

    async fn snapshot_row(
        &mut self,
        w: &mut Writer,
        inc: &Incoming,
        id: &str,
        ev: &ChangeEvent,
    ) -> Result<Flow> {
        if self.open.is_some() {
            return Err(self.open_txn_interrupted(inc, "a snapshot row"));
        }
        self.check_loading(
            inc,
            id,
            "a row",
            self.ctx(inc, &ev.table.qualified_name(), key_text(ev)),
        )?;
        self.row(w, inc, ev).await?;
        self.pending.next_offset = inc.offset + 1;
        self.pending.record_ts_ms = inc.timestamp_ms;
        self.consistent_point(w, inc.offset).await
    }

    fn open_txn_interrupted(&self, inc: &Incoming, what: &str) -> ApplyError {
        let o = self.open.as_ref().unwrap();
        ApplyError::Record {
            at: Box::new(self.ctx(inc, "", String::new())),
            reason: format!(
                "{what} arrived while transaction {} (from offset {}) is open and expects event {}",
                o.gtid, o.first_offset, o.next_index
            ),
            fix:
                "the topic holds an incomplete transaction; restart the producer with --resnapshot"
                    .into(),
        }
    }

    async fn snapshot_start(
        &mut self,
        w: &mut Writer,
        inc: &Incoming,
        mk: &SnapshotMarker,
    ) -> Result<Flow> {
        if let Some(o) = &self.open {
            // The producer died inside a transaction and began a new snapshot: the snapshot
            // replaces it. Drop what of it this batch holds.
            let (first, gtid, rows) = (o.first_offset, o.gtid, o.rows);
            tracing::warn!(%gtid, from = first, to = inc.offset, "a snapshot starts while a transaction is incomplete: the producer abandoned it; its events are discarded");
            self.found_discards.push((first, inc.offset));
            if rows > 0 {
                w.rollback().await;
                let mut d = self.d.clone();
                d.discard.push((first, inc.offset));
                return Ok(Flow::End(SessionEnd::Redo(d, None)));
            }
            self.open = None;
        }
        self.commit(w).await?;
        let mut tables = Vec::new();
        for t in &mk.tables {
            let Some((db, table)) = t.split_once('.') else {
                return Err(ApplyError::Record {
                    at: Box::new(self.ctx(inc, t, String::new())),
                    reason: format!(
                        "snapshot {} lists table '{t}', which is not db.table",
                        mk.snapshot_id
                    ),
                    fix: "the snapshot marker is malformed; restart the producer with --resnapshot"
                        .into(),
                });
            };
            tables.push(crate::sql::qualified(db, table));
        }
        for (t, q) in mk.tables.iter().zip(&tables) {
            let r = w
                .execute(
                    format!("DELETE FROM {q}"),
                    "emptying a table for a snapshot",
                )
                .await;
            match r {
                Ok(()) => {}
                // Missing here: the snapshot carries the table's definition (CREATE TABLE IF NOT
                // EXISTS) ahead of its rows, so it is created empty before they arrive. A
                // snapshot from a producer that carries none fails at its first row instead,
                // naming the table.
                Err(e) if matches!(e.server_code(), Some(1146) | Some(1049)) => {
                    tracing::info!(snapshot = %mk.snapshot_id, table = %t, "table does not exist on the replica yet; the snapshot's definition creates it");
                }
                Err(e) => return Err(e),
            }
        }
        tracing::info!(snapshot = %mk.snapshot_id, position = %mk.position, tables = mk.tables.len(), offset = inc.offset, "snapshot starts: tables emptied, loading");
        self.pending.snapshot = Some(LoadingSnapshot {
            id: mk.snapshot_id.clone(),
        });
        self.pending.next_offset = inc.offset + 1;
        self.pending.record_ts_ms = inc.timestamp_ms;
        self.touch_batch();
        self.commit(w).await?;
        Ok(Flow::Continue)
    }

    async fn snapshot_end(
        &mut self,
        w: &mut Writer,
        inc: &Incoming,
        mk: &SnapshotMarker,
    ) -> Result<Flow> {
        if self.open.is_some() {
            return Err(self.open_txn_interrupted(inc, "a snapshot END"));
        }
        let loading = self
            .pending
            .snapshot
            .as_ref()
            .is_some_and(|l| l.id == mk.snapshot_id);
        if !loading {
            tracing::warn!(snapshot = %mk.snapshot_id, offset = inc.offset, "END of a snapshot this replica did not load; treated as a heartbeat");
            return self.heartbeat(w, inc, &mk.position, mk.ts_ms).await;
        }
        self.pending.snapshot = None;
        self.pending.gtid_position = mk.position.clone();
        self.pending.replay_until = self
            .pending
            .replay_until
            .take()
            .filter(|r| !mk.position.covers(r));
        self.pending.next_offset = inc.offset + 1;
        self.pending.record_ts_ms = inc.timestamp_ms;
        if mk.ts_ms > 0 {
            self.pending.source_ts_ms = Some(mk.ts_ms);
        }
        self.touch_batch();
        self.commit(w).await?;
        tracing::info!(snapshot = %mk.snapshot_id, position = %mk.position, "snapshot loaded");
        Ok(Flow::Continue)
    }

    async fn heartbeat(
        &mut self,
        w: &mut Writer,
        inc: &Incoming,
        position: &GtidPosition,
        ts_ms: i64,
    ) -> Result<Flow> {
        if self.open.is_some() {
            return Ok(Flow::Continue);
        }
        let p = &mut self.pending;
        if p.snapshot.is_none() {
            p.gtid_position = if p.replay_until.is_some() {
                position.clone()
            } else {
                merge_max(&p.gtid_position, position)
            };
            if let Some(r) = &p.replay_until {
                if p.gtid_position.covers(r) {
                    p.replay_until = None;
                }
            }
        }
        if ts_ms > 0 {
            p.source_ts_ms = Some(ts_ms);
        }
        p.next_offset = inc.offset + 1;
        p.record_ts_ms = inc.timestamp_ms;
        self.touch_batch();
        self.consistent_point(w, inc.offset).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn ddl(
        &mut self,
        w: &mut Writer,
        inc: &Incoming,
        gtid: Gtid,
        index: u64,
        last: bool,
        resume: &GtidPosition,
        sc: &SchemaChange,
    ) -> Result<Flow> {
        if self.open.is_some() {
            return Err(self.open_txn_interrupted(inc, "a schema change"));
        }
        if index != 0 || !last {
            return Err(ApplyError::Record {
                at: Box::new(self.ctx(inc, &sc.database, String::new())),
                reason: format!("a schema change must be a transaction of its own (index 0, last), this one is event {index}"),
                fix: "find what wrote this record".into(),
            });
        }
        let skip = self.skip_gtid(&gtid);
        if !skip {
            self.commit(w).await?;
            let at = Box::new(self.ctx(inc, &sc.database, String::new()));
            match self.settings.apply.ddl {
                DdlPolicy::Stop => {
                    return Err(ApplyError::DdlStop {
                        at,
                        ddl: sc.ddl.clone(),
                    });
                }
                DdlPolicy::Skip => {
                    tracing::warn!(offset = inc.offset, %gtid, ddl = %sc.ddl, "schema change skipped (consumer.apply.ddl = skip)");
                    m::ddl("skipped");
                }
                DdlPolicy::Apply => self.run_ddl(at, sc).await?,
            }
            self.targets.invalidate();
        }
        self.close_txn(inc, gtid, resume, sc.source.commit_ts_ms, skip);
        if !skip {
            self.commit(w).await?;
            return Ok(Flow::Continue);
        }
        self.consistent_point(w, inc.offset).await
    }

    /// A table definition carried by a snapshot (`CREATE DATABASE/TABLE IF NOT EXISTS`, between
    /// the START marker and the table's rows). It can only create what is missing, never alter
    /// what exists, so it runs under `ddl = apply` and `ddl = stop` alike (stop guards schema
    /// *changes* from the binlog); under `ddl = skip` it is skipped and the table must exist.
    async fn snapshot_ddl(
        &mut self,
        w: &mut Writer,
        inc: &Incoming,
        id: &str,
        sc: &SchemaChange,
    ) -> Result<Flow> {
        if self.open.is_some() {
            return Err(self.open_txn_interrupted(inc, "a snapshot's table definition"));
        }
        self.check_loading(
            inc,
            id,
            "a table definition",
            self.ctx(inc, &sc.database, String::new()),
        )?;
        let upper = sc.ddl.trim_start().to_ascii_uppercase();
        if !(upper.starts_with("CREATE TABLE IF NOT EXISTS")
            || upper.starts_with("CREATE DATABASE IF NOT EXISTS"))
        {
            return Err(ApplyError::Record {
                at: Box::new(self.ctx(inc, &sc.database, String::new())),
                reason: format!(
                    "a snapshot may only carry CREATE ... IF NOT EXISTS, this one carries: {}",
                    sc.ddl
                ),
                fix: "find what wrote this record".into(),
            });
        }
        // Rows of the previous table go in first; the definition runs on its own connection.
        self.commit(w).await?;
        match self.settings.apply.ddl {
            DdlPolicy::Skip => {
                tracing::info!(offset = inc.offset, ddl = %sc.ddl, "snapshot table definition skipped (consumer.apply.ddl = skip)");
                m::ddl("skipped");
            }
            DdlPolicy::Apply | DdlPolicy::Stop => {
                let at = Box::new(self.ctx(inc, &sc.database, String::new()));
                self.run_ddl(at, sc).await?;
            }
        }
        self.targets.invalidate();
        self.pending.next_offset = inc.offset + 1;
        self.pending.record_ts_ms = inc.timestamp_ms;
        self.touch_batch();
        self.commit(w).await?;
        Ok(Flow::Continue)
    }

    async fn run_ddl(&self, at: Box<RecordContext>, sc: &SchemaChange) -> Result<()> {
        let target = self.settings.target();
        let mut conn = writer::connect(self.opts, &target).await?;
        let db_err = |what: &str, source| ApplyError::Db {
            target: target.clone(),
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
                target,
                ddl: sc.ddl.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// Commits the batch and the checkpoint (nothing if there is no progress).
    async fn commit(&mut self, w: &mut Writer) -> Result<()> {
        debug_assert!(
            self.open.is_none() || !w.dirty() || self.open.as_ref().is_some_and(|o| o.rows == 0)
        );
        if !self.progress() && !w.dirty() {
            self.batch = Batch::default();
            return Ok(());
        }
        self.lock.check(w.conn().await?).await?;
        self.pending.error = None;
        let sql = self.pending.upsert_sql();
        w.commit(&sql).await?;
        *self.commits += 1;
        m::batch_committed(
            &self.batch.ops,
            self.batch.txns,
            self.batch.skipped,
            self.pending.next_offset,
        );
        if let Some(ts) = self.pending.source_ts_ms {
            self.clock.set(ts);
        }
        tracing::debug!(
            offset = self.pending.next_offset, rows = self.batch.ops.total(), txns = self.batch.txns,
            gtid_position = %self.pending.gtid_position, "committed"
        );
        self.committed = self.pending.clone();
        self.batch = Batch::default();
        Ok(())
    }
}

/// Buffers the statements of one row change; returns whether a statement runs with foreign-key
/// checks on (only if `checked` allows it and the table has cascading foreign keys).
fn buffer_row(
    buf: &mut crate::sql::StatementBuffer,
    plan: &RowStatements,
    ev: &ChangeEvent,
    checked: bool,
) -> std::result::Result<bool, crate::sql::LiteralError> {
    match ev.op {
        Op::Insert | Op::Read => buf
            .replace(plan, ev.after.as_deref().unwrap_or_default())
            .map(|_| false),
        Op::Update => {
            let after = ev.after.as_deref().unwrap_or_default();
            match ev.before.as_deref() {
                // Referenced columns change: UPDATE with checks on runs the ON UPDATE action;
                // the REPLACE after it makes the row right if the UPDATE found nothing.
                Some(before) if checked && plan.needs_cascading_update(before, after) => {
                    buf.update_checked(plan, before, after)?;
                    buf.replace(plan, after)?;
                    Ok(true)
                }
                // The key changes: the old key goes (no delete action: the source updated the
                // row, it did not delete it), then the after-image.
                Some(before) if key_changed(plan, before, after) => {
                    buf.delete_unchecked(plan, before)?;
                    buf.replace(plan, after)?;
                    Ok(false)
                }
                _ => buf.replace(plan, after).map(|_| false),
            }
        }
        Op::Delete => {
            let before = ev.before.as_deref().unwrap_or_default();
            if checked {
                buf.delete(plan, before)?;
                Ok(plan.cascade_delete)
            } else {
                buf.delete_unchecked(plan, before)?;
                Ok(false)
            }
        }
    }
}

fn key_changed(
    plan: &RowStatements,
    before: &[continuum_schemas::Value],
    after: &[continuum_schemas::Value],
) -> bool {
    plan.key.iter().any(|(i, ..)| before[*i] != after[*i])
}

fn key_text(ev: &ChangeEvent) -> String {
    let row = ev.after.as_ref().or(ev.before.as_ref());
    match row {
        Some(r) => ev
            .table
            .primary_key
            .iter()
            .map(|&i| format!("{}={}", ev.table.columns[i].name, describe_value(&r[i])))
            .collect::<Vec<_>>()
            .join(", "),
        None => String::new(),
    }
}

fn source_text(e: &ApplyError) -> String {
    match e {
        ApplyError::Db { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// SIGTERM and SIGINT, as one stream.
fn signal_stream() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = match signal(SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        let _ = tx.send(()).await;
    });
    rx
}
