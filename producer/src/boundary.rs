//! Where the binlog reader stands between transactions, in binlog coordinates, and whether it
//! stands at a given transaction boundary: the place where a chunk of an incremental snapshot,
//! read at those coordinates, goes into the stream (see `incremental`).
//!
//! The reader keeps a [`Boundary`]: the end of the last transaction it has handled
//! (`done_end`), and how far it has read the binlog with no transaction after that one
//! (`reached`). Every transaction that ends at or before `reached` has been handled, and none
//! that ends after `done_end`. So for a transaction boundary `p` (the end of some transaction, as
//! `binlog_snapshot_file`/`binlog_snapshot_position` give it), [`Boundary::locate`] answers:
//! - [`Place::At`]: `done_end <= p <= reached`: the transactions before `p` are handled and
//!   none after it;
//! - [`Place::Before`]: `p > reached`: transactions up to `p` may still be on their way;
//! - [`Place::Past`]: `p < done_end`: a transaction that ends after `p` was handled already.
//!
//! Binlog files are ordered by the number after their last dot (`sf-bin.000012`), which the
//! server increments at each rotation; a position is ordered by file, then offset.
//!
//! Pure: no I/O.

use std::cmp::Ordering;

use continuum_schemas::BinlogPosition;

/// Orders two binlog coordinates: by the file's sequence number, then the offset. Files of
/// another base name (a renamed binlog) compare by name.
pub fn compare(a: &BinlogPosition, b: &BinlogPosition) -> Ordering {
    order((&a.file, a.pos), (&b.file, b.pos))
}

/// [`compare`] of coordinates given as file and offset.
fn order((a_file, a_pos): (&str, u64), (b_file, b_pos): (&str, u64)) -> Ordering {
    fn seq(f: &str) -> Option<u64> {
        f.rsplit_once('.')?.1.parse().ok()
    }
    fn base(f: &str) -> &str {
        f.rsplit_once('.').map_or(f, |(b, _)| b)
    }
    let files = match (seq(a_file), seq(b_file)) {
        (Some(x), Some(y)) if base(a_file) == base(b_file) => x.cmp(&y),
        _ => a_file.cmp(b_file),
    };
    files.then(a_pos.cmp(&b_pos))
}

/// Sets `slot` to `file`:`pos`, keeping its file name's allocation when the file is the same
/// (it is called for every transaction).
fn put(slot: &mut Option<BinlogPosition>, file: &str, pos: u64) {
    match slot {
        Some(p) if p.file == file => p.pos = pos,
        _ => *slot = Some(BinlogPosition::new(file, pos)),
    }
}

/// Where a transaction boundary lies from the reader's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The reader stands at it.
    At,
    /// The reader has not reached it yet.
    Before,
    /// The reader is past it.
    Past,
}

/// The reader's place between transactions (see the module note).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Boundary {
    /// The end of the last transaction handled; `None` before the first one of the session
    /// (every transaction before the session's start position was handled by earlier ones).
    pub done_end: Option<BinlogPosition>,
    /// How far the binlog is read with no transaction after `done_end`; `None` before the
    /// first event.
    pub reached: Option<BinlogPosition>,
}

impl Boundary {
    /// A transaction ended at `file`:`end`.
    pub fn committed(&mut self, file: &str, end: u64) {
        put(&mut self.done_end, file, end);
        put(&mut self.reached, file, end);
    }

    /// The binlog is read up to `file`:`pos` with no transaction in between (a transaction's
    /// first event starts there, or an event outside any transaction ends there).
    pub fn read_to(&mut self, file: &str, pos: u64) {
        let further = self
            .reached
            .as_ref()
            .is_none_or(|r| order((file, pos), (&r.file, r.pos)) == Ordering::Greater);
        if further {
            put(&mut self.reached, file, pos);
        }
    }

    /// Where the transaction boundary `p` lies from here.
    pub fn locate(&self, p: &BinlogPosition) -> Place {
        if let Some(d) = &self.done_end {
            match compare(p, d) {
                Ordering::Less => return Place::Past,
                Ordering::Equal => return Place::At,
                Ordering::Greater => {}
            }
        }
        match &self.reached {
            Some(r) if compare(p, r) != Ordering::Greater => Place::At,
            _ => Place::Before,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(file: &str, pos: u64) -> BinlogPosition {
        BinlogPosition::new(file, pos)
    }

    #[test]
    fn files_order_by_their_sequence_number_not_their_text() {
        assert_eq!(
            compare(&at("b.999999", 9), &at("b.1000000", 4)),
            Ordering::Less
        );
        assert_eq!(
            compare(&at("b.000002", 4), &at("b.000001", 900)),
            Ordering::Greater
        );
        assert_eq!(
            compare(&at("b.000002", 4), &at("b.000002", 4)),
            Ordering::Equal
        );
        assert_eq!(
            compare(&at("b.000002", 5), &at("b.000002", 40)),
            Ordering::Less
        );
    }

    #[test]
    fn a_boundary_is_located_against_the_last_transaction_and_what_was_read_after_it() {
        let mut b = Boundary::default();
        // Nothing read yet: everything is ahead.
        assert_eq!(b.locate(&at("b.000001", 400)), Place::Before);
        // The first transaction of the session ends at 400.
        b.committed("b.000001", 400);
        assert_eq!(b.locate(&at("b.000001", 400)), Place::At);
        assert_eq!(b.locate(&at("b.000001", 300)), Place::Past);
        assert_eq!(b.locate(&at("b.000001", 500)), Place::Before);
        // A binlog checkpoint event after it, then the next transaction's GTID event at 560: no
        // transaction ends between 400 and 560.
        b.read_to("b.000001", 520);
        b.read_to("b.000001", 560);
        assert_eq!(b.locate(&at("b.000001", 400)), Place::At);
        assert_eq!(b.locate(&at("b.000001", 560)), Place::At);
        assert_eq!(b.locate(&at("b.000001", 561)), Place::Before);
        // That transaction ends at 900: 400 is behind now.
        b.committed("b.000001", 900);
        assert_eq!(b.locate(&at("b.000001", 400)), Place::Past);
        assert_eq!(b.locate(&at("b.000001", 900)), Place::At);
        // A rotation: the old file's end and the new file's start are the same boundary.
        b.read_to("b.000002", 4);
        b.read_to("b.000002", 380);
        assert_eq!(b.locate(&at("b.000001", 900)), Place::At);
        assert_eq!(b.locate(&at("b.000002", 380)), Place::At);
        // Reading never moves `reached` back (a fake ROTATE names the file's start).
        b.read_to("b.000002", 4);
        assert_eq!(b.locate(&at("b.000002", 380)), Place::At);
    }

    #[test]
    fn before_the_first_transaction_of_a_session_only_what_was_read_counts() {
        let mut b = Boundary::default();
        b.read_to("b.000007", 4);
        b.read_to("b.000007", 8_000);
        assert_eq!(b.locate(&at("b.000007", 7_990)), Place::At);
        assert_eq!(b.locate(&at("b.000007", 8_001)), Place::Before);
    }
}
