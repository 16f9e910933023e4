//! The write set of an apply batch: the replica rows its statements change, as hashes of
//! (table, primary-key values). With `consumer.apply.connections` above 1, the
//! [`crate::writer::Writer`] lets a batch's statements run on a connection of their own while
//! the batches before it are still committing; a row that one of those batches' write sets may
//! contain is held back until their commits.
//!
//! Guarantees:
//! - two batches that change the same row (by primary key, before or after image) conflict;
//! - a table without a primary key, or with a unique key besides it, counts as a whole: two
//!   batches that change it conflict whatever rows they change. Unique values alone are not
//!   enough: `REPLACE` checks a unique index for duplicates under next-key locks, which also
//!   lock the gap before the neighbouring entry, so batches with disjoint values still block
//!   each other (measured: per-value write sets met lock waits and deadlocks in
//!   `batches_run_side_by_side_and_commit_in_source_order_where_they_conflict`);
//! - a batch marked [`WriteSet::everything`] (cascading foreign-key actions, key-range
//!   deletes) conflicts with any other that changes anything;
//! - hash collisions and the folding of text (case, trailing spaces) only add conflicts, that
//!   is waits, never remove one.
//!
//! A conflict this misses (a collation that equates keys the folding keeps apart, such as
//! accented letters) cannot reorder anything: commits stay in source order, and InnoDB's locks
//! serialise the two batches. At worst the earlier batch waits for a lock the later one holds,
//! until `consumer.apply.lock_wait_timeout`; both are rolled back, and apply redoes them one
//! batch at a time.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use continuum_schemas::Value;

use crate::sql::RowStatements;

/// The tag of table `db`.`table` in write sets (case-folded: that only adds conflicts).
pub fn table_tag(db: &str, table: &str) -> u64 {
    let mut h = DefaultHasher::new();
    db.to_lowercase().hash(&mut h);
    table.to_lowercase().hash(&mut h);
    h.finish()
}

/// What one batch changes on the replica.
#[derive(Debug, Default, Clone)]
pub struct WriteSet {
    /// Conflicts with any non-empty write set.
    everything: bool,
    /// (table, index, values) hashes of the rows changed.
    keys: HashSet<u64>,
    /// Tables with a row in `keys`.
    tables: HashSet<u64>,
    /// Tables changed as a whole (no usable key).
    whole: HashSet<u64>,
}

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        !self.everything && self.tables.is_empty() && self.whole.is_empty()
    }

    /// Keys and tables it names.
    pub fn len(&self) -> usize {
        self.keys.len() + self.whole.len()
    }

    pub fn clear(&mut self) {
        self.everything = false;
        self.keys.clear();
        self.tables.clear();
        self.whole.clear();
    }

    /// Marks the batch as conflicting with every other: it runs statements whose effects reach
    /// beyond the rows it names.
    pub fn everything(&mut self) {
        self.clear();
        self.everything = true;
    }

    /// Adds one row change of a table written by `plan`: its before and after images.
    pub fn add_row(
        &mut self,
        plan: &RowStatements,
        before: Option<&[Value]>,
        after: Option<&[Value]>,
    ) {
        self.insert(&RowKeys::of(plan, before, after));
    }

    /// Adds one row change.
    pub fn insert(&mut self, row: &RowKeys) {
        if row.whole {
            self.whole.insert(row.table);
            return;
        }
        self.tables.insert(row.table);
        self.keys.extend(row.keys.iter().flatten());
    }

    /// Whether this batch may change the row `row` changes.
    pub fn meets(&self, row: &RowKeys) -> bool {
        if self.everything {
            return true;
        }
        if self.whole.contains(&row.table) {
            return true;
        }
        if row.whole {
            return self.tables.contains(&row.table);
        }
        row.keys.iter().flatten().any(|k| self.keys.contains(k))
    }

    /// Whether the two batches may change a common row.
    pub fn conflicts(&self, other: &WriteSet) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        if self.everything || other.everything {
            return true;
        }
        let meets = |a: &HashSet<u64>, b: &HashSet<u64>| {
            let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
            small.iter().any(|k| large.contains(k))
        };
        meets(&self.keys, &other.keys)
            || meets(&self.whole, &other.whole)
            || meets(&self.whole, &other.tables)
            || meets(&self.tables, &other.whole)
    }
}

/// Which rows of the batch being built wait for the commits in flight (see
/// [`crate::writer::Writer::route`]).
#[derive(Debug, Default)]
pub struct Holds {
    /// The rows held back: a later change of one of them is held too.
    rows: WriteSet,
    /// A row whose effects reach beyond it (a cascading foreign-key action) was held back:
    /// every later row is held too.
    all: bool,
}

impl Holds {
    /// Whether `row` must be held back, and if so records it. `any_in_flight`: a commit of
    /// another batch is in flight; `meets_in_flight`: one of those batches may touch the row.
    /// A cascading row is held while anything is in flight or held: its action may touch
    /// those rows.
    pub fn hold(
        &mut self,
        row: &RowKeys,
        cascading: bool,
        any_in_flight: bool,
        meets_in_flight: bool,
    ) -> bool {
        let held_any = self.all || !self.rows.is_empty();
        let hold = self.all
            || meets_in_flight
            || self.rows.meets(row)
            || (cascading && (any_in_flight || held_any));
        if hold {
            self.all |= cascading;
            self.rows.insert(row);
        }
        hold
    }

    /// The held rows were sent, after the commits before them.
    pub fn clear(&mut self) {
        self.rows.clear();
        self.all = false;
    }
}

/// What one row change touches: its table, and its primary-key values before and after (or the
/// whole table, without a usable key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowKeys {
    table: u64,
    whole: bool,
    keys: [Option<u64>; 2],
}

impl RowKeys {
    pub fn of(plan: &RowStatements, before: Option<&[Value]>, after: Option<&[Value]>) -> Self {
        let table = plan.table_tag;
        if plan.keyless || plan.unique_keys {
            return RowKeys {
                table,
                whole: true,
                keys: [None, None],
            };
        }
        let key = |image: Option<&[Value]>| {
            image.map(|image| key_hash(table, plan.key.iter().map(|k| &image[k.0])))
        };
        let (b, a) = (key(before), key(after));
        RowKeys {
            table,
            whole: false,
            keys: [b, a.filter(|a| Some(*a) != b)],
        }
    }
}

fn key_hash<'a>(table: u64, values: impl Iterator<Item = &'a Value>) -> u64 {
    let mut h = DefaultHasher::new();
    table.hash(&mut h);
    for v in values {
        hash_value(v, &mut h);
    }
    h.finish()
}

/// Hashes a key value so that values MariaDB may take for equal hash equal: text is folded to
/// lower case without trailing spaces (most collations ignore both), numbers by value.
fn hash_value(v: &Value, h: &mut DefaultHasher) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Int(i) => (1u8, *i as i128).hash(h),
        Value::UInt(u) => (1u8, *u as i128).hash(h),
        Value::Decimal(d) => (2u8, d.trim_start_matches('+')).hash(h),
        Value::Float(f) => (3u8, (*f as f64).to_bits()).hash(h),
        Value::Double(f) => (3u8, f.to_bits()).hash(h),
        Value::Date(d) => (4u8, d).hash(h),
        Value::DateTime(d) => (5u8, d).hash(h),
        Value::Timestamp(t) => (6u8, t).hash(h),
        Value::Time(t) => (7u8, t).hash(h),
        Value::Text(s) => {
            8u8.hash(h);
            for c in s.trim_end_matches(' ').chars().flat_map(char::to_lowercase) {
                c.hash(h);
            }
        }
        Value::Bytes(b) => (9u8, b).hash(h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use continuum_schemas::types::{IntWidth, TextKind};
    use continuum_schemas::ColumnType;

    /// `db.t (id INT PRIMARY KEY, code VARCHAR, v INT)`, or without the key.
    fn plan(table: &str, keyed: bool) -> RowStatements {
        let int = ColumnType::Integer {
            width: IntWidth::Int,
            unsigned: false,
        };
        let text = ColumnType::Text {
            kind: TextKind::VarChar,
        };
        let columns = vec![
            (0, int.clone(), "id".to_string()),
            (1, text, "code".to_string()),
            (2, int.clone(), "v".to_string()),
        ];
        let key = if keyed {
            vec![(0, int, "id".to_string())]
        } else {
            Vec::new()
        };
        RowStatements::new(1, "db", table, columns, key)
    }

    fn row(id: i64, code: &str, v: i64) -> Vec<Value> {
        let code = if code.is_empty() {
            Value::Null
        } else {
            Value::Text(code.into())
        };
        vec![Value::Int(id), code, Value::Int(v)]
    }

    /// Row changes: (before image, after image).
    type Changes = [(Option<Vec<Value>>, Option<Vec<Value>>)];

    fn set(plan: &RowStatements, changes: &Changes) -> WriteSet {
        let mut w = WriteSet::default();
        for (b, a) in changes {
            w.add_row(plan, b.as_deref(), a.as_deref());
        }
        w
    }

    #[test]
    fn disjoint_keys_do_not_conflict_and_a_shared_key_does() {
        let p = plan("t", true);
        let a = set(
            &p,
            &[(None, Some(row(1, "a", 0))), (None, Some(row(2, "b", 0)))],
        );
        let b = set(&p, &[(Some(row(3, "c", 0)), Some(row(3, "c", 1)))]);
        assert!(!a.conflicts(&b) && !b.conflicts(&a));
        let c = set(&p, &[(Some(row(2, "b", 0)), None)]);
        assert!(a.conflicts(&c) && c.conflicts(&a), "row 2 in both");
    }

    #[test]
    fn the_same_key_in_another_table_does_not_conflict() {
        let a = set(&plan("t", true), &[(None, Some(row(1, "a", 0)))]);
        let b = set(&plan("u", true), &[(None, Some(row(1, "a", 0)))]);
        assert!(!a.conflicts(&b));
    }

    #[test]
    fn a_key_conflicts_in_either_image_and_text_keys_fold() {
        let p = plan("t", true);
        // Row 1's key moves to 10; a later batch writes row 10.
        let a = set(&p, &[(Some(row(1, "a", 0)), Some(row(10, "a", 0)))]);
        assert!(a.conflicts(&set(&p, &[(None, Some(row(10, "b", 0)))])));
        assert!(a.conflicts(&set(&p, &[(Some(row(1, "c", 0)), None)])));
        // A text key: 'X  ' and 'x' are equal in a _ci collation with PAD SPACE.
        let text = RowStatements::new(
            1,
            "db",
            "s",
            vec![(
                1,
                ColumnType::Text {
                    kind: TextKind::VarChar,
                },
                "code".into(),
            )],
            vec![(
                1,
                ColumnType::Text {
                    kind: TextKind::VarChar,
                },
                "code".into(),
            )],
        );
        let x = set(&text, &[(None, Some(row(1, "x", 0)))]);
        assert!(x.conflicts(&set(&text, &[(None, Some(row(2, "X  ", 0)))])));
        assert!(!x.conflicts(&set(&text, &[(None, Some(row(3, "y", 0)))])));
    }

    #[test]
    fn a_table_without_key_or_with_a_unique_key_conflicts_with_any_change_of_it() {
        let keyless = plan("t", false);
        let keyed = plan("t", true);
        let a = set(&keyless, &[(None, Some(row(1, "a", 0)))]);
        let b = set(&keyed, &[(None, Some(row(9, "z", 0)))]);
        assert!(a.conflicts(&b) && b.conflicts(&a));
        let other = set(&plan("u", true), &[(None, Some(row(1, "a", 0)))]);
        assert!(!a.conflicts(&other));
        let mut unique = plan("t", true);
        unique.unique_keys = true;
        let u = set(&unique, &[(None, Some(row(7, "q", 0)))]);
        assert!(
            u.conflicts(&b) && b.conflicts(&u),
            "a unique key besides the primary key"
        );
    }

    #[test]
    fn everything_conflicts_with_any_change_but_not_with_nothing() {
        let p = plan("t", true);
        let mut all = WriteSet::default();
        all.everything();
        let b = set(&p, &[(None, Some(row(1, "a", 0)))]);
        assert!(all.conflicts(&b) && b.conflicts(&all));
        assert!(!all.conflicts(&WriteSet::default()));
        let mut cleared = b.clone();
        cleared.clear();
        assert!(cleared.is_empty() && !cleared.conflicts(&all));
    }

    #[test]
    fn a_row_meets_a_set_holding_its_key_or_its_table_whole() {
        let p = plan("t", true);
        let a = set(&p, &[(Some(row(1, "a", 0)), Some(row(2, "a", 0)))]);
        let row_keys = |id, keyed| {
            let plan = plan("t", keyed);
            RowKeys::of(&plan, None, Some(&row(id, "z", 9)))
        };
        assert!(a.meets(&row_keys(1, true)) && a.meets(&row_keys(2, true)));
        assert!(!a.meets(&row_keys(3, true)));
        assert!(
            a.meets(&row_keys(3, false)),
            "the table as a whole meets any of its rows"
        );
        let other = RowKeys::of(&plan("u", true), None, Some(&row(1, "a", 0)));
        assert!(!a.meets(&other));
        let mut all = WriteSet::default();
        all.everything();
        assert!(all.meets(&other));
    }

    /// The keys of a change of row `id` of the keyed table `t`.
    fn keys_of_t(id: i64) -> RowKeys {
        RowKeys::of(&plan("t", true), None, Some(&row(id, "a", 0)))
    }

    #[test]
    fn held_rows_keep_later_changes_of_the_same_row_behind_them() {
        let k = keys_of_t;
        let mut h = Holds::default();
        assert!(
            !h.hold(&k(1), false, true, false),
            "no batch in flight touches row 1"
        );
        assert!(
            h.hold(&k(2), false, true, true),
            "a batch in flight touches row 2"
        );
        // The commit in flight has finished: row 2's next change still follows the first.
        assert!(h.hold(&k(2), false, false, false));
        assert!(!h.hold(&k(3), false, false, false));
        h.clear();
        assert!(
            !h.hold(&k(2), false, false, false),
            "sent: nothing is held any more"
        );
    }

    #[test]
    fn a_cascading_row_follows_held_rows_and_holds_every_row_after_it() {
        let k = keys_of_t;
        let mut h = Holds::default();
        assert!(h.hold(&k(7), false, true, true));
        // Nothing is in flight any more, but row 7 is held: a cascade may delete it, so it
        // must run after it.
        assert!(h.hold(&k(8), true, false, false));
        assert!(
            h.hold(&k(9), false, false, false),
            "everything after a held cascade waits"
        );
        let mut free = Holds::default();
        assert!(
            !free.hold(&k(8), true, false, false),
            "nothing in flight or held"
        );
        assert!(
            free.hold(&k(8), true, true, false),
            "a commit in flight, whatever it touches"
        );
    }

    #[test]
    fn numbers_hash_by_value_whatever_their_variant() {
        let p = plan("t", true);
        let mut a = WriteSet::default();
        a.add_row(
            &p,
            None,
            Some(&[Value::UInt(7), Value::Null, Value::Int(0)]),
        );
        let b = set(&p, &[(None, Some(row(7, "", 1)))]);
        assert!(a.conflicts(&b));
    }
}
