//! Incremental snapshots against the real local stack. `continuum-producer snapshot --table`
//! queues a request in `continuum.snapshot_request` on the source; the running producer reads
//! the table in chunks, each in a short consistent snapshot at exact binlog coordinates, and
//! writes each chunk into the topic when its binlog reader reaches those coordinates, while it
//! goes on streaming.
//!
//! - Under a concurrent write load, the topic folded in order equals the source table, and
//!   every chunk sits at the transaction boundary its position names.
//! - kill -9 during the snapshot resumes it at the next chunk (from the `continuum.snapshot`
//!   header of the topic's last record), never from the table's first key.
//! - The verb refuses at once a table that does not exist, is not captured or has no primary
//!   key, and queues nothing for it.
//!
//! The tables' rows are inserted with `sql_log_bin = 0` after the producer's initial snapshot
//! (of the empty table), so that only the incremental snapshot can bring them into the topic.

mod support;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use continuum_common::kafka::FetchedRecord;
use continuum_schemas::{
    ChangeEvent, GtidPosition, Op, StreamPosition, StreamRecord, TxPlace, Value, HEADER_POS,
};
use mysql_async::prelude::Queryable;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use support::*;

/// The captured table of the first two tests.
const TABLE_T: &str = "CREATE TABLE {db}.t (id BIGINT PRIMARY KEY, v VARCHAR(40), n INT)";
/// The Kafka header every record written while an incremental snapshot is in progress carries.
const HEADER_SNAPSHOT: &str = "continuum.snapshot";
/// How long a snapshot request may take, from the verb to `done_at`.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the topic may take to hold everything the source's binlog holds.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the verb may take to queue or refuse a request.
const VERB_TIMEOUT: Duration = Duration::from_secs(30);

/// Held by each test while it runs: the tests run one at a time. Each writes hundreds of
/// thousands of rows under a write load (and one kills its producer), and their producers share
/// the one table of requests on SF: one at a time, no producer can meet another test's request.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Said when a request fails or ends early, in case another producer took it.
const OTHER_PRODUCERS: &str = " (if the error says the table is not captured, another producer on SF took the request: a producer must take only its own topic's requests)";

/// A row of `t` without its key: (`v`, `n`).
type Row = (Option<String>, Option<i64>);

// ---------------------------------------------------------------------------------------------
// The verb

/// `continuum-producer --config <config> snapshot <args>`, run as an operator runs it (the
/// `continuum` login's password from the environment); its output goes to files of the test's
/// directory.
struct Verb {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    what: String,
}

/// How a verb ended.
#[derive(Debug)]
struct VerbExit {
    /// `None`: killed by a signal.
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl VerbExit {
    /// Both outputs, for messages and for looking for words in either.
    fn output(&self) -> String {
        format!(
            "exit code {:?}\n--- stdout:\n{}--- stderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Verb {
    fn start(p: &TestPipeline, args: &[&str]) -> Verb {
        let name = unique_name("verb");
        let stdout = p.dir.join(format!("{name}.out"));
        let stderr = p.dir.join(format!("{name}.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_continuum-producer"))
            .arg("--config")
            .arg(&p.config)
            .arg("snapshot")
            .args(args)
            .env("CONTINUUM_DB_PASSWORD", stack().db_password)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn continuum-producer snapshot");
        Verb {
            child,
            stdout,
            stderr,
            what: format!("continuum-producer snapshot {}", args.join(" ")),
        }
    }

    fn output(&self, code: Option<i32>) -> VerbExit {
        VerbExit {
            code,
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        }
    }

    /// How it ended, if it has.
    fn try_exit(&mut self) -> Option<VerbExit> {
        let status = self.child.try_wait().unwrap()?;
        Some(self.output(status.code()))
    }

    /// Waits (`timeout` at most) for it to end; panics with its output, after killing it, if
    /// it runs longer.
    async fn exit(&mut self, timeout: Duration) -> VerbExit {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.try_exit() {
                return exit;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "`{}` did not end within {timeout:?}:\n{}",
                    self.what,
                    self.output(None).output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Verb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The id in the verb's line `snapshot request <id> <word>...` (`queued`, `done`), if any.
fn request_id_in(output: &str, word: &str) -> Option<u64> {
    output.lines().find_map(|line| {
        let rest = &line[line.find("snapshot request ")? + "snapshot request ".len()..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        rest[digits.len()..]
            .starts_with(&format!(" {word}"))
            .then(|| digits.parse().ok())
            .flatten()
    })
}

/// The row count of the verb's line `snapshot request <id> done: <rows> rows`, if any.
fn done_rows_in(output: &str) -> Option<u64> {
    output.lines().find_map(|line| {
        let rest = &line[line.find(" done: ")? + " done: ".len()..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        rest[digits.len()..]
            .starts_with(" rows")
            .then(|| digits.parse().ok())
            .flatten()
    })
}

// ---------------------------------------------------------------------------------------------
// The request table

/// A row of `continuum.snapshot_request`.
#[derive(Debug)]
struct Request {
    tables: String,
    snapshot_id: Option<String>,
    started: bool,
    rows_done: u64,
    done: bool,
    error: Option<String>,
}

/// Request `id`'s row; panics if there is none.
async fn request(c: &mut mysql_async::Conn, id: u64) -> Request {
    type R = (String, Option<String>, i64, u64, i64, Option<String>);
    let row: Option<R> = c
        .exec_first(
            "SELECT tables, snapshot_id, started_at IS NOT NULL, rows_done, \
             done_at IS NOT NULL, error FROM continuum.snapshot_request WHERE id = ?",
            (id,),
        )
        .await
        .unwrap_or_else(|e| panic!("reading snapshot request {id}: {e}"));
    let (tables, snapshot_id, started, rows_done, done, error) =
        row.unwrap_or_else(|| panic!("no row {id} in continuum.snapshot_request"));
    Request {
        tables,
        snapshot_id,
        started: started != 0,
        rows_done,
        done: done != 0,
        error,
    }
}

/// The ids of the requests whose `tables` name `text` (e.g. a test's database); none when the
/// table `continuum.snapshot_request` does not exist (yet).
async fn requests_naming(c: &mut mysql_async::Conn, text: &str) -> Vec<u64> {
    let exists: i64 = c
        .query_first(
            "SELECT COUNT(*) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = 'continuum' AND TABLE_NAME = 'snapshot_request'",
        )
        .await
        .unwrap()
        .unwrap();
    if exists == 0 {
        return Vec::new();
    }
    c.exec(
        "SELECT id FROM continuum.snapshot_request WHERE LOCATE(?, tables) > 0 ORDER BY id",
        (text,),
    )
    .await
    .unwrap()
}

/// The last `n` lines of a log, for messages.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Panics, with the end of its log, if `producer` has exited.
fn assert_running(producer: &mut ProducerProc, while_what: &str) {
    if let Some(status) = producer.child.try_wait().unwrap() {
        panic!(
            "the producer exited ({status}) {while_what}; its log ends:\n{}",
            tail(&producer.log(), 80)
        );
    }
}

/// Waits ([`SNAPSHOT_TIMEOUT`] at most) until request `id` is done (`done_at` set), checking
/// meanwhile that `producer` runs. With `verb` (a `--wait` verb for that request), also checks
/// that the verb does not end before `done_at` is set, and returns how it ended.
async fn wait_done(
    c: &mut mysql_async::Conn,
    id: u64,
    producer: &mut ProducerProc,
    mut verb: Option<&mut Verb>,
) -> (Request, Option<VerbExit>) {
    let deadline = Instant::now() + SNAPSHOT_TIMEOUT;
    loop {
        if let Some(v) = verb.as_deref_mut() {
            if let Some(exit) = v.try_exit() {
                let r = request(c, id).await;
                assert!(
                    r.done,
                    "`{}` ended before the producer finished request {id} ({r:?}):\n{}",
                    v.what,
                    exit.output()
                );
                return (r, Some(exit));
            }
        }
        let r = request(c, id).await;
        if r.done {
            let exit = match verb {
                Some(v) => Some(v.exit(Duration::from_secs(60)).await),
                None => None,
            };
            return (r, exit);
        }
        assert_running(producer, &format!("before request {id} was done ({r:?})"));
        assert!(
            Instant::now() < deadline,
            "request {id} not done within {SNAPSHOT_TIMEOUT:?}: {r:?}; the producer's log ends:\n{}",
            tail(&producer.log(), 80)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Setup and load

/// Waits until `p`'s topic holds everything the source's binlog holds now.
async fn wait_topic_caught_up(p: &TestPipeline, c: &mut mysql_async::Conn) {
    let target = gtid_binlog_pos(c).await;
    wait_caught_up(&stack().brokers, &p.topic, &target, CATCH_UP_TIMEOUT).await;
}

/// A pipeline for a database holding `t` ([`TABLE_T`]), its producer running, and `rows` rows
/// in `t` (ids 1..=rows) that the topic never saw: inserted with `sql_log_bin = 0` once the
/// producer's initial snapshot (of the empty table) is in the topic. Returns an admin
/// connection to SF as well.
async fn table_the_topic_never_saw(
    name: &str,
    rows: u64,
) -> (TestPipeline, mysql_async::Conn, ProducerProc) {
    let (p, mut c) = TestPipeline::with_database(name, &[TABLE_T]).await;
    let producer = p.spawn(&[]);
    // The initial snapshot ends with a record at a binlog position (`at:`): caught up.
    wait_topic_caught_up(&p, &mut c).await;
    let insert = format!(
        "INSERT INTO {{db}}.t SELECT seq, CONCAT('hidden-', seq), seq % 1000 FROM {{db}}.seq_1_to_{rows}"
    );
    p.sql(
        &mut c,
        &[
            "SET SESSION sql_log_bin = 0",
            &insert,
            "SET SESSION sql_log_bin = 1",
        ],
    )
    .await;
    let n: u64 = c
        .query_first(format!("SELECT COUNT(*) FROM {}.t", p.db))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, rows, "t holds the hidden rows");
    wait_topic_caught_up(&p, &mut c).await;
    let in_topic = read_topic(&stack().brokers, &p.topic)
        .iter()
        .filter(|r| r.header_str("continuum.kind") == Some("row"))
        .count();
    assert_eq!(
        in_topic, 0,
        "the topic holds no row of t before the incremental snapshot (the rows were not binlogged)"
    );
    (p, c, producer)
}

/// Small random transactions on `db.t` until stopped, binlogged as any client's: updates of
/// `v` (sometimes to NULL) and `n` of any id below the next new one, deletes of any such id,
/// and inserts of new ids from `first_new` up. As many deletes as inserts, so the table's size
/// stays about the same.
struct Workload {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<u64>,
}

impl Workload {
    fn start(db: &str, first_new: i64) -> Workload {
        let seed: u64 = rand::random();
        eprintln!("workload on {db}.t, seed {seed}");
        let stop = Arc::new(AtomicBool::new(false));
        let db = db.to_owned();
        let stopped = stop.clone();
        let handle = tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut c = admin().await;
            let mut next = first_new;
            let mut transactions = 0u64;
            while !stopped.load(Ordering::Relaxed) {
                let mut tx = c.start_transaction(Default::default()).await.unwrap();
                for _ in 0..rng.random_range(1..=4) {
                    let id = rng.random_range(1..next);
                    let n: i32 = rng.random_range(-100_000..100_000);
                    let sql = match rng.random_range(0..10) {
                        0 => format!("UPDATE {db}.t SET v = NULL, n = {n} WHERE id = {id}"),
                        1..=5 => format!(
                            "UPDATE {db}.t SET v = 'w{transactions}-{id}', n = {n} WHERE id = {id}"
                        ),
                        6 | 7 => format!("DELETE FROM {db}.t WHERE id = {id}"),
                        _ => {
                            next += 1;
                            format!("INSERT INTO {db}.t VALUES ({}, 'new-{n}', {n})", next - 1)
                        }
                    };
                    tx.query_drop(&sql)
                        .await
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                }
                tx.commit().await.unwrap();
                transactions += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            transactions
        });
        Workload { stop, handle }
    }

    /// Stops it; returns how many transactions it committed.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.expect("the workload task")
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the topic

/// Every record of the topic, raw (offset, headers) and decoded.
async fn decode_all(topic: &str) -> Vec<(FetchedRecord, StreamRecord)> {
    decode_records(topic).await
}

/// A topic read as it grows: each record's offset and stream position (from its header).
struct Tail {
    topic: String,
    consumer: BaseConsumer,
    records: Vec<(i64, Option<StreamPosition>)>,
}

impl Tail {
    fn new(topic: &str) -> Tail {
        let consumer = consumer(&stack().brokers);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        Tail {
            topic: topic.to_owned(),
            consumer,
            records: Vec::new(),
        }
    }

    /// Takes in what the consumer has fetched so far.
    fn poll(&mut self) {
        while let Some(m) = self.consumer.poll(Duration::ZERO) {
            let r = FetchedRecord::from_message(
                &m.unwrap_or_else(|e| panic!("reading {}: {e}", self.topic)),
            );
            let p = r.header_str(HEADER_POS).and_then(|s| s.parse().ok());
            self.records.push((r.offset, p));
        }
    }

    /// How many chunk rows of snapshot `id` are at offsets from `from` on.
    fn chunk_rows(&self, id: &str, from: i64) -> usize {
        self.records
            .iter()
            .filter(|(o, p)| {
                *o >= from && matches!(p, Some(StreamPosition::Chunk { id: i, .. }) if i == id)
            })
            .count()
    }

    /// The topic's end offset (the next record's offset).
    fn end(&self) -> i64 {
        self.consumer
            .fetch_watermarks(&self.topic, 0, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("watermarks of {}: {e}", self.topic))
            .1
    }
}

/// Whether `ev` is a row change of `db.t`.
fn of_t(ev: &ChangeEvent, db: &str) -> bool {
    ev.table.db == db && ev.table.table == "t"
}

/// The key of a row change of `t`.
fn id_of(ev: &ChangeEvent) -> i64 {
    match ev.key()[..] {
        [Value::Int(id)] => *id,
        ref other => panic!("t's key is one BIGINT, not {other:?}"),
    }
}

/// A row image of `t`: (`id`, (`v`, `n`)).
fn row_of(image: &[Value]) -> (i64, Row) {
    let id = match &image[0] {
        Value::Int(id) => *id,
        other => panic!("t.id holds {other:?}"),
    };
    let v = match &image[1] {
        Value::Null => None,
        Value::Text(s) => Some(s.clone()),
        other => panic!("t.v holds {other:?}"),
    };
    let n = match &image[2] {
        Value::Null => None,
        Value::Int(n) => Some(*n),
        other => panic!("t.n holds {other:?}"),
    };
    (id, (v, n))
}

/// `db.t` as the topic gives it, folded in order: an insert, update or read sets the row to
/// its after image, a delete removes it.
fn fold(recs: &[(FetchedRecord, StreamRecord)], db: &str) -> BTreeMap<i64, Row> {
    fold_checked(recs, db).0
}

/// [`fold`], and every place where the topic contradicts itself on the way (the first 20, and
/// how many in all). If every transaction before a chunk in the topic committed before the
/// chunk was read, and every one after it committed after, then at each record the row as
/// folded so far is the source's row at that point of its history, so:
///
/// - an update's or a delete's before image is the row as folded so far, when there is one
///   (a row the topic has not given yet, one of those inserted with `sql_log_bin = 0`, has none);
/// - an insert's key is not there yet;
/// - a chunk row is the row as folded so far, when there is one;
/// - a chunk holds every key the fold holds between its first and its last key.
///
/// A chunk placed before transactions it already reflects, or after ones it does not, breaks
/// one of these for any key such a transaction changed, whatever positions its records carry.
fn fold_checked(
    recs: &[(FetchedRecord, StreamRecord)],
    db: &str,
) -> (BTreeMap<i64, Row>, Vec<String>, usize) {
    let mut table: BTreeMap<i64, Row> = BTreeMap::new();
    let mut found = Vec::new();
    let mut count = 0usize;
    let mut note = |what: String| {
        count += 1;
        if found.len() < 20 {
            found.push(what);
        }
    };
    // The chunk being folded: (offset of its first row, its keys).
    let mut chunk: Option<(i64, Vec<i64>)> = None;
    let close = |chunk: Option<(i64, Vec<i64>)>,
                 table: &BTreeMap<i64, Row>,
                 note: &mut dyn FnMut(String)| {
        let Some((at, keys)) = chunk else { return };
        let (lo, hi) = (keys[0], *keys.last().unwrap());
        let mut held = keys.iter().peekable();
        for k in table.range(lo..=hi).map(|(k, _)| *k) {
            while held.next_if(|h| **h < k).is_some() {}
            if held.peek() != Some(&&k) {
                note(format!(
                    "the chunk at offset {at} (keys {lo}..={hi}) lacks key {k}, which the stream before it holds"
                ));
            }
        }
    };
    for (r, rec) in recs {
        let at = r.offset;
        let chunk_place = match pos(r) {
            StreamPosition::Chunk { index, last, .. } => Some((index, last)),
            _ => None,
        };
        if chunk_place.is_none_or(|(index, _)| index == 0) {
            close(chunk.take(), &table, &mut note);
        }
        let StreamRecord::Change(ev) = rec else {
            continue;
        };
        if !of_t(ev, db) {
            continue;
        }
        match ev.op {
            Op::Insert => {
                let (id, row) = row_of(ev.after.as_ref().expect("an after image"));
                if let Some(old) = table.insert(id, row) {
                    note(format!(
                        "offset {at}: an insert of key {id}, which the topic holds already ({old:?})"
                    ));
                }
            }
            Op::Update | Op::Delete => {
                let (id, before) = row_of(ev.before.as_ref().expect("a before image"));
                match table.get(&id) {
                    Some(now) if *now != before => note(format!(
                        "offset {at}: an {:?} of key {id} from {before:?}, where the topic holds {now:?}",
                        ev.op
                    )),
                    _ => {}
                }
                if ev.op == Op::Update {
                    let (id, after) = row_of(ev.after.as_ref().expect("an after image"));
                    table.insert(id, after);
                } else {
                    table.remove(&id);
                }
            }
            Op::Read => {
                let (id, row) = row_of(ev.after.as_ref().expect("an after image"));
                if chunk_place.is_some() {
                    if let Some(now) = table.get(&id) {
                        if *now != row {
                            note(format!(
                                "offset {at}: a chunk row of key {id} is {row:?}, where the transactions before it made it {now:?}"
                            ));
                        }
                    }
                    chunk.get_or_insert_with(|| (at, Vec::new())).1.push(id);
                }
                table.insert(id, row);
            }
        }
        if let Some((_, true)) = chunk_place {
            close(chunk.take(), &table, &mut note);
        }
    }
    close(chunk.take(), &table, &mut note);
    (table, found, count)
}

/// Asserts that the topic never contradicts itself ([`fold_checked`]).
fn assert_consistent(recs: &[(FetchedRecord, StreamRecord)], db: &str) {
    let (_, found, count) = fold_checked(recs, db);
    assert!(
        count == 0,
        "the topic contradicts itself {count} times: chunks are not where their rows were read; first ones:\n{}",
        found.join("\n")
    );
}

/// `db.t` on SF.
async fn source_table(c: &mut mysql_async::Conn, db: &str) -> BTreeMap<i64, Row> {
    let rows: Vec<(i64, Option<String>, Option<i64>)> = c
        .query(format!("SELECT id, v, n FROM {db}.t ORDER BY id"))
        .await
        .unwrap();
    rows.into_iter().map(|(id, v, n)| (id, (v, n))).collect()
}

/// Asserts that the table folded from the topic is SF's, row for row; the message lists the
/// first differences.
fn assert_same_table(topic: &BTreeMap<i64, Row>, source: &BTreeMap<i64, Row>) {
    let mut diffs = Vec::new();
    let mut count = 0;
    for (id, want) in source {
        match topic.get(id) {
            Some(got) if got == want => {}
            got => {
                count += 1;
                if diffs.len() < 20 {
                    diffs.push(format!("id {id}: source {want:?}, topic {got:?}"));
                }
            }
        }
    }
    for (id, got) in topic {
        if !source.contains_key(id) {
            count += 1;
            if diffs.len() < 20 {
                diffs.push(format!("id {id}: not in the source, in the topic {got:?}"));
            }
        }
    }
    assert!(
        count == 0,
        "the topic folded differs from the source table in {count} rows (source {} rows, topic {}); first ones:\n{}",
        source.len(),
        topic.len(),
        diffs.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Chunks

/// One chunk of an incremental snapshot as the topic holds it.
#[derive(Debug)]
struct Chunk {
    /// The offsets of its first and last rows in the topic.
    first: i64,
    last: i64,
    /// The binlog coordinates it was read at.
    position: GtidPosition,
    /// Its rows' keys, in topic order.
    keys: Vec<i64>,
    /// The table definitions before its rows (a table's first chunk has two).
    definitions: usize,
    /// Whether its end is in the topic; a chunk cut short by a kill has none.
    complete: bool,
    /// The key range its end names: after `.0`, up to `.1` (`None`: open).
    range: Option<(Option<i64>, Option<i64>)>,
}

/// A chunk end's bound of `t`'s `BIGINT` key.
fn bound(k: &Option<Vec<continuum_schemas::KeyPart>>) -> Option<i64> {
    k.as_ref().map(|parts| match parts.as_slice() {
        [continuum_schemas::KeyPart::Int(i)] => *i,
        other => panic!("a bound of t's key is one integer, not {other:?}"),
    })
}

/// The key ranges of the complete chunks tile the table in order: the first from no lower
/// bound, each from the upper bound of the complete chunk before, up to its own last key, the
/// last one to no upper bound; each chunk's keys lie in its range.
fn assert_ranges(chunks: &[Chunk]) {
    let complete: Vec<&Chunk> = chunks.iter().filter(|c| c.complete).collect();
    let mut from = None;
    for (i, c) in complete.iter().enumerate() {
        let (f, t) = c.range.expect("a complete chunk has its end");
        assert_eq!(
            c.definitions,
            if f.is_none() { 2 } else { 0 },
            "the chunk at offset {} (range after {f:?}) carries {} definitions: a table's first chunk carries its database's and its own, no other chunk any",
            c.first,
            c.definitions
        );
        assert_eq!(f, from, "the chunk at offset {} begins its range after {f:?}, where the chunk before ended at {from:?}", c.first);
        let final_chunk = i + 1 == complete.len();
        if final_chunk {
            assert_eq!(t, None, "the last chunk (offset {}) is open above", c.first);
        } else {
            assert_eq!(
                t,
                c.keys.last().copied(),
                "the chunk at offset {} ends its range at its last key",
                c.first
            );
        }
        assert!(
            c.keys
                .iter()
                .all(|&k| f.is_none_or(|f| k > f) && t.is_none_or(|t| k <= t)),
            "the chunk at offset {} has keys {:?} outside its range ({f:?}, {t:?}]",
            c.first,
            c.keys
        );
        from = t;
    }
}

/// The chunks of snapshot `id` in the topic, in order, checked record by record:
///
/// - each chunk row is a read (`Op::Read`) of `db.t` with `source.snapshot_id == Some(id)`, no
///   GTID, and `tx` equal to its position's index and `more`; no other incremental snapshot's
///   chunk is in the topic, and every read with a `tx` is a chunk row;
/// - a chunk's rows are consecutive records, indexes 0, 1, 2, ..., all at one position, keys
///   rising; it ends with its end (a `ChunkEnd` at the next index, `last`, naming the row
///   count, the key column and the range), or, cut short, right before one of `cuts` (the
///   offsets at which a restarted producer began to write). A chunk that read no row is an end
///   alone.
fn chunks_of(
    recs: &[(FetchedRecord, StreamRecord)],
    db: &str,
    id: &str,
    cuts: &[i64],
) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::new();
    let mut open: Option<Chunk> = None;
    let cut_between = |a: i64, b: i64| cuts.iter().any(|&w| a < w && w <= b);
    for (r, rec) in recs {
        let at = r.offset;
        let position = pos(r);
        if let StreamRecord::Change(ev) = rec {
            if ev.op == Op::Read && ev.tx.is_some() {
                assert!(
                    matches!(position, StreamPosition::Chunk { .. }),
                    "offset {at}: a read with a place in a chunk ({:?}) has the position {position}",
                    ev.tx
                );
            }
        }
        let StreamPosition::Chunk {
            id: chunk_id,
            index,
            last,
            position: coordinates,
        } = position.clone()
        else {
            if let Some(c) = open.take() {
                assert!(
                    cut_between(c.last, at),
                    "offset {at}: a {} record ({position}) where the chunk that began at offset {} (at {}, {} rows so far) lacks its last row, and no restart is between: a chunk's rows are consecutive records",
                    rec.kind(),
                    c.first,
                    c.position,
                    c.keys.len()
                );
                out.push(c);
            }
            continue;
        };
        assert_eq!(chunk_id, id, "offset {at}: a chunk of another snapshot");
        if let StreamRecord::ChunkEnd(end) = rec {
            assert!(last, "offset {at}: a chunk's end is its last record");
            assert_eq!(end.snapshot_id, id, "offset {at}: the end's snapshot id");
            assert_eq!(
                end.rows, index,
                "offset {at}: the end's index is its row count"
            );
            assert_eq!(end.key, ["id"], "offset {at}: the end's key columns");
            assert!(
                end.table.ends_with(&format!("{db}.t")),
                "offset {at}: an end of {}",
                end.table
            );
            let mut c = match open.take() {
                Some(c) if index > 0 && index == (c.definitions + c.keys.len()) as u64 => c,
                other => {
                    assert_eq!(
                        index, 0,
                        "offset {at}: the end of a chunk of {index} rows without its rows"
                    );
                    if let Some(c) = other {
                        assert!(cut_between(c.last, at), "offset {at}: an empty chunk's end while the chunk that began at offset {} lacks its end, and no restart is between", c.first);
                        out.push(c);
                    }
                    Chunk {
                        first: at,
                        last: at,
                        position: coordinates.clone(),
                        keys: Vec::new(),
                        definitions: 0,
                        complete: false,
                        range: None,
                    }
                }
            };
            assert_eq!(
                (c.definitions + c.keys.len()) as u64,
                index,
                "offset {at}: the end counts the chunk's records"
            );
            assert_eq!(
                c.position, coordinates,
                "offset {at}: the end has the chunk's position"
            );
            c.last = at;
            c.complete = true;
            c.range = Some((bound(&end.from), bound(&end.to)));
            out.push(c);
            continue;
        }
        if let StreamRecord::SchemaChange(sc) = rec {
            assert!(
                !last,
                "offset {at}: a chunk's definition is never its last record"
            );
            assert!(
                sc.ddl.starts_with("CREATE DATABASE IF NOT EXISTS")
                    || sc.ddl.starts_with("CREATE TABLE IF NOT EXISTS"),
                "offset {at}: a chunk's definition is a CREATE ... IF NOT EXISTS: {}",
                sc.ddl
            );
            if index == 0 {
                if let Some(c) = open.take() {
                    assert!(cut_between(c.last, at), "offset {at}: a new chunk begins while the one that began at offset {} lacks its end, and no restart is between", c.first);
                    out.push(c);
                }
                open = Some(Chunk {
                    first: at,
                    last: at,
                    position: coordinates,
                    keys: Vec::new(),
                    definitions: 1,
                    complete: false,
                    range: None,
                });
            } else {
                let c = open.as_mut().unwrap_or_else(|| {
                    panic!("offset {at}: chunk definition {index} without the chunk's record 0")
                });
                assert!(
                    c.keys.is_empty() && index == c.definitions as u64,
                    "offset {at}: a definition after the chunk's rows, or out of place"
                );
                assert_eq!(
                    coordinates, c.position,
                    "offset {at}: a definition at another position than its chunk's"
                );
                c.definitions += 1;
                c.last = at;
            }
            continue;
        }
        let StreamRecord::Change(ev) = rec else {
            panic!("offset {at}: a chunk record that is neither a row, a definition nor an end: {rec:?}");
        };
        assert!(
            !last,
            "offset {at}: a chunk's row is never its last record (its end is)"
        );
        assert!(of_t(ev, db), "offset {at}: a chunk row of {:?}", ev.table);
        assert_eq!(ev.op, Op::Read, "offset {at}: a chunk row is a read");
        assert_eq!(
            ev.source.snapshot_id.as_deref(),
            Some(id),
            "offset {at}: the chunk row's snapshot id"
        );
        assert_eq!(ev.source.gtid, None, "offset {at}: a chunk row has no GTID");
        assert_eq!(
            ev.tx,
            Some(TxPlace { index, last }),
            "offset {at}: the chunk row's place"
        );
        let key = id_of(ev);
        if index == 0 {
            if let Some(c) = open.take() {
                assert!(
                    cut_between(c.last, at),
                    "offset {at}: a new chunk begins while the one that began at offset {} lacks its last row, and no restart is between",
                    c.first
                );
                out.push(c);
            }
            open = Some(Chunk {
                first: at,
                last: at,
                position: coordinates,
                keys: vec![key],
                definitions: 0,
                complete: false,
                range: None,
            });
        } else {
            let c = open.as_mut().unwrap_or_else(|| {
                panic!("offset {at}: chunk row {index} without the chunk's record 0 before it")
            });
            assert_eq!(
                index,
                (c.definitions + c.keys.len()) as u64,
                "offset {at}: chunk record {index} where record {} was due (the chunk began at offset {})",
                c.definitions + c.keys.len(),
                c.first
            );
            assert_eq!(
                coordinates, c.position,
                "offset {at}: every row of a chunk has the chunk's position"
            );
            assert!(
                c.keys.last().is_none_or(|&k| key > k),
                "offset {at}: key {key} after {} in one chunk",
                c.keys.last().unwrap()
            );
            c.last = at;
            c.keys.push(key);
        }
    }
    if let Some(c) = open {
        panic!("the topic ends inside a chunk: {c:?}");
    }
    out
}

/// Every chunk sits at a transaction boundary of the source's history that its position
/// names: the last transaction record before it in the topic is a transaction's last record
/// and is contained in the chunk's position; the first one after a complete chunk is not.
fn assert_at_boundaries(recs: &[(FetchedRecord, StreamRecord)], chunks: &[Chunk]) {
    let txns: Vec<(i64, continuum_schemas::Gtid, bool)> = recs
        .iter()
        .filter_map(|(r, _)| match pos(r) {
            StreamPosition::Txn { gtid, last, .. } => Some((r.offset, gtid, last)),
            _ => None,
        })
        .collect();
    for c in chunks {
        let i = txns.partition_point(|(o, _, _)| *o < c.first);
        if let Some((o, gtid, last)) = i.checked_sub(1).map(|i| txns[i]) {
            assert!(
                last,
                "the chunk at offset {} follows an unfinished transaction ({gtid}, offset {o})",
                c.first
            );
            assert!(
                c.position.contains(&gtid),
                "the chunk at offset {} (read at {}) follows transaction {gtid} (offset {o}), which committed after that position",
                c.first,
                c.position
            );
        }
        if c.complete {
            let j = txns.partition_point(|(o, _, _)| *o <= c.last);
            if let Some((o, gtid, _)) = txns.get(j) {
                assert!(
                    !c.position.contains(gtid),
                    "the chunk at offset {} (read at {}) precedes transaction {gtid} (offset {o}), which committed before that position",
                    c.first,
                    c.position
                );
            }
        }
    }
}

/// The `continuum.snapshot` header of a record, parsed.
fn snapshot_header(r: &FetchedRecord) -> Option<serde_json::Value> {
    let text = r.header_str(HEADER_SNAPSHOT)?;
    Some(serde_json::from_str(text).unwrap_or_else(|e| {
        panic!(
            "offset {}: the {HEADER_SNAPSHOT} header is not JSON ({e}): {text}",
            r.offset
        )
    }))
}

/// Every record from the snapshot's first chunk row up to its last one carries the
/// `continuum.snapshot` header of snapshot `id`, whose current table (the first of `tables`)
/// is `table`. Returns the headers, by offset.
///
/// The snapshot's very last row is left out: it ends the snapshot (nothing is left to read
/// after it), so it need not say that one is in progress.
fn assert_headers(
    recs: &[(FetchedRecord, StreamRecord)],
    chunks: &[Chunk],
    id: &str,
    table: &str,
) -> BTreeMap<i64, serde_json::Value> {
    let (first, last) = (chunks[0].first, chunks.last().unwrap().last);
    let mut out = BTreeMap::new();
    for (r, _) in recs
        .iter()
        .filter(|(r, _)| (first..last).contains(&r.offset))
    {
        let h = snapshot_header(r).unwrap_or_else(|| {
            panic!(
                "offset {} ({}), written while the snapshot was in progress (chunk rows at offsets {first}..={last}), has no {HEADER_SNAPSHOT} header",
                r.offset,
                pos(r)
            )
        });
        assert_eq!(
            h["id"].as_str(),
            Some(id),
            "offset {}: the header's snapshot id: {h}",
            r.offset
        );
        assert_eq!(
            h["tables"][0].as_str(),
            Some(table),
            "offset {}: the header's current table: {h}",
            r.offset
        );
        assert!(
            h["rows"].is_u64(),
            "offset {}: the header's row count: {h}",
            r.offset
        );
        out.insert(r.offset, h);
    }
    out
}

/// Every integer anywhere in a JSON value (a key, whatever its JSON form): numbers, and
/// strings holding one in decimal, or in hexadecimal bytes of its decimal text.
fn integers(v: &serde_json::Value) -> Vec<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64().into_iter().collect(),
        serde_json::Value::String(s) => {
            let hex_text = (s.len() % 2 == 0)
                .then(|| {
                    (0..s.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                        .collect::<Option<Vec<u8>>>()
                })
                .flatten()
                .and_then(|b| String::from_utf8(b).ok());
            [Some(s.clone()), hex_text]
                .into_iter()
                .flatten()
                .filter_map(|t| t.parse().ok())
                .collect()
        }
        serde_json::Value::Array(a) => a.iter().flat_map(integers).collect(),
        serde_json::Value::Object(o) => o.values().flat_map(integers).collect(),
        _ => Vec::new(),
    }
}

/// The snapshot id of request `id` once the producer has taken it (bounded).
async fn wait_started(c: &mut mysql_async::Conn, id: u64, producer: &mut ProducerProc) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = request(c, id).await;
        if let (true, Some(s)) = (r.started, &r.snapshot_id) {
            return s.clone();
        }
        assert!(
            r.error.is_none() && !r.done,
            "request {id} ended before it started: {r:?}{OTHER_PRODUCERS}"
        );
        assert_running(producer, &format!("before it took request {id}"));
        assert!(
            Instant::now() < deadline,
            "the producer did not take request {id} within a minute (it polls about once a second): {r:?}; its log ends:\n{}",
            tail(&producer.log(), 80)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

/// 200 000 rows the topic never saw, then a write load on the same table (updates, deletes,
/// inserts, in small transactions), and an incremental snapshot requested with `--wait` while
/// it runs. Once done, the topic folded in order (insert, update, read: the after image;
/// delete: gone) equals SF's table exactly, every one of the hidden rows having come through a
/// chunk. Each chunk is at the transaction boundary its position names, the chunks go through
/// the table once in key order, and every record written meanwhile carries the
/// `continuum.snapshot` header, naming the last key done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_incremental_snapshot_under_write_load_matches_the_source() {
    let _alone = ONE_AT_A_TIME.lock().await;
    const ROWS: u64 = 200_000;
    let (p, mut c, mut producer) = table_the_topic_never_saw("p_incr", ROWS).await;
    let table = format!("{}.t", p.db);
    let workload = Workload::start(&p.db, ROWS as i64 + 1);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut verb = Verb::start(&p, &["--table", &table, "--wait", "--timeout", "10m"]);
    let id = {
        let deadline = Instant::now() + VERB_TIMEOUT;
        loop {
            if let Some(exit) = verb.try_exit() {
                assert_eq!(
                    exit.code,
                    Some(0),
                    "the verb with --wait failed:\n{}",
                    exit.output()
                );
            }
            if let Some(&id) = requests_naming(&mut c, &p.db).await.first() {
                break id;
            }
            assert!(
                Instant::now() < deadline,
                "no request for {table} within {VERB_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (req, exit) = wait_done(&mut c, id, &mut producer, Some(&mut verb)).await;
    let exit = exit.unwrap();
    let transactions = workload.stop().await;
    assert_eq!(
        exit.code,
        Some(0),
        "the verb ends well once the request is done:\n{}",
        exit.output()
    );
    assert_eq!(
        req.error,
        None,
        "the producer records no error: {req:?}{OTHER_PRODUCERS}\nits log ends:\n{}",
        tail(&producer.log(), 80)
    );
    assert!(
        req.tables.contains(&table),
        "the request names {table}: {req:?}"
    );
    let snapshot = req.snapshot_id.clone().expect("the request's snapshot id");
    assert_eq!(
        done_rows_in(&exit.stdout),
        Some(req.rows_done),
        "the verb prints `snapshot request {id} done: <rows_done> rows`:\n{}",
        exit.output()
    );
    for word in ["queued", "done"] {
        assert_eq!(
            request_id_in(&exit.stdout, word),
            Some(id),
            "the verb prints `snapshot request {id} {word}...`:\n{}",
            exit.output()
        );
    }
    wait_topic_caught_up(&p, &mut c).await;
    assert_running(&mut producer, "while the topic caught up");
    producer.kill9();

    let recs = decode_all(&p.topic).await;
    let folded = fold(&recs, &p.db);
    let source = source_table(&mut c, &p.db).await;
    assert_same_table(&folded, &source);
    assert_consistent(&recs, &p.db);

    let mut chunks = chunks_of(&recs, &p.db, &snapshot, &[]);
    assert_ranges(&chunks);
    // From here on, the chunks that read rows (an empty end is only ever the table's last).
    chunks.retain(|c| !c.keys.is_empty());
    assert!(
        !chunks.is_empty(),
        "chunks of snapshot {snapshot} in the topic"
    );
    let rows: usize = chunks.iter().map(|c| c.keys.len()).sum();
    assert!(
        chunks.iter().all(|c| c.complete),
        "no chunk is cut short without a kill"
    );
    assert!(
        rows as u64 >= ROWS,
        "{rows} chunk rows for a table of {ROWS} rows the topic had not seen"
    );
    assert_eq!(
        rows as u64, req.rows_done,
        "rows_done counts the chunk rows in the topic"
    );
    for w in chunks.windows(2) {
        assert!(
            w[1].keys[0] > *w[0].keys.last().unwrap(),
            "the chunk at offset {} (keys {}..) does not go on after the one at offset {} (keys ..{}): the chunks read the table once, in key order",
            w[1].first,
            w[1].keys[0],
            w[0].first,
            w[0].keys.last().unwrap()
        );
    }
    assert_at_boundaries(&recs, &chunks);
    let (first, last) = (chunks[0].first, chunks.last().unwrap().last);
    let interleaved = recs
        .iter()
        .filter(|(r, _)| {
            (first..=last).contains(&r.offset) && matches!(pos(r), StreamPosition::Txn { .. })
        })
        .count();
    assert!(
        interleaved >= 10,
        "only {interleaved} transaction records between the first and the last chunk: the write load did not run during the snapshot"
    );

    // The header: the snapshot's id and table, a row count that never goes back, and between
    // chunks, the last key of the chunk before.
    let headers = assert_headers(&recs, &chunks, &snapshot, &table);
    let counts: Vec<u64> = headers
        .values()
        .map(|h| h["rows"].as_u64().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "the header's row count never goes back"
    );
    for w in chunks.windows(2) {
        let done = *w[0].keys.last().unwrap();
        for (offset, h) in headers.range(w[0].last + 1..w[1].first) {
            assert!(
                integers(&h["after"]).contains(&done),
                "offset {offset}, between the chunk ending at key {done} and the next: the header's `after` names key {done}: {h}"
            );
        }
    }
    eprintln!(
        "{} chunks, {rows} chunk rows, {transactions} workload transactions ({interleaved} records of them among the chunks), {} rows at the end",
        chunks.len(),
        source.len()
    );
    p.sql(&mut c, &["DROP DATABASE {db}"]).await;
    cleanup(&p.dir);
}

/// 300 000 rows the topic never saw, a write load, and an incremental snapshot; the producer is
/// killed with kill -9 three times while the snapshot runs, each time once the restarted
/// producer has written a fifth of the table's rows more, and restarted. The snapshot goes on
/// from where the topic says it was: the first chunk row each restarted producer writes is not
/// the table's first key, nor a key that a chunk before the last complete one had already
/// read; the topic holds fewer than 1.5 times the table's rows in chunk rows (a snapshot
/// started over at each restart would write at least 1.6 times); and the topic folded in order
/// still equals SF's table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_an_incremental_snapshot_resumes_at_the_next_chunk() {
    let _alone = ONE_AT_A_TIME.lock().await;
    const ROWS: u64 = 300_000;
    const KILLS: usize = 3;
    let step = (ROWS / 5) as usize;
    let (p, mut c, mut producer) = table_the_topic_never_saw("p_incr9", ROWS).await;
    let table = format!("{}.t", p.db);
    let workload = Workload::start(&p.db, ROWS as i64 + 1);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let exit = Verb::start(&p, &["--table", &table])
        .exit(VERB_TIMEOUT)
        .await;
    assert_eq!(exit.code, Some(0), "the verb queues:\n{}", exit.output());
    let id = request_id_in(&exit.stdout, "queued").unwrap_or_else(|| {
        panic!(
            "the verb prints `snapshot request <id> queued: {table}`:\n{}",
            exit.output()
        )
    });
    assert!(
        exit.stdout.contains(&format!("queued: {table}")),
        "the verb names the table it queued:\n{}",
        exit.output()
    );
    assert_eq!(
        requests_naming(&mut c, &p.db).await,
        [id],
        "one request, the one the verb printed"
    );
    let snapshot = wait_started(&mut c, id, &mut producer).await;

    let mut tail_ = Tail::new(&p.topic);
    let mut rng = rand::rng();
    let mut since = 0i64;
    let mut cuts = Vec::new();
    for k in 1..=KILLS {
        let deadline = Instant::now() + SNAPSHOT_TIMEOUT;
        let mut last_check = Instant::now();
        loop {
            tail_.poll();
            if tail_.chunk_rows(&snapshot, since) >= step {
                break;
            }
            if last_check.elapsed() > Duration::from_secs(1) {
                last_check = Instant::now();
                let r = request(&mut c, id).await;
                assert!(
                    !r.done,
                    "the snapshot ended after {} kills, before the kill {k} (the producer was to write {step} chunk rows first): {r:?}",
                    k - 1
                );
                assert_running(&mut producer, &format!("before kill {k}"));
            }
            assert!(
                Instant::now() < deadline,
                "the producer wrote only {} chunk rows within {SNAPSHOT_TIMEOUT:?} before kill {k}; its log ends:\n{}",
                tail_.chunk_rows(&snapshot, since),
                tail(&producer.log(), 80)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        producer.kill9();
        // What the killed producer had sent lands first; whatever comes later is the restart's.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cut = tail_.end();
        cuts.push(cut);
        eprintln!("kill {k}: the topic ends at offset {cut}");
        producer = p.spawn_logged(&[], &format!("producer-{k}"));
        since = cut;
    }
    let (req, _) = wait_done(&mut c, id, &mut producer, None).await;
    let transactions = workload.stop().await;
    assert_eq!(
        req.error,
        None,
        "the producer records no error: {req:?}{OTHER_PRODUCERS}\nits log ends:\n{}",
        tail(&producer.log(), 80)
    );
    assert_eq!(
        req.snapshot_id.as_deref(),
        Some(snapshot.as_str()),
        "one snapshot, resumed: {req:?}"
    );
    wait_topic_caught_up(&p, &mut c).await;
    assert_running(&mut producer, "while the topic caught up");
    producer.kill9();

    let recs = decode_all(&p.topic).await;
    let folded = fold(&recs, &p.db);
    let source = source_table(&mut c, &p.db).await;
    assert_same_table(&folded, &source);
    assert_consistent(&recs, &p.db);

    let mut chunks = chunks_of(&recs, &p.db, &snapshot, &cuts);
    assert_ranges(&chunks);
    chunks.retain(|c| !c.keys.is_empty());
    assert!(
        !chunks.is_empty(),
        "chunks of snapshot {snapshot} in the topic"
    );
    assert_at_boundaries(&recs, &chunks);
    let headers = assert_headers(&recs, &chunks, &snapshot, &table);
    let smallest = *source.keys().next().expect("rows in t");
    for (k, &cut) in cuts.iter().enumerate() {
        let k = k + 1;
        let before = recs
            .iter()
            .rfind(|(r, _)| r.offset < cut)
            .map(|(r, _)| r.offset)
            .unwrap();
        assert!(
            headers.contains_key(&before),
            "kill {k} landed while the snapshot ran: the topic's last record then (offset {before}) carries the {HEADER_SNAPSHOT} header"
        );
        let first = chunks
            .iter()
            .find(|c| c.first >= cut)
            .unwrap_or_else(|| panic!("no chunk after kill {k} (offset {cut})"));
        let key = first.keys[0];
        assert!(
            key > smallest,
            "after kill {k}, the restarted producer's first chunk row (offset {}) has key {key}, the table's first key ({smallest}): the snapshot started over",
            first.first
        );
        let complete: Vec<&Chunk> = chunks
            .iter()
            .filter(|c| c.complete && c.last < cut)
            .collect();
        if let [.., penultimate, last] = complete.as_slice() {
            let read = *penultimate.keys.last().unwrap();
            assert!(
                key > read,
                "after kill {k}, the restarted producer's first chunk row (offset {}) has key {key}, which the complete chunk at offset {} (keys ..{read}) had read, and the complete chunk after it (offset {}, keys ..{}) too: the snapshot went back further than the last chunk before the kill",
                first.first,
                penultimate.first,
                last.first,
                last.keys.last().unwrap()
            );
        }
        eprintln!(
            "kill {k} at offset {cut}: resumed at key {key} (first key {smallest}); the last complete chunk before ended at key {:?}",
            complete.last().map(|c| c.keys.last().unwrap())
        );
    }
    let rows: usize = chunks.iter().map(|c| c.keys.len()).sum();
    assert!(
        (rows as f64) < 1.5 * source.len() as f64,
        "{rows} chunk rows in the topic for a table of {} rows: the snapshot read too much again after the kills",
        source.len()
    );
    eprintln!(
        "{KILLS} kills at offsets {cuts:?}, {} chunks, {rows} chunk rows, {} rows at the end, {transactions} workload transactions",
        chunks.len(),
        source.len()
    );
    p.sql(&mut c, &["DROP DATABASE {db}"]).await;
    cleanup(&p.dir);
}

/// The verb checks the tables it is asked for before it queues anything, and refuses at once,
/// with a non-zero exit and a message naming the table and the reason: a table that does not
/// exist, one the producer does not capture (`producer.exclude`), one without a primary key
/// (its chunks could not be read by key), and ones keyed by a DECIMAL or an ENUM, whose key
/// ranges MariaDB would not bound in the key's order. No request is queued for them. A captured table with
/// a primary key is queued, as a control.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_request_for_a_table_that_is_not_captured_or_has_no_primary_key_fails_clearly() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (mut p, mut c) = TestPipeline::with_database(
        "p_incrbad",
        &[
            "CREATE TABLE {db}.t (id BIGINT PRIMARY KEY, v INT)",
            "CREATE TABLE {db}.nopk (a INT, b INT)",
            "CREATE TABLE {db}.excl (id INT PRIMARY KEY, v INT)",
            "CREATE TABLE {db}.dec (id DECIMAL(30, 10) PRIMARY KEY, v INT)",
            "CREATE TABLE {db}.en (k ENUM('z', 'a') NOT NULL, n INT NOT NULL, PRIMARY KEY (n, k))",
            "INSERT INTO {db}.nopk VALUES (1, 1), (2, 2)",
        ],
    )
    .await;
    p.set("producer.exclude", vec![format!("{}.excl", p.db)]);

    // The control: a captured table with a primary key is queued.
    let good = format!("{}.t", p.db);
    let exit = Verb::start(&p, &["--table", &good])
        .exit(VERB_TIMEOUT)
        .await;
    assert_eq!(exit.code, Some(0), "{good} is queued:\n{}", exit.output());
    let id = request_id_in(&exit.stdout, "queued")
        .unwrap_or_else(|| panic!("the verb prints the request's id:\n{}", exit.output()));
    assert_eq!(
        requests_naming(&mut c, &p.db).await,
        [id],
        "one request, the one printed"
    );
    // Nobody serves it: take it away again.
    c.exec_drop("DELETE FROM continuum.snapshot_request WHERE id = ?", (id,))
        .await
        .unwrap();

    for (table, reasons) in [
        (
            format!("{}.missing", p.db),
            &[
                "does not exist",
                "doesn't exist",
                "not exist",
                "no such",
                "not found",
                "unknown",
            ][..],
        ),
        (
            format!("{}.excl", p.db),
            &["not captured", "exclude", "include", "not replicated"][..],
        ),
        (format!("{}.nopk", p.db), &["primary key"][..]),
        // Keys whose bounds MariaDB would not compare in the key's order.
        (format!("{}.dec", p.db), &["column id is decimal"][..]),
        (format!("{}.en", p.db), &["column k is enum"][..]),
    ] {
        let started = Instant::now();
        let exit = Verb::start(&p, &["--table", &table])
            .exit(VERB_TIMEOUT)
            .await;
        let output = exit.output();
        assert!(
            matches!(exit.code, Some(code) if code != 0),
            "the verb refuses {table} with a non-zero exit:\n{output}"
        );
        assert!(
            output.contains(&table),
            "the refusal names {table}:\n{output}"
        );
        let lower = output.to_lowercase();
        assert!(
            reasons.iter().any(|r| lower.contains(r)),
            "the refusal of {table} says why (one of {reasons:?}):\n{output}"
        );
        assert!(
            requests_naming(&mut c, &p.db).await.is_empty(),
            "nothing is queued for {table}"
        );
        eprintln!(
            "{table} refused in {:?}: {}",
            started.elapsed(),
            exit.stderr.trim()
        );
    }
    p.sql(&mut c, &["DROP DATABASE {db}"]).await;
    cleanup(&p.dir);
}
