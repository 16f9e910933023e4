//! One writer: plans transactions from its seeded RNG and its model of the rows it owns,
//! executes each as one MariaDB transaction (retrying deadlocks and lock wait timeouts with the
//! same statements), and logs each commit with its GTID.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use super::model::{ddl_column_palette, Alloc, DbModel, DdlCol, DdlTable, IdSet, ACCOUNTS_PER_DB};
use super::values::{self, all_types_columns, ident, sql_str, Cs, Gen};
use super::{connect, Config, Counts, LogEntry, Shared};

/// Rows per multi-row INSERT (and ids per `IN (...)` list) in large transactions.
const CHUNK: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RowOp {
    Insert,
    Update,
    Delete,
    /// A statement that changes no row (a locking read, a DDL).
    None,
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    Any,
    Exactly(u64),
    AtMost(u64),
}

struct Stmt {
    sql: String,
    /// `db.table` it writes.
    table: String,
    op: RowOp,
    expect: Expect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Small,
    Large,
    Transfer,
    Swap,
    PkUpdate,
    Account,
    Ddl,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Small => "small",
            Kind::Large => "large",
            Kind::Transfer => "transfer",
            Kind::Swap => "swap",
            Kind::PkUpdate => "pk_update",
            Kind::Account => "account",
            Kind::Ddl => "ddl",
        }
    }
}

struct Plan {
    kind: Kind,
    stmts: Vec<Stmt>,
    /// Rows InnoDB deletes by `ON DELETE CASCADE`: changed, but absent from the binlog.
    cascaded: BTreeMap<String, u64>,
    /// The DDL statement, run outside any transaction.
    ddl: Option<String>,
    /// A row expected to exist may have been removed by another worker (cross-worker bank
    /// transfers): roll back and skip instead of failing.
    skippable: bool,
}

impl Plan {
    fn new(kind: Kind) -> Plan {
        Plan {
            kind,
            stmts: Vec::new(),
            cascaded: BTreeMap::new(),
            ddl: None,
            skippable: false,
        }
    }

    fn push(&mut self, table: String, op: RowOp, expect: Expect, sql: String) {
        self.stmts.push(Stmt {
            sql,
            table,
            op,
            expect,
        });
    }

    /// `INSERT INTO t (cols) VALUES rows`: every row inserted.
    fn insert(&mut self, t: &On, cols: &str, rows: &[String]) {
        self.push(
            t.key.clone(),
            RowOp::Insert,
            Expect::Exactly(rows.len() as u64),
            format!("INSERT INTO {} ({cols}) VALUES {}", t.sql, rows.join(",")),
        );
    }

    /// `UPDATE t SET set WHERE id IN (ids)`: every row named changes (`set` always changes a
    /// value).
    fn update_in(&mut self, t: &On, set: &str, ids: &[i64]) {
        self.push(
            t.key.clone(),
            RowOp::Update,
            Expect::Exactly(ids.len() as u64),
            format!("UPDATE {} SET {set} WHERE id IN ({})", t.sql, list(ids)),
        );
    }

    /// `UPDATE t SET set WHERE id = id`.
    fn update_id(&mut self, t: &On, set: &str, id: i64, expect: Expect) {
        self.push(
            t.key.clone(),
            RowOp::Update,
            expect,
            format!("UPDATE {} SET {set} WHERE id = {id}", t.sql),
        );
    }

    /// `DELETE FROM t WHERE id IN (ids)`: every row named goes.
    fn delete_in(&mut self, t: &On, ids: &[i64]) {
        self.push(
            t.key.clone(),
            RowOp::Delete,
            Expect::Exactly(ids.len() as u64),
            format!("DELETE FROM {} WHERE id IN ({})", t.sql, list(ids)),
        );
    }

    /// `DELETE FROM t WHERE id = id`: the row goes.
    fn delete_id(&mut self, t: &On, id: i64) {
        self.push(
            t.key.clone(),
            RowOp::Delete,
            Expect::Exactly(1),
            format!("DELETE FROM {} WHERE id = {id}", t.sql),
        );
    }
}

/// What a worker did.
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub counts: Counts,
    /// (seq, gtid) of the lowest and highest GTID this worker committed.
    pub first_gtid: Option<(u64, String)>,
    pub last_gtid: Option<(u64, String)>,
    /// Rows the model holds at the end, per `db.table`.
    pub rows_now: BTreeMap<String, u64>,
}

enum TryErr {
    Retry(mysql_async::Error),
    Conn(mysql_async::Error),
    Skip,
    Fatal(anyhow::Error),
}

enum Outcome {
    Committed {
        gtid: Option<String>,
        counts: Vec<(String, RowOp, u64)>,
        attempts: u32,
    },
    Skipped,
}

enum Failure {
    Connection(mysql_async::Error),
    Fatal(anyhow::Error),
}

/// Server errors that mean the session is gone (the server shut down, the connection was
/// killed, a network error reported by the server).
fn connection_gone(code: u16) -> bool {
    matches!(
        code,
        1053 | 1077
            | 1152
            | 1153
            | 1154
            | 1155
            | 1156
            | 1157
            | 1158
            | 1159
            | 1160
            | 1161
            | 1927
            | 2006
            | 2013
            | 4031
    )
}

/// Whether an error (anywhere in its chain) is a lost or refused connection.
fn is_connection_error(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| match c.downcast_ref::<mysql_async::Error>() {
            Some(mysql_async::Error::Server(s)) => connection_gone(s.code),
            Some(mysql_async::Error::Url(_)) => false,
            Some(_) => true,
            None => false,
        })
}

fn classify(e: mysql_async::Error, sql: &str) -> TryErr {
    match &e {
        mysql_async::Error::Server(s) if s.code == 1213 || s.code == 1205 => TryErr::Retry(e),
        mysql_async::Error::Server(s) if connection_gone(s.code) => TryErr::Conn(e),
        mysql_async::Error::Server(_) | mysql_async::Error::Url(_) => {
            TryErr::Fatal(anyhow!("{e}\n  statement: {}", shorten(sql)))
        }
        _ => TryErr::Conn(e),
    }
}

fn shorten(sql: &str) -> String {
    if sql.len() <= 300 {
        sql.to_owned()
    } else {
        let mut end = 300;
        while !sql.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &sql[..end], sql.len())
    }
}

fn list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

fn tbl(db: &str, t: &str) -> String {
    format!("{}.{}", ident(db), ident(t))
}

fn key(db: &str, t: &str) -> String {
    format!("{db}.{t}")
}

/// A table as a plan's statements name it: the key of its statistics (`db.t`) and its name
/// in SQL (`` `db`.`t` ``).
struct On {
    key: String,
    sql: String,
}

impl On {
    fn new(db: &str, t: &str) -> On {
        On {
            key: key(db, t),
            sql: tbl(db, t),
        }
    }
}

/// One step of a small transaction on one table (worker, plan, database index, rows).
type Step = fn(&mut Worker, &mut Plan, usize, usize);

/// The small-transaction planner of one table: see [`Worker::small`].
struct Small {
    /// Whether the worker knows no row of the table (then it inserts).
    empty: fn(&DbModel) -> bool,
    insert: Step,
    update: Step,
    delete: Step,
}

/// The tables small transactions write, in the order the generator has always drawn them
/// (`plan_small` draws index `SMALL.len()` for a `ddl_*` table).
const SMALL: [Small; 5] = [
    Small {
        empty: |m| m.all_types.is_empty(),
        insert: Worker::small_all_types_insert,
        update: Worker::small_all_types_update,
        delete: Worker::small_all_types_delete,
    },
    Small {
        empty: |m| m.customers.is_empty(),
        insert: Worker::small_customers_insert,
        update: Worker::small_customers_update,
        delete: Worker::small_customers_delete,
    },
    Small {
        empty: |m| m.orders.is_empty(),
        insert: Worker::small_orders_insert,
        update: Worker::small_orders_update,
        delete: Worker::small_orders_delete,
    },
    Small {
        empty: |m| m.lines.is_empty(),
        insert: Worker::small_lines_insert,
        update: Worker::small_lines_update,
        delete: Worker::small_lines_delete,
    },
    Small {
        empty: |m| m.users.is_empty(),
        insert: Worker::small_users_insert,
        update: Worker::small_users_update,
        delete: Worker::small_users_delete,
    },
];

/// Seconds since 2020-01-01 plus micros: a plausible deterministic business timestamp.
fn business_time(rng: &mut StdRng) -> String {
    let secs = 1_577_836_800 + rng.random_range(0..200_000_000i64);
    let dt = chrono::DateTime::from_timestamp(secs, 0).unwrap();
    sql_str(&format!(
        "{}.{:06}",
        dt.format("%Y-%m-%d %H:%M:%S"),
        rng.random_range(0..1_000_000)
    ))
}

fn cents(c: i64) -> String {
    format!(
        "{}{}.{:02}",
        if c < 0 { "-" } else { "" },
        c.abs() / 100,
        c.abs() % 100
    )
}

pub(super) struct Worker {
    pub idx: usize,
    cfg: Arc<Config>,
    opts: Opts,
    rng: StdRng,
    conn: Conn,
    dbs: Vec<DbModel>,
    shared: Arc<Shared>,
    pub stats: Stats,
    /// `@@last_gtid` of this session after its previous commit.
    last_gtid: String,
    ddl_done: u64,
}

impl Worker {
    /// Connects and loads the worker's part of the tables. A connection lost meanwhile is
    /// retried within `--reconnect-timeout`; any other error is returned.
    pub(super) async fn start(
        idx: usize,
        cfg: Arc<Config>,
        opts: Opts,
        shared: Arc<Shared>,
    ) -> Result<Worker> {
        let deadline = Instant::now() + cfg.reconnect_timeout;
        let (conn, dbs) = loop {
            match Self::connect_and_load(idx, &cfg, &opts).await {
                Ok(x) => break x,
                Err(e)
                    if is_connection_error(&e)
                        && Instant::now() < deadline
                        && !shared.stop.load(Ordering::Relaxed) =>
                {
                    eprintln!("workload: worker {idx}: {e:#}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let seed = cfg
            .seed
            .wrapping_add((idx as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        Ok(Worker {
            idx,
            rng: StdRng::seed_from_u64(seed),
            cfg,
            opts,
            conn,
            dbs,
            shared,
            stats: Stats::default(),
            last_gtid: String::new(),
            ddl_done: 0,
        })
    }

    async fn connect_and_load(
        idx: usize,
        cfg: &Config,
        opts: &Opts,
    ) -> Result<(Conn, Vec<DbModel>)> {
        let mut conn = connect(opts, cfg).await?;
        let mut dbs = Vec::new();
        for name in cfg.database_names() {
            dbs.push(DbModel::load(&mut conn, &name, idx, cfg.workers).await?);
        }
        Ok((conn, dbs))
    }

    /// Runs `quota` units (or until the deadline or the stop flag), at `rate` per second
    /// (0: as fast as possible).
    pub(super) async fn run(
        mut self,
        quota: Option<u64>,
        deadline: Option<Instant>,
        rate: f64,
    ) -> Result<Stats> {
        let mut sched_start = Instant::now();
        let mut sched_n: u64 = 0;
        let mut k: u64 = 0;
        loop {
            if self.shared.stop.load(Ordering::Relaxed)
                || quota.is_some_and(|q| k >= q)
                || deadline.is_some_and(|d| Instant::now() >= d)
            {
                break;
            }
            if rate > 0.0 {
                let due = sched_start + Duration::from_secs_f64(sched_n as f64 / rate);
                let now = Instant::now();
                if due > now {
                    let wait = due - now;
                    let wait =
                        deadline.map_or(wait, |d| wait.min(d.saturating_duration_since(now)));
                    tokio::time::sleep(wait).await;
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                } else if now - due > Duration::from_secs(1) {
                    // Far behind (a large transaction, a reconnect): do not burst to catch up.
                    sched_start = now;
                    sched_n = 0;
                }
                sched_n += 1;
            }
            let plan = self.plan(k);
            match self.execute(&plan).await {
                Ok(Outcome::Committed {
                    gtid,
                    counts,
                    attempts,
                }) => self.record(&plan, gtid, counts, attempts)?,
                Ok(Outcome::Skipped) => self.stats.counts.skipped += 1,
                Err(Failure::Fatal(e)) => {
                    return Err(e.context(format!(
                        "worker {}: {} transaction",
                        self.idx,
                        plan.kind.as_str()
                    )))
                }
                Err(Failure::Connection(e)) => {
                    if !self.reconnect(e).await? {
                        break;
                    }
                }
            }
            k += 1;
        }
        for m in &self.dbs {
            for (t, n) in m.row_counts() {
                self.stats.rows_now.insert(key(&m.name, &t), n as u64);
            }
        }
        let _ = self.conn.disconnect().await;
        Ok(self.stats)
    }

    fn record(
        &mut self,
        plan: &Plan,
        gtid: Option<String>,
        counts: Vec<(String, RowOp, u64)>,
        attempts: u32,
    ) -> Result<()> {
        let Some(gtid) = gtid else {
            // Nothing changed (every update set the values the rows had): no GTID, nothing
            // in the binlog, nothing to log.
            self.stats.counts.empty += 1;
            return Ok(());
        };
        let st = &mut self.stats;
        let c = &mut st.counts;
        c.transactions += 1;
        *c.kinds.entry(plan.kind.as_str().to_owned()).or_default() += 1;
        if plan.kind == Kind::Ddl {
            c.ddl += 1;
        }
        let mut tables: BTreeMap<String, u64> = BTreeMap::new();
        let mut rows = 0;
        for (t, op, n) in counts {
            if op == RowOp::None {
                continue;
            }
            let ts = c.tables.entry(t.clone()).or_default();
            match op {
                RowOp::Insert => ts.inserted += n,
                RowOp::Update => ts.updated += n,
                RowOp::Delete => ts.deleted += n,
                RowOp::None => {}
            }
            if n > 0 {
                *tables.entry(t).or_default() += n;
            }
            rows += n;
        }
        c.rows += rows;
        for (t, n) in &plan.cascaded {
            c.tables.entry(t.clone()).or_default().cascaded += n;
            c.cascaded += n;
        }
        let seq = gtid
            .rsplit('-')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if st.first_gtid.as_ref().is_none_or(|(s, _)| seq < *s) {
            st.first_gtid = Some((seq, gtid.clone()));
        }
        if st.last_gtid.as_ref().is_none_or(|(s, _)| seq > *s) {
            st.last_gtid = Some((seq, gtid.clone()));
        }
        let now = chrono::Utc::now();
        self.shared.log(LogEntry {
            n: 0,
            worker: self.idx,
            kind: plan.kind.as_str().to_owned(),
            gtid,
            tables,
            rows,
            cascaded: plan.cascaded.clone(),
            ddl: plan.ddl.clone(),
            attempts,
            committed_at: now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            commit_us: now.timestamp_micros(),
        })
    }

    /// Reconnects (bounded by `--reconnect-timeout`) and reloads the model from the database:
    /// whatever the lost transaction did, committed or not, the database says. Returns false
    /// when asked to stop meanwhile.
    async fn reconnect(&mut self, err: mysql_async::Error) -> Result<bool> {
        eprintln!(
            "workload: worker {}: lost the connection ({err}); reconnecting",
            self.idx
        );
        self.stats.counts.reconnects += 1;
        let deadline = Instant::now() + self.cfg.reconnect_timeout;
        let mut last = err.to_string();
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            if Instant::now() >= deadline {
                bail!(
                    "worker {}: could not reconnect to MariaDB at {} within {:?}: {last}",
                    self.idx,
                    self.cfg.target(),
                    self.cfg.reconnect_timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (conn, dbs) = match Self::connect_and_load(self.idx, &self.cfg, &self.opts).await {
                Ok(x) => x,
                Err(e) if is_connection_error(&e) => {
                    last = format!("{e:#}");
                    continue;
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "worker {}: reloading its state after reconnecting",
                        self.idx
                    )))
                }
            };
            self.conn = conn;
            self.dbs = dbs;
            self.last_gtid.clear();
            eprintln!("workload: worker {}: reconnected, state reloaded", self.idx);
            return Ok(true);
        }
    }

    async fn execute(&mut self, plan: &Plan) -> Result<Outcome, Failure> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            match self.try_once(plan).await {
                Ok((gtid, counts)) => {
                    return Ok(Outcome::Committed {
                        gtid,
                        counts,
                        attempts: attempt,
                    })
                }
                Err(TryErr::Conn(e)) => return Err(Failure::Connection(e)),
                Err(TryErr::Skip) => {
                    self.rollback().await?;
                    return Ok(Outcome::Skipped);
                }
                Err(TryErr::Fatal(e)) => {
                    let _ = self.conn.query_drop("ROLLBACK").await;
                    return Err(Failure::Fatal(e));
                }
                Err(TryErr::Retry(e)) => {
                    self.rollback().await?;
                    self.stats.counts.retries += 1;
                    if attempt > self.cfg.max_retries {
                        return Err(Failure::Fatal(anyhow!(
                            "gave up after {attempt} attempts: {e}"
                        )));
                    }
                    // Backoff with jitter from a generator apart from the seeded one: retries
                    // must not change the workload's choices.
                    let base = 10u64 << attempt.min(7);
                    let jitter = rand::rng().random_range(0..=base);
                    tokio::time::sleep(Duration::from_millis((base + jitter).min(2000))).await;
                }
            }
        }
    }

    async fn rollback(&mut self) -> Result<(), Failure> {
        match self.conn.query_drop("ROLLBACK").await {
            Ok(()) => Ok(()),
            Err(e) => match classify(e, "ROLLBACK") {
                TryErr::Fatal(e) => Err(Failure::Fatal(e)),
                TryErr::Conn(e) | TryErr::Retry(e) => Err(Failure::Connection(e)),
                TryErr::Skip => unreachable!(),
            },
        }
    }

    async fn try_once(
        &mut self,
        plan: &Plan,
    ) -> Result<(Option<String>, Vec<(String, RowOp, u64)>), TryErr> {
        let mut counts = Vec::with_capacity(plan.stmts.len());
        if let Some(ddl) = &plan.ddl {
            self.conn
                .query_drop(ddl)
                .await
                .map_err(|e| classify(e, ddl))?;
        } else {
            self.conn
                .query_drop("START TRANSACTION")
                .await
                .map_err(|e| classify(e, "START TRANSACTION"))?;
            for s in &plan.stmts {
                self.conn
                    .query_drop(&s.sql)
                    .await
                    .map_err(|e| classify(e, &s.sql))?;
                let n = self.conn.affected_rows();
                let ok = match s.expect {
                    Expect::Any => true,
                    Expect::Exactly(x) => n == x,
                    Expect::AtMost(x) => n <= x,
                };
                if !ok {
                    if plan.skippable {
                        return Err(TryErr::Skip);
                    }
                    return Err(TryErr::Fatal(anyhow!(
                        "{} changed {n} rows where the workload expected {:?}: is something else writing the workload's tables?\n  statement: {}",
                        s.table,
                        s.expect,
                        shorten(&s.sql)
                    )));
                }
                counts.push((s.table.clone(), s.op, n));
            }
            self.conn
                .query_drop("COMMIT")
                .await
                .map_err(|e| classify(e, "COMMIT"))?;
        }
        let g: Option<String> = self
            .conn
            .query_first("SELECT @@last_gtid")
            .await
            .map_err(|e| classify(e, "SELECT @@last_gtid"))?;
        let g = g.unwrap_or_default();
        if g.is_empty() || g == self.last_gtid {
            return Ok((None, counts));
        }
        self.last_gtid = g.clone();
        Ok((Some(g), counts))
    }

    // ---------------------------------------------------------------- planning

    fn plan(&mut self, k: u64) -> Plan {
        let cfg = self.cfg.clone();
        if cfg.ddl && self.idx == 0 && cfg.ddl_every > 0 && k % cfg.ddl_every == cfg.ddl_every / 2 {
            return self.plan_ddl();
        }
        if cfg.large_every > 0 && cfg.large_rows > 0 && k % cfg.large_every == cfg.large_every - 1 {
            return self.plan_large();
        }
        let r = self.rng.random_range(0..100);
        let plan = match r {
            0..58 => None,
            58..83 => self.plan_transfer(),
            83..90 => self.plan_swap(),
            90..97 => self.plan_pk_update(),
            _ => self.plan_account(),
        };
        plan.unwrap_or_else(|| self.plan_small())
    }

    fn pick_db(&mut self) -> usize {
        self.rng.random_range(0..self.dbs.len())
    }

    /// 1 to 20 rows over 1 to 3 tables, now and then across databases.
    fn plan_small(&mut self) -> Plan {
        let mut p = Plan::new(Kind::Small);
        let budget = self.rng.random_range(1..=20usize);
        let ntables = self.rng.random_range(1..=3usize).min(budget);
        let home = self.pick_db();
        let mut kinds: Vec<usize> = (0..SMALL.len()).collect();
        if self.idx == 0 && self.dbs.iter().any(|m| !m.ddl.is_empty()) {
            kinds.push(SMALL.len());
        }
        kinds.shuffle(&mut self.rng);
        kinds.truncate(ntables);
        let mut shares = vec![1usize; ntables];
        for _ in 0..budget - ntables {
            let i = self.rng.random_range(0..ntables);
            shares[i] += 1;
        }
        for (kind, rows) in kinds.into_iter().zip(shares) {
            let db = if self.dbs.len() > 1 && self.rng.random_ratio(1, 4) {
                self.pick_db()
            } else {
                home
            };
            let op = self.rng.random_range(0..100);
            match SMALL.get(kind) {
                Some(s) => self.small(s, &mut p, db, op, rows),
                None => self.small_ddl_table(&mut p, db, op, rows),
            }
        }
        p
    }

    /// One table's share of a small transaction: `rows` inserted when `op` (0 to 99) is below
    /// 50 or the table is empty, updated below 85, deleted otherwise.
    fn small(&mut self, s: &Small, p: &mut Plan, db: usize, op: u32, rows: usize) {
        let step = if op < 50 || (s.empty)(&self.dbs[db]) {
            s.insert
        } else if op < 85 {
            s.update
        } else {
            s.delete
        };
        step(self, p, db, rows)
    }

    fn all_types_insert(&mut self, p: &mut Plan, db: usize, ids: &[i64], bulk: bool) {
        let cols = all_types_columns();
        let names: Vec<String> = std::iter::once("id".to_owned())
            .chain(cols.iter().map(|(n, _, _)| ident(n)))
            .collect();
        let t = On::new(&self.dbs[db].name, "all_types");
        for chunk in ids.chunks(CHUNK) {
            let mut rows = Vec::with_capacity(chunk.len());
            for id in chunk {
                let mut row = format!("({id}");
                for (_, _, g) in &cols {
                    row.push(',');
                    row.push_str(&g.literal(&mut self.rng, true, bulk));
                }
                row.push(')');
                rows.push(row);
            }
            p.insert(&t, &names.join(","), &rows);
        }
        for id in ids {
            self.dbs[db].all_types.insert(*id);
        }
    }

    fn small_all_types_insert(&mut self, p: &mut Plan, db: usize, rows: usize) {
        let ids: Vec<i64> = (0..rows)
            .map(|_| self.dbs[db].all_types_alloc.take())
            .collect();
        self.all_types_insert(p, db, &ids, false);
    }

    fn small_all_types_update(&mut self, p: &mut Plan, db: usize, rows: usize) {
        let t = On::new(&self.dbs[db].name, "all_types");
        let cols = all_types_columns();
        for id in self.dbs[db].all_types.pick_n(&mut self.rng, rows) {
            let n = self.rng.random_range(1..=5);
            let set: Vec<String> = cols
                .choose_multiple(&mut self.rng, n)
                .map(|(c, _, g)| (c, g))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|(c, g)| format!("{} = {}", ident(c), g.literal(&mut self.rng, true, false)))
                .collect();
            p.update_id(&t, &set.join(", "), id, Expect::AtMost(1));
        }
    }

    fn small_all_types_delete(&mut self, p: &mut Plan, db: usize, rows: usize) {
        let t = On::new(&self.dbs[db].name, "all_types");
        let ids = self.dbs[db].all_types.pick_n(&mut self.rng, rows);
        p.delete_in(&t, &ids);
        for id in ids {
            self.dbs[db].all_types.remove(id);
        }
    }

    fn customer_values(&mut self, id: i64) -> String {
        let name = values::random_text(&mut self.rng, 40, 160, Cs::Utf8mb4, true);
        let country = ["US", "FR", "DE", "JP", "BR", "IN", "GB", "ES"]
            .choose(&mut self.rng)
            .unwrap();
        format!(
            "({id}, {}, {}, '{country}', {})",
            sql_str(&format!("{name} #{id}")),
            sql_str(&format!("c{id}@example.com")),
            business_time(&mut self.rng)
        )
    }

    fn insert_customers(&mut self, p: &mut Plan, db: usize, n: usize) -> Vec<i64> {
        let t = On::new(&self.dbs[db].name, "customers");
        let ids: Vec<i64> = (0..n).map(|_| self.dbs[db].customer_alloc.take()).collect();
        for chunk in ids.chunks(CHUNK) {
            let vals: Vec<String> = chunk.iter().map(|id| self.customer_values(*id)).collect();
            p.insert(&t, "id, name, email, country, created_at", &vals);
        }
        for id in &ids {
            self.dbs[db].customers.insert(*id);
        }
        ids
    }

    /// Orders for the given customers (one customer per order, cycling).
    fn insert_orders(&mut self, p: &mut Plan, db: usize, customers: &[i64], n: usize) -> Vec<i64> {
        let t = On::new(&self.dbs[db].name, "orders");
        let mut ids = Vec::with_capacity(n);
        let mut rows = Vec::with_capacity(n);
        for i in 0..n {
            let id = self.dbs[db].order_alloc.take();
            let c = customers[i % customers.len()];
            let status = ["new", "paid", "shipped", "cancelled"]
                .choose(&mut self.rng)
                .unwrap();
            let total = self.rng.random_range(0..10_000_000i64);
            rows.push(format!(
                "({id}, {c}, '{status}', {}, {})",
                cents(total),
                business_time(&mut self.rng)
            ));
            ids.push((id, c));
        }
        for chunk in rows.chunks(CHUNK) {
            p.insert(&t, "id, customer_id, status, total, created_at", chunk);
        }
        for (id, c) in &ids {
            self.dbs[db].add_order(*id, *c);
        }
        ids.into_iter().map(|(id, _)| id).collect()
    }

    fn insert_lines(&mut self, p: &mut Plan, db: usize, orders: &[i64], n: usize) {
        let t = On::new(&self.dbs[db].name, "order_lines");
        let mut ids = Vec::with_capacity(n);
        let mut rows = Vec::with_capacity(n);
        for i in 0..n {
            let id = self.dbs[db].line_alloc.take();
            let o = orders[i % orders.len()];
            let sku = format!("SKU-{:06}", self.rng.random_range(0..1_000_000));
            let qty = self.rng.random_range(1..=20);
            let price = self.rng.random_range(1..=100_000i64);
            rows.push(format!("({id}, {o}, '{sku}', {qty}, {})", cents(price)));
            ids.push((id, o));
        }
        for chunk in rows.chunks(CHUNK) {
            p.insert(&t, "id, order_id, sku, qty, price", chunk);
        }
        for (id, o) in ids {
            self.dbs[db].add_line(id, o);
        }
    }

    /// Deletes orders with their lines: through `ON DELETE CASCADE` (when `--cascade` allows,
    /// half of the time) or lines first, explicitly.
    fn delete_orders(&mut self, p: &mut Plan, db: usize, orders: &[i64]) {
        if orders.is_empty() {
            return;
        }
        let name = self.dbs[db].name.clone();
        let nlines: usize = orders.iter().map(|o| self.dbs[db].lines_of(*o).len()).sum();
        let cascade = self.cfg.cascade && self.rng.random_bool(0.5);
        if nlines > 0 {
            if cascade {
                *p.cascaded.entry(key(&name, "order_lines")).or_default() += nlines as u64;
            } else {
                for chunk in orders.chunks(CHUNK) {
                    let n: usize = chunk.iter().map(|o| self.dbs[db].lines_of(*o).len()).sum();
                    if n > 0 {
                        p.push(
                            key(&name, "order_lines"),
                            RowOp::Delete,
                            Expect::Exactly(n as u64),
                            format!(
                                "DELETE FROM {} WHERE order_id IN ({})",
                                tbl(&name, "order_lines"),
                                list(chunk)
                            ),
                        );
                    }
                }
            }
        }
        let t = On::new(&name, "orders");
        for chunk in orders.chunks(CHUNK) {
            p.delete_in(&t, chunk);
        }
        for o in orders {
            self.dbs[db].remove_order(*o);
        }
    }

    fn small_customers_insert(&mut self, p: &mut Plan, db: usize, rows: usize) {
        self.insert_customers(p, db, rows);
    }

    fn small_customers_update(&mut self, p: &mut Plan, db: usize, rows: usize) {
        let t = On::new(&self.dbs[db].name, "customers");
        for id in self.dbs[db].customers.pick_n(&mut self.rng, rows) {
            let country = ["US", "FR", "DE", "JP", "BR", "IN", "GB", "ES"]
                .choose(&mut self.rng)
                .unwrap();
            let nm = values::random_text(&mut self.rng, 40, 160, Cs::Utf8mb4, true);
            let set = format!(
                "name = {}, country = '{country}'",
                sql_str(&format!("{nm} #{id}"))
            );
            p.update_id(&t, &set, id, Expect::AtMost(1));
        }
    }

    /// A customer goes: their orders (and lines) first, then the customer.
    fn small_customers_delete(&mut self, p: &mut Plan, db: usize, _rows: usize) {
        let t = On::new(&self.dbs[db].name, "customers");
        let c = self.dbs[db].customers.pick(&mut self.rng).unwrap();
        let orders = self.dbs[db].orders_of(c).to_vec();
        self.delete_orders(p, db, &orders);
        p.delete_id(&t, c);
        self.dbs[db].customers.remove(c);
        self.dbs[db].customer_orders.remove(&c);
    }

    /// A customer: one the worker knows, or a new one.
    fn some_customer(&mut self, p: &mut Plan, db: usize) -> i64 {
        match self.dbs[db].customers.pick(&mut self.rng) {
            Some(c) => c,
            None => self.insert_customers(p, db, 1)[0],
        }
    }

    fn small_orders_insert(&mut self, p: &mut Plan, db: usize, rows: usize) {
        let c = self.some_customer(p, db);
        self.insert_orders(p, db, &[c], rows);
    }

    fn small_orders_update(&mut self, p: &mut Plan, db: usize, rows: usize) {
        let t = On::new(&self.dbs[db].name, "orders");
        let ids = self.dbs[db].orders.pick_n(&mut self.rng, rows);
        let status = ["new", "paid", "shipped", "cancelled"]
            .choose(&mut self.rng)
            .unwrap();
        p.update_in(
            &t,
            &format!("status = '{status}', total = total + 1.25"),
            &ids,
        );
    }

    fn small_orders_delete(&mut self, p: &mut Plan, db: usize, rows: usize) {
        let ids = self.dbs[db].orders.pick_n(&mut self.rng, rows.min(3));
        self.delete_orders(p, db, &ids);
    }

    fn small_lines_insert(&mut self, p: &mut Plan, db: usize, rows: usize) {
        let o = match self.dbs[db].orders.pick(&mut self.rng) {
            Some(o) => o,
            None => {
                let c = self.some_customer(p, db);
                self.insert_orders(p, db, &[c], 1)[0]
            }
        };
        self.insert_lines(p, db, &[o], rows);
    }

    fn small_lines_update(&mut self, p: &mut Plan, db: usize, rows: usize) {
        let t = On::new(&self.dbs[db].name, "order_lines");
        let ids = self.dbs[db].lines.pick_n(&mut self.rng, rows);
        p.update_in(&t, "qty = qty + 1", &ids);
    }

    fn small_lines_delete(&mut self, p: &mut Plan, db: usize, rows: usize) {
        let t = On::new(&self.dbs[db].name, "order_lines");
        let ids = self.dbs[db].lines.pick_n(&mut self.rng, rows);
        p.delete_in(&t, &ids);
        for id in ids {
            self.dbs[db].remove_line(id);
        }
    }

    fn small_users_insert(&mut self, p: &mut Plan, db: usize, rows: usize) {
        let t = On::new(&self.dbs[db].name, "users");
        let mut vals = Vec::new();
        for _ in 0..rows {
            let id = self.dbs[db].user_alloc.take();
            let email = format!("u{id}@example.com");
            let nm = values::random_text(&mut self.rng, 40, 160, Cs::Utf8mb4, true);
            vals.push(format!(
                "({id}, {}, {}, {})",
                sql_str(&email),
                sql_str(&nm),
                business_time(&mut self.rng)
            ));
            self.dbs[db].users.insert(id);
            self.dbs[db].user_email.insert(id, email);
        }
        p.insert(&t, "id, email, name, updated_at", &vals);
    }

    fn small_users_update(&mut self, p: &mut Plan, db: usize, rows: usize) {
        let t = On::new(&self.dbs[db].name, "users");
        for id in self.dbs[db].users.pick_n(&mut self.rng, rows) {
            if self.rng.random_bool(0.5) {
                let nm = values::random_text(&mut self.rng, 40, 160, Cs::Utf8mb4, true);
                let set = format!(
                    "name = {}, updated_at = {}",
                    sql_str(&nm),
                    business_time(&mut self.rng)
                );
                p.update_id(&t, &set, id, Expect::AtMost(1));
            } else {
                let email = format!("u{}@example.com", self.dbs[db].user_alloc.take());
                p.update_id(
                    &t,
                    &format!("email = {}", sql_str(&email)),
                    id,
                    Expect::Exactly(1),
                );
                self.dbs[db].user_email.insert(id, email);
            }
        }
    }

    fn small_users_delete(&mut self, p: &mut Plan, db: usize, rows: usize) {
        let t = On::new(&self.dbs[db].name, "users");
        let ids = self.dbs[db].users.pick_n(&mut self.rng, rows);
        p.delete_in(&t, &ids);
        for id in ids {
            self.dbs[db].users.remove(id);
            self.dbs[db].user_email.remove(&id);
        }
    }

    fn ddl_row(&mut self, cols: &[DdlCol], id: i64) -> String {
        let mut v = vec![id.to_string()];
        for c in cols {
            v.push(c.gen.literal(&mut self.rng, c.nullable, true));
        }
        format!("({})", v.join(","))
    }

    /// Like [`Worker::small`] on one of the database's `ddl_*` tables, drawn first (on
    /// `all_types` while the database has none); an update needs a column besides `id`.
    fn small_ddl_table(&mut self, p: &mut Plan, db: usize, op: u32, rows: usize) {
        if self.dbs[db].ddl.is_empty() {
            return self.small(&SMALL[0], p, db, op, rows);
        }
        let ti = self.rng.random_range(0..self.dbs[db].ddl.len());
        let shape = self.dbs[db].ddl[ti].clone_shape();
        let t = On::new(&self.dbs[db].name, &shape.name);
        if op < 50 || self.dbs[db].ddl[ti].ids.is_empty() {
            let ids: Vec<i64> = (0..rows)
                .map(|_| self.dbs[db].ddl[ti].alloc.take())
                .collect();
            let vals: Vec<String> = ids
                .iter()
                .map(|id| self.ddl_row(&shape.cols, *id))
                .collect();
            let names: Vec<String> = std::iter::once("id".to_owned())
                .chain(shape.cols.iter().map(|c| ident(&c.name)))
                .collect();
            p.insert(&t, &names.join(","), &vals);
            for id in ids {
                self.dbs[db].ddl[ti].ids.insert(id);
            }
        } else if op < 85 && !shape.cols.is_empty() {
            for id in self.dbs[db].ddl[ti].ids.pick_n(&mut self.rng, rows) {
                let c = shape.cols.choose(&mut self.rng).unwrap();
                let v = c.gen.literal(&mut self.rng, c.nullable, true);
                p.update_id(
                    &t,
                    &format!("{} = {v}", ident(&c.name)),
                    id,
                    Expect::AtMost(1),
                );
            }
        } else {
            let ids = self.dbs[db].ddl[ti].ids.pick_n(&mut self.rng, rows);
            p.delete_in(&t, &ids);
            for id in ids {
                self.dbs[db].ddl[ti].ids.remove(id);
            }
        }
    }

    /// One to three transfers between accounts, possibly in different databases. The debit
    /// and credit of each go in (database, id) order, which keeps concurrent workers from
    /// deadlocking most of the time.
    fn plan_transfer(&mut self) -> Option<Plan> {
        let mut p = Plan::new(Kind::Transfer);
        let n = if self.rng.random_ratio(1, 5) {
            self.rng.random_range(2..=3)
        } else {
            1
        };
        for _ in 0..n {
            let (da, db) = (self.pick_db(), self.pick_db());
            let a = self.dbs[da].accounts.pick(&mut self.rng)?;
            let mut b = self.dbs[db].accounts.pick(&mut self.rng)?;
            if self.cfg.workers > 1 && self.rng.random_ratio(1, 5) {
                // Another worker's account, which that worker may have closed: skip if so.
                b = self.rng.random_range(1..=ACCOUNTS_PER_DB);
                p.skippable = true;
            }
            if da == db && a == b {
                continue;
            }
            let amount = self.rng.random_range(1..=50_000i64);
            let mut legs = [(da, a, -amount), (db, b, amount)];
            legs.sort_by_key(|(d, id, _)| (*d, *id));
            for (d, id, delta) in legs {
                let t = On::new(&self.dbs[d].name, "accounts");
                let expr = if delta < 0 {
                    format!("balance - {}", cents(-delta))
                } else {
                    format!("balance + {}", cents(delta))
                };
                p.update_id(&t, &format!("balance = {expr}"), id, Expect::Exactly(1));
            }
        }
        (!p.stmts.is_empty()).then_some(p)
    }

    /// Two users exchange e-mail addresses (a UNIQUE key) through a temporary value.
    fn plan_swap(&mut self) -> Option<Plan> {
        let db = self.pick_db();
        let m = &self.dbs[db];
        if m.users.len() < 2 {
            return None;
        }
        let pair = m.users.pick_n(&mut self.rng, 2);
        let (a, b) = (pair[0], pair[1]);
        let (ea, eb) = (m.user_email[&a].clone(), m.user_email[&b].clone());
        let t = On::new(&m.name, "users");
        let tmp = format!("swap-w{}@tmp.invalid", self.idx);
        let mut p = Plan::new(Kind::Swap);
        for (id, email) in [(a, &tmp), (b, &ea), (a, &eb)] {
            p.update_id(
                &t,
                &format!("email = {}", sql_str(email)),
                id,
                Expect::Exactly(1),
            );
        }
        let m = &mut self.dbs[db];
        m.user_email.insert(a, eb);
        m.user_email.insert(b, ea);
        Some(p)
    }

    /// `UPDATE ... SET id = new WHERE id = old` on `users` or `all_types`.
    fn plan_pk_update(&mut self) -> Option<Plan> {
        let db = self.pick_db();
        let name = self.dbs[db].name.clone();
        let users = self.rng.random_bool(0.5);
        let m = &mut self.dbs[db];
        let (table, old, new) = if users {
            let old = m.users.pick(&mut self.rng)?;
            let new = m.user_alloc.take();
            m.users.remove(old);
            m.users.insert(new);
            let e = m.user_email.remove(&old).unwrap();
            m.user_email.insert(new, e);
            ("users", old, new)
        } else {
            let old = m.all_types.pick(&mut self.rng)?;
            let new = m.all_types_alloc.take();
            m.all_types.remove(old);
            m.all_types.insert(new);
            ("all_types", old, new)
        };
        let mut p = Plan::new(Kind::PkUpdate);
        p.update_id(
            &On::new(&name, table),
            &format!("id = {new}"),
            old,
            Expect::Exactly(1),
        );
        Some(p)
    }

    /// Opens an account (balance 0) or closes one (its balance moves to another account
    /// first, then it is deleted): the total never changes.
    fn plan_account(&mut self) -> Option<Plan> {
        let da = self.pick_db();
        let name = self.dbs[da].name.clone();
        let mut p = Plan::new(Kind::Account);
        if self.dbs[da].accounts.len() > 10 && self.rng.random_bool(0.5) {
            let x = self.dbs[da].accounts.pick(&mut self.rng)?;
            let db = self.pick_db();
            let y = self.dbs[db].accounts.pick(&mut self.rng)?;
            if da == db && x == y {
                return None;
            }
            let to = self.dbs[db].name.clone();
            p.push(
                key(&name, "accounts"),
                RowOp::None,
                Expect::Any,
                format!(
                    "SELECT balance INTO @wl_balance FROM {} WHERE id = {x} FOR UPDATE",
                    tbl(&name, "accounts")
                ),
            );
            p.update_id(
                &On::new(&to, "accounts"),
                "balance = balance + @wl_balance",
                y,
                Expect::AtMost(1),
            );
            p.delete_id(&On::new(&name, "accounts"), x);
            self.dbs[da].accounts.remove(x);
        } else {
            let id = self.dbs[da].account_alloc.take();
            p.insert(
                &On::new(&name, "accounts"),
                "id, balance",
                &[format!("({id}, 0.00)")],
            );
            self.dbs[da].accounts.insert(id);
        }
        Some(p)
    }

    /// `--large-rows` rows in one transaction, in statements of up to 1000 rows: a bulk
    /// import (customers, orders, lines), a bulk `all_types` insert, a bulk update of lines, or
    /// a bulk delete. Deletes are preferred once a database holds more than `--table-cap` rows.
    fn plan_large(&mut self) -> Plan {
        let mut p = Plan::new(Kind::Large);
        let n = self.cfg.large_rows;
        let db = self.pick_db();
        let name = self.dbs[db].name.clone();
        // Weights: bulk import 35%, bulk all_types insert 15% (its rows are wide and slow),
        // bulk update 25%, bulk delete 25%.
        let mut choice = match self.rng.random_range(0..20) {
            0..7 => 0,
            7..10 => 1,
            10..15 => 2,
            _ => 3,
        };
        let m = &self.dbs[db];
        if m.total_rows() > self.cfg.table_cap {
            choice = 3;
        }
        if choice == 2 && m.lines.len() < n {
            choice = 0;
        }
        if choice == 3 && m.lines.len().max(m.all_types.len()) < n {
            choice = 0;
        }
        match choice {
            0 => {
                let nc = (n / 10).max(1);
                let no = (n * 3 / 10).max(1).min(n.saturating_sub(nc).max(1));
                let nl = n.saturating_sub(nc + no);
                let cs = self.insert_customers(&mut p, db, nc);
                let os = self.insert_orders(&mut p, db, &cs, no);
                if nl > 0 {
                    self.insert_lines(&mut p, db, &os, nl);
                }
            }
            1 => {
                let ids: Vec<i64> = (0..n)
                    .map(|_| self.dbs[db].all_types_alloc.take())
                    .collect();
                self.all_types_insert(&mut p, db, &ids, true);
            }
            2 => {
                let t = On::new(&name, "order_lines");
                let ids = self.dbs[db].lines.pick_n(&mut self.rng, n);
                for chunk in ids.chunks(CHUNK) {
                    p.update_in(&t, "qty = qty + 1, price = price + 0.01", chunk);
                }
            }
            _ => {
                let lines = self.dbs[db].lines.len() >= self.dbs[db].all_types.len();
                let (t, ids) = if lines {
                    ("order_lines", self.dbs[db].lines.pick_n(&mut self.rng, n))
                } else {
                    ("all_types", self.dbs[db].all_types.pick_n(&mut self.rng, n))
                };
                let t = On::new(&name, t);
                for chunk in ids.chunks(CHUNK) {
                    p.delete_in(&t, chunk);
                }
                for id in ids {
                    if lines {
                        self.dbs[db].remove_line(id);
                    } else {
                        self.dbs[db].all_types.remove(id);
                    }
                }
            }
        }
        p
    }

    /// One DDL statement on a `ddl_*` table, cycling through ADD COLUMN, MODIFY COLUMN,
    /// CREATE TABLE, RENAME TABLE, DROP COLUMN and DROP TABLE (falling back to one that applies).
    fn plan_ddl(&mut self) -> Plan {
        let db = self.pick_db();
        let name = self.dbs[db].name.clone();
        let mut op = self.ddl_done % 6;
        self.ddl_done += 1;
        let m = &mut self.dbs[db];
        if m.ddl.is_empty() {
            op = 2;
        }
        if op == 4
            && !m
                .ddl
                .iter()
                .any(|t| t.cols.iter().any(|c| c.name.starts_with('c')))
        {
            op = 0;
        }
        if op == 5 && m.ddl.len() <= 1 {
            op = 2;
        }
        if op == 2 && m.ddl.len() >= 4 {
            op = 5;
        }
        let sql;
        match op {
            0 => {
                let ti = self.rng.random_range(0..m.ddl.len());
                let palette = ddl_column_palette();
                let (ty, gen, nullable) = palette.choose(&mut self.rng).unwrap().clone();
                let col = format!("c{}", m.col_next);
                m.col_next += 1;
                sql = format!(
                    "ALTER TABLE {} ADD COLUMN {} {ty}",
                    tbl(&name, &m.ddl[ti].name),
                    ident(&col)
                );
                m.ddl[ti].cols.push(DdlCol {
                    name: col,
                    gen,
                    nullable,
                });
            }
            1 => {
                let ti = self.rng.random_range(0..m.ddl.len());
                let t = &mut m.ddl[ti];
                match t.cols.iter_mut().find(|c| c.name == "v") {
                    Some(DdlCol {
                        gen:
                            Gen::Text {
                                max_chars,
                                max_bytes,
                                ..
                            },
                        ..
                    }) if *max_chars < 1000 => {
                        *max_chars += 8 * self.rng.random_range(1..=8);
                        *max_bytes = *max_chars * 4;
                        sql = format!(
                            "ALTER TABLE {} MODIFY COLUMN v VARCHAR({max_chars}) NULL",
                            tbl(&name, &t.name)
                        );
                    }
                    _ => {
                        // `v` is as wide as it gets: widen the integer column instead.
                        sql = format!(
                            "ALTER TABLE {} MODIFY COLUMN n BIGINT NULL",
                            tbl(&name, &t.name)
                        );
                        if let Some(c) = t.cols.iter_mut().find(|c| c.name == "n") {
                            c.gen = values::BIGINT;
                        }
                    }
                }
            }
            2 => {
                let t = format!("ddl_{}", m.ddl_next);
                m.ddl_next += 1;
                sql = format!("CREATE TABLE {} (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(32) NULL, n INT NULL) DEFAULT CHARSET=utf8mb4", tbl(&name, &t));
                m.ddl.push(DdlTable {
                    name: t,
                    cols: vec![
                        DdlCol {
                            name: "v".into(),
                            gen: Gen::Text {
                                max_chars: 32,
                                max_bytes: 128,
                                cs: Cs::Utf8mb4,
                            },
                            nullable: true,
                        },
                        DdlCol {
                            name: "n".into(),
                            gen: values::INT,
                            nullable: true,
                        },
                    ],
                    ids: IdSet::default(),
                    alloc: Alloc::new(0, 0, self.cfg.workers),
                });
            }
            3 => {
                let ti = self.rng.random_range(0..m.ddl.len());
                let to = format!("ddl_{}", m.ddl_next);
                m.ddl_next += 1;
                sql = format!(
                    "RENAME TABLE {} TO {}",
                    tbl(&name, &m.ddl[ti].name),
                    tbl(&name, &to)
                );
                m.ddl[ti].name = to;
            }
            4 => {
                let candidates: Vec<usize> = (0..m.ddl.len())
                    .filter(|i| m.ddl[*i].cols.iter().any(|c| c.name.starts_with('c')))
                    .collect();
                let ti = *candidates.choose(&mut self.rng).unwrap();
                let cols: Vec<usize> = (0..m.ddl[ti].cols.len())
                    .filter(|i| m.ddl[ti].cols[*i].name.starts_with('c'))
                    .collect();
                let ci = *cols.choose(&mut self.rng).unwrap();
                let col = m.ddl[ti].cols.remove(ci);
                sql = format!(
                    "ALTER TABLE {} DROP COLUMN {}",
                    tbl(&name, &m.ddl[ti].name),
                    ident(&col.name)
                );
            }
            _ => {
                let ti = self.rng.random_range(0..m.ddl.len());
                let t = m.ddl.remove(ti);
                sql = format!("DROP TABLE {}", tbl(&name, &t.name));
            }
        }
        m.ddl.sort_by(|a, b| a.name.cmp(&b.name));
        let mut p = Plan::new(Kind::Ddl);
        p.ddl = Some(sql);
        p
    }
}

impl DdlTable {
    fn clone_shape(&self) -> DdlTable {
        DdlTable {
            name: self.name.clone(),
            cols: self.cols.clone(),
            ids: IdSet::default(),
            alloc: self.alloc.clone(),
        }
    }
}
