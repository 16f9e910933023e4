//! Source positions: MariaDB GTIDs, multi-domain GTID positions and binlog file positions.
//!
//! Each type parses from and displays to MariaDB's own text form, and the two round-trip exactly:
//! `Gtid` is `domain-server-seq` (`1-1-100`), `GtidPosition` is a comma-separated list with at most
//! one GTID per domain (`1-1-100,2-2-7`, the form of `@@gtid_binlog_pos` and
//! `@slave_connect_state`), and `BinlogPosition` is `file:pos`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A position string that does not parse. Carries the input and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} '{input}': expected {expected}")]
pub struct ParsePositionError {
    pub what: &'static str,
    pub input: String,
    pub expected: &'static str,
}

/// One MariaDB global transaction id: replication domain, originating server and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl Gtid {
    pub const fn new(domain: u32, server: u32, seq: u64) -> Self {
        Self {
            domain,
            server,
            seq,
        }
    }
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl FromStr for Gtid {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePositionError {
            what: "GTID",
            input: s.to_owned(),
            expected: "domain-server-seq, e.g. 1-1-100",
        };
        let mut parts = s.trim().split('-');
        let (Some(d), Some(srv), Some(seq), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err());
        };
        let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
        if !(digits(d) && digits(srv) && digits(seq)) {
            return Err(err());
        }
        Ok(Gtid {
            domain: d.parse().map_err(|_| err())?,
            server: srv.parse().map_err(|_| err())?,
            seq: seq.parse().map_err(|_| err())?,
        })
    }
}

/// A full GTID position: for each replication domain, the last GTID applied in it.
///
/// This is what `@@gtid_binlog_pos` reports and what `@slave_connect_state` takes. Domains are kept
/// in ascending order, so the text form is canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GtidPosition(BTreeMap<u32, Gtid>);

impl GtidPosition {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The last GTID of `domain`, if the position has one.
    pub fn get(&self, domain: u32) -> Option<Gtid> {
        self.0.get(&domain).copied()
    }

    /// Records `gtid` as the last of its domain.
    pub fn advance(&mut self, gtid: Gtid) {
        self.0.insert(gtid.domain, gtid);
    }

    /// A copy with `gtid` recorded as the last of its domain.
    pub fn with(&self, gtid: Gtid) -> Self {
        let mut p = self.clone();
        p.advance(gtid);
        p
    }

    /// Whether `gtid` is at or below this position in its domain, that is, already contained.
    /// Sequence numbers grow within a domain (`gtid_strict_mode`), so this is a per-domain compare.
    pub fn contains(&self, gtid: &Gtid) -> bool {
        self.0.get(&gtid.domain).is_some_and(|g| g.seq >= gtid.seq)
    }

    /// Whether every domain of `other` is at or below this position.
    pub fn covers(&self, other: &GtidPosition) -> bool {
        other.iter().all(|g| self.contains(g))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Gtid> {
        self.0.values()
    }
}

impl fmt::Display for GtidPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.0.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

impl FromStr for GtidPosition {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut pos = GtidPosition::new();
        let s = s.trim();
        if s.is_empty() {
            return Ok(pos);
        }
        for part in s.split(',') {
            let g: Gtid = part.trim().parse().map_err(|_| ParsePositionError {
                what: "GTID position",
                input: s.to_owned(),
                expected: "comma-separated domain-server-seq GTIDs, e.g. 1-1-100,2-2-7",
            })?;
            if pos.0.insert(g.domain, g).is_some() {
                return Err(ParsePositionError {
                    what: "GTID position",
                    input: s.to_owned(),
                    expected: "at most one GTID per domain",
                });
            }
        }
        Ok(pos)
    }
}

impl FromIterator<Gtid> for GtidPosition {
    fn from_iter<I: IntoIterator<Item = Gtid>>(iter: I) -> Self {
        let mut p = GtidPosition::new();
        for g in iter {
            p.advance(g);
        }
        p
    }
}

/// A binlog file name and byte offset, e.g. `sf-bin.000003:1234`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BinlogPosition {
    pub file: String,
    pub pos: u64,
}

impl BinlogPosition {
    pub fn new(file: impl Into<String>, pos: u64) -> Self {
        Self {
            file: file.into(),
            pos,
        }
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

impl FromStr for BinlogPosition {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePositionError {
            what: "binlog position",
            input: s.to_owned(),
            expected: "file:pos, e.g. sf-bin.000003:1234",
        };
        let (file, pos) = s.rsplit_once(':').ok_or_else(err)?;
        if file.is_empty() || pos.is_empty() || !pos.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        Ok(BinlogPosition {
            file: file.to_owned(),
            pos: pos.parse().map_err(|_| err())?,
        })
    }
}

/// Serde reads and writes these types as their text (`#[serde(try_from, into = "String")]`).
macro_rules! as_text {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = ParsePositionError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
    )*};
}

as_text!(Gtid, GtidPosition, BinlogPosition);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_round_trips() {
        for s in [
            "0-0-0",
            "1-1-100",
            "4294967295-4294967295-18446744073709551615",
        ] {
            let g: Gtid = s.parse().unwrap();
            assert_eq!(g.to_string(), s);
        }
        assert_eq!(
            "1-2-3".parse::<Gtid>().unwrap(),
            Gtid::new(1, 2, 3),
            "fields in domain-server-seq order"
        );
    }

    #[test]
    fn gtid_rejects_malformed() {
        for s in [
            "",
            "1-1",
            "1-1-1-1",
            "a-1-1",
            "1--1",
            "-1-1-1",
            "1-1-18446744073709551616",
            "1-1- 2",
        ] {
            let e = s.parse::<Gtid>().unwrap_err();
            assert_eq!(e.input, s);
        }
    }

    #[test]
    fn position_round_trips_and_is_canonical() {
        let p: GtidPosition = "2-2-7,1-1-100".parse().unwrap();
        assert_eq!(p.to_string(), "1-1-100,2-2-7");
        let q: GtidPosition = p.to_string().parse().unwrap();
        assert_eq!(p, q);
        assert!("".parse::<GtidPosition>().unwrap().is_empty());
        assert!(
            "1-1-1,1-2-3".parse::<GtidPosition>().is_err(),
            "two GTIDs in one domain"
        );
        assert!("1-1-1,".parse::<GtidPosition>().is_err());
    }

    #[test]
    fn position_contains_per_domain() {
        let p: GtidPosition = "1-1-100,2-2-7".parse().unwrap();
        assert!(p.contains(&Gtid::new(1, 1, 100)));
        assert!(
            p.contains(&Gtid::new(1, 9, 50)),
            "server id does not matter for ordering"
        );
        assert!(!p.contains(&Gtid::new(1, 1, 101)));
        assert!(
            !p.contains(&Gtid::new(3, 3, 1)),
            "unknown domain is not contained"
        );
        assert!(p.covers(&"1-1-99,2-2-7".parse().unwrap()));
        assert!(!p.covers(&"1-1-99,2-2-8".parse().unwrap()));
        assert_eq!(p.with(Gtid::new(2, 2, 8)).to_string(), "1-1-100,2-2-8");
    }

    #[test]
    fn binlog_position_round_trips() {
        let b: BinlogPosition = "sf-bin.000003:1234".parse().unwrap();
        assert_eq!(b, BinlogPosition::new("sf-bin.000003", 1234));
        assert_eq!(b.to_string(), "sf-bin.000003:1234");
        for bad in ["sf-bin.000003", ":4", "f:", "f:x"] {
            assert!(bad.parse::<BinlogPosition>().is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_uses_text_form() {
        let p: GtidPosition = "1-1-5".parse().unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"1-1-5\"");
        let back: GtidPosition = serde_json::from_str("\"1-1-5\"").unwrap();
        assert_eq!(back, p);
    }
}
