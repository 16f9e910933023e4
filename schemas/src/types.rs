//! Column types and values: the shape of a table as the binlog's TABLE_MAP (with
//! `binlog_row_metadata=FULL`) and `information_schema` both describe it, and one typed value
//! per column.
//!
//! The model keeps only what both sources agree on, so that a row read by the snapshot and the same
//! row read from the binlog are identical. Each type has a canonical text form (see
//! [`ColumnType::sql`]) that travels in the Avro schema as the field property `mariadb.type`, so a
//! reader can rebuild the table shape from the schema alone.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Integer widths, as in `TINYINT` .. `BIGINT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IntWidth {
    Tiny,
    Small,
    Medium,
    Int,
    Big,
}

impl IntWidth {
    fn sql(self) -> &'static str {
        match self {
            IntWidth::Tiny => "tinyint",
            IntWidth::Small => "smallint",
            IntWidth::Medium => "mediumint",
            IntWidth::Int => "int",
            IntWidth::Big => "bigint",
        }
    }

    /// Inclusive value range of the width, signed or unsigned.
    pub fn range(self, unsigned: bool) -> (i128, i128) {
        let bits = match self {
            IntWidth::Tiny => 8,
            IntWidth::Small => 16,
            IntWidth::Medium => 24,
            IntWidth::Int => 32,
            IntWidth::Big => 64,
        };
        if unsigned {
            (0, (1i128 << bits) - 1)
        } else {
            (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
        }
    }
}

/// Character columns (`CHAR`, `VARCHAR` and the `TEXT` family) in a UTF-8 character set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TextKind {
    Char,
    VarChar,
    TinyText,
    Text,
    MediumText,
    LongText,
}

impl TextKind {
    fn sql(self) -> &'static str {
        match self {
            TextKind::Char => "char",
            TextKind::VarChar => "varchar",
            TextKind::TinyText => "tinytext",
            TextKind::Text => "text",
            TextKind::MediumText => "mediumtext",
            TextKind::LongText => "longtext",
        }
    }
}

/// Variable-length binary columns (`VARBINARY` and the `BLOB` family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlobKind {
    VarBinary,
    TinyBlob,
    Blob,
    MediumBlob,
    LongBlob,
}

impl BlobKind {
    fn sql(self) -> &'static str {
        match self {
            BlobKind::VarBinary => "varbinary",
            BlobKind::TinyBlob => "tinyblob",
            BlobKind::Blob => "blob",
            BlobKind::MediumBlob => "mediumblob",
            BlobKind::LongBlob => "longblob",
        }
    }
}

/// A column type, as far as it matters for carrying values without loss.
///
/// Aliases collapse to what the binlog can see: `BOOL` is `TINYINT`, `JSON` is `LONGTEXT`, and
/// `INET4`, `INET6` and `UUID` are `BINARY(4)`, `BINARY(16)` and `BINARY(16)` (the binlog's
/// TABLE_MAP carries no type name for them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ColumnType {
    Integer {
        width: IntWidth,
        unsigned: bool,
    },
    Decimal {
        precision: u8,
        scale: u8,
    },
    Float,
    Double,
    Bit {
        bits: u8,
    },
    Year,
    Date,
    Time {
        fsp: u8,
    },
    DateTime {
        fsp: u8,
    },
    Timestamp {
        fsp: u8,
    },
    Text {
        kind: TextKind,
    },
    /// Fixed-length `BINARY(len)`; values are always exactly `len` bytes (zero-padded).
    Binary {
        len: u16,
    },
    Blob {
        kind: BlobKind,
    },
    Enum {
        values: Vec<String>,
    },
    Set {
        values: Vec<String>,
    },
    Geometry,
}

impl ColumnType {
    /// Canonical text form, e.g. `bigint unsigned`, `decimal(65,30)`, `datetime(6)`,
    /// `enum('a','b c')`. It parses back with [`FromStr`].
    pub fn sql(&self) -> String {
        match self {
            ColumnType::Integer { width, unsigned } => {
                if *unsigned {
                    format!("{} unsigned", width.sql())
                } else {
                    width.sql().to_owned()
                }
            }
            ColumnType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            ColumnType::Float => "float".into(),
            ColumnType::Double => "double".into(),
            ColumnType::Bit { bits } => format!("bit({bits})"),
            ColumnType::Year => "year".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Time { fsp } => format!("time({fsp})"),
            ColumnType::DateTime { fsp } => format!("datetime({fsp})"),
            ColumnType::Timestamp { fsp } => format!("timestamp({fsp})"),
            ColumnType::Text { kind } => kind.sql().into(),
            ColumnType::Binary { len } => format!("binary({len})"),
            ColumnType::Blob { kind } => kind.sql().into(),
            ColumnType::Enum { values } => format!("enum({})", quote_list(values)),
            ColumnType::Set { values } => format!("set({})", quote_list(values)),
            ColumnType::Geometry => "geometry".into(),
        }
    }

    /// Whether the type holds character data (as opposed to bytes or numbers).
    pub fn is_textual(&self) -> bool {
        matches!(
            self,
            ColumnType::Text { .. } | ColumnType::Enum { .. } | ColumnType::Set { .. }
        )
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql())
    }
}

fn quote_list(values: &[String]) -> String {
    values
        .iter()
        .map(|v| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `'a','b''c'` into its values: the inverse of `quote_list`, and also the reader of the
/// lists `information_schema` and `SHOW CREATE TABLE` print (with MariaDB's backslash escapes
/// `\n`, `\t`, `\0`, `\r`, `\Z`; any other escaped character stands for itself).
pub fn unquote_list(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        if chars.next()? != '\'' {
            return None;
        }
        let mut v = String::new();
        loop {
            match chars.next()? {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    v.push('\'');
                }
                '\'' => break,
                '\\' => match chars.next()? {
                    'n' => v.push('\n'),
                    't' => v.push('\t'),
                    '0' => v.push('\0'),
                    'r' => v.push('\r'),
                    'Z' => v.push('\x1a'),
                    c => v.push(c),
                },
                c => v.push(c),
            }
        }
        out.push(v);
        match chars.next() {
            None => return Some(out),
            Some(',') => continue,
            Some(_) => return None,
        }
    }
}

/// A `mariadb.type` text that is not one of the canonical forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown column type '{0}'")]
pub struct ParseTypeError(pub String);

impl FromStr for ColumnType {
    type Err = ParseTypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseTypeError(s.to_owned());
        let (head, args) = match s.find('(') {
            Some(i) if s.ends_with(')') => (&s[..i], Some(&s[i + 1..s.len() - 1])),
            Some(_) => return Err(err()),
            None => (s, None),
        };
        let num = |a: Option<&str>| -> Result<u16, ParseTypeError> {
            a.ok_or_else(err)?.parse().map_err(|_| err())
        };
        let small = |a: Option<&str>| -> Result<u8, ParseTypeError> {
            u8::try_from(num(a)?).map_err(|_| err())
        };
        let (base, unsigned) = match head.strip_suffix(" unsigned") {
            Some(b) => (b, true),
            None => (head, false),
        };
        let int = |width| {
            if args.is_some() {
                Err(err())
            } else {
                Ok(ColumnType::Integer { width, unsigned })
            }
        };
        if unsigned
            && !matches!(
                base,
                "tinyint" | "smallint" | "mediumint" | "int" | "bigint"
            )
        {
            return Err(err());
        }
        let plain = |t: ColumnType| if args.is_some() { Err(err()) } else { Ok(t) };
        let text = |kind| ColumnType::Text { kind };
        let blob = |kind| ColumnType::Blob { kind };
        match base {
            "tinyint" => int(IntWidth::Tiny),
            "smallint" => int(IntWidth::Small),
            "mediumint" => int(IntWidth::Medium),
            "int" => int(IntWidth::Int),
            "bigint" => int(IntWidth::Big),
            "decimal" => {
                let (p, sc) = args.and_then(|a| a.split_once(',')).ok_or_else(err)?;
                Ok(ColumnType::Decimal {
                    precision: p.parse().map_err(|_| err())?,
                    scale: sc.parse().map_err(|_| err())?,
                })
            }
            "float" => plain(ColumnType::Float),
            "double" => plain(ColumnType::Double),
            "bit" => Ok(ColumnType::Bit { bits: small(args)? }),
            "year" => plain(ColumnType::Year),
            "date" => plain(ColumnType::Date),
            "time" => Ok(ColumnType::Time { fsp: small(args)? }),
            "datetime" => Ok(ColumnType::DateTime { fsp: small(args)? }),
            "timestamp" => Ok(ColumnType::Timestamp { fsp: small(args)? }),
            "char" => plain(text(TextKind::Char)),
            "varchar" => plain(text(TextKind::VarChar)),
            "tinytext" => plain(text(TextKind::TinyText)),
            "text" => plain(text(TextKind::Text)),
            "mediumtext" => plain(text(TextKind::MediumText)),
            "longtext" => plain(text(TextKind::LongText)),
            "binary" => Ok(ColumnType::Binary { len: num(args)? }),
            "varbinary" => plain(blob(BlobKind::VarBinary)),
            "tinyblob" => plain(blob(BlobKind::TinyBlob)),
            "blob" => plain(blob(BlobKind::Blob)),
            "mediumblob" => plain(blob(BlobKind::MediumBlob)),
            "longblob" => plain(blob(BlobKind::LongBlob)),
            "enum" => Ok(ColumnType::Enum {
                values: unquote_list(args.ok_or_else(err)?).ok_or_else(err)?,
            }),
            "set" => Ok(ColumnType::Set {
                values: unquote_list(args.ok_or_else(err)?).ok_or_else(err)?,
            }),
            "geometry" => plain(ColumnType::Geometry),
            _ => Err(err()),
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
}

/// The shape of one table at one point in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TableSchema {
    pub db: String,
    pub table: String,
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary-key columns, in key order.
    pub primary_key: Vec<usize>,
}

impl TableSchema {
    /// A table from its columns written as `name type [null]` in the canonical type text
    /// ([`ColumnType::sql`]; a column is NOT NULL unless `null` follows), and its key's column
    /// names in key order: `TableSchema::parse("d", "t", &["id int", "v varchar null"], &["id"])`.
    /// For tests and tools; fails naming the column whose text does not read.
    pub fn parse(
        db: &str,
        table: &str,
        columns: &[&str],
        key: &[&str],
    ) -> Result<TableSchema, String> {
        let columns = columns
            .iter()
            .map(|text| {
                let (name, ty) = text
                    .split_once(' ')
                    .ok_or_else(|| format!("column '{text}': expected 'name type [null]'"))?;
                let (ty, nullable) = match ty.strip_suffix(" null") {
                    Some(t) => (t, true),
                    None => (ty, false),
                };
                Ok(Column {
                    name: name.to_owned(),
                    ty: ty.parse().map_err(|e| format!("column '{text}': {e}"))?,
                    nullable,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut t = TableSchema {
            db: db.to_owned(),
            table: table.to_owned(),
            columns,
            primary_key: vec![],
        };
        t.primary_key = key
            .iter()
            .map(|k| {
                t.column_index(k)
                    .ok_or_else(|| format!("key column '{k}' is not a column of {db}.{table}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(t)
    }

    /// `db.table`, as used in messages and filters.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.db, self.table)
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// A calendar date as MariaDB stores it. Month and day may be zero (`0000-00-00`, `2024-00-15`),
/// which MariaDB accepts unless `NO_ZERO_DATE` / `NO_ZERO_IN_DATE` are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// Whether this is a real calendar date (no zero parts, day within the month).
    pub fn is_calendar_date(&self) -> bool {
        (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= days_in_month(self.year, self.month)
    }

    /// Days since 1970-01-01 for a calendar date (proleptic Gregorian), else `None`.
    pub fn to_epoch_days(&self) -> Option<i32> {
        if !self.is_calendar_date() {
            return None;
        }
        Some(days_from_civil(self.year as i64, self.month as i64, self.day as i64) as i32)
    }

    pub fn from_epoch_days(days: i32) -> Self {
        let (y, m, d) = civil_from_days(days as i64);
        Date {
            year: y as u16,
            month: m as u8,
            day: d as u8,
        }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl FromStr for Date {
    type Err = ParseTypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseTypeError(format!("date '{s}'"));
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(err());
        }
        let d = Date {
            year: s[0..4].parse().map_err(|_| err())?,
            month: s[5..7].parse().map_err(|_| err())?,
            day: s[8..10].parse().map_err(|_| err())?,
        };
        if d.month > 12 || d.day > 31 {
            return Err(err());
        }
        Ok(d)
    }
}

/// A `DATETIME` value: a date (possibly with zero parts) and a time of day with microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DateTime {
    pub date: Date,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub micros: u32,
}

impl DateTime {
    /// Microseconds since 1970-01-01 00:00:00 read as a local (zone-less) time, for calendar
    /// dates; `None` for dates with zero parts.
    pub fn to_epoch_micros(&self) -> Option<i64> {
        let days = self.date.to_epoch_days()? as i64;
        let secs = self.hour as i64 * 3600 + self.minute as i64 * 60 + self.second as i64;
        Some((days * 86_400 + secs) * 1_000_000 + self.micros as i64)
    }

    pub fn from_epoch_micros(us: i64) -> Self {
        let days = us.div_euclid(86_400_000_000);
        let rem = us.rem_euclid(86_400_000_000);
        let secs = rem / 1_000_000;
        DateTime {
            date: Date::from_epoch_days(days as i32),
            hour: (secs / 3600) as u8,
            minute: (secs / 60 % 60) as u8,
            second: (secs % 60) as u8,
            micros: (rem % 1_000_000) as u32,
        }
    }
}

impl fmt::Display for DateTime {
    /// `YYYY-MM-DD HH:MM:SS.ffffff`, always with six fractional digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:02}:{:02}:{:02}.{:06}",
            self.date, self.hour, self.minute, self.second, self.micros
        )
    }
}

impl FromStr for DateTime {
    type Err = ParseTypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseTypeError(format!("datetime '{s}'"));
        let (d, t) = s.split_once(' ').ok_or_else(err)?;
        let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
        let mut it = hms.split(':');
        let mut part = |max: u8| -> Result<u8, ParseTypeError> {
            let v: u8 = it.next().ok_or_else(err)?.parse().map_err(|_| err())?;
            if v > max {
                return Err(err());
            }
            Ok(v)
        };
        let (hour, minute, second) = (part(23)?, part(59)?, part(59)?);
        if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let micros = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<6}").parse().map_err(|_| err())?
        };
        Ok(DateTime {
            date: d.parse().map_err(|_| err())?,
            hour,
            minute,
            second,
            micros,
        })
    }
}

/// Formats a signed `TIME` in microseconds as MariaDB prints it: `-838:59:59.000000`.
pub fn format_time(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "" };
    let a = us.unsigned_abs();
    let secs = a / 1_000_000;
    format!(
        "{sign}{}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        a % 1_000_000
    )
}

/// One column value. Which variant a column holds follows from its [`ColumnType`]; see the
/// mapping table in the crate docs.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// Every integer type except `BIGINT UNSIGNED`; also `YEAR`.
    Int(i64),
    /// `BIGINT UNSIGNED`.
    UInt(u64),
    /// `DECIMAL`, as its exact decimal text with exactly `scale` fractional digits.
    Decimal(String),
    Float(f32),
    Double(f64),
    Date(Date),
    DateTime(DateTime),
    /// `TIMESTAMP`: microseconds since the epoch, UTC. 0 is MariaDB's zero timestamp
    /// `0000-00-00 00:00:00` (the epoch itself is outside the `TIMESTAMP` range).
    Timestamp(i64),
    /// `TIME`: signed microseconds, within ±838:59:59.999999.
    Time(i64),
    /// Character data: `CHAR`, `VARCHAR`, `TEXT`, `ENUM`, `SET` (comma-separated members).
    Text(String),
    /// Binary data: `BINARY` (padded), `VARBINARY`, `BLOB`, `BIT` (big-endian), `GEOMETRY`.
    Bytes(Vec<u8>),
}

impl Value {
    /// A short human-readable rendering, for messages: SQL-like literals, long text cut at 64
    /// characters and bytes at 32, as `X'…'`.
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "NULL".into(),
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Decimal(d) => d.clone(),
            Value::Float(f) => f.to_string(),
            Value::Double(f) => f.to_string(),
            Value::Date(d) => format!("'{d}'"),
            Value::DateTime(d) => format!("'{d}'"),
            Value::Timestamp(us) => format!("'{}'", DateTime::from_epoch_micros(*us)),
            Value::Time(us) => format!("'{}'", format_time(*us)),
            Value::Text(s) if s.chars().count() > 64 => {
                format!("'{}…'", s.chars().take(64).collect::<String>())
            }
            Value::Text(s) => format!("'{s}'"),
            Value::Bytes(b) => {
                let hex: String = b.iter().take(32).map(|x| format!("{x:02X}")).collect();
                let more = if b.len() > 32 { "…" } else { "" };
                format!("X'{hex}'{more}")
            }
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// A row: one value per column of its [`TableSchema`], in column order.
pub type Row = Vec<Value>;

fn is_leap(y: u16) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u16, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days, proleptic Gregorian.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_parses_from_column_texts() {
        let t = TableSchema::parse("d", "t", &["id bigint unsigned", "v varchar null"], &["id"])
            .unwrap();
        assert_eq!(t.qualified_name(), "d.t");
        assert_eq!(t.primary_key, [0]);
        assert_eq!(
            t.columns[0].ty,
            ColumnType::Integer {
                width: IntWidth::Big,
                unsigned: true
            }
        );
        assert!(!t.columns[0].nullable && t.columns[1].nullable);
        let e = TableSchema::parse("d", "t", &["id integer"], &["id"]).unwrap_err();
        assert!(e.contains("column 'id integer'"), "{e}");
        let e = TableSchema::parse("d", "t", &["id int"], &["k"]).unwrap_err();
        assert_eq!(e, "key column 'k' is not a column of d.t");
    }

    #[test]
    fn value_lists_round_trip_and_read_mariadb_escapes() {
        let values: Vec<String> = ["", "it's", "back\\slash", "new\nline", "a,b", "\\n"]
            .map(String::from)
            .to_vec();
        assert_eq!(unquote_list(&quote_list(&values)), Some(values));
        // As information_schema prints them.
        assert_eq!(
            unquote_list(r"'a\nb','c\\d','e''f','\Z'"),
            Some(vec![
                "a\nb".into(),
                "c\\d".into(),
                "e'f".into(),
                "\x1a".into()
            ])
        );
        assert_eq!(unquote_list("a"), None);
        assert_eq!(unquote_list("'a'b"), None);
    }

    #[test]
    fn type_text_round_trips() {
        let types = [
            ColumnType::Integer {
                width: IntWidth::Big,
                unsigned: true,
            },
            ColumnType::Integer {
                width: IntWidth::Medium,
                unsigned: false,
            },
            ColumnType::Decimal {
                precision: 65,
                scale: 30,
            },
            ColumnType::Float,
            ColumnType::Double,
            ColumnType::Bit { bits: 64 },
            ColumnType::Year,
            ColumnType::Date,
            ColumnType::Time { fsp: 6 },
            ColumnType::DateTime { fsp: 0 },
            ColumnType::Timestamp { fsp: 3 },
            ColumnType::Text {
                kind: TextKind::MediumText,
            },
            ColumnType::Binary { len: 16 },
            ColumnType::Blob {
                kind: BlobKind::VarBinary,
            },
            ColumnType::Enum {
                values: vec![
                    "a".into(),
                    "b c".into(),
                    "it's".into(),
                    "back\\slash".into(),
                    "".into(),
                ],
            },
            ColumnType::Set {
                values: vec!["x".into(), "y,".into()],
            },
            ColumnType::Geometry,
        ];
        for t in types {
            let s = t.sql();
            assert_eq!(s.parse::<ColumnType>().unwrap(), t, "{s}");
        }
        for bad in [
            "int(11)",
            "varchar(10)",
            "decimal(10)",
            "float unsigned",
            "enum(a)",
            "nope",
        ] {
            assert!(bad.parse::<ColumnType>().is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_convert_to_epoch_days() {
        let d = |s: &str| s.parse::<Date>().unwrap();
        assert_eq!(d("1970-01-01").to_epoch_days(), Some(0));
        assert_eq!(d("1969-12-31").to_epoch_days(), Some(-1));
        assert_eq!(d("2000-02-29").to_epoch_days(), Some(11_016));
        assert_eq!(d("0000-00-00").to_epoch_days(), None);
        assert_eq!(d("2024-00-15").to_epoch_days(), None);
        assert_eq!(d("2023-02-29").to_epoch_days(), None);
        for s in ["1000-01-01", "9999-12-31", "0001-01-01", "2024-02-29"] {
            let days = d(s).to_epoch_days().unwrap();
            assert_eq!(Date::from_epoch_days(days), d(s), "{s}");
        }
    }

    #[test]
    fn datetimes_round_trip_through_micros_and_text() {
        for s in [
            "1000-01-01 00:00:00.000000",
            "9999-12-31 23:59:59.999999",
            "1969-12-31 23:59:59.000001",
        ] {
            let dt: DateTime = s.parse().unwrap();
            assert_eq!(dt.to_string(), s);
            let us = dt.to_epoch_micros().unwrap();
            assert_eq!(DateTime::from_epoch_micros(us), dt);
        }
        let z: DateTime = "0000-00-00 00:00:00".parse().unwrap();
        assert_eq!(z.to_epoch_micros(), None);
        assert_eq!(z.to_string(), "0000-00-00 00:00:00.000000");
        assert_eq!(
            "2024-01-02 03:04:05.5".parse::<DateTime>().unwrap().micros,
            500_000
        );
    }

    #[test]
    fn time_formats_like_mariadb() {
        assert_eq!(
            format_time(-(838 * 3600 + 59 * 60 + 59) * 1_000_000 - 999_999),
            "-838:59:59.999999"
        );
        assert_eq!(format_time(25 * 3_600_000_000), "25:00:00.000000");
        assert_eq!(format_time(0), "0:00:00.000000");
    }
}
