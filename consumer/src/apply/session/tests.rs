//! The apply state machine's transitions, without a server: records go in, the actions that
//! come out are carried out by a fake executor that commits whatever it is asked to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use continuum_common::config::DdlPolicy;
use continuum_schemas::{
    BinlogPosition, ChangeEvent, Gtid, GtidPosition, Heartbeat, Op, SchemaChange, SnapshotMarker,
    SnapshotPhase, SourceInfo, StreamPosition, StreamRecord, TableSchema, TxPlace, Value,
};

use super::*;
use crate::checkpoint::Checkpoint;
use crate::reader::Incoming;

fn table() -> Arc<TableSchema> {
    Arc::new(TableSchema::parse("d", "t", &["id bigint"], &["id"]).unwrap())
}

fn pos(s: &str) -> GtidPosition {
    s.parse().unwrap()
}

fn source(seq: u64) -> SourceInfo {
    SourceInfo {
        server_id: 1,
        gtid: Some(Gtid::new(1, 1, seq)),
        gtid_position: pos(&format!("1-1-{seq}")),
        resume_position: pos(&format!("1-1-{}", seq - 1)),
        binlog: BinlogPosition::new("b.000001", 4),
        commit_ts_ms: 1_000 + seq as i64,
        snapshot_id: None,
    }
}

/// Record `record` at `offset`, at the place its source info gives.
fn incoming(offset: i64, record: StreamRecord) -> Incoming {
    Incoming {
        offset,
        timestamp_ms: Some(offset),
        size: 10,
        pos: record.position(),
        record,
    }
}

/// Event `index` of transaction `1-1-seq`, a row insert of key `id`.
fn row(offset: i64, seq: u64, index: u64, last: bool, id: i64) -> Incoming {
    incoming(
        offset,
        StreamRecord::Change(ChangeEvent {
            op: Op::Insert,
            table: table(),
            before: None,
            after: Some(vec![Value::Int(id)]),
            source: source(seq),
            tx: Some(TxPlace { index, last }),
        }),
    )
}

fn ddl(offset: i64, seq: u64, index: u64, last: bool) -> Incoming {
    incoming(
        offset,
        StreamRecord::SchemaChange(SchemaChange {
            database: "d".into(),
            ddl: "ALTER TABLE t ADD COLUMN c INT".into(),
            source: source(seq),
            tx: TxPlace { index, last },
        }),
    )
}

fn heartbeat(offset: i64, at: &str) -> Incoming {
    incoming(
        offset,
        StreamRecord::Heartbeat(Heartbeat {
            server_id: 1,
            position: pos(at),
            ts_ms: 5_000,
        }),
    )
}

fn marker(offset: i64, id: &str, phase: SnapshotPhase, at: &str) -> Incoming {
    incoming(
        offset,
        StreamRecord::Snapshot(SnapshotMarker {
            snapshot_id: id.into(),
            phase,
            server_id: 1,
            position: pos(at),
            tables: vec!["d.t".into()],
            ts_ms: 7_000,
        }),
    )
}

fn snapshot_row(offset: i64, id: &str, at: &str, key: i64) -> Incoming {
    let mut inc = row(offset, 2, 0, true, key);
    inc.pos = StreamPosition::Snapshot {
        id: id.into(),
        position: pos(at),
    };
    if let StreamRecord::Change(ev) = &mut inc.record {
        ev.op = Op::Read;
    }
    inc
}

const BIG: Limits = Limits {
    rows: 1_000,
    transactions: 1_000,
    bytes: 1 << 20,
    wait: Duration::from_secs(3600),
};

fn session_at(offset: i64, at: &str, limits: Limits) -> Session {
    let mut ck = Checkpoint::new("sf.cdc", 0, "eu", offset);
    ck.gtid_position = pos(at);
    session_from(ck, limits)
}

/// A session from checkpoint `ck`, with default directives and `ddl = apply`.
fn session_from(ck: Checkpoint, limits: Limits) -> Session {
    Session::new(ck, Directives::default(), limits, DdlPolicy::Apply, None)
}

/// Limits that commit after every transaction.
fn one_per_commit() -> Limits {
    Limits {
        transactions: 1,
        ..BIG
    }
}

/// What the fake executor saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Did {
    /// A row of key `id` buffered (`missing`: columns may be left out).
    Row {
        offset: i64,
        missing: bool,
        diagnose: bool,
    },
    /// A commit: next offset and GTID position of its checkpoint, rows in it.
    Commit {
        next: i64,
        at: String,
        rows: u64,
    },
    Rollback,
    Ddl {
        offset: i64,
        policy: DdlPolicy,
    },
    Empty(String),
    /// A chunk's key range cleaned, keeping these keys.
    Clean {
        offset: i64,
        keep: Vec<i64>,
    },
    End(String),
    Fail(String),
}

/// The session stopped apply with an error saying `needle`.
#[track_caller]
fn assert_fails_with(did: &[Did], needle: &str) {
    assert!(
        matches!(did.last(), Some(Did::Fail(e)) if e.contains(needle)),
        "{did:?}"
    );
}

/// A row buffered whole, not diagnosed.
fn buffered(offset: i64) -> Did {
    Did::Row {
        offset,
        missing: false,
        diagnose: false,
    }
}

fn committed(next: i64, at: &str, rows: u64) -> Did {
    Did::Commit {
        next,
        at: at.into(),
        rows,
    }
}

/// A schema change run under `ddl = apply`.
fn ran_ddl(offset: i64) -> Did {
    Did::Ddl {
        offset,
        policy: DdlPolicy::Apply,
    }
}

/// Feeds `incs` to the session like the executor does, carrying out every action; stops at
/// the first end or failure.
fn drive(s: &mut Session, incs: &[Incoming]) -> Vec<Did> {
    let mut out = Vec::new();
    let now = Instant::now();
    for inc in incs {
        let actions = match s.on_record(inc, now) {
            Ok(a) => a,
            Err(e) => s.on_record_error(e),
        };
        if carry_out(s, inc.offset, actions, &mut out) {
            return out;
        }
        let actions = s.record_done(inc, now);
        if carry_out(s, inc.offset, actions, &mut out) {
            return out;
        }
    }
    out
}

/// Carries out `actions`; true if the session ended.
fn carry_out(s: &mut Session, offset: i64, actions: Vec<Action>, out: &mut Vec<Did>) -> bool {
    for a in actions {
        match a {
            Action::Row {
                allow_missing,
                diagnose,
            } => out.push(Did::Row {
                offset,
                missing: allow_missing,
                diagnose,
            }),
            Action::Commit(c) => {
                // As the executor: nothing to do if the checkpoint did not move and no row waits.
                let rows_waiting = c.stats.ops.total() > 0;
                if c.checkpoint != *s.checkpoint() || rows_waiting {
                    out.push(Did::Commit {
                        next: c.checkpoint.next_offset,
                        at: c.checkpoint.gtid_position.to_string(),
                        rows: c.stats.ops.total(),
                    });
                    s.committed(&c);
                }
            }
            Action::Rollback => out.push(Did::Rollback),
            Action::SchemaChange { at, ddl } => out.push(Did::Ddl {
                offset: at.offset,
                policy: ddl,
            }),
            Action::CleanRange { keep, .. } => out.push(Did::Clean {
                offset,
                keep: keep
                    .iter()
                    .map(|k| match k.as_slice() {
                        [Value::Int(i)] => *i,
                        other => panic!("a test key is one integer, not {other:?}"),
                    })
                    .collect(),
            }),
            Action::EmptyTables { tables, .. } => {
                for (d, t) in tables {
                    out.push(Did::Empty(format!("{d}.{t}")));
                }
            }
            Action::End(e) => {
                out.push(Did::End(format!("{e:?}")));
                return true;
            }
            Action::Fail(e) => {
                out.push(Did::Fail(e.to_string()));
                return true;
            }
        }
    }
    false
}

fn commits(did: &[Did]) -> Vec<(i64, String)> {
    did.iter()
        .filter_map(|d| match d {
            Did::Commit { next, at, .. } => Some((*next, at.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_transaction_commits_only_whole_and_the_checkpoint_names_its_end() {
    let mut s = session_at(0, "1-1-1", BIG);
    let did = drive(
        &mut s,
        &[
            row(0, 2, 0, false, 1),
            row(1, 2, 1, false, 2),
            row(2, 2, 2, true, 3),
        ],
    );
    assert_eq!(
        did.len(),
        3,
        "three rows, no commit inside the transaction: {did:?}"
    );
    // A signal at the boundary commits through the transaction.
    let mut out = Vec::new();
    let ended = {
        let a = s.on_signal();
        carry_out(&mut s, -1, a, &mut out)
    };
    assert!(ended);
    assert_eq!(commits(&out), [(3, "1-1-2".to_owned())]);
}

#[test]
fn a_signal_inside_a_transaction_rolls_back_and_keeps_the_checkpoint() {
    let mut s = session_at(0, "1-1-1", BIG);
    drive(&mut s, &[row(0, 2, 0, false, 1)]);
    let mut out = Vec::new();
    {
        let a = s.on_signal();
        carry_out(&mut s, -1, a, &mut out)
    };
    assert_eq!(out[0], Did::Rollback);
    assert!(
        matches!(&out[1], Did::End(e) if e.contains("Signal { offset: 0 }")),
        "{out:?}"
    );
    assert_eq!(s.checkpoint().next_offset, 0);
}

#[test]
fn a_transaction_split_across_a_restart_is_applied_whole_by_the_next_session() {
    // Session 1 sees events 0 and 1 of 1-1-2, then stops (a crash, or a signal): nothing of
    // the transaction is committed.
    let mut s1 = session_at(0, "1-1-1", BIG);
    let did = drive(&mut s1, &[row(0, 2, 0, false, 1), row(1, 2, 1, false, 2)]);
    assert!(commits(&did).is_empty());
    assert_eq!(s1.checkpoint().next_offset, 0);
    // Session 2 starts from the committed checkpoint: all three events, one commit.
    let mut s2 = session_from(s1.checkpoint().clone(), one_per_commit());
    let did = drive(
        &mut s2,
        &[
            row(0, 2, 0, false, 1),
            row(1, 2, 1, false, 2),
            row(2, 2, 2, true, 3),
        ],
    );
    assert_eq!(
        did.iter().filter(|d| matches!(d, Did::Row { .. })).count(),
        3
    );
    assert_eq!(commits(&did), [(3, "1-1-2".to_owned())]);
}

#[test]
fn a_transaction_already_applied_is_skipped_but_the_checkpoint_moves_past_it() {
    // The checkpoint's position holds 1-1-2 (another cluster's copy was applied up to it).
    let mut s = session_at(
        0,
        "1-1-2",
        Limits {
            transactions: 1,
            rows: 1,
            ..BIG
        },
    );
    let did = drive(
        &mut s,
        &[
            row(0, 2, 0, false, 1),
            row(1, 2, 1, true, 2),
            row(2, 3, 0, true, 3),
        ],
    );
    let rows: Vec<i64> = did
        .iter()
        .filter_map(|d| match d {
            Did::Row { offset, .. } => Some(*offset),
            _ => None,
        })
        .collect();
    assert_eq!(
        rows,
        [2],
        "only the new transaction's row is applied: {did:?}"
    );
    assert_eq!(s.checkpoint().next_offset, 3);
    assert_eq!(s.checkpoint().gtid_position.to_string(), "1-1-3");
}

#[test]
fn a_duplicate_gtid_later_in_the_topic_is_skipped() {
    let mut s = session_at(
        0,
        "1-1-1",
        Limits {
            transactions: 1,
            ..BIG
        },
    );
    let did = drive(&mut s, &[row(0, 2, 0, true, 1), row(1, 2, 0, true, 1)]);
    let rows = did.iter().filter(|d| matches!(d, Did::Row { .. })).count();
    assert_eq!(rows, 1, "the second copy of 1-1-2 is skipped: {did:?}");
    let mut out = Vec::new();
    let a = s.on_signal();
    carry_out(&mut s, -1, a, &mut out);
    assert_eq!(
        commits(&out),
        [(2, "1-1-2".to_owned())],
        "the checkpoint passes the copy"
    );
}

#[test]
fn a_gap_in_a_transactions_indexes_stops_apply_at_the_record() {
    let mut s = session_at(0, "1-1-1", BIG);
    let did = drive(&mut s, &[row(0, 2, 0, false, 1), row(1, 2, 2, true, 2)]);
    // The first event was buffered, so the session rolls back and redoes up to the
    // transaction's start, then fails there.
    assert_eq!(did[1], Did::Rollback, "{did:?}");
    match &did[2] {
        Did::End(e) => assert!(
            e.contains("stop_before: Some(0)") && e.contains("expects event 1"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_transaction_met_in_the_middle_that_the_position_lacks_stops_apply() {
    let mut s = session_at(5, "1-1-1", BIG);
    let did = drive(&mut s, &[row(5, 2, 1, true, 1)]);
    assert_fails_with(&did, "whose earlier events this apply never saw");
}

#[test]
fn a_schema_change_commits_the_batch_before_it_runs_and_commits_past_it() {
    let mut s = session_at(0, "1-1-1", BIG);
    let did = drive(
        &mut s,
        &[
            row(0, 2, 0, true, 1),
            ddl(1, 3, 0, true),
            row(2, 4, 0, true, 2),
        ],
    );
    assert_eq!(
        did,
        [
            buffered(0),
            committed(1, "1-1-2", 1),
            ran_ddl(1),
            committed(2, "1-1-3", 0),
            buffered(2),
        ]
    );
}

#[test]
fn a_schema_change_that_fails_leaves_the_checkpoint_before_it() {
    let mut s = session_at(0, "1-1-1", BIG);
    let now = Instant::now();
    let mut out = Vec::new();
    let inc = ddl(0, 2, 0, true);
    let actions = s.on_record(&inc, now).unwrap();
    carry_out(&mut s, 0, actions, &mut out);
    // The executor could not run it.
    let e = ApplyError::Ddl {
        at: Box::default(),
        target: "eu".into(),
        ddl: "ALTER ...".into(),
        reason: "refused".into(),
    };
    let actions = s.on_record_error(e);
    carry_out(&mut s, 0, actions, &mut out);
    assert_eq!(s.checkpoint().next_offset, 0, "{out:?}");
    assert!(matches!(out.last(), Some(Did::Fail(_))));
}

#[test]
fn ddl_stop_commits_what_came_before_and_stops_at_the_schema_change() {
    let mut ck = Checkpoint::new("sf.cdc", 0, "eu", 0);
    ck.gtid_position = pos("1-1-1");
    let mut s = Session::new(ck, Directives::default(), BIG, DdlPolicy::Stop, None);
    let did = drive(&mut s, &[row(0, 2, 0, true, 1), ddl(1, 3, 0, true)]);
    assert_eq!(commits(&did), [(1, "1-1-2".to_owned())]);
    assert_fails_with(&did, "ALTER TABLE t");
}

#[test]
fn a_snapshot_empties_its_tables_loads_rows_and_takes_its_position_at_the_end() {
    let mut s = session_at(0, "", Limits { rows: 2, ..BIG });
    let did = drive(
        &mut s,
        &[
            marker(0, "s1", SnapshotPhase::Start, "1-1-9"),
            snapshot_row(1, "s1", "1-1-9", 1),
            snapshot_row(2, "s1", "1-1-9", 2),
            snapshot_row(3, "s1", "1-1-9", 3),
            marker(4, "s1", SnapshotPhase::End, "1-1-9"),
        ],
    );
    assert_eq!(
        did,
        [
            Did::Empty("d.t".into()),
            Did::Commit {
                next: 1,
                at: "".into(),
                rows: 0
            },
            buffered(1),
            buffered(2),
            Did::Commit {
                next: 3,
                at: "".into(),
                rows: 2
            },
            buffered(3),
            committed(5, "1-1-9", 1),
        ]
    );
    assert!(s.checkpoint().snapshot.is_none());
}

#[test]
fn a_snapshot_row_of_a_snapshot_not_loading_here_stops_apply() {
    let mut s = session_at(0, "1-1-1", BIG);
    let did = drive(&mut s, &[snapshot_row(0, "s9", "1-1-9", 1)]);
    assert_fails_with(&did, "not loading a snapshot");
}

#[test]
fn a_snapshot_start_inside_an_open_transaction_discards_the_abandoned_transaction() {
    let mut s = session_at(0, "1-1-1", BIG);
    let did = drive(
        &mut s,
        &[
            row(0, 2, 0, false, 1),
            marker(1, "s1", SnapshotPhase::Start, "1-1-9"),
        ],
    );
    assert_eq!(did[1], Did::Rollback, "{did:?}");
    assert!(
        matches!(&did[2], Did::End(e) if e.contains("discard: [(0, 1)]")),
        "{did:?}"
    );
    assert_eq!(s.found_discards(), [(0, 1)]);
    // The redo passes over the abandoned transaction and loads the snapshot.
    let mut redo = Session::new(
        s.checkpoint().clone(),
        Directives {
            discard: vec![(0, 1)],
            ..Default::default()
        },
        BIG,
        DdlPolicy::Apply,
        None,
    );
    let did = drive(
        &mut redo,
        &[
            row(0, 2, 0, false, 1),
            marker(1, "s1", SnapshotPhase::Start, "1-1-9"),
        ],
    );
    assert_eq!(did, [Did::Empty("d.t".into()), committed(2, "1-1-1", 0)]);
}

#[test]
fn replay_re_applies_held_transactions_until_its_end_position_then_skips_again() {
    let mut ck = Checkpoint::new("sf.cdc", 0, "eu", 0);
    ck.gtid_position = pos("1-1-3");
    ck.replay_until = Some(pos("1-1-2"));
    let mut s = session_from(ck, one_per_commit());
    let did = drive(
        &mut s,
        &[
            row(0, 1, 0, true, 1),
            row(1, 2, 0, true, 2),
            row(2, 3, 0, true, 3),
        ],
    );
    let rows: Vec<(i64, bool)> = did
        .iter()
        .filter_map(|d| match d {
            Did::Row {
                offset, missing, ..
            } => Some((*offset, *missing)),
            _ => None,
        })
        .collect();
    // 1-1-1 and 1-1-2 are re-applied as history (columns a later change dropped may be
    // missing). The replay rewound the position, so once it passes 1-1-2 the skip resumes
    // against the rewound position: 1-1-3 is applied again, as the live stream it now is.
    assert_eq!(rows, [(0, true), (1, true), (2, false)], "{did:?}");
    assert!(s.checkpoint().replay_until.is_none());
    assert_eq!(s.checkpoint().gtid_position.to_string(), "1-1-3");
    // A later copy of 1-1-3 is skipped.
    let did = drive(&mut s, &[row(3, 3, 0, true, 3)]);
    assert!(!did.iter().any(|d| matches!(d, Did::Row { .. })), "{did:?}");
}

#[test]
fn until_time_stops_before_the_first_newer_record_at_a_boundary() {
    let mut ck = Checkpoint::new("sf.cdc", 0, "eu", 0);
    ck.gtid_position = pos("1-1-1");
    ck.until_ts_ms = Some(1);
    let mut s = session_from(ck, BIG);
    // Records carry their offset as timestamp: offset 2 is newer than 1.
    let did = drive(
        &mut s,
        &[
            row(0, 2, 0, true, 1),
            row(1, 3, 0, false, 2),
            row(2, 3, 1, true, 3),
        ],
    );
    // Transaction 1-1-3 started before the limit but ends after it: roll back, redo up to it.
    assert!(did.contains(&Did::Rollback), "{did:?}");
    assert!(
        matches!(did.last(), Some(Did::End(e)) if e.contains("stop_before: Some(1)") && e.contains("until_at_stop: Some(1)")),
        "{did:?}"
    );
}

#[test]
fn a_batch_error_redoes_the_batch_row_by_row_to_name_the_record() {
    let mut s = session_at(0, "1-1-1", BIG);
    drive(&mut s, &[row(0, 2, 0, true, 1), row(1, 3, 0, true, 2)]);
    let e = ApplyError::Db {
        target: "eu".into(),
        what: "committing".into(),
        source: mysql_async::Error::Server(mysql_async::ServerError {
            code: 1265,
            message: "Data truncated".into(),
            state: "01000".into(),
        }),
    };
    let actions = s.on_batch_error(e).expect("a redo");
    let mut out = Vec::new();
    carry_out(&mut s, -1, actions, &mut out);
    assert_eq!(out[0], Did::Rollback);
    let Did::End(end) = &out[1] else {
        panic!("{out:?}")
    };
    assert!(end.contains("diagnose: Some((1,"), "{end}");
    // The redo sends one row per statement and commits each transaction.
    let mut redo = Session::new(
        s.checkpoint().clone(),
        Directives {
            diagnose: Some((1, "Data truncated".into())),
            ..Default::default()
        },
        BIG,
        DdlPolicy::Apply,
        None,
    );
    let did = drive(&mut redo, &[row(0, 2, 0, true, 1), row(1, 3, 0, true, 2)]);
    assert_eq!(
        did,
        [
            Did::Row {
                offset: 0,
                missing: false,
                diagnose: true
            },
            committed(1, "1-1-2", 1),
            Did::Row {
                offset: 1,
                missing: false,
                diagnose: true
            },
            committed(2, "1-1-3", 1),
        ]
    );
}

#[test]
fn a_redo_after_a_transient_error_starts_from_the_committed_checkpoint_and_applies_each_transaction_once(
) {
    let mut s = session_at(
        0,
        "1-1-1",
        Limits {
            transactions: 2,
            ..BIG
        },
    );
    let did = drive(
        &mut s,
        &[
            row(0, 2, 0, true, 1),
            row(1, 3, 0, true, 2),
            row(2, 4, 0, true, 3),
        ],
    );
    // Two transactions committed, the third is in the batch when the connection drops.
    assert_eq!(commits(&did), [(2, "1-1-3".to_owned())]);
    let mut next = session_from(
        s.checkpoint().clone(),
        Limits {
            transactions: 2,
            ..BIG
        },
    );
    // The reader starts at the checkpoint's offset: only the third transaction again.
    let did = drive(&mut next, &[row(2, 4, 0, true, 3)]);
    assert_eq!(
        did.iter().filter(|d| matches!(d, Did::Row { .. })).count(),
        1
    );
    let mut out = Vec::new();
    {
        let a = next.on_signal();
        carry_out(&mut next, -1, a, &mut out)
    };
    assert_eq!(commits(&out), [(3, "1-1-4".to_owned())]);
}

#[test]
fn heartbeats_move_the_position_and_lag_but_not_inside_a_transaction() {
    let mut s = session_at(
        0,
        "1-1-1",
        Limits {
            transactions: 1,
            ..BIG
        },
    );
    drive(&mut s, &[heartbeat(0, "1-1-5")]);
    let mut out = Vec::new();
    {
        let a = s.on_deadline();
        carry_out(&mut s, -1, a, &mut out)
    };
    assert_eq!(commits(&out), [(1, "1-1-5".to_owned())]);
    assert_eq!(s.checkpoint().source_ts_ms, Some(5_000));
    // Inside a transaction a heartbeat changes nothing.
    let did = drive(
        &mut s,
        &[
            row(1, 6, 0, false, 1),
            heartbeat(2, "1-1-7"),
            row(3, 6, 1, true, 2),
        ],
    );
    assert_eq!(commits(&did), [(4, "1-1-6".to_owned())], "{did:?}");
}

#[test]
fn until_caught_up_ends_at_the_first_boundary_at_or_past_the_end() {
    let mut ck = Checkpoint::new("sf.cdc", 0, "eu", 0);
    ck.gtid_position = pos("1-1-1");
    let mut s = Session::new(ck, Directives::default(), BIG, DdlPolicy::Apply, Some(2));
    assert!(s.before_next().is_none());
    drive(&mut s, &[row(0, 2, 0, false, 1), row(1, 2, 1, true, 2)]);
    let mut out = Vec::new();
    let actions = s.before_next().expect("caught up");
    carry_out(&mut s, -1, actions, &mut out);
    assert_eq!(commits(&out), [(2, "1-1-2".to_owned())]);
    assert!(matches!(out.last(), Some(Did::End(e)) if e.contains("CaughtUp { offset: 2 }")));
}

#[test]
fn create_table_select_runs_the_statement_then_its_rows_and_commits_with_the_last() {
    let mut s = session_at(0, "1-1-1", BIG);
    let did = drive(
        &mut s,
        &[
            row(0, 2, 0, true, 9),
            ddl(1, 3, 0, false),
            row(2, 3, 1, false, 1),
            row(3, 3, 2, true, 2),
            row(4, 4, 0, true, 3),
        ],
    );
    assert_eq!(
        did,
        [
            buffered(0),
            committed(1, "1-1-2", 1),
            ran_ddl(1),
            buffered(2),
            buffered(3),
            // The table's rows commit as soon as its transaction ends, with the checkpoint past it.
            committed(4, "1-1-3", 2),
            buffered(4),
        ]
    );
}

#[test]
fn create_table_select_already_applied_is_skipped_whole() {
    let mut s = session_at(
        0,
        "1-1-3",
        Limits {
            transactions: 1,
            ..BIG
        },
    );
    let did = drive(&mut s, &[ddl(0, 3, 0, false), row(1, 3, 1, true, 1)]);
    assert!(
        !did.iter()
            .any(|d| matches!(d, Did::Row { .. } | Did::Ddl { .. })),
        "{did:?}"
    );
    let mut out = Vec::new();
    let a = s.on_signal();
    carry_out(&mut s, -1, a, &mut out);
    assert_eq!(commits(&out), [(2, "1-1-3".to_owned())]);
}

#[test]
fn a_schema_change_after_the_first_event_of_a_transaction_stops_apply() {
    let mut s = session_at(0, "1-1-1", BIG);
    let did = drive(&mut s, &[row(0, 2, 0, false, 1), ddl(1, 2, 1, true)]);
    assert!(
        did.iter()
            .any(|d| matches!(d, Did::End(e) if e.contains("is open"))),
        "{did:?}"
    );
}

#[test]
fn a_batch_commits_at_once_when_nothing_is_queued_behind_it() {
    let mut s = session_at(0, "1-1-1", BIG);
    // Nothing to commit: no deadline, queued or not.
    assert_eq!(s.deadline(false, false), None);
    assert_eq!(s.deadline(false, true), None);
    drive(&mut s, &[row(0, 2, 0, false, 1)]);
    // Inside a source transaction there is never a deadline: the batch cannot commit there.
    assert_eq!(s.deadline(true, false), None);
    let did = drive(&mut s, &[row(1, 2, 1, true, 2)]);
    assert!(commits(&did).is_empty(), "{did:?}");
    let started = s
        .deadline(true, false)
        .expect("a finished transaction waits to commit");
    // Records queued: the batch may grow for batch_wait; none queued: the deadline has passed.
    assert_eq!(s.deadline(true, true), Some(started + BIG.wait));
    assert!(started <= Instant::now());
    let mut out = Vec::new();
    let a = s.on_deadline();
    carry_out(&mut s, -1, a, &mut out);
    assert_eq!(commits(&out), [(2, "1-1-2".to_owned())], "{out:?}");
}

/// The source of the records of a chunk of incremental snapshot `id` read at `at`.
fn chunk_source(id: &str, at: &str) -> SourceInfo {
    let mut src = source(1);
    src.gtid = None;
    src.gtid_position = pos(at);
    src.resume_position = pos(at);
    src.snapshot_id = Some(id.into());
    src
}

/// Row `index` of a chunk of incremental snapshot `id` read at `at`, of key `key`.
fn chunk_row(offset: i64, id: &str, index: u64, last: bool, at: &str, key: i64) -> Incoming {
    let src = chunk_source(id, at);
    incoming(
        offset,
        StreamRecord::Change(ChangeEvent {
            op: Op::Read,
            table: table(),
            before: None,
            after: Some(vec![Value::Int(key)]),
            source: src,
            tx: Some(TxPlace { index, last }),
        }),
    )
}

/// The end of a chunk of `rows` rows of incremental snapshot `id` read at `at`, with the range
/// after `from` up to `to`.
fn chunk_end(
    offset: i64,
    id: &str,
    rows: u64,
    at: &str,
    from: Option<i64>,
    to: Option<i64>,
) -> Incoming {
    incoming(
        offset,
        StreamRecord::ChunkEnd(continuum_schemas::ChunkEnd {
            snapshot_id: id.into(),
            server_id: 1,
            table: "d.t".into(),
            position: pos(at),
            rows,
            key: vec!["id".into()],
            from: from.map(|k| vec![continuum_schemas::KeyPart::Int(k)]),
            to: to.map(|k| vec![continuum_schemas::KeyPart::Int(k)]),
            ts_ms: 9_000,
        }),
    )
}

fn rows_and_cleans(did: &[Did]) -> Vec<Did> {
    did.iter()
        .filter(|d| matches!(d, Did::Row { .. } | Did::Clean { .. }))
        .cloned()
        .collect()
}

#[test]
fn a_chunk_is_applied_whole_and_its_end_cleans_its_key_range_at_one_consistent_point() {
    let mut s = session_at(0, "1-1-1", one_per_commit());
    let did = drive(
        &mut s,
        &[
            row(0, 2, 0, true, 1),
            chunk_row(1, "r1-a", 0, false, "1-1-2", 7),
            chunk_row(2, "r1-a", 1, false, "1-1-2", 8),
            chunk_end(3, "r1-a", 2, "1-1-2", Some(6), Some(8)),
            row(4, 3, 0, true, 9),
        ],
    );
    assert_eq!(
        rows_and_cleans(&did),
        [
            buffered(0),
            buffered(1),
            buffered(2),
            Did::Clean {
                offset: 3,
                keep: vec![7, 8]
            },
            buffered(4)
        ]
    );
    // No commit inside the chunk (a chunk is not a transaction: the next one commits with it).
    assert_eq!(
        commits(&did),
        [(1, "1-1-2".to_owned()), (5, "1-1-3".to_owned())],
        "{did:?}"
    );
    // A commit forced inside a chunk leaves the checkpoint before it, so a new session
    // applies the whole chunk again and knows every key its end keeps.
    let mut s = session_at(0, "1-1-2", BIG);
    drive(&mut s, &[chunk_row(0, "r1-a", 0, false, "1-1-2", 7)]);
    let mut out = Vec::new();
    let a = s.on_signal();
    assert!(carry_out(&mut s, -1, a, &mut out));
    assert_eq!(commits(&out), [(0, "1-1-2".to_owned())]);
}

#[test]
fn an_empty_chunk_cleans_its_whole_range_and_a_chunk_cut_short_cleans_nothing() {
    let mut s = session_at(0, "1-1-2", BIG);
    let did = drive(
        &mut s,
        &[
            // Cut short by the producer's restart: its rows stay, its range is not cleaned.
            chunk_row(0, "r1-a", 0, false, "1-1-2", 7),
            chunk_row(1, "r1-a", 1, false, "1-1-2", 8),
            row(2, 3, 0, true, 9),
            // Read again after the restart, at the new position, with one row left.
            chunk_row(3, "r1-a", 0, false, "1-1-3", 8),
            chunk_end(4, "r1-a", 1, "1-1-3", Some(6), Some(8)),
            // The table's tail is empty at the source.
            chunk_end(5, "r1-a", 0, "1-1-3", Some(8), None),
        ],
    );
    assert_eq!(
        rows_and_cleans(&did),
        [
            buffered(0),
            buffered(1),
            buffered(2),
            buffered(3),
            Did::Clean {
                offset: 4,
                keep: vec![8]
            },
            Did::Clean {
                offset: 5,
                keep: vec![]
            },
        ]
    );
    // A session that begins inside a chunk (a replay from there) does not know the keys of its
    // first rows: the end is a consistent point, but cleans nothing.
    let mut s = session_at(0, "1-1-2", BIG);
    let did = drive(
        &mut s,
        &[
            chunk_row(0, "r1-a", 1, false, "1-1-2", 8),
            chunk_end(1, "r1-a", 2, "1-1-2", None, Some(8)),
        ],
    );
    assert_eq!(rows_and_cleans(&did), [buffered(0)]);
    let mut out = Vec::new();
    let a = s.on_signal();
    carry_out(&mut s, -1, a, &mut out);
    assert_eq!(commits(&out), [(2, "1-1-2".to_owned())]);
}

#[test]
fn a_chunk_older_than_the_checkpoint_is_skipped_with_its_end_but_one_at_it_is_applied() {
    // The replica is at 1-1-5: a chunk read at 1-1-4 holds rows older than the replica's.
    let mut s = session_at(0, "1-1-5", BIG);
    let did = drive(
        &mut s,
        &[
            chunk_row(0, "r1-a", 0, false, "1-1-4", 7),
            chunk_end(1, "r1-a", 1, "1-1-4", None, Some(7)),
            chunk_row(2, "r1-b", 0, false, "1-1-5", 8),
            chunk_end(3, "r1-b", 1, "1-1-5", None, Some(8)),
        ],
    );
    assert_eq!(
        rows_and_cleans(&did),
        [
            buffered(2),
            Did::Clean {
                offset: 3,
                keep: vec![8]
            }
        ],
        "{did:?}"
    );
    assert_eq!(s.stats.skipped, 2);
    // While a replay re-applies history up to 1-1-5, the older chunk is history too.
    let mut ck = Checkpoint::new("sf.cdc", 0, "eu", 0);
    ck.gtid_position = pos("1-1-5");
    ck.replay_until = Some(pos("1-1-5"));
    let mut s = session_from(ck, BIG);
    let did = drive(
        &mut s,
        &[
            chunk_row(0, "r1-a", 0, false, "1-1-4", 7),
            chunk_end(1, "r1-a", 1, "1-1-4", None, Some(7)),
        ],
    );
    assert_eq!(
        rows_and_cleans(&did),
        [
            buffered(0),
            Did::Clean {
                offset: 1,
                keep: vec![7]
            }
        ]
    );
}

#[test]
fn a_chunk_row_inside_an_open_transaction_or_a_loading_snapshot_stops_apply() {
    let mut s = session_at(0, "1-1-1", BIG);
    let did = drive(
        &mut s,
        &[
            row(0, 2, 0, false, 1),
            chunk_row(1, "r1-a", 0, true, "1-1-1", 7),
        ],
    );
    assert!(
        did.iter()
            .any(|d| matches!(d, Did::Rollback | Did::Fail(_))),
        "{did:?}"
    );
    let mut s = session_at(0, "", BIG);
    let did = drive(
        &mut s,
        &[
            marker(0, "full", SnapshotPhase::Start, "1-1-1"),
            chunk_row(1, "r1-a", 0, true, "1-1-1", 7),
        ],
    );
    assert_fails_with(&did, "snapshot full is loading here");
}

/// Definition `index` of the first chunk of incremental snapshot `id` read at `at`.
fn chunk_ddl(offset: i64, id: &str, index: u64, at: &str) -> Incoming {
    let src = chunk_source(id, at);
    incoming(
        offset,
        StreamRecord::SchemaChange(SchemaChange {
            database: "d".into(),
            ddl: if index == 0 {
                "CREATE DATABASE IF NOT EXISTS `d`".into()
            } else {
                "CREATE TABLE IF NOT EXISTS `d`.`t` (`id` bigint NOT NULL, PRIMARY KEY (`id`))"
                    .into()
            },
            source: src,
            tx: TxPlace { index, last: false },
        }),
    )
}

#[test]
fn a_tables_first_chunk_runs_its_definitions_first_and_keeps_the_checkpoint_before_the_chunk() {
    let mut s = session_at(0, "1-1-2", BIG);
    let did = drive(
        &mut s,
        &[
            chunk_ddl(0, "r1-a", 0, "1-1-2"),
            chunk_ddl(1, "r1-a", 1, "1-1-2"),
            chunk_row(2, "r1-a", 2, false, "1-1-2", 7),
            chunk_end(3, "r1-a", 3, "1-1-2", None, None),
        ],
    );
    assert_eq!(
        did.iter()
            .filter(|d| !matches!(d, Did::Commit { .. }))
            .cloned()
            .collect::<Vec<_>>(),
        [
            ran_ddl(0),
            ran_ddl(1),
            buffered(2),
            Did::Clean {
                offset: 3,
                keep: vec![7]
            }
        ],
        "{did:?}"
    );
    // Nothing was committed past the chunk's start before its end.
    assert!(
        did.iter()
            .all(|d| !matches!(d, Did::Commit { next, .. } if *next > 0)),
        "{did:?}"
    );
    let mut out = Vec::new();
    let a = s.on_signal();
    carry_out(&mut s, -1, a, &mut out);
    assert_eq!(commits(&out), [(4, "1-1-2".to_owned())]);
    // An older chunk's definitions are skipped with it.
    let mut s = session_at(0, "1-1-5", BIG);
    let did = drive(
        &mut s,
        &[
            chunk_ddl(0, "r1-a", 0, "1-1-2"),
            chunk_ddl(1, "r1-a", 1, "1-1-2"),
            chunk_end(2, "r1-a", 2, "1-1-2", None, None),
        ],
    );
    assert!(
        did.iter()
            .all(|d| !matches!(d, Did::Ddl { .. } | Did::Clean { .. })),
        "{did:?}"
    );
}
