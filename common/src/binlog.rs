//! MariaDB's own binlog events that `mysql_common` does not decode: GTID (type 162) and
//! GTID_LIST (type 163), parsed from their raw bytes.

use continuum_schemas::{Gtid, GtidPosition};

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

#[cfg(test)]
mod tests {
    use super::*;

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
