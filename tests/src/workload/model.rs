//! What the generator knows of the rows it owns, so that it can choose rows to update and
//! delete without reading them first. The model is loaded from the database when a worker
//! starts (and after a reconnect), so a run continues cleanly where an earlier one stopped.
//!
//! With several workers, each owns a disjoint part of every table: the rows whose id is
//! congruent to the worker's index modulo the number of workers (customers, users, accounts,
//! `all_types`), the orders of its customers and the lines of its orders. Only worker 0 writes
//! the `ddl_*` tables.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use rand::rngs::StdRng;
use rand::Rng;

use super::values::{self, Cs, Gen};

/// A set of ids with O(1) insert, remove and uniform random choice. Its order (and so every
/// choice drawn from it) depends only on the sequence of operations: runs are reproducible.
#[derive(Clone, Debug, Default)]
pub struct IdSet {
    v: Vec<i64>,
    pos: HashMap<i64, usize>,
}

impl IdSet {
    pub fn insert(&mut self, id: i64) {
        if self.pos.contains_key(&id) {
            return;
        }
        self.pos.insert(id, self.v.len());
        self.v.push(id);
    }

    pub fn remove(&mut self, id: i64) -> bool {
        let Some(i) = self.pos.remove(&id) else {
            return false;
        };
        self.v.swap_remove(i);
        if i < self.v.len() {
            self.pos.insert(self.v[i], i);
        }
        true
    }

    pub fn contains(&self, id: i64) -> bool {
        self.pos.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.v.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v.is_empty()
    }

    pub fn pick(&self, rng: &mut StdRng) -> Option<i64> {
        if self.v.is_empty() {
            None
        } else {
            Some(self.v[rng.random_range(0..self.v.len())])
        }
    }

    /// Up to `n` distinct ids: a run of consecutive entries from a random start.
    pub fn pick_n(&self, rng: &mut StdRng, n: usize) -> Vec<i64> {
        let len = self.v.len();
        if len == 0 {
            return Vec::new();
        }
        let n = n.min(len);
        let start = rng.random_range(0..len);
        (0..n).map(|k| self.v[(start + k) % len]).collect()
    }
}

/// Allocates fresh ids for one table: above every id the table held when loaded, and in the
/// worker's residue class, so workers never collide.
#[derive(Clone, Debug)]
pub struct Alloc {
    next: i64,
    step: i64,
}

impl Alloc {
    pub fn new(max_id: i64, worker: usize, workers: usize) -> Alloc {
        let step = workers as i64;
        let base = max_id.max(0) + 1;
        let next = base + (worker as i64 - base.rem_euclid(step)).rem_euclid(step);
        Alloc { next, step }
    }

    pub fn take(&mut self) -> i64 {
        let id = self.next;
        self.next += self.step;
        id
    }
}

/// One column of a `ddl_*` table, as the generator writes it.
#[derive(Clone, Debug)]
pub struct DdlCol {
    pub name: String,
    pub gen: Gen,
    pub nullable: bool,
}

/// A `ddl_*` table: its current shape and rows.
#[derive(Clone, Debug)]
pub struct DdlTable {
    pub name: String,
    /// Every column but `id`.
    pub cols: Vec<DdlCol>,
    pub ids: IdSet,
    pub alloc: Alloc,
}

/// Number of accounts each database starts with, and their opening balance in cents.
pub const ACCOUNTS_PER_DB: i64 = 100;
pub const OPENING_BALANCE_CENTS: i128 = 100_000;

/// The rows one worker owns in one database.
#[derive(Debug)]
pub struct DbModel {
    pub name: String,
    pub all_types: IdSet,
    pub all_types_alloc: Alloc,
    pub customers: IdSet,
    pub customer_alloc: Alloc,
    pub customer_orders: HashMap<i64, Vec<i64>>,
    pub orders: IdSet,
    pub order_alloc: Alloc,
    pub order_customer: HashMap<i64, i64>,
    pub order_lines: HashMap<i64, Vec<i64>>,
    pub lines: IdSet,
    pub line_alloc: Alloc,
    pub line_order: HashMap<i64, i64>,
    pub users: IdSet,
    /// Ids for new users and tokens for fresh e-mail addresses (`u<token>@example.com`).
    pub user_alloc: Alloc,
    pub user_email: HashMap<i64, String>,
    pub accounts: IdSet,
    pub account_alloc: Alloc,
    /// Sorted by name.
    pub ddl: Vec<DdlTable>,
    pub ddl_next: u64,
    pub col_next: u64,
}

impl DbModel {
    pub fn add_order(&mut self, order: i64, customer: i64) {
        self.orders.insert(order);
        self.order_customer.insert(order, customer);
        self.customer_orders
            .entry(customer)
            .or_default()
            .push(order);
    }

    pub fn add_line(&mut self, line: i64, order: i64) {
        self.lines.insert(line);
        self.line_order.insert(line, order);
        self.order_lines.entry(order).or_default().push(line);
    }

    /// Removes one line.
    pub fn remove_line(&mut self, line: i64) {
        self.lines.remove(line);
        if let Some(o) = self.line_order.remove(&line) {
            if let Some(v) = self.order_lines.get_mut(&o) {
                v.retain(|x| *x != line);
            }
        }
    }

    /// Removes an order and its lines; returns the lines removed.
    pub fn remove_order(&mut self, order: i64) -> Vec<i64> {
        self.orders.remove(order);
        if let Some(c) = self.order_customer.remove(&order) {
            if let Some(v) = self.customer_orders.get_mut(&c) {
                v.retain(|x| *x != order);
            }
        }
        let lines = self.order_lines.remove(&order).unwrap_or_default();
        for l in &lines {
            self.lines.remove(*l);
            self.line_order.remove(l);
        }
        lines
    }

    pub fn lines_of(&self, order: i64) -> &[i64] {
        self.order_lines
            .get(&order)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn orders_of(&self, customer: i64) -> &[i64] {
        self.customer_orders
            .get(&customer)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Rows the model holds, per table name.
    pub fn row_counts(&self) -> Vec<(String, usize)> {
        let mut v = vec![
            ("all_types".to_owned(), self.all_types.len()),
            ("customers".to_owned(), self.customers.len()),
            ("orders".to_owned(), self.orders.len()),
            ("order_lines".to_owned(), self.lines.len()),
            ("users".to_owned(), self.users.len()),
            ("accounts".to_owned(), self.accounts.len()),
        ];
        for t in &self.ddl {
            v.push((t.name.clone(), t.ids.len()));
        }
        v
    }

    pub fn total_rows(&self) -> usize {
        self.row_counts().iter().map(|(_, n)| n).sum()
    }

    /// Loads the rows worker `worker` of `workers` owns in database `db`.
    pub async fn load(conn: &mut Conn, db: &str, worker: usize, workers: usize) -> Result<DbModel> {
        let q = |t: &str| format!("{}.{}", values::ident(db), values::ident(t));
        let own = format!("MOD(id, {workers}) = {worker}");
        let max = |t: &str| format!("SELECT CAST(COALESCE(MAX(id), 0) AS SIGNED) FROM {}", q(t));
        let ctx = |what: &str| format!("loading {what} of database {db}");

        let mut m = DbModel {
            name: db.to_owned(),
            all_types: IdSet::default(),
            all_types_alloc: Alloc::new(0, worker, workers),
            customers: IdSet::default(),
            customer_alloc: Alloc::new(0, worker, workers),
            customer_orders: HashMap::new(),
            orders: IdSet::default(),
            order_alloc: Alloc::new(0, worker, workers),
            order_customer: HashMap::new(),
            order_lines: HashMap::new(),
            lines: IdSet::default(),
            line_alloc: Alloc::new(0, worker, workers),
            line_order: HashMap::new(),
            users: IdSet::default(),
            user_alloc: Alloc::new(0, worker, workers),
            user_email: HashMap::new(),
            accounts: IdSet::default(),
            account_alloc: Alloc::new(0, worker, workers),
            ddl: Vec::new(),
            ddl_next: 0,
            col_next: 0,
        };

        for (t, set) in [
            ("all_types", &mut m.all_types),
            ("customers", &mut m.customers),
            ("accounts", &mut m.accounts),
        ] {
            let ids: Vec<i64> = conn
                .query(format!("SELECT id FROM {} WHERE {own} ORDER BY id", q(t)))
                .await
                .with_context(|| ctx(t))?;
            for id in ids {
                set.insert(id);
            }
        }
        for (t, alloc) in [
            ("all_types", &mut m.all_types_alloc),
            ("customers", &mut m.customer_alloc),
            ("accounts", &mut m.account_alloc),
        ] {
            let top: i64 = conn
                .query_first(max(t))
                .await
                .with_context(|| ctx(t))?
                .unwrap_or(0);
            *alloc = Alloc::new(top, worker, workers);
        }

        // Orders and lines: every worker's, kept when their parent is this worker's.
        let mut children = async |t: &str, parent: &str| -> Result<(Vec<(i64, i64)>, i64)> {
            let rows: Vec<(i64, i64)> = conn
                .query(format!("SELECT id, {parent} FROM {} ORDER BY id", q(t)))
                .await
                .with_context(|| ctx(t))?;
            let top = rows.iter().map(|(id, _)| *id).max().unwrap_or(0);
            Ok((rows, top))
        };
        let (orders, m_order) = children("orders", "customer_id").await?;
        for (id, c) in orders {
            if m.customers.contains(c) {
                m.add_order(id, c);
            }
        }
        m.order_alloc = Alloc::new(m_order, worker, workers);
        let (lines, m_line) = children("order_lines", "order_id").await?;
        for (id, o) in lines {
            if m.orders.contains(o) {
                m.add_line(id, o);
            }
        }
        m.line_alloc = Alloc::new(m_line, worker, workers);

        let users: Vec<(i64, String)> = conn
            .query(format!(
                "SELECT id, email FROM {} WHERE {own} ORDER BY id",
                q("users")
            ))
            .await
            .with_context(|| ctx("users"))?;
        for (id, email) in users {
            m.users.insert(id);
            m.user_email.insert(id, email);
        }
        // Fresh e-mail tokens come from the same counter as user ids: above both.
        let m_user: i64 = conn
            .query_first(format!(
                "SELECT CAST(GREATEST((SELECT COALESCE(MAX(id), 0) FROM {t}), \
                 (SELECT COALESCE(MAX(CAST(SUBSTRING(email, 2, LOCATE('@', email) - 2) AS UNSIGNED)), 0) FROM {t} WHERE email LIKE 'u%@example.com')) AS SIGNED)",
                t = q("users")
            ))
            .await
            .with_context(|| ctx("users"))?
            .unwrap_or(0);
        m.user_alloc = Alloc::new(m_user, worker, workers);

        if worker == 0 {
            m.load_ddl_tables(conn, db, workers)
                .await
                .with_context(|| ctx("ddl_* tables"))?;
        }
        Ok(m)
    }

    async fn load_ddl_tables(&mut self, conn: &mut Conn, db: &str, workers: usize) -> Result<()> {
        let names: Vec<String> = conn
            .exec(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME LIKE 'ddl\\_%' ORDER BY TABLE_NAME",
                (db,),
            )
            .await?;
        for name in names {
            if let Some(n) = name
                .strip_prefix("ddl_")
                .and_then(|s| s.parse::<u64>().ok())
            {
                self.ddl_next = self.ddl_next.max(n + 1);
            }
            type ColRow = (
                String,
                String,
                String,
                String,
                Option<u64>,
                Option<u64>,
                Option<u64>,
                Option<u64>,
            );
            let cols: Vec<ColRow> = conn
                .exec(
                    "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION \
                     FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                    (db, &name),
                )
                .await?;
            let mut t = DdlTable {
                name: name.clone(),
                cols: Vec::new(),
                ids: IdSet::default(),
                alloc: Alloc::new(0, 0, workers),
            };
            for (col, data_type, column_type, nullable, len, prec, scale, dtp) in cols {
                if col == "id" {
                    continue;
                }
                if let Some(n) = col.strip_prefix('c').and_then(|s| s.parse::<u64>().ok()) {
                    self.col_next = self.col_next.max(n + 1);
                }
                let unsigned = column_type.contains("unsigned");
                let gen = match data_type.as_str() {
                    "int" if unsigned => values::INT_U,
                    "int" => values::INT,
                    "bigint" if unsigned => values::BIGINT_U,
                    "bigint" => values::BIGINT,
                    "varchar" => {
                        let n = len.unwrap_or(0) as usize;
                        Gen::Text { max_chars: n, max_bytes: n * 4, cs: Cs::Utf8mb4 }
                    }
                    "decimal" => Gen::Decimal { p: prec.unwrap_or(10) as u32, s: scale.unwrap_or(0) as u32 },
                    "datetime" => Gen::Datetime(dtp.unwrap_or(0) as u32),
                    "double" => Gen::Double,
                    "varbinary" => Gen::Bytes(len.unwrap_or(0) as usize),
                    other => bail!("table {db}.{name}: column {col} has type {other}, which the workload never creates"),
                };
                t.cols.push(DdlCol {
                    name: col,
                    gen,
                    nullable: nullable == "YES",
                });
            }
            let ids: Vec<i64> = conn
                .query(format!(
                    "SELECT id FROM {}.{} ORDER BY id",
                    values::ident(db),
                    values::ident(&name)
                ))
                .await?;
            let max = ids.iter().copied().max().unwrap_or(0);
            for id in ids {
                t.ids.insert(id);
            }
            t.alloc = Alloc::new(max, 0, workers);
            self.ddl.push(t);
        }
        Ok(())
    }
}

/// Column types `ADD COLUMN` picks from: (SQL, generator, nullable).
pub fn ddl_column_palette() -> Vec<(&'static str, Gen, bool)> {
    vec![
        ("INT NULL", values::INT, true),
        ("BIGINT UNSIGNED NULL", values::BIGINT_U, true),
        (
            "VARCHAR(40) NULL",
            Gen::Text {
                max_chars: 40,
                max_bytes: 160,
                cs: Cs::Utf8mb4,
            },
            true,
        ),
        (
            "DECIMAL(12,3) NOT NULL DEFAULT 0",
            Gen::Decimal { p: 12, s: 3 },
            false,
        ),
        ("DATETIME(6) NULL", Gen::Datetime(6), true),
        ("DOUBLE NULL", Gen::Double, true),
        ("VARBINARY(32) NULL", Gen::Bytes(32), true),
        ("INT NOT NULL DEFAULT 7", values::INT, false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn alloc_stays_in_the_worker_residue_above_max() {
        let mut a = Alloc::new(10, 2, 3);
        assert_eq!(a.take(), 11);
        assert_eq!(a.take(), 14);
        let mut b = Alloc::new(0, 0, 1);
        assert_eq!(b.take(), 1);
        assert_eq!(b.take(), 2);
        let mut c = Alloc::new(9, 0, 3);
        assert_eq!(c.take(), 12);
    }

    #[test]
    fn idset_insert_remove_pick() {
        let mut s = IdSet::default();
        for i in 1..=10 {
            s.insert(i);
        }
        assert!(s.remove(3));
        assert!(!s.remove(3));
        assert_eq!(s.len(), 9);
        assert!(!s.contains(3));
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let p = s.pick(&mut rng).unwrap();
            assert!(s.contains(p));
        }
        let n = s.pick_n(&mut rng, 20);
        assert_eq!(n.len(), 9);
    }
}
