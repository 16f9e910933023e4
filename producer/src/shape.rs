//! Table shapes: a [`TableSchema`] from a binlog TABLE_MAP event (with
//! `binlog_row_metadata=FULL`), or from `information_schema` for the snapshot. Both paths yield
//! the same shape for the same table, so snapshot reads and binlog rows encode identically.
//!
//! Also the conversion of binlog and snapshot values into [`Value`]s. A column type that cannot
//! be carried without loss is refused when the shape is loaded, naming table, column and type,
//! before any row of the table is read.

use std::collections::HashMap;

use continuum_schemas::types::{BlobKind, Date, DateTime, IntWidth, TextKind};
use continuum_schemas::{Column, ColumnType, TableSchema, Value};
use mysql_async::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType as MyType;
use mysql_async::Value as MyValue;

/// A column whose type Continuum cannot carry without loss.
#[derive(Debug, Clone, thiserror::Error)]
#[error("table {table}, column {column}: type {ty} cannot be replicated without loss: {reason}")]
pub struct UnsupportedColumn {
    pub table: String,
    pub column: String,
    pub ty: String,
    pub reason: String,
}

/// Collation id to character set name, read once from `information_schema.COLLATIONS`.
#[derive(Debug, Clone, Default)]
pub struct Charsets(pub HashMap<u16, String>);

impl Charsets {
    fn kind(&self, id: u16) -> CharsetKind {
        match self.0.get(&id).map(String::as_str) {
            Some("binary") => CharsetKind::Binary,
            Some("utf8mb4" | "utf8mb3" | "utf8" | "ascii") => CharsetKind::Utf8,
            Some(other) => CharsetKind::Other(other.to_owned()),
            None => CharsetKind::Other(format!("collation id {id}")),
        }
    }
}

enum CharsetKind {
    Binary,
    Utf8,
    Other(String),
}

fn unsupported_charset(table: &str, column: &str, ty: &str, cs: &str) -> UnsupportedColumn {
    UnsupportedColumn {
        table: table.into(),
        column: column.into(),
        ty: format!("{ty} CHARACTER SET {cs}"),
        reason: "only utf8mb4, utf8mb3 and ascii text is carried; convert the column to utf8mb4 (ALTER TABLE ... CONVERT TO CHARACTER SET utf8mb4) or exclude the table".into(),
    }
}

/// Length in bytes of a `MYSQL_TYPE_STRING` column from its TABLE_MAP metadata.
fn string_length(meta: &[u8]) -> u16 {
    if meta.len() < 2 {
        return 0;
    }
    let (b0, b1) = (meta[0] as u16, meta[1] as u16);
    if (b0 & 0x30) != 0x30 {
        b1 | (((b0 & 0x30) ^ 0x30) << 4)
    } else {
        b1
    }
}

/// The shape of a table from its TABLE_MAP event.
pub fn from_table_map(
    tme: &TableMapEvent<'_>,
    charsets: &Charsets,
) -> Result<TableSchema, UnsupportedColumn> {
    let db = tme.database_name().into_owned();
    let table = tme.table_name().into_owned();
    let qualified = format!("{db}.{table}");
    let bad_meta = |reason: String| UnsupportedColumn {
        table: qualified.clone(),
        column: "*".into(),
        ty: "?".into(),
        reason,
    };
    let meta = OptionalMetaExtractor::new(tme.iter_optional_meta())
        .map_err(|e| bad_meta(format!("unreadable TABLE_MAP metadata: {e}")))?;
    let names: Vec<String> = meta
        .iter_column_name()
        .map(|n| n.map(|n| n.name().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| bad_meta(format!("unreadable column names: {e}")))?;
    let n = tme.columns_count() as usize;
    if names.len() != n {
        return Err(bad_meta(format!(
            "the TABLE_MAP carries {} column names for {n} columns; set binlog_row_metadata=FULL",
            names.len()
        )));
    }
    let mut enum_values = Vec::new();
    let mut set_values = Vec::new();
    for f in tme.iter_optional_meta() {
        match f.map_err(|e| bad_meta(format!("unreadable TABLE_MAP metadata: {e}")))? {
            OptionalMetadataField::EnumStrValue(v) => {
                enum_values.extend(v.iter_values().map(|vals| {
                    vals.map(|vals| {
                        vals.values()
                            .iter()
                            .map(|x| x.value().into_owned())
                            .collect::<Vec<_>>()
                    })
                }))
            }
            OptionalMetadataField::SetStrValue(v) => {
                set_values.extend(v.iter_values().map(|vals| {
                    vals.map(|vals| {
                        vals.values()
                            .iter()
                            .map(|x| x.value().into_owned())
                            .collect::<Vec<_>>()
                    })
                }))
            }
            _ => {}
        }
    }
    let mut enum_values = enum_values.into_iter();
    let mut set_values = set_values.into_iter();
    let mut signedness = meta.iter_signedness();
    let mut charset_iter = meta.iter_charset();
    let nulls = tme.null_bitmask();
    let mut columns = Vec::with_capacity(n);
    for (i, name) in names.into_iter().enumerate() {
        let my = tme
            .get_column_type(i)
            .map_err(|e| bad_meta(format!("column {name}: {e}")))?
            .ok_or_else(|| bad_meta(format!("column {name}: no type")))?;
        let m = tme.get_column_metadata(i).unwrap_or(&[]);
        let unsigned = if my.is_numeric_type() {
            signedness.next().unwrap_or(false)
        } else {
            false
        };
        let charset = if my.is_character_type() {
            Some(
                charset_iter
                    .next()
                    .transpose()
                    .map_err(|e| bad_meta(format!("column {name}: charset: {e}")))?
                    .unwrap_or(63),
            )
        } else {
            None
        };
        let unsupported = |ty: &str, reason: &str| UnsupportedColumn {
            table: qualified.clone(),
            column: name.clone(),
            ty: ty.into(),
            reason: reason.into(),
        };
        let text_or_bytes = |text: ColumnType,
                             bytes: ColumnType,
                             sql: &str|
         -> Result<ColumnType, UnsupportedColumn> {
            match charsets.kind(charset.unwrap_or(63)) {
                CharsetKind::Binary => Ok(bytes),
                CharsetKind::Utf8 => Ok(text),
                CharsetKind::Other(cs) => Err(unsupported_charset(&qualified, &name, sql, &cs)),
            }
        };
        let int = |width| ColumnType::Integer { width, unsigned };
        // The fractional-second digits of TIME2, DATETIME2 and TIMESTAMP2.
        let fsp = m.first().copied().unwrap_or(0);
        use MyType::*;
        let ty = match my {
            MYSQL_TYPE_TINY => int(IntWidth::Tiny),
            MYSQL_TYPE_SHORT => int(IntWidth::Small),
            MYSQL_TYPE_INT24 => int(IntWidth::Medium),
            MYSQL_TYPE_LONG => int(IntWidth::Int),
            MYSQL_TYPE_LONGLONG => int(IntWidth::Big),
            MYSQL_TYPE_NEWDECIMAL => ColumnType::Decimal {
                precision: m.first().copied().unwrap_or(10),
                scale: m.get(1).copied().unwrap_or(0),
            },
            MYSQL_TYPE_FLOAT => ColumnType::Float,
            MYSQL_TYPE_DOUBLE => ColumnType::Double,
            MYSQL_TYPE_BIT => ColumnType::Bit {
                bits: (m.get(1).copied().unwrap_or(0) as u16 * 8
                    + m.first().copied().unwrap_or(0) as u16) as u8,
            },
            MYSQL_TYPE_YEAR => ColumnType::Year,
            MYSQL_TYPE_NEWDATE | MYSQL_TYPE_DATE => ColumnType::Date,
            MYSQL_TYPE_TIME2 => ColumnType::Time { fsp },
            MYSQL_TYPE_TIME => ColumnType::Time { fsp: 0 },
            MYSQL_TYPE_DATETIME2 => ColumnType::DateTime { fsp },
            MYSQL_TYPE_DATETIME => ColumnType::DateTime { fsp: 0 },
            MYSQL_TYPE_TIMESTAMP2 => ColumnType::Timestamp { fsp },
            MYSQL_TYPE_TIMESTAMP => ColumnType::Timestamp { fsp: 0 },
            MYSQL_TYPE_ENUM => ColumnType::Enum {
                values: enum_values
                    .next()
                    .transpose()
                    .map_err(|e| bad_meta(format!("column {name}: ENUM values: {e}")))?
                    .ok_or_else(|| {
                        unsupported(
                            "ENUM",
                            "the TABLE_MAP carries no ENUM values; set binlog_row_metadata=FULL",
                        )
                    })?,
            },
            MYSQL_TYPE_SET => ColumnType::Set {
                values: set_values
                    .next()
                    .transpose()
                    .map_err(|e| bad_meta(format!("column {name}: SET values: {e}")))?
                    .ok_or_else(|| {
                        unsupported(
                            "SET",
                            "the TABLE_MAP carries no SET values; set binlog_row_metadata=FULL",
                        )
                    })?,
            },
            MYSQL_TYPE_STRING => text_or_bytes(
                ColumnType::Text {
                    kind: TextKind::Char,
                },
                ColumnType::Binary {
                    len: string_length(m),
                },
                "CHAR",
            )?,
            MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => text_or_bytes(
                ColumnType::Text {
                    kind: TextKind::VarChar,
                },
                ColumnType::Blob {
                    kind: BlobKind::VarBinary,
                },
                "VARCHAR",
            )?,
            MYSQL_TYPE_BLOB
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB => {
                let (tk, bk) = match m.first().copied().unwrap_or(2) {
                    1 => (TextKind::TinyText, BlobKind::TinyBlob),
                    2 => (TextKind::Text, BlobKind::Blob),
                    3 => (TextKind::MediumText, BlobKind::MediumBlob),
                    _ => (TextKind::LongText, BlobKind::LongBlob),
                };
                text_or_bytes(
                    ColumnType::Text { kind: tk },
                    ColumnType::Blob { kind: bk },
                    "TEXT",
                )?
            }
            MYSQL_TYPE_GEOMETRY => ColumnType::Geometry,
            other => {
                return Err(unsupported(
                    &format!("{other:?}"),
                    "no lossless Avro mapping is defined for this type",
                ))
            }
        };
        columns.push(Column {
            name,
            ty,
            nullable: nulls.get(i).map(|b| *b).unwrap_or(true),
        });
    }
    let primary_key: Vec<usize> = meta
        .iter_primary_key()
        .map(|r| r.map(|i| i as usize))
        .collect::<Result<_, _>>()
        .map_err(|e| bad_meta(format!("unreadable primary key metadata: {e}")))?;
    Ok(TableSchema {
        db,
        table,
        columns,
        primary_key,
    })
}

/// One row of `information_schema.COLUMNS`, as the snapshot reads it.
#[derive(Debug, Clone)]
pub struct InfoColumn {
    /// `COLUMN_NAME`.
    pub name: String,
    /// `DATA_TYPE` (`int`, `varchar`, ...) and `COLUMN_TYPE` (`int(10) unsigned`, `enum('a')`).
    pub data_type: String,
    pub column_type: String,
    /// `IS_NULLABLE = 'YES'`.
    pub nullable: bool,
    /// `NUMERIC_PRECISION` and `NUMERIC_SCALE` (DECIMAL, BIT), `DATETIME_PRECISION`.
    pub numeric_precision: Option<u64>,
    pub numeric_scale: Option<u64>,
    pub datetime_precision: Option<u64>,
    /// `CHARACTER_SET_NAME` of a text column.
    pub charset: Option<String>,
    /// `CHARACTER_OCTET_LENGTH` (BINARY(n)).
    pub octet_length: Option<u64>,
}

/// Parses `enum('a','b''c')` / `set(...)` value lists as `information_schema` prints them.
pub fn value_list(column_type: &str) -> Option<Vec<String>> {
    let inner = column_type.split_once('(')?.1.strip_suffix(')')?;
    continuum_schemas::types::unquote_list(inner)
}

/// The shape of a table from `information_schema` (columns in ordinal order, primary-key
/// column names in key order).
pub fn from_information_schema(
    db: &str,
    table: &str,
    cols: &[InfoColumn],
    pk: &[String],
) -> Result<TableSchema, UnsupportedColumn> {
    let qualified = format!("{db}.{table}");
    let mut columns = Vec::with_capacity(cols.len());
    for c in cols {
        let unsigned = c.column_type.contains("unsigned");
        let unsupported = |reason: &str| UnsupportedColumn {
            table: qualified.clone(),
            column: c.name.clone(),
            ty: c.column_type.clone(),
            reason: reason.into(),
        };
        let charset_kind = match c.charset.as_deref() {
            None | Some("binary") => CharsetKind::Binary,
            Some("utf8mb4" | "utf8mb3" | "utf8" | "ascii") => CharsetKind::Utf8,
            Some(o) => CharsetKind::Other(o.into()),
        };
        // TEXT of a binary charset is a BLOB.
        let text_or_bytes =
            |text: TextKind, bytes: BlobKind| -> Result<ColumnType, UnsupportedColumn> {
                match &charset_kind {
                    CharsetKind::Binary => Ok(ColumnType::Blob { kind: bytes }),
                    CharsetKind::Utf8 => Ok(ColumnType::Text { kind: text }),
                    CharsetKind::Other(cs) => Err(unsupported_charset(
                        &qualified,
                        &c.name,
                        &c.data_type.to_uppercase(),
                        cs,
                    )),
                }
            };
        let int = |width| ColumnType::Integer { width, unsigned };
        let blob = |kind| ColumnType::Blob { kind };
        let fsp = c.datetime_precision.unwrap_or(0) as u8;
        let ty = match c.data_type.as_str() {
            "tinyint" => int(IntWidth::Tiny),
            "smallint" => int(IntWidth::Small),
            "mediumint" => int(IntWidth::Medium),
            "int" => int(IntWidth::Int),
            "bigint" => int(IntWidth::Big),
            "decimal" => ColumnType::Decimal {
                precision: c.numeric_precision.unwrap_or(10) as u8,
                scale: c.numeric_scale.unwrap_or(0) as u8,
            },
            "float" => ColumnType::Float,
            "double" => ColumnType::Double,
            "bit" => ColumnType::Bit {
                bits: c.numeric_precision.unwrap_or(1) as u8,
            },
            "year" => ColumnType::Year,
            "date" => ColumnType::Date,
            "time" => ColumnType::Time { fsp },
            "datetime" => ColumnType::DateTime { fsp },
            "timestamp" => ColumnType::Timestamp { fsp },
            "enum" => ColumnType::Enum {
                values: value_list(&c.column_type)
                    .ok_or_else(|| unsupported("unreadable ENUM values"))?,
            },
            "set" => ColumnType::Set {
                values: value_list(&c.column_type)
                    .ok_or_else(|| unsupported("unreadable SET values"))?,
            },
            "char" => ColumnType::Text {
                kind: TextKind::Char,
            },
            "varchar" => text_or_bytes(TextKind::VarChar, BlobKind::VarBinary)?,
            "binary" => ColumnType::Binary {
                len: c.octet_length.unwrap_or(0) as u16,
            },
            "varbinary" => blob(BlobKind::VarBinary),
            "inet4" => ColumnType::Binary { len: 4 },
            "inet6" | "uuid" => ColumnType::Binary { len: 16 },
            "tinytext" => text_or_bytes(TextKind::TinyText, BlobKind::TinyBlob)?,
            "text" => text_or_bytes(TextKind::Text, BlobKind::Blob)?,
            "mediumtext" => text_or_bytes(TextKind::MediumText, BlobKind::MediumBlob)?,
            "longtext" | "json" => text_or_bytes(TextKind::LongText, BlobKind::LongBlob)?,
            "tinyblob" => blob(BlobKind::TinyBlob),
            "blob" => blob(BlobKind::Blob),
            "mediumblob" => blob(BlobKind::MediumBlob),
            "longblob" => blob(BlobKind::LongBlob),
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
            | "multipolygon" | "geometrycollection" => ColumnType::Geometry,
            _ => {
                return Err(unsupported(
                    "no lossless Avro mapping is defined for this type",
                ))
            }
        };
        if let (
            ColumnType::Text {
                kind: TextKind::Char,
            },
            CharsetKind::Other(cs),
        ) = (&ty, &charset_kind)
        {
            return Err(unsupported_charset(&qualified, &c.name, "CHAR", cs));
        }
        columns.push(Column {
            name: c.name.clone(),
            ty,
            nullable: c.nullable,
        });
    }
    let primary_key = pk
        .iter()
        .map(|n| {
            columns
                .iter()
                .position(|c| &c.name == n)
                .ok_or_else(|| UnsupportedColumn {
                    table: qualified.clone(),
                    column: n.clone(),
                    ty: "?".into(),
                    reason: "primary-key column not among the table's columns".into(),
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(TableSchema {
        db: db.into(),
        table: table.into(),
        columns,
        primary_key,
    })
}

/// Why a source value could not be converted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("table {table}, column {column} ({ty}): {reason}")]
pub struct BadValue {
    pub table: String,
    pub column: String,
    pub ty: String,
    pub reason: String,
}

fn int_value(ty: &ColumnType, v: &MyValue) -> Option<Value> {
    let ColumnType::Integer { width, unsigned } = ty else {
        return None;
    };
    match (v, *width, *unsigned) {
        (MyValue::UInt(u), IntWidth::Big, true) => Some(Value::UInt(*u)),
        (MyValue::Int(i), IntWidth::Big, true) => Some(Value::UInt(*i as u64)),
        (MyValue::Int(i), w, u) => {
            let (lo, hi) = w.range(u);
            let mut x = *i as i128;
            if u && x < 0 {
                // A narrow unsigned column that arrived sign-extended.
                x += hi + 1;
            } else if !u && x > hi && x <= 2 * hi + 1 {
                // mysql_common reads a signed MEDIUMINT from the binlog without sign extension
                // (0x800000 comes back as 8388608): restore the two's complement.
                x -= 2 * (hi + 1);
            }
            (lo..=hi).contains(&x).then_some(Value::Int(x as i64))
        }
        (MyValue::UInt(u), w, uns) => {
            let (_, hi) = w.range(uns);
            ((*u as i128) <= hi).then_some(Value::Int(*u as i64))
        }
        _ => None,
    }
}

fn parse_ascii<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn micros_of_time(neg: bool, days: u32, h: u8, m: u8, s: u8, us: u32) -> i64 {
    let t =
        ((days as i64 * 24 + h as i64) * 3600 + m as i64 * 60 + s as i64) * 1_000_000 + us as i64;
    if neg {
        -t
    } else {
        t
    }
}

/// A date-time from the parts of a `mysql_common` `Value::Date`.
fn date_time(
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    micros: u32,
) -> DateTime {
    DateTime {
        date: Date { year, month, day },
        hour,
        minute,
        second,
        micros,
    }
}

/// Converts one value as the snapshot (binary protocol, session time zone UTC) or the binlog
/// delivers it.
pub fn convert(
    t: &TableSchema,
    col: usize,
    v: &MyValue,
    from_binlog: bool,
) -> Result<Value, BadValue> {
    let c = &t.columns[col];
    let bad = |reason: String| BadValue {
        table: t.qualified_name(),
        column: c.name.clone(),
        ty: c.ty.sql(),
        reason,
    };
    if matches!(v, MyValue::NULL) {
        return Ok(Value::Null);
    }
    let got = || format!("unexpected value {v:?}");
    Ok(match (&c.ty, v) {
        (ColumnType::Integer { .. }, _) => int_value(&c.ty, v).ok_or_else(|| bad(got()))?,
        (ColumnType::Decimal { .. }, MyValue::Bytes(b)) => {
            Value::Decimal(String::from_utf8(b.clone()).map_err(|_| bad(got()))?)
        }
        (ColumnType::Float, MyValue::Float(f)) => Value::Float(*f),
        (ColumnType::Float, MyValue::Double(f)) => Value::Float(*f as f32),
        (ColumnType::Double, MyValue::Double(f)) => Value::Double(*f),
        (ColumnType::Bit { .. }, MyValue::Bytes(b)) => Value::Bytes(b.clone()),
        // The binlog decoder reports YEAR as 1900 + stored byte; stored 0 is the year 0000.
        (ColumnType::Year, MyValue::Bytes(b)) => {
            let y: i64 = parse_ascii(b).ok_or_else(|| bad(got()))?;
            Value::Int(if from_binlog && y == 1900 { 0 } else { y })
        }
        (ColumnType::Year, MyValue::Int(y)) => Value::Int(*y),
        (ColumnType::Year, MyValue::UInt(y)) => Value::Int(*y as i64),
        (ColumnType::Date, MyValue::Date(y, m, d, ..)) => Value::Date(Date {
            year: *y,
            month: *m,
            day: *d,
        }),
        (ColumnType::DateTime { .. }, &MyValue::Date(y, mo, d, h, mi, s, us)) => {
            Value::DateTime(date_time(y, mo, d, h, mi, s, us))
        }
        // Binlog: seconds since the epoch, with a fraction when fsp > 0; 0 is the zero timestamp.
        (ColumnType::Timestamp { .. }, MyValue::Bytes(b)) => {
            let s = std::str::from_utf8(b).map_err(|_| bad(got()))?;
            let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
            let secs: i64 = secs.parse().map_err(|_| bad(got()))?;
            let us: i64 = if frac.is_empty() {
                0
            } else {
                format!("{frac:0<6}").parse().map_err(|_| bad(got()))?
            };
            Value::Timestamp(secs * 1_000_000 + us)
        }
        (ColumnType::Timestamp { .. }, MyValue::Int(secs)) => Value::Timestamp(secs * 1_000_000),
        // Snapshot: a UTC date-time (the session runs with time_zone='+00:00').
        (ColumnType::Timestamp { .. }, &MyValue::Date(y, mo, d, h, mi, s, us)) => {
            if (y, mo, d) == (0, 0, 0) {
                Value::Timestamp(0)
            } else {
                let dt = date_time(y, mo, d, h, mi, s, us);
                Value::Timestamp(dt.to_epoch_micros().ok_or_else(|| bad(got()))?)
            }
        }
        (ColumnType::Time { .. }, MyValue::Time(neg, days, h, m, s, us)) => {
            Value::Time(micros_of_time(*neg, *days, *h, *m, *s, *us))
        }
        (ColumnType::Text { .. }, MyValue::Bytes(b)) => Value::Text(
            String::from_utf8(b.clone()).map_err(|_| bad("text is not valid UTF-8".into()))?,
        ),
        (ColumnType::Binary { len }, MyValue::Bytes(b)) => {
            // The binlog drops trailing zero bytes of BINARY(n); MariaDB stores them padded.
            let mut b = b.clone();
            if b.len() > *len as usize {
                return Err(bad(format!("{} bytes in BINARY({len})", b.len())));
            }
            b.resize(*len as usize, 0);
            Value::Bytes(b)
        }
        (ColumnType::Blob { .. } | ColumnType::Geometry, MyValue::Bytes(b)) => {
            Value::Bytes(b.clone())
        }
        (ColumnType::Enum { values }, MyValue::Int(i)) => Value::Text(match *i {
            0 => String::new(),
            i => values
                .get(i as usize - 1)
                .cloned()
                .ok_or_else(|| bad(format!("ENUM index {i} out of range")))?,
        }),
        (ColumnType::Enum { .. }, MyValue::Bytes(b)) => {
            Value::Text(String::from_utf8(b.clone()).map_err(|_| bad(got()))?)
        }
        (ColumnType::Set { values }, MyValue::Bytes(b)) if from_binlog => {
            let mut members = Vec::new();
            for (i, v) in values.iter().enumerate() {
                if b.get(i / 8).is_some_and(|byte| byte & (1 << (i % 8)) != 0) {
                    members.push(v.as_str());
                }
            }
            Value::Text(members.join(","))
        }
        (ColumnType::Set { .. }, MyValue::Bytes(b)) => {
            Value::Text(String::from_utf8(b.clone()).map_err(|_| bad(got()))?)
        }
        _ => return Err(bad(got())),
    })
}

/// [`convert`], taking the value: text, decimal and blob bytes move into the result instead
/// of being copied (the row path, where every copy is an allocation per column per row).
pub fn convert_owned(
    t: &TableSchema,
    col: usize,
    v: MyValue,
    from_binlog: bool,
) -> Result<Value, BadValue> {
    // A failed move gives its bytes back to `convert`, which fails the same way and words it.
    let refused = |b: Vec<u8>| convert(t, col, &MyValue::Bytes(b), from_binlog);
    match (&t.columns[col].ty, v) {
        (ColumnType::Text { .. }, MyValue::Bytes(b)) => match String::from_utf8(b) {
            Ok(s) => Ok(Value::Text(s)),
            Err(e) => refused(e.into_bytes()),
        },
        (ColumnType::Decimal { .. }, MyValue::Bytes(b)) => match String::from_utf8(b) {
            Ok(s) => Ok(Value::Decimal(s)),
            Err(e) => refused(e.into_bytes()),
        },
        (ColumnType::Blob { .. } | ColumnType::Geometry, MyValue::Bytes(b)) => Ok(Value::Bytes(b)),
        (_, v) => convert(t, col, &v, from_binlog),
    }
}

/// Converts a binlog value (MariaDB sends no JSONB, so anything else is an error).
pub fn convert_binlog(
    t: &TableSchema,
    col: usize,
    v: Option<BinlogValue<'_>>,
) -> Result<Value, BadValue> {
    match v {
        None => Ok(Value::Null),
        Some(BinlogValue::Value(v)) => convert_owned(t, col, v, true),
        Some(other) => Err(BadValue {
            table: t.qualified_name(),
            column: t.columns[col].name.clone(),
            ty: t.columns[col].ty.sql(),
            reason: format!("unexpected binlog value {other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_lists_parse_as_information_schema_prints_them() {
        assert_eq!(value_list("enum('a','b c')").unwrap(), vec!["a", "b c"]);
        assert_eq!(value_list("set('it''s','x')").unwrap(), vec!["it's", "x"]);
        assert_eq!(value_list("enum('')").unwrap(), vec![""]);
        assert!(value_list("enum(a)").is_none());
    }

    #[test]
    fn string_length_follows_the_binlog_encoding() {
        assert_eq!(string_length(&[0xfe, 16]), 16);
        assert_eq!(string_length(&[0xfe, 255]), 255);
        // CHAR(255) in utf8mb4 is 1020 bytes: high bits move into byte 0.
        assert_eq!(string_length(&[0xce, 0xfc]), 1020);
    }

    fn t(ty: ColumnType) -> TableSchema {
        TableSchema {
            db: "d".into(),
            table: "t".into(),
            columns: vec![Column {
                name: "c".into(),
                ty,
                nullable: true,
            }],
            primary_key: vec![],
        }
    }

    #[test]
    fn binlog_quirks_are_normalised() {
        let int = |width, unsigned| ColumnType::Integer { width, unsigned };
        let bytes = |b: &[u8]| MyValue::Bytes(b.to_vec());
        let set = ColumnType::Set {
            values: vec!["a".into(), "b".into(), "c".into()],
        };
        let en = ColumnType::Enum {
            values: vec!["x".into(), "y".into()],
        };
        let i24 = int(IntWidth::Medium, false);
        // (column type, the value as the binlog gives it, whether it came from a binlog row
        // (else a snapshot read), what it becomes)
        let cases = [
            (ColumnType::Year, bytes(b"1900"), true, Value::Int(0)),
            (ColumnType::Year, bytes(b"2024"), true, Value::Int(2024)),
            (
                ColumnType::Binary { len: 4 },
                bytes(&[1]),
                true,
                Value::Bytes(vec![1, 0, 0, 0]),
            ),
            (
                ColumnType::Timestamp { fsp: 6 },
                bytes(b"1704164645.678901"),
                true,
                Value::Timestamp(1_704_164_645_678_901),
            ),
            (
                ColumnType::Timestamp { fsp: 1 },
                bytes(b"10.5"),
                true,
                Value::Timestamp(10_500_000),
            ),
            (
                set,
                MyValue::Bytes(vec![0b101]),
                true,
                Value::Text("a,c".into()),
            ),
            (en.clone(), MyValue::Int(2), true, Value::Text("y".into())),
            (en, MyValue::Int(0), true, Value::Text(String::new())),
            (
                int(IntWidth::Tiny, true),
                MyValue::Int(-1),
                true,
                Value::Int(255),
            ),
            (
                int(IntWidth::Tiny, true),
                MyValue::UInt(255),
                false,
                Value::Int(255),
            ),
            (
                i24.clone(),
                MyValue::Int(8_388_608),
                true,
                Value::Int(-8_388_608),
            ),
            (i24.clone(), MyValue::Int(16_777_215), true, Value::Int(-1)),
            (i24, MyValue::Int(8_388_607), true, Value::Int(8_388_607)),
            (
                int(IntWidth::Big, true),
                MyValue::Int(-1),
                true,
                Value::UInt(u64::MAX),
            ),
            (
                ColumnType::Time { fsp: 6 },
                MyValue::Time(true, 34, 22, 59, 59, 999_999),
                true,
                Value::Time(-((838 * 3600 + 59 * 60 + 59) * 1_000_000 + 999_999)),
            ),
        ];
        for (ty, v, binlog, want) in cases {
            let what = format!("{ty:?} from {v:?}");
            assert_eq!(convert(&t(ty), 0, &v, binlog).unwrap(), want, "{what}");
        }
    }
}
