//! The producer pipeline: lock, preflight, resume decision, snapshot or binlog streaming, and
//! the writer, with restarts. While it streams, it takes snapshot requests and writes the chunks
//! of an incremental snapshot between transactions (`incremental`).
//!
//! Exactly-once without Kafka transactions: every record carries its stream position; after any
//! transient failure the pipeline waits until every queued record is delivered or failed, reads
//! the topic's last record again, and resumes exactly after it. Within a transaction, a record
//! is written only when the next one (or the commit) is known, so `last` is always right and
//! memory stays bounded whatever the transaction's size.

use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use mysql_async::{Conn, Opts};

use crate::metrics as m;
use continuum_common::config::{FirstSnapshot, SiteConfig};
use continuum_common::lock::{LockError, NamedLock, Wait};
use continuum_common::observe::{now_ms, Health, Status};
use continuum_common::supervise::{Shutdown, Supervisor};
use continuum_common::{db, kafka};
use continuum_schemas::{
    Decoder, Encoder, Gtid, GtidPosition, Heartbeat, Registry, RegistrySettings, StreamPosition,
    StreamRecord,
};

use crate::binlog::{BinlogReader, ReaderSettings, SourceEvent};
use crate::boundary::Place;
use crate::error::{DbContext, ProducerError};
use crate::framing::{Framing, Seen};
use crate::incremental::{self, Incremental, IncrementalSettings, Progress};
use crate::preflight::{self, SourceFacts};
use crate::request::{self, Requests};
use crate::resume::{self, Start};
use crate::sink::Sink;
use crate::snapshot::{self, SnapshotSettings};
use continuum_common::filter::TableFilter;
use continuum_common::writer::RecordLimit;

/// How the first session starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initial {
    /// From the topic's last record (a snapshot if the topic is empty).
    Resume,
    /// A fresh snapshot, whatever the topic holds (`--resnapshot`).
    Resnapshot,
    /// An empty topic starts at this position, with no snapshot (`--start-position`).
    StartAt(GtidPosition),
    /// Stream from the source's current position, and snapshot every captured table
    /// incrementally (`--recapture`: the topic's position is lost).
    Recapture,
}

pub struct Producer {
    cfg: SiteConfig,
    topic: String,
    opts: Opts,
    target: String,
    initial: Initial,
    health: Health,
    shutdown: Shutdown,
}

impl Producer {
    pub fn new(
        cfg: SiteConfig,
        initial: Initial,
        health: Health,
        shutdown: Shutdown,
    ) -> Result<Self, ProducerError> {
        let topic = cfg.topic_of(&cfg.site)?;
        let opts = db::opts(&cfg.database, &[])?;
        let target = db::describe(&cfg.database);
        Ok(Producer {
            cfg,
            topic,
            opts,
            target,
            initial,
            health,
            shutdown,
        })
    }

    /// Runs until shutdown (Ok) or a fatal error.
    pub async fn run(mut self) -> Result<(), ProducerError> {
        let site = self.cfg.site.clone();
        let cluster = self.cfg.local().clone();
        let client_id = format!("continuum-producer-{site}");
        let pcfg = kafka::producer_config(&site, &cluster, &client_id, &self.cfg.producer)?;
        let ccfg = kafka::consumer_config(&site, &cluster, &format!("{client_id}-resume"))?;
        let registry = Registry::new(&registry_settings(&cluster, &site)?)
            .map_err(|e| ProducerError::Codec(e.into()))?;
        let mut sink = Sink::new(pcfg.clone(), Encoder::new(registry, &self.topic))?;

        let mut supervisor = Supervisor::new(
            "producer",
            m::ERRORS_TOTAL.name,
            self.health.clone(),
            self.cfg.producer.max_retry_delay,
        );
        let mut lock: Option<NamedLock> = None;
        let mut first = true;
        loop {
            if *self.shutdown.borrow() {
                sink.flush().await?;
                return Ok(());
            }
            let result = self
                .session(&mut sink, &pcfg, &ccfg, &mut lock, first)
                .await;
            first = false;
            match result {
                Ok(()) => {
                    sink.flush().await?;
                    tracing::info!("stopped");
                    return Ok(());
                }
                Err(e)
                    if e.is_transient()
                        || matches!(e, ProducerError::Lock(LockError::Lost { .. })) =>
                {
                    if matches!(e, ProducerError::Lock(LockError::Lost { .. })) {
                        sink.purge_queue();
                        lock = None;
                    }
                    // Records the broker acknowledged are progress.
                    let delay = supervisor.transient(
                        sink.delivered(),
                        e.kind(),
                        &e,
                        "pipeline interrupted; resuming from the topic's last record",
                    );
                    if matches!(e, ProducerError::Delivery { .. }) {
                        sink.reset().await?;
                    }
                    supervisor.wait(delay, &mut self.shutdown.clone()).await;
                }
                Err(e) => {
                    supervisor.fatal(e.kind(), &e);
                    let _ = sink.flush().await;
                    return Err(e);
                }
            }
        }
    }

    async fn session(
        &mut self,
        sink: &mut Sink,
        pcfg: &rdkafka::ClientConfig,
        ccfg: &rdkafka::ClientConfig,
        lock: &mut Option<NamedLock>,
        first: bool,
    ) -> Result<(), ProducerError> {
        // Everything a previous session queued is delivered or failed before we look.
        sink.flush().await?;
        sink.check()?;
        if lock.is_none() {
            let name = format!("continuum.producer.{}", self.topic);
            let what = format!("another continuum-producer for {}", self.topic);
            // Waits as a standby while another producer holds the lock; a signal ends the wait.
            let mut shutdown = self.shutdown.clone();
            let acquired = tokio::select! {
                r = NamedLock::take(self.opts.clone(), &self.target, &name, &what, Wait::UntilFree) => r?,
                _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            };
            *lock = Some(acquired);
        }
        let lock = lock.as_ref().expect("lock held");
        let max = self.cfg.producer.max_record_bytes;
        let kerr = |what: String| move |source| ProducerError::Kafka { what, source };
        kafka::ensure_changelog_topic(pcfg, &self.topic, max, Duration::from_secs(30))
            .await
            .map_err(kerr(format!("creating topic {}", self.topic)))?;
        let topic_max = kafka::topic_max_message_bytes(pcfg, &self.topic, Duration::from_secs(30))
            .await
            .map_err(kerr(format!(
                "reading the settings of topic {}",
                self.topic
            )))?;
        if topic_max < max {
            tracing::warn!(topic = %self.topic, topic_max_message_bytes = topic_max, producer_max_record_bytes = max,
                "the topic takes smaller records than producer.max_record_bytes allows; a larger row change will stop the producer");
        }
        sink.set_limit(RecordLimit::new(max, &self.topic, topic_max));
        tracing::debug!(topic = %self.topic, "changelog topic present");

        let mut filter = TableFilter::new(&self.cfg.producer)?;
        let mut conn = Conn::new(self.opts.clone()).await.db(&self.target)?;
        let facts = preflight::check(
            &mut conn,
            &self.target,
            self.cfg.producer.server_id,
            &mut filter,
            self.cfg.producer.tables_without_primary_key,
        )
        .await?;
        drop(conn);
        tracing::debug!("preflight passed");

        let last = resume::read_last_position(ccfg, &self.topic).await?;
        let mut start = resume::from_last(last.as_ref().map(|l| l.position.clone()));
        let mut start_at = None;
        let mut recapturing = false;
        let mut resnapshot = false;
        // The flags act on the first session; `--recapture` also on a retry before its mark
        // was delivered.
        if first || self.initial == Initial::Recapture {
            match std::mem::replace(&mut self.initial, Initial::Resume) {
                Initial::Resume => {}
                Initial::Resnapshot => {
                    resnapshot = true;
                    start = Start::Snapshot {
                        reason: "--resnapshot was given".into(),
                    }
                }
                Initial::StartAt(p) => {
                    if let Some(resume::LastRecord {
                        offset,
                        position: pos,
                        ..
                    }) = &last
                    {
                        return Err(ProducerError::Resume(format!(
                            "--start-position {p} is for an empty topic, but {} already holds records (the last, at offset {offset}, is {pos}); drop the flag to resume from the topic",
                            self.topic
                        )));
                    }
                    start_at = Some(p);
                }
                Initial::Recapture => match &last {
                    // An empty topic takes its first snapshot, as always.
                    None => {}
                    Some(l) => {
                        if !matches!(
                            l.position,
                            StreamPosition::Txn { last: true, .. }
                                | StreamPosition::At(_)
                                | StreamPosition::Chunk { .. }
                        ) && !matches!(&l.position, StreamPosition::Snapshot { id, .. } if id.starts_with(snapshot::MARK_ID_PREFIX))
                        {
                            return Err(ProducerError::Resume(format!(
                                "--recapture goes on from a transaction boundary, but the last record of {} (offset {}) is {}, inside a transaction or a consistent snapshot; restart with --resnapshot instead",
                                self.topic, l.offset, l.position
                            )));
                        }
                        // Until its mark is in the topic, a retried session recaptures again.
                        self.initial = Initial::Recapture;
                        let (now, id, tables) =
                            self.incremental_start(sink, &filter, &facts).await?;
                        self.initial = Initial::Resume;
                        tracing::warn!(topic = %self.topic, from = %l.position, to = %now, request = id, tables, "--recapture: streaming from the source's current position, every captured table defined there; what the topic lacks before it comes with the incremental snapshot of every captured table");
                        start = Start::At(now);
                        recapturing = true;
                    }
                },
            }
        }
        // An empty topic starts as a recapture does (`producer.first_snapshot`), unless it is
        // `consistent`, or `auto` and a captured table cannot be snapshotted incrementally.
        if last.is_none() && start_at.is_none() && !resnapshot && !facts.read_only {
            let incremental = match self.cfg.producer.first_snapshot {
                FirstSnapshot::Consistent => false,
                FirstSnapshot::Incremental => true,
                FirstSnapshot::Auto => {
                    let mut conn = Conn::new(self.opts.clone()).await.db(&self.target)?;
                    let (_, refused) =
                        request::incremental_refusals(&mut conn, &self.target, &filter).await?;
                    if !refused.is_empty() {
                        tracing::info!(topic = %self.topic, reasons = %refused.join("; "), "the topic is empty, and a captured table cannot be snapshotted incrementally: taking the consistent snapshot (producer.first_snapshot = auto)");
                    }
                    refused.is_empty()
                }
            };
            if incremental {
                match self.incremental_start(sink, &filter, &facts).await {
                    Ok((now, id, tables)) => {
                        tracing::info!(topic = %self.topic, position = %now, request = id, tables, "the topic is empty: streaming from the source's current position, every captured table defined there, and snapshotting every captured table incrementally (producer.first_snapshot)");
                        start = Start::At(now);
                    }
                    // `auto` takes the consistent snapshot when the request cannot be queued
                    // (no privilege on `continuum`, say); nothing is in the topic yet.
                    Err(e)
                        if !e.is_transient()
                            && self.cfg.producer.first_snapshot == FirstSnapshot::Auto =>
                    {
                        tracing::warn!(topic = %self.topic, error = %e, "the topic is empty, and the incremental snapshot cannot be queued: taking the consistent snapshot (producer.first_snapshot = auto)");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        match &last {
            Some(resume::LastRecord {
                offset,
                position: pos,
                ..
            }) => {
                tracing::info!(topic = %self.topic, offset, last = %pos, decision = ?start, "resuming")
            }
            None => tracing::info!(topic = %self.topic, decision = ?start, "topic is empty"),
        }
        // An incremental snapshot the topic's last record was written in goes on from there.
        let resumed = match (&start, &last) {
            (Start::Snapshot { .. }, _) | (_, None) => None,
            // The recapture's snapshot covers every table: one the topic was in the middle of
            // is superseded.
            _ if recapturing => None,
            (_, Some(l)) => match l.record.header_str(incremental::HEADER_SNAPSHOT) {
                Some(text) => Some(Progress::parse(
                    text,
                    &format!("the last record of {} (offset {})", self.topic, l.offset),
                )?),
                None => None,
            },
        };
        let restart_for = match facts.read_only {
            // A replica's producer snapshots nothing of its own (requests wait for a promotion).
            true => Vec::new(),
            false => {
                // A consistent snapshot (abandoned one redone, or --resnapshot) covers them.
                let compare =
                    last.is_some() && !recapturing && !matches!(start, Start::Snapshot { .. });
                self.newly_captured(
                    sink,
                    &mut filter,
                    &facts,
                    (&start, resumed.as_ref()),
                    compare,
                )
                .await?
            }
        };
        let (position, within) = match start {
            Start::Snapshot { reason } => {
                let settings = self.snapshot_settings(&filter, &facts);
                // On a read-only source, an abandoned snapshot of tables is still finished by a
                // complete one: never ended by an empty START/END.
                let finishes = match &last {
                    Some(l) if facts.read_only => {
                        let registry =
                            Registry::new(&registry_settings(self.cfg.local(), &self.cfg.site)?)
                                .map_err(|e| ProducerError::Codec(e.into()))?;
                        resume::in_abandoned_table_snapshot(
                            l,
                            &self.topic,
                            &mut Decoder::new(registry),
                        )
                        .await?
                    }
                    _ => false,
                };
                let p = if let Some(p) = start_at {
                    snapshot::mark_start(settings, sink, Some(p)).await?
                } else if !resume::takes_table_snapshot(facts.read_only, finishes) {
                    snapshot::mark_start(settings, sink, None).await?
                } else {
                    if facts.read_only {
                        tracing::warn!("the source is read_only, but the topic ends inside an abandoned snapshot of tables, which the replica holds part of: taking a complete snapshot of the tables to finish it");
                    }
                    tracing::info!(%reason, "taking a consistent snapshot");
                    self.health.set("producer", Status::Ok, "snapshot");
                    snapshot::run(settings, sink, lock).await?
                };
                (p, None)
            }
            Start::At(p) => (p, None),
            Start::Remark(p) => {
                let mut conn = Conn::new(self.opts.clone()).await.db(&self.target)?;
                let tables = request::captured_tables(&mut conn, &self.target, &filter).await?;
                drop(conn);
                sink.set_progress(resumed.as_ref().map(Progress::header));
                snapshot::mark_definitions(
                    self.snapshot_settings(&filter, &facts),
                    sink,
                    &p,
                    &tables,
                )
                .await?;
                sink.flush().await?;
                sink.check()?;
                tracing::info!(topic = %self.topic, position = %p, tables = tables.len(), "the topic ended inside a mark of table definitions: marked again with every captured table's definition, streaming from there");
                (p, None)
            }
            Start::Within { resume, gtid, skip } => (resume, Some((gtid, skip))),
        };
        let from = StreamStart {
            position,
            within,
            snapshot: resumed,
            restart_for,
        };
        self.stream(sink, lock, filter, facts, from).await
    }

    /// Where an incremental capture of every table starts (`--recapture`, or an empty topic with
    /// `producer.first_snapshot = "incremental"`): the source's current position, with a request
    /// queued for every captured table, and the topic marked there with their definitions
    /// (delivered before this returns). Returns the position, the request and its table count.
    async fn incremental_start(
        &self,
        sink: &mut Sink,
        filter: &TableFilter,
        facts: &SourceFacts,
    ) -> Result<(GtidPosition, u64, usize), ProducerError> {
        let mut conn = Conn::new(self.opts.clone()).await.db(&self.target)?;
        let (now, id, tables) =
            request::recapture(&mut conn, &self.target, &self.topic, filter).await?;
        drop(conn);
        snapshot::mark_definitions(self.snapshot_settings(filter, facts), sink, &now, &tables)
            .await?;
        sink.flush().await?;
        sink.check()?;
        Ok((now, id, tables.len()))
    }

    fn snapshot_settings<'a>(
        &'a self,
        filter: &'a TableFilter,
        facts: &SourceFacts,
    ) -> SnapshotSettings<'a> {
        SnapshotSettings {
            opts: self.opts.clone(),
            target: &self.target,
            filter,
            chunk_rows: self.cfg.producer.snapshot_chunk_rows,
            chunk_bytes: self.cfg.producer.snapshot_chunk_bytes,
            server_id: facts.server_id,
            replica_server_id: self.cfg.producer.server_id,
            no_pk: self.cfg.producer.tables_without_primary_key,
        }
    }

    /// Tables that a changed `producer.include`/`producer.exclude` newly captures, when the
    /// topic goes on from its last record (`compare`; a snapshot of every table needs none).
    /// Their rows from before are in no binlog event the producer reads, so at a transaction
    /// boundary (`Start::At`) their definitions are marked in the topic there and an incremental
    /// snapshot of them is queued, and the filter is then recorded (`continuum.capture`).
    /// Inside a transaction nothing may go between its records: they are left out of this
    /// session, and returned, and the session restarts once the transaction is written.
    async fn newly_captured(
        &self,
        sink: &mut Sink,
        filter: &mut TableFilter,
        facts: &SourceFacts,
        at: (&Start, Option<&Progress>),
        compare: bool,
    ) -> Result<Vec<String>, ProducerError> {
        let (start, resumed) = at;
        let mut conn = Conn::new(self.opts.clone()).await.db(&self.target)?;
        let set = request::CaptureSet::of(&self.cfg.producer, filter);
        let before = match compare {
            false => None,
            true => match request::captured_before(&mut conn, &self.target, &self.topic).await {
                Err(e) if !e.is_transient() => {
                    tracing::warn!(error = %e, topic = %self.topic, "cannot read the capture filter last streamed with (continuum.capture): a table that producer.include newly captures is not snapshotted by itself; snapshot it with continuum-producer snapshot --table");
                    return Ok(Vec::new());
                }
                r => r?,
            },
        };
        // The same capture as recorded: nothing is newly captured, and nothing to record.
        if before.as_ref() == Some(&set) {
            return Ok(Vec::new());
        }
        if compare && before.is_none() {
            tracing::info!(topic = %self.topic, "no capture filter is recorded for this topic (continuum.capture): recording it, so that a table captured by a later change of producer.include is snapshotted");
        }
        let newly = match &before {
            Some(b) => {
                let tables = request::base_tables(&mut conn, &self.target).await?;
                request::newly_captured(filter, b, &tables)?
            }
            None => Vec::new(),
        };
        if !newly.is_empty() {
            let (Start::At(p) | Start::Remark(p)) = start else {
                tracing::info!(topic = %self.topic, tables = %newly.join(","), "producer.include newly captures these tables; the topic ends inside a transaction, so they are left out until it is written, and taken when the session restarts there");
                for t in &newly {
                    filter.exclude_table(t.clone());
                }
                return Ok(newly);
            };
            let refused =
                request::check_tables(&mut conn, &self.target, Some(filter), &newly).await?;
            if !refused.is_empty() {
                return Err(ProducerError::Snapshot(format!(
                    "producer.include/producer.exclude now capture {}, which the topic did not capture before, and whose rows so far must be snapshotted; they cannot be snapshotted incrementally: {}. Leave them out (producer.exclude), or restart once with --resnapshot",
                    newly.join(", "),
                    refused.join("; ")
                )));
            }
            // A start that died before recording the filter queued this request already.
            let pending =
                request::pending_for(&mut conn, &self.target, &self.topic, &newly).await?;
            let id = match pending {
                Some(id) => id,
                None => {
                    let (target, topic) = (&self.target, &self.topic);
                    request::submit(&mut conn, target, topic, Some(filter), &newly, &[]).await?
                }
            };
            // An incremental snapshot the topic is in the middle of goes on after the mark.
            sink.set_progress(resumed.map(Progress::header));
            snapshot::mark_definitions(self.snapshot_settings(filter, facts), sink, p, &newly)
                .await?;
            sink.flush().await?;
            sink.check()?;
            tracing::info!(topic = %self.topic, position = %p, request = id, tables = %newly.join(","), "producer.include newly captures these tables: their definitions are in the topic here, and their rows come with an incremental snapshot");
        }
        match request::record_capture(&mut conn, &self.target, &self.topic, &set).await {
            Err(e) if !e.is_transient() => {
                tracing::warn!(error = %e, topic = %self.topic, "cannot record the capture filter (continuum.capture): a table that a later change of producer.include captures is not snapshotted by itself; snapshot it with continuum-producer snapshot --table");
                Ok(Vec::new())
            }
            r => r.map(|()| Vec::new()),
        }
    }

    async fn stream(
        &mut self,
        sink: &mut Sink,
        lock: &NamedLock,
        filter: TableFilter,
        facts: SourceFacts,
        from: StreamStart,
    ) -> Result<(), ProducerError> {
        let StreamStart {
            position,
            within,
            snapshot: resumed,
            restart_for,
        } = from;
        let p = &self.cfg.producer;
        let mut snap = Snapshots::new(self, &filter, &facts);
        let mut reader = BinlogReader::connect(
            self.opts.clone(),
            &position,
            ReaderSettings {
                target: self.target.clone(),
                server_id: p.server_id,
                heartbeat_period: (p.heartbeat_interval / 2).max(Duration::from_millis(100)),
                filter,
                no_pk: p.tables_without_primary_key,
                charsets: facts.charsets.clone(),
                crc32: facts.crc32,
            },
        )
        .await?;
        self.health
            .set("producer", Status::Ok, format!("streaming from {position}"));
        let mut events = Vec::with_capacity(256);
        let mut out = Vec::with_capacity(4);
        let mut framing = Framing::new(within);
        let mut last_write = Instant::now();
        let mut caught_up_at: Option<i64> = None;
        let mut lost = lock.lost.clone();
        let mut shutdown = self.shutdown.clone();
        let mut tick = tokio::time::interval(p.heartbeat_interval.min(Duration::from_millis(500)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if let Some(progress) = resumed {
            snap.begin(progress, sink, true).await?;
        }
        loop {
            events.clear();
            // Stop at a transaction boundary (resuming inside one would also be exact).
            if *shutdown.borrow() && !framing.in_transaction() {
                return Ok(());
            }
            if !restart_for.is_empty() && !framing.in_transaction() && !framing.resume_pending() {
                sink.flush().await?;
                return Err(ProducerError::Restart(format!(
                    "the transaction the topic ended inside is written, and {} are newly captured",
                    restart_for.join(", ")
                )));
            }
            // A chunk to read or to write now: the snapshot goes on whenever the reader has no
            // event ready, not only after the next one.
            let snapshot_ready = snap.ready(&reader, &framing);
            tokio::select! {
                biased;
                _ = lost.changed() => return lock.check().map_err(ProducerError::from),
                _ = shutdown.changed() => continue,
                _ = tick.tick() => {
                    sink.check()?;
                    let lag = match caught_up_at {
                        Some(_) if !framing.in_transaction() => 0.0,
                        _ => ((now_ms() - reader.last_event_ts_ms) as f64 / 1000.0).max(0.0),
                    };
                    gauge!(m::SECONDS_BEHIND_SOURCE.name).set(lag);
                    if heartbeat_due(framing.in_transaction(), framing.resume_pending(), last_write.elapsed(), p.heartbeat_interval) {
                        let ts = caught_up_at.unwrap_or(reader.last_event_ts_ms);
                        sink.send(&StreamRecord::Heartbeat(Heartbeat {
                            server_id: facts.server_id,
                            position: reader.position().clone(),
                            ts_ms: ts,
                        }))
                        .await?;
                        last_write = Instant::now();
                    }
                    snap.poll(sink).await?;
                    if snap.drive(&reader, &framing, sink).await? {
                        last_write = Instant::now();
                    }
                    continue;
                }
                r = reader.next(&mut events) => r?,
                _ = std::future::ready(()), if snapshot_ready => {}
            }
            for ev in events.drain(..) {
                if matches!(ev, SourceEvent::Ddl { .. }) {
                    snap.on_schema_change();
                }
                match framing.on_event(ev, &mut out)? {
                    Seen::CaughtUp => caught_up_at = Some(now_ms()),
                    Seen::Progress => caught_up_at = None,
                    Seen::Commit {
                        position,
                        completed,
                    } => {
                        caught_up_at = None;
                        if completed {
                            counter!(m::TRANSACTIONS_TOTAL.name).increment(1);
                        }
                        for g in position.iter() {
                            gauge!(m::LAST_GTID_SEQ.name, "domain" => g.domain.to_string())
                                .set(g.seq as f64);
                        }
                    }
                }
                for rec in out.drain(..) {
                    sink.send(&rec).await?;
                    last_write = Instant::now();
                }
            }
            if snap.drive(&reader, &framing, sink).await? {
                last_write = Instant::now();
            }
        }
    }
}

/// The request row is the operator's view; the snapshot's progress is in the topic. A request
/// row that cannot be written (the source turned read-only, a privilege is missing) is logged,
/// and never stops streaming; a transient error restarts the session as any other does.
fn noted(r: Result<(), ProducerError>, what: &str) -> Result<(), ProducerError> {
    match r {
        Err(e) if !e.is_transient() => {
            tracing::warn!(error = %e, "cannot {what} in continuum.snapshot_request; the snapshot itself is unaffected");
            Ok(())
        }
        other => other,
    }
}

/// Where streaming starts: the position, the transaction the topic ends inside of (its GTID and
/// how many of its events the topic holds), and the incremental snapshot it was writing.
struct StreamStart {
    position: GtidPosition,
    within: Option<(Gtid, u64)>,
    snapshot: Option<Progress>,
    /// Tables newly captured but left out until the transaction the topic ends inside is
    /// written; the session then restarts to take them (`Producer::newly_captured`).
    restart_for: Vec<String>,
}

/// The incremental snapshot of the streaming session, and the requests for one.
struct Snapshots {
    requests: Requests,
    filter: TableFilter,
    settings: IncrementalSettings,
    running: Option<Incremental>,
    /// When the request's `rows_done` was last written.
    rows_noted: Instant,
    /// The source is a replica (`@@read_only`) this session.
    read_only: bool,
}

impl Snapshots {
    fn new(p: &Producer, filter: &TableFilter, facts: &SourceFacts) -> Snapshots {
        let c = &p.cfg.producer;
        Snapshots {
            requests: Requests::new(p.opts.clone(), p.target.clone(), p.topic.clone()),
            filter: filter.clone(),
            settings: IncrementalSettings {
                opts: p.opts.clone(),
                target: p.target.clone(),
                no_pk: c.tables_without_primary_key,
                chunk_rows: c.snapshot_chunk_rows,
                chunk_bytes: c.snapshot_chunk_bytes,
                server_id: facts.server_id,
            },
            running: None,
            rows_noted: Instant::now(),
            read_only: facts.read_only,
        }
    }

    /// Starts (or, `resumed`, goes on with) the snapshot `progress` describes.
    async fn begin(
        &mut self,
        progress: Progress,
        sink: &mut Sink,
        resumed: bool,
    ) -> Result<(), ProducerError> {
        let mut conn = Conn::new(self.settings.opts.clone())
            .await
            .db(&self.settings.target)?;
        let estimate = progress.rows
            + incremental::estimate_rows(&mut conn, &self.settings.target, &progress.tables)
                .await?;
        drop(conn);
        noted(
            self.requests.started(progress.request, &progress.id).await,
            "note the snapshot's start",
        )?;
        if resumed {
            tracing::info!(snapshot = %progress.id, request = progress.request, tables = %progress.tables.join(","), rows = progress.rows, "incremental snapshot resumes at its next chunk");
        } else {
            tracing::info!(snapshot = %progress.id, request = progress.request, tables = %progress.tables.join(","), estimated_rows = estimate, "incremental snapshot starts");
        }
        sink.set_progress(Some(progress.header()));
        self.running = Some(Incremental::new(self.settings.clone(), progress, estimate));
        Ok(())
    }

    /// With no snapshot running, takes the oldest request (once a second at most; none on a
    /// read-only source); while one runs, notes its rows in the request every few seconds.
    async fn poll(&mut self, sink: &mut Sink) -> Result<(), ProducerError> {
        if let Some(s) = &self.running {
            if self.rows_noted.elapsed() >= Duration::from_secs(2) {
                let p = s.progress();
                noted(
                    self.requests.rows(p.request, p.rows).await,
                    "note the rows written",
                )?;
                self.rows_noted = Instant::now();
            }
            return Ok(());
        }
        if self.read_only {
            // A replica's rows came from the other site; requests wait for a promotion.
            return Ok(());
        }
        let Some(req) = self.requests.poll(Duration::from_secs(1)).await? else {
            return Ok(());
        };
        let mut conn = Conn::new(self.settings.opts.clone())
            .await
            .db(&self.settings.target)?;
        let refused = request::check_tables(
            &mut conn,
            &self.settings.target,
            Some(&self.filter),
            &req.tables,
        )
        .await?;
        drop(conn);
        if !refused.is_empty() {
            let why = refused.join("; ");
            tracing::error!(request = req.id, tables = %req.tables.join(","), reason = %why, "snapshot request refused");
            return noted(
                self.requests.finished(req.id, 0, Some(&why)).await,
                "note the refusal",
            );
        }
        self.begin(Progress::new(req.id, req.tables, req.ranges), sink, false)
            .await
    }

    /// Whether [`Snapshots::drive`] has work now: a chunk to read, or one the stream stands at
    /// (or has passed).
    fn ready(&self, reader: &BinlogReader, framing: &Framing) -> bool {
        let Some(s) = &self.running else {
            return false;
        };
        if framing.in_transaction() || framing.resume_pending() {
            return false;
        }
        !s.waiting()
            || reader
                .boundary()
                .is_some_and(|b| s.place(b) != Some(Place::Before))
    }

    fn on_schema_change(&mut self) {
        if let Some(s) = &mut self.running {
            s.on_schema_change();
        }
    }

    /// Reads chunks and writes each where the stream stands at its position, for up to 50 ms
    /// (the stream goes on in between). Returns whether anything was written.
    async fn drive(
        &mut self,
        reader: &BinlogReader,
        framing: &Framing,
        sink: &mut Sink,
    ) -> Result<bool, ProducerError> {
        let Some(s) = self.running.as_mut() else {
            return Ok(false);
        };
        let until = Instant::now() + Duration::from_millis(50);
        let mut wrote = false;
        loop {
            // Only between transactions, and never before a transaction the topic holds part of.
            if framing.in_transaction() || framing.resume_pending() {
                return Ok(wrote);
            }
            if !s.waiting() {
                match s.read_chunk().await {
                    Ok(()) => {}
                    // Planned again from the new definition at the next chunk.
                    Err(ProducerError::DefinitionChanged { .. }) => {
                        s.on_schema_change();
                        return Ok(wrote);
                    }
                    Err(e) if e.is_transient() => return Err(e),
                    Err(e) => {
                        let p = s.progress().clone();
                        tracing::error!(snapshot = %p.id, request = p.request, error = %e, "incremental snapshot failed; streaming goes on");
                        self.running = None;
                        sink.set_progress(None);
                        noted(
                            self.requests
                                .finished(p.request, p.rows, Some(&e.to_string()))
                                .await,
                            "note the failure",
                        )?;
                        return Ok(wrote);
                    }
                }
            }
            let Some(b) = reader.boundary() else {
                return Ok(wrote);
            };
            match s.place(b) {
                Some(Place::At) => {
                    let w = s
                        .write_chunk(reader.position(), now_ms())
                        .expect("a chunk waits");
                    let after = (!w.after.done()).then(|| w.after.header());
                    sink.set_progress(Some(w.before.header()));
                    let n = w.records.len();
                    for (i, rec) in w.records.iter().enumerate() {
                        if i + 1 == n {
                            sink.set_progress(after.clone());
                        }
                        sink.send(rec).await?;
                    }
                    sink.set_progress(after);
                    wrote |= n > 0;
                    if w.after.done() {
                        // Every row is in the topic before the request says so.
                        sink.flush().await?;
                        sink.check()?;
                        tracing::info!(snapshot = %w.after.id, request = w.after.request, rows = w.after.rows, "incremental snapshot done");
                        self.running = None;
                        noted(
                            self.requests
                                .finished(w.after.request, w.after.rows, None)
                                .await,
                            "note the snapshot done",
                        )?;
                        return Ok(wrote);
                    }
                }
                Some(Place::Past) => s.drop_waiting(),
                Some(Place::Before) | None => return Ok(wrote),
            }
            if Instant::now() >= until {
                return Ok(wrote);
            }
        }
    }
}

/// Whether a heartbeat is written now: nothing was written for `interval`, no transaction is
/// open, and no resume inside a transaction is pending. A heartbeat carries the position before
/// that transaction; written after the topic's `txn:G:i:more`, it would make the next run
/// start G over from index 0 (duplicates, which apply refuses).
fn heartbeat_due(
    tx_open: bool,
    resume_within_pending: bool,
    since_last_write: Duration,
    interval: Duration,
) -> bool {
    !tx_open && !resume_within_pending && since_last_write >= interval
}

/// The registry client's settings of a cluster of this site.
pub fn registry_settings(
    c: &continuum_common::config::ClusterConfig,
    site: &str,
) -> Result<RegistrySettings, ProducerError> {
    Ok(c.registry.settings(&format!("sites.{site}.registry"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_wait_for_a_pending_resume_inside_a_transaction() {
        let second = Duration::from_secs(1);
        let idle = Duration::from_secs(5);
        assert!(
            heartbeat_due(false, false, idle, second),
            "idle between transactions"
        );
        assert!(
            !heartbeat_due(false, false, Duration::from_millis(10), second),
            "just wrote"
        );
        assert!(
            !heartbeat_due(true, false, idle, second),
            "inside a transaction"
        );
        assert!(
            !heartbeat_due(false, true, idle, second),
            "resuming inside a transaction the topic holds part of"
        );
    }
}
