//! Reading MariaDB's binlog, the parts both binaries need:
//!
//! - MariaDB's own events that `mysql_common` does not decode: GTID (type 162) and GTID_LIST
//!   (type 163), parsed from their raw bytes;
//! - [`Framer`]: which events open, continue and close a transaction. The producer's reader and
//!   `orphans` both frame the binlog with it, so they never disagree on where a transaction
//!   ends (`SAVEPOINT` and `ROLLBACK TO` continue one; `COMMIT`, `ROLLBACK` and an XID event
//!   close it; a standalone GTID's one statement is the whole transaction);
//! - what an error 1236 from a binlog dump means ([`refusal_of`]).

use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};

use continuum_schemas::{Gtid, GtidPosition};

/// Starts a binlog dump on `conn` as the replica `server_id`, from just after the GTID position
/// `from` (MariaDB's GTID mode: `@slave_connect_state`). With `to_current_end` the stream ends
/// at the binlog's end as of now, else it waits for new events. `settings` are further
/// `SET @...` statements for the dump session, run first. A position the server cannot serve
/// fails with error 1236 ([`refusal_of`]).
pub async fn gtid_dump(
    mut conn: Conn,
    server_id: u32,
    from: &GtidPosition,
    to_current_end: bool,
    settings: &[String],
) -> Result<BinlogStream, mysql_async::Error> {
    conn.query_drop("SET @mariadb_slave_capability=4").await?;
    conn.exec_drop("SET @slave_connect_state=?", (from.to_string(),))
        .await?;
    for s in settings {
        conn.query_drop(s).await?;
    }
    let mut request = BinlogStreamRequest::new(server_id)
        .with_filename(b"")
        .with_pos(4u64);
    if to_current_end {
        request = request.with_non_blocking();
    }
    conn.get_binlog_stream(request).await
}

pub const MARIADB_GTID: u8 = 162;
pub const MARIADB_GTID_LIST: u8 = 163;
/// GTID event flag: the transaction is a single statement with no COMMIT/XID (DDL).
pub const FL_STANDALONE: u8 = 0x01;
const FL_GROUP_COMMIT_ID: u8 = 0x02;
/// `LOG_EVENT_SKIP_REPLICATION_F`: written by a session with `skip_replication=1`.
pub const SKIP_REPLICATION_FLAG: u16 = 0x8000;

/// Parses a GTID event body: seq_no u64, domain_id u32, flags u8 [, commit_id u64]. The
/// server id comes from the event header.
pub fn parse_gtid_event(data: &[u8], server_id: u32) -> Result<(Gtid, u8), String> {
    if data.len() < 13 {
        return Err(format!(
            "GTID event of {} bytes, expected at least 13",
            data.len()
        ));
    }
    let seq = u64::from_le_bytes(data[0..8].try_into().unwrap());
    let domain = u32::from_le_bytes(data[8..12].try_into().unwrap());
    let flags = data[12];
    if flags & FL_GROUP_COMMIT_ID != 0 && data.len() < 21 {
        return Err("GTID event with a group commit id is truncated".into());
    }
    Ok((Gtid::new(domain, server_id, seq), flags))
}

/// Parses a GTID_LIST event body: count u32 (low 28 bits), then count x (domain u32,
/// server u32, seq u64).
pub fn parse_gtid_list(data: &[u8]) -> Result<GtidPosition, String> {
    if data.len() < 4 {
        return Err("GTID_LIST event too short".into());
    }
    let count = (u32::from_le_bytes(data[0..4].try_into().unwrap()) & 0x0fff_ffff) as usize;
    let need = 4 + count * 16;
    if data.len() < need {
        return Err(format!(
            "GTID_LIST of {count} entries needs {need} bytes, has {}",
            data.len()
        ));
    }
    let mut p = GtidPosition::new();
    for i in 0..count {
        let o = 4 + i * 16;
        let domain = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
        let server = u32::from_le_bytes(data[o + 4..o + 8].try_into().unwrap());
        let seq = u64::from_le_bytes(data[o + 8..o + 16].try_into().unwrap());
        p.advance(Gtid::new(domain, server, seq));
    }
    Ok(p)
}

/// What a QUERY event's statement does to the transaction it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// `BEGIN` (or `START TRANSACTION`): the transaction's first event after its GTID.
    Begin,
    /// `SAVEPOINT s`, `RELEASE SAVEPOINT s`, `ROLLBACK TO [SAVEPOINT] s`: the transaction goes on.
    Savepoint,
    /// `COMMIT`, or a whole `ROLLBACK`: the transaction ends.
    End,
    /// `XA START`, `XA END`, `XA PREPARE`, `XA COMMIT`, `XA ROLLBACK`.
    Xa,
    /// Anything else: DDL, or DML logged as a statement.
    Other,
}

/// The first `n` words of `sql`, upper-cased, after whitespace and comments.
fn leading_words(sql: &str, n: usize) -> Vec<String> {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut words = Vec::new();
    while i < b.len() && words.len() < n {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i = sql[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
        } else if (c == b'-' && b.get(i + 1) == Some(&b'-')) || c == b'#' {
            i = sql[i..].find('\n').map_or(b.len(), |e| i + e + 1);
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            words.push(sql[start..i].to_ascii_uppercase());
        } else {
            break;
        }
    }
    words
}

/// What the statement of a QUERY event does to its transaction.
pub fn statement_kind(sql: &str) -> StatementKind {
    let w = leading_words(sql, 2);
    let first = w.first().map(String::as_str).unwrap_or_default();
    let second = w.get(1).map(String::as_str).unwrap_or_default();
    match (first, second) {
        ("BEGIN", _) | ("START", "TRANSACTION") => StatementKind::Begin,
        ("SAVEPOINT", _) | ("RELEASE", "SAVEPOINT") | ("ROLLBACK", "TO") => {
            StatementKind::Savepoint
        }
        ("COMMIT", _) | ("ROLLBACK", _) => StatementKind::End,
        ("XA", _) => StatementKind::Xa,
        _ => StatementKind::Other,
    }
}

/// The open transaction, as its GTID event describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub gtid: Gtid,
    /// One statement with no COMMIT or XID (DDL).
    pub standalone: bool,
    /// Written by a `skip_replication` session (Continuum's apply): not the source's own.
    pub skip_replication: bool,
}

/// A binlog event, as much as the framer needs of it.
#[derive(Debug, Clone, Copy)]
pub enum FrameInput<'a> {
    /// A GTID event: the GTID, its flags byte, and the event header's flags.
    Gtid {
        gtid: Gtid,
        flags: u8,
        event_flags: u16,
    },
    /// A QUERY event's statement.
    Query(&'a str),
    /// An XID event (the commit of a transactional transaction).
    Xid,
    /// Any other event (TABLE_MAP, rows, annotations, format descriptions, ...).
    Other,
}

/// Where an event falls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A GTID event opened a transaction.
    Opened,
    /// Part of the open transaction, nothing to look at for framing: rows, table maps,
    /// `BEGIN`, savepoints.
    Within,
    /// A statement of the open transaction (DDL, or DML logged as a statement). When the
    /// transaction is standalone the statement is all of it and it is closed: `closed` holds it.
    Statement { closed: Option<Frame> },
    /// An XA statement, inside the open transaction.
    Xa,
    /// The open transaction ended here (XID, `COMMIT`, `ROLLBACK`).
    Closed(Frame),
    /// Outside any transaction (format descriptions, rotations, heartbeats, ...).
    Outside,
}

/// Two GTID events with no end of transaction between them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("GTID {next} began before transaction {open} ended")]
pub struct UnclosedTransaction {
    pub open: Gtid,
    pub next: Gtid,
}

/// Cuts the binlog into transactions. Feed every event in order; see the module note.
#[derive(Debug, Default, Clone)]
pub struct Framer {
    open: Option<Frame>,
}

impl Framer {
    pub fn new() -> Self {
        Framer::default()
    }

    /// The open transaction, if any.
    pub fn open(&self) -> Option<&Frame> {
        self.open.as_ref()
    }

    pub fn feed(&mut self, input: FrameInput<'_>) -> Result<Step, UnclosedTransaction> {
        match input {
            FrameInput::Gtid {
                gtid,
                flags,
                event_flags,
            } => {
                if let Some(open) = &self.open {
                    return Err(UnclosedTransaction {
                        open: open.gtid,
                        next: gtid,
                    });
                }
                self.open = Some(Frame {
                    gtid,
                    standalone: flags & FL_STANDALONE != 0,
                    skip_replication: event_flags & SKIP_REPLICATION_FLAG != 0,
                });
                Ok(Step::Opened)
            }
            FrameInput::Xid => Ok(self.close()),
            FrameInput::Query(sql) => {
                if self.open.is_none() {
                    return Ok(Step::Outside);
                }
                Ok(match statement_kind(sql) {
                    StatementKind::Begin | StatementKind::Savepoint => Step::Within,
                    StatementKind::End => self.close(),
                    StatementKind::Xa => Step::Xa,
                    StatementKind::Other => {
                        let standalone = self.open.as_ref().is_some_and(|f| f.standalone);
                        Step::Statement {
                            closed: if standalone { self.open.take() } else { None },
                        }
                    }
                })
            }
            FrameInput::Other => Ok(if self.open.is_some() {
                Step::Within
            } else {
                Step::Outside
            }),
        }
    }

    fn close(&mut self) -> Step {
        match self.open.take() {
            Some(f) => Step::Closed(f),
            None => Step::Outside,
        }
    }
}

/// Why the source refused to send its binlog from a position: error 1236
/// (`ER_MASTER_FATAL_ERROR_READING_BINLOG`), told apart by the server's message. The texts are
/// MariaDB 10.11's (`sql/sql_repl.cc`); each case was reproduced on the local stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// "Could not find GTID state requested by slave in any binlog files. Probably the slave
    /// state is too old and required binlog files have been purged."
    Purged,
    /// "Error: connecting slave requested to start from GTID D-S-N, which is not in the
    /// master's binlog": the binlog ends before that GTID in its domain; the server never wrote
    /// it (`ER_GTID_POSITION_NOT_FOUND_IN_BINLOG`).
    NotInBinlog { gtid: String },
    /// The same, followed by "Since the master's binlog contains GTIDs with higher sequence
    /// numbers, it probably means that the slave has diverged due to executing extra erroneous
    /// transactions" (`ER_GTID_POSITION_NOT_FOUND_IN_BINLOG2`).
    Diverged { gtid: String },
    /// "The binlog on the master is missing the GTID D-S-N requested by the slave (even though
    /// both a prior and a subsequent sequence number does exist), and GTID strict mode is
    /// enabled" (`ER_GTID_START_FROM_BINLOG_HOLE`).
    StrictModeHole { gtid: String },
    /// "log event entry exceeded max_allowed_packet; Increase max_allowed_packet on master; ...":
    /// an event over the dump's 1 GiB limit, or a corrupt binlog.
    EventTooLarge,
    /// Anything else (a corrupt binlog, a binlog that is not open, ...): the message says.
    Other,
}

/// Reads what an error 1236 `message` means.
pub fn refusal_of(message: &str) -> Refusal {
    let gtid = || {
        let after = message
            .split_once("start from GTID ")
            .or_else(|| message.split_once("missing the GTID "))
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        after
            .split(|c: char| !(c.is_ascii_digit() || c == '-'))
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    if message.contains("Could not find GTID state requested by slave in any binlog files") {
        Refusal::Purged
    } else if message.contains("which is not in the master's binlog") {
        if message.contains("diverged") || message.contains("higher sequence numbers") {
            Refusal::Diverged { gtid: gtid() }
        } else {
            Refusal::NotInBinlog { gtid: gtid() }
        }
    } else if message.contains("is missing the GTID") && message.contains("strict mode") {
        Refusal::StrictModeHole { gtid: gtid() }
    } else if message.contains("exceeded max_allowed_packet") {
        Refusal::EventTooLarge
    } else {
        Refusal::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gtid(seq: u64, flags: u8, event_flags: u16) -> FrameInput<'static> {
        FrameInput::Gtid {
            gtid: Gtid::new(1, 1, seq),
            flags,
            event_flags,
        }
    }

    fn steps(events: &[FrameInput<'_>]) -> Vec<Step> {
        let mut f = Framer::new();
        events.iter().map(|e| f.feed(*e).unwrap()).collect()
    }

    #[test]
    fn statements_are_told_apart_by_their_first_words() {
        use StatementKind::*;
        for (sql, kind) in [
            ("BEGIN", Begin),
            ("  begin", Begin),
            ("START TRANSACTION", Begin),
            ("SAVEPOINT `s`", Savepoint),
            ("RELEASE SAVEPOINT `s`", Savepoint),
            ("ROLLBACK TO `s`", Savepoint),
            ("rollback to savepoint s", Savepoint),
            ("COMMIT", End),
            ("ROLLBACK", End),
            ("/* a comment */ ROLLBACK", End),
            ("XA START X'31',X'',1", Xa),
            ("ALTER TABLE t ADD COLUMN v INT", Other),
            ("COMMITTED_TABLE_IS_NOT_A_WORD", Other),
            ("-- note\nCREATE TABLE t (id INT)", Other),
        ] {
            assert_eq!(statement_kind(sql), kind, "{sql}");
        }
    }

    /// The framer's steps in short: `open`, `in`, `stmt`, `xa`, `out`, and `close:SEQ` (or
    /// `stmt+close:SEQ` for a standalone statement), with `!skip` when flagged skip_replication.
    fn short(steps: &[Step]) -> String {
        let close = |f: &Frame| {
            assert_eq!(f.gtid.domain, 1);
            let skip = if f.skip_replication { "!skip" } else { "" };
            format!("close:{}{skip}", f.gtid.seq)
        };
        steps
            .iter()
            .map(|s| match s {
                Step::Opened => "open".to_owned(),
                Step::Within => "in".to_owned(),
                Step::Statement { closed: None } => "stmt".to_owned(),
                Step::Statement { closed: Some(f) } => {
                    assert!(f.standalone, "{f:?}");
                    format!("stmt+{}", close(f))
                }
                Step::Xa => "xa".to_owned(),
                Step::Closed(f) => {
                    assert!(!f.standalone, "{f:?}");
                    close(f)
                }
                Step::Outside => "out".to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn transactions_are_framed_by_gtid_and_their_end() {
        let q = FrameInput::Query;
        let (o, x) = (FrameInput::Other, FrameInput::Xid);
        let cases: &[(&str, &[FrameInput<'_>], &str)] = &[
            (
                "savepoints and ROLLBACK TO continue a transaction",
                &[
                    gtid(5, 0, 0),
                    q("BEGIN"),
                    o,
                    o,
                    q("SAVEPOINT `s`"),
                    o,
                    q("ROLLBACK TO `s`"),
                    o,
                    q("RELEASE SAVEPOINT `s`"),
                    x,
                    o,
                ],
                "open in in in in in in in in close:5 out",
            ),
            (
                "COMMIT and ROLLBACK close; DDL is standalone",
                &[
                    gtid(6, 0, 0),
                    q("BEGIN"),
                    o,
                    q("COMMIT"),
                    gtid(7, FL_STANDALONE, 0),
                    q("ALTER TABLE t ADD COLUMN v INT"),
                    gtid(8, 0, 0),
                    q("BEGIN"),
                    q("ROLLBACK"),
                ],
                "open in in close:6 open stmt+close:7 open in close:8",
            ),
            (
                "statements inside a transaction and XA are reported; flags are kept",
                &[
                    gtid(9, 0, SKIP_REPLICATION_FLAG),
                    q("BEGIN"),
                    q("INSERT INTO t VALUES (1)"),
                    q("XA END X'31'"),
                    x,
                ],
                "open in stmt xa close:9!skip",
            ),
        ];
        for (what, events, want) in cases {
            assert_eq!(short(&steps(events)), *want, "{what}");
        }
    }

    #[test]
    fn a_gtid_inside_an_open_transaction_is_an_error() {
        let mut f = Framer::new();
        f.feed(gtid(1, 0, 0)).unwrap();
        let e = f.feed(gtid(2, 0, 0)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "GTID 1-1-2 began before transaction 1-1-1 ended"
        );
    }

    #[test]
    fn every_1236_message_of_mariadb_is_told_apart() {
        // Verbatim from MariaDB 10.11.19 on the local stack.
        assert_eq!(refusal_of("Could not find GTID state requested by slave in any binlog files. Probably the slave state is too old and required binlog files have been purged."), Refusal::Purged);
        assert_eq!(
            refusal_of("Error: connecting slave requested to start from GTID 1-77-5, which is not in the master's binlog. Since the master's binlog contains GTIDs with higher sequence numbers, it probably means that the slave has diverged due to executing extra erroneous transactions"),
            Refusal::Diverged { gtid: "1-77-5".into() }
        );
        assert_eq!(
            refusal_of("Error: connecting slave requested to start from GTID 1-1-999999999, which is not in the master's binlog"),
            Refusal::NotInBinlog { gtid: "1-1-999999999".into() }
        );
        assert_eq!(
            refusal_of("The binlog on the master is missing the GTID 1-1-19622 requested by the slave (even though both a prior and a subsequent sequence number does exist), and GTID strict mode is enabled"),
            Refusal::StrictModeHole { gtid: "1-1-19622".into() }
        );
        // From sql_repl.cc: an event over the dump's limit.
        assert_eq!(
            refusal_of("log event entry exceeded max_allowed_packet; Increase max_allowed_packet on master; the first event 'sf-bin.000002' at 4, the last event read from 'sf-bin.000002' at 4, the last byte read from 'sf-bin.000002' at 4."),
            Refusal::EventTooLarge
        );
        assert_eq!(refusal_of("Binary log is not open"), Refusal::Other);
    }

    #[test]
    fn gtid_event_bodies_parse() {
        let mut b = Vec::new();
        b.extend(100u64.to_le_bytes());
        b.extend(2u32.to_le_bytes());
        b.push(FL_STANDALONE);
        let (g, f) = parse_gtid_event(&b, 7).unwrap();
        assert_eq!(g.to_string(), "2-7-100");
        assert_eq!(f, FL_STANDALONE);
        b[12] = FL_GROUP_COMMIT_ID;
        assert!(parse_gtid_event(&b, 7).is_err(), "commit id missing");
        b.extend(5u64.to_le_bytes());
        assert!(parse_gtid_event(&b, 7).is_ok());
        assert!(parse_gtid_event(&b[..10], 7).is_err());
    }

    #[test]
    fn gtid_list_bodies_parse() {
        let mut b = Vec::new();
        b.extend((2u32 | 0x1000_0000).to_le_bytes()); // high flag bits are ignored
        for (d, s, n) in [(1u32, 1u32, 9u64), (2, 2, 4)] {
            b.extend(d.to_le_bytes());
            b.extend(s.to_le_bytes());
            b.extend(n.to_le_bytes());
        }
        assert_eq!(parse_gtid_list(&b).unwrap().to_string(), "1-1-9,2-2-4");
        assert!(parse_gtid_list(&b[..20]).is_err());
    }
}
